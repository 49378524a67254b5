"""`npc apply --backend nftables` on a real kernel: one table per network, atomic, owns nothing else.

Each test runs in a throw-away network namespace (never the host's); traffic is tested by the
truth-table suite (``test_kernel_cases.py`` runs every case on both backends), this file checks
what lands in the kernel's ruleset.
"""

from __future__ import annotations

import itertools
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from kernel.gone import delete_netns
from kernel.netns import KERNEL_REJECTS, InNetns, Netns, compile_policies, fresh_netns, policy, rejecting_nft
from npc.backends.base import Options, Ran
from npc.backends.nftables import NftablesBackend
from npc.backends.nftables.load import load_new_table
from npc.backends.nftables.render import FIRST_LOAD, HOOK, build, render
from npc.errors import ApplyError
from npc.lower import network_tag

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(
        not shutil.which("nft"), reason="nft not installed (Debian: apt-get install nftables)"
    ),
]

NFT = ("--backend", "nftables")
BLUE = f"npc-{network_tag('blue')}"
BLUE_ARGS = (*NFT, "--network", "blue", "--ip-source", "multus:default/blue")
FOREIGN = """table inet foreign {
    set s { type ipv4_addr; elements = { 192.0.2.7 }; }
    chain c { type filter hook forward priority 10; ip saddr @s drop; }
}
"""


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Netns]:
    with fresh_netns("npc-nft", tmp_path) as ns:
        yield ns


def ruleset(ns: Netns) -> str:
    return ns.run("nft", "list", "ruleset").stdout


def table(ns: Netns, name: str = "npc") -> str:
    return ns.run("nft", "list", "table", "inet", name).stdout


def drop_tables(ns: Netns, name: str = "npc") -> None:
    ns.run("nft", "delete", "table", "inet", name)


def without_tables(text: str, *names: str) -> str:
    """The listing with npc's own ``table inet NAME { ... }`` blocks cut out."""
    for name in names:
        text = re.sub(rf"^table inet {re.escape(name)} \{{\n.*?^\}}\n", "", text, flags=re.M | re.S)
    return text


def test_apply_creates_one_inet_table_and_nothing_else(node: Netns) -> None:
    before = ruleset(node)
    result = node.npc_apply(policy("a"), policy("b", "redis"), extra=NFT)
    assert result.returncode == 0, result.stderr
    assert "with nftables: table inet npc," in result.stderr
    assert node.run("nft", "list", "tables").stdout.split("\n") == ["table inet npc", ""]
    listing = table(node)
    assert listing.count("hook forward priority filter; policy accept;") == 1  # one base chain
    assert "meta nfproto ipv4 goto source-4" in listing and "meta nfproto ipv6 goto source-6" in listing
    for address in ("10.9.0.1", "10.9.0.2", "fd09::1", "fd09::2"):
        assert address in listing
    assert "10.9.0.1 . tcp . 6379" in listing  # the named port
    assert without_tables(ruleset(node), "npc") == before


def test_apply_twice_changes_nothing(node: Netns) -> None:
    assert node.npc_apply(policy("a"), extra=NFT).returncode == 0
    first = ruleset(node)
    again = node.npc_apply(policy("a"), extra=NFT)
    assert again.returncode == 0, again.stderr
    assert ruleset(node) == first


def test_other_tables_survive_byte_for_byte(node: Netns) -> None:
    node.run("iptables-nft", "-A", "FORWARD", "-s", "192.0.2.0/24", "-j", "DROP")
    node.run("ip6tables-nft", "-A", "FORWARD", "-s", "2001:db8::/32", "-j", "ACCEPT")
    foreign_file = node.tmp / "foreign.nft"
    foreign_file.write_text(FOREIGN)
    node.run("nft", "-f", str(foreign_file))
    legacy = shutil.which("iptables-legacy")
    if legacy:
        node.run("iptables-legacy", "-A", "FORWARD", "-d", "192.0.2.9", "-j", "DROP")
    foreign = ruleset(node)
    legacy_before = node.run("iptables-legacy-save").stdout if legacy else ""
    for policies in ([policy("a")], [policy("b", "redis"), policy("c", 80)], []):
        result = node.npc_apply(*policies, extra=NFT)
        assert result.returncode == 0, result.stderr
        assert without_tables(ruleset(node), "npc") == foreign
    if legacy:
        strip = re.compile(r"^#.*\n|\[\d+:\d+\]", re.M)  # timestamps and counters
        assert strip.sub("", node.run("iptables-legacy-save").stdout) == strip.sub("", legacy_before)


def test_changed_policies_leave_nothing_stale(node: Netns) -> None:
    assert node.npc_apply(policy("a"), policy("b", 80), extra=NFT).returncode == 0
    assert node.npc_apply(policy("c", 443, "frontend"), extra=NFT).returncode == 0
    with_history = ruleset(node)
    delete_netns(node.name)
    subprocess.run(["ip", "netns", "add", node.name], check=True)
    assert node.npc_apply(policy("c", 443, "frontend"), extra=NFT).returncode == 0
    assert ruleset(node) == with_history


def test_kernel_rejection_keeps_the_previous_table_and_exits_3(node: Netns, tmp_path: Path) -> None:
    assert node.npc_apply(policy("a"), extra=NFT).returncode == 0
    previous = ruleset(node)
    result = node.npc_apply(policy("z", 80), policy("y", "redis"), extra=NFT, path=rejecting_nft(tmp_path))
    assert result.returncode == 3, result.stderr
    assert "nft rejected the new ruleset" in result.stderr
    assert "Traceback" not in result.stderr
    assert ruleset(node) == previous


def test_kernel_rejection_of_a_first_apply_leaves_no_table(node: Netns, tmp_path: Path) -> None:
    before = ruleset(node)
    result = node.npc_apply(policy("a"), extra=NFT, path=rejecting_nft(tmp_path))
    assert result.returncode == 3, result.stderr
    assert ruleset(node) == before


def test_missing_nft_binary_is_a_clear_error(node: Netns, tmp_path: Path) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    result = node.npc_apply(policy("a"), extra=NFT, path=str(empty))
    assert result.returncode == 3, result.stderr
    assert "nft not found" in result.stderr
    assert "Traceback" not in result.stderr


def test_networks_live_side_by_side(node: Netns) -> None:
    assert node.npc_apply(policy("a"), extra=NFT).returncode == 0
    blue = node.npc_apply(policy("a"), extra=BLUE_ARGS)
    assert blue.returncode == 0, blue.stderr
    tables = node.run("nft", "list", "tables").stdout.split("\n")
    assert sorted(t for t in tables if t) == ["table inet npc", f"table inet {BLUE}"]
    blue_table = table(node, BLUE)
    assert node.npc_apply(policy("b", 80), policy("c", "redis"), extra=NFT).returncode == 0
    assert table(node, BLUE) == blue_table
    default_table = table(node)
    assert node.npc_apply(extra=BLUE_ARGS).returncode == 0
    assert table(node) == default_table


LEGACY = """table ip npc {
    set old { type ipv4_addr; elements = { 192.0.2.7 }; }
    chain forward { type filter hook forward priority filter; ip saddr @old drop; }
}
table ip6 npc {
    chain forward { type filter hook forward priority filter; ip6 saddr 2001:db8::7 drop; }
}
"""
# Not npc's, though named alike: no load or reset may touch them.
LOOKALIKES = """table ip npc-foo {
    chain c { type filter hook forward priority 20; ip saddr 192.0.2.8 drop; }
}
table inet npcx {
    set s { type ipv4_addr; elements = { 192.0.2.9 }; }
}
table ip6 npc-abcdef {
}
"""


def test_the_tables_per_family_of_an_earlier_npc_go_in_the_load_that_replaces_them(node: Netns) -> None:
    """An earlier npc loaded an ``ip`` and an ``ip6`` table per network: the load of the one
    ``inet`` table deletes them in the same transaction (no moment with both, or neither); another
    network's stay; a reset removes both layouts; every other table (iptables-nft's, and
    lookalike names) stays byte for byte throughout."""
    node.run("iptables-nft", "-A", "FORWARD", "-s", "192.0.2.0/24", "-j", "DROP")
    for text, name in ((FOREIGN, "foreign"), (LOOKALIKES, "lookalikes")):
        (node.tmp / f"{name}.nft").write_text(text)
        node.run("nft", "-f", str(node.tmp / f"{name}.nft"))
    kept = ruleset(node)
    (node.tmp / "legacy.nft").write_text(LEGACY)
    node.run("nft", "-f", str(node.tmp / "legacy.nft"))
    blue_legacy = LEGACY.replace("table ip npc {", f"table ip {BLUE} {{").split("table ip6")[0]
    (node.tmp / "blue.nft").write_text(blue_legacy)
    node.run("nft", "-f", str(node.tmp / "blue.nft"))
    blue = node.run("nft", "list", "table", "ip", BLUE).stdout
    result = node.npc_apply(policy("a"), extra=NFT)
    assert result.returncode == 0, result.stderr
    listed = node.run("nft", "list", "tables").stdout.splitlines()
    others = [
        "table ip filter",
        "table inet foreign",
        "table ip npc-foo",
        "table inet npcx",
        "table ip6 npc-abcdef",
    ]
    assert sorted(listed) == sorted([*others, "table inet npc", f"table ip {BLUE}"])
    assert node.run("nft", "list", "table", "ip", BLUE).stdout == blue  # another network's
    blue_cut = re.sub(rf"^table ip {BLUE} \{{\n.*?^\}}\n", "", ruleset(node), flags=re.M | re.S)
    assert without_tables(blue_cut, "npc") == kept
    assert "192.0.2.7" not in table(node) and "2001:db8::7" not in table(node)
    again = ruleset(node)
    assert node.npc_apply(policy("a"), extra=NFT).returncode == 0
    assert ruleset(node) == again  # applying twice changes nothing
    node.run("nft", "-f", str(node.tmp / "legacy.nft"))  # both layouts at once
    reset = node.run(sys.executable, "-m", "npc", "reset", "--backend", "nftables", "--all", check=False)
    assert reset.returncode == 0, reset.stderr
    for gone in ("inet npc", "ip npc", "ip6 npc", f"ip {BLUE}"):
        assert f"table {gone}" in reset.stderr or f"table {gone}" in reset.stdout, reset
    assert ruleset(node) == kept


def test_a_reset_of_one_network_removes_its_tables_of_both_layouts_only(node: Netns) -> None:
    (node.tmp / "lookalikes.nft").write_text(LOOKALIKES)
    node.run("nft", "-f", str(node.tmp / "lookalikes.nft"))
    assert node.npc_apply(policy("a"), extra=BLUE_ARGS).returncode == 0
    kept = ruleset(node)
    assert node.npc_apply(policy("a"), extra=NFT).returncode == 0
    (node.tmp / "legacy.nft").write_text(LEGACY)
    node.run("nft", "-f", str(node.tmp / "legacy.nft"))
    reset = node.run(sys.executable, "-m", "npc", "reset", "--backend", "nftables", check=False)
    assert reset.returncode == 0, reset.stderr
    assert ruleset(node) == kept


def test_iptables_flavour_option_is_a_usage_error(node: Netns) -> None:
    result = node.npc_apply(policy("a"), extra=(*NFT, "--iptables", "nft"))
    assert result.returncode == 2, result.stderr
    assert "--iptables applies to the iptables-based backends (iptables, weave) only" in result.stderr
    assert ruleset(node) == ""


# --- a first load, in parts ------------------------------------------------------------------------


class InOrder(InNetns):
    """The parts handed to ``together`` one after the other in ``order`` (indices of its calls),
    so a test chooses which the kernel commits first; ``refuse``: the name of the part (``sets``,
    ``policies``, ``dispatch``, ``hook``) whose input ends with a statement the kernel refuses.
    The table as it stands when the hook is asked for is kept in ``unhooked``."""

    def __init__(self, netns: Netns, order: Sequence[int] = (0, 1, 2), refuse: str = "") -> None:
        super().__init__(netns)
        self.order, self.refused, self.unhooked = order, refuse, ""
        self.together_parts: list[str] = []  # the parts handed to ``together``, as named

    def together(self, calls: Sequence[tuple[Sequence[str], str]]) -> list[Ran]:
        self.together_parts += [_part(stdin) for _, stdin in calls]
        done = {i: self(*calls[i]) for i in self.order if i < len(calls)}
        return [done[i] for i in range(len(calls))]

    def __call__(self, argv: Sequence[str], stdin: str = "") -> Ran:
        if "| hook: one part of a first load" in stdin:
            self.unhooked = table(self.netns)
        if self.refused and f"| {self.refused}: one part of a first load" in stdin:
            stdin += KERNEL_REJECTS
        return super().__call__(argv, stdin)


def _part(text: str) -> str:
    found = re.search(r"\| (\w+): one part of a first load", text)
    return found.group(1) if found else ""


PARTS = (policy("a"), policy("b", "redis"), policy("c", 443, "frontend"))


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_a_first_load_in_parts_lists_as_one_whole_load_in_any_order(
    node: Netns, order: Sequence[int]
) -> None:
    """Whichever part the kernel commits first, the table is the one a single ``nft -f`` of the
    whole file makes, listed byte for byte alike; and it had no hook until its last part."""
    compiled = compile_policies(*PARTS)
    ruleset = build(compiled.lowered, compiled.members)
    runner = InOrder(node, order)
    load_new_table("npc", [render(ruleset, p) for p in FIRST_LOAD], render(ruleset, HOOK), runner)
    in_parts = table(node)
    assert "hook forward" in in_parts and "hook" not in runner.unhooked
    assert "10.9.0.1 . tcp . 6379" in runner.unhooked and "vmap @ingress-4-1" in runner.unhooked
    drop_tables(node)
    assert InNetns(node)(["nft", "-f", "-"], render(ruleset)).returncode == 0
    assert table(node) == in_parts


def test_apply_starts_the_policy_chains_first_and_lists_as_one_whole_load(node: Netns) -> None:
    """``load``'s first load: the policy chains' part starts while the elements are worked out,
    the other two after; the same table as one ``nft -f``."""
    compiled = compile_policies(*PARTS)
    runner = InOrder(node)
    NftablesBackend().load(compiled, Options(), runner)
    assert runner.together_parts == ["sets", "dispatch"]  # the policy chains' part went before
    in_parts = table(node)
    assert "hook forward" in in_parts and "hook" not in runner.unhooked
    drop_tables(node)
    assert (
        InNetns(node)(["nft", "-f", "-"], render(build(compiled.lowered, compiled.members))).returncode == 0
    )
    assert table(node) == in_parts


@pytest.mark.parametrize("refused", ["sets", "policies", "dispatch", "hook"])
def test_a_refused_part_of_a_first_load_leaves_no_table(node: Netns, refused: str) -> None:
    before = ruleset(node)
    with pytest.raises(ApplyError, match="the network had no table of npc's, and has none"):
        NftablesBackend().load(compile_policies(*PARTS), Options(), InOrder(node, (1, 0), refused))
    assert ruleset(node) == before


def test_a_table_in_force_is_replaced_whole(node: Netns) -> None:
    """Only a first load goes in parts: a table in force is replaced in one transaction."""
    assert node.npc_apply(policy("a"), extra=NFT).returncode == 0
    runner = InOrder(node)
    NftablesBackend().load(compile_policies(*PARTS), Options(), runner)
    assert runner.unhooked == "" and "default/c" in table(node)


class FailsTogether(InOrder):
    """Its ``together`` loads the first part it is given, then fails as a runner can."""

    def together(self, calls: Sequence[tuple[Sequence[str], str]]) -> list[Ran]:
        self(*calls[0])
        raise OSError("the runner failed")


def test_a_runner_failing_in_a_first_load_leaves_no_table(node: Netns) -> None:
    """Parts already committed (the policy chains' and one more) go again."""
    before = ruleset(node)
    with pytest.raises(OSError, match="the runner failed"):
        NftablesBackend().load(compile_policies(*PARTS), Options(), FailsTogether(node))
    assert ruleset(node) == before


def test_an_ipv4_network_loads_no_ipv6_part(node: Netns) -> None:
    """``--ip-families IPv4``: the ``inet`` table holds IPv4's chains, sets and maps only, each
    listed as a dual-stack load lists it, and its base chain sends IPv4 alone on (IPv6 passes);
    narrowing and widening each replace the table in one load, and others' tables stay byte for
    byte."""
    foreign = node.tmp / "foreign.nft"
    foreign.write_text(FOREIGN)
    node.run("nft", "-f", str(foreign))
    kept = ruleset(node)
    assert node.npc_apply(policy("a"), policy("b", "redis"), extra=NFT).returncode == 0
    dual = ruleset(node)
    dual_lines = set(table(node).splitlines())
    narrowed = node.npc_apply(policy("a"), policy("b", "redis"), extra=(*NFT, "--ip-families", "IPv4"))
    assert narrowed.returncode == 0, narrowed.stderr
    assert "pods have IPv6 addresses, which npc does not police" in narrowed.stderr
    assert "with nftables: table inet npc," in narrowed.stderr
    assert sorted(node.run("nft", "list", "tables").stdout.splitlines()) == [
        "table inet foreign",
        "table inet npc",
    ]
    ipv4 = table(node)
    assert "meta nfproto ipv4 goto source-4" in ipv4
    assert not re.search(r"ipv6|ip6 |-6\b|fd09::|\b[spn]6-", ipv4), ipv4
    missing = [line for line in ipv4.splitlines() if line not in dual_lines]
    assert not missing, missing  # IPv4's part as a dual-stack load lists it
    assert without_tables(ruleset(node), "npc") == kept
    assert node.npc_apply(policy("a"), policy("b", "redis"), extra=NFT).returncode == 0
    assert ruleset(node) == dual
