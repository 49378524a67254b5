"""``.npc`` text to its syntax (``dsl_syntax``), with syntax errors a person can act on.

lark parses with LALR(1) and the contextual lexer; this module turns its tree into the syntax
classes and its exceptions into ``InputError``: ``file:line:column``, the line with a caret,
and what was expected in words (never a terminal name like ``__ANON_3``).
"""

from __future__ import annotations

import contextvars
import functools
import re
from collections.abc import Iterable

import attrs
from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken, VisitError
from lark.lexer import PatternStr
from lark.tree import Meta

from ..documents import position
from ..errors import InputError
from ..ir import Direction
from .dsl_syntax import (
    Allow,
    BlockPeer,
    Comment,
    Document,
    Isolate,
    Item,
    MacroDecl,
    MacroRef,
    Peer,
    PodsPeer,
    PolicyDecl,
    PortClause,
    PortItem,
    PortSet,
    Requirement,
    Selector,
    Span,
    Statement,
    Term,
    Word,
)
from .positions import printable, snippet

# What each regex terminal of grammar/npc.lark is, in words; literal terminals show themselves.
TERMINAL_WORDS = {
    "MACRO_NAME": "a macro name",
    "MACRO_REF": "a macro like $name",
    "OBJECT_REF": "a name like namespace/name",
    "LABEL_KEY": "a label key",
    "VALUE": "a quoted label value like 'web'",
    "CIDR": "an address block like 10.0.0.0/8",
    "PORT": "a port (number, range like 8000-8080, or name)",
    "PROTOCOL": "a protocol (tcp, udp or sctp)",
    "HAS": "`has(`",
    "$END": "the end of the file",
}

MAX_COMMENT_LINES = 1_000_000
_comments: contextvars.ContextVar[list[Token] | None] = contextvars.ContextVar(
    "npc_dsl_comments", default=None
)


def _keep_comment(token: Token) -> Token:
    """Comments are ignored by the grammar; ``read_document`` collects them for the formatter."""
    collected = _comments.get()
    if collected is not None:
        collected.append(token)
    return token


@functools.cache
def parser() -> Lark:
    return Lark.open_from_package(
        "npc.grammar",
        "npc.lark",
        parser="lalr",
        lexer="contextual",
        propagate_positions=True,
        lexer_callbacks={"COMMENT": _keep_comment},
    )


def error_at(text: str, file: str, line: int, column: int, message: str) -> InputError:
    """An ``InputError`` pointing at ``line:column`` of ``text``, with the caret snippet."""
    return InputError(message, file, line, column, "", snippet(text, line, column))


# Characters that would make a reader see other text than npc reads: a line break other than LF
# or CRLF ends a line for editors and ``str.splitlines`` but not a ``#`` comment (all after it
# would be commented out unseen), and bidirectional controls reorder what is shown (the "Trojan
# Source" attack; rustc refuses them in comments too).
_MISLEADING = re.compile("\r(?!\n)|[\x0b\x0c\x85\u2028\u2029\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _misleading(text: str, file: str) -> InputError | None:
    found = _MISLEADING.search(text)
    if found is None:
        return None
    at, char = found.start(), found.group()
    line, column = position(text, at)
    if char == "\r" or char in "\x0b\x0c\x85\u2028\u2029":
        what = (
            "a carriage return not followed by a line feed"
            if char == "\r"
            else f"the line break U+{ord(char):04X}"
        )
        why = "npc's lines end with LF or CRLF: after a `#`, npc reads as comment what an editor shows on a new line"
    else:
        what, why = (
            f"the bidirectional control U+{ord(char):04X}",
            "it shows text in another order than npc reads it",
        )
    return error_at(text, file, line, column, f"{what}: {why}")


def read_document(text: str, file: str, comments_kept: bool = False) -> Document:
    """Parse ``text`` (the contents of ``file``) into its syntax; raises ``InputError``.
    ``comments_kept``: the comments too (the formatter's), else the document has none."""
    if (misleading := _misleading(text, file)) is not None:
        raise misleading
    comments: list[Token] = []
    reset = _comments.set(comments if comments_kept else None)
    try:
        tree = parser().parse(text)
    except UnexpectedInput as exc:
        raise _syntax_error(exc, text, file) from None
    finally:
        _comments.reset(reset)
    try:
        items = _Builder(text, file).transform(tree)
    except VisitError as exc:
        if isinstance(exc.orig_exc, InputError):
            raise exc.orig_exc from None
        raise
    lines = 0
    for c in comments:  # the formatter keeps an object per comment line: bounded, as compile's memory is
        lines += c.value.count("\n") + 1
        if lines > MAX_COMMENT_LINES:
            raise error_at(
                text,
                file,
                _line(c),
                _column(c),
                f"more than {MAX_COMMENT_LINES:,} comment lines: too many to format",
            )
    notes = tuple(
        Comment(_line(c) + i, part.strip()) for c in comments for i, part in enumerate(c.value.split("\n"))
    )
    return Document(items, notes)


# --- syntax errors --------------------------------------------------------------------------


def _words(names: Iterable[str]) -> str:
    words: list[str] = []
    for name in set(names):
        if name in TERMINAL_WORDS:
            words.append(TERMINAL_WORDS[name])
            continue
        try:
            pattern = parser().get_terminal(name).pattern
        except KeyError:
            continue
        words.append(f"`{pattern.value}`" if isinstance(pattern, PatternStr) else name.lower())
    words.sort(key=lambda w: (not w.startswith("`"), w))
    if len(words) <= 1:
        return "".join(words) or "nothing more"
    return ", ".join(words[:-1]) + " or " + words[-1]


def _hint(found: str, expected: set[str]) -> str:
    """A pointer for the mistakes people coming from other syntaxes make."""
    joins_terms = any(_literal(n) == "&&" for n in expected)
    if found in ("|", "||") or (found == "or" and "RPAR" in expected):
        return (
            "a selector has no OR: write alternatives as separate peers joined by `or`, "
            "like pods(app == 'a') or pods(app == 'b')"
        )
    if found in ("and", "&", "AND") or (joins_terms and found == ","):  # the parser has reduced the selector
        return "requirements in a selector are joined with `&&`"
    if found in ("from", "to") and expected & {"FROM", "TO"}:
        return "ingress rules take peers `from`, egress rules `to`"
    if found == "=" and any(_literal(n) == "==" for n in expected):
        return "compare with `==`"
    if found.upper() in ("TCP", "UDP", "SCTP") and "PROTOCOL" in expected:
        return "protocols are written in lowercase"
    return ""


def _literal(name: str) -> str | None:
    try:
        pattern = parser().get_terminal(name).pattern
    except KeyError:
        return None
    return pattern.value if isinstance(pattern, PatternStr) else None


def _accepted_before(text: str) -> set[str]:
    """Terminals the parser takes where the lexer gave up (the lexer's own list is too wide)."""
    interactive = parser().parse_interactive(text)
    try:
        for _ in interactive.iter_parse():
            pass
    except UnexpectedInput:
        return set(interactive.accepts())
    return set()


def _syntax_error(exc: UnexpectedInput, text: str, file: str) -> InputError:
    if isinstance(exc, UnexpectedToken):
        token = exc.token
        expected = set(exc.accepts or exc.expected)
        if token.type == "$END":
            found_text, found = "", "end of file"
        else:
            found_text = str(token.value)
            found = f"`{printable(found_text[:40])}`"
        line, column = _line(token), _column(token)
    elif isinstance(exc, UnexpectedCharacters):
        expected = _accepted_before(text) or set(exc.allowed or ())
        position = exc.pos_in_stream or 0
        found_text = text[position] if position < len(text) else ""
        found = f"character `{printable(found_text)}`"
        line, column = exc.line, exc.column
    else:  # pragma: no cover - LALR raises only the two above
        return error_at(text, file, exc.line, exc.column, "syntax error")
    expected.discard("COMMENT")
    message = f"unexpected {found}: expected {_words(expected)}"
    hint = _hint(found_text, expected)
    if hint:
        message += f" ({hint})"
    return error_at(text, file, line, column, message)


# --- tree to syntax -------------------------------------------------------------------------


def _line(token: Token) -> int:
    return token.line or 0


def _column(token: Token) -> int:
    return token.column or 0


def _span(meta: Meta) -> Span:
    return Span(getattr(meta, "line", 0), getattr(meta, "end_line", 0))


@attrs.frozen
class _Select:
    selector: Selector
    span: Span


@attrs.frozen
class _Ports:
    clauses: tuple[PortClause, ...]


@v_args(inline=True)
class _Builder(Transformer[Token, tuple[Item, ...]]):
    """One method per grammar rule and named terminal; the only error left is a label key alone."""

    def __init__(self, text: str, file: str) -> None:
        super().__init__()
        self.text = text
        self.file = file

    # terminals: a word where it starts; quotes and `$` are syntax, not text

    def __default_token__(self, token: Token) -> Word:
        return Word(str(token.value), _line(token), _column(token))

    def VALUE(self, token: Token) -> Word:
        return Word(str(token.value)[1:-1], _line(token), _column(token))

    def MACRO_REF(self, token: Token) -> MacroRef:
        return MacroRef(Word(str(token.value)[1:], _line(token), _column(token)))

    def INGRESS(self, token: Token) -> Direction:
        return "ingress"

    def EGRESS(self, token: Token) -> Direction:
        return "egress"

    # rules

    def start(self, *items: Item) -> tuple[Item, ...]:
        return items

    @v_args(inline=True, meta=True)
    def macro(self, meta: Meta, name: Word, value: Selector | PortSet) -> MacroDecl:
        return MacroDecl(name, value, _span(meta))

    @v_args(inline=True, meta=True)
    def policy(self, meta: Meta, name: Word, *parts: tuple[Word, ...] | _Select | Statement) -> PolicyDecl:
        networks: tuple[Word, ...] = ()
        select = _Select(Selector(), Span())
        statements: list[Statement] = []
        for part in parts:
            if isinstance(part, tuple):
                networks = part
            elif isinstance(part, _Select):
                select = part
            else:
                statements.append(part)
        return PolicyDecl(name, select.selector, tuple(statements), networks, select.span, _span(meta))

    def networks(self, *names: Word) -> tuple[Word, ...]:
        return names

    @v_args(inline=True, meta=True)
    def select(self, meta: Meta, selector: Selector) -> _Select:
        return _Select(selector, _span(meta))

    @v_args(inline=True, meta=True)
    def allow(self, meta: Meta, direction: Direction, *parts: tuple[Peer, ...] | _Ports) -> Allow:
        peers: tuple[Peer, ...] | None = None
        ports: tuple[PortClause, ...] = ()
        for part in parts:
            if isinstance(part, _Ports):
                ports = part.clauses
            else:
                peers = part
        return Allow(direction, peers, ports, _keyword("allow", meta), _span(meta))

    @v_args(inline=True, meta=True)
    def isolate(self, meta: Meta, direction: Direction) -> Isolate:
        return Isolate(direction, _keyword("isolate", meta), _span(meta))

    def peers(self, *peers: Peer) -> tuple[Peer, ...]:
        return peers

    def pods(self, pods: Selector, namespaces: Selector | None = None) -> PodsPeer:
        return PodsPeer(pods, namespaces)

    def namespaces(self, namespaces: Selector) -> PodsPeer:
        return PodsPeer(None, namespaces)

    def ip_block(self, cidr: Word, *excepts: Word) -> BlockPeer:
        return BlockPeer(cidr, excepts)

    def ports(self, *clauses: PortClause) -> _Ports:
        return _Ports(clauses)

    def port_clause(self, protocol: Word, value: PortItem | PortSet | None = None) -> PortClause:
        if value is None:
            return PortClause(protocol)
        return PortClause(protocol, value.items if isinstance(value, PortSet) else (value,))

    def port_set(self, *items: PortItem) -> PortSet:
        return PortSet(items)

    def selector(self, *terms: Term) -> Selector:
        return Selector(terms)

    def bare_key(self, key: Word) -> Selector:
        if key.text == "all":
            return Selector()
        shown = printable(key.text)
        raise error_at(
            self.text,
            self.file,
            key.line,
            key.column,
            f"label key `{shown}` alone is not a requirement: write "
            f"`has({shown})`, `{shown} == '...'`, or `all` for every object "
            f"(a macro is used as `${shown}`; a port set is written in braces)",
        )

    def equals(self, key: Word, value: Word) -> Requirement:
        return Requirement(key, "In", (value,))

    def not_equals(self, key: Word, value: Word) -> Requirement:
        return Requirement(key, "NotIn", (value,))

    def in_set(self, key: Word, values: tuple[Word, ...]) -> Requirement:
        return Requirement(key, "In", values)

    def not_in_set(self, key: Word, values: tuple[Word, ...]) -> Requirement:
        return Requirement(key, "NotIn", values)

    def has(self, _has: Word, key: Word) -> Requirement:
        return Requirement(key, "Exists")

    def not_has(self, _has: Word, key: Word) -> Requirement:
        return Requirement(key, "DoesNotExist")

    def value_set(self, *values: Word) -> tuple[Word, ...]:
        return values


def _keyword(text: str, meta: Meta) -> Word:
    return Word(text, getattr(meta, "line", 0), getattr(meta, "column", 0))
