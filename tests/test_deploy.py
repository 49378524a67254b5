"""deploy/: every manifest is a well-formed object of its kind (deserialised into the ``kubernetes``
client's models, with no field the model does not know), and the parts that make the agent safe
on a node are there."""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from npc.cli import build_parser

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
MODELS = {
    ("v1", "ServiceAccount"): client.V1ServiceAccount,
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): client.V1ClusterRole,
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): client.V1ClusterRoleBinding,
    ("apps/v1", "DaemonSet"): client.V1DaemonSet,
}


def documents() -> list[dict[str, Any]]:
    return [d for path in sorted(DEPLOY.glob("*.yaml")) for d in yaml.safe_load_all(path.read_text()) if d]


@pytest.mark.parametrize("doc", documents(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_manifest_is_a_valid_object_of_its_kind(doc: dict[str, Any]) -> None:
    model = MODELS[(doc["apiVersion"], doc["kind"])]
    parsed = model.from_dict(doc)  # types and required fields checked
    assert client.ApiClient().sanitize_for_serialization(parsed) == doc  # and no field it would not know


def test_daemonset_runs_the_agent_safely_on_every_node() -> None:
    ds = next(d for d in documents() if d["kind"] == "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["hostNetwork"] is True
    assert {"operator": "Exists"} in pod["tolerations"]
    assert {"NET_ADMIN", "NET_RAW"} <= set(container["securityContext"]["capabilities"]["add"])
    assert any(m["mountPath"] == "/run/xtables.lock" for m in container["volumeMounts"])
    # npc's locks and held objects' records on the host: a restarted container keeps holding
    assert all(e["name"] != "NPC_RUN_DIR" for e in container["env"])  # the host's commands' folder
    run_dir = "/run/npc"
    mounted = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    hosted = {v["name"]: v.get("hostPath", {}).get("path") for v in pod["volumes"]}
    assert any(path == run_dir and hosted[name] == run_dir for name, path in mounted.items())
    assert container["env"][0]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    args = build_parser().parse_args([a.replace("$(NODE_NAME)", "node-1") for a in container["args"]])
    assert args.command == "agent" and args.node == "node-1"
    assert pod["serviceAccountName"] == "npc"
    role = next(d for d in documents() if d["kind"] == "ClusterRole")
    granted = {(g, r) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]}
    assert granted == {
        ("", "namespaces"),
        ("", "pods"),
        ("networking.k8s.io", "networkpolicies"),
        ("k8s.cni.cncf.io", "multi-networkpolicies"),
    }
    assert all(rule["verbs"] == ["get", "list", "watch"] for rule in role["rules"])


def test_npc_run_dir_moves_the_locks_and_records(tmp_path: Path) -> None:
    probe = "from npc import lock; print(lock.record_path('lock'))"
    moved = subprocess.run(
        [sys.executable, "-c", probe], env={**os.environ, "NPC_RUN_DIR": str(tmp_path)},
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert moved.stdout.startswith(f"{tmp_path}/npc-netns-"), moved.stdout
    plain = subprocess.run([sys.executable, "-c", probe], env={k: v for k, v in os.environ.items() if k != "NPC_RUN_DIR"},
                           capture_output=True, text=True, check=True)  # fmt: skip
    assert plain.stdout.startswith("/run/npc/npc-netns-"), plain.stdout


def test_systemd_unit_runs_the_agent_in_file_mode() -> None:
    unit = configparser.ConfigParser(strict=True, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string((DEPLOY / "npc-agent.service").read_text())
    argv = unit["Service"]["ExecStart"].split()
    args = build_parser().parse_args(argv[1:])
    assert args.command == "agent" and args.policies and args.inventory
    assert unit["Service"]["KillSignal"] == "SIGTERM"
    assert "CAP_NET_ADMIN" in unit["Service"]["AmbientCapabilities"]


def test_dockerfile_installs_the_dataplane_tools() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert text.startswith("#") and "FROM python:3.11-slim" in text
    assert all(tool in text for tool in ("iptables", "nftables", "ipset"))
