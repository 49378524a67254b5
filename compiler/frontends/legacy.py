"""The Kubernetes 1.6 namespace annotation that isolated a whole namespace for ingress.

``net.beta.kubernetes.io/network-policy: {"ingress": {"isolation": "DefaultDeny"}}`` on a
Namespace made every pod in it isolated for ingress; policies then allow as usual. That is
exactly a policy selecting all pods of the namespace with no ingress rules, so that is what it
becomes: the rest of npc never hears of the annotation.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import InputError
from ..inventory import Namespace, build_inventory
from ..ir import Policy, Selector
from .annotation import NAMESPACE_ISOLATION_ANNOTATION, isolates_ingress
from .positions import show

ISOLATION_KIND = "NamespaceIsolation"


def isolation_policies(namespaces: Iterable[Namespace], *, source: str = "<inventory>") -> list[Policy]:
    """One ingress-isolating policy per namespace carrying the DefaultDeny annotation."""
    out = []
    for ns in namespaces:
        value = ns.annotations.get(NAMESPACE_ISOLATION_ANNOTATION)
        if value is None:
            continue
        try:
            isolated = isolates_ingress(value)
        except ValueError as exc:
            raise InputError(
                f"namespace {show(ns.name)}: annotation {NAMESPACE_ISOLATION_ANNOTATION}: {exc}", source
            ) from None
        if isolated:
            out.append(
                Policy(
                    namespace=ns.name,
                    name=NAMESPACE_ISOLATION_ANNOTATION,
                    kind=ISOLATION_KIND,
                    pod_selector=Selector(),
                    ingress=(),
                    egress=None,
                    source=source,
                )
            )
    return out


def namespaces_from_objects(objects: Iterable[Mapping[str, Any]]) -> tuple[Namespace, ...]:
    """Raw Namespace objects (say, from the policy folder) as inventory namespaces."""
    return build_inventory(objects).namespaces
