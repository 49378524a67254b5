"""Canonical npc language text: from a parsed document (``npc fmt``) or from IR policies (``convert``).

One printer serves both, so a converted policy looks exactly like a formatted hand-written one.
Canonical means: four-space indents, one statement per line, single-quoted values, ``==``/``!=``
for one value and braces only for two or more, a blank line around each policy, at most one
blank line kept where the author left some, comments kept next to what they were next to.
A rule longer than ``WIDTH`` puts each peer on its own ``from``/``or`` line.
"""

from __future__ import annotations

import functools
import itertools
import sys
from collections.abc import Callable, Iterable, Sequence

import attrs

from .errors import InputError
from .frontends import dsl_syntax as syn
from .frontends.k8s import MULTI_NETWORK_POLICY, NETWORK_POLICY
from .frontends.positions import show
from .ir import Direction, IPBlock, Peer, Policy, PortSpec, Rule, Selector, namespace_selector

WIDTH = 100
INDENT = "    "


def write_dsl(policies: Iterable[Policy]) -> str:
    """IR policies as one ``.npc`` text; ``InputError`` for a policy the language cannot say."""
    return render(document_from_policies(policies))


def render(document: syn.Document) -> str:
    lines = _Printer(document.comments).top(document.items)
    return "\n".join(lines) + "\n" if lines else ""


# --- IR to syntax -----------------------------------------------------------------------------


def document_from_policies(policies: Iterable[Policy]) -> syn.Document:
    return syn.Document(tuple(policy_syntax(p) for p in policies))


def _cannot(policy: Policy, why: str) -> InputError:
    name = show(f"{policy.namespace}/{policy.name}")
    return InputError(
        f"{policy.kind} {name} cannot be written in the npc language: {why}",
        policy.source or "<input>",
        policy=(policy.kind, policy.namespace, policy.name),
    )


def policy_syntax(policy: Policy) -> syn.PolicyDecl:
    if policy.kind not in (NETWORK_POLICY, MULTI_NETWORK_POLICY):
        raise _cannot(policy, "only NetworkPolicy and MultiNetworkPolicy have a form there")
    if (policy.kind == MULTI_NETWORK_POLICY) != bool(policy.policy_for):
        raise _cannot(
            policy,
            "a policy names networks exactly when it is a MultiNetworkPolicy "
            "(k8s.v1.cni.cncf.io/policy-for missing or misplaced)",
        )
    if policy.ingress is None and policy.egress is None:
        raise _cannot(policy, "it governs neither ingress nor egress")
    statements: list[syn.Statement] = []
    directions: tuple[tuple[Direction, tuple[Rule, ...] | None], ...] = (
        ("ingress", policy.ingress),
        ("egress", policy.egress),
    )
    for direction, rules in directions:
        if rules == ():
            statements.append(syn.Isolate(direction))
        for rule in rules or ():
            statements.append(_allow(policy, direction, rule))
    return syn.PolicyDecl(
        name=syn.Word(f"{policy.namespace}/{policy.name}"),
        selector=_selector(policy.pod_selector),
        statements=tuple(statements),
        networks=tuple(syn.Word(n) for n in policy.policy_for),
    )


def _allow(policy: Policy, direction: Direction, rule: Rule) -> syn.Allow:
    if rule.peers == ():
        raise _cannot(policy, f"an {direction} rule allows no peer at all (an empty peer list)")
    peers = None if rule.peers is None else tuple(_peer(policy, p) for p in rule.peers)
    clauses: list[syn.PortClause] = []
    for protocol, group in itertools.groupby(rule.ports, key=lambda s: s.protocol):
        specs = list(group)
        word = syn.Word(protocol.lower())
        if any(s.port is None for s in specs):
            clauses.append(syn.PortClause(word))
        items = tuple(syn.Word(_port_text(s)) for s in specs if s.port is not None)
        if items:
            clauses.append(syn.PortClause(word, items))
    return syn.Allow(direction, peers, tuple(clauses))


def _port_text(spec: PortSpec) -> str:
    return f"{spec.port}-{spec.end_port}" if spec.end_port is not None else str(spec.port)


def _peer(policy: Policy, peer: Peer) -> syn.Peer:
    if isinstance(peer, IPBlock):
        return syn.BlockPeer(syn.Word(str(peer.cidr)), tuple(syn.Word(str(e)) for e in peer.excepts))
    if peer.namespaces == namespace_selector(policy.namespace):
        return syn.PodsPeer(pods=_selector(peer.pods))
    if peer.pods.is_all:
        return syn.PodsPeer(namespaces=_selector(peer.namespaces))
    return syn.PodsPeer(_selector(peer.pods), _selector(peer.namespaces))


def _selector(selector: Selector) -> syn.Selector:
    return syn.Selector(
        tuple(
            syn.Requirement(syn.Word(r.key), r.op, tuple(syn.Word(v) for v in r.values))
            for r in selector.requirements
        )
    )


# --- syntax to text ---------------------------------------------------------------------------


def _values(values: Sequence[syn.Word]) -> str:
    return "{ " + ", ".join(f"'{v.text}'" for v in values) + " }"


def _term(term: syn.Term) -> str:
    if isinstance(term, syn.MacroRef):
        return f"${term.name.text}"
    key, values = term.key.text, term.values
    if term.op == "Exists":
        return f"has({key})"
    if term.op == "DoesNotExist":
        return f"!has({key})"
    if len(values) == 1:
        return f"{key} {'==' if term.op == 'In' else '!='} '{values[0].text}'"
    return f"{key} {'in' if term.op == 'In' else 'not in'} {_values(values)}"


def selector_text(selector: syn.Selector) -> str:
    return " && ".join(_term(t) for t in selector.terms) or "all"


def _set(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else "{ " + ", ".join(items) + " }"


def _port_item(item: syn.PortItem) -> str:
    return f"${item.name.text}" if isinstance(item, syn.MacroRef) else item.text


def peer_text(peer: syn.Peer) -> str:
    if isinstance(peer, syn.BlockPeer):
        excepts = f" except {_set([e.text for e in peer.excepts])}" if peer.excepts else ""
        return peer.cidr.text + excepts
    if peer.pods is None:
        assert peer.namespaces is not None
        return f"namespaces({selector_text(peer.namespaces)})"
    within = f" in namespaces({selector_text(peer.namespaces)})" if peer.namespaces is not None else ""
    return f"pods({selector_text(peer.pods)}){within}"


def ports_text(clauses: Sequence[syn.PortClause]) -> str:
    return ", ".join(
        c.protocol.text + (f" port {_set([_port_item(i) for i in c.ports])}" if c.ports else "")
        for c in clauses
    )


def _allow_lines(statement: syn.Allow, indent: str) -> list[str]:
    head = f"allow {statement.direction}"
    word = "from" if statement.direction == "ingress" else "to"
    peers = [peer_text(p) for p in statement.peers or ()]
    ports = ports_text(statement.ports)
    line = head + (f" {word} " + " or ".join(peers) if peers else "") + (f" on {ports}" if ports else "")
    if len(indent) + len(line) <= WIDTH or (len(peers) <= 1 and not ports):
        return [indent + line]
    inner = indent + INDENT
    lines = [indent + head]
    lines += [inner + ("or " if i else f"{word} ") + p for i, p in enumerate(peers)]
    if ports:
        lines.append(inner + f"on {ports}")
    return lines


def _lines(indent: str, line: str) -> list[str]:
    return [indent + line]


def _macro_line(macro: syn.MacroDecl) -> str:
    value = macro.value
    if isinstance(value, syn.PortSet):
        return f"{macro.name.text} = {{ " + ", ".join(_port_item(i) for i in value.items) + " }"
    return f"{macro.name.text} = {selector_text(value)}"


@attrs.frozen
class _Entry:
    """Something printed in a block, with the source lines it came from (0: made, not parsed)."""

    line: int
    end_line: int
    lines: Callable[[], list[str]]
    nested: bool = False  # a policy: comments inside it belong to its own block


class _Printer:
    """Prints blocks, handing each comment out once, in source order, to where it belongs."""

    def __init__(self, comments: Iterable[syn.Comment]) -> None:
        self.comments = sorted(comments, key=lambda c: c.line)
        self.next = 0

    def _take_before(self, line: int) -> list[syn.Comment]:
        start = self.next
        while self.next < len(self.comments) and self.comments[self.next].line < line:
            self.next += 1
        return self.comments[start : self.next]

    def _take_on(self, line: int) -> syn.Comment | None:
        if self.next < len(self.comments) and self.comments[self.next].line == line:
            self.next += 1
            return self.comments[self.next - 1]
        return None

    def top(self, items: Sequence[syn.Item]) -> list[str]:
        entries = [
            _Entry(i.span.line, i.span.end_line, functools.partial(self._policy, i), nested=True)
            if isinstance(i, syn.PolicyDecl)
            else _Entry(i.span.line, i.span.end_line, functools.partial(_lines, "", _macro_line(i)))
            for i in items
        ]
        return self._block(entries, "", end_line=0, top=True)

    def _policy(self, policy: syn.PolicyDecl) -> list[str]:
        networks = " for " + ", ".join(n.text for n in policy.networks) if policy.networks else ""
        header = f"policy {policy.name.text}{networks} {{"
        span, select = policy.span, policy.select_span
        if span.line and span.line < span.end_line and select.line != span.line:
            header = self._with_comment(header, self._take_on(span.line))
        select_line = "select " + selector_text(policy.selector)
        entries = [_Entry(select.line, select.end_line, functools.partial(_lines, INDENT, select_line))]
        for statement in policy.statements:
            lines = (
                functools.partial(_allow_lines, statement, INDENT)
                if isinstance(statement, syn.Allow)
                else functools.partial(_lines, INDENT, f"isolate {statement.direction}")
            )
            entries.append(_Entry(statement.span.line, statement.span.end_line, lines))
        body = self._block(entries, INDENT, end_line=span.end_line, top=False)
        close = self._with_comment("}", self._take_on(span.end_line) if span.end_line else None)
        return [header, *body, close]

    @staticmethod
    def _with_comment(line: str, comment: syn.Comment | None) -> str:
        return f"{line}  {comment.text}" if comment else line

    def _block(self, entries: Sequence[_Entry], indent: str, *, end_line: int, top: bool) -> list[str]:
        out: list[str] = []
        previous_end = 0  # source line the last printed thing ended on
        previous_nested = False

        def blank(line: int, force: bool) -> None:
            if out and (force or (previous_end and line and line > previous_end + 1)):
                out.append("")

        for i, entry in enumerate(entries):
            leading = (
                self._take_before(entry.line if entry.nested else entry.end_line) if entry.end_line else []
            )
            first = min(leading[0].line, entry.line) if leading else entry.line
            blank(first, top and (entry.nested or previous_nested))
            for comment in leading:
                if comment is not leading[0]:
                    blank(comment.line, False)
                out.append(indent + comment.text)
                previous_end = comment.line
            if leading:
                blank(entry.line, False)
            lines = entry.lines()
            # a comment ending a line belongs to the last thing on that line
            next_line = entries[i + 1].line if i + 1 < len(entries) else end_line
            if entry.end_line and entry.end_line != next_line:
                lines[-1] = self._with_comment(lines[-1], self._take_on(entry.end_line))
            out.extend(lines)
            previous_end, previous_nested = entry.end_line, entry.nested
        trailing = self._take_before(end_line or sys.maxsize)
        for i, comment in enumerate(trailing):
            blank(comment.line, top and previous_nested and i == 0)
            out.append(indent + comment.text)
            previous_end = comment.line
        return out
