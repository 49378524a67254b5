"""nftables: ``render`` spells the lowered program as one ``inet`` table, ``load`` replaces it with ``nft -f``."""

from __future__ import annotations

import concurrent.futures
import functools
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING

from ...errors import ApplyError
from ...lock import netns_lock
from ...lower import Lowered
from ..base import (
    Backend,
    LoadReport,
    MemberDelta,
    Members,
    Options,
    Ran,
    Runner,
    RunsTogether,
    no_iptables_flavour,
    no_marks,
    while_running,
)
from . import render as _render
from .drift import table_drift
from .load import (
    FAMILY,
    LEGACY,
    abandon_table,
    delete_tables,
    load_elements,
    load_new_table,
    load_ruleset,
    npc_tables,
    start_part,
)
from .members import Ranks, TableChanged, Where, loaded_ranks, member_diffs, read_sets, update_script
from .render import FIRST_LOAD, HOOK, Ruleset, build, rules_per_packet, table_name

if TYPE_CHECKING:
    from ...resolve import Compiled


class NftablesBackend:
    name = "nftables"
    files = ("ruleset.nft",)
    loads = True
    stdout = None

    def __init__(self) -> None:
        self._last: tuple[Compiled, Ruleset] | None = None
        self._ranks: Ranks = {}  # rank maps in force, per table, family and direction
        self._where: dict[str, Where] = {}  # per table: which target sets each address in force is in

    def _build(self, compiled: Compiled, outlined: Callable[[Ruleset], object] = lambda _: None) -> Ruleset:
        """Rendering and counting one compiled program build its ruleset once (seconds at scale).
        ``outlined`` as ``build``'s: given the table built already, it gets that."""
        if self._last is None or self._last[0] is not compiled:
            self._last = (compiled, build(compiled.lowered, compiled.members, outlined))
        else:
            outlined(self._last[1])
        return self._last[1]

    def render(self, compiled: Compiled, options: Options) -> dict[str, str]:
        return {"ruleset.nft": _render.render(self._build(compiled))}

    def rule_counts(self, compiled: Compiled, options: Options) -> dict[str, int]:
        return {"ruleset.nft": self._build(compiled).rule_count}

    def check(self, options: Options) -> None:
        no_iptables_flavour(options)
        no_marks(options, "nftables")

    def chain_counts(self, compiled: Compiled, options: Options) -> dict[str, int]:
        return {"ruleset.nft": self._build(compiled).chain_count}

    def rules_per_packet(self, compiled: Compiled, options: Options) -> int:
        return rules_per_packet(compiled.lowered, compiled.members)

    def notes(self, compiled: Compiled, options: Options) -> tuple[str, ...]:
        return ()

    def read_sets(self, lowered: Lowered, options: Options) -> frozenset[str]:
        return read_sets(lowered)

    def load(self, compiled: Compiled, options: Options, runner: Runner) -> LoadReport:
        self.check(options)
        from ..iptables.load import refuse_other_backends  # not at import: iptables reads our table names

        with netns_lock(options.wait):  # the agent, a cron job and a shell never interleave
            refuse_other_backends(runner, compiled.lowered, None)
            table = table_name(compiled.lowered.network)
            found = {family for family, name in npc_tables(runner) if name == table}
            if isinstance(runner, RunsTogether) and not found:  # a first load
                ruleset, load = self._first_load(compiled, runner)
            else:
                ruleset = self._build(compiled)
                # in the same transaction: the tables per family an earlier npc loaded
                load = functools.partial(self._load, ruleset, runner, [f for f in LEGACY if f in found])
            self._last = None  # loaded: not kept (at scale, hundreds of MiB of element text in the agent)
            # the index pod events need, built while nft loads (0.15 s at L, the interpreter idle)
            _, where = while_running(runner, load, lambda: Where(compiled.lowered, compiled.members))
        assert where is not None
        self._where[ruleset.table] = where  # warm for pod events
        return LoadReport(
            self.name,
            ruleset.network,
            f"nftables: table {FAMILY} {ruleset.table}, {ruleset.chain_count} chains, "
            f"{len(ruleset.sets) + len(ruleset.maps)} sets and maps, {ruleset.element_count} elements",
        )

    def load_members(
        self, lowered: Lowered, old: Members, new: Members, options: Options, runner: Runner
    ) -> MemberDelta:
        where = self._index(lowered, old)
        with netns_lock(options.wait):
            try:
                diffs, delta, reached, moved = member_diffs(lowered, old, new, self._ranks, where)
            except TableChanged:  # a rank rule more or less: the whole table, atomically
                self._load(build(lowered, new), runner)
                self._where[table_name(lowered.network)] = Where(lowered, new)
                return MemberDelta(full=True)
            if diffs:
                load_elements(table_name(lowered.network), diffs, runner)
            self._ranks.update(reached)
            where.take(moved, new)  # only now: a refused delta leaves the index as the kernel is
            return delta

    def _index(self, lowered: Lowered, members: Members) -> Where:
        """The index of (``lowered``, ``members``), which the kernel holds: the one kept since
        they were loaded, or (loaded by another process, or another program) made now."""
        table = table_name(lowered.network)
        found = self._where.get(table)
        if found is None or found.lowered is not lowered or found.members is not members:
            found = self._where[table] = Where(lowered, members)
        return found

    def load_update(
        self, lowered: Lowered, members: Members, compiled: Compiled, options: Options, runner: Runner
    ) -> LoadReport:
        """Only what differs, in one transaction: new chains and sets, element moves, then the
        chains and sets no longer used. A change of the rank count replaces the table."""
        after = compiled.lowered
        coming = Where(after, compiled.members)
        try:
            script, summary, reached = update_script(self._index(lowered, members), coming, self._ranks)
        except TableChanged:
            return self.load(compiled, options, runner)
        with netns_lock(options.wait):
            if script:
                load_ruleset(script, runner)
        self._ranks.update(reached)
        table = table_name(after.network)
        self._where[table] = coming
        return LoadReport(self.name, after.network, f"nftables: table {FAMILY} {table} updated: {summary}")

    def drift(self, lowered: Lowered, members: Members, options: Options, runner: Runner) -> tuple[str, ...]:
        """Without the apply lock: a listing is one consistent dump, and the agent asks while it
        goes on loading (an answer about a state it replaced meanwhile is dropped)."""
        return table_drift(build(lowered, members), runner)

    def _load(self, ruleset: Ruleset, runner: Runner, retire: Sequence[str] = ()) -> str:
        """One transaction, deleting the network's tables of the families in ``retire`` (an
        earlier npc's ``ip`` and ``ip6`` ones) too; a refusal raises ApplyError (through
        ``while_running``)."""
        deletes = "".join(f"delete table {family} {ruleset.table}\n" for family in retire)
        load_ruleset(deletes + _render.render(ruleset), runner)
        self._ranks.update(loaded_ranks(ruleset))
        return ""

    def _first_load(self, compiled: Compiled, runner: Runner) -> tuple[Ruleset, Callable[[], str]]:
        """A table the kernel does not hold yet (``FIRST_LOAD``): the policy chains go to nft as
        soon as the table's outline is known, while the sets' elements are worked out; the
        function returned loads the other parts and hooks the table in."""
        sets, policies, dispatch = FIRST_LOAD
        table = table_name(compiled.lowered.network)
        started: list[Future[Ran]] = []
        pool = concurrent.futures.ThreadPoolExecutor(1)
        try:
            ruleset = self._build(
                compiled,
                lambda outline: started.append(start_part(_render.render(outline, policies), runner, pool)),
            )
            texts = [_render.render(ruleset, part) for part in (sets, dispatch)]
            hook = _render.render(ruleset, HOOK)
        except BaseException:
            abandon_table(table, runner, started)
            raise
        finally:
            pool.shutdown(wait=False)  # a part started goes on; ``load_new_table`` waits for it

        def load() -> str:
            load_new_table(table, texts, hook, runner, started)
            self._ranks.update(loaded_ranks(ruleset))
            return ""

        return ruleset, load

    def reset(self, network: str | None, options: Options, runner: Runner) -> LoadReport:
        if not runner.which("nft"):  # else no table would be found, and "removed 0" said
            raise ApplyError("nft not found: install it (Debian: apt-get install nftables)")
        with netns_lock(options.wait):
            found = npc_tables(runner, strict=True)
            tables = [table_name(network)] if network is not None else sorted({n for _, n in found})
            gone = delete_tables(tables, runner, found)
        self._ranks = {k: v for k, v in self._ranks.items() if k[0] not in tables}
        self._where = {k: v for k, v in self._where.items() if k not in tables}
        removed = tuple(f"table {f} {t}" for f, t in gone)
        return LoadReport(
            self.name, network or "every network", f"nftables: removed {len(removed)} tables", removed
        )


BACKEND: Backend = NftablesBackend()
