"""Load: 1,000 GatewayEndpoints at once while Baseten answers 5% of requests with a random 5xx and
throttles in periodic 429 bursts. Everything must converge, with exactly one upstream endpoint per
resource, exactly one create sent per resource (plus those an injected error refused unprocessed),
bounded memory, and the operator's request rate within its configured client-side limit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from aigw_operator.base.settings import UpstreamSettings
from aigw_testbed.kubectl import condition, cr_path
from aigw_testbed.simulators.base import Faults
from aigw_testbed.simulators.baseten import BasetenSimulator
from tests.conftest import API_KEY, record_summary
from tests.operator.conftest import KubeEnv, OperatorRunner, make_settings

N = 1000
PLURAL = "gatewayendpoints"
CREATE_ROUTE = "/v1/gateway/endpoints"
CREATE_CONCURRENCY = 50
ERROR_RATE = 0.05
ERROR_STATUSES = (500, 502, 503)
BURST_EVERY = 10.0  # seconds between 429 bursts
BURST_SECONDS = 1.0  # every request within a burst is answered 429
BURST_RETRY_AFTER = 1
# Unthrottled, the operator peaks at about 50 requests/s here (all creates at once): the limit must act.
RATE_LIMIT = 30.0
# UpstreamClient's token bucket holds one request (rate_limit_burst defaults to 1).
BUCKET_BURST = 1
ARRIVAL_JITTER = 2
CONVERGE_TIMEOUT = 80.0
# This process holds the emulator, the simulator and the operator, each with 1,000 objects.
RSS_GROWTH_LIMIT_MB = 300.0


@dataclass
class LoadFaults(Faults):
    """The simulator's faults plus two it lacks: a 5xx for a random share of requests, and 429 for
    every request during a period of time (``rate_limit_burst`` throttles a number of requests, which
    a client that probes one request per Retry-After turns into that many seconds)."""

    error_rate: float = 0.0
    rng: random.Random = field(default_factory=lambda: random.Random(20240601))
    injected: int = 0
    throttled_until: float = 0.0
    throttled: int = 0

    def take_failure(self) -> int | None:
        queued = super().take_failure()
        if queued is not None:
            return queued
        if self.rng.random() < self.error_rate:
            self.injected += 1
            return self.rng.choice(ERROR_STATUSES)
        return None

    def take_throttle(self) -> int | None:
        queued = super().take_throttle()
        if queued is not None:
            return queued
        if time.monotonic() < self.throttled_until:
            self.throttled += 1
            return BURST_RETRY_AFTER
        return None

    def throttle_for(self, seconds: float) -> None:
        self.throttled_until = time.monotonic() + seconds


@dataclass
class Monitor:
    """Peak RSS of this process, and how late this event loop (the simulator's) ran at worst."""

    baseline_mb: float = 0.0
    peak_mb: float = 0.0
    max_lag: float = 0.0

    async def run(self) -> None:
        while True:
            self.peak_mb = max(self.peak_mb, rss_mb())
            for _ in range(10):
                started = time.monotonic()
                await asyncio.sleep(0.02)
                self.max_lag = max(self.max_lag, time.monotonic() - started - 0.02)


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def max_in_window(times: list[float], window: float = 1.0) -> int:
    """The most timestamps within any half-open interval of ``window`` seconds."""
    ordered = sorted(times)
    best, start = 0, 0
    for end, stamp in enumerate(ordered):
        while stamp - ordered[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


def spec(i: int) -> dict[str, Any]:
    # No credentialsSecretRef: the operator's default key, so no Secret read per object.
    return {"slug": f"my-org/load-{i}", "targets": [{"provider": "BASETEN", "modelId": f"m{i % 7}"}]}


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
    """The session logs everything at DEBUG for its canary check. httpcore's per-request traces, httpx,
    kopf and aiohttp's access log would then cost this process more CPU than the operator itself;
    the operator's own loggers stay at DEBUG, so the canary check still sees every line of ours."""
    loggers = [logging.getLogger(name) for name in ("httpcore", "httpx", "kopf", "aiohttp.access")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


@contextlib.asynccontextmanager
async def background(*jobs: Callable[[], Any]) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(job()) for job in jobs]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def list_objects(env: KubeEnv) -> list[dict[str, Any]]:
    response = await env.kube.http.get(cr_path(PLURAL, env.kube.namespace))
    response.raise_for_status()
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def is_ready(obj: dict[str, Any]) -> bool:
    return (condition(obj, "Ready") or {}).get("status") == "True"


def stuck_report(objects: list[dict[str, Any]], sim: BasetenSimulator) -> str:
    """What the objects that are not Ready say, and what Baseten saw lately: for the failure message."""
    reasons = Counter((condition(o, "Synced") or {}).get("reason", "no status yet") for o in objects if not is_ready(o))
    now = time.monotonic()
    recent = Counter((r.method, r.route, r.status) for r in sim.requests if now - r.time <= 20)
    return f"not Ready by Synced reason: {dict(reasons)}; Baseten requests in the last 20s: {dict(recent)}"


async def test_thousand_endpoints_converge_under_faults_and_throttling(
    kube_env: KubeEnv, baseten: BasetenSimulator
) -> None:
    faults = LoadFaults(error_rate=ERROR_RATE)
    baseten.faults = faults
    # Contract checks and CRD admission (CEL) cost milliseconds per request in this process, which the
    # operator's thread shares; the Baseten, kind and admission tests check every exchange.
    baseten.contract_checker = None
    if kube_env.emulator is not None:
        kube_env.emulator.admission = None
    upstream = UpstreamSettings(
        base_url=baseten.url,
        api_key=SecretStr(API_KEY),
        timeout=5.0,
        max_retries=3,
        backoff_base=0.05,
        backoff_cap=0.5,
        max_inline_retry_after=5.0,
        rate_limit_per_second=RATE_LIMIT,
    )
    runner = OperatorRunner(make_settings(kube_env, baseten.url, baseten=upstream))
    monitor = Monitor(baseline_mb=rss_mb(), peak_mb=rss_mb())
    bursts = 0

    async def throttle() -> None:
        nonlocal bursts
        while True:
            await asyncio.sleep(BURST_EVERY)
            faults.throttle_for(BURST_SECONDS)
            bursts += 1

    semaphore = asyncio.Semaphore(CREATE_CONCURRENCY)

    async def create(i: int) -> int:
        async with semaphore:
            response = await kube_env.kube.create("GatewayEndpoint", PLURAL, f"load-{i}", spec(i))
            return response.status_code

    with quiet_libraries():
        await runner.start()
        try:
            started = time.monotonic()
            async with background(throttle, monitor.run):
                statuses = await asyncio.gather(*(create(i) for i in range(N)))
                assert Counter(statuses) == {201: N}
                objects: list[dict[str, Any]] = []
                while time.monotonic() - started < CONVERGE_TIMEOUT:
                    assert runner.thread is not None and runner.thread.is_alive(), f"operator died: {runner.error!r}"
                    await asyncio.sleep(1.0)
                    objects = await list_objects(kube_env)
                    if sum(map(is_ready, objects)) == N:
                        break
                converged = time.monotonic() - started
            alive = runner.thread is not None and runner.thread.is_alive() and runner.error is None
        finally:
            await runner.stop()

    ready = sum(map(is_ready, objects))
    # Upstream objects per resource: Baseten refuses a second endpoint with a slug, so this alone
    # could never show a repeated create; the creates sent per slug can.
    slugs = Counter(e["slug"] for e in baseten.endpoints.values())
    wanted = {spec(i)["slug"] for i in range(N)}
    one_object = sum(1 for slug in wanted if slugs[slug] == 1)
    # Creates sent per resource, whatever their answer: exactly one that could have created
    # something, plus those an injected 5xx or 429 answered unprocessed (the simulator refuses
    # them before any work, so a careful client may send the create again).
    sent = baseten.sent_by_key("POST", CREATE_ROUTE, "slug")
    refused = Counter(
        str(r.body.get("slug"))
        for r in baseten.history
        if r.method == "POST"
        and r.route == CREATE_ROUTE
        and isinstance(r.body, dict)
        and not r.lost
        and r.status is not None
        and (r.status == 429 or r.status >= 500)
    )
    extra = {slug: n - 1 - refused[slug] for slug, n in sent.items() if n != 1 + refused[slug]}
    rate = max_in_window([r.time for r in baseten.requests])
    growth = monitor.peak_mb - monitor.baseline_mb

    assert ready == N, f"{N - ready} of {N} not Ready after {converged:.0f}s; {stuck_report(objects, baseten)}"
    assert alive, f"the operator stopped during the run: {runner.error!r}"

    # The faults really happened, and the operator went through them.
    answered = Counter(r.status for r in baseten.requests)
    errors = sum(n for status, n in answered.items() if status in ERROR_STATUSES)
    assert faults.injected >= N * ERROR_RATE / 2 and errors >= faults.injected, (faults.injected, answered)
    assert bursts >= 2 and faults.throttled >= 2 and answered[429] >= faults.throttled, (bursts, answered)

    # Exactly one upstream endpoint per resource, and it is the one the resource reports.
    assert one_object == N and set(slugs) == wanted, [s for s, n in slugs.items() if n != 1][:10]
    reported = {o["status"]["id"]: o["spec"]["slug"] for o in await list_objects(kube_env)}
    assert reported == {endpoint_id: e["slug"] for endpoint_id, e in baseten.endpoints.items()}
    # Exactly one create per resource that could have created something: none repeated blindly.
    assert set(sent) == wanted, sorted(set(sent) ^ wanted)[:10]
    assert extra == {}, dict(list(extra.items())[:10])

    # The client-side limit as Baseten sees it: requests arriving within any one second. The token
    # bucket lets RATE_LIMIT/s plus its burst through; ARRIVAL_JITTER covers requests this loop stamps
    # a little after they were sent.
    allowed = int(RATE_LIMIT) + BUCKET_BURST + ARRIVAL_JITTER
    assert rate <= allowed, (
        f"{rate} requests within one second; limit {RATE_LIMIT:g}/s, allowed {allowed} "
        f"(this loop ran up to {monitor.max_lag:.2f}s late)"
    )

    assert growth <= RSS_GROWTH_LIMIT_MB, f"RSS grew by {growth:.0f} MB (from {monitor.baseline_mb:.0f} MB)"

    # Recorded once every check above has passed: the line states what was measured and held.
    record_summary(
        "load",
        f"{N} objects, {faults.injected} 5xx + {bursts} 429 bursts injected, converged in {converged:.1f}s, "
        f"upstream objects per resource 1 for {one_object}/{N}, creates sent {sum(sent.values())} for {N} "
        f"resources ({sum(refused.values())} refused unprocessed by an injected 5xx/429, "
        f"{sum(extra.values())} extra), max rate {rate}/s (limit {RATE_LIMIT:g}/s), peak RSS "
        f"{monitor.peak_mb:.0f} MB (+{growth:.0f} MB, bound {RSS_GROWTH_LIMIT_MB:g})",
    )
