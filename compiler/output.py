"""Writing results: a file replaced atomically, a folder of artefacts replaced all at once.

A reader (a boot script loading ``rules.v4``, a reviewer diffing the folder) sees the old
contents or the new, never a mix, and a failed write (full disk, read-only or immutable target,
a name too long) leaves the old contents and no temporary behind, and is reported as an
``OutputError`` rather than an exception.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from .backends.base import write_atomic
from .errors import NpcError
from .frontends.positions import printable

MANIFEST = "manifest.json"


class OutputError(NpcError):
    """A result could not be written; whatever was there before stays (exit 3)."""

    exit_code = 3


class MixedOutputError(OutputError):
    """A folder written in place failed, and so did putting its old files back (exit 4)."""

    exit_code = 4


@contextlib.contextmanager
def _reported(path: str | Path) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise OutputError(
            f"npc: error: cannot write {printable(str(path))}: {exc.strerror or exc}; nothing was changed"
        ) from None


def write_file(path: str | Path, text: str) -> None:
    """``text`` into ``path`` by the one atomic writer (an existing file keeps its mode)."""
    target = Path(path)
    with _reported(target):
        if target.is_dir():
            raise IsADirectoryError(21, "is a directory")
        write_atomic(target, text, keep_mode=target.exists())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_folder(folder: str | Path, files: Mapping[str, str]) -> None:
    """Every file of ``files`` (names may hold ``/``) into ``folder``, replacing what npc wrote there
    before all at once: the new tree is built in a sibling temporary folder, entries npc does not
    write now are carried over, and the folders are swapped by two renames. The path is resolved
    first (a link to a folder is followed and kept; ``..`` and ``.`` are the folders they name).
    A folder that cannot be renamed (a mount point, a container's volume, a bind mount) or holds
    another filesystem is written in place (``_write_in_place``)."""
    with _reported(folder):
        target = Path(os.path.realpath(folder))
        if target.exists() and not target.is_dir():
            raise NotADirectoryError(20, "not a directory")
        if target.is_dir() and (os.path.ismount(target) or _holds_mounts(target)):
            _write_in_place(target, files)
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name[:200]}.", suffix=".new", dir=target.parent))
        old = staging.with_suffix(".old")
        try:
            for name, text in sorted(files.items()):
                path = staging / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="utf-8")
            os.chmod(staging, 0o777 & ~_umask())
            if target.exists():
                shutil.copymode(target, staging)
                try:
                    _carry_over(target, staging, files)
                    os.rename(target, old)
                except (OSError, shutil.Error) as exc:
                    if isinstance(exc, OSError) and exc.errno not in (errno.EBUSY, errno.EXDEV):
                        raise
                    shutil.rmtree(staging)  # a bind mount of the same filesystem, or one inside
                    _write_in_place(target, files)
                    return
            os.rename(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            if old.exists() and not target.exists():
                os.rename(old, target)
            raise
        if old.exists():
            shutil.rmtree(old, onerror=_left_behind)


def _left_behind(_: object, path: object, exc: object) -> None:
    """The new folder is in place; what of the old one cannot go (an immutable file) is said."""
    reason = exc[1] if isinstance(exc, tuple) else exc
    print(
        f"npc: warning: could not remove {printable(str(path))} of the replaced output: {reason}",
        file=sys.stderr,
    )


def _holds_mounts(folder: Path) -> bool:
    return any(e.is_dir(follow_symlinks=False) and os.path.ismount(e.path) for e in os.scandir(folder))


def _write_in_place(target: Path, files: Mapping[str, str]) -> None:
    """Each file replaced atomically, the manifest last, then npc's entries no longer written
    removed. Each replaced file's old contents are kept under a second name (a hard link: no space
    needed) until all are written, so a failure (a full volume) puts every one back: the folder
    is old or new, as after a swap, though a reader may see it change file by file."""
    stale, _ = _unwritten(target, files)
    done: list[tuple[Path, Path | None]] = []  # each file written, and its old contents' link
    try:
        for name, text in sorted(files.items(), key=lambda item: item[0] == MANIFEST):
            path = target / name
            path.parent.mkdir(parents=True, exist_ok=True)
            kept = path.with_name(f".{path.name}.{os.getpid()}.old") if path.is_file() else None
            if kept is not None:
                os.link(path, kept)
            done.append((path, kept))
            write_atomic(path, text, keep_mode=kept is not None)
    except BaseException:
        failed = []
        for path, kept in reversed(done):
            try:
                if kept is None:
                    path.unlink(missing_ok=True)
                else:
                    os.replace(kept, path)
                    kept.unlink(missing_ok=True)  # both one file's names (its write failed): rename left both
            except OSError as exc:
                failed.append(f"{printable(str(path))}: {exc.strerror or exc}")
        if failed:
            raise MixedOutputError(
                f"npc: error: cannot write {printable(str(target))}, and putting its old files back "
                f"failed too ({'; '.join(failed)}): it holds old and new files"
            ) from None
        raise
    for _, kept in done:
        if kept is not None:
            os.unlink(kept)
    for entry in stale:
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)


def _carry_over(source: Path, staging: Path, files: Mapping[str, str]) -> None:
    """Hard links to the entries of the old folder that are not npc's (npc's: what the new tree
    writes, ``manifest.json`` and the files it lists, folders holding one), so others' files stay."""
    _, theirs = _unwritten(source, files)
    for entry in theirs:
        if entry.is_dir(follow_symlinks=False):
            shutil.copytree(entry.path, staging / entry.name, symlinks=True, copy_function=os.link)
        else:
            os.link(entry.path, staging / entry.name, follow_symlinks=False)


def _unwritten(
    folder: Path, files: Mapping[str, str]
) -> tuple[list[os.DirEntry[str]], list[os.DirEntry[str]]]:
    """The folder's entries ``files`` does not write: npc's (``manifest.json``, the files it lists,
    folders holding one of npc's) and the others'."""
    written = {name.split("/")[0] for name in files}
    listed = _listed(folder) or {}
    npcs: list[os.DirEntry[str]] = []
    theirs: list[os.DirEntry[str]] = []
    for entry in os.scandir(folder):
        if entry.name in written:
            continue
        if entry.name == MANIFEST:
            ours = True
        elif entry.is_dir(follow_symlinks=False):
            ours = _listed(Path(entry.path)) is not None
        else:
            ours = entry.name in listed
        (npcs if ours else theirs).append(entry)
    return npcs, theirs


def _listed(folder: Path) -> dict[str, object] | None:
    """The files the folder's manifest lists, when it is a manifest npc wrote (another program's
    ``manifest.json``, a web app's, names nothing of npc's)."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("npc"), str):
        return None
    listed = manifest.get("files")
    return listed if isinstance(listed, dict) else None
