"""Changes to a loaded table in one ``nft -f`` transaction: member deltas, and a policy change.

Sets a rule tests change by their elements. Policy targets live in the rank maps (address ->
its k-th policy chain), so when a target or isolation set changes, or the dispatch of a policy
chain does, the map entries of the addresses that moved are worked out for those addresses
alone: a pod event costs its own dispatch, not the cluster's. A policy change adds the chains and
sets that are new (chains and sets are named by their content, so a changed policy is a new chain),
moves the map and set elements, then deletes the chains and sets no longer used, all in one
transaction; a new isolation set rewrites the fixed chains that test it, and a kept chain whose
first policy changed its rules' comments, in the same transaction. Only a rank rule more or less
takes a table replace; the caller then does that (atomically).
"""

from __future__ import annotations

import bisect
import ipaddress
from collections.abc import Mapping, Sequence

from ...ir import DIRECTIONS, Direction
from ...lower import FamilyProgram, Lowered
from ...resolve import Entry
from ..base import MemberDelta, Members, member_changes
from .render import (
    FamilyText,
    chain_text,
    chains_by_address,
    rank_map,
    rank_maps,
    referenced_sets,
    set_text,
    table_name,
)

# (table, family, direction) -> per rank map in force, how many addresses jump there (have at
# least that many chains): a rank map more or less is told by the addresses that moved alone
Ranks = dict[tuple[str, int, str], list[int]]
Diff = tuple[str, Sequence[str], Sequence[str]]  # (set or map, elements to delete, elements to add)


class TableChanged(Exception):
    """The rank count must change, or the table was not loaded here: only a table replace can do
    that."""


def _value(entry: Entry) -> int:
    return int(ipaddress.ip_address(entry[0]))


def _only(members: Members, sets: set[str], addresses: set[str]) -> dict[str, list[Entry]]:
    """``sets`` (sets of pods, listed by address value as ``resolve`` lists them) holding only
    ``addresses``, in that order: enough to work out those addresses' dispatch. A few addresses
    are found by bisection, so a pod event costs the log of the cluster's size, not the cluster."""
    wanted = sorted((int(ipaddress.ip_address(a)), a) for a in addresses)
    out: dict[str, list[Entry]] = {}
    for name in sets:
        entries = members.get(name, ())
        if len(wanted) * 32 > len(entries):  # many addresses (a policy change): one scan is cheaper
            out[name] = [e for e in entries if e[0] in addresses]
            continue
        found = out[name] = []
        for value, address in wanted:
            at = bisect.bisect_left(entries, value, key=_value)
            if at < len(entries) and entries[at][0] == address:
                found.append(entries[at])
    return out


def _key(element: str) -> str:
    """A map element's key (``10.0.0.1 : jump p-x`` -> ``10.0.0.1``); a set element is its own key."""
    return element.partition(" : ")[0]


def _targets(program: FamilyProgram, direction: Direction) -> set[str]:
    return {d.target.name for d in program.dispatch[direction]} | {program.isolated[direction].name}


def _moved(
    was: FamilyProgram,
    now: FamilyProgram,
    direction: Direction,
    old: Members,
    new: Members,
    changes: dict[str, tuple[list[Entry], list[Entry]]],
) -> set[str]:
    """Addresses whose chains (or isolation) may differ: members that moved in or out of a target,
    and every member of a target whose dispatch entry is new or gone. If the entries both programs
    have are in another order, any isolated address may have its chains in another order."""
    moved = {
        e for n in _targets(now, direction) & changes.keys() for e, _ in (*changes[n][0], *changes[n][1])
    }
    if was is now:
        return moved
    before = [(d.target.name, d.chain) for d in was.dispatch[direction]]
    after = [(d.target.name, d.chain) for d in now.dispatch[direction]]
    if before == after:
        return moved
    both = set(before) & set(after)
    if [e for e in before if e in both] != [e for e in after if e in both]:
        return {e for n in _targets(was, direction) for e, _ in old.get(n, ())} | {
            e for n in _targets(now, direction) for e, _ in new.get(n, ())
        }
    for name in _targets(was, direction) - _targets(now, direction):  # an isolation set replaced
        moved.update(e for e, _ in old.get(name, ()))
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
    before: Lowered, after: Lowered, old: Members, new: Members, ranks: Ranks, reached: Ranks
) -> list[Diff]:
    """Element deletes and adds moving the sets both programs test, and the rank maps, from
    (``before``, ``old``) to (``after``, ``new``); TableChanged when that takes new fixed rules.
    ``reached`` gets the rank counts after them, to keep once they are loaded."""
    changes = member_changes(old, new)
    table = table_name(after.network)
    diffs: list[Diff] = []
    for was, now in zip(before.families, after.families, strict=True):
        tested = {s.name: s for s in referenced_sets(now)}
        if was is not now:
            kept = {t.name for t in referenced_sets(was)}
            tested = {n: s for n, s in tested.items() if n in kept}
        for name in sorted(changes.keys() & tested.keys()):
            gone, fresh = changes[name]
            spec = tested[name]
            diffs.append((spec.name, set_text(spec, gone).elements, set_text(spec, fresh).elements))
        for direction in DIRECTIONS:
            moved = _moved(was, now, direction, old, new, changes)
            if not moved:
                continue
            old_only = _only(old, _targets(was, direction), moved)
            new_only = _only(new, _targets(now, direction), moved)
            chains_before = chains_by_address(was, direction, old_only)
            chains_after = chains_by_address(now, direction, new_only)
            in_force = ranks.get((table, now.family, direction))
            if in_force is None:  # not loaded by this process: count once
                every = chains_by_address(was, direction, old)
                in_force = reach(every, max(map(len, every.values()), default=0))
            count = len(in_force)
            if max(map(len, chains_after.values()), default=0) > count:
                raise TableChanged  # a rank more
            counts = [
                n - gone + came
                for n, gone, came in zip(
                    in_force, reach(chains_before, count), reach(chains_after, count), strict=True
                )
            ]
            if count and not counts[-1]:
                raise TableChanged  # no address needs the last rank any more
            reached[(table, now.family, direction)] = counts
            maps_before = rank_maps(was, direction, old_only, count)
            maps_after = rank_maps(now, direction, new_only, count)
            for old_map, new_map in zip(maps_before, maps_after, strict=True):
                old_by_key = {_key(e): e for e in old_map.elements}
                new_by_key = {_key(e): e for e in new_map.elements}
                gone_keys = [k for k, e in old_by_key.items() if new_by_key.get(k) != e]
                fresh_elements = [e for k, e in new_by_key.items() if old_by_key.get(k) != e]
                diffs.append((old_map.name, gone_keys, fresh_elements))
    return diffs


def _element_lines(table: str, diffs: Sequence[Diff]) -> tuple[list[str], MemberDelta]:
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
    return lines, MemberDelta(added, removed, touched)


def member_script(
    lowered: Lowered, old: Members, new: Members, ranks: Ranks
) -> tuple[str, MemberDelta, Ranks]:
    """The ``nft -f`` text moving ``old`` to ``new`` and the rank counts after it; TableChanged
    when that takes new rules."""
    reached: Ranks = {}
    diffs = element_diffs(lowered, lowered, old, new, ranks, reached)
    lines, delta = _element_lines(table_name(lowered.network), diffs)
    return "".join(f"{line}\n" for line in lines), delta, reached


def _family_text(program: FamilyProgram, table: str, ranks: Ranks) -> FamilyText:
    """The fixed chains' inputs as loaded: the isolation sets, and the rank maps in force."""
    count = {d: ranks.get((table, program.family, d)) for d in DIRECTIONS}
    if None in count.values():
        raise TableChanged  # not loaded by this process
    return FamilyText(
        program.family,
        {d: s.name for d, s in program.isolated.items()},
        {
            d: tuple(rank_map(d, program.family, k) for k in range(1, len(count[d] or ()) + 1))
            for d in DIRECTIONS
        },
    )


def update_script(
    before: Lowered, after: Lowered, old: Members, new: Members, ranks: Ranks
) -> tuple[str, str, Ranks]:
    """The ``nft -f`` text moving the table from (``before``, ``old``) to (``after``, ``new``), a
    summary of it and the rank counts after it; TableChanged when only a table replace can (then
    replace the table)."""
    table = table_name(after.network)
    fixed: list[tuple[str, tuple[str, ...]]] = []  # fixed chains whose rules differ: a new isolation set
    for was, now in zip(before.families, after.families, strict=True):
        old_rules, new_rules = (_family_text(p, table, ranks).chains() for p in (was, now))
        fixed += [(name, rules) for name, rules in new_rules.items() if old_rules[name] != rules]
    old_sets = {s.name: s for f in before.families for s in referenced_sets(f)}
    new_sets = {s.name: s for f in after.families for s in referenced_sets(f)}
    old_chains = {c.name: (f.family, c) for f in before.families for c in f.chains}
    new_chains = {c.name: (f.family, c) for f in after.families for c in f.chains}
    for name in sorted(
        old_chains.keys() & new_chains.keys()
    ):  # named by their rules: only comments may differ
        (_, old_chain), (family, new_chain) = old_chains[name], new_chains[name]
        if old_chain.comment != new_chain.comment:  # another first policy: its rules say so
            kept = chain_text(new_chain, family)
            fixed.append((kept.name, kept.rules))
    lines: list[str] = []
    for name in sorted(new_sets.keys() - old_sets.keys()):
        spec = new_sets[name]
        text = set_text(spec, new[name])
        flags = " flags interval;" if text.interval else ""
        lines.append(f"add set inet {table} {text.name} {{ type {text.type};{flags} }}")
        if text.elements:
            lines.append(f"add element inet {table} {text.name} {{ {', '.join(text.elements)} }}")
    fresh_chains = [chain_text(c, f) for n, (f, c) in sorted(new_chains.items()) if n not in old_chains]
    for chain in fresh_chains:  # every chain first: a rule may go to another new one
        lines.append(f"add chain inet {table} {chain.name}")
    for chain in fresh_chains:
        lines += [f"add rule inet {table} {chain.name} {rule}" for rule in chain.rules]
    reached: Ranks = {}
    element_lines, delta = _element_lines(table, element_diffs(before, after, old, new, ranks, reached))
    lines += element_lines  # the maps leave the old chains here, so they can go next
    for name, rules in fixed:
        lines.append(f"flush chain inet {table} {name}")
        lines += [f"add rule inet {table} {name} {rule}" for rule in rules]
    stale_chains = [chain_text(c, f).name for n, (f, c) in sorted(old_chains.items()) if n not in new_chains]
    lines += [f"delete chain inet {table} {name}" for name in stale_chains]
    stale_sets = sorted(old_sets.keys() - new_sets.keys())
    lines += [f"delete set inet {table} {n}" for n in stale_sets]
    summary = (
        f"chains +{len(fresh_chains)} -{len(stale_chains)} ~{len(fixed)}, "
        f"sets +{len(new_sets.keys() - old_sets.keys())} -{len(stale_sets)}, "
        f"elements +{delta.added} -{delta.removed}"
    )
    return "".join(f"{line}\n" for line in lines), summary, reached
