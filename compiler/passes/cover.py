"""What implies what: the facts about selectors, peers and ports that the passes rely on.

Not a pass. Every test here is *sufficient*, never necessary: ``True`` means "matches at most
what the other matches" for every possible inventory, so a pass may drop the smaller thing;
``False`` only means "not proven", which costs an optimisation and never a wrong answer.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable

from ..ir import IPBlock, Network, Peer, PodPeer, PortSpec, Requirement, Rule, Selector, port_spans, subnet_of

Span = tuple[int, int]


@functools.lru_cache(maxsize=1 << 16)  # the same few selectors recur across thousands of policies
def unsatisfiable(selector: Selector) -> bool:
    """No label set matches: an empty ``In``, or requirements on one key that contradict."""
    by_key: dict[str, list[Requirement]] = defaultdict(list)
    for req in selector.requirements:
        if req.op == "In" and not req.values:
            return True
        by_key[req.key].append(req)
    for reqs in by_key.values():
        ops = {r.op for r in reqs}
        if "DoesNotExist" in ops and ops & {"In", "Exists"}:
            return True
        allowed: set[str] | None = None
        for r in reqs:
            if r.op == "In":
                allowed = set(r.values) if allowed is None else allowed & set(r.values)
        if allowed is not None:
            excluded = {v for r in reqs if r.op == "NotIn" for v in r.values}
            if not allowed - excluded:
                return True
    return False


def requirement_implies(a: Requirement, b: Requirement) -> bool:
    """Every label set ``a`` accepts, ``b`` accepts."""
    if a == b:
        return True
    if a.key != b.key:
        return False
    if a.op == "In":
        if b.op == "In":
            return set(a.values) <= set(b.values)
        if b.op == "Exists":
            return True
        if b.op == "NotIn":
            return not set(a.values) & set(b.values)
        return not a.values  # DoesNotExist: only an In that matches nothing
    if a.op == "NotIn":
        return b.op == "NotIn" and set(b.values) <= set(a.values)
    if a.op == "DoesNotExist":
        return b.op == "NotIn" or b.op == "DoesNotExist"
    return False  # Exists implies only itself


@functools.lru_cache(maxsize=1 << 16)
def selector_implies(a: Selector, b: Selector) -> bool:
    """Whatever ``a`` matches, ``b`` matches: each of ``b``'s requirements follows from one of ``a``'s."""
    if unsatisfiable(a):
        return True
    return all(any(requirement_implies(x, y) for x in a.requirements) for y in b.requirements)


def peer_dead(peer: Peer) -> bool:
    """A peer no address can ever match."""
    if isinstance(peer, PodPeer):
        return unsatisfiable(peer.namespaces) or unsatisfiable(peer.pods)
    return any(subnet_of(peer.cidr, e) for e in peer.excepts)


def _block_covers(big: IPBlock, small: IPBlock) -> bool:
    if not subnet_of(small.cidr, big.cidr):
        return False
    keys, lengths = _except_keys(small) if big.excepts else (frozenset(), ())
    for hole in big.excepts:
        if hole.version != small.version or not hole.overlaps(small.cidr):
            continue
        if not any(_block_key(hole, bits) in keys for bits in lengths if bits <= hole.prefixlen):
            return False  # part of ``small`` may fall into ``big``'s hole: no except of it holds this one
    return True


@functools.lru_cache(maxsize=1 << 12)
def _except_keys(block: IPBlock) -> tuple[frozenset[Key], tuple[int, ...]]:
    """``block``'s excepts as keys (``_block_key``) and their prefix lengths: a hole lies in one
    of them when its supernet of one of those lengths is among them. Comparing every hole with
    every except, 200 blocks of 86 excepts each in 50 equal policies took 100 s."""
    keys = frozenset(_block_key(e, e.prefixlen) for e in block.excepts)
    return keys, tuple(sorted({e.prefixlen for e in block.excepts}))


def peer_covers(big: Peer, small: Peer) -> bool:
    """Every address ``small`` matches, ``big`` matches."""
    if peer_dead(small):
        return True
    if isinstance(big, PodPeer) and isinstance(small, PodPeer):
        return selector_implies(small.namespaces, big.namespaces) and selector_implies(small.pods, big.pods)
    if isinstance(big, IPBlock) and isinstance(small, IPBlock):
        return _block_covers(big, small)
    return False


# --- finding covering peers without comparing every pair ------------------------------------
#
# A key scheme for long peer lists (10k ipBlocks in one rule): whenever ``peer_covers(big, small)``,
# some key of ``peer_probes(small)`` is among ``peer_anchors(big)``, so only peers sharing a key
# need comparing. A block is covered only by blocks whose CIDR holds it (at most 129 supernets);
# a pod peer only by peers one of whose requirements (the one ``peer_anchors`` chose: any will
# do, as a covered peer implies them all) it implies; a dead peer by anything.

Key = Hashable
ANY_KEY = ("any",)  # among every peer's anchors: what a dead peer probes


def _anchor_keys(side: str, req: Requirement, fine: int | None = None) -> list[Key]:
    """Where a peer anchored by ``req`` is found: any of an ``In``'s values (at most ``fine`` of
    them), else the key, which ``peer_probes`` holds for every requirement too."""
    if req.op == "In" and (fine is None or len(req.values) <= fine):
        return [(side, req.key, "=", value) for value in req.values]
    return [(side, req.key)]


def _block_key(cidr: Network, bits: int) -> Key:
    """The supernet of ``cidr`` with prefix length ``bits``, as a cheap key."""
    return ("block", cidr.version, bits, int(cidr.network_address) >> (cidr.max_prefixlen - bits))


def peer_anchors(
    peer: Peer, probed: Callable[[Key], int] = lambda _: 0, fine: int | None = None
) -> list[Key]:
    """Keys under which ``peer`` is found as a possible cover of others: those of one of its
    requirements (each peer it covers implies every one of them), the one whose keys the fewest
    probes look up (``probed``; on a tie the first, pods before namespaces, ``In`` first). By the
    pod side alone, 8,000 policies for one database, each from `app=c<i % 7>` pods of its own
    namespace, compared each rule with a seventh of the others. ``fine``: see ``_anchor_keys``."""
    if isinstance(peer, IPBlock):
        return [ANY_KEY, _block_key(peer.cidr, peer.cidr.prefixlen)]
    every = [
        (side, req)
        for side, sel in (("pods", peer.pods), ("namespaces", peer.namespaces))
        for req in sel.requirements
    ]
    found = sorted(every, key=lambda chosen: chosen[1].op != "In")
    if not found:
        return [ANY_KEY, ("pods-all",)]
    side, req = min(found, key=lambda chosen: sum(map(probed, _anchor_keys(chosen[0], chosen[1], fine))))
    return [ANY_KEY, *_anchor_keys(side, req, fine)]


def peer_probes(peer: Peer) -> list[Key]:
    """Keys to look up for the peers that may cover ``peer``."""
    if peer_dead(peer):
        return [ANY_KEY]
    if isinstance(peer, IPBlock):
        return [_block_key(peer.cidr, bits) for bits in range(peer.cidr.prefixlen + 1)]
    keys: list[Key] = [("pods-all",)]
    for side, selector in (("pods", peer.pods), ("namespaces", peer.namespaces)):
        for req in selector.requirements:
            keys.append((side, req.key))
            if req.op == "In":
                keys.append((side, req.key, "=", req.values[0]))
    return keys


class _Covers:
    """Peers by anchor key, answering "does one of them cover this peer?" without a full scan."""

    def __init__(self, peers: Iterable[Peer]) -> None:
        self._by_anchor: dict[Key, list[Peer]] = defaultdict(list)
        for peer in peers:
            for key in peer_anchors(peer):
                self._by_anchor[key].append(peer)

    def cover(self, small: Peer) -> bool:
        return any(peer_covers(b, small) for key in peer_probes(small) for b in self._by_anchor.get(key, ()))


@functools.lru_cache(maxsize=64)
def _covers(peers: tuple[Peer, ...]) -> _Covers:
    return _Covers(peers)


def peers_cover(big: tuple[Peer, ...] | None, small: tuple[Peer, ...] | None) -> bool:
    """``None`` is every address; a tuple is the union of its peers."""
    if big is None:
        return True
    if small is None:
        return False
    if len(big) * len(small) <= 256:
        return all(any(peer_covers(b, s) for b in big) for s in small)
    index = _covers(big)
    return all(index.cover(s) for s in small)


def _spec_covered(spec: PortSpec, by: tuple[PortSpec, ...]) -> bool:
    same = [b for b in by if b.protocol == spec.protocol]
    if any(b.port is None for b in same):
        return True
    if spec.port is None:
        return False
    if isinstance(spec.port, str):
        return any(b.port == spec.port for b in same)
    lo, hi = spec.port, spec.end_port or spec.port
    return any(a <= lo and hi <= b for a, b in port_spans(same))


def ports_cover(big: tuple[PortSpec, ...], small: tuple[PortSpec, ...]) -> bool:
    """``()`` is every protocol and port; otherwise the union of the specs."""
    if not big:
        return True
    if not small:
        return False
    return all(_spec_covered(s, big) for s in small)


def rule_covers(big: Rule, small: Rule) -> bool:
    """Every connection ``small`` allows, ``big`` allows."""
    return peers_cover(big.peers, small.peers) and ports_cover(big.ports, small.ports)
