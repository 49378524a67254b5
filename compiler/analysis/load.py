"""The policies and pods an analysis is about, read exactly as ``npc compile`` reads them."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TextIO

import attrs

from ..frontends.legacy import isolation_policies, namespaces_from_objects
from ..frontends.positions import FieldPath
from ..inventory import Inventory, Pod, build_inventory, read_inventory_documents
from ..ir import Address, Policy, Program
from ..networks import NetworkSpec, select_policies
from ..sources import Loaded, read_policy_sources


@attrs.frozen
class Model:
    """One network's policies (before any pass) and its policed pods in the order a matrix lists them."""

    program: Program
    inventory: Inventory
    pods: tuple[Pod, ...]
    places: Mapping[tuple[str, str, str], Callable[[FieldPath], str]] = attrs.field(eq=False)
    notes: tuple[str, ...] = ()
    _by_ref: dict[str, Pod] = attrs.field(init=False, eq=False)
    _by_address: dict[Address, Pod] = attrs.field(init=False, eq=False)
    _places: dict[tuple[Policy, FieldPath], str] = attrs.field(init=False, eq=False, factory=dict)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_by_ref", {f"{p.namespace}/{p.name}": p for p in self.pods})
        object.__setattr__(self, "_by_address", {ip: p for p in self.pods for ip in p.ips})

    def place(self, policy: Policy, parts: FieldPath = ("metadata", "name")) -> str:
        """``file:line:column`` of a field of ``policy`` (its name by default), or its source."""
        known = self._places.get((policy, parts))
        if known is None:
            found = self.places.get((policy.kind, policy.namespace, policy.name))
            known = found(parts) if found is not None else policy.source or "<unknown>"
            self._places[policy, parts] = known
        return known

    def pod(self, ref: str) -> Pod | None:
        return self._by_ref.get(ref)

    def owner(self, address: Address) -> Pod | None:
        """The pod with ``address`` on this network, if any."""
        return self._by_address.get(address)


def _listed(documents: Iterable[Any]) -> tuple[dict[str, int], dict[tuple[str, str], int]]:
    """Where each namespace and pod first appears in the inventory documents."""
    namespaces: dict[str, int] = {}
    pods: dict[tuple[str, str], int] = {}
    stack = list(reversed(list(documents)))
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        elif isinstance(item, dict):
            if isinstance(item.get("items"), list) and str(item.get("kind", "")).endswith("List"):
                stack.extend(reversed(item["items"]))
                continue
            meta = item.get("metadata")
            meta = meta if isinstance(meta, dict) else {}
            if item.get("kind") == "Namespace" and meta.get("name"):
                namespaces.setdefault(str(meta["name"]), len(namespaces))
            elif item.get("kind") == "Pod":
                namespace = str(meta.get("namespace") or "default")
                namespaces.setdefault(namespace, len(namespaces))
                pods.setdefault((namespace, str(meta.get("name"))), len(pods))
    return namespaces, pods


def listed_order(inventory: Inventory, documents: Sequence[Any]) -> tuple[Pod, ...]:
    """Pods grouped by namespace in the order namespaces are listed, each namespace's pods as listed."""
    namespaces, pods = _listed(documents)
    return tuple(
        sorted(
            inventory.pods,
            key=lambda p: (namespaces.get(p.namespace, len(namespaces)), pods.get((p.namespace, p.name), 0)),
        )
    )


def cluster_program(loaded: Loaded, inventory: Inventory, network: NetworkSpec) -> Program:
    """The policies that govern ``network``: the sources' plus the 1.6 annotation's isolation."""
    namespaces = {ns.name: ns for ns in inventory.namespaces}
    # Namespace objects among the policy inputs are the desired state: their 1.6 annotation wins.
    namespaces.update((ns.name, ns) for ns in namespaces_from_objects(loaded.namespaces))
    program = Program(loaded.policies + tuple(isolation_policies(namespaces.values())))
    return select_policies(program, network)


@attrs.frozen
class Cluster:
    """The inventory, read once, as seen on one network."""

    inventory: Inventory
    pods: tuple[Pod, ...]
    warnings: tuple[str, ...]


def read_cluster(path: str, network: NetworkSpec) -> Cluster:
    documents, _ = read_inventory_documents(path)
    source = network.address_source()
    inventory = build_inventory(documents, source, path)
    return Cluster(inventory, listed_order(inventory, documents), tuple(source.warnings))


def load_model(
    paths: Sequence[str], cluster: Cluster, network: NetworkSpec, stdin: TextIO | None = None
) -> Model:
    loaded = read_policy_sources(paths, stdin or sys.stdin)
    program = cluster_program(loaded, cluster.inventory, network)
    return Model(program, cluster.inventory, cluster.pods, loaded.places, loaded.notes)
