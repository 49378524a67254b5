"""Element deltas handed to the kernel as one nfnetlink batch, without running ``nft``.

``nft -f`` of a few elements costs, on a table of thousands of sets and chains, the dump of every
set and chain it reads before any command (its cache; nft 1.0.6 cannot skip it): 60-80 ms at L,
for a pod event that changes a handful of elements. The batch below is what nft would send for
those ``add element``/``delete element`` lines - one transaction, which the kernel commits whole
or not at all - built from the same element text. Anything it cannot spell (an interval set's
ranges) is left to ``nft -f``.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Sequence

from ..netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_REQUEST, PROTOCOLS, attr, message, nest, string

NFNL_SUBSYS_NFTABLES = 10
NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END = 0x10, 0x11
NFT_MSG_NEWSETELEM, NFT_MSG_DELSETELEM = 12, 14
NFPROTO_INET, NFPROTO_UNSPEC = 1, 0  # npc's table is an inet one
LIST_TABLE, LIST_SET, LIST_ELEMENTS, LIST_ELEM = 1, 2, 3, 1  # NFTA_SET_ELEM_LIST_*, NFTA_LIST_ELEM
ELEM_KEY, ELEM_DATA = 1, 2  # NFTA_SET_ELEM_*
DATA_VALUE, DATA_VERDICT = 1, 2  # NFTA_DATA_*
VERDICT_CODE, VERDICT_CHAIN = 1, 2  # NFTA_VERDICT_*
VERDICTS = {"accept": 1, "drop": 0, "jump": -3, "goto": -4}
# elements per batch (a map's jump element takes about 60 bytes; a batch is one datagram, which
# must fit the socket's send buffer, ~200 KiB): beyond this (a namespace relabelled), nft -f
MOST = 1000
PER_MESSAGE = 256  # elements per message, well inside a netlink message's size


def _key(text: str) -> bytes:
    """An element key as the kernel holds it: the address, then (a named-port set's
    concatenation) the protocol and port, each field in 4 bytes. ValueError for a range."""
    address, *rest = text.split(" . ")
    packed = ipaddress.ip_address(address).packed
    if not rest:
        return packed
    protocol, port = rest
    return packed + bytes([PROTOCOLS[protocol], 0, 0, 0]) + int(port).to_bytes(2, "big") + b"\0\0"


def _element(text: str, keys_only: bool) -> bytes:
    """``10.0.0.1``, ``10.0.0.1 . tcp . 80`` or a map's ``10.0.0.1 : jump p-x`` (``drop``)."""
    key, _, data = text.partition(" : ")
    attrs = [nest(ELEM_KEY, attr(DATA_VALUE, _key(key)))]
    if data and not keys_only:
        verdict, _, chain = data.partition(" ")
        code = [attr(VERDICT_CODE, struct.pack("!i", VERDICTS[verdict]))]
        if chain:
            code.append(string(VERDICT_CHAIN, chain))
        attrs.append(nest(ELEM_DATA, nest(DATA_VERDICT, *code)))
    return nest(LIST_ELEM, *attrs)


def element_batch(
    table: str, diffs: Sequence[tuple[str, Sequence[str], Sequence[str]]]
) -> tuple[bytes, list[str]] | None:
    """The batch deleting and adding ``diffs``' elements (set or map, elements to delete, to add)
    in table ``inet table``, and per message (each asks for an acknowledgement) its set; None
    when an element is not one this spells, or there are too many (then ``nft -f``)."""
    if sum(len(drop) + len(put) for _, drop, put in diffs) > MOST:
        return None
    messages: list[bytes] = []
    names: list[str] = []
    try:
        for name, drop, put in diffs:
            for kind, elements in ((NFT_MSG_DELSETELEM, drop), (NFT_MSG_NEWSETELEM, put)):
                flags = NLM_F_REQUEST | NLM_F_ACK | (NLM_F_CREATE if kind == NFT_MSG_NEWSETELEM else 0)
                for start in range(0, len(elements), PER_MESSAGE):
                    chunk = elements[start : start + PER_MESSAGE]
                    body = string(LIST_TABLE, table) + string(LIST_SET, name)
                    body += nest(LIST_ELEMENTS, *(_element(e, kind == NFT_MSG_DELSETELEM) for e in chunk))
                    messages.append(
                        message(
                            NFNL_SUBSYS_NFTABLES << 8 | kind, flags, len(messages) + 2, NFPROTO_INET, body
                        )
                    )
                    names.append(name)
    except (ValueError, KeyError):
        return None
    if not messages:
        return b"", []
    begin = message(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 1, NFPROTO_UNSPEC, b"", NFNL_SUBSYS_NFTABLES)
    end = message(
        NFNL_MSG_BATCH_END, NLM_F_REQUEST, len(messages) + 2, NFPROTO_UNSPEC, b"", NFNL_SUBSYS_NFTABLES
    )
    return begin + b"".join(messages) + end, names
