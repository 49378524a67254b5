"""Changes to a loaded table in one transaction: member deltas, and a policy change.

Sets a rule tests change by their elements. Policy targets live in the rank maps (address ->
its k-th policy chain), so when a target or isolation set changes, or the dispatch of a policy
chain does, the map entries of the addresses that moved are worked out for those addresses
alone, from an index of the target sets each address is in (``Where``): a pod event costs its
own dispatch, not the cluster's; its element changes go to the kernel as one netlink batch
(``load.load_elements``). A policy change (one ``nft -f``) adds the chains and sets that are new (chains and sets are named by their content, so a changed policy is a new chain),
moves the map and set elements, then deletes the chains and sets no longer used, all in one
transaction; a kept chain whose first policy changed has its rules' comments rewritten in the
same transaction. The fixed chains depend on the rank count alone (rank 1 is the isolation test),
so only a rank rule more or less takes a table replace; the caller then does that (atomically).
"""

from __future__ import annotations

import ipaddress
from collections import ChainMap
from collections.abc import Iterable, Mapping, Sequence

from ...ir import DIRECTIONS, Direction
from ...lower import FamilyProgram, Lowered, SetSpec
from ...resolve import Entry
from ..base import MemberDelta, Members, member_changes, per_program
from ..dispatch import dispatch_of
from .load import FAMILY, Diff, element_lines
from .render import (
    ChainText,
    Ruleset,
    chain_text,
    chains_by_address,
    rank_maps,
    referenced_sets,
    set_text,
    table_name,
    table_port_lists,
)

# (table, family, direction) -> per rank map in force, how many addresses jump there (have at
# least that many chains): a rank map more or less is told by the addresses that moved alone
Ranks = dict[tuple[str, int, str], list[int]]


def loaded_ranks(ruleset: Ruleset) -> Ranks:
    """The rank counts a full load of ``ruleset`` puts in force: per rank map, its jumps."""
    jumps = {m.name: sum(" : jump " in e for e in m.elements) for m in ruleset.maps}
    return {
        (ruleset.table, f.family, direction): [jumps[m] for m in maps]
        for f in ruleset.families
        for direction, maps in f.ranks.items()
    }


class TableChanged(Exception):
    """The rank count must change, or the table was not loaded here: only a table replace can do
    that."""


class Where:
    """Address -> the policy-target and isolation sets of one program holding it (every family
    and direction), so that the dispatch of the few addresses a pod event moves is worked out
    from the sets they are in: a pod event costs those sets, not a search of every target set
    (0.2 s per event at L). Built once from the members in force (a full load warms it, a policy
    change builds the new program's), then moved by each member delta the kernel took, and only
    then: a delta that was refused leaves it as it was, in step with the kernel."""

    def __init__(self, lowered: Lowered, members: Members) -> None:
        self.lowered, self.members = lowered, members
        self.names = _every_target(lowered)
        self.of: dict[str, tuple[str, ...]] = {}
        for name in sorted(self.names):
            for text, _ in members.get(name, ()):
                self.of[text] = (*self.of.get(text, ()), name)

    def moved(
        self, changes: Mapping[str, tuple[Sequence[Entry], Sequence[Entry]]]
    ) -> dict[str, tuple[str, ...]]:
        """The sets of each address ``changes`` move into or out of a target or isolation set, after them."""
        out: dict[str, tuple[str, ...]] = {}
        for name in sorted(changes.keys() & self.names):
            gone, fresh = changes[name]
            for text, _ in gone:
                out[text] = tuple(n for n in out.get(text, self.of.get(text, ())) if n != name)
            for text, _ in fresh:
                out[text] = (*out.get(text, self.of.get(text, ())), name)
        return out

    def take(self, moved: Mapping[str, tuple[str, ...]], members: Members) -> None:
        """``moved`` is in the kernel now, and with it ``members``."""
        for text, sets in moved.items():
            if sets:
                self.of[text] = sets
            else:
                self.of.pop(text, None)
        self.members = members


def _chains_of(
    program: FamilyProgram,
    direction: Direction,
    where: Mapping[str, tuple[str, ...]],
    addresses: Iterable[str],
) -> dict[str, list[str]]:
    """``chains_by_address`` for ``addresses`` alone (those isolated for ``direction``), from
    the sets each is in (``where``)."""
    isolated = program.isolated[direction].name
    out = {}
    for address in addresses:
        sets = where.get(address, ())
        if isolated in sets:
            out[address] = list(dict.fromkeys(d.chain for d in dispatch_of(program, direction, sets)))
    return out


def _key(element: str) -> str:
    """A map element's key (``10.0.0.1 : jump p-x`` -> ``10.0.0.1``); a set element is its own key."""
    return element.partition(" : ")[0]


@per_program
def _targets(program: FamilyProgram, direction: Direction) -> frozenset[str]:
    return frozenset(d.target.name for d in program.dispatch[direction]) | {program.isolated[direction].name}


@per_program
def _every_target(lowered: Lowered) -> frozenset[str]:
    """``_targets`` of every family and direction: what ``Where`` indexes."""
    return frozenset(n for f in lowered.families for d in DIRECTIONS for n in _targets(f, d))


@per_program
def read_sets(lowered: Lowered) -> frozenset[str]:
    """The program sets whose members a load reads: those the rules test, and the policy targets
    and isolation sets that the rank maps and ``Where`` are made of."""
    return _every_target(lowered).union(*(_tested(f) for f in lowered.families))


@per_program
def _tested(program: FamilyProgram) -> Mapping[str, SetSpec]:
    return {s.name: s for s in referenced_sets(program)}


def _moved(
    was: FamilyProgram,
    now: FamilyProgram,
    direction: Direction,
    old: Members,
    new: Members,
    changes: Mapping[str, tuple[list[Entry], list[Entry]]],
) -> set[str]:
    """Addresses whose chains (or isolation) may differ: members that moved in or out of a target,
    and every member of a target whose dispatch entry is new or gone. If the entries both programs
    have are in another order, any isolated address may have its chains in another order."""
    targets = _targets(now, direction)
    moved = {e for n in changes if n in targets for e, _ in (*changes[n][0], *changes[n][1])}
    if was is now:
        return moved
    # an isolation set replaced (rank 1 is the isolation test: every address leaving or joining
    # it moves, even one of a set that is kept, as another direction's isolation or a target)
    was_targets, now_targets = _targets(was, direction), _targets(now, direction)
    moved.update(e for n in was_targets - now_targets for e, _ in old.get(n, ()))
    moved.update(e for n in now_targets - was_targets for e, _ in new.get(n, ()))
    before = [(d.target.name, d.chain) for d in was.dispatch[direction]]
    after = [(d.target.name, d.chain) for d in now.dispatch[direction]]
    if before == after:
        return moved
    both = set(before) & set(after)
    if [e for e in before if e in both] != [e for e in after if e in both]:
        return {e for n in _targets(was, direction) for e, _ in old.get(n, ())} | {
            e for n in _targets(now, direction) for e, _ in new.get(n, ())
        }
    for target, _ in set(before) - both:
        moved.update(e for e, _ in old.get(target, ()))
    for target, _ in set(after) - both:
        moved.update(e for e, _ in new.get(target, ()))
    return moved


def reach(by_address: Mapping[str, Sequence[str]], count: int) -> list[int]:
    """Per rank 1..``count``: how many addresses have at least that many chains."""
    out = [0] * count
    for chains in by_address.values():
        for k in range(min(len(chains), count)):
            out[k] += 1
    return out


def element_diffs(
    before: tuple[Lowered, Members, Mapping[str, tuple[str, ...]]],
    after: tuple[Lowered, Members, Mapping[str, tuple[str, ...]]],
    changes: Mapping[str, tuple[list[Entry], list[Entry]]],
    ranks: Ranks,
    reached: Ranks,
) -> list[Diff]:
    """Element deletes and adds moving the sets both programs test, and the rank maps, from
    ``before`` to ``after`` (each: program, members, ``Where``'s sets of each address), by
    ``changes`` (``member_changes`` of the members); TableChanged when that takes new fixed rules.
    ``reached`` gets the rank counts after them, to keep once they are loaded."""
    (lowered_before, old, where_before), (lowered_after, new, where_after) = before, after
    table = table_name(lowered_after.network)
    diffs: list[Diff] = []
    for was, now in zip(lowered_before.families, lowered_after.families, strict=True):
        tested = _tested(now)
        if was is not now:
            kept = _tested(was)
            tested = {n: s for n, s in tested.items() if n in kept}
        for name in sorted(changes.keys() & tested.keys()):
            gone, fresh = changes[name]
            spec = tested[name]
            diffs.append((spec.name, set_text(spec, gone).elements, set_text(spec, fresh).elements))
        for direction in DIRECTIONS:
            moved = _moved(was, now, direction, old, new, changes)
            if not moved:
                continue
            addresses = sorted(moved, key=lambda a: int(ipaddress.ip_address(a)))  # as resolve lists them
            chains_before = _chains_of(was, direction, where_before, addresses)
            chains_after = _chains_of(now, direction, where_after, addresses)
            in_force = ranks.get((table, now.family, direction))
            if in_force is None:  # not loaded by this process: count once
                every = chains_by_address(was, direction, old)
                in_force = reach(every, max(1, max(map(len, every.values()), default=0)))
            count = len(in_force)
            if max(map(len, chains_after.values()), default=0) > count:
                raise TableChanged  # a rank more
            counts = [
                n - gone + came
                for n, gone, came in zip(
                    in_force, reach(chains_before, count), reach(chains_after, count), strict=True
                )
            ]
            if count > 1 and not counts[-1]:
                raise TableChanged  # no address needs the last rank any more (rank 1 stays: isolation)
            reached[(table, now.family, direction)] = counts
            maps_before = rank_maps(was, direction, chains_before, count)
            maps_after = rank_maps(now, direction, chains_after, count)
            for old_map, new_map in zip(maps_before, maps_after, strict=True):
                old_by_key = {_key(e): e for e in old_map.elements}
                new_by_key = {_key(e): e for e in new_map.elements}
                gone_keys = [k for k, e in old_by_key.items() if new_by_key.get(k) != e]
                fresh_elements = [e for k, e in new_by_key.items() if old_by_key.get(k) != e]
                diffs.append((old_map.name, gone_keys, fresh_elements))
    return diffs


def _delta(diffs: Sequence[Diff]) -> MemberDelta:
    """What ``diffs`` change: elements added and removed, sets and maps touched."""
    changed = [d for d in diffs if d[1] or d[2]]
    return MemberDelta(
        sum(len(put) for *_, put in changed), sum(len(drop) for _, drop, _ in changed), len(changed)
    )


def member_diffs(
    lowered: Lowered, old: Members, new: Members, ranks: Ranks, where: Where
) -> tuple[list[Diff], MemberDelta, Ranks, dict[str, tuple[str, ...]]]:
    """The element changes moving ``old`` to ``new`` (``where``: the index of ``old``; none when
    nothing moves), what they change, the rank counts after them and the index's moves
    (``Where.take`` them once the kernel took the changes); TableChanged when that takes new rules."""
    reached: Ranks = {}
    changes = member_changes(old, new)
    moved = where.moved(changes)
    diffs = element_diffs(
        (lowered, old, where.of), (lowered, new, ChainMap(moved, where.of)), changes, ranks, reached
    )
    return [d for d in diffs if d[1] or d[2]], _delta(diffs), reached, moved


def update_script(in_force: Where, coming: Where, ranks: Ranks) -> tuple[str, str, Ranks]:
    """The ``nft -f`` text moving the table from the program and members ``in_force`` indexes to
    those ``coming`` does, a summary of it and the rank counts after it; TableChanged when only
    a table replace can (then replace the table)."""
    before, old, after, new = in_force.lowered, in_force.members, coming.lowered, coming.members
    table = table_name(after.network)
    if any((table, f.family, d) not in ranks for f in before.families for d in DIRECTIONS):
        raise TableChanged  # not loaded by this process
    fixed: list[ChainText] = []  # kept chains whose comments differ
    old_sets = {s.name: s for f in before.families for s in referenced_sets(f)}
    new_sets = {s.name: s for f in after.families for s in referenced_sets(f)}
    old_chains = {c.name: (f.family, c) for f in before.families for c in f.chains}
    new_chains = {c.name: (f.family, c) for f in after.families for c in f.chains}
    for name in sorted(
        old_chains.keys() & new_chains.keys()
    ):  # named by their rules: only comments may differ
        (_, old_chain), (family, new_chain) = old_chains[name], new_chains[name]
        if old_chain.comment != new_chain.comment:  # another first policy: its rules say so
            fixed.append(chain_text(new_chain, family))
    old_lists, new_lists = table_port_lists(before), table_port_lists(after)
    lines: list[str] = []
    added = [set_text(new_sets[n], new[n]) for n in sorted(new_sets.keys() - old_sets.keys())]
    added += [new_lists[n] for n in sorted(new_lists.keys() - old_lists.keys())]
    for text in added:
        flags = " flags interval;" if text.interval else ""
        lines.append(f"add set {FAMILY} {table} {text.name} {{ type {text.type};{flags} }}")
        if text.elements:
            lines.append(f"add element {FAMILY} {table} {text.name} {{ {', '.join(text.elements)} }}")
    fresh_chains = [chain_text(c, f) for n, (f, c) in sorted(new_chains.items()) if n not in old_chains]
    for chain in fresh_chains:  # every chain first: a rule may go to another new one
        lines.append(f"add chain {FAMILY} {table} {chain.name}")
    for chain in fresh_chains:
        lines += [f"add rule {FAMILY} {table} {chain.name} {rule}" for rule in chain.rules]
    reached: Ranks = {}
    diffs = element_diffs(
        (before, old, in_force.of), (after, new, coming.of), member_changes(old, new), ranks, reached
    )
    delta = _delta(diffs)
    lines += element_lines(table, diffs)  # the maps leave the old chains here, so they can go next
    for chain in fixed:
        lines.append(f"flush chain {FAMILY} {table} {chain.name}")
        lines += [f"add rule {FAMILY} {table} {chain.name} {rule}" for rule in chain.rules]
    stale_chains = [chain_text(c, f).name for n, (f, c) in sorted(old_chains.items()) if n not in new_chains]
    lines += [f"delete chain {FAMILY} {table} {name}" for name in stale_chains]
    stale_sets = sorted(old_sets.keys() - new_sets.keys()) + sorted(old_lists.keys() - new_lists.keys())
    lines += [f"delete set {FAMILY} {table} {n}" for n in stale_sets]
    summary = (
        f"chains +{len(fresh_chains)} -{len(stale_chains)} ~{len(fixed)}, "
        f"sets +{len(added)} -{len(stale_sets)}, "
        f"elements +{delta.added} -{delta.removed}"
    )
    return "".join(f"{line}\n" for line in lines), summary, reached
