"""nftables text for a lowered program: one ``nft -f`` transaction that replaces one network's
table (or, for a table the kernel does not hold yet, the parts of ``FIRST_LOAD`` and ``HOOK``).

Rendering only: every decision was made in ``lower`` and ``resolve``; this module spells the same
program with what nftables has. Each network owns one ``inet`` table (IPv4 and IPv6 together):
``npc`` for the default network, ``npc-<tag>`` for any other, so applying one network never
touches another's table, nor any table npc does not own (iptables-nft's ``ip filter`` included).

Layout of the table (``<f>`` is 4 or 6; each family the network carries has its own chains and
maps, and set names say their family; a port list is shared by both families' rules):

  forward        base chain (hook forward, priority filter, policy accept): replies of allowed
                 connections accept; then ``meta nfproto ipv4 goto source-4`` and
                 ``meta nfproto ipv6 goto source-6`` (one rule per family carried, IPv4's first).
  source-<f>     a source isolated for egress (a key of ``egress-<f>-1``) goes to ``egress-<f>``,
                 anything else to ``destination-<f>``.
  egress-<f>     ``ip saddr vmap @egress-<f>-<k>`` for rank k = 1..K, then drop.
  destination-<f> a destination isolated for ingress (a key of ``ingress-<f>-1``) goes to
                 ``ingress-<f>``; otherwise accept.
  ingress-<f>    ``ip daddr vmap @ingress-<f>-<k>`` for k = 1..K, then drop.
  p-<digest>     one chain per lowered policy chain; a match is ``goto destination-<f>`` (egress
                 allowed: the destination side decides next) or ``accept`` (ingress allowed).
  ports-<digest> a list of several ports, one named set per distinct list in the table (an
                 interval set where a range is listed), which every rule testing it names
                 (``tcp dport @ports-...``), whichever family's.

Dispatch without marks: rank map k sends an isolated pod's address to the k-th policy chain
selecting it (``jump``: falling off that chain's end tries the next rank; past its last one the
lookups miss, and the chain's final rule drops). A packet does at most K + 1 map lookups (K: the
most policies selecting one pod), where the iptables backend tests one set per policy of the
whole cluster. Every chain reached by ``goto`` ends in a verdict, so no ``jump`` ever resumes
after an allow. Rank 1 holds every isolated address (one no policy chain can allow for goes to
``drop`` there), so it is also the isolation test: no isolation set of its own, and no drop
entry past rank 1. At L those were a quarter of the table's elements, which is what ``nft -f``
spends most of its time on (a miss costs a packet a hash lookup).

``accept`` here ends only this table's base chain: other tables' chains on the forward hook
still see the packet and their drop still drops, so accepting is the same as the iptables
backend's falling through. The packet mark is not used (``--mark`` is an iptables matter).

What depends on the inventory: set and map elements, and the number K of rank rules (the most
policies selecting one pod). Chains and every other rule depend only on the policies.
Text from input reaches the output only as comments, reduced to a safe alphabet; set, map and
chain names are hashes, elements are checked to hold nothing but an address's characters.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence

import attrs

from ... import __version__
from ...ir import DEFAULT_NETWORK, DIRECTIONS, Direction, merge_intervals
from ...lower import (
    Chain,
    FamilyProgram,
    Lowered,
    Match,
    SetSpec,
    chain_set_tests,
    digest,
    network_tag,
    plain_cidr,
    tests,
)
from ...resolve import Entry
from ..base import per_program, sanitise, template_environment
from ..dispatch import dispatch_by_address

FAMILY_KEYWORD = {4: "ip", 6: "ip6"}
NFPROTO = {4: "ipv4", 6: "ipv6"}
ADDRESS_TYPE = {4: "ipv4_addr", 6: "ipv6_addr"}
# The remote peer's end of the packet, per direction (the local pod is the other end).
REMOTE_FIELD: Mapping[Direction, str] = {"ingress": "saddr", "egress": "daddr"}
COMMENT_MAX = 120  # nft refuses comments longer than 128 bytes


def table_name(network: str) -> str:
    """The network's table: its own namespace, so sets and chains keep ``lower``'s names."""
    return "npc" if network == DEFAULT_NETWORK else f"npc-{network_tag(network)}"


def comment(text: str) -> str:
    """A double-quoted nft comment no input can break out of (nft strings have no escapes)."""
    return '"' + sanitise(text, COMMENT_MAX) + '"'


def chain_name(lowered_chain: str) -> str:
    return lowered_chain.lower()


def rank_map(direction: Direction, family: int, rank: int) -> str:
    return f"{direction}-{family}-{rank}"


def verdict(direction: Direction, family: int) -> str:
    """What a policy chain does on a match."""
    return f"goto destination-{family}" if direction == "egress" else "accept"


# --- elements -----------------------------------------------------------------------------------


_ADDRESS = r"[0-9a-f.:]+"
_PORT_ENTRY = _ADDRESS + r",(?:tcp|udp|sctp):[0-9]{1,5}"


@functools.cache
def _lines(pattern: str) -> re.Pattern[str]:
    return re.compile(f"{pattern}(?:\n{pattern})*")


def _check(texts: Sequence[str], pattern: str, refusal: str) -> None:
    """Every text is all ``pattern``: one pass over their lines (sets hold hundreds of thousands
    of them), none with a line break of its own; ValueError names the first that is not."""
    joined = "\n".join(texts)
    if texts and (joined.count("\n") != len(texts) - 1 or not _lines(pattern).fullmatch(joined)):
        one = re.compile(pattern)
        raise ValueError(f"{refusal} {next(t for t in texts if not one.fullmatch(t))!r}")


def _addresses(texts: Sequence[str]) -> Sequence[str]:
    """Addresses as ``resolve`` rendered them from parsed ones; checked to be nothing but
    addresses' characters, so they cannot carry syntax."""
    _check(texts, _ADDRESS, "not an address:")
    return texts


def _interval(lo: int, hi: int, family: int) -> str:
    """``lo``-``hi`` as a prefix when it is exactly one, else as a range."""
    kind = ipaddress.IPv4Address if family == 4 else ipaddress.IPv6Address
    first, last = kind(lo), kind(hi)
    nets = list(ipaddress.summarize_address_range(first, last))
    return str(nets[0]) if len(nets) == 1 else f"{first}-{last}"


def net_elements(entries: Sequence[Entry], family: int) -> list[str]:
    """The addresses in some entry but in no ``nomatch`` entry (ipset's hash:net meaning), as
    disjoint intervals: nft interval sets have no nomatch, so excepts are cut out here."""
    spans: list[tuple[int, int]] = []
    holes: list[tuple[int, int]] = []
    for text, nomatch in entries:
        net = ipaddress.ip_network(text, strict=False)
        if net.version != family:
            raise ValueError(f"IPv{net.version} network {net} in an IPv{family} set")
        span = (int(net.network_address), int(net.broadcast_address))
        if nomatch:
            holes.append(span)
        else:
            spans.append(span)
    out: list[tuple[int, int]] = []
    for lo, hi in merge_intervals(spans):
        for hole_lo, hole_hi in sorted(holes):
            if hole_hi < lo or hole_lo > hi:
                continue
            if hole_lo > lo:
                out.append((lo, hole_lo - 1))
            lo = max(lo, hole_hi + 1)
            if lo > hi:
                break
        if lo <= hi:
            out.append((lo, hi))
    return [_interval(lo, hi, family) for lo, hi in out]


def port_elements(texts: Sequence[str]) -> list[str]:
    """``ADDRESS,PROTOCOL:PORT`` entries (resolve's spelling) as ``addr . proto . service``
    elements."""
    _check(texts, _PORT_ENTRY, "bad named-port entry")
    out = []
    for text in texts:
        address, rest = text.split(",")
        protocol, port = rest.split(":")
        if not 0 < int(port) < 65536:
            raise ValueError(f"bad named-port entry {text!r}")
        out.append(f"{address} . {protocol} . {int(port)}")
    return out


@attrs.frozen
class SetText:
    name: str
    type: str
    interval: bool
    elements: tuple[str, ...]


def set_text(spec: SetSpec, entries: Sequence[Entry]) -> SetText:
    address_type = ADDRESS_TYPE[spec.family]
    if spec.kind == "net":
        return SetText(spec.name, address_type, True, tuple(net_elements(entries, spec.family)))
    if spec.kind == "port":
        kind = f"{address_type} . inet_proto . inet_service"
        return SetText(spec.name, kind, False, tuple(port_elements([e for e, _ in entries])))
    return SetText(spec.name, address_type, False, tuple(_addresses([e for e, _ in entries])))


# --- dispatch -----------------------------------------------------------------------------------


def chains_by_address(
    program: FamilyProgram, direction: Direction, members: Mapping[str, Sequence[Entry]]
) -> dict[str, list[str]]:
    """Every isolated address and the policy chains selecting it, in dispatch order, once each."""
    return {
        address: list(dict.fromkeys(d.chain for d in found))
        for address, found in dispatch_by_address(program, direction, members).items()
    }


@attrs.frozen
class MapText:
    name: str
    type: str
    elements: tuple[str, ...]


def rank_maps(
    program: FamilyProgram,
    direction: Direction,
    by_address: Mapping[str, Sequence[str]],
    ranks: int | None = None,
) -> list[MapText]:
    """Map k: address -> jump to its k-th policy chain (``by_address``: ``chains_by_address``);
    an address no chain selects, drop in map 1. ``ranks``: how many maps the table has (default:
    as many as ``by_address`` needs, and at least one, which the isolation tests name; the agent
    passes the table's count when it works out the entries of a few addresses)."""
    if ranks is None:
        ranks = max(1, max((len(c) for c in by_address.values()), default=0))
    elements: list[list[str]] = [[] for _ in range(ranks + 1)]  # per k, from 1
    for address, chains in zip(_addresses(list(by_address)), by_address.values(), strict=True):
        for k, chain in enumerate(chains[:ranks], 1):
            elements[k].append(f"{address} : jump {chain_name(chain)}")
        if not chains:
            elements[1].append(f"{address} : drop")
    kind = f"{ADDRESS_TYPE[program.family]} : verdict"
    return [
        MapText(rank_map(direction, program.family, k), kind, tuple(elements[k])) for k in range(1, ranks + 1)
    ]


# --- policy chains ------------------------------------------------------------------------------


def rule_matches(matches: Iterable[Match]) -> list[Match]:
    """The rules of a policy chain. Adjacent port matches of one peer and protocol (from
    different rules of a policy) join into one port list, and a list of several spans is one
    rule testing a port-list set (``port_list``): a rule per span made a packet of a chain whose
    policies allow two ports from each peer meet twice the rules (the independent L's longest
    chain: 83 rules, 53 joined)."""
    out: list[Match] = []
    for m in matches:
        last = out[-1] if out else None
        if (
            last is not None
            and m.ports
            and last.ports
            and m.named_port is None
            and last.named_port is None
            and (m.peer, m.protocol) == (last.peer, last.protocol)
        ):
            out[-1] = attrs.evolve(last, ports=last.ports + m.ports)
        else:
            out.append(m)
    return [attrs.evolve(m, ports=tuple(merge_intervals(m.ports))) if len(m.ports) > 1 else m for m in out]


def _span(lo: int, hi: int) -> str:
    return str(lo) if lo == hi else f"{lo}-{hi}"


def port_list_name(spans: Sequence[tuple[int, int]]) -> str:
    return f"ports-{digest('ports', tuple(spans))}"


def port_list(spans: Sequence[tuple[int, int]]) -> SetText:
    """A named set of ports, one per distinct list in the table (either family's rules, any
    protocol: the rule names the protocol), shared by every rule testing that list. Named, not
    anonymous: the kernel walks a whole load's transaction twice for each anonymous set (to find
    it, to bind it), about a millisecond apiece when a load holds a few hundred thousand set
    elements; a named set is found by name once per rule, like every set. Spans are disjoint and
    not adjacent (``merge_intervals``), so the kernel lists them as written (``drift``). Only a
    list with a range is an interval set: the kernel looks one up in a tree, which cost a packet
    of the independent L's worst pair 8% of its rate (0.66 of the no-policy rate against 0.71 for
    the rules per port before; 0.68-0.70 with sets of single ports, which it looks up in one step)."""
    ranges = any(lo != hi for lo, hi in spans)
    return SetText(port_list_name(spans), "inet_service", ranges, tuple(_span(lo, hi) for lo, hi in spans))


def _listed(match: Match) -> bool:
    """Whether a rule tests its ports as a port list (``render_match``)."""
    return match.named_port is None and bool(match.protocol) and len(match.ports) > 1


def render_match(match: Match, direction: Direction, family: int) -> str:
    ip = FAMILY_KEYWORD[family]
    parts: list[str] = []
    if match.named_port is None and match.protocol and match.ports:
        ports = f"@{port_list_name(match.ports)}" if _listed(match) else _span(*match.ports[0])
        parts.append(f"{match.protocol.lower()} dport {ports}")
    elif match.named_port is None and match.protocol:
        parts.append(f"meta l4proto {match.protocol.lower()}")
    cidr = plain_cidr(match.peer)
    if cidr is not None:
        parts.append(f"{ip} {REMOTE_FIELD[direction]} {cidr}")
    elif match.peer is not None:  # after the port: a compare fails most packets before a lookup
        parts += [
            f"{ip} {REMOTE_FIELD[direction]} {'!= ' if out else ''}@{s.name}" for s, out in tests(match.peer)
        ]
    if match.named_port is not None:
        parts.append(f"{ip} daddr . meta l4proto . th dport @{match.named_port.name}")
    parts.append(verdict(direction, family))
    return " ".join(parts)


@attrs.frozen
class ChainText:
    name: str
    rules: tuple[str, ...]


def chain_text(chain: Chain, family: int) -> ChainText:
    """A policy chain, each rule commented with the (first) policy it comes from: on the rules,
    not the chain, because nft cannot change a chain's comment, and a policy change that gives a
    shared chain another first policy must not take a table replace."""
    said = comment(chain.comment)
    rules = tuple(
        f"{render_match(m, chain.direction, family)} comment {said}"
        for m in sorted(rule_matches(chain.matches), key=_refusal_cost)
    )
    return ChainText(chain_name(chain.name), rules)


def _refusal_cost(match: Match) -> int:
    """What a rule costs a packet it does not allow, by its first test (``render_match``): a
    port compare, a port list's lookup, a peer's lookup, a named port's two lookups. Every rule
    of a policy chain allows, so their order is free: cheapest first, a packet a later rule
    allows pays least for the rules before it (``match_cost.py``: 28 ns a compare, 40 a lookup)."""
    if match.named_port is not None:
        return 3
    if match.protocol and match.ports:
        return 1 if _listed(match) else 0
    return 2


# --- the table ----------------------------------------------------------------------------------


@per_program
def tests_per_set(program: FamilyProgram) -> Mapping[SetSpec, int]:
    """How many rules test each set: peers, named ports (policy targets and isolation live in
    the rank maps)."""
    return chain_set_tests(program)


@per_program
def referenced_sets(program: FamilyProgram) -> tuple[SetSpec, ...]:
    """Sets a rule tests, by name. Once per program: every member delta asks."""
    return tuple(sorted(tests_per_set(program), key=lambda s: s.name))


@per_program
def port_lists(program: FamilyProgram) -> Mapping[tuple[tuple[int, int], ...], int]:
    """Each port list of several spans the policy chains test, with how many rules test it."""
    found: Counter[tuple[tuple[int, int], ...]] = Counter()
    for chain in program.chains:
        found.update(m.ports for m in rule_matches(chain.matches) if _listed(m))
    return found


def table_port_lists(lowered: Lowered) -> dict[str, SetText]:
    """Every family's port lists, by name: the table holds each once, whichever family's rules test it."""
    return {port_list_name(p): port_list(p) for f in lowered.families for p in port_lists(f)}


def forward_rules(families: Sequence[int]) -> tuple[str, ...]:
    """The base chain's rules: replies of allowed connections accepted, then per family carried
    (IPv4's first) ``goto source-<f>``. A packet of the k-th family meets 1 + k of them."""
    return (
        'ct state established,related accept comment "npc: replies of allowed connections"',
        *(f"meta nfproto {NFPROTO[f]} goto source-{f}" for f in families),
    )


@attrs.frozen
class FamilyText:
    """One family's part of the table: its rank maps, fixed chains and policy chains."""

    family: int
    ranks: Mapping[Direction, tuple[str, ...]]  # never empty: rank 1 is the isolation test
    maps: tuple[MapText, ...]
    policy_chains: tuple[ChainText, ...]

    @property
    def ip(self) -> str:
        return FAMILY_KEYWORD[self.family]

    def chains(self) -> dict[str, tuple[str, ...]]:
        """The family's fixed chains and their rules: what the rank count decides."""
        f, ip = self.family, self.ip
        return {
            f"source-{f}": (
                f"{ip} saddr @{self.ranks['egress'][0]} goto egress-{f}",
                f"goto destination-{f}",
            ),
            f"egress-{f}": (
                *(f"{ip} saddr vmap @{rank}" for rank in self.ranks["egress"]),
                'drop comment "npc: no policy allows this egress"',
            ),
            f"destination-{f}": (f"{ip} daddr @{self.ranks['ingress'][0]} goto ingress-{f}", "accept"),
            f"ingress-{f}": (
                *(f"{ip} daddr vmap @{rank}" for rank in self.ranks["ingress"]),
                'drop comment "npc: no policy allows this ingress"',
            ),
        }

    @property
    def rule_count(self) -> int:
        """As the template writes them: the fixed chains', every policy chain's."""
        return sum(map(len, self.chains().values())) + sum(len(c.rules) for c in self.policy_chains)


@attrs.frozen
class Ruleset:
    """One network's table (both families'), ready to print: what ``apply`` reports on and the
    template spells."""

    network: str
    table: str
    sets: tuple[SetText, ...]  # every family's, the port lists once: the most tested first
    families: tuple[FamilyText, ...]

    @property
    def maps(self) -> tuple[MapText, ...]:
        return tuple(m for f in self.families for m in f.maps)

    @property
    def policy_chains(self) -> tuple[ChainText, ...]:
        return tuple(c for f in self.families for c in f.policy_chains)

    @property
    def forward(self) -> tuple[str, ...]:
        return forward_rules([f.family for f in self.families])

    @property
    def chain_count(self) -> int:
        """forward, the four fixed chains of each family, the policy chains."""
        return 1 + sum(4 + len(f.policy_chains) for f in self.families)

    @property
    def rule_count(self) -> int:
        return len(self.forward) + sum(f.rule_count for f in self.families)

    @property
    def element_count(self) -> int:
        return sum(len(s.elements) for s in self.sets) + sum(len(m.elements) for m in self.maps)


def build(
    lowered: Lowered,
    members: Mapping[str, Sequence[Entry]],
    outlined: Callable[[Ruleset], object] = lambda _: None,
) -> Ruleset:
    """The table. ``outlined`` is handed it without set elements as soon as that is known (the
    rank maps' count needs the pods; the sets' elements, worked out last, are most of the time):
    a first load starts on the policy chains, which name the sets but hold no element."""
    specs: list[SetSpec] = []
    families: list[FamilyText] = []
    tests: dict[str, int] = {}
    for program in lowered.families:
        specs += referenced_sets(program)
        tests.update((s.name, n) for s, n in tests_per_set(program).items())
        for ports, n in port_lists(program).items():
            name = port_list_name(ports)
            tests[name] = tests.get(name, 0) + n  # one set for both families' rules
        ranks: dict[Direction, tuple[str, ...]] = {}
        maps: list[MapText] = []
        for direction in DIRECTIONS:
            found = rank_maps(program, direction, chains_by_address(program, direction, members))
            maps += found
            ranks[direction] = tuple(m.name for m in found)
        chains = tuple(sorted((chain_text(c, program.family) for c in program.chains), key=lambda c: c.name))
        families.append(FamilyText(program.family, ranks, tuple(maps), chains))
    port_sets = list(table_port_lists(lowered).values())

    def table(filled: bool) -> Ruleset:
        sets = [set_text(s, members[s.name] if filled else ()) for s in specs] + port_sets
        # the kernel finds a set by name along the table's list, in creation order: the most
        # tested first
        ordered = tuple(sorted(sets, key=lambda s: (-tests[s.name], s.name)))
        return Ruleset(lowered.network, table_name(lowered.network), ordered, tuple(families))

    outlined(table(False))
    return table(True)


@attrs.frozen
class Part:
    """Which blocks of the table one ``nft -f`` input holds, each "" (none), "declared" (named
    without rules or elements: nft adds it if missing and leaves it as it is if not, so parts
    that name what others fill load in any order) or filled ("elements", "rules")."""

    name: str
    replace: bool = False  # create, delete and define the table: the whole table, one transaction
    maps: str = ""
    sets: str = ""
    families: str = ""  # each family's fixed chains
    policies: str = ""  # the policy chains
    forward: bool = False  # the base chain: the table's only hook


WHOLE = Part("whole", True, "elements", "elements", "rules", "rules", forward=True)
# A table not yet in the kernel, loaded by three nft processes at once (each parses its own text;
# the kernel commits them one after the other, in any order), and only then hooked in: until
# ``HOOK`` commits, the table sees no packet, so none meets half of it. A part that names a map,
# set or chain names all those before it in the whole table, in that order: whichever commits
# first, the kernel holds (and lists) them as after one ``WHOLE`` load. The maps come first so
# that the dispatch part need not name every set: the kernel finds a set by name along a list,
# so naming the independent L's 7,712 sets once more cost its load 0.7-1.2 s.
FIRST_LOAD = (
    Part("sets", maps="declared", sets="elements"),
    Part("policies", maps="declared", sets="declared", families="declared", policies="rules"),
    Part("dispatch", maps="elements", families="rules", policies="declared"),
)
HOOK = Part("hook", forward=True)


def render(ruleset: Ruleset, part: Part = WHOLE) -> str:
    """An ``nft -f`` input that atomically replaces (or first creates) the network's table; or,
    given ``part``, that part of it."""
    return _ENV.get_template("ruleset.nft.j2").render(
        version=__version__,
        network=sanitise(ruleset.network, COMMENT_MAX),
        table_comment=comment(f"npc {__version__} network {ruleset.network}"),
        r=ruleset,
        part=part,
    )


def render_ruleset(lowered: Lowered, members: Mapping[str, Sequence[Entry]]) -> str:
    return render(build(lowered, members))


def _rules(length: Mapping[str, int], chains: Sequence[str]) -> int:
    return sum(length[c] for c in chains)


def rules_per_packet(lowered: Lowered, members: Mapping[str, Sequence[Entry]]) -> int:
    """The most rules the first packet of one connection is tested against (a map lookup counts
    as one rule). The fixed counts follow the template: ``forward`` 1 + k for the k-th family
    carried (``forward_rules``: IPv4's 2, IPv6's 3 beside IPv4), ``source-<f>`` 1 or 2,
    ``destination-<f>`` 1 or 2. An isolated address no chain selects: its rank-1 drop. Else the
    rules of its chains, and either all K rank lookups and the final drop (denied), or, for
    egress, its own m lookups and then the destination side (allowed by its last chain's last
    rule)."""
    worst = 0
    for k, program in enumerate(lowered.families, 1):
        forward = 1 + k
        length = {c.name: len(rule_matches(c.matches)) for c in program.chains}
        by = {d: chains_by_address(program, d, members) for d in DIRECTIONS}
        ranks = {d: max((len(c) for c in by[d].values()), default=0) for d in DIRECTIONS}
        rules = functools.partial(_rules, length)
        ingress = [rules(c) + ranks["ingress"] + 1 if c else 1 for c in by["ingress"].values()]
        destination = 1 + max(ingress, default=1)  # the test, then ingress-<f> or accept
        paths = [forward + 2 + destination]  # a source not isolated for egress
        for c in by["egress"].values():
            paths.append(
                forward + 1 + (rules(c) + max(len(c) + destination, ranks["egress"] + 1) if c else 1)
            )
        worst = max(worst, *paths)
    return worst


_ENV = template_environment("npc.backends.nftables")
