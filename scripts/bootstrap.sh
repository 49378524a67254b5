# Sourced by examples/run.sh and tests/run.sh: make a virtualenv in .venv with npc installed.
# Works on a fresh Debian (as root: installs what is missing with apt-get) and on any Python >= 3.11.
set -euo pipefail
NPC_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}

apt_install() {
    local missing=()
    for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
    if [ ${#missing[@]} -gt 0 ]; then
        command -v apt-get >/dev/null || { echo "bootstrap: please install: ${missing[*]}" >&2; exit 1; }
        echo "bootstrap: apt-get install ${missing[*]}" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

if ! "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    apt_install python3-venv
fi
if [ ! -x "$NPC_ROOT/.venv/bin/python" ]; then
    "$PYTHON" -m venv "$NPC_ROOT/.venv"
fi
VENV_PY="$NPC_ROOT/.venv/bin/python"
"$VENV_PY" -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
# strict editable mode: a link tree that mypy can follow (the default import hook it cannot)
"$VENV_PY" -m pip install -q --disable-pip-version-check -e "$NPC_ROOT${NPC_EXTRAS:-}" \
    --config-settings editable_mode=strict
# npc's bytecode now, as pip compiles its dependencies': with PYTHONDONTWRITEBYTECODE set (as in
# many containers) every npc command compiled its modules again, 0.13 s of each start
"$VENV_PY" -m compileall -q "$NPC_ROOT/build" >/dev/null
export PATH="$NPC_ROOT/.venv/bin:$PATH"
