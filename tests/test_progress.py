"""The progress display: silent unless stderr is a terminal, and then only for long compiles."""

from __future__ import annotations

import io
import time

from npc.progress import display, quiet


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_not_a_terminal_is_quiet() -> None:
    stream = io.StringIO()
    with display(stream, delay=0) as progress:
        progress("reading policies")
        time.sleep(0.05)
    assert progress is quiet
    assert stream.getvalue() == ""


def test_a_terminal_sees_the_stage_then_nothing_left_over() -> None:
    stream = _Terminal()
    with display(stream, delay=0) as progress:
        progress("compiling 3 policies")
        time.sleep(0.4)  # a few refreshes
    text = stream.getvalue()
    assert "npc: compiling 3 policies" in text
    assert text.rstrip().endswith("\x1b[2K")  # transient: the line is erased at the end


def test_a_quick_compile_shows_nothing_even_on_a_terminal() -> None:
    stream = _Terminal()
    with display(stream, delay=5) as progress:
        progress("reading policies")
    assert stream.getvalue() == ""
