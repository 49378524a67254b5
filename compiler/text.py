"""Text from files and stdin, read one way: UTF-8, one leading byte-order mark dropped, bytes hashed.

Policy files, the inventory, the networks file and ``.npc`` files all come through here, so they
agree on encodings. Only regular files are read: a FIFO nobody writes to or ``/dev/zero`` would
block or grow forever, so such a path is refused with ``NotRegularFile`` (sources skip it).
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from typing import TextIO

import attrs

from .documents import position
from .errors import InputError
from .frontends.positions import printable

STDIN_NAME = "<stdin>"
_BOM = "\ufeff"
UTF8_BOM = _BOM.encode()  # the byte-order mark decoding drops


# npc's language on stdin: its first line other than blank or `#` opens a policy or a macro (no
# Kubernetes object is either: YAML reads it as one string, which is an error there)
_DSL_START = re.compile(r"\A(?:[ \t]*(?:#[^\n]*)?\r?\n)*+[ \t]*(?:policy\s|[A-Za-z_][A-Za-z0-9_]*[ \t]*=)")


@attrs.frozen
class Text:
    name: str  # as shown to the user
    text: str
    sha256: str  # of the bytes as read, for the manifest

    @property
    def in_npc_language(self) -> bool:
        """A ``.npc`` file, or stdin that starts as one does."""
        if self.name == STDIN_NAME:
            return _DSL_START.match(self.text) is not None
        return self.name.lower().endswith(".npc")


class NotRegularFile(InputError):
    """The path is a FIFO, device or socket: reading it could block or never end."""


def decode(data: bytes, name: str, *, digest: bool = True) -> Text:
    """``digest``: hash the bytes (what only a manifest shows; a command writing none may skip it)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = data[: exc.start].removeprefix(UTF8_BOM).decode("utf-8")  # valid up to there
        line, column = position(before, len(before))  # in characters, the mark dropped as decoded
        raise InputError(f"not valid UTF-8 (byte offset {exc.start})", name, line, column) from None
    return Text(name, text.removeprefix(_BOM), hashlib.sha256(data).hexdigest() if digest else "")


_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device"}


# A policy file above this is refused before it is read: parsed, YAML takes about six times its
# size in memory (a 300 MB file: 1.75 GB, and 17 s in which an agent's pod events waited), and
# the API server keeps each object under 1.5 MiB (a cluster's 10,000 policies in one List: 40 MB)
POLICY_FILE_BYTES = 128 << 20
# an inventory: kubectl's JSON of a 50,000-pod cluster is about 100 MiB (300 MiB with
# managedFields); parsed, JSON takes several times its size, so past this a node's agent would
# be killed for memory at every restart instead of keeping its last good inventory
INVENTORY_FILE_BYTES = 1 << 30


def read_text(path: str, what: str = "", limit: int | None = None) -> Text:
    """The text of the regular file ``path``; ``what`` ("inventory") names it in errors; a file
    larger than ``limit`` bytes is an error, unread."""
    return decode(read_bytes(path, what, limit), printable(path))


def _too_large(limit: int) -> str:
    return f"larger than {limit >> 20} MiB, npc's bound for one policy file: split it"


def read_bytes(path: str, what: str = "", limit: int | None = None) -> bytes:
    """The bytes of the regular file ``path``, as ``read_text`` reads them before decoding."""
    name = printable(path)
    prefix = f"cannot read {what}: " if what else "cannot read: "
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer before it can be refused
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise InputError(prefix + (exc.strerror or str(exc)), name) from None
    mode = os.fstat(fd).st_mode  # before fdopen, which refuses a directory with its own error
    if not stat.S_ISREG(mode):
        os.close(fd)
        if stat.S_ISDIR(mode):
            raise InputError(prefix + "is a directory", name)
        kind = _KINDS.get(stat.S_IFMT(mode), "a socket")
        raise NotRegularFile(f"{prefix}not a regular file ({kind})", name)
    if limit is not None and os.fstat(fd).st_size > limit:
        os.close(fd)
        raise InputError(_too_large(limit), name)
    with os.fdopen(fd, "rb") as fh:
        try:
            data = fh.read()
        except OSError as exc:
            raise InputError(prefix + (exc.strerror or str(exc)), name) from None
    return data


def read_stdin(stream: TextIO | None, limit: int | None = None) -> Text:
    """All of stdin, decoded by the same rule as files (not by the locale); more than ``limit``
    bytes (or characters, from a text stream) is an error."""
    if stream is None or stream.closed:
        raise InputError("cannot read: stdin is closed", STDIN_NAME)
    size = -1 if limit is None else limit + 1
    try:
        buffer = getattr(stream, "buffer", None)
        if buffer is not None:
            data = buffer.read(size)
            if limit is not None and len(data) > limit:
                raise InputError(_too_large(limit), STDIN_NAME)
            return decode(data, STDIN_NAME)
        text = stream.read(size)
        if limit is not None and len(text) > limit:
            raise InputError(_too_large(limit), STDIN_NAME)
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror or exc}", STDIN_NAME) from None
    except UnicodeDecodeError as exc:
        raise InputError(f"not valid UTF-8 (byte offset {exc.start})", STDIN_NAME) from None
    return Text(
        STDIN_NAME, text.removeprefix(_BOM), hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()
    )
