"""A JSON inventory parsed by simdjson, with Python values built only for the objects kept.

``json`` builds every value of a 50,000-pod kubectl dump (half a second, and as long again
for the memory) where ``npc explain`` needs two pods and their namespaces. simdjson checks
the whole text in C and builds nothing until asked: each object where ``objects_in`` looks
for one is read only as far as ``keep`` reads it (kind, metadata's name and namespace), and
one that ``keep`` refuses is left as just those fields, in its place, so that the objects
kept keep their ``items[i]`` paths and ``objects_in`` refuses it again.

What is built equals what ``json`` builds: the last of repeated keys wins (an object with a
repeated key is built whole), numbers and strings are read alike. Anything simdjson refuses or
reads otherwise (NaN, an integer beyond 64 bits, an escaped lone surrogate, a second byte-order
mark) and a value built nested deeper than ``MAX_DEPTH`` (where ``json`` may run out of stack)
give None: the caller parses the text with ``json`` as always, with the same result or error.
An object refused is not looked into, so its nesting is not checked.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import simdjson

from .text import UTF8_BOM

Keep = Callable[[Mapping[str, Any]], bool]
MAX_DEPTH = 200  # kubectl output nests about 10 deep; json's limit, the stack's, is near 1,000
_ABSENT = object()
_Object, _Array = simdjson.Object, simdjson.Array
_NAMESPACE = (str, type(None))


class _TooDeep(Exception):
    pass


def load_focused(data: bytes, keep: Keep) -> list[Any] | None:
    """The documents ``load_documents`` would read from the JSON ``data`` (one, or none for
    ``null``; its byte-order mark dropped), each object ``keep`` refuses reduced to what it read;
    None: use ``json``. ``keep`` may read only an object's kind and metadata's name and namespace."""
    if data.startswith(UTF8_BOM):  # a second one: json refuses it, simdjson would pass over it
        return None
    try:
        document = simdjson.Parser().parse(data)
    except (ValueError, RuntimeError):  # invalid JSON or UTF-8, a number json reads and simdjson not
        return None
    try:
        found = _focused(document, keep, None, 0)
    except _TooDeep:
        return None
    return [] if found is None else [found]


def _focused(value: Any, keep: Keep, lent: str | None, depth: int) -> Any:
    """``value`` where ``objects_in`` looks for objects: arrays and Lists opened as it opens them
    (``lent``: the kind a typed List lends its items), every other object built unless ``keep``
    refuses what it reads of it."""
    if depth > MAX_DEPTH:
        raise _TooDeep
    if isinstance(value, _Array):
        return [_focused(item, keep, None, depth + 1) for item in value]
    if not isinstance(value, _Object) or _repeats(value):
        return _whole(value, depth)
    kind = value.get("kind", _ABSENT)
    if isinstance(kind, str) and kind.endswith("List"):
        items = value.get("items")
        if isinstance(items, _Array):
            lend = None if kind == "List" else kind[: -len("List")]
            return {
                key: (
                    [_focused(item, keep, lend, depth + 2) for item in items]
                    if key == "items"
                    else _whole(value[key], depth + 1)
                )
                for key in value
            }
    read = _read_by_keep(value, kind)
    if read is not None and not keep(read if lent is None or kind is not _ABSENT else {**read, "kind": lent}):
        return read
    return _whole(value, depth)


def _read_by_keep(obj: simdjson.Object, kind: object) -> dict[str, Any] | None:
    """The fields of ``obj`` that ``keep`` reads (its ``kind`` given), as ``json`` reads them;
    None when one is not plainly a string (the object is then built whole for ``keep``)."""
    meta = obj.get("metadata")
    if not isinstance(meta, _Object) or _repeats(meta):
        return None
    name, namespace = meta.get("name"), meta.get("namespace", _ABSENT)
    if not isinstance(name, str) or (namespace is not _ABSENT and not isinstance(namespace, _NAMESPACE)):
        return None
    fields = {"name": name} if namespace is _ABSENT else {"name": name, "namespace": namespace}
    if kind is _ABSENT:
        return {"metadata": fields}
    return {"kind": kind, "metadata": fields} if isinstance(kind, str) else None


def _repeats(obj: simdjson.Object) -> bool:
    """A key written twice: simdjson's lookups find the first, ``json`` keeps the last."""
    return len(set(obj)) != len(obj)


def _whole(value: Any, depth: int) -> Any:
    if isinstance(value, _Object):
        built: Any = value.as_dict()
    elif isinstance(value, _Array):
        built = value.as_list()
    else:
        return value
    stack = [(built, depth + 1)]
    while stack:
        node, at = stack.pop()
        if at > MAX_DEPTH:
            raise _TooDeep
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, at + 1) for child in children if isinstance(child, dict | list))
    return built
