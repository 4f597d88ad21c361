"""The harness: the Kubernetes API emulator and the four upstream simulators in this process
(one asyncio loop), and each operator under test as a subprocess of its own: ours
(``aigw-operator run``, configured by ``AIGW_*`` variables as in production), the naive
baseline (``kopf run benchmarks/baseline.py``) and the floor client (``benchmarks.floor``).
Each watches a namespace of its own, so they share the emulator and the simulators, and are run
one after another, never at once: what one costs is not paid by another's CPU."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Self

import aiohttp

from aigw_operator import API_VERSION, GROUP, VERSION
from aigw_operator.crds import all_crds
from aigw_testbed.emulator.admission import admit
from aigw_testbed.emulator.server import JSON, KubeEmulatorServer
from aigw_testbed.simulators.base import RequestRecord, SimulatorServer
from aigw_testbed.simulators.baseten import BasetenSimulator
from aigw_testbed.simulators.model_registry import ModelRegistrySimulator
from aigw_testbed.simulators.ngrok import NgrokSimulator
from aigw_testbed.simulators.together import TogetherSimulator
from benchmarks.measure import (
    ProcSample,
    Reconciles,
    Snapshot,
    TrackedEmulator,
    Tracker,
    proc_sample,
    scrape_reconciles,
)
from benchmarks.profile import print_profile
from benchmarks.workloads import (
    BASELINE_NAMESPACE,
    BASETEN_KEY,
    KINDS,
    NAMESPACE,
    NAMESPACES,
    NGROK_KEY,
    OPENAI_SECRET,
    REGISTRY_KEY,
    TAGS,
    TOGETHER_KEY,
    UPSTREAM_SETTINGS,
    KindSpec,
)

ROOT = Path(__file__).resolve().parent.parent


class OperatorDied(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Process:
    """One operator under test as a subprocess, its log in a temp file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], metrics_port: int | None = None) -> None:
        self.name = name
        self.args = args
        self.env = env
        self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics" if metrics_port else None
        self.process: asyncio.subprocess.Process | None = None
        self.profile: Path | None = None
        self._log = tempfile.NamedTemporaryFile(prefix=f"aigw-bench-{name}-", suffix=".log", delete=False)  # noqa: SIM115
        self.log_path = Path(self._log.name)
        self.started_at = 0.0

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    async def start(self) -> None:
        self.started_at = time.monotonic()
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, *self.args, env=self.env, stdout=self._log, stderr=self._log, cwd=ROOT
        )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def check(self) -> None:
        if self.process is not None and self.process.returncode is not None:
            raise OperatorDied(f"{self.name} exited with code {self.process.returncode}:\n{self.tail()}")

    def sample(self) -> ProcSample:
        return proc_sample(self.pid if self.running else None)

    def tail(self, lines: int = 40) -> str:
        self._log.flush()
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    async def stop(self, timeout: float = 20.0) -> ProcSample:
        """SIGTERM, wait (kopf lets each reconcile in flight finish), SIGKILL after ``timeout``;
        returns the last sample taken before the process exits."""
        process = self.process
        last = self.sample()
        if process is not None and process.returncode is None:
            process.terminate()
            deadline = time.monotonic() + (90 if self.profile is not None else timeout)
            while process.returncode is None and time.monotonic() < deadline:
                sample = self.sample()
                if sample.cpu_s:
                    last = sample
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(process.wait(), 0.1)
            if process.returncode is None:
                process.kill()
                await process.wait()
        self._log.close()
        if self.profile is not None and self.profile.exists():
            print_profile(self.profile, self.name)
        return last


class Harness:
    """Emulator and simulators in this process; the operators under test as subprocesses."""

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
        self.processes: list[Process] = []
        self.ours: Counter[str | None] = Counter()  # writes the benchmark itself sent, by namespace
        self._profiles = 0

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
        for namespace in NAMESPACES:
            await self._post(
                "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
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

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for process in self.processes:
            if process.running:
                await process.stop()
        await self.stack.aclose()

    # -------------------------------------------------------------- the operators under test

    def ours_env(self, metrics_port: int, **extra: str) -> dict[str, str]:
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
            # Loopback, read by this process only.
            AIGW_METRICS_AUTH="none",
            AIGW_NAMESPACES=f'["{NAMESPACE}"]',
            # The benchmark's namespace may spend the default keys, as the operator's own would.
            AIGW_OPERATOR_NAMESPACE=NAMESPACE,
        )
        if not self.args.production_rate_limits:
            # The figures are the operator's, not a vendor quota's: no client-side limits.
            for name in UPSTREAM_SETTINGS:
                env[f"AIGW_{name.upper()}__RATE_LIMIT_PER_SECOND"] = "null"
        env.update(extra)
        return env

    @staticmethod
    def leader_env(identity: str) -> dict[str, str]:
        return {
            "AIGW_LEADER_ELECTION__ENABLED": "true",
            "AIGW_LEADER_ELECTION__LEASE_NAMESPACE": NAMESPACE,
            "AIGW_LEADER_ELECTION__IDENTITY": identity,
        }

    async def start_ours(self, name: str, *, wait: bool = True, env: dict[str, str] | None = None) -> Process:
        """Our operator; ``wait``: until it watches the four kinds and Secrets (not for a standby)."""
        port = free_port()
        args = ["-m", "aigw_operator.cli", "run"]
        profile = None
        if self.args.profile:
            self._profiles += 1
            profile = Path(f"{self.args.profile}.{self.label}.{name}")
            args = ["-m", "cProfile", "-o", str(profile), *args]
        process = Process(name, args, self.ours_env(port, **(env or {})), port)
        process.profile = profile
        await self._launch(process, watches=5 if wait else 0)
        return process

    async def start_baseline(self, interval: float) -> Process:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIGW_")}
        env.update(self._naive_env(), BENCH_INTERVAL=f"{interval:g}")
        args = ["-m", "kopf", "run", str(ROOT / "benchmarks" / "baseline.py"), "--standalone"]
        process = Process("baseline", [*args, "--namespace", BASELINE_NAMESPACE], env)
        await self._launch(process, watches=2)  # GatewayEndpoints and Providers
        return process

    async def start_floor(self, kind: KindSpec, namespace: str, client: str = "aiohttp") -> Process:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIGW_")}
        env.update(self._naive_env())
        args = ["-m", "benchmarks.floor", "--kind", kind.kind, "--namespace", namespace, "--client", client]
        process = Process(f"floor-{client}-{kind.plural}", args, env)
        await self._launch(process, watches=1)
        return process

    def _naive_env(self) -> dict[str, str]:
        return {
            "BENCH_KUBE_URL": self.server.url,
            "BENCH_BASETEN_URL": self.sims["baseten"].url,
            "BENCH_BASETEN_KEY": BASETEN_KEY,
            "BENCH_NGROK_URL": self.sims["ngrok"].url,
            "BENCH_NGROK_KEY": NGROK_KEY,
        }

    async def _launch(self, process: Process, watches: int) -> None:
        before = self.emulator.open_watches
        self.processes.append(process)
        await process.start()
        deadline = time.monotonic() + 60
        while self.emulator.open_watches < before + watches:
            process.check()
            if time.monotonic() > deadline:
                raise OperatorDied(f"{process.name} opened {self.emulator.open_watches - before} watches in 60s")
            await asyncio.sleep(0.05)
        # A moment for kopf to settle (its initial listings answered).
        await asyncio.sleep(0.5 if watches else 1.0)

    # -------------------------------------------------------------- Kubernetes requests

    def session(self) -> aiohttp.ClientSession:
        if self.http is None:
            raise RuntimeError("the harness is not started")
        return self.http

    def _count(self, path: str) -> None:
        parts = path.split("/")
        namespace = parts[parts.index("namespaces") + 1] if "namespaces" in parts[:-1] else None
        self.ours[namespace] += 1

    async def _post(self, path: str, body: JSON) -> int:
        async with self.session().post(self.server.url + path, json=body) as response:
            await response.read()
            self._count(path)
            return response.status

    async def _merge_patch(self, path: str, body: JSON) -> int:
        headers = {"Content-Type": "application/merge-patch+json"}
        async with self.session().patch(self.server.url + path, json=body, headers=headers) as response:
            await response.read()
            self._count(path)
            return response.status

    @staticmethod
    def path(kind: KindSpec, namespace: str, name: str | None = None) -> str:
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{kind.plural}"
        return f"{path}/{name}" if name else path

    @staticmethod
    async def bounded(count: int, concurrency: int, one: Callable[[int], Awaitable[int]]) -> int:
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

    async def create(self, kind: KindSpec, namespace: str, count: int, concurrency: int) -> int:
        tag = TAGS[namespace]

        def body(i: int) -> JSON:
            return {
                "apiVersion": API_VERSION,
                "kind": kind.kind,
                "metadata": {"name": f"{kind.prefix}-{i}", "namespace": namespace},
                "spec": kind.spec(i, tag),
            }

        return await self.bounded(count, concurrency, lambda i: self._post(self.path(kind, namespace), body(i)))

    async def patch_all(self, kind: KindSpec, namespace: str, count: int, body: Callable[[int], JSON]) -> int:
        return await self.bounded(
            count,
            self.args.concurrency,
            lambda i: self._merge_patch(self.path(kind, namespace, f"{kind.prefix}-{i}"), body(i)),
        )

    # -------------------------------------------------------------- observing

    async def snapshot(self, process: Process | None) -> Snapshot:
        reconciles = None
        if process is not None and process.metrics_url and process.running:
            reconciles = await scrape_reconciles(self.session(), process.metrics_url)
        return Snapshot(
            at=time.monotonic(),
            access=self.emulator.access(),
            events=dict(self.tracker.events),
            ours=dict(self.ours),
            upstream={name: len(sim.requests) for name, sim in self.sims.items()},
            proc=process.sample() if process is not None else proc_sample(None),
            harness_cpu=time.process_time(),
            emulator_busy=self.emulator.busy,
            reconciles=reconciles,
        )

    async def reconciles(self, process: Process) -> Reconciles | None:
        if process.metrics_url is None or not process.running:
            return None
        return await scrape_reconciles(self.session(), process.metrics_url)

    def upstream_since(self, kind: KindSpec, snapshot: Snapshot) -> list[RequestRecord]:
        return self.sims[kind.upstream].requests[snapshot.upstream[kind.upstream] :]

    async def wait_quiet(
        self, kind: KindSpec | None, process: Process | None, quiet: float = 1.0, limit: float = 20.0
    ) -> None:
        """Until neither the emulator (Lease renewals aside) nor (with ``kind``) its simulator
        got a request for ``quiet`` seconds."""

        def signature() -> tuple[int, int]:
            upstream = len(self.sims[kind.upstream].requests) if kind is not None else 0
            return self.emulator.writes() - self.emulator.writes("leases"), upstream

        last, since, started = signature(), time.monotonic(), time.monotonic()
        while time.monotonic() - started < limit:
            await asyncio.sleep(0.1)
            if process is not None:
                process.check()
            current = signature()
            if current != last:
                last, since = current, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return

    async def wait_count(self, counter: Counter[str], key: str, goal: int, timeout: float, process: Process) -> bool:
        deadline = time.monotonic() + timeout
        while counter[key] < goal:
            process.check()
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def wait_reconciled(
        self, process: Process, goals: dict[str, float], since: Reconciles | None, timeout: float, poll: float = 0.2
    ) -> float | None:
        """Until the operator's reconcile counter of each kind grew by its goal; the monotonic
        time it was seen so (None: not within ``timeout``, or the metrics could not be read)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            now = await self.reconciles(process)
            if now is None:
                process.check()
                await asyncio.sleep(poll)
                continue
            base = since.count if since is not None else {}
            if all(now.of(k) - base.get(k.lower(), 0.0) >= g for k, g in goals.items()):
                return time.monotonic()
            process.check()
            await asyncio.sleep(poll)
        return None
