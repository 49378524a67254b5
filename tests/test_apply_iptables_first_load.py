"""A first iptables load (no set or chain of the network's yet) in parts, on a real kernel: the
sets created empty, the rules loaded unhooked while the sets fill, then the FORWARD jumps. No
packet may meet a rule before every set is full, the end state is the one a load the other way
makes, and a refusal at any step leaves the namespace as it was."""

from __future__ import annotations

import re
import struct
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest
from kernel.netns import InNetns, Netns, compile_policies, fresh_netns, policy
from npc.backends.base import Ran, RunsTogether
from npc.backends.iptables import ipset_netlink
from npc.backends.iptables import load as apply
from npc.backends.iptables.ipset_netlink import CMD_ADD, NFNL_SUBSYS_IPSET
from npc.backends.iptables.mark_tree import Marks
from npc.backends.iptables.render import set_makers
from npc.errors import ApplyError
from npc.resolve import Entry

pytestmark = pytest.mark.kernel

MARKS = Marks()
TOOLS = apply._tools("legacy")
POLICIES = (policy("a"), policy("b", "redis"), policy("c", 443, "frontend"))
REFUSED = "*filter\n-A NPC-NO-SUCH-CHAIN -j DROP\nCOMMIT\n"


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Netns]:
    with fresh_netns("npc-ipt1", tmp_path) as ns:
        yield ns


def _jumps(netns: Netns) -> int:
    return sum(
        netns.run(tool, "-t", table, "-S", "FORWARD").stdout.count(" -j NPC-")
        for tool in ("iptables-legacy", "ip6tables-legacy")
        for table in ("mangle", "filter")
    )


def _members(netns: Netns) -> int:
    return len(re.findall(r"^add npc-", netns.run("ipset", "save").stdout, re.M))


class Together(InNetns):
    """The real tools, run together one after the other; records, as each rules restore and each
    hook (the small restore inserting the FORWARD jumps) starts, the jumps in force and the set
    members loaded. ``refuse``: "hook" (its input ends with a table the kernel refuses) or
    "fill" (the netlink batches adding members fail)."""

    def __init__(self, netns: Netns, refuse: str = "") -> None:
        super().__init__(netns)
        self.refusing = refuse
        self.rules: list[tuple[int, int]] = []  # (jumps, members) as each rules restore started
        self.hooks: list[tuple[int, int]] = []

    def together(self, calls: Sequence[tuple[Sequence[str], str]]) -> list[Ran]:
        return [self(*call) for call in calls]

    def __call__(self, argv: Sequence[str], stdin: str = "") -> Ran:
        if "restore" in argv[0] and argv[0] != "ipset":
            seen = (_jumps(self.netns), _members(self.netns))
            hook = ":NPC-" not in stdin
            (self.hooks if hook else self.rules).append(seen)
            if hook and self.refusing == "hook":
                stdin += REFUSED
        return super().__call__(argv, stdin)

    def netfilter(self, batch: bytes, replies: int, answers: list[bytes] | None = None) -> list[int]:
        (kind,) = struct.unpack_from("=H", batch, 4)
        if self.refusing == "fill" and kind == NFNL_SUBSYS_IPSET << 8 | CMD_ADD:
            raise OSError(105, "No buffer space available")
        return super().netfilter(batch, replies, answers)


def test_the_rules_are_hooked_only_once_every_set_is_full(node: Netns, tmp_path: Path) -> None:
    compiled = compile_policies(*POLICIES)
    run = Together(node)
    assert isinstance(run, RunsTogether)
    apply.apply_iptables(compiled.lowered, compiled.members, MARKS, TOOLS, run)
    full = _members(node)
    assert full > 0 and _jumps(node) == 2  # mangle's, both families
    assert [jumps for jumps, _ in run.rules] == [0, 0]  # the rules went in unhooked
    assert run.hooks == [(0, full), (1, full)]  # hooked once the sets were full, IPv4's first
    with fresh_netns("npc-ipt1-b", tmp_path) as other:  # not together: sets full, then hooked rules
        apply.apply_iptables(compiled.lowered, compiled.members, MARKS, TOOLS, InNetns(other))
        assert other.state("legacy") == node.state("legacy")


@pytest.mark.parametrize("refuse", ["hook", "fill"])
def test_a_refused_step_of_a_first_load_leaves_the_namespace_as_it_was(node: Netns, refuse: str) -> None:
    node.run("ipset", "create", "other-set", "hash:ip")
    node.run("iptables-legacy", "-A", "FORWARD", "-p", "udp", "--dport", "9", "-j", "DROP")
    before = node.state("legacy")
    compiled = compile_policies(*POLICIES)
    with pytest.raises(
        ApplyError, match="rejected the new rules" if refuse == "hook" else "sets were refused"
    ):
        apply.apply_iptables(compiled.lowered, compiled.members, MARKS, TOOLS, Together(node, refuse))
    assert node.state("legacy") == before


class Members(Mapping[str, Sequence[Entry]]):
    """``members`` that records which sets are read and, with ``failing``, cannot read that one
    once the kernel holds a set of npc's: a first load creates the sets while later ones are
    still being read (``render.set_makers``)."""

    def __init__(self, members: Mapping[str, Sequence[Entry]], netns: Netns, failing: str = "") -> None:
        self.members, self.netns, self.failing = members, netns, failing
        self.read: list[str] = []

    def __getitem__(self, name: str) -> Sequence[Entry]:
        self.read.append(name)
        if name == self.failing:
            for _ in range(500):
                if "npc-" in self.netns.run("ipset", "list", "-n").stdout:
                    raise RuntimeError("members unreadable")
                time.sleep(0.01)
            raise AssertionError("no set was created while the members were read")
        return self.members[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.members)

    def __len__(self) -> int:
        return len(self.members)


def test_sets_created_before_a_failure_to_read_members_are_removed(
    node: Netns, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ipset_netlink, "SEND_MESSAGES", 1)  # each set created as soon as it is built
    node.run("ipset", "create", "other-set", "hash:ip")
    before = node.state("legacy")
    compiled = compile_policies(*POLICIES)
    recording = Members(compiled.members, node)
    makers = set_makers(compiled.lowered, recording, MARKS, (4, 6))
    assert not recording.read  # names and order come from the policies alone
    for maker in makers:
        maker.make()
    failing = Members(compiled.members, node, failing=recording.read[-1])
    with pytest.raises(RuntimeError, match="members unreadable"):
        apply.apply_iptables(compiled.lowered, failing, MARKS, TOOLS, Together(node))
    assert node.state("legacy") == before
