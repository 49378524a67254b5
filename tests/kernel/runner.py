"""Run whole cases on the kernel, several at a time.

Most of a case's wall time is spent waiting for denied probes to time out, so a few clusters in
flight at once shorten the suite without loading the CPU much; the prober's retry of slow
answers keeps verdicts stable on a busy two-core machine. ``NPC_KERNEL_JOBS`` sets how many
(1 = one after another).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import attrs

from .case import Case, write_inputs
from .cluster import Cluster, Observation
from .matrix import as_table, disagreements, matrix_json
from .report import observations_report
from .weave import WeaveCluster, weave_case

DEFAULT_JOBS = 3


@attrs.frozen
class CaseRun:
    """One case applied with one backend and source form: npc's exit, then any table mismatches."""

    apply: subprocess.CompletedProcess[str]
    failures: str  # empty when every probed cell matched its table
    workdir: Path  # the inputs handed to npc, kept for a look after a failure
    matrix_failures: str = ""  # empty when ``npc matrix`` agreed with every probe

    def problem(self, case: Case) -> str:
        """Why this run failed, in words for a test report; empty when it passed."""
        inputs = f"(inputs in {self.workdir})"
        if self.apply.returncode != 0:
            return (
                f"npc apply exited {self.apply.returncode} {inputs}:\n{self.apply.stderr}{self.apply.stdout}"
            )
        failures = "\n\n".join(f for f in (self.failures, self.matrix_failures) if f)
        return f"{case.path.name}: {case.name} {inputs}\n{failures}" if failures else ""


def node_for(case: Case, backend: str) -> tuple[type[Cluster], Case]:
    """A Weave Net node (and the case's IPv4 probes only) for the weave backend, else Calico-style
    routing and the whole case."""
    return (WeaveCluster, weave_case(case)) if backend == "weave" else (Cluster, case)


def run_case(case: Case, workdir: Path, backend: str = "iptables", form: str = "yaml") -> CaseRun:
    topology, case = node_for(case, backend)
    with topology(case, workdir) as cluster:
        done = cluster.apply(backend=backend, form=form, check=False)
        if done.returncode != 0:
            return CaseRun(done, "", workdir)
        observations = cluster.probe()
        return CaseRun(
            done,
            observations_report(case, observations),
            workdir,
            matrix_report(case, observations, workdir, form),
        )


def matrix_report(case: Case, observations: list[Observation], workdir: Path, form: str) -> str:
    """Where ``npc matrix`` on the same inputs disagrees with what the kernel let through."""
    paths, inventory = write_inputs(case, workdir / "matrix", form)
    data = matrix_json(paths, inventory, case.checks)
    lines = []
    for o in observations:
        table = as_table(case, o.check, data)
        for i, j in disagreements(table, o.observed):
            src, dst = case.endpoints[i], case.endpoints[j]
            lines.append(
                f"npc matrix {o.check.label}: {src.ref} -> {dst.ref}: matrix {table[i][j]}, kernel {o.observed[i][j]}"
            )
        if not any(c != "?" for row in table for c in row) and any(
            not e.external for e in case.endpoints[1:]
        ):
            lines.append(f"npc matrix {o.check.label}: no cell compared")
    return "\n".join(lines)


def jobs() -> int:
    return max(1, int(os.environ.get("NPC_KERNEL_JOBS", DEFAULT_JOBS)))


Key = tuple[str, str, str]  # case id, backend, form


@contextmanager
def case_runs(wanted: Iterable[tuple[Case, str, str]], root: Path) -> Iterator[dict[Key, Future[CaseRun]]]:
    """Start every wanted (case, backend, form) run in a small pool; cancel what is left on exit."""
    pool = ThreadPoolExecutor(max_workers=jobs(), thread_name_prefix="npc-kernel")
    try:
        futures: dict[Key, Future[CaseRun]] = {}
        for case, backend, form in wanted:
            key = (case.id, backend, form)
            if key not in futures:
                workdir = root / "-".join(key)
                workdir.mkdir(parents=True, exist_ok=True)
                futures[key] = pool.submit(run_case, case, workdir, backend, form)
        yield futures
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # running clusters clean up in their own ``with``
