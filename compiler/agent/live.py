"""Set members kept up to date object by object, so a pod event costs the sets that pod is in.

``LiveInventory`` holds one network's view of namespaces and pods and turns a fresh listing into
the objects that changed (an unchanged object is not even parsed again). ``LiveSets`` counts, for
every set, how many pods give each entry, with pod peers indexed by what can select a pod: a
positive label requirement (``role In (db)``, ``tier Exists``) indexes the peer under that label,
and a peer whose pod selector has none is listed per namespace it selects. A pod event looks up
only the peers its own labels and namespace can match, and an entry enters or leaves a set
exactly when its count moves between 0 and 1. The members equal ``resolve``'s, entry for entry
and in the same order (``tests/test_agent_live.py`` checks that on random churn).
"""

from __future__ import annotations

import bisect
import ipaddress
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, KeysView, Mapping
from typing import Any, Protocol, runtime_checkable

from ..documents import namespaced_name
from ..inventory import Inventory, IPSource, Namespace, Pod, build_inventory
from ..ir import NAMESPACE_NAME_LABEL, PodPeer
from ..lower import Lowered, SetSpec, port_scopes
from ..resolve import Entry, PodIndex, Resolver
from .held import HeldStore

Key = tuple[str, str, str]  # (kind, namespace, name)
PodChange = tuple[Pod | None, Pod | None]  # (before, after); None: not there


def _key(obj: Mapping[str, Any]) -> Key:
    """Any object has one: a malformed one (``metadata: x``) is keyed too, and ``update`` skips it
    with a warning when it fails to parse, as it does any bad pod."""
    return (str(obj.get("kind")), *namespaced_name(obj))


def _label(key: Key) -> str:
    """How an object is named in warnings: ``Pod default/web``, ``Namespace prod``."""
    kind, namespace, name = key
    return f"{kind} {namespace + '/' if namespace else ''}{name or '(unnamed)'}"


def _node(obj: Mapping[str, Any] | None) -> object:
    spec = (obj or {}).get("spec")
    return spec.get("nodeName") if isinstance(spec, Mapping) else None


@runtime_checkable
class Journal(Protocol):
    """A listing that can also say what changed since an earlier read of it."""

    seq: int  # the change it was read at

    def __iter__(self) -> Iterator[Mapping[str, Any]]: ...

    def since(self, seq: int) -> tuple[int, list[tuple[Key, Mapping[str, Any] | None]]] | None:
        """(the change it reaches, the objects changed after ``seq``, None for one gone); None
        when it cannot tell (read everything)."""
        ...


class LiveInventory:
    """A network's namespaces and pods (with their addresses on it), and which pods are local."""

    def __init__(self, source: IPSource, node: str | None = None, store: HeldStore | None = None) -> None:
        self.source, self.node, self.store = source, node, store
        self.raw: dict[Key, Mapping[str, Any]] = {}
        self.pods: dict[Key, Pod] = {}
        self.by_namespace: dict[str, dict[Key, Pod]] = defaultdict(dict)
        self.local: set[Key] = set()
        self.namespaces: dict[str, Namespace] = {}
        self.seen: int | None = None  # the journal's change this view is up to
        # objects that stopped parsing (or a pod whose network annotation did): their last good
        # state stays in force, as the last good input does, until they are fixed or gone
        self.good: dict[Key, Mapping[str, Any]] = {}  # each held object's last good raw object
        # what an agent before this one held (``store``): used once, by the first update, for an
        # object that is bad and has no state here yet
        self.recovered = store.load() if store is not None else {}
        self.bad: set[Key] = set()  # objects that do not parse now, held or skipped
        self.fresh_bad = 0  # objects found bad since the caller last took this (one per change)
        self.updated = False  # an update has run (the first one uses ``recovered``)
        # objects skipped since the caller last took these (one line each): a bad pod is skipped,
        # not a blocker, and said once per change of it
        self.warnings: list[str] = []

    def _changes(
        self, objects: Iterable[Mapping[str, Any]]
    ) -> tuple[int | None, dict[Key, Mapping[str, Any] | None]]:
        """The objects that differ from the view (None: gone), from a journal's changes when it
        can tell them, else from the full listing."""
        if isinstance(objects, Journal) and self.seen is not None:
            found = objects.since(self.seen)
            if found is not None:
                upto, changes = found
                fresh = {k: o for k, o in changes if k[0] in ("Namespace", "Pod")}
                return upto, {k: o for k, o in fresh.items() if self.raw.get(k) != o}
        seen = objects.seq if isinstance(objects, Journal) else None
        listed: dict[Key, Mapping[str, Any]] = {}
        for o in objects:
            if o.get("kind") in ("Namespace", "Pod"):
                key = _key(o)
                held = listed.setdefault(key, o)
                if held is not o and held != o:
                    listed[key] = self._first(key, held, o)
        changed = [k for k in self.raw.keys() | listed.keys() if self.raw.get(k) is not listed.get(k)]
        return seen, {k: listed.get(k) for k in changed if self.raw.get(k) != listed.get(k)}

    def update(self, objects: Iterable[Mapping[str, Any]]) -> tuple[list[PodChange], list[str]]:
        """Take the current listing (or a journal); return the pods that changed and the
        namespaces that did (a namespace's pods see their peers change with its labels). All or
        nothing: an object that does not parse raises InputError and leaves the view as it was."""
        seen, fresh = self._changes(objects)
        parsed: dict[Key, Namespace | Pod | None] = {}
        held_before = dict(self.good)
        for key in fresh:
            new = fresh.get(key)
            self.bad.discard(key)
            if new is None:
                self.good.pop(key, None)
                parsed[key] = None
                continue
            kind, _, name = key
            label = _label(key)
            found, broken = self._parse(new, label)
            self.warnings += found.warnings
            built: tuple[Namespace | Pod, ...] = found.namespaces if kind == "Namespace" else found.pods
            last = self.namespaces.get(name) if kind == "Namespace" else self.pods.get(key)
            if broken:
                self.bad.add(key)
                self.fresh_bad += 1
            recorded = self.recovered.get(key) if broken and last is None and key not in self.raw else None
            if recorded is not None:
                last = self._recover(recorded, kind, label)
            if last is not None and broken:
                # a pod isolated until now must not be opened by a typo in its object
                self.good.setdefault(key, recorded or self.raw[key])
                since = " (as recorded before this agent started)" if recorded is not None else ""
                self.warnings.append(f"{label}: its last good state stays in force until it is fixed{since}")
                parsed[key] = last
            else:
                self.good.pop(key, None)
                parsed[key] = built[0] if built else None
        first, self.recovered, self.updated = not self.updated, {}, True
        if self.store is not None and (first or self.good != held_before):
            self.store.save(self.good)  # at the first update, what it did not use goes too
        pods: list[PodChange] = []
        namespaces: list[str] = []
        for key, value in parsed.items():
            if key[0] == "Namespace":
                namespaces.append(key[2])
                if isinstance(value, Namespace):
                    self.namespaces[key[2]] = value
                else:
                    self.namespaces.pop(key[2], None)
                continue
            before = self.pods.pop(key, None)
            self.by_namespace[key[1]].pop(key, None)
            was_local = key in self.local
            self.local.discard(key)
            after = value if isinstance(value, Pod) else None
            if after is not None:
                self.pods[key] = self.by_namespace[key[1]][key] = after
                if self.node is None or _node(self.good.get(key, fresh[key])) == self.node:  # held: as it was
                    self.local.add(key)
            # a pod scheduled here (or away) with nothing else changed: ``Pod`` holds no node name
            if before != after or (key in self.local) != was_local:
                pods.append((before, after))
        for key, obj in fresh.items():
            if obj is None:
                self.raw.pop(key, None)
            else:
                self.raw[key] = obj
        self.seen = seen
        return pods, namespaces

    def _first(self, key: Key, one: Mapping[str, Any], other: Mapping[str, Any]) -> Mapping[str, Any]:
        """An object listed twice, differently: the one ``npc apply`` keeps (of those that read,
        the one that sorts first), so the agent's state is apply's whatever the order."""
        kind, label = key[0], _label(key)
        read = []
        for raw in (one, other):
            found = self._parse(raw, label)[0]
            built = found.namespaces if kind == "Namespace" else found.pods
            if built:
                read.append((repr(built[0]), raw))
        self.warnings.append(f"{label} is listed twice, differently: kept the one that sorts first")
        return min(read, key=lambda pair: pair[0])[1] if read else one

    @property
    def held(self) -> KeysView[Key]:
        return self.good.keys()

    def _parse(self, obj: Mapping[str, Any], label: str) -> tuple[Inventory, bool]:
        """The object read leniently, and whether it (or its network annotation) is broken."""
        unread = getattr(self.source, "unread", 0)
        found = build_inventory([obj], self.source, label, lenient=True)
        return found, bool(found.warnings) or getattr(self.source, "unread", 0) > unread

    def _recover(self, obj: Mapping[str, Any], kind: str, label: str) -> Namespace | Pod | None:
        found, broken = self._parse(obj, label)
        built: tuple[Namespace | Pod, ...] = found.namespaces if kind == "Namespace" else found.pods
        return built[0] if built and not broken else None

    def namespace_labels(self, name: str) -> Mapping[str, str]:
        found = self.namespaces.get(name)
        return found.labels if found is not None else {NAMESPACE_NAME_LABEL: name}

    def namespace_list(self) -> list[Namespace]:
        """Every namespace, those only known from their pods included (as ``build_inventory`` does)."""
        known = dict(self.namespaces)
        for pod in self.pods.values():
            known.setdefault(pod.namespace, Namespace(pod.namespace, {NAMESPACE_NAME_LABEL: pod.namespace}))
        return sorted(known.values(), key=lambda n: n.name)

    def in_namespace(self, namespace: str) -> Iterable[Pod]:
        return self.by_namespace.get(namespace, {}).values()

    def is_local(self, pod: Pod) -> bool:
        return ("Pod", pod.namespace, pod.name) in self.local


class _SortKeys(dict[str, tuple[int, str]]):
    """Entry -> the order ``resolve`` lists it in (address as a number, then the port), parsed once."""

    def __missing__(self, text: str) -> tuple[int, str]:
        address, _, rest = text.partition(",")
        key = self[text] = (int(ipaddress.ip_address(address)), rest)
        return key


class _View:
    """The pod peers that select pods of one namespace, indexed by a pod label they require."""

    def __init__(self, peers: Iterable[PodPeer]) -> None:
        self.by_label: dict[tuple[str, str], list[PodPeer]] = defaultdict(list)
        self.by_key: dict[str, list[PodPeer]] = defaultdict(list)
        self.unindexed: list[PodPeer] = []  # no positive pod requirement: tested for every pod
        self.empty = True
        for peer in peers:
            self.empty = False
            positive = next((r for r in peer.pods.requirements if r.op in ("In", "Exists")), None)
            if positive is None:
                self.unindexed.append(peer)
            elif positive.op == "Exists":
                self.by_key[positive.key].append(peer)
            else:
                for value in positive.values:
                    self.by_label[(positive.key, value)].append(peer)

    def may_select(self, labels: Mapping[str, str]) -> bool:
        """Whether a peer here can select a pod with ``labels``: one indexed by a label selects
        only pods carrying that label (or its key)."""
        return (
            bool(self.unindexed)
            or any(item in self.by_label for item in labels.items())
            or any(key in self.by_key for key in labels)
        )

    def selecting(self, labels: Mapping[str, str]) -> Iterator[PodPeer]:
        """The peers whose pod selector matches ``labels``."""
        candidates = set(self.unindexed)
        for item in labels.items():
            candidates.update(self.by_label.get(item, ()))
        for key in labels:
            candidates.update(self.by_key.get(key, ()))
        return (peer for peer in candidates if peer.pods.matches(labels))


class _Index:
    """Pod peers and named ports of some sets, indexed by what can select a pod: a peer whose
    namespace selector names its namespaces is listed under those names, any other is tested
    against a namespace's labels once; per namespace, the peers are indexed by pod label."""

    def __init__(
        self,
        specs: Iterable[SetSpec],
        scopes: Mapping[str, tuple[PodPeer, ...] | None],
        previous: _Index | None = None,
        kept: set[str] | None = None,
    ) -> None:
        """``previous``: an index whose sets named in ``kept`` carry over as they were indexed
        (peers recur across thousands of sets, and comparing equal peers is not free).
        ``scopes``: a named port's pods that rules can concern (``lower.port_scopes``): its
        scope's peers are indexed like a set's, and ``opens`` says which port sets each admits."""
        self.peer_sets: dict[PodPeer, list[tuple[str, int]]] = defaultdict(list)
        # (set name, family, whether a scope bounds it)
        self.port_sets: dict[tuple[str, str], list[tuple[str, int, bool]]] = defaultdict(list)
        self.opens: dict[PodPeer, list[str]] = defaultdict(list)
        if previous is not None:
            keep = kept or set()
            for kept_peer, sets in previous.peer_sets.items():
                if found := [s for s in sets if s[0] in keep]:
                    self.peer_sets[kept_peer] = found
            for port, ports in previous.port_sets.items():
                if kept_ports := [s for s in ports if s[0] in keep]:
                    self.port_sets[port] = kept_ports
            for kept_peer, admitted in previous.opens.items():
                if opened := [n for n in admitted if n in keep]:
                    self.opens[kept_peer] = opened
                    self.peer_sets.setdefault(kept_peer, [])  # indexed, if it feeds no set
        for spec in specs:
            if spec.kind == "port":
                protocol, name = (str(part) for part in spec.key)  # type: ignore[union-attr]
                scope = scopes.get(spec.name)
                self.port_sets[(protocol, name)].append((spec.name, spec.family, scope is not None))
                for scope_peer in scope or ():
                    self.opens[scope_peer].append(spec.name)
                    self.peer_sets.setdefault(scope_peer, [])  # indexed, if it feeds no set
            else:
                for peer in spec.key:  # type: ignore[union-attr]
                    assert isinstance(peer, PodPeer)
                    self.peer_sets[peer].append((spec.name, spec.family))
        self.named: dict[str, list[PodPeer]] = defaultdict(list)
        self.others: list[PodPeer] = []
        for peer in self.peer_sets:
            names = next(
                (
                    r.values
                    for r in peer.namespaces.requirements
                    if (r.key, r.op) == (NAMESPACE_NAME_LABEL, "In")
                ),
                None,
            )
            if names is None:
                self.others.append(peer)
            else:
                for name in names:
                    self.named[name].append(peer)
        self.per_namespace: dict[str, _View] = {}

    def view(self, namespace: str, labels: Mapping[str, str]) -> _View:
        found = self.per_namespace.get(namespace)
        if found is None:
            peers = [*self.named.get(namespace, ()), *self.others]
            found = self.per_namespace[namespace] = _View(p for p in peers if p.namespaces.matches(labels))
        return found

    def entries(self, pod: Pod, inventory: LiveInventory, local_only: set[str]) -> Iterator[tuple[str, str]]:
        """(set name, entry) for every entry ``pod`` gives to these sets."""
        view = self.view(pod.namespace, inventory.namespace_labels(pod.namespace))
        if view.empty and not self.port_sets:
            return
        # spelled only for a pod some set takes: a new set is tested against every pod of the
        # namespaces it may select, and most give it nothing
        ips: list[tuple[str, int]] | None = None
        opened: set[str] = set()  # the port sets whose scope takes the pod
        for peer in view.selecting(pod.labels):
            if ips is None:
                local, ips = inventory.is_local(pod), [(str(ip), ip.version) for ip in pod.ips]
            for name, family in self.peer_sets[peer]:
                if local or name not in local_only:
                    yield from ((name, ip) for ip, version in ips if version == family)
            opened.update(self.opens.get(peer, ()))
        if not self.port_sets:
            return
        if ips is None:
            ips = [(str(ip), ip.version) for ip in pod.ips]
        for (protocol, port_name), port in pod.named_ports().items():
            for name, family, scoped in self.port_sets.get((protocol, port_name), ()):
                if scoped and name not in opened:
                    continue
                rest = f"{protocol.lower()}:{port}"
                yield from ((name, f"{ip},{rest}") for ip, version in ips if version == family)


class LiveSets:
    """The sets of one lowered program that a backend reads (``Backend.read_sets``; None: every
    set), their members counted per entry, indexed for pod events. A program holds sets no
    dataplane loads (those tested by their parts): at the mixed M, iptables reads a third of
    them, so counting the rest would cost memory and every pod event work for nothing.

    Built from ``previous`` (the sets in force, already up to date with the inventory), the sets
    both programs have keep their counts: a policy change costs its new sets, not the cluster.
    """

    def __init__(
        self,
        lowered: Lowered,
        inventory: LiveInventory,
        local_only: set[str],
        previous: LiveSets | None = None,
        read: frozenset[str] | None = None,
    ) -> None:
        self.inventory, self.local_only = inventory, local_only
        specs: dict[str, SetSpec] = {}
        self.fixed: dict[str, list[Entry]] = {}  # ipBlock sets: members from the policy alone
        for family in lowered.families:
            for spec in family.sets:
                if read is not None and spec.name not in read:
                    continue
                if spec.kind == "net":
                    if spec.name not in self.fixed:
                        self.fixed[spec.name] = _net_members(spec)
                else:
                    specs.setdefault(spec.name, spec)
        # a named port's scope is the program's (``lower.port_scopes``): a set keeps its counts
        # across a policy change only where its scope stayed
        self.scopes = {
            n: s for family in lowered.families for n, s in port_scopes(family).items() if n in specs
        }
        kept: set[str] = set()
        if previous is not None:
            kept = {
                n
                for n in specs
                if n in previous.counts
                and (n in local_only) == (n in previous.local_only)
                and self.scopes.get(n) == previous.scopes.get(n)
            }
        fresh = [spec for name, spec in specs.items() if name not in kept]
        self.index: _Index = (
            _Index(fresh, self.scopes, previous.index, kept)
            if previous
            else _Index(specs.values(), self.scopes)
        )
        self.counts: dict[str, Counter[str]] = {n: previous.counts[n] for n in kept} if previous else {}
        self.counts.update((spec.name, Counter()) for spec in fresh)
        self._sorted: dict[str, list[Entry]] = (
            {n: previous._sorted[n] for n in kept if n in previous._sorted} if previous else {}
        )
        self._keys: _SortKeys = previous._keys if previous else _SortKeys()
        self.dirty: set[str] = {spec.name for spec in fresh} | (previous.dirty & kept if previous else set())
        # entries that entered or left a sorted set since ``members``: moved into a copy of it by
        # bisection, so one pod costs the log of a set's size (the isolation sets hold every pod)
        self.moved: dict[str, tuple[set[str], set[str]]] = (
            {n: previous.moved[n] for n in kept if n in previous.moved} if previous else {}
        )
        # what each pod gives the sets; entries of sets since dropped stay until the pod changes
        # (``_remove`` skips them), so a policy change does not rewrite every pod's entries; they
        # are swept out once they outnumber the live entries, or when a dropped set's name returns
        self.given: dict[tuple[str, str], frozenset[tuple[str, str]]] = {}
        self.stale: set[str] = set()  # names of dropped sets that ``given`` may still hold
        self.stale_entries = 0  # how many, at most
        if previous is not None:
            dropped = previous.counts.keys() - kept
            self.given = dict(previous.given)
            self.stale = previous.stale | dropped
            self.stale_entries = previous.stale_entries + sum(len(previous.counts[n]) for n in dropped)
            live = sum(map(len, self.counts.values()))
            if self.stale_entries > live or not self.stale.isdisjoint(s.name for s in fresh):
                stale = self.stale
                self.given = {
                    key: frozenset(e for e in given if e[0] not in stale) for key, given in self.given.items()
                }
                self.stale, self.stale_entries = set(), 0
        new_index = _Index(fresh, self.scopes) if previous else self.index
        # entries of every set as ``members`` last returned them, kept up to date by it (a metric)
        self.entries = sum(map(len, self.fixed.values())) + sum(map(len, self._sorted.values()))
        if not fresh:
            return
        for pod in _candidates(new_index, inventory):
            key = (pod.namespace, pod.name)
            added = set(new_index.entries(pod, inventory, local_only))
            for name, entry in added:
                self.counts[name][entry] += 1
            if added:
                self.given[key] = self.given.get(key, frozenset()).union(added)

    def _add(self, pod: Pod) -> None:
        # a union set counts a pod once per entry, however many of its peers select it
        given = self.given[(pod.namespace, pod.name)] = frozenset(
            self.index.entries(pod, self.inventory, self.local_only)
        )
        for name, entry in given:
            counts = self.counts[name]
            counts[entry] += 1
            if counts[entry] == 1:
                entered, left = self.moved.setdefault(name, (set(), set()))
                (left.discard if entry in left else entered.add)(entry)

    def _remove(self, namespace: str, name: str) -> None:
        for set_name, entry in self.given.pop((namespace, name), ()):
            counts = self.counts.get(set_name)
            if counts is None:  # a dropped set's
                continue
            counts[entry] -= 1
            if counts[entry] <= 0:
                del counts[entry]
                entered, left = self.moved.setdefault(set_name, (set(), set()))
                (entered.discard if entry in entered else left.add)(entry)

    def change(self, pods: Iterable[PodChange], namespaces: Iterable[str]) -> None:
        """Apply pod changes, then re-count the pods of namespaces whose labels changed."""
        for before, after in pods:
            if before is not None:
                self._remove(before.namespace, before.name)
            if after is not None:
                self._add(after)
        for namespace in set(namespaces):
            self.index.per_namespace.pop(namespace, None)
            for pod in list(self.inventory.in_namespace(namespace)):
                self._remove(pod.namespace, pod.name)
                self._add(pod)

    def members(self) -> dict[str, list[Entry]]:
        """Every set's entries in ``resolve``'s order; a set nothing entered or left is the very
        list returned before (so comparing with the members in force skips it)."""
        key = self._keys.__getitem__
        for name, (entered, left) in self.moved.items():
            before = self._sorted.get(name)
            if (not entered and not left) or name in self.dirty:
                continue
            if before is None or len(entered) + len(left) > len(before) // 8:
                self.dirty.add(name)
                continue
            after = list(before)  # a new list: the one in force stays as it was
            for entry in left:
                del after[bisect.bisect_left(after, key(entry), key=lambda e: key(e[0]))]
            for entry in entered:
                bisect.insort(after, (entry, False), key=lambda e: key(e[0]))
            self._sorted[name] = after
            self.entries += len(entered) - len(left)
        self.moved.clear()
        for name in self.dirty:
            self.entries -= len(self._sorted.get(name, ()))
            self._sorted[name] = [(e, False) for e in sorted(self.counts[name], key=key)]
            self.entries += len(self._sorted[name])
        self.dirty.clear()
        return {**self.fixed, **self._sorted}


def _candidates(index: _Index, inventory: LiveInventory) -> Iterable[Pod]:
    """The pods that may give entries to ``index``'s sets: those of the namespaces some peer
    selects (every pod when a set is a named port's)."""
    if index.port_sets:
        return inventory.pods.values()
    found: list[Pod] = []
    for namespace, pods in inventory.by_namespace.items():
        view = index.view(namespace, inventory.namespace_labels(namespace))
        if not view.empty:
            found += (pod for pod in pods.values() if view.may_select(pod.labels))
    return found


def _net_members(spec: SetSpec) -> list[Entry]:
    """An ipBlock set's entries, as ``resolve`` spells them (no pod involved)."""
    return Resolver(PodIndex(Inventory())).members(spec)
