"""Kubernetes NetworkPolicy and MultiNetworkPolicy objects to IR policies.

Validation is what the API server (and strict decoding) would reject, so a policy npc enforces
is one a cluster would have accepted. Meaning follows networking.k8s.io/v1 exactly: policyTypes
defaults, absent vs empty peer lists, podSelector-only peers meaning the policy's namespace.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, TypeVar, get_args

from ..ir import (
    MULTI_NETWORK_POLICY,
    NETWORK_POLICY,
    PROTOCOLS,
    IPBlock,
    Operator,
    Peer,
    PodPeer,
    Policy,
    PortSpec,
    Requirement,
    Rule,
    Selector,
    namespace_selector,
    too_many_pairs,
)
from .positions import FieldPath, MapKey, show
from .validate import (
    Meta,
    check_name,
    cidr,
    except_problem,
    fail,
    fields,
    integer,
    items,
    label_value_problem,
    labels,
    network_problem,
    object_meta,
    port_name_problem,
    qualified_name_problem,
    required,
    string,
    strings,
    type_name,
    whole,
)

API_VERSIONS: Mapping[str, tuple[str, ...]] = {
    NETWORK_POLICY: ("networking.k8s.io/v1", "extensions/v1beta1"),
    MULTI_NETWORK_POLICY: ("k8s.cni.cncf.io/v1beta1", "k8s.cni.cncf.io/v1beta2"),
}
POLICY_FOR_ANNOTATION = "k8s.v1.cni.cncf.io/policy-for"

_TOP_FIELDS: Mapping[str, tuple[str, ...]] = {
    # status existed (always empty) from 1.24 to 1.26; exports from those clusters carry it
    NETWORK_POLICY: ("apiVersion", "kind", "metadata", "spec", "status"),
    MULTI_NETWORK_POLICY: ("apiVersion", "kind", "metadata", "spec"),
}
_SPEC_FIELDS = ("podSelector", "ingress", "egress", "policyTypes")
_SELECTOR_FIELDS = ("matchLabels", "matchExpressions")
_REQUIREMENT_FIELDS = ("key", "operator", "values")
_PEER_FIELDS = ("podSelector", "namespaceSelector", "ipBlock")
_IP_BLOCK_FIELDS = ("cidr", "except")
_PORT_FIELDS = ("protocol", "port", "endPort")
_POLICY_TYPES = ("Ingress", "Egress")
_OPERATORS: Mapping[str, Operator] = {op: op for op in get_args(Operator)}


def policy_from_object(obj: Mapping[str, Any], source: str = "") -> Policy:
    """One NetworkPolicy or MultiNetworkPolicy object (parsed JSON/YAML) as an IR policy.

    Raises ``FieldError`` (an ``InputError`` carrying the field path) for anything the API server
    would refuse; the caller adds the line and column.
    """
    kind = obj.get("kind")
    if not isinstance(kind, str) or kind not in API_VERSIONS:
        raise fail(("kind",), f"unsupported kind {show(kind)}: expected one of {', '.join(API_VERSIONS)}")
    top = fields(obj, (), _TOP_FIELDS[kind])
    api_version = string(required(top, "apiVersion", ()), ("apiVersion",))
    if api_version not in API_VERSIONS[kind]:
        expected = " or ".join(API_VERSIONS[kind])
        raise fail(
            ("apiVersion",), f"unsupported apiVersion {show(api_version)} for {kind}: expected {expected}"
        )
    if "status" in top and not isinstance(top["status"], dict):
        raise fail(("status",), f"must be a mapping, not {type_name(top['status'])}")
    meta = object_meta(top.get("metadata"))
    spec = fields(top.get("spec"), ("spec",), _SPEC_FIELDS)
    ingress = _rules(spec, "ingress", "from", meta.namespace)
    egress = _rules(spec, "egress", "to", meta.namespace)
    types = _policy_types(spec, has_egress=bool(egress))
    listed = [*(("ingress", i) for i in range(len(ingress))), *(("egress", i) for i in range(len(egress)))]
    if (found := too_many_pairs([*ingress, *egress])) is not None:
        raise fail(("spec", *listed[found[0]]), found[1])
    return Policy(
        namespace=meta.namespace,
        name=meta.name,
        pod_selector=selector(spec.get("podSelector"), ("spec", "podSelector")),
        ingress=ingress if "Ingress" in types else None,
        egress=egress if "Egress" in types else None,
        kind=kind,
        policy_for=_policy_for(meta) if kind == MULTI_NETWORK_POLICY else (),
        source=source,
    )


def _policy_types(spec: Mapping[str, Any], *, has_egress: bool) -> list[str]:
    """Listed types, or the default: Ingress, plus Egress when there are egress rules."""
    parts: FieldPath = ("spec", "policyTypes")
    values = strings(spec.get("policyTypes"), parts)
    for i, value in enumerate(values):
        if value not in _POLICY_TYPES:
            raise fail((*parts, i), f"unsupported policy type {show(value)}: must be Ingress or Egress")
        if value in values[:i]:
            raise fail((*parts, i), f"duplicate policy type {show(value)}")
    if values:
        return values
    return ["Ingress", "Egress"] if has_egress else ["Ingress"]


def _rules(spec: Mapping[str, Any], direction: str, peers_field: str, namespace: str) -> list[Rule]:
    """Every rule is validated, even for a direction policyTypes leaves out (as the API server does)."""
    out: list[Rule] = []
    for i, raw in enumerate(items(spec.get(direction), ("spec", direction))):
        at: FieldPath = ("spec", direction, i)
        rule = fields(raw, at, (peers_field, "ports"))
        ports_at: FieldPath = (*at, "ports")
        ports = [_port(p, (*ports_at, j)) for j, p in enumerate(items(rule.get("ports"), ports_at))]
        peers_at: FieldPath = (*at, peers_field)
        raw_peers = items(rule.get(peers_field), peers_at)
        peers = [_peer(p, (*peers_at, j), namespace) for j, p in enumerate(raw_peers)] if raw_peers else None
        out.append(Rule(peers, ports))
    return out


def _peer(value: object, parts: FieldPath, namespace: str) -> Peer:
    peer = fields(value, parts, _PEER_FIELDS)
    if not peer:
        raise fail(parts, "must specify a peer: podSelector, namespaceSelector or ipBlock")
    if "ipBlock" in peer:
        if len(peer) > 1:
            raise fail(parts, "may not specify both ipBlock and another peer")
        return _ip_block(peer["ipBlock"], (*parts, "ipBlock"))
    pods = (
        selector(peer["podSelector"], (*parts, "podSelector"))
        if "podSelector" in peer
        else _first_of(Selector())
    )
    if "namespaceSelector" in peer:
        return _first_of(PodPeer(selector(peer["namespaceSelector"], (*parts, "namespaceSelector")), pods))
    return _first_of(PodPeer(namespace_selector(namespace), pods))


def _ip_block(value: object, parts: FieldPath) -> IPBlock:
    block = fields(value, parts, _IP_BLOCK_FIELDS)
    cidr_text = required(block, "cidr", parts)
    network = cidr(cidr_text, (*parts, "cidr"))
    excepts = []
    for i, raw in enumerate(items(block.get("except"), (*parts, "except"))):
        at: FieldPath = (*parts, "except", i)
        excluded = cidr(raw, at)
        if (problem := except_problem(excluded, network)) is not None:
            raise fail(at, f"{show(raw)} {problem} cidr {show(cidr_text)}")
        excepts.append(excluded)
    return IPBlock(network, tuple(excepts))


def _port(value: object, parts: FieldPath) -> PortSpec:
    port = fields(value, parts, _PORT_FIELDS)
    protocol = string(port.get("protocol", "TCP"), (*parts, "protocol"))
    if protocol not in PROTOCOLS:
        raise fail((*parts, "protocol"), f"unsupported protocol {show(protocol)}: must be TCP, UDP or SCTP")
    end_at: FieldPath = (*parts, "endPort")
    end = integer(port["endPort"], end_at) if "endPort" in port else None
    number_or_name = whole(port.get("port"))
    if number_or_name is None:
        if end is not None:
            raise fail(end_at, "may not be specified when port is not specified")
        return PortSpec(protocol)
    port_at: FieldPath = (*parts, "port")
    if isinstance(number_or_name, str):
        check_name(number_or_name, port_at, port_name_problem(number_or_name), "port name")
        if end is not None:
            raise fail(end_at, "may not be specified when port is a name")
        return PortSpec(protocol, number_or_name)
    if not isinstance(number_or_name, int) or isinstance(number_or_name, bool):
        raise fail(port_at, f"must be a port number or name, not {type_name(number_or_name)}")
    if not 1 <= number_or_name <= 65535:
        raise fail(port_at, f"must be between 1 and 65535, inclusive, not {show(number_or_name)}")
    if end is not None:
        if end < number_or_name:
            raise fail(end_at, f"must be greater than or equal to port ({number_or_name}), not {show(end)}")
        if end > 65535:
            raise fail(end_at, f"must be between 1 and 65535, inclusive, not {show(end)}")
    return PortSpec(protocol, number_or_name, None if end == number_or_name else end)


def selector(value: object, parts: FieldPath) -> Selector:
    """A LabelSelector; absent or empty selects everything."""
    sel = fields(value, parts, _SELECTOR_FIELDS)
    match_labels = labels(sel.get("matchLabels"), (*parts, "matchLabels"))
    requirements = [Requirement(k, "In", (v,)) for k, v in match_labels.items()]
    expressions_at: FieldPath = (*parts, "matchExpressions")
    for i, raw in enumerate(items(sel.get("matchExpressions"), expressions_at)):
        requirements.append(_requirement(raw, (*expressions_at, i)))
    return _first_of(Selector(tuple(requirements)))


_Shared = TypeVar("_Shared", Selector, PodPeer)


@functools.lru_cache(maxsize=1 << 16)
def _first_of(value: _Shared) -> _Shared:
    """The first value read that equals this one. Thousands of policies repeat a few selectors
    and peers, and passes, lowering and resolving look them up in dicts again and again: equal
    objects are compared field by field, one object is found by identity."""
    return value


def _requirement(value: object, parts: FieldPath) -> Requirement:
    expr = fields(value, parts, _REQUIREMENT_FIELDS)
    key_at: FieldPath = (*parts, "key")
    key = string(required(expr, "key", parts), key_at)
    check_name(key, key_at, qualified_name_problem(key), "label key")
    op_at: FieldPath = (*parts, "operator")
    op = string(required(expr, "operator", parts), op_at)
    values_at: FieldPath = (*parts, "values")
    values = strings(expr.get("values"), values_at)
    for i, v in enumerate(values):
        check_name(v, (*values_at, i), label_value_problem(v), "label value")
    operator = _OPERATORS.get(op)
    if operator is None:
        raise fail(op_at, f"unsupported operator {show(op)}: must be In, NotIn, Exists or DoesNotExist")
    if operator in ("In", "NotIn") and not values:
        raise fail(values_at, f"must be non-empty when operator is {op}")
    if operator in ("Exists", "DoesNotExist") and values:
        raise fail(values_at, f"must be empty when operator is {op}")
    return Requirement(key, operator, tuple(values))


def _policy_for(meta: Meta) -> tuple[str, ...]:
    """The networks a MultiNetworkPolicy names, each as ``namespace/name``."""
    raw = meta.annotations.get(POLICY_FOR_ANNOTATION)
    if raw is None:
        return ()
    at: FieldPath = ("metadata", "annotations", MapKey(POLICY_FOR_ANNOTATION))
    out = []
    for entry in (e.strip() for e in raw.split(",")):
        if not entry:
            continue
        namespace, slash, name = entry.partition("/")
        if not slash:
            namespace, name = meta.namespace, entry
        if problem := network_problem(namespace, name):
            raise fail(at, f"invalid network {show(entry)}: {problem}")
        out.append(f"{namespace}/{name}")
    return tuple(out)
