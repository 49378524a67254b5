"""IR selectors as Calico selector expressions (libcalico-go ``lib/selector``), on one line.

Calico's string literals have no escapes: a value is quoted with whichever quote it does not hold.
A value holding both cannot be written at all; the API server never lets a label value hold a quote
(``[A-Za-z0-9_.-]``), so no pod or namespace carries such a value: it is left out of ``in`` sets,
which keeps every requirement's meaning exact (``k in {}`` matches nothing, ``k not in {}`` every
object). Label keys (``[prefix/]name``) are bare identifiers in Calico's grammar and need nothing.
"""

from __future__ import annotations

from collections.abc import Iterable

from ...ir import NAMESPACE_NAME_LABEL, Requirement, Selector

ORCHESTRATOR = "projectcalico.org/orchestrator == 'k8s'"
"""On every pod's WorkloadEndpoint: keeps pod selectors off NetworkSets and host endpoints,
as Calico's own NetworkPolicy converter does."""
NAMESPACE_NAME = "projectcalico.org/name"
"""The name label Calico gives each namespace's profile (``pcns.projectcalico.org/name``): the
same value as ``kubernetes.io/metadata.name``, without depending on the API server's version."""
MAX_SELECTOR = 1024


def literal(value: str) -> str | None:
    """``value`` as a Calico string literal, or None when no quoting can hold it."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    return None


def _literals(values: Iterable[str]) -> list[str]:
    return [text for text in map(literal, values) if text is not None]


def requirement(req: Requirement, namespace_labels: bool = False) -> str:
    key = NAMESPACE_NAME if namespace_labels and req.key == NAMESPACE_NAME_LABEL else req.key
    if req.op == "Exists":
        return f"has({key})"
    if req.op == "DoesNotExist":
        return f"!has({key})"
    values = _literals(req.values)
    if len(values) == 1:
        return f"{key} {'==' if req.op == 'In' else '!='} {values[0]}"
    return f"{key} {'in' if req.op == 'In' else 'not in'} {{{', '.join(values)}}}"


def pod_selector(selector: Selector) -> str:
    """Pods only: the orchestrator term, then each requirement (all AND-ed)."""
    return " && ".join([ORCHESTRATOR, *(requirement(r) for r in selector.requirements)])


def namespace_selector(selector: Selector) -> str:
    """Namespaces: ``all()`` for every namespace (empty would mean the policy's own namespace)."""
    if selector.is_all:
        return "all()"
    return " && ".join(requirement(r, namespace_labels=True) for r in selector.requirements)
