"""The optimised IR as ``projectcalico.org/v3`` NetworkPolicy objects with exactly its meaning.

Why these choices (the README's "Calico" section says the same for users):

- Kind: one namespaced ``NetworkPolicy`` per IR policy, in the policy's namespace. Calico then
  scopes the policy selector and every rule selector to that namespace itself, which is the
  Kubernetes meaning; nothing cluster-wide (GlobalNetworkPolicy) is needed.
- Tier ``default``, order 1000, only ``Allow`` rules: what Calico's own converter gives a Kubernetes
  NetworkPolicy. In the default tier a pod some policy selects for a direction is denied at the end
  of the tier unless a rule allowed, and a pod none selects falls through to its namespace profile
  (allow): Kubernetes isolation exactly. With Allow rules only, order changes nothing among ours;
  1000 leaves room for an administrator's own policies before and after.
- Names: ``npc-<name, as a DNS label, cut to 40>-<10 hex of sha256(kind, namespace, name)>``. No
  dot (Calico reads a dot as a tier prefix), at most 63 characters, stable across content changes
  (a Git diff shows an edit, not a delete and an add), and two sources with the same name (a
  NetworkPolicy and a MultiNetworkPolicy, say) never collide.
- One Calico rule per (peer, protocol): a rule has one protocol and one source/destination entity.
  Rules with no ports have no protocol (every protocol, as in Kubernetes). Field limits are kept by
  splitting (50 ports a rule, 1024 rules a policy, 256 notNets: then the exact remaining ranges,
  1024 characters a selector: a long ``in`` set becomes several selectors whose union it is).
"""

from __future__ import annotations

import hashlib
import ipaddress
import itertools
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ...errors import InputError
from ...frontends.positions import show
from ...ir import (
    PROTOCOLS,
    Direction,
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
)
from ...ir import namespace_selector as own_namespace
from .selectors import MAX_SELECTOR, namespace_selector, pod_selector

API_VERSION = "projectcalico.org/v3"
TIER = "default"
ORDER = 1000
MANAGED_BY = {"app.kubernetes.io/managed-by": "npc"}
SOURCE_ANNOTATION = "npc/source"
MAX_PORTS = 50
MAX_NETS = 256
MAX_RULES = 1024
_SLUG = 40

Obj = dict[str, Any]


def object_name(policy: Policy) -> str:
    identity = f"{policy.kind}\0{policy.namespace}\0{policy.name}".encode()
    digest = hashlib.sha256(identity).hexdigest()[:10]
    slug = re.sub(r"[^a-z0-9]+", "-", policy.name.lower()).strip("-")[:_SLUG].rstrip("-")
    return f"npc-{slug}-{digest}" if slug else f"npc-{digest}"


def _port_groups(ports: Sequence[PortSpec]) -> Iterator[tuple[str | None, list[int | str]]]:
    """(protocol, ports) per Calico rule: no ports at all is every protocol; a protocol with no
    port given is every port of it (and absorbs that protocol's listed ports)."""
    if not ports:
        yield None, []
        return
    for protocol in PROTOCOLS:
        specs = [p for p in ports if p.protocol == protocol]
        if not specs:
            continue
        if any(p.port is None for p in specs):
            yield protocol, []
            continue
        values: list[int | str] = [
            p.port if isinstance(p.port, str) or p.end_port in (None, p.port) else f"{p.port}:{p.end_port}"
            for p in specs
            if p.port is not None
        ]
        for start in range(0, len(values), MAX_PORTS):
            yield protocol, values[start : start + MAX_PORTS]


def _remaining(block: IPBlock, excepts: Sequence[Network]) -> list[Network]:
    """The addresses of ``block`` outside ``excepts`` (networks inside it) as the fewest disjoint
    networks, in order: the gaps between the merged holes, each summarised. Linear in the holes
    (cutting each out of every piece left was quadratic: 5,000 IPv6 holes took 10 minutes)."""
    kind = type(block.cidr.network_address)
    out: list[Network] = []
    start = int(block.cidr.network_address)
    for hole in ipaddress.collapse_addresses(excepts):  # type: ignore[type-var]
        if int(hole.network_address) > start:
            out += ipaddress.summarize_address_range(kind(start), kind(int(hole.network_address) - 1))
        start = int(hole.broadcast_address) + 1
    if start <= int(block.cidr.broadcast_address):
        out += ipaddress.summarize_address_range(kind(start), block.cidr.broadcast_address)
    return out


def _ip_entities(block: IPBlock) -> list[Obj]:
    """``nets``/``notNets`` of one ipBlock; none when its excepts leave nothing."""
    excepts = [e for e in block.excepts if e.version == block.version and e.overlaps(block.cidr)]
    if any(block.cidr.subnet_of(e) for e in excepts):  # type: ignore[arg-type]
        return []
    if len(excepts) <= MAX_NETS:
        entity: Obj = {"nets": [str(block.cidr)]}
        if excepts:
            entity["notNets"] = [str(e) for e in excepts]
        return [entity]
    nets = [str(n) for n in _remaining(block, excepts)]
    return [{"nets": nets[i : i + MAX_NETS]} for i in range(0, len(nets), MAX_NETS)]


def _entities(policy: Policy, peers: tuple[Peer, ...] | None) -> list[Obj]:
    """One EntityRule per peer (``{}``: any peer); a podSelector-only peer keeps Calico's default
    of the policy's own namespace."""
    if peers is None:
        return [{}]
    out: list[Obj] = []
    for peer in peers:
        if isinstance(peer, IPBlock):
            out.extend(_ip_entities(peer))
            continue
        assert isinstance(peer, PodPeer)
        own = peer.namespaces == own_namespace(policy.namespace)
        namespaces = [None] if own else _fitting(peer.namespaces, namespace_selector, policy)
        for pods in _fitting(peer.pods, pod_selector, policy):
            for scope in namespaces:
                entity: Obj = {"selector": pod_selector(pods)}
                if scope is not None:
                    entity["namespaceSelector"] = namespace_selector(scope)
                out.append(entity)
    return out


def _rules(policy: Policy, direction: Direction, rule: Rule) -> Iterator[Obj]:
    for entity in _entities(policy, rule.peers):
        for protocol, ports in _port_groups(rule.ports):
            out: Obj = {"action": "Allow"}
            if protocol is not None:
                out["protocol"] = protocol
            remote, local = (dict(entity), {}) if direction == "ingress" else ({}, dict(entity))
            if ports:
                local["ports"] = ports
            if remote:
                out["source" if direction == "ingress" else "destination"] = remote
            if local:
                out["destination"] = local
            yield out


def _fitting(selector: Selector, text: Callable[[Selector], str], policy: Policy) -> list[Selector]:
    """Selectors whose union is ``selector``, each within Calico's 1024 characters: the widest
    ``in`` set is halved until the parts fit. (Only the meaning of a union is kept this way, which
    is all a policy's target or a peer needs.)"""
    if len(text(selector)) <= MAX_SELECTOR:
        return [selector]
    widest = max(
        (r for r in selector.requirements if r.op == "In" and len(r.values) > 1),
        key=lambda r: len(r.values),
        default=None,
    )
    if widest is None:
        raise InputError(
            f"policy {policy.namespace}/{policy.name}: the selector {show(text(selector))} is "
            f"{len(text(selector))} characters; Calico accepts at most {MAX_SELECTOR}",
            policy.source or "<input>",
            policy=(policy.kind, policy.namespace, policy.name),
        )
    rest = [r for r in selector.requirements if r != widest]
    half = len(widest.values) // 2
    return [
        part
        for values in (widest.values[:half], widest.values[half:])
        for part in _fitting(Selector((*rest, Requirement(widest.key, "In", values))), text, policy)
    ]


def policy_objects(policy: Policy) -> list[Obj]:
    """The NetworkPolicy objects for one IR policy (more than one only past Calico's rule limit)."""
    governed: list[Direction] = [d for d in ("ingress", "egress") if policy.rules(d) is not None]
    if not governed:
        return []
    rules = {d: [r for rule in policy.rules(d) or () for r in _rules(policy, d, rule)] for d in governed}
    parts = max(1, *((len(rs) + MAX_RULES - 1) // MAX_RULES for rs in rules.values()))
    name = object_name(policy)
    out: list[Obj] = []
    for part, target in itertools.product(range(parts), _fitting(policy.pod_selector, pod_selector, policy)):
        spec: Obj = {
            "tier": TIER,
            "order": ORDER,
            "selector": pod_selector(target),
            "types": [d.capitalize() for d in governed],
        }
        for direction in governed:
            chunk = rules[direction][part * MAX_RULES : (part + 1) * MAX_RULES]
            if chunk:
                spec[direction] = chunk
        metadata: Obj = {
            "name": name,
            "namespace": policy.namespace,
            "labels": dict(MANAGED_BY),
            "annotations": {SOURCE_ANNOTATION: f"{policy.kind} {policy.namespace}/{policy.name}"},
        }
        out.append({"apiVersion": API_VERSION, "kind": "NetworkPolicy", "metadata": metadata, "spec": spec})
    return out


def calico_objects(program: Program) -> list[Obj]:
    """Every object, ordered by namespace and name (so the same policies give the same bytes).

    Objects sharing a name (the parts of one policy past the rule limit, or policies the IR
    holds twice) are numbered ``-2``, ``-3``... in program order.
    """
    groups: dict[tuple[str, str], list[Obj]] = {}
    for policy in program.policies:
        for obj in policy_objects(policy):
            groups.setdefault((policy.namespace, obj["metadata"]["name"]), []).append(obj)
    for objects in groups.values():
        for n, obj in enumerate(objects[1:], start=2):
            obj["metadata"]["name"] += f"-{n}"
    return sorted(
        (obj for objects in groups.values() for obj in objects),
        key=lambda o: (o["metadata"]["namespace"], o["metadata"]["name"]),
    )
