"""Load compiled iptables/ipset output into the kernel of the current network namespace.

Ownership: npc touches only sets named ``npc-<tag>-`` and chains named ``NPC-<tag>-`` for its
network, the one FORWARD rule it writes in its table (``render.home``: mangle with group marks,
else filter; exactly that text: others' jumps to its chains are theirs), and the temporary sets
it records before creating them (under /run/npc, so a crashed run's leftovers are provably its own).
Everything else on the node is left byte for byte.
Order of work, so that a failure leaves the previous state in force and a kill at any moment
leaves no more allowed than the old state or the new one. Under fixed rules a set either
*restricts* (more members allow less: the isolated sets, the map sets) or *permits* (peers,
dispatch targets, named ports; ``render.restricting_sets``). For every kept set whose live
contents (one ``ipset save``) differ from the new ones, a *transition* content sits between both:
restricting sets hold old | new (a map address in both keeps its old mark), permitting sets
old & new (``nomatch`` entries, which restrict, old | new).

1. create the new sets under their final names (no live rule uses them yet), each transition
   content under a recorded temporary name: over netlink (``ipset_netlink``) where the runner
   sends it itself, else ``ipset restore``;
2. swap the transitions in: under the old rules each swap only restricts (every state <= old);
3. one ``iptables-restore --noflush`` transaction per family, one table's commit (the other
   table's part after it only removes an earlier npc's objects): new rules with transition
   members allow no more than the new state; if IPv6 fails after IPv4 succeeded, IPv4 is put
   back from the snapshot taken before;
4. member changes in place, transition -> new (one ``ipset -exist restore``): each only permits,
   up to the new state; then destroy the temporaries (the old contents) and sets no rule uses.

A ``list:set`` (``render.ListSet``) holds other sets by name: it is created after them
(``render.set_makers``) and destroyed before them (``names.destruction_order``), since the
kernel refuses a member that does not exist and keeps a held set from being destroyed. Named by
its members, a list's contents never change in place.

A first load (no set of the network's yet, no chain or jump of it in the tables, and a runner
that sends netlink itself and runs tools at once) goes in parts instead: the sets are created
empty as they are built (``render.set_makers``) and while the rules are rendered, the restores
load the chains without the FORWARD jumps while the sets are filled, and then one small restore
per family inserts the jumps. No packet reaches a
rule before that, so none meets a set half filled; a refusal at any step removes everything the
load made. The kernel's filling of the sets and its loading of the rules overlap, where each
waited for the other.

Unchanged sets are not touched (a first apply has none to read). The next run reads the kernel
as "old", so it repairs whatever a killed run left. ``load_members`` (the agent's deltas) orders
its one batch the same way: restricting changes first.

A set held for a moment by someone listing it ("in use by a kernel component") is retried; a
lasting refusal undoes what was done (exit 3). If undoing fails too, the node is in a mixed
state: ``MixedStateError`` says so (exit 4), and the next apply replaces everything npc owns.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import queue
import re
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import NoReturn

import attrs

from ...errors import ApplyError, MixedStateError, UsageError
from ...lock import record_path
from ...lower import Lowered
from ...resolve import Entry
from ..base import (
    MemberDelta,
    Runner,
    RunsTogether,
    SendsNetfilter,
    run_together,
    stopped_part_way,
    while_running,
    write_atomic,
)
from ..nftables.load import npc_tables
from ..nftables.render import table_name
from .ipset_netlink import Built, create_sets, fill_messages, send_built
from .mark_tree import Marks
from .names import ANY_CHAIN, ANY_JUMP, ANY_SET, Names, destruction_order, names_of
from .render import (
    LIST_SET,
    NPC_LAYOUT,
    TABLES,
    Chains,
    Layout,
    SetText,
    chains_in,
    commit_order,
    home,
    insert_jump,
    jump_rule,
    maxelem,
    older_jumps,
    render_rules,
    render_sets,
    restricting_sets,
    set_makers,
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


def _rules(run: Runner, tools: Tools) -> list[str]:
    """Every rule of this flavour, both families."""
    out: list[str] = []
    for family in (4, 6):
        if run.which(tools.save[family]):
            out += (line for line in run([tools.save[family]]).stdout.splitlines() if line.startswith("-"))
    return out


def _jumps_to(rule: str, chain: str) -> bool:
    """Whether a saved rule jumps or goes (``-g``: a router may) to ``chain``."""
    padded = rule + " "
    return f" -j {chain} " in padded or f" -g {chain} " in padded


def detect_tools(run: Runner, force: str | None = None, hooked: str | None = None) -> Tools:
    """Pick iptables-legacy or iptables-nft like kube-proxy's wrapper: whichever already holds
    rules in this namespace; on a tie, whatever plain ``iptables`` is. ``hooked``: a chain another
    program jumps to for npc to fill (Weave's router: ``WEAVE-NPC``): the flavour whose rules jump
    to it, whatever the counts (40 rules of another tool's in the other flavour filled a chain
    that no packet met, and the router's dropped every connection into a pod)."""
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
    held = [(legacy, _rules(run, legacy)), (nft, _rules(run, nft))]
    if hooked is not None:
        jumping = [tools for tools, rules in held if any(_jumps_to(rule, hooked) for rule in rules)]
        if len(jumping) == 1:
            return jumping[0]
    legacy_rules, nft_rules = (len(rules) for _, rules in held)
    if legacy_rules != nft_rules:
        return legacy if legacy_rules > nft_rules else nft
    version = run(["iptables", "--version"]).stdout if run.which("iptables") else ""
    return legacy if "legacy" in version else nft


@attrs.frozen
class TableState:
    """What this network already has in one table of one family."""

    chains: tuple[str, ...] = ()  # ours by prefix
    rules: tuple[str, ...] = ()  # our chains' -A lines (the layout's fixed-name chains' too), as saved
    jumps: int = 0
    hooked: bool = False  # some rule outside them jumps to the layout's first fixed chain
    older: tuple[str, ...] = ()  # an earlier npc's jumps (``older_jumps``), removed by a load

    @property
    def held(self) -> bool:
        return bool(self.chains or self.jumps or self.rules or self.older)


def _section(saved: str, table: str) -> str:
    return saved.partition(f"*{table}\n")[2].partition("\nCOMMIT")[0]


def _table_states(
    run: Runner, tools: Tools, family: int, lowered: Lowered, layout: Layout = NPC_LAYOUT
) -> dict[str, TableState]:
    """npc's part of tables mangle and filter, from one save of every table (``-t`` would make
    iptables-nft create a table npc did not have)."""
    result = run([tools.save[family]])
    if result.returncode != 0:
        raise ApplyError(f"{tools.save[family]} failed: {result.stderr.strip()}")
    return {t: _state(_section(result.stdout, t), lowered, t, layout) for t in TABLES}


def _state(saved: str, lowered: Lowered, table: str, layout: Layout) -> TableState:
    prefix = names_of(lowered).chain_prefix
    fixed = layout.fixed_chains(lowered) if table == "filter" else []
    own_jump = "-A " + jump_rule(lowered)  # exactly npc's rule: others' jumps are theirs
    older_jumps_ = {"-A " + rule for rule in older_jumps(lowered)}
    chains, rules, jumps, hooked, older = [], [], 0, False, []
    for line in saved.splitlines():
        words = line.split()
        if line.startswith(":" + prefix):
            chains.append(line[1:].split()[0])
        elif line.startswith("-A ") and (words[1].startswith(prefix) or words[1] in fixed):
            rules.append(line)
        elif line == own_jump:
            jumps += 1
        elif line in older_jumps_:
            older.append(line[3:])
        hooked = hooked or bool(fixed and line.startswith("-A ") and _jumps_to(line, fixed[0]))
    return TableState(tuple(chains), tuple(rules), jumps, hooked, tuple(older))


def _holding(states: Mapping[str, TableState]) -> list[str]:
    """The tables holding npc's objects."""
    return [t for t in TABLES if states[t].held]


def _edited(old: Mapping[str, TableState], marks: Marks) -> list[str]:
    """The tables a transaction writes, npc's first: the other when it still holds npc's objects."""
    return [t for t in commit_order([home(marks)]) if t == home(marks) or old[t].held]


def _rollback_text(
    lowered: Lowered,
    old: Mapping[str, TableState],
    now: Mapping[str, TableState],
    layout: Layout = NPC_LAYOUT,
) -> str:
    """Put one family's npc chains back as they were before this apply (``old``), from what the
    tables hold now: each table of a restore commits on its own, so a rejected one may follow
    one that was committed."""
    lines = []
    for table in commit_order(_holding(old)):
        if not (old[table].held or now[table].held):
            continue
        fixed = layout.fixed_chains(lowered) if table == "filter" else []
        # npc's own fixed chains too when this apply made them (another layout's are not ours)
        created = sorted(set(now[table].chains) - set(old[table].chains))
        lines.append(f"*{table}")
        declared = dict.fromkeys([*fixed, *sorted(set(old[table].chains) | set(created))])
        lines += [f":{c} - [0:0]" for c in declared]
        lines += list(old[table].rules)
        lines += [f"-D {jump_rule(lowered)}"] * (now[table].jumps - old[table].jumps)
        lines += [insert_jump(jump_rule(lowered))] * (old[table].jumps - now[table].jumps)
        lines += [insert_jump(rule) for rule in old[table].older if rule not in now[table].older]
        lines += [f"-X {c}" for c in created]
        lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def _owns_jump(layout: Layout, marks: Marks, table: str) -> bool:
    """Whether npc writes its FORWARD jump in ``table``: its home, unless the layout is hooked by
    another tool."""
    return table == home(marks) and layout.forward_jump


@attrs.frozen
class TableEdit:
    """What a load adds to a restore transaction so it owns exactly its own objects:
    the FORWARD jump (insert it, or delete surplus copies) and chains no longer wanted."""

    insert_jump: bool = True
    surplus_jumps: int = 0
    stale_chains: tuple[str, ...] = ()
    older_jumps: tuple[str, ...] = ()  # an earlier npc's (``TableState.older``)

    def lines(self, lowered: Lowered) -> list[str]:
        edits = [insert_jump(jump_rule(lowered))] if self.insert_jump else []
        edits += [f"-D {jump_rule(lowered)}"] * self.surplus_jumps
        edits += [f"-D {rule}" for rule in self.older_jumps]
        return edits + [f"-X {name}" for name in self.stale_chains]


# Sets per ``ipset restore``: it finds the set of each ``add`` line by name along the list of the
# sets it has seen, so one process for 4,000 sets and 500,000 adds spends most of its time
# comparing names; a few hundred per process keep that list short (process start-up: a few ms).
RESTORE_SETS = 256
_IN_USE = "in use by a kernel component"  # someone listing the set holds it for a moment
_FULL = "Hash is full"  # an add past the ``maxelem`` the set was created with
_RETRIES = 50
_ERROR_LINE = re.compile(r"Error in line (\d+):")


@attrs.frozen
class SetInfo:
    type: str
    family: str
    references: int
    entries: int = 0


def _sets(run: Runner) -> dict[str, SetInfo]:
    """Every set of the namespace with its type, family, reference and entry counts (one ``ipset list -t``)."""
    listing = run(["ipset", "list", "-t"])
    if listing.returncode != 0:
        raise ApplyError(f"ipset list failed: {listing.stderr.strip()}")
    out: dict[str, SetInfo] = {}
    for block in listing.stdout.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "Name" in fields:
            header = fields.get("Header", "").split()
            family = header[header.index("family") + 1] if "family" in header else ""
            out[fields["Name"]] = SetInfo(
                fields.get("Type", ""),
                family,
                int(fields.get("References", "0") or 0),
                int(fields.get("Number of entries", "0") or 0),
            )
    return out


def ipset_lines(
    run: Runner, lines: Sequence[str], exist: bool = False, retries: int = _RETRIES
) -> tuple[int, str]:
    """Run ``ipset restore`` lines (``-exist``: an add updates an element's mark or ``nomatch``),
    retrying a transient refusal from the line it hit (``retries`` times, 0.01 s longer each), and
    an add to a full set once the set has room (``make_room``).

    Returns how many lines were done and the error of the line that failed for good ("" if none).
    """
    argv = ["ipset", "-exist", "restore"] if exist else ["ipset", "restore"]
    start, attempts, grown = 0, 0, set[str]()
    while start < len(lines):
        done = run(argv, "".join(lines[start:]))
        if done.returncode == 0:
            return len(lines), ""
        found = _ERROR_LINE.search(done.stderr)
        failed = start + (int(found.group(1)) - 1 if found else 0)
        words = lines[failed].split() if failed < len(lines) else []
        name = words[1] if len(words) > 1 and words[0] == "add" else ""
        if _FULL in done.stderr and ANY_SET.fullmatch(name) and name not in grown:
            grown.add(name)
            adding = sum(line.startswith(f"add {name} ") for line in lines[failed:])
            error = make_room(run, name, adding)
            if error:
                return failed, f"{done.stderr.strip()}; giving the set room failed: {error}"
            start = failed
            continue
        if _IN_USE not in done.stderr or attempts >= retries:
            return failed, done.stderr.strip()
        attempts += 1
        time.sleep(0.01 * attempts)
        start = failed
    return len(lines), ""


def make_room(run: Runner, name: str, adding: int) -> str:
    """ipset fixes a set's ``maxelem`` when it creates it, and refuses an add past it: set
    ``name`` is swapped for a copy of its members (``ipset save``) with room for ``adding`` more
    (``render.maxelem``), under a recorded temporary name, so no packet sees a difference and a
    kill leaves nothing that is not provably npc's. Returns the error ("" if none)."""
    saved = run(["ipset", "save", name])
    header, *members = saved.stdout.splitlines() or [""]
    words = header.split()
    if saved.returncode != 0 or words[:2] != ["create", name] or "maxelem" not in words[:-1]:
        return saved.stderr.strip() or f"cannot read set {name}'s size"
    names = Names(name.split("-")[1])
    temp, size = names.temp(name), words.index("maxelem") + 1
    words[1], words[size] = temp, str(maxelem(len(members) + adding))
    copy = [f"add {temp} {member.split(' ', 2)[2]}\n" for member in members if member.startswith("add ")]
    record = _record(names)
    with open(os.open(record, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "a") as held:
        held.write(f"{temp}\n")
    done, error = ipset_lines(run, [" ".join(words) + "\n", *copy, f"swap {temp} {name}\n"])
    gone = destroy_sets(run, [temp]) if done else ""  # not made: a set of that name is not ours
    error = error or gone
    if not gone:  # removed, or never made: no longer a temporary to record
        left = [t for t in record.read_text().split() if t != temp]
        if left:
            write_atomic(record, "".join(f"{t}\n" for t in left), mode=0o600)
        else:
            record.unlink()
    return error


def destroy_stale(run: Runner, names: Sequence[str]) -> dict[str, str]:
    """Destroy sets no npc rule uses any more: one ``ipset`` for all (not one per set: hundreds
    after a re-apply that drops policies), another past each refused (another tool's rule uses
    it: retried for 0.55 s, not the 12.75 s a set npc needs gone is given). Returns the sets kept,
    each with its warning."""
    kept, start = {}, 0
    while start < len(names):
        lines = [f"destroy {name}\n" for name in names[start:]]
        done, error = ipset_lines(run, lines, retries=10)
        if not error:
            break
        name = names[start + done]
        kept[name] = f"could not destroy stale set {name} (no npc rule uses it): {error}"
        start += done + 1
    return kept


def create_new_sets(
    run: Runner,
    lowered: Lowered,
    specs: Iterable[SetText],
    create: bool = True,
    fill: bool = True,
    ready: Callable[[], bool] | None = None,
) -> str:
    """Create ``specs`` with their members: over netlink where the runner sends it itself
    (``ipset_netlink``: no libipset parsing every line; ``create``, ``fill``: one of the two
    alone; ``ready``: whether ``specs`` has its next at once, see ``create_sets``), else ``ipset
    restore``, ``RESTORE_SETS`` sets per process, both at once when asked to create. The first
    refusal ("" if none); after one, not every set exists."""
    if isinstance(run, SendsNetfilter):
        return create_sets(run, specs, create, fill, ready)
    if not create:
        return ""  # filled as they were created
    listed = list(specs)
    for i in range(0, len(listed), RESTORE_SETS):
        result = run(["ipset", "restore"], render_sets(lowered, listed[i : i + RESTORE_SETS]))
        if result.returncode != 0:
            return result.stderr.strip() or f"exit status {result.returncode}"
    return ""


def destroy_sets(run: Runner, names: Sequence[str], refused_create: bool = False) -> str:
    """Destroy ``names``; after a refused ``create_new_sets``, those of them the kernel has."""
    if refused_create:
        present = _sets(run)
        names = [n for n in names if n in present]
    return ipset_lines(run, [f"destroy {n}\n" for n in destruction_order(names)])[1]


Contents = dict[str, str]  # element (address, net, address,proto:port) -> what follows it ("" if nothing)
NOMATCH = "nomatch"  # a ``hash:net`` element that excludes: it restricts whatever its set does


def _element(member: str, nomatch: bool = False) -> tuple[str, str]:
    """A member as the kernel spells it (``ipset save``): a host net without its /32 or /128."""
    element, _, rest = member.partition(" ")
    if element.endswith("/128") or (element.endswith("/32") and ":" not in element):
        element = element.rpartition("/")[0]
    return element, NOMATCH if nomatch else rest


def _live_contents(run: Runner, names: set[str]) -> dict[str, Contents]:
    """The members of ``names`` in the kernel, from one ``ipset save`` of every set."""
    saved = run(["ipset", "save"])
    if saved.returncode != 0:
        raise ApplyError(f"ipset save failed: {saved.stderr.strip()}")
    out: dict[str, Contents] = {name: {} for name in names}
    for line in saved.stdout.splitlines():
        verb, _, rest = line.partition(" ")
        name, _, member = rest.partition(" ")
        if verb == "add" and name in out:
            element, value = _element(member)
            out[name][element] = value
    return out


def transition(old: Contents, new: Contents, restricting: bool) -> Contents:
    """Members allowing no more than ``old`` under the old rules and no more than ``new`` under
    the new ones: a restricting set's union (an element in both keeps its old value: a map
    address its old group), a permitting set's intersection (``nomatch`` entries: union)."""
    if restricting:
        return {**new, **old}
    kept = {element: value for element, value in old.items() if new.get(element) == value}
    kept.update((e, v) for e, v in [*old.items(), *new.items()] if v == NOMATCH)
    return kept


def _add(name: str, element: str, value: str) -> str:
    return f"add {name} {element}{' ' + value if value else ''}\n"


def _moves(name: str, start: Contents, end: Contents) -> tuple[list[str], list[str]]:
    """``ipset -exist restore`` lines taking set ``name`` from ``start`` to ``end``, and per line
    the line undoing it."""
    forward, back = [], []
    for element, value in start.items():
        if element not in end:
            forward.append(f"del {name} {element}\n")
            back.append(_add(name, element, value))
    for element, value in end.items():
        if start.get(element) != value:
            forward.append(_add(name, element, value))
            was = start.get(element)
            back.append(f"del {name} {element}\n" if was is None else _add(name, element, was))
    return forward, back


def _record(names: Names) -> Path:
    return Path(record_path(f"{names.tag}.sets"))


def _records(names: Names | None) -> list[Path]:
    """The record files of one network (None: every network's) in this namespace."""
    return (
        [_record(names)]
        if names
        else sorted(Path(record_path("")).parent.glob(Path(record_path("*.sets")).name))
    )


def _recorded(names: Names | None) -> set[str]:
    """The temporaries recorded for one network's (None: every network's) crashed runs."""
    found: set[str] = set()
    for record in _records(names):
        with contextlib.suppress(FileNotFoundError):
            found.update(record.read_text().split())
    return found


def _destroy_recorded(run: Runner, names: Names, present: dict[str, SetInfo]) -> None:
    """A crashed run's temporaries: only the ones it recorded, never other ``npt-`` sets; they
    leave ``present`` too, so this run can make its own of the same names."""
    record = _record(names)
    try:
        recorded = [name for name in record.read_text().split() if name in present]
    except FileNotFoundError:
        return
    error = destroy_sets(run, recorded)
    if error:
        raise ApplyError(f"could not remove a previous run's temporary sets: {error}")
    for name in recorded:
        del present[name]
    record.unlink(missing_ok=True)


def _repair_types(run: Runner, wanted: Sequence[SetText], present: dict[str, SetInfo]) -> None:
    """A set of npc's name but another type or family (made by someone else) cannot take a swap:
    destroyed when nothing uses it, so it is created anew; refused when a rule uses it."""
    for spec in wanted:
        info = present.get(spec.name)
        want_type, want_family = spec.type, spec.family
        if info is None or (info.type, info.family) == (want_type, want_family):
            continue
        if info.references:
            raise ApplyError(
                f"set {spec.name} has type {info.type} family {info.family}, not {want_type} family "
                f"{want_family}, and rules use it: remove them, or run npc reset"
            )
        _, error = ipset_lines(run, [f"destroy {spec.name}\n"])
        if error:
            raise ApplyError(f"could not replace the wrong-typed set {spec.name}: {error}")
        del present[spec.name]


@attrs.frozen
class ApplyReport:
    flavour: str
    sets_created: int
    sets_updated: int
    sets_destroyed: int
    chains: int
    warnings: tuple[str, ...] = ()
    adopted: int = 0  # sets of the tool the layout replaces, destroyed
    # per family, the chains now in force as the restore wrote them (``chains_in``): what an
    # update compares with, without rendering the program again
    written: Mapping[int, Chains] = attrs.field(factory=dict)


# per family: its tables as they are, the restore input that edits them, the chains it writes;
# for a first load, the restore inputs that then hook the chains in
_Prepared = tuple[
    dict[int, dict[str, TableState]],
    list[tuple[Sequence[str], str]],
    dict[int, Chains],
    list[tuple[Sequence[str], str]] | None,
]


class _Undo:
    """Steps that put the previous state back, each checked: what could not be undone is said."""

    def __init__(self) -> None:
        self.failures: list[str] = []

    def step(self, what: str, error: str) -> None:
        if error:
            self.failures.append(f"{what}: {error}")

    def finish(self, cause: str) -> NoReturn:
        if self.failures:
            raise MixedStateError(
                f"{cause}; undoing it failed too, so the node is in a MIXED state: "
                + "; ".join(self.failures)
                + ". Run npc apply again: it replaces every chain and set npc owns."
            )
        raise ApplyError(f"{cause} (the previous state stays in force)")


def apply_iptables(
    lowered: Lowered,
    members: Mapping[str, Sequence[Entry]],
    marks: Marks,
    tools: Tools,
    run: Runner,
    layout: Layout = NPC_LAYOUT,
) -> ApplyReport:
    if not run.which("ipset"):
        raise ApplyError("ipset not found: install it (Debian: apt-get install ipset)")
    names = names_of(lowered)
    refuse_other_backends(run, lowered, tools)
    present = _sets(run)
    for family in sorted({4, 6} - set(layout.families)):  # cleared after the commit: checked before
        sets = sorted(n for n in present if re.match(rf"{re.escape(names.set_prefix)}[a-z]{family}-", n))
        if sets and not run.which(tools.restore[family]):
            raise ApplyError(
                f"{tools.restore[family]} not found: an earlier load of network {lowered.network} left "
                f"IPv{family} rules (their sets, such as {sets[0]}, exist) that this load must remove; "
                "install it (Debian: apt-get install iptables), then rerun"
            )
    _destroy_recorded(run, names, present)
    makers = set_makers(lowered, members, marks, layout.families)
    # No set of this network's yet: the sets are created empty, from their headers, while their
    # members are read and the rules rendered (``set_makers``) and, if no table holds anything
    # of it either (a node's first load), filled while the rules load unhooked, then hooked in
    # (``prepare``'s hooks): each waited for the other before.
    in_parts = (
        not any(n.startswith(names.set_prefix) for n in present)
        and isinstance(run, SendsNetfilter)
        and isinstance(run, RunsTogether)
    )
    wanted = [] if in_parts else [maker.make() for maker in makers]  # in parts: ``fresh``, as built
    _repair_types(run, wanted, present)
    existing = {n for n in present if n.startswith(names.set_prefix)}
    restricting = restricting_sets(lowered, marks, layout.families)

    fresh = [s for s in wanted if s.name not in existing]
    kept = [s for s in wanted if s.name in existing]
    live = _live_contents(run, {s.name for s in kept}) if kept else {}
    updated = 0
    changed: list[str] = []  # swapped in a transition content
    staged: list[SetText] = []  # their transition contents, under temporary names
    moves: list[str] = []  # transition -> new, in place
    unmoves: list[str] = []  # per move, its undoing
    for spec in kept:
        new = dict(_element(member, nomatch) for member, nomatch in spec.members)
        if live[spec.name] == new:
            continue
        between = transition(live[spec.name], new, spec.name in restricting)
        if between != live[spec.name]:  # else the old members are the transition already
            entries = [(f"{e} {v}" if v and v != NOMATCH else e, v == NOMATCH) for e, v in between.items()]
            changed.append(spec.name)
            staged.append(spec.holding(names.temp(spec.name), entries))
        updated += 1
        forward, back = _moves(spec.name, between, new)
        moves += forward
        unmoves += back
    temps = [s.name for s in staged]
    clashing = [t for t in temps if t in present]
    if clashing:  # not recorded by npc, so not npc's to remove
        raise ApplyError(
            f"sets {', '.join(clashing)} exist and were not made by npc: rename them, then rerun"
        )
    _record(names).write_text("".join(f"{t}\n" for t in temps))
    undo = _Undo()

    def drop_new(refused_create: bool = False) -> None:
        error = destroy_sets(run, [*(s.name for s in fresh), *temps], refused_create)
        undo.step("removing the new sets", error)
        if not error:
            _record(names).unlink(missing_ok=True)

    creating = fresh if in_parts else [*fresh, *staged]  # the layout's families
    built: queue.SimpleQueue[SetText | None] = queue.SimpleQueue()  # in parts: the headers

    def create() -> str:
        if in_parts:
            return create_new_sets(
                run, lowered, iter(built.get, None), fill=False, ready=lambda: not built.empty()
            )
        return create_new_sets(run, lowered, creating)

    filling: list[Built] = []  # in parts: the members' messages, built while the sets are created

    def build_then_prepare() -> _Prepared:
        if in_parts:
            try:
                for maker in makers:
                    fresh.append(maker.header())
                    built.put(fresh[-1])
            finally:
                built.put(None)
            fresh[:] = [maker.make() for maker in makers]
        prepared = prepare()
        if in_parts:
            filling.append(fill_messages(fresh))
        return prepared

    def fill() -> str:
        if in_parts and isinstance(run, SendsNetfilter):  # as ``in_parts`` says
            return send_built(run, filling[0])
        return ""

    def prepare() -> _Prepared:
        """Per family, its tables as they are and the restore input that edits them (rendered
        while ``ipset`` creates the sets: neither needs the other); and, for a first load, the
        restore inputs that then hook the chains in (else None: the edits do)."""
        before = {family: _table_states(run, tools, family, lowered, layout) for family in layout.families}
        unhooked = in_parts and all(
            _owns_jump(layout, marks, table) and not states[table].held
            for states in before.values()
            for table in _edited(states, marks)
        )
        written: dict[int, Chains] = {}
        out: list[tuple[Sequence[str], str]] = []  # per family: IPv4's and IPv6's tables are apart
        for family in layout.families:
            edits = {
                table: TableEdit(  # a jump npc does not own here (left by another layout) is removed
                    insert_jump=_owns_jump(layout, marks, table) and old.jumps == 0 and not unhooked,
                    surplus_jumps=max(old.jumps - 1, 0) if _owns_jump(layout, marks, table) else old.jumps,
                    stale_chains=tuple(
                        sorted(set(old.chains) - set(layout.chain_names(lowered, family, marks, table)))
                    ),
                    older_jumps=old.older,
                )
                for table, old in before[family].items()
                if table in _edited(before[family], marks)
            }
            gone = {table: edit.stale_chains for table, edit in edits.items()}
            text = render_rules(
                lowered,
                family,
                marks,
                {table: edit.lines(lowered) for table, edit in edits.items()},
                gone,
                layout,
            )
            written[family] = chains_in(text, gone)
            out.append(([tools.restore[family], "--noflush", "--wait=30"], text))
        if not unhooked:
            return before, out, written, None
        hooks: list[tuple[Sequence[str], str]] = [
            (
                [tools.restore[family], "--noflush", "--wait=30"],
                f"*{home(marks)}\n{insert_jump(jump_rule(lowered))}\nCOMMIT\n",
            )
            for family in layout.families
        ]
        return before, out, written, hooks

    try:
        not_created, prepared = while_running(run, create, build_then_prepare)
    except BaseException:
        drop_new(refused_create=True)  # whatever of them the kernel has
        raise
    if prepared is None:
        drop_new(refused_create=True)
        undo.finish(f"the new sets were refused: {not_created}")
    before, restores, written, hooks = prepared
    if hooks is None and (not_filled := fill()):  # the rules name them hooked in: filled first
        drop_new(refused_create=True)
        undo.finish(f"the new sets were refused: {not_filled}")

    swaps = [f"swap {names.temp(name)} {name}\n" for name in changed]
    swapped, error = ipset_lines(run, swaps)
    if error:
        _, back_error = ipset_lines(run, swaps[:swapped])  # a swap undoes itself
        undo.step("swapping the sets back", back_error)
        drop_new()
        undo.finish(f"ipset refused to swap in the sets' transition contents: {error}")

    def sets_back() -> None:
        _, back_error = ipset_lines(run, swaps)
        undo.step("swapping the sets back", back_error)

    done: list[int] = []

    def rules_back(rejected: Sequence[int] = ()) -> None:
        """Every family done, and the rejected ones' tables committed before the rejection."""
        for undone in [*done, *rejected]:
            try:
                now = _table_states(run, tools, undone, lowered, layout)
            except ApplyError as exc:
                undo.step(f"reading the IPv{undone} rules", str(exc))
                continue
            text = _rollback_text(lowered, before[undone], now, layout)
            if undone in rejected and (now == before[undone] or not text.strip()):
                continue  # the restore committed nothing, or npc holds nothing there, before or now
            back = run([tools.restore[undone], "--noflush", "--wait=30"], text)
            undo.step(f"putting the IPv{undone} rules back", back.stderr.strip() if back.returncode else "")

    if hooks is None:
        loaded = run_together(run, restores)
    else:  # unhooked while the sets fill: no packet meets the rules before both are done
        not_filled, beside = while_running(run, fill, lambda: run_together(run, restores))
        if beside is None:
            rules_back(layout.families)
            drop_new(refused_create=True)
            undo.finish(f"the new sets were refused: {not_filled}")
        loaded = beside
    results = dict(zip(layout.families, loaded, strict=True))  # one per family
    done += [family for family, result in results.items() if result.returncode == 0]
    rejected = [family for family, result in results.items() if result.returncode != 0]
    if not rejected and hooks is not None:
        results = dict(zip(layout.families, run_together(run, hooks), strict=True))
        rejected = [family for family, result in results.items() if result.returncode != 0]
        done = [family for family in done if family not in rejected]
    if rejected:
        rules_back(rejected)
        sets_back()
        drop_new()
        refused = rejected[0]
        undo.finish(f"{tools.restore[refused]} rejected the new rules: {results[refused].stderr.strip()}")

    moved, error = ipset_lines(run, moves, exist=True)
    if error:
        _, back_error = ipset_lines(run, unmoves[:moved][::-1], exist=True)
        undo.step("putting the transition members back", back_error)
        rules_back()
        sets_back()
        drop_new()
        undo.finish(f"ipset refused the new set members: {error}")
    warnings = []
    error = destroy_sets(run, temps)  # now holding the old contents
    if error:
        warnings.append(f"could not remove old set contents (the next apply will): {error}")
    else:
        _record(names).unlink(missing_ok=True)
    for family in {4, 6} - set(layout.families):  # left by a backend that carried it, on this network
        try:
            _clear_family(lowered, tools, run, family, NPC_LAYOUT)
        except ApplyError as exc:
            warnings.append(str(exc))
    stale = destruction_order(existing - {w.name for w in wanted})
    adopted = _adopted(layout, present) if not existing else []  # taking over: the first load only
    left = destroy_stale(run, [*stale, *adopted])
    warnings += left.values()
    entry = layout.fixed_chains(lowered)[0]
    warnings += [
        f"nothing jumps to {entry} in IPv{family}: the rules are loaded but no traffic reaches them"
        for family, old in before.items()
        if not layout.forward_jump and not old["filter"].hooked
    ]
    return ApplyReport(
        tools.flavour,
        len(fresh),
        updated,
        sum(1 for name in stale if name not in left),
        sum(len(layout.chain_names(lowered, f, marks)) for f in layout.families),
        tuple(warnings),
        sum(1 for name in adopted if name not in left),
        written,
    )


def _adopted(layout: Layout, present: Mapping[str, SetInfo]) -> list[str]:
    """The sets of the tool the layout replaces (weave-npc's ``weave-*``, which weave-npc itself
    destroys when it starts), lists first: the kernel refuses to destroy a set a list holds.
    Only when the network has none of npc's sets yet: afterwards a ``weave-*`` set is no
    weave-npc's left behind, and every apply destroyed (or warned of) another tool's."""
    prefix = layout.adopted_set_prefix
    found = [n for n in present if prefix is not None and n.startswith(prefix)]
    return sorted(found, key=lambda name: (present[name].type != LIST_SET, name))


def hooked_by_npc(run: Runner, tools: Tools, lowered: Lowered) -> bool:
    """Whether npc's own layout hooks the network in (its FORWARD jump, in either family): the
    iptables backend's network. Another layout's reset leaves it whole: its chain and set names
    are that layout's too, and removing them stopped at the sets the other family's rules
    still held, with one family's rules gone."""
    return any(
        state.jumps
        for family in NPC_LAYOUT.families
        if run.which(tools.save[family])
        for state in _table_states(run, tools, family, lowered).values()
    )


def reset_layout(lowered: Lowered, tools: Tools, run: Runner, layout: Layout) -> tuple[int, int]:
    """Remove a layout's chains and sets for one network: (chains, sets). A layout's fixed chains
    another tool created are left empty, as that tool made them. Nothing goes while another
    tool's rule or ``list:set`` uses what would (as ``reset_iptables``): Weave's reset removed
    the chains, then ipset refused a set in use, exit 3 with half of npc gone."""
    present = _sets(run) if run.which("ipset") else {}
    names = names_of(lowered)
    owned = [n for n in present if n.startswith(names.set_prefix)]
    fixed = set(layout.fixed_chains(lowered))

    def filled(flavour: Tools, chain: str) -> bool:  # its rules are npc's
        return flavour == tools and (chain.startswith(names.chain_prefix) or chain in fixed)

    def removing(flavour: Tools, chain: str) -> bool:
        return filled(flavour, chain) and chain not in layout.kept

    saves = [save for flavour in (tools, *_other_flavours(run, tools)) for save in _saves(run, flavour)]
    temporaries = _recorded(names)
    holders = {n: info for n, info in present.items() if n not in temporaries}
    _refuse_users(_others_using(run, saves, set(owned), removing, holders, filled))
    chains = sum(_clear_family(lowered, tools, run, family, layout) for family in layout.families)
    _destroy_recorded(run, names, present)
    error = destroy_sets(run, owned)
    if error:
        raise ApplyError(f"ipset refused to destroy npc's sets: {error}")
    return chains, len(owned)


def _clear_family(lowered: Lowered, tools: Tools, run: Runner, family: int, layout: Layout) -> int:
    """Remove the network's chains and FORWARD jumps in one family: how many chains went."""
    if not run.which(tools.restore[family]):
        return 0
    states = _table_states(run, tools, family, lowered, layout)
    lines: list[str] = []
    removed = 0
    for table in TABLES:
        state = states[table]
        hooked = table == "filter" and family in layout.families and not layout.forward_jump
        fixed = layout.fixed_chains(lowered) if hooked else []
        if not state.held:
            continue
        gone = [*state.chains, *(c for c in fixed if c not in layout.kept)]
        lines += [f"*{table}", *(f":{c} - [0:0]" for c in [*fixed, *state.chains])]
        lines += [f"-D {jump_rule(lowered)}"] * state.jumps
        lines += [f"-D {rule}" for rule in state.older]
        lines += [f"-X {c}" for c in gone]
        lines.append("COMMIT")
        removed += len(gone)
    if not lines:
        return 0
    result = run([tools.restore[family], "--noflush", "--wait=30"], "\n".join(lines) + "\n")
    if result.returncode != 0:
        raise ApplyError(f"{tools.restore[family]} refused to remove npc's chains: {result.stderr.strip()}")
    return removed


# --- other backends and flavours, and reset ----------------------------------------------------


def _other_flavours(run: Runner, *tools: Tools) -> list[Tools]:
    """The installed flavours besides ``tools``; none beside plain ``iptables``, which is one of them."""
    if any(t.flavour == "default" for t in tools):
        return []
    flavours = [_tools("legacy"), _tools("nft")]
    return [t for t in flavours if t not in tools and run.which(t.save[4])]


def _saves(run: Runner, tools: Tools) -> list[tuple[Tools, int, str]]:
    """Each family's whole save (not "-t filter": iptables-nft would create the table)."""
    saves: list[tuple[Tools, int, str]] = []
    for family in (4, 6):
        if run.which(tools.save[family]):
            saved = run([tools.save[family]])
            if saved.returncode != 0:
                raise ApplyError(f"{tools.save[family]} failed: {saved.stderr.strip()}")
            saves.append((tools, family, saved.stdout))
    return saves


XTABLES_BUSY = 4  # iptables' exit for a resource problem: the xtables lock not had within --wait


def refuse_layered(run: Runner, lowered: Lowered, tools: Tools, other: Layout, backend: str) -> None:
    """npc's own layout refuses a network ``other`` (Weave's) enforces: its direction chains jump
    into the chains npc's would replace, and the kernel refused the deletions midway. Weave's
    takes npc's over instead (both are iptables chains of the network, replaced in one
    transaction). Two short listings, not the tables' whole saves."""
    names, binary = names_of(lowered), tools.save[4].removesuffix("-save")
    jump = re.compile(rf" -[jg] {re.escape(names.chain_prefix)}")
    for chain in sorted(set(other.direction_chains.values())):
        listed = run([binary, "--wait=30", "-t", "filter", "-S", chain])
        if listed.returncode == XTABLES_BUSY:  # not "no such chain": the check could not be made
            raise ApplyError(f"{binary} could not list chain {chain}: {listed.stderr.strip()}")
        if listed.returncode == 0 and jump.search(listed.stdout):
            raise ApplyError(
                f"network {lowered.network} is enforced by the {backend} backend; remove it first "
                f"with: npc reset --backend {backend} --network {lowered.network}"
            )


def _enforcer(run: Runner, tools: Tools, names: Names) -> str:
    """The backend whose chains of the network ``tools`` holds: "weave" where rules outside npc's
    chains lead into them and npc's FORWARD jump does not (``_layered_tags``), else "iptables";
    "" for none."""
    saved = [run([tools.save[family]]) for family in (4, 6) if run.which(tools.save[family])]
    # the tables npc writes (a chain of its name in nat or raw is another tool's: reset leaves it)
    texts = [f"*{t}\n{_section(done.stdout, t)}" for done in saved if done.returncode == 0 for t in TABLES]
    if not any(f"\n:{names.chain_prefix}" in "\n" + text for text in texts):
        return ""
    return "weave" if names.tag in _layered_tags(texts) else "iptables"


def refuse_other_backends(run: Runner, lowered: Lowered, tools: Tools | None) -> None:
    """Two backends (or iptables flavours) enforcing one network would both filter: exit 3 with the
    command that removes the other, rather than apply beside it. ``tools``: the iptables flavour
    applying (None: nftables)."""
    names, network = names_of(lowered), lowered.network
    if tools is not None:
        table = table_name(network)
        held = [f"{family} {name}" for family, name in npc_tables(run) if name == table]
        if held:
            raise ApplyError(
                f"network {network} is enforced by the nftables backend (table {held[0]}); remove it "
                f"first with: npc reset --backend nftables --network {network}"
            )
        for other in _other_flavours(run, tools):
            if backend := _enforcer(run, other, names):
                raise ApplyError(
                    f"network {network} is enforced by the {backend} backend with iptables-{other.flavour}; "
                    f"remove it first with: npc reset --backend {backend} --iptables {other.flavour} "
                    f"--network {network}"
                )
        return
    for flavour in ("legacy", "nft", ""):
        candidate = _tools(flavour)
        if run.which(candidate.save[4]) and (backend := _enforcer(run, candidate, names)):
            raise ApplyError(
                f"network {network} is enforced by the {backend} backend; remove it first with: "
                f"npc reset --backend {backend} --network {network}"
            )
    if run.which("ipset") and any(
        n.startswith(names.set_prefix) for n in run(["ipset", "list", "-n"]).stdout.split()
    ):
        raise ApplyError(
            f"network {network} has npc's ipsets from the iptables backend; remove them first with: "
            f"npc reset --backend iptables --network {network}"
        )


_LAYERED = re.compile(r" -[jg] NPC-([a-z2-7]{5})-")
_NETWORK_CHAIN = re.compile(r"^:NPC-([a-z2-7]{5})-", re.MULTILINE)  # a network's chain, in a save


def _layered_tags(saves: Iterable[str]) -> frozenset[str]:
    """The tags of networks whose chains rules outside npc's own chains and FORWARD jumps lead
    into, and that npc's own FORWARD jump does not hook in: another layout's (Weave's fixed
    chains), which that backend's reset takes apart; npc's own could not delete the chains those
    rules use, and refused the whole reset. Such a rule into a network npc hooks in is another
    tool's, which ``_others_using`` names."""
    found: set[str] = set()
    hooked: set[str] = set()
    table = ""
    for line in (line for saved in saves for line in saved.splitlines()):
        table = line[1:] if line.startswith("*") else table
        words = line.split(maxsplit=2)
        if table not in TABLES or len(words) < 3 or words[0] != "-A" or ANY_CHAIN.match(words[1]):
            continue  # npc's chains are in mangle and filter: a jump elsewhere is to another tool's
        if target := _LAYERED.search(line):
            (hooked if ANY_JUMP.fullmatch(line) else found).add(target.group(1))
    return frozenset(found - hooked)


_SET_OPTIONS = ("--match-set", "--map-set", "--add-set", "--del-set")  # xt_set's, and SET's


def _others_using(
    run: Runner,
    saves: Sequence[tuple[Tools, int, str]],
    doomed: set[str],
    removing: Callable[[Tools, str], bool],
    present: Mapping[str, SetInfo],
    filled: Callable[[Tools, str], bool] | None = None,
) -> list[str]:
    """Where a chain reset would remove or a set it would destroy is used by something other
    than what it removes: a rule of another chain (any flavour, family, table) that jumps to the
    chain or uses the set, or another tool's ``list:set``. The kernel refuses to delete either in
    use, and learnt only after the first of npc's objects were gone, reset ended half done.
    ``filled``: the chains whose rules are npc's (default: those it removes; Weave's also those
    the router made, which reset empties)."""
    found: list[str] = []
    filled = filled or removing
    for tools, family, text in saves:
        table = ""
        for line in text.splitlines():
            if line.startswith("*"):
                table = line[1:]
            words = line.split()
            if len(words) > 2 and words[0] == "-A" and not filled(tools, words[1]):
                where = f"a rule of chain {words[1]} (table {table}, iptables-{tools.flavour} IPv{family})"
                used = {name for option, name in itertools.pairwise(words) if option in _SET_OPTIONS}
                found += [f"{where} uses set {name}" for name in sorted(used & doomed)]
                target = next((t for option, t in itertools.pairwise(words) if option in ("-j", "-g")), "")
                # npc's chains are in mangle and filter: a jump in nat or raw is to another tool's
                if target and table in TABLES and removing(tools, target) and not ANY_JUMP.fullmatch(line):
                    found.append(f"{where} jumps to {target}")
    for name, info in sorted(present.items()):
        if info.type == LIST_SET and name not in doomed and info.entries:
            listed = run(["ipset", "list", name])
            members = listed.stdout.partition("\nMembers:\n")[2].split()
            found += [f"the list:set {name} holds set {m}" for m in members if m in doomed]
    return found


_SET_USE = re.compile(r" --(match|map)-set npc-[a-z2-7]{5}-")


def _rule_lines(saves: Iterable[tuple[Tools, int, str]]) -> Iterator[str]:
    return (line for _, _, text in saves for line in text.splitlines() if line.startswith("-A "))


def _refuse_users(users: Sequence[str]) -> None:
    if users:
        more = f" (and {len(users) - 3} more)" if len(users) > 3 else ""
        raise ApplyError(
            f"npc's chains or sets are in use outside npc's chains, so nothing was removed: "
            f"{'; '.join(users[:3])}{more}. Remove those rules or members, then rerun"
        )


def reset_iptables(
    run: Runner, lowered: Lowered | None, flavours: Sequence[Tools], leave_layered: bool = False
) -> tuple[list[str], frozenset[str]]:
    """Remove npc's jump, chains and sets for one network (``None``: every network); with
    ``leave_layered``, none of a network another layout hooks in (``_layered_tags``). Returns what
    was removed and the tags of the networks left; ApplyError if the kernel refuses (others' rules
    using npc's chains or sets)."""
    removed: list[str] = []
    names = names_of(lowered) if lowered else None
    saves = [save for tools in flavours for save in _saves(run, tools)]  # before anything goes
    skip = _layered_tags(text for _, _, text in saves) if leave_layered else frozenset()
    if names:
        skip &= {names.tag}
        if skip:
            return removed, skip
    # the kernel has one ipset namespace: a flavour left in place may use the same network's sets
    leaving = [save for tools in _other_flavours(run, *flavours) for save in _saves(run, tools)]
    elsewhere = {m.group(1) for _, _, text in leaving for m in _NETWORK_CHAIN.finditer(text)}

    def kept(name: str) -> bool:  # a skipped network's chain, jump or set
        return any(f"-{tag}-" in name for tag in skip)

    def ours(chain: str) -> bool:  # the network's, or any network's: ``NPC-<tag>-`` (not NPC-FOO)
        return chain.startswith(names.chain_prefix) if names else bool(ANY_CHAIN.match(chain))

    def removing(tools: Tools, chain: str) -> bool:  # a chain this reset removes
        return tools in flavours and ours(chain) and not kept(chain)

    ipset = run.which("ipset")
    if not ipset and any(_SET_USE.search(line) and ours(line.split()[1]) for line in _rule_lines(saves)):
        raise ApplyError(
            "ipset not found: npc's rules use its sets, which only ipset removes, so nothing was "
            "removed; install it (Debian: apt-get install ipset), then rerun"
        )
    present = _sets(run) if ipset else {}  # read once: removing the chains destroys no set
    doomed = {
        n
        for n in present
        if (n.startswith(names.set_prefix) if names else ANY_SET.fullmatch(n))
        and not kept(n)
        and n.split("-", 2)[1] not in elsewhere  # the network's tag
    }
    for family in (4, 6):  # its rules cannot go without its tools, nor then its sets: refuse first
        tools_missing = not any(run.which(tools.restore[family]) for tools in flavours)
        left = sorted(n for n in doomed if re.match(rf"npc-[a-z2-7]{{5}}-[a-z]{family}-", n))
        if tools_missing and left and flavours:
            raise ApplyError(
                f"{flavours[0].restore[family]} not found: npc's IPv{family} rules (their sets, such as "
                f"{left[0]}, exist) cannot be removed, so nothing was removed; install it "
                "(Debian: apt-get install iptables), then rerun"
            )
    temporaries = _recorded(names)  # a crashed apply's, which reset destroys first
    holders = {n: info for n, info in present.items() if n not in temporaries}
    _refuse_users(_others_using(run, [*saves, *leaving], doomed, removing, holders))

    for tools, family, text in saves:
        parts: dict[str, list[str]] = {}
        gone: list[str] = []
        for table in TABLES:
            section = _section(text, table).splitlines()
            chains = [
                c
                for c in (line[1:].split()[0] for line in section if line.startswith(":"))
                if ours(c) and not kept(c)
            ]
            own = {f"-A {rule}" for rule in (jump_rule(lowered), *older_jumps(lowered))} if lowered else None
            jumps = [
                line
                for line in section
                if (line in own if own else bool(ANY_JUMP.fullmatch(line)) and not kept(line))
            ]
            if chains or jumps:
                parts[table] = [
                    f"*{table}",
                    *(f"-D {j[3:]}" for j in jumps),
                    *(f":{c} - [0:0]" for c in chains),
                    *(f"-X {c}" for c in chains),
                    "COMMIT",
                ]
                gone += [f"iptables-{tools.flavour} IPv{family} chain {c}" for c in chains]
        script = [line for table in TABLES for line in parts.get(table, ())]
        if not script:
            continue
        done = run([tools.restore[family], "--noflush", "--wait=30"], "\n".join([*script, ""]))
        if done.returncode != 0:
            stopped_part_way(
                removed, f"{tools.restore[family]} refused to remove npc's chains: {done.stderr.strip()}"
            )
        removed += gone
    if ipset:
        if names:
            _destroy_recorded(run, names, present)
        else:
            for record in _records(None):
                recorded = [n for n in record.read_text().split() if n in present]
                if not destroy_sets(run, recorded):
                    record.unlink(missing_ok=True)
        error = destroy_sets(run, sorted(doomed))
        if error:
            stopped_part_way(removed, f"ipset refused to destroy npc's sets: {error}")
        removed += [f"set {n}" for n in sorted(doomed)]
    return removed, skip


def member_lines(
    changes: Mapping[str, tuple[Sequence[Entry], Sequence[Entry]]], restricting: Collection[str]
) -> tuple[list[str], list[str]]:
    """``ipset -exist restore`` lines for member changes (``render.set_changes``), split into those
    that restrict (a permitting set's deletions, a restricting set's additions;
    ``restricting``: ``render.restricting_sets``) and those that permit. An element both gone and
    added (a map address's new group) is one add, which replaces it, among those that permit: as
    in ``transition``, the address keeps its old group until the rest has restricted."""
    first: list[str] = []
    then: list[str] = []
    for name, (gone, fresh) in sorted(changes.items()):
        restricts = name in restricting
        readded = {_element(member)[0] for member, _ in fresh}
        regrouped: set[str] = set()  # in a restricting set: a map address's new group
        for member, nomatch in gone:
            element = _element(member)[0]
            if element in readded:
                regrouped.add(element)
            else:
                (then if restricts != nomatch else first).append(f"del {name} {element}\n")
        for member, nomatch in fresh:
            line = f"add {name} {member}{' nomatch' if nomatch else ''}\n"
            narrows = restricts != nomatch and not (restricts and _element(member)[0] in regrouped)
            (first if narrows else then).append(line)
    return first, then


def run_member_lines(lines: Sequence[str], run: Runner) -> None:
    """One ``ipset -exist restore`` batch of ``member_lines``; ApplyError if refused."""
    if not lines:
        return
    if not run.which("ipset"):
        raise ApplyError("ipset not found: install it (Debian: apt-get install ipset)")
    _, error = ipset_lines(run, lines, exist=True)
    if error:
        raise ApplyError(f"ipset restore rejected the member changes: {error}")


def load_members(
    changes: Mapping[str, tuple[Sequence[Entry], Sequence[Entry]]], restricting: Collection[str], run: Runner
) -> MemberDelta:
    """One batch: members move, rules stay. Every change that restricts comes first, then every
    one that permits, so a batch cut short never allows more than before or after."""
    first, then = member_lines(changes, restricting)
    run_member_lines([*first, *then], run)
    added = sum(len(fresh) for _, fresh in changes.values())
    removed = sum(len(gone) for gone, _ in changes.values())
    return MemberDelta(added, removed, len(changes))
