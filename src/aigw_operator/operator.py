"""kopf registration only: wires each kind's watch events, daemon and deletion to the loop.

Per object, one kopf daemon runs the level-based loop (observe, diff, act, report) and
sleeps until the next resync, the short poll, a backoff, or a change of the resource,
whichever comes first. The deletion handler shares the object's lock with the daemon.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import random
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf

from aigw_operator import FINALIZER, GROUP, VERSION, metrics
from aigw_operator import conditions as cond
from aigw_operator.credentials import Credentials
from aigw_operator.kinds.common import EXTERNAL_ID_ANNOTATION, RESYNC_ANNOTATION
from aigw_operator.kinds.dedicated_endpoint import DedicatedEndpointAdapter
from aigw_operator.kinds.gateway_endpoint import GatewayEndpointAdapter
from aigw_operator.kinds.model import ModelAdapter
from aigw_operator.kinds.provider import ProviderAdapter
from aigw_operator.kube import Connection, KubeClient, ObjectRef
from aigw_operator.reconcile import ObjectState, Reconciler, Resource
from aigw_operator.settings import Settings, UpstreamSettings
from aigw_operator.upstreams import baseten, model_registry, ngrok, together
from aigw_operator.upstreams.http import UpstreamClient

logger = logging.getLogger("aigw_operator.operator")


class _LazyKube:
    """The Kubernetes client exists only after kopf's login; reconcilers are built before."""

    def __init__(self) -> None:
        self.client: KubeClient | None = None

    def _require(self) -> KubeClient:
        if self.client is None:
            raise RuntimeError("not logged in to the Kubernetes API yet")
        return self.client

    async def get_secret(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return await self._require().get_secret(namespace, name)

    async def patch_status(self, ref: ObjectRef, status: Mapping[str, Any]) -> bool:
        return await self._require().patch_status(ref, status)

    async def post_event(self, ref: ObjectRef, type_: str, reason: str, message: str) -> None:
        await self._require().post_event(ref, type_, reason, message)

    async def patch_annotations(self, ref: ObjectRef, annotations: Mapping[str, str | None]) -> bool:
        return await self._require().patch_annotations(ref, annotations)


@dataclass
class _Handle:
    """One watched object: its loop state and the signal that wakes its daemon."""

    state: ObjectState = field(default_factory=ObjectState)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    trigger: tuple[Any, ...] | None = None
    # The latest body seen: which Secrets the object refers to.
    kind: str = ""
    body: Mapping[str, Any] = field(default_factory=dict)


def _upstream_client(name: str, upstream: UpstreamSettings) -> UpstreamClient:
    options: dict[str, Any] = {
        "timeout": upstream.timeout,
        "max_retries": upstream.max_retries,
        "backoff_base": upstream.backoff_base,
        "backoff_cap": upstream.backoff_cap,
        "max_inline_retry_after": upstream.max_inline_retry_after,
        "rate_limit_per_second": upstream.rate_limit_per_second,
        "observer": metrics.observe_upstream,
        "retry_observer": metrics.observe_retry,
    }
    factories = {
        "baseten": baseten.new_client,
        "ngrok": ngrok.new_client,
        "model-registry": model_registry.new_client,
        "together": together.new_client,
    }
    return factories[name](upstream.base_url, **options)


class Runtime:
    """Everything the handlers share: settings, clients, and the per-object handles."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.kube = _LazyKube()
        upstreams = {
            "baseten": settings.baseten,
            "ngrok": settings.ngrok,
            "model-registry": settings.model_registry,
            "together": settings.together,
        }
        self.credentials = Credentials(
            self.kube,
            {name: upstream.api_key for name, upstream in upstreams.items()},
            ttl=settings.credentials_cache_ttl,
        )
        self.upstreams = {name: _upstream_client(name, upstream) for name, upstream in upstreams.items()}
        adapters: list[Any] = [
            GatewayEndpointAdapter(
                baseten.BasetenClient(self.upstreams["baseten"]),
                secret_prefix=settings.baseten_secret_prefix,
                secret_users=self.target_secret_users,
            ),
            ProviderAdapter(ngrok.NgrokClient(self.upstreams["ngrok"])),
            ModelAdapter(model_registry.ModelRegistryClient(self.upstreams["model-registry"])),
            DedicatedEndpointAdapter(together.TogetherClient(self.upstreams["together"])),
        ]
        self.reconcilers: list[Reconciler[Any, Any]] = [
            Reconciler(adapter, self.kube, self.credentials, settings) for adapter in adapters
        ]
        self.handles: dict[str, _Handle] = {}
        # When an object's loop last finished a step: the liveness probe fails if this stalls.
        self.progress_at = time.monotonic()
        self._tempfiles: list[Any] = []

    def handle(self, uid: str) -> _Handle:
        handle = self.handles.get(uid)
        if handle is None:
            handle = self.handles[uid] = _Handle()
        return handle

    def forget(self, uid: str) -> None:
        self.handles.pop(uid, None)

    def target_secret_users(self, namespace: str, secret_name: str, key: str, *, besides: str) -> bool:
        """Whether a GatewayEndpoint other than ``besides`` has a target with this secretRef."""
        for uid, handle in self.handles.items():
            meta = handle.body.get("metadata", {})
            if uid == besides or handle.kind != "GatewayEndpoint" or meta.get("namespace") != namespace:
                continue
            if meta.get("deletionTimestamp"):
                continue
            for target in (handle.body.get("spec") or {}).get("targets") or ():
                ref = target.get("secretRef") or {}
                if ref.get("name") == secret_name and ref.get("key", "apiKey") == key:
                    return True
        return False

    def secret_changed(self, namespace: str, name: str) -> None:
        """A Secret we were told about changed: read it again, and wake whoever refers to it."""
        self.credentials.forget_secret(namespace, name)
        for handle in self.handles.values():
            if handle.body.get("metadata", {}).get("namespace") == namespace and name in _secret_names(
                handle.body.get("spec")
            ):
                handle.wake.set()

    async def login(self, logger: logging.Logger | logging.LoggerAdapter[Any], **kwargs: Any) -> kopf.ConnectionInfo:
        if self.settings.kube_api_url:
            info = kopf.ConnectionInfo(server=self.settings.kube_api_url, insecure=True)
        else:
            found = kopf.login_with_service_account(logger=logger, **kwargs) or kopf.login_with_kubeconfig(
                logger=logger, **kwargs
            )
            if found is None:
                raise kopf.LoginError("no in-cluster service account and no kubeconfig found")
            info = found
        old = self.kube.client
        self.kube.client = KubeClient(self._connection(info))
        if old is not None:
            await old.aclose()
        return info

    def _connection(self, info: kopf.ConnectionInfo) -> Connection:
        def to_file(data: str | bytes | None) -> str | None:
            if data is None:
                return None
            raw = data.encode() if isinstance(data, str) else data
            if b"-----BEGIN" not in raw:
                raw = base64.b64decode(raw)
            handle = tempfile.NamedTemporaryFile(suffix=".pem")  # noqa: SIM115 (kept open for the process)
            handle.write(raw)
            handle.flush()
            self._tempfiles.append(handle)
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

    async def aclose(self) -> None:
        for client in self.upstreams.values():
            await client.aclose()
        if self.kube.client is not None:
            await self.kube.client.aclose()
        for handle in self._tempfiles:
            handle.close()

    # ------------------------------------------------------------ per-object handlers

    def poke(self, kind: str, body: Mapping[str, Any], event_type: str | None) -> None:
        """Wake the object's loop when something it acts on changed (not for our own status writes)."""
        meta = body.get("metadata", {})
        uid = meta.get("uid", "")
        if event_type == "DELETED":
            self.forget(uid)
            return
        annotations = meta.get("annotations") or {}
        trigger = (
            meta.get("generation"),
            annotations.get(EXTERNAL_ID_ANNOTATION),
            annotations.get(RESYNC_ANNOTATION),
            FINALIZER in (meta.get("finalizers") or ()),
            bool(meta.get("deletionTimestamp")),
        )
        handle = self.handle(uid)
        handle.kind, handle.body = kind, body
        if handle.trigger is not None and handle.trigger != trigger:
            handle.wake.set()
        handle.trigger = trigger

    async def follow(
        self, reconciler: Reconciler[Any, Any], body: Mapping[str, Any], stopped: kopf.DaemonStopped
    ) -> None:
        """The per-object loop, for as long as kopf keeps the daemon running."""
        info = reconciler.info
        handle = self.handle(body.get("metadata", {}).get("uid", ""))
        delay: float | None = self._initial_delay(body)
        if delay:
            await self._sleep(handle, stopped, delay)
        while not stopped:
            meta = body.get("metadata", {})
            if meta.get("deletionTimestamp"):
                return
            if FINALIZER not in (meta.get("finalizers") or ()):
                # Never create upstream before the finalizer guarantees we will see the deletion.
                # Its arrival wakes us (poke); the timeout is only a safety net.
                await self._sleep(handle, stopped, 30.0)
                continue
            try:
                outcome = await reconciler.reconcile(Resource.from_body(info, body), handle.state)
                delay = outcome.requeue_after
            except Exception:
                handle.state.failures += 1
                delay = min(
                    self.settings.error_backoff_base * 2**handle.state.failures, self.settings.error_backoff_cap
                )
                logger.exception(
                    "reconcile of %s %s/%s failed; retrying in %.0fs",
                    info.kind,
                    meta.get("namespace"),
                    meta.get("name"),
                    delay,
                    extra={"kind": info.kind, "namespace": meta.get("namespace"), "object_name": meta.get("name")},
                )
            self.progress_at = time.monotonic()
            await self._sleep(handle, stopped, delay)

    def liveness(self) -> dict[str, Any]:
        """For kopf's health endpoint: fails when no object's loop has moved for too long."""
        stalled = time.monotonic() - self.progress_at
        # Every loop wakes at least once per resync interval; allow two of them plus a margin.
        limit = 2 * self.settings.resync_interval * (1 + self.settings.resync_jitter) + 60
        if self.handles and stalled > limit:
            raise RuntimeError(f"no reconcile finished for {stalled:.0f}s with {len(self.handles)} objects watched")
        return {"objects": len(self.handles), "seconds_since_progress": round(stalled, 1)}

    def _initial_delay(self, body: Mapping[str, Any]) -> float:
        # After a restart, converged objects are spread over a while instead of all at once.
        status = body.get("status") or {}
        ready = cond.find(status.get("conditions"), cond.READY)
        converged = (
            status.get("observedGeneration") == body.get("metadata", {}).get("generation")
            and ready is not None
            and ready.get("status") == "True"
        )
        if not converged:
            return 0.0
        return random.uniform(0, min(self.settings.resync_interval, 60.0))

    @staticmethod
    async def _sleep(handle: _Handle, stopped: kopf.DaemonStopped, delay: float | None) -> None:
        waiters = [asyncio.ensure_future(handle.wake.wait()), asyncio.ensure_future(stopped.wait())]
        try:
            await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waiter
        handle.wake.clear()

    async def finalize(self, reconciler: Reconciler[Any, Any], body: Mapping[str, Any]) -> None:
        uid = body.get("metadata", {}).get("uid", "")
        outcome = await reconciler.finalize(Resource.from_body(reconciler.info, body), self.handle(uid).state)
        if not outcome.done:
            raise kopf.TemporaryError(
                "the upstream object is not deleted yet (see the Ready condition)", delay=outcome.requeue_after or 10.0
            )
        self.forget(uid)
        meta = body.get("metadata", {})
        metrics.forget_resource(reconciler.info.kind, meta.get("namespace", ""), meta.get("name", ""))


def _secret_names(value: Any) -> set[str]:
    """Names of the Secrets a spec refers to: every ``*SecretRef``/``secretRef`` in it."""
    names: set[str] = set()
    if isinstance(value, Mapping):
        for key, item in value.items():
            if key.lower().endswith("secretref") and isinstance(item, Mapping) and item.get("name"):
                names.add(str(item["name"]))
            else:
                names |= _secret_names(item)
    elif isinstance(value, list):
        for item in value:
            names |= _secret_names(item)
    return names


def build_registry(runtime: Runtime) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    if runtime.settings.secret_label_selector:
        # Only Secrets carrying the label reach us (a server-side selector; see kopf_settings).
        @kopf.on.event("v1", "secrets", registry=registry)
        def secret_changed(body: kopf.Body, type: str | None, **_: Any) -> None:
            if type is None:
                return  # the initial listing: nothing changed
            meta = body.get("metadata", {})
            runtime.secret_changed(meta.get("namespace", ""), meta.get("name", ""))

    @kopf.on.login(registry=registry)
    async def login(**kwargs: Any) -> kopf.ConnectionInfo:
        return await runtime.login(**kwargs)

    @kopf.on.probe(registry=registry, id="reconcile")
    def reconcile_probe(**_: Any) -> dict[str, Any]:
        return runtime.liveness()

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        await runtime.aclose()

    for reconciler in runtime.reconcilers:
        _register(registry, runtime, reconciler)
    return registry


def _register(registry: kopf.OperatorRegistry, runtime: Runtime, reconciler: Reconciler[Any, Any]) -> None:
    resource = (GROUP, VERSION, reconciler.info.plural)

    @kopf.on.event(*resource, registry=registry)
    async def changed(body: kopf.Body, type: str | None, **_: Any) -> None:
        runtime.poke(reconciler.info.kind, body, type)

    # The daemon must stop between reconciles, never in the middle of an upstream call.
    @kopf.daemon(*resource, registry=registry, id="reconcile", cancellation_timeout=60.0)
    async def follow(body: kopf.Body, stopped: kopf.DaemonStopped, **_: Any) -> None:
        await runtime.follow(reconciler, body, stopped)

    @kopf.on.delete(*resource, registry=registry, id="finalize")
    async def finalize(body: kopf.Body, **_: Any) -> None:
        await runtime.finalize(reconciler, body)


class _NoDiffBase(kopf.DiffBaseStorage):
    """kopf keeps a copy of the last handled spec only to diff it for create/update handlers.

    We register none (the loop compares the spec with the upstream, not with an older
    spec), so storing it would cost one more write per object and change for nothing.
    """

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
    runtime = Runtime(settings)
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
