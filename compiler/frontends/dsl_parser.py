"""``.npc`` text to its syntax (``dsl_syntax``), with syntax errors a person can act on.

lark parses with LALR(1) and the contextual lexer; this module turns its tree into the syntax
classes and its exceptions into ``InputError``: ``file:line:column``, the line with a caret,
and what was expected in words (never a terminal name like ``__ANON_3``).
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Iterable

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken
from lark.lexer import PatternStr

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


def read_document(text: str, file: str) -> Document:
    """Parse ``text`` (the contents of ``file``) into its syntax; raises ``InputError``."""
    comments: list[Token] = []
    reset = _comments.set(comments)
    try:
        tree = parser().parse(text)
    except UnexpectedInput as exc:
        raise _syntax_error(exc, text, file) from None
    finally:
        _comments.reset(reset)
    builder = _Builder(text, file)
    items = tuple(builder.item(child) for child in tree.children if isinstance(child, Tree))
    notes = tuple(Comment(_line(c), c.value.rstrip()) for c in comments)
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
    if joins_terms and found in (",", "and", "&", "AND"):
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


def _word(token: object) -> Word:
    assert isinstance(token, Token)
    return Word(str(token.value), _line(token), _column(token))


def _span(tree: Tree[Token]) -> Span:
    meta = tree.meta
    return Span(getattr(meta, "line", 0), getattr(meta, "end_line", 0))


def _trees(tree: Tree[Token]) -> list[Tree[Token]]:
    return [c for c in tree.children if isinstance(c, Tree)]


def _tokens(tree: Tree[Token]) -> list[Token]:
    return [c for c in tree.children if isinstance(c, Token)]


_OPERATORS = {"equals": "In", "not_equals": "NotIn", "in_set": "In", "not_in_set": "NotIn"}


class _Builder:
    """Walks the parse tree; the only error left for it is a label key standing alone."""

    def __init__(self, text: str, file: str) -> None:
        self.text = text
        self.file = file

    def item(self, tree: Tree[Token]) -> Item:
        if tree.data == "macro":
            name, value = tree.children
            assert isinstance(value, Tree)
            body = PortSet(self.port_items(value)) if value.data == "port_set" else self.selector(value)
            return MacroDecl(_word(name), body, _span(tree))
        return self.policy(tree)

    def policy(self, tree: Tree[Token]) -> PolicyDecl:
        name = _word(tree.children[0])
        networks: tuple[Word, ...] = ()
        selector, select_span = Selector(), Span()
        statements: list[Statement] = []
        for child in _trees(tree):
            if child.data == "networks":
                networks = tuple(_word(t) for t in child.children)
            elif child.data == "select":
                selector, select_span = self.selector(_trees(child)[0]), _span(child)
            else:
                statements.append(self.statement(child))
        return PolicyDecl(name, selector, tuple(statements), networks, select_span, _span(tree))

    def statement(self, tree: Tree[Token]) -> Statement:
        direction_token = _tokens(tree)[0]
        direction: Direction = "ingress" if direction_token.type == "INGRESS" else "egress"
        keyword = Word(tree.data, getattr(tree.meta, "line", 0), getattr(tree.meta, "column", 0))
        if tree.data == "isolate":
            return Isolate(direction, keyword, _span(tree))
        peers: tuple[Peer, ...] | None = None
        ports: tuple[PortClause, ...] = ()
        for child in _trees(tree):
            if child.data == "peers":
                peers = tuple(self.peer(p) for p in _trees(child))
            else:
                ports = tuple(self.port_clause(c) for c in _trees(child))
        return Allow(direction, peers, ports, keyword, _span(tree))

    def peer(self, tree: Tree[Token]) -> Peer:
        if tree.data == "ip_block":
            cidr, *excepts = (_word(t) for t in tree.children)
            return BlockPeer(cidr, tuple(excepts))
        selectors = [self.selector(c) for c in _trees(tree)]
        if tree.data == "namespaces":
            return PodsPeer(None, selectors[0])
        return PodsPeer(selectors[0], selectors[1] if len(selectors) > 1 else None)

    def port_clause(self, tree: Tree[Token]) -> PortClause:
        protocol, *rest = tree.children
        items: tuple[PortItem, ...] = ()
        if rest:
            value = rest[0]
            items = self.port_items(value) if isinstance(value, Tree) else (self.port_item(value),)
        return PortClause(_word(protocol), items)

    def port_items(self, tree: Tree[Token]) -> tuple[PortItem, ...]:
        return tuple(self.port_item(t) for t in tree.children)

    def port_item(self, token: object) -> PortItem:
        word = _word(token)
        if word.text.startswith("$"):
            return MacroRef(Word(word.text[1:], word.line, word.column))
        return word

    def selector(self, tree: Tree[Token]) -> Selector:
        if tree.data == "bare_key":
            key = _word(tree.children[0])
            if key.text == "all":
                return Selector()
            raise error_at(
                self.text,
                self.file,
                key.line,
                key.column,
                f"label key `{printable(key.text)}` alone is not a requirement: write "
                f"`has({printable(key.text)})`, `{printable(key.text)} == '...'`, or `all` for every object "
                f"(a macro is used as `${printable(key.text)}`; a port set is written in braces)",
            )
        return Selector(tuple(self.term(c) for c in tree.children))

    def term(self, node: object) -> Term:
        if isinstance(node, Token):
            word = _word(node)
            return MacroRef(Word(word.text[1:], word.line, word.column))
        assert isinstance(node, Tree)
        if node.data in ("has", "not_has"):
            key = _word(node.children[1])
            return Requirement(key, "Exists" if node.data == "has" else "DoesNotExist")
        key = _word(node.children[0])
        value = node.children[1]
        raw = [_word(t) for t in value.children] if isinstance(value, Tree) else [_word(value)]
        values = tuple(Word(w.text[1:-1], w.line, w.column) for w in raw)
        return Requirement(key, "In" if _OPERATORS[node.data] == "In" else "NotIn", values)
