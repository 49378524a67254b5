"""The `npc` command as a user runs it: exit codes, artefacts, determinism, no tracebacks."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from kernel.command import EXAMPLES, ROOT, npc
from npc.backends import BACKENDS, get


def test_compile_writes_the_persistent_file_set(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = npc(
        "compile", str(EXAMPLES / "policies"), "--inventory", str(EXAMPLES / "inventory.json"), "-o", str(out)
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["ipsets", "manifest.json", "rules.v4", "rules.v6"]
    assert (out / "rules.v4").read_text().splitlines()[2] == "*mangle"
    assert "family inet6" in (out / "ipsets").read_text()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["backend"] == "iptables"
    assert [Path(i["path"]).name for i in manifest["inputs"]] == [
        "allow-all.yaml",
        "default-deny.yaml",
        "test-network-policy.yaml",
    ]
    assert "generated" not in manifest
    text = (out / "manifest.json").read_text()  # reviewed as a diff: one value per line, keys sorted
    assert text == json.dumps(manifest, indent=2, sort_keys=True) + "\n"


# how each kind of artefact declares a chain
DECLARED_CHAIN = {
    "rules.v4": r"^:\S+ - \[0:0\]$",
    "rules.v6": r"^:\S+ - \[0:0\]$",
    "ruleset.nft": r"^\s*chain \S+ \{$",
}


def test_the_collector_stays_off_after_a_compile_only_in_a_process_that_exits_without_freeing(
    tmp_path: Path,
) -> None:
    """``cli.run`` exits without freeing its heap: re-enabled after the compile, the collector's
    next allocation would walk every object the compile made (0.4-0.8 s at L). In process (the
    tests, a caller of ``main``) and around the agent's applies it comes back on."""
    script = (
        "import gc, sys\n"
        "from npc import cli, collector\n"
        "cli.main(sys.argv[1:]); print(gc.isenabled())\n"
        "collector.exit_without_freeing()\n"
        "with collector.paused(): pass\n"  # as the agent pauses it around an apply
        "print(gc.isenabled())\n"
        "cli.main(sys.argv[1:]); print(gc.isenabled())\n"
    )
    argv = ["compile", str(EXAMPLES / "policies"), "--inventory", str(EXAMPLES / "inventory.json")]
    done = subprocess.run(
        [sys.executable, "-c", script, *argv, "-o", str(tmp_path)], capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == ["True", "True", "False"], done.stderr


@pytest.mark.parametrize("backend", ["iptables", "nftables", "weave", "calico"])
def test_manifest_counts_the_chains_each_file_declares(backend: str, tmp_path: Path) -> None:
    inventory = str(EXAMPLES / "inventory.json")
    done = npc(
        "compile",
        str(EXAMPLES / "policies"),
        "--inventory",
        inventory,
        "--backend",
        backend,
        "-o",
        str(tmp_path),
    )
    assert done.returncode == 0, done.stderr
    counts = json.loads((tmp_path / "manifest.json").read_text())["counts"]
    assert set(counts["chains"]) == set(counts["rules"])
    declared = {
        name: len(re.findall(DECLARED_CHAIN[name], (tmp_path / name).read_text(), re.M))
        if name in DECLARED_CHAIN
        else 0
        for name in counts["rules"]
    }  # calico.yaml holds resources, no chains
    assert counts["chains"] == declared
    assert min(declared.values()) > 0 or backend == "calico"


def test_same_inputs_in_any_order_give_identical_bytes(tmp_path: Path) -> None:
    sources = sorted((EXAMPLES / "policies").iterdir())
    outputs = []
    for seed in range(3):
        order = sources[:]
        random.Random(seed).shuffle(order)
        folder = tmp_path / f"in{seed}"
        folder.mkdir()
        names = []
        for i, src in enumerate(order):  # different file names and order, same documents
            dst = folder / f"{i}-{src.name}"
            shutil.copy(src, dst)
            names.append(str(dst))
        result = npc("compile", *names, "--inventory", str(EXAMPLES / "inventory.json"))
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout.split("### npc artefact: manifest.json")[0])
    assert outputs[0] == outputs[1] == outputs[2]


def test_source_date_epoch_is_the_only_timestamp(tmp_path: Path) -> None:
    env = dict(os.environ, SOURCE_DATE_EPOCH="1700000000")
    result = npc("compile", str(EXAMPLES / "policies"), "-o", str(tmp_path), env=env)
    assert result.returncode == 0
    assert json.loads((tmp_path / "manifest.json").read_text())["generated"] == "2023-11-14T22:13:20Z"


def test_stdin_input() -> None:
    text = (EXAMPLES / "policies" / "test-network-policy.yaml").read_text()
    result = npc("compile", "-", stdin=text)
    assert result.returncode == 0, result.stderr
    assert "### npc artefact: rules.v4" in result.stdout
    assert "default/test-network-policy" in result.stdout


def test_stdin_in_npc_language(tmp_path: Path) -> None:
    """Stdin is npc's language when its first line (past blank and ``#`` lines) opens a policy or a
    macro: ``convert --to dsl`` piped into ``compile -`` gives the YAML's artefacts. Macros alone
    are no policy, refused as an empty pipe is."""
    yaml_text = (EXAMPLES / "policies" / "test-network-policy.yaml").read_text()
    dsl = npc("convert", "--to", "dsl", "-", stdin=yaml_text)
    assert dsl.returncode == 0, dsl.stderr
    piped = npc("compile", "-", "-o", str(tmp_path / "dsl"), stdin="# piped\r\n \r\n" + dsl.stdout)
    assert piped.returncode == 0, piped.stderr
    assert npc("compile", "-", "-o", str(tmp_path / "yaml"), stdin=yaml_text).returncode == 0
    for name in ("rules.v4", "rules.v6", "ipsets"):
        assert (tmp_path / "dsl" / name).read_text() == (tmp_path / "yaml" / name).read_text()
    macros = npc("compile", "-", stdin="# only\nweb = { 80 }\n")
    assert macros.returncode == 1 and "<stdin>: error: holds no policy" in macros.stderr
    broken = dsl.stdout.replace("policy ", "policy\n  ", 1)  # was read as YAML: "not a string"
    assert npc("compile", "-", "-o", str(tmp_path / "nl"), stdin=broken).returncode == 0
    assert (tmp_path / "nl" / "rules.v4").read_text() == (tmp_path / "yaml" / "rules.v4").read_text()
    wrong = npc("compile", "-", stdin="policy default/a { select app == 1 }\n")
    assert wrong.returncode == 1 and wrong.stderr.startswith("<stdin>:1:34: error: unexpected `1`"), (
        wrong.stderr
    )


def test_fmt_formats_a_links_target_and_escapes_names(tmp_path: Path) -> None:
    """A link stays a link (its target is formatted, as gofmt and black do), and a file name's
    control characters reach the terminal escaped, in fmt's lines as in compile's notes."""
    target = tmp_path / "target.npc"
    target.write_text("policy default/a {select all isolate ingress}\n")
    link = tmp_path / "link.npc"
    link.symlink_to(target.name)
    twice = npc("fmt", "--check", str(tmp_path))  # a folder of a file and a link to it: said once
    assert twice.stderr.count("would reformat") == 1, twice.stderr
    odd = tmp_path / "ok\x1b]0;t\x07.npc"
    odd.write_text(target.read_text())
    done = npc("fmt", str(link), str(odd))
    assert done.returncode == 0, done.stderr
    assert link.is_symlink() and target.read_text().startswith("policy default/a {\n    select all\n")
    twice = npc("compile", str(odd), str(odd), "-o", str(tmp_path / "out"))
    for said in (done.stderr, twice.stderr):
        assert "\x1b" not in said and "\x07" not in said and "ok\\x1b]0;t\\x07.npc" in said, said


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_every_backend_compiles_to_stdout_without_an_output_folder(backend: str, tmp_path: Path) -> None:
    """Without -o each backend prints what -o writes: the one file it names alone, or every file
    under a header line (Weave's was a traceback: its backend lacked ``stdout``)."""
    inputs = (
        str(EXAMPLES / "policies"),
        "--inventory",
        str(EXAMPLES / "inventory.json"),
        "--backend",
        backend,
    )
    printed = npc("compile", *inputs)
    assert printed.returncode == 0, printed.stderr
    assert "Traceback" not in printed.stderr
    assert npc("compile", *inputs, "-o", str(tmp_path)).returncode == 0
    written = {p.name: p.read_text() for p in tmp_path.iterdir()}
    alone = get(backend).stdout
    if alone is not None:
        assert printed.stdout == written[alone]
        return
    parts = re.split(r"^### npc artefact: (\S+)\n", printed.stdout, flags=re.M)
    assert parts[0] == ""
    assert dict(zip(parts[1::2], parts[2::2], strict=True)) == written


def test_the_help_names_every_backends_files() -> None:
    """``npc --help`` says what each backend writes, as its ``files`` say (Weave was missing)."""
    shown = " ".join(npc("--help").stdout.split())
    for name in BACKENDS:
        assert f"{name}: {', '.join(get(name).files)}" in shown


def test_namespace_annotation_among_policies_isolates_the_namespace() -> None:
    result = npc("compile", str(EXAMPLES / "legacy"), "--inventory", str(EXAMPLES / "inventory.json"))
    assert result.returncode == 0, result.stderr
    found = re.search(r"^-A NPC-\w+-FORWARD -j SET --map-set (\S+) dst ", result.stdout, re.M)
    assert found
    isolated = found.group(1)
    members = [line.split()[2] for line in result.stdout.splitlines() if line.startswith(f"add {isolated} ")]
    # db, frontend and backend in default: all isolated by the annotation, not only role=db
    assert members == ["10.244.1.10", "10.244.1.11", "10.244.1.12"]


def test_invalid_input_exits_1_and_writes_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: x\nspec:\n"
        "  podSelector: {}\n  ingress:\n  - ports:\n    - port: 80\n    - port: 90\n      endPort: 70\n"
    )
    out = tmp_path / "out"
    result = npc("compile", str(bad), "-o", str(out))
    assert result.returncode == 1
    assert f"{bad}:11:" in result.stderr
    assert "spec.ingress[0].ports[1].endPort" in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_usage_error_exits_2() -> None:
    result = npc("compile")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert npc("compile", "x.yaml", "--backend", "pf").returncode == 2


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (("compile", "examples/policies", "--inventory", ""), "--inventory"),
        (("compile", "examples/policies", "--inventory", "examples/inventory.json", "-o", ""), "-o/--output"),
        (("compile", "examples/policies", "-o", "out", "--networks", ""), "--networks"),
        (("convert", "examples/policies", "--to", "dsl", "-o", ""), "-o/--output"),
        (("matrix", "examples/policies", "--inventory", ""), "--inventory"),
        (("compile", "examples/policies", ""), "PATH"),
        (
            ("diff", "--new", "examples/policies", "--inventory", "examples/inventory.json", "--old", ""),
            "--old",
        ),
    ],
)
def test_an_empty_file_flag_is_a_usage_error_not_the_flag_left_out(args: tuple[str, ...], flag: str) -> None:
    """``--inventory "$INV"`` with the variable unset compiled without pods (no pod policed, and
    ``apply`` loaded that); ``-o ""`` wrote to stdout. Refused before anything is read."""
    result = npc(*args)
    assert result.returncode == 2, result.stderr
    assert f"argument {flag}: must not be empty" in result.stderr and not result.stdout


@pytest.mark.parametrize(
    ("wait", "says"),
    [
        ("nan", "must be 0 or more seconds"),
        ("-1", "must be 0 or more seconds"),
        ("x", "invalid seconds value: 'x'"),
    ],
)
@pytest.mark.parametrize("command", ["apply", "reset"])
def test_a_wait_that_is_no_number_of_seconds_is_a_usage_error(command: str, wait: str, says: str) -> None:
    """``--wait nan`` waited for ever on a held lock (no time is past nan); refused before
    anything is read or loaded. In a network namespace of its own (``unshare``): were the flag
    taken, the command would apply or reset there, never on the machine running the tests."""
    args = ["examples/policies"] if command == "apply" else []
    argv = ["unshare", "--net", sys.executable, "-m", "npc", command, *args, "--wait", wait]
    result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 2 and says in result.stderr, result.stderr


def test_stdin_given_twice_is_a_usage_error() -> None:
    """Read again, stdin is empty: "holds no document", exit 1, as if the pipe had failed."""
    done = subprocess.run(
        [sys.executable, "-m", "npc", "compile", "-", "-"], input='{"kind": "List", "items": []}',
        capture_output=True, text=True, check=False, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 2 and "- (stdin) given twice" in done.stderr, done.stderr


def test_an_inventory_on_stdin_without_kind_is_an_error_not_no_pods() -> None:
    """A typed list's items have no kind of their own and are read; a mapping without kind is what
    a failed command printed, which read as "no pods" would empty every set."""
    policies = str(EXAMPLES / "policies")
    for text, code in (
        ('{"kind": "PodList", "items": [{"metadata": {"name": "a"}, "status": {"podIP": "10.1.1.1"}}]}', 0),
        ("error: You must be logged in to the server (Unauthorized)\n", 1),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "npc", "compile", policies, "--inventory", "-"],
            input=text, capture_output=True, text=True, check=False, cwd=ROOT,
        )  # fmt: skip
        assert done.returncode == code, done.stderr
    assert "<stdin>:1:1: error: kind: required" in done.stderr


def test_missing_file_is_an_input_error(tmp_path: Path) -> None:
    result = npc("compile", str(tmp_path / "nope.yaml"))
    assert result.returncode == 1
    assert "nope.yaml" in result.stderr
    assert "Traceback" not in result.stderr


def test_malformed_inventory_is_an_input_error(tmp_path: Path) -> None:
    inventory = tmp_path / "inv.json"
    inventory.write_text(
        json.dumps({"kind": "List", "items": [{"kind": "Pod", "metadata": {"labels": ["x"]}}]})
    )
    result = npc("compile", str(EXAMPLES / "policies"), "--inventory", str(inventory))
    assert result.returncode == 1
    assert "items[0].metadata.labels" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("metadata", "where", "rule"),
    [
        (
            {"name": "p", "labels": {"app": "x\nCOMMIT"}},
            "items[0].metadata.labels[app]",
            "invalid label value",
        ),
        ({"name": 'p"\n-A FORWARD -j ACCEPT'}, "items[0].metadata.name", "invalid pod name"),
        ({"name": "p", "namespace": "a\u001b[31m"}, "items[0].metadata.namespace", "invalid namespace name"),
        ({"name": "p", "namespace": []}, "items[0].metadata.namespace", "must be a string, not a list"),
    ],
)
def test_hostile_names_cannot_reach_the_output(
    tmp_path: Path, metadata: dict[str, object], where: str, rule: str
) -> None:
    """An inventory object Kubernetes could not hold is refused where it stands (before, names
    and labels were taken as given and sanitised on the way out, a namespace [] read as
    "default"); apply and the agent skip it with the same words."""
    policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "ok", "namespace": "default"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "x"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"evil": "a-b_c.d"}}}]}],
        },
    }
    (tmp_path / "p.json").write_text(json.dumps(policy))
    inventory = {
        "kind": "List",
        "items": [{"kind": "Pod", "metadata": metadata, "status": {"podIP": "10.1.1.1"}}],
    }
    (tmp_path / "inv.json").write_text(json.dumps(inventory))
    result = npc("compile", str(tmp_path / "p.json"), "--inventory", str(tmp_path / "inv.json"))
    assert (result.returncode, result.stdout) == (1, ""), result.stderr
    assert "inv.json:1:" in result.stderr and f"{where}: {rule}" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("pod", "where", "rule"),
    [
        ({"status": {"podIP": "10.1.1.0/24"}}, "items[0].status.podIP", "is a network"),
        (
            {"spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80, "name": "HTTP"}]}]}},
            "items[0].spec.containers[0].ports[0].name",
            "invalid port name",
        ),
        (
            {"spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80, "protocol": []}]}]}},
            "items[0].spec.containers[0].ports[0].protocol",
            "must be a string",
        ),
    ],
)
def test_inventory_fields_kubernetes_would_refuse_are_errors(
    tmp_path: Path, pod: dict[str, object], where: str, rule: str
) -> None:
    """A network was read as its first address, a port name against Kubernetes' rules kept, and a
    protocol [] read as TCP."""
    item = {"kind": "Pod", "metadata": {"name": "p", "namespace": "default"}, "status": {"podIP": "10.1.1.1"}}
    (tmp_path / "inv.json").write_text(json.dumps({"kind": "List", "items": [{**item, **pod}]}))
    result = npc("compile", str(EXAMPLES / "policies"), "--inventory", str(tmp_path / "inv.json"))
    assert (result.returncode, result.stdout) == (1, ""), result.stderr
    assert f"{where}: " in result.stderr and rule in result.stderr, result.stderr


@pytest.mark.parametrize("text", ["5", '"error: You must be logged in"', "[3]"])
def test_an_inventory_of_no_objects_is_an_error_not_no_pods(tmp_path: Path, text: str) -> None:
    (tmp_path / "inv.json").write_text(text)
    result = npc("compile", str(EXAMPLES / "policies"), "--inventory", str(tmp_path / "inv.json"))
    assert (result.returncode, result.stdout) == (1, ""), result.stderr
    assert "must be a Kubernetes object (kind, apiVersion, ...)" in result.stderr


def test_an_object_listed_twice_differently_is_an_error_whatever_the_order(tmp_path: Path) -> None:
    """Which copy of a namespace held (its labels) depended on the order of the items, and so
    did the sets; a copy listed twice alike is one object."""
    labelled = [{"kind": "Namespace", "metadata": {"name": "prod", "labels": {"env": e}}} for e in ("a", "b")]
    for order in (labelled, labelled[::-1]):
        (tmp_path / "inv.json").write_text(json.dumps({"kind": "List", "items": order}))
        result = npc("compile", str(EXAMPLES / "policies"), "--inventory", str(tmp_path / "inv.json"))
        assert result.returncode == 1, result.stderr
        assert "items[1]: namespace prod is listed twice, differently (first at items[0])" in result.stderr
    (tmp_path / "inv.json").write_text(json.dumps({"kind": "List", "items": [labelled[0], labelled[0]]}))
    result = npc("compile", str(EXAMPLES / "policies"), "--inventory", str(tmp_path / "inv.json"))
    assert result.returncode == 0, result.stderr


def test_pods_sharing_an_address_are_named(tmp_path: Path) -> None:
    pods = [
        {"kind": "Pod", "metadata": {"name": n, "namespace": "default"}, "status": {"podIP": "10.1.1.1"}}
        for n in ("a", "b")
    ]
    (tmp_path / "inv.json").write_text(json.dumps({"kind": "List", "items": pods}))
    result = npc("compile", str(EXAMPLES / "policies"), "--inventory", str(tmp_path / "inv.json"))
    assert result.returncode == 0, result.stderr
    assert "pods default/a, default/b share the address 10.1.1.1" in result.stderr


def test_other_groups_policies_are_skipped_but_unknown_versions_of_ours_are_errors(tmp_path: Path) -> None:
    calico = tmp_path / "calico.yaml"
    calico.write_text(
        "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata:\n  name: db\n  namespace: prod\n"
        "spec:\n  selector: role == 'database'\n"
    )
    result = npc("compile", str(calico), str(EXAMPLES / "policies"))
    assert result.returncode == 0, result.stderr
    assert "ignored kind NetworkPolicy of projectcalico.org/v3" in result.stderr
    assert "### npc artefact: rules.v4" in result.stdout
    future = tmp_path / "v2.yaml"
    future.write_text(
        "apiVersion: networking.k8s.io/v2\nkind: NetworkPolicy\nmetadata:\n  name: x\nspec: {}\n"
    )
    result = npc("compile", str(future))
    assert result.returncode == 1
    assert f"{future}:1:13:" in result.stderr and "unsupported apiVersion" in result.stderr


def test_build_all_lets_the_inventory_go_once_every_network_is_assembled() -> None:
    """compile and apply read their sources for one build: the inventory's documents and text
    (at L a third of the peak) go once every network's inventory is built, and an assemble after
    that is refused rather than given an empty inventory."""
    from npc.networks import network_spec
    from npc.pipeline import assemble, build, build_all, read_sources

    paths, inventory = [str(EXAMPLES / "policies")], str(EXAMPLES / "inventory.json")
    kept = build(read_sources(paths, inventory), network_spec())
    sources = read_sources(paths, inventory)
    assert sources.inventory_documents and sources.inventory_text
    jobs = build_all(sources, [network_spec(), network_spec()])
    assert sources.released and sources.inventory_documents == [] and sources.inventory_text == ""
    assert [job.assembled.inventory for job in jobs] == [kept.assembled.inventory] * 2
    assert [job.compiled.members for job in jobs] == [kept.compiled.members] * 2
    with pytest.raises(RuntimeError, match="released"):
        assemble(sources, network_spec())
