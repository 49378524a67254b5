"""A throw-away cluster of network namespaces, routed like Calico: the kernel judges npc's output.

One "node" namespace routes between one namespace per pod. Each pod has ``eth0`` with its
address as /32 (/128) and a default route via a link-local gateway (169.254.1.1, fe80::1) whose
MAC is the node side's ``ee:ee:ee:ee:ee:ee``; the node has a /32 (/128) route per pod. Neighbour
entries are static on both sides, so no ARP/ND runs and nothing depends on proxy_arp timing.
Forwarding is enabled in the node namespace only; the host namespace is never touched.
Everything is named ``npct-<pid>-<n>-...`` and removed on exit, even after a failure.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import attrs

from .case import Case, Check, Endpoint, Family, write_inputs
from .gone import delete_netns

AGENT = Path(__file__).resolve().parent / "agent.py"
PREFIX = "npct-"
NODE_MAC = "ee:ee:ee:ee:ee:ee"
GATEWAY = {"v4": "169.254.1.1", "v6": "fe80::1"}
PROBE_TIMEOUT = 1.0
RETRY_TIMEOUT = 3.0
STALE_AFTER = 3600.0  # seconds; no cluster of this suite lives that long
_counter = iter(range(1_000_000))
_counter_lock = threading.Lock()


def run(
    argv: Sequence[str], *, stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr}{done.stdout}")
    return done


def reap_stale() -> None:
    """Delete namespaces left by earlier runs of this suite: their process is gone and they are old.

    The age test keeps a concurrent run in another PID namespace (whose PIDs we cannot see) safe.
    """
    listing = run(["ip", "-json", "netns", "list"], check=False).stdout or "[]"
    stale = []
    for entry in json.loads(listing):
        name = entry.get("name", "")
        match = re.fullmatch(rf"{PREFIX}(\d+)-\d+-\w+", name)
        if not match or Path(f"/proc/{match.group(1)}").exists():
            continue
        try:
            age = time.time() - Path("/run/netns", name).stat().st_mtime
        except OSError:
            continue
        if age > STALE_AFTER:
            stale.append(name)
    if stale:
        delete_netns(*stale)


@attrs.frozen
class Observation:
    """What one check saw: a matrix of ``.`` (answered), ``X`` (timed out), ``E`` (error), ``?``."""

    check: Check
    observed: tuple[str, ...]
    details: Mapping[tuple[int, int], str]

    def mismatches(self) -> list[tuple[int, int]]:
        return [
            (i, j)
            for i, row in enumerate(self.check.expect)
            for j, want in enumerate(row)
            if want != "?" and self.observed[i][j] != want
        ]


@attrs.frozen
class Link:
    """One interface of a pod and the node-side veth it is wired to."""

    veth: str  # in the node
    interface: str  # in the pod
    mac: str
    addresses: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]
    network: str | None  # None: the primary network
    ranges: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]  # a secondary network's own


def _pod_mac(index: int, interface: int = 0) -> str:
    return f"02:00:00:{interface:02x}:{index >> 8:02x}:{index & 0xFF:02x}"


class Cluster:
    """Namespaces, veths and echo servers for a case's endpoints; ``apply`` and ``probe`` run in it."""

    def __init__(self, case: Case, workdir: Path | None = None) -> None:
        self.case = case
        with _counter_lock:
            n = next(_counter)
        self.prefix = f"{PREFIX}{os.getpid()}-{n}"
        self.node = f"{self.prefix}-node"
        self.pod_ns = {e.index: f"{self.prefix}-p{e.index}" for e in case.endpoints}
        self._own_workdir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-")) if workdir is None else workdir
        self._servers: dict[int, subprocess.Popen[str]] = {}
        self._created: list[str] = []
        self._applies = 0

    # -- lifecycle --------------------------------------------------------------------------------
    def __enter__(self) -> Cluster:
        try:
            self._build()
            self._start_servers()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        for server in self._servers.values():
            if server.stdin:
                server.stdin.close()  # the agent exits on EOF
        for server in self._servers.values():
            try:
                server.wait(timeout=2)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        self._servers.clear()
        if self._created:
            delete_netns(*self._created)
            self._created.clear()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _build(self) -> None:
        names = [self.node, *self.pod_ns.values()]
        run(["ip", "-batch", "-"], stdin="".join(f"netns add {n}\n" for n in names))
        self._created.extend(names)
        node_cmds = ["link set lo up", *self._node_setup()]
        pod_cmds: dict[int, list[str]] = {}
        for e in self.case.endpoints:
            pod_cmds[e.index] = ["link set lo up"]
            for link in self.links(e):
                node_side, pod_side = self._wire(e, link)
                node_cmds += node_side
                pod_cmds[e.index] += pod_side
        run(["ip", "-n", self.node, "-batch", "-"], stdin="\n".join(node_cmds) + "\n")
        run(["ip", "netns", "exec", self.node, "sh", "-ec", "\n".join(self._node_finish())])
        procs = [
            self._spawn(["ip", "-n", self.pod_ns[i], "-batch", "-"], "\n".join(cmds) + "\n")
            for i, cmds in pod_cmds.items()
        ]
        for argv, proc in procs:
            out, err = proc.communicate()
            if proc.returncode != 0:
                raise RuntimeError(f"{' '.join(argv)} failed:\n{err}{out}")

    def _node_setup(self) -> list[str]:
        """``ip -batch`` lines for the node before any pod is wired (a topology's own devices)."""
        return []

    def _node_finish(self) -> list[str]:
        """Shell lines run in the node namespace once every link exists."""
        return ["echo 1 > /proc/sys/net/ipv4/ip_forward", "echo 1 > /proc/sys/net/ipv6/conf/all/forwarding"]

    @staticmethod
    def links(e: Endpoint) -> list[Link]:
        """Every interface of ``e``: ``eth0`` on the primary network, one more per attachment."""
        primary = Link(f"vp{e.index}", "eth0", _pod_mac(e.index), e.addresses, None, ())
        return [primary] + [
            Link(f"vp{e.index}n{k}", a.interface, _pod_mac(e.index, k), a.addresses, a.network, a.ranges)
            for k, a in enumerate(e.attachments, 1)
        ]

    def _wire(self, e: Endpoint, link: Link) -> tuple[list[str], list[str]]:
        """``ip -batch`` lines (node side, pod side) routing ``link`` through the node Calico-style:
        /32 (/128) routes to it, a default route (the primary) or its network's ranges from it."""
        node = [
            f"link add {link.veth} address {NODE_MAC} type veth peer name {link.interface}"
            f" address {link.mac} netns {self.pod_ns[e.index]}",
            f"link set {link.veth} up",
        ]
        pod = [f"link set {link.interface} up"]
        for address in link.addresses:
            v6 = address.version == 6
            gateway = GATEWAY["v6" if v6 else "v4"]
            node += [
                f"route add {address}/{address.max_prefixlen} dev {link.veth}",
                f"neigh replace {address} lladdr {link.mac} dev {link.veth} nud permanent",
            ]
            pod += [
                f"address add {address}/{address.max_prefixlen} dev {link.interface}"
                + (" nodad" if v6 else ""),
                f"neigh replace {gateway} lladdr {NODE_MAC} dev {link.interface} nud permanent",
            ]
            if link.network is None:
                pod.append(
                    f"route add {'::/0' if v6 else '0.0.0.0/0'} via {gateway} dev {link.interface} onlink"
                )
            else:  # its own range goes out of its own interface, from its address
                pod += [
                    f"route add {net} via {gateway} dev {link.interface} onlink src {address}"
                    for net in link.ranges
                    if net.version == address.version
                ]
        return node, pod

    @staticmethod
    def _spawn(argv: list[str], stdin: str) -> tuple[list[str], subprocess.Popen[str]]:
        proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert proc.stdin is not None
        proc.stdin.write(stdin)
        proc.stdin.close()
        proc.stdin = None  # communicate() must not touch the closed pipe
        return argv, proc

    def _start_servers(self) -> None:
        """One agent per endpoint: it serves every port and later runs that endpoint's probes."""
        ports = [str(p) for p in self.case.listen_ports()]
        for e in self.case.endpoints:
            log = self.workdir / f"agent-{e.index}.log"
            argv = ["ip", "netns", "exec", self.pod_ns[e.index], sys.executable, "-I", str(AGENT), "serve"]
            with log.open("w") as stderr:
                self._servers[e.index] = subprocess.Popen(
                    [*argv, *ports], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True
                )
        for e in self.case.endpoints:
            line = self._agent_line(e.index)
            if line.strip() != "ready":
                raise RuntimeError(f"agent in {e.ref} did not start: {line!r}\n{self._agent_log(e.index)}")

    def _agent_line(self, index: int) -> str:
        stdout: IO[str] | None = self._servers[index].stdout
        return stdout.readline() if stdout else ""

    def _agent_log(self, index: int) -> str:
        return (self.workdir / f"agent-{index}.log").read_text(errors="replace")

    # -- running things in the node --------------------------------------------------------------
    def node_exec(
        self, argv: Sequence[str], *, check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return run(["ip", "netns", "exec", self.node, *argv], stdin=stdin, check=check)

    def npc(
        self, *args: str, check: bool = True, path: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``python -m npc ARGS`` inside the node namespace, exactly as a user would run it there.

        ``path`` replaces PATH for that run (to hand npc a tool that misbehaves on purpose).
        """
        prefix = ["env", f"PATH={path}"] if path is not None else []
        return self.node_exec([*prefix, sys.executable, "-m", "npc", *args], check=check)

    def apply(
        self,
        *,
        backend: str = "iptables",
        form: str = "yaml",
        policies: Sequence[Mapping[str, Any]] | None = None,
        endpoints: Iterable[Endpoint] | None = None,
        extra_args: Sequence[str] = (),
        check: bool = True,
        path: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Write inputs to a fresh folder and ``npc apply`` them in the node namespace.

        Defaults to the case's own policies and pods; pass ``policies`` / ``endpoints`` (a subset of
        the case's pods in the inventory) to re-apply changed inputs to the running cluster.
        """
        self._applies += 1
        directory = self.workdir / f"apply-{self._applies}"
        paths, inventory = write_inputs(self.case, directory, form, endpoints, policies)
        args = ["apply", *map(str, paths), "--inventory", str(inventory), "--backend", backend, *extra_args]
        return self.npc(*args, check=check, path=path)

    @contextmanager
    def hold(
        self, src: Endpoint, dst: Endpoint, port: int, family: Family = "v4", timeout: float = PROBE_TIMEOUT
    ) -> Iterator[Callable[[], str]]:
        """A TCP connection from ``src`` to ``dst`` opened now and kept open: yields ``echo()``.

        ``echo()`` sends over that same connection and says ``ok``, ``timeout`` or ``error: ...``;
        it is never reopened, so an ``ok`` after a rule change proves the connection survived it.
        """
        address = dst.address(family)
        argv = ["ip", "netns", "exec", self.pod_ns[src.index], sys.executable, "-I", str(AGENT), "hold"]
        log = self.workdir / f"hold-{src.index}-{dst.index}.log"
        with log.open("w") as stderr:
            proc = subprocess.Popen(
                [*argv, str(address), str(port), str(timeout)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True,
            )  # fmt: skip
        assert proc.stdin is not None and proc.stdout is not None
        stdin, stdout = proc.stdin, proc.stdout

        def echo() -> str:
            stdin.write("\n")
            stdin.flush()
            return stdout.readline().strip() or f"error: agent died: {log.read_text(errors='replace')}"

        try:
            opened = stdout.readline().strip()
            if opened != "connected":
                raise RuntimeError(f"{src.ref} could not connect to {address}:{port}: {opened!r}")
            yield echo
        finally:
            stdin.close()
            try:
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    # -- probing ----------------------------------------------------------------------------------
    def probe(
        self,
        checks: Sequence[Check] | None = None,
        timeout: float = PROBE_TIMEOUT,
        retry_timeout: float | None = RETRY_TIMEOUT,
    ) -> list[Observation]:
        """Every ordered pair of distinct endpoints for each check, one prober process per source.

        A probe expected to pass that timed out is tried once more with ``retry_timeout``: a busy
        machine can delay an answer, but no amount of load makes a dropped packet arrive, so this
        removes flakiness without hiding a wrong verdict. ``None`` reports every timeout as seen,
        for probes that must catch a drop lasting a moment (a retry would hide it).

        Threads may probe at once if their checks probe from disjoint sources (one agent each).
        """
        checks = list(self.case.checks if checks is None else checks)
        endpoints = self.case.endpoints
        targets: dict[int, list[list[object]]] = {e.index: [] for e in endpoints}
        for k, check in enumerate(checks):
            for src in endpoints:
                for dst in endpoints:
                    address = dst.address(check.family, check.network)
                    wanted = check.expect[src.index][dst.index]
                    source = src.address(check.family, check.network)
                    if src.index == dst.index or wanted == "?" or address is None or source is None:
                        continue
                    key = f"{k}:{src.index}:{dst.index}"
                    targets[src.index].append([key, str(address), check.protocol, check.port])
        results = self._run_probers(targets, timeout)
        if retry_timeout is not None:
            retry = {
                i: [
                    t
                    for t in ts
                    if results[str(t[0])] == "timeout" and self._expected(checks, str(t[0])) == "."
                ]
                for i, ts in targets.items()
            }
            results.update(self._run_probers(retry, retry_timeout))
        return [self._observation(k, check, results) for k, check in enumerate(checks)]

    @staticmethod
    def _expected(checks: Sequence[Check], key: str) -> str:
        k, i, j = map(int, key.split(":"))
        return checks[k].expect[i][j]

    def _run_probers(self, targets: Mapping[int, list[list[object]]], timeout: float) -> dict[str, str]:
        """Hand each source's targets to its agent at once, then collect every agent's answer."""
        asked = [i for i, t in targets.items() if t]
        for i in asked:
            stdin = self._servers[i].stdin
            assert stdin is not None
            stdin.write(json.dumps({"timeout": timeout, "targets": targets[i]}) + "\n")
            stdin.flush()
        results: dict[str, str] = {}
        for i in asked:
            line = self._agent_line(i)
            if not line:
                raise RuntimeError(f"agent in {self.pod_ns[i]} died:\n{self._agent_log(i)}")
            results.update(json.loads(line))
        return results

    def _observation(self, k: int, check: Check, results: Mapping[str, str]) -> Observation:
        size = len(self.case.endpoints)
        rows: list[str] = []
        details: dict[tuple[int, int], str] = {}
        for i in range(size):
            row = ""
            for j in range(size):
                result = results.get(f"{k}:{i}:{j}")
                if result is None:
                    row += "?"
                elif result == "ok":
                    row += "."
                elif result == "timeout":
                    row += "X"
                else:
                    row += "E"
                    details[(i, j)] = result
            rows.append(row)
        return Observation(check, tuple(rows), details)
