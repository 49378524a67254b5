"""A policy change loaded by difference: only the chains and sets that differ, not the network.

The kernel holds (``before``, ``old``), as this process loaded it. Both programs are rendered as a
restore file would write them and compared chain by chain, table by table; then, so that a
failure leaves the previous state in force:

1. the sets that are new are created with their members (``load.create_new_sets``; no rule uses them
   yet), and the restricting member moves of step 3 are made;
2. one ``iptables-restore --noflush`` per family declares (so empties) every chain that is new,
   changed or gone, writes the new and changed ones' rules and deletes the gone ones: each table
   commits whole. If one is refused, the families already done (and the refused one's tables that
   committed) get the inverse restore, which is harmless where nothing was committed;
3. the sets both programs use move their members in two ``ipset -exist restore`` batches, as a
   full apply does (``load``): before step 2 the moves that restrict (a permitting set's
   deletions, a restricting set's additions), after it those that permit; then the sets no rule
   uses any more are destroyed.

npc's FORWARD jumps and every object not named as npc's are not written at all. A kill between
steps leaves new-but-unused sets (the next full load removes them), the old rules over members
that allow no more than the old state, or the new rules over members that allow no more than the
new one (a family at a time): never more than both.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from ...errors import ApplyError
from ...lower import Lowered
from ..base import Members, Runner, member_changes
from .load import (
    Tools,
    _Undo,
    create_new_sets,
    destroy_sets,
    destroy_stale,
    load_members,
    member_lines,
    run_member_lines,
)
from .mark_tree import Marks
from .names import destruction_order
from .render import (
    Chains,
    Layout,
    chains_in,
    commit_order,
    home,
    kernel_sets,
    render_rules,
    restricting_sets,
)


def chains(lowered: Lowered, family: int, marks: Marks, layout: Layout) -> Chains:
    """Every chain npc writes in one family, with its ``-A`` lines, per table."""
    return chains_in(render_rules(lowered, family, marks, {home(marks): []}, None, layout))


@attrs.frozen
class ChainEdit:
    """One family's restore moving its chains from one program to another."""

    text: str
    written: int  # chains declared and filled
    deleted: int


def chain_edit(was: Chains, now: Chains) -> ChainEdit:
    """The ``iptables-restore --noflush`` input taking a family's chains from ``was`` to ``now``
    (its inverse is ``chain_edit(now, was)``); empty text when they are the same."""
    lines: list[str] = []
    written = deleted = 0
    for table in commit_order([t for t, held in now.items() if held]):
        if table not in was.keys() | now.keys():
            continue
        old, new = was.get(table, {}), now.get(table, {})
        fill = sorted(name for name, rules in new.items() if old.get(name) != rules)
        gone = sorted(old.keys() - new.keys())
        if not fill and not gone:
            continue
        lines.append(f"*{table}")
        lines += [f":{name} - [0:0]" for name in [*fill, *gone]]  # declared: emptied (or made)
        lines += [rule for name in fill for rule in new[name]]
        lines += [f"-X {name}" for name in gone]
        lines.append("COMMIT")
        written, deleted = written + len(fill), deleted + len(gone)
    return ChainEdit("".join(f"{line}\n" for line in lines), written, deleted)


@attrs.frozen
class UpdateReport:
    chains_written: int
    chains_deleted: int
    sets_created: int
    sets_destroyed: int
    added: int
    removed: int
    warnings: tuple[str, ...] = ()

    @property
    def summary(self) -> str:
        return (
            f"chains ~{self.chains_written} -{self.chains_deleted}, "
            f"sets +{self.sets_created} -{self.sets_destroyed}, entries +{self.added} -{self.removed}"
        )


def update_iptables(
    before: tuple[Lowered, Members, Mapping[int, Chains]],
    after: tuple[Lowered, Members, Mapping[int, Chains]],
    marks: Marks,
    tools: Tools,
    run: Runner,
    layout: Layout,
) -> UpdateReport:
    """Move the kernel from ``before`` to ``after`` (each: program, members, ``chains`` per
    family); ApplyError (previous state in force) or MixedStateError when undoing failed too."""
    if not run.which("ipset"):
        raise ApplyError("ipset not found: install it (Debian: apt-get install ipset)")
    (was, old, old_chains), (now, new, new_chains) = before, after
    old_sets = {s.name: s for s in kernel_sets(was, old, marks, layout.families)}
    new_sets = {s.name: s for s in kernel_sets(now, new, marks, layout.families)}
    created = [s for name, s in new_sets.items() if name not in old_sets]  # in creation order
    stale = destruction_order(old_sets.keys() - new_sets.keys())
    undo = _Undo()

    def drop_created(refused_create: bool = False) -> None:
        undo.step("removing the new sets", destroy_sets(run, [s.name for s in created], refused_create))

    if error := create_new_sets(run, now, created):
        drop_created(refused_create=True)
        undo.finish(f"the new sets were refused: {error}")
    kept = {n: s.members for n, s in old_sets.items() if n in new_sets}
    moves = member_changes(kept, {n: new_sets[n].members for n in kept})
    narrowing, widening = member_lines(moves, restricting_sets(now, marks, layout.families))

    def members_back() -> None:
        back = {name: (fresh, gone) for name, (gone, fresh) in moves.items()}
        try:
            load_members(back, restricting_sets(was, marks, layout.families), run)
        except ApplyError as back_exc:
            undo.step("moving the set members back", str(back_exc))

    try:  # under the old rules these only restrict: the state is within the old one
        run_member_lines(narrowing, run)
    except ApplyError as exc:
        members_back()
        drop_created()
        undo.finish(str(exc))
    edits = {f: chain_edit(old_chains[f], new_chains[f]) for f in layout.families}
    done: list[int] = []

    def rules_back() -> None:
        for family in done:
            back = chain_edit(new_chains[family], old_chains[family]).text
            result = run([tools.restore[family], "--noflush", "--wait=30"], back)
            undo.step(
                f"putting the IPv{family} rules back", result.stderr.strip() if result.returncode else ""
            )

    for family, edit in edits.items():
        if not edit.text:
            continue
        done.append(family)  # a refused restore may still have committed its first table
        result = run([tools.restore[family], "--noflush", "--wait=30"], edit.text)
        if result.returncode != 0:
            rules_back()
            members_back()
            drop_created()
            undo.finish(f"{tools.restore[family]} rejected the changed rules: {result.stderr.strip()}")
    try:  # under the new rules these only permit, up to the new state
        run_member_lines(widening, run)
    except ApplyError as exc:
        rules_back()
        members_back()
        drop_created()
        undo.finish(str(exc))
    left = destroy_stale(run, stale)
    return UpdateReport(
        sum(e.written for e in edits.values()),
        sum(e.deleted for e in edits.values()),
        len(created),
        len(stale) - len(left),
        sum(len(fresh) for _, fresh in moves.values()),
        sum(len(gone) for gone, _ in moves.values()),
        tuple(left.values()),
    )
