#!/usr/bin/env bash
# The main job on the examples: compile the design note's policies (Kubernetes v1, the 1.6 form, and
# the same policies in the npc language) into iptables-restore + ipset, nftables, Weave-native and
# Calico-native artefacts under out/, show them, and check that YAML and npc-language sources
# compile to the same bytes.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh
inventory=examples/inventory.json
npc compile examples/policies --inventory "$inventory" -o out/seed
npc compile examples/policies --inventory "$inventory" -o out/seed-nft --backend nftables
npc compile examples/policies --inventory "$inventory" -o out/seed-weave --backend weave
npc compile examples/legacy --inventory "$inventory" -o out/legacy
npc compile examples/dsl --inventory "$inventory" -o out/seed-dsl
npc compile examples/policies --backend calico -o out/seed-calico
npc compile examples/dsl --backend calico -o out/seed-dsl-calico
for dir in out/seed out/seed-nft out/seed-weave out/legacy out/seed-calico; do
    for f in "$dir"/*; do echo "==> $f <=="; cat "$f"; done
done
for f in rules.v4 rules.v6 ipsets; do
    cmp out/seed/$f out/seed-dsl/$f
done
cmp out/seed-calico/calico.yaml out/seed-dsl-calico/calico.yaml
echo "examples/policies (YAML) and examples/dsl (npc language) compile to identical artefacts"
