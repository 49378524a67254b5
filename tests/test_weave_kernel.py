"""``npc apply --backend weave`` on a Weave Net node (tests/kernel/weave.py), judged by the kernel.

The truth tables run on this topology from ``test_kernel_cases.py``; here: the router's own rules
and other tools' objects survive byte for byte, a node where weave-npc ran is taken over, re-applies
under traffic leave no gap (held connections survive, WEAVE-NPC is never seen empty), a rejected
apply keeps the previous policy and exits 3, and the design note's scenario (Weave as the second
network, through CNI-Genie) enforces policy on each pod's Weave address.
"""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import attrs
import pytest
from kernel.case import load_case
from kernel.churn import (
    APPLIES,
    PAIRS,
    POLICIES_X,
    POLICIES_Y,
    TABLES_X,
    TABLES_Y,
    A,
    B,
    assert_tables,
    assert_traffic_held,
    make_case,
    network_policy,
    pods_from,
    traffic,
)
from kernel.multinet import MultinetCase, load_multinet_cases
from kernel.netns import fresh_netns, policy
from kernel.report import observations_report
from kernel.weave import NO_MASQ_SET, WeaveCluster, weave_case

pytestmark = pytest.mark.kernel

CASES = Path(__file__).parent / "cases"
OPEN = weave_case(load_case(CASES / "10-no-policy-everything-open.json"))
WEAVE_PAIRS = weave_case(PAIRS)

# What weave-npc leaves on a node with one default-deny (Ingress and Egress) policy in namespace
# default and one ipBlock rule: its static rules (prog/weave-npc/main.go), the lazily added egress
# drop, per-namespace default-allow rules, and sets named "weave-" + shortName(key) (npc/shortname.go).
ALL_PODS = "weave-k?Z;25^M}|1s7P3|H9i;*;MhG"  # key "default:"
INGRESS_ALLOW = "weave-;rGqyMIl1HN^cfDki~Z$3]6!N"  # "ingress-default-allow:default"
EGRESS_ALLOW = "weave-s_+ChJId4Uy_$}G;WdH|~TK)I"  # "egress-default-allow:default"
EXCEPT = "weave-RT*@:{^I!F)tl43aa5~:_EsFc"  # "default:ipblock-except:192.168.9.0/24"
WEAVE_NPC_RULES = f"""*filter
:WEAVE-NPC - [0:0]
:WEAVE-NPC-DEFAULT - [0:0]
:WEAVE-NPC-INGRESS - [0:0]
:WEAVE-NPC-EGRESS-ACCEPT - [0:0]
:WEAVE-NPC-EGRESS-CUSTOM - [0:0]
:WEAVE-NPC-EGRESS-DEFAULT - [0:0]
-A WEAVE-NPC -m state --state RELATED,ESTABLISHED -j ACCEPT
-A WEAVE-NPC -d 224.0.0.0/4 -j ACCEPT
-A WEAVE-NPC -m physdev --physdev-out vethwe-bridge --physdev-is-bridged -j ACCEPT
-A WEAVE-NPC -m state --state NEW -j WEAVE-NPC-DEFAULT
-A WEAVE-NPC -m state --state NEW -j WEAVE-NPC-INGRESS
-A WEAVE-NPC-EGRESS-ACCEPT -j MARK --set-xmark 0x40000/0x40000
-A WEAVE-NPC-EGRESS -m state --state RELATED,ESTABLISHED -j ACCEPT
-A WEAVE-NPC-EGRESS -m physdev --physdev-in vethwe-bridge --physdev-is-bridged -j RETURN
-A WEAVE-NPC-EGRESS -m addrtype --dst-type LOCAL -j RETURN
-A WEAVE-NPC-EGRESS -d 224.0.0.0/4 -j RETURN
-A WEAVE-NPC-EGRESS -m state --state NEW -j WEAVE-NPC-EGRESS-DEFAULT
-A WEAVE-NPC-EGRESS -m state --state NEW -m mark ! --mark 0x40000/0x40000 -j WEAVE-NPC-EGRESS-CUSTOM
-A WEAVE-NPC-EGRESS -m state --state NEW -m mark ! --mark 0x40000/0x40000 -j NFLOG --nflog-group 86
-A WEAVE-NPC-EGRESS -m mark ! --mark 0x40000/0x40000 -j DROP
-A WEAVE-NPC-DEFAULT -m set --match-set {INGRESS_ALLOW} dst -m comment --comment "DefaultAllow ingress isolation for namespace: default" -j ACCEPT
-A WEAVE-NPC-EGRESS-DEFAULT -m set --match-set {EGRESS_ALLOW} src -m comment --comment "DefaultAllow egress isolation for namespace: default" -j WEAVE-NPC-EGRESS-ACCEPT
-A WEAVE-NPC-EGRESS-DEFAULT -m set --match-set {EGRESS_ALLOW} src -m comment --comment "DefaultAllow egress isolation for namespace: default" -j RETURN
-A WEAVE-NPC-INGRESS -p tcp -s 192.168.0.0/16 -m set ! --match-set {EXCEPT} src -m set --match-set {ALL_PODS} dst -m tcp --dport 9999 -m comment --comment "cidr: 192.168.0.0/16 -> pods: namespace: default, selector:  (ingress)" -j ACCEPT
COMMIT
"""


def weave_npc_sets(pod_ips: list[str]) -> str:
    lines = [
        f"create {ALL_PODS} hash:ip",
        f"create {INGRESS_ALLOW} hash:ip",
        f"create {EGRESS_ALLOW} hash:ip",
    ]
    lines += [f"create {EXCEPT} hash:net", f"add {EXCEPT} 192.168.9.0/24"]
    lines += [f"add {ALL_PODS} {ip}" for ip in pod_ips]
    return "\n".join(lines) + "\n"


def weave_npc_chains(cluster: WeaveCluster) -> list[str]:
    """Every rule in the WEAVE-NPC* chains, as saved."""
    return by_chain(cluster.node_exec(["iptables-save", "-t", "filter"]).stdout)


def by_chain(text: str) -> list[str]:
    """The WEAVE-NPC* rules of a restore or save text, chain by chain (each chain's in its order)."""
    return sorted(
        (line for line in text.splitlines() if line.startswith("-A WEAVE-NPC")), key=lambda r: r.split()[1]
    )


def compiled_rules(cluster: WeaveCluster, *args: str) -> list[str]:
    """The WEAVE-NPC* rules ``npc compile --backend weave`` writes for the last apply's inputs."""
    folder = cluster.workdir / f"apply-{cluster._applies}"
    out = cluster.workdir / "compiled"
    cluster.npc("compile", str(folder / "policies"), "--inventory", str(folder / "inventory.json"),
                "--backend", "weave", "-o", str(out), *args)  # fmt: skip
    return by_chain((out / "rules.v4").read_text())


def test_router_rules_and_other_tools_objects_survive_byte_for_byte(tmp_path: Path) -> None:
    with WeaveCluster(OPEN, tmp_path) as cluster:
        cluster.node_exec(["ipset", "create", "foreign", "hash:ip"])
        cluster.node_exec(["ipset", "add", "foreign", "192.0.2.7"])
        cluster.node_exec(["iptables", "-N", "FOREIGN"])
        cluster.node_exec(
            ["iptables", "-A", "FOREIGN", "-m", "set", "--match-set", "foreign", "src", "-j", "DROP"]
        )
        cluster.node_exec(["iptables", "-A", "FORWARD", "-s", "192.0.2.0/24", "-j", "FOREIGN"])
        cluster.node_exec(["ip6tables", "-A", "FORWARD", "-s", "2001:db8::/32", "-j", "ACCEPT"])
        before = cluster.router_state()
        six = _uncounted(cluster.node_exec(["ip6tables-save"]).stdout)
        assert "-j WEAVE-NPC" in before and "weaver-no-masq-local" in before and "FOREIGN" in before
        for policies in (POLICIES_X, POLICIES_Y, []):
            done = cluster.apply(backend="weave", policies=policies)
            assert done.returncode == 0, done.stderr
            assert "warning" not in done.stderr, done.stderr
            assert cluster.router_state() == before
            assert _uncounted(cluster.node_exec(["ip6tables-save"]).stdout) == six
            assert weave_npc_chains(cluster) == compiled_rules(cluster)


def test_takeover_from_weave_npc(tmp_path: Path) -> None:
    """weave-npc's default deny is in force; npc's apply (no policy) replaces every rule and set of it."""
    with WeaveCluster(OPEN, tmp_path) as cluster:
        router = cluster.router_state()  # before weave-npc's objects, which must all go
        pods = [str(e.ipv4) for e in OPEN.endpoints]
        cluster.node_exec(["ipset", "restore"], stdin=weave_npc_sets(pods))
        cluster.node_exec(["iptables-restore", "--noflush"], stdin=WEAVE_NPC_RULES)
        shut = cluster.probe(retry_timeout=None)
        assert all(c in "?X" for o in shut for row in o.observed for c in row), shut  # the test has teeth

        done = cluster.apply(backend="weave")
        assert done.returncode == 0, done.stderr
        assert "4 weave-npc sets removed" in done.stderr
        sets = cluster.node_exec(["ipset", "list", "-n"]).stdout.split()
        assert [s for s in sets if s.startswith("weave")] == [NO_MASQ_SET]
        rules = weave_npc_chains(cluster)
        assert rules == compiled_rules(cluster)
        assert not [line for line in rules if "weave-" in line]
        assert cluster.router_state() == router
        failures = observations_report(OPEN, cluster.probe())
    assert not failures, failures


@attrs.define
class Listings:
    made: int = 0
    short: list[str] = attrs.Factory(list)  # what each listing that lacked rules showed


@contextmanager
def watch_chains(cluster: WeaveCluster) -> Iterator[Listings]:
    """Lists WEAVE-NPC and WEAVE-NPC-EGRESS over and over while the block runs."""
    stop, seen = threading.Event(), Listings()

    def loop() -> None:
        while not stop.is_set():
            for chain, least in (("WEAVE-NPC", 5), ("WEAVE-NPC-EGRESS", 8)):
                listed = cluster.node_exec(["iptables", "-S", chain], check=False).stdout
                seen.made += 1
                if listed.count(f"-A {chain} ") < least:
                    seen.short.append(f"{chain}:\n{listed}")

    thread = threading.Thread(target=loop)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join()


def test_no_gap_while_policies_are_reapplied(tmp_path: Path) -> None:
    """X and Y alternate under traffic: a->b never refused, c->d never let through, a held a->b
    connection carries on, and the router's chains are never seen empty or short."""
    with WeaveCluster(WEAVE_PAIRS, tmp_path) as cluster:
        cluster.apply(backend="weave", policies=POLICIES_Y)
        assert_tables(cluster, TABLES_Y, "policy set Y")
        cluster.apply(backend="weave", policies=POLICIES_X)
        assert_tables(cluster, TABLES_X, "policy set X")
        echoes = []
        with cluster.hold(A, B, 80) as echo, traffic(cluster) as seen, watch_chains(cluster) as listings:
            for n in range(APPLIES):
                cluster.apply(backend="weave", policies=POLICIES_Y if n % 2 == 0 else POLICIES_X)
                echoes.append((n, echo()))
        assert not listings.short, listings.short[:3]
        assert listings.made > APPLIES
        assert [e for e in echoes if e[1] != "ok"] == []
        assert_traffic_held(seen, APPLIES)
        assert_tables(cluster, TABLES_X, "after the re-applies (X last)")


def test_rejected_apply_keeps_the_previous_policy_and_exits_3(tmp_path: Path) -> None:
    """Another tool jumps into one of npc's policy chains, so the next apply (which no longer wants
    that chain) is refused by the kernel: exit 3, every rule and set as before, X still in force."""
    with WeaveCluster(WEAVE_PAIRS, tmp_path) as cluster:
        cluster.apply(backend="weave", policies=POLICIES_X)
        saved = cluster.node_exec(["iptables-save", "-t", "filter"]).stdout
        chain = re.search(r"^:(NPC-\w+-P-\w+)", saved, re.M)
        assert chain, saved
        cluster.node_exec(["iptables", "-A", "INPUT", "-s", "192.0.2.1", "-j", chain.group(1)])
        state = (
            cluster.node_exec(["iptables-save", "-t", "filter"]).stdout,
            cluster.node_exec(["ipset", "save"]).stdout,
        )
        with cluster.hold(A, B, 80) as echo:
            done = cluster.apply(backend="weave", policies=POLICIES_Y, check=False)
            held = echo()
        assert done.returncode == 3, done.stderr
        assert "rejected" in done.stderr and "Traceback" not in done.stderr
        assert held == "ok"
        after = (
            cluster.node_exec(["iptables-save", "-t", "filter"]).stdout,
            cluster.node_exec(["ipset", "save"]).stdout,
        )
        assert [_uncounted(s) for s in after] == [_uncounted(s) for s in state]
        assert_tables(cluster, TABLES_X, "after the rejected apply")


def _uncounted(saved: str) -> str:
    return re.sub(r"^#.*\n|\[\d+:\d+\]", "", saved, flags=re.M)


def test_replaces_the_iptables_backend_of_the_same_network(tmp_path: Path) -> None:
    """From ``--backend iptables`` to ``--backend weave``: npc's FORWARD jumps, chains and IPv6 sets go."""
    with WeaveCluster(WEAVE_PAIRS, tmp_path) as cluster:
        cluster.apply(backend="iptables", policies=POLICIES_Y)
        assert "NPC-" in cluster.node_exec(["ip6tables-save", "-t", "mangle"]).stdout
        done = cluster.apply(backend="weave", policies=POLICIES_X)
        assert "warning" not in done.stderr, done.stderr
        saved = cluster.node_exec(["iptables-save"]).stdout
        assert not re.search(r"NPC-\w+-(FORWARD|EGRESS|INGRESS)\b", saved), saved
        assert "NPC-" not in cluster.node_exec(["ip6tables-save"]).stdout  # and no IPv6 left
        assert "inet6" not in cluster.node_exec(["ipset", "save"]).stdout
        assert_tables(cluster, TABLES_X, "policy set X on weave")


OTHER_NODE_POLICIES = [
    network_policy("r-closed", {"matchLabels": {"app": "r"}}, policyTypes=["Ingress", "Egress"]),
    network_policy("a-from-b", {"matchLabels": {"app": "a"}}, ingress=[{"from": pods_from("b")}]),
    network_policy(
        "a-to-b", {"matchLabels": {"app": "a"}}, policyTypes=["Egress"], egress=[{"to": pods_from("b")}]
    ),
]
OTHER_NODE = weave_case(
    make_case(
        "weave-other-node",
        [{"name": app, "labels": {"app": app}} for app in "abr"],
        {80: ["?.X", ".?X", "XX?"]},  # the cluster's truth: r is closed both ways, a talks to b only
        policies=OTHER_NODE_POLICIES,
    )
)


def test_pods_of_other_nodes_are_judged_on_their_own_node(tmp_path: Path) -> None:
    """r lives on another node, behind vethwe-bridge: this node judges its own pods' egress to r
    and ingress from r, never r's own side (r's node does), as weave-npc's static rules say."""
    (tmp_path / "local").mkdir()
    (tmp_path / "remote").mkdir()
    with WeaveCluster(OTHER_NODE, tmp_path / "local") as cluster:  # r on this node: the truth table
        cluster.apply(backend="weave")
        assert_tables(cluster, {80: ["?.X", ".?X", "XX?"]}, "r on this node")
    with WeaveCluster(OTHER_NODE, tmp_path / "remote", remote=[2]) as cluster:
        cluster.apply(backend="weave")
        # a->r: a's egress (here) refuses; b->r: r's ingress is not this node's; r->a: a's ingress
        # (here) refuses; r->b: r's egress is not this node's
        assert_tables(cluster, {80: ["?.X", ".?.", "X.?"]}, "r on another node")


# --- the design note: Weave Net as the second network, through CNI-Genie -------------------------

SECOND = [m for m in load_multinet_cases() if [n.name for n in m.networks] == ["net2"]]


@pytest.mark.parametrize("mcase", SECOND, ids=[m.id for m in SECOND])
def test_weave_as_the_second_network(mcase: MultinetCase, tmp_path: Path) -> None:
    """Pods' eth1 on the Weave bridge, eth0 routed; net2's apply uses the weave backend, the
    primary network's the iptables backend, side by side on one node."""
    case = weave_case(mcase.case)
    with WeaveCluster(case, tmp_path, network="net2") as cluster:
        for args in mcase.applies:
            backend = "weave" if "net2" in args else "iptables"
            done = cluster.apply(backend=backend, extra_args=args, check=False)
            assert done.returncode == 0, f"npc apply --backend {backend} {' '.join(args)}:\n{done.stderr}"
            assert "warning" not in done.stderr, done.stderr
        failures = observations_report(case, cluster.probe())
    assert not failures, f"{case.path.name}: {case.name}\n{failures}"


def test_harness_weave_bridge_carries_the_second_network(tmp_path: Path) -> None:
    """Before any apply the router drops whatever enters the bridge: net2 probes all fail, the
    primary network's all pass. So a passing net2 table above was opened by npc's rules."""
    mcase = next(m for m in SECOND if m.id.startswith("multinet-01"))
    case = weave_case(mcase.case)
    with WeaveCluster(case, tmp_path, network="net2") as cluster:
        observations = cluster.probe(retry_timeout=None)
    for o in observations:
        cells = {c for row in o.observed for c in row} - {"?"}
        assert cells == ({"X"} if o.check.network == "net2" else {"."}), (o.check.label, o.observed)


def test_a_node_without_the_router_hooks_gets_a_warning(tmp_path: Path) -> None:
    """Loaded, but nothing jumps to WEAVE-NPC (no router, or one without --expect-npc): say so."""
    with fresh_netns("npc-weave", tmp_path) as ns:
        done = ns.npc_apply(policy("a"), extra=("--backend", "weave"))
        assert done.returncode == 0, done.stderr
        assert "warning: nothing jumps to WEAVE-NPC in IPv4" in done.stderr
        assert ":WEAVE-NPC-EGRESS - " in ns.run("iptables-save", "-t", "filter").stdout


def test_a_network_weave_enforces_is_refused_by_the_other_backends(tmp_path: Path) -> None:
    """Weave's direction chains jump into the network's chains: npc's own iptables layout would
    have to delete them, and the kernel refused that midway, leaving new empty chains behind.
    Both other backends now refuse up front (exit 3), naming weave's reset; nothing changes."""
    with fresh_netns("npc-weave", tmp_path) as ns:
        done = ns.npc_apply(policy("a"), extra=("--backend", "weave"))
        assert done.returncode == 0, done.stderr
        before = ns.state()
        for backend in ("iptables", "nftables"):
            done = ns.npc_apply(policy("a"), extra=("--backend", backend))
            assert done.returncode == 3, done.stderr
            assert (
                "enforced by the weave backend; remove it first with: npc reset --backend weave"
                in done.stderr
            )
            assert "Traceback" not in done.stderr
            assert ns.state() == before
            assert "npc-" not in ns.run("nft", "list", "tables").stdout


def test_a_plain_reset_takes_a_weave_network_apart_and_the_iptables_backends_leaves_it(
    tmp_path: Path,
) -> None:
    """Weave's fixed chains jump into npc's chains of the network, so the iptables backend's reset
    could not delete them and refused the whole ``npc reset`` (exit 3): it now leaves a network
    another layout hooks in to that backend, and the plain reset gets to Weave's."""
    with WeaveCluster(WEAVE_PAIRS, tmp_path) as cluster:
        router = cluster.router_state()
        fresh = cluster.node_exec(["iptables-save", "-t", "filter"]).stdout
        cluster.apply(backend="weave", policies=POLICIES_X)
        loaded = _uncounted(cluster.node_exec(["iptables-save"]).stdout)
        chains = {
            line.split()[0]
            for line in cluster.node_exec(["iptables-save", "-t", "filter"]).stdout.splitlines()
            if line.startswith(":")
        }
        for args in (["--backend", "iptables"], ["--backend", "iptables", "--all"]):
            done = cluster.node_exec([sys.executable, "-m", "npc", "reset", *args], check=False)
            assert done.returncode == 0, done.stderr
            assert "left 1 network(s) that rules outside npc's chains jump into (Weave's" in done.stderr
            assert _uncounted(cluster.node_exec(["iptables-save"]).stdout) == loaded
        done = cluster.node_exec([sys.executable, "-m", "npc", "reset"], check=False)
        gone = chains - {line.split()[0] for line in fresh.splitlines() if line.startswith(":")}
        assert len(gone) > 2  # npc's chains and weave-npc's fixed ones the router did not make (it said 2)
        assert done.returncode == 0 and f"removed {len(gone)} chains" in done.stderr, (gone, done.stderr)
        assert _uncounted(cluster.node_exec(["iptables-save", "-t", "filter"]).stdout) == _uncounted(fresh)
        assert cluster.router_state() == router
        assert not [
            s for s in cluster.node_exec(["ipset", "list", "-n"]).stdout.split() if s.startswith("np")
        ]


def test_reset_leaves_the_router_chains_as_the_router_made_them(tmp_path: Path) -> None:
    """npc's chains and sets go, WEAVE-NPC/WEAVE-NPC-EGRESS stay, empty: back to a node without
    weave-npc, where the router lets nothing new into a pod."""
    with WeaveCluster(WEAVE_PAIRS, tmp_path) as cluster:
        router = cluster.router_state()
        fresh = cluster.node_exec(["iptables-save", "-t", "filter"]).stdout
        cluster.apply(backend="weave", policies=POLICIES_X)
        reset = "from npc.backends import get; from npc.backends.base import Options, SubprocessRunner; "
        reset += "print(get('weave').reset('default', Options(), SubprocessRunner()).summary)"
        done = cluster.node_exec([sys.executable, "-c", reset])
        assert "removed" in done.stdout, done.stdout
        assert _uncounted(cluster.node_exec(["iptables-save", "-t", "filter"]).stdout) == _uncounted(fresh)
        assert cluster.router_state() == router
        assert not [
            s for s in cluster.node_exec(["ipset", "list", "-n"]).stdout.split() if s.startswith("np")
        ]
        assert_tables(cluster, {80: ["?XXX", "X?XX", "XX?X", "XXX?"]}, "after the reset")
