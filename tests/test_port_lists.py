"""iptables rules of a policy chain (``render.folded``) allow exactly what its matches allow, now
that one peer's numeric and named ports become one port list (``render.PortList``): checked on
random chains against a packet model of the matches, and the kernel sets the lists make hold
each port once (``ipset restore`` refuses a port added twice)."""

from __future__ import annotations

import hypothesis.strategies as st
from hypothesis import given, settings
from npc.backends.iptables import render
from npc.lower import LONG_CHAIN, Match, SetSpec
from npc.lower import tests as peer_tests

PEERS = tuple(SetSpec("pods", 4, (f"peer{i}",), f"s4-peer{i}") for i in range(3))  # type: ignore[arg-type]
NAMED = tuple(SetSpec("port", 4, ("TCP", f"name{i}"), f"p4-name{i}") for i in range(3))
PORTS = (53, 80, 81, 82, 443, 8080)

spans = st.lists(
    st.tuples(st.sampled_from(PORTS), st.integers(0, 3)).map(lambda p: (p[0], p[0] + p[1])), max_size=3
).map(lambda found: tuple(sorted(set(found))))
matches = st.builds(
    lambda peer, protocol, ports, named: Match(peer, protocol, () if named else ports, named),
    st.sampled_from((None, *PEERS)),
    st.sampled_from((None, "TCP", "UDP", "SCTP")),
    spans,
    st.sampled_from((None, *NAMED)),
).filter(lambda m: m.protocol is not None or not (m.ports or m.named_port))


def _allows(match: Match, peer: int, protocol: str, port: int, named: frozenset[str]) -> bool:
    """The match on a packet from a pod in ``PEERS[peer]`` to a pod whose named ports in
    ``named`` are ``port`` (``named``: the named-port sets holding the destination and port)."""
    if match.peer is not None and match.peer is not PEERS[peer]:
        return False
    if match.protocol is not None and match.protocol != protocol:
        return False
    if match.named_port is not None:
        return match.named_port.name in named
    return not match.ports or any(lo <= port <= hi for lo, hi in match.ports)


def _rule_allows(rule: render.Rule, peer: int, protocol: str, port: int, named: frozenset[str]) -> bool:
    match = rule.match
    if rule.listed is not None and PEERS[peer] not in rule.listed.members:
        return False
    if rule.ports is None:
        return _allows(match, peer, protocol, port, named)
    listed = rule.ports
    # a bitmap:port matches a TCP or UDP packet's port only (the rule may have no -p)
    by_number = protocol in ("TCP", "UDP") and str(port) in listed.entries
    return _allows(match, peer, protocol, port, named) and (
        by_number or any(s.name in named for s in listed.named)
    )


@settings(max_examples=300, deadline=None)
@given(st.lists(matches, max_size=8).map(tuple))
def test_folded_rules_allow_what_the_matches_allow(found: tuple[Match, ...]) -> None:
    rules = render.folded(found)
    for rule in rules:
        if rule.ports is not None:
            assert rule.match.ports == () and rule.match.named_port is None
            entries = rule.ports.entries
            assert len(entries) == len(set(entries)) <= render.PORTS_LISTED
    for peer in range(len(PEERS)):
        for protocol in ("TCP", "UDP", "SCTP"):
            for port in (*PORTS, 84, 9999):
                for named in (frozenset(), frozenset({"p4-name0"}), frozenset({"p4-name1", "p4-name2"})):
                    want = any(_allows(m, peer, protocol, port, named) for m in found)
                    got = any(_rule_allows(r, peer, protocol, port, named) for r in rules)
                    assert got == want, (peer, protocol, port, named)


def test_tcp_and_udp_of_overlapping_spans_list_each_port_once() -> None:
    """Hypothesis found it: TCP and UDP of one peer on 80-81, 80-82, 81-83 (spans a lowering
    without passes keeps) joined into a bitmap of 80, 81, 80, 81, 82, ... which ipset refuses."""
    ports = ((80, 81), (80, 82), (81, 83))
    found = tuple(Match(PEERS[0], protocol, ports, None) for protocol in ("TCP", "UDP"))
    (rule,) = render.folded(found)
    assert rule.ports is not None and list(rule.ports.entries) == ["80", "81", "82", "83"]


def test_one_peers_ports_are_one_rule_and_each_port_one_entry() -> None:
    """80-82 and 81-83 of one peer beside a named port: one rule, ports 80 to 83 once each;
    a match allowing every port of the protocol keeps the peer's matches apart."""
    peer, named = PEERS[0], NAMED[0]
    rules = render.folded(
        (Match(peer, "TCP", ((80, 82),)), Match(peer, "TCP", ((81, 83),)), Match(peer, "TCP", (), named))
    )
    assert len(rules) == 1 and rules[0].ports is not None
    assert rules[0].ports.entries == ["80", "81", "82", "83"]
    assert rules[0].ports.named == (named,)
    every_port = (Match(peer, "TCP", ((80, 80),)), Match(peer, "TCP"), Match(peer, "TCP", (), named))
    assert all(r.ports is None for r in render.folded(every_port))


NS = tuple(SetSpec("pods", 4, (f"ns{i}",), f"s4-ns{i}") for i in range(3))  # type: ignore[arg-type]
APPS = tuple(SetSpec("pods", 4, (f"app{i}",), f"s4-app{i}") for i in range(3))  # type: ignore[arg-type]
OUT = SetSpec("pods", 4, ("out",), "s4-out")  # type: ignore[arg-type]
ADDRESSES = [
    frozenset(s.name for k, s in enumerate((*NS, *APPS, OUT)) if bits >> k & 1) for bits in range(1 << 7)
]


def _peer(ns: int, app: int, out: bool) -> SetSpec:
    """A peer of one namespace by a pod label, as ``lower`` splits it: the namespace's part and
    the label's part, maybe less the pods of a label it must not have."""
    key = (f"peer-{ns}-{app}-{out}",)
    return SetSpec("pods", 4, key, f"s4-{key[0]}", (NS[ns], APPS[app]), (OUT,) if out else ())  # type: ignore[arg-type]


def _in(spec: SetSpec, address: frozenset[str]) -> bool:
    return all((s.name in address) != out for s, out in peer_tests(spec))


parted = st.builds(
    lambda ns, app, out, protocol, port: Match(_peer(ns, app, out), protocol, ((port, port),)),
    st.integers(0, 2),
    st.integers(0, 2),
    st.booleans(),
    st.sampled_from(("TCP", "UDP")),
    st.sampled_from((80, 443)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(parted, max_size=10).map(tuple))
def test_peers_of_two_parts_fold_on_either_and_allow_what_they_allowed(found: tuple[Match, ...]) -> None:
    """Peers that are (namespace part and label part) fold into a list of whichever part varies,
    the other tested beside it; a packet is allowed by the rules exactly when by the matches."""
    rules = render.folded(found)
    assert render.chain_rules(found) <= len(found)
    for address in ADDRESSES:
        for protocol in ("TCP", "UDP"):
            for port in (80, 443):
                want = any(
                    m.protocol == protocol
                    and m.ports[0][0] == port
                    and m.peer is not None
                    and _in(m.peer, address)
                    for m in found
                )
                got = False
                for r in rules:
                    m = r.match
                    if r.ports is not None:  # TCP and UDP of one port: a bitmap, no protocol
                        if m.protocol not in (None, protocol) or str(port) not in r.ports.entries:
                            continue
                    elif m.protocol != protocol or m.ports[0][0] != port:
                        continue
                    if r.listed is not None:
                        beside = all((s.name in address) != out for s, out in r.beside)
                        got |= beside and any(s.name in address for s in r.listed.members)
                    else:
                        got |= m.peer is not None and _in(m.peer, address)
                assert got == want, (sorted(address), protocol, port)


def test_peers_of_many_namespaces_under_one_label_are_one_rule() -> None:
    """app0 in three namespaces and app1 in one, on one port: the namespaces vary under app0 (one
    rule of a list of three namespaces' parts), where varying the last test (the label) lists
    nothing (each namespace has one peer): four rules became two."""
    peers = [_peer(0, 0, False), _peer(1, 0, False), _peer(2, 0, False), _peer(0, 1, False)]
    found = tuple(Match(peer, "TCP", ((80, 80),)) for peer in peers)
    rules = render.folded(found)
    assert len(rules) == 2
    listed = [r for r in rules if r.listed is not None]
    assert [s.name for s in listed[0].listed.members] == ["s4-ns0", "s4-ns1", "s4-ns2"]  # type: ignore[union-attr]
    assert listed[0].beside == ((APPS[0], False),)


def test_two_peers_are_one_list_in_a_long_chain_only() -> None:
    """Two peers under one port saves one rule as a list: not worth a kernel set in a short
    chain, but in a chain of ``LONG_CHAIN`` matches (where packets meet many rules) it is."""
    pair = tuple(Match(peer, "TCP", ((80, 80),)) for peer in PEERS[:2])
    others = tuple(Match(PEERS[2], "TCP", ((port, port),)) for port in range(1000, 1100, 10))

    def listed(found: tuple[Match, ...]) -> list[list[str]]:
        return [[s.name for s in r.listed.members] for r in render.folded(found) if r.listed is not None]

    short = pair + others[: LONG_CHAIN - 3]
    assert listed(short) == [] and len(render.folded(short)) == len(short)
    long = pair + others[: LONG_CHAIN - 2]
    assert listed(long) == [["s4-peer0", "s4-peer1"]] and len(render.folded(long)) == len(long) - 1


def test_one_peers_tcp_and_udp_of_the_same_ports_are_one_rule_without_a_protocol() -> None:
    """TCP and UDP 53 to one peer: one rule, no -p, its ports a bitmap alone (which matches TCP
    and UDP ports only); different ports, a named port, or any peer keep two rules."""
    peer = PEERS[0]
    dns = (Match(peer, "TCP", ((53, 53),)), Match(peer, "UDP", ((53, 53),)))
    (rule,) = render.folded(dns)
    assert rule.match.protocol is None and rule.match.ports == () and rule.ports is not None
    assert rule.ports.named == () and rule.ports.entries == ["53"]
    assert len(render.folded((Match(peer, "TCP", ((53, 53),)), Match(peer, "UDP", ((54, 54),))))) == 2
    assert len(render.folded((Match(peer, "TCP", (), NAMED[0]), Match(peer, "UDP", (), NAMED[0])))) == 2
    assert len(render.folded((Match(None, "TCP", ((53, 53),)), Match(None, "UDP", ((53, 53),))))) == 2
    wide = ((1000, 1015),)  # 16 ports: more than a port list's bitmap holds
    assert len(render.folded((Match(peer, "TCP", wide), Match(peer, "UDP", wide)))) == 2
