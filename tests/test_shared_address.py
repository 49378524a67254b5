"""Two pods sharing an address (kubelet's view lagging a reused IP): warned, and the iptables map
sets hold one entry of it, so the artefact loads and a member delta keeps the survivor's entry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from npc import pipeline
from npc.backends.base import Options
from npc.backends.iptables.load import member_lines
from npc.backends.iptables.mark_tree import Marks
from npc.backends.iptables.render import kernel_sets, restricting_sets, set_changes
from npc.networks import network_spec

POLICIES = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db, namespace: a}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress: [{from: [{podSelector: {matchLabels: {app: web}}}], ports: [{port: 5432}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: cli, namespace: b}
spec:
  podSelector: {matchLabels: {app: cli}}
  policyTypes: [Ingress, Egress]
  ingress: [{from: [{podSelector: {}}]}]
  egress: [{to: [{podSelector: {}}]}]
"""


def pod(namespace: str, name: str, ip: str, app: str) -> dict[str, Any]:
    return {
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": app}},
        "status": {"podIPs": [{"ip": ip}]},
    }


def compiled(tmp_path: Path, pods: list[dict[str, Any]]) -> pipeline.Compiled:
    (tmp_path / "p.yaml").write_text(POLICIES)
    inventory = tmp_path / "inv.json"
    inventory.write_text(json.dumps({"kind": "List", "items": pods}))
    sources = pipeline.read_sources([str(tmp_path / "p.yaml")], str(inventory))
    return pipeline.build_all(sources, [network_spec(ip_families="IPv4")])[0].compiled


def map_sets(job: pipeline.Compiled, marks: Marks) -> dict[str, dict[str, str]]:
    """Each map set's elements as the kernel holds them: address -> its skbmark."""
    return {
        s.name: {m.split()[0]: m.split(maxsplit=1)[1] for m, _ in s.members}
        for s in kernel_sets(job.lowered, job.members, marks, (4,))
        if "skbinfo" in s.options
    }


def test_a_shared_address_is_one_entry_and_outlives_either_pod(tmp_path: Path) -> None:
    marks = Marks.of(Options())
    web = pod("a", "web", "10.1.0.1", "web")
    both = compiled(tmp_path, [web, pod("a", "x1", "10.1.0.93", "db"), pod("b", "x2", "10.1.0.93", "cli")])
    for s in kernel_sets(both.lowered, both.members, marks, (4,)):  # ``ipset restore`` refused the second
        elements = [m.split()[0] for m, _ in s.members]
        assert len(elements) == len(set(elements)), s.name
    for gone, kept in (("x1", ("b", "x2", "cli")), ("x2", ("a", "x1", "db"))):
        after = compiled(tmp_path, [web, pod(*kept[:2], "10.1.0.93", kept[2])])
        kernel = map_sets(both, marks)
        changes = set_changes(both.lowered, both.members, after.members, marks, (4,))
        first, then = member_lines(changes, restricting_sets(after.lowered, marks, (4,)))
        for line in [*first, *then]:  # as ``ipset -exist restore`` does them
            verb, name, element, *rest = line.split(maxsplit=3)
            if name in kernel and verb == "del":
                kernel[name].pop(element, None)
            elif name in kernel:
                kernel[name][element] = rest[0].strip()
        assert kernel == map_sets(after, marks), f"{gone} deleted"
        assert any("10.1.0.93" in held for held in kernel.values()), f"{gone} deleted: the survivor's entry"
