"""A model of Calico v3 policy, written from Calico's sources for the tests, independent of npc's
renderer: its selector grammar, the checks calicoctl runs on a policy, and how Felix decides a
connection (tiers, order, namespace scoping, profiles for pods no policy selects).

- ``parse_selector(text)``: libcalico-go ``lib/selector`` (tokenizer + parser): ``==``, ``!=``,
  ``in``/``not in``/``notin`` sets, ``has()``, ``all()``, ``global()``, ``contains``,
  ``starts with``, ``ends with``, ``!``, ``&&``, ``||``, parentheses; no escapes in literals; only
  space and tab are whitespace.
- ``problems(obj)``: ``lib/validator/v3`` plus the CRD's field limits, for NetworkPolicy and
  GlobalNetworkPolicy.
- ``Cluster``: endpoints carry their pod labels plus ``projectcalico.org/namespace`` and
  ``projectcalico.org/orchestrator``, and inherit the ``kns.<ns>`` profile's ``pcns.<key>`` labels;
  namespace selectors are rewritten onto ``pcns.`` keys as ``updateprocessors/rules.go`` does.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from npc.inventory import Inventory, Pod
from npc.ir import Address

Labels = Mapping[str, str]
Predicate = Callable[[Labels], bool]


class SelectorError(ValueError):
    pass


# --- selectors ---------------------------------------------------------------------------------

_IDENT = re.compile(r"[a-zA-Z0-9_./-]+")


def _ident_char(c: str) -> bool:
    return bool(_IDENT.fullmatch(c))


def tokenize(text: str) -> list[tuple[str, str]]:
    """Calico's tokenizer, token by token (kinds: label str ( ) { } , == != ! && || in notin
    contains startswith endswith all has global eof)."""
    out: list[tuple[str, str]] = []
    i = 0
    while True:
        while i < len(text) and text[i] in " \t":
            i += 1
        if i == len(text):
            out.append(("eof", ""))
            return out
        c = text[i]
        last = out[-1][0] if out else ""
        if c in "(){},":
            out.append((c, c))
            i += 1
        elif c in "'\"":
            end = text.find(c, i + 1)
            if end < 0:
                raise SelectorError("unterminated string")
            out.append(("str", text[i + 1 : end]))
            i = end + 1
        elif text.startswith("==", i):
            out.append(("==", ""))
            i += 2
        elif c == "=":
            raise SelectorError("expected ==")
        elif text.startswith("!=", i):
            out.append(("!=", ""))
            i += 2
        elif c == "!":
            out.append(("!", ""))
            i += 1
        elif text.startswith("&&", i):
            out.append(("&&", ""))
            i += 2
        elif text.startswith("||", i):
            out.append(("||", ""))
            i += 2
        elif c in "&|":
            raise SelectorError(f"expected {c * 2}")
        elif last == "label":
            i = _operator(text, i, out)
        elif text.startswith(("has(", "all(", "global("), i):
            word = text[i : text.index("(", i)]
            i = text.index("(", i) + 1
            while i < len(text) and text[i] in " \t":
                i += 1
            ident = ""
            if word == "has":
                m = _IDENT.match(text, i)
                if not m:
                    raise SelectorError("expected identifier")
                ident, i = m.group(), m.end()
                while i < len(text) and text[i] in " \t":
                    i += 1
            if not text.startswith(")", i):
                raise SelectorError(f"no closing ')' after {word}(")
            out.append((word, ident))
            i += 1
        else:
            m = _IDENT.match(text, i)
            if not m:
                raise SelectorError(f"unexpected character {c!r}")
            if len(m.group()) > 512:
                raise SelectorError("label too long")
            out.append(("label", m.group()))
            i = m.end()


def _operator(text: str, i: int, out: list[tuple[str, str]]) -> int:
    """An operator word after a label; words of ``starts with`` / ``not in`` may be spaced or not."""
    for kind, words in (
        ("contains", ("contains",)),
        ("startswith", ("starts", "with")),
        ("endswith", ("ends", "with")),
        ("notin", ("not", "in")),
        ("in", ("in",)),
    ):
        j = i
        for n, word in enumerate(words):
            if not text.startswith(word, j):
                break
            j += len(word)
            while n < len(words) - 1 and j < len(text) and text[j] in " \t":
                j += 1
        else:
            if j == len(text) or not _ident_char(text[j]):
                out.append((kind, ""))
                return j
    raise SelectorError(f"expected operator after label {out[-1][1]!r}")


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]], rename: Callable[[str], str]) -> None:
        self.tokens, self.pos, self.rename = tokens, 0, rename
        self.has_global = False

    def peek(self) -> str:
        return self.tokens[self.pos][0]

    def take(self) -> tuple[str, str]:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def expect(self, kind: str) -> str:
        got, value = self.take()
        if got != kind:
            raise SelectorError(f"expected {kind}, got {got}")
        return value

    def _joined(
        self, op: str, operand: Callable[[], Predicate], combine: Callable[[Iterable[bool]], bool]
    ) -> Predicate:
        parts = [operand()]
        while self.peek() == op:
            self.take()
            parts.append(operand())
        return parts[0] if len(parts) == 1 else (lambda ls: combine(p(ls) for p in parts))

    def or_(self) -> Predicate:
        return self._joined("||", self.and_, any)

    def and_(self) -> Predicate:
        return self._joined("&&", self.operation, all)

    def operation(self) -> Predicate:
        negated = False
        while self.peek() == "!":
            self.take()
            negated = not negated
        inner = self.primary()
        return (lambda ls: not inner(ls)) if negated else inner

    def primary(self) -> Predicate:
        kind, value = self.take()
        if kind == "has":
            key = self.rename(value)
            return lambda ls: key in ls
        if kind == "all":
            return self.all_()
        if kind == "global":
            self.has_global = True
            return self.global_()
        if kind == "(":
            inner = self.or_()
            self.expect(")")
            return inner
        if kind != "label":
            raise SelectorError(f"unexpected {kind}")
        key = self.rename(value)
        op, _ = self.take()
        if op in ("==", "!=", "contains", "startswith", "endswith"):
            lit = self.expect("str")
            tests: dict[str, Callable[[str], bool]] = {
                "==": lambda v: v == lit,
                "contains": lambda v: lit in v,
                "startswith": lambda v: v.startswith(lit),
                "endswith": lambda v: v.endswith(lit),
            }
            if op == "!=":
                return lambda ls: ls.get(key) != lit
            test = tests[op]
            return lambda ls: key in ls and test(ls[key])
        if op in ("in", "notin"):
            self.expect("{")
            values: set[str] = set()
            if self.peek() != "}":
                values.add(self.expect("str"))
                while self.peek() == ",":
                    self.take()
                    values.add(self.expect("str"))
            self.expect("}")
            if op == "in":
                return lambda ls: key in ls and ls[key] in values
            return lambda ls: ls.get(key) not in values
        raise SelectorError(f"unexpected {op} after label")

    def all_(self) -> Predicate:
        return lambda ls: True

    def global_(self) -> Predicate:
        return lambda ls: True


class _NamespaceParser(_Parser):
    """A namespace selector as Felix sees it: keys on ``pcns.``, ``all()`` = any namespaced
    endpoint, ``global()`` = anything without a namespace."""

    def all_(self) -> Predicate:
        return lambda ls: NAMESPACE in ls

    def global_(self) -> Predicate:
        return lambda ls: NAMESPACE not in ls


def _parse(text: str, parser: type[_Parser], rename: Callable[[str], str]) -> tuple[Predicate, bool]:
    if "\n" in text:
        raise SelectorError("newline in selector")
    tokens = tokenize(text)
    if tokens[0][0] == "eof":
        return (lambda ls: True), False
    p = parser(tokens, rename)
    predicate = p.or_()
    if p.peek() != "eof":
        raise SelectorError(f"unexpected content at end of selector: {p.tokens[p.pos :]}")
    return predicate, p.has_global


def parse_selector(text: str) -> Predicate:
    return _parse(text, _Parser, lambda k: k)[0]


def parse_namespace_selector(text: str) -> Predicate:
    return _parse(text, _NamespaceParser, lambda k: "pcns." + k)[0]


# --- validation (calicoctl / API server) ---------------------------------------------------------

_LABEL = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_SUBDOMAIN = f"{_LABEL}(\\.{_LABEL})*"
NP_NAME = re.compile(f"^(({_LABEL})(\\.{_LABEL})?|((?:knp|ossg)\\.default\\.({_SUBDOMAIN})))$")
GNP_NAME = re.compile(f"^({_LABEL}\\.)?{_LABEL}$")
_PORT_NAME = re.compile(r"^[a-zA-Z0-9_.-]{1,128}$")
_RANGE = re.compile(r"^(\d+):(\d+)$")
_PROTOCOLS = {"TCP": 6, "UDP": 17, "ICMP": 1, "ICMPV6": 58, "SCTP": 132, "UDPLITE": 136}
_WITH_PORTS = {6, 17, 132}
_SPEC_FIELDS = {"tier", "order", "selector", "types", "ingress", "egress", "serviceAccountSelector"}
_GNP_FIELDS = _SPEC_FIELDS | {"namespaceSelector", "doNotTrack", "preDNAT", "applyOnForward"}
_RULE_FIELDS = {"action", "ipVersion", "protocol", "notProtocol", "source", "destination", "metadata"}
_ENTITY_FIELDS = {"nets", "notNets", "selector", "notSelector", "namespaceSelector", "ports", "notPorts"}


def _protocol_number(value: object) -> int | None:
    if isinstance(value, int):
        return value if 1 <= value <= 255 else None
    if isinstance(value, str):
        return _PROTOCOLS.get(value.upper()) if not value.isdigit() else _protocol_number(int(value))
    return None


def _port_problem(port: object) -> tuple[str | None, bool]:
    """(problem, is named)."""
    if isinstance(port, bool):
        return "not a port", False
    if isinstance(port, int):
        return (None if 0 <= port <= 65535 else f"port {port} out of range"), False
    if not isinstance(port, str):
        return f"port {port!r} is neither number nor string", False
    if port.isdigit():
        return _port_problem(int(port))[0], False
    m = _RANGE.match(port)
    if m:
        lo, hi = int(m.group(1)), int(m.group(2))
        return (None if 0 <= lo <= hi <= 65535 else f"bad range {port}"), False
    return (None if _PORT_NAME.match(port) else f"bad port name {port!r}"), True


def _selector_problem(text: object, where: str, namespace: bool = False) -> list[str]:
    if not isinstance(text, str):
        return [f"{where}: not a string"]
    if len(text) > 1024:
        return [f"{where}: longer than 1024"]
    try:
        _, has_global = _parse(text, _NamespaceParser if namespace else _Parser, lambda k: k)
    except SelectorError as exc:
        return [f"{where}: {text!r}: {exc}"]
    if has_global and not (namespace and text.strip() == "global()"):
        return [f"{where}: global() is allowed only as a whole namespaceSelector"]
    return []


def _entity_problems(entity: Any, where: str, protocol: int | None) -> tuple[list[str], set[int]]:
    out: list[str] = []
    versions: set[int] = set()
    if not isinstance(entity, dict):
        return [f"{where}: not a mapping"], versions
    out += [f"{where}.{k}: unknown field" for k in entity if k not in _ENTITY_FIELDS]
    for field in ("nets", "notNets"):
        nets = entity.get(field, [])
        if len(nets) > 256:
            out.append(f"{where}.{field}: more than 256")
        for net in nets:
            try:
                parsed = ipaddress.ip_network(net, strict=False)
            except (ValueError, TypeError):
                out.append(f"{where}.{field}: invalid CIDR {net!r}")
                continue
            versions.add(parsed.version)
            if field == "notNets" and parsed.prefixlen == 0:
                out.append(f"{where}.notNets: catch-all {net} matches no traffic")
    for field in ("selector", "notSelector"):
        if field in entity:
            out += _selector_problem(entity[field], f"{where}.{field}")
    if "namespaceSelector" in entity:
        out += _selector_problem(entity["namespaceSelector"], f"{where}.namespaceSelector", namespace=True)
    for field in ("ports", "notPorts"):
        ports = entity.get(field, [])
        if len(ports) > 50:
            out.append(f"{where}.{field}: more than 50")
        for port in ports:
            problem, named = _port_problem(port)
            if problem:
                out.append(f"{where}.{field}: {problem}")
            elif protocol is None and not named:
                out.append(f"{where}.{field}: numeric port {port} needs a protocol")
            elif protocol is not None and protocol not in _WITH_PORTS:
                out.append(f"{where}.{field}: protocol {protocol} has no ports")
    return out, versions


def _rule_problems(rule: Any, where: str) -> list[str]:
    if not isinstance(rule, dict):
        return [f"{where}: not a mapping"]
    out = [f"{where}.{k}: unknown field" for k in rule if k not in _RULE_FIELDS]
    if rule.get("action") not in ("Allow", "Deny", "Log", "Pass"):
        out.append(f"{where}.action: {rule.get('action')!r}")
    protocol = None
    if "protocol" in rule:
        protocol = _protocol_number(rule["protocol"])
        if protocol is None:
            out.append(f"{where}.protocol: {rule['protocol']!r}")
    versions: set[int] = set()
    for side in ("source", "destination"):
        problems, seen = _entity_problems(rule.get(side, {}), f"{where}.{side}", protocol)
        out += problems
        versions |= seen
    if len(versions) > 1:
        out.append(f"{where}: mixes IPv4 and IPv6 CIDRs")
    if "ipVersion" in rule and (rule["ipVersion"] not in (4, 6) or versions - {rule["ipVersion"]}):
        out.append(f"{where}.ipVersion: {rule['ipVersion']!r} does not fit the rule's CIDRs")
    return out


def problems(obj: Any) -> list[str]:
    """What calicoctl would reject in one object (empty: it is accepted)."""
    if not isinstance(obj, dict):
        return ["not a mapping"]
    kind = obj.get("kind")
    if obj.get("apiVersion") != "projectcalico.org/v3" or kind not in (
        "NetworkPolicy",
        "GlobalNetworkPolicy",
    ):
        return [f"unexpected {obj.get('apiVersion')}/{kind}"]
    meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
    out: list[str] = []
    name = meta.get("name", "")
    regex = NP_NAME if kind == "NetworkPolicy" else GNP_NAME
    if not isinstance(name, str) or len(name) > 253 or not regex.match(name):
        out.append(f"metadata.name {name!r} breaks Calico's {kind} name rule")
    if kind == "NetworkPolicy" and not re.fullmatch(_LABEL, str(meta.get("namespace", ""))):
        out.append("metadata.namespace missing or invalid")
    out += [
        f"spec.{k}: unknown field"
        for k in spec
        if k not in (_GNP_FIELDS if kind != "NetworkPolicy" else _SPEC_FIELDS)
    ]
    if "order" in spec and not isinstance(spec["order"], int | float):
        out.append("spec.order: not a number")
    out += _selector_problem(spec.get("selector", ""), "spec.selector")
    if "namespaceSelector" in spec:
        out += _selector_problem(spec["namespaceSelector"], "spec.namespaceSelector")
    types = spec.get("types", [])
    if not 1 <= len(types) <= 2 or len(set(types)) != len(types) or set(types) - {"Ingress", "Egress"}:
        out.append(f"spec.types: {types!r}")
    for direction in ("ingress", "egress"):
        rules = spec.get(direction, [])
        if len(rules) > 1024:
            out.append(f"spec.{direction}: more than 1024 rules")
        for n, rule in enumerate(rules):
            out += _rule_problems(rule, f"spec.{direction}[{n}]")
    return out


# --- enforcement -------------------------------------------------------------------------------

NAMESPACE = "projectcalico.org/namespace"
ORCHESTRATOR = "projectcalico.org/orchestrator"
DEFAULT_TIER_ORDER = 1_000_000.0


class Cluster:
    """Calico's verdict on connections between the inventory's pods and outside addresses."""

    def __init__(self, objects: Iterable[Mapping[str, Any]], inventory: Inventory) -> None:
        self.policies = [p for p in objects if p.get("kind") in ("NetworkPolicy", "GlobalNetworkPolicy")]
        tiers = {t["metadata"]["name"]: t.get("spec", {}) for t in objects if t.get("kind") == "Tier"}
        tiers.setdefault("default", {"order": DEFAULT_TIER_ORDER, "defaultAction": "Deny"})
        self.tiers = sorted(tiers.items(), key=lambda t: (t[1].get("order", math.inf), t[0]))
        ns_labels = {ns.name: ns.labels for ns in inventory.namespaces}
        self.by_ip: dict[Address, tuple[Pod, dict[str, str]]] = {}
        for pod in inventory.pods:
            profile = {f"pcns.{k}": v for k, v in ns_labels.get(pod.namespace, {}).items()}
            profile["pcns.projectcalico.org/name"] = pod.namespace
            labels = {**profile, **pod.labels, NAMESPACE: pod.namespace, ORCHESTRATOR: "k8s"}
            for ip in pod.ips:
                self.by_ip[ip] = (pod, labels)

    # which policies apply to an endpoint, in evaluation order
    def _applies(self, policy: Mapping[str, Any], labels: Labels) -> bool:
        spec = policy.get("spec", {})
        if policy["kind"] == "NetworkPolicy":
            if labels.get(NAMESPACE) != policy["metadata"]["namespace"]:
                return False
        elif "namespaceSelector" in spec and not parse_namespace_selector(spec["namespaceSelector"])(labels):
            return False
        return parse_selector(spec.get("selector", ""))(labels)

    @staticmethod
    def _types(spec: Mapping[str, Any]) -> list[str]:
        if spec.get("types"):
            return list(spec["types"])
        if spec.get("egress"):
            return ["Ingress", "Egress"] if spec.get("ingress") else ["Egress"]
        return ["Ingress"]

    def _entity(
        self,
        entity: Mapping[str, Any],
        policy: Mapping[str, Any],
        address: Address,
        protocol: str,
        port: int | None,
    ) -> bool:
        nets = [ipaddress.ip_network(n, strict=False) for n in entity.get("nets", [])]
        if nets and not any(address.version == n.version and address in n for n in nets):
            return False
        not_nets = [ipaddress.ip_network(n, strict=False) for n in entity.get("notNets", [])]
        if any(address.version == n.version and address in n for n in not_nets):
            return False
        endpoint = self.by_ip.get(address)
        labels = endpoint[1] if endpoint else None
        selecting = any(f in entity for f in ("selector", "notSelector", "namespaceSelector"))
        if selecting:
            if labels is None:
                return False
            if "selector" in entity and not parse_selector(entity["selector"])(labels):
                return False
            if "notSelector" in entity and parse_selector(entity["notSelector"])(labels):
                return False
            ns_selector = entity.get("namespaceSelector", "")
            if ns_selector:
                if not parse_namespace_selector(ns_selector)(labels):
                    return False
            elif (
                policy["kind"] == "NetworkPolicy" and labels.get(NAMESPACE) != policy["metadata"]["namespace"]
            ):
                return False
        if "ports" in entity or "notPorts" in entity:
            if port is None:
                raise NotImplementedError("source ports are not modelled")
            if "ports" in entity and not any(
                self._port_matches(p, entity, policy, address, protocol, port) for p in entity["ports"]
            ):
                return False
            if any(
                self._port_matches(p, entity, policy, address, protocol, port)
                for p in entity.get("notPorts", [])
            ):
                return False
        return True

    def _port_matches(
        self,
        spec: int | str,
        entity: Mapping[str, Any],
        policy: Mapping[str, Any],
        address: Address,
        protocol: str,
        port: int,
    ) -> bool:
        if isinstance(spec, int) or spec.isdigit():
            return int(spec) == port
        m = _RANGE.match(spec)
        if m:
            return int(m.group(1)) <= port <= int(m.group(2))
        # A named port: the (address, protocol, number) of endpoints the entity's selectors match
        # (every endpoint when it has none) that declare a port of that name.
        endpoint = self.by_ip.get(address)
        if endpoint is None:
            return False
        pod = endpoint[0]
        return any(p.name == spec and p.protocol == protocol and p.port == port for p in pod.ports)

    def _rule_matches(
        self,
        rule: Mapping[str, Any],
        policy: Mapping[str, Any],
        src: Address,
        dst: Address,
        protocol: str,
        port: int,
    ) -> bool:
        number = _PROTOCOLS[protocol]
        if "protocol" in rule and _protocol_number(rule["protocol"]) != number:
            return False
        if "notProtocol" in rule and _protocol_number(rule["notProtocol"]) == number:
            return False
        if "ipVersion" in rule and rule["ipVersion"] != dst.version:
            return False
        if not self._entity(rule.get("source", {}), policy, src, protocol, None):
            return False
        return self._entity(rule.get("destination", {}), policy, dst, protocol, port)

    def _side(
        self, direction: str, labels: Labels, src: Address, dst: Address, protocol: str, port: int
    ) -> bool:
        kind = direction.capitalize()
        for tier, tier_spec in self.tiers:
            policies = [
                p
                for p in self.policies
                if p["spec"].get("tier", "default") == tier
                and kind in self._types(p["spec"])
                and self._applies(p, labels)
            ]
            if not policies:
                continue
            policies.sort(key=lambda p: (p["spec"].get("order", math.inf), p["metadata"]["name"]))
            verdict = self._tier(policies, direction, src, dst, protocol, port)
            if verdict is None:
                verdict = tier_spec.get("defaultAction", "Deny")
            if verdict != "Pass":
                return verdict == "Allow"
        return True  # the namespace profile kns.<ns> allows

    def _tier(
        self,
        policies: Sequence[Mapping[str, Any]],
        direction: str,
        src: Address,
        dst: Address,
        protocol: str,
        port: int,
    ) -> str | None:
        for policy in policies:
            for rule in policy["spec"].get(direction, []):
                if self._rule_matches(rule, policy, src, dst, protocol, port) and rule["action"] != "Log":
                    return str(rule["action"])
        return None

    def allowed(self, src: Address, dst: Address, protocol: str, port: int) -> bool:
        if src.version != dst.version:
            return False
        source, destination = self.by_ip.get(src), self.by_ip.get(dst)
        if source is not None and not self._side("egress", source[1], src, dst, protocol, port):
            return False
        return destination is None or self._side("ingress", destination[1], src, dst, protocol, port)
