"""Remove duplicate and shadowed rules and peers.

A rule is shadowed when another rule allows everything it allows (its peers and ports are
covered, see ``cover``) for every pod it applies to: a rule of the same policy and direction,
or of another policy of the same namespace and networks whose selector matches at least the
pods this policy's selector matches. Within a rule, a peer covered by another peer goes too.

Sound because a pod's side of a connection is allowed when *any* rule of *any* policy
selecting it allows it: removing a rule that a kept rule of a policy selecting the same pods
covers changes no answer. Rules are dropped one at a time against the rules still kept (a
dropped rule never justifies dropping another), so two equal rules cannot remove each other.
Rule lists only shrink; whether a policy isolates a direction never changes here.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import TypeVar

from ..ir import DIRECTIONS, EVERYWHERE, Direction, Peer, PodPeer, Policy, Program, Rule
from .cover import ANY_KEY, peer_anchors, peer_covers, peer_probes, rule_covers
from .rewrite import with_rules

T = TypeVar("T")
PAIRED = 256  # the most pairs of keys one rule looks up (``_group``)


def keep_maximal(
    items: Sequence[T],
    covers: Callable[[T, T], bool],
    anchors: Callable[[T], Iterable[Hashable]] = lambda _: (None,),
    probes: Callable[[T], Iterable[Hashable]] = lambda _: (None,),
) -> list[T]:
    """Items no kept item covers, in first-seen order; for each dropped item a kept one covers it
    (``covers`` must be transitive in meaning, as set inclusion is).

    Only items sharing a key are compared: whenever ``covers(a, b)``, some key of ``probes(b)``
    must be among ``anchors(a)`` (the defaults, one key for all, compare every pair).
    """
    kept: dict[int, T] = {}
    by_anchor: dict[Hashable, list[int]] = defaultdict(list)
    by_probe: dict[Hashable, list[int]] = defaultdict(list)
    for n, item in enumerate(items):
        item_probes, item_anchors = list(probes(item)), list(anchors(item))
        if any(k in kept and covers(kept[k], item) for key in item_probes for k in by_anchor.get(key, ())):
            continue
        for key in item_anchors:
            for k in by_probe.get(key, ()):
                if k in kept and covers(item, kept[k]):
                    del kept[k]
        kept[n] = item
        for key in item_anchors:
            by_anchor[key].append(n)
        for key in item_probes:
            by_probe[key].append(n)
    return list(kept.values())


def _without_shadowed_peers(rule: Rule) -> Rule:
    if rule.peers is None or len(rule.peers) < 2:
        return rule
    peers: list[Peer] = keep_maximal(rule.peers, peer_covers, peer_anchors, peer_probes)
    return rule if len(peers) == len(rule.peers) else Rule(peers, rule.ports)


_EVERY_PEER = ("rule: every peer",)


def _rule_anchors(item: tuple[int, Rule], probed: Callable[[Hashable], int]) -> list[Hashable]:
    """A rule covers another only if its peers cover the other's first peer (or it has no peer
    list): keyed by its peers' anchors, a namespace of a thousand rules compares far fewer than
    every pair (``keep_maximal``)."""
    peers = item[1].peers
    if peers is None:
        return [ANY_KEY, _EVERY_PEER]
    return list(dict.fromkeys((ANY_KEY, *(key for peer in peers for key in peer_anchors(peer, probed)))))


def _rule_probes(item: tuple[int, Rule]) -> list[Hashable]:
    peers = item[1].peers
    if peers is None:
        return [_EVERY_PEER]
    if not peers:  # no peer: any rule covers it
        return [ANY_KEY]
    return [_EVERY_PEER, *peer_probes(peers[0])]


# the most values of an `In` a policy's selector is anchored by one by one, else by its key: paired
# with a rule's anchors, each of an `In`'s 50 values made a rule of 250 anchors 12,750 pairs
FINE = 4


def _group(policies: list[tuple[int, Policy]], direction: Direction) -> dict[int, tuple[Rule, ...]]:
    """The surviving rules of each policy of one namespace/networks group, for one direction.

    Rules are keyed by their peers and by their policy's selector together (a pair of keys, one
    of each, ``keep_maximal``): a rule is compared only with rules that may cover it *and* whose
    policy may select every pod its own does (by its peers alone where the pairs would be many).
    By peers alone, 8,000 policies each selecting its own `app` and allowing the same peer
    compared every pair (136 s)."""
    selectors = {i: PodPeer(EVERYWHERE, p.pod_selector) for i, p in policies}  # a selector as a peer
    items = [(i, _without_shadowed_peers(r)) for i, p in policies for r in p.rules(direction) or ()]
    rule_probes = {id(item): _rule_probes(item) for item in items}
    selector_probes = {i: peer_probes(peer) for i, peer in selectors.items()}
    probed = Counter(key for item in items for key in rule_probes[id(item)])
    selector_probed = Counter(key for i, _ in items for key in selector_probes[i])
    selector_anchors = {
        i: peer_anchors(peer, selector_probed.__getitem__, FINE) for i, peer in selectors.items()
    }

    def anchors(item: tuple[int, Rule]) -> list[Hashable]:
        found = _rule_anchors(item, probed.__getitem__)
        return [*found, *(("both", r, s) for r in found for s in selector_anchors[item[0]])]

    def probes(item: tuple[int, Rule]) -> list[Hashable]:
        """Pairs of keys, or where there would be more than ``PAIRED`` (selectors and peers of
        thousands of requirements: their product was 28 million keys, 6 GiB) the peers' alone,
        which every rule is anchored by too."""
        found, wider = rule_probes[id(item)], selector_probes[item[0]]
        if len(found) * len(wider) > PAIRED:
            return found
        return [("both", r, s) for r in found for s in wider]

    def covers(big: tuple[int, Rule], small: tuple[int, Rule]) -> bool:
        """``big``'s policy selects every pod ``small``'s does (asked of the pairs compared only:
        every pair of 8,000 policies was 64 million answers held at once), and its rule covers."""
        return peer_covers(selectors[big[0]], selectors[small[0]]) and rule_covers(big[1], small[1])

    out: dict[int, list[Rule]] = {i: [] for i, _ in policies}
    for i, rule in keep_maximal(items, covers, anchors, probes):
        out[i].append(rule)
    return {i: tuple(rules) for i, rules in out.items()}


def remove_shadowed(program: Program) -> Program:
    groups: dict[tuple[str, tuple[str, ...]], list[tuple[int, Policy]]] = defaultdict(list)
    for i, policy in enumerate(program.policies):
        groups[(policy.namespace, policy.policy_for)].append((i, policy))
    out = list(program.policies)
    for members in groups.values():
        for direction in DIRECTIONS:
            governing = [(i, p) for i, p in members if p.rules(direction) is not None]
            for i, rules in _group(governing, direction).items():
                if rules != out[i].rules(direction):
                    out[i] = with_rules(out[i], direction, rules)
    return Program(tuple(out))
