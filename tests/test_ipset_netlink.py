"""Sets created over netlink (``backends/iptables/ipset_netlink.py``) are the sets ``ipset restore``
makes of the same text, on a real kernel: every type, family and member shape npc writes, sets
of several messages, empty sets; refusals name the set and the reason."""

from __future__ import annotations

import errno
import os
import random
import re
import struct
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from kernel.netns import InNetns, Netns, compile_policies, fresh_netns, policy
from npc.backends.base import Ran
from npc.backends.iptables import ipset_netlink, load
from npc.backends.iptables.mark_tree import Marks
from npc.backends.iptables.render import SetText, render_sets, set_text
from npc.errors import ApplyError
from npc.lower import Lowered

pytestmark = pytest.mark.kernel


@pytest.fixture
def two(tmp_path: Path) -> Iterator[tuple[Netns, Netns]]:
    with fresh_netns("npc-nl-a", tmp_path) as a, fresh_netns("npc-nl-b", tmp_path) as b:
        yield a, b


def _v4(r: random.Random) -> str:
    return f"10.{r.randrange(256)}.{r.randrange(256)}.{r.randrange(1, 255)}"


def _v6(r: random.Random) -> str:
    return f"fd00:10:{r.randrange(1 << 16):x}::{r.randrange(1, 1 << 16):x}"


NETS4 = ("0.0.0.0/1", "128.0.0.0/1", "10.0.0.0/8", "10.1.0.0/16", "192.168.1.7", "169.254.0.0/16")


LISTED = ("ip4", "ip6", "empty", "map4", "map6", "port4", "port6", "net4", "net6", "ports")


def specs(seed: int) -> list[SetText]:
    """One set of every shape npc writes (``render.kernel_sets``), members drawn at random."""
    r = random.Random(seed)

    def some(make: Callable[[random.Random], str], n: int) -> list[str]:
        return sorted({make(r) for _ in range(n)})

    marks = [f" skbmark 0x{r.randrange(1 << 7) << 24:x}/0xf000007f" for _ in range(3)]
    ports = [f",{p}:{n}" for p in ("tcp", "udp", "sctp") for n in (53, 8080, 65535)]
    return [
        set_text("npc-t-ip4", "hash:ip", 4, [(a, False) for a in some(_v4, 9000)]),  # several messages
        set_text("npc-t-ip6", "hash:ip", 6, [(a, False) for a in some(_v6, 300)]),
        set_text("npc-t-empty", "hash:ip", 6, []),
        set_text(
            "npc-t-map4", "hash:ip", 4, [(a + r.choice(marks), False) for a in some(_v4, 500)], " skbinfo"
        ),
        set_text(
            "npc-t-map6", "hash:ip", 6, [(a + r.choice(marks), False) for a in some(_v6, 50)], " skbinfo"
        ),
        set_text("npc-t-port4", "hash:ip,port", 4, [(a + r.choice(ports), False) for a in some(_v4, 2000)]),
        set_text("npc-t-port6", "hash:ip,port", 6, [(a + r.choice(ports), False) for a in some(_v6, 200)]),
        set_text("npc-t-net4", "hash:net", 4, [(n, n.startswith(("10.0.", "169."))) for n in NETS4]),
        set_text("npc-t-net6", "hash:net", 6, [("::/1", False), ("8000::/1", False), ("fd00::/8", True)]),
        set_text(
            "npc-t-ports", "bitmap:port", 0, [(str(p), False) for p in sorted(r.sample(range(1, 65536), 15))]
        ),
        set_text(
            "npc-t-list", "list:set", 0, [(n, False) for n in ("npc-t-net4", "npc-t-ip4", "npc-t-empty")]
        ),
        set_text(
            "npc-t-list9", "list:set", 0, [(f"npc-t-{n}", False) for n in LISTED]
        ),  # beyond the 8 default
    ]


@pytest.mark.parametrize("seed", [0, 1])
def test_netlink_makes_the_sets_ipset_restore_makes(two: tuple[Netns, Netns], seed: int) -> None:
    by_netlink, by_restore = two
    made = specs(seed)
    assert ipset_netlink.create_sets(InNetns(by_netlink), made) == ""
    text = render_sets(Lowered(network="default", families=()), made)
    assert InNetns(by_restore)(["ipset", "restore"], text).returncode == 0
    assert by_netlink.state() == by_restore.state()
    assert len(
        [line for line in by_netlink.state().splitlines() if line.startswith("add npc-t-ip4 ")]
    ) == len(made[0].members)


class Counting(InNetns):
    """The namespace's kernel, and how many messages each datagram sent it held."""

    def __init__(self, netns: Netns) -> None:
        super().__init__(netns)
        self.sizes: list[int] = []

    def netfilter(self, batch: bytes, replies: int, answers: list[bytes] | None = None) -> list[int]:
        at, count = 0, 0
        while at < len(batch):
            at += struct.unpack_from("=I", batch, at)[0]
            count += 1
        self.sizes.append(count)
        return super().netfilter(batch, replies, answers)


@pytest.mark.parametrize(("ready", "sizes"), [(None, [100]), (True, [100]), (False, [16] * 6 + [4])])
def test_sets_not_yet_built_send_what_is_batched(
    two: tuple[Netns, Netns], ready: bool | None, sizes: list[int]
) -> None:
    """While the next set is not at hand (``ready`` False: still being built), what is batched
    goes to the kernel once it is ``EARLY_MESSAGES`` long; else up to ``SEND_MESSAGES`` go in one
    datagram. The sets are made the same either way."""
    netns, by_restore = two
    made = [set_text(f"npc-t-{i}", "hash:ip", 4, [(f"10.0.0.{i}", False)]) for i in range(50)]
    counting = Counting(netns)
    waiting = None if ready is None else lambda: ready
    assert ipset_netlink.create_sets(counting, made, ready=waiting) == ""
    assert counting.sizes[1:] == sizes  # after the question of the set type's revision
    text = render_sets(Lowered(network="default", families=()), made)
    assert InNetns(by_restore)(["ipset", "restore"], text).returncode == 0
    assert netns.state() == by_restore.state()


def test_a_refusal_names_the_set_and_the_reason(two: tuple[Netns, Netns]) -> None:
    netns, _ = two
    netns.run("ipset", "create", "npc-t-taken", "hash:ip")
    first = set_text("npc-t-first", "hash:ip", 4, [("10.0.0.1", False)])
    taken = set_text("npc-t-taken", "hash:ip", 4, [("10.0.0.2", False)])
    last = set_text("npc-t-last", "hash:ip", 4, [("10.0.0.3", False)])
    error = ipset_netlink.create_sets(InNetns(netns), [first, taken, last])
    # the refusal is the third message of one datagram whose last alone asks for an answer
    assert error == "set npc-t-taken: a set of that name exists already"
    assert "npc-t-first" in netns.run("ipset", "list", "-n").stdout


@pytest.mark.parametrize(
    ("spec", "said"),
    [
        (set_text("npc-t-bad", "hash:ip", 4, [("10.0.0.1", False), ("10.0.0.300", False)]), "'10.0.0.300'"),
        (set_text("npc-t-bad", "hash:ip", 6, [("10.0.0.1", False)]), "not an inet6 address"),
        (set_text("npc-t-bad", "hash:ip,port", 4, [("10.0.0.1,icmp:3", False)]), "not protocol:port"),
        (set_text("npc-t-bad", "hash:net", 4, [("10.0.0.0/33", False)]), "not a prefix length"),
        (set_text("npc-t-bad", "hash:ip", 4, [("10.0.0.1 skbmark x", False)], " skbinfo"), "skbmark"),
        (set_text("npc-t-bad", "hash:mac", 4, [("80", False)]), "hash:mac"),
        (
            SetText("npc-t-bad", "bitmap:port", "", 0, 2, [("80", False), ("8o", False)], " range 80-81"),
            "'8o'",
        ),
    ],
)
def test_a_member_npc_cannot_spell_is_an_error_before_the_set_is_sent(
    two: tuple[Netns, Netns], spec: SetText, said: str
) -> None:
    netns, _ = two
    error = ipset_netlink.create_sets(InNetns(netns), [spec])
    assert said in error
    assert "npc-t-bad" not in netns.run("ipset", "list", "-n").stdout


class CutOff(InNetns):
    """The real kernel until the ``calls``-th netlink exchange, which fails (a socket error)."""

    def __init__(self, netns: Netns, calls: int) -> None:
        super().__init__(netns)
        self.calls = calls
        self.destroyed: list[str] = []

    def __call__(self, argv: Sequence[str], stdin: str = "") -> Ran:
        if list(argv) == ["ipset", "restore"]:
            self.destroyed += re.findall(r"^destroy (\S+)$", stdin, re.M)
        return super().__call__(argv, stdin)

    def netfilter(self, batch: bytes, replies: int, answers: list[bytes] | None = None) -> list[int]:
        self.calls -= 1
        if self.calls == 0:
            raise OSError(errno.ENOBUFS, os.strerror(errno.ENOBUFS))
        return super().netfilter(batch, replies, answers)


def test_a_load_whose_set_creation_fails_midway_leaves_nothing_of_npc(
    two: tuple[Netns, Netns], monkeypatch: pytest.MonkeyPatch
) -> None:
    netns, _ = two
    monkeypatch.setattr(ipset_netlink, "SEND_MESSAGES", 2)  # many exchanges: fail after some sets exist
    compiled = compile_policies(policy("a"), policy("b", 5432, "cache"))
    before = netns.state("legacy")
    run = CutOff(netns, 6)
    with pytest.raises(ApplyError) as info:
        load.apply_iptables(compiled.lowered, compiled.members, Marks(), load._tools("legacy"), run)
    assert info.value.exit_code == 3
    assert "the new sets were refused: netlink to ipset failed" in str(info.value)
    assert "previous state stays in force" in str(info.value)
    assert run.destroyed  # some sets were made before the cut, and only they were destroyed
    assert netns.state("legacy") == before
