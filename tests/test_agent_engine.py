"""The agent's engine without a kernel: what it decides to load (rules or member deltas), per
network and per node, last known good on bad input, debounce, and its HTTP endpoint.

The dataplane here records loads instead of making them; what the kernel does with them is judged
by ``test_agent_kernel.py``.
"""

from __future__ import annotations

import functools
import json
import logging
import shutil
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from kube_standin import free_port
from npc.agent.engine import Applied, Engine, Network
from npc.agent.inputs import POLL_S, FileInventory, FilePolicies, FileWatcher
from npc.agent.observe import Health, JsonFormatter, Metrics, serve
from npc.backends.base import LoadReport, MemberDelta, Members, member_changes
from npc.errors import ApplyError
from npc.lower import Lowered
from npc.networks import network_spec
from npc.resolve import Compiled
from polling import wait_for
from yaml_text import dump


class Recorder:
    """A dataplane that remembers what it was asked to load."""

    def __init__(self) -> None:
        self.loads: list[tuple[str, Lowered, dict[str, list[Any]]]] = []
        self.fail = False
        self.fail_network: str | None = None  # refuse this network's loads alone
        self.warnings: tuple[str, ...] = ()  # what its loads report, as a kernel's stale set

    def load(self, compiled: Compiled, kind: str = "full") -> LoadReport:
        self._refuse(compiled.lowered.network)
        self.loads.append((kind, compiled.lowered, {k: list(v) for k, v in compiled.members.items()}))
        return LoadReport("recorder", compiled.lowered.network, kind, self.warnings)

    def load_update(self, applied: Applied, compiled: Compiled) -> LoadReport:
        _, lowered, members = self.loads[-1]  # from exactly what the kernel holds
        assert lowered is applied.lowered and members == applied.members
        return self.load(compiled, "update")

    def _refuse(self, network: str) -> None:
        if self.fail or network == self.fail_network:
            raise ApplyError("refused")

    def load_members(self, lowered: Lowered, old: Members, new: Members) -> MemberDelta:
        self._refuse(lowered.network)
        changes = member_changes(old, new)
        self.loads.append(("sets", lowered, {k: list(v) for k, v in new.items()}))
        return MemberDelta(
            sum(len(a) for _, a in changes.values()), sum(len(r) for r, _ in changes.values()), len(changes)
        )

    def read_sets(self, lowered: Lowered) -> None:
        return None  # it records every set

    def kinds(self) -> list[str]:
        return [k for k, _, _ in self.loads]


def pod(
    name: str, ip: str, labels: Mapping[str, str], node: str = "n1", **annotations: str
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "default",
            "labels": dict(labels),
            "annotations": annotations,
        },
        "spec": {"nodeName": node},
        "status": {"phase": "Running", "podIPs": [{"ip": ip}]},
    }


DB_POLICY = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "db", "namespace": "default"},
    "spec": {
        "podSelector": {"matchLabels": {"role": "db"}},
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "web"}}}]}],
    },
}


class Inputs:
    def __init__(self, root: Path) -> None:
        self.policies, self.inventory = root / "policies", root / "inventory.json"
        self.policies.mkdir()

    def write(self, policies: Sequence[Mapping[str, Any]], pods: Sequence[Mapping[str, Any]]) -> None:
        """Each file replaced whole, as a deployment tool does: a read by a running engine's resync
        never meets an emptied folder or half a file (which a pod event's test took for a policy
        change now and then)."""
        names = {f"{n}.yaml" for n in range(len(policies))}
        for n, doc in enumerate(policies):
            _replace(self.policies / f"{n}.yaml", dump(dict(doc)))
        for old in self.policies.iterdir():
            if old.name not in names:
                old.unlink()
        items = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}, *pods]
        _replace(self.inventory, json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))


def _replace(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


class Running:
    def __init__(self, inputs: Inputs, networks: Sequence[Any] = (), node: str | None = None) -> None:
        self.plane = Recorder()
        self.engine = Engine(
            FilePolicies([str(inputs.policies)]),
            FileInventory(str(inputs.inventory)),
            list(networks) or [network_spec()],
            self.plane,
            node=node,
            debounce=0.05,
        )
        self.thread = threading.Thread(target=self.engine.run, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """End the engine's loop and wait for it: a loop left waiting would outlive the test (and
        a thread more makes later tests' compiles skip parsing ahead)."""
        stop_engine(self.engine, self.thread)

    def change(self, action: Callable[[], None]) -> None:
        """Make a change and tell the engine, as the file watcher would; wait until it is handled."""
        count = len(self.plane.loads)
        action()
        self.engine.notify("files")
        wait_for(lambda: len(self.plane.loads) > count, "a load")

    def members(self, what: str) -> list[str]:
        """Entries of the (one) set whose name the test finds by a member it must hold."""
        _, _, members = self.plane.loads[-1]
        return sorted({e for entries in members.values() for e, _ in entries if what in e})


@pytest.fixture
def inputs(tmp_path: Path) -> Inputs:
    return Inputs(tmp_path)


@pytest.fixture
def running(inputs: Inputs) -> Iterator[Running]:
    inputs.write(
        [DB_POLICY], [pod("db", "10.0.0.1", {"role": "db"}), pod("web", "10.0.0.2", {"role": "web"})]
    )
    run = Running(inputs)
    wait_for(lambda: run.engine.health.ready.is_set(), "ready")
    yield run
    run.stop()


def stop_engine(engine: Engine, thread: threading.Thread) -> None:
    engine.shutdown()
    thread.join(timeout=10)
    assert not thread.is_alive(), "the engine's loop did not end"


def test_pod_churn_is_a_member_delta_and_a_policy_change_an_update_from_the_rules_in_force(
    inputs: Inputs, running: Running
) -> None:
    assert running.plane.kinds() == ["full"]
    first = running.plane.loads[0][1]
    pods = [pod("db", "10.0.0.1", {"role": "db"}), pod("web", "10.0.0.2", {"role": "web"})]
    running.change(lambda: inputs.write([DB_POLICY], [*pods, pod("web2", "10.0.0.3", {"role": "web"})]))
    assert running.plane.kinds() == ["full", "sets"]
    assert running.plane.loads[-1][1] is first  # the very rules in force: only members moved
    assert "10.0.0.3" in running.members("10.0.0.3")
    other = {**DB_POLICY, "metadata": {"name": "db2", "namespace": "default"}}
    running.change(lambda: inputs.write([DB_POLICY, other], pods))
    assert running.plane.kinds()[-1] == "update"


def test_bad_input_keeps_the_last_good_state_until_it_is_fixed(inputs: Inputs, running: Running) -> None:
    metrics = running.engine.metrics.registry
    pods = [pod("db", "10.0.0.1", {"role": "db"})]
    (inputs.policies / "bad.yaml").write_text(
        "kind: NetworkPolicy\napiVersion: networking.k8s.io/v1\nspec: 3\n"
    )
    running.engine.notify("files")
    # the gauge is set mid-pass: wait for the pass to end too, or the next change races it
    wait_for(
        lambda: (
            metrics.get_sample_value("npc_agent_input_valid", {"input": "policies"}) == 0
            and not running.engine.health.busy
        ),
        "error seen",
    )
    assert running.plane.kinds() == ["full"]
    # the inventory still moves members under the last good policies
    running.change(lambda: inputs.inventory.write_text(json.dumps({"kind": "List", "items": pods})))
    assert running.plane.kinds() == ["full", "sets"]
    (inputs.policies / "bad.yaml").unlink()  # good again, and the same as the last good: nothing to load
    running.engine.notify("files")
    wait_for(
        lambda: (
            metrics.get_sample_value("npc_agent_input_valid", {"input": "policies"}) == 1
            and not running.engine.health.busy
        ),
        "valid",
    )
    assert running.plane.kinds() == ["full", "sets"]
    assert metrics.get_sample_value("npc_agent_input_errors_total", {"input": "policies"}) == 2  # read twice


@pytest.mark.parametrize("words", ['"error: the server doesn\'t have a resource type"', "[]", "{}"])
def test_an_inventory_that_is_no_cluster_keeps_the_last_good_pods(
    inputs: Inputs, running: Running, words: str
) -> None:
    """What a failed ``kubectl get`` left in the file is an input error, not an empty cluster:
    read as "no pods", it emptied every set."""
    metrics = running.engine.metrics.registry
    _replace(inputs.inventory, words)
    running.engine.notify("files")
    wait_for(
        lambda: (
            metrics.get_sample_value("npc_agent_input_valid", {"input": "inventory"}) == 0
            and not running.engine.health.busy
        ),
        "error seen",
    )
    assert running.plane.kinds() == ["full"]  # nothing loaded: the sets keep both pods
    running.change(lambda: inputs.write([DB_POLICY], [pod("db", "10.0.0.1", {"role": "db"})]))
    assert running.members("10.0.0.") == ["10.0.0.1"]


def test_a_kernel_failure_is_retried_with_a_full_load(inputs: Inputs, running: Running) -> None:
    running.plane.fail = True
    pods = [pod("db", "10.0.0.9", {"role": "db"})]
    inputs.inventory.write_text(json.dumps({"kind": "List", "items": pods}))
    running.engine.notify("files")
    registry = running.engine.metrics.registry
    labels = {"network": "default", "reason": "kernel"}
    wait_for(
        lambda: (registry.get_sample_value("npc_agent_apply_failures_total", labels) or 0) >= 1, "failure"
    )
    running.plane.fail = False
    wait_for(lambda: len(running.plane.loads) > 1, "the retry", timeout=5)
    assert running.plane.kinds() == ["full", "full"]
    assert "10.0.0.9" in running.members("10.0.0.9")


def test_debounce_folds_a_burst_into_one_load(inputs: Inputs, running: Running) -> None:
    count = len(running.plane.loads)
    pods: list[dict[str, Any]] = []
    for n in range(20):
        pods.append(pod(f"web{n}", f"10.0.1.{n}", {"role": "web"}))
        inputs.write([DB_POLICY], pods)
        running.engine.notify("files")
    wait_for(lambda: len(running.plane.loads) > count, "a load")
    time.sleep(0.3)
    assert len(running.plane.loads) - count <= 2
    assert len(running.members("10.0.1.")) == 20


def test_node_polices_local_pods_only_while_peers_stay_cluster_wide(inputs: Inputs) -> None:
    pods = [
        pod("db-here", "10.0.0.1", {"role": "db"}, node="n1"),
        pod("db-there", "10.0.0.2", {"role": "db"}, node="n2"),
        pod("web-there", "10.0.0.3", {"role": "web"}, node="n2"),
    ]
    inputs.write([DB_POLICY], pods)
    run = Running(inputs, node="n1")
    try:
        wait_for(lambda: run.engine.health.ready.is_set(), "ready")
        _, lowered, members = run.plane.loads[0]
        program = lowered.families[0]
        target = program.dispatch["ingress"][0].target.name
        isolated = program.isolated["ingress"].name
        peer = program.chains[0].matches[0].peer
        assert peer is not None
        assert members[target] == members[isolated] == [("10.0.0.1", False)]
        assert members[peer.name] == [("10.0.0.3", False)]  # a peer on another node still counts
        # scheduled here with nothing else changed (a StatefulSet's pod keeps its address): policed
        moved = [pods[0], pod("db-there", "10.0.0.2", {"role": "db"}, node="n1"), pods[2]]
        run.change(lambda: inputs.write([DB_POLICY], moved))
        _, _, members = run.plane.loads[-1]
        assert run.plane.kinds()[-1] == "sets"
        assert members[target] == members[isolated] == [("10.0.0.1", False), ("10.0.0.2", False)]
        run.change(lambda: inputs.write([DB_POLICY], pods))  # and away again
        _, _, members = run.plane.loads[-1]
        assert members[target] == members[isolated] == [("10.0.0.1", False)]
    finally:
        run.stop()


def test_pods_of_a_family_the_network_does_not_carry_are_named_when_the_first_comes(
    inputs: Inputs, caplog: pytest.LogCaptureFixture
) -> None:
    """``--ip-families IPv4``: a full load counts the pods with IPv6 addresses; a pod event names
    them when it brings the first after none, and says nothing while some are there already."""

    def dual(name: str, ip: str, ip6: str) -> dict[str, Any]:
        found = pod(name, ip, {"role": "web"})
        found["status"]["podIPs"].append({"ip": ip6})
        return found

    def said() -> list[str]:
        return [r.getMessage() for r in caplog.records if "does not police" in r.getMessage()]

    caplog.set_level(logging.WARNING, logger="npc.agent")
    pods = [pod("db", "10.0.0.1", {"role": "db"}), dual("web", "10.0.0.2", "fd00::2")]
    inputs.write([DB_POLICY], pods)
    run = Running(inputs, [network_spec(ip_families="IPv4")])
    try:
        wait_for(lambda: run.engine.health.ready.is_set(), "ready")
        assert said() == [
            "network default: 1 pod has IPv6 addresses, which npc does not police (--ip-families IPv4)"
        ]
        run.change(lambda: inputs.write([DB_POLICY], [*pods, dual("web2", "10.0.0.3", "fd00::3")]))
        assert len(said()) == 1  # some were there already
        run.change(lambda: inputs.write([DB_POLICY], [pods[0], pod("web3", "10.0.0.4", {"role": "web"})]))
        assert len(said()) == 1  # they went
        run.change(lambda: inputs.write([DB_POLICY], [pods[0], dual("web4", "10.0.0.5", "fd00::5")]))
        assert run.plane.kinds() == ["full", "sets", "sets", "sets"]
        assert said()[1:] == [
            "network default: 1 pod has IPv6 addresses, which npc does not police "
            "(--ip-families IPv4): default/web4"
        ]
    finally:
        run.stop()


def test_a_malformed_pod_is_skipped_with_a_warning_and_blocks_nothing(
    inputs: Inputs, running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    """A pod the inventory gives malformed (``metadata: x`` ended every update in an exception,
    so the agent stopped following churn) is skipped and named once; churn goes on."""
    caplog.set_level(logging.WARNING, logger="npc.agent")
    pods = [pod("db", "10.0.0.1", {"role": "db"}), pod("web", "10.0.0.2", {"role": "web"})]
    broken = {"apiVersion": "v1", "kind": "Pod", "metadata": "x"}
    running.change(
        lambda: inputs.write([DB_POLICY], [*pods, broken, pod("web2", "10.0.0.3", {"role": "web"})])
    )
    assert running.plane.kinds() == ["full", "sets"] and "10.0.0.3" in running.members("10.0.0.3")
    running.change(
        lambda: inputs.write([DB_POLICY], [*pods, broken, pod("web3", "10.0.0.4", {"role": "web"})])
    )
    assert "10.0.0.4" in running.members("10.0.0.4")
    said = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert said == ["network default: Pod (unnamed): skipped metadata: must be a mapping, not a string"]
    registry = running.engine.metrics.registry
    assert (
        registry.get_sample_value("npc_agent_input_valid", {"input": "inventory"}) == 0
    )  # said to alerting too
    assert not [r for r in caplog.records if r.exc_info]


def test_a_policy_file_emptied_is_taken_for_one_being_written(inputs: Inputs, running: Running) -> None:
    """``: > f`` then writing it (cp, many editors): the emptied file was applied as no policies,
    opening the pods it isolated for that moment. It keeps the last good policies now."""
    metrics = running.engine.metrics.registry
    valid = lambda: metrics.get_sample_value("npc_agent_input_valid", {"input": "policies"})  # noqa: E731
    loads = len(running.plane.loads)
    (inputs.policies / "0.yaml").write_text("")
    running.engine.notify("files")
    wait_for(lambda: valid() == 0 and not running.engine.health.busy, "the emptied file refused")
    assert len(running.plane.loads) == loads
    (inputs.policies / "0.yaml").write_text(dump(dict(DB_POLICY)))
    running.engine.notify("files")
    wait_for(lambda: valid() == 1 and not running.engine.health.busy, "the file written again")
    assert len(running.plane.loads) == loads  # the same policies: nothing to load
    running.change(lambda: inputs.write([], [pod("db", "10.0.0.1", {"role": "db"})]))  # removed: dropped
    assert running.plane.loads[-1][0] in ("full", "update")


def test_files_changing_past_the_debounce_are_read_once_still(inputs: Inputs, running: Running) -> None:
    """A folder copied over the policies (``rm -r``, then ``cp -r`` for longer than the debounce)
    was read half copied and loaded, opening its pods until the copy ended (a review saw it)."""
    from npc.agent.inputs import tree_stamp

    running.engine.stamp = functools.partial(tree_stamp, [str(inputs.policies)])  # file mode, as the CLI's
    loads = len(running.plane.loads)
    (inputs.policies / "0.yaml").unlink()
    for _ in range(8):  # the copy writes other files meanwhile: a change every 30 ms
        running.engine.notify("files")
        time.sleep(0.03)
    (inputs.policies / "0.yaml").write_text(dump(dict(DB_POLICY)))
    running.engine.notify("files")
    time.sleep(0.5)
    wait_for(lambda: not running.engine.health.busy, "the batch read")
    assert len(running.plane.loads) == loads  # the same policies in the end: nothing loaded


def test_a_policy_folder_replaced_is_read_once_its_files_are_still(inputs: Inputs, running: Running) -> None:
    """``rm -r`` and ``cp -r``: the watcher sees the folder go, then nothing while it is watched
    anew, so the batch closed on an empty folder and loaded no policies (a review saw pods open
    for 1.5 s). The files' stamp must be still first."""
    from npc.agent.inputs import tree_stamp

    running.engine.stamp = functools.partial(tree_stamp, [str(inputs.policies)])
    loads = len(running.plane.loads)
    shutil.rmtree(inputs.policies)
    inputs.policies.mkdir()
    running.engine.notify("policies")  # the last word from the watcher until the copy is done
    for n in range(6):
        time.sleep(0.04)
        (inputs.policies / f"other-{n}.yaml").write_text("# not a policy\n")
    (inputs.policies / "0.yaml").write_text(dump(dict(DB_POLICY)))
    time.sleep(0.5)
    wait_for(lambda: not running.engine.health.busy, "the batch read")
    assert len(running.plane.loads) == loads  # the same policies in the end: nothing loaded


def test_a_policy_change_logs_the_loads_warnings(
    inputs: Inputs, running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    """A stale set another tool's rule holds (kept, with a warning): npc apply prints it; the
    agent's policy changes dropped it."""
    running.plane.warnings = ("could not destroy stale set npc-x-s4-y (no npc rule uses it): in use",)
    running.change(lambda: inputs.write([], [pod("db", "10.0.0.1", {"role": "db"})]))
    warning = "network default: could not destroy stale set npc-x-s4-y (no npc rule uses it): in use"
    # logged by the loop after the load it waited for: read at once, 1 run in 20 missed it
    wait_for(lambda: warning in [r.getMessage() for r in caplog.records if r.levelname == "WARNING"], "it")


def test_a_pod_that_stops_parsing_stays_as_it_last_parsed_and_the_input_is_not_valid(
    inputs: Inputs, running: Running
) -> None:
    metrics = running.engine.metrics.registry
    valid = lambda: metrics.get_sample_value("npc_agent_input_valid", {"input": "inventory"})  # noqa: E731
    web = pod("web", "10.0.0.2", {"role": "web"})
    pods = [pod("db", "10.0.0.1", {"role": "db"}), web]  # as the fixture wrote them
    loads = len(running.plane.loads)
    assert "10.0.0.2" in running.members("10.0.0.2")
    broken = {**web, "spec": ["x"]}
    inputs.write([DB_POLICY], [pods[0], broken])
    running.engine.notify("files")
    wait_for(lambda: valid() == 0 and not running.engine.health.busy, "the held pod seen")
    assert len(running.plane.loads) == loads  # 10.0.0.2 stays in the sets
    inputs.write([DB_POLICY], [pods[0], broken])  # the same bytes again (a cron job's dump): still held
    running.engine.notify("files")
    time.sleep(0.5)
    wait_for(lambda: not running.engine.health.busy, "the same inventory read")
    assert valid() == 0, "the metric said valid while the pod was still held"
    running.change(lambda: inputs.write([DB_POLICY], [pods[0], pod("web", "10.0.0.9", {"role": "web"})]))
    assert "10.0.0.9" in running.members("10.0.0.9") and not running.members("10.0.0.2")
    assert valid() == 1


def test_a_held_pod_stays_held_across_a_restart(inputs: Inputs, running: Running) -> None:
    """Held only in memory, a restarted agent skipped the pod as new and bad: its address left the
    sets, which opened it (a review saw it). The held objects are recorded beside the lock."""
    web = pod("web", "10.0.0.2", {"role": "web"})
    inputs.write([DB_POLICY], [pod("db", "10.0.0.1", {"role": "db"}), {**web, "spec": ["x"]}])
    running.engine.notify("files")
    metrics = running.engine.metrics.registry
    valid = lambda: metrics.get_sample_value("npc_agent_input_valid", {"input": "inventory"})  # noqa: E731
    wait_for(lambda: valid() == 0 and not running.engine.health.busy, "the held pod seen")
    running.stop()
    again = Running(inputs)
    try:
        wait_for(lambda: again.engine.health.ready.is_set(), "ready again")
        assert "10.0.0.2" in again.members("10.0.0.2")
        registry = again.engine.metrics.registry
        assert registry.get_sample_value("npc_agent_input_valid", {"input": "inventory"}) == 0
        moved = pod("web", "10.0.0.9", {"role": "web"})
        again.change(lambda: inputs.write([DB_POLICY], [pod("db", "10.0.0.1", {"role": "db"}), moved]))
        assert "10.0.0.9" in again.members("10.0.0.9") and not again.members("10.0.0.2")
        assert registry.get_sample_value("npc_agent_input_valid", {"input": "inventory"}) == 1
    finally:
        again.stop()


def test_a_change_on_one_network_loads_only_that_network(inputs: Inputs) -> None:
    status = json.dumps([{"name": "default/net2", "interface": "net1", "ips": ["192.168.0.1"]}])
    multi = {**DB_POLICY, "kind": "MultiNetworkPolicy", "apiVersion": "k8s.cni.cncf.io/v1beta1"}
    multi["metadata"] = {
        **DB_POLICY["metadata"],
        "annotations": {"k8s.v1.cni.cncf.io/policy-for": "default/net2"},
    }
    pods = [pod("db", "10.0.0.1", {"role": "db"}), pod("web", "10.0.0.2", {"role": "web"})]
    inputs.write([DB_POLICY, multi], pods)
    networks = [network_spec(), network_spec("net2", "multus:default/net2")]
    run = Running(inputs, networks)
    try:
        wait_for(lambda: len(run.plane.loads) == 2, "both networks")
        annotated = pod("web", "10.0.0.2", {"role": "web"}, **{"k8s.v1.cni.cncf.io/network-status": status})
        run.change(lambda: inputs.write([DB_POLICY, multi], [pods[0], annotated]))
        time.sleep(0.2)
        assert run.plane.kinds() == ["full", "full", "sets"]
        assert run.plane.loads[-1][1].network == "net2"
    finally:
        run.stop()


def test_a_retry_reloads_the_network_that_failed_not_its_healthy_neighbours(inputs: Inputs) -> None:
    """Each backoff retry was a full load of every network (a review saw the healthy one
    reloaded on every retry of the other's refused load)."""
    multi = {**DB_POLICY, "kind": "MultiNetworkPolicy", "apiVersion": "k8s.cni.cncf.io/v1beta1"}
    multi["metadata"] = {
        **DB_POLICY["metadata"],
        "annotations": {"k8s.v1.cni.cncf.io/policy-for": "default/net2"},
    }
    pods = [pod("db", "10.0.0.1", {"role": "db"}), pod("web", "10.0.0.2", {"role": "web"})]
    inputs.write([DB_POLICY, multi], pods)
    run = Running(inputs, [network_spec(), network_spec("net2", "multus:default/net2")])
    try:
        wait_for(lambda: len(run.plane.loads) == 2, "both networks")
        run.plane.fail_network = "default"
        inputs.write([DB_POLICY, multi], [*pods, pod("db2", "10.0.0.3", {"role": "db"})])
        run.engine.notify("files")
        registry = run.engine.metrics.registry
        failures = lambda: registry.get_sample_value(  # noqa: E731
            "npc_agent_apply_failures_total", {"network": "default", "reason": "kernel"}
        )
        wait_for(lambda: (failures() or 0) >= 2, "a retry refused too", timeout=10)
        assert [lowered.network for _, lowered, _ in run.plane.loads[2:]] == []  # net2: nothing to do
        run.plane.fail_network = None
        wait_for(lambda: len(run.plane.loads) > 2, "the retry", timeout=10)
        assert [(kind, lowered.network) for kind, lowered, _ in run.plane.loads[2:]] == [("full", "default")]
    finally:
        run.stop()


def test_endpoint_serves_metrics_health_and_readiness() -> None:
    metrics, health = Metrics(), Health()
    port = free_port()
    server = serve(f"127.0.0.1:{port}", metrics, health)
    try:

        def get(path: str) -> tuple[int, str]:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                    return r.status, r.read().decode()
            except urllib.error.HTTPError as exc:
                return exc.code, ""

        assert get("/healthz")[0] == 200
        assert get("/readyz")[0] == 503
        health.ready.set()
        assert get("/readyz")[0] == 200
        metrics.applies.labels("default", "sets").inc()
        code, text = get("/metrics")
        assert code == 200
        assert 'npc_agent_applies_total{kind="sets",network="default"} 1.0' in text
        for name in (
            "npc_agent_apply_duration_seconds",
            "npc_agent_watch_restarts",
            "npc_agent_debounce_batch_size",
        ):
            assert f"# HELP {name}" in text
        health.beat -= 3600
        assert get("/healthz")[0] == 503
        health.busy = True  # applying: alive however long ago the loop last woke
        assert get("/healthz")[0] == 200
        assert health.busy_since is not None
        health.busy_since -= health.busy_after  # but not stuck past every tool's bound
        assert get("/healthz")[0] == 503
        health.busy = False
        health.beat = time.monotonic()
        assert get("/healthz")[0] == 200
    finally:
        server.shutdown()
        server.server_close()


def test_json_log_lines_carry_the_apply_fields() -> None:
    record = logging.LogRecord("npc.agent", logging.INFO, __file__, 1, "applied %s", ("x",), None)
    record.fields = {"network": "default", "kind": "sets", "added": 2}
    line = json.loads(JsonFormatter().format(record))
    assert line["msg"] == "applied x" and line["kind"] == "sets" and line["added"] == 2
    assert line["level"] == "info" and line["time"].endswith("Z")


def test_file_watcher_follows_symlink_swaps_of_a_folder(tmp_path: Path) -> None:
    """git-sync / ConfigMap style: ``current`` is swapped to a new folder; edits in the new folder
    are seen too (the watch moved with the link)."""
    for rev in ("rev1", "rev2"):
        (tmp_path / rev).mkdir()
        (tmp_path / rev / "p.yaml").write_text(rev)
    (tmp_path / "current").symlink_to("rev1")
    seen = threading.Event()
    stop = threading.Event()
    FileWatcher([str(tmp_path / "current")], seen.set, stop).start()
    try:
        time.sleep(0.3)  # the watch is up
        link = tmp_path / ".tmp"
        link.symlink_to("rev2")
        link.replace(tmp_path / "current")
        assert seen.wait(5), "the swap went unnoticed"
        time.sleep(0.3)
        seen.clear()
        (tmp_path / "rev2" / "p.yaml").write_text("edited")
        assert seen.wait(5), "an edit in the new target went unnoticed"
    finally:
        stop.set()


@pytest.mark.parametrize("how", ["mv", "rm and cp"])
def test_file_watcher_follows_a_folder_replaced_at_its_path(tmp_path: Path, how: str) -> None:
    """``mv p p.old && mv p.new p`` or ``rm -rf p && cp -r src p``: the watch stayed on the old
    folder, so the replacement was seen but no edit after it (until a resync); the policies' and
    the inventory's folders alike."""
    policies, inventory = tmp_path / "p", tmp_path / "i" / "inventory.json"
    for folder in (policies, inventory.parent, tmp_path / "src"):
        folder.mkdir()
        (folder / "f.yaml").write_text("a")
    inventory.write_text("{}")
    seen, stop = threading.Event(), threading.Event()
    FileWatcher([str(policies), str(inventory)], seen.set, stop).start()
    try:
        for folder in (policies, inventory.parent):
            time.sleep(0.3)  # the watch is up
            seen.clear()
            if how == "mv":
                shutil.copytree(folder, tmp_path / "new")
                folder.rename(tmp_path / f"old-{folder.name}")
                (tmp_path / "new").rename(folder)
            else:
                shutil.rmtree(folder)
                shutil.copytree(tmp_path / "src", folder)
                if folder == inventory.parent:
                    inventory.write_text("{}")
            assert seen.wait(5), f"{folder.name} replaced unnoticed"
            time.sleep(1.2)  # the watch is anew
            seen.clear()
            (inventory if folder == inventory.parent else folder / "f.yaml").write_text("edited")
            assert seen.wait(5), f"an edit in the new {folder.name} went unnoticed"
    finally:
        stop.set()


def _inotify_watches(under: Path) -> int:
    """The inotify watches this process holds on ``under`` and what it holds (the kernel's own
    list, per descriptor, by inode: other tests' watchers may still be closing theirs)."""
    inodes = {under.stat().st_ino, *(p.stat().st_ino for p in under.rglob("*") if not p.is_symlink())}
    count = 0
    for info in Path("/proc/self/fdinfo").iterdir():
        try:
            lines = info.read_text().splitlines()
        except OSError:
            continue  # closed meanwhile
        for line in lines:
            fields = dict(f.split(":", 1) for f in line.split()[1:] if ":" in f)
            count += line.startswith("inotify wd:") and int(fields.get("ino", "-1"), 16) in inodes
    return count


def test_file_watcher_watches_a_file_not_the_tree_around_it(tmp_path: Path) -> None:
    """Watches are recursive: ``--inventory /var/lib/inv.json`` watched all of ``/var/lib`` through
    the file's folder (and a symlinked ``--policies`` its link's folder), a watch per folder."""
    for i in range(300):
        (tmp_path / "lib" / f"d{i}").mkdir(parents=True)
    inventory = tmp_path / "lib" / "inventory.json"
    inventory.write_text("{}")
    (tmp_path / "lib" / "policies").mkdir()
    (tmp_path / "lib" / "current").symlink_to("policies")
    seen, stop = threading.Event(), threading.Event()
    FileWatcher([str(inventory), str(tmp_path / "lib" / "current")], seen.set, stop).start()
    try:
        wait_for(lambda: _inotify_watches(tmp_path) > 0, "the watch is up")
        time.sleep(0.3)
        assert _inotify_watches(tmp_path) < 10
        inventory.write_text('{"items": []}')
        assert seen.wait(5), "the inventory's change went unnoticed"
    finally:
        stop.set()


def test_file_watcher_ignores_the_neighbours_of_a_watched_file(tmp_path: Path) -> None:
    """Writing beside the inventory file (a log file, an editor's swap file) is no input change;
    replacing the file is."""
    inventory = tmp_path / "inventory.json"
    inventory.write_text("{}")
    seen, stop = threading.Event(), threading.Event()
    FileWatcher([str(inventory)], seen.set, stop).start()
    try:
        time.sleep(0.3)  # the watch is up
        (tmp_path / "agent.log").write_text("a line\n")
        assert not seen.wait(1.0), "a neighbour's change was taken for the inventory's"
        tmp = tmp_path / ".inventory.json.tmp"
        tmp.write_text('{"items": []}')
        tmp.replace(inventory)
        assert seen.wait(5), "the inventory's replacement went unnoticed"
    finally:
        stop.set()


def test_file_watcher_looks_for_a_path_not_there_yet_without_watching_its_ancestors(tmp_path: Path) -> None:
    """``--policies DIR`` before DIR exists (git-sync's first clone still running) is looked at
    every ``POLL_S``, not watched through the nearest folder that exists: for ``/missing`` that
    was all of ``/``, recursively, failing on ``/proc`` and re-reading the inputs every second.
    Once there, the folder is watched as any other."""
    assert FileWatcher(
        ["/missing-npc-test", "/inventory.json"], lambda: None, threading.Event()
    )._roots() == (
        [],
        ["/missing-npc-test", "/inventory.json"],
    )
    policies = tmp_path / "sync" / "policies"
    seen, stop = threading.Event(), threading.Event()
    FileWatcher([str(policies)], seen.set, stop).start()
    try:
        time.sleep(0.3)
        (tmp_path / "sync").mkdir()
        (tmp_path / "sync" / "other").write_text("x")  # on the way, not the path
        assert not seen.wait(1.0), "a change beside the path was taken for it"
        policies.mkdir()
        (policies / "p.yaml").write_text("a")
        assert seen.wait(5), "the folder's creation went unnoticed"
        time.sleep(POLL_S + 0.3)  # watched as a folder now
        seen.clear()
        (policies / "p.yaml").write_text("edited")
        assert seen.wait(5), "an edit in the folder, once there, went unnoticed"
    finally:
        stop.set()


class SlowDrift(Recorder):
    """A dataplane whose drift checks take as long as the test holds ``gate``; the first finds
    drift, the later ones none."""

    def __init__(self) -> None:
        super().__init__()
        self.gate, self.asked = threading.Event(), threading.Event()
        self.answers = [("chain x has 0 rules, not 1",)]
        self.checks = 0

    def drift(self, applied: Applied) -> tuple[str, ...]:
        self.asked.set()
        self.gate.wait(10)
        self.checks += 1
        return self.answers.pop() if self.answers else ()


def test_a_resync_checks_drift_beside_the_loop_and_drops_an_answer_about_a_replaced_state(
    inputs: Inputs,
) -> None:
    inputs.write([DB_POLICY], [pod("db", "10.0.0.1", {"role": "db"})])
    plane = SlowDrift()
    engine = Engine(
        FilePolicies([str(inputs.policies)]),
        FileInventory(str(inputs.inventory)),
        [network_spec()],
        plane,  # type: ignore[arg-type]
        debounce=0.05,
        resync=0.5,
    )
    thread = threading.Thread(target=engine.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: plane.kinds() == ["full"], "the first load")
        wait_for(plane.asked.is_set, "a resync's drift check")
        # the check holds: a pod event is loaded meanwhile, not after it
        inputs.write(
            [DB_POLICY], [pod("db", "10.0.0.1", {"role": "db"}), pod("db2", "10.0.0.3", {"role": "db"})]
        )
        engine.notify("files")
        wait_for(lambda: plane.kinds() == ["full", "sets"], "the pod's member delta during the check")
        plane.gate.set()  # the drift it found is about the state before the pod: dropped, asked again
        wait_for(lambda: plane.checks >= 3, "two more checks")
        assert plane.kinds() == ["full", "sets"], "a stale drift answer reloaded the network"
    finally:
        stop_engine(engine, thread)


def test_a_network_named_namespace_slash_name_records_its_held_objects_in_the_run_folder() -> None:
    """The record was named with the network's ``/`` (``...-agent-a/sec-held``), in a folder that
    does not exist: never written, so a restarted agent dropped the held pods (a review saw it)."""
    from npc.lock import LOCK_DIR

    network = Network(network_spec("a/sec", "multus:a/sec"), Recorder(), Metrics(), None)
    assert network.live.store is not None
    assert str(network.live.store.path.parent) == LOCK_DIR
    assert network.live.store.path.name.endswith("-agent-a_sec-held")
