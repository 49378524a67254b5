"""``npc matrix``, ``npc explain`` and ``npc diff``: their arguments and what they print.

The matrix machinery (numpy, jinja2) is imported by the commands that use it: ``npc explain``
answers in well under a second at 50,000 pods, start-up included.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
from collections.abc import Callable, Iterable, Sequence

import attrs

from .. import collector
from ..arguments import Once, add_network_args, add_paths, given, network_from_args
from ..errors import InputError, UsageError
from ..ir import Address, Program
from ..pipeline import Sources, read_sources
from .explain import Endpoint, Explainer
from .focus import Focus, is_address
from .load import Model, address, addresses, load_model, with_policies
from .ports import PortQuery, default_ports, parse_port, unique

Notes = Callable[[Sequence[str], str], None]
FORMATS = ("text", "json", "csv", "html")


def _ports(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--port",
        metavar="PROTO/PORT",
        action="append",
        type=parse_port,
        help="tcp/80, udp/53, sctp/9000 or a container port name (tcp/http); repeatable "
        "(default: every port the policies name, every named container port, and a port of each "
        "run of ports the rules treat alike that those leave out, such as udp/1 for UDP's unnamed)",
    )


def _inventory(p: argparse.ArgumentParser) -> None:

    p.add_argument(
        "--inventory",
        type=given,
        metavar="FILE",
        required=True,
        help="kubectl get namespaces,pods -A -o json output",
    )
    add_network_args(p)


def matrix_arguments(p: argparse.ArgumentParser) -> None:

    add_paths(p)
    _inventory(p)
    _ports(p)
    p.add_argument("--format", default="text", choices=FORMATS)


def explain_arguments(p: argparse.ArgumentParser) -> None:

    add_paths(p)
    _inventory(p)
    p.add_argument("--from", dest="source", required=True, metavar="NS/POD|POD_ADDRESS", action=Once)
    p.add_argument("--to", dest="target", required=True, metavar="NS/POD|ADDRESS", action=Once)
    p.add_argument("--port", required=True, type=parse_port, metavar="PROTO/PORT", action=Once)
    p.add_argument("--format", default="text", choices=("text", "json"))


def diff_arguments(p: argparse.ArgumentParser) -> None:
    for flag in ("--old", "--new"):
        p.add_argument(
            flag,
            nargs="+",
            type=given,
            required=True,
            metavar="PATH",
            help=f"the {flag[2:]} policy files or folders",
        )
    _inventory(p)
    _ports(p)
    p.add_argument("--format", default="text", choices=("text", "json"))
    p.add_argument("--exit-code", action="store_true", help="exit 1 when anything changed, 0 when not")


def _model(
    args: argparse.Namespace, paths: Sequence[str], notes: Notes, focus: Focus | None = None
) -> tuple[Sources, Model]:
    """The sources (policies and inventory read once) and one network's model, as compile builds
    it; with a ``focus``, only what can matter to its pods (see ``focus``)."""

    keep, keep_objects = (focus.may_hold, focus.keep) if focus else (None, None)
    sources = read_sources(paths, args.inventory, sys.stdin, keep=keep, keep_objects=keep_objects)
    collector.keep(sources)
    model = load_model(sources, network_from_args(args), keep_objects)
    notes(model.notes, "note")
    notes(model.warnings, "warning")
    return sources, model


def _queries(args: argparse.Namespace, programs: Iterable[Program], model: Model) -> list[PortQuery]:
    return unique(args.port) if args.port else default_ports(programs, model.inventory)


def _write(chunks: Iterable[str | bytes]) -> None:
    """Big matrices go out as bytes, past the text layer's encoding."""
    for chunk in chunks:
        if isinstance(chunk, bytes):
            sys.stdout.flush()
            sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
        else:
            sys.stdout.write(chunk)


def run_matrix(args: argparse.Namespace, notes: Notes) -> int:
    from . import render
    from .matrix import matrices

    _, model = _model(args, args.paths, notes)
    queries = _queries(args, [model.program], model)
    found = matrices(model.program, model.pods, model.namespaces, queries, model.families)
    if args.format == "json":
        _write(render.as_json(model.pods, found))
    elif args.format == "csv":
        _write(render.as_csv(model.pods, found))
    elif args.format == "html":
        _write(render.as_html(model.pods, found, Explainer(model)))
    else:
        _write(render.as_text(model.pods, found))
    return 0


def _endpoint(model: Model, text: str, inventory: str, family: int | None) -> Endpoint:
    """A pod named ``ns/name`` (its address in ``family``), or an address (a pod's if one has it)."""
    try:
        interface = ipaddress.ip_interface(text)
    except ValueError:
        pod = model.pod(text)
        if pod is None:
            raise InputError(f"no policed pod {text!r} in the inventory on this network", inventory) from None
        found = address(pod, family) if family else pod.ips[0]
        if found is None:
            raise InputError(f"pod {text!r} has no IPv{family} address on this network", inventory) from None
        return Endpoint(found, pod)
    ip = interface.ip
    if "/" in text and interface.network.prefixlen != ip.max_prefixlen:  # 10.0.0.0/8 answered for 10.0.0.0
        raise UsageError(f"{text!r} is a network: explain answers for one address (or NS/POD)")
    if "%" in text:  # ip_interface drops the zone
        raise UsageError(f"{text!r} has a zone: a pod or ipBlock address has none")
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:  # as ipBlocks and pods
        raise UsageError(f"{text!r} is IPv4-mapped: its packets carry {ip.ipv4_mapped}, give that")
    return Endpoint(ip, model.owner(ip))


def explain_focus(args: argparse.Namespace) -> Focus | None:
    """The two pods an explain is about, or None when ``--to`` (or ``--from``) is an address: its
    owner could be any pod, so everything is read."""
    if is_address(args.source) or is_address(args.target):
        return None
    return Focus.of(args.source, args.target)


def explain_model(args: argparse.Namespace, notes: Notes, *, whole: bool = False) -> Model:
    """What ``explain`` reads: only what can matter to its two pods, or (``whole``) every input
    as compile reads it; both give the same answer (the tests compare them)."""
    return _model(args, args.paths, notes, None if whole else explain_focus(args))[1]


# the matrix's ``-``: a pod reaching its own address never leaves its namespace, so no node rule
# sees it (Kubernetes: "a pod cannot block access to itself")
SELF_NOTE = "a pod's traffic to itself stays inside the pod: no policy applies to it"


def run_explain(args: argparse.Namespace, notes: Notes) -> int:
    print(explanation(args, explain_model(args, notes)), end="")
    return 0


def _family(args: argparse.Namespace, model: Model) -> int | None:
    """The one IP family a connection has: an address's, given on either side (two of different
    families are no connection), else the first the network polices in which both pods have an
    address, else the first in which both have one (not policed: allowed), else the destination's
    first; IPv4 before IPv6 as the matrix lists them."""
    given = {ipaddress.ip_interface(t).version for t in (args.source, args.target) if is_address(t)}
    if len(given) > 1:
        raise UsageError(
            f"--from {args.source} and --to {args.target} are of different IP families: a connection has one"
        )
    if given:
        return given.pop()
    pods = [model.pod(args.source), model.pod(args.target)]
    carried = network_from_args(args).ip_families
    common = [f for f in (4, 6) if all(p is not None and address(p, f) for p in pods)]
    return next((f for f in common if f in carried), common[0] if common else None)


def _other_family(args: argparse.Namespace, src: Endpoint, dst: Endpoint) -> Address | None:
    """For two pods named (no address given), the destination's address in the other family the
    network polices when both pods have one: what the text answer, of one family, leaves out."""
    if is_address(args.source) or is_address(args.target) or src.pod is None or dst.pod is None:
        return None
    for family in network_from_args(args).ip_families:
        found = address(dst.pod, family)
        if family != dst.address.version and found is not None and address(src.pod, family):
            return found
    return None


def explanation(args: argparse.Namespace, model: Model) -> str:
    """The answer, as ``--format`` asks."""
    family = _family(args, model)
    dst = _endpoint(model, args.target, args.inventory, family)
    src = _endpoint(model, args.source, args.inventory, dst.address.version)
    if src.pod is None:
        raise InputError(f"--from must name a pod of the inventory, not {args.source!r}", args.inventory)
    query: PortQuery = args.port
    port = query.port
    problem = None
    if isinstance(port, str):
        number = dst.pod.named_ports().get((query.protocol, port)) if dst.pod else None
        if number is None:
            problem = f"{dst.name} has no {query.protocol} container port named {port!r}"
        port = number if number is not None else 0
    explainer = Explainer(model)
    egress, ingress = explainer.explain(src, dst, query.protocol, port)
    itself = dst.pod is not None and (src.pod.namespace, src.pod.name) == (dst.pod.namespace, dst.pod.name)
    version = dst.address.version
    unpoliced = (
        f"IPv{version} is not policed on this network (--ip-families): npc loads no rule for it"
        if version not in model.families
        else None
    )
    # a pod to itself: allowed whatever the port (the matrix's ``-``), as no policy applies to it
    allowed = itself or (problem is None and (unpoliced is not None or (egress.allowed and ingress.allowed)))
    if args.format == "json":
        data = {
            "allowed": allowed,
            "from": src.name,
            "to": dst.name,
            "fromAddress": str(src.address),
            "toAddress": str(dst.address),
            "protocol": query.protocol,
            "port": query.port,
            "resolvedPort": port if problem is None else None,
            "ipFamily": f"IPv{dst.address.version}",
            "egress": egress.json(),
            "ingress": ingress.json(),
        }
        if problem:
            data["problem"] = problem
        if itself:
            data["itself"] = SELF_NOTE
        if unpoliced:
            data["unpoliced"] = unpoliced
        return json.dumps(data, indent=2) + "\n"
    resolved = f" ({port})" if isinstance(query.port, str) and problem is None else ""
    lines = [f"{'ALLOWED' if allowed else 'DENIED'}: {src.name} -> {dst.name} {query.label}{resolved}"]
    lines += [problem] if problem else []
    why = [f"{SELF_NOTE} (what the policies would say of another pod follows)"] if itself else []
    why += [f"{unpoliced} (what the policies would say where policed follows)"] if unpoliced else []
    lines += why if itself or not problem else []
    other = _other_family(args, src, dst)
    if other is not None:
        lines.append(
            f"(IPv{dst.address.version}; both pods have IPv{other.version} addresses too: "
            f"ask with --to {other} for that family)"
        )
    lines += _more_addresses(src, "--from", args.source) + _more_addresses(dst, "--to", args.target)
    return "\n".join([*lines, egress.text(), ingress.text(), ""])


def _more_addresses(end: Endpoint, flag: str, given: str) -> list[str]:
    """A pod named with several ``addresses`` of the family: the answer is for one of them."""
    if end.pod is None or is_address(given):
        return []
    more = [str(ip) for ip in addresses(end.pod, end.address.version) if ip != end.address]
    if not more:
        return []
    side = flag.removeprefix("--")
    return [f"({side} {end.address}; {end.name} has {', '.join(more)} too: ask with {flag} {more[0]} for it)"]


def run_diff(args: argparse.Namespace, notes: Notes) -> int:
    from . import diff

    if [*args.old, *args.new].count("-") > 1:  # the second read would find the pipe empty
        raise UsageError("--old and --new: - (stdin) given twice: a pipe can be read once")
    sources, old = _model(args, args.old, notes)
    new = load_model(with_policies(sources, args.new, sys.stdin), network_from_args(args))
    notes([n for n in new.notes if n not in old.notes], "note")
    found = diff.changes(old, new, _queries(args, [old.program, new.program], new))
    if args.format == "json":
        print(json.dumps(diff.as_json(found, new.pods)))
    else:
        _write(diff.as_text(found, new.pods, Explainer(new)))
    return 1 if args.exit_code and found else 0


@attrs.frozen
class Command:
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, Notes], int]


COMMANDS: dict[str, Command] = {
    "matrix": Command("which pod may open a connection to which, per port", matrix_arguments, run_matrix),
    "explain": Command("why one connection is allowed or denied", explain_arguments, run_explain),
    "diff": Command(
        "connections gained and lost between two versions of the policies", diff_arguments, run_diff
    ),
}
