"""``npc`` command line: arguments, exit codes and output; the only module that prints.

Exit codes: 0 ok, 1 invalid input, 2 usage error, 3 apply or write failed (the previous state
stays), 4 apply and its undoing failed (a mixed state: the next apply repairs it).

Every command is one entry of ``COMMANDS``: its arguments and its handler. A command (or a
whole family of them, like the agent's) is added with one entry; backends come from the
registry in ``npc.backends``, so a new backend needs nothing here.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

import attrs

from . import __version__, collector, pipeline
from .agent.flags import add_agent_args
from .analysis import commands as analysis
from .arguments import (
    add_backend_args,
    add_network_args,
    add_paths,
    given,
    network_from_args,
    network_name,
    networks_from_args,
    options_from_args,
)
from .backends import BACKENDS
from .backends import get as get_backend
from .backends.base import Options, SubprocessRunner, stopped_part_way
from .errors import ApplyError, InputError, MixedStateError, NpcError, UsageError
from .frontends.positions import printable
from .ir import DEFAULT_NETWORK
from .lock import DEFAULT_WAIT
from .networks import network_spec
from .output import OutputError, write_file, write_folder
from .pipeline import Sources, read_sources
from .progress import Progress, display, quiet


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        command = self.prog.removeprefix("npc").strip()  # "npc: " comes with every usage error
        raise UsageError(f"{command}: {message}" if command else message)


def _compile_args(p: argparse.ArgumentParser) -> None:
    add_paths(p)
    p.add_argument(
        "--inventory", type=given, metavar="FILE", help="kubectl get namespaces,pods -A -o json output"
    )
    add_backend_args(p)
    add_network_args(p)


def _compile_parser(p: argparse.ArgumentParser) -> None:
    _compile_args(p)
    p.add_argument(
        "-o", "--output", type=given, metavar="DIR", help="artefact folder (default: one stream on stdout)"
    )
    p.add_argument(
        "--networks",
        type=given,
        metavar="FILE",
        help="YAML/JSON file listing networks (name, ipSource, policyKinds, ipFamilies): compile each into DIR/<network>/",
    )


_WAIT_HELP = "how long to wait for another npc apply or reset in this namespace (default 60)"


def seconds(text: str) -> float:
    """A wait: 0 (do not wait) or more, ``inf`` for ever; not nan, which would wait for ever too."""
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError("must be 0 or more seconds")
    return value


def _apply_parser(p: argparse.ArgumentParser) -> None:
    _compile_args(p)
    p.add_argument("--iptables", choices=("legacy", "nft"), help="force the iptables flavour")
    p.add_argument("--wait", type=seconds, default=DEFAULT_WAIT, metavar="SECONDS", help=_WAIT_HELP)


def _reset_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=BACKENDS, help="only this backend's objects (default: every backend)")
    p.add_argument("--iptables", choices=("legacy", "nft"), help="only this iptables flavour")
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--network",
        type=network_name,
        default=DEFAULT_NETWORK,
        help="network name (default: the primary network)",
    )
    where.add_argument("--all", action="store_true", help="every network")
    p.add_argument("--wait", type=seconds, default=DEFAULT_WAIT, metavar="SECONDS", help=_WAIT_HELP)


def _convert_parser(p: argparse.ArgumentParser) -> None:
    from .convert import TARGETS  # the converters (and the DSL's parser) load for convert and fmt alone

    add_paths(p)
    p.add_argument(
        "--to",
        required=True,
        choices=(*TARGETS, *BACKENDS),
        help="dsl: npc language; k8s: multi-document YAML; a backend that writes one file (calico): what "
        "npc compile --backend prints (the others write several: npc compile --backend NAME -o DIR)",
    )
    p.add_argument(
        "-o", "--output", type=given, metavar="FILE", help="write to FILE instead of stdout (-: stdout)"
    )


def _fmt_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="FILE", help=".npc files or folders")
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if a file would change")


def _agent_parser(p: argparse.ArgumentParser) -> None:
    add_backend_args(p)
    add_network_args(p)
    add_agent_args(p)


def _agent(args: argparse.Namespace) -> int:
    from .agent.command import run_agent

    return run_agent(args)


def _read(args: argparse.Namespace, progress: Progress) -> Sources:
    return read_sources(args.paths, args.inventory, sys.stdin, progress, defer_inventory=True)


def build_from_args(args: argparse.Namespace, progress: Progress = quiet) -> pipeline.Build:
    """One network compiled from the command line's PATHs, --inventory and network flags."""
    lenient = args.command == "apply"  # one bad pod must not block every update of the node
    return pipeline.build_all(_read(args, progress), [network_from_args(args)], progress, lenient=lenient)[0]


def _compile(args: argparse.Namespace) -> int:
    backend, options = get_backend(args.backend), options_from_args(args)
    backend.check(options)
    networks = networks_from_args(args)
    # every network compiled and rendered before anything is written
    with collector.paused(to_the_end=True), display() as progress:
        sources = _read(args, progress)
        jobs = pipeline.build_all(sources, networks, progress)
        progress(f"rendering {backend.name} artefacts")
        try:
            rendered = [backend.render(job.compiled, options) for job in jobs]
        except InputError as exc:
            raise sources.loaded.placed(exc) from None
        artefacts = [
            dict(files, **{"manifest.json": pipeline.manifest(job, backend, options, files)})
            for job, files in zip(jobs, rendered, strict=True)
        ]
    collector.keep((jobs, artefacts))  # the inventory, IR and artefacts: the OS frees them at exit
    _notes(sources.loaded.notes)
    for job in jobs:
        _notes(job.assembled.notes)
        _notes(backend.notes(job.compiled, options))
        _notes(job.assembled.warnings, "warning")
    if args.networks and args.output:  # every network's folder, or none
        tree = {
            f"{j.network.folder}/{n}": t for j, a in zip(jobs, artefacts, strict=True) for n, t in a.items()
        }
        write_folder(args.output, tree)
    elif args.networks:
        for job, files in zip(jobs, artefacts, strict=True):
            _write(files, None, f"{job.network.folder}/")
    elif not args.output and backend.stdout:  # one stream another tool reads
        sys.stdout.write(artefacts[0][backend.stdout])
    else:
        _write(artefacts[0], args.output)
    return 0


def _write(files: dict[str, str], output: str | None, label: str = "") -> None:
    """Into ``output`` (all files or none), or as one stream on stdout."""
    if output:
        write_folder(output, files)
    else:
        for name, text in files.items():
            sys.stdout.write(f"### npc artefact: {label}{name}\n{text}")


def _apply(args: argparse.Namespace) -> int:
    backend, options = get_backend(args.backend), options_from_args(args)
    backend.check(options)
    with collector.paused(to_the_end=True), display() as progress:
        job = build_from_args(args, progress)
    _notes(job.sources.loaded.notes)
    _notes(job.assembled.notes)
    _notes(backend.notes(job.compiled, options))
    _notes(job.assembled.warnings, "warning")
    with collector.paused():  # rendering allocates millions of objects: no collection walks the heap
        report = backend.load(job.compiled, options, SubprocessRunner())
    collector.keep(job)  # the OS frees it at exit
    _notes(report.warnings, "warning")
    print(f"npc: applied network {report.network} with {report.summary}", file=sys.stderr)
    return 0


def _convert(args: argparse.Namespace) -> int:
    backend = get_backend(args.to) if args.to in BACKENDS else None
    stream = backend.stdout if backend else None
    if backend and not stream:
        raise UsageError(f"--to {args.to} is several files: use npc compile --backend {args.to} -o DIR")
    sources = read_sources(args.paths, None, sys.stdin)
    _notes(sources.loaded.notes)
    try:
        if backend and stream:  # the primary network's artefact, as ``compile --backend`` prints it
            job = pipeline.build(sources, network_spec())
            text = backend.render(job.compiled, Options())[stream]
        else:
            from .convert import convert

            result = convert(sources.loaded, args.to)
            _notes(result.notes)
            text = result.text
    except InputError as exc:
        raise sources.loaded.placed(exc) from None
    if args.output and args.output != "-":  # ``-``: stdout, as ``-`` among the paths is stdin
        write_file(args.output, text)
    else:
        sys.stdout.write(text)
    return 0


def _reset(args: argparse.Namespace) -> int:
    options = Options(iptables=args.iptables, wait=args.wait)
    names = [args.backend] if args.backend else ["iptables"] if args.iptables else list(BACKENDS)
    network = None if args.all else args.network
    removed: list[str] = []  # by the backends done, should a later one be refused
    for name in names:
        try:
            report = get_backend(name).reset(network, options, SubprocessRunner())
        except UsageError:  # a backend that loads nothing (calico) owns nothing here
            if args.backend:
                raise
            continue
        except MixedStateError:  # the backend's own, already saying what went
            raise
        except ApplyError as exc:
            stopped_part_way(removed, str(exc))
        print(f"npc: reset {report.network} with {report.summary}", file=sys.stderr)
        _notes(report.warnings, "removed")
        removed += report.warnings
    return 0


def _fmt(args: argparse.Namespace) -> int:
    from .convert import fmt

    changed = fmt(args.paths, check=args.check)
    for path in changed:
        print(f"npc: {'would reformat' if args.check else 'reformatted'} {printable(path)}", file=sys.stderr)
    return 1 if args.check and changed else 0


def _notes(notes: Sequence[str], level: str = "note") -> None:
    for note in notes:
        print(f"npc: {level}: {note}", file=sys.stderr)


def _analysis(args: argparse.Namespace) -> int:
    with collector.paused():
        return analysis.COMMANDS[args.command].run(args, _notes)


@attrs.frozen
class Command:
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: dict[str, Command] = {
    "compile": Command(
        "write artefacts (iptables: rules.v4, rules.v6, ipsets; nftables: ruleset.nft; calico: calico.yaml; "
        "weave: rules.v4, ipsets; manifest.json)",
        _compile_parser,
        _compile,
    ),
    "apply": Command("compile and load into this network namespace's kernel", _apply_parser, _apply),
    "reset": Command("remove everything npc owns in this network namespace", _reset_parser, _reset),
    "convert": Command(
        "rewrite policies in the npc language (dsl), as Kubernetes YAML (k8s) or Calico resources (calico)",
        _convert_parser,
        _convert,
    ),
    "fmt": Command("rewrite .npc files in canonical form, in place", _fmt_parser, _fmt),
    "agent": Command(
        "keep this node's kernel in step with policies and pods (foreground)", _agent_parser, _agent
    ),
    **{
        name: Command(c.help, c.arguments, lambda args: _analysis(args))
        for name, c in analysis.COMMANDS.items()
    },
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """Every command's arguments, or only those of the command ``only``: defining the others
    would import what they need (the agent's API client) for nothing."""
    parser = _Parser(
        prog="npc",
        description=(
            "Compile Kubernetes NetworkPolicy, MultiNetworkPolicy and the npc language into "
            "iptables/ipset, nftables, Calico or Weave Net rules."
        ),
    )
    parser.add_argument("--version", action="version", version=f"npc {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.help)
        if only in (None, name):
            command.arguments(p)
    return parser


def _command(argv: Sequence[str]) -> str | None:
    """The command named on the command line (the first word; npc's own options take no value)."""
    first = next((a for a in argv if not a.startswith("-")), None)
    return first if first in COMMANDS else None


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = build_parser(_command(argv)).parse_args(argv)
        code = COMMANDS[args.command].run(args)
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
    except MemoryError:  # an input within the size limits, under a smaller memory limit (ulimit -v)
        with contextlib.suppress(OSError):
            print("npc: error: out of memory", file=sys.stderr)
        return 1


def run() -> NoReturn:
    """The process's entry: ``main``, then exit without taking the heap apart object by object
    (as mypy does): at 50k pods that is a tenth of a second of freeing what the OS frees at once."""
    collector.exit_without_freeing()
    code = main()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


def _silence_stdout() -> None:
    """Whatever is still buffered for a stdout that cannot take it is dropped, not flushed at exit."""
    with contextlib.suppress(OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
