"""``npc convert`` and ``npc fmt``: policies between Kubernetes YAML and the npc language.

Both work through the IR, so a conversion means exactly what its input meant. The Kubernetes
1.6 isolation annotation on a Namespace among the inputs has no object of its own in either
output; it becomes the equivalent policy, ``<namespace>/npc-namespace-isolation`` (every pod,
ingress isolated), so no traffic decision is lost on the way.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Literal

import attrs

from .dsl_writer import render, write_dsl
from .errors import InputError, UsageError
from .frontends.dsl import policies_from_document
from .frontends.dsl_parser import read_document
from .frontends.legacy import ISOLATION_KIND
from .frontends.positions import printable, show
from .ir import NETWORK_POLICY, Policy, Program
from .k8s_writer import write_k8s
from .output import write_file
from .pipeline import policy_program
from .sources import Loaded, policy_files
from .text import POLICY_FILE_BYTES, read_text

Target = Literal["dsl", "k8s"]
TARGETS: tuple[Target, ...] = ("dsl", "k8s")
ISOLATION_POLICY_NAME = "npc-namespace-isolation"
DSL_SUFFIX = ".npc"


@attrs.frozen
class Converted:
    text: str
    notes: tuple[str, ...] = ()


def convert(loaded: Loaded, to: Target) -> Converted:
    """Every policy read (``pipeline.read_sources``) as one text in the ``to`` form."""
    policies: list[Policy] = []
    notes: list[str] = []
    program = policy_program(loaded)
    taken = {(p.namespace, p.name): p for p in program.policies if p.kind == NETWORK_POLICY}
    for policy in program.policies:
        if policy.kind != ISOLATION_KIND:
            policies.append(policy)
            continue
        renamed = attrs.evolve(policy, name=ISOLATION_POLICY_NAME, kind=NETWORK_POLICY)
        other = taken.get((renamed.namespace, renamed.name))
        if other:  # said where the policy of that name is
            place = loaded.places.get((other.kind, other.namespace, other.name))
            raise InputError(
                f"namespace {show(renamed.namespace)} carries the 1.6 isolation annotation, which converts to "
                f"policy {show(renamed.namespace + '/' + renamed.name)}, but a policy of that name exists",
                place(("metadata", "name")) if place else other.source,
            )
        notes.append(
            f"the 1.6 isolation annotation of namespace {printable(renamed.namespace)} is written as policy "
            f"{printable(renamed.namespace)}/{ISOLATION_POLICY_NAME}"
        )
        policies.append(renamed)
    ordered: Sequence[Policy] = Program(tuple(policies)).policies
    text = write_dsl(ordered) if to == "dsl" else write_k8s(ordered)
    return Converted(text, tuple(notes))


def format_text(text: str, file: str) -> str:
    """``text`` (an ``.npc`` file) in canonical form; a file with any error is not formatted."""
    document = read_document(text, file, comments_kept=True)
    policies_from_document(document, text, file)
    return render(document)


def dsl_files(paths: Sequence[str]) -> list[str]:
    """The paths, with folders replaced by the ``.npc`` files under them."""
    out: list[str] = []
    for path in paths:
        if os.path.isdir(path):
            out.extend(f for f in policy_files(path) if f.lower().endswith(DSL_SUFFIX))
        elif path.lower().endswith(DSL_SUFFIX):
            out.append(path)
        else:
            raise UsageError(f"fmt formats npc language files (.npc) only, not {printable(path)}")
    return out


def fmt(paths: Sequence[str], check: bool = False) -> list[str]:
    """Files that are not in canonical form; rewritten in place unless ``check``.

    Every file is read and formatted before any is written, so one bad file leaves all untouched.
    """
    changed: dict[str, str] = {}
    seen: set[str] = set()
    for path in dsl_files(paths):
        if (real := os.path.realpath(path)) in seen:
            continue  # a link to a file formatted already (as compile reads it once)
        seen.add(real)
        text = read_text(path, limit=POLICY_FILE_BYTES).text
        formatted = format_text(text, printable(path))
        if formatted != text:
            changed[path] = formatted
    if not check:
        for path, text in changed.items():
            write_file(os.path.realpath(path), text)  # a link stays a link; its target is formatted
    return list(changed)
