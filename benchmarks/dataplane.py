"""What the loaded ruleset costs the dataplane: new flows forwarded per second, against no policy.

Two pod namespaces (Calico-style /32 routes through a node namespace) send a flood of packets
of an *allowed* connection between two policed pods, each at the deepest dispatch position of a
layout (the most rules before a verdict, per ``costs``): the iptables layout's deepest pair and
the nftables layout's, and the lower ratio counts. Connection tracking is off for
these packets in the node (an nftables ``notrack`` rule at raw priority), so every packet is a
new flow that walks npc's chains, not just the first of a connection. Delivered packets are the
receiver's interface counter; the sender is Python (UDP sockets, or raw TCP SYNs for TCP ports),
so the no-policy rate is the sender's, and the ratio says what the rules take from it.

    python benchmarks/dataplane.py /tmp/npc-bench/L-0 --backend iptables     # root; after run.py

Every namespace is ``npcb-<pid>-...`` and removed afterwards; the host namespace is not touched.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

NODE_MAC = "ee:ee:ee:ee:ee:ee"
GATEWAY = "169.254.1.1"
SENDER_MACS = ("02:00:00:00:00:01", "02:00:00:00:00:02")
NOTRACK = (
    "table inet npcb-raw {\n chain pre {\n  type filter hook prerouting priority raw;\n  notrack\n }\n}\n"
)


def _ip(*argv: str, stdin: str | None = None) -> str:
    done = subprocess.run(["ip", *argv], input=stdin, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"ip {' '.join(argv)}: {done.stderr}")
    return done.stdout


@contextmanager
def topology(src: str, dst: str) -> Iterator[tuple[str, str, str]]:
    """Namespaces (node, sender, receiver): the two pods' addresses routed through the node."""
    base = f"npcb-{os.getpid()}"
    node, pods = f"{base}-node", (f"{base}-a", f"{base}-b")
    made: list[str] = []
    try:
        for name in (node, *pods):
            _ip("netns", "add", name)
            made.append(name)
        for i, (pod, address) in enumerate(zip(pods, (src, dst), strict=True)):
            veth = f"v{i}"
            _ip("link", "add", veth, "netns", node, "address", NODE_MAC, "type", "veth",
                "peer", "eth0", "netns", pod, "address", SENDER_MACS[i])  # fmt: skip
            node_batch = f"link set {veth} up\nroute add {address}/32 dev {veth}\n"
            node_batch += f"neigh replace {address} lladdr {SENDER_MACS[i]} dev {veth} nud permanent\n"
            _ip("-n", node, "-batch", "-", stdin=node_batch)
            pod_batch = (
                f"link set lo up\nlink set eth0 up\naddr add {address}/32 dev eth0\n"
                f"neigh replace {GATEWAY} lladdr {NODE_MAC} dev eth0 nud permanent\n"
                f"route add 0.0.0.0/0 via {GATEWAY} dev eth0 onlink\n"
            )
            _ip("-n", pod, "-batch", "-", stdin=pod_batch)
        _exec(node, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward")
        _exec(node, "nft", "-f", "-", stdin=NOTRACK)
        yield node, pods[0], pods[1]
    finally:
        for name in reversed(made):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def _exec(ns: str, *argv: str, stdin: str | None = None, file: Path | None = None) -> None:
    with open(file, "rb") if file else open(os.devnull, "rb") as fh:
        data = stdin.encode() if stdin is not None else fh.read()
    subprocess.run(["ip", "netns", "exec", ns, *argv], input=data, capture_output=True, check=True)


def load(node: str, out: Path, backend: str) -> None:
    if backend == "iptables":
        _exec(node, "ipset", "restore", file=out / "ipsets")
        _exec(node, "iptables-restore", "--noflush", file=out / "rules.v4")
        _exec(node, "ip6tables-restore", "--noflush", file=out / "rules.v6")
    else:
        _exec(node, "nft", "-f", str(out / "ruleset.nft"))


def _rx(ns: str) -> int:
    done = subprocess.run(
        ["ip", "netns", "exec", ns, "cat", "/sys/class/net/eth0/statistics/rx_packets"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return int(done.stdout)


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _syns(src: str, dst: str, port: int, count: int) -> list[bytes]:
    """TCP SYNs from ``count`` source ports: distinct flows, checksummed so the receiver keeps them."""
    out = []
    for sport in range(20000, 20000 + count):
        header = struct.pack("!HHIIBBHHH", sport, port, 1, 0, 5 << 4, 0x02, 64240, 0, 0)
        pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(header))
        out.append(header[:16] + struct.pack("!H", _checksum(pseudo + header)) + header[18:])
    return out


def send(src: str, dst: str, protocol: str, port: int, seconds: float) -> int:
    """Runs inside the sender namespace: flood for ``seconds``; packets handed to the kernel."""
    sent, deadline = 0, time.monotonic() + seconds
    if protocol == "TCP":
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
        packets = _syns(src, dst, port, 4096)
        while time.monotonic() < deadline:
            for packet in packets[:512]:
                sock.sendto(packet, (dst, 0))
            sent += 512
            packets = packets[512:] + packets[:512]
        return sent
    socks = []
    for i in range(64):  # distinct source ports: distinct flows
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((src, 20000 + i))
        socks.append(sock)
    payload = b"x" * 18
    while time.monotonic() < deadline:
        for sock in socks:
            for _ in range(8):
                sock.sendto(payload, (dst, port))
        sent += 512
    return sent


def rate(
    out: Path | None, backend: str, src: str, dst: str, protocol: str, port: int, seconds: float
) -> float:
    """Packets per second delivered to ``dst`` with ``out`` loaded (None: no policy at all)."""
    with topology(src, dst) as (node, sender, receiver):
        if out is not None:
            load(node, out, backend)
        before = _rx(receiver)
        argv = [sys.executable, __file__, "--send", src, dst, protocol, str(port), str(seconds)]
        subprocess.run(["ip", "netns", "exec", sender, *argv], check=True, capture_output=True)
        time.sleep(0.2)
        return (_rx(receiver) - before) / seconds


# --- where to probe ----------------------------------------------------------------------------


def costs(job: Any, backend: str) -> tuple[dict[str, int], dict[str, int]]:
    """Per policed IPv4 address, the rules its packets meet on the egress and on the ingress side
    in ``backend``'s layout. iptables: ``rules_for``. nftables: the rank lookups and the rules of
    every policy chain selecting the address (an allowed packet may walk all but the last one's
    final rules: rank maps send it through its chains in turn)."""
    if backend == "iptables":
        from npc.backends.iptables.mark_tree import Marks
        from npc.backends.iptables.render import rules_for

        lowered, members = job.compiled.lowered, job.compiled.members
        egress, ingress = (dict(rules_for(lowered, members, 4, d, Marks())) for d in ("egress", "ingress"))
        return egress, ingress
    from npc.backends.nftables.render import chains_by_address, rule_matches

    program = job.compiled.lowered.family(4)
    length = {c.name: len(rule_matches(c.matches)) for c in program.chains}
    found = []
    for direction in ("egress", "ingress"):
        by = chains_by_address(program, direction, job.compiled.members)
        found.append({a: len(chains) + sum(length[c] for c in chains) for a, chains in by.items()})
    return found[0], found[1]


BACKENDS = ("iptables", "nftables")
Pair = tuple[str, str, str, int]


def worst_pairs(cluster: Path) -> list[Pair]:
    """Per layout (``BACKENDS``), an allowed (src, dst, protocol, port) between policed IPv4 pods,
    each as deep in that layout's dispatch as any pod allowed to talk goes (most rules before a
    verdict, per ``costs``); one pair where both layouts find the same."""
    from npc import pipeline
    from npc.evaluate import Evaluator
    from npc.ir import Program
    from npc.networks import network_spec

    sources = pipeline.read_sources([str(cluster / "policies")], str(cluster / "inventory.json"))
    job = pipeline.build(sources, network_spec("default", None, None))
    inventory = job.assembled.inventory
    allowed = Evaluator(Program(sources.loaded.policies), inventory).allowed
    by_ip = {str(ip): pod for pod in inventory.pods for ip in pod.ips if ip.version == 4}

    def deepest(egress: dict[str, int], ingress: dict[str, int]) -> Pair:
        sources_by_cost = sorted(by_ip, key=lambda a: -egress.get(a, 0))
        for dst in sorted(ingress, key=lambda a: -ingress[a])[:100]:
            named = by_ip[dst].named_ports()
            ports = {(protocol, number) for (protocol, _), number in named.items()}
            ports |= {("TCP", 80), ("UDP", 53)}
            near = [a for a in sources_by_cost if by_ip[a].namespace == by_ip[dst].namespace]  # local peers
            for src in [*near, *sources_by_cost[:100]]:
                if src == dst:  # two namespaces, one route each: a pod to itself is no probe
                    continue
                for protocol, port in sorted(ports, key=lambda p: (p[0] != "UDP", p)):
                    if allowed(ipaddress.ip_address(src), ipaddress.ip_address(dst), protocol, port):
                        return src, dst, protocol, port
        raise SystemExit("no allowed pair among the deepest pods")

    return list(dict.fromkeys(deepest(*costs(job, backend)) for backend in BACKENDS))


def measure(
    cluster: Path, backend: str, seconds: float, repeat: int = 1, pairs: Sequence[Pair] | None = None
) -> dict[str, Any]:
    """On each of ``pairs`` (default: ``worst_pairs``), ``repeat`` floods without and with the
    ruleset, alternating, so a slow spell of a shared machine meets both; a pair's ratio is the
    median of its rounds', and the result is the pair with the lowest. Both layouts' deepest
    pairs, because the rules a layout counts need not rank what a packet costs: on the
    independent L iptables forwarded 0.48-0.53 on its own deepest pair, 0.40 on the nftables
    layout's."""
    out = cluster / f"out-{backend}"
    found = []
    for src, dst, protocol, port in pairs if pairs is not None else worst_pairs(cluster):
        rounds = []
        for _ in range(repeat):
            base = rate(None, backend, src, dst, protocol, port, seconds)
            rounds.append((base, rate(out, backend, src, dst, protocol, port, seconds)))
        ratios = sorted(loaded / base if base else 0.0 for base, loaded in rounds)
        found.append(
            {
                "pair": f"{src} -> {dst} {protocol}/{port}",
                "no_policy_pps": statistics.median(base for base, _ in rounds),
                "policy_pps": statistics.median(loaded for _, loaded in rounds),
                "ratio": statistics.median(ratios),
                "ratios": [round(r, 2) for r in ratios],
            }
        )
    worst = min(found, key=lambda r: r["ratio"])
    return {**worst, "other_pairs": [{k: r[k] for k in ("pair", "ratio")} for r in found if r is not worst]}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("cluster", type=Path, nargs="?", help="a cluster run.py generated and compiled")
    parser.add_argument("--backend", choices=BACKENDS, default="iptables")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeat", type=int, default=3, help="alternating pairs of floods (median ratio)")
    parser.add_argument("--send", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.send:
        src, dst, protocol, port, seconds = args.send
        print(send(src, dst, protocol, int(port), float(seconds)))
        return 0
    if args.cluster is None:
        parser.error("a cluster directory is needed")
    print(json.dumps(measure(args.cluster, args.backend, args.seconds, args.repeat)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
