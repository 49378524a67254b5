"""``npc explain`` reads only what one pair can depend on, and answers exactly as a full read does.

On generated clusters (both generators) the focused answer, text and JSON, equals the one from
every input read as compile reads it, for many pairs and ports; the policy-file test is checked
to keep every file that holds one of the namespaces, however the YAML writes it (hypothesis).
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from npc.analysis.commands import explain_model, explanation
from npc.analysis.focus import Focus
from npc.analysis.load import Model
from npc.cli import build_parser
from npc.errors import NpcError
from npc.sources import read_policy_sources
from npc.text import Text
from random_clusters import generated_cluster
from yaml_text import dump

PORTS = ("tcp/80", "udp/53", "tcp/http", "tcp/metrics", "tcp/8080")


def _quiet(notes: Sequence[str], level: str) -> None:
    pass


def _answer(argv: list[str], model: Model | None = None) -> str:
    """What explain prints; from ``model`` if given, else reading as explain does (focused)."""
    args = build_parser("explain").parse_args(argv)
    try:
        return explanation(args, model or explain_model(args, _quiet))
    except NpcError as exc:  # an unknown or unpoliced pod: the same error either way
        return f"error: {exc.render()}"


@pytest.mark.parametrize("generator", ["generate", "generate_mixed"])
def test_focused_explain_answers_as_a_full_read(tmp_path: Path, generator: str) -> None:
    cluster = generated_cluster(tmp_path, seed=4, pod_seed=4, generator=generator)
    policies, inventory = str(cluster / "policies"), str(cluster / "inventory.json")
    items = json.loads(Path(inventory).read_text())["items"]
    pods = [f"{i['metadata']['namespace']}/{i['metadata']['name']}" for i in items if i["kind"] == "Pod"]
    rng = random.Random(generator)
    pairs = [tuple(rng.sample(pods, 2)) for _ in range(60)]
    pairs += [(a, b) for a in pods[:3] for b in pods[-3:]]  # kube-system to the last namespace
    same = [p for p in pods if p.split("/")[0] == pods[-1].split("/")[0]]
    pairs += [(same[0], same[1]), (pods[-1], pods[-1])]
    base = ["explain", policies, "--inventory", inventory]
    whole = explain_model(build_parser("explain").parse_args([*base, "--from", pods[0], "--to", pods[1],
                          "--port", "tcp/80"]), _quiet, whole=True)  # fmt: skip
    allowed = answered = read = 0
    total = len(read_policy_sources([policies]).files)
    for src, dst in pairs:
        focused = None
        for port in PORTS:
            for form in ("json", "text"):
                argv = [*base, "--from", src, "--to", dst, "--port", port, "--format", form]
                focused = focused or explain_model(build_parser("explain").parse_args(argv), _quiet)
                fast = _answer(argv, focused)
                assert fast == _answer(argv, whole), argv
                allowed += fast.startswith("ALLOWED")
                answered += fast.startswith(("ALLOWED", "DENIED"))
        files = len(read_policy_sources([policies], keep=Focus.of(src, dst).may_hold).files)
        assert files <= 2 < total  # a file per namespace: the pair's two at most
        read += files
    assert 0 < allowed < answered and read  # both answers occur, so the comparison can fail


# --- which policy files may hold a namespace's objects -------------------------------------------


def _may_hold(text: str, name: str = "p.yaml", *pods: str) -> bool:
    return Focus.of(*(pods or ("prod/a",))).may_hold(Text(name, text, ""))


@pytest.mark.parametrize(
    "text",
    [
        "metadata:\n  namespace: prod\n",
        'metadata:\n  namespace: "prod"\n',
        "metadata: {name: x, namespace: 'prod'}\n",
        '{"metadata": {"namespace":"prod"}}',
        "metadata:\n  namespace:\n    prod\n",
        "metadata:\n  namespace: |-\n    prod\n",
        "labels: {a: &n prod}\nmetadata:\n  namespace: *n\n",
        "metadata:\n  ? namespace\n  : prod\n",
        'metadata:\n  namespace: "pr\\x6fd"\n',  # an escape: prod without its letters
        "kind: Namespace\nmetadata:\n  name: prod\n",
        "items:\n- metadata:\n    namespace: prod\n",
    ],
)
def test_a_file_holding_the_namespace_is_read(text: str) -> None:
    meta = next(d for d in [yaml.safe_load(text)] if d)
    meta = meta["items"][0]["metadata"] if "items" in meta else meta["metadata"]
    assert "prod" in (meta.get("namespace"), meta.get("name"))  # the case says what it claims
    assert _may_hold(text)


@pytest.mark.parametrize(
    "text",
    [
        "metadata:\n  namespace: qa\nspec:\n  ingress:\n  - from:\n    - namespaceSelector:\n"
        "        matchLabels:\n          kubernetes.io/metadata.name: prod\n",
        "metadata:\n  namespace: qa\nvalues:\n- prod\n- 'prod'\n",
        '{"metadata": {"namespace": "qa"}, "values": ["staging", "prod"], "x": {"prod": 1}}',
        "metadata:\n  namespace: production\n  name: prod-db\n",
    ],
)
def test_a_file_naming_the_namespace_elsewhere_is_skipped(text: str) -> None:
    assert not _may_hold(text)


def test_default_namespace_and_the_npc_language() -> None:
    assert _may_hold("metadata:\n  name: x\n", "p.yaml", "default/a")  # no namespace: default
    assert not _may_hold("metadata:\n  name: x\n", "p.yaml", "prod/a")
    assert _may_hold("policy prod/x {\n  select a == 'b'\n}\n", "p.npc")
    assert not _may_hold("policy qa/x {\n  select a == 'b'\n  allow ingress from namespaces(\n"
                         "    kubernetes.io/metadata.name == 'prod')\n}\n", "p.npc")  # fmt: skip
    assert not _may_hold("policy qa/x {\n  select a == 'b'\n}\n", "p.npc", "default/a")


# A policy document with ``prod`` in random places (label values, list items, keys, anchors), written
# in random YAML and JSON styles: whenever it is prod's, the file must be read.
_words = st.sampled_from(["prod", "qa", "prod-1", "x"])
_values: st.SearchStrategy[Any] = st.recursive(
    _words,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_words, inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(
    namespace=_words,
    extra=st.dictionaries(_words, _values, max_size=3),
    style=st.sampled_from([None, '"', "'"]),
    flow=st.booleans(),
    as_json=st.booleans(),
    alias=st.booleans(),
)
def test_every_file_holding_the_namespace_is_read(
    namespace: str, extra: dict[str, Any], style: str | None, flow: bool, as_json: bool, alias: bool
) -> None:
    meta = {"name": "p", "namespace": namespace}
    doc = {"metadata": meta, "spec": {"podSelector": {"matchLabels": extra}, "x": extra}}
    if alias:
        doc["shared"] = meta  # written once with an anchor, referenced by alias
    if as_json:
        text = json.dumps(doc, indent=None if flow else 2)
    else:
        text = dump(doc, default_style=style, default_flow_style=flow, width=20)
    assert yaml.safe_load(text)["metadata"]["namespace"] == namespace
    if namespace == "prod":
        assert _may_hold(text)
