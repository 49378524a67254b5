"""Every regex terminal of the grammar has words for error messages (never ``__ANON_3``)."""

from __future__ import annotations

from lark.lexer import PatternStr
from npc.frontends.dsl_parser import TERMINAL_WORDS, parser


def test_every_regex_terminal_has_words() -> None:
    ignored = set(parser().ignore_tokens)  # whitespace and comments: never expected
    regex_terminals = {
        t.name for t in parser().terminals if not isinstance(t.pattern, PatternStr) and t.name not in ignored
    }
    missing = regex_terminals - set(TERMINAL_WORDS)
    assert regex_terminals, "the grammar has no regex terminals?"
    assert not missing, f"terminals without words for error messages: {sorted(missing)}"


def test_no_words_for_terminals_that_do_not_exist() -> None:
    names = {t.name for t in parser().terminals} | {"$END"}  # $END: lark's end of input
    assert set(TERMINAL_WORDS) <= names
