"""Text from files and stdin, read one way: UTF-8, one leading byte-order mark dropped, bytes hashed.

Policy files, the inventory, the networks file and ``.npc`` files all come through here, so they
agree on encodings. Only regular files are read: a FIFO nobody writes to or ``/dev/zero`` would
block or grow forever, so such a path is refused with ``NotRegularFile`` (sources skip it).
"""

from __future__ import annotations

import hashlib
import os
import stat
from typing import TextIO

import attrs

from .errors import InputError
from .frontends.positions import printable

STDIN_NAME = "<stdin>"
_BOM = "\ufeff"
UTF8_BOM = _BOM.encode()  # the byte-order mark decoding drops


@attrs.frozen
class Text:
    name: str  # as shown to the user
    text: str
    sha256: str  # of the bytes as read, for the manifest


class NotRegularFile(InputError):
    """The path is a FIFO, device or socket: reading it could block or never end."""


def decode(data: bytes, name: str, *, digest: bool = True) -> Text:
    """``digest``: hash the bytes (what only a manifest shows; a command writing none may skip it)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"not valid UTF-8 (byte offset {exc.start})", name) from None
    return Text(name, text.removeprefix(_BOM), hashlib.sha256(data).hexdigest() if digest else "")


_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device"}


def read_text(path: str, what: str = "") -> Text:
    """The text of the regular file ``path``; ``what`` ("inventory") names it in errors."""
    return decode(read_bytes(path, what), printable(path))


def read_bytes(path: str, what: str = "") -> bytes:
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
    with os.fdopen(fd, "rb") as fh:
        try:
            data = fh.read()
        except OSError as exc:
            raise InputError(prefix + (exc.strerror or str(exc)), name) from None
    return data


def read_stdin(stream: TextIO | None) -> Text:
    """All of stdin, decoded by the same rule as files (not by the locale)."""
    if stream is None or stream.closed:
        raise InputError("cannot read: stdin is closed", STDIN_NAME)
    try:
        buffer = getattr(stream, "buffer", None)
        if buffer is not None:
            return decode(buffer.read(), STDIN_NAME)
        text = stream.read()
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror or exc}", STDIN_NAME) from None
    except UnicodeDecodeError as exc:
        raise InputError(f"not valid UTF-8 (byte offset {exc.start})", STDIN_NAME) from None
    return Text(
        STDIN_NAME, text.removeprefix(_BOM), hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()
    )
