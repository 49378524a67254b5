"""What one compile worked out piece by piece, kept for the next compile of the same network.

The agent recompiles a whole network when one policy changes; the passes keep to one namespace
(and its networks) and a policy lowers to its chains alone, so a namespace whose policies are
unchanged, and a policy that is, need not be worked out again. Keys are the pieces themselves
(frozen IR, compared by value), so a hit is exactly what a fresh computation gives. Only what the
latest compile used is kept: the memo stays the size of one program, however long the agent runs.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, TypeVar

_T = TypeVar("_T")
_MISSING: Any = object()


class Memo:
    def __init__(self) -> None:
        self._last: dict[Hashable, Any] = {}  # what the previous compile used
        self._now: dict[Hashable, Any] = {}  # what this one has used so far

    def get(self, key: Hashable, make: Callable[[], _T]) -> _T:
        found = self._now.get(key, _MISSING)
        if found is _MISSING:
            found = self._last.get(key, _MISSING)
            if found is _MISSING:
                found = make()
            self._now[key] = found
        return found  # type: ignore[no-any-return]

    def done(self) -> None:
        """A compile ended: what it did not use is forgotten."""
        self._last, self._now = self._now, {}
