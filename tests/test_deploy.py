"""deploy/: every manifest is a well-formed object of its kind (deserialised into the ``kubernetes``
client's models, with no field the model does not know), and the parts that make the agent safe
on a node are there."""

from __future__ import annotations

import configparser
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
