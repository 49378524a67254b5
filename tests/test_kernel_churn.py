"""Churn on a running cluster, judged by probes: pods come and go, policies are re-applied under
traffic, and an apply the kernel rejects leaves the previous policy in force (the scenarios are
in ``kernel/churn.py``, shared with the Weave and agent suites).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import attrs
import pytest
from kernel.churn import (
    AFTER,
    AFTER_TABLES,
    ANSWER_TIMEOUT,
    APPLIES,
    BEFORE,
    BEFORE_TABLES,
    CHURN,
    DENY_TIMEOUT,
    PAIRS,
    POLICIES_X,
    POLICIES_Y,
    TABLES_X,
    TABLES_Y,
    A,
    B,
    C,
    D,
    assert_tables,
    assert_traffic_held,
    inventory,
    pair_checks,
    traffic,
)
from kernel.cluster import Cluster
from kernel.netns import InNetns, Netns, compile_policies, rejecting_nft, update_between
from kernel.report import observations_report
from npc.backends.base import Ran
from npc.backends.iptables.load import apply_iptables, detect_tools
from npc.backends.iptables.mark_tree import Marks

pytestmark = pytest.mark.kernel

BACKENDS = ("iptables", "nftables")


def npc_rules(cluster: Cluster) -> dict[str, str]:
    """npc's lines (chains, rules, the FORWARD jump) in each family's tables, as saved."""
    saved = {tool: cluster.node_exec([tool]).stdout for tool in ("iptables-save", "ip6tables-save")}
    return {
        tool: "".join(f"{line}\n" for line in text.splitlines() if "NPC-" in line)
        for tool, text in saved.items()
    }


@pytest.mark.parametrize("backend", BACKENDS)
def test_pod_churn_on_a_running_cluster(backend: str, tmp_path: Path) -> None:
    """IP change, removal, a new selected pod, labels leaving and entering a selector, IP reuse:
    one re-apply and the truth table follows; on iptables only set members changed."""
    with Cluster(CHURN, tmp_path) as cluster:
        cluster.apply(backend=backend, endpoints=inventory(CHURN, BEFORE))
        assert_tables(cluster, BEFORE_TABLES, "before the churn")
        rules = npc_rules(cluster) if backend == "iptables" else {}
        cluster.apply(backend=backend, endpoints=inventory(CHURN, AFTER))
        assert_tables(cluster, AFTER_TABLES, "after the churn")
        if backend == "iptables":
            assert all(rules.values()), rules
            assert npc_rules(cluster) == rules


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_gap_while_policies_are_reapplied(backend: str, tmp_path: Path) -> None:
    """X and Y alternate under traffic: a->b never refused, c->d never let through, and a->b
    connections opened before the first re-apply carry on over the very same sockets."""
    with Cluster(PAIRS, tmp_path) as cluster:
        cluster.apply(backend=backend, policies=POLICIES_Y)
        assert_tables(cluster, TABLES_Y, "policy set Y")
        cluster.apply(backend=backend, policies=POLICIES_X)
        assert_tables(cluster, TABLES_X, "policy set X")
        echoes: list[tuple[int, str, str]] = []
        with (
            cluster.hold(A, B, 80, "v4") as echo_v4,
            cluster.hold(A, B, 80, "v6") as echo_v6,
            traffic(cluster) as seen,
        ):
            for n in range(APPLIES):
                cluster.apply(backend=backend, policies=POLICIES_Y if n % 2 == 0 else POLICIES_X)
                echoes.append((n, echo_v4(), echo_v6()))
        broken = [e for e in echoes if e[1:] != ("ok", "ok")]
        assert not broken, f"established a->b after apply (n, v4, v6): {broken}"
        assert_traffic_held(seen, APPLIES)
        assert_tables(cluster, TABLES_X, "after the re-applies (X last)")


def make_kernel_reject(cluster: Cluster, backend: str, tmp_path: Path) -> str | None:
    """Arrange for the next apply to be rejected by the kernel; returns the PATH npc must run with.

    iptables: a foreign IPv6 rule jumps into one of npc's policy chains, so deleting that chain fails
    after IPv4 was already replaced (npc must put IPv4 back). nftables: ``nft`` is handed a statement
    the kernel refuses at commit, inside npc's own transaction.
    """
    if backend == "nftables":
        return rejecting_nft(tmp_path)
    saved = cluster.node_exec(["ip6tables-save", "-t", "mangle"]).stdout
    chain = re.search(r"^:(NPC-\w+-P-\w+)", saved, re.M)
    assert chain, saved
    cluster.node_exec(["ip6tables", "-t", "mangle", "-A", "INPUT", "-j", chain.group(1)])
    return None


@pytest.mark.parametrize("backend", BACKENDS)
def test_rejected_apply_under_traffic_keeps_the_previous_policy(backend: str, tmp_path: Path) -> None:
    """The kernel refuses Y (with c relabelled app=a): exit 3 and X's table, c still shut out.

    Had any of it landed, the probes would show Y's table, or X's with c reaching b and d.
    """
    relabelled = [attrs.evolve(e, labels={"app": "a"}) if e.index == C.index else e for e in PAIRS.endpoints]
    with Cluster(PAIRS, tmp_path) as cluster:
        cluster.apply(backend=backend, policies=POLICIES_X)
        assert_tables(cluster, TABLES_X, "policy set X")
        path = make_kernel_reject(cluster, backend, tmp_path)
        with cluster.hold(A, B, 80) as echo, traffic(cluster) as seen:
            done = cluster.apply(
                backend=backend, policies=POLICIES_Y, endpoints=relabelled, check=False, path=path
            )
            held = echo()
        assert done.returncode == 3, done.stderr
        assert "rejected" in done.stderr
        assert "Traceback" not in done.stderr
        assert held == "ok", "established a->b after the rejected apply"
        assert_traffic_held(seen, 1)
        assert_tables(cluster, TABLES_X, "after the rejected apply")


class Probing(InNetns):
    """The real tools in the cluster's node, each restore split at its tables' commits; after
    every command and every commit, a->b must answer and c->d must not. Each state is probed
    while it stands, so a state that drops a->b for one commit's time is caught every time."""

    def __init__(self, cluster: Cluster, tmp_path: Path) -> None:
        super().__init__(Netns(cluster.node, tmp_path))
        self.cluster, self.states = cluster, 0
        self.broken: list[str] = []

    def __call__(self, argv: Sequence[str], stdin: str = "") -> Ran:
        parts = re.findall(r"\*\w+\n.*?^COMMIT\n", stdin, re.M | re.S) if "restore" in argv[0] else []
        if len(parts) < 2:
            return self._probed(argv, stdin)
        for part in parts:  # each table of a restore commits on its own: the same, one at a time
            done = self._probed(argv, part)
            if done.returncode:
                return done
        return done

    def _probed(self, argv: Sequence[str], stdin: str) -> Ran:
        done = super().__call__(argv, stdin)
        self.states += 1
        seen = [
            *self.cluster.probe(pair_checks(PAIRS, A, B, "."), ANSWER_TIMEOUT, retry_timeout=None),
            *self.cluster.probe(pair_checks(PAIRS, C, D, "X"), DENY_TIMEOUT, retry_timeout=None),
        ]
        failures = observations_report(self.cluster.case, seen)
        if failures:
            self.broken.append(f"after {' '.join(argv)} ({stdin.splitlines()[:1]}):\n{failures}")
        return done


@pytest.mark.parametrize("load", ["apply", "update"])
def test_every_state_an_iptables_load_passes_through_keeps_the_pairs(load: str, tmp_path: Path) -> None:
    """From X to Y and back the isolated pods, so the group codes, change: every state the
    kernel passes through (each set created or swapped, each table committed) lets a->b through
    and keeps c->d out, by an apply and by the agent's update. Before the codes and the trie
    reading them shared one table's commit, the state between mangle's commit and filter's
    dropped a->b."""
    with Cluster(PAIRS, tmp_path) as cluster:
        x, y = (compile_policies(*p, inventory=PAIRS.inventory()) for p in (POLICIES_X, POLICIES_Y))
        node = InNetns(Netns(cluster.node, tmp_path))
        tools, marks = detect_tools(node), Marks()
        apply_iptables(x.lowered, x.members, marks, tools, node)
        assert_tables(cluster, TABLES_X, "policy set X")
        run = Probing(cluster, tmp_path)
        for was, now in ((x, y), (y, x), (x, y)):
            if load == "apply":
                apply_iptables(now.lowered, now.members, marks, tools, run)
            else:
                update_between(was, now, marks, tools, run)
        assert not run.broken, "\n\n".join(run.broken)
        assert run.states >= 6, run.states  # per load at least its two restores
        assert_tables(cluster, TABLES_Y, "policy set Y")
