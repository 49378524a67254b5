"""Plumbing shared by the passes: rewrite every rule list of every policy, keeping ``None`` apart.

Not a pass. ``None`` (the policy does not govern that direction) is never handed to a rewrite,
so no pass can turn "isolates and allows nothing" into "does not isolate" by accident.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from ..ir import DIRECTIONS, Direction, Policy, Program, Rule

RuleRewrite = Callable[[tuple[Rule, ...]], tuple[Rule, ...]]


def with_rules(policy: Policy, direction: Direction, rules: tuple[Rule, ...] | None) -> Policy:
    """``policy`` with one direction's rule list replaced."""
    if direction == "ingress":
        return attrs.evolve(policy, ingress=rules)
    return attrs.evolve(policy, egress=rules)


def map_rules(program: Program, rewrite: RuleRewrite) -> Program:
    """``rewrite`` applied to each governed direction of each policy, on its own."""

    def one(policy: Policy) -> Policy:
        for direction in DIRECTIONS:
            if (rules := policy.rules(direction)) is not None and (new := rewrite(rules)) != rules:
                policy = with_rules(policy, direction, new)
        return policy

    return Program(tuple(one(p) for p in program.policies))
