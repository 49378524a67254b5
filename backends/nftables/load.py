"""Load compiled nftables output into the kernel of the current network namespace.

Ownership: npc touches only its network's ``inet`` table (``npc`` for the default network,
``npc-<tag>`` for others), and the ``ip`` and ``ip6`` tables of that name an earlier npc wrote, one
per family; every other table, iptables-nft's included, is left alone. The ruleset file creates,
deletes and redefines the table in one ``nft -f`` transaction, which the kernel commits whole or
not at all: if anything is rejected, the previous table stays in force. A table not yet there is
loaded faster, in parts at once and hooked in last (``load_new_table``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Sequence
from concurrent.futures import Executor, Future

from ...errors import ApplyError
from ..base import Ran, Runner, SendsNetfilter, run_together
from .netlink import element_batch
from .render import FAMILY_KEYWORD

Diff = tuple[str, Sequence[str], Sequence[str]]  # (set or map, elements to delete, elements to add)
FAMILY = "inet"  # npc's table: IPv4 and IPv6 together
LEGACY = tuple(FAMILY_KEYWORD.values())  # the table per family (ip, ip6) an earlier npc wrote


def _nft(run: Runner) -> str:
    if not run.which("nft"):
        raise ApplyError("nft not found: install it (Debian: apt-get install nftables)")
    return "nft"


def load_ruleset(text: str, run: Runner) -> None:
    """``nft -f -`` with ``text``; ApplyError when ``nft`` is missing or refuses it."""
    done = run([_nft(run), "-f", "-"], text)
    if done.returncode != 0:
        raise ApplyError(
            f"nft rejected the new ruleset (the previous table stays in force): {done.stderr.strip()}"
        )


def load_new_table(
    table: str, parts: Sequence[str], hook: str, run: Runner, started: Sequence[Future[Ran]] = ()
) -> None:
    """A table the kernel does not hold yet: ``parts`` at once (each ``nft`` parses its own text
    while the others do; at L a third less time than one ``nft -f``), besides the ones already
    ``started``, then ``hook``, its base chain. Until the hook commits the table sees no packet,
    so no packet meets half of it. A refusal removes what was loaded: no table, as before
    (ApplyError)."""
    nft = _nft(run)
    try:
        done = run_together(run, [([nft, "-f", "-"], text) for text in parts])
        done += [f.result() for f in started]
    except BaseException:  # a runner's own failure: what committed goes too
        abandon_table(table, run, started)
        raise
    if all(d.returncode == 0 for d in done):
        done = [run([nft, "-f", "-"], hook)]
    refused = [d.stderr.strip() for d in done if d.returncode != 0]
    if refused:
        abandon_table(table, run)
        raise ApplyError(
            f"nft rejected the new ruleset (the network had no table of npc's, and has none): {refused[0]}"
        )


def start_part(text: str, run: Runner, pool: Executor) -> Future[Ran]:
    """One part of a first load handed to ``nft`` now, in ``pool``: the rest is still being worked out."""
    return pool.submit(run, [_nft(run), "-f", "-"], text)


def abandon_table(table: str, run: Runner, started: Sequence[Future[Ran]] = ()) -> None:
    """A first load that did not end: its parts waited for (one still running would commit after
    the delete), then the table removed, as before."""
    for f in started:
        f.exception()  # done, whatever it did
    delete_tables([table], run)


def element_lines(table: str, diffs: Sequence[Diff]) -> list[str]:
    """``nft -f`` lines deleting, then adding, each set's (or map's) elements."""
    lines = []
    for name, drop, put in diffs:
        if drop:
            lines.append(f"delete element {FAMILY} {table} {name} {{ {', '.join(drop)} }}")
        if put:
            lines.append(f"add element {FAMILY} {table} {name} {{ {', '.join(put)} }}")
    return lines


def load_elements(table: str, diffs: Sequence[Diff], run: Runner) -> None:
    """Element changes in one transaction: one nfnetlink batch where the runner sends them itself
    (no ``nft``, so none of its cache), else ``nft -f``; ApplyError leaves every element as it was."""
    batch = element_batch(table, diffs) if isinstance(run, SendsNetfilter) else None
    if batch is None:
        load_ruleset("".join(f"{line}\n" for line in element_lines(table, diffs)), run)
        return
    data, names = batch
    if not names:
        return
    assert isinstance(run, SendsNetfilter)
    try:
        errors = run.netfilter(data, len(names))
    except OSError as exc:
        raise ApplyError(f"netlink to nftables failed (the previous elements stay in force): {exc}") from None
    said = [*names, *["the transaction"] * len(errors)]  # a refused commit: one error for all
    refused = [f"{name}: {os.strerror(errno)}" for name, errno in zip(said, errors, strict=False) if errno]
    if refused:
        raise ApplyError(
            f"the kernel refused the element changes (the previous elements stay in force): {'; '.join(refused)}"
        )


def delete_tables(
    tables: Collection[str], run: Runner, listed: Sequence[tuple[str, str]] | None = None
) -> list[tuple[str, str]]:
    """Remove npc's tables of those names (the ``inet`` one, and an earlier npc's ``ip`` and
    ``ip6`` ones), in one transaction (all or none: a
    refusal leaves every one in place); ``listed``: the ``npc_tables`` the caller has just read.
    Returns the (family, name) removed."""
    found = [(f, name) for f, name in (npc_tables(run) if listed is None else listed) if name in tables]
    if not found:
        return []
    done = run(["nft", "-f", "-"], "".join(f"delete table {family} {name}\n" for family, name in found))
    if done.returncode != 0:
        family, name = found[0]
        raise ApplyError(f"nft refused to delete table {family} {name}: {done.stderr.strip()}")
    return found


_NPC_TABLE = re.compile(rf"table ({'|'.join((FAMILY, *LEGACY))}) (npc(?:-[a-z2-7]{{5}})?)")


def npc_tables(run: Runner, strict: bool = False) -> list[tuple[str, str]]:
    """Every table of npc's in this namespace, as (family, name): one ``inet`` table per network
    (an ``ip`` and an ``ip6`` one where an earlier npc loaded them). ``strict`` (reset): a listing that fails is an
    error, not an empty list (elsewhere it is a node without nf_tables)."""
    if not run.which("nft"):
        return []
    done = run(["nft", "list", "tables"])
    if strict and done.returncode != 0:
        raise ApplyError(f"nft could not list the tables: {done.stderr.strip() or done.returncode}")
    listed = done.stdout.splitlines()
    return [(m.group(1), m.group(2)) for line in listed if (m := _NPC_TABLE.fullmatch(line.strip()))]
