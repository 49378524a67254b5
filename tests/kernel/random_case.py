"""Random truth-table cases whose tables the reference evaluator fills in (no root).

The hand-written cases pin one behaviour each; these throw the shapes together the way policy
folders do (several policies per pod, both directions, peers of every kind in one rule, named
ports that differ between pods, ipBlocks with excepts around pods, dual stack, extensions/v1beta1
objects and the 1.6 namespace annotation), so that the kernel
judges npc on combinations nobody wrote a table for. A case is a function of its seed: a failure
names the seed, and the case file is written beside the run's inputs.

Everything drawn is what the API server accepts: a case must compile, and a refusal is a failure.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from .case import Case, parse_case
from .expected import evaluated, evaluator_for

NAMESPACES = ("a", "b", "c")
APPS = ("web", "db", "api")
TIERS = ("front", "back")
TEAMS = ("x", "y")
# Probed on every case: named ports resolve to 80 or 8080 (TCP) or 53 (UDP); 81 sits in ranges.
PROBES = (("TCP", 80), ("TCP", 8080), ("TCP", 81), ("UDP", 53))
DEFAULT_DENY = "net.beta.kubernetes.io/network-policy"


def seeds(default: range) -> range:
    """The seeds a test runs: ``default``, or ``NPC_RANDOM_SEEDS=100:400`` (other seeds, many more,
    on a machine with time to spare)."""
    first, _, end = os.environ.get("NPC_RANDOM_SEEDS", "").partition(":")
    return range(int(first), int(end)) if end else default


def _labels(rng: random.Random, choices: dict[str, tuple[str, ...]]) -> dict[str, str]:
    return {key: rng.choice(values) for key, values in choices.items() if rng.random() < 0.8}


def _selector(rng: random.Random, choices: dict[str, tuple[str, ...]]) -> dict[str, Any]:
    """Empty, ``matchLabels``, ``matchExpressions`` (every operator) or both."""
    out: dict[str, Any] = {}
    keys = list(choices)
    if rng.random() < 0.5:
        key = rng.choice(keys)
        out["matchLabels"] = {key: rng.choice(choices[key])}
    if rng.random() < 0.4:
        key = rng.choice(keys)
        op = rng.choice(("In", "NotIn", "Exists", "DoesNotExist"))
        expression: dict[str, Any] = {"key": key, "operator": op}
        if op in ("In", "NotIn"):
            expression["values"] = sorted(rng.sample(choices[key], rng.randint(1, len(choices[key]))))
        out["matchExpressions"] = [expression]
    return out


def _pod_peer(rng: random.Random) -> dict[str, Any]:
    peer: dict[str, Any] = {}
    shape = rng.choice(("pods", "namespaces", "both", "lists", "absence", "names"))
    if shape == "names":  # lists of names, which npc splits where many lists name a namespace
        names = sorted(rng.sample(NAMESPACES, 2))
        peer["namespaceSelector"] = {
            "matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": names}]
        }
        if rng.random() < 0.7:
            peer["podSelector"] = {"matchLabels": {"app": rng.choice(APPS)}}
        return peer
    if shape == "lists":  # value lists across namespaces, which npc tests a value at a time
        peer["namespaceSelector"] = {
            "matchExpressions": [{"key": "team", "operator": "In", "values": list(TEAMS)}]
        }
        if rng.random() < 0.5:
            values = sorted(rng.sample(APPS, 2))
            peer["podSelector"] = {"matchExpressions": [{"key": "app", "operator": "In", "values": values}]}
        return peer
    if shape == "absence":  # across namespaces, tested as in one set and not in others
        spaces = rng.choice(([], [{"key": "team", "operator": "NotIn", "values": [rng.choice(TEAMS)]}]))
        pods = rng.choice((
            [{"key": "app", "operator": "NotIn", "values": [rng.choice(APPS)]}],
            [{"key": "tier", "operator": "DoesNotExist"}],
            [{"key": "tier", "operator": "In", "values": [rng.choice(TIERS)]}],
        ))  # fmt: skip
        if not spaces and pods[0]["operator"] == "In":
            spaces = [{"key": "team", "operator": "DoesNotExist"}]
        return {"namespaceSelector": {"matchExpressions": spaces}, "podSelector": {"matchExpressions": pods}}
    if shape in ("pods", "both"):
        peer["podSelector"] = _selector(rng, {"app": APPS, "tier": TIERS})
    if shape in ("namespaces", "both"):
        if rng.random() < 0.5:
            peer["namespaceSelector"] = {
                "matchLabels": {"kubernetes.io/metadata.name": rng.choice(NAMESPACES)}
            }
        else:
            peer["namespaceSelector"] = _selector(rng, {"team": TEAMS})
    return peer


def _ip_block(rng: random.Random, pods: list[dict[str, Any]], families: list[str]) -> dict[str, Any]:
    family = rng.choice(families)
    inside = [f"{p['namespace']}/{p['name']}" for p in pods if not p.get("external")]
    if family == "v6":
        one = f"{{{{ip6 {rng.choice(inside)}}}}}/128"
        return rng.choice(({"cidr": one}, {"cidr": "fd00:244::/64", "except": [one]}, {"cidr": "::/0"}))
    one = f"{{{{ip {rng.choice(inside)}}}}}/32"
    return rng.choice((
        {"cidr": one},
        {"cidr": "10.244.0.0/24", "except": [one]},
        {"cidr": "192.168.200.0/24"},
        {"cidr": "0.0.0.0/0", "except": ["10.244.0.0/16"]},
    ))  # fmt: skip


def _ports(rng: random.Random) -> list[dict[str, Any]]:
    out = []
    for _ in range(rng.randint(1, 2)):
        kind = rng.choice(("number", "name", "range", "protocol"))
        if kind == "number":
            out.append({"protocol": rng.choice(("TCP", "UDP")), "port": rng.choice((80, 8080, 53))})
        elif kind == "name":
            port: dict[str, Any] = {"port": rng.choice(("http", "dns", "metrics"))}
            if rng.random() < 0.5:
                port["protocol"] = rng.choice(("TCP", "UDP"))
            out.append(port)
        elif kind == "range":
            out.append({"protocol": "TCP", "port": 80, "endPort": rng.choice((81, 8080))})
        else:
            out.append({"protocol": rng.choice(("TCP", "UDP", "SCTP"))})
    return out


def _rule(rng: random.Random, side: str, pods: list[dict[str, Any]], families: list[str]) -> dict[str, Any]:
    rule: dict[str, Any] = {}
    if rng.random() < 0.8:
        rule[side] = [
            {"ipBlock": _ip_block(rng, pods, families)} if rng.random() < 0.25 else _pod_peer(rng)
            for _ in range(rng.randint(1, 3))
        ]
    if rng.random() < 0.6:
        rule["ports"] = _ports(rng)
    return rule


def _policy(rng: random.Random, n: int, pods: list[dict[str, Any]], families: list[str]) -> dict[str, Any]:
    spec: dict[str, Any] = {"podSelector": _selector(rng, {"app": APPS, "tier": TIERS})}
    types = rng.choice((["Ingress"], ["Egress"], ["Ingress", "Egress"], None))
    for direction, side in (("Ingress", "from"), ("Egress", "to")):
        # rules of a direction policyTypes leaves out are written too, sometimes: they are ignored
        listed = direction == "Ingress" if types is None else direction in types
        if listed or rng.random() < 0.3:
            spec[direction.lower()] = [_rule(rng, side, pods, families) for _ in range(rng.randint(0, 2))]
    if types is not None:
        spec["policyTypes"] = types
    return {
        "apiVersion": "extensions/v1beta1" if rng.random() < 0.15 else "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": f"p{n}", "namespace": rng.choice(NAMESPACES)},
        "spec": spec,
    }


def random_case_data(seed: int) -> dict[str, Any]:
    """A case in the shared JSON format, every probe expecting "." (``random_case`` fills them)."""
    rng = random.Random(seed)
    families = ["v4", "v6"] if rng.random() < 0.35 else ["v4"]
    namespaces = [{"name": ns, "labels": _labels(rng, {"team": TEAMS})} for ns in NAMESPACES]
    for ns in namespaces:  # Kubernetes 1.6's isolation, beside the policies
        if rng.random() < 0.15:
            ns["annotations"] = {DEFAULT_DENY: json.dumps({"ingress": {"isolation": "DefaultDeny"}})}
    pods: list[dict[str, Any]] = []
    for i in range(rng.randint(4, 6)):
        ports = [
            {"name": name, "containerPort": number, "protocol": protocol}
            for name, number, protocol in (
                ("http", rng.choice((80, 8080)), rng.choice(("TCP", "TCP", "UDP"))),
                ("dns", 53, "UDP"),
                ("metrics", 8080, "TCP"),
            )
            if rng.random() < 0.6
        ]
        pods.append({
            "namespace": rng.choice(NAMESPACES), "name": f"p{i}",
            "labels": _labels(rng, {"app": APPS, "tier": TIERS}), "ports": ports,
        })  # fmt: skip
    if rng.random() < 0.5:
        pods.append({"namespace": "ext", "name": "host", "external": True})
    policies = [_policy(rng, n, pods, families) for n in range(rng.randint(1, 5))]
    size = len(pods)
    rows = ["".join("?" if i == j else "." for j in range(size)) for i in range(size)]
    return {
        "name": f"random case, seed {seed}",
        "families": families,
        "namespaces": namespaces,
        "pods": pods,
        "policies": policies,
        "probes": [{"protocol": protocol, "port": port, "expect": rows} for protocol, port in PROBES],
    }


def random_case(seed: int, directory: Path, listed: Sequence[int] | None = None) -> Case:
    """The seed's case with the evaluator's tables, written to ``directory/random-<seed>.json``;
    ``listed``: the indices of the pods the inventory lists (all by default; the others still
    run, as pods the inventory does not know yet or any more)."""
    data = random_case_data(seed)
    path = directory / f"random-{seed:03d}.json"
    draft = parse_case(data, path)
    endpoints = None if listed is None else [draft.endpoints[i] for i in listed]
    evaluator = evaluator_for(draft, directory / "evaluator", "yaml", endpoints)
    tables: dict[tuple[str, int, str], tuple[str, ...]] = {}
    for check in draft.checks:  # one table per probe line, the same on every family it covers
        table = evaluated(draft, check, evaluator)
        tables.setdefault((check.protocol, check.port, check.family), table)
    probes = [
        {"protocol": protocol, "port": port, "family": family, "expect": list(table)}
        for (protocol, port, family), table in tables.items()
    ]
    data = {**data, "probes": probes}
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")
    return parse_case(data, path)


@attrs.frozen
class Update:
    """A second apply onto a node that runs a first: ``case`` (its policies, the tables for them
    and ``listed``'s inventory) replaces ``first_policies`` applied with ``first_listed``'s."""

    case: Case
    listed: tuple[int, ...]
    first_policies: tuple[dict[str, Any], ...]
    first_listed: tuple[int, ...]


def random_update(seed: int, directory: Path) -> Update:
    """The seed's case as the second of two applies: the first has some of its policies and
    others drawn for the same pods, and each inventory leaves out pods the other lists (pods that
    come and go), so sets, chains and dispatch are replaced, kept, emptied and filled between."""
    rng = random.Random(f"update-{seed}")
    data = random_case_data(seed)
    pods, families = data["pods"], data["families"]
    inside = [i for i, pod in enumerate(pods) if not pod.get("external")]
    first_listed = tuple(i for i in inside if rng.random() < 0.8)
    listed = tuple(i for i in inside if rng.random() < 0.8)
    case = random_case(seed, directory, listed)
    # a change as a policy folder sees one: some policies stay, some are new, some go
    kept = [p for p in data["policies"] if rng.random() < 0.6]
    first = kept + [_policy(rng, 10 + n, pods, families) for n in range(rng.randint(0, 3))]
    documents = attrs.evolve(case, policies=tuple(first)).policy_documents()  # its placeholders filled
    record = {"seed": seed, "first_policies": documents, "first_listed": first_listed, "listed": listed}
    (directory / f"update-{seed:03d}.json").write_text(json.dumps(record, indent=1), encoding="utf-8")
    return Update(case, listed, tuple(documents), first_listed)
