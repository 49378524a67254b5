"""One error type per exit code, carrying what a user needs to find the mistake.

Nothing below the CLI prints or exits: stages raise these, ``cli`` renders them.
"""

from __future__ import annotations

import attrs


class NpcError(Exception):
    """Base of every error npc reports to a user instead of a traceback."""

    exit_code = 1

    def render(self) -> str:
        return str(self)


@attrs.define(eq=False)
class InputError(NpcError):
    """Bad input: file, line:column (1-based, 0 when unknown), field path and the broken rule."""

    message: str
    file: str = "<input>"
    line: int = 0
    column: int = 0
    path: str = ""
    snippet: str = ""
    # (kind, namespace, name) of the policy a later stage (a backend, a writer) found wrong,
    # which knows no line: ``Loaded.placed`` puts the error at the policy's name
    policy: tuple[str, str, str] | None = None

    exit_code = 1

    def __str__(self) -> str:
        return self.render()

    def render(self) -> str:
        where = self.file
        if self.line:
            where += f":{self.line}:{self.column}"
        field = f" {self.path}:" if self.path else ""
        text = f"{where}: error:{field} {self.message}"
        if self.snippet:
            text += "\n" + self.snippet
        return text


class UsageError(NpcError):
    """The command line itself is wrong (exit 2)."""

    exit_code = 2


class ApplyError(NpcError):
    """The kernel (or a missing tool) refused the new state; the previous one stays (exit 3)."""

    exit_code = 3


class MixedStateError(NpcError):
    """Applying failed and so did undoing it: part old, part new is in force (exit 4); the next
    apply replaces everything npc owns."""

    exit_code = 4


def format_snippet(text: str, line: int, column: int) -> str:
    """The offending line with a caret under ``column`` (both 1-based)."""
    lines = text.splitlines()
    if not 1 <= line <= len(lines):
        return ""
    source = lines[line - 1].expandtabs(1)
    return f"  {line} | {source}\n  {' ' * len(str(line))} | {' ' * max(column - 1, 0)}^"
