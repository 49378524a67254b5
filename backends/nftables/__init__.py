"""nftables: ``render`` spells the lowered program as one table, ``load`` replaces it with ``nft -f``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...errors import UsageError
from ...lower import Names
from ..base import LoadReport, Options, Runner
from . import render as _render
from .load import delete_table, load_ruleset
from .render import Ruleset, build, rules_per_packet, table_name

if TYPE_CHECKING:
    from ...pipeline import Compiled


class NftablesBackend:
    name = "nftables"
    files = ("ruleset.nft",)
    stdout = None

    def __init__(self) -> None:
        self._last: tuple[Compiled, Ruleset] | None = None

    def _build(self, compiled: Compiled) -> Ruleset:
        """Rendering and counting one compiled program build its ruleset once (seconds at scale)."""
        if self._last is None or self._last[0] is not compiled:
            self._last = (compiled, build(compiled.lowered, compiled.members))
        return self._last[1]

    def render(self, compiled: Compiled, options: Options) -> dict[str, str]:
        return {"ruleset.nft": _render.render(self._build(compiled))}

    def rule_counts(self, compiled: Compiled, options: Options) -> dict[str, int]:
        return {"ruleset.nft": self._build(compiled).rule_count}

    def rules_per_packet(self, compiled: Compiled, options: Options) -> int:
        return rules_per_packet(compiled.lowered, compiled.members)

    def load(self, compiled: Compiled, options: Options, runner: Runner) -> LoadReport:
        if options.iptables:
            raise UsageError("--iptables applies to --backend iptables only")
        ruleset = self._build(compiled)
        load_ruleset(_render.render(ruleset), runner)
        return LoadReport(
            self.name,
            ruleset.network,
            f"nftables: table inet {ruleset.table}, {ruleset.chain_count} chains, "
            f"{len(ruleset.sets) + len(ruleset.maps)} sets and maps, {ruleset.element_count} elements",
        )

    def reset(self, network: str, options: Options, runner: Runner) -> LoadReport:
        table = table_name(Names(network))
        gone = delete_table(table, runner)
        return LoadReport(self.name, network, f"nftables: {'removed' if gone else 'no'} table inet {table}")


BACKEND = NftablesBackend()
