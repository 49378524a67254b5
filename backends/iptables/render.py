"""iptables-restore + ipset restore text for a lowered program.

Rendering only: every decision was made in ``lower``; this module spells it in iptables
syntax (and splits port lists into the 15 slots a multiport match holds). Text from input reaches the output only as comments, and only after ``comment``
reduces it to a safe alphabet (names are DNS-1123 already; this is defence in depth).
"""

from __future__ import annotations

import functools
import heapq
import ipaddress
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from itertools import repeat
from operator import itemgetter

import attrs
import jinja2

from ... import __version__
from ...ir import DIRECTIONS, EVERYWHERE, Direction, PodPeer, merge_intervals
from ...lower import (
    LONG_CHAIN,
    Chain,
    Dispatch,
    FamilyProgram,
    Lowered,
    Match,
    SetSpec,
    chain_set_tests,
    digest,
    plain_cidr,
    tested,
    tests,
)
from ...resolve import Entry, Resolved
from ..base import Members, member_changes, per_program, sanitise, template_environment
from ..dispatch import dispatch_by_address
from .branches import Plan, plan
from .mark_tree import (
    Feed,
    Flag,
    Group,
    Marks,
    Shape,
    Tree,
    TreeChain,
    map_entries,
    shape,
    tree,
)
from .names import Names, names_of

SET_TYPES = {"pods": "hash:ip", "net": "hash:net", "port": "hash:ip,port"}
LIST_SET = "list:set"
PORT_SET = "bitmap:port"
# the protocols whose ports a ``bitmap:port`` matches (the kernel's ``ip_set_get_ip_port``): an
# SCTP packet's port is never in one, so SCTP ports are not listed in a ``PortList``
BITMAP_PROTOCOLS = ("TCP", "UDP")
PORTS_LISTED = 15  # most numeric ports a ``PortList``'s bitmap holds (each port is an entry)
# A list must save this many rules (``folded``): each is one more kernel set, and creating a set
# costs the kernel a walk of every set there is (at the catalogue L, every list: 9,575 lists,
# 105 rules per packet; lists saving two or more: 7,300 lists, 107 rules per packet). In a chain
# of ``LONG_CHAIN`` matches, where packets meet many rules, one saved rule is enough (as
# ``lower._gathered`` makes a set of two peers there); such chains are few.
FOLDED = 2
# Which end of the packet is the local pod and which the remote peer, per direction.
LOCAL: Mapping[Direction, str] = {"ingress": "dst", "egress": "src"}
REMOTE: Mapping[Direction, str] = {"ingress": "src", "egress": "dst"}
MULTIPORT_MAX = 15  # iptables multiport slots; a range takes two


def comment(text: str) -> str:
    """A double-quoted iptables comment that no input can break out of (max 256 bytes)."""
    return '"' + sanitise(text, 250) + '"'


def chunk_ports(spans: Sequence[tuple[int, int]]) -> list[tuple[tuple[int, int], ...]]:
    """Split into groups that fit one multiport match (a range uses two of its 15 slots)."""
    groups: list[tuple[tuple[int, int], ...]] = []
    current: list[tuple[int, int]] = []
    used = 0
    for span in spans:
        cost = 1 if span[0] == span[1] else 2
        if used + cost > MULTIPORT_MAX:
            groups.append(tuple(current))
            current, used = [], 0
        current.append(span)
        used += cost
    if current:
        groups.append(tuple(current))
    return groups


@attrs.frozen(cache_hash=True)
class ListSet:
    """A ``list:set`` of peer sets: an address matches if any member holds it (a member's
    ``nomatch`` entry excludes from that member only, as that member's own rule did). Its
    members are set names, named by the policies alone, so pod churn never touches it, and its
    name is a digest of theirs: the same peers make one list wherever they meet."""

    family: int
    members: tuple[SetSpec, ...]

    @property
    def name(self) -> str:
        return f"l{self.family}-{digest('list', self.family, tuple(m.name for m in self.members))}"


@attrs.frozen(cache_hash=True)
class PortList:
    """The destination ports of one peer's matches as one set test, where one of them names a
    port: a ``list:set`` of the named ports' sets (``hash:ip,port``, each pod with its port) and
    a ``bitmap:port`` of the numeric ports, tested ``dst,dst`` (the bitmap reads the first: the
    port). A packet meets one rule where it met one per named port and one per port list. The
    rule keeps its ``-p``: the bitmap holds port numbers of TCP and UDP alike (and matches no
    other protocol's: ``BITMAP_PROTOCOLS``). Without named ports, the list holds the bitmap
    alone and stands for one peer's TCP and UDP matches on the same ports, in a rule without
    ``-p`` (``_either_transport``). Named by the policies alone, like ``ListSet``: pod churn
    changes the named ports' members, never these."""

    family: int
    named: tuple[SetSpec, ...]
    ports: tuple[tuple[int, int], ...]

    @property
    def name(self) -> str:
        held = (tuple(s.name for s in self.named), self.ports)
        return f"l{self.family}-{digest('ports', self.family, held)}"

    @property
    def numbers(self) -> str | None:
        """The bitmap's name, if there are numeric ports: of no family (``t0-``), one set for
        both families' lists (each set created costs the kernel a walk of every set there is)."""
        return f"t0-{digest('ports', self.ports)}" if self.ports else None

    @property
    def entries(self) -> list[str]:
        """The bitmap's members as ``ipset save`` prints them: one per port."""
        return [str(port) for lo, hi in self.ports for port in range(lo, hi + 1)]


Test = tuple[SetSpec, bool]  # a set, and whether the address must be out of it (``lower.tests``)


@attrs.frozen(cache_hash=True)
class Rule:
    """One rule of a policy chain (before its ports are split into multiport matches): a match, or
    with ``listed`` the matches of one chain that differ only in one set their peers test, as
    one test of those sets' ``list:set`` beside the tests the peers share (``match`` then has no
    peer); with ``ports``, the match's destination ports are that list's (``PortList``)."""

    match: Match
    listed: ListSet | None = None
    beside: tuple[Test, ...] = ()
    ports: PortList | None = None


def _port_lists(matches: tuple[Match, ...]) -> list[tuple[Match, PortList | None]]:
    """``matches`` with those of one protocol and peer, one naming a port, as one match (at the
    first's place) and its ``PortList``: (A and port 80) or (A and pod's http) is A and one
    lookup of the packet's port. Not where a match of the peer allows every port (it makes
    the rest moot), where the numeric ports would exceed ``PORTS_LISTED`` entries, or for SCTP
    (``BITMAP_PROTOCOLS``)."""
    alike: dict[tuple[str | None, SetSpec | None], list[Match]] = {}
    for m in matches:
        alike.setdefault((m.protocol, m.peer), []).append(m)
    lists: dict[tuple[str | None, SetSpec | None], PortList] = {}
    for key, found in alike.items():
        named = sorted({m.named_port for m in found if m.named_port is not None}, key=lambda s: s.name)
        if key[0] not in BITMAP_PROTOCOLS or not named or len(found) < 2:
            continue
        if any(not (m.ports or m.named_port) for m in found):
            continue
        spans = tuple(merge_intervals(span for m in found for span in m.ports))  # a set holds a port once
        if _bitmap_holds(spans):
            lists[key] = PortList(named[0].family, tuple(named), spans)
    out: list[tuple[Match, PortList | None]] = []
    done: set[tuple[str | None, SetSpec | None]] = set()
    for m in matches:
        key = (m.protocol, m.peer)
        if key not in lists:
            out.append((m, None))
        elif key not in done:
            done.add(key)
            out.append((attrs.evolve(m, ports=(), named_port=None), lists[key]))
    return out


def _either_transport(units: list[tuple[Match, PortList | None]]) -> list[tuple[Match, PortList | None]]:
    """A peer's TCP and UDP matches on the same numeric ports as one (at the first's place), its
    ports a ``PortList`` of the bitmap alone and no protocol: a ``bitmap:port`` matches a TCP or
    UDP packet's port and no other protocol's (the kernel's ``ip_set_get_ip_port``), so one rule
    without ``-p`` allows what the two allowed. Every namespace's DNS egress (TCP and UDP 53 to
    kube-dns) was two rules on every packet's path. Not for "any peer" (a list is of one family)."""
    keys = [_transport(m, port_list) for m, port_list in units]
    protocols: dict[_Transport, set[str | None]] = {}
    for (m, _), key in zip(units, keys, strict=True):
        if key is not None:
            protocols.setdefault(key, set()).add(m.protocol)
    out: list[tuple[Match, PortList | None]] = []
    done: set[_Transport] = set()
    for (m, port_list), key in zip(units, keys, strict=True):
        if key is None or len(protocols[key]) < 2:
            out.append((m, port_list))
        elif key not in done:
            done.add(key)
            out.append((attrs.evolve(m, protocol=None, ports=()), PortList(key[0].family, (), key[1])))
    return out


_Transport = tuple[SetSpec, tuple[tuple[int, int], ...]]  # a peer and numeric ports


def _transport(match: Match, port_list: PortList | None) -> _Transport | None:
    """The peer and ports of a match of TCP or UDP numeric ports, as few as a ``PortList``'s
    bitmap holds; None for any other match. Overlapping spans (a lowering without passes keeps
    them) are merged: the bitmap holds a port once."""
    if port_list is not None or match.peer is None or match.protocol not in BITMAP_PROTOCOLS:
        return None
    if match.named_port is not None or not match.ports:
        return None
    spans = tuple(merge_intervals(match.ports))
    return (match.peer, spans) if _bitmap_holds(spans) else None


def _bitmap_holds(spans: Sequence[tuple[int, int]]) -> bool:
    """Whether a ``PortList``'s bitmap may hold these ports: one entry per port."""
    return sum(hi - lo + 1 for lo, hi in spans) <= PORTS_LISTED


def _choices(match: Match) -> tuple[tuple[tuple[Test, ...], SetSpec], ...]:
    """The ways a peer's tests can be split into the ones a list shares and the one it varies:
    each positive test, the last first. Peers of a rule listed one by one, or ``lower``'s parts
    of one namespace's selectors, differ in their last test (a namespace's pods by ``app``); peers
    of many namespaces under one pod selector differ in their first (the namespace's part)."""
    if match.peer is None or plain_cidr(match.peer) is not None:
        return ()
    found = tests(match.peer)
    return tuple(
        (found[:i] + found[i + 1 :], spec)
        for i, (spec, out) in reversed(list(enumerate(found)))
        # with group marks ``everyone`` is itself a list, and no list holds a list
        if not out and spec.key != EVERYONE
    )


# what the matches folded into one list share: protocol, ports, named port, port list, other tests
_Shared = tuple[str | None, tuple[tuple[int, int], ...], SetSpec | None, PortList | None, tuple[Test, ...]]


_Option = tuple[_Shared, SetSpec]  # a match's shared tests (with its ports), and the set it varies


@functools.lru_cache(maxsize=1 << 16)
def folded(matches: tuple[Match, ...]) -> tuple[Rule, ...]:
    """A chain's matches as rules. A rule that lists peers one by one (or a peer ``lower`` split
    into its values) is a match per peer and port list. The matches of one protocol and ports
    whose peers' tests differ in one set become one rule testing a ``list:set`` of those sets
    (an address is in (A and B) or (A and C) if it is in A and in one of B, C): the first packet
    meets one rule where it met one per peer (the longest chain of the catalogue M went from 42
    rules to 7). A match varies its last test, or, where that makes fewer rules, the test whose
    list holds the most (``_covering``: (A and C) or (B and C) is one of A, B and in C: peers of
    many namespaces under one pod selector). The members are looked up as before, in the kernel
    instead of along the rule walk. A chain's rules only set the allow bit, so their order is
    free. Only members whose list saves ``FOLDED`` rules of the chain are listed: two peers
    under one port list stay two rules, but become one in a chain of ``LONG_CHAIN`` matches (a
    peer's port list counted once). A peer's ports are first made one (``_port_lists``), and
    its TCP and UDP matches of the same ports one (``_either_transport``)."""
    units = _either_transport(_port_lists(matches))
    if len(units) < 2:  # nothing to share a list with
        return tuple(Rule(m, ports=port_list) for m, port_list in units)
    options = [
        [((m.protocol, m.ports, m.named_port, port_list, rest), spec) for rest, spec in _choices(m)]
        for m, port_list in units
    ]
    least = 1 if len(units) >= LONG_CHAIN else FOLDED
    picked = [found[0] if found else None for found in options]
    last = _listed(units, picked, least)
    if all(len(found) < 2 for found in options):
        return last
    greedy = _covering(options)
    if greedy == picked:
        return last
    covering = _listed(units, greedy, least)
    return covering if _lines(covering) < _lines(last) else last


def _covering(options: list[list[_Option]]) -> list[_Option | None]:
    """Each match's option, greedily: the shared tests most matches can share first (a set
    cover's greedy choice; ties to a match's last test, then to the first match)."""
    holders: dict[_Shared, list[tuple[int, SetSpec]]] = {}
    order: dict[_Shared, tuple[int, int]] = {}
    for i, found in enumerate(options):
        for rank, (shared, spec) in enumerate(found):
            holders.setdefault(shared, []).append((i, spec))
            order.setdefault(shared, (rank, i))
    heap = [(-len(held), order[shared], shared) for shared, held in holders.items()]
    heapq.heapify(heap)
    picked: list[_Option | None] = [None] * len(options)
    while heap:
        count, _, shared = heapq.heappop(heap)
        free = [(i, spec) for i, spec in holders[shared] if picked[i] is None]
        if len(free) < -count:  # others took some since it was counted: count it again
            holders[shared] = free
            if free:
                heapq.heappush(heap, (-len(free), order[shared], shared))
            continue
        for i, spec in free:
            picked[i] = (shared, spec)
    return picked


def _listed(
    units: list[tuple[Match, PortList | None]], picked: list[_Option | None], least: int
) -> tuple[Rule, ...]:
    """The rules of ``units`` where each varies the set ``picked`` says (None: it varies none);
    a list is made where it saves ``least`` rules."""
    # each group's sets once, kept in a dict and decided per key, not per match: a rule listing
    # 400 peers under 100 named ports spent 26 s comparing sets in lists and hashing lists
    groups: dict[_Shared, dict[SetSpec, None]] = {}
    for option in picked:
        if option is not None:
            groups.setdefault(option[0], {})[option[1]] = None
    lists = {
        key: tuple(sorted(found, key=lambda s: s.name)) for key, found in groups.items() if len(found) > 1
    }
    if not lists:  # no two matches vary the same shared tests: each its own rule
        return tuple(Rule(m, ports=port_list) for m, port_list in units)
    saved: Counter[tuple[SetSpec, ...]] = Counter()
    for (_, ports, _, _, _), members in lists.items():
        saved[members] += (len(members) - 1) * len(chunk_ports(ports) or [()])
    kept = {key: members for key, members in lists.items() if saved[members] >= least}
    out: list[Rule] = []
    done: set[_Shared] = set()
    for (m, port_list), option in zip(units, picked, strict=True):
        key = option[0] if option is not None else None
        members = kept.get(key, ()) if key is not None else ()
        if key is None or not members:
            out.append(Rule(m, ports=port_list))
        elif key not in done:
            done.add(key)
            listed = ListSet(members[0].family, members)
            out.append(Rule(attrs.evolve(m, peer=None), listed, key[4], port_list))
    return tuple(out)


def _lines(rules: tuple[Rule, ...]) -> int:
    return sum(len(split_match(r.match)) for r in rules)


def split_match(match: Match) -> list[Match]:
    """One match per iptables rule: ports beyond one multiport match's slots take more rules."""
    if len(match.ports) <= 1:
        return [match]
    return [attrs.evolve(match, ports=group) for group in chunk_ports(match.ports)]


@per_program
def policy_rules(chain: Chain, names: Names, marks: Marks) -> tuple[str, ...]:
    """A policy chain's ``-A`` lines, the cheapest to refuse first (``_refusal_cost``). A rule
    marks the packet allowed and does not end the chain, so every rule but the first (its
    dispatch rule tested the bit) tests the bit first: once one rule allowed the packet, each
    later rule costs it a mark compare instead of its sets. Once per chain object: the agent's
    memo hands a policy change the chains of every unchanged policy again, so only the changed
    ones are spelled."""
    name = names.chain(chain.name)
    tail = f" -m comment --comment {comment(chain.comment)}{marks.verdict(allowed=True)}"
    parts = [
        _match_text(m, chain.direction, names, r)
        for r in sorted(folded(chain.matches), key=_refusal_cost)
        for m in split_match(r.match)
    ]
    unset = marks.unallowed()
    return tuple(
        f"-A {name}{head}{unset if i else ''}{ports}{sets}{tail}"
        for i, (head, ports, sets) in enumerate(parts)
    )


def _refusal_cost(rule: Rule) -> int:
    """What a rule costs a packet it does not allow, by its first test (``_match_text``): an
    address or a port compared (native, under iptables-nft too), a ``multiport`` (an ``xt``
    match), a set (``xt_set``): 32, 91 and 163 ns under iptables-nft (``match_cost.py``). The
    rules of a policy chain only set the allow bit, so their order is free: cheapest first, a
    packet a later rule allows pays least for the rules before it."""
    match = rule.match
    if plain_cidr(match.peer) is not None or (match.protocol and len(match.ports) == 1):
        return 0
    return 1 if match.protocol and match.ports else 2


def render_match(match: Match, direction: Direction, names: Names, rule: Rule | None = None) -> str:
    """Spelled in the order iptables-save prints it, so a saved table diffs cleanly. The kernel
    tests a rule's matches in order and stops at the first that fails: the port (a compare)
    before the peer's sets (a hash lookup each), which most packets of other ports never reach.
    ``rule``'s list of peers is tested where the peer would be, after their shared tests; its
    port list last, where a named port would be."""
    return "".join(_match_text(match, direction, names, rule))


def _match_text(match: Match, direction: Direction, names: Names, rule: Rule | None) -> tuple[str, str, str]:
    """``render_match`` in three: what iptables-save prints first whatever the order given (the
    address and protocol of the rule's entry), the port match, the set matches."""
    head: list[str] = []
    ports: list[str] = []
    parts: list[str] = []
    cidr = plain_cidr(match.peer)
    if cidr is not None:
        head.append(f"{'-s' if REMOTE[direction] == 'src' else '-d'} {cidr}")
    if match.protocol:
        head.append(f"-p {match.protocol.lower()}")
        proto = match.protocol.lower()
        if len(match.ports) == 1:
            lo, hi = match.ports[0]
            ports.append(f"-m {proto} --dport {lo}" + (f":{hi}" if hi != lo else ""))
        elif match.ports:
            spans = ",".join(f"{lo}:{hi}" if hi != lo else str(lo) for lo, hi in match.ports)
            ports.append(f"-m multiport --dports {spans}")
    if match.peer is not None and cidr is None:
        parts.append(set_tests(match.peer, REMOTE[direction], names).lstrip())
    if rule is not None and rule.listed is not None:
        parts.append(spelled((*rule.beside, (rule.listed, False)), REMOTE[direction], names).lstrip())
    if match.named_port is not None:
        parts.append(f"-m set --match-set {names.set(match.named_port.name)} dst,dst")
    if rule is not None and rule.ports is not None:
        parts.append(f"-m set --match-set {names.set(rule.ports.name)} dst,dst")
    head_text, port_text, set_text = ("".join(" " + p for p in found) for found in (head, ports, parts))
    return head_text, port_text, set_text


def inlined(chain: Chain, marks: Marks) -> Rule | None:
    """A policy chain of one rule of one line, with group marks: each dispatch rule that would
    jump to it tests that rule itself (``dispatch_rule``), and the chain is not written. A
    packet of a pod it selects meets one rule where it met two, and an allowed one takes no
    jump. Flat dispatch keeps every chain."""
    if not marks.grouped:
        return None
    rules = folded(chain.matches)
    return rules[0] if len(rules) == 1 and len(split_match(rules[0].match)) == 1 else None


@per_program
def inlined_rules(program: FamilyProgram, marks: Marks) -> Mapping[str, Rule | None]:
    """``inlined`` per policy chain, by name: once per program, for the trie's weights, the
    dispatch rules and the chains written alike."""
    return {c.name: inlined(c, marks) for c in program.chains}


def dispatch_rule(
    entry: Dispatch,
    tested: Sequence[Test],
    direction: Direction,
    names: Names,
    marks: Marks,
    inline: Mapping[str, Rule | None],
    flags: Sequence[Flag] = (),
) -> str:
    """A dispatch trie group's rule for one entry, after ``-A <chain>``: a packet not allowed yet
    whose pod passes the entry's tests (``tests`` with the group's namespaces, less a branch's;
    ``flags``: the group's, one of which may stand for them) jumps to the policy chain, or meets
    its one rule here (``inlined``)."""
    unallowed, local = _unallowed(tested, direction, names, marks, flags)
    note = f" -m comment --comment {comment(entry.comment)}"
    rule = inline[entry.chain]
    if rule is None:
        return f"{unallowed}{local}{note} -j {names.chain(entry.chain)}"
    head, ports, sets = _match_text(rule.match, direction, names, rule)
    return f"{head}{unallowed}{ports}{local}{sets}{note}{marks.verdict(allowed=True)}"


def _unallowed(
    tested: Sequence[Test], direction: Direction, names: Names, marks: Marks, flags: Sequence[Flag]
) -> tuple[str, str]:
    """The matches of a packet not allowed yet whose pod passes ``tested``: one mark match where
    a flag stands for the tests (the packet not allowed yet and the flag set), else the allow
    bit's and the sets'."""
    flag = next((f.mark for f in flags if f.tests == tuple(tested)), 0) if tested else 0
    if flag:
        return marks.unallowed(flag), ""
    return marks.unallowed(), spelled(tested, LOCAL[direction], names)


def group_plan(chain: TreeChain) -> Plan:
    """A trie group's dispatch, branched by a label's values where that saves rules (``branches``;
    nf_tables' depth leaves a level for a branch chain below any group's)."""
    return plan(chain.group.dispatch, chain.group.namespaces)


def branch_chain(chain: TreeChain, index: int) -> str:
    return f"{chain.name}-{index:x}"


def group_rules(
    chain: TreeChain, direction: Direction, names: Names, marks: Marks, inline: Mapping[str, Rule | None]
) -> Iterable[str]:
    """The ``-A`` lines of a trie group's dispatch (``group_plan``): its chain's, then each
    branch's chain's."""
    found, flags = group_plan(chain), chain.flags
    for entry, local in found.plain:
        yield f"-A {chain.name}{dispatch_rule(entry, local, direction, names, marks, inline, flags)}"
    for i, branch in enumerate(found.branches):
        unallowed, test = _unallowed(((branch.test, False),), direction, names, marks, flags)
        yield f"-A {chain.name}{unallowed}{test} -g {branch_chain(chain, i)}"
    for i, branch in enumerate(found.branches):
        for entry, local in branch.entries:
            rule = dispatch_rule(entry, local, direction, names, marks, inline, flags)
            yield f"-A {branch_chain(chain, i)}{rule}"


def written(program: FamilyProgram, marks: Marks) -> tuple[Chain, ...]:
    """The policy chains a file writes: with group marks, not those the dispatch inlines."""
    inline = inlined_rules(program, marks)
    return tuple(c for c in program.chains if not inline[c.name])


def past_dispatch(program: FamilyProgram, marks: Marks) -> dict[str, int]:
    """Per policy chain, the rules a packet its dispatch rule sends on meets: none where the
    dispatch rule is the chain's rule (``inlined``)."""
    inline = inlined_rules(program, marks)
    return {c.name: 0 if inline[c.name] else chain_rules(c.matches) for c in program.chains}


def set_tests(spec: SetSpec, where: str, names: Names) -> str:
    """`` -m set --match-set`` for each set an allowing test of ``spec`` tests (``tested``), ``!``
    for those it must not be in."""
    return spelled(tests(spec), where, names)


def spelled(found: Iterable[tuple[SetSpec | ListSet, bool]], where: str, names: Names) -> str:
    """`` -m set --match-set`` for each set, ``!`` for those an address must be out of."""
    return "".join(
        f" -m set {'! ' if out else ''}--match-set {names.set(s.name)} {where}" for s, out in found
    )


@attrs.frozen
class Layout:
    """Where npc's chains hang in their table (``home``). npc's own layout: one FORWARD jump into
    ``NPC-<tag>-FORWARD``, which dispatches to ``NPC-<tag>-EGRESS``/``-INGRESS``, each ending in a
    drop; with group marks (``Marks.grouped``) that chain writes each isolated pod's namespace
    group into the mark before the direction's jump. A dataplane whose own hooks call chains of fixed names (Weave
    Net's router) names them, its template (in its own package, extending ``iptables.rules.j2``'s
    blocks ``entry`` and ``verdict``), the families it carries and what its rules cost."""

    package: str = "npc.backends.iptables"  # whose templates/ holds ``template``
    template: str = "iptables.rules.j2"
    families: tuple[int, ...] = (4, 6)
    fixed: tuple[str, ...] = ()  # chains of fixed names it fills (default: npc's own three)
    kept: tuple[str, ...] = ()  # of those, chains the hooking tool created: emptied, never deleted
    direction_chains: Mapping[Direction, str] = attrs.field(factory=dict)
    forward_jump: bool = True  # npc inserts (and owns) one jump from FORWARD
    adopted_set_prefix: str | None = None  # sets of the tool it replaces, destroyed once unused
    replaces: str = ""  # that tool's name, for the load report
    entry_rules: int = 2  # the template's ``entry`` block
    verdict_rules: Mapping[Direction, int] = attrs.field(factory=lambda: {"egress": 1, "ingress": 1})
    per_packet: int = 3  # rules a first packet meets outside the dispatch (the FORWARD jump and entry)

    @property
    def hooked(self) -> str | None:
        """The chain the hooking tool jumps to (its flavour is the one to load into), if any."""
        return None if self.forward_jump else self.fixed[0]

    def passing(self, marks: Marks) -> int:
        """The rules every first packet meets outside the dispatch: ``per_packet`` and, with group
        marks, the pending bit's reset and per direction the map lookup and the verdict after the
        direction's jump in npc's FORWARD chain (the trie's root is the direction's chain, and its
        gotos return to FORWARD's)."""
        return self.per_packet + (1 + 2 * len(DIRECTIONS) if marks.grouped else 0)

    def carrying(self, lowered: Lowered) -> Layout:
        """This layout for the families ``lowered`` has (a network's ``--ip-families``): npc
        writes, loads and checks nothing of another, and an apply clears what it finds of one."""
        have = {program.family for program in lowered.families}
        families = tuple(f for f in self.families if f in have)
        return self if families == self.families else attrs.evolve(self, families=families)

    def fixed_chains(self, lowered: Lowered) -> list[str]:
        if self.fixed:
            return list(self.fixed)
        names = names_of(lowered)
        return [names.forward, *(names.direction(d) for d in DIRECTIONS)]

    def direction_chain(self, lowered: Lowered, direction: Direction) -> str:
        return self.direction_chains.get(direction) or names_of(lowered).direction(direction)

    def chain_names(self, lowered: Lowered, family: int, marks: Marks, table: str | None = None) -> list[str]:
        """Every chain this layout fills in one table of ``family`` (default: its home, the only
        one it fills), fixed ones first."""
        if table not in (None, home(marks)):
            return []
        found = trees(lowered, family, marks).values()
        policy = [names_of(lowered).chain(c.name) for c in written(lowered.family(family), marks)]
        branched = [
            name
            for t in found
            for c in t.chains
            for name in (c.name, *(branch_chain(c, i) for i in range(len(group_plan(c).branches))))
        ]
        return list(dict.fromkeys(self.fixed_chains(lowered) + policy + branched))  # a trie's root is fixed


TABLES = ("mangle", "filter")  # every table npc may hold chains in, in the order a packet meets them


def home(marks: Marks) -> str:
    """The one table all of npc's chains live in. With group marks it is mangle: ipset's
    ``--map-mark`` is refused elsewhere, and the trie must be replaced in the same commit as the
    codes it reads (each table of a restore commits on its own: split over two tables, a new
    trie met old codes between the commits, and a connection the policies allowed was dropped)."""
    return "mangle" if marks.grouped else "filter"


def commit_order(first: Collection[str]) -> list[str]:
    """The tables in the order a restore input writes (so commits) them: ``first`` (the tables
    the state being put in force holds), then the rest, which only lose what is left of npc's."""
    return sorted(TABLES, key=lambda table: table not in first)


@per_program
def trees(lowered: Lowered, family: int, marks: Marks) -> Mapping[Direction, Tree]:
    """The dispatch tries of one family; none when dispatch is flat. Once per program: every
    member delta's map sets are the tries' (tens of ms at scale)."""
    if not marks.grouped:
        return {}
    program = lowered.family(family)
    names = names_of(lowered)
    found = shapes(program, marks)
    return {d: tree(program, d, names, marks.group(d), found[d], marks.allow) for d in DIRECTIONS}


@per_program
def shapes(program: FamilyProgram, marks: Marks) -> Mapping[Direction, Shape]:
    """Per direction, the trie's groups, code lengths and flags (``mark_tree.shape``): the
    program's alone, so what the rules test is known without naming the sets."""
    length = past_dispatch(program, marks)

    def weight(group: Group) -> int:
        """The rules past the trie a packet of ``group`` meets when its pod is in the target of
        the longest policy chain (its dispatch's worst, branched, ``branches``): a short code
        for the group whose dispatch is long, or whose policies are. (Every chain's, a pod in every target, is a bound that ranks groups by
        policies no pod meets together: 1-3 rules worse at the mixed L.)"""
        found = plan(group.dispatch, group.namespaces)
        return found.worst + max((length[d.chain] for d, _ in group.dispatch), default=0)

    return {d: shape(program, d, marks.group(d), weight) for d in DIRECTIONS}


EVERYONE = (PodPeer(EVERYWHERE, EVERYWHERE),)  # the key of "every pod of the network"


@attrs.frozen
class Everyone:
    """With group marks, "every pod" (``namespaceSelector: {}``, as prometheus scrapes and DNS
    is allowed) is a ``list:set`` of the direction's map sets and ``rest``, the pods neither map
    holds, instead of a set of its own: the maps hold every isolated pod already, so the peer
    costs the pods no policy isolates, not a copy of the cluster (50,000 entries at the
    independent L, where 99% of pods are isolated). The map sets are named by the groups, so the
    list and ``rest`` are too: a policy change that regroups namespaces renames them."""

    spec: SetSpec  # the program's every-pod set, read for its members, never loaded
    maps: tuple[str, ...]  # kernel names, ingress's first: policies isolate more pods for ingress
    feeds: tuple[str, ...]  # the program's isolated sets the maps hold
    rest: str
    name: str  # the list's


@per_program
def everyone(lowered: Lowered, family: int, marks: Marks) -> Everyone | None:
    """``Everyone`` for ``family``, where a rule tests every pod and dispatch is by group."""
    found = trees(lowered, family, marks)
    program = lowered.family(family)
    spec = next((s for s in used_sets(program, marks) if s.kind == "pods" and s.key == EVERYONE), None)
    if spec is None or not found:
        return None
    names = names_of(lowered)
    maps = tuple(found[d].map_set for d in ("ingress", "egress"))  # the first lookup finds most pods
    feeds = tuple(iso for isolated in _map_sets(lowered, family, marks).values() for iso in isolated)
    rest = names.set(f"s{family}-{digest('rest', maps)}")
    return Everyone(spec, maps, feeds, rest, names.set(f"l{family}-{digest('everyone', maps, rest)}"))


@per_program
def rule_names(lowered: Lowered, marks: Marks) -> Names:
    """The names the rules spell: every pod as its list where there is one (``everyone``)."""
    prefix = names_of(lowered).set_prefix
    found = (everyone(lowered, f.family, marks) for f in lowered.families)
    return Names(lowered.tag, tuple((e.spec.name, e.name.removeprefix(prefix)) for e in found if e))


def _rest(found: Everyone, members: Mapping[str, Sequence[Entry]]) -> list[Entry]:
    """Every pod's entries that no map set holds, in ``resolve``'s order."""
    mapped = {text for iso in found.feeds for text, _ in members[iso]}
    return [e for e in members[found.spec.name] if e[0] not in mapped]


_TEXTS: dict[int, tuple[Sequence[Entry], frozenset[str]]] = {}


def _texts(entries: Sequence[Entry]) -> frozenset[str]:
    """A member list's texts as a set, remembered per list: the agent's members reuse the very
    list of a set no pod entered or left, so a pod event builds the sets of the lists it changed."""
    found = _TEXTS.get(id(entries))
    if found is None or found[0] is not entries:
        if len(_TEXTS) > 20_000:
            _TEXTS.clear()
        found = _TEXTS[id(entries)] = (entries, frozenset(text for text, _ in entries))
    return found[1]


def _rest_change(
    found: Everyone,
    old: Mapping[str, Sequence[Entry]],
    new: Mapping[str, Sequence[Entry]],
    changes: Mapping[str, tuple[list[Entry], list[Entry]]],
) -> tuple[list[Entry], list[Entry]]:
    """``rest``'s (removed, added) from the addresses that entered or left every pod's set or a
    map's feeds: a map's addresses are pods', so an address touched only by the maps is a pod's
    before and after, and whether it is in ``rest`` is whether a feed holds it (a few of a
    thousand sets tested per address, not the cluster's 50,000 compared per event)."""
    pods = changes.get(found.spec.name, ([], []))
    came, went = {t for t, _ in pods[1]}, {t for t, _ in pods[0]}
    touched = {
        t for name in (found.spec.name, *found.feeds) for part in changes.get(name, ()) for t, _ in part
    }

    def mapped(members: Mapping[str, Sequence[Entry]], text: str) -> bool:
        return any(text in _texts(members[iso]) for iso in found.feeds)

    removed: list[Entry] = []
    added: list[Entry] = []
    for text in sorted(touched, key=ipaddress.ip_address):
        was, now = text not in came and not mapped(old, text), text not in went and not mapped(new, text)
        if was != now:
            (added if now else removed).append((text, False))
    return removed, added


NPC_LAYOUT = Layout()


@functools.cache
def _environment(package: str) -> jinja2.Environment:
    """``package``'s templates, able to extend this package's."""
    env = template_environment(package)
    if package != NPC_LAYOUT.package:
        env.loader = jinja2.ChoiceLoader([env.loader, _environment(NPC_LAYOUT.package).loader])  # type: ignore[list-item]
    env.filters["comment"] = comment
    return env


def _jump(lowered: Lowered, target: str, new_only: bool = True) -> str:
    state = " -m conntrack ! --ctstate RELATED,ESTABLISHED" if new_only else ""
    return f"FORWARD{state} -m comment --comment {comment('npc network ' + lowered.network)} -j {target}"


def jump_rule(lowered: Lowered) -> str:
    """npc's one rule in a chain it does not own (FORWARD of its table); loading looks for
    exactly this text. Replies of allowed connections never enter npc's chains: a first packet
    meets no rule returning them."""
    return _jump(lowered, names_of(lowered).forward)


def older_jumps(lowered: Lowered) -> tuple[str, ...]:
    """The jumps of earlier npcs, which a load removes: into a FORWARD chain that returned
    replies first, and into mangle's chain that only wrote the group codes (its filter read them)."""
    names = names_of(lowered)
    return _jump(lowered, names.forward, new_only=False), _jump(lowered, names.mark)


def insert_jump(rule: str) -> str:
    """The restore line putting the FORWARD ``rule`` first."""
    return f"-I {rule.replace('FORWARD', 'FORWARD 1', 1)}"


def render_rules(
    lowered: Lowered,
    family: int,
    marks: Marks,
    edits: Mapping[str, Sequence[str]] | None = None,
    extra_chains: Mapping[str, Sequence[str]] | None = None,
    layout: Layout = NPC_LAYOUT,
) -> str:
    """An ``iptables-restore --noflush`` input for npc's table (``ip6tables-restore`` for 6), then
    the other table's edits. ``edits`` end each table's part (default: insert npc's FORWARD jump
    if the layout has it, as a boot-time restore needs); ``extra_chains`` are declared (so
    flushed) too, for edits that delete them."""
    program = lowered.family(family)
    names = rule_names(lowered, marks)
    direction_chain = {d: layout.direction_chain(lowered, d) for d in DIRECTIONS}
    found = trees(lowered, family, marks)
    table = home(marks)
    (away,) = (t for t in TABLES if t != table)
    if edits is None:
        edits = {table: [insert_jump(jump_rule(lowered))] if layout.forward_jump else []}
    extra = extra_chains or {}
    isolated = {d: found[d].map_set if found else names.set(s.name) for d, s in program.isolated.items()}
    return (
        _environment(layout.package)
        .get_template(layout.template)
        .render(
            version=__version__,
            network=comment(lowered.network)[1:-1],
            names=names,
            family=family,
            restore="iptables-restore" if family == 4 else "ip6tables-restore",
            home=table,
            away=away,
            chains=declaration_order(
                lowered,
                layout,
                layout.chain_names(lowered, family, marks) + list(extra.get(table, ())),
            ),
            away_chains=extra.get(away, ()),
            forward=names.forward,
            isolated=isolated,
            trees=found,
            direction_chain=direction_chain,
            local=LOCAL,
            mark=hex(marks.allow),
            unallowed=marks.unallowed(),
            reset=marks.verdict(allowed=False),
            settled=marks.verdict(allowed=True),
            dispatch=program.dispatch,
            set_tests=functools.partial(set_tests, names=names),
            group_rules=functools.partial(
                group_rules, names=names, marks=marks, inline=inlined_rules(program, marks)
            ),
            policy_rules="".join(  # joined here: tens of thousands of lines at L
                f"{rule}\n" for c in written(program, marks) for rule in policy_rules(c, names, marks)
            ),
            edits=edits.get(table, ()),
            away_edits=edits.get(away, ()),
        )
    )


@attrs.frozen
class SetText:
    name: str
    type: str
    family: str
    hashsize: int
    maxelem: int
    members: Sequence[Entry]
    options: str = ""  # after the create line's fixed fields (" skbinfo" for a map set)

    @property
    def adds(self) -> str:
        """The ``add`` lines (spelled here, not in the template: half a million at L)."""
        if not self.members:
            return ""
        add = f"add {self.name} "
        if not any(map(itemgetter(1), self.members)):  # the usual set: one join, no line by line
            return add + f"\n{add}".join(map(itemgetter(0), self.members)) + "\n"
        return "".join(f"{add}{m} nomatch\n" if no else f"{add}{m}\n" for m, no in self.members)

    def renamed(self, name: str) -> SetText:
        return attrs.evolve(self, name=name)

    def holding(self, name: str, members: Sequence[Entry]) -> SetText:
        """Another set of this kind under ``name`` with ``members``, with room for both its own
        members and this set's (it will become this set by member changes in place)."""
        other = set_text(name, self.type, 4, members, self.options)
        return attrs.evolve(
            other,
            family=self.family,
            hashsize=max(self.hashsize, other.hashsize),
            maxelem=max(self.maxelem, other.maxelem),
        )


def set_text(
    name: str, kind: str, family: int, members: Sequence[Entry], options: str = "", room: int | None = None
) -> SetText:
    """ipset's maxelem is fixed at creation: leave room to grow (past it, ``load.make_room``).
    A hash is sized for ``room`` members (default: as many as it has; ``set_makers`` counts
    them before working them out). A ``list:set`` has neither family nor hash,
    and its size (``maxelem`` here) fits its members: named by them, it never grows."""
    if kind == LIST_SET:
        return SetText(name, kind, "", 0, max(8, len(members)), members)
    if kind == PORT_SET:  # ports of any protocol, from its lowest to its highest
        ports = [int(p) for p, _ in members]
        return SetText(name, kind, "", 0, len(members), members, f" range {min(ports)}-{max(ports)}")
    size = len(members) if room is None else room
    hashsize = 1024
    while hashsize < size // 2 and hashsize < 1 << 20:
        hashsize *= 2
    return SetText(name, kind, "inet" if family == 4 else "inet6", hashsize, maxelem(size), members, options)


def maxelem(size: int) -> int:
    """A hash set's ``maxelem`` for ``size`` members: room to double, and never below ipset's
    default, so most sets never meet it."""
    out = 65536
    while out < 2 * size:
        out *= 2
    return out


@per_program
def set_tests_per_set(program: FamilyProgram, marks: Marks) -> Mapping[SetSpec, int]:
    """How often rules test each set: peers, named ports, and the dispatch's; with group marks
    only the targets a group still has to test, once per group (the isolated sets become the
    map sets' members)."""
    found = chain_set_tests(program)
    if marks.grouped:  # per group, as the trie's chains test them: a flag's tests are a mark bit's
        for shaped in shapes(program, marks).values():
            for group, flags in zip(shaped.groups, shaped.flags, strict=True):
                branched = plan(group.dispatch, group.namespaces)
                stand = {f.tests for f in flags}
                entries = [*branched.plain, *(e for b in branched.branches for e in b.entries)]
                found.update(s for _, local in entries if local not in stand for s, _ in local)
                found.update(b.test for b in branched.branches if ((b.test, False),) not in stand)
    else:
        found.update(program.isolated.values())
        found.update(s for ds in program.dispatch.values() for d in ds for s in tested(d.target))
    return found


def used_sets(program: FamilyProgram, marks: Marks) -> frozenset[SetSpec]:
    """The sets a rule tests."""
    return frozenset(set_tests_per_set(program, marks))


@per_program
def _map_sets(lowered: Lowered, family: int, marks: Marks) -> dict[str, dict[str, Feed]]:
    """Per map set of ``family``, by name: per isolated set feeding it, what its addresses
    carry."""
    return {
        found.map_set: map_entries(found, marks.group(found.direction))
        for found in trees(lowered, family, marks).values()
    }


@per_program
def restricting_sets(lowered: Lowered, marks: Marks, families: Sequence[int] = (4, 6)) -> frozenset[str]:
    """The kernel sets where more members allow less under fixed rules: the isolated sets (flat
    dispatch) or the map sets (an address there is isolated), and what a peer by absence
    excludes. Every other set permits: a peer, a dispatch target, a named port. ``load`` orders
    member changes by this, so a cut-short load never allows more than the old or the new state.

    A flat isolated set may fold with a peer set of the same selector, which then does both, and
    a requirement's part may be excluded by one peer and tested by another; such sets count as
    restricting, so an isolated pod is never left open for a moment."""
    out: set[str] = set()
    for program in lowered.families:
        if program.family not in families:
            continue
        out.update(names_of(lowered).set(e.name) for s in program.sets for e in s.excluded)
        if marks.grouped:
            out.update(_map_sets(lowered, program.family, marks))
        else:
            out.update(names_of(lowered).set(s.name) for s in program.isolated.values())
    return frozenset(out)


def kernel_sets(
    lowered: Lowered, members: Mapping[str, Sequence[Entry]], marks: Marks, families: Sequence[int] = (4, 6)
) -> list[SetText]:
    """Every set the rules use, with its members, in creation order (``set_makers``)."""
    return [maker.make() for maker in set_makers(lowered, members, marks, families)]


@attrs.frozen
class SetMaker:
    """One set of ``set_makers``: ``make`` reads its members; ``header`` is the set without
    them, sized by counting its pods' addresses (``Resolved.room``), so a first load creates
    every set before reading a member."""

    header: Callable[[], SetText]
    make: Callable[[], SetText]


def set_makers(
    lowered: Lowered, members: Mapping[str, Sequence[Entry]], marks: Marks, families: Sequence[int] = (4, 6)
) -> list[SetMaker]:
    """Every set the rules use, in creation order; with group marks, the map sets built from
    ``lower``'s per-namespace isolated sets, which are themselves never loaded. Names, kinds
    and order follow from the policies alone and sizes from counts of pods, so a first load
    creates every set, then reads the members while the kernel works: a fresh namespace's
    kernel grows its list of sets 64 at a time, waiting a grace period each time (1.8 s for the
    8,839 sets of the independent L)."""
    out: dict[str, tuple[tuple[bool, int, str], tuple[str, ...], SetMaker]] = {}
    resolved = members if isinstance(members, Resolved) else None

    def room_of(*names: str, without: Sequence[str] = ()) -> Callable[[], int] | None:
        """``names``' ``Resolved.room``; None (each header reads its set) for other members."""
        return None if resolved is None else functools.partial(resolved.room, *names, without=without)

    def put(
        name: str,
        kind: str,
        family: int,
        entries: Callable[[], Sequence[Entry]],
        tests: int = 1,
        options: str = "",
        holds: Sequence[str] = (),
        room: Callable[[], int] | None = None,
    ) -> None:
        make = functools.partial(_made, name, kind, family, entries, options, room)
        header = make if room is None else functools.partial(_made, name, kind, family, tuple, options, room)
        out[name] = (creation_order(kind, options, tests, name), tuple(holds), SetMaker(header, make))

    def put_list(name: str, held: tuple[str, ...], tests: int) -> None:
        put(name, LIST_SET, 0, functools.partial(_held, held), tests, holds=held)

    names = names_of(lowered)
    for program in lowered.families:
        if program.family not in families:
            continue
        every = everyone(lowered, program.family, marks)
        for s, count in set_tests_per_set(program, marks).items():
            if every is not None and s == every.spec:
                rest = functools.partial(_rest, every, members)
                put(
                    every.rest,
                    "hash:ip",
                    program.family,
                    rest,
                    count,
                    room=room_of(s.name, without=every.feeds),
                )
                put_list(every.name, (*every.maps, every.rest), count)
            else:
                entries = functools.partial(members.__getitem__, s.name)
                put(names.set(s.name), SET_TYPES[s.kind], s.family, entries, count, room=room_of(s.name))
        for name, feeds in _map_sets(lowered, program.family, marks).items():
            put(
                name,
                "hash:ip",
                program.family,
                functools.partial(_mapped, feeds, members),
                options=" skbinfo",
                room=room_of(*feeds),
            )
        listed_tests = list_tests(program)
        for listed in list_sets(program):
            held = tuple(names.set(m.name) for m in listed.members)
            put_list(names.set(listed.name), held, listed_tests[listed.name])
        for ports in port_lists(program):
            if ports.numbers is not None:
                put(names.set(ports.numbers), PORT_SET, 0, functools.partial(_held, ports.entries))
            sets = (*(s.name for s in ports.named), *((ports.numbers,) if ports.numbers else ()))
            put_list(names.set(ports.name), tuple(names.set(n) for n in sets), listed_tests[ports.name])
    placed: dict[str, SetMaker] = {}

    def place(name: str) -> None:
        """``name`` after the sets it holds (the kernel refuses a list member that is not)."""
        if name not in placed:
            _, holds, maker = out[name]
            for member in holds:
                place(member)
            placed[name] = maker

    for name in sorted(out, key=lambda n: out[n][0]):
        place(name)
    return list(placed.values())


def _made(
    name: str,
    kind: str,
    family: int,
    entries: Callable[[], Sequence[Entry]],
    options: str,
    room: Callable[[], int] | None,
) -> SetText:
    return set_text(name, kind, family, entries(), options, None if room is None else room())


def _held(names: Sequence[str]) -> list[Entry]:
    return [(n, False) for n in names]


@per_program
def list_tests(program: FamilyProgram) -> Counter[str]:
    """Per ``list:set`` of the policy chains (peers, port lists), the rules that test it."""
    found: Counter[str] = Counter()
    for chain in program.chains:
        for rule in folded(chain.matches):
            found.update(x.name for x in (rule.listed, rule.ports) if x is not None)
    return found


def _mapped(feeds: Mapping[str, Feed], members: Mapping[str, Sequence[Entry]]) -> list[Entry]:
    """A map set's entries: each isolated set's addresses with its group's mark and flags, one
    per address (``_first_entries``)."""
    return list(zip(_first_entries(feeds, members).values(), repeat(False)))


def _first_entries(
    feeds: Mapping[str, Feed], members: Mapping[str, Sequence[Entry]], only: AbstractSet[str] | None = None
) -> dict[str, str]:
    """Per address (of ``only``, default all), its map entry from the first isolated set that
    holds it: two pods sharing an address (warned) gave two entries of one element, which
    ``ipset restore`` refuses, and a member delta deleted the survivor's with the other's."""
    out: dict[str, str] = {}
    for iso, feed in feeds.items():
        entries = members.get(iso, ())
        if only is not None and only.isdisjoint(_texts(entries)):
            continue
        texts = [t for t, _ in entries if t not in out and (only is None or t in only)]
        if texts:
            out.update(zip(texts, _map_entries(feed, members, texts), strict=True))
    return out


def _map_entries(feed: Feed, members: Mapping[str, Sequence[Entry]], texts: list[str]) -> list[str]:
    """The entries of addresses ``texts`` in a map set: each its group's code and the flags whose
    tests it passes. A flag's addresses are found by set operations and each mark spelled once:
    per address, a call and a format were a third of a first load's wait before its first sets
    (50k addresses a map set at L)."""
    marks = [feed.mark] * len(texts)
    for flag in feed.flags:
        passing = set(texts)
        for spec, out in flag.tests:
            held = _texts(members[spec.name])
            passing = passing - held if out else passing & held
        if passing:
            marks = [
                mark | flag.mark if text in passing else mark for text, mark in zip(texts, marks, strict=True)
            ]
    mask = f"/{feed.mask:#x}"
    spelled = {mark: f" skbmark {mark:#x}{mask}" for mark in set(marks)}
    return [text + spelled[mark] for text, mark in zip(texts, marks, strict=True)]


@per_program
def list_sets(program: FamilyProgram) -> tuple[ListSet, ...]:
    """The ``list:set``s of peers the policy chains' rules test (``folded``), by name."""
    found = {r.listed for c in program.chains for r in folded(c.matches) if r.listed is not None}
    return tuple(sorted(found, key=lambda listed: listed.name))


@per_program
def port_lists(program: FamilyProgram) -> tuple[PortList, ...]:
    """The port lists the policy chains' rules test (``folded``), by name."""
    found = {r.ports for c in program.chains for r in folded(c.matches) if r.ports is not None}
    return tuple(sorted(found, key=lambda ports: ports.name))


def creation_order(kind: str, options: str, tests: int, name: str) -> tuple[bool, int, str]:
    """ipset finds a set by name along a list in creation order: in ``ipset restore`` for each
    ``add`` line, and in the kernel for each rule's ``--match-set`` as ``iptables-restore`` parses
    it (a string compare per set passed: 44% of an IPv4 restore's time at the independent L while
    the 970 lists came last). So the sets with most adds (the map sets, named ports: one entry per
    pod) come first, then the most tested, lists among them, each after the sets it holds
    (``set_makers``). By policy alone, so pod churn never moves a set in the file."""
    return (not (options or kind == SET_TYPES["port"]), -tests, name)


@per_program
def _feeding(lowered: Lowered, family: int, marks: Marks) -> Mapping[str, tuple[str, ...]]:
    """Per set of ``family`` a map set's entries depend on (the isolated sets feeding it, the
    sets its flags test): those map sets."""
    out: dict[str, set[str]] = {}
    for name, feeds in _map_sets(lowered, family, marks).items():
        for iso, feed in feeds.items():
            out.setdefault(iso, set()).add(name)
            for flag in feed.flags:
                for spec, _ in flag.tests:
                    out.setdefault(spec.name, set()).add(name)
    return {name: tuple(sorted(maps)) for name, maps in out.items()}


@per_program
def _used_names(program: FamilyProgram, marks: Marks) -> frozenset[str]:
    return frozenset(s.name for s in used_sets(program, marks))


@per_program
def read_sets(lowered: Lowered, marks: Marks, families: Sequence[int] = (4, 6)) -> frozenset[str]:
    """The program sets whose members ``kernel_sets`` (and so every load) reads: those a rule
    tests and the isolated sets feeding the map sets."""
    out: set[str] = set()
    for program in lowered.families:
        if program.family in families:
            out.update(_used_names(program, marks), _feeding(lowered, program.family, marks))
    return frozenset(out)


def set_changes(
    lowered: Lowered, old: Members, new: Members, marks: Marks, families: Sequence[int] = (4, 6)
) -> dict[str, tuple[list[Entry], list[Entry]]]:
    """Per kernel set that changed: (entries to remove, entries to add). A map set's entries
    follow the isolated sets feeding it, so only the pods that came or went are touched; only
    the sets that changed are looked at (a pod event changes a few of thousands)."""
    changes = member_changes(old, new)
    names = names_of(lowered)
    out: dict[str, tuple[list[Entry], list[Entry]]] = {}
    for program in lowered.families:
        if program.family not in families:
            continue
        used, feeding = _used_names(program, marks), _feeding(lowered, program.family, marks)
        every = everyone(lowered, program.family, marks)
        if every is not None and (rest := _rest_change(every, old, new, changes)) != ([], []):
            out[every.rest] = rest
        touched: dict[str, set[str]] = {}  # per map set, the addresses whose entries may change
        for name, change in changes.items():
            if name in used and (every is None or name != every.spec.name):
                out[names.set(name)] = change
            for map_set in feeding.get(name, ()):
                touched.setdefault(map_set, set()).update(text for part in change for text, _ in part)
        feeds = _map_sets(lowered, program.family, marks)
        for map_set, addresses in touched.items():
            was, now = (
                _entries_of(addresses, feeds[map_set], old),
                _entries_of(addresses, feeds[map_set], new),
            )
            gone = [(e, False) for e in was if e not in now]
            fresh = [(e, False) for e in now if e not in was]
            if gone or fresh:
                out[map_set] = (gone, fresh)
    return out


def _entries_of(addresses: set[str], feeds: Mapping[str, Feed], members: Members) -> dict[str, None]:
    """The map set's entries of ``addresses`` under ``members``, as ``_mapped`` gives them."""
    return dict.fromkeys(_first_entries(feeds, members, addresses).values())


def render_sets(lowered: Lowered, sets: Sequence[SetText]) -> str:
    """An ``ipset restore`` input creating every set with its members."""
    return (
        _environment(NPC_LAYOUT.package)
        .get_template("ipset.j2")
        .render(version=__version__, network=comment(lowered.network)[1:-1], sets=sets)
    )


def rules_for(
    lowered: Lowered,
    members: Mapping[str, Sequence[Entry]],
    family: int,
    direction: Direction,
    marks: Marks,
    layout: Layout = NPC_LAYOUT,
) -> dict[str, int]:
    """Per isolated address, the rules of ``direction`` the first packet of a connection is tested
    against: flat, the allow bit's reset and every dispatch rule, or with group marks the trie's
    tests (its root is the direction's chain) and the group's dispatch; every rule of each policy
    chain selecting the pod (MARK does not end a chain; none of a chain its dispatch rule is,
    ``inlined``); flat, the verdict (with group marks in ``Layout.passing``)."""
    program = lowered.family(family)
    length = past_dispatch(program, marks)
    chains = dispatch_by_address(program, direction, members)
    if not marks.grouped:
        flat = 1 + layout.verdict_rules[direction] + len(program.dispatch[direction])
        return {text: flat + sum(length[d.chain] for d in ds) for text, ds in chains.items()}
    found = trees(lowered, family, marks)[direction]
    held: dict[str, frozenset[str]] = {}

    def holding(spec: SetSpec) -> frozenset[str]:
        if spec.name not in held:
            held[spec.name] = frozenset(text for text, _ in members.get(spec.name, ()))
        return held[spec.name]

    out = {}
    for chain in found.chains:
        group, branched = chain.group, group_plan(chain)
        cost = chain.depth  # the lookup set the pending bit: no reset (``Layout.passing``)
        for name in group.isolated:
            for text, _ in members[name]:
                here = branched.cost(lambda spec: text in holding(spec))  # noqa: B023 (called at once)
                out[text] = cost + here + sum(length[d.chain] for d in chains.get(text, ()))
    return out


def rules_per_packet(
    lowered: Lowered, members: Mapping[str, Sequence[Entry]], marks: Marks, layout: Layout = NPC_LAYOUT
) -> int:
    """The most rules the first packet of one connection is tested against in npc's table: the
    layout's fixed cost (npc's: the FORWARD jump and npc's FORWARD chain), then the worst pod's
    rules of each direction (``rules_for``)."""
    worst = 0
    for program in lowered.families:
        if program.family not in layout.families:
            continue
        total = layout.passing(marks)
        for direction in DIRECTIONS:
            costs = rules_for(lowered, members, program.family, direction, marks, layout)
            total += max(costs.values(), default=0)
        worst = max(worst, total)
    return worst


def chain_rules(matches: tuple[Match, ...]) -> int:
    return _lines(folded(matches))


def rule_count(lowered: Lowered, family: int, marks: Marks, layout: Layout = NPC_LAYOUT) -> int:
    """The ``-A`` rules of one family's file, as the template writes them: the entry block (npc's:
    two jumps in the FORWARD chain); flat, per direction the mark reset, one per dispatch and the
    verdict, or with group marks the pending bit's reset, per direction the map lookup and the
    verdict in FORWARD, the trie's tests and its groups' dispatch; every policy chain's that is
    written (``written``)."""
    program = lowered.family(family)
    total = layout.entry_rules + sum(chain_rules(c.matches) for c in written(program, marks))
    found = trees(lowered, family, marks)
    if not found:
        return total + sum(1 + layout.verdict_rules[d] + len(program.dispatch[d]) for d in DIRECTIONS)
    total += 1 + 2 * len(DIRECTIONS)  # the pending bit's reset; per direction a map lookup and the verdict
    return total + sum(
        sum(len(c.tests) + _dispatch_rules(group_plan(c)) for c in t.chains) for t in found.values()
    )


def _dispatch_rules(found: Plan) -> int:
    return len(found.plain) + sum(1 + len(b.entries) for b in found.branches)


def artefacts(
    lowered: Lowered, members: Mapping[str, Sequence[Entry]], marks: Marks, layout: Layout = NPC_LAYOUT
) -> dict[str, str]:
    """The iptables-persistent / ipset-persistent file set (of the layout's families)."""
    files = {"ipsets": render_sets(lowered, kernel_sets(lowered, members, marks, layout.families))}
    files.update((f"rules.v{f}", render_rules(lowered, f, marks, layout=layout)) for f in layout.families)
    return files


def declaration_order(lowered: Lowered, layout: Layout, chains: Sequence[str]) -> list[str]:
    """The fixed chains, then the others in descending order: iptables-nft keeps the chains a
    restore names in a sorted list that it walks from the smallest for each name: declared
    ascending, each chain walked the whole list (7,900 chains at the lists L: 31 million name
    comparisons); descending, each goes in at the front."""
    fixed = len(layout.fixed_chains(lowered))
    return [*chains[:fixed], *sorted(chains[fixed:], reverse=True)]


Chains = dict[str, dict[str, tuple[str, ...]]]  # table -> chain -> its rules, as a restore file writes them


def chains_in(text: str, stale: Mapping[str, Sequence[str]] | None = None) -> Chains:
    """The chains a restore input declares (but ``stale``'s, per table: declared to be deleted)
    with its ``-A`` lines, per table: a load's own input gives what ``chains`` would render."""
    out: dict[str, dict[str, list[str]]] = {}
    table: dict[str, list[str]] = {}
    gone: set[str] = set()
    for line in text.splitlines():
        if line.startswith("*"):
            table = out[line[1:]] = {}
            gone = set((stale or {}).get(line[1:], ()))
        elif line.startswith(":"):
            name = line[1:].split()[0]
            if name not in gone:
                table[name] = []
        elif line.startswith("-A "):
            table[line.split(maxsplit=2)[1]].append(line)
    return {t: {c: tuple(rules) for c, rules in found.items()} for t, found in out.items()}
