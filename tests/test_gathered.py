"""Peers of one namespace each that a chain tests by parts, on the same ports, are one set of
their pods (``lower._Lowerer._gathered``) where lists of their parts would leave three rules or
more (two in a chain of ``LONG_CHAIN`` matches), with the peers of one namespace each tested by
one set on those ports. The set must hold exactly the peers' pods: no
pod of one peer's namespace with another peer's labels."""

from __future__ import annotations

import ipaddress

from dataplane_sim import Dataplane
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nft_sim import Ruleset
from npc import lower
from npc.backends import get as get_backend
from npc.backends.base import Options
from npc.evaluate import Evaluator
from npc.inventory import Inventory
from npc.ir import (
    IPBlock,
    PodPeer,
    Policy,
    PortSpec,
    Program,
    Requirement,
    Rule,
    Selector,
    namespace_selector,
)
from npc.pipeline import compile_program
from random_clusters import NAMESPACES, POD_KEYS, VALUES, connectivity, inventories

DB = Selector((Requirement("app", "In", ("db",)),))
HTTP = (PortSpec("TCP", 80),)


def _peer(namespace: str, **labels: str) -> PodPeer:
    return PodPeer(
        namespace_selector(namespace), Selector(Requirement(k, "In", (v,)) for k, v in labels.items())
    )


def _chain(rules: tuple[Rule, ...]) -> lower.Chain:
    (chain,) = lower.lower(Program((Policy("db", "clients", DB, ingress=rules),))).family(4).chains
    return chain


def _peer_keys(chain: lower.Chain) -> list[object]:
    return [m.peer.key for m in chain.matches if m.peer is not None]


def _sizes(chain: lower.Chain) -> list[int]:
    """How many peers each match's set is of, smallest first."""
    return sorted(len(k) for k in _peer_keys(chain) if isinstance(k, tuple))


def test_three_peers_of_different_namespaces_and_selectors_are_one_set() -> None:
    peers = (_peer("a", role="r1"), _peer("b", role="r2"), _peer("c", role="r1", tier="t"))
    assert _peer_keys(_chain((Rule(peers, HTTP),))) == [lower.pod_union(peers)]


def test_two_such_peers_are_one_set_only_in_a_long_chain() -> None:
    pair = (_peer("a", role="r1"), _peer("b", role="r2"))
    short = _chain((Rule(pair, HTTP),))
    assert _sizes(short) == [1, 1]
    # other matches on ports of their own make the chain long: the pair becomes one set
    others = tuple(
        Rule((IPBlock(ipaddress.ip_network(f"192.168.{i}.0/24")),), (PortSpec("TCP", 1000 + i),))
        for i in range(lower.LONG_CHAIN - 1)
    )
    long = _chain((Rule(pair, HTTP), *others))
    assert lower.pod_union(pair) in _peer_keys(long)
    assert len(long.matches) == lower.LONG_CHAIN - 1 + 1


def test_peers_of_one_set_each_on_the_same_ports_join_a_gathering() -> None:
    """Beside two peers tested by parts, a union of local peers (one set, no parts) on the same
    ports would be a third rule: the four peers are one set, one rule. Beside one peer by parts
    it would be a second rule only: both stay."""
    pair = (_peer("a", role="r1"), _peer("b", role="r2"))
    local = (_peer("db", role="x"), _peer("db", role="y"))
    assert _peer_keys(_chain((Rule(pair, HTTP), Rule(local, HTTP)))) == [lower.pod_union((*pair, *local))]
    alone = _chain((Rule(pair[:1], HTTP), Rule(local, HTTP)))
    assert sorted(map(len, _peer_keys(alone))) == [1, 2]  # type: ignore[arg-type]


def test_peers_differing_in_their_namespace_alone_stay_parts() -> None:
    """The same selector in three namespaces is one rule already (a list of the namespace
    parts beside the selector's part): no copy of their pods."""
    peers = tuple(_peer(ns, role="r1") for ns in ("a", "b", "c"))
    assert _sizes(_chain((Rule(peers, HTTP),))) == [1, 1, 1]


def test_peers_of_one_namespace_stay_parts() -> None:
    """Three rules' peers of one namespace, each its selector, are one rule already: the
    namespace's part beside a list of the selectors' parts. Nor are two namespaces' four peers
    gathered: two rules as lists (a pair of selectors in each namespace). (A rule's own peers of
    one namespace are one set of their pods anyway: ``_peer_keys``.)"""
    rules = tuple(Rule((_peer("a", app=v),), HTTP) for v in ("x", "y", "z"))
    assert _sizes(_chain(rules)) == [1, 1, 1]
    four = tuple(Rule((_peer(ns, app=v),), HTTP) for ns in ("a", "b") for v in ("x", "y"))
    assert _sizes(_chain(four)) == [1, 1, 1, 1]


def test_peers_on_different_ports_are_not_gathered() -> None:
    rules = (
        Rule((_peer("a", role="r1"),), HTTP),
        Rule((_peer("b", role="r2"),), (PortSpec("TCP", 443),)),
        Rule((_peer("c", role="r3"),), (PortSpec("UDP", 80),)),
    )
    assert _sizes(_chain(rules)) == [1, 1, 1]


# peers of one namespace by name, selectors of labels with one value (so tested by parts)
_split_peers = st.builds(
    PodPeer,
    st.sampled_from(NAMESPACES).map(namespace_selector),
    st.lists(
        st.builds(
            Requirement, st.sampled_from(POD_KEYS), st.just("In"), st.sampled_from(VALUES).map(lambda v: (v,))
        ),
        min_size=1,
        max_size=2,
    ).map(Selector),
)
_ports = st.sampled_from(((PortSpec("TCP", 80),), (PortSpec("TCP", "http"),), ()))
_rules = st.builds(Rule, st.lists(_split_peers, min_size=1, max_size=4), _ports)
_gathering = st.lists(
    st.builds(
        Policy,
        st.sampled_from(NAMESPACES),
        st.sampled_from(("p0", "p1", "p2")),
        st.just(Selector((Requirement("app", "In", ("x",)),))),
        st.lists(_rules, min_size=1, max_size=3),
        st.one_of(st.none(), st.lists(_rules, max_size=3)),
    ),
    min_size=1,
    max_size=4,
    unique_by=lambda p: (p.namespace, p.name),  # as the API server keeps them
).map(Program)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(program=_gathering, inventory=inventories())
def test_gathered_peers_decide_like_the_evaluator(program: Program, inventory: Inventory) -> None:
    """Policies of one selector whose rules list several split peers: their chains gather them,
    and iptables and nftables still allow exactly what the policies do."""
    compiled = compile_program(program, inventory)
    expected = connectivity(Evaluator(program, inventory).allowed, inventory)
    iptables = Dataplane(get_backend("iptables").render(compiled, Options()))
    assert connectivity(iptables.allowed, inventory) == expected
    nft = Ruleset(get_backend("nftables").render(compiled, Options())["ruleset.nft"])
    assert connectivity(nft.allowed, inventory) == expected
    reordered = compile_program(Program(tuple(reversed(program.policies))), inventory)
    assert reordered.lowered == compiled.lowered  # same input, any order
