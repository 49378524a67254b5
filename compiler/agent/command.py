"""``npc agent``: its arguments, and wiring inputs, engine, dataplane and endpoint together.

Runs in the foreground until SIGTERM or SIGINT, then returns 0 within 2 s leaving the rules in
force: a restarting agent must never open the node.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import signal
import threading
from types import FrameType

from ..arguments import networks_from_args
from ..backends import BACKENDS
from ..backends import get as get_backend
from ..backends.base import Options
from ..errors import UsageError
from ..frontends.k8s import MULTI_NETWORK_POLICY, NETWORK_POLICY
from ..lock import hold_agent_locks, record_path
from .engine import Dataplane, Engine
from .held import HeldStore
from .inputs import (
    ApiInventory,
    ApiPolicies,
    ArtefactPolicies,
    FileInventory,
    FilePolicies,
    FileWatcher,
    InventoryInput,
    PolicyInput,
    tree_stamp,
)
from .kube import MULTI_NETWORK_POLICIES, NAMESPACES, NETWORK_POLICIES, PODS, Cache, Watcher, api_client
from .observe import Health, Metrics, serve, setup_logging

log = logging.getLogger("npc.agent")
STOP_GRACE = 1.5  # seconds an apply under way may take to finish after SIGTERM


def run_agent(args: argparse.Namespace) -> int:
    networks = networks_from_args(args)
    backend, options = (
        get_backend(args.backend),
        Options(mark=args.mark, group_marks=args.group_marks, iptables=args.iptables),
    )
    backend.check(options)
    if not backend.loads:
        loading = [name for name in BACKENDS if get_backend(name).loads]
        raise UsageError(
            f"--backend {backend.name}: its artefacts are applied by its own tools (npc compile writes "
            f"them); npc agent loads {', '.join(loading)}"
        )
    setup_logging(args.log_format)
    hold_agent_locks(networks)  # file descriptors open until the process ends
    metrics, health = Metrics(), Health()
    stop = threading.Event()
    cache = Cache()
    watched = []
    if not args.policies and not args.artefacts:
        kinds = {k for n in networks for k in n.policy_kinds}
        watched += [NETWORK_POLICIES] if NETWORK_POLICY in kinds else []
        watched += [MULTI_NETWORK_POLICIES] if MULTI_NETWORK_POLICY in kinds else []
    watchers: list[Watcher] = []
    policies: PolicyInput
    if args.policies:
        policies = FilePolicies(args.policies)
    elif args.artefacts:
        policies = ArtefactPolicies(args.artefacts, networks, bool(args.networks), backend.name)
    else:  # held objects recorded as pods are (``held``): this agent's first network is its own
        held = HeldStore(record_path(f"agent-{networks[0].folder}-policies-held"))
        policies = ApiPolicies(cache, watched, held)
    inventory: InventoryInput = FileInventory(args.inventory) if args.inventory else ApiInventory(cache)
    if not args.inventory:
        watched += [NAMESPACES, PODS]
    api = api_client(args.kubeconfig) if watched else None  # a bad kubeconfig is a usage error, now
    policy_files = [*(args.policies or ()), *([args.artefacts] if args.artefacts else [])]
    files = [*policy_files, *([args.inventory] if args.inventory else [])]  # read once still
    engine = Engine(
        policies,
        inventory,
        networks,
        Dataplane(backend, options),
        node=args.node,
        debounce=args.debounce / 1000,
        resync=args.resync,
        metrics=metrics,
        health=health,
        synced=lambda: all(w.synced.is_set() for w in watchers),
        stamp=functools.partial(tree_stamp, files) if files else None,
    )
    try:
        server = serve(args.listen, metrics, health)
    except (OSError, ValueError) as exc:
        raise UsageError(f"--listen {args.listen}: {exc}") from None
    if api is not None:

        def restarted(resource: str, reason: str) -> None:
            metrics.watch_restarts.labels(resource, reason).inc()

        def changed(what: str, count: int) -> None:
            engine.notify(what)

        watchers = [Watcher(api, r, cache, changed, restarted, stop) for r in watched]
    # one watcher per input: a pod's change reads the inventory alone, not a bad policy file
    # again (whose error it logged anew for every pod event)
    if policy_files:
        FileWatcher(policy_files, lambda: engine.notify("policies"), stop).start()
    if args.inventory:
        FileWatcher([args.inventory], lambda: engine.notify("inventory"), stop).start()
    for watcher in watchers:
        watcher.start()

    def on_signal(number: int, frame: FrameType | None) -> None:
        stop.set()
        engine.shutdown()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    loop = threading.Thread(target=engine.run, name="engine", daemon=True)
    loop.start()
    log.info(
        "npc agent started: %s backend, networks %s, listening on %s",
        args.backend,
        ", ".join(n.name for n in networks),
        args.listen,
    )
    while not stop.wait(5):
        if engine.fatal is not None:
            raise engine.fatal
        if not loop.is_alive():
            log.error("npc agent: the loop died; exiting with the rules in force")
            return 1
    loop.join(STOP_GRACE)
    server.server_close()
    log.info("npc agent stopped; the rules stay in force")
    logging.shutdown()
    os._exit(0)  # freeing a large node's heap object by object takes seconds; the kernel frees it at once
