"""iptables rules of a policy chain (``render.folded``) allow exactly what its matches allow, now
that one peer's numeric and named ports become one port list (``render.PortList``): checked on
random chains against a packet model of the matches, and the kernel sets the lists make hold
each port once (``ipset restore`` refuses a port added twice)."""

from __future__ import annotations

import hypothesis.strategies as st
from hypothesis import given, settings
from npc.backends.iptables import render
from npc.lower import Match, SetSpec

PEERS = tuple(SetSpec("pods", 4, (f"peer{i}",), f"s4-peer{i}") for i in range(3))  # type: ignore[arg-type]
NAMED = tuple(SetSpec("port", 4, ("TCP", f"name{i}"), f"p4-name{i}") for i in range(3))
PORTS = (53, 80, 81, 82, 443, 8080)

spans = st.lists(
    st.tuples(st.sampled_from(PORTS), st.integers(0, 3)).map(lambda p: (p[0], p[0] + p[1])), max_size=3
).map(lambda found: tuple(sorted(set(found))))
matches = st.builds(
    lambda peer, protocol, ports, named: Match(peer, protocol, () if named else ports, named),
    st.sampled_from((None, *PEERS)),
    st.sampled_from((None, "TCP", "UDP")),
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
    by_number = str(port) in listed.entries
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
        for protocol in ("TCP", "UDP"):
            for port in (*PORTS, 84, 9999):
                for named in (frozenset(), frozenset({"p4-name0"}), frozenset({"p4-name1", "p4-name2"})):
                    want = any(_allows(m, peer, protocol, port, named) for m in found)
                    got = any(_rule_allows(r, peer, protocol, port, named) for r in rules)
                    assert got == want, (peer, protocol, port, named)


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
