"""The npc policy language: ``.npc`` text to the same IR policies the Kubernetes frontend makes.

``dsl_parser`` handles syntax; this module gives it meaning: macros are expanded, names, label
keys and values, ports and address blocks are checked by the Kubernetes API server's rules
(shared with ``k8s`` through ``validate``), and every error points at its token.

Meaning, in NetworkPolicy terms: ``select`` is the podSelector; each ``allow`` statement is one
rule; a direction is governed (in policyTypes) when the policy allows or isolates it;
``pods(S)`` is a podSelector-only peer (the policy's namespace), ``namespaces(N)`` a
namespaceSelector-only peer, ``pods(S) in namespaces(N)`` both in one peer. A policy naming
networks (``for net1, ns/net2``) is a MultiNetworkPolicy with that ``policy-for``.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Mapping

from ..documents import MAX_EXPANSION
from ..errors import InputError
from ..ir import (
    MULTI_NETWORK_POLICY,
    NETWORK_POLICY,
    Direction,
    IPBlock,
    Network,
    Peer,
    PodPeer,
    Policy,
    PortSpec,
    Protocol,
    Requirement,
    Rule,
    Selector,
    namespace_selector,
    too_many_pairs,
)
from . import dsl_syntax as syn
from .dsl_parser import error_at, read_document
from .positions import FieldPath, show
from .validate import (
    cidr_problem,
    dns_label_problem,
    dns_subdomain_problem,
    except_problem,
    label_value_problem,
    mapped_problem,
    port_name_problem,
)
from .validate import qualified_name_problem as label_key_problem

PortValue = tuple[int | str, int | None]
_PROTOCOLS: Mapping[str, Protocol] = {"tcp": "TCP", "udp": "UDP", "sctp": "SCTP"}
_NUMBER = re.compile(r"[0-9]+")
_RANGE = re.compile(r"([0-9]+)-([0-9]+)")


# (kind, namespace, name) -> ("spec", direction, rule index) -> "file:line:column" of the rule
RulePlaces = dict[tuple[str, str, str], dict[FieldPath, str]]


def parse(text: str, file: str, rule_places: RulePlaces | None = None) -> list[Policy]:
    """The policies of one ``.npc`` file, in file order; ``InputError`` for any mistake.
    ``rule_places`` (when given) is filled with where each rule is written."""
    return policies_from_document(read_document(text, file), text, file, rule_places)


def policies_from_document(
    document: syn.Document, text: str, file: str, rule_places: RulePlaces | None = None
) -> list[Policy]:
    """Meaning of a parsed document; ``text`` and ``file`` only serve messages and places."""
    return _Meaning(text, file, rule_places).document(document)


class _Meaning:
    def __init__(self, text: str, file: str, rule_places: RulePlaces | None = None) -> None:
        self.text = text
        self.file = file
        self.rule_places = rule_places
        self.selectors: dict[str, tuple[Requirement, ...]] = {}
        self.port_sets: dict[str, tuple[PortValue, ...]] = {}
        self.defined: dict[str, syn.Word] = {}
        self.declared: dict[str, syn.Word] = {}
        self.expanded = 0  # values macros have stood for so far: a chain of them grows as its square

    def fail(self, word: syn.Word, message: str) -> InputError:
        return error_at(self.text, self.file, word.line, word.column, message)

    def document(self, document: syn.Document) -> list[Policy]:
        for item in document.items:
            if isinstance(item, syn.MacroDecl):
                self.declared.setdefault(item.name.text, item.name)
        policies: list[Policy] = []
        # (kind, namespace, name): a NetworkPolicy and a MultiNetworkPolicy may share a name
        seen: dict[tuple[str, str, str], syn.Word] = {}
        for item in document.items:
            if isinstance(item, syn.MacroDecl):
                self.macro(item)
                continue
            policy = self.policy(item)
            first = seen.setdefault((policy.kind, policy.namespace, policy.name), item.name)
            if first is not item.name:
                raise self.fail(
                    item.name, f"policy {show(item.name.text)} is already defined at line {first.line}"
                )
            policies.append(policy)
        return policies

    # --- macros ---------------------------------------------------------------------------

    def macro(self, decl: syn.MacroDecl) -> None:
        name = decl.name.text
        if name in self.defined:
            raise self.fail(decl.name, f"macro ${name} is already defined at line {self.defined[name].line}")
        if isinstance(decl.value, syn.PortSet):
            values = (v for item in decl.value.items for v in self.port_values(item))
            self.port_sets[name] = tuple(dict.fromkeys(values))
        else:
            self.selectors[name] = self.requirements(decl.value)
        self.defined[name] = decl.name

    def lookup(self, ref: syn.MacroRef, kind: str) -> tuple[Requirement, ...] | tuple[PortValue, ...]:
        name = ref.name.text
        table: Mapping[str, tuple[Requirement, ...] | tuple[PortValue, ...]]
        table, other, other_kind = (
            (self.selectors, self.port_sets, "port set")
            if kind == "selector"
            else (self.port_sets, self.selectors, "selector")
        )
        if name in table:
            found = table[name]
            # values, as YAML counts them: a selector's requirement of 5,000 values is 5,000
            self.expanded += sum(max(1, len(r.values)) if isinstance(r, Requirement) else 1 for r in found)
            if self.expanded > MAX_EXPANSION:
                raise self.fail(
                    ref.name,
                    f"macros expand to more than {MAX_EXPANSION:,} values in this file (the bound on YAML "
                    "aliases): use or nest them less",
                )
            return found
        if name in other:
            raise self.fail(ref.name, f"${name} is a {other_kind}, but a {kind} is expected here")
        if name in self.declared:
            line = self.declared[name].line
            raise self.fail(
                ref.name, f"${name} is used before its definition at line {line}: define macros first"
            )
        close = difflib.get_close_matches(name, list(table), n=1)
        hint = f" (did you mean ${close[0]}?)" if close else ""
        raise self.fail(ref.name, f"undefined macro ${name}{hint}")

    # --- selectors ------------------------------------------------------------------------

    def requirements(self, selector: syn.Selector) -> tuple[Requirement, ...]:
        out: list[Requirement] = []
        for term in selector.terms:
            if isinstance(term, syn.MacroRef):
                out.extend(r for r in self.lookup(term, "selector") if isinstance(r, Requirement))
            else:
                out.append(self.requirement(term))
        # a repeated requirement means nothing more: dropping it keeps `$b = $a && $a` as small as $a
        return tuple(dict.fromkeys(out))

    def selector(self, selector: syn.Selector) -> Selector:
        return Selector(self.requirements(selector))

    def requirement(self, req: syn.Requirement) -> Requirement:
        problem = label_key_problem(req.key.text)
        if problem:
            raise self.fail(req.key, f"invalid label key {show(req.key.text)}: {problem}")
        for value in req.values:
            problem = label_value_problem(value.text)
            if problem:
                raise self.fail(value, f"invalid label value {show(value.text)}: {problem}")
        return Requirement(req.key.text, req.op, tuple(v.text for v in req.values))

    # --- ports ----------------------------------------------------------------------------

    def port_values(self, item: syn.PortItem) -> tuple[PortValue, ...]:
        if isinstance(item, syn.MacroRef):
            return tuple(v for v in self.lookup(item, "port set") if isinstance(v, tuple))
        return (self.port_value(item),)

    def port_value(self, word: syn.Word) -> PortValue:
        text = word.text
        if _NUMBER.fullmatch(text):
            return self.number(word, text), None
        found = _RANGE.fullmatch(text)
        if found:
            start, end = self.number(word, found[1]), self.number(word, found[2])
            if end < start:
                raise self.fail(word, f"port range {text} ends below its start")
            return start, None if end == start else end
        problem = port_name_problem(text)
        if problem:
            raise self.fail(
                word,
                f"invalid port {show(text)}: not a number, a range like 8000-8080, "
                f"or a port name (a port name {problem})",
            )
        return text, None

    def number(self, word: syn.Word, text: str) -> int:
        if len(text) > 5 and text.lstrip("0")[5:]:  # never converts a number of any length
            raise self.fail(word, f"port {show(text)} is out of range: ports are 1 to 65535")
        value = int(text)
        if not 1 <= value <= 65535:
            raise self.fail(word, f"port {value} is out of range: ports are 1 to 65535")
        if text != str(value):
            raise self.fail(word, f"write port {text} without leading zeros, as {value}")
        return value

    def ports(self, clauses: tuple[syn.PortClause, ...]) -> list[PortSpec]:
        out: list[PortSpec] = []
        for clause in clauses:
            protocol = _PROTOCOLS[clause.protocol.text]
            if not clause.ports:
                out.append(PortSpec(protocol))
            for item in clause.ports:
                out.extend(PortSpec(protocol, port, end) for port, end in self.port_values(item))
        return out

    # --- peers ----------------------------------------------------------------------------

    def network(self, word: syn.Word) -> Network:
        text = word.text
        if "/" not in text:
            try:
                address = ipaddress.ip_address(text)
            except ValueError:
                raise self.fail(word, f"invalid address block {show(text)}: not an IP address") from None
            raise self.fail(
                word,
                f"address block {show(text)} needs a prefix length, like {address}/{address.max_prefixlen}",
            )
        try:
            network = ipaddress.ip_network(text, strict=True)
        except ValueError as exc:
            try:
                network = ipaddress.ip_network(text, strict=False)
            except ValueError:
                raise self.fail(
                    word, f"invalid address block {show(text)}: {cidr_problem(text, exc)}"
                ) from None
            raise self.fail(
                word, f"address block {show(text)} has host bits set: did you mean {network}?"
            ) from None
        if (problem := mapped_problem(network)) is not None:
            raise self.fail(word, f"address block {show(text)}: {problem}")
        return network

    def block(self, peer: syn.BlockPeer) -> IPBlock:
        network = self.network(peer.cidr)
        excepts = []
        for word in peer.excepts:
            excluded = self.network(word)
            if (problem := except_problem(excluded, network)) is not None:
                raise self.fail(word, f"except {excluded} {problem} {network}")
            excepts.append(excluded)
        return IPBlock(network, tuple(excepts))

    def peer(self, peer: syn.Peer, namespace: str) -> Peer:
        if isinstance(peer, syn.BlockPeer):
            return self.block(peer)
        pods = self.selector(peer.pods) if peer.pods is not None else Selector()
        if peer.namespaces is None:
            return PodPeer(namespace_selector(namespace), pods)
        return PodPeer(self.selector(peer.namespaces), pods)

    # --- policies -------------------------------------------------------------------------

    def qualified_name(self, word: syn.Word, what: str, default_namespace: str | None) -> tuple[str, str]:
        """``namespace/name`` (or ``name`` in ``default_namespace``), both parts checked."""
        namespace, slash, name = word.text.rpartition("/")
        if not slash:
            if default_namespace is None:
                raise self.fail(word, f"a {what} is named namespace/name, like default/{word.text}")
            namespace = default_namespace
        elif (problem := dns_label_problem(namespace)) is not None:
            raise self.fail(
                word, f"invalid namespace {show(namespace)} in {what} {show(word.text)}: {problem}"
            )
        problem = dns_subdomain_problem(name)
        if problem:
            at = syn.Word(name, word.line, word.column + len(word.text) - len(name))
            raise self.fail(at, f"invalid {what} name {show(name)}: {problem}")
        return namespace, name

    def policy(self, decl: syn.PolicyDecl) -> Policy:
        namespace, name = self.qualified_name(decl.name, "policy", None)
        networks = ["/".join(self.qualified_name(w, "network", namespace)) for w in decl.networks]
        pod_selector = self.selector(decl.selector)
        rules: dict[Direction, list[Rule]] = {"ingress": [], "egress": []}
        allowed: dict[Direction, syn.Word] = {}
        isolated: dict[Direction, syn.Word] = {}
        places: dict[FieldPath, str] = {}
        said: dict[Direction, list[syn.Word]] = {"ingress": [], "egress": []}  # each rule's `allow`
        for statement in decl.statements:
            direction = statement.direction
            if isinstance(statement, syn.Isolate):
                if direction in isolated:
                    line = isolated[direction].line
                    raise self.fail(
                        statement.keyword, f"`isolate {direction}` is already said at line {line}"
                    )
                isolated[direction] = statement.keyword
                continue
            allowed.setdefault(direction, statement.keyword)
            peers = None if statement.peers is None else [self.peer(p, namespace) for p in statement.peers]
            at: FieldPath = ("spec", direction, len(rules[direction]))
            places[at] = f"{self.file}:{statement.keyword.line}:{statement.keyword.column}"
            rules[direction].append(Rule(peers, self.ports(statement.ports)))
            said[direction].append(statement.keyword)
        if (found := too_many_pairs([*rules["ingress"], *rules["egress"]])) is not None:
            raise self.fail([*said["ingress"], *said["egress"]][found[0]], found[1])
        for direction, word in isolated.items():
            if direction in allowed:
                line = allowed[direction].line
                raise self.fail(
                    word, f"`isolate {direction}` is implied by the `allow {direction}` rule at line {line}"
                )
        if not allowed and not isolated:
            raise self.fail(
                decl.name,
                f"policy {show(decl.name.text)} governs neither ingress nor egress: "
                "add `allow ingress ...`, `allow egress ...` or `isolate ingress`",
            )

        def governed(direction: Direction) -> tuple[Rule, ...] | None:
            return tuple(rules[direction]) if direction in allowed or direction in isolated else None

        kind = MULTI_NETWORK_POLICY if networks else NETWORK_POLICY
        if self.rule_places is not None:
            self.rule_places[kind, namespace, name] = places
        return Policy(
            namespace=namespace,
            name=name,
            pod_selector=pod_selector,
            ingress=governed("ingress"),
            egress=governed("egress"),
            kind=kind,
            policy_for=tuple(networks),
            source=f"{self.file}:{decl.name.line}:{decl.name.column}",
        )
