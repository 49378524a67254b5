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
from .render import FORWARD_RULES, Ruleset


def expected_counts(ruleset: Ruleset) -> tuple[dict[str, int], dict[str, int]]:
    """(rules per chain, elements per set or map) as the template writes them, each named
    ``<family> <name>`` (both tables have a ``forward`` chain, and may have a port list)."""
    chains: dict[str, int] = {}
    elements: dict[str, int] = {}
    for t in ruleset.tables:
        chains[f"{t.ip} forward"] = FORWARD_RULES
        chains.update((f"{t.ip} {name}", len(rules)) for name, rules in t.chains().items())
        chains.update((f"{t.ip} {c.name}", len(c.rules)) for c in t.policy_chains)
        elements.update((f"{t.ip} {s.name}", len(s.elements)) for s in t.sets)
        elements.update((f"{t.ip} {m.name}", len(m.elements)) for m in t.maps)
    return chains, elements


def listed_counts(listing: dict[str, Any]) -> tuple[dict[str, int], dict[str, int]]:
    """(rules per chain, elements per set or map) of ``nft -j list table``s, named as ``expected_counts``."""
    chains: Counter[str] = Counter()
    elements: dict[str, int] = {}
    for item in listing.get("nftables", ()):
        if "chain" in item:
            chains[f"{item['chain']['family']} {item['chain']['name']}"] += 0
        elif "rule" in item:
            chains[f"{item['rule']['family']} {item['rule']['chain']}"] += 1
        for kind in ("set", "map"):
            if kind in item:
                elements[f"{item[kind]['family']} {item[kind]['name']}"] = len(item[kind].get("elem", ()))
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
    """What differs between the kernel's tables and ``ruleset`` (empty: nothing)."""
    if not run.which("nft"):
        return ("nft not found",)
    have_chains: dict[str, int] = {}
    have_elements: dict[str, int] = {}
    for t in ruleset.tables:
        listed = run(["nft", "-j", "list", "table", t.ip, ruleset.table])
        if listed.returncode != 0:
            return (f"table {t.ip} {ruleset.table} missing",)
        chains, elements = listed_counts(json.loads(listed.stdout))
        have_chains.update(chains)
        have_elements.update(elements)
    want_chains, want_elements = expected_counts(ruleset)
    return (
        *_differences("chain", "rules", want_chains, have_chains),
        *_differences("set", "elements", want_elements, have_elements),
    )
