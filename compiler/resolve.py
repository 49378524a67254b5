"""Set membership: which addresses (and address,port pairs) each set holds, from the inventory.

Pods are indexed by namespace and by label, so a selector costs the size of its answer,
not the size of the cluster; every selector, peer and pod's rendered addresses are worked out
once and reused, because the same peers recur across thousands of sets (a union target set
repeats every namespace's own). This is the only stage that reads pods.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import chain, repeat

import attrs

from .inventory import Inventory
from .ir import IPBlock, Network, PodPeer, Program, Selector, subnet_of
from .lower import Lowered, SetSpec, port_scopes

Entry = tuple[str, bool]  # (rendered member, nomatch)
# pod numbers, and their numbers by (label key, value) and by label key
_Index = tuple[list[int], dict[tuple[str, str], set[int]], dict[str, set[int]]]
_Keyed = tuple[int, str, str]  # (address as int, rest, member): sorts like the kernel lists


@attrs.frozen
class Rules:
    """What depends on the policies only: the optimised program and its sets and chains."""

    program: Program
    lowered: Lowered


@attrs.frozen
class Compiled:
    """Rules plus the members of their sets for one inventory: what a backend renders."""

    program: Program
    lowered: Lowered
    members: Mapping[str, list[Entry]]

    @property
    def rules(self) -> Rules:
        return Rules(self.program, self.lowered)


class PodIndex:
    """Namespaces and pods, indexed so that selectors are answered without a full scan."""

    def __init__(self, inventory: Inventory) -> None:
        self.namespaces = inventory.namespaces
        self.pods = inventory.pods
        self._ns_by_name = {ns.name: ns for ns in inventory.namespaces}
        self._ns_index: _Index = _indexed(ns.labels for ns in inventory.namespaces)
        self._pods: dict[str, list[int]] = defaultdict(list)  # namespace -> pod numbers
        self._by_label: dict[str, dict[tuple[str, str], set[int]]] = defaultdict(lambda: defaultdict(set))
        self._by_key: dict[str, dict[str, set[int]]] = defaultdict(lambda: defaultdict(set))
        self._named: dict[tuple[str, str], list[tuple[int, int]]] = defaultdict(list)
        # per family: each pod's addresses as integers, and each address's text, rendered once;
        # a set's members are its pods' integers, deduplicated and sorted as integers
        self._values: dict[int, list[list[int]]] = {4: [], 6: []}
        self._texts: dict[int, dict[int, str]] = {4: {}, 6: {}}
        (v4, t4), (v6, t6) = ((self._values[f], self._texts[f]) for f in (4, 6))
        for number, pod in enumerate(inventory.pods):
            self._pods[pod.namespace].append(number)
            by_label, by_key = self._by_label[pod.namespace], self._by_key[pod.namespace]
            for key, value in pod.labels.items():
                by_label[(key, value)].add(number)
                by_key[key].add(number)
            for (protocol, name), port in pod.named_ports().items():
                self._named[(protocol, name)].append((number, port))
            mine4: list[int] = []
            mine6: list[int] = []
            for ip in pod.ips:
                address = int(ip)
                if ip.version == 4:
                    t4[address] = str(ip)
                    mine4.append(address)
                else:
                    t6[address] = str(ip)
                    mine6.append(address)
            v4.append(mine4)
            v6.append(mine6)
        self._counts = {f: [len(v) for v in values] for f, values in self._values.items()}
        # a pod has one address per family (``podIPs``), so usually a flat list answers: -1, none
        self._single: dict[int, list[int] | None] = {
            f: None if any(len(v) > 1 for v in values) else [v[0] if v else -1 for v in values]
            for f, values in self._values.items()
        }
        self._all: _Index | None = None
        self._namespace_memo: dict[Selector, list[str]] = {}
        self._peer_memo: dict[PodPeer, list[int]] = {}
        self._port_memo: dict[tuple[str, str, tuple[PodPeer, ...] | None], list[tuple[int, int]]] = {}

    def _everywhere(self) -> _Index:
        """The pods of every namespace the inventory has, with their label indexes, made once."""
        if self._all is None:
            by_label: dict[tuple[str, str], set[int]] = defaultdict(set)
            by_key: dict[str, set[int]] = defaultdict(set)
            for ns in self._ns_by_name:
                for label, numbers in self._by_label.get(ns, {}).items():
                    by_label[label] |= numbers
                for key, numbers in self._by_key.get(ns, {}).items():
                    by_key[key] |= numbers
            pods = sorted(i for ns in self._ns_by_name for i in self._pods.get(ns, ()))
            self._all = (pods, by_label, by_key)
        return self._all

    def match_namespaces(self, selector: Selector) -> list[str]:
        found = self._namespace_memo.get(selector)
        if found is None:
            namespaces = self.namespaces
            chosen = _select(self._ns_index, selector, lambda i: namespaces[i].labels)
            found = self._namespace_memo[selector] = [namespaces[i].name for i in chosen]
        return found

    def match_pods(self, namespace: str | None, selector: Selector) -> list[int]:
        """Numbers (positions in the inventory) of the pods of ``namespace`` (None: of every
        namespace the inventory has) that ``selector`` picks."""
        if namespace is None:
            index = self._everywhere()
        else:
            index = (self._pods.get(namespace, []), self._by_label[namespace], self._by_key[namespace])
        pods = self.pods
        return _select(index, selector, lambda i: pods[i].labels)

    def peer_pods(self, peer: PodPeer) -> list[int]:
        found = self._peer_memo.get(peer)
        if found is None:
            if peer.namespaces.is_all:  # a selector's pods in every namespace (``lower.part_keys``)
                found = self.match_pods(None, peer.pods)
            else:
                found = [
                    i for ns in self.match_namespaces(peer.namespaces) for i in self.match_pods(ns, peer.pods)
                ]
            self._peer_memo[peer] = found
        return found

    def addresses(self, numbers: Iterable[int], family: int) -> list[Entry]:
        """The pods' addresses in ``family``, sorted by value, each once."""
        single, texts = self._single[family], self._texts[family]
        if single is None:
            found = set(chain.from_iterable(map(self._values[family].__getitem__, numbers)))
        else:  # C loops, not a comprehension: a million entries at L
            found = set(map(single.__getitem__, numbers))
            found.discard(-1)
        return list(zip(map(texts.__getitem__, sorted(found)), repeat(False)))

    def room(self, numbers: Iterable[int], family: int) -> int:
        """How many addresses in ``family`` the pods ``numbers`` have, without spelling them: at
        least as many as ``addresses`` finds (a pod given twice counts twice), at most every
        address of the family."""
        return min(sum(map(self._counts[family].__getitem__, numbers)), len(self._texts[family]))

    def port_room(
        self, protocol: str, name: str, family: int, scope: tuple[PodPeer, ...] | None = None
    ) -> int:
        """At least as many as ``named_port`` finds."""
        return self.room((i for i, _ in self._naming(protocol, name, scope)), family)

    def _naming(self, protocol: str, name: str, scope: tuple[PodPeer, ...] | None) -> list[tuple[int, int]]:
        """(pod, number) of each pod naming the port; of the pods of ``scope`` only when given."""
        key = (protocol, name, scope)
        named = self._port_memo.get(key)
        if named is None:  # the same for both families' sets of the port
            named = self._named.get((protocol, name), [])
            if scope is not None:
                within = set().union(*map(self.peer_pods, scope))
                named = [(i, port) for i, port in named if i in within]
            self._port_memo[key] = named
        return named

    def named_port(
        self, protocol: str, name: str, family: int, scope: tuple[PodPeer, ...] | None = None
    ) -> list[_Keyed]:
        """The port's (address, number) for each pod naming it; of the pods of ``scope`` only
        (``lower.port_scopes``) when given."""
        values, texts, rest = self._values[family], self._texts[family], protocol.lower()
        named = self._naming(protocol, name, scope)
        spelled = {port: f"{rest}:{port}" for _, port in named}
        return [
            (address, spelled[port], f"{texts[address]},{spelled[port]}")
            for i, port in named
            for address in values[i]
        ]


def _indexed(labelled: Iterable[Mapping[str, str]]) -> _Index:
    """Objects' numbers (positions), and their numbers by (label key, value) and by key."""
    numbers: list[int] = []
    by_label: dict[tuple[str, str], set[int]] = defaultdict(set)
    by_key: dict[str, set[int]] = defaultdict(set)
    for number, labels in enumerate(labelled):
        numbers.append(number)
        for key, value in labels.items():
            by_label[(key, value)].add(number)
            by_key[key].add(number)
    return numbers, by_label, by_key


def _select(index: _Index, selector: Selector, labels: Callable[[int], Mapping[str, str]]) -> list[int]:
    """The numbers of ``index`` that ``selector`` picks, in order: the index answers ``In`` and
    ``Exists`` exactly; only the negative requirements need a look at ``labels``."""
    numbers, by_label, by_key = index
    candidates: set[int] | None = None
    for req in selector.requirements:
        if req.op == "In":
            found = set().union(*(by_label.get((req.key, v), set()) for v in req.values))
        elif req.op == "Exists":
            found = by_key.get(req.key, set())
        else:
            continue
        candidates = found if candidates is None else candidates & found
    chosen = numbers if candidates is None else sorted(candidates)
    rest = [r for r in selector.requirements if r.op in ("NotIn", "DoesNotExist")]
    if not rest:
        return chosen
    return [i for i in chosen if all(r.matches(labels(i)) for r in rest)]


def _net_entries(block: IPBlock) -> list[Entry]:
    """``cidr`` plus ``except`` as nomatch entries. ipset has no /0, so a /0 becomes two /1s;
    an except that covers the whole cidr leaves the set empty."""
    if any(subnet_of(block.cidr, e) for e in block.excepts):
        return []

    def split(net: Network) -> Iterable[Network]:
        return net.subnets(prefixlen_diff=1) if net.prefixlen == 0 else (net,)

    entries = [(str(n), False) for n in split(block.cidr)]
    entries += [(str(n), True) for e in block.excepts for n in split(e)]
    return entries


def _net_sort_key(entry: Entry) -> tuple[int, int, bool]:
    net = ipaddress.ip_network(entry[0], strict=False)
    return (int(net.network_address), net.prefixlen, entry[1])


def _sorted_unique(keyed: list[_Keyed]) -> list[Entry]:
    """By address, then the rest (``tcp:80``); each member once."""
    out: list[Entry] = []
    last = None
    for _, _, text in sorted(keyed):
        if text != last:
            out.append((text, False))
            last = text
    return out


class Resolver:
    def __init__(self, index: PodIndex) -> None:
        self.index = index

    def members(self, spec: SetSpec, scope: tuple[PodPeer, ...] | None = None) -> list[Entry]:
        """The set's entries, sorted and unique, as ``ipset``/``nft`` spell them; a named port's
        of ``scope``'s pods only, when given (``lower.port_scopes``)."""
        if spec.kind == "pods":
            peers = _peers(spec)
            numbers: Iterable[int] = (
                self.index.peer_pods(peers[0])
                if len(peers) == 1
                else {i for peer in peers for i in self.index.peer_pods(peer)}
            )
            return self.index.addresses(numbers, spec.family)
        if spec.kind == "net":
            assert isinstance(spec.key, IPBlock)
            return sorted(set(_net_entries(spec.key)), key=_net_sort_key)
        return _sorted_unique(self.index.named_port(*_port(spec), spec.family, scope))

    def room(
        self,
        specs: Sequence[SetSpec],
        scope: tuple[PodPeer, ...] | None = None,
        without: Sequence[SetSpec] = (),
    ) -> int:
        """At least as many as ``specs`` (one family's) hold together, less what ``without``
        (pod sets) holds, from counts of pods (``Resolved.room``)."""
        if all(spec.kind == "pods" for spec in specs):
            numbers = self._pods(specs)
            return self.index.room(
                numbers.difference(self._pods(without)) if without else numbers, specs[0].family
            )
        if len(specs) > 1:
            return sum(self.room([spec], scope) for spec in specs)
        if specs[0].kind == "net":
            return len(self.members(specs[0]))
        return self.index.port_room(*_port(specs[0]), specs[0].family, scope)

    def _pods(self, specs: Iterable[SetSpec]) -> set[int]:
        return set().union(*map(self.index.peer_pods, (peer for spec in specs for peer in _peers(spec))))


def _peers(spec: SetSpec) -> list[PodPeer]:
    assert isinstance(spec.key, tuple)
    return [peer for peer in spec.key if isinstance(peer, PodPeer)]


def _port(spec: SetSpec) -> tuple[str, str]:
    """A named port's (protocol, name)."""
    assert spec.kind == "port" and isinstance(spec.key, tuple)
    protocol, name = (str(part) for part in spec.key)
    return protocol, name


class Resolved(Mapping[str, list[Entry]]):
    """Members of every set of every family, by set name, each worked out when first asked for.

    A program holds more sets than any backend loads: a split set is tested by its parts, a
    dispatch target by its namespaces' tests, an exclusion by what it keeps. At the mixed L the
    iptables backend loads 7,062 of its 22,363 sets, nftables fewer; resolving all of them took
    about 1 s more of a compile's CPU, for entries nothing read."""

    def __init__(self, lowered: Lowered, inventory: Inventory) -> None:
        self._specs: dict[str, SetSpec] = {}
        self._scopes: dict[str, tuple[PodPeer, ...] | None] = {}
        for fam in lowered.families:
            for spec in fam.sets:
                self._specs.setdefault(spec.name, spec)
            self._scopes.update(port_scopes(fam))
        self._resolver = Resolver(PodIndex(inventory))
        self._found: dict[str, list[Entry]] = {}

    def __getitem__(self, name: str) -> list[Entry]:
        found = self._found.get(name)
        if found is None:
            found = self._found[name] = self._resolver.members(self._specs[name], self._scopes.get(name))
        return found

    def room(self, *names: str, without: Sequence[str] = ()) -> int:
        """How many members the sets ``names`` (of one family) hold together, less the
        addresses of the pod sets ``without``, without working them out: the pods are found
        (and remembered), their addresses only counted, so an address two pods share counts
        twice. A first load creates every set, sized by this, before reading any member: the
        kernel, which takes 1.8 s to create the independent L's 8,839 sets, starts at once."""
        if not names:
            return 0
        scope = self._scopes.get(names[0]) if len(names) == 1 else None
        specs = self._specs.__getitem__
        return self._resolver.room(list(map(specs, names)), scope, list(map(specs, without)))

    def __contains__(self, name: object) -> bool:
        return name in self._specs  # without working the set out (``Mapping``'s would)

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)


def resolve(lowered: Lowered, inventory: Inventory) -> Resolved:
    """Members of every set of every family, by set name (``Resolved``)."""
    return Resolved(lowered, inventory)
