"""``npc agent`` in the loop with the kernel: one agent per cluster, inputs rewritten under it.

The agent runs in the cluster's node namespace exactly as a user starts it; each step rewrites its
inputs (files, or objects in the API stand-in listening inside that namespace), waits for the
agent's apply line and then probes. The kernel judges: truth tables of the project's cases fed one
after another, pod churn with the rules byte-identical, a bad input keeping the previous state,
drift repaired by the resync, SIGTERM leaving the rules in force.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
from kernel.case import Case, Endpoint, load_cases
from kernel.churn import (
    AFTER,
    AFTER_TABLES,
    BEFORE,
    BEFORE_TABLES,
    CHURN,
    Tables,
    assert_tables,
    expecting,
    inventory,
)
from kernel.cluster import Cluster
from kernel.multinet import MultinetCase, load_multinet_cases
from kernel.random_case import random_update, seeds
from kernel.report import observations_report
from kernel.weave import WeaveCluster, weave_case
from kube_standin import KubeStandin
from yaml_text import dump

pytestmark = pytest.mark.kernel

BACKENDS = ("iptables", "nftables")
MULTI = load_multinet_cases()
UNDRIFTED = "resync: the kernel holds what was applied"
APPLIED = re.compile(r"applied network |kernel already up to date")  # one line per change handled


def same_layout(cases: Sequence[Case]) -> list[Case]:
    """The cases sharing the first one's pods' addresses and families: one cluster serves them all."""

    def layout(case: Case) -> object:
        return (case.families, [(e.external, e.ipv4, e.ipv6, bool(e.attachments)) for e in case.endpoints])

    return [c for c in cases if layout(c) == layout(cases[0])]


def serving_all(cases: Sequence[Case]) -> Case:
    """The first case, listening on every port any of ``cases`` probes."""
    checks = {(c.protocol, c.port): c for case in cases for c in case.checks}
    return attrs.evolve(cases[0], checks=tuple(checks.values()))


class Agent:
    """``npc agent`` started once in the node namespace; ``step`` changes inputs and waits for it."""

    def __init__(self, cluster: Cluster, backend: str, args: Sequence[str], workdir: Path) -> None:
        self.cluster, self.log_path = cluster, workdir / "agent.log"
        argv = [
            "ip", "netns", "exec", cluster.node, sys.executable, "-m", "npc", "agent",
            "--backend", backend, "--listen", "127.0.0.1:9469", "--debounce", "50", *args,
        ]  # fmt: skip
        self.log = self.log_path.open("w")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def applies(self) -> int:
        return len(APPLIED.findall(self.text()))

    def wait(self, condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if condition():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"agent exited ({self.proc.returncode}):\n{self.text()}")
            time.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what}:\n{self.text()[-4000:]}")

    def step(self, change: Callable[[], None], handled: bool = True) -> None:
        """Make a change; wait for the agent to handle it (an apply, or its "up to date" line when
        the change makes no difference to the kernel; ``handled=False``: a change it refuses or
        that reads the same as before) and to settle."""
        before = self.applies()
        change()
        if handled:
            self.wait(lambda: self.applies() > before, "the change handled")
        for _ in range(50):  # settled: nothing further handled within 0.5 s
            seen = self.applies()
            time.sleep(0.5)
            if self.applies() == seen:
                return
        raise AssertionError(f"the agent never settled:\n{self.text()[-4000:]}")

    def stop(self) -> float:
        """SIGTERM; the seconds it took to exit (0 expected as exit code)."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=10)
        took = time.monotonic() - started
        assert code == 0, self.text()
        return took

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@contextmanager
def agent(cluster: Cluster, backend: str, args: Sequence[str], workdir: Path) -> Iterator[Agent]:
    running = Agent(cluster, backend, args, workdir)
    try:
        yield running
    finally:
        running.close()


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


class Files:
    """The agent's file inputs: a policy folder and an inventory file, rewritten per step."""

    def __init__(self, root: Path) -> None:
        self.policies, self.inventory = root / "policies", root / "inventory.json"
        self.policies.mkdir(parents=True)

    def write(self, case: Case, endpoints: Sequence[Endpoint] | None = None, policies: Any = None) -> None:
        docs = case.policy_documents() if policies is None else policies
        wanted = {f"{n:02d}.yaml": dump(doc) for n, doc in enumerate(docs)}
        for old in self.policies.iterdir():
            if old.name not in wanted:
                old.unlink()
        for name, text in wanted.items():
            write_atomically(self.policies / name, text)
        write_atomically(self.inventory, json.dumps(case.inventory(endpoints)))

    @property
    def args(self) -> list[str]:
        return ["--policies", str(self.policies), "--inventory", str(self.inventory)]


def assert_case(cluster: Cluster, case: Case, when: str = "") -> None:
    failures = observations_report(case, cluster.probe(case.checks))
    assert not failures, f"{case.id} {when}:\n{failures}"


def npc_rules(cluster: Cluster, backend: str) -> str:
    """npc's rules without set contents: iptables' saved lines, or nft's chains."""
    if backend == "iptables":
        saved = "".join(
            cluster.node_exec([tool, "-t", table]).stdout
            for tool in ("iptables-save", "ip6tables-save")
            for table in ("mangle", "filter")
        )
        return "".join(f"{line}\n" for line in saved.splitlines() if "NPC-" in line)
    listing = cluster.node_exec(["nft", "list", "table", "inet", "npc"]).stdout
    chains = re.findall(r"^\tchain .*?^\t}", listing, re.M | re.S)
    return "\n".join(chains)


def npc_members(cluster: Cluster, backend: str) -> dict[str, frozenset[str]]:
    """Every npc set's (and nft map's) elements, order aside."""
    if backend == "iptables":
        found: dict[str, set[str]] = {}
        for line in cluster.node_exec(["ipset", "save"]).stdout.splitlines():
            parts = line.split(" ", 2)
            if parts[0] == "create" and parts[1].startswith("npc-"):
                found.setdefault(parts[1], set())
            elif parts[0] == "add" and parts[1].startswith("npc-"):
                found[parts[1]].add(parts[2])
        return {k: frozenset(v) for k, v in found.items()}
    listing = json.loads(cluster.node_exec(["nft", "-j", "list", "table", "inet", "npc"]).stdout)
    out = {}
    for item in listing["nftables"]:
        for kind in ("set", "map"):
            if kind in item:
                elements = item[kind].get("elem", [])
                out[item[kind]["name"]] = frozenset(json.dumps(e, sort_keys=True) for e in elements)
    return out


# --- files: the truth tables, one after another, under one agent ----------------------------------

CASES = same_layout(load_cases())


@pytest.mark.parametrize("backend", BACKENDS)
def test_file_mode_follows_every_case_and_keeps_the_last_good_state(backend: str, tmp_path: Path) -> None:
    files = Files(tmp_path / "inputs")
    files.write(CASES[0])
    with Cluster(serving_all(CASES), tmp_path) as cluster, agent(cluster, backend, files.args, tmp_path) as a:
        a.wait(lambda: a.applies() > 0, "the first apply")
        assert_case(cluster, CASES[0], "at start")
        for n, case in enumerate(CASES[1:], 1):
            a.step(lambda case=case: files.write(case))
            assert_case(cluster, case, f"(step {n})")
            if n == 10:
                break_and_mend(a, files, case, cluster)
        assert "Traceback" not in a.text()


def full_load_state(
    cluster: Cluster, backend: str, files: Files
) -> tuple[list[str], dict[str, frozenset[str]]]:
    """npc's chains (in name order) and set members after ``npc apply`` of ``files`` replaces them."""
    cluster.npc("apply", str(files.policies), "--inventory", str(files.inventory), "--backend", backend)
    return npc_chains(cluster, backend), npc_members(cluster, backend)


def npc_chains(cluster: Cluster, backend: str) -> list[str]:
    """``npc_rules`` per chain, in name order (a chain added later is listed last by nft)."""
    return sorted(re.split(r"\n(?=\tchain )", npc_rules(cluster, backend)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_policy_change_loads_only_what_differs_and_equals_a_full_load(backend: str, tmp_path: Path) -> None:
    """Each case's policies replacing the previous case's: the agent loads the difference (nftables:
    new chains and sets, element moves, stale ones deleted, one transaction; iptables: new sets, one
    restore per family of the new, changed and gone chains, member moves, stale sets destroyed) and
    the kernel then holds exactly what a full ``npc apply`` of the same inputs makes, rules and set
    members, while others' rules and sets stay byte for byte."""
    files = Files(tmp_path / "inputs")
    files.write(CASES[0])
    with Cluster(serving_all(CASES), tmp_path) as cluster, agent(cluster, backend, files.args, tmp_path) as a:
        a.wait(lambda: a.applies() > 0, "the first apply")
        foreign = add_foreign_objects(cluster, backend)
        updates = 0
        for n, case in enumerate(CASES[1:13], 1):
            a.step(lambda case=case: files.write(case))
            assert_case(cluster, case, f"(step {n}, loaded by difference)")
            assert foreign_objects(cluster, backend) == foreign, f"step {n}: others' objects changed"
            incremental = npc_chains(cluster, backend), npc_members(cluster, backend)
            assert incremental == full_load_state(cluster, backend, files), f"step {n}: {case.id}"
            updates = a.text().count(" updated: chains")
        assert updates >= 6, a.text()  # most steps: loaded by difference (nftables: no table replace)
        assert "Traceback" not in a.text()


# Random changes (``kernel/random_case.py``): pod churn and a policy change, in either order.
RANDOM_SEEDS = seeds(range(4))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed", RANDOM_SEEDS, ids=[f"seed-{s}" for s in RANDOM_SEEDS])
def test_random_changes_by_difference_end_as_a_full_load(seed: int, backend: str, tmp_path: Path) -> None:
    """A random cluster's first policies and pods, then its pods and its policies changed one at a
    time (member deltas, then a load by difference, or the other way round): the kernel answers
    as the evaluator says, and holds what a full ``npc apply`` of the last inputs makes."""
    update = random_update(seed, tmp_path)
    case = update.case
    first_pods, pods = ([case.endpoints[i] for i in at] for at in (update.first_listed, update.listed))
    first_policies, policies = list(update.first_policies), case.policy_documents()
    files = Files(tmp_path / "inputs")
    files.write(case, first_pods, first_policies)
    middle = (pods, first_policies) if seed % 2 else (first_pods, policies)
    steps = [  # each with whether it changes the inputs (the same inputs again are no change)
        (functools.partial(files.write, case, *middle), middle != (first_pods, first_policies)),
        (functools.partial(files.write, case, pods, policies), middle != (pods, policies)),
    ]
    with Cluster(case, tmp_path) as cluster, agent(cluster, backend, files.args, tmp_path) as a:
        a.wait(lambda: a.applies() > 0, "the first apply")
        for change, differs in steps:
            a.step(change, handled=differs)
        assert_case(cluster, case, f"(seed {seed}, inputs in {tmp_path})")
        incremental = npc_chains(cluster, backend), npc_members(cluster, backend)
        assert incremental == full_load_state(cluster, backend, files), f"seed {seed}"
        assert "Traceback" not in a.text()


def add_foreign_objects(cluster: Cluster, backend: str) -> str:
    """Another tool's chain, FORWARD rule and set beside npc's (harmless to the probes); their listing."""
    if backend == "iptables":
        cluster.node_exec(["ipset", "create", "other-set", "hash:ip"])
        cluster.node_exec(["ipset", "add", "other-set", "192.0.2.1"])
        for tool in ("iptables", "ip6tables"):
            cluster.node_exec([tool, "-N", "OTHER-CHAIN"])
            cluster.node_exec([tool, "-A", "OTHER-CHAIN", "-p", "udp", "--dport", "9", "-j", "RETURN"])
            cluster.node_exec([tool, "-A", "FORWARD", "-p", "udp", "--dport", "9", "-j", "OTHER-CHAIN"])
            cluster.node_exec(
                [tool, "-t", "mangle", "-A", "FORWARD", "-p", "udp", "--dport", "9", "-j", "RETURN"]
            )
    else:
        cluster.node_exec(
            ["nft", "add table inet other; add chain inet other c; add rule inet other c udp dport 9 return"]
        )
    return foreign_objects(cluster, backend)


def foreign_objects(cluster: Cluster, backend: str) -> str:
    """Every rule and set line not npc's (counters aside)."""
    if backend == "iptables":
        saved = "".join(cluster.node_exec([tool]).stdout for tool in ("iptables-save", "ip6tables-save"))
        saved += cluster.node_exec(["ipset", "save", "other-set"]).stdout
        lines = [re.sub(r"\[\d+:\d+\]", "", line) for line in saved.splitlines() if not line.startswith("#")]
        return "\n".join(line for line in lines if "NPC-" not in line and "npc-" not in line)
    return cluster.node_exec(["nft", "list", "table", "inet", "other"]).stdout


def break_and_mend(a: Agent, files: Files, case: Case, cluster: Cluster) -> None:
    """A broken policy file: logged with its position, the kernel keeps ``case``; then removed."""
    errors = a.text().count("keeping the last good")
    bad = files.policies / "99-broken.yaml"
    text = (
        "kind: NetworkPolicy\napiVersion: networking.k8s.io/v1\nmetadata: {name: x, namespace: default}\n"
        "spec:\n  podSelector: {}\n  ingress: [{ports: [{port: 99999}]}]\n"
    )
    a.step(lambda: bad.write_text(text), handled=False)
    a.wait(lambda: a.text().count("keeping the last good") > errors, "the error line")
    assert "99-broken.yaml:6:" in a.text(), a.text()[-2000:]
    assert_case(cluster, case, "with a broken file beside it")
    a.step(bad.unlink, handled=False)


# --- pod churn: member deltas only; drift repaired; SIGTERM leaves the rules -------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_pod_churn_moves_members_only_and_the_rules_outlive_the_agent(backend: str, tmp_path: Path) -> None:
    files = Files(tmp_path / "inputs")
    files.write(CHURN, inventory(CHURN, BEFORE))
    args = [*files.args, "--resync", "2"]
    with Cluster(CHURN, tmp_path) as cluster, agent(cluster, backend, args, tmp_path) as a:
        a.wait(lambda: a.applies() > 0, "the first apply")
        assert_tables(cluster, BEFORE_TABLES, "before the churn")
        rules = npc_rules(cluster, backend)
        assert rules
        a.step(lambda: files.write(CHURN, inventory(CHURN, AFTER)))
        assert_tables(cluster, AFTER_TABLES, "after the churn")
        assert npc_rules(cluster, backend) == rules, "pod churn changed a rule"
        churn = [line for line in a.text().splitlines() if "rules unchanged" in line]
        assert churn and "+" in churn[0], a.text()
        # a resync finding the kernel as applied loads nothing
        after_deltas = npc_members(cluster, backend)
        checked, loads = a.text().count(UNDRIFTED), a.text().count("applied network")
        a.wait(lambda: a.text().count(UNDRIFTED) > checked + 1, "two resyncs", timeout=10)
        assert a.text().count("applied network") == loads, "a resync without drift loaded something"
        assert npc_members(cluster, backend) == after_deltas and npc_rules(cluster, backend) == rules
        # what the deltas left is what a full load of the same inputs makes
        assert full_load_state(cluster, backend, files) == (npc_chains(cluster, backend), after_deltas)
        # drift: someone flushes npc's ingress dispatch; the resync puts it back
        if backend == "iptables":
            chain = re.search(
                r"^:(NPC-\w+-INGRESS)", rules + cluster.node_exec(["iptables-save"]).stdout, re.M
            )
            assert chain
            cluster.node_exec(["iptables", "-t", "mangle", "-F", chain.group(1)])
        else:
            cluster.node_exec(["nft", "flush", "chain", "inet", "npc", "ingress-4"])
        assert npc_rules(cluster, backend) != rules
        a.wait(lambda: npc_rules(cluster, backend) == rules, "the resync to repair the drift", timeout=10)
        a.wait(lambda: "drift repaired: " in a.text(), "the repair's log line")
        repaired = next(line for line in a.text().splitlines() if "drift repaired: " in line)
        assert re.search(r"chain \S*(INGRESS|ingress-4) has 0 rules, not [1-9]", repaired), repaired
        assert_tables(cluster, AFTER_TABLES, "after the repair")
        took = a.stop()
        assert took < 2.0, took
        assert npc_rules(cluster, backend) == rules, "rules gone with the agent"
        assert_tables(cluster, AFTER_TABLES, "after the agent stopped")


def assert_ipv4_tables(cluster: Cluster, tables: Tables, when: str) -> None:
    """``tables`` on IPv4; on IPv6, which ``--ip-families IPv4`` leaves unpoliced, every connection answers."""
    checks = [
        c if c.family == "v4" else attrs.evolve(c, expect=tuple(row.replace("X", ".") for row in c.expect))
        for c in expecting(cluster.case, tables)
    ]
    failures = observations_report(cluster.case, cluster.probe(checks))
    assert not failures, f"{when}:\n{failures}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_ipv4_agent_loads_nothing_of_ipv6_through_churn_and_resyncs(backend: str, tmp_path: Path) -> None:
    """``--ip-families IPv4`` on a dual-stack cluster: IPv4 follows the truth tables through pod
    churn, with the rules unchanged; nothing of IPv6 is loaded (so it is open), and a resync
    finds the kernel as applied."""
    files = Files(tmp_path / "inputs")
    files.write(CHURN, inventory(CHURN, BEFORE))
    args = [*files.args, "--resync", "2", "--ip-families", "IPv4"]
    with Cluster(CHURN, tmp_path) as cluster, agent(cluster, backend, args, tmp_path) as a:
        a.wait(lambda: a.applies() > 0, "the first apply")
        assert "pods have IPv6 addresses, which npc does not police (--ip-families IPv4)" in a.text()
        assert_ipv4_tables(cluster, BEFORE_TABLES, "before the churn")
        rules = npc_rules(cluster, backend)
        assert rules
        if backend == "iptables":
            assert "NPC-" not in cluster.node_exec(["ip6tables-save"]).stdout
            assert "inet6" not in cluster.node_exec(["ipset", "save"]).stdout
        else:
            assert cluster.node_exec(["nft", "list", "tables"]).stdout.split("\n") == ["table inet npc", ""]
            assert not re.search(r"ipv6|ip6 |-6\b|\b[spn]6-", rules), rules  # no IPv6 part
        a.step(lambda: files.write(CHURN, inventory(CHURN, AFTER)))
        assert_ipv4_tables(cluster, AFTER_TABLES, "after the churn")
        assert npc_rules(cluster, backend) == rules, "pod churn changed a rule"
        checked = a.text().count(UNDRIFTED)
        a.wait(lambda: a.text().count(UNDRIFTED) > checked, "a resync finding no drift", timeout=10)


def test_weave_agent_moves_members_only_and_leaves_the_router_rules(tmp_path: Path) -> None:
    """``--backend weave`` on a Weave Net node: the first apply fills the router's WEAVE-NPC chains,
    pod churn arrives as set deltas (every filter rule byte-identical, the router's included), and
    the rules stay in force when the agent stops. ``--iptables`` names the flavour the router's
    rules are in (Weave is iptables-based: the option is the iptables backend's)."""
    case = weave_case(CHURN)
    files = Files(tmp_path / "inputs")
    files.write(case, inventory(case, BEFORE))
    version = subprocess.run(["iptables", "-V"], capture_output=True, text=True, check=True).stdout
    flavour = "legacy" if "legacy" in version else "nft"  # the one WeaveCluster's router rules are in

    def filter_rules() -> str:
        return re.sub(
            r"^#.*\n|\[\d+:\d+\]", "", cluster.node_exec(["iptables-save", "-t", "filter"]).stdout, flags=re.M
        )

    with (
        WeaveCluster(case, tmp_path) as cluster,
        agent(cluster, "weave", [*files.args, "--iptables", flavour], tmp_path) as a,
    ):
        a.wait(lambda: a.applies() > 0, "the first apply")
        assert_tables(cluster, BEFORE_TABLES, "before the churn")
        rules = filter_rules()
        assert "-A WEAVE-NPC " in rules and "-A WEAVE-NPC-EGRESS " in rules, rules
        a.step(lambda: files.write(case, inventory(case, AFTER)))
        assert_tables(cluster, AFTER_TABLES, "after the churn")
        assert filter_rules() == rules, "pod churn changed a rule"
        churn = [line for line in a.text().splitlines() if "rules unchanged" in line]
        assert churn and "+" in churn[0], a.text()
        a.stop()
        assert filter_rules() == rules, "rules gone with the agent"
        assert_tables(cluster, AFTER_TABLES, "after the agent stopped")
        assert "Traceback" not in a.text()


# --- the API: the same cases from the stand-in ----------------------------------------------------

API_KINDS = ("Namespace", "Pod", "NetworkPolicy")


def api_objects(case: Case, endpoints: Sequence[Endpoint] | None = None) -> list[dict[str, Any]]:
    listing = case.inventory(endpoints)["items"]
    return [
        *listing,
        *({**p, "metadata": {"namespace": "default", **p["metadata"]}} for p in case.policy_documents()),
    ]


@pytest.mark.parametrize("backend", BACKENDS)
def test_api_mode_follows_cases_pod_churn_and_bad_objects(backend: str, tmp_path: Path) -> None:
    cases = CASES[:: max(1, len(CASES) // 8)]
    with Cluster(serving_all(CASES), tmp_path) as cluster:
        api = KubeStandin(netns=cluster.node)
        for obj in api_objects(cases[0]):
            api.put(obj)
        api.start()
        args = ["--kubeconfig", str(api.kubeconfig(tmp_path))]
        try:
            with agent(cluster, backend, args, tmp_path) as a:
                a.wait(lambda: a.applies() > 0, "the first apply")
                assert_case(cluster, cases[0], "at start")
                for case in cases[1:]:
                    a.step(lambda case=case: api.replace_all(api_objects(case), API_KINDS))
                    assert_case(cluster, case)
                # a policy the API accepted but npc refuses: the last good state stays
                case = cases[-1]
                bad = {
                    "apiVersion": "networking.k8s.io/v1",
                    "kind": "NetworkPolicy",
                    "metadata": {"name": "bad", "namespace": "default"},
                    "spec": {"podSelector": {}, "ingress": [{"ports": [{"port": 99999}]}]},
                }
                a.step(lambda: api.put(bad), handled=False)
                a.wait(lambda: "api:networkpolicies/default/bad:" in a.text(), "the error line")
                assert_case(cluster, case, "with a bad object in the API")
                # the bad object is left out alone: the other objects' changes are applied
                a.step(lambda: api.replace_all([*api_objects(cases[0]), bad], API_KINDS))
                assert_case(cluster, cases[0], "changed beside a bad object")
                a.step(lambda: api.delete("NetworkPolicy", "default", "bad"))
                assert "Traceback" not in a.text()
        finally:
            api.stop()
    shutil.rmtree(tmp_path / "unused", ignore_errors=True)


# --- reviewed artefacts: compiled without an inventory, swapped in by a symlink -------------------


def publish(root: Path, n: int, case: Case, backend: str) -> None:
    """What CI and git-sync do: compile the case's policies (no inventory) into a new revision
    folder, then atomically point ``current`` at it."""
    policies = root / f"src-{n}"
    policies.mkdir()
    for k, doc in enumerate(case.policy_documents()):
        (policies / f"{k:02d}.yaml").write_text(dump(doc))
    argv = [
        sys.executable,
        "-m",
        "npc",
        "compile",
        str(policies),
        "--backend",
        backend,
        "-o",
        str(root / f"rev-{n}"),
    ]
    subprocess.run(argv, check=True, capture_output=True)
    link = root / ".current.tmp"
    link.symlink_to(f"rev-{n}")
    link.replace(root / "current")


@pytest.mark.parametrize("backend", BACKENDS)
def test_artefact_mode_fills_sets_from_the_inventory_and_follows_symlink_swaps(
    backend: str, tmp_path: Path
) -> None:
    cases = CASES[1 :: max(1, len(CASES) // 8)]
    root = tmp_path / "git"
    root.mkdir()
    publish(root, 0, cases[0], backend)
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps(cases[0].inventory()))
    args = ["--artefacts", str(root / "current"), "--inventory", str(inventory)]
    with Cluster(serving_all(CASES), tmp_path) as cluster, agent(cluster, backend, args, tmp_path) as a:
        a.wait(lambda: a.applies() > 0, "the first apply")
        assert_case(cluster, cases[0], "at start")
        for n, case in enumerate(cases[1:], 1):

            def change(n: int = n, case: Case = case) -> None:
                publish(root, n, case, backend)
                write_atomically(inventory, json.dumps(case.inventory()))

            a.step(change)
            assert_case(cluster, case, f"(revision {n})")
        assert "Traceback" not in a.text()


# --- every network of a networks file in one agent -------------------------------------------------


def networks_file(applies: Sequence[Sequence[str]], path: Path) -> Path:
    """The networks file saying what the case's ``npc apply`` runs say with flags."""
    flags = {"--network": "name", "--ip-source": "ipSource", "--policy-kinds": "policyKinds"}
    networks = []
    for args in applies:
        entry = {"name": "default"} | {flags[args[i]]: args[i + 1] for i in range(0, len(args), 2)}
        networks.append(entry)
    path.write_text(json.dumps({"networks": networks}))
    return path


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mcase", MULTI, ids=[m.id for m in MULTI])
def test_one_agent_enforces_every_network(mcase: MultinetCase, backend: str, tmp_path: Path) -> None:
    case = mcase.case
    files = Files(tmp_path / "inputs")
    files.write(case)
    args = [*files.args, "--networks", str(networks_file(mcase.applies, tmp_path / "networks.json"))]
    with Cluster(case, tmp_path) as cluster, agent(cluster, backend, args, tmp_path) as a:
        a.wait(lambda: a.applies() >= len(mcase.applies), "every network's first apply")
        assert_case(cluster, case)
        assert "warning" not in a.text()
