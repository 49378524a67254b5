"""Round trips between Kubernetes objects, the IR and the npc language; formatting; mutated files.

The promise under test: a policy means the same after any trip through the other form, ``fmt``
never changes meaning and is idempotent, and a damaged file is always an ``InputError`` on the
line where the damage is (never a traceback, never a silently different policy).
"""

from __future__ import annotations

import io
import random
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from lark import Token
from lark.exceptions import UnexpectedInput
from npc.cli import main
from npc.convert import format_text
from npc.dsl_writer import write_dsl
from npc.errors import InputError
from npc.frontends.dsl import parse
from npc.frontends.dsl_parser import parser
from npc.frontends.k8s import policy_from_object
from npc.ir import Policy, Program
from npc.k8s_writer import network_policy, write_k8s
from strategies import SMALL, WIDE, network_policies, policies, programs

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PROPERTY = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# A hand-written file using every construct, with comments, macros and odd spacing.
RICH = """\
# Shared definitions
frontend = role == 'frontend' && !has(legacy)   # the web tier
webports = { 80, 443, 8000-8080 }
monitoring = team in { 'obs', 'sre' }

policy shop/db for net1, other/net2 {   # header comment
    select role == "db" && env not in {'dev'}
    # redis from the web tier and from monitoring in any namespace
    allow ingress from pods($frontend) or pods(app == 'prom') in namespaces($monitoring) on tcp port 6379
    allow ingress
        from 10.0.0.0/8 except { 10.1.0.0/16, 10.2.0.0/16 }
        or fd00::/8 except fd00:1::/32
        on tcp port { $webports, metrics }, udp, sctp port 9
    allow egress to namespaces(all) on udp port 53, tcp port 53
}

policy shop/deny-all {
    select all
    isolate ingress
    isolate egress
}
"""


def tokens(text: str) -> list[Token]:
    """Tokens as the parser's own contextual lexer splits ``text`` (which must parse)."""
    return [t for t in parser().parse_interactive(text).iter_parse() if t.type != "$END"]


def corpus() -> list[str]:
    files = sorted(EXAMPLES.glob("dsl*/*.npc"))
    return [RICH, *(f.read_text() for f in files)]


# --- round trips ------------------------------------------------------------------------------


@PROPERTY
@given(obj=network_policies())
def test_network_policy_to_dsl_means_the_same(obj: dict[str, object]) -> None:
    policy = policy_from_object(obj)
    assert parse(write_dsl([policy]), "t.npc") == [policy]


@PROPERTY
@given(obj=network_policies())
def test_network_policy_to_dsl_to_network_policy_means_the_same(obj: dict[str, object]) -> None:
    policy = policy_from_object(obj)
    (back,) = parse(write_dsl([policy]), "t.npc")
    assert policy_from_object(network_policy(back)) == policy


@PROPERTY
@given(policy=policies())
def test_ir_to_dsl_means_the_same(policy: Policy) -> None:
    assert parse(write_dsl([policy]), "t.npc") == [policy]


@PROPERTY
@given(program=programs(SMALL))
def test_programs_through_dsl_and_yaml(program: Program) -> None:
    from_dsl = Program(tuple(parse(write_dsl(program.policies), "t.npc")))
    assert from_dsl == program
    objects = list(yaml.safe_load_all(write_k8s(from_dsl.policies)))
    assert Program(tuple(policy_from_object(o) for o in objects)) == program


def test_multinetworkpolicy_round_trips_through_both_forms() -> None:
    (policy,) = parse("policy a/p for n1, b/n2 { select all allow ingress on tcp port 1 }", "t.npc")
    obj = network_policy(policy)
    assert obj["kind"] == "MultiNetworkPolicy"
    assert policy_from_object(obj) == policy
    assert parse(write_dsl([policy]), "t.npc") == [policy]


# --- fmt --------------------------------------------------------------------------------------


@PROPERTY
@given(program=programs(), rnd=st.randoms(use_true_random=False))
def test_fmt_restores_canonical_layout(program: Program, rnd: random.Random) -> None:
    canonical = write_dsl(program.policies)
    assert format_text(canonical, "t.npc") == canonical
    messy = ""
    for token in tokens(canonical):
        assert token.start_pos is not None and token.end_pos is not None
        space = rnd.choice([" ", "  ", "\n", "\n  ", "\t", " \n "]) if messy else ""
        messy += space + canonical[token.start_pos : token.end_pos]
    assert parse(messy, "t.npc") == list(program.policies)
    assert format_text(messy, "t.npc") == canonical


@PROPERTY
@given(program=programs(), rnd=st.randoms(use_true_random=False))
def test_fmt_keeps_comments_and_meaning_and_is_idempotent(program: Program, rnd: random.Random) -> None:
    lines = write_dsl(program.policies).splitlines()
    commented = []
    for i, line in enumerate(lines):
        where = rnd.choice(["none", "above", "after", "blank"])
        if where == "above":
            commented.append(f"# note {i}")
        if where == "blank":
            commented.append("")
        commented.append(f"{line}  # end {i}" if where == "after" and line.strip() else line)
    text = "\n".join(commented) + "\n"
    once = format_text(text, "t.npc")
    assert format_text(once, "t.npc") == once
    assert parse(once, "t.npc") == parse(text, "t.npc")
    assert re.findall(r"# \w+ \d+", once) == re.findall(r"# \w+ \d+", text)


@pytest.mark.parametrize("text", corpus(), ids=lambda t: t.splitlines()[0][:30])
def test_fmt_on_hand_written_files(text: str) -> None:
    once = format_text(text, "t.npc")
    assert format_text(once, "t.npc") == once
    assert parse(once, "t.npc") == parse(text, "t.npc")
    assert [c for c in re.findall(r"#.*", once)] == [c.rstrip() for c in re.findall(r"#.*", text)]


# --- damaged files ----------------------------------------------------------------------------


def _texts() -> st.SearchStrategy[str]:
    generated = (
        programs(WIDE, max_size=3).filter(lambda p: bool(p.policies)).map(lambda p: write_dsl(p.policies))
    )
    return st.one_of(st.sampled_from(corpus()), generated)


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _outside_comments(text: str) -> list[int]:
    offsets = []
    start = 0
    for line in text.splitlines(keepends=True):
        end = line.find("#")
        end = len(line.rstrip("\n")) if end < 0 else end
        offsets.extend(range(start, start + end + 1))
        start += len(line)
    return offsets


@PROPERTY
@given(text=_texts(), data=st.data())
def test_inserted_garbage_is_an_error_on_its_line(text: str, data: st.DataObject) -> None:
    offset = data.draw(st.sampled_from(_outside_comments(text)))
    garbage = data.draw(st.sampled_from(["@", "%", "~", "^", "`", "\\", "?"]))
    damaged = text[:offset] + garbage + text[offset:]
    with pytest.raises(InputError) as caught:
        parse(damaged, "bad.npc")
    assert caught.value.line == _line_of(damaged, offset), caught.value.render()


@PROPERTY
@given(text=_texts(), data=st.data())
def test_a_deleted_token_is_an_error_near_it_or_a_different_policy(text: str, data: st.DataObject) -> None:
    found = tokens(text)
    index = data.draw(st.integers(0, len(found) - 1))
    token = found[index]
    assert token.start_pos is not None and token.end_pos is not None
    damaged = text[: token.start_pos] + " " + text[token.end_pos :]
    try:
        meaning = parse(damaged, "bad.npc")
    except InputError as err:
        # the parser notices at the next token, or the next that closes nothing (the closers
        # between pair up differently); a deleted closer is noticed wherever the pairs run out
        closers = ("RPAR", "RBRACE")
        before = found[index - 1].line if index else 1
        after = next((t.line for t in found[index + 1 :] if t.type not in closers), found[-1].line)
        if token.type in closers:
            after = found[-1].line
        assert before is not None and after is not None
        assert before <= err.line <= after, err.render()
        return
    assert meaning != parse(text, "t.npc"), f"deleting {token.value!r} changed nothing"


@PROPERTY
@given(text=_texts(), data=st.data())
def test_a_truncated_file_is_an_error_at_its_last_line(text: str, data: st.DataObject) -> None:
    cut = data.draw(st.integers(1, len(text.rstrip()) - 1))
    damaged = text[:cut]
    last = (damaged.rstrip().splitlines() or [""])[-1]  # the last line that is not blank
    assume("#" not in last)  # a cut comment, or a comment before blanks, is still a comment
    inside_policy = damaged.count("{") > damaged.count("}") or re.search(r"\bpolicy\s+\S*$", damaged)
    try:
        parse(damaged, "bad.npc")
    except InputError as err:
        assert err.line == _line_of(damaged, len(damaged.rstrip()) - 1), err.render()
        return
    assert not inside_policy, "a policy cut short parsed"


def test_lark_never_escapes() -> None:
    """Whatever the bytes, the frontend raises InputError, never a lark exception."""
    for text in [
        "{",
        "}",
        "policy",
        "policy a/b {",
        "x =",
        "x = {",
        "'",
        '"',
        "$",
        "!",
        "&&",
        "\x00",
        "pods(",
    ]:
        with pytest.raises(InputError):
            try:
                parse(text, "bad.npc")
            except UnexpectedInput:  # pragma: no cover - the failure this test exists for
                pytest.fail(f"lark exception escaped for {text!r}")


# --- the commands -----------------------------------------------------------------------------


def test_damaged_files_exit_1_and_write_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.npc"
    bad.write_text(RICH.replace("allow egress to", "allow egress from"))
    out = tmp_path / "out.yaml"
    assert main(["convert", "--to", "k8s", str(bad), "-o", str(out)]) == 1
    assert not out.exists()
    assert main(["compile", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:14:18: error: unexpected `from`" in err
    before = bad.read_text()
    assert main(["fmt", str(bad)]) == 1
    assert bad.read_text() == before


def test_convert_and_fmt_commands(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["convert", "--to", "dsl", str(EXAMPLES / "policies")]) == 0
    dsl = capsys.readouterr().out
    examples = {p for f in (EXAMPLES / "dsl").glob("*.npc") for p in parse(f.read_text(), str(f))}
    assert set(parse(dsl, "t.npc")) == examples
    converted = tmp_path / "seed.npc"
    converted.write_text(dsl)
    assert main(["fmt", "--check", str(converted)]) == 0
    assert main(["convert", "--to", "k8s", str(converted), "-o", str(tmp_path / "seed.yaml")]) == 0
    assert (
        main(["convert", "--to", "k8s", str(EXAMPLES / "policies"), "-o", str(tmp_path / "orig.yaml")]) == 0
    )
    assert (tmp_path / "seed.yaml").read_text() == (tmp_path / "orig.yaml").read_text()
    capsys.readouterr()
    monkeypatch.chdir(tmp_path)
    assert main(["convert", "--to", "k8s", str(converted), "-o", "-"]) == 0  # stdout, no file "-"
    assert capsys.readouterr().out == (tmp_path / "seed.yaml").read_text()
    assert not (tmp_path / "-").exists()

    messy = tmp_path / "messy.npc"
    messy.write_text("policy default/x {select all\n\n\n   allow ingress on tcp port {80}}")
    assert main(["fmt", "--check", str(tmp_path)]) == 1
    assert "would reformat" in capsys.readouterr().err
    assert messy.read_text().startswith("policy default/x {select")
    assert main(["fmt", str(tmp_path)]) == 0
    assert messy.read_text() == "policy default/x {\n    select all\n\n    allow ingress on tcp port 80\n}\n"
    assert main(["fmt", "--check", str(tmp_path)]) == 0


def test_convert_legacy_annotation_becomes_a_policy(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["convert", "--to", "dsl", str(EXAMPLES / "legacy")]) == 0
    captured = capsys.readouterr()
    assert parse(captured.out, "t.npc") == parse(
        (EXAMPLES / "dsl-legacy" / "namespace-isolation.npc").read_text(), "x"
    )
    assert "1.6 isolation annotation" in captured.err


def test_convert_reads_stdin_like_compile(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """One reader for every command: ``-`` is stdin, an error is ``<stdin>:line:column``, and the
    annotation's policy may not take the name of a policy already read."""
    legacy = "---\n".join(p.read_text() for p in sorted((EXAMPLES / "legacy").glob("*.yaml")))
    monkeypatch.setattr("sys.stdin", io.StringIO(legacy))
    assert main(["convert", "--to", "dsl", "-"]) == 0
    from_stdin = capsys.readouterr().out
    assert main(["convert", "--to", "dsl", str(EXAMPLES / "legacy")]) == 0
    assert capsys.readouterr().out == from_stdin

    taken = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  annotations:\n"
    taken += '    net.beta.kubernetes.io/network-policy: \'{"ingress": {"isolation": "DefaultDeny"}}\'\n'
    taken += "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
    taken += "metadata: {name: npc-namespace-isolation, namespace: shop}\nspec: {podSelector: {}}\n"
    monkeypatch.setattr("sys.stdin", io.StringIO(taken))
    assert main(["convert", "--to", "k8s", "-"]) == 1
    assert capsys.readouterr().err.startswith(
        '<stdin>:10:18: error: namespace "shop" carries the 1.6 isolation annotation, which converts to '
        'policy "shop/npc-namespace-isolation", but a policy of that name exists'
    )

    monkeypatch.setattr("sys.stdin", io.StringIO(taken.replace("podSelector: {}", "podSelector: []")))
    assert main(["convert", "--to", "k8s", "-"]) == 1
    assert capsys.readouterr().err.startswith("<stdin>:11:21: error: spec.podSelector: must be a mapping")
