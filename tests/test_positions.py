"""Field paths to line:column: the fast JSON walker and the YAML composer agree everywhere."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from npc.documents import compose_document
from npc.frontends.positions import MapKey, locate, printable, render_path, show, snippet
from strategies import paths
from yaml_text import dump

Path = tuple[Any, ...]


def yaml_locate(text: str, parts: Path, at_key: bool) -> tuple[int, int]:
    """``locate`` forced through the YAML composer (a leading newline hides the JSON look)."""
    line, column = locate("\n" + text, 0, parts, at_key=at_key)
    return line - 1, column


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(
    doc=st.dictionaries(st.text(max_size=5), json_values, max_size=4), indent=st.sampled_from([None, 1, "\t"])
)
def test_json_walker_agrees_with_yaml_composer(doc: dict[str, Any], indent: int | str | None) -> None:
    text = json.dumps(doc, indent=indent)
    if compose_document("\n" + text, 0) is None:  # e.g. a key libyaml cannot read back
        return
    for parts in paths(doc):
        for extra in ((), ("missing",)):
            for at_key in (False, True):
                where = (*parts, *extra)
                assert locate(text, 0, where, at_key=at_key) == yaml_locate(text, where, at_key), where


def test_locate_yaml_points_at_values_keys_and_parents() -> None:
    text = "a: 1\n---\nkind: X\nspec:\n  list:\n  - {x: 1, y: [2, 3]}\n"
    assert locate(text, 1, ("spec", "list", 0, "y", 1)) == (6, 19)
    assert locate(text, 1, ("spec", "list", 0, "y"), at_key=True) == (6, 12)
    assert locate(text, 1, ("spec", "nothing", "deeper")) == (4, 1)  # the parent's key
    assert locate(text, 0, ("a",)) == (1, 4)
    assert locate(text, 5, ("a",)) == (0, 0)


def test_locate_json_with_escapes_and_tabs() -> None:
    text = '{\n\t"k\\u00e9y": {"\\ud83d\\ude00": [1, {"z": true}]}}'
    assert locate(text, 0, ("k\u00e9y", "\U0001f600", 1, "z")) == (2, 41)
    assert locate(text, 0, ("k\u00e9y", "\U0001f600", 1, "z"), at_key=True) == (2, 36)


def test_paths_render_like_kubernetes() -> None:
    assert render_path(("spec", "ingress", 0, "ports", 1, "endPort")) == "spec.ingress[0].ports[1].endPort"
    assert render_path(("metadata", "labels", MapKey("app.kubernetes.io/name"))) == (
        "metadata.labels[app.kubernetes.io/name]"
    )
    assert render_path(("spec", "a\x1bb")) == "spec.a\\x1bb"


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("web", '"web"'),
        ('a"b\\', '"a\\"b\\\\"'),
        ("\x1b[2J\u202e\n", '"\\x1b[2J\\u202e\\x0a"'),
        ("x" * 100, '"' + "x" * 64 + '..."'),
        (None, "null"),
        (True, "true"),
        (3, "3"),
    ],
)
def test_show_escapes_and_shortens(value: object, shown: str) -> None:
    assert show(value) == shown


def test_printable_keeps_ordinary_unicode() -> None:
    assert printable("naïve-日本") == "naïve-日本"


def test_snippet_is_safe_and_windowed() -> None:
    assert snippet("a: 1\nb: \x1b[31m\r\n", 2, 4) == "  2 | b: ?[31m\n    |    ^"
    long_line = "x" * 500 + "!" + "y" * 500
    lines = snippet(long_line, 1, 501).splitlines()
    assert len(lines[0]) < 120
    assert lines[0][lines[1].index("^")] == "!"
    assert snippet("a", 3, 1) == ""


def test_compose_document_skips_empty_documents() -> None:
    node = compose_document("---\n---\na: 1\n", 0)
    assert isinstance(node, yaml.MappingNode)


# --- the loader's fast paths (``documents.Loader.construct_object``, ``resolve``) ---------------

_TRICKY = st.sampled_from(
    ["yes", "no", "on", "off", "~", "null", "", "1:20", "0x1F", "0o17", "017", "1_000", "1e3", ".inf",
     "-.inf", ".nan", "2024-01-02", "2024-13-45", "2001-12-14t21:59:43.10-05:00", "<<", "=", "true",
     "False", "8080", "-1", "+1", "0b101", "1.5", "app", "a b", "#x", "- x"]
)  # fmt: skip
_SCALARS = st.one_of(
    _TRICKY, st.text(max_size=6), st.integers(), st.booleans(), st.none(), st.floats(allow_nan=False)
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(_TRICKY | st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(_VALUES, st.sampled_from([None, '"', "'", "|"]), st.booleans())
@settings(max_examples=300)
def test_the_loader_reads_as_its_base_class(value: Any, style: str | None, flow: bool) -> None:
    """Strings by their text and tags remembered by text give what PyYAML's own methods give."""
    from npc import documents

    class Reference(documents.Loader):  # type: ignore[misc, valid-type]
        construct_object = documents._BaseLoader.construct_object
        resolve = documents._BaseLoader.resolve

    text = dump({"v": value, "w": [value, value]}, default_style=style, default_flow_style=flow)
    texts = [text, text.replace("'", "")]  # unquoted too, where that is still YAML
    for one in texts:
        try:
            expected = yaml.load(one, Loader=Reference)
        except yaml.YAMLError:
            continue
        found = yaml.load(one, Loader=documents.Loader)
        assert repr(found) == repr(expected)  # types too: True is not 1, 1.0 is not 1


@pytest.mark.parametrize("separator", ["\r", "\x85", "\u2028", "\u2029"])
def test_lines_are_counted_as_the_excerpt_counts_them(separator: str) -> None:
    """YAML breaks lines at these too, editors and the excerpt do not: the line YAML counted
    pointed past the file's end (U+2028) or at the line after the culprit (a lone CR)."""
    from npc.documents import load_documents
    from npc.errors import InputError

    assert locate(f"# a{separator}# b\na: 1\n", 0, ("a",)) == (2, 4)
    bad = f"# a{separator}# b\na: 1\nb: ]\n"
    with pytest.raises(InputError) as caught:
        load_documents("t.yaml", bad)
    assert (caught.value.line, caught.value.column) == (3, 4)
    assert snippet(bad, 3, 4).splitlines()[0].endswith("b: ]")
