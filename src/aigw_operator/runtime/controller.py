"""The controller: which objects exist, when each one's loop runs next, and what it waits for.

Every watch event updates the object's handle; a change the loop acts on (spec, finalizer,
deletion, annotations) queues it at once. Each kind has a work queue and a pool of workers
that run the level-based loop (observe, diff, act, report) and queue the object again for
the next resync, the short poll or a backoff. Deletion shares the object's lock with the
loop. Nothing here knows kopf: operator.py feeds it watch events and deletions.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aigw_operator import FINALIZER
from aigw_operator.base import metrics
from aigw_operator.base.api import (
    EXTERNAL_ID_ANNOTATION,
    PAUSED_ANNOTATION,
    RECONCILE_REQUEST_ANNOTATION,
    RESYNC_ANNOTATION,
    SecretKeyRef,
)
from aigw_operator.base.settings import Settings, UpstreamSettings
from aigw_operator.engine import conditions as cond
from aigw_operator.engine.backoff import backoff
from aigw_operator.engine.reconcile import Reconciler
from aigw_operator.engine.reporting import reconcile_result
from aigw_operator.engine.resource import ObjectState, Resource
from aigw_operator.engine.workqueue import WorkQueue
from aigw_operator.kube.client import Connection, CorePlural, KubeClient, ObjectRef
from aigw_operator.kube.credentials import Credentials, KeyScope
from aigw_operator.kube.secret_protection import SecretProtection
from aigw_operator.registry import KINDS, Kind
from aigw_operator.upstreams.http import UpstreamClient

logger = logging.getLogger("aigw_operator.controller")
# How long a reconcile waits for the watch event of the loop's own last write; a relisted
# watch may skip that version, so the wait is bounded.
_CATCH_UP_SECONDS = 5.0
# How many of an object's latest resourceVersions are remembered for that check.
_SEEN_VERSIONS = 16


class Fenced(Exception):
    """This process lost its Lease: it may not write any more."""


class _LazyKube:
    """The Kubernetes client exists only after login; reconcilers are built before."""

    def __init__(self) -> None:
        self.client: KubeClient | None = None
        self.fenced = False

    def _require(self, *, write: bool = True) -> KubeClient:
        if write and self.fenced:
            raise Fenced("no longer the leader: not writing")
        if self.client is None:
            raise RuntimeError("not logged in to the Kubernetes API yet")
        return self.client

    async def get_secret(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return await self._require(write=False).get_secret(namespace, name)

    async def patch_status(self, ref: ObjectRef, status: Mapping[str, Any]) -> str | None:
        return await self._require().patch_status(ref, status)

    async def post_event(self, ref: ObjectRef, type_: str, reason: str, message: str) -> None:
        await self._require().post_event(ref, type_, reason, message)

    async def patch_annotations(
        self, ref: ObjectRef, annotations: Mapping[str, str | None], *, expect_version: str | None = None
    ) -> str | None:
        return await self._require().patch_annotations(ref, annotations, expect_version=expect_version)

    async def set_secret_finalizers(
        self, namespace: str, name: str, finalizers: list[str], resource_version: str
    ) -> bool:
        return await self._require().set_secret_finalizers(namespace, name, finalizers, resource_version)

    async def get_core(self, plural: CorePlural, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._require(write=False).get_core(plural, namespace, name)

    async def create_core(self, plural: CorePlural, namespace: str, body: Mapping[str, Any]) -> dict[str, Any] | None:
        return await self._require().create_core(plural, namespace, body)

    async def replace_core(
        self, plural: CorePlural, namespace: str, name: str, body: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        return await self._require().replace_core(plural, namespace, name, body)

    async def delete_core(self, plural: CorePlural, namespace: str, name: str, *, uid: str) -> None:
        await self._require().delete_core(plural, namespace, name, uid=uid)


@dataclass
class _Handle:
    """One watched object: its loop state and the latest body its watch events brought."""

    kind: str
    body: Mapping[str, Any]
    state: ObjectState = field(default_factory=ObjectState)
    # What, when it changes, calls for a reconcile now (see poke).
    trigger: tuple[Any, ...] | None = None
    # Waiting for the watch to bring our own last write before the next reconcile.
    deferred: bool = False
    # resourceVersions the watch brought lately: the event of our own write can arrive before
    # the write's response tells us its version (resourceVersions are opaque: never compared).
    seen: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=_SEEN_VERSIONS))


def _upstream_client(kind: Kind, upstream: UpstreamSettings) -> UpstreamClient:
    return kind.new_client(
        upstream.base_url,
        timeout=upstream.timeout,
        max_retries=upstream.max_retries,
        backoff_base=upstream.backoff_base,
        backoff_cap=upstream.backoff_cap,
        max_inline_retry_after=upstream.max_inline_retry_after,
        rate_limit_per_second=upstream.rate_limit_per_second,
        observer=metrics.observe_upstream,
        retry_observer=metrics.observe_retry,
    )


class Controller:
    """Everything the handlers share: settings, clients, and the per-object handles."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.kube = _LazyKube()
        # One client per upstream, shared by the kinds on it.
        self.upstreams = {kind.upstream: _upstream_client(kind, settings.upstream(kind.upstream)) for kind in KINDS}
        adapters = [kind.adapter(self.upstreams[kind.upstream], settings) for kind in KINDS]
        self.credentials = Credentials(
            self.kube,
            {
                adapter.upstream: settings.upstream(kind.upstream).api_key
                for kind, adapter in zip(KINDS, adapters, strict=True)
            },
            ttl=settings.credentials_cache_ttl,
            scopes={
                adapter.upstream: KeyScope.of(
                    kind.upstream, settings.upstream(kind.upstream).default_key_namespaces, settings.operator_namespace
                )
                for kind, adapter in zip(KINDS, adapters, strict=True)
            },
            default_files={
                adapter.upstream: settings.upstream(kind.upstream).api_key_file
                for kind, adapter in zip(KINDS, adapters, strict=True)
            },
        )
        self.protection = SecretProtection(self.kube)
        self.reconcilers: list[Reconciler[Any, Any, Any]] = [
            Reconciler(adapter, self.kube, self.credentials, settings, protection=self.protection, secret_users=self)
            for adapter in adapters
        ]
        self.handles: dict[str, _Handle] = {}
        # One queue and pool of workers per kind: a kind slowed by its upstream's rate limit
        # holds up only its own objects.
        self.queues: dict[str, WorkQueue] = {}
        self._reconciler_of = {reconciler.info.kind: reconciler for reconciler in self.reconcilers}
        # When an object's loop last finished a step: the liveness probe fails if this stalls.
        self.progress_at = time.monotonic()
        self._untrack: Callable[[], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def forget(self, uid: str) -> None:
        handle = self.handles.pop(uid, None)
        if handle is None:
            return
        self._reconciler_of[handle.kind].forget(uid)
        self.protection.forget(uid)
        if handle.kind in self.queues:
            self.queues[handle.kind].forget(uid)

    def wake(self, uid: str, delay: float = 0.0) -> None:
        handle = self.handles.get(uid)
        if handle is not None and handle.kind in self.queues:
            self.queues[handle.kind].schedule(uid, delay)

    def refers(self, kind: str, namespace: str, ref: SecretKeyRef, *, besides: str) -> bool:
        """Whether a live resource of ``kind`` in ``namespace`` other than ``besides`` names this
        Secret key anywhere in its spec (any ``*secretRef``)."""
        for uid, handle in self.handles.items():
            meta = handle.body.get("metadata", {})
            if uid == besides or handle.kind != kind or meta.get("namespace") != namespace:
                continue
            if meta.get("deletionTimestamp"):
                continue
            if (ref.name, ref.key) in _secret_keys(handle.body.get("spec")):
                return True
        return False

    def secret_changed(self, namespace: str, name: str) -> None:
        """A Secret we were told about changed: read it again, and wake whoever refers to it."""
        self.credentials.forget_secret(namespace, name)
        for uid, handle in self.handles.items():
            if handle.body.get("metadata", {}).get("namespace") == namespace and name in _secret_names(
                handle.body.get("spec")
            ):
                self.wake(uid)

    async def connect(self, connection: Connection) -> None:
        """(Re)connect to the API server, e.g. after a login with fresh credentials."""
        old = self.kube.client
        self.kube.client = KubeClient(connection)
        if old is not None:
            await old.aclose()

    def start(self) -> None:
        for reconciler in self.reconcilers:
            queue = WorkQueue(reconciler.info.kind, self.step, workers=self.settings.workers_per_kind)
            self.queues[reconciler.info.kind] = queue
            metrics.controller_started(reconciler.info.kind, self.settings.workers_per_kind)
            queue.start()
        # The per-kind gauges count this controller's objects while it runs (on the leader).
        self._loop = asyncio.get_running_loop()
        self._untrack = metrics.MANAGED.sources.track(self.managed_resources)

    def managed_resources(self) -> dict[str, list[Sequence[Mapping[str, Any]]]]:
        """Each kind's objects, by the conditions their latest watch event shows (none once the
        event loop no longer runs: a crashed controller knows nothing). Called from the metrics'
        thread, so it reads the handles at once (a copy) and changes nothing."""
        if self._loop is None or not self._loop.is_running():
            return {}
        found: dict[str, list[Sequence[Mapping[str, Any]]]] = {kind: [] for kind in self._reconciler_of}
        for handle in list(self.handles.values()):
            conditions = (handle.body.get("status") or {}).get("conditions") or ()
            found.setdefault(handle.kind, []).append(list(conditions))
        return found

    def fence(self) -> None:
        """The Lease is lost: from now on nothing is written, and nothing in flight finishes."""
        self.kube.fenced = True

    async def aclose(self) -> None:
        # Reconciles in flight end first: cut off after an upstream POST, the object created
        # would be known to nobody. Fenced, another process may lead already: cut them off.
        timeout = 0.0 if self.kube.fenced else 60.0
        if self._untrack is not None:
            self._untrack()
        await asyncio.gather(*(queue.stop(timeout=timeout) for queue in self.queues.values()))
        await self.protection.aclose()
        for client in self.upstreams.values():
            await client.aclose()
        if self.kube.client is not None:
            await self.kube.client.aclose()

    # ------------------------------------------------------------ per-object handlers

    def poke(self, kind: str, body: Mapping[str, Any], event_type: str | None) -> None:
        """Every watch event: keep the latest body; queue the object when something it acts on
        changed (not for our own status writes), and when first seen."""
        meta = body.get("metadata", {})
        uid = meta.get("uid", "")
        if event_type == "DELETED":
            self.forget(uid)
            return
        annotations = meta.get("annotations") or {}
        external_id = annotations.get(EXTERNAL_ID_ANNOTATION)
        trigger = (
            meta.get("generation"),
            # A user naming an object acts; the operator recording the id it has does not.
            None if external_id == (body.get("status") or {}).get("id") else external_id,
            annotations.get(RESYNC_ANNOTATION),
            # A pause takes effect, and its removal resumes, at once; so does a request.
            annotations.get(PAUSED_ANNOTATION),
            annotations.get(RECONCILE_REQUEST_ANNOTATION),
            FINALIZER in (meta.get("finalizers") or ()),
            bool(meta.get("deletionTimestamp")),
        )
        reconciler = self._reconciler_of[kind]
        reconciler.note(body)
        credentials = (body.get("spec") or {}).get("credentialsSecretRef") or {}
        self.protection.note(uid, meta.get("namespace", ""), credentials.get("name"))
        handle = self.handles.get(uid)
        if handle is None:
            handle = self.handles[uid] = _Handle(kind, body, trigger=trigger)
            handle.seen.append(meta.get("resourceVersion", ""))
            self.wake(uid, self._initial_delay(body))
            return
        handle.body = body
        handle.seen.append(meta.get("resourceVersion", ""))
        if self._caught_up(handle) and handle.deferred:
            handle.deferred = False
            self.wake(uid)
        if handle.trigger != trigger:
            handle.trigger = trigger
            self.wake(uid)

    async def step(self, uid: str) -> float | None:
        """One pass of an object's level-based loop; seconds until the next (None: when woken)."""
        handle = self.handles.get(uid)
        if handle is None:
            return None
        reconciler = self._reconciler_of[handle.kind]
        meta = handle.body.get("metadata", {})
        if meta.get("deletionTimestamp"):
            return None  # the deletion handler has it now
        if FINALIZER not in (meta.get("finalizers") or ()):
            # Never create upstream before the finalizer guarantees we will see the deletion.
            # Its arrival queues the object again (poke).
            return None
        if not self._caught_up(handle) and time.monotonic() - handle.state.written_at < _CATCH_UP_SECONDS:
            # The body predates our last write (e.g. woken during the reconcile that made it):
            # acting on it could create what that reconcile created. Its watch event wakes us.
            handle.deferred = True
            logger.debug(
                "%s %s/%s: waiting for the watch to bring resourceVersion %s",
                handle.kind,
                meta.get("namespace"),
                meta.get("name"),
                handle.state.written_version,
            )
            return _CATCH_UP_SECONDS
        handle.state.reported_failure = None
        terminal = False
        try:
            outcome = await reconciler.reconcile(Resource.from_body(reconciler.info, handle.body), handle.state)
            delay, terminal = outcome.requeue_after, outcome.terminal
            result = reconcile_result(handle.state.reported_failure, delay, self.settings.short_poll_interval)
        except Exception:
            result = "error"
            handle.state.failures += 1
            delay = backoff(
                handle.state.failures - 1, self.settings.error_backoff_base, self.settings.error_backoff_cap
            )
            logger.exception(
                "reconcile of %s %s/%s failed; retrying in %.0fs",
                handle.kind,
                meta.get("namespace"),
                meta.get("name"),
                delay,
                extra={"kind": handle.kind, "namespace": meta.get("namespace"), "object_name": meta.get("name")},
            )
        # A refusal asked again only slowly is terminal still: only a change is expected to cure it.
        metrics.reconciled(handle.kind, result, terminal=result == "error" and (delay is None or terminal))
        self.progress_at = time.monotonic()
        return delay

    @staticmethod
    def _caught_up(handle: _Handle) -> bool:
        """Whether the watch has brought our own last write to this object (in either order)."""
        state = handle.state
        if state.written_version is not None and state.written_version in handle.seen:
            state.written_version = None
        return state.written_version is None

    def liveness(self) -> dict[str, Any]:
        """For kopf's health endpoint: fails when work that is due has been held up too long.

        Objects that are terminal, being deleted or on a long resync are simply not due, so a
        quiet operator is healthy; a worker pool blocked on one step, or a dispatcher that no
        longer hands out due objects, is not.
        """
        stalled = max((queue.stalled_for() for queue in self.queues.values()), default=0.0)
        limit = self.settings.liveness_stall_seconds
        if stalled > limit:
            raise RuntimeError(f"work due {stalled:.0f}s ago is still waiting or running ({len(self.handles)} objects)")
        return {
            "objects": len(self.handles),
            "seconds_since_progress": round(time.monotonic() - self.progress_at, 1),
            "longest_stall_seconds": round(stalled, 1),
        }

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
        return random.uniform(0, min(self.settings.resync_interval, self.settings.restart_spread))

    async def finalize(self, reconciler: Reconciler[Any, Any, Any], body: Mapping[str, Any]) -> float | None:
        """Seconds until deletion is tried again (None: done, the finalizer may go)."""
        uid = body.get("metadata", {}).get("uid", "")
        handle = self.handles.get(uid)
        state = handle.state if handle is not None else ObjectState()
        kind = reconciler.info.kind
        # A deletion is a reconcile too, in controller-runtime's metrics.
        state.reported_failure = None
        try:
            with metrics.RECONCILE_SECONDS.labels(kind).time():
                outcome = await reconciler.finalize(Resource.from_body(reconciler.info, body), state)
        except Exception:
            metrics.reconciled(kind, "error")
            raise
        if not outcome.done:
            short_poll = self.settings.short_poll_interval
            metrics.reconciled(kind, reconcile_result(state.reported_failure, outcome.requeue_after, short_poll))
            return outcome.requeue_after or 10.0
        metrics.reconciled(kind, "success")
        self.forget(uid)
        return None


def _secret_keys(value: Any) -> set[tuple[str, str]]:
    """(name, key) of every ``*SecretRef``/``secretRef`` in a spec, the key defaulted as the CRDs do."""
    found: set[tuple[str, str]] = set()
    if isinstance(value, Mapping):
        for key, item in value.items():
            if key.lower().endswith("secretref") and isinstance(item, Mapping) and item.get("name"):
                found.add((str(item["name"]), str(item.get("key") or "apiKey")))
            else:
                found |= _secret_keys(item)
    elif isinstance(value, list):
        for item in value:
            found |= _secret_keys(item)
    return found


def _secret_names(value: Any) -> set[str]:
    """Names of the Secrets a spec refers to."""
    return {name for name, _ in _secret_keys(value)}
