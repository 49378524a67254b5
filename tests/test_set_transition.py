"""The order of set member changes in an iptables apply and in the agent's deltas, on random
contents: a load cut after any line allows no more than the old state or the new one.

Under fixed rules a restricting set (isolated, map) allows less with more elements, a permitting
set (peers, targets, named ports) more, and a ``nomatch`` entry restricts whatever its set does.
The contents are modelled as ipset holds them (element -> what follows it), and the lines are
played as ``ipset -exist restore`` plays them.
"""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import given
from hypothesis import strategies as st
from npc.backends.base import Ran
from npc.backends.iptables.load import NOMATCH, Contents, _moves, load_members, transition

ELEMENTS = [f"10.0.0.{i}" for i in range(6)]
contents = st.dictionaries(st.sampled_from(ELEMENTS), st.sampled_from(["", NOMATCH]))
marks = st.dictionaries(st.sampled_from(ELEMENTS), st.sampled_from(["skbmark 0x0/0xf", "skbmark 0x1/0xf"]))
isolated = st.one_of(st.dictionaries(st.sampled_from(ELEMENTS), st.just("")), marks)  # no nomatch there


def play(state: dict[str, Contents], lines: Sequence[str]) -> None:
    for line in lines:
        verb, name, element, *rest = line.split()
        if verb == "add":
            state.setdefault(name, {})[element] = " ".join(rest)
        else:
            state.setdefault(name, {}).pop(element, None)


def at_most(now: Contents, bound: Contents, restricting: bool) -> bool:
    """Whether a set holding ``now`` allows no more than one holding ``bound`` (same rules): a
    restricting set holds every element of the bound (a map address in some group: isolated), a
    permitting set no positive element beyond the bound's and every one of its ``nomatch`` ones."""
    if restricting:
        return set(bound) <= set(now)
    positive = {e for e, v in now.items() if v != NOMATCH}
    return positive <= {e for e, v in bound.items() if v != NOMATCH} and all(
        now.get(e) == NOMATCH for e, v in bound.items() if v == NOMATCH
    )


@given(contents, contents)
def test_a_permitting_sets_transition_allows_no_more_than_old_or_new(old: Contents, new: Contents) -> None:
    between = transition(old, new, restricting=False)
    assert at_most(between, old, False) and at_most(between, new, False)


@given(isolated, isolated)
def test_a_restricting_sets_transition_holds_old_and_new(old: Contents, new: Contents) -> None:
    between = transition(old, new, restricting=True)
    assert at_most(between, old, True) and at_most(between, new, True)
    assert all(between[e] == v for e, v in old.items())  # a map address stays in its old group


@given(st.data(), st.booleans(), st.integers(0, 20))
def test_moves_reach_the_new_contents_never_beyond_them_and_undo_from_any_line(
    data: st.DataObject, restricting: bool, cut: int
) -> None:
    old, new = (
        data.draw(isolated if restricting else contents),
        data.draw(isolated if restricting else contents),
    )
    between = transition(old, new, restricting)
    forward, back = _moves("s", between, new)
    state = {"s": dict(between)}
    play(state, forward)
    assert state["s"] == new
    state = {"s": dict(between)}
    play(state, forward[:cut])
    assert at_most(state["s"], new, restricting)
    play(state, back[:cut][::-1])
    assert state["s"] == between


class Kernel:
    """``ipset -exist restore`` of a batch, recorded."""

    def __init__(self) -> None:
        self.batches: list[str] = []

    def __call__(self, argv: Sequence[str], stdin: str = "") -> Ran:
        assert list(argv) == ["ipset", "-exist", "restore"]
        self.batches.append(stdin)
        return Ran(0, "")

    def which(self, program: str) -> bool:
        return True


def entries(found: Contents) -> list[tuple[str, bool]]:
    return [(f"{e} {v}" if v and v != NOMATCH else e, v == NOMATCH) for e, v in found.items()]


@given(contents, contents, isolated, isolated)
def test_the_agents_batch_cut_after_any_line_allows_no_more_than_before_or_after(
    old_peer: Contents, new_peer: Contents, old_map: Contents, new_map: Contents
) -> None:
    """A permitting set and a restricting one change together: some line splits the batch so
    that every cut before it allows no more than the old state, every cut after it no more than
    the new one."""
    old, new = {"peer": old_peer, "map": old_map}, {"peer": new_peer, "map": new_map}
    changes = {
        name: (
            [e for e in entries(old[name]) if e not in entries(new[name])],
            [e for e in entries(new[name]) if e not in entries(old[name])],
        )
        for name in old
    }
    kernel = Kernel()
    load_members(changes, {"map"}, kernel)
    lines = kernel.batches[0].splitlines() if kernel.batches else []

    def state(cut: int) -> dict[str, Contents]:
        found = {name: dict(old[name]) for name in old}
        play(found, lines[:cut])
        return found

    def below(now: dict[str, Contents], bound: dict[str, Contents]) -> bool:
        return all(at_most(now[n], bound[n], n == "map") for n in bound)

    assert state(len(lines)) == new
    split = 0
    while split < len(lines) and below(state(split + 1), old):
        split += 1
    assert all(below(state(cut), new) for cut in range(split, len(lines) + 1))
