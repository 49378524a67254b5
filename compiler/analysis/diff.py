"""The connections two versions of the policies disagree about: gained and lost, per port.

Both versions are decided over one set of pod classes (fine enough for either), so a changed
class pair is found by comparing two class matrices and only then expanded into pod pairs.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import attrs
import numpy as np

from ..inventory import Pod
from .classes import PodClasses
from .explain import Endpoint, Explainer
from .load import Model, address
from .matrix import deciders, families
from .ports import PortQuery


@attrs.frozen(eq=False)
class Change:
    """Class pairs whose verdict changed alike on one port: every source class of ``srcs`` with
    every destination class of ``dsts`` (the destinations whose changed sources are the same)."""

    gained: bool
    query: PortQuery
    family: int | None
    classes: PodClasses
    srcs: tuple[int, ...]
    dsts: tuple[int, ...]

    def pairs(self, pods: Sequence[Pod]) -> Iterator[tuple[Pod, Pod]]:
        members = self.classes.members
        for src in self.srcs:
            for s in members[src]:
                for dst in self.dsts:
                    for d in members[dst]:
                        if s != d:
                            yield pods[s], pods[d]

    def count(self) -> int:
        """``pairs``' length, from the classes' sizes."""
        members = self.classes.members
        sources, destinations = (sum(len(members[c]) for c in cs) for cs in (self.srcs, self.dsts))
        return sources * destinations - sum(len(members[c]) for c in set(self.srcs) & set(self.dsts))

    @property
    def sort_key(self) -> tuple[object, ...]:
        return (not self.gained, self.query.sort_key(), self.family or 0, self.srcs[0], self.dsts[0])


def changes(old: Model, new: Model, queries: Sequence[PortQuery]) -> list[Change]:
    """Per port, the changed class pairs as rectangles, in the order ``as_text`` prints them: one
    per set of destination classes whose changed sources are the same. Pair by pair, removing one
    namespace's policies at the independent L was 2.8 million changes and 1.6 GB of text."""
    found: list[Change] = []
    per_family = list(deciders([old.program, new.program], new.pods, new.namespaces, queries, new.families))
    dual = len(families(new.pods)) > 1
    alone = {f: np.array([len(m) == 1 for m in classes.members], dtype=bool) for f, classes, _ in per_family}
    for query in queries:
        for family, classes, (before, after) in per_family:
            a, b = before.query(query), after.query(query)
            diagonal = np.arange(len(classes))
            for gained, mask in ((True, b & ~a), (False, a & ~b)):
                mask[diagonal, diagonal] &= ~alone[family]  # a lone pod facing itself is no pair
                by_sources: dict[bytes, list[int]] = {}
                for d in np.flatnonzero(mask.any(axis=0)):
                    by_sources.setdefault(mask[:, d].tobytes(), []).append(int(d))
                for dsts in by_sources.values():
                    srcs = tuple(int(s) for s in np.flatnonzero(mask[:, dsts[0]]))
                    found.append(Change(gained, query, family if dual else None, classes, srcs, tuple(dsts)))
    return sorted(found, key=lambda change: change.sort_key)


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
    return {k: sorted(_across_families(v), key=_key) for k, v in out.items()}


def _across_families(entries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """On a dual-stack inventory, a pair that changed alike in both families is one entry, in the
    documented form; ``ipFamily`` stays on a change of one family alone (an ``ipBlock``'s)."""
    families: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for entry in entries:
        families.setdefault((entry["from"], entry["to"], entry["protocol"], entry["port"]), []).append(entry)
    return [
        entry
        for alike in families.values()
        for entry in ([{k: v for k, v in alike[0].items() if k != "ipFamily"}] if len(alike) > 1 else alike)
    ]


def _reason(change: Change, explainer: Explainer) -> str:
    """Who decides the first class pair now (the new version's allowing rules, or its isolating
    policies)."""
    classes = change.classes
    src, dst = classes.reps[change.srcs[0]], classes.reps[change.dsts[0]]
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


SHOWN = 3  # classes and pod pairs named per line; the rest counted


def _side(classes: PodClasses, found: tuple[int, ...]) -> str:
    named = "; ".join(classes.label(c) for c in found[:SHOWN])
    return (
        named
        if len(found) == 1
        else f"{len(found):,} classes ({named}{'; ...' if len(found) > SHOWN else ''})"
    )


def as_text(changes: Sequence[Change], pods: Sequence[Pod], explainer: Explainer) -> Iterator[str]:
    if not changes:
        yield "no connection gained or lost\n"
        return
    for change in changes:
        count = change.count()
        if not count:
            continue
        classes = change.classes
        family = f" IPv{change.family}" if change.family else ""
        sign = "+" if change.gained else "-"
        shown = list(itertools.islice(change.pairs(pods), SHOWN))
        names = ", ".join(f"{s.namespace}/{s.name} -> {d.namespace}/{d.name}" for s, d in shown)
        more = ", ..." if count > SHOWN else ""
        example = (
            ""
            if len(change.srcs) == len(change.dsts) == 1
            else f"{classes.label(change.srcs[0])} -> {classes.label(change.dsts[0])}: "
        )
        yield (
            f"{sign} {change.query.label}{family}  {_side(classes, change.srcs)} -> {_side(classes, change.dsts)}"
            f"  ({count:,} pair{'s' if count != 1 else ''}: {names}{more})\n"
            f"    {example}{_reason(change, explainer)}\n"
        )
