"""A dispatch group's entries branched by one label's values (``backends/iptables/branches.py``):
every entry kept once with its tests, branches only of one label (so a pod enters at most one),
and the worst packet never meets more rules than the flat list. The kernel's side is the case
``78-dispatch-branched-by-label``."""

from __future__ import annotations

import re
from pathlib import Path

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings
from kernel.case import CASES_DIR as CASES
from kernel.case import load_case
from kernel.churn import assert_tables
from kernel.cluster import Cluster
from npc.backends.iptables.branches import Plan, plan
from npc.backends.iptables.mark_tree import MAX_CODE_BITS, Group, TreeChain
from npc.backends.iptables.render import group_plan
from npc.ir import EVERYWHERE, PodPeer, Requirement, Selector
from npc.lower import Dispatch, SetSpec
from npc.lower import tests as local_tests


def _part(key: str, value: str) -> SetSpec:
    """Every namespace's pods with ``key=value``, as ``lower`` names a requirement's part."""
    peer = PodPeer(EVERYWHERE, Selector((Requirement(key, "In", (value,)),)))
    return SetSpec("pods", 4, (peer,), f"s4-{key}-{value}")


def _target(*labels: tuple[str, str]) -> SetSpec:
    """A target of one namespace's pods split into its requirements' parts (the group's mark
    proves the namespace, so only the parts are tested)."""
    selector = Selector(tuple(Requirement(k, "In", (v,)) for k, v in labels))
    peer = PodPeer(Selector((Requirement("kubernetes.io/metadata.name", "In", ("shop",)),)), selector)
    name = "s4-t-" + "-".join(f"{k}{v}" for k, v in labels)
    parts = (SetSpec("pods", 4, (PodPeer(peer.namespaces, EVERYWHERE),), "s4-shop"),)
    return SetSpec("pods", 4, (peer,), name, parts + tuple(_part(k, v) for k, v in labels))


def _group(*targets: tuple[tuple[str, str], ...]) -> tuple[tuple[Dispatch, SetSpec | None], ...]:
    return tuple(
        (Dispatch(_target(*labels), f"P-{i}", f"policy {i}"), _target(*labels) if labels else None)
        for i, labels in enumerate(targets)
    )


SHOP = _group(
    (("app", "a"),),
    (("app", "a"), ("tier", "x")),
    (("app", "a"), ("version", "v1")),
    (("app", "b"),),
    (("app", "b"), ("tier", "x")),
    (("app", "b"), ("version", "v1")),
    (("app", "c"),),
    (("app", "c"), ("tier", "x")),
    (("app", "c"), ("version", "v1")),
    (),
)


def test_three_entries_of_each_of_three_apps_become_three_branches() -> None:
    found = plan(SHOP, ("shop",))
    assert [d.chain for d, _ in found.plain] == ["P-9"]
    assert [b.test.name for b in found.branches] == ["s4-app-a", "s4-app-b", "s4-app-c"]
    assert [[d.chain for d, _ in b.entries] for b in found.branches] == [
        ["P-0", "P-1", "P-2"],
        ["P-3", "P-4", "P-5"],
        ["P-6", "P-7", "P-8"],
    ]
    # the branch's test is not tested again in its chain; the entry's other labels are
    assert [[s.name for s, _ in local] for _, local in found.branches[0].entries] == [
        [],
        ["s4-tier-x"],
        ["s4-version-v1"],
    ]
    assert found.worst == 7  # the flat list was 10
    for i, app in enumerate("abc"):
        assert found.cost(lambda s, app=app: s.name == f"s4-app-{app}") == 1 + (i + 1) + 3  # type: ignore[misc]
    assert found.cost(lambda s: False) == 1 + 3


def test_no_gain_keeps_the_list_flat() -> None:
    two = _group((("app", "a"),), (("app", "a"), ("tier", "x")), ())
    assert plan(two, ("shop",)).branches == ()  # 1 + 1 + 2 is no better than 3
    assert plan(SHOP[3:], ("shop",)).branches == ()  # 1 + 2 + 3 saves one rule of 7: no


labels = st.tuples(st.sampled_from(("app", "tier", "zone")), st.sampled_from(("a", "b", "c")))
groups = st.lists(
    st.lists(labels, max_size=3, unique_by=lambda kv: kv[0]).map(lambda found: tuple(sorted(found))),
    max_size=14,
).map(lambda targets: _group(*targets))


def _flat(found: Plan) -> list[tuple[str, frozenset[str]]]:
    """Each entry with the sets its pod must be in, branch test included."""
    out = [(d.chain, frozenset(s.name for s, _ in local)) for d, local in found.plain]
    for branch in found.branches:
        out += [
            (d.chain, frozenset(s.name for s, _ in local) | {branch.test.name}) for d, local in branch.entries
        ]
    return sorted(out)


@settings(max_examples=300, deadline=None)
@given(groups)
def test_a_plan_keeps_every_entry_and_never_costs_more(
    group: tuple[tuple[Dispatch, SetSpec | None], ...],
) -> None:
    found = plan(group, ("shop",))
    assert _flat(found) == _flat(
        Plan(tuple((d, local_tests(t, ("shop",)) if t else ()) for d, t in group), ())
    )
    assert found.worst <= len(group)
    assert len({b.test.key[0].pods.requirements[0].key for b in found.branches}) <= 1  # type: ignore[index,union-attr]
    for labelled in ({"s4-app-a", "s4-tier-b"}, {"s4-app-c"}, set()):
        assert found.cost(lambda s, inside=labelled: s.name in inside) <= found.worst  # type: ignore[misc]


def test_a_group_whose_code_takes_every_level_is_branched_too() -> None:
    """nf_tables allows 15 links below FORWARD: 2 to the trie's root (the direction's chain), a
    goto per 1 bit of the group's code, a branch's goto and the policy chain's jump: a code of
    ``MAX_CODE_BITS`` 1 bits has room for a branch."""
    group = Group(0, ("shop",), (), SHOP)
    full = (1 << MAX_CODE_BITS) - 1
    assert 2 + MAX_CODE_BITS + 2 <= 15
    assert len(group_plan(TreeChain("NPC-x-I4-0", (), group, full, MAX_CODE_BITS)).branches) == 3


@pytest.mark.kernel
def test_branch_chains_come_and_go_with_the_policies(tmp_path: Path) -> None:
    """Case 78 applied (three branches), then without the app=c policies (a saving of one rule:
    the list flat again, every branch chain deleted), then again: the kernel enforces each."""
    case = load_case(CASES / "78-dispatch-branched-by-label.json")
    branched = list(case.checks[0].expect)
    names = [e.name for e in case.endpoints]
    flat = [list(row) for row in branched]
    for src, dst in (("r7", "c"), ("r7", "cv"), ("r9", "cv")):  # only the app=c policies allowed these
        flat[names.index(src)][names.index(dst)] = "X"
    without_c = [d for d in case.policy_documents() if not d["metadata"]["name"].startswith("c")]

    def branch_chains(cluster: Cluster) -> list[str]:
        save = cluster.node_exec(["iptables-save"]).stdout  # the root's branches: INGRESS-<n>
        return re.findall(r"^:(NPC-\w+-(?:I4-\w+|INGRESS)-\w+) ", save, re.M)

    with Cluster(case, tmp_path) as cluster:
        cluster.apply(backend="iptables")
        assert_tables(cluster, {80: branched}, "branched")
        assert len(branch_chains(cluster)) == 3
        cluster.apply(backend="iptables", policies=without_c)
        assert_tables(cluster, {80: ["".join(row) for row in flat]}, "flat again")
        assert branch_chains(cluster) == []
        cluster.apply(backend="iptables")
        assert_tables(cluster, {80: branched}, "branched again")
        assert len(branch_chains(cluster)) == 3
