"""Secondary networks for truth-table cases: addresses, interfaces and the annotations plugins write.

A multi-network case (``cases/multinet/*.json``) is an ordinary case plus:

- ``"networks": [{"name": "net2", "namespace": "default"}]``: secondary networks, in order. The
  k-th gets ``10.(31+k).0.0/16`` and ``fd00:(31+k)::/64`` (net2 -> 10.32.0.0/16, like Weave's default),
  interface ``eth<k>`` in every pod attached to it, and the Multus name ``<namespace>/<name>``;
- ``"networks": ["net2", ...]`` on a pod: what it is attached to (default: nothing but the primary);
- ``"network": "net2"`` on a probe (see ``case.py``): pods not attached to it must be ``?``;
- ``"applies": [["--network", "net2", "--ip-source", "genie:ip2"], ...]``: one ``npc apply`` per entry,
  in order, each with all the case's policies (npc picks what governs each network); default ``[[]]``.

Every attached pod carries both annotation forms, exactly as the plugins write them: CNI-Genie's
``cni`` (``calico,net3@eth2``) and ``multi-ip-preferences`` (``ip1`` the primary, then one key per
plugin in the pod's own order, first address only, with the junk entries and wrong ``multi_entry``
real clusters carry), and Multus's ``k8s.v1.cni.cncf.io/networks`` plus ``network-status`` and the
older ``networks-status`` (pretty-printed, a default entry sometimes without ``interface``).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from .case import Attachment, Case, CaseError, Endpoint, parse_case

MULTINET_DIR = Path(__file__).resolve().parent.parent / "cases" / "multinet"
GENIE = "multi-ip-preferences"
MULTUS_NETWORKS = "k8s.v1.cni.cncf.io/networks"
MULTUS_STATUS = ("k8s.v1.cni.cncf.io/network-status", "k8s.v1.cni.cncf.io/networks-status")


@attrs.frozen
class NetworkDef:
    name: str
    namespace: str
    index: int  # 1-based: interface eth<index>, ranges 10.(31+index)/16 and fd00:(31+index)::/64

    @property
    def interface(self) -> str:
        return f"eth{self.index}"

    @property
    def multus_name(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def ranges(self) -> tuple[ipaddress.IPv4Network, ipaddress.IPv6Network]:
        return (
            ipaddress.IPv4Network(f"10.{31 + self.index}.0.0/16"),
            ipaddress.IPv6Network(f"fd00:{31 + self.index}::/64"),
        )


@attrs.frozen
class MultinetCase:
    case: Case
    networks: tuple[NetworkDef, ...]
    applies: tuple[tuple[str, ...], ...]

    @property
    def id(self) -> str:
        return self.case.id


def _attach(
    e: Endpoint, raw: Mapping[str, Any], networks: Mapping[str, NetworkDef], families: Sequence[str]
) -> Endpoint:
    wanted = list(raw.get("networks") or ())
    unknown = [n for n in wanted if n not in networks]
    if unknown or (e.external and wanted):
        raise CaseError(
            f"pod {e.ref}: unknown networks {unknown}" if unknown else f"{e.ref}: externals have no networks"
        )
    chosen = sorted((networks[n] for n in wanted), key=lambda n: n.index)
    attachments = []
    for net in chosen:
        v4, v6 = net.ranges
        addresses = ([v4[10 + e.index]] if "v4" in families else []) + (
            [v6[0x10 + e.index]] if "v6" in families else []
        )
        attachments.append(Attachment(net.name, net.interface, tuple(addresses), net.ranges))
    return attrs.evolve(e, attachments=tuple(attachments), annotations=_annotations(e, chosen, attachments))


def _annotations(
    e: Endpoint, networks: Sequence[NetworkDef], attachments: Sequence[Attachment]
) -> dict[str, str]:
    default: dict[str, Any] = {"name": "k8s-pod-network", "interface": "eth0"}
    if e.index % 3 == 0:  # Multus's default entry lacks interface on some setups
        del default["interface"]
    default.update({"ips": [str(a) for a in e.addresses], "default": True, "dns": {}})
    status = [default] + [
        {
            "name": n.multus_name,
            "interface": a.interface,
            "ips": [str(x) for x in a.addresses],
            "mac": f"02:00:00:{k:02x}:{e.index >> 8:02x}:{e.index & 0xFF:02x}",
            "dns": {},
        }
        for k, (n, a) in enumerate(zip(networks, attachments, strict=True), 1)
    ]
    text = json.dumps(status, indent=4)
    multus = {MULTUS_STATUS[0]: text, MULTUS_STATUS[1]: text}
    if not networks:  # Multus reports the default network of every pod; CNI-Genie writes nothing
        return multus
    # CNI-Genie: plugins in the pod's order, an explicit @ifname keeps eth<k> stable per network
    ips: dict[str, dict[str, str]] = {"ip1": {"ip": str(e.addresses[0]), "interface": "eth0"}}
    for k, attachment in enumerate(attachments, 2):
        ips[f"ip{k}"] = {"ip": str(attachment.addresses[0]), "interface": attachment.interface}
    if e.index % 2:  # the known CNI-Genie bug / its sample YAML: an empty entry, a wrong count
        ips[""] = {}
        multi_entry = len(ips) + 1
    else:
        ips[""] = {"ip": "", "interface": ""}
        multi_entry = len(ips)
    return {
        "cni": ",".join(["calico", *(f"{n.name}@{n.interface}" for n in networks)]),
        GENIE: json.dumps({"multi_entry": multi_entry, "ips": ips}),
        MULTUS_NETWORKS: ", ".join(n.multus_name if n.namespace != e.namespace else n.name for n in networks),
        **multus,
    }


def parse_multinet_case(data: Mapping[str, Any], path: Path) -> MultinetCase:
    where = path.name
    networks = {
        raw["name"]: NetworkDef(raw["name"], raw.get("namespace", "default"), k)
        for k, raw in enumerate(data.get("networks", ()), 1)
    }
    base = {k: v for k, v in data.items() if k not in ("networks", "applies")}
    # placeholders need the attachments, so the policies are checked once the pods have them
    case = parse_case({**base, "policies": []}, path)
    try:
        endpoints = tuple(
            _attach(e, raw, networks, case.families)
            for e, raw in zip(case.endpoints, data["pods"], strict=True)
        )
    except CaseError as exc:
        raise CaseError(f"{where}: {exc}") from None
    case = attrs.evolve(case, endpoints=endpoints, policies=tuple(data.get("policies", ())))
    case.policy_documents()
    for n, check in enumerate(case.checks):
        if check.network is None:
            continue
        if check.network not in networks:
            raise CaseError(f"{where}: probe {n}: unknown network {check.network!r}")
        for e in endpoints:
            absent = e.address(check.family, check.network) is None
            if absent and (
                set(check.expect[e.index]) != {"?"} or any(row[e.index] != "?" for row in check.expect)
            ):
                raise CaseError(
                    f"{where}: probe {n}: {e.ref} is not on {check.network}, its row and column must be ?"
                )
    applies = tuple(tuple(str(a) for a in args) for args in data.get("applies", [[]]))
    return MultinetCase(case, tuple(networks.values()), applies)


def load_multinet_cases() -> list[MultinetCase]:
    out = []
    for path in sorted(MULTINET_DIR.glob("*.json")):
        with path.open(encoding="utf-8") as fh:
            out.append(parse_multinet_case(json.load(fh), path))
    return out
