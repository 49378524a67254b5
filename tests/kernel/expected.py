"""What the reference evaluator says a case's tables should be (no root).

The evaluator check compares these with the hand-written tables, the kernel suites with what the
probes saw.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from npc.evaluate import Evaluator
from npc.inventory import read_inventory
from npc.ir import Address
from npc.pipeline import policy_program
from npc.sources import read_policy_sources

from .case import Case, Check, Endpoint, write_inputs


def evaluator_for(
    case: Case, directory: Path, form: str, endpoints: Iterable[Endpoint] | None = None
) -> Evaluator:
    """The program and inventory exactly as ``npc`` builds them from the files a user passes
    (``endpoints``: the pods the inventory lists, all of the case's by default)."""
    paths, inventory_path = write_inputs(case, directory, form, endpoints)
    loaded = read_policy_sources([str(p) for p in paths])
    inventory = read_inventory(str(inventory_path))
    return Evaluator(policy_program(loaded, inventory.namespaces), inventory)


class Decider(Protocol):
    def allowed(self, src: Address, dst: Address, protocol: str, port: int) -> bool: ...


def evaluated(case: Case, check: Check, evaluator: Decider) -> tuple[str, ...]:
    """An evaluator's table for ``check``, on the network it probes (the primary one by default):
    npc's reference evaluator, or a model of another dataplane."""
    rows = []
    for src in case.endpoints:
        row = ""
        for dst in case.endpoints:
            s, d = src.address(check.family, check.network), dst.address(check.family, check.network)
            if src.index == dst.index or s is None or d is None:
                row += "?"
            else:
                row += "." if evaluator.allowed(s, d, check.protocol, check.port) else "X"
        rows.append(row)
    return tuple(rows)
