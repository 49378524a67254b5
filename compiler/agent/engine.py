"""The agent's loop: debounce input changes, then per network either replace rules or move members.

Rules depend only on policies, so a network's rules change exactly when its selected ``Program``
changes (policies, or a namespace's 1.6 annotation): then it is compiled, and the backend loads
what differs from the state in force in one atomic step (or the whole network, where it cannot
tell). Anything else (pods, labels, addresses, named ports, network annotations) only moves set
members, kept up to date pod by pod (``live``), and only the differences are loaded. Bad input
never reaches the kernel: each input keeps its last good value, the error is logged as
``compile`` reports it and counted, and the next good read is applied. A kernel failure keeps the
previous state and is retried with backoff, by a full load. A resync asks the backend, on a
thread of its own so that events go on meanwhile (listing a large table takes seconds), whether
the kernel still holds what was applied; a network that drifted is reloaded whole. An answer about
a state that was replaced while it was asked is dropped and asked again later.
"""

from __future__ import annotations

import gc
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import attrs

from .. import collector
from ..backends.base import (
    Backend,
    ChecksDrift,
    LoadReport,
    LoadsUpdates,
    MemberDelta,
    Options,
    Runner,
    SubprocessRunner,
)
from ..errors import ApplyError, NpcError, UsageError
from ..inventory import Namespace, Pod
from ..ir import IP_FAMILIES, Program
from ..lock import record_path
from ..lower import Lowered, tested
from ..memo import Memo
from ..networks import NetworkSpec, select_policies, uncarried, unpoliced
from ..pipeline import compile_rules, policy_program
from ..resolve import Compiled, Entry, Rules
from ..sources import Loaded
from .held import HeldStore
from .inputs import Artefacts, CacheJournal, InventoryInput, PolicyInput
from .kube import Backoff
from .live import Journal, LiveInventory, LiveSets, PodChange
from .observe import Health, Metrics

log = logging.getLogger("npc.agent")
FILES_SETTLE_S = 2.0  # the longest a batch waits for changing files to be still
Members = dict[str, list[Entry]]


def _info(message: str, **fields: Any) -> None:
    log.info(message, extra={"fields": fields})


def local_only_sets(lowered: Lowered) -> set[str]:
    """Sets that only say which pods are policed here (policy targets, isolation) and are no
    policy's peer or named port: with ``--node`` they hold this node's pods only."""
    targets: set[str] = set()
    peers: set[str] = set()
    for program in lowered.families:
        targets.update(s.name for s in program.isolated.values())
        targets.update(
            s.name for ds in program.dispatch.values() for d in ds for s in (d.target, *tested(d.target))
        )
        for chain in program.chains:
            for m in chain.matches:
                found = (*tested(m.peer), m.peer) if m.peer is not None else ()
                peers.update(s.name for s in (*found, m.named_port) if s is not None)
    return targets - peers


def objects(docs: Iterable[Any]) -> Iterator[dict[str, Any]]:
    """The objects of inventory documents (kubectl's ``List`` opened)."""
    for doc in docs:
        items = doc.get("items") if isinstance(doc, dict) else None
        for obj in items if isinstance(items, list) else [doc]:
            if isinstance(obj, dict):
                yield obj


class Dataplane:
    """A backend with the options and runner the agent loads with."""

    def __init__(self, backend: Backend, options: Options, runner: Runner | None = None) -> None:
        self.backend, self.options, self.runner = backend, options, runner or SubprocessRunner()

    def load(self, compiled: Compiled) -> LoadReport:
        return self.backend.load(compiled, self.options, self.runner)

    def load_update(self, applied: Applied, compiled: Compiled) -> LoadReport:
        """What differs from ``applied``, where the backend can load that; else the whole network."""
        if isinstance(self.backend, LoadsUpdates):
            return self.backend.load_update(
                applied.lowered, applied.members, compiled, self.options, self.runner
            )
        return self.load(compiled)

    def drift(self, applied: Applied) -> tuple[str, ...] | None:
        """What differs in the kernel from ``applied``; None when the backend cannot tell."""
        if isinstance(self.backend, ChecksDrift):
            return self.backend.drift(applied.lowered, applied.members, self.options, self.runner)
        return None

    def load_members(self, lowered: Lowered, old: Members, new: Members) -> MemberDelta:
        return self.backend.load_members(lowered, old, new, self.options, self.runner)

    def read_sets(self, lowered: Lowered) -> frozenset[str] | None:
        """The sets whose members the loads read: the only ones kept up to date (None: all)."""
        return self.backend.read_sets(lowered, self.options)


@attrs.define
class Applied:
    key: Program | Lowered  # what the rules were made from: policies, or a reviewed program
    lowered: Lowered
    members: Members


class Network:
    """One network's compile and load state; applied only when its own inputs changed."""

    def __init__(self, spec: NetworkSpec, plane: Dataplane, metrics: Metrics, node: str | None) -> None:
        self.spec, self.plane, self.metrics, self.node = spec, plane, metrics, node
        self.applied: Applied | None = None
        self.failed = False  # the last load failed: the next one is full
        self.drift: tuple[str, ...] = ()  # what a resync found changed in the kernel: a full load repairs it
        self.repair = False  # the next update is a full load (a resync found drift)
        self.loads = 0  # kernel writes so far: a drift answer about an older state is stale
        self.source = spec.address_source()
        held = HeldStore(record_path(f"agent-{spec.folder}-held"))  # a/sec's name: no folder "a"
        self.live = LiveInventory(self.source, node, held)
        self.sets: LiveSets | None = None
        self._rules: Loaded | Artefacts | None = None
        self.memo = Memo()  # the last compile's pieces: a policy change recompiles its namespace
        # pods with addresses of a family the network does not carry (``_unpoliced``)
        self.unpoliced: set[tuple[str, str]] = set()

    def program(self, loaded: Loaded, namespaces: Sequence[Namespace]) -> Program:
        return select_policies(policy_program(loaded, namespaces), self.spec)

    def check_drift(self) -> tuple[int, tuple[str, ...] | None]:
        """Resync, on the checking thread: (the load count it was asked at, what differs in the
        kernel from what was applied: None when the backend cannot tell, so a full load)."""
        applied, loads, name = self.applied, self.loads, self.spec.name
        if applied is None or self.failed:
            return loads, None
        started = time.monotonic()
        try:
            found = self.plane.drift(applied)
        except ApplyError as exc:
            found = (f"cannot read the kernel's state: {exc}",)
        if found == ():
            _info(
                f"network {name}: resync: the kernel holds what was applied (checked in {_ms(started)} ms)",
                network=name,
                duration_ms=_ms(started),
            )
        return loads, found

    def drifted(self, loads: int, found: tuple[str, ...] | None) -> bool:
        """Take a drift answer on the loop: True when it is about the state still in force;
        a network that drifted (or cannot tell) is loaded whole by its next update."""
        if loads != self.loads:
            return False
        if found is None or found:
            self.repair, self.drift = True, found or ()
        return True

    def _full(
        self,
        key: Program | Lowered,
        name: str,
        pods: list[PodChange],
        namespaces: list[str],
        force_full: bool,
    ) -> tuple[LoadReport, Lowered, Members, LiveSets]:
        """Compile ``key`` (reviewed artefacts ship the lowering only: their optimised policies
        are not needed to load), count its sets and load them: whole, or what differs from the
        state in force."""
        made = (
            Rules(Program(), key)
            if isinstance(key, Lowered)
            else compile_rules(key, name, memo=self.memo, families=self.spec.ip_families)
        )
        lowered = made.lowered
        previous = None
        if self.sets is not None and not (force_full or self.failed):
            self.sets.change(pods, namespaces)  # up to date first; then its kept sets carry over
            previous = self.sets
        local_only = local_only_sets(lowered) if self.node else set()
        sets = self.sets = LiveSets(lowered, self.live, local_only, previous, self.plane.read_sets(lowered))
        members = sets.members()
        compiled = Compiled(made.program, lowered, members)
        applied = self.applied
        if previous is None or applied is None:
            return self._load(lambda: self.plane.load(compiled)), lowered, members, sets
        # the kernel holds what was applied: load only what differs
        return self._load(lambda: self.plane.load_update(applied, compiled)), lowered, members, sets

    def update(self, rules: Loaded | Artefacts, docs: Sequence[Any] | CacheJournal, force_full: bool) -> bool:
        """Bring the kernel to (policies, inventory); False when it already was. Raises NpcError
        (input) or ApplyError (kernel)."""
        started = time.monotonic()
        pods, namespaces = self.live.update(docs if isinstance(docs, Journal) else objects(docs))
        for warning in self.source.warnings:  # a malformed network annotation, said once per change
            log.warning("%s", warning)
        self.source.warnings.clear()
        for warning in self.live.warnings:  # an object skipped, said once per change of it
            log.warning("network %s: %s", self.spec.name, warning)
        self.live.warnings.clear()
        self.metrics.input_errors.labels("inventory").inc(self.live.fresh_bad)
        self.live.fresh_bad = 0
        if self.live.bad:  # objects held as they last parsed, or skipped: the input is not all good
            self.metrics.input_ok.labels("inventory").set(0)
        name = self.spec.name
        # reviewed artefacts give the rules (only members are worked out here); policies are compiled
        if isinstance(rules, Artefacts):
            key: Program | Lowered = rules.network(name)
        elif self.applied is not None and rules is self._rules and not namespaces:
            key = self.applied.key  # same policies, same namespaces: same program (a pod event)
        else:
            key = self.program(rules, self.live.namespace_list())
        self._rules = rules
        force_full = force_full or self.repair
        if self.applied is None or self.sets is None or force_full or self.failed or key != self.applied.key:
            # compiling, counting and rendering allocate millions of objects: no collection walks
            # the cluster's heap meanwhile (``collector``); what stays is frozen below
            with collector.paused():
                report, lowered, members, sets = self._full(key, name, pods, namespaces, force_full)
            self.applied = Applied(key, lowered, members)
            self.repair = False
            # what a full load leaves in force lives long: out of the cycle collector's sight, so no
            # pod event waits for a full collection walking the cluster's objects (refcounting
            # still frees what is dropped later)
            gc.freeze()
            # rules change with full loads only: counted here, not per pod event
            self.metrics.rules.labels(name).set(
                sum(len(c.matches) for f in lowered.families for c in f.chains)
            )
            self._done("full", started, members)
            self.unpoliced.clear()
            self._unpoliced(((None, p) for p in self.live.pods.values()), full=True)
            _info(
                f"applied network {name}: rules and sets{self._why(force_full)} "
                f"({len(members)} sets, {sets.entries} entries; {report.summary}) "
                f"in {_ms(started)} ms",
                network=name,
                kind="full",
                sets=len(members),
                duration_ms=_ms(started),
            )
            for warning in report.warnings:  # as npc apply prints them: a stale set another rule holds
                log.warning("network %s: %s", name, warning, extra={"fields": {"network": name}})
            return True
        if not pods and not namespaces:
            return False
        self._unpoliced(pods)
        self.sets.change(pods, namespaces)
        applied = self.applied
        members = self.sets.members()
        if members == applied.members:
            return False
        delta = self._load(lambda: self.plane.load_members(applied.lowered, applied.members, members))
        applied.members = members
        kind = "full" if delta.full else "sets"
        self._done(kind, started, members)
        _info(
            f"applied network {name}: {kind}, +{delta.added} -{delta.removed} entries in {delta.sets} "
            f"sets, rules unchanged, in {_ms(started)} ms",
            network=name,
            kind=kind,
            added=delta.added,
            removed=delta.removed,
            sets=delta.sets,
            duration_ms=_ms(started),
        )
        return True

    def _unpoliced(self, changes: Iterable[PodChange], full: bool = False) -> None:
        """Warn of pods with addresses of a family the network does not carry (``--ip-families``):
        their traffic in it goes unpoliced. A full load says how many there are; a pod event says
        which pods, only when it brings the first (a rollout would repeat it for every pod)."""
        if len(self.spec.ip_families) == len(IP_FAMILIES):
            return
        had, brought = bool(self.unpoliced), []
        for before, after in changes:
            if before is not None:
                self.unpoliced.discard((before.namespace, before.name))
            if after is not None and unpoliced(self.spec, after):
                self.unpoliced.add((after.namespace, after.name))
                brought.append(after)
        if full or not had:
            for warning in uncarried(self.spec, brought):
                log.warning("%s", warning if full else f"{warning}: {', '.join(_names(brought))}")

    def _why(self, force_full: bool) -> str:
        """Why a full load: the drift a resync found (said once), else a forced reload."""
        drift, self.drift = self.drift, ()
        if drift:
            return f" (drift repaired: {'; '.join(drift[:10])}{' ...' if len(drift) > 10 else ''})"
        return " (full reload)" if force_full else ""

    def _load(self, load: Any) -> Any:
        self.loads += 1  # before and after: a drift check that overlapped the load sees it moved
        try:
            result = load()
        except ApplyError:
            self.failed = True
            self.metrics.failures.labels(self.spec.name, "kernel").inc()
            raise
        finally:
            self.loads += 1
        self.failed = False
        return result

    def _done(self, kind: str, started: float, members: Members) -> None:
        m, name = self.metrics, self.spec.name
        m.apply_seconds.labels(name, kind).observe(time.monotonic() - started)
        m.applies.labels(name, kind).inc()
        m.last_success.labels(name).set(time.time())
        m.sets.labels(name).set(len(members))
        if self.sets is not None:
            m.entries.labels(name).set(self.sets.entries)


def _names(pods: Sequence[Pod], most: int = 5) -> list[str]:
    shown = [f"{p.namespace}/{p.name}" for p in pods[:most]]
    return shown if len(pods) <= most else [*shown, f"... ({len(pods) - most} more)"]


def _ms(started: float) -> int:
    return round((time.monotonic() - started) * 1000)


class Engine:
    """Reads inputs when told they changed, folds changes arriving within ``debounce`` seconds
    into one apply, and applies every network; ``stop`` ends ``run`` with the rules in force."""

    def __init__(
        self,
        policies: PolicyInput,
        inventory: InventoryInput | None,
        networks: Sequence[NetworkSpec],
        plane: Dataplane,
        *,
        node: str | None = None,
        debounce: float = 0.1,
        resync: float = 300.0,
        metrics: Metrics | None = None,
        health: Health | None = None,
        synced: Callable[[], bool] = lambda: True,
        stamp: Callable[[], object] | None = None,
    ) -> None:
        self.policies, self.inventory = policies, inventory
        self.metrics = metrics or Metrics()
        self.health = health or Health()
        self.networks = [Network(s, plane, self.metrics, node) for s in networks]
        self.debounce, self.resync = debounce, resync
        self.synced = synced  # the API's first lists are in: before that, an apply would open pods
        self.stamp = stamp  # what the input files are now (``tree_stamp``): read once they are still
        self.events: queue.Queue[str] = queue.Queue()
        self.stop = threading.Event()
        self.fatal: UsageError | None = None  # why run() gave up (the agent exits 2)
        self._loaded: Loaded | Artefacts | None = None  # last good inputs
        self._docs: list[Any] | CacheJournal | None = None
        self._digests = {"policies": "", "inventory": ""}
        self._answers: queue.Queue[tuple[Network, int, tuple[str, ...] | None]] = queue.Queue()
        self._checking: threading.Thread | None = None
        self._failed: set[str] = set()  # networks whose last load failed: a retry reloads these

    def notify(self, what: str) -> None:
        """Thread-safe: ``policies``, ``inventory``, ``files`` (either may have changed), ``drift``
        (a resync's answer is in) or ``stop``."""
        self.events.put(what)

    def shutdown(self) -> None:
        """Thread-safe: end ``run`` (the flag alone would leave it waiting for a notice)."""
        self.stop.set()
        self.notify("stop")

    def run(self) -> None:
        backoff = Backoff(first=1.0, cap=60.0)
        next_resync = time.monotonic() + self.resync
        retry_at: float | None = None
        pending = {"policies", "inventory"}
        while not self.stop.is_set():
            self.health.beat = time.monotonic()
            now = time.monotonic()
            full = now >= next_resync
            retry = retry_at is not None and now >= retry_at
            if (pending or full or retry) and self.synced():
                if full:
                    next_resync = now + self.resync
                    pending |= {"policies", "inventory"}
                    self._check_drift()
                if "drift" in pending and not self._take_drift():  # asked again soon
                    next_resync = min(next_resync, time.monotonic() + min(30.0, self.resync))
                try:
                    ok = self._process(pending, retry, resync=full)
                except UsageError as exc:
                    self.fatal = exc
                    self.shutdown()
                    return
                except Exception:  # a bug must not end enforcement: keep the state, try again later
                    log.exception("apply failed unexpectedly; previous state kept")
                    ok = False
                pending = set()
                if ok:
                    retry_at = None
                    backoff.reset()
                else:
                    retry_at = time.monotonic() + backoff.next()
            deadline = min(next_resync, retry_at or next_resync, time.monotonic() + 30)
            try:
                first = self.events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                continue
            pending |= self._gather(first)

    def _check_drift(self) -> None:
        """Ask every network about drift on a thread of its own (one at a time); the answers
        come back through ``drift``."""
        if self._checking is not None and self._checking.is_alive():
            return

        def check() -> None:
            for network in self.networks:
                self._answers.put((network, *network.check_drift()))
            self.notify("drift")

        self._checking = threading.Thread(target=check, name="drift-check", daemon=True)
        self._checking.start()

    def _take_drift(self) -> bool:
        """Hand the answers to their networks; False when one was about a replaced state."""
        current = True
        while True:
            try:
                network, loads, found = self._answers.get_nowait()
            except queue.Empty:
                return current
            current = network.drifted(loads, found) and current

    def _gather(self, first: str) -> set[str]:
        """Every change arriving within ``debounce`` of the first one; while files keep changing,
        until they have been still for ``debounce`` (at most ``FILES_SETTLE_S``): a folder copied
        over the policies (``rm -r`` and ``cp -r``) was loaded half copied, opening pods. Still
        is what ``stamp`` says too: the watcher sees no change while a replaced folder is gone."""
        batch = [first]
        started = time.monotonic()
        end = started + self.debounce
        while (left := end - time.monotonic()) > 0 and not self.stop.is_set():
            try:
                batch.append(self.events.get(timeout=left))
            except queue.Empty:
                break
            if self.stamp is not None:  # file mode: every event may be a file still being written
                end = min(time.monotonic() + self.debounce, started + FILES_SETTLE_S)
        if self.stamp is not None:
            seen = self.stamp()
            while time.monotonic() < started + FILES_SETTLE_S and not self.stop.wait(self.debounce):
                if (now := self.stamp()) == seen:
                    break
                seen = now
        while True:  # whatever else is already queued comes along
            try:
                batch.append(self.events.get_nowait())
            except queue.Empty:
                break
        self.metrics.batch.observe(len(batch))
        kinds = set(batch) - {"stop"}
        if "files" in kinds:
            kinds |= {"policies", "inventory"}
        return kinds

    def _read(self, pending: set[str], force: bool) -> bool:
        """Refresh the inputs in ``pending``; True when something is new (or ``force``)."""
        changed = force
        inputs: list[tuple[str, Any]] = [("policies", self.policies)]
        if self.inventory is not None:
            inputs.append(("inventory", self.inventory))
        for what, source in inputs:
            if what not in pending and not force:
                continue
            try:
                value = source.read()
            except NpcError as exc:
                self.metrics.input_ok.labels(what).set(0)
                self.metrics.input_errors.labels(what).inc()
                for network in self.networks:
                    self.metrics.failures.labels(network.spec.name, "input").inc()
                last = self._loaded if what == "policies" else self._docs
                log.error(
                    "%s: %s\n%s",
                    what,
                    f"keeping the last good {what} in force"
                    if last is not None
                    else f"no good {what} read yet: nothing is loaded until they read",
                    exc.render(),
                    extra={"fields": {"input": what, "error": exc.render()}},
                )
                continue
            fresh: list[NpcError] = getattr(source, "fresh", [])  # objects held one by one (``ApiPolicies``)
            for problem in fresh:
                self.metrics.input_errors.labels(what).inc()
                log.error(
                    "%s: an object does not read: its last good state stays in force (a new one is left out)\n%s",
                    what,
                    problem.render(),
                    extra={"fields": {"input": what, "error": problem.render()}},
                )
            fresh.clear()
            digest = source.digest()
            unchanged = digest and digest == self._digests[what] and not force
            # read the same again, objects still held (a pod that no longer reads) keep it 0; read
            # anew, the networks' updates say so
            held = unchanged and what == "inventory" and any(n.live.bad for n in self.networks)
            self.metrics.input_ok.labels(what).set(0 if getattr(source, "errors", None) or held else 1)
            if unchanged:
                continue
            self._digests[what] = digest
            if what == "policies":
                self._loaded = value
                if isinstance(value, Loaded):
                    self.metrics.objects.labels("policies").set(len(value.policies))
            else:
                self._docs = value
                if isinstance(value, CacheJournal):  # counted by the cache: not a scan per event
                    counts = {kind: value.count(kind) for kind in ("Namespace", "Pod")}
                else:
                    kinds = [o.get("kind") for o in objects(value)]
                    counts = {kind: kinds.count(kind) for kind in ("Namespace", "Pod")}
                self.metrics.objects.labels("namespaces").set(counts["Namespace"])
                self.metrics.objects.labels("pods").set(counts["Pod"])
            changed = True
        if self.inventory is None and self._docs is None:
            self._docs = []
        return changed

    def _process(self, pending: set[str], full: bool, resync: bool = False) -> bool:
        """Read and apply; False when a network's load failed (to be retried)."""
        self.health.busy = True
        try:
            changed = self._read(pending, full or resync)
            repair = any(n.repair for n in self.networks)
            if not (changed or repair) or self._loaded is None or self._docs is None:
                return True
            ok = True
            everyone = not self._failed  # a retry no network's failure asked for (a bug's): all
            for network in self.networks:
                # a retry reloads the networks whose load failed, not the healthy ones beside them
                forced = full and (everyone or network.spec.name in self._failed)
                try:
                    if not network.update(self._loaded, self._docs, forced) and not resync:
                        # said once per change read, so a user who edited an input sees it was
                        # (not every resync: inputs read again unchanged are no news)
                        _info(f"network {network.spec.name}: inputs read, kernel already up to date")
                    self._failed.discard(network.spec.name)
                except ApplyError as exc:
                    self._failed.add(network.spec.name)
                    ok = False
                    log.error(
                        "network %s: the kernel refused the change, previous state kept: %s",
                        network.spec.name,
                        exc.render(),
                        extra={"fields": {"network": network.spec.name, "error": exc.render()}},
                    )
                except UsageError:
                    raise  # the command line asked for what cannot be done (a backend that cannot load)
                except NpcError as exc:  # a policy that is valid alone but not together (rare)
                    self.metrics.failures.labels(network.spec.name, "input").inc()
                    log.error("network %s: %s", network.spec.name, exc.render())
            if ok and all(n.applied is not None for n in self.networks):
                self.health.ready.set()
            return ok
        finally:
            self.health.busy = False
            self.health.beat = time.monotonic()
