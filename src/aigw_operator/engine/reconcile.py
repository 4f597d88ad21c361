"""The one reconcile loop every kind shares: observe the upstream object, compare it with
the spec, act, and report. Kinds plug in through an :class:`~aigw_operator.engine.contract.Adapter`;
this module knows Kubernetes conventions but not kopf, and no upstream API.

The safety rules live in the engine, once for all kinds, and no adapter can bypass them: one
resource per upstream object (every object the loop adopts, renames onto, replaces or deletes is
checked against :mod:`~aigw_operator.engine.ownership`), the create guard for upstreams without
idempotency keys (:mod:`~aigw_operator.engine.creating`), replace (here), and deletion
(:mod:`~aigw_operator.engine.deleting`). This module holds the sequence and composes the parts;
a routine resync may be answered by :mod:`~aigw_operator.engine.shortcut` alone.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Generic

import pydantic

from aigw_operator.base import metrics
from aigw_operator.base.api import (
    EXTERNAL_ID_ANNOTATION,
    PAUSED_ANNOTATION,
    RECONCILE_REQUEST_ANNOTATION,
    SecretKeyRef,
)
from aigw_operator.base.redaction import redact
from aigw_operator.base.settings import Settings
from aigw_operator.engine import conditions as cond
from aigw_operator.engine.backoff import backoff
from aigw_operator.engine.conditions import Condition
from aigw_operator.engine.connection import ConnectionDetails
from aigw_operator.engine.context import Context, Halt, deletion_policy, management_policy, observe_only, paused
from aigw_operator.engine.contract import (
    Adapter,
    DesiredT,
    ObservedT,
    Replace,
    ReplaceInstead,
    SecretUsers,
    SpecT,
    check,
)
from aigw_operator.engine.creating import CREATE_PENDING_ANNOTATION, Creator, NotOurs
from aigw_operator.engine.deleting import Deleter
from aigw_operator.engine.observing import DRIFT_REASON, Observer
from aigw_operator.engine.ownership import Claimant
from aigw_operator.engine.reporting import Report, Reporter
from aigw_operator.engine.resource import KubeWriter, ObjectState, Outcome, Resource, unix_time
from aigw_operator.engine.shortcut import ListingShortcut
from aigw_operator.kube.credentials import Credentials, CredentialsMissing, CredentialsNotPermitted
from aigw_operator.kube.secret_protection import SecretProtection
from aigw_operator.upstreams.http import (
    AccessDenied,
    Conflict,
    InvalidSpec,
    NotFound,
    RateLimited,
    Unavailable,
    UpstreamError,
)

# Refusals by the upstream of this very spec: asked again only slowly (every
# terminal_retry_interval, with backoff), on a new generation, or when the user sets a new
# aigw.dev/reconcile-requested-at; something outside the spec (a model deployed since, an org
# prefix now owned) may have cured them.
TERMINAL_REASONS = ("InvalidSpec", "RecreateRequired")
# How far the timed retry of a refusal backs off: this many times terminal_retry_interval.
TERMINAL_RETRY_CAP = 8
PAUSED_REASON = "ReconcilePaused"
PAUSED_MESSAGE = (
    f"reconciliation is paused by the annotation {PAUSED_ANNOTATION}=true: "
    "no upstream call and no write until it is removed"
)


class ReplaceRequired(InvalidSpec):
    """The upstream cannot change a field in place and the spec does not allow a replace."""

    reason = "RecreateRequired"


class Reconciler(Generic[SpecT, DesiredT, ObservedT]):
    def __init__(
        self,
        adapter: Adapter[SpecT, DesiredT, ObservedT],
        kube: KubeWriter,
        credentials: Credentials,
        settings: Settings,
        *,
        protection: SecretProtection | None = None,
        secret_users: SecretUsers | None = None,
    ) -> None:
        check(adapter)
        self.adapter = adapter
        self.settings = settings
        self.protection = protection
        self.info = adapter.info
        reporter = Reporter(self.info.kind, kube, settings)
        self.context = Context(adapter, kube, credentials, settings, reporter, secret_users=secret_users)
        self.shortcut = ListingShortcut(self.context)
        self.creator = Creator(self.context, self.shortcut)
        self.deleter = Deleter(self.context, self.creator, self.shortcut)
        self.observer = Observer(self.context, self.creator, self.shortcut)
        self.connection = ConnectionDetails(self.context)

    # ---------------------------------------------------------------- reconcile

    async def reconcile(self, resource: Resource, state: ObjectState) -> Outcome:
        async with state.lock:
            in_flight = metrics.IN_FLIGHT.labels(self.info.kind)
            in_flight.inc()
            try:
                with metrics.RECONCILE_SECONDS.labels(self.info.kind).time():
                    return await self._reconcile(resource, state)
            except Halt as halt:
                return halt.outcome
            finally:
                in_flight.dec()

    async def _reconcile(self, resource: Resource, state: ObjectState) -> Outcome:
        context = self.context
        if paused(resource):
            # Before anything else: not even the spec is read (the removal of the annotation
            # wakes the resource, see the controller's triggers).
            await context.reporter.paused(resource, state, PAUSED_REASON, PAUSED_MESSAGE)
            return Outcome(None)
        report = Report(resource)
        report.marked = CREATE_PENDING_ANNOTATION in resource.annotations
        requested = resource.annotations.get(RECONCILE_REQUEST_ANNOTATION)
        if requested is not None:
            # Recorded by whatever this reconcile writes, so that one request is one attempt.
            report.extra_status["lastHandledReconcileAt"] = requested
        if state.refused_generation != resource.generation:
            state.refusals, state.retry_at, state.refused_generation = 0, None, resource.generation
        try:
            spec = context.parse(resource)
        except pydantic.ValidationError as exc:
            # The spec's own shape: only a new spec (or a request) is worth another look.
            report.fail("InvalidSpec", _validation_message(exc), set_ready=True)
            await context.reporter.finish(resource, state, report, warning=True)
            return Outcome(None, terminal=True)
        synced = cond.find(resource.status.get("conditions"), cond.SYNCED)
        if (
            synced
            and synced.get("status") == "False"
            and synced.get("reason") in TERMINAL_REASONS
            and synced.get("observedGeneration") == resource.generation
            and (requested is None or requested == resource.status.get("lastHandledReconcileAt"))
        ):
            # The upstream refused this very spec: asked again only when the timed retry is due.
            wait = self._until_retry(state)
            if wait > 0:
                return Outcome(wait, terminal=True)

        ref = spec.credentials_secret_ref
        observing = observe_only(resource)
        observed: ObservedT | None = None
        try:
            api_key = await context.api_key(resource, ref)
            if ref is not None and self.protection is not None and not observing:
                # Before anything exists upstream that would need this key to be deleted.
                await self.protection.protect(resource.ref.namespace, ref.name)
            desired = await self.adapter.desire(api_key, spec, context.view(resource, observing=observing))
            report.extra_status.update(self.adapter.desired_status(desired))
            connection_current = self.connection.carry(api_key, resource, spec, report)
            unchanged, listed = await self.shortcut.unchanged(api_key, resource, desired, state, report)
            if unchanged and connection_current:
                state.failures = 0
                context.claim(resource, str(resource.status["id"]))
                context.reporter.record(resource, report, list(resource.status.get("conditions") or ()))
                return Outcome(context.resync_delay(resource))
            if observing:
                observed = await self.observer.observe(api_key, resource, desired, state, report, listed=listed)
                drift = self.observer.drift(desired, observed)
                return await self._settled(api_key, spec, resource, state, report, desired, observed, drift=drift)
            try:
                observed, gone = await self._observe(api_key, resource, desired, state, report, listed=listed)
            except NotOurs as exc:
                await self.creator.not_ours(resource, state, report, exc.found)
            if gone and deletion_policy(spec.deletion_policy, resource.status) == "Orphan":
                report.fail(
                    "UpstreamDeleted",
                    f"{self.info.kind} {resource.status.get('id')} was deleted outside Kubernetes; "
                    "deletionPolicy is Orphan, so it is not recreated",
                    set_ready=True,
                    synced_status="True",
                )
                await context.reporter.finish(resource, state, report, warning=True)
                return Outcome(context.resync_delay(resource))
            if observed is not None and (other := context.claim(resource, self.adapter.upstream_id(observed))):
                await self.creator.already_managed(
                    resource, state, report, f"{context.describe(observed)} is managed by {self.info.kind} {other}"
                )
            if observed is None:
                try:
                    observed = await self.creator.create(api_key, resource, desired, state, report)
                except NotOurs as exc:
                    await self.creator.not_ours(resource, state, report, exc.found)
                if not report.adopted:
                    report.event("Normal", "Created", f"created {context.describe(observed)}")
                if gone:
                    report.event("Warning", "Recreated", "the upstream object was deleted outside Kubernetes")
            else:
                observed = await self._converge(api_key, resource, desired, state, report, observed, gone)
            if self.adapter.dependents is not None:
                report.extra_status.update(await self.adapter.dependents.settle(api_key, desired, observed))
        except CredentialsMissing as exc:
            report.fail(exc.reason, str(exc), set_ready=True)
            await context.finish(resource, state, report, observed, warning=True)
            if isinstance(exc, CredentialsNotPermitted):
                # Only a spec change (a key of its own) or the operator's settings (a restart)
                # can change the answer: look again at the resync, not every few seconds.
                return Outcome(context.resync_delay(resource))
            return Outcome(self.settings.credentials_retry_interval)
        except UpstreamError as exc:
            return await self._upstream_error(resource, state, report, exc, observed, ref)
        return await self._settled(api_key, spec, resource, state, report, desired, observed)

    async def _settled(
        self,
        api_key: str,
        spec: SpecT,
        resource: Resource,
        state: ObjectState,
        report: Report,
        desired: DesiredT,
        observed: ObservedT,
        *,
        drift: str | None = None,
    ) -> Outcome:
        """Report an upstream object the reconcile has brought to the spec, or (``drift``)
        observed without changing it."""
        context = self.context
        state.failures = 0
        state.refusals, state.retry_at = 0, None
        context.claim(resource, self.adapter.upstream_id(observed))
        readiness = self.adapter.readiness(desired, observed)
        report.set(Condition(cond.READY, "True" if readiness.ready else "False", readiness.reason, readiness.message))
        if drift is None:
            report.set(Condition(cond.SYNCED, "True", "ReconcileSuccess"))
        else:
            report.set(Condition(cond.SYNCED, "False", DRIFT_REASON, drift))
            report.event("Warning", DRIFT_REASON, drift)
        if self.adapter.traits.progressing:
            moving = readiness.progressing
            report.set(
                Condition(
                    cond.PROGRESSING,
                    "True" if moving else "False",
                    readiness.reason if moving else "Settled",
                    readiness.message if moving else "",
                )
            )
        await self.connection.write(api_key, resource, spec, desired, observed, report)
        await context.finish(resource, state, report, observed)
        await self.creator.record_identity(resource, state, report, self.adapter.upstream_id(observed))
        if readiness.progressing:
            return Outcome(self.settings.short_poll_interval)
        return Outcome(context.resync_delay(resource))

    async def _observe(
        self,
        api_key: str,
        resource: Resource,
        desired: DesiredT,
        state: ObjectState,
        report: Report,
        *,
        listed: ObservedT | None = None,
    ) -> tuple[ObservedT | None, bool]:
        """The upstream object and whether a previously known one has disappeared."""
        known_id = resource.known_id
        gone = False
        if known_id:
            try:
                observed = listed if listed is not None else await self.adapter.get(api_key, desired, known_id)
                state.observed_at = time.monotonic()
                if resource.status.get("adopted") or not resource.status.get("id"):
                    # Named by the user, not created here: deleted only with deletionPolicy: Delete.
                    report.extra_status["adopted"] = True
                    if not resource.status.get("id"):
                        report.adopted = True
                        message = f"adopted {self.context.describe(observed)}, named by {EXTERNAL_ID_ANNOTATION}"
                        report.event("Normal", "Adopted", message)
                return observed, False
            except NotFound:
                if not resource.status.get("id"):
                    raise InvalidSpec(
                        upstream=self.adapter.upstream,
                        status=404,
                        message=f"annotation {EXTERNAL_ID_ANNOTATION}={known_id} names no upstream object",
                        method="GET",
                        route="",
                    ) from None
                gone = True
        found = await self.creator.find(api_key, resource, desired, state)
        if found is not None:
            found = await self.creator.adopt(resource, state, report, found)
        return found, gone

    async def _converge(
        self,
        api_key: str,
        resource: Resource,
        desired: DesiredT,
        state: ObjectState,
        report: Report,
        observed: ObservedT,
        gone: bool,
    ) -> ObservedT:
        """Bring an existing upstream object to the spec: in place, or by a replace."""
        replace = self.adapter.replacement(desired, observed)
        changes = self.adapter.diff(desired, observed)
        if replace is None and not changes:
            return observed
        if taken := await self.creator.key_taken(api_key, resource, desired, state, observed):
            await self.creator.already_managed(resource, state, report, taken, observed=observed)
        if replace is not None:
            self._refuse_replace_if_no_delete(resource, replace.fields, observed)
            if not replace.allowed:
                raise ReplaceRequired(self.adapter.upstream, None, replace.refusal, method="PATCH", route="")
            return await self._replace(api_key, resource, desired, state, report, observed, replace)
        assert changes is not None
        before = observed
        try:
            observed = await self.adapter.update(api_key, observed, desired, changes)
        except ReplaceInstead as instead:
            self._refuse_replace_if_no_delete(resource, instead.fields, observed)
            replace = Replace(instead.fields, "create-first", allowed=True)
            return await self._replace(api_key, resource, desired, state, report, observed, replace)
        self.shortcut.remember(api_key, desired, observed)
        fields = ", ".join(sorted(changes))
        described = self.adapter.describe_update(desired, changes, before)
        for event in described:
            report.event(*event)
        if described:
            pass  # the adapter's own words say what happened
        elif resource.status.get("observedGeneration") == resource.generation and not gone and not report.adopted:
            report.event("Normal", "DriftCorrected", f"upstream differed from the spec in: {fields}")
        else:
            report.event("Normal", "Updated", f"updated {fields}")
        return observed

    def _refuse_replace_if_no_delete(self, resource: Resource, fields: tuple[str, ...], old: ObservedT) -> None:
        if management_policy(resource) == "NoDelete":
            raise ReplaceRequired(
                self.adapter.upstream,
                None,
                f"changing {', '.join(fields)} needs a new upstream object in place of {self.context.describe(old)}, "
                "which would then be deleted, and managementPolicy is NoDelete: neither is done. Revert the "
                "change, or set managementPolicy: Full to allow the replace",
                method="PATCH",
                route="",
            )

    async def _replace(
        self,
        api_key: str,
        resource: Resource,
        desired: DesiredT,
        state: ObjectState,
        report: Report,
        old: ObservedT,
        replace: Replace,
    ) -> ObservedT:
        """A new object in place of ``old``, in the order the kind declares; the new one is made
        by the same create (guard, adoption rules) as any other."""
        old_id = self.adapter.upstream_id(old)
        if replace.order == "delete-first":
            await self.deleter.delete_quietly(api_key, desired, old_id)
            new = await self.creator.create(api_key, resource, desired, state, report)
        else:
            new = await self.creator.create(api_key, resource, desired, state, report)
            if self.adapter.upstream_id(new) != old_id:
                await self.deleter.delete_quietly(api_key, desired, old_id)
        # An adopted replacement (left by a replace cut off before its delete) may differ still.
        if changes := self.adapter.diff(desired, new):
            new = await self.adapter.update(api_key, new, desired, changes)
            self.shortcut.remember(api_key, desired, new)
        described = self.adapter.describe_replace(desired, replace, old)
        for event in described:
            report.event(*event)
        if not described:
            describe = self.context.describe
            report.event(
                "Normal",
                "Replaced",
                f"replaced {describe(old)} with {describe(new)} to change "
                f"{', '.join(replace.fields)}, which cannot be changed in place",
            )
        return new

    # ---------------------------------------------------------------- refusals

    def _refusal_delay(self, state: ObjectState) -> float:
        """When a refused spec is asked again: about terminal_retry_interval after the first
        refusal, doubling with each further one (jittered, never sooner than half of it)."""
        interval = self.settings.terminal_retry_interval
        return backoff(max(state.refusals - 1, 0), interval, interval * TERMINAL_RETRY_CAP)

    def _until_retry(self, state: ObjectState) -> float:
        """Seconds until the refused spec is due to be asked again (0: now). A refusal this
        process did not see (reported before a restart) is first asked again after a delay,
        not at once: a restart must not ask every refused resource at the same moment."""
        now = time.monotonic()
        if state.retry_at is None:
            state.refusals = max(state.refusals, 1)
            state.retry_at = now + self._refusal_delay(state)
        wait = state.retry_at - now
        # The work queue runs a key at its due time or a little after; a hair early counts.
        if wait <= 0.01:
            state.retry_at = None
            return 0.0
        return wait

    # ---------------------------------------------------------------- errors

    async def _upstream_error(
        self,
        resource: Resource,
        state: ObjectState,
        report: Report,
        exc: UpstreamError,
        observed: ObservedT | None,
        ref: SecretKeyRef | None,
    ) -> Outcome:
        context = self.context
        message = redact(exc.message or str(exc))
        ready_known = observed is not None or cond.find(resource.status.get("conditions"), cond.READY) is not None
        if isinstance(exc, InvalidSpec | Conflict):
            report.fail(exc.reason or "InvalidSpec", message, set_ready=True)
            await context.finish(resource, state, report, observed, warning=True)
            state.refusals += 1
            delay = self._refusal_delay(state)
            state.retry_at = time.monotonic() + delay
            return Outcome(delay, terminal=True)
        if isinstance(exc, AccessDenied):
            context.credentials.invalidate(resource.ref.namespace, ref)
            report.fail("AccessDenied", message, set_ready=True)
            await context.finish(resource, state, report, observed, warning=True)
            return Outcome(self.settings.access_denied_retry_interval)
        if isinstance(exc, RateLimited):
            report.fail("RateLimited", message, set_ready=not ready_known)
            await context.finish(resource, state, report, observed, warning=True)
            return Outcome(max(exc.retry_after, 0.1))
        # Unavailable, or a 404 on a call other than the initial observe (the object vanished
        # mid-reconcile): both settle at the next attempt.
        reason = exc.reason or ("UpstreamUnavailable" if isinstance(exc, Unavailable) else "UpstreamChanged")
        state.failures += 1
        report.fail(reason, message, set_ready=not ready_known)
        await context.finish(resource, state, report, observed, warning=True)
        return Outcome(context.backoff(state.failures))

    # ---------------------------------------------------------------- deletion

    async def finalize(self, resource: Resource, state: ObjectState) -> Outcome:
        return await self.deleter.finalize(resource, state)

    # ---------------------------------------------------------------- ownership

    def note(self, body: Mapping[str, Any]) -> None:
        """What the watch shows: the upstream object this resource's status names, so that every
        owner is known before any reconcile runs (after a restart, in whatever order). Read from
        the event's body as it is: this runs for every watch event."""
        meta = body.get("metadata") or {}
        claimant = Claimant(
            unix_time(meta.get("creationTimestamp")) or 0.0,
            meta.get("uid", ""),
            f"{meta.get('namespace', '')}/{meta.get('name', '')}",
        )
        self.context.ownership.record(claimant, (body.get("status") or {}).get("id"))

    def forget(self, uid: str) -> None:
        self.context.ownership.release(uid)
        self.connection.forget(uid)


def _validation_message(exc: pydantic.ValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        location = ".".join(str(p) for p in error["loc"])
        parts.append(f"spec.{location}: {error['msg']}")
    return "; ".join(parts)
