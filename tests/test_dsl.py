"""The npc language, construct by construct: what each one means in the IR, and each error."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest
import yaml
from npc.convert import format_text
from npc.dsl_writer import write_dsl
from npc.errors import InputError
from npc.frontends.dsl import parse
from npc.frontends.k8s import policy_from_object
from npc.ir import IPBlock, PodPeer, Policy, PortSpec, Requirement, Rule, Selector, namespace_selector
from npc.k8s_writer import network_policy, write_k8s

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
OWN = namespace_selector("default")


def policy(body: str, header: str = "policy default/p") -> Policy:
    (only,) = parse(f"{header} {{\n{body}\n}}\n", "t.npc")
    return only


def rule(statement: str, select: str = "all") -> Rule:
    p = policy(f"select {select}\n{statement}")
    (only,) = p.ingress or p.egress or ()
    return only


def sel(*reqs: Requirement) -> Selector:
    return Selector(reqs)


def error(text: str) -> InputError:
    with pytest.raises(InputError) as caught:
        parse(text, "bad.npc")
    return caught.value


# --- selectors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("all", sel()),
        ("role == 'db'", sel(Requirement("role", "In", ("db",)))),
        ('role == "db"', sel(Requirement("role", "In", ("db",)))),
        ("role != 'db'", sel(Requirement("role", "NotIn", ("db",)))),
        ("env in { 'prod', 'staging' }", sel(Requirement("env", "In", ("prod", "staging")))),
        ("env not in {'dev'}", sel(Requirement("env", "NotIn", ("dev",)))),
        ("has(app)", sel(Requirement("app", "Exists"))),
        ("!has(app)", sel(Requirement("app", "DoesNotExist"))),
        ("tier == ''", sel(Requirement("tier", "In", ("",)))),
        (
            "role == 'db' && env in {'prod','staging'} && !has(legacy)",
            sel(
                Requirement("role", "In", ("db",)),
                Requirement("env", "In", ("prod", "staging")),
                Requirement("legacy", "DoesNotExist"),
            ),
        ),
        ("app.kubernetes.io/name == 'x'", sel(Requirement("app.kubernetes.io/name", "In", ("x",)))),
        # label keys that are also words of the language
        (
            "all == 'x' && in == 'y' && has(has)",
            sel(
                Requirement("all", "In", ("x",)),
                Requirement("in", "In", ("y",)),
                Requirement("has", "Exists"),
            ),
        ),
    ],
)
def test_selectors(text: str, expected: Selector) -> None:
    assert policy(f"select {text}\nisolate ingress").pod_selector == expected


def test_selector_macros_expand_into_the_and() -> None:
    (p,) = parse(
        "db = role == 'db'\nprod = $db && env == 'prod'\n"
        "policy default/p { select $prod && !has(x) isolate ingress }",
        "t.npc",
    )
    assert p.pod_selector == sel(
        Requirement("role", "In", ("db",)),
        Requirement("env", "In", ("prod",)),
        Requirement("x", "DoesNotExist"),
    )


# --- policy shape: policyTypes, empty vs absent -----------------------------------------------


def test_isolate_governs_a_direction_with_no_rules() -> None:
    p = policy("select all\nisolate ingress")
    assert (p.ingress, p.egress) == ((), None)
    p = policy("select all\nisolate egress")
    assert (p.ingress, p.egress) == (None, ())
    p = policy("select all\nisolate ingress\nisolate egress")
    assert (p.ingress, p.egress) == ((), ())


def test_allow_without_peers_or_ports_is_the_empty_rule() -> None:
    p = policy("select all\nallow ingress")
    assert (p.ingress, p.egress) == ((Rule(None, ()),), None)


def test_rules_keep_their_order_and_directions_their_own() -> None:
    p = policy(
        "select all\nallow egress on udp port 53\nallow ingress on tcp port 80\nallow egress on tcp port 53"
    )
    assert p.ingress == (Rule(None, (PortSpec("TCP", 80),)),)
    assert p.egress == (Rule(None, (PortSpec("UDP", 53),)), Rule(None, (PortSpec("TCP", 53),)))


def test_kind_namespace_name_and_source() -> None:
    p = policy("select all\nisolate ingress", header="policy kube-system/dns.v2")
    assert (p.kind, p.namespace, p.name, p.policy_for) == ("NetworkPolicy", "kube-system", "dns.v2", ())
    assert p.source == "t.npc:1:8"


def test_networks_make_a_multinetworkpolicy() -> None:
    p = policy("select all\nisolate ingress", header="policy prod/p for net1, other/net2")
    assert (p.kind, p.policy_for) == ("MultiNetworkPolicy", ("other/net2", "prod/net1"))


# --- peers ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("pods(role == 'web')", PodPeer(OWN, sel(Requirement("role", "In", ("web",))))),
        ("pods(all)", PodPeer(OWN, sel())),
        ("namespaces(team == 'a')", PodPeer(sel(Requirement("team", "In", ("a",))), sel())),
        ("namespaces(all)", PodPeer(sel(), sel())),
        (
            "pods(app == 'x') in namespaces(team == 'a')",
            PodPeer(sel(Requirement("team", "In", ("a",))), sel(Requirement("app", "In", ("x",)))),
        ),
        ("pods(app == 'x') in namespaces(all)", PodPeer(sel(), sel(Requirement("app", "In", ("x",))))),
        ("10.0.0.0/8", IPBlock(ipaddress.ip_network("10.0.0.0/8"))),
        ("fd00::/8 except fd00:1::/32", IPBlock(ipaddress.ip_network("fd00::/8"), ("fd00:1::/32",))),
        (
            "10.0.0.0/8 except { 10.1.0.0/16, 10.2.0.0/16 }",
            IPBlock(ipaddress.ip_network("10.0.0.0/8"), ("10.1.0.0/16", "10.2.0.0/16")),
        ),
    ],
)
def test_peers(text: str, expected: object) -> None:
    assert rule(f"allow ingress from {text}").peers == (expected,)
    assert rule(f"allow egress to {text}").peers == (expected,)


def test_or_joins_peers() -> None:
    r = rule("allow ingress from pods(a == 'x') or namespaces(b == 'y') or 10.0.0.0/8")
    assert r.peers is not None and len(r.peers) == 3


# --- ports ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tcp", [PortSpec("TCP")]),
        ("sctp", [PortSpec("SCTP")]),
        ("tcp port 80", [PortSpec("TCP", 80)]),
        ("udp port 53", [PortSpec("UDP", 53)]),
        ("tcp port 8000-8080", [PortSpec("TCP", 8000, 8080)]),
        ("tcp port 80-80", [PortSpec("TCP", 80)]),
        ("tcp port http", [PortSpec("TCP", "http")]),
        (
            "tcp port { 80, 443, metrics }",
            [PortSpec("TCP", 80), PortSpec("TCP", 443), PortSpec("TCP", "metrics")],
        ),
        ("tcp port 53, udp port 53", [PortSpec("TCP", 53), PortSpec("UDP", 53)]),
        ("udp, tcp port 1", [PortSpec("TCP", 1), PortSpec("UDP")]),
    ],
)
def test_ports(text: str, expected: list[PortSpec]) -> None:
    assert list(rule(f"allow ingress on {text}").ports) == sorted(expected, key=PortSpec.sort_key)


def test_port_macros() -> None:
    (p,) = parse(
        "web = { 80, 443 }\nall_web = { $web, 8080-8090 }\n"
        "policy default/p { select all allow ingress on tcp port $all_web, udp port { $web, 53 } }",
        "t.npc",
    )
    assert p.ingress is not None
    assert set(p.ingress[0].ports) == {
        PortSpec("TCP", 80),
        PortSpec("TCP", 443),
        PortSpec("TCP", 8080, 8090),
        PortSpec("UDP", 80),
        PortSpec("UDP", 443),
        PortSpec("UDP", 53),
    }


def test_comments_and_layout_do_not_matter() -> None:
    spread = parse("# c\npolicy default/p # c\n{ # c\n select # c\n all allow\n ingress # c\n}", "t.npc")
    assert spread == parse("policy default/p { select all allow ingress }", "t.npc")


@pytest.mark.parametrize(
    "char", ["\r", "\x0b", "\x0c", "\x85", "\u2028", "\u2029", "\u202e", "\u2067", "\u200f"]
)
def test_line_breaks_and_bidi_controls_that_would_hide_text_are_refused(char: str) -> None:
    """An editor shows what follows one of these in a comment on a line of its own (or in
    another order): npc would read it as the comment, so a file could hide its policies."""
    before = "  select all # note"
    err = error(f"policy default/p {{\n{before}{char}isolate egress\n  isolate ingress\n}}\n")
    assert (err.line, err.column) == (2, len(before) + 1), err.render()
    assert f"{ord(char):04X}" in err.message or "carriage return" in err.message


def test_crlf_lines_are_read() -> None:
    text = "# c\r\npolicy default/p { # c\r\n select all\r\n isolate ingress\r\n}\r\n"
    assert parse(text, "t.npc") == parse(text.replace("\r", ""), "t.npc")


def test_space_in_the_grammar_is_ascii() -> None:
    """``has(`` took any Unicode space (``\\s``), no other token does."""
    err = error("policy default/p { select has\u00a0(a) isolate ingress }")
    assert (err.line, err.column) == (1, 30) and "character `\\xa0`" in err.message, err.render()


def test_a_run_of_comment_lines_keeps_each_line() -> None:
    """A run of comment lines is one token to the lexer; lines and the formatter see each."""
    assert error("# a\n  # b\n# c\npolicy default/p { select app == 1 }").line == 4
    text = "# a\n  # b\n# c\npolicy default/p {\n    select all\n    # d\n      # e\n    isolate ingress\n}\n"
    assert format_text(text, "t.npc") == text.replace("  # b", "# b").replace("      # e", "    # e")


def test_a_network_policy_and_a_multi_network_policy_may_share_a_name() -> None:
    """As in Kubernetes (two kinds): ``convert --to dsl`` writes both into one file."""
    text = "policy default/a { select all isolate ingress }\npolicy default/a for net1 { select all isolate egress }\n"
    assert [p.kind for p in parse(text, "t.npc")] == ["NetworkPolicy", "MultiNetworkPolicy"]
    err = error(text + "policy default/a for net2 { select all isolate egress }\n")
    assert err.line == 3 and err.message.endswith("already defined at line 2"), err.render()


def test_macros_nested_past_a_million_values_are_refused() -> None:
    """Each macro of a chain ``$p<i> = { $p<i-1>, n }`` stands for all before it: 20,000 of them
    took 28 s and 1.7 GB. Uses count too, as YAML counts what aliases expand to."""
    chain = ["p0 = { 80 }", *(f"p{i} = {{ $p{i - 1}, {1000 + i} }}" for i in range(1, 1500))]
    err = error("\n".join(chain) + "\n")
    assert (err.line, err.column) == (1415, 11) and "more than 1,000,000 values" in err.message, err.render()
    used = "\n".join(chain[:1000]) + "\npolicy default/a { select all allow ingress on tcp port $p999 }"
    assert len(parse(used, "t.npc")) == 1
    values = ", ".join(f"'v{i}'" for i in range(5000))  # a selector's values count as YAML's do
    uses = "".join(f"policy a/p{i} {{ select $s isolate ingress }}\n" for i in range(300))
    err = error(f"s = k in {{ {values} }}\n{uses}")
    assert (err.line, err.column) == (202, 24) and "more than 1,000,000 values" in err.message, err.render()


def test_fmt_refuses_more_comment_lines_than_it_keeps() -> None:
    """``fmt`` keeps an object per comment line (66 million took 4 GB); compile keeps none."""
    text = "#\n" * 1_000_001 + "policy a/b { select all isolate ingress }\n"
    with pytest.raises(InputError, match="more than 1,000,000 comment lines"):
        format_text(text, "t.npc")
    assert len(parse(text, "t.npc")) == 1


def test_empty_file_has_no_policies() -> None:
    assert parse("", "t.npc") == []
    assert parse("# only a comment\n\nweb = { 80 }\n", "t.npc") == []


# --- the examples: each .npc means exactly what its YAML twin means ---------------------------


def _yaml_policies(folder: Path) -> set[Policy]:
    out = set()
    for path in folder.glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc.get("kind") == "NetworkPolicy":
                out.add(policy_from_object(doc))
    return out


def test_examples_match_their_yaml() -> None:
    dsl = {p for f in (EXAMPLES / "dsl").glob("*.npc") for p in parse(f.read_text(), str(f))}
    assert len(dsl) == 3
    assert dsl == _yaml_policies(EXAMPLES / "policies")


def test_legacy_example_is_the_annotation_plus_the_policy() -> None:
    (path,) = (EXAMPLES / "dsl-legacy").glob("*.npc")
    isolation, policy_ = sorted(parse(path.read_text(), str(path)), key=lambda p: p.name)
    assert (isolation.pod_selector, isolation.ingress, isolation.egress) == (Selector(), (), None)
    assert {policy_} == _yaml_policies(EXAMPLES / "legacy")  # the extensions/v1beta1 policy


# --- errors: where, and what was expected in words --------------------------------------------

SYNTAX_ERRORS = [
    # (text, line, column, words the message must contain)
    ("policy default/p { select a == 'b' and c == 'd' }", 1, 36, ["joined with `&&`"]),
    ("policy default/p { select all allow ingress from pods(a == 'b' AND c == 'd') }", 1, 64, ["`&&`"]),
    (
        "policy default/p {\n  select all\n  allow ingress to pods(all)\n}",
        3,
        17,
        ["`from`", "egress rules `to`"],
    ),
    ("policy default/p {\n  select role == 'a' || b == 'c'\n}", 2, 22, ["no OR", "`or`"]),
    ("policy default/p {\n  select role == 'a', b == 'c'\n}", 2, 21, ["`&&`"]),
    ("policy default/p {\n  select role = 'a'\n}", 2, 15, ["`==`"]),
    (
        "policy default/p {\n  select all\n  allow ingress on TCP port 80\n}",
        3,
        20,
        ["a protocol", "lowercase"],
    ),
    (
        "policy default/p {\n  select all\n  allow ingress from pod(a == 'b')\n}",
        3,
        22,
        ["`pods`", "address block"],
    ),
    ("policy default/p {\n  select all\n  allow ingress\n", 3, 9, ["end of file", "`}`"]),
    ("policy default/p {\n  allow ingress\n}", 2, 3, ["`select`"]),
    ("policy default/p {\n  select all\n  allow ingress @\n}", 3, 17, ["character `@`"]),
    ("policy default/p {\n  select 'x' == 'y'\n}", 2, 10, ["a label key", "`has(`"]),
]


@pytest.mark.parametrize(("text", "line", "column", "words"), SYNTAX_ERRORS)
def test_syntax_errors(text: str, line: int, column: int, words: list[str]) -> None:
    err = error(text)
    assert (err.file, err.line, err.column) == ("bad.npc", line, column), err.render()
    for word in words:
        assert word in err.message, err.message
    assert "__ANON" not in err.message and "LABEL_KEY" not in err.message
    source_line = text.splitlines()[line - 1]
    assert err.snippet.splitlines() == [f"  {line} | {source_line}", "    | " + " " * (column - 1) + "^"]


def after(prefix: str, *value_words: tuple[str, str]) -> list[tuple[str, int, int, str]]:
    """One-line policies that differ only in what follows ``prefix``, the error's position."""
    return [(f"{prefix}{value} }}", 1, len(prefix) + 1, words) for value, words in value_words]


MEANING_ERRORS = [
    ("policy default/p { select $nope isolate ingress }", 1, 27, "undefined macro $nope"),
    (
        "web = { 80 }\npolicy default/p { select all allow ingress on tcp port $wbe }",
        2,
        57,
        "did you mean $web?",
    ),
    (
        "policy default/p { select $late isolate ingress }\nlate = a == 'b'",
        1,
        27,
        "before its definition at line 2",
    ),
    ("web = { 80 }\npolicy default/p { select $web isolate ingress }", 2, 27, "is a port set"),
    ("db = a == 'b'\npolicy default/p { select all allow ingress on tcp port $db }", 2, 57, "is a selector"),
    ("a = has(x)\na = has(y)", 2, 1, "macro $a is already defined at line 1"),
    (
        "policy default/p { select all isolate ingress }\npolicy default/p { select all isolate egress }",
        2,
        8,
        "already defined at line 1",
    ),
    ("policy default/p { select all }", 1, 8, "governs neither ingress nor egress"),
    (
        "policy default/p { select all\nisolate ingress\nallow ingress }",
        2,
        1,
        "implied by the `allow ingress`",
    ),
    ("policy default/p { select all\nisolate egress\nisolate egress }", 3, 1, "already said at line 2"),
    *after(
        "policy default/p { select ",
        ("role allow ingress", "alone is not a requirement"),
        ("-role == 'x' isolate ingress", "invalid label key"),
        ("a/b/c == 'x' isolate ingress", "invalid label key"),
    ),
    ("policy default/p { select role == 'x_' isolate ingress }", 1, 35, "invalid label value"),
    ("policy default/p { select role in { 'a', 'b c' } isolate ingress }", 1, 42, "invalid label value"),
    *after(
        "policy default/p { select all allow ingress on tcp port ",
        ("0", "out of range"),
        ("65536", "out of range"),
        ("90-80", "ends below its start"),
        ("80-70000", "out of range"),
        ("080", "leading zeros"),
        ("web--x", "consecutive hyphens"),
        ("verylongportname", "too long: 16 characters, at most 15"),
    ),
    *after(
        "policy default/p { select all allow ingress from ",
        ("10.0.0.1/8", "did you mean 10.0.0.0/8?"),
        ("10.0.0.1", "needs a prefix length, like 10.0.0.1/32"),
        ("fd00::1", "needs a prefix length, like fd00::1/128"),
        (".", 'invalid address block ".": not an IP address'),
        ("999.1.1.1", "not an IP address"),
        ("10.0.0.0/33", "prefix length 33: IPv4's are 0 to 32"),
        ("1.2.3.4.5/8", "invalid address block"),
        ("::ffff:10.0.0.0/104", "IPv4-mapped IPv6 block is read as IPv4 by some dataplanes"),
    ),
    *after(
        "policy default/p { select all allow ingress from 10.0.0.0/8 except ",
        ("11.0.0.0/16", "strict subset"),
        ("10.0.0.0/8", "strict subset"),
        ("fd00::/16", "IP family"),
    ),
    ("policy p { select all isolate ingress }", 1, 8, "namespace/name"),
    ("policy Default/p { select all isolate ingress }", 1, 8, "invalid namespace"),
    ("policy default/P_1 { select all isolate ingress }", 1, 16, "invalid policy name"),
    ("policy default/p for net_1 { select all isolate ingress }", 1, 22, "invalid network name"),
]


@pytest.mark.parametrize(("text", "line", "column", "words"), MEANING_ERRORS)
def test_meaning_errors(text: str, line: int, column: int, words: str) -> None:
    err = error(text)
    assert (err.line, err.column) == (line, column), err.render()
    assert words in err.message, err.message
    assert err.snippet.endswith("^")


def test_error_snippet_is_safe_for_terminals() -> None:
    err = error("policy default/p { select all allow ingress from \x1b[31m }")
    assert "\x1b" not in err.render()


def test_every_whole_example_in_the_reference_parses() -> None:
    doc = (EXAMPLES.parent / "docs" / "dsl.md").read_text()
    blocks = re.findall(r"^ *```(\w*)\n(.*?)^ *```$", doc, flags=re.S | re.M)
    whole = [
        text for info, text in blocks if not info and re.match(r"(#.*\n)*(policy [a-z0-9]|\w+ = )", text)
    ]
    assert len(whole) >= 5
    for block in whole:
        parse(block, "docs/dsl.md")


# --- writers ----------------------------------------------------------------------------------


def test_writers_turn_own_namespace_peers_back_into_pod_selectors() -> None:
    p = Policy(
        "prod",
        "p",
        ingress=(Rule((PodPeer(namespace_selector("prod"), sel(Requirement("app", "In", ("a",)))),)),),
    )
    assert "allow ingress from pods(app == 'a')\n" in write_dsl([p])
    (rule_,) = network_policy(p)["spec"]["ingress"]
    assert rule_ == {"from": [{"podSelector": {"matchLabels": {"app": "a"}}}]}
    other = Policy("dev", "p", ingress=p.ingress)  # the same peer seen from another namespace
    assert "pods(app == 'a') in namespaces(kubernetes.io/metadata.name == 'prod')" in write_dsl([other])


def test_writers_spell_every_selector_operator() -> None:
    s = sel(
        Requirement("a", "In", ("x",)),
        Requirement("a", "In", ("y",)),
        Requirement("b", "NotIn", ("x", "y")),
        Requirement("c", "Exists"),
        Requirement("d", "DoesNotExist"),
    )
    p = Policy("default", "p", pod_selector=s, ingress=())
    assert "select a == 'x' && a == 'y' && b not in { 'x', 'y' } && has(c) && !has(d)" in write_dsl([p])
    spec = network_policy(p)["spec"]
    assert spec["podSelector"] == {
        "matchLabels": {"a": "x"},
        "matchExpressions": [
            {"key": "a", "operator": "In", "values": ["y"]},
            {"key": "b", "operator": "NotIn", "values": ["x", "y"]},
            {"key": "c", "operator": "Exists"},
            {"key": "d", "operator": "DoesNotExist"},
        ],
    }
    assert spec["policyTypes"] == ["Ingress"] and "ingress" not in spec


@pytest.mark.parametrize(
    ("policy_", "words"),
    [
        (Policy("default", "p", kind="NamespaceIsolation", ingress=()), "NamespaceIsolation"),
        (Policy("default", "p"), "neither ingress nor egress"),
        (Policy("default", "p", ingress=(Rule(()),)), "no peer"),
        (Policy("default", "p", ingress=(), policy_for=("default/n",)), "network"),
    ],
)
def test_writers_refuse_what_their_form_cannot_say(policy_: Policy, words: str) -> None:
    for write in (write_dsl, write_k8s):
        with pytest.raises(InputError, match=words):
            write([policy_])
