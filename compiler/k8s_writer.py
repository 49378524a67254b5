"""IR policies as Kubernetes objects: NetworkPolicy, or MultiNetworkPolicy when it names networks.

What comes out reads back (through ``frontends.k8s``) as the very same IR: ``policyTypes`` is
always explicit, a peer in the policy's own namespace becomes a podSelector-only peer again,
single-valued ``In`` requirements become ``matchLabels``. A policy Kubernetes cannot express is
an ``InputError`` saying why, never a silent drop.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml

from .documents import Dumper
from .errors import InputError
from .frontends.k8s import API_VERSIONS, MULTI_NETWORK_POLICY, NETWORK_POLICY, POLICY_FOR_ANNOTATION
from .frontends.positions import show
from .ir import IPBlock, Peer, Policy, PortSpec, Rule, Selector, namespace_selector


def write_k8s(policies: Iterable[Policy]) -> str:
    """A multi-document YAML stream, one object per policy, in the order given."""
    docs = [network_policy(p) for p in policies]
    if not docs:
        return ""
    text: str = yaml.dump_all(
        docs, Dumper=Dumper, sort_keys=False, default_flow_style=False, explicit_start=True
    )
    return text


def _cannot(policy: Policy, why: str) -> InputError:
    name = show(f"{policy.namespace}/{policy.name}")
    return InputError(f"{policy.kind} {name} has no Kubernetes form: {why}", policy.source or "<input>")


def network_policy(policy: Policy) -> dict[str, Any]:
    """One policy as a NetworkPolicy (or MultiNetworkPolicy) object."""
    if policy.kind not in (NETWORK_POLICY, MULTI_NETWORK_POLICY):
        raise _cannot(policy, "only NetworkPolicy and MultiNetworkPolicy objects are written")
    if policy.policy_for and policy.kind != MULTI_NETWORK_POLICY:
        raise _cannot(policy, "a NetworkPolicy applies to the default network and cannot name networks")
    if policy.ingress is None and policy.egress is None:
        raise _cannot(policy, "it governs neither ingress nor egress, and an empty policyTypes means Ingress")
    metadata: dict[str, Any] = {"name": policy.name, "namespace": policy.namespace}
    if policy.policy_for:
        metadata["annotations"] = {POLICY_FOR_ANNOTATION: ", ".join(policy.policy_for)}
    governed = [
        (direction, field, rules)
        for direction, field, rules in (("Ingress", "from", policy.ingress), ("Egress", "to", policy.egress))
        if rules is not None
    ]
    spec: dict[str, Any] = {
        "podSelector": _selector(policy.pod_selector),
        "policyTypes": [direction for direction, _, _ in governed],
    }
    for direction, field, rules in governed:
        if rules:
            spec[direction.lower()] = [_rule(policy, field, r) for r in rules]
    return {
        "apiVersion": API_VERSIONS[policy.kind][0],
        "kind": policy.kind,
        "metadata": metadata,
        "spec": spec,
    }


def _rule(policy: Policy, field: str, rule: Rule) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if rule.peers is not None:
        if not rule.peers:
            raise _cannot(
                policy, f"a rule allows no peer at all, but an empty `{field}` list means every peer"
            )
        out[field] = [_peer(policy, p) for p in rule.peers]
    if rule.ports:
        out["ports"] = [_port(p) for p in rule.ports]
    return out


def _peer(policy: Policy, peer: Peer) -> dict[str, Any]:
    if isinstance(peer, IPBlock):
        block: dict[str, Any] = {"cidr": str(peer.cidr)}
        if peer.excepts:
            block["except"] = [str(e) for e in peer.excepts]
        return {"ipBlock": block}
    if peer.namespaces == namespace_selector(policy.namespace):
        return {"podSelector": _selector(peer.pods)}
    out = {"namespaceSelector": _selector(peer.namespaces)}
    if not peer.pods.is_all:
        out["podSelector"] = _selector(peer.pods)
    return out


def _port(spec: PortSpec) -> dict[str, Any]:
    out: dict[str, Any] = {"protocol": spec.protocol}
    if spec.port is not None:
        out["port"] = spec.port
    if spec.end_port is not None:
        out["endPort"] = spec.end_port
    return out


def _selector(selector: Selector) -> dict[str, Any]:
    labels: dict[str, str] = {}
    expressions: list[dict[str, Any]] = []
    for r in selector.requirements:
        if r.op == "In" and len(r.values) == 1 and r.key not in labels:
            labels[r.key] = r.values[0]
            continue
        expression: dict[str, Any] = {"key": r.key, "operator": r.op}
        if r.values:
            expression["values"] = list(r.values)
        expressions.append(expression)
    out: dict[str, Any] = {}
    if labels:
        out["matchLabels"] = labels
    if expressions:
        out["matchExpressions"] = expressions
    return out
