"""Weave Net's own hooks, filled by npc: iptables rendering with other entry chains.

Weave Net's router (weaver, ``--expect-npc``) creates ``WEAVE-NPC`` and ``WEAVE-NPC-EGRESS`` and
calls them from FORWARD and INPUT; whatever ``WEAVE-NPC`` does not accept into the bridge it logs
and drops itself. weave-npc normally fills them; this backend takes its place with the same static
behaviour (replies pass, traffic to other nodes through ``vethwe-bridge`` passes, multicast is
allowed, mark ``0x40000`` means "some egress policy allowed", pods no policy isolates are open) and
npc's own dispatch and policy chains under them, so every other iptables choice (sets, chains,
marks, the loading transaction) is the iptables backend's. Weave Net carries IPv4 only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ...lower import Lowered
from ...resolve import Entry
from .. import iptables

EGRESS_MARK = 0x40000  # weave-npc's EgressMark: the router and weave-npc's metrics know this bit
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
    template="weave.rules.j2",
    families=(4,),
    mark=EGRESS_MARK,
    fixed=CHAINS,
    direction_chains={"egress": "WEAVE-NPC-EGRESS-CUSTOM", "ingress": "WEAVE-NPC-INGRESS"},
    forward_jump=False,
    adopted_set_prefix="weave-",  # weave-npc's sets (the router's own set is weaver-...)
)


def artefacts(lowered: Lowered, members: Mapping[str, Sequence[Entry]]) -> dict[str, str]:
    """``rules.v4`` and ``ipsets``: no IPv6 file, Weave Net does not carry IPv6."""
    return iptables.artefacts(lowered, members, LAYOUT)


rule_counts = iptables.rule_counts


def notes(lowered: Lowered, members: Mapping[str, Sequence[Entry]]) -> list[str]:
    """What is left out: IPv6 addresses of pods and IPv6 ipBlocks (never an error)."""
    v6 = lowered.family(6)
    addresses = {text for s in v6.sets if s.kind == "pods" for text, _ in members[s.name]}
    blocks = sum(1 for s in v6.sets if s.kind == "net")
    if not addresses and not blocks:
        return []
    return [
        f"Weave Net carries IPv4 only: skipped {len(addresses)} IPv6 pod addresses and "
        f"{blocks} IPv6 ipBlock peers"
    ]
