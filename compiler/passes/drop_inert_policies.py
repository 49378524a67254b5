"""Drop what a policy says that changes nothing: isolation another policy already gives, and
policies left with nothing to say.

A direction with no rules (``()``) only isolates. When another policy of the same namespace and
networks, whose selector matches at least the same pods, governs that direction too, those pods
are isolated anyway, so the direction becomes ``None``. A policy that governs no direction, or
whose selector can match no pod, neither isolates nor allows anything and is dropped.

Sound because a pod is isolated for a direction when *some* policy selecting it governs it,
and allowed when some rule of such a policy allows: neither changes. Directions are cleared
one at a time against the policies that still govern, so two equal policies cannot clear each
other.
"""

from __future__ import annotations

from collections import defaultdict

from ..ir import DIRECTIONS, Policy, Program
from .cover import selector_implies, unsatisfiable
from .rewrite import with_rules


def _without_redundant_isolation(policies: list[Policy]) -> list[Policy]:
    out = list(policies)
    for direction in DIRECTIONS:
        for i, policy in enumerate(out):
            if policy.rules(direction) != ():
                continue
            if any(
                j != i
                and other.rules(direction) is not None
                and selector_implies(policy.pod_selector, other.pod_selector)
                for j, other in enumerate(out)
            ):
                out[i] = with_rules(policy, direction, None)
    return out


def drop_inert_policies(program: Program) -> Program:
    groups: dict[tuple[str, tuple[str, ...]], list[Policy]] = defaultdict(list)
    for policy in program.policies:
        if not unsatisfiable(policy.pod_selector):
            groups[(policy.namespace, policy.policy_for)].append(policy)
    kept = [p for ps in groups.values() for p in _without_redundant_isolation(ps)]
    return Program(tuple(p for p in kept if p.ingress is not None or p.egress is not None))
