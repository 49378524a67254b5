"""The inventory built in a forked child beside the passes and lowering gives what building it in
process gives: every network's inventory, program, sets and members, warnings and first error."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from npc import inventory_ahead, pipeline
from npc.errors import InputError
from npc.inventory import inventory_documents
from npc.network_file import read_networks_file
from npc.networks import NetworkSpec, network_spec

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "multinet"
NETWORKS = read_networks_file(str(EXAMPLES / "networks.yaml"))
POLICIES = [str(EXAMPLES / "policies"), str(EXAMPLES / "multinetwork")]


@pytest.fixture
def forks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The child forced on (whatever the machine's load and the input's size); the forks made.
    An inventory parsed in this process after a fork (the child's work lost) counts as -1."""
    made: list[int] = []
    real_fork = os.fork

    def fork() -> int:
        pid = real_fork()
        if pid:
            made.append(pid)
        return pid

    def parsed_here(data: bytes, name: str) -> Any:
        if made:
            made.append(-1)
        return inventory_documents(data, name)

    monkeypatch.setattr(inventory_ahead, "MIN_BYTES", 0)
    monkeypatch.setattr(inventory_ahead, "spare_core", lambda: True)
    monkeypatch.setattr(os, "fork", fork)
    monkeypatch.setattr("npc.pipeline.inventory_documents", parsed_here)
    return made


def build(
    inventory: Path, networks: tuple[NetworkSpec, ...], *, ahead: bool, lenient: bool = False
) -> list[Any]:
    sources = pipeline.read_sources(POLICIES, str(inventory), defer_inventory=ahead)
    return [
        (
            job.assembled,
            job.compiled.program,
            job.compiled.lowered,
            {name: job.compiled.members[name] for name in job.compiled.members},
            job.sources.inventory_sha256,
        )
        for job in pipeline.build_all(sources, networks, lenient=lenient)
    ]


def items(path: Path) -> list[dict[str, Any]]:
    return json.loads(path.read_text())["items"]  # type: ignore[no-any-return]


def write(tmp_path: Path, objects: list[dict[str, Any]], name: str = "inventory.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}, indent=1))
    return path


def test_every_network_is_built_as_in_process(forks: list[int]) -> None:
    inventory = EXAMPLES / "inventory.json"
    got = build(inventory, NETWORKS, ahead=True)
    assert len(forks) == 1 and forks[0] > 0  # the child built both networks
    assert got == build(inventory, NETWORKS, ahead=False)
    assert got[1][0].inventory.pods and got[1][3]  # the second network has pods and members


def test_lenient_warnings_are_the_childs_as_they_would_be_here(tmp_path: Path, forks: list[int]) -> None:
    objects = items(EXAMPLES / "inventory.json")
    pod = next(o for o in objects if o["kind"] == "Pod")
    pod["status"]["podIPs"] = [{"ip": "not-an-address"}]
    pod["metadata"]["annotations"]["multi-ip-preferences"] = "{"  # malformed for the second network
    inventory = write(tmp_path, objects)
    got = build(inventory, NETWORKS, ahead=True, lenient=True)
    assert len(forks) == 1 and forks[0] > 0  # not read again here
    assert got == build(inventory, NETWORKS, ahead=False, lenient=True)
    (primary, *_), (second, *_) = got
    assert any("not-an-address" in w for w in primary.warnings)  # the inventory's, skipped pod
    assert any("multi-ip-preferences" in w for w in second.warnings)  # the address source's


@pytest.mark.parametrize("breaks", ["pod", "json"])
def test_the_first_error_is_the_one_met_in_process(tmp_path: Path, forks: list[int], breaks: str) -> None:
    objects = items(EXAMPLES / "inventory.json")
    pods = [o for o in objects if o["kind"] == "Pod"]
    pods[1]["spec"]["containers"][0]["ports"][0]["containerPort"] = "eighty"
    pods[2]["status"]["podIPs"] = [{"ip": "300.1.1.1"}]
    inventory = write(tmp_path, objects)
    if breaks == "json":
        inventory.write_text(inventory.read_text()[:-3])

    def error(ahead: bool) -> str:
        with pytest.raises(InputError) as caught:
            build(inventory, NETWORKS, ahead=ahead)
        return caught.value.render()

    got = error(True)
    assert len(forks) == 2 and forks[1] == -1  # the child built nothing: read here, for the error
    assert got == error(False)
    assert ("containerPort" in got) if breaks == "pod" else ("invalid JSON" in got)


def test_a_namespace_the_bytes_did_not_show_isolated_recompiles_its_network(
    tmp_path: Path, forks: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The 1.6 annotation's key spelled with a JSON escape: were the gate fooled, the network is
    compiled again with the namespace's isolation policy."""
    objects = items(EXAMPLES / "inventory.json")
    namespace = next(o for o in objects if o["kind"] == "Namespace" and o["metadata"]["name"] == "other")
    namespace["metadata"]["annotations"] = {"ISOLATION": '{"ingress": {"isolation": "DefaultDeny"}}'}
    inventory = write(tmp_path, objects)
    inventory.write_text(
        inventory.read_text().replace("ISOLATION", "net.beta.kubernetes.io\\u002fnetwork-policy")
    )
    assert not inventory_ahead.worth_it(inventory.read_bytes())  # the gate sees the escape
    monkeypatch.setattr(inventory_ahead, "_SPELLING_ESCAPE", re.compile(rb"(?!)"))
    assert inventory_ahead.worth_it(inventory.read_bytes())  # a gate that does not
    networks = (network_spec(),)
    got = build(inventory, networks, ahead=True)
    assert len(forks) == 1 and forks[0] > 0
    assert got == build(inventory, networks, ahead=False)
    assert any(p.namespace == "other" and p.kind != "NetworkPolicy" for p in got[0][0].program.policies)


def test_the_gate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inventory_ahead, "spare_core", lambda: True)
    big = b'{"kind": "List", "items": [' + b'{"kind": "Pod", "x": "a\\"b\\n"},' * 200_000 + b"{}]}"
    assert len(big) >= inventory_ahead.MIN_BYTES and inventory_ahead.worth_it(big)
    assert not inventory_ahead.worth_it(big[: inventory_ahead.MIN_BYTES - 1])
    assert not inventory_ahead.worth_it(big + b"net.beta.kubernetes.io/network-policy")
    for escape in (b"\\u002f", b"\\/", b"\\x2f", b"\\\n"):
        assert not inventory_ahead.worth_it(big + escape)
    monkeypatch.setattr(inventory_ahead, "spare_core", lambda: False)
    assert not inventory_ahead.worth_it(big)


def test_no_child_for_stdin_or_policy_namespaces(tmp_path: Path, forks: list[int]) -> None:
    """A Namespace among the policy sources joins the program in the inventory's order: built here."""
    folder = tmp_path / "policies"
    shutil.copytree(EXAMPLES / "policies", folder)
    (folder / "ns.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: other}\n")
    sources = pipeline.read_sources([str(folder)], str(EXAMPLES / "inventory.json"), defer_inventory=True)
    assert pipeline.build_all(sources, (network_spec(),))[0].assembled.inventory.pods
    assert not forks
