"""The operator's harness: the Kubernetes API (emulator, or a real cluster with AIGW_TEST_KUBECONFIG)
in a namespace of its own per test, the upstream simulators, and the real kopf operator running
in-process against them."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from aigw_operator.base.settings import Settings, UpstreamSettings
from aigw_operator.crds import all_crds, all_kinds
from aigw_operator.runtime.operator import run
from aigw_testbed.emulator.admission import admit
from aigw_testbed.emulator.server import KubeEmulator, KubeEmulatorServer, ResourceType
from aigw_testbed.kubectl import Kube, cr_path
from aigw_testbed.simulators.base import SimulatorServer
from aigw_testbed.simulators.baseten import BasetenSimulator
from aigw_testbed.simulators.model_registry import ModelRegistrySimulator
from aigw_testbed.simulators.ngrok import NgrokSimulator
from aigw_testbed.simulators.together import TogetherSimulator
from tests.conftest import (
    API_KEY,
    NGROK_KEY,
    OPENAI_KEY,
    REGISTRY_KEY,
    TOGETHER_KEY,
    _keys_in,
    _scanned,
    _teardown_counts,
)

# The loops of killed operators, with their pending tasks, kept for the session (see _main).
_crashed: list[tuple[asyncio.AbstractEventLoop, set[asyncio.Task[Any]]]] = []

# Operators started and not yet stopped: one still running at teardown is the test's bug.
_running: set[OperatorRunner] = set()

# Teardown bounds: generous for a real API server, whose namespace controller deletes a namespace
# (and what it holds) after the request has returned; the emulator finishes each step at once.
RELEASE_SECONDS = 5.0  # for the test's operator to finalize the resources the test left
GONE_SECONDS = 60.0  # for stripped resources, then the namespace, to disappear


@dataclass
class KubeEnv:
    # Bound to the test's own namespace, kube.namespace: nothing else may name one.
    kube: Kube
    # Set for the emulator; None against a real cluster (the operator then uses the kubeconfig).
    url: str | None
    emulator: KubeEmulator | None
    # Real cluster: the listing canary scan has run (once per test, before the first teardown step
    # deletes anything). The emulator needs none: its write hook scans every write (_scan_write).
    scanned: bool = False
    # Emulator: what the write hook found, one line per write that carried a key (key abridged).
    leaks: list[str] = field(default_factory=list)


@pytest.fixture
async def kube_env() -> AsyncIterator[KubeEnv]:
    """The Kubernetes API with a fresh namespace of the test's own, ``t-<8 hex>``, in both modes:
    no object of an earlier test is in it, and an expectation that hard-codes a namespace fails
    against the emulator too, not only on a cluster. The same set-up and teardown serve both
    modes; only the way to reach the API differs."""
    namespace = f"t-{uuid.uuid4().hex[:8]}"
    kubeconfig = os.environ.get("AIGW_TEST_KUBECONFIG")
    async with contextlib.AsyncExitStack() as stack:
        if kubeconfig:
            http = await stack.enter_async_context(_real_cluster_client(kubeconfig))
            env = KubeEnv(kube=Kube(http, namespace=namespace), url=None, emulator=None)
        else:
            emulator = KubeEmulator(admission=admit)
            server = await stack.enter_async_context(KubeEmulatorServer(emulator))
            http = await stack.enter_async_context(httpx.AsyncClient(base_url=server.url, timeout=10))
            env = KubeEnv(kube=Kube(http, namespace=namespace), url=server.url, emulator=emulator)
            emulator.on_write = functools.partial(_scan_write, env)
        for crd in all_crds():
            await env.kube.apply_crd(crd)
        response = await http.post("/api/v1/namespaces", json={"metadata": {"name": namespace}})
        # 201 only: a 409 would mean the name is an earlier test's, whose objects could still be there.
        assert response.status_code == 201, response.text
        try:
            yield env
        finally:
            await _teardown(env)


def _scan_write(env: KubeEnv, rtype: ResourceType, event_type: str, obj: dict[str, Any]) -> None:
    """The emulator's write hook: every Event, every custom resource (spec, metadata, status) and
    every ConfigMap (the connection details: never a key, which only a Secret may hold), at every
    write, so what a test deletes, and every status it passes through, is scanned too. It
    records rather than raises (a raise would fail the operator's write); scan_for_canaries fails
    the test."""
    if event_type == "DELETED":
        return  # the object as it was last written: scanned then
    if rtype.kind == "Event":
        _scanned["event_writes"] += 1
    elif rtype.crd_name is not None:
        _scanned["resource_writes"] += 1
    elif rtype.kind == "ConfigMap":
        _scanned["configmap_writes"] += 1
    else:
        return
    leaked = _keys_in(json.dumps(obj))
    if leaked:
        _scanned["leaks"] += len(leaked)
        meta = obj.get("metadata") or {}
        env.leaks.append(
            f"{rtype.kind} {meta.get('name')} ({event_type}, resourceVersion {meta.get('resourceVersion')}): "
            f"a key ({leaked}...)"
        )


async def scan_for_canaries(env: KubeEnv) -> None:
    """No key may reach an Event or a custom resource (status included) of the test's namespace.

    Against the emulator its write hook has scanned each of them at every write: this only reports
    what it found, and may be called again (the teardown does, for the writes of the release).
    Against a real cluster no hook exists: the objects are listed and scanned once per test, before
    the operator's release or the teardown deletes anything."""
    if env.emulator is not None:
        if env.leaks:
            raise AssertionError("keys written to the Kubernetes API: " + "; ".join(env.leaks[:10]))
        return
    if env.scanned:
        return
    env.scanned = True
    events = [("Event", event) for event in await env.kube.events()]
    resources = await _resources(env.kube)
    _scanned["events"] += len(events)
    _scanned["resources"] += len(resources)
    for where, item in events + resources:
        leaked = _keys_in(json.dumps(item))
        _scanned["leaks"] += len(leaked)
        assert not leaked, f"{where}: a key ({leaked}...) is in {item.get('metadata', {}).get('name')}"


async def _resources(kube: Kube) -> list[tuple[str, dict[str, Any]]]:
    """(plural, object) for every aigw.dev resource of every kind in the test's namespace."""
    found: list[tuple[str, dict[str, Any]]] = []
    for info in all_kinds():
        response = await kube.http.get(cr_path(info.plural, kube.namespace))
        response.raise_for_status()  # a list that fails must not pass for an empty one
        found += [(info.plural, item) for item in response.json().get("items") or []]
    return found


def _ok_or_gone(response: httpx.Response) -> None:
    # 404: already gone (finalized meanwhile, or removed by the namespace controller): fine.
    if response.status_code != 404:
        response.raise_for_status()


async def _each(calls: list[Awaitable[None]], limit: int = 16) -> None:
    """Await ``calls`` a few at a time: the load test leaves a thousand resources."""
    semaphore = asyncio.Semaphore(limit)

    async def one(call: Awaitable[None]) -> None:
        async with semaphore:
            await call

    await asyncio.gather(*(one(call) for call in calls))


async def _until(check: Callable[[], Awaitable[bool]], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.1)
    return True


async def release_resources(kube: Kube, timeout: float = RELEASE_SECONDS) -> None:
    """Delete what the test left while its operator still runs, and give the operator ``timeout``
    to finalize it, as it would in production. What it has not released by then (say a resource
    whose upstream refuses the delete) is stripped of its finalizer once the operator has stopped."""
    left = await _resources(kube)

    async def delete(plural: str, obj: dict[str, Any]) -> None:
        if not obj["metadata"].get("deletionTimestamp"):
            _ok_or_gone(await kube.delete(plural, obj["metadata"]["name"]))

    await _each([delete(plural, obj) for plural, obj in left])

    async def released() -> bool:
        return not await _resources(kube)

    await _until(released, timeout)
    _teardown_counts["released"] += len(left) - len(await _resources(kube))


async def _teardown(env: KubeEnv) -> None:
    # An operator still running would put finalizers back while they are being stripped.
    stray = [runner for runner in _running if runner.running]
    try:
        await scan_for_canaries(env)
    finally:
        try:
            for runner in stray:
                await runner.kill()
        finally:
            await _delete_namespace(env.kube)
    assert not stray, f"the test left {len(stray)} operator(s) running"
    if env.emulator is not None:
        env.emulator.on_write = None
        await scan_for_canaries(env)  # the writes of the release and the teardown, too


async def _delete_namespace(kube: Kube) -> None:
    """Nothing of the test stays behind, in either mode: no resource waits on a finalizer (its
    operator has stopped, nobody else would take it off, and the namespace would hang Terminating
    with it), then the namespace goes and is waited for until the API server no longer has it."""

    async def strip_and_delete(plural: str, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        if obj["metadata"].get("finalizers"):
            _teardown_counts["stripped"] += 1
            _ok_or_gone(await kube.patch_meta(plural, name, {"finalizers": None}))
        _ok_or_gone(await kube.delete(plural, name))

    await _each([strip_and_delete(plural, obj) for plural, obj in await _resources(kube)])
    # Credentials Secrets the operator protects while resources need them (secret_protection).
    secrets = (await kube.http.get(f"/api/v1/namespaces/{kube.namespace}/secrets")).json().get("items") or []
    for secret in secrets:
        if secret["metadata"].get("finalizers"):
            _teardown_counts["stripped"] += 1
            _ok_or_gone(
                await kube.http.patch(
                    f"/api/v1/namespaces/{kube.namespace}/secrets/{secret['metadata']['name']}",
                    json={"metadata": {"finalizers": None}},
                    headers={"Content-Type": "application/merge-patch+json"},
                )
            )

    async def no_resources() -> bool:
        return not await _resources(kube)

    assert await _until(no_resources, GONE_SECONDS), f"left in {kube.namespace}: {await _resources(kube)}"
    path = f"/api/v1/namespaces/{kube.namespace}"
    _ok_or_gone(await kube.http.delete(path))

    async def namespace_gone() -> bool:
        response = await kube.http.get(path)
        if response.status_code == 404:
            return True
        response.raise_for_status()
        return False

    assert await _until(namespace_gone, GONE_SECONDS), f"namespace {kube.namespace} still there after {GONE_SECONDS}s"
    _teardown_counts["namespaces"] += 1


@contextlib.asynccontextmanager
async def _real_cluster_client(kubeconfig: str) -> AsyncIterator[httpx.AsyncClient]:
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
    # The operator (kopf) finds the cluster through it; make_settings() leaves kube_api_url unset.
    os.environ["KUBECONFIG"] = kubeconfig
    async with httpx.AsyncClient(base_url=configuration.host, headers=headers, verify=verify, cert=cert) as http:
        yield http


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
    async with ModelRegistrySimulator(admin_key=REGISTRY_KEY, tenants=["team-a"], contract=True) as sim:
        yield sim
        assert sim.contract_violations == [], sim.contract_violations


@pytest.fixture
async def baseten() -> AsyncIterator[BasetenSimulator]:
    async with BasetenSimulator(api_keys=[API_KEY], contract=True) as sim:
        yield sim
        assert sim.contract_violations == [], sim.contract_violations


def make_settings(
    env: KubeEnv,
    baseten_url: str,
    ngrok_url: str = "http://127.0.0.1:9",
    registry_url: str = "http://127.0.0.1:9",
    together_url: str = "http://127.0.0.1:9",
    **overrides: Any,
) -> Settings:
    if not isinstance(env, KubeEnv):
        # Callers once passed kube_env.url; the namespace is what matters now, so say so.
        raise TypeError("make_settings() takes the KubeEnv: the operator watches only the test's namespace")
    fast = {"timeout": 1.0, "max_retries": 2, "backoff_base": 0.05, "backoff_cap": 0.2, "max_inline_retry_after": 5.0}
    values: dict[str, Any] = {
        "kube_api_url": env.url,
        # Only the test's namespace: an operator watching the cluster picks up the objects of earlier
        # tests (still Terminating on a real cluster) and reconciles them against this test's simulators.
        "namespaces": [env.kube.namespace],
        # The test's namespace stands for the operator's own: the one allowed the default keys.
        "operator_namespace": env.kube.namespace,
        "metrics_port": 0,  # one /metrics server per process, on a free port
        # Open, as a local run: tests/scrape.py reads it without a token. The access checks have
        # their own tests (tests/operator/test_metrics_access.py).
        "metrics_auth": "none",
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
    simulators. It can be stopped politely, or killed hard (its loop stopped mid-flight)."""

    def __init__(self, settings: Settings, *, cluster_wide: bool = False, liveness_endpoint: str | None = None) -> None:
        # cluster_wide: only where the emulator is the test's own (nothing else in it to pick up).
        self.settings = settings
        self.cluster_wide = cluster_wide
        self.liveness_endpoint = liveness_endpoint
        self.thread: threading.Thread | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.task: asyncio.Task[None] | None = None
        self.stop_flag = threading.Event()
        self.error: BaseException | None = None
        self.killed = False

    def _main(self, ready: threading.Event) -> None:
        loop = self.loop = asyncio.new_event_loop()
        self.task = loop.create_task(
            run(self.settings, stop_flag=self.stop_flag, ready_flag=ready, liveness_endpoint=self.liveness_endpoint)
        )
        try:
            loop.run_until_complete(self.task)
        except asyncio.CancelledError:
            pass
        except BaseException as exc:
            if not self.killed:  # a kill stops the loop before the task completes: expected
                self.error = exc
        finally:
            # kopf waits for a threading.Event in an executor thread; release it, or that
            # thread outlives the operator and blocks the interpreter's exit.
            self.stop_flag.set()
            if self.killed:
                # What a crash leaves: tasks pending mid-await, never resumed. Closing the loop
                # would have each of them, once collected, run its finally clauses against a
                # closed loop (an unraisable error apiece); kept, they are never collected.
                loop.set_exception_handler(_ignore_crash_debris)
                _crashed.append((loop, asyncio.all_tasks(loop)))
            else:
                loop.close()

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    async def start(self, *, wait_ready: bool = True) -> None:
        """Start, and wait until kopf runs (``wait_ready=False``: a standby for a Lease never does)."""
        assert self.settings.namespaces or self.cluster_wide, "a test's operator must watch only the test's namespace"
        self.killed = False
        self.stop_flag = threading.Event()
        ready = threading.Event()
        self.error = None
        self.thread = threading.Thread(target=self._main, args=(ready,), name="operator", daemon=True)
        self.thread.start()
        _running.add(self)
        _scanned["operators"] += 1
        deadline = time.monotonic() + 15
        while wait_ready and not ready.is_set():
            assert self.thread.is_alive(), f"the operator exited: {self.error!r}"
            assert time.monotonic() < deadline, "the operator did not become ready"
            await asyncio.sleep(0.02)

    async def _join(self) -> None:
        assert self.thread is not None
        await asyncio.to_thread(self.thread.join, 20)
        assert not self.thread.is_alive(), "the operator did not stop within 20s"
        self.thread = None
        _running.discard(self)
        if self.error is not None:
            raise self.error

    async def stop(self) -> None:
        if self.thread is None:
            return
        self.stop_flag.set()
        await self._join()

    async def kill(self) -> None:
        """Stop hard, as a crash would: whatever was in flight is cut off and nothing more runs.

        Cancelling kopf's task is not a crash: kopf then runs the cleanup handler, which lets the
        reconciles in flight finish (an upstream call's retry, the status write after it).
        Stopping the loop runs no further step of any task."""
        if self.thread is None:
            return
        assert self.loop is not None
        self.killed = True
        self.loop.call_soon_threadsafe(self.loop.stop)
        await self._join()


def _ignore_crash_debris(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    # A killed operator's loop reports nothing: whatever it holds was cut off on purpose.
    return None


async def kill_while_held(
    sim: SimulatorServer, method: str, act: Callable[[], Awaitable[object]], kill: Callable[[], Awaitable[None]]
) -> None:
    """Kill the operator between an upstream write and its record in Kubernetes, on any API server.

    ``act`` makes the operator send ``method``; the simulator carries that request out, holds the
    answer, and ``kill`` runs while the operator waits for it. However fast or slow the API server
    and the machine, the kill lands after the upstream's effect and before the operator could know
    the outcome, let alone write it to Kubernetes: no fault hook in the API server is needed."""
    hold = sim.faults.hold_next_response(method)
    try:
        await act()
        try:
            await asyncio.wait_for(hold.reached.wait(), timeout=10)
        except TimeoutError:
            raise AssertionError(f"the operator never sent the {method}") from None
        reached = time.monotonic()
        await kill()
        killed = time.monotonic()
    finally:
        hold.release()
    # Had the operator's client given up on the held request before the kill (its timeout), it
    # would have retried or looked the object up: a request after the held one.
    assert hold.record is not None
    after = sim.requests[sim.requests.index(hold.record) :]
    assert after == [hold.record], (
        f"the kill came too late: the operator had stopped waiting (kill took {killed - reached:.2f}s): "
        + ", ".join(f"+{r.time - hold.record.time:.2f}s {r.method} {r.path} -> {r.status}" for r in after)
    )


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
    runner = OperatorRunner(make_settings(kube_env, baseten.url, ngrok.url, registry.url, together.url))
    await runner.start()
    try:
        yield runner
    finally:
        try:
            if runner.running:
                # The scan first: the release deletes the resources it is to look at.
                await scan_for_canaries(kube_env)
                await release_resources(kube_env.kube)
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
