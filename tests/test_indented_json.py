"""``indented_json.dumps`` is ``json.dumps(value, indent=2, sort_keys=True)``, byte for byte."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from npc import indented_json

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=40,
)


def standard(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True)


@given(values)
def test_any_value_is_written_as_the_standard_library_writes_it(value: Any) -> None:
    assert indented_json.dumps(value) == standard(value)


def test_a_value_of_many_pieces_is_joined_in_order_across_chunks() -> None:
    """Far more pieces than one chunk holds (a manifest's thousands of sets), nested at every depth."""
    value = {
        "sets": {
            f"s{i:05d}": {"kind": "pods", "peers": [{"key": "app", "values": [f"v{i}", i]}]}
            for i in range(3000)
        },
        "chains": [[{"ports": [[i, i + 1]], "peer": None}] for i in range(3000)],
    }
    assert indented_json.dumps(value) == standard(value)


def test_only_json_is_accepted() -> None:
    with pytest.raises(TypeError):
        indented_json.dumps({1: "a"})
