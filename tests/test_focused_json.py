"""An inventory read for a few objects (``npc explain``) builds what reading it whole builds.

``load_focused`` parses with simdjson and builds only the objects ``keep`` keeps. Wherever it
answers, the inventory built from its documents, or the error, equals the one built from
``json``'s documents; what simdjson reads otherwise than ``json`` it leaves to ``json`` (None).
Objects are written by hand as key/value pairs, so that keys can repeat (``json``: the last wins).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from npc.analysis.focus import Focus
from npc.cli import main
from npc.documents import load_documents, objects_in
from npc.errors import InputError
from npc.focused_json import MAX_DEPTH, load_focused
from npc.inventory import Inventory, build_inventory
from npc.text import UTF8_BOM

KEEP = Focus.of("a/p", "b/q").keep


class Obj(list[tuple[str, Any]]):
    """A JSON object as its key/value pairs, in order, repeats allowed."""


def dumps(value: Any) -> str:
    if isinstance(value, Obj):
        return "{" + ",".join(f"{json.dumps(k)}:{dumps(v)}" for k, v in value) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dumps(v) for v in value) + "]"
    return json.dumps(value)


def pod(namespace: str, name: str, ip: str, *extra: tuple[str, Any]) -> Obj:
    meta = Obj([("namespace", namespace), ("name", name), ("labels", Obj([("app", name)]))])
    status = Obj([("podIP", ip)])
    return Obj([("apiVersion", "v1"), ("kind", "Pod"), ("metadata", meta), ("status", status), *extra])


def namespace(name: str) -> Obj:
    return Obj([("kind", "Namespace"), ("metadata", Obj([("name", name), ("labels", Obj([("env", name)]))]))])


def listed(*items: Any, kind: str = "List") -> Obj:
    return Obj([("apiVersion", "v1"), ("kind", kind), ("metadata", Obj()), ("items", list(items))])


def built(documents: list[Any], text: str) -> Inventory | str:
    try:
        return build_inventory(documents, file="inv.json", text=text, keep=KEEP)
    except InputError as err:
        return err.render()


def kept(documents: list[Any]) -> dict[tuple[int, tuple[str | int, ...]], Any]:
    """The objects ``keep`` keeps, by place: what the focused read must build exactly."""
    return {
        (i, base): obj
        for i, d in enumerate(documents)
        for base, obj in objects_in(d, KEEP)
        if not isinstance(obj, dict) or KEEP(obj)
    }


def focused_and_whole(text: str) -> tuple[Inventory | str | None, Inventory | str]:
    """The inventory (or error) from the focused read (None: it leaves the text to json) and from json."""
    found = load_focused(text.encode().removeprefix(UTF8_BOM), KEEP)  # one mark dropped, as read
    text = text.removeprefix("\ufeff")
    try:
        documents = load_documents("inv.json", text)
    except InputError as err:
        return (None if found is None else "simdjson read what json refuses"), err.render()
    if found is not None:
        assert kept(found) == kept(documents)
    return (None if found is None else built(found, text)), built(documents, text)


def assert_same(text: str) -> Inventory | str:
    focused, whole = focused_and_whole(text)
    assert focused == whole
    return whole


def _nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


CLUSTER = [namespace("a"), namespace("b"), namespace("c"), pod("a", "p", "10.0.0.1"), pod("c", "x", "10.0.0.3"),
           pod("b", "q", "10.0.0.2")]  # fmt: skip


def test_a_kubectl_list_builds_only_the_pair_and_its_namespaces() -> None:
    found = assert_same(dumps(listed(*CLUSTER)))
    assert isinstance(found, Inventory)
    assert [(p.namespace, p.name) for p in found.pods] == [("a", "p"), ("b", "q")]
    assert [n.name for n in found.namespaces] == ["a", "b"]
    documents = load_focused(dumps(listed(*CLUSTER)).encode(), KEEP)
    assert documents is not None and len(documents[0]["items"]) == len(CLUSTER)  # items keep their places
    assert documents[0]["items"][4] == {"kind": "Pod", "metadata": {"namespace": "c", "name": "x"}}


# fmt: off
READ_ALIKE = [
    # a repeated key: json keeps the last, wherever it is
    dumps(listed(Obj([*pod("c", "x", "10.0.0.3"), ("metadata", Obj([("namespace", "a"), ("name", "p")]))]))),
    dumps(listed(Obj([("kind", "Pod"), ("metadata", Obj([("namespace", "a"), ("name", "x"), ("name", "p")])),
                      ("status", Obj([("podIP", "10.0.0.1")]))]))),
    dumps(listed(Obj([*pod("a", "x", "10.0.0.3"), ("kind", "List"), ("items", [pod("a", "p", "10.0.0.1")])]))),
    dumps(listed(Obj([*namespace("c"), ("metadata", Obj([("name", "a"), ("labels", Obj([("k", "v")]))]))]))),
    dumps(Obj([*listed(pod("a", "p", "10.0.0.1")), ("items", [pod("b", "q", "10.0.0.2")])])),
    # typed lists lend their kind; Lists in Lists and plain arrays are opened
    dumps(listed(Obj([("metadata", Obj([("namespace", "a"), ("name", "p")])), ("status", Obj([("podIP", "10.0.0.1")]))]),
                 Obj([("metadata", Obj([("namespace", "c"), ("name", "x")])), ("status", Obj([("podIP", "10.0.0.3")]))]),
                 kind="PodList")),
    dumps([namespace("a"), [listed(*CLUSTER)], pod("b", "q", "10.0.0.2")]),
    # malformed objects, kept to be reported as compile reports them
    dumps(listed(*CLUSTER, pod("b", "q", "10.0.0.9", ("spec", Obj([("containers", [Obj([("ports", [Obj([("containerPort", 70000)])])])])]))))),
    dumps(listed(*CLUSTER, Obj([("kind", "Pod"), ("metadata", "p")]))),
    dumps(listed(*CLUSTER, Obj([("kind", "Pod"), ("metadata", Obj([("name", 7)]))]))),
    dumps(listed(*CLUSTER, Obj([("kind", "Namespace"), ("metadata", Obj([("name", "a"), ("namespace", [1])]))]))),
    dumps(listed(*CLUSTER, Obj([("kind", "PodList"), ("items", 3)]))),
    dumps(listed(*CLUSTER, Obj([("kind", 5), ("metadata", Obj([("name", "x")]))]))),
    # other kinds, scalars, an empty and a null document, one byte-order mark
    dumps(listed(*CLUSTER, 7, None, Obj([("kind", "Service"), ("metadata", Obj([("name", "x")]))]))),
    "null", "  [] ", "5", "\ufeff" + dumps(listed(*CLUSTER)),
    dumps(listed(*CLUSTER)).replace('{"app":"p"}', '{"app":"p","e":"\\ud83d\\ude00 \u00e9 \\n\\u0041"}')
    .replace('"podIP":"10.0.0.2"', '"podIP":"10.0.0.2","n":[1.5,-0.0,-0,1E2,1e-400,18446744073709551615,-9223372036854775808]'),
]
# fmt: on


@pytest.mark.parametrize("text", READ_ALIKE)
def test_the_focused_read_builds_what_json_builds(text: str) -> None:
    focused, whole = focused_and_whole(text)
    assert focused is not None, "simdjson reads this as json does"
    assert focused == whole


@pytest.mark.parametrize(
    "text",
    [
        dumps(
            listed(*CLUSTER, Obj([("kind", "Pod"), ("metadata", Obj([("name", "x")])), ("n", float("nan"))]))
        ),
        dumps(listed(*CLUSTER)).replace('"10.0.0.3"', "1e400"),
        dumps(listed(*CLUSTER)).replace('"10.0.0.3"', "123456789012345678901234567890"),
        dumps(listed(*CLUSTER)).replace('"10.0.0.3"', '"\\ud800"'),
        "\ufeff\ufeff" + dumps(listed(*CLUSTER)),
        dumps(listed(*CLUSTER, pod("a", "p", "10.0.0.1", ("deep", _nested(MAX_DEPTH))))),
        dumps(listed(*CLUSTER))[:-3] + ",]}",
        dumps(listed(*CLUSTER)) + "x",
        "",
    ],
)
def test_what_simdjson_reads_otherwise_is_left_to_json(text: str) -> None:
    focused, whole = focused_and_whole(text)
    assert focused is None
    assert whole  # json's answer (or error) stands


def test_a_list_whose_items_are_no_list_is_named_by_its_path() -> None:
    found = assert_same(dumps(listed(*CLUSTER, Obj([("kind", "PodList"), ("items", 3)]))))
    assert isinstance(found, str) and "error: items[6].items: must be a list" in found


# --- random inventories with repeated keys -------------------------------------------------------

NAMES = st.sampled_from(["a", "b", "c", "p", "q", "x"])


@st.composite
def objects(draw: st.DrawFn) -> Obj:
    meta = Obj([("name", draw(NAMES))])
    if draw(st.booleans()):
        meta.append(("namespace", draw(st.one_of(NAMES, st.none()))))
    kind = draw(st.sampled_from(["Pod", "Namespace", "Service", None]))
    obj = Obj([("metadata", meta), ("status", Obj([("podIP", f"10.0.0.{draw(st.integers(1, 9))}")]))])
    if kind is not None:
        obj.insert(draw(st.integers(0, 1)), ("kind", kind))
    for _ in range(draw(st.integers(0, 2))):  # a key written again, with another value
        target, key = draw(
            st.sampled_from([(obj, "kind"), (obj, "metadata"), (meta, "name"), (meta, "namespace")])
        )
        value = draw(NAMES) if key != "metadata" else Obj([("name", draw(NAMES)), ("namespace", draw(NAMES))])
        target.insert(draw(st.integers(0, len(target))), (key, value))
    return obj


@settings(max_examples=300, deadline=None)
@given(st.lists(objects(), max_size=8), st.sampled_from(["List", "PodList", "NamespaceList"]))
def test_random_inventories_build_alike(items: list[Obj], kind: str) -> None:
    assert_same(dumps(listed(*items, kind=kind)))


# --- the command ---------------------------------------------------------------------------------------


def test_explain_reports_a_syntax_error_far_from_the_pair_as_compile_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The pair is first and last in the file, the error in the middle: simdjson refuses the text,
    and json's message (line:column) is the one compile prints."""
    items = [namespace("a"), pod("a", "p", "10.0.0.1")]
    items += [pod("c", f"x{i}", f"10.0.1.{i}") for i in range(200)]
    items += [namespace("b"), pod("b", "q", "10.0.0.2")]
    text = json.dumps(json.loads(dumps(listed(*items))), indent=1)
    at = text.index('"x120"')
    text = text[:at] + text[at:].replace(",", ",,", 1)  # a stray comma, 120 pods away from either
    inventory = tmp_path / "inventory.json"
    inventory.write_text(text)
    (tmp_path / "p.yaml").write_text("")
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"{inventory}:{exc.lineno}:{exc.colno}: error: invalid JSON: {exc.msg}"
    code = main(["explain", str(tmp_path / "p.yaml"), "--inventory", str(inventory), "--from", "a/p", "--to", "b/q",
                 "--port", "tcp/80"])  # fmt: skip
    explained = capsys.readouterr()
    assert (code, explained.out) == (1, "") and explained.err.startswith(where), explained.err
    code = main(
        ["compile", str(tmp_path / "p.yaml"), "--inventory", str(inventory), "-o", str(tmp_path / "out")]
    )
    assert (code, capsys.readouterr().err) == (1, explained.err)


@pytest.mark.parametrize("bom", ["", "\ufeff"])
def test_explain_reports_a_malformed_pod_of_the_pair_with_its_place(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bom: str
) -> None:
    """The text is decoded only for the error's position (after a byte-order mark, as compile reads it)."""
    bad = pod(
        "b",
        "q",
        "10.0.0.2",
        ("spec", Obj([("containers", [Obj([("ports", [Obj([("containerPort", 70000)])])])])])),
    )
    inventory = tmp_path / "inventory.json"
    text = json.dumps(json.loads(dumps(listed(*CLUSTER[:5], bad))), indent=1)
    inventory.write_text(bom + text)
    at = text.index("70000")
    line, column = text.count("\n", 0, at) + 1, at - text.rfind("\n", 0, at)
    (tmp_path / "p.yaml").write_text("")
    code = main(["explain", str(tmp_path / "p.yaml"), "--inventory", str(inventory), "--from", "a/p", "--to", "b/q",
                 "--port", "tcp/80"])  # fmt: skip
    explained = capsys.readouterr()
    assert (code, explained.out) == (1, "")
    assert (
        f"{inventory}:{line}:{column}: error: items[5].spec.containers[0].ports[0].containerPort:"
        in explained.err
    )
    code = main(
        ["compile", str(tmp_path / "p.yaml"), "--inventory", str(inventory), "-o", str(tmp_path / "out")]
    )
    assert (code, capsys.readouterr().err) == (1, explained.err)
