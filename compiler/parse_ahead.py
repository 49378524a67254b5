"""Policy texts parsed in a second process while this one reads the first ones.

At 10,000 policies PyYAML is more than half of reading the policy folder, and it runs on one
core. Above ``MIN_BYTES`` of YAML, a forked child parses the later texts (a little over half of
the bytes) while the parent parses and validates the earlier ones; the child's documents come
back pickled (plain dicts, lists and scalars: a tenth of what parsing them costs). The child
parses only: whatever it cannot parse it leaves to the parent, which then reads that text itself
and reports its error exactly as without a child, in the same order. A process with other
threads (the agent), without ``fork`` or without an idle core parses everything itself.

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
import pickle
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .documents import load_documents
from .text import Text

MIN_BYTES = 2 << 20  # below this a second process costs more than it saves
CHILD_SHARE = 0.55  # of the bytes: the parent also validates every policy and builds the IR

Parsed = Callable[[int], list[Any] | None]  # a text's documents by position, or None: parse it yourself


def _yaml(source: Text) -> bool:
    return not source.name.lower().endswith((".npc", ".json"))


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


def _worth_it(sources: Sequence[Text]) -> bool:
    return sum(len(s.text) for s in sources if _yaml(s)) >= MIN_BYTES and spare_core()


def spare_core() -> bool:
    """Fork safe (one thread) and a core idle: on a busy machine a child would only take turns
    with the parent, and its pickling would be pure loss (``inventory_ahead`` asks too)."""
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


def _split(sources: Sequence[Text]) -> int:
    """The first position the child parses: the child takes the last ``CHILD_SHARE`` of the bytes."""
    total = sum(len(s.text) for s in sources)
    done = 0
    for i, source in enumerate(sources):
        if done >= total * (1 - CHILD_SHARE):
            return i
        done += len(source.text)
    return len(sources)


def _child(sources: Sequence[Text], out: int) -> None:
    """Parse, pickle, write, exit: never back into the caller's code, never flushing its buffers."""
    try:
        parsed: list[list[Any] | None] = []
        for source in sources:
            if not _yaml(source):
                parsed.append(None)
                continue
            try:
                parsed.append(load_documents(source.name, source.text, strict=True))
            except Exception:  # the parent reads it again and reports it
                break
        with os.fdopen(out, "wb") as pipe:
            pipe.write(pickle.dumps(parsed, protocol=pickle.HIGHEST_PROTOCOL))
    finally:
        os._exit(0)


@contextlib.contextmanager
def parse_ahead(sources: Sequence[Text]) -> Iterator[Parsed]:
    """``parsed(i)``: the documents of ``sources[i]`` if the child parsed them, else None."""
    if not _worth_it(sources):
        yield lambda _: None
        return
    first = _split(sources)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        _child(sources[first:], write_end)
    os.close(write_end)
    pipe = os.fdopen(read_end, "rb")
    received: list[list[Any] | None] | None = None

    def parsed(i: int) -> list[Any] | None:
        nonlocal received
        if i < first:
            return None
        if received is None:
            try:
                received = pickle.loads(pipe.read())
            except Exception:  # the child died: everything left is read here
                received = []
        j = i - first
        return received[j] if j < len(received) else None

    try:
        yield parsed
    finally:
        pipe.close()  # a child still writing (the parent stopped at an error) gets EPIPE and exits
        os.waitpid(pid, 0)
