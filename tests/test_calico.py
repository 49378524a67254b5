"""The Calico backend: what ``npc compile --backend calico`` writes must be accepted by calicoctl
(``calico_model.problems``) and, enforced the way Calico enforces it (``calico_model.Cluster``),
allow exactly what the policies allow: every truth table, and random policies against npc's
reference evaluator.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

import attrs
import pytest
import yaml
from calico_model import Cluster, parse_namespace_selector, parse_selector, problems
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kernel.case import Case, load_cases, write_inputs
from kernel.expected import evaluated
from kernel.report import diff_report
from npc.backends.calico import calico_objects, to_yaml
from npc.backends.calico.selectors import namespace_selector, pod_selector
from npc.cli import main
from npc.errors import InputError
from npc.evaluate import Evaluator
from npc.inventory import Inventory, NamedPort, Namespace, Pod, read_inventory
from npc.ir import IPBlock, PodPeer, Policy, PortSpec, Program, Requirement, Rule, Selector
from npc.ir import namespace_selector as own_namespace
from npc.pipeline import optimise
from random_clusters import connectivity, inventories
from random_clusters import programs as random_programs
from strategies import WIDE, selectors
from strategies import programs as valid_programs
from yaml_text import dump

CASES = load_cases()
CALICO_NAME = "projectcalico.org/orchestrator"


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def documents(text: str) -> list[dict[str, Any]]:
    """The objects of a calico.yaml, checking it is one ``---`` per object and each is valid."""
    objects = [d for d in yaml.safe_load_all(text) if d is not None]
    assert text.count("---\n") == len(objects) and (not text or text.startswith("---\n"))
    assert not [e for e in yaml.parse(text) if isinstance(e, yaml.AliasEvent)]  # each rule reads alone
    for obj in objects:
        assert not problems(obj), (obj, problems(obj))
    return objects


def compile_case(
    case: Case, tmp: Path, form: str, capsys: pytest.CaptureFixture[str]
) -> list[dict[str, Any]]:
    paths, inventory = write_inputs(case, tmp, form)
    out = tmp / "out"
    argv = ["compile", "--backend", "calico", "--inventory", str(inventory), *map(str, paths), "-o", str(out)]
    code, _, err = run(argv, capsys)
    assert code == 0, err
    assert json.loads((out / "manifest.json").read_text())["backend"] == "calico"
    return documents((out / "calico.yaml").read_text())


# --- every truth table, as Calico would enforce it -------------------------------------------


@pytest.mark.parametrize("form", ("yaml", "dsl"))
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_calico_enforces_the_truth_table(
    case: Case, form: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    objects = compile_case(case, tmp_path, form, capsys)
    cluster = Cluster(objects, read_inventory(str(tmp_path / "inventory.json")))
    checks = [c for c in case.checks if c.network is None]
    assert checks
    reports = [diff_report(case, c, evaluated(case, c, cluster), observed_title="calico") for c in checks]
    failures = "\n\n".join(r for r in reports if r)
    assert not failures, f"{case.path.name}: {case.name}\n{failures}"


# --- random policies: Calico's verdicts are the reference evaluator's -------------------------


def _first_port_of_each_name(inventory: Inventory) -> Inventory:
    """Pods whose containers repeat a port name are where Calico and npc's evaluator part ways:
    Calico's named-port sets take every port of that name, Kubernetes (and npc) the first."""
    pods = []
    for pod in inventory.pods:
        seen = {(p.protocol, p.name): p for p in reversed(pod.ports)}
        pods.append(attrs.evolve(pod, ports=tuple(p for p in pod.ports if seen[(p.protocol, p.name)] is p)))
    return attrs.evolve(inventory, pods=tuple(pods))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_programs, inventories().map(_first_port_of_each_name))
def test_random_policies_mean_the_same_on_calico(program: Program, inventory: Inventory) -> None:
    objects = calico_objects(optimise(program))
    for obj in objects:
        assert not problems(obj), problems(obj)
    reference = Evaluator(program, inventory)
    assert connectivity(Cluster(objects, inventory).allowed, inventory) == connectivity(
        reference.allowed, inventory
    )


@settings(max_examples=100, deadline=None)
@given(valid_programs(WIDE))
def test_any_valid_policy_gives_objects_calicoctl_accepts(program: Program) -> None:
    """Keyword-like keys (``all``, ``has``, ``in``, ``not``), dotted names, every shape of rule."""
    text = to_yaml(calico_objects(optimise(program)))
    objects = documents(text)
    names = [(o["metadata"]["namespace"], o["metadata"]["name"]) for o in objects]
    assert len(set(names)) == len(names)
    assert to_yaml(calico_objects(optimise(Program(tuple(reversed(program.policies)))))) == text


def _labels(selector: Selector) -> st.SearchStrategy[dict[str, str]]:
    """Label maps built from the selector's own keys and values, so matches and misses both occur."""
    keys = [r.key for r in selector.requirements] or ["app"]
    values = [v for r in selector.requirements for v in r.values] or ["x"]
    return st.dictionaries(st.sampled_from(keys), st.sampled_from([*values, "other"]), max_size=4)


@settings(max_examples=200, deadline=None)
@given(st.data(), selectors(WIDE))
def test_selectors_mean_what_the_ir_means(data: st.DataObject, selector: Selector) -> None:
    labels = data.draw(_labels(selector))
    endpoint = {**labels, CALICO_NAME: "k8s"}
    assert parse_selector(pod_selector(selector))(endpoint) == selector.matches(labels)
    profile = {f"pcns.{k}": v for k, v in labels.items()} | {"projectcalico.org/namespace": "ns"}
    assert parse_namespace_selector(namespace_selector(selector))(profile) == selector.matches(labels)


# --- selectors that need care ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [("it's", 'k == "it\'s"'), ('say "hi"', "k == 'say \"hi\"'"), ("a'b\"c", "k in {}")],
)
def test_values_are_quoted_with_the_quote_they_lack(value: str, text: str) -> None:
    """Calico literals have no escapes; a value holding both quotes cannot be written, and no
    Kubernetes label value holds a quote, so it matches nothing and is left out of the set."""
    selector = Selector((Requirement("k", "In", (value,)),))
    assert pod_selector(selector) == f"projectcalico.org/orchestrator == 'k8s' && {text}"
    matches = parse_selector(pod_selector(selector))
    assert matches({"k": value, CALICO_NAME: "k8s"}) == ("'" not in value or '"' not in value)
    assert not matches({"k": "ok", CALICO_NAME: "k8s"})
    both = Selector((Requirement("k", "NotIn", (value, "x")),))
    not_in = parse_selector(pod_selector(both))
    assert not_in({"k": "ok", CALICO_NAME: "k8s"}) and not not_in({"k": "x", CALICO_NAME: "k8s"})
    assert not problems(_policy_object(Policy("default", "p", selector, ingress=())))


@pytest.mark.parametrize("key", ["has", "all", "in", "not", "global", "contains", "starts", "a.b/c-d_e"])
def test_keyword_like_keys_are_plain_labels(key: str) -> None:
    for op, values in (("In", ("v",)), ("NotIn", ("v", "w")), ("Exists", ()), ("DoesNotExist", ())):
        selector = Selector((Requirement(key, op, values),))  # type: ignore[arg-type]
        matches = parse_selector(pod_selector(selector))
        for labels in ({}, {key: "v"}, {key: "z"}):
            assert matches({**labels, CALICO_NAME: "k8s"}) == selector.matches(labels)


def test_namespace_name_label_becomes_calicos_own_name_label() -> None:
    """``kubernetes.io/metadata.name`` is what Calico's profile calls ``projectcalico.org/name``;
    a podSelector-only peer leaves namespaceSelector out (Calico's same-namespace default)."""
    other = PodPeer(own_namespace("prod"), Selector())
    same = PodPeer(own_namespace("default"), Selector.from_labels({"app": "a"}))
    (obj,) = calico_objects(Program((Policy("default", "p", ingress=(Rule((other, same)),)),)))
    sources = [r["source"] for r in obj["spec"]["ingress"]]
    assert sources == [
        {"selector": "projectcalico.org/orchestrator == 'k8s' && app == 'a'"},
        {
            "selector": "projectcalico.org/orchestrator == 'k8s'",
            "namespaceSelector": "projectcalico.org/name == 'prod'",
        },
    ]


# --- names ----------------------------------------------------------------------------------


def _policy_object(policy: Policy) -> dict[str, Any]:
    (obj,) = calico_objects(Program((policy,)))
    return obj


def test_names_follow_calicos_rules_and_are_stable_and_distinct() -> None:
    dotted = Policy("default", "a.b.c", ingress=())
    name = _policy_object(dotted)["metadata"]["name"]
    assert "." not in name and name.startswith("npc-a-b-c-") and len(name) <= 63
    changed = Policy("default", "a.b.c", Selector.from_labels({"x": "y"}), ingress=(Rule(),), egress=())
    assert _policy_object(changed)["metadata"]["name"] == name  # an edit is an edit in Git
    assert _policy_object(Policy("default", "a-b-c", ingress=()))["metadata"]["name"] != name
    multi = Policy("default", "a.b.c", ingress=(), kind="MultiNetworkPolicy")
    assert _policy_object(multi)["metadata"]["name"] != name
    long = _policy_object(Policy("default", "x" * 200 + ".y" * 26, ingress=()))
    assert len(long["metadata"]["name"]) <= 63 and not problems(long)


# --- limits ---------------------------------------------------------------------------------


def _verdicts(program: Program, inventory: Inventory) -> None:
    objects = calico_objects(optimise(program))
    for obj in objects:
        assert not problems(obj), problems(obj)
    assert connectivity(Cluster(objects, inventory).allowed, inventory) == connectivity(
        Evaluator(program, inventory).allowed, inventory
    )


SMALL_CLUSTER = Inventory(
    (Namespace("a", {"kubernetes.io/metadata.name": "a"}),),
    (
        Pod("a", "p", {"app": "x"}, (ipaddress.ip_address("10.0.0.1"),), (NamedPort("http", "TCP", 80),)),
        Pod("a", "q", {"app": "y"}, (ipaddress.ip_address("10.0.0.2"),), (NamedPort("http", "TCP", 81),)),
    ),
)


def test_more_than_fifty_ports_are_split_over_rules() -> None:
    ports = [PortSpec("TCP", p) for p in range(1, 160, 2)] + [PortSpec("TCP", "http")]
    policy = Policy("a", "p", Selector.from_labels({"app": "x"}), ingress=(Rule(None, ports),))
    rules = _policy_object(policy)["spec"]["ingress"]
    assert [len(r["destination"]["ports"]) for r in rules] == [50, 31]
    _verdicts(Program((policy,)), SMALL_CLUSTER)


def test_port_ranges_read_as_ranges_in_yaml_1_1_too() -> None:
    """``1:20`` unquoted is 80 to a YAML 1.1 reader (base 60), a pipeline's Python step say."""
    ports = [PortSpec("TCP", 1, 20), PortSpec("UDP", 22, 25), PortSpec("TCP", 8080, 8090)]
    policy = Policy("a", "p", Selector.from_labels({"app": "x"}), ingress=(Rule(None, ports),))
    text = to_yaml(calico_objects(Program((policy,))))
    read = [r["destination"]["ports"] for o in documents(text) for r in o["spec"]["ingress"]]
    assert read == [["1:20", "8080:8090"], ["22:25"]], read
    assert "- '1:20'\n" in text and "- 8080:8090\n" in text  # quoted where YAML 1.1 would misread


def test_more_than_1024_rules_are_split_over_objects() -> None:
    blocks = [IPBlock(ipaddress.ip_network(f"10.{i // 256}.{i % 256}.0/24")) for i in range(1100)]
    policy = Policy(
        "a", "p", Selector.from_labels({"app": "y"}), ingress=(Rule(tuple(blocks), [PortSpec()]),)
    )
    objects = calico_objects(Program((policy,)))
    assert [len(o["spec"]["ingress"]) for o in objects] == [1024, 76]
    assert objects[1]["metadata"]["name"] == objects[0]["metadata"]["name"] + "-2"
    _verdicts(Program((policy,)), SMALL_CLUSTER)


def test_more_than_256_excepts_become_the_remaining_ranges() -> None:
    excepts = [ipaddress.ip_network(f"10.0.{i // 2}.{i % 2 * 128}/25") for i in range(1, 300)]
    block = IPBlock(ipaddress.ip_network("10.0.0.0/16"), excepts)
    policy = Policy("a", "p", Selector.from_labels({"app": "y"}), ingress=(Rule((block,)),))
    rules = _policy_object(policy)["spec"]["ingress"]
    assert all("notNets" not in r["source"] and len(r["source"]["nets"]) <= 256 for r in rules)
    nets = [ipaddress.ip_network(n) for r in rules for n in r["source"]["nets"]]
    for address in ("10.0.0.1", "10.0.0.129", "10.0.149.200", "10.0.150.1", "10.0.255.9", "10.1.0.1"):
        ip = ipaddress.ip_address(address)
        assert any(ip in n for n in nets) == block.contains(ip), address
    _verdicts(Program((policy,)), SMALL_CLUSTER)


def test_an_except_covering_its_cidr_leaves_no_peer_and_no_catch_all_notnets() -> None:
    block = IPBlock(ipaddress.ip_network("0.0.0.0/0"), [ipaddress.ip_network("0.0.0.0/0")])
    policy = Policy("a", "p", Selector(), ingress=(Rule((block,)),))
    spec = _policy_object(policy)["spec"]
    assert spec["types"] == ["Ingress"] and "ingress" not in spec
    _verdicts(Program((policy,)), SMALL_CLUSTER)


# --- command line ---------------------------------------------------------------------------

SEED = Path(__file__).resolve().parent.parent / "examples"


def test_stdout_is_the_yaml_alone_and_the_same_as_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = [str(SEED / "policies"), str(SEED / "legacy" / "namespace-default-deny.yaml")]
    code, out, _ = run(["compile", "--backend", "calico", *paths], capsys)
    assert code == 0 and documents(out)
    code, _, _ = run(["compile", "--backend", "calico", *reversed(paths), "-o", str(tmp_path)], capsys)
    assert code == 0 and (tmp_path / "calico.yaml").read_text() == out
    code, with_inventory, _ = run(
        ["compile", "--backend", "calico", "--inventory", str(SEED / "inventory.json"), *paths], capsys
    )
    assert code == 0 and with_inventory == out  # accepted, and Calico resolves selectors itself
    code, converted, _ = run(["convert", "--to", "calico", *paths], capsys)
    assert code == 0 and converted == out


def test_rules_sharing_a_peer_list_write_it_out_each(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One peer list for two ports was one list object: PyYAML wrote ``nets: &id001`` and then
    ``nets: *id001``, so a rule did not read (or diff) on its own."""
    policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "x", "namespace": "default"},
        "spec": {
            "podSelector": {},
            "ingress": [
                {
                    "from": [{"ipBlock": {"cidr": "10.0.0.0/8"}}],
                    "ports": [{"port": 80}, {"port": 81, "protocol": "UDP"}],
                }
            ],
        },
    }
    (tmp_path / "p.json").write_text(json.dumps(policy))
    written = {}
    for to in ("calico", "k8s"):
        code, written[to], err = run(["convert", "--to", to, str(tmp_path / "p.json")], capsys)
        assert code == 0, err
        assert not [e for e in yaml.parse(written[to]) if isinstance(e, yaml.AliasEvent)], written[to]
    rules = documents(written["calico"])[0]["spec"]["ingress"]
    assert [r["source"]["nets"] for r in rules] == [["10.0.0.0/8"], ["10.0.0.0/8"]]


def test_another_network_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "compile",
        "--backend",
        "calico",
        "--network",
        "net2",
        "--ip-source",
        "genie:net2",
        str(SEED / "policies"),
    ]
    code, out, err = run(argv, capsys)
    assert code == 2 and not out and "primary interface" in err


def test_apply_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["apply", "--backend", "calico", str(SEED / "policies")], capsys)
    assert code == 2 and "calicoctl" in err
    code, out, err = run(["convert", "--to", "iptables", str(SEED / "policies")], capsys)
    assert code == 2 and not out and "npc compile --backend iptables -o DIR" in err


def test_multinetworkpolicy_for_a_secondary_network_is_left_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mnp = {
        "apiVersion": "k8s.cni.cncf.io/v1beta1",
        "kind": "MultiNetworkPolicy",
        "metadata": {
            "name": "m",
            "namespace": "default",
            "annotations": {"k8s.v1.cni.cncf.io/policy-for": "default/net2"},
        },
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
    }
    path = tmp_path / "mnp.yaml"
    path.write_text(dump(mnp))
    code, out, err = run(["compile", "--backend", "calico", str(path), str(SEED / "policies")], capsys)
    assert code == 0, err
    assert all(
        o["metadata"]["annotations"]["npc/source"].startswith("NetworkPolicy ") for o in documents(out)
    )


def test_a_selector_past_1024_characters_is_split_into_a_union() -> None:
    values = [f"value-{n:03d}-" + "v" * 20 for n in range(100)] + ["x", "y"]
    wide = Selector((Requirement("app", "In", values),))
    peer = PodPeer(own_namespace("a"), wide)
    scope = PodPeer(Selector((Requirement("kubernetes.io/metadata.name", "In", ["a", *values]),)), wide)
    policy = Policy("a", "p", wide, ingress=(Rule((peer, scope), [PortSpec("TCP", "http")]),))
    objects = calico_objects(Program((policy,)))
    assert len(objects) > 1 and all(len(o["spec"]["selector"]) <= 1024 for o in objects)
    assert len(objects[0]["spec"]["ingress"]) > 2
    _verdicts(Program((policy,)), SMALL_CLUSTER)


def test_a_selector_that_cannot_be_split_is_an_input_error() -> None:
    values = [f"value-{n:03d}-" + "v" * 20 for n in range(100)]
    policy = Policy("a", "p", Selector((Requirement("app", "NotIn", values),)), ingress=(), source="p.yaml")
    with pytest.raises(
        InputError, match=r"p.yaml: error: policy a/p: the selector .* Calico accepts at most 1024"
    ):
        calico_objects(Program((policy,)))


def test_a_selector_too_long_is_reported_at_the_policys_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    values = ", ".join(f"value-number-{n}" for n in range(80))
    text = (
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  namespace: default\n"
        f"  name: big\nspec:\n  podSelector:\n    matchExpressions:\n"
        f"    - {{key: app, operator: NotIn, values: [{values}]}}\n  ingress: [{{}}]\n"
    )
    (tmp_path / "big.yaml").write_text(text)
    for argv in (["compile", "--backend", "calico"], ["convert", "--to", "calico"]):
        code, out, err = run([*argv, str(tmp_path / "big.yaml")], capsys)
        assert (code, out) == (1, ""), err
        assert err.startswith(f"{tmp_path / 'big.yaml'}:5:9: error: policy default/big: the selector "), err
        assert "Calico accepts at most 1024" in err and len(err) < 300, err
