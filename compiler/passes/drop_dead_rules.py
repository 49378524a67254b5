"""Drop peers and rules that can never match.

Sound because a rule allows a connection only if one of its peers matches the remote address
(when it lists peers) and one of its port specs matches (when it lists ports): a peer that no
address can match (a contradictory selector, an ipBlock whose ``except`` swallows its ``cidr``)
adds nothing to the union, and a rule left with no live peer allows nothing at all. The rule
list itself stays, even when it becomes empty: ``()`` still isolates.
"""

from __future__ import annotations

from ..ir import Program, Rule
from .cover import peer_dead
from .rewrite import map_rules


def _live(rules: tuple[Rule, ...]) -> tuple[Rule, ...]:
    out: list[Rule] = []
    for rule in rules:
        if rule.peers is None:
            out.append(rule)
            continue
        peers = tuple(p for p in rule.peers if not peer_dead(p))
        if peers:
            out.append(rule if len(peers) == len(rule.peers) else Rule(peers, rule.ports))
    return tuple(out)


def drop_dead_rules(program: Program) -> Program:
    return map_rules(program, _live)
