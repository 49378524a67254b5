#!/usr/bin/env bash
# The main job on the examples: compile the design note's policies (Kubernetes v1, and the 1.6 form)
# into iptables-restore + ipset artefacts under out/, and show them.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh
npc compile examples/policies --inventory examples/inventory.json -o out/seed
npc compile examples/legacy --inventory examples/inventory.json -o out/legacy
for dir in out/seed out/legacy; do
    for f in "$dir"/*; do echo "==> $f <=="; cat "$f"; done
done
