"""Merge the rules of one policy and direction that name the same ports, over their peers.

Sound because rules are OR-ed: (peers P, ports X) or (peers Q, ports X) is (peers P u Q,
ports X), where "every peer" (``None``) absorbs everything. Lowering turns a rule's pod peers
into one set, so this is what makes many peers on the same ports one iptables rule.

Only rules whose pod peers share one namespace selector are merged (ipBlocks go along with
any): the merged set then spans no more namespaces than its parts did. Merging a peer that
reaches across namespaces (``team=payments``) into a namespace's own peers would copy that
large, widely shared set into a new set per policy - one rule saved for hundreds of set
entries. This is decided from the policies alone, never from pods, so rules stay independent
of the inventory.
"""

from __future__ import annotations

from ..ir import Peer, PodPeer, PortSpec, Program, Rule
from .rewrite import map_rules


def _merge(rules: tuple[Rule, ...]) -> tuple[Rule, ...]:
    everyone = {r.ports for r in rules if r.peers is None}  # "every peer" absorbs the rest
    merged: dict[tuple[object, ...], tuple[tuple[PortSpec, ...], list[Peer] | None]] = {}
    for i, rule in enumerate(rules):
        if rule.peers is None or rule.ports in everyone:
            merged.setdefault(("all", rule.ports), (rule.ports, None))
            continue
        scopes = {p.namespaces for p in rule.peers if isinstance(p, PodPeer)}
        key = ("scope", rule.ports, *scopes) if len(scopes) <= 1 else ("alone", i)
        peers = merged.setdefault(key, (rule.ports, []))[1]
        assert peers is not None
        peers.extend(rule.peers)
    return tuple(Rule(peers if peers is None else tuple(peers), ports) for ports, peers in merged.values())


def merge_peers(program: Program) -> Program:
    return map_rules(program, _merge)
