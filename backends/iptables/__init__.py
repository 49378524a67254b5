"""iptables-restore + ipset: ``render`` spells the lowered program, ``load`` programs the kernel."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...ir import Program
from ...lock import netns_lock
from ...lower import Lowered, lower
from ..base import Backend, LoadReport, MemberDelta, Members, Options, Runner
from . import render as _render
from .drift import iptables_drift
from .load import Tools, _tools, apply_iptables, detect_tools, load_members, refuse_layered, reset_iptables
from .mark_tree import Marks
from .render import NPC_LAYOUT, Layout
from .update import Chains, chains, update_iptables

if TYPE_CHECKING:
    from ...resolve import Compiled


def load_layout(
    backend: str,
    compiled: Compiled,
    marks: Marks,
    options: Options,
    runner: Runner,
    layout: Layout = NPC_LAYOUT,
    known: dict[str | None, Tools] | None = None,
    written: dict[int, Chains] | None = None,
) -> LoadReport:
    """Load one layout (npc's own, or Weave's hooks) into this namespace: the iptables backend's
    load and Weave's. ``known`` remembers the tools found per ``--iptables``: detecting them
    saves every table of both flavours, a second at L, which a later update need not pay;
    ``written`` gets the chains now in force, per family, as an update compares them."""
    layout = layout.carrying(compiled.lowered)
    with netns_lock(options.wait):  # the agent, a cron job and a shell never interleave
        tools = detect_tools(runner, options.iptables, layout.hooked)
        if known is not None:
            known[options.iptables] = tools
        if layout is NPC_LAYOUT:
            from ..weave import LAYOUT as WEAVE  # not at import: weave builds on this package

            refuse_layered(runner, compiled.lowered, tools, WEAVE, "weave")
        report = apply_iptables(compiled.lowered, compiled.members, marks, tools, runner, layout)
    if written is not None:
        written.update(report.written)
    adopted = f", {report.adopted} {layout.replaces} sets removed" if report.adopted else ""
    return LoadReport(
        backend,
        compiled.lowered.network,
        f"{backend} ({report.flavour}): {report.chains} chains, sets {report.sets_created} created, "
        f"{report.sets_updated} updated, {report.sets_destroyed} removed{adopted}",
        report.warnings,
    )


class IptablesBackend:
    name = "iptables"
    files = ("rules.v4", "rules.v6", "ipsets")
    loads = True
    stdout = None

    def __init__(self) -> None:
        self._chains: tuple[Lowered, dict[int, Chains]] | None = None  # the program in force, rendered
        self._tools: dict[str | None, Tools] = {}  # per --iptables: which tools the node uses

    def _rendered(self, lowered: Lowered, marks: Marks) -> dict[int, Chains]:
        if self._chains is not None and self._chains[0] is lowered:
            return self._chains[1]
        layout = NPC_LAYOUT.carrying(lowered)
        return {f: chains(lowered, f, marks, layout) for f in layout.families}

    def check(self, options: Options) -> None:
        """Every option is the iptables backend's."""

    def render(self, compiled: Compiled, options: Options) -> dict[str, str]:
        lowered = compiled.lowered
        return _render.artefacts(lowered, compiled.members, Marks.of(options), NPC_LAYOUT.carrying(lowered))

    def rule_counts(self, compiled: Compiled, options: Options) -> dict[str, int]:
        lowered = compiled.lowered
        return {
            f"rules.v{f}": _render.rule_count(lowered, f, Marks.of(options))
            for f in NPC_LAYOUT.carrying(lowered).families
        }

    def chain_counts(self, compiled: Compiled, options: Options) -> dict[str, int]:
        marks = Marks.of(options)
        return {
            f"rules.v{f}": len(_render.NPC_LAYOUT.chain_names(compiled.lowered, f, marks))
            for f in NPC_LAYOUT.carrying(compiled.lowered).families
        }

    def rules_per_packet(self, compiled: Compiled, options: Options) -> int:
        return _render.rules_per_packet(compiled.lowered, compiled.members, Marks.of(options))

    def notes(self, compiled: Compiled, options: Options) -> tuple[str, ...]:
        return ()

    def read_sets(self, lowered: Lowered, options: Options) -> frozenset[str]:
        return _render.read_sets(lowered, Marks.of(options))

    def load(self, compiled: Compiled, options: Options, runner: Runner) -> LoadReport:
        written: dict[int, Chains] = {}
        report = load_layout(
            self.name, compiled, Marks.of(options), options, runner, known=self._tools, written=written
        )
        # the program now in force, as an update compares it (from the restore's own input, not
        # rendered again): the agent's first policy change then renders only its new program
        self._chains = (compiled.lowered, written)
        return report

    def load_update(
        self, lowered: Lowered, members: Members, compiled: Compiled, options: Options, runner: Runner
    ) -> LoadReport:
        """Only the chains and sets that differ (``update``): new sets, one restore per family
        of the new, changed and gone chains, member moves, then the stale sets."""
        marks, after = Marks.of(options), compiled.lowered
        before_chains, after_chains = self._rendered(lowered, marks), self._rendered(after, marks)
        with netns_lock(options.wait):
            tools = self._tools.get(options.iptables) or detect_tools(runner, options.iptables)
            report = update_iptables(
                (lowered, members, before_chains),
                (after, compiled.members, after_chains),
                marks,
                tools,
                runner,
                NPC_LAYOUT.carrying(after),
            )
        self._tools[options.iptables], self._chains = tools, (after, after_chains)
        return LoadReport(
            self.name,
            after.network,
            f"iptables ({tools.flavour}): updated: {report.summary}",
            report.warnings,
        )

    def drift(self, lowered: Lowered, members: Members, options: Options, runner: Runner) -> tuple[str, ...]:
        """Without the apply lock, as nftables's: the agent asks while it goes on loading."""
        return iptables_drift(
            lowered, members, Marks.of(options), detect_tools(runner, options.iptables), runner
        )

    def load_members(
        self, lowered: Lowered, old: Members, new: Members, options: Options, runner: Runner
    ) -> MemberDelta:
        """Member deltas of the kernel's sets: a pod added to a policed namespace gets its
        group's entry in the map set; rules stay."""
        with netns_lock(options.wait):
            marks = Marks.of(options)
            changes = _render.set_changes(lowered, old, new, marks)
            return load_members(changes, _render.restricting_sets(lowered, marks), runner)

    def reset(self, network: str | None, options: Options, runner: Runner) -> LoadReport:
        if options.iptables:
            flavours = [detect_tools(runner, options.iptables)]
        else:
            flavours = [t for t in (_tools("legacy"), _tools("nft")) if runner.which(t.save[4])]
            flavours = flavours or [_tools("")]
        lowered = lower(Program(), network) if network is not None else None
        with netns_lock(options.wait):
            removed, left = reset_iptables(runner, lowered, flavours, leave_layered=True)
        summary = f"iptables: removed {len(removed)} objects"
        if left:  # Weave's layout hooks them in: ``npc reset --backend weave`` removes them
            summary += f"; left {len(left)} network(s) that rules outside npc's chains jump into"
            summary += " (Weave's: npc reset --backend weave)"
        return LoadReport(self.name, network or "every network", summary, tuple(removed))


BACKEND: Backend = IptablesBackend()
