"""The Kubernetes frontend: NetworkPolicy / MultiNetworkPolicy objects and files to IR policies."""

from __future__ import annotations

import io
import json
import sys
import textwrap
import time
import types
from pathlib import Path
from typing import Any

import pytest
import yaml
from npc.documents import Loader
from npc.errors import InputError
from npc.frontends.k8s import policy_from_object
from npc.ir import IPBlock, PodPeer, Policy, PortSpec, Requirement, Rule, Selector, namespace_selector
from npc.sources import read_policy_sources
from yaml_text import dump


def np(spec: dict[str, Any] | None = None, **meta: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "p", "namespace": "ns", **meta},
    }
    if spec is not None:
        obj["spec"] = spec
    return obj


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return str(path)


SEL_ALL = Selector()
OWN_NS = namespace_selector("ns")


# --- policyTypes and rule lists -----------------------------------------------------------


def test_an_octal_port_is_the_number_go_yaml_reads(tmp_path: Path) -> None:
    """``0o120`` is 80 to the API server (go-yaml v2, Go's ParseInt); PyYAML read the port named
    "0o120"."""
    text = dump(np({"podSelector": {}, "ingress": [{"ports": [{"port": 1}]}]}))
    (policy,) = read_policy_sources(
        [write(tmp_path, "p.yaml", text.replace("port: 1", "port: 0o120"))]
    ).policies
    assert policy.ingress[0].ports == (PortSpec("TCP", 80),)


@pytest.mark.parametrize(("text", "number"), [("1e3", 1000), (".5e2", 50), ("80.0", 80), ("8.0e1", 80)])
def test_an_integral_decimal_port_is_the_integer_the_api_server_reads(
    tmp_path: Path, text: str, number: int
) -> None:
    """kubectl and the API server read YAML through JSON (sigs.k8s.io/yaml), where Go writes the
    float64 1000 as ``1000``: ``port: 1e3`` is port 1000, not an error; ``80.5`` is one."""
    body = np({"podSelector": {}, "ingress": [{"ports": [{"port": 1, "endPort": 2}]}]})
    edited = dump(body).replace("port: 1", f"port: {text}").replace("endPort: 2", f"endPort: {text}")
    (policy,) = read_policy_sources([write(tmp_path, "p.yaml", edited)]).policies
    assert policy.ingress[0].ports == (PortSpec("TCP", number),)


def test_a_date_is_the_string_go_yaml_reads(tmp_path: Path) -> None:
    """go-yaml v2 resolves ``2001-12-14`` as a timestamp but decodes it into an untyped value as
    its text, so it is a valid label value to the API server (a time, ``2001-12-14t21:59:43Z``,
    is the string too, refused as a label value for its colons)."""
    body = np({"podSelector": {"matchLabels": {"a": "xx"}}})
    (policy,) = read_policy_sources(
        [write(tmp_path, "p.yaml", dump(body).replace("a: xx", "a: 2001-12-14"))]
    ).policies
    assert policy.pod_selector == Selector.from_labels({"a": "2001-12-14"})
    assert yaml.load("t: 2001-12-14t21:59:43.10-05:00", Loader=Loader) == {
        "t": "2001-12-14t21:59:43.10-05:00"
    }


def test_strings_go_yaml_reads_as_numbers_or_booleans_are_written_quoted() -> None:
    """``convert`` and ``calico.yaml`` write what the API server reads back as the same string."""
    values = ["y", "N", "1e3", "0o17", "8.0e1", "1e-3", "0b1", "0x1f", "+80", "on", "~", "", "null"]
    text = dump({v: v for v in values})
    assert yaml.load(text, Loader=Loader) == {v: v for v in values}
    for v in ("y", "N", "1e3", "0o17", "8.0e1"):
        assert f"'{v}': '{v}'" in text


def test_no_spec_isolates_every_pod_for_ingress() -> None:
    policy = policy_from_object(np())
    assert policy == Policy("ns", "p", Selector(), ingress=(), egress=None)


def test_policy_types_default_to_ingress_only_without_egress_rules() -> None:
    policy = policy_from_object(np({"podSelector": {}, "ingress": [{}]}))
    assert policy.ingress == (Rule(None, ()),)
    assert policy.egress is None


def test_policy_types_default_adds_egress_when_egress_rules_exist() -> None:
    policy = policy_from_object(np({"egress": [{"ports": [{"port": 53, "protocol": "UDP"}]}]}))
    assert policy.ingress == ()
    assert policy.egress == (Rule(None, (PortSpec("UDP", 53),)),)


def test_empty_egress_list_does_not_imply_egress_type() -> None:
    # SetDefaults_NetworkPolicy checks len(spec.egress) != 0
    policy = policy_from_object(np({"egress": []}))
    assert policy.ingress == ()
    assert policy.egress is None


def test_explicit_policy_types_ignore_rules_of_other_direction() -> None:
    policy = policy_from_object(np({"policyTypes": ["Egress"], "ingress": [{}]}))
    assert policy.ingress is None
    assert policy.egress == ()


def test_both_policy_types_with_no_rules_deny_both_directions() -> None:
    policy = policy_from_object(np({"policyTypes": ["Ingress", "Egress"]}))
    assert (policy.ingress, policy.egress) == ((), ())


@pytest.mark.parametrize("pod_selector", [None, {}, {"matchLabels": {}}, {"matchExpressions": []}])
def test_null_absent_or_empty_pod_selector_selects_all(pod_selector: Any) -> None:
    spec = {} if pod_selector is None else {"podSelector": pod_selector}
    assert policy_from_object(np(spec)).pod_selector == SEL_ALL
    assert policy_from_object(np({"podSelector": None})).pod_selector == SEL_ALL


@pytest.mark.parametrize("rule", [{}, {"from": []}, {"from": None}, {"ports": []}, {"ports": None}])
def test_absent_or_empty_peer_and_port_lists_mean_everything(rule: dict[str, Any]) -> None:
    assert policy_from_object(np({"ingress": [rule]})).ingress == (Rule(None, ()),)


def test_null_rule_element_is_an_empty_rule() -> None:
    assert policy_from_object(np({"ingress": [None]})).ingress == (Rule(None, ()),)


# --- peers -------------------------------------------------------------------------------


def peers_of(*peers: dict[str, Any]) -> tuple[Any, ...] | None:
    rule = policy_from_object(np({"ingress": [{"from": list(peers)}]})).ingress
    assert rule is not None
    return rule[0].peers


def test_pod_selector_only_peer_means_own_namespace() -> None:
    role = Selector.from_labels({"role": "fe"})
    assert peers_of({"podSelector": {"matchLabels": {"role": "fe"}}}) == (PodPeer(OWN_NS, role),)


def test_namespace_selector_only_peer_means_all_pods_there() -> None:
    team = Selector.from_labels({"team": "a"})
    assert peers_of({"namespaceSelector": {"matchLabels": {"team": "a"}}}) == (PodPeer(team, SEL_ALL),)


def test_both_selectors_in_one_peer_are_anded() -> None:
    peer = {"namespaceSelector": {"matchLabels": {"team": "a"}}, "podSelector": {"matchLabels": {"r": "x"}}}
    assert peers_of(peer) == (PodPeer(Selector.from_labels({"team": "a"}), Selector.from_labels({"r": "x"})),)


def test_empty_namespace_selector_means_every_namespace() -> None:
    assert peers_of({"namespaceSelector": {}}) == (PodPeer(SEL_ALL, SEL_ALL),)


def test_empty_pod_selector_means_every_pod_of_own_namespace() -> None:
    assert peers_of({"podSelector": {}}) == (PodPeer(OWN_NS, SEL_ALL),)


def test_ip_blocks_with_except_v4_and_v6() -> None:
    got = peers_of(
        {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16", "10.2.0.0/16"]}},
        {"ipBlock": {"cidr": "fd00::/64", "except": ["fd00::/96"]}},
        {"ipBlock": {"cidr": "192.168.1.7/24"}},
    )
    assert got == (
        IPBlock("10.0.0.0/8", ("10.1.0.0/16", "10.2.0.0/16")),
        IPBlock("192.168.1.0/24"),
        IPBlock("fd00::/64", ("fd00::/96",)),
    )


def test_match_expressions() -> None:
    spec = {
        "podSelector": {
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "NotIn", "values": ["a", "b"]},
                {"key": "env", "operator": "Exists"},
                {"key": "legacy", "operator": "DoesNotExist", "values": []},
                {"key": "k8s.io/zone", "operator": "In", "values": ["z1"]},
            ],
        }
    }
    assert policy_from_object(np(spec)).pod_selector == Selector(
        (
            Requirement("app", "In", ("web",)),
            Requirement("tier", "NotIn", ("b", "a")),
            Requirement("env", "Exists"),
            Requirement("legacy", "DoesNotExist"),
            Requirement("k8s.io/zone", "In", ("z1",)),
        )
    )


# --- ports -------------------------------------------------------------------------------


def ports_of(*ports: dict[str, Any]) -> tuple[PortSpec, ...]:
    rules = policy_from_object(np({"ingress": [{"ports": list(ports)}]})).ingress
    assert rules is not None
    return rules[0].ports


def test_ports() -> None:
    assert ports_of(
        {"port": 80},
        {"port": "http"},
        {"protocol": "UDP", "port": 53},
        {"protocol": "SCTP"},
        {"port": 1000, "endPort": 2000},
        {"port": 443, "endPort": 443},
        {"protocol": None, "port": 22},
    ) == (
        PortSpec("SCTP"),
        PortSpec("TCP", 22),
        PortSpec("TCP", 80),
        PortSpec("TCP", 443),
        PortSpec("TCP", 1000, 2000),
        PortSpec("TCP", "http"),
        PortSpec("UDP", 53),
    )


def test_protocol_only_port_means_all_ports_of_that_protocol() -> None:
    assert ports_of({"protocol": "UDP"}) == (PortSpec("UDP", None),)


# --- metadata, kinds, versions -----------------------------------------------------------


def test_namespace_defaults_to_default() -> None:
    obj = np()
    del obj["metadata"]["namespace"]
    assert policy_from_object(obj).namespace == "default"


def test_standard_object_meta_and_status_are_accepted() -> None:
    obj = np(
        {"podSelector": {}},
        uid="0b1c",
        resourceVersion="42",
        generation=3,
        creationTimestamp="2024-01-01T00:00:00Z",
        labels={"app": "x", "example.com/tier": ""},
        annotations={"kubectl.kubernetes.io/last-applied-configuration": "{}\n"},
        managedFields=[{"manager": "kubectl", "operation": "Apply"}],
        finalizers=["example.com/keep"],
        ownerReferences=[{"kind": "X", "name": "y"}],
    )
    obj["status"] = {}
    assert policy_from_object(obj).name == "p"


def test_extensions_v1beta1_means_the_same() -> None:
    spec = {"ingress": [{"from": [{"podSelector": {}}], "ports": [{"port": 80}]}]}
    old = {**np(spec), "apiVersion": "extensions/v1beta1"}
    assert policy_from_object(old) == policy_from_object(np(spec))


def test_multi_network_policy_policy_for() -> None:
    obj = {
        "apiVersion": "k8s.cni.cncf.io/v1beta1",
        "kind": "MultiNetworkPolicy",
        "metadata": {
            "name": "m",
            "namespace": "ns",
            "annotations": {"k8s.v1.cni.cncf.io/policy-for": " net1, other/net2 ,ns/net1,"},
        },
        "spec": {"podSelector": {}, "ingress": [{}]},
    }
    policy = policy_from_object(obj)
    assert policy.kind == "MultiNetworkPolicy"
    assert policy.policy_for == ("ns/net1", "other/net2")
    assert policy.ingress == (Rule(None, ()),)


def test_network_policy_has_no_networks() -> None:
    obj = np(annotations={"k8s.v1.cni.cncf.io/policy-for": "net1"})
    assert policy_from_object(obj).policy_for == ()


# --- files -------------------------------------------------------------------------------

POLICY_YAML = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {name}
  namespace: ns
spec:
  podSelector:
    matchLabels: {{app: web}}
  ingress:
  - from:
    - podSelector: {{matchLabels: {{role: fe}}}}
    ports:
    - port: 80
"""


def test_multi_document_yaml_with_other_kinds_noted(tmp_path: Path) -> None:
    text = POLICY_YAML.format(name="a") + "---\n---\n" + POLICY_YAML.format(name="b")
    text += "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n"
    text += "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: e}\n"
    loaded = read_policy_sources([write(tmp_path, "all.yaml", text)])
    assert [p.name for p in loaded.policies] == ["a", "b"]
    assert loaded.notes == (f"ignored kind Deployment in {tmp_path}/all.yaml (2 objects)",)


def test_v1_list_and_typed_list(tmp_path: Path) -> None:
    item = yaml.safe_load(POLICY_YAML.format(name="a"))
    bare = {
        k: v
        for k, v in yaml.safe_load(POLICY_YAML.format(name="b")).items()
        if k not in ("kind", "apiVersion")
    }
    v1_list = {"apiVersion": "v1", "kind": "List", "items": [item]}
    typed = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicyList",
        "metadata": {},
        "items": [bare],
    }
    loaded = read_policy_sources(
        [write(tmp_path, "l.json", json.dumps(v1_list)), write(tmp_path, "t.yaml", dump(typed))]
    )
    assert [p.name for p in loaded.policies] == ["a", "b"]
    a, b = loaded.policies
    assert (a.kind, a.pod_selector, a.ingress, a.egress) == (b.kind, b.pod_selector, b.ingress, b.egress)


def test_yaml_and_json_give_the_same_policy(tmp_path: Path) -> None:
    obj = yaml.safe_load(POLICY_YAML.format(name="a"))
    a = read_policy_sources([write(tmp_path, "a.yaml", POLICY_YAML.format(name="a"))]).policies
    b = read_policy_sources([write(tmp_path, "b.json", json.dumps(obj, indent=2))]).policies
    assert a == b


def test_json_is_read_with_json_not_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "a.json", json.dumps(yaml.safe_load(POLICY_YAML.format(name="a"))))

    def no_yaml(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("JSON went through YAML")

    monkeypatch.setattr(yaml, "load_all", no_yaml)
    monkeypatch.setattr(yaml, "load", no_yaml)
    assert [p.name for p in read_policy_sources([path]).policies] == ["a"]


def test_directory_recursive_sorted_skipping_hidden_and_other_files(tmp_path: Path) -> None:
    write(tmp_path, "b/z.yml", POLICY_YAML.format(name="z"))
    write(tmp_path, "b/a.yaml", POLICY_YAML.format(name="ba"))
    write(tmp_path, "a.yaml", POLICY_YAML.format(name="a"))
    write(tmp_path, "c.json", json.dumps(yaml.safe_load(POLICY_YAML.format(name="c"))))
    write(tmp_path, "README.md", "not yaml: [")
    write(tmp_path, ".git/x.yaml", POLICY_YAML.format(name="hidden"))
    write(tmp_path, ".hidden.yaml", POLICY_YAML.format(name="hidden2"))
    loaded = read_policy_sources([str(tmp_path)])
    assert [p.name for p in loaded.policies] == ["a", "ba", "z", "c"]
    assert [Path(name).name for name, _ in loaded.files] == ["a.yaml", "a.yaml", "z.yml", "c.json"]


def test_stdin(tmp_path: Path) -> None:
    loaded = read_policy_sources(["-"], io.StringIO(POLICY_YAML.format(name="s")))
    assert [(p.name, p.source) for p in loaded.policies] == [("s", "<stdin>")]
    json_in = io.StringIO(json.dumps(yaml.safe_load(POLICY_YAML.format(name="j"))))
    assert [p.name for p in read_policy_sources(["-"], json_in).policies] == ["j"]


def test_namespaces_from_the_policy_folder(tmp_path: Path) -> None:
    ns = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": "legacy",
            "annotations": {
                "net.beta.kubernetes.io/network-policy": '{"ingress":{"isolation":"DefaultDeny"}}'
            },
        },
    }
    loaded = read_policy_sources([write(tmp_path, "ns.yaml", dump(ns))])
    assert loaded.policies == ()
    assert loaded.namespaces == (ns,)
    assert loaded.notes == ()


def test_npc_files_go_to_the_dsl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str]] = []

    def parse(text: str, file: str, rule_places: object = None) -> list[Policy]:
        calls.append((text, file))
        return [Policy("ns", "from-dsl", kind="Dsl", source=f"{file}:1:1")]

    fake = types.ModuleType("npc.frontends.dsl")
    fake.parse = parse  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "npc.frontends.dsl", fake)
    path = write(tmp_path, "x.npc", "policy from-dsl {}\n")
    loaded = read_policy_sources([path])
    assert calls == [("policy from-dsl {}\n", path)]
    assert [p.name for p in loaded.policies] == ["from-dsl"]
    again = write(tmp_path, "y.npc", "policy from-dsl {}\n")
    with pytest.raises(InputError, match=r"duplicate Dsl \"ns/from-dsl\": already defined at .*x.npc:1:1"):
        read_policy_sources([path, again])


@pytest.mark.parametrize("annotation", [None, "", " , "])
def test_a_multinetworkpolicy_naming_no_network_is_a_note(tmp_path: Path, annotation: str | None) -> None:
    """Without a network in ``policy-for`` it governs none (as the multi-networkpolicy controller
    reads it): said, with its place, rather than silently left out."""
    meta = {} if annotation is None else {"annotations": {"k8s.v1.cni.cncf.io/policy-for": annotation}}
    mnp = {
        **np({"podSelector": {}}, **meta),
        "apiVersion": "k8s.cni.cncf.io/v1beta1",
        "kind": "MultiNetworkPolicy",
    }
    text = dump(mnp)
    loaded = read_policy_sources([write(tmp_path, "m.yaml", text)])
    assert [p.policy_for for p in loaded.policies] == [()]
    line = next(n for n, t in enumerate(text.splitlines(), 1) if t.strip() == "name: p")
    assert loaded.notes == (
        f"{tmp_path}/m.yaml:{line}:9: MultiNetworkPolicy ns/p names no network in "
        "k8s.v1.cni.cncf.io/policy-for: it governs none",
    )


def test_same_name_in_different_resources_is_fine(tmp_path: Path) -> None:
    mnp = POLICY_YAML.format(name="a").replace(
        "networking.k8s.io/v1\nkind: NetworkPolicy", "k8s.cni.cncf.io/v1beta1\nkind: MultiNetworkPolicy"
    )
    other_ns = POLICY_YAML.format(name="a").replace("namespace: ns", "namespace: other")
    loaded = read_policy_sources(
        [
            write(tmp_path, "a.yaml", POLICY_YAML.format(name="a")),
            write(tmp_path, "m.yaml", mnp + "---\n" + other_ns),
        ]
    )
    assert [(p.kind, p.namespace, p.name) for p in loaded.policies] == [
        ("NetworkPolicy", "ns", "a"),
        ("MultiNetworkPolicy", "ns", "a"),
        ("NetworkPolicy", "other", "a"),
    ]


@pytest.mark.parametrize(
    ("labels", "meant"),
    [
        ("{<<: [{role: db}, {role: web}]}", "db"),  # of a list of maps, the earlier (PyYAML: web)
        ("{role: web, <<: {role: db}}", "db"),  # in place, in order: a later merge replaces
        ("{<<: {role: web}, role: db}", "db"),
    ],
)
def test_yaml_merge_keys_are_read_as_go_yaml_v2_reads_them(tmp_path: Path, labels: str, meant: str) -> None:
    text = f"""\
    apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {{name: p, namespace: ns}}
    spec:
      podSelector:
        matchLabels: {labels}
    """
    policy = read_policy_sources([write(tmp_path, "m.yaml", text)]).policies[0]
    assert policy.pod_selector == Selector.from_labels({"role": meant})


def test_a_merge_of_no_mapping_is_an_error_at_its_place(tmp_path: Path) -> None:
    text = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {<<: [{name: p}, 3]}\n"
    with pytest.raises(InputError) as caught:
        read_policy_sources([write(tmp_path, "m.yaml", text)])
    assert (caught.value.line, caught.value.column) == (3, 28)  # the 3
    assert "a merge (<<) takes a mapping or a list of mappings, not scalar" in caught.value.message


def test_yaml_merge_keys_and_anchors(tmp_path: Path) -> None:
    text = """\
    apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: p, namespace: ns}
    spec:
      podSelector: &sel
        matchLabels: {app: web}
      ingress:
      - from:
        - podSelector: *sel
        ports:
        - &http {port: 80}
        - <<: *http
          protocol: UDP
    """
    policy = read_policy_sources([write(tmp_path, "m.yaml", text)]).policies[0]
    web = Selector.from_labels({"app": "web"})
    assert policy.pod_selector == web
    assert policy.ingress == (Rule((PodPeer(OWN_NS, web),), (PortSpec("TCP", 80), PortSpec("UDP", 80))),)


def test_merges_of_aliases_of_merges_keep_each_key_once_and_are_bounded() -> None:
    """Each merge copied its keys, so aliases of merges of aliases multiplied them: 2.5 KB took
    818 MB and 41 s, 12 KB more than 11 GB (a review saw it). A key is now kept once, and the
    keys merges copy count against the aliases' bound."""
    from npc.documents import MAX_EXPANSION, load_documents

    lines = ["l0: &L0 {" + ", ".join(f"k{i}: v" for i in range(100)) + "}"]
    lines += [f"l{j}: &L{j} {{<<: [{', '.join([f'*L{j - 1}'] * 100)}]}}" for j in range(1, 21)]
    started = time.monotonic()
    (doc,) = load_documents("m.yaml", "\n".join(lines) + "\n", strict=True)
    assert doc["l20"] == doc["l0"] and len(doc["l20"]) == 100
    assert time.monotonic() - started < 5
    keys = MAX_EXPANSION // 100
    big = "big: &B {" + ", ".join(f"k{i}: v" for i in range(keys)) + "}\n"
    with pytest.raises(InputError) as caught:
        load_documents("m.yaml", big + f"x: {{<<: [{', '.join(['*B'] * 101)}]}}\n", strict=True)
    assert (caught.value.line, caught.value.column) == (2, 9)
    assert f"merges (<<) copy more than {MAX_EXPANSION:,} keys" in caught.value.message


def test_an_alias_inside_its_own_anchor_is_placed() -> None:
    """The error said what but not where (every other YAML error has its line:column)."""
    from npc.documents import load_documents

    text = "kind: NetworkPolicy\nspec:\n  podSelector: &a\n    matchLabels: {x: [1, *a]}\n"
    with pytest.raises(InputError) as caught:
        load_documents("r.yaml", text, strict=True)
    assert "an alias (*name) inside its own anchor" in caught.value.message
    assert (caught.value.file, caught.value.line, caught.value.column) == ("r.yaml", 4, 26)


@pytest.mark.parametrize("separator", ["\r", "\x85", "\u2028", "\u2029"])
def test_values_after_any_yaml_line_break_are_counted(
    separator: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cheap bound counted no value after a lone CR (YAML's line breaks are more than \\n):
    70 MB of ``k:\\r`` lines passed it, 14 million values, 6 GB (a review saw it)."""
    from npc import documents

    monkeypatch.setattr(documents, "MAX_VALUES", 1_000)
    text = "kind: ConfigMap" + separator + "".join(f"k{i:04d}:{separator}" for i in range(1_000))
    with pytest.raises(InputError) as caught:
        documents.load_documents("cr.yaml", text, strict=True)
    assert "more than 1,000 values" in caught.value.message
