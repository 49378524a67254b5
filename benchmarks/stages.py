"""Where a compile's time goes: CPU seconds per stage for one generated cluster.

    python benchmarks/stages.py L [--generator mixed]   # the cluster run.py cached under /tmp/npc-bench

The stages are the CLI's, called one by one with the collector paused as the CLI pauses it;
``--gc`` keeps the collector running, to show what pausing it saves. The parse baseline is
measured the same way, for the ratio.
"""

from __future__ import annotations

import argparse
import gc
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

    from npc.backends import BACKENDS, get
    from npc.backends.base import Options
    from npc.inventory import build_inventory, read_inventory_documents
    from npc.ir import Program
    from npc.lower import lower
    from npc.pipeline import optimise
    from npc.resolve import Compiled, resolve
    from npc.sources import read_policy_sources

    stages: list[tuple[str, float]] = []
    clock = time.process_time()

    def done(stage: str) -> None:
        nonlocal clock
        now = time.process_time()
        stages.append((stage, now - clock))
        clock = now

    loaded = read_policy_sources([str(cluster / "policies")])
    done("policies: YAML, validation, IR")
    documents = read_inventory_documents(str(cluster / "inventory.json")).documents
    done("inventory: JSON")
    inventory = build_inventory(documents)
    done("inventory: pods and addresses")
    program = optimise(Program(loaded.policies))
    done("passes")
    lowered = lower(program)
    done("lowering")
    members = resolve(lowered, inventory)
    done("set members")
    for name in BACKENDS:
        get(name).render(Compiled(program, lowered, members), Options())
        done(f"render {name}")
    total = sum(seconds for _, seconds in stages)
    parse = child("parse", str(cluster))["cpu"]  # its own process, collector running
    for stage, seconds in stages:
        print(f"{stage:34} {seconds:6.2f} s  {seconds / total:4.0%}")
    print(f"{'total':34} {total:6.2f} s   ({total / parse:.2f}x the {parse:.2f} s parse baseline)")


if __name__ == "__main__":
    main()
