"""A Kubernetes API stand-in for tests: list and watch over plain HTTP, as the real server does them.

Enough of the API for an informer: cluster-wide collections with a ``resourceVersion`` counter,
``?watch=true&resourceVersion=N`` streaming every later event as chunked JSON lines, BOOKMARK
events when ``allowWatchBookmarks`` is set, an ERROR event with status 410 (Expired) for a version
older than the history kept (``compact()``), and ``drop_watches()`` cutting every open stream in
the middle of a chunk as a failing load balancer would. ``stop()`` and ``start()`` take the whole
server down and up again on the same port. Clients see only HTTP; the test talks to the real
``kubernetes`` client through it.
"""

from __future__ import annotations

import bisect
import copy
import ctypes
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

COLLECTIONS = {
    "/api/v1/namespaces": ("Namespace", "v1"),
    "/api/v1/pods": ("Pod", "v1"),
    "/apis/networking.k8s.io/v1/networkpolicies": ("NetworkPolicy", "networking.k8s.io/v1"),
    "/apis/k8s.cni.cncf.io/v1beta1/multi-networkpolicies": ("MultiNetworkPolicy", "k8s.cni.cncf.io/v1beta1"),
}
CLONE_NEWNET = 0x40000000
PATH_OF = {kind: path for path, (kind, _) in COLLECTIONS.items()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class KubeStandin:
    def __init__(
        self, port: int | None = None, bookmark_every: float = 0.2, netns: str | None = None
    ) -> None:
        self.netns = netns  # listen inside this network namespace (where an agent under test runs)
        self.port = port or (free_port() if netns is None else 6443)
        self.bookmark_every = bookmark_every
        self.changed = threading.Condition()
        self.version = 1
        self.objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = {p: {} for p in COLLECTIONS}
        self.history: list[tuple[int, str, str, dict[str, Any]]] = []  # (version, path, type, object)
        self.oldest = 0  # watches from a version below this get 410
        self.generation = 0  # bumped by drop_watches()
        self.requests: list[str] = []  # every request line, for assertions
        self.missing: set[str] = set()  # collection paths answered with 404 (a CRD not installed)
        # what a broken server or proxy answers instead: each list takes the next raw body, each
        # watch streams the next raw line and ends
        self.bad_lists: list[bytes] = []
        self.bad_events: list[bytes] = []
        # collection path -> (status, message) answered to its watches, as a server refusing a
        # version it will not serve (400) or an RBAC denial (403) answers
        self.refused_watches: dict[str, tuple[int, str]] = {}
        self.short_watches = False  # every watch ends at once, cleanly, without an event (a proxy)
        self._server: ThreadingHTTPServer | None = None

    # -- the cluster ---------------------------------------------------------------------------
    def put(self, obj: dict[str, Any], key: tuple[str, str] | None = None) -> None:
        """Create or change ``obj``; ``key`` (namespace, name) for one whose metadata cannot say."""
        path = PATH_OF[obj["kind"]]
        obj = copy.deepcopy(obj)
        if key is not None:
            with self.changed:
                self.version += 1
                self.objects[path][key] = obj
                self.history.append((self.version, path, "ADDED", obj))
                self.changed.notify_all()
            return
        meta = obj.setdefault("metadata", {})
        key = (meta.get("namespace", ""), meta["name"])
        with self.changed:
            self.version += 1
            meta["resourceVersion"] = str(self.version)
            kind = "MODIFIED" if key in self.objects[path] else "ADDED"
            self.objects[path][key] = obj
            self.history.append((self.version, path, kind, obj))
            self.changed.notify_all()

    def delete(self, kind: str, namespace: str, name: str) -> None:
        path = PATH_OF[kind]
        with self.changed:
            obj = self.objects[path].pop((namespace, name))
            self.version += 1
            obj = {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(self.version)}}
            self.history.append((self.version, path, "DELETED", obj))
            self.changed.notify_all()

    def replace_all(self, objects: list[dict[str, Any]], kinds: tuple[str, ...]) -> None:
        """Make the objects of ``kinds`` exactly ``objects`` (puts and deletes, as a controller would)."""
        wanted = {(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o for o in objects}
        for kind in kinds:
            for namespace, name in list(self.objects[PATH_OF[kind]]):
                if (kind, namespace, name) not in wanted:
                    self.delete(kind, namespace, name)
        for (kind, namespace, name), obj in wanted.items():
            current = self.objects[PATH_OF[kind]].get((namespace, name))
            stripped = {
                **obj,
                "metadata": {k: v for k, v in obj["metadata"].items() if k != "resourceVersion"},
            }
            if (
                current is None
                or {
                    **current,
                    "metadata": {k: v for k, v in current["metadata"].items() if k != "resourceVersion"},
                }
                != stripped
            ):
                self.put(obj)

    def compact(self) -> None:
        """Forget the history: a watch resuming from an older version gets 410 Gone."""
        with self.changed:
            self.history.clear()
            self.oldest = self.version
            self.changed.notify_all()

    def drop_watches(self) -> None:
        with self.changed:
            self.generation += 1
            self.changed.notify_all()

    def kubeconfig(self, directory: Path) -> Path:
        path = directory / "kubeconfig"
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "standin", "cluster": {"server": f"http://127.0.0.1:{self.port}"}}],
            "users": [{"name": "standin", "user": {}}],
            "contexts": [{"name": "standin", "context": {"cluster": "standin", "user": "standin"}}],
            "current-context": "standin",
        }
        path.write_text(json.dumps(config), encoding="utf-8")
        return path

    def since(self, path: str, version: int) -> list[tuple[int, str, dict[str, Any]]]:
        """(version, type, object) of ``path``'s events after ``version``, found by bisection (the
        history is in version order): a watch wakes on every change of any collection, and
        scanning a large cluster's whole history each time would make the stand-in, not the
        client, the slow side of a latency measured against it. Call with ``changed`` held."""
        start = bisect.bisect_right(self.history, version, key=lambda event: event[0])
        return [(v, t, o) for v, p, t, o in self.history[start:] if p == path]

    # -- the server ----------------------------------------------------------------------------
    def start(self) -> KubeStandin:
        standin = self

        class Handler(_Handler):
            api = standin

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler, bind_and_activate=False)
        server.allow_reuse_address = True
        server.daemon_threads = True
        if self.netns is not None:
            server.socket.close()
            server.socket = socket_in_netns(self.netns)
        server.server_bind()
        server.server_activate()
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
            self.drop_watches()

    def __enter__(self) -> KubeStandin:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def socket_in_netns(
    name: str, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM, proto: int = 0
) -> socket.socket:
    """A socket (default TCP) made inside network namespace ``name``: a socket stays in the
    namespace it was made in, so this process serves the namespace's 127.0.0.1 (or talks to its
    netfilter) without joining it. The namespace is entered by a throw-away thread (setns changes
    only the calling thread)."""
    made: list[socket.socket | BaseException] = []

    def make() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            with open(f"/var/run/netns/{name}", "rb") as fh:
                if libc.setns(fh.fileno(), CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns {name}")
            made.append(socket.socket(family, kind, proto))
        except BaseException as exc:
            made.append(exc)

    thread = threading.Thread(target=make)
    thread.start()
    thread.join()
    if isinstance(made[0], BaseException):
        raise made[0]
    return made[0]


class _Handler(BaseHTTPRequestHandler):
    api: KubeStandin
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        self.api.requests.append(self.path)
        if url.path not in COLLECTIONS or url.path in self.api.missing:
            self._json(404, {"kind": "Status", "code": 404, "reason": "NotFound", "message": url.path})
            return
        refused = self.api.refused_watches.get(url.path)
        if query.get("watch") in ("true", "1") and refused is not None:
            code, message = refused
            self._json(code, {"kind": "Status", "code": code, "reason": "Refused", "message": message})
        elif query.get("watch") in ("true", "1"):
            self._watch(url.path, query)
        else:
            self._list(url.path)

    def _json(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _raw(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _list(self, path: str) -> None:
        with self.api.changed:
            bad = self.api.bad_lists.pop(0) if self.api.bad_lists else None
        if bad is not None:
            self._raw(bad)
            return
        kind, api_version = COLLECTIONS[path]
        with self.api.changed:
            items = [copy.deepcopy(o) for _, o in sorted(self.api.objects[path].items())]
            version = self.api.version
        for item in items:  # a real list omits its items' kind and apiVersion
            item.pop("kind", None)
            item.pop("apiVersion", None)
        body = {
            "kind": f"{kind}List",
            "apiVersion": api_version,
            "metadata": {"resourceVersion": str(version)},
            "items": items,
        }
        self._json(200, body)

    def _chunk(self, event: dict[str, Any]) -> None:
        data = json.dumps(event).encode() + b"\n"
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _watch(self, path: str, query: dict[str, str]) -> None:
        api = self.api
        since = int(query.get("resourceVersion") or 0)
        bookmarks = query.get("allowWatchBookmarks") == "true"
        deadline = time.monotonic() + float(query.get("timeoutSeconds") or 1800)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        kind, api_version = COLLECTIONS[path]
        with api.changed:
            generation = api.generation
            expired = since < api.oldest
            bad = api.bad_events.pop(0) if api.bad_events else None
        try:
            if bad is not None:
                self.wfile.write(f"{len(bad) + 1:x}\r\n".encode() + bad + b"\n\r\n")
            elif api.short_watches:
                pass  # the last chunk at once
            elif expired:
                status = {
                    "kind": "Status",
                    "code": 410,
                    "reason": "Expired",
                    "message": "too old resource version",
                }
                self._chunk({"type": "ERROR", "object": status})
            else:
                last_bookmark = time.monotonic()
                while time.monotonic() < deadline:
                    with api.changed:
                        if api.generation != generation:
                            self.wfile.write(
                                b'40\r\n{"type": '
                            )  # cut mid-chunk: the client sees a broken stream
                            self.wfile.flush()
                            self.close_connection = True
                            return
                        events = api.since(path, since)
                        if not events:
                            api.changed.wait(timeout=0.05)
                            events = api.since(path, since)
                        current = api.version  # every event up to here is in ``events``
                    for version, event_type, obj in events:
                        self._chunk({"type": event_type, "object": obj})
                        since = version
                    if bookmarks and time.monotonic() - last_bookmark >= api.bookmark_every:
                        marker = {
                            "kind": kind,
                            "apiVersion": api_version,
                            "metadata": {"resourceVersion": str(current)},
                        }
                        self._chunk({"type": "BOOKMARK", "object": marker})
                        since = max(since, current)
                        last_bookmark = time.monotonic()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
