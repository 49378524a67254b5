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
from ..base import (
    DEFAULT_GROUP_MASKS,
    DEFAULT_MARK,
    Backend,
    LoadReport,
    MemberDelta,
    Members,
    Options,
    Runner,
)
from ..iptables import load_layout
from ..iptables import render as iptables
from ..iptables.load import detect_tools, hooked_by_npc, load_members, reset_iptables, reset_layout
from ..iptables.mark_tree import Marks

if TYPE_CHECKING:
    from ...resolve import Compiled

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
    replaces="weave-npc",
    entry_rules=17,  # the template's entry block
    verdict_rules={"egress": 0, "ingress": 1},  # egress: WEAVE-NPC-EGRESS itself drops
    # the router's two FORWARD jumps; WEAVE-NPC-EGRESS up to -CUSTOM, -DEFAULT's two, the NFLOG and
    # drop after it; WEAVE-NPC's five and -DEFAULT's one
    per_packet=2 + 6 + 2 + 2 + 5 + 1,
)


def _marks(options: Options) -> Marks:
    """Weave Net's mark, and no group bits: dispatch stays one flat list per direction (see
    README, "Dispatch by namespace group")."""
    if options.mark != DEFAULT_MARK:
        raise UsageError(f"--mark does not apply to --backend weave: Weave Net's mark is {EGRESS_MARK:#x}")
    if options.group_marks != DEFAULT_GROUP_MASKS:
        raise UsageError("--group-marks does not apply to --backend weave: its dispatch is flat")
    return Marks(EGRESS_MARK, 0, 0, pending=False)  # weave-npc's rules read it set as allowed


def _ipv4(lowered: Lowered) -> Lowered:
    """``lowered``, which must carry IPv4: Weave Net's sets and rules are IPv4's alone."""
    if not any(program.family == 4 for program in lowered.families):
        raise UsageError(
            f"network {lowered.network}: Weave Net carries IPv4 only, and --ip-families leaves it out"
        )
    return lowered


class WeaveBackend:
    name = "weave"
    files = ("rules.v4", "ipsets")
    loads = True
    stdout = None  # every file, each under a header line, as for iptables

    def check(self, options: Options) -> None:
        """``--iptables`` picks the flavour as for the iptables backend; the mark is Weave's."""
        _marks(options)

    def render(self, compiled: Compiled, options: Options) -> dict[str, str]:
        return iptables.artefacts(_ipv4(compiled.lowered), compiled.members, _marks(options), LAYOUT)

    def rule_counts(self, compiled: Compiled, options: Options) -> dict[str, int]:
        return {"rules.v4": iptables.rule_count(compiled.lowered, 4, _marks(options), LAYOUT)}

    def chain_counts(self, compiled: Compiled, options: Options) -> dict[str, int]:
        """Weave's seven WEAVE-NPC chains (two the router's) and npc's policy chains under them."""
        return {"rules.v4": len(LAYOUT.chain_names(compiled.lowered, 4, _marks(options)))}

    def rules_per_packet(self, compiled: Compiled, options: Options) -> int:
        return iptables.rules_per_packet(compiled.lowered, compiled.members, _marks(options), LAYOUT)

    def notes(self, compiled: Compiled, options: Options) -> tuple[str, ...]:
        """IPv6 pod addresses and ipBlocks are left out (never an error)."""
        if not any(program.family == 6 for program in compiled.lowered.families):
            return ()  # the network's --ip-families leave IPv6 out
        v6 = compiled.lowered.family(6)
        addresses = {text for s in v6.sets if s.kind == "pods" for text, _ in compiled.members[s.name]}
        blocks = sum(1 for s in v6.sets if s.kind == "net")
        if not addresses and not blocks:
            return ()
        return (
            f"Weave Net carries IPv4 only: skipped {len(addresses)} IPv6 pod addresses and "
            f"{blocks} IPv6 ipBlock peers",
        )

    def read_sets(self, lowered: Lowered, options: Options) -> frozenset[str]:
        return iptables.read_sets(lowered, _marks(options), LAYOUT.families)

    def load(self, compiled: Compiled, options: Options, runner: Runner) -> LoadReport:
        _ipv4(compiled.lowered)
        return load_layout(self.name, compiled, _marks(options), options, runner, LAYOUT)

    def load_members(
        self, lowered: Lowered, old: Members, new: Members, options: Options, runner: Runner
    ) -> MemberDelta:
        """Weave's sets are ipsets like the iptables backend's: the same member deltas, for the
        sets it carries (IPv4 only: the IPv6 sets were never created)."""
        marks = _marks(options)
        changes = iptables.set_changes(lowered, old, new, marks, LAYOUT.families)
        with netns_lock(options.wait):
            return load_members(changes, iptables.restricting_sets(lowered, marks, LAYOUT.families), runner)

    def reset(self, network: str | None, options: Options, runner: Runner) -> LoadReport:
        """npc's chains and sets go; WEAVE-NPC and WEAVE-NPC-EGRESS are left empty, as the router
        made them (so, as on a node without weave-npc, nothing new enters a pod). Without a
        network: the default network's, then whatever npc left on any other."""
        with netns_lock(options.wait):
            tools = detect_tools(runner, options.iptables, LAYOUT.hooked)
            lowered = lower(Program(), network or DEFAULT_NETWORK)
            # the iptables backend's network is not weave's to take apart (without a network,
            # ``reset_iptables`` below removes every network's whole)
            theirs = hooked_by_npc(runner, tools, lowered)
            chains, sets = (0, 0) if theirs else reset_layout(lowered, tools, runner, LAYOUT)
            others = reset_iptables(runner, None, [tools])[0] if network is None else []
        other_sets = sum(1 for removed in others if removed.startswith("set "))  # the rest are chains
        chains, sets = chains + len(others) - other_sets, sets + other_sets
        summary = f"weave ({tools.flavour}): removed {chains} chains, {sets} sets"
        if theirs and network is not None:  # ``npc reset --backend iptables`` removes it
            summary = f"weave ({tools.flavour}): network {network} is the iptables backend's, left as it is"
        return LoadReport(self.name, network or "every network", summary, tuple(others))


BACKEND: Backend = WeaveBackend()
