"""The agent's API input through the real ``kubernetes`` client against a local API stand-in:
list, watch, bookmarks, 410 -> relist and diff, dropped watches, API down at start."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kube_standin import KubeStandin, free_port
from npc.agent.held import HeldStore
from npc.agent.inputs import ApiPolicies
from npc.agent.kube import (
    MULTI_NETWORK_POLICIES,
    NAMESPACES,
    NETWORK_POLICIES,
    PODS,
    Cache,
    Watcher,
    _version,
    api_client,
)
from npc.errors import InputError
from polling import wait_for


def pod(
    name: str, ip: str, labels: dict[str, str] | None = None, namespace: str = "default"
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
        "spec": {"nodeName": "node-1", "containers": [{"name": "c"}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
    }


def policy(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    }


class Watching:
    """Watcher threads over the stand-in, recording every notification and restart."""

    def __init__(self, api: KubeStandin, tmp_path: Path) -> None:
        self.cache = Cache()
        self.notified: list[str] = []
        self.restarts: list[tuple[str, str]] = []
        self.stop = threading.Event()
        client = api_client(str(api.kubeconfig(tmp_path)))
        self.watchers = [
            Watcher(
                client,
                resource,
                self.cache,
                lambda what, n: self.notified.append(what),
                lambda resource, reason: self.restarts.append((resource, reason)),
                self.stop,
                watch_timeout=30,
            )
            for resource in (NAMESPACES, PODS, NETWORK_POLICIES)
        ]
        for watcher in self.watchers:
            watcher.start()

    def names(self, resource: Any) -> list[str]:
        return [o["metadata"]["name"] for o in self.cache.items(resource)]


@pytest.fixture
def api() -> Iterator[KubeStandin]:
    with KubeStandin() as standin:
        yield standin


@pytest.fixture
def watching(api: KubeStandin, tmp_path: Path) -> Iterator[Watching]:
    w = Watching(api, tmp_path)
    yield w
    w.stop.set()


def test_list_then_watch_sees_adds_changes_and_deletes(api: KubeStandin, tmp_path: Path) -> None:
    api.put(pod("a", "10.0.0.1"))
    w = Watching(api, tmp_path)
    try:
        wait_for(lambda: all(x.synced.is_set() for x in w.watchers), "first lists")
        assert w.names(PODS) == ["a"]
        assert w.cache.items(PODS)[0]["kind"] == "Pod"  # a list's items get their kind back
        api.put(pod("b", "10.0.0.2"))
        api.put(pod("a", "10.0.0.1", {"role": "db"}))
        wait_for(lambda: w.names(PODS) == ["a", "b"], "pod b")
        wait_for(lambda: w.cache.items(PODS)[0]["metadata"]["labels"] == {"role": "db"}, "a's labels")
        api.delete("Pod", "default", "a")
        wait_for(lambda: w.names(PODS) == ["b"], "a deleted")
        assert "inventory" in w.notified
        watches = [r for r in api.requests if r.startswith("/api/v1/pods?") and "watch=true" in r]
        assert watches and all("allowWatchBookmarks=true" in r for r in watches)
    finally:
        w.stop.set()


def test_bookmarks_advance_the_version_a_watch_resumes_from(api: KubeStandin, watching: Watching) -> None:
    wait_for(lambda: all(x.synced.is_set() for x in watching.watchers), "first lists")
    for n in range(5):  # other resources move the version; pods' watch only hears bookmarks
        api.put(policy(f"p{n}", {"podSelector": {}}))
    time.sleep(0.5)
    version = api.version
    api.drop_watches()
    wait_for(
        lambda: any(f"resourceVersion={version}" in r for r in api.requests if r.startswith("/api/v1/pods?")),
        "pods' watch resumed from the bookmarked version",
    )
    assert ("pods", "error") in watching.restarts
    assert sum(1 for r in api.requests if r == "/api/v1/pods") == 1  # resumed, not relisted


def test_410_gone_relists_and_diffs(api: KubeStandin, watching: Watching) -> None:
    api.put(pod("a", "10.0.0.1"))
    wait_for(lambda: watching.names(PODS) == ["a"], "pod a")
    api.stop()  # while the API is away, a's deletion and b's creation are compacted away
    api.delete("Pod", "default", "a")
    api.put(pod("b", "10.0.0.2"))
    api.compact()
    api.start()
    wait_for(lambda: watching.names(PODS) == ["b"], "relist after 410")
    assert ("pods", "expired") in watching.restarts
    assert sum(1 for r in api.requests if r == "/api/v1/pods") >= 2


def test_dropped_watches_reconnect_and_miss_nothing(api: KubeStandin, watching: Watching) -> None:
    wait_for(lambda: all(x.synced.is_set() for x in watching.watchers), "first lists")
    for n in range(3):
        api.drop_watches()
        api.put(pod(f"p{n}", f"10.0.1.{n}"))
    wait_for(lambda: watching.names(PODS) == ["p0", "p1", "p2"], "every pod despite the drops")


def test_api_down_at_start_is_retried(tmp_path: Path) -> None:
    api = KubeStandin(port=free_port())
    api.put(pod("a", "10.0.0.1"))
    w = Watching(api, tmp_path)  # nothing listens yet
    try:
        wait_for(lambda: ("pods", "error") in w.restarts, "a failed first list")
        assert not w.watchers[1].synced.is_set()
        api.start()
        wait_for(lambda: w.names(PODS) == ["a"], "the list once the API is up", timeout=15)
    finally:
        w.stop.set()
        api.stop()


def test_a_bad_policy_object_is_reported_with_its_field_path(api: KubeStandin, watching: Watching) -> None:
    api.put(policy("ok", {"podSelector": {}}))
    api.put(policy("bad", {"podSelector": {}, "ingress": [{"ports": [{"port": 70000}]}]}))
    wait_for(lambda: len(watching.cache.items(NETWORK_POLICIES)) == 2, "both policies")
    with pytest.raises(InputError) as caught:
        ApiPolicies(watching.cache, [NETWORK_POLICIES]).read()
    text = caught.value.render()
    assert text.startswith("api:networkpolicies/default/bad:"), text
    assert "spec.ingress[0].ports[0].port" in text, text
    api.delete("NetworkPolicy", "default", "bad")
    wait_for(lambda: len(watching.cache.items(NETWORK_POLICIES)) == 1, "bad one gone")
    assert [p.name for p in ApiPolicies(watching.cache, [NETWORK_POLICIES]).read().policies] == ["ok"]


def test_a_kind_the_api_does_not_serve_counts_as_none(api: KubeStandin, tmp_path: Path) -> None:
    """No MultiNetworkPolicy CRD in the cluster: listed as empty, so the agent can start."""
    api.missing.add(MULTI_NETWORK_POLICIES.path)
    stop = threading.Event()
    notified: list[str] = []
    watcher = Watcher(
        api_client(str(api.kubeconfig(tmp_path))),
        MULTI_NETWORK_POLICIES,
        Cache(),
        lambda what, n: notified.append(what),
        lambda resource, reason: None,
        stop,
    )
    watcher.start()
    try:
        wait_for(watcher.synced.is_set, "the empty list")
        assert notified == ["policies"]
    finally:
        stop.set()


def test_malformed_answers_are_retried_and_the_watch_goes_on(
    api: KubeStandin, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """What a broken server or a proxy's error page answers (a list that is not an object, items
    that are not objects, a watch event that is not one) is logged and retried with backoff, as
    a dropped connection is: the watcher never dies, so the agent keeps following the cluster."""
    caplog.set_level(logging.WARNING, logger="npc.agent")
    api.put(pod("a", "10.0.0.1"))
    api.bad_lists += [
        b"[1, 2]",
        b'{"kind": "PodList", "items": ["x"]}',
        b'{"kind": "PodList", "items": 3}',
        b"<html>502 Bad Gateway</html>",
    ]
    restarts: list[str] = []
    watcher, cache = _watcher(api, tmp_path, PODS, restarts)
    watcher.start()
    try:
        wait_for(watcher.synced.is_set, "the list after four bad ones", timeout=30)
        assert [o["metadata"]["name"] for o in cache.items(PODS)] == ["a"]
        wait_for(lambda: any("watch=true" in r for r in api.requests), "the first watch")
        api.bad_events += [b'"oops"', b'{"type": "ADDED", "object": [1]}', b"[" * 100_000 + b"]" * 100_000]
        api.drop_watches()  # the next three watches get one bad line each
        api.put(pod("b", "10.0.0.2"))
        # the stand-in pops a bad line before the agent has read it: wait for the last one's log
        wait_for(
            lambda: (
                len(cache.items(PODS)) == 2
                and any("nested too deeply" in r.getMessage() for r in caplog.records)
            ),
            "pod b and the last bad event",
            timeout=40,  # a drop before the watch is up resets no backoff: 3.2 + 6.4 + 12.8 s (1 run in 3)
        )
        assert watcher.is_alive() and restarts.count("error") >= 6
        assert sum(1 for r in api.requests if r == "/api/v1/pods") == 5  # a bad event: no relist
        said = [r.getMessage() for r in caplog.records]
        for why in (
            "malformed list response: a JSON object expected, not list",
            "malformed list item: a JSON object expected, not str",
            "malformed list response: items is not a list",
            "malformed list response: not JSON (Expecting value: line 1 column 1 (char 0))",
            "malformed watch event: a JSON object expected, not str",
            "malformed watch event's object: a JSON object expected, not list",
            "malformed watch event: nested too deeply",
        ):
            assert any(why in line for line in said), (why, said)
        assert not [r for r in caplog.records if r.exc_info]  # each one foreseen: no traceback
    finally:
        watcher.stop.set()


def test_after_a_good_read_a_bad_policy_object_is_held_alone(api: KubeStandin, watching: Watching) -> None:
    """One object that stops reading keeps its last good policies and a new bad one is left out,
    while every other object's change is read: a whole input held for one object let one tenant's
    MultiNetworkPolicy hold every policy change of every network (a review saw it)."""
    api.put(policy("a", {"podSelector": {}, "ingress": [{"ports": [{"port": 80}]}]}))
    wait_for(lambda: len(watching.cache.items(NETWORK_POLICIES)) == 1, "policy a")
    source = ApiPolicies(watching.cache, [NETWORK_POLICIES])
    assert [p.name for p in source.read().policies] == ["a"] and not source.errors
    api.put(policy("a", {"podSelector": {}, "ingress": [{"ports": [{"port": 70000}]}]}))
    api.put(policy("b", {"podSelector": {}, "ingress": [{"ports": [{"port": 0}]}]}))
    api.put(policy("c", {"podSelector": {}}))
    wait_for(lambda: len(watching.cache.items(NETWORK_POLICIES)) == 3, "b and c")
    read = source.read()
    ports = {p.name: [port.port for r in p.ingress or () for port in r.ports] for p in read.policies}
    assert ports == {"a": [80], "c": []}  # a as it last read, b left out, c read
    assert sorted(source.errors) == ["api:networkpolicies/default/a", "api:networkpolicies/default/b"]
    assert [e.render().split(":")[1] for e in source.fresh] == [
        "networkpolicies/default/a",
        "networkpolicies/default/b",
    ]
    source.fresh.clear()
    assert [p.name for p in source.read().policies] == ["a", "c"] and not source.fresh  # said once
    cached = watching.cache.items(NETWORK_POLICIES)
    # a relist gives every object anew: equal ones are not read (nor said) again
    api.refused_watches["/apis/networking.k8s.io/v1/networkpolicies"] = (400, "too large resource version")
    api.drop_watches()
    wait_for(
        lambda: not {id(o) for o in watching.cache.items(NETWORK_POLICIES)} & {id(o) for o in cached},
        "a relist",
    )
    del api.refused_watches["/apis/networking.k8s.io/v1/networkpolicies"]
    assert [p.name for p in source.read().policies] == ["a", "c"] and not source.fresh
    api.put(policy("a", {"podSelector": {}, "ingress": [{"ports": [{"port": 81}]}]}))
    api.delete("NetworkPolicy", "default", "b")
    wait_for(lambda: len(watching.cache.items(NETWORK_POLICIES)) == 2, "b gone")
    wait_for(lambda: source.read() is not None and not source.errors, "a fixed", timeout=5)
    assert {
        p.name: [port.port for r in p.ingress or () for port in r.ports] for p in source.read().policies
    } == {
        "a": [81],
        "c": [],
    }


def test_a_policy_whose_metadata_is_not_a_mapping_is_reported_at_its_path(
    api: KubeStandin, watching: Watching
) -> None:
    api.put(policy("ok", {"podSelector": {}}))
    api.put({**policy("x", {"podSelector": {}}), "metadata": "x"}, key=("default", "x"))
    wait_for(lambda: len(watching.cache.items(NETWORK_POLICIES)) == 2, "both policies")
    with pytest.raises(InputError) as caught:
        ApiPolicies(watching.cache, [NETWORK_POLICIES]).read()
    assert "metadata: must be a mapping, not a string" in caught.value.render()


def test_a_resume_the_api_refuses_lists_again(
    api: KubeStandin, watching: Watching, caplog: pytest.LogCaptureFixture
) -> None:
    """A watch resumed from a version the API will not serve (400) is not retried for ever: the
    resource is listed again and diffed, as after 410; the API's own message is in the log."""
    caplog.set_level(logging.WARNING, logger="npc.agent")
    wait_for(lambda: all(x.synced.is_set() for x in watching.watchers), "first lists")
    api.refused_watches["/api/v1/pods"] = (400, 'resourceVersion: Invalid value: "zz"')
    api.drop_watches()
    wait_for(lambda: ("pods", "relist") in watching.restarts, "a relist after the refusal")
    api.put(pod("a", "10.0.0.1"))  # while every watch of pods is refused: only a list finds it
    wait_for(lambda: watching.names(PODS) == ["a"], "pod a, listed", timeout=15)
    assert sum(1 for r in api.requests if r == "/api/v1/pods") >= 2
    # a list that succeeds is no sign the watch works: the relists back off (0.2 s for ever before)
    wait_for(lambda: len(_delays(caplog, "listing again in")) >= 3, "three relists", timeout=15)
    first, second, third = _delays(caplog, "listing again in")[:3]
    assert second == 2 * first and third == 2 * second
    del api.refused_watches["/api/v1/pods"]
    api.put(pod("b", "10.0.0.2"))
    wait_for(lambda: watching.names(PODS) == ["a", "b"], "pod b, watched again", timeout=15)
    said = [r.getMessage() for r in caplog.records]
    assert any('HTTP 400 Bad Request: resourceVersion: Invalid value: "zz"' in line for line in said), said


def test_a_denied_watch_is_retried_as_it_is_with_the_api_s_words(
    api: KubeStandin, watching: Watching, caplog: pytest.LogCaptureFixture
) -> None:
    """403 (RBAC) is not cured by listing again: the watch is retried with backoff, and the log
    says who was denied what."""
    caplog.set_level(logging.WARNING, logger="npc.agent")
    wait_for(lambda: all(x.synced.is_set() for x in watching.watchers), "first lists")
    denial = 'pods is forbidden: User "system:serviceaccount:kube-system:npc" cannot watch resource "pods"'
    api.refused_watches["/api/v1/pods"] = (403, denial)
    api.drop_watches()
    wait_for(lambda: watching.restarts.count(("pods", "error")) >= 2, "two refused resumes")
    del api.refused_watches["/api/v1/pods"]
    api.put(pod("b", "10.0.0.2"))
    wait_for(lambda: watching.names(PODS) == ["b"], "pod b, watched again", timeout=15)
    assert ("pods", "relist") not in watching.restarts
    assert any(denial in r.getMessage() for r in caplog.records)


def _delays(caplog: pytest.LogCaptureFixture, words: str) -> list[float]:
    """The waits the pods watch logged on lines saying ``words`` (``retrying in``, ``listing again in``)."""
    found = [r.getMessage() for r in caplog.records if r.getMessage().startswith("watch pods:")]
    return [float(line.split(f"{words} ")[1].split(" s")[0]) for line in found if f"{words} " in line]


def test_a_watch_that_worked_resumes_from_the_first_backoff_step(
    api: KubeStandin, watching: Watching, caplog: pytest.LogCaptureFixture
) -> None:
    """Failures drive the backoff up; a watch that then works (events, bookmarks) and drops is
    resumed after 0.2 s, not after the 3.2 s the failures left (which reached 30 s after an
    outage, a node missing pod changes for that long)."""
    caplog.set_level(logging.WARNING, logger="npc.agent")
    wait_for(lambda: all(x.synced.is_set() for x in watching.watchers), "first lists")
    api.refused_watches["/api/v1/pods"] = (403, "denied")
    api.drop_watches()
    wait_for(lambda: len(_delays(caplog, "retrying in")) >= 4, "four refused resumes", timeout=15)
    del api.refused_watches["/api/v1/pods"]
    api.put(pod("a", "10.0.0.1"))
    wait_for(lambda: watching.names(PODS) == ["a"], "pod a, watched again", timeout=15)
    before = len(_delays(caplog, "retrying in"))
    assert _delays(caplog, "retrying in")[:4] == [0.2, 0.4, 0.8, 1.6]
    api.drop_watches()
    wait_for(lambda: len(_delays(caplog, "retrying in")) > before, "the drop, logged")
    assert _delays(caplog, "retrying in")[before] == 0.2


def test_watches_that_end_at_once_back_off_and_say_so(
    api: KubeStandin, watching: Watching, caplog: pytest.LogCaptureFixture
) -> None:
    """A proxy ending every watch at once without an event: resumed at once, each node would
    send the API server a watch per resource twenty times a second, silently (client-go calls
    it a very short watch). Now each is a failure: logged, and the backoff grows."""
    caplog.set_level(logging.WARNING, logger="npc.agent")
    wait_for(lambda: all(x.synced.is_set() for x in watching.watchers), "first lists")
    api.short_watches = True
    api.drop_watches()
    start = len(api.requests)
    time.sleep(2.5)
    watches = [r for r in api.requests[start:] if r.startswith("/api/v1/pods?") and "watch=true" in r]
    assert 2 <= len(watches) <= 5, watches  # 0.2 + 0.4 + 0.8 s of backoff, not hundreds
    assert _delays(caplog, "retrying in")[:3] == [0.2, 0.4, 0.8]
    assert any("the watch ended at once, without an event" in r.getMessage() for r in caplog.records)
    api.put(pod("a", "10.0.0.1"))  # only a list sees it: five such watches in a row list again
    wait_for(lambda: watching.names(PODS) == ["a"], "pod a, listed", timeout=20)
    assert ("pods", "relist") in watching.restarts
    api.short_watches = False
    api.put(pod("b", "10.0.0.2"))
    wait_for(lambda: watching.names(PODS) == ["a", "b"], "pod b, once watches last", timeout=40)


def test_a_watch_event_without_its_object_is_malformed(
    api: KubeStandin, watching: Watching, caplog: pytest.LogCaptureFixture
) -> None:
    """``{"type": "ADDED"}`` was cached as an object without a name (a phantom pod counted and
    reported until a restart); it is a malformed event, retried like any other."""
    caplog.set_level(logging.WARNING, logger="npc.agent")
    wait_for(lambda: all(x.synced.is_set() for x in watching.watchers), "first lists")
    api.bad_events += [b'{"type": "ADDED"}'] * 3
    api.drop_watches()
    wait_for(lambda: not api.bad_events, "the bad events sent")
    api.put(pod("a", "10.0.0.1"))
    wait_for(lambda: watching.names(PODS) == ["a"], "pod a", timeout=15)
    assert len(watching.cache.items(PODS)) + len(watching.cache.items(NAMESPACES)) == 1
    assert any("malformed watch event's object" in r.getMessage() for r in caplog.records)


def test_a_resource_version_is_a_string() -> None:
    """An event's ``resourceVersion`` of ``{"a": 1}`` was resumed from as ``{'a': 1}``."""
    assert _version({"metadata": {"resourceVersion": "42"}}) == "42"
    for odd in ({"a": 1}, [1], 7, "", "x" * 65, "4\n2"):
        assert _version({"metadata": {"resourceVersion": odd}}) is None


def test_the_client_retries_nothing_itself_and_probes_quiet_connections(tmp_path: Path) -> None:
    """A failed request is the watch loop's to retry (logged, with backoff): urllib3's own retries
    made a hung list silent for minutes. TCP keepalive ends a connection whose packets stopped."""
    with KubeStandin() as standin:
        configuration = api_client(str(standin.kubeconfig(tmp_path))).configuration
    assert configuration.retries is False
    assert (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1) in configuration.socket_options
    assert (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 30) in configuration.socket_options


def _watcher(api: KubeStandin, tmp_path: Path, resource: Any, restarts: list[str]) -> tuple[Watcher, Cache]:
    cache = Cache()
    watcher = Watcher(
        api_client(str(api.kubeconfig(tmp_path))),
        resource,
        cache,
        lambda what, n: None,
        lambda resource, reason: restarts.append(reason),
        threading.Event(),
        watch_timeout=30,
    )
    return watcher, cache


def test_a_list_answer_that_is_no_list_is_retried_not_read_as_no_objects(
    api: KubeStandin, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An HTTP 200 carrying a Status (etcd timing out) had no items, so it was read as no
    policies: every policy removed until the next list (a review saw it)."""
    caplog.set_level(logging.WARNING, logger="npc.agent")
    api.put(policy("ok", {"podSelector": {}}))
    status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "code": 500}
    api.bad_lists += [
        json.dumps({**status, "message": "etcdserver: request timed out"}).encode(),
        b'{"kind": "NetworkPolicyList", "metadata": {}}',
    ]
    restarts: list[str] = []
    watcher, cache = _watcher(api, tmp_path, NETWORK_POLICIES, restarts)
    watcher.start()
    try:
        wait_for(watcher.synced.is_set, "the list after two bad ones", timeout=30)
        assert [o["metadata"]["name"] for o in cache.items(NETWORK_POLICIES)] == ["ok"]
        said = [r.getMessage() for r in caplog.records]
        for why in (
            "malformed list response: not a list (etcdserver: request timed out)",
            "malformed list response: items is not a list",
        ):
            assert any(why in line for line in said), (why, said)
        assert restarts.count("error") == 2
    finally:
        watcher.stop.set()


def test_a_list_the_api_pages_unasked_is_read_to_its_last_page(api: KubeStandin, tmp_path: Path) -> None:
    """Only the first page was read, as if it were the whole list: policies went missing."""
    api.put(policy("b", {"podSelector": {}}))
    first = {
        "kind": "NetworkPolicyList",
        "metadata": {"continue": "page2", "remainingItemCount": 1},
        "items": [policy("a", {"podSelector": {}})],
    }
    api.bad_lists.append(json.dumps(first).encode())
    watcher, cache = _watcher(api, tmp_path, NETWORK_POLICIES, [])
    watcher.start()
    try:
        wait_for(watcher.synced.is_set, "the list", timeout=30)
        assert [o["metadata"]["name"] for o in cache.items(NETWORK_POLICIES)] == ["a", "b"]
        assert any("continue=page2" in r for r in api.requests)
    finally:
        watcher.stop.set()


def test_a_404_of_a_kind_once_served_keeps_its_objects(api: KubeStandin, tmp_path: Path) -> None:
    """An API server restarting answered 404 for a while: taken as "none exist", every policy
    was removed for a minute. A NetworkPolicy's 404 never means none; a custom kind's only at
    first (no CRD) or after ``NOT_SERVED_S``; meanwhile it is retried and its objects kept."""
    for resource in (NETWORK_POLICIES, MULTI_NETWORK_POLICIES):
        restarts: list[str] = []
        api.put({**policy(f"p-{resource.name}", {"podSelector": {}}), "kind": resource.kind,
                 "apiVersion": resource.api_version})  # fmt: skip
        watcher, cache = _watcher(api, tmp_path, resource, restarts)
        watcher.start()
        try:
            wait_for(lambda: len(cache.items(resource)) == 1, "the first list")  # noqa: B023
            api.missing.add(resource.path)
            api.drop_watches()
            wait_for(lambda: "relist" in restarts and restarts.count("error") >= 2, "lists refused")  # noqa: B023
            assert len(cache.items(resource)) == 1 and "not-served" not in restarts
            api.missing.discard(resource.path)
        finally:
            watcher.stop.set()


def test_410_at_once_again_backs_off(api: KubeStandin, tmp_path: Path) -> None:
    """Each list's watch refused with 410 at once listed again at once: 21 lists a second."""
    restarts: list[str] = []
    watcher, _ = _watcher(api, tmp_path, PODS, restarts)
    api.refused_watches["/api/v1/pods"] = (410, "too old resource version")
    watcher.start()
    try:
        time.sleep(3)
        lists = sum(1 for r in api.requests if r == "/api/v1/pods")
        assert 3 <= lists <= 6, lists  # 0.2 + 0.4 + 0.8 + 1.6 s: five at most in 3 s
    finally:
        watcher.stop.set()


def test_policies_held_at_a_restart_are_held_as_they_were(
    api: KubeStandin, watching: Watching, tmp_path: Path
) -> None:
    """A restart while one policy was held (or left out) read nothing at all: all or nothing at
    first, so no load, and pod churn went unapplied until the policy was fixed (a review saw it).
    The held objects' last good versions are recorded, as held pods are, and held again."""
    store = HeldStore(str(tmp_path / "held"))
    ports = lambda read: {p.name: [x.port for r in p.ingress or () for x in r.ports] for p in read.policies}  # noqa: E731
    api.put(policy("a", {"podSelector": {}, "ingress": [{"ports": [{"port": 80}]}]}))
    wait_for(lambda: len(watching.cache.items(NETWORK_POLICIES)) == 1, "policy a")
    assert ports(ApiPolicies(watching.cache, [NETWORK_POLICIES], store).read()) == {"a": [80]}
    source = ApiPolicies(watching.cache, [NETWORK_POLICIES], store)
    source.read()
    api.put(policy("a", {"podSelector": {}, "ingress": [{"ports": [{"port": 70000}]}]}))
    api.put(policy("b", {"podSelector": {}, "ingress": [{"ports": [{"port": 0}]}]}))
    api.put(policy("c", {"podSelector": {}}))
    wait_for(lambda: len(watching.cache.items(NETWORK_POLICIES)) == 3, "b and c")
    assert ports(source.read()) == {"a": [80], "c": []}
    assert (tmp_path / "held").exists()
    restarted = ApiPolicies(watching.cache, [NETWORK_POLICIES], store)
    assert ports(restarted.read()) == {"a": [80], "c": []}  # it raised: nothing was loaded
    assert sorted(restarted.errors) == ["api:networkpolicies/default/a", "api:networkpolicies/default/b"]
    api.put(policy("d", {"podSelector": {}, "ingress": [{"ports": [{"port": 0}]}]}))
    wait_for(lambda: len(watching.cache.items(NETWORK_POLICIES)) == 4, "d")
    with pytest.raises(InputError):  # new and bad at a first read: all or nothing, as before
        ApiPolicies(watching.cache, [NETWORK_POLICIES], store).read()
    for name in ("b", "d"):
        api.delete("NetworkPolicy", "default", name)
    api.put(policy("a", {"podSelector": {}}))
    wait_for(lambda: len(watching.cache.items(NETWORK_POLICIES)) == 2, "b and d gone")
    wait_for(lambda: restarted.read() is not None and not restarted.errors, "a fixed", timeout=5)
    assert not (tmp_path / "held").exists()  # nothing held: no record
