"""Reference semantics: decide one connection straight from the IR, with no sets or chains.

This is the model the kernel results and every optimiser pass are checked against, so it is
written for obviousness, not speed: it follows the NetworkPolicy rules word for word.
"""

from __future__ import annotations

from collections.abc import Mapping

from .inventory import Inventory, Pod
from .ir import Address, Direction, IPBlock, Peer, PodPeer, Policy, Program


class Evaluator:
    def __init__(self, program: Program, inventory: Inventory) -> None:
        self.policies = program.policies
        self.inventory = inventory
        self._ns_labels = {ns.name: ns.labels for ns in inventory.namespaces}
        self._by_ip = {ip: pod for pod in inventory.pods for ip in pod.ips}

    def _namespace_labels(self, name: str) -> Mapping[str, str]:
        return self._ns_labels.get(name) or self.inventory.namespace(name).labels

    def selects(self, policy: Policy, pod: Pod) -> bool:
        return pod.namespace == policy.namespace and policy.pod_selector.matches(pod.labels)

    def _peer_matches(self, peer: Peer, address: Address) -> bool:
        if isinstance(peer, IPBlock):
            return peer.contains(address)
        pod = self._by_ip.get(address)
        return (
            pod is not None
            and isinstance(peer, PodPeer)
            and peer.matches(self._namespace_labels(pod.namespace), pod.labels)
        )

    def _side_allows(
        self, direction: Direction, pod: Pod, remote: Address, protocol: str, port: int, dst: Pod | None
    ) -> bool:
        """Does ``pod``'s ``direction`` side let this connection through?"""
        named = dst.named_ports() if dst is not None else {}
        isolated = False
        for policy in self.policies:
            rules = policy.rules(direction)
            if rules is None or not self.selects(policy, pod):
                continue
            isolated = True
            for rule in rules:
                if rule.peers is not None and not any(self._peer_matches(p, remote) for p in rule.peers):
                    continue
                if rule.ports and not any(p.matches(protocol, port, named) for p in rule.ports):
                    continue
                return True
        return not isolated

    def allowed(self, src: Address, dst: Address, protocol: str, port: int) -> bool:
        """A new connection from ``src`` to ``dst``: both the egress and the ingress side must allow."""
        if src.version != dst.version:
            return False
        src_pod, dst_pod = self._by_ip.get(src), self._by_ip.get(dst)
        if src_pod is not None and not self._side_allows("egress", src_pod, dst, protocol, port, dst_pod):
            return False
        return dst_pod is None or self._side_allows("ingress", dst_pod, src, protocol, port, dst_pod)
