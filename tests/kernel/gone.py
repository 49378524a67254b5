"""Deleting a test's network namespaces with npc's records of them under /run/npc.

npc keeps its apply and agent locks in ``/run/npc/npc-netns-<inode>-*``, named for the namespace's
inode; the files outlive the namespace (a node's namespaces live long), so a test run that made
a thousand namespaces left hundreds of them on the host. The kernel reuses inode numbers, so a
file removed here could only belong to this namespace.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

RECORDS = Path("/run/npc")


def records() -> set[Path]:
    return set(RECORDS.glob("npc-netns-*-*"))


def _live_inodes() -> set[int]:
    """The inodes of every network namespace a process is in or a name holds."""
    found = set()
    for link in [*Path("/proc").glob("[0-9]*/ns/net"), *Path("/run/netns").glob("*")]:
        try:
            found.add(link.stat().st_ino)
        except OSError:
            continue  # the process ended
    return found


def remove_dead_records(before: set[Path]) -> None:
    """Remove the records made since ``before`` (a test run's start) whose namespace is gone:
    those of the namespaces ``unshare --net`` gave npc commands, which have no name to delete."""
    alive = _live_inodes()
    for path in records() - before:
        inode = path.name.split("-")[2]
        if inode.isdigit() and int(inode) not in alive:
            path.unlink(missing_ok=True)


def delete_netns(*names: str) -> None:
    for name in names:
        try:
            inode = os.stat(f"/run/netns/{name}").st_ino
        except OSError:
            continue
        for path in RECORDS.glob(f"npc-netns-{inode}-*"):
            path.unlink(missing_ok=True)
    if names:
        subprocess.run(
            ["ip", "-batch", "-"], input="".join(f"netns del {n}\n" for n in names), text=True,
            capture_output=True, check=False,
        )  # fmt: skip
