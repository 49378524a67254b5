"""Connectivity matrices over pod classes, one per port: both sides of ``Evaluator.allowed`` at once.

A class matrix ``A[s, d]`` says whether a new connection from any pod of class ``s`` to any pod of
class ``d`` is allowed: ``d`` is in the egress allowance of ``s`` (or ``s`` is not isolated for
egress) and ``s`` is in the ingress allowance of ``d`` (or ``d`` is not isolated for ingress).
Rows are built per policy (selected classes x what its rules admit), never per pod pair; ports
that every rule treats alike share one matrix.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection, Iterator, Mapping, Sequence

import attrs
import numpy as np
import numpy.typing as npt

from ..inventory import Pod
from ..ir import Direction, IPBlock, Peer, Policy, PortSpec, Program, Protocol, Requirement, Selector
from .classes import PodClasses, classify
from .load import address
from .ports import PortQuery

Mask = npt.NDArray[np.bool_]

ALLOWED, DENIED, SELF = ord("."), ord("X"), ord("-")
BLOCK_CELLS = 1 << 24  # cells of the pod matrix expanded at once (``Matrix.blocks``)
CACHE_BYTES = 1 << 28  # class matrices a decider keeps for ports alike (``Decider.allowed``)


class Decider:
    """Decides class pairs for one program over one set of classes."""

    def __init__(self, program: Program, classes: PodClasses, namespaces: Mapping[str, Mapping[str, str]]):
        self.program = program
        self.classes = classes
        self.size = n = len(classes)
        self._namespaces = namespaces
        self._peers: dict[Peer, Mask] = {}
        self._named: dict[tuple[str, str], npt.NDArray[np.int64]] = {}
        self._ports: dict[tuple[tuple[PortSpec, ...], str, int], Mask] = {}
        self._cache: OrderedDict[object, Mask] = OrderedDict()  # least recently used first
        self._label_codes: dict[str, npt.NDArray[np.int64]] = {}
        self._value_codes: dict[str, dict[str, int]] = {}
        self._selectors: dict[Selector, Mask] = {}
        self._namespace_masks: dict[Selector, Mask] = {}
        self._namespace_names = sorted({rep.namespace for rep in classes.reps})
        where = {name: i for i, name in enumerate(self._namespace_names)}
        self._namespace_index = np.array([where[rep.namespace] for rep in classes.reps], dtype=np.int64)
        self.all = np.ones(n, dtype=bool)
        self.none = np.zeros(n, dtype=bool)
        self.selected: dict[Policy, Mask] = {}
        for policy in program.policies:
            mask = self.peer_mask(policy.target)
            if mask.any():
                self.selected[policy] = mask
        self._specs = sorted(
            {
                spec
                for policy in self.selected
                for rules in (policy.ingress or (), policy.egress or ())
                for rule in rules
                for spec in rule.ports
            },
            key=PortSpec.sort_key,
        )

    def _codes(self, key: str) -> npt.NDArray[np.int64]:
        """Each class's value of label ``key`` as a code (-1: no such label), for vector tests."""
        found = self._label_codes.get(key)
        if found is None:
            table = self._value_codes.setdefault(key, {})
            found = np.array(
                [
                    table.setdefault(rep.labels[key], len(table)) if key in rep.labels else -1
                    for rep in self.classes.reps
                ],
                dtype=np.int64,
            ).reshape(self.size)
            self._label_codes[key] = found
        return found

    def _requirement(self, req: Requirement) -> Mask:
        codes = self._codes(req.key)
        if req.op in ("Exists", "DoesNotExist"):
            present = codes >= 0
            return present if req.op == "Exists" else ~present
        table = self._value_codes[req.key]
        inside = np.isin(codes, [table[v] for v in req.values if v in table])
        return inside if req.op == "In" else ~inside

    def _pods(self, selector: Selector) -> Mask:
        found = self._selectors.get(selector)
        if found is None:
            found = self.all.copy()
            for req in selector.requirements:
                found &= self._requirement(req)
            self._selectors[selector] = found
        return found

    def _in_namespaces(self, selector: Selector) -> Mask:
        found = self._namespace_masks.get(selector)
        if found is None:
            names = self._namespace_names
            matching = np.array([selector.matches(self._namespaces.get(n, {})) for n in names], dtype=bool)
            found = self._namespace_masks[selector] = matching[self._namespace_index].reshape(self.size)
        return found

    def peer_mask(self, peer: Peer) -> Mask:
        """The classes ``peer`` matches (pods' addresses for an ipBlock)."""
        found = self._peers.get(peer)
        if found is None:
            if isinstance(peer, IPBlock):
                ips = [address(rep, self.classes.family) for rep in self.classes.reps]
                found = np.array([ip is not None and peer.contains(ip) for ip in ips], dtype=bool).reshape(
                    self.size
                )
            else:
                found = self._in_namespaces(peer.namespaces) & self._pods(peer.pods)
            self._peers[peer] = found
        return found

    def rule_peers(self, peers: tuple[Peer, ...] | None) -> Mask:
        if peers is None:
            return self.all
        out = self.none.copy()
        for peer in peers:
            out |= self.peer_mask(peer)
        return out

    def named(self, protocol: str, name: str) -> npt.NDArray[np.int64]:
        """Each class's number for container port ``name`` (-1: it has none)."""
        found = self._named.get((protocol, name))
        if found is None:
            found = np.array(
                [rep.named_ports().get((protocol, name), -1) for rep in self.classes.reps], dtype=np.int64
            ).reshape(self.size)
            self._named[protocol, name] = found
        return found

    def port_mask(self, ports: tuple[PortSpec, ...], protocol: str, port: int) -> Mask:
        """The destination classes for which a rule's ports admit ``protocol``/``port``."""
        if not ports:
            return self.all
        key = (ports, protocol, port)
        found = self._ports.get(key)
        if found is None:
            found = self.none
            for spec in ports:
                if spec.protocol != protocol:
                    continue
                if isinstance(spec.port, str):
                    found = found | (self.named(protocol, spec.port) == port)
                elif spec.matches(protocol, port, {}):
                    found = self.all
                    break
            self._ports[key] = found
        return found

    def _signature(self, protocol: str, port: int) -> object:
        """Ports with one signature are decided alike by every rule (so share a matrix)."""
        return (
            protocol,
            tuple(
                (self.named(protocol, s.port) == port).tobytes()
                if isinstance(s.port, str)
                else s.matches(protocol, port, {})
                for s in self._specs
                if s.protocol == protocol
            ),
        )

    def allowed(self, protocol: str, port: int) -> Mask:
        """``A[s, d]`` for a numbered port: ``s``'s egress admits ``d`` and ``d``'s ingress admits ``s``."""
        key = self._signature(protocol, port)
        found = self._cache.get(key)
        if found is not None:
            self._cache.move_to_end(key)
            return found
        egress, ingress = (self._side(d, protocol, port) for d in ("egress", "ingress"))
        found = self._cache[key] = egress & ingress.T
        # at most CACHE_BYTES kept: 7,065 classes are 50 MB a port, and 79 ports took 4 GiB
        while sum(m.nbytes for m in self._cache.values()) > CACHE_BYTES and len(self._cache) > 1:
            self._cache.popitem(last=False)
        return found

    def _side(self, direction: Direction, protocol: str, port: int) -> Mask:
        """``M[p, r]``: does ``p``'s ``direction`` side admit a connection with ``r``? Named ports are
        the destination's: ``r``'s for egress, ``p``'s own for ingress."""
        out = np.zeros((self.size, self.size), dtype=bool)
        isolated = self.none.copy()
        for policy, selected in self.selected.items():
            rules = policy.rules(direction)
            if rules is None:
                continue
            isolated |= selected
            for rule in rules:
                ports, peers = self.port_mask(rule.ports, protocol, port), self.rule_peers(rule.peers)
                rows, remote = (
                    (selected, peers & ports) if direction == "egress" else (selected & ports, peers)
                )
                if rows.any() and remote.any():
                    out[rows] |= remote
        out[~isolated] = True
        return out

    def query(self, query: PortQuery) -> Mask:
        """``A[s, d]`` for a port as asked: a name is resolved per destination class."""
        if isinstance(query.port, int):
            return self.allowed(query.protocol, query.port)
        numbers = self.named(query.protocol, query.port)
        out = np.zeros((self.size, self.size), dtype=bool)
        for number in np.unique(numbers):
            if number >= 0:
                columns = numbers == number
                out[:, columns] = self.allowed(query.protocol, int(number))[:, columns]
        return out


def _lookup(classes: PodClasses, allowed: Mask) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    """The class matrix as cells with a row and column for "no address" (``X``), and each pod's
    row in it."""
    size = len(classes)
    padded = np.full((size + 1, size + 1), DENIED, dtype=np.uint8)
    padded[:size, :size][allowed] = ALLOWED
    return padded, np.where(classes.of_pod < 0, size, classes.of_pod)


def _rows(
    padded: npt.NDArray[np.uint8], index: npt.NDArray[np.int64], start: int, stop: int | None
) -> npt.NDArray[np.uint8]:
    sources = index[start:stop]
    cells = padded.take(sources, axis=0).take(index, axis=1)
    cells[np.arange(len(sources)), np.arange(start, start + len(sources))] = SELF
    return cells


def json_rows(cells: npt.NDArray[np.uint8]) -> bytes:
    """``"row", "row", ...``: the rows (a block of them) as JSON strings (nothing in them needs
    escaping), in one go."""
    count, width = cells.shape
    if not count:
        return b""
    out = np.empty((count, width + 4), dtype=np.uint8)
    out[:, 0] = out[:, width + 1] = ord('"')
    out[:, 1 : width + 1] = cells
    out[:, width + 2] = ord(",")
    out[:, width + 3] = ord(" ")
    return out.tobytes()[:-2]


def rows(cells: npt.NDArray[np.uint8]) -> list[str]:
    return [row.tobytes().decode("ascii") for row in cells]


@attrs.frozen
class Matrix:
    query: PortQuery
    family: int | None  # None: a single-family cluster (no ipFamily key)
    classes: PodClasses
    allowed: Mask  # per class pair

    @property
    def protocol(self) -> Protocol:
        return self.query.protocol

    def cells(self) -> npt.NDArray[np.uint8]:
        """The pod matrix (``.``, ``X``, ``-`` as bytes) from the class matrix; no address: ``X``."""
        return _rows(*_lookup(self.classes, self.allowed), 0, None)

    def blocks(self) -> Iterator[npt.NDArray[np.uint8]]:
        """The pod matrix a block of rows at a time, each about ``BLOCK_CELLS``: whole, the
        50,000 pods of a large cluster were 2.5 GB per port, twice over."""
        padded, index = _lookup(self.classes, self.allowed)  # once: a block of rows is a slice
        step = max(1, BLOCK_CELLS // max(len(index), 1))
        for start in range(0, len(index), step):
            yield _rows(padded, index, start, start + step)


def families(pods: Sequence[Pod]) -> list[int]:
    return sorted({ip.version for pod in pods for ip in pod.ips})


def deciders(
    programs: Sequence[Program],
    pods: Sequence[Pod],
    namespaces: Mapping[str, Mapping[str, str]],
    queries: Sequence[PortQuery],
    policed: Collection[int] = (4, 6),
) -> Iterator[tuple[int, PodClasses, list[Decider]]]:
    """Per address family npc polices (``--ip-families``; in another nothing is loaded, so all is
    open): the classes that tell every one of ``programs`` apart, one decider each."""
    names = [q.port for q in queries if isinstance(q.port, str)]
    for family in (f for f in families(pods) if f in policed):
        classes = classify(programs, pods, family, names)
        yield family, classes, [Decider(p, classes, namespaces) for p in programs]


def matrices(
    program: Program,
    pods: Sequence[Pod],
    namespaces: Mapping[str, Mapping[str, str]],
    queries: Sequence[PortQuery],
    policed: Collection[int] = (4, 6),
) -> Iterator[Matrix]:
    """Per port, per family npc polices (IPv4 first): what the kernel would let through."""
    per_family = list(deciders([program], pods, namespaces, queries, policed))
    dual = len(families(pods)) > 1  # which family, said whenever the pods have two
    for query in queries:
        for family, classes, (decider,) in per_family:
            yield Matrix(query, family if dual else None, classes, decider.query(query))
