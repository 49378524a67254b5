"""Pod sets of one namespace and one selector are tested as shared sets (``lower.part_keys``):
the namespace's pods and, per requirement of the selector, its pods in every namespace. That is
only right if the parts hold exactly the set's members between them, and every backend tests
them all."""

from __future__ import annotations

import ipaddress
import json
import re

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from npc.backends import get as get_backend
from npc.backends.base import Options
from npc.backends.iptables.mark_tree import Marks
from npc.backends.iptables.render import everyone, trees, used_sets
from npc.inventory import Inventory, Namespace, Pod
from npc.ir import (
    NAMESPACE_NAME_LABEL,
    Direction,
    PodPeer,
    Policy,
    Program,
    Requirement,
    Rule,
    Selector,
    namespace_selector,
)
from npc.lower import (
    EVERYWHERE,
    EXPANDED,
    NAMED,
    Chain,
    SetSpec,
    Side,
    _Lowerer,
    across,
    by_crowding,
    by_value,
    lower,
)
from npc.lower import tested as _tested  # a test name to pytest
from npc.lowered_json import decode, encode
from npc.memo import Memo
from npc.pipeline import compile_program, compile_rules
from npc.resolve import Compiled, Entry, Resolver
from random_clusters import inventories, programs
from random_clusters import selectors as drawn_selectors

WEB = Selector((Requirement("app", "In", ("web",)),))
DB = Selector((Requirement("app", "In", ("db",)),))


def _allow_web_from_web(namespace: str) -> Policy:
    web = PodPeer(namespace_selector(namespace), WEB)
    return Policy(namespace, "web", WEB, ingress=(Rule(peers=(web,)),))


NAMESPACES = ("a", "b", "c")
PROGRAM = Program(tuple(_allow_web_from_web(ns) for ns in NAMESPACES))
INVENTORY = Inventory(
    tuple(Namespace(ns, {NAMESPACE_NAME_LABEL: ns}) for ns in NAMESPACES),
    tuple(
        Pod(ns, f"{app}-{i}", {"app": app}, (ipaddress.ip_address(f"10.0.{n}.{i + 10 * (app == 'db')}"),))
        for n, ns in enumerate(NAMESPACES)
        for app in ("web", "db")
        for i in range(1, 3)
    ),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(program=programs, inventory=inventories())
def test_a_set_holds_exactly_what_its_parts_all_hold(program: Program, inventory: Inventory) -> None:
    """... and, for a peer by absence across namespaces, what the parts of its other
    requirements (or that part whole) all hold and none of the parts of what it excludes do."""
    compiled = compile_program(program, inventory)
    members = compiled.members

    def held(spec: SetSpec) -> set[str]:
        return {e for e, _ in members[spec.name]}

    for family in compiled.lowered.families:
        for spec in family.sets:
            if not spec.parts:
                continue
            if spec.excluded:
                for kept in spec.parts:
                    selectors = (kept.key[0].namespaces, kept.key[0].pods)  # type: ignore[index,union-attr]
                    assert all(r.op in ("In", "Exists") for s in selectors for r in s.requirements)
                kept_pods = set.intersection(*map(held, spec.parts))
                assert held(spec) == kept_pods - set().union(*map(held, spec.excluded))
                continue
            (peer,) = spec.key  # type: ignore[misc]
            selector_parts = list(spec.parts)
            named = [v for r in peer.namespaces.requirements[:1] for v in r.values[:1]]
            one_namespace = any(peer.namespaces == namespace_selector(v) for v in named)
            if one_namespace:  # a selector's pods everywhere: its requirements' parts alone
                ns_part = selector_parts.pop(0)
                assert ns_part.key == (PodPeer(peer.namespaces, EVERYWHERE),)
            elif not peer.namespaces.is_all:  # across namespaces: each namespace requirement's too
                spaces = peer.namespaces.requirements
                ns_parts, selector_parts = selector_parts[: len(spaces)], selector_parts[len(spaces) :]
                assert [p.key for p in ns_parts] == [(PodPeer(Selector((r,)), EVERYWHERE),) for r in spaces]
            assert [p.key for p in selector_parts] == [
                (PodPeer(EVERYWHERE, Selector((r,))),) for r in peer.pods.requirements
            ]
            assert held(spec) == set.intersection(*map(held, spec.parts))


def test_a_backend_works_out_the_members_of_only_the_sets_it_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """A program holds sets no backend loads (a set tested by its parts, a dispatch target tested
    by its namespaces' tests): their members are never worked out (``resolve.Resolved``: at the
    mixed L, 15,000 of 22,000 sets went unread). Each set read is worked out once, whichever
    backends read it, and the artefacts are those of every set worked out beforehand."""
    asked: list[str] = []
    members = Resolver.members

    def counting(self: Resolver, spec: SetSpec, scope: tuple[PodPeer, ...] | None = None) -> list[Entry]:
        asked.append(spec.name)
        return members(self, spec, scope)

    monkeypatch.setattr(Resolver, "members", counting)
    compiled = compile_program(PROGRAM, INVENTORY)
    assert all(name in compiled.members for name in compiled.members) and "x" not in compiled.members
    assert asked == []
    backends = ("iptables", "nftables", "weave", "calico")
    files = [get_backend(backends[0]).render(compiled, Options())]
    assert len(asked) == len(set(asked)) < len(compiled.members)
    files += [get_backend(b).render(compiled, Options()) for b in backends[1:]]
    assert len(asked) == len(set(asked))
    eager = Compiled(compiled.program, compiled.lowered, dict(compiled.members))
    assert files == [get_backend(b).render(eager, Options()) for b in backends]


def test_one_selector_in_three_namespaces_is_four_sets_not_three_products() -> None:
    """Per family: a set per namespace and one for ``app=web`` everywhere (the three products
    are still the program's sets, for dispatch and the manifest, but no rule tests them)."""
    lowered = lower(PROGRAM)
    used = used_sets(lowered.family(4), Marks())
    keys = {s.key for s in used}
    assert keys == {(PodPeer(namespace_selector(ns), EVERYWHERE),) for ns in NAMESPACES} | {
        (PodPeer(EVERYWHERE, WEB),)
    }
    compiled = compile_program(PROGRAM, INVENTORY)
    selector = next(s for s in used if s.key == ((PodPeer(EVERYWHERE, WEB),)))
    assert [e for e, _ in compiled.members[selector.name]] == [
        f"10.0.{n}.{i}" for n in range(3) for i in (1, 2)
    ]


def test_every_backend_tests_both_parts() -> None:
    compiled = compile_program(PROGRAM, INVENTORY)
    peer = compiled.lowered.family(4).chains[0].matches[0].peer
    assert peer is not None
    ns_part, selector_part = (s.name for s in _tested(peer))
    rules = get_backend("iptables").render(compiled, Options())["rules.v4"]
    both = f"-m set --match-set npc-ycua4-{ns_part} src -m set --match-set npc-ycua4-{selector_part} src"
    assert both in rules, rules
    # a dispatch group's mark proves the namespace: only the selector is left to test (the pod's
    # end, dst), by a flag of the group's mark (``mark_tree.flags``); the chain, of one rule, is
    # its dispatch rule (``inlined``), the peer's tests beside
    chains = trees(compiled.lowered, 4, Marks())["ingress"].chains
    flags = {f.mark for c in chains for f in c.flags if [t.name for t, _ in f.tests] == [selector_part]}
    dispatch = [
        line
        for line in rules.splitlines()
        if any(f"{Marks().unallowed(f)} " in line for f in flags)
        and re.search(r"-(I4-\w+|INGRESS)$", line.split()[1])
    ]
    assert len(dispatch) == 3
    assert all(line.count(" dst") == 0 for line in dispatch), dispatch
    assert sum(both in line for line in dispatch) == 1  # each namespace's own peer: its own part
    assert all(line.count(" src") == 2 and f"{selector_part} src" in line for line in dispatch), dispatch
    flat = get_backend("weave").render(compiled, Options())["rules.v4"]  # no group marks: both parts
    dispatch = [
        line for line in flat.splitlines() if line.startswith("-A WEAVE-NPC-INGRESS ") and "-j NPC-" in line
    ]
    assert len(dispatch) == 3
    assert all(line.count("--match-set") == 2 and selector_part in line for line in dispatch), dispatch
    assert (
        f"npc-ycua4-{peer.name}" not in rules + get_backend("iptables").render(compiled, Options())["ipsets"]
    )
    nft = get_backend("nftables").render(compiled, Options())["ruleset.nft"]
    assert f"ip saddr @{ns_part} ip saddr @{selector_part} " in nft
    assert f"@{peer.name}" not in nft


def test_parts_survive_the_manifest() -> None:
    lowered = lower(PROGRAM)
    back = decode(json.loads(json.dumps(encode(lowered))))
    for was, now in zip(lowered.families, back.families, strict=True):
        assert [(s.name, [p.name for p in s.parts]) for s in was.sets] == [
            (s.name, [p.name for p in s.parts]) for s in now.sets
        ]
        assert any(s.parts for s in now.sets)


def _one_pod_per_value(spaces: list[str], key: str, values: list[str], net: int) -> Inventory:
    """In each namespace one pod per value, labelled ``key=value``, at 10.<net>.<namespace>.<value>."""
    return Inventory(
        tuple(Namespace(ns, {NAMESPACE_NAME_LABEL: ns}) for ns in spaces),
        tuple(
            Pod(ns, value, {key: value}, (ipaddress.ip_address(f"10.{net}.{n}.{i + 1}"),))
            for n, ns in enumerate(spaces)
            for i, value in enumerate(values)
        ),
    )


def test_a_selector_by_what_pods_lack_is_not_split() -> None:
    """``app NotIn [<own app>]`` in every namespace: split, each part would hold nearly every pod
    of the cluster; whole, each set holds its namespace's few. ``In`` and ``Exists`` split."""
    apps = [f"app{i}" for i in range(20)]
    spaces = [f"ns{i}" for i in range(20)]

    def policy(ns: str, pods: Selector) -> Policy:
        return Policy(ns, "p", Selector(), ingress=(Rule(peers=(PodPeer(namespace_selector(ns), pods),)),))

    others = [Selector((Requirement("app", "NotIn", (app,)),)) for app in apps]
    lacking = [Selector((Requirement(app, "DoesNotExist"),)) for app in apps]
    mixed = [
        Selector((Requirement("app", "In", ("web",)), Requirement("v", "NotIn", (app,)))) for app in apps
    ]
    plain = [
        Selector((Requirement("app", "In", ("web",)),)),
        Selector((Requirement("app", "Exists"), Requirement("tier", "In", ("db",)))),
        Selector((Requirement("app", "In", ("web",)), Requirement("tier", "In", ("api", "db")))),
    ]
    inventory = _one_pod_per_value(spaces, "app", apps, 1)
    for selectors in (others, lacking, mixed):
        program = Program(tuple(policy(ns, s) for ns, s in zip(spaces, selectors, strict=True)))
        compiled = compile_program(program, inventory)
        assert not any(s.parts for f in compiled.lowered.families for s in f.sets)
        entries = get_backend("iptables").render(compiled, Options())["ipsets"].count("\nadd ")
        assert entries < 3 * len(inventory.pods)  # 400 pods; split, these would be 20 x 380
    for selector in plain:
        program = Program(tuple(policy(ns, selector) for ns in spaces))
        peer = lower(program).family(4).chains[0].matches[0].peer
        assert peer is not None and len(peer.parts) == 1 + len(peer.key[0].pods.requirements)  # type: ignore[union-attr]


def test_a_target_in_every_namespace_is_tested_by_parts_once_the_namespace_is_known() -> None:
    """One policy in each of 20 namespaces, the same rules (one chain, one dispatch entry): its
    target is a union of 20 namespaces' pods, a copy of every pod it selects. A dispatch group's
    mark proves the pod's namespace, so the group tests the selector alone, by parts: not in
    ``role=batch``'s, or in ``role=api``'s and ``tier=db``'s; a value list keeps the union."""
    spaces = [f"ns{i}" for i in range(20)]
    inventory = _one_pod_per_value(spaces, "role", ["batch", "api", "web"], 2)
    rule = Rule(peers=(PodPeer(EVERYWHERE, Selector((Requirement("role", "In", ("web",)),))),))

    def part(key: str, value: str) -> tuple[PodPeer]:
        return (PodPeer(EVERYWHERE, Selector((Requirement(key, "In", (value,)),))),)

    cases = [
        (Selector((Requirement("role", "NotIn", ("batch",)),)), {part("role", "batch"): True}),
        (
            Selector((Requirement("role", "In", ("api",)), Requirement("tier", "In", ("db",)))),
            {part("role", "api"): False, part("tier", "db"): False},
        ),
    ]
    for selector, tests in cases:
        program = Program(tuple(Policy(ns, "p", selector, ingress=(rule,)) for ns in spaces))
        compiled = compile_program(program, inventory)
        family = compiled.lowered.family(4)
        used = used_sets(family, Marks())
        assert all(len(s.key) == 1 for s in used if s.kind == "pods")  # type: ignore[arg-type]
        files = get_backend("iptables").render(compiled, Options())
        assert files["ipsets"].count("\nadd ") < 2 * len(inventory.pods)  # the union alone: 40 or 20 more
        # the one group's code leaves it every bit: a flag stands for the parts (``mark_tree.flags``)
        (chain,) = trees(compiled.lowered, 4, Marks())["ingress"].chains
        (flag,) = (f for f in chain.flags if {t.key: out for t, out in f.tests} == tests)
        assert Marks().unallowed(flag.mark) in files["rules.v4"]
    listed = Selector((Requirement("role", "In", ("api", "batch")),))
    program = Program(tuple(Policy(ns, "p", listed, ingress=(rule,)) for ns in spaces))
    family = compile_program(program, inventory).lowered.family(4)
    (scope, *_) = family.scopes["ingress"]
    assert [test for _, test in scope.dispatch] == [family.dispatch["ingress"][0].target]


@settings(max_examples=200)
@given(selector=st.one_of(drawn_selectors(listed=3), st.just(Selector((Requirement("app", "NotIn", ()),)))))
def test_a_group_tests_a_target_by_parts_or_as_the_target(selector: Selector) -> None:
    """Whatever the selector, a dispatch group tests a target shared by two namespaces either as
    the target itself or by shared parts only (a requirement of one value or ``Exists``, or
    every pod), never as a new set of the selector's pods in every namespace: that set would copy
    every namespace's pods it matches. ``NotIn []`` excludes nothing, so it is no part."""
    rule = Rule(peers=(PodPeer(EVERYWHERE, WEB),))
    program = Program(tuple(Policy(ns, "p", selector, ingress=(rule,)) for ns in ("a", "b")))
    family = lower(program).family(4)
    for scope in family.scopes["ingress"]:
        for entry, test in scope.dispatch:
            if test is None or test == entry.target:
                continue
            for part in _tested(test, ("a", "b")):
                (peer,) = part.key  # type: ignore[misc]
                assert peer.namespaces == EVERYWHERE, part
                requirements = peer.pods.requirements
                assert len(requirements) <= 1, part
                assert all(r.op in ("In", "Exists") and len(r.values) < 2 for r in requirements), part


def test_a_selector_is_tested_requirement_by_requirement() -> None:
    """``app=a<i>, tier=db``, ``app=a<i>`` and ``tier=db`` in every namespace: as whole selectors
    a pod of tier db would be in three parts (and one per other selector holding its app); one
    part per requirement holds it once per label, and the rule tests them all."""
    spaces = [f"ns{i}" for i in range(10)]
    tiers = ("db", "web")
    inventory = Inventory(
        tuple(Namespace(ns, {NAMESPACE_NAME_LABEL: ns}) for ns in spaces),
        tuple(
            Pod(
                ns,
                f"a{a}-{tier}",
                {"app": f"a{a}", "tier": tier},
                (ipaddress.ip_address(f"10.3.{n}.{a * 2 + t}"),),
            )
            for n, ns in enumerate(spaces)
            for a in range(5)
            for t, tier in enumerate(tiers)
        ),
    )

    def selector(**labels: str) -> Selector:
        return Selector(tuple(Requirement(k, "In", (v,)) for k, v in sorted(labels.items())))

    policies = [
        Policy(
            ns,
            f"p{a}-{i}",
            target,
            ingress=(Rule(peers=(PodPeer(namespace_selector(ns), s),)),),
        )
        for ns in spaces
        for a in range(5)
        for i, (target, s) in enumerate(
            (
                (selector(app=f"a{a}"), selector(app=f"a{a}", tier="db")),
                (selector(app=f"a{a}", tier="db"), selector(app=f"a{(a + 1) % 5}")),
                (selector(app=f"a{a}", tier="web"), selector(tier="db")),
            )
        )
    ]  # apart: the optimiser finds app=a<i>, tier=db within tier=db for the same pods
    compiled = compile_program(Program(tuple(policies)), inventory)
    used = used_sets(compiled.lowered.family(4), Marks())
    selector_parts = [s for s in used if s.key[0].namespaces.is_all]  # type: ignore[union-attr]
    assert sorted(str(s.key[0].pods) for s in selector_parts) == sorted(  # type: ignore[union-attr]
        str(selector(**{k: v})) for k, v in [("tier", "db"), *(("app", f"a{a}") for a in range(5))]
    )
    for pod in inventory.pods:
        holding = [
            s for s in selector_parts if any(m == str(pod.ips[0]) for m, _ in compiled.members[s.name])
        ]
        assert len(holding) == 1 + (pod.labels["tier"] == "db")
    peer = next(
        m.peer
        for c in compiled.lowered.family(4).chains
        for m in c.matches
        if m.peer is not None and len(m.peer.key[0].pods.requirements) == 2  # type: ignore[union-attr]
    )
    tests = "".join(f" -m set --match-set npc-ycua4-{p.name} src" for p in peer.parts)
    assert len(peer.parts) == 3
    assert tests in get_backend("iptables").render(compiled, Options())["rules.v4"]


COMPONENTS = [f"c{i}" for i in range(8)]
PAIRS = [(a, b) for i, a in enumerate(COMPONENTS) for b in COMPONENTS[i + 1 :]]  # 28 lists
SPACES = [f"ns{n}" for n in range(40)]
COMPONENT_PODS = _one_pod_per_value(SPACES, "component", COMPONENTS, 2)


def _naming(lists: dict[tuple[str, ...], list[str]]) -> Program:
    """Per list, a policy in each of its namespaces allowing that namespace's pods of the list."""

    def policy(ns: str, i: int, pair: tuple[str, ...]) -> Policy:
        peer = PodPeer(namespace_selector(ns), Selector((Requirement("component", "In", pair),)))
        return Policy(ns, f"p{i}", Selector(), ingress=(Rule(peers=(peer,)),))

    return Program(
        tuple(policy(ns, i, pair) for i, (pair, spaces) in enumerate(lists.items()) for ns in spaces)
    )


def _lowered_with_manifest(program: Program) -> Compiled:
    """The program compiled over ``COMPONENT_PODS``; its parts survive the manifest."""
    compiled = compile_program(program, COMPONENT_PODS)
    back = decode(json.loads(json.dumps(encode(compiled.lowered))))
    for was, now in zip(compiled.lowered.families, back.families, strict=True):
        assert [(s.name, [p.name for p in s.parts]) for s in now.sets] == [
            (s.name, [p.name for p in s.parts]) for s in was.sets
        ]
    return compiled


def test_value_lists_are_tested_value_by_value() -> None:
    """28 lists of 2 of 8 components, each named in one or two of 40 namespaces. A list's own part
    would hold its pods of all 40 namespaces, a pod in the part of all 7 lists holding its
    component; whole, each list of each namespace would be a set. Value by value, each rule
    tests its namespace and one component: 8 parts, each pod in one."""
    compiled = _lowered_with_manifest(
        _naming({pair: [SPACES[i % 40], SPACES[(i * 7) % 40]] for i, pair in enumerate(PAIRS)})
    )
    family = compiled.lowered.family(4)
    pods = [s for s in family.sets if isinstance(s.key, tuple) and len(s.key) == 1 and s.kind == "pods"]
    assert all(len(r.values) < 2 for s in pods for r in s.key[0].pods.requirements)
    selector_parts = {p for s in pods for p in s.parts if p.key[0].namespaces.is_all}
    assert {p.key[0].pods.requirements[0].values for p in selector_parts} == {(c,) for c in COMPONENTS}
    for pod in COMPONENT_PODS.pods:
        assert (
            sum(any(m == str(pod.ips[0]) for m, _ in compiled.members[p.name]) for p in selector_parts) == 1
        )
    chain = next(c for c in family.chains if c.comment == "ns0/p0")
    assert len(chain.matches) == 2  # c0 or c1


def test_a_peer_of_more_combinations_than_expanded_is_one_set() -> None:
    """``component In [5 values]``: five rules for one peer would cost more than its set."""
    compiled = _lowered_with_manifest(
        _naming({tuple(COMPONENTS[:5]): ["ns0"], tuple(COMPONENTS[:2]): ["ns1"]})
    )
    family = compiled.lowered.family(4)
    five = [
        s
        for s in family.sets
        if s.kind == "pods" and any(len(r.values) == 5 for p in s.key for r in p.pods.requirements)
    ]
    assert len(five) == 1 and not five[0].parts and EXPANDED == 4
    assert len(next(c for c in family.chains if c.comment == "ns0/p0").matches) == 1


def test_a_format_1_manifest_splits_what_part_keys_splits() -> None:
    """Manifests written before parts were named split every set ``part_keys`` splits whose parts
    are sets of the program: read back, they render the rules that were reviewed then."""
    data = json.loads(json.dumps(encode(lower(PROGRAM))))
    data["format"] = 1
    for meaning in data["sets"].values():
        meaning.pop("parts", None)
    for scope in (s for f in data["families"] for scopes in f["scopes"].values() for s in scopes):
        scope["dispatch"] = [[i, test is None] for i, test in scope["dispatch"]]  # format 1 said "whole"
    back = decode(data)
    assert [(s.name, [p.name for p in s.parts]) for s in back.family(4).sets] == [
        (s.name, [p.name for p in s.parts]) for s in lower(PROGRAM).family(4).sets
    ]
    assert any(s.parts for s in back.family(4).sets)


def test_peers_across_namespaces_are_never_copied_into_a_union() -> None:
    """Rules that list two cluster-wide peers (``app In [x]`` in every namespace) side by side:
    each peer is one shared set (the requirement's own part), however many rules pair them, so
    entries grow with the pods, not with the pairs; a rule's local peers are still one union."""
    apps = [f"app{i}" for i in range(6)]
    spaces = ["a", "b", "c"]
    everywhere = [PodPeer(EVERYWHERE, Selector((Requirement("app", "In", (app,)),))) for app in apps]
    local = [
        PodPeer(namespace_selector("a"), Selector((Requirement("tier", "In", (tier,)),)))
        for tier in ("x", "y")
    ]
    policies = tuple(
        Policy(ns, f"p-{i}-{j}", WEB, ingress=(Rule(peers=(everywhere[i], everywhere[j], *local)),))
        for ns in spaces
        for i in range(len(apps))
        for j in range(i + 1, len(apps))
    )
    inventory = _one_pod_per_value(spaces, "app", apps, net=0)
    compiled = compile_program(Program(policies), inventory)
    program = compiled.lowered.family(4)
    used = used_sets(program, Marks())
    cross = {s.key for s in used if s.key[0].namespaces == EVERYWHERE}  # type: ignore[index,union-attr]
    # 6 sets for 15 pairs x 3 namespaces; the targets' ``app=web`` part, the dispatch's test, is a
    # flag of the group's mark (``mark_tree.flags``), no set
    assert cross == {(peer,) for peer in everywhere}
    flags = [f.tests for c in trees(compiled.lowered, 4, Marks())["ingress"].chains for f in c.flags]
    assert [t.key for tests in flags for t, _ in tests] == [(PodPeer(EVERYWHERE, WEB),)]
    entries = sum(len(compiled.members[s.name]) for s in used if s.kind == "pods")
    assert entries <= 3 * len(inventory.pods), entries
    peers = {m.peer for c in program.chains for m in c.matches if m.peer is not None}
    assert [s.key for s in peers if len(s.key) > 1] == [tuple(sorted(local, key=repr))]  # type: ignore[arg-type]
    chain = next(c for c in program.chains if c.comment == "a/p-0-1")
    assert {m.peer.key for m in chain.matches if m.peer} == {  # type: ignore[union-attr]
        (everywhere[0],),
        (everywhere[1],),
        tuple(sorted(local, key=repr)),
    }


TEAMS = [f"t{i}" for i in range(8)]
TEAM_SPACES = [f"ns{i}" for i in range(24)]  # three a team


NAMES = PodPeer(Selector((Requirement(NAMESPACE_NAME_LABEL, "In", ("ns0", "ns1")),)), Selector())


def _team_lists() -> tuple[Program, Inventory]:
    """Each namespace allows from its own team and two others (``team In [3 teams]``, 72 lists
    of 56 possible), of all pods and of ``app=web``; and from two namespaces by name."""
    cluster = _one_pod_per_value(TEAM_SPACES, "app", ["web", "db"], net=0)
    teams = {ns: TEAMS[i // 3] for i, ns in enumerate(TEAM_SPACES)}
    namespaces = tuple(Namespace(ns, {NAMESPACE_NAME_LABEL: ns, "team": teams[ns]}) for ns in TEAM_SPACES)

    def peer(i: int, ns: str, pods: Selector) -> PodPeer:
        others = [t for t in TEAMS if t != teams[ns]]
        listed = (teams[ns], others[i % 7], others[(i * 3 + 1) % 7])
        return PodPeer(Selector((Requirement("team", "In", listed),)), pods)

    policies = [
        Policy(ns, f"p{j}", WEB, ingress=(Rule(peers=(peer(i + j, ns, pods),)),))
        for i, ns in enumerate(TEAM_SPACES)
        for j, pods in enumerate((Selector(), WEB))
    ]
    # every pod, not WEB: a chain of its own, not joined with ns5's own pN (``lower._combined``)
    policies.append(Policy("ns5", "names", Selector(), ingress=(Rule(peers=(NAMES,)),)))
    return Program(tuple(policies)), Inventory(namespaces, cluster.pods)


def test_value_lists_across_namespaces_are_tested_value_by_value() -> None:
    """A ``team In [...]`` peer is a peer per team: a set per (team, pods) shared by every rule
    naming that team, so a pod is in one per pod selector, not one per list naming its team (7
    here, more with more namespaces); ``app In [...]`` in every namespace is each app's own part.
    A list of names stays one set (its copy is of the named namespaces only), and so does a peer
    of more combinations than ``EXPANDED``."""
    program, inventory = _team_lists()
    compiled = compile_program(program, inventory)
    family = compiled.lowered.family(4)

    def teams(spec: SetSpec) -> list[int]:
        key = spec.key[0] if spec.kind == "pods" and isinstance(spec.key, tuple) else None
        if not isinstance(key, PodPeer):
            return []
        return [len(r.values) for r in key.namespaces.requirements if r.key == "team"]

    across = [s for s in used_sets(family, Marks()) if teams(s)]
    assert {n for s in across for n in teams(s)} == {1}
    assert len(across) == 2 * len(TEAMS)  # per team: all pods, app=web
    assert sum(len(compiled.members[s.name]) for s in across) == len(inventory.pods) * 3 // 2
    chain = next(c for c in family.chains if c.comment == "ns0/p0")
    assert len(chain.matches) == 3  # one team each
    named = next(c for c in family.chains if c.comment == "ns5/names")
    (match,) = named.matches
    assert match.peer is not None and match.peer.key == (NAMES,)
    five = PodPeer(Selector((Requirement("team", "In", tuple(TEAMS[:5])),)), Selector())
    apps = PodPeer(EVERYWHERE, Selector((Requirement("app", "In", ("db", "web")),)))
    more = (
        Policy("ns0", "five", WEB, ingress=(Rule(peers=(five,)),)),
        Policy("ns0", "apps", Selector(), ingress=(Rule(peers=(apps,)),)),
    )
    family = compile_program(Program(more), inventory).lowered.family(4)
    chain = next(c for c in family.chains if c.comment == "ns0/five")
    assert len(chain.matches) == 1 and EXPANDED == 4
    chain = next(c for c in family.chains if c.comment == "ns0/apps")
    assert {m.peer.key for m in chain.matches if m.peer} == {
        (PodPeer(EVERYWHERE, Selector((Requirement("app", "In", (app,)),))),) for app in ("db", "web")
    }


def test_a_peer_by_absence_across_namespaces_is_every_pod_and_not_a_part() -> None:
    """Every namespace allows from all pods but its own app's (``namespaceSelector: {}``, ``app
    NotIn [<own app>]``). Whole, each peer was a set of nearly every pod, one per app; now each
    tests the one set of every pod and, negated, its app's part: a pod is in two sets."""
    apps = [f"app{i}" for i in range(12)]
    spaces = [f"ns{i}" for i in range(12)]
    inventory = _one_pod_per_value(spaces, "app", apps, net=0)
    policies = tuple(
        Policy(
            ns,
            "all-but-own",
            WEB,
            ingress=(Rule(peers=(PodPeer(EVERYWHERE, Selector((Requirement("app", "NotIn", (app,)),))),)),),
        )
        for ns, app in zip(spaces, apps, strict=True)
    )
    compiled = compile_program(Program(policies), inventory)
    family = compiled.lowered.family(4)
    used = used_sets(family, Marks())
    assert sum(len(compiled.members[s.name]) for s in used if s.kind == "pods") <= 2 * len(
        inventory.pods
    ) + len(spaces)
    (match,) = next(c for c in family.chains if c.comment == "ns3/all-but-own").matches
    assert match.peer is not None
    (every,) = match.peer.parts
    assert every.key == (PodPeer(EVERYWHERE, EVERYWHERE),)
    assert [s.key for s in match.peer.excluded] == [
        (PodPeer(EVERYWHERE, Selector((Requirement("app", "In", ("app3",)),))),)
    ]
    files = get_backend("iptables").render(compiled, Options())
    # with group marks, every pod is the list of the map sets and the pods neither holds
    listed = everyone(compiled.lowered, 4, Marks())
    assert listed is not None and listed.spec == every
    tests = rf"-m set --match-set {listed.name} src -m set ! --match-set npc-\w+-{match.peer.excluded[0].name} src"
    assert re.search(tests, files["rules.v4"])
    assert f"-{every.name} " not in files["ipsets"]
    ruleset = get_backend("nftables").render(compiled, Options())["ruleset.nft"]
    assert f"ip saddr @{every.name} ip saddr != @{match.peer.excluded[0].name} " in ruleset


PROD = Selector((Requirement("env", "In", ("prod",)),))
A = Selector((Requirement("app", "In", ("a",)),))


def _from_prod_a(standing: bool) -> tuple[Policy, ...]:
    """``b`` from ``env=prod`` x ``app=a`` and, with ``standing``, other rules testing each of
    those alone (case 75's policies)."""
    product = Policy(
        "default",
        "b",
        Selector((Requirement("app", "In", ("b",)),)),
        ingress=(Rule(peers=(PodPeer(PROD, A),)),),
    )
    alone = (
        Policy(
            "default",
            "c",
            Selector((Requirement("app", "In", ("c",)),)),
            ingress=(Rule(peers=(PodPeer(PROD, Selector()),)),),
        ),
        Policy(
            "prod",
            "z",
            Selector((Requirement("app", "In", ("z",)),)),
            ingress=(Rule(peers=(PodPeer(EVERYWHERE, A),)),),
        ),
    )
    return (product, *alone) if standing else (product,)


def _three_namespaces() -> Inventory:
    """``default``, ``prod`` (``env=prod``) and ``dev`` (``env=dev``): pods ``a-1``, ``b-2``,
    ``c-3`` and ``z-4`` in each, at 10.0.<namespace's index>.<pod's>."""
    spaces = (Namespace("default", {}), Namespace("prod", {"env": "prod"}), Namespace("dev", {"env": "dev"}))
    return Inventory(
        spaces,
        tuple(
            Pod(ns.name, f"{app}-{i}", {"app": app}, (ipaddress.ip_address(f"10.0.{n}.{i}"),))
            for n, ns in enumerate(spaces)
            for i, app in enumerate(("a", "b", "c", "z"), 1)
        ),
    )


def test_a_peer_across_namespaces_is_its_parts_where_they_stand() -> None:
    """``env=prod`` x ``app=a`` is a set of its own, unless other rules test ``env=prod``'s pods
    and ``app=a``'s pods everywhere anyway: then it is those two sets (no new entry at all), in
    every backend that tests parts; a part of its own (``env=prod``'s pods) would hold far more
    than the product. Split or whole, its pods are the same."""
    inventory = _three_namespaces()
    product = (PodPeer(PROD, A),)
    parts = [(PodPeer(PROD, EVERYWHERE),), (PodPeer(EVERYWHERE, A),)]
    whole, _, _ = _used_entries(_from_prod_a(standing=False), inventory)
    assert _peer_keys(whole, "default/b") == {product}
    spec = next(s for s in whole.lowered.family(4).sets if s.key == product)
    assert not spec.parts
    split, used, _ = _used_entries(_from_prod_a(standing=True), inventory)
    spec = next(s for s in split.lowered.family(4).sets if s.key == product)
    assert [p.key for p in spec.parts] == parts
    assert product not in {s.key for s in used} and all(k in {s.key for s in used} for k in parts)
    assert {e for e, _ in whole.members[spec.name]} == {"10.0.1.1"}
    assert set.intersection(*({e for e, _ in split.members[p.name]} for p in spec.parts)) == {"10.0.1.1"}
    nft = get_backend("nftables").render(split, Options())["ruleset.nft"]
    assert f"ip saddr @{spec.parts[0].name} ip saddr @{spec.parts[1].name} " in nft
    memo = Memo()
    for standing in (False, True, False):
        program = Program(_from_prod_a(standing))
        assert compile_rules(program, memo=memo) == compile_rules(program)


def test_peers_a_rule_lists_together_are_split_where_their_parts_stand() -> None:
    """Two peers across namespaces listed in one rule are each tested by their standing parts, as
    a peer alone is: kept whole, each was a copy of the pods it selects (the messy L: 973,125
    entries split against 1,220,732 whole), though iptables then folds them into one rule
    testing a ``list:set`` of both, where split they stay a rule each (its rules per packet 100
    -> 110). Split, each rule still allows exactly its peer's pods."""
    (product, *alone) = _from_prod_a(standing=True)
    dev_a = PodPeer(Selector((Requirement("env", "In", ("dev",)),)), A)
    both = attrs.evolve(product, ingress=(Rule(peers=(PodPeer(PROD, A), dev_a)),))
    extra = Policy("default", "d", DB, ingress=(Rule(peers=(PodPeer(dev_a.namespaces, Selector()),)),))
    lowered = lower(Program((both, *alone, extra)))
    keys = {s.key: s for s in lowered.family(4).sets}
    everywhere_a = (PodPeer(EVERYWHERE, A),)
    assert [p.key for p in keys[(PodPeer(PROD, A),)].parts] == [(PodPeer(PROD, EVERYWHERE),), everywhere_a]
    assert [p.key for p in keys[(dev_a,)].parts] == [(PodPeer(dev_a.namespaces, EVERYWHERE),), everywhere_a]
    used = {s.key for s in used_sets(lowered.family(4), Marks())}
    assert (PodPeer(PROD, A),) not in used and (dev_a,) not in used and everywhere_a in used
    compiled = compile_program(Program((both, *alone, extra)), _three_namespaces())
    for key, pods in (((PodPeer(PROD, A),), {"10.0.1.1"}), ((dev_a,), {"10.0.2.1"})):
        spec = next(s for s in compiled.lowered.family(4).sets if s.key == key)
        assert set.intersection(*({e for e, _ in compiled.members[p.name]} for p in spec.parts)) == pods


def test_a_policy_change_lowers_again_only_the_chains_standing_concerns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The agent's memo keys a chain by its policy and by which of its peers across namespaces
    ``standing`` splits: policies that make ``env=prod``'s and ``app=a``'s sets standing lower
    their own chains and ``b``'s (its product is now split), not an unrelated policy's; the result
    is a fresh compile's."""
    unrelated = Policy("dev", "web", WEB, ingress=(Rule(peers=(PodPeer(namespace_selector("dev"), DB),)),))
    before, after = (Program((*_from_prod_a(standing), unrelated)) for standing in (False, True))
    memo = Memo()
    compile_rules(before, memo=memo)
    lowered: list[str] = []
    chain = _Lowerer._chain

    def counting(self: _Lowerer, policy: Policy, direction: Direction) -> Chain | None:
        lowered.append(f"{policy.namespace}/{policy.name}")
        return chain(self, policy, direction)

    monkeypatch.setattr(_Lowerer, "_chain", counting)
    found = compile_rules(after, memo=memo)
    assert sorted(set(lowered)) == ["default/b", "default/c", "prod/z"]
    monkeypatch.undo()
    assert found == compile_rules(after)


def _used_entries(policies: tuple[Policy, ...], inventory: Inventory) -> tuple[Compiled, list[SetSpec], int]:
    """The compile of ``policies``, the IPv4 sets its rules use and their pod entries."""
    compiled = compile_program(Program(policies), inventory)
    used = list(used_sets(compiled.lowered.family(4), Marks()))
    return compiled, used, sum(len(compiled.members[s.name]) for s in used if s.kind == "pods")


def _peer_keys(compiled: Compiled, comment: str) -> set[object]:
    """The peer sets' keys of the IPv4 policy chain of the policy ``comment`` names."""
    chain = next(c for c in compiled.lowered.family(4).chains if c.comment == comment)
    return {m.peer.key for m in chain.matches if m.peer is not None}


def test_namespaces_many_lists_name_are_tested_one_namespace_at_a_time() -> None:
    """Each of 12 namespaces allows its ``web`` pods from the next three by name, and its ``db``
    pods from their ``app=web`` pods (``kubernetes.io/metadata.name In [...]``, 24 lists). Whole, each list was a set, a copy of
    its namespaces' pods: a pod was in 3 to 6. Every name here is in more than ``LISTED``
    lists, so each is tested as its namespace's own part (one match per name, no copies). Two
    platform namespaces every policy lists the same way stay one set: its one copy is cheaper than a
    rule per name. And a memo made before the names were crowded gives what a fresh compile gives."""
    spaces = [f"ns{i}" for i in range(12)]
    inventory = _one_pod_per_value([*spaces, "p0", "p1"], "app", ["web", "db"], net=0)

    def names(*listed: str) -> Selector:
        return Selector((Requirement(NAMESPACE_NAME_LABEL, "In", listed),))

    platform = PodPeer(names("p0", "p1"), Selector())
    policies = tuple(
        Policy(
            ns,
            f"p{j}",
            WEB if j == 0 else DB,
            ingress=(
                Rule(peers=(PodPeer(names(*(spaces[(i + k) % 12] for k in (1, 2, 3))), pods), platform)),
            ),
        )
        for i, ns in enumerate(spaces)
        for j, pods in enumerate((Selector(), WEB))
    )
    compiled, used, entries = _used_entries(policies, inventory)
    assert entries <= 3 * len(inventory.pods), entries  # whole lists: 5 a pod
    assert _peer_keys(compiled, "ns0/p1") == {
        *((PodPeer(namespace_selector(ns), WEB),) for ns in ("ns1", "ns2", "ns3")),
        (platform,),
    }
    (whole,) = (s for s in used if s.key == (platform,))
    assert len(compiled.members[whole.name]) == 4  # the platform namespaces' pods, once
    memo = Memo()
    few = Program(policies[:2])  # nothing crowded yet
    for program in (few, Program(policies), few):
        assert compile_rules(program, memo=memo) == compile_rules(program)


def test_long_value_lists_many_peers_hold_are_split_where_crowded() -> None:
    """Each of 24 namespaces allows from five of eight teams (``team In [...]``, more values
    than ``EXPANDED``; 8 different lists) and from every namespace's ``app In [web, db, api,
    x, y]`` (one list, the same everywhere). Whole, each team list was a set, a copy of five
    teams' pods: a pod was in one for every list naming its team (5 here). Each team is in more
    than ``LISTED`` lists, so each is a peer of its own, shared by every list naming it; the app
    list recurs unchanged, so it stays one set."""
    _, inventory = _team_lists()
    apps = PodPeer(EVERYWHERE, Selector((Requirement("app", "In", ("api", "db", "web", "x", "y")),)))

    def five(i: int) -> PodPeer:
        listed = tuple(TEAMS[(i + k) % 8] for k in range(5))
        return PodPeer(Selector((Requirement("team", "In", listed),)), Selector())

    policies = tuple(
        Policy(ns, "five", WEB, ingress=(Rule(peers=(five(i), apps)),)) for i, ns in enumerate(TEAM_SPACES)
    )
    compiled, _, entries = _used_entries(policies, inventory)
    assert entries <= 3 * len(inventory.pods), entries  # whole lists: 6.5 a pod
    assert _peer_keys(compiled, "ns0/five") == {
        *((PodPeer(Selector((Requirement("team", "In", (t,)),)), Selector()),) for t in TEAMS[:5]),
        (apps,),
    }


_VALUES = ("a", "b", "c", "d", "e", "f")


def _label_choices(key: str) -> list[dict[str, str]]:
    return [{}, *({key: value} for value in _VALUES)]


# every namespace (by name and team) and every pod (by app and tier) of the values drawn from
_NAMESPACES = [{NAMESPACE_NAME_LABEL: n, **t} for n in _VALUES for t in _label_choices("team")]
_PODS = [{**a, **t} for a in _label_choices("app") for t in _label_choices("tier")]


@settings(max_examples=300, deadline=None)
@given(
    peer=st.builds(
        PodPeer,
        drawn_selectors((NAMESPACE_NAME_LABEL, "team"), _VALUES, listed=6),
        drawn_selectors(("app", "tier"), _VALUES, listed=6),
    ),
    data=st.data(),
)
def test_a_split_peer_matches_what_the_peer_matches(peer: PodPeer, data: st.DataObject) -> None:
    """``across``, then ``by_crowding`` (some of the peer's listed values crowded), then
    ``by_value``: the peers they make of one select, between them, exactly the pods it selects
    (every namespace and pod of the values drawn from), and no more of them than each bound
    allows."""
    listed = sorted(
        (side, r.key, value)
        for side in ("namespaces", "pods")
        for r in getattr(peer, side).requirements
        for value in r.values
    )
    crowded: frozenset[tuple[Side, str, str]] = frozenset(
        data.draw(st.sets(st.sampled_from(listed))) if listed else ()
    )
    made = [p for one in across(peer) for p in by_crowding(one, crowded)]
    assert len(across(peer)) <= EXPANDED and all(len(by_crowding(p, crowded)) <= NAMED for p in across(peer))
    split = [key[0] for p in made for key in by_value(p)]
    for spaces in _NAMESPACES:
        for pods in _PODS:
            wanted = peer.matches(spaces, pods)
            assert any(p.matches(spaces, pods) for p in made) == wanted
            assert any(p.matches(spaces, pods) for p in split) == wanted
