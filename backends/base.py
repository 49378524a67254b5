"""What every backend is: rendering (what the rules are) and loading (programming the kernel),
behind one protocol, plus the few helpers they share.

Like Calico felix keeps its ``rules/`` apart from its dataplane programming, a backend renders
artefacts from the compiled program without touching the kernel, and loads them through a
``Runner`` - the one door to the outside world, so tests can replace the kernel's tools and walk
every rollback path without root. The CLI, the agent and the benchmarks know backends only
through ``Backend``; a new dataplane is a new package, not a branch in any of them.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import weakref
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Concatenate, NoReturn, ParamSpec, Protocol, TypeVar, runtime_checkable

import attrs

from ..errors import ApplyError, MixedStateError, UsageError
from ..lock import DEFAULT_WAIT, held
from ..resolve import Entry

if TYPE_CHECKING:
    import jinja2

    from ..lower import Lowered
    from ..resolve import Compiled

DEFAULT_MARK = 0x1000000
# iptables: where a pod's namespace group goes in the mark, egress and ingress: 15 and 14 bits,
# every bit clear of kube-proxy's 0x4000/0x8000 and of DEFAULT_MARK; a code takes at most 11,
# the rest are flags (see backends/iptables/mark_tree.py)
DEFAULT_GROUP_MASKS = (0x0EFF3C00, 0xF00003FF)
_UNSAFE = re.compile(r"[^A-Za-z0-9 ._/:=@+-]")


def sanitise(text: str, limit: int) -> str:
    """``text`` reduced to a quote-, escape- and newline-free ASCII alphabet, at most ``limit`` bytes:
    the only form in which text from input (policy names) reaches rule text, as comments."""
    return _UNSAFE.sub("_", text)[:limit]


@attrs.frozen
class Options:
    """Rendering and loading choices a user may make; each backend reads the ones it has."""

    mark: int = DEFAULT_MARK  # iptables: the packet mark bit npc may use
    group_marks: tuple[int, int] = DEFAULT_GROUP_MASKS  # iptables: mark bits for egress, ingress groups
    iptables: str | None = None  # iptables: force the "legacy" or "nft" flavour
    wait: float = DEFAULT_WAIT  # load and reset: seconds to wait for this namespace's apply lock


def no_iptables_flavour(options: Options) -> None:
    """For a backend that runs no iptables: ``--iptables`` is a usage error, not ignored."""
    if options.iptables:
        raise UsageError("--iptables applies to the iptables-based backends (iptables, weave) only")


def no_marks(options: Options, backend: str) -> None:
    """For a backend that marks no packet: ``--mark`` and ``--group-marks`` are usage errors, not
    ignored (the output was byte for byte the same, as if they had been taken)."""
    for flag, given, default in (
        ("--mark", options.mark, DEFAULT_MARK),
        ("--group-marks", options.group_marks, DEFAULT_GROUP_MASKS),
    ):
        if given != default:
            raise UsageError(
                f"{flag} applies to the iptables backend only: --backend {backend} marks no packet"
            )


@attrs.frozen
class Ran:
    returncode: int
    stdout: str = ""
    stderr: str = ""


class Runner(Protocol):
    """Runs one command with ``stdin``; raises ApplyError when the program is missing."""

    def __call__(self, argv: Sequence[str], stdin: str = "") -> Ran: ...

    def which(self, program: str) -> bool: ...


TOOL_SECONDS = 300.0
TIMED_OUT = 124  # the return code of a tool killed for taking longer (coreutils' timeout's)


class SubprocessRunner:
    """The real kernel tools of this network namespace."""

    def __init__(self, timeout: float = TOOL_SECONDS) -> None:
        # A tool stuck in the kernel or on a lock nobody releases must fail the apply (which then
        # puts the previous state back), not hang an agent that its liveness probe calls alive.
        self.timeout = timeout

    def __call__(self, argv: Sequence[str], stdin: str = "") -> Ran:
        """The tool reads its input from an anonymous memory file written at once (no file
        system needed): fed through a pipe, 4 KiB per write, each write would wait for the
        interpreter's lock while another thread renders (``while_running``)."""
        try:
            with os.fdopen(os.memfd_create("npc-input", os.MFD_CLOEXEC), "w+b") as fh:
                fh.write(stdin.encode())
                fh.seek(0)
                done = subprocess.run(
                    list(argv),
                    stdin=fh,
                    capture_output=True,
                    text=True,
                    check=False,
                    pass_fds=held(),
                    timeout=self.timeout,
                )
        except FileNotFoundError:
            raise ApplyError(
                f"{argv[0]} not found: install it (Debian: apt-get install {_package(argv[0])})"
            ) from None
        except subprocess.TimeoutExpired:
            return Ran(TIMED_OUT, "", f"{argv[0]} did not finish in {self.timeout:g} s and was killed")
        return Ran(done.returncode, done.stdout, done.stderr)

    def together(self, calls: Sequence[tuple[Sequence[str], str]]) -> list[Ran]:
        with concurrent.futures.ThreadPoolExecutor(len(calls) or 1) as pool:
            return list(pool.map(lambda call: self(*call), calls))

    def which(self, program: str) -> bool:
        return shutil.which(program) is not None

    def netfilter(self, batch: bytes, replies: int, answers: list[bytes] | None = None) -> list[int]:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER) as sock:
            return netfilter_exchange(sock, batch, replies, answers)


@runtime_checkable
class RunsTogether(Protocol):
    """A runner that can run independent commands at once (each waits in its own thread)."""

    def together(self, calls: Sequence[tuple[Sequence[str], str]]) -> list[Ran]: ...


def run_together(run: Runner, calls: Sequence[tuple[Sequence[str], str]]) -> list[Ran]:
    """Commands that touch different kernel objects (IPv4's and IPv6's tables), at once where the
    runner can: each spends most of its time in its own userspace, and a node has cores."""
    if isinstance(run, RunsTogether):
        return run.together(calls)
    return [run(argv, stdin) for argv, stdin in calls]


T = TypeVar("T")


def while_running(run: Runner, commands: Callable[[], str], work: Callable[[], T]) -> tuple[str, T | None]:
    """``commands`` (the runner's; they return an error, or "") and ``work`` (Python, say rendering
    what comes next) at once where the runner can run commands from another thread: a restore
    waits on its tool, the interpreter need not. Else one after the other, and ``work`` only
    if ``commands`` succeeded. ``work``'s exception comes once ``commands`` are done; one of
    ``commands`` comes as it is (then ``work``'s, if any, is dropped)."""
    if not isinstance(run, RunsTogether):
        error = commands()
        return error, None if error else work()
    with concurrent.futures.ThreadPoolExecutor(1) as pool, prompt_handover():
        running = pool.submit(commands)
        try:
            done = work()
        finally:
            error = running.result()
    return error, None if error else done


HANDOVER_SECONDS = 0.0005


@contextlib.contextmanager
def prompt_handover() -> Iterator[None]:
    """The interpreter's lock handed between threads every ``HANDOVER_SECONDS`` (CPython's
    default: 5 ms) while a thread that mostly waits on the kernel runs beside Python work: it
    takes the lock back after each system call, and at 5 ms a wait, the independent L's set
    creation over netlink beside the rendering ended 0.25 s later (npc's load 5.4 s -> 5.16 s)."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(min(before, HANDOVER_SECONDS))
    try:
        yield
    finally:
        sys.setswitchinterval(before)


@runtime_checkable
class SendsNetfilter(Protocol):
    """A runner that can also hand the kernel of its namespace one nfnetlink batch itself."""

    def netfilter(self, batch: bytes, replies: int, answers: list[bytes] | None = None) -> list[int]:
        """Send ``batch`` (one transaction); the error numbers of the ``replies`` acknowledgements it
        asks for (0: done), in order, up to the first that is not 0 (a commit the kernel refuses
        as a whole is answered by that one error alone; a refusal is answered whether asked or
        not); the other messages the kernel answers with, and the refusals (each holding the
        refused request's header), go to ``answers``. OSError when the socket fails."""
        ...


NETLINK_NETFILTER = 12
SOL_NETLINK, NETLINK_CAP_ACK, SO_RCVBUFFORCE = 270, 10, 33
RECEIVE_BYTES = 4 << 20
NLMSG_ERROR = 2


def netfilter_exchange(
    sock: socket.socket, batch: bytes, replies: int, answers: list[bytes] | None = None
) -> list[int]:
    """``SendsNetfilter.netfilter`` over ``sock`` (a NETLINK_NETFILTER socket)."""
    sock.settimeout(30)
    sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)  # acknowledgements without the request echoed
    try:  # room for a datagram's acknowledgements: each takes a socket buffer of its own
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECEIVE_BYTES)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BYTES)
    sock.bind((0, 0))
    sock.send(batch)
    errors: list[int] = []
    while len(errors) < replies and not any(errors):
        data = sock.recv(1 << 20)
        at = 0
        while at + 16 <= len(data):
            length, kind = struct.unpack_from("=IH", data, at)
            if kind == NLMSG_ERROR:
                errors.append(-struct.unpack_from("=i", data, at + 16)[0])
                if errors[-1] and answers is not None:
                    answers.append(data[at : at + length])
            elif answers is not None:
                answers.append(data[at : at + length])
            at += max(16, (length + 3) & ~3)
    return errors


def stopped_part_way(removed: Sequence[str], cause: str) -> NoReturn:
    """A reset refused before anything was removed leaves the state as it was (exit 3); after,
    the node holds part of npc's objects (exit 4), and says which went."""
    if not removed:
        raise ApplyError(cause)
    more = f" and {len(removed) - 3} more" if len(removed) > 3 else ""
    raise MixedStateError(
        f"{cause}; reset stopped part way, after removing {', '.join(removed[:3])}{more}, so the node "
        "is in a MIXED state. Run npc reset again (or npc apply)."
    )


def _package(program: str) -> str:
    return "ipset" if program == "ipset" else "nftables" if program == "nft" else "iptables"


@attrs.frozen
class LoadReport:
    """What a load (or reset) did, for one line on stderr and the agent's log and metrics."""

    backend: str
    network: str
    summary: str  # e.g. "12 chains, sets 3 created, 1 updated, 0 removed"
    warnings: tuple[str, ...] = ()


Members = Mapping[str, Sequence[Entry]]
_Program = TypeVar("_Program")
_Args = ParamSpec("_Args")
_Result = TypeVar("_Result")


def per_program(
    function: Callable[Concatenate[_Program, _Args], _Result],
) -> Callable[Concatenate[_Program, _Args], _Result]:
    """``function(program, *args)`` worked out once per program object and arguments (hashable,
    positional), and forgotten with the program: what a lowered program implies (tries, map sets,
    the sets a rule tests) is the same for every pod event the agent loads under it. Programs are
    told apart by identity (equal ones hash by their whole content); results are shared, so
    never changed by a caller."""
    cache: dict[int, dict[tuple[Hashable, ...], _Result]] = {}

    @functools.wraps(function)
    def cached(program: _Program, *args: _Args.args, **kwargs: _Args.kwargs) -> _Result:
        assert not kwargs, "per_program: positional arguments only"
        found = cache.get(id(program))
        if found is None:
            found = cache[id(program)] = {}
            weakref.finalize(program, cache.pop, id(program), None)
        key: tuple[Hashable, ...] = args
        if key not in found:
            found[key] = function(program, *args, **kwargs)
        return found[key]

    return cached


@attrs.frozen
class MemberDelta:
    """What a members-only load changed: entries added and removed, sets (and maps) touched."""

    added: int = 0
    removed: int = 0
    sets: int = 0
    full: bool = False  # the backend had to replace its rules after all (nft: the rank count changed)


def member_changes(old: Members, new: Members) -> dict[str, tuple[list[Entry], list[Entry]]]:
    """Per changed set: (entries to remove, entries to add), each in the set's member order."""
    out = {}
    # kept sets are the very same lists: found in one pass (a pod event changes a few of thousands)
    for name in [name for name, entries in new.items() if old.get(name) is not entries]:
        before, entries = old.get(name, ()), new[name]
        if before == entries:
            continue
        before, entries = _middles(before, entries)
        kept, now = set(before), set(entries)
        # an entry whose nomatch flag flipped is removed and added again
        out[name] = ([e for e in before if e not in now], [e for e in entries if e not in kept])
    return out


def _middles(before: Sequence[Entry], after: Sequence[Entry]) -> tuple[Sequence[Entry], Sequence[Entry]]:
    """Both lists without the head and tail they share (each lists an entry once): a pod event
    moves a few entries of a set of every pod, and slices compare at C speed."""
    head = _shared(before, after)
    tail = _shared(before[head:][::-1], after[head:][::-1])
    return before[head : len(before) - tail], after[head : len(after) - tail]


def _shared(a: Sequence[Entry], b: Sequence[Entry]) -> int:
    """How many entries ``a`` and ``b`` share from their start."""
    done, width = 0, 1  # a[:done] == b[:done]; try a growing stretch, halve it on a difference
    limit = min(len(a), len(b))
    while width and done < limit:
        end = min(done + width, limit)
        if a[done:end] == b[done:end]:
            done, width = end, width * 2
        else:
            width //= 2
    return done


class Backend(Protocol):
    """A dataplane: artefacts from a compiled program, and loading them into this namespace."""

    # read-only, so that a class attribute (``files = ("rules.v4", "ipsets")``) is one; each package's
    # ``BACKEND: Backend`` has mypy check it against this protocol (a missing ``stdout`` was a
    # traceback of ``npc compile --backend weave`` without -o)
    @property
    def name(self) -> str: ...

    @property
    def files(self) -> tuple[str, ...]:
        """What ``npc compile -o`` writes besides manifest.json, for the help text."""
        ...

    @property
    def stdout(self) -> str | None:
        """The one file ``npc compile`` without -o prints alone, and ``npc convert --to <name>``
        writes; None: every file, each under a header line."""
        ...

    @property
    def loads(self) -> bool:
        """Whether ``load`` puts the artefacts into this namespace's kernel (``npc apply``, the
        agent); False where another tool applies them (calico)."""
        ...

    def check(self, options: Options) -> None:
        """UsageError for an option this backend cannot honour, before anything is read or loaded."""
        ...

    def render(self, compiled: Compiled, options: Options) -> dict[str, str]:
        """The artefact files (name -> text); pure: no kernel, no clock."""
        ...

    def rule_counts(self, compiled: Compiled, options: Options) -> dict[str, int]:
        """Rules per artefact file, counted on the data model (not on rendered text)."""
        ...

    def chain_counts(self, compiled: Compiled, options: Options) -> dict[str, int]:
        """Chains per artefact file, as it writes them (its own fixed chains included)."""
        ...

    def rules_per_packet(self, compiled: Compiled, options: Options) -> int:
        """The most rules the first packet of a connection is tested against."""
        ...

    def notes(self, compiled: Compiled, options: Options) -> tuple[str, ...]:
        """What this dataplane leaves out of the compiled program (a family it does not carry)."""
        ...

    def read_sets(self, lowered: Lowered, options: Options) -> frozenset[str]:
        """The program sets whose members ``load``, ``load_members``, ``load_update`` and
        ``drift`` read (rendering and counting may read more): the agent keeps only these up to
        date, since a program holds many sets no dataplane loads (sets tested by their parts)."""
        ...

    def load(self, compiled: Compiled, options: Options, runner: Runner) -> LoadReport:
        """Replace this network's objects in the kernel atomically; ApplyError leaves the old ones."""
        ...

    def load_members(
        self, lowered: Lowered, old: Members, new: Members, options: Options, runner: Runner
    ) -> MemberDelta:
        """Only set members changed (``old`` is in the kernel, rules are ``lowered``'s): load the
        differences in one batch, never touching a rule; ApplyError leaves the old members."""
        ...

    def reset(self, network: str | None, options: Options, runner: Runner) -> LoadReport:
        """Remove every object npc owns for ``network`` (None: every network) in this namespace."""
        ...


@runtime_checkable
class LoadsUpdates(Protocol):
    """A backend that can load a rules change by its difference (the agent's policy changes)."""

    def load_update(
        self, lowered: Lowered, members: Members, compiled: Compiled, options: Options, runner: Runner
    ) -> LoadReport:
        """The kernel holds (``lowered``, ``members``), as this process loaded them: bring it to
        ``compiled`` with the promises of ``load`` (atomic, previous state kept on ApplyError),
        loading only what differs."""
        ...


@runtime_checkable
class ChecksDrift(Protocol):
    """A backend that can tell whether the kernel still holds what it loaded (the agent's resync)."""

    def drift(self, lowered: Lowered, members: Members, options: Options, runner: Runner) -> tuple[str, ...]:
        """What differs between this network's objects in the kernel and (``lowered``, ``members``),
        which this process loaded; () when nothing. Called from a thread of its own while loads go
        on, so it reads without the apply lock."""
        ...


def template_environment(package: str) -> jinja2.Environment:
    """The templates of one backend package, rendered strictly (an unknown name is an error) and
    verbatim (no HTML escaping: the output is rule text, made safe before it gets here). Imported
    here: commands that render nothing (``npc explain``) start without it."""
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader(package, "templates"),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
    )


def write_atomic(path: Path, text: str, keep_mode: bool = False, mode: int | None = None) -> None:
    """Replace ``path`` with ``text`` in one rename (keeping the old file's mode if asked, or
    ``mode``: mkstemp's 0600 for a record of npc's own); on any failure no temporary is left
    behind. The one writer of files in npc."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        if mode is not None:
            os.chmod(tmp, mode)
        elif keep_mode:
            shutil.copymode(path, tmp)
        else:  # what open() would have made, not mkstemp's 0600
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
