"""Field paths: how to name them in a message, and where they sit in the source text.

Validation works on plain parsed data and names a field by its path; only when an error is
reported is the text composed again (see ``documents.compose_document``) to turn the path into a
line and column. Everything shown to a user passes ``printable``: input never smuggles control
characters (terminal escapes, line breaks) into a message.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Sequence

import yaml

from ..documents import compose_document, mark_position, position
from ..errors import format_snippet


class MapKey(str):
    """A key of a free-form map (labels, annotations): written ``labels[app]`` in a field path."""

    __slots__ = ()


PathPart = str | int
FieldPath = tuple[PathPart, ...]

_MERGE_TAG = "tag:yaml.org,2002:merge"
_SHOW_LIMIT = 64


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _unprintable(char: str) -> bool:
    return char != " " and unicodedata.category(char)[0] in "CZ"


def printable(text: str) -> str:
    """``text`` with control, format and separator characters written as escapes."""
    if text.isprintable():
        return text
    return "".join(_escape(c) if _unprintable(c) else c for c in text)


def show(value: object) -> str:
    """A value as a message quotes it: JSON-like, escaped, long strings cut short."""
    if isinstance(value, str):
        cut = value if len(value) <= _SHOW_LIMIT else value[:_SHOW_LIMIT] + "..."
        return '"' + printable(cut.replace("\\", "\\\\").replace('"', '\\"')) + '"'
    if value is None or isinstance(value, bool | int | float):
        text = json.dumps(value)  # a number may have thousands of digits
        return text if len(text) <= _SHOW_LIMIT else text[:_SHOW_LIMIT] + "..."
    return printable(str(value))[:_SHOW_LIMIT]


def render_path(parts: Sequence[PathPart]) -> str:
    """``spec.ingress[0].ports[1].endPort``; map keys in brackets: ``metadata.labels[app]``."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, MapKey):
            out += f"[{printable(part)}]"
        else:
            out += ("." if out else "") + printable(str(part))
    return out


def _child(node: yaml.Node, part: PathPart) -> tuple[yaml.Node | None, yaml.Node] | None:
    """(key node, value node) of ``part`` under ``node``, following ``<<`` merges."""
    if isinstance(node, yaml.SequenceNode):
        if isinstance(part, int) and 0 <= part < len(node.value):
            return None, node.value[part]
        return None
    if not isinstance(node, yaml.MappingNode):
        return None
    merged: list[yaml.Node] = []
    for key, value in node.value:
        if key.tag == _MERGE_TAG:
            merged.extend(value.value if isinstance(value, yaml.SequenceNode) else [value])
        elif isinstance(key, yaml.ScalarNode) and key.value == str(part):
            return key, value
    for source in merged:
        found = _child(source, part)
        if found:
            return found
    return None


def locate(text: str, document: int, parts: Sequence[PathPart], *, at_key: bool = False) -> tuple[int, int]:
    """1-based (line, column) of the field ``parts`` in the ``document``-th document of ``text``.

    ``at_key`` points at the key rather than its value (for unknown fields and bad map keys).
    A missing field points at its parent's key, the nearest place that exists. (0, 0): unknown.
    JSON is walked with ``json``'s own scanner (a big kubectl dump in about a second); YAML, or
    text that only looks like JSON, is composed into nodes.
    """
    if document == 0 and text.lstrip().startswith(("{", "[")):
        try:
            offset = _json_offset(text, parts, at_key)
        except (ValueError, IndexError):
            pass
        else:
            return position(text, offset)
    node = compose_document(text, document)
    if node is None:
        return 0, 0
    mark: yaml.Mark = node.start_mark
    for i, part in enumerate(parts):
        found = _child(node, part)
        if found is None:
            break
        key, node = found
        last = i == len(parts) - 1
        mark = key.start_mark if key is not None and (at_key or not last) else node.start_mark
    return mark_position(text, mark)


_JSON = json.JSONDecoder()
_JSON_SPACE = re.compile(r"[ \t\n\r]*")


def _skip_space(text: str, pos: int) -> int:
    return _JSON_SPACE.match(text, pos).end()  # type: ignore[union-attr]  # always matches


def _json_offset(text: str, parts: Sequence[PathPart], at_key: bool) -> int:
    """Offset of ``parts`` in JSON text, as ``locate`` defines it; ValueError if not JSON."""
    pos = mark = _skip_space(text, 0)
    for i, part in enumerate(parts):
        found = _json_child(text, pos, part)
        if found is None:
            break
        key, pos = found
        last = i == len(parts) - 1
        mark = key if key is not None and (at_key or not last) else pos
    return mark


def _json_child(text: str, pos: int, part: PathPart) -> tuple[int | None, int] | None:
    """(key offset, value offset) of ``part`` in the array or object at ``pos``; others skipped."""
    opening = text[pos]
    if opening not in "[{" or (opening == "[") != isinstance(part, int):
        return None
    pos = _skip_space(text, pos + 1)
    index = 0
    while text[pos] not in "]}":
        key = None
        if opening == "{":
            key = pos
            name, pos = _JSON.raw_decode(text, pos)
            pos = _skip_space(text, pos)
            if text[pos] != ":":
                raise ValueError("not JSON")
            pos = _skip_space(text, pos + 1)
            if name == str(part):
                return key, pos
        elif index == part:
            return None, pos
        _, pos = _JSON.raw_decode(text, pos)
        pos = _skip_space(text, pos)
        if text[pos] == ",":
            pos = _skip_space(text, pos + 1)
        index += 1
    return None


_SNIPPET_WIDTH = 100


def snippet(text: str, line: int, column: int) -> str:
    """The offending line with a caret: long lines (minified JSON) cut to a window round the column,
    unsafe characters turned into ``?`` one for one so the caret still fits."""
    lines = text.split("\n")
    if not 1 <= line <= len(lines):
        return ""
    source = lines[line - 1].rstrip("\r")
    if len(source) > _SNIPPET_WIDTH:
        start = max(0, min(column - 1 - _SNIPPET_WIDTH // 2, len(source) - _SNIPPET_WIDTH))
        end = start + _SNIPPET_WIDTH
        head, tail = ("..." if start else ""), ("..." if end < len(source) else "")
        source, column = head + source[start:end] + tail, column - start + len(head)
    safe = "".join("?" if c != "\t" and _unprintable(c) else c for c in source)
    return format_snippet("\n" * (line - 1) + safe, line, column)
