"""What one connection's answer can depend on, so ``npc explain`` reads only that.

A policy selects pods of its own namespace only, so the answer for ``a -> b`` depends on the two
pods, their namespaces' labels (what the other side's namespace selectors read), the policies of
``a``'s namespace (egress) and ``b``'s (ingress), and the 1.6 annotation of ``b``'s namespace.
Whatever else the inputs hold cannot change it: inventory objects of other pods and namespaces
are not built, and a policy file that cannot hold an object of the two namespaces is not parsed.

The file test is a sound over-approximation, never a guess. An object of namespace ``ns`` spells
``ns`` in its text: as the value of a ``namespace`` key (a Namespace: of ``name``), or as the
npc language's ``ns/name``; only an escape (a backslash) could write it in other characters,
and an object leaving its namespace out is in ``default``: such files are read. Each place
``ns`` is written is looked at; a file is skipped only when every one is plainly something else:
part of a longer word, the value of another key (a label value in a selector), a list item or a
key. A YAML alias cannot change that: it copies a node with its keys, and an anchored scalar
(``&a ns``) is not plainly anything, so it is read. Anything unusual means the file is read.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any

import attrs

from ..text import Text

DEFAULT_NAMESPACE = "default"  # where an object without metadata.namespace lives
_WORD = re.compile(r"[\w.-]")  # a character next to ``ns`` makes it part of a longer word
# what may come before ``ns`` on its line for it to be plainly no namespace: ``key: `` (YAML or
# JSON, quoted or not; harmless unless the key is namespace or name), or the start of a node
# after a flow indicator or a block list's ``- `` (a list item or a key, never a key's value)
_KEYED = re.compile(r"""(?:^|[\s{,\[])(?:"([^"\n]*)"|'([^'\n]*)'|([\w./-]+))[ \t]*:[ \t]*["']?$""")
_NODE_START = re.compile(r"""(?:[\[{,]|(?:^|\s)[-?]\s)[ \t]*["']?$""")
_NAMING_KEYS = ("namespace", "name")


def is_address(text: str) -> bool:
    """``--to`` names an address (or CIDR-style interface), not a pod."""
    try:
        ipaddress.ip_interface(text)
    except ValueError:
        return False
    return True


@attrs.frozen
class Focus:
    """The pods (``namespace``, ``name``) a pair names, and so the namespaces that matter."""

    pods: frozenset[tuple[str, str]]
    names: frozenset[str] = attrs.field(init=False)  # of the pods and namespaces: a quick test

    @names.default
    def _names(self) -> frozenset[str]:
        return frozenset(name for pod in self.pods for name in pod)

    @classmethod
    def of(cls, *refs: str) -> Focus:
        return cls(frozenset(_split(ref) for ref in refs))

    @property
    def namespaces(self) -> frozenset[str]:
        return frozenset(ns for ns, _ in self.pods)

    def may_hold(self, source: Text) -> bool:
        """Whether the policy source may hold an object of one of the namespaces: must it be read?"""
        text = source.text
        dsl = source.name.lower().endswith(".npc")
        if "\\" in text or any(_named(text, ns, dsl) for ns in self.namespaces):
            return True
        # Kubernetes objects may leave their namespace out; the npc language always writes it
        return DEFAULT_NAMESPACE in self.namespaces and not dsl

    def keep(self, obj: Mapping[str, Any]) -> bool:
        """Whether an inventory object may be one of the pods or namespaces: anything not plainly
        another pod or namespace is kept, so a malformed one is reported as compile reports it."""
        meta = obj.get("metadata")
        name = meta.get("name") if isinstance(meta, dict) else None
        if isinstance(name, str) and name not in self.names:  # the quick answer for nearly all
            return obj.get("kind") not in ("Pod", "Namespace")
        kind = obj.get("kind")
        if kind not in ("Pod", "Namespace"):
            return True  # read as compile reads it (other kinds are nothing to the inventory)
        if not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
            return True
        if kind == "Namespace":
            return meta["name"] in self.namespaces
        namespace = meta.get("namespace")
        if namespace is not None and not isinstance(namespace, str):
            return True
        return (namespace or DEFAULT_NAMESPACE, meta["name"]) in self.pods


def _split(ref: str) -> tuple[str, str]:
    namespace, _, name = ref.partition("/")
    return namespace, name


def _named(text: str, namespace: str, dsl: bool) -> bool:
    """Whether ``namespace`` is written somewhere in ``text`` that may make it an object's namespace."""
    if not namespace:
        return True
    at = text.find(namespace)
    while at >= 0:
        end = at + len(namespace)
        if not (_WORD.match(text, at - 1) if at else False) and not _WORD.match(text, end):
            if dsl:
                if text.startswith("/", end):  # ``ns/name``: a policy's (or a network's) name
                    return True
            else:
                line = text[text.rfind("\n", 0, at) + 1 : at]
                keyed = _KEYED.search(line)
                if keyed is None:
                    if _NODE_START.search(line) is None:
                        return True
                elif next(k for k in keyed.groups() if k is not None) in _NAMING_KEYS:
                    return True
        at = text.find(namespace, end)
    return False
