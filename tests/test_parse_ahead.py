"""Policy texts parsed ahead in a forked child give what reading them one by one gives: the same
policies in the same order, and the same first error, whichever process met it."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from npc import parse_ahead
from npc.errors import InputError
from npc.sources import Loaded, read_policy_sources


def policy(namespace: str, name: str, port: int) -> str:
    return (
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
        f"metadata: {{name: {name}, namespace: {namespace}}}\n"
        "spec:\n  podSelector: {matchLabels: {app: web}}\n"
        f"  ingress:\n  - ports: [{{port: {port}}}]\n"
        "    from: [{podSelector: {matchLabels: {role: client}}}]\n"
    )


def folder(tmp_path: Path, files: int = 12) -> Path:
    for i in range(files):  # multi-document files, a JSON one and a Namespace among them
        docs = [policy(f"ns{i}", f"p{j}", 80 + j) for j in range(3)]
        (tmp_path / f"{i:02}.yaml").write_text("---\n".join(docs))
    (tmp_path / "05a.json").write_text(
        '{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns5"}}'
    )
    return tmp_path


Read = Callable[[Path], Loaded]


@pytest.fixture
def both(monkeypatch: pytest.MonkeyPatch) -> tuple[Read, list[int]]:
    """(read with the child forced on, forks made); serial reading is ``read_policy_sources``.
    Forced whatever threads earlier tests left behind (the gate is tested on its own below)."""
    forks: list[int] = []
    real_fork = os.fork

    def fork() -> int:
        pid = real_fork()
        if pid:
            forks.append(pid)
        return pid

    def ahead(path: Path) -> Loaded:
        with monkeypatch.context() as m:
            m.setattr(parse_ahead, "MIN_BYTES", 0)
            m.setattr(parse_ahead, "idle_cpus", lambda **_: 2.0)
            m.setattr(os, "sched_getaffinity", lambda _: {0, 1})
            m.setattr(threading, "active_count", lambda: 1)
            m.setattr(os, "fork", fork)
            return read_policy_sources([str(path)])

    return ahead, forks


def serial(path: Path) -> Loaded:
    return read_policy_sources([str(path)])


def error(read: Read, path: Path) -> str:
    with pytest.raises(InputError) as caught:
        read(path)
    return caught.value.render()


def test_same_policies_in_the_same_order(tmp_path: Path, both: tuple[Read, list[int]]) -> None:
    ahead, forks = both
    got, want = ahead(folder(tmp_path)), serial(tmp_path)
    assert len(forks) == 1
    assert got.policies == want.policies and len(got.policies) == 36
    assert (got.namespaces, got.notes, got.files) == (want.namespaces, want.notes, want.files)


def test_an_error_the_child_meets_is_reported_as_without_it(
    tmp_path: Path, both: tuple[Read, list[int]]
) -> None:
    ahead, forks = both
    (folder(tmp_path) / "11.yaml").write_text(policy("a", "b", 80) + "  bad: [\n")
    assert error(ahead, tmp_path) == error(serial, tmp_path)
    assert "11.yaml:10:1" in error(serial, tmp_path) and forks


def test_the_first_error_wins_whichever_process_met_it(tmp_path: Path, both: tuple[Read, list[int]]) -> None:
    ahead, forks = both
    folder(tmp_path)
    (tmp_path / "01.yaml").write_text(policy("a", "b", 80).replace("port: 80", "port: -1"))
    (tmp_path / "10.yaml").write_text("a: [\n")
    (tmp_path / "11.yaml").write_bytes(b"\xff")  # unreadable as UTF-8: refused while reading
    found = error(ahead, tmp_path)
    assert found == error(serial, tmp_path) and "01.yaml" in found and forks
    (tmp_path / "01.yaml").write_text(policy("a", "b", 80))
    assert error(ahead, tmp_path) == error(serial, tmp_path)
    assert "10.yaml" in error(serial, tmp_path)


def test_small_inputs_busy_machines_and_threads_stay_in_one_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse() -> int:  # raising, not returning 0: a stand-in child would end pytest with exit 0
        raise AssertionError("forked")

    def sample(**_: object) -> float:
        raise AssertionError("sampled with one CPU")

    monkeypatch.setattr(os, "fork", refuse)
    folder(tmp_path)
    serial(tmp_path)  # a few kilobytes
    monkeypatch.setattr(parse_ahead, "MIN_BYTES", 0)
    monkeypatch.setattr(parse_ahead, "idle_cpus", lambda **_: 1.2)  # another process takes a core
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: {0, 1})
    serial(tmp_path)
    monkeypatch.setattr(parse_ahead, "idle_cpus", sample)  # one CPU: no fork, and no sample needed
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: {0})
    serial(tmp_path)
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: {0, 1})
    monkeypatch.setattr(parse_ahead, "idle_cpus", lambda **_: None)  # no /proc/stat: the load average
    monkeypatch.setattr(os, "getloadavg", lambda: (8.0, 8.0, 8.0))
    serial(tmp_path)
    monkeypatch.setattr(parse_ahead, "idle_cpus", lambda **_: 2.0)  # idle, but a thread runs (the agent)
    monkeypatch.setattr(threading, "active_count", lambda: 2)
    serial(tmp_path)  # with one thread, the same call forks: ``both`` above


STAT = """cpu  100 5 50 1000 20 0 3 7 0 0
cpu0 50 2 25 500 10 0 1 3 0 0
cpu1 50 3 25 500 10 0 2 4 0 0
intr 12345
ctxt 999
"""


def test_idle_ticks_count_idle_and_iowait_of_every_cpu() -> None:
    assert parse_ahead.cpu_times(STAT) == (1020, 1185, 2)


def test_idle_cpus_are_the_idle_share_of_the_ticks_between_two_reads() -> None:
    later = STAT.replace("cpu  100 5 50 1000 20", "cpu  140 5 60 1130 40", 1)  # 200 ticks, 150 idle
    texts = iter([STAT, later])
    assert parse_ahead.idle_cpus(0, lambda: next(texts)) == pytest.approx(1.5, abs=0.02)  # + own ticks
    assert parse_ahead.idle_cpus(0, lambda: STAT) is None  # no tick went by
    assert parse_ahead.idle_cpus(0, lambda: "") is None


def test_a_spinning_process_is_not_counted_idle() -> None:
    """On this machine, with a child spinning on one CPU, at most the others are idle."""
    cpus = parse_ahead.cpu_times(parse_ahead._proc_stat())[2]
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.2)
        busy = parse_ahead.idle_cpus(0.5)
    finally:
        spinner.kill()
        spinner.wait()
    assert busy is not None and 0 <= busy <= cpus - 0.6, (cpus, busy)


def test_a_window_already_gone_by_is_measured_without_a_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    """From a reading a second old: no sleep, and what this process ran meanwhile counts as free
    (it computed, it was not asleep): 50 idle ticks of 200, plus its own 0.5 s (50 ticks)."""
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    monkeypatch.setattr(os, "sysconf", lambda _: 100)
    own = os.times()
    ran = own.user + own.system + own.children_user + own.children_system
    since = (time.monotonic() - 1.0, parse_ahead.cpu_times(STAT), ran - 0.5)
    later = STAT.replace("cpu  100 5 50 1000 20", "cpu  200 5 100 1040 30", 1)  # 200 ticks, 50 idle
    idle = parse_ahead.idle_cpus(0.1, lambda: later, since=since)
    assert idle == pytest.approx(1.0, abs=0.02)
    assert slept == [0.0]


def test_a_decision_measures_from_the_last_one_when_it_is_recent(monkeypatch: pytest.MonkeyPatch) -> None:
    windows: list[object] = []

    def idle(since: object = None) -> float:
        windows.append(since)
        return 2.0

    monkeypatch.setattr(parse_ahead, "idle_cpus", idle)
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: {0, 1})
    monkeypatch.setattr(threading, "active_count", lambda: 1)
    recent = (time.monotonic() - 0.5, parse_ahead.cpu_times(STAT), 0.0)
    monkeypatch.setattr(parse_ahead, "_last", [recent])
    assert parse_ahead.spare_core()
    assert windows == [recent]
    stale = (time.monotonic() - parse_ahead.MAX_WINDOW - 1, parse_ahead.cpu_times(STAT), 0.0)
    monkeypatch.setattr(parse_ahead, "_last", [stale])
    assert parse_ahead.spare_core()
    assert windows == [recent, None]  # too old to say anything: a fresh sample
    assert parse_ahead._last[0] is not None and parse_ahead._last[0] != stale  # the next measures from here
