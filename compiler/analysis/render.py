"""Matrices as JSON (the exact shape external checks read), CSV, text by classes, and one HTML page.

Renderers yield text in pieces, one matrix at a time: a 5,000-pod matrix is 25 MB of cells, and
a cluster has dozens of ports.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence

import jinja2
import numpy as np

from ..inventory import Pod
from .classes import PodClasses, address
from .explain import Endpoint, Explainer
from .matrix import Matrix, json_rows, rows

FORMATS = ("text", "json", "csv", "html")


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
        yield json_rows(matrix.cells())
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
        for name, row in zip(names, rows(matrix.cells()), strict=True):
            writer.writerow([matrix.protocol, matrix.query.port, family, name, *row])
        yield out.getvalue()
        out.seek(0)
        out.truncate()
    yield out.getvalue()


def _class_cells(classes: PodClasses, allowed: np.ndarray) -> list[str]:
    """Class rows; a one-pod class facing itself is the diagonal ``-``."""
    out = []
    for s in range(len(classes)):
        row = "".join(
            "-" if s == d and len(classes.members[s]) == 1 else "." if allowed[s, d] else "X"
            for d in range(len(classes))
        )
        out.append(row)
    return out


def _classes_text(pods: Sequence[Pod], classes: PodClasses) -> Iterator[str]:
    yield f"pod classes ({family_name(classes.family)}): {len(classes)} for {sum(map(len, classes.members))} pods\n"
    for i, members in enumerate(classes.members):
        names = ", ".join(ref(pods[m]) for m in members[:5]) + (", ..." if len(members) > 5 else "")
        yield f"  c{i}  {classes.label(i)}  {len(members)} pod{'s' if len(members) != 1 else ''}: {names}\n"


def as_text(pods: Sequence[Pod], matrices: Iterable[Matrix]) -> Iterator[str]:
    """Classes once per family, then per port a class-by-class grid (row: from, column: to)."""
    shown: set[int] = set()
    for matrix in matrices:
        classes = matrix.classes
        if classes.family not in shown:
            shown.add(classes.family)
            yield from _classes_text(pods, classes)
        family = f" {family_name(matrix.family)}" if matrix.family else ""
        width = len(f"c{len(classes) - 1}") if len(classes) else 2
        yield f"\n{matrix.query.label}{family}  ('.' allowed, 'X' denied, '-' the pod itself)\n"
        yield " " * (width + 2) + " ".join(f"c{d}".rjust(width) for d in range(len(classes))) + "\n"
        for s, row in enumerate(_class_cells(classes, matrix.allowed)):
            yield f"  {f'c{s}'.ljust(width)}" + "".join(" " + c.rjust(width) for c in row) + "\n"


_HOVER_LIMIT = 40_000  # class cells per page with per-policy hover; above it the hover names classes only


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
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("npc.analysis", "templates"),
        autoescape=True,
        keep_trailing_newline=True,
    )
    views = []
    for matrix in matrices:
        classes = matrix.classes
        detailed = len(classes) ** 2 <= _HOVER_LIMIT
        grid = []
        for s, row in enumerate(_class_cells(classes, matrix.allowed)):
            cells = []
            for d, cell in enumerate(row):
                title = f"{classes.label(s)} -> {classes.label(d)}: {'allowed' if cell != 'X' else 'denied'}"
                if detailed and cell != "-":
                    title += "\n" + _hover(explainer, matrix, s, d)
                cells.append((cell, title))
            grid.append(cells)
        views.append(
            {
                "title": matrix.query.label + (f" {family_name(matrix.family)}" if matrix.family else ""),
                "classes": [
                    (f"c{i}", classes.label(i), [ref(pods[m]) for m in members])
                    for i, members in enumerate(classes.members)
                ],
                "grid": grid,
            }
        )
    yield env.get_template("matrix.html.j2").render(views=views, pods=len(pods))
