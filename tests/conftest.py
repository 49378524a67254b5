"""Shared hooks. ``kernel/`` (the harness package) is importable because this folder is on sys.path.

Tests marked ``kernel`` build network namespaces: this is the one place that skips them without
root, that removes namespaces a killed earlier run left before the first of them runs, and
that removes, at the end, npc's records under /run/npc of the namespaces the run made and lost. Every
test's in-process loads keep npc's lock and records in its ``tmp_path``.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest

NOT_ROOT = "kernel tests build network namespaces and load rules into them: they need root (uid 0)"


@functools.cache
def _reap_stale_once() -> None:
    from kernel.cluster import reap_stale

    reap_stale()


_RECORDS_BEFORE: set[Path] = set()


def pytest_sessionstart(session: pytest.Session) -> None:
    from kernel.gone import records

    _RECORDS_BEFORE.update(records())


def pytest_sessionfinish(session: pytest.Session) -> None:
    from kernel.gone import remove_dead_records

    remove_dead_records(_RECORDS_BEFORE)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("kernel") is None:
        return
    if os.geteuid() != 0:
        pytest.skip(NOT_ROOT)
    _reap_stale_once()


@pytest.fixture(autouse=True)
def _lock_and_records_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A load run in this process (its runner in a test namespace) takes npc's lock and writes its
    records under the test's ``tmp_path``, not under /run/npc, where they are named for the namespace
    this process is in: the host's. npc run as a command inside a test namespace uses /run/npc."""
    from npc import lock

    monkeypatch.setattr(lock, "LOCK_DIR", str(tmp_path))
