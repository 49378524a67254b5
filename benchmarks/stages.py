"""Where a compile's time and memory go: CPU seconds and RSS per stage for one generated cluster.

    python benchmarks/stages.py L [--generator mixed]   # the cluster run.py cached under /tmp/npc-bench

The stages are the CLI's, called one by one with the collector paused as the CLI pauses it, all
in this process (a compile parses part of the policy YAML ahead in a child when a core is idle;
here that child is off, so every stage's CPU is counted); ``--gc`` keeps the collector running,
to show what pausing it saves. The parse baseline is measured the same way, for the ratio.
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import time
from pathlib import Path

import attrs
from generate import SIZES
from run import DATA, GENERATORS, child, cluster_for


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("size", choices=sorted(SIZES))
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--generator", default="bench", choices=sorted(GENERATORS))
    parser.add_argument("--gc", action="store_true", help="leave the garbage collector running")
    args = parser.parse_args()
    cluster = cluster_for(attrs.evolve(SIZES[args.size], seed=args.seed), args.data, args.generator)
    if not args.gc:
        gc.disable()

    from npc import parse_ahead
    from npc.backends import BACKENDS, get
    from npc.backends.base import Options
    from npc.inventory import read_inventory_documents
    from npc.lower import lower
    from npc.networks import network_spec
    from npc.pipeline import Build, Compiled, Sources, assemble, manifest, optimise
    from npc.resolve import resolve
    from npc.sources import read_policy_sources

    parse_ahead.MIN_BYTES = sys.maxsize  # everything in this process, so its clock sees it all
    stages: list[tuple[str, float, float, float]] = []
    clock = time.process_time()

    def done(stage: str) -> None:
        """The stage's CPU, then the process's resident and peak memory after it (MiB)."""
        nonlocal clock
        now = time.process_time()
        resident = int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize() / 2**20
        stages.append(
            (stage, now - clock, resident, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10)
        )
        clock = now

    inventory_path = str(cluster / "inventory.json")
    loaded = read_policy_sources([str(cluster / "policies")])
    done("policies: YAML, validation, IR")
    found = read_inventory_documents(inventory_path)
    done("inventory: JSON")
    sources = Sources(loaded, list(found.documents), inventory_path, found.sha256, found.name, found.text)
    del found  # ``sources`` holds the documents now, as ``read_sources`` leaves them
    assembled = assemble(sources, network_spec())
    sources.release_inventory()  # as compile and apply do (``pipeline.build_all``)
    done("inventory: pods and addresses")
    program = optimise(assembled.program)
    done("passes")
    lowered = lower(program)
    done("lowering")
    members = resolve(lowered, assembled.inventory)
    done("set members")
    compiled = Compiled(program, lowered, members)
    for name in BACKENDS:
        files = get(name).render(compiled, Options())
        done(f"render {name}")
        if name == "iptables":
            manifest(Build(sources, assembled, compiled), get(name), Options(), files)
            done("manifest (iptables)")
    total = sum(seconds for _, seconds, _, _ in stages)
    parse = child("parse", str(cluster))["cpu"]  # its own process, collector running
    print(f"{'stage':34} {'CPU':>8}  {'share':>5}  {'RSS after':>9}  {'peak':>8}")
    for stage, seconds, resident, peak in stages:
        print(f"{stage:34} {seconds:6.2f} s  {seconds / total:5.0%}  {resident:5.0f} MiB  {peak:4.0f} MiB")
    print(f"{'total':34} {total:6.2f} s   ({total / parse:.2f}x the {parse:.2f} s parse baseline)")


if __name__ == "__main__":
    main()
