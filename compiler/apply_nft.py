"""Load compiled nftables output into the kernel of the current network namespace.

Ownership: npc touches only its network's ``inet`` table (``npc`` for the default network,
``npc-<tag>`` for others); every other table, iptables-nft's included, is left alone. The ruleset
file creates, deletes and redefines that table in one ``nft -f`` transaction, which the kernel
commits whole or not at all: if anything is rejected, the previous table stays in force.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence

import attrs

from .backends.nftables import build, render, table_name
from .errors import ApplyError
from .lower import Lowered, Names
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
    from .apply import refuse_other_backends

    refuse_other_backends(lowered.names, None)
    ruleset = build(lowered, members)
    load_ruleset(render(ruleset))
    return NftReport(
        f"inet {ruleset.table}",
        ruleset.chain_count,
        len(ruleset.sets) + len(ruleset.maps),
        ruleset.element_count,
    )


_NPC_TABLE = re.compile(r"table inet (npc(?:-[a-z2-7]{5})?)")


def reset_nftables(names: Names | None) -> list[str]:
    """Delete npc's table for one network (``None``: every network); returns what was removed."""
    nft = shutil.which("nft")
    if nft is None:
        return []
    listed = subprocess.run([nft, "list", "tables"], capture_output=True, text=True, check=False).stdout
    present = [m.group(1) for line in listed.splitlines() if (m := _NPC_TABLE.fullmatch(line.strip()))]
    wanted = present if names is None else [t for t in present if t == table_name(names)]
    for table in wanted:
        done = subprocess.run(
            [nft, "delete", "table", "inet", table], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise ApplyError(f"nft refused to delete table inet {table}: {done.stderr.strip()}")
    return [f"table inet {t}" for t in wanted]
