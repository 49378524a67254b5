#!/usr/bin/env python3
"""Independent synthetic test-data generator for npc (Kubernetes NetworkPolicy compiler).

Written from issue 15's text alone, by a helper that had read neither npc's code nor the other
generators here: the one mix no target was tuned on ("a figure counts only if it holds on inputs
you did not shape"). ``ordinary``: ordinary shapes, among them rules listing a local
``podSelector`` peer or a cross-namespace ``namespaceSelector``+``podSelector`` peer, policies
spread unevenly (a namespace of the seed-0 L holds 246); ``messy``: that plus what policy folders
also hold (``matchExpressions`` of every operator, large shared peers, several peers and ports
per rule, value lists of tenants, ``.yml``/``.json``/``List`` files).

usage: python benchmarks/generate_independent.py SIZE OUTDIR [--seed N] [--mix ordinary|messy]

  SIZE  a size of generate.py, mapped onto this model by ``shape`` (its namespaces count the system ones):
        M   100 namespaces x 50 pods,   1,000 policies
        L   1,000 namespaces x 50 pods, 10,000 policies
        1k  30 namespaces x 33 pods, 300 policies
        S   20 namespaces x 20 pods, 40 policies (smoke test: the spec's 4 namespaces and 100 pods
            raised to the model's minimum of 20 namespaces of 20 pods)
  MIX   ordinary (default) | messy
  --seed defaults to 0, as for every generator here; --pod-seed is accepted and has no effect.

Writes OUTDIR/inventory.json (what `kubectl get namespaces,pods -A -o json` prints) and
OUTDIR/policies/ (networking.k8s.io/v1 NetworkPolicy objects).  Standard library + PyYAML (and
generate.py for the sizes and the command line).
Everything comes from one seeded random.Random, so the output is a function of the arguments.

The cluster modelled: a platform team's system namespaces (kube-system, ingress-nginx, monitoring,
cert-manager, istio-system, ...), shared services per environment (api-gateway, kafka, auth,
shared-db, saas-control-plane), product teams' microservice namespaces ({team}-{domain}-{env}) and
per-tenant namespaces of a multi-tenant SaaS (tenant-{name}[-{env}]).  Each namespace runs a few
Deployments/StatefulSets whose replicas add up to the pod count; apps call each other inside the
namespace and across namespaces, and the policies are written from that call graph.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, cast

import generate
import yaml
from generate import ClusterSpec, Obj

try:  # libyaml emitter when available (much faster); same output format.
    from yaml import CSafeDumper as _BaseDumper
except ImportError:  # pragma: no cover
    from yaml import SafeDumper as _BaseDumper  # type: ignore[assignment]


class _Dumper(_BaseDumper):
    """Never emit anchors/aliases, even when a peer dict is shared between policies."""

    def ignore_aliases(self, data: object) -> bool:
        return True


MIXES = ("ordinary", "messy")
# below these the model breaks: 18 namespaces are fixed (system, platform, shared) and kube-system
# alone runs 6 apps, CoreDNS with 3 replicas
MIN_NAMESPACES = 20
MIN_PODS_PER_NS = 20

Port = tuple[str, int, str]  # (name, containerPort, protocol)
Make = Callable[[], Obj | None]  # a policy, or None when the namespace has nothing it fits

# --------------------------------------------------------------------------------------------
# Catalogues
# --------------------------------------------------------------------------------------------

# fmt: off

TEAMS = [
    "payments", "checkout", "identity", "search", "catalog", "growth", "data-eng", "ml",
    "risk", "fulfillment", "logistics", "messaging", "mobile", "web-platform", "billing",
    "analytics", "ads", "support", "security", "reporting", "pricing", "partners", "media",
    "loyalty",
]
DOMAINS = ["api", "core", "web", "jobs", "data", "svc", "portal", "sync", "edge", "stream",
           "ops", "engine", "gw", "hub"]
ENVS = ["prod", "staging", "dev", "qa", "perf"]
ENV_W = [40, 25, 20, 10, 5]
ZONES = ["eu-west-1a", "eu-west-1b", "eu-west-1c", "us-east-1a", "us-east-1b", "us-east-1d",
         "ap-southeast-2a"]
COST_CENTERS = ["cc-1001", "cc-1002", "cc-2040", "cc-3300", "cc-4100", "cc-5120"]
PLANS = ["free", "pro", "business", "enterprise"]
PLAN_W = [30, 35, 20, 15]

TENANT_SEED_NAMES = [
    "acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "wonka", "tyrell",
    "cyberdyne", "soylent", "aperture", "vandelay", "gringotts", "oscorp", "monarch", "dunder",
    "pied-piper", "massive", "nakatomi", "prestige", "virtucon", "gekko", "bluth", "contoso",
    "fabrikam", "northwind", "tailspin", "litware", "adventure-works",
]
SYLL = ["ka", "lo", "ri", "zen", "tor", "mi", "vex", "qua", "dor", "fi", "nu", "sa", "bel", "cor",
        "an", "ex", "ly", "mo", "ra", "ti", "vo", "pax", "ne", "ul", "ga", "ish", "ko", "sy"]

# port profiles: (name, containerPort, protocol)
BACKEND_NAMES = ["api", "orders", "payments", "inventory", "catalog", "cart", "checkout", "users",
                 "accounts", "auth", "search", "recommendations", "notifications", "pricing",
                 "shipping", "ledger", "reporting", "profile", "sessions", "fraud", "invoices",
                 "media", "content", "events", "audit", "quotes", "reviews", "webhooks"]
BACKEND_PORTS = [
    [("http", 8080, "TCP"), ("metrics", 9090, "TCP")],
    [("http", 8080, "TCP"), ("grpc", 9000, "TCP"), ("metrics", 9090, "TCP")],
    [("grpc", 50051, "TCP"), ("http-metrics", 9102, "TCP")],
    [("http", 8000, "TCP"), ("metrics", 8001, "TCP")],
    [("http", 5000, "TCP")],
    [("web", 8080, "TCP"), ("management", 8081, "TCP")],
    [("http", 3000, "TCP"), ("metrics", 9464, "TCP")],
]
FRONTEND_DEFS = {
    "web": ("frontend", "ui", [("http", 8080, "TCP"), ("metrics", 9090, "TCP")]),
    "frontend": ("frontend", "ui", [("http", 3000, "TCP"), ("metrics", 9464, "TCP")]),
    "storefront": ("frontend", "ui", [("http", 80, "TCP"), ("https", 443, "TCP")]),
    "admin-ui": ("frontend", "ui", [("http", 8080, "TCP")]),
    "bff": ("frontend", "bff", [("http", 8080, "TCP"), ("metrics", 9090, "TCP")]),
    "graphql": ("frontend", "bff", [("http", 4000, "TCP"), ("metrics", 9090, "TCP")]),
}
WORKER_NAMES = ["worker", "scheduler", "email-sender", "indexer", "etl", "consumer",
                "cron-runner", "exporter", "sync-agent", "thumbnailer"]
WORKER_PORTS = [[("metrics", 9090, "TCP")], [("health", 8086, "TCP")], [],
                [("metrics", 9090, "TCP"), ("health", 8086, "TCP")]]
DATA_DEFS = {
    "redis": ("cache", [("redis", 6379, "TCP"), ("metrics", 9121, "TCP")]),
    "memcached": ("cache", [("memcache", 11211, "TCP")]),
    "postgres": ("database", [("postgres", 5432, "TCP"), ("metrics", 9187, "TCP")]),
    "mysql": ("database", [("mysql", 3306, "TCP")]),
    "mongodb": ("database", [("mongodb", 27017, "TCP")]),
    "elasticsearch": ("search", [("http", 9200, "TCP"), ("transport", 9300, "TCP")]),
    "rabbitmq": ("queue", [("amqp", 5672, "TCP"), ("management", 15672, "TCP"),
                           ("prometheus", 15692, "TCP")]),
    "clickhouse": ("database", [("http", 8123, "TCP"), ("native", 9000, "TCP")]),
    "etcd": ("kv", [("client", 2379, "TCP"), ("peer", 2380, "TCP")]),
}
METRICS_NAMES = {"metrics", "http-metrics", "prometheus", "management", "health", "admin"}

# Platform namespaces: name -> [(app, component, replicas weight, ports, kind)]
PLATFORM_NS = {
    "cert-manager": [("cert-manager", "controller", 2, [("http-metrics", 9402, "TCP")]),
                     ("cainjector", "cainjector", 1, []),
                     ("webhook", "webhook", 2, [("https", 10250, "TCP"), ("healthcheck", 6080, "TCP")])],
    "logging": [("fluent-bit", "collector", 6, [("http", 2020, "TCP")]),
                ("loki", "storage", 3, [("http-metrics", 3100, "TCP"), ("grpc", 9095, "TCP")]),
                ("loki-gateway", "gateway", 1, [("http", 8080, "TCP")])],
    "istio-system": [("istiod", "pilot", 3, [("grpc-xds", 15010, "TCP"), ("https-dns", 15012, "TCP"),
                                             ("https-webhook", 15017, "TCP"), ("http-monitoring", 15014, "TCP")]),
                     ("istio-ingressgateway", "ingressgateway", 3, [("http2", 8080, "TCP"), ("https", 8443, "TCP"),
                                                                     ("status-port", 15021, "TCP")])],
    "argocd": [("argocd-server", "server", 2, [("server", 8080, "TCP"), ("metrics", 8083, "TCP")]),
               ("argocd-repo-server", "repo-server", 2, [("server", 8081, "TCP"), ("metrics", 8084, "TCP")]),
               ("argocd-application-controller", "application-controller", 1, [("metrics", 8082, "TCP")]),
               ("argocd-redis", "redis", 1, [("redis", 6379, "TCP")]),
               ("argocd-dex-server", "dex-server", 1, [("http", 5556, "TCP"), ("grpc", 5557, "TCP")])],
    "vault": [("vault", "server", 3, [("http", 8200, "TCP"), ("https-internal", 8201, "TCP")]),
              ("vault-agent-injector", "webhook", 2, [("https", 8080, "TCP")])],
    "external-dns": [("external-dns", "controller", 1, [("http", 7979, "TCP")])],
    "kyverno": [("kyverno", "admission-controller", 3, [("https", 9443, "TCP"), ("metrics-port", 8000, "TCP")]),
                ("kyverno-reports-controller", "reports-controller", 1, [("metrics", 8000, "TCP")])],
    "velero": [("velero", "server", 1, [("http-monitoring", 8085, "TCP")])],
    "keda": [("keda-operator", "operator", 2, [("metricsservice", 9666, "TCP")]),
             ("keda-metrics-apiserver", "metrics-apiserver", 1, [("https", 6443, "TCP"), ("metrics", 8080, "TCP")])],
    "external-secrets": [("external-secrets", "controller", 2, [("metrics", 8080, "TCP")]),
                         ("external-secrets-webhook", "webhook", 1, [("webhook", 10250, "TCP")])],
    "gatekeeper-system": [("gatekeeper-controller-manager", "webhook", 3, [("webhook-server", 8443, "TCP"),
                                                                          ("metrics", 8888, "TCP")]),
                          ("gatekeeper-audit", "audit", 1, [("metrics", 8888, "TCP")])],
    "sealed-secrets": [("sealed-secrets-controller", "controller", 1, [("http", 8080, "TCP")])],
}
PLATFORM_ORDER_SMALL = ["cert-manager", "logging", "istio-system", "argocd", "vault"]

# Shared service namespaces, one per (kind, env): name -> (team, [(app, tier, component, ports, kind)])
SHARED_NS = {
    "api-gateway": ("web-platform", [
        ("gateway", "edge", "gateway", [("http", 8080, "TCP"), ("https", 8443, "TCP"), ("admin", 9901, "TCP"),
                                        ("metrics", 9090, "TCP")], "deploy"),
        ("auth-proxy", "edge", "auth", [("http", 4180, "TCP"), ("metrics", 44180, "TCP")], "deploy"),
        ("rate-limiter", "backend", "ratelimit", [("grpc", 8081, "TCP"), ("metrics", 9090, "TCP")], "deploy"),
        ("redis", "data", "cache", [("redis", 6379, "TCP")], "sts")]),
    "kafka": ("data-eng", [
        ("kafka", "data", "broker", [("kafka", 9092, "TCP"), ("kafka-tls", 9093, "TCP"), ("jmx", 5556, "TCP")], "sts"),
        ("zookeeper", "data", "zookeeper", [("client", 2181, "TCP"), ("follower", 2888, "TCP"),
                                            ("election", 3888, "TCP")], "sts"),
        ("schema-registry", "backend", "schema-registry", [("http", 8081, "TCP")], "deploy"),
        ("kafka-connect", "worker", "connect", [("http", 8083, "TCP")], "deploy")]),
    "auth": ("identity", [
        ("auth", "backend", "oidc", [("http", 8080, "TCP"), ("grpc", 9000, "TCP"), ("metrics", 9090, "TCP")], "deploy"),
        ("users", "backend", "directory", [("grpc", 50051, "TCP"), ("http-metrics", 9102, "TCP")], "deploy"),
        ("sessions", "backend", "sessions", [("http", 8080, "TCP")], "deploy"),
        ("redis", "data", "cache", [("redis", 6379, "TCP")], "sts"),
        ("postgres", "data", "database", [("postgres", 5432, "TCP"), ("metrics", 9187, "TCP")], "sts")]),
    "shared-db": ("data-eng", [
        ("postgres", "data", "database", [("postgres", 5432, "TCP"), ("metrics", 9187, "TCP")], "sts"),
        ("pgbouncer", "data", "pooler", [("pgbouncer", 6432, "TCP")], "deploy"),
        ("redis", "data", "cache", [("redis", 6379, "TCP"), ("metrics", 9121, "TCP")], "sts")]),
    "saas-control-plane": ("saas-platform", [
        ("tenant-router", "edge", "router", [("http", 8080, "TCP"), ("metrics", 9090, "TCP")], "deploy"),
        ("provisioner", "backend", "provisioning", [("http", 8080, "TCP"), ("grpc", 9000, "TCP")], "deploy"),
        ("billing-sync", "worker", "billing", [("metrics", 9090, "TCP")], "deploy"),
        ("tenant-worker", "worker", "tenant-jobs", [("metrics", 9090, "TCP")], "deploy"),
        ("postgres", "data", "database", [("postgres", 5432, "TCP")], "sts")]),
}

# ipBlocks that real clusters' egress rules carry
PRIVATE_V4 = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]
EXTERNAL_TARGETS = [
    # (cidr, except, ports)
    ("0.0.0.0/0", PRIVATE_V4, [443]),
    ("0.0.0.0/0", [*PRIVATE_V4, "169.254.169.254/32"], [443, 80]),
    ("0.0.0.0/0", ["169.254.169.254/32"], [443]),
    ("203.0.113.0/24", [], [443]),
    ("198.51.100.0/24", ["198.51.100.128/25"], [443, 8443]),
    ("52.94.0.0/16", ["52.94.5.0/24", "52.94.76.0/22"], [443]),
    ("192.0.2.10/32", [], [25, 587]),
    ("172.20.0.0/16", ["172.20.5.0/24"], [5432]),
    ("100.64.0.0/10", ["100.64.0.0/16"], [443, 9092]),
    ("35.190.0.0/16", [], [443]),
]
EXTERNAL_V6 = [
    ("::/0", ["fd00::/8"], [443]),
    ("2600:1f18::/32", ["2600:1f18:4000::/36"], [443]),
    ("2001:db8:100::/48", [], [443, 8443]),
]

HASH_CHARS = "bcdfghjklmnpqrstvwxz2456789"
# fmt: on


def meta_name(ns_name: str) -> Obj:
    return {"matchLabels": {"kubernetes.io/metadata.name": ns_name}}


def ml(d: Mapping[str, object]) -> Obj:
    return {"matchLabels": dict(d)}


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------


class App:
    __slots__ = (
        "callers",
        "canary",
        "component",
        "deps",
        "external",
        "kind",
        "name",
        "no_mesh",
        "ports",
        "replicas",
        "sel_key",
        "tenanted",
        "tier",
        "xcallers",
        "xdeps",
    )

    def __init__(
        self, name: str, tier: str, component: str, kind: str, ports: Iterable[Port], sel_key: str = "app"
    ) -> None:
        self.name = name
        self.tier = tier
        self.component = component
        self.kind = kind
        self.ports = list(ports)
        self.replicas = 1
        self.deps: list[App] = []
        self.callers: list[App] = []
        self.xdeps: list[tuple[NS, App]] = []
        self.xcallers: list[tuple[NS, App]] = []
        self.sel_key = sel_key
        self.canary = False
        self.external = False
        self.tenanted = False
        self.no_mesh = False

    def main_ports(self) -> list[Port]:
        m = [p for p in self.ports if p[0] not in METRICS_NAMES]
        return m or list(self.ports)

    def metrics_port(self) -> Port | None:
        for p in self.ports:
            if p[0] in ("metrics", "http-metrics", "prometheus", "http-monitoring"):
                return p
        return None

    def sel(self) -> Obj:
        return ml({self.sel_key: self.name})


class NS:
    __slots__ = (
        "apps",
        "default_deny",
        "domain",
        "dual",
        "egress_deny",
        "env",
        "exposed",
        "kind",
        "labels",
        "legacy_name",
        "mesh",
        "monitored",
        "name",
        "plan",
        "team",
        "tenant",
        "tenant_shard",
        "used",
        "weight",
        "zone",
    )

    def __init__(self, name: str, kind: str, team: str | None, env: str | None) -> None:
        self.name = name
        self.kind = kind
        self.team = team
        self.env = env
        self.tenant: str | None = None
        self.plan: str | None = None
        self.zone: str | None = None
        self.labels: dict[str, str] = {}
        self.apps: list[App] = []
        self.dual = False
        self.egress_deny = False
        self.default_deny = True
        self.mesh = False
        self.monitored = True
        self.legacy_name = False
        self.exposed = False
        self.used: set[str] = set()
        self.weight = 1.0
        self.domain: str | None = None
        self.tenant_shard: list[str] = []

    def app(self, name: str) -> App | None:
        for a in self.apps:
            if a.name == name:
                return a
        return None


# --------------------------------------------------------------------------------------------
# Generator
# --------------------------------------------------------------------------------------------


class Generator:
    def __init__(self, size: str, mix: str, seed: int, n_ns: int, pods_per_ns: int, n_pol: int) -> None:
        self.rng = random.Random(f"{seed}:{size}:{mix}")
        self.size = size
        self.messy = mix == "messy"
        self.n_ns, self.pods_per_ns, self.n_pol = n_ns, pods_per_ns, n_pol
        self.namespaces: list[NS] = []
        self.by_name: dict[str, NS] = {}
        self.tenants: list[str] = []
        self.stats: dict[str, Any] = {}

    # ---------------------------------------------------------------- namespaces and apps
    def tenant_names(self, n: int) -> list[str]:
        rng = self.rng
        names = list(TENANT_SEED_NAMES)
        seen = set(names)
        while len(names) < n:
            w = "".join(rng.choice(SYLL) for _ in range(rng.randint(2, 3)))
            if rng.random() < 0.15:
                w += rng.choice(["-labs", "-inc", "-io", "-group", "-health", "-bank"])
            if w not in seen and len(w) <= 30:
                seen.add(w)
                names.append(w)
        rng.shuffle(names)
        return names[:n]

    def add_ns(self, ns: NS) -> None:
        rng = self.rng
        ns.zone = zone = rng.choice(ZONES)
        lab = {"kubernetes.io/metadata.name": ns.name}
        if ns.team:
            lab["team"] = ns.team
        if ns.env:
            lab["env"] = ns.env
        lab["zone"] = zone
        if ns.tenant:
            assert ns.plan is not None  # a tenant's namespace has a plan
            lab["tenant"] = ns.tenant
            lab["plan"] = ns.plan
        if ns.kind in ("team", "tenant", "shared"):
            if rng.random() < 0.6:
                lab["cost-center"] = rng.choice(COST_CENTERS)
            ns.mesh = rng.random() < (0.55 if ns.env in ("prod", "staging") else 0.3)
            if ns.mesh:
                lab["istio-injection"] = "enabled"
        if ns.kind != "system" and rng.random() < 0.85:
            lab["monitoring"] = "enabled"
        if rng.random() < 0.3:
            ns.legacy_name = True
            lab["name"] = ns.name
        if rng.random() < 0.5:
            lab["pod-security.kubernetes.io/enforce"] = rng.choice(["restricted", "baseline"])
        ns.labels = lab
        self.namespaces.append(ns)
        self.by_name[ns.name] = ns

    def distribute_replicas(self, ns: NS, total: int) -> None:
        rng = self.rng
        apps = ns.apps
        fixed = 0
        for a in apps:
            if a.kind == "sts":
                a.replicas = rng.choice([1, 2, 3, 3])
            else:
                a.replicas = 1
            fixed += a.replicas
        rest = total - fixed
        if rest < 0:  # too many apps for the pod budget: trim
            while rest < 0 and len(apps) > 1:
                a = apps.pop()
                rest += a.replicas
            if rest < 0:
                apps[0].replicas += rest
                rest = 0
        deploys = [a for a in apps if a.kind != "sts"] or apps
        w = [rng.lognormvariate(0, 0.8) for _ in deploys]
        s = sum(w)
        given = 0
        for a, wi in zip(deploys, w, strict=True):
            k = int(rest * wi / s)
            a.replicas += k
            given += k
        i = 0
        while given < rest:
            deploys[i % len(deploys)].replicas += 1
            given += 1
            i += 1

    def make_system(self) -> None:
        per = self.pods_per_ns
        ks = NS("kube-system", "system", "platform", None)
        ks.apps = [
            App(
                "kube-dns",
                "system",
                "dns",
                "deploy",
                [("dns", 53, "UDP"), ("dns-tcp", 53, "TCP"), ("metrics", 9153, "TCP")],
                sel_key="k8s-app",
            ),
            App("metrics-server", "system", "metrics", "deploy", [("https", 4443, "TCP")], sel_key="k8s-app"),
            App(
                "cluster-autoscaler",
                "system",
                "autoscaler",
                "deploy",
                [("http", 8085, "TCP")],
                sel_key="k8s-app",
            ),
            App(
                "aws-load-balancer-controller",
                "system",
                "controller",
                "deploy",
                [("webhook-server", 9443, "TCP"), ("metrics-server", 8080, "TCP")],
                sel_key="k8s-app",
            ),
            App(
                "ebs-csi-controller", "system", "csi", "deploy", [("healthz", 9808, "TCP")], sel_key="k8s-app"
            ),
            App(
                "konnectivity-agent",
                "system",
                "tunnel",
                "deploy",
                [("admin", 8133, "TCP")],
                sel_key="k8s-app",
            ),
        ]
        self.add_ns(ks)
        ks.default_deny = False
        ks.monitored = True
        self.distribute_replicas(ks, per)
        # coredns (the kube-dns deployment) keeps 3 replicas; the rest go to konnectivity-agent
        extra = ks.apps[0].replicas - 3
        ks.apps[0].replicas = 3
        ks.apps[-1].replicas += extra
        if ks.apps[-1].replicas < 1:
            big = max(ks.apps[1:], key=lambda x: x.replicas)
            big.replicas += ks.apps[-1].replicas - 1
            ks.apps[-1].replicas = 1

        ing = NS("ingress-nginx", "system", "platform", "prod")
        ing.apps = [
            App(
                "ingress-nginx",
                "edge",
                "controller",
                "deploy",
                [
                    ("http", 80, "TCP"),
                    ("https", 443, "TCP"),
                    ("metrics", 10254, "TCP"),
                    ("webhook", 8443, "TCP"),
                ],
                sel_key="app.kubernetes.io/name",
            ),
            App(
                "ingress-nginx-defaultbackend",
                "edge",
                "default-backend",
                "deploy",
                [("http", 8080, "TCP")],
                sel_key="app.kubernetes.io/name",
            ),
        ]
        self.add_ns(ing)
        self.distribute_replicas(ing, per)

        mon = NS("monitoring", "system", "sre", "prod")
        mon.apps = [
            App(
                "prometheus",
                "monitoring",
                "server",
                "sts",
                [("web", 9090, "TCP"), ("reloader-web", 8080, "TCP")],
            ),
            App(
                "alertmanager",
                "monitoring",
                "alertmanager",
                "sts",
                [("web", 9093, "TCP"), ("mesh-tcp", 9094, "TCP"), ("mesh-udp", 9094, "UDP")],
            ),
            App("grafana", "monitoring", "dashboards", "deploy", [("grafana", 3000, "TCP")]),
            App(
                "kube-state-metrics",
                "monitoring",
                "exporter",
                "deploy",
                [("http", 8080, "TCP"), ("telemetry", 8081, "TCP")],
            ),
            App(
                "otel-collector",
                "monitoring",
                "collector",
                "deploy",
                [("otlp-grpc", 4317, "TCP"), ("otlp-http", 4318, "TCP"), ("metrics", 8888, "TCP")],
            ),
            App("vmagent", "monitoring", "agent", "deploy", [("http", 8429, "TCP")]),
        ]
        self.add_ns(mon)
        mon.labels["purpose"] = "monitoring"
        mon.labels["monitoring"] = "enabled"
        mon.egress_deny = True
        self.distribute_replicas(mon, per)

    def make_platform(self, names: list[str]) -> None:
        rng = self.rng
        for n in names:
            ns = NS(n, "platform", "platform", "prod")
            for app, comp, _weight, ports in PLATFORM_NS[n]:
                a = App(app, "platform", comp, "deploy", ports, sel_key="app.kubernetes.io/name")
                ns.apps.append(a)
            self.add_ns(ns)
            ns.egress_deny = rng.random() < 0.4
            self.distribute_replicas(ns, self.pods_per_ns)

    def make_shared(self, envs: list[str]) -> None:
        rng = self.rng
        for kind, (team, defs) in SHARED_NS.items():
            for env in envs:
                name = f"{kind}-{env}" if env != "prod" else kind
                ns = NS(name, "shared", team, env)
                ns.domain = kind
                for app, tier, comp, ports, k in defs:
                    a = App(app, tier, comp, k, ports)
                    if app == "tenant-worker":
                        a.tenanted = True
                    ns.apps.append(a)
                self.add_ns(ns)
                ns.egress_deny = rng.random() < 0.5
                ns.exposed = kind in ("api-gateway", "saas-control-plane")
                self.distribute_replicas(ns, self.pods_per_ns)
                self.wire_local(ns)

    def pick_apps(self, ns: NS) -> list[App]:
        rng = self.rng
        apps = []
        nf = rng.choices([0, 1, 2], [30, 55, 15])[0]
        for n in rng.sample(sorted(FRONTEND_DEFS), nf):
            tier, comp, ports = FRONTEND_DEFS[n]
            apps.append(App(n, tier, comp, "deploy", ports))
        nb = rng.randint(2, 7)
        for n in rng.sample(BACKEND_NAMES, nb):
            a = App(
                n,
                "backend",
                rng.choice(["service", "api", "grpc-service", "domain"]),
                "deploy",
                rng.choice(BACKEND_PORTS),
            )
            a.external = (
                n in ("payments", "notifications", "webhooks", "fraud", "shipping") or rng.random() < 0.1
            )
            apps.append(a)
        nw = rng.choices([0, 1, 2], [40, 40, 20])[0]
        for n in rng.sample(WORKER_NAMES, nw):
            a = App(n, "worker", rng.choice(["batch", "async", "cron"]), "deploy", rng.choice(WORKER_PORTS))
            a.external = n in ("email-sender", "sync-agent") or rng.random() < 0.1
            apps.append(a)
        nd = rng.choices([1, 2, 3], [45, 40, 15])[0]
        for n in rng.sample(sorted(DATA_DEFS), nd):
            comp, ports = DATA_DEFS[n]
            a = App(n, "data", comp, "sts", ports)
            a.no_mesh = rng.random() < 0.5
            apps.append(a)
        for a in apps:
            a.canary = a.kind == "deploy" and rng.random() < 0.1
        return apps

    def wire_local(self, ns: NS) -> None:
        rng = self.rng
        apps = ns.apps
        fronts = [a for a in apps if a.tier in ("frontend", "edge")]
        backs = [a for a in apps if a.tier == "backend"]
        works = [a for a in apps if a.tier == "worker"]
        datas = [a for a in apps if a.tier == "data"]

        def link(src: App, dst: App) -> None:
            if dst is src or dst in src.deps:
                return
            src.deps.append(dst)
            dst.callers.append(src)

        for f in fronts:
            for b in rng.sample(backs, min(len(backs), rng.randint(1, 3))):
                link(f, b)
        for b in backs:
            others = [x for x in backs if x is not b]
            for x in rng.sample(others, min(len(others), rng.randint(0, 2))):
                link(b, x)
            for d in rng.sample(datas, min(len(datas), rng.randint(0, 2))):
                link(b, d)
        for w in works:
            for d in rng.sample(datas, min(len(datas), rng.randint(1, 2))):
                link(w, d)
            if backs and rng.random() < 0.4:
                link(w, rng.choice(backs))
        upstream = fronts + backs + works
        for a in backs + datas:
            if not a.callers:
                cands = [u for u in upstream if u is not a]
                if cands:
                    link(rng.choice(cands), a)

    def make_team(self, n: int) -> None:
        rng = self.rng
        made = 0
        while made < n:
            team = rng.choice(TEAMS)
            dom = rng.choice(DOMAINS)
            env = rng.choices(ENVS, ENV_W)[0]
            name = f"{team}-{dom}-{env}"
            k = 2
            while name in self.by_name:
                name = f"{team}-{dom}{k}-{env}"
                k += 1
            ns = NS(name, "team", team, env)
            ns.domain = f"{team}-{dom}"
            ns.apps = self.pick_apps(ns)
            self.add_ns(ns)
            p_egress = 0.45 if self.messy else 0.3
            ns.egress_deny = rng.random() < (p_egress + (0.15 if env == "prod" else 0))
            ns.default_deny = rng.random() < 0.9
            ns.monitored = rng.random() < 0.85
            ns.exposed = any(a.tier == "frontend" for a in ns.apps) and rng.random() < 0.8
            self.distribute_replicas(ns, self.pods_per_ns)
            self.wire_local(ns)
            made += 1

    def make_tenants(self, n: int) -> None:
        rng = self.rng
        names = self.tenant_names(max(1, int(n * 0.8)))
        self.tenants = names
        made = 0
        i = 0
        while made < n:
            t = names[i % len(names)]
            env = "prod" if i < len(names) else rng.choice(["staging", "dev"])
            i += 1
            name = f"tenant-{t}" if env == "prod" else f"tenant-{t}-{env}"
            if name in self.by_name:
                continue
            ns = NS(name, "tenant", "saas-platform", env)
            ns.tenant = t
            ns.plan = rng.choices(PLANS, PLAN_W)[0]
            ns.domain = "saas"
            apps = [
                App("web", "frontend", "ui", "deploy", [("http", 8080, "TCP"), ("metrics", 9090, "TCP")]),
                App(
                    "api",
                    "backend",
                    "api",
                    "deploy",
                    [("http", 8080, "TCP"), ("grpc", 9000, "TCP"), ("metrics", 9090, "TCP")],
                ),
                App("worker", "worker", "async", "deploy", [("metrics", 9090, "TCP")]),
                App("redis", "data", "cache", "sts", [("redis", 6379, "TCP")]),
            ]
            if rng.random() < 0.7:
                apps.append(App("postgres", "data", "database", "sts", [("postgres", 5432, "TCP")]))
            if ns.plan == "enterprise" and rng.random() < 0.6:
                apps.append(App("search", "backend", "search", "deploy", [("http", 8080, "TCP")]))
                apps.append(
                    App(
                        "elasticsearch",
                        "data",
                        "search",
                        "sts",
                        [("http", 9200, "TCP"), ("transport", 9300, "TCP")],
                    )
                )
            ns.apps = apps
            self.add_ns(ns)
            ns.egress_deny = rng.random() < (0.6 if self.messy else 0.4)
            ns.default_deny = rng.random() < 0.97
            ns.exposed = True
            self.distribute_replicas(ns, self.pods_per_ns)
            self.wire_local(ns)
            made += 1

    def build_namespaces(self) -> None:
        rng = self.rng
        big = self.n_ns > 200
        self.make_system()
        self.make_platform(list(PLATFORM_NS) if big else PLATFORM_ORDER_SMALL)
        self.make_shared(["prod", "staging", "dev", "qa"] if big else ["prod", "staging"])
        remaining = self.n_ns - len(self.namespaces)
        n_ten = round(remaining * 0.35)
        self.make_tenants(n_ten)
        self.make_team(remaining - n_ten)
        assert len(self.namespaces) == self.n_ns, len(self.namespaces)
        # about 10% of namespaces are dual-stack (their pods get an IPv6 address too)
        for ns in rng.sample(self.namespaces, max(1, round(self.n_ns * 0.10))):
            ns.dual = True
        # tenant shards of the control plane: per-tenant value lists
        for ns in self.namespaces:
            if ns.kind == "shared" and ns.domain == "saas-control-plane":
                tens = sorted(
                    cast(
                        set[str],
                        {t.tenant for t in self.namespaces if t.kind == "tenant" and t.env == ns.env},
                    )
                    or set(self.tenants[:5])
                )
                ns.tenant_shard = tens
        self.wire_cross()
        del rng

    def wire_cross(self) -> None:
        rng = self.rng
        app_ns = [n for n in self.namespaces if n.kind in ("team", "tenant", "shared")]
        by_env: dict[str | None, list[NS]] = {}
        for n in app_ns:
            by_env.setdefault(n.env, []).append(n)
        cum: dict[str | None, tuple[list[NS], list[float]]] = {}
        for env, lst in by_env.items():
            c: list[float] = []
            acc = 0.0
            for n in lst:
                acc += 6.0 if n.kind == "shared" else (1.0 if n.kind == "team" else 0.15)
                c.append(acc)
            cum[env] = (lst, c)
        all_c: list[float] = []
        acc = 0.0
        for n in app_ns:
            acc += 3.0 if n.kind == "shared" else (1.0 if n.kind == "team" else 0.1)
            all_c.append(acc)

        def pick_ns(src: NS) -> NS | None:
            if rng.random() < 0.85 and src.env in cum:
                lst, c = cum[src.env]
            else:
                lst, c = app_ns, all_c
            for _ in range(5):
                m = rng.choices(lst, cum_weights=c)[0]
                if m is not src:
                    return m
            return None

        def link(sn: NS, sa: App, dn: NS, da: App) -> None:
            if (dn, da) in sa.xdeps:
                return
            sa.xdeps.append((dn, da))
            da.xcallers.append((sn, sa))

        for ns in app_ns:
            for a in ns.apps:
                if a.tier not in ("frontend", "backend", "worker", "edge"):
                    continue
                p = 0.35 if ns.kind != "tenant" else 0.5
                if rng.random() >= p:
                    continue
                for _ in range(rng.randint(1, 2)):
                    m = pick_ns(ns)
                    if m is None:
                        continue
                    if ns.kind == "tenant" and rng.random() < 0.7:
                        # tenants talk to their env's shared services
                        shared = [x for x in by_env.get(ns.env, []) if x.kind == "shared"]
                        if shared:
                            m = rng.choice(shared)
                    targets = [b for b in m.apps if b.tier in ("backend", "edge", "data")]
                    if not targets:
                        continue
                    link(ns, a, m, rng.choice(targets))
        # the api gateways route to frontends/bffs of team namespaces; the control plane to tenants
        for ns in app_ns:
            if ns.kind != "shared":
                continue
            if ns.domain == "api-gateway":
                gw = ns.app("gateway")
                assert gw is not None
                cands = [n for n in by_env.get(ns.env, []) if n.kind == "team"]
                for m in rng.sample(cands, min(len(cands), rng.randint(4, 12))):
                    tg = [b for b in m.apps if b.tier == "frontend"] or [
                        b for b in m.apps if b.tier == "backend"
                    ]
                    if tg:
                        link(ns, gw, m, rng.choice(tg))
            if ns.domain == "saas-control-plane":
                prov = ns.app("provisioner")
                assert prov is not None
                cands = [n for n in by_env.get(ns.env, []) if n.kind == "tenant"]
                for m in rng.sample(cands, min(len(cands), 8)):
                    api = m.app("api")
                    assert api is not None
                    link(ns, prov, m, api)

    # ---------------------------------------------------------------- inventory
    def build_inventory(self) -> Obj:
        rng = self.rng
        total = sum(sum(a.replicas for a in ns.apps) for ns in self.namespaces)
        n_nodes = max(3, math.ceil(total / 90))
        base_v4 = 10 << 24
        nodes = []  # [index, next host, count]
        for i in range(n_nodes):
            nodes.append([i, 2, 0])
        open_nodes = list(range(n_nodes))
        items = []
        for ns in self.namespaces:
            items.append(
                {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {
                        "name": ns.name,
                        "uid": self.uid(),
                        "labels": dict(ns.labels),
                    },
                    "spec": {"finalizers": ["kubernetes"]},
                    "status": {"phase": "Active"},
                }
            )
        n_ip6 = 0
        for ns in self.namespaces:
            assert ns.zone is not None  # every namespace has a zone (add_ns)
            for a in ns.apps:
                tmpl_hash = "".join(rng.choice(HASH_CHARS) for _ in range(rng.choice([9, 10])))
                for r in range(a.replicas):
                    # place on a node with room
                    while True:
                        j = rng.randrange(len(open_nodes))
                        nd = nodes[open_nodes[j]]
                        if nd[2] >= 110 or nd[1] > 250:
                            open_nodes[j] = open_nodes[-1]
                            open_nodes.pop()
                            continue
                        break
                    idx = nd[1]
                    nd[1] += 1 + (1 if rng.random() < 0.1 else 0)
                    nd[2] += 1
                    node_i = nd[0]
                    v4 = base_v4 + (node_i + 1) * 256 + idx
                    ip = f"{v4 >> 24}.{(v4 >> 16) & 255}.{(v4 >> 8) & 255}.{v4 & 255}"
                    host = (172 << 24) + (16 << 16) + 10 + node_i
                    host_ip = f"{host >> 24}.{(host >> 16) & 255}.{(host >> 8) & 255}.{host & 255}"
                    node_name = f"ip-{host_ip.replace('.', '-')}.{ns.zone[:-1]}.compute.internal"
                    prefix = "coredns" if a.name == "kube-dns" else a.name
                    if a.kind == "sts":
                        pname = f"{prefix}-{r}"
                    else:
                        pname = f"{prefix}-{tmpl_hash}-{''.join(rng.choice(HASH_CHARS) for _ in range(5))}"
                    labels = self.pod_labels(ns, a, r, pname, tmpl_hash)
                    containers = [
                        {
                            "name": a.name if a.kind != "system" else "main",
                            "image": f"registry.example.com/{ns.team or 'platform'}/{a.name}:{labels.get('version', 'v1')}.{rng.randint(0, 30)}",
                            "ports": [
                                {"name": pn, "containerPort": pp, "protocol": pr} for pn, pp, pr in a.ports
                            ],
                        }
                    ]
                    if not a.ports:
                        del containers[0]["ports"]
                    if labels.get("mesh") == "true":
                        containers.append(
                            {
                                "name": "istio-proxy",
                                "image": "docker.io/istio/proxyv2:1.20.3",
                                "ports": [
                                    {"name": "http-envoy-prom", "containerPort": 15090, "protocol": "TCP"}
                                ],
                            }
                        )
                    ips = [{"ip": ip}]
                    if ns.dual:
                        ips.append({"ip": f"fd00:10:244:{node_i:x}::{idx:x}"})
                        n_ip6 += 1
                    items.append(
                        {
                            "apiVersion": "v1",
                            "kind": "Pod",
                            "metadata": {
                                "name": pname,
                                "namespace": ns.name,
                                "uid": self.uid(),
                                "labels": labels,
                            },
                            "spec": {
                                "containers": containers,
                                "nodeName": node_name,
                            },
                            "status": {
                                "phase": "Running",
                                "hostIP": host_ip,
                                "podIP": ip,
                                "podIPs": ips,
                            },
                        }
                    )
        self.stats["pods"] = total
        self.stats["nodes"] = n_nodes
        self.stats["dual_stack_namespaces"] = sum(1 for n in self.namespaces if n.dual)
        self.stats["pods_with_ipv6"] = n_ip6
        return {"apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": ""}}

    def uid(self) -> str:
        h = f"{self.rng.getrandbits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def pod_labels(self, ns: NS, a: App, r: int, pname: str, tmpl_hash: str) -> dict[str, str]:
        rng = self.rng
        if ns.name == "kube-system":
            lab = {"k8s-app": a.name, "pod-template-hash": tmpl_hash}
            return lab
        if a.sel_key == "app.kubernetes.io/name":
            lab = {
                "app.kubernetes.io/name": a.name,
                "app.kubernetes.io/instance": a.name,
                "app.kubernetes.io/component": a.component,
            }
            if rng.random() < 0.5:
                lab["app"] = a.name
            if ns.kind != "system":
                lab["app.kubernetes.io/part-of"] = ns.name
            lab["pod-template-hash"] = tmpl_hash
            return lab
        lab = {"app": a.name, "app.kubernetes.io/name": a.name}
        if ns.domain:
            lab["app.kubernetes.io/part-of"] = ns.domain
        lab["tier"] = a.tier
        lab["component"] = a.component
        canary = a.canary and r == 0
        lab["version"] = "v2" if canary else "v1"
        if a.canary:
            lab["track"] = "canary" if canary else "stable"
        if ns.team:
            lab["team"] = ns.team
        if ns.tenant:
            lab["tenant"] = ns.tenant
        elif a.tenanted and ns.tenant_shard:
            lab["tenant"] = ns.tenant_shard[r % len(ns.tenant_shard)]
        if ns.mesh and not a.no_mesh:
            lab["mesh"] = "true"
            lab["security.istio.io/tlsMode"] = "istio"
            lab["service.istio.io/canonical-name"] = a.name
        if a.kind == "sts":
            lab["statefulset.kubernetes.io/pod-name"] = pname
            lab["controller-revision-hash"] = f"{a.name}-{tmpl_hash}"[:63]
        else:
            lab["pod-template-hash"] = tmpl_hash
        return lab

    # ---------------------------------------------------------------- policy helpers
    def uniq(self, ns: NS, base: str) -> str:
        base = base[:200].strip("-.")
        name = base
        k = 2
        while name in ns.used:
            name = f"{base}-{k}"
            k += 1
        ns.used.add(name)
        return name

    def policy(
        self,
        ns: NS,
        name: str,
        target: Obj | None,
        ingress: list[Obj] | None = None,
        egress: list[Obj] | None = None,
        types: list[str] | None = None,
        labels: dict[str, str] | None = None,
    ) -> Obj:
        rng = self.rng
        meta: Obj = {"name": self.uniq(ns, name), "namespace": ns.name}
        if labels:
            meta["labels"] = labels
        elif rng.random() < 0.25:
            meta["labels"] = {"app.kubernetes.io/managed-by": rng.choice(["Helm", "kustomize", "argocd"])}
            if ns.team:
                meta["labels"]["team"] = ns.team
        if self.messy and rng.random() < 0.1:
            meta["annotations"] = {
                "description": rng.choice(
                    [
                        f"allow traffic as per ticket SEC-{rng.randint(100, 9999)}",
                        "generated by platform policy bot",
                        "TODO: tighten after migration",
                        "managed by netpol-as-code; do not edit by hand",
                    ]
                )
            }
        spec: Obj = {"podSelector": target}
        if types is None:
            types = []
            if ingress is not None:
                types.append("Ingress")
            if egress is not None:
                types.append("Egress")
            if not types:
                types = ["Ingress"]
        omit_types = (
            self.messy
            and rng.random() < 0.2
            and ("Ingress" in types)
            and (egress is not None or "Egress" not in types)
        )
        if ingress is not None:
            spec["ingress"] = ingress
        if egress is not None:
            spec["egress"] = egress
        if not omit_types:
            spec["policyTypes"] = types
        return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": meta, "spec": spec}

    def pref(self, p: Port, named: bool | None = None) -> Obj:
        """A NetworkPolicyPort for container port p = (name, number, protocol)."""
        rng = self.rng
        name, num, proto = p
        if named is None:
            named = rng.random() < (0.45 if self.messy else 0.3)
        d: Obj = {}
        if proto != "TCP" or not self.messy or rng.random() < 0.7:
            d["protocol"] = proto
        d["port"] = name if named else num
        return d

    def prefs(self, ports: Iterable[Port], named: bool | None = None) -> list[Obj]:
        out, seen = [], set()
        for p in ports:
            d = self.pref(p, named)
            key = (d.get("protocol", "TCP"), d["port"])
            if key not in seen:
                seen.add(key)
                out.append(d)
        return out

    def ns_sel(self, m: NS, style: str | None = None) -> Obj:
        """namespaceSelector picking namespace m, in one of the styles clusters use."""
        rng = self.rng
        if style is None:
            r = rng.random()
            if m.kind == "tenant" and r < 0.35:
                style = "tenant"
            elif r < 0.45:
                style = "meta"
            elif r < 0.6 and m.legacy_name:
                style = "name"
            elif r < 0.8 and m.team:
                style = "team_env"
            elif m.team:
                style = "team"
            else:
                style = "meta"
        if style == "tenant" and m.tenant:
            return ml({"tenant": m.tenant, "env": m.env}) if rng.random() < 0.3 else ml({"tenant": m.tenant})
        if style == "name" and m.legacy_name:
            return ml({"name": m.name})
        if style == "team_env" and m.team and m.env:
            return ml({"team": m.team, "env": m.env})
        if style == "team" and m.team:
            return ml({"team": m.team})
        return meta_name(m.name)

    def pod_sel(self, a: App, extra_prob: float = 0.15) -> Obj:
        rng = self.rng
        d = {a.sel_key: a.name}
        if a.sel_key == "app" and rng.random() < extra_prob:
            d["tier"] = a.tier
        return self.mx_pod(ml(d))

    # messy rewrites -----------------------------------------------------------------------
    def mx_pod(self, sel: Obj, p: float = 0.3) -> Obj:
        if not self.messy or self.rng.random() >= p:
            return sel
        rng = self.rng
        lab = dict(sel.get("matchLabels", {}))
        exprs: list[Obj] = []
        r = rng.random()
        if "app" in lab and r < 0.35:
            v = lab.pop("app")
            exprs.append(
                {
                    "key": "app",
                    "operator": "In",
                    "values": sorted({v, rng.choice([f"{v}-v2", f"{v}-canary", f"{v}-legacy", v])}),
                }
            )
        elif r < 0.55:
            exprs.append({"key": "version", "operator": "NotIn", "values": ["v0", "legacy"]})
        elif r < 0.75:
            exprs.append(
                {"key": rng.choice(["team", "app.kubernetes.io/name", "version"]), "operator": "Exists"}
            )
        else:
            exprs.append(
                {"key": rng.choice(["quarantine", "debug", "canary-disabled"]), "operator": "DoesNotExist"}
            )
        if rng.random() < 0.2:
            exprs.append({"key": "track", "operator": "NotIn", "values": ["canary"]})
        out: Obj = {}
        if lab:
            out["matchLabels"] = lab
        out["matchExpressions"] = exprs
        return out

    def mx_ns(self, sel: Obj, p: float = 0.3) -> Obj:
        if not self.messy or self.rng.random() >= p:
            return sel
        rng = self.rng
        lab = dict(sel.get("matchLabels", {}))
        exprs: list[Obj] = []
        r = rng.random()
        if "env" in lab and r < 0.4:
            v = lab.pop("env")
            exprs.append(
                {
                    "key": "env",
                    "operator": "In",
                    "values": sorted(
                        {v, "staging", "prod"} if v in ("prod", "staging") else {v, "dev", "qa"}
                    ),
                }
            )
        elif "team" in lab and r < 0.6:
            v = lab.pop("team")
            exprs.append(
                {
                    "key": "team",
                    "operator": "In",
                    "values": sorted({v} | set(rng.sample(TEAMS, rng.randint(1, 3)))),
                }
            )
        elif r < 0.75:
            exprs.append({"key": "env", "operator": "NotIn", "values": ["dev", "sandbox"]})
        elif r < 0.88:
            exprs.append({"key": rng.choice(["quarantine", "decommissioned"]), "operator": "DoesNotExist"})
        else:
            exprs.append({"key": rng.choice(["monitoring", "istio-injection", "team"]), "operator": "Exists"})
        out: Obj = {}
        if lab:
            out["matchLabels"] = lab
        out["matchExpressions"] = exprs
        return out

    # shared peers that thousands of messy policies reference
    SHARED_PEERS: ClassVar[list[Obj]] = [
        {"namespaceSelector": {}, "podSelector": {"matchLabels": {"mesh": "true"}}},
        {
            "namespaceSelector": {
                "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod", "staging"]}]
            }
        },
        {
            "namespaceSelector": {"matchLabels": {"istio-injection": "enabled"}},
            "podSelector": {"matchExpressions": [{"key": "security.istio.io/tlsMode", "operator": "Exists"}]},
        },
        {
            "namespaceSelector": {"matchExpressions": [{"key": "tenant", "operator": "Exists"}]},
            "podSelector": {"matchLabels": {"tier": "backend"}},
        },
        {
            "namespaceSelector": {"matchLabels": {"monitoring": "enabled"}},
            "podSelector": {
                "matchExpressions": [
                    {"key": "app", "operator": "In", "values": ["otel-collector", "prometheus", "vmagent"]}
                ]
            },
        },
        {
            "namespaceSelector": {
                "matchExpressions": [
                    {"key": "env", "operator": "NotIn", "values": ["dev", "sandbox"]},
                    {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system"]},
                ]
            },
            "podSelector": {"matchLabels": {"tier": "frontend"}},
        },
        {
            "namespaceSelector": {"matchLabels": {"env": "prod"}},
            "podSelector": {
                "matchExpressions": [
                    {"key": "tier", "operator": "In", "values": ["backend", "edge"]},
                    {"key": "track", "operator": "DoesNotExist"},
                ]
            },
        },
    ]
    SHARED_W: ClassVar[list[int]] = [50, 34, 5, 3, 3, 3, 2]

    def shared_peer(self) -> Obj:
        self.stats["shared_peer_refs"] = self.stats.get("shared_peer_refs", 0) + 1
        peer: Obj = json.loads(json.dumps(self.rng.choices(self.SHARED_PEERS, self.SHARED_W)[0]))
        return peer

    def range_ports(self) -> list[Obj]:
        rng = self.rng
        opts = [
            {"protocol": "TCP", "port": 30000, "endPort": 32767},
            {"protocol": "TCP", "port": 8000, "endPort": 8099},
            {"protocol": "UDP", "port": 10000, "endPort": 20000},
            {"protocol": "TCP", "port": 5432, "endPort": 5439},
            {"protocol": "TCP", "port": 9090, "endPort": 9102},
            {"port": 6379, "endPort": 6385},
        ]
        return [json.loads(json.dumps(o)) for o in rng.sample(opts, rng.randint(1, 2))]

    def xpeer(self, m: NS, b: App, combined: bool = True) -> Obj:
        """cross-namespace peer: namespaceSelector + podSelector for app b in namespace m."""
        peer: Obj = {"namespaceSelector": self.mx_ns(self.ns_sel(m))}
        if combined:
            peer["podSelector"] = self.pod_sel(b, 0.05)
        return peer

    def ip_peer(self, v6: bool = False) -> tuple[Obj, list[int]]:
        rng = self.rng
        cidr, exc, ports = rng.choice(EXTERNAL_V6 if v6 else EXTERNAL_TARGETS)
        blk: Obj = {"cidr": cidr}
        if exc:
            blk["except"] = list(exc)
        return {"ipBlock": blk}, ports

    # ---------------------------------------------------------------- policy kinds (ordinary)
    def p_default_deny(self, ns: NS) -> Obj:
        rng = self.rng
        target: Obj | None = {} if not (self.messy and rng.random() < 0.15) else None
        if ns.egress_deny and rng.random() < 0.6:
            return self.policy(
                ns,
                rng.choice(["default-deny-all", "deny-all", "default-deny"]),
                target,
                types=["Ingress", "Egress"],
            )
        return self.policy(
            ns,
            rng.choice(["default-deny-ingress", "default-deny", "deny-all-ingress"]),
            target,
            types=["Ingress"],
        )

    def p_default_deny_egress(self, ns: NS) -> Obj | None:
        if any(p in ns.used for p in ("default-deny-all", "deny-all")):
            return None
        return self.policy(ns, "default-deny-egress", {}, types=["Egress"])

    def p_allow_dns(self, ns: NS) -> Obj:
        rng = self.rng
        named = rng.random() < 0.1
        ports = [
            {"protocol": "UDP", "port": "dns" if named else 53},
            {"protocol": "TCP", "port": "dns-tcp" if named else 53},
        ]
        if rng.random() < 0.2:
            ports = ports[:1]
        ks = meta_name("kube-system")
        peer = {"namespaceSelector": ks, "podSelector": ml({"k8s-app": "kube-dns"})}
        to = [peer]
        if self.messy and rng.random() < 0.3:
            to.append({"ipBlock": {"cidr": "169.254.20.10/32"}})  # node-local dns
        if rng.random() < 0.15:
            to = [{"namespaceSelector": {}, "podSelector": ml({"k8s-app": "kube-dns"})}]
        return self.policy(
            ns,
            rng.choice(["allow-dns", "allow-dns-egress", "allow-kube-dns"]),
            {},
            egress=[{"to": to, "ports": ports}],
            types=["Egress"],
        )

    def p_ingress_controller(self, ns: NS, app: App | None = None) -> Obj | None:
        rng = self.rng
        fronts = [a for a in ns.apps if a.tier in ("frontend", "edge")]
        if app is None:
            if not fronts:
                return None
            if rng.random() < 0.4:
                target = (
                    ml({"tier": "frontend"}) if all(a.tier == "frontend" for a in fronts) else fronts[0].sel()
                )
                ports = [p for a in fronts for p in a.main_ports()]
                app_name = "frontend"
            else:
                a = rng.choice(fronts)
                target, ports, app_name = self.pod_sel(a), a.main_ports(), a.name
        else:
            target, ports, app_name = self.pod_sel(app), app.main_ports(), app.name
        peer = {
            "namespaceSelector": self.ns_sel(
                self.by_name["ingress-nginx"], rng.choice(["meta", "meta", "name"])
            )
        }
        if rng.random() < 0.5:
            peer["podSelector"] = ml({"app.kubernetes.io/name": "ingress-nginx"})
        frm = [peer]
        if self.messy and rng.random() < 0.3 and "istio-system" in self.by_name:
            frm.append(
                {
                    "namespaceSelector": meta_name("istio-system"),
                    "podSelector": ml({"app.kubernetes.io/name": "istio-ingressgateway"}),
                }
            )
        return self.policy(
            ns,
            f"allow-ingress-nginx-to-{app_name}" if app_name != "frontend" else "allow-from-ingress",
            target,
            ingress=[{"from": frm, "ports": self.prefs(ports)}],
            types=["Ingress"],
        )

    def p_monitoring(self, ns: NS, app: App | None = None) -> Obj | None:
        rng = self.rng
        mon = self.by_name["monitoring"]
        style = rng.random()
        if style < 0.5:
            nsel = meta_name("monitoring")
        elif style < 0.7 and mon.legacy_name:
            nsel = ml({"name": "monitoring"})
        else:
            nsel = ml({"purpose": "monitoring"})
        peer = {"namespaceSelector": nsel}  # namespace alone
        if app is None:
            with_metrics = [a for a in ns.apps if a.metrics_port()]
            if not with_metrics:
                return None
            names = []
            for a in with_metrics:
                port = a.metrics_port()
                assert port is not None
                n = port[0]
                if n not in names:
                    names.append(n)
            ports = [{"protocol": "TCP", "port": n} for n in names]
            if ns.mesh and rng.random() < 0.5:
                ports.append({"protocol": "TCP", "port": "http-envoy-prom"})
            target = {}
            name = rng.choice(["allow-prometheus-scrape", "allow-monitoring", "allow-metrics-scraping"])
        else:
            mp = app.metrics_port()
            if not mp:
                return None
            ports = [{"protocol": "TCP", "port": mp[0]}]
            target = self.pod_sel(app)
            name = f"allow-scrape-{app.name}"
            if rng.random() < 0.3:
                peer["podSelector"] = ml({"app": "prometheus"})
        return self.policy(ns, name, target, ingress=[{"from": [peer], "ports": ports}], types=["Ingress"])

    def cap_xcallers(self, xs: list[tuple[NS, App]], limit: int) -> list[Obj]:
        """Group cross-namespace callers; collapse to team/env selectors when there are many."""
        rng = self.rng
        if len(xs) <= limit:
            return [self.xpeer(m, b) for m, b in xs]
        peers = [self.xpeer(m, b) for m, b in rng.sample(xs, limit - 1)]
        envs = sorted({m.env for m, _ in xs if m.env})
        tiers = sorted({b.tier for _, b in xs})
        nsel = (
            ml({"env": envs[0]})
            if len(envs) == 1
            else {"matchExpressions": [{"key": "env", "operator": "In", "values": envs}]}
        )
        psel = (
            ml({"tier": tiers[0]})
            if len(tiers) == 1
            else {"matchExpressions": [{"key": "tier", "operator": "In", "values": tiers}]}
        )
        if not self.messy:
            nsel = ml({"env": envs[0]}) if envs else {}
            psel = ml({"tier": tiers[0]})
        peers.append({"namespaceSelector": nsel, "podSelector": psel})
        return peers

    def p_app_ingress(self, ns: NS, a: App) -> Obj | None:
        rng = self.rng
        local = [self.pod_sel(c) for c in a.callers]
        xs = list(a.xcallers)
        cross = self.cap_xcallers(xs, 6 if not self.messy else 8)
        if not local and not cross:
            if a.tier == "frontend":
                return self.p_ingress_controller(ns, a)
            # nobody calls it: allow from the rest of the namespace
            rules = [{"from": [{"podSelector": {}}], "ports": self.prefs(a.main_ports())}]
            return self.policy(
                ns, f"{a.name}-allow-same-namespace", self.pod_sel(a), ingress=rules, types=["Ingress"]
            )
        local = [{"podSelector": s} for s in local]
        ports = self.prefs(a.main_ports())
        if local and cross and rng.random() < 0.25:
            # split: one rule per origin, cross-namespace maybe a narrower port list
            rules = [
                {"from": local, "ports": ports},
                {"from": cross, "ports": ports[:1] if len(ports) > 1 and rng.random() < 0.5 else ports},
            ]
            self.stats["split_rules"] = self.stats.get("split_rules", 0) + 1
        else:
            frm = local + cross
            if self.messy:
                rng.shuffle(frm)
            rules = [{"from": frm, "ports": ports}]
            if local and cross:
                self.stats["mixed_local_cross_rules"] = self.stats.get("mixed_local_cross_rules", 0) + 1
        if self.messy:
            self.messy_rule_extras(ns, a, rules)
        name = rng.choice([f"{a.name}-ingress", f"allow-to-{a.name}", f"{a.name}-netpol", f"{a.name}"])
        return self.policy(ns, name, self.pod_sel(a), ingress=rules, types=["Ingress"])

    def p_app_egress(self, ns: NS, a: App) -> Obj | None:
        rng = self.rng
        if not a.deps and not a.xdeps and not a.external:
            return None
        rules = []
        if rng.random() < 0.5:
            # one rule, all peers, the union of ports
            peers = [{"podSelector": self.pod_sel(d)} for d in a.deps]
            peers += [self.xpeer(m, b) for m, b in a.xdeps]
            ports = [p for d in a.deps for p in d.main_ports()] + [
                p for _, b in a.xdeps for p in b.main_ports()
            ]
            if peers:
                rules.append({"to": peers, "ports": self.prefs(ports)})
                if a.deps and a.xdeps:
                    self.stats["mixed_local_cross_rules"] = self.stats.get("mixed_local_cross_rules", 0) + 1
        else:
            for d in a.deps:
                rules.append({"to": [{"podSelector": self.pod_sel(d)}], "ports": self.prefs(d.main_ports())})
            for m, b in a.xdeps:
                rules.append({"to": [self.xpeer(m, b)], "ports": self.prefs(b.main_ports())})
        if a.external and rng.random() < 0.6:
            peer, numbers = self.ip_peer()
            rules.append({"to": [peer], "ports": [{"protocol": "TCP", "port": p} for p in numbers]})
        if not ns.egress_deny or rng.random() < 0.3:
            # policies isolating an app's egress usually carry DNS too
            rules.append(
                {
                    "to": [
                        {
                            "namespaceSelector": meta_name("kube-system"),
                            "podSelector": ml({"k8s-app": "kube-dns"}),
                        }
                    ],
                    "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
                }
            )
        if not rules:
            return None
        if self.messy:
            self.messy_rule_extras(ns, a, rules, key="to")
        return self.policy(
            ns,
            rng.choice([f"{a.name}-egress", f"allow-{a.name}-egress"]),
            self.pod_sel(a),
            egress=rules,
            types=["Egress"],
        )

    def p_ipblock_egress(self, ns: NS, a: App | None = None) -> Obj | None:
        rng = self.rng
        if a is None:
            cands = [x for x in ns.apps if x.tier in ("backend", "worker")]
            if not cands:
                return None
            a = rng.choice(cands)
        peer, ports = self.ip_peer()
        to = [peer]
        if ns.dual and rng.random() < 0.6:
            p6, _ = self.ip_peer(v6=True)
            to.append(p6)
        rules = [{"to": to, "ports": [{"protocol": "TCP", "port": p} for p in ports]}]
        self.stats["ipblock_policies"] = self.stats.get("ipblock_policies", 0) + 1
        name = rng.choice(
            [f"{a.name}-allow-external", f"allow-{a.name}-internet-egress", f"{a.name}-egress-https"]
        )
        return self.policy(ns, name, self.pod_sel(a), egress=rules, types=["Egress"])

    def p_same_namespace(self, ns: NS) -> Obj:
        return self.policy(
            ns, "allow-same-namespace", {}, ingress=[{"from": [{"podSelector": {}}]}], types=["Ingress"]
        )

    def p_pair(self, ns: NS) -> Obj | None:
        """fine-grained allow-X-to-Y (one caller, maybe plus its cross-namespace twin)."""
        rng = self.rng
        cands = [a for a in ns.apps if a.callers or a.xcallers]
        if not cands:
            return None
        a = rng.choice(cands)
        callers = [("l", c) for c in a.callers] + [("x", xc) for xc in a.xcallers]
        _, c = rng.choice(callers)
        if isinstance(c, App):  # an "l" (local) caller, else an "x" (namespace, app)
            frm = [{"podSelector": self.pod_sel(c)}]
            cname = c.name
            if rng.random() < 0.5:
                # the same app in a sibling namespace of the team, in the same rule
                sib = self.sibling(ns)
                if sib is not None:
                    frm.append(
                        {"namespaceSelector": self.mx_ns(self.ns_sel(sib)), "podSelector": self.pod_sel(c)}
                    )
                    self.stats["mixed_local_cross_rules"] = self.stats.get("mixed_local_cross_rules", 0) + 1
        else:
            m, b = c
            frm = [self.xpeer(m, b)]
            cname = f"{m.name}-{b.name}" if len(m.name) < 40 else b.name
        return self.policy(
            ns,
            f"allow-{cname}-to-{a.name}",
            self.pod_sel(a),
            ingress=[{"from": frm, "ports": self.prefs(a.main_ports())}],
            types=["Ingress"],
        )

    def sibling(self, ns: NS) -> NS | None:
        rng = self.rng
        if not ns.team:
            return None
        lst = self.by_team.get(ns.team, [])
        if len(lst) < 2:
            return None
        for _ in range(4):
            s = rng.choice(lst)
            if s is not ns:
                return s
        return None

    def p_cross_allow(self, ns: NS) -> Obj | None:
        """a new cross-namespace caller, mixed with a local one in the same rule."""
        rng = self.rng
        targets = [a for a in ns.apps if a.tier in ("backend", "data", "edge", "frontend", "platform")]
        if not targets:
            targets = ns.apps
        a = rng.choice(targets)
        m = rng.choice(self.app_ns_list)
        if m is ns:
            return None
        srcs = [b for b in m.apps if b.tier in ("frontend", "backend", "worker", "edge")]
        if not srcs:
            return None
        b = rng.choice(srcs)
        frm = [self.xpeer(m, b)]
        if a.callers and rng.random() < 0.7:
            frm.insert(0, {"podSelector": self.pod_sel(rng.choice(a.callers))})
            self.stats["mixed_local_cross_rules"] = self.stats.get("mixed_local_cross_rules", 0) + 1
        return self.policy(
            ns,
            f"allow-{m.team or m.name}-{b.name}-to-{a.name}",
            self.pod_sel(a),
            ingress=[{"from": frm, "ports": self.prefs(a.main_ports())}],
            types=["Ingress"],
        )

    def p_canary(self, ns: NS) -> Obj | None:
        rng = self.rng
        cands = [a for a in ns.apps if a.canary and a.sel_key == "app"]
        if not cands:
            return None
        a = rng.choice(cands)
        target = ml({"app": a.name, "version": "v2"})
        frm = [{"podSelector": self.pod_sel(c)} for c in a.callers] or [{"podSelector": {}}]
        return self.policy(
            ns,
            f"{a.name}-canary-ingress",
            target,
            ingress=[{"from": frm, "ports": self.prefs(a.main_ports())}],
            types=["Ingress"],
        )

    # ---------------------------------------------------------------- messy-only kinds
    def messy_rule_extras(self, ns: NS, a: App, rules: list[Obj], key: str = "from") -> None:
        rng = self.rng
        if rng.random() < 0.8 and key in rules[0]:
            # the big shared peers (a rule without a peer list already admits everyone)
            rules[0][key].append(self.shared_peer())
        r = rng.random()
        if r < 0.25:
            # several ports: named, numbered, ranges
            rules[0]["ports"] = rules[0].get("ports", []) + self.range_ports()
        elif r < 0.4:
            rules.append(
                {
                    "ports": self.prefs(a.main_ports())[:1]
                    + ([{"protocol": "UDP"}] if rng.random() < 0.3 else [])
                }
            )
            self.stats["ports_only_rules"] = self.stats.get("ports_only_rules", 0) + 1

    def p_multi_peer(self, ns: NS) -> Obj:
        rng = self.rng
        a = rng.choice(ns.apps)
        n = rng.randint(3, 6)
        peers = []
        for c in a.callers[:2]:
            peers.append({"podSelector": self.mx_pod(self.pod_sel(c), 0.5)})
        for m, b in a.xcallers[:2]:
            peers.append(self.xpeer(m, b))
        while len(peers) < n:
            r = rng.random()
            if r < 0.3:
                peers.append(self.shared_peer())
            elif r < 0.5:
                m = rng.choice(self.app_ns_list)
                b = rng.choice(m.apps)
                peers.append(self.xpeer(m, b))
            elif r < 0.65:
                peers.append(
                    {"namespaceSelector": self.mx_ns(self.ns_sel(rng.choice(self.app_ns_list)), 0.6)}
                )
            elif r < 0.8:
                other = rng.choice(ns.apps)
                peers.append({"podSelector": self.mx_pod(self.pod_sel(other), 0.6)})
            else:
                peers.append(self.ip_peer(v6=ns.dual and rng.random() < 0.5)[0])
        ports = self.prefs(a.ports) if a.ports else []
        if rng.random() < 0.6:
            ports += self.range_ports()
        if rng.random() < 0.2:
            ports.append({"protocol": "UDP", "port": 53})
        if rng.random() < 0.03:
            ports.append({"protocol": "SCTP", "port": 3868})
        rule: Obj = {"from": peers}
        if ports:
            rule["ports"] = ports
        self.stats["multi_peer_rules"] = self.stats.get("multi_peer_rules", 0) + 1
        return self.policy(
            ns, f"{a.name}-multi-source", self.mx_pod(self.pod_sel(a), 0.5), ingress=[rule], types=["Ingress"]
        )

    def p_egress_only(self, ns: NS) -> Obj:
        rng = self.rng
        a = rng.choice(ns.apps)
        to = []
        for d in a.deps[:3]:
            to.append({"podSelector": self.mx_pod(self.pod_sel(d), 0.4)})
        for m, b in a.xdeps[:2]:
            to.append(self.xpeer(m, b))
        if not to or rng.random() < 0.4:
            to.append(self.shared_peer())
        ports = [p for d in a.deps for p in d.main_ports()] + [p for _, b in a.xdeps for p in b.main_ports()]
        rules = [{"to": to, "ports": self.prefs(ports) or self.range_ports()}]
        if rng.random() < 0.4:
            peer, pp = self.ip_peer(v6=ns.dual and rng.random() < 0.5)
            rules.append({"to": [peer], "ports": [{"protocol": "TCP", "port": p} for p in pp]})
        return self.policy(ns, f"{a.name}-egress-only", self.pod_sel(a), egress=rules, types=["Egress"])

    def p_both(self, ns: NS) -> Obj:
        rng = self.rng
        a = rng.choice(ns.apps)
        frm = [{"podSelector": self.pod_sel(c)} for c in a.callers] + [
            self.xpeer(m, b) for m, b in a.xcallers[:3]
        ]
        if not frm:
            frm = [{"podSelector": {}}]
        if rng.random() < 0.5:
            frm.append(self.shared_peer())
        to = [{"podSelector": self.pod_sel(d)} for d in a.deps] + [self.xpeer(m, b) for m, b in a.xdeps[:3]]
        egress = [
            {
                "to": [
                    {
                        "namespaceSelector": meta_name("kube-system"),
                        "podSelector": ml({"k8s-app": "kube-dns"}),
                    }
                ],
                "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
            }
        ]
        if to:
            egress.insert(0, {"to": to})  # all ports to its dependencies
        return self.policy(
            ns,
            f"{a.name}-isolation",
            self.pod_sel(a),
            ingress=[{"from": frm, "ports": self.prefs(a.main_ports())}],
            egress=egress,
            types=["Ingress", "Egress"],
        )

    def p_empty_target(self, ns: NS) -> Obj:
        rng = self.rng
        r = rng.random()
        if r < 0.4:
            nsel = {
                "matchExpressions": [
                    {
                        "key": "team",
                        "operator": "In",
                        "values": sorted({ns.team or "platform"} | set(rng.sample(TEAMS, 3))),
                    }
                ]
            }
            frm = [{"namespaceSelector": nsel}]
            name = "allow-from-partner-teams"
        elif r < 0.7:
            frm = [self.shared_peer()]
            name = "allow-from-mesh"
        else:
            frm = [
                {
                    "namespaceSelector": {
                        "matchExpressions": [
                            {"key": "env", "operator": "In", "values": [ns.env or "prod"]},
                            {"key": "quarantine", "operator": "DoesNotExist"},
                        ]
                    }
                }
            ]
            name = "allow-same-env"
        rule: Obj = {"from": frm}
        if rng.random() < 0.6:
            rule["ports"] = [
                {"protocol": "TCP", "port": rng.choice(["http", "grpc", "metrics"])},
                {"protocol": "TCP", "port": 8080},
            ]
        tgt: Obj = {} if rng.random() < 0.8 else {"matchLabels": {}}
        return self.policy(ns, name, tgt, ingress=[rule], types=["Ingress"])

    def p_ports_only(self, ns: NS) -> Obj | None:
        rng = self.rng
        a = rng.choice(ns.apps)
        if not a.ports:
            return None
        self.stats["ports_only_rules"] = self.stats.get("ports_only_rules", 0) + 1
        return self.policy(
            ns,
            f"{a.name}-open-ports",
            self.mx_pod(self.pod_sel(a), 0.4),
            ingress=[{"ports": self.prefs(a.main_ports())}],
            types=["Ingress"],
        )

    def p_allow_all(self, ns: NS) -> Obj:
        rng = self.rng
        r = rng.random()
        tgt: Obj = {} if rng.random() < 0.4 else self.pod_sel(rng.choice(ns.apps))
        self.stats["allow_all_policies"] = self.stats.get("allow_all_policies", 0) + 1
        if r < 0.3:
            return self.policy(ns, "allow-all-ingress", tgt, ingress=[{}], types=["Ingress"])
        if r < 0.55:
            return self.policy(
                ns,
                "allow-all-namespaces",
                tgt,
                ingress=[{"from": [{"namespaceSelector": {}}]}],
                types=["Ingress"],
            )
        if r < 0.75:
            return self.policy(ns, "allow-all-egress", tgt, egress=[{}], types=["Egress"])
        if r < 0.9:
            return self.policy(
                ns,
                "allow-cluster-egress",
                tgt,
                egress=[{"to": [{"namespaceSelector": {}, "podSelector": {}}]}],
                types=["Egress"],
            )
        return self.policy(ns, "allow-all", tgt, ingress=[{}], egress=[{}], types=["Ingress", "Egress"])

    def p_teams_list(self, ns: NS) -> Obj:
        rng = self.rng
        a = rng.choice([x for x in ns.apps if x.tier != "data"] or ns.apps)
        teams = sorted(set(rng.sample(TEAMS, rng.randint(3, 7))))
        peers = [
            {
                "namespaceSelector": {
                    "matchExpressions": [{"key": "team", "operator": "In", "values": teams}]
                },
                "podSelector": self.mx_pod(ml({"tier": rng.choice(["backend", "frontend", "edge"])}), 0.4),
            }
        ]
        if rng.random() < 0.5:
            names = [
                m.name for m in rng.sample(self.app_ns_list, min(len(self.app_ns_list), rng.randint(2, 5)))
            ]
            peers.append(
                {
                    "namespaceSelector": {
                        "matchExpressions": [
                            {
                                "key": "kubernetes.io/metadata.name",
                                "operator": "In",
                                "values": sorted(set(names)),
                            }
                        ]
                    }
                }
            )
        if rng.random() < 0.4:
            for t in rng.sample(TEAMS, 2):
                peers.append({"namespaceSelector": ml({"team": t}), "podSelector": ml({"app": "api"})})
        if rng.random() < 0.5:
            peers.append(self.shared_peer())
        return self.policy(
            ns,
            f"{a.name}-allow-teams",
            self.pod_sel(a),
            ingress=[{"from": peers, "ports": self.prefs(a.main_ports())}],
            types=["Ingress"],
        )

    def p_tenant_list(self, ns: NS) -> Obj | None:
        rng = self.rng
        if not self.tenants:
            return None
        a = rng.choice([x for x in ns.apps if x.tier != "data"] or ns.apps)
        k = rng.randint(min(5, len(self.tenants)), min(60, len(self.tenants)))
        tens = sorted(rng.sample(self.tenants, k))
        nsel = {"matchExpressions": [{"key": "tenant", "operator": "In", "values": tens}]}
        if rng.random() < 0.4:
            nsel["matchExpressions"].append(
                {"key": "plan", "operator": "In", "values": sorted(rng.sample(PLANS, 2))}
            )
        peers = [{"namespaceSelector": nsel}]
        if rng.random() < 0.5:
            peers[0]["podSelector"] = ml({"app": rng.choice(["api", "worker", "web"])})
        tgt = self.pod_sel(a)
        if a.tenanted and ns.tenant_shard:
            shard = sorted(rng.sample(ns.tenant_shard, min(len(ns.tenant_shard), rng.randint(3, 20))))
            tgt = {
                "matchLabels": {"app": a.name},
                "matchExpressions": [{"key": "tenant", "operator": "In", "values": shard}],
            }
        self.stats["tenant_list_policies"] = self.stats.get("tenant_list_policies", 0) + 1
        return self.policy(
            ns,
            f"{a.name}-allow-tenants-{rng.choice(['a', 'b', 'c', 'eu', 'us', 'shard1', 'shard2'])}",
            tgt,
            ingress=[{"from": peers, "ports": self.prefs(a.main_ports())}],
            types=["Ingress"],
        )

    def p_notin_ns(self, ns: NS) -> Obj:
        rng = self.rng
        a = rng.choice(ns.apps)
        nsel = {
            "matchExpressions": [
                {"key": "env", "operator": "NotIn", "values": ["dev", "sandbox", "qa"]},
                {"key": "team", "operator": "Exists"},
            ]
        }
        psel = {
            "matchExpressions": [
                {"key": "app", "operator": "Exists"},
                {"key": "tier", "operator": "NotIn", "values": ["data"]},
            ]
        }
        frm = [{"namespaceSelector": nsel, "podSelector": psel}]
        if rng.random() < 0.5:
            frm.insert(
                0, {"podSelector": {"matchExpressions": [{"key": "debug", "operator": "DoesNotExist"}]}}
            )
        if rng.random() < 0.5:
            frm.append(self.shared_peer())
        return self.policy(
            ns,
            f"{a.name}-allow-non-dev",
            self.pod_sel(a),
            ingress=[{"from": frm, "ports": self.prefs(a.main_ports())}],
            types=["Ingress"],
        )

    def p_shared_allow(self, ns: NS) -> Obj:
        rng = self.rng
        a = rng.choice(ns.apps)
        rule: Obj = {"from": [self.shared_peer()]}
        if a.ports:
            rule["ports"] = self.prefs(a.main_ports())
        return self.policy(
            ns,
            f"{a.name}-allow-{rng.choice(['mesh', 'prod', 'platform', 'shared'])}",
            self.pod_sel(a),
            ingress=[rule],
            types=["Ingress"],
        )

    # ---------------------------------------------------------------- per-namespace plans
    def system_core(self, ns: NS) -> list[Make]:
        c: list[Make] = []
        if ns.name == "kube-system":
            c.append(
                lambda: self.policy(
                    ns,
                    "allow-dns-from-cluster",
                    ml({"k8s-app": "kube-dns"}),
                    ingress=[
                        {
                            "from": [{"namespaceSelector": {}}],
                            "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
                        }
                    ],
                    types=["Ingress"],
                )
            )
            c.append(
                lambda: self.policy(
                    ns,
                    "allow-metrics-server",
                    ml({"k8s-app": "metrics-server"}),
                    ingress=[
                        {
                            "from": [{"ipBlock": {"cidr": "172.16.0.0/12"}}],
                            "ports": [{"protocol": "TCP", "port": 4443}],
                        }
                    ],
                    types=["Ingress"],
                )
            )
            c.append(
                lambda: self.policy(
                    ns,
                    "allow-prometheus-coredns",
                    ml({"k8s-app": "kube-dns"}),
                    ingress=[
                        {
                            "from": [
                                {
                                    "namespaceSelector": meta_name("monitoring"),
                                    "podSelector": ml({"app": "prometheus"}),
                                }
                            ],
                            "ports": [{"protocol": "TCP", "port": "metrics"}],
                        }
                    ],
                    types=["Ingress"],
                )
            )
        elif ns.name == "ingress-nginx":
            ext = [{"ipBlock": {"cidr": "0.0.0.0/0"}}]
            if ns.dual:
                ext.append({"ipBlock": {"cidr": "::/0"}})
            ctl = ml({"app.kubernetes.io/name": "ingress-nginx"})
            c.append(
                lambda: self.policy(
                    ns,
                    "allow-external-http",
                    ctl,
                    ingress=[
                        {
                            "from": ext,
                            "ports": [{"protocol": "TCP", "port": 80}, {"protocol": "TCP", "port": 443}],
                        }
                    ],
                    types=["Ingress"],
                )
            )
            c.append(lambda: self.policy(ns, "default-deny-ingress", {}, types=["Ingress"]))
            c.append(
                lambda: self.policy(
                    ns,
                    "allow-webhook-from-apiserver",
                    ctl,
                    ingress=[
                        {
                            "from": [{"ipBlock": {"cidr": "172.16.0.0/12"}}],
                            "ports": [{"protocol": "TCP", "port": "webhook"}],
                        }
                    ],
                    types=["Ingress"],
                )
            )
            c.append(lambda: self.p_monitoring(ns))
            c.append(
                lambda: self.policy(
                    ns,
                    "controller-egress",
                    ctl,
                    egress=[
                        {
                            "to": [{"namespaceSelector": {"matchLabels": {"env": e}}}],
                            "ports": [
                                {"protocol": "TCP", "port": p} for p in (80, 8080, 3000, 443, 8443, 4000)
                            ],
                        }
                        for e in ("prod", "staging")
                    ]
                    + [
                        {
                            "to": [
                                {
                                    "namespaceSelector": meta_name("kube-system"),
                                    "podSelector": ml({"k8s-app": "kube-dns"}),
                                }
                            ],
                            "ports": [{"protocol": "UDP", "port": 53}],
                        }
                    ],
                    types=["Egress"],
                )
            )
        elif ns.name == "monitoring":
            c.append(lambda: self.p_default_deny(ns))
            c.append(lambda: self.p_allow_dns(ns))
            c.append(
                lambda: self.policy(
                    ns,
                    "prometheus-scrape-egress",
                    ml({"app": "prometheus"}),
                    egress=[
                        {
                            "to": [{"namespaceSelector": {}}],
                            "ports": [
                                {"protocol": "TCP", "port": n}
                                for n in (
                                    "metrics",
                                    "http-metrics",
                                    "prometheus",
                                    "http-envoy-prom",
                                    "http-monitoring",
                                )
                            ],
                        },
                        {
                            "to": [{"namespaceSelector": {}}],
                            "ports": [{"protocol": "TCP", "port": 9090}, {"protocol": "TCP", "port": 10254}],
                        },
                    ],
                    types=["Egress"],
                )
            )
            c.append(
                lambda: self.policy(
                    ns,
                    "grafana-from-ingress",
                    ml({"app": "grafana"}),
                    ingress=[
                        {
                            "from": [{"namespaceSelector": meta_name("ingress-nginx")}],
                            "ports": [{"protocol": "TCP", "port": "grafana"}],
                        }
                    ],
                    types=["Ingress"],
                )
            )
            c.append(
                lambda: self.policy(
                    ns,
                    "prometheus-ingress",
                    ml({"app": "prometheus"}),
                    ingress=[
                        {
                            "from": [
                                {"podSelector": ml({"app": "grafana"})},
                                {
                                    "namespaceSelector": meta_name("ingress-nginx"),
                                    "podSelector": ml({"app.kubernetes.io/name": "ingress-nginx"}),
                                },
                            ],
                            "ports": [{"protocol": "TCP", "port": 9090}],
                        }
                    ],
                    types=["Ingress"],
                )
            )
            c.append(
                lambda: self.policy(
                    ns,
                    "alertmanager-egress",
                    ml({"app": "alertmanager"}),
                    egress=[
                        {
                            "to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": list(PRIVATE_V4)}}],
                            "ports": [{"protocol": "TCP", "port": 443}],
                        },
                        {
                            "to": [{"podSelector": ml({"app": "alertmanager"})}],
                            "ports": [{"protocol": "TCP", "port": 9094}, {"protocol": "UDP", "port": 9094}],
                        },
                    ],
                    types=["Egress"],
                )
            )
            c.append(
                lambda: self.policy(
                    ns,
                    "otel-collector-ingress",
                    ml({"app": "otel-collector"}),
                    ingress=[
                        {
                            "from": [{"namespaceSelector": ml({"monitoring": "enabled"})}],
                            "ports": [
                                {"protocol": "TCP", "port": "otlp-grpc"},
                                {"protocol": "TCP", "port": "otlp-http"},
                            ],
                        }
                    ],
                    types=["Ingress"],
                )
            )
        return c

    def app_core(self, ns: NS) -> list[Make]:
        rng = self.rng
        c: list[Make] = []
        if ns.default_deny:
            c.append(lambda: self.p_default_deny(ns))
        if ns.egress_deny:
            c.append(lambda: self.p_default_deny_egress(ns))
            c.append(lambda: self.p_allow_dns(ns))
        if ns.exposed:
            c.append(lambda: self.p_ingress_controller(ns))
        if ns.monitored:
            c.append(lambda: self.p_monitoring(ns))
        apps = list(ns.apps)
        rng.shuffle(apps)
        for a in apps:
            c.append(functools.partial(self.p_app_ingress, ns, a))
            if ns.egress_deny:
                c.append(functools.partial(self.p_app_egress, ns, a))
        for a in apps:
            if a.external and not ns.egress_deny:
                c.append(functools.partial(self.p_ipblock_egress, ns, a))
        return c

    def ordinary_extras(self, ns: NS) -> list[tuple[Make, int]]:
        return [
            (lambda: self.p_pair(ns), 30),
            (lambda: self.p_cross_allow(ns), 25),
            (lambda: self.p_ipblock_egress(ns), 8),
            (lambda: self.p_app_egress(ns, self.rng.choice(ns.apps)), 10),
            (lambda: self.p_canary(ns), 5),
            (lambda: self.p_monitoring(ns, self.rng.choice(ns.apps)), 8),
            (lambda: self.p_ingress_controller(ns, self.rng.choice(ns.apps)) if ns.exposed else None, 5),
            (lambda: self.p_same_namespace(ns) if "allow-same-namespace" not in ns.used else None, 3),
        ]

    def messy_extras(self, ns: NS) -> list[tuple[Make, int]]:
        return [
            (lambda: self.p_multi_peer(ns), 16),
            (lambda: self.p_egress_only(ns), 10),
            (lambda: self.p_both(ns), 9),
            (lambda: self.p_empty_target(ns), 6),
            (lambda: self.p_ports_only(ns), 5),
            (lambda: self.p_allow_all(ns), 3),
            (lambda: self.p_teams_list(ns), 8),
            (lambda: self.p_tenant_list(ns), 10 if ns.kind == "shared" else 3),
            (lambda: self.p_notin_ns(ns), 6),
            (lambda: self.p_shared_allow(ns), 14),
        ]

    def plan_counts(self) -> list[int]:
        """Policies per namespace: uneven (lognormal), exact total, at least 1 each."""
        rng = self.rng
        total = self.n_pol
        w = []
        for ns in self.namespaces:
            if ns.name == "kube-system":
                x = 0.25
            elif ns.kind == "system":
                x = 0.6
            elif ns.kind == "platform":
                x = 0.35 * rng.lognormvariate(0, 0.5)
            elif ns.kind == "shared":
                x = 1.5 * rng.lognormvariate(0, 0.6)
            elif ns.kind == "tenant":
                x = 0.8 * rng.lognormvariate(0, 0.5)
            else:
                x = rng.lognormvariate(0, 0.95)
            w.append(x)
        s = sum(w)
        raw = [total * x / s for x in w]
        counts = [max(1, int(r)) for r in raw]
        diff = total - sum(counts)
        order = sorted(range(len(raw)), key=lambda i: raw[i] - int(raw[i]), reverse=True)
        i = 0
        while diff > 0:
            counts[order[i % len(order)]] += 1
            diff -= 1
            i += 1
        while diff < 0:
            j = max(range(len(counts)), key=lambda k: counts[k])
            counts[j] -= 1
            diff += 1
        return counts

    def build_policies(self) -> list[tuple[NS, list[Obj]]]:
        rng = self.rng
        self.app_ns_list = [n for n in self.namespaces if n.kind in ("team", "tenant", "shared")]
        self.by_team: dict[str, list[NS]] = {}
        for n in self.app_ns_list:
            if n.team:
                self.by_team.setdefault(n.team, []).append(n)
        counts = self.plan_counts()
        per_ns: list[tuple[NS, list[Obj]]] = []
        for ns, k in zip(self.namespaces, counts, strict=True):
            if ns.name in ("kube-system", "ingress-nginx", "monitoring"):
                core = self.system_core(ns)
            else:
                core = self.app_core(ns)
            if self.messy and ns.kind != "system":
                # messy kinds interleaved with the core so small namespaces get some too
                mx = self.messy_extras(ns)
                n_mx = max(1, int(len(core) * 0.6))
                for _ in range(n_mx):
                    fn = rng.choices([f for f, _ in mx], [w for _, w in mx])[0]
                    pos = rng.randint(min(2, len(core)), len(core))
                    core.insert(pos, fn)
            pols: list[Obj] = []
            for fn in core:
                if len(pols) >= k:
                    break
                p = fn()
                if p is not None:
                    pols.append(p)
            pool = self.ordinary_extras(ns)
            if self.messy and ns.kind != "system":
                pool = pool + self.messy_extras(ns)
            fns = [f for f, _ in pool]
            ws = [w for _, w in pool]
            tries = 0
            while len(pols) < k:
                p = rng.choices(fns, ws)[0]()
                tries += 1
                if p is None and tries > 40:
                    p = self.p_fallback(ns)
                if p is not None:
                    pols.append(p)
            per_ns.append((ns, pols))
        return per_ns

    def p_fallback(self, ns: NS) -> Obj:
        rng = self.rng
        a = rng.choice(ns.apps)
        m = rng.choice(self.app_ns_list)
        b = rng.choice(m.apps)
        frm = [self.xpeer(m, b)]
        if rng.random() < 0.5:
            frm.insert(0, {"podSelector": self.pod_sel(rng.choice(ns.apps))})
        rule: Obj = {"from": frm}
        if a.ports:
            rule["ports"] = self.prefs(a.main_ports())
        return self.policy(
            ns, f"allow-{b.name}-to-{a.name}", self.pod_sel(a), ingress=[rule], types=["Ingress"]
        )

    # ---------------------------------------------------------------- output
    def write(self, outdir: str) -> dict[str, Any]:
        t0 = time.time()
        self.build_namespaces()
        inv = self.build_inventory()
        per_ns = self.build_policies()
        pdir = os.path.join(outdir, "policies")
        if os.path.isdir(pdir):
            shutil.rmtree(pdir)
        os.makedirs(pdir, exist_ok=True)
        with open(os.path.join(outdir, "inventory.json"), "w") as f:
            json.dump(inv, f, indent=4)
            f.write("\n")
        n_files = 0
        n_pol = 0
        rng = self.rng
        for ns, pols in per_ns:
            n_pol += len(pols)
            if not self.messy:
                # one policy per file, GitOps style
                for p in pols:
                    fn = f"{ns.name}--{p['metadata']['name']}.yaml"
                    self.dump(os.path.join(pdir, fn), [p])
                    n_files += 1
                continue
            mode = rng.random()
            if mode < 0.4:
                for p in pols:
                    ext = "yml" if rng.random() < 0.2 else "yaml"
                    fn = f"{ns.name}--{p['metadata']['name']}.{ext}"
                    if rng.random() < 0.03:
                        with open(os.path.join(pdir, fn[: -len(ext)] + "json"), "w") as f:
                            json.dump(p, f, indent=2)
                    else:
                        self.dump(os.path.join(pdir, fn), [p], header=rng.random() < 0.3)
                    n_files += 1
            elif mode < 0.8:
                # a multi-document bundle per namespace
                self.dump(
                    os.path.join(pdir, f"{ns.name}.yaml"), pols, header=True, leading_sep=rng.random() < 0.3
                )
                n_files += 1
            elif mode < 0.9:
                # kubectl get netpol -o yaml
                lst = {"apiVersion": "v1", "kind": "List", "items": pols, "metadata": {"resourceVersion": ""}}
                self.dump(os.path.join(pdir, f"{ns.name}-netpol-list.yaml"), [lst])
                n_files += 1
            else:
                # chunks of a few
                i = 0
                part = 1
                while i < len(pols):
                    k = rng.randint(2, 5)
                    self.dump(
                        os.path.join(pdir, f"{ns.name}-part{part}.yaml"),
                        pols[i : i + k],
                        header=rng.random() < 0.5,
                    )
                    i += k
                    part += 1
                    n_files += 1
        self.stats.update(
            {
                "namespaces": len(self.namespaces),
                "policies": n_pol,
                "policy_files": n_files,
                "tenants": len(self.tenants),
                "seconds": round(time.time() - t0, 2),
            }
        )
        counts = sorted(len(p) for _, p in per_ns)
        self.stats["policies_per_ns_min_median_max"] = [counts[0], counts[len(counts) // 2], counts[-1]]
        self.stats["ns_with_1_2"] = sum(1 for c in counts if c <= 2)
        self.stats["ns_with_30plus"] = sum(1 for c in counts if c >= 30)
        return self.stats

    def dump(self, path: str, docs: list[Obj], header: bool = False, leading_sep: bool = False) -> None:
        with open(path, "w") as f:
            if header:
                f.write(f"# {os.path.basename(path)}: network policies, maintained by the owning team\n")
            if leading_sep:
                f.write("---\n")
            yaml.dump_all(docs, f, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120)


def shape(spec: ClusterSpec) -> tuple[int, int, int]:
    """(namespaces, pods per namespace, policies) for ``spec``: its namespaces count the system ones
    too, so M and L are gen.py's own; smaller specs are raised to what the model needs."""
    namespaces = max(MIN_NAMESPACES, spec.namespaces)
    return namespaces, max(MIN_PODS_PER_NS, spec.pods // namespaces), max(namespaces, spec.policies)


def generate_cluster(spec: ClusterSpec, out: Path, mix: str = "ordinary") -> dict[str, Any]:
    """Write the cluster into ``out``; what it holds (the statistics gen.py printed)."""
    if mix not in MIXES:
        raise ValueError(f"unknown mix {mix!r} (choose from {', '.join(MIXES)})")
    out.mkdir(parents=True, exist_ok=True)
    return Generator(spec.name, mix, spec.seed, *shape(spec)).write(str(out))


def write_cluster(spec: ClusterSpec, out: Path, mix: str = "ordinary") -> Path:
    """``out/policies/`` (one file a policy, or with ``mix="messy"`` files of every layout) and
    ``out/inventory.json``, like ``generate.write_cluster``."""
    generate_cluster(spec, out, mix)
    return out


def _write_and_report(spec: ClusterSpec, out: Path, mix: str) -> Path:
    json.dump(generate_cluster(spec, out, mix), sys.stderr, indent=1)
    sys.stderr.write("\n")
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """``generate.main``'s command line with ``--mix``; the statistics go to stderr."""
    mixer = argparse.ArgumentParser(add_help=False)
    mixer.add_argument("--mix", choices=MIXES, default="ordinary")
    known, rest = mixer.parse_known_args(argv)
    sys.argv[1:] = rest  # generate.main reads sys.argv
    doc = f"{(__doc__ or '').splitlines()[0]} --mix {{{','.join(MIXES)}}} picks the mix (default ordinary)."
    generate.main(functools.partial(_write_and_report, mix=known.mix), doc)


if __name__ == "__main__":
    main()
