"""The policies and pods an analysis is about, read exactly as ``npc compile`` reads them."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TextIO

import attrs

from ..documents import metadata, objects_in
from ..frontends.positions import FieldPath
from ..inventory import Inventory, Pod
from ..ir import Address, Policy, Program
from ..networks import NetworkSpec
from ..pipeline import Sources, assemble
from ..sources import read_policy_sources


@attrs.frozen
class Model:
    """One network's policies (before any pass) and its policed pods in the order a matrix lists them."""

    program: Program
    inventory: Inventory
    pods: tuple[Pod, ...]
    places: Mapping[tuple[str, str, str], Callable[[FieldPath], str]] = attrs.field(eq=False)
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    families: tuple[int, ...] = (4, 6)  # what npc polices on the network (``--ip-families``)
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

    @property
    def namespaces(self) -> Mapping[str, Mapping[str, str]]:
        """Each namespace's labels, what namespace selectors read."""
        return {ns.name: ns.labels for ns in self.inventory.namespaces}

    def pod(self, ref: str) -> Pod | None:
        return self._by_ref.get(ref)

    def owner(self, address: Address) -> Pod | None:
        """The pod with ``address`` on this network, if any."""
        return self._by_address.get(address)


def addresses(pod: Pod, family: int) -> list[Address]:
    """The pod's addresses in ``family`` on the network (more than one: Multus, an attachment of
    several or the network attached twice; the kernel polices each)."""
    return [ip for ip in pod.ips if ip.version == family]


def address(pod: Pod, family: int) -> Address | None:
    """The pod's address in ``family`` on the network (its first), the one answers are for."""
    return next((ip for ip in pod.ips if ip.version == family), None)


def _listed(documents: Iterable[Any]) -> tuple[dict[str, int], dict[tuple[str, str], int]]:
    """Where each namespace and pod first appears in the inventory documents."""
    namespaces: dict[str, int] = {}
    pods: dict[tuple[str, str], int] = {}
    for _, item in objects_in(list(documents)):  # Lists opened as the inventory reader opens them
        if isinstance(item, dict):
            meta = metadata(item)
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


def load_model(
    sources: Sources, network: NetworkSpec, keep: Callable[[Mapping[str, Any]], bool] | None = None
) -> Model:
    """One network's policies and pods, assembled exactly as ``compile`` assembles them; ``keep``:
    only those inventory objects (``npc explain``: then the pods' order is no one's concern)."""
    assembled = assemble(sources, network, keep=keep)
    inventory = assembled.inventory
    return Model(
        assembled.program,
        inventory,
        inventory.pods if keep else listed_order(inventory, sources.inventory_documents),
        sources.loaded.places,
        (*sources.loaded.notes, *assembled.notes, *_several(inventory.pods)),
        assembled.warnings,
        network.ip_families,
    )


def _several(pods: Iterable[Pod]) -> list[str]:
    """Pods with several ``addresses`` of one family: the answers are for the first."""
    out = []
    for pod in pods:
        for family in (4, 6):
            found = [str(ip) for ip in addresses(pod, family)]
            if len(found) > 1:
                out.append(
                    f"pod {pod.namespace}/{pod.name} has {len(found)} IPv{family} addresses on this network: "
                    f"answered for {found[0]} (npc explain --from/--to an address for the others: "
                    f"{', '.join(found[1:])})"
                )
    return out


def with_policies(sources: Sources, paths: Sequence[str], stdin: TextIO | None = None) -> Sources:
    """Other policy sources against the same inventory (read once): the new side of a diff."""
    return attrs.evolve(sources, loaded=read_policy_sources(paths, stdin))
