"""Policy texts parsed in a second process while this one reads the first ones.

At 10,000 policies PyYAML is more than half of reading the policy folder, and it runs on one
core. Above ``MIN_BYTES`` of YAML, a forked child parses the later texts (a little over half of
the bytes) while the parent parses and validates the earlier ones; the child's documents come
back pickled (plain dicts, lists and scalars: a tenth of what parsing them costs). The child
parses only: whatever it cannot parse it leaves to the parent, which then reads that text itself
and reports its error exactly as without a child, in the same order. A process with other
threads (the agent), without ``fork`` or without an idle core parses everything itself.
"""

from __future__ import annotations

import contextlib
import pickle
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .documents import load_documents
from .forked import in_child, spare_core
from .text import Text

MIN_BYTES = 2 << 20  # below this a second process costs more than it saves
CHILD_SHARE = 0.55  # of the bytes: the parent also validates every policy and builds the IR

Parsed = Callable[[int], list[Any] | None]  # a text's documents by position, or None: parse it yourself


def _yaml(source: Text) -> bool:
    return not source.in_npc_language and not source.name.lower().endswith(".json")


def _worth_it(sources: Sequence[Text]) -> bool:
    return sum(len(s.text) for s in sources if _yaml(s)) >= MIN_BYTES and spare_core()


def _split(sources: Sequence[Text]) -> int:
    """The first position the child parses: the child takes the last ``CHILD_SHARE`` of the bytes."""
    total = sum(len(s.text) for s in sources)
    done = 0
    for i, source in enumerate(sources):
        if done >= total * (1 - CHILD_SHARE):
            return i
        done += len(source.text)
    return len(sources)


def _parsed(sources: Sequence[Text]) -> bytes:
    """The child's work: each text's documents (None for a text not YAML), pickled, up to the
    first text it cannot parse: the parent reads that one and the rest itself."""
    parsed: list[list[Any] | None] = []
    for source in sources:
        if not _yaml(source):
            parsed.append(None)
            continue
        try:
            parsed.append(load_documents(source.name, source.text, strict=True))
        except Exception:  # the parent reads it again and reports it
            break
    return pickle.dumps(parsed, protocol=pickle.HIGHEST_PROTOCOL)


@contextlib.contextmanager
def parse_ahead(sources: Sequence[Text]) -> Iterator[Parsed]:
    """``parsed(i)``: the documents of ``sources[i]`` if the child parsed them, else None."""
    if not _worth_it(sources):
        yield lambda _: None
        return
    first = _split(sources)
    with in_child(lambda: _parsed(sources[first:])) as result:
        received: list[list[Any] | None] | None = None

        def parsed(i: int) -> list[Any] | None:
            nonlocal received
            if i < first:
                return None
            if received is None:  # nothing from a child that failed: everything left is read here
                blob = result()
                received = pickle.loads(blob) if blob is not None else []
            j = i - first
            return received[j] if j < len(received) else None

        yield parsed
