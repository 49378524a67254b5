"""Load compiled nftables output into the kernel of the current network namespace.

Ownership: npc touches only its network's ``inet`` table (``npc`` for the default network,
``npc-<tag>`` for others); every other table, iptables-nft's included, is left alone. The ruleset
file creates, deletes and redefines that table in one ``nft -f`` transaction, which the kernel
commits whole or not at all: if anything is rejected, the previous table stays in force.
"""

from __future__ import annotations

from ...errors import ApplyError
from ..base import Runner


def _nft(run: Runner) -> str:
    if not run.which("nft"):
        raise ApplyError("nft not found: install it (Debian: apt-get install nftables)")
    return "nft"


def load_ruleset(text: str, run: Runner) -> None:
    """``nft -f -`` with ``text``; ApplyError when ``nft`` is missing or refuses it."""
    done = run([_nft(run), "-f", "-"], text)
    if done.returncode != 0:
        raise ApplyError(
            f"nft rejected the new ruleset (the previous table stays in force): {done.stderr.strip()}"
        )


def delete_table(table: str, run: Runner) -> bool:
    """Remove npc's table if present; False when there was none."""
    nft = _nft(run)
    if run([nft, "list", "table", "inet", table]).returncode != 0:
        return False
    done = run([nft, "delete", "table", "inet", table])
    if done.returncode != 0:
        raise ApplyError(f"nft refused to delete table inet {table}: {done.stderr.strip()}")
    return True
