"""Policy sources (files, directories, stdin) to IR policies, the way a GitOps folder is laid out.

Kubernetes objects come from ``*.yaml``/``*.yml``/``*.json`` (single documents, multi-document
YAML, ``v1 List`` and typed lists), DSL policies from ``*.npc``. Objects of other kinds are
skipped with a note; Namespace objects are kept for their 1.6 isolation annotation. Errors carry
file, line:column, field path and snippet; positions are only worked out for the error.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, NoReturn, TextIO

import attrs

from .documents import holds_object, load_documents, objects_in
from .errors import InputError
from .frontends.annotation import NAMESPACE_ISOLATION_ANNOTATION, isolates_ingress, isolation_note
from .frontends.k8s import API_VERSIONS, POLICY_FOR_ANNOTATION, policy_from_object
from .frontends.legacy import ISOLATION_KIND
from .frontends.positions import FieldPath, MapKey, locate, printable, show, snippet
from .frontends.validate import FieldError, check_name, dns_label_problem, fail, object_meta, type_name
from .ir import MULTI_NETWORK_POLICY, Policy
from .parse_ahead import parse_ahead
from .text import POLICY_FILE_BYTES, STDIN_NAME, NotRegularFile, Text, read_stdin, read_text

POLICY_SUFFIXES = (".yaml", ".yml", ".json", ".npc")
STDIN = "-"
_EMPTY_STDIN = (  # {} : "document" or "policy"
    'holds no {} (no policies is {{"kind": "List", "items": []}}): an empty pipe is what a failed '
    "command leaves, and applied it would remove every policy"
)
_POLICY_API_VERSIONS = {v for versions in API_VERSIONS.values() for v in versions}
_POLICY_GROUPS = {v.split("/")[0] for v in _POLICY_API_VERSIONS}
# kinds npc reads, by their lowercase spelling: ``networkpolicy`` is a typo, not another kind to skip
_KINDS_BY_CASE = {k.lower(): k for kind in (*API_VERSIONS, "Namespace") for k in (kind, kind + "List")} | {
    "list": "List"
}


def _foreign_group(api_version: object) -> bool:
    """Another API group's kind of the same name (Calico's projectcalico.org/v3 NetworkPolicy):
    not ours to read, so it is skipped with a note like any other kind. Within the groups npc
    reads, a wrong version or kind (networking.k8s.io/v2) stays an error."""
    if not isinstance(api_version, str) or "/" not in api_version:
        return False
    return api_version.split("/")[0] not in _POLICY_GROUPS


@attrs.frozen
class Loaded:
    """What the policy sources hold: policies in reading order, raw Namespace objects, notes."""

    policies: tuple[Policy, ...] = ()
    namespaces: tuple[Mapping[str, Any], ...] = ()
    notes: tuple[str, ...] = ()
    files: tuple[tuple[str, str], ...] = ()  # (name, sha256) of every source read, for the manifest
    # (kind, namespace, name) -> where a field of that policy is (``file:line:column``), worked out
    # only when asked: analysis names the rule that allowed a connection
    places: Mapping[tuple[str, str, str], Callable[[FieldPath], str]] = attrs.field(factory=dict, eq=False)

    def placed(self, err: InputError) -> InputError:
        """``err`` about one policy (a backend's limit, a writer's), at that policy's name."""
        place = self.places.get(err.policy) if err.policy is not None and not err.line else None
        if place is None:
            return err
        found = re.fullmatch(r"(.*):(\d+):(\d+)", place(("metadata", "name")), re.S)
        if found is None:
            return err
        return attrs.evolve(err, file=found[1], line=int(found[2]), column=int(found[3]))


@attrs.frozen
class _Origin:
    """Where an object sits, so a field path can become a line and column when one is wrong."""

    source: Text
    document: int
    base: FieldPath

    def position(self, parts: FieldPath, at_key: bool = False) -> tuple[int, int]:
        return locate(self.source.text, self.document, (*self.base, *parts), at_key=at_key)

    def place(self, parts: FieldPath) -> str:
        line, column = self.position(parts)
        return f"{self.source.name}:{line}:{column}" if line else self.source.name

    def error(self, err: FieldError) -> InputError:
        line, column = self.position(err.parts, err.at_key)
        text = self.source.text
        return InputError(err.message, self.source.name, line, column, err.path, snippet(text, line, column))


def read_policy_sources(
    paths: Sequence[str], stdin: TextIO | None = None, keep: Callable[[Text], bool] | None = None
) -> Loaded:
    """Read every path (file, directory searched recursively in sorted order, or ``-``); a text
    ``keep`` refuses is left unparsed (``npc explain`` skips what cannot hold its namespaces)."""
    return _load(lambda reader: (s for s in _sources(paths, stdin, reader) if keep is None or keep(s)))


def read_policy_texts(texts: Iterable[tuple[str, str]]) -> Loaded:
    """Like ``read_policy_sources`` for ``(name, text)`` pairs held in memory (objects from the API,
    each written out as JSON, so that an error still has a line, column and field path)."""
    return _load(
        lambda _: (Text(name, text, hashlib.sha256(text.encode()).hexdigest()) for name, text in texts)
    )


def _load(sources: Callable[[_Reader], Iterable[Text]]) -> Loaded:
    reader = _Reader()
    texts: list[Text] = []
    unreadable: InputError | None = None  # raised after the texts before it, as when read one by one
    try:
        texts.extend(sources(reader))
    except InputError as err:
        unreadable = err
    files = []
    with parse_ahead(texts) as parsed:
        for i, source in enumerate(texts):
            reader.read(source, parsed(i))
            files.append((source.name, source.sha256))
    if unreadable is not None:
        raise unreadable
    return Loaded(
        tuple(reader.policies), tuple(reader.namespaces), reader.notes(), tuple(files), dict(reader.places)
    )


def _sources(paths: Sequence[str], stdin: TextIO | None, reader: _Reader) -> Iterator[Text]:
    """Each file once, however often it is given (a folder and a file in it, a file twice): read
    twice, its every policy was "already defined" at its own place."""
    seen: set[str] = set()
    for path in paths:
        if path == STDIN:
            yield read_stdin(stdin if stdin is not None else sys.stdin, POLICY_FILE_BYTES)
            continue
        named = not os.path.isdir(path)
        for file in [path] if named else policy_files(path):
            real = os.path.realpath(file)
            if real in seen:
                reader.skipped.append(f"skipped {printable(file)}: read once already")
                continue
            seen.add(real)
            try:
                yield read_text(file, limit=POLICY_FILE_BYTES)
            except NotRegularFile as err:
                if named:  # ``npc apply <(...)``: skipped, apply would remove every policy
                    raise attrs.evolve(err, message=f"{err.message}: pipe it to stdin (-) instead") from None
                reader.skipped.append(f"skipped {err.file}: {err.message.removeprefix('cannot read: ')}")


def policy_files(directory: str) -> list[str]:
    """Policy files under ``directory``, recursively, in sorted order; dot-files and -dirs skipped."""
    found: list[tuple[tuple[str, ...], str]] = []
    for root, dirs, files in os.walk(directory, onerror=_unlistable):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        rel = os.path.relpath(root, directory)
        rel_parts = () if rel == os.curdir else tuple(rel.split(os.sep))
        for name in files:
            if not name.startswith(".") and name.lower().endswith(POLICY_SUFFIXES):
                found.append(((*rel_parts, name), os.path.join(root, name)))
    return [path for _, path in sorted(found)]


def _unlistable(exc: OSError) -> NoReturn:
    """A folder that cannot be listed is an error, as an unreadable file is: skipped, its
    policies would be missing from the artefacts (and ``apply`` would remove them from the kernel)."""
    raise InputError(f"cannot read: {exc.strerror or exc}", printable(str(exc.filename or ""))) from None


class _Reader:
    """Accumulates policies, namespaces and notes; refuses a second policy with the same identity."""

    def __init__(self) -> None:
        self.policies: list[Policy] = []
        self.namespaces: list[Mapping[str, Any]] = []
        self._ignored: dict[tuple[str, str], int] = {}
        self._first_place: dict[tuple[str, str, str], Callable[[], str]] = {}
        self.skipped: list[str] = []
        self.places: dict[tuple[str, str, str], Callable[[FieldPath], str]] = {}
        self._namespace_at: dict[str, tuple[object, _Origin]] = {}  # name -> (labels, annotations), where

    def notes(self) -> tuple[str, ...]:
        return (
            *self.skipped,
            *(
                f"ignored {what} in {name}" + (f" ({count} objects)" if count > 1 else "")
                for (name, what), count in self._ignored.items()
            ),
        )

    def read(self, source: Text, documents: list[Any] | None = None) -> None:
        """``documents``: the text's, parsed ahead (``parse_ahead``); None: parsed here."""
        if source.in_npc_language:
            from .frontends.dsl import parse

            rule_places: dict[tuple[str, str, str], dict[FieldPath, str]] = {}
            policies = parse(source.text, source.name, rule_places)
            if not policies and source.name == STDIN_NAME:
                raise InputError(_EMPTY_STDIN.format("policy"), source.name)
            for policy in policies:
                self._add(
                    policy, None, source.name, rule_places.get((policy.kind, policy.namespace, policy.name))
                )
            return
        try:
            if documents is None:
                documents = load_documents(source.name, source.text, strict=True)
        except InputError as err:
            raise attrs.evolve(err, snippet=snippet(source.text, err.line, err.column)) from None
        if not documents and source.name == STDIN_NAME:  # a file may be empty, a pipe's input not
            raise InputError(_EMPTY_STDIN.format("document"), source.name)
        for index, document in enumerate(documents):
            for base, obj in objects_in(document):
                self._object(obj, _Origin(source, index, base))
        if source.name == STDIN_NAME and not any(map(holds_object, documents)):  # ``[]``: as no document
            raise InputError(_EMPTY_STDIN.format("object"), source.name)

    def _object(self, obj: object, origin: _Origin) -> None:
        name = origin.source.name
        if not isinstance(obj, dict):  # as what a failed command printed: never "no policies"
            raise origin.error(
                fail((), f"must be a Kubernetes object (kind, apiVersion, ...), not {type_name(obj)}")
            )
        kind = obj.get("kind")
        api_version = obj.get("apiVersion")
        if isinstance(kind, str) and kind.endswith("List") and not isinstance(obj.get("items"), list):
            problem = (
                "required" if obj.get("items") is None else f"must be a list, not {type_name(obj['items'])}"
            )
            raise origin.error(fail(("items",), f"{problem}: a {kind} holds its objects there"))
        if kind is not None and not isinstance(kind, str):
            raise origin.error(fail(("kind",), f"must be a string, not {type_name(kind)}"))
        if isinstance(kind, str) and kind in API_VERSIONS and not _foreign_group(api_version):
            try:
                policy = policy_from_object(obj, source=name)
            except FieldError as err:
                raise origin.error(err) from None
            if policy.kind == MULTI_NETWORK_POLICY and not policy.policy_for:  # as multi-networkpolicy
                self.skipped.append(
                    f"{origin.place(('metadata', 'name'))}: MultiNetworkPolicy {policy.namespace}/{policy.name} "
                    f"names no network in {POLICY_FOR_ANNOTATION}: it governs none"
                )
            self._add(policy, origin, name)
        elif kind == "Namespace":
            self._namespace(obj, origin)
        elif isinstance(kind, str) and kind.lower() in _KINDS_BY_CASE and not _foreign_group(api_version):
            meant = _KINDS_BY_CASE[kind.lower()]
            raise origin.error(
                fail(("kind",), f"unknown kind {show(kind)}: kinds are case-sensitive, did you mean {meant}?")
            )
        elif isinstance(kind, str):
            group = f" of {printable(str(api_version))}" if kind in API_VERSIONS else ""
            shown = printable(kind[:100]) + ("..." if len(kind) > 100 else "")  # 3 MB of kind: 3 MB of notes
            self._ignore(name, f"kind {shown}{group}")
        elif isinstance(api_version, str) and api_version in _POLICY_API_VERSIONS:
            raise origin.error(fail(("kind",), "required"))
        elif name == STDIN_NAME:  # a command's output has kinds; without, it is what a failed one printed
            raise origin.error(fail(("kind",), "required (on stdin, where files may hold other YAML)"))
        else:
            self._ignore(name, "a document without kind")

    def _ignore(self, name: str, what: str) -> None:
        self._ignored[name, what] = self._ignored.get((name, what), 0) + 1

    def _namespace(self, obj: Mapping[str, Any], origin: _Origin) -> None:
        """Kept for the 1.6 annotation; metadata is checked here, where positions are known."""
        try:
            meta = object_meta(obj.get("metadata"))
            check_name(meta.name, ("metadata", "name"), dns_label_problem(meta.name), "namespace name")
            value = meta.annotations.get(NAMESPACE_ISOLATION_ANNOTATION)
            if value is not None:
                annotation = MapKey(NAMESPACE_ISOLATION_ANNOTATION)
                try:
                    isolates_ingress(value)
                except ValueError as exc:
                    raise fail(("metadata", "annotations", annotation), str(exc)) from None
                if note := isolation_note(value):
                    self.skipped.append(f"{origin.place(('metadata', 'annotations', annotation))}: {note}")
            held, first = self._namespace_at.setdefault(meta.name, ((meta.labels, meta.annotations), origin))
            if held != (meta.labels, meta.annotations):  # said here, where both places are known
                raise fail(
                    ("metadata", "name"),
                    f"namespace {meta.name} is listed twice, differently (first at "
                    f"{first.place(('metadata', 'name'))}): which one holds would depend on the order",
                )
        except FieldError as err:
            raise origin.error(err) from None
        self.namespaces.append(obj)
        if value is not None:  # the policy it makes is placed at the annotation, not in the inventory
            at: FieldPath = ("metadata", "annotations", MapKey(NAMESPACE_ISOLATION_ANNOTATION))
            key = (ISOLATION_KIND, meta.name, NAMESPACE_ISOLATION_ANNOTATION)
            self.places[key] = lambda parts: origin.place(at)

    def _add(
        self, policy: Policy, origin: _Origin | None, name: str, rules: Mapping[FieldPath, str] | None = None
    ) -> None:
        key = (policy.kind, policy.namespace, policy.name)
        place: Callable[[], str]
        if origin is None:
            place = functools.partial(str, policy.source or name)
        else:
            place = functools.partial(origin.place, ("metadata", "name"))
        first = self._first_place.get(key)
        if first is not None:
            message = (
                f"duplicate {policy.kind} {show(f'{policy.namespace}/{policy.name}')}: "
                f"already defined at {first()}"
            )
            if origin is None:
                raise InputError(message, place())
            raise origin.error(fail(("metadata", "name"), message))
        self._first_place[key] = place
        if origin is not None:
            self.places[key] = origin.place
        else:  # the npc language: rules where they are written, anything else at the policy's name
            written = dict(rules or {})
            self.places[key] = lambda parts: written.get(parts) or place()
        self.policies.append(policy)
