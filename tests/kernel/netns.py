"""A bare network namespace to run ``npc apply`` in, and the inputs the apply tests share.

The truth-table harness (``cluster``) builds whole clusters; these are for tests that only look at
what lands in one namespace's tables, sets and ruleset.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from kube_standin import socket_in_netns
from npc.backends.base import NETLINK_NETFILTER, Members, Ran, Runner, netfilter_exchange
from npc.backends.iptables.load import Tools
from npc.backends.iptables.mark_tree import Marks
from npc.backends.iptables.render import NPC_LAYOUT, Chains
from npc.backends.iptables.update import UpdateReport, chains, update_iptables
from npc.backends.nftables.netlink import element_batch
from npc.inventory import build_inventory
from npc.lower import Lowered
from npc.pipeline import Compiled, compile_program, policy_program
from npc.sources import read_policy_texts

from .gone import delete_netns

INVENTORY = {
    "apiVersion": "v1",
    "kind": "List",
    "items": [
        {"kind": "Namespace", "metadata": {"name": "default"}},
        {
            "kind": "Pod",
            "metadata": {"name": "db", "namespace": "default", "labels": {"role": "db"}},
            "spec": {"containers": [{"name": "c", "ports": [{"name": "redis", "containerPort": 6379}]}]},
            "status": {"phase": "Running", "podIPs": [{"ip": "10.9.0.1"}, {"ip": "fd09::1"}]},
        },
        {
            "kind": "Pod",
            "metadata": {"name": "web", "namespace": "default", "labels": {"role": "frontend"}},
            "status": {"phase": "Running", "podIPs": [{"ip": "10.9.0.2"}, {"ip": "fd09::2"}]},
        },
    ],
}


def policy(name: str, port: int | str = 6379, selector: str = "db") -> dict[str, object]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "podSelector": {"matchLabels": {"role": selector}},
            "ingress": [
                {"from": [{"podSelector": {"matchLabels": {"role": "frontend"}}}], "ports": [{"port": port}]}
            ],
        },
    }


def two_rules(found: dict[str, Any]) -> dict[str, object]:
    """``found`` with a second rule that allows nobody (no pod has ``role=nobody``): a policy
    chain of its own, where a chain of one rule is its dispatch rule (``render.inlined``), for
    tests that need a chain the next apply deletes."""
    rule = {"from": [{"podSelector": {"matchLabels": {"role": "nobody"}}}], "ports": [{"port": 6380}]}
    return {**found, "spec": {**found["spec"], "ingress": [*found["spec"]["ingress"], rule]}}


def listing(name: str, roles: tuple[str, ...]) -> dict[str, object]:
    """A rule listing every namespace's pods of each role one by one: one set per peer, which
    the iptables rules test as one ``list:set`` of them."""
    peers = [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"role": r}}} for r in roles]
    return {
        **policy(name),
        "spec": {"podSelector": {}, "ingress": [{"from": peers, "ports": [{"port": 80}]}]},
    }


class Netns:
    def __init__(self, name: str, tmp: Path) -> None:
        self.name = name
        self.tmp = tmp

    def run(
        self, *argv: str, check: bool = True, path: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``argv`` inside the namespace; ``path`` replaces PATH for that command only."""
        prefix = ["env", f"PATH={path}"] if path is not None else []
        return subprocess.run(
            ["ip", "netns", "exec", self.name, *prefix, *argv], capture_output=True, text=True, check=check
        )

    def npc_apply(
        self, *policies: dict[str, object], extra: tuple[str, ...] = (), path: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        folder = self.tmp / f"p{len(list(self.tmp.iterdir()))}"
        folder.mkdir()
        for i, doc in enumerate(policies):
            (folder / f"{i}.json").write_text(json.dumps(doc))
        inventory = self.tmp / "inventory.json"
        inventory.write_text(json.dumps(INVENTORY))
        return self.run(
            sys.executable,
            "-m",
            "npc",
            "apply",
            str(folder),
            "--inventory",
            str(inventory),
            *extra,
            check=False,
            path=path,
        )

    def state(self, flavour: str = "") -> str:
        """Everything in this namespace's mangle and filter tables and sets, counters and set
        seeds removed; sets by name (the kernel lists them in slot order, which reuses the slots
        of destroyed sets, so it depends on history), members sorted."""
        infix = f"-{flavour}" if flavour else ""
        text = "".join(
            self.run(f"{tool}{infix}-save", "-t", table).stdout
            for tool in ("iptables", "ip6tables")
            for table in ("mangle", "filter")
        )
        sets = re.split(r"\n(?=create )", self.run("ipset", "save").stdout.strip())
        # members sorted too: a hash set lists them in bucket order, which its random seed decides
        text += "\n".join(sorted("\n".join(sorted(s.splitlines())) for s in sets)) + "\n"
        text = re.sub(r" initval 0x[0-9a-f]+", "", text)  # ipset's random hash seed
        return "\n".join(line for line in text.splitlines() if not line.startswith("#"))


@contextlib.contextmanager
def fresh_netns(prefix: str, tmp: Path) -> Iterator[Netns]:
    """A new namespace named for this process (tests may run side by side), deleted afterwards."""
    name = f"{prefix}-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield Netns(name, tmp)
    finally:
        delete_netns(name)


# A set that may hold one element, given two: nft parses it, the kernel refuses it (ENFILE) at
# commit time, so the whole transaction must be rolled back.
KERNEL_REJECTS = (
    "table inet npc {\n set overfull { type ipv4_addr; size 1; elements = { 192.0.2.1, 192.0.2.2 }; }\n}\n"
)


def rejecting_nft(tmp_path: Path) -> str:
    """PATH with an ``nft`` that hands the real one npc's file plus a statement the kernel refuses."""
    bin_dir = tmp_path / "rejecting-bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "nft"
    tail = KERNEL_REJECTS.replace("\n", "\\n")
    wrapper.write_text(f"#!/bin/sh\n{{ cat; printf '{tail}'; }} | exec {shutil.which('nft')} \"$@\"\n")
    wrapper.chmod(0o755)
    return f"{bin_dir}:{os.environ['PATH']}"


def compile_policies(*policies: Mapping[str, Any], inventory: Mapping[str, Any] = INVENTORY) -> Compiled:
    """``policies`` compiled against ``inventory`` (a document), in process."""
    loaded = read_policy_texts([(f"{i}.json", json.dumps(p)) for i, p in enumerate(policies)])
    found = build_inventory([inventory])
    return compile_program(policy_program(loaded, found.namespaces), found)


def update_between(
    before: Compiled, after: Compiled, marks: Marks, tools: Tools, run: Runner
) -> UpdateReport:
    """``update_iptables`` from ``before``'s program to ``after``'s, each family's chains as npc
    writes them."""

    def side(c: Compiled) -> tuple[Lowered, Members, dict[int, Chains]]:
        return c.lowered, c.members, {f: chains(c.lowered, f, marks, NPC_LAYOUT) for f in (4, 6)}

    return update_iptables(side(before), side(after), marks, tools, run, NPC_LAYOUT)


class InNetns:
    """The real tools inside ``netns``, and its netfilter over netlink; ``refuse``: a restore tool
    whose next input gets a last table the kernel refuses (the tables before it commit), or
    ``nft``: its next input, or next netlink batch, gets a last change the kernel refuses."""

    def __init__(self, netns: Netns, refuse: str = "") -> None:
        self.netns, self.refuse = netns, refuse

    def __call__(self, argv: Sequence[str], stdin: str = "") -> Ran:
        if argv[0] == self.refuse:
            self.refuse = ""
            stdin += "*filter\n-A NPC-NO-SUCH-CHAIN -j DROP\nCOMMIT\n"
        done = subprocess.run(
            ["ip", "netns", "exec", self.netns.name, *argv], input=stdin, capture_output=True, text=True
        )
        return Ran(done.returncode, done.stdout, done.stderr)

    def which(self, program: str) -> bool:
        return True

    def netfilter(self, batch: bytes, replies: int, answers: list[bytes] | None = None) -> list[int]:
        if self.refuse == "nft":  # a last message deleting from a set that is not there
            self.refuse = ""
            refused = element_batch("npc", [("no-such-set", ["192.0.2.1"], [])])
            assert refused is not None
            batch = batch[:-20] + refused[0][20:-20] + batch[-20:]  # inside BATCH_BEGIN ... BATCH_END
            replies += 1
        sock = socket_in_netns(self.netns.name, socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        with sock:
            return netfilter_exchange(sock, batch, replies, answers)
