"""``npc`` command line: arguments, exit codes and output; the only module that prints.

Exit codes: 0 ok, 1 invalid input, 2 usage error, 3 apply failed.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__, collector, lowered_json
from .agent.command import add_parser as add_agent_parser
from .agent.command import run as run_agent
from .convert import TARGETS, convert, fmt
from .errors import NpcError, UsageError
from .frontends.legacy import isolation_policies, namespaces_from_objects
from .inventory import build_inventory, read_inventory_documents
from .ir import Program
from .lower import DEFAULT_MARK, DEFAULT_NETWORK
from .network_file import read_networks_file
from .networks import IP_SOURCE_HELP, NetworkSpec, network_spec, select_policies, ungoverned_note
from .pipeline import BACKENDS, Compiled, backend, compile_program
from .progress import Progress, display, quiet
from .sources import read_policy_sources


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def _mark(text: str) -> int:
    value = int(text, 0)
    if value <= 0 or value & (value - 1) or value > 0x80000000:
        raise argparse.ArgumentTypeError("must be a single bit, e.g. 0x1000000")
    return value


def _add_compile_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="policy files or folders (.yaml .yml .json .npc), - for stdin",
    )
    p.add_argument("--inventory", metavar="FILE", help="kubectl get namespaces,pods -A -o json output")
    p.add_argument("--backend", default="iptables", choices=BACKENDS)
    p.add_argument("--network", default=DEFAULT_NETWORK, help="network name (default: the primary network)")
    p.add_argument(
        "--ip-source", metavar="SRC", help=f"where pods' addresses on --network come from: {IP_SOURCE_HELP}"
    )
    p.add_argument(
        "--policy-kinds",
        metavar="KINDS",
        help="NetworkPolicy and/or MultiNetworkPolicy, comma-separated (default: NetworkPolicy on the "
        "primary network, MultiNetworkPolicy naming the network in policy-for on any other)",
    )
    p.add_argument(
        "--mark", type=_mark, default=DEFAULT_MARK, help="packet mark bit npc may use (default 0x1000000)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="npc",
        description="Compile Kubernetes NetworkPolicy and the npc language into iptables/ipset or nftables.",
    )
    parser.add_argument("--version", action="version", version=f"npc {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    compile_ = sub.add_parser(
        "compile",
        help="write artefacts (iptables: rules.v4, rules.v6, ipsets; nftables: ruleset.nft; manifest.json)",
    )
    _add_compile_args(compile_)
    compile_.add_argument(
        "-o", "--output", metavar="DIR", help="artefact folder (default: one stream on stdout)"
    )
    compile_.add_argument(
        "--networks",
        metavar="FILE",
        help="YAML/JSON file listing networks (name, ipSource, policyKinds): compile each into DIR/<network>/",
    )
    apply = sub.add_parser("apply", help="compile and load into this network namespace's kernel")
    _add_compile_args(apply)
    apply.add_argument("--iptables", choices=("legacy", "nft"), help="force the iptables flavour")
    _add_language_commands(sub)
    add_agent_parser(sub)
    return parser


def _add_language_commands(sub: argparse._SubParsersAction[_Parser]) -> None:
    convert_ = sub.add_parser(
        "convert", help="rewrite policies in the npc language (dsl) or as Kubernetes YAML (k8s)"
    )
    convert_.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="policy files or folders (.yaml .yml .json .npc), - for stdin",
    )
    convert_.add_argument(
        "--to", required=True, choices=TARGETS, help="dsl: npc language; k8s: multi-document YAML"
    )
    convert_.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    fmt_ = sub.add_parser("fmt", help="rewrite .npc files in canonical form, in place")
    fmt_.add_argument("paths", nargs="+", metavar="FILE", help=".npc files or folders")
    fmt_.add_argument("--check", action="store_true", help="change nothing; exit 1 if a file would change")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def network_from_args(args: argparse.Namespace) -> NetworkSpec:
    try:
        return network_spec(args.network, args.ip_source, args.policy_kinds)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


class Inputs:
    """What every network's compile shares, read once: the policy sources and the inventory's documents."""

    def __init__(self, args: argparse.Namespace, progress: Progress = quiet) -> None:
        progress("reading policies")
        self.loaded = read_policy_sources(args.paths, sys.stdin)
        progress("reading inventory")
        self.inventory_documents, self.inventory_sha256 = (
            read_inventory_documents(args.inventory) if args.inventory else ([], "")
        )


class Job:
    """One compile for one network: inputs read, policies selected and compiled, artefacts rendered."""

    def __init__(
        self,
        args: argparse.Namespace,
        network: NetworkSpec | None = None,
        inputs: Inputs | None = None,
        progress: Progress = quiet,
    ) -> None:
        self.args = args
        self.network = network or network_from_args(args)
        inputs = inputs or Inputs(args, progress)
        progress(f"indexing pods for network {self.network.name}")
        loaded = inputs.loaded
        self.inputs = sorted(loaded.files)
        self.inventory_sha256 = inputs.inventory_sha256
        source = self.network.address_source()
        self.inventory = inventory = build_inventory(
            inputs.inventory_documents, source, args.inventory or "<inventory>"
        )
        self.warnings = source.warnings  # malformed address annotations, one per pod
        namespaces = {ns.name: ns for ns in inventory.namespaces}
        # Namespace objects among the policy inputs are the desired state: their 1.6 annotation wins.
        namespaces.update((ns.name, ns) for ns in namespaces_from_objects(loaded.namespaces))
        program = Program(loaded.policies + tuple(isolation_policies(namespaces.values())))
        program = select_policies(program, self.network)
        self.policy_count = len(program.policies)
        ungoverned = not program.policies and not self.network.is_primary
        self.network_notes = [ungoverned_note(self.network)] if ungoverned else []
        self.notes = [*loaded.notes, *self.network_notes]
        progress(f"compiling {len(program.policies)} policies for network {self.network.name}")
        self.compiled: Compiled = compile_program(program, inventory, self.network.name, args.mark)
        progress(f"rendering {args.backend} artefacts")
        self.backend = backend(args.backend)
        self.files = self.backend.artefacts(self.compiled.lowered, self.compiled.members)

    def manifest(self) -> str:
        lowered = self.compiled.lowered
        inventory = None
        if self.args.inventory:
            inventory = {
                "path": self.args.inventory,
                "sha256": self.inventory_sha256,
            }
        data: dict[str, object] = {
            "npc": __version__,
            "backend": self.args.backend,
            "network": lowered.names.network,
            "ip_source": str(self.network.ip_source),
            "policy_kinds": list(self.network.policy_kinds),
            "inputs": [{"path": p, "sha256": h} for p, h in self.inputs],
            "inventory": inventory,
            "counts": {
                "policies": self.policy_count,
                "policies_after_passes": len(self.compiled.program.policies),
                "chains": {str(f.family): len(lowered.chain_names(f.family)) for f in lowered.families},
                "rules": self.backend.rule_counts(self.files),
                "sets": len(self.compiled.members),
                "set_entries": sum(len(m) for m in self.compiled.members.values()),
            },
            "files": {name: _sha256(text.encode()) for name, text in sorted(self.files.items())},
            "program": lowered_json.encode(lowered),  # every set's meaning: what npc agent --artefacts needs
        }
        epoch = os.environ.get("SOURCE_DATE_EPOCH")
        if epoch and epoch.isdigit():
            stamp = datetime.datetime.fromtimestamp(int(epoch), datetime.UTC)
            data["generated"] = stamp.strftime("%Y-%m-%dT%H:%M:%SZ")
        return json.dumps(data, indent=2, sort_keys=True) + "\n"


def _compile(args: argparse.Namespace) -> int:
    if args.networks:
        return _compile_networks(args)
    with collector.paused(), display() as progress:
        job = Job(args, progress=progress)
    _notes(job.notes)
    _notes(job.warnings, "warning")
    _write(dict(job.files, **{"manifest.json": job.manifest()}), args.output)
    return 0


def _compile_networks(args: argparse.Namespace) -> int:
    """Every network of a networks file, each into its own folder; all compiled before any is written."""
    if args.network != DEFAULT_NETWORK or args.ip_source or args.policy_kinds:
        raise UsageError(
            "--networks lists every network: leave out --network, --ip-source and --policy-kinds"
        )
    networks = read_networks_file(args.networks)
    with collector.paused(), display() as progress:
        inputs = Inputs(args, progress)
        jobs = [Job(args, network, inputs, progress) for network in networks]
    _notes(inputs.loaded.notes)
    for job in jobs:
        _notes(job.network_notes)
        _notes(job.warnings, "warning")
    for job in jobs:
        folder = job.network.folder
        files = dict(job.files, **{"manifest.json": job.manifest()})
        _write(files, str(Path(args.output) / folder) if args.output else None, f"{folder}/")
    return 0


def _write(files: dict[str, str], output: str | None, label: str = "") -> None:
    """Into ``output`` (each file replaced atomically), or as one stream on stdout."""
    if output:
        out = Path(output)
        out.mkdir(parents=True, exist_ok=True)
        for name, text in sorted(files.items()):
            tmp = out / f".{name}.tmp"
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(out / name)
    else:
        for name, text in files.items():
            sys.stdout.write(f"### npc artefact: {label}{name}\n{text}")


def _apply(args: argparse.Namespace) -> int:
    from .apply import apply_iptables, detect_tools

    with collector.paused(), display() as progress:
        job = Job(args, progress=progress)
    _notes(job.notes)
    _notes(job.warnings, "warning")
    if args.backend == "nftables":
        return _apply_nftables(args, job)
    tools = detect_tools(args.iptables)
    report = apply_iptables(job.compiled.lowered, job.compiled.members, tools)
    _notes(report.warnings, "warning")
    print(
        f"npc: applied network {job.compiled.lowered.names.network} with iptables ({report.flavour}): "
        f"{report.chains} chains, sets {report.sets_created} created, {report.sets_updated} updated, "
        f"{report.sets_destroyed} removed",
        file=sys.stderr,
    )
    return 0


def _apply_nftables(args: argparse.Namespace, job: Job) -> int:
    from .apply_nft import apply_nftables

    if args.iptables:
        raise UsageError("--iptables applies to --backend iptables only")
    report = apply_nftables(job.compiled.lowered, job.compiled.members)
    print(
        f"npc: applied network {job.compiled.lowered.names.network} with nftables: table {report.table}, "
        f"{report.chains} chains, {report.sets} sets and maps, {report.elements} elements",
        file=sys.stderr,
    )
    return 0


def _convert(args: argparse.Namespace) -> int:
    result = convert(args.paths, args.to, sys.stdin)
    _notes(result.notes)
    if args.output:
        out = Path(args.output)
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_text(result.text, encoding="utf-8")
        tmp.replace(out)
    else:
        sys.stdout.write(result.text)
    return 0


def _fmt(args: argparse.Namespace) -> int:
    changed = fmt(args.paths, check=args.check)
    for path in changed:
        print(f"npc: {'would reformat' if args.check else 'reformatted'} {path}", file=sys.stderr)
    return 1 if args.check and changed else 0


def _notes(notes: Sequence[str], level: str = "note") -> None:
    for note in notes:
        print(f"npc: {level}: {note}", file=sys.stderr)


COMMANDS = {"compile": _compile, "apply": _apply, "convert": _convert, "fmt": _fmt, "agent": run_agent}


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except NpcError as exc:
        print(f"npc: {exc.render()}" if isinstance(exc, UsageError) else exc.render(), file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        return 130
