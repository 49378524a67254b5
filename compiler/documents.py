"""JSON and YAML text to documents, and back to YAML nodes when an error needs a position.

JSON goes through ``json`` (a 40 MB kubectl dump takes a second, not the forty PyYAML needs);
YAML through PyYAML's C loader. Loading never keeps positions: only the error path re-composes
the text into nodes (JSON is YAML for that purpose) to find a field's line and column.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from typing import Any, ClassVar

import attrs
import yaml

from .errors import InputError

_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MERGE_TAG = "tag:yaml.org,2002:merge"
_NULL_TAG = "tag:yaml.org,2002:null"
_BOOL_TAG = "tag:yaml.org,2002:bool"
_STR_TAG = "tag:yaml.org,2002:str"
_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
_MAX_DIGITS = 4300  # Python's default limit for int(str); longer numbers are refused, not parsed
MAX_EXPANSION = 1_000_000  # values that YAML aliases may add to a file (a billion laughs adds 10**9)
# values of one text: a policy is about 10 bytes a value, so 100 MB of them; ``[[],[],...]`` has
# one every 3 bytes, and its 128 MiB took 13 GB parsed. The parsers keep every value: so counted first.
MAX_VALUES = 10_000_000
_STARTS = "[{,:-?\n\r\x85\u2028\u2029"  # every value but a text's first comes after one (a bound, cheaply)
_VALUE_EVENTS = (yaml.ScalarEvent, yaml.SequenceStartEvent, yaml.MappingStartEvent, yaml.AliasEvent)


_RESOLVED: dict[tuple[type, str, Any], str] = {}  # ``Loader.resolve``'s, bounded
_RESOLVED_MAX = 1 << 16
_RESOLVED_TEXT = 253  # longer texts (never a label key or value) are resolved each time, not kept


class Loader(_BaseLoader):  # type: ignore[misc, valid-type]
    """The C safe loader reading YAML as the API server does (sigs.k8s.io/yaml, go-yaml v2).

    YAML 1.1's base-60 numbers (``1:20``) and dates (``2024-01-31``) stay strings; a value its tag cannot hold (``!!int "abc"``, a 5000-digit number) is an
    error at its position rather than an exception from deep inside the constructor.
    """

    yaml_implicit_resolvers: ClassVar[dict[str, list[tuple[str, re.Pattern[str]]]]] = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag not in (_INT_TAG, _FLOAT_TAG)]
        for first, resolvers in _BaseLoader.yaml_implicit_resolvers.items()
    }

    def construct_document(self, node: yaml.Node) -> Any:
        """Constructed unguarded, which is fast; only a document that fails is constructed again
        with every object guarded (``_guarded``), to say which value its tag cannot hold."""
        try:
            return super().construct_document(node)
        except (yaml.YAMLError, RecursionError):
            raise
        except Exception:
            pass
        self.constructed_objects: dict[yaml.Node, Any] = {}  # as a finished document leaves them
        self.recursive_objects: dict[yaml.Node, None] = {}
        self.state_generators: list[Any] = []
        self.deep_construct = False
        self.construct_object = functools.partial(_guarded, self)  # type: ignore[method-assign]
        try:
            return super().construct_document(node)
        except (yaml.YAMLError, RecursionError):
            raise
        except Exception as exc:  # raised in a constructor's second half, outside construct_object
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read: {exc}", node.start_mark
            ) from None
        finally:
            del self.construct_object

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        """A plain string is its text: the base class's bookkeeping (aliases, recursion, the
        constructor looked up by tag) costs more than the string, and most scalars are strings."""
        if node.tag == _STR_TAG and node.__class__ is yaml.ScalarNode:
            return node.value
        return super().construct_object(node, deep=deep)

    def resolve(self, kind: type[yaml.Node], value: Any, implicit: Any) -> str:
        """A scalar's tag, remembered by its text: the same few keys and values recur thousands
        of times, each tried against the implicit resolvers' patterns (no path resolvers here,
        so the tag depends on nothing else)."""
        if kind is not yaml.ScalarNode or self.yaml_path_resolvers:
            return super().resolve(kind, value, implicit)  # type: ignore[no-any-return]
        key = (self.__class__, value, implicit)
        tag = _RESOLVED.get(key)
        if tag is None:
            tag = super().resolve(kind, value, implicit)
            if len(value) <= _RESOLVED_TEXT and len(_RESOLVED) < _RESOLVED_MAX:
                _RESOLVED[key] = tag
        return tag  # type: ignore[no-any-return]

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        """Merge keys (``<<``) as go-yaml v2 merges them into a map, so as the API server reads
        them: in place, in order, a later key (explicit or merged) replacing an earlier one, and
        of a list of maps the earlier taking precedence (``<<: [{role: db}, {role: web}]`` is
        ``db``, where PyYAML gives ``web``)."""
        if not any(key.tag == _MERGE_TAG for key, _ in node.value):
            return
        pairs: dict[object, tuple[yaml.Node, yaml.Node]] = {}  # by key: a later one replaces it, in place
        for key, value in node.value:
            if key.tag != _MERGE_TAG:
                _put(pairs, key, value)
                continue
            for merged in value.value[::-1] if isinstance(value, yaml.SequenceNode) else [value]:
                if not isinstance(merged, yaml.MappingNode):
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        f"a merge (<<) takes a mapping or a list of mappings, not {merged.id}",
                        merged.start_mark,
                    )
                self.flatten_mapping(merged)
                # each merge copies its keys: aliases of merges of aliases multiply them (2.5 KB
                # took 818 MB), so they count against the aliases' bound as go-yaml's aliasing does
                self.merged = getattr(self, "merged", 0) + len(merged.value)
                if self.merged > MAX_EXPANSION:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"merges (<<) copy more than {MAX_EXPANSION:,} keys", value.start_mark
                    )
                for pair in merged.value:
                    _put(pairs, *pair)
        node.value = list(pairs.values())

    def construct_timestamp_text(self, node: yaml.ScalarNode) -> str:
        """A date (``2001-12-14``, ``2001-12-14t21:59:43.10-05:00``) is its text: go-yaml v2
        resolves it as a timestamp but decodes it into an untyped value as the string it reads
        ("for backward compatibility", decode.go), so the API server has the label value
        ``2001-12-14``, where a date would be refused as no string."""
        return str(self.construct_scalar(node))


def _put(pairs: dict[object, tuple[yaml.Node, yaml.Node]], key: yaml.Node, value: yaml.Node) -> None:
    """A mapping's pair, replacing the value of an earlier one of the same plain key where it stands
    (as the dict the pairs make would): merged copies of a key are kept once, not once a merge."""
    pairs[(key.tag, key.value) if isinstance(key, yaml.ScalarNode) else id(key)] = (key, value)


def _guarded(loader: Loader, node: yaml.Node, deep: bool = False) -> Any:
    """One object constructed, any failure but YAML's own turned into an error at its position
    (any text with any tag: the constructors were not written for that)."""
    try:
        return _BaseLoader.construct_object(loader, node, deep=deep)
    except (yaml.YAMLError, RecursionError):
        raise
    except Exception:
        tag = node.tag.replace("tag:yaml.org,2002:", "!!")
        value = str(node.value) if isinstance(node, yaml.ScalarNode) else ""
        shown = json.dumps(value if len(value) <= 40 else value[:40] + "...")
        reason = f": more than {_MAX_DIGITS} digits" if len(value) > _MAX_DIGITS else ""
        raise yaml.constructor.ConstructorError(
            None, None, f"invalid {tag} value {shown}{reason}", node.start_mark
        ) from None


# go-yaml v2's scalars where YAML 1.1's differ: ``0o17`` an int (Go's ParseInt), ``1e3`` and
# ``.5`` floats (an exponent without a dot or sign), ``y`` and ``n`` booleans. PyYAML read them as
# strings, so ``port: 1e3`` was the port named "1e3" where the API server has port 1000.
Loader.add_implicit_resolver(
    _INT_TAG,
    re.compile(
        r"""^(?:[-+]?0b[0-1_]+
        |[-+]?0o?[0-7_]+
        |[-+]?(?:0|[1-9][0-9_]*)
        |[-+]?0x[0-9a-fA-F_]+)$""",
        re.X,
    ),
    list("-+0123456789"),
)
Loader.add_implicit_resolver(
    _FLOAT_TAG,
    re.compile(
        r"""^(?:[-+]?(?:\.[0-9_]+|[0-9][0-9_]*(?:\.[0-9_]*)?)(?:[eE][-+]?[0-9_]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)
Loader.add_implicit_resolver(_BOOL_TAG, re.compile(r"^(?:y|Y|n|N)$"), list("yYnN"))
Loader.bool_values = {**_BaseLoader.bool_values, "y": True, "n": False}
Loader.add_constructor(_TIMESTAMP_TAG, Loader.construct_timestamp_text)


_READERS = (Loader.yaml_implicit_resolvers, yaml.resolver.Resolver.yaml_implicit_resolvers)
_EITHER = {
    first: list(dict.fromkeys(r for table in _READERS for r in table.get(first, ())))
    for first in dict.fromkeys(first for table in _READERS for first in table)
}


class Dumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # type: ignore[misc]
    """The writers' (``convert``, ``calico.yaml``): the C emitter when PyYAML has it, and never an
    anchor and alias (``&id001`` ... ``*id001``) where two rules share one list: each object reads,
    and a change to it diffs, where it stands."""

    # What either reader takes for no string is quoted: go-yaml v2's as npc reads it, and YAML
    # 1.1's (PyYAML's default, in many a pipeline's scripts), where ``1:20`` is 80 (base 60).
    yaml_implicit_resolvers = _EITHER

    def ignore_aliases(self, data: Any) -> bool:
        return True


class StrictLoader(Loader):
    """Refusing duplicate keys too (YAML forbids them; kubectl's strict mode too)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[object] = set()
        if not isinstance(node, yaml.MappingNode):  # !!set [1]: the base class says so
            return super().construct_mapping(node, deep=deep)  # type: ignore[no-any-return]
        # Almost every key is a plain string: distinct texts are distinct keys, no need to
        # construct each key twice (other tags can spell one key two ways: 1 and 0x1, ~ and null).
        texts = {k.value for k, _ in node.value if k.tag == _STR_TAG}
        if len(texts) == len(node.value):
            return super().construct_mapping(node, deep=deep)  # type: ignore[no-any-return]
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
    """The non-empty documents of ``text``; ``strict`` (policies) also refuses duplicate keys and
    more than ``MAX_VALUES`` values.

    A ``.json`` file, or any text starting like JSON, is tried with ``json`` first; other text
    (and JSON-looking text that is not JSON, outside ``.json`` files) goes to the YAML loader.
    """
    try:
        return _load(path, text, strict)
    except RecursionError:
        at = _deepest(text)
        line, column = position(text, at) if at >= 0 else (0, 0)
        raise InputError("invalid input: nested too deeply", path, line, column) from None


def _load(path: str, text: str, strict: bool) -> list[Any]:
    # policies (strict): an inventory is kubectl's JSON, whose 50k pods hold more, read by a faster path
    if strict and len(text) > MAX_VALUES // len(_STARTS) and sum(map(text.count, _STARTS)) >= MAX_VALUES:
        _count_values(path, text)
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
        except ValueError:  # an integer beyond Python's digit limit
            raise _long_number_error(path, text) from None
    loader = StrictLoader if strict else Loader
    try:
        documents = [d for d in yaml.load_all(text, Loader=loader) if d is not None]
    except yaml.MarkedYAMLError as exc:
        raise _yaml_error("invalid YAML", path, text, exc) from None
    except yaml.reader.ReaderError as exc:
        raise _reader_error(path, text, exc) from None
    except yaml.YAMLError as exc:
        raise InputError(f"invalid YAML: {exc}", path) from None
    try:
        too_big = "*" in text and _expanded_size(documents) > MAX_EXPANSION
    except InputError as err:
        line, column = _recursive_alias_at(text)
        raise attrs.evolve(err, file=path, line=line, column=column) from None
    if too_big:
        alias, line, column = _alias_past(text, MAX_EXPANSION)
        message = f"invalid YAML: aliases (*name) expand to more than {MAX_EXPANSION:,} values"
        raise InputError(f"{message}, past it at *{alias}" if alias else message, path, line, column)
    return documents


def holds_object(document: object) -> bool:
    """Whether a document is an object or a list holding one, however deep (``[[]]``: none)."""
    stack = [document]
    while stack:
        found = stack.pop()
        if isinstance(found, dict):
            return True
        if isinstance(found, list):
            stack.extend(found)
    return False


def objects_in(
    document: object, keep: Callable[[Mapping[str, Any]], bool] | None = None
) -> Iterator[tuple[tuple[str | int, ...], object]]:
    """The objects a document holds, with their field paths, in order: a document that is a list,
    a ``v1 List`` or a typed list (``NetworkPolicyList``, ``PodList``) is opened; a typed list's
    items, which the API server writes without kind and apiVersion, get the list's. A List's
    item ``keep`` refuses is passed over before its path is made (``npc explain`` at 50k pods)."""
    stack: list[tuple[tuple[str | int, ...], object, Mapping[str, Any] | None]] = [((), document, None)]
    while stack:
        base, doc, lent = stack.pop()
        if isinstance(doc, list) and "items" not in base[-2:-1]:  # a List's item is an object, not opened
            stack.extend(((*base, i), item, None) for i, item in reversed(list(enumerate(doc))))
            continue
        if isinstance(doc, dict):
            kind = doc.get("kind")
            if isinstance(kind, str) and kind.endswith("List") and isinstance(doc.get("items"), list):
                lend = (
                    None
                    if kind == "List"
                    else {"kind": kind[: -len("List")], "apiVersion": doc.get("apiVersion")}
                )
                items: Iterable[tuple[int, object]] = enumerate(doc["items"])
                if keep is not None:
                    items = [(i, item) for i, item in items if not isinstance(item, dict) or keep(item)]
                stack.extend(((*base, "items", i), item, lend) for i, item in reversed(list(items)))
                continue
            if lent:
                doc = {**lent, **doc}
        yield base, doc


def metadata(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    """An object's ``metadata``, or nothing where it is not a mapping: the object is still named
    (keyed, counted) and its reader reports it at its field path."""
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def namespaced_name(obj: Mapping[str, Any]) -> tuple[str, str]:
    """(namespace, name) from ``metadata``, "" where missing: a key even for a malformed object."""
    meta = metadata(obj)
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def position(text: str, offset: int) -> tuple[int, int]:
    """1-based (line, column) of a character offset."""
    return text.count("\n", 0, offset) + 1, offset - (text.rfind("\n", 0, offset) + 1) + 1


def mark_position(text: str, mark: yaml.Mark | yaml._yaml.Mark | None) -> tuple[int, int]:
    """A parser's mark as ``position`` says it, (0, 0) for none: YAML also breaks lines at a lone
    CR, NEL and U+2028/9, which editors and the excerpt do not, so its own line was another's."""
    return position(text, mark.index) if mark is not None else (0, 0)


def _long_number_error(path: str, text: str) -> InputError:
    found = re.search(f"[0-9]{{{_MAX_DIGITS},}}", text)
    line, column = position(text, found.start() if found else 0)
    return InputError(f"invalid JSON: a number with more than {_MAX_DIGITS} digits", path, line, column)


_BRACKETS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[{]|[\]}]')


def _deepest(text: str) -> int:
    """Offset of the first opening bracket at the text's greatest depth (strings skipped): where
    ``json``'s recursive parser gave up, or near it; -1 where nothing is bracketed."""
    depth = deepest = 0
    at = -1
    for found in _BRACKETS.finditer(text):
        token = found.group()
        if token in "[{":
            depth += 1
            if depth > deepest:
                deepest, at = depth, found.start()
        elif token in "]}":
            depth -= 1
    return at


def _expanded_size(documents: list[Any]) -> int:
    """How many values the documents hold once every alias is expanded, counted without expanding
    (each shared list or mapping is sized once); an alias inside its own anchor is refused."""
    size: dict[int, int] = {}
    visiting: set[int] = set()
    stack: list[tuple[Any, bool]] = [(d, False) for d in documents]
    while stack:
        value, children_done = stack.pop()
        key = id(value)
        children = _children(value)
        if children_done:
            visiting.discard(key)
            size[key] = 1 + sum(size.get(id(c), 1) for c in children)
        elif key in visiting:
            raise InputError("invalid YAML: an alias (*name) inside its own anchor")
        elif key not in size:
            visiting.add(key)
            stack.append((value, True))
            stack.extend((c, False) for c in children if isinstance(c, list | dict))
    return sum(size.get(id(d), 1) for d in documents)


def _recursive_alias_at(text: str) -> tuple[int, int]:
    """Where the first alias inside its own anchor is ((0, 0) if the parser finds none)."""
    open_anchors: list[str | None] = []
    try:
        for event in yaml.parse(json_as_yaml(text), Loader=_BaseLoader):
            if isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
                open_anchors.append(event.anchor)
            elif isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
                open_anchors.pop()
            elif isinstance(event, yaml.AliasEvent) and event.anchor in open_anchors:
                return mark_position(text, event.start_mark)
    except yaml.YAMLError:
        pass
    return 0, 0


def _count_values(path: str, text: str) -> None:
    """InputError at the value past ``MAX_VALUES``, counted from the parser's events (which it
    keeps none of); text the YAML parser cannot read is left to the loaders to say so."""
    count = 0
    try:
        for event in yaml.parse(json_as_yaml(text), Loader=_BaseLoader):
            if isinstance(event, _VALUE_EVENTS):
                count += 1
                if count > MAX_VALUES:
                    line, column = mark_position(text, event.start_mark)
                    raise InputError(
                        f"more than {MAX_VALUES:,} values (lists, mappings, scalars): split it",
                        path,
                        line,
                        column,
                    )
    except yaml.YAMLError:
        return


def _alias_past(text: str, limit: int) -> tuple[str, int, int]:
    """The alias (name, line, column) at which the text's values, every alias expanded, pass
    ``limit``: counted from the parser's events, an anchored node's size once it has ended."""
    sizes: dict[str, int] = {}
    open_nodes: list[tuple[str | None, int]] = []  # (anchor, values so far when it opened)
    total = 0
    for event in yaml.parse(text, Loader=_BaseLoader):
        if isinstance(event, yaml.AliasEvent):
            total += sizes.get(str(event.anchor), 1)
            if total > limit:
                return (str(event.anchor), *mark_position(text, event.start_mark))
        elif isinstance(event, yaml.ScalarEvent):
            total += 1
            if event.anchor is not None:
                sizes[event.anchor] = 1
        elif isinstance(event, yaml.CollectionStartEvent):
            open_nodes.append((event.anchor, total))
            total += 1
        elif isinstance(event, yaml.CollectionEndEvent) and open_nodes:
            anchor, before = open_nodes.pop()
            if anchor is not None:
                sizes[anchor] = total - before
    return "", 0, 0


def _children(value: Any) -> list[Any]:
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        return [*value.keys(), *value.values()]
    return []


def _yaml_error(what: str, path: str, text: str, exc: yaml.MarkedYAMLError) -> InputError:
    line, column = mark_position(text, exc.problem_mark or exc.context_mark)
    return InputError(f"{what}: {exc.problem or exc.context}", path, line, column)


def _reader_error(path: str, text: str, exc: yaml.reader.ReaderError) -> InputError:
    """libyaml's reader places a character it refuses (a raw control character) by its offset in
    the text: as line and column here, like every other error."""
    at = exc.position
    if _BaseLoader is not yaml.SafeLoader:  # libyaml counts the bytes of the UTF-8 it was handed
        at = len(text.encode()[: max(at, 0)].decode(errors="ignore"))
    line, column = position(text, min(max(at, 0), len(text)))
    character = exc.character if isinstance(exc.character, int) else ord(exc.character or "\0")
    return InputError(
        f"invalid YAML: unacceptable character #x{character:04x}: {exc.reason}", path, line, column
    )


def _duplicate_key_error(path: str, text: str) -> InputError:
    """Where ``json`` found a duplicate key: it cannot say, so the strict YAML loader does."""
    try:
        for _ in yaml.load_all(json_as_yaml(text), Loader=StrictLoader):
            pass
    except yaml.MarkedYAMLError as exc:
        return _yaml_error("invalid JSON", path, text, exc)
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
    for node in yaml.compose_all(text, Loader=Loader):
        if not (isinstance(node, yaml.ScalarNode) and node.tag == _NULL_TAG):
            yield node
