"""Shared hooks. ``kernel/`` (the harness package) is importable because this folder is on sys.path.

Tests marked ``kernel`` build network namespaces: this is the one place that skips them without
root, and that removes namespaces a killed earlier run left before the first of them runs.
"""

from __future__ import annotations

import functools
import os

import pytest

NOT_ROOT = "kernel tests build network namespaces and load rules into them: they need root (uid 0)"


@functools.cache
def _reap_stale_once() -> None:
    from kernel.cluster import reap_stale

    reap_stale()


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("kernel") is None:
        return
    if os.geteuid() != 0:
        pytest.skip(NOT_ROOT)
    _reap_stale_once()
