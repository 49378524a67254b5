"""iptables dispatch in O(log) rules: a pod's namespace group in the packet mark, then a bit trie.

A flat dispatch list makes the first packet of every connection test one set per policy chain of
the whole cluster. Policies select pods of their own namespace only, so what can concern a pod
follows from its namespace: namespaces whose dispatch is the same list (``lower.Scope``) form a
*group* (numbered 0..G-1 in the order of their lists, for chain names). One ``hash:ip skbinfo``
set per direction maps every isolated address to its group's *code*, spread over that direction's
mask (``Marks``), beside the pending bit; npc's FORWARD chain writes the source's egress code
and, after the egress dispatch, the destination's ingress code into the mark (``-j SET --map-set
... --map-mark``, which the kernel allows in table mangle only, so npc's chains all live there:
the codes and the trie reading them change in one commit; bits outside the mask are kept).

Then a binary trie over the codes finds the group's chain: a code of length L is L bits,
the one at depth d on the mask's d-th bit, and a packet meets one test per depth: the test at a
node ``goto``s the chain of its 1-subtree when the bit is set, and a packet whose bit is clear
goes on in the same chain, down the 0-side, to the next test or, at a leaf, to the group's own
dispatch. G chains, G - 1 tests. The codes are weighted, not balanced (``code_lengths``): a group
whose own dispatch and policy chains are long gets a short code, so the worst packet's total
(tests + the group's rules) is the smallest a prefix code allows within the mask's bits, and never
more than a balanced trie's.

The bits of the mask past a group's code are its *flags* (``Flag``): the trie never tests them
for the group's packets, so each stands for one of the group's dispatch tests, and the dispatch
rule compares a bit where it looked up sets (16 ns against 163 a packet).

The map set's members (which address has which code and flags) come from the inventory; the
chains, the weights, the codes and the flags' meanings from the policies, so pod churn still
changes set members only.

A code has at most ``MAX_CODE_BITS`` bits, however wide the mask: nf_tables (iptables-nft)
refuses a chain more than 15 jumps or gotos below its base chain ("Too many links", checked when
the rules are committed). FORWARD -> ``NPC-<tag>-FORWARD`` -> the direction's chain, which is the
trie's root, is 2; each 1 bit of a code is a ``goto`` (the all-1 code of a full trie has as many
as its length); a branch chain and the group's policy chains are one more each: 2 + 11 + 2 = 15.
More groups than a code can number are merged (``groups``): a packet of a merged group meets
both groups' dispatch, and no cluster is refused for its number of namespaces.
"""

from __future__ import annotations

import functools
import heapq
from collections.abc import Callable, Sequence

import attrs

from ...errors import UsageError
from ...ir import Direction
from ...lower import Dispatch, FamilyProgram, SetSpec, digest
from ..base import DEFAULT_GROUP_MASKS, DEFAULT_MARK, Options
from .branches import plan
from .names import Names

MAX_CODE_BITS = 11  # nf_tables' 15 levels below a base chain, less 2 above the trie and 2 below


@attrs.frozen
class Marks:
    """The mark bits npc uses: ``allow``, a packet's verdict so far, and, per direction, where the
    pod's group number goes; none may overlap, or one would overwrite another.

    npc reads ``allow`` as *pending* (``pending``): set while a packet meets a direction's
    dispatch and no policy chain has allowed it yet, cleared by the rule that allows it. With group
    marks the map lookup that writes an isolated pod's code sets it as well, so the mark alone says
    whether a packet meets the direction's dispatch and its drop: FORWARD compares a bit where it
    looked the address up in the map set a second time, and the direction's chain needs no reset
    (a set match costs a packet ten times a mark match, an ``xt`` target three times:
    ``benchmarks/match_cost.py``). Weave Net's own rules read its mark the other way round: set
    once a policy allowed."""

    allow: int = DEFAULT_MARK
    egress: int = DEFAULT_GROUP_MASKS[0]
    ingress: int = DEFAULT_GROUP_MASKS[1]
    pending: bool = True

    def unallowed(self, flag: int = 0) -> str:
        """The match of a packet no policy chain allowed yet whose mark has ``flag`` as well."""
        value = flag | (self.allow if self.pending else 0)
        return f" -m mark --mark {value:#x}/{flag | self.allow:#x}"

    def verdict(self, allowed: bool) -> str:
        """The target marking a packet allowed (``allowed``) or, at a direction's start, not yet."""
        value = self.allow if allowed != self.pending else 0
        return f" -j MARK --set-xmark {value:#x}/{self.allow:#x}"

    def __attrs_post_init__(self) -> None:
        if self.allow & self.egress or self.allow & self.ingress or self.egress & self.ingress:
            raise ValueError(
                f"mark bits overlap: allow {self.allow:#x}, egress groups {self.egress:#x}, "
                f"ingress groups {self.ingress:#x}"
            )

    @property
    def grouped(self) -> bool:
        """Dispatch by namespace group; without group bits (a layout whose dataplane owns the
        mark space, like Weave Net's) dispatch is one flat list per direction."""
        return bool(self.egress and self.ingress)

    def group(self, direction: Direction) -> int:
        return self.egress if direction == "egress" else self.ingress

    @classmethod
    def of(cls, options: Options) -> Marks:
        """The user's bits; overlapping ones are a usage error (``--mark``, ``--group-marks``)."""
        try:
            return cls(options.mark, *options.group_marks)
        except ValueError as exc:
            raise UsageError(f"--mark and --group-marks: {exc}") from None


@attrs.frozen
class Group:
    number: int
    namespaces: tuple[str, ...]
    isolated: tuple[str, ...]  # the namespaces' isolated-pod sets (for the map set's members)
    dispatch: tuple[tuple[Dispatch, SetSpec | None], ...]  # (entry, its test: ``Scope``'s local test)


@attrs.frozen
class Test:
    bit: int  # of the group number
    mark: int  # where that bit lies in the dispatch mask
    chain: str


@attrs.frozen
class Flag:
    """A bit of the direction's mask that a group's code leaves free, standing for one of the
    group's dispatch tests: set in the mark of each of the group's addresses that passes it, so
    the dispatch tests a mark bit where it tested sets (a set match costs a packet ten times a
    mark match: ``benchmarks/match_cost.py``). The trie tests a code's bits only, so a packet
    of the group meets no test of the bits after its code's."""

    mark: int
    tests: tuple[tuple[SetSpec, bool], ...]  # the dispatch test it stands for (``lower.tests``)


@attrs.frozen
class TreeChain:
    name: str
    tests: tuple[Test, ...]
    group: Group
    mark: int  # the group's code, spread over the mask: what its addresses carry
    depth: int  # the tests a packet of the group meets, in the trie's chains down to this one
    flags: tuple[Flag, ...] = ()  # in the bits after the code's (``flags``)


@attrs.frozen
class Tree:
    direction: Direction
    map_set: str
    groups: tuple[Group, ...]
    chains: tuple[TreeChain, ...]  # chains[0] is the root
    pending: int  # the bit a lookup sets beside the code (``Marks``): the packet meets the dispatch


@attrs.frozen
class Shape:
    """The trie's groups, their code lengths and flags: from the policies alone. (Which pods are
    isolated stays a set test in FORWARD: every network's map sets write the same bits, each
    for its own addresses, so a mark says which group, not which network's.)"""

    groups: tuple[Group, ...]
    lengths: list[int]
    flags: list[tuple[Flag, ...]]


@functools.cache  # a trie asks the same few (bit, mask) pairs thousands of times
def spread(value: int, mask: int) -> int:
    """``value``'s bits, lowest first, placed on ``mask``'s set bits, lowest first."""
    out, bit = 0, 1
    while value:
        while not mask & bit:
            bit <<= 1
        if value & 1:
            out |= bit
        value >>= 1
        bit <<= 1
    return out


def code_bits(mask: int) -> int:
    """The bits a code may have in ``mask``: its own, up to ``MAX_CODE_BITS``."""
    return min(bin(mask).count("1"), MAX_CODE_BITS)


def groups(program: FamilyProgram, direction: Direction, bits: int) -> tuple[Group, ...]:
    """Namespaces with the same dispatch list and local tests form one group.

    More groups than ``bits`` can number are merged, the two with the shortest dispatch lists
    first, until they fit: a merged group's dispatch is both lists in dispatch order, each entry
    with the local test both had, else testing its target (its pods are in every namespace of
    the merge only where both lists select their whole namespaces). Its packets meet both lists;
    nothing is refused. ``bits``: ``code_bits`` of the direction's mask, which every caller must
    agree on (the trie's chains and the sets they test)."""
    by_list: dict[tuple[tuple[str, str], ...], list[tuple[str, str, Local]]] = {}
    for scope in program.scopes[direction]:
        key = tuple((d.chain, local.name if local else "") for d, local in scope.dispatch)
        by_list.setdefault(key, []).append((scope.namespace, scope.isolated.name, scope.dispatch))
    found = [
        (tuple(ns for ns, _, _ in members), tuple(s for _, s, _ in members), members[0][2])
        for _, members in sorted(by_list.items())
    ]
    if len(found) > 1 << bits:
        found = _merged(found, 1 << bits, {d: at for at, d in enumerate(program.dispatch[direction])})
    return tuple(Group(i, *group) for i, group in enumerate(found))


Local = tuple[tuple[Dispatch, SetSpec | None], ...]
_Members = tuple[tuple[str, ...], tuple[str, ...], Local]


def _merged(found: list[_Members], most: int, order: dict[Dispatch, int]) -> list[_Members]:
    """``found`` merged down to ``most`` groups (see ``groups``), by policies alone; ordered by
    their first namespace."""
    heap = [(len(group[2]), n, group) for n, group in enumerate(found)]
    heapq.heapify(heap)
    made = len(heap)
    while len(heap) > most:
        _, _, (ns_a, iso_a, a) = heapq.heappop(heap)
        _, _, (ns_b, iso_b, b) = heapq.heappop(heap)
        local_a, local_b = dict(a), dict(b)
        both = sorted(local_a.keys() | local_b.keys(), key=order.__getitem__)
        dispatch = tuple((d, _shared(d, local_a, local_b)) for d in both)
        heapq.heappush(heap, (len(dispatch), made, (ns_a + ns_b, iso_a + iso_b, dispatch)))
        made += 1
    return sorted((group for _, _, group in heap), key=lambda group: min(group[0]))


def _shared(
    d: Dispatch, a: dict[Dispatch, SetSpec | None], b: dict[Dispatch, SetSpec | None]
) -> SetSpec | None:
    """An entry's test in a merge of two groups: the local test both have, else its target."""
    if d in a and d in b and a[d] == b[d]:
        return a[d]
    return d.target


def code_lengths(weights: Sequence[int], bits: int) -> list[int]:
    """Per group (of these ``weights``: the rules a packet of it can meet past the trie), its code
    length: the least ``worst`` such that lengths ``min(bits, worst - weight)`` form a prefix code
    (Kraft: the shares ``2**(bits - length)`` sum to at most ``2**bits``), then the longest codes
    shortened, heaviest first, until the shares sum to exactly that: a full tree, every test
    useful. The weights are the policies', so the codes depend on policies alone."""
    if len(weights) == 1:
        return [0]
    whole = 1 << bits

    def lengths(worst: int) -> list[int]:
        return [min(bits, worst - w) for w in weights]

    def fits(found: list[int]) -> bool:
        return min(found) >= 1 and sum(1 << (bits - n) for n in found) <= whole

    top = max(weights)
    found = next(f for f in map(lengths, range(top + 1, top + bits + 1)) if fits(f))
    slack = whole - sum(1 << (bits - n) for n in found)
    heap = [(-n, -w, i) for i, (n, w) in enumerate(zip(found, weights, strict=True))]
    heapq.heapify(heap)
    while slack:  # a multiple of the longest code's share, so that one always fits
        n, w, i = heapq.heappop(heap)
        slack -= 1 << (bits + n)
        found[i] = -n - 1
        heapq.heappush(heap, (n + 1, w, i))
    return found


def canonical(lengths: Sequence[int]) -> list[int]:
    """Per length, in order, its code (the first bit the most significant): shorter codes first,
    each the next free one, as canonical Huffman codes are assigned."""
    codes = [0] * len(lengths)
    code, previous = 0, 0
    for i in sorted(range(len(lengths)), key=lambda i: (lengths[i], i)):
        code <<= lengths[i] - previous
        codes[i], previous = code, lengths[i]
        code += 1
    return codes


def shape(program: FamilyProgram, direction: Direction, mask: int, weight: Callable[[Group], int]) -> Shape:
    bits = code_bits(mask)
    found = groups(program, direction, bits) or (Group(0, (), (), ()),)  # the root exists even when empty
    lengths = code_lengths([weight(g) for g in found], bits)
    return Shape(found, lengths, [flags(g, n, mask) for g, n in zip(found, lengths, strict=True)])


def flags(group: Group, length: int, mask: int) -> tuple[Flag, ...]:
    """The group's flags: one per bit of ``mask`` after its code's ``length`` (a mask wider than
    ``MAX_CODE_BITS`` has some for every group), for its dispatch's distinct tests in the order
    its rules meet them (``branches.plan``: the plain entries', the branches', the branch
    entries')."""
    free = [spread(1 << d, mask) for d in range(length, bin(mask).count("1"))]
    found = plan(group.dispatch, group.namespaces)
    wanted = [
        *(local for _, local in found.plain),
        *(((b.test, False),) for b in found.branches),
        *(local for b in found.branches for _, local in b.entries),
    ]
    out: dict[tuple[tuple[SetSpec, bool], ...], Flag] = {}
    for local in wanted:
        if local and local not in out and len(out) < len(free):
            out[local] = Flag(free[len(out)], local)
    return tuple(out.values())


def tree(
    program: FamilyProgram,
    direction: Direction,
    names: Names,
    mask: int,
    shaped: Shape,
    pending: int,
) -> Tree:
    found, lengths, flagged = shaped.groups, shaped.lengths, shaped.flags
    codes = canonical(lengths)
    # depth d's bit (the code's d-th from the most significant) goes on the mask's d-th bit
    marks = [
        spread(sum(1 << d for d in range(n) if code >> (n - 1 - d) & 1), mask)
        for code, n in zip(codes, lengths, strict=True)
    ]
    letter = "E" if direction == "egress" else "I"
    spelled = tuple(
        (
            m,
            tuple(map(names.set, g.isolated)),
            tuple((f.mark, tuple((names.set(t.name), out) for t, out in f.tests)) for f in fs),
        )
        for g, m, fs in zip(found, marks, flagged, strict=True)
    )
    # the pending bit is in the digest: entries of another meaning are another set, never edited in place
    map_set = names.set(
        f"m{program.family}-{digest('map', direction, program.family, mask, pending, spelled)}"
    )
    chain = [names.chain(f"{letter}{program.family}-{g.number:x}") for g in found]
    chain[codes.index(0)] = names.direction(direction)  # the root: FORWARD's jump enters it at once
    chains = [
        TreeChain(
            chain[i],
            tuple(Test(d, spread(1 << d, mask), chain[j]) for d, j in tests),
            g,
            marks[i],
            lengths[i],
            flagged[i],
        )
        for i, (g, tests) in enumerate(zip(found, links(codes, lengths), strict=True))
    ]
    chains.insert(0, chains.pop(codes.index(0)))  # the root's: the all-0 code
    return Tree(direction, map_set, found, tuple(chains), pending)


def links(codes: Sequence[int], lengths: Sequence[int]) -> list[list[tuple[int, int]]]:
    """Per code, the trie's tests in its chain: (depth, the code whose chain a set bit there
    leads to). A code whose last 1 is at depth k starts the chain of the 1-subtree it is the
    leftmost leaf of (the all-0 code: the root's), which walks down the 0-side from depth k + 1,
    one test per depth, to the code's own leaf; a full tree has a leftmost leaf in each subtree."""

    def last(code: int, length: int) -> int:  # the depth of the code's last 1 bit, -1 for none
        return length - (code & -code).bit_length() if code else -1

    starts = {
        (c >> (n - 1 - last(c, n)), last(c, n)): i
        for i, (c, n) in enumerate(zip(codes, lengths, strict=True))
    }
    return [
        [(d, starts[(c >> (n - d)) << 1 | 1, d]) for d in range(last(c, n) + 1, n)]
        for c, n in zip(codes, lengths, strict=True)
    ]


@attrs.frozen
class Feed:
    """What an isolated set's addresses carry in the map set: its group's code and the pending
    bit and, per address, the flags it passes, over ``mask`` (only the mask's bits change)."""

    mark: int
    mask: int
    flags: tuple[Flag, ...]


def map_entries(tree: Tree, mask: int) -> dict[str, Feed]:
    """Per isolated set feeding the map set, what its addresses carry there."""
    pending = tree.pending
    return {
        name: Feed(c.mark | pending, mask | pending, c.flags)
        for c in tree.chains
        for name in c.group.isolated
    }
