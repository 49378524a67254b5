"""The command-line flags several commands share, and what they mean as values: the CLI, the
agent and the analysis commands all declare them here, so none imports another command's module."""

from __future__ import annotations

import argparse

from .backends import BACKENDS
from .backends.base import DEFAULT_GROUP_MASKS, DEFAULT_MARK, Options
from .errors import UsageError
from .ir import DEFAULT_NETWORK
from .lock import DEFAULT_WAIT
from .network_file import read_networks_file
from .networks import IP_SOURCE_HELP, NetworkSpec, check_network_name, network_spec


def _mark(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:  # argparse said "invalid _mark value"
        raise argparse.ArgumentTypeError("must be a single bit, e.g. 0x1000000") from None
    if value <= 0 or value & (value - 1) or value > 0x80000000:
        raise argparse.ArgumentTypeError("must be a single bit, e.g. 0x1000000")
    return value


def given(text: str) -> str:
    """A file, folder or name flag's value. An empty one (``--inventory "$INV"`` with the variable
    unset) is refused, never read as the flag left out: no inventory would police no pod."""
    if not text:
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def network_name(text: str) -> str:
    """``--network`` where nothing else checks it (``reset``): an empty or malformed name is a
    usage error, never a network of its own (nor, for a backend that reads it as "none given",
    the primary one)."""
    try:
        return check_network_name(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class _Paths(argparse.Action):
    """Policy paths: ``-`` at most once (read again, stdin is empty, which read as "holds no
    document")."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option: str | None = None,
    ) -> None:
        if isinstance(values, list) and values.count("-") > 1:
            raise argparse.ArgumentError(self, "- (stdin) given twice: a pipe can be read once")
        setattr(namespace, self.dest, values)


def add_paths(p: argparse.ArgumentParser, metavar: str = "PATH") -> None:
    p.add_argument(
        "paths",
        nargs="+",
        type=given,
        action=_Paths,
        metavar=metavar,
        help="policy files or folders (.yaml .yml .json .npc), - for stdin",
    )


def add_network_args(p: argparse.ArgumentParser) -> None:
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
        "--ip-families",
        metavar="FAMILIES",
        help="IPv4 and/or IPv6, comma-separated: the families npc polices on --network (default both; "
        "IPv4 on a single-stack IPv4 cluster loads no IPv6 rule or set)",
    )


def _group_marks(text: str) -> tuple[int, int]:
    try:
        egress, ingress = (int(part, 0) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            "must be two masks, EGRESS,INGRESS, e.g. 0x0eff3c00,0xf00003ff"
        ) from None
    if not egress or not ingress or egress & ingress or (egress | ingress) >> 32:
        raise argparse.ArgumentTypeError("must be two non-empty, disjoint 32-bit masks")
    return egress, ingress


def add_backend_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", default="iptables", choices=list(BACKENDS))
    p.add_argument(
        "--mark", type=_mark, default=DEFAULT_MARK, help="packet mark bit npc may use (default 0x1000000)"
    )
    p.add_argument(
        "--group-marks",
        type=_group_marks,
        default=DEFAULT_GROUP_MASKS,
        metavar="EGRESS,INGRESS",
        help="iptables: mark bits for a pod's namespace group (default 0x0eff3c00,0xf00003ff)",
    )


def network_from_args(args: argparse.Namespace) -> NetworkSpec:
    try:
        return network_spec(args.network, args.ip_source, args.policy_kinds, args.ip_families)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def networks_from_args(args: argparse.Namespace) -> tuple[NetworkSpec, ...]:
    """``--networks FILE``'s networks, or the one the network flags describe."""
    if not args.networks:
        return (network_from_args(args),)
    if args.network != DEFAULT_NETWORK or args.ip_source or args.policy_kinds or args.ip_families:
        raise UsageError(
            "--networks lists every network: leave out --network, --ip-source, --policy-kinds and --ip-families"
        )
    return read_networks_file(args.networks)


def options_from_args(args: argparse.Namespace) -> Options:
    return Options(
        mark=args.mark,
        group_marks=args.group_marks,
        iptables=getattr(args, "iptables", None),
        wait=getattr(args, "wait", DEFAULT_WAIT),
    )


class Once(argparse.Action):
    """A flag that takes one value: given twice, a usage error (argparse keeps the last, and
    ``explain --port tcp/80 --port tcp/443`` answered for 443 alone)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option: str | None = None,
    ) -> None:
        if getattr(namespace, self.dest, None) is not None:
            raise argparse.ArgumentError(self, "given twice: it takes one value")
        setattr(namespace, self.dest, values)
