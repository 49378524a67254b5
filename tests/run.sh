#!/usr/bin/env bash
# The whole test suite: installs what it needs (iptables, nftables, ipset; a virtualenv with npc and
# the test tools), then lint, type check, and pytest - kernel tests included when run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh
if [ "$(id -u)" = 0 ]; then apt_install iptables nftables ipset iproute2; fi
NPC_EXTRAS="[test]" source scripts/bootstrap.sh
echo "== ruff"; ruff check . && ruff format --check .
# from /tmp, so that npc is the installed link tree; the cache in this checkout, so that another
# checkout's (a shared /tmp/.mypy_cache) can never stand for this one's modules
echo "== mypy"; root=$PWD; (cd /tmp && mypy --cache-dir "$root/.mypy_cache" -p npc)
echo "== pytest"
set +e
python -m pytest "$@"
rc=$?
set -e
if [ $rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi
exit $rc
