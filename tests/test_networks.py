"""Networks: annotation parsers (with the junk real clusters carry), IP sources, policy selection,
the networks file, and the CLI flags that use them."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kernel.command import npc
from npc.errors import InputError
from npc.inventory import build_inventory, pod_address
from npc.ir import Policy, Program, Rule, Selector
from npc.network_file import read_networks_file
from npc.networks import (
    GENIE_ANNOTATION,
    MULTUS_STATUS_ANNOTATIONS,
    AddressSource,
    AnnotationError,
    IPSourceSpec,
    NetworkSpec,
    genie_entries,
    multus_entries,
    network_spec,
    parse_ip_source,
    select_policies,
)

NEW_KEY, OLD_KEY = MULTUS_STATUS_ANNOTATIONS
ip = ipaddress.ip_address

# --- exact shapes from the reference (CNI-Genie and Multus as they write them) ------------------

GENIE_OK = '{"multi_entry": 2, "ips": {"ip1": {"ip": "10.244.0.201", "interface": "eth0"}, "ip2": {"ip": "10.32.0.4", "interface": "eth1"}}}'
GENIE_JUNK_EMPTY = '{"multi_entry": 3, "ips": {"": {}, "ip1": {"ip": "10.244.0.201", "interface": "eth0"}, "ip2": {"ip": "10.32.0.4", "interface": "eth1"}}}'
GENIE_JUNK_BLANK = '{"multi_entry": 1, "ips": {"ip1": {"ip": "10.244.0.201", "interface": "eth0"}, "": {"ip": "", "interface": ""}, "ip2": {"ip": "10.32.0.4", "interface": "eth1"}}}'
MULTUS_OK = json.dumps(
    [
        {"name": "k8s-pod-network", "interface": "eth0", "ips": ["10.244.1.5"], "default": True, "dns": {}},
        {"name": "default/macvlan-net1", "interface": "net1", "ips": ["10.1.1.11"], "mac": "2e:51:00:00:00:01", "dns": {}},
    ]
)  # fmt: skip
MULTUS_NO_INTERFACE = json.dumps(
    [
        {"name": "cbr0", "ips": ["10.244.1.5"], "default": True, "dns": {}},
        {"name": "default/macvlan-net1", "interface": "net1", "ips": ["10.1.1.11", "fd00:1::11"], "dns": {}},
    ]
)


def pod(
    annotations: dict[str, Any] | None = None, name: str = "a", namespace: str = "default"
) -> dict[str, Any]:
    return {
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations or {}},
        "status": {"phase": "Running", "podIP": "10.244.0.201", "podIPs": [{"ip": "10.244.0.201"}]},
    }


def addresses(
    source: str, annotations: dict[str, Any], namespace: str = "default"
) -> tuple[list[str], list[str]]:
    src = AddressSource(parse_ip_source(source), "net2")
    found = src(pod(annotations, namespace=namespace), f"{namespace}/a")
    return [str(a) for a in found], src.warnings


@pytest.mark.parametrize("value", [GENIE_OK, GENIE_JUNK_EMPTY, GENIE_JUNK_BLANK])
def test_genie_entries_skip_empty_keys_and_ips_and_ignore_multi_entry(value: str) -> None:
    entries = genie_entries(value)
    assert [(e.key, e.interface, str(e.address)) for e in entries] == [
        ("ip1", "eth0", "10.244.0.201"),
        ("ip2", "eth1", "10.32.0.4"),
    ]


def test_genie_entry_without_interface_or_with_prefix_length() -> None:
    entries = genie_entries('{"ips": {"ip2": {"ip": "10.32.0.4/12"}, "ip3": {"ip": ""}, "ip4": {}}}')
    assert [(e.key, e.interface, str(e.address)) for e in entries] == [("ip2", "", "10.32.0.4")]


@pytest.mark.parametrize("network", ["10.32.0.0/12", "fd01::/64"])
def test_an_address_that_is_its_subnet_is_refused(network: str) -> None:
    """``10.32.0.4/12`` is a host in its subnet; ``10.32.0.0/12`` is the subnet (it was read as the
    address 10.32.0.0)."""
    with pytest.raises(AnnotationError, match=r"is the network .* itself, not a host address in it"):
        genie_entries(f'{{"ips": {{"ip2": {{"ip": "{network}"}}}}}}')


@pytest.mark.parametrize("value", ["null", "{}", '{"multi_entry": 0}', '{"ips": null}', '{"ips": {}}'])
def test_genie_annotation_without_entries_is_no_address(value: str) -> None:
    assert genie_entries(value) == []


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("{not json", "not valid JSON"),
        ('["10.32.0.4"]', "must be a JSON object"),
        ('{"ips": ["10.32.0.4"]}', "ips must be a JSON object"),
        ('{"ips": {"ip2": "10.32.0.4"}}', 'ips["ip2"] must be a JSON object'),
        ('{"ips": {"ip2": {"ip": 10}}}', "an address must be a string"),
        ('{"ips": {"ip2": {"ip": "10.32.0.400"}}}', '"10.32.0.400" is not an IP address'),
    ],
)
def test_malformed_genie_annotation_says_what_is_wrong(value: str, problem: str) -> None:
    with pytest.raises(AnnotationError, match=problem.replace("[", r"\[").replace("(", r"\(")):
        genie_entries(value)


def test_multus_entries_reference_shape_and_default_without_interface() -> None:
    assert multus_entries(MULTUS_OK)[1].name == "default/macvlan-net1"
    entries = multus_entries(MULTUS_NO_INTERFACE)
    assert entries[0].default and entries[0].interface == ""
    assert entries[1].addresses == (ip("10.1.1.11"), ip("fd00:1::11"))


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("[{", "not valid JSON"),
        ('{"name": "default/net1"}', "must be a JSON list"),
        ('["default/net1"]', r"\[0\] must be a JSON object"),
        ('[{"ips": ["10.1.1.11"]}]', "name must be a non-empty string"),
        ('[{"name": "default/net1", "ips": "10.1.1.11"}]', "ips must be a JSON list"),
        ('[{"name": "default/net1", "ips": ["nope"]}]', '"nope" is not an IP address'),
    ],
)
def test_malformed_multus_annotation_says_what_is_wrong(value: str, problem: str) -> None:
    with pytest.raises(AnnotationError, match=problem):
        multus_entries(value)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8) | st.sampled_from(["", "10.1.1.1", "fd00::1"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(["", "ip", "ips", "interface", "name", "ip2", "default"]), inner, max_size=4),
    max_leaves=20,
)  # fmt: skip


@given(json_values)
def test_parsers_never_fail_except_with_annotation_error(value: object) -> None:
    """Whatever JSON a pod carries, reading it is an address list or an AnnotationError, never a crash."""
    for parse in (genie_entries, multus_entries):
        with contextlib.suppress(AnnotationError):
            parse(json.dumps(value))


# --- IP sources ---------------------------------------------------------------------------------


def test_genie_key_and_interface_sources() -> None:
    ann = {"cni": "calico,weave", GENIE_ANNOTATION: GENIE_JUNK_EMPTY}
    assert addresses("genie:ip2", ann) == (["10.32.0.4"], [])
    assert addresses("genie-interface:eth1", ann) == (["10.32.0.4"], [])
    assert addresses("genie:ip3", ann) == ([], [])  # not on that network: no endpoint, no warning


def test_multus_source_reads_its_entry_from_either_key() -> None:
    assert addresses("multus:default/macvlan-net1", {NEW_KEY: MULTUS_OK, OLD_KEY: MULTUS_OK}) == (
        ["10.1.1.11"],
        [],
    )
    assert addresses("multus:default/macvlan-net1", {OLD_KEY: MULTUS_NO_INTERFACE}) == (
        ["10.1.1.11", "fd00:1::11"],
        [],
    )
    assert addresses("multus:other/macvlan-net1", {NEW_KEY: MULTUS_OK}) == ([], [])


def test_multus_bare_name_is_the_pods_namespace_and_the_default_entry_never_matches() -> None:
    status = json.dumps([{"name": "net1", "interface": "net1", "ips": ["10.1.1.12"]}])
    assert addresses("multus:prod/net1", {NEW_KEY: status}, namespace="prod") == (["10.1.1.12"], [])
    assert addresses("multus:default/net1", {NEW_KEY: status}, namespace="prod") == ([], [])
    default_named = json.dumps([{"name": "default/net1", "ips": ["10.244.0.9"], "default": True}])
    assert addresses("multus:default/net1", {NEW_KEY: default_named}) == ([], [])


def test_broken_new_multus_key_falls_back_to_the_old_one_with_a_warning() -> None:
    found, warnings = addresses("multus:default/macvlan-net1", {NEW_KEY: "[{", OLD_KEY: MULTUS_OK})
    assert found == ["10.1.1.11"]
    assert len(warnings) == 1 and '"default/a"' in warnings[0] and f"read {OLD_KEY} instead" in warnings[0]


@pytest.mark.parametrize(
    ("source", "annotations"),
    [
        ("genie:ip2", {GENIE_ANNOTATION: "{broken"}),
        ("genie:ip2", {GENIE_ANNOTATION: {"ips": {}}}),  # a YAML inventory with an unquoted object
        ("multus:default/net1", {NEW_KEY: "[{", OLD_KEY: '{"name": "x"}'}),
    ],
)
def test_malformed_annotation_is_a_warning_naming_the_pod_not_an_error(
    source: str, annotations: dict[str, Any]
) -> None:
    found, warnings = addresses(source, annotations)
    assert found == []
    assert len(warnings) == 1
    assert warnings[0].startswith('network net2: pod "default/a": ') and "not an endpoint" in warnings[0]


def test_inventory_for_a_network_holds_only_pods_on_it() -> None:
    docs = [
        pod({GENIE_ANNOTATION: GENIE_OK}, "both"),
        pod({}, "primary-only"),
        pod({GENIE_ANNOTATION: "junk"}, "broken"),
        {**pod({GENIE_ANNOTATION: GENIE_OK}, "host"), "spec": {"hostNetwork": True}},
    ]
    source = AddressSource(parse_ip_source("genie:ip2"), "net2")
    inventory = build_inventory(docs, source)
    assert [(p.name, [str(a) for a in p.ips]) for p in inventory.pods] == [("both", ["10.32.0.4"])]
    assert len(source.warnings) == 1 and '"default/broken"' in source.warnings[0]
    primary = build_inventory(docs, NetworkSpec().address_source())
    assert [p.name for p in primary.pods] == ["both", "broken", "primary-only"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("podIPs", IPSourceSpec()),
        ("genie:ip2", IPSourceSpec("genie", "ip2")),
        ("genie-interface:eth1", IPSourceSpec("genie-interface", "eth1")),
        ("multus:default/macvlan-net1", IPSourceSpec("multus", "default/macvlan-net1")),
    ],
)
def test_parse_ip_source(text: str, expected: IPSourceSpec) -> None:
    assert parse_ip_source(text) == expected
    assert str(expected) == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        "podips",
        "podIPs:x",
        "genie",
        "genie:",
        "genie-interface:a/b",
        "multus:net1",
        "multus:/n",
        "calico:ip1",
    ],
)
def test_bad_ip_source(text: str) -> None:
    with pytest.raises(ValueError):
        parse_ip_source(text)


# --- which policies govern a network ------------------------------------------------------------


def policy(
    name: str, kind: str = "NetworkPolicy", namespace: str = "default", policy_for: tuple[str, ...] = ()
) -> Policy:
    return Policy(namespace, name, Selector(), ingress=(Rule(),), kind=kind, policy_for=policy_for)


PROGRAM = Program(
    [
        policy("np"),
        policy("iso", kind="NamespaceIsolation"),
        policy("mnp-net2", kind="MultiNetworkPolicy", policy_for=("default/net2",)),
        policy("mnp-prod-net2", kind="MultiNetworkPolicy", namespace="prod", policy_for=("prod/net2",)),
        policy("mnp-other-ns", kind="MultiNetworkPolicy", policy_for=("other/net2",)),
        policy("mnp-macvlan", kind="MultiNetworkPolicy", policy_for=("default/macvlan-net1", "default/net3")),
        policy("dsl-net2", kind="Npc", policy_for=("default/net2",)),
        policy("dsl-plain", kind="Npc"),
    ]
)


def selected(network: NetworkSpec) -> list[str]:
    return [p.name for p in select_policies(PROGRAM, network).policies]


def test_primary_network_takes_network_policies_and_the_1_6_isolation() -> None:
    assert selected(network_spec()) == ["dsl-plain", "iso", "np"]


def test_secondary_network_takes_multi_network_policies_naming_it() -> None:
    # a bare network name is each policy's own namespace's network of that name; other/net2 never matches
    assert selected(network_spec("net2", "genie:ip2")) == ["dsl-net2", "mnp-net2", "mnp-prod-net2"]
    assert selected(network_spec("default/net2", "genie:ip2")) == ["dsl-net2", "mnp-net2"]
    assert selected(network_spec("macvlan", "multus:default/macvlan-net1")) == ["mnp-macvlan"]


def test_policy_kinds_override() -> None:
    assert selected(network_spec("net2", "genie:ip2", "NetworkPolicy")) == ["dsl-plain", "iso", "np"]
    both = selected(network_spec("net2", "genie:ip2", "NetworkPolicy,MultiNetworkPolicy"))
    assert both == ["dsl-net2", "dsl-plain", "iso", "mnp-net2", "np", "mnp-prod-net2"]
    assert selected(network_spec(policy_kinds=["MultiNetworkPolicy"])) == []


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (("default", "genie:ip2"), "takes its addresses from podIPs"),
        (("net2", None), "needs an IP source other than podIPs"),
        (("net2", "podIPs"), "needs an IP source other than podIPs"),
        (("net_2", "genie:ip2"), "invalid network name"),
        (("a/b/c", "genie:ip2"), "invalid network name"),
        # what a MultiNetworkPolicy's policy-for could not name (a lowercase RFC 1123 subdomain)
        (("WEAVE", "genie:ip2"), "invalid network name .*lowercase"),
        (("Team/net2", "multus:team/net2"), "invalid network name .*the namespace"),
        (("net2", "genie:ip2", ""), "no policy kind"),
        (("net2", "genie:ip2", "NetworkPolicies"), "unknown policy kind"),
    ],
)
def test_network_spec_refuses_what_cannot_be_meant(args: tuple[Any, ...], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        network_spec(*args)


def test_network_names_give_distinct_folders() -> None:
    assert network_spec("default/net2", "multus:default/net2").folder == "default_net2"
    assert network_spec().folder == "default"


# --- the networks file --------------------------------------------------------------------------


def test_networks_file(tmp_path: Path) -> None:
    path = tmp_path / "networks.yaml"
    path.write_text(
        "networks:\n"
        "- name: default\n"
        "- name: net2\n  ipSource: genie:ip2\n  policyKinds: [NetworkPolicy]\n"
        "- name: macvlan\n  ipSource: multus:default/macvlan-net1\n  policyKinds: NetworkPolicy,MultiNetworkPolicy\n"
        "  ipFamilies: [IPv4]\n"
        "- name: v6\n  ipSource: genie:ip6\n  ipFamilies: IPv6, IPv4\n"
    )
    assert read_networks_file(str(path)) == (
        network_spec(),
        network_spec("net2", "genie:ip2", ["NetworkPolicy"]),
        network_spec(
            "macvlan", "multus:default/macvlan-net1", ["NetworkPolicy", "MultiNetworkPolicy"], ["IPv4"]
        ),
        network_spec("v6", "genie:ip6"),
    )
    assert [n.ip_families for n in read_networks_file(str(path))] == [(4, 6), (4, 6), (4,), (4, 6)]


@pytest.mark.parametrize(
    ("text", "where", "problem"),
    [
        ("networks:\n- name: net2\n  ipSource: genie\n", (3, 13, "networks[0].ipSource"), "unknown IP source"),
        ("networks:\n- name: default\n- name: net2\n", (3, 9, "networks[1].name"), "needs an IP source"),
        ("networks:\n- name: default\n- name: default\n", (3, 9, "networks[1].name"), "listed twice"),
        ("networks:\n- name: n\n  ipSrc: genie:ip2\n", (3, 3, "networks[0].ipSrc"), "unknown field"),
        ("networks:\n- {name: m, ipSource: 'genie:ip2', policyKinds: [Foo]}\n", (2, 49, "networks[0].policyKinds"), "unknown policy kind"),
        ("networks: []\n", (1, 11, "networks"), "at least one"),
        ("networks:\n- {name: default, ipFamilies: [IPv4, ipv6]}\n", (2, 31, "networks[0].ipFamilies"), "unknown IP family \"ipv6\""),
        ("networks:\n- {name: default, ipFamilies: []}\n", (2, 31, "networks[0].ipFamilies"), "no IP family given"),
        ("networks:\n- {name: default, ipFamilies: [4]}\n", (2, 32, "networks[0].ipFamilies[0]"), "must be a string"),
        ("nets: []\n", (1, 1, "nets"), "unknown field"),
        ("networks:\n- name: default\n---\n# b\nnetworks: []\n", (5, 1, ""), "holds one document, not 2"),
    ],
)  # fmt: skip
def test_networks_file_errors_name_line_column_and_field(
    tmp_path: Path, text: str, where: tuple[int, int, str], problem: str
) -> None:
    path = tmp_path / "networks.yaml"
    path.write_text(text)
    with pytest.raises(InputError) as caught:
        read_networks_file(str(path))
    err = caught.value
    assert (err.line, err.column, err.path) == where
    assert problem in err.message and err.file == str(path)


# --- the command line ---------------------------------------------------------------------------

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "multinet"


def set_members(ipsets: str) -> set[str]:
    return {line.split()[2] for line in ipsets.splitlines() if line.startswith("add ")}


def test_compile_for_a_secondary_network_uses_its_addresses(tmp_path: Path) -> None:
    inventory = str(EXAMPLE / "inventory.json")
    policies = str(EXAMPLE / "policies")
    done = npc("compile", policies, "--inventory", inventory, "--network", "weave", "--ip-source", "genie:ip2",
               "--policy-kinds", "NetworkPolicy", "-o", str(tmp_path / "weave"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    members = set_members((tmp_path / "weave" / "ipsets").read_text())
    # db (isolated); default's pods (the peer role=frontend in default is tested as default's pods
    # and role=frontend's pods) and myproject/app; other/app is in no set
    assert members == {"10.32.0.4", "10.32.0.5", "10.32.0.6", "10.32.0.7"}
    manifest = json.loads((tmp_path / "weave" / "manifest.json").read_text())
    assert (manifest["network"], manifest["ip_source"], manifest["policy_kinds"]) == (
        "weave",
        "genie:ip2",
        ["NetworkPolicy"],
    )


def test_compile_networks_file_writes_one_folder_per_network(tmp_path: Path) -> None:
    out = tmp_path / "out"
    policies = (str(EXAMPLE / "policies"), str(EXAMPLE / "multinetwork"))
    done = npc("compile", *policies, "--inventory", str(EXAMPLE / "inventory.json"),
               "--networks", str(EXAMPLE / "networks.yaml"), "-o", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["default", "weave"]
    for folder, addresses_ in (("default", {"10.244.0.201", "10.244.0.202", "10.244.0.203", "10.244.0.204", "10.244.1.10"}),
                               ("weave", {"10.32.0.4", "10.32.0.5", "10.32.0.6", "10.32.0.7"})):  # fmt: skip
        assert sorted(p.name for p in (out / folder).iterdir()) == [
            "ipsets",
            "manifest.json",
            "rules.v4",
            "rules.v6",
        ]
        assert set_members((out / folder / "ipsets").read_text()) == addresses_
    single = tmp_path / "single"
    npc(
        "compile",
        *policies,
        "--inventory",
        str(EXAMPLE / "inventory.json"),
        "-o",
        str(single),
    )
    assert (single / "rules.v4").read_text() == (out / "default" / "rules.v4").read_text()
    names = {
        folder: {w for w in (out / folder / "rules.v4").read_text().split() if w.startswith(("NPC-", "npc-"))}
        for folder in ("default", "weave")
    }
    assert names["default"] and names["weave"] and not names["default"] & names["weave"]


def test_malformed_annotation_reaches_stderr_as_a_warning(tmp_path: Path) -> None:
    inventory = json.loads((EXAMPLE / "inventory.json").read_text())
    inventory["items"][3]["metadata"]["annotations"][GENIE_ANNOTATION] = (
        '{"ips": {"ip2": {"ip": "10.32.0.999"}}}'
    )
    path = tmp_path / "inventory.json"
    path.write_text(json.dumps(inventory))
    done = npc("compile", str(EXAMPLE / "policies"), "--inventory", str(path), "--network", "weave",
               "--ip-source", "genie:ip2", "--policy-kinds", "NetworkPolicy")  # fmt: skip
    assert done.returncode == 0
    assert (
        'npc: warning: network weave: pod "default/db": multi-ip-preferences: ips["ip2"]: "10.32.0.999" is not an IP address'
        in done.stderr
    )
    assert "10.32.0.4" not in done.stdout


@pytest.mark.parametrize(
    "args",
    [
        ("--network", "weave", "--ip-source", "genie"),
        ("--ip-source", "genie:ip2"),
        ("--network", "weave"),
        ("--network", "weave", "--ip-source", "genie:ip2", "--policy-kinds", "Pod"),
        ("--networks", str(EXAMPLE / "networks.yaml"), "--network", "weave", "--ip-source", "genie:ip2"),
        ("--networks", str(EXAMPLE / "networks.yaml"), "--ip-families", "IPv4"),
        ("--ip-families", "IPv4,IPv5"),
        ("--ip-families", ","),
    ],
)
def test_usage_errors_exit_2(args: tuple[str, ...]) -> None:
    done = npc("compile", str(EXAMPLE / "policies"), *args)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("npc: ") and "Traceback" not in done.stderr


def test_bad_networks_file_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "networks.yaml"
    path.write_text("networks:\n- name: net2\n")
    done = npc("compile", str(EXAMPLE / "policies"), "--networks", str(path), "-o", str(tmp_path / "out"))
    assert done.returncode == 1
    assert f"{path}:2:9: error: networks[0].name:" in done.stderr
    assert not (tmp_path / "out").exists()


_OCTET = st.one_of(st.integers(0, 300).map(str), st.sampled_from(["00", "01", "007", "", "1a", " 1", "+1"]))


@given(st.lists(_OCTET, min_size=3, max_size=5).map(".".join))
def test_a_dotted_address_reads_as_ipaddress_reads_it(text: str) -> None:
    """The C fast path of ``pod_address`` takes exactly what ``ipaddress`` takes, as the same address."""
    try:
        expected: object = ipaddress.ip_address(text.strip())
    except ValueError:
        expected = ValueError
    if expected == ipaddress.ip_address("0.0.0.0"):
        expected = ValueError
    try:
        found: object = pod_address(text)
    except ValueError:
        found = ValueError
    assert found == expected


def test_an_ipv4_network_writes_nothing_of_ipv6(tmp_path: Path) -> None:
    """``--ip-families IPv4``: rules.v4 and ipsets as a dual-stack compile writes them but for
    IPv6's sets, no rules.v6, the families in the manifest, a warning for the pods' IPv6
    addresses; nftables writes one ``ip`` table; weave has nothing left to police with IPv6 alone."""
    inventory = str(tmp_path / "inventory.json")
    found = json.loads((EXAMPLE / "inventory.json").read_text())
    pods = [item for item in found["items"] if item["kind"] == "Pod"]
    for i, item in enumerate(pods, 1):  # dual-stack: an IPv6 address beside each IPv4 one
        item["status"]["podIPs"].append({"ip": f"fd00::{i}"})
    Path(inventory).write_text(json.dumps(found))
    policies = str(EXAMPLE / "policies")
    dual, v4 = tmp_path / "dual", tmp_path / "v4"
    assert npc("compile", policies, "--inventory", inventory, "-o", str(dual)).returncode == 0
    done = npc("compile", policies, "--inventory", inventory, "--ip-families", "IPv4", "-o", str(v4))
    assert done.returncode == 0, done.stderr
    assert "pods have IPv6 addresses, which npc does not police (--ip-families IPv4)" in done.stderr
    assert sorted(p.name for p in v4.iterdir()) == ["ipsets", "manifest.json", "rules.v4"]
    assert (v4 / "rules.v4").read_text() == (dual / "rules.v4").read_text()
    dual_sets = (dual / "ipsets").read_text().split("\n")
    assert "fd00::" in "\n".join(dual_sets) and "fd00::" not in (v4 / "ipsets").read_text()
    assert (v4 / "ipsets").read_text().split("\n") == [
        line
        for line in dual_sets
        if "inet6" not in line
        and not line.startswith(("add npc-ycua4-s6", "add npc-ycua4-l6", "add npc-ycua4-m6"))
    ]
    manifest = json.loads((v4 / "manifest.json").read_text())
    assert manifest["ip_families"] == ["IPv4"] and list(manifest["counts"]["rules"]) == ["rules.v4"]
    nft = npc("compile", policies, "--inventory", inventory, "--ip-families", "IPv4", "--backend", "nftables")
    assert nft.returncode == 0 and "table inet npc {" in nft.stdout
    assert "meta nfproto ipv4 goto source-4" in nft.stdout and not re.search(
        r"ipv6|ip6 |\b[spn]6-", nft.stdout
    )
    calico = npc(
        "compile", policies, "--inventory", inventory, "--ip-families", "IPv4", "--backend", "calico"
    )
    assert calico.returncode == 0 and "--ip-families does not narrow Calico resources" in calico.stderr
    both = npc("compile", policies, "--inventory", inventory, "--backend", "calico")
    assert both.stdout == calico.stdout and "--ip-families" not in both.stderr
    weave = npc("compile", policies, "--inventory", inventory, "--ip-families", "IPv6", "--backend", "weave")
    assert weave.returncode == 2 and "Weave Net carries IPv4 only" in weave.stderr, weave.stderr
