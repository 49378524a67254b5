"""Writing results: a file replaced atomically, a folder of artefacts replaced all at once.

A reader (a boot script loading ``rules.v4``, a reviewer diffing the folder) sees the old
contents or the new, never a mix, and a failed write (full disk, read-only or immutable target,
a name too long) leaves the old contents and no temporary behind, and is reported as an
``OutputError`` rather than an exception.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
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
    write now are carried over, and the folders are swapped by two renames. A link to a folder
    is followed (the folder it names is replaced, the link kept); a mount point (a container's
    volume), which cannot be renamed, is written in place, file by file (``_write_in_place``)."""
    target = Path(folder)
    with _reported(target):
        if target.exists() and not target.is_dir():
            raise NotADirectoryError(20, "not a directory")
        if target.is_symlink():
            target = Path(os.path.realpath(target))
        if os.path.ismount(target):
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
                _carry_over(target, staging, files)
                os.rename(target, old)
            os.rename(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            if old.exists() and not target.exists():
                os.rename(old, target)
            raise
        shutil.rmtree(old, ignore_errors=True)


def _write_in_place(target: Path, files: Mapping[str, str]) -> None:
    """Each file replaced atomically, the manifest last, then npc's entries no longer written
    removed: a reader sees each file old or new, and the manifest names the new set once it is
    whole (a folder that cannot be renamed cannot be swapped all at once)."""
    written = {name.split("/")[0] for name in files}
    stale = [e for e in os.scandir(target) if e.name not in written and _npcs(target, e)]
    for name, text in sorted(files.items(), key=lambda item: item[0] == MANIFEST):
        path = target / name
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, text, keep_mode=path.exists())
    for entry in stale:
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)


def _carry_over(source: Path, staging: Path, files: Mapping[str, str]) -> None:
    """Hard links to the entries of the old folder that are not npc's (npc's: what the new tree
    writes, ``manifest.json`` and the files it lists, folders holding one), so others' files stay."""
    written = {name.split("/")[0] for name in files}
    theirs = [e for e in os.scandir(source) if e.name not in written and not _npcs(source, e)]
    for entry in theirs:
        if entry.is_dir(follow_symlinks=False):
            shutil.copytree(entry.path, staging / entry.name, symlinks=True, copy_function=os.link)
        else:
            os.link(entry.path, staging / entry.name, follow_symlinks=False)


def _npcs(folder: Path, entry: os.DirEntry[str]) -> bool:
    if entry.name == MANIFEST:
        return True
    if entry.is_dir(follow_symlinks=False):
        return (Path(entry.path) / MANIFEST).is_file()
    try:
        listed = json.loads((folder / MANIFEST).read_text(encoding="utf-8")).get("files", {})
    except (OSError, ValueError, AttributeError, RecursionError):  # not a manifest npc wrote
        return False
    return isinstance(listed, dict) and entry.name in listed
