"""``npc matrix``, ``npc explain`` and ``npc diff``: their arguments and what they print."""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TypeVar

from ..errors import InputError, UsageError
from ..ir import Program
from ..lower import DEFAULT_NETWORK
from ..networks import IP_SOURCE_HELP, NetworkSpec, network_spec
from . import diff, render
from .classes import address
from .explain import Endpoint, Explainer
from .load import Cluster, Model, load_model, read_cluster
from .matrix import matrices
from .ports import PortQuery, default_ports, parse_port, unique

PATHS_HELP = "policy files or folders (.yaml .yml .json .npc), - for stdin"
Notes = Callable[[Sequence[str], str], None]
Parser = TypeVar("Parser", bound=argparse.ArgumentParser)


def _common(p: argparse.ArgumentParser, ports: bool = True) -> None:
    p.add_argument(
        "--inventory", metavar="FILE", required=True, help="kubectl get namespaces,pods -A -o json output"
    )
    if ports:
        p.add_argument(
            "--port",
            metavar="PROTO/PORT",
            action="append",
            type=parse_port,
            help="tcp/80, udp/53, sctp/9000 or a container port name (tcp/http); repeatable "
            "(default: every port the policies name and every container port)",
        )
    p.add_argument("--network", default=DEFAULT_NETWORK, help="network name (default: the primary network)")
    p.add_argument(
        "--ip-source", metavar="SRC", help=f"where pods' addresses on --network come from: {IP_SOURCE_HELP}"
    )
    p.add_argument(
        "--policy-kinds", metavar="KINDS", help="NetworkPolicy and/or MultiNetworkPolicy, comma-separated"
    )


def add_commands(sub: argparse._SubParsersAction[Parser]) -> None:
    matrix = sub.add_parser("matrix", help="which pod may open a connection to which, per port")
    matrix.add_argument("paths", nargs="+", metavar="PATH", help=PATHS_HELP)
    _common(matrix)
    matrix.add_argument("--format", default="text", choices=render.FORMATS)
    explain = sub.add_parser("explain", help="why one connection is allowed or denied")
    explain.add_argument("paths", nargs="+", metavar="PATH", help=PATHS_HELP)
    _common(explain, ports=False)
    explain.add_argument("--from", dest="source", required=True, metavar="NS/POD")
    explain.add_argument("--to", dest="target", required=True, metavar="NS/POD|ADDRESS")
    explain.add_argument("--port", required=True, type=parse_port, metavar="PROTO/PORT")
    explain.add_argument("--format", default="text", choices=("text", "json"))
    diff_ = sub.add_parser("diff", help="connections gained and lost between two versions of the policies")
    diff_.add_argument("--old", nargs="+", required=True, metavar="PATH", help=PATHS_HELP)
    diff_.add_argument("--new", nargs="+", required=True, metavar="PATH", help=PATHS_HELP)
    _common(diff_)
    diff_.add_argument("--format", default="text", choices=("text", "json"))
    diff_.add_argument("--exit-code", action="store_true", help="exit 1 when anything changed, 0 when not")


def _network(args: argparse.Namespace) -> NetworkSpec:
    try:
        return network_spec(args.network, args.ip_source, args.policy_kinds)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _namespaces(cluster: Cluster) -> Mapping[str, Mapping[str, str]]:
    return {ns.name: ns.labels for ns in cluster.inventory.namespaces}


def _queries(args: argparse.Namespace, programs: Iterable[Program], cluster: Cluster) -> list[PortQuery]:
    return unique(args.port) if args.port else default_ports(programs, cluster.inventory)


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
    network = _network(args)
    cluster = read_cluster(args.inventory, network)
    model = load_model(args.paths, cluster, network)
    notes(model.notes, "note")
    notes(cluster.warnings, "warning")
    found = matrices(
        model.program, model.pods, _namespaces(cluster), _queries(args, [model.program], cluster)
    )
    if args.format == "json":
        _write(render.as_json(model.pods, found))
    elif args.format == "csv":
        _write(render.as_csv(model.pods, found))
    elif args.format == "html":
        _write(render.as_html(model.pods, found, Explainer(model, _namespaces(cluster))))
    else:
        _write(render.as_text(model.pods, found))
    return 0


def _endpoint(model: Model, text: str, inventory: str, family: int | None) -> Endpoint:
    """A pod named ``ns/name`` (its address in ``family``), or an address (a pod's if one has it)."""
    try:
        ip = ipaddress.ip_interface(text).ip
    except ValueError:
        pod = model.pod(text)
        if pod is None:
            raise InputError(f"no policed pod {text!r} in the inventory on this network", inventory) from None
        found = address(pod, family) if family else pod.ips[0]
        if found is None:
            raise InputError(f"pod {text!r} has no IPv{family} address on this network", inventory) from None
        return Endpoint(found, pod)
    return Endpoint(ip, model.owner(ip))


def run_explain(args: argparse.Namespace, notes: Notes) -> int:
    network = _network(args)
    cluster = read_cluster(args.inventory, network)
    model = load_model(args.paths, cluster, network)
    notes(model.notes, "note")
    notes(cluster.warnings, "warning")
    dst = _endpoint(model, args.target, args.inventory, None)
    if dst.pod is not None and "/" in args.target and model.pod(args.target) is not None:
        source_pod = model.pod(args.source)
        common = [ip.version for ip in dst.pod.ips if source_pod and address(source_pod, ip.version)]
        dst = _endpoint(model, args.target, args.inventory, common[0] if common else None)
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
    explainer = Explainer(model, _namespaces(cluster))
    egress, ingress = explainer.explain(src, dst, query.protocol, port)
    allowed = problem is None and egress.allowed and ingress.allowed
    if args.format == "json":
        data = {
            "allowed": allowed,
            "from": src.name,
            "to": dst.name,
            "protocol": query.protocol,
            "port": query.port,
            "resolvedPort": port if problem is None else None,
            "ipFamily": f"IPv{dst.address.version}",
            "egress": egress.json(),
            "ingress": ingress.json(),
        }
        if problem:
            data["problem"] = problem
        print(json.dumps(data, indent=2))
    else:
        resolved = f" ({port})" if isinstance(query.port, str) and problem is None else ""
        print(f"{'ALLOWED' if allowed else 'DENIED'}: {src.name} -> {dst.name} {query.label}{resolved}")
        if problem:
            print(problem)
        print(egress.text())
        print(ingress.text())
    return 0


def run_diff(args: argparse.Namespace, notes: Notes) -> int:
    network = _network(args)
    cluster = read_cluster(args.inventory, network)
    old = load_model(args.old, cluster, network)
    new = load_model(args.new, cluster, network)
    notes(list(dict.fromkeys((*old.notes, *new.notes))), "note")
    notes(cluster.warnings, "warning")
    namespaces = _namespaces(cluster)
    found = diff.changes(old, new, namespaces, _queries(args, [old.program, new.program], cluster))
    if args.format == "json":
        print(json.dumps(diff.as_json(found, new.pods)))
    else:
        _write(diff.as_text(found, new.pods, Explainer(new, namespaces)))
    return 1 if args.exit_code and found else 0


COMMANDS: dict[str, Callable[[argparse.Namespace, Notes], int]] = {
    "matrix": run_matrix,
    "explain": run_explain,
    "diff": run_diff,
}
