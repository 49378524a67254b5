"""Load compiled iptables/ipset output into the kernel of the current network namespace.

Ownership: npc touches only sets named ``npc-<tag>-``/``npt-<tag>-`` and chains named
``NPC-<tag>-`` for its network, plus its one jump from FORWARD in tables mangle and filter. Everything else on the node
is left byte for byte. Order of work, so that a failure leaves the previous state in force:

1. one ``ipset restore``: new sets under their final names (no live rule uses them yet),
   new contents of existing sets under temporary names;
2. one ``iptables-restore --noflush`` transaction per family (mangle and filter); if IPv6 fails
   after IPv4 succeeded, IPv4 is put back from the snapshot taken before;
3. swap the temporary sets into place, then destroy sets no rule uses any more.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import attrs

from ...errors import ApplyError, UsageError
from ...lower import Lowered
from ...resolve import Entry
from ..base import Ran, Runner
from .mark_tree import Marks
from .render import (
    TABLES,
    chain_names,
    entry_chain,
    insert_jump,
    jump_rule,
    kernel_sets,
    render_rules,
    render_sets,
)


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


def temp_set_prefix(lowered: Lowered) -> str:
    """Where new contents of existing sets are staged before the swap."""
    return f"npt-{lowered.names.tag}-"


def _rule_count(run: Runner, tools: Tools) -> int:
    count = 0
    for family in (4, 6):
        if run.which(tools.save[family]):
            out = run([tools.save[family]]).stdout
            count += sum(1 for line in out.splitlines() if line.startswith("-"))
    return count


def detect_tools(run: Runner, force: str | None = None) -> Tools:
    """Pick iptables-legacy or iptables-nft like kube-proxy's wrapper: whichever already holds
    rules in this namespace; on a tie, whatever plain ``iptables`` is."""
    if force is not None:
        if force not in ("legacy", "nft"):
            raise UsageError(f"--iptables must be legacy or nft, not {force!r}")
        tools = _tools(force)
        if not run.which(tools.restore[4]):
            raise ApplyError(f"{tools.restore[4]} not found: install iptables")
        return tools
    legacy, nft = _tools("legacy"), _tools("nft")
    if not (run.which(legacy.restore[4]) and run.which(nft.restore[4])):
        plain = _tools("")
        if not run.which(plain.restore[4]):
            raise ApplyError(
                "iptables-restore not found: install iptables (Debian: apt-get install iptables)"
            )
        return plain
    legacy_rules, nft_rules = _rule_count(run, legacy), _rule_count(run, nft)
    if legacy_rules != nft_rules:
        return legacy if legacy_rules > nft_rules else nft
    version = run(["iptables", "--version"]).stdout if run.which("iptables") else ""
    return legacy if "legacy" in version else nft


@attrs.frozen
class TableState:
    """What this network already has in one table of one family."""

    chains: tuple[str, ...]
    rules: tuple[str, ...]  # our chains' -A lines, as saved
    jumps: int


def _table_state(run: Runner, tools: Tools, family: int, lowered: Lowered, table: str) -> TableState:
    result = run([tools.save[family], "-t", table])
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


def _rollback_text(lowered: Lowered, old: Mapping[str, TableState], family: int, marks: Marks) -> str:
    """Put one family's npc chains back as they were before this apply, in every table."""
    lines = []
    for table in TABLES:
        created = sorted(set(chain_names(lowered, family, marks, table)) - set(old[table].chains))
        lines.append(f"*{table}")
        lines += [f":{c} - [0:0]" for c in sorted(set(old[table].chains) | set(created))]
        lines += list(old[table].rules)
        if old[table].jumps == 0:
            lines.append(f"-D {jump_rule(lowered, table)}")
        lines += [f"-X {c}" for c in created]
        lines.append("COMMIT")
    return "\n".join(lines) + "\n"


@attrs.frozen
class TableEdit:
    """What a load adds to a restore transaction so it owns exactly its own objects:
    the FORWARD jump (insert it, or delete surplus copies) and chains no longer wanted."""

    insert_jump: bool = True
    surplus_jumps: int = 0
    stale_chains: tuple[str, ...] = ()

    def lines(self, lowered: Lowered, table: str) -> list[str]:
        edits = [insert_jump(lowered, table)] if self.insert_jump else []
        edits += [f"-D {jump_rule(lowered, table)}"] * self.surplus_jumps
        return edits + [f"-X {name}" for name in self.stale_chains]


def _ipset(run: Runner, script: str) -> Ran:
    return run(["ipset", "restore"], script)


def _destroy(run: Runner, names: Iterable[str]) -> None:
    for name in names:
        run(["ipset", "destroy", name])


@attrs.frozen
class ApplyReport:
    flavour: str
    sets_created: int
    sets_updated: int
    sets_destroyed: int
    chains: int
    warnings: tuple[str, ...] = ()


def apply_iptables(
    lowered: Lowered, members: Mapping[str, Sequence[Entry]], marks: Marks, tools: Tools, run: Runner
) -> ApplyReport:
    if not run.which("ipset"):
        raise ApplyError("ipset not found: install it (Debian: apt-get install ipset)")
    listing = run(["ipset", "list", "-n"])
    if listing.returncode != 0:
        raise ApplyError(f"ipset list failed: {listing.stderr.strip()}")
    names, temps_prefix = lowered.names, temp_set_prefix(lowered)
    existing = {n for n in listing.stdout.split() if n.startswith(names.set_prefix)}
    _destroy(run, (n for n in listing.stdout.split() if n.startswith(temps_prefix)))  # a crashed run's

    def temp(name: str) -> str:
        return temps_prefix + name[len(names.set_prefix) :]

    wanted = kernel_sets(lowered, members, marks)
    staged = [s.renamed(temp(s.name)) if s.name in existing else s for s in wanted]
    fresh = [s.name for s in wanted if s.name not in existing]
    temps = [temp(s.name) for s in wanted if s.name in existing]
    result = _ipset(run, render_sets(lowered, staged))
    if result.returncode != 0:
        _destroy(run, [*fresh, *temps])
        raise ApplyError(f"ipset restore rejected the new sets: {result.stderr.strip()}")

    before = {f: {t: _table_state(run, tools, f, lowered, t) for t in TABLES} for f in (4, 6)}
    done: list[int] = []
    for family in (4, 6):
        edits = {
            table: TableEdit(
                insert_jump=old.jumps == 0,
                surplus_jumps=max(old.jumps - 1, 0),
                stale_chains=tuple(sorted(set(old.chains) - set(chain_names(lowered, family, marks, table)))),
            )
            for table, old in before[family].items()
        }
        lines = {table: edit.lines(lowered, table) for table, edit in edits.items()}
        unwanted = {table: edit.stale_chains for table, edit in edits.items()}
        text = render_rules(lowered, family, marks, lines, unwanted)
        result = run([tools.restore[family], "--noflush", "--wait=30"], text)
        if result.returncode != 0:
            for undone in done:
                rollback = _rollback_text(lowered, before[undone], undone, marks)
                run([tools.restore[undone], "--noflush", "--wait=30"], rollback)
            _destroy(run, [*fresh, *temps])
            raise ApplyError(f"{tools.restore[family]} rejected the new rules: {result.stderr.strip()}")
        done.append(family)

    swap = "".join(
        f"swap {temp(s)} {s}\ndestroy {temp(s)}\n" for s in sorted(existing & {w.name for w in wanted})
    )
    result = _ipset(run, swap)
    warnings = [f"ipset swap failed: {result.stderr.strip()}"] if result.returncode != 0 else []
    stale = sorted(existing - {w.name for w in wanted})
    for name in stale:
        gone = run(["ipset", "destroy", name])
        if gone.returncode != 0:
            warnings.append(f"could not destroy stale set {name}: {gone.stderr.strip()}")
    return ApplyReport(
        tools.flavour,
        len(fresh),
        len(temps),
        len(stale),
        sum(len(chain_names(lowered, f, marks, t)) for f in (4, 6) for t in TABLES),
        tuple(warnings),
    )


def reset_iptables(lowered: Lowered, tools: Tools, run: Runner) -> tuple[int, int]:
    """Remove the network's FORWARD jumps, chains and sets (staged ones too): (chains, sets)."""
    chains = 0
    for family in (4, 6):
        if not run.which(tools.restore[family]):
            continue
        states = {table: _table_state(run, tools, family, lowered, table) for table in TABLES}
        if not any(s.chains or s.jumps for s in states.values()):
            continue
        lines = []
        for table, state in states.items():
            lines += [f"*{table}", *(f":{c} - [0:0]" for c in state.chains)]
            lines += [f"-D {jump_rule(lowered, table)}"] * state.jumps
            lines += [f"-X {c}" for c in state.chains]
            lines.append("COMMIT")
            chains += len(state.chains)
        result = run([tools.restore[family], "--noflush", "--wait=30"], "\n".join(lines) + "\n")
        if result.returncode != 0:
            raise ApplyError(
                f"{tools.restore[family]} refused to remove npc's chains: {result.stderr.strip()}"
            )
    listing = run(["ipset", "list", "-n"]) if run.which("ipset") else Ran(0)
    prefixes = (lowered.names.set_prefix, temp_set_prefix(lowered))
    owned = [n for n in listing.stdout.split() if n.startswith(prefixes)]
    _destroy(run, owned)
    return chains, len(owned)
