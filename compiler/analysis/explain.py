"""Why one connection is allowed or denied: each side's isolating policies, the rule that admits
it (with its place in the source), or the nearest miss when none does.

Decides exactly as ``evaluate.Evaluator`` does, keeping the reasons it throws away.
"""

from __future__ import annotations

from typing import Any

import attrs

from ..inventory import Pod
from ..ir import Address, Direction, IPBlock, Peer, Policy, PortSpec, Rule
from .load import Model

SIDES: tuple[Direction, ...] = ("egress", "ingress")


@attrs.frozen
class Endpoint:
    """One end of the connection: a pod (with the address used) or an address outside the inventory."""

    address: Address
    pod: Pod | None = None

    @property
    def name(self) -> str:
        return f"{self.pod.namespace}/{self.pod.name}" if self.pod else str(self.address)


@attrs.frozen
class RuleRef:
    policy: Policy
    direction: Direction
    index: int
    place: str

    @property
    def name(self) -> str:
        return f"{self.policy.namespace}/{self.policy.name} {self.direction}[{self.index}]"

    def json(self) -> dict[str, Any]:
        return {
            "policy": f"{self.policy.namespace}/{self.policy.name}",
            "kind": self.policy.kind,
            "direction": self.direction,
            "rule": self.index,
            "place": self.place,
        }


@attrs.frozen
class Side:
    """One pod's side (the source's egress, the destination's ingress) of one connection."""

    direction: Direction
    pod: str | None  # None: the destination is no pod, nothing governs its ingress
    isolated_by: tuple[tuple[Policy, str], ...]  # (policy, place of its name)
    allowed_by: RuleRef | None
    misses: tuple[tuple[RuleRef, str], ...]  # nearest misses: rule and what is wrong with it

    @property
    def isolated(self) -> bool:
        return bool(self.isolated_by)

    @property
    def allowed(self) -> bool:
        return not self.isolated or self.allowed_by is not None

    def json(self) -> dict[str, Any]:
        return {
            "pod": self.pod,
            "isolated": self.isolated,
            "isolatedBy": [
                {"policy": f"{p.namespace}/{p.name}", "kind": p.kind, "place": place}
                for p, place in self.isolated_by
            ],
            "allowed": self.allowed,
            "allowedBy": self.allowed_by.json() if self.allowed_by else None,
            "nearestMisses": [{**rule.json(), "reason": why} for rule, why in self.misses],
        }

    def text(self) -> str:
        who = f"{self.direction} of {self.pod}"
        if self.pod is None:
            return f"{self.direction}: the destination is not a pod of the inventory: no policy governs it"
        if not self.isolated:
            return f"{who}: not isolated (no policy selects it for {self.direction}): allowed"
        lines = [
            f"{who}: isolated by "
            + ", ".join(f"{p.namespace}/{p.name} ({place})" for p, place in self.isolated_by)
        ]
        if self.allowed_by:
            lines.append(f"  allowed by {self.allowed_by.name} at {self.allowed_by.place}")
        else:
            lines.append("  denied: no rule of these policies matches")
            lines.extend(f"  nearest miss: {rule.name} at {rule.place}: {why}" for rule, why in self.misses)
        return "\n".join(lines)


def _show_ports(ports: tuple[PortSpec, ...]) -> str:
    def one(p: PortSpec) -> str:
        if p.port is None:
            return f"{p.protocol.lower()}/any"
        end = f"-{p.end_port}" if p.end_port else ""
        return f"{p.protocol.lower()}/{p.port}{end}"

    return ", ".join(one(p) for p in ports)


class Explainer:
    """Per-rule verdicts for one model."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self._namespaces = model.namespaces
        self._policies: dict[str, list[Policy]] = {}  # a policy selects pods of its own namespace only
        for policy in model.program.policies:
            self._policies.setdefault(policy.namespace, []).append(policy)

    def _peer_matches(self, peer: Peer, remote: Endpoint) -> bool:
        if isinstance(peer, IPBlock):
            return peer.contains(remote.address)
        pod = remote.pod
        return pod is not None and peer.matches(self._namespaces.get(pod.namespace, {}), pod.labels)

    def side(
        self, direction: Direction, pod: Pod, remote: Endpoint, protocol: str, port: int, dst: Pod | None
    ) -> Side:
        named = dst.named_ports() if dst is not None else {}
        isolating: list[Policy] = []
        allowed: tuple[Policy, int] | None = None
        peer_only: list[tuple[Policy, int, str]] = []
        port_only: list[tuple[Policy, int, str]] = []
        for policy in self._policies.get(pod.namespace, ()):
            rules = policy.rules(direction)
            if rules is None or not policy.pod_selector.matches(pod.labels):
                continue
            isolating.append(policy)
            for index, rule in enumerate(rules):
                peer_ok = rule.peers is None or any(self._peer_matches(p, remote) for p in rule.peers)
                port_ok = not rule.ports or any(p.matches(protocol, port, named) for p in rule.ports)
                if peer_ok and port_ok:
                    allowed = allowed or (policy, index)
                elif peer_ok:
                    why = f"the peer matches but not the port (rule allows {_show_ports(rule.ports)})"
                    peer_only.append((policy, index, why))
                elif port_ok:
                    port_only.append(
                        (policy, index, f"the port matches but no peer does ({self._show_peers(rule)})")
                    )
        # places are looked up only for what is shown: each lookup reads the source document again
        misses = () if allowed is not None else tuple((peer_only or port_only)[:3])
        return Side(
            direction,
            f"{pod.namespace}/{pod.name}",
            tuple((p, self.model.place(p)) for p in isolating),
            self._ref(allowed[0], direction, allowed[1]) if allowed else None,
            tuple((self._ref(p, direction, i), why) for p, i, why in misses),
        )

    def _ref(self, policy: Policy, direction: Direction, index: int) -> RuleRef:
        return RuleRef(policy, direction, index, self._rule_place(policy, direction, index))

    def _rule_place(self, policy: Policy, direction: Direction, index: int) -> str:
        return self.model.place(policy, ("spec", direction, index))

    @staticmethod
    def _show_peers(rule: Rule) -> str:
        peers = rule.peers or ()
        return f"{len(peers)} peer{'s' if len(peers) != 1 else ''} listed"

    def explain(self, src: Endpoint, dst: Endpoint, protocol: str, port: int) -> tuple[Side, Side]:
        assert src.pod is not None
        egress = self.side("egress", src.pod, dst, protocol, port, dst.pod)
        if dst.pod is None:
            return egress, Side("ingress", None, (), None, ())
        return egress, self.side("ingress", dst.pod, src, protocol, port, dst.pod)
