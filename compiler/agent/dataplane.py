"""Loading for the agent: a full atomic load (what ``npc apply`` does) or only member deltas.

A members-only change never touches a rule: iptables gets one ``ipset -exist restore`` batch of
``add``/``del`` lines, nftables one ``nft -f`` transaction of element deletes and adds. The nft
rank maps are set *and* rule: when the most policies selecting one pod changes, the number of
rank rules changes, so that case is a full (still atomic) table replace.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping, Sequence
from typing import Protocol

import attrs

from ..apply import apply_iptables, detect_tools
from ..apply_nft import load_ruleset
from ..backends.nftables import (
    build,
    chains_by_address,
    rank_maps,
    referenced_sets,
    render,
    set_name,
    set_text,
    table_name,
)
from ..errors import ApplyError
from ..lower import DIRECTIONS, Lowered
from ..resolve import Entry

Members = Mapping[str, Sequence[Entry]]


@attrs.frozen
class Delta:
    """What a members-only load changed: entries added and removed, sets touched."""

    added: int = 0
    removed: int = 0
    sets: int = 0
    full: bool = False  # the backend had to replace its rules after all (nft rank count changed)


class Dataplane(Protocol):
    def load(self, lowered: Lowered, members: Members) -> None: ...

    def load_members(self, lowered: Lowered, old: Members, new: Members) -> Delta: ...


def set_changes(old: Members, new: Members) -> dict[str, tuple[list[Entry], list[Entry]]]:
    """Per changed set: (entries to remove, entries to add), each in the set's member order."""
    out = {}
    for name, entries in new.items():
        before = old.get(name, ())
        if before is entries or before == entries:  # kept sets are the very same lists: no scan
            continue
        kept, now = set(before), set(entries)
        # an entry whose nomatch flag flipped is removed and added again
        out[name] = ([e for e in before if e not in now], [e for e in entries if e not in kept])
    return out


class Iptables:
    def __init__(self, flavour: str | None = None) -> None:
        self.flavour = flavour
        self._tools = None if flavour is None else detect_tools(flavour)

    def load(self, lowered: Lowered, members: Members) -> None:
        if self._tools is None:  # detected once rules exist, like kube-proxy: then it sticks
            self._tools = detect_tools(self.flavour)
        apply_iptables(lowered, members, self._tools)

    def load_members(self, lowered: Lowered, old: Members, new: Members) -> Delta:
        lines = []
        added = removed = 0
        changes = set_changes(old, new)
        for name, (gone, fresh) in sorted(changes.items()):
            lines += [f"del {name} {member}" for member, _ in gone]
            lines += [f"add {name} {member}{' nomatch' if nomatch else ''}" for member, nomatch in fresh]
            removed, added = removed + len(gone), added + len(fresh)
        if lines:
            _run(["ipset", "-exist", "restore"], "\n".join(lines) + "\n", "ipset restore")
        return Delta(added, removed, len(changes))


class Nftables:
    def __init__(self) -> None:
        # rank maps in force per (table, family, direction): the most policies selecting one pod
        self.ranks: dict[tuple[str, int, str], int] = {}

    def load(self, lowered: Lowered, members: Members) -> None:
        ruleset = build(lowered, members)
        load_ruleset(render(ruleset))
        for family in ruleset.families:
            for direction, maps in family.ranks.items():
                self.ranks[(ruleset.table, family.family, direction)] = len(maps)

    def load_members(self, lowered: Lowered, old: Members, new: Members) -> Delta:
        """Element deletes and adds for the sets that changed and, when a policy target or an
        isolation set changed, for the rank-map entries of the addresses that moved: the maps
        are worked out for those addresses only, so a pod event costs its own dispatch."""
        changes = set_changes(old, new)
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
                ranks = self.ranks.get((table, program.family, direction))
                if ranks is None:  # not loaded by this agent yet: count once
                    ranks = max(map(len, chains_by_address(program, direction, old).values()), default=0)
                grown = max(map(len, after.values()), default=0) > ranks
                shrunk = not grown and any(len(c) == ranks for c in before.values())
                if shrunk:  # the pod that needed the last rank moved: does any other need it?
                    shrunk = (
                        max(map(len, chains_by_address(program, direction, new).values()), default=0) < ranks
                    )
                if grown or shrunk:  # a rank rule more or less: the table is replaced (atomically)
                    self.load(lowered, new)
                    return Delta(full=True)
                was = rank_maps(program, direction, _only(old, targets, moved), names, ranks)
                now = rank_maps(program, direction, _only(new, targets, moved), names, ranks)
                for old_map, new_map in zip(was, now, strict=True):
                    old_by_key = {_key(e): e for e in old_map.elements}
                    new_by_key = {_key(e): e for e in new_map.elements}
                    gone_keys = [k for k, e in old_by_key.items() if new_by_key.get(k) != e]
                    fresh_elements = [e for k, e in new_by_key.items() if old_by_key.get(k) != e]
                    diffs.append((old_map.name, gone_keys, fresh_elements))
        table = f"inet {table}"
        lines: list[str] = []
        added = removed = touched = 0
        for name, drop, put in diffs:
            if not drop and not put:
                continue
            touched += 1
            if drop:
                lines.append(f"delete element {table} {name} {{ {', '.join(drop)} }}")
            if put:
                lines.append(f"add element {table} {name} {{ {', '.join(put)} }}")
            removed, added = removed + len(drop), added + len(put)
        if lines:
            load_ruleset("\n".join(lines) + "\n")
        return Delta(added, removed, touched)


def _only(members: Members, sets: set[str], addresses: set[str]) -> dict[str, list[Entry]]:
    """``sets`` holding only ``addresses``: enough to work out those addresses' dispatch."""
    return {name: [e for e in members.get(name, ()) if e[0] in addresses] for name in sets}


def _key(element: str) -> str:
    """A map element's key (``10.0.0.1 : jump p-x`` -> ``10.0.0.1``); a set element is its own key."""
    return element.partition(" : ")[0]


def _run(argv: list[str], stdin: str, what: str) -> None:
    if shutil.which(argv[0]) is None:
        raise ApplyError(f"{argv[0]} not found")
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ApplyError(f"{what} rejected the member changes: {done.stderr.strip()}")


def dataplane(backend: str, iptables: str | None = None) -> Dataplane:
    return Nftables() if backend == "nftables" else Iptables(iptables)
