"""YAML the tests write as npc's writers do: quoted wherever the API server's YAML (go-yaml v2)
would read a string as something else (``y``, ``1e3``, ``0o17``), which PyYAML's safe dumper
leaves plain."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml
from npc.documents import Dumper


def dump(data: Any, **options: Any) -> str:
    return yaml.dump(data, Dumper=Dumper, **options)  # type: ignore[no-any-return]


def dump_all(documents: Iterable[Any], **options: Any) -> str:
    return yaml.dump_all(documents, Dumper=Dumper, **options)  # type: ignore[no-any-return]
