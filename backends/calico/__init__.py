"""Calico: the optimised program as ``projectcalico.org/v3`` resources for ``calicoctl apply``.

Calico resolves selectors and named ports itself, so nothing here reads the inventory's pods, and
it polices each pod's primary interface only. It renders; loading is Calico's own job.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

import yaml

from ...documents import Dumper
from ...errors import UsageError
from ...ir import DEFAULT_NETWORK
from ..base import Backend, LoadReport, MemberDelta, Members, Options, Runner, no_iptables_flavour, no_marks
from .render import Obj, calico_objects

if TYPE_CHECKING:
    from ...lower import Lowered
    from ...resolve import Compiled

FILE = "calico.yaml"


def to_yaml(objects: Sequence[Obj]) -> str:
    """Multi-document YAML, ``---`` before each object, one line per selector."""
    return "".join(
        "---\n" + yaml.dump(obj, Dumper=Dumper, sort_keys=False, width=1 << 30, allow_unicode=True)
        for obj in objects
    )


def _rules(obj: Obj, direction: str) -> int:
    return len(obj["spec"].get(direction, ()))


class CalicoBackend:
    name = "calico"
    files = (FILE,)
    loads = False
    stdout = FILE  # alone on stdout without -o, for ``| calicoctl apply -f -``

    def __init__(self) -> None:
        self._last: tuple[Compiled, list[Obj]] | None = None

    def _objects(self, compiled: Compiled) -> list[Obj]:
        if compiled.lowered.network != DEFAULT_NETWORK:
            raise UsageError(
                f"--backend calico: Calico polices each pod's primary interface only, not network "
                f"{compiled.lowered.network!r}; leave out --network"
            )
        if self._last is None or self._last[0] is not compiled:
            self._last = (compiled, calico_objects(compiled.program))
        return self._last[1]

    def render(self, compiled: Compiled, options: Options) -> dict[str, str]:
        return {FILE: to_yaml(self._objects(compiled))}

    def rule_counts(self, compiled: Compiled, options: Options) -> dict[str, int]:
        objects = self._objects(compiled)
        return {FILE: sum(_rules(o, d) for o in objects for d in ("ingress", "egress"))}

    def check(self, options: Options) -> None:
        no_iptables_flavour(options)
        no_marks(options, "calico")

    def chain_counts(self, compiled: Compiled, options: Options) -> dict[str, int]:
        """Calico resources hold rules; the chains are felix's."""
        return {FILE: 0}

    def rules_per_packet(self, compiled: Compiled, options: Options) -> int:
        """At most the egress rules of the source's namespace and the ingress rules of the
        destination's: the largest of each (Calico only tests the policies selecting the pod)."""
        worst = 0
        for direction in ("ingress", "egress"):
            per_namespace: Counter[str] = Counter()
            for obj in self._objects(compiled):
                per_namespace[obj["metadata"]["namespace"]] += _rules(obj, direction)
            worst += max(per_namespace.values(), default=0)
        return worst

    def notes(self, compiled: Compiled, options: Options) -> tuple[str, ...]:
        """Calico's resources hold no family of their own (``--ip-families`` changes nothing here):
        Felix polices the families its ``FELIX_IPV6SUPPORT`` enables."""
        if len(compiled.lowered.families) == 2:
            return ()
        return (
            "--ip-families does not narrow Calico resources: Felix polices IPv6 as its "
            "FELIX_IPV6SUPPORT says",
        )

    def read_sets(self, lowered: Lowered, options: Options) -> frozenset[str]:
        return frozenset()  # nothing is loaded here

    def load(self, compiled: Compiled, options: Options, runner: Runner) -> LoadReport:
        raise UsageError("--backend calico writes resources for calicoctl apply; npc apply cannot load them")

    def load_members(
        self, lowered: Lowered, old: Members, new: Members, options: Options, runner: Runner
    ) -> MemberDelta:
        raise UsageError("--backend calico writes resources for calicoctl apply; npc cannot load them")

    def reset(self, network: str | None, options: Options, runner: Runner) -> LoadReport:
        raise UsageError("--backend calico: remove npc's Calico resources with calicoctl delete")


BACKEND: Backend = CalicoBackend()

__all__ = ["BACKEND", "FILE", "calico_objects", "to_yaml"]
