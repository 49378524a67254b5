"""Optimiser passes: each one, and the whole pipeline, keeps every connection's answer.

The reference evaluator decides every probe (all address pairs, every protocol, ports around the
named ones) for random programs and inventories, with and without the pass; the answers must be
identical. Examples then check that the passes earn their keep: fewer rendered rules.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, example, given, settings
from npc.backends import get as get_backend
from npc.backends.base import Options
from npc.evaluate import Evaluator
from npc.inventory import Inventory, Namespace, Pod, read_inventory
from npc.ir import (
    NAMESPACE_NAME_LABEL,
    PROTOCOLS,
    Address,
    IPBlock,
    Peer,
    PodPeer,
    Policy,
    PortSpec,
    Program,
    Requirement,
    Rule,
    Selector,
    namespace_selector,
    subnet_of,
)
from npc.lower import lower
from npc.memo import Memo
from npc.passes.cover import peer_covers, peer_dead, ports_cover, rule_covers, selector_implies, unsatisfiable
from npc.passes.drop_dead_rules import drop_dead_rules
from npc.passes.drop_implied_requirements import CROWDED, drop_implied_requirements
from npc.passes.drop_inert_policies import drop_inert_policies
from npc.passes.merge_peers import merge_peers
from npc.passes.merge_ports import canonical_ports, merge_ports
from npc.passes.remove_shadowed import remove_shadowed
from npc.pipeline import PASSES, Pass, compile_program, compile_rules, optimise
from npc.sources import read_policy_sources
from random_clusters import (
    NAMESPACES,
    OUTSIDERS,
    POD_KEYS,
    PORT_NAMES,
    PORT_NUMBERS,
    V4_BASE,
    V6_BASE,
    VALUES,
    connectivity,
    generated_cluster,
    inventories,
    peers,
    programs,
    rules,
    selectors,
)

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
EACH_PASS = pytest.mark.parametrize("run", PASSES, ids=lambda p: p.__name__)


def _same_meaning(before: Program, after: Program, inventory: Inventory) -> None:
    expected = connectivity(Evaluator(before, inventory).allowed, inventory)
    assert connectivity(Evaluator(after, inventory).allowed, inventory) == expected


def test_every_pass_is_in_the_pipeline() -> None:
    """Every module under passes/ that defines a pass named after itself is in PASSES."""
    import importlib
    import pkgutil

    import npc.passes

    found = set()
    for module in pkgutil.iter_modules(npc.passes.__path__):
        run = getattr(importlib.import_module(f"npc.passes.{module.name}"), module.name, None)
        if callable(run):
            found.add(run)
    assert found, "no pass modules found"
    assert found == set(PASSES)


@EACH_PASS
@SETTINGS
@given(program=programs, inventory=inventories())
def test_pass_preserves_meaning(run: Pass, program: Program, inventory: Inventory) -> None:
    _same_meaning(program, run(program), inventory)


@SETTINGS
@given(program=programs, inventory=inventories())
def test_pipeline_preserves_meaning(program: Program, inventory: Inventory) -> None:
    _same_meaning(program, optimise(program), inventory)


@EACH_PASS
@settings(max_examples=200, deadline=None)
@given(program=programs)
def test_a_pass_keeps_to_one_namespace_and_its_networks(run: Pass, program: Program) -> None:
    """What ``optimise`` runs group by group (and the agent's memo reuses): a pass over the whole
    program is the pass over each (namespace, networks) group's policies alone."""
    groups: dict[tuple[str, tuple[str, ...]], list[Policy]] = {}
    for policy in program.policies:
        groups.setdefault((policy.namespace, policy.policy_for), []).append(policy)
    parts = [p for found in groups.values() for p in run(Program(tuple(found))).policies]
    assert run(program) == Program(tuple(parts))


# found by CI: a namespace part that selects by absence has an exclusion of its own, which a
# chain from the memo did not note again (one level only)
_BY_ABSENCE = PodPeer(
    Selector((Requirement(NAMESPACE_NAME_LABEL, "In", ("x",)), Requirement("team", "DoesNotExist", ()))),
    Selector((Requirement("app", "In", ("x",)),)),
)


@settings(max_examples=100, deadline=None)
@given(first=programs, second=programs)
@example(
    first=Program(()),
    second=Program(
        (Policy("a", "p0", Selector(()), None, (Rule(None, (PortSpec("TCP"),)), Rule((_BY_ABSENCE,), ()))),)
    ),
)
def test_a_compile_with_the_last_ones_memo_equals_a_fresh_one(first: Program, second: Program) -> None:
    """The agent's memo: policies changed, added, removed and back, each compile as from scratch."""
    memo = Memo()
    both = Program((*first.policies, *second.policies))
    for program in (first, both, second, first):
        assert compile_rules(program, memo=memo) == compile_rules(program)


@EACH_PASS
@settings(max_examples=300, deadline=None)
@given(program=programs)
def test_a_pass_is_its_own_fixed_point(run: Pass, program: Program) -> None:
    """What ``optimise``'s rounds rely on: a pass has nothing left to do on its own result."""
    once = run(program)
    assert run(once) == once


@EACH_PASS
@settings(max_examples=100, deadline=None)
@given(program=programs)
def test_pass_is_idempotent_after_the_pipeline(run: Pass, program: Program) -> None:
    """The pipeline reaches a fixed point for every pass: nothing left for any of them to do."""
    optimised = optimise(program)
    assert run(optimised) == optimised


@EACH_PASS
@settings(max_examples=100, deadline=None)
@given(program=programs)
def test_pass_never_changes_which_directions_isolate_alone(run: Pass, program: Program) -> None:
    """Only ``drop_inert_policies`` may clear a direction, and only a redundant one."""
    if run is drop_inert_policies:
        return
    after = run(program)
    assert [(p.ingress is None, p.egress is None) for p in after.policies] == [
        (p.ingress is None, p.egress is None) for p in program.policies
    ]


# --- the implication facts the passes stand on ---------------------------------------------------


def _label_sets(keys: tuple[str, ...], values: tuple[str, ...]) -> list[dict[str, str]]:
    """Every labelling of ``keys`` with ``values`` or nothing: the whole tiny universe."""
    out: list[dict[str, str]] = [{}]
    for key in keys:
        out = [{**labels, key: v} for labels in out for v in values] + out
    return out


POD_LABELS = _label_sets(POD_KEYS, VALUES)
NS_LABELS = [
    {NAMESPACE_NAME_LABEL: name, **team} for name in NAMESPACES for team in _label_sets(("team",), VALUES)
]
ADDRESSES = [*V4_BASE, *V6_BASE, *OUTSIDERS]
NAMED = [{}, *({(p, n): v} for p in ("TCP", "UDP") for n in PORT_NAMES for v in PORT_NUMBERS)]


@settings(max_examples=300, deadline=None)
@given(a=selectors(), b=selectors(), c=selectors(), d=selectors())
def test_a_peers_order_key_orders_as_attrs_does(a: Selector, b: Selector, c: Selector, d: Selector) -> None:
    """Rules sort their peers by the plain-tuple key (fast); the order, so every artefact, must
    be attrs' field-by-field one."""
    for x, y in (
        (PodPeer(a, b), PodPeer(c, d)),
        (PodPeer(a, b), PodPeer(a, d)),
        (PodPeer(a, b), PodPeer(c, b)),
    ):
        assert (x.order_key < y.order_key) == (x < y)
        assert (x.order_key == y.order_key) == (x == y)


@settings(max_examples=1000, deadline=None)
@given(a=selectors(), b=selectors())
def test_selector_implication_is_sound(a: Selector, b: Selector) -> None:
    """Checked against every label set the strategies can produce, not a sample."""
    for labels in POD_LABELS:
        if selector_implies(a, b) and a.matches(labels):
            assert b.matches(labels)
        if unsatisfiable(a):
            assert not a.matches(labels)


@settings(max_examples=1000, deadline=None)
@given(big=peers, small=peers)
def test_peer_coverage_is_sound(big: Peer, small: Peer) -> None:
    """Checked against every address and every namespace/pod labelling of the universe."""

    def addresses(peer: Peer) -> set[Address]:
        return {a for a in ADDRESSES if isinstance(peer, IPBlock) and peer.contains(a)}

    def labellings(peer: Peer) -> set[int]:
        pairs = ((ns, pod) for ns in NS_LABELS for pod in POD_LABELS)
        return {i for i, (ns, pod) in enumerate(pairs) if isinstance(peer, PodPeer) and peer.matches(ns, pod)}

    if peer_covers(big, small):
        assert addresses(small) <= addresses(big)
        assert labellings(small) <= labellings(big)


@settings(max_examples=1000, deadline=None)
@given(big=rules, small=rules)
def test_port_coverage_is_sound(big: Rule, small: Rule) -> None:
    if not ports_cover(big.ports, small.ports):
        return
    for named in NAMED:
        for protocol in PROTOCOLS:
            for port in range(78, 84):
                if not small.ports or any(p.matches(protocol, port, named) for p in small.ports):
                    assert not big.ports or any(p.matches(protocol, port, named) for p in big.ports)


def test_selector_implication_examples() -> None:
    web = Selector((Requirement("app", "In", ("web",)),))
    web_or_db = Selector((Requirement("app", "In", ("web", "db")),))
    assert selector_implies(web, web_or_db)
    assert not selector_implies(web_or_db, web)
    assert selector_implies(web, Selector())
    assert selector_implies(web, Selector((Requirement("app", "Exists"),)))
    assert selector_implies(web, Selector((Requirement("app", "NotIn", ("db",)),)))
    assert selector_implies(
        Selector((Requirement("app", "DoesNotExist"),)), Selector((Requirement("app", "NotIn", ("x",)),))
    )
    assert unsatisfiable(
        Selector((Requirement("app", "In", ("web",)), Requirement("app", "NotIn", ("web",))))
    )
    assert unsatisfiable(Selector((Requirement("app", "Exists"), Requirement("app", "DoesNotExist"))))
    assert not unsatisfiable(
        Selector((Requirement("app", "In", ("web", "db")), Requirement("app", "NotIn", ("web",))))
    )


def test_ip_block_coverage() -> None:
    wide = IPBlock("10.0.0.0/8", ("10.1.0.0/16",))
    assert peer_covers(wide, IPBlock("10.2.0.0/16"))
    assert not peer_covers(wide, IPBlock("10.1.2.0/24"))
    assert peer_covers(wide, IPBlock("10.1.0.0/15", ("10.1.0.0/16",)))
    assert not peer_covers(wide, IPBlock("10.1.0.0/15"))
    assert not peer_covers(IPBlock("10.0.0.0/8"), IPBlock("fd00::/8"))
    assert peer_covers(IPBlock("10.0.0.0/8"), IPBlock("10.0.0.0/24", ("10.0.0.0/16",)))  # dead


@settings(max_examples=1000, deadline=None)
@given(big=peers, small=peers)
def test_block_coverage_is_every_hole_inside_an_except(big: Peer, small: Peer) -> None:
    """Holes are found among the excepts by key (``_except_keys``); the same answer as comparing
    each hole with each except."""
    if not (isinstance(big, IPBlock) and isinstance(small, IPBlock)) or peer_dead(small):
        return
    holes = [h for h in big.excepts if h.version == small.version and h.overlaps(small.cidr)]
    want = subnet_of(small.cidr, big.cidr) and all(any(subnet_of(h, e) for e in small.excepts) for h in holes)
    assert peer_covers(big, small) == want
    inner = IPBlock("10.0.0.0/8", ("10.1.0.0/16", "10.2.3.0/24"))
    assert peer_covers(IPBlock("10.0.0.0/8", ("10.1.2.0/24", "10.2.3.128/25")), inner)
    assert not peer_covers(IPBlock("10.0.0.0/8", ("10.3.0.0/24",)), inner)


def test_port_coverage_and_canonical_form() -> None:
    assert canonical_ports([PortSpec("TCP", 80), PortSpec("TCP", 81, 90), PortSpec("TCP", 91)]) == (
        PortSpec("TCP", 80, 91),
    )
    assert canonical_ports([PortSpec("UDP", 53), PortSpec("UDP"), PortSpec("UDP", "dns")]) == (
        PortSpec("UDP"),
    )
    everything = Rule(None, ())
    web = Rule([PodPeer(namespace_selector("a"), Selector())], [PortSpec("TCP", 80)])
    assert rule_covers(everything, web)
    assert not rule_covers(web, everything)
    all_tcp = Rule(None, [PortSpec("TCP")])
    assert rule_covers(all_tcp, Rule(None, [PortSpec("TCP", "http")]))
    assert not rule_covers(Rule(None, [PortSpec("TCP", 80, 8080)]), Rule(None, [PortSpec("TCP", "http")]))


# --- each pass does what it says -----------------------------------------------------------------

A = namespace_selector("a")
FRONT = PodPeer(A, Selector.from_labels({"tier": "front"}))
API = PodPeer(A, Selector.from_labels({"tier": "api"}))
WEB = Selector.from_labels({"tier": "web"})


def _policy(
    ingress: list[Rule] | None, egress: list[Rule] | None = None, name: str = "p", sel: Selector = WEB
) -> Policy:
    return Policy("a", name, sel, ingress, egress)


def test_merge_ports_and_peers() -> None:
    program = Program(
        [
            _policy(
                [
                    Rule([FRONT], [PortSpec("TCP", 80)]),
                    Rule([FRONT], [PortSpec("TCP", 81)]),
                    Rule([API], [PortSpec("TCP", 80, 81)]),
                ]
            )
        ]
    )
    merged = merge_peers(merge_ports(program))
    assert merged.policies[0].ingress == (Rule([FRONT, API], [PortSpec("TCP", 80, 81)]),)


def test_merge_ports_all_ports_absorbs() -> None:
    program = Program([_policy([Rule([FRONT], [PortSpec("TCP", 80)]), Rule([FRONT], [])])])
    assert merge_ports(program).policies[0].ingress == (Rule([FRONT], []),)


def test_shadowed_rules_go_even_across_policies() -> None:
    allow_all = Policy("a", "all", Selector(), [Rule(None, [])])
    narrow = _policy([Rule([FRONT], [PortSpec("TCP", 80)])], name="narrow")
    other_ns = Policy("b", "x", WEB, [Rule([FRONT], [PortSpec("TCP", 80)])])
    out = remove_shadowed(Program([allow_all, narrow, other_ns]))
    by_name = {p.name: p for p in out.policies}
    assert by_name["narrow"].ingress == ()  # still isolates
    assert by_name["all"].ingress == (Rule(None, []),)
    assert by_name["x"].ingress == (Rule([FRONT], [PortSpec("TCP", 80)]),)  # another namespace


def test_duplicates_keep_one() -> None:
    rule = Rule([FRONT], [PortSpec("TCP", 80)])
    twins = Program([_policy([rule], name="p1"), _policy([rule], name="p2")])
    out = remove_shadowed(twins)
    assert sorted(len(p.ingress or ()) for p in out.policies) == [0, 1]


def test_dead_rules_and_peers_go() -> None:
    dead_block = IPBlock("10.0.0.0/24", ("10.0.0.0/16",))
    nobody = PodPeer(A, Selector((Requirement("app", "In", ()),)))
    program = Program(
        [
            _policy(
                [
                    Rule([dead_block, nobody], []),
                    Rule([], [PortSpec("TCP", 80)]),
                    Rule([dead_block, FRONT], []),
                ]
            )
        ]
    )
    assert drop_dead_rules(program).policies[0].ingress == (Rule([FRONT], []),)


def test_requirements_another_implies_go() -> None:
    """``team Exists`` beside ``team In [a]``, ``tier NotIn [db]`` beside ``tier In [web]``,
    ``debug NotIn [1]`` beside ``debug DoesNotExist``: the selector without them, in targets and
    in both sides of peers; a requirement nothing implies stays, and so does a policy with none."""

    def sel(*reqs: tuple[str, str, tuple[str, ...]]) -> Selector:
        return Selector(Requirement(k, op, v) for k, op, v in reqs)

    team = sel(("team", "Exists", ()), ("team", "In", ("a",)), ("env", "NotIn", ("dev",)))
    tier = sel(("tier", "NotIn", ("db",)), ("tier", "In", ("web",)), ("debug", "NotIn", ("1",)))
    tier = Selector((*tier.requirements, Requirement("debug", "DoesNotExist")))
    rule = Rule([PodPeer(team, tier), FRONT], [PortSpec("TCP", 80)])
    policy = Policy("a", "p", tier, [rule], [Rule([PodPeer(Selector(), team)], [])])
    (out,) = drop_implied_requirements(Program([policy])).policies
    tidy_team = sel(("team", "In", ("a",)), ("env", "NotIn", ("dev",)))
    tidy_tier = sel(("tier", "In", ("web",)), ("debug", "DoesNotExist", ()))
    assert out.pod_selector == tidy_tier
    assert out.ingress == (Rule([PodPeer(tidy_team, tidy_tier), FRONT], [PortSpec("TCP", 80)]),)
    assert out.egress == (Rule([PodPeer(Selector(), tidy_team)], []),)
    plain = _policy([Rule([FRONT], [PortSpec("TCP", 80)])])
    (same,) = drop_implied_requirements(Program([plain])).policies
    assert same is plain


def test_requirements_on_a_crowded_key_stay_as_written() -> None:
    """More requirements on one key than ``CROWDED``: the pairwise search would be quadratic in
    them (8,000 took 38 s), so that key's are kept; another key's implied requirement still goes."""
    absent, team = (
        Requirement("k", "DoesNotExist"),
        [Requirement("t", "Exists"), Requirement("t", "In", ("a",))],
    )
    for crowded in (CROWDED - 1, CROWDED):  # with ``absent``: CROWDED requirements on k, then one more
        others = [Requirement("k", "NotIn", (f"v{i}",)) for i in range(crowded)]
        policy = Policy("a", "p", Selector([*others, absent, *team]), [Rule([FRONT], [])], [])
        (out,) = drop_implied_requirements(Program([policy])).policies
        kept = [absent] if crowded < CROWDED else [*others, absent]  # absence implies every NotIn
        assert out.pod_selector == Selector([*kept, team[1]])


def test_inert_policies_go_but_isolation_stays() -> None:
    deny_all = Policy("a", "deny", Selector(), [], [])
    deny_web = _policy([], name="deny-web")
    nothing = Policy("a", "nothing", Selector(), None, None)
    allow = _policy([Rule([FRONT], [])], name="allow")
    out = drop_inert_policies(Program([deny_all, deny_web, nothing, allow]))
    assert [p.name for p in out.policies] == ["allow", "deny"]
    assert out.policies[1].ingress == () and out.policies[1].egress == ()
    alone = drop_inert_policies(Program([deny_web]))
    assert alone.policies == (deny_web,)  # nothing else isolates web: it must stay


# --- and it pays ---------------------------------------------------------------------------------


def _match_count(program: Program) -> int:
    lowered = lower(program)
    return sum(len(f.dispatch[d]) for f in lowered.families for d in f.dispatch) + sum(
        len(c.matches) for f in lowered.families for c in f.chains
    )


def test_rule_counts_go_down_on_examples() -> None:
    ns = [f"team{i}" for i in range(4)]
    policies = []
    for name in ns:
        sel = namespace_selector(name)
        policies += [
            Policy(name, "default-deny", Selector(), [], []),
            Policy(
                name,
                "web",
                WEB,
                [
                    Rule([PodPeer(sel, Selector.from_labels({"tier": "front"}))], [PortSpec("TCP", 80)]),
                    Rule([PodPeer(sel, Selector.from_labels({"tier": "front"}))], [PortSpec("TCP", 443)]),
                    Rule(
                        [PodPeer(sel, Selector.from_labels({"tier": "lb"}))],
                        [PortSpec("TCP", 80), PortSpec("TCP", 443)],
                    ),
                    Rule([PodPeer(sel, Selector.from_labels({"tier": "lb"}))], [PortSpec("TCP", 443)]),
                ],
            ),
            Policy(
                name,
                "dns",
                Selector(),
                None,
                [
                    Rule(
                        [
                            PodPeer(
                                namespace_selector("kube-system"), Selector.from_labels({"k8s-app": "dns"})
                            )
                        ],
                        [PortSpec("UDP", 53)],
                    ),
                    Rule(
                        [
                            PodPeer(
                                namespace_selector("kube-system"), Selector.from_labels({"k8s-app": "dns"})
                            )
                        ],
                        [PortSpec("TCP", 53)],
                    ),
                    Rule([IPBlock("0.0.0.0/0", ("10.0.0.0/8",))], [PortSpec("TCP", 443)]),
                    Rule([IPBlock("10.1.0.0/16")], [PortSpec("TCP", 443)]),
                ],
            ),
            Policy(
                name,
                "open",
                Selector.from_labels({"tier": "web", "public": "yes"}),
                [Rule(None, [PortSpec("TCP", 80)])],
            ),
        ]
    program = Program(policies)
    before, after = _match_count(program), _match_count(optimise(program))
    assert after < before
    assert after <= before * 2 // 3, (before, after)
    inventory = Inventory(
        tuple(Namespace(n, {"kubernetes.io/metadata.name": n}) for n in [*ns, "kube-system"]),
        tuple(
            Pod(n, f"{n}-{t}", {"tier": t}, (ipaddress.ip_address(f"10.0.{i}.{j + 1}"),))
            for i, n in enumerate(ns)
            for j, t in enumerate(("web", "front", "lb"))
        ),
    )
    _same_meaning(program, optimise(program), inventory)


def test_rule_counts_go_down_on_a_generated_cluster(tmp_path: Path) -> None:
    """The benchmark's realistic cluster: fewer policy-chain matches with the passes, same meaning
    (dispatch is per namespace group, and its fixed rules are not the passes' to save). Counted
    in the lowered program, which the passes change: the iptables renderer folds peers that
    differ in one set into one ``list:set`` rule, which saves part of the same rules again (112
    matches, 96 with the passes; 78 and 72 rendered rules)."""
    cluster = generated_cluster(tmp_path, seed=3, pod_seed=3)
    loaded = read_policy_sources([str(cluster / "policies")])
    inventory = read_inventory(str(cluster / "inventory.json"))
    program = Program(loaded.policies)

    def counted(passes: tuple[Pass, ...]) -> tuple[int, int]:
        compiled = compile_program(program, inventory, passes=passes)
        files = get_backend("iptables").render(compiled, Options())
        lines = [line.split() for f in ("rules.v4", "rules.v6") for line in files[f].splitlines()]
        matches = sum(len(c.matches) for f in compiled.lowered.families for c in f.chains)
        return matches, sum(words[:1] == ["-A"] and "-P-" in words[1] for words in lines)

    (before, rendered_before), (after, rendered_after) = counted(()), counted(PASSES)
    assert after < before * 0.9, (before, after)
    assert rendered_after < rendered_before, (rendered_before, rendered_after)
    _same_meaning(program, optimise(program), inventory)


@given(program=programs)
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_remove_shadowed_keys_skip_no_covering_pair(program: Program) -> None:
    """``remove_shadowed`` compares only rules sharing a key: it keeps what comparing every pair keeps."""
    from npc.passes import remove_shadowed as module

    every_pair = module.keep_maximal
    keyed = remove_shadowed(program)
    try:
        module.keep_maximal = lambda items, covers, *_: every_pair(items, covers)  # type: ignore[assignment,misc]
        assert remove_shadowed(program) == keyed
    finally:
        module.keep_maximal = every_pair


@attrs.frozen
class _Keyed:
    """What ``remove_shadowed`` did: its result, the rule pairs it compared, and the keys of each
    item it keyed (rules, and the peers of rules listing several)."""

    out: Program
    compared: int
    anchors: list[int]
    probes: list[int]


def _keyed(program: Program) -> _Keyed:
    from npc.passes import remove_shadowed as module

    compared = 0
    anchored: list[int] = []
    probed: list[int] = []
    keep_maximal = module.keep_maximal

    def measuring(items: Any, covers: Any, anchors: Any, probes: Any) -> Any:
        def counted(big: Any, small: Any) -> bool:
            nonlocal compared
            compared += 1
            return bool(covers(big, small))

        anchored.extend(len(anchors(item)) for item in items)
        probed.extend(len(probes(item)) for item in items)
        return keep_maximal(items, counted, anchors, probes)

    try:
        module.keep_maximal = measuring
        out = remove_shadowed(program)
    finally:
        module.keep_maximal = keep_maximal
    return _Keyed(out, compared, anchored, probed)


def _one_rule(name: str, target: Selector, namespaces: Selector, app: str) -> Policy:
    peer = PodPeer(namespaces, Selector.from_labels({"app": app}))
    return Policy("db", name, target, ingress=(Rule((peer,), [PortSpec("TCP", 5432)]),))


DB = Selector.from_labels({"app": "db"})


def test_remove_shadowed_compares_few_rules_of_many_policies_for_one_database() -> None:
    """One policy per client of a database, each from `app=c<i % 7>` in its own namespace: keyed by
    the pod side, each rule was compared with a seventh of the others (8,000 policies: 72 s and
    4.2 GiB, with every pair's selector answer held); keyed by the rarer namespace, with none but
    itself. One policy from every namespace's `app=c0` still shadows the rules it covers."""
    clients = [_one_rule(f"p{i}", DB, namespace_selector(f"n{i}"), f"c{i % 7}") for i in range(3000)]
    keyed = _keyed(Program([_one_rule("every-c0", DB, Selector(), "c0"), *clients]))
    assert keyed.compared < 2 * len(clients), keyed.compared
    left = {p.name for p in keyed.out.policies if p.ingress}
    assert left == {"every-c0"} | {f"p{i}" for i in range(3000) if i % 7}


def test_remove_shadowed_compares_few_rules_of_many_policies_allowing_one_peer() -> None:
    """Policies of one namespace each selecting its own `app` and allowing the same peer: each rule
    covers every other, but no policy selects another's pods; keyed by peers alone every pair was
    compared (8,000 policies: 136 s). A policy selecting every pod still shadows them all."""
    fe = namespace_selector("db")
    apps = [_one_rule(f"p{i}", Selector.from_labels({"app": f"a{i}"}), fe, "fe") for i in range(3000)]
    keyed = _keyed(Program(apps))
    assert keyed.compared < 2 * len(apps), keyed.compared
    assert keyed.out == Program(apps)
    keyed = _keyed(Program([*apps, _one_rule("every", Selector(), fe, "fe")]))
    assert keyed.compared < 4 * len(apps), keyed.compared
    assert {p.name for p in keyed.out.policies if p.ingress} == {"every"}


def test_remove_shadowed_looks_up_pairs_of_keys_only_where_they_are_few() -> None:
    """A selector and a peer of 1,000 requirements each would look up every pair of their keys
    (3,000 each: 28 million keys and 6 GiB); past ``PAIRED`` pairs a rule looks up its peers' keys
    alone, and the result is what comparing every pair keeps."""
    many = Selector(Requirement(f"k{i}", "Exists") for i in range(1000))
    x = Requirement("x", "In", ("y",))
    policies = [
        Policy("a", "wide", many, ingress=(Rule((PodPeer(many, many),)),)),
        Policy("a", "narrow", many, ingress=(Rule((PodPeer(many, Selector((*many.requirements, x))),)),)),
    ]
    keyed = _keyed(Program(policies))
    assert max(keyed.probes) < 5000, max(keyed.probes)
    assert [p.name for p in keyed.out.policies if p.ingress] == ["wide"]


def test_remove_shadowed_anchors_a_selector_of_long_value_lists_by_its_key() -> None:
    """A selector `In` 50 values paired with a rule of 5 peers `In` 50 values each: anchored value by
    value, 12,750 pairs of keys per rule; past ``FINE`` values a selector is anchored by its key."""
    values = tuple(f"v{i}" for i in range(50))
    wide = Selector((Requirement("app", "In", values),))
    peers = tuple(PodPeer(Selector((Requirement(f"k{i}", "In", values),)), Selector()) for i in range(5))
    policies = [Policy("a", f"p{i}", wide, ingress=(Rule(peers[i:]),)) for i in range(3)]
    keyed = _keyed(Program(policies))
    assert max(keyed.anchors) < 1000, max(keyed.anchors)
    assert [p.name for p in keyed.out.policies if p.ingress] == ["p0"]  # its peers hold the others'
