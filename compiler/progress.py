"""Progress for long compiles: a stage callback, shown with rich on a terminal, silent otherwise.

Code below the CLI never prints; it may take a ``Progress`` callback and name each stage as it
starts. The CLI hands down either ``quiet`` or a ``display``: a transient rich spinner line on stderr
(stage and elapsed time) that appears only when a compile runs longer than ``delay``, so quick
compiles, pipes, files and CI logs see nothing. Close the display before printing anything else.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:  # rich is imported only when there is a terminal to draw on
    from rich.console import Console
    from rich.spinner import Spinner

Progress = Callable[[str], None]
DELAY = 0.5  # seconds before a status line is worth showing


def quiet(stage: str) -> None:
    """The progress callback that reports nothing."""


class _Display:
    """A spinner line started late (by a timer) and fed stage names."""

    def __init__(self, console: Console, delay: float) -> None:
        from rich.live import Live
        from rich.spinner import Spinner

        self._start = time.monotonic()
        self._stage = "starting"
        self._spinner = Spinner("dots")
        # stdout may be carrying artefacts: never route it through the live display
        self._live = Live(self, console=console, transient=True, redirect_stdout=False, redirect_stderr=False)
        self._shown = False
        self._closed = False  # guarded by _lock, so a late timer cannot start a display after close
        self._lock = threading.Lock()
        self._timer = threading.Timer(delay, self._show)
        self._timer.daemon = True
        self._timer.start()

    def __rich__(self) -> Spinner:
        """Rendered on every refresh, so the elapsed time ticks between stages."""
        elapsed = time.monotonic() - self._start
        self._spinner.update(text=f"npc: {self._stage} [dim]({elapsed:.1f}s)[/dim]")
        return self._spinner

    def _show(self) -> None:
        with self._lock:
            if not self._closed:
                self._live.start()
                self._shown = True

    def __call__(self, stage: str) -> None:
        self._stage = stage  # read by the refresh thread; a str swap is atomic

    def close(self) -> None:
        self._timer.cancel()
        with self._lock:
            self._closed = True
            if self._shown:
                self._live.stop()


@contextmanager
def display(stream: TextIO | None = None, delay: float = DELAY) -> Iterator[Progress]:
    """A progress callback: a rich status line if ``stream`` (stderr) is a terminal, else ``quiet``."""
    stream = stream or sys.stderr
    if not stream.isatty():
        yield quiet
        return
    from rich.console import Console

    console = Console(file=stream)
    shown = _Display(console, delay)
    try:
        yield shown
    finally:
        shown.close()
