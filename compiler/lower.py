"""IR -> sets, chains and matches: the dataplane-neutral program every backend renders.

This is where policy becomes structure, and only policy: a set is named by what it *means*
(a selector, a CIDR with excepts, a named port), never by what it contains, so pod churn
changes set members and nothing else. Backends turn this into text; they decide nothing.

Shape (per network and address family):
  forward:  replies of allowed connections pass; sources isolated for egress go to the
            egress dispatch, destinations isolated for ingress to the ingress dispatch.
  dispatch: for each policy (target set -> policy chain) whose chain can allow something, jump
            while nothing has allowed yet; then drop unless something allowed.
  policy chain: one match per (peer set x port group); a match marks the packet allowed.
Identical policy chains are shared, the unshared chains of policies selecting the same pods of
one namespace are one chain (``_combined``), identical sets are one set, and a set of one namespace's
pods matching one selector is tested as shared sets (``part_keys``): the namespace's pods and each
requirement's pods in every namespace, but where a chain tests many such peers of different
namespaces and selectors on the same ports: those are one set of their pods (``_gathered``).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import math
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from typing import Literal

import attrs

from .ir import (
    DEFAULT_NETWORK,
    DIRECTIONS,
    EVERYWHERE,
    IP_FAMILIES,
    NAMESPACE_NAME_LABEL,
    PROTOCOLS,
    Direction,
    IPBlock,
    Network,
    Peer,
    PodPeer,
    Policy,
    Program,
    Requirement,
    Rule,
    Selector,
    merge_intervals,
    namespace_selector,
    port_spans,
)
from .memo import Memo

SetKind = Literal["pods", "net", "port"]


def digest(*parts: object, size: int = 12) -> str:
    """A stable, lowercase, name-safe hash of a value's repr (attrs reprs are canonical)."""
    raw = hashlib.sha256(repr(parts).encode()).digest()
    return base64.b32encode(raw[: 5 * -(-size // 8)]).decode().lower()[:size]  # 5 bytes: 8 letters


SetKey = tuple[PodPeer, ...] | IPBlock | tuple[str, str]


@attrs.frozen(order=False, cache_hash=True)
class SetSpec:
    """A set named by its meaning. ``key``: pod peers (union) | an IPBlock | (protocol, port
    name). Same name, same meaning: so a changed policy means a new set, filled before any rule
    uses it, and only pod churn changes the members of a set a live rule uses."""

    kind: SetKind
    family: int
    key: SetKey = attrs.field(hash=True)
    name: str = attrs.field(eq=False)
    # (namespace's pods, each requirement's pods cluster-wide): sets a dataplane may test instead
    # of this one where it allows (``tested``); a function of ``key`` and of what else the program
    # loads (``part_keys``' ``standing``), so part of a set's value: two compiles may test one
    # key differently, and caches keyed by matches (``folded``) must tell them apart.
    parts: tuple[SetSpec, ...] = attrs.field(default=(), repr=False)
    # sets an address must *not* be in, beside ``parts`` (``exclusions``): a selector by absence
    excluded: tuple[SetSpec, ...] = attrs.field(default=(), eq=False, repr=False)

    @property
    def sort_key(self) -> tuple[str, str]:
        return (self.kind, self.name)


def part_keys(
    key: SetKey, lists: bool = False, standing: frozenset[SetKey] = frozenset()
) -> tuple[tuple[PodPeer, ...], ...] | None:
    """A pod set of one namespace and one selector as the namespace's pods and, per requirement
    of the selector, its pods in every namespace.

    A pod's address is that one pod's, so the set is the intersection of the parts; and the parts
    are shared: a namespace's pods by every peer inside it, a requirement's pods by every
    selector and namespace naming it. Tested that way, sets number the namespaces plus the
    distinct requirements instead of their product, and a pod is in one part per label that
    selectors name (a part per whole selector held a pod once per selector matching it:
    ``component=db`` and ``component=db, name=shop``...: 3.3 entries per policed address at
    the lists L, against 2.3). The kernel looks sets up by name in a list (ipset, nf_tables):
    loading costs grow with the square of the set count. None for a union (a union of
    intersections is no intersection), a set that is a namespace's pods already, and peers
    across namespaces by label: those are few, and their namespaces' pods would hold far more
    than the peer.

    Only a selector of ``In`` and ``Exists`` requirements is split: a pod is in a part only if
    it has the label named (with the value listed), so the parts a pod is in follow from its own
    labels, not from how many namespaces there are. ``NotIn`` and ``DoesNotExist`` match pods by
    what they lack: one such selector per namespace (``app NotIn [<own app>]``) would make a
    thousand parts of nearly every pod each. And each ``In`` names one value: a list's part holds
    a pod for every list holding its value, and policies choosing 2 or 3 of 8 components wrote
    84 lists (30 entries per pod); ``by_value`` makes a peer of lists peers of one value each.
    ``lists``: the split format 1 manifests were compiled with (a part per whole selector, value
    lists too).

    A peer across namespaces by label is split only where each of its parts is a set the program
    loads anyway (``standing``): ``team Exists`` x ``app Exists`` beside rules testing each alone
    (235k of 1.38M entries at the messy L were such products), while a new part of its own
    (``team=a``'s namespaces' pods, for ``team=a`` x ``app=api``) would be a copy of far more
    pods than the product holds."""
    if not (isinstance(key, tuple) and len(key) == 1 and isinstance(key[0], PodPeer)):
        return None
    peer = key[0]
    if peer.namespaces.is_all and not lists:
        return _requirement_parts(peer.pods)
    if standing and not _one_namespace(peer):
        found = _across_parts(peer)
        return found if found is not None and all(k in standing for k in found) else None
    if not _splittable(peer) or not (lists or _of_parts(peer.pods)):
        return None
    if lists:
        return (PodPeer(peer.namespaces, EVERYWHERE),), (PodPeer(EVERYWHERE, peer.pods),)
    return ((PodPeer(peer.namespaces, EVERYWHERE),), *_each_part(peer.pods))


def _each_part(pods: Selector) -> tuple[tuple[PodPeer, ...], ...]:
    """Each requirement's pods in every namespace: the shared parts."""
    return tuple((PodPeer(EVERYWHERE, Selector((r,))),) for r in pods.requirements)


def _across_parts(peer: PodPeer) -> tuple[tuple[PodPeer, ...], ...] | None:
    """Each namespace requirement's pods (of every namespace it holds) and each pod
    requirement's part: when there are several, and all are parts."""
    spaces, pods = peer.namespaces, peer.pods
    if len(spaces.requirements) + len(pods.requirements) < 2 or not (_of_parts(spaces) and _of_parts(pods)):
        return None
    return (*((PodPeer(Selector((r,)), EVERYWHERE),) for r in spaces.requirements), *_each_part(pods))


def _of_parts(pods: Selector) -> bool:
    """Whether each requirement is a part: ``In`` one value, or ``Exists``."""
    return all(r.op in ("In", "Exists") and len(r.values) < 2 for r in pods.requirements)


def _requirement_parts(pods: Selector) -> tuple[tuple[PodPeer, ...], ...] | None:
    """A selector's pods in every namespace as each requirement's part, when it has several,
    all parts (a dispatch group's target, its namespace known)."""
    if len(pods.requirements) < 2 or not _of_parts(pods):
        return None
    return _each_part(pods)


EXCLUDED = 8  # the most sets a peer by absence is tested as not being in (``exclusions``)
ABSENCE = ("NotIn", "DoesNotExist")


def _present(r: Requirement) -> list[Selector]:
    """What ``r``, a requirement by absence, excludes, one selector each: its values one by one
    (``app NotIn [x, y]`` is neither ``app=x`` nor ``app=y``), or the key (``DoesNotExist``)."""
    if r.op == "DoesNotExist":
        return [Selector((Requirement(r.key, "Exists"),))]
    return [Selector((Requirement(r.key, "In", (value,)),)) for value in r.values]


# asked per namespace and dispatch entry, twice (``_owned``, ``_local``)
@functools.lru_cache(maxsize=1 << 16)
def _by_parts(pods: Selector) -> bool:
    """Whether a selector's pods in every namespace are tested by shared parts alone (``_set``
    makes its set so): its requirements' parts, or, by absence (``exclusions``), the parts it
    excludes beside one part or every pod (no test where a dispatch group's mark proves a pod)."""
    absent = exclusions((PodPeer(EVERYWHERE, pods),))
    if absent is not None:
        ((kept,),), _ = absent
        return len(kept.pods.requirements) < 2 and _of_parts(kept.pods)
    return _of_parts(pods)


Keys = tuple[tuple[PodPeer, ...], ...]


def exclusions(key: SetKey) -> tuple[Keys, Keys] | None:
    """A peer across namespaces that selects by absence (``NotIn``, ``DoesNotExist``, of pods or
    of namespaces) as the pods its other requirements select *and not* in the parts of what it
    excludes: ``namespaceSelector: {}`` with ``app NotIn [x]`` is every pod and not ``app=x``'s
    part. Whole, each was a near-copy of every pod it could match, one per excluded value (every
    namespace's ``app NotIn [<own app>]`` of a thousand apps: a thousand copies of the cluster).
    An address is one live pod's, so it is not in a part exactly when its pod (or the pod's
    namespace) lacks what the part holds. None for anything else: a peer of one namespace is
    bounded by it, a union is no such difference, and past ``EXCLUDED`` tests a set is cheaper."""
    if not (isinstance(key, tuple) and len(key) == 1 and isinstance(key[0], PodPeer)):
        return None
    peer = key[0]
    if _one_namespace(peer):
        return None
    spaces = [r for r in peer.namespaces.requirements if r.op in ABSENCE]
    pods = [r for r in peer.pods.requirements if r.op in ABSENCE]
    excluded = [PodPeer(s, EVERYWHERE) for r in spaces for s in _present(r)]
    excluded += [PodPeer(EVERYWHERE, s) for r in pods for s in _present(r)]
    if not excluded or len(excluded) > EXCLUDED:  # none: only ``NotIn []``, which excludes nothing
        return None
    kept = PodPeer(
        Selector(r for r in peer.namespaces.requirements if r not in spaces),
        Selector(r for r in peer.pods.requirements if r not in pods),
    )
    return ((kept,),), tuple((e,) for e in dict.fromkeys(excluded))


def _one_namespace(peer: PodPeer) -> bool:
    one = peer.namespaces.requirements
    return len(one) == 1 and (one[0].key, one[0].op, len(one[0].values)) == (NAMESPACE_NAME_LABEL, "In", 1)


def _splittable(peer: PodPeer) -> bool:
    """One namespace's pods by a selector of ``In`` and ``Exists`` requirements."""
    return (
        not peer.pods.is_all
        and _one_namespace(peer)
        and all(r.op in ("In", "Exists") for r in peer.pods.requirements)
    )


EXPANDED = 4  # the most sets one peer's value lists become (``by_value``, ``across``)


def _lists(selector: Selector, names: bool = True) -> list[Requirement]:
    """``In`` requirements of several values (``names``: of namespace names too)."""
    return [
        r
        for r in selector.requirements
        if r.op == "In" and len(r.values) > 1 and (names or r.key != NAMESPACE_NAME_LABEL)
    ]


def _each_value(selector: Selector, lists: list[Requirement]) -> list[Selector]:
    """``selector`` with each of ``lists`` one value, one selector per combination of values."""
    chosen: list[list[Requirement]] = [[r for r in selector.requirements if r not in lists]]
    for r in lists:
        chosen = [[*c, Requirement(r.key, "In", (value,))] for c in chosen for value in r.values]
    return [Selector(c) for c in chosen]


def by_value(peer: PodPeer) -> list[tuple[PodPeer, ...]]:
    """The keys of a peer's sets: one, or, for a peer ``part_keys`` would split but for its
    value lists, one per combination of their values (at most ``EXPANDED``; more, one set).
    ``component In [a, b]`` is ``component In [a]`` or ``component In [b]``: a match each, and
    parts that hold a pod once per label, however many lists policies write."""
    lists = _lists(peer.pods)
    if not lists or not _splittable(peer) or math.prod(len(r.values) for r in lists) > EXPANDED:
        return [(peer,)]
    return [(PodPeer(peer.namespaces, pods),) for pods in _each_value(peer.pods, lists)]


def across(peer: PodPeer) -> list[PodPeer]:
    """A peer reaching across namespaces whose selectors list values, as one peer per combination
    of values (at most ``EXPANDED``; more, the peer as it is). ``team In [a, b]`` in a thousand
    rules, each its own pair, was a thousand sets, each a copy of two teams' pods: a pod was in
    one for every list naming its team; ``app In [x, y]`` in every namespace likewise (114 and
    106 entries per policed address on catalogue Ms whose peers were half such lists; 12 one
    value each). One value each, a peer is a set shared by every rule naming that value, or
    (every namespace's ``app=x``) the requirement's own part. Lists of namespace *names*, and
    lists of more combinations, are ``by_crowding``'s. A peer of one namespace is ``by_value``'s."""
    if _one_namespace(peer):
        return [peer]
    spaces, pods = _lists(peer.namespaces, names=False), _lists(peer.pods)
    if not (spaces or pods) or math.prod(len(r.values) for r in (*spaces, *pods)) > EXPANDED:
        return [peer]
    return [
        PodPeer(namespaces, selector)
        for namespaces in _each_value(peer.namespaces, spaces)
        for selector in _each_value(peer.pods, pods)
    ]


LISTED = 3  # the most lists holding one value a pod is copied into (``crowded``)
NAMED = 8  # the most peers ``by_crowding`` makes of one


Side = Literal["namespaces", "pods"]
SIDES: tuple[Side, ...] = ("namespaces", "pods")
Crowded = frozenset[tuple[Side, str, str]]  # (selector, key, value)


def crowded(policies: Iterable[Policy]) -> Crowded:
    """The values (namespace or pod selector, key, value) that more than ``LISTED`` different
    peers across namespaces list with others, in lists ``across`` leaves (of namespace names,
    or of more than ``EXPANDED`` combinations). Such a list is one set, a copy of the pods it
    selects: where each rule lists its own (`kubernetes.io/metadata.name In [2-5 namespaces]`,
    `team In [5-7 teams]`), a pod was in one set per list holding its value (63, 359 entries per
    policed address on catalogue Ms of half such peers). Where one list recurs (the platform
    namespaces, the same everywhere), its one copy is cheaper than the rule per value a split
    costs every packet the chain sees (the lists L, split: 64 -> 66 rules per packet). A
    function of the policies alone, so rules still depend on nothing else."""
    lists = {
        peer for listed in _listed(_rules(policies)) if not _one_namespace(listed) for peer in across(listed)
    }
    counts = Counter(
        (side, r.key, value)
        for peer in lists
        for side in SIDES
        for r in _lists(getattr(peer, side))
        for value in r.values
    )
    return frozenset(value for value, count in counts.items() if count > LISTED)


def by_crowding(peer: PodPeer, crowded: Crowded) -> list[PodPeer]:
    """A peer across namespaces as one peer per ``crowded`` value of its lists (the value's own
    set, which every rule naming it shares: a namespace by name is its namespace part, every
    namespace's ``app=x`` the requirement's part) and one peer listing the rest, which only
    values few lists hold are copied into; at most ``NAMED`` peers (the lists split so far)."""
    if _one_namespace(peer):
        return [peer]
    out = [peer]
    for side in SIDES:
        for r in _lists(getattr(peer, side)):
            hot = [value for value in r.values if (side, r.key, value) in crowded]
            rest = tuple(value for value in r.values if value not in hot)
            lists = [(value,) for value in hot] + ([rest] if rest else [])
            if not hot or len(out) * len(lists) > NAMED:
                continue
            out = [_listing(one, side, r, values) for one in out for values in lists]
    return out


def standing(policies: Iterable[Policy], crowded: Crowded) -> frozenset[SetKey]:
    """The sets of one requirement (``In`` one value, ``Exists``) that the program loads whatever
    else it holds, a function of the policies alone: a rule's peer across namespaces that is one
    such requirement, or what such a peer by absence is tested by (``exclusions``), and the parts
    in every namespace of a rule's peer of one namespace (``part_keys``). None of them is ever
    split nor tested by what it excludes, so each is a set some rule tests. Each distinct peer is
    looked at once (the bench L: 0.29 s when each rule's peers were, 0.04 s)."""
    found: set[SetKey] = set()
    for peer in (p for one in set(_listed(_rules(policies))) for p in _expanded(one, crowded)):
        if _one_namespace(peer):
            found.update(_local_parts(peer.pods))
        else:
            kept, excluded = exclusions((peer,)) or (((peer,),), ())
            found.update((*kept, *excluded))
    return frozenset(key for key in found if _single(key))


def _expanded(listed: PodPeer, crowded: Crowded) -> Iterator[PodPeer]:
    """The peers a listed peer is tested as (``across``, then ``by_crowding``)."""
    return (p for one in across(listed) for p in by_crowding(one, crowded))


def _kept(peer: PodPeer) -> Keys:
    """The keys a peer is tested by before parts: what it keeps beside what it excludes
    (``exclusions``), or itself."""
    return (exclusions((peer,)) or (((peer,),), ()))[0]


def _rules(policies: Iterable[Policy]) -> Iterator[Rule]:
    """Every rule of every direction the policies govern."""
    return (rule for policy in policies for direction in DIRECTIONS for rule in policy.rules(direction) or ())


def _listed(rules: Iterable[Rule]) -> Iterator[PodPeer]:
    """The pod peers ``rules`` list, as often as listed."""
    return (peer for rule in rules for peer in rule.peers or () if isinstance(peer, PodPeer))


@functools.lru_cache(maxsize=1 << 16)
def _local_parts(pods: Selector) -> tuple[SetKey, ...]:
    """The parts in every namespace that a peer of one namespace selecting ``pods`` is tested
    by (``by_value``, ``part_keys``): the same in whichever namespace (a namespace's own part
    is left out: only a peer across namespaces that names one namespace among other labels could
    use it, which costs a missed split, never a wrong one)."""
    peer = PodPeer(namespace_selector("-"), pods)
    return tuple(
        (part,) for key in by_value(peer) for (part,) in part_keys(key) or () if part.namespaces.is_all
    )


def _single(key: SetKey) -> bool:
    """A key of one peer selecting by one requirement (``In`` one value, or ``Exists``)."""
    if not (isinstance(key, tuple) and len(key) == 1 and isinstance(key[0], PodPeer)):
        return False
    spaces, pods = key[0].namespaces, key[0].pods
    return len(spaces.requirements) + len(pods.requirements) == 1 and _of_parts(spaces) and _of_parts(pods)


def _listing(peer: PodPeer, side: Side, r: Requirement, values: tuple[str, ...]) -> PodPeer:
    """``peer`` with requirement ``r`` of its ``side`` selector listing ``values`` instead."""
    selector = getattr(peer, side)
    one = Selector(Requirement(r.key, "In", values) if q == r else q for q in selector.requirements)
    return attrs.evolve(peer, **{side: one})


def tests(spec: SetSpec, local: tuple[str, ...] = ()) -> tuple[tuple[SetSpec, bool], ...]:
    """The sets a rule that *allows* by ``spec`` tests (all of them), each with whether the
    address must be *out* of it: its parts, or itself, then what it excludes; with ``local``, the
    namespaces the pod tested is known to be in (a dispatch group's), what the group's mark
    proves is no test (``_proved``). An isolation test stays one set: weave negates it, and the negation
    of an AND is no AND."""
    if not spec.parts:
        return ((spec, False),)
    parts = spec.parts
    if local and parts[0].key in _proved(local):
        parts = parts[1:]
    return (*((s, False) for s in parts), *((s, True) for s in spec.excluded))


def _proved(local: tuple[str, ...]) -> tuple[SetKey, ...]:
    """What a dispatch group's mark proves of an address: a pod's (every pod), and, for a group
    of one namespace, that namespace's."""
    every: SetKey = (PodPeer(EVERYWHERE, EVERYWHERE),)
    if len(set(local)) != 1:
        return (every,)
    return every, (PodPeer(namespace_selector(local[0]), EVERYWHERE),)


def tested(spec: SetSpec, local: tuple[str, ...] = ()) -> tuple[SetSpec, ...]:
    """The sets ``tests`` tests, in or out."""
    return tuple(s for s, _ in tests(spec, local))


def plain_cidr(spec: SetSpec | None) -> Network | None:
    """An ipBlock without ``except`` is one CIDR, which every dataplane matches in the rule itself:
    no set to load. A kernel set is looked up by name for each rule that tests it, along the list
    of every set (ipset, nf_tables), and egress rules to partners' and services' /24s made
    thousands of one-entry sets. The set stays in the program (named by meaning, in the manifest)."""
    key = spec.key if spec is not None and spec.kind == "net" else None
    return key.cidr if isinstance(key, IPBlock) and not key.excepts else None


@attrs.frozen(cache_hash=True)
class Match:
    """One allow rule: the remote peer set (None: anyone), protocol and its port spans (however
    many: a backend splits them if its matches hold fewer), or a named port."""

    peer: SetSpec | None = None
    protocol: str | None = None
    ports: tuple[tuple[int, int], ...] = ()
    named_port: SetSpec | None = None


@attrs.frozen
class Chain:
    name: str
    direction: Direction
    matches: tuple[Match, ...]
    comment: str = attrs.field(default="", eq=False)


@attrs.frozen
class Dispatch:
    target: SetSpec
    chain: str
    comment: str


@attrs.frozen
class Scope:
    """One namespace's share of a direction's dispatch. Policies select pods of their own
    namespace only, so which dispatch entries can concern a pod is known from its namespace:
    ``isolated`` holds the namespace's isolated pods, ``dispatch`` the entries whose target has
    a policy of this namespace, in dispatch order, each with its ``local`` test: once the
    namespace is known, the pods of *any* namespace its policies' selectors match (the entry's
    target is a union over every namespace sharing the chain: a copy of their pods, 1.1 entries
    per policed address at the mixed M for one ``role NotIn [batch]`` policy in each namespace;
    a selector alone is its requirements' parts, shared with every peer naming them); where
    parts do not test them, the pods of the namespaces that test so (``_owned``); or None: a
    policy selects every pod of the namespace, so no test at all."""

    namespace: str
    isolated: SetSpec
    dispatch: tuple[tuple[Dispatch, SetSpec | None], ...]


@attrs.frozen
class FamilyProgram:
    family: int
    sets: tuple[SetSpec, ...]
    isolated: dict[Direction, SetSpec] = attrs.field(hash=False)
    dispatch: dict[Direction, tuple[Dispatch, ...]] = attrs.field(hash=False)
    chains: tuple[Chain, ...]
    scopes: dict[Direction, tuple[Scope, ...]] = attrs.field(hash=False, factory=dict)


def chain_set_tests(program: FamilyProgram) -> Counter[SetSpec]:
    """How many matches of the policy chains test each set: each peer's ``tested`` sets and each
    named port (a new Counter: backends add their own tests to it)."""
    found: Counter[SetSpec] = Counter()
    for chain in program.chains:
        for m in chain.matches:
            found.update(tested(m.peer) if m.peer is not None and plain_cidr(m.peer) is None else ())
            found.update((m.named_port,) if m.named_port is not None else ())
    return found


def port_scopes(program: FamilyProgram) -> dict[str, tuple[PodPeer, ...] | None]:
    """Per named-port set, the pods a rule testing it can concern (None: any pod). An ingress
    match tests the port of the policed pod, which its chain's dispatch entries hold; an egress
    match tests its peer's pods. A pod outside every one of them is in no rule's reach, so its
    entries change nothing, and leaving them out makes the set as large as its uses, not as the
    cluster: at the independent L, 1,059 ingress uses of ``http`` concern 14k of its 31k pods.

    A function of the program alone, so members stay the inventory's business, and ``resolve``
    and the agent's live sets read it alike; a policy change that moves a scope moves members,
    not rules (the name stays the port's)."""
    targets: dict[str, list[SetSpec]] = {}
    for entries in program.dispatch.values():
        for entry in entries:
            targets.setdefault(entry.chain, []).append(entry.target)
    found: dict[str, list[PodPeer] | None] = {}
    for chain in program.chains:
        for m in chain.matches:
            if m.named_port is None:
                continue
            scope = found.setdefault(m.named_port.name, [])
            sides = targets.get(chain.name, []) if chain.direction == "ingress" else [m.peer]
            for side in sides:
                if scope is None:
                    break
                if side is None or not isinstance(side.key, tuple) or side.kind != "pods":
                    scope = found[m.named_port.name] = None  # anyone, or a CIDR's: whatever pods it holds
                else:
                    scope.extend(p for p in side.key if isinstance(p, PodPeer))
    return {name: None if scope is None else pod_union(scope) for name, scope in found.items()}


def network_tag(network: str) -> str:
    """A stable, short, name-safe stand-in for a network's name, for backends that must keep
    networks apart in one namespace of names (the iptables backends' ``npc-<tag>-`` sets)."""
    return digest("network", network, size=5)


def set_name(kind: SetKind, family: int, key: SetKey) -> str:
    """``s4-<digest>`` (pods), ``n4-`` (net), ``p4-`` (named port): letter, family, meaning."""
    letter = {"pods": "s", "net": "n", "port": "p"}[kind]
    # A union of pod peers can hold thousands (the isolated sets): spell each peer once.
    spelled = tuple(map(_spelling, key)) if kind == "pods" and isinstance(key, tuple) else key
    return f"{letter}{family}-{digest(kind, family, spelled)}"


# The one place a backend's spelling reaches ``lower``. The first npc named sets and chains with
# the iptables backends' prefixes here, and a policy chain's name is a digest of its content,
# which spells its sets' names: keeping that spelling as the digest's input (and in the
# manifest's program, format 1) keeps every name, and so every artefact, what it was.
_PREFIXES = {True: "npc", False: "NPC"}  # set names begin lower case, chain names upper case


def qualified(name: str, tag: str) -> str:
    """A set or chain name as format 1 spells it: ``npc-<tag>-s4-...``, ``NPC-<tag>-P-...``."""
    return f"{_PREFIXES[name[:1].islower()]}-{tag}-{name}"


def unqualified(name: str, tag: str) -> str:
    """The inverse of ``qualified``; ValueError for a name it cannot have made."""
    for prefix in _PREFIXES.values():
        if name.startswith(f"{prefix}-{tag}-"):
            bare = name[len(prefix) + len(tag) + 2 :]
            if bare and qualified(bare, tag) == name:
                return bare
    raise ValueError(f"{name!r} is not a set or chain name of network tag {tag!r}")


@functools.lru_cache(maxsize=1 << 16)
def _spelling(value: object) -> str:
    """A value's canonical repr, remembered: attrs reprs are slow and peers recur in many sets."""
    return repr(value)


def pod_union(peers: Iterable[PodPeer]) -> tuple[PodPeer, ...]:
    """The one spelling of a union of pod peers, so equal unions are one set wherever they
    arise (sorted by text: attrs' field-by-field ordering is slow on thousands of peers)."""
    return tuple(sorted(set(peers), key=_spelling))


@attrs.frozen
class Lowered:
    """One network's program. Names are by meaning only (``s4-<digest>``, ``P-<digest>``): how a
    dataplane tells networks apart (prefixes, tables) is its backend's business."""

    network: str
    families: tuple[FamilyProgram, ...]
    tag: str = attrs.field()

    @tag.default
    def _tag(self) -> str:
        return network_tag(self.network)

    def family(self, family: int) -> FamilyProgram:
        return next(f for f in self.families if f.family == family)


_Lowered = tuple[Policy, Direction, Chain, int]  # a policy's chain, and how many policies it holds


def _joined(matches: Iterable[Match]) -> tuple[Match, ...]:
    """Each match once, in order, a peer's numeric ports of one protocol joined in its first
    match (rules are OR-ed; ``()``, every port, absorbs the rest)."""
    spans: dict[Match, list[tuple[int, int]] | None] = {}  # None: as it is, or every port
    for m in matches:
        if m.named_port is not None or m.protocol is None:
            spans.setdefault(m, None)
            continue
        key = Match(m.peer, m.protocol)
        known = spans.setdefault(key, [])
        if known is not None and m.ports:
            known.extend(m.ports)
        elif known is not None:
            spans[key] = None
    return tuple(
        m if found is None else attrs.evolve(m, ports=tuple(merge_intervals(found)))
        for m, found in spans.items()
    )


_PortShape = tuple[str | None, tuple[tuple[int, int], ...], str | None]  # protocol, spans, port name
_PortMatch = tuple[str | None, tuple[tuple[int, int], ...], SetSpec | None]  # a match's ports


def _peer_keys(peers: tuple[Peer, ...], crowded: Crowded) -> tuple[SetKey, ...]:
    """The pod sets a rule's peers are tested as (``_Lowerer._peer_sets``), by key."""
    scopes: dict[Selector | PodPeer, list[PodPeer]] = {}
    for listed in peers:
        if not isinstance(listed, PodPeer):
            continue
        for peer in _expanded(listed, crowded):
            if _one_namespace(peer):
                scopes.setdefault(peer.namespaces, []).append(peer)
            else:
                scopes[peer] = [peer]  # listed twice, still one set
    return tuple(
        key
        for found in scopes.values()
        for key in (by_value(found[0]) if len(found) == 1 else (pod_union(found),))
    )


def _port_shapes(rule: Rule) -> tuple[_PortShape, ...]:
    """A rule's ports as matches: all ports, a protocol's spans, or one named port apiece."""
    if not rule.ports:
        return ((None, (), None),)
    out: list[_PortShape] = []
    for protocol in PROTOCOLS:
        specs = [p for p in rule.ports if p.protocol == protocol]
        if not specs:
            continue
        if any(p.port is None for p in specs):
            out.append((protocol, (), None))
            continue
        spans = tuple(port_spans(specs))
        if spans:
            out.append((protocol, spans, None))
        out += [(protocol, (), name) for name in sorted({p.port for p in specs if isinstance(p.port, str)})]
    return tuple(out)


@attrs.frozen
class _Plans:
    """What lowering works out alike for every family, worked out once: which keys a rule's pod
    peers are tested by, its ports' shapes (both by rule: equal rules of other policies share
    them), and how a set key splits."""

    peers: dict[Rule, tuple[SetKey, ...]] = attrs.Factory(dict)
    ports: dict[Rule, tuple[_PortShape, ...]] = attrs.Factory(dict)
    splits: dict[SetKey, tuple[tuple[tuple[PodPeer, ...], ...] | None, tuple[Keys, Keys] | None]] = (
        attrs.Factory(dict)
    )


class _Lowerer:
    def __init__(
        self,
        tag: str,
        family: int,
        memo: Memo | None = None,
        crowded: Crowded = frozenset(),
        standing: frozenset[SetKey] = frozenset(),
        plans: _Plans | None = None,
    ) -> None:
        self.tag = tag
        self.family = family
        self.memo = memo
        self.crowded = crowded
        self.standing = standing
        self.plans = plans or _Plans()
        self._splits: dict[PodPeer, tuple[bool, ...]] = {}  # ``_split``'s, per peer listed
        self._gathers: dict[str, Chain] = {}  # ``_gathered``'s, per chain
        self.sets: dict[tuple[SetKind, SetKey], SetSpec] = {}

    def _set(self, kind: SetKind, key: SetKey) -> SetSpec:
        spec = self.sets.get((kind, key))
        if spec is None:  # named once: the digest of a large key is not free
            split = self.plans.splits.get(key) if kind == "pods" else (None, None)
            if split is None:
                found = self._parts(key)
                split = self.plans.splits[key] = (found, None if found else exclusions(key))
            found, absent = split
            kept, excluded = absent or (found or (), ())  # found: split, absent: by absence
            # what a selector by absence keeps is tested as its own parts where it has them
            parts = (
                tuple(p for k in kept for p in self._tested_as(k)) if absent else tuple(map(self._pods, kept))
            )
            name = set_name(kind, self.family, key)
            spec = SetSpec(kind, self.family, key, name, parts, tuple(self._set("pods", k) for k in excluded))
            self.sets[(kind, key)] = spec
        return spec

    def _parts(self, key: SetKey) -> tuple[tuple[PodPeer, ...], ...] | None:
        """``part_keys``, a peer across namespaces split where its parts stand."""
        return part_keys(key, standing=self.standing)

    def _pods(self, key: SetKey) -> SetSpec:
        return self._set("pods", key)

    def _tested_as(self, key: SetKey) -> tuple[SetSpec, ...]:
        """The sets a selector without absence is tested as: its parts, or itself (no set of
        the whole when split: a fresh compile holds the sets a memoised one notes)."""
        split = self._parts(key)
        return tuple(map(self._pods, split)) if split else (self._pods(key),)

    def _peer_sets(self, rule: Rule) -> list[SetSpec | None]:
        """Remote peers as sets; [] when the rule names peers but none exist in this family.

        Only one namespace's peers are a union (its pods, so a copy bounded by the namespace):
        a peer reaching across namespaces (``tenant=a`` x ``role=gateway``, or every namespace's
        ``app=x``) is a set of its own, shared by every rule that lists it, never copied into a
        union with a rule's other peers, so set entries grow with the cluster, not with policies
        x shared peers (``app In [x]`` and ``app In [y]`` in every namespace, listed in pairs by
        a thousand rules, were a thousand copies)."""
        if rule.peers is None:
            return [None]
        keys = self.plans.peers.get(rule)
        if keys is None:
            keys = self.plans.peers[rule] = _peer_keys(rule.peers, self.crowded)
        out: list[SetSpec | None] = [self._set("pods", key) for key in keys]
        for block in rule.peers:
            if isinstance(block, IPBlock) and block.version == self.family:
                out.append(self._set("net", block))
        return out

    def _port_matches(
        self, rule: Rule
    ) -> list[tuple[str | None, tuple[tuple[int, int], ...], SetSpec | None]]:
        shapes = self.plans.ports.get(rule)
        if shapes is None:
            shapes = self.plans.ports[rule] = _port_shapes(rule)
        return [
            (
                protocol,
                spans,
                None if name is None or protocol is None else self._set("port", (protocol, name)),
            )
            for protocol, spans, name in shapes
        ]

    def chain(self, policy: Policy, direction: Direction) -> Chain | None:
        """The policy's rules for one direction, or None when they can allow nothing here; from
        the memo when an earlier compile lowered the same policy (its sets noted again)."""
        if self.memo is None:
            return self._chain(policy, direction)
        key = (
            "chain",
            self.tag,
            self.family,
            policy,
            direction,
            self.crowded,
            self._split(policy, direction),
        )
        found = self.memo.get(key, lambda: self._chain(policy, direction))
        for match in found.matches if found is not None else ():
            for spec in (match.peer, match.named_port):
                if spec is not None:
                    self._note(spec)
        return found

    def _split(self, policy: Policy, direction: Direction) -> tuple[bool, ...]:
        """Which of the rules' peers across namespaces (and what peers by absence keep) ``standing``
        splits: all a memoised chain depends on beside its policy and ``crowded``. Keyed by these
        alone, a policy change that makes another set standing re-lowers the chains it concerns,
        not every chain (a change at L in about 0.5 s, not 1.5-2.5 s)."""
        out: list[bool] = []
        for rule in policy.rules(direction) or ():
            for listed in rule.peers or ():
                if not isinstance(listed, PodPeer) or _one_namespace(listed):
                    continue
                found = self._splits.get(listed)
                if found is None:
                    keys = (k for p in _expanded(listed, self.crowded) for k in _kept(p))
                    found = self._splits[listed] = tuple(self._parts(k) is not None for k in keys)
                out.extend(found)
        return tuple(out)

    def _note(self, spec: SetSpec) -> None:
        """``spec`` and the sets ``_set`` made with it, at any depth (a part may have parts or
        exclusions of its own: a namespace part selecting by absence), as a fresh compile has them.
        A set already here has its own here too (``_set`` makes them before it, this notes them
        after it), so a part many peers share is walked once."""
        key = (spec.kind, spec.key)
        if key in self.sets:
            return
        self.sets[key] = spec
        for one in (*spec.parts, *spec.excluded):
            self._note(one)

    def _chain(self, policy: Policy, direction: Direction) -> Chain | None:
        matches: dict[Match, None] = {}  # ordered and de-duplicated
        for rule in policy.rules(direction) or ():
            for peer in self._peer_sets(rule):
                for protocol, ports, named in self._port_matches(rule):
                    matches[Match(peer, protocol, ports, named)] = None
        if not matches:
            return None
        return self._named(direction, tuple(matches), f"{policy.namespace}/{policy.name}")

    def _named(self, direction: Direction, matches: tuple[Match, ...], comment: str) -> Chain:
        # set names stand for their meaning, so they identify the content as well as the sets do
        tag = self.tag
        content = tuple(
            (
                m.peer
                and "&".join(("!" if out else "") + qualified(s.name, tag) for s, out in tests(m.peer)),
                m.protocol,
                m.ports,
                m.named_port and qualified(m.named_port.name, tag),
            )
            for m in matches
        )
        return Chain("P-" + digest(direction, self.family, content), direction, matches, comment)

    def _combined(self, lowered: list[_Lowered]) -> list[_Lowered]:
        """The chains of policies that select the same pods of one namespace, as one chain, where
        no other policy shares them: a pod selected by forty policies met forty dispatch tests
        (one per policy, 145 in one namespace of an independently written L), and the forty
        chains' matches repeat peers and ports (rules are OR-ed, so one chain of all of them,
        each match once and a peer's numeric ports joined, allows the same). A chain other
        policies share (the same rules in many namespaces) stays as it is: copied into each
        namespace's combination, its rules would be written once per namespace."""
        uses = Counter(chain.name for _, _, chain, _ in lowered)
        alike: dict[tuple[Direction, PodPeer], list[_Lowered]] = {}
        for one in lowered:
            policy, direction, chain, _ = one
            if uses[chain.name] == 1:
                alike.setdefault((direction, policy.target), []).append(one)
        out: list[_Lowered] = []
        for one in lowered:
            policy, direction, chain, _ = one
            group = alike.get((direction, policy.target), [])
            if len(group) < 2 or uses[chain.name] != 1:
                out.append(one)
            elif group[0] is one:
                matches = _joined(m for _, _, c, _ in group for m in c.matches)
                comment = f"{chain.comment} and {len(group) - 1} more"
                out.append((policy, direction, self._named(direction, matches, comment), len(group)))
        return out

    def _gathered(self, chain: Chain) -> Chain:
        """``chain`` with the peers of one namespace each that several of its matches test by
        parts (a namespace's and a label's), on the same ports, as one set of their pods. Tested
        by parts, no two such peers are one rule (``ns=a, app=x`` and ``ns=b, app=y`` differ in
        every test), so a chain of forty policies' peers was forty rules every packet walked
        (22 of the independent L's 73 rules per packet); as one set, they are one, a copy of
        pods bounded by their namespaces. Gathered only where lists of their parts would leave
        three rules or more: peers of one namespace, or of one selector in several namespaces,
        are one rule already (a list of the selectors' or the namespaces' parts), and gathering
        the lists M's value lists, split value by value, cost 40% more sets for one rule per
        packet. Two suffice in a chain of ``LONG_CHAIN`` matches, where packets meet many rules;
        a set is a set more to load (about 0.3 s per thousand at the independent L), and two
        anywhere were 1,229 sets more for the same 64 rules per packet. Peers of one namespace
        each that one set tests (a union of local selectors) on those ports would be one rule
        more (a list of them): they join, and count toward the three (independent Ls of seeds
        0-3: 63 / 66 / 64 / 66 rules per packet from 63 / 66 / 65 / 67, 70-105 sets fewer)."""
        done = self._gathers.get(chain.name)
        if done is not None:  # a chain many namespaces share, worked out once
            return done
        groups: dict[_PortMatch, list[tuple[Match, tuple[PodPeer, ...]]]] = {}
        whole: dict[_PortMatch, list[tuple[Match, tuple[PodPeer, ...]]]] = {}
        for m in chain.matches:
            split = _by_namespace(m.peer)
            if split:
                groups.setdefault((m.protocol, m.ports, m.named_port), []).append((m, split))
            elif one_set := _by_namespace(m.peer, whole=True):
                whole.setdefault((m.protocol, m.ports, m.named_port), []).append((m, one_set))
        gathered: dict[Match, Match | None] = {}
        least = 2 if len(chain.matches) >= LONG_CHAIN else 3
        for key, found in groups.items():
            peers = [p for _, each in found for p in each]
            # the rules lists would leave at least: one per namespace (a list of its selectors'
            # parts) or one per selector (a list of its namespaces' parts), whichever is fewer,
            # and one for the peers of one set each on the same ports (a list of them)
            beside = whole.get(key, [])
            if min(len({p.namespaces for p in peers}), len({p.pods for p in peers})) + bool(beside) < least:
                continue
            found += beside
            peers += [p for _, each in beside for p in each]
            protocol, ports, named = key
            one = Match(self._set("pods", pod_union(peers)), protocol, ports, named)
            gathered.update((m, one if i == 0 else None) for i, (m, _) in enumerate(found))
        if gathered:
            matches = (gathered.get(m, m) for m in chain.matches)
            done = self._named(chain.direction, tuple(m for m in matches if m is not None), chain.comment)
        self._gathers[chain.name] = done or chain
        return done or chain

    def program(self, policies: tuple[Policy, ...]) -> FamilyProgram:
        """One dispatch per (direction, chain), its target the union of the targets of every
        policy whose rules lower to that chain: "jump if in T1; jump if in T2" to the same
        chain is "jump if in T1 u T2", so a policy repeated across namespaces costs one rule."""
        chains: dict[str, Chain] = {}
        # target -> (its first policy, how many policies), in order
        users: dict[tuple[Direction, str], dict[PodPeer, tuple[str, int]]] = {}
        # The pods isolated for a direction: the union of the targets of every policy governing it,
        # named by those targets (not by the direction), like every other set.
        isolated = {
            d: self._set("pods", pod_union(p.target for p in policies if p.rules(d) is not None))
            for d in DIRECTIONS
        }
        lowered: list[_Lowered] = []
        for policy in policies:
            for direction in DIRECTIONS:
                if policy.rules(direction) is None:
                    continue
                chain = self.chain(policy, direction)
                if chain is not None:  # else it isolates only: one of the isolated set's targets
                    lowered.append((policy, direction, chain, 1))
        for policy, direction, chain, count in self._combined(lowered):
            chain = self._gathered(chain)
            chains.setdefault(chain.name, chain)
            targets = users.setdefault((direction, chain.name), {})
            if policy.target not in targets:
                targets[policy.target] = (f"{policy.namespace}/{policy.name}", count)
        dispatch: dict[Direction, list[Dispatch]] = {d: [] for d in DIRECTIONS}
        # namespace -> its dispatch entries, in dispatch order, each with its policies' pod selectors
        shares: dict[Direction, dict[str, dict[Dispatch, list[Selector]]]] = {d: {} for d in DIRECTIONS}
        # the shortest chains first (stable: policy order among equals): a packet one of them
        # allows meets none of the longer ones' rules (nftables accepts; iptables' dispatch
        # tests the allow bit before a target's set), so allowed traffic, mostly let through by
        # short, broad rules (the namespace's own pods, monitoring), pays least
        for (direction, chain_name), targets in sorted(
            users.items(), key=lambda u: len(chains[u[0][1]].matches)
        ):
            first, _ = next(iter(targets.values()))
            more = sum(count for _, count in targets.values()) - 1
            comment = f"{first} and {more} more" if more else first
            entry = Dispatch(self._set("pods", pod_union(targets)), chain_name, comment)
            dispatch[direction].append(entry)
            for target, (label, _) in targets.items():
                shares[direction].setdefault(label.split("/", 1)[0], {}).setdefault(entry, []).append(
                    target.pods
                )
        scopes = {d: self._scopes(policies, d, shares[d]) for d in DIRECTIONS}
        return FamilyProgram(
            self.family,
            tuple(sorted(self.sets.values(), key=lambda s: s.sort_key)),
            isolated,
            {d: tuple(v) for d, v in dispatch.items()},
            tuple(sorted(chains.values(), key=lambda c: c.name)),
            scopes,
        )

    def _scopes(
        self,
        policies: tuple[Policy, ...],
        direction: Direction,
        shares: dict[str, dict[Dispatch, list[Selector]]],
    ) -> tuple[Scope, ...]:
        targets: dict[str, list[PodPeer]] = {}
        for policy in policies:
            if policy.rules(direction) is not None:
                targets.setdefault(policy.namespace, []).append(policy.target)
        owned = self._owned(shares)
        return tuple(
            Scope(
                ns,
                self._set("pods", pod_union(found)),
                tuple((d, self._local(d, selectors, owned)) for d, selectors in shares.get(ns, {}).items()),
            )
            for ns, found in sorted(targets.items())
        )

    def _owned(self, shares: dict[str, dict[Dispatch, list[Selector]]]) -> dict[Dispatch, SetSpec]:
        """Per dispatch entry, one set of the pods of the namespaces that test their own
        (``_tests_own``) that their selectors match. The entry's target, a union over every
        namespace sharing the chain, holds the other namespaces' pods too: 9,952 entries at the
        independent L for ``allow-monitoring`` of 217 namespaces, tested by three namespaces'
        groups where two policies share the chain. Where every namespace tests its own, it is
        the target."""
        owned: dict[Dispatch, list[PodPeer]] = {}
        for ns, entries in sorted(shares.items()):
            for d, selectors in entries.items():
                if _tests_own(selectors):
                    owned.setdefault(d, []).extend(PodPeer(namespace_selector(ns), s) for s in selectors)
        return {d: self._set("pods", pod_union(peers)) for d, peers in owned.items()}

    def _local(
        self, entry: Dispatch, selectors: list[Selector], owned: dict[Dispatch, SetSpec]
    ) -> SetSpec | None:
        """A scope's test for one dispatch entry (``Scope``): none where a policy selects every
        pod of the namespace; the selector's pods everywhere when parts test them; else the pods
        of the namespaces that test so (``_owned``): a union of selectors, or a value list, would
        be a copy of every namespace's pods it matches."""
        if any(s.is_all for s in selectors):
            return None
        if _tests_own(selectors):
            return owned[entry]
        return self._set("pods", (PodPeer(EVERYWHERE, selectors[0]),))


# matches from which ``_gathered`` makes one set of two peers (else of three), and from which
# iptables lists two sets in one rule (``render.folded``; else three)
LONG_CHAIN = 8


def _by_namespace(spec: SetSpec | None, whole: bool = False) -> tuple[PodPeer, ...]:
    """The peers of ``spec`` where it is pods of one namespace each, tested by more than one set
    (its parts), or with ``whole`` by one; else none."""
    if spec is None or (len(spec.parts) > 1) == whole or not isinstance(spec.key, tuple):
        return ()
    peers = tuple(p for p in spec.key if isinstance(p, PodPeer) and _one_namespace(p))
    return peers if len(peers) == len(spec.key) else ()


def _tests_own(selectors: list[Selector]) -> bool:
    """Whether a scope tests a dispatch entry by its own namespace's pods: no policy of it selects
    them all, and its selectors are several, or one that parts do not test."""
    return not any(s.is_all for s in selectors) and (len(set(selectors)) > 1 or not _by_parts(selectors[0]))


def lower(
    program: Program,
    network: str = DEFAULT_NETWORK,
    memo: Memo | None = None,
    families: Sequence[int] = IP_FAMILIES,
) -> Lowered:
    """``families``: those the network carries (``--ip-families``); a backend loads nothing of another."""
    tag = network_tag(network)
    names = crowded(program.policies)
    loaded = standing(program.policies, names)
    plans = _Plans()  # for this call's families only
    return Lowered(
        network,
        tuple(_Lowerer(tag, f, memo, names, loaded, plans).program(program.policies) for f in families),
        tag,
    )
