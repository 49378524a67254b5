"""A Weave Net node as its router leaves it, for ``npc apply --backend weave`` to fill.

Pods on the Weave network hang on one Linux bridge ``weave`` in the node namespace (one L2
subnet, the node's address on the bridge as their gateway), with ``bridge-nf-call-iptables=1`` set
inside the node namespace so traffic bridged between pods meets ``FORWARD`` as on a Weave node.
The router's own port is the ``vethwe-bridge``/``vethwe-datapath`` pair, ``vethwe-bridge`` attached
to the bridge. The router's rules are installed the way weaver installs them with ``--expect-npc``
(weaveworks/weave net/bridge.go ``configureIPTables``): empty ``WEAVE-NPC``/``WEAVE-NPC-EGRESS``,
its FORWARD rules at the top in their order, the INPUT hook, the control-port rule, and nat's
``WEAVE`` chain with the no-masquerade set and ``weave expose``'s rules. Endpoints on other networks
(external hosts, the primary network when Weave is a secondary one) stay routed Calico-style.

Weave Net is IPv4-only: pods get no IPv6 address on the bridge.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection
from pathlib import Path

import attrs

from .case import Case, Endpoint
from .cluster import Cluster, Link, run

BRIDGE = "weave"
BRIDGE_MAC = "02:77:76:00:00:01"
PRIMARY_SUBNET = ipaddress.IPv4Network("10.244.0.0/16")  # the cases' pod range (case.py)
ROUTER_PORT, DATAPATH = "vethwe-bridge", "vethwe-datapath"
NO_MASQ_SET = "weaver-no-masq-local"
_NOTE = "NOTE: this must go before '-j KUBE-FORWARD'"

# Table filter, in the order weaver runs them (ensureChains, INPUT appends, then the FORWARD rules
# inserted at positions 1..6), so ``iptables-save`` shows what a live Weave node shows.
ROUTER_FILTER: tuple[tuple[str, ...], ...] = (
    ("-N", "WEAVE-NPC"),
    ("-N", "WEAVE-NPC-EGRESS"),
    ("-A", "INPUT", "-p", "tcp", "--dst", "127.0.0.1", "--dport", "6784", "-m", "addrtype", "!",
     "--src-type", "LOCAL", "-m", "conntrack", "!", "--ctstate", "RELATED,ESTABLISHED", "-m", "comment",
     "--comment", "Block non-local access to Weave Net control port", "-j", "DROP"),
    ("-A", "INPUT", "-i", BRIDGE, "-j", "WEAVE-NPC-EGRESS"),
    ("-I", "FORWARD", "1", "-i", BRIDGE, "-m", "comment", "--comment", _NOTE, "-j", "WEAVE-NPC-EGRESS"),
    ("-I", "FORWARD", "2", "-o", BRIDGE, "-m", "comment", "--comment", _NOTE, "-j", "WEAVE-NPC"),
    ("-I", "FORWARD", "3", "-o", BRIDGE, "-m", "state", "--state", "NEW", "-j", "NFLOG", "--nflog-group", "86"),
    ("-I", "FORWARD", "4", "-o", BRIDGE, "-j", "DROP"),
    ("-I", "FORWARD", "5", "-i", BRIDGE, "!", "-o", BRIDGE, "-j", "ACCEPT"),
    ("-I", "FORWARD", "6", "-o", BRIDGE, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"),
)  # fmt: skip


def router_nat(subnet: ipaddress.IPv4Network) -> tuple[tuple[str, ...], ...]:
    """Table nat: the WEAVE chain with --no-masq-local (weave-kube's default) and ``weave expose``."""
    cidr = str(subnet)
    return (
        ("-N", "WEAVE"),
        ("-A", "POSTROUTING", "-j", "WEAVE"),
        ("-A", "WEAVE", "-m", "set", "--match-set", NO_MASQ_SET, "dst", "-m", "comment", "--comment",
         "Prevent SNAT to locally running containers", "-j", "RETURN"),
        ("-A", "WEAVE", "-s", cidr, "-d", "224.0.0.0/4", "-j", "RETURN"),
        ("-A", "WEAVE", "!", "-s", cidr, "-d", cidr, "-j", "MASQUERADE"),
        ("-A", "WEAVE", "-s", cidr, "!", "-d", cidr, "-j", "MASQUERADE"),
    )  # fmt: skip


class WeaveCluster(Cluster):
    """A ``Cluster`` whose pods on ``network`` (None: the primary one) sit on the Weave bridge.

    Pods listed in ``remote`` (endpoint indices) live on other nodes of the Weave network: they hang
    on a bridge ``datapath`` in a namespace of their own, reached through the router's port (the
    ``vethwe-datapath`` end of the pair sits there), so their traffic crosses ``vethwe-bridge``.
    """

    def __init__(
        self,
        case: Case,
        workdir: Path | None = None,
        network: str | None = None,
        remote: Collection[int] = (),
    ) -> None:
        super().__init__(case, workdir)
        self.network = network
        self.subnet = PRIMARY_SUBNET if network is None else _secondary_subnet(case, network)
        self.gateway = self.subnet[1]
        self.remote = frozenset(remote)
        self.peer = f"{self.prefix}-peer"  # the rest of the Weave network

    def bridged(self, e: Endpoint) -> list[tuple[Link, ipaddress.IPv4Address]]:
        """``e``'s interface on the Weave network with its IPv4 address (none for external hosts)."""
        if e.external:
            return []
        return [
            (link, a)
            for link in self.links(e)
            if link.network == self.network
            for a in link.addresses
            if isinstance(a, ipaddress.IPv4Address)
        ]

    def _node_setup(self) -> list[str]:
        return [
            f"link add {BRIDGE} type bridge",
            f"link set {BRIDGE} address {BRIDGE_MAC}",
            f"address add {self.gateway}/{self.subnet.prefixlen} dev {BRIDGE}",
            f"link add {ROUTER_PORT} type veth peer name {DATAPATH}",
            f"link set {ROUTER_PORT} master {BRIDGE}",
            f"link set {ROUTER_PORT} up",
            f"link set {DATAPATH} up",
            f"link set {BRIDGE} up",
        ] + ([f"link set {DATAPATH} netns {self.peer}"] if self.remote else [])

    def _node_finish(self) -> list[str]:
        """br_netfilter on in the node only; pods' MACs pinned to their ports (no flooding)."""
        pinned = [
            f"bridge fdb replace {link.mac} dev {ROUTER_PORT if e.index in self.remote else link.veth} master static"
            for e in self.case.endpoints
            for link, _ in self.bridged(e)
        ]
        return [*super()._node_finish(), "echo 1 > /proc/sys/net/bridge/bridge-nf-call-iptables", *pinned]

    def _wire(self, e: Endpoint, link: Link) -> tuple[list[str], list[str]]:
        on_bridge = [a for wired, a in self.bridged(e) if wired == link]
        if not on_bridge:
            return super()._wire(e, link)
        node = [
            f"link add {link.veth} type veth peer name {link.interface} address {link.mac}"
            f" netns {self.pod_ns[e.index]}",
            f"link set {link.veth} netns {self.peer}"
            if e.index in self.remote
            else f"link set {link.veth} master {BRIDGE}",
        ]
        node += [] if e.index in self.remote else [f"link set {link.veth} up"]
        pod = [
            f"link set {link.interface} up",
            f"neigh replace {self.gateway} lladdr {BRIDGE_MAC} dev {link.interface} nud permanent",
        ]
        for address in on_bridge:
            node.append(f"neigh replace {address} lladdr {link.mac} dev {BRIDGE} nud permanent")
            pod.append(f"address add {address}/{self.subnet.prefixlen} dev {link.interface}")
        for other in self.case.endpoints:  # one L2 subnet: every other pod's MAC known up front
            for peer, address in self.bridged(other) if other != e else ():
                pod.append(f"neigh replace {address} lladdr {peer.mac} dev {link.interface} nud permanent")
        if link.network is None:
            pod.append(f"route add 0.0.0.0/0 via {self.gateway} dev {link.interface}")
        return node, pod

    def _build(self) -> None:
        if self.remote:
            run(["ip", "netns", "add", self.peer])
            self._created.append(self.peer)
        super()._build()
        if self.remote:
            self._build_peer()
        self.node_exec(["ipset", "create", NO_MASQ_SET, "hash:net"])
        self.node_exec(["ipset", "add", NO_MASQ_SET, str(self.subnet)])
        for argv in ROUTER_FILTER:
            self.node_exec(["iptables", "-t", "filter", *argv])
        for argv in router_nat(self.subnet):
            self.node_exec(["iptables", "-t", "nat", *argv])

    def _build_peer(self) -> None:
        """The other nodes: remote pods and the router's datapath end on one plain bridge."""
        remote = [
            (e, link) for e in self.case.endpoints if e.index in self.remote for link, _ in self.bridged(e)
        ]
        cmds = ["link set lo up", "link add datapath type bridge", f"link set {DATAPATH} master datapath"]
        cmds += [f"link set {link.veth} master datapath" for _, link in remote]
        cmds += [f"link set {link.veth} up" for _, link in remote] + [
            f"link set {DATAPATH} up",
            "link set datapath up",
        ]
        run(["ip", "-n", self.peer, "-batch", "-"], stdin="\n".join(cmds) + "\n")
        local = [
            link.mac for e in self.case.endpoints if e.index not in self.remote for link, _ in self.bridged(e)
        ]
        pins = [f"fdb replace {link.mac} dev {link.veth} master static" for _, link in remote]
        pins += [f"fdb replace {mac} dev {DATAPATH} master static" for mac in [BRIDGE_MAC, *local]]
        run(["bridge", "-n", self.peer, "-batch", "-"], stdin="\n".join(pins) + "\n")

    def router_state(self) -> str:
        """Everything of the node's tables and sets except the WEAVE-NPC* chains' contents and npc's
        own chains and sets (counters and ipset's random seed left out): what must survive an apply."""
        text = self.node_exec(["iptables-save"]).stdout + self.node_exec(["ipset", "save"]).stdout
        text = re.sub(r" \[\d+:\d+\]$| initval 0x[0-9a-f]+", "", text, flags=re.M)
        return "\n".join(line for line in text.splitlines() if _foreign(line))


def _foreign(line: str) -> bool:
    if line.startswith("#"):
        return False
    words = line.split()
    if line.startswith(":"):
        return not words[0][1:].startswith(("NPC-", "WEAVE-NPC-")) or words[0] == ":WEAVE-NPC-EGRESS"
    if line.startswith("-A "):
        return not words[1].startswith(("NPC-", "WEAVE-NPC"))
    if words and words[0] in ("create", "add"):
        return not words[1].startswith(("npc-", "npt-"))
    return True


def _secondary_subnet(case: Case, network: str) -> ipaddress.IPv4Network:
    for e in case.endpoints:
        for a in e.attachments:
            if a.network == network:
                return next(r for r in a.ranges if isinstance(r, ipaddress.IPv4Network))
    raise ValueError(f"{case.path.name}: no pod is attached to network {network!r}")


def weave_case(case: Case) -> Case:
    """``case`` on IPv4 only: Weave Net carries no IPv6 (pods keep their IPv6 addresses in the
    inventory, so npc's skipping of them is exercised too)."""
    return attrs.evolve(case, checks=tuple(c for c in case.checks if c.family == "v4"), families=("v4",))
