"""Work done in a forked child while this process goes on, and whether a core is free for it.

A compile is one CPython process on one core, and nodes have more: the policy YAML read ahead
(``parse_ahead``) and the inventory built beside the lowering (``inventory_ahead``) each run in
a child forked here. The child sends back bytes and exits; whatever goes wrong in it comes back
as nothing, and the caller then does the work itself and meets the error exactly as without a
child.

Whether a core is idle is measured from ``/proc/stat``, not read from the load average: that is
a minute's decaying mean, so the previous step of a script (a compile, a load) still counted as
load for a minute after it ended, and the benchmark's compiles ran without the child although
both cores were free. The measure spans the time since the process started (or since the last
decision) where that is at least ``SAMPLE_S``, counting this process's own CPU as free: a
sleep of ``SAMPLE_S`` before each decision cost a large compile 0.2 s of its 5.5.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator

SAMPLE_S = 0.1  # how long idle CPU is measured before forking: little beside 2 MiB of YAML
IDLE_NEEDED = 1.5  # CPUs idle or ours: this process's and the child's, less slack


def cpu_times(stat: str) -> tuple[int, int, int]:
    """(idle ticks, all ticks, CPUs) from the text of ``/proc/stat``; iowait counts as idle."""
    lines = stat.splitlines()
    ticks = [int(x) for x in lines[0].split()[1:9]]  # user .. steal: guest time is inside user
    cpus = sum(1 for line in lines[1:] if line.startswith("cpu"))
    return ticks[3] + ticks[4], sum(ticks), cpus


def _proc_stat() -> str:
    with open("/proc/stat") as f:
        return f.read()


Reading = tuple[float, tuple[int, int, int], float]  # when; ``cpu_times``; this process's CPU seconds


def _reading(read: Callable[[], str] = _proc_stat) -> Reading | None:
    """Now, the CPUs' ticks, and the CPU time of this process and of the children it has reaped."""
    try:
        ticks = cpu_times(read())
    except (OSError, ValueError, IndexError):
        return None
    own = os.times()
    return time.monotonic(), ticks, own.user + own.system + own.children_user + own.children_system


MAX_WINDOW = 5.0  # seconds: an older reading says little about the CPUs now
_last: list[Reading | None] = [_reading()]  # this module is imported as a command starts


def idle_cpus(
    seconds: float = SAMPLE_S, read: Callable[[], str] = _proc_stat, since: Reading | None = None
) -> float | None:
    """How many CPUs were idle or running this process over at least ``seconds``: from ``since``
    (a ``_reading``), or from now, sleeping for whatever of ``seconds`` has not gone by yet;
    None where ``/proc/stat`` is not read."""
    start = since or _reading(read)
    if start is None:
        return None
    time.sleep(max(0.0, seconds - (time.monotonic() - start[0])))
    end = _reading(read)
    if end is None:
        return None
    (_, (idle0, total0, cpus), own0), (_, (idle1, total1, _), own1) = start, end
    if total1 <= total0:
        return None
    own_ticks = (own1 - own0) * os.sysconf("SC_CLK_TCK")  # /proc/stat counts in these ticks
    return (idle1 - idle0 + own_ticks) / (total1 - total0) * cpus


def spare_core() -> bool:
    """Fork safe (one thread) and a core idle: on a busy machine a child would only take turns
    with the parent, and its pickling would be pure loss."""
    if not hasattr(os, "fork") or threading.active_count() > 1:
        return False
    cores = len(os.sched_getaffinity(0))
    if cores < 2:  # no core for the child: no need to spend the sample finding that out
        return False
    since = _last[0]
    recent = since is not None and time.monotonic() - since[0] <= MAX_WINDOW
    idle = idle_cpus(since=since if recent else None)
    _last[0] = _reading()  # the next decision measures from this one
    if idle is None:
        return os.getloadavg()[0] <= cores - 1
    return min(idle, cores) >= IDLE_NEEDED


Result = Callable[[], bytes | None]


@contextlib.contextmanager
def in_child(work: Callable[[], bytes]) -> Iterator[Result]:
    """``work()`` in a forked child. Inside the block, ``result()`` waits for the child and gives
    what ``work`` returned, or None where the child raised, died or was killed. The child never
    returns into the caller's code and never flushes its buffers (``os._exit``); leaving the block
    early closes the pipe, so a child still writing gets EPIPE and exits."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.close(read_end)
            blob = work()
            with os.fdopen(write_end, "wb") as out:
                out.write(blob)
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    pipe = os.fdopen(read_end, "rb")
    found: list[bytes | None] = []  # once read: the child's bytes, or None

    def result() -> bytes | None:
        if not found:
            try:
                blob: bytes | None = pipe.read()
            except OSError:
                blob = None
            _, status = os.waitpid(pid, 0)
            found.append(blob if status == 0 else None)
        return found[0]

    try:
        yield result
    finally:
        pipe.close()
        if not found:
            os.waitpid(pid, 0)
