"""Measurement: what is read, where, and how it is turned into a figure.

* Times come from the emulator's commit of each object (in-process, no polling): the ADDED
  commit, the first commit carrying our finalizer, the first commit with Ready=True, and the
  first commit whose status reports a given generation (``Tracker``).
* Kubernetes requests come from the emulator's counters by (client, verb, plural, subresource,
  namespace) (``Snapshot.writes``), less the benchmark's own writes, which it counts itself.
* Upstream calls come from each simulator's request records (``classify``).
* CPU and memory of a process come from /proc/<pid> (``proc_sample``), reconciles from the
  operator's ``controller_runtime_reconcile_total`` metric (``scrape_reconciles``).
A phase takes a ``Snapshot`` before and after and subtracts them (``Delta``).
"""

from __future__ import annotations

import math
import os
import re
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import EllipsisType
from typing import Any

import aiohttp
import aiohttp.web
import attrs

from aigw_testbed.emulator.server import JSON, KubeEmulator, ResourceType
from aigw_testbed.simulators.base import RequestRecord

MB = 1024 * 1024
WRITE_VERBS = frozenset({"create", "update", "patch", "delete"})
READ_VERBS = frozenset({"get", "list", "watch"})


def is_ready(status: Any) -> bool:
    if not isinstance(status, dict):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or () if c)


def group(namespace: str, plural: str) -> str:
    """The tracker's key: one kind in one namespace (one operator under test)."""
    return f"{namespace}/{plural}"


class Tracker:
    """Fed by the emulator at every commit: creation, finalizer and first-Ready times per object,
    and Events by (namespace, involved kind)."""

    def __init__(self, plurals: Iterable[str]) -> None:
        self.plurals = frozenset(plurals)
        self.created: dict[str, float] = {}  # uid -> monotonic time of the ADDED commit
        self.ready: dict[str, float] = {}  # uid -> monotonic time of the first commit with Ready=True
        self.group_of: dict[str, str] = {}
        self.ready_count: Counter[str] = Counter()
        # Objects whose status reports generation >= ``generation_goal`` with Ready=True.
        self.generation_goal = 0
        self.caught_up: dict[str, float] = {}
        self.caught_up_count: Counter[str] = Counter()
        self.events: Counter[str] = Counter()  # Events posted, by "<namespace>/<involved kind>"
        self.finalized: dict[str, float] = {}  # uid -> time of the first commit with any finalizer
        self.finalized_count: Counter[str] = Counter()

    def commit(self, plural: str, event_type: str, obj: JSON) -> None:
        now = time.monotonic()
        meta = obj.get("metadata") or {}
        if plural in self.plurals:
            if event_type == "DELETED":
                return
            uid = str(meta.get("uid", ""))
            key = group(str(meta.get("namespace", "")), plural)
            if event_type == "ADDED":
                self.created[uid] = now
                self.group_of[uid] = key
            if meta.get("finalizers") and uid not in self.finalized:
                self.finalized[uid] = now
                self.finalized_count[key] += 1
            status = obj.get("status")
            if not isinstance(status, dict) or not is_ready(status):
                return
            if uid not in self.ready:
                self.ready[uid] = now
                self.ready_count[key] += 1
            generation = int(meta.get("generation") or 0)
            if self.generation_goal and uid not in self.caught_up and generation >= self.generation_goal:
                # Ours reports observedGeneration; the baseline reports nothing of the kind, so a
                # Ready commit after the spec change is all that can be seen of it.
                observed = status.get("observedGeneration")
                if observed is None or observed == generation:
                    self.caught_up[uid] = now
                    self.caught_up_count[key] += 1
        elif plural == "events" and event_type == "ADDED":
            involved = obj.get("involvedObject") or obj.get("regarding") or {}
            self.events[f"{meta.get('namespace', '')}/{involved.get('kind', '')}"] += 1

    def uids(self, key: str, since: float) -> list[str]:
        return [u for u, g in self.group_of.items() if g == key and self.created[u] >= since]


@attrs.define(kw_only=True)
class TrackedEmulator(KubeEmulator):
    """The emulator, reporting each commit to a :class:`Tracker` and timing its request handling."""

    tracker: Tracker | None = None
    busy: float = 0.0  # seconds spent handling non-watch requests (routing, store, JSON)

    def _commit(self, rtype: ResourceType, event_type: str, obj: JSON, prev: JSON | None) -> JSON:
        committed = super()._commit(rtype, event_type, obj, prev)
        if self.tracker is not None:
            self.tracker.commit(rtype.plural, event_type, committed)
        return committed

    async def _dispatch(self, request: Any) -> aiohttp.web.StreamResponse:
        if str(request.params.get("watch")) in ("true", "1"):
            return await super()._dispatch(request)
        started = time.perf_counter()
        try:
            return await super()._dispatch(request)
        finally:
            self.busy += time.perf_counter() - started


# ------------------------------------------------------------------------------ processes


@dataclass(frozen=True)
class ProcSample:
    rss_mb: float
    hwm_mb: float
    cpu_s: float


ZERO = ProcSample(0.0, 0.0, 0.0)


def proc_sample(pid: int | None) -> ProcSample:
    """RSS, peak RSS (VmHWM) and user+system CPU seconds of a process, from /proc."""
    if pid is None:
        return ZERO
    try:
        fields: dict[str, float] = {}
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = float(value.split()[0]) * 1024 / MB
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return ZERO
    rest = stat.rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(rest[11]) + int(rest[12])) / ticks  # utime and stime: fields 14 and 15 of stat(5)
    return ProcSample(fields.get("VmRSS", 0.0), fields.get("VmHWM", 0.0), cpu)


# Per controller (the kind's lowercase name, as controller-runtime names it).
_METRIC_LINE = re.compile(
    r"^(controller_runtime_reconcile_total|controller_runtime_reconcile_time_seconds_sum)"
    r'\{controller="([^"]+)"(?:,result="([^"]+)")?[^}]*\} (\S+)$'
)


@dataclass(frozen=True)
class Reconciles:
    count: dict[str, float]  # per controller, every result
    errors: dict[str, float]  # per controller, result="error"
    seconds: dict[str, float]

    def of(self, kind: str) -> float:
        return self.count.get(kind.lower(), 0.0)


async def scrape_reconciles(http: aiohttp.ClientSession, url: str) -> Reconciles | None:
    """The operator's reconcile counters (None: /metrics did not answer 200)."""
    try:
        async with http.get(url, timeout=aiohttp.ClientTimeout(total=10)) as response:
            if response.status != 200:
                return None
            text = await response.text()
    except (aiohttp.ClientError, TimeoutError):
        return None
    count: dict[str, float] = {}
    errors: dict[str, float] = {}
    seconds: dict[str, float] = {}
    for line in text.splitlines():
        match = _METRIC_LINE.match(line)
        if not match:
            continue
        controller, value = match[2], float(match[4])
        if match[1] == "controller_runtime_reconcile_total":
            count[controller] = count.get(controller, 0.0) + value
            if match[3] == "error":
                errors[controller] = errors.get(controller, 0.0) + value
        else:
            seconds[controller] = seconds.get(controller, 0.0) + value
    return Reconciles(count, errors, seconds)


# ------------------------------------------------------------------------------ snapshots


@dataclass(frozen=True)
class Snapshot:
    """Every counter at one moment; phases subtract two of them."""

    at: float
    access: dict[tuple[str, str, str, str, str | None, str | None], int]
    events: dict[str, int]  # Events posted so far, by "<namespace>/<involved kind>"
    ours: dict[str | None, int]  # writes the benchmark itself sent, by namespace
    upstream: dict[str, int]  # requests each simulator has recorded so far
    proc: ProcSample
    harness_cpu: float
    emulator_busy: float
    reconciles: Reconciles | None

    def writes(
        self, namespace: str | None, plural: str | None = None, subresource: str | EllipsisType | None = ...
    ) -> int:
        """Write requests into ``namespace`` (of ``plural``/``subresource`` if given), anyone's."""
        return sum(
            count
            for (_, verb, _, p, sub, ns), count in self.access.items()
            if verb in WRITE_VERBS
            and ns == namespace
            and (plural is None or p == plural)
            and (subresource is ... or sub == subresource)
        )

    def reads(self, namespace: str | None) -> int:
        return sum(
            count for (_, verb, _, _, _, ns), count in self.access.items() if verb in READ_VERBS and ns == namespace
        )


@dataclass(frozen=True)
class Delta:
    before: Snapshot
    after: Snapshot

    @property
    def wall_s(self) -> float:
        return self.after.at - self.before.at

    @property
    def cpu_s(self) -> float:
        return self.after.proc.cpu_s - self.before.proc.cpu_s

    def ours(self, namespace: str | None) -> int:
        return self.after.ours.get(namespace, 0) - self.before.ours.get(namespace, 0)

    def writes(
        self, namespace: str | None, plural: str | None = None, subresource: str | EllipsisType | None = ...
    ) -> int:
        return self.after.writes(namespace, plural, subresource) - self.before.writes(namespace, plural, subresource)

    def operator_writes(self, namespace: str, *, leases: bool = False) -> int:
        """Writes into the namespace less the benchmark's own; Lease renewals left out unless asked."""
        total = self.writes(namespace) - self.ours(namespace)
        return total if leases else total - self.writes(namespace, "leases")

    def reads(self, namespace: str | None) -> int:
        return self.after.reads(namespace) - self.before.reads(namespace)

    def events(self, namespace: str, kind: str) -> int:
        key = f"{namespace}/{kind}"
        return self.after.events.get(key, 0) - self.before.events.get(key, 0)

    def reconciles(self, kind: str) -> tuple[float, float] | None:
        """(reconciles, seconds spent in them) of ``kind``, from the operator's metrics."""
        first, last = self.before.reconciles, self.after.reconciles
        if first is None or last is None:
            return None
        return (
            last.of(kind) - first.of(kind),
            last.seconds.get(kind.lower(), 0.0) - first.seconds.get(kind.lower(), 0.0),
        )


def classify(records: Sequence[RequestRecord], list_route: str) -> Counter[str]:
    """Upstream requests split into list calls, other reads, and writes."""
    counts: Counter[str] = Counter()
    for record in records:
        if record.method == "GET" and record.route == list_route:
            counts["list"] += 1
        elif record.method in ("GET", "HEAD"):
            counts["get"] += 1
        else:
            counts["write"] += 1
    return counts


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]
