"""Runs inside one pod's network namespace: echo servers plus a prober making many connections at once.

Standalone (standard library only, never imports npc) so a namespace starts it in a few tens of
milliseconds. ``serve PORT...`` listens on every port, TCP and UDP, IPv4 and IPv6, and prints
``ready``; then each stdin line ``{"timeout": T, "targets": [[key, address, protocol, port], ...]}``
is answered by one stdout line ``{key: "ok" | "timeout" | "error: ..."}`` after trying all targets
concurrently. It exits when stdin closes, so a dying test run cannot leave it behind, and one
process per pod serves and probes for the cluster's whole life. ``probe TIMEOUT`` is the one-shot
form (targets as JSON on stdin). A probe is ``ok`` only if the payload came back, so it proves
the reply direction as well as the request. ``hold ADDRESS PORT TIMEOUT`` keeps one TCP
connection open for its whole life (``connected`` once, then one echo per stdin line), to show an
established connection surviving rule changes.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import sys
import threading
import typing

PAYLOAD = b"npc-probe"
IDLE_TIMEOUT = 60.0  # seconds a connection may stay silent before the server drops it


class _UDPEcho(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = typing.cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(data, addr)


async def _tcp_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Echo until the peer closes: a probe sends once, a held connection many times."""
    try:
        while data := await asyncio.wait_for(reader.read(64), IDLE_TIMEOUT):
            writer.write(data)
            await writer.drain()
    except (OSError, TimeoutError):
        pass
    finally:
        writer.close()


def _bound(family: socket.AddressFamily, kind: socket.SocketKind, port: int) -> socket.socket:
    sock = socket.socket(family, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
    sock.setblocking(False)
    return sock


async def serve(ports: list[int]) -> None:
    loop = asyncio.get_running_loop()
    for family in (socket.AF_INET, socket.AF_INET6):
        for port in ports:
            await asyncio.start_server(_tcp_echo, sock=_bound(family, socket.SOCK_STREAM, port), backlog=512)
            await loop.create_datagram_endpoint(_UDPEcho, sock=_bound(family, socket.SOCK_DGRAM, port))
    commands: asyncio.Queue[str] = asyncio.Queue()

    def read_stdin() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(commands.put_nowait, line)
        loop.call_soon_threadsafe(commands.put_nowait, "")

    threading.Thread(target=read_stdin, daemon=True).start()
    print("ready", flush=True)
    while line := await commands.get():
        command = json.loads(line)
        results = await probe(command["targets"], float(command["timeout"]))
        print(json.dumps(results), flush=True)


def _family(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


async def _probe_tcp(address: str, port: int) -> str:
    reader, writer = await asyncio.open_connection(address, port)
    try:
        writer.write(PAYLOAD)
        await writer.drain()
        data = await reader.readexactly(len(PAYLOAD))
    finally:
        writer.close()
    return "ok" if data == PAYLOAD else f"error: echoed {data!r}"


_UDP_SOURCE_PORTS = itertools.cycle(range(20000, 32768))  # below the kernel's ephemeral range


def _bind_fresh_udp_port(sock: socket.socket) -> None:
    """Each UDP probe from this pod gets a source port the last 12,000 did not use. A kernel-chosen
    port repeats at random, and a repeat within conntrack's UDP timeout (30-120 s) makes a probe
    of a flow denied now answer through the entry of the same flow allowed a step earlier."""
    host = "::" if sock.family == socket.AF_INET6 else "0.0.0.0"
    for _ in range(100):
        try:
            sock.bind((host, next(_UDP_SOURCE_PORTS)))
            return
        except OSError:  # in use by a server or a probe still in flight: take the next
            continue
    sock.bind((host, 0))


async def _probe_udp(address: str, port: int) -> str:
    loop = asyncio.get_running_loop()
    with socket.socket(_family(address), socket.SOCK_DGRAM) as sock:
        _bind_fresh_udp_port(sock)
        sock.setblocking(False)
        await loop.sock_connect(sock, (address, port))
        await loop.sock_sendall(sock, PAYLOAD)
        data = await loop.sock_recv(sock, 64)
    return "ok" if data == PAYLOAD else f"error: echoed {data!r}"


async def _probe_one(address: str, protocol: str, port: int, timeout: float) -> str:
    try:
        async with asyncio.timeout(timeout):
            if protocol == "TCP":
                return await _probe_tcp(address, port)
            return await _probe_udp(address, port)
    except TimeoutError:
        return "timeout"
    except OSError as exc:  # refused / unreachable: the filter let it through or something is broken
        return f"error: {exc.strerror or exc}"
    except asyncio.IncompleteReadError:
        return "error: connection closed before the echo"


async def probe(targets: list[list[object]], timeout: float) -> dict[str, str]:
    keys = [str(t[0]) for t in targets]
    results = await asyncio.gather(
        *(_probe_one(str(t[1]), str(t[2]), int(str(t[3])), timeout) for t in targets)
    )
    return dict(zip(keys, results, strict=True))


def _echo(sock: socket.socket) -> str:
    try:
        sock.sendall(PAYLOAD)
        data = b""
        while len(data) < len(PAYLOAD):
            chunk = sock.recv(len(PAYLOAD) - len(data))
            if not chunk:
                return "error: connection closed before the echo"
            data += chunk
    except TimeoutError:
        return "timeout"
    except OSError as exc:
        return f"error: {exc.strerror or exc}"
    return "ok" if data == PAYLOAD else f"error: echoed {data!r}"


def hold(address: str, port: int, timeout: float) -> int:
    """One connection, never reopened: every ``ok`` is a round trip over the very same socket."""
    try:
        sock = socket.create_connection((address, port), timeout=timeout)
    except OSError as exc:
        print("timeout" if isinstance(exc, TimeoutError) else f"error: {exc.strerror or exc}", flush=True)
        return 1
    with sock:
        print("connected", flush=True)
        for _ in sys.stdin:
            print(_echo(sock), flush=True)
    return 0


def main(argv: list[str]) -> int:
    if len(argv) == 4 and argv[0] == "hold":
        return hold(argv[1], int(argv[2]), float(argv[3]))
    if len(argv) >= 1 and argv[0] == "serve":
        asyncio.run(serve([int(p) for p in argv[1:]]))
        return 0
    if len(argv) == 2 and argv[0] == "probe":
        results = asyncio.run(probe(json.load(sys.stdin), float(argv[1])))
        json.dump(results, sys.stdout)
        return 0
    print(
        "usage: agent.py serve PORT... | agent.py probe TIMEOUT | agent.py hold ADDRESS PORT TIMEOUT",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
