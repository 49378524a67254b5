"""The connections two versions of the policies disagree about: gained and lost, per port.

Both versions are decided over one set of pod classes (fine enough for either), so a changed
class pair is found by comparing two class matrices and only then expanded into pod pairs.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import attrs
import numpy as np

from ..inventory import Pod
from .classes import PodClasses
from .explain import Endpoint, Explainer
from .load import Model, address
from .matrix import deciders
from .ports import PortQuery


@attrs.frozen
class Change:
    """One class pair whose verdict changed on one port."""

    gained: bool
    query: PortQuery
    family: int | None
    classes: PodClasses
    src: int
    dst: int

    def pairs(self, pods: Sequence[Pod]) -> Iterator[tuple[Pod, Pod]]:
        for s in self.classes.members[self.src]:
            for d in self.classes.members[self.dst]:
                if s != d:
                    yield pods[s], pods[d]


def changes(old: Model, new: Model, queries: Sequence[PortQuery]) -> list[Change]:
    found: list[Change] = []
    per_family = list(deciders([old.program, new.program], new.pods, new.namespaces, queries))
    dual = len(per_family) > 1
    for query in queries:
        for family, classes, (before, after) in per_family:
            a, b = before.query(query), after.query(query)
            for gained, mask in ((True, b & ~a), (False, a & ~b)):
                for s, d in zip(*np.nonzero(mask), strict=True):
                    found.append(Change(gained, query, family if dual else None, classes, int(s), int(d)))
    return found


def _entry(src: Pod, dst: Pod, change: Change) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "from": f"{src.namespace}/{src.name}",
        "to": f"{dst.namespace}/{dst.name}",
        "protocol": change.query.protocol,
        "port": change.query.port,
    }
    if change.family is not None:
        entry["ipFamily"] = f"IPv{change.family}"
    return entry


def _key(entry: Mapping[str, Any]) -> tuple[Any, ...]:
    port = entry["port"]
    return (
        entry["from"],
        entry["to"],
        entry["protocol"],
        isinstance(port, str),
        port,
        entry.get("ipFamily", ""),
    )


def as_json(changes: Sequence[Change], pods: Sequence[Pod]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {"gained": [], "lost": []}
    for change in changes:
        out["gained" if change.gained else "lost"].extend(_entry(s, d, change) for s, d in change.pairs(pods))
    return {k: sorted(v, key=_key) for k, v in out.items()}


def _reason(change: Change, explainer: Explainer) -> str:
    """Who decides the pair now (the new version's allowing rules, or its isolating policies)."""
    classes = change.classes
    src, dst = classes.reps[change.src], classes.reps[change.dst]
    port = change.query.port
    if isinstance(port, str):
        number = dst.named_ports().get((change.query.protocol, port))
        if number is None:
            return "no such container port"
        port = number
    src_ip, dst_ip = address(src, classes.family), address(dst, classes.family)
    assert src_ip is not None and dst_ip is not None
    sides = explainer.explain(Endpoint(src_ip, src), Endpoint(dst_ip, dst), change.query.protocol, port)
    if change.gained:
        allowing = [s.allowed_by for s in sides if s.allowed_by is not None]
        if not allowing:
            return "no policy isolates either side any more"
        return "allowed by " + "; ".join(f"{r.name} at {r.place}" for r in allowing)
    denying = [s for s in sides if not s.allowed]
    return "; ".join(
        f"{s.direction} of {s.pod} isolated by "
        + ", ".join(f"{p.namespace}/{p.name} ({place})" for p, place in s.isolated_by)
        + " with no rule matching"
        for s in denying
    )


def as_text(changes: Sequence[Change], pods: Sequence[Pod], explainer: Explainer) -> Iterator[str]:
    if not changes:
        yield "no connection gained or lost\n"
        return
    for change in sorted(
        changes, key=lambda c: (not c.gained, c.query.sort_key(), c.family or 0, c.src, c.dst)
    ):
        classes = change.classes
        count = sum(1 for _ in change.pairs(pods))
        if not count:
            continue
        family = f" IPv{change.family}" if change.family else ""
        sign = "+" if change.gained else "-"
        names = ", ".join(
            f"{s.namespace}/{s.name} -> {d.namespace}/{d.name}" for s, d in list(change.pairs(pods))[:3]
        )
        more = ", ..." if count > 3 else ""
        yield (
            f"{sign} {change.query.label}{family}  {classes.label(change.src)} -> {classes.label(change.dst)}"
            f"  ({count} pair{'s' if count != 1 else ''}: {names}{more})\n"
            f"    {_reason(change, explainer)}\n"
        )
