"""What one rule costs a packet, by kind of match: the unit behind ``dataplane.py``'s ratios.

Each kind is N rules in the node's FORWARD chain that no packet matches (so every packet is
tested against all N), loaded alone into ``dataplane.py``'s topology; a flood of new flows
(conntrack off) is measured against no rules at all, alternating. The cost of one rule is
(1 / rate - 1 / no-policy rate) / N. What it shows: a ``-m set`` test (``xt_set``, an ipset
lookup) costs several times a native mark or port test, an ``xt`` match in iptables-nft costs
more than in iptables-legacy, a rule stops at its first failing match (a mark first spares the
set), and nftables' own set lookups are cheaper still, from a floor its base chain sets.

    python benchmarks/match_cost.py            # root; about two minutes

Every namespace is ``npcb-<pid>-...`` and removed afterwards; the host namespace is not touched.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

import dataplane  # beside this script

SRC, DST, PORT = "10.77.0.1", "10.77.0.2", 80
MEMBERS = "".join(f"add t 10.99.{i // 250}.{i % 250}\n" for i in range(1000))  # never SRC
IPSET = f"create t hash:ip family inet hashsize 1024 maxelem 65536\n{MEMBERS}"
NFT_SET = ", ".join(f"10.99.{i // 250}.{i % 250}" for i in range(1000))


def iptables(match: str, n: int) -> str:
    return "*filter\n" + f"-A FORWARD {match} -j DROP\n" * n + "COMMIT\n"


def nft(rule: str, n: int) -> str:
    body = f"\t\t{rule} drop\n" * n
    return (
        "table ip bench {\n"
        f"\tset t {{\n\t\ttype ipv4_addr\n\t\telements = {{ {NFT_SET} }}\n\t}}\n"
        "\tchain forward {\n\t\ttype filter hook forward priority filter; policy accept;\n"
        f"{body}\t}}\n}}\n"
    )


def kinds(n: int) -> dict[str, tuple[str, str | None, str]]:
    """name -> (restore tool, ipset input or None, its input)."""
    out: dict[str, tuple[str, str | None, str]] = {}
    for flavour, tool in (("nft", "iptables-nft-restore"), ("legacy", "iptables-legacy-restore")):
        out[f"iptables-{flavour}: mark"] = (tool, None, iptables("-m mark --mark 0x1/0xff", n))
        out[f"iptables-{flavour}: tcp port"] = (tool, None, iptables("-p tcp -m tcp --dport 81", n))
        out[f"iptables-{flavour}: multiport"] = (
            tool,
            None,
            iptables("-p tcp -m multiport --dports 81,82", n),
        )
        out[f"iptables-{flavour}: set"] = (tool, IPSET, iptables("-m set --match-set t src", n))
        out[f"iptables-{flavour}: mark, then set"] = (
            tool, IPSET, iptables("-m mark --mark 0x1/0xff -m set --match-set t src", n)
        )  # fmt: skip
    out["nftables: base chain alone"] = ("nft", None, nft("", 0))
    out["nftables: set"] = ("nft", None, nft("ip saddr @t", n))
    out["nftables: port"] = ("nft", None, nft("tcp dport 81", n))
    return out


def rate(kind: tuple[str, str | None, str] | None, seconds: float) -> float:
    with dataplane.topology(SRC, DST) as (node, sender, receiver):
        if kind is not None:
            tool, sets, text = kind
            if sets:
                dataplane._exec(node, "ipset", "restore", stdin=sets)
            with tempfile.NamedTemporaryFile("w", suffix=".rules") as fh:
                fh.write(text)
                fh.flush()
                argv = [tool, "-f", fh.name] if tool == "nft" else [tool, "--noflush", fh.name]
                dataplane._exec(node, *argv)
        before = dataplane._rx(receiver)
        argv = [sys.executable, dataplane.__file__, "--send", SRC, DST, "TCP", str(PORT), str(seconds)]
        subprocess.run(["ip", "netns", "exec", sender, *argv], check=True, capture_output=True)
        time.sleep(0.2)
        return (dataplane._rx(receiver) - before) / seconds


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rules", type=int, default=40, help="rules per kind (default 40)")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--repeat", type=int, default=3, help="alternating pairs (medians)")
    args = parser.parse_args(argv)
    print(f"{'kind':36} {'packets/s':>10} {'ratio':>6} {'ns per rule':>12}")
    for name, kind in kinds(args.rules).items():
        pairs = [(rate(None, args.seconds), rate(kind, args.seconds)) for _ in range(args.repeat)]
        base = statistics.median(b for b, _ in pairs)
        loaded = statistics.median(r for _, r in pairs)
        n = 1 if "alone" in name else args.rules
        extra = statistics.median((1 / r - 1 / b) * 1e9 / n for b, r in pairs if r and b)
        print(f"{name:36} {loaded:10.0f} {loaded / base:6.2f} {extra:12.0f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
