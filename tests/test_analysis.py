"""``npc matrix``, ``explain`` and ``diff``: the truth tables, the reference evaluator, and the
NetworkPolicy corner cases analysers get wrong.

Every case table must come out of ``npc matrix --format json`` (the kernel suite also compares the
matrix with what the probes saw); on random clusters the class-based matrix must equal the
evaluator's pair-by-pair verdicts.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any
from unittest import mock

import npc.analysis.matrix as matrix_module
import pytest
from hypothesis import HealthCheck, given, settings
from kernel.case import Case, load_cases, write_inputs
from kernel.matrix import as_table
from kernel.multinet import load_multinet_cases
from kernel.report import diff_report
from npc.analysis.diff import changes
from npc.analysis.load import Model
from npc.analysis.matrix import matrices, rows
from npc.analysis.ports import PortQuery
from npc.analysis.render import ref
from npc.cli import main
from npc.evaluate import Evaluator
from npc.inventory import Inventory
from npc.ir import PROTOCOLS, Program
from random_clusters import PORT_NAMES, PROBE_PORTS, inventories, programs
from yaml_text import dump_all

CASES = load_cases()
MULTI = load_multinet_cases()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def port_args(case: Case) -> list[str]:
    return [a for c in case.checks for a in ("--port", f"{c.protocol.lower()}/{c.port}")]


def table_failures(case: Case, data: dict[str, Any], network: str | None = None) -> str:
    reports = []
    for check in (c for c in case.checks if c.network == network):
        got = as_table(case, check, data)
        report = diff_report(case, check, [
            "".join(g if g != "?" else e for g, e in zip(grow, erow, strict=True))
            for grow, erow in zip(got, check.expect, strict=True)
        ], observed_title="npc matrix")  # fmt: skip
        reports.append(report)
    return "\n\n".join(r for r in reports if r)


def assert_shape(data: dict[str, Any]) -> None:
    assert list(data) == ["pods", "matrices"]
    dual = any("ipFamily" in m for m in data["matrices"])
    for m in data["matrices"]:
        assert list(m) == ["protocol", "port", *(["ipFamily"] if dual else []), "expect"]
        assert len(m["expect"]) == len(data["pods"])
        for i, row in enumerate(m["expect"]):
            assert len(row) == len(data["pods"]) and row[i] == "-" and set(row) <= {".", "X", "-"}


# --- every truth table --------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["yaml", "dsl"])
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_matrix_equals_the_case_table(
    case: Case, form: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths, inventory = write_inputs(case, tmp_path, form)
    code, out, err = run(
        capsys,
        "matrix",
        *map(str, paths),
        "--inventory",
        str(inventory),
        *port_args(case),
        "--format",
        "json",
    )
    assert code == 0, err
    data = json.loads(out)
    assert_shape(data)
    assert data["pods"] == [e.ref for e in case.endpoints if not e.external] or {*data["pods"]} == {
        e.ref for e in case.endpoints if not e.external
    }
    failures = table_failures(case, data)
    assert not failures, f"{case.path.name}: {case.name}\n{failures}"


@pytest.mark.parametrize("mcase", MULTI, ids=[m.id for m in MULTI])
def test_matrix_on_each_network_equals_the_table(
    mcase: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    case = mcase.case
    paths, inventory = write_inputs(case, tmp_path)
    for args in mcase.applies:
        network = args[args.index("--network") + 1] if "--network" in args else None
        code, out, err = run(
            capsys, "matrix", *map(str, paths), "--inventory", str(inventory), *args, *port_args(case),
            "--format", "json",
        )  # fmt: skip
        assert code == 0, err
        failures = table_failures(case, json.loads(out), network)
        assert not failures, f"{case.path.name} {args}: {case.name}\n{failures}"


def test_pods_are_listed_by_namespace_then_as_listed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    case = next(c for c in CASES if c.id.startswith("40-"))  # its pods interleave namespaces
    paths, inventory = write_inputs(case, tmp_path)
    _, out, _ = run(capsys, "matrix", *map(str, paths), "--inventory", str(inventory), "--port", "tcp/80",
                    "--format", "json")  # fmt: skip
    namespaces = [ns["name"] for ns in case.namespaces]
    pods = [e for e in case.endpoints if not e.external]
    wanted = [e.ref for ns in namespaces for e in pods if e.namespace == ns]
    assert json.loads(out)["pods"] == wanted != [e.ref for e in pods]


# --- the reference evaluator on random clusters --------------------------------------------------


QUERIES = [PortQuery(p, n) for p in PROTOCOLS for n in (*PROBE_PORTS, *PORT_NAMES)]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(program=programs, inventory=inventories())
def test_matrix_decides_like_the_evaluator(program: Program, inventory: Inventory) -> None:
    evaluator = Evaluator(program, inventory)
    namespaces = {ns.name: ns.labels for ns in inventory.namespaces}
    pods = inventory.pods
    # a row per block and one class matrix kept: the paths a large cluster takes
    with (
        mock.patch.object(matrix_module, "BLOCK_CELLS", 5),
        mock.patch.object(matrix_module, "CACHE_BYTES", 1),
    ):
        found = [
            (m, [r for block in m.blocks() for r in rows(block)])
            for m in matrices(program, pods, namespaces, QUERIES)
        ]
    for matrix, cells in found:
        assert cells == rows(matrix.cells())
        family = matrix.family or matrix.classes.family
        for i, row in enumerate(cells):
            src = next((ip for ip in pods[i].ips if ip.version == family), None)
            for j, cell in enumerate(row):
                dst = next((ip for ip in pods[j].ips if ip.version == family), None)
                if i == j:
                    assert cell == "-"
                    continue
                port = matrix.query.port
                if isinstance(port, str):
                    port = pods[j].named_ports().get((matrix.protocol, port), -1)
                want = src is not None and dst is not None and port >= 0
                want = want and evaluator.allowed(src, dst, matrix.protocol, port)  # type: ignore[arg-type]
                assert cell == ("." if want else "X"), (matrix.query, family, pods[i].name, pods[j].name)


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_matrix_written_in_blocks_of_rows_is_the_same(capsys: pytest.CaptureFixture[str], fmt: str) -> None:
    examples = Path(__file__).resolve().parent.parent / "examples"
    argv = [
        "matrix",
        str(examples / "policies"),
        "--inventory",
        str(examples / "inventory.json"),
        "--format",
        fmt,
    ]
    code, whole, _ = run(capsys, *argv)
    with mock.patch.object(matrix_module, "BLOCK_CELLS", 5):
        assert run(capsys, *argv) == (code, whole, "")
    assert code == 0 and len(whole) > 200


# --- corner cases other analysers get wrong --------------------------------------------------------


def _pod(
    ns: str, name: str, ip: str, labels: dict[str, str], ports: dict[str, int] | None = None
) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "c", "image": "x"}
    if ports:
        container["ports"] = [{"name": n, "containerPort": p, "protocol": "TCP"} for n, p in ports.items()]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"namespace": ns, "name": name, "labels": labels},
        "spec": {"containers": [container]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": a} for a in ip.split(",")]},
    }


def _namespace(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels or {}}}


def _policy(name: str, spec: dict[str, Any], namespace: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def write_cluster(
    tmp: Path, items: list[dict[str, Any]], policies: list[dict[str, Any]], name: str = "p"
) -> tuple[str, str]:
    inventory = tmp / "inventory.json"
    inventory.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    folder = tmp / name
    folder.mkdir(exist_ok=True)
    (folder / "policies.yaml").write_text(dump_all(policies, sort_keys=False))
    return str(folder), str(inventory)


CLUSTER = [
    _namespace("default"),
    _namespace("prod", {"env": "prod"}),
    _pod("default", "a", "10.0.0.1", {"app": "a"}, {"http": 80}),
    _pod("default", "b", "10.0.0.2", {"app": "b"}, {"http": 8080}),
    _pod("prod", "c", "10.0.0.3", {"app": "c", "role": "db"}, {"http": 80}),
    _pod("prod", "d", "10.0.0.4", {"app": "d"}),
]


def matrix_of(
    capsys: pytest.CaptureFixture[str], policies: str, inventory: str, *ports: str
) -> dict[str, list[str]]:
    args = [a for p in ports for a in ("--port", p)]
    code, out, err = run(capsys, "matrix", policies, "--inventory", inventory, *args, "--format", "json")
    assert code == 0, err
    data = json.loads(out)
    assert_shape(data)
    assert data["pods"] == ["default/a", "default/b", "prod/c", "prod/d"]
    return {f"{m['protocol'].lower()}/{m['port']}": m["expect"] for m in data["matrices"]}


def test_egress_empty_list_without_policy_types_does_not_isolate_egress(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """policyTypes defaults to Egress only when there are egress rules: ``egress: []`` leaves egress open."""
    policy = _policy("a", {"podSelector": {"matchLabels": {"app": "a"}}, "ingress": [], "egress": []})
    got = matrix_of(capsys, *write_cluster(tmp_path, CLUSTER, [policy]), "tcp/80")
    assert got["tcp/80"] == ["-...", "X-..", "X.-.", "X..-"]


def test_peer_with_both_selectors_using_exists_and_does_not_exist(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One peer with both selectors is their AND: namespaces having ``env``, pods lacking ``role``."""
    peer = {
        "namespaceSelector": {"matchExpressions": [{"key": "env", "operator": "Exists"}]},
        "podSelector": {"matchExpressions": [{"key": "role", "operator": "DoesNotExist"}]},
    }
    policy = _policy("b", {"podSelector": {"matchLabels": {"app": "b"}}, "ingress": [{"from": [peer]}]})
    got = matrix_of(capsys, *write_cluster(tmp_path, CLUSTER, [policy]), "tcp/8080")
    assert got["tcp/8080"] == ["-X..", ".-..", ".X-.", "..." + "-"]


def test_named_port_towards_an_ip_block_resolves_on_the_destination_pod(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Egress to an ipBlock on port ``http``: allowed where the destination pod's ``http`` is the port."""
    rule = {"to": [{"ipBlock": {"cidr": "10.0.0.0/24"}}], "ports": [{"port": "http"}]}
    policy = _policy("egress", {"podSelector": {"matchLabels": {"app": "a"}}, "egress": [rule]})
    got = matrix_of(capsys, *write_cluster(tmp_path, CLUSTER, [policy]), "tcp/80", "tcp/8080", "tcp/http")
    assert got["tcp/80"][0] == "-X.X"  # b's http is 8080; d has no http
    assert got["tcp/8080"][0] == "-.XX"
    assert got["tcp/http"][0] == "-..X"  # each pod's own http; d has none to connect to


def test_default_ports_are_the_policies_and_the_container_ports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rule = {"ports": [{"protocol": "UDP", "port": 53}, {"port": 9000, "endPort": 9100}]}
    policy = _policy("a", {"podSelector": {}, "ingress": [rule]})
    got = matrix_of(capsys, *write_cluster(tmp_path, CLUSTER, [policy]))
    # udp/1 and sctp/1: the ports of their protocols no rule names (tcp/80 stands for TCP's)
    assert list(got) == ["tcp/80", "tcp/8080", "tcp/9000", "udp/1", "udp/53", "sctp/1"]
    assert got["tcp/9000"][1] == ".-.." and got["tcp/80"][1] == "X-.."  # prod is not isolated
    assert got["udp/1"][1] == got["sctp/1"][1] == "X-.." and got["udp/53"][1] == ".-.."


@pytest.mark.parametrize(
    ("old_rules", "new_rules", "lost"),
    [
        (None, [], ["tcp/80", "tcp/8080", "udp/1", "sctp/1"]),  # isolated, no rule: every port
        (
            [{"ports": [{"port": 9000, "endPort": 9100}]}],
            [{"ports": [{"port": 9000, "endPort": 9050}]}],
            ["tcp/9051"],
        ),
        ([{"ports": [{"protocol": "UDP"}]}], [], ["udp/1"]),  # a whole protocol
    ],
)
def test_diff_by_default_asks_a_port_of_every_run_the_rules_treat_alike(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], old_rules: Any, new_rules: Any, lost: list[str]
) -> None:
    """Without ``--port``, losses at ports nobody names (a pod isolated with no rule), inside a
    narrowed range, or of a whole protocol were "no connection gained or lost", exit 0 with
    ``--exit-code``."""

    def policies(rules: Any) -> list[dict[str, Any]]:
        if rules is None:
            return []
        return [_policy("b", {"podSelector": {"matchLabels": {"app": "b"}}, "ingress": rules})]

    old_dir, inventory = write_cluster(tmp_path, CLUSTER, policies(old_rules), "old")
    new_dir, _ = write_cluster(tmp_path, CLUSTER, policies(new_rules), "new")
    code, out, err = run(capsys, "diff", "--old", old_dir, "--new", new_dir, "--inventory", inventory,
                         "--exit-code", "--format", "json")  # fmt: skip
    assert code == 1, err
    found = json.loads(out)
    assert found["gained"] == []
    assert sorted({f"{c['protocol'].lower()}/{c['port']}" for c in found["lost"]}) == sorted(lost)
    assert {(c["from"], c["to"]) for c in found["lost"]} == {("default/a", "default/b"), ("prod/c", "default/b"),
                                                            ("prod/d", "default/b")}  # fmt: skip


def test_dual_stack_matrices_carry_the_family(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    items = [
        _namespace("default"),
        _pod("default", "a", "10.0.0.1,fd00::1", {}),
        _pod("default", "b", "10.0.0.2", {}),
    ]
    folder, inventory = write_cluster(tmp_path, items, [_policy("x", {"podSelector": {}})])
    code, out, _ = run(
        capsys, "matrix", folder, "--inventory", inventory, "--port", "tcp/80", "--format", "json"
    )
    assert code == 0
    assert json.loads(out) == {
        "pods": ["default/a", "default/b"],
        "matrices": [
            {"protocol": "TCP", "port": 80, "ipFamily": "IPv4", "expect": ["-X", "X-"]},
            {"protocol": "TCP", "port": 80, "ipFamily": "IPv6", "expect": ["-X", "X-"]},
        ],
    }


def test_a_family_npc_does_not_police_gets_no_matrix_and_explain_allows_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--ip-families IPv4``: npc loads no IPv6 rule, so IPv6 is open; the matrix showed IPv6
    denials and explain answered DENIED there."""
    items = [
        _namespace("default"),
        _pod("default", "a", "10.0.0.1,fd00::1", {}),
        _pod("default", "b", "10.0.0.2,fd00::2", {}),
    ]
    folder, inventory = write_cluster(tmp_path, items, [_policy("x", {"podSelector": {}})])
    flags = ["--inventory", inventory, "--port", "tcp/80", "--ip-families", "IPv4"]
    code, out, _ = run(capsys, "matrix", folder, *flags, "--format", "json")
    assert code == 0
    assert json.loads(out)["matrices"] == [
        {"protocol": "TCP", "port": 80, "ipFamily": "IPv4", "expect": ["-X", "X-"]}
    ]
    code, out, _ = run(capsys, "explain", folder, *flags, "--from", "default/a", "--to", "fd00::2")
    assert code == 0 and out.startswith("ALLOWED: default/a -> default/b") and "IPv6 is not policed" in out, (
        out
    )
    code, out, _ = run(capsys, "explain", folder, *flags, "--from", "default/a", "--to", "default/b")
    assert code == 0 and out.startswith("DENIED: default/a -> default/b") and "not policed" not in out, out
    # two pods with no policed family in common answer in the one they share, either way round
    only6 = [_pod("default", "c", "fd00::3", {}), _pod("default", "d", "fd00::4,10.0.0.4", {})]
    folder, inventory = write_cluster(tmp_path, [*items, *only6], [_policy("x", {"podSelector": {}})])
    flags[1] = inventory
    for pair in (("default/c", "default/a"), ("default/a", "default/c"), ("default/c", "default/d")):
        code, out, _ = run(capsys, "explain", folder, *flags, "--from", pair[0], "--to", pair[1])
        assert code == 0 and out.startswith("ALLOWED") and "IPv6 is not policed" in out, (pair, out)
    old = write_cluster(tmp_path, items, [], "old")[0]
    code, out, _ = run(capsys, "diff", "--old", old, "--new", folder, *flags, "--format", "json")
    assert {c["ipFamily"] for c in json.loads(out)["lost"]} == {"IPv4"}


# --- text, csv, html ----------------------------------------------------------------------------------


def test_text_groups_pods_into_classes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    items = [
        _namespace("default"),
        *(_pod("default", f"web-{i}", f"10.0.0.{i + 1}", {"app": "web", "pod": str(i)}) for i in range(50)),
    ]
    items.append(_pod("default", "db", "10.0.1.1", {"app": "db"}))
    policy = _policy(
        "db",
        {
            "podSelector": {"matchLabels": {"app": "db"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "nobody"}}}]}],
        },
    )
    folder, inventory = write_cluster(tmp_path, items, [policy])
    code, out, _ = run(capsys, "matrix", folder, "--inventory", inventory, "--port", "tcp/5432")
    assert code == 0
    assert "pod classes (IPv4): 2 classes for 51 pods" in out
    assert "c0  default {app=web}  50 pods" in out and "c1  default {app=db}  1 pod" in out
    assert out.split("tcp/5432", 1)[1].splitlines()[1:] == [
        "  g0  c0  (50 pods)",
        "  g1  c1  (1 pod)",
        "     g0 g1",
        "  g0  .  X",
        "  g1  .  -",
    ]


def test_classes_are_formed_by_what_the_policies_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Labels no selector reads, port names no rule names and a repeated name's later numbers do not
    split a class; a read label, a named port's number and an ipBlock do."""
    items = [
        _namespace("default"),
        _pod("default", "web-0", "10.0.0.1", {"app": "web", "pod": "0"}, {"http": 80, "debug": 9000}),
        _pod("default", "web-1", "10.0.0.2", {"app": "web", "pod": "1"}, {"http": 80}),
        _pod("default", "web-2", "10.0.0.3", {"app": "web"}, {"http": 8080}),
        _pod("default", "web-3", "10.0.2.1", {"app": "web"}, {"http": 80}),
        _pod("default", "db", "10.0.1.1", {"app": "db"}),
    ]
    items[2]["spec"]["containers"][0]["ports"].append({"name": "http", "containerPort": 81})
    rules = {"to": [{"podSelector": {"matchLabels": {"app": "web"}}}], "ports": [{"port": "http"}]}
    policy = _policy("db", {"podSelector": {"matchLabels": {"app": "db"}}, "egress": [rules, {"to": [
        {"ipBlock": {"cidr": "10.0.2.0/24"}}]}]})  # fmt: skip
    folder, inventory = write_cluster(tmp_path, items, [policy])
    code, out, _ = run(capsys, "matrix", folder, "--inventory", inventory, "--port", "tcp/80")
    assert code == 0
    assert "pod classes (IPv4): 4 classes for 5 pods" in out
    assert "c0  default {app=web} http=tcp/80  2 pods: default/web-0, default/web-1" in out
    assert "default {app=web} http=tcp/8080  1 pod: default/web-2" in out


def test_text_groups_classes_a_port_treats_alike(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder, inventory = write_cluster(tmp_path, CLUSTER, [])
    code, out, _ = run(capsys, "matrix", folder, "--inventory", inventory, "--port", "tcp/80")
    assert code == 0
    assert "tcp/80: 1 group of classes alike" in out and "  g0  c0 c1  (4 pods)" in out


def test_csv_has_a_row_per_source(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder, inventory = write_cluster(
        tmp_path, CLUSTER, [_policy("x", {"podSelector": {"matchLabels": {"app": "a"}}})]
    )
    code, out, _ = run(
        capsys, "matrix", folder, "--inventory", inventory, "--port", "tcp/80", "--format", "csv"
    )
    assert code == 0
    assert out.splitlines() == [
        "protocol,port,ipFamily,from,default/a,default/b,prod/c,prod/d",
        "TCP,80,,default/a,-,.,.,.",
        "TCP,80,,default/b,X,-,.,.",
        "TCP,80,,prod/c,X,.,-,.",
        "TCP,80,,prod/d,X,.,.,-",
    ]


def test_html_is_one_self_contained_page_naming_the_deciding_policies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, inventory = write_cluster(
        tmp_path, CLUSTER, [_policy("only-a", {"podSelector": {"matchLabels": {"app": "a"}}})]
    )
    code, out, _ = run(
        capsys, "matrix", folder, "--inventory", inventory, "--port", "tcp/80", "--format", "html"
    )
    assert code == 0
    assert out.startswith("<!DOCTYPE html>") and "</html>" in out
    assert "src=" not in out and "href=" not in out and "://" not in out
    assert "isolated by default/only-a" in out


def test_html_past_its_budgets_names_groups_and_counts_pods(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A big cluster's page stays bounded: past the hover budget a cell names its groups only, and a
    group's legend names some pods and counts the rest."""
    import npc.analysis.render as render_module

    folder, inventory = write_cluster(
        tmp_path, CLUSTER, [_policy("only-a", {"podSelector": {"matchLabels": {"app": "a"}}})]
    )
    argv = [
        "matrix",
        folder,
        "--inventory",
        inventory,
        "--port",
        "tcp/80",
        "--port",
        "tcp/81",
        "--format",
        "html",
    ]
    with (
        mock.patch.object(render_module, "_HOVER_BUDGET", 0),
        mock.patch.object(render_module, "LISTED_PODS", 1),
    ):
        code, out, _ = run(capsys, *argv)
    assert code == 0 and out.count("<h2>") == 2 and "</html>" in out
    assert "isolated by" not in out and 'title="g0 -&gt; g1: ' in out
    assert "3 pods: default/b, and 2 more" in out  # one group: b, c and d, alike on these ports


# --- explain ------------------------------------------------------------------------------------------


def test_explain_names_the_rule_and_its_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules = [
        {"from": [{"podSelector": {"matchLabels": {"app": "a"}}}], "ports": [{"port": 443}]},
        {"from": [{"namespaceSelector": {"matchLabels": {"env": "prod"}}}], "ports": [{"port": 8080}]},
    ]
    policy = _policy("b-in", {"podSelector": {"matchLabels": {"app": "b"}}, "ingress": rules})
    folder, inventory = write_cluster(tmp_path, CLUSTER, [policy])
    code, out, _ = run(capsys, "explain", folder, "--inventory", inventory, "--from", "prod/d", "--to", "default/b",
                       "--port", "tcp/http", "--format", "json")  # fmt: skip
    assert code == 0
    data = json.loads(out)
    assert data["allowed"] is True and data["resolvedPort"] == 8080
    assert data["egress"]["isolated"] is False and data["egress"]["allowed"] is True
    ingress = data["ingress"]
    assert ingress["isolated"] and [p["policy"] for p in ingress["isolatedBy"]] == ["default/b-in"]
    by = ingress["allowedBy"]
    assert (by["policy"], by["direction"], by["rule"]) == ("default/b-in", "ingress", 1)
    file, line, _ = by["place"].rsplit(":", 2)
    text = (Path(folder) / "policies.yaml").read_text().splitlines()
    rule_lines = [n for n, t in enumerate(text, 1) if t.strip() == "- from:"]
    assert file.endswith("policies.yaml") and int(line) == rule_lines[1]

    code, out, _ = run(capsys, "explain", folder, "--inventory", inventory, "--from", "default/a", "--to", "default/b",
                       "--port", "tcp/80")  # fmt: skip
    assert code == 0
    assert out.startswith("DENIED: default/a -> default/b tcp/80")
    assert "nearest miss: default/b-in ingress[0]" in out and "the peer matches but not the port" in out


def test_explain_of_a_pod_to_itself_allows_as_the_matrix_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A pod's own address never leaves it: the matrix's ``-``, diff's omission, and now explain's
    answer (it said DENIED under a deny-all policy), by name or by the pod's address."""
    deny = _policy("deny", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})
    folder, inventory = write_cluster(tmp_path, CLUSTER, [deny])
    for to in ("default/a", "10.0.0.1"):
        code, out, _ = run(capsys, "explain", folder, "--inventory", inventory, "--from", "default/a", "--to", to,
                           "--port", "tcp/80")  # fmt: skip
        assert (
            code == 0 and out.startswith("ALLOWED: default/a -> ") and "itself stays inside the pod" in out
        ), out
    code, out, _ = run(capsys, "explain", folder, "--inventory", inventory, "--from", "default/a", "--to",
                       "default/b", "--port", "tcp/80", "--format", "json")  # fmt: skip
    assert json.loads(out)["allowed"] is False and "itself" not in json.loads(out)
    code, out, _ = run(capsys, "explain", folder, "--inventory", inventory, "--from", "default/a", "--to",
                       "default/a", "--port", "tcp/80", "--format", "json")  # fmt: skip
    assert json.loads(out)["allowed"] is True and "stays inside the pod" in json.loads(out)["itself"]
    # a port name the pod lacks: still itself (the matrix's ``-``), the missing name said too
    code, out, _ = run(capsys, "explain", folder, "--inventory", inventory, "--from", "default/a", "--to",
                       "default/a", "--port", "tcp/no-such", "--format", "json")  # fmt: skip
    data = json.loads(out)
    assert data["allowed"] is True and "itself" in data and "no-such" in data["problem"], data
    code, out, _ = run(capsys, "explain", folder, "--inventory", inventory, "--from", "default/a", "--to",
                       "default/a", "--port", "tcp/no-such")  # fmt: skip
    assert out.startswith("ALLOWED: default/a -> default/a tcp/no-such") and "itself stays inside" in out, out


def test_explain_to_an_address_outside_the_cluster(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rule = {"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}}]}
    policy = _policy("out", {"podSelector": {"matchLabels": {"app": "a"}}, "egress": [rule]})
    folder, inventory = write_cluster(tmp_path, CLUSTER, [policy])
    answers = {}
    for to in ("192.0.2.7", "10.9.9.9", "10.0.0.2"):
        code, out, _ = run(capsys, "explain", folder, "--inventory", inventory, "--from", "default/a", "--to", to,
                           "--port", "tcp/443", "--format", "json")  # fmt: skip
        assert code == 0
        answers[to] = json.loads(out)
    assert answers["192.0.2.7"]["allowed"] and answers["192.0.2.7"]["ingress"]["pod"] is None
    assert not answers["10.9.9.9"]["allowed"]
    assert answers["10.0.0.2"]["to"] == "default/b" and not answers["10.0.0.2"]["allowed"]


def test_explain_answers_for_the_family_of_an_address_given_and_says_which(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Egress of every pod to IPv6 only: a connection is allowed in IPv6 and denied in IPv4. An
    address on either side fixes the family (two of different families are no connection); two
    pods are answered in the first family the network polices, and the text says so."""
    cluster = [
        _namespace("default"),
        _pod("default", "a", "10.0.0.1,fd00::1", {"app": "a"}),
        _pod("default", "b", "10.0.0.2,fd00::2", {"app": "b"}),
    ]
    policy = _policy("v6-out", {"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "fd00::/16"}}]}],
                                "policyTypes": ["Egress"]})  # fmt: skip
    folder, inventory = write_cluster(tmp_path, cluster, [policy])

    def answer(*argv: str) -> tuple[bool, str]:
        code, out, err = run(capsys, "explain", folder, "--inventory", inventory, "--port", "tcp/80",
                             "--format", "json", *argv)  # fmt: skip
        assert code == 0, err
        data = json.loads(out)
        return data["allowed"], data["ipFamily"]

    assert answer("--from", "default/a", "--to", "fd00::2") == (True, "IPv6")
    assert answer("--from", "fd00::1", "--to", "default/b") == (True, "IPv6")
    assert answer("--from", "10.0.0.1", "--to", "default/b") == (False, "IPv4")
    assert answer("--from", "default/a", "--to", "default/b") == (False, "IPv4")
    assert answer("--from", "default/a", "--to", "default/b", "--ip-families", "IPv6") == (True, "IPv6")
    code, out, err = run(capsys, "explain", folder, "--inventory", inventory, "--port", "tcp/80",
                         "--from", "10.0.0.1", "--to", "fd00::2")  # fmt: skip
    assert (code, out) == (2, "") and "different IP families" in err
    code, out, _ = run(capsys, "explain", folder, "--inventory", inventory, "--port", "tcp/80",
                       "--from", "default/a", "--to", "default/b")  # fmt: skip
    assert code == 0 and out.splitlines()[:2] == [
        "DENIED: default/a -> default/b tcp/80",
        "(IPv4; both pods have IPv6 addresses too: ask with --to fd00::2 for that family)",
    ]


def test_explain_of_a_pod_with_two_addresses_on_a_network_names_the_one_it_answers_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Multus can give a pod two IPv4 addresses on one network (the network attached twice); the
    kernel polices each, so an answer about the pod says which it is and how to ask about the other."""
    status = [
        {"name": "default/net1", "interface": "net1", "ips": ["10.9.0.15"]},
        {"name": "default/net1", "interface": "net3", "ips": ["10.9.0.151"]},
    ]
    a = _pod("default", "a", "10.0.0.1", {"app": "a"})
    a["metadata"]["annotations"] = {"k8s.v1.cni.cncf.io/network-status": json.dumps(status)}
    b = _pod("default", "b", "10.0.0.2", {"app": "b"})
    b["metadata"]["annotations"] = {
        "k8s.v1.cni.cncf.io/network-status": json.dumps([{"name": "default/net1", "ips": ["10.9.0.2"]}])
    }
    rule = {"from": [{"ipBlock": {"cidr": "10.9.0.0/24", "except": ["10.9.0.128/25"]}}]}
    policy = _policy("b-in", {"podSelector": {"matchLabels": {"app": "b"}}, "ingress": [rule]})
    policy["kind"], policy["apiVersion"] = "MultiNetworkPolicy", "k8s.cni.cncf.io/v1beta1"
    policy["metadata"]["annotations"] = {"k8s.v1.cni.cncf.io/policy-for": "net1"}
    folder, inventory = write_cluster(tmp_path, [_namespace("default"), a, b], [policy])
    net = ("--network", "default/net1", "--ip-source", "multus:default/net1", "--port", "tcp/80")

    def explain(*argv: str) -> str:
        code, out, err = run(capsys, "explain", folder, "--inventory", inventory, *net, *argv)
        assert code == 0, err
        return out

    out = explain("--from", "default/a", "--to", "default/b")
    assert out.splitlines()[:2] == [
        "ALLOWED: default/a -> default/b tcp/80",
        "(from 10.9.0.15; default/a has 10.9.0.151 too: ask with --from 10.9.0.151 for it)",
    ], out
    assert explain("--from", "10.9.0.151", "--to", "default/b").startswith("DENIED: default/a -> default/b")
    data = json.loads(explain("--from", "default/a", "--to", "default/b", "--format", "json"))
    assert (data["fromAddress"], data["toAddress"]) == ("10.9.0.15", "10.9.0.2")
    code, _, err = run(capsys, "matrix", folder, "--inventory", inventory, *net)
    assert code == 0 and "pod default/a has 2 IPv4 addresses on this network: answered for 10.9.0.15" in err


def test_a_namespace_annotation_among_the_policies_is_placed_there(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The 1.6 annotation of a Namespace object in the policy folder isolates from there; explain
    said ``(<inventory>)``, where it is not."""
    folder, inventory = write_cluster(tmp_path, CLUSTER, [])
    annotation = {"net.beta.kubernetes.io/network-policy": '{"ingress": {"isolation": "DefaultDeny"}}'}
    namespace = _namespace("default")
    namespace["metadata"]["annotations"] = annotation
    (Path(folder) / "ns.yaml").write_text(dump_all([namespace], sort_keys=False))
    code, out, err = run(capsys, "explain", folder, "--inventory", inventory, "--from", "default/a",
                         "--to", "default/b", "--port", "tcp/80", "--format", "json")  # fmt: skip
    assert code == 0, err
    (by,) = json.loads(out)["ingress"]["isolatedBy"]
    file, line, _ = by["place"].rsplit(":", 2)
    text = (Path(folder) / "ns.yaml").read_text().splitlines()
    assert file.endswith("ns.yaml") and "net.beta.kubernetes.io/network-policy" in text[int(line) - 1]


# --- diff ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("old", [["-"], ["-", "p"]])
def test_diff_refuses_stdin_on_both_sides(
    old: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pipe can be read once: the second side would read nothing and say "holds no document"."""
    folder, inventory = write_cluster(tmp_path, CLUSTER, [])
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    code, out, err = run(capsys, "diff", "--old", *[folder if o == "p" else o for o in old], "--new", "-",
                         "--inventory", inventory)  # fmt: skip
    assert (code, out) == (2, "") and "- (stdin) given twice" in err, err


def test_diff_lists_gained_and_lost_connections(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = _policy(
        "b-in",
        {
            "podSelector": {"matchLabels": {"app": "b"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "a"}}}]}],
        },
    )
    new = _policy(
        "b-in",
        {
            "podSelector": {"matchLabels": {"app": "b"}},
            "ingress": [{"from": [{"namespaceSelector": {}}], "ports": [{"port": 80}]}],
        },
    )
    old_dir, inventory = write_cluster(tmp_path, CLUSTER, [old], "old")
    new_dir, _ = write_cluster(tmp_path, CLUSTER, [new], "new")
    base = [
        "diff",
        "--old",
        old_dir,
        "--new",
        new_dir,
        "--inventory",
        inventory,
        "--port",
        "tcp/80",
        "--port",
        "tcp/8080",
    ]
    code, out, _ = run(capsys, *base, "--format", "json", "--exit-code")
    assert code == 1
    assert json.loads(out) == {
        "gained": [
            {"from": "prod/c", "to": "default/b", "protocol": "TCP", "port": 80},
            {"from": "prod/d", "to": "default/b", "protocol": "TCP", "port": 80},
        ],
        "lost": [{"from": "default/a", "to": "default/b", "protocol": "TCP", "port": 8080}],
    }
    code, out, _ = run(capsys, *base)
    assert code == 0
    # the two source classes that gained alike are one line, the first pair's reason with it
    gained = "+ tcp/80  2 classes (prod {app=c}; prod {app=d}) -> default {app=b}  (2 pairs: prod/c -> default/b, prod/d"
    assert gained in out and "prod {app=c} -> default {app=b}: allowed by default/b-in ingress[0]" in out
    assert "- tcp/8080  default {app=a} -> default {app=b}" in out and "isolated by default/b-in" in out
    code, out, _ = run(capsys, "diff", "--old", old_dir, "--new", old_dir, "--inventory", inventory, "--exit-code",
                       "--format", "json")  # fmt: skip
    assert (code, json.loads(out)) == (0, {"gained": [], "lost": []})


def test_a_dual_stack_diff_names_a_family_only_where_one_family_alone_changed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each pair appeared once per family with ``ipFamily``, where the documented form has one
    entry per pair; a change of one family alone (an IPv4 ``ipBlock``) still says which."""
    items = [
        _namespace("default"),
        _pod("default", "a", "10.0.0.1,fd00::1", {"app": "a"}),
        _pod("default", "b", "10.0.0.2,fd00::2", {"app": "b"}),
        _pod("default", "c", "10.0.0.3,fd00::3", {"app": "c"}),
    ]
    isolate = _policy("b-in", {"podSelector": {"matchLabels": {"app": "b"}}, "policyTypes": ["Ingress"]})
    opened = _policy(
        "b-in",
        {
            "podSelector": {"matchLabels": {"app": "b"}},
            "ingress": [
                {"from": [{"podSelector": {"matchLabels": {"app": "a"}}}]},
                {"from": [{"ipBlock": {"cidr": "10.0.0.3/32"}}]},
            ],
        },
    )
    old_dir, inventory = write_cluster(tmp_path, items, [isolate], "old")
    new_dir, _ = write_cluster(tmp_path, items, [opened], "new")
    code, out, _ = run(capsys, "diff", "--old", old_dir, "--new", new_dir, "--inventory", inventory,
                       "--port", "tcp/80", "--format", "json")  # fmt: skip
    assert code == 0
    assert json.loads(out) == {
        "gained": [
            {"from": "default/a", "to": "default/b", "protocol": "TCP", "port": 80},
            {"from": "default/c", "to": "default/b", "protocol": "TCP", "port": 80, "ipFamily": "IPv4"},
        ],
        "lost": [],
    }


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(old=programs, new=programs, inventory=inventories())
def test_diff_is_the_evaluators_pairs_that_differ(old: Program, new: Program, inventory: Inventory) -> None:
    """The class rectangles, expanded, are exactly the pod pairs and ports whose verdicts differ."""
    pods = inventory.pods
    models = [Model(p, inventory, pods, {}) for p in (old, new)]
    found = changes(*models, QUERIES)
    assert [c.sort_key for c in found] == sorted(c.sort_key for c in found)
    got = {(c.gained, c.query, c.family, ref(s), ref(d)) for c in found for s, d in c.pairs(pods)}
    assert sum(c.count() for c in found) == len(got)
    evaluators = [Evaluator(p, inventory) for p in (old, new)]
    dual = len({ip.version for pod in pods for ip in pod.ips}) > 1
    want = set()
    for query in QUERIES:
        for src in pods:
            for dst in pods:
                for s_ip in src.ips if src is not dst else ():
                    d_ip = next((ip for ip in dst.ips if ip.version == s_ip.version), None)
                    port = query.port
                    if isinstance(port, str):
                        port = dst.named_ports().get((query.protocol, port), -1)
                    if d_ip is None or port < 0:
                        continue
                    before, after = (e.allowed(s_ip, d_ip, query.protocol, port) for e in evaluators)  # type: ignore[arg-type]
                    if before != after:
                        want.add((after, query, s_ip.version if dual else None, ref(src), ref(dst)))
    assert got == want


# --- errors ---------------------------------------------------------------------------------------------


def test_bad_policy_is_reported_with_its_position(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = _policy("x", {"podSelector": {}, "ingress": [{"ports": [{"port": 70000}]}]})
    folder, inventory = write_cluster(tmp_path, CLUSTER, [bad])
    for argv in (
        ["matrix", folder],
        ["explain", folder, "--from", "default/a", "--to", "default/b", "--port", "tcp/80"],
        ["diff", "--old", folder, "--new", folder],
    ):
        code, out, err = run(capsys, *argv, "--inventory", inventory)
        assert (code, out) == (1, ""), argv
        assert "policies.yaml:" in err and "spec.ingress[0].ports[0].port" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["--port", "tcp/0"], 2, "port must be 1-65535"),
        (["--port", "icmp/1"], 2, "PROTO tcp, udp or sctp"),
        (["--port", "tcp/Bad_Name"], 2, "container port name"),
        (["--format", "pdf"], 2, "invalid choice"),
        (["--port", "tcp/\u0668\u0660"], 2, "a port is a number 1-65535"),  # Arabic-Indic 80 was port 80
    ],
)
def test_bad_flags_are_usage_errors(
    argv: list[str], code: int, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, inventory = write_cluster(tmp_path, CLUSTER, [])
    got, out, err = run(capsys, "matrix", folder, "--inventory", inventory, *argv)
    assert (got, out) == (code, "") and message in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--to", "10.0.0.0/8"], "is a network"),  # answered for 10.0.0.0
        (["--to", "fe80::1%eth0"], "has a zone"),  # answered for fe80::1
        (["--to", "::ffff:10.0.0.2"], "carry 10.0.0.2"),  # answered as an outside IPv6 address
        (["--to", "default/b", "--port", "tcp/443"], "given twice"),  # answered for 443 alone
        (["--to", "default/b", "--from", "default/b"], "given twice"),
    ],
)
def test_explain_refuses_what_it_would_change_to_answer(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, inventory = write_cluster(tmp_path, CLUSTER, [])
    code, out, err = run(capsys, "explain", folder, "--inventory", inventory, "--from", "default/a",
                         "--port", "tcp/80", *argv)  # fmt: skip
    assert (code, out) == (2, "") and message in err, err


def test_explain_of_an_unknown_pod_is_invalid_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, inventory = write_cluster(tmp_path, CLUSTER, [])
    code, _, err = run(capsys, "explain", folder, "--inventory", inventory, "--from", "default/zz", "--to", "default/a",
                       "--port", "tcp/80")  # fmt: skip
    assert code == 1 and "default/zz" in err


def test_explain_places_rules_of_the_npc_language(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, inventory = write_cluster(tmp_path, CLUSTER, [])
    source = tmp_path / "b.npc"
    source.write_text(
        "policy default/b-in {\n"
        "    select app == 'b'\n"
        "    allow ingress\n"
        "        from pods(app == 'a')\n"
        "        on tcp port 443\n"
        "    allow ingress\n"
        "        from namespaces(env == 'prod')\n"
        "        on tcp port 8080\n"
        "}\n"
    )
    code, out, _ = run(capsys, "explain", str(source), "--inventory", inventory, "--from", "prod/d", "--to",
                       "default/b", "--port", "tcp/8080", "--format", "json")  # fmt: skip
    assert code == 0
    data = json.loads(out)
    assert data["allowed"] and data["ingress"]["allowedBy"]["place"] == f"{source}:6:5"
    assert data["ingress"]["isolatedBy"][0]["place"] == f"{source}:1:8"
