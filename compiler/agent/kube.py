"""The Kubernetes API as an input: list + watch per resource, kept in a local cache of raw objects.

One thread per resource (namespaces, pods, NetworkPolicies, MultiNetworkPolicies when a network
takes them) runs the informer loop every controller runs: list (remember the list's
resourceVersion, replace the cache and tell the agent what differs), then watch from that version
with bookmarks so a quiet resource still advances it. A watch that ends or drops is resumed from
the last version seen, after a backoff when it failed; 410 Gone (the version was compacted away)
means list again and diff. An unreachable API is retried for ever, never fatal: the node keeps
its last rules meanwhile. Objects are kept as the API's JSON (no model classes): the compiler reads
exactly what ``kubectl get -o json`` shows.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import attrs
import urllib3
from kubernetes import client, config
from kubernetes.client.rest import ApiException
from kubernetes.watch.watch import iter_resp_lines

from ..documents import metadata, namespaced_name
from ..errors import UsageError
from ..frontends.positions import printable

log = logging.getLogger("npc.agent")

Key = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped objects
Notify = Callable[[str, int], None]  # (resource, number of objects changed)


@attrs.frozen
class Resource:
    """A watched collection: its name in logs and metrics, and how to list it with the client."""

    name: str
    kind: str
    api_version: str
    path: str  # cluster-wide collection path, e.g. /api/v1/pods
    optional: bool = False  # a custom resource: a cluster without its CRD serves none (404)

    @property
    def input(self) -> str:
        """``policies`` or ``inventory``: what a change of this resource changes."""
        return "inventory" if self.kind in ("Namespace", "Pod") else "policies"


NAMESPACES = Resource("namespaces", "Namespace", "v1", "/api/v1/namespaces")
PODS = Resource("pods", "Pod", "v1", "/api/v1/pods")
NETWORK_POLICIES = Resource(
    "networkpolicies", "NetworkPolicy", "networking.k8s.io/v1", "/apis/networking.k8s.io/v1/networkpolicies"
)
MULTI_NETWORK_POLICIES = Resource(
    "multi-networkpolicies",
    "MultiNetworkPolicy",
    "k8s.cni.cncf.io/v1beta1",
    "/apis/k8s.cni.cncf.io/v1beta1/multi-networkpolicies",
    optional=True,
)
MAX_PAGES = 10_000  # of a list the API pages unasked (a continue token that never ends)
NOT_SERVED_S = 300.0  # a served kind's 404s for this long: its CRD was removed, not a restart's blip


# a connection gone quiet is probed after 30 s and dropped after three unanswered probes 10 s
# apart: a watch whose packets stopped (a dead load balancer, a dropped route) ends in a minute
# and is resumed, instead of waiting out its read timeout with no event reaching the node
KEEPALIVE = [
    *urllib3.connection.HTTPConnection.default_socket_options,  # urllib3 replaces, not merges
    (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
    (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 30),
    (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 10),
    (socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3),
]


def api_client(kubeconfig: str | None) -> client.ApiClient:
    """``--kubeconfig``, else ``$KUBECONFIG``, else the in-cluster service account. urllib3's own
    retries are off: a request that fails is the watch loop's to retry, with its backoff and a
    line in the log (urllib3 retried a timed-out list three times, silently, for minutes)."""
    path = kubeconfig or os.environ.get("KUBECONFIG")
    configuration = client.Configuration()
    where = f"kubeconfig {printable(path)}" if path else "in-cluster config (no --kubeconfig, no $KUBECONFIG)"
    try:
        if path:
            config.load_kube_config(config_file=path, client_configuration=configuration)
        else:
            config.load_incluster_config(client_configuration=configuration)
    except Exception as exc:  # a file of any shape: YAML errors, a list where a mapping goes, ...
        raise UsageError(f"{where}: {str(exc) or type(exc).__name__}") from None
    try:
        server = urllib3.util.parse_url(configuration.host)
    except urllib3.exceptions.LocationParseError:
        server = None
    if server is None or server.scheme not in ("http", "https") or not server.host:
        raise UsageError(f"{where}: the server {configuration.host!r} is not an http(s) URL")
    configuration.retries = False
    configuration.socket_options = KEEPALIVE
    return client.ApiClient(configuration)


class Backoff:
    """Exponential, capped, reset by a success: 0.2 s, 0.4 s, ... 30 s."""

    def __init__(self, first: float = 0.2, cap: float = 30.0) -> None:
        self.first, self.cap, self.delay = first, cap, first

    def next(self) -> float:
        delay, self.delay = self.delay, min(self.delay * 2, self.cap)
        return delay

    def reset(self) -> None:
        self.delay = self.first


class Cache:
    """Raw objects per resource, shared by the watch threads and the agent's loop, with the order
    they changed in: a reader asks what changed since it last read, not for the whole cluster."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.objects: dict[str, dict[Key, dict[str, Any]]] = {}
        self.seq = 0  # changes so far
        self.log: dict[tuple[str, Key], int] = {}  # (resource, key) -> its last change, oldest first
        self.floor = 0  # changes up to here may have left the log (deleted objects are forgotten)

    def _touch(self, name: str, key: Key) -> None:
        self.seq += 1
        self.log.pop((name, key), None)
        self.log[(name, key)] = self.seq
        if len(self.log) > 2 * sum(map(len, self.objects.values())) + 1024:
            self.log = {k: v for k, v in self.log.items() if k[1] in self.objects.get(k[0], {})}
            self.floor = self.seq

    def changes(
        self, resources: Sequence[Resource], since: int
    ) -> tuple[int, list[tuple[Resource, Key, dict[str, Any] | None]]] | None:
        """(the count to ask from next time, the objects of ``resources`` changed after ``since``,
        None for one gone); None when the log no longer reaches back that far."""
        by_name = {r.name: r for r in resources}
        with self.lock:
            if since < self.floor:
                return None
            out = []
            for (name, key), seq in reversed(self.log.items()):
                if seq <= since:
                    break
                if name in by_name:
                    out.append((by_name[name], key, self.objects.get(name, {}).get(key)))
            return self.seq, out

    def count(self, resource: Resource) -> int:
        with self.lock:
            return len(self.objects.get(resource.name, {}))

    def items(self, resource: Resource) -> list[dict[str, Any]]:
        with self.lock:
            found = self.objects.get(resource.name, {})
            return [found[k] for k in sorted(found)]

    def replace(self, resource: Resource, objects: dict[Key, dict[str, Any]]) -> int:
        """A fresh list: how many objects differ from what was cached (added, changed or gone)."""
        with self.lock:
            old = self.objects.get(resource.name, {})
            self.objects[resource.name] = objects
            changed = [k for k in old.keys() | objects.keys() if old.get(k) != objects.get(k)]
            for key in sorted(changed):
                self._touch(resource.name, key)
        return len(changed)

    def event(self, resource: Resource, kind: str, obj: dict[str, Any]) -> bool:
        key = namespaced_name(obj)
        with self.lock:
            found = self.objects.setdefault(resource.name, {})
            if kind == "DELETED":
                if found.pop(key, None) is None:
                    return False
            elif found.get(key) == obj:
                return False
            else:
                found[key] = obj
            self._touch(resource.name, key)
            return True


def _version(obj: dict[str, Any]) -> str | None:
    """An object's resourceVersion: a string (opaque, but never a JSON object or list)."""
    value = metadata(obj).get("resourceVersion")
    return value if isinstance(value, str) and value and len(value) <= 64 and value.isprintable() else None


def _parsed(data: str | bytes, what: str) -> object:
    """JSON, or a ValueError saying the answer is malformed (a proxy's HTML page, a document
    nested past the reader's depth)."""
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError(f"malformed {what}: nested too deeply") from None
    except ValueError as exc:
        raise ValueError(f"malformed {what}: not JSON ({exc})") from None


RESUMES = 5  # watch resumes failed in a row before the resource is listed again
WORKING = 10.0  # seconds a watch stayed open without an event that still count as a working one


def _refused(status: int) -> bool:
    """A status that resuming the same watch again cannot fix (a version the API will not serve),
    unlike a lost credential (401, 403) or throttling (429), which are retried as they are."""
    return 400 <= status < 500 and status not in (401, 403, 429)


def _status_message(exc: ApiException) -> str:
    """The API's own words (its Status object's message: an RBAC denial names the user and the
    verb), printable and bounded."""
    try:
        found = json.loads(exc.body) if exc.body else None
    except (ValueError, TypeError, RecursionError):
        return ""
    message = _status_text(found) if isinstance(found, dict) else ""
    return f": {message}" if message else ""


def _status_text(status: dict[str, Any]) -> str:
    message = status.get("message")
    return "".join(c if c.isprintable() else "?" for c in str(message)[:300]) if message else ""


def _object(found: object, what: str) -> dict[str, Any]:
    """A JSON object of the response, or ValueError: a proxy or a broken server answering
    something else is retried with backoff like a dropped connection, never a dead watcher."""
    if not isinstance(found, dict):
        raise ValueError(f"malformed {what}: a JSON object expected, not {type(found).__name__}")
    return found


class Watcher(threading.Thread):
    """The list + watch loop of one resource; ``notify`` is called after every change it caches."""

    def __init__(
        self,
        api: client.ApiClient,
        resource: Resource,
        cache: Cache,
        notify: Notify,
        on_restart: Callable[[str, str], None],
        stop: threading.Event,
        watch_timeout: int = 300,
    ) -> None:
        super().__init__(name=f"watch-{resource.name}", daemon=True)
        self.api, self.resource, self.cache = api, resource, cache
        self.notify, self.on_restart, self.stop = notify, on_restart, stop
        self.watch_timeout = watch_timeout
        self.synced = threading.Event()  # set after the first successful list
        self.version: str | None = None  # the last resourceVersion seen: a watch resumes from it
        self.doing = "list"  # or "watch": what the loop is at, for its log lines
        self.events = 0  # of the current watch, bookmarks included
        self.served = False  # a list has succeeded: a 404 now is a blip (an API server starting)
        self.missing_since: float | None = None  # the first of the 404s in a row

    def run(self) -> None:
        backoff = Backoff()
        failed = 0  # resumes from one version failed in a row
        while not self.stop.is_set():
            resumed = None
            self.doing, self.events, started = "list", 0, time.monotonic()
            try:
                if self.version is None:
                    self.version = self._list()  # not a reset: a list is no sign the watch works
                    failed = 0
                resumed = self.version
                self.doing, started = "watch", time.monotonic()
                self._watch()
                if self.stop.is_set():
                    break
                if not self._worked(started):
                    # a proxy or server ending every watch at once: resumed in a loop, every node
                    # would hammer the API server (client-go's "very short watch"); RESUMES of
                    # them in a row list again, as other failures do
                    failed = self._retry(
                        "the watch ended at once, without an event", backoff, resumed, failed
                    )
                    continue
                failed = 0
                backoff.reset()  # a watch that ended quietly (server timeout) is resumed at once
            except ApiException as exc:
                self._after_working(started, backoff)
                if exc.status == 410:
                    log.info(
                        "watch %s: resourceVersion %s expired (410 Gone): listing again",
                        self.resource.name,
                        self.version,
                    )
                    self.on_restart(self.resource.name, "expired")
                    self.version = None
                    if not self._worked(started):  # 410 again at once: not 20 lists a second
                        self.stop.wait(backoff.next())
                    continue
                if exc.status == 404 and self.version is None and self._absent():
                    self._not_served()
                    continue
                failed = self._retry(
                    f"HTTP {exc.status} {exc.reason}{_status_message(exc)}",
                    backoff,
                    resumed,
                    failed,
                    _refused(exc.status),
                )
            except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
                self._after_working(started, backoff)
                why = type(exc).__name__ + (f": {exc}" if str(exc) else "")
                failed = self._retry(why, backoff, resumed, failed)
            except Exception:  # a bug must not end the watch: the agent would stop following
                log.exception("watch %s failed unexpectedly; listing again", self.resource.name)
                self.version = None
                self._failed("unexpected error", backoff)

    def _worked(self, started: float) -> bool:
        """A watch that delivered an event or stayed open ``WORKING`` seconds: its end or drop
        is resumed from the first step of the backoff, not where the failures before it left it."""
        return self.doing == "watch" and (self.events > 0 or time.monotonic() - started >= WORKING)

    def _after_working(self, started: float, backoff: Backoff) -> None:
        if self._worked(started):
            backoff.reset()

    def _absent(self) -> bool:
        """A list's 404 means "none exist" only for a custom resource never served yet (no CRD),
        or whose 404s have lasted ``NOT_SERVED_S`` (its CRD removed): a NetworkPolicy's, or one
        during an API server's restart, taken as none, dropped every policy until the next list."""
        now = time.monotonic()
        if self.missing_since is None:
            self.missing_since = now
        return self.resource.optional and (not self.served or now - self.missing_since >= NOT_SERVED_S)

    def _not_served(self) -> None:
        """A kind the cluster does not serve (no MultiNetworkPolicy CRD): none exist, so the
        cache is empty and counts as listed; the list is tried again every minute."""
        log.warning(
            "%s: not served by this API (no such resource); none assumed, asking again in 60 s",
            self.resource.path,
        )
        first = not self.synced.is_set()
        changed = self.cache.replace(self.resource, {})
        self.synced.set()
        if changed or first:
            self.notify(self.resource.input, changed)
        self.on_restart(self.resource.name, "not-served")
        self.stop.wait(60.0)

    def _retry(
        self, why: str, backoff: Backoff, resumed: str | None, failed: int, refused: bool = False
    ) -> int:
        """After a failure, resume again or (``refused``, or ``RESUMES`` resumes in a row from one
        version failed) list again; the count of failed resumes now."""
        failed = failed + 1 if resumed is not None and self.version == resumed else 0
        if self.version is not None and (refused or failed >= RESUMES):
            self._relist(why, backoff)
        else:
            self._failed(why, backoff)
        return failed

    def _relist(self, why: str, backoff: Backoff) -> None:
        """A resume the API refuses (a version it cannot serve: 400, 422, ...), or one failing
        ``RESUMES`` times in a row, is given up: list again and diff, as after 410."""
        delay = backoff.next()
        log.warning(
            "watch %s: resuming from resourceVersion %s failed (%s): listing again in %.1f s",
            self.resource.name,
            self.version,
            why,
            delay,
        )
        self.on_restart(self.resource.name, "relist")
        self.version = None
        self.stop.wait(delay)

    def _failed(self, why: str, backoff: Backoff) -> None:
        delay = backoff.next()
        log.warning("%s %s: %s; retrying in %.1f s", self.doing, self.resource.name, why, delay)
        self.on_restart(self.resource.name, "error")
        self.stop.wait(delay)

    def _list(self) -> str:
        """List everything (every page, if the API pages it unasked); the cache becomes exactly
        the list (a relist after 410 diffs)."""
        objects = {}
        token = ""
        for _ in range(MAX_PAGES):
            body = self._page(token)
            for item in body["items"] or ():
                item = _object(item, "list item")
                item.setdefault("kind", self.resource.kind)  # lists omit their items' kind
                item.setdefault("apiVersion", self.resource.api_version)
                objects[namespaced_name(item)] = item
            token = metadata(body).get("continue") or ""
            if not isinstance(token, str):
                raise ValueError("malformed list response: metadata.continue is not a string")
            if not token:
                break
        else:
            raise ValueError(f"list response: more than {MAX_PAGES} pages")
        self.served, self.missing_since = True, None
        changed = self.cache.replace(self.resource, objects)
        first = not self.synced.is_set()
        self.synced.set()
        if changed or first:
            self.notify(self.resource.input, changed)
        version = _version(body) or ""
        log.debug("listed %s: %d objects at resourceVersion %s", self.resource.name, len(objects), version)
        return version

    def _page(self, token: str) -> dict[str, Any]:
        """One page of the list: a List with its items, else ValueError (an HTTP 200 carrying a
        Status, "etcdserver: request timed out", read as no items, removed every policy)."""
        response = self._get(_request_timeout=(5, 60), **({"_continue": token} if token else {}))
        try:
            body = _object(_parsed(response.data, "list response"), "list response")
        finally:
            response.release_conn()
        kind = body.get("kind")
        if kind not in (f"{self.resource.kind}List", "List"):  # a PodList for policies: none of them
            problem = (
                (_status_text(body) or "a Status")
                if kind == "Status"
                else f"kind {printable(str(kind))[:80]}"
            )
            raise ValueError(f"malformed list response: not a list ({problem})")
        if "items" not in body or not isinstance(body["items"], list | None):
            raise ValueError("malformed list response: items is not a list")
        return body

    def _get(self, **query: Any) -> Any:
        """The resource's list call of the official client, as the raw HTTP response."""
        return list_call(self.api, self.resource)(_preload_content=False, **query)

    def _watch(self) -> None:
        """Stream events from ``self.version``, advancing it with every event and bookmark."""
        assert self.version is not None
        for found in self._events(self.version):
            event = _object(found, "watch event")
            kind = event.get("type")
            obj = _object(event.get("object"), "watch event's object")  # none: malformed, not an object
            if kind == "ERROR":
                code = obj.get("code")
                raise ApiException(
                    status=code if isinstance(code, int) else 500, reason=str(obj.get("message") or "")
                )
            self.version = _version(obj) or self.version
            self.events += 1
            if kind == "BOOKMARK":
                continue
            obj.setdefault("kind", self.resource.kind)
            obj.setdefault("apiVersion", self.resource.api_version)
            if kind in ("ADDED", "MODIFIED", "DELETED") and self.cache.event(self.resource, kind, obj):
                self.notify(self.resource.input, 1)
            if self.stop.is_set():
                break

    def _events(self, version: str) -> Iterator[object]:
        response = self._get(
            watch=True,
            resource_version=version,
            allow_watch_bookmarks=True,
            timeout_seconds=self.watch_timeout,
            _request_timeout=(5, self.watch_timeout + 30),
        )
        try:
            for line in iter_resp_lines(response):
                if line:
                    yield _parsed(line, "watch event")
        finally:
            response.release_conn()


def list_call(api: client.ApiClient, resource: Resource) -> Callable[..., Any]:
    """The official client's cluster-wide list (and, with ``watch=True``, watch) of ``resource``."""
    if resource.kind == "Namespace":
        return functools.partial(client.CoreV1Api(api).list_namespace)
    if resource.kind == "Pod":
        return functools.partial(client.CoreV1Api(api).list_pod_for_all_namespaces)
    if resource.kind == "NetworkPolicy":
        return functools.partial(client.NetworkingV1Api(api).list_network_policy_for_all_namespaces)
    group, version = resource.api_version.split("/")
    plural = resource.path.rsplit("/", 1)[1]
    return functools.partial(client.CustomObjectsApi(api).list_cluster_custom_object, group, version, plural)
