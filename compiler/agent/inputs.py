"""Where the agent's policies and inventory come from: files (watched) or the Kubernetes API.

Every input is one small interface, ``read()`` (raises ``NpcError`` on bad input, with the
position ``compile`` would report) and ``digest()`` (cheap: tells whether anything changed), so
the engine never knows which it has. Files are re-read on any change under their folders (the
engine compares digests); API objects are read from the watch cache.

Folders are watched the way git-sync and ConfigMap volumes replace them: by atomically swapping a
symlink. A watch on a symlinked folder follows the old target, so the symlink's parent is watched
as well, and the watch is rebuilt on the new target whenever a symlink's target changes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import attrs
import watchfiles

from ..documents import metadata
from ..errors import InputError
from ..inventory import check_whole, read_inventory_documents
from ..lower import Lowered
from ..lowered_json import decode
from ..networks import NetworkSpec
from ..sources import Loaded, read_policy_sources, read_policy_texts
from .held import HeldStore
from .held import Objects as HeldObjects
from .kube import NAMESPACES, PODS, Cache, Resource
from .live import Key as LiveKey

log = logging.getLogger("npc.agent")


class PolicyInput(Protocol):
    def read(self) -> Loaded | Artefacts: ...

    def digest(self) -> str: ...


class InventoryInput(Protocol):
    def read(self) -> list[Any] | CacheJournal: ...

    def digest(self) -> str: ...


_EMPTY = hashlib.sha256(b"").hexdigest()


class FilePolicies:
    def __init__(self, paths: Sequence[str]) -> None:
        self.paths = list(paths)
        self._loaded: Loaded | None = None

    def read(self) -> Loaded:
        """The policies; a file that held some and is now empty is refused as one caught
        mid-write (``: > f`` then writing it, as ``cp`` and many editors do: applied, its
        policies were gone for that moment). A file left empty on purpose is removed instead,
        or keeps a comment."""
        loaded = read_policy_sources(self.paths)
        held = dict(self._loaded.files) if self._loaded is not None else {}
        for name, digest in loaded.files:
            if digest == _EMPTY and held.get(name, _EMPTY) != _EMPTY:
                raise InputError(
                    "became empty: taken for a file being written, so its policies stay in force "
                    "(to drop them, remove the file or leave a comment in it)",
                    name,
                )
        self._loaded = loaded
        return loaded

    def digest(self) -> str:
        return _digest(self._loaded.files if self._loaded else None)


@attrs.frozen
class Artefacts:
    """What ``npc compile -o`` wrote, per network: the lowered program its manifest carries."""

    programs: Mapping[str, Lowered]

    def network(self, name: str) -> Lowered:
        return self.programs[name]


def _plain(name: str) -> bool:
    """A file name inside the artefacts' folder: relative, no way up."""
    parts = Path(name).parts
    return bool(parts) and not Path(name).is_absolute() and ".." not in parts


class ArtefactPolicies:
    """``--artefacts DIR``: each network's manifest (``DIR/manifest.json``, or ``DIR/<network>/``
    with several networks). The folder is read through its symlink's target once per read, and
    every file must match the manifest's hash, so a half-synced folder is refused, not loaded."""

    def __init__(
        self,
        directory: str,
        networks: Sequence[NetworkSpec],
        per_network: bool = False,
        backend: str | None = None,
    ) -> None:
        self.directory, self.networks, self.backend = directory, list(networks), backend
        self.per_network = per_network or len(self.networks) > 1  # compile --networks: a folder each
        self._digest = ""

    def read(self) -> Artefacts:
        root = Path(os.path.realpath(self.directory))
        programs, hashes = {}, []
        for spec in self.networks:
            folder = root / spec.folder if self.per_network else root
            path = folder / "manifest.json"
            try:
                data = path.read_bytes()
                manifest = json.loads(data)
            except (OSError, ValueError, RecursionError) as exc:
                raise InputError(f"cannot read the artefacts' manifest: {exc}", str(path)) from None
            if not isinstance(manifest, dict) or "program" not in manifest:
                raise InputError("no program in the manifest: compile it with this npc", str(path))
            if manifest.get("network") != spec.name:
                raise InputError(
                    f"compiled for network {manifest.get('network')!r}, not {spec.name!r}",
                    str(path),
                    path="network",
                )
            if self.backend is not None and manifest.get("backend") != self.backend:
                raise InputError(  # the reviewed files are another backend's: they say nothing of these rules
                    f"compiled for backend {manifest.get('backend')!r}, not {self.backend!r} (--backend): "
                    "compile the artefacts for the backend the node runs",
                    str(path),
                    path="backend",
                )
            files = manifest.get("files") or {}
            if not isinstance(files, dict) or not all(
                isinstance(sha, str) and _plain(name) for name, sha in files.items()
            ):
                raise InputError(
                    "must map the folder's file names to sha256 digests", str(path), path="files"
                )
            for name, sha in sorted(files.items()):
                try:
                    actual = hashlib.sha256((folder / name).read_bytes()).hexdigest()
                except OSError as exc:
                    raise InputError(f"cannot read {name}: {exc.strerror}", str(folder / name)) from None
                if actual != sha:
                    raise InputError(f"{name} does not match the manifest's sha256", str(folder / name))
            programs[spec.name] = decode(manifest["program"], str(path))
            hashes.append(hashlib.sha256(data).hexdigest())
        self._digest = _digest(hashes)
        return Artefacts(programs)

    def digest(self) -> str:
        return self._digest


class FileInventory:
    def __init__(self, path: str) -> None:
        self.path = path
        self._sha256 = ""

    def read(self) -> list[Any]:
        found = read_inventory_documents(self.path)
        check_whole(found.documents, found.name, found.text)  # a failed command's words: no "no pods"
        self._sha256 = found.sha256
        return list(found.documents)

    def digest(self) -> str:
        return self._sha256


class ApiPolicies:
    """Policy objects from the watch cache, each written out as JSON named ``api:<kind>/<ns>/<name>``
    so that a bad one is reported with line, column and field path like a file. An object is read
    again only when the API changed it (the cache holds the very same dict until then).

    Once a read has succeeded, an object that stops reading keeps its last good policies and a new
    bad one is left out (``errors``): one tenant's MultiNetworkPolicy, which the API validates
    less, held every policy change on every network of every node. The first read is all or
    nothing, so that an agent never starts with a policy missing (that could open pods the
    kernel still isolates), but for the objects an earlier agent held (``store``: their last good
    versions, or none for one left out): a restart with one bad policy loaded nothing, so pod churn
    went unapplied until it was fixed."""

    def __init__(self, cache: Cache, resources: Sequence[Resource], store: HeldStore | None = None) -> None:
        self.cache, self.resources, self.store = cache, list(resources), store
        # name -> (the object, its policies (None: new and bad, left out), its last good object)
        self._read: dict[str, tuple[dict[str, Any], Loaded | None, Mapping[str, Any] | None]] = {}
        self._good = False  # a read succeeded: objects are held one by one from now on
        self.errors: dict[str, InputError] = {}  # objects that do not read now
        self.fresh: list[InputError] = []  # the errors not yet reported (once per change)
        self._held: HeldObjects = store.load() if store is not None else {}  # as recorded

    def read(self) -> Loaded:
        parts: dict[str, tuple[dict[str, Any], Loaded | None, Mapping[str, Any] | None]] = {}
        errors: dict[str, InputError] = {}
        for resource in self.resources:
            for obj in self.cache.items(resource):
                meta = metadata(obj)  # not a mapping: reported at its field path
                name = f"api:{resource.name}/{meta.get('namespace', '')}/{meta.get('name', '')}"
                known = self._read.get(name)
                if known is not None and (known[0] is obj or known[0] == obj):  # a relist: equal objects
                    parts[name] = (obj, *known[1:])  # the cache's object: the next read finds it by identity
                    if name in self.errors:
                        errors[name] = self.errors[name]
                    continue
                try:
                    parts[name] = (obj, _read_object(name, obj), obj)
                except InputError as exc:
                    if known is not None:
                        last = known[1:]  # its last good policies
                    elif self._good:
                        last = (None, None)  # new and bad: left out
                    else:
                        last = self._recorded(name, exc)
                    errors[name] = exc
                    self.fresh.append(exc)
                    parts[name] = (obj, *last)
        self._read, self.errors, self._good = parts, errors, True
        self._record({(_POLICY, "", name): parts[name][2] or {} for name in errors})
        loaded = [part for _, part, _ in parts.values() if part is not None]
        return Loaded(
            tuple(p for part in loaded for p in part.policies),
            (),
            tuple(n for part in loaded for n in part.notes),
            tuple(f for part in loaded for f in part.files),
        )

    def _recorded(self, name: str, exc: InputError) -> tuple[Loaded | None, Mapping[str, Any] | None]:
        """At the first read, a bad object an earlier agent held: as it held it (its policies and
        last good object, or none when it left it out); any other is ``exc`` (all or nothing)."""
        good = self._held.get((_POLICY, "", name))
        if good is None:
            raise exc
        return (_read_object(name, dict(good)), good) if good else (None, None)

    def _record(self, held: HeldObjects) -> None:
        if self.store is not None and held != self._held:
            self.store.save(held)
            self._held = held

    def digest(self) -> str:
        return ""  # never asked: the watch only reports real changes, and the engine compares programs


_POLICY = "policy"  # a held policy object's kind in the record (an empty object: one left out)


def _read_object(name: str, obj: dict[str, Any]) -> Loaded:
    return read_policy_texts([(name, json.dumps(_clean(obj), indent=2, sort_keys=True))])


class ApiInventory:
    def __init__(self, cache: Cache) -> None:
        self.cache = cache

    def read(self) -> CacheJournal:
        return CacheJournal(self.cache, self.cache.seq)

    def digest(self) -> str:
        return ""  # never asked: a watch event is a change


@attrs.frozen
class CacheJournal:
    """The watch cache's namespaces and pods as read at change ``seq``: all of them (a first read)
    or what changed since an earlier read (a ``Journal``: a pod event costs that pod)."""

    cache: Cache
    seq: int

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter([*self.cache.items(NAMESPACES), *self.cache.items(PODS)])

    def since(self, seq: int) -> tuple[int, list[tuple[LiveKey, dict[str, Any] | None]]] | None:
        found = self.cache.changes((NAMESPACES, PODS), seq)
        if found is None:
            return None
        upto, changed = found
        return upto, [((r.kind, *key), obj) for r, key, obj in changed]

    def count(self, kind: str) -> int:
        return self.cache.count(NAMESPACES if kind == "Namespace" else PODS)


def _clean(obj: dict[str, Any]) -> dict[str, Any]:
    """Drop server-written bookkeeping a policy file would never hold (and the validator rejects
    nothing for): managedFields is large and says nothing about the policy."""
    meta = obj.get("metadata") or {}
    if isinstance(meta, dict):  # else left as it is, for the validator to report at its path
        meta = {k: v for k, v in meta.items() if k != "managedFields"}
    return {**{k: v for k, v in obj.items() if k != "status"}, "metadata": meta}


def _digest(value: object) -> str:
    return hashlib.sha256(repr(value).encode()).hexdigest() if value is not None else ""


POLL_S = 0.5  # how often a path not watched by a folder (one not there yet) is looked at


def _stat(path: str) -> tuple[int, int, int] | None:
    """What changes when a file is written or replaced (or a path appears): None when absent."""
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_ino, found.st_mtime_ns, found.st_size


def _identities(folders: Sequence[str]) -> list[tuple[int, int] | None]:
    """Which folders the paths name (device, inode): a folder replaced by another at the same path
    leaves the watch on the old one, which sees nothing more (an event on the folder itself says
    so too, where the new one took the old one's inode)."""
    out: list[tuple[int, int] | None] = []
    for folder in folders:
        try:
            found = os.stat(folder)
        except OSError:
            out.append(None)
        else:
            out.append((found.st_dev, found.st_ino))
    return out


def tree_stamp(paths: Sequence[str]) -> tuple[object, ...]:
    """What the files under ``paths`` are now (names, sizes, times), to tell whether they are
    still: a folder replaced by ``rm -r`` and ``cp -r`` is briefly missing, then fills up."""
    out: list[object] = []
    for root in paths:
        try:
            out.append((root, os.stat(root).st_ino))
        except OSError:
            out.append((root, None))
            continue
        for folder, folders, files in os.walk(root, followlinks=True):
            folders.sort()
            for name in sorted(files):
                try:
                    found = os.stat(os.path.join(folder, name))
                except OSError:
                    continue
                out.append((folder, name, found.st_size, found.st_mtime_ns))
    return tuple(out)


class FileWatcher(threading.Thread):
    """Calls ``notify()`` after any change under the given paths (recursively), symlink swaps
    included. A file is watched itself, not through its folder: changes to its neighbours (a log
    file written beside the inventory) are not changes of the input, and taking them for one
    made a bad input re-read and its error re-logged for every log line written. A path not
    there yet is looked at every ``POLL_S`` instead: watching the nearest folder that exists
    would watch it recursively (``--policies /missing`` watched all of ``/``,
    and failed on ``/proc`` every second)."""

    def __init__(self, paths: Sequence[str], notify: Callable[[], None], stop: threading.Event) -> None:
        super().__init__(name="watch-files", daemon=True)
        self.paths, self.notify, self.stop = [os.path.abspath(p) for p in paths], notify, stop

    def _targets(self) -> list[str]:
        return [os.path.realpath(p) for p in self.paths]

    def _concerns(self, path: str) -> bool:
        """Whether a change at ``path`` is at or under a watched path (or its target)."""
        for watched in {*self.paths, *self._targets()}:
            if path == watched or path.startswith(watched.rstrip("/") + "/"):
                return True
        return False

    def _roots(self) -> tuple[list[str], list[str]]:
        """What to watch: each folder and each file itself, through its links (a link swapped to
        another target, or a file replaced, is seen with the next batch of changes or within
        ``POLL_S`` without one: ``run`` compares the targets and the roots' inodes); and the
        paths to poll, those not there yet. No folder holding an input is watched: watches are
        recursive, and ``--inventory /var/lib/inv.json`` watched all of ``/var/lib``."""
        roots: set[str] = set()
        polled: list[str] = []
        for path in self.paths:
            if os.path.exists(path):
                roots.add(os.path.realpath(path))
            else:  # not there yet, or a link to nothing yet
                polled.append(path)
        # a root inside another is watched by it already
        inner = [r for r in roots if any(r != o and r.startswith(o.rstrip("/") + "/") for o in roots)]
        return sorted(roots - set(inner)), polled

    def run(self) -> None:
        while not self.stop.is_set():
            targets, (roots, polled) = self._targets(), self._roots()
            looked, folders = [_stat(p) for p in polled], _identities(roots)
            try:
                for changes in self._changes(roots):
                    if changes:
                        self.notify()
                    if [_stat(p) for p in polled] != looked:
                        self.notify()  # a polled path appeared, went or changed
                        break
                    if _identities(roots) != folders or any(path in roots for _, path in changes):
                        self.notify()  # a folder replaced at its path (mv; rm and cp, its inode maybe reused)
                        break
                    if self._targets() != targets or self._roots() != (roots, polled):
                        self.notify()  # a symlink points elsewhere, or a path appeared: watch anew
                        break
            except (OSError, RuntimeError) as exc:
                log.warning("watching %s: %s; retrying", ", ".join(self.paths), exc)
                self.notify()
                self.stop.wait(1.0)

    def _changes(self, roots: list[str]) -> Iterator[set[Any]]:
        """The watched changes, and an empty set every ``POLL_S`` without any."""
        if not roots:
            while not self.stop.wait(POLL_S):
                yield set()
            return
        yield from watchfiles.watch(
            *roots,
            watch_filter=lambda _change, path: path in roots or self._concerns(path),
            debounce=50,
            step=50,
            stop_event=self.stop,
            raise_interrupt=False,
            rust_timeout=int(POLL_S * 1000),
            yield_on_timeout=True,
        )
