"""``--backend weave`` artefacts, as a user compiles them (no root: the kernel tests are in
``test_weave_kernel.py``): the file set, the chains they fill, IPv4 only, rules independent of pods."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from kernel.command import EXAMPLES, npc

MULTINET = EXAMPLES / "multinet"
WEAVE_NETWORK = ("--network", "weave", "--ip-source", "genie:ip2", "--policy-kinds", "NetworkPolicy")


def compile_weave(out: Path, *args: str, inventory: Path = EXAMPLES / "inventory.json") -> str:
    done = npc("compile", str(EXAMPLES / "policies"), "--inventory", str(inventory), "-o", str(out),
               "--backend", "weave", *args)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_compile_writes_rules_v4_ipsets_and_manifest(tmp_path: Path) -> None:
    compile_weave(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ipsets", "manifest.json", "rules.v4"]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["backend"] == "weave"
    assert sorted(manifest["files"]) == ["ipsets", "rules.v4"]


def test_rules_fill_only_the_router_hooked_chains_and_npc_policy_chains(tmp_path: Path) -> None:
    compile_weave(tmp_path)
    rules = (tmp_path / "rules.v4").read_text()
    chains = {line.split()[1] for line in rules.splitlines() if line.startswith("-A ")}
    assert {c for c in chains if not re.fullmatch(r"NPC-\w+-P-\w+", c)} == {
        "WEAVE-NPC", "WEAVE-NPC-DEFAULT", "WEAVE-NPC-INGRESS", "WEAVE-NPC-EGRESS",
        "WEAVE-NPC-EGRESS-ACCEPT", "WEAVE-NPC-EGRESS-CUSTOM", "WEAVE-NPC-EGRESS-DEFAULT",
    }  # fmt: skip
    assert not re.search(r"^-[IDX] ", rules, re.M)  # FORWARD/INPUT are the router's: no jump, no delete
    declared = re.findall(r"^:(\S+) - \[0:0\]$", rules, re.M)
    assert declared[:7] == ["WEAVE-NPC", "WEAVE-NPC-DEFAULT", "WEAVE-NPC-INGRESS", "WEAVE-NPC-EGRESS",
                            "WEAVE-NPC-EGRESS-ACCEPT", "WEAVE-NPC-EGRESS-CUSTOM", "WEAVE-NPC-EGRESS-DEFAULT"]  # fmt: skip
    # weave-npc's static behaviour: replies, the router's port, multicast, the egress mark
    assert rules.index("-A WEAVE-NPC -m state --state RELATED,ESTABLISHED -j ACCEPT") < rules.index(
        "-A WEAVE-NPC -m state --state NEW -j WEAVE-NPC-INGRESS"
    )
    for rule in (
        "-A WEAVE-NPC -m physdev --physdev-out vethwe-bridge --physdev-is-bridged -j ACCEPT",
        "-A WEAVE-NPC -d 224.0.0.0/4 -j ACCEPT",
        "-A WEAVE-NPC-EGRESS -m physdev --physdev-in vethwe-bridge --physdev-is-bridged -j RETURN",
        "-A WEAVE-NPC-EGRESS-ACCEPT -j MARK --set-xmark 0x40000/0x40000",
    ):
        assert rule + "\n" in rules
    marks = set(re.findall(r"--set-xmark (0x[0-9a-f]+)/(0x[0-9a-f]+)", rules))
    assert {mask for _, mask in marks} == {"0x40000"}


def test_ipv6_is_skipped_with_a_note(tmp_path: Path) -> None:
    stderr = compile_weave(tmp_path)  # the example inventory is dual-stack
    assert re.search(r"npc: note: Weave Net carries IPv4 only: skipped \d+ IPv6 pod addresses", stderr)
    ipsets = (tmp_path / "ipsets").read_text()
    assert "family inet " in ipsets and "inet6" not in ipsets
    assert not re.search(r"^add \S+ [0-9a-f:]*:[0-9a-f:]*$", ipsets, re.M)


def test_design_note_scenario_policy_on_the_weave_address(tmp_path: Path) -> None:
    """Weave as the second network through CNI-Genie: sets hold each pod's Weave (ip2) address only."""
    done = npc("compile", str(MULTINET / "policies"), "--inventory", str(MULTINET / "inventory.json"),
               "-o", str(tmp_path), "--backend", "weave", *WEAVE_NETWORK)  # fmt: skip
    assert done.returncode == 0, done.stderr
    members = re.findall(r"^add \S+ (\S+)", (tmp_path / "ipsets").read_text(), re.M)
    assert members and all(m.startswith("10.32.") for m in members), members
    assert "10.32.0.4" in members  # default/db, the policy's target


def test_pod_churn_changes_sets_never_rules(tmp_path: Path) -> None:
    inventory = json.loads((EXAMPLES / "inventory.json").read_text())
    pods = [i for i in inventory["items"] if i["kind"] == "Pod"]
    for pod in pods:
        pod["metadata"]["labels"] = {"relabelled": "yes"}
    inventory["items"].remove(pods[0])
    churned = tmp_path / "churned.json"
    churned.write_text(json.dumps(inventory))
    compile_weave(tmp_path / "before")
    compile_weave(tmp_path / "after", inventory=churned)
    assert (tmp_path / "before" / "rules.v4").read_text() == (tmp_path / "after" / "rules.v4").read_text()
    assert (tmp_path / "before" / "ipsets").read_text() != (tmp_path / "after" / "ipsets").read_text()


def test_manifest_counts_the_rules_and_chains_the_file_has(tmp_path: Path) -> None:
    compile_weave(tmp_path, *WEAVE_NETWORK, inventory=MULTINET / "inventory.json")
    compile_weave(tmp_path / "v1")
    for folder in (tmp_path, tmp_path / "v1"):
        rules = (folder / "rules.v4").read_text()
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["counts"]["rules"] == {"rules.v4": rules.count("\n-A ")}
        declared = re.findall(r"^:(\S+) - \[0:0\]$", rules, re.M)
        assert len(declared) > 7  # the seven WEAVE-NPC chains and npc's policy chains
        assert manifest["counts"]["chains"] == {"rules.v4": len(declared)}


def test_mark_is_weaves_own(tmp_path: Path) -> None:
    done = npc("compile", str(EXAMPLES / "policies"), "--backend", "weave", "--mark", "0x10")
    assert done.returncode == 2
    assert "--mark does not apply to --backend weave" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("backend", ["nftables", "calico"])
@pytest.mark.parametrize("flag", [("--mark", "0x2000"), ("--group-marks", "0x30000,0x3")])
def test_a_backend_that_marks_no_packet_refuses_the_mark_flags(backend: str, flag: tuple[str, str]) -> None:
    """They were accepted and ignored (the output byte for byte the same)."""
    done = npc("compile", str(EXAMPLES / "policies"), "--backend", backend, *flag)
    assert done.returncode == 2, done.stderr
    assert (
        f"{flag[0]} applies to the iptables backend only: --backend {backend} marks no packet" in done.stderr
    )
