"""Which policy chains each isolated address meets, per direction: the data the nftables verdict
maps are built from, and what both backends' worst-case cost per packet is counted on.

Only set members (the inventory) decide this; the chains themselves come from ``lower``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..ir import Direction
from ..lower import Dispatch, FamilyProgram
from ..resolve import Entry


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
