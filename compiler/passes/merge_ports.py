"""Merge the rules of one policy and direction that name the same peers, over their ports.

Sound because rules are OR-ed: (peers P, ports X) or (peers P, ports Y) is (peers P, ports X u Y),
where "all ports" (``()``) absorbs everything. Each rule's ports are also put in one canonical
form per protocol (a port-less spec absorbs the rest of its protocol, numbers and ranges join
into maximal ranges, names stay names), so rules that mean the same ports compare equal, which
``merge_peers`` and chain sharing in lowering then exploit.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..ir import PROTOCOLS, Peer, PortSpec, Program, Rule, port_spans
from .rewrite import map_rules


def canonical_ports(specs: Iterable[PortSpec]) -> tuple[PortSpec, ...]:
    """The same ports, spelled one way; ``()`` (all ports) stays ``()``."""
    specs = tuple(specs)
    out: list[PortSpec] = []
    for protocol in PROTOCOLS:
        mine = [s for s in specs if s.protocol == protocol]
        if any(s.port is None for s in mine):
            out.append(PortSpec(protocol))
            continue
        out += [PortSpec(protocol, lo, hi if hi != lo else None) for lo, hi in port_spans(mine)]
        out += [
            PortSpec(protocol, name) for name in sorted({s.port for s in mine if isinstance(s.port, str)})
        ]
    return tuple(out)


def _merge(rules: tuple[Rule, ...]) -> tuple[Rule, ...]:
    ports: dict[tuple[Peer, ...] | None, list[PortSpec] | None] = {}  # None: all ports
    for rule in rules:
        if not rule.ports:
            ports[rule.peers] = None
        elif (known := ports.setdefault(rule.peers, [])) is not None:
            known.extend(rule.ports)
    return tuple(
        Rule(peers, () if specs is None else canonical_ports(specs)) for peers, specs in ports.items()
    )


def merge_ports(program: Program) -> Program:
    return map_rules(program, _merge)
