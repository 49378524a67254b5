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
from .load import Tools, _owns_jump, _sets, _table_states
from .mark_tree import Marks
from .render import NPC_LAYOUT, home, kernel_sets, render_rules


def _rule_counts(lines: Sequence[str]) -> Counter[str]:
    return Counter(line.split()[1] for line in lines if line.startswith("-A "))


def iptables_drift(
    lowered: Lowered, members: Mapping[str, Sequence[Entry]], marks: Marks, tools: Tools, run: Runner
) -> tuple[str, ...]:
    """What differs between the kernel and (``lowered``, ``members``) (empty: nothing)."""
    found: list[str] = []
    for family in NPC_LAYOUT.carrying(lowered).families:
        states = _table_states(run, tools, family, lowered)
        text = render_rules(lowered, family, marks, {home(marks): []})
        want = _rule_counts(text.splitlines())
        have = _rule_counts([rule for state in states.values() for rule in state.rules])
        wanted = set(NPC_LAYOUT.chain_names(lowered, family, marks))
        present = {c for state in states.values() for c in state.chains}
        found += [f"IPv{family} chain {chain} missing" for chain in sorted(wanted - present)]
        found += [f"IPv{family} chain {chain} not npc's" for chain in sorted(present - wanted)]
        for chain in sorted(want.keys() | have.keys()):
            if want[chain] != have[chain] and chain in present:
                found.append(f"IPv{family} chain {chain} has {have[chain]} rules, not {want[chain]}")
        for table, state in states.items():
            jumps = 1 if _owns_jump(NPC_LAYOUT, marks, table) else 0
            if state.jumps != jumps:
                found.append(f"IPv{family} {table}: {state.jumps} FORWARD jumps to npc, not {jumps}")
            if state.older:
                found.append(f"IPv{family} {table}: {len(state.older)} FORWARD jumps of an older npc")
    kernel = _sets(run)
    for spec in kernel_sets(lowered, members, marks):
        if spec.name not in kernel:
            found.append(f"set {spec.name} missing")
        elif kernel[spec.name].entries != len(spec.members):
            found.append(f"set {spec.name} has {kernel[spec.name].entries} entries, not {len(spec.members)}")
    return tuple(found)
