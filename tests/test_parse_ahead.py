"""Policy texts parsed ahead in a forked child give what reading them one by one gives: the same
policies in the same order, and the same first error, whichever process met it."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from npc import forked, parse_ahead
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
            m.setattr(forked, "idle_cpus", lambda **_: 2.0)
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
    monkeypatch.setattr(forked, "idle_cpus", lambda **_: 1.2)  # another process takes a core
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: {0, 1})
    serial(tmp_path)
    monkeypatch.setattr(forked, "idle_cpus", sample)  # one CPU: no fork, and no sample needed
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: {0})
    serial(tmp_path)
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: {0, 1})
    monkeypatch.setattr(forked, "idle_cpus", lambda **_: None)  # no /proc/stat: the load average
    monkeypatch.setattr(os, "getloadavg", lambda: (8.0, 8.0, 8.0))
    serial(tmp_path)
    monkeypatch.setattr(forked, "idle_cpus", lambda **_: 2.0)  # idle, but a thread runs (the agent)
    monkeypatch.setattr(threading, "active_count", lambda: 2)
    serial(tmp_path)  # with one thread, the same call forks: ``both`` above
