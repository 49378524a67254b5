"""The rendered artefacts mean what the reference evaluator means, and pods never reach the rules.

``dataplane_sim`` runs the real ``ipsets`` / ``rules.v4`` / ``rules.v6`` text the way the kernel
would for a new connection; for random programs and inventories (passes on and off) every probe
must get the evaluator's answer. This catches lowering and rendering bugs without root; the
kernel suite checks the same artefacts on a real kernel. Pod churn must leave the rules alone.
"""

from __future__ import annotations

import ipaddress
import json
import random
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import attrs
import pytest
from dataplane_sim import Dataplane, parse_ipsets
from hypothesis import HealthCheck, given, settings
from nft_sim import Ruleset
from npc import lower
from npc.agent.live import LiveInventory, LiveSets
from npc.backends import get as get_backend
from npc.backends.base import Options
from npc.backends.iptables.mark_tree import Marks
from npc.backends.iptables.names import names_of
from npc.backends.iptables.render import NPC_LAYOUT, everyone, kernel_sets, rules_for, set_changes, trees
from npc.backends.nftables.render import chains_by_address
from npc.evaluate import Evaluator
from npc.inventory import Inventory, NamedPort, Namespace, Pod, pod_ips, read_inventory
from npc.ir import (
    NAMESPACE_NAME_LABEL,
    IPBlock,
    PodPeer,
    Policy,
    PortSpec,
    Program,
    Requirement,
    Rule,
    Selector,
    namespace_selector,
)
from npc.pipeline import compile_program
from npc.sources import read_policy_sources
from random_clusters import (
    OUTSIDERS,
    V4_BASE,
    V6_BASE,
    connectivity,
    generated_cluster,
    inventories,
    ip_blocks,
    programs,
)
from test_agent_live import raw

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _artefacts(program: Program, inventory: Inventory, optimised: bool = True) -> dict[str, str]:
    compiled = compile_program(program, inventory, **({} if optimised else {"passes": ()}))
    return get_backend("iptables").render(compiled, Options())


@pytest.mark.parametrize("optimised", [True, False], ids=["passes", "no-passes"])
@SETTINGS
@given(program=programs, inventory=inventories())
def test_artefacts_decide_like_the_evaluator(optimised: bool, program: Program, inventory: Inventory) -> None:
    dataplane = Dataplane(_artefacts(program, inventory, optimised))
    expected = connectivity(Evaluator(program, inventory).allowed, inventory)
    assert connectivity(dataplane.allowed, inventory) == expected


@SETTINGS
@given(program=programs, inventory=inventories())
def test_lists_of_names_split_decide_like_the_evaluator(program: Program, inventory: Inventory) -> None:
    """``lower.by_crowding`` with every listed value crowded: each list ``across`` leaves (of
    namespace names, the rare case in the random programs above) is a peer per value, on iptables
    and nftables."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(lower, "LISTED", -1)
        compiled = compile_program(program, inventory)
    expected = connectivity(Evaluator(program, inventory).allowed, inventory)
    iptables = Dataplane(get_backend("iptables").render(compiled, Options()))
    assert connectivity(iptables.allowed, inventory) == expected
    nft = Ruleset(get_backend("nftables").render(compiled, Options())["ruleset.nft"])
    assert connectivity(nft.allowed, inventory) == expected


@settings(max_examples=1000, deadline=None)
@given(block=ip_blocks())
def test_net_sets_hold_exactly_the_ip_block(block: IPBlock) -> None:
    """Every address of the universe: the rendered ``hash:net`` (with nomatch) decides like the IR;
    a block without ``except`` is the rule's own ``-s`` (``plain_cidr``), no set."""
    program = Program([Policy("a", "p", ingress=[Rule([block])])])
    files = _artefacts(program, Inventory(), optimised=False)
    nets = [s for name, s in parse_ipsets(files["ipsets"]).items() if s.type == "hash:net"]
    if not block.excepts:
        assert nets == []
        assert f" -s {block.cidr} " in files[f"rules.v{block.version}"]
        return
    (net,) = nets or [None]
    for address in [*V4_BASE, *V6_BASE, *OUTSIDERS]:
        expected = block.contains(address)
        assert (net is not None and net.holds(address)) == expected, address


def _churned(inventory: Inventory, relabel: bool) -> Inventory:
    """New addresses for every pod, the first pod gone, a new pod, labels swapped if asked."""
    pods = []
    for i, pod in enumerate(inventory.pods[1:]):
        ips = tuple(ipaddress.ip_address(int(ip) + 1000 + i) for ip in pod.ips)
        labels = dict(reversed(list(pod.labels.items()))) if not relabel else {"app": "moved", **pod.labels}
        pods.append(attrs.evolve(pod, ips=ips, labels=labels))
    pods.append(Pod("a", "newcomer", {"app": "x"}, (ipaddress.ip_address("10.0.3.3"),)))
    return attrs.evolve(inventory, pods=tuple(pods))


@SETTINGS
@given(program=programs, inventory=inventories())
def test_pod_churn_changes_only_sets(program: Program, inventory: Inventory) -> None:
    before = _artefacts(program, inventory)
    for relabel in (False, True):
        after = _artefacts(program, _churned(inventory, relabel))
        assert after["rules.v4"] == before["rules.v4"]
        assert after["rules.v6"] == before["rules.v6"]


@SETTINGS
@given(program=programs, inventory=inventories())
def test_member_deltas_reach_what_a_full_load_makes(program: Program, inventory: Inventory) -> None:
    """The agent's deltas (``set_changes``) applied to the kernel sets of one inventory give the
    kernel sets of the churned one, map sets included: a pod new in a policed namespace gets its
    group's mark entry, a pod gone loses it."""
    before = compile_program(program, inventory)
    for relabel in (False, True):
        after = compile_program(program, _churned(inventory, relabel))
        assert after.lowered == before.lowered
        kernel = {s.name: set(s.members) for s in kernel_sets(before.lowered, before.members, Marks())}
        for name, (gone, fresh) in set_changes(
            before.lowered, before.members, after.members, Marks()
        ).items():
            kernel[name] = (kernel[name] - set(gone)) | set(fresh)
        assert kernel == {s.name: set(s.members) for s in kernel_sets(after.lowered, after.members, Marks())}


@SETTINGS
@given(program=programs, inventory=inventories())
def test_sets_are_made_in_an_order_the_kernel_takes_that_pods_never_move(
    program: Program, inventory: Inventory
) -> None:
    """Each ``list:set`` after the sets it holds (the kernel refuses a member that is not), the
    lists otherwise among the sets by how many rules test them (``creation_order``), and the
    order the same across pod churn."""
    compiled = compile_program(program, inventory)
    made = kernel_sets(compiled.lowered, compiled.members, Marks())
    place = {s.name: i for i, s in enumerate(made)}
    assert len(place) == len(made)
    for spec in made:
        if spec.type == "list:set":
            assert all(place[member] < place[spec.name] for member, _ in spec.members)
    for relabel in (False, True):
        after = compile_program(program, _churned(inventory, relabel))
        assert [s.name for s in kernel_sets(after.lowered, after.members, Marks())] == list(place)


def _npc_compile(cluster: Path, inventory: Path, out: Path) -> dict[str, str]:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "npc",
            "compile",
            str(cluster / "policies"),
            "--inventory",
            str(inventory),
            "-o",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    return {name: (out / name).read_text() for name in ("rules.v4", "rules.v6", "ipsets")}


def test_cli_churn_on_a_generated_cluster(tmp_path: Path) -> None:
    """Through the real CLI: a different pod population (new IPs, pods gone and new, other labels)
    for the same policies leaves both rule files byte-identical and changes the sets."""
    first = generated_cluster(tmp_path, seed=1, pod_seed=1)
    second = generated_cluster(tmp_path, seed=1, pod_seed=2)
    assert sorted((first / "policies").iterdir()) != [] and all(
        p.read_bytes() == (second / "policies" / p.name).read_bytes() for p in (first / "policies").iterdir()
    )
    a = _npc_compile(first, first / "inventory.json", tmp_path / "out-a")
    b = _npc_compile(first, second / "inventory.json", tmp_path / "out-b")
    assert a["rules.v4"] == b["rules.v4"]
    assert a["rules.v6"] == b["rules.v6"]
    assert a["ipsets"] != b["ipsets"]
    pods_a = {i["metadata"]["name"] for i in json.loads((first / "inventory.json").read_text())["items"]}
    pods_b = {i["metadata"]["name"] for i in json.loads((second / "inventory.json").read_text())["items"]}
    assert pods_a != pods_b


@pytest.mark.parametrize("generator", ["generate", "generate_mixed", "generate_catalogue"])
def test_a_generated_cluster_s_artefacts_decide_like_the_evaluator(tmp_path: Path, generator: str) -> None:
    """A benchmark mix of the S size, neither mix shaped for a test: both backends' rendered
    text (iptables also with masks too narrow for its namespace groups, so they are merged), run
    by the dataplane models, answers sampled probes between its pods (and outside addresses) on
    the ports its policies name as the reference evaluator does."""
    cluster = generated_cluster(tmp_path, seed=6, pod_seed=6, generator=generator)
    program = Program(read_policy_sources([str(cluster / "policies")]).policies)
    inventory = read_inventory(str(cluster / "inventory.json"))
    compiled = compile_program(program, inventory)
    iptables = Dataplane(get_backend("iptables").render(compiled, Options()))
    # a bit a side holds 2 groups: the rest are merged (``mark_tree.groups``)
    merged = Dataplane(get_backend("iptables").render(compiled, Options(group_marks=(0x10000, 0x10000000))))
    nft = Ruleset(get_backend("nftables").render(compiled, Options())["ruleset.nft"])
    evaluator = Evaluator(program, inventory)
    ips = [ip for pod in inventory.pods for ip in pod.ips] + list(OUTSIDERS)
    blocks = {p.cidr for policy in program.policies for d in ("ingress", "egress") for rule in policy.rules(d) or ()
              for p in rule.peers or () if isinstance(p, IPBlock)}  # fmt: skip
    ips += [block[1] for block in sorted(blocks, key=str)]  # an address inside each ipBlock
    rng = random.Random(generator)
    ports = [53, 80, 443, 3000, 5000, 5432, 6379, 8000, 8050, 8080, 8443, 9000, 9090, 9092, 9100, 27017]
    seen: Counter[bool] = Counter()
    for _ in range(20000):
        src, dst = rng.choice(ips), rng.choice(ips)
        if src.version != dst.version:
            continue
        probe = (src, dst, rng.choice(("TCP", "UDP")), rng.choice(ports))
        want = evaluator.allowed(*probe)
        assert iptables.allowed(*probe) == want, probe
        assert merged.allowed(*probe) == want, probe
        assert nft.allowed(*probe) == want, probe
        seen[want] += 1
    assert seen[True] > 200 and seen[False] > 200, seen  # both answers occur: the test can fail


def _webhooks(name: str, source: str, ports: tuple[int, ...], namespace: str = "shop") -> Policy:
    """Ingress to ``app=webhooks`` of ``namespace`` from ``app=<source>`` of the same namespace."""
    webhooks = Selector((Requirement("app", "In", ("webhooks",)),))
    peer = PodPeer(namespace_selector(namespace), Selector((Requirement("app", "In", (source,)),)))
    return Policy(
        namespace, name, webhooks, ingress=(Rule((peer,), tuple(PortSpec("TCP", p) for p in ports)),)
    )


def test_policies_selecting_the_same_pods_are_one_chain() -> None:
    """Three policies of one namespace selecting ``app=webhooks``, each its own rules, are one
    chain and one dispatch entry (``lower._combined``): each match once, a peer's ports joined.
    A chain the same policy has in two namespaces stays shared, a dispatch entry of its own."""
    monitoring = PodPeer(Selector((Requirement("team", "In", ("ops",)),)), Selector())
    scrape = [
        Policy(
            ns, "scrape", Selector((Requirement("app", "In", ("webhooks",)),)), ingress=(Rule((monitoring,)),)
        )
        for ns in ("shop", "bank")
    ]
    program = Program(
        (
            _webhooks("a", "api", (80,)),
            _webhooks("b", "api", (443, 80)),
            _webhooks("c", "web", (80,)),
            *scrape,
        )
    )
    family = lower.lower(program).family(4)
    by_comment = {c.comment: c for c in family.chains}
    assert sorted(by_comment) == ["bank/scrape", "shop/a and 2 more"]
    joined = by_comment["shop/a and 2 more"].matches
    assert [(m.peer and m.peer.key[0].pods.requirements[0].values, m.ports) for m in joined] == [
        (("api",), ((80, 80), (443, 443))),
        (("web",), ((80, 80),)),
    ]
    ingress = family.dispatch["ingress"]
    assert [d.comment for d in ingress] == ["bank/scrape and 1 more", "shop/a and 2 more"]  # by name
    (shop,) = (s for s in family.scopes["ingress"] if s.namespace == "shop")
    assert len(shop.dispatch) == 2
    assert lower.lower(Program(tuple(reversed(program.policies)))) == lower.lower(program)


def test_the_shortest_chains_are_dispatched_first() -> None:
    """A pod two policies select meets the chain of fewer rules first, whatever the policies'
    names or order: a connection the short one allows (here from the namespace's own pods) then
    meets none of the long one's rules (nftables: the short chain is every such pod's rank 1;
    iptables: the allow bit, tested first, skips the rest of the dispatch's set tests)."""
    webhooks = Selector((Requirement("app", "In", ("webhooks",)),))
    partners = tuple(
        Rule((PodPeer(namespace_selector(ns), Selector()),), (PortSpec("TCP", 443),))
        for ns in ("p1", "p2", "p3")
    )
    long = Policy("shop", "a-partners", webhooks, ingress=partners)
    short = Policy(
        "shop", "z-own", Selector(), ingress=(Rule((PodPeer(namespace_selector("shop"), Selector()),)),)
    )
    inventory = Inventory(
        (Namespace("shop", {NAMESPACE_NAME_LABEL: "shop"}),),
        (
            Pod("shop", "hook", {"app": "webhooks"}, (ipaddress.ip_address("10.0.0.1"),)),
            Pod("shop", "web", {"app": "web"}, (ipaddress.ip_address("10.0.0.2"),)),
        ),
    )
    for policies in ((long, short), (short, long)):
        compiled = compile_program(Program(policies), inventory)
        family = compiled.lowered.family(4)
        lengths = {c.name: len(c.matches) for c in family.chains}
        assert [lengths[d.chain] for d in family.dispatch["ingress"]] == [1, 3]
        ranks = chains_by_address(family, "ingress", compiled.members)
        assert [lengths[c] for c in ranks["10.0.0.1"]] == [1, 3]  # the webhooks pod: both select it
        assert [lengths[c] for c in ranks["10.0.0.2"]] == [1]


def test_a_policy_chain_s_later_rules_skip_their_sets_once_one_allowed() -> None:
    """An iptables policy chain's rules go cheapest to refuse first (a port compare, a multiport,
    then sets alone) and set the allow bit without ending the chain, so each after the first
    tests the bit before its sets: a connection the first rule allows meets none of the later
    rules' sets (the same rules without that test: it meets them all), whatever order the
    policy lists its rules in; every pair is decided as the policy does."""

    def app(value: str) -> PodPeer:
        return PodPeer(namespace_selector("shop"), Selector((Requirement("app", "In", (value,)),)))

    rules = (
        Rule((app("a"),), (PortSpec("TCP", "http"),)),
        Rule((app("b"),)),
        Rule((app("c"),), (PortSpec("TCP", 80), PortSpec("TCP", 443))),
        Rule((app("d"),), (PortSpec("TCP", 8080),)),
    )
    hooks = Selector((Requirement("app", "In", ("webhooks",)),))
    ip = {
        name: ipaddress.ip_address(f"10.0.0.{i}")
        for i, name in enumerate(("webhooks", "a", "b", "c", "d"), 1)
    }
    inventory = Inventory(
        (Namespace("shop", {NAMESPACE_NAME_LABEL: "shop"}),),
        tuple(
            Pod("shop", name, {"app": name}, (address,), (NamedPort("http", "TCP", 8000),))
            for name, address in ip.items()
        ),
    )
    for order in (rules, rules[::-1]):
        program = Program((Policy("shop", "hooks", hooks, ingress=order),))
        compiled = compile_program(program, inventory)
        files = get_backend("iptables").render(compiled, Options())
        (chain,) = {
            line.split()[1]
            for line in files["rules.v4"].splitlines()
            if line.startswith("-A NPC-") and "-P-" in line.split()[1]
        }
        lines = [line for line in files["rules.v4"].splitlines() if line.startswith(f"-A {chain} ")]
        assert len(lines) == 4 and "-m tcp --dport 8080" in lines[0] and "-m mark" not in lines[0]
        assert all(line.index(Marks().unallowed()) < line.index("-m set") for line in lines[1:])
        plain = dict(
            files,
            **{
                "rules.v4": re.sub(
                    rf"(?m)^(-A NPC-\w+-P-\w+ .*?){re.escape(Marks().unallowed())}", r"\1", files["rules.v4"]
                )
            },
        )
        seen = []
        for rendered in (files, plain):
            dataplane = Dataplane(rendered)
            assert connectivity(dataplane.allowed, inventory) == connectivity(
                Evaluator(program, inventory).allowed, inventory
            )
            assert dataplane.allowed(ip["d"], ip["webhooks"], "TCP", 8080)
            seen.append(dataplane.tables[4].set_tests)
        # saved: b's set and a's (its named port's set comes after a's); c's rule refuses
        # TCP/8080 at its multiport, before any set, either way
        assert seen[1] - seen[0] == 2, seen


def test_a_namespace_sharing_a_chain_by_two_selectors_tests_its_own_pods() -> None:
    """One chain for four policies of three namespaces: ``open`` selects every pod (no test),
    ``one`` a label (the label's part), ``two`` two labels, whose test is its own pods those
    select, not the chain's target, which holds every pod of ``open`` too (``_owned``); the rules
    decide as the policies do."""
    ops = Rule((PodPeer(Selector((Requirement("team", "In", ("ops",)),)), Selector()),))

    def app(value: str) -> Selector:
        return Selector((Requirement("app", "In", (value,)),))

    program = Program(
        (
            Policy("open", "scrape", Selector(), ingress=(ops,)),
            Policy("one", "scrape", app("api"), ingress=(ops,)),
            Policy("two", "scrape-api", app("api"), ingress=(ops,)),
            Policy("two", "scrape-web", app("web"), ingress=(ops,)),
        )
    )
    family = lower.lower(program).family(4)
    (entry,) = family.dispatch["ingress"]
    local = {s.namespace: dict(s.dispatch)[entry] for s in family.scopes["ingress"]}
    assert local["open"] is None
    assert local["one"] is not None and local["one"].key == (PodPeer(Selector(), app("api")),)
    two = lower.pod_union(PodPeer(namespace_selector("two"), app(v)) for v in ("api", "web"))
    assert local["two"] is not None and local["two"].key == two != entry.target.key
    namespaces = [Namespace(n, {NAMESPACE_NAME_LABEL: n, "team": n}) for n in ("open", "one", "two", "ops")]
    pods = [
        Pod(ns.name, f"{ns.name}-{value}", {"app": value}, (ipaddress.ip_address(f"10.0.{i}.{j}"),))
        for i, ns in enumerate(namespaces, 1)
        for j, value in enumerate(("api", "web", "db"), 1)
    ]
    inventory = Inventory(tuple(namespaces), tuple(pods))
    dataplane = Dataplane(_artefacts(program, inventory))
    expected = connectivity(Evaluator(program, inventory).allowed, inventory)
    assert connectivity(dataplane.allowed, inventory) == expected
    ip = {pod.name: pod.ips[0] for pod in pods}
    from_one = {dst for src, dst, _, _ in expected if src == ip["one-db"]}
    isolated = {p.name for p in pods if p.ips[0] not in from_one}
    assert isolated == {"open-api", "open-web", "open-db", "one-api", "two-api", "two-web"}
    assert lower.lower(Program(tuple(reversed(program.policies)))) == lower.lower(program)


def test_a_chain_of_one_rule_is_tested_in_its_dispatch_rule() -> None:
    """With group marks a policy chain of one rule is no chain: the group's dispatch rule tests
    that rule (``render.inlined``), so a pod it selects meets one rule where it met two; a chain
    of two rules is jumped to as before; flat dispatch writes both chains. The rules decide as
    the evaluator, and a packet meets the rules ``rules_for`` counts (the simulator's walk, past
    npc's FORWARD jump and entry)."""

    def shop(app: str) -> PodPeer:
        return PodPeer(namespace_selector("shop"), Selector((Requirement("app", "In", (app,)),)))

    program = Program(
        (
            Policy("shop", "one", shop("api").pods, ingress=(Rule((shop("web"),), (PortSpec("TCP", 80),)),)),
            Policy(
                "shop",
                "two",
                shop("db").pods,
                ingress=(
                    Rule((shop("web"),), (PortSpec("TCP", 5432),)),
                    Rule((shop("api"),), (PortSpec("TCP", 6379),)),
                ),
            ),
        )
    )
    ip = {app: ipaddress.ip_address(f"10.0.0.{i}") for i, app in enumerate(("web", "api", "db"), 1)}
    inventory = Inventory(
        (Namespace("shop", {NAMESPACE_NAME_LABEL: "shop"}),),
        tuple(Pod("shop", app, {"app": app}, (address,)) for app, address in ip.items()),
    )
    compiled = compile_program(program, inventory)
    one, two = sorted(compiled.lowered.family(4).chains, key=lambda c: c.comment)
    names = names_of(compiled.lowered)
    expected = connectivity(Evaluator(program, inventory).allowed, inventory)
    for options, inline in ((Options(), True), (Options(group_marks=(0, 0)), False)):
        files = get_backend("iptables").render(compiled, options)
        declared = {line[1:].split()[0] for line in files["rules.v4"].splitlines() if line.startswith(":")}
        assert (names.chain(one.name) in declared, names.chain(two.name) in declared) == (not inline, True)
        dataplane = Dataplane(files)
        assert connectivity(dataplane.allowed, inventory) == expected
        costs = rules_for(compiled.lowered, compiled.members, 4, "ingress", Marks.of(options))
        for app in ("api", "db"):
            dataplane.allowed(ipaddress.ip_address("192.168.1.1"), ip[app], "UDP", 9)
            assert dataplane.tables[4].walked == NPC_LAYOUT.passing(Marks.of(options)) + costs[str(ip[app])]
        assert costs[str(ip["db"])] - costs[str(ip["api"])] == (2 if inline else 1)


def test_a_named_port_set_holds_the_pods_its_rules_can_concern() -> None:
    """``http`` is named by pods of three namespaces: an ingress rule of ``shop``'s ``api`` and
    an egress rule to ``bank``'s ``db`` test it, so its set holds those pods' ports and not
    ``lab``'s, which no rule reaches (``lower.port_scopes``); an egress rule to anyone makes it
    every pod's. Both decide as the evaluator, and the agent's live sets hold the same."""

    def app(value: str) -> Selector:
        return Selector((Requirement("app", "In", (value,)),))

    http = (PortSpec("TCP", "http"),)
    anyone = PodPeer(Selector(), Selector())
    scoped = Program(
        (
            Policy("shop", "api", app("api"), ingress=(Rule((anyone,), http),)),
            Policy(
                "shop",
                "to-db",
                app("web"),
                egress=(Rule((PodPeer(namespace_selector("bank"), app("db")),), http),),
            ),
        )
    )
    whole = Program((*scoped.policies, Policy("lab", "out", Selector(), egress=(Rule(None, http),))))
    namespaces = tuple(Namespace(n, {NAMESPACE_NAME_LABEL: n}) for n in ("shop", "bank", "lab"))
    pods = tuple(
        Pod(
            ns.name,
            f"{ns.name}-{value}",
            {"app": value},
            (ipaddress.ip_address(f"10.0.{i}.{j}"),),
            (NamedPort("http", "TCP", 8000 + j),),
        )
        for i, ns in enumerate(namespaces, 1)
        for j, value in enumerate(("api", "web", "db"), 1)
    )
    inventory = Inventory(namespaces, pods)
    for program, holders in (
        (scoped, {"shop-api", "bank-db"}),
        (whole, {p.name for p in pods}),
    ):
        compiled = compile_program(program, inventory)
        (spec,) = (s for s in compiled.lowered.family(4).sets if s.kind == "port")
        expected_entries = sorted(f"{p.ips[0]},tcp:{p.ports[0].port}" for p in pods if p.name in holders)
        assert sorted(e for e, _ in compiled.members[spec.name]) == expected_entries
        dataplane = Dataplane(get_backend("iptables").render(compiled, Options()))
        expected = connectivity(Evaluator(program, inventory).allowed, inventory)
        assert connectivity(dataplane.allowed, inventory) == expected
        live = LiveInventory(pod_ips)
        live.update(raw(inventory))
        assert LiveSets(compiled.lowered, live, set()).members()[spec.name] == compiled.members[spec.name]
    # the agent's policy change: the set keeps its name, and its counts only where its scope stayed
    live = LiveInventory(pod_ips)
    live.update(raw(inventory))
    sets = None
    for program in (scoped, whole, scoped):
        compiled = compile_program(program, inventory)
        sets = LiveSets(compiled.lowered, live, set(), sets)
        assert sets.members() == dict(compiled.members.items())


def test_every_pod_is_the_map_sets_and_the_rest_through_churn() -> None:
    """With group marks, a peer of every pod is tested as a list of the two map sets and the pods
    neither holds (``render.everyone``): not loaded as a set of its own. The rest takes a new pod
    of an unpoliced namespace, gives up a pod relabelled into a policy's target and one deleted;
    the deltas reach what a full load makes, and the rules decide as the evaluator."""
    anyone = PodPeer(Selector(), Selector())
    web = Selector((Requirement("app", "In", ("web",)),))
    program = Program(
        (
            Policy("shop", "web-from-all", web, ingress=(Rule((anyone,), (PortSpec("TCP", 80),)),)),
            Policy("bank", "out-to-all", Selector(), egress=(Rule((anyone,)),)),
        )
    )
    namespaces = tuple(Namespace(n, {NAMESPACE_NAME_LABEL: n}) for n in ("shop", "bank", "lab"))

    def pod(ns: str, name: str, app: str, host: int) -> Pod:
        return Pod(ns, name, {"app": app}, (ipaddress.ip_address(f"10.0.0.{host}"),))

    pods = [
        pod("shop", "web", "web", 1),
        pod("shop", "db", "db", 2),
        pod("bank", "api", "api", 3),
        pod("lab", "x", "x", 4),
    ]
    churned = [pod("shop", "web", "web", 1), pod("shop", "db", "web", 2), pod("lab", "y", "y", 5)]
    before = compile_program(program, Inventory(namespaces, tuple(pods)))
    after = compile_program(program, Inventory(namespaces, tuple(churned)))
    found = everyone(before.lowered, 4, Marks())
    assert found is not None
    kernel = {s.name: s.members for s in kernel_sets(before.lowered, before.members, Marks())}
    assert [t for t, _ in kernel[found.rest]] == ["10.0.0.2", "10.0.0.4"]
    assert kernel[found.name] == [(n, False) for n in (*found.maps, found.rest)]
    assert not any(name.endswith(found.spec.name) for name in kernel)
    changes = set_changes(before.lowered, before.members, after.members, Marks())
    assert changes[found.rest] == ([("10.0.0.2", False), ("10.0.0.4", False)], [("10.0.0.5", False)])
    moved = {
        n: (set(m) - set(changes.get(n, ((), ()))[0])) | set(changes.get(n, ((), ()))[1])
        for n, m in kernel.items()
    }
    assert moved == {s.name: set(s.members) for s in kernel_sets(after.lowered, after.members, Marks())}
    for compiled, inventory in (
        (before, Inventory(namespaces, tuple(pods))),
        (after, Inventory(namespaces, tuple(churned))),
    ):
        dataplane = Dataplane(get_backend("iptables").render(compiled, Options()))
        expected = connectivity(Evaluator(program, inventory).allowed, inventory)
        assert connectivity(dataplane.allowed, inventory) == expected


def test_a_group_s_dispatch_tests_the_mark_bits_its_code_leaves_free() -> None:
    """With group marks, the bits of a direction's mask after a group's code stand for its
    dispatch's tests (``mark_tree.flags``): a pod's map entry carries the bit of each test it
    passes, the dispatch rules test those bits and no set, a relabel moves the bit by the deltas
    alone, and the rules decide as the evaluator before and after."""
    web = Selector((Requirement("app", "In", ("web",)),))
    db = Selector((Requirement("app", "In", ("db",)),))
    anyone = PodPeer(Selector(), Selector())
    program = Program(
        (
            Policy("shop", "web", web, ingress=(Rule((anyone,), (PortSpec("TCP", 80),)),)),
            Policy("shop", "db", db, ingress=(Rule((PodPeer(Selector(), web),), (PortSpec("TCP", 5432),)),)),
        )
    )
    namespaces = tuple(Namespace(n, {NAMESPACE_NAME_LABEL: n}) for n in ("shop", "lab"))

    def pod(ns: str, name: str, app: str, host: int) -> Pod:
        return Pod(ns, name, {"app": app}, (ipaddress.ip_address(f"10.0.0.{host}"),))

    inventories = [
        Inventory(
            namespaces, (pod("shop", "web", "web", 1), pod("shop", "db", "db", 2), pod("lab", "x", "x", 3))
        ),
        Inventory(
            namespaces, (pod("shop", "web", "db", 1), pod("shop", "db", "db", 2), pod("lab", "x", "web", 3))
        ),
    ]
    before, after = (compile_program(program, inventory) for inventory in inventories)
    (chain,) = (
        c for c in trees(before.lowered, 4, Marks())["ingress"].chains if "shop" in c.group.namespaces
    )
    flags = {flag.tests[0][0].key[0].pods: flag.mark for flag in chain.flags}  # type: ignore[index, union-attr]
    assert set(flags) == {web, db}
    files = get_backend("iptables").render(before, Options())
    dispatch = [line for line in files["rules.v4"].splitlines() if line.startswith(f"-A {chain.name} ")]
    assert dispatch and not any("--match-set" in line and "-j NPC-" in line for line in dispatch)
    for mark in flags.values():
        assert any(Marks().unallowed(mark) in line for line in dispatch)
    # FORWARD tests the pending bit the lookups set, not the map sets again (``Marks``)
    forward = [line for line in files["rules.v4"].splitlines() if re.match(r"-A NPC-\w+-FORWARD ", line)]
    assert len(forward) == 7 and sum("--map-set" in line for line in forward) == 2
    assert not any("--match-set" in line for line in forward)
    kernel = {s.name: {t for t, _ in s.members} for s in kernel_sets(before.lowered, before.members, Marks())}
    entries = {
        t.split()[0]: int(t.split()[2].split("/")[0], 16)
        for t in kernel[trees(before.lowered, 4, Marks())["ingress"].map_set]
    }
    assert entries["10.0.0.1"] & flags[web] and not entries["10.0.0.1"] & flags[db]
    assert entries["10.0.0.2"] & flags[db] and not entries["10.0.0.2"] & flags[web]
    moved = {s.name: set(s.members) for s in kernel_sets(before.lowered, before.members, Marks())}
    for name, (gone, fresh) in set_changes(before.lowered, before.members, after.members, Marks()).items():
        moved[name] = (moved[name] - set(gone)) | set(fresh)
    assert moved == {s.name: set(s.members) for s in kernel_sets(after.lowered, after.members, Marks())}
    for compiled, inventory in zip((before, after), inventories, strict=True):
        dataplane = Dataplane(get_backend("iptables").render(compiled, Options()))
        expected = connectivity(Evaluator(program, inventory).allowed, inventory)
        assert connectivity(dataplane.allowed, inventory) == expected


def test_joined_policies_allow_what_each_allowed() -> None:
    """The joined chain decides like the policies one by one, on the rendered rules."""
    program = Program(
        (_webhooks("a", "api", (80,)), _webhooks("b", "api", (81,)), _webhooks("c", "web", (8080,)))
    )
    ips = {
        app: ipaddress.ip_address(f"10.0.0.{i}") for i, app in enumerate(("webhooks", "api", "web", "db"), 1)
    }
    inventory = Inventory(
        (Namespace("shop", {NAMESPACE_NAME_LABEL: "shop"}),),
        tuple(Pod("shop", app, {"app": app}, (ip,)) for app, ip in ips.items()),
    )
    dataplane = Dataplane(_artefacts(program, inventory))
    expected = connectivity(Evaluator(program, inventory).allowed, inventory)
    assert connectivity(dataplane.allowed, inventory) == expected
    to_webhooks = {(src, protocol, port) for src, dst, protocol, port in expected if dst == ips["webhooks"]}
    assert to_webhooks == {(ips["api"], "TCP", 80), (ips["api"], "TCP", 81), (ips["web"], "TCP", 8080)}
