"""The kernel judges random clusters too: each seed's case (``kernel/random_case.py``), its tables
filled in by the reference evaluator, applied with ``npc apply`` and probed pair by pair; and
applied again onto a node that runs other policies for other pods (the update path).

The hand-written cases fix what each rule of the API means; these check that what npc loads means
the same when many shapes meet on one pod (and ``npc matrix`` with it, as for every case). A
failure names the seed and keeps the case file and npc's inputs in the run's folder.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
from kernel.case import Case
from kernel.random_case import Update, random_case, random_update, seeds
from kernel.report import observations_report
from kernel.runner import CaseRun, Key, case_runs, jobs, node_for

pytestmark = pytest.mark.kernel

SEEDS = seeds(range(12))
# As the hand-written cases run: both backends from YAML, the language (``npc convert --to dsl``)
# on iptables, and the weave backend on a Weave Net node (its IPv4 probes).
RUNS = (("iptables", "yaml"), ("nftables", "yaml"), ("iptables", "dsl"), ("weave", "yaml"))


@pytest.fixture(scope="module")
def random_runs(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[dict[int, Case], dict[Key, Future[CaseRun]]]]:
    """Every seed's case, and its runs, started up front in the kernel suite's small pool."""
    root = tmp_path_factory.mktemp("kernel-random")
    cases = {seed: random_case(seed, root) for seed in SEEDS}
    wanted = [(c, backend, form) for c in cases.values() for backend, form in RUNS]
    with case_runs(wanted, root) as futures:
        yield cases, futures


@pytest.mark.parametrize(("backend", "form"), RUNS)
@pytest.mark.parametrize("seed", SEEDS, ids=[f"seed-{s}" for s in SEEDS])
def test_random_case_on_kernel(
    seed: int, backend: str, form: str, random_runs: tuple[dict[int, Case], dict[Key, Future[CaseRun]]]
) -> None:
    cases, futures = random_runs
    case = cases[seed]
    problem = futures[(case.id, backend, form)].result().problem(case)
    assert not problem, problem


BACKENDS = ("iptables", "nftables", "weave")


def run_update(update: Update, backend: str, workdir: Path) -> str:
    """The first apply, then the case's: what the probes disagree with (empty: nothing)."""
    topology, case = node_for(update.case, backend)
    with topology(case, workdir) as cluster:
        for policies, listed in ((update.first_policies, update.first_listed), (None, update.listed)):
            endpoints = [case.endpoints[i] for i in listed]
            done = cluster.apply(backend=backend, policies=policies, endpoints=endpoints, check=False)
            if done.returncode != 0:
                return f"npc apply exited {done.returncode} (inputs in {workdir}):\n{done.stderr}"
        report = observations_report(case, cluster.probe())
    return f"{case.name}, after another apply (inputs in {workdir}):\n{report}" if report else ""


@pytest.fixture(scope="module")
def update_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[tuple[int, str], Future[str]]]:
    root = tmp_path_factory.mktemp("kernel-random-update")
    with ThreadPoolExecutor(max_workers=jobs(), thread_name_prefix="npc-kernel") as pool:
        futures = {}
        for seed in SEEDS:
            update = random_update(seed, root)
            for backend in BACKENDS:
                workdir = root / f"{seed:03d}-{backend}"
                workdir.mkdir()
                futures[(seed, backend)] = pool.submit(run_update, update, backend, workdir)
        try:
            yield futures
        finally:
            for future in futures.values():
                future.cancel()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed", SEEDS, ids=[f"seed-{s}" for s in SEEDS])
def test_random_case_after_another_apply(
    seed: int, backend: str, update_runs: dict[tuple[int, str], Future[str]]
) -> None:
    problem = update_runs[(seed, backend)].result()
    assert not problem, problem
