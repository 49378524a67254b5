"""Property tests: any valid NetworkPolicy parses; spelling and order never change its IR."""

from __future__ import annotations

import copy
import io
import json
import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from npc.documents import load_documents
from npc.errors import InputError
from npc.frontends.k8s import policy_from_object
from npc.sources import read_policy_sources
from strategies import Obj, network_policies, paths
from yaml_text import dump

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
    as_yaml = load_documents("p.yaml", dump(obj, default_flow_style=False), strict=True)
    flow_yaml = load_documents("p.yaml", dump(obj, default_flow_style=True), strict=True)
    expected = policy_from_object(obj)
    assert [policy_from_object(d) for d in (*as_json, *as_yaml, *flow_yaml)] == [expected] * 3


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
    path = data.draw(st.sampled_from(paths(obj)[1:]))
    target = obj
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = data.draw(junk)
    text = json.dumps(obj, indent=1) if as_json else dump(obj)
    try:
        read_policy_sources(["-"], io.StringIO(text))
    except InputError as err:
        assert err.line > 0, err.render()
        assert all(c == "\n" or c.isprintable() for c in err.render())
