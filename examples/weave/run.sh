#!/usr/bin/env bash
# The design note's node: Weave Net is the second network (CNI-Genie, cni: "calico,weave") and npc
# fills the chains Weave's router hooks, enforcing the NetworkPolicies on every pod's Weave address.
# Compiles into out/weave-node/; on the node itself, the same arguments with `apply` load it.
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/bootstrap.sh
M=examples/multinet   # the design note's inventory and policies
npc compile $M/policies --inventory $M/inventory.json -o out/weave-node \
    --backend weave --network weave --ip-source genie:ip2 --policy-kinds NetworkPolicy
for f in out/weave-node/rules.v4 out/weave-node/ipsets; do echo "==> $f <=="; cat "$f"; done
