"""kopf registration only: wires the controller to kopf's watch events, deletion handling,
login, probes, startup and cleanup, and sets kopf up the way the loop needs it."""

from __future__ import annotations

import asyncio
import base64
import logging
import signal
import tempfile
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import kopf

from aigw_operator import FINALIZER, GROUP, VERSION
from aigw_operator.base import metrics
from aigw_operator.base.settings import Settings
from aigw_operator.engine.reconcile import Reconciler
from aigw_operator.kube.client import Connection, KubeClient
from aigw_operator.runtime.controller import Controller
from aigw_operator.runtime.health import Health
from aigw_operator.runtime.leader import LeaderElector
from aigw_operator.runtime.metrics_access import MetricsAccess

_tempfiles: list[Any] = []


def _find_cluster(
    ours: Settings, logger: logging.Logger | logging.LoggerAdapter[Any], **kwargs: Any
) -> kopf.ConnectionInfo:
    """AIGW_KUBE_API_URL (the emulator, no credentials), else the in-cluster service account,
    else the kubeconfig: for kopf's login and, before it, for the Lease."""
    if ours.kube_api_url:
        return kopf.ConnectionInfo(server=ours.kube_api_url, insecure=True)
    found = kopf.login_with_service_account(logger=logger, **kwargs) or kopf.login_with_kubeconfig(
        logger=logger, **kwargs
    )
    if found is None:
        raise kopf.LoginError("no in-cluster service account and no kubeconfig found")
    return found


async def _login(
    controller: Controller, logger: logging.Logger | logging.LoggerAdapter[Any], **kwargs: Any
) -> kopf.ConnectionInfo:
    info = _find_cluster(controller.settings, logger, **kwargs)
    await controller.connect(_connection(info))
    return info


def _connection(info: kopf.ConnectionInfo) -> Connection:
    def to_file(data: str | bytes | None) -> str | None:
        if data is None:
            return None
        raw = data.encode() if isinstance(data, str) else data
        if b"-----BEGIN" not in raw:
            raw = base64.b64decode(raw)
        handle = tempfile.NamedTemporaryFile(suffix=".pem")  # noqa: SIM115 (kept open for the process)
        handle.write(raw)
        handle.flush()
        _tempfiles.append(handle)
        return handle.name

    return Connection(
        server=info.server,
        token=info.token,
        scheme=info.scheme or "Bearer",
        ca_path=str(info.ca_path) if info.ca_path else to_file(info.ca_data),
        insecure=bool(info.insecure),
        certificate_path=str(info.certificate_path) if info.certificate_path else to_file(info.certificate_data),
        private_key_path=str(info.private_key_path) if info.private_key_path else to_file(info.private_key_data),
    )


def build_registry(
    runtime: Controller,
    stopping: asyncio.Event | None = None,
    release: Callable[[], Awaitable[None]] | None = None,
) -> kopf.OperatorRegistry:
    """``stopping`` is the stop flag given to kopf: set when kopf begins to clean up, whatever
    stopped it, so that kopf's own waiter on that flag ends instead of being waited out (5 s)
    as a hung task. ``release`` gives the Lease up as soon as the reconciles have stopped and
    writes are fenced: kopf may take seconds more to stop (it waits out tasks it cannot cancel
    at once, e.g. a discovery retry), and a standby need not wait for that."""
    registry = kopf.OperatorRegistry()

    if runtime.settings.secret_label_selector:
        # Only Secrets carrying the label reach us (a server-side selector; see kopf_settings).
        @kopf.on.event("v1", "secrets", registry=registry)
        async def secret_changed(body: kopf.Body, type: str | None, **_: Any) -> None:  # async: not in a thread
            if type is None:
                return  # the initial listing: nothing changed
            meta = body.get("metadata", {})
            runtime.secret_changed(meta.get("namespace", ""), meta.get("name", ""))

    @kopf.on.login(registry=registry)
    async def login(logger: logging.Logger | logging.LoggerAdapter[Any], **kwargs: Any) -> kopf.ConnectionInfo:
        return await _login(runtime, logger, **kwargs)

    @kopf.on.probe(registry=registry, id="reconcile")
    async def reconcile_probe(**_: Any) -> dict[str, Any]:  # async: the queues' clocks are their loop's
        return runtime.liveness()

    @kopf.on.startup(registry=registry)
    async def startup(**_: Any) -> None:
        runtime.start()

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        if stopping is not None:
            stopping.set()
        await runtime.aclose()
        if release is not None:
            runtime.fence()
            await release()

    for reconciler in runtime.reconcilers:
        _register(registry, runtime, reconciler)
    return registry


def _register(registry: kopf.OperatorRegistry, runtime: Controller, reconciler: Reconciler[Any, Any, Any]) -> None:
    resource = (GROUP, VERSION, reconciler.info.plural)

    @kopf.on.event(*resource, registry=registry)
    async def changed(body: kopf.Body, type: str | None, **_: Any) -> None:
        runtime.poke(reconciler.info.kind, body, type)

    @kopf.on.delete(*resource, registry=registry, id="finalize")
    async def finalize(body: kopf.Body, **_: Any) -> None:
        retry = await runtime.finalize(reconciler, body)
        if retry is not None:
            raise kopf.TemporaryError("the upstream object is not deleted yet (see the Ready condition)", delay=retry)


class _NoDiffBase(kopf.DiffBaseStorage):
    """kopf keeps a copy of the last handled spec only to diff it for create/update handlers.

    We register none (the loop compares the spec with the upstream, not with an older
    spec), so storing it would cost one more write per object and change for nothing.
    """

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        # kopf deep-copies every body it sees to build this; nothing reads it here.
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def kopf_settings(settings: Settings) -> kopf.OperatorSettings:
    result = kopf.OperatorSettings()
    result.persistence.finalizer = FINALIZER
    result.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    result.persistence.diffbase_storage = _NoDiffBase()
    if settings.secret_label_selector:
        result.watching.label_selectors["v1", "secrets"] = settings.secret_label_selector
    if settings.namespaces:
        # Named namespaces need no scanning: without it kopf lists no namespaces and watches no
        # CRDs at cluster scope, which a namespaced install is not granted (the chart's Roles).
        result.scanning.disabled = True
    result.peering.standalone = True
    # We post our own, deduplicated Events; kopf's per-handler Events would double them.
    result.posting.enabled = False
    result.networking.error_backoffs = [1, 2, 5, 10, 20]
    return result


class LeadershipLost(Exception):
    """This process stopped because it could no longer renew its Lease."""


async def run(
    settings: Settings,
    *,
    stop_flag: asyncio.Event | threading.Event | None = None,
    ready_flag: asyncio.Event | threading.Event | None = None,
    liveness_endpoint: str | None = None,
) -> None:
    """Run the operator until stopped (a signal or ``stop_flag``). With leader election, wait for
    the Lease first: a standby runs no kopf at all, so it writes nothing to any resource; and
    stop at once, fenced, if the Lease cannot be renewed (LeadershipLost)."""
    controller = Controller(settings)
    metrics_client: KubeClient | None = None
    if settings.metrics_port is not None:
        # The gate first: no request is served before it is in place.
        if settings.metrics_auth == "kubernetes":
            metrics_client = KubeClient(_lease_connection(settings))
            loop = asyncio.get_running_loop()
            metrics.set_gate(MetricsAccess(metrics_client, loop, ttl=settings.metrics_auth_cache_ttl))
        else:
            metrics.set_gate(None)
        metrics.serve(settings.metrics_port)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(_relay_stop(stop_flag, stop))] if stop_flag is not None else []
    # In the main thread kopf stops on SIGINT/SIGTERM by itself. Given a stop flag as well, it
    # waits on it in a task it never cancels after a signal, and then waits that task out for
    # 5 s as hung: so the flag goes to kopf only where signals cannot reach it (a thread).
    kopf_stop: asyncio.Event | None = None
    if stop_flag is not None or threading.current_thread() is not threading.main_thread():
        kopf_stop = stop
    health = Health(controller)
    if liveness_endpoint:
        await health.start(liveness_endpoint)
    lease_client: KubeClient | None = None
    elector: LeaderElector | None = None
    lost = False
    try:
        if settings.leader_election.enabled:
            lease_client = KubeClient(_lease_connection(settings))
            elector = health.elector = LeaderElector(lease_client, settings.leader_election)
            # Ours until kopf installs its own: a SIGTERM between taking the Lease and kopf's
            # start must stop the process cleanly (releasing the Lease), not kill it.
            _signals_stop(stop)
            if not await elector.acquire(stop.is_set):
                return

            def on_lost() -> None:
                nonlocal lost
                lost = True
                controller.fence()  # before the Lease could be taken: no write from here on
                stop.set()

            tasks.append(asyncio.create_task(elector.keep(on_lost)))
            if stop.is_set():
                return
        kopf_ready = asyncio.Event()
        tasks.append(asyncio.create_task(_relay_ready(kopf_ready, ready_flag, health)))
        if kopf_stop is None and elector is not None:
            tasks.append(asyncio.create_task(_stop_kopf_on(stop, kopf_ready)))
        await kopf.operator(
            registry=build_registry(controller, kopf_stop, elector.release if elector is not None else None),
            settings=kopf_settings(settings),
            clusterwide=not settings.namespaces,
            namespaces=settings.namespaces,
            stop_flag=kopf_stop,
            ready_flag=kopf_ready,
            standalone=True,
        )
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if elector is not None:
            await elector.release()
        if lease_client is not None:
            await lease_client.aclose()
        if metrics_client is not None:
            metrics.set_gate(_stopped)  # still closed: nothing left to ask the API server with
            await metrics_client.aclose()
        await health.stop()
    if lost:
        raise LeadershipLost("the Lease could not be renewed within the renew deadline; stopped")


def _stopped(method: str, path: str, authorization: str | None) -> tuple[int, str]:
    return 503, "the operator has stopped"


async def _relay_stop(flag: asyncio.Event | threading.Event, stop: asyncio.Event) -> None:
    if isinstance(flag, asyncio.Event):
        await flag.wait()
    else:
        # Polled: a thread blocked in wait() would outlive the loop it should wake.
        while not flag.wait(0):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    stop.set()


async def _relay_ready(kopf_ready: asyncio.Event, flag: asyncio.Event | threading.Event | None, health: Health) -> None:
    await kopf_ready.wait()
    health.running = True
    if flag is not None:
        flag.set()


def _signals_stop(stop: asyncio.Event) -> None:
    """SIGINT and SIGTERM set ``stop`` while a standby waits for the Lease and until kopf, once
    started, puts its own handlers in their place."""
    if threading.current_thread() is threading.main_thread():
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)


async def _stop_kopf_on(stop: asyncio.Event, kopf_ready: asyncio.Event) -> None:
    """In the main thread kopf stops on its own signal handlers only: a stop asked for before
    they were in place (a signal, a lost Lease) is handed to them once kopf is up."""
    await stop.wait()
    await kopf_ready.wait()
    signal.raise_signal(signal.SIGTERM)


def _lease_connection(settings: Settings) -> Connection:
    """Where the Lease is, before kopf's login runs (which happens only on the leader)."""
    logger = logging.getLogger("aigw_operator.leader")
    return _connection(_find_cluster(settings, logger, settings=kopf_settings(settings)))
