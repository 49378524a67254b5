"""The cluster's namespaces and pods, as ``kubectl get namespaces,pods -A -o json`` prints them.

Only set *contents* depend on this; rules never do. Pods that are not policed endpoints
(hostNetwork, finished, no address on the network) are dropped here, once.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TextIO

import attrs

from .documents import load_documents, objects_in
from .errors import InputError
from .frontends.annotation import NAMESPACE_ISOLATION_ANNOTATION, isolates_ingress, isolation_note
from .frontends.positions import FieldPath, MapKey, locate, printable, render_path, show, snippet
from .frontends.validate import (
    FieldError,
    check_label,
    check_name,
    dns_label_problem,
    dns_subdomain_problem,
    fail,
    integer,
    items,
    port_name_problem,
    required,
    string,
    type_name,
)
from .ir import NAMESPACE_NAME_LABEL, PROTOCOLS, Address
from .text import INVENTORY_FILE_BYTES, STDIN_NAME, UTF8_BOM, Text, decode, read_bytes, read_stdin


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
    warnings: tuple[str, ...] = ()  # objects skipped (lenient reading), one line each

    def namespace(self, name: str) -> Namespace:
        for ns in self.namespaces:
            if ns.name == name:
                return ns
        return Namespace(name, {NAMESPACE_NAME_LABEL: name})


# How a pod's addresses on a network are found; the default is the primary network.
IPSource = Callable[[Mapping[str, Any], str], tuple[Address, ...]]


def pod_address(text: str, *, subnet: bool = True) -> Address:
    """A pod's address as the kernel can match it: no zone (``fe80::1%eth0``), not unspecified.
    A prefix length is its subnet's, as CNI results write it (``10.32.0.4/12``); without
    ``subnet`` (``status.podIPs``, plain addresses to the API server) only a host's (``/32``):
    ``10.0.0.0/24`` was read as 10.0.0.0. ValueError says what is wrong."""
    try:  # the usual dotted quad, by the C parser (as strict as ``ipaddress``: no leading zeros)
        packed = socket.inet_pton(socket.AF_INET, text)
    except (OSError, ValueError):  # ValueError: a NUL in the text
        pass
    else:
        address4 = ipaddress.IPv4Address(packed)
        if not address4.is_unspecified:
            return address4
    address_text, slash, prefix = text.strip().partition("/")
    try:
        address = ipaddress.ip_address(address_text)
    except ValueError:
        raise ValueError(f"{show(text)} is not an IP address") from None
    if slash and not subnet and prefix != str(address.max_prefixlen):
        raise ValueError(f"{show(text)} is a network: a pod address is one host (/{address.max_prefixlen})")
    if slash and subnet and prefix.isdigit() and int(prefix) < address.max_prefixlen - 1:
        network = ipaddress.ip_network(f"{address}/{prefix}", strict=False)
        if address == network.network_address:  # 10.1.0.0/24: the subnet, where 10.1.0.7/24 is a host in it
            raise ValueError(f"{show(text)} is the network {network} itself, not a host address in it")
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        raise ValueError(f"{show(text)} has a zone (%{printable(address.scope_id)}): a pod address has none")
    if address.is_unspecified:
        raise ValueError(f"{show(text)} is the unspecified address, not a pod's")
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        raise ValueError(f"{show(text)} is IPv4-mapped: the pod's packets carry {address.ipv4_mapped}")
    return address


def pod_ips(pod: Mapping[str, Any], pod_ref: str) -> tuple[Address, ...]:
    """``status.podIPs``, falling back to ``status.podIP``; FieldError for a malformed one."""
    status = _mapping(pod.get("status"), ("status",))
    entries = items(status.get("podIPs"), ("status", "podIPs"))
    raw: list[tuple[FieldPath, object]] = []
    for i, entry in enumerate(entries):
        raw.append((("status", "podIPs", i, "ip"), _mapping(entry, ("status", "podIPs", i)).get("ip")))
    single = _optional(status, "podIP", ("status",))
    if not raw and single:
        raw = [(("status", "podIP"), single)]
    out: list[Address] = []
    for parts, value in raw:
        try:
            address = pod_address(string(value, parts), subnet=False)
        except ValueError as exc:
            raise fail(parts, str(exc)) from None
        if address not in out:
            out.append(address)
    return tuple(out)


def _mapping(value: object, parts: FieldPath) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise fail(parts, f"must be a mapping, not {type_name(value)}")
    return value


def _string_map(value: object, parts: FieldPath) -> dict[str, str]:
    """Labels or annotations as kubectl prints them; a null value reads as "" (as Go decodes it)."""
    out: dict[str, str] = {}
    for key, item in _mapping(value, parts).items():
        if item is not None and not isinstance(item, str):
            raise fail((*parts, MapKey(str(key))), f"value must be a string, not {type_name(item)}")
        out[str(key)] = item or ""
    return out


def _container_ports(spec: Mapping[str, Any]) -> tuple[NamedPort, ...]:
    out: list[NamedPort] = []
    for field in ("containers", "initContainers"):
        for i, container in enumerate(items(spec.get(field), ("spec", field))):
            here: FieldPath = ("spec", field, i)
            ports_at: FieldPath = (*here, "ports")
            for j, raw in enumerate(items(_mapping(container, here).get("ports"), ports_at)):
                at: FieldPath = (*ports_at, j)
                port = _mapping(raw, at)
                number = integer(required(port, "containerPort", at), (*at, "containerPort"))
                if not 1 <= number <= 65535:
                    raise fail(
                        (*at, "containerPort"), f"must be between 1 and 65535, inclusive, not {show(number)}"
                    )
                protocol = port.get("protocol")
                if not isinstance(protocol, str) and protocol is not None:  # not [] or 0 for TCP
                    raise fail((*at, "protocol"), f"must be a string, not {type_name(protocol)}")
                protocol = protocol or "TCP"  # absent, null or "": Go's zero value
                if protocol not in PROTOCOLS:
                    raise fail(
                        (*at, "protocol"), f"unsupported protocol {show(protocol)}: must be TCP, UDP or SCTP"
                    )
                if name := _optional(port, "name", at):
                    check_name(name, (*at, "name"), _port_name_problem(name), "port name")
                    out.append(NamedPort(name, protocol, number))
    return tuple(out)


def _optional(struct: Mapping[str, Any], key: str, parts: FieldPath) -> str:
    """A string field Go reads as "" when absent or null; any other type is an error (a list or
    0 read as absent became TCP, no name, the namespace "default")."""
    value = struct.get(key)
    return "" if value is None else string(value, (*parts, key))


_port_name_problem = functools.lru_cache(maxsize=1 << 12)(port_name_problem)  # a few names recur


_VALID_LABELS: set[tuple[str, str]] = set()  # checked once: at 50k pods the same few recur
_VALID_NAMESPACES: set[str] = set()
_REMEMBERED = 1 << 16  # valid labels and namespaces kept at most, each


def _labels(meta: Mapping[str, Any]) -> dict[str, str]:
    found = _string_map(meta.get("labels"), ("metadata", "labels"))
    for label in found.items():
        if label in _VALID_LABELS:
            continue
        check_label(*label, ("metadata", "labels"))
        if len(_VALID_LABELS) < _REMEMBERED:
            _VALID_LABELS.add(label)
    return found


@attrs.frozen
class _Found:
    namespace: Namespace | None = None
    pod: Pod | None = None


def _object(obj: Mapping[str, Any], ip_source: IPSource, lenient: bool) -> tuple[_Found, list[str]]:
    """One Namespace or Pod object (anything else: nothing); FieldError for a malformed one."""
    kind = obj.get("kind")
    if kind not in ("Namespace", "Pod"):
        return _Found(), []
    meta = _mapping(obj.get("metadata"), ("metadata",))
    labels = _labels(meta)
    annotations = _string_map(meta.get("annotations"), ("metadata", "annotations"))
    name = string(required(meta, "name", ("metadata",)), ("metadata", "name"))
    if kind == "Namespace":
        check_name(name, ("metadata", "name"), dns_label_problem(name), "namespace name")
        warnings = _isolation_annotation(annotations, name, lenient)
        labels[NAMESPACE_NAME_LABEL] = name
        return _Found(namespace=Namespace(name, labels, annotations)), warnings
    check_name(name, ("metadata", "name"), dns_subdomain_problem(name), "pod name")
    namespace = _optional(meta, "namespace", ("metadata",)) or "default"
    if namespace not in _VALID_NAMESPACES:
        check_name(namespace, ("metadata", "namespace"), dns_label_problem(namespace), "namespace name")
        if len(_VALID_NAMESPACES) < _REMEMBERED:
            _VALID_NAMESPACES.add(namespace)
    spec = _mapping(obj.get("spec"), ("spec",))
    phase = _optional(_mapping(obj.get("status"), ("status",)), "phase", ("status",))
    host_network = spec.get("hostNetwork")
    if host_network is not None and not isinstance(host_network, bool):  # "false" is no false
        raise fail(("spec", "hostNetwork"), f"must be a boolean, not {type_name(host_network)}")
    if host_network or phase in ("Succeeded", "Failed"):
        return _Found(), []
    ports = _container_ports(spec)
    ips = ip_source(obj, f"{namespace}/{name}")
    if not ips:
        return _Found(), []
    return _Found(pod=Pod(namespace, name, labels, ips, ports, annotations)), []


def _keyed(found: _Found) -> Iterator[tuple[tuple[str, ...], Namespace | Pod]]:
    if found.namespace:
        yield ("namespace", found.namespace.name), found.namespace
    if found.pod:
        yield ("pod", found.pod.namespace, found.pod.name), found.pod


def _shared_addresses(pods: Iterable[Pod]) -> list[str]:
    """Two live pods with one address (kubelet's view lagging a reused address, or an inventory put
    together by hand): the kernel sees one address, so it cannot police them apart."""
    holders: dict[Address, list[str]] = {}
    for pod in pods:
        for ip in pod.ips:
            holders.setdefault(ip, []).append(f"{pod.namespace}/{pod.name}")
    shared = sorted((ip.version, ip, names) for ip, names in holders.items() if len(names) > 1)
    return [
        f"pods {', '.join(sorted(names))} share the address {ip}: the kernel polices it as one pod's "
        "(one pod's isolation and policies, a peer wherever any of them is one); matrix and explain "
        "show each pod as if alone"
        for _, ip, names in shared
    ]


def _isolation_annotation(annotations: dict[str, str], namespace: str, lenient: bool) -> list[str]:
    """The 1.6 annotation is checked here, where its position is known; apply drops a bad one."""
    value = annotations.get(NAMESPACE_ISOLATION_ANNOTATION)
    if value is None:
        return []
    try:
        isolates_ingress(value)
    except ValueError as exc:
        at: FieldPath = ("metadata", "annotations", MapKey(NAMESPACE_ISOLATION_ANNOTATION))
        if not lenient:
            raise fail(at, str(exc)) from None
        del annotations[NAMESPACE_ISOLATION_ANNOTATION]
        return [f"namespace {show(namespace)}: {render_path(at)}: {exc}; the annotation is ignored"]
    note = isolation_note(value)
    return [f"namespace {show(namespace)}: {NAMESPACE_ISOLATION_ANNOTATION}: {note}"] if note else []


def build_inventory(
    docs: Iterable[Any],
    ip_source: IPSource = pod_ips,
    file: str = "<inventory>",
    text: str | bytes = "",
    *,
    lenient: bool = False,
    keep: Callable[[Mapping[str, Any]], bool] | None = None,
    whole: bool = False,
) -> Inventory:
    """Namespaces and policed pods from parsed kubectl output (any mix of Lists and objects).

    ``whole``: the documents are the whole inventory as a file or stdin held it, not objects
    gathered one by one (a watch, a policy folder's Namespaces): then what a failed command
    printed (no object at all, an object without kind) is an error however leniently it is read,
    never "no pods" (the agent would empty every set); a value that is no object always is.

    A malformed object is an error naming its field (with line:column when ``text`` is given: the
    inventory's text, or its UTF-8 bytes, decoded only then);
    ``lenient`` (apply, the agent) skips that one object with a warning instead, so one bad pod
    cannot block every policy update of the node. An object ``keep`` refuses is not read at all
    (``npc explain`` reads two pods and their namespaces).
    """
    kept: dict[tuple[str, ...], Namespace | Pod] = {}  # by kind and name
    first: dict[tuple[str, ...], FieldPath] = {}  # where each was found
    warnings: list[str] = []
    for index, base, obj in _objects(docs, file, text, whole or file == STDIN_NAME, keep):
        if keep is not None and not keep(obj):
            continue
        try:
            found, notes = _object(obj, ip_source, lenient)
        except FieldError as err:
            if not lenient:
                raise _error(err, base, file, text, index) from None
            warnings.append(f"{printable(file)}: skipped {render_path((*base, *err.parts))}: {err.message}")
            continue
        warnings.extend(notes)
        for key, value in _keyed(found):
            held = kept.setdefault(key, value)
            if held is value:
                first[key] = base
                continue
            if held == value:
                continue
            problem = (
                f"{key[0]} {'/'.join(key[1:])} is listed twice, differently (first at "
                f"{render_path(first[key]) or 'an earlier document'}): which one holds would depend on the order"
            )
            if not lenient:
                raise _error(fail((), problem), base, file, text, index)
            warnings.append(
                f"{printable(file)}: {render_path(base)}: {problem}; kept the one that sorts first"
            )
            kept[key] = min(held, value, key=repr)
    namespaces = {n.name: n for n in kept.values() if isinstance(n, Namespace)}
    pods = [p for p in kept.values() if isinstance(p, Pod)]
    warnings += _shared_addresses(pods)
    for pod in pods:  # a pod whose namespace object is missing still lives in a namespace
        namespaces.setdefault(pod.namespace, Namespace(pod.namespace, {NAMESPACE_NAME_LABEL: pod.namespace}))
    return Inventory(
        tuple(sorted(namespaces.values(), key=lambda n: n.name)),
        tuple(sorted(pods, key=lambda p: (p.namespace, p.name))),
        tuple(warnings),
    )


def _objects(
    docs: Iterable[Any],
    file: str,
    text: str | bytes,
    whole: bool,
    keep: Callable[[Mapping[str, Any]], bool] | None = None,
) -> Iterator[tuple[int, FieldPath, dict[str, Any]]]:
    """The objects of ``docs`` (``objects_in``) with their document's index and path. What a
    failed command printed is an error, never "no pods", however leniently the pods are read
    (the agent would empty every set, not skip one pod): a value that is no object, a List
    without its items and, with ``whole`` (a whole inventory's documents), an object without
    kind or documents holding no object at all."""
    found_any = False  # an object, or a document that is one (a List of nothing is an empty cluster)
    for index, doc in enumerate(docs):
        found_any = found_any or isinstance(doc, dict)
        for base, obj in objects_in(doc, keep):
            found_any = True
            if not isinstance(obj, dict):
                problem = fail(
                    (), f"must be a Kubernetes object (kind, apiVersion, ...), not {type_name(obj)}"
                )
            elif str(obj.get("kind", "")).endswith("List"):
                problem = fail(("items",), "must be a list")
            elif whole and obj.get("kind") is None:
                problem = fail(("kind",), "required (what a failed command printed?)")
            else:
                yield index, base, obj
                continue
            raise _error(problem, base, file, text, index)
    if whole and not found_any:
        nothing = fail((), "holds no Kubernetes object: kubectl prints a List, even of nothing")
        raise _error(nothing, (), file, text, 0)


def check_whole(docs: Sequence[Any], file: str, text: str | bytes) -> None:
    """``build_inventory``'s checks of a ``whole`` inventory alone (InputError): for the agent,
    whose view reads the objects one by one."""
    for _ in _objects(docs, file, text, whole=True):
        pass


def _error(err: FieldError, base: FieldPath, file: str, text: str | bytes, document: int) -> InputError:
    text = text.decode("utf-8") if isinstance(text, bytes) else text
    parts = (*base, *err.parts)
    line, column = locate(text, document, parts, at_key=err.at_key) if text else (0, 0)
    return InputError(
        err.message, file, line, column, render_path(parts), snippet(text, line, column) if text else ""
    )


@attrs.frozen
class InventoryText:
    """The inventory as read: its documents, and its text (for positions) and hash (for the manifest),
    read once however many networks are built from it. Read for ``npc explain``, the text is left
    undecoded (UTF-8 bytes, byte-order mark dropped) until an error needs a position."""

    name: str = "<inventory>"
    text: str | bytes = ""
    documents: tuple[Any, ...] = ()
    sha256: str = ""


_JSON_START = re.compile(rb"[ \t\n\r\v\f]*[\[{]")  # what ``load_documents`` tries as JSON, as bytes


def read_inventory_documents(
    path: str, stdin: TextIO | None = None, keep: Callable[[Mapping[str, Any]], bool] | None = None
) -> InventoryText:
    """``path`` (``-``: stdin) read and parsed; nothing is built yet. ``keep`` (``npc explain``):
    only the objects to be built, told by their kind and metadata's name and namespace (all it may
    read); a JSON file's others are left unbuilt when simdjson can read it (see ``focused_json``),
    and nothing is hashed (no manifest is written)."""
    if path == "-":
        return _parsed(read_stdin(stdin if stdin is not None else sys.stdin, INVENTORY_FILE_BYTES))
    if keep is None:
        return inventory_documents(read_bytes(path, "inventory", INVENTORY_FILE_BYTES), printable(path))
    data, name = read_bytes(path, "inventory", INVENTORY_FILE_BYTES), printable(path)
    body = data.removeprefix(UTF8_BOM)
    if name.endswith(".json") or _JSON_START.match(body):
        from .focused_json import load_focused

        documents = load_focused(body, keep)
        if documents is not None:  # so simdjson found the bytes valid UTF-8
            return InventoryText(name, body, tuple(documents))
    source = decode(data, name, digest=False)
    return InventoryText(name, source.text, _documents(name, source.text))


def inventory_documents(data: bytes, name: str) -> InventoryText:
    """An inventory file's bytes (``read_bytes``) decoded, hashed and parsed."""
    return _parsed(decode(data, name))


def _parsed(source: Text) -> InventoryText:
    return InventoryText(source.name, source.text, _documents(source.name, source.text), source.sha256)


def _documents(name: str, text: str) -> tuple[Any, ...]:
    """The inventory's documents; none is an error, not an inventory without pods: an empty file
    or stdin is what a failed ``kubectl get`` or a writer caught mid-write leaves, and applied it
    would take every pod out of every set."""
    documents = tuple(load_documents(name, text))
    if not documents:
        raise InputError(
            'holds no document (an inventory without pods is {"kind": "List", "items": []})', name
        )
    return documents


def read_inventory(path: str, ip_source: IPSource = pod_ips) -> Inventory:
    found = read_inventory_documents(path)
    return build_inventory(found.documents, ip_source, found.name, found.text, whole=True)
