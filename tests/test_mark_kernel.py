"""The mark a packet brings decides nothing in npc's iptables chains.

npc's FORWARD chain reads its bit as *pending* (``Marks``): set by the map lookup of an isolated
pod, cleared by the rule that allows the packet, and a packet whose bit is still set after a
direction's dispatch is dropped. Other software marks forwarded packets too (kube-proxy, a CNI,
a service mesh), so the chain clears the bit before its lookups: without that rule, a packet from
a pod no policy isolates would meet a dispatch and its drop on a bit someone else set.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from kernel.churn import PAIRS, POLICIES_X, POLICIES_Y, TABLES_X, TABLES_Y, assert_tables
from kernel.cluster import Cluster

pytestmark = pytest.mark.kernel

FOREIGN = "0xffff3fff/0xffffffff"  # every bit but kube-proxy's two, npc's among them


def test_a_mark_set_by_other_software_before_npc_changes_no_verdict(tmp_path: Path) -> None:
    with Cluster(PAIRS, tmp_path) as cluster:
        cluster.apply(policies=POLICIES_X)
        for tool in ("iptables", "ip6tables"):
            cluster.node_exec(
                [tool, "-t", "mangle", "-I", "PREROUTING", "-j", "MARK", "--set-xmark", FOREIGN]
            )
        assert_tables(cluster, TABLES_X, "X, every packet marked before npc's chains")  # ingress alone
        cluster.apply(policies=POLICIES_Y)
        assert_tables(cluster, TABLES_Y, "Y, every packet marked before npc's chains")  # a's egress too
