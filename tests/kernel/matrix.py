"""``npc matrix`` laid out as a case's truth table, to compare with the table and with probes.

The matrix has rows and columns for the inventory's pods only (external hosts are no pods), so
cells it does not cover come back as ``?``, which no comparison counts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from npc.analysis import render
from npc.analysis.load import load_model
from npc.analysis.matrix import matrices
from npc.analysis.ports import PortQuery
from npc.networks import network_spec
from npc.pipeline import read_sources

from .case import Case, Check


def matrix_json(paths: Sequence[Path], inventory: Path, checks: Sequence[Check]) -> dict[str, Any]:
    """What ``npc matrix PATHS --inventory INVENTORY --port ... --format json`` prints, in-process
    (the kernel runner calls it from worker threads, where stdout cannot be captured)."""
    model = load_model(read_sources([str(p) for p in paths], str(inventory)), network_spec())
    queries = list(dict.fromkeys(PortQuery(c.protocol, c.port) for c in checks))  # type: ignore[arg-type]
    chunks = render.as_json(model.pods, matrices(model.program, model.pods, model.namespaces, queries))
    text = "".join(c.decode() if isinstance(c, bytes) else c for c in chunks)
    data: dict[str, Any] = json.loads(text)
    return data


def as_table(case: Case, check: Check, data: Mapping[str, Any]) -> tuple[str, ...]:
    """The matrix of ``data`` for ``check`` (protocol, port, family) in the case's endpoint order."""
    family = "IPv4" if check.family == "v4" else "IPv6"
    found = [
        m
        for m in data["matrices"]
        if m["protocol"] == check.protocol and m["port"] == check.port and m.get("ipFamily", family) == family
    ]
    assert len(found) == 1, f"{check.label}: {len(found)} matrices"
    cells = found[0]["expect"]
    index = {ref: i for i, ref in enumerate(data["pods"])}
    rows = []
    for src in case.endpoints:
        row = ""
        for dst in case.endpoints:
            i, j = index.get(src.ref), index.get(dst.ref)
            pods = not src.external and not dst.external and i is not None and j is not None
            row += cells[i][j] if pods and i != j else "?"
        rows.append(row)
    return tuple(rows)


def disagreements(matrix: Sequence[str], observed: Sequence[str]) -> list[tuple[int, int]]:
    """Cells both cover where they differ."""
    return [
        (i, j)
        for i, row in enumerate(matrix)
        for j, cell in enumerate(row)
        if cell != "?" and observed[i][j] != "?" and cell != observed[i][j]
    ]
