"""`npc apply` next to others and across faults, on a real kernel in a throw-away namespace.

A foreign jump into npc's chain, concurrent applies, a wrong-typed set of npc's name, sets that
merely look like npc's temporaries, a switch of backend, ``npc reset``, and applies killed at
random moments: each must end in a state npc promises (exit 0 and the new state, or exit 3 and
the previous one), and the next apply must always repair.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import attrs
import pytest
from kernel.case import write_inputs as write_case_inputs
from kernel.churn import make_case, network_policy
from kernel.cluster import Cluster
from kernel.netns import INVENTORY, Netns, fresh_netns, policy
from npc.backends.base import TIMED_OUT, Options, Ran, SubprocessRunner
from npc.backends.iptables import IptablesBackend
from npc.networks import network_spec
from npc.pipeline import build, read_sources

pytestmark = pytest.mark.kernel


@pytest.fixture
def netns(tmp_path: Path) -> Iterator[Netns]:
    with fresh_netns("npc-harden", tmp_path) as ns:
        yield ns


def write_inputs(folder: Path, *policies: dict[str, object]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, doc in enumerate(policies):
        (folder / f"{i}.json").write_text(json.dumps(doc))
    (folder.parent / "inventory.json").write_text(json.dumps(INVENTORY))
    return folder


def npc(netns: Netns, *args: str) -> subprocess.CompletedProcess[str]:
    done = netns.run(sys.executable, "-m", "npc", *args, check=False)
    assert "Traceback" not in done.stderr, done.stderr
    return done


def start(netns: Netns, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["ip", "netns", "exec", netns.name, sys.executable, "-m", "npc", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def state(netns: Netns, nft: bool = False) -> list[str]:
    """The namespace's tables and sets, as sorted lines (a hash set lists its members in any order)."""
    text = netns.state() + "\n" + (netns.run("nft", "list", "ruleset").stdout if nft else "")
    return sorted(text.splitlines())


def sets(netns: Netns) -> list[str]:
    return netns.run("ipset", "list", "-n").stdout.split()


def forward_chain(netns: Netns) -> str:
    found = re.search(r"^:(NPC-\w+-FORWARD)", netns.run("iptables-save", "-t", "mangle").stdout, re.M)
    assert found
    return found.group(1)


def test_a_foreign_jump_to_npcs_chain_is_not_npcs(netns: Netns) -> None:
    assert netns.npc_apply(policy("a")).returncode == 0
    chain = forward_chain(netns)
    netns.run("iptables", "-t", "mangle", "-A", "FORWARD", "-i", "eth9", "-j", chain)
    result = netns.npc_apply(policy("a"))
    assert result.returncode == 0, result.stderr
    forward = [
        line
        for line in netns.run("iptables-save", "-t", "mangle").stdout.splitlines()
        if "-A FORWARD" in line
    ]
    assert f"-A FORWARD -i eth9 -j {chain}" in forward  # theirs stays
    assert (
        sum(1 for line in forward if line.endswith(f"-j {chain}") and "npc network" in line) == 1
    )  # ours too


def test_a_held_lock_makes_apply_wait_then_give_up_cleanly(netns: Netns) -> None:
    holder = subprocess.Popen(
        [
            "ip", "netns", "exec", netns.name, sys.executable, "-c",
            "import sys, time; from npc.lock import netns_lock\n"
            "with netns_lock():\n    print('held', flush=True); time.sleep(30)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        result = netns.npc_apply(policy("a"), extra=("--wait", "1"))
        assert result.returncode == 3, result.stderr
        assert "lock" in result.stderr and "waiting 1 s" in result.stderr
        assert time.monotonic() - started < 20
        assert "NPC-" not in netns.state()
    finally:
        holder.kill()
        holder.wait()
    with fresh_netns("npc-harden-other", netns.tmp) as other:  # another namespace is never blocked
        assert other.npc_apply(policy("a"), extra=("--wait", "0")).returncode == 0


def test_a_tool_outliving_a_killed_npc_holds_the_lock_until_it_ends(netns: Netns) -> None:
    """kill -9 of npc while its ``ipset restore`` runs: the orphan still changes the kernel, so
    the next npc waits for it (a reset beside it failed on sets it was still creating)."""
    started = netns.tmp / "tool-started"
    holder = subprocess.Popen(
        [
            "ip", "netns", "exec", netns.name, sys.executable, "-c",
            "from npc.lock import netns_lock\nfrom npc.backends.base import SubprocessRunner\n"
            f"with netns_lock():\n    SubprocessRunner()(['sh', '-c', 'touch {started}; sleep 4'])",
        ],
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while not started.exists():
            assert time.monotonic() < deadline and holder.poll() is None
            time.sleep(0.02)
    finally:
        holder.kill()
        holder.wait()
    waited = time.monotonic()
    result = netns.npc_apply(policy("a"), extra=("--wait", "0.5"))
    assert result.returncode == 3 and "lock" in result.stderr, result.stderr
    assert "NPC-" not in netns.state()
    result = netns.npc_apply(policy("a"), extra=("--wait", "20"))
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - waited > 2  # it waited for the tool, not for the killed npc


def test_a_stuck_tool_is_killed_and_its_step_fails() -> None:
    """A tool that never ends (stuck on a lock or in the kernel) fails its step like a refusal,
    so the apply puts the previous state back and an agent stays responsive."""
    started = time.monotonic()
    ran = SubprocessRunner(timeout=0.5)(["sh", "-c", "echo partial; exec sleep 30"])
    assert ran.returncode == TIMED_OUT
    assert ran.stderr == "sh did not finish in 0.5 s and was killed"
    assert time.monotonic() - started < 10
    assert SubprocessRunner(timeout=5)(["sh", "-c", "echo done"]) == Ran(0, "done\n", "")


@pytest.mark.skipif(not shutil.which("iptables-legacy-restore"), reason="needs iptables-legacy")
def test_the_xtables_lock_held_past_its_wait_fails_cleanly_not_mixed(netns: Netns) -> None:
    """iptables-legacy waits 30 s for the xtables lock: the Weave check read its failure as "not
    Weave's", each restore and each rollback waited too, and after 150 s npc said the node was in
    a MIXED state (exit 4) though nothing had changed. Now: exit 3 at the first wait, unchanged.
    The lock is a private file bound over /run/xtables.lock in a mount namespace of the test's."""
    assert netns.npc_apply(policy("a"), extra=("--iptables", "legacy")).returncode == 0
    before = (netns.state(), sets(netns))
    folder = write_inputs(netns.tmp / "locked" / "p", policy("b", 80, "frontend"))
    lock = netns.tmp / "xtables.lock"
    lock.touch()
    hold = "import fcntl, time; f = open('/run/xtables.lock'); fcntl.flock(f, fcntl.LOCK_EX); time.sleep(100)"
    script = (
        f'mount --bind {lock} /run/xtables.lock && {{ {sys.executable} -c "{hold}" > /dev/null 2>&1 & }}; '
        f"holder=$!; sleep 0.5; {sys.executable} -m npc apply {folder} --inventory {folder.parent}/inventory.json"
        " --iptables legacy --wait 3; echo rc=$?; kill $holder"
    )
    started = time.monotonic()
    done = netns.run("unshare", "-m", "sh", "-c", script, check=False)
    assert "rc=3" in done.stdout, (done.stdout, done.stderr)
    assert "MIXED" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert time.monotonic() - started < 80, done.stderr
    assert (netns.state(), sets(netns)) == before


def test_stale_sets_go_but_one_another_rule_uses_is_kept_with_a_warning(netns: Netns) -> None:
    assert netns.npc_apply(policy("a")).returncode == 0
    alone = set(sets(netns))
    assert netns.npc_apply(policy("a"), policy("b", 80, "frontend"), policy("c", "redis")).returncode == 0
    stale = sorted(set(sets(netns)) - alone)
    assert len(stale) >= 3, stale
    held = [name for name in stale if re.search(r"-[a-z]4-", name)][-1]  # an IPv4 set, among others
    netns.run("iptables", "-A", "FORWARD", "-m", "set", "--match-set", held, "src", "-j", "ACCEPT")
    result = netns.npc_apply(policy("a"))
    assert result.returncode == 0, result.stderr
    assert f"could not destroy stale set {held} (no npc rule uses it)" in result.stderr
    assert result.stderr.count("could not destroy") == 1
    assert f" updated, {len(stale) - 1} removed" in result.stderr  # the one kept is not counted
    assert set(sets(netns)) == alone | {held}  # the others before and after it went


def test_concurrent_applies_end_in_one_of_the_inputs(netns: Netns) -> None:
    inputs = [
        write_inputs(netns.tmp / "x" / "p", policy("a")),
        write_inputs(netns.tmp / "y" / "p", policy("b", 80, "frontend"), policy("c", "redis")),
    ]
    alone = []
    for folder in inputs:
        assert (
            npc(netns, "apply", str(folder), "--inventory", str(folder.parent / "inventory.json")).returncode
            == 0
        )
        alone.append(state(netns))
    for _ in range(6):
        runs = [
            start(netns, "apply", str(f), "--inventory", str(f.parent / "inventory.json")) for f in inputs
        ]
        for run in runs:
            _, err = run.communicate(timeout=120)
            assert run.returncode == 0, err
        assert state(netns) in alone
        assert not [s for s in sets(netns) if s.startswith("npt-")]


def test_a_wrong_typed_set_of_npcs_name_is_repaired_or_refused(netns: Netns) -> None:
    out = netns.tmp / "out"
    folder = write_inputs(netns.tmp / "p", policy("a"))
    assert (
        npc(
            netns, "compile", str(folder), "--inventory", str(netns.tmp / "inventory.json"), "-o", str(out)
        ).returncode
        == 0
    )
    name = re.search(r"^create (npc-\S+) hash:ip family inet ", (out / "ipsets").read_text(), re.M)
    assert name
    netns.run("ipset", "create", name.group(1), "hash:net", "family", "inet")
    netns.run("ipset", "add", name.group(1), "0.0.0.0/1")
    netns.run("ipset", "add", name.group(1), "128.0.0.0/1")  # would match every address
    result = netns.npc_apply(policy("a"))
    assert result.returncode == 0, result.stderr
    listing = netns.run("ipset", "list", name.group(1)).stdout
    assert "Type: hash:ip" in listing and "128.0.0.0" not in listing
    assert netns.npc_apply(policy("a")).returncode == 0


def test_a_concurrent_ipset_listing_never_leaves_old_members(netns: Netns) -> None:
    """``ipset list`` holds a set for a moment: a swap or destroy then fails with "in use by a kernel
    component" and must be retried, not skipped."""
    lister = subprocess.Popen(
        ["ip", "netns", "exec", netns.name, "sh", "-c", "while :; do ipset list >/dev/null 2>&1; done"]
    )
    try:
        for round_ in range(8):
            selector = "db" if round_ % 2 else "frontend"
            result = netns.npc_apply(policy("a", 6379, selector))
            assert result.returncode in (0, 3), result.stderr
            if result.returncode == 0:
                assert "swap failed" not in result.stderr
    finally:
        lister.kill()
        lister.wait()
    assert netns.npc_apply(policy("a")).returncode == 0
    assert not [s for s in sets(netns) if s.startswith("npt-")]


def test_sets_that_look_like_npcs_temporaries_are_not_touched(netns: Netns) -> None:
    assert netns.npc_apply(policy("a")).returncode == 0
    tag = forward_chain(netns).split("-")[1]
    for name in (f"npt-{tag}-theirs", f"npt-{tag}-s4-0000000000", "npt-other"):
        netns.run("ipset", "create", name, "hash:ip")
    assert netns.npc_apply(policy("b", 80)).returncode == 0
    assert netns.npc_apply(policy("a")).returncode == 0
    assert {f"npt-{tag}-theirs", f"npt-{tag}-s4-0000000000", "npt-other"} <= set(sets(netns))


def test_an_add_to_a_full_set_swaps_in_a_copy_with_room(netns: Netns) -> None:
    """ipset fixes ``maxelem`` at creation: an add past it ("Hash is full") swaps the set for a
    copy of its members with room, under the same name, and the batch goes on; a set that is
    not npc's is not touched."""
    name, theirs = "npc-aaaaa-s4-full", "theirs-full"
    for made in (name, theirs):
        netns.run("ipset", "create", made, "hash:ip", "maxelem", "4")
        netns.run("ipset", "add", made, "10.0.0.1")
    code = f"""
from npc.backends.base import SubprocessRunner
from npc.backends.iptables.load import ipset_lines
lines = [f"add {{s}} 10.0.1.{{i}}\\n" for s in ({name!r}, {theirs!r}) for i in range(1, 11)]
print(ipset_lines(SubprocessRunner(), lines, exist=True))
"""
    done = netns.run(sys.executable, "-c", code)
    assert done.stdout.startswith("(13, ") and "Hash is full" in done.stdout, done.stdout  # 10 + 3 of theirs
    members = netns.run("ipset", "list", name).stdout
    assert "maxelem 65536" in members and members.count("\n10.0.") == 11, members
    assert "maxelem 4 " in netns.run("ipset", "list", theirs).stdout
    assert [s for s in sets(netns) if s.startswith("npt-")] == []
    where = "import os; from npc.lock import record_path; print(os.path.exists(record_path('aaaaa.sets')))"
    assert netns.run(sys.executable, "-c", where).stdout == "False\n"  # the temporary's record gone too


def test_a_set_growing_past_its_room_is_applied(netns: Netns, tmp_path: Path) -> None:
    """A permitting set whose old members all stay (a scale-up) is changed in place: past the
    ``maxelem`` it was created with, apply still succeeds, and the set holds every new member."""
    folder = write_inputs(
        tmp_path / "p",
        network_policy(
            "db",
            {"matchLabels": {"role": "db"}},
            ingress=[{"from": [{"podSelector": {"matchLabels": {"role": "web"}}}]}],
        ),
    )

    def inventory(count: int) -> Path:
        pods = [
            {
                "kind": "Pod",
                "metadata": {"name": f"w{i}", "namespace": "default", "labels": {"role": "web"}},
                "status": {"podIP": f"10.{64 + i // 65536}.{i // 256 % 256}.{i % 256}"},
            }
            for i in range(count)
        ]
        path = tmp_path / f"inventory-{count}.json"
        path.write_text(json.dumps({"kind": "List", "items": [*INVENTORY["items"], *pods]}))
        return path

    for count in (10, 70_000):
        done = npc(netns, "apply", str(folder), "--inventory", str(inventory(count)))
        assert done.returncode == 0, done.stderr
    counts = re.findall(r"Number of entries: (\d+)", netns.run("ipset", "list", "-t").stdout)
    assert max(map(int, counts)) >= 70_000, counts


def test_switching_backend_is_refused_until_reset(netns: Netns) -> None:
    assert netns.npc_apply(policy("a")).returncode == 0
    switched = netns.npc_apply(policy("a"), extra=("--backend", "nftables"))
    assert switched.returncode == 3 and "npc reset" in switched.stderr, switched.stderr
    assert "npc" not in netns.run("nft", "list", "tables").stdout
    reset = npc(netns, "reset", "--backend", "iptables", "--all")
    assert reset.returncode == 0, reset.stderr
    assert "NPC-" not in netns.state() and not [s for s in sets(netns) if s.startswith(("npc-", "npt-"))]
    assert netns.npc_apply(policy("a"), extra=("--backend", "nftables")).returncode == 0
    back = netns.npc_apply(policy("a"))
    assert back.returncode == 3 and "npc reset" in back.stderr
    assert npc(netns, "reset", "--backend", "nftables", "--all").returncode == 0
    assert "npc" not in netns.run("nft", "list", "tables").stdout


def test_a_weave_reset_leaves_the_iptables_backends_network_whole(netns: Netns) -> None:
    """Weave's layout names its chains and sets as npc's own does: its reset of the default
    network took the iptables backend's IPv4 chains, then stopped at the sets the IPv6 rules still
    held (exit 3, one family's rules gone). Now it leaves that network as it is."""
    assert netns.npc_apply(policy("a")).returncode == 0
    before = (netns.state(), sets(netns))
    done = npc(netns, "reset", "--backend", "weave")
    assert done.returncode == 0, done.stderr
    assert "network default is the iptables backend's, left as it is" in done.stderr
    assert (netns.state(), sets(netns)) == before
    chains = sum(netns.run(f"{tool}-save").stdout.count("\n:NPC-") for tool in ("iptables", "ip6tables"))
    ours = [s for s in sets(netns) if s.startswith("npc-")]
    done = npc(netns, "reset", "--backend", "weave", "--all")  # every network: all of npc's
    assert done.returncode == 0, done.stderr
    assert f"removed {chains} chains, {len(ours)} sets" in done.stderr, done.stderr  # it said 0 and 0
    assert "NPC-" not in netns.state() and not [s for s in sets(netns) if s.startswith("npc-")]


@pytest.mark.parametrize("network", ["", "a b"])
def test_reset_of_a_malformed_network_is_a_usage_error_and_removes_nothing(
    netns: Netns, network: str
) -> None:
    """``--network ""`` reset the network named "" with the iptables backend and the primary one
    with Weave's (which reads a network it is not given as the primary)."""
    assert netns.npc_apply(policy("a")).returncode == 0
    before = (netns.state(), sets(netns))
    done = npc(netns, "reset", f"--network={network}")
    assert done.returncode == 2 and "invalid network name" in done.stderr, done.stderr
    assert (netns.state(), sets(netns)) == before


@pytest.mark.parametrize("holder", ["rule", "list"])
def test_reset_refuses_before_removing_anything_when_others_use_npcs_sets(netns: Netns, holder: str) -> None:
    """The kernel refuses to destroy a set in use, and reset learnt it only after npc's chains
    were gone: exit 3 with every rule removed and every set left. Now it finds the user first (a
    rule of another chain, here IPv6's after IPv4's chains would have gone; another tool's
    ``list:set``) and removes nothing."""
    assert netns.npc_apply(policy("a")).returncode == 0
    used = next(s for s in sets(netns) if re.fullmatch(r"npc-\w+-s6-\w+", s))
    if holder == "rule":
        netns.run("ip6tables", "-A", "INPUT", "-m", "set", "--match-set", used, "src", "-j", "ACCEPT")
    else:
        netns.run("ipset", "create", "theirs", "list:set")
        netns.run("ipset", "add", "theirs", used)
    before = (netns.state(), sets(netns))
    done = npc(netns, "reset")
    assert done.returncode == 3, done.stderr
    assert "nothing was removed" in done.stderr and used in done.stderr, done.stderr
    assert ("chain INPUT (table filter" if holder == "rule" else "list:set theirs holds") in done.stderr
    assert (netns.state(), sets(netns)) == before
    if holder == "rule":
        netns.run("ip6tables", "-D", "INPUT", "-m", "set", "--match-set", used, "src", "-j", "ACCEPT")
    else:
        netns.run("ipset", "destroy", "theirs")
    assert npc(netns, "reset").returncode == 0
    assert "NPC-" not in netns.state() and not [s for s in sets(netns) if s.startswith("npc-")]


@pytest.mark.parametrize("backend", ["iptables", "weave", None])
def test_reset_refuses_before_removing_anything_when_a_foreign_rule_jumps_into_npcs_chain(
    netns: Netns, backend: str | None
) -> None:
    """A foreign rule jumping into npc's chain was taken for another layout's hook: the iptables
    backend's reset left the network ("Weave's"), Weave's reset called it the iptables backend's,
    and every backend's reset stopped at the kernel's CHAIN_DEL refusal. Now each names the rule
    and removes nothing (exit 3), and removes all once the rule is gone."""
    assert netns.npc_apply(policy("a")).returncode == 0
    foreign = ("-t", "mangle", "-A", "FORWARD", "-i", "eth9", "-j", forward_chain(netns))
    netns.run("iptables", *foreign)
    before = (netns.state(), sets(netns))
    done = npc(netns, "reset", "--all", *(("--backend", backend) if backend else ()))
    assert done.returncode == 3, done.stderr
    assert "nothing was removed" in done.stderr and "a rule of chain FORWARD (table mangle" in done.stderr
    assert f"jumps to {forward_chain(netns)}" in done.stderr, done.stderr
    assert (netns.state(), sets(netns)) == before
    netns.run("iptables", *foreign[:2], "-D", *foreign[3:])
    assert npc(netns, "reset", "--all").returncode == 0
    assert "NPC-" not in netns.state() and not [s for s in sets(netns) if s.startswith("npc-")]


def test_reset_all_leaves_other_tools_chains_named_like_npcs(netns: Netns) -> None:
    """npc owns ``NPC-<tag>-`` chains: ``reset --all`` took every ``NPC-`` chain for a network's,
    destroyed NPC-FOO, and stopped at a FORWARD jump to another tool's NPC-FORWARD (exit 3)."""
    netns.run("iptables", "-N", "NPC-FOO")
    netns.run("iptables", "-A", "NPC-FOO", "-s", "10.99.0.0/16", "-j", "ACCEPT")
    netns.run("iptables", "-t", "mangle", "-N", "NPC-KUBE-SERVICES")
    netns.run("iptables", "-N", "NPC-FORWARD")
    netns.run("iptables", "-A", "FORWARD", "-j", "NPC-FORWARD")
    theirs = [
        line
        for line in netns.state().splitlines()
        if "NPC-FOO" in line or "NPC-KUBE" in line or "NPC-FORWARD" in line
    ]
    assert len(theirs) == 5, theirs
    assert netns.npc_apply(policy("a")).returncode == 0
    done = npc(netns, "reset", "--all")
    assert done.returncode == 0, done.stderr
    assert "NPC-FOO" not in done.stderr and "NPC-KUBE" not in done.stderr
    left = netns.state().splitlines()
    assert [line for line in left if line in theirs] == theirs
    assert not [line for line in left if re.search(r"NPC-[a-z2-7]{5}-", line)]


def test_reset_names_rules_dressed_as_npcs_jump_and_removes_nothing(netns: Netns) -> None:
    """A rule into npc's chain with npc's comment but more matches, or more comment, is another
    tool's: ``reset --all`` deleted both, ``reset`` hit the kernel's CHAIN_DEL refusal unnamed."""
    assert netns.npc_apply(policy("a")).returncode == 0
    chain = forward_chain(netns)
    new_only = ("-m", "conntrack", "!", "--ctstate", "RELATED,ESTABLISHED")
    marked = ("-m", "comment", "--comment", "npc network default", "-m", "mark", "--mark", "0x2/0x2")
    netns.run("iptables", "-t", "mangle", "-A", "FORWARD", *new_only, *marked, "-j", chain)
    sidecar = ("-m", "comment", "--comment", "npc network default: sidecar")
    netns.run("iptables", "-t", "mangle", "-A", "FORWARD", *sidecar, "-j", chain)
    before = (netns.state(), sets(netns))
    for scope in ((), ("--all",)):
        done = npc(netns, "reset", *scope)
        assert done.returncode == 3, done.stderr
        assert "nothing was removed" in done.stderr and f"jumps to {chain}" in done.stderr, done.stderr
        assert "CHAIN_DEL" not in done.stderr
        assert (netns.state(), sets(netns)) == before


def test_a_chain_of_npcs_name_in_nat_is_not_a_backends_enforcement(netns: Netns) -> None:
    """npc writes chains in mangle and filter only: one of its names in nat made the nftables
    backend refuse ("enforced by the iptables backend"), and the reset it advised removed nothing."""
    assert netns.npc_apply(policy("a")).returncode == 0
    tag = forward_chain(netns).split("-")[1]
    assert npc(netns, "reset").returncode == 0
    netns.run("iptables", "-t", "nat", "-N", f"NPC-{tag}-SNAT")
    netns.run("iptables", "-t", "nat", "-A", f"NPC-{tag}-SNAT", "-j", "MASQUERADE")
    netns.run("iptables", "-t", "nat", "-A", "POSTROUTING", "-j", f"NPC-{tag}-SNAT")
    nat = netns.run("iptables-save", "-t", "nat").stdout.splitlines()[1:-1]  # no dated comments
    done = netns.npc_apply(policy("a"), extra=("--backend", "nftables"))
    assert done.returncode == 0, done.stderr
    assert npc(netns, "reset", "--backend", "nftables").returncode == 0
    assert netns.npc_apply(policy("a")).returncode == 0
    for scope in ((), ("--all",)):  # its jump in nat is no use of npc's chains, nor Weave's hook
        done = npc(netns, "reset", *scope)
        assert done.returncode == 0 and "Weave" not in done.stderr, done.stderr
        assert netns.run("iptables-save", "-t", "nat").stdout.splitlines()[1:-1] == nat
        assert netns.npc_apply(policy("a")).returncode == 0


def _path_without(tmp_path: Path, *tools: str) -> str:
    """A PATH holding every program of this one but ``tools``."""
    folder = tmp_path / ("without-" + "-".join(tools))
    folder.mkdir()
    for where in os.environ["PATH"].split(os.pathsep):
        with contextlib.suppress(OSError):
            for entry in os.scandir(where):
                if entry.name not in tools and not (folder / entry.name).exists():
                    (folder / entry.name).symlink_to(entry.path)
    return str(folder)


def test_a_reset_without_ipset_or_nft_is_refused_not_a_success(netns: Netns, tmp_path: Path) -> None:
    """Without ipset npc's sets stayed, and without nft its tables did, and reset said exit 0."""
    assert netns.npc_apply(policy("a")).returncode == 0
    before = (netns.state(), sets(netns))
    no_ipset = _path_without(tmp_path, "ipset")
    done = netns.run(sys.executable, "-m", "npc", "reset", check=False, path=no_ipset)
    assert done.returncode == 3 and "ipset not found" in done.stderr, done.stderr
    assert (netns.state(), sets(netns)) == before
    no_ip6 = _path_without(
        tmp_path, *(f"ip6tables{v}-{t}" for v in ("", "-legacy", "-nft") for t in ("save", "restore"))
    )
    done = netns.run(
        sys.executable, "-m", "npc", "reset", check=False, path=no_ip6
    )  # IPv4 went, IPv6 stayed: exit 4
    assert done.returncode == 3 and "ip6tables-" in done.stderr and "IPv6 rules" in done.stderr, done.stderr
    assert (netns.state(), sets(netns)) == before
    assert npc(netns, "reset").returncode == 0
    assert netns.npc_apply(policy("a"), extra=("--backend", "nftables")).returncode == 0
    tables = netns.run("nft", "list", "tables").stdout
    no_nft = _path_without(tmp_path, "nft")
    done = netns.run(sys.executable, "-m", "npc", "reset", "--backend", "nftables", check=False, path=no_nft)
    assert done.returncode == 3 and "nft not found" in done.stderr, done.stderr
    assert netns.run("nft", "list", "tables").stdout == tables


def test_one_family_after_two_without_the_others_tools_is_refused(netns: Netns, tmp_path: Path) -> None:
    """``--ip-families IPv4`` after a dual-stack load must remove the IPv6 rules: without
    ip6tables it could not, warned only that their sets were "in use", and exited 0."""
    assert netns.npc_apply(policy("a")).returncode == 0
    before = (netns.state(), sets(netns))
    path = _path_without(tmp_path, "ip6tables-restore", "ip6tables-legacy-restore", "ip6tables-nft-restore")
    done = netns.npc_apply(policy("b", 80, "frontend"), extra=("--ip-families", "IPv4"), path=path)
    assert done.returncode == 3, done.stderr
    assert "ip6tables" in done.stderr and "-restore not found" in done.stderr and "IPv6 rules" in done.stderr
    assert (netns.state(), sets(netns)) == before


def test_reset_destroys_a_crashed_applys_recorded_list_holding_npcs_sets(netns: Netns) -> None:
    """A crashed apply's temporaries are npc's own (recorded before they are made), so a
    temporary ``list:set`` holding npc's sets is no other tool's use of them: reset destroys it
    first, then the sets."""
    assert netns.npc_apply(policy("a")).returncode == 0
    used = next(s for s in sets(netns) if re.fullmatch(r"npc-\w+-s4-\w+", s))
    tag = used.split("-")[1]
    temporary = f"npt-{tag}-l4-crashed"
    netns.run("ipset", "create", temporary, "list:set")
    netns.run("ipset", "add", temporary, used)
    where = "from npc.lock import record_path; print(record_path(sys.argv[1]))"
    record = netns.run(sys.executable, "-c", f"import sys; {where}", f"{tag}.sets").stdout.strip()
    Path(record).write_text(f"{temporary}\n")
    done = npc(netns, "reset")
    assert done.returncode == 0, done.stderr
    assert not [s for s in sets(netns) if s.startswith(("npc-", "npt-"))]
    assert not Path(record).exists()


def test_a_flavour_switch_is_refused_until_reset(netns: Netns) -> None:
    assert netns.npc_apply(policy("a"), extra=("--iptables", "legacy")).returncode == 0
    switched = netns.npc_apply(policy("a"), extra=("--iptables", "nft"))
    assert switched.returncode == 3 and "npc reset" in switched.stderr, switched.stderr
    assert npc(netns, "reset", "--all").returncode == 0
    assert netns.npc_apply(policy("a"), extra=("--iptables", "nft")).returncode == 0


def test_a_flavours_reset_leaves_the_sets_anothers_chains_use(netns: Netns) -> None:
    """Both flavours' chains use the network's sets (the kernel has one ipset namespace).
    ``--iptables legacy`` removed legacy's chains, then stopped at the sets iptables-nft's rules
    still held: exit 3, half done. Now it leaves the sets to the flavour that still uses them."""
    assert netns.npc_apply(policy("a"), extra=("--iptables", "legacy")).returncode == 0
    ours = sets(netns)
    for family in ("iptables", "ip6tables"):  # the same network in the other flavour too
        netns.run("sh", "-c", f"{family}-legacy-save | {family}-nft-restore")
    nft_before = netns.run("iptables-nft-save").stdout
    done = npc(netns, "reset", "--iptables", "legacy", "--all")
    assert done.returncode == 0, done.stderr
    assert "NPC-" not in netns.run("iptables-legacy-save").stdout
    assert netns.run("iptables-nft-save").stdout.count("NPC-") == nft_before.count("NPC-")
    assert sets(netns) == ours
    assert npc(netns, "reset", "--iptables", "nft", "--all").returncode == 0
    assert "NPC-" not in netns.state() and not [s for s in sets(netns) if s.startswith("npc-")]


def test_a_reset_refused_part_way_says_the_node_is_mixed(netns: Netns, tmp_path: Path) -> None:
    """IPv4's chains removed, then IPv6's restore refused: not exit 3 ("the previous state stays
    in force", which it does not), but exit 4, naming what went; a second reset finishes."""
    assert netns.npc_apply(policy("a"), extra=("--iptables", "nft")).returncode == 0
    refusing = tmp_path / "bin"
    refusing.mkdir()
    (refusing / "ip6tables-nft-restore").write_text("#!/bin/sh\necho refused by a test >&2\nexit 1\n")
    (refusing / "ip6tables-nft-restore").chmod(0o755)
    done = netns.run(
        sys.executable, "-m", "npc", "reset", "--iptables", "nft", check=False,
        path=f"{refusing}:{os.environ['PATH']}",
    )  # fmt: skip
    assert done.returncode == 4, done.stderr
    assert "refused by a test" in done.stderr and "MIXED" in done.stderr and "IPv4 chain" in done.stderr
    assert "NPC-" not in netns.run("iptables-nft-save").stdout
    assert "NPC-" in netns.run("ip6tables-nft-save").stdout
    assert npc(netns, "reset", "--iptables", "nft").returncode == 0
    assert "NPC-" not in netns.state() and not [s for s in sets(netns) if s.startswith("npc-")]


def _nft_refusing(tmp_path: Path, when: str) -> str:
    """A PATH whose ``nft`` refuses (``when``: a shell test of its arguments), else runs the real one."""
    folder = tmp_path / "nft-bin"
    folder.mkdir(exist_ok=True)
    real = shutil.which("nft")
    (folder / "nft").write_text(
        f'#!/bin/sh\nif {when}; then echo refused by a test >&2; exit 1; fi\nexec {real} "$@"\n'
    )
    (folder / "nft").chmod(0o755)
    return f"{folder}:{os.environ['PATH']}"


def test_a_reset_refused_by_a_later_backend_says_what_the_earlier_removed(
    netns: Netns, tmp_path: Path
) -> None:
    """iptables' objects removed, then nftables' deletion refused: exit 4 naming iptables' (exit
    3 and nothing said before); nftables' own tables go in one transaction, all or none."""
    assert netns.npc_apply(policy("a"), extra=("--backend", "nftables")).returncode == 0
    assert (
        netns.npc_apply(policy("a"), extra=("--network", "other", "--ip-source", "genie:ip2")).returncode == 0
    )
    refusing = _nft_refusing(tmp_path, '[ "$1" = -f ]')
    done = netns.run(sys.executable, "-m", "npc", "reset", "--all", check=False, path=refusing)
    assert done.returncode == 4, done.stderr
    assert "refused by a test" in done.stderr and "MIXED" in done.stderr and "chain NPC-" in done.stderr
    assert "table inet npc" in netns.run("nft", "list", "tables").stdout
    assert npc(netns, "reset", "--all").returncode == 0
    assert "NPC-" not in netns.state() and "npc" not in netns.run("nft", "list", "tables").stdout


def test_a_reset_that_cannot_list_nftables_tables_is_refused(netns: Netns, tmp_path: Path) -> None:
    """A failed ``nft list tables`` read as "no table": exit 0, "removed 0 tables", both left."""
    assert netns.npc_apply(policy("a"), extra=("--backend", "nftables")).returncode == 0
    refusing = _nft_refusing(tmp_path, '[ "$1" = list ]')
    done = netns.run(
        sys.executable, "-m", "npc", "reset", "--backend", "nftables", check=False, path=refusing
    )
    assert done.returncode == 3 and "could not list the tables" in done.stderr, done.stderr
    assert npc(netns, "reset", "--backend", "nftables").returncode == 0
    assert "npc" not in netns.run("nft", "list", "tables").stdout


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_killed_at_random_moments_the_next_apply_repairs(netns: Netns, backend: str) -> None:
    rng = random.Random(7)
    variants = [
        write_inputs(netns.tmp / f"v{i}" / "p", *docs)
        for i, docs in enumerate([[policy("a")], [policy("b", 80, "frontend"), policy("c", "redis")]])
    ]

    def apply_args(folder: Path) -> tuple[str, ...]:
        return (
            "apply",
            str(folder),
            "--inventory",
            str(folder.parent / "inventory.json"),
            "--backend",
            backend,
        )

    clean = []
    for folder in variants:
        assert npc(netns, *apply_args(folder)).returncode == 0
        clean.append(state(netns, nft=True))
    for round_ in range(12):
        args = apply_args(variants[round_ % 2])
        run = start(netns, *args)
        time.sleep(rng.uniform(0.05, 0.6))
        run.send_signal(signal.SIGKILL)
        run.wait()
        repaired = npc(netns, *args)
        assert repaired.returncode == 0, repaired.stderr
        assert state(netns, nft=True) == clean[round_ % 2]


# --- an apply cut after any command ----------------------------------------------------------------

CUT = Path(__file__).with_name("kernel") / "cut.py"


def _ingress(name: str, target: str, **peer: str) -> dict[str, object]:
    return network_policy(
        name, {"matchLabels": {"app": target}}, ingress=[{"from": [{"podSelector": {"matchLabels": peer}}]}]
    )


# b admits only a; then only friends, in the same apply where p stops being a friend: new rules with
# old members let p reach b, which neither state allows. x admits friends throughout (so the friend
# set is kept, its members changing); y becomes an x (isolated), z stops being one (the map set keeps
# its name, its members changing both ways).
CUT_OLD = [_ingress("b", "b", app="a"), _ingress("x", "x", role="friend")]
CUT_NEW = [_ingress("b", "b", role="friend"), _ingress("x", "x", role="friend")]
CUT_LABELS_OLD = [{"app": "a"}, {"app": "b"}, {"role": "friend"}, {"app": "x"}, {"app": "y"}, {"app": "x"}]
CUT_LABELS_NEW = [{"app": "a"}, {"app": "b"}, {"role": "other"}, {"app": "x"}, {"app": "x"}, {"app": "z"}]
P, B = 2, 1


@attrs.frozen
class CutScenario:
    """The scenario above in one cluster: the inputs by name (old, new, naive), what each allows
    per family, and npc's objects in the node after a clean apply of the new inputs."""

    cluster: Cluster
    node: Netns
    inputs: dict[str, tuple[list[Path], Path]]
    truth: dict[str, dict[str, set[tuple[int, int]]]]
    clean: list[str]

    def args(self, name: str) -> list[str]:
        paths, inventory = self.inputs[name]
        return ["apply", *map(str, paths), "--inventory", str(inventory), "--backend", "iptables"]

    def allowed(self, **timeouts: float | None) -> dict[str, set[tuple[int, int]]]:
        seen = self.cluster.probe(self.cluster.case.checks, **timeouts)  # type: ignore[arg-type]
        return {
            o.check.family: {
                (i, j) for i, row in enumerate(o.observed) for j, cell in enumerate(row) if cell == "."
            }
            for o in seen
        }

    def check_cut(self, ran: list[str]) -> None:
        """Per family: no more than the old state before its rules were replaced, no more than the
        new one after (``ran``: the programs that completed)."""
        seen = self.allowed(timeout=0.4, retry_timeout=None)  # a slow answer only shrinks what is seen
        for family, tool in (("v4", "iptables"), ("v6", "ip6tables")):
            replaced = any(w.startswith(tool) and w.endswith("-restore") for w in ran)
            bound = self.truth["new" if replaced else "old"][family]
            assert seen[family] <= bound, f"cut after {ran[-2:]}: {family} allows {seen[family] - bound}"


@contextlib.contextmanager
def cut_scenario(tmp_path: Path) -> Iterator[CutScenario]:
    pods = [{"name": f"pod{i}", "labels": labels} for i, labels in enumerate(CUT_LABELS_OLD)]
    size = len(pods)
    every = ["".join("?" if i == j else "." for j in range(size)) for i in range(size)]
    case = make_case("cut-apply", pods, {80: every}, policies=CUT_OLD)
    with Cluster(case, tmp_path) as cluster:
        renamed = [attrs.evolve(e, labels=CUT_LABELS_NEW[e.index]) for e in case.endpoints]
        inputs = {
            name: write_case_inputs(case, tmp_path / name, "yaml", endpoints, docs)
            for name, endpoints, docs in [
                ("old", case.endpoints, CUT_OLD),
                ("new", renamed, CUT_NEW),
                ("naive", case.endpoints, CUT_NEW),  # what a cut used to leave: new rules, old members
            ]
        }
        scenario = CutScenario(cluster, Netns(cluster.node, tmp_path), inputs, {}, [])
        for name in ("old", "naive", "new"):
            assert cluster.npc(*scenario.args(name)).returncode == 0
            scenario.truth[name] = scenario.allowed()
        scenario.clean.extend(state(scenario.node))
        for family in ("v4", "v6"):
            truth = scenario.truth
            assert (P, B) in truth["naive"][family] - truth["old"][family] - truth["new"][family]
        yield scenario


def test_an_apply_cut_after_any_command_allows_no_more_than_its_phase_and_the_next_repairs(
    tmp_path: Path,
) -> None:
    """Before a family's rules are replaced it allows no more than the old state, after it no more
    than the new one; a rerun then reaches exactly the new state, with no temporaries left."""
    with cut_scenario(tmp_path) as scenario:
        cluster, node = scenario.cluster, scenario.node
        log = tmp_path / "ran.log"
        assert cluster.npc(*scenario.args("old")).returncode == 0
        whole = cluster.node_exec(
            [sys.executable, str(CUT), "1000", str(log), *scenario.args("new")], check=False
        )
        assert whole.returncode == 0 and state(node) == scenario.clean, whole.stderr
        commands = len(log.read_text().splitlines())
        for limit in range(1, commands):
            assert cluster.npc(*scenario.args("old")).returncode == 0
            log.unlink()
            cut = cluster.node_exec(
                [sys.executable, str(CUT), str(limit), str(log), *scenario.args("new")], check=False
            )
            assert cut.returncode == 137, cut.stderr
            scenario.check_cut(log.read_text().split())
            repaired = cluster.npc(*scenario.args("new"))
            assert repaired.returncode == 0, repaired.stderr
            assert state(node) == scenario.clean, f"cut after command {limit}"
            assert "npt-" not in node.run("ipset", "list", "-n").stdout


class _Cut(BaseException):
    """A stand-in ``kill -9``: nothing of npc's handles it, so nothing after it runs."""


class _CutRunner:
    """The real tools in the node namespace, stopped dead after ``limit`` commands."""

    def __init__(self, node: str, limit: int) -> None:
        self.node, self.limit, self.ran = node, limit, []  # type: list[str]

    def __call__(self, argv: Sequence[str], stdin: str = "") -> Ran:
        if len(self.ran) >= self.limit:
            raise _Cut
        done = subprocess.run(
            ["ip", "netns", "exec", self.node, *argv], input=stdin, capture_output=True, text=True
        )
        self.ran += argv[:2]
        return Ran(done.returncode, done.stdout, done.stderr)

    def which(self, program: str) -> bool:
        return shutil.which(program) is not None


def test_an_agent_update_cut_after_any_command_allows_no_more_than_its_phase(tmp_path: Path) -> None:
    """The agent's iptables policy change by difference (``update.py``) keeps the same bound as a
    full apply: its member moves that restrict go before the rules, those that permit after."""
    with cut_scenario(tmp_path) as scenario:
        built = {
            name: build(read_sources([str(p) for p in paths], str(inventory)), network_spec()).compiled
            for name, (paths, inventory) in scenario.inputs.items()
        }
        old, new = built["old"], built["new"]

        def update(limit: int) -> list[str]:
            runner = _CutRunner(scenario.cluster.node, limit)
            with contextlib.suppress(_Cut):
                IptablesBackend().load_update(old.lowered, old.members, new, Options(), runner)
            return runner.ran

        assert scenario.cluster.npc(*scenario.args("old")).returncode == 0
        commands = len(update(10_000)) // 2
        assert state(scenario.node) == scenario.clean
        for limit in range(1, commands):
            assert scenario.cluster.npc(*scenario.args("old")).returncode == 0
            scenario.check_cut(update(limit))


@pytest.mark.parametrize("holder", ["rule", "list", "jump"])
def test_a_weave_reset_refuses_before_removing_anything_when_others_use_npcs_objects(
    netns: Netns, holder: str
) -> None:
    """Weave's reset removed the chains, then ipset refused a set in use: exit 3 with every rule
    gone and the sets left (a review saw it); a foreign jump to WEAVE-NPC-DEFAULT failed the
    restore without naming it. Now, as the iptables backend's, it names the user first."""
    assert netns.npc_apply(policy("a"), extra=("--backend", "weave")).returncode == 0
    used = next(s for s in sets(netns) if re.fullmatch(r"npc-\w+-s4-\w+", s))
    undo = {
        "rule": ("iptables", "-D", "OUTPUT", "-m", "set", "--match-set", used, "dst", "-j", "RETURN"),
        "list": ("ipset", "destroy", "theirs"),
        "jump": ("iptables", "-D", "OUTPUT", "-o", "eth9", "-j", "WEAVE-NPC-DEFAULT"),
    }[holder]
    if holder == "list":
        netns.run("ipset", "create", "theirs", "list:set")
        netns.run("ipset", "add", "theirs", used)
    else:
        netns.run(undo[0], "-A", *undo[2:])
    before = (netns.state(), sets(netns))
    done = npc(netns, "reset", "--backend", "weave")
    assert done.returncode == 3, done.stderr
    assert "nothing was removed" in done.stderr, done.stderr
    assert {
        "rule": f"uses set {used}",
        "list": "list:set theirs holds",
        "jump": "jumps to WEAVE-NPC-DEFAULT",
    }[holder] in done.stderr, done.stderr
    assert (netns.state(), sets(netns)) == before
    netns.run(*undo)
    assert npc(netns, "reset", "--backend", "weave").returncode == 0
    assert "WEAVE-NPC-DEFAULT" not in netns.state() and not [s for s in sets(netns) if s.startswith("npc-")]


def test_weave_takes_weave_npcs_sets_on_its_first_load_only_lists_first(netns: Netns) -> None:
    """``weave-*`` is weave-npc's prefix (weave-npc destroys every such set when it starts): the
    first load that takes its place destroys them, a list:set before the sets it holds (one apply
    left a member, in use). Every later apply destroyed another tool's ``weave-*`` set too, or
    warned that it could not (a review saw both)."""
    netns.run("ipset", "create", "weave-a", "hash:ip")
    netns.run("ipset", "create", "weave-z", "list:set")
    netns.run("ipset", "add", "weave-z", "weave-a")
    first = netns.npc_apply(policy("a"), extra=("--backend", "weave"))
    assert first.returncode == 0 and "2 weave-npc sets removed" in first.stderr, first.stderr
    assert "could not destroy" not in first.stderr
    assert not [s for s in sets(netns) if s.startswith("weave-")]
    netns.run("ipset", "create", "weave-mine", "hash:ip")
    netns.run("iptables", "-A", "OUTPUT", "-m", "set", "--match-set", "weave-mine", "dst", "-j", "RETURN")
    netns.run("ipset", "create", "weave-theirs", "hash:ip")
    again = netns.npc_apply(policy("b"), extra=("--backend", "weave"))
    assert again.returncode == 0 and "weave-npc sets removed" not in again.stderr, again.stderr
    assert "could not destroy" not in again.stderr
    assert {"weave-mine", "weave-theirs"} <= set(sets(netns))
