"""Load compiled iptables/ipset output into the kernel of the current network namespace.

Ownership: npc touches only sets named ``npc-<tag>-``/``npt-<tag>-`` and chains named
``NPC-<tag>-`` for its network, plus its one jump from FORWARD. Everything else on the node
is left byte for byte. Order of work, so that a failure leaves the previous state in force:

1. one ``ipset restore``: new sets under their final names (no live rule uses them yet),
   new contents of existing sets under temporary names;
2. one ``iptables-restore --noflush`` transaction per family (atomic per table); if IPv6 fails
   after IPv4 succeeded, IPv4 is put back from the snapshot taken before;
3. swap the temporary sets into place, then destroy sets no rule uses any more.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

import attrs

from .backends.iptables import (
    TABLES,
    TableEdit,
    chain_names,
    entry_chain,
    jump_rule,
    kernel_sets,
    render_rules,
    render_sets,
)
from .errors import ApplyError, UsageError
from .lower import Lowered
from .resolve import Entry

Flavour = Literal["legacy", "nft"]


@attrs.frozen
class Tools:
    flavour: str
    save: Mapping[int, str]
    restore: Mapping[int, str]


def _tools(variant: str) -> Tools:
    infix = f"-{variant}" if variant else ""
    return Tools(
        variant or "default",
        {4: f"iptables{infix}-save", 6: f"ip6tables{infix}-save"},
        {4: f"iptables{infix}-restore", 6: f"ip6tables{infix}-restore"},
    )


def _run(argv: Sequence[str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(list(argv), input=stdin, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise ApplyError(
            f"{argv[0]} not found: install it (Debian: apt-get install iptables ipset)"
        ) from None


def _rule_count(tools: Tools) -> int:
    count = 0
    for family in (4, 6):
        if shutil.which(tools.save[family]):
            out = _run([tools.save[family]]).stdout
            count += sum(1 for line in out.splitlines() if line.startswith("-"))
    return count


def detect_tools(force: str | None = None) -> Tools:
    """Pick iptables-legacy or iptables-nft like kube-proxy's wrapper: whichever already holds
    rules in this namespace; on a tie, whatever plain ``iptables`` is."""
    if force is not None:
        if force not in ("legacy", "nft"):
            raise UsageError(f"--iptables must be legacy or nft, not {force!r}")
        tools = _tools(force)
        if not shutil.which(tools.restore[4]):
            raise ApplyError(f"{tools.restore[4]} not found: install iptables")
        return tools
    legacy, nft = _tools("legacy"), _tools("nft")
    if not (shutil.which(legacy.restore[4]) and shutil.which(nft.restore[4])):
        plain = _tools("")
        if not shutil.which(plain.restore[4]):
            raise ApplyError(
                "iptables-restore not found: install iptables (Debian: apt-get install iptables)"
            )
        return plain
    legacy_rules, nft_rules = _rule_count(legacy), _rule_count(nft)
    if legacy_rules != nft_rules:
        return legacy if legacy_rules > nft_rules else nft
    version = _run(["iptables", "--version"]).stdout if shutil.which("iptables") else ""
    return legacy if "legacy" in version else nft


@attrs.frozen
class TableState:
    """What this network already has in one table of one family."""

    chains: tuple[str, ...]
    rules: tuple[str, ...]  # our chains' -A lines, as saved
    jumps: int


def _table_state(tools: Tools, family: int, lowered: Lowered, table: str) -> TableState:
    result = _run([tools.save[family], "-t", table])
    if result.returncode != 0:
        raise ApplyError(f"{tools.save[family]} failed: {result.stderr.strip()}")
    prefix = lowered.names.chain_prefix
    chains, rules, jumps = [], [], 0
    for line in result.stdout.splitlines():
        if line.startswith(":" + prefix):
            chains.append(line[1:].split()[0])
        elif line.startswith("-A " + prefix):
            rules.append(line)
        elif line.startswith("-A FORWARD ") and line.endswith(f" -j {entry_chain(lowered, table)}"):
            jumps += 1
    return TableState(tuple(chains), tuple(rules), jumps)


def _rollback_text(lowered: Lowered, old: Mapping[str, TableState], family: int) -> str:
    """Put one family's npc chains back as they were before this apply, in every table."""
    lines = []
    for table in TABLES:
        created = sorted(set(chain_names(lowered, family, table)) - set(old[table].chains))
        lines.append(f"*{table}")
        lines += [f":{c} - [0:0]" for c in sorted(set(old[table].chains) | set(created))]
        lines += list(old[table].rules)
        if old[table].jumps == 0:
            lines.append(f"-D {jump_rule(lowered, table)}")
        lines += [f"-X {c}" for c in created]
        lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def _ipset(script: str) -> subprocess.CompletedProcess[str]:
    return _run(["ipset", "restore"], script)


def _destroy(names: Iterable[str]) -> None:
    for name in names:
        _run(["ipset", "destroy", name])


@attrs.frozen
class ApplyReport:
    flavour: str
    sets_created: int
    sets_updated: int
    sets_destroyed: int
    chains: int
    warnings: tuple[str, ...] = ()


def apply_iptables(lowered: Lowered, members: Mapping[str, Sequence[Entry]], tools: Tools) -> ApplyReport:
    if not shutil.which("ipset"):
        raise ApplyError("ipset not found: install it (Debian: apt-get install ipset)")
    listing = _run(["ipset", "list", "-n"])
    if listing.returncode != 0:
        raise ApplyError(f"ipset list failed: {listing.stderr.strip()}")
    names = lowered.names
    existing = {n for n in listing.stdout.split() if n.startswith(names.set_prefix)}
    _destroy(n for n in listing.stdout.split() if n.startswith(names.temp_set_prefix))  # a crashed run's

    def temp(name: str) -> str:
        return names.temp_set_prefix + name[len(names.set_prefix) :]

    wanted = kernel_sets(lowered, members)
    staged = [s.renamed(temp(s.name)) if s.name in existing else s for s in wanted]
    fresh = [s.name for s in wanted if s.name not in existing]
    temps = [temp(s.name) for s in wanted if s.name in existing]
    result = _ipset(render_sets(lowered, members, staged))
    if result.returncode != 0:
        _destroy([*fresh, *temps])
        raise ApplyError(f"ipset restore rejected the new sets: {result.stderr.strip()}")

    before = {f: {t: _table_state(tools, f, lowered, t) for t in TABLES} for f in (4, 6)}
    done: list[int] = []
    for family in (4, 6):
        edits = {
            table: TableEdit(
                insert_jump=old.jumps == 0,
                surplus_jumps=max(old.jumps - 1, 0),
                stale_chains=tuple(sorted(set(old.chains) - set(chain_names(lowered, family, table)))),
            )
            for table, old in before[family].items()
        }
        result = _run([tools.restore[family], "--noflush", "--wait=30"], render_rules(lowered, family, edits))
        if result.returncode != 0:
            for undone in done:
                _run(
                    [tools.restore[undone], "--noflush", "--wait=30"],
                    _rollback_text(lowered, before[undone], undone),
                )
            _destroy([*fresh, *temps])
            raise ApplyError(f"{tools.restore[family]} rejected the new rules: {result.stderr.strip()}")
        done.append(family)

    swap = "".join(
        f"swap {temp(s)} {s}\ndestroy {temp(s)}\n" for s in sorted(existing & {w.name for w in wanted})
    )
    result = _ipset(swap)
    warnings = [f"ipset swap failed: {result.stderr.strip()}"] if result.returncode != 0 else []
    stale = sorted(existing - {w.name for w in wanted})
    for name in stale:
        gone = _run(["ipset", "destroy", name])
        if gone.returncode != 0:
            warnings.append(f"could not destroy stale set {name}: {gone.stderr.strip()}")
    return ApplyReport(
        tools.flavour,
        len(fresh),
        len(temps),
        len(stale),
        sum(len(chain_names(lowered, f)) for f in (4, 6)),
        tuple(warnings),
    )
