"""The phases, each measuring one thing of one operator under test (ours, the baseline or the
floor) on one kind: creates, a spec change, no-op resyncs, a restart or fail-over, idle time.
Each returns the raw counts; report.py turns them into figures."""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aigw_operator.base.api import RESYNC_ANNOTATION
from benchmarks.harness import Harness, Process
from benchmarks.measure import Delta, ProcSample, classify, group, percentile
from benchmarks.workloads import NAMESPACES, KindSpec


@dataclass
class Creates:
    n: int
    ready: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    finalizer_ms: list[float] = field(default_factory=list)  # create -> first finalizer
    all_ready_s: float | None = None
    errors: int = 0
    writes_object: int = 0
    writes_status: int = 0
    writes_events: int = 0
    writes_other: int = 0
    k8s_reads: int = 0
    upstream: Counter[str] = field(default_factory=Counter)  # list / get / write
    cpu_s: float = 0.0
    wall_s: float = 0.0
    harness_cpu_s: float = 0.0
    reconciles: float | None = None
    reconcile_s: float | None = None
    proc: ProcSample | None = None

    @property
    def writes(self) -> int:
        return self.writes_object + self.writes_status + self.writes_events + self.writes_other

    def p(self, q: float) -> float:
        return percentile(self.latencies_ms, q)


async def measure_creates(
    harness: Harness, process: Process, kind: KindSpec, namespace: str, n: int, concurrency: int, timeout: float
) -> Creates:
    """N creates, ``concurrency`` in flight: per object create->Ready from the emulator's commits;
    writes into the namespace less the N POSTs; upstream calls; the process's CPU over the phase."""
    result = Creates(n)
    key = group(namespace, kind.plural)
    await harness.wait_quiet(None, process, quiet=0.5, limit=10)
    before = await harness.snapshot(process)
    goal = harness.tracker.ready_count[key] + n
    started = time.monotonic()
    result.errors = await harness.create(kind, namespace, n, concurrency)
    left = timeout - (time.monotonic() - started)
    if await harness.wait_count(harness.tracker.ready_count, key, goal, left, process):
        uids = harness.tracker.uids(key, started)
        result.all_ready_s = max(harness.tracker.ready[u] for u in uids if u in harness.tracker.ready) - started
    await harness.wait_quiet(kind, process)
    delta = Delta(before, await harness.snapshot(process))
    tracker = harness.tracker
    uids = tracker.uids(key, started)
    result.latencies_ms = [(tracker.ready[u] - tracker.created[u]) * 1000 for u in uids if u in tracker.ready]
    result.ready = len(result.latencies_ms)
    result.finalizer_ms = [(tracker.finalized[u] - tracker.created[u]) * 1000 for u in uids if u in tracker.finalized]
    result.writes_object = delta.writes(namespace, kind.plural, None) - delta.ours(namespace)
    result.writes_status = delta.writes(namespace, kind.plural, "status")
    result.writes_events = delta.events(namespace, kind.kind)
    attributed = result.writes_object + result.writes_status + result.writes_events
    result.writes_other = max(0, delta.operator_writes(namespace) - attributed)
    result.k8s_reads = delta.reads(namespace)
    result.upstream = classify(harness.upstream_since(kind, before), kind.list_route)
    result.cpu_s, result.wall_s = delta.cpu_s, delta.wall_s
    result.harness_cpu_s = delta.after.harness_cpu - delta.before.harness_cpu
    counted = delta.reconciles(kind.kind)
    if counted is not None:
        result.reconciles, result.reconcile_s = counted
    result.proc = delta.after.proc
    return result


@dataclass
class Change:
    n: int
    ready: int = 0
    patches: int = 0
    patched_objects: int = 0
    only_changed: int = 0
    k8s_writes: int = 0
    upstream: Counter[str] = field(default_factory=Counter)
    bad_bodies: list[Any] = field(default_factory=list)
    all_s: float | None = None
    cpu_s: float = 0.0


async def measure_change(
    harness: Harness, process: Process, kind: KindSpec, namespace: str, count: int, timeout: float
) -> Change:
    """One field of ``count`` objects changed: the upstream PATCHes (one each, carrying only the
    changed field?), writes, and the time until each is Ready at generation 2."""
    result = Change(count)
    key = group(namespace, kind.plural)
    await harness.wait_quiet(kind, process, quiet=0.5, limit=10)
    harness.tracker.generation_goal = 2
    goal = harness.tracker.caught_up_count[key] + count
    before = await harness.snapshot(process)
    await harness.patch_all(kind, namespace, count, lambda i: {"spec": kind.change(i)})
    if await harness.wait_count(harness.tracker.caught_up_count, key, goal, timeout, process):
        result.all_s = time.monotonic() - before.at
    await harness.wait_quiet(kind, process)
    delta = Delta(before, await harness.snapshot(process))
    result.ready = harness.tracker.caught_up_count[key] - (goal - count)
    result.k8s_writes = delta.operator_writes(namespace)
    records = harness.upstream_since(kind, before)
    result.upstream = classify(records, kind.list_route)
    patches = [r for r in records if r.method == "PATCH" and r.route == kind.patch_route]
    result.patches = len(patches)
    per_object = Counter(r.path for r in patches)
    result.patched_objects = len(per_object)
    good = {r.path for r in patches if isinstance(r.body, dict) and r.body and set(r.body) <= kind.changed_fields}
    result.only_changed = sum(1 for path, n in per_object.items() if n == 1 and path in good)
    result.bad_bodies = [r.body for r in patches if r.path not in good][:2]
    result.cpu_s = delta.cpu_s
    return result


@dataclass
class Resyncs:
    n: int
    interval: float
    window: float = 0.0
    resyncs: float | None = None  # ours: reconciles counted; baseline: timer GETs
    k8s_writes: int = 0
    upstream: Counter[str] = field(default_factory=Counter)
    cpu_s: float = 0.0  # the process's, over the window: every kind's resyncs together
    all_resyncs: float = 0.0  # every kind's, over the window
    proc: ProcSample | None = None

    @property
    def intervals(self) -> float:
        return self.window / self.interval if self.interval else math.nan

    def per_interval(self, value: float) -> float:
        return value / self.intervals if self.window else math.nan


async def _window(
    harness: Harness, process: Process, kinds: list[tuple[KindSpec, Resyncs]], namespace: str, window: float
) -> None:
    before = await harness.snapshot(process)
    await asyncio.sleep(window)
    delta = Delta(before, await harness.snapshot(process))
    # Writes nobody can be blamed for count against every kind: the target is zero.
    attributed = {k.kind: delta.writes(namespace, k.plural) + delta.events(namespace, k.kind) for k, _ in kinds}
    other = max(0, delta.operator_writes(namespace) - sum(attributed.values()))
    for kind, result in kinds:
        result.window = delta.wall_s
        result.k8s_writes = attributed[kind.kind] + other
        result.upstream = classify(harness.upstream_since(kind, before), kind.list_route)
        counted = delta.reconciles(kind.kind)
        result.resyncs = counted[0] if counted is not None else float(result.upstream["get"])
        result.cpu_s = delta.cpu_s
        result.proc = delta.after.proc
    total = sum(r.resyncs or 0.0 for _, r in kinds)
    for _, result in kinds:
        result.all_resyncs = total


async def measure_resyncs(
    harness: Harness,
    process: Process,
    kinds: list[tuple[KindSpec, int]],
    namespace: str,
    interval: float,
    window: float,
    timeout: float,
) -> list[Resyncs]:
    """Ours: every object gets the resync annotation (``interval``); once the wake-up it causes
    has passed (the reconcile counter grew by N), writes, calls and CPU are counted over ``window``."""
    results = [(kind, Resyncs(n, interval)) for kind, n in kinds]
    start = await harness.snapshot(process)
    annotation = {"metadata": {"annotations": {RESYNC_ANNOTATION: f"{interval:g}"}}}
    for kind, n in kinds:
        await harness.patch_all(kind, namespace, n, lambda i: annotation)
    goals = {kind.kind: float(n) for kind, n in kinds}
    await harness.wait_reconciled(process, goals, start.reconciles, timeout=timeout)
    await asyncio.sleep(min(interval / 2, 1.0))
    await _window(harness, process, [(k, r) for k, r in results], namespace, window)
    return [r for _, r in results]


async def measure_timer_resyncs(
    harness: Harness,
    process: Process,
    kinds: list[tuple[KindSpec, int]],
    namespace: str,
    interval: float,
    window: float,
    timeout: float,
) -> list[Resyncs]:
    """The baseline, started with its timers at ``interval``: each timer fires at once, then every
    interval; once the first round of GETs has been seen (one per object), the same window."""
    results = [(kind, Resyncs(n, interval)) for kind, n in kinds]
    start = await harness.snapshot(process)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        process.check()
        seen = [classify(harness.upstream_since(k, start), k.list_route)["get"] >= n for k, n in kinds]
        if all(seen):
            break
        await asyncio.sleep(0.2)
    await _window(harness, process, [(k, r) for k, r in results], namespace, window)
    return [r for _, r in results]


@dataclass
class Restart:
    mode: str  # "restart" (stop, start again) or "fail-over" (stop the leader; the standby takes over)
    n: int
    kind: KindSpec
    resync_interval: float
    verified_s: float | None = None  # from the old process's SIGTERM to every object reconciled
    stopped_s: float = 0.0  # of which the old process took to exit
    reconciles: float | None = None
    errors: float | None = None
    upstream: Counter[str] = field(default_factory=Counter)
    k8s_writes: int = 0
    lease_writes: int = 0
    cpu_s: float = 0.0
    peak_rss_mb: float = 0.0
    expected_lists: int = 0


async def measure_restart(
    harness: Harness,
    old: Process,
    kind: KindSpec,
    n: int,
    *,
    standby: Process | None,
    start_new: Any,
    resync_interval: float,
    timeout: float,
) -> tuple[Restart, Process]:
    """Stop ``old`` (SIGTERM) with N Ready objects of ``kind``; with ``standby`` it takes over
    (fail-over), else ``start_new()`` starts a fresh process (restart). "Verified" is the new
    process's ``controller_runtime_reconcile_total`` for the kind reaching N: after a start every
    object is reconciled once (spread over min(resync interval, 60 s)), and a reconcile of a
    converged object is its look-up in the upstream listing (engine/shortcut.py), so at that
    moment each has been checked against the upstream. Counted from the SIGTERM to then: upstream
    calls, Kubernetes writes (the Lease apart), the new process's CPU and peak RSS."""
    from benchmarks.workloads import lists_per_interval

    result = Restart("fail-over" if standby is not None else "restart", n, kind, resync_interval)
    result.expected_lists = lists_per_interval(kind, n)
    await harness.wait_quiet(kind, old, quiet=0.5, limit=10)
    before = await harness.snapshot(None)
    stop_at = time.monotonic()
    await old.stop()
    result.stopped_s = time.monotonic() - stop_at
    new = standby if standby is not None else await start_new()
    assert isinstance(new, Process)
    cpu_before = 0.0 if standby is None else new.sample().cpu_s  # a fresh process: all of its CPU
    seen = await harness.wait_reconciled(new, {kind.kind: float(n)}, None, timeout=timeout, poll=0.1)
    if seen is not None:
        result.verified_s = seen - stop_at
    await harness.wait_quiet(kind, new, quiet=1.0, limit=10)
    after = await harness.snapshot(new)
    delta = Delta(before, after)
    if after.reconciles is not None:
        result.reconciles = after.reconciles.of(kind.kind)
        result.errors = after.reconciles.errors.get(kind.kind.lower(), 0.0)
    result.upstream = classify(harness.upstream_since(kind, before), kind.list_route)
    namespaces = [*NAMESPACES, None]
    result.lease_writes = sum(delta.writes(ns, "leases") for ns in namespaces)
    result.k8s_writes = sum(delta.writes(ns) - delta.ours(ns) for ns in namespaces) - result.lease_writes
    result.cpu_s = after.proc.cpu_s - cpu_before
    result.peak_rss_mb = after.proc.hwm_mb
    return result, new


@dataclass
class Idle:
    window: float
    cpu_s: float
    reconciles: float | None
    upstream_calls: int
    k8s_writes: int
    rss_mb: float


async def measure_idle(harness: Harness, process: Process, kind: KindSpec, namespace: str, window: float) -> Idle:
    """A window in which nothing changes and (ours, after creates) no resync is due yet."""
    await harness.wait_quiet(kind, process, quiet=1.0, limit=20)
    before = await harness.snapshot(process)
    await asyncio.sleep(window)
    delta = Delta(before, await harness.snapshot(process))
    counted = delta.reconciles(kind.kind)
    return Idle(
        window=delta.wall_s,
        cpu_s=delta.cpu_s,
        reconciles=counted[0] if counted else None,
        upstream_calls=len(harness.upstream_since(kind, before)),
        k8s_writes=delta.operator_writes(namespace),
        rss_mb=delta.after.proc.rss_mb,
    )


async def measure_steady(
    harness: Harness, process: Process, kind: KindSpec, n: int, namespace: str, interval: float, window: float
) -> Resyncs:
    """A process started with AIGW_RESYNC_INTERVAL = ``interval`` and every object verified once:
    its resyncs from then on, counted over ``window`` (no annotation written, nothing woken)."""
    result = Resyncs(n, interval)
    await _window(harness, process, [(kind, result)], namespace, window)
    return result
