"""``--port`` values and the default ports: every port the policies mention, every container port."""

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
    """Every number (or range start) a rule names and every container port: each port where an
    answer can change is one of these or behaves like one (a port no one names is all-or-nothing)."""
    found: set[PortQuery] = set()
    for program in programs:
        for policy in program.policies:
            for rules in (policy.ingress or (), policy.egress or ()):
                for rule in rules:
                    found.update(PortQuery(p.protocol, p.port) for p in rule.ports if isinstance(p.port, int))
    for pod in inventory.pods:
        found.update(PortQuery(p.protocol, p.port) for p in pod.ports if p.protocol in PROTOCOLS)  # type: ignore[arg-type]
    return sorted(found, key=PortQuery.sort_key)


def unique(queries: Iterable[PortQuery]) -> list[PortQuery]:
    """The ports as given, each once."""
    return list(dict.fromkeys(queries))
