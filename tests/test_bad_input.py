"""Bad input: every error names file, line:column, field path and the rule broken.

In each case text, ``»`` marks where the error must point; it is removed before parsing.
"""

from __future__ import annotations

import errno
import io
import json
import os
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from npc.errors import InputError
from npc.sources import read_policy_sources

MARK = "»"

HEAD = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: p
  namespace: ns
"""


def marked(text: str) -> tuple[str, int, int]:
    """Text without the marker, and the marker's 1-based line and column."""
    index = text.index(MARK)
    before = text[:index]
    line = before.count("\n") + 1
    column = index - (before.rfind("\n") + 1) + 1
    return text.replace(MARK, "", 1), line, column


def error_in(tmp_path: Path, text: str, name: str = "p.yaml") -> InputError:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(InputError) as info:
        read_policy_sources([str(path)])
    return info.value


def check(tmp_path: Path, text: str, field: str, rule: str, name: str = "p.yaml") -> InputError:
    clean, line, column = marked(text)
    err = error_in(tmp_path, clean, name)
    assert (err.file, err.line, err.column) == (str(tmp_path / name), line, column), err.render()
    assert err.path == field, err.render()
    assert rule in err.message, err.render()
    if clean.split("\n")[line - 1]:
        assert err.snippet.splitlines()[0].startswith(f"  {line} | "), err.snippet
    assert err.exit_code == 1
    return err


def spec(body: str) -> str:
    return HEAD + "spec:\n" + textwrap.indent(textwrap.dedent(body), "  ") + "\n"


def at_mark(template: str, field: str, *value_rules: tuple[str, str]) -> list[tuple[str, str, str]]:
    """Cases that differ only in the value put right after the marker: each fails at ``field``."""
    return [(template.replace(MARK, MARK + value), field, rule) for value, rule in value_rules]


SPEC_CASES = [
    # strict decoding: unknown fields, at the key
    ("»podSelectr: {}", "spec.podSelectr", "unknown field"),
    ("ingress:\n- »form: []", "spec.ingress[0].form", "unknown field"),
    (
        "ingress:\n- ports:\n  - port: 80\n    »endport: 90",
        "spec.ingress[0].ports[0].endport",
        "unknown field",
    ),
    ("podSelector:\n  »matchLabel: {a: b}", "spec.podSelector.matchLabel", "unknown field"),
    (
        "egress:\n- to:\n  - ipBlock: {cidr: 10.0.0.0/8, »exception: []}",
        "spec.egress[0].to[0].ipBlock.exception",
        "unknown",
    ),
    # wrong types
    ("ingress: »{}", "spec.ingress", "must be a list, not a mapping"),
    ("podSelector: »[]", "spec.podSelector", "must be a mapping, not a list"),
    *at_mark(
        "podSelector:\n  matchLabels:\n    app: »",
        "spec.podSelector.matchLabels[app]",
        ("1", "must be a string, not an integer"),
        ("true", "must be a string, not a boolean"),
    ),
    ("policyTypes: »Ingress", "spec.policyTypes", "must be a list"),
    (
        'ingress:\n- ports:\n  - port: 80\n    endPort: »"90"',
        "spec.ingress[0].ports[0].endPort",
        "must be an integer",
    ),
    # ports
    *at_mark(
        "ingress:\n- ports:\n  - port: »",
        "spec.ingress[0].ports[0].port",
        ("[80]", "must be a port number or name"),
        ("80.5", "must be a port number or name"),
        ("true", "not a boolean"),
        ("0", "between 1 and 65535"),
        ("HTTP", "lowercase letters"),
        ('"8080"', "at least one letter"),
        ("web--http", "consecutive hyphens"),
        ("-web", "begin or end with a hyphen"),
        ("web-", "begin or end with a hyphen"),
        ("abcdefghijklmnop", "too long: 16 characters, at most 15"),
        ('""', "lowercase letters"),
        ("web_http", "lowercase letters"),
    ),
    (
        "ingress:\n- ports:\n  - port: 80\n  - port: »65536",
        "spec.ingress[0].ports[1].port",
        "between 1 and 65535",
    ),
    ("egress:\n- ports:\n  - port: »-1", "spec.egress[0].ports[0].port", "between 1 and 65535"),
    (
        "ingress:\n- ports:\n  - endPort: »90",
        "spec.ingress[0].ports[0].endPort",
        "when port is not specified",
    ),
    (
        "ingress:\n- ports:\n  - port: http\n    endPort: »90",
        "spec.ingress[0].ports[0].endPort",
        "port is a name",
    ),
    (
        "ingress:\n- ports:\n  - port: 80\n  - port: 90\n    endPort: »80",
        "spec.ingress[0].ports[1].endPort",
        "greater than or equal",
    ),
    ("ingress:\n- ports:\n  - port: 80\n    endPort: »65536", "spec.ingress[0].ports[0].endPort", "65535"),
    ("ingress:\n- ports:\n  - protocol: »tcp", "spec.ingress[0].ports[0].protocol", "TCP, UDP or SCTP"),
    (
        "ingress:\n- ports:\n  - protocol: »ICMP\n    port: 1",
        "spec.ingress[0].ports[0].protocol",
        "unsupported protocol",
    ),
    # ipBlock
    *at_mark(
        "ingress:\n- from:\n  - ipBlock: {cidr: »}",
        "spec.ingress[0].from[0].ipBlock.cidr",
        ("10.0.0.1", "invalid CIDR"),
        (
            "10.0.0.0/33",
            "prefix length 33: IPv4's are 0 to 32",
        ),  # "does not appear to be an IPv4 or IPv6 network"
        ("300.0.0.0/8", "not an IPv4 or IPv6 address before the /"),
        ('"fd00::/129"', "prefix length 129: IPv6's are 0 to 128"),
        (
            '"' + "a" * 100_000 + '/8"',
            'a...": not an IPv4 or IPv6 address',
        ),  # ipaddress's reason: 100k a's again
        ("10.0.0.0/255.0.0.0", "CIDR"),
        ('""', "invalid CIDR"),
        ('"::ffff:10.0.0.0/104"', "write 10.0.0.0/8"),
        ('"::ffff:a00:1/128"', "write 10.0.0.1/32"),
    ),
    (
        "ingress:\n- from:\n  - »ipBlock: {except: [10.0.0.0/8]}",
        "spec.ingress[0].from[0].ipBlock.cidr",
        "required",
    ),
    (
        "ingress:\n- from:\n  - ipBlock:\n      cidr: 10.0.0.0/16\n      except: [10.0.1.0/24, »10.1.0.0/24]",
        "spec.ingress[0].from[0].ipBlock.except[1]",
        "strict subset",
    ),
    *at_mark(
        "egress:\n- to:\n  - ipBlock:\n      cidr: 10.0.0.0/16\n      except:\n      - »",
        "spec.egress[0].to[0].ipBlock.except[0]",
        ("10.0.0.0/16", "strict subset"),
        ("10.0.0.0/8", "strict subset"),
        ('"fd00::/64"', "IP family"),
        ('"::ffff:0:0/96"', "IPv4-mapped"),
    ),
    # peers
    ("ingress:\n- from:\n  - »{}", "spec.ingress[0].from[0]", "must specify a peer"),
    (
        "ingress:\n- from:\n  - »ipBlock: {cidr: 10.0.0.0/8}\n    podSelector: {}",
        "spec.ingress[0].from[0]",
        "both ipBlock and another peer",
    ),
    # selectors
    (
        "podSelector:\n  matchExpressions:\n  - {key: a, operator: »Equals, values: [b]}",
        "spec.podSelector.matchExpressions[0].operator",
        "unsupported operator",
    ),
    (
        "podSelector:\n  matchExpressions:\n  - »{key: a, operator: In}",
        "spec.podSelector.matchExpressions[0].values",
        "non-empty when operator is In",
    ),
    (
        "podSelector:\n  matchExpressions:\n  - {key: a, operator: NotIn, values: »[]}",
        "spec.podSelector.matchExpressions[0].values",
        "non-empty",
    ),
    (
        "podSelector:\n  matchExpressions:\n  - {key: a, operator: Exists, values: »[b]}",
        "spec.podSelector.matchExpressions[0].values",
        "must be empty when operator is Exists",
    ),
    (
        "podSelector:\n  matchExpressions:\n  - {key: a, operator: DoesNotExist, values: »[b]}",
        "spec.podSelector.matchExpressions[0].values",
        "must be empty",
    ),
    (
        "podSelector:\n  matchExpressions:\n  - »{operator: Exists}",
        "spec.podSelector.matchExpressions[0].key",
        "required",
    ),
    (
        "podSelector:\n  matchExpressions:\n  - »{key: a}",
        "spec.podSelector.matchExpressions[0].operator",
        "required",
    ),
    (
        "podSelector:\n  matchExpressions:\n  - {key: »a/b/c, operator: Exists}",
        "spec.podSelector.matchExpressions[0].key",
        "at most one '/'",
    ),
    (
        'podSelector:\n  matchExpressions:\n  - {key: a, operator: In, values: [ok, »"not ok"]}',
        "spec.podSelector.matchExpressions[0].values[1]",
        "invalid label value",
    ),
    ("podSelector:\n  matchLabels:\n    »-a: b", "spec.podSelector.matchLabels[-a]", "invalid label key"),
    (
        "podSelector:\n  matchLabels:\n    »Example.com/a: b",
        "spec.podSelector.matchLabels[Example.com/a]",
        "prefix",
    ),
    ("podSelector:\n  matchLabels:\n    »/a: b", "spec.podSelector.matchLabels[/a]", "prefix"),
    (
        "podSelector:\n  matchLabels:\n    »example.com/: b",
        "spec.podSelector.matchLabels[example.com/]",
        "name part",
    ),
    (
        f"podSelector:\n  matchLabels:\n    »{'k' * 64}: b",
        f"spec.podSelector.matchLabels[{'k' * 64}]",
        "at most 63",
    ),
    *at_mark(
        "podSelector:\n  matchLabels:\n    a: »",
        "spec.podSelector.matchLabels[a]",
        ("v" * 64, "invalid label value"),
        ("-b", "invalid label value"),
    ),
    (
        "ingress:\n- from:\n  - namespaceSelector:\n      matchLabels: {team: »a.}",
        "spec.ingress[0].from[0].namespaceSelector.matchLabels[team]",
        "invalid label value",
    ),
    # scalars as go-yaml v2 reads them: a number or boolean there, not the name or label it spells
    ("ingress:\n- ports:\n  - port: »1e-3", "spec.ingress[0].ports[0].port", "not a decimal number"),
    ("ingress:\n- ports:\n  - port: »80.5", "spec.ingress[0].ports[0].port", "not a decimal number"),
    (
        "ingress:\n- ports:\n  - port: 80\n    endPort: »90.5",
        "spec.ingress[0].ports[0].endPort",
        "not a decimal number",
    ),
    ("podSelector:\n  matchLabels: {a: »y}", "spec.podSelector.matchLabels[a]", "not a boolean"),
    ("podSelector:\n  matchLabels: {a: »N}", "spec.podSelector.matchLabels[a]", "not a boolean"),
    # policyTypes
    ("policyTypes: [Ingress, »ingress]", "spec.policyTypes[1]", "must be Ingress or Egress"),
    ("policyTypes: [Ingress, »Ingress]", "spec.policyTypes[1]", "duplicate policy type"),
    ("policyTypes: [Ingress, Egress, »Ingress]", "spec.policyTypes[2]", "duplicate policy type"),
    ('policyTypes: [»""]', "spec.policyTypes[0]", "must be Ingress or Egress"),
]


@pytest.mark.parametrize(("body", "field", "rule"), SPEC_CASES, ids=[c[1] + ":" + c[2] for c in SPEC_CASES])
def test_spec_errors(tmp_path: Path, body: str, field: str, rule: str) -> None:
    check(tmp_path, spec(body), field, rule)


def test_endport_below_port_message(tmp_path: Path) -> None:
    err = check(
        tmp_path,
        spec("ingress:\n- ports:\n  - port: 80\n    endPort: »79"),
        "spec.ingress[0].ports[0].endPort",
        "greater than or equal to port (80)",
    )
    assert err.render().startswith(
        f"{tmp_path}/p.yaml:10:16: error: spec.ingress[0].ports[0].endPort: must be"
    )


DOCUMENT_CASES = [
    (
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: p\n»specs: {}\n",
        "specs",
        "unknown",
    ),
    (HEAD.replace("  name: p\n", "  »nam: p\n"), "metadata.nam", "unknown field"),
    *at_mark(
        HEAD.replace("  name: p\n", "  name: »\n"),
        "metadata.name",
        ("Web", "RFC 1123 subdomain"),
        ("a" * 254, "at most 253"),
        ("a_b", "invalid name"),
    ),
    (
        HEAD.replace("metadata:\n  name: p\n", "»metadata:\n  generateName: p-\n"),
        "metadata.name",
        "generateName",
    ),
    *at_mark(
        HEAD.replace("  namespace: ns\n", "  namespace: »\n"),
        "metadata.namespace",
        ("a.b", "RFC 1123 label"),
        ("n" * 64, "at most 63"),
    ),
    ("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n»metadata: {}\n", "metadata.name", "required"),
    (HEAD + '  labels: {»"a b": c}\n', "metadata.labels[a b]", "invalid label key"),
    (HEAD + "  labels:\n    a: »[b]\n", "metadata.labels[a]", "must be a string"),
    (HEAD + '  annotations:\n    »"bad key": x\n', "metadata.annotations[bad key]", "invalid annotation key"),
    (HEAD + "  generation: »one\n", "metadata.generation", "must be an integer"),
    (HEAD + "  finalizers: [»1]\n", "metadata.finalizers[0]", "must be a string"),
    (HEAD + "  managedFields: [»x]\n", "metadata.managedFields[0]", "must be a mapping"),
    *at_mark(
        HEAD.replace("networking.k8s.io/v1", "»"),
        "apiVersion",
        ("networking.k8s.io/v1beta1", "unsupported apiVersion"),
        ("networking.k8s.io/v2", "unsupported apiVersion"),
    ),
    (
        HEAD.replace(
            "networking.k8s.io/v1\nkind: NetworkPolicy", "»networking.k8s.io/v1\nkind: MultiNetworkPolicy"
        ),
        "apiVersion",
        "expected k8s.cni.cncf.io/v1beta1",
    ),
    ("»" + HEAD.replace("apiVersion: networking.k8s.io/v1\n", "") + "spec: {}\n", "apiVersion", "required"),
    ("»apiVersion: networking.k8s.io/v1\nmetadata: {name: p}\n", "kind", "required"),
    (HEAD + "status: »[]\n", "status", "must be a mapping"),
    (HEAD + 'spec: »""\n', "spec", "must be a mapping, not a string"),
    (
        HEAD.replace(
            "networking.k8s.io/v1\nkind: NetworkPolicy", "k8s.cni.cncf.io/v1beta1\nkind: MultiNetworkPolicy"
        )
        + '  annotations:\n    k8s.v1.cni.cncf.io/policy-for: »"net1, a/b/c"\n',
        "metadata.annotations[k8s.v1.cni.cncf.io/policy-for]",
        'invalid network "a/b/c"',
    ),
    (
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: x\n  annotations:\n"
        "    net.beta.kubernetes.io/network-policy: »'{\"ingress\": '\n",
        "metadata.annotations[net.beta.kubernetes.io/network-policy]",
        "not valid JSON",
    ),
    (
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: x\n  annotations:\n"
        '    net.beta.kubernetes.io/network-policy: »\'{"ingress": ' + "9" * 5000 + "}'\n",
        "metadata.annotations[net.beta.kubernetes.io/network-policy]",
        "a number of thousands of digits",  # was Python's own advice (sys.set_int_max_str_digits)
    ),
    (
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: x\n  labels: »[a]\n",
        "metadata.labels",
        "must be a mapping",
    ),
    ("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: »a.b\n", "metadata.name", "RFC 1123 label"),
    # what a failed command prints, read as "no policies" with a note; a List's items elsewhere
    ("»You must be logged in to the server (Unauthorized)\n", "", "must be a Kubernetes object"),
    ("- »3\n", "", "must be a Kubernetes object (kind, apiVersion, ...), not an integer"),
    ("apiVersion: v1\nkind: List\nitems: »null\n", "items", "required: a List holds its objects there"),
    ("apiVersion: v1\nkind: List\nitems: »{a: 1}\n", "items", "must be a list, not a mapping"),
    ("apiVersion: v1\nkind: »5\n", "kind", "must be a string, not an integer"),
]


@pytest.mark.parametrize(
    ("text", "field", "rule"), DOCUMENT_CASES, ids=[c[1] + ":" + c[2] for c in DOCUMENT_CASES]
)
def test_document_errors(tmp_path: Path, text: str, field: str, rule: str) -> None:
    check(tmp_path, text, field, rule)


def test_a_failed_commands_words_on_stdin_are_an_error_not_no_policies() -> None:
    """``error: You must be logged in`` is a mapping without kind: in a file, other YAML of a
    GitOps folder (a note); on stdin, what a failed ``kubectl get`` printed, which applied would
    remove every policy."""
    with pytest.raises(InputError) as info:
        read_policy_sources(
            ["-"], stdin=io.StringIO("error: You must be logged in to the server (Unauthorized)\n")
        )
    assert info.value.path == "kind" and "required (on stdin" in info.value.message


def test_error_in_second_document_and_list_item(tmp_path: Path) -> None:
    other = HEAD.replace("name: p", "name: q")
    text = spec("ingress: []") + "---\n" + other + "spec:\n  ingress:\n  - ports: [{port: »0}]\n"
    check(tmp_path, text, "spec.ingress[0].ports[0].port", "between 1 and 65535")
    listed = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "a"}},
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": {"name": "b"},
                "spec": 7,
            },
        ],
    }
    text = json.dumps(listed, indent=1).replace('"spec": 7', '"spec": »7')
    check(tmp_path, text, "spec", "must be a mapping", name="l.json")


def test_json_positions(tmp_path: Path) -> None:
    text = (
        '{"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",\n'
        '\t"metadata": {"name": "p", "annotations": {"x": "\\ud83d\\ude00"}},\n'
        '\t"spec": {"ingress": [{"ports": [{"port": 80}, {"port": 80, »"endport": 81}]}]}}\n'
    )
    check(tmp_path, text, "spec.ingress[0].ports[1].endport", "unknown field", name="p.json")


def test_yaml_flow_document_that_looks_like_json(tmp_path: Path) -> None:
    text = "{apiVersion: networking.k8s.io/v1, kind: NetworkPolicy, metadata: {name: p},\n spec: {»bad: 1}}\n"
    check(tmp_path, text, "spec.bad", "unknown field")


SYNTAX_CASES = [
    ("p.json", '{"kind": "x",\n\t"a": "\\ud83d\\ude00", »"kind": "y"}', 'duplicate key "kind"'),
    ("p.yaml", HEAD + "spec:\n  podSelector: {\n»", "invalid YAML"),
    ("p.yaml", HEAD + "spec: [a, b\n»", "invalid YAML"),
    ("p.yaml", HEAD + "  »name: q\n", 'duplicate key "name"'),
    # one key spelled two ways: distinct texts are not always distinct keys
    ("p.yaml", HEAD + "spec:\n  1: a\n  »0x1: b\n", 'duplicate key "1"'),
    ("p.yaml", HEAD + "spec:\n  ~: a\n  »null: b\n", 'duplicate key "None"'),
    ("p.yaml", HEAD + "spec:\n  'a': x\n  »a: y\n", 'duplicate key "a"'),
    ("p.yaml", "a: b\n»\tc: d\n", "invalid YAML"),
    ("p.json", '{"kind": "NetworkPolicy",\n "metadata": {"name": "a",»}}\n', "invalid JSON"),
    (
        "p.json",
        '{"kind": "NetworkPolicy",\n "metadata": {"name": "a", »"name": "b"}}\n',
        'duplicate key "name"',
    ),
    ("p.json", "»", "invalid JSON"),
]


@pytest.mark.parametrize(("name", "text", "rule"), SYNTAX_CASES)
def test_syntax_errors(tmp_path: Path, name: str, text: str, rule: str) -> None:
    check(tmp_path, text, "", rule, name=name)


def test_duplicates_across_files_name_both_places(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(spec("ingress: []"))
    second = HEAD.replace("networking.k8s.io/v1", "extensions/v1beta1").replace("name: p", "name: »p")
    clean, line, column = marked("kind: ConfigMap\n---\n" + second)
    (tmp_path / "b.yaml").write_text(clean)
    with pytest.raises(InputError) as info:
        read_policy_sources([str(tmp_path)])
    err = info.value
    assert (err.file, err.line, err.column, err.path) == (
        str(tmp_path / "b.yaml"),
        line,
        column,
        "metadata.name",
    )
    assert f'duplicate NetworkPolicy "ns/p": already defined at {tmp_path}/a.yaml:4:9' in err.message


def test_a_file_given_twice_is_read_once(tmp_path: Path) -> None:
    """As itself, through a folder holding it, or through a link: once, with a note (read twice,
    each policy was a duplicate "already defined" at its own place)."""
    (tmp_path / "p").mkdir()
    policy = tmp_path / "p" / "a.yaml"
    policy.write_text(
        json.dumps({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                    "metadata": {"name": "p", "namespace": "ns"}, "spec": {"podSelector": {}}})
    )  # fmt: skip
    (tmp_path / "link.yaml").symlink_to(policy)
    loaded = read_policy_sources([str(tmp_path / "p"), str(policy), str(tmp_path / "link.yaml"), str(policy)])
    assert [p.name for p in loaded.policies] == ["p"]
    assert [f for f, _ in loaded.files] == [str(policy)]
    assert loaded.notes.count(f"skipped {policy}: read once already") == 2
    assert f"skipped {tmp_path / 'link.yaml'}: read once already" in loaded.notes


def test_unreadable_and_missing_paths(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read"):
        read_policy_sources([str(tmp_path / "missing.yaml")])
    (tmp_path / "bin.yaml").write_bytes("# é\nkind: é\xff\n".encode("latin-1").replace(b"\xe9", "é".encode()))
    with pytest.raises(InputError, match="not valid UTF-8") as caught:
        read_policy_sources([str(tmp_path / "bin.yaml")])
    assert (caught.value.line, caught.value.column) == (2, 8)  # characters, not bytes: é is two
    (tmp_path / "bom.yaml").write_bytes(b"\xef\xbb\xbfkind: \xff\n")
    with pytest.raises(InputError, match="not valid UTF-8") as caught:
        read_policy_sources([str(tmp_path / "bom.yaml")])
    assert (caught.value.line, caught.value.column) == (1, 7)  # the byte-order mark is not a column


def test_a_folder_that_cannot_be_listed_is_an_error_not_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Skipped, a folder's policies would be missing from the artefacts with exit 0 (and ``apply``
    would remove them from the kernel). Root may list every folder, so the refusal that a user
    without the right gets comes from a patched ``os.scandir`` here."""
    team = tmp_path / "team"
    team.mkdir()
    (team / "p.yaml").write_text(spec("podSelector: {}"))
    (tmp_path / "a.yaml").write_text(spec("podSelector: {}").replace("name: p", "name: a"))
    listing = os.scandir

    def refusing(path: str) -> Iterator[os.DirEntry[str]]:
        if os.fspath(path) == str(team):
            raise PermissionError(errno.EACCES, "Permission denied", str(team))
        return listing(path)

    monkeypatch.setattr(os, "scandir", refusing)
    with pytest.raises(InputError) as info:
        read_policy_sources([str(tmp_path)])
    assert (info.value.file, info.value.message) == (str(team), "cannot read: Permission denied")
    assert info.value.exit_code == 1


def test_a_raw_control_character_is_placed_by_line_and_column(tmp_path: Path) -> None:
    """libyaml's reader refuses it by its offset in the bytes it was handed (after a multi-byte
    character here); the error gives line and column like every other, and no raw NUL."""
    clean, line, column = marked(HEAD.replace("  name: p\n", "  labels: {team: é}\n  name: p»\x00\n"))
    err = error_in(tmp_path, clean)
    assert (err.line, err.column) == (line, column), err.render()
    assert err.message == "invalid YAML: unacceptable character #x0000: control characters are not allowed"
    assert "\x00" not in err.render()


def test_control_characters_never_reach_messages(tmp_path: Path) -> None:
    text = spec('podSelector:\n  "\\e[31mevil\\u202e\\r\\n": {}')
    err = error_in(tmp_path, text)
    rendered = err.render()
    assert "\x1b" not in rendered and "\u202e" not in rendered and "\r" not in rendered
    assert "\\x1b[31mevil\\u202e\\x0d\\x0a" in rendered
    err = error_in(tmp_path, spec('ingress:\n- ports:\n  - port: "a\\x07\\x1b]0;pwn\\x07"'))
    assert "\x07" not in err.render() and "\x1b" not in err.render()


UNSAFE = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=12)


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=UNSAFE, where=st.sampled_from(["name", "label", "port", "cidr", "key", "protocol"]))
def test_no_raw_control_characters_in_any_error(tmp_path: Path, value: str, where: str) -> None:
    obj: dict[str, object] = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": value if where == "name" else "p",
            "labels": {"a": value} if where == "label" else {},
        },
        "spec": {
            "ingress": [
                {
                    "ports": [
                        {"port": value}
                        if where == "port"
                        else {"protocol": value}
                        if where == "protocol"
                        else {}
                    ],
                    "from": [{"ipBlock": {"cidr": value}}] if where == "cidr" else [],
                }
            ],
            **({value: 1} if where == "key" else {}),
        },
    }
    path = tmp_path / "fuzz.json"
    path.write_text(json.dumps(obj))
    try:
        read_policy_sources([str(path)])
    except InputError as err:
        rendered = err.render()
        assert all(c == "\n" or c.isprintable() for c in rendered), repr(rendered)
        assert err.line > 0


def test_json_nested_too_deeply_is_placed_at_its_deepest_bracket(tmp_path: Path) -> None:
    """``json`` gives up by recursion, with no offset: the error points at the deepest opening
    bracket, brackets inside strings not counted."""
    deep = 100_000
    clean, line, column = marked('{"a": "[[{{",\n "b": ' + "[" * (deep - 1) + "»[" + "]" * deep + "}")
    err = error_in(tmp_path, clean, name="p.json")
    assert (err.message, err.line, err.column) == ("invalid input: nested too deeply", line, column)
