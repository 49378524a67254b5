"""iptables-restore + ipset restore text for a lowered program.

Rendering only: every decision was made in ``lower``; this module spells it in iptables
syntax (and splits port lists into the 15 slots a multiport match holds). Text from input reaches the output only as comments, and only after ``comment``
reduces it to a safe alphabet (names are DNS-1123 already; this is defence in depth).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import attrs
import jinja2

from ... import __version__
from ...ir import DIRECTIONS, Direction
from ...lower import Lowered, Match, SetSpec
from ...resolve import Entry
from ..base import sanitise, template_environment
from ..dispatch import dispatch_by_address

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


@attrs.frozen
class Layout:
    """Where npc's chains hang in table filter. npc's own layout: one FORWARD jump into
    ``NPC-<tag>-FORWARD``, which dispatches to ``NPC-<tag>-EGRESS``/``-INGRESS``, each ending in a
    drop. A dataplane whose own hooks call chains of fixed names (Weave Net's router) names them,
    its template (in its own package, extending ``iptables.rules.j2``'s blocks ``entry`` and
    ``verdict``), the families it carries and what its rules cost."""

    package: str = "npc.backends.iptables"  # whose templates/ holds ``template``
    template: str = "iptables.rules.j2"
    families: tuple[int, ...] = (4, 6)
    fixed: tuple[str, ...] = ()  # chains of fixed names it fills (default: npc's own three)
    kept: tuple[str, ...] = ()  # of those, chains the hooking tool created: emptied, never deleted
    direction_chains: Mapping[Direction, str] = attrs.field(factory=dict)
    forward_jump: bool = True  # npc inserts (and owns) one jump from FORWARD
    adopted_set_prefix: str | None = None  # sets of the tool it replaces, destroyed once unused
    replaces: str = ""  # that tool's name, for the load report
    entry_rules: int = 3  # the template's ``entry`` block
    verdict_rules: Mapping[Direction, int] = attrs.field(factory=lambda: {"egress": 1, "ingress": 1})
    per_packet: int = 4  # rules a first packet meets outside the dispatch (the FORWARD jump and entry)

    def fixed_chains(self, lowered: Lowered) -> list[str]:
        if self.fixed:
            return list(self.fixed)
        return [lowered.forward_chain, *(lowered.direction_chain(d) for d in DIRECTIONS)]

    def direction_chain(self, lowered: Lowered, direction: Direction) -> str:
        return self.direction_chains.get(direction) or lowered.direction_chain(direction)

    def chain_names(self, lowered: Lowered, family: int) -> list[str]:
        """Every chain this layout fills in ``family``, fixed ones first."""
        return self.fixed_chains(lowered) + [c.name for c in lowered.family(family).chains]


NPC_LAYOUT = Layout()


@functools.cache
def _environment(package: str) -> jinja2.Environment:
    """``package``'s templates, able to extend this package's."""
    env = template_environment(package)
    if package != NPC_LAYOUT.package:
        env.loader = jinja2.ChoiceLoader([env.loader, _environment(NPC_LAYOUT.package).loader])  # type: ignore[list-item]
    env.filters["comment"] = comment
    env.filters["matches"] = render_matches
    return env


def jump_rule(lowered: Lowered) -> str:
    """The one rule in a chain npc does not own; loading looks for exactly this text."""
    return f"FORWARD -m comment --comment {comment('npc network ' + lowered.names.network)} -j {lowered.forward_chain}"


def insert_jump(lowered: Lowered) -> str:
    return f"-I {jump_rule(lowered).replace('FORWARD', 'FORWARD 1', 1)}"


def render_rules(
    lowered: Lowered,
    family: int,
    mark: int,
    edits: Sequence[str] | None = None,
    extra_chains: Sequence[str] = (),
    layout: Layout = NPC_LAYOUT,
) -> str:
    """An ``iptables-restore --noflush`` input for table filter (``ip6tables-restore`` for 6).
    ``edits`` end the transaction (default: insert the FORWARD jump if the layout has one, as a
    boot-time restore needs); ``extra_chains`` are declared (so flushed) too, for edits that
    delete them."""
    program = lowered.family(family)
    direction_chain = {d: layout.direction_chain(lowered, d) for d in DIRECTIONS}
    if edits is None:
        edits = [insert_jump(lowered)] if layout.forward_jump else []
    return (
        _environment(layout.package)
        .get_template(layout.template)
        .render(
            version=__version__,
            network=comment(lowered.names.network)[1:-1],
            family=family,
            restore="iptables-restore" if family == 4 else "ip6tables-restore",
            chains=layout.chain_names(lowered, family) + list(extra_chains),
            forward=lowered.forward_chain,
            isolated={d: s.name for d, s in program.isolated.items()},
            direction_chain=direction_chain,
            local=LOCAL,
            mark=hex(mark),
            dispatch=program.dispatch,
            policy_chains=program.chains,
            edits=edits,
        )
    )


@attrs.frozen
class SetText:
    name: str
    type: str
    family: str
    hashsize: int
    maxelem: int
    members: Sequence[Entry]


def set_text(spec: SetSpec, members: Sequence[Entry], name: str | None = None) -> SetText:
    """ipset's maxelem is fixed at creation: leave room to grow (sets are swapped, not resized)."""
    maxelem = 65536
    while maxelem < 2 * len(members):
        maxelem *= 2
    hashsize = 1024
    while hashsize < len(members) // 2 and hashsize < 1 << 20:
        hashsize *= 2
    family = "inet" if spec.family == 4 else "inet6"
    return SetText(name or spec.name, SET_TYPES[spec.kind], family, hashsize, maxelem, members)


def all_sets(lowered: Lowered, families: Sequence[int] = (4, 6)) -> list[SetSpec]:
    return sorted({s for f in lowered.families if f.family in families for s in f.sets}, key=lambda s: s.name)


def render_sets(
    lowered: Lowered,
    members: Mapping[str, Sequence[Entry]],
    sets: Sequence[SetText] | None = None,
    families: Sequence[int] = (4, 6),
) -> str:
    """An ``ipset restore`` input creating every set (of ``families``) with its members."""
    if sets is None:
        sets = [set_text(s, members[s.name]) for s in all_sets(lowered, families)]
    return (
        _environment(NPC_LAYOUT.package)
        .get_template("ipset.j2")
        .render(version=__version__, network=comment(lowered.names.network)[1:-1], sets=sets)
    )


def rules_per_packet(
    lowered: Lowered, members: Mapping[str, Sequence[Entry]], layout: Layout = NPC_LAYOUT
) -> int:
    """The most rules the first packet of one connection is tested against: the layout's fixed
    cost (npc's: the FORWARD jump and npc's FORWARD chain), then per direction where the worst pod
    is isolated the mark reset, every dispatch rule, every rule of each policy chain selecting that
    pod (MARK does not end a chain) and the verdict."""
    worst = 0
    for program in lowered.families:
        if program.family not in layout.families:
            continue
        length = {c.name: chain_rules(c.matches) for c in program.chains}
        total = layout.per_packet
        for direction in DIRECTIONS:
            found = dispatch_by_address(program, direction, members)
            if found:
                chains = max(sum(length[d.chain] for d in ds) for ds in found.values())
                total += 1 + layout.verdict_rules[direction] + len(program.dispatch[direction]) + chains
        worst = max(worst, total)
    return worst


def chain_rules(matches: Sequence[Match]) -> int:
    return sum(len(split_match(m)) for m in matches)


def rule_count(lowered: Lowered, family: int, layout: Layout = NPC_LAYOUT) -> int:
    """The ``-A`` rules of one family's file, as the template writes them: the entry block (npc's:
    three in the FORWARD chain); per direction the mark reset, one per dispatch and the verdict;
    every policy chain's."""
    program = lowered.family(family)
    dispatch = sum(1 + layout.verdict_rules[d] + len(program.dispatch[d]) for d in DIRECTIONS)
    return layout.entry_rules + dispatch + sum(chain_rules(c.matches) for c in program.chains)


def artefacts(
    lowered: Lowered, members: Mapping[str, Sequence[Entry]], mark: int, layout: Layout = NPC_LAYOUT
) -> dict[str, str]:
    """The iptables-persistent / ipset-persistent file set (of the layout's families)."""
    files = {"ipsets": render_sets(lowered, members, families=layout.families)}
    files.update((f"rules.v{f}", render_rules(lowered, f, mark, layout=layout)) for f in layout.families)
    return files
