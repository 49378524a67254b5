"""The kernel fact iptables' port lists rest on (``render.BITMAP_PROTOCOLS``): a ``bitmap:port``
set matches the port of a TCP or UDP packet and of no other protocol's. So a peer's TCP and UDP
matches of the same ports are one rule without ``-p`` (``render._either_transport``), and SCTP
ports are never put in a port list. SCTP sockets are not available here, so the packets are
written on raw sockets and counted by rules in OUTPUT."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from kernel.netns import Netns, fresh_netns

pytestmark = pytest.mark.kernel

# Each packet to 127.0.0.1 with destination port 5000: TCP, UDP and SCTP (their headers begin
# with the source and destination ports), and an ICMP echo, whose type and code ipset would read
# as port 2048 (8 << 8) if it read one.
SEND = """
import socket, struct
ports = struct.pack("!HH", 4000, 5000)
packets = {
    socket.IPPROTO_TCP: ports + struct.pack("!IIBBHHH", 1, 0, 5 << 4, 2, 1024, 0, 0),
    socket.IPPROTO_UDP: ports + struct.pack("!HH", 12, 0) + b"abcd",
    132: ports + struct.pack("!II", 1, 0) + bytes(16),  # SCTP: verification tag, checksum, a chunk
    socket.IPPROTO_ICMP: struct.pack("!BBHHH", 8, 0, 0, 1, 1),
}
for protocol, packet in packets.items():
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, protocol) as s:
        s.sendto(packet, ("127.0.0.1", 0))
"""


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Netns]:
    with fresh_netns("npc-bitmap", tmp_path) as ns:
        ns.run("ip", "link", "set", "lo", "up")
        yield ns


def test_a_port_bitmap_matches_tcp_and_udp_ports_only(node: Netns) -> None:
    node.run("ipset", "create", "ports", "bitmap:port", "range", "1-10000")
    for port in ("5000", "2048"):
        node.run("ipset", "add", "ports", port)
    for protocol in ("tcp", "udp", "sctp", "icmp"):  # one rule each, counting what the set matches
        node.run("iptables", "-A", "OUTPUT", "-p", protocol, "-m", "set", "--match-set", "ports", "dst")
    node.run("iptables", "-A", "OUTPUT", "-m", "set", "--match-set", "ports", "dst")  # no -p
    node.run("iptables", "-A", "OUTPUT", "-p", "sctp", "--dport", "5000")  # the SCTP packet was sent
    node.run(sys.executable, "-c", SEND)
    listed = node.run("iptables", "-L", "OUTPUT", "-n", "-v", "-x").stdout.splitlines()[2:]
    counted = [int(line.split()[0]) for line in listed]
    assert counted == [1, 1, 0, 0, 2, 1]
