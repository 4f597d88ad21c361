"""Shared fixtures: the Kubernetes API (emulator, or a real cluster with AIGW_TEST_KUBECONFIG),
the Baseten simulator, and the real kopf operator running in-process against both."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from aigw_operator.crds import all_crds
from aigw_operator.operator import run
from aigw_operator.settings import Settings, UpstreamSettings
from aigw_operator.simulators.admission import admit
from aigw_operator.simulators.base import SimulatorServer
from aigw_operator.simulators.baseten import BasetenSimulator
from aigw_operator.simulators.kubectl import Kube
from aigw_operator.simulators.kubernetes import KubeEmulator, KubeEmulatorServer
from aigw_operator.simulators.model_registry import ModelRegistrySimulator
from aigw_operator.simulators.ngrok import NgrokSimulator
from aigw_operator.simulators.together import TogetherSimulator

REPO = Path(__file__).resolve().parents[1]
API_KEY = "bt-test-key-4d1c9a"
NGROK_KEY = "ngrok-test-key-93be11"
REGISTRY_KEY = "registry-admin-key-5521ab"
OPENAI_KEY = "sk-canary-openai-key-0f3e9d"
TOGETHER_KEY = "together-test-key-6c02d4"


@dataclass
class KubeEnv:
    kube: Kube
    # Set for the emulator; None against a real cluster (the operator then uses the kubeconfig).
    url: str | None
    emulator: KubeEmulator | None


@pytest.fixture
async def kube_env() -> AsyncIterator[KubeEnv]:
    kubeconfig = os.environ.get("AIGW_TEST_KUBECONFIG")
    if kubeconfig:
        async with _real_cluster(kubeconfig) as env:
            yield env
        return
    emulator = KubeEmulator(admission=admit)
    async with KubeEmulatorServer(emulator) as server, httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        kube = Kube(http, namespace="test")
        await kube.ensure_namespace("test")
        for crd in all_crds():
            await kube.apply_crd(crd)
        yield KubeEnv(kube=kube, url=server.url, emulator=emulator)
        await _scan_for_canaries(http)


async def _scan_for_canaries(http: httpx.AsyncClient) -> None:
    """No key may reach an Event or a status (or anywhere else in a custom resource)."""
    paths = ["/api/v1/events"] + [
        f"/apis/{c['spec']['group']}/v1alpha1/{c['spec']['names']['plural']}" for c in all_crds()
    ]
    for path in paths:
        items = (await http.get(path)).json().get("items", [])
        key = "events" if path.endswith("/events") else "resources"
        _scanned[key] += len(items)
        for item in items:
            text = json.dumps(item)
            leaked = [c[:6] for c in CANARIES if c in text]
            _scanned["leaks"] += len(leaked)
            assert not leaked, f"{path}: a key ({leaked}...) is in {item.get('metadata', {}).get('name')}"


@contextlib.asynccontextmanager
async def _real_cluster(kubeconfig: str) -> AsyncIterator[KubeEnv]:
    from kubernetes import client, config

    configuration = client.Configuration()
    config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    headers = {}
    # The client's loader has stored the token under either name, depending on its version.
    token = configuration.api_key.get("authorization") or configuration.api_key.get("BearerToken")
    if token:
        headers["Authorization"] = token if token.startswith("Bearer ") else f"Bearer {token}"
    cert = (configuration.cert_file, configuration.key_file) if configuration.cert_file else None
    verify: Any = configuration.ssl_ca_cert or configuration.verify_ssl
    os.environ["KUBECONFIG"] = kubeconfig
    namespace = f"aigw-test-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(base_url=configuration.host, headers=headers, verify=verify, cert=cert) as http:
        kube = Kube(http, namespace=namespace)
        for crd in all_crds():
            await kube.apply_crd(crd)
        await kube.ensure_namespace(namespace)
        try:
            yield KubeEnv(kube=kube, url=None, emulator=None)
        finally:
            await http.delete(f"/api/v1/namespaces/{namespace}")


@pytest.fixture
async def ngrok() -> AsyncIterator[NgrokSimulator]:
    async with NgrokSimulator(api_keys=[NGROK_KEY], contract=True) as sim:
        yield sim
        assert sim.contract_violations == [], sim.contract_violations


@pytest.fixture
async def together() -> AsyncIterator[TogetherSimulator]:
    async with TogetherSimulator(api_keys=[TOGETHER_KEY], contract=True) as sim:
        yield sim
        assert sim.contract_violations == [], sim.contract_violations


@pytest.fixture
async def registry() -> AsyncIterator[ModelRegistrySimulator]:
    async with ModelRegistrySimulator(admin_key=REGISTRY_KEY, tenants=["team-a"]) as sim:
        yield sim


@pytest.fixture
async def baseten() -> AsyncIterator[BasetenSimulator]:
    async with BasetenSimulator(api_keys=[API_KEY], contract=True) as sim:
        yield sim
        assert sim.contract_violations == [], sim.contract_violations


def make_settings(
    kube_url: str | None,
    baseten_url: str,
    ngrok_url: str = "http://127.0.0.1:9",
    registry_url: str = "http://127.0.0.1:9",
    together_url: str = "http://127.0.0.1:9",
    **overrides: Any,
) -> Settings:
    fast = {"timeout": 1.0, "max_retries": 2, "backoff_base": 0.05, "backoff_cap": 0.2, "max_inline_retry_after": 5.0}
    values: dict[str, Any] = {
        "kube_api_url": kube_url,
        "metrics_port": 0,  # one /metrics server per process, on a free port
        "resync_interval": 30.0,
        "short_poll_interval": 0.5,
        "credentials_retry_interval": 0.3,
        "create_settle_seconds": 3.0,
        "credentials_cache_ttl": 0.2,
        "error_backoff_base": 0.2,
        "error_backoff_cap": 1.0,
        "access_denied_retry_interval": 0.5,
        "baseten": UpstreamSettings(base_url=baseten_url, **fast),
        "ngrok": UpstreamSettings(base_url=ngrok_url, **fast),
        "model_registry": UpstreamSettings(base_url=f"{registry_url}/api/v1", **fast),
        "together": UpstreamSettings(base_url=f"{together_url}/v1", **fast),
    }
    values.update(overrides)
    return Settings(**values)


class OperatorRunner:
    """The real kopf operator in its own thread and event loop, as in production it has its own
    process: kopf cancels every task of its loop when it stops, which must not hit the test's own
    simulators. It can be stopped politely, or killed hard (its task cancelled mid-flight)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.thread: threading.Thread | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.task: asyncio.Task[None] | None = None
        self.stop_flag = threading.Event()
        self.error: BaseException | None = None

    def _main(self, ready: threading.Event) -> None:
        loop = self.loop = asyncio.new_event_loop()
        self.task = loop.create_task(run(self.settings, stop_flag=self.stop_flag, ready_flag=ready))
        try:
            loop.run_until_complete(self.task)
        except asyncio.CancelledError:
            pass
        except BaseException as exc:
            self.error = exc
        finally:
            # kopf waits for a threading.Event in an executor thread; release it, or that
            # thread outlives the operator and blocks the interpreter's exit.
            self.stop_flag.set()
            loop.close()

    async def start(self) -> None:
        self.stop_flag = threading.Event()
        ready = threading.Event()
        self.error = None
        self.thread = threading.Thread(target=self._main, args=(ready,), name="operator", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 15
        while not ready.is_set():
            assert self.thread.is_alive(), f"the operator exited: {self.error!r}"
            assert time.monotonic() < deadline, "the operator did not become ready"
            await asyncio.sleep(0.02)

    async def _join(self) -> None:
        assert self.thread is not None
        await asyncio.to_thread(self.thread.join, 20)
        assert not self.thread.is_alive(), "the operator did not stop within 20s"
        self.thread = None
        if self.error is not None:
            raise self.error

    async def stop(self) -> None:
        if self.thread is None:
            return
        self.stop_flag.set()
        await self._join()

    async def kill(self) -> None:
        """Cancel hard, as a crash would: whatever was in flight is cut off."""
        if self.thread is None:
            return
        assert self.loop is not None and self.task is not None
        self.loop.call_soon_threadsafe(self.task.cancel)
        await self._join()


@pytest.fixture
def simulators(
    baseten: BasetenSimulator, ngrok: NgrokSimulator, registry: ModelRegistrySimulator, together: TogetherSimulator
) -> dict[str, SimulatorServer]:
    """Every upstream simulator by name, for tests parametrized over the kinds."""
    return {"baseten": baseten, "ngrok": ngrok, "registry": registry, "together": together}


@pytest.fixture
async def operator(
    kube_env: KubeEnv,
    baseten: BasetenSimulator,
    ngrok: NgrokSimulator,
    registry: ModelRegistrySimulator,
    together: TogetherSimulator,
) -> AsyncIterator[OperatorRunner]:
    runner = OperatorRunner(make_settings(kube_env.url, baseten.url, ngrok.url, registry.url, together.url))
    await runner.start()
    try:
        yield runner
    finally:
        await runner.stop()


@pytest.fixture
async def credentials(kube_env: KubeEnv) -> str:
    await kube_env.kube.put_secret("baseten", {"apiKey": API_KEY})
    await kube_env.kube.put_secret("ngrok", {"apiKey": NGROK_KEY})
    await kube_env.kube.put_secret("registry", {"apiKey": REGISTRY_KEY})
    await kube_env.kube.put_secret("openai", {"apiKey": OPENAI_KEY})
    await kube_env.kube.put_secret("together", {"apiKey": TOGETHER_KEY})
    return "baseten"


# Every key the suite uses is a canary: none may appear in any log line of the whole run.
CANARIES = (
    API_KEY,
    NGROK_KEY,
    REGISTRY_KEY,
    OPENAI_KEY,
    TOGETHER_KEY,
    "bt-rotated-key-77aa01",
    "sk-rotated-key-123456",
    "sk-backup-value-77",
)


class _CanaryHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.leaks: list[str] = []
        self.lines = 0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:  # a record that cannot be formatted is not our concern here
            return
        self.lines += 1
        for canary in CANARIES:
            if canary in text:
                self.leaks.append(f"{record.name}: {text[:300]}")


_canary_handler = _CanaryHandler()

# One line per reliability area (fault matrix, bad inputs, load, security), printed at the end.
_summaries: dict[str, str] = {}
# Events and custom resources scanned for canary keys when each test's emulator closed.
_scanned: collections.Counter[str] = collections.Counter()


def record_summary(area: str, line: str) -> None:
    """Set the summary line the session prints for ``area`` (the last call per area wins)."""
    _summaries[area] = line


def pytest_sessionstart(session: pytest.Session) -> None:
    root = logging.getLogger()
    root.addHandler(_canary_handler)
    root.setLevel(logging.DEBUG)
    # cel-python traces every evaluation step at DEBUG: no keys there, only a slowdown.
    logging.getLogger("celpy").setLevel(logging.WARNING)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    summary = (
        f"canary keys: {len(_canary_handler.leaks)} leaks in {_canary_handler.lines} log lines, "
        f"{_scanned['leaks']} in {_scanned['events']} Events and {_scanned['resources']} custom resources "
        "(statuses included)"
    )
    if reporter is not None:
        for area, line in sorted(_summaries.items()):
            reporter.write_line(f"{area}: {line}")
        reporter.write_line(summary)
    if _canary_handler.leaks:
        if reporter is not None:
            for leak in _canary_handler.leaks[:20]:
                reporter.write_line(f"LEAK {leak}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
