"""iptables dispatch in O(log) rules: a pod's namespace group in the packet mark, then a bit trie.

A flat dispatch list makes the first packet of every connection test one set per policy chain of
the whole cluster. Policies select pods of their own namespace only, so what can concern a pod
follows from its namespace: namespaces whose dispatch is the same list (``lower.Scope``) form a
*group*, numbered 0..G-1 in the order of their lists (policies alone decide both). One
``hash:ip skbinfo`` set per direction maps every isolated address to its group's number, spread
over that direction's mask (``Marks``); a fixed chain in table mangle writes both into
the mark (``-j SET --map-set ... --map-mark``, which the kernel allows in mangle only; bits outside
the mask are kept). In filter, a trie finds the group's chain: chain(x) tests, from high to low,
each bit below x's lowest set bit and ``goto``s chain(x | bit) when it is set, so a packet meets
at most one test per bit (11 bits for 2,048 groups); once no test fires the number is x, and
chain(x)'s remaining rules are group x's own dispatch. G chains, G - 1 tests.

The map set's members (which address has which number) come from the inventory; the chains and
the numbers from the policies, so pod churn still changes set members only.
"""

from __future__ import annotations

import functools

import attrs

from ...errors import UsageError
from ...ir import Direction
from ...lower import Dispatch, FamilyProgram, digest
from ..base import DEFAULT_GROUP_MASKS, DEFAULT_MARK, Options
from .names import Names


@attrs.frozen
class Marks:
    """The mark bits npc uses: ``allow`` (a policy chain allowed the packet) and, per direction,
    where the pod's group number goes; none may overlap, or one would overwrite another."""

    allow: int = DEFAULT_MARK
    egress: int = DEFAULT_GROUP_MASKS[0]
    ingress: int = DEFAULT_GROUP_MASKS[1]

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
    dispatch: tuple[tuple[Dispatch, bool], ...]  # (entry, whole namespace: no target test)


@attrs.frozen
class Test:
    bit: int  # of the group number
    mark: int  # where that bit lies in the dispatch mask
    chain: str


@attrs.frozen
class TreeChain:
    name: str
    tests: tuple[Test, ...]
    group: Group


@attrs.frozen
class Tree:
    direction: Direction
    map_set: str
    groups: tuple[Group, ...]
    chains: tuple[TreeChain, ...]  # chains[0] is the root
    bits: int


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


def groups(program: FamilyProgram, direction: Direction) -> tuple[Group, ...]:
    """Namespaces with the same dispatch list form one group ("" for an entry without a target test)."""
    by_list: dict[tuple[tuple[str, str], ...], list[tuple[str, str, tuple[tuple[Dispatch, bool], ...]]]] = {}
    for scope in program.scopes[direction]:
        key = tuple((d.chain, "" if whole else d.target.name) for d, whole in scope.dispatch)
        by_list.setdefault(key, []).append((scope.namespace, scope.isolated.name, scope.dispatch))
    return tuple(
        Group(i, tuple(ns for ns, _, _ in found), tuple(s for _, s, _ in found), found[0][2])
        for i, (_, found) in enumerate(sorted(by_list.items()))
    )


def tree(program: FamilyProgram, direction: Direction, names: Names, mask: int) -> Tree:
    found = groups(program, direction) or (Group(0, (), (), ()),)  # the root exists even when empty
    bits = max(1, (len(found) - 1).bit_length())
    if bits > bin(mask).count("1"):
        raise UsageError(
            f"{len(found)} {direction} namespace groups need {bits} mark bits; "
            f"the {direction} mask of --group-marks ({mask:#x}) has {bin(mask).count('1')}"
        )
    letter = "E" if direction == "egress" else "I"
    spelled = tuple((g.number, tuple(map(names.set, g.isolated))) for g in found)  # as the kernel's
    map_set = names.set(f"m{program.family}-{digest('map', direction, program.family, mask, spelled)}")
    chain = [names.chain(f"{letter}{program.family}-{g.number:x}") for g in found]
    chains = []
    for group in found:
        lowest = (group.number & -group.number).bit_length() - 1 if group.number else bits
        tests = tuple(
            Test(j, spread(1 << j, mask), chain[group.number | 1 << j])
            for j in range(lowest - 1, -1, -1)
            if group.number | 1 << j < len(found)
        )
        chains.append(TreeChain(chain[group.number], tests, group))
    return Tree(direction, map_set, found, tuple(chains), bits)


def map_entries(tree: Tree, mask: int) -> dict[str, str]:
    """Per isolated set feeding the map set, what follows each of its addresses there:
    `` skbmark NUMBER/MASK`` (only the mask's bits change)."""
    return {
        name: f" skbmark {spread(group.number, mask):#x}/{mask:#x}"
        for group in tree.groups
        for name in group.isolated
    }


def tests_before(tree: Tree, number: int) -> int:
    """Trie tests a packet of group ``number`` meets, up to and in the group's own chain."""
    by_name = {c.name: c for c in tree.chains}
    current, count = tree.chains[0], 0
    while True:
        for test in current.tests:
            count += 1
            if number >> test.bit & 1:
                current = by_name[test.chain]
                break
        else:
            return count
