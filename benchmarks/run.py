"""Compile generated clusters (see ``generate.py``) and print what it costs, one table row per size.

    python benchmarks/run.py --sizes S,M,L          # clusters cached under /tmp/npc-bench

Every measurement runs in its own child process, so peak RSS (``wait4``) is that of one job:
- compile: the real CLI, ``python -m npc compile POLICIES --inventory INVENTORY -o OUT``, wall
  time from fork to exit (interpreter start and imports included) and its CPU time;
- parse: the same inputs merely parsed (PyYAML's C loader over every policy file, ``json`` for
  the inventory), timed inside the child, so the compile/parse ratio is a pessimistic one;
- stats: the naive rule count (one rule per selected pod x peer pod x port, per policy rule) and,
  per backend, what a packet costs;
- load (root only): ``ipset restore`` + ``iptables-restore`` + ``ip6tables-restore`` of the
  artefacts into a fresh network namespace, removed afterwards; for nftables one ``nft -f``:
  the tools alone on the artefact files, the floor; and npc's own load (``npc apply`` after its
  compile: the backend's ``load`` in a fresh namespace, rendering included);
- dataplane (root, ``--dataplane``): ``dataplane.py``'s flood of new flows through a node with
  the artefacts loaded, as a share of the no-policy rate, on each layout's deepest pair of pods
  (the lower of the two).
- per backend: its own compile into ``out-<backend>`` (the main compile columns are the default
  backend's), the artefacts' size, and the most rules one packet is tested against.

Columns are data: another backend adds its name to ``MEASURED`` and its columns to
``BACKEND_COLUMNS`` (and a loader to ``LOADERS``) without touching the rest.
"""

from __future__ import annotations

import argparse
import functools
import glob
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dataplane
import generate
import generate_catalogue
import generate_independent
import generate_mixed
import generate_thirdparty
from generate import SIZES, ClusterSpec

# generator name -> its writer; every generator writes the same files for the same sizes
GENERATORS: dict[str, Callable[[ClusterSpec, Path], Path]] = {
    "bench": generate.write_cluster,
    "mixed": generate_mixed.write_cluster,
    "lists": functools.partial(generate_mixed.write_cluster, lists=True),
    "catalogue": generate_catalogue.write_cluster,
    "independent": generate_independent.write_cluster,
    "independent-messy": functools.partial(generate_independent.write_cluster, mix="messy"),
    "thirdparty": generate_thirdparty.write_cluster,  # written by someone who saw no npc code
}

DATA = Path(tempfile.gettempdir()) / "npc-bench"
Metrics = dict[str, Any]


# --- child processes ---------------------------------------------------------------------------


@attrs.frozen
class Measured:
    wall: float
    cpu: float
    peak_rss: int  # bytes
    stdout: str


def measure(argv: Sequence[str]) -> Measured:
    """Run ``argv`` to completion; its own wall time, CPU time and peak RSS (not the parent's)."""
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, text=True)
        assert proc.stdout is not None
        out = proc.stdout.read()
        proc.stdout.close()
        _, status, usage = os.wait4(proc.pid, 0)  # reaped here, so the usage is this child's alone
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            err.seek(0)
            raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}):\n{err.read().decode()}")
    return Measured(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024, out)


def child(mode: str, *args: str) -> Metrics:
    return json.loads(measure([sys.executable, __file__, "--child", mode, *args]).stdout)  # type: ignore[no-any-return]


def parse_only(cluster: Path) -> Metrics:
    """What merely reading the inputs costs: the floor any compiler of these files stands on."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    start, cpu = time.perf_counter(), time.process_time()
    documents = 0
    for name in sorted(glob.glob(str(cluster / "policies" / "**" / "*"), recursive=True)):
        if not name.endswith((".yaml", ".yml", ".json")):
            continue
        with open(name, encoding="utf-8") as fh:
            text = fh.read()
        if name.endswith(".json"):  # as npc reads them: ``json``, not YAML
            documents += json.loads(text) is not None
        else:
            documents += sum(1 for _ in yaml.load_all(text, Loader=loader))
    with open(cluster / "inventory.json", encoding="utf-8") as fh:
        items = len(json.load(fh)["items"])
    return {
        "seconds": time.perf_counter() - start,
        "cpu": time.process_time() - cpu,
        "documents": documents,
        "items": items,
    }


def naive_rules(program: Any, inventory: Any) -> int:
    """One rule per selected pod x peer pod (or ipBlock, or "anyone") x port, per policy rule:
    what rendering each policy rule per pod, as the plugins that blew up did, would emit."""
    from npc.ir import PodPeer
    from npc.resolve import PodIndex

    index = PodIndex(inventory)
    total = 0
    for policy in program.policies:
        selected = len(index.peer_pods(policy.target))
        for direction in ("ingress", "egress"):
            for rule in policy.rules(direction) or ():
                peers = 1 if rule.peers is None else 0
                for peer in rule.peers or ():
                    peers += len(index.peer_pods(peer)) if isinstance(peer, PodPeer) else 1
                total += selected * peers * max(1, len(rule.ports))
    return total


# the backends measured; each gets the same columns below
MEASURED = ("iptables", "nftables")


def policed_addresses(program: Any, inventory: Any) -> int:
    """Addresses (both families) of the pods some policy selects: what set entries are per."""
    from npc.resolve import PodIndex

    index = PodIndex(inventory)
    numbers = {i for policy in program.policies for i in index.peer_pods(policy.target)}
    return sum(len(index.addresses(numbers, family)) for family in (4, 6))


def stats(cluster: Path) -> Metrics:
    from npc import pipeline
    from npc.backends import get
    from npc.backends.base import Options
    from npc.ir import Program
    from npc.networks import network_spec

    sources = pipeline.read_sources([str(cluster / "policies")], str(cluster / "inventory.json"))
    job = pipeline.build(sources, network_spec("default", None, None))
    original = Program(sources.loaded.policies)
    inventory = job.assembled.inventory
    unoptimised = pipeline.compile_program(original, inventory, passes=())
    iptables, options = get("iptables"), Options()
    return {
        "policies": len(original.policies),
        "pods": len(inventory.pods),
        "naive": naive_rules(original, inventory),
        "policed_addresses": policed_addresses(original, inventory),
        # every -A rule, plus the FORWARD jump each family's file inserts
        "rules_without_passes": sum(iptables.rule_counts(unoptimised, options).values()) + 2,
        "backends": {
            name: {"rules_per_packet": get(name).rules_per_packet(job.compiled, options)} for name in MEASURED
        },
    }


# --- loading into a throw-away network namespace --------------------------------------------------


def _netns(name: str, *argv: str, stdin: str | None = None) -> float:
    start = time.perf_counter()
    with open(stdin, "rb") if stdin else open(os.devnull, "rb") as fh:
        subprocess.run(["ip", "netns", "exec", name, *argv], stdin=fh, check=True, capture_output=True)
    return time.perf_counter() - start


def load_iptables(out: Path) -> Metrics:
    """Seconds to ``ipset restore`` and ``ip(6)tables-restore --noflush`` into an empty namespace."""
    name = f"npc-bench-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        ipset = _netns(name, "ipset", "restore", stdin=str(out / "ipsets"))
        seconds = ipset + _netns(name, "iptables-restore", "--noflush", stdin=str(out / "rules.v4"))
        seconds += _netns(name, "ip6tables-restore", "--noflush", stdin=str(out / "rules.v6"))
        version = subprocess.run(["iptables-restore", "--version"], capture_output=True, text=True).stdout
        return {"load_s": seconds, "ipset_s": ipset, "flavour": "nft" if "nf_tables" in version else "legacy"}
    finally:
        for tool in ("iptables", "ip6tables"):  # rules first: sets in use cannot be destroyed
            for flag in ("-F", "-X"):
                subprocess.run(["ip", "netns", "exec", name, tool, flag], capture_output=True)
        subprocess.run(["ip", "netns", "exec", name, "ipset", "destroy"], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], check=True)


def load_nftables(out: Path) -> Metrics:
    """Seconds to ``nft -f ruleset.nft`` into an empty namespace (one transaction)."""
    name = f"npc-bench-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        return {"load_s": _netns(name, "nft", "-f", str(out / "ruleset.nft"))}
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)


LOADERS: dict[str, Callable[[Path], Metrics]] = {"iptables": load_iptables, "nftables": load_nftables}


DATAPLANE_SECONDS, DATAPLANE_REPEAT = 3.0, 3  # per flood; alternating pairs, the median ratio


_pairs = functools.cache(dataplane.worst_pairs)  # one compile per cluster for both backends


def dataplane_ratio(cluster: Path, backend: str) -> Metrics:
    """``dataplane.measure``: new flows forwarded with the backend's artefacts loaded, as a share
    of the no-policy rate, on the worse of both layouts' deepest pairs (empty where no allowed
    pair is found)."""
    try:
        found = dataplane.measure(cluster, backend, DATAPLANE_SECONDS, DATAPLANE_REPEAT, _pairs(cluster))
    except SystemExit as exc:
        print(f"{cluster.name} {backend}: dataplane: {exc}", file=sys.stderr)
        return {}
    return {"dataplane": found["ratio"], "dataplane_pair": found["pair"]}


def npc_load(cluster: Path, backend: str, families: str = "IPv4,IPv6") -> Metrics:
    """What ``npc apply`` spends after compiling, into an empty namespace: the backend's ``load``
    (rendering, then the kernel work as npc does it: the sets over netlink, IPv4's and IPv6's
    restores at once; nftables one ``nft -f``). The tool-only columns run the tools alone.
    ``families``: the network's ``--ip-families``."""
    name = f"npc-bench-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        argv = [sys.executable, __file__, "--child", "npc-load", str(cluster), backend, families]
        done = subprocess.run(
            ["ip", "netns", "exec", name, *argv], check=True, capture_output=True, text=True
        )
        return json.loads(done.stdout)  # type: ignore[no-any-return]
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)


def load_here(cluster: Path, backend: str, families: str) -> Metrics:
    """``npc_load``'s child, in the namespace: compile in-process, then time the load alone."""
    from npc import collector, pipeline
    from npc.backends import get
    from npc.backends.base import Options, SubprocessRunner
    from npc.networks import network_spec

    policies, inventory = str(cluster / "policies"), str(cluster / "inventory.json")
    network = network_spec(ip_families=families)
    collector.exit_without_freeing()  # as ``cli.run``: this child exits once it has reported
    with collector.paused(to_the_end=True):  # as ``npc apply`` compiles: the collector stays off
        job = pipeline.build_all(pipeline.read_sources([policies], inventory), [network])[0]
    start = time.perf_counter()
    with collector.paused():  # as ``npc apply`` loads; with the collector on, leaving this block
        get(backend).load(job.compiled, Options(), SubprocessRunner())  # collected 0.2 s of garbage
    return {"npc_load_s": time.perf_counter() - start}


# --- one size ----------------------------------------------------------------------------------


def cluster_for(spec: ClusterSpec, data: Path, generator: str = "bench") -> Path:
    """The generated cluster, cached by its spec and the generators' sources."""
    where = data / (f"{spec.name}-{spec.seed}" + ("" if generator == "bench" else f"-{generator}"))
    stamp = where / "spec.json"
    modules = [generate, generate_mixed, generate_catalogue]  # what the first four mixes' stamps hash
    if generator.startswith("independent"):
        modules.append(generate_independent)
    if generator == "thirdparty":
        modules.append(generate_thirdparty)
    sources = hashlib.sha256(b"".join(Path(m.__file__).read_bytes() for m in modules))
    wanted = json.dumps({**attrs.asdict(spec), "generator": [generator, sources.hexdigest()]}, sort_keys=True)
    if not stamp.exists() or stamp.read_text() != wanted:
        print(f"generating {generator} {spec.name} into {where} ...", file=sys.stderr)
        # in a child: a generator holds the whole cluster, and every child this process starts
        # afterwards would report this process's peak as its own (Linux keeps it across exec)
        child("generate", str(where), generator, json.dumps(attrs.asdict(spec)))
        stamp.write_text(wanted)
    return where


def _artefact_counts(out: Path) -> Metrics:
    rules = sum(
        1 for f in ("rules.v4", "rules.v6") for line in (out / f).open() if line.startswith(("-A ", "-I "))
    )
    sets = entries = 0
    for line in (out / "ipsets").open():
        sets += line.startswith("create ")
        entries += line.startswith("add ")
    return {"rules": rules, "sets": sets, "entries": entries}


def compile_to(cluster: Path, backend: str) -> tuple[Path, Measured]:
    """``npc compile`` of the cluster with ``backend`` into ``out-<backend>``, measured."""
    out = cluster / f"out-{backend}"
    policies, inventory = str(cluster / "policies"), str(cluster / "inventory.json")
    argv = [sys.executable, "-m", "npc", "compile", policies, "--inventory", inventory]
    return out, measure([*argv, "--backend", backend, "-o", str(out)])


def output_bytes(out: Path) -> int:
    """The artefacts' size, the manifest left out."""
    return sum(f.stat().st_size for f in out.iterdir() if f.name != "manifest.json")


MATRIX_PODS = 10_000


def first_and_last_pods(cluster: Path) -> tuple[int, str, str]:
    """How many pods the inventory lists, and the first and the last that npc polices, running
    on the pod network (``namespace/name``): explain answers about those only."""
    pods = [i for i in json.loads((cluster / "inventory.json").read_text())["items"] if i["kind"] == "Pod"]
    live = [p for p in pods if p["status"]["phase"] == "Running" and not p["spec"].get("hostNetwork")]
    first, last = (f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in (live[0], live[-1]))
    return len(pods), first, last


def analysis(cluster: Path) -> Metrics:
    """``npc matrix --format json`` over every default port (output discarded, so only npc is timed)
    and ``npc explain`` of one pair (the first and the last live pod listed). No matrix above
    ``MATRIX_PODS``: at L one port's matrix alone is 2.5 GB of cells."""
    policies, inventory = str(cluster / "policies"), str(cluster / "inventory.json")
    count, first, last = child("pods", str(cluster))["pods"]  # not read here: children would inherit the RSS
    out: Metrics = {}
    if count <= MATRIX_PODS:
        npc = f"exec {sys.executable} -m npc"
        argv = ["sh", "-c", f"{npc} matrix {policies} --inventory {inventory} --format json >/dev/null"]
        matrix = measure(argv)
        out.update(matrix_s=matrix.wall, matrix_cpu_s=matrix.cpu)
    explain = measure(
        [sys.executable, "-m", "npc", "explain", policies, "--inventory", inventory,
         "--from", first, "--to", last, "--port", "tcp/80"]
    )  # fmt: skip
    return {**out, "explain_s": explain.wall, "explain_cpu_s": explain.cpu}


def bench(
    spec: ClusterSpec, data: Path, load: bool, generator: str = "bench", pairs: int = 3, flood: bool = False
) -> Metrics:
    """``pairs`` parses and compiles, alternating, so that a slow spell of a shared machine meets
    both: the ratio is the median of each pair's (one parse of 7.1 s against 4.2 s an hour before
    once made a compile look 1.08x its parse), the times the medians. ``flood``: the dataplane
    too (``dataplane_ratio``)."""
    cluster = cluster_for(spec, data, generator)
    runs = []
    for _ in range(pairs):
        parse = child("parse", str(cluster))
        out, compiled = compile_to(cluster, "iptables")
        runs.append((parse, compiled))
    row: Metrics = {
        "generator": generator,
        "size": spec.name,
        "compile_s": statistics.median(c.wall for _, c in runs),
        "compile_cpu_s": statistics.median(c.cpu for _, c in runs),
        "peak_rss": max(c.peak_rss for _, c in runs),
        "parse_s": statistics.median(p["seconds"] for p, _ in runs),
        "parse_cpu_s": statistics.median(p["cpu"] for p, _ in runs),
        "compile_parse": statistics.median(c.wall / p["seconds"] for p, c in runs),
        **_artefact_counts(out),
        **child("stats", str(cluster)),
        **analysis(cluster),
    }
    for name, metrics in row["backends"].items():
        where, done = (out, compiled) if name == "iptables" else compile_to(cluster, name)
        metrics.update(compile_s=done.wall, output_bytes=output_bytes(where))
        if load and os.geteuid() == 0:
            metrics.update(LOADERS[name](where))
            metrics.update(npc_load(cluster, name))
            if flood:
                metrics.update(dataplane_ratio(cluster, name))
    return row


# --- the table ---------------------------------------------------------------------------------


@attrs.frozen
class Column:
    title: str
    value: Callable[[Metrics], object]
    format: str = "{}"

    def cell(self, row: Metrics) -> str:
        try:
            value = self.value(row)
        except KeyError:
            return "-"
        return self.format.format(value)


def _backend(name: str, key: str) -> Callable[[Metrics], object]:
    return lambda row: row["backends"][name][key]


COLUMNS = [
    Column("generator", lambda r: r["generator"]),
    Column("size", lambda r: r["size"]),
    Column("pods", lambda r: r["pods"], "{:,}"),
    Column("policies", lambda r: r["policies"], "{:,}"),
    Column("compile s", lambda r: r["compile_s"], "{:.2f}"),
    Column("compile cpu s", lambda r: r["compile_cpu_s"], "{:.2f}"),
    Column("parse s", lambda r: r["parse_s"], "{:.2f}"),
    Column("compile/parse", lambda r: r["compile_parse"], "{:.2f}x"),
    Column("peak RSS", lambda r: r["peak_rss"] / 2**20, "{:,.0f} MiB"),
    Column("rules (v4+v6)", lambda r: r["rules"], "{:,}"),
    Column("without passes", lambda r: r["rules_without_passes"], "{:,}"),
    Column("sets", lambda r: r["sets"], "{:,}"),
    Column("set entries", lambda r: r["entries"], "{:,}"),
    Column("entries/policed address", lambda r: r["entries"] / max(1, r["policed_addresses"]), "{:.1f}"),
    Column("naive rules", lambda r: r["naive"], "{:,}"),
    Column("naive/rules", lambda r: r["naive"] / r["rules"], "{:,.0f}x"),
    Column("matrix s", lambda r: r["matrix_s"], "{:.2f}"),
    Column("matrix cpu s", lambda r: r["matrix_cpu_s"], "{:.2f}"),
    Column("explain s", lambda r: r["explain_s"], "{:.2f}"),
    Column("explain cpu s", lambda r: r["explain_cpu_s"], "{:.2f}"),
]
BACKEND_COLUMNS: dict[str, list[Column]] = {
    "iptables": [
        Column("iptables rules/packet", _backend("iptables", "rules_per_packet"), "{:,}"),
        Column("iptables output", lambda r: r["backends"]["iptables"]["output_bytes"] / 2**10, "{:,.0f} KiB"),
        Column("iptables load s", _backend("iptables", "load_s"), "{:.2f}"),
        Column("of which ipset restore s", _backend("iptables", "ipset_s"), "{:.2f}"),
        Column("iptables npc load s", _backend("iptables", "npc_load_s"), "{:.2f}"),
        Column("iptables dataplane", _backend("iptables", "dataplane"), "{:.2f}"),
    ],
    "nftables": [
        Column("nftables compile s", _backend("nftables", "compile_s"), "{:.2f}"),
        Column("nftables rules/packet", _backend("nftables", "rules_per_packet"), "{:,}"),
        Column("nftables output", lambda r: r["backends"]["nftables"]["output_bytes"] / 2**10, "{:,.0f} KiB"),
        Column("nftables load s", _backend("nftables", "load_s"), "{:.2f}"),
        Column("nftables npc load s", _backend("nftables", "npc_load_s"), "{:.2f}"),
        Column("nftables dataplane", _backend("nftables", "dataplane"), "{:.2f}"),
    ],
}


def table(rows: Sequence[Metrics], columns: Sequence[Column]) -> str:
    """A Markdown table (readable as plain text too)."""
    cells = [[c.title for c in columns]] + [[c.cell(r) for c in columns] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = [
        "| " + " | ".join(v.rjust(w) for v, w in zip(line, widths, strict=True)) + " |" for line in cells
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="S,M,L", help="comma-separated, from " + ",".join(SIZES))
    parser.add_argument(
        "--generators", default="bench,mixed", help="comma-separated, from " + ",".join(GENERATORS)
    )
    parser.add_argument("--data", type=Path, default=DATA, help="where generated clusters are cached")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-load", action="store_true", help="skip loading into a network namespace")
    parser.add_argument(
        "--dataplane",
        action="store_true",
        help="also flood new flows through each loaded ruleset (dataplane.py; root, about 80 s per backend and size)",
    )
    parser.add_argument("--json", type=Path, help="also write the raw measurements here")
    parser.add_argument(
        "--pairs", type=int, default=3, help="alternating parses and compiles (medians; default 3)"
    )
    parser.add_argument(
        "--loads",
        metavar="FAMILIES",
        help="only npc's load of each size's cluster with both backends, for a network of these "
        "--ip-families (IPv4: what a single-stack cluster of that size pays)",
    )
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        mode, path = args.child[0], Path(args.child[1])
        if mode == "npc-load":
            print(json.dumps(load_here(path, args.child[2], args.child[3])))
        elif mode == "generate":
            GENERATORS[args.child[2]](ClusterSpec(**json.loads(args.child[3])), path)
            print("{}")
        elif mode == "pods":
            print(json.dumps({"pods": first_and_last_pods(path)}))
        else:
            print(json.dumps(parse_only(path) if mode == "parse" else stats(path)))
        return 0
    runs = []  # (generator, size name, spec), each name checked before anything runs
    for generator in args.generators.split(","):
        if generator not in GENERATORS:
            parser.error(f"unknown generator {generator!r}")
        for name in args.sizes.split(","):
            if name not in SIZES:
                parser.error(f"unknown size {name!r}")
            runs.append((generator, name, attrs.evolve(SIZES[name], seed=args.seed)))
    if args.loads:
        for generator, name, spec in runs:
            cluster = cluster_for(spec, args.data, generator)
            for backend in LOADERS:
                took = npc_load(cluster, backend, args.loads)["npc_load_s"]
                print(f"{generator} {name} {backend} --ip-families {args.loads}: npc load {took:.2f} s")
        return 0
    rows = []
    for generator, name, spec in runs:
        rows.append(bench(spec, args.data, not args.no_load, generator, args.pairs, args.dataplane))
        print(f"{generator} {name}: done", file=sys.stderr)
    columns = COLUMNS + [c for cs in BACKEND_COLUMNS.values() for c in cs]
    print(table(rows, columns))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2, default=_jsonable) + "\n")
    return 0


def _jsonable(value: object) -> object:
    return value if isinstance(value, Mapping) else str(value)


if __name__ == "__main__":
    raise SystemExit(main())
