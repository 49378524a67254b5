"""Truth-table cases: loading, addressing, and the inputs a user would hand to ``npc``.

Nothing here needs root, so the same code feeds the kernel suite and the evaluator check. The format
is the shared one (``../shared/conformance/README.md``) plus compatible extensions:

- ``"families": ["v4", "v6"]`` on the case (default ``["v4"]``): which address families pods get;
- ``"external": true`` on a pod: a host routed through the node but absent from the inventory;
- ``"ip"`` / ``"ip6"`` on a pod: a fixed address instead of the generated one (for ipBlock ranges);
- ``{{ip ns/pod}}`` and ``{{ip6 ns/pod}}`` placeholders inside policies; ``{{ip@net2 ns/pod}}`` for
  a pod's address on a secondary network;
- ``"family": "v4" | "v6"`` on a probe; without it the probe must hold on every family of the case;
- ``"network": NAME`` on a probe: probe the pods' addresses on that secondary network (pods get their
  secondary interfaces and annotations from ``multinet.py``; see ``cases/multinet/``).
"""

from __future__ import annotations

import copy
import ipaddress
import json
import re
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import attrs
from yaml_text import dump

Family = Literal["v4", "v6"]
FAMILIES: tuple[Family, ...] = ("v4", "v6")
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
CASES_DIR = Path(__file__).resolve().parent.parent / "cases"
SHARED_SEEDS = Path(__file__).resolve().parents[3] / "shared" / "conformance"

# Generated addresses: pods in a test pod range, external hosts outside it.
_POD_V4 = ipaddress.IPv4Network("10.244.0.0/16")
_POD_V6 = ipaddress.IPv6Network("fd00:244::/64")
_EXT_V4 = ipaddress.IPv4Network("192.168.200.0/24")
_EXT_V6 = ipaddress.IPv6Network("fd00:200::/64")
_PLACEHOLDER = re.compile(r"\{\{\s*(ip6?)(?:@([^}\s]+))?\s+([^}\s]+)\s*\}\}")


class CaseError(ValueError):
    """A malformed case file (a bug in the test data, reported with the file name)."""


@attrs.frozen
class ContainerPort:
    name: str | None
    port: int
    protocol: str = "TCP"


@attrs.frozen
class Attachment:
    """A pod's interface on a secondary network: routed through the node like ``eth0``."""

    network: str
    interface: str
    addresses: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]
    ranges: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]  # the pod routes these via it


@attrs.frozen
class Endpoint:
    """One pod (or external host): what the inventory says about it and where it lives."""

    index: int
    namespace: str
    name: str
    labels: Mapping[str, str] = attrs.field(factory=dict, hash=False)
    ports: tuple[ContainerPort, ...] = ()
    external: bool = False
    ipv4: ipaddress.IPv4Address | None = None
    ipv6: ipaddress.IPv6Address | None = None
    attachments: tuple[Attachment, ...] = ()
    annotations: Mapping[str, str] = attrs.field(factory=dict, hash=False)

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    def address(
        self, family: Family, network: str | None = None
    ) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        """The address on the primary network, or on ``network`` (None when not attached to it)."""
        if network is None:
            return self.ipv4 if family == "v4" else self.ipv6
        version = 4 if family == "v4" else 6
        for attachment in self.attachments:
            if attachment.network == network:
                return next((a for a in attachment.addresses if a.version == version), None)
        return None

    @property
    def addresses(self) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]:
        return tuple(a for a in (self.ipv4, self.ipv6) if a is not None)


@attrs.frozen
class Check:
    """One probe line on one family: a matrix of expectations, row = source, column = destination."""

    protocol: str
    port: int
    family: Family
    expect: tuple[str, ...]
    network: str | None = None  # None: the primary network

    @property
    def label(self) -> str:
        return f"{self.protocol} {self.port} ({self.family}{' on ' + self.network if self.network else ''})"


@attrs.frozen
class Case:
    name: str
    path: Path
    namespaces: tuple[Mapping[str, Any], ...]
    endpoints: tuple[Endpoint, ...]
    policies: tuple[Mapping[str, Any], ...]
    checks: tuple[Check, ...]
    families: tuple[Family, ...]

    @property
    def id(self) -> str:
        return self.path.stem

    def listen_ports(self) -> tuple[int, ...]:
        """Every probed or declared port: each endpoint serves all of them, TCP and UDP."""
        ports = {c.port for c in self.checks}
        ports.update(p.port for e in self.endpoints for p in e.ports if p.protocol in ("TCP", "UDP"))
        return tuple(sorted(ports))

    def endpoint(self, ref: str) -> Endpoint:
        for e in self.endpoints:
            if e.ref == ref:
                return e
        raise CaseError(f"{self.path.name}: no pod {ref!r}")

    def policy_documents(self) -> list[dict[str, Any]]:
        """The policies with ``{{ip ns/pod}}`` placeholders replaced by addresses."""

        def substitute(match: re.Match[str]) -> str:
            kind, network, ref = match.groups()
            address = self.endpoint(ref).address("v6" if kind == "ip6" else "v4", network)
            if address is None:
                raise CaseError(
                    f"{self.path.name}: {ref} has no {kind} address{' on ' + network if network else ''}"
                )
            return str(address)

        text = _PLACEHOLDER.sub(substitute, json.dumps(list(self.policies)))
        documents: list[dict[str, Any]] = json.loads(text)
        return documents

    def inventory(self, endpoints: Iterable[Endpoint] | None = None) -> dict[str, Any]:
        """What ``kubectl get namespaces,pods -A -o json`` prints for this cluster (externals left out)."""
        chosen = [e for e in (self.endpoints if endpoints is None else endpoints) if not e.external]
        items: list[dict[str, Any]] = [_namespace_object(ns) for ns in self.namespaces]
        items.extend(_pod_object(e) for e in chosen)
        return {"apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": ""}}


def _namespace_object(ns: Mapping[str, Any]) -> dict[str, Any]:
    labels = dict(ns.get("labels") or {})
    labels.setdefault(NAMESPACE_NAME_LABEL, ns["name"])
    meta: dict[str, Any] = {"name": ns["name"], "labels": labels, "uid": _uid("ns", ns["name"])}
    if ns.get("annotations"):
        meta["annotations"] = dict(ns["annotations"])
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": meta,
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    }


def _pod_object(e: Endpoint) -> dict[str, Any]:
    ports = [
        {**({"name": p.name} if p.name else {}), "containerPort": p.port, "protocol": p.protocol}
        for p in e.ports
    ]
    container: dict[str, Any] = {"name": "main", "image": "registry.k8s.io/e2e-test-images/agnhost:2.47"}
    if ports:
        container["ports"] = ports
    ips = [str(a) for a in e.addresses]
    meta: dict[str, Any] = {"name": e.name, "namespace": e.namespace, "labels": dict(e.labels)}
    if e.annotations:
        meta["annotations"] = dict(e.annotations)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {**meta, "uid": _uid("pod", e.ref)},
        "spec": {"containers": [container], "nodeName": "node-1", "restartPolicy": "Always"},
        "status": {
            "phase": "Running",
            "hostIP": "192.168.1.10",
            "podIP": ips[0],
            "podIPs": [{"ip": ip} for ip in ips],
        },
    }


def _uid(kind: str, name: str) -> str:
    import uuid

    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"npc-test/{kind}/{name}"))


def _endpoints(
    raw: Sequence[Mapping[str, Any]], families: Sequence[Family], where: str
) -> tuple[Endpoint, ...]:
    out: list[Endpoint] = []
    seen: set[str] = set()
    for index, pod in enumerate(raw):
        external = bool(pod.get("external", False))
        v4_base, v6_base = (_EXT_V4, _EXT_V6) if external else (_POD_V4, _POD_V6)
        ipv4 = ipv6 = None
        if "v4" in families:
            ipv4 = ipaddress.IPv4Address(pod["ip"]) if "ip" in pod else v4_base[10 + index]
        if "v6" in families:
            ipv6 = ipaddress.IPv6Address(pod["ip6"]) if "ip6" in pod else v6_base[0x10 + index]
        ports = tuple(
            ContainerPort(p.get("name"), int(p["containerPort"]), p.get("protocol", "TCP"))
            for p in pod.get("ports") or ()
        )
        endpoint = Endpoint(
            index, pod.get("namespace", "default"), pod["name"], dict(pod.get("labels") or {}),
            ports, external, ipv4, ipv6,
        )  # fmt: skip
        if endpoint.ref in seen:
            raise CaseError(f"{where}: duplicate pod {endpoint.ref}")
        seen.add(endpoint.ref)
        out.append(endpoint)
    addresses = [a for e in out for a in e.addresses]
    if len(set(addresses)) != len(addresses):
        raise CaseError(f"{where}: two pods share an address")
    return tuple(out)


def _checks(
    raw: Sequence[Mapping[str, Any]], families: Sequence[Family], size: int, where: str
) -> tuple[Check, ...]:
    out: list[Check] = []
    for n, probe in enumerate(raw):
        protocol = probe.get("protocol", "TCP")
        if protocol not in ("TCP", "UDP"):
            raise CaseError(f"{where}: probe {n}: only TCP and UDP can be probed, not {protocol}")
        expect = tuple(probe["expect"])
        if len(expect) != size or any(len(row) != size for row in expect):
            raise CaseError(f"{where}: probe {n}: expect must be {size} rows of {size} characters")
        for i, row in enumerate(expect):
            if set(row) - set(".X?") or row[i] != "?":
                raise CaseError(f"{where}: probe {n}: row {i} must use . X ? and have ? on the diagonal")
        wanted = [probe["family"]] if "family" in probe else list(families)
        for family in wanted:
            if family not in families:
                raise CaseError(f"{where}: probe {n}: family {family} is not one of the case's {families}")
            out.append(Check(protocol, int(probe["port"]), family, expect, probe.get("network")))
    return tuple(out)


def parse_case(data: Mapping[str, Any], path: Path) -> Case:
    where = path.name
    families = tuple(data.get("families", ["v4"]))
    if not families or set(families) - set(FAMILIES):
        raise CaseError(f"{where}: families must be a non-empty subset of {FAMILIES}")
    endpoints = _endpoints(data["pods"], families, where)
    namespaces = [dict(ns) for ns in data.get("namespaces", ())]
    declared = {ns["name"] for ns in namespaces}
    for e in endpoints:  # a namespace every pod lives in, as in a real cluster
        if not e.external and e.namespace not in declared:
            namespaces.append({"name": e.namespace, "labels": {}})
            declared.add(e.namespace)
    case = Case(
        name=data["name"],
        path=path,
        namespaces=tuple(namespaces),
        endpoints=endpoints,
        policies=tuple(copy.deepcopy(list(data.get("policies", ())))),
        checks=_checks(data["probes"], families, len(endpoints), where),
        families=families,
    )
    case.policy_documents()  # fail early on a bad placeholder
    return case


def load_case(path: Path) -> Case:
    with path.open(encoding="utf-8") as fh:
        return parse_case(json.load(fh), path)


def case_paths() -> list[Path]:
    """The project's cases; the shared seeds are copied in, so ``../shared`` is never needed."""
    return sorted(CASES_DIR.glob("*.json"))


def load_cases() -> list[Case]:
    return [load_case(p) for p in case_paths()]


# How policies are handed to npc. Later forms (the DSL) only add an entry here.
SourceForm = Literal["yaml", "json-list", "dsl"]


def write_inputs(
    case: Case,
    directory: Path,
    form: str = "yaml",
    endpoints: Iterable[Endpoint] | None = None,
    documents: Sequence[Mapping[str, Any]] | None = None,
) -> tuple[list[Path], Path]:
    """Write the policies (in ``form``) and the inventory; return (policy paths, inventory path).

    ``endpoints`` / ``documents`` replace the case's pods / policies (to re-apply changed inputs).
    With no policies the (empty) policy folder itself is the path, as a user would pass a folder.
    """
    policy_dir = directory / "policies"
    policy_dir.mkdir(parents=True, exist_ok=True)
    paths = write_policies(case.policy_documents() if documents is None else documents, policy_dir, form)
    inventory = directory / "inventory.json"
    inventory.write_text(json.dumps(case.inventory(endpoints), indent=1), encoding="utf-8")
    return (paths or [policy_dir]), inventory


def write_policies(documents: Sequence[Mapping[str, Any]], directory: Path, form: str) -> list[Path]:
    if not documents:
        return []
    directory.mkdir(parents=True, exist_ok=True)
    if form == "yaml":  # one file per policy, as a GitOps folder holds them
        paths = []
        for n, doc in enumerate(documents):
            path = directory / f"{n:02d}-{doc.get('metadata', {}).get('name', 'policy')}.yaml"
            path.write_text(dump(dict(doc), sort_keys=False), encoding="utf-8")
            paths.append(path)
        return paths
    if form == "json-list":  # what `kubectl get networkpolicies -A -o json` prints
        path = directory / "policies.json"
        listing = {"apiVersion": "v1", "kind": "List", "items": list(documents)}
        path.write_text(json.dumps(listing, indent=1), encoding="utf-8")
        return [path]
    if form == "dsl":  # the same policies as the DSL, through the user-facing converter
        sources = write_policies(documents, directory.parent / "k8s-sources", "yaml")
        argv = [sys.executable, "-m", "npc", "convert", "--to", "dsl", *map(str, sources)]
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"npc convert --to dsl failed ({done.returncode}):\n{done.stderr}")
        path = directory / "policies.npc"
        path.write_text(done.stdout, encoding="utf-8")
        return [path]
    raise ValueError(f"unknown policy source form {form!r}")
