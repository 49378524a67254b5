"""``npc agent`` usage errors: exit 2 with a message, never a traceback, nothing started. Each
runs in a network namespace of its own (``unshare``): an agent that did start would load there."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--policies", "p", "--artefacts", "d"], "not allowed with argument"),
        (["--kubeconfig", "/nonexistent/kubeconfig"], "kubeconfig /nonexistent/kubeconfig"),
        (["--policies", "p", "--network", "net2"], "needs an IP source"),
        (["--policies", "p", "--debounce", "0"], "must be a positive number"),
        (["--policies", "p", "--resync", "nan"], "must be a positive number"),
        (["--policies", "p", "--resync", "inf"], "must be a positive number"),
        (["--policies", "p", "--inventory", "i", "--listen", ":99999"], "a port of 0-65535"),  # OverflowError
        (["--policies", "p", "--inventory", "i", "--listen", "[::1]"], "expected HOST:PORT"),
        (["--policies", "p", "--backend", "nftables", "--iptables", "nft"], "--iptables applies"),
        (["--policies", "p", "--backend", "calico", "--iptables", "nft"], "--iptables applies"),
        (["--policies", "p", "--backend", "weave", "--mark", "0x10"], "Weave Net's mark is 0x40000"),
        (
            ["--policies", "p", "--backend", "nftables", "--mark", "0x10"],
            "--mark applies to the iptables backend only",
        ),
        (
            ["--policies", "p", "--inventory", "i", "--backend", "calico"],
            "npc agent loads iptables, nftables",
        ),
        (
            ["--policies", "p", "--mark", "abc"],
            "argument --mark: must be a single bit",
        ),  # "invalid _mark value"
        (["--artefacts="], "argument --artefacts: must not be empty"),  # not the API instead
        (["--policies", "p", "--inventory", ""], "argument --inventory: must not be empty"),
        (["--policies", "p", "--inventory", "i", "--node", ""], "argument --node: must not be empty"),
        (["--networks", ""], "argument --networks: must not be empty"),
        (["--policies", "p", "", "--inventory", "i"], "argument --policies: must not be empty"),
    ],
)
def test_usage_errors_exit_2(args: list[str], message: str, tmp_path: Path) -> None:
    _refused(args, message, tmp_path)


def _refused(args: list[str], message: str, where: Path) -> None:
    done = subprocess.run(
        ["unshare", "--net", sys.executable, "-m", "npc", "agent", "--listen", "127.0.0.1:0", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=where,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr


SERVER = '{"clusters": [{"name": "c", "cluster": {"server": %s}}], "users": [{"name": "u", "user": {}}], '
SERVER += '"contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}], "current-context": "x"}'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not: [yaml", "kubeconfig kc: while parsing a flow sequence"),
        ("- a\n- list\n", "kubeconfig kc: "),
        (SERVER % '"not a url"', "kubeconfig kc: the server 'not a url' is not an http(s) URL"),
        (SERVER % '"ftp://h:1"', "is not an http(s) URL"),
        (SERVER % "5", "kubeconfig kc: "),
    ],
)
def test_a_kubeconfig_that_does_not_load_is_a_usage_error(text: str, message: str, tmp_path: Path) -> None:
    (tmp_path / "kc").write_text(text, encoding="utf-8")
    _refused(["--kubeconfig", "kc"], message, tmp_path)


def test_a_backend_that_cannot_load_ends_the_agent_with_exit_2(tmp_path: Path) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "inventory.json").write_text('{"apiVersion": "v1", "kind": "List", "items": []}')
    args = ["--policies", "policies", "--inventory", "inventory.json", "--backend", "calico"]
    done = subprocess.run(
        ["unshare", "--net", sys.executable, "-m", "npc", "agent", "--listen", "127.0.0.1:0", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 2, done.stderr
    assert "npc agent loads iptables, nftables" in done.stderr and "Traceback" not in done.stderr


def test_a_second_agent_for_a_network_an_agent_keeps_is_refused(tmp_path: Path) -> None:
    """Two agents of one network in one namespace would undo each other's loads: the second
    exits 3 naming the network, nothing loaded; an agent of another network may run beside."""
    (tmp_path / "policies").mkdir()
    (tmp_path / "inventory.json").write_text('{"apiVersion": "v1", "kind": "List", "items": []}')
    agent = (
        f"{sys.executable} -m npc agent --listen 127.0.0.1:0 --policies policies --inventory inventory.json"
    )
    script = (
        f"{agent} 2>first.log & first=$!; "
        "for i in $(seq 100); do grep -q 'applied network' first.log && break; sleep 0.1; done; "
        f"timeout 30 {agent}; echo second=$?; "  # not refused: 124, and the test ends
        f"{agent} --network net2 --ip-source genie:ip2 2>third.log & third=$!; "
        "for i in $(seq 100); do grep -q 'applied network' third.log && break; sleep 0.1; done; "
        "kill -TERM $first $third; wait $first; echo first=$?; wait $third; echo third=$?"
    )
    done = subprocess.run(
        ["unshare", "--net", "sh", "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert "second=3" in done.stdout, (done.stdout, done.stderr)
    assert "another npc agent keeps network default of this network namespace" in done.stderr
    assert "first=0" in done.stdout and "third=0" in done.stdout, (done.stdout, done.stderr)
    assert "applied network net2" in (tmp_path / "third.log").read_text()
    assert "Traceback" not in done.stderr + (tmp_path / "first.log").read_text()


def test_a_bad_policy_file_is_not_read_again_for_each_pod_change(tmp_path: Path) -> None:
    """Each input has its watcher: a pod's change reads the inventory alone, so a bad policy
    file's error is said once, not again for every pod event (and counted once)."""
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "deny.yaml").write_text(  # every pod isolated: a new one is a member more
        "kind: NetworkPolicy\napiVersion: networking.k8s.io/v1\nmetadata: {name: deny, namespace: default}\n"
        "spec: {podSelector: {}}\n"
    )
    pods = '{"apiVersion": "v1", "kind": "List", "items": [%s]}'
    pod = (
        '{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p%d", "namespace": "default"}, '
        '"spec": {}, "status": {"podIP": "10.0.0.%d"}}'
    )
    (tmp_path / "inventory.json").write_text(pods % (pod % (1, 1)))
    agent = (
        f"{sys.executable} -m npc agent --listen 127.0.0.1:0 --policies policies --inventory inventory.json"
    )
    bad = "kind: NetworkPolicy\\napiVersion: networking.k8s.io/v1\\nmetadata: {name: x}\\nspec: 3\\n"
    wait = "for i in $(seq 100); do [ $(grep -c '%s' log) -ge %d ] && break; sleep 0.1; done; "
    script = (
        f"{agent} 2>log & agent=$!; "
        + wait % ("applied network", 1)
        + f"printf '{bad}' > policies/bad.yaml; "
        + wait % ("keeping the last good policies", 1)
        + "".join(
            f"printf '%s' '{pods % ', '.join(pod % (n, n) for n in range(1, k + 2))}' > inventory.json.tmp; "
            "mv inventory.json.tmp inventory.json; " + wait % ("applied network", k + 1)
            for k in (1, 2)
        )
        + "kill -TERM $agent; wait $agent; echo agent=$?"
    )
    done = subprocess.run(
        ["unshare", "--net", "sh", "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    log = (tmp_path / "log").read_text()
    assert "agent=0" in done.stdout, (done.stdout, done.stderr, log)
    assert log.count("applied network") == 3, log  # the first load, then each pod added
    assert log.count("keeping the last good policies") == 1, log
    assert "Traceback" not in log


@pytest.mark.parametrize("after", [0.05, 0.3])
@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGINT])
def test_an_agent_stopped_while_it_starts_exits_0(after: float, number: int, tmp_path: Path) -> None:
    """README: SIGTERM or SIGINT stop an agent with exit 0, also in its first tenth of a second
    (the modules loading), before it has taken its own handlers."""
    (tmp_path / "p.yaml").write_text("", encoding="utf-8")
    (tmp_path / "i.json").write_text('{"kind": "List", "items": []}', encoding="utf-8")
    agent = subprocess.Popen(
        [
            "unshare",
            "--net",
            sys.executable,
            "-m",
            "npc",
            "agent",
            "--policies",
            "p.yaml",
            "--inventory",
            "i.json",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )
    time.sleep(after)
    agent.send_signal(number)  # unshare passes it on: it execs the interpreter
    _, stderr = agent.communicate(timeout=30)
    assert agent.returncode == 0, stderr
    assert "Traceback" not in stderr
