"""Backends: one module per dataplane, each rendering a lowered program from its templates."""

from __future__ import annotations

import jinja2


def template_environment() -> jinja2.Environment:
    """The templates under ``templates/``, rendered strictly (an unknown name is an error) and
    verbatim (no HTML escaping: the output is rule text, made safe before it gets here)."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("npc.backends", "templates"),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
    )
