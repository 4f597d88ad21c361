"""What a reconcile tells the world: conditions, status, Events and metrics.

A reconcile decides on a :class:`Report`; :class:`Reporter` turns it into at most one status
write (none when nothing changed, so that a resync that finds nothing new costs nothing and
Argo CD sees no churn) and Events, Warnings deduplicated per object over
``event_dedupe_seconds``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from aigw_operator.base import metrics
from aigw_operator.base.redaction import redact
from aigw_operator.base.settings import Settings
from aigw_operator.engine import conditions as cond
from aigw_operator.engine.conditions import Condition
from aigw_operator.engine.contract import Event
from aigw_operator.engine.resource import KubeWriter, ObjectState, Resource

logger = logging.getLogger("aigw_operator.reconcile")

# Failures the loop retries by itself (reported as result="requeue" in the metrics, as
# Crossplane's managed reconciler requeues an external API's error after recording it).
TRANSIENT_REASONS = (
    "HardwareUnavailable",
    "UpstreamUnavailable",
    "UpstreamChanged",
    "RateLimited",
    "CredentialsMissing",
    "DeletionBlocked",
    "CreatePending",
)


def reconcile_result(failure: str | None, requeue_after: float | None, short_poll: float) -> str:
    """controller-runtime's result label for a reconcile that reported ``failure`` (its reason,
    or None) and is due again in ``requeue_after`` seconds (None: when something changes).

    ``error``: a failure only a change can cure (terminal when not requeued); ``requeue``: a
    transient failure, retried by the loop; ``requeue_after``: no failure, but polled again at
    the short interval (the upstream object is still moving); ``success``: no failure, and
    due again at the resync, if at all. A reconcile that raised is an ``error`` too.
    """
    if failure is not None:
        return "requeue" if failure in TRANSIENT_REASONS else "error"
    if requeue_after is not None and requeue_after <= short_poll:
        return "requeue_after"
    return "success"


class Report:
    """Conditions and Events a reconcile has decided on."""

    def __init__(self, resource: Resource) -> None:
        self.resource = resource
        self.conditions: list[Condition] = []
        self.events: list[Event] = []
        self.failure: tuple[str, str] | None = None
        self.adopted = False
        # This reconcile (or an earlier one) wrote the create-pending mark.
        self.marked = False
        # Status fields beyond the main upstream object's (e.g. the secrets it refers to).
        self.extra_status: dict[str, Any] = {}

    def set(self, condition: Condition) -> None:
        self.conditions = [c for c in self.conditions if c.type != condition.type] + [condition]

    def event(self, type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))

    def fail(self, reason: str, message: str, *, set_ready: bool, synced_status: cond.Status = "False") -> None:
        # Transient errors leave an existing Ready condition alone: the upstream object is
        # probably still serving; only Synced says the last attempt failed.
        self.failure = (reason, message)
        if set_ready:
            self.set(Condition(cond.READY, "False", reason, message))
        self.set(Condition(cond.SYNCED, synced_status, reason, message))


class Reporter:
    def __init__(self, kind: str, kube: KubeWriter, settings: Settings) -> None:
        self.kind = kind
        self.kube = kube
        self.settings = settings

    async def finish(
        self,
        resource: Resource,
        state: ObjectState,
        report: Report,
        *,
        warning: bool = False,
        observed_status: Mapping[str, Any] | None = None,
    ) -> None:
        """Post the report's Events and write the status it implies, if that differs."""
        state.reported_failure = report.failure[0] if report.failure else None
        status: dict[str, Any] = {}
        if observed_status is not None:
            status.update(observed_status)
        elif resource.status.get("id"):
            status.update({k: v for k, v in resource.status.items() if k not in ("conditions", "observedGeneration")})
        status.update(report.extra_status)
        status["observedGeneration"] = resource.generation
        status["conditions"] = cond.merge_conditions(
            resource.status.get("conditions"), report.conditions, resource.generation
        )
        status = {k: v for k, v in status.items() if v is not None}
        self.record(resource, report, status["conditions"])
        # Events first: whoever waits for the status to change then finds the Events too.
        for type_, reason, message in report.events:
            await self.post(resource, state, type_, reason, message)
        if warning and report.failure:
            reason, message = report.failure
            await self.post(resource, state, "Warning", reason, message)
        if _status_differs(resource.status, status):
            # Keys we no longer report are removed by a merge-patch null.
            patch: dict[str, Any] = {k: None for k in resource.status if k not in status}
            patch.update(status)
            state.wrote(await self.kube.patch_status(resource.ref, patch))

    async def paused(self, resource: Resource, state: ObjectState, reason: str, message: str) -> None:
        """Say that the loop leaves ``resource`` alone: Synced=False with ``reason`` (every other
        condition and status field as it was) and one Normal Event, written only when that
        changes, so that a paused resource resynced again costs nothing."""
        state.reported_failure = None
        current = list(resource.status.get("conditions") or ())
        synced = cond.find(current, cond.SYNCED)
        conditions = cond.merge_conditions(
            current, [Condition(cond.SYNCED, "False", reason, message)], resource.generation
        )
        if not (synced and synced.get("status") == "False" and synced.get("reason") == reason):
            await self.post(resource, state, "Normal", reason, message)
        if conditions != current:
            state.wrote(await self.kube.patch_status(resource.ref, {"conditions": conditions}))

    def record(self, resource: Resource, report: Report, conditions: list[dict[str, Any]]) -> None:
        """The metrics a report moves. The reconcile's result is counted by whoever ran it (the
        controller), and the Ready and Synced gauges are counted from the objects themselves."""
        kind = self.kind
        if report.failure is not None:
            metrics.RECONCILE_FAILURES.labels(kind, report.failure[0]).inc()
        ready = cond.find(conditions, cond.READY)
        is_ready = bool(ready and ready.get("status") == "True")
        was_ever_ready = any(
            c.get("type") == cond.READY and c.get("status") == "True" for c in resource.status.get("conditions") or ()
        )
        if is_ready and not was_ever_ready and not resource.status.get("id") and resource.created:
            seconds = max(time.time() - resource.created, 0.0)
            metrics.FIRST_TIME_TO_READINESS.labels(metrics.gvk(kind)).observe(seconds)
        if any(reason == "DriftCorrected" for _, reason, _ in report.events):
            metrics.DRIFT_CORRECTIONS.labels(kind).inc()

    async def post(self, resource: Resource, state: ObjectState, type_: str, reason: str, message: str) -> None:
        key = (reason, message)
        now = time.monotonic()
        last = state.events.get(key)
        if type_ == "Warning" and last is not None and now - last < self.settings.event_dedupe_seconds:
            return
        state.events[key] = now
        level = logging.WARNING if type_ == "Warning" else logging.INFO
        ref = resource.ref
        logger.log(
            level,
            "%s %s/%s: %s: %s",
            self.kind,
            ref.namespace,
            ref.name,
            reason,
            message,
            extra={"kind": self.kind, "namespace": ref.namespace, "object_name": ref.name},
        )
        try:
            await self.kube.post_event(ref, type_, reason, message)
        except Exception as exc:  # an Event is best effort: never fail a reconcile for it
            logger.warning("could not post Event %s for %s/%s: %s", reason, ref.namespace, ref.name, redact(str(exc)))


def _status_differs(current: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    return any(current.get(k) != v for k, v in wanted.items()) or any(k not in wanted for k in current)
