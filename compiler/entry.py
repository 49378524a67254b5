"""The ``npc`` command's entry, kept apart from ``cli`` so that an interrupt while the modules
load (a service manager's SIGINT in the first tenth of a second) exits 130 without a traceback."""

from __future__ import annotations

import os
from typing import NoReturn


def run() -> NoReturn:
    try:
        from .cli import run as cli_run
    except KeyboardInterrupt:
        os._exit(130)
    cli_run()
