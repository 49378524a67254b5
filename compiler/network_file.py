"""The networks file of ``npc compile --networks FILE``: every network a node has, in one place.

```yaml
networks:
- name: default                      # the primary network: podIPs, NetworkPolicy
- name: net2
  ipSource: genie:ip2                # as --ip-source
  policyKinds: [NetworkPolicy]       # as --policy-kinds (a list or "A,B"); default by network
  ipFamilies: [IPv4]                 # as --ip-families (a list or "A,B"); default both
```
Errors name the file, line:column and field, like every other input.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from .documents import load_documents
from .errors import InputError
from .frontends.positions import FieldPath, locate, show, snippet
from .frontends.validate import FieldError, fail, fields, items, required, string, type_name
from .networks import (
    NetworkSpec,
    check_network_name,
    network_spec,
    parse_ip_families,
    parse_ip_source,
    parse_policy_kinds,
)
from .text import read_text

_TOP_FIELDS = ("networks",)
_NETWORK_FIELDS = ("name", "ipSource", "policyKinds", "ipFamilies")


def parse_networks(doc: Any) -> tuple[NetworkSpec, ...]:
    """A parsed networks file as networks, in file order; FieldError on anything wrong."""
    if not isinstance(doc, dict):
        raise fail((), f"must be a mapping with a networks list, not {type_name(doc)}")
    top = fields(doc, (), _TOP_FIELDS)
    listed = items(required(top, "networks", ()), ("networks",))
    if not listed:
        raise fail(("networks",), "must list at least one network")
    out: dict[str, NetworkSpec] = {}
    for i, raw in enumerate(listed):
        network = _network(raw, ("networks", i))
        if network.name in out:
            raise fail(("networks", i, "name"), f"network {show(network.name)} is listed twice")
        out[network.name] = network
    return tuple(out.values())


def _network(raw: object, at: FieldPath) -> NetworkSpec:
    entry = fields(raw, at, _NETWORK_FIELDS)
    name = string(required(entry, "name", at), (*at, "name"))
    source = string(entry["ipSource"], (*at, "ipSource")) if "ipSource" in entry else None
    kinds, families = (_names(entry, field, at) for field in ("policyKinds", "ipFamilies"))

    def checked(field: str, check: Callable[[], object]) -> Any:
        try:
            return check()
        except ValueError as exc:
            raise fail((*at, field), str(exc)) from None

    checked("name", lambda: check_network_name(name))
    checked("ipSource", lambda: source is None or parse_ip_source(source))
    checked("policyKinds", lambda: kinds is None or parse_policy_kinds(kinds))
    checked("ipFamilies", lambda: families is None or parse_ip_families(families))
    # what is left is the combination: blame the IP source when there is one
    return checked(  # type: ignore[no-any-return]
        "ipSource" if source is not None else "name", lambda: network_spec(name, source, kinds, families)
    )


def _names(entry: dict[str, Any], field: str, at: FieldPath) -> str | list[str] | None:
    """A field of names: a list of strings, or one string of them comma-separated."""
    value = entry.get(field)
    if value is None or isinstance(value, str):
        return value
    return [string(v, (*at, field, j)) for j, v in enumerate(items(value, (*at, field)))]


def read_networks_file(path: str) -> tuple[NetworkSpec, ...]:
    text = read_text(path, "networks file").text
    try:
        documents = load_documents(path, text, strict=True)
    except InputError as err:
        raise attrs.evolve(err, snippet=snippet(text, err.line, err.column)) from None
    if len(documents) != 1:
        line, column = locate(text, 1, ()) if documents else (0, 0)  # at the second document
        message = f"a networks file holds one document, not {len(documents)}"
        raise InputError(message, path, line, column, snippet=snippet(text, line, column))
    try:
        return parse_networks(documents[0])
    except FieldError as err:
        line, column = locate(text, 0, err.parts, at_key=err.at_key)
        raise InputError(err.message, path, line, column, err.path, snippet(text, line, column)) from None
