"""`npc apply` on a real kernel: ownership, idempotence, atomic failure, flavour choice.

Each test runs in a throw-away network namespace (never the host's); traffic is tested by the
truth-table suite, this file checks what lands in the tables and sets.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from kernel.gone import delete_netns
from kernel.netns import Netns, fresh_netns, listing, policy, two_rules

pytestmark = pytest.mark.kernel


@pytest.fixture
def netns(tmp_path: Path) -> Iterator[Netns]:
    with fresh_netns("npc-apply", tmp_path) as ns:
        yield ns


def our_lines(state: str) -> list[str]:
    return [line for line in state.splitlines() if "NPC-" in line or "npc-" in line]


def test_apply_loads_chains_sets_and_one_jump(netns: Netns) -> None:
    result = netns.npc_apply(policy("a"))
    assert result.returncode == 0, result.stderr
    state = netns.state()
    assert len(re.findall(r"^-A FORWARD .* -j NPC-\w+-FORWARD$", state, re.M)) == 2  # v4 and v6
    # all of it in table mangle, where the group codes are written: one commit replaces both
    assert all(
        "NPC-" not in netns.run(tool, "-t", "filter").stdout for tool in ("iptables-save", "ip6tables-save")
    )
    # the group dispatch: isolated pods' addresses carry their namespace group into the mark
    assert re.search(r"^create npc-\w+-m4-\w+ hash:ip .* skbinfo", state, re.M)
    # (the ingress mask 0xf00003ff and the pending bit 0x1000000, which the lookup sets: ``Marks``)
    assert re.search(r"^add npc-\w+-m4-\w+ 10\.9\.0\.1 skbmark 0x1[0-9a-f]{6}/0xf10003ff$", state, re.M)
    assert re.search(r"^add npc-\S+ 10\.9\.0\.1$", state, re.M)
    assert re.search(r"^add npc-\S+ fd09::1$", state, re.M)
    assert re.search(r"^add npc-\S+ 10\.9\.0\.2$", state, re.M)


def test_apply_twice_changes_nothing(netns: Netns) -> None:
    assert netns.npc_apply(policy("a")).returncode == 0
    first = netns.state()
    second_run = netns.npc_apply(policy("a"))
    assert second_run.returncode == 0, second_run.stderr
    assert netns.state() == first


def test_an_earlier_npcs_jumps_and_chains_are_replaced_by_the_next_apply(netns: Netns) -> None:
    """Two earlier npcs: one without the conntrack match in its FORWARD jump (replies entered
    its policy chains), and one that wrote the group codes in a mangle chain of their own
    (``MARK``) and decided in table filter. Left beside or instead of this npc's objects, the
    next apply deletes theirs and puts its own in; `npc reset` removes either."""
    assert netns.npc_apply(policy("a")).returncode == 0
    first = netns.state()
    new = " -m conntrack ! --ctstate RELATED,ESTABLISHED"
    jumps = re.findall(rf"^-A (FORWARD{new} -m comment .* -j (NPC-\w+)-FORWARD)$", first, re.M)
    assert len(jumps) == 2, first  # mangle's, IPv4 and IPv6
    own, prefix = jumps[0]

    def leave_earlier(tool: str) -> None:
        netns.run(tool, "-t", "mangle", "-I", "FORWARD", "1", *shlex.split(own.replace(new, "", 1))[1:])
        netns.run(tool, "-t", "mangle", "-N", f"{prefix}-MARK")
        netns.run(tool, "-t", "mangle", "-A", f"{prefix}-MARK", "-j", "MARK", "--set-xmark", "0x1/0xf00003ff")
        netns.run(
            tool, "-t", "mangle", "-I", "FORWARD", "1", *shlex.split(own.replace("-FORWARD", "-MARK"))[1:]
        )
        netns.run(tool, "-t", "filter", "-N", f"{prefix}-FORWARD")
        netns.run(tool, "-t", "filter", "-A", f"{prefix}-FORWARD", "-j", "DROP")
        netns.run(tool, "-t", "filter", "-I", "FORWARD", "1", *shlex.split(own)[1:])

    leave_earlier("iptables")
    netns.run("iptables", "-t", "mangle", "-D", *shlex.split(own))  # instead of this npc's
    leave_earlier("ip6tables")  # beside it
    older = netns.state()
    assert len(re.findall(r"^-A FORWARD .*-j NPC-\w+-MARK$", older, re.M)) == 2
    assert len(re.findall(r"^-A FORWARD -m comment --comment .* -j NPC-", older, re.M)) == 2
    again = netns.npc_apply(policy("a"))
    assert again.returncode == 0, again.stderr
    assert netns.state() == first
    leave_earlier("iptables")
    reset = netns.run(sys.executable, "-m", "npc", "reset", "--all", check=False)
    assert reset.returncode == 0, reset.stderr
    assert not re.search(r"NPC-|npc-", netns.state()), netns.state()


def test_foreign_rules_and_sets_survive_byte_for_byte(netns: Netns) -> None:
    netns.run("ipset", "create", "foreign", "hash:ip")
    netns.run("ipset", "add", "foreign", "192.0.2.7")
    netns.run("iptables", "-N", "FOREIGN")
    netns.run("iptables", "-A", "FOREIGN", "-s", "192.0.2.0/24", "-j", "DROP")
    netns.run("iptables", "-A", "FORWARD", "-m", "set", "--match-set", "foreign", "src", "-j", "FOREIGN")
    netns.run("ip6tables", "-A", "FORWARD", "-s", "2001:db8::/32", "-j", "ACCEPT")
    netns.run(
        "iptables",
        "-t",
        "mangle",
        "-A",
        "FORWARD",
        "-s",
        "192.0.2.0/24",
        "-j",
        "MARK",
        "--set-mark",
        "0x4000",
    )
    before = [line for line in netns.state().splitlines() if line not in our_lines(netns.state())]
    for policies in ([policy("a")], [policy("b", "redis"), policy("c", 80)], []):
        result = netns.npc_apply(*policies)
        assert result.returncode == 0, result.stderr
        after = netns.state()
        assert [line for line in after.splitlines() if line not in our_lines(after)] == before


def test_changed_policies_leave_no_stale_chains_or_sets(netns: Netns) -> None:
    assert netns.npc_apply(policy("a"), policy("b", 80)).returncode == 0
    assert netns.npc_apply(policy("c", 443, "frontend")).returncode == 0
    with_history = netns.state()
    delete_netns(netns.name)
    subprocess.run(["ip", "netns", "add", netns.name], check=True)
    assert netns.npc_apply(policy("c", 443, "frontend")).returncode == 0
    assert netns.state() == with_history


def test_lists_of_sets_are_made_after_and_removed_before_their_members(netns: Netns) -> None:
    """A list holds its member sets: the kernel refuses to destroy a held set, and to fill a list
    with a set that does not exist yet. A change of lists leaves what a fresh apply makes; a
    reset leaves nothing of npc's."""
    assert netns.npc_apply(listing("l", ("frontend", "db", "cache"))).returncode == 0
    first = netns.state()
    assert re.search(r"^create npc-\w+-l4-\w+ list:set size 8$", first, re.M), first
    assert len(re.findall(r"^add npc-\w+-l4-\w+ npc-\w+-s4-\w+$", first, re.M)) == 3
    assert re.search(r"^-A NPC-\S+ .*--match-set npc-\w+-l4-\w+ src ", first, re.M)  # a dispatch rule
    # db and cache: stale, and held by the old list until it goes
    changed = netns.npc_apply(listing("l", ("frontend", "queue", "web")))
    assert changed.returncode == 0, changed.stderr
    with_history = netns.state()
    assert "warning" not in changed.stderr.lower(), changed.stderr
    delete_netns(netns.name)
    subprocess.run(["ip", "netns", "add", netns.name], check=True)
    assert netns.npc_apply(listing("l", ("frontend", "queue", "web"))).returncode == 0
    assert netns.state() == with_history
    reset = netns.run(sys.executable, "-m", "npc", "reset", "--all", check=False)
    assert reset.returncode == 0, reset.stderr
    assert our_lines(netns.state()) == []


def test_kernel_rejection_keeps_previous_state_and_exits_3(netns: Netns) -> None:
    assert netns.npc_apply(two_rules(policy("a"))).returncode == 0
    previous = netns.state()
    policy_chain = re.search(r"^:(NPC-\w+-P-\w+)", netns.run("ip6tables-save", "-t", "mangle").stdout, re.M)
    assert policy_chain
    # Another tool jumps into one of npc's IPv6 chains: deleting that chain must fail in the kernel,
    # after IPv4 was already replaced; npc must put IPv4 back and leave the sets as they were.
    netns.run("ip6tables", "-t", "mangle", "-A", "INPUT", "-j", policy_chain.group(1))
    previous = netns.state()
    result = netns.npc_apply(policy("z", 80, "frontend"))  # other groups: mangle's map set changes too
    assert result.returncode == 3, result.stderr
    assert "rejected" in result.stderr
    assert "Traceback" not in result.stderr
    assert netns.state() == previous


def test_missing_ipset_binary_is_a_clear_error(netns: Netns, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("iptables", "iptables-save", "iptables-restore", "ip6tables-save", "ip6tables-restore"):
        found = shutil.which(tool)
        assert found
        (bin_dir / tool).symlink_to(found)
    result = netns.npc_apply(policy("a"), path=str(bin_dir))
    assert result.returncode == 3
    assert "ipset not found" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("flavour", ["legacy", "nft"])
def test_flavour_follows_existing_rules(netns: Netns, flavour: str) -> None:
    if not shutil.which(f"iptables-{flavour}-restore"):
        pytest.skip(f"iptables-{flavour} not installed")
    netns.run(f"iptables-{flavour}", "-A", "INPUT", "-s", "192.0.2.1", "-j", "ACCEPT")
    result = netns.npc_apply(policy("a"))
    assert result.returncode == 0, result.stderr
    assert f"({flavour})" in result.stderr
    assert "NPC-" in netns.run(f"iptables-{flavour}-save", "-t", "mangle").stdout


def test_forced_flavour(netns: Netns) -> None:
    if not shutil.which("iptables-legacy-restore"):
        pytest.skip("iptables-legacy not installed")
    result = netns.npc_apply(policy("a"), extra=("--iptables", "legacy"))
    assert result.returncode == 0, result.stderr
    assert "NPC-" in netns.run("iptables-legacy-save", "-t", "mangle").stdout
    assert "NPC-" not in netns.run("iptables-nft-save", "-t", "mangle").stdout


def _v4(state: str) -> list[str]:
    """npc's IPv4 lines of ``Netns.state``: its iptables chains, jumps and rules (before
    ip6tables' tables), and its IPv4 sets (after the last table)."""
    ip6 = state.index("*mangle", state.index("*mangle") + 1)
    sets = our_lines(state[state.rindex("COMMIT") :])
    return our_lines(state[:ip6]) + [s for s in sets if not re.match(r"(create|add) npc-\w+-\w6-", s)]


def test_an_ipv4_network_loads_nothing_of_ipv6_and_clears_what_a_dual_stack_load_left(netns: Netns) -> None:
    """``--ip-families IPv4``: the same IPv4 chains, rules and sets as a dual-stack load (so the
    truth tables hold for IPv4), no ip6tables chain, jump or IPv6 set; narrowing a dual-stack
    load removes IPv6's, widening brings them back, IPv6 alone leaves nothing of IPv4; others'
    IPv6 rules stay."""
    netns.run("ip6tables", "-A", "FORWARD", "-s", "2001:db8::/32", "-j", "ACCEPT")
    foreign = netns.run("ip6tables-save", "-t", "filter").stdout
    assert netns.npc_apply(policy("a"), policy("b", "redis")).returncode == 0
    dual = netns.state()
    assert "NPC-" in netns.run("ip6tables-save").stdout
    narrowed = netns.npc_apply(policy("a"), policy("b", "redis"), extra=("--ip-families", "IPv4"))
    assert narrowed.returncode == 0, narrowed.stderr
    assert "pods have IPv6 addresses, which npc does not police (--ip-families IPv4)" in narrowed.stderr
    v4 = netns.state()
    assert _v4(v4) == _v4(dual)
    assert any(line.startswith("-A NPC-") for line in _v4(dual)) and "add npc-" in "\n".join(_v4(dual))
    assert "NPC-" not in netns.run("ip6tables-save").stdout
    assert not re.search(r"inet6|^add npc-\S+ fd09::", v4, re.M)
    strip = re.compile(r"^#.*\n|\[\d+:\d+\]", re.M)
    assert strip.sub("", netns.run("ip6tables-save", "-t", "filter").stdout) == strip.sub("", foreign)
    assert netns.npc_apply(policy("a"), policy("b", "redis")).returncode == 0
    assert netns.state() == dual
    v6 = netns.npc_apply(policy("a"), policy("b", "redis"), extra=("--ip-families", "IPv6"))
    assert v6.returncode == 0, v6.stderr
    assert "pods have IPv4 addresses, which npc does not police (--ip-families IPv6)" in v6.stderr
    assert "NPC-" not in netns.run("iptables-save").stdout and "NPC-" in netns.run("ip6tables-save").stdout
    assert not re.search(r"family inet |^add npc-\S+ 10\.9\.", netns.state(), re.M)


@pytest.mark.parametrize(("router", "other", "verb"), [("legacy", "nft", "-j"), ("nft", "legacy", "-g")])
def test_weave_loads_into_the_flavour_whose_rules_jump_to_weave_npc(
    netns: Netns, router: str, other: str, verb: str
) -> None:
    """By rule counts, another tool's rules in the other flavour won: WEAVE-NPC was filled where
    no packet met it, and the router's drop after its jump took every connection into a pod."""
    for tool in (router, other):
        if not shutil.which(f"iptables-{tool}-restore"):
            pytest.skip(f"iptables-{tool} not installed")
    for chain in ("WEAVE-NPC", "WEAVE-NPC-EGRESS"):
        netns.run(f"iptables-{router}", "-N", chain)
    netns.run(f"iptables-{router}", "-A", "FORWARD", "-o", "weave", verb, "WEAVE-NPC")  # -g: warned "nothing"
    netns.run(f"iptables-{router}", "-A", "FORWARD", "-i", "weave", "-j", "WEAVE-NPC-EGRESS")
    for i in range(7):
        netns.run(f"iptables-{other}", "-A", "OUTPUT", "-d", f"192.0.2.{i}", "-j", "RETURN")
    result = netns.npc_apply(policy("a"), extra=("--backend", "weave"))
    assert result.returncode == 0, result.stderr
    assert f"weave ({router})" in result.stderr and "nothing jumps to" not in result.stderr
    assert "-A WEAVE-NPC " in netns.run(f"iptables-{router}-save", "-t", "filter").stdout
    assert "WEAVE-NPC-DEFAULT" not in netns.run(f"iptables-{other}-save", "-t", "filter").stdout
