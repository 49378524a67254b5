"""Members kept up to date pod by pod equal ``resolve``'s for the new inventory: random programs,
random inventories before and after (pods added, removed, relabelled, readdressed, namespaces
relabelled), and with ``--node`` the policed-here sets hold local pods only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from npc.agent.engine import local_only_sets
from npc.agent.inputs import ApiInventory
from npc.agent.kube import NAMESPACES, PODS, Cache
from npc.agent.live import LiveInventory, LiveSets
from npc.backends import get as get_backend
from npc.backends.base import Options, member_changes
from npc.inventory import Inventory, build_inventory, pod_ips
from npc.ir import Program
from npc.lower import lower
from npc.resolve import Compiled, Entry, resolve
from random_clusters import inventories, programs


def raw(inventory: Inventory, node_of: Any = lambda pod: "n1") -> list[dict[str, Any]]:
    """The inventory as the API shows it."""
    out: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns.name, "labels": dict(ns.labels)}}
        for ns in inventory.namespaces
    ]
    for pod in inventory.pods:
        ports = [{"name": p.name, "protocol": p.protocol, "containerPort": p.port} for p in pod.ports]
        out.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": pod.name, "namespace": pod.namespace, "labels": dict(pod.labels)},
                "spec": {"nodeName": node_of(pod), "containers": [{"name": "c", "ports": ports}]},
                "status": {"phase": "Running", "podIPs": [{"ip": str(ip)} for ip in pod.ips]},
            }
        )
    return out


@settings(max_examples=150, deadline=None)
@given(programs, inventories(), inventories())
def test_pod_by_pod_members_equal_a_full_resolve(
    program: Program, before: Inventory, after: Inventory
) -> None:
    lowered = lower(program)
    live = LiveInventory(pod_ips)
    live.update(raw(before))
    sets = LiveSets(lowered, live, set())
    assert sets.members() == resolve(lowered, build_inventory(raw(before)))
    pods, namespaces = live.update(raw(after))
    sets.change(pods, namespaces)
    members = sets.members()
    assert members == resolve(lowered, build_inventory(raw(after)))
    assert sets.entries == sum(map(len, members.values()))  # counted as they move, for the metric


@settings(max_examples=100, deadline=None)
@given(programs, inventories(), st.sampled_from(("iptables", "nftables", "weave")))
def test_the_sets_a_backend_reads_are_all_it_renders_and_loads_from(
    program: Program, inventory: Inventory, backend_name: str
) -> None:
    """The agent counts only ``read_sets`` (Weave: one flat dispatch, IPv4 only): the artefacts
    from those members alone are the artefacts from every set's (a load reads what rendering
    does: ``kernel_sets``, ``build``), and they are ``resolve``'s members of those sets."""
    backend, lowered = get_backend(backend_name), lower(program)
    live = LiveInventory(pod_ips)
    live.update(raw(inventory))
    read = backend.read_sets(lowered, Options())
    members = LiveSets(lowered, live, set(), read=read).members()
    full = resolve(lowered, build_inventory(raw(inventory)))
    assert members == {name: full[name] for name in read}
    only_read = backend.render(Compiled(program, lowered, members), Options())
    assert only_read == backend.render(Compiled(program, lowered, full), Options())


@settings(max_examples=150, deadline=None)
@given(programs, programs, inventories(), inventories())
def test_a_policy_change_keeps_the_counts_of_sets_both_programs_have(
    first: Program, second: Program, before: Inventory, after: Inventory
) -> None:
    live = LiveInventory(pod_ips)
    live.update(raw(before))
    sets = LiveSets(lower(first), live, set())
    sets.members()
    pods, namespaces = live.update(raw(after))
    sets.change(pods, namespaces)
    both = Program((*first.policies, *second.policies))  # shares sets with the first program
    for program in (second, both):
        lowered = lower(program)
        sets = LiveSets(lowered, live, set(), sets)
        members = sets.members()
        assert members == resolve(lowered, build_inventory(raw(after)))
        assert sets.entries == sum(map(len, members.values()))


@settings(max_examples=100, deadline=None)
@given(programs, programs, st.lists(inventories(), min_size=3, max_size=3))
def test_sets_dropped_by_a_policy_change_and_back_later_count_as_a_full_resolve(
    first: Program, second: Program, inventories: list[Inventory]
) -> None:
    """What pods gave the sets a change dropped is swept lazily: pods that go while it lingers,
    and the same sets returning with the first program, still count right."""
    live = LiveInventory(pod_ips)
    current = inventories[0]
    live.update(raw(current))
    sets = LiveSets(lower(first), live, set())
    sets.members()
    for program, inventory in zip((second, first, second), (*inventories[1:], inventories[0]), strict=True):
        lowered = lower(program)
        sets = LiveSets(lowered, live, set(), sets)
        assert sets.members() == resolve(lowered, build_inventory(raw(current)))
        pods, namespaces = live.update(raw(inventory))
        sets.change(pods, namespaces)
        current = inventory
        assert sets.members() == resolve(lowered, build_inventory(raw(current)))


@settings(max_examples=150, deadline=None)
@given(programs, inventories())
def test_with_a_node_only_local_pods_are_policed_here(program: Program, inventory: Inventory) -> None:
    lowered = lower(program)
    on_node = lambda pod: "n1" if int(pod.name[3:]) % 2 else "n2"  # noqa: E731
    live = LiveInventory(pod_ips, "n1")
    live.update(raw(inventory, on_node))
    members = LiveSets(lowered, live, local_only_sets(lowered)).members()
    everywhere = resolve(lowered, build_inventory(raw(inventory)))
    here = [o for o in raw(inventory, on_node) if o["kind"] == "Namespace" or o["spec"]["nodeName"] == "n1"]
    local = resolve(lowered, build_inventory(here))
    only_here = local_only_sets(lowered)
    for name, entries in members.items():
        assert entries == (local[name] if name in only_here else everywhere[name]), name


entry_lists = st.lists(st.tuples(st.sampled_from("abcdefgh"), st.booleans()), unique_by=lambda e: e[0])


@settings(max_examples=300, deadline=None)
@given(entry_lists, entry_lists)
def test_member_changes_are_what_leaves_and_what_enters_in_member_order(
    before: list[Entry], after: list[Entry]
) -> None:
    changes = member_changes({"s": before}, {"s": after})
    if before == after:
        assert changes == {}
    else:
        assert changes == {
            "s": ([e for e in before if e not in after], [e for e in after if e not in before])
        }


@settings(max_examples=100, deadline=None)
@given(inventories(), inventories(), inventories())
def test_a_view_following_the_watch_cache_by_its_changes_equals_one_read_whole(
    first: Inventory, second: Inventory, third: Inventory
) -> None:
    cache = Cache()
    journal = ApiInventory(cache)
    followed = LiveInventory(pod_ips)
    for round, inventory in enumerate((first, second, third)):
        objects = raw(inventory)
        for resource in (NAMESPACES, PODS):
            listed = {
                (o["metadata"].get("namespace", ""), o["metadata"]["name"]): o
                for o in objects
                if o["kind"] == resource.kind
            }
            if round == 1:  # a relist
                cache.replace(resource, listed)
                continue
            cached = dict(cache.objects.get(resource.name, {}))  # watch events
            for key in cached.keys() - listed.keys():
                cache.event(resource, "DELETED", cached[key])
            for obj in listed.values():
                cache.event(resource, "MODIFIED", obj)
        followed.update(journal.read())
        whole = LiveInventory(pod_ips)
        whole.update(objects)
        assert (followed.pods, followed.namespaces, followed.raw) == (whole.pods, whole.namespaces, whole.raw)


def test_an_object_listed_twice_differently_is_the_one_apply_keeps_in_either_order() -> None:
    """The agent kept the last copy silently; ``npc apply`` keeps the one that sorts first and
    warns. Either order now gives apply's pod, with the warning."""
    pod = {"kind": "Pod", "metadata": {"name": "p0", "namespace": "default"}, "status": {"phase": "Running"}}
    first = {**pod, "status": {**pod["status"], "podIPs": [{"ip": "10.1.0.1"}, {"ip": "fd00::1"}]}}
    second = {**pod, "status": {**pod["status"], "podIPs": [{"ip": "10.99.0.1"}]}}
    kept = build_inventory([first, second], lenient=True).pods
    assert kept == build_inventory([second, first], lenient=True).pods
    for listing in ([first, second], [second, first]):
        live = LiveInventory(pod_ips)
        live.update(listing)
        assert tuple(live.pods.values()) == kept
        assert live.warnings == ["Pod default/p0 is listed twice, differently: kept the one that sorts first"]


def test_a_malformed_object_is_skipped_with_a_warning_naming_it_and_said_once() -> None:
    """An object the API (or an inventory file the agent follows) gives malformed is skipped with a
    warning naming it, as a bad pod is: never an exception that blocks every later update
    (``metadata: x`` was one), and said again only when it changes."""
    good = {
        "kind": "Pod",
        "metadata": {"name": "ok", "namespace": "b"},
        "spec": {"nodeName": "n1"},
        "status": {"phase": "Running", "podIPs": [{"ip": "10.1.1.1"}]},
    }
    bad_ip = {
        **good,
        "metadata": {"name": "a", "namespace": "b"},
        "status": {"podIPs": [{"ip": "300.1.1.1"}]},
    }
    listing: list[dict[str, Any]] = [
        {"kind": "Pod", "metadata": "x"},
        {"kind": "Pod", "metadata": {"name": "c", "namespace": "b"}, "spec": ["n1"], "status": 5},
        bad_ip,
        good,
        {"kind": "Namespace", "metadata": {"name": "n", "labels": {"a": 5}}},
    ]
    live = LiveInventory(pod_ips, "n1")
    pods, namespaces = live.update(listing)
    assert [after.name for _, after in pods if after is not None] == ["ok"]
    assert ("Pod", "b", "ok") in live.local
    assert namespaces == ["n"] and "n" not in live.namespaces
    assert sorted(live.warnings) == [
        "Namespace n: skipped metadata.labels[a]: value must be a string, not an integer",
        "Pod (unnamed): skipped metadata: must be a mapping, not a string",
        'Pod b/a: skipped status.podIPs[0].ip: "300.1.1.1" is not an IP address',
        "Pod b/c: skipped spec: must be a mapping, not a list",
    ]
    live.warnings.clear()
    assert live.update(listing) == ([], []) and live.warnings == []  # unchanged: not read again
    fixed = {**bad_ip, "status": good["status"] | {"podIPs": [{"ip": "10.1.1.2"}]}}
    pods, _ = live.update([fixed if o is bad_ip else o for o in listing])
    assert [after.name for _, after in pods if after is not None] == ["a"] and live.warnings == []


def test_an_object_that_stops_parsing_keeps_its_last_good_state_until_fixed_or_gone() -> None:
    """A typo in an isolated pod's object, or in its network annotation, must not take the pod out
    of the sets (which opens it: a black-box review saw a probe connect); a new bad pod is
    skipped as before."""
    from npc.networks import AddressSource, parse_ip_source

    def pod(name: str, status: str) -> dict[str, Any]:
        meta = {"name": name, "namespace": "b", "labels": {"app": "web"}}
        return {
            "kind": "Pod",
            "metadata": meta | {"annotations": {"k8s.v1.cni.cncf.io/network-status": status}},
            "spec": {"nodeName": "n1"},
            "status": {"phase": "Running", "podIPs": [{"ip": "10.1.1.1"}]},
        }

    good = '[{"name": "b/net1", "ips": ["10.9.0.1"]}]'
    source = AddressSource(parse_ip_source("multus:b/net1"), "b/net1")
    live = LiveInventory(source, "n1")
    namespace = {"kind": "Namespace", "metadata": {"name": "b", "labels": {"team": "x"}}}
    pods, _ = live.update([namespace, pod("p", good)])
    known = live.pods[("Pod", "b", "p")]
    assert [str(ip) for ip in known.ips] == ["10.9.0.1"] and not live.held
    broken = [{**namespace, "metadata": {"name": "b", "labels": {"team": 5}}}, pod("p", good[:-3])]
    assert live.update(broken) == ([], ["b"])  # nothing moved
    assert live.pods[("Pod", "b", "p")] is known and live.namespaces["b"].labels["team"] == "x"
    assert live.held == {("Pod", "b", "p"), ("Namespace", "", "b")}
    assert "Pod b/p: its last good state stays in force until it is fixed" in live.warnings
    assert any("not valid JSON" in w for w in source.warnings)
    assert live.update([*broken, pod("q", good[:-3])])[0] == []  # a new bad pod: skipped
    assert ("Pod", "b", "q") not in live.pods and ("Pod", "b", "q") not in live.held
    moved = '[{"name": "b/net1", "ips": ["10.9.0.2"]}]'
    pods, _ = live.update([namespace, pod("p", moved)])  # fixed: its new state
    assert [[str(ip) for ip in p.ips] for _, p in pods if p is not None] == [["10.9.0.2"]]
    assert not live.held
    live.update([broken[0], pod("p", good[:-3])])
    assert live.held
    pods, _ = live.update([namespace])  # gone: gone, held or not
    assert [(before is not None, after) for before, after in pods] == [(True, None)] and not live.held


def test_held_objects_are_recorded_for_the_next_agent(tmp_path: Path) -> None:
    """The next agent's first update holds an object that is still bad as it was recorded (else
    a restart opened the pod); one fixed meanwhile is read as it is, one gone stays gone, and a
    new bad one is skipped. The record goes when nothing is held."""
    from npc.agent.held import HeldStore

    def pod(name: str, ip: str, labels: Any = None) -> dict[str, Any]:
        meta = {"name": name, "namespace": "b", "labels": labels if labels is not None else {"app": "web"}}
        return {"kind": "Pod", "metadata": meta, "status": {"phase": "Running", "podIPs": [{"ip": ip}]}}

    store = HeldStore(str(tmp_path / "held"))
    live = LiveInventory(pod_ips, None, store)
    live.update([pod("p", "10.0.0.1"), pod("q", "10.0.0.2"), pod("r", "10.0.0.3")])
    bad = [pod("p", "10.0.0.1", 5), pod("q", "10.0.0.2", 5), pod("r", "10.0.0.3", 5)]
    live.update(bad)
    assert live.held == live.bad == {("Pod", "b", n) for n in "pqr"} and (tmp_path / "held").exists()
    fixed = pod("q", "10.0.0.9")
    again = LiveInventory(pod_ips, None, HeldStore(str(tmp_path / "held")))
    again.update([bad[0], fixed, pod("s", "10.0.0.4", 5)])
    assert {k[2]: [str(ip) for ip in p.ips] for k, p in again.pods.items()} == {
        "p": ["10.0.0.1"],
        "q": ["10.0.0.9"],
    }
    assert again.held == {("Pod", "b", "p")} and again.bad == {("Pod", "b", "p"), ("Pod", "b", "s")}
    assert any("as recorded before this agent started" in w for w in again.warnings)
    assert list(store.load()) == [("Pod", "b", "p")]  # q fixed and r gone while no agent ran: dropped
    again.update([pod("p", "10.0.0.1"), fixed])
    assert not again.held and not again.bad and not (tmp_path / "held").exists()
    again.update([bad[0], fixed])
    assert again.held and (tmp_path / "held").exists()
    again.update([fixed])  # deleted while held: its record goes (a new bad p must not get its address)
    assert not again.held and not (tmp_path / "held").exists()


def test_a_held_pod_stays_local_as_it_last_parsed(tmp_path: Path) -> None:
    """With ``--node``, whether a held pod is this node's comes from its last good object, not the
    broken one (a ``spec: [x]`` has no nodeName: the restarted agent dropped its isolation)."""
    from npc.agent.held import HeldStore

    good = {
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "b", "labels": {"app": "web"}},
        "spec": {"nodeName": "n1"},
        "status": {"phase": "Running", "podIPs": [{"ip": "10.0.0.1"}]},
    }
    broken = {**good, "spec": ["x"]}
    for restarted in (False, True):
        live = LiveInventory(pod_ips, "n1", HeldStore(str(tmp_path / "held")))
        if not restarted:
            live.update([good])
        live.update([broken])
        assert live.held == {("Pod", "b", "p")} and live.local == {("Pod", "b", "p")}, restarted
