"""Weave Net's own hooks, filled by npc: the iptables backend's rendering and loading with
another layout.

Weave Net's router (weaver, ``--expect-npc``) creates ``WEAVE-NPC`` and ``WEAVE-NPC-EGRESS`` and
calls them from FORWARD and INPUT; whatever ``WEAVE-NPC`` does not accept into the bridge it logs
and drops itself. weave-npc normally fills them; this backend takes its place with the same static
behaviour (replies pass, traffic to other nodes through ``vethwe-bridge`` passes, multicast is
allowed, mark ``0x40000`` means "some egress policy allowed", pods no policy isolates are open,
``templates/weave.rules.j2``) and npc's own dispatch and policy chains under them, so every other
choice (sets, chains, the loading transaction, the take-over of leftovers) is the iptables
backend's. Weave Net carries IPv4 only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...errors import UsageError
from ...ir import DEFAULT_NETWORK, Program
from ...lock import netns_lock
from ...lower import Lowered, lower
from ..base import DEFAULT_MARK, LoadReport, MemberDelta, Members, Options, Runner
from ..iptables import render as iptables
from ..iptables.load import apply_iptables, detect_tools, load_members, reset_iptables, reset_layout

if TYPE_CHECKING:
    from ...pipeline import Compiled

EGRESS_MARK = 0x40000  # weave-npc's EgressMark; also what marks "allowed" for ingress, cleared first
CHAINS = (
    "WEAVE-NPC",
    "WEAVE-NPC-DEFAULT",
    "WEAVE-NPC-INGRESS",
    "WEAVE-NPC-EGRESS",
    "WEAVE-NPC-EGRESS-ACCEPT",
    "WEAVE-NPC-EGRESS-CUSTOM",
    "WEAVE-NPC-EGRESS-DEFAULT",
)
LAYOUT = iptables.Layout(
    package=__name__,
    template="weave.rules.j2",
    families=(4,),
    fixed=CHAINS,
    kept=("WEAVE-NPC", "WEAVE-NPC-EGRESS"),  # the router creates and jumps to these
    direction_chains={"egress": "WEAVE-NPC-EGRESS-CUSTOM", "ingress": "WEAVE-NPC-INGRESS"},
    forward_jump=False,
    adopted_set_prefix="weave-",  # weave-npc's sets (the router's own set is weaver-...)
    entry_rules=17,  # the template's entry block
    verdict_rules={"egress": 0, "ingress": 1},  # egress: WEAVE-NPC-EGRESS itself drops
    # the router's two FORWARD jumps; WEAVE-NPC-EGRESS up to -CUSTOM, -DEFAULT's two, the NFLOG and
    # drop after it; WEAVE-NPC's five and -DEFAULT's one
    per_packet=2 + 6 + 2 + 2 + 5 + 1,
)


def _mark(options: Options) -> int:
    if options.mark != DEFAULT_MARK:
        raise UsageError(f"--mark does not apply to --backend weave: Weave Net's mark is {EGRESS_MARK:#x}")
    return EGRESS_MARK


class WeaveBackend:
    name = "weave"
    files = ("rules.v4", "ipsets")

    def render(self, compiled: Compiled, options: Options) -> dict[str, str]:
        return iptables.artefacts(compiled.lowered, compiled.members, _mark(options), LAYOUT)

    def rule_counts(self, compiled: Compiled, options: Options) -> dict[str, int]:
        return {"rules.v4": iptables.rule_count(compiled.lowered, 4, LAYOUT)}

    def rules_per_packet(self, compiled: Compiled, options: Options) -> int:
        return iptables.rules_per_packet(compiled.lowered, compiled.members, LAYOUT)

    def notes(self, compiled: Compiled, options: Options) -> tuple[str, ...]:
        """IPv6 pod addresses and ipBlocks are left out (never an error)."""
        v6 = compiled.lowered.family(6)
        addresses = {text for s in v6.sets if s.kind == "pods" for text, _ in compiled.members[s.name]}
        blocks = sum(1 for s in v6.sets if s.kind == "net")
        if not addresses and not blocks:
            return ()
        return (
            f"Weave Net carries IPv4 only: skipped {len(addresses)} IPv6 pod addresses and "
            f"{blocks} IPv6 ipBlock peers",
        )

    def load(self, compiled: Compiled, options: Options, runner: Runner) -> LoadReport:
        with netns_lock(options.wait):  # the agent, a cron job and a shell never interleave
            tools = detect_tools(runner, options.iptables)
            report = apply_iptables(compiled.lowered, compiled.members, _mark(options), tools, runner, LAYOUT)
        adopted = f", {report.adopted} weave-npc sets removed" if report.adopted else ""
        return LoadReport(
            self.name,
            compiled.lowered.names.network,
            f"weave ({report.flavour}): {report.chains} chains, sets {report.sets_created} created, "
            f"{report.sets_updated} updated, {report.sets_destroyed} removed{adopted}",
            report.warnings,
        )

    def load_members(
        self, lowered: Lowered, old: Members, new: Members, options: Options, runner: Runner
    ) -> MemberDelta:
        """Weave's sets are ipsets like the iptables backend's: the same member deltas, for the
        sets it carries (IPv4 only: the IPv6 sets were never created)."""
        carried = {s.name for s in iptables.all_sets(lowered, LAYOUT.families)}
        with netns_lock(options.wait):
            return load_members(
                {n: m for n, m in old.items() if n in carried},
                {n: m for n, m in new.items() if n in carried},
                runner,
            )

    def reset(self, network: str | None, options: Options, runner: Runner) -> LoadReport:
        """npc's chains and sets go; WEAVE-NPC and WEAVE-NPC-EGRESS are left empty, as the router
        made them (so, as on a node without weave-npc, nothing new enters a pod). Without a
        network: the default network's, then whatever npc left on any other."""
        with netns_lock(options.wait):
            tools = detect_tools(runner, options.iptables)
            chains, sets = reset_layout(lower(Program(), network or DEFAULT_NETWORK), tools, runner, LAYOUT)
            others = reset_iptables(runner, None, [tools]) if network is None else []
        return LoadReport(
            self.name,
            network or "every network",
            f"weave ({tools.flavour}): removed {chains} chains, {sets} sets",
            tuple(others),
        )


BACKEND = WeaveBackend()
