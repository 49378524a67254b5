"""Failing restores and rollbacks, with a stand-in command runner: no root, every path reachable.

The stand-in answers like the tools do (``ipset list -t`` blocks, ``iptables-save`` text, ``Error
in line N`` from ``ipset restore``) and fails the commands a scenario names.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence

import pytest
from npc.backends.base import Ran
from npc.backends.iptables import load as apply
from npc.backends.iptables.mark_tree import Marks
from npc.backends.iptables.names import destruction_order, names_of
from npc.backends.iptables.render import kernel_sets
from npc.errors import ApplyError, MixedStateError
from npc.inventory import Inventory, Namespace, Pod
from npc.ir import PodPeer, Policy, Program, Requirement, Rule, Selector
from npc.pipeline import compile_program
from npc.resolve import Compiled

IN_USE = "ipset v7.17: Error in line 1: Set cannot be destroyed: it is in use by a kernel component\n"
Answer = Callable[[Sequence[str], str], "Ran | None"]


class StandIn:
    """Records every command; ``answer`` may return a result, else the tool 'succeeds'."""

    def __init__(self, answer: Answer, sets: str = "", saved: str = "") -> None:
        self.calls: list[tuple[tuple[str, ...], str]] = []
        self.answer = answer
        self.sets = sets
        self.saved = saved  # ``ipset save``: the sets' members

    def __call__(self, argv: Sequence[str], stdin: str = "") -> Ran:
        self.calls.append((tuple(argv), stdin))
        found = self.answer(argv, stdin)
        if found is not None:
            return found
        if list(argv[:3]) == ["ipset", "list", "-t"]:
            return Ran(0, self.sets)
        if list(argv) == ["ipset", "save"]:
            return Ran(0, self.saved)
        return Ran(0, "*filter\nCOMMIT\n" if "save" in argv[0] else "")

    def which(self, program: str) -> bool:
        return program == "ipset" or "-legacy-" in program

    def commands(self) -> list[str]:
        return [
            " ".join(argv) + (" <<" + stdin.strip().replace("\n", "; ") if "ipset" in argv else "")
            for argv, stdin in self.calls
        ]


def fail(stderr: str) -> Ran:
    return Ran(1, "", stderr)


@pytest.fixture
def compiled() -> Compiled:
    db = Selector((Requirement("role", "In", ("db",)),))
    policy = Policy("default", "p", db, ingress=(Rule([PodPeer(Selector(), Selector())]),), egress=None)
    pods = (
        Pod(
            "default",
            "a",
            {"role": "db"},
            (ipaddress.ip_address("10.0.0.1"), ipaddress.ip_address("fd00::1")),
        ),
    )
    return compile_program(Program((policy,)), Inventory((Namespace("default", {}),), pods))


def run_apply(stand_in: StandIn, compiled: Compiled) -> None:
    apply.apply_iptables(compiled.lowered, compiled.members, Marks(), apply._tools("legacy"), stand_in)


def existing_sets(compiled: Compiled) -> str:
    """``ipset list -t`` output in which every set of the program already exists, with its right type."""
    blocks = []
    for spec in kernel_sets(compiled.lowered, compiled.members, Marks()):
        header = (
            "size 8" if spec.type == "list:set" else f"family {spec.family} hashsize 1024"
        )  # as ipset prints
        blocks.append(f"Name: {spec.name}\nType: {spec.type}\nHeader: {header}\nReferences: 1\n")
    return "\n".join(blocks)


def leaving_members(compiled: Compiled) -> str:
    """``ipset save`` output in which every set holds one member it loses in the new state: each
    permitting set takes a transition content (swapped in before the rules), each restricting set
    keeps its members until after them."""
    specs = kernel_sets(compiled.lowered, compiled.members, Marks())
    return "".join(f"create {s.name} {s.type}\nadd {s.name} 10.9.9.9\n" for s in specs)


def test_ipv6_failure_with_a_failing_ipv4_rollback_is_a_mixed_state(compiled: Compiled) -> None:
    restores: list[str] = []

    def answer(argv: Sequence[str], stdin: str) -> Ran | None:
        if argv[0].endswith("-restore"):
            restores.append(argv[0])
            if argv[0].startswith("ip6tables") or len(restores) > 1:  # v6 refused, then the v4 undo too
                return fail("iptables-restore: line 3 failed\n")
        return None

    with pytest.raises(MixedStateError) as info:
        run_apply(StandIn(answer), compiled)
    assert info.value.exit_code == 4
    assert "MIXED" in str(info.value) and "putting the IPv4 rules back" in str(info.value)
    assert "Run npc apply again" in str(info.value)


def test_ipv6_failure_with_a_good_rollback_keeps_the_previous_state(compiled: Compiled) -> None:
    stand_in = StandIn(
        lambda argv, stdin: fail("line 3 failed\n") if argv[0] == "ip6tables-legacy-restore" else None
    )
    with pytest.raises(ApplyError) as info:
        run_apply(stand_in, compiled)
    assert info.value.exit_code == 3 and "previous state stays" in str(info.value)
    restored = [argv[0] for argv, _ in stand_in.calls if argv[0].endswith("-restore")]
    assert restored == ["iptables-legacy-restore", "ip6tables-legacy-restore", "iptables-legacy-restore"]
    assert any(argv[:2] == ("ipset", "restore") and "destroy npc-" in stdin for argv, stdin in stand_in.calls)


def test_a_set_held_for_a_moment_is_retried_from_the_line_it_hit(compiled: Compiled) -> None:
    refusals = [IN_USE.replace("line 1", "line 2"), IN_USE]

    def answer(argv: Sequence[str], stdin: str) -> Ran | None:
        if list(argv) == ["ipset", "restore"] and stdin.startswith("swap") and refusals:
            return fail(refusals.pop(0))
        return None

    stand_in = StandIn(answer, existing_sets(compiled), leaving_members(compiled))
    run_apply(stand_in, compiled)
    swaps = [stdin for argv, stdin in stand_in.calls if stdin.startswith("swap")]
    assert len(swaps) == 3
    assert swaps[1] == "".join(swaps[0].splitlines(keepends=True)[1:])  # resumed at the refused line
    assert swaps[2] == swaps[1]


def test_a_lasting_swap_refusal_swaps_back_and_exits_3(compiled: Compiled) -> None:
    def answer(argv: Sequence[str], stdin: str) -> Ran | None:
        if list(argv) == ["ipset", "restore"] and stdin.startswith("swap") and stdin.count("swap") > 1:
            return fail(
                "ipset v7.17: Error in line 2: The sets cannot be swapped: their type does not match\n"
            )
        return None

    stand_in = StandIn(answer, existing_sets(compiled), leaving_members(compiled))
    with pytest.raises(ApplyError) as info:
        run_apply(stand_in, compiled)
    assert info.value.exit_code == 3 and "refused to swap" in str(info.value)
    swaps = [stdin for argv, stdin in stand_in.calls if stdin.startswith("swap")]
    assert swaps[-1] == swaps[0].splitlines(keepends=True)[0]  # the one done is swapped back
    assert not [argv for argv, _ in stand_in.calls if argv[0].endswith("-restore")]  # rules untouched


def test_refused_member_changes_after_the_rules_undo_every_phase(compiled: Compiled) -> None:
    """The last phase (transition -> new members, in place) refused on its second line: that line's
    predecessor is undone, the rules put back, the transitions swapped out, the temporaries removed."""

    def answer(argv: Sequence[str], stdin: str) -> Ran | None:
        if list(argv) == ["ipset", "-exist", "restore"] and stdin.count("\n") > 1:
            return fail("ipset v7.17: Error in line 2: Hash is full, cannot add more elements\n")
        return None

    stand_in = StandIn(answer, existing_sets(compiled), leaving_members(compiled))
    with pytest.raises(ApplyError) as info:
        run_apply(stand_in, compiled)
    assert info.value.exit_code == 3 and "refused the new set members" in str(info.value)
    steps = stand_in.commands()
    moves = next(i for i, c in enumerate(steps) if c.startswith("ipset -exist restore"))
    first = steps[moves].partition("<<")[2].split("; ")[0]
    undone = steps[moves + 1].partition("<<")[2]
    assert first.startswith("del ") and first.endswith(" 10.9.9.9") and undone == "add" + first[3:]
    assert [c.split()[0] for c in steps[moves + 2 : moves + 6]] == [
        "iptables-legacy-save",
        "iptables-legacy-restore",
        "ip6tables-legacy-save",
        "ip6tables-legacy-restore",
    ]
    swaps = [c for c in steps if "<<swap" in c]
    assert len(swaps) == 2 and swaps[0] == swaps[1]  # swapped in, then every one back
    assert "destroy npt-" in steps[-1]


def test_a_killed_runs_recorded_temporaries_are_removed_and_made_again(compiled: Compiled) -> None:
    """A run killed after staging its temporaries leaves them and its record; the next run removes
    exactly those, then stages its own under the same names (not a clash with a stranger's sets)."""
    names = names_of(compiled.lowered)
    temps = [names.temp(spec.name) for spec in kernel_sets(compiled.lowered, compiled.members, Marks())]
    left = "".join(
        f"\nName: {t}\nType: hash:ip\nHeader: family inet hashsize 1024\nReferences: 0\n" for t in temps
    )
    apply._record(names).write_text("".join(f"{t}\n" for t in temps))
    stand_in = StandIn(lambda argv, stdin: None, existing_sets(compiled) + left, leaving_members(compiled))
    run_apply(stand_in, compiled)
    batches = [stdin for argv, stdin in stand_in.calls if list(argv) == ["ipset", "restore"]]
    assert batches[0] == "".join(f"destroy {t}\n" for t in destruction_order(temps))  # lists first
    assert any(f"create {t} " in batch for t in temps for batch in batches[1:])
