"""A dispatch group's entries branched by the values of one pod label.

A namespace with many policies gives its group a long dispatch list, and the first packet of a
connection tests every entry: the independent messy L's worst group tests 39 targets, most of
them ``app=<one app>`` (7 of ``app=profile``, 3 of ``app=users``...). A pod has one value per
label, so the entries whose targets require ``app=profile`` concern only pods of that value:
one rule testing that part ``goto``s a chain of those entries (their targets less that test).
Branches of one label exclude each other, so a packet enters at most one; the group's chain
tests its other entries first, then one rule per branch, the largest first, and a branch's chain
is the group's last word (``goto``: when it ends, the packet returns where the group's chain
was entered from). A packet of the group meets the other entries, the branch tests up to its
own, and its branch's entries.

Which label, and which values branch, follows from the policies alone (the worst packet's count,
``Plan.worst``, is the smallest of the label and branch sizes tried), so pod churn still changes
set members only. A branch is a chain one level deeper, which nf_tables' 15 levels allow below
any group's chain (``mark_tree.MAX_CODE_BITS``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import attrs

from ...ir import EVERYWHERE, PodPeer
from ...lower import Dispatch, SetSpec, tests

# the rules a branched group's worst packet must save: each branch is a rule and a chain more to
# load (a gain of one at the bench L: 444 rules and chains more, no fewer rules per packet)
GAIN = 2
Local = tuple[tuple[SetSpec, bool], ...]  # a target's tests in a group (``lower.tests``)
Item = tuple[Dispatch, Local]


@attrs.frozen
class Branch:
    test: SetSpec  # the pods of every namespace with the label's one value
    entries: tuple[Item, ...]  # the entries requiring it, ``test`` left out of their tests


@attrs.frozen
class Plan:
    plain: tuple[Item, ...]  # tested first, one rule each
    branches: tuple[Branch, ...]  # then one rule each, a packet's pod in at most one's test

    @property
    def worst(self) -> int:
        """The most rules a packet of the group meets here (before its policy chains)."""
        return len(self.plain) + max((i + 1 + len(b.entries) for i, b in enumerate(self.branches)), default=0)

    def cost(self, inside: Callable[[SetSpec], bool]) -> int:
        """The rules a packet meets here whose pod ``inside`` says which sets hold."""
        for i, branch in enumerate(self.branches):
            if inside(branch.test):
                return len(self.plain) + i + 1 + len(branch.entries)
        return len(self.plain) + len(self.branches)


def _value(spec: SetSpec) -> tuple[str, str] | None:
    """(label, value) of a part holding every namespace's pods with that one value, else None."""
    key = spec.key
    if not isinstance(key, tuple) or len(key) != 1 or not isinstance(peer := key[0], PodPeer):
        return None
    if peer.namespaces != EVERYWHERE:
        return None
    found = peer.pods.requirements
    if len(found) != 1 or found[0].op != "In" or len(found[0].values) != 1:
        return None
    return found[0].key, found[0].values[0]


@functools.lru_cache(maxsize=1 << 14)
def plan(dispatch: tuple[tuple[Dispatch, SetSpec | None], ...], namespaces: tuple[str, ...]) -> Plan:
    """The group's dispatch (``mark_tree.Group.dispatch``) as plain entries and branches: the
    label and the least branch size whose worst packet meets the fewest rules; flat where that
    saves less than ``GAIN`` rules."""
    items = [(d, tests(t, namespaces) if t is not None else ()) for d, t in dispatch]
    flat = best = Plan(tuple(items), ())
    # per label, per value: the entries requiring it and the part each tests for it
    by_label: dict[str, dict[str, list[tuple[int, SetSpec]]]] = {}
    for i, (_, local) in enumerate(items):
        labels: set[str] = set()
        for spec, out in local:
            found = None if out else _value(spec)
            if found is not None and found[0] not in labels:
                labels.add(found[0])
                by_label.setdefault(found[0], {}).setdefault(found[1], []).append((i, spec))
    for label in sorted(by_label):
        values = by_label[label]
        for least in sorted({len(held) for held in values.values()} - {1}):  # a branch of one gains nothing
            chosen = [held for _, held in sorted(values.items()) if len(held) >= least]
            candidate = _branched(items, chosen)
            if candidate.worst < best.worst:
                best = candidate
    return best if best.worst <= flat.worst - GAIN else flat


def _branched(items: Sequence[Item], chosen: Sequence[Sequence[tuple[int, SetSpec]]]) -> Plan:
    taken = {i for held in chosen for i, _ in held}
    branches = [
        Branch(
            held[0][1],
            tuple((items[i][0], tuple(t for t in items[i][1] if t != (spec, False))) for i, spec in held),
        )
        for held in chosen
    ]
    branches.sort(key=lambda b: (-len(b.entries), b.test.name))
    return Plan(tuple(item for i, item in enumerate(items) if i not in taken), tuple(branches))
