"""Property tests: any valid NetworkPolicy parses; spelling and order never change its IR."""

from __future__ import annotations

import copy
import io
import ipaddress
import json
import random
from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from npc.documents import load_documents
from npc.errors import InputError
from npc.frontends.k8s import policy_from_object
from npc.sources import read_policy_sources

Obj = dict[str, Any]

name_part = st.from_regex(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,6}[A-Za-z0-9])?", fullmatch=True)
prefix = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,4}[a-z0-9])?(\.[a-z]{1,4}){0,2}", fullmatch=True)
label_key = st.one_of(name_part, st.builds(lambda p, n: f"{p}/{n}", prefix, name_part))
label_value = st.one_of(st.just(""), name_part)
port_name = st.from_regex(r"[a-z0-9]{0,4}[a-z]([a-z0-9]{1,4}(-[a-z0-9]{1,3})?)?", fullmatch=True).filter(
    lambda s: len(s) <= 15
)


@st.composite
def expressions(draw: st.DrawFn) -> Obj:
    op = draw(st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist"]))
    expr: Obj = {"key": draw(label_key), "operator": op}
    values: list[str] = draw(st.lists(label_value, min_size=1, max_size=3))
    if op in ("In", "NotIn"):
        expr["values"] = values
    elif len(values) > 1:
        expr["values"] = []
    return expr


@st.composite
def selectors(draw: st.DrawFn) -> Obj | None:
    if draw(st.integers(0, 5)) == 0:
        return None
    sel: Obj = {}
    if draw(st.booleans()):
        sel["matchLabels"] = draw(st.dictionaries(label_key, label_value, max_size=3))
    if draw(st.booleans()):
        sel["matchExpressions"] = draw(st.lists(expressions(), max_size=3))
    return sel


@st.composite
def ip_blocks(draw: st.DrawFn) -> Obj:
    v6 = draw(st.booleans())
    bits = 128 if v6 else 32
    plen = draw(st.integers(8 if v6 else 0, bits - 1))
    base = draw(st.integers(0, 2**bits - 1))
    net: ipaddress.IPv4Network | ipaddress.IPv6Network
    net = (
        ipaddress.IPv6Network((base, plen), strict=False)
        if v6
        else ipaddress.IPv4Network((base, plen), strict=False)
    )
    excepts = []
    for _ in range(draw(st.integers(0, 3))):
        sub_len = draw(st.integers(plen + 1, bits))
        offset = draw(st.integers(0, 2 ** (bits - plen) - 1))
        address = int(net.network_address) + offset
        excepts.append(f"{type(net.network_address)(address)}/{sub_len}")
    block: Obj = {"cidr": str(net)}
    empty_except: bool = draw(st.booleans())
    if excepts or empty_except:
        block["except"] = excepts
    return block


@st.composite
def peers(draw: st.DrawFn) -> Obj:
    shape = draw(st.sampled_from(["pods", "namespaces", "both", "ip"]))
    if shape == "ip":
        return {"ipBlock": draw(ip_blocks())}
    peer: Obj = {}
    if shape in ("pods", "both"):
        peer["podSelector"] = draw(selectors()) or {}
    if shape in ("namespaces", "both"):
        peer["namespaceSelector"] = draw(selectors()) or {}
    return peer


@st.composite
def ports(draw: st.DrawFn) -> Obj:
    port: Obj = {}
    if draw(st.booleans()):
        port["protocol"] = draw(st.sampled_from(["TCP", "UDP", "SCTP"]))
    kind = draw(st.sampled_from(["none", "number", "range", "name"]))
    if kind == "name":
        port["port"] = draw(port_name)
    elif kind != "none":
        port["port"] = draw(st.integers(1, 65535))
        if kind == "range":
            port["endPort"] = draw(st.integers(port["port"], 65535))
    return port


@st.composite
def rules(draw: st.DrawFn, peers_field: str) -> Obj:
    rule: Obj = {}
    if draw(st.booleans()):
        rule[peers_field] = draw(st.lists(peers(), max_size=3))
    if draw(st.booleans()):
        rule["ports"] = draw(st.lists(ports(), max_size=3))
    return rule


@st.composite
def network_policies(draw: st.DrawFn) -> Obj:
    spec: Obj = {}
    pod_selector = draw(selectors())
    if pod_selector is not None or draw(st.booleans()):
        spec["podSelector"] = pod_selector
    if draw(st.booleans()):
        spec["ingress"] = draw(st.lists(rules("from"), max_size=3))
    if draw(st.booleans()):
        spec["egress"] = draw(st.lists(rules("to"), max_size=3))
    if draw(st.booleans()):
        spec["policyTypes"] = draw(st.sampled_from([["Ingress"], ["Egress"], ["Ingress", "Egress"], []]))
    meta: Obj = {"name": draw(st.from_regex(r"[a-z0-9]([a-z0-9.-]{0,10}[a-z0-9])?", fullmatch=True))}
    if ".." in meta["name"] or ".-" in meta["name"] or "-." in meta["name"]:
        meta["name"] = "p"
    if draw(st.booleans()):
        meta["namespace"] = draw(st.from_regex(r"[a-z]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True))
    return {
        "apiVersion": draw(st.sampled_from(["networking.k8s.io/v1", "extensions/v1beta1"])),
        "kind": "NetworkPolicy",
        "metadata": meta,
        "spec": spec,
    }


ORDERED = ("ingress", "egress")  # rule order is kept in the IR; every other list is a set


def reshuffle(value: Any, rnd: random.Random, key: str = "") -> Any:
    """Same object, other spelling: keys and set-like lists reordered, list items repeated."""
    if isinstance(value, dict):
        pairs = [(k, reshuffle(v, rnd, k)) for k, v in value.items()]
        rnd.shuffle(pairs)
        return dict(pairs)
    if isinstance(value, list):
        out = [reshuffle(v, rnd, "") for v in value]
        if key not in ORDERED:
            if out and key != "policyTypes" and rnd.random() < 0.3:
                out.append(copy.deepcopy(rnd.choice(out)))
            rnd.shuffle(out)
        return out
    return value


@settings(max_examples=300, deadline=None)
@given(obj=network_policies(), seed=st.integers(0, 2**32 - 1))
def test_valid_policies_parse_and_order_does_not_matter(obj: Obj, seed: int) -> None:
    policy = policy_from_object(obj)
    assert policy.name == obj["metadata"]["name"]
    assert policy_from_object(reshuffle(obj, random.Random(seed))) == policy


@settings(max_examples=100, deadline=None)
@given(obj=network_policies())
def test_yaml_and_json_spellings_give_the_same_ir(obj: Obj) -> None:
    as_json = load_documents("p.json", json.dumps(obj), strict=True)
    as_yaml = load_documents("p.yaml", yaml.safe_dump(obj, default_flow_style=False), strict=True)
    flow_yaml = load_documents("p.yaml", yaml.safe_dump(obj, default_flow_style=True), strict=True)
    expected = policy_from_object(obj)
    assert [policy_from_object(d) for d in (*as_json, *as_yaml, *flow_yaml)] == [expected] * 3


def leaf_paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(value, dict):
        for k, v in value.items():
            out += leaf_paths(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += leaf_paths(v, (*path, i))
    return out


junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)


@settings(max_examples=300, deadline=None)
@given(obj=network_policies(), data=st.data(), as_json=st.booleans())
def test_any_corruption_is_an_input_error_with_a_position(
    obj: Obj, data: st.DataObject, as_json: bool
) -> None:
    path = data.draw(st.sampled_from(leaf_paths(obj)[1:]))
    target = obj
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = data.draw(junk)
    text = json.dumps(obj, indent=1) if as_json else yaml.safe_dump(obj)
    try:
        read_policy_sources(["-"], io.StringIO(text))
    except InputError as err:
        assert err.line > 0, err.render()
        assert all(c == "\n" or c.isprintable() for c in err.render())
