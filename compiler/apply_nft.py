"""Load compiled nftables output into the kernel of the current network namespace.

Ownership: npc touches only its network's ``inet`` table (``npc`` for the default network,
``npc-<tag>`` for others); every other table, iptables-nft's included, is left alone. The ruleset
file creates, deletes and redefines that table in one ``nft -f`` transaction, which the kernel
commits whole or not at all: if anything is rejected, the previous table stays in force.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping, Sequence

import attrs

from .backends.nftables import build, render
from .errors import ApplyError
from .lower import Lowered
from .resolve import Entry


@attrs.frozen
class NftReport:
    table: str
    chains: int
    sets: int
    elements: int


def load_ruleset(text: str) -> None:
    """``nft -f -`` with ``text``; ApplyError when ``nft`` is missing or refuses it."""
    nft = shutil.which("nft")
    if nft is None:
        raise ApplyError("nft not found: install it (Debian: apt-get install nftables)")
    done = subprocess.run([nft, "-f", "-"], input=text, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ApplyError(
            f"nft rejected the new ruleset (the previous table stays in force): {done.stderr.strip()}"
        )


def apply_nftables(lowered: Lowered, members: Mapping[str, Sequence[Entry]]) -> NftReport:
    ruleset = build(lowered, members)
    load_ruleset(render(ruleset))
    return NftReport(
        f"inet {ruleset.table}",
        ruleset.chain_count,
        len(ruleset.sets) + len(ruleset.maps),
        ruleset.element_count,
    )
