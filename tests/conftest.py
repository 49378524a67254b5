"""Shared fixtures. ``kernel/`` (the harness package) is importable because this folder is on sys.path."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

NOT_ROOT = "kernel tests build network namespaces and load iptables rules: they need root (uid 0)"


@pytest.fixture(scope="session")
def netns_session() -> Iterator[None]:
    """Skip unless root; before the first kernel test, remove namespaces a killed earlier run left."""
    if os.geteuid() != 0:
        pytest.skip(NOT_ROOT)
    from kernel.cluster import reap_stale

    reap_stale()
    yield
