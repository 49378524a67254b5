"""What the agent shows: Prometheus metrics, ``/healthz`` and ``/readyz``, and its log lines.

The metrics live in a registry of their own (not the process-wide default) so that an agent is a
value: tests run several in one process, and nothing else in npc registers metrics.
"""

from __future__ import annotations

import json
import logging
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app

from ..backends.base import TOOL_SECONDS

log = logging.getLogger("npc.agent")


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.apply_seconds = Histogram(
            "npc_agent_apply_duration_seconds",
            "Time to compute and load one apply, by kind: full (rules and sets) or sets (member deltas)",
            ["network", "kind"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.applies = Counter("npc_agent_applies", "Successful applies", ["network", "kind"], registry=r)
        self.failures = Counter(
            "npc_agent_apply_failures",
            "Applies not done, by reason: input (bad policy or inventory, last good state kept) or kernel",
            ["network", "reason"],
            registry=r,
        )
        self.last_success = Gauge(
            "npc_agent_last_successful_apply_timestamp_seconds",
            "Unix time of the last successful apply",
            ["network"],
            registry=r,
        )
        self.rules = Gauge("npc_agent_rules", "Rules (policy matches) in force", ["network"], registry=r)
        self.sets = Gauge(
            "npc_agent_sets",
            "Program sets kept up to date (those the backend loads from)",
            ["network"],
            registry=r,
        )
        self.entries = Gauge(
            "npc_agent_set_entries", "Entries of the program sets kept up to date", ["network"], registry=r
        )
        self.objects = Gauge("npc_agent_input_objects", "Input objects by kind", ["kind"], registry=r)
        self.input_ok = Gauge(
            "npc_agent_input_valid",
            "1 when the input was last read without error, 0 while the last known good one is enforced",
            ["input"],
            registry=r,
        )
        self.input_errors = Counter("npc_agent_input_errors", "Input read failures", ["input"], registry=r)
        self.watch_restarts = Counter(
            "npc_agent_watch_restarts", "API watches restarted, by reason", ["resource", "reason"], registry=r
        )
        self.batch = Histogram(
            "npc_agent_debounce_batch_size",
            "Input changes folded into one apply by the debounce",
            buckets=(1, 2, 5, 10, 20, 50, 100, 500, 1000, 5000),
            registry=r,
        )


class Health:
    """``/healthz``: the loop woke up recently, or has been applying for less than ``busy_after``
    (each kernel tool is killed after ``TOOL_SECONDS``, so an apply that takes longer is stuck:
    the liveness probe must then restart the agent); ``/readyz``: a first apply succeeded."""

    def __init__(self, stale_after: float = 60.0, busy_after: float = 2 * TOOL_SECONDS) -> None:
        self.stale_after, self.busy_after = stale_after, busy_after
        self.beat = time.monotonic()
        self.busy_since: float | None = None
        self.ready = threading.Event()

    @property
    def busy(self) -> bool:
        return self.busy_since is not None

    @busy.setter
    def busy(self, busy: bool) -> None:
        self.busy_since = time.monotonic() if busy else None

    def alive(self) -> bool:
        if self.busy_since is not None:
            return time.monotonic() - self.busy_since < self.busy_after
        return time.monotonic() - self.beat < self.stale_after


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # probes every few seconds: not news
        pass


def serve(listen: str, metrics: Metrics, health: Health) -> WSGIServer:
    """Start the HTTP endpoint in a daemon thread; ``listen`` is ``HOST:PORT`` (``[::1]:9469`` too)."""
    host, colon, port = listen.rpartition(":")
    if not colon or not port.isdigit() or int(port) > 65535 or host.startswith("[") != host.endswith("]"):
        raise ValueError("expected HOST:PORT with a port of 0-65535, e.g. 127.0.0.1:9469 or [::1]:9469")
    host = host.strip("[]") or "0.0.0.0"
    prometheus = make_wsgi_app(metrics.registry)

    def app(environ: dict[str, Any], start: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path in ("/healthz", "/readyz"):
            ok = health.alive() if path == "/healthz" else health.ready.is_set()
            start("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain")])
            return [b"ok\n" if ok else b"not ready\n"]
        if path == "/metrics":
            return prometheus(environ, start)  # type: ignore[no-any-return]
        start("404 Not Found", [("Content-Type", "text/plain")])
        return [b"/metrics, /healthz, /readyz\n"]

    class Server(socketserver.ThreadingMixIn, WSGIServer):
        daemon_threads = True
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    server = make_server(host, int(port), app, server_class=Server, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the structured fields an apply line carries."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "msg": record.getMessage(),
        }
        data.update(getattr(record, "fields", {}))
        return json.dumps(data, sort_keys=True)


def setup_logging(fmt: str) -> None:
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s npc-agent %(levelname)s %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False
