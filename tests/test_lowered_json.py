"""The manifest's program: every case's lowered program survives JSON unchanged, so a node loading
reviewed artefacts renders byte for byte the rules that were reviewed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from kernel.case import Case, load_cases, write_inputs
from npc.backends.iptables.mark_tree import Marks
from npc.backends.iptables.render import render_rules
from npc.errors import InputError
from npc.lowered_json import decode


@pytest.mark.parametrize("case", load_cases()[::3], ids=lambda c: c.id)
def test_the_manifest_program_renders_the_reviewed_rules(case: Case, tmp_path: Path) -> None:
    paths, inventory = write_inputs(case, tmp_path / "in")
    out = tmp_path / "out"
    argv = [
        sys.executable,
        "-m",
        "npc",
        "compile",
        *map(str, paths),
        "--inventory",
        str(inventory),
        "-o",
        str(out),
    ]
    subprocess.run(argv, check=True, capture_output=True)
    manifest = json.loads((out / "manifest.json").read_text())
    lowered = decode(manifest["program"])
    for family in (4, 6):
        assert render_rules(lowered, family, Marks()) == (out / f"rules.v{family}").read_text()
    sets = manifest["program"]["sets"]
    kinds = {meaning["kind"] for meaning in sets.values()}
    assert "pods" in kinds  # every case has an isolation set at least
    assert all(("peers" in m) or ("cidr" in m) or ("port" in m) for m in sets.values())


def test_a_foreign_program_is_an_input_error() -> None:
    with pytest.raises(InputError) as caught:
        decode({"format": 1, "sets": {"x": {"kind": "weird", "family": 4}}}, "m.json")
    assert caught.value.render().startswith("m.json: error: program:")
