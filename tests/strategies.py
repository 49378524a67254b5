"""Hypothesis strategies for valid policies: IR values and Kubernetes NetworkPolicy objects.

Everything drawn here is something the Kubernetes API server accepts (or the IR of such a
thing), so every frontend and writer must handle it. The public API is small:

- ``Vocabulary``: where names come from. ``WIDE`` (the default) draws any valid spelling,
  including label keys that look like npc keywords (``all``, ``in``, ``has``, ``80``), for
  syntax round trips; ``SMALL`` draws from a handful of names so that random selectors hit
  the pods of small random inventories.
- ``selectors(vocab)`` -> ``ir.Selector``
- ``policies(vocab, namespace=None)`` -> ``ir.Policy`` (kind NetworkPolicy; governs at least one
  direction; never an empty peer list: exactly the IR values a NetworkPolicy can mean)
- ``programs(vocab, max_size=4)`` -> ``ir.Program`` (unique namespace/name)
- ``network_policies(vocab)`` -> ``dict``: a NetworkPolicy object in any spelling Kubernetes
  accepts (matchLabels or matchExpressions, absent/null/empty selectors and lists, implicit,
  explicit or empty policyTypes, implicit or explicit protocol, host bits in CIDRs and excepts,
  endPort equal to port, both apiVersions).
- ``paths(value)`` -> every path into a JSON-like value (``()`` first), to pick a place in one.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

import attrs
from hypothesis import assume
from hypothesis import strategies as st
from npc.frontends.validate import (
    dns_label_problem,
    dns_subdomain_problem,
    label_value_problem,
    mapped_problem,
    port_name_problem,
    qualified_name_problem,
)
from npc.ir import (
    PROTOCOLS,
    IPBlock,
    Network,
    Peer,
    PodPeer,
    Policy,
    PortSpec,
    Program,
    Requirement,
    Rule,
    Selector,
    namespace_selector,
)

Obj = dict[str, Any]

__all__ = [
    "SMALL",
    "WIDE",
    "Obj",
    "Vocabulary",
    "network_policies",
    "paths",
    "policies",
    "programs",
    "selectors",
]


_LOWER = "abcdefghijklmnopqrstuvwxyz0123456789"
_ALNUM = _LOWER + "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _word(ends: str, middle: str, max_middle: int) -> st.SearchStrategy[str]:
    """``ends`` characters at both ends (or one alone), ``middle`` characters in between."""
    end = st.sampled_from(ends)
    longer = st.tuples(end, st.text(middle, max_size=max_middle), end).map("".join)
    return st.one_of(end, longer)


def _checked(
    strategy: st.SearchStrategy[str], problem: Callable[[str], str | None]
) -> st.SearchStrategy[str]:
    """Built valid by construction; the project's own check is the guard against a slip here."""
    return strategy.filter(lambda s: problem(s) is None)


_DNS_LABEL = _word(_LOWER, _LOWER + "-", 10)
_SUBDOMAIN = st.lists(_DNS_LABEL, min_size=1, max_size=3).map(".".join)
_NAME_PART = _word(_ALNUM, _ALNUM + "-_.", 8)
_KEYWORD_LIKE = (
    "all",
    "has",
    "in",
    "not",
    "or",
    "pods",
    "namespaces",
    "select",
    "policy",
    "tcp",
    "80",
    "1.2",
)


@attrs.frozen
class Vocabulary:
    """The names strategies draw; each field is a strategy of valid values."""

    namespaces: st.SearchStrategy[str]
    policy_names: st.SearchStrategy[str]
    label_keys: st.SearchStrategy[str]
    label_values: st.SearchStrategy[str]
    port_names: st.SearchStrategy[str]


WIDE = Vocabulary(
    namespaces=_checked(_DNS_LABEL, dns_label_problem),
    policy_names=_checked(_SUBDOMAIN, dns_subdomain_problem),
    label_keys=_checked(
        st.one_of(
            st.sampled_from(_KEYWORD_LIKE),
            _NAME_PART,
            st.tuples(_SUBDOMAIN, _NAME_PART).map("/".join),
        ),
        qualified_name_problem,
    ),
    label_values=_checked(
        st.one_of(st.sampled_from(("", "all", "true", "80")), _NAME_PART), label_value_problem
    ),
    port_names=_checked(
        st.lists(st.text(_LOWER, min_size=1, max_size=4), min_size=1, max_size=3).map("-".join),
        port_name_problem,
    ),
)

SMALL = Vocabulary(
    namespaces=st.sampled_from(("default", "prod", "dev")),
    policy_names=st.sampled_from(("web", "db", "deny", "allow")),
    label_keys=st.sampled_from(("app", "role", "tier")),
    label_values=st.sampled_from(("web", "db", "api")),
    port_names=st.sampled_from(("http", "dns", "metrics")),
)


# --- IR ---------------------------------------------------------------------------------------


@st.composite
def _requirements(draw: st.DrawFn, vocab: Vocabulary) -> Requirement:
    op = draw(st.sampled_from(("In", "NotIn", "Exists", "DoesNotExist")))
    values = draw(st.lists(vocab.label_values, min_size=1, max_size=3)) if op in ("In", "NotIn") else []
    return Requirement(draw(vocab.label_keys), op, tuple(values))


def selectors(vocab: Vocabulary = WIDE) -> st.SearchStrategy[Selector]:
    return st.lists(_requirements(vocab), max_size=3).map(lambda rs: Selector(tuple(rs)))


@st.composite
def _networks(draw: st.DrawFn) -> tuple[Network, int]:
    """A network and how many bits wide its family is."""
    v6 = draw(st.booleans())
    bits = 128 if v6 else 32
    prefix = draw(st.integers(8 if v6 else 0, bits - 1))
    address = draw(st.integers(0, 2**bits - 1))
    network = ipaddress.ip_network(
        (address if not v6 else ipaddress.IPv6Address(address), prefix), strict=False
    )
    assume(mapped_problem(network) is None)  # IPv4-mapped blocks are refused
    return network, bits


@st.composite
def _ip_blocks(draw: st.DrawFn) -> IPBlock:
    network, bits = draw(_networks())
    excepts = []
    for _ in range(draw(st.integers(0, 3))):
        prefix = draw(st.integers(network.prefixlen + 1, bits))
        offset = draw(st.integers(0, network.num_addresses - 1))
        address = network.network_address + offset
        excepts.append(ipaddress.ip_network((address, prefix), strict=False))
        assume(mapped_problem(excepts[-1]) is None)
    return IPBlock(network, tuple(excepts))


@st.composite
def _port_specs(draw: st.DrawFn, vocab: Vocabulary) -> PortSpec:
    protocol = draw(st.sampled_from(PROTOCOLS))
    shape = draw(st.sampled_from(("all", "number", "range", "name")))
    if shape == "all":
        return PortSpec(protocol)
    if shape == "name":
        return PortSpec(protocol, draw(vocab.port_names))
    port = draw(st.integers(1, 65534 if shape == "range" else 65535))
    return PortSpec(protocol, port, draw(st.integers(port + 1, 65535)) if shape == "range" else None)


@st.composite
def _peers(draw: st.DrawFn, vocab: Vocabulary, namespace: str) -> Peer:
    shape = draw(st.sampled_from(("pods", "namespaces", "both", "ip")))
    if shape == "ip":
        return draw(_ip_blocks())
    if shape == "pods":
        return PodPeer(namespace_selector(namespace), draw(selectors(vocab)))
    pods = draw(selectors(vocab)) if shape == "both" else Selector()
    return PodPeer(draw(selectors(vocab)), pods)


@st.composite
def _rules(draw: st.DrawFn, vocab: Vocabulary, namespace: str) -> Rule:
    peers = draw(st.none() | st.lists(_peers(vocab, namespace), min_size=1, max_size=3))
    return Rule(peers, draw(st.lists(_port_specs(vocab), max_size=3)))


@st.composite
def policies(draw: st.DrawFn, vocab: Vocabulary = WIDE, namespace: str | None = None) -> Policy:
    ns = namespace if namespace is not None else draw(vocab.namespaces)
    governed = draw(st.sampled_from((("ingress",), ("egress",), ("ingress", "egress"))))
    rules = {d: tuple(draw(st.lists(_rules(vocab, ns), max_size=3))) for d in governed}
    return Policy(
        namespace=ns,
        name=draw(vocab.policy_names),
        pod_selector=draw(selectors(vocab)),
        ingress=rules.get("ingress"),
        egress=rules.get("egress"),
    )


def programs(vocab: Vocabulary = WIDE, max_size: int = 4) -> st.SearchStrategy[Program]:
    return st.lists(policies(vocab), max_size=max_size, unique_by=lambda p: (p.namespace, p.name)).map(
        lambda ps: Program(tuple(ps))
    )


# --- Kubernetes objects -----------------------------------------------------------------------


@st.composite
def _selector_objects(draw: st.DrawFn, vocab: Vocabulary) -> Obj | None:
    """A LabelSelector in some spelling; None stands for null."""
    if draw(st.integers(0, 5)) == 0:
        return None
    out: Obj = {}
    if draw(st.booleans()):
        out["matchLabels"] = draw(st.dictionaries(vocab.label_keys, vocab.label_values, max_size=3))
    if draw(st.booleans()):
        expressions = []
        for requirement in draw(st.lists(_requirements(vocab), max_size=3)):
            expression: Obj = {"key": requirement.key, "operator": requirement.op}
            if requirement.values:
                expression["values"] = list(requirement.values)
            elif draw(st.booleans()):
                expression["values"] = []
            expressions.append(expression)
        out["matchExpressions"] = expressions
    return out


@st.composite
def _cidr_texts(draw: st.DrawFn, network: Network) -> str:
    """``network`` spelt plainly or with host bits, which the API server takes and masks."""
    if not draw(st.booleans()):
        return str(network)
    host = network.network_address + draw(st.integers(0, network.num_addresses - 1))
    return f"{host}/{network.prefixlen}"


@st.composite
def _ip_block_objects(draw: st.DrawFn) -> Obj:
    block = draw(_ip_blocks())
    out: Obj = {"cidr": draw(_cidr_texts(block.cidr))}
    if block.excepts or draw(st.booleans()):
        out["except"] = [draw(_cidr_texts(e)) for e in block.excepts]
    return out


@st.composite
def _peer_objects(draw: st.DrawFn, vocab: Vocabulary) -> Obj:
    shape = draw(st.sampled_from(("pods", "namespaces", "both", "ip")))
    if shape == "ip":
        return {"ipBlock": draw(_ip_block_objects())}
    out: Obj = {}
    if shape in ("pods", "both"):
        out["podSelector"] = draw(_selector_objects(vocab)) or {}
    if shape in ("namespaces", "both"):
        out["namespaceSelector"] = draw(_selector_objects(vocab)) or {}
    return out


@st.composite
def _port_objects(draw: st.DrawFn, vocab: Vocabulary) -> Obj:
    out: Obj = {}
    if draw(st.booleans()):
        out["protocol"] = draw(st.sampled_from(PROTOCOLS))
    shape = draw(st.sampled_from(("all", "number", "range", "name")))
    if shape == "name":
        out["port"] = draw(vocab.port_names)
    elif shape != "all":
        out["port"] = draw(st.integers(1, 65535))
        if shape == "range":
            out["endPort"] = draw(st.integers(out["port"], 65535))
    return out


@st.composite
def _rule_objects(draw: st.DrawFn, vocab: Vocabulary, field: str) -> Obj:
    out: Obj = {}
    if draw(st.booleans()):
        out[field] = draw(st.lists(_peer_objects(vocab), max_size=3))
    if draw(st.booleans()):
        out["ports"] = draw(st.lists(_port_objects(vocab), max_size=3))
    return out


@st.composite
def network_policies(draw: st.DrawFn, vocab: Vocabulary = WIDE) -> Obj:
    spec: Obj = {}
    pod_selector = draw(_selector_objects(vocab))
    if pod_selector is not None or draw(st.booleans()):
        spec["podSelector"] = pod_selector
    for direction, field in (("ingress", "from"), ("egress", "to")):
        if draw(st.booleans()):
            spec[direction] = draw(st.lists(_rule_objects(vocab, field), max_size=3))
    if draw(st.booleans()):
        spec["policyTypes"] = draw(
            st.sampled_from([["Ingress"], ["Egress"], ["Ingress", "Egress"], ["Egress", "Ingress"], []])
        )
    metadata: Obj = {"name": draw(vocab.policy_names)}
    if draw(st.integers(0, 3)):  # absent means default
        metadata["namespace"] = draw(vocab.namespaces)
    return {
        "apiVersion": draw(st.sampled_from(["networking.k8s.io/v1", "extensions/v1beta1"])),
        "kind": "NetworkPolicy",
        "metadata": metadata,
        "spec": spec,
    }


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """``prefix`` and the path (keys and list indexes) of everything inside ``value``, depth first."""
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += paths(v, (*prefix, i))
    return out
