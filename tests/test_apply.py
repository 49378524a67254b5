"""`npc apply` on a real kernel: ownership, idempotence, atomic failure, flavour choice.

Each test runs in a throw-away network namespace (never the host's); traffic is tested by the
truth-table suite, this file checks what lands in the tables and sets.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(os.geteuid() != 0, reason="kernel tests need root (network namespaces)"),
]

INVENTORY = {
    "apiVersion": "v1",
    "kind": "List",
    "items": [
        {"kind": "Namespace", "metadata": {"name": "default"}},
        {
            "kind": "Pod",
            "metadata": {"name": "db", "namespace": "default", "labels": {"role": "db"}},
            "spec": {"containers": [{"name": "c", "ports": [{"name": "redis", "containerPort": 6379}]}]},
            "status": {"phase": "Running", "podIPs": [{"ip": "10.9.0.1"}, {"ip": "fd09::1"}]},
        },
        {
            "kind": "Pod",
            "metadata": {"name": "web", "namespace": "default", "labels": {"role": "frontend"}},
            "status": {"phase": "Running", "podIPs": [{"ip": "10.9.0.2"}, {"ip": "fd09::2"}]},
        },
    ],
}


def policy(name: str, port: int | str = 6379, selector: str = "db") -> dict[str, object]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "podSelector": {"matchLabels": {"role": selector}},
            "ingress": [
                {"from": [{"podSelector": {"matchLabels": {"role": "frontend"}}}], "ports": [{"port": port}]}
            ],
        },
    }


class Netns:
    def __init__(self, name: str, tmp: Path) -> None:
        self.name = name
        self.tmp = tmp

    def run(
        self, *argv: str, check: bool = True, path: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``argv`` inside the namespace; ``path`` replaces PATH for that command only."""
        prefix = ["env", f"PATH={path}"] if path is not None else []
        return subprocess.run(
            ["ip", "netns", "exec", self.name, *prefix, *argv], capture_output=True, text=True, check=check
        )

    def npc_apply(
        self, *policies: dict[str, object], extra: tuple[str, ...] = (), path: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        folder = self.tmp / f"p{len(list(self.tmp.iterdir()))}"
        folder.mkdir()
        for i, doc in enumerate(policies):
            (folder / f"{i}.json").write_text(json.dumps(doc))
        inventory = self.tmp / "inventory.json"
        inventory.write_text(json.dumps(INVENTORY))
        return self.run(
            sys.executable,
            "-m",
            "npc",
            "apply",
            str(folder),
            "--inventory",
            str(inventory),
            *extra,
            check=False,
            path=path,
        )

    def state(self, flavour: str = "") -> str:
        """Everything in this namespace's mangle and filter tables and sets, counters and set
        seeds removed; sets by name (the kernel lists them in slot order, which reuses the slots
        of destroyed sets, so it depends on history)."""
        infix = f"-{flavour}" if flavour else ""
        text = "".join(
            self.run(f"{tool}{infix}-save", "-t", table).stdout
            for tool in ("iptables", "ip6tables")
            for table in ("mangle", "filter")
        )
        sets = re.split(r"\n(?=create )", self.run("ipset", "save").stdout.strip())
        text += "\n".join(sorted(sets)) + "\n"
        text = re.sub(r" initval 0x[0-9a-f]+", "", text)  # ipset's random hash seed
        return "\n".join(line for line in text.splitlines() if not line.startswith("#"))


@contextlib.contextmanager
def fresh_netns(prefix: str, tmp: Path) -> Iterator[Netns]:
    """A new namespace named for this process (tests may run side by side), deleted afterwards."""
    name = f"{prefix}-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield Netns(name, tmp)
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


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
    assert len(re.findall(r"^-A FORWARD .* -j NPC-\w+-MARK$", state, re.M)) == 2  # mangle: groups
    assert re.search(r"^add npc-\S+ 10\.9\.0\.1$", state, re.M)
    assert re.search(r"^add npc-\S+ fd09::1$", state, re.M)
    assert re.search(r"^add npc-\S+ 10\.9\.0\.2$", state, re.M)


def test_apply_twice_changes_nothing(netns: Netns) -> None:
    assert netns.npc_apply(policy("a")).returncode == 0
    first = netns.state()
    second_run = netns.npc_apply(policy("a"))
    assert second_run.returncode == 0, second_run.stderr
    assert netns.state() == first


def test_foreign_rules_and_sets_survive_byte_for_byte(netns: Netns) -> None:
    netns.run("ipset", "create", "foreign", "hash:ip")
    netns.run("ipset", "add", "foreign", "192.0.2.7")
    netns.run("iptables", "-N", "FOREIGN")
    netns.run("iptables", "-A", "FOREIGN", "-s", "192.0.2.0/24", "-j", "DROP")
    netns.run("iptables", "-A", "FORWARD", "-m", "set", "--match-set", "foreign", "src", "-j", "FOREIGN")
    netns.run("ip6tables", "-A", "FORWARD", "-s", "2001:db8::/32", "-j", "ACCEPT")
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
    subprocess.run(["ip", "netns", "del", netns.name], check=True)
    subprocess.run(["ip", "netns", "add", netns.name], check=True)
    assert netns.npc_apply(policy("c", 443, "frontend")).returncode == 0
    assert netns.state() == with_history


def test_kernel_rejection_keeps_previous_state_and_exits_3(netns: Netns) -> None:
    assert netns.npc_apply(policy("a")).returncode == 0
    previous = netns.state()
    policy_chain = re.search(r"^:(NPC-\w+-P-\w+)", netns.run("ip6tables-save", "-t", "filter").stdout, re.M)
    assert policy_chain
    # Another tool jumps into one of npc's IPv6 chains: deleting that chain must fail in the kernel,
    # after IPv4 was already replaced; npc must put IPv4 back and leave the sets as they were.
    netns.run("ip6tables", "-A", "INPUT", "-j", policy_chain.group(1))
    previous = netns.state()
    result = netns.npc_apply(policy("z", 80))
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
    assert "NPC-" in netns.run(f"iptables-{flavour}-save", "-t", "filter").stdout


def test_forced_flavour(netns: Netns) -> None:
    if not shutil.which("iptables-legacy-restore"):
        pytest.skip("iptables-legacy not installed")
    result = netns.npc_apply(policy("a"), extra=("--iptables", "legacy"))
    assert result.returncode == 0, result.stderr
    assert "NPC-" in netns.run("iptables-legacy-save", "-t", "filter").stdout
    assert "NPC-" not in netns.run("iptables-nft-save", "-t", "filter").stdout
