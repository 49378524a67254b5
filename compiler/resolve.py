"""Set membership: which addresses (and address,port pairs) each set holds, from the inventory.

Pods are indexed by namespace and by label, so a selector costs the size of its answer,
not the size of the cluster. This is the only stage that reads pods.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Iterable
from typing import cast

import attrs

from .inventory import Inventory, Pod
from .ir import NAMESPACE_NAME_LABEL, Direction, IPBlock, Network, PodPeer, Program, Selector
from .lower import Lowered, SetSpec

Entry = tuple[str, bool]  # (rendered member, nomatch)


class PodIndex:
    """Namespaces and pods, indexed so that selectors are answered without a full scan."""

    def __init__(self, inventory: Inventory) -> None:
        self.namespaces = inventory.namespaces
        self._ns_by_name = {ns.name: ns for ns in inventory.namespaces}
        self._pods: dict[str, list[Pod]] = defaultdict(list)
        self._by_label: dict[str, dict[tuple[str, str], set[int]]] = defaultdict(lambda: defaultdict(set))
        self._by_key: dict[str, dict[str, set[int]]] = defaultdict(lambda: defaultdict(set))
        for pod in inventory.pods:
            pods = self._pods[pod.namespace]
            for key, value in pod.labels.items():
                self._by_label[pod.namespace][(key, value)].add(len(pods))
                self._by_key[pod.namespace][key].add(len(pods))
            pods.append(pod)
        self._named: dict[tuple[str, str], list[tuple[Pod, int]]] = defaultdict(list)
        for pod in inventory.pods:
            for (protocol, name), number in pod.named_ports().items():
                self._named[(protocol, name)].append((pod, number))

    def match_namespaces(self, selector: Selector) -> list[str]:
        for req in selector.requirements:  # the common "one namespace" case is a dict lookup
            if req.key == NAMESPACE_NAME_LABEL and req.op == "In":
                candidates = [self._ns_by_name[n] for n in req.values if n in self._ns_by_name]
                return [ns.name for ns in candidates if selector.matches(ns.labels)]
        return [ns.name for ns in self.namespaces if selector.matches(ns.labels)]

    def match_pods(self, namespace: str, selector: Selector) -> list[Pod]:
        pods = self._pods.get(namespace, [])
        candidates: set[int] | None = None
        for req in selector.requirements:
            if req.op == "In":
                found = set().union(*(self._by_label[namespace].get((req.key, v), set()) for v in req.values))
            elif req.op == "Exists":
                found = self._by_key[namespace].get(req.key, set())
            else:
                continue
            candidates = found if candidates is None else candidates & found
        chosen = range(len(pods)) if candidates is None else sorted(candidates)
        return [pods[i] for i in chosen if selector.matches(pods[i].labels)]

    def peer_pods(self, peer: PodPeer) -> list[Pod]:
        return [
            pod for ns in self.match_namespaces(peer.namespaces) for pod in self.match_pods(ns, peer.pods)
        ]

    def named_port(self, protocol: str, name: str) -> list[tuple[Pod, int]]:
        return self._named.get((protocol, name), [])


def _net_entries(block: IPBlock) -> list[Entry]:
    """``cidr`` plus ``except`` as nomatch entries. ipset has no /0, so a /0 becomes two /1s;
    an except that covers the whole cidr leaves the set empty."""
    if any(e.prefixlen <= block.cidr.prefixlen for e in block.excepts):
        return []

    def split(net: Network) -> Iterable[Network]:
        return net.subnets(prefixlen_diff=1) if net.prefixlen == 0 else (net,)

    entries = [(str(n), False) for n in split(block.cidr)]
    entries += [(str(n), True) for e in block.excepts for n in split(e)]
    return entries


def _ip_sort_key(entry: Entry) -> tuple[int, int, str, bool]:
    text, nomatch = entry
    address, _, rest = text.partition(",")
    net = ipaddress.ip_network(address, strict=False)
    return (int(net.network_address), net.prefixlen, rest, nomatch)


@attrs.frozen
class Resolver:
    program: Program
    index: PodIndex

    def _addresses(self, pods: Iterable[Pod], family: int) -> list[Entry]:
        return [(str(ip), False) for pod in pods for ip in pod.ips if ip.version == family]

    def _isolated(self, direction: Direction, family: int) -> list[Entry]:
        pods: dict[tuple[str, str], Pod] = {}
        targets = {p.target for p in self.program.policies if p.rules(direction) is not None}
        for target in targets:
            for pod in self.index.peer_pods(target):
                pods[(pod.namespace, pod.name)] = pod
        return self._addresses(pods.values(), family)

    def members(self, spec: SetSpec) -> list[Entry]:
        """The set's entries, sorted and unique, as ``ipset``/``nft`` spell them."""
        if spec.kind == "pods":
            assert isinstance(spec.key, tuple)
            pods = [
                pod for peer in spec.key if isinstance(peer, PodPeer) for pod in self.index.peer_pods(peer)
            ]
            entries = self._addresses(pods, spec.family)
        elif spec.kind == "net":
            assert isinstance(spec.key, IPBlock)
            entries = _net_entries(spec.key)
        elif spec.kind == "port":
            protocol, name = cast(tuple[str, str], spec.key)
            entries = [
                (f"{ip},{protocol.lower()}:{number}", False)
                for pod, number in self.index.named_port(protocol, name)
                for ip in pod.ips
                if ip.version == spec.family
            ]
        else:
            entries = self._isolated(cast(Direction, spec.key), spec.family)
        return sorted(set(entries), key=_ip_sort_key)


def resolve(program: Program, lowered: Lowered, inventory: Inventory) -> dict[str, list[Entry]]:
    """Members of every set of every family, by set name."""
    resolver = Resolver(program, PodIndex(inventory))
    out: dict[str, list[Entry]] = {}
    for fam in lowered.families:
        for spec in (*fam.sets, *fam.isolated.values()):
            out[spec.name] = resolver.members(spec)
    return out
