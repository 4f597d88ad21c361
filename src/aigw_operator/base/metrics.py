"""Prometheus metrics, named after the conventions operator users already alert on.

Process-wide (prometheus_client's default registry): one operator per process in production.
Label values are bounded: kinds, reasons, upstream names, HTTP methods, route templates (never
URLs with ids) and status codes; the per-resource gauges have one series per live resource and
lose it when the resource is deleted.
"""

from __future__ import annotations

import contextlib
import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import Counter, Gauge, Histogram, start_http_server

RECONCILES = Counter("aigw_reconcile", "Reconciles by kind and result (success, error, requeue).", ["kind", "result"])
RECONCILE_SECONDS = Histogram(
    "aigw_reconcile_duration_seconds",
    "Duration of one reconcile, upstream calls included.",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
RECONCILE_ERRORS = Counter("aigw_reconcile_errors", "Failed reconciles by kind and reason.", ["kind", "reason"])
IN_FLIGHT = Gauge("aigw_reconciles_in_flight", "Reconciles running now.", ["kind"])
# controller-runtime's (client-go's) name, so that existing dashboards show who leads.
LEADER = Gauge("leader_election_master_status", "1 while this process holds the Lease, else 0.", ["name"])
LEADERSHIP_CHANGES = Counter(
    "aigw_leader_election_transitions", "Times this process acquired or lost the Lease.", ["name"]
)
UPSTREAM_REQUESTS = Counter(
    "aigw_upstream_requests",
    "HTTP requests to upstream APIs by route template and status code (code 'none': no response).",
    ["upstream", "method", "route", "code"],
)
UPSTREAM_SECONDS = Histogram(
    "aigw_upstream_request_duration_seconds",
    "Upstream HTTP request latency.",
    ["upstream", "method", "route"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
UPSTREAM_RETRIES = Counter("aigw_upstream_retries", "Upstream requests retried, by reason.", ["upstream", "reason"])
RATE_LIMIT_WAITS = Counter("aigw_upstream_rate_limit_waits", "Waits imposed by an upstream's 429.", ["upstream"])
RATE_LIMIT_WAIT_SECONDS = Counter(
    "aigw_upstream_rate_limit_wait_seconds", "Seconds spent waiting out upstream 429s.", ["upstream"]
)
READY = Gauge("aigw_resource_ready", "1 when the resource's Ready condition is True.", ["kind", "namespace", "name"])
SYNCED = Gauge("aigw_resource_synced", "1 when the resource's Synced condition is True.", ["kind", "namespace", "name"])
TIME_TO_FIRST_READY = Histogram(
    "aigw_time_to_first_ready_seconds",
    "From the resource's creation to its first Ready=True.",
    ["kind"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200),
)
DRIFT_CORRECTIONS = Counter(
    "aigw_drift_corrections", "Upstream changes made outside Kubernetes and reverted.", ["kind"]
)

_server_lock = threading.Lock()
_server: WSGIServer | None = None


def observe_upstream(upstream: str, method: str, route: str, status: int | None, seconds: float) -> None:
    UPSTREAM_REQUESTS.labels(upstream, method, route, str(status) if status is not None else "none").inc()
    UPSTREAM_SECONDS.labels(upstream, method, route).observe(seconds)


def observe_retry(upstream: str, method: str, route: str, reason: str, delay: float) -> None:
    UPSTREAM_RETRIES.labels(upstream, reason).inc()
    if reason == "rate_limited":
        RATE_LIMIT_WAITS.labels(upstream).inc()
        RATE_LIMIT_WAIT_SECONDS.labels(upstream).inc(delay)


def forget_resource(kind: str, namespace: str, name: str) -> None:
    for gauge in (READY, SYNCED):
        with contextlib.suppress(KeyError):
            gauge.remove(kind, namespace, name)


def serve(port: int, address: str = "0.0.0.0") -> int:
    """Serve /metrics once per process; the port actually bound."""
    global _server
    with _server_lock:
        if _server is None:
            _server, _ = start_http_server(port, addr=address)
        return int(_server.server_port)
