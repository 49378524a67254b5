"""iptables-restore + ipset restore text for a lowered program.

Rendering only: every decision was made in ``lower``; this module spells it in iptables
syntax (and splits port lists into the 15 slots a multiport match holds). Text from input reaches the output only as comments, and only after ``comment``
reduces it to a safe alphabet (names are DNS-1123 already; this is defence in depth).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import attrs

from ... import __version__
from ...ir import DIRECTIONS, Direction
from ...lower import FamilyProgram, Lowered, Match, SetSpec
from ...resolve import Entry
from ..base import sanitise, template_environment
from ..dispatch import dispatch_by_address
from .mark_tree import Marks, Tree, map_members, tests_before, tree

SET_TYPES = {"pods": "hash:ip", "net": "hash:net", "port": "hash:ip,port"}
# Which end of the packet is the local pod and which the remote peer, per direction.
LOCAL: Mapping[Direction, str] = {"ingress": "dst", "egress": "src"}
REMOTE: Mapping[Direction, str] = {"ingress": "src", "egress": "dst"}
MULTIPORT_MAX = 15  # iptables multiport slots; a range takes two


def comment(text: str) -> str:
    """A double-quoted iptables comment that no input can break out of (max 256 bytes)."""
    return '"' + sanitise(text, 250) + '"'


def chunk_ports(spans: Sequence[tuple[int, int]]) -> list[tuple[tuple[int, int], ...]]:
    """Split into groups that fit one multiport match (a range uses two of its 15 slots)."""
    groups: list[tuple[tuple[int, int], ...]] = []
    current: list[tuple[int, int]] = []
    used = 0
    for span in spans:
        cost = 1 if span[0] == span[1] else 2
        if used + cost > MULTIPORT_MAX:
            groups.append(tuple(current))
            current, used = [], 0
        current.append(span)
        used += cost
    if current:
        groups.append(tuple(current))
    return groups


def split_match(match: Match) -> list[Match]:
    """One match per iptables rule: ports beyond one multiport match's slots take more rules."""
    if len(match.ports) <= 1:
        return [match]
    return [attrs.evolve(match, ports=group) for group in chunk_ports(match.ports)]


def render_matches(match: Match, direction: Direction) -> list[str]:
    return [render_match(m, direction) for m in split_match(match)]


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


_ENV = template_environment("npc.backends.iptables")
_ENV.filters["comment"] = comment
_ENV.filters["matches"] = render_matches

# npc's tables, in the order a packet meets them: ``mangle`` writes the namespace groups into the
# mark (ipset's --map-set is refused elsewhere), ``filter`` decides.
TABLES = ("mangle", "filter")


def entry_chain(lowered: Lowered, table: str) -> str:
    return lowered.names.chain("MARK") if table == "mangle" else lowered.forward_chain


def jump_rule(lowered: Lowered, table: str = "filter") -> str:
    """The one rule per table in a chain npc does not own; loading looks for exactly this text."""
    network = comment("npc network " + lowered.names.network)
    return f"FORWARD -m comment --comment {network} -j {entry_chain(lowered, table)}"


def insert_jump(lowered: Lowered, table: str = "filter") -> str:
    return f"-I {jump_rule(lowered, table).replace('FORWARD', 'FORWARD 1', 1)}"


def trees(lowered: Lowered, family: int, marks: Marks) -> dict[Direction, Tree]:
    program = lowered.family(family)
    return {d: tree(program, d, lowered.names, marks.group(d)) for d in DIRECTIONS}


def chain_names(lowered: Lowered, family: int, marks: Marks, table: str = "filter") -> list[str]:
    """Every chain npc owns in one table of this family for this network."""
    if table == "mangle":
        return [entry_chain(lowered, table)]
    found = trees(lowered, family, marks).values()
    return lowered.chain_names(family) + [c.name for t in found for c in t.chains]


def render_rules(
    lowered: Lowered,
    family: int,
    marks: Marks,
    edits: Mapping[str, Sequence[str]] | None = None,
    extra_chains: Mapping[str, Sequence[str]] | None = None,
) -> str:
    """An ``iptables-restore --noflush`` input for tables mangle and filter (``ip6tables-restore``
    for 6). ``edits`` end each table's part (default: insert the FORWARD jumps, as a boot-time
    restore needs); ``extra_chains`` are declared (so flushed) too, for edits that delete them."""
    edits = {t: [insert_jump(lowered, t)] for t in TABLES} if edits is None else edits
    extra = extra_chains or {}
    program = lowered.family(family)
    direction_chain = {d: lowered.direction_chain(d) for d in DIRECTIONS}
    return _ENV.get_template("iptables.rules.j2").render(
        version=__version__,
        network=comment(lowered.names.network)[1:-1],
        family=family,
        restore="iptables-restore" if family == 4 else "ip6tables-restore",
        chains=chain_names(lowered, family, marks) + list(extra.get("filter", ())),
        mangle_chains=chain_names(lowered, family, marks, "mangle") + list(extra.get("mangle", ())),
        mark_chain=entry_chain(lowered, "mangle"),
        forward=lowered.forward_chain,
        trees=trees(lowered, family, marks),
        direction_chain=direction_chain,
        local=LOCAL,
        mark=hex(marks.allow),
        policy_chains=program.chains,
        mangle_edits=edits.get("mangle", ()),
        edits=edits.get("filter", ()),
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


def kernel_sets(lowered: Lowered, members: Mapping[str, Sequence[Entry]], marks: Marks) -> list[SetText]:
    """Every set the rules use, with its members, by name: the map sets built from ``lower``'s
    per-namespace isolated sets, which are themselves never loaded."""
    out = []
    for program in lowered.families:
        out += [set_text(s.name, SET_TYPES[s.kind], s.family, members[s.name]) for s in used_sets(program)]
        for found in trees(lowered, program.family, marks).values():
            entries = map_members(found, members, marks.group(found.direction))
            out.append(set_text(found.map_set, "hash:ip", program.family, entries, " skbinfo"))
    return sorted(out, key=lambda s: s.name)


def render_sets(lowered: Lowered, sets: Sequence[SetText]) -> str:
    """An ``ipset restore`` input creating every set with its members."""
    return _ENV.get_template("ipset.j2").render(
        version=__version__, network=comment(lowered.names.network)[1:-1], sets=sets
    )


def rules_for(
    lowered: Lowered, members: Mapping[str, Sequence[Entry]], family: int, direction: Direction, marks: Marks
) -> dict[str, int]:
    """Per isolated address, the rules of ``direction`` the first packet of a connection is
    tested against: the allow-bit reset, the jump to the trie, the trie's tests, the group's dispatch
    rules, every rule of each policy chain selecting the pod (MARK does not end a chain), the drop."""
    program = lowered.family(family)
    length = {c.name: chain_rules(c.matches) for c in program.chains}
    found = trees(lowered, family, marks)[direction]
    chains = dispatch_by_address(program, direction, members)
    out = {}
    for group in found.groups:
        fixed = 3 + tests_before(found, group.number) + len(group.dispatch)
        for name in group.isolated:
            for text, _ in members[name]:
                out[text] = fixed + sum(length[d.chain] for d in chains.get(text, ()))
    return out


def rules_per_packet(lowered: Lowered, members: Mapping[str, Sequence[Entry]], marks: Marks) -> int:
    """The most rules the first packet of one connection is tested against: the FORWARD jump and
    npc's FORWARD chain (3), then the worst pod's rules of each direction (``rules_for``)."""
    worst = 0
    for program in lowered.families:
        total = 1 + 3
        for direction in DIRECTIONS:
            total += max(rules_for(lowered, members, program.family, direction, marks).values(), default=0)
        worst = max(worst, total)
    return worst


def chain_rules(matches: Sequence[Match]) -> int:
    return sum(len(split_match(m)) for m in matches)


def rule_count(lowered: Lowered, family: int, marks: Marks) -> int:
    """The ``-A`` rules of one family's file, as the template writes them: three in mangle's
    chain, three in the FORWARD chain; per direction the mark reset, the jump to the trie and the
    drop, the trie's tests and its groups' dispatch; every policy chain's."""
    program = lowered.family(family)
    dispatch = sum(
        3 + sum(len(c.tests) + len(c.group.dispatch) for c in found.chains)
        for found in trees(lowered, family, marks).values()
    )
    return 3 + 3 + dispatch + sum(chain_rules(c.matches) for c in program.chains)


def artefacts(lowered: Lowered, members: Mapping[str, Sequence[Entry]], marks: Marks) -> dict[str, str]:
    """The iptables-persistent / ipset-persistent file set."""
    return {
        "ipsets": render_sets(lowered, kernel_sets(lowered, members, marks)),
        "rules.v4": render_rules(lowered, 4, marks),
        "rules.v6": render_rules(lowered, 6, marks),
    }
