"""A tiny nftables interpreter for npc's own ``ruleset.nft``, to check it without a kernel.

It reads the rendered text, not the lowered program, so it checks rendering as well as lowering;
it understands exactly the statements npc emits and fails loudly on anything else. Chain calls
follow the kernel: ``jump`` returns to the next rule when the called chain ends without a
verdict, ``goto`` does not; a base chain that ends applies its policy (accept). A packet is a
*new* connection entering the forward hook, so ``ct state established,related`` never holds.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from collections.abc import Iterable, Iterator

import attrs
from npc.ir import Address

_RANGE = re.compile(r"^(?P<lo>[^-]+)-(?P<hi>.+)$")


@attrs.define
class _Set:
    type: str
    interval: bool = False
    elements: list[str] = attrs.field(factory=list)

    def holds(self, key: tuple[object, ...]) -> bool:
        if " . " in self.type:
            address, protocol, port = key
            return f"{address} . {protocol} . {port}" in self.elements
        (address,) = key
        assert isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address)
        if not self.interval:
            return str(address) in self.elements
        for element in self.elements:
            match = _RANGE.match(element)
            if match and "/" not in element:
                lo, hi = ipaddress.ip_address(match["lo"]), ipaddress.ip_address(match["hi"])
                if lo.version == address.version and lo <= address <= hi:  # type: ignore[operator]
                    return True
            elif address in ipaddress.ip_network(element):
                return True
        return False


@attrs.frozen
class Packet:
    src: Address
    dst: Address
    protocol: str  # TCP, UDP, SCTP
    port: int


def _words(rule: str) -> list[str]:
    """shlex words with braces and commas as their own words."""
    lexer = shlex.shlex(rule, posix=True, punctuation_chars="{},")
    lexer.wordchars += ".:/-@_"
    return list(lexer)


def _port_spec(words: list[str], i: int) -> tuple[list[tuple[int, int]], int]:
    items: list[str] = []
    if words[i] == "{":
        i += 1
        while words[i] != "}":
            if words[i] != ",":
                items.append(words[i])
            i += 1
        i += 1
    else:
        items.append(words[i])
        i += 1
    return _spans(items), i


def _spans(items: Iterable[str]) -> list[tuple[int, int]]:
    """Ports and ``lo-hi`` ranges as inclusive spans."""
    spans = []
    for item in items:
        lo, _, hi = item.partition("-")
        spans.append((int(lo), int(hi or lo)))
    return spans


class Ruleset:
    """One ``nft -f`` file as npc writes it: one ``inet`` table of sets, maps and chains (both
    families': their names differ by family, but for ``forward`` and the port lists, which both
    families' rules share)."""

    def __init__(self, text: str) -> None:
        self.sets: dict[str, _Set] = {}
        self.maps: dict[str, dict[str, str]] = {}
        self.chains: dict[str, list[list[str]]] = {}
        self.base: list[str] = []
        lines = [line.strip() for line in text.splitlines()]
        lines = [line for line in lines if line and not line.startswith("#")]
        name = lines[0].split()[2]
        expected = [f"table inet {name} {{}}", f"delete table inet {name}", f"table inet {name} {{"]
        assert lines[:3] == expected and lines[-1] == "}", lines[:3]
        assert sum(line.startswith("table ") for line in lines) == 2, "one table"
        self.table = name
        it = iter(lines[3:-1])
        for line in it:
            words = line.split()
            if words[0] == "comment":
                continue
            if words[0] in ("set", "map"):
                assert words[1] not in self.sets and words[1] not in self.maps, f"{words[1]} twice"
                self._parse_set(words[0], words[1], it)
            elif words[0] == "chain":
                assert words[1] not in self.chains, f"chain {words[1]} twice"
                self._parse_chain(words[1], it)
            else:
                raise ValueError(f"unexpected table line {line!r}")

    def _parse_set(self, kind: str, name: str, it: Iterator[str]) -> None:
        spec = _Set("")
        for line in it:
            if line == "}":
                break
            if line.startswith("type "):
                spec.type = line[5:]
            elif line == "flags interval":
                spec.interval = True
            elif line == "elements = {":
                for element in it:
                    if element == "}":
                        break
                    spec.elements.append(element.rstrip(","))
            else:
                raise ValueError(f"unexpected {kind} line {line!r}")
        if kind == "set":
            self.sets[name] = spec
        else:
            assert spec.type.endswith(" : verdict"), spec.type
            self.maps[name] = dict(e.split(" : ", 1) for e in spec.elements)

    def _parse_chain(self, name: str, it: Iterator[str]) -> None:
        rules: list[list[str]] = []
        for line in it:
            if line == "}":
                break
            if line.startswith("comment "):
                continue
            if line.startswith("type filter hook forward"):
                assert line == "type filter hook forward priority filter; policy accept;", line
                self.base.append(name)
                continue
            rules.append(_words(line))
        self.chains[name] = rules

    # -- updates ----------------------------------------------------------------------------------
    def play(self, script: str) -> None:
        """The statements npc's updates write (``nftables.members``), applied as nft would; any
        other statement, or one naming another table or a missing object, fails loudly."""
        for line in script.splitlines():
            if not line:
                continue
            verb, noun, family, table, name, *rest = line.split(" ", 5) + [""] * (5 - line.count(" "))
            assert (family, table) == ("inet", self.table), line
            body = " ".join(rest).strip()
            if noun == "element":
                assert body.startswith("{ ") and body.endswith(" }"), line
                elements = body[2:-2].split(", ")
                if name in self.maps:
                    if verb == "add":
                        self.maps[name].update(e.split(" : ", 1) for e in elements)
                    else:
                        for key in elements:
                            del self.maps[name][key]
                elif verb == "add":
                    self.sets[name].elements += [e for e in elements if e not in self.sets[name].elements]
                else:
                    for key in elements:
                        self.sets[name].elements.remove(key)
            elif (verb, noun) == ("add", "set"):
                match = re.fullmatch(r"\{ type (.+?);( flags interval;)? \}", body)
                assert match and name not in self.sets, line
                self.sets[name] = _Set(match[1], bool(match[2]))
            elif (verb, noun) == ("add", "chain"):
                assert not body and name not in self.chains, line
                self.chains[name] = []
            elif (verb, noun) == ("add", "rule"):
                self.chains[name].append(_words(body))
            elif (verb, noun) == ("flush", "chain"):
                self.chains[name] = []
            elif (verb, noun) == ("delete", "chain"):
                del self.chains[name]
            elif (verb, noun) == ("delete", "set"):
                del self.sets[name]
            else:
                raise ValueError(f"unknown statement {line!r}")

    def state(self) -> tuple[object, ...]:
        """Everything a full load defines, in a form two loads compare by (element order aside)."""
        return (
            {n: (s.type, s.interval, sorted(s.elements)) for n, s in self.sets.items()},
            self.maps,
            self.chains,
        )

    # -- evaluation -------------------------------------------------------------------------------
    def allowed(self, src: Address, dst: Address, protocol: str, port: int) -> bool:
        if src.version != dst.version:
            return False
        packet = Packet(src, dst, protocol, port)
        return all(self._walk(chain, packet, 0) != "drop" for chain in self.base)

    def _walk(self, chain: str, packet: Packet, depth: int) -> str | None:
        assert depth < 16, "nft jump stack exhausted"
        for words in self.chains[chain]:
            verdict = self._rule(words, packet)
            if verdict is None:
                continue
            kind, _, target = verdict.partition(" ")
            if kind in ("accept", "drop"):
                return kind
            if kind == "goto":
                return self._walk(target, packet, depth + 1)
            if kind == "jump":
                result = self._walk(target, packet, depth + 1)
                if result is not None:
                    return result
                continue
            raise ValueError(f"unknown verdict {verdict!r}")
        return None

    def _rule(self, words: list[str], packet: Packet) -> str | None:
        """The rule's verdict if every match holds, else None."""
        i = 0
        family = packet.src.version
        while i < len(words):
            w = words[i]
            if w in ("ip", "ip6"):
                if (w == "ip") != (family == 4):
                    return None
                field = words[i + 1]
                address = packet.src if field == "saddr" else packet.dst
                assert field in ("saddr", "daddr"), words
                if words[i + 2 : i + 4] == ["!", "="]:  # not in a set (the lexer splits ``!=``)
                    assert words[i + 4].startswith("@"), words
                    if self.sets[words[i + 4].removeprefix("@")].holds((address,)):
                        return None
                    i += 5
                    continue
                if words[i + 2] == "vmap":
                    name = words[i + 3].removeprefix("@")
                    return self.maps[name].get(str(address))
                if words[i + 2] == ".":
                    assert words[i + 3 : i + 8] == ["meta", "l4proto", ".", "th", "dport"], words
                    key: tuple[object, ...] = (address, packet.protocol.lower(), packet.port)
                    name = words[i + 8].removeprefix("@")
                    i += 9
                elif not words[i + 2].startswith("@"):  # a CIDR in the rule itself
                    if address not in ipaddress.ip_network(words[i + 2]):
                        return None
                    i += 3
                    continue
                else:
                    key = (address,)
                    name = words[i + 2].removeprefix("@")
                    i += 3
                if name in self.maps:  # a map's keys as a set (rank 1: the isolation test)
                    assert len(key) == 1, words
                    if str(address) not in self.maps[name]:
                        return None
                elif not self.sets[name].holds(key):
                    return None
            elif w in ("tcp", "udp", "sctp"):
                assert words[i + 1] == "dport", words
                if words[i + 2].startswith("@"):  # a port list: a named set of services
                    listed = self.sets[words[i + 2][1:]]
                    assert listed.type == "inet_service", listed
                    spans = _spans(listed.elements)
                    i += 3
                else:
                    spans, i = _port_spec(words, i + 2)
                if packet.protocol.lower() != w or not any(lo <= packet.port <= hi for lo, hi in spans):
                    return None
            elif w == "meta" and words[i + 1] == "l4proto":
                if packet.protocol.lower() != words[i + 2]:
                    return None
                i += 3
            elif w == "meta" and words[i + 1] == "nfproto":
                assert words[i + 2] in ("ipv4", "ipv6"), words
                if words[i + 2] != f"ipv{family}":
                    return None
                i += 3
            elif w == "ct":
                assert words[i + 1] == "state", words
                return None  # a new connection
            elif w in ("accept", "drop", "goto", "jump"):
                verdict = w if w in ("accept", "drop") else f"{w} {words[i + 1]}"
                rest = words[i + (1 if w in ("accept", "drop") else 2) :]
                assert not rest or rest[0] == "comment", words
                return verdict
            else:
                raise ValueError(f"unknown rule word {w!r} in {words}")
        raise ValueError(f"rule without verdict: {words}")
