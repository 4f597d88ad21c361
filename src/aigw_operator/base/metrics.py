"""Prometheus metrics, under the names that operator users already have dashboards and alerts for.

- controller-runtime's, per kind's controller (the ``controller`` label is the kind's lowercase
  name, ``gatewayendpoint``): ``controller_runtime_reconcile_total{controller,result}``,
  ``controller_runtime_reconcile_errors_total``, ``controller_runtime_terminal_reconcile_errors_total``,
  ``controller_runtime_reconcile_time_seconds``, ``controller_runtime_active_workers``,
  ``controller_runtime_max_concurrent_reconciles``.
- client-go's work queue, with controller-runtime's labels (``name`` and ``controller``, both the
  controller's name): ``workqueue_depth``, ``workqueue_adds_total``,
  ``workqueue_queue_duration_seconds``, ``workqueue_work_duration_seconds``,
  ``workqueue_retries_total``, ``workqueue_unfinished_work_seconds``,
  ``workqueue_longest_running_processor_seconds``.
- client-go's: ``rest_client_requests_total{code,method,host}`` (the operator's own Kubernetes
  client) and ``leader_election_master_status{name}``.
- Crossplane's, per kind (``gvk``: ``aigw.dev/v1alpha1, Kind=GatewayEndpoint``, as
  apimachinery prints a GroupVersionKind): ``crossplane_managed_resource_exists|ready|synced``
  and ``crossplane_managed_resource_first_time_to_readiness_seconds``.
- ``aigw_`` for what has no convention: upstream requests, retries and 429 waits, reconcile
  failures by reason, resources by condition and reason, drift corrections, leadership changes.

Process-wide (prometheus_client's default registry): one operator per process in production.
Label values are bounded: kinds, reasons, upstream names, HTTP methods, route templates (never
URLs with ids), status codes and hosts. Nothing is per object: the gauges of resources and of
work queues are counted when scraped from the controllers and queues that run, so a resource
that goes, however it goes, is no longer counted, and a stopped controller leaves no series.

Who may read them: every request passes the process's gate first (``set_gate``), which in a
cluster asks the API server (runtime/metrics_access.py: TokenReview, then SubjectAccessReview).
"""

from __future__ import annotations

import collections
import socketserver
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Generic, Protocol, Self, TypeVar
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from aigw_operator import API_VERSION

# controller-runtime's reconcile results: an error (returned, or terminal: not requeued), a
# requeue with backoff, a requeue after a set delay, or done until something changes.
RESULTS = ("success", "error", "requeue", "requeue_after")
# The conditions counted per kind, status and reason in aigw_managed_resources.
CONDITIONS = ("Ready", "Synced")


def controller_name(kind: str) -> str:
    """controller-runtime names a kind's controller after the kind, in lowercase."""
    return kind.lower()


def gvk(kind: str) -> str:
    """Crossplane's ``gvk`` label: apimachinery's ``GroupVersionKind.String()``."""
    return f"{API_VERSION}, Kind={kind}"


def _by_controller(values: tuple[object, ...]) -> tuple[object, ...]:
    return (controller_name(str(values[0])), *values[1:])


# Collectors whose first label is ``controller`` take the kind as callers know it
# (``GatewayEndpoint``, positionally) and export controller-runtime's lowercase name.
class _ControllerCounter(Counter):
    def labels(self, *labelvalues: object) -> Self:  # type: ignore[override]
        return super().labels(*_by_controller(labelvalues))


class _ControllerGauge(Gauge):
    def labels(self, *labelvalues: object) -> Self:  # type: ignore[override]
        return super().labels(*_by_controller(labelvalues))


class _ControllerHistogram(Histogram):
    def labels(self, *labelvalues: object) -> Self:  # type: ignore[override]
        return super().labels(*_by_controller(labelvalues))


# ------------------------------------------------------------------ controller-runtime's

RECONCILES = _ControllerCounter(
    "controller_runtime_reconcile", "Total number of reconciliations per controller", ["controller", "result"]
)
RECONCILE_ERRORS = _ControllerCounter(
    "controller_runtime_reconcile_errors", "Total number of reconciliation errors per controller", ["controller"]
)
TERMINAL_RECONCILE_ERRORS = _ControllerCounter(
    "controller_runtime_terminal_reconcile_errors",
    "Total number of terminal reconciliation errors per controller",
    ["controller"],
)
# Recorded by the loop itself (engine/reconcile.py): it takes the kind.
RECONCILE_SECONDS = _ControllerHistogram(
    "controller_runtime_reconcile_time_seconds",
    "Length of time per reconciliation per controller",
    ["controller"],
    buckets=(
        *(0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
        *(1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5, 6, 7, 8, 9, 10, 15, 20, 25, 30, 40, 50, 60),
    ),
)
IN_FLIGHT = _ControllerGauge(
    "controller_runtime_active_workers", "Number of currently used workers per controller", ["controller"]
)
MAX_CONCURRENT_RECONCILES = _ControllerGauge(
    "controller_runtime_max_concurrent_reconciles",
    "Maximum number of concurrent reconciles per controller",
    ["controller"],
)

# ------------------------------------------------------------------ the work queue (client-go's)

_QUEUE_LABELS = ["name", "controller"]
_QUEUE_BUCKETS = tuple(1e-8 * 10**n for n in range(12))  # client-go's ExponentialBuckets(10e-9, 10, 12)
WORKQUEUE_ADDS = Counter("workqueue_adds", "Total number of adds handled by workqueue", _QUEUE_LABELS)
WORKQUEUE_RETRIES = Counter(
    "workqueue_retries",
    "Total number of items added to the workqueue with a non-zero delay (backoffs, requeues after a delay)",
    _QUEUE_LABELS,
)
WORKQUEUE_QUEUE_SECONDS = Histogram(
    "workqueue_queue_duration_seconds",
    "How long in seconds an item stays in workqueue before being requested",
    _QUEUE_LABELS,
    buckets=_QUEUE_BUCKETS,
)
WORKQUEUE_WORK_SECONDS = Histogram(
    "workqueue_work_duration_seconds",
    "How long in seconds processing an item from workqueue takes.",
    _QUEUE_LABELS,
    buckets=_QUEUE_BUCKETS,
)

# ------------------------------------------------------------------ client-go's

REST_CLIENT_REQUESTS = Counter(
    "rest_client_requests",
    "Number of HTTP requests, partitioned by status code, method, and host.",
    ["code", "method", "host"],
)
# controller-runtime's (client-go's) name, so that existing dashboards show who leads.
LEADER = Gauge("leader_election_master_status", "1 while this process holds the Lease, else 0.", ["name"])
LEADERSHIP_CHANGES = Counter(
    "aigw_leader_election_transitions", "Times this process acquired or lost the Lease.", ["name"]
)

# ------------------------------------------------------------------ Crossplane's

FIRST_TIME_TO_READINESS = Histogram(
    "crossplane_managed_resource_first_time_to_readiness_seconds",
    "The time it took for a managed resource to become ready first time after creation",
    ["gvk"],
    # Crossplane's buckets, below 1 s too: against fast upstreams a first Ready takes less.
    buckets=(0.25, 0.5, 1, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600),
)

# ------------------------------------------------------------------ no convention: aigw_

UPSTREAM_REQUESTS = Counter(
    "aigw_upstream_requests",
    "HTTP requests to upstream APIs by route template and status code (code 'none': no response).",
    ["upstream", "method", "route", "code"],
)
UPSTREAM_SECONDS = Histogram(
    "aigw_upstream_request_duration_seconds",
    "Upstream HTTP request latency by route template and status code (code 'none': no response).",
    ["upstream", "method", "route", "code"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
UPSTREAM_RETRIES = Counter("aigw_upstream_retries", "Upstream requests retried, by reason.", ["upstream", "reason"])
RATE_LIMIT_WAITS = Counter("aigw_upstream_rate_limit_waits", "Waits imposed by an upstream's 429.", ["upstream"])
RATE_LIMIT_WAIT_SECONDS = Counter(
    "aigw_upstream_rate_limit_wait_seconds", "Seconds spent waiting out upstream 429s.", ["upstream"]
)
RECONCILE_FAILURES = _ControllerCounter(
    "aigw_reconcile_failures",
    "Reconciles that reported a failure (Synced=False), by its reason; transient ones included.",
    ["controller", "reason"],
)
DRIFT_CORRECTIONS = _ControllerCounter(
    "aigw_drift_corrections", "Upstream changes made outside Kubernetes and reverted.", ["controller"]
)


# ------------------------------------------------------------------ counted when scraped

T = TypeVar("T")


class _Tracked(Generic[T]):
    """What runs now, for the collectors below; registered and dropped from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[T] = []

    def track(self, item: T) -> Callable[[], None]:
        """Count ``item`` from now on; the function returned stops that."""
        with self._lock:
            self._items.append(item)

        def untrack() -> None:
            with self._lock:
                if item in self._items:
                    self._items.remove(item)

        return untrack

    def __iter__(self) -> Iterator[T]:
        with self._lock:
            return iter(list(self._items))


class QueueState(Protocol):
    """What the work-queue gauges read of a running queue (from the scrape's thread)."""

    name: str

    def active(self) -> bool: ...
    def depth(self) -> int: ...
    def running_seconds(self) -> list[float]: ...


# A running controller's objects: kind -> the conditions of each object of that kind it knows.
ManagedSource = Callable[[], Mapping[str, Iterable[Sequence[Mapping[str, Any]]]]]


class _QueueGauges(Collector):
    """client-go's work-queue gauges, read from the queues that run when scraped."""

    def __init__(self) -> None:
        self.queues: _Tracked[QueueState] = _Tracked()

    def _families(self) -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily("workqueue_depth", "Current depth of workqueue", labels=_QUEUE_LABELS),
            GaugeMetricFamily(
                "workqueue_unfinished_work_seconds",
                "How many seconds of work has been done that is in progress and hasn't been observed by "
                "work_duration. Large values indicate stuck threads.",
                labels=_QUEUE_LABELS,
            ),
            GaugeMetricFamily(
                "workqueue_longest_running_processor_seconds",
                "How many seconds has the longest running processor for workqueue been running.",
                labels=_QUEUE_LABELS,
            ),
        )

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        depth, unfinished, longest = self._families()
        totals: dict[str, tuple[int, float, float]] = {}
        for queue in self.queues:
            if not queue.active():
                continue
            name = controller_name(queue.name)
            running = queue.running_seconds()
            waiting, done, oldest = totals.get(name, (0, 0.0, 0.0))
            totals[name] = (waiting + queue.depth(), done + sum(running), max([oldest, *running]))
        for name, (waiting, done, oldest) in sorted(totals.items()):
            depth.add_metric([name, name], waiting)
            unfinished.add_metric([name, name], done)
            longest.add_metric([name, name], oldest)
        return [depth, unfinished, longest]


class _ManagedResourceGauges(Collector):
    """Crossplane's per-kind gauges, and the same counts by condition and reason, from the
    objects the running controllers know when scraped: nothing per object, nothing stale."""

    def __init__(self) -> None:
        self.sources: _Tracked[ManagedSource] = _Tracked()

    def _families(self) -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                "crossplane_managed_resource_exists", "The number of managed resources that exist", labels=["gvk"]
            ),
            GaugeMetricFamily(
                "crossplane_managed_resource_ready",
                "The number of managed resources in Ready=True state",
                labels=["gvk"],
            ),
            GaugeMetricFamily(
                "crossplane_managed_resource_synced",
                "The number of managed resources in Synced=True state",
                labels=["gvk"],
            ),
            GaugeMetricFamily(
                "aigw_managed_resources",
                "The number of managed resources by condition (Ready, Synced), its status and reason "
                "(status Unknown, reason empty: no such condition yet).",
                labels=["gvk", "condition", "status", "reason"],
            ),
        )

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        exists, ready, synced, by_condition = self._families()
        counts: dict[str, list[int]] = {}
        conditions: collections.Counter[tuple[str, str, str, str]] = collections.Counter()
        for source in self.sources:
            for kind, objects in source().items():
                count = counts.setdefault(kind, [0, 0, 0])
                for found in objects:
                    count[0] += 1
                    for index, type_ in enumerate(CONDITIONS, start=1):
                        condition = next((c for c in found if c.get("type") == type_), None) or {}
                        status = str(condition.get("status") or "Unknown")
                        count[index] += status == "True"
                        conditions[kind, type_, status, str(condition.get("reason") or "")] += 1
        for kind, (total, is_ready, is_synced) in sorted(counts.items()):
            exists.add_metric([gvk(kind)], total)
            ready.add_metric([gvk(kind)], is_ready)
            synced.add_metric([gvk(kind)], is_synced)
        for (kind, type_, status, reason), total in sorted(conditions.items()):
            by_condition.add_metric([gvk(kind), type_, status, reason], total)
        return [exists, ready, synced, by_condition]


QUEUES = _QueueGauges()
MANAGED = _ManagedResourceGauges()
REGISTRY.register(QUEUES)
REGISTRY.register(MANAGED)


# ------------------------------------------------------------------ recording


@dataclass(frozen=True)
class QueueMetrics:
    """One work queue's counters and histograms."""

    adds: Counter
    retries: Counter
    queue_seconds: Histogram
    work_seconds: Histogram


def queue_metrics(queue: str) -> QueueMetrics:
    name = controller_name(queue)
    return QueueMetrics(
        WORKQUEUE_ADDS.labels(name, name),
        WORKQUEUE_RETRIES.labels(name, name),
        WORKQUEUE_QUEUE_SECONDS.labels(name, name),
        WORKQUEUE_WORK_SECONDS.labels(name, name),
    )


def controller_started(kind: str, workers: int) -> None:
    """As controller-runtime does when a controller starts: every series there is from zero."""
    MAX_CONCURRENT_RECONCILES.labels(kind).set(workers)
    IN_FLIGHT.labels(kind).inc(0)
    for result in RESULTS:
        RECONCILES.labels(kind, result).inc(0)
    RECONCILE_ERRORS.labels(kind).inc(0)
    TERMINAL_RECONCILE_ERRORS.labels(kind).inc(0)


def reconciled(kind: str, result: str, *, terminal: bool = False) -> None:
    """One reconcile's result (see RESULTS); a terminal error is one not requeued."""
    RECONCILES.labels(kind, result).inc()
    if result == "error":
        RECONCILE_ERRORS.labels(kind).inc()
        if terminal:
            TERMINAL_RECONCILE_ERRORS.labels(kind).inc()


def observe_kube_request(host: str, method: str, status: int | None) -> None:
    """client-go's code label: the status code, ``<error>`` when no response came."""
    REST_CLIENT_REQUESTS.labels(str(status) if status is not None else "<error>", method, host).inc()


def observe_upstream(upstream: str, method: str, route: str, status: int | None, seconds: float) -> None:
    code = str(status) if status is not None else "none"
    UPSTREAM_REQUESTS.labels(upstream, method, route, code).inc()
    UPSTREAM_SECONDS.labels(upstream, method, route, code).observe(seconds)


def observe_retry(upstream: str, method: str, route: str, reason: str, delay: float) -> None:
    UPSTREAM_RETRIES.labels(upstream, reason).inc()
    if reason == "rate_limited":
        RATE_LIMIT_WAITS.labels(upstream).inc()
        RATE_LIMIT_WAIT_SECONDS.labels(upstream).inc(delay)


# Decides each request before it is served: (method, path, the Authorization header or None) ->
# None to serve it, or the (HTTP status, message) to refuse it with. Called in the server's
# threads, one per request.
Gate = Callable[[str, str, str | None], tuple[int, str] | None]


@dataclass
class _Serving:
    """The process's one metrics server and its gate."""

    lock: threading.Lock
    server: WSGIServer | None = None
    gate: Gate | None = None


_serving = _Serving(threading.Lock())


def set_gate(gate: Gate | None) -> None:
    """Who may read /metrics from now on (None: anyone who can reach the port). Set it before
    ``serve``, so that no request is served before the gate is there."""
    _serving.gate = gate


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No access log: a scrape every few seconds is noise."""


_exposition = make_wsgi_app(REGISTRY)


def _app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    current = _serving.gate
    if current is not None:
        refusal = current(
            str(environ.get("REQUEST_METHOD") or "GET"),
            str(environ.get("PATH_INFO") or "/"),
            environ.get("HTTP_AUTHORIZATION"),
        )
        if refusal is not None:
            status, message = refusal
            headers = [("Content-Type", "text/plain; charset=utf-8"), ("X-Content-Type-Options", "nosniff")]
            if status == HTTPStatus.UNAUTHORIZED:
                headers.append(("WWW-Authenticate", 'Bearer realm="metrics"'))
            start_response(f"{status} {HTTPStatus(status).phrase}", headers)
            return [f"{message}\n".encode()]
    result: Iterable[bytes] = _exposition(environ, start_response)
    return result


def serve(port: int, address: str = "0.0.0.0") -> int:
    """Serve /metrics once per process, behind the gate (``set_gate``); the port actually bound."""
    with _serving.lock:
        if _serving.server is None:
            server = make_server(address, port, _app, _Server, handler_class=_QuietHandler)
            threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
            _serving.server = server
        return int(_serving.server.server_port)
