"""The nftables backend's text: same meaning as the reference evaluator, safe, compact, valid nft.

``nft_sim`` interprets the rendered ``ruleset.nft`` (not the lowered program), so the property
test checks lowering and rendering together; ``nft -c`` in a throw-away network namespace (root)
checks that the kernel's own parser takes every construct npc writes.
"""

from __future__ import annotations

import ipaddress
import itertools
import re
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import attrs
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from kernel.netns import InNetns, Netns, compile_policies, fresh_netns, policy
from nft_sim import Ruleset
from npc.backends.base import Options, Ran
from npc.backends.iptables import render as iptables
from npc.backends.iptables.mark_tree import Marks
from npc.backends.nftables import NftablesBackend
from npc.backends.nftables import render as nftables
from npc.backends.nftables.drift import table_drift
from npc.backends.nftables.load import element_lines
from npc.backends.nftables.members import (
    Ranks,
    TableChanged,
    Where,
    loaded_ranks,
    member_diffs,
    update_script,
)
from npc.errors import ApplyError
from npc.evaluate import Evaluator
from npc.inventory import Inventory, NamedPort, Namespace, Pod
from npc.ir import (
    NAMESPACE_NAME_LABEL,
    Address,
    IPBlock,
    PodPeer,
    Policy,
    PortSpec,
    Program,
    Rule,
    Selector,
    namespace_selector,
)
from npc.lower import network_tag
from npc.pipeline import Compiled, compile_program
from random_clusters import OUTSIDERS, V4_BASE, V6_BASE, connectivity, inventories, ip_blocks, programs

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def render(program: Program, inventory: Inventory, network: str = "default") -> str:
    compiled = compile_program(program, inventory, network)
    return nftables.render_ruleset(compiled.lowered, compiled.members)


def sel(**labels: str) -> Selector:
    return Selector.from_labels(labels)


def peer(namespace: str = "default", **labels: str) -> PodPeer:
    return PodPeer(namespace_selector(namespace), sel(**labels))


def pod(name: str, n: int, ports: tuple[NamedPort, ...] = (), **labels: str) -> Pod:
    ips = (ipaddress.ip_address(f"10.0.0.{n}"), ipaddress.ip_address(f"fd00::{n:x}"))
    return Pod("default", name, labels, ips, ports)


NAMESPACES = (Namespace("default", {NAMESPACE_NAME_LABEL: "default"}),)
INVENTORY = Inventory(
    NAMESPACES,
    (
        pod("db", 1, (NamedPort("redis", "TCP", 6379),), role="db", tier="back"),
        pod("api", 2, (NamedPort("redis", "TCP", 6380),), role="api", tier="back"),
        pod("web", 3, role="web"),
    ),
)
# Every construct the backend writes: named ports, ranges past 15 ports, ipBlock with excepts on
# both families, protocols without ports, egress and ingress, a pod selected by three policies.
RICH = Program(
    (
        Policy(
            "default",
            "db-from-web",
            sel(role="db"),
            ingress=(Rule((peer(role="web"),), (PortSpec("TCP", "redis"),)),),
        ),
        Policy(
            "default",
            "back",
            sel(tier="back"),
            ingress=(Rule((peer(role="api"),), (PortSpec("TCP", 8000, 8100),)),),
        ),
        Policy(
            "default",
            "many-ports",
            sel(role="db", tier="back"),  # not db-from-web's selector: a chain of its own
            ingress=(Rule(None, tuple(PortSpec("UDP", p) for p in range(1000, 1040, 2))),),
        ),
        Policy(
            "default",
            "web-out",
            sel(role="web"),
            egress=(
                Rule(
                    (IPBlock("0.0.0.0/0", ("10.0.0.0/8", "192.168.0.0/16")), IPBlock("::/0", ("fd00::/8",)))
                ),
                Rule((peer(role="db"),), (PortSpec("TCP", "redis"), PortSpec("SCTP"))),
            ),
        ),
        Policy("default", "deny-api-out", sel(role="api"), egress=()),
    )
)


# --- meaning ------------------------------------------------------------------------------------


@SETTINGS
@given(program=programs, inventory=inventories())
def test_rendered_ruleset_decides_like_the_evaluator(program: Program, inventory: Inventory) -> None:
    ruleset = Ruleset(render(program, inventory))
    expected = connectivity(Evaluator(program, inventory).allowed, inventory)
    assert connectivity(ruleset.allowed, inventory) == expected


def test_rich_program_decides_like_the_evaluator() -> None:
    ruleset = Ruleset(render(RICH, INVENTORY))
    evaluator = Evaluator(RICH, INVENTORY)
    ips = [ip for p in INVENTORY.pods for ip in p.ips] + list(OUTSIDERS)
    ports = [53, 1000, 1001, 1038, 1039, 6379, 6380, 8000, 8100, 8101]
    seen_allow = seen_deny = 0
    for src in ips:
        for dst in ips:
            for protocol in ("TCP", "UDP", "SCTP"):
                for port in ports:
                    want = src.version == dst.version and evaluator.allowed(src, dst, protocol, port)
                    assert ruleset.allowed(src, dst, protocol, port) == want, (src, dst, protocol, port)
                    seen_allow += want
                    seen_deny += not want
    assert seen_allow > 50 and seen_deny > 50


addresses_to_probe = st.sampled_from(
    [*V4_BASE, *V6_BASE, *OUTSIDERS, ipaddress.ip_address("0.0.0.0"), ipaddress.ip_address("ffff::1")]
)


@settings(max_examples=500, deadline=None)
def _full_load(compiled: Compiled) -> tuple[Ruleset, Ranks]:
    """A full load of ``compiled`` as the sim holds it, and the rank counts the backend keeps."""
    built = nftables.build(compiled.lowered, compiled.members)
    return Ruleset(nftables.render(built)), loaded_ranks(built)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs=st.lists(programs, min_size=2, max_size=2), inventory=inventories(), other=inventories())
def test_an_update_and_a_member_delta_leave_what_a_full_load_of_the_new_inputs_makes(
    programs: list[Program], inventory: Inventory, other: Inventory
) -> None:
    """What the agent loads by difference (a policy change: ``update_script``; pod churn:
    ``member_diffs``) played on the table in force is the table a full load would make, every
    set, map element and rule (stale rank-1 entries would isolate pods that are not)."""
    was, now = (compile_program(p, inventory) for p in programs)
    table, ranks = _full_load(was)
    try:
        script, _, _ = update_script(Where(was.lowered, was.members), Where(now.lowered, now.members), ranks)
    except TableChanged:  # a rank more or less: a full load
        event("a policy change that takes a full load")
        return
    table.play(script)
    assert table.state() == _full_load(now)[0].state()
    churned = compile_program(programs[1], other)
    table, ranks = _full_load(now)
    try:
        diffs, *_ = member_diffs(
            now.lowered, now.members, churned.members, ranks, Where(now.lowered, now.members)
        )
    except TableChanged:
        event("pod churn that takes a full load")
        return
    table.play("".join(f"{line}\n" for line in element_lines(table.table, diffs)))
    expected = Ruleset(nftables.render_ruleset(now.lowered, churned.members))
    assert table.state() == expected.state()


@given(block=ip_blocks(), probes=st.lists(addresses_to_probe, min_size=1, max_size=40))
def test_net_elements_are_the_cidr_minus_its_excepts(block: IPBlock, probes: list[Address]) -> None:
    entries = [(str(block.cidr), False)] + [(str(e), True) for e in block.excepts]
    elements = nftables.net_elements(entries, block.version)
    spans = []
    for element in elements:
        if "/" in element:
            net = ipaddress.ip_network(element)
            spans.append((int(net.network_address), int(net.broadcast_address)))
        else:
            lo, hi = element.split("-")
            spans.append((int(ipaddress.ip_address(lo)), int(ipaddress.ip_address(hi))))
    assert spans == sorted(spans)
    assert all(a[1] + 1 < b[0] for a, b in itertools.pairwise(spans))  # disjoint, not adjacent
    for address in probes:
        inside = address.version == block.version and any(lo <= int(address) <= hi for lo, hi in spans)
        assert inside == block.contains(address)  # type: ignore[arg-type]


# --- shape --------------------------------------------------------------------------------------


def test_one_inet_table_per_network_replaced_in_one_transaction() -> None:
    """Both families in one ``inet`` table (issue 5): created if missing, deleted and defined anew
    in the one file; IPv4's and IPv6's chains and sets side by side in it."""
    text = render(RICH, INVENTORY)
    body = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert body[:3] == ["table inet npc {}", "delete table inet npc", "table inet npc {"]
    assert sum(1 for line in body if line.startswith("table ")) == 2
    assert not re.search(r"^table ip6? ", text, re.M)
    ruleset = Ruleset(text)
    assert {"source-4", "source-6", "ingress-4", "ingress-6"} <= ruleset.chains.keys()
    assert any(n.startswith("s4-") for n in ruleset.sets) and any(n.startswith("s6-") for n in ruleset.sets)
    other = render(RICH, INVENTORY, network="blue")
    tag = network_tag("blue")
    assert f"table inet npc-{tag} {{}}\ndelete table inet npc-{tag}\n" in other
    assert "table inet npc {" not in other and not re.search(r"^table ip6? ", other, re.M)


def test_forward_hook_and_no_marks() -> None:
    text = render(RICH, INVENTORY)
    assert text.count("hook forward") == 1  # one base chain, both families'
    assert "type filter hook forward priority filter; policy accept;" in text
    assert "mark" not in text
    forward = Ruleset(text).chains["forward"]
    assert forward == [
        [
            "ct",
            "state",
            "established",
            ",",
            "related",
            "accept",
            "comment",
            "npc: replies of allowed connections",
        ],
        ["meta", "nfproto", "ipv4", "goto", "source-4"],
        ["meta", "nfproto", "ipv6", "goto", "source-6"],
    ]


def test_a_pod_selected_by_several_policies_gets_one_rank_per_policy() -> None:
    ruleset = Ruleset(render(RICH, INVENTORY))
    ranks = {name: m for name, m in ruleset.maps.items() if name.startswith("ingress-4-")}
    assert sorted(ranks) == ["ingress-4-1", "ingress-4-2", "ingress-4-3"]
    db, api = "10.0.0.1", "10.0.0.2"
    jumps = [ranks[f"ingress-4-{k}"][db] for k in (1, 2, 3)]
    assert all(j.startswith("jump p-") for j in jumps) and len(set(jumps)) == 3
    assert ranks["ingress-4-1"][api].startswith("jump p-")
    assert api not in ranks["ingress-4-2"] and api not in ranks["ingress-4-3"]  # misses, then the drop
    assert "10.0.0.3" not in ranks["ingress-4-1"]  # web is not isolated for ingress
    assert ruleset.maps["egress-4-1"]["10.0.0.2"] == "drop"  # deny-all egress: no policy chain at all
    assert "drop" not in {v for k in (2, 3) for v in ranks[f"ingress-4-{k}"].values()}
    # rank 1 holds every isolated address: it is the isolation test, and no set is
    assert ruleset.chains["destination-4"][0] == ["ip", "daddr", "@ingress-4-1", "goto", "ingress-4"]
    assert ruleset.chains["source-4"][0] == ["ip", "saddr", "@egress-4-1", "goto", "egress-4"]
    assert all(not name.startswith(("ingress-", "egress-")) for name in ruleset.sets)


def test_port_groups_merge_into_one_rule() -> None:
    """A port list is one rule over one named set, which every rule testing that list shares."""
    text = render(RICH, INVENTORY)
    ruleset = Ruleset(text)
    lists = {n: s for n, s in ruleset.sets.items() if s.type == "inet_service"}
    assert [s.elements for s in lists.values()] == [[str(p) for p in range(1000, 1040, 2)]]
    ((name, listed),) = lists.items()
    assert not listed.interval  # single ports: a set the kernel may look up in one step
    assert text.count(f"udp dport @{name} accept") == 2  # one rule per family, 20 ports
    assert re.search(r"\ttcp dport 8000-8100 ip saddr @s4-\w+ ip saddr @s4-\w+ accept", text)  # port first


def test_a_chain_tests_its_cheapest_rules_first() -> None:
    """Every rule of a policy chain allows, so their order is free (``chain_text``): a port
    compare first, then a port list's lookup, a peer's alone, a named port's two, whatever order
    the policy lists them in; the ruleset still decides like the evaluator."""
    rules = (
        Rule((peer(role="web"),), (PortSpec("TCP", "redis"),)),
        Rule((peer(role="api"),)),
        Rule((peer(role="web"),), (PortSpec("TCP", 80), PortSpec("TCP", 443))),
        Rule((peer(role="db"),), (PortSpec("UDP", 53),)),
    )
    for order in (rules, rules[::-1]):
        program = Program((Policy("default", "db-in", sel(role="db"), ingress=order),))
        text = render(program, INVENTORY)
        chains = re.findall(r"\tchain p-\w+ \{\n(.*?)\n\t\}", text, re.S)
        (chain,) = [c for c in chains if " ip saddr " in c]  # IPv4's
        firsts = [line.split()[:2] for line in chain.splitlines()]
        assert firsts == [["udp", "dport"], ["tcp", "dport"], ["ip", "saddr"], ["ip", "saddr"]], chain
        assert "th dport @p4-" in chain.splitlines()[-1]  # the named port: last
        ruleset = Ruleset(text)
        assert connectivity(ruleset.allowed, INVENTORY) == connectivity(
            Evaluator(program, INVENTORY).allowed, INVENTORY
        )


def test_named_ports_and_excepts_use_nft_sets() -> None:
    ruleset = Ruleset(render(RICH, INVENTORY))
    port_sets = [s for s in ruleset.sets.values() if s.type == "ipv4_addr . inet_proto . inet_service"]
    # api names redis too, but no rule testing the port can reach it (``lower.port_scopes``)
    assert [s.elements for s in port_sets] == [["10.0.0.1 . tcp . 6379"]]
    nets = [s.elements for s in ruleset.sets.values() if s.interval]
    assert ["0.0.0.0-9.255.255.255", "11.0.0.0-192.167.255.255", "192.169.0.0-255.255.255.255"] in nets
    assert ["::-fcff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "fe00::/7"] in nets


def test_same_inputs_in_any_order_give_identical_text() -> None:
    reordered = Program(tuple(reversed(RICH.policies)))
    inventory = Inventory(NAMESPACES, tuple(reversed(INVENTORY.pods)))
    assert render(reordered, inventory) == render(RICH, INVENTORY)


def test_per_packet_work_does_not_grow_with_the_number_of_policies() -> None:
    """One policy per pod: iptables tests every policy's set, nftables one map per policy of the pod."""
    costs: dict[str, list[int]] = {"iptables": [], "nftables": []}
    for n in (2, 20, 200):
        pods = tuple(
            Pod(
                "default",
                f"p{i}",
                {"app": f"a{i}"},
                (ipaddress.ip_address(f"10.1.{i // 250}.{i % 250 + 1}"),),
            )
            for i in range(n)
        )
        program = Program(
            tuple(
                Policy("default", f"p{i}", sel(app=f"a{i}"), ingress=(Rule((peer(app=f"a{(i + 1) % n}"),)),))
                for i in range(n)
            )
        )
        compiled = compile_program(program, Inventory(NAMESPACES, pods))
        costs["iptables"].append(iptables.rules_per_packet(compiled.lowered, compiled.members, Marks()))
        costs["nftables"].append(nftables.rules_per_packet(compiled.lowered, compiled.members))
    assert costs["nftables"] == [8, 8, 8]  # forward 2, source 2, destination 1, rank, rule, drop
    assert costs["iptables"][-1] > 200


def test_an_ipv6_packet_meets_the_ipv4_dispatch_rule_first() -> None:
    """The base chain tests IPv4 before IPv6: rules per packet count one more forward rule for
    IPv6's paths than for IPv4's, and none where a network carries one family."""
    pods = tuple(
        Pod("default", f"p{i}", {"app": f"a{i}"}, (ipaddress.ip_address(f"fd01::{i + 1}"),)) for i in range(3)
    )
    program = Program(
        tuple(
            Policy("default", f"p{i}", sel(app=f"a{i}"), ingress=(Rule((peer(app=f"a{(i + 1) % 3}"),)),))
            for i in range(3)
        )
    )
    compiled = compile_program(program, Inventory(NAMESPACES, pods))
    lowered, members = compiled.lowered, compiled.members
    assert [f.family for f in lowered.families] == [4, 6]
    ipv4, ipv6 = (attrs.evolve(lowered, families=(f,)) for f in lowered.families)
    assert nftables.rules_per_packet(ipv6, members) == 8  # as an IPv4 packet's, alone
    assert nftables.rules_per_packet(lowered, members) == 9  # the IPv6 path, behind IPv4's rule
    assert nftables.rules_per_packet(ipv4, members) < 9
    forward = Ruleset(nftables.render_ruleset(ipv6, members)).chains["forward"]
    assert forward[1:] == [["meta", "nfproto", "ipv6", "goto", "source-6"]]


# --- nothing from input reaches the text except as a sanitised comment ---------------------------

HOSTILE = 'x" } ; flush ruleset ; table ip filter { chain c { drop # \\\n'


def test_comments_cannot_be_broken_out_of() -> None:
    quoted = nftables.comment(HOSTILE * 20)
    assert quoted.startswith('"') and quoted.endswith('"')
    inner = quoted[1:-1]
    assert len(inner) <= 120
    assert not re.search(r'["\\\n;{}#]', inner)


def test_hostile_names_stay_inside_comments() -> None:
    program = Program((Policy("default", HOSTILE, sel(role="db"), ingress=(Rule(),)),))
    text = render(program, INVENTORY, network=HOSTILE)
    carriers = [line for line in text.splitlines() if "flush" in line]
    assert len(carriers) == 4  # the header, the table comment, the policy chain's rule (per family)
    for line in carriers:
        assert re.fullmatch(r'(# [^\n]*|\s*([^"]* )?comment "[^"\\;{}#]*")', line), line
    Ruleset(text)  # still parses as npc's own shape


# --- which tables a load and a reset touch -------------------------------------------------------


class _Tables:
    """``nft`` standing in: ``nft list tables`` prints ``listed``; every other command is kept
    in ``calls`` and succeeds."""

    def __init__(self, *listed: str) -> None:
        self.listed = "".join(f"{line}\n" for line in listed)
        self.calls: list[tuple[list[str], str]] = []

    def which(self, program: str) -> bool:
        return program == "nft"

    def __call__(self, argv: Sequence[str], stdin: str = "") -> Ran:
        if list(argv) == ["nft", "list", "tables"]:
            return Ran(0, self.listed)
        self.calls.append((list(argv), stdin))
        return Ran(0)


# named like npc's, but not npc's (a tag is 5 letters of base32), and iptables-nft's own
LOOKALIKES = ("table ip npc-foo", "table inet npcx", "table ip6 npc-abcdef", "table ip filter")


def test_a_load_deletes_an_earlier_npcs_tables_per_family_in_its_own_transaction() -> None:
    """The ``ip`` and ``ip6`` tables of the network's name that the npc of a table per family left
    go in the one ``nft -f`` that replaces the ``inet`` table; nothing else is named."""
    compiled = compile_policies(policy("a"))
    tag = network_tag("blue")
    nft = _Tables("table ip npc", "table ip6 npc", f"table ip npc-{tag}", *LOOKALIKES)
    NftablesBackend().load(compiled, Options(), nft)
    ((argv, text),) = nft.calls
    assert argv == ["nft", "-f", "-"]
    body = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert body[:5] == [
        "delete table ip npc",
        "delete table ip6 npc",
        "table inet npc {}",
        "delete table inet npc",
        "table inet npc {",
    ]
    assert not re.search(r"npc-|npcx|filter", "\n".join(body[:5]))
    assert text.count("delete table") == 3
    in_force = _Tables("table inet npc", f"table ip npc-{tag}", *LOOKALIKES)  # loaded by this npc
    NftablesBackend().load(compiled, Options(), in_force)
    ((_, again),) = in_force.calls
    assert again == text.split("delete table ip6 npc\n", 1)[1]  # the same load, nothing to retire


def test_a_reset_removes_both_layouts_in_one_transaction_and_nothing_else() -> None:
    tag = network_tag("blue")
    npcs = ["table inet npc", "table ip npc", "table ip6 npc", f"table ip npc-{tag}", f"table inet npc-{tag}"]
    nft = _Tables(*npcs, *LOOKALIKES)
    report = NftablesBackend().reset(None, Options(), nft)
    ((argv, text),) = nft.calls
    assert argv == ["nft", "-f", "-"]
    assert sorted(text.splitlines()) == sorted(f"delete {t}" for t in npcs)
    assert report.summary == "nftables: removed 5 tables" and sorted(report.warnings) == sorted(npcs)
    one = _Tables(*npcs, *LOOKALIKES)
    NftablesBackend().reset("blue", Options(), one)
    assert [text for _, text in one.calls] == [f"delete table ip npc-{tag}\ndelete table inet npc-{tag}\n"]


# --- the kernel's parser ------------------------------------------------------------------------


@pytest.fixture
def check_netns(tmp_path: Path) -> Iterator[str]:
    if not shutil.which("nft"):
        pytest.skip("nft not installed (Debian: apt-get install nftables)")
    with fresh_netns("npc-nftc", tmp_path) as ns:
        yield ns.name


def nft_check(netns: str, text: str) -> None:
    argv = ["ip", "netns", "exec", netns, "nft", "-c", "-f", "-"]
    done = subprocess.run(argv, input=text, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


@pytest.mark.kernel
@pytest.mark.parametrize("network", ["default", "blue"])
@pytest.mark.parametrize(
    "program", [RICH, Program(), Program((RICH.policies[-1],))], ids=["rich", "empty", "deny"]
)
def test_nft_check_mode_accepts_the_text(check_netns: str, program: Program, network: str) -> None:
    nft_check(check_netns, render(program, INVENTORY, network))


@pytest.mark.kernel
def test_nft_check_mode_accepts_hostile_names(check_netns: str) -> None:
    program = Program((Policy("default", HOSTILE, sel(role="db"), ingress=(Rule(),)),))
    nft_check(check_netns, render(program, INVENTORY, network=HOSTILE))


# --- a policy change by difference ----------------------------------------------------------------


def _table(run: InNetns) -> list[str]:
    """``nft list table inet npc``, lines sorted and each line's elements sorted: what a table
    holds, whichever order a load or an update put it in."""
    listed = run(["nft", "list", "table", "inet", "npc"])
    assert listed.returncode == 0, listed.stderr
    lines = []
    for line in listed.stdout.splitlines():
        head, brace, rest = line.partition("elements = { ")
        if brace:
            line = head + brace + ", ".join(sorted(rest.rstrip(" }").split(", "))) + " }"
        lines.append(line)
    return sorted(lines)


@pytest.mark.kernel
def test_a_shared_chain_whose_first_policy_goes_is_updated_not_replaced(tmp_path: Path) -> None:
    """Two policies with the same rules share a chain, commented with the first; when it goes, the
    comment must name the other. nft cannot change a chain's comment, so the comment is on the
    rules: the agent's update rewrites them in its transaction instead of replacing the table."""
    if not shutil.which("nft"):
        pytest.skip("nft not installed (Debian: apt-get install nftables)")
    before = compile_policies(policy("a"), policy("b", selector="frontend"))
    after = compile_policies(policy("b", selector="frontend"))
    with fresh_netns("npc-nftu", tmp_path) as netns:
        run, backend = InNetns(netns), NftablesBackend()
        backend.load(before, Options(), run)
        assert 'comment "default/a"' in "\n".join(_table(run))
        report = backend.load_update(before.lowered, before.members, after, Options(), run)
        assert " updated: " in report.summary, report.summary  # not a table replace
        updated = _table(run)
        assert 'comment "default/b"' in "\n".join(updated) and "default/a" not in "\n".join(updated)
        backend.load(after, Options(), run)
        assert updated == _table(run)


def _listing(*ports: int | str, name: str = "db", selector: str = "db") -> dict[str, object]:
    """``policy`` with its ingress rule on several ports (a port list, in one nft set)."""
    found = policy(name, selector=selector)
    spec = found["spec"]
    assert isinstance(spec, dict)
    spec["ingress"][0]["ports"] = [{"port": p} for p in ports]
    return found


@pytest.mark.kernel
def test_an_update_adds_the_port_lists_its_new_rules_test_and_deletes_the_unused(tmp_path: Path) -> None:
    """A policy change by difference makes the kernel's table the one a full load makes: the new
    chains' port lists created (with their elements) before the rules naming them, the old list
    deleted after the chain testing it."""
    if not shutil.which("nft"):
        pytest.skip("nft not installed (Debian: apt-get install nftables)")
    before = compile_policies(_listing(80, 443), _listing(53, 54, name="keep", selector="frontend"))
    after = compile_policies(
        _listing(8080, 9000, 9001, 9003), _listing(53, 54, name="keep", selector="frontend")
    )
    with fresh_netns("npc-nftl", tmp_path) as netns:
        run, backend = InNetns(netns), NftablesBackend()
        backend.load(before, Options(), run)
        assert any("elements = { 443, 80 }" in line for line in _table(run))
        report = backend.load_update(before.lowered, before.members, after, Options(), run)
        # one port list in the table, whichever family's rules test it
        assert " updated: " in report.summary and "sets +1 -1" in report.summary, report.summary
        updated = _table(run)
        assert any("elements = { 8080, 9000-9001, 9003 }" in line for line in updated)
        assert not any("53-54 }" in line for line in updated)  # adjacent ports: one range, in the rule
        assert any("dport 53-54 " in line for line in updated)
        assert not any("443" in line for line in updated)
        backend.load(after, Options(), run)
        assert updated == _table(run)
        assert table_drift(nftables.build(after.lowered, after.members), run) == ()  # as listed


@pytest.mark.kernel
def test_a_delta_never_loaded_leaves_no_trace_in_the_next(tmp_path: Path) -> None:
    """The backend keeps, between pod events, which sets each address in force is in and how many
    addresses each rank map holds. A delta the kernel refused must leave both as the kernel is:
    here the refused one put pod x in policy a's target, the next puts it in b's only, so an index
    that believed the refused one would delete an element the kernel never had (and be refused).
    Both go over netlink, as the agent sends them; the one taken leaves what a full load of its
    members does (map jumps and drops, a named port's concatenation, both families)."""
    if not shutil.which("nft"):
        pytest.skip("nft not installed (Debian: apt-get install nftables)")
    program = Program(
        (
            Policy("default", "a", sel(role="a"), ingress=(Rule(),)),
            Policy(
                "default",
                "b",
                sel(tier="b"),
                ingress=(Rule((peer(role="web"),), (PortSpec("TCP", "redis"),)),),
            ),
        )
    )
    db, web = pod("db", 1, role="a", tier="b"), pod("web", 3, role="web")  # db: two ranks
    redis = (NamedPort("redis", "TCP", 6379),)
    base, refused, taken = (
        compile_program(program, Inventory(NAMESPACES, (db, web, *extra)))
        for extra in ((), (pod("x", 5, role="a"),), (pod("x", 5, redis, tier="b"),))
    )
    lowered = base.lowered
    assert refused.lowered == lowered == taken.lowered  # members differ, rules do not
    with fresh_netns("npc-nftd", tmp_path) as netns:
        backend = NftablesBackend()
        backend.load(base, Options(), InNetns(netns))
        with pytest.raises(ApplyError, match="kernel refused"):
            backend.load_members(
                lowered, base.members, refused.members, Options(), InNetns(netns, refuse="nft")
            )
        assert _table(InNetns(netns)) == _loaded(taken=base, netns=netns, tmp_path=tmp_path)
        delta = backend.load_members(lowered, base.members, taken.members, Options(), InNetns(netns))
        assert not delta.full and delta.added  # elements moved, the table was not replaced
        assert any("10.0.0.5 . tcp . 6379" in line for line in _table(InNetns(netns)))
        assert _table(InNetns(netns)) == _loaded(taken=taken, netns=netns, tmp_path=tmp_path)


def _loaded(taken: Compiled, netns: Netns, tmp_path: Path) -> list[str]:
    """What a full load of ``taken`` holds, loaded beside (into a namespace of its own)."""
    with fresh_netns("npc-nftf", tmp_path) as other:
        NftablesBackend().load(taken, Options(), InNetns(other))
        return _table(InNetns(other))


@pytest.mark.parametrize(
    "kind, good, bad",
    [
        ("pods", ["10.0.0.1", "fd00::1"], "10.0.0.1 } ; flush ruleset ; {"),
        ("port", ["10.0.0.1,tcp:80", "fd00::1,udp:53"], "10.0.0.1,tcp:80 }"),
        ("port", ["10.0.0.1,tcp:80"], "10.0.0.1,tcp:70000"),
        ("pods", ["10.0.0.1"], "10.0.0.2\n10.0.0.3"),  # each line an address, but one entry
    ],
)
def test_set_elements_carry_nothing_but_addresses_and_ports(kind: str, good: list[str], bad: str) -> None:
    """Elements are checked in one pass over all of them; one bad entry among good ones is
    refused, by its text, before anything reaches a ruleset."""
    from npc.lower import SetSpec

    spec = SetSpec(kind, 4, ("k",), "s4-x")  # type: ignore[arg-type]
    entries = [(e, False) for e in good]
    assert len(nftables.set_text(spec, entries).elements) == len(good)
    with pytest.raises(ValueError, match=re.escape(repr(bad))):
        nftables.set_text(spec, [*entries, (bad, False), *entries])
