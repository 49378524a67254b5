"""The cyclic garbage collector, paused while one compile builds its large, acyclic data.

Loading a large inventory allocates millions of small dicts and lists, and each allocation counts
towards the collector's thresholds, so CPython re-scans the ever-growing heap again and again:
at 50k pods ``json`` alone takes 1.2 s instead of 0.46 s and the whole compile twice as long.
npc's data (parsed documents, frozen IR values, sets) holds no reference cycles to reclaim
mid-compile, so pausing costs no memory; the collector resumes afterwards for long-running callers.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused(to_the_end: bool = False) -> Iterator[None]:
    """The collector off for the block, and on again after it. ``to_the_end``: the block is a
    command's compile, whose data lives until the command ends; in a process that then exits
    without freeing its heap (``exit_without_freeing``: ``npc compile``, ``npc apply``) the
    collector stays off, because re-enabled, its next allocation would start a collection of
    every object the block made (0.4-0.8 s at L), for garbage the OS reclaims at the exit."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled and not (to_the_end and _kept is not None):
            gc.enable()


_kept: list[object] | None = None  # set by a process that exits without freeing its heap


def exit_without_freeing() -> None:
    """From here on ``keep`` holds values until the process exits (``cli.run`` exits at once,
    so the OS reclaims them in one go); in-process callers never call this and keep nothing."""
    global _kept
    _kept = []


def keep(value: object) -> None:
    """Hold ``value`` to the end: freeing the 50k-pod inventory's millions of parsed objects one
    by one is a tenth of a second a short command need not spend."""
    if _kept is not None:
        _kept.append(value)
