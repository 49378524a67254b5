"""A second, independently shaped cluster generator: the policy mix of a multi-tenant platform.

``generate.py`` writes one tidy template per app; real policy folders are messier. This one
writes what platform teams and tenants add over time, in the same output format:
- tenants (``tenant``/``stage`` namespace labels) own namespaces of 50 pods on average, whose pods
  carry ``app.kubernetes.io/name`` / ``app.kubernetes.io/component`` / ``role`` labels;
- per namespace: ``default-deny-ingress`` (sometimes default-deny for both directions),
  ``allow-from-monitoring`` (a ``namespaceSelector`` alone, on a named port), DNS egress to
  ``kube-system`` by namespace only, and in one namespace in four ``allow-same-namespace``;
- per component: ingress from a local ``podSelector`` peer **or** a cross-namespace
  ``namespaceSelector``+``podSelector`` peer in one rule (gateways of the same tenant), ingress
  from **shared large peers** referenced by thousands of policies (every mesh sidecar-injected
  client: ``mesh=enabled`` namespaces x ``role=client`` pods; every namespace of a
  ``stage``), egress to a local peer or the platform namespaces (``matchExpressions`` ``In``),
  ``ipBlock`` egress with ``except`` to the internet and to partner /24s, named ports and port
  ranges (``endPort``), ``NotIn``/``DoesNotExist`` selectors;
- about 1% of pods finished, a few ``hostNetwork`` pods, one namespace in seven dual-stack.

``run.py --generators lists`` is this mix with each component's local peer written as a list
(``component In [2 or 3 of the 8]``, 84 lists in all): what a cut of set parts by value list
must survive.

Same sizes and same CLI as ``generate.py``:

    python benchmarks/generate_mixed.py L /tmp/mixed-L
"""

from __future__ import annotations

import random
from pathlib import Path

import attrs
import generate
from generate import NS_LABEL, SYSTEM_PODS, ClusterSpec, Obj, _namespace, _Pods, _policy, _split, write_files

TENANTS = tuple(f"tenant-{i:02d}" for i in range(40))
STAGES = ("prod", "preprod", "qa", "sandbox")
COMPONENTS = ("web", "api", "worker", "db", "queue", "search", "auth", "report")
PLATFORM = ("platform-gateway", "platform-vault", "platform-registry")
PORTS: dict[str, list[tuple[str, str, int]]] = {
    "web": [("http", "TCP", 8080), ("metrics", "TCP", 9090)],
    "api": [("http", "TCP", 8000), ("grpc", "TCP", 9000), ("metrics", "TCP", 9091)],
    "worker": [("metrics", "TCP", 9100)],
    "db": [("sql", "TCP", 5432), ("metrics", "TCP", 9187)],
    "queue": [("amqp", "TCP", 5672), ("metrics", "TCP", 15692)],
    "search": [("rest", "TCP", 9200), ("transport", "TCP", 9300), ("metrics", "TCP", 9114)],
    "auth": [("http", "TCP", 8443), ("metrics", "TCP", 9095)],
    "report": [("http", "TCP", 8081), ("metrics", "TCP", 9096)],
}
NAME = "app.kubernetes.io/name"
COMPONENT = "app.kubernetes.io/component"
BASE = 4  # default-deny, monitoring, dns, and one more on average


@attrs.frozen
class Tenancy:
    name: str
    tenant: str
    stage: str
    mesh: bool
    components: tuple[str, ...]
    budget: int
    dual_stack: bool
    both_directions: bool


def layout(spec: ClusterSpec) -> list[Tenancy]:
    rng = random.Random(spec.seed * 7919 + 1)
    budgets = _split(spec.policies, spec.namespaces, rng, BASE)
    out = []
    for i, budget in enumerate(budgets):
        tenant, stage = rng.choice(TENANTS), rng.choice(STAGES)
        components = tuple(rng.sample(COMPONENTS, rng.randint(4, len(COMPONENTS))))
        out.append(
            Tenancy(
                f"{tenant}-{stage}-{i:04d}",
                tenant,
                stage,
                rng.random() < 0.6,
                components,
                budget,
                i % 7 == 0,
                rng.random() < 0.5,
            )
        )
    return out


def _labels(name: str, component: str) -> Obj:
    return {"matchLabels": {NAME: name, COMPONENT: component}}


def _component_policies(ns: Tenancy, app: str, component: str, rng: random.Random, lists: bool) -> list[Obj]:
    n, me = ns.name, _labels(app, component)
    ports = [p for p, _, _ in PORTS[component] if p != "metrics"] or ["metrics"]
    gateway_of_tenant = {
        "namespaceSelector": {"matchLabels": {"tenant": ns.tenant}},
        "podSelector": {"matchLabels": {"role": "gateway"}},
    }
    mesh_clients = {  # shared by thousands of policies: every meshed client in the cluster
        "namespaceSelector": {"matchLabels": {"mesh": "enabled"}},
        "podSelector": {"matchLabels": {"role": "client"}},
    }
    stage_peers = {  # everything of the same stage, except sandboxes' debug pods
        "namespaceSelector": {"matchLabels": {"stage": ns.stage}},
        "podSelector": {"matchExpressions": [{"key": "debug", "operator": "DoesNotExist"}]},
    }
    local_peer = {"podSelector": _labels(app, rng.choice(COMPONENTS))}
    if lists:  # the same pods' neighbours by a list of components of their own namespace
        some = sorted(rng.sample(COMPONENTS, rng.choice((2, 3))))
        local_peer = {
            "podSelector": {"matchExpressions": [{"key": COMPONENT, "operator": "In", "values": some}]}
        }
    out = [
        _policy(
            n,
            f"{app}-{component}-ingress",
            me,
            ["Ingress"],
            ingress=[
                {  # a local peer OR the tenant's gateways, in one rule
                    "from": [local_peer, gateway_of_tenant],
                    "ports": [{"protocol": "TCP", "port": p} for p in ports],
                }
            ],
        ),
    ]
    if component in ("api", "web", "auth", "search"):
        out.append(
            _policy(
                n,
                f"{app}-{component}-from-mesh",
                me,
                ["Ingress"],
                ingress=[
                    {"from": [mesh_clients, {"podSelector": {"matchLabels": {"role": "client"}}}]},
                    {"from": [stage_peers], "ports": [{"protocol": "TCP", "port": 8000, "endPort": 8100}]},
                ],
            )
        )
    if ns.both_directions:
        platform = {
            "namespaceSelector": {
                "matchExpressions": [{"key": NS_LABEL, "operator": "In", "values": list(PLATFORM)}]
            }
        }
        egress: list[Obj] = [
            {"to": [{"podSelector": _labels(app, rng.choice(COMPONENTS))}, platform]},
            {
                "to": [{"podSelector": {"matchLabels": {NAME: app}}}],
                "ports": [{"protocol": "TCP", "port": "http"}],
            },
        ]
        if component in ("worker", "report", "api"):
            egress.append(
                {
                    "to": [
                        {
                            "ipBlock": {
                                "cidr": "0.0.0.0/0",
                                "except": ["10.0.0.0/8", "172.16.0.0/12", "169.254.0.0/16"],
                            }
                        },
                        {"ipBlock": {"cidr": f"203.0.{rng.randrange(256)}.0/24"}},
                    ],
                    "ports": [{"protocol": "TCP", "port": 443}, {"protocol": "UDP", "port": 443}],
                }
            )
        out.append(_policy(n, f"{app}-{component}-egress", me, ["Egress"], egress=egress))
    return out


def namespace_policies(ns: Tenancy, rng: random.Random, lists: bool = False) -> list[Obj]:
    n = ns.name
    out = [
        _policy(n, "default-deny", {}, ["Ingress", "Egress"] if ns.both_directions else ["Ingress"]),
        _policy(
            n,
            "allow-from-monitoring",
            {"matchExpressions": [{"key": "role", "operator": "NotIn", "values": ["batch"]}]},
            ["Ingress"],
            ingress=[
                {
                    "from": [{"namespaceSelector": {"matchLabels": {"purpose": "monitoring"}}}],
                    "ports": [{"protocol": "TCP", "port": "metrics"}],
                }
            ],
        ),
    ]
    if ns.both_directions:
        out.append(
            _policy(
                n,
                "allow-dns",
                {},
                ["Egress"],
                egress=[
                    {
                        "to": [{"namespaceSelector": {"matchLabels": {NS_LABEL: "kube-system"}}}],
                        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
                    }
                ],
            )
        )
    if rng.random() < 0.25:
        out.append(
            _policy(n, "allow-same-namespace", {}, ["Ingress"], ingress=[{"from": [{"podSelector": {}}]}])
        )
    app = f"{ns.tenant}-app"
    for component in ns.components:
        out += _component_policies(ns, app, component, rng, lists)
    while len(out) < ns.budget:  # one-off grants added over time: a partner tenant's clients
        partner, component = rng.choice(TENANTS), rng.choice(ns.components)
        peer = {
            "namespaceSelector": {"matchLabels": {"tenant": partner, "stage": ns.stage}},
            "podSelector": {"matchLabels": {"role": "client"}},
        }
        out.append(
            _policy(
                n,
                f"{app}-{component}-from-{partner}-{len(out)}",
                _labels(app, component),
                ["Ingress"],
                ingress=[{"from": [peer], "ports": [{"protocol": "TCP", "port": "http"}]}],
            )
        )
    return out[: ns.budget]


def inventory(spec: ClusterSpec, namespaces: list[Tenancy]) -> Obj:
    rng = random.Random((spec.pod_seed if spec.pod_seed is not None else spec.seed) * 7919 + 2)
    pods = _Pods(rng, next_ip=rng.randrange(1000))
    items = [
        _namespace("kube-system", {}),
        _namespace("monitoring", {"purpose": "monitoring"}),
        *(_namespace(p, {"purpose": "platform"}) for p in PLATFORM),
    ]
    for ns in namespaces:
        labels = {"tenant": ns.tenant, "stage": ns.stage}
        if ns.mesh:
            labels["mesh"] = "enabled"
        items.append(_namespace(ns.name, labels))
    dns = [("dns", "UDP", 53), ("dns-tcp", "TCP", 53), ("metrics", "TCP", 9153)]
    for _ in range(2):
        pods.add("kube-system", "coredns", {"k8s-app": "kube-dns"}, dns, True)
    pods.add("kube-system", "node-exporter", {"app": "node-exporter"}, [("metrics", "TCP", 9100)], False)
    pods.add("monitoring", "prometheus", {"app": "prometheus"}, [("web", "TCP", 9090)], True)
    for i in range(SYSTEM_PODS - len(pods.objects)):
        platform = PLATFORM[i % len(PLATFORM)]
        pods.add(platform, platform, {"role": "gateway"}, [("http", "TCP", 8080)], True)
    shares = _split(max(0, spec.pods - SYSTEM_PODS), len(namespaces), rng, 1)
    for ns, share in zip(namespaces, shares, strict=True):
        app = f"{ns.tenant}-app"
        for i in range(share):
            component = ns.components[i % len(ns.components)]
            labels = {NAME: app, COMPONENT: component}
            roll = rng.random()
            if roll < 0.05:
                labels["role"] = "gateway"
            elif roll < 0.35:
                labels["role"] = "client"
            elif roll < 0.4:
                labels["role"] = "batch"
            if ns.stage == "sandbox" and rng.random() < 0.2:
                labels["debug"] = "true"
            pods.add(ns.name, component, labels, PORTS[component], ns.dual_stack)
    items += pods.objects
    return {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": items}


def write_cluster(spec: ClusterSpec, out: Path, lists: bool = False) -> Path:
    """``out/policies/<namespace>.yaml`` and ``out/inventory.json``, like ``generate.write_cluster``;
    with ``lists``, each component's local peer is ``component In [2 or 3 of the 8]`` instead."""
    namespaces = layout(spec)
    rng = random.Random(spec.seed * 7919 + 3)
    drawn = ((ns.name, namespace_policies(ns, rng, lists)) for ns in namespaces)
    return write_files(out, drawn, inventory(spec, namespaces))


if __name__ == "__main__":
    generate.main(write_cluster, __doc__)
