"""An iptables policy change loaded by difference (``backends/iptables/update.py``), on a real
kernel in a throw-away namespace: it ends where a full apply of the new program ends, leaves
others' rules and sets byte for byte, and a restore the kernel refuses after one of its tables
committed leaves the previous state exactly."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from kernel.netns import InNetns, Netns, compile_policies, fresh_netns, listing, policy, update_between
from npc.backends.base import Ran
from npc.backends.iptables import load as apply
from npc.backends.iptables.mark_tree import Marks
from npc.backends.iptables.render import NPC_LAYOUT
from npc.backends.iptables.update import chains
from npc.errors import ApplyError
from npc.pipeline import Compiled

pytestmark = pytest.mark.kernel

MARKS = Marks()
TOOLS = apply._tools("legacy")


@pytest.fixture
def netns(tmp_path: Path) -> Iterator[Netns]:
    with fresh_netns("npc-update", tmp_path) as ns:
        yield ns


def update(before: Compiled, after: Compiled, run: InNetns) -> str:
    return update_between(before, after, MARKS, TOOLS, run).summary


def others(netns: Netns) -> None:
    netns.run("ipset", "create", "other-set", "hash:ip")
    netns.run("ipset", "add", "other-set", "192.0.2.1")
    for tool in ("iptables-legacy", "ip6tables-legacy"):
        netns.run(tool, "-N", "OTHER-CHAIN")
        netns.run(tool, "-A", "OTHER-CHAIN", "-p", "udp", "--dport", "9", "-j", "RETURN")
        netns.run(tool, "-A", "FORWARD", "-j", "OTHER-CHAIN")
        netns.run(tool, "-t", "mangle", "-A", "FORWARD", "-p", "udp", "-j", "RETURN")


def npc_free(state: str) -> list[str]:
    return [line for line in state.splitlines() if "NPC-" not in line and "npc-" not in line]


BEFORE = (policy("a"), policy("b", 5432, "cache"))
AFTER = (policy("a", 6380), policy("c", "redis", "web"))  # a changed, b gone, c new
# iptables tests the peers of each as one list:set: the first list goes, and with it the set of
# cache, which it holds; its other members stay in the new list (l and m select the same pods, so
# their rules are one chain, ``lower._combined``, and their peers one list)
LISTS = (
    (listing("l", ("frontend", "db", "cache")),),
    (listing("l", ("frontend", "queue", "web")), listing("m", ("db", "batch", "extra"))),
)


def selecting(name: str, labels: dict[str, str], port: int) -> dict[str, object]:
    return {**policy(name), "spec": {**policy(name, port)["spec"], "podSelector": {"matchLabels": labels}}}  # type: ignore[dict-item]


# three roles' pods, each selected alone, with tier=x and with version=v1 (ports apart, so nine
# chains): the group's dispatch is three branches (``branches``); without the web ones it is flat
THREE_ROLES = tuple(
    selecting(f"{role}-{n}", {"role": role, **extra}, 1000 + 10 * r + n)
    for r, role in enumerate(("db", "cache", "web"))
    for n, extra in enumerate(({}, {"tier": "x"}, {"version": "v1"}))
)
BRANCHES = (THREE_ROLES, THREE_ROLES[:6])


def gathering(pairs: tuple[tuple[str, str], ...]) -> dict[str, object]:
    """One rule's peers of one namespace each (by name), each its own role."""
    peers = [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}},
            "podSelector": {"matchLabels": {"role": role}},
        }
        for ns, role in pairs
    ]
    spec = policy("g")["spec"]
    return {**policy("g"), "spec": {**spec, "ingress": [{"from": peers}]}}  # type: ignore[dict-item]


# three such peers are one set of their pods (``lower._gathered``); two stay parts, a rule each
GATHERED = ((gathering((("a", "x"), ("b", "y"), ("c", "z"))),), (gathering((("a", "x"), ("b", "y"))),))


@pytest.mark.parametrize(
    ("was", "now"),
    [(BEFORE, AFTER), LISTS, BRANCHES, BRANCHES[::-1], GATHERED, GATHERED[::-1]],
    ids=["policies", "lists", "branches-go", "branches-come", "gathered-go", "gathered-come"],
)
def test_an_update_ends_where_a_full_apply_does_and_leaves_others_alone(
    netns: Netns, was: tuple[dict[str, object], ...], now: tuple[dict[str, object], ...]
) -> None:
    run = InNetns(netns)
    others(netns)
    before, after = compile_policies(*was), compile_policies(*now)
    apply.apply_iptables(before.lowered, before.members, MARKS, TOOLS, run)
    foreign = npc_free(netns.state("legacy"))
    branches = len(re.findall(r"^:NPC-\w+-(?:I[46]-\w+|INGRESS)-\w+ ", netns.state("legacy"), re.M))
    assert branches == (6 if was is THREE_ROLES else 0)  # three per family
    summary = update(before, after, run)
    assert "chains ~" in summary and "sets +" in summary
    updated = netns.state("legacy")
    assert npc_free(updated) == foreign
    assert updated.count(" list:set ") == (2 if was is LISTS[0] else 0)  # one list per family
    assert len(re.findall(r"^:NPC-\w+-(?:I[46]-\w+|INGRESS)-\w+ ", updated, re.M)) == (
        6 if now is THREE_ROLES else 0
    )
    apply.apply_iptables(after.lowered, after.members, MARKS, TOOLS, run)
    assert netns.state("legacy") == updated


def test_a_full_apply_reports_the_chains_an_update_compares_with(netns: Netns) -> None:
    """What a load wrote (its own restore input, read back) is what ``chains`` renders, also
    when that input deleted another program's chains: the agent keeps it instead of rendering."""
    run = InNetns(netns)
    before, after = compile_policies(*BEFORE), compile_policies(*AFTER)
    for compiled in (before, after):  # the second replaces the first's chains
        report = apply.apply_iptables(compiled.lowered, compiled.members, MARKS, TOOLS, run)
        assert report.written == {f: chains(compiled.lowered, f, MARKS, NPC_LAYOUT) for f in (4, 6)}


@pytest.mark.parametrize("refused", ["iptables-legacy-restore", "ip6tables-legacy-restore"])
def test_a_refused_restore_leaves_the_previous_state(netns: Netns, refused: str) -> None:
    others(netns)
    before, after = compile_policies(*BEFORE), compile_policies(*AFTER)
    apply.apply_iptables(before.lowered, before.members, MARKS, TOOLS, InNetns(netns))
    state = netns.state("legacy")
    with pytest.raises(ApplyError, match="rejected the changed rules"):
        update(before, after, InNetns(netns, refused))
    assert netns.state("legacy") == state


class TableRefused(InNetns):
    """The first rules restore of each tool gets a line the kernel refuses at the end of npc's
    table; as it returns, before any rollback, npc's rules of its family are recorded."""

    def __init__(self, netns: Netns) -> None:
        super().__init__(netns)
        self.seen: list[tuple[str, list[str]]] = []  # (restore tool, npc's rules then)

    def __call__(self, argv: Sequence[str], stdin: str = "") -> Ran:
        refused = {tool for tool, _ in self.seen}  # once per tool: not the rollback's
        if not argv[0].endswith("tables-legacy-restore") or ":NPC-" not in stdin or argv[0] in refused:
            return super().__call__(argv, stdin)
        body, end, tail = stdin.partition("\nCOMMIT\n")
        done = super().__call__(argv, f"{body}\n-A NPC-NO-SUCH-CHAIN -j DROP{end}{tail}")
        self.seen.append((argv[0], npc_rules(self.netns, argv[0].replace("-restore", "-save"))))
        return done


def npc_rules(netns: Netns, save: str) -> list[str]:
    return [line for line in netns.run(save).stdout.splitlines() if "NPC-" in line]


@pytest.mark.parametrize("load", ["apply", "update"])
def test_the_group_codes_and_the_trie_reading_them_commit_together(netns: Netns, load: str) -> None:
    """From BEFORE to AFTER the isolated pods, so the groups' map sets and codes, change. The
    rules writing the codes and the trie reading them are one table's, so one commit: refused,
    none of it is in force, not even for the moment before the rollback (split over two
    tables, a new trie read old codes between their commits, and dropped allowed connections)."""
    before, after = compile_policies(*BEFORE), compile_policies(*AFTER)
    was, now = (chains(c.lowered, 4, MARKS, NPC_LAYOUT) for c in (before, after))
    assert list(was) == list(now) == ["mangle"]
    assert [r for r in was["mangle"]["NPC-ycua4-FORWARD"] if "--map-set" in r] != [
        r for r in now["mangle"]["NPC-ycua4-FORWARD"] if "--map-set" in r
    ]
    apply.apply_iptables(before.lowered, before.members, MARKS, TOOLS, InNetns(netns))
    rules = {tool: npc_rules(netns, tool) for tool in ("iptables-legacy-save", "ip6tables-legacy-save")}
    state = netns.state("legacy")
    run = TableRefused(netns)
    with pytest.raises(ApplyError, match=r"rejected the (new|changed) rules"):
        if load == "apply":
            apply.apply_iptables(after.lowered, after.members, MARKS, TOOLS, run)
        else:
            update(before, after, run)
    tools = sorted(tool for tool, _ in run.seen)  # an update stops at IPv4's refusal; apply runs both
    assert tools == (["ip6tables-legacy-restore"] if load == "apply" else []) + ["iptables-legacy-restore"]
    for tool, seen in run.seen:
        assert seen == rules[tool.replace("-restore", "-save")], tool
    assert netns.state("legacy") == state
