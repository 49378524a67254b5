"""nfnetlink framing shared by the backends that hand the kernel messages themselves (nftables'
element deltas, ipset's new sets): attributes, nests and the message header."""

from __future__ import annotations

import struct

NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
NLA_F_NESTED, NLA_F_NET_BYTEORDER = 0x8000, 0x4000
PROTOCOLS = {"tcp": 6, "udp": 17, "sctp": 132}


def attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def nest(kind: int, *attrs: bytes) -> bytes:
    return attr(kind | NLA_F_NESTED, b"".join(attrs))


def string(kind: int, text: str) -> bytes:
    return attr(kind, text.encode() + b"\0")


def message(kind: int, flags: int, seq: int, family: int, body: bytes, res_id: int = 0) -> bytes:
    """A netlink header and an nfgenmsg (``family``, version 0, ``res_id``), then ``body``."""
    header = struct.pack("=IHHII", 20 + len(body), kind, flags, seq, 0)
    return header + struct.pack("=BB", family, 0) + res_id.to_bytes(2, "big") + body
