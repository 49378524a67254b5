"""One apply at a time per network namespace: a lock every npc process on the node respects.

Two applies interleaving their set and rule steps produce a state that is neither input, so
``npc apply``, ``npc reset`` and the agent take an exclusive ``flock`` on a file under /run/npc
named for the network namespace (its inode): a cron job, the agent and a person at a shell
queue up, while namespaces never block each other. A waiter waits ``wait`` seconds (default 60),
then gives up with exit 3 and nothing changed. The kernel drops the lock when its holder dies,
so a killed apply never leaves the node locked; the tools npc starts under the lock hold it too
(``held``), so a killed npc's ``ipset restore`` finishes before the next npc starts.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from .errors import ApplyError

if TYPE_CHECKING:
    from .networks import NetworkSpec

DEFAULT_WAIT = 60.0
# npc's locks and records (``record_path``): one folder every npc on the node uses, a host's
# command and the DaemonSet's agent (which mounts the host's, so they outlive its container as the
# kernel state does) alike; NPC_RUN_DIR moves it (tests, a node whose /run is elsewhere)
LOCK_DIR = os.environ.get("NPC_RUN_DIR") or "/run/npc"
_HELD: list[int] = []


def held() -> tuple[int, ...]:
    """The lock's descriptor while this process holds it, for every tool it starts to inherit: a
    ``flock`` lasts while any process has it open, so a tool outliving a killed npc (an ``ipset
    restore`` halfway) keeps the next npc waiting instead of changing the kernel beside it."""
    return tuple(_HELD)


def record_path(name: str) -> str:
    """A file of npc's state for the current network namespace (the lock, its temporaries); the
    folder is made on first use (where it cannot be, opening the file says why)."""
    with contextlib.suppress(OSError):
        os.makedirs(LOCK_DIR, mode=0o700, exist_ok=True)
    return os.path.join(LOCK_DIR, f"npc-netns-{os.stat('/proc/self/ns/net').st_ino}-{name}")


def lock_path() -> str:
    return record_path("lock")


@contextlib.contextmanager
def netns_lock(wait: float = DEFAULT_WAIT) -> Iterator[None]:
    """Hold the lock of this network namespace for the body; ApplyError after ``wait`` seconds."""
    path = lock_path()
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise ApplyError(f"cannot open the apply lock {path}: {exc.strerror}") from None
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise ApplyError(f"cannot take the apply lock {path}: {exc.strerror}") from None
            if time.monotonic() >= deadline:
                raise ApplyError(
                    f"another npc apply or reset holds {path} for this network namespace; "
                    f"gave up after waiting {wait:g} s (--wait), nothing was changed"
                )
            time.sleep(0.05)
        _HELD.append(fd)
        yield
    finally:
        if fd in _HELD:
            _HELD.remove(fd)
        os.close(fd)


def hold_agent_locks(networks: Sequence[NetworkSpec]) -> list[int]:
    """One agent per network of a network namespace: two would each load their own view of
    the same chains and sets, undoing each other until the next resync. Held (an exclusive
    ``flock`` per network, the file named for the namespace and the network) until the process
    ends, which drops them; another agent's networks are none of this one's business. ApplyError
    names a network another agent holds (nothing was loaded)."""
    held: list[int] = []
    try:
        for network in networks:
            path = record_path(f"agent-{network.folder}")
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            held.append(fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                raise ApplyError(
                    f"another npc agent keeps network {network.name} of this network namespace ({path}): "
                    "two would undo each other's loads; nothing was loaded"
                ) from None
    except (OSError, ApplyError) as exc:
        for fd in held:
            os.close(fd)
        if isinstance(exc, ApplyError):
            raise
        raise ApplyError(f"cannot take the agent's lock: {exc.strerror or exc}") from None
    return held
