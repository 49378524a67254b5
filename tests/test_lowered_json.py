"""The manifest's program: every case's lowered program survives JSON unchanged, so a node loading
reviewed artefacts renders byte for byte the rules that were reviewed."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from kernel.case import Case, load_cases, write_inputs
from kernel.command import EXAMPLES
from npc.agent.inputs import ArtefactPolicies
from npc.backends.iptables.mark_tree import Marks
from npc.backends.iptables.render import render_rules
from npc.errors import InputError
from npc.ir import EVERYWHERE, PodPeer, Policy, Program, Requirement, Rule, Selector
from npc.lower import Lowered, lower, network_tag
from npc.lowered_json import decode, encode
from npc.networks import network_spec
from random_clusters import programs

SET_NAME = re.compile(r"[snp][46]-[a-z2-7]{12}")  # letter, family, digest of the meaning
CHAIN_NAME = re.compile(r"P-[a-z2-7]{12}")


def _names(lowered: Lowered) -> tuple[set[str], set[str]]:
    """Every set and every chain name the program uses, wherever it uses it."""
    sets: set[str] = set()
    chains: set[str] = set()
    for f in lowered.families:
        sets.update(s.name for s in f.sets)
        sets.update(s.name for s in f.isolated.values())
        for c in f.chains:
            chains.add(c.name)
            sets.update(s.name for m in c.matches for s in (m.peer, m.named_port) if s is not None)
        for ds in f.dispatch.values():
            sets.update(d.target.name for d in ds)
            chains.update(d.chain for d in ds)
        sets.update(s.isolated.name for scopes in f.scopes.values() for s in scopes)
        sets.update(t.name for scopes in f.scopes.values() for s in scopes for _, t in s.dispatch if t)
    return sets, chains


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(program=programs)
def test_lower_names_by_meaning_only_and_the_manifest_keeps_format_1(program: Program) -> None:
    """No backend's prefix or network tag in ``lower``'s names (backends spell those), while the
    manifest's program still spells them as format 1 did, and reads back to the same program."""
    lowered = lower(program, "blue")
    tag = network_tag("blue")
    assert lowered.tag == tag
    sets, chains = _names(lowered)
    assert sets and all(SET_NAME.fullmatch(n) for n in sets), sets
    assert all(CHAIN_NAME.fullmatch(n) for n in chains), chains
    data = encode(lowered)
    assert set(data["sets"]) == {f"npc-{tag}-{n}" for n in sets}
    assert {c["name"] for f in data["families"] for c in f["chains"]} == {f"NPC-{tag}-{n}" for n in chains}
    assert decode(json.loads(json.dumps(data))) == lowered


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(program=programs)
def test_a_format_3_manifest_tests_each_scope_entry_as_it_did(program: Program) -> None:
    """Format 3 said of a scope's entry only whether a policy selected the whole namespace: no
    test, else the entry's target, which its groups tested."""
    lowered = lower(program, "blue")
    data = json.loads(json.dumps(encode(lowered)))
    data["format"] = 3
    for f in data["families"]:
        for scopes in f["scopes"].values():
            for scope in scopes:
                scope["dispatch"] = [[i, test is None] for i, test in scope["dispatch"]]
    old = decode(data)
    for now, then in zip(lowered.families, old.families, strict=True):
        for direction, scopes in now.scopes.items():
            for scope, was in zip(scopes, then.scopes[direction], strict=True):
                assert [t for _, t in was.dispatch] == [t and d.target for d, t in scope.dispatch]


@pytest.mark.parametrize(("format", "test"), [(4, True), (4, 0), (3, "s4-x"), (3, None)])
def test_a_scope_entry_of_another_format_is_an_input_error(format: int, test: object) -> None:
    """Format 4 names a set or null per scope entry, formats 1-3 a bool: the other is no manifest
    npc wrote (a bool read as a set name, or a name as a flag, would test something else)."""
    web = Selector((Requirement("app", "In", ("web",)),))
    rule = Rule(peers=(PodPeer(EVERYWHERE, web),))
    data = encode(lower(Program((Policy("a", "p", web, ingress=(rule,)),)), "blue"))
    data["format"] = format
    (scope,) = data["families"][0]["scopes"]["ingress"]
    scope["dispatch"] = [[i, test] for i, _ in scope["dispatch"]]
    with pytest.raises(InputError) as caught:
        decode(data, "m.json")
    assert "scope entry" in caught.value.render()


def test_a_manifest_name_of_another_network_is_an_input_error() -> None:
    data = encode(lower(Program(), "blue"))
    data["tag"] = network_tag("red")
    with pytest.raises(InputError) as caught:
        decode(data, "m.json")
    assert "is not a set or chain name of network tag" in caught.value.render()


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


def test_a_scope_entry_pointing_past_the_dispatch_list_is_an_input_error() -> None:
    """An edited manifest's scope entry naming a dispatch entry that is not there (an IndexError
    that escaped ``decode`` as a traceback before)."""
    web = Selector((Requirement("app", "In", ("web",)),))
    rule = Rule(peers=(PodPeer(EVERYWHERE, web),))
    data = encode(lower(Program((Policy("a", "p", web, ingress=(rule,)),)), "blue"))
    (scope,) = data["families"][0]["scopes"]["ingress"]
    scope["dispatch"] = [[99, test] for _, test in scope["dispatch"]]
    with pytest.raises(InputError) as caught:
        decode(data, "m.json")
    assert caught.value.render().startswith("m.json: error: program: not a program npc compiled: IndexError")


@pytest.mark.parametrize(
    "files", [["ipsets"], {"../manifest.json": "00"}, {"/etc/hostname": "00"}, {"ipsets": 3}]
)
def test_an_artefacts_folder_whose_manifest_lists_files_wrongly_is_an_input_error(
    files: object, tmp_path: Path
) -> None:
    """The agent's ``--artefacts``: ``files`` must map names inside the folder to digests (a list
    was a traceback; a name outside the folder was read)."""
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "npc", "compile", str(EXAMPLES / "policies"), "-o", str(out)]
    subprocess.run(argv, check=True, capture_output=True)
    manifest = json.loads((out / "manifest.json").read_text())
    ArtefactPolicies(str(out), [network_spec()]).read()  # as written, it reads
    (out / "manifest.json").write_text(json.dumps({**manifest, "files": files}))
    with pytest.raises(InputError) as caught:
        ArtefactPolicies(str(out), [network_spec()]).read()
    assert "files: must map the folder's file names to sha256 digests" in caught.value.render()


def test_artefacts_of_another_backend_are_an_input_error(tmp_path: Path) -> None:
    """nftables artefacts under ``npc agent --backend iptables`` loaded iptables rules that no
    reviewed file showed."""
    out = tmp_path / "out"
    argv = [
        sys.executable,
        "-m",
        "npc",
        "compile",
        str(EXAMPLES / "policies"),
        "-o",
        str(out),
        "--backend",
        "nftables",
    ]
    subprocess.run(argv, check=True, capture_output=True)
    ArtefactPolicies(str(out), [network_spec()], backend="nftables").read()
    with pytest.raises(InputError) as caught:
        ArtefactPolicies(str(out), [network_spec()], backend="iptables").read()
    assert "backend: compiled for backend 'nftables', not 'iptables'" in caught.value.render()
