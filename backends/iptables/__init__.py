"""iptables-restore + ipset: ``render`` spells the lowered program, ``load`` programs the kernel."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...ir import Program
from ...lock import netns_lock
from ...lower import Lowered, lower
from ..base import LoadReport, MemberDelta, Members, Options, Runner
from . import render as _render
from .drift import iptables_drift
from .load import _tools, apply_iptables, detect_tools, load_members, reset_iptables

if TYPE_CHECKING:
    from ...pipeline import Compiled


class IptablesBackend:
    name = "iptables"
    files = ("rules.v4", "rules.v6", "ipsets")
    stdout = None

    def render(self, compiled: Compiled, options: Options) -> dict[str, str]:
        return _render.artefacts(compiled.lowered, compiled.members, options.mark)

    def rule_counts(self, compiled: Compiled, options: Options) -> dict[str, int]:
        return {f"rules.v{f}": _render.rule_count(compiled.lowered, f) for f in (4, 6)}

    def rules_per_packet(self, compiled: Compiled, options: Options) -> int:
        return _render.rules_per_packet(compiled.lowered, compiled.members)

    def notes(self, compiled: Compiled, options: Options) -> tuple[str, ...]:
        return ()

    def load(self, compiled: Compiled, options: Options, runner: Runner) -> LoadReport:
        with netns_lock(options.wait):  # the agent, a cron job and a shell never interleave
            tools = detect_tools(runner, options.iptables)
            report = apply_iptables(compiled.lowered, compiled.members, options.mark, tools, runner)
        return LoadReport(
            self.name,
            compiled.lowered.names.network,
            f"iptables ({report.flavour}): {report.chains} chains, sets {report.sets_created} created, "
            f"{report.sets_updated} updated, {report.sets_destroyed} removed",
            report.warnings,
        )

    def drift(self, lowered: Lowered, members: Members, options: Options, runner: Runner) -> tuple[str, ...]:
        with netns_lock(options.wait):
            return iptables_drift(
                lowered, members, options.mark, detect_tools(runner, options.iptables), runner
            )

    def load_members(
        self, lowered: Lowered, old: Members, new: Members, options: Options, runner: Runner
    ) -> MemberDelta:
        with netns_lock(options.wait):
            return load_members(old, new, runner)

    def reset(self, network: str | None, options: Options, runner: Runner) -> LoadReport:
        if options.iptables:
            flavours = [detect_tools(runner, options.iptables)]
        else:
            flavours = [t for t in (_tools("legacy"), _tools("nft")) if runner.which(t.save[4])]
            flavours = flavours or [_tools("")]
        lowered = lower(Program(), network) if network is not None else None
        with netns_lock(options.wait):
            removed = reset_iptables(runner, lowered, flavours)
        return LoadReport(
            self.name, network or "every network", f"iptables: removed {len(removed)} objects", tuple(removed)
        )


BACKEND = IptablesBackend()
