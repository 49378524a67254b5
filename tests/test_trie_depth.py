"""The dispatch trie stays within what nf_tables allows below FORWARD, however wide the masks,
and holds any number of namespace groups, however narrow.

iptables-nft refuses a chain more than 15 jumps or gotos below a base chain ("Too many links").
With ``--group-marks`` of 16 bits a side, 14 namespaces whose policies weigh 1..14 rules made
codes of up to 13 bits, and the all-1 code 13 gotos: ``npc apply`` failed (exit 3) on such a
cluster. A code now has at most ``MAX_CODE_BITS`` bits whatever the mask (here the codes become
2-5 bits: within 11, the least worst packet is a near-balanced trie).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from kernel.case import parse_case
from kernel.churn import assert_tables
from kernel.cluster import Cluster
from npc import pipeline
from npc.backends.base import Options
from npc.backends.iptables.mark_tree import MAX_CODE_BITS, Marks, Tree
from npc.backends.iptables.render import trees
from npc.networks import network_spec

WIDE = "0x00ffff00,0xfe0000ff"  # 16 bits a side, clear of the allow bit
TINY = "0x10000,0x10000000"  # a bit a side: two groups
NAMESPACES = 14


def _policy(k: int) -> dict[str, Any]:
    """Namespace k's: k + 1 rules from pods no namespace has (weight only: a distinct weight per
    namespace makes the deepest codes), and TCP 80 from every pod for an even k, else from none."""
    rules: list[dict[str, Any]] = [
        {"from": [{"podSelector": {"matchLabels": {"app": f"a{j}"}}}], "ports": [{"port": 1000 + j}]}
        for j in range(k + 1)
    ]
    everyone = {"namespaceSelector": {}} if k % 2 == 0 else {"podSelector": {"matchLabels": {"app": "z"}}}
    rules.append({"from": [everyone], "ports": [{"port": 80}]})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "weighed", "namespace": f"ns-{k:02d}"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": rules},
    }


def _expect() -> list[str]:
    return [
        "".join("?" if i == k else "." if k % 2 == 0 else "X" for k in range(NAMESPACES))
        for i in range(NAMESPACES)
    ]


CASE = parse_case(
    {
        "name": "deep-trie",
        "families": ["v4"],
        "namespaces": [{"name": f"ns-{k:02d}", "labels": {}} for k in range(NAMESPACES)],
        "pods": [
            {
                "namespace": f"ns-{k:02d}",
                "name": "p",
                "labels": {"app": "x"},
                "ports": [{"containerPort": 80}],
            }
            for k in range(NAMESPACES)
        ],
        "policies": [_policy(k) for k in range(NAMESPACES)],
        "probes": [{"protocol": "TCP", "port": 80, "expect": _expect()}],
    },
    Path(__file__).with_name("deep-trie.json"),
)


def _gotos(tree: Tree) -> dict[str, int]:
    """Per trie chain, the gotos a packet of its group takes from the root."""
    by_name = {c.name: c for c in tree.chains}
    out = {}
    for chain in tree.chains:
        current, hops = tree.chains[0], 0
        while current.name != chain.name:
            current = by_name[next(t.chain for t in current.tests if chain.mark & t.mark)]
            hops += 1
        out[chain.name] = hops
    return out


def test_wide_masks_keep_the_trie_within_nf_tables_depth(tmp_path: Path) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "all.json").write_text(
        json.dumps({"kind": "List", "items": list(CASE.policies)})
    )
    (tmp_path / "inventory.json").write_text(json.dumps(CASE.inventory()))
    sources = pipeline.read_sources([str(tmp_path / "policies")], str(tmp_path / "inventory.json"))
    compiled = pipeline.build(sources, network_spec("default", None, None)).compiled
    egress, ingress = (int(m, 16) for m in WIDE.split(","))
    found = trees(compiled.lowered, 4, Marks(Options().mark, egress, ingress))["ingress"]
    assert len(found.chains) == NAMESPACES
    gotos = _gotos(found)
    # FORWARD -> NPC-FORWARD -> INGRESS (the root) is 2, a branch and a policy chain two past its
    # group's: <= 15 (13 gotos before the cap)
    assert found.chains[0].name.endswith("-INGRESS")
    assert max(gotos.values()) <= MAX_CODE_BITS
    assert all(2 + hops + 2 <= 15 for hops in gotos.values())


@pytest.mark.kernel
@pytest.mark.parametrize("masks", [WIDE, TINY])
def test_wide_and_narrow_masks_load_and_enforce_on_iptables_nft(tmp_path: Path, masks: str) -> None:
    """Wide: the trie within nf_tables' depth. Narrow (a bit a side, two groups): the 14
    namespaces' groups merged, each dispatch entry testing its target; an entry that selects a
    whole namespace must not take the merge's other namespaces along (ns-01 would be open)."""
    with Cluster(CASE, tmp_path) as cluster:
        cluster.apply(backend="iptables", extra_args=("--group-marks", masks))
        assert_tables(cluster, {80: _expect()}, f"group marks {masks}")


def test_more_groups_than_the_trie_holds_are_merged(tmp_path: Path) -> None:
    """2,049 namespaces whose dispatch lists differ (a chain each) need a 12-bit code: the two
    lightest groups share a chain, and the trie holds 2,048."""
    policies = [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "own-port", "namespace": f"ns-{k}"},
            "spec": {"podSelector": {}, "ingress": [{"ports": [{"port": 1000 + k}]}]},
        }
        for k in range(2049)
    ]
    (tmp_path / "policies.json").write_text(json.dumps({"kind": "List", "items": policies}))
    (tmp_path / "inventory.json").write_text(json.dumps({"kind": "List", "items": []}))
    args = ["compile", str(tmp_path / "policies.json"), "--inventory", str(tmp_path / "inventory.json")]
    done = subprocess.run(
        [sys.executable, "-m", "npc", *args, "-o", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    rules = (tmp_path / "out" / "rules.v4").read_text()
    # 2,047 groups' chains and the root's, the direction's own
    assert len(re.findall(r"^:NPC-[a-z2-7]+-I4-[0-9a-f]+ ", rules, re.M)) == 2047
    assert re.search(r"^-A NPC-[a-z2-7]+-INGRESS -m mark --mark", rules, re.M)
