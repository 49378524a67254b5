"""``--port`` values and the default ports: every port the policies mention, every named container
port, and one port of each run of ports the rules treat alike that those leave out."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable

import attrs

from ..inventory import Inventory
from ..ir import PROTOCOLS, Program, Protocol

_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?")  # IANA_SVC_NAME, as the API server checks


@attrs.frozen
class PortQuery:
    """One port asked about: a number, or a container port name resolved per destination pod."""

    protocol: Protocol
    port: int | str

    @property
    def label(self) -> str:
        return f"{self.protocol.lower()}/{self.port}"

    def sort_key(self) -> tuple[int, int, int | str]:
        return (PROTOCOLS.index(self.protocol), isinstance(self.port, str), self.port)


def parse_port(text: str) -> PortQuery:
    """``tcp/80``, ``udp/53``, ``sctp/9000`` or ``tcp/http`` (argparse type: errors are usage errors)."""
    protocol, slash, port = text.partition("/")
    if not slash or protocol.upper() not in PROTOCOLS:
        raise argparse.ArgumentTypeError(f"{text!r}: expected PROTO/PORT with PROTO tcp, udp or sctp")
    proto: Protocol = PROTOCOLS[PROTOCOLS.index(protocol.upper())]
    if port.isascii() and port.isdigit():  # str.isdigit and int take other scripts' digits (٨٠)
        if not 1 <= int(port) <= 65535:
            raise argparse.ArgumentTypeError(f"{text!r}: port must be 1-65535")
        return PortQuery(proto, int(port))
    if not _NAME.fullmatch(port) or not re.search("[a-z]", port):
        raise argparse.ArgumentTypeError(f"{text!r}: a port is a number 1-65535 or a container port name")
    return PortQuery(proto, port)


def default_ports(programs: Iterable[Program], inventory: Inventory) -> list[PortQuery]:
    """Every number (or range start) a rule names and every named container port, and more where
    those miss a port whose answer differs: per protocol, the ports fall into runs that every rule
    treats alike (inside the same numbers and ranges, and the same pods' ports of the names rules
    give), and each run is asked once, at a port named above, else at its first port (so
    ``tcp/1`` stands for the TCP ports no rule names, and ``tcp/8051`` for 8051-8100 when one
    program allows 8000-8100 and the other 8000-8050)."""
    shown: set[PortQuery] = set()
    spans: dict[Protocol, set[tuple[int, int]]] = {protocol: set() for protocol in PROTOCOLS}
    by_name: set[tuple[str, str]] = set()  # (protocol, name) of the ports rules name by name
    for program in programs:
        for policy in program.policies:
            for rules in (policy.ingress or (), policy.egress or ()):
                for rule in rules:
                    for p in rule.ports:
                        if isinstance(p.port, int):
                            shown.add(PortQuery(p.protocol, p.port))
                            spans[p.protocol].add((p.port, p.end_port or p.port))
                        elif isinstance(p.port, str):
                            by_name.add((p.protocol, p.port))
    for pod in inventory.pods:
        for named in pod.ports:
            if named.protocol in PROTOCOLS:
                shown.add(PortQuery(named.protocol, named.port))  # type: ignore[arg-type]
                if (named.protocol, named.name) in by_name:
                    spans[named.protocol].add((named.port, named.port))  # type: ignore[index]
    out = set(shown)
    for protocol, found in spans.items():

        def run(port: int, found: set[tuple[int, int]] = found) -> frozenset[tuple[int, int]]:
            return frozenset(span for span in found if span[0] <= port <= span[1])

        seen = {run(q.port) for q in shown if q.protocol == protocol and isinstance(q.port, int)}
        for edge in sorted(
            {1, *(start for start, _ in found), *(end + 1 for _, end in found if end < 65535)}
        ):
            if (here := run(edge)) not in seen:
                seen.add(here)
                out.add(PortQuery(protocol, edge))
    return sorted(out, key=PortQuery.sort_key)


def unique(queries: Iterable[PortQuery]) -> list[PortQuery]:
    """The ports as given, each once."""
    return list(dict.fromkeys(queries))
