"""The hand-written truth tables against the reference evaluator (no root, fast).

Each case's policies are written as a user would (YAML files, or one kubectl ``v1 List`` JSON),
read back through ``read_policy_sources`` and the kubectl-shaped inventory, and the evaluator's
matrix must equal the table. A disagreement means the table or the evaluator is wrong.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

import pytest
from kernel.case import SHARED_SEEDS, Case, Check, case_paths, load_cases, write_inputs
from kernel.report import diff_report
from npc.evaluate import Evaluator
from npc.frontends.legacy import isolation_policies, namespaces_from_objects
from npc.inventory import read_inventory
from npc.ir import Address, Program
from npc.sources import read_policy_sources

CASES = load_cases()
FORMS = ("yaml", "json-list", "dsl")


def evaluator_for(case: Case, directory: Path, form: str) -> Evaluator:
    """The program and inventory exactly as ``npc`` builds them from the files a user passes."""
    paths, inventory_path = write_inputs(case, directory, form)
    loaded = read_policy_sources([str(p) for p in paths])
    inventory = read_inventory(str(inventory_path))
    namespaces = {ns.name: ns for ns in inventory.namespaces}
    for ns in namespaces_from_objects(loaded.namespaces):
        namespaces.setdefault(ns.name, ns)
    return Evaluator(Program(loaded.policies + tuple(isolation_policies(namespaces.values()))), inventory)


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


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_evaluator_agrees_with_table(case: Case, form: str, tmp_path: Path) -> None:
    evaluator = evaluator_for(case, tmp_path, form)
    reports = [
        diff_report(case, c, evaluated(case, c, evaluator), observed_title="evaluator") for c in case.checks
    ]
    failures = "\n\n".join(r for r in reports if r)
    assert not failures, f"{case.path.name}: {case.name}\n{failures}"


def test_there_are_enough_distinct_cases() -> None:
    names = [c.name for c in CASES]
    assert len(CASES) >= 44 and len(set(names)) == len(names)


def test_every_case_denies_and_allows_something_or_says_why() -> None:
    """A table of all '.' or all 'X' proves little; only cases about all-open outcomes may be."""
    for case in CASES:
        cells = {ch for check in case.checks for row in check.expect for ch in row} - {"?"}
        assert cells == {".", "X"} or case.id.startswith(("10-", "70-", "seed-03")), case.path.name


@pytest.mark.skipif(not SHARED_SEEDS.is_dir(), reason="../shared is not present (it is optional)")
def test_seed_copies_match_the_shared_conformance_cases() -> None:
    ours = {p.name: p for p in case_paths() if p.name.startswith("seed-")}
    shared = sorted(SHARED_SEEDS.glob("seed-*.json"))
    assert shared and sorted(ours) == [p.name for p in shared]
    for path in shared:
        assert json.loads(ours[path.name].read_text()) == json.loads(path.read_text()), path.name
