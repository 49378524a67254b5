"""The one road from policies to artefacts, which ``compile``, ``apply``, the agent and the
analysis commands all take: read the sources once, assemble one network's program, run the
passes, lower, resolve set members, render with a backend.

``PASSES`` is the single list of optimiser passes (each a pure ``Program -> Program``), run in
order; a pass is added by writing its module under ``passes/`` and naming it here.

Rules depend on the policies only, set members on the inventory only: ``compile_rules`` and
``resolve_members`` are separate steps, so a caller that keeps the rules (the agent, on pod churn)
re-resolves members without parsing or lowering anything again.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import itertools
import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TextIO

import attrs
import orjson

from . import __version__, inventory_ahead, lowered_json
from .backends.base import Backend, Options
from .errors import UsageError
from .frontends.legacy import isolation_policies, namespaces_from_objects
from .inventory import (
    Inventory,
    InventoryText,
    Namespace,
    build_inventory,
    inventory_documents,
    read_inventory_documents,
)
from .ir import DEFAULT_NETWORK, IP_FAMILIES, Policy, Program
from .lower import lower
from .memo import Memo
from .networks import FAMILY_NAMES, NetworkSpec, select_policies, uncarried, ungoverned_note
from .passes.drop_dead_rules import drop_dead_rules
from .passes.drop_implied_requirements import drop_implied_requirements
from .passes.drop_inert_policies import drop_inert_policies
from .passes.merge_peers import merge_peers
from .passes.merge_ports import merge_ports
from .passes.remove_shadowed import remove_shadowed
from .progress import Progress, quiet
from .resolve import Compiled, Rules, resolve
from .sources import Loaded, read_policy_sources
from .text import INVENTORY_FILE_BYTES, Text, printable, read_bytes

Pass = Callable[[Program], Program]
PASSES: tuple[Pass, ...] = (
    drop_implied_requirements,
    drop_dead_rules,
    merge_ports,
    merge_peers,
    remove_shadowed,
    drop_inert_policies,
)


MAX_ROUNDS = 8  # a bound, never reached by the passes npc has


def optimise(program: Program, passes: Sequence[Pass] = PASSES, memo: Memo | None = None) -> Program:
    """The passes in order. Each keeps to one namespace and its networks (a policy selects pods
    of its own namespace; shadowing and inert isolation are decided among that group's policies),
    so they run group by group, and with a ``memo`` a group unchanged since the last compile is
    not run again (the agent's policy change costs its namespace, not the cluster)."""
    groups: dict[tuple[str, tuple[str, ...]], list[Policy]] = defaultdict(list)
    for policy in program.policies:
        groups[(policy.namespace, policy.policy_for)].append(policy)
    steps = tuple(passes)

    def run(policies: tuple[Policy, ...]) -> tuple[Policy, ...]:
        # the passes enable each other (a shadowed peer gone leaves two rules one merge can
        # join, a merged rule can shadow another): they go round until every pass has seen the
        # result and left it alone. A pass hands back a policy it did not change as the very
        # object, so that is cheap to see; dropping whole policies gives no other pass more to
        # do, and a pass's own result is already its own fixed point, so most groups settle
        # within the first round
        part, left_alone = Program(policies), 0
        for step in itertools.islice(itertools.cycle(steps), MAX_ROUNDS * len(steps)):
            if left_alone == len(steps):
                break
            done = step(part)
            kept = set(map(id, part.policies))
            part, left_alone = done, left_alone + 1 if all(id(p) in kept for p in done.policies) else 1
        return part.policies

    out: list[Policy] = []
    for found in groups.values():
        part = tuple(found)
        out += (
            run(part) if memo is None else memo.get(("optimise", steps, part), functools.partial(run, part))
        )
    return Program(tuple(out))


def compile_rules(
    program: Program,
    network: str = DEFAULT_NETWORK,
    passes: Sequence[Pass] = PASSES,
    memo: Memo | None = None,
    families: Sequence[int] = IP_FAMILIES,
) -> Rules:
    """``memo``: what the previous compile of this network worked out (the agent keeps one per
    network), reused where the policies are the same; ``families``: the network's."""
    optimised = optimise(program, passes, memo)
    rules = Rules(optimised, lower(optimised, network, memo, families))
    if memo is not None:
        memo.done()
    return rules


def resolve_members(rules: Rules, inventory: Inventory) -> Compiled:
    return Compiled(rules.program, rules.lowered, resolve(rules.lowered, inventory))


def compile_program(
    program: Program,
    inventory: Inventory,
    network: str = DEFAULT_NETWORK,
    passes: Sequence[Pass] = PASSES,
    families: Sequence[int] = IP_FAMILIES,
) -> Compiled:
    return resolve_members(compile_rules(program, network, passes, families=families), inventory)


@attrs.define
class Sources:
    """What every network's compile shares, read once: the policy sources and the inventory's
    parsed documents (and hashes, for the manifest). Mutable for one reason: ``release_inventory``."""

    loaded: Loaded
    inventory_documents: list[Any]
    inventory_path: str | None = None
    inventory_sha256: str = ""
    inventory_name: str = "<inventory>"  # as errors name it (<stdin> for -)
    inventory_text: str | bytes = ""  # for an error's line:column (see ``InventoryText``)
    released: bool = False
    inventory_data: bytes | None = None  # read, not yet parsed (``read_sources``' ``defer_inventory``)

    def release_inventory(self) -> None:
        """Let go of the inventory's parsed documents and text once every network's inventory is
        built from them: no later stage reads them, and at L they are 350 MiB of a compile's peak
        of 960 MiB (the objects of 50k pods, and the 79 MB text kept for errors' positions)."""
        self.inventory_documents, self.inventory_text, self.released = [], "", True


def read_sources(
    paths: Sequence[str],
    inventory: str | None,
    stdin: TextIO | None = None,
    progress: Progress = quiet,
    keep: Callable[[Text], bool] | None = None,
    keep_objects: Callable[[Mapping[str, Any]], bool] | None = None,
    *,
    defer_inventory: bool = False,
) -> Sources:
    """``keep``: which policy texts to parse (all by default; see ``read_policy_sources``);
    ``keep_objects``: which inventory objects will be built, by their kind and metadata's name and
    namespace (see ``read_inventory_documents``). ``defer_inventory`` (for ``build_all`` alone):
    an inventory file is read but not parsed, so that ``build_all`` may parse and build it in a
    second process while this one compiles the policies."""
    if inventory == "-" and "-" in paths:
        raise UsageError("stdin (-) can be read once: as policies or as --inventory, not both")
    progress("reading policies")
    loaded = read_policy_sources(paths, stdin, keep)
    progress("reading inventory")
    if defer_inventory and inventory and inventory != "-" and keep_objects is None:
        data = read_bytes(inventory, "inventory", INVENTORY_FILE_BYTES)
        return Sources(loaded, [], inventory, inventory_name=printable(inventory), inventory_data=data)
    found = read_inventory_documents(inventory, stdin, keep_objects) if inventory else InventoryText()
    return Sources(loaded, list(found.documents), inventory, found.sha256, found.name, found.text)


def policy_program(loaded: Loaded, namespaces: Iterable[Namespace] = ()) -> Program:
    """The policies read, plus one per namespace the 1.6 annotation isolates. Namespace objects
    among the policy sources are the desired state: their annotation wins over the inventory's."""
    by_name = {ns.name: ns for ns in namespaces}
    by_name.update((ns.name, ns) for ns in namespaces_from_objects(loaded.namespaces))
    return Program(loaded.policies + tuple(isolation_policies(by_name.values())))


@attrs.frozen
class Assembled:
    """One network's input: its policies (the 1.6 annotation's included) and its inventory."""

    network: NetworkSpec
    program: Program
    inventory: Inventory
    notes: tuple[str, ...]  # about this network (e.g. no policy governs it)
    warnings: tuple[str, ...]  # skipped inventory objects, malformed address annotations


def assemble(
    sources: Sources,
    network: NetworkSpec,
    *,
    lenient: bool = False,
    keep: Callable[[Mapping[str, Any]], bool] | None = None,
) -> Assembled:
    """``lenient`` (apply, the agent): a malformed inventory object is skipped with a warning
    instead of stopping, so one bad pod cannot block every policy update of the node. ``keep``:
    which inventory objects to read (all by default; see ``build_inventory``)."""
    if sources.released:
        raise RuntimeError("the inventory's documents were released: assemble every network first")
    _parse_deferred(sources)
    address_source = network.address_source()
    inventory = build_inventory(
        sources.inventory_documents,
        address_source,
        sources.inventory_name,
        sources.inventory_text,
        lenient=lenient,
        keep=keep,
        whole=sources.inventory_path is not None,  # without one, no pods is what was given
    )
    return _assembly(sources.loaded, network, inventory, address_source.warnings)


def _assembly(
    loaded: Loaded, network: NetworkSpec, inventory: Inventory, address_warnings: Sequence[str]
) -> Assembled:
    program = select_policies(policy_program(loaded, inventory.namespaces), network)
    ungoverned = not program.policies and not network.is_primary
    notes = (ungoverned_note(network),) if ungoverned else ()
    warnings = (*inventory.warnings, *address_warnings, *uncarried(network, inventory.pods))
    return Assembled(network, program, inventory, notes, warnings)


def _parse_deferred(sources: Sources) -> None:
    """The inventory ``read_sources`` left unparsed, parsed as it would have parsed it."""
    if sources.inventory_data is not None:
        found = inventory_documents(sources.inventory_data, sources.inventory_name)
        sources.inventory_documents, sources.inventory_sha256 = list(found.documents), found.sha256
        sources.inventory_text, sources.inventory_data = found.text, None


@attrs.frozen
class Build:
    """One network compiled from the shared sources."""

    sources: Sources
    assembled: Assembled
    compiled: Compiled

    @property
    def network(self) -> NetworkSpec:
        return self.assembled.network


def build(
    sources: Sources, network: NetworkSpec, progress: Progress = quiet, *, lenient: bool = False
) -> Build:
    return _compiled(sources, _assembled(sources, network, progress, lenient), progress)


def build_all(
    sources: Sources, networks: Sequence[NetworkSpec], progress: Progress = quiet, *, lenient: bool = False
) -> list[Build]:
    """Every network of a command, all from ``sources``: each assembled, then the inventory's
    documents released (``Sources.release_inventory``), then each compiled. For commands that
    read their sources for this alone (compile, apply): ``sources`` builds nothing after.

    An inventory ``read_sources`` deferred is built in a second process while this one compiles
    the policies, where that is worth it (``inventory_ahead``)."""
    data = sources.inventory_data
    if data is not None and not sources.loaded.namespaces and inventory_ahead.worth_it(data):
        built = _built_ahead(sources, data, networks, progress, lenient)
        if built is not None:
            return built
    assembled = [_assembled(sources, network, progress, lenient) for network in networks]
    sources.release_inventory()
    return [_compiled(sources, one, progress) for one in assembled]


def _built_ahead(
    sources: Sources, data: bytes, networks: Sequence[NetworkSpec], progress: Progress, lenient: bool
) -> list[Build] | None:
    """``build_all`` with the inventory built in a child beside the passes and lowering; None
    where the child built nothing (``build_all`` then reads it here, and meets its error).

    The policies are compiled before their namespaces are known, as if none carried the 1.6
    annotation (``worth_it`` found none in the bytes): a network whose inventory says otherwise
    (no policy source may hold a Namespace: those join the program in the inventory's order) is
    compiled again with its program."""
    with inventory_ahead.inventories_ahead(data, sources.inventory_name, networks, lenient) as result:
        programs = [select_policies(policy_program(sources.loaded), network) for network in networks]
        rules = []
        for network, program in zip(networks, programs, strict=True):
            progress(f"compiling {len(program.policies)} policies for network {network.name}")
            rules.append(compile_rules(program, network.name, families=network.ip_families))
        progress("indexing pods")
        built = result()
    if built is None:
        return None
    sources.inventory_sha256, sources.inventory_data, sources.released = built.sha256, None, True
    jobs = []
    for network, program, compiled, (inventory, warnings) in zip(
        networks, programs, rules, built.networks, strict=True
    ):
        assembled = _assembly(sources.loaded, network, inventory, warnings)
        if assembled.program != program:
            compiled = compile_rules(assembled.program, network.name, families=network.ip_families)
        jobs.append(Build(sources, assembled, resolve_members(compiled, inventory)))
    return jobs


def _assembled(sources: Sources, network: NetworkSpec, progress: Progress, lenient: bool) -> Assembled:
    progress(f"indexing pods for network {network.name}")
    return assemble(sources, network, lenient=lenient)


def _compiled(sources: Sources, assembled: Assembled, progress: Progress) -> Build:
    network = assembled.network
    progress(f"compiling {len(assembled.program.policies)} policies for network {network.name}")
    compiled = compile_program(
        assembled.program, assembled.inventory, network.name, families=network.ip_families
    )
    return Build(sources, assembled, compiled)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def manifest(job: Build, backend: Backend, options: Options, files: dict[str, str]) -> str:
    """``manifest.json``: what was compiled from what, with counts; no clock unless
    ``SOURCE_DATE_EPOCH`` asks for one, so the same inputs give the same bytes. Written by orjson:
    the standard library indents in pure Python (1.1 s for the L manifest's 40 MB, orjson 0.09 s),
    the same bytes but for text beyond ASCII, which orjson writes as UTF-8 instead of escapes."""
    compiled, sources = job.compiled, job.sources
    lowered = compiled.lowered
    inventory = None
    if sources.inventory_path:
        inventory = {"path": sources.inventory_path, "sha256": sources.inventory_sha256}
    data: dict[str, object] = {
        "npc": __version__,
        "backend": backend.name,
        "network": lowered.network,
        "ip_source": str(job.network.ip_source),
        "policy_kinds": list(job.network.policy_kinds),
        "ip_families": [FAMILY_NAMES[f] for f in job.network.ip_families],
        "inputs": [{"path": p, "sha256": h} for p, h in sorted(sources.loaded.files)],
        "inventory": inventory,
        "counts": {
            "policies": len(job.assembled.program.policies),
            "policies_after_passes": len(compiled.program.policies),
            "chains": backend.chain_counts(compiled, options),
            "rules": backend.rule_counts(compiled, options),
            "sets": len(compiled.members),  # of the program: a backend loads those its rules test
        },
        "files": {name: _sha256(text.encode()) for name, text in sorted(files.items())},
        "program": lowered_json.encode(lowered),  # every set's meaning: what npc agent --artefacts reads
    }
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch and epoch.isdigit():
        stamp = datetime.datetime.fromtimestamp(int(epoch), datetime.UTC)
        data["generated"] = stamp.strftime("%Y-%m-%dT%H:%M:%SZ")
    return orjson.dumps(
        data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE
    ).decode()
