"""New sets created and filled over netlink (nfnetlink's ipset subsystem), without ``ipset restore``.

Profiled at the mixed L (4,210 sets, 546k members): ``ipset restore`` took 3.7-4.1 s, most of it
libipset's work per line - a resolver call per address (glibc's ``getaddrinfo`` stats
``/etc/resolv.conf`` each time), ``/etc/protocols`` read per ``ip,port`` member, the set looked up
by name along the sets it has seen - and about 1 s the kernel's. The messages below are the ones
``ipset restore`` sends (compared with its ``strace``: the same but for the line numbers it gives
each member), built from the same member text; ``tests/test_ipset_netlink.py`` checks on a kernel
that they make the same sets.

Only creating new sets goes this way (``load.create_new_sets``: ``npc apply`` and the agent's
policy changes). Swaps, member changes in place and destroys stay ``ipset restore`` lines: few,
and their retry on a busy set is that tool's.
"""

from __future__ import annotations

import errno
import functools
import os
import socket
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence

import attrs

from ..base import SendsNetfilter
from ..netlink import (
    NLA_F_NESTED,
    NLA_F_NET_BYTEORDER,
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_EXCL,
    NLM_F_REQUEST,
    PROTOCOLS,
    attr,
    message,
    nest,
    string,
)
from .render import LIST_SET, PORT_SET, SetText

NFNL_SUBSYS_IPSET = 6
CMD_CREATE, CMD_ADD, CMD_TYPE = 2, 9, 13
PROTOCOL = 7  # IPSET_PROTOCOL of every kernel since 3.x (minimum 6)
# command attributes
A_PROTOCOL, A_SETNAME, A_TYPENAME, A_REVISION, A_FAMILY, A_DATA, A_ADT, A_LINENO = 1, 2, 3, 4, 5, 7, 8, 9
# data attributes
D_IP, D_CIDR, D_PORT, D_PROTO, D_CADT_FLAGS, D_HASHSIZE, D_MAXELEM, D_SKBMARK = 1, 3, 4, 7, 8, 18, 19, 27
D_PORT_TO = 5  # with D_PORT, a bitmap:port's range
D_SIZE = 23  # a list:set's size
D_NAME = 18  # an ADT attribute: a list:set's member (the create attribute 18 is the hash size)
IPADDR_IPV4, IPADDR_IPV6 = 1, 2
FLAG_NOMATCH, FLAG_WITH_SKBINFO = 1 << 2, 1 << 6
FAMILIES = {"inet": socket.AF_INET, "inet6": socket.AF_INET6}
NFPROTO = {"inet": 2, "inet6": 10, "": 0}  # a list:set has no family (NFPROTO_UNSPEC)
ADT_BYTES = 60_000  # members per message: its ADT attribute's 16-bit length
SEND_BYTES = 128 << 10  # messages per datagram: inside the socket's send buffer (~200 KiB)
# and at most SEND_MESSAGES: a fresh namespace's kernel grows its list of sets 64 at a time,
# waiting a grace period each time, and a datagram of 1,024 creations waits 16 of them in one
# call, the interpreter's lock free meanwhile (64 per datagram: 1.9 s for the 9,000 sets of the
# independent L, 1,024: 1.45 s)
SEND_MESSAGES = 1024
# the least that goes at once while the next sets are built (``create_sets``'s ``ready``): each
# datagram costs a socket; at the independent L the first sets then go 0.4 s sooner
EARLY_MESSAGES = 16
ERRORS = {  # ipset's own error numbers (linux/netfilter/ipset/ip_set.h), and its EEXIST
    errno.EEXIST: "a set of that name exists already",
    4097: "protocol error",
    4098: "the kernel has no such set type (ip_set module not loaded?)",
    4099: "the kernel's maximal number of sets is reached",
    4102: "set type mismatch",
    4103: "an element is in the set twice",
    4104: "invalid CIDR",
    4106: "invalid family",
    4114: "skbinfo not supported by the set",
    4352: "the set is full (a list:set: a member set does not exist)",  # type-specific
}


def _net32(kind: int, value: int) -> bytes:
    return attr(kind | NLA_F_NET_BYTEORDER, struct.pack("!I", value))


def _port(kind: int, text: str) -> bytes:
    if not text.isdigit() or int(text) > 65535:
        raise MemberError(f"{text!r} is not a port")
    return attr(kind | NLA_F_NET_BYTEORDER, struct.pack("!H", int(text)))


def _ipset(command: int, flags: int, body: bytes) -> bytes:
    return message(NFNL_SUBSYS_IPSET << 8 | command, flags, 0, socket.AF_INET, body)


_PROTOCOL = attr(A_PROTOCOL, bytes([PROTOCOL]))  # the first attribute of every command


def _head(name: str) -> bytes:
    return _PROTOCOL + string(A_SETNAME, name)


class MemberError(ValueError):
    """What cannot be sent: a member or set option npc cannot spell on the wire (members are
    npc's own rendering, so a bug), or a set type the kernel does not have."""


def _tail(rest: str, nomatch: bool, kind: str, family: str) -> bytes:
    """A member's attributes after its address: ``rest`` is what follows the address (``tcp:80``
    of ``10.0.0.1,tcp:80``, ``8`` of ``10.0.0.0/8``, ``skbmark 0x10/0xf000007f``)."""
    attrs: list[bytes] = []
    if kind == "hash:ip,port":
        protocol, _, port = rest.partition(":")
        if protocol not in PROTOCOLS or not port.isdigit() or int(port) > 65535:
            raise MemberError(f"{rest!r} is not protocol:port")
        attrs = [attr(D_PORT | NLA_F_NET_BYTEORDER, struct.pack("!H", int(port))),
                 attr(D_PROTO, bytes([PROTOCOLS[protocol]]))]  # fmt: skip
    elif kind == "hash:net":
        width = 32 if family == "inet" else 128
        if rest and (not rest.isdigit() or not 0 < int(rest) <= width):
            raise MemberError(f"{rest!r} is not a prefix length")
        attrs = [attr(D_CIDR, bytes([int(rest) if rest else width]))]
    elif kind != "hash:ip":
        raise MemberError(f"set type {kind} is not spelled here")
    elif rest:
        option, _, value = rest.partition(" ")
        mark, _, mask = value.partition("/")
        try:
            if option != "skbmark":
                raise ValueError(option)
            attrs.append(
                attr(
                    D_SKBMARK | NLA_F_NET_BYTEORDER,
                    struct.pack("!II", int(mark, 0), int(mask or "0xffffffff", 0)),
                )
            )
        except (ValueError, struct.error):
            raise MemberError(f"{rest!r} is not skbmark mark/mask") from None
    if nomatch:
        attrs.append(_net32(D_CADT_FLAGS, FLAG_NOMATCH))
    return b"".join(attrs)


SEPARATOR = {"hash:ip": " ", "hash:ip,port": ",", "hash:net": "/"}  # after a member's address


def members_data(spec: SetText) -> list[bytes]:
    """Each member as ``ipset restore`` sends it (an ``IPSET_ATTR_DATA``). Members of a set share
    a few shapes, so each shape's bytes are made once and a member costs its address. A
    ``list:set``'s members are set names."""
    if spec.type == LIST_SET:
        return [nest(A_DATA, string(D_NAME, name)) for name, _ in spec.members]
    if spec.type == PORT_SET:
        return [nest(A_DATA, _port(D_PORT, text)) for text, _ in spec.members]
    width = 4 if spec.family == "inet" else 16
    address_kind = IPADDR_IPV4 if spec.family == "inet" else IPADDR_IPV6
    ip = struct.pack("=HHHH", 8 + width, D_IP | NLA_F_NESTED, 4 + width, address_kind | NLA_F_NET_BYTEORDER)
    pton, family, separator = socket.inet_pton, FAMILIES[spec.family], SEPARATOR.get(spec.type, " ")
    split = [(*text.partition(separator)[::2], nomatch) for text, nomatch in spec.members]
    shapes: dict[tuple[str, bool], tuple[bytes, bytes]] = {}
    for rest, nomatch in {(r, n) for _, r, n in split}:
        tail = _tail(rest, nomatch, spec.type, spec.family)
        shapes[rest, nomatch] = (
            struct.pack("=HH", 4 + len(ip) + width + len(tail), A_DATA | NLA_F_NESTED) + ip,
            tail,
        )
    try:
        if len(shapes) == 1:
            ((head, tail),) = shapes.values()
            return [head + pton(family, address) + tail for address, _, _ in split]
        return [shapes[r, n][0] + pton(family, a) + shapes[r, n][1] for a, r, n in split]
    except OSError:
        for address, _, _ in split:
            try:
                pton(family, address)
            except OSError:
                raise MemberError(f"{address!r} is not an {spec.family} address") from None
        raise


def set_messages(spec: SetText, revision: int, create: bool = True, fill: bool = True) -> Iterator[bytes]:
    """The CREATE message of ``spec`` (``create``), then ADD messages holding its members (``fill``)."""
    if create:
        yield _create_message(spec, revision)
    if fill:
        yield from _add_messages(spec)


def _create_message(spec: SetText, revision: int) -> bytes:
    sizes = _net32(D_HASHSIZE, spec.hashsize) + _net32(D_MAXELEM, spec.maxelem)
    if spec.type == LIST_SET:
        sizes = _net32(D_SIZE, spec.maxelem)
    elif spec.type == PORT_SET:
        option, _, span = spec.options.strip().partition(" ")
        lo, _, hi = span.partition("-")
        if option != "range":
            raise MemberError(f"set option {spec.options.strip()!r} is not spelled here")
        sizes = _port(D_PORT, lo) + _port(D_PORT_TO, hi)
    elif spec.options.split() == ["skbinfo"]:
        sizes = _net32(D_CADT_FLAGS, FLAG_WITH_SKBINFO) + sizes
    elif spec.options.strip():
        raise MemberError(f"set option {spec.options.strip()!r} is not spelled here")
    return _ipset(
        CMD_CREATE,
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_EXCL | NLM_F_CREATE,
        _head(spec.name)
        + string(A_TYPENAME, spec.type)
        + attr(A_REVISION, bytes([revision]))
        + attr(A_FAMILY, bytes([NFPROTO[spec.family]]))
        + nest(A_DATA, sizes),
    )


def _add_messages(spec: SetText) -> Iterator[bytes]:
    head = _head(spec.name) + _net32(A_LINENO, 0)  # the kernel wants a line number beside ADT
    flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_EXCL
    data = members_data(spec)
    chunks: list[list[bytes]]
    if len({len(d) for d in data}) == 1:  # one shape: as many per message as fit
        step = ADT_BYTES // len(data[0])
        chunks = [data[i : i + step] for i in range(0, len(data), step)]
    else:
        chunks, size = [[]], 0
        for member in data:
            if size + len(member) > ADT_BYTES:
                chunks.append([])
                size = 0
            chunks[-1].append(member)
            size += len(member)
    for chunk in chunks:
        if chunk:
            yield _ipset(CMD_ADD, flags, head + nest(A_ADT, *chunk))


def _reason(number: int) -> str:
    return ERRORS.get(number) or os.strerror(number)


def revision(run: SendsNetfilter, kind: str, family: str) -> int:
    """The newest revision of set type ``kind`` the kernel has for ``family`` (as libipset asks)."""
    body = _PROTOCOL + string(A_TYPENAME, kind) + attr(A_FAMILY, bytes([NFPROTO[family]]))
    answers: list[bytes] = []
    errors = run.netfilter(_ipset(CMD_TYPE, NLM_F_REQUEST | NLM_F_ACK, body), 1, answers)
    if any(errors):
        raise MemberError(f"the kernel has no set type {kind} for {family}: {_reason(errors[0])}")
    for answer in answers:
        at = 20
        while at + 4 <= len(answer):
            length, found = struct.unpack_from("=HH", answer, at)
            if found & 0x3FFF == A_REVISION and length >= 5:
                return answer[at + 4]
            at += max(4, (length + 3) & ~3)
    raise MemberError(f"the kernel did not say which revisions of {kind} it has")


def create_sets(
    run: SendsNetfilter,
    specs: Iterable[SetText],
    create: bool = True,
    fill: bool = True,
    ready: Callable[[], bool] | None = None,
) -> str:
    """Create (``create``) and fill (``fill``) ``specs``, in order; the first refusal ("" if
    none). The kernel goes on with a datagram's later messages after a refusal, so after one,
    which sets exist is for the caller to list. ``ready``: whether ``specs`` has its next at
    once (they are being built); when not, the messages batched go now (at least
    ``EARLY_MESSAGES``), so the kernel works while the next are built."""
    asked = functools.cache(functools.partial(revision, run)) if create else None
    return _send_all(run, _messages(specs, asked, fill, ready is not None), ready)


def send_built(run: SendsNetfilter, built: Built) -> str:
    """Messages ``fill_messages`` built ahead, as ``create_sets`` sends its own."""
    return built.error or _send_all(run, built.messages)


def _send_all(
    run: SendsNetfilter,
    messages: Iterable[tuple[str, bytes] | None],
    ready: Callable[[], bool] | None = None,
) -> str:
    """``messages`` (each with its set's name; None after a set's last) in datagrams of at most
    ``SEND_BYTES`` and ``SEND_MESSAGES``, and early while ``ready`` says the next set is not built
    yet; the first refusal ("" if none)."""
    batch: list[bytes] = []
    owners: list[str] = []  # per message, its set
    size = 0
    try:
        for item in messages:
            if item is None:  # a set's last message
                if ready is not None and len(batch) >= EARLY_MESSAGES and not ready():
                    if error := _send(run, batch, owners):
                        return error
                    batch, owners, size = [], [], 0
                continue
            owner, message = item
            if batch and (size + len(message) > SEND_BYTES or len(batch) == SEND_MESSAGES):
                if error := _send(run, batch, owners):
                    return error
                batch, owners, size = [], [], 0
            batch.append(message)
            owners.append(owner)
            size += len(message)
        return _send(run, batch, owners) if batch else ""
    except MemberError as exc:
        return str(exc)
    except OSError as exc:
        return f"netlink to ipset failed: {exc}"


def _messages(
    specs: Iterable[SetText], revision_of: Callable[[str, str], int] | None, fill: bool, ends: bool = False
) -> Iterator[tuple[str, bytes] | None]:
    """Each message of ``specs`` with its set's name, and (``ends``) None after each set's; the
    CREATE messages with the revisions ``revision_of`` gives (None: none created)."""
    for spec in specs:
        number = revision_of(spec.type, spec.family) if revision_of else 0
        for made in set_messages(spec, number, revision_of is not None, fill):
            yield spec.name, made
        if ends:
            yield None


@attrs.frozen
class Built:
    """Sets' members as messages, built before they are sent: a first load builds them while
    the kernel creates the sets, which leaves the interpreter idle (0.37 s at the independent
    L), and fills them beside the restores, which have both cores busy."""

    messages: tuple[tuple[str, bytes], ...] = ()
    error: str = ""  # a member npc cannot spell (``MemberError``): then nothing is sent


def fill_messages(specs: Iterable[SetText]) -> Built:
    try:
        return Built(tuple(m for m in _messages(specs, None, fill=True) if m is not None))
    except MemberError as exc:
        return Built(error=str(exc))


def _send(run: SendsNetfilter, batch: Sequence[bytes], owners: Sequence[str]) -> str:
    """One datagram, its messages numbered and the last alone asking for an acknowledgement: the
    kernel handles a datagram's messages in order as it is sent and acknowledges a refusal
    whatever its flags, so the last's answer comes after every other's. An acknowledgement per
    message took a receive each, and each took the interpreter's lock back from the rendering
    beside it (at the independent L, 9,000 creations' receives delayed the restores 0.3 s)."""
    data = bytearray(b"".join(batch))
    at = 0
    for number, each in enumerate(batch, 1):
        (flags,) = struct.unpack_from("=H", data, at + 6)
        quiet = flags & ~NLM_F_ACK if number < len(batch) else flags | NLM_F_ACK
        struct.pack_into("=HI", data, at + 6, quiet, number)
        at += len(each)
    refusals: list[bytes] = []
    errors = run.netfilter(bytes(data), 1, refusals)
    if not any(errors):
        return ""
    for refusal in refusals:  # its error, then the refused request's header (its number at 8)
        number, (refused,) = -struct.unpack_from("=i", refusal, 16)[0], struct.unpack_from("=I", refusal, 28)
        if number and 0 < refused <= len(owners):
            return f"set {owners[refused - 1]}: {_reason(number)}"
    return f"a set of {owners[0]} ... {owners[-1]}: {_reason(errors[0])}"
