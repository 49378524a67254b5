"""The Kubernetes 1.6 namespace isolation annotation."""

from __future__ import annotations

import ipaddress
import json

import pytest
from npc.errors import InputError
from npc.evaluate import Evaluator
from npc.frontends.annotation import isolates_ingress, isolation_note
from npc.frontends.legacy import isolation_policies, namespaces_from_objects
from npc.inventory import NAMESPACE_ISOLATION_ANNOTATION, Inventory, Namespace, Pod
from npc.ir import NAMESPACE_NAME_LABEL, PodPeer, Policy, Program, Rule, Selector, namespace_selector

DENY = '{"ingress": {"isolation": "DefaultDeny"}}'


def ns(name: str, value: str | None) -> Namespace:
    annotations = {} if value is None else {NAMESPACE_ISOLATION_ANNOTATION: value}
    return Namespace(name, {NAMESPACE_NAME_LABEL: name}, annotations)


def test_default_deny_becomes_an_ingress_isolating_policy() -> None:
    assert isolation_policies([ns("a", DENY), ns("b", None)]) == [
        Policy(
            namespace="a",
            name="net.beta.kubernetes.io/network-policy",
            kind="NamespaceIsolation",
            pod_selector=Selector(),
            ingress=(),
            egress=None,
        )
    ]


@pytest.mark.parametrize(
    "value",
    [
        '{"ingress": {"isolation": "None"}}',
        '{"ingress": {"isolation": "defaultdeny"}}',
        '{"ingress": {}}',
        '{"ingress": null}',
        '{"egress": {"isolation": "DefaultDeny"}}',
        "{}",
        "null",
        ' { "ingress" : { "isolation" : "DefaultDeny2" } } ',
    ],
)
def test_anything_else_is_no_isolation(value: str) -> None:
    assert isolation_policies([ns("a", value)]) == []


def test_whitespace_and_extra_keys_are_fine() -> None:
    value = '\n{ "ingress" : { "isolation" : "DefaultDeny", "extra": 1 }, "other": [] }\n'
    assert [p.namespace for p in isolation_policies([ns("a", value)])] == ["a"]


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("{ingress: DefaultDeny}", "not valid JSON"),
        ("", "not valid JSON"),
        ('{"ingress": {"isolation": "DefaultDeny"}', "not valid JSON"),
        ('["DefaultDeny"]', "must be a JSON object"),
        ('{"ingress": "DefaultDeny"}', '"ingress" must be a JSON object'),
        ('{"ingress": {"isolation": true}}', "must be a string"),
    ],
)
def test_malformed_annotation_names_namespace_and_annotation(value: str, problem: str) -> None:
    with pytest.raises(InputError) as info:
        isolation_policies([ns("a", DENY), ns("broken\x1b", value)], source="inv.json")
    message = info.value.render()
    assert message.startswith("inv.json: error: namespace ")
    assert '"broken\\x1b"' in message and NAMESPACE_ISOLATION_ANNOTATION in message and problem in message


def test_isolates_ingress() -> None:
    assert isolates_ingress(DENY)
    # Go's json.Unmarshal matches a struct's keys regardless of case: a Go plugin isolated these
    assert isolates_ingress('{"Ingress": {"Isolation": "DefaultDeny"}}')
    assert not isolates_ingress('{"INGRESS": {"isolation": "DefaultDeny"}, "ingress": {"isolation": "x"}}')
    assert not isolates_ingress('{"ingress": {"isolation": "Allow"}}')
    with pytest.raises(ValueError, match="not valid JSON"):
        isolates_ingress("{")


def test_namespaces_from_objects() -> None:
    objects = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a", "labels": {"team": "x"}}},
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": "b", "annotations": {NAMESPACE_ISOLATION_ANNOTATION: DENY}},
        },
    ]
    got = namespaces_from_objects(objects)
    assert [(n.name, dict(n.labels)) for n in got] == [
        ("a", {"team": "x", NAMESPACE_NAME_LABEL: "a"}),
        ("b", {NAMESPACE_NAME_LABEL: "b"}),
    ]
    assert [p.namespace for p in isolation_policies(got)] == ["b"]


def test_isolation_denies_ingress_until_a_policy_allows_it() -> None:
    addr = ipaddress.ip_address
    inventory = Inventory(
        (ns("legacy", DENY), ns("open", None)),
        (
            Pod("legacy", "db", {"role": "db"}, (addr("10.0.0.1"),)),
            Pod("legacy", "fe", {"role": "fe"}, (addr("10.0.0.2"),)),
            Pod("open", "x", {}, (addr("10.0.1.1"),)),
        ),
    )
    isolated = isolation_policies(inventory.namespaces)
    evaluator = Evaluator(Program(isolated), inventory)
    assert not evaluator.allowed(addr("10.0.1.1"), addr("10.0.0.1"), "TCP", 80)
    assert evaluator.allowed(addr("10.0.0.1"), addr("10.0.1.1"), "TCP", 80)  # egress untouched
    allow_fe = Policy(
        "legacy",
        "allow-fe",
        Selector.from_labels({"role": "db"}),
        ingress=(Rule((PodPeer(namespace_selector("legacy"), Selector.from_labels({"role": "fe"})),)),),
    )
    evaluator = Evaluator(Program((*isolated, allow_fe)), inventory)
    assert evaluator.allowed(addr("10.0.0.2"), addr("10.0.0.1"), "TCP", 80)
    assert not evaluator.allowed(addr("10.0.1.1"), addr("10.0.0.1"), "TCP", 80)


@pytest.mark.parametrize(
    "value", ["defaultdeny", "Default Deny", "default-deny", "Default_Deny", "DefaultDeny."]
)
def test_a_near_miss_of_default_deny_gets_a_note(value: str) -> None:
    note = isolation_note(json.dumps({"ingress": {"isolation": value}}))
    assert (
        note
        == f"isolation {json.dumps(value)} is not DefaultDeny (case and spaces count): nothing is isolated"
    )
    assert isolation_note(DENY) is None and isolation_note('{"ingress": {"isolation": "None"}}') is None
