"""Policy on every network a pod has: multi-network truth tables on a real kernel, and side by side.

Each pod of a ``cases/multinet`` case has a second (third) veth routed through the node, its own
address range, and the annotations CNI-Genie and Multus write; the case's ``applies`` run ``npc
apply`` once per network in the node. The same tables are checked against the reference evaluator
(no root needed), fed exactly what ``npc`` builds for each network.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from kernel.case import Case, write_inputs
from kernel.cluster import Cluster, Observation
from kernel.expected import evaluated
from kernel.multinet import MultinetCase, load_multinet_cases
from kernel.report import diff_report
from npc.backends.iptables.names import Names
from npc.backends.nftables import table_name
from npc.cli import build_from_args, build_parser
from npc.evaluate import Evaluator
from npc.lower import network_tag

MULTI = load_multinet_cases()
BACKENDS = ("iptables", "nftables")


def _failures(case: Case, observations: list[Observation]) -> str:
    reports = [diff_report(case, o.check, o.observed, o.details) for o in observations]
    return "\n\n".join(r for r in reports if r)


def _network_of(args: tuple[str, ...]) -> str | None:
    return args[args.index("--network") + 1] if "--network" in args else None


# --- the evaluator agrees with every table (fast, no root) --------------------------------------


@pytest.mark.parametrize("mcase", MULTI, ids=[m.id for m in MULTI])
def test_multinet_evaluator_agrees_with_table(mcase: MultinetCase, tmp_path: Path) -> None:
    case = mcase.case
    paths, inventory = write_inputs(case, tmp_path)
    reports = []
    for args in mcase.applies:
        argv = ["compile", *map(str, paths), "--inventory", str(inventory), *args]
        job = build_from_args(build_parser().parse_args(argv))
        assert not job.assembled.warnings, job.assembled.warnings  # the harness writes them as plugins do
        evaluator = Evaluator(job.compiled.program, job.assembled.inventory)
        for check in (c for c in case.checks if c.network == _network_of(args)):
            reports.append(
                diff_report(case, check, evaluated(case, check, evaluator), observed_title="evaluator")
            )
    failures = "\n\n".join(r for r in reports if r)
    assert not failures, f"{case.path.name}: {case.name}\n{failures}"


def test_every_probed_network_is_applied() -> None:
    for mcase in MULTI:
        applied = {_network_of(args) for args in mcase.applies}
        assert {c.network for c in mcase.case.checks} <= applied, mcase.id


# --- the kernel ---------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mcase", MULTI, ids=[m.id for m in MULTI])
@pytest.mark.kernel
def test_multinet_case_on_kernel(mcase: MultinetCase, backend: str, tmp_path: Path) -> None:
    case = mcase.case
    with Cluster(case, tmp_path) as cluster:
        for args in mcase.applies:
            done = cluster.apply(backend=backend, extra_args=args, check=False)
            assert done.returncode == 0, (
                f"npc apply {' '.join(args)} exited {done.returncode}:\n{done.stderr}"
            )
            assert "warning" not in done.stderr, done.stderr
        failures = _failures(case, cluster.probe())
    assert not failures, f"{case.path.name}: {case.name}\n{failures}"


def _mcase(prefix: str) -> MultinetCase:
    return next(m for m in MULTI if m.id.startswith(prefix))


@pytest.mark.kernel
def test_harness_routes_secondary_networks_through_the_node_from_their_own_addresses(tmp_path: Path) -> None:
    """A hand-made drop of one pod's net2 address affects its net2 probes and nothing on the primary."""
    mcase = _mcase("multinet-01")
    case = mcase.case
    src = case.endpoints[2]
    with Cluster(case, tmp_path) as cluster:
        drop = ["-m", "conntrack", "--ctstate", "NEW", "-s", str(src.address("v4", "net2")), "-j", "DROP"]
        cluster.node_exec(["iptables", "-A", "FORWARD", *drop])
        observations = cluster.probe()
    for o in observations:
        denied = {(i, j) for i, row in enumerate(o.observed) for j, c in enumerate(row) if c not in ".?"}
        expected = {(2, 0), (2, 1)} if o.check.network == "net2" else set()
        assert denied == expected, (o.check.label, o.observed)


def _owned(cluster: Cluster, network: str, backend: str) -> str:
    """Everything one network owns in the node: its chains, FORWARD jump and sets, or its nft table."""
    names = Names(network_tag(network))
    if backend == "nftables":
        return cluster.node_exec(["nft", "list", "table", "inet", table_name(network)]).stdout
    text = ""
    for tool in ("iptables-save", "ip6tables-save"):
        saved = cluster.node_exec([tool, "-t", "filter"]).stdout
        text += "".join(
            line + "\n"
            for line in saved.splitlines()
            if names.chain_prefix in line and not line.startswith("#")
        )
    sets = cluster.node_exec(["ipset", "save"]).stdout
    text += "".join(line + "\n" for line in sets.splitlines() if re.search(rf"\b{names.set_prefix}", line))
    return re.sub(r"\[\d+:\d+\]", "", text)  # packet counters


def _unseeded(state: str) -> str:
    """A set swapped in by a later apply of its own network gets a fresh hash seed: not a change."""
    return re.sub(r" initval 0x[0-9a-f]+", "", state)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.kernel
def test_networks_side_by_side_and_reapplying_one_never_disturbs_the_other(
    backend: str, tmp_path: Path
) -> None:
    mcase = _mcase("multinet-01")
    case = mcase.case
    primary, net2 = mcase.applies
    with Cluster(case, tmp_path) as cluster:
        for args in (primary, net2):
            cluster.apply(backend=backend, extra_args=args)
        assert not _failures(case, cluster.probe())
        net2_state, primary_state = _owned(cluster, "net2", backend), _owned(cluster, "default", backend)
        assert net2_state and primary_state

        # the primary network's policy changes: net2's chains, jump and sets stay byte for byte
        without_backend_deny = [p for p in case.policy_documents() if p["kind"] == "MultiNetworkPolicy"]
        cluster.apply(backend=backend, extra_args=primary, policies=without_backend_deny)
        assert _owned(cluster, "net2", backend) == net2_state
        primary_tables = cluster.probe([c for c in case.checks if c.network is None])
        assert all(c in "?." for o in primary_tables for row in o.observed for c in row), primary_tables
        assert not _failures(case, cluster.probe([c for c in case.checks if c.network == "net2"]))

        # re-applying net2 (unchanged, then changed) leaves the primary network alone
        changed_primary = _owned(cluster, "default", backend)
        cluster.apply(backend=backend, extra_args=net2, policies=without_backend_deny)
        assert _unseeded(_owned(cluster, "net2", backend)) == _unseeded(net2_state)  # same inputs, same state
        cluster.apply(backend=backend, extra_args=net2, policies=[])
        assert _owned(cluster, "default", backend) == changed_primary
        everything = cluster.probe()
    assert all(c in "?." for o in everything for row in o.observed for c in row), everything
