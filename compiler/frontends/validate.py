"""The Kubernetes API server's rules for the pieces every object shares, as reusable checks.

Each check takes a value and its field path and returns the typed value or raises ``FieldError``;
the caller that knows the source text turns the path into a line and column. The wording follows
``k8s.io/apimachinery/pkg/util/validation`` so a user recognises what ``kubectl apply`` would say.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
from collections.abc import Collection, Mapping
from typing import Any

import attrs

from ..errors import InputError
from ..ir import Network
from .positions import FieldPath, MapKey, printable, render_path, show


@attrs.define(eq=False)
class FieldError(InputError):
    """An ``InputError`` that still knows its structured field path, for locating it in the text."""

    parts: FieldPath = ()
    at_key: bool = False


def fail(parts: FieldPath, message: str, *, at_key: bool = False) -> FieldError:
    return FieldError(message, path=render_path(parts), parts=parts, at_key=at_key)


def type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"


def fields(value: object, parts: FieldPath, known: Collection[str]) -> dict[str, Any]:
    """A struct: a mapping with only ``known`` keys (strict decoding); null values dropped as absent."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise fail(parts, f"must be a mapping, not {type_name(value)}")
    out: dict[str, Any] = {}
    for key, item in value.items():
        if not isinstance(key, str) or key not in known:
            raise fail(
                (*parts, str(key)),
                f"unknown field {show(str(key))} (expected one of: {', '.join(known)})",
                at_key=True,
            )
        if item is not None:
            out[key] = item
    return out


def string(value: object, parts: FieldPath) -> str:
    if not isinstance(value, str):
        raise fail(parts, f"must be a string, not {type_name(value)}")
    return value


def whole(value: object) -> object:
    """An integral decimal number (``1e3``, ``80.0``) as the integer it is: the API server reads
    YAML through JSON (sigs.k8s.io/yaml), where Go writes the float64 1000 as ``1000``, and a
    JSON ``80.0`` the same way after kubectl decodes it; ``80.5`` stays a decimal number."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def integer(value: object, parts: FieldPath) -> int:
    value = whole(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise fail(parts, f"must be an integer, not {type_name(value)}")
    return value


def items(value: object, parts: FieldPath) -> list[Any]:
    """A list; absent (None) is empty."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise fail(parts, f"must be a list, not {type_name(value)}")
    return value


def strings(value: object, parts: FieldPath) -> list[str]:
    return [string(v, (*parts, i)) for i, v in enumerate(items(value, parts))]


def string_map(value: object, parts: FieldPath) -> dict[str, str]:
    """A map of string to string (labels, annotations, matchLabels)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise fail(parts, f"must be a mapping, not {type_name(value)}")
    for key, item in value.items():
        if not isinstance(key, str):
            raise fail((*parts, MapKey(key)), f"key must be a string, not {type_name(key)}", at_key=True)
        if not isinstance(item, str):
            raise fail((*parts, MapKey(key)), f"value must be a string, not {type_name(item)}")
    return value


def timestamp(value: object, parts: FieldPath) -> None:
    if not isinstance(value, str | datetime.date):
        raise fail(parts, f"must be a timestamp string, not {type_name(value)}")


# --- names (k8s.io/apimachinery/pkg/util/validation) ------------------------------------------

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_PORT_NAME_CHARS = re.compile(r"[-a-z0-9]+")

_SUBDOMAIN_RULE = (
    "must be a lowercase RFC 1123 subdomain: at most 253 characters of a-z, 0-9, '-' and '.', "
    "starting and ending with a letter or digit"
)
_LABEL_RULE = (
    "must be a lowercase RFC 1123 label: at most 63 characters of a-z, 0-9 and '-', "
    "starting and ending with a letter or digit"
)
_NAME_PART_RULE = (
    "at most 63 characters of A-Z, a-z, 0-9, '-', '_' and '.', starting and ending with a letter or digit"
)


def too_long(value: str, limit: int) -> str | None:
    """The rule broken by a value over its length limit, said plainly."""
    return f"too long: {len(value)} characters, at most {limit}" if len(value) > limit else None


def dns_subdomain_problem(value: str) -> str | None:
    if (problem := too_long(value, 253)) is not None:
        return problem
    if not _DNS_SUBDOMAIN.fullmatch(value):
        return _SUBDOMAIN_RULE
    return None


def dns_label_problem(value: str) -> str | None:
    if (problem := too_long(value, 63)) is not None:
        return problem
    if not _DNS_LABEL.fullmatch(value):
        return _LABEL_RULE
    return None


def qualified_name_problem(value: str) -> str | None:
    """A label or annotation key: ``[prefix/]name``, prefix a DNS subdomain."""
    prefix, slash, name = value.rpartition("/")
    if slash:
        if "/" in prefix:
            return "must be 'name' or 'prefix/name', with at most one '/'"
        if not prefix:
            return "the prefix before '/' must not be empty"
        if (problem := dns_subdomain_problem(prefix)) is not None:
            return (
                f"the prefix {show(prefix)} is {problem}"
                if problem.startswith("too")
                else f"the prefix {show(prefix)} {problem}"
            )
    if not name:
        return "the name part must not be empty"
    if (problem := too_long(name, 63)) is not None:
        return f"the name part is {problem}"
    if not _QUALIFIED_NAME.fullmatch(name):
        return f"the name part must be {_NAME_PART_RULE}"
    return None


def label_value_problem(value: str) -> str | None:
    if (problem := too_long(value, 63)) is not None:
        return problem
    if value and not _QUALIFIED_NAME.fullmatch(value):
        return f"must be empty or {_NAME_PART_RULE}"
    return None


def port_name_problem(value: str) -> str | None:
    """IANA service name syntax (RFC 6335), as Kubernetes checks named ports."""
    if (problem := too_long(value, 15)) is not None:
        return problem
    if not _PORT_NAME_CHARS.fullmatch(value):
        return "must contain only lowercase letters (a-z), digits (0-9) and hyphens (-)"
    if not any("a" <= c <= "z" for c in value):
        return "must contain at least one letter (a-z)"
    if "--" in value:
        return "must not contain consecutive hyphens"
    if value.startswith("-") or value.endswith("-"):
        return "must not begin or end with a hyphen"
    return None


def check_name(value: str, parts: FieldPath, problem: str | None, what: str, *, at_key: bool = False) -> None:
    if problem:
        raise fail(parts, f"invalid {what} {show(value)}: {problem}", at_key=at_key)


def labels(value: object, parts: FieldPath) -> dict[str, str]:
    """A label map: keys qualified names, values label values."""
    out = string_map(value, parts)
    for key, item in out.items():
        check_label(key, item, parts)
    return out


def network_problem(namespace: str | None, name: str) -> str | None:
    """What is wrong with the network ``namespace/name`` (or ``name``, its namespace not given)
    as ``policy-for`` names one (a NetworkAttachmentDefinition's namespace and name), said as
    "the namespace ..." or "the name ...", or None."""
    if namespace is not None and (problem := dns_label_problem(namespace)):
        return f"the namespace {problem}"
    if problem := dns_subdomain_problem(name):
        return f"the name {problem}"
    return None


def check_label(key: str, value: str, parts: FieldPath) -> None:
    """One label of the map at ``parts``: its key a qualified name, its value a label value."""
    where: FieldPath = (*parts, MapKey(key))
    check_name(key, where, qualified_name_problem(key), "label key", at_key=True)
    check_name(value, where, label_value_problem(value), "label value")


_TOTAL_ANNOTATION_SIZE = 256 * 1024


def annotation_map(value: object, parts: FieldPath) -> dict[str, str]:
    out = string_map(value, parts)
    for key in out:
        check_name(
            key, (*parts, MapKey(key)), qualified_name_problem(key.lower()), "annotation key", at_key=True
        )
    size = sum(len(k) + len(v) for k, v in out.items())
    if size > _TOTAL_ANNOTATION_SIZE:
        raise fail(parts, f"too long: total size {size} bytes, at most {_TOTAL_ANNOTATION_SIZE}")
    return out


# --- addresses --------------------------------------------------------------------------------

_CIDR_SHAPE = re.compile(r"[0-9A-Fa-f:.]+/[0-9]{1,3}")


def cidr(value: object, parts: FieldPath) -> Network:
    """An address/prefix-length pair, as ``net.ParseCIDR`` reads it (host bits allowed, then masked)."""
    text = string(value, parts)
    if not _CIDR_SHAPE.fullmatch(text):
        raise fail(
            parts, f"invalid CIDR {show(text)}: must be an address and a prefix length, e.g. 10.0.0.0/16"
        )
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError as exc:
        raise fail(parts, f"invalid CIDR {show(text)}: {cidr_problem(text, exc)}") from None
    if (problem := mapped_problem(network)) is not None:
        raise fail(parts, f"invalid CIDR {show(text)}: {problem}")
    return network


def cidr_problem(text: str, exc: ValueError) -> str:
    """``ipaddress``'s reason, short and to the point: it repeats the whole value (3 MB of stderr
    for a long one) and calls a prefix length too long "does not appear to be an IPv4 or IPv6
    network"."""
    address, _, prefix = text.partition("/")
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return "not an IPv4 or IPv6 address before the /"
    if prefix.isdigit() and int(prefix) > ip.max_prefixlen:
        return f"prefix length {int(prefix)}: IPv{ip.version}'s are 0 to {ip.max_prefixlen}"
    return printable(str(exc)[:200])


def mapped_problem(network: Network) -> str | None:
    """Why an IPv4-mapped IPv6 block (``::ffff:10.0.0.0/104``) is refused: Go, and so Calico and
    kube-router, read it as the IPv4 block, the kernel's IPv6 rules as IPv6 addresses no packet
    has; the API server's strict validation (KEP-4858) refuses it too. None for any other block."""
    if not isinstance(network, ipaddress.IPv6Network):
        return None
    mapped = network.network_address.ipv4_mapped
    if mapped is None:
        return None
    meant = ipaddress.ip_network(f"{mapped}/{network.prefixlen - 96}")
    return (
        f"an IPv4-mapped IPv6 block is read as IPv4 by some dataplanes and as IPv6 by others; write {meant}"
    )


def except_problem(excluded: Network, network: Network) -> str | None:
    """Why ``excluded`` cannot be an ``except`` of the block ``network`` (the API server's rule), as
    the words between the two in a message; None when it can."""
    if excluded.version != network.version:
        return "is not in the IP family of"
    if not (excluded.subnet_of(network) and excluded.prefixlen > network.prefixlen):  # type: ignore[arg-type]
        return "must be a strict subset of"
    return None


# --- object metadata --------------------------------------------------------------------------


@attrs.frozen
class Meta:
    name: str
    namespace: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]


_META_STRINGS = ("name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "clusterName")
_META_INTEGERS = ("generation", "deletionGracePeriodSeconds")
_META_TIMES = ("creationTimestamp", "deletionTimestamp")
_META_LISTS = ("ownerReferences", "managedFields")
_META_FIELDS = (
    *_META_STRINGS,
    *_META_INTEGERS,
    *_META_TIMES,
    *_META_LISTS,
    "finalizers",
    "labels",
    "annotations",
)


def object_meta(value: object, parts: FieldPath = ("metadata",)) -> Meta:
    """ObjectMeta: every standard field accepted, the ones npc reads validated like the API server."""
    meta = fields(value, parts, _META_FIELDS)

    def at(name: str) -> FieldPath:
        return (*parts, name)

    for name in _META_STRINGS:
        if name in meta:
            string(meta[name], at(name))
    for name in _META_INTEGERS:
        if name in meta:
            integer(meta[name], at(name))
    for name in _META_TIMES:
        if name in meta:
            timestamp(meta[name], at(name))
    for name in _META_LISTS:
        for i, entry in enumerate(items(meta.get(name), at(name))):
            if not isinstance(entry, dict):
                raise fail((*at(name), i), f"must be a mapping, not {type_name(entry)}")
    strings(meta.get("finalizers"), at("finalizers"))
    name = meta.get("name", "")
    if not name:
        hint = " (generateName cannot be used: npc needs the name)" if meta.get("generateName") else ""
        raise fail(at("name"), f"required{hint}")
    check_name(name, at("name"), dns_subdomain_problem(name), "name")
    namespace = meta.get("namespace") or "default"
    check_name(namespace, at("namespace"), dns_label_problem(namespace), "namespace")
    return Meta(
        name,
        namespace,
        labels(meta.get("labels"), at("labels")),
        annotation_map(meta.get("annotations"), at("annotations")),
    )


def required(struct: Mapping[str, Any], key: str, parts: FieldPath) -> Any:
    if key not in struct:
        raise fail((*parts, key), "required")
    return struct[key]
