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

from . import __version__
from .errors import NpcError, UsageError
from .frontends.legacy import isolation_policies, namespaces_from_objects
from .inventory import Inventory, read_inventory
from .ir import Program
from .lower import DEFAULT_MARK, DEFAULT_NETWORK
from .pipeline import BACKENDS, Compiled, backend, compile_program
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
        "--mark", type=_mark, default=DEFAULT_MARK, help="packet mark bit npc may use (default 0x1000000)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="npc", description="Compile Kubernetes NetworkPolicy (and npc DSL) into iptables/ipset."
    )
    parser.add_argument("--version", action="version", version=f"npc {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    compile_ = sub.add_parser("compile", help="write artefacts (rules.v4, rules.v6, ipsets, manifest.json)")
    _add_compile_args(compile_)
    compile_.add_argument(
        "-o", "--output", metavar="DIR", help="artefact folder (default: one stream on stdout)"
    )
    apply = sub.add_parser("apply", help="compile and load into this network namespace's kernel")
    _add_compile_args(apply)
    apply.add_argument("--iptables", choices=("legacy", "nft"), help="force the iptables flavour")
    return parser


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Job:
    """One compile: inputs read, policies compiled, artefacts rendered."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        loaded = read_policy_sources(args.paths, sys.stdin)
        self.notes = list(loaded.notes)
        self.inputs = sorted(loaded.files)
        inventory = read_inventory(args.inventory) if args.inventory else Inventory()
        namespaces = {ns.name: ns for ns in inventory.namespaces}
        for ns in namespaces_from_objects(loaded.namespaces):
            namespaces.setdefault(ns.name, ns)
        program = Program(loaded.policies + tuple(isolation_policies(namespaces.values())))
        self.compiled: Compiled = compile_program(program, inventory, args.network, args.mark)
        self.backend = backend(args.backend)
        self.files = self.backend.artefacts(self.compiled.lowered, self.compiled.members)

    def manifest(self) -> str:
        lowered = self.compiled.lowered
        inventory = None
        if self.args.inventory:
            inventory = {
                "path": self.args.inventory,
                "sha256": _sha256(Path(self.args.inventory).read_bytes()),
            }
        data: dict[str, object] = {
            "npc": __version__,
            "backend": self.args.backend,
            "network": lowered.names.network,
            "inputs": [{"path": p, "sha256": h} for p, h in self.inputs],
            "inventory": inventory,
            "counts": {
                "policies": len(self.compiled.program.policies),
                "chains": {str(f.family): len(lowered.chain_names(f.family)) for f in lowered.families},
                "rules": {
                    n: sum(1 for x in t.splitlines() if x.startswith("-A ")) for n, t in self.files.items()
                },
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
    job = Job(args)
    _notes(job.notes)
    files = dict(job.files, **{"manifest.json": job.manifest()})
    if args.output:
        out = Path(args.output)
        out.mkdir(parents=True, exist_ok=True)
        for name, text in sorted(files.items()):
            tmp = out / f".{name}.tmp"
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(out / name)
    else:
        for name, text in files.items():
            sys.stdout.write(f"### npc artefact: {name}\n{text}")
    return 0


def _apply(args: argparse.Namespace) -> int:
    from .apply import apply_iptables, detect_tools

    job = Job(args)
    _notes(job.notes)
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


def _notes(notes: Sequence[str], level: str = "note") -> None:
    for note in notes:
        print(f"npc: {level}: {note}", file=sys.stderr)


COMMANDS = {"compile": _compile, "apply": _apply}


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
