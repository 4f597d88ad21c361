"""Operator benchmark: latency, API-call economy, memory and CPU of the real operator at scale.

    python -m benchmarks.run                    # N = 100 and 1,000 per kind, then 10,000 GatewayEndpoints
    python -m benchmarks.run --quick            # N = 100 only, no memory run
    python -m benchmarks.run --sizes 100 --kinds GatewayEndpoint,Provider --memory-size 0

The Kubernetes API emulator and the four upstream simulators run in this process (one asyncio
loop); the operator runs as a subprocess (``aigw-operator run``) configured by ``AIGW_*``
variables, as in production. Every figure is measured: timestamps are taken in-process when the
emulator commits an object (creation, and the first write that makes Ready=True), Kubernetes
writes come from the emulator's request counters and its commit log, upstream calls from the
simulators' request records (bodies included), resyncs from the operator's own
``controller_runtime_reconcile_total`` metric, RSS and CPU from ``/proc/<pid>``. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import pstats
import re
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import EllipsisType, TracebackType
from typing import Any, Self

import aiohttp
import aiohttp.web
import attrs

from aigw_operator import API_VERSION, GROUP, VERSION
from aigw_operator.base.api import RESYNC_ANNOTATION
from aigw_operator.crds import all_crds
from aigw_operator.upstreams import baseten as baseten_api
from aigw_operator.upstreams import ngrok as ngrok_api
from aigw_testbed.emulator.admission import admit
from aigw_testbed.emulator.server import JSON, KubeEmulator, KubeEmulatorServer, ResourceType
from aigw_testbed.simulators.base import RequestRecord, SimulatorServer
from aigw_testbed.simulators.baseten import BasetenSimulator
from aigw_testbed.simulators.model_registry import ModelRegistrySimulator
from aigw_testbed.simulators.ngrok import NgrokSimulator
from aigw_testbed.simulators.together import TogetherSimulator

NAMESPACE = "bench"
BASETEN_KEY = "bench-baseten-key"
NGROK_KEY = "bench-ngrok-key"
REGISTRY_KEY = "bench-registry-key"
TOGETHER_KEY = "bench-together-key"
OPENAI_SECRET = "openai-credentials"
UPSTREAM_SETTINGS = ("baseten", "ngrok", "model_registry", "together")
MB = 1024 * 1024

# Targets (the issue's numbers). Each is checked against a measured figure and printed PASS/FAIL.
MAX_WRITES_PER_CREATE = 3
MAX_UPSTREAM_CALLS_PER_CREATE = 2
MAX_P50_MS = 250.0
MAX_P99_MS = 1000.0
LATENCY_TARGET_N = 100  # "with 100 concurrent creates"
ALL_READY_TARGET_N = 1000
MAX_ALL_READY_S = 60.0
RSS_TARGETS_MB = {1000: 150.0, 10_000: 400.0}


# ------------------------------------------------------------------------------------------ kinds


@dataclass(frozen=True)
class KindSpec:
    """One kind as the benchmark drives it: valid specs, a one-field change, upstream routes."""

    kind: str
    plural: str
    prefix: str  # object names: <prefix>-<i>
    upstream: str  # which simulator serves it
    list_route: str
    patch_route: str
    page_size: int | None  # None: the list call is not paged
    spec: Callable[[int], JSON]
    change: Callable[[int], JSON]  # a merge patch of the spec changing one field
    changed_fields: frozenset[str]  # what the upstream PATCH may carry for that change


KINDS: tuple[KindSpec, ...] = (
    KindSpec(
        kind="GatewayEndpoint",
        plural="gatewayendpoints",
        prefix="gwe",
        upstream="baseten",
        list_route=baseten_api.ENDPOINTS,
        patch_route=baseten_api.ENDPOINT,
        page_size=baseten_api.PAGE_SIZE,
        spec=lambda i: {"slug": f"my-org/bench-{i}", "targets": [{"provider": "BASETEN", "modelId": "3kZ9xqd"}]},
        change=lambda i: {"targets": [{"provider": "BASETEN", "modelId": "7pQ4wrt"}]},
        changed_fields=frozenset({"targets"}),
    ),
    KindSpec(
        kind="Provider",
        plural="providers",
        prefix="prov",
        upstream="ngrok",
        list_route=ngrok_api.PROVIDERS,
        patch_route=ngrok_api.PROVIDER,
        page_size=ngrok_api.PAGE_SIZE,
        spec=lambda i: {
            "providerId": f"bench-{i}",
            "name": f"Bench {i}",
            "baseUrl": "http://vllm.internal",
            "models": ["llama-3-8b"],
        },
        change=lambda i: {"name": f"Bench {i} v2"},
        changed_fields=frozenset({"name"}),
    ),
    KindSpec(
        kind="Model",
        plural="models",
        prefix="model",
        upstream="registry",
        list_route="/api/v1/models/",
        patch_route="/api/v1/models/{name}",
        page_size=None,
        spec=lambda i: {
            "dtype": "openai",
            "configuration": {"model": "gpt-4o", "apiKeySecretRef": {"name": OPENAI_SECRET}},
            "summary": "benchmark model",
            "tags": ["bench"],
        },
        change=lambda i: {"summary": "benchmark model v2"},
        changed_fields=frozenset({"summary"}),
    ),
    KindSpec(
        kind="DedicatedEndpoint",
        plural="dedicatedendpoints",
        prefix="dep",
        upstream="together",
        list_route="/v1/endpoints",
        patch_route="/v1/endpoints/{id}",
        page_size=None,
        spec=lambda i: {
            "model": "meta-llama/Llama-3-8b-chat-hf",
            "hardware": "1x_nvidia_h100_80gb_sxm",
            "autoscaling": {"minReplicas": 1, "maxReplicas": 2},
        },
        change=lambda i: {"autoscaling": {"minReplicas": 1, "maxReplicas": 3}},
        changed_fields=frozenset({"autoscaling"}),
    ),
)
KINDS_BY_NAME = {k.kind.lower(): k for k in KINDS}


# ------------------------------------------------------------------------ in-process observation


def _ready(status: Any) -> bool:
    if not isinstance(status, dict):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or () if c)


class Tracker:
    """Fed by the emulator at every commit: creation and first-Ready times, and Events by kind."""

    def __init__(self, plurals: Iterable[str]) -> None:
        self.plurals = frozenset(plurals)
        self.created: dict[str, float] = {}  # uid -> monotonic time of the ADDED commit
        self.ready: dict[str, float] = {}  # uid -> monotonic time of the first commit with Ready=True
        self.plural_of: dict[str, str] = {}
        self.ready_count: Counter[str] = Counter()
        # Objects whose status reports generation >= ``generation_goal`` with Ready=True.
        self.generation_goal = 0
        self.caught_up: dict[str, float] = {}
        self.caught_up_count: Counter[str] = Counter()
        self.events: Counter[str] = Counter()  # Events posted, by involved object's kind
        self.finalized: dict[str, float] = {}  # uid -> time of the commit that added our finalizer
        self.finalized_count: Counter[str] = Counter()

    def commit(self, plural: str, event_type: str, obj: JSON) -> None:
        now = time.monotonic()
        if plural in self.plurals:
            if event_type == "DELETED":
                return
            meta = obj.get("metadata") or {}
            uid = str(meta.get("uid", ""))
            if event_type == "ADDED":
                self.created[uid] = now
                self.plural_of[uid] = plural
            if meta.get("finalizers") and uid not in self.finalized:
                self.finalized[uid] = now
                self.finalized_count[plural] += 1
            status = obj.get("status")
            if not isinstance(status, dict) or not _ready(status):
                return
            if uid not in self.ready:
                self.ready[uid] = now
                self.ready_count[plural] += 1
            generation = int(meta.get("generation") or 0)
            if (
                self.generation_goal
                and uid not in self.caught_up
                and generation >= self.generation_goal
                and status.get("observedGeneration") == generation
            ):
                self.caught_up[uid] = now
                self.caught_up_count[plural] += 1
        elif plural == "events" and event_type == "ADDED":
            involved = obj.get("involvedObject") or obj.get("regarding") or {}
            self.events[str(involved.get("kind", ""))] += 1


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


# ------------------------------------------------------------------------------ the operator


@dataclass(frozen=True)
class ProcSample:
    rss_mb: float
    hwm_mb: float
    cpu_s: float


def proc_sample(pid: int) -> ProcSample:
    """RSS, peak RSS (VmHWM) and user+system CPU seconds of a process, from /proc."""
    fields: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = float(value.split()[0]) * 1024 / MB
    stat = Path(f"/proc/{pid}/stat").read_text()
    rest = stat.rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(rest[11]) + int(rest[12])) / ticks  # utime and stime: fields 14 and 15 of stat(5)
    return ProcSample(fields.get("VmRSS", 0.0), fields.get("VmHWM", 0.0), cpu)


# Per controller (the kind's lowercase name, as controller-runtime names it).
_METRIC_LINE = re.compile(
    r"^(controller_runtime_reconcile_total|controller_runtime_reconcile_time_seconds_sum)"
    r'\{controller="([^"]+)"[^}]*\} (\S+)$'
)


@dataclass(frozen=True)
class Reconciles:
    count: dict[str, float]
    seconds: dict[str, float]


class OperatorDied(RuntimeError):
    pass


class OperatorProcess:
    """``aigw-operator run`` as a subprocess, its log in a temp file."""

    def __init__(self, env: dict[str, str], metrics_port: int, profile: Path | None) -> None:
        self.env = env
        self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        self.profile = profile
        self.process: asyncio.subprocess.Process | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="aigw-bench-operator-", suffix=".log", delete=False)  # noqa: SIM115
        self.log_path = Path(self._log.name)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(self) -> None:
        args = ["-m", "aigw_operator.cli", "run"]
        if self.profile is not None:
            args = ["-m", "cProfile", "-o", str(self.profile), *args]
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, *args, env=self.env, stdout=self._log, stderr=self._log
        )

    def check(self) -> None:
        if self.process is not None and self.process.returncode is not None:
            raise OperatorDied(f"the operator exited with code {self.process.returncode}")

    def sample(self) -> ProcSample:
        return proc_sample(self.pid)

    async def reconciles(self, http: aiohttp.ClientSession) -> Reconciles | None:
        try:
            async with http.get(self.metrics_url, timeout=aiohttp.ClientTimeout(total=10)) as response:
                text = await response.text()
        except (aiohttp.ClientError, TimeoutError):
            return None
        count: dict[str, float] = {}
        seconds: dict[str, float] = {}
        for line in text.splitlines():
            match = _METRIC_LINE.match(line)
            if match:
                target = count if match[1] == "controller_runtime_reconcile_total" else seconds
                target[match[2]] = target.get(match[2], 0.0) + float(match[3])
        return Reconciles(count, seconds)

    def tail(self, lines: int = 40) -> str:
        self._log.flush()
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    async def stop(self) -> None:
        process = self.process
        if process is not None and process.returncode is None:
            process.terminate()
            # kopf lets each daemon finish its reconcile (up to 60s); the profile is written at exit.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), 90 if self.profile is not None else 20)
            if process.returncode is None:
                process.kill()
                await process.wait()
        self._log.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------------- the harness


@dataclass(frozen=True)
class Snapshot:
    """Every counter at one moment; phases subtract two of them."""

    at: float
    counters: dict[tuple[str, str, str | None], int]
    events: dict[str, int]  # Events posted so far, by involved kind
    ours: int  # writes the benchmark itself sent
    upstream: dict[str, int]  # requests each simulator has recorded so far
    proc: ProcSample
    harness_cpu: float
    emulator_busy: float
    reconciles: Reconciles | None

    def writes(self, plural: str | None = None, subresource: str | EllipsisType | None = ...) -> int:
        return sum(
            count
            for (verb, p, sub), count in self.counters.items()
            if verb in _WRITE_VERBS and (plural is None or p == plural) and (subresource is ... or sub == subresource)
        )

    def reads(self) -> int:
        return sum(count for (verb, _, _), count in self.counters.items() if verb in ("get", "list", "watch"))


_WRITE_VERBS = frozenset({"create", "update", "patch", "delete"})


@dataclass(frozen=True)
class Delta:
    before: Snapshot
    after: Snapshot

    @property
    def wall_s(self) -> float:
        return self.after.at - self.before.at

    @property
    def ours(self) -> int:
        return self.after.ours - self.before.ours

    def writes(self, plural: str | None = None, subresource: str | EllipsisType | None = ...) -> int:
        return self.after.writes(plural, subresource) - self.before.writes(plural, subresource)

    def operator_writes(self) -> int:
        """Every write the emulator received, minus the benchmark's own."""
        return self.writes() - self.ours

    def events(self, kind: str) -> int:
        return self.after.events.get(kind, 0) - self.before.events.get(kind, 0)

    def reconciles(self, kind: str) -> tuple[float, float] | None:
        """(reconciles, seconds spent in them) of ``kind``, from the operator's metrics."""
        first, last = self.before.reconciles, self.after.reconciles
        if first is None or last is None:
            return None
        return (
            last.count.get(kind.lower(), 0.0) - first.count.get(kind.lower(), 0.0),
            last.seconds.get(kind.lower(), 0.0) - first.seconds.get(kind.lower(), 0.0),
        )

    def cost(self, kind: str) -> PhaseCost:
        counted = self.reconciles(kind)
        return PhaseCost(
            wall_s=self.wall_s,
            operator_cpu_s=self.after.proc.cpu_s - self.before.proc.cpu_s,
            harness_cpu_s=self.after.harness_cpu - self.before.harness_cpu,
            emulator_busy_s=self.after.emulator_busy - self.before.emulator_busy,
            reconciles=counted[0] if counted else None,
            reconcile_s=counted[1] if counted else None,
        )


@dataclass
class PhaseCost:
    wall_s: float = 0.0
    operator_cpu_s: float = 0.0
    harness_cpu_s: float = 0.0  # this process: emulator, simulators, the benchmark's own client
    emulator_busy_s: float = 0.0
    reconciles: float | None = None
    reconcile_s: float | None = None


@dataclass
class KindResult:
    kind: KindSpec
    n: int
    ready: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    finalizer_ms: list[float] = field(default_factory=list)  # create -> finalizer added (kopf's share)
    all_ready_s: float | None = None
    create_errors: int = 0
    writes_object: int = 0
    writes_status: int = 0
    writes_events: int = 0
    writes_other: int = 0
    k8s_reads: int = 0
    upstream: Counter[str] = field(default_factory=Counter)  # list / get / write
    create_cost: PhaseCost = field(default_factory=PhaseCost)
    rss_after: ProcSample | None = None
    # Spec change of ``change_n`` objects.
    change_n: int = 0
    changed_ready: int = 0
    change_patches: int = 0
    change_patched_objects: int = 0
    change_only_changed: int = 0
    change_k8s_writes: int = 0
    change_upstream: Counter[str] = field(default_factory=Counter)
    change_bad_bodies: list[Any] = field(default_factory=list)
    change_s: float | None = None
    # No-op resyncs.
    resync_interval: float = 0.0
    resync_window: float = 0.0
    resyncs: float | None = None
    resyncs_estimated: bool = False
    resync_k8s_writes: int = 0
    resync_upstream: Counter[str] = field(default_factory=Counter)

    @property
    def writes_per_create(self) -> float:
        total = self.writes_object + self.writes_status + self.writes_events + self.writes_other
        return total / max(self.n, 1)


def classify(records: Sequence[RequestRecord], list_route: str) -> Counter[str]:
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


class Harness:
    """Emulator and simulators in this process, the real operator as a subprocess."""

    def __init__(self, args: argparse.Namespace, label: str) -> None:
        self.args = args
        self.label = label
        self.tracker = Tracker(k.plural for k in KINDS)
        self.emulator = TrackedEmulator(
            admission=admit if args.admission else None,
            # Deep enough that a watcher behind by one phase's events is not cut off (410 + relist).
            history_limit=200_000,
            watch_queue_limit=200_000,
        )
        self.emulator.tracker = self.tracker
        self.sims: dict[str, SimulatorServer] = {
            "baseten": BasetenSimulator(api_keys=[BASETEN_KEY]),
            "ngrok": NgrokSimulator(api_keys=[NGROK_KEY]),
            "registry": ModelRegistrySimulator(admin_key=REGISTRY_KEY),
            # Start-up is instant: the benchmark measures the operator, not Together's GPUs.
            "together": TogetherSimulator(
                api_keys=[TOGETHER_KEY],
                pending_seconds=0.0,
                starting_seconds=0.0,
                stopping_seconds=0.0,
                scaling_seconds=0.0,
            ),
        }
        self.server = KubeEmulatorServer(self.emulator)
        self.stack = contextlib.AsyncExitStack()
        self.http: aiohttp.ClientSession | None = None
        self.operator: OperatorProcess | None = None
        self.ours = 0  # writes the benchmark itself sent to the emulator

    # -------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> Self:
        try:
            await self._start()
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def _start(self) -> None:
        await self.stack.enter_async_context(self.server)
        for sim in self.sims.values():
            await self.stack.enter_async_context(sim)
        connector = aiohttp.TCPConnector(limit=max(self.args.concurrency, self.args.memory_concurrency, 10))
        self.http = await self.stack.enter_async_context(aiohttp.ClientSession(connector=connector))
        for crd in all_crds():
            self.emulator.register_crd(crd)
        await self._post(
            "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
        )
        await self._post(
            f"/api/v1/namespaces/{NAMESPACE}/secrets",
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": OPENAI_SECRET, "namespace": NAMESPACE},
                "stringData": {"apiKey": "sk-bench-not-a-real-key"},
            },
        )
        port = free_port()
        profile = Path(f"{self.args.profile}.{self.label}") if self.args.profile else None
        self.operator = OperatorProcess(self._operator_env(port), port, profile)
        await self.operator.start()
        await self._wait_watching()

    def _operator_env(self, metrics_port: int) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIGW_")}
        env.update(
            AIGW_KUBE_API_URL=self.server.url,
            AIGW_BASETEN__BASE_URL=self.sims["baseten"].url,
            AIGW_BASETEN__API_KEY=BASETEN_KEY,
            AIGW_NGROK__BASE_URL=self.sims["ngrok"].url,
            AIGW_NGROK__API_KEY=NGROK_KEY,
            AIGW_MODEL_REGISTRY__BASE_URL=f"{self.sims['registry'].url}/api/v1",
            AIGW_MODEL_REGISTRY__API_KEY=REGISTRY_KEY,
            AIGW_TOGETHER__BASE_URL=f"{self.sims['together'].url}/v1",
            AIGW_TOGETHER__API_KEY=TOGETHER_KEY,
            AIGW_LOG_LEVEL="WARNING",
            AIGW_METRICS_PORT=str(metrics_port),
            AIGW_NAMESPACES=f'["{NAMESPACE}"]',
            # The benchmark's namespace may spend the default keys, as the operator's own would.
            AIGW_OPERATOR_NAMESPACE=NAMESPACE,
        )
        if not self.args.production_rate_limits:
            # The figures are the operator's, not a vendor quota's: no client-side limits.
            for name in UPSTREAM_SETTINGS:
                env[f"AIGW_{name.upper()}__RATE_LIMIT_PER_SECOND"] = "null"
        return env

    async def _wait_watching(self) -> None:
        """Until the operator watches the four kinds and Secrets, then a moment for kopf to settle."""
        operator = self.require_operator()
        deadline = time.monotonic() + 60
        while self.emulator.open_watches < 5:
            operator.check()
            if time.monotonic() > deadline:
                raise OperatorDied(f"the operator opened {self.emulator.open_watches} watches in 60s, expected 5")
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.operator is not None:
            await self.operator.stop()
            if self.operator.profile is not None and self.operator.profile.exists():
                print_profile(self.operator.profile, self.label)
        await self.stack.aclose()

    def require_operator(self) -> OperatorProcess:
        if self.operator is None:
            raise RuntimeError("the operator is not running")
        return self.operator

    # -------------------------------------------------------------- Kubernetes requests

    def _session(self) -> aiohttp.ClientSession:
        if self.http is None:
            raise RuntimeError("the harness is not started")
        return self.http

    async def _post(self, path: str, body: JSON) -> int:
        async with self._session().post(self.server.url + path, json=body) as response:
            await response.read()
            self.ours += 1
            return response.status

    async def _merge_patch(self, path: str, body: JSON) -> int:
        headers = {"Content-Type": "application/merge-patch+json"}
        async with self._session().patch(self.server.url + path, json=body, headers=headers) as response:
            await response.read()
            self.ours += 1
            return response.status

    @staticmethod
    def _path(kind: KindSpec, name: str | None = None) -> str:
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{NAMESPACE}/{kind.plural}"
        return f"{path}/{name}" if name else path

    @staticmethod
    async def _bounded(count: int, concurrency: int, one: Callable[[int], Awaitable[int]]) -> int:
        """Run ``one(i)`` for every i with at most ``concurrency`` in flight; returns how many failed."""
        failures = 0
        indexes = iter(range(count))

        async def worker() -> None:
            nonlocal failures
            for i in indexes:
                if await one(i) >= 300:
                    failures += 1

        await asyncio.gather(*(worker() for _ in range(min(concurrency, count))))
        return failures

    async def create(self, kind: KindSpec, count: int, concurrency: int) -> int:
        def body(i: int) -> JSON:
            return {
                "apiVersion": API_VERSION,
                "kind": kind.kind,
                "metadata": {"name": f"{kind.prefix}-{i}", "namespace": NAMESPACE},
                "spec": kind.spec(i),
            }

        return await self._bounded(count, concurrency, lambda i: self._post(self._path(kind), body(i)))

    async def patch_all(self, kind: KindSpec, count: int, body: Callable[[int], JSON]) -> int:
        return await self._bounded(
            count,
            self.args.concurrency,
            lambda i: self._merge_patch(self._path(kind, f"{kind.prefix}-{i}"), body(i)),
        )

    # -------------------------------------------------------------- observing

    async def snapshot(self) -> Snapshot:
        operator = self.require_operator()
        return Snapshot(
            at=time.monotonic(),
            counters=self.emulator.counters(),
            events=dict(self.tracker.events),
            ours=self.ours,
            upstream={name: len(sim.requests) for name, sim in self.sims.items()},
            proc=operator.sample(),
            harness_cpu=time.process_time(),
            emulator_busy=self.emulator.busy,
            reconciles=await operator.reconciles(self._session()),
        )

    def upstream_since(self, kind: KindSpec, snapshot: Snapshot) -> list[RequestRecord]:
        return self.sims[kind.upstream].requests[snapshot.upstream[kind.upstream] :]

    async def wait_quiet(self, kind: KindSpec | None, quiet: float = 1.0, limit: float = 20.0) -> None:
        """Until neither the emulator nor (with ``kind``) its simulator got a request for ``quiet`` seconds."""
        operator = self.require_operator()

        def signature() -> tuple[int, int]:
            upstream = len(self.sims[kind.upstream].requests) if kind is not None else 0
            return self.emulator.writes(), upstream

        last, since, started = signature(), time.monotonic(), time.monotonic()
        while time.monotonic() - started < limit:
            await asyncio.sleep(0.1)
            operator.check()
            current = signature()
            if current != last:
                last, since = current, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return

    async def wait_count(self, counter: Counter[str], plural: str, goal: int, timeout: float) -> bool:
        operator = self.require_operator()
        deadline = time.monotonic() + timeout
        while counter[plural] < goal:
            operator.check()
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def wait_reconciled(self, goals: dict[str, float], since: Reconciles | None, timeout: float) -> None:
        """Until the operator's reconcile counter of each kind grew by its goal (when it can be read)."""
        operator = self.require_operator()
        if since is None:
            await asyncio.sleep(min(timeout, 5.0))
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            now = await operator.reconciles(self._session())
            if now is None or all(
                now.count.get(k.lower(), 0.0) - since.count.get(k.lower(), 0.0) >= g for k, g in goals.items()
            ):
                return
            operator.check()
            await asyncio.sleep(0.2)

    # -------------------------------------------------------------- phases

    async def measure_creates(self, kind: KindSpec, n: int, concurrency: int, timeout: float) -> KindResult:
        result = KindResult(kind, n)
        await self.wait_quiet(None, quiet=0.5, limit=10)
        before = await self.snapshot()
        goal = self.tracker.ready_count[kind.plural] + n
        started = time.monotonic()
        result.create_errors = await self.create(kind, n, concurrency)
        left = timeout - (time.monotonic() - started)
        if await self.wait_count(self.tracker.ready_count, kind.plural, goal, left):
            last = max(t for u, t in self.tracker.ready.items() if self.tracker.plural_of.get(u) == kind.plural)
            result.all_ready_s = last - started
        await self.wait_quiet(kind)
        delta = Delta(before, await self.snapshot())
        tracker = self.tracker
        uids = [u for u, p in tracker.plural_of.items() if p == kind.plural and tracker.created[u] >= started]
        result.latencies_ms = [(tracker.ready[u] - tracker.created[u]) * 1000 for u in uids if u in tracker.ready]
        result.ready = len(result.latencies_ms)
        result.finalizer_ms = [
            (tracker.finalized[u] - tracker.created[u]) * 1000 for u in uids if u in tracker.finalized
        ]
        result.writes_object = delta.writes(kind.plural, None) - delta.ours  # our own writes: the n creates
        result.writes_status = delta.writes(kind.plural, "status")
        result.writes_events = delta.events(kind.kind)
        attributed = result.writes_object + result.writes_status + result.writes_events
        # Whatever else the operator wrote meanwhile (other kinds are idle) counts against this kind.
        result.writes_other = max(0, delta.operator_writes() - attributed)
        result.k8s_reads = delta.after.reads() - delta.before.reads()
        result.upstream = classify(self.upstream_since(kind, before), kind.list_route)
        result.create_cost = delta.cost(kind.kind)
        result.rss_after = delta.after.proc
        return result

    async def measure_change(self, result: KindResult, count: int, timeout: float) -> None:
        kind = result.kind
        result.change_n = count
        await self.wait_quiet(kind, quiet=0.5, limit=10)
        self.tracker.generation_goal = 2
        goal = self.tracker.caught_up_count[kind.plural] + count
        before = await self.snapshot()
        await self.patch_all(kind, count, lambda i: {"spec": kind.change(i)})
        if await self.wait_count(self.tracker.caught_up_count, kind.plural, goal, timeout):
            result.change_s = time.monotonic() - before.at
        await self.wait_quiet(kind)
        delta = Delta(before, await self.snapshot())
        result.changed_ready = self.tracker.caught_up_count[kind.plural] - (goal - count)
        result.change_k8s_writes = delta.operator_writes()
        records = self.upstream_since(kind, before)
        result.change_upstream = classify(records, kind.list_route)
        patches = [r for r in records if r.method == "PATCH" and r.route == kind.patch_route]
        result.change_patches = len(patches)
        per_object = Counter(r.path for r in patches)
        result.change_patched_objects = len(per_object)
        good = {r.path for r in patches if isinstance(r.body, dict) and r.body and set(r.body) <= kind.changed_fields}
        result.change_only_changed = sum(1 for path, n in per_object.items() if n == 1 and path in good)
        result.change_bad_bodies = [r.body for r in patches if r.path not in good][:3]

    async def measure_resyncs(self, results: Sequence[KindResult], interval: float, window: float) -> None:
        """No-op resyncs of every object at once: the resync annotation set low, then a counted window."""
        for result in results:
            result.resync_interval, result.resync_window = interval, window
        start = await self.snapshot()
        annotation = {"metadata": {"annotations": {RESYNC_ANNOTATION: f"{interval:g}"}}}
        for result in results:
            await self.patch_all(result.kind, result.n, lambda i: annotation)
        # The annotation wakes every object once: those reconciles pass before the window opens.
        goals = {r.kind.kind: float(r.n) for r in results}
        await self.wait_reconciled(goals, start.reconciles, timeout=max(10.0, budget_left() - window - 30))
        await asyncio.sleep(min(interval / 2, 1.0))
        before = await self.snapshot()
        await asyncio.sleep(window)
        delta = Delta(before, await self.snapshot())
        attributed = {r.kind.kind: delta.writes(r.kind.plural) + delta.events(r.kind.kind) for r in results}
        other = max(0, delta.operator_writes() - sum(attributed.values()))
        for result in results:
            counted = delta.reconciles(result.kind.kind)
            if counted is not None:
                result.resyncs = counted[0]
            else:
                result.resyncs, result.resyncs_estimated = result.n * window / interval, True
            # Writes nobody can be blamed for count against every kind: the target is zero.
            result.resync_k8s_writes = attributed[result.kind.kind] + other
            result.resync_upstream = classify(self.upstream_since(result.kind, before), result.kind.list_route)


def print_profile(path: Path, label: str) -> None:
    """Where the operator's CPU went, by package, and its top functions by own time."""
    stats = pstats.Stats(str(path))
    by_package: Counter[str] = Counter()
    idle = 0.0
    raw: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    for (filename, _, name), (_, _, tottime, _, _) in raw.items():
        if "poll" in name and "epoll" in name:
            idle += tottime
            continue
        by_package[_package(filename, name)] += tottime
    busy = sum(by_package.values())
    print(f"\n--- operator profile ({label}): {busy:.1f}s busy, {idle:.1f}s idle in epoll; full profile: {path}")
    for package, seconds in by_package.most_common(12):
        print(f"  {seconds:7.2f}s {seconds / busy:6.1%}  {package}")
    stats.sort_stats("tottime").print_stats(15)


def _package(filename: str, name: str) -> str:
    if "site-packages/" in filename:
        return filename.split("site-packages/", 1)[1].split("/", 1)[0]
    if "/aigw_operator/" in filename:
        return "aigw_operator." + filename.rsplit("/aigw_operator/", 1)[1].removesuffix(".py").replace("/", ".")
    if filename.startswith("<frozen"):
        return filename.strip("<>").replace("frozen ", "")
    if filename == "~":
        return f"built-in: {name}"
    return "stdlib: " + Path(filename).stem


# ------------------------------------------------------------------------------------ report


@dataclass
class Cell:
    text: str
    ok: bool | None = None  # None: no target applies

    def render(self) -> str:
        if self.ok is None:
            return self.text
        return f"{self.text} {'PASS' if self.ok else 'FAIL'}"


@dataclass
class Section:
    title: str
    columns: list[str]
    rows: list[tuple[str, str, list[Cell]]] = field(default_factory=list)

    def add(self, metric: str, target: str, cells: list[Cell]) -> None:
        self.rows.append((metric, target, cells))

    def render(self) -> str:
        header = ["metric", "target", *self.columns]
        table = [header] + [[m, t, *(c.render() for c in cells)] for m, t, cells in self.rows]
        widths = [max(len(row[i]) for row in table if i < len(row)) for i in range(len(header))]
        lines = [f"== {self.title}"]
        for index, row in enumerate(table):
            lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
            if index == 0:
                lines.append("  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def failures(self) -> list[str]:
        return [
            f"{self.title.split(' (')[0]}: {metric} [{self.columns[i]}] = {cell.text} (target {target})"
            for metric, target, cells in self.rows
            for i, cell in enumerate(cells)
            if cell.ok is False
        ]


def _num(value: float | None, digits: int = 2) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:.{digits}f}"


def _per(value: float, count: float | None) -> float | None:
    return value / count if count else None


def _split(counts: Counter[str], n: float | None, digits: int = 2) -> str:
    return " / ".join(_num(_per(counts[k], n), digits) for k in ("list", "get", "write"))


def _lat(r: KindResult, p: float, limit: float | None) -> tuple[str, bool | None]:
    value = percentile(r.latencies_ms, p)
    if limit is None:
        return _num(value, 0), None
    return _num(value, 0), (not math.isnan(value) and value <= limit and r.ready == r.n)


def _lists(r: KindResult) -> str:
    if not r.resync_window:
        return "n/a"
    intervals = r.resync_window / r.resync_interval
    expected = math.ceil(r.n / r.kind.page_size) if r.kind.page_size else 1
    return f"{r.resync_upstream['list'] / intervals:.1f} ({expected})"


def size_section(n: int, results: list[KindResult], args: argparse.Namespace) -> Section:
    first = results[0]
    section = Section(
        f"N = {n} per kind ({min(n, args.concurrency)} concurrent creates; spec change of {first.change_n} per kind; "
        f"no-op resyncs of all {n * len(results)} objects at interval {first.resync_interval:g}s "
        f"over {first.resync_window:g}s)",
        [r.kind.kind for r in results],
    )
    latency_target = n == LATENCY_TARGET_N

    def row(metric: str, target: str, value: Callable[[KindResult], tuple[str, bool | None]]) -> None:
        section.add(metric, target, [Cell(*value(r)) for r in results])

    row("objects Ready / created", "all", lambda r: (f"{r.ready}/{r.n}", r.ready == r.n and r.create_errors == 0))
    row(
        "create->Ready p50 (ms)",
        f"<= {MAX_P50_MS:g}" if latency_target else "-",
        lambda r: _lat(r, 50, MAX_P50_MS if latency_target else None),
    )
    row("create->Ready p95 (ms)", "-", lambda r: _lat(r, 95, None))
    row(
        "  of which create->finalizer p50 / p99 (ms)",
        "-",
        lambda r: (f"{_num(percentile(r.finalizer_ms, 50), 0)} / {_num(percentile(r.finalizer_ms, 99), 0)}", None),
    )
    row(
        "create->Ready p99 (ms)",
        f"<= {MAX_P99_MS:g}" if latency_target else "-",
        lambda r: _lat(r, 99, MAX_P99_MS if latency_target else None),
    )
    all_ready_target = n == ALL_READY_TARGET_N
    row(
        "time until all N Ready (s)",
        f"<= {MAX_ALL_READY_S:g} (GatewayEndpoint)" if all_ready_target else "-",
        lambda r: (
            _num(r.all_ready_s, 1),
            (r.all_ready_s is not None and r.all_ready_s <= MAX_ALL_READY_S)
            if all_ready_target and r.kind.kind == "GatewayEndpoint"
            else None,
        ),
    )
    row("k8s writes/create: object patches", "-", lambda r: (_num(r.writes_object / r.n), None))
    row("k8s writes/create: status patches", "-", lambda r: (_num(r.writes_status / r.n), None))
    row("k8s writes/create: Events", "-", lambda r: (_num(r.writes_events / r.n), None))
    row("k8s writes/create: other", "-", lambda r: (_num(r.writes_other / r.n), None))
    row(
        "k8s writes/create: total",
        f"<= {MAX_WRITES_PER_CREATE}",
        lambda r: (_num(r.writes_per_create), r.writes_per_create <= MAX_WRITES_PER_CREATE),
    )
    row("k8s reads/create", "-", lambda r: (_num(r.k8s_reads / r.n), None))
    row(
        "upstream calls/create",
        f"<= {MAX_UPSTREAM_CALLS_PER_CREATE}",
        lambda r: (
            _num(sum(r.upstream.values()) / r.n),
            sum(r.upstream.values()) / r.n <= MAX_UPSTREAM_CALLS_PER_CREATE,
        ),
    )
    row("  list / get / write", "-", lambda r: (_split(r.upstream, r.n), None))
    row("operator CPU ms/create", "-", lambda r: (_num(r.create_cost.operator_cpu_s * 1000 / r.n, 1), None))
    row(
        "operator mean reconcile (ms)",
        "-",
        lambda r: (_num(_per((r.create_cost.reconcile_s or 0) * 1000, r.create_cost.reconciles), 0), None),
    )
    row("reconciles/create", "-", lambda r: (_num(_per(r.create_cost.reconciles or 0, r.n)), None))
    row("create phase wall (s)", "-", lambda r: (_num(r.create_cost.wall_s, 1), None))
    row("  operator CPU/wall", "-", lambda r: (_num(_per(r.create_cost.operator_cpu_s, r.create_cost.wall_s)), None))
    row(
        "  harness CPU/wall (emulator+sims)",
        "-",
        lambda r: (_num(_per(r.create_cost.harness_cpu_s, r.create_cost.wall_s)), None),
    )
    row(
        "  emulator handlers/wall",
        "-",
        lambda r: (_num(_per(r.create_cost.emulator_busy_s, r.create_cost.wall_s)), None),
    )
    rss_target = RSS_TARGETS_MB.get(n)
    section.add(
        "operator RSS after this kind's creates (MB)",
        f"<= {rss_target:g} at {n} objects" if rss_target else "-",
        [
            Cell(
                _num(r.rss_after.rss_mb if r.rss_after else None, 1) + f" @{(i + 1) * n}",
                (r.rss_after is not None and r.rss_after.rss_mb <= rss_target) if rss_target and i == 0 else None,
            )
            for i, r in enumerate(results)
        ],
    )
    row("operator peak RSS so far (MB)", "-", lambda r: (_num(r.rss_after.hwm_mb if r.rss_after else None, 1), None))
    row("operator CPU s so far", "-", lambda r: (_num(r.rss_after.cpu_s if r.rss_after else None, 1), None))
    row(
        "spec change: objects Ready at generation 2",
        "all",
        lambda r: (f"{r.changed_ready}/{r.change_n}", r.change_n > 0 and r.changed_ready == r.change_n),
    )
    row("spec change: all Ready after (s)", "-", lambda r: (_num(r.change_s, 1), None))
    row(
        "upstream PATCH/spec change",
        "== 1",
        lambda r: (
            _num(_per(r.change_patches, r.change_n)),
            r.change_n > 0 and r.change_patches == r.change_n == r.change_patched_objects,
        ),
    )
    row(
        "objects with 1 PATCH of the changed field only",
        "all",
        lambda r: (f"{r.change_only_changed}/{r.change_n}", r.change_n > 0 and r.change_only_changed == r.change_n),
    )
    row("upstream calls/spec change", "-", lambda r: (_num(_per(sum(r.change_upstream.values()), r.change_n)), None))
    row("  list / get / write", "-", lambda r: (_split(r.change_upstream, r.change_n), None))
    row("k8s writes/spec change", "-", lambda r: (_num(_per(r.change_k8s_writes, r.change_n)), None))
    row(
        "no-op resyncs counted",
        "-",
        lambda r: (_num(r.resyncs, 0) + (" (est.)" if r.resyncs_estimated else ""), None),
    )
    row(
        "k8s writes/no-op resync",
        "0",
        lambda r: (_num(_per(r.resync_k8s_writes, r.resyncs), 3), bool(r.resyncs) and r.resync_k8s_writes == 0),
    )
    row(
        "upstream writes/no-op resync",
        "0",
        lambda r: (
            _num(_per(r.resync_upstream["write"], r.resyncs), 3),
            bool(r.resyncs) and r.resync_upstream["write"] == 0,
        ),
    )
    row("upstream calls/no-op resync", "-", lambda r: (_num(_per(sum(r.resync_upstream.values()), r.resyncs), 3), None))
    row("  list / get / write", "-", lambda r: (_split(r.resync_upstream, r.resyncs, 3), None))
    row("list calls/resync interval (ceil(N/page))", "-", lambda r: (_lists(r), None))
    return section


# -------------------------------------------------------------------------------------- runs

_STARTED = time.monotonic()
_BUDGET = [600.0]


def elapsed() -> float:
    return time.monotonic() - _STARTED


def budget_left() -> float:
    return _BUDGET[0] - elapsed()


def log(message: str) -> None:
    print(f"[{elapsed():6.1f}s] {message}", flush=True)


async def run_size(args: argparse.Namespace, kinds: Sequence[KindSpec], n: int) -> Section:
    concurrency = min(n, args.concurrency)
    total = n * len(kinds)
    # About 500 no-op resyncs a second at most, so the window measures resyncs, not a saturated loop.
    interval = max(2.0, total / 500)
    window = max(2 * interval, args.resync_window)
    change_n = min(n, args.change_sample) if args.change_sample else n
    results: list[KindResult] = []
    async with Harness(args, f"n{n}") as harness:
        operator = harness.require_operator()
        try:
            for kind in kinds:
                log(f"N={n}: creating {n} {kind.kind} ({concurrency} at a time)")
                timeout = min(args.timeout or 30 + 0.15 * n, max(budget_left() - 60, 10.0))
                result = await harness.measure_creates(kind, n, concurrency, timeout)
                results.append(result)
                log(
                    f"  {result.ready}/{n} Ready, all in {_num(result.all_ready_s, 1)}s, "
                    f"p50 {_num(percentile(result.latencies_ms, 50), 0)} ms"
                )
            for result in results:
                log(f"N={n}: spec change of {change_n} {result.kind.kind}")
                timeout = min(args.timeout or 30 + 0.15 * change_n, max(budget_left() - 60, 10.0))
                await harness.measure_change(result, change_n, timeout)
            log(f"N={n}: no-op resyncs of all {total} objects every {interval:g}s, counted over {window:g}s")
            await harness.measure_resyncs(results, interval, window)
        except OperatorDied as exc:
            print(f"{exc}; its log ends with:\n{operator.tail()}")
            raise
        section = size_section(n, results, args)
        tail = operator.tail(25)
        if section.failures() and tail.strip():
            print(f"--- operator log tail (N={n}; {operator.log_path}):\n{tail}\n")
        for result in results:
            if result.change_bad_bodies:
                print(f"{result.kind.kind}: PATCH bodies beyond the changed field, e.g. {result.change_bad_bodies}")
    return section


async def run_memory(args: argparse.Namespace, n: int) -> Section:
    kind = KINDS_BY_NAME["gatewayendpoint"]
    section = Section(f"memory: {n} GatewayEndpoints ({args.memory_concurrency} concurrent creates)", [kind.kind])
    async with Harness(args, f"mem{n}") as harness:
        operator = harness.require_operator()
        log(f"memory: creating {n} GatewayEndpoints ({budget_left():.0f}s of the budget left)")
        before = await harness.snapshot()
        started = time.monotonic()
        failures = await harness.create(kind, n, args.memory_concurrency)
        created_s = time.monotonic() - started
        timeout = min(args.timeout or 60 + 0.1 * n, max(budget_left() - 20, 10.0))
        ready = await harness.wait_count(harness.tracker.ready_count, kind.plural, n, timeout - created_s)
        ready_s = time.monotonic() - started
        if ready:
            await harness.wait_quiet(kind, limit=10)
        delta = Delta(before, await harness.snapshot())
        count = harness.tracker.ready_count[kind.plural]
        log(f"  {count}/{n} Ready after {ready_s:.1f}s")
        proc = delta.after.proc
        target = RSS_TARGETS_MB.get(n)
        section.add("objects Ready / created", "all", [Cell(f"{count}/{n}", ready and failures == 0)])
        section.add("all POSTs accepted after (s)", "-", [Cell(_num(created_s, 1))])
        section.add("time until all Ready (s)", "-", [Cell(_num(ready_s if ready else None, 1))])
        section.add(
            f"operator RSS with {count} Ready (MB)",
            f"<= {target:g} at {n}" if target else "-",
            [Cell(_num(proc.rss_mb, 1), (ready and proc.rss_mb <= target) if target else None)],
        )
        section.add("operator peak RSS (MB)", "-", [Cell(_num(proc.hwm_mb, 1))])
        growth_mb = _per(proc.rss_mb - before.proc.rss_mb, n)
        section.add(
            f"operator RSS growth per object, {n} watched (KB)",
            "-",
            [Cell(_num(growth_mb * 1024 if growth_mb is not None else None, 1))],
        )
        section.add(
            "objects with the finalizer (kopf got to them)",
            "-",
            [Cell(f"{harness.tracker.finalized_count[kind.plural]}/{n}")],
        )
        cost = delta.cost(kind.kind)
        section.add("operator CPU ms per Ready object", "-", [Cell(_num(_per(cost.operator_cpu_s * 1000, count), 1))])
        section.add("operator CPU/wall", "-", [Cell(_num(_per(cost.operator_cpu_s, cost.wall_s)))])
        section.add("harness CPU/wall (emulator+sims)", "-", [Cell(_num(_per(cost.harness_cpu_s, cost.wall_s)))])
        section.add("emulator handlers/wall", "-", [Cell(_num(_per(cost.emulator_busy_s, cost.wall_s)))])
        section.add("k8s writes per object", "-", [Cell(_num(_per(delta.operator_writes(), n)))])
        if not ready:
            print(f"--- operator log tail (memory run; {operator.log_path}):\n{operator.tail(25)}\n")
    return section


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--sizes", default="100,1000", help="objects per kind, comma-separated (default 100,1000)")
    parser.add_argument(
        "--memory-size", type=int, default=10_000, help="GatewayEndpoints of the memory-only run; 0 skips it"
    )
    parser.add_argument("--kinds", default=",".join(k.kind for k in KINDS), help="comma-separated kinds")
    parser.add_argument("--quick", action="store_true", help="N = 100 only, no memory run")
    parser.add_argument("--concurrency", type=int, default=100, help="creates in flight at once (default 100)")
    parser.add_argument("--memory-concurrency", type=int, default=50, help="creates in flight in the memory run")
    parser.add_argument(
        "--change-sample",
        type=int,
        default=200,
        help="objects per kind whose spec is changed (default 200, all when N is smaller; 0: all)",
    )
    parser.add_argument(
        "--resync-window", type=float, default=4.0, help="seconds of no-op resyncs counted (at least 2 intervals)"
    )
    parser.add_argument("--timeout", type=float, default=0.0, help="seconds to wait for Ready per phase (0: by N)")
    parser.add_argument(
        "--budget",
        type=float,
        default=600.0,
        help="seconds the whole benchmark may take (default 600); later waits are cut to fit, and FAIL",
    )
    parser.add_argument(
        "--production-rate-limits",
        action="store_true",
        help="keep the operator's default client-side rate limits (ngrok 1.5/s, Baseten 50/s, Together 5/s); "
        "default: none, to measure the operator against zero-latency simulators",
    )
    parser.add_argument("--admission", action="store_true", help="run the emulator's CRD schema and CEL admission")
    parser.add_argument("--profile", help="cProfile the operator; pstats files go to PROFILE.<run>")
    parser.add_argument("--no-fail", action="store_true", help="exit 0 even when a target fails")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes = "100"
        args.memory_size = 0
    return args


async def main_async(args: argparse.Namespace) -> int:
    _BUDGET[0] = args.budget
    names = [k.strip().lower() for k in args.kinds.split(",") if k.strip()]
    unknown = [k for k in names if k not in KINDS_BY_NAME]
    if unknown or not names:
        raise SystemExit(f"unknown kinds {unknown}; known: {', '.join(k.kind for k in KINDS)}")
    kinds = [KINDS_BY_NAME[k] for k in names]
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    print(
        f"aigw-operator benchmark: N = {sizes} per kind ({', '.join(k.kind for k in kinds)}), memory run "
        f"{args.memory_size or 'off'}; client-side rate limits "
        f"{'production defaults' if args.production_rate_limits else 'off'}; emulator admission "
        f"{'on' if args.admission else 'off'}; {os.cpu_count()} CPUs; budget {args.budget:g}s",
        flush=True,
    )
    sections: list[Section] = []
    for n in sizes:
        sections.append(await run_size(args, kinds, n))
        print("\n" + sections[-1].render() + "\n", flush=True)
    if args.memory_size:
        sections.append(await run_memory(args, args.memory_size))
        print("\n" + sections[-1].render() + "\n", flush=True)
    wall = elapsed()
    total = Section("benchmark", ["value"])
    total.add("total wall time (s)", f"<= {args.budget:g}", [Cell(f"{wall:.1f}", wall <= args.budget)])
    sections.append(total)
    print("================ summary ================\n")
    for section in sections:
        print(section.render() + "\n")
    failures = [f for s in sections for f in s.failures()]
    if failures:
        print(f"{len(failures)} target(s) failed:")
        for failure in failures:
            print(f"  FAIL {failure}")
    else:
        print("all targets met")
    return 1 if failures and not args.no_fail else 0


def main(argv: Sequence[str] | None = None) -> int:
    return asyncio.run(main_async(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
