"""``npc convert`` and ``npc fmt``: policies between Kubernetes YAML and the npc language.

Both work through the IR, so a conversion means exactly what its input meant. The Kubernetes
1.6 isolation annotation on a Namespace among the inputs has no object of its own in either
output; it becomes the equivalent policy, ``<namespace>/npc-namespace-isolation`` (every pod,
ingress isolated), so no traffic decision is lost on the way.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, TextIO

import attrs

from .backends.base import write_atomic
from .dsl_writer import render, write_dsl
from .errors import InputError
from .frontends.dsl import policies_from_document
from .frontends.dsl_parser import read_document
from .frontends.legacy import isolation_policies, namespaces_from_objects
from .frontends.positions import printable, show
from .ir import NETWORK_POLICY, Policy, Program
from .k8s_writer import write_k8s
from .sources import policy_files, read_policy_sources

Target = Literal["dsl", "k8s"]
TARGETS: tuple[Target, ...] = ("dsl", "k8s")
ISOLATION_POLICY_NAME = "npc-namespace-isolation"
DSL_SUFFIX = ".npc"


@attrs.frozen
class Converted:
    text: str
    notes: tuple[str, ...] = ()


def convert(paths: Sequence[str], to: Target, stdin: TextIO | None = None) -> Converted:
    """Every policy under ``paths`` (files, folders, ``-``) as one text in the ``to`` form."""
    loaded = read_policy_sources(paths, stdin)
    policies = list(loaded.policies)
    notes = list(loaded.notes)
    taken = {(p.namespace, p.name) for p in policies if p.kind == NETWORK_POLICY}
    for legacy in isolation_policies(namespaces_from_objects(loaded.namespaces)):
        policy = attrs.evolve(legacy, name=ISOLATION_POLICY_NAME, kind=NETWORK_POLICY)
        if (policy.namespace, policy.name) in taken:
            raise InputError(
                f"namespace {show(policy.namespace)} carries the 1.6 isolation annotation, which converts to "
                f"policy {show(policy.namespace + '/' + policy.name)}, but a policy of that name exists",
                legacy.source,
            )
        notes.append(
            f"the 1.6 isolation annotation of namespace {printable(policy.namespace)} is written as policy "
            f"{printable(policy.namespace)}/{ISOLATION_POLICY_NAME}"
        )
        policies.append(policy)
    ordered: Sequence[Policy] = Program(tuple(policies)).policies
    text = write_dsl(ordered) if to == "dsl" else write_k8s(ordered)
    return Converted(text, tuple(notes))


def format_text(text: str, file: str) -> str:
    """``text`` (an ``.npc`` file) in canonical form; a file with any error is not formatted."""
    document = read_document(text, file)
    policies_from_document(document, text, file)
    return render(document)


def dsl_files(paths: Sequence[str]) -> list[str]:
    """The paths, with folders replaced by the ``.npc`` files under them."""
    out: list[str] = []
    for path in paths:
        if os.path.isdir(path):
            out.extend(f for f in policy_files(path) if f.lower().endswith(DSL_SUFFIX))
        else:
            out.append(path)
    return out


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8-sig") as fh:
            return fh.read()
    except UnicodeDecodeError as exc:
        raise InputError(f"not valid UTF-8 (byte offset {exc.start})", printable(path)) from None
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror or exc}", printable(path)) from None


def fmt(paths: Sequence[str], check: bool = False) -> list[str]:
    """Files that are not in canonical form; rewritten in place unless ``check``.

    Every file is read and formatted before any is written, so one bad file leaves all untouched.
    """
    changed: dict[str, str] = {}
    for path in dsl_files(paths):
        text = _read(path)
        formatted = format_text(text, printable(path))
        if formatted != text:
            changed[path] = formatted
    if not check:
        for path, text in changed.items():
            write_atomic(Path(path), text, keep_mode=True)
    return list(changed)
