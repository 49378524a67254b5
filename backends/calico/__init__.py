"""Calico backend: the optimised IR as ``projectcalico.org/v3`` resources for ``calicoctl apply``.

Calico resolves selectors itself, so nothing here depends on the inventory, and Calico polices the
pod's primary interface only. Render only: loading is Calico's job.
"""

from __future__ import annotations

from collections.abc import Sequence

import yaml
from npc.ir import Program

from .render import Obj, calico_objects

FILE = "calico.yaml"

try:  # the C emitter when PyYAML has it: same output, faster
    _Dumper: type[yaml.SafeDumper] = yaml.CSafeDumper  # type: ignore[assignment]
except AttributeError:  # pragma: no cover
    _Dumper = yaml.SafeDumper


def to_yaml(objects: Sequence[Obj]) -> str:
    """Multi-document YAML, ``---`` before each object, one line per selector."""
    return "".join(
        "---\n" + yaml.dump(obj, Dumper=_Dumper, sort_keys=False, width=1 << 30, allow_unicode=True)
        for obj in objects
    )


def render(program: Program) -> str:
    return to_yaml(calico_objects(program))


__all__ = ["FILE", "calico_objects", "render", "rule_counts", "to_yaml"]


def rule_counts(files: dict[str, str]) -> dict[str, int]:
    """Calico rules in the rendered file (for the manifest)."""
    return {FILE: sum(1 for line in files.get(FILE, "").splitlines() if line.lstrip(" -") == "action: Allow")}
