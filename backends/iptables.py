"""iptables-restore + ipset restore text for a lowered program.

Rendering only: every decision was made in ``lower``; this module spells it in iptables
syntax. Text from input reaches the output only as comments, and only after ``comment``
reduces it to a safe alphabet (names are DNS-1123 already; this is defence in depth).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import attrs

from .. import __version__
from ..ir import Direction
from ..lower import FamilyProgram, Lowered, Match, SetSpec
from ..resolve import Entry
from . import template_environment
from .dispatch import dispatch_by_address
from .mark_tree import DISPATCH_MASKS, Tree, map_members, tests_before, tree

SET_TYPES = {"pods": "hash:ip", "net": "hash:net", "port": "hash:ip,port"}
# Which end of the packet is the local pod and which the remote peer, per direction.
LOCAL: Mapping[Direction, str] = {"ingress": "dst", "egress": "src"}
REMOTE: Mapping[Direction, str] = {"ingress": "src", "egress": "dst"}
_UNSAFE = re.compile(r"[^A-Za-z0-9 ._/:=@+-]")


def sanitise(text: str, limit: int) -> str:
    """``text`` reduced to a quote-, escape- and newline-free ASCII alphabet, at most ``limit`` bytes."""
    return _UNSAFE.sub("_", text)[:limit]


def comment(text: str) -> str:
    """A double-quoted iptables comment that no input can break out of (max 256 bytes)."""
    return '"' + sanitise(text, 250) + '"'


def render_match(match: Match, direction: Direction) -> str:
    """Spelled in the order iptables-save prints it, so a saved table diffs cleanly."""
    parts: list[str] = []
    if match.protocol:
        parts.append(f"-p {match.protocol.lower()}")
    if match.peer is not None:
        parts.append(f"-m set --match-set {match.peer.name} {REMOTE[direction]}")
    if match.protocol:
        proto = match.protocol.lower()
        if len(match.ports) == 1:
            lo, hi = match.ports[0]
            parts.append(f"-m {proto} --dport {lo}" + (f":{hi}" if hi != lo else ""))
        elif match.ports:
            spans = ",".join(f"{lo}:{hi}" if hi != lo else str(lo) for lo, hi in match.ports)
            parts.append(f"-m multiport --dports {spans}")
    if match.named_port is not None:
        parts.append(f"-m set --match-set {match.named_port.name} dst,dst")
    return "".join(" " + p for p in parts)


_ENV = template_environment()
_ENV.filters["comment"] = comment
_ENV.filters["match"] = render_match


@attrs.frozen
class TableEdit:
    """What ``apply`` adds to a restore transaction so it owns exactly its own objects in one
    table: the FORWARD jump (insert it, or delete surplus copies) and chains no longer wanted."""

    insert_jump: bool = True
    surplus_jumps: int = 0
    stale_chains: tuple[str, ...] = ()


# npc's tables, in the order a packet meets them: ``mangle`` writes the namespace groups into the
# mark (ipset's --map-set is refused elsewhere), ``filter`` decides.
TABLES = ("mangle", "filter")


def entry_chain(lowered: Lowered, table: str) -> str:
    return lowered.names.chain("MARK") if table == "mangle" else lowered.forward_chain


def jump_rule(lowered: Lowered, table: str = "filter") -> str:
    """The one rule per table in a chain npc does not own; ``apply`` looks for exactly this text."""
    network = comment("npc network " + lowered.names.network)
    return f"FORWARD -m comment --comment {network} -j {entry_chain(lowered, table)}"


def trees(lowered: Lowered, family: int) -> dict[Direction, Tree]:
    program = lowered.family(family)
    return {d: tree(program, d, lowered.names, DISPATCH_MASKS[d]) for d in ("egress", "ingress")}


def chain_names(lowered: Lowered, family: int, table: str = "filter") -> list[str]:
    """Every chain npc owns in one table of this family for this network."""
    if table == "mangle":
        return [entry_chain(lowered, table)]
    return lowered.chain_names(family) + [c.name for t in trees(lowered, family).values() for c in t.chains]


def _edit_lines(lowered: Lowered, table: str, edit: TableEdit) -> list[str]:
    jump = jump_rule(lowered, table)
    lines = [f"-I {jump.replace('FORWARD', 'FORWARD 1', 1)}"] if edit.insert_jump else []
    lines += [f"-D {jump}"] * edit.surplus_jumps
    return lines + [f"-X {name}" for name in edit.stale_chains]


def render_rules(lowered: Lowered, family: int, edits: Mapping[str, TableEdit] | None = None) -> str:
    """An ``iptables-restore --noflush`` input for tables mangle and filter (``ip6tables-restore`` for 6)."""
    edits = edits or {}
    direction_chain = {d: lowered.direction_chain(d) for d in ("egress", "ingress")}
    program = lowered.family(family)
    return _ENV.get_template("iptables.rules.j2").render(
        version=__version__,
        network=comment(lowered.names.network)[1:-1],
        family=family,
        restore="iptables-restore" if family == 4 else "ip6tables-restore",
        chains=chain_names(lowered, family) + list(edits.get("filter", TableEdit()).stale_chains),
        mangle_chains=chain_names(lowered, family, "mangle")
        + list(edits.get("mangle", TableEdit()).stale_chains),
        mark_chain=entry_chain(lowered, "mangle"),
        forward=lowered.forward_chain,
        trees=trees(lowered, family),
        direction_chain=direction_chain,
        local=LOCAL,
        mark=hex(lowered.mark),
        policy_chains=program.chains,
        mangle_edits=_edit_lines(lowered, "mangle", edits.get("mangle", TableEdit())),
        edits=_edit_lines(lowered, "filter", edits.get("filter", TableEdit())),
    )


@attrs.frozen
class SetText:
    name: str
    type: str
    family: str
    hashsize: int
    maxelem: int
    members: Sequence[Entry]
    options: str = ""

    def renamed(self, name: str) -> SetText:
        return attrs.evolve(self, name=name)


def set_text(name: str, kind: str, family: int, members: Sequence[Entry], options: str = "") -> SetText:
    """ipset's maxelem is fixed at creation: leave room to grow (sets are swapped, not resized)."""
    maxelem = 65536
    while maxelem < 2 * len(members):
        maxelem *= 2
    hashsize = 1024
    while hashsize < len(members) // 2 and hashsize < 1 << 20:
        hashsize *= 2
    return SetText(name, kind, "inet" if family == 4 else "inet6", hashsize, maxelem, members, options)


def used_sets(program: FamilyProgram) -> set[SetSpec]:
    """Sets a rule tests: peers, named ports, and targets a trie's group still has to test."""
    found = {s for c in program.chains for m in c.matches for s in (m.peer, m.named_port) if s is not None}
    for scopes in program.scopes.values():
        found.update(d.target for scope in scopes for d, whole in scope.dispatch if not whole)
    return found


def kernel_sets(lowered: Lowered, members: Mapping[str, Sequence[Entry]]) -> list[SetText]:
    """Every set the rules use, with its members, by name: the map sets built from ``lower``'s
    per-namespace isolated sets, which are themselves never loaded."""
    out = []
    for program in lowered.families:
        out += [set_text(s.name, SET_TYPES[s.kind], s.family, members[s.name]) for s in used_sets(program)]
        for found in trees(lowered, program.family).values():
            entries = map_members(found, members, DISPATCH_MASKS[found.direction])
            out.append(set_text(found.map_set, "hash:ip", program.family, entries, " skbinfo"))
    return sorted(out, key=lambda s: s.name)


def render_sets(
    lowered: Lowered, members: Mapping[str, Sequence[Entry]], sets: Sequence[SetText] | None = None
) -> str:
    """An ``ipset restore`` input creating every set with its members."""
    if sets is None:
        sets = kernel_sets(lowered, members)
    return _ENV.get_template("ipset.j2").render(
        version=__version__, network=comment(lowered.names.network)[1:-1], sets=sets
    )


def rules_for(
    lowered: Lowered, members: Mapping[str, Sequence[Entry]], family: int, direction: Direction
) -> dict[str, int]:
    """Per isolated address, the rules of ``direction`` the first packet of a connection is
    tested against: the allow-bit reset, the jump to the trie, the trie's tests, the group's dispatch
    rules, every rule of each policy chain selecting the pod (MARK does not end a chain), the drop."""
    program = lowered.family(family)
    length = {c.name: len(c.matches) for c in program.chains}
    found = trees(lowered, family)[direction]
    chains = dispatch_by_address(program, direction, members)
    out = {}
    for group in found.groups:
        fixed = 3 + tests_before(found, group.number) + len(group.dispatch)
        for name in group.isolated:
            for text, _ in members[name]:
                out[text] = fixed + sum(length[d.chain] for d in chains.get(text, ()))
    return out


def rules_per_packet(lowered: Lowered, members: Mapping[str, Sequence[Entry]]) -> int:
    """The most rules the first packet of one connection is tested against: the FORWARD jump and
    npc's FORWARD chain (3), then the worst pod's rules of each direction (``rules_for``)."""
    worst = 0
    for program in lowered.families:
        total = 1 + 3
        for direction in ("egress", "ingress"):
            total += max(rules_for(lowered, members, program.family, direction).values(), default=0)
        worst = max(worst, total)
    return worst


def artefacts(lowered: Lowered, members: Mapping[str, Sequence[Entry]]) -> dict[str, str]:
    """The iptables-persistent / ipset-persistent file set."""
    return {
        "ipsets": render_sets(lowered, members),
        "rules.v4": render_rules(lowered, 4),
        "rules.v6": render_rules(lowered, 6),
    }


def rule_counts(files: Mapping[str, str]) -> dict[str, int]:
    """Rules per rendered rules file (for the manifest)."""
    return {
        n: sum(1 for x in t.splitlines() if x.startswith("-A "))
        for n, t in files.items()
        if n.startswith("rules.")
    }
