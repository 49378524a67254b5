"""A tiny iptables + ipset interpreter for npc's own artefacts, to check them without a kernel.

It reads the rendered text (``ipsets``, ``rules.v4``, ``rules.v6``), not the lowered program, so
it checks lowering *and* rendering; it understands exactly the matches and targets npc emits and
fails loudly on anything else. A packet is a *new* connection entering FORWARD (built-in policy
ACCEPT); conntrack state matches never hold for it. ``hash:net`` follows the kernel: the most
specific entry containing the address decides, and a ``nomatch`` entry means no match.
"""

from __future__ import annotations

import ipaddress
import shlex
from collections import defaultdict
from collections.abc import Mapping

import attrs
from npc.ir import Address, Network


@attrs.define
class _Set:
    type: str
    addresses: set[Address] = attrs.field(factory=set)
    nets: dict[Network, bool] = attrs.field(factory=dict)  # net -> nomatch
    ports: set[tuple[Address, str, int]] = attrs.field(factory=set)
    numbers: set[int] = attrs.field(factory=set)  # bitmap:port: port numbers of TCP or UDP
    marks: dict[Address, tuple[int, int]] = attrs.field(factory=dict)  # skbinfo: (value, mask)
    members: list[str] = attrs.field(factory=list)  # list:set: the sets it holds, by name

    def add(self, member: str, nomatch: bool) -> None:
        if self.type == "hash:ip":
            self.addresses.add(ipaddress.ip_address(member))
        elif self.type == "hash:net":
            self.nets[ipaddress.ip_network(member)] = nomatch
        elif self.type == "list:set":
            assert not nomatch
            self.members.append(member)
        elif self.type == "bitmap:port":
            assert not nomatch
            self.numbers.add(int(member))
        elif self.type == "hash:ip,port":
            ip, _, port = member.rpartition(",")
            protocol, _, number = port.partition(":")
            self.ports.add((ipaddress.ip_address(ip), protocol, int(number)))
        else:
            raise ValueError(f"unknown set type {self.type}")

    def holds(self, address: Address, protocol: str = "", port: int = 0) -> bool:
        if self.type == "hash:ip":
            return address in self.addresses
        if self.type == "hash:ip,port":
            return (address, protocol.lower(), port) in self.ports
        if self.type == "bitmap:port":  # the flags' first direction: the port's
            # of a TCP or UDP packet only: the kernel's ip_set_get_ip_port refuses every other
            return protocol.lower() in ("tcp", "udp") and port in self.numbers
        best = max(
            (n for n in self.nets if n.version == address.version and address in n),
            key=lambda n: n.prefixlen,
            default=None,
        )
        return best is not None and not self.nets[best]


def parse_ipsets(text: str) -> dict[str, _Set]:
    sets: dict[str, _Set] = {}
    for line in text.splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "create":
            sets[words[1]] = _Set(words[2])
        elif words[0] == "add" and sets[words[1]].type == "list:set":
            if words[2] not in sets:  # as the kernel: a member exists before the list holds it
                raise ValueError(f"list {words[1]} holds {words[2]}, which is not created before it")
            sets[words[1]].add(words[2], False)
        elif words[0] == "add" and words[3:4] == ["skbmark"]:
            value, mask = (int(x, 16) for x in words[4].split("/"))
            sets[words[1]].add(words[2], False)
            sets[words[1]].marks[ipaddress.ip_address(words[2])] = (value, mask)
        elif words[0] == "add":
            sets[words[1]].add(words[2], words[3:] == ["nomatch"])
        else:
            raise ValueError(f"unexpected ipset line {line!r}")
    return sets


@attrs.frozen
class Packet:
    src: Address
    dst: Address
    protocol: str
    port: int


@attrs.frozen
class _Rule:
    conditions: tuple[tuple[str, ...], ...]
    target: str
    target_args: tuple[str, ...]
    goto: bool = False


def _parse_rule(words: list[str]) -> _Rule:
    conditions: list[tuple[str, ...]] = []
    i = 0
    while i < len(words):
        w = words[i]
        if w in ("-j", "-g"):
            return _Rule(tuple(conditions), words[i + 1], tuple(words[i + 2 :]), w == "-g")
        if w in ("-p", "-s", "-d"):
            conditions.append(({"-p": "proto", "-s": "source", "-d": "destination"}[w], words[i + 1]))
            i += 2
        elif w == "-m":
            module = words[i + 1]
            i += 2
            args = []
            while i < len(words) and words[i] not in ("-m", "-j", "-g", "-p", "-s", "-d"):
                args.append(words[i])
                i += 1
            conditions.append((module, *args))
        else:
            raise ValueError(f"unexpected rule word {w!r} in {words}")
    raise ValueError(f"rule without target: {words}")


def _port_in(spec: str, port: int) -> bool:
    for part in spec.split(","):
        lo, _, hi = part.partition(":")
        if int(lo) <= port <= int(hi or lo):
            return True
    return False


class Table:
    """One family's mangle and filter tables as npc renders them, plus the sets they refer to.
    Chains are keyed by table and name; a packet meets mangle's FORWARD first, then filter's."""

    def __init__(self, rules_text: str, sets: Mapping[str, _Set]) -> None:
        self.sets = sets
        self.walked = 0
        self.set_tests = 0  # of the last ``run``: ipset lookups, a packet's main cost (match_cost.py)
        self.tables: dict[str, dict[str, list[_Rule]]] = defaultdict(lambda: defaultdict(list))
        self.chains = self.tables["filter"]
        for line in rules_text.splitlines():
            if line.startswith("*"):
                self.chains = self.tables[line[1:]]
            elif line.startswith(":"):
                self.chains[line[1:].split()[0]] = []
            elif line.startswith("-A "):
                words = shlex.split(line)
                self.chains[words[1]].append(_parse_rule(words[2:]))
            elif line.startswith("-I "):
                words = shlex.split(line)
                index = int(words[2]) - 1 if words[2].isdigit() else 0
                rest = words[3:] if words[2].isdigit() else words[2:]
                self.chains[words[1]].insert(index, _parse_rule(rest))
            elif line.startswith(("-D ", "-X ")):
                raise ValueError(f"compile output should not delete anything: {line!r}")

    def _holds(self, cond: tuple[str, ...], packet: Packet, mark: int) -> bool:
        kind = cond[0]
        if kind == "proto":
            return packet.protocol.lower() == cond[1]
        if kind in ("source", "destination"):
            return (packet.src if kind == "source" else packet.dst) in ipaddress.ip_network(cond[1])
        if kind == "comment":
            return True
        if kind == "conntrack":  # a new connection is never RELATED/ESTABLISHED
            assert cond[-2:] == ("--ctstate", "RELATED,ESTABLISHED"), cond
            return cond[1] == "!"
        if kind == "mark":
            value, mask = (int(x, 16) for x in cond[2].split("/"))
            return mark & mask == value
        if kind == "set" and cond[1] == "!":
            return not self._holds((kind, *cond[2:]), packet, mark)
        if kind == "set":
            assert cond[1] == "--match-set"
            self.set_tests += 1
            name, dirs = cond[2], cond[3].split(",")
            address = packet.src if dirs[0] == "src" else packet.dst
            found = self.sets[name]
            if len(dirs) == 2:  # a list passes both directions on to each member
                assert dirs == ["dst", "dst"]
                held = [self.sets[m] for m in found.members] if found.type == "list:set" else [found]
                return any(s.holds(address, packet.protocol, packet.port) for s in held)
            if found.type == "list:set":  # any member holding the address (a nomatch: not that one)
                return any(self.sets[member].holds(address) for member in found.members)
            return found.holds(address)
        if kind in ("tcp", "udp", "sctp"):
            assert cond[1] == "--dport"
            return packet.protocol.lower() == kind and _port_in(cond[2], packet.port)
        if kind == "multiport":
            assert cond[1] == "--dports"
            return _port_in(cond[2], packet.port)
        raise ValueError(f"unknown match {cond}")

    def run(self, packet: Packet) -> bool:
        """Whether FORWARD (policy ACCEPT) lets the first packet of this connection through;
        ``walked``: how many of npc's rules it was tested against (npc's are all one table's)."""
        mark = 0
        self.walked = self.set_tests = 0
        for table in ("mangle", "filter"):
            self.chains = self.tables[table]
            verdict, mark = self._walk("FORWARD", packet, mark, 0)
            if verdict == "DROP":
                return False
        return True

    def _walk(self, chain: str, packet: Packet, mark: int, depth: int) -> tuple[str | None, int]:
        assert depth < 40, "jump loop"
        for rule in self.chains[chain]:
            self.walked += 1
            if not all(self._holds(c, packet, mark) for c in rule.conditions):
                continue
            if rule.goto:  # the target's end returns to whoever called this chain
                return self._walk(rule.target, packet, mark, depth + 1)
            if rule.target == "SET":
                assert rule.target_args[0] == "--map-set" and rule.target_args[3] == "--map-mark"
                name, side = rule.target_args[1], rule.target_args[2]
                found = self.sets[name].marks.get(packet.src if side == "src" else packet.dst)
                if found is not None:
                    mark = (mark & ~found[1]) ^ found[0]
            elif rule.target == "MARK":
                assert rule.target_args[0] == "--set-xmark"
                value, mask = (int(x, 16) for x in rule.target_args[1].split("/"))
                mark = (mark & ~mask) ^ value
            elif rule.target == "RETURN":
                return None, mark
            elif rule.target in ("DROP", "ACCEPT"):
                return rule.target, mark
            else:
                verdict, mark = self._walk(rule.target, packet, mark, depth + 1)
                if verdict:
                    return verdict, mark
        return None, mark


class Dataplane:
    """Both families' tables over one ``ipsets`` file: decides connections like the kernel would."""

    def __init__(self, files: Mapping[str, str]) -> None:
        sets = parse_ipsets(files["ipsets"])
        self.tables = {4: Table(files["rules.v4"], sets), 6: Table(files["rules.v6"], sets)}

    def allowed(self, src: Address, dst: Address, protocol: str, port: int) -> bool:
        if src.version != dst.version:
            return False
        return self.tables[src.version].run(Packet(src, dst, protocol, port))
