"""Work in a forked child comes back as its bytes, or as nothing when the child fails; and a
child is forked only where a core is idle (``/proc/stat``) and the process has one thread."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from npc import forked


def test_the_child_s_bytes_come_back() -> None:
    parent = os.getpid()
    with forked.in_child(lambda: f"{os.getpid() != parent}".encode() * 3) as result:
        assert result() == b"TrueTrueTrue"
        assert result() == b"TrueTrueTrue"  # read once


def test_a_child_that_raises_or_is_killed_gives_nothing() -> None:
    def fails() -> bytes:
        raise ValueError("in the child")

    with forked.in_child(fails) as result:
        assert result() is None

    def killed() -> bytes:
        os.kill(os.getpid(), signal.SIGKILL)
        return b"never"

    with forked.in_child(killed) as result:
        assert result() is None


def test_leaving_the_block_unread_ends_a_child_still_writing() -> None:
    """More than a pipe holds: the child blocks writing until the parent closes its end."""
    started = time.monotonic()
    with forked.in_child(lambda: b"x" * (8 << 20)):
        pass
    assert time.monotonic() - started < 10


STAT = """cpu  100 5 50 1000 20 0 3 7 0 0
cpu0 50 2 25 500 10 0 1 3 0 0
cpu1 50 3 25 500 10 0 2 4 0 0
intr 12345
ctxt 999
"""


def test_idle_ticks_count_idle_and_iowait_of_every_cpu() -> None:
    assert forked.cpu_times(STAT) == (1020, 1185, 2)


def test_idle_cpus_are_the_idle_share_of_the_ticks_between_two_reads() -> None:
    later = STAT.replace("cpu  100 5 50 1000 20", "cpu  140 5 60 1130 40", 1)  # 200 ticks, 150 idle
    texts = iter([STAT, later])
    assert forked.idle_cpus(0, lambda: next(texts)) == pytest.approx(1.5, abs=0.02)  # + own ticks
    assert forked.idle_cpus(0, lambda: STAT) is None  # no tick went by
    assert forked.idle_cpus(0, lambda: "") is None


def test_a_spinning_process_is_not_counted_idle() -> None:
    """On this machine, with a child spinning on one CPU, at most the others are idle."""
    cpus = forked.cpu_times(forked._proc_stat())[2]
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.2)
        busy = forked.idle_cpus(0.5)
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
    since = (time.monotonic() - 1.0, forked.cpu_times(STAT), ran - 0.5)
    later = STAT.replace("cpu  100 5 50 1000 20", "cpu  200 5 100 1040 30", 1)  # 200 ticks, 50 idle
    idle = forked.idle_cpus(0.1, lambda: later, since=since)
    assert idle == pytest.approx(1.0, abs=0.02)
    assert slept == [0.0]


def test_a_decision_measures_from_the_last_one_when_it_is_recent(monkeypatch: pytest.MonkeyPatch) -> None:
    windows: list[object] = []

    def idle(since: object = None) -> float:
        windows.append(since)
        return 2.0

    monkeypatch.setattr(forked, "idle_cpus", idle)
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: {0, 1})
    monkeypatch.setattr(threading, "active_count", lambda: 1)
    recent = (time.monotonic() - 0.5, forked.cpu_times(STAT), 0.0)
    monkeypatch.setattr(forked, "_last", [recent])
    assert forked.spare_core()
    assert windows == [recent]
    stale = (time.monotonic() - forked.MAX_WINDOW - 1, forked.cpu_times(STAT), 0.0)
    monkeypatch.setattr(forked, "_last", [stale])
    assert forked.spare_core()
    assert windows == [recent, None]  # too old to say anything: a fresh sample
    assert forked._last[0] is not None and forked._last[0] != stale  # the next measures from here
