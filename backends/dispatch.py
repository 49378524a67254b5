"""Which policy chains each isolated address meets, per direction: the data the nftables verdict
maps are built from, and what both backends' worst-case cost per packet is counted on.

Only set members (the inventory) decide this; the chains themselves come from ``lower``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from ..ir import Direction
from ..lower import Dispatch, FamilyProgram
from ..resolve import Entry
from .base import per_program


def dispatch_by_address(
    program: FamilyProgram, direction: Direction, members: Mapping[str, Sequence[Entry]]
) -> dict[str, list[Dispatch]]:
    """Every address isolated for ``direction`` (as ``resolve`` spells it, in its order) and the
    dispatch entries whose target holds it, in dispatch order."""
    out: dict[str, list[Dispatch]] = {text: [] for text, _ in members[program.isolated[direction].name]}
    for dispatch in program.dispatch[direction]:
        for text, _ in members[dispatch.target.name]:
            out.setdefault(text, []).append(dispatch)  # every target is isolated: no new keys
    return out


@per_program
def _positions(program: FamilyProgram, direction: Direction) -> Mapping[str, tuple[int, ...]]:
    """Per target set, the places in the dispatch that test it."""
    out: dict[str, tuple[int, ...]] = {}
    for at, dispatch in enumerate(program.dispatch[direction]):
        out[dispatch.target.name] = (*out.get(dispatch.target.name, ()), at)
    return out


def dispatch_of(program: FamilyProgram, direction: Direction, sets: Iterable[str]) -> list[Dispatch]:
    """``dispatch_by_address``'s value for one address, from the sets it is in: the entries those
    sets are targets of, in dispatch order, without walking the whole dispatch (a pod event)."""
    positions, entries = _positions(program, direction), program.dispatch[direction]
    return [entries[at] for at in sorted(at for name in sets for at in positions.get(name, ()))]
