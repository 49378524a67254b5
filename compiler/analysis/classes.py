"""Equivalence classes of pods: pods no policy can tell apart get one row and one column.

Two pods are alike when they share a namespace, the values of every label key some pod selector
reads, the numbers of every port name a rule or query names (a pod's first container port of that
name, the one the dataplane resolves), and the ipBlocks their address falls in. Any decision about one holds for the other, so a matrix is computed per class and expanded.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import attrs
import numpy as np
import numpy.typing as npt

from ..inventory import Pod
from ..ir import IPBlock, PodPeer, Program
from .load import address

IntArray = npt.NDArray[np.int64]


def _peers(programs: Iterable[Program]) -> Iterable[PodPeer | IPBlock]:
    for program in programs:
        for policy in program.policies:
            yield policy.target
            for rules in (policy.ingress or (), policy.egress or ()):
                for rule in rules:
                    yield from rule.peers or ()


def label_keys(programs: Sequence[Program]) -> frozenset[str]:
    return frozenset(
        r.key for peer in _peers(programs) if isinstance(peer, PodPeer) for r in peer.pods.requirements
    )


def port_names(programs: Sequence[Program]) -> frozenset[str]:
    return frozenset(
        port.port
        for program in programs
        for policy in program.policies
        for rules in (policy.ingress or (), policy.egress or ())
        for rule in rules
        for port in rule.ports
        if isinstance(port.port, str)
    )


@attrs.frozen
class PodClasses:
    family: int
    reps: tuple[Pod, ...]  # one pod per class, standing for all of them
    members: tuple[tuple[int, ...], ...]  # indices into the pod list, per class
    of_pod: IntArray  # the class of each pod; -1: no address in this family
    keys: frozenset[str]  # the label keys some selector reads, for showing a class
    names: frozenset[str]  # the port names some rule or query reads, likewise

    def __len__(self) -> int:
        return len(self.reps)

    def label(self, index: int) -> str:
        """``ns {app=a,tier=web}``: what the pods of the class have in common that policies read."""
        rep = self.reps[index]
        labels = ",".join(f"{k}={v}" for k, v in sorted(rep.labels.items()) if k in self.keys)
        ports = "".join(
            f" {name}={protocol.lower()}/{number}"
            for (protocol, name), number in rep.named_ports().items()
            if name in self.names
        )
        return f"{rep.namespace} {{{labels}}}{ports}"


def classify(
    programs: Sequence[Program], pods: Sequence[Pod], family: int, extra_names: Iterable[str] = ()
) -> PodClasses:
    keys = label_keys(programs)
    names = port_names(programs) | frozenset(extra_names)
    blocks = sorted(
        {p for p in _peers(programs) if isinstance(p, IPBlock) and p.version == family}, key=IPBlock._key
    )
    index: dict[object, int] = {}
    reps: list[Pod] = []
    members: list[list[int]] = []
    of_pod = np.full(len(pods), -1, dtype=np.int64)
    for i, pod in enumerate(pods):
        ip = address(pod, family)
        if ip is None:
            continue
        key = (
            pod.namespace,
            tuple(sorted((k, v) for k, v in pod.labels.items() if k in keys)),
            tuple(sorted((k, n) for k, n in pod.named_ports().items() if k[1] in names)),
            tuple(j for j, block in enumerate(blocks) if block.contains(ip)),
        )
        found = index.get(key)
        if found is None:
            found = index[key] = len(reps)
            reps.append(pod)
            members.append([])
        members[found].append(i)
        of_pod[i] = found
    return PodClasses(family, tuple(reps), tuple(tuple(m) for m in members), of_pod, keys, names)
