"""The one road from policies to artefacts: passes, lowering, set membership, rendering.

``PASSES`` is the single list of optimiser passes (each a pure ``Program -> Program``), run in
order; a pass is added by writing its module under ``passes/`` and naming it here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import attrs

from .errors import UsageError
from .inventory import Inventory
from .ir import Program
from .lower import DEFAULT_MARK, DEFAULT_NETWORK, Lowered, lower
from .passes.drop_dead_rules import drop_dead_rules
from .passes.drop_inert_policies import drop_inert_policies
from .passes.merge_peers import merge_peers
from .passes.merge_ports import merge_ports
from .passes.remove_shadowed import remove_shadowed
from .resolve import Entry, resolve

Pass = Callable[[Program], Program]
PASSES: tuple[Pass, ...] = (
    drop_dead_rules,
    merge_ports,
    merge_peers,
    remove_shadowed,
    drop_inert_policies,
)
BACKENDS = ("iptables", "nftables", "weave")


class Backend(Protocol):
    def artefacts(self, lowered: Lowered, members: Mapping[str, Sequence[Entry]]) -> dict[str, str]: ...

    def rule_counts(self, files: Mapping[str, str]) -> dict[str, int]: ...


def backend(name: str) -> Backend:
    if name not in BACKENDS:
        raise UsageError(f"unknown backend {name!r} (choose from {', '.join(BACKENDS)})")
    module: Backend = importlib.import_module(f"npc.backends.{name}")  # type: ignore[assignment]
    return module


def optimise(program: Program, passes: Sequence[Pass] = PASSES) -> Program:
    for run in passes:
        program = run(program)
    return program


@attrs.frozen
class Compiled:
    program: Program
    lowered: Lowered
    members: dict[str, list[Entry]]


def compile_program(
    program: Program,
    inventory: Inventory,
    network: str = DEFAULT_NETWORK,
    mark: int = DEFAULT_MARK,
    passes: Sequence[Pass] = PASSES,
) -> Compiled:
    optimised = optimise(program, passes)
    lowered = lower(optimised, network, mark)
    return Compiled(optimised, lowered, resolve(lowered, inventory))
