"""kopf registration only: wires the controller to kopf's watch events, deletion handling,
login, probes, startup and cleanup, and sets kopf up the way the loop needs it."""

from __future__ import annotations

import asyncio
import base64
import logging
import tempfile
from typing import Any

import kopf

from aigw_operator import FINALIZER, GROUP, VERSION, metrics
from aigw_operator.controller import Controller
from aigw_operator.kube import Connection
from aigw_operator.reconcile import Reconciler
from aigw_operator.settings import Settings

_tempfiles: list[Any] = []


async def _login(
    controller: Controller, logger: logging.Logger | logging.LoggerAdapter[Any], **kwargs: Any
) -> kopf.ConnectionInfo:
    settings = controller.settings
    if settings.kube_api_url:
        info = kopf.ConnectionInfo(server=settings.kube_api_url, insecure=True)
    else:
        found = kopf.login_with_service_account(logger=logger, **kwargs) or kopf.login_with_kubeconfig(
            logger=logger, **kwargs
        )
        if found is None:
            raise kopf.LoginError("no in-cluster service account and no kubeconfig found")
        info = found
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


def build_registry(runtime: Controller) -> kopf.OperatorRegistry:
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
        await runtime.aclose()

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


async def run(
    settings: Settings,
    *,
    stop_flag: asyncio.Event | None = None,
    ready_flag: asyncio.Event | None = None,
    liveness_endpoint: str | None = None,
) -> None:
    runtime = Controller(settings)
    if settings.metrics_port is not None:
        metrics.serve(settings.metrics_port)
    await kopf.operator(
        registry=build_registry(runtime),
        settings=kopf_settings(settings),
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        stop_flag=stop_flag,
        ready_flag=ready_flag,
        liveness_endpoint=liveness_endpoint,
        standalone=True,
    )
