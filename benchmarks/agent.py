"""``npc agent`` against an API stand-in serving a generated cluster: one table row per size and backend.

    python benchmarks/agent.py --sizes S,M --backends iptables,nftables   # as root

The agent runs as a user starts it (``python -m npc agent --kubeconfig ...``) in a throw-away
network namespace, talking to the tests' API stand-in (``tests/kube_standin.py``) over plain HTTP
on that namespace's loopback. Latencies are from the API write to the agent's JSON log line for
the apply that carried it (written after the kernel accepted the load):
- start: process start to the first full apply (imports, list, compile, load);
- pod add / delete: a pod a policy selects appears and goes (p50, p99 of ``--events`` each);
- policy: one policy gains a port (p50, p99 of ``--policy-changes``, 5): recompile, load what
  differs (or the network);
- RSS: the agent's peak resident set (VmHWM); idle CPU: CPU seconds over 10 s of quiet; stop:
  SIGTERM to exit.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import queue
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))
import yaml  # noqa: E402
from generate import SIZES, write_cluster  # noqa: E402
from kube_standin import KubeStandin  # noqa: E402

DATA = Path("/tmp/npc-bench-agent")


class Agent:
    def __init__(self, netns: str, kubeconfig: Path, backend: str) -> None:
        argv = [
            "ip",
            "netns",
            "exec",
            netns,
            sys.executable,
            "-m",
            "npc",
            "agent",
            "--kubeconfig",
            str(kubeconfig),
        ]
        argv += ["--backend", backend, "--log-format", "json", "--listen", "127.0.0.1:9469"]
        self.started = time.monotonic()
        self.proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[tuple[float, dict[str, Any]]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            try:
                self.lines.put((time.monotonic(), json.loads(line)))
            except ValueError:
                print(line, end="", file=sys.stderr)

    def next_apply(self, timeout: float = 600.0) -> tuple[float, dict[str, Any]]:
        end = time.monotonic() + timeout
        while True:
            at, line = self.lines.get(timeout=max(0.1, end - time.monotonic()))
            if "kind" in line and line.get("msg", "").startswith("applied"):
                return at, line

    def stat(self) -> tuple[int, float]:
        """(peak RSS in bytes, CPU seconds so far)."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        hwm = next(int(x.split()[1]) * 1024 for x in status.splitlines() if x.startswith("VmHWM"))
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return hwm, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> float:
        """SIGTERM; the seconds until the agent exited."""
        started = time.monotonic()
        self.proc.terminate()
        self.proc.wait(timeout=30)
        return time.monotonic() - started


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def objects(cluster: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    policies = [
        d
        for f in sorted((cluster / "policies").iterdir())
        for d in yaml.load_all(f.read_text(), Loader=loader)
        if d
    ]
    inventory = json.loads((cluster / "inventory.json").read_text())["items"]
    return policies, inventory


def run(size: str, backend: str, events: int, policy_changes: int) -> dict[str, Any]:
    cluster = DATA / size
    if not (cluster / "inventory.json").exists():
        write_cluster(SIZES[size], cluster)
    policies, inventory = objects(cluster)
    netns = f"npc-bench-agent-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    subprocess.run(["ip", "netns", "exec", netns, "ip", "link", "set", "lo", "up"], check=True)
    api = KubeStandin(netns=netns, bookmark_every=60)
    agent: Agent | None = None
    try:
        for obj in [*inventory, *policies]:
            api.put(obj)
        api.start()
        agent = Agent(netns, api.kubeconfig(DATA), backend)
        at, _ = agent.next_apply(timeout=1800)
        row: dict[str, Any] = {"size": size, "backend": backend, "start_s": at - agent.started}
        print(f"  {size} {backend}: first apply after {row['start_s']:.1f} s", file=sys.stderr, flush=True)
        row["pods"] = sum(1 for o in inventory if o["kind"] == "Pod")
        row["policies"] = len(policies)
        target = next(p for p in policies if p["spec"].get("podSelector", {}).get("matchLabels"))
        template = next(
            o for o in inventory
            if o["kind"] == "Pod" and o["metadata"]["namespace"] == target["metadata"]["namespace"]
        )  # fmt: skip
        adds, deletes, inside = [], [], []  # inside: the agent's own apply time (its log line)
        for n in range(events):
            pod = copy.deepcopy(template)
            pod["metadata"]["name"] = f"bench-{n}"
            pod["metadata"]["labels"] = dict(target["spec"]["podSelector"]["matchLabels"])
            ip = f"10.250.{n // 250}.{n % 250 + 1}"
            pod["status"]["podIP"], pod["status"]["podIPs"] = ip, [{"ip": ip}]
            t0 = time.monotonic()
            api.put(pod)
            at, line = agent.next_apply()
            adds.append(at - t0)
            inside.append(line.get("duration_ms", 0) / 1000)
            t0 = time.monotonic()
            api.delete("Pod", pod["metadata"]["namespace"], pod["metadata"]["name"])
            at, line = agent.next_apply()
            deletes.append(at - t0)
            inside.append(line.get("duration_ms", 0) / 1000)
        print(
            f"  {size} {backend}: pod events inside the agent (read, count, load) p50 / p99 "
            f"{percentile(inside, 50) * 1000:.0f} / {percentile(inside, 99) * 1000:.0f} ms",
            file=sys.stderr,
            flush=True,
        )
        changes = []
        for n in range(policy_changes):
            changed = copy.deepcopy(target)
            changed["spec"].setdefault("ingress", []).append({"ports": [{"port": 40000 + n}]})
            t0 = time.monotonic()
            api.put(changed)
            at, line = agent.next_apply()
            changes.append(at - t0)
            print(
                f"  {size} {backend}: policy change {n + 1}: {changes[-1]:.2f} s ({line.get('msg', '')})",
                file=sys.stderr,
                flush=True,
            )
        time.sleep(2)
        _, cpu0 = agent.stat()
        time.sleep(10)
        rss, cpu1 = agent.stat()
        row["stop_s"] = agent.stop()
        row.update(
            add_p50=percentile(adds, 50), add_p99=percentile(adds, 99),
            del_p50=percentile(deletes, 50), del_p99=percentile(deletes, 99),
            policy_p50=statistics.median(changes), policy_p99=percentile(changes, 99),
            rss_mib=rss / 2**20, idle_cpu_s=cpu1 - cpu0,
        )  # fmt: skip
        return row
    finally:
        if agent is not None and agent.proc.poll() is None:  # a measure failed: the agent must not outlive it
            agent.proc.kill()
            agent.proc.wait()
        api.stop()
        subprocess.run(["ip", "netns", "del", netns], check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="S,M")
    parser.add_argument("--backends", default="iptables,nftables")
    parser.add_argument("--events", type=int, default=50)
    parser.add_argument("--policy-changes", type=int, default=5)
    args = parser.parse_args()
    DATA.mkdir(exist_ok=True)
    print(
        "| size | backend | pods | policies | start -> first apply s | pod add p50 / p99 ms "
        "| pod delete p50 / p99 ms | policy change p50 / p99 s | peak RSS MiB | idle CPU s / 10 s | stop s |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for size in args.sizes.split(","):
        for backend in args.backends.split(","):
            r = run(size, backend, args.events, args.policy_changes)
            print(
                f"| {size} | {backend} | {r['pods']:,} | {r['policies']:,} | {r['start_s']:.2f} "
                f"| {r['add_p50'] * 1000:.0f} / {r['add_p99'] * 1000:.0f} "
                f"| {r['del_p50'] * 1000:.0f} / {r['del_p99'] * 1000:.0f} "
                f"| {r['policy_p50']:.2f} / {r['policy_p99']:.2f} | {r['rss_mib']:.0f} | {r['idle_cpu_s']:.2f} "
                f"| {r['stop_s']:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
