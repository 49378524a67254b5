"""The 1.6 namespace annotation's name and the grammar of its value: read by the inventory (where
an error has a position) and by the legacy frontend (which turns it into a policy)."""

from __future__ import annotations

import json
import re

NAMESPACE_ISOLATION_ANNOTATION = "net.beta.kubernetes.io/network-policy"


def isolates_ingress(value: str) -> bool:
    """Whether an annotation value asks for DefaultDeny; ValueError when it is not that JSON shape.

    Mirrors Go's ``json.Unmarshal`` into the 1.6 struct: null and unknown keys are fine, a wrong
    type is an error, and any isolation other than ``DefaultDeny`` means no isolation.
    """
    return _isolation(value) == "DefaultDeny"


def _isolation(value: str) -> str | None:
    """The value's ``ingress.isolation`` (None: not given); ValueError when not that JSON shape."""
    try:
        doc = json.loads(value)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except ValueError:  # an integer past Python's digit limit (its message names a Python function)
        raise ValueError("not valid JSON for it (a number of thousands of digits)") from None
    if doc is None:
        return None
    if not isinstance(doc, dict):
        raise ValueError('must be a JSON object like {"ingress": {"isolation": "DefaultDeny"}}')
    ingress = _field(doc, "ingress")
    if ingress is None:
        return None
    if not isinstance(ingress, dict):
        raise ValueError('"ingress" must be a JSON object like {"isolation": "DefaultDeny"}')
    isolation = _field(ingress, "isolation")
    if isolation is not None and not isinstance(isolation, str):
        raise ValueError('"ingress.isolation" must be a string')
    return isolation


def _field(doc: dict[str, object], name: str) -> object:
    """A struct field as Go's ``json.Unmarshal`` fills it: its key matched regardless of case
    (``"Ingress"`` isolates in a Go plugin), the last such key in the object winning."""
    found = None
    for key, value in doc.items():
        if key.lower() == name:
            found = value
    return found


def isolation_note(value: str) -> str | None:
    """What to say of a well-formed value that isolates nothing but looks meant to (``defaultdeny``,
    ``"DefaultDeny "``): Kubernetes compares exactly, so the namespace stays open without a word."""
    try:
        isolation = _isolation(value)
    except ValueError:  # said as an error where it is read
        return None
    if isolation and isolation != "DefaultDeny" and re.sub(r"[^a-z]", "", isolation.lower()) == "defaultdeny":
        return f"isolation {json.dumps(isolation)} is not DefaultDeny (case and spaces count): nothing is isolated"
    return None
