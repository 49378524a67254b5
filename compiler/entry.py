"""The ``npc`` command's entry, kept apart from ``cli`` so that an interrupt while the modules
load (a service manager's SIGINT in the first tenth of a second) exits 130 without a traceback,
and an agent stopped before it has started (SIGTERM or SIGINT while it loads and sets up; it
takes its own handlers before its first apply) exits 0, as a stopped agent does.

SIGINT is not raised as KeyboardInterrupt inside an import: orjson's module set-up crashed the
interpreter (SIGSEGV, about one start in twenty interrupted 50-80 ms in) when it met one. The
interrupt is noted and acted on once the modules are loaded; one that lands between the entry and
``cli.main``'s own handling (or after it) exits 130 too."""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # not ``signal``: its enum took 7 ms before a handler
import os
import sys

TYPE_CHECKING = False  # not ``typing``'s: importing it took 8 ms more
if TYPE_CHECKING:
    from types import FrameType
    from typing import NoReturn


def run() -> NoReturn:
    interrupted: list[int] = []
    agent = sys.argv[1:2] == ["agent"]
    _signal.signal(_signal.SIGINT, _stopped if agent else lambda number, frame: interrupted.append(number))
    if agent:
        _signal.signal(_signal.SIGTERM, _stopped)
    from .cli import run as cli_run

    if agent:
        cli_run()
    try:  # an interrupt before ``cli.main`` takes it (or after it returned) is handled here
        _signal.signal(_signal.SIGINT, _signal.default_int_handler)
        if interrupted:  # checked after the handler changed: one noted just before is not lost
            os._exit(130)
        cli_run()
    except KeyboardInterrupt:
        os._exit(130)


def _stopped(number: int, frame: FrameType | None) -> NoReturn:
    os._exit(0)  # nothing loaded yet: nothing to finish
