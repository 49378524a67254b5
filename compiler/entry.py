"""The ``npc`` command's entry, kept apart from ``cli`` so that an interrupt while the modules
load (a service manager's SIGINT in the first tenth of a second) exits 130 without a traceback,
and an agent stopped before it has started (SIGTERM or SIGINT while it loads and sets up; it
takes its own handlers before its first apply) exits 0, as a stopped agent does."""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType
from typing import NoReturn


def run() -> NoReturn:
    if sys.argv[1:2] == ["agent"]:
        for number in (signal.SIGTERM, signal.SIGINT):
            signal.signal(number, _stopped)
    try:
        from .cli import run as cli_run
    except KeyboardInterrupt:
        os._exit(130)
    cli_run()


def _stopped(number: int, frame: FrameType | None) -> NoReturn:
    os._exit(0)  # nothing loaded yet: nothing to finish
