"""Backends: one package per dataplane, each a ``Backend`` (see ``base``) named ``BACKEND``.

A new dataplane is a package here and one line in ``BACKENDS``; nothing else names backends.
"""

from __future__ import annotations

import importlib

from ..errors import UsageError
from .base import Backend

# name -> package under npc.backends; imported only when used
BACKENDS: dict[str, str] = {"iptables": "iptables", "nftables": "nftables", "calico": "calico"}


def get(name: str) -> Backend:
    if name not in BACKENDS:
        raise UsageError(f"unknown backend {name!r} (choose from {', '.join(BACKENDS)})")
    backend: Backend = importlib.import_module(f"npc.backends.{BACKENDS[name]}").BACKEND
    return backend
