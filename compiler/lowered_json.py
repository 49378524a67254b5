"""A lowered program as JSON, for the manifest: every set's meaning, the chains and the dispatch.

This is what lets a node load reviewed artefacts without compiling policy (``npc agent
--artefacts``): the manifest says what each set *means* (the selectors, the CIDR with its
excepts, the named port), so the node only resolves members against its live inventory and
renders the very rules that were reviewed. ``decode(encode(x)) == x`` for every ``Lowered``.
Set and chain names are spelled with the iptables backends' prefixes (``lower.qualified``), as
the first npc's ``lower`` named them. Format 2 adds the parts a split set is tested by, format 3
the sets a set by absence is tested as not being in.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, cast

import attrs

from .errors import InputError
from .ir import Direction, IPBlock, PodPeer, Requirement, Selector
from .lower import (
    Chain,
    Dispatch,
    FamilyProgram,
    Lowered,
    Match,
    Scope,
    SetKind,
    SetSpec,
    part_keys,
    qualified,
    set_name,
    unqualified,
)

FORMAT = 4  # 2: split sets name their parts; 3: and what a set by absence excludes; 4: scopes' local tests


@functools.lru_cache(maxsize=1 << 14)  # a few thousand selectors spell 100k set keys at L; read only
def _selector(selector: Selector) -> list[dict[str, Any]]:
    return [{"key": r.key, "op": r.op, "values": list(r.values)} for r in selector.requirements]


def _meaning(spec: SetSpec, spelled: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": spec.kind, "family": spec.family}
    if spec.parts:  # named: format 1 split value lists, which lower no longer does (``part_keys``)
        out["parts"] = [spelled[p.name] for p in spec.parts]
    if spec.excluded:
        out["excluded"] = [spelled[p.name] for p in spec.excluded]
    if isinstance(spec.key, IPBlock):
        out.update(cidr=str(spec.key.cidr), excepts=[str(n) for n in spec.key.excepts])
    elif spec.kind == "port":
        protocol, name = spec.key  # type: ignore[misc]
        out.update(protocol=protocol, port=name)
    else:
        peers = cast(tuple[PodPeer, ...], spec.key)
        out["peers"] = [{"namespaces": _selector(p.namespaces), "pods": _selector(p.pods)} for p in peers]
    return out


def _match(match: Match, spelled: Mapping[str, str]) -> dict[str, Any]:
    return {
        "peer": spelled[match.peer.name] if match.peer else None,
        "protocol": match.protocol,
        "ports": [list(span) for span in match.ports],
        "named_port": spelled[match.named_port.name] if match.named_port else None,
    }


def _scopes(f: FamilyProgram, direction: Direction, spelled: Mapping[str, str]) -> list[dict[str, Any]]:
    """A scope's dispatch entries as indexes into the direction's dispatch list, each with its
    local test (a set's name, or null: no test)."""
    index = {d: i for i, d in enumerate(f.dispatch[direction])}
    return [
        {
            "namespace": s.namespace,
            "isolated": spelled[s.isolated.name],
            "dispatch": [[index[d], spelled[local.name] if local else None] for d, local in s.dispatch],
        }
        for s in f.scopes.get(direction, ())
    ]


def encode(lowered: Lowered) -> dict[str, Any]:
    tag = lowered.tag
    spelled = {s.name: qualified(s.name, tag) for f in lowered.families for s in f.sets}
    sets = {spelled[s.name]: _meaning(s, spelled) for f in lowered.families for s in f.sets}
    families = [
        {
            "family": f.family,
            "sets": [spelled[s.name] for s in f.sets],
            "isolated": {d: spelled[s.name] for d, s in sorted(f.isolated.items())},
            "dispatch": {
                d: [
                    {"target": spelled[x.target.name], "chain": qualified(x.chain, tag), "comment": x.comment}
                    for x in xs
                ]
                for d, xs in sorted(f.dispatch.items())
            },
            "scopes": {d: _scopes(f, d, spelled) for d in sorted(f.scopes)},
            "chains": [
                {
                    "name": qualified(c.name, tag),
                    "direction": c.direction,
                    "comment": c.comment,
                    "matches": [_match(m, spelled) for m in c.matches],
                }
                for c in f.chains
            ],
        }
        for f in lowered.families
    ]
    return {
        "format": FORMAT,
        "network": lowered.network,
        "tag": tag,
        "sets": dict(sorted(sets.items())),
        "families": families,
    }


def _decode_selector(raw: Any) -> Selector:
    return Selector(Requirement(r["key"], r["op"], tuple(r["values"])) for r in raw)


def _decode_set(name: str, raw: Mapping[str, Any], tag: str) -> SetSpec:
    kind = cast(SetKind, raw["kind"])
    key: Any
    if kind == "net":
        key = IPBlock(raw["cidr"], tuple(raw["excepts"]))
    elif kind == "port":
        key = (str(raw["protocol"]), str(raw["port"]))
    elif kind == "pods":
        key = tuple(
            PodPeer(_decode_selector(p["namespaces"]), _decode_selector(p["pods"])) for p in raw["peers"]
        )
    else:
        raise ValueError(f"unknown set kind {kind!r}")
    return SetSpec(kind, int(raw["family"]), key, unqualified(name, tag))


def _with_parts(
    sets: dict[str, SetSpec], raw: Mapping[str, Any], tag: str, named: bool
) -> dict[str, SetSpec]:
    """Each pod set with the parts ``lower`` gave it, as the manifest names them (formats 2, 3).
    Format 1 named none: every set ``part_keys`` split then (value lists too) had its parts where
    they are sets of the program too (a manifest from before parts has none, and its sets are
    tested whole, as its rules were)."""
    out = dict(sets)
    for name, spec in sets.items():
        excluded: list[str] = []
        if named:
            names = [str(n) for n in raw[name].get("parts", ())]
            excluded = [str(n) for n in raw[name].get("excluded", ())]
            if not all(n in sets for n in (*names, *excluded)):
                raise ValueError(f"set {name}: its parts {names + excluded} are not all sets of the program")
        else:
            keys = part_keys(spec.key, lists=True) if spec.kind == "pods" else None
            names = [qualified(set_name("pods", spec.family, k), tag) for k in keys or ()]
        if names and all(n in sets for n in names):
            parts, out_of = tuple(sets[n] for n in names), tuple(sets[n] for n in excluded)
            out[name] = attrs.evolve(spec, parts=parts, excluded=out_of)
    return out


def _local(
    entry: Dispatch, test: object, sets: Mapping[str, SetSpec], version: int
) -> tuple[Dispatch, SetSpec | None]:
    """A scope's entry with its local test: a set's name or null (format 4), or, before, whether
    a policy selected the whole namespace (no test; else the entry's target, as those programs
    tested)."""
    if version < 4:
        if not isinstance(test, bool):
            raise ValueError(f"a format {version} scope entry holds {test!r}, not true or false")
        return entry, None if test else entry.target
    if test is not None and not isinstance(test, str):
        raise ValueError(f"a scope entry's test is {test!r}, not a set's name or null")
    return entry, sets[test] if test is not None else None


def decode(data: Mapping[str, Any], file: str = "manifest.json") -> Lowered:
    """The ``Lowered`` that ``encode`` wrote; InputError when ``data`` is not that."""
    try:
        if data.get("format") not in range(1, FORMAT + 1):
            raise ValueError(
                f"program format {data.get('format')!r} is not 1 to {FORMAT} (compiled by another npc?)"
            )
        tag = str(data["tag"])
        raw_sets = data["sets"]
        decoded = {name: _decode_set(name, raw, tag) for name, raw in raw_sets.items()}
        sets = _with_parts(decoded, raw_sets, tag, named=data["format"] > 1)

        def chain(raw: Mapping[str, Any]) -> Chain:
            matches = tuple(
                Match(
                    sets[m["peer"]] if m["peer"] else None,
                    m["protocol"],
                    tuple((int(lo), int(hi)) for lo, hi in m["ports"]),
                    sets[m["named_port"]] if m["named_port"] else None,
                )
                for m in raw["matches"]
            )
            name = unqualified(raw["name"], tag)
            return Chain(name, cast(Direction, raw["direction"]), matches, raw["comment"])

        def family(f: Mapping[str, Any]) -> FamilyProgram:
            dispatch = {
                cast(Direction, d): tuple(
                    Dispatch(sets[x["target"]], unqualified(x["chain"], tag), x["comment"]) for x in xs
                )
                for d, xs in f["dispatch"].items()
            }
            scopes = {
                cast(Direction, d): tuple(
                    Scope(
                        str(s["namespace"]),
                        sets[s["isolated"]],
                        tuple(
                            _local(dispatch[cast(Direction, d)][int(i)], test, sets, data["format"])
                            for i, test in s["dispatch"]
                        ),
                    )
                    for s in raw
                )
                for d, raw in f["scopes"].items()
            }
            return FamilyProgram(
                int(f["family"]),
                tuple(sets[n] for n in f["sets"]),
                {cast(Direction, d): sets[n] for d, n in f["isolated"].items()},
                dispatch,
                tuple(chain(c) for c in f["chains"]),
                scopes,
            )

        families = tuple(family(f) for f in data["families"])
        return Lowered(str(data["network"]), families, tag)
    except (LookupError, TypeError, ValueError, AttributeError, RecursionError) as exc:
        raise InputError(
            f"not a program npc compiled: {type(exc).__name__}: {exc}", file, path="program"
        ) from None
