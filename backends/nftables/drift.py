"""Is the table in the kernel still the one loaded? The agent's resync asks before reloading.

Compared on nft's JSON listing: every chain npc wants with as many rules as it wrote (none of
another name), every set and map with as many elements. Someone flushing a chain, deleting the
table, a set or an element, or adding a rule of their own to npc's table is drift; the counts
make it cheap enough to ask on every resync of a large node.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from ..base import Runner
from .load import FAMILY
from .render import Ruleset


def expected_counts(ruleset: Ruleset) -> tuple[dict[str, int], dict[str, int]]:
    """(rules per chain, elements per set or map) as the template writes them."""
    chains = {"forward": len(ruleset.forward)}
    chains.update((name, len(rules)) for f in ruleset.families for name, rules in f.chains().items())
    chains.update((c.name, len(c.rules)) for c in ruleset.policy_chains)
    elements = {s.name: len(s.elements) for s in ruleset.sets}
    elements.update((m.name, len(m.elements)) for m in ruleset.maps)
    return chains, elements


def listed_counts(listing: dict[str, Any]) -> tuple[dict[str, int], dict[str, int]]:
    """(rules per chain, elements per set or map) of ``nft -j list table``."""
    chains: Counter[str] = Counter()
    elements: dict[str, int] = {}
    for item in listing.get("nftables", ()):
        if "chain" in item:
            chains[item["chain"]["name"]] += 0
        elif "rule" in item:
            chains[item["rule"]["chain"]] += 1
        for kind in ("set", "map"):
            if kind in item:
                elements[item[kind]["name"]] = len(item[kind].get("elem", ()))
    return dict(chains), elements


def _differences(kind: str, unit: str, want: dict[str, int], have: dict[str, int]) -> list[str]:
    out = [f"{kind} {n} missing" for n in sorted(want.keys() - have.keys())]
    out += [f"{kind} {n} not npc's" for n in sorted(have.keys() - want.keys())]
    out += [
        f"{kind} {n} has {have[n]} {unit}, not {want[n]}"
        for n in sorted(want.keys() & have.keys())
        if want[n] != have[n]
    ]
    return out


def table_drift(ruleset: Ruleset, run: Runner) -> tuple[str, ...]:
    """What differs between the kernel's table and ``ruleset`` (empty: nothing)."""
    if not run.which("nft"):
        return ("nft not found",)
    listed = run(["nft", "-j", "list", "table", FAMILY, ruleset.table])
    if listed.returncode != 0:
        return (f"table {FAMILY} {ruleset.table} missing",)
    want_chains, want_elements = expected_counts(ruleset)
    have_chains, have_elements = listed_counts(json.loads(listed.stdout))
    return (
        *_differences("chain", "rules", want_chains, have_chains),
        *_differences("set", "elements", want_elements, have_elements),
    )
