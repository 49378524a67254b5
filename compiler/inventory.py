"""The cluster's namespaces and pods, as ``kubectl get namespaces,pods -A -o json`` prints them.

Only set *contents* depend on this; rules never do. Pods that are not policed endpoints
(hostNetwork, finished, no address on the network) are dropped here, once.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from .errors import InputError
from .ir import NAMESPACE_NAME_LABEL, Address

NAMESPACE_ISOLATION_ANNOTATION = "net.beta.kubernetes.io/network-policy"


@attrs.frozen
class Namespace:
    name: str
    labels: Mapping[str, str] = attrs.field(factory=dict, hash=False)
    annotations: Mapping[str, str] = attrs.field(factory=dict, hash=False)


@attrs.frozen
class NamedPort:
    name: str
    protocol: str
    port: int


@attrs.frozen
class Pod:
    namespace: str
    name: str
    labels: Mapping[str, str] = attrs.field(factory=dict, hash=False)
    ips: tuple[Address, ...] = ()
    ports: tuple[NamedPort, ...] = ()
    annotations: Mapping[str, str] = attrs.field(factory=dict, hash=False)

    def named_ports(self) -> dict[tuple[str, str], int]:
        """(protocol, name) -> number; the first container port with that name wins."""
        out: dict[tuple[str, str], int] = {}
        for p in self.ports:
            out.setdefault((p.protocol, p.name), p.port)
        return out


@attrs.frozen
class Inventory:
    namespaces: tuple[Namespace, ...] = ()
    pods: tuple[Pod, ...] = ()

    def namespace(self, name: str) -> Namespace:
        for ns in self.namespaces:
            if ns.name == name:
                return ns
        return Namespace(name, {NAMESPACE_NAME_LABEL: name})


# How a pod's addresses on a network are found; the default is the primary network.
IPSource = Callable[[Mapping[str, Any], str], tuple[Address, ...]]


def pod_ips(pod: Mapping[str, Any], pod_ref: str) -> tuple[Address, ...]:
    """``status.podIPs``, falling back to ``status.podIP``."""
    status = pod.get("status") or {}
    raw = [entry.get("ip") for entry in status.get("podIPs") or () if isinstance(entry, dict)]
    if not raw and status.get("podIP"):
        raw = [status["podIP"]]
    return parse_addresses(raw)


def parse_addresses(raw: Iterable[object]) -> tuple[Address, ...]:
    out: list[Address] = []
    for value in raw:
        if not isinstance(value, str) or not value:
            continue
        try:
            address = ipaddress.ip_address(value.split("/")[0])
        except ValueError:
            continue
        if address not in out:
            out.append(address)
    return tuple(out)


def _labels(meta: Mapping[str, Any]) -> dict[str, str]:
    labels = meta.get("labels") or {}
    return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}


def _container_ports(spec: Mapping[str, Any]) -> tuple[NamedPort, ...]:
    out: list[NamedPort] = []
    containers = list(spec.get("containers") or ()) + list(spec.get("initContainers") or ())
    for container in containers:
        if not isinstance(container, dict):
            continue
        for port in container.get("ports") or ():
            if isinstance(port, dict) and port.get("name") and isinstance(port.get("containerPort"), int):
                out.append(NamedPort(port["name"], port.get("protocol") or "TCP", port["containerPort"]))
    return tuple(out)


def _objects(doc: Any) -> Iterable[Mapping[str, Any]]:
    if isinstance(doc, dict):
        if doc.get("kind", "").endswith("List") and isinstance(doc.get("items"), list):
            for item in doc["items"]:
                yield from _objects(item)
        else:
            yield doc
    elif isinstance(doc, list):
        for item in doc:
            yield from _objects(item)


def build_inventory(docs: Iterable[Any], ip_source: IPSource = pod_ips) -> Inventory:
    """Namespaces and policed pods from parsed kubectl output (any mix of Lists and objects)."""
    namespaces: dict[str, Namespace] = {}
    pods: list[Pod] = []
    for obj in (o for doc in docs for o in _objects(doc)):
        kind = obj.get("kind")
        meta = obj.get("metadata") or {}
        if kind == "Namespace" and meta.get("name"):
            labels = _labels(meta)
            labels[NAMESPACE_NAME_LABEL] = meta["name"]
            annotations = {str(k): str(v) for k, v in (meta.get("annotations") or {}).items()}
            namespaces[meta["name"]] = Namespace(meta["name"], labels, annotations)
        elif kind == "Pod":
            spec = obj.get("spec") or {}
            phase = (obj.get("status") or {}).get("phase")
            if spec.get("hostNetwork") or phase in ("Succeeded", "Failed"):
                continue
            namespace = meta.get("namespace") or "default"
            ips = ip_source(obj, f"{namespace}/{meta.get('name')}")
            if not ips:
                continue
            annotations = {str(k): str(v) for k, v in (meta.get("annotations") or {}).items()}
            pods.append(
                Pod(namespace, str(meta.get("name")), _labels(meta), ips, _container_ports(spec), annotations)
            )
    for pod in pods:  # a pod whose namespace object is missing still lives in a namespace
        namespaces.setdefault(pod.namespace, Namespace(pod.namespace, {NAMESPACE_NAME_LABEL: pod.namespace}))
    return Inventory(
        tuple(sorted(namespaces.values(), key=lambda n: n.name)),
        tuple(sorted(pods, key=lambda p: (p.namespace, p.name))),
    )


def load_documents(path: str, text: str) -> list[Any]:
    """JSON through ``json`` (fast); anything else through PyYAML's C loader when present."""
    stripped = text.lstrip()
    if path.endswith(".json") or stripped.startswith(("{", "[")):
        try:
            return [json.loads(text)]
        except json.JSONDecodeError as exc:
            if path.endswith(".json"):
                raise InputError(f"invalid JSON: {exc.msg}", path, exc.lineno, exc.colno) from None
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        return [d for d in yaml.load_all(text, Loader=loader) if d is not None]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        raise InputError(f"invalid YAML: {exc.problem}", path, line, col) from None
    except yaml.YAMLError as exc:
        raise InputError(f"invalid YAML: {exc}", path) from None


def read_inventory(path: str, ip_source: IPSource = pod_ips) -> Inventory:
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise InputError(f"cannot read inventory: {exc.strerror}", path) from None
    return build_inventory(load_documents(path, text), ip_source)
