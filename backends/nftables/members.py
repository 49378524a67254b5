"""Member deltas for nftables: one ``nft -f`` transaction of element deletes and adds.

Sets a rule tests change by their elements. Policy targets live in the rank maps (address ->
its k-th policy chain), so when a target or isolation set changes, the map entries of the
addresses that moved are worked out for those addresses alone: a pod event costs its own
dispatch, not the cluster's. Only when the most policies selecting one pod changes does the table
need a rank rule more or less; the caller then replaces the table (atomically).
"""

from __future__ import annotations

from collections.abc import Sequence

from ...ir import DIRECTIONS
from ...lower import Lowered
from ...resolve import Entry
from ..base import MemberDelta, Members, member_changes
from .render import chains_by_address, rank_maps, referenced_sets, set_name, set_text, table_name

Ranks = dict[tuple[str, int, str], int]  # (table, family, direction) -> rank maps in force


class RanksChanged(Exception):
    """The rank count must change: only a full table replace can do that."""


def _only(members: Members, sets: set[str], addresses: set[str]) -> dict[str, list[Entry]]:
    """``sets`` holding only ``addresses``: enough to work out those addresses' dispatch."""
    return {name: [e for e in members.get(name, ()) if e[0] in addresses] for name in sets}


def _key(element: str) -> str:
    """A map element's key (``10.0.0.1 : jump p-x`` -> ``10.0.0.1``); a set element is its own key."""
    return element.partition(" : ")[0]


def member_script(lowered: Lowered, old: Members, new: Members, ranks: Ranks) -> tuple[str, MemberDelta]:
    """The ``nft -f`` text moving ``old`` to ``new``; RanksChanged when that takes new rules."""
    changes = member_changes(old, new)
    names = lowered.names
    table = table_name(names)
    diffs: list[tuple[str, Sequence[str], Sequence[str]]] = []
    for program in lowered.families:
        tested = {s.name: s for s in referenced_sets(program)}
        for name in sorted(changes.keys() & tested.keys()):
            gone, fresh = changes[name]
            spec = tested[name]
            diffs.append(
                (
                    set_name(spec, names),
                    set_text(spec, gone, names).elements,
                    set_text(spec, fresh, names).elements,
                )
            )
        for direction in DIRECTIONS:
            targets = {d.target.name for d in program.dispatch[direction]} | {
                program.isolated[direction].name
            }
            moved = {e for n in targets & changes.keys() for e, _ in (*changes[n][0], *changes[n][1])}
            if not moved:
                continue
            before = chains_by_address(program, direction, _only(old, targets, moved))
            after = chains_by_address(program, direction, _only(new, targets, moved))
            count = ranks.get((table, program.family, direction))
            if count is None:  # not loaded by this process: count once
                count = max(map(len, chains_by_address(program, direction, old).values()), default=0)
            grown = max(map(len, after.values()), default=0) > count
            shrunk = not grown and any(len(c) == count for c in before.values())
            if shrunk:  # the pod that needed the last rank moved: does any other need it?
                shrunk = max(map(len, chains_by_address(program, direction, new).values()), default=0) < count
            if grown or shrunk:
                raise RanksChanged
            was = rank_maps(program, direction, _only(old, targets, moved), names, count)
            now = rank_maps(program, direction, _only(new, targets, moved), names, count)
            for old_map, new_map in zip(was, now, strict=True):
                old_by_key = {_key(e): e for e in old_map.elements}
                new_by_key = {_key(e): e for e in new_map.elements}
                gone_keys = [k for k, e in old_by_key.items() if new_by_key.get(k) != e]
                fresh_elements = [e for k, e in new_by_key.items() if old_by_key.get(k) != e]
                diffs.append((old_map.name, gone_keys, fresh_elements))
    lines: list[str] = []
    added = removed = touched = 0
    for name, drop, put in diffs:
        if not drop and not put:
            continue
        touched += 1
        if drop:
            lines.append(f"delete element inet {table} {name} {{ {', '.join(drop)} }}")
        if put:
            lines.append(f"add element inet {table} {name} {{ {', '.join(put)} }}")
        removed, added = removed + len(drop), added + len(put)
    return "".join(f"{line}\n" for line in lines), MemberDelta(added, removed, touched)
