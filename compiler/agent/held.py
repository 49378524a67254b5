"""The last good objects of held pods and namespaces, kept beside the agent's lock under /run/npc.

A pod whose object stops parsing keeps its last good state (``LiveInventory.held``). Kept only in
memory, that state was lost when the agent restarted: the pod was then skipped as a new bad
object, its address left its isolation sets, and it was open. /run lives exactly as long as the
kernel state the agent loaded (a reboot clears both), so a record there is never older than it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..backends.base import write_atomic
from ..errors import InputError
from ..frontends.positions import printable
from ..text import read_text

log = logging.getLogger("npc.agent")

Key = tuple[str, str, str]  # (kind, namespace, name)
Objects = dict[Key, Mapping[str, Any]]
RECORD_BYTES = 64 << 20  # far more than the few objects held at a time


class HeldStore:
    """One network's held objects in one file: read at start, rewritten when they change."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def load(self) -> Objects:
        """What an earlier agent held; nothing when there is no record or it cannot be read (a
        record npc cannot read is said once, the objects are then skipped as new, and the first
        update's ``save`` replaces it)."""
        if not self.path.exists():
            return {}
        try:  # a regular file only (a FIFO there would block the agent's start)
            found = json.loads(read_text(str(self.path), "held objects' record", RECORD_BYTES).text)
        except InputError as exc:
            log.warning("held objects' record %s", exc.render())
            return {}
        except (ValueError, RecursionError) as exc:
            log.warning("held objects' record %s unreadable, ignored: %s", printable(str(self.path)), exc)
            return {}
        out: Objects = {}
        for item in found if isinstance(found, list) else ():
            if (
                isinstance(item, list)
                and len(item) == 4
                and all(isinstance(part, str) for part in item[:3])
                and isinstance(item[3], dict)
            ):
                out[(item[0], item[1], item[2])] = item[3]
        return out

    def save(self, objects: Mapping[Key, Mapping[str, Any]]) -> None:
        """Never fatal: a record that cannot be written costs only what a restart then forgets."""
        try:
            if not objects:
                if self.path.exists() or self.path.is_symlink():
                    os.unlink(self.path)
                return
            listed = [[*key, obj] for key, obj in sorted(objects.items())]
            write_atomic(self.path, json.dumps(listed, sort_keys=True, default=str), mode=0o600)  # whole pods
        except OSError as exc:
            log.warning(
                "cannot record the held objects in %s: %s", printable(str(self.path)), exc.strerror or exc
            )
