"""A ``.npc`` file as it was written: macros, policies, statements, comments, with positions.

This sits between the lark parse tree and the IR so that two things can share it: the
frontend (which expands macros and checks meaning) and the formatter (which must keep the
macros, the order and the comments a person wrote). ``dsl_writer`` builds the same classes
from the IR, so there is one printer for ``npc fmt`` and ``npc convert --to dsl``.
Positions are 1-based; 0 means "made, not parsed".
"""

from __future__ import annotations

import attrs

from ..ir import Direction, Operator


@attrs.frozen
class Word:
    """One token's text (label values without their quotes) and where it starts."""

    text: str
    line: int = 0
    column: int = 0


@attrs.frozen
class Span:
    """The lines a construct covers, for placing comments and blank lines when formatting."""

    line: int = 0
    end_line: int = 0


@attrs.frozen
class MacroRef:
    """``$name``; ``name.text`` is without the ``$``, its position is the ``$``'s."""

    name: Word


@attrs.frozen
class Requirement:
    key: Word
    op: Operator
    values: tuple[Word, ...] = ()


Term = Requirement | MacroRef


@attrs.frozen
class Selector:
    """The AND of its terms; no term is ``all``."""

    terms: tuple[Term, ...] = ()


@attrs.frozen
class PodsPeer:
    """``pods(...)``, ``namespaces(...)`` or ``pods(...) in namespaces(...)``: at least one is set."""

    pods: Selector | None = None
    namespaces: Selector | None = None


@attrs.frozen
class BlockPeer:
    """An address block, minus its ``except`` blocks."""

    cidr: Word
    excepts: tuple[Word, ...] = ()


Peer = PodsPeer | BlockPeer
PortItem = Word | MacroRef


@attrs.frozen
class PortClause:
    """``tcp`` (every port) or ``tcp port ...``."""

    protocol: Word
    ports: tuple[PortItem, ...] = ()


@attrs.frozen
class PortSet:
    items: tuple[PortItem, ...]


@attrs.frozen
class Allow:
    """One rule: ``peers`` None is every peer, ``ports`` empty is every port."""

    direction: Direction
    peers: tuple[Peer, ...] | None = None
    ports: tuple[PortClause, ...] = ()
    keyword: Word = Word("allow")
    span: Span = Span()


@attrs.frozen
class Isolate:
    """The policy governs ``direction`` even though it allows nothing there."""

    direction: Direction
    keyword: Word = Word("isolate")
    span: Span = Span()


Statement = Allow | Isolate


@attrs.frozen
class PolicyDecl:
    name: Word
    selector: Selector
    statements: tuple[Statement, ...] = ()
    networks: tuple[Word, ...] = ()
    select_span: Span = Span()
    span: Span = Span()


@attrs.frozen
class MacroDecl:
    name: Word
    value: Selector | PortSet
    span: Span = Span()


Item = MacroDecl | PolicyDecl


@attrs.frozen
class Comment:
    line: int
    text: str


@attrs.frozen
class Document:
    items: tuple[Item, ...] = ()
    comments: tuple[Comment, ...] = ()
