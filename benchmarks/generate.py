"""A seeded generator of realistic clusters: a policy folder and a ``kubectl get namespaces,pods -A -o json``.

Shape (what real multi-team clusters look like, per the plugins' issue trackers):
- system namespaces: ``kube-system`` (CoreDNS), ``monitoring`` (Prometheus), ``ingress-nginx``;
- app namespaces labelled ``team``/``env``, each running a few apps whose pods carry ``app``/``tier``
  (frontend, api, db, cache, worker) and named container ports (``http``, ``metrics``, ...);
  the number behind a name differs between pods, so named ports cannot be folded into numbers;
- per app namespace: default-deny for both directions, DNS egress to kube-system, Prometheus in
  ``monitoring`` scraping every pod's ``metrics`` port, in dev namespaces everything from the
  same namespace (which shadows the tier rules below), then per app: frontend from the ingress
  controller, tier-to-tier allows (frontend -> api -> db/cache, worker -> cache/db), same-team
  access across namespaces (namespaceSelector + matchExpressions), and internet egress for workers
  as an ipBlock with ``except`` of the private ranges;
- some namespaces dual-stack, a few finished or hostNetwork pods (not policed endpoints).

``seed`` fixes the layout and therefore the policies; ``pod_seed`` (default: ``seed``) only moves
pods: replica counts, names, addresses, extra labels, named-port numbers. Two clusters with the
same ``seed`` and different ``pod_seed`` are the same policies under pod churn.

    python benchmarks/generate.py L /tmp/cluster-L     # writes policies/ and inventory.json
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import random
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import attrs
import yaml

Obj = dict[str, Any]
TIERS = ("frontend", "api", "db", "cache", "worker")
TEAMS = ("payments", "search", "identity", "media", "growth", "platform", "data", "mobile")
ENVS = ("prod", "staging", "dev")
APPS = ("shop", "auth", "catalog", "billing", "chat", "feed", "maps", "mail", "ads", "cart", "docs", "video")
PRIVATE = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
V4_PODS = ipaddress.ip_network("10.64.0.0/10")
V6_PODS = ipaddress.ip_network("fd00:10:64::/64")
NS_LABEL = "kubernetes.io/metadata.name"
BASE_POLICIES = 3  # default-deny, allow-dns, allow-monitoring
POLICIES_PER_APP = 7
SYSTEM_PODS = 12


@attrs.frozen
class ClusterSpec:
    name: str
    namespaces: int  # app namespaces (system namespaces come on top)
    pods: int
    policies: int
    seed: int = 0
    pod_seed: int | None = None


SIZES = {
    "S": ClusterSpec("S", namespaces=4, pods=100, policies=40),
    "1k": ClusterSpec("1k", namespaces=30, pods=1_000, policies=300),  # the size analysers are compared at
    "M": ClusterSpec("M", namespaces=100, pods=5_000, policies=1_000),
    "L": ClusterSpec("L", namespaces=1_000, pods=50_000, policies=10_000),
}


@attrs.frozen
class AppNamespace:
    name: str
    team: str
    env: str
    apps: tuple[str, ...]
    budget: int  # policies
    dual_stack: bool


def _split(total: int, parts: int, rng: random.Random, minimum: int) -> list[int]:
    """``total`` split into ``parts`` uneven shares of at least ``minimum`` that add up exactly."""
    weights = [rng.uniform(0.5, 1.5) for _ in range(parts)]
    spare = max(0, total - minimum * parts)
    shares = [minimum + int(spare * w / sum(weights)) for w in weights]
    for i in range(total - sum(shares)):
        shares[i % parts] += 1
    return shares


def layout(spec: ClusterSpec) -> list[AppNamespace]:
    rng = random.Random(spec.seed)
    budgets = _split(spec.policies, spec.namespaces, rng, BASE_POLICIES)
    out = []
    for i, budget in enumerate(budgets):
        team, env = TEAMS[(i // len(ENVS)) % len(TEAMS)], ENVS[i % len(ENVS)]
        count = max(1, -(-(budget - BASE_POLICIES) // POLICIES_PER_APP))
        apps = tuple(rng.sample(APPS, min(count, len(APPS))))
        out.append(AppNamespace(f"{team}-{env}-{i}", team, env, apps, budget, i % 5 == 0))
    return out


# --- policies ----------------------------------------------------------------------------------


def _policy(namespace: str, name: str, selector: Obj, types: list[str], **rules: Any) -> Obj:
    spec: Obj = {"podSelector": selector, "policyTypes": types, **rules}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def _pods(app: str, *tiers: str) -> Obj:
    if len(tiers) == 1:
        return {"matchLabels": {"app": app, "tier": tiers[0]}}
    return {
        "matchLabels": {"app": app},
        "matchExpressions": [{"key": "tier", "operator": "In", "values": list(tiers)}],
    }


def _tcp(*ports: int | str) -> list[Obj]:
    return [{"protocol": "TCP", "port": p} for p in ports]


def allow_dns(namespace: str) -> Obj:
    """Egress to CoreDNS on 53, TCP and UDP: what nearly every namespace with egress policy has."""
    dns = {
        "namespaceSelector": {"matchLabels": {NS_LABEL: "kube-system"}},
        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
    }
    ports = [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
    return _policy(namespace, "allow-dns", {}, ["Egress"], egress=[{"to": [dns], "ports": ports}])


def namespace_policies(ns: AppNamespace) -> list[Obj]:
    n = ns.name
    out = [
        _policy(n, "default-deny", {}, ["Ingress", "Egress"]),
        allow_dns(n),
        _policy(
            n,
            "allow-monitoring",
            {},
            ["Ingress"],
            ingress=[
                {
                    "from": [
                        {
                            "namespaceSelector": {"matchLabels": {"team": "monitoring"}},
                            "podSelector": {"matchLabels": {"app": "prometheus"}},
                        }
                    ],
                    "ports": _tcp("metrics"),
                }
            ],
        ),
    ]
    if ns.env == "dev":  # dev namespaces are open inside: this shadows their tier-to-tier ingress rules
        out.append(
            _policy(n, "allow-same-namespace", {}, ["Ingress"], ingress=[{"from": [{"podSelector": {}}]}])
        )
    for app in ns.apps:
        same_team = {
            "namespaceSelector": {
                "matchLabels": {"team": ns.team},
                "matchExpressions": [{"key": "env", "operator": "In", "values": [ns.env]}],
            },
            "podSelector": {
                "matchExpressions": [{"key": "tier", "operator": "In", "values": ["api", "worker"]}]
            },
        }
        out += [
            _policy(
                n,
                f"{app}-frontend-from-ingress",
                _pods(app, "frontend"),
                ["Ingress"],
                ingress=[  # one rule per port, as rules get appended over time
                    {
                        "from": [{"namespaceSelector": {"matchLabels": {NS_LABEL: "ingress-nginx"}}}],
                        "ports": _tcp(port),
                    }
                    for port in ("http", 8443)
                ],
            ),
            _policy(
                n,
                f"{app}-api-from-frontend",
                _pods(app, "api"),
                ["Ingress"],
                ingress=[
                    {"from": [{"podSelector": _pods(app, "frontend")}], "ports": _tcp("http")},
                    {"from": [same_team], "ports": _tcp("http")},
                ],
            ),
            _policy(
                n,
                f"{app}-db-from-api",
                _pods(app, "db"),
                ["Ingress"],
                ingress=[{"from": [{"podSelector": _pods(app, "api", "worker")}], "ports": _tcp(5432)}],
            ),
            _policy(
                n,
                f"{app}-cache-from-api",
                _pods(app, "cache"),
                ["Ingress"],
                ingress=[
                    {"from": [{"podSelector": _pods(app, "api")}], "ports": _tcp(6379)},
                    {"from": [{"podSelector": _pods(app, "worker")}], "ports": _tcp(6379)},
                ],
            ),
            _policy(
                n,
                f"{app}-frontend-egress",
                _pods(app, "frontend"),
                ["Egress"],
                egress=[{"to": [{"podSelector": _pods(app, "api")}], "ports": _tcp("http")}],
            ),
            _policy(
                n,
                f"{app}-api-egress",
                _pods(app, "api"),
                ["Egress"],
                egress=[
                    {"to": [{"podSelector": _pods(app, "db")}], "ports": _tcp(5432)},
                    {"to": [{"podSelector": _pods(app, "cache")}], "ports": _tcp(6379)},
                    {"to": [same_team], "ports": _tcp("http")},
                ],
            ),
            _policy(
                n,
                f"{app}-worker-egress",
                _pods(app, "worker"),
                ["Egress"],
                egress=[
                    {"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": list(PRIVATE)}}], "ports": _tcp(443)},
                    {"to": [{"ipBlock": {"cidr": "::/0", "except": ["fc00::/7"]}}], "ports": _tcp(443)},
                    {"to": [{"podSelector": _pods(app, "db", "cache")}], "ports": _tcp(5432, 6379)},
                ],
            ),
        ]
    return out[: ns.budget]


# --- inventory ---------------------------------------------------------------------------------

NAMED_PORTS = {
    "frontend": [("http", (8080, 3000)), ("metrics", (9090,))],
    "api": [("http", (8080, 8000, 5000)), ("metrics", (9102, 9090))],
    "db": [("postgres", (5432,)), ("metrics", (9187,))],
    "cache": [("redis", (6379,)), ("metrics", (9121,))],
    "worker": [("metrics", (9100, 8081))],
}


def _namespace(name: str, labels: dict[str, str]) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "labels": {NS_LABEL: name, **labels},
            "uid": f"ns-{name}",
            "resourceVersion": "1",
            "creationTimestamp": "2024-05-01T12:00:00Z",
        },
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    }


@attrs.define
class _Pods:
    rng: random.Random
    next_ip: int = 0
    objects: list[Obj] = attrs.field(factory=list)

    def add(
        self, namespace: str, app: str, labels: dict[str, str], ports: list[tuple[str, str, int]], v6: bool
    ) -> None:
        rng, index = self.rng, len(self.objects)
        suffix = f"{rng.getrandbits(40):010x}"
        v4 = str(V4_PODS[1 + self.next_ip])
        ips = [{"ip": v4}] + ([{"ip": str(V6_PODS[1 + self.next_ip])}] if v6 else [])
        self.next_ip += rng.randint(1, 3)  # addresses move with the pod seed
        phase = "Succeeded" if rng.random() < 0.01 else "Running"
        host_network = app == "node-exporter"
        node = f"node-{rng.randrange(200)}"
        self.objects.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": f"{app}-{labels.get('tier', 'main')}-{suffix[:5]}-{suffix[5:]}",
                    "namespace": namespace,
                    "generateName": f"{app}-{suffix[:5]}-",
                    "uid": f"{index:08x}-{suffix}",
                    "resourceVersion": str(1000 + index),
                    "creationTimestamp": "2024-05-01T12:00:00Z",
                    "labels": {**labels, "pod-template-hash": suffix[:5]},
                    "ownerReferences": [
                        {
                            "apiVersion": "apps/v1",
                            "kind": "ReplicaSet",
                            "name": f"{app}-{suffix[:5]}",
                            "uid": f"rs-{suffix}",
                            "controller": True,
                            "blockOwnerDeletion": True,
                        }
                    ],
                },
                "spec": {
                    "containers": [
                        {
                            "name": app,
                            "image": f"registry.example.com/{app}:1.{rng.randrange(20)}.0",
                            "ports": [
                                {"name": n, "containerPort": p, "protocol": proto} for n, proto, p in ports
                            ],
                            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
                        }
                    ],
                    "nodeName": node,
                    "hostNetwork": host_network,
                    "serviceAccountName": "default",
                    "restartPolicy": "Always",
                    "dnsPolicy": "ClusterFirst",
                },
                "status": {
                    "phase": phase,
                    "hostIP": f"192.168.{int(node[5:]) // 250}.{int(node[5:]) % 250 + 1}",
                    "podIP": v4,
                    "podIPs": ips,
                    "qosClass": "Burstable",
                    "conditions": [{"type": "Ready", "status": "True"}],
                },
            }
        )


def _tier_ports(tier: str, rng: random.Random) -> list[tuple[str, str, int]]:
    return [(name, "TCP", rng.choice(numbers)) for name, numbers in NAMED_PORTS[tier]]


def inventory(spec: ClusterSpec, namespaces: list[AppNamespace]) -> Obj:
    rng = random.Random(spec.pod_seed if spec.pod_seed is not None else spec.seed)
    pods = _Pods(rng, next_ip=rng.randrange(1000))
    items = [
        _namespace("kube-system", {}),
        _namespace("monitoring", {"team": "monitoring"}),
        _namespace("ingress-nginx", {"team": "platform"}),
    ]
    items += [_namespace(ns.name, {"team": ns.team, "env": ns.env}) for ns in namespaces]
    dns = [("dns", "UDP", 53), ("dns-tcp", "TCP", 53), ("metrics", "TCP", 9153)]
    for _ in range(2):
        pods.add("kube-system", "coredns", {"k8s-app": "kube-dns"}, dns, True)
    for _ in range(2):
        pods.add("kube-system", "node-exporter", {"app": "node-exporter"}, [("metrics", "TCP", 9100)], False)
    for _ in range(2):
        pods.add("monitoring", "prometheus", {"app": "prometheus"}, [("web", "TCP", 9090)], True)
    pods.add("monitoring", "grafana", {"app": "grafana"}, [("http", "TCP", 3000)], True)
    for _ in range(SYSTEM_PODS - len(pods.objects)):
        pods.add("ingress-nginx", "ingress-nginx", {"app": "ingress-nginx"}, [("http", "TCP", 80)], True)
    shares = _split(max(0, spec.pods - SYSTEM_PODS), len(namespaces), rng, 1)
    for ns, share in zip(namespaces, shares, strict=True):
        slots = [(app, tier) for app in ns.apps for tier in TIERS]
        for i in range(share):
            app, tier = slots[i % len(slots)]
            labels = {"app": app, "tier": tier}
            if rng.random() < 0.3:
                labels["version"] = rng.choice(("v1", "v2", "canary"))
            pods.add(ns.name, app, labels, _tier_ports(tier, rng), ns.dual_stack)
    items += pods.objects
    return {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": items}


def write_files(out: Path, policies: Iterable[tuple[str, list[Obj]]], listed: Obj) -> Path:
    """Every generator's output: ``out/policies/<namespace>.yaml`` (multi-document), from
    (namespace, its policies) in order, and ``out/inventory.json``."""
    folder = out / "policies"
    if folder.exists():
        shutil.rmtree(folder)  # a previous layout's files would still be read
    folder.mkdir(parents=True)
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    for namespace, docs in policies:
        (folder / f"{namespace}.yaml").write_text(yaml.dump_all(docs, Dumper=dumper, sort_keys=False))
    with (out / "inventory.json").open("w") as fh:
        json.dump(listed, fh, indent=1)
    return out


def write_cluster(spec: ClusterSpec, out: Path) -> Path:
    """``out/policies/<namespace>.yaml`` (multi-document) and ``out/inventory.json``."""
    namespaces = layout(spec)
    return write_files(
        out, ((ns.name, namespace_policies(ns)) for ns in namespaces), inventory(spec, namespaces)
    )


def iter_sizes(text: str) -> Iterator[ClusterSpec]:
    for name in text.split(","):
        if name not in SIZES:
            raise SystemExit(f"unknown size {name!r} (choose from {', '.join(SIZES)})")
        yield SIZES[name]


def main(write: Callable[[ClusterSpec, Path], Path] = write_cluster, doc: str | None = __doc__) -> None:
    """The command line of a generator: ``write`` one size into a folder."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n")[0])
    parser.add_argument("size", choices=sorted(SIZES))
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pod-seed", type=int)
    args = parser.parse_args()
    write(attrs.evolve(SIZES[args.size], seed=args.seed, pod_seed=args.pod_seed), args.out)


if __name__ == "__main__":
    main()
