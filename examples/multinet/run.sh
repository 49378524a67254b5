#!/usr/bin/env bash
# The design note's CNI-Genie cluster end to end: the same policies compiled for the primary
# (calico) network and for the weave network, whose addresses only multi-ip-preferences knows.
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/bootstrap.sh
E=examples/multinet
# 1. the primary network, as any plugin would do it: NetworkPolicy on status.podIPs
npc compile $E/policies $E/multinetwork --inventory $E/inventory.json -o out/multinet/default
# 2. the design note's fix, without forking a plugin: the same NetworkPolicies on each pod's ip2
npc compile $E/policies $E/multinetwork --inventory $E/inventory.json -o out/multinet/weave-np \
    --network weave --ip-source genie:ip2 --policy-kinds NetworkPolicy
# 3. or only what MultiNetworkPolicy objects say about weave (k8s.v1.cni.cncf.io/policy-for: weave)
npc compile $E/policies $E/multinetwork --inventory $E/inventory.json -o out/multinet/weave-mnp \
    --network weave --ip-source genie:ip2
# 4. every network of the node in one run: out/multinet/all/default/ and out/multinet/all/weave/
npc compile $E/policies $E/multinetwork --inventory $E/inventory.json -o out/multinet/all \
    --networks $E/networks.yaml
for dir in out/multinet/default out/multinet/weave-np out/multinet/weave-mnp; do
    echo "==> $dir/ipsets <=="; cat "$dir/ipsets"
done
