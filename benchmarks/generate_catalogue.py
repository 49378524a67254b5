"""A third, independently shaped generator: each namespace's policies drawn at random from a
catalogue of the shapes real policy folders hold, the awkward ones included.

``generate.py`` writes one template per app and ``generate_mixed.py`` one per tenant component;
both are regular. Here every namespace draws its own policies, so no one shape dominates and the
worst combinations meet: a rule that lists several apps as separate peers (three to six
``podSelector`` peers in one ``from``), port lists of one to six ports, value lists longer than
four, ``Exists`` and ``NotIn`` targets, ``namespaceSelector`` by ``NotIn`` and by value lists
(the team and one, two or five partner teams, two environments, shared namespaces by name), several ``ipBlock``
peers, allow-all egress, ports-only rules, policies of both directions with several rules each,
a pod selected by many policies of its namespace. Namespaces carry ``team``/``env``/``zone``;
pods ``app``, ``tier``, ``version`` and sometimes ``role``.

Same sizes and same CLI as ``generate.py``:

    python benchmarks/generate_catalogue.py L /tmp/catalogue-L
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import attrs
import generate
from generate import (
    NS_LABEL,
    SYSTEM_PODS,
    ClusterSpec,
    Obj,
    _namespace,
    _Pods,
    _policy,
    _split,
    allow_dns,
    write_files,
)

TEAMS = tuple(f"team-{i:02d}" for i in range(25))
ENVS = ("prod", "staging", "dev", "test")
ZONES = ("dmz", "internal", "restricted")
APPS = tuple(f"svc-{i:02d}" for i in range(30))
TIERS = ("web", "api", "db", "cache", "worker", "batch")
PORTS = {
    "web": [("http", "TCP", 8080), ("https", "TCP", 8443), ("metrics", "TCP", 9090)],
    "api": [("http", "TCP", 8000), ("grpc", "TCP", 9000), ("metrics", "TCP", 9091)],
    "db": [("sql", "TCP", 5432), ("metrics", "TCP", 9187)],
    "cache": [("redis", "TCP", 6379), ("metrics", "TCP", 9121)],
    "worker": [("metrics", "TCP", 9100)],
    "batch": [("metrics", "TCP", 9101)],
}
NUMBERS = (80, 443, 8080, 8000, 9000, 5432, 6379, 3306, 27017, 9092, 11211, 5672)
SHARED = ("ingress-nginx", "monitoring", "logging", "kube-system")


@attrs.frozen
class Space:
    name: str
    team: str
    env: str
    zone: str
    apps: tuple[str, ...]
    budget: int
    dual_stack: bool


def layout(spec: ClusterSpec) -> list[Space]:
    rng = random.Random(spec.seed * 104729 + 11)
    budgets = _split(spec.policies, spec.namespaces, rng, 2)
    teams = [rng.choice(TEAMS) for _ in budgets]
    return [
        Space(
            f"{team}-{i:04d}",
            team,
            rng.choice(ENVS),
            rng.choice(ZONES),
            tuple(rng.sample(APPS, rng.randint(3, 8))),
            budget,
            i % 6 == 0,
        )
        for i, (budget, team) in enumerate(zip(budgets, teams, strict=True))
    ]


def _ports(rng: random.Random) -> list[Obj]:
    """One to six ports: numbers, a name, now and then a range."""
    out: list[Obj] = []
    for _ in range(rng.choice((1, 1, 2, 2, 3, 4, 6))):
        roll = rng.random()
        if roll < 0.15:
            out.append({"protocol": "TCP", "port": rng.choice(("http", "grpc", "metrics", "sql"))})
        elif roll < 0.25:
            start = rng.choice((8000, 9000, 30000))
            out.append({"protocol": "TCP", "port": start, "endPort": start + rng.choice((10, 100, 1000))})
        else:
            out.append({"protocol": rng.choice(("TCP", "TCP", "TCP", "UDP")), "port": rng.choice(NUMBERS)})
    return out


def _target(ns: Space, rng: random.Random) -> Obj:
    roll = rng.random()
    if roll < 0.55:
        return {"matchLabels": {"app": rng.choice(ns.apps)}}
    if roll < 0.75:
        return {"matchLabels": {"app": rng.choice(ns.apps), "tier": rng.choice(TIERS)}}
    if roll < 0.85:
        return {"matchExpressions": [{"key": "tier", "operator": "In", "values": rng.sample(TIERS, 2)}]}
    if roll < 0.92:
        return {"matchExpressions": [{"key": "role", "operator": "Exists"}]}
    return {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["batch"]}]}


def _peer(ns: Space, rng: random.Random) -> Obj:
    roll = rng.random()
    if roll < 0.35:
        return {"podSelector": {"matchLabels": {"app": rng.choice(ns.apps)}}}
    if roll < 0.45:
        values = rng.sample(APPS, rng.randint(2, 7))  # lists beyond four values
        return {"podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": values}]}}
    if roll < 0.5:
        return {"namespaceSelector": {"matchLabels": {NS_LABEL: rng.choice(SHARED)}}}
    if roll < 0.55:  # shared namespaces by name, a few at once
        names = sorted(rng.sample(SHARED, 2))
        return {
            "namespaceSelector": {"matchExpressions": [{"key": NS_LABEL, "operator": "In", "values": names}]}
        }
    if roll < 0.6:
        return {
            "namespaceSelector": {"matchLabels": {"team": ns.team}},
            "podSelector": {"matchLabels": {"tier": rng.choice(TIERS)}},
        }
    if roll < 0.65:  # the team and partner teams: one, two or five
        teams = [ns.team, *rng.sample([t for t in TEAMS if t != ns.team], rng.choice((1, 1, 2, 5)))]
        return {
            "namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "In", "values": teams}]},
            "podSelector": {"matchLabels": {"tier": rng.choice(TIERS)}},
        }
    if roll < 0.72:
        return {
            "namespaceSelector": {
                "matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["dev", "test"]}]
            },
            "podSelector": {"matchLabels": {"role": "client"}},
        }
    if roll < 0.8:
        return {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": rng.choice(APPS)}}}
    if roll < 0.84:
        return {"namespaceSelector": {"matchLabels": {"zone": rng.choice(ZONES), "env": ns.env}}}
    if roll < 0.88:  # every namespace of some environments
        envs = sorted(rng.sample(ENVS, 2))
        return {"namespaceSelector": {"matchExpressions": [{"key": "env", "operator": "In", "values": envs}]}}
    if roll < 0.94:
        return {
            "podSelector": {"matchLabels": {"app": rng.choice(ns.apps), "version": rng.choice(("v1", "v2"))}}
        }
    return {"ipBlock": {"cidr": f"10.{rng.randrange(200, 256)}.{rng.randrange(256)}.0/24"}}


def _rule(ns: Space, rng: random.Random, side: str) -> Obj:
    roll = rng.random()
    if roll < 0.1:
        return {"ports": _ports(rng)}  # from (or to) anywhere, on these ports
    count = rng.choice((1, 1, 1, 2, 2, 3, 4, 6))  # several apps listed one by one
    rule: Obj = {side: [_peer(ns, rng) for _ in range(count)]}
    if rng.random() < 0.7:
        rule["ports"] = _ports(rng)
    return rule


def _egress_out(rng: random.Random) -> Obj:
    blocks = [
        {"ipBlock": {"cidr": f"{rng.randrange(1, 200)}.{rng.randrange(256)}.{rng.randrange(256)}.0/24"}}
        for _ in range(rng.randint(1, 5))
    ]
    if rng.random() < 0.5:
        blocks.append(
            {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]}}
        )
    return {"to": blocks, "ports": [{"protocol": "TCP", "port": 443}]}


def _drawn(ns: Space, rng: random.Random, index: int) -> Obj:
    """One policy from the catalogue."""
    n, name = ns.name, f"p{index:03d}"
    roll = rng.random()
    if roll < 0.4:
        rules = [_rule(ns, rng, "from") for _ in range(rng.choice((1, 1, 2, 3)))]
        return _policy(n, f"{name}-ingress", _target(ns, rng), ["Ingress"], ingress=rules)
    if roll < 0.6:
        rules = [_rule(ns, rng, "to") for _ in range(rng.choice((1, 2)))]
        if rng.random() < 0.3:
            rules.append(_egress_out(rng))
        return _policy(n, f"{name}-egress", _target(ns, rng), ["Egress"], egress=rules)
    if roll < 0.8:
        return _policy(
            n,
            f"{name}-both",
            _target(ns, rng),
            ["Ingress", "Egress"],
            ingress=[_rule(ns, rng, "from") for _ in range(rng.randint(1, 3))],
            egress=[_rule(ns, rng, "to") for _ in range(rng.randint(1, 3))],
        )
    if roll < 0.86:
        return _policy(n, f"{name}-allow-all-egress", _target(ns, rng), ["Egress"], egress=[{}])
    if roll < 0.92:
        peer = {"namespaceSelector": {"matchLabels": {NS_LABEL: "ingress-nginx"}}}
        ports = [{"protocol": "TCP", "port": p} for p in (80, 443, 8080, 8443)]
        return _policy(
            n,
            f"{name}-from-ingress",
            _target(ns, rng),
            ["Ingress"],
            ingress=[{"from": [peer], "ports": ports}],
        )
    return _policy(n, f"{name}-egress-out", _target(ns, rng), ["Egress"], egress=[_egress_out(rng)])


FIXED: tuple[Callable[[str], Obj], ...] = (
    lambda n: _policy(n, "default-deny", {}, ["Ingress", "Egress"]),
    allow_dns,
    lambda n: _policy(n, "allow-same-namespace", {}, ["Ingress"], ingress=[{"from": [{"podSelector": {}}]}]),
    lambda n: _policy(
        n,
        "allow-monitoring",
        {},
        ["Ingress"],
        ingress=[
            {
                "from": [{"namespaceSelector": {"matchLabels": {NS_LABEL: "monitoring"}}}],
                "ports": [{"protocol": "TCP", "port": "metrics"}],
            }
        ],
    ),
)


def namespace_policies(ns: Space, rng: random.Random) -> list[Obj]:
    fixed = [make(ns.name) for make in FIXED if rng.random() < (0.9 if make is FIXED[0] else 0.5)]
    out = fixed[: ns.budget]
    while len(out) < ns.budget:
        out.append(_drawn(ns, rng, len(out)))
    return out


def inventory(spec: ClusterSpec, namespaces: list[Space]) -> Obj:
    rng = random.Random((spec.pod_seed if spec.pod_seed is not None else spec.seed) * 104729 + 12)
    pods = _Pods(rng, next_ip=rng.randrange(1000))
    items = [_namespace(s, {"zone": "internal"}) for s in SHARED]
    items += [_namespace(ns.name, {"team": ns.team, "env": ns.env, "zone": ns.zone}) for ns in namespaces]
    dns = [("dns", "UDP", 53), ("dns-tcp", "TCP", 53), ("metrics", "TCP", 9153)]
    for _ in range(2):
        pods.add("kube-system", "coredns", {"k8s-app": "kube-dns"}, dns, True)
    pods.add("monitoring", "prometheus", {"app": "prometheus"}, [("web", "TCP", 9090)], True)
    for i in range(SYSTEM_PODS - len(pods.objects)):
        where = ("ingress-nginx", "logging")[i % 2]
        pods.add(where, where, {"app": where}, [("http", "TCP", 8080)], True)
    shares = _split(max(0, spec.pods - SYSTEM_PODS), len(namespaces), rng, 1)
    for ns, share in zip(namespaces, shares, strict=True):
        for i in range(share):
            app = ns.apps[i % len(ns.apps)]
            base = APPS.index(app)
            tier = TIERS[(base + i) % len(TIERS)] if rng.random() < 0.3 else TIERS[base % len(TIERS)]
            labels = {"app": app, "tier": tier, "version": rng.choice(("v1", "v1", "v2"))}
            if rng.random() < 0.3:
                labels["role"] = rng.choice(("client", "admin"))
            pods.add(ns.name, app, labels, PORTS[tier], ns.dual_stack)
    items += pods.objects
    return {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": items}


def write_cluster(spec: ClusterSpec, out: Path) -> Path:
    """``out/policies/<namespace>.yaml`` and ``out/inventory.json``, like ``generate.write_cluster``."""
    namespaces = layout(spec)
    rng = random.Random(spec.seed * 104729 + 13)
    return write_files(
        out, ((ns.name, namespace_policies(ns, rng)) for ns in namespaces), inventory(spec, namespaces)
    )


if __name__ == "__main__":
    generate.main(write_cluster, __doc__)
