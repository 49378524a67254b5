"""``npc`` command line: arguments, exit codes and output; the only module that prints.

Exit codes: 0 ok, 1 invalid input, 2 usage error, 3 apply failed.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import json
import os
import sys
from collections.abc import Sequence

from . import __version__, collector
from .convert import TARGETS, convert, fmt
from .errors import NpcError, UsageError
from .frontends.legacy import isolation_policies, namespaces_from_objects
from .inventory import InventoryText, build_inventory, read_inventory_documents
from .ir import Program
from .lock import DEFAULT_WAIT, netns_lock
from .lower import DEFAULT_MARK, DEFAULT_NETWORK, Names
from .network_file import read_networks_file
from .networks import IP_SOURCE_HELP, NetworkSpec, network_spec, select_policies, ungoverned_note
from .output import OutputError, write_file, write_folder
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


_WAIT_HELP = "how long to wait for another npc apply or reset in this namespace (default 60)"


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
    apply.add_argument("--wait", type=float, default=DEFAULT_WAIT, metavar="SECONDS", help=_WAIT_HELP)
    reset = sub.add_parser("reset", help="remove everything npc owns in this network namespace")
    reset.add_argument("--backend", choices=BACKENDS, help="only this backend's objects (default: both)")
    reset.add_argument("--iptables", choices=("legacy", "nft"), help="only this iptables flavour")
    where = reset.add_mutually_exclusive_group()
    where.add_argument(
        "--network", default=DEFAULT_NETWORK, help="network name (default: the primary network)"
    )
    where.add_argument("--all", action="store_true", help="every network")
    reset.add_argument("--wait", type=float, default=DEFAULT_WAIT, metavar="SECONDS", help=_WAIT_HELP)
    _add_language_commands(sub)
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
        if args.inventory == "-" and "-" in args.paths:
            raise UsageError("stdin (-) can be read once: as policies or as --inventory, not both")
        progress("reading inventory")
        self.inventory = (
            read_inventory_documents(args.inventory, sys.stdin) if args.inventory else InventoryText()
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
        self.inventory_sha256 = inputs.inventory.sha256
        source = self.network.address_source()
        found = inputs.inventory
        lenient = args.command == "apply"  # one bad pod must not block every update of the node
        self.inventory = inventory = build_inventory(
            found.documents, source, found.name, found.text, lenient=lenient
        )
        self.warnings = [
            *inventory.warnings,
            *source.warnings,
        ]  # skipped objects, malformed address annotations
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
    _write(_artefacts(job), args.output)
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
    if args.output:  # every network's folder, or none
        tree = {
            f"{job.network.folder}/{name}": text for job in jobs for name, text in _artefacts(job).items()
        }
        write_folder(args.output, tree)
    else:
        for job in jobs:
            _write(_artefacts(job), None, f"{job.network.folder}/")
    return 0


def _artefacts(job: Job) -> dict[str, str]:
    return dict(job.files, **{"manifest.json": job.manifest()})


def _write(files: dict[str, str], output: str | None, label: str = "") -> None:
    """Into ``output`` (all files or none), or as one stream on stdout."""
    if output:
        write_folder(output, files)
    else:
        for name, text in files.items():
            sys.stdout.write(f"### npc artefact: {label}{name}\n{text}")


def _apply(args: argparse.Namespace) -> int:
    with collector.paused(), display() as progress:
        job = Job(args, progress=progress)
    _notes(job.notes)
    _notes(job.warnings, "warning")
    with netns_lock(args.wait):
        return _load(args, job)


def _load(args: argparse.Namespace, job: Job) -> int:
    from .apply import apply_iptables, detect_tools

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


def _reset(args: argparse.Namespace) -> int:
    from .apply import _tools, reset_iptables
    from .apply_nft import reset_nftables

    names = None if args.all else Names(args.network)
    flavours = [_tools(args.iptables)] if args.iptables else [_tools("legacy"), _tools("nft")]
    removed: list[str] = []
    with netns_lock(args.wait):
        if args.backend in (None, "iptables"):
            removed += reset_iptables(names, flavours)
        if args.backend in (None, "nftables") and not args.iptables:
            removed += reset_nftables(names)
    where = "every network" if args.all else f"network {args.network}"
    print(f"npc: reset {where}: removed {len(removed)} objects", file=sys.stderr)
    _notes(removed, "removed")
    return 0


def _convert(args: argparse.Namespace) -> int:
    result = convert(args.paths, args.to, sys.stdin)
    _notes(result.notes)
    if args.output:
        write_file(args.output, result.text)
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


COMMANDS = {"compile": _compile, "apply": _apply, "reset": _reset, "convert": _convert, "fmt": _fmt}


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        code = COMMANDS[args.command](args)
        sys.stdout.flush()  # a full or closed stdout is reported here, not at exit
        return code
    except NpcError as exc:
        print(f"npc: {exc.render()}" if isinstance(exc, UsageError) else exc.render(), file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:
        _silence_stdout()
        return 0
    except OSError as exc:  # stdout or stderr themselves failing (a full disk, a closed descriptor)
        _silence_stdout()
        with contextlib.suppress(OSError):
            print(f"npc: error: cannot write output: {exc.strerror or exc}", file=sys.stderr)
        return OutputError.exit_code
    except KeyboardInterrupt:
        return 130


def _silence_stdout() -> None:
    """Whatever is still buffered for a stdout that cannot take it is dropped, not flushed at exit."""
    with contextlib.suppress(OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
