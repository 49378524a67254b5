"""Matrices as JSON (the exact shape external checks read), CSV, text by classes, and one HTML page.

Renderers yield text in pieces, one matrix at a time: a 5,000-pod matrix is 25 MB of cells, and
a cluster has dozens of ports.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import attrs
import jinja2

from ..inventory import Pod
from .classes import PodClasses
from .explain import Endpoint, Explainer
from .load import address
from .matrix import Matrix, json_rows, rows


def ref(pod: Pod) -> str:
    return f"{pod.namespace}/{pod.name}"


def family_name(family: int) -> str:
    return f"IPv{family}"


def _header(matrix: Matrix) -> dict[str, object]:
    head: dict[str, object] = {"protocol": matrix.protocol, "port": matrix.query.port}
    if matrix.family is not None:
        head["ipFamily"] = family_name(matrix.family)
    return head


def as_json(pods: Sequence[Pod], matrices: Iterable[Matrix]) -> Iterator[str | bytes]:
    """Exactly ``json.dumps({"pods": [...], "matrices": [...]})``, built one matrix at a time."""
    yield '{"pods": ' + json.dumps([ref(p) for p in pods]) + ', "matrices": ['
    for i, matrix in enumerate(matrices):
        head = json.dumps(_header(matrix))[:-1]
        yield (", " if i else "") + head + ', "expect": ['
        for j, block in enumerate(matrix.blocks()):
            yield (b", " if j else b"") + json_rows(block)
        yield "]}"
    yield "]}\n"


def as_csv(pods: Sequence[Pod], matrices: Iterable[Matrix]) -> Iterator[str]:
    """One line per source pod and port: protocol, port, family, source, then a cell per destination."""
    import csv
    import io

    names = [ref(p) for p in pods]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["protocol", "port", "ipFamily", "from", *names])
    for matrix in matrices:
        family = family_name(matrix.family) if matrix.family else ""
        done = 0
        for block in matrix.blocks():
            for name, row in zip(names[done : done + len(block)], rows(block), strict=True):
                writer.writerow([matrix.protocol, matrix.query.port, family, name, *row])
            done += len(block)
            yield out.getvalue()
            out.seek(0)
            out.truncate()
    yield out.getvalue()


@attrs.frozen
class Grid:
    """The classes one port treats alike (same row and same column of its class matrix) as one group:
    a grid a reviewer can read even when a big cluster has hundreds of classes."""

    groups: tuple[tuple[int, ...], ...]  # class indices
    cells: tuple[str, ...]  # per group row: ``.``/``X``, ``-`` for a lone pod facing itself


def grid(matrix: Matrix) -> Grid:
    allowed = matrix.allowed
    found: dict[tuple[bytes, bytes], list[int]] = {}
    for c in range(len(matrix.classes)):
        found.setdefault((allowed[c].tobytes(), allowed[:, c].tobytes()), []).append(c)
    groups = tuple(tuple(g) for g in found.values())
    lone = [len(g) == 1 and len(matrix.classes.members[g[0]]) == 1 for g in groups]
    cells = tuple(
        "".join(
            "-" if s == d and lone[s] else "." if allowed[src[0], dst[0]] else "X"
            for d, dst in enumerate(groups)
        )
        for s, src in enumerate(groups)
    )
    return Grid(groups, cells)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 'es' if word.endswith('s') else 's'}"


def _classes_text(pods: Sequence[Pod], classes: PodClasses) -> Iterator[str]:
    yield (
        f"pod classes ({family_name(classes.family)}): {_plural(len(classes), 'class')} "
        f"for {_plural(sum(map(len, classes.members)), 'pod')}\n"
    )
    for i, members in enumerate(classes.members):
        names = ", ".join(ref(pods[m]) for m in members[:5]) + (", ..." if len(members) > 5 else "")
        yield f"  c{i}  {classes.label(i)}  {_plural(len(members), 'pod')}: {names}\n"


def as_text(pods: Sequence[Pod], matrices: Iterable[Matrix]) -> Iterator[str]:
    """Classes once per family; per port, the groups of classes it treats alike and their grid."""
    shown: set[int] = set()
    for matrix in matrices:
        classes = matrix.classes
        if classes.family not in shown:
            shown.add(classes.family)
            yield from _classes_text(pods, classes)
        family = f" {family_name(matrix.family)}" if matrix.family else ""
        view = grid(matrix)
        yield (
            f"\n{matrix.query.label}{family}: {_plural(len(view.groups), 'group')} of classes alike on this port"
            "  (row: from, column: to; '.' allowed, 'X' denied, '-' the pod itself)\n"
        )
        width = len(f"g{len(view.groups) - 1}") if view.groups else 2
        for g, members in enumerate(view.groups):
            listed = " ".join(f"c{c}" for c in members[:12]) + (" ..." if len(members) > 12 else "")
            count = sum(len(classes.members[c]) for c in members)
            yield f"  {f'g{g}'.ljust(width)}  {listed}  ({_plural(count, 'pod')})\n"
        yield " " * (width + 2) + "".join(" " + f"g{d}".rjust(width) for d in range(len(view.groups))) + "\n"
        for g, row in enumerate(view.cells):
            yield f"  {f'g{g}'.ljust(width)}" + "".join(" " + c.rjust(width) for c in row) + "\n"


# Cells of the whole page whose hover names the deciding policies (an explain each); past it, and for
# matrices bigger than that, the hover names the groups only. Keeps a big cluster's page bounded.
_HOVER_BUDGET = 20_000


def _hover(explainer: Explainer, matrix: Matrix, s: int, d: int) -> str:
    classes = matrix.classes
    src, dst = classes.reps[s], classes.reps[d]
    port = matrix.query.port
    if isinstance(port, str):
        number = dst.named_ports().get((matrix.protocol, port))
        if number is None:
            return f"{classes.label(d)} has no container port {port}"
        port = number
    src_ip, dst_ip = address(src, classes.family), address(dst, classes.family)
    assert src_ip is not None and dst_ip is not None
    sides = explainer.explain(Endpoint(src_ip, src), Endpoint(dst_ip, dst), matrix.protocol, port)
    return "\n".join(side.text() for side in sides)


def as_html(pods: Sequence[Pod], matrices: Iterable[Matrix], explainer: Explainer) -> Iterator[str]:
    """One page, streamed a matrix at a time (jinja's ``generate`` over a generator of views): the
    independent L's 158 matrices, built whole before the page, took over 11 GiB."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("npc.analysis", "templates"),
        autoescape=True,
        keep_trailing_newline=True,
    )
    yield from env.get_template("matrix.html.j2").generate(
        views=_views(pods, matrices, explainer), pods=len(pods)
    )


def _views(pods: Sequence[Pod], matrices: Iterable[Matrix], explainer: Explainer) -> Iterator[dict[str, Any]]:
    budget = _HOVER_BUDGET
    for matrix in matrices:
        classes = matrix.classes
        view = grid(matrix)
        detailed = len(view.groups) ** 2 <= budget
        budget -= len(view.groups) ** 2 if detailed else 0
        names = [classes.label(g[0]) + (f" and {len(g) - 1} more" if len(g) > 1 else "") for g in view.groups]
        rows_ = []
        for s, row in enumerate(view.cells):
            cells = []
            for d, cell in enumerate(row):
                verdict = "denied" if cell == "X" else "allowed"
                if detailed:  # past the budget, the groups' names are the headers' and the legend's
                    title = f"{names[s]} -> {names[d]}: {verdict}"
                    if cell != "-":
                        title += "\n" + _hover(explainer, matrix, view.groups[s][0], view.groups[d][0])
                else:
                    title = f"g{s} -> g{d}: {verdict}"
                cells.append((cell, title))
            rows_.append(cells)
        groups = []
        for i, group in enumerate(view.groups):
            members = [m for c in group for m in classes.members[c]]
            listed = ", ".join(ref(pods[m]) for m in members[:LISTED_PODS])
            more = f", and {len(members) - LISTED_PODS} more" if len(members) > LISTED_PODS else ""
            groups.append((f"g{i}", names[i], [classes.label(c) for c in group], len(members), listed + more))
        yield {
            "title": matrix.query.label + (f" {family_name(matrix.family)}" if matrix.family else ""),
            "groups": groups,
            "grid": rows_,
        }


LISTED_PODS = 50  # pods named per group in the page's legend
