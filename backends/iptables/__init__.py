"""iptables-restore + ipset: ``render`` spells the lowered program, ``load`` programs the kernel."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...ir import Program
from ...lower import lower
from ..base import LoadReport, Options, Runner
from . import render as _render
from .load import apply_iptables, detect_tools, reset_iptables
from .mark_tree import Marks

if TYPE_CHECKING:
    from ...pipeline import Compiled


class IptablesBackend:
    name = "iptables"
    files = ("rules.v4", "rules.v6", "ipsets")
    stdout = None

    def render(self, compiled: Compiled, options: Options) -> dict[str, str]:
        return _render.artefacts(compiled.lowered, compiled.members, Marks.of(options))

    def rule_counts(self, compiled: Compiled, options: Options) -> dict[str, int]:
        return {f"rules.v{f}": _render.rule_count(compiled.lowered, f, Marks.of(options)) for f in (4, 6)}

    def rules_per_packet(self, compiled: Compiled, options: Options) -> int:
        return _render.rules_per_packet(compiled.lowered, compiled.members, Marks.of(options))

    def load(self, compiled: Compiled, options: Options, runner: Runner) -> LoadReport:
        tools = detect_tools(runner, options.iptables)
        report = apply_iptables(compiled.lowered, compiled.members, Marks.of(options), tools, runner)
        return LoadReport(
            self.name,
            compiled.lowered.names.network,
            f"iptables ({report.flavour}): {report.chains} chains, sets {report.sets_created} created, "
            f"{report.sets_updated} updated, {report.sets_destroyed} removed",
            report.warnings,
        )

    def reset(self, network: str, options: Options, runner: Runner) -> LoadReport:
        tools = detect_tools(runner, options.iptables)
        chains, sets = reset_iptables(lower(Program(), network), tools, runner)
        return LoadReport(
            self.name, network, f"iptables ({tools.flavour}): removed {chains} chains, {sets} sets"
        )


BACKEND = IptablesBackend()
