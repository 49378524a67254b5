"""The cluster's namespaces and pods, as ``kubectl get namespaces,pods -A -o json`` prints them.

Only set *contents* depend on this; rules never do. Pods that are not policed endpoints
(hostNetwork, finished, no address on the network) are dropped here, once.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from .documents import load_documents
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


class _Shape:
    """Type checks for kubectl output, so a malformed inventory is an error with a field path."""

    def __init__(self, file: str) -> None:
        self.file = file

    def mapping(self, value: Any, where: str) -> Mapping[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise InputError(f"expected a mapping, got {type(value).__name__}", self.file, path=where)
        return value

    def sequence(self, value: Any, where: str) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise InputError(f"expected a list, got {type(value).__name__}", self.file, path=where)
        return value

    def strings(self, value: Any, where: str) -> dict[str, str]:
        return {str(k): str(v) for k, v in self.mapping(value, where).items()}

    def container_ports(self, spec: Mapping[str, Any], where: str) -> tuple[NamedPort, ...]:
        out: list[NamedPort] = []
        for field in ("containers", "initContainers"):
            for i, container in enumerate(self.sequence(spec.get(field), f"{where}.{field}")):
                here = f"{where}.{field}[{i}]"
                for j, port in enumerate(
                    self.sequence(self.mapping(container, here).get("ports"), f"{here}.ports")
                ):
                    port = self.mapping(port, f"{here}.ports[{j}]")
                    number = port.get("containerPort")
                    if port.get("name") and isinstance(number, int) and not isinstance(number, bool):
                        out.append(NamedPort(str(port["name"]), str(port.get("protocol") or "TCP"), number))
        return tuple(out)


def _objects(doc: Any, where: str) -> Iterable[tuple[str, Mapping[str, Any]]]:
    if isinstance(doc, dict):
        if str(doc.get("kind", "")).endswith("List") and isinstance(doc.get("items"), list):
            for i, item in enumerate(doc["items"]):
                yield from _objects(item, f"{where}items[{i}].")
        else:
            yield where, doc
    elif isinstance(doc, list):
        for i, item in enumerate(doc):
            yield from _objects(item, f"{where}[{i}].")


def build_inventory(
    docs: Iterable[Any], ip_source: IPSource = pod_ips, file: str = "<inventory>"
) -> Inventory:
    """Namespaces and policed pods from parsed kubectl output (any mix of Lists and objects)."""
    shape = _Shape(file)
    namespaces: dict[str, Namespace] = {}
    pods: list[Pod] = []
    for where, obj in (found for doc in docs for found in _objects(doc, "")):
        kind = obj.get("kind")
        meta = shape.mapping(obj.get("metadata"), f"{where}metadata")
        labels = shape.strings(meta.get("labels"), f"{where}metadata.labels")
        annotations = shape.strings(meta.get("annotations"), f"{where}metadata.annotations")
        if kind == "Namespace" and meta.get("name"):
            name = str(meta["name"])
            labels[NAMESPACE_NAME_LABEL] = name
            namespaces[name] = Namespace(name, labels, annotations)
        elif kind == "Pod":
            spec = shape.mapping(obj.get("spec"), f"{where}spec")
            phase = shape.mapping(obj.get("status"), f"{where}status").get("phase")
            if spec.get("hostNetwork") or phase in ("Succeeded", "Failed"):
                continue
            namespace = str(meta.get("namespace") or "default")
            ips = ip_source(obj, f"{namespace}/{meta.get('name')}")
            if not ips:
                continue
            ports = shape.container_ports(spec, f"{where}spec")
            pods.append(Pod(namespace, str(meta.get("name")), labels, ips, ports, annotations))
    for pod in pods:  # a pod whose namespace object is missing still lives in a namespace
        namespaces.setdefault(pod.namespace, Namespace(pod.namespace, {NAMESPACE_NAME_LABEL: pod.namespace}))
    return Inventory(
        tuple(sorted(namespaces.values(), key=lambda n: n.name)),
        tuple(sorted(pods, key=lambda p: (p.namespace, p.name))),
    )


def read_inventory_documents(path: str) -> tuple[list[Any], str]:
    """The inventory file's documents and the sha256 of its bytes (for the manifest), read once
    however many networks are built from them."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise InputError(f"cannot read inventory: {exc.strerror}", path) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"cannot read inventory: not UTF-8 ({exc.reason})", path) from None
    return load_documents(path, text), hashlib.sha256(data).hexdigest()


def read_inventory(path: str, ip_source: IPSource = pod_ips) -> Inventory:
    return build_inventory(read_inventory_documents(path)[0], ip_source, path)
