"""``python cut.py LIMIT LOG ARGS...``: ``npc ARGS`` stopped dead, as by ``kill -9``, once its runner
has completed LIMIT kernel commands: the next one never starts, nothing is cleaned up.

Each completed command's program and first argument go to LOG, a line each, so a test knows where
the run was cut (which families' rules were already replaced, say).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from npc.backends import base
from npc.cli import run as npc


def main() -> None:
    limit, log = int(sys.argv[1]), sys.argv[2]
    run = base.SubprocessRunner.__call__
    done = 0

    def counted(self: base.SubprocessRunner, argv: Sequence[str], stdin: str = "") -> base.Ran:
        nonlocal done
        if done >= limit:
            os._exit(137)
        result = run(self, argv, stdin)
        done += 1
        with open(log, "a") as out:
            out.write(" ".join(argv[:2]) + "\n")
        return result

    base.SubprocessRunner.__call__ = counted  # type: ignore[method-assign]
    sys.argv = ["npc", *sys.argv[3:]]
    npc()  # the process's own entry: it exits


if __name__ == "__main__":
    main()
