"""Are this network's chains and sets in the kernel still the ones loaded? The agent's resync asks
before reloading.

Compared on counts: every chain npc wants (none of its prefix besides) with as many rules as the
restore file wrote, npc's one FORWARD jump, and every set with as many entries as it was given.
A flushed or deleted chain, a destroyed or flushed set, an entry removed by hand is drift.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

from ...lower import Lowered
from ...resolve import Entry
from ..base import Runner
from .load import Tools, _table_state
from .render import all_sets, render_rules


def _rule_counts(lines: Sequence[str]) -> Counter[str]:
    return Counter(line.split()[1] for line in lines if line.startswith("-A "))


def _set_entries(run: Runner) -> dict[str, int]:
    """Entries per set of the namespace (``ipset list -t``)."""
    out: dict[str, int] = {}
    listing = run(["ipset", "list", "-t"])
    for block in listing.stdout.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "Name" in fields:
            out[fields["Name"]] = int(fields.get("Number of entries", "0") or 0)
    return out


def iptables_drift(
    lowered: Lowered, members: Mapping[str, Sequence[Entry]], mark: int, tools: Tools, run: Runner
) -> tuple[str, ...]:
    """What differs between the kernel and (``lowered``, ``members``) (empty: nothing)."""
    found: list[str] = []
    for family in (4, 6):
        state = _table_state(run, tools, family, lowered)
        want = _rule_counts(render_rules(lowered, family, mark, []).splitlines())
        have = _rule_counts(state.rules)
        for chain in sorted(set(lowered.chain_names(family)) - set(state.chains)):
            found.append(f"IPv{family} chain {chain} missing")
        for chain in sorted(set(state.chains) - set(lowered.chain_names(family))):
            found.append(f"IPv{family} chain {chain} not npc's")
        for chain in sorted(want.keys() | have.keys()):
            if want[chain] != have[chain] and chain in state.chains:
                found.append(f"IPv{family} chain {chain} has {have[chain]} rules, not {want[chain]}")
        if state.jumps != 1:
            found.append(f"IPv{family}: {state.jumps} FORWARD jumps to npc, not 1")
    entries = _set_entries(run)
    for spec in all_sets(lowered):
        if spec.name not in entries:
            found.append(f"set {spec.name} missing")
        elif entries[spec.name] != len(members[spec.name]):
            found.append(f"set {spec.name} has {entries[spec.name]} entries, not {len(members[spec.name])}")
    return tuple(found)
