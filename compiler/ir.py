"""The typed intermediate representation: the whole meaning of a network policy, once.

Every frontend (Kubernetes YAML/JSON, the 1.6 namespace annotation, the DSL) produces these
classes and nothing else; passes rewrite them; ``lower`` turns them into sets and chains.
They are frozen and normalised on construction (sorted, de-duplicated), so two spellings of the
same policy compare equal and hash alike - which is what set folding and rule merging rely on.
Hashes are cached: passes, lowering and set resolution key dictionaries by these values
hundreds of thousands of times at cluster scale.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Mapping
from typing import Literal

import attrs

Operator = Literal["In", "NotIn", "Exists", "DoesNotExist"]
Protocol = Literal["TCP", "UDP", "SCTP"]
Direction = Literal["ingress", "egress"]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
PROTOCOLS: tuple[Protocol, ...] = ("TCP", "UDP", "SCTP")
DIRECTIONS: tuple[Direction, ...] = ("egress", "ingress")
IP_FAMILIES = (4, 6)  # by IP version: what a network carries unless it says otherwise
DEFAULT_NETWORK = "default"  # the pod's primary network (status.podIPs)
# Policy kinds (``Policy.kind``): where a policy came from, which decides the networks it governs.
NETWORK_POLICY = "NetworkPolicy"
MULTI_NETWORK_POLICY = "MultiNetworkPolicy"


def subnet_of(small: Network, big: Network) -> bool:
    """``small`` lies inside ``big`` (False across address families, where ipaddress raises)."""
    return small.version == big.version and small.subnet_of(big)  # type: ignore[arg-type]


def merge_intervals(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Inclusive integer intervals, overlapping and adjacent ones joined, in order."""
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(spans):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(hi, out[-1][1]))
        else:
            out.append((lo, hi))
    return out


def _sorted_unique(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(values)))


@attrs.frozen(order=True, cache_hash=True)
class Requirement:
    """One label requirement; ``NotIn`` and ``DoesNotExist`` match objects lacking the key."""

    key: str
    op: Operator
    values: tuple[str, ...] = attrs.field(default=(), converter=_sorted_unique)

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.op == "In":
            return labels.get(self.key) in self.values
        if self.op == "NotIn":
            return labels.get(self.key) not in self.values
        if self.op == "Exists":
            return self.key in labels
        return self.key not in labels


SelectorKey = tuple[tuple[str, str, tuple[str, ...]], ...]


def _requirements(reqs: Iterable[Requirement]) -> tuple[Requirement, ...]:
    return tuple(sorted(set(reqs)))


@attrs.frozen(order=True, cache_hash=True)
class Selector:
    """A label selector: the AND of its requirements; no requirement matches everything."""

    requirements: tuple[Requirement, ...] = attrs.field(default=(), converter=_requirements)

    @classmethod
    def from_labels(cls, labels: Mapping[str, str]) -> Selector:
        return cls(tuple(Requirement(k, "In", (v,)) for k, v in labels.items()))

    @property
    def is_all(self) -> bool:
        return not self.requirements

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    @functools.cached_property
    def order_key(self) -> SelectorKey:
        """attrs' ordering as plain tuples, which compare in C: attrs' ``__lt__`` builds a tuple
        per object per comparison, and sorting rules' peers was a tenth of a compile."""
        return tuple((r.key, r.op, r.values) for r in self.requirements)


EVERYWHERE = Selector()  # matches every object: a peer's side that selects all


@functools.lru_cache(maxsize=4096)
def namespace_selector(namespace: str) -> Selector:
    """The selector that means exactly one namespace (the API server guarantees the label)."""
    return Selector((Requirement(NAMESPACE_NAME_LABEL, "In", (namespace,)),))


@functools.lru_cache(maxsize=1 << 16)
def _target(namespace: str, pods: Selector) -> PodPeer:
    """A policy's target, one object per value: passes and lowering key dicts by targets."""
    return PodPeer(namespace_selector(namespace), pods)


@attrs.frozen(order=True, cache_hash=True)
class PodPeer:
    """Pods matching ``pods`` inside namespaces matching ``namespaces``.

    A peer with only a podSelector is normalised to its policy's own namespace, so
    "role=frontend in default" is one value however it was written.
    """

    namespaces: Selector
    pods: Selector

    def matches(self, namespace_labels: Mapping[str, str], pod_labels: Mapping[str, str]) -> bool:
        return self.namespaces.matches(namespace_labels) and self.pods.matches(pod_labels)

    @functools.cached_property
    def order_key(self) -> tuple[SelectorKey, SelectorKey]:
        return (self.namespaces.order_key, self.pods.order_key)


def _network(value: str | Network) -> Network:
    return ipaddress.ip_network(value, strict=False) if isinstance(value, str) else value


def _networks(values: Iterable[str | Network]) -> tuple[Network, ...]:
    nets = {_network(v) for v in values}
    return tuple(sorted(nets, key=lambda n: (n.version, n.network_address, n.prefixlen)))


@attrs.frozen(cache_hash=True)
class IPBlock:
    """Addresses in ``cidr`` but in none of ``excepts``; ``except`` narrows this peer only."""

    cidr: Network = attrs.field(converter=_network)
    excepts: tuple[Network, ...] = attrs.field(default=(), converter=_networks)

    @property
    def version(self) -> int:
        return self.cidr.version

    def contains(self, address: Address) -> bool:
        if address.version != self.cidr.version or address not in self.cidr:
            return False
        return not any(address in e for e in self.excepts)

    def _key(self) -> tuple[int, int, int, tuple[tuple[int, int], ...]]:
        return (
            self.cidr.version,
            int(self.cidr.network_address),
            self.cidr.prefixlen,
            tuple((int(e.network_address), e.prefixlen) for e in self.excepts),
        )

    def __lt__(self, other: IPBlock) -> bool:
        return self._key() < other._key()


Peer = PodPeer | IPBlock


def peer_sort_key(peer: Peer) -> tuple[int, object]:
    return (0, peer.order_key) if isinstance(peer, PodPeer) else (1, peer._key())


@attrs.frozen(order=True, cache_hash=True)
class PortSpec:
    """A protocol plus a port: a number, a range (``end_port``), a name, or all ports (None)."""

    protocol: Protocol = "TCP"
    port: int | str | None = None
    end_port: int | None = None

    def sort_key(self) -> tuple[str, int, int | str, int]:
        if isinstance(self.port, str):
            return (self.protocol, 2, self.port, 0)
        if self.port is None:
            return (self.protocol, 0, 0, 0)
        return (self.protocol, 1, self.port, self.end_port or self.port)

    def matches(self, protocol: str, port: int, named: Mapping[tuple[str, str], int]) -> bool:
        """``named`` maps (protocol, port name) to the destination pod's number for it."""
        if protocol != self.protocol:
            return False
        if self.port is None:
            return True
        if isinstance(self.port, str):
            return named.get((protocol, self.port)) == port
        return self.port <= port <= (self.end_port or self.port)


def port_spans(specs: Iterable[PortSpec]) -> list[tuple[int, int]]:
    """The numeric ports and ranges of ``specs`` as merged inclusive spans (names and "all" left out)."""
    return merge_intervals((s.port, s.end_port or s.port) for s in specs if isinstance(s.port, int))


def _peers(values: Iterable[Peer] | None) -> tuple[Peer, ...] | None:
    if values is None:
        return None
    return tuple(sorted(set(values), key=peer_sort_key))


def _ports(values: Iterable[PortSpec]) -> tuple[PortSpec, ...]:
    return tuple(sorted(set(values), key=PortSpec.sort_key))


@attrs.frozen(cache_hash=True)
class Rule:
    """One ingress/egress rule: any listed peer (None: every peer) on any listed port (): all)."""

    peers: tuple[Peer, ...] | None = attrs.field(default=None, converter=_peers)
    ports: tuple[PortSpec, ...] = attrs.field(default=(), converter=_ports)


def _rules(values: Iterable[Rule] | None) -> tuple[Rule, ...] | None:
    return None if values is None else tuple(values)


# the most (peer, port) pairs one policy's rules may list: lowering makes a match of each pair
# (2,000 peers and 200 named ports each way took 1.4 GiB and 14 s), and one object must not
# take a node's memory
MAX_PAIRS = 100_000


def _pair_factors(rule: Rule) -> tuple[int, int]:
    """A rule's peers (every peer: one) and port forms: a protocol's numbers count once, each
    named port once (every port: one)."""
    forms = {(p.protocol, p.port if isinstance(p.port, str) else None) for p in rule.ports}
    return len(rule.peers) if rule.peers else 1, len(forms) or 1


def too_many_pairs(rules: Iterable[Rule]) -> tuple[int, str] | None:
    """Where a policy's rules, in order, pass ``MAX_PAIRS``: the rule's index and what to say."""
    total = 0
    for at, rule in enumerate(rules):
        peers, forms = _pair_factors(rule)
        total += peers * forms
        if total > MAX_PAIRS:
            said = f"{peers:,} peers x {forms:,} ports (a protocol's numbers count once, a named port once)"
            whole = (
                f": {total:,} pairs" if total == peers * forms else f", {total:,} pairs with the rules before"
            )
            return at, (
                f"this rule lists {said}{whole}; npc compiles at most {MAX_PAIRS:,} (peer, port) "
                "pairs per policy, each a match of its own: list fewer peers or named ports, or "
                "select the peers by a label they share"
            )
    return None


@attrs.frozen(cache_hash=True)
class Policy:
    """A policy isolating the pods ``pod_selector`` picks in ``namespace``.

    ``ingress is None`` means the policy does not govern ingress (Ingress not in policyTypes);
    ``ingress == ()`` means it isolates ingress and allows nothing. Same for egress.
    ``kind`` is where it came from (NetworkPolicy, the 1.6 namespace annotation, the DSL); the
    identity used for duplicates is (kind family, namespace, name). ``policy_for`` lists the
    networks (``namespace/name``) a MultiNetworkPolicy or DSL policy names; empty: the default.
    """

    namespace: str
    name: str
    pod_selector: Selector = attrs.field(factory=Selector)
    ingress: tuple[Rule, ...] | None = attrs.field(default=None, converter=_rules)
    egress: tuple[Rule, ...] | None = attrs.field(default=None, converter=_rules)
    kind: str = NETWORK_POLICY
    policy_for: tuple[str, ...] = attrs.field(default=(), converter=_sorted_unique)
    source: str = attrs.field(default="", eq=False, order=False)

    @property
    def target(self) -> PodPeer:
        return _target(self.namespace, self.pod_selector)

    def rules(self, direction: Direction) -> tuple[Rule, ...] | None:
        return self.ingress if direction == "ingress" else self.egress

    @property
    def sort_key(self) -> tuple[str, str, str]:
        return (self.namespace, self.name, self.kind)


@attrs.frozen
class Program:
    """Everything a compilation is about: the policies, in a canonical order."""

    policies: tuple[Policy, ...] = attrs.field(
        default=(), converter=lambda ps: tuple(sorted(ps, key=lambda p: p.sort_key))
    )
