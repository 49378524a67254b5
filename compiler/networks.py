"""Networks: where each pod's addresses on a network come from, and which policies govern it.

With CNI-Genie or Multus a pod has one interface per network, but ``status.podIPs`` only
carries the primary one, so plugins that police ``podIPs`` leave every other network open. Here
a network is a name (which also keeps its chains and sets apart, see ``lower.network_tag``), an
IP source that reads the pod's address on it from the annotation its CNI meta-plugin writes, and
the policy kinds that govern it. Everything downstream is unchanged: the inventory built with the
network's source simply holds those addresses, so pod peers, named ports and ipBlocks all match
that network's traffic.

Annotations are read the way real clusters write them, junk included: a malformed one is a
warning naming the pod (the pod is then no endpoint of the network), never a failed compile.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal

import attrs

from .frontends.k8s import POLICY_FOR_ANNOTATION
from .frontends.positions import show
from .frontends.validate import network_problem
from .inventory import Pod, pod_address, pod_ips
from .ir import DEFAULT_NETWORK, IP_FAMILIES, MULTI_NETWORK_POLICY, NETWORK_POLICY, Address, Policy, Program

PRIMARY_NETWORK = DEFAULT_NETWORK
POLICY_KINDS: tuple[str, ...] = (NETWORK_POLICY, MULTI_NETWORK_POLICY)
GENIE_ANNOTATION = "multi-ip-preferences"
# The current key first: Multus writes both while the older one is deprecated.
MULTUS_STATUS_ANNOTATIONS = ("k8s.v1.cni.cncf.io/network-status", "k8s.v1.cni.cncf.io/networks-status")

SourceKind = Literal["podIPs", "genie", "genie-interface", "multus"]
SOURCE_KINDS: tuple[SourceKind, ...] = ("podIPs", "genie", "genie-interface", "multus")
IP_SOURCE_HELP = "podIPs (default), genie:<key>, genie-interface:<ifname> or multus:<namespace>/<name>"

# A network name: one or two (namespace/name) DNS-like segments. No '_', so a network's artefact
# folder (``/`` written as ``_``) can never collide with another network's.
_SEGMENT = r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?"
_NETWORK_NAME = re.compile(rf"{_SEGMENT}(/{_SEGMENT})?")
_INTERFACE = re.compile(r"[^\s/:]{1,15}")


class AnnotationError(ValueError):
    """An annotation that is not the shape its plugin writes (the message says what is wrong)."""


# --- annotation parsers: pure, one per plugin format --------------------------------------------


def _address(value: object, where: str) -> Address | None:
    """One address: empty means none (CNI-Genie's junk entries); a prefix length is tolerated."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise AnnotationError(f"{where}: an address must be a string, not {show(value)}")
    try:
        return pod_address(value)
    except ValueError as exc:
        raise AnnotationError(f"{where}: {exc}") from None


def _json(value: str, annotation: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise AnnotationError(f"{annotation} is not valid JSON ({exc.msg} at column {exc.colno})") from None
    except RecursionError:
        raise AnnotationError(f"{annotation} is nested too deeply") from None


@attrs.frozen
class GenieEntry:
    key: str
    interface: str
    address: Address


def genie_entries(value: str) -> list[GenieEntry]:
    """CNI-Genie's ``multi-ip-preferences``: ``{"multi_entry": N, "ips": {"ip1": {"ip", "interface"}}}``.

    Entries with an empty key or an empty address are skipped (a known CNI-Genie bug and its own
    sample YAML leave ``"": {}`` behind); ``multi_entry`` is never read, it is often wrong.
    """
    doc = _json(value, GENIE_ANNOTATION)
    if doc is None:
        return []
    if not isinstance(doc, dict):
        raise AnnotationError(f"{GENIE_ANNOTATION} must be a JSON object, not {show(doc)}")
    ips = doc.get("ips")
    if ips is None:
        return []
    if not isinstance(ips, dict):
        raise AnnotationError(f"{GENIE_ANNOTATION}: ips must be a JSON object, not {show(ips)}")
    out: list[GenieEntry] = []
    for key, entry in ips.items():
        if not key or entry is None:
            continue
        where = f"{GENIE_ANNOTATION}: ips[{show(key)}]"
        if not isinstance(entry, dict):
            raise AnnotationError(f"{where} must be a JSON object, not {show(entry)}")
        address = _address(entry.get("ip"), where)
        interface = entry.get("interface")
        if address is not None:
            out.append(GenieEntry(key, interface if isinstance(interface, str) else "", address))
    return out


@attrs.frozen
class MultusEntry:
    name: str  # namespace/name of the NetworkAttachmentDefinition, as Multus writes it
    interface: str
    addresses: tuple[Address, ...]
    default: bool = False


def multus_entries(value: str, annotation: str = MULTUS_STATUS_ANNOTATIONS[0]) -> list[MultusEntry]:
    """Multus ``network-status``: a JSON list of ``{"name", "interface"?, "ips"?, "default"?}``.

    The default network's entry may lack ``interface``; an attachment without IPAM lacks ``ips``.
    """
    doc = _json(value, annotation)
    if doc is None:
        return []
    if not isinstance(doc, list):
        raise AnnotationError(f"{annotation} must be a JSON list, not {show(doc)}")
    out: list[MultusEntry] = []
    for i, entry in enumerate(doc):
        where = f"{annotation}[{i}]"
        if not isinstance(entry, dict):
            raise AnnotationError(f"{where} must be a JSON object, not {show(entry)}")
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise AnnotationError(f"{where}: name must be a non-empty string, not {show(name)}")
        ips = entry.get("ips")
        if ips is None:
            ips = []
        if not isinstance(ips, list):
            raise AnnotationError(f"{where}: ips must be a JSON list, not {show(ips)}")
        addresses = [a for a in (_address(ip, where) for ip in ips) if a is not None]
        interface = entry.get("interface")
        out.append(
            MultusEntry(
                name,
                interface if isinstance(interface, str) else "",
                tuple(dict.fromkeys(addresses)),
                entry.get("default") is True,
            )
        )
    return out


# --- IP sources ---------------------------------------------------------------------------------


@attrs.frozen
class IPSourceSpec:
    """A parsed ``--ip-source``: which annotation, and which entry of it."""

    kind: SourceKind = "podIPs"
    arg: str = ""

    def __str__(self) -> str:
        return self.kind if self.kind == "podIPs" else f"{self.kind}:{self.arg}"


POD_IPS = IPSourceSpec()


def parse_ip_source(text: str) -> IPSourceSpec:
    """``podIPs``, ``genie:<key>``, ``genie-interface:<ifname>``, ``multus:<namespace>/<name>``.

    Raises ValueError saying what is wrong; the caller decides whether that is a usage error
    (a command-line flag) or an input error (a field of a networks file).
    """
    kind, colon, arg = text.strip().partition(":")
    if kind == "podIPs" and not colon:
        return POD_IPS
    if kind not in SOURCE_KINDS or kind == "podIPs" or not colon:
        raise ValueError(f"unknown IP source {show(text)}: expected {IP_SOURCE_HELP}")
    if not arg:
        raise ValueError(f"IP source {show(text)} needs a value after {kind}:")
    if kind == "genie" and not re.fullmatch(r"[^\s\"]{1,63}", arg):
        raise ValueError(f"IP source {show(text)}: the key must be a word like ip2")
    if kind == "genie-interface" and not _INTERFACE.fullmatch(arg):
        raise ValueError(f"IP source {show(text)}: {show(arg)} is not an interface name")
    if kind == "multus":
        namespace, slash, name = arg.partition("/")
        if not (slash and namespace and name and _NETWORK_NAME.fullmatch(arg)):
            raise ValueError(
                f"IP source {show(text)}: expected multus:<namespace>/<name>, the network-status name"
            )
    return IPSourceSpec(kind, arg)  # type: ignore[arg-type]


class AddressSource:
    """An ``inventory.IPSource`` for one network that keeps a warning for every pod it could not read.

    A pod without the annotation, or without an entry for this network, is simply not on it;
    only a malformed annotation is worth a warning.
    """

    def __init__(self, spec: IPSourceSpec = POD_IPS, network: str = PRIMARY_NETWORK) -> None:
        self.spec = spec
        self.network = network
        self.warnings: list[str] = []
        self.unread = 0  # pods whose annotation could not be read: the agent holds their last good state

    def __call__(self, pod: Mapping[str, Any], pod_ref: str) -> tuple[Address, ...]:
        if self.spec.kind == "podIPs":
            return pod_ips(pod, pod_ref)
        meta = pod.get("metadata")
        annotations = meta.get("annotations") if isinstance(meta, dict) else None
        if not isinstance(annotations, dict):
            return ()
        try:
            return tuple(dict.fromkeys(self._read(annotations, pod_ref)))
        except AnnotationError as exc:
            self._warn(pod_ref, str(exc))
            self.unread += 1
            return ()

    def _warn(self, pod_ref: str, problem: str, outcome: str = "the pod is not an endpoint of it") -> None:
        self.warnings.append(f"network {self.network}: pod {show(pod_ref)}: {problem}; {outcome}")

    def _read(self, annotations: Mapping[str, Any], pod_ref: str) -> Iterator[Address]:
        if self.spec.kind in ("genie", "genie-interface"):
            value = annotations.get(GENIE_ANNOTATION)
            if value is None:
                return
            for entry in genie_entries(_text(value, GENIE_ANNOTATION)):
                if self.spec.arg == (entry.key if self.spec.kind == "genie" else entry.interface):
                    yield entry.address
            return
        yield from self._multus(annotations, pod_ref)

    def _multus(self, annotations: Mapping[str, Any], pod_ref: str) -> Iterator[Address]:
        """The first status annotation that reads cleanly wins; a broken newer one is reported."""
        pod_namespace = pod_ref.partition("/")[0]
        problems: list[str] = []
        for key in MULTUS_STATUS_ANNOTATIONS:
            value = annotations.get(key)
            if value is None:
                continue
            try:
                entries = multus_entries(_text(value, key), key)
            except AnnotationError as exc:
                problems.append(str(exc))
                continue
            for problem in problems:  # the older key saved the day; still say the newer is broken
                self._warn(pod_ref, problem, f"read {key} instead")
            for entry in entries:
                # older Multus wrote a bare name for a network in the pod's own namespace
                name = entry.name if "/" in entry.name else f"{pod_namespace}/{entry.name}"
                if not entry.default and name == self.spec.arg:
                    yield from entry.addresses
            return
        if problems:
            raise AnnotationError("; ".join(problems))


def _text(value: object, annotation: str) -> str:
    if not isinstance(value, str):
        raise AnnotationError(f"{annotation} must be a string, not {show(value)}")
    return value


# --- networks and the policies that govern them -------------------------------------------------


def _default_kinds(name: str) -> tuple[str, ...]:
    return (NETWORK_POLICY,) if name == PRIMARY_NETWORK else (MULTI_NETWORK_POLICY,)


FAMILY_NAMES = {4: "IPv4", 6: "IPv6"}  # as Kubernetes spells a Service's ipFamilies


@attrs.frozen
class NetworkSpec:
    """One network npc compiles for: its name, where its addresses come from, what governs it."""

    name: str = PRIMARY_NETWORK
    ip_source: IPSourceSpec = POD_IPS
    policy_kinds: tuple[str, ...] = attrs.field()
    ip_families: tuple[int, ...] = IP_FAMILIES  # what npc polices on it (``--ip-families``)

    @policy_kinds.default
    def _kinds(self) -> tuple[str, ...]:
        return _default_kinds(self.name)

    @property
    def is_primary(self) -> bool:
        return self.name == PRIMARY_NETWORK

    @property
    def attachment(self) -> str:
        """What a ``policy-for`` entry must say to govern this network: Multus's
        ``namespace/name`` when that is where the addresses come from, else the network's name."""
        return self.ip_source.arg if self.ip_source.kind == "multus" else self.name

    @property
    def folder(self) -> str:
        """Artefact folder name (unique per network: names hold no ``_``)."""
        return self.name.replace("/", "_")

    def address_source(self) -> AddressSource:
        return AddressSource(self.ip_source, self.name)


def check_network_name(name: str) -> str:
    """A network as a MultiNetworkPolicy's ``policy-for`` names it (``frontends.k8s``): a
    NetworkAttachmentDefinition's name (a lowercase RFC 1123 subdomain), or ``namespace/name``,
    so that the annotation can name every network npc polices."""
    namespace, slash, rest = name.rpartition("/")
    if problem := network_problem(namespace if slash else None, rest):
        raise ValueError(f"invalid network name {show(name)}: {problem}")
    return name


def parse_policy_kinds(value: str | Sequence[str]) -> tuple[str, ...]:
    """``NetworkPolicy,MultiNetworkPolicy`` (or a list of them) as a sorted, unique tuple."""
    parts = value.split(",") if isinstance(value, str) else list(value)
    kinds = [p.strip() for p in parts if p.strip()]
    for kind in kinds:
        if kind not in POLICY_KINDS:
            raise ValueError(f"unknown policy kind {show(kind)}: expected {' or '.join(POLICY_KINDS)}")
    if not kinds:
        raise ValueError(f"no policy kind given: expected {' and/or '.join(POLICY_KINDS)}")
    return tuple(k for k in POLICY_KINDS if k in kinds)


def parse_ip_families(value: str | Sequence[str]) -> tuple[int, ...]:
    """``IPv4``, ``IPv6`` or both (comma-separated, or a list) as a sorted tuple of 4 and 6."""
    parts = value.split(",") if isinstance(value, str) else list(value)
    named = {name: family for family, name in FAMILY_NAMES.items()}
    given = [p.strip() for p in parts if p.strip()]
    for name in given:
        if name not in named:
            raise ValueError(f"unknown IP family {show(name)}: expected IPv4 and/or IPv6")
    if not given:
        raise ValueError("no IP family given: expected IPv4 and/or IPv6")
    return tuple(sorted({named[name] for name in given}))


def network_spec(
    name: str = PRIMARY_NETWORK,
    ip_source: IPSourceSpec | str | None = None,
    policy_kinds: str | Sequence[str] | None = None,
    ip_families: str | Sequence[str] | None = None,
) -> NetworkSpec:
    """A checked network; ValueError when the combination cannot be what the user meant.

    The primary network's addresses are ``status.podIPs``; any other network must say where its
    addresses come from, or its chains would police the primary addresses a second time.
    """
    check_network_name(name)
    source = parse_ip_source(ip_source) if isinstance(ip_source, str) else ip_source or POD_IPS
    if name == PRIMARY_NETWORK and source != POD_IPS:
        raise ValueError(
            f"the primary network {show(name)} takes its addresses from podIPs; "
            f"give the network whose addresses {source} reads a name of its own, e.g. net2"
        )
    if name != PRIMARY_NETWORK and source == POD_IPS:
        raise ValueError(
            f"network {show(name)} needs an IP source other than podIPs (those are the primary "
            f"network's addresses), e.g. genie:ip2 or multus:default/{name.rpartition('/')[2]}"
        )
    kinds = _default_kinds(name) if policy_kinds is None else parse_policy_kinds(policy_kinds)
    families = IP_FAMILIES if ip_families is None else parse_ip_families(ip_families)
    return NetworkSpec(name, source, kinds, families)


def unpoliced(network: NetworkSpec, pod: Pod) -> bool:
    """Whether ``pod`` has an address of a family the network does not carry (``--ip-families``)."""
    return any(a.version not in network.ip_families for a in pod.ips)


def uncarried(network: NetworkSpec, pods: Iterable[Pod]) -> tuple[str, ...]:
    """A warning when pods have addresses of a family the network does not carry (``--ip-families``):
    npc loads nothing for that family, so their traffic in it goes unpoliced."""
    left_out = [f for f in IP_FAMILIES if f not in network.ip_families]
    if not left_out:
        return ()
    found = sum(1 for pod in pods if unpoliced(network, pod))
    if not found:
        return ()
    names = " and ".join(FAMILY_NAMES[f] for f in left_out)
    return (
        f"network {network.name}: {found} {'pod has' if found == 1 else 'pods have'} {names} addresses, "
        "which npc does not police "
        f"(--ip-families {','.join(FAMILY_NAMES[f] for f in network.ip_families)})",
    )


def policy_kind(policy: Policy) -> str:
    """NetworkPolicy or MultiNetworkPolicy: which of ``--policy-kinds`` a policy answers to.

    The 1.6 namespace isolation, and DSL policies naming no network, are NetworkPolicies; a DSL
    policy naming its networks behaves like a MultiNetworkPolicy.
    """
    if policy.kind == MULTI_NETWORK_POLICY or policy.policy_for:
        return MULTI_NETWORK_POLICY
    return NETWORK_POLICY


def names_network(policy: Policy, network: NetworkSpec) -> bool:
    """Whether ``policy-for`` lists the network; a bare network name (one without a namespace,
    like a CNI-Genie plugin's) is the policy's own namespace's network of that name."""
    wanted = network.attachment
    return (wanted if "/" in wanted else f"{policy.namespace}/{wanted}") in policy.policy_for


def governs(policy: Policy, network: NetworkSpec) -> bool:
    kind = policy_kind(policy)
    if kind not in network.policy_kinds:
        return False
    return kind == NETWORK_POLICY or names_network(policy, network)


def select_policies(program: Program, network: NetworkSpec) -> Program:
    """The policies that govern ``network`` (a pure ``Program -> Program``, like a pass)."""
    return Program(p for p in program.policies if governs(p, network))


def ungoverned_note(network: NetworkSpec) -> str:
    """Why a secondary network came out open: usually a MultiNetworkPolicy without ``policy-for``."""
    text = f"network {network.name}: no policy governs it, so its pods stay open on it"
    if MULTI_NETWORK_POLICY in network.policy_kinds:
        wanted = network.attachment
        example = wanted if "/" in wanted else f"{wanted} or <its namespace>/{wanted}"
        text += (
            f" (a MultiNetworkPolicy governs it when its {POLICY_FOR_ANNOTATION} annotation lists {example})"
        )
    return text
