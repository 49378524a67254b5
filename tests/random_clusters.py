"""Hypothesis strategies for random programs and inventories, and their connectivity.

The universes are deliberately tiny (three namespaces, a few label values, addresses inside one
/25 and one /121) so that random selectors, ipBlocks and named ports actually hit pods, collide,
overlap and shadow each other - which is where passes and lowering go wrong. Programs include
what the API server would reject but the IR can hold (empty ``In`` values, dead ipBlocks, empty
peer lists), because passes must be right for every IR value.
"""

from __future__ import annotations

import importlib
import ipaddress
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import attrs
from hypothesis import strategies as st
from npc.inventory import Inventory, NamedPort, Namespace, Pod
from npc.ir import (
    NAMESPACE_NAME_LABEL,
    PROTOCOLS,
    Address,
    IPBlock,
    Peer,
    PodPeer,
    Policy,
    PortSpec,
    Program,
    Requirement,
    Rule,
    Selector,
    namespace_selector,
)

NAMESPACES = ("a", "b", "c")
POD_KEYS = ("app", "tier")
NS_KEYS = ("team", NAMESPACE_NAME_LABEL)
VALUES = ("x", "y", "z")
PORT_NAMES = ("http", "metrics")
PORT_NUMBERS = (80, 81, 8080)
V4_BASE = ipaddress.ip_network("10.0.0.0/25")
V6_BASE = ipaddress.ip_network("fd00::/121")
# Probed besides the pods: inside and outside the ipBlock universes, both families.
OUTSIDERS: tuple[Address, ...] = tuple(
    ipaddress.ip_address(a) for a in ("10.0.0.100", "192.168.1.1", "fd00::64", "2001:db8::1")
)
PROBE_PORTS = (79, 80, 81, 82, 8080)

Connection = tuple[Address, Address, str, int]
BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


# Not ``strategies.selectors``/``policies`` (even with ``SMALL``) on purpose: those draw only what the
# API server accepts, these also draw IR-only values (``In`` with no values, empty peer lists, policies
# governing no direction), and the namespace selectors draw keys of their own (``team``, the name label).
def _requirement(
    keys: tuple[str, ...], values: tuple[str, ...], listed: int
) -> st.SearchStrategy[Requirement]:
    key = st.sampled_from(keys)
    lists = st.builds(
        Requirement, key, st.sampled_from(("In", "NotIn")), st.lists(st.sampled_from(values), max_size=listed)
    )
    bare = st.builds(Requirement, key, st.sampled_from(("Exists", "DoesNotExist")))
    return st.one_of(lists, bare)


def selectors(
    keys: tuple[str, ...] = POD_KEYS, values: tuple[str, ...] = VALUES, listed: int = 2
) -> st.SearchStrategy[Selector]:
    """``listed``: the most values an ``In`` or ``NotIn`` requirement lists."""
    return st.lists(_requirement(keys, values, listed), max_size=2).map(Selector)


namespace_selectors = st.one_of(
    st.sampled_from(NAMESPACES).map(namespace_selector), selectors(NS_KEYS, VALUES + NAMESPACES)
)
pod_peers = st.builds(PodPeer, namespace_selectors, selectors())


@st.composite
def _subnet(draw: st.DrawFn, within: ipaddress.IPv4Network | ipaddress.IPv6Network, min_extra: int) -> object:
    extra = draw(st.integers(min_extra, within.max_prefixlen - within.prefixlen))
    subnets = list(within.subnets(prefixlen_diff=extra)) if extra else [within]
    return draw(st.sampled_from(subnets))


@st.composite
def ip_blocks(draw: st.DrawFn) -> IPBlock:
    base = draw(st.sampled_from((V4_BASE, V6_BASE)))
    if draw(st.integers(0, 9)) == 0:  # now and then the whole family, which ipset cannot hold as /0
        cidr = ipaddress.ip_network("0.0.0.0/0" if base.version == 4 else "::/0")
        excepts = draw(st.lists(_subnet(base, 0), max_size=2))
        return IPBlock(cidr, excepts)
    cidr = draw(_subnet(base, 0))
    excepts = draw(st.lists(_subnet(cidr, 0), max_size=2))  # type: ignore[arg-type]
    return IPBlock(cidr, excepts)


peers: st.SearchStrategy[Peer] = st.one_of(pod_peers, pod_peers, ip_blocks())
port_specs = st.one_of(
    st.builds(PortSpec, st.sampled_from(PROTOCOLS)),
    st.builds(PortSpec, st.sampled_from(PROTOCOLS), st.integers(79, 82)),
    st.builds(
        lambda proto, lo, span: PortSpec(proto, lo, lo + span),
        st.sampled_from(PROTOCOLS),
        st.integers(79, 82),
        st.integers(1, 3),
    ),
    st.builds(PortSpec, st.sampled_from(PROTOCOLS), st.sampled_from(PORT_NAMES)),
)
rules = st.builds(Rule, st.one_of(st.none(), st.lists(peers, max_size=3)), st.lists(port_specs, max_size=3))
rule_lists = st.one_of(st.none(), st.lists(rules, max_size=4))
policies = st.builds(
    Policy,
    st.sampled_from(NAMESPACES),
    st.sampled_from(("p0", "p1", "p2", "p3")),
    selectors(),
    rule_lists,
    rule_lists,
)
programs = st.lists(policies, max_size=6).map(Program)


@st.composite
def inventories(draw: st.DrawFn) -> Inventory:
    labels = st.dictionaries(st.sampled_from(POD_KEYS), st.sampled_from(VALUES), max_size=2)
    teams = st.dictionaries(st.just("team"), st.sampled_from(VALUES))
    namespaces = tuple(Namespace(name, {NAMESPACE_NAME_LABEL: name, **draw(teams)}) for name in NAMESPACES)
    count = draw(st.integers(1, 7))
    v4 = draw(st.lists(st.integers(1, 126), min_size=count, max_size=count, unique=True))
    v6 = draw(st.lists(st.integers(1, 126), min_size=count, max_size=count, unique=True))
    pods = []
    for i in range(count):
        stack = draw(st.sampled_from(("4", "4", "46", "6")))
        ips = [V4_BASE[v4[i]]] if "4" in stack else []
        ips += [V6_BASE[v6[i]]] if "6" in stack else []
        ports = draw(
            st.lists(
                st.builds(
                    NamedPort,
                    st.sampled_from(PORT_NAMES),
                    st.sampled_from(("TCP", "UDP")),
                    st.sampled_from(PORT_NUMBERS),
                ),
                max_size=3,
            )
        )
        pods.append(Pod(draw(st.sampled_from(NAMESPACES)), f"pod{i}", draw(labels), tuple(ips), tuple(ports)))
    return Inventory(namespaces, tuple(pods))


def addresses(inventory: Inventory) -> list[Address]:
    return [ip for pod in inventory.pods for ip in pod.ips] + list(OUTSIDERS)


def connections(inventory: Inventory) -> Iterable[Connection]:
    """Every probe: all address pairs of one family, every protocol, ports around the named ones."""
    ips = addresses(inventory)
    for src in ips:
        for dst in ips:
            if src.version == dst.version:
                for protocol in PROTOCOLS:
                    for port in PROBE_PORTS:
                        yield (src, dst, protocol, port)


def connectivity(
    allowed: Callable[[Address, Address, str, int], bool], inventory: Inventory
) -> frozenset[Connection]:
    """The allowed probes: two deciders agree exactly when these sets are equal."""
    return frozenset(c for c in connections(inventory) if allowed(*c))


def generated_cluster(
    tmp: Path, seed: int, pod_seed: int, size: str = "S", generator: str = "generate"
) -> Path:
    """A realistic cluster from a benchmark generator (``generate`` or ``generate_mixed``):
    ``policies/`` and ``inventory.json``."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from generate import SIZES

        write_cluster = importlib.import_module(generator).write_cluster
    finally:
        sys.path.remove(str(BENCHMARKS))
    out = tmp / f"cluster-{generator}-{size}-{seed}-{pod_seed}"
    write_cluster(attrs.evolve(SIZES[size], seed=seed, pod_seed=pod_seed), out)
    return out
