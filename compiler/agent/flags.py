"""``npc agent``'s own flags, apart from the agent: declaring them (``npc --help``, ``--version``)
must not load the Kubernetes client, which takes half a second to import."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from ..arguments import given


def add_agent_args(p: argparse.ArgumentParser) -> None:
    """The agent's own flags (``cli`` adds the backend and network flags every command shares)."""
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--policies",
        nargs="+",
        type=given,
        metavar="PATH",
        help="policy files or folders, watched (default: the API)",
    )
    source.add_argument(
        "--artefacts", type=given, metavar="DIR", help="what npc compile -o DIR wrote (GitOps)"
    )
    p.add_argument(
        "--inventory", type=given, metavar="FILE", help="kubectl get namespaces,pods -A -o json, watched"
    )
    p.add_argument("--kubeconfig", type=given, metavar="FILE", help="default: $KUBECONFIG, else in-cluster")
    p.add_argument("--iptables", choices=("legacy", "nft"), help="force the iptables flavour")
    p.add_argument(
        "--networks", type=given, metavar="FILE", help="every network of this file, in one process"
    )
    p.add_argument("--node", type=given, metavar="NAME", help="police only pods with spec.nodeName NAME")
    p.add_argument(
        "--listen",
        type=given,
        default="127.0.0.1:9469",
        metavar="HOST:PORT",
        help="/metrics /healthz /readyz",
    )
    p.add_argument("--debounce", type=_positive(int), default=100, metavar="MS", help="default 100")
    p.add_argument("--resync", type=_positive(float), default=300.0, metavar="SECONDS", help="default 300")
    p.add_argument("--log-format", choices=("text", "json"), default="text")


def _positive(kind: type[int] | type[float]) -> Callable[[str], int | float]:
    def number(text: str) -> int | float:  # argparse names it: "invalid number value: 'x'"
        value = kind(text)
        if not 0 < value < math.inf:  # nan and inf are floats too
            raise argparse.ArgumentTypeError("must be a positive number")
        return value

    return number
