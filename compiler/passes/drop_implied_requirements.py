"""Drop a selector's requirements that another of its requirements already implies.

``team Exists`` beside ``team In [payments]``, ``tier NotIn [db]`` beside ``tier In [web]``,
``debug NotIn [1]`` beside ``debug DoesNotExist``: the selector matches the same label sets
without them. Written both ways, one selector was two sets of the same pods (a copy of a team's
pods per spelling, 17k entries for one spelling at the messy L), and a requirement too many
keeps a peer from being tested by the parts other rules load anyway (``lower.part_keys``).
Implication is ``cover``'s, which only ever answers what holds for every inventory.
"""

from __future__ import annotations

import functools

import attrs

from ..ir import Peer, PodPeer, Policy, Program, Requirement, Rule, Selector
from .cover import requirement_implies
from .rewrite import map_rules

# More requirements on one key than people write (a Kubernetes selector is validated, not
# bounded, per key): the pairwise search would be quadratic, so such a key is left as written.
CROWDED = 64


@functools.lru_cache(maxsize=1 << 16)  # the same few selectors recur across thousands of policies
def _tidied(selector: Selector) -> Selector | None:
    """``selector`` without its implied requirements; None when it has none (so an unchanged
    policy is handed back as the very object, which is how the optimiser's rounds see it)."""
    by_key: dict[str, list[Requirement]] = {}  # only a requirement on the same key implies another
    for r in selector.requirements:
        by_key.setdefault(r.key, []).append(r)
    kept = tuple(
        r
        for r in selector.requirements
        if len(by_key[r.key]) > CROWDED
        or not any(other != r and requirement_implies(other, r) for other in by_key[r.key])
    )
    return None if len(kept) == len(selector.requirements) else Selector(kept)


def _peer(peer: Peer) -> Peer:
    if not isinstance(peer, PodPeer):
        return peer
    spaces, pods = _tidied(peer.namespaces), _tidied(peer.pods)
    if spaces is None and pods is None:
        return peer
    return PodPeer(peer.namespaces if spaces is None else spaces, peer.pods if pods is None else pods)


def _rule(rule: Rule) -> Rule:
    if rule.peers is None:
        return rule
    peers = tuple(map(_peer, rule.peers))
    return (
        rule
        if all(a is b for a, b in zip(peers, rule.peers, strict=True))
        else attrs.evolve(rule, peers=peers)
    )


def _rules(rules: tuple[Rule, ...]) -> tuple[Rule, ...]:
    out = tuple(map(_rule, rules))
    return rules if all(a is b for a, b in zip(out, rules, strict=True)) else out


def _target(policy: Policy) -> Policy:
    pods = _tidied(policy.pod_selector)
    return policy if pods is None else attrs.evolve(policy, pod_selector=pods)


def drop_implied_requirements(program: Program) -> Program:
    return Program(tuple(map(_target, map_rules(program, _rules).policies)))
