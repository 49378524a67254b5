"""Deleting a test's network namespaces with npc's records of them under /run.

npc keeps its apply and agent locks in ``/run/npc-netns-<inode>-*``, named for the namespace's
inode; the files outlive the namespace (a node's namespaces live long), so a test run that made
a thousand namespaces left hundreds of them on the host. The kernel reuses inode numbers, so a
file removed here could only belong to this namespace.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

RECORDS = Path("/run")


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
