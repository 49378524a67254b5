"""JSON and YAML text to documents, and back to YAML nodes when an error needs a position.

JSON goes through ``json`` (a 40 MB kubectl dump takes a second, not the forty PyYAML needs);
YAML through PyYAML's C loader. Loading never keeps positions: only the error path re-composes
the text into nodes (JSON is YAML for that purpose) to find a field's line and column.
"""

from __future__ import annotations

import json
import re
from collections.abc import Hashable, Iterator
from typing import Any

import yaml

from .errors import InputError

_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MERGE_TAG = "tag:yaml.org,2002:merge"
_NULL_TAG = "tag:yaml.org,2002:null"


class StrictLoader(_BaseLoader):  # type: ignore[misc, valid-type]
    """The C safe loader, refusing duplicate keys (YAML forbids them; kubectl's strict mode too)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # unhashable: the base class reports it
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"duplicate key {json.dumps(str(key))}",
                    key_node.start_mark,
                )
        result: dict[Hashable, Any] = super().construct_mapping(node, deep=deep)
        return result


class _DuplicateKey(Exception):
    pass


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise _DuplicateKey
    return out


def load_documents(path: str, text: str, *, strict: bool = False) -> list[Any]:
    """The non-empty documents of ``text``; ``strict`` also refuses duplicate keys.

    A ``.json`` file, or any text starting like JSON, is tried with ``json`` first; other text
    (and JSON-looking text that is not JSON, outside ``.json`` files) goes to the YAML loader.
    """
    stripped = text.lstrip()
    if path.endswith(".json") or stripped.startswith(("{", "[")):
        try:
            doc = json.loads(text, object_pairs_hook=_unique_pairs if strict else None)
            return [] if doc is None else [doc]
        except json.JSONDecodeError as exc:
            if path.endswith(".json"):
                raise InputError(f"invalid JSON: {exc.msg}", path, exc.lineno, exc.colno) from None
        except _DuplicateKey:
            raise _duplicate_key_error(path, text) from None
    loader = StrictLoader if strict else _BaseLoader
    try:
        return [d for d in yaml.load_all(text, Loader=loader) if d is not None]
    except yaml.MarkedYAMLError as exc:
        raise _yaml_error("invalid YAML", path, exc) from None
    except yaml.YAMLError as exc:
        raise InputError(f"invalid YAML: {exc}", path) from None


def _yaml_error(what: str, path: str, exc: yaml.MarkedYAMLError) -> InputError:
    mark = exc.problem_mark or exc.context_mark
    line, column = (mark.line + 1, mark.column + 1) if mark else (0, 0)
    return InputError(f"{what}: {exc.problem or exc.context}", path, line, column)


def _duplicate_key_error(path: str, text: str) -> InputError:
    """Where ``json`` found a duplicate key: it cannot say, so the strict YAML loader does."""
    try:
        for _ in yaml.load_all(json_as_yaml(text), Loader=StrictLoader):
            pass
    except yaml.MarkedYAMLError as exc:
        return _yaml_error("invalid JSON", path, exc)
    except yaml.YAMLError:
        pass
    return InputError("invalid JSON: duplicate key", path)


_SURROGATE_ESCAPE = re.compile(r"(?<!\\)((?:\\\\)*)\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def json_as_yaml(text: str) -> str:
    """JSON text the YAML composer accepts, every character in its place.

    Tabs (JSON whitespace, not YAML's) become spaces; escaped UTF-16 surrogates, which libyaml
    refuses, become another six-character escape. Only string contents change.
    """
    return _SURROGATE_ESCAPE.sub(r"\1\\u003f", text.replace("\t", " "))


def compose_document(text: str, index: int) -> yaml.Node | None:
    """Node tree of the ``index``-th non-empty document (as ``load_documents`` counts them)."""
    for candidate in (text, json_as_yaml(text)):
        try:
            for i, node in enumerate(_non_empty(candidate)):
                if i == index:
                    return node
        except yaml.YAMLError:
            continue
        return None
    return None


def _non_empty(text: str) -> Iterator[yaml.Node]:
    for node in yaml.compose_all(text, Loader=_BaseLoader):
        if not (isinstance(node, yaml.ScalarNode) and node.tag == _NULL_TAG):
            yield node
