"""The one reconcile loop every kind shares: observe the upstream object, compare it with
the spec, act, and report. Kinds plug in through an :class:`~aigw_operator.engine.contract.Adapter`;
this module knows Kubernetes conventions but not kopf, and no upstream API.

The safety rules live here, once for all kinds, and no adapter can bypass them: one resource
per upstream object (every object the loop adopts, renames onto, replaces or deletes is checked
against :mod:`~aigw_operator.engine.ownership`), the create guard for upstreams without idempotency
keys, replace, and deletion.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Mapping
from typing import Any, Generic, cast

import pydantic

from aigw_operator.base import metrics
from aigw_operator.base.api import EXTERNAL_ID_ANNOTATION, RESYNC_ANNOTATION, SecretKeyRef
from aigw_operator.base.redaction import redact
from aigw_operator.base.settings import Settings
from aigw_operator.engine import conditions as cond
from aigw_operator.engine.backoff import backoff
from aigw_operator.engine.conditions import Condition
from aigw_operator.engine.contract import (
    Adapter,
    DesiredT,
    KubeView,
    Listing,
    ObservedT,
    PartialListing,
    Replace,
    ReplaceInstead,
    SpecT,
    check,
)
from aigw_operator.engine.listings import Listings
from aigw_operator.engine.ownership import Claimant, Ownership
from aigw_operator.engine.reporting import Report, Reporter
from aigw_operator.engine.resource import KubeWriter, ObjectState, Outcome, Resource, unix_time
from aigw_operator.kube.client import WriteConflict
from aigw_operator.kube.credentials import Credentials, CredentialsMissing, SecretValue
from aigw_operator.kube.secret_protection import SecretProtection
from aigw_operator.upstreams.http import (
    AccessDenied,
    Conflict,
    InvalidSpec,
    NotFound,
    RateLimited,
    Unavailable,
    UpstreamError,
    credential_fingerprint,
)

logger = logging.getLogger("aigw_operator.reconcile")

# When an adapter's create is costly to duplicate, the time a create was last attempted.
CREATE_PENDING_ANNOTATION = "aigw.dev/create-pending"
# How old a shared listing may be when it is searched for an object to create, or used as the
# observation itself: a create the listing missed is refused by the upstream's unique key and
# then found by a fresh listing.
FIND_LISTING_MAX_AGE = 2.0

# Refusals that only a new spec can cure: no upstream call until the generation changes.
TERMINAL_REASONS = ("InvalidSpec", "RecreateRequired")


class ReplaceRequired(InvalidSpec):
    """The upstream cannot change a field in place and the spec does not allow a replace."""

    reason = "RecreateRequired"


class _Halt(Exception):
    """A reconcile that has reported why it stops here, and when to come back."""

    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome


class Reconciler(Generic[SpecT, DesiredT, ObservedT]):
    def __init__(
        self,
        adapter: Adapter[SpecT, DesiredT, ObservedT],
        kube: KubeWriter,
        credentials: Credentials,
        settings: Settings,
        *,
        protection: SecretProtection | None = None,
    ) -> None:
        check(adapter)
        self.adapter = adapter
        self.kube = kube
        self.credentials = credentials
        self.settings = settings
        self.protection = protection
        self.info = adapter.info
        self.reporter = Reporter(self.info.kind, kube, settings)
        # Which resource manages which upstream object: one upstream object, one resource.
        self.ownership = Ownership()
        self.listings = Listings()
        self._lister: Listing[DesiredT, ObservedT] | PartialListing[DesiredT, ObservedT] | None = (
            adapter.listing or adapter.partial_listing
        )

    # ---------------------------------------------------------------- reconcile

    async def reconcile(self, resource: Resource, state: ObjectState) -> Outcome:
        async with state.lock:
            in_flight = metrics.IN_FLIGHT.labels(self.info.kind)
            in_flight.inc()
            try:
                with metrics.RECONCILE_SECONDS.labels(self.info.kind).time():
                    return await self._reconcile(resource, state)
            except _Halt as halt:
                return halt.outcome
            finally:
                in_flight.dec()

    async def _reconcile(self, resource: Resource, state: ObjectState) -> Outcome:
        report = Report(resource)
        report.marked = CREATE_PENDING_ANNOTATION in resource.annotations
        try:
            spec = self._parse(resource)
        except pydantic.ValidationError as exc:
            report.fail("InvalidSpec", _validation_message(exc), set_ready=True)
            await self.reporter.finish(resource, state, report, warning=True)
            return Outcome(None)
        synced = cond.find(resource.status.get("conditions"), cond.SYNCED)
        if (
            synced
            and synced.get("status") == "False"
            and synced.get("reason") in TERMINAL_REASONS
            and synced.get("observedGeneration") == resource.generation
        ):
            # The upstream refused this very spec: asking again would only be refused again.
            return Outcome(None)

        ref = spec.credentials_secret_ref
        observed: ObservedT | None = None
        try:
            api_key = await self._api_key(resource, ref)
            if ref is not None and self.protection is not None:
                # Before anything exists upstream that would need this key to be deleted.
                await self.protection.protect(resource.ref.namespace, ref.name)
            desired = await self.adapter.desire(api_key, spec, self._view(resource))
            report.extra_status.update(self.adapter.desired_status(desired))
            unchanged, listed = await self._unchanged_by_listing(api_key, resource, desired, state, report)
            if unchanged:
                state.failures = 0
                self._claim(resource, str(resource.status["id"]))
                self.reporter.record(resource, report, list(resource.status.get("conditions") or ()))
                return Outcome(self._resync_delay(resource))
            observed, gone = await self._observe(api_key, resource, desired, state, report, listed=listed)
            if gone and spec.deletion_policy == "Orphan":
                report.fail(
                    "UpstreamDeleted",
                    f"{self.info.kind} {resource.status.get('id')} was deleted outside Kubernetes; "
                    "deletionPolicy is Orphan, so it is not recreated",
                    set_ready=True,
                    synced_status="True",
                )
                await self.reporter.finish(resource, state, report, warning=True)
                return Outcome(self._resync_delay(resource))
            if observed is not None and (other := self._claim(resource, self.adapter.upstream_id(observed))):
                await self._already_managed(
                    resource, state, report, f"{self._describe(observed)} is managed by {self.info.kind} {other}"
                )
            if observed is None:
                observed = await self._create_new(api_key, resource, desired, state, report)
                if not report.adopted:
                    report.event("Normal", "Created", f"created {self._describe(observed)}")
                if gone:
                    report.event("Warning", "Recreated", "the upstream object was deleted outside Kubernetes")
            else:
                observed = await self._converge(api_key, resource, desired, state, report, observed, gone)
            if self.adapter.dependents is not None:
                report.extra_status.update(await self.adapter.dependents.settle(api_key, desired, observed))
        except CredentialsMissing as exc:
            report.fail("CredentialsMissing", str(exc), set_ready=True)
            await self._finish(resource, state, report, observed, warning=True)
            return Outcome(self.settings.credentials_retry_interval)
        except UpstreamError as exc:
            return await self._upstream_error(resource, state, report, exc, observed, ref)

        state.failures = 0
        self._claim(resource, self.adapter.upstream_id(observed))
        readiness = self.adapter.readiness(desired, observed)
        report.set(Condition(cond.READY, "True" if readiness.ready else "False", readiness.reason, readiness.message))
        report.set(Condition(cond.SYNCED, "True", "ReconcileSuccess"))
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
        await self._finish(resource, state, report, observed)
        if report.marked:
            # The id is in the status now: a later search must never adopt by this old mark.
            state.wrote(await self.kube.patch_annotations(resource.ref, {CREATE_PENDING_ANNOTATION: None}))
        if readiness.progressing:
            return Outcome(self.settings.short_poll_interval)
        return Outcome(self._resync_delay(resource))

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
        known_id = resource.status.get("id") or resource.annotations.get(EXTERNAL_ID_ANNOTATION)
        gone = False
        if known_id and listed is not None:
            state.observed_at = time.monotonic()
            return listed, False
        if known_id:
            try:
                observed = await self.adapter.get(api_key, desired, str(known_id))
                state.observed_at = time.monotonic()
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
        found = await self._find(api_key, resource, desired, state)
        if found is not None:
            found = await self._adopt(resource, state, report, found)
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
        if taken := await self._key_taken(api_key, resource, desired, state, observed):
            await self._already_managed(resource, state, report, taken, observed=observed)
        if replace is not None:
            if not replace.allowed:
                raise ReplaceRequired(self.adapter.upstream, None, replace.refusal, method="PATCH", route="")
            return await self._replace(api_key, resource, desired, state, report, observed, replace)
        assert changes is not None
        before = observed
        try:
            observed = await self.adapter.update(api_key, observed, desired, changes)
        except ReplaceInstead as instead:
            replace = Replace(instead.fields, "create-first", allowed=True)
            return await self._replace(api_key, resource, desired, state, report, observed, replace)
        self._remember(api_key, desired, observed)
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
            await self._delete_quietly(api_key, desired, old_id)
            new = await self._create_new(api_key, resource, desired, state, report)
        else:
            new = await self._create_new(api_key, resource, desired, state, report)
            if self.adapter.upstream_id(new) != old_id:
                await self._delete_quietly(api_key, desired, old_id)
        # An adopted replacement (left by a replace cut off before its delete) may differ still.
        if changes := self.adapter.diff(desired, new):
            new = await self.adapter.update(api_key, new, desired, changes)
            self._remember(api_key, desired, new)
        described = self.adapter.describe_replace(desired, replace, old)
        for event in described:
            report.event(*event)
        if not described:
            report.event(
                "Normal",
                "Replaced",
                f"replaced {self._describe(old)} with {self._describe(new)} to change "
                f"{', '.join(replace.fields)}, which cannot be changed in place",
            )
        return new

    async def _delete_quietly(self, api_key: str, desired: DesiredT, upstream_id: str) -> None:
        with contextlib.suppress(NotFound):
            await self.adapter.delete(api_key, desired, upstream_id)
        self.listings.drop(self._listing_key(api_key, desired), upstream_id)

    # ---------------------------------------------------------------- creating and adopting

    async def _create_new(
        self, api_key: str, resource: Resource, desired: DesiredT, state: ObjectState, report: Report
    ) -> ObservedT:
        """Create the upstream object, never while an earlier create may still be carried out;
        for kinds whose duplicates cost money, behind a mark written to Kubernetes first."""
        wait = self._unsettled_create(resource, state)
        if not self.adapter.traits.create_guard and not wait:
            return await self._create(api_key, resource, desired, state, report)
        if wait:
            report.fail(
                "CreatePending",
                "a create whose answer was lost may still be carried out upstream; looking for "
                f"its object for up to {wait:.0f}s more before sending another",
                set_ready=True,
            )
            await self.reporter.finish(resource, state, report)
            # A few looks over the window, not a poll at the short interval throughout.
            look = max(self.settings.short_poll_interval, self.settings.create_settle_seconds / 4)
            raise _Halt(Outcome(min(wait, look)))
        # Written before the POST: if its outcome is lost, the search knows to look for it. On
        # the resourceVersion read, so that of two processes reconciling this resource at once
        # (two replicas, a split brain) only one gets to POST; the other reads again and finds
        # the mark, or the id.
        marker = f"{time.time():.3f}"
        try:
            version = await self.kube.patch_annotations(
                resource.ref, {CREATE_PENDING_ANNOTATION: marker}, expect_version=resource.version or None
            )
        except WriteConflict:
            logger.info("%s %s/%s changed before its create: reading it again", *self._who(resource))
            raise _Halt(Outcome(self.settings.short_poll_interval)) from None
        state.wrote(version)
        report.marked = True
        try:
            observed = await self._create(api_key, resource, desired, state, report)
        except Unavailable as exc:
            if not exc.outcome_unknown:
                state.create_answered = marker
            raise
        except UpstreamError:
            state.create_answered = marker
            raise
        state.create_answered = marker
        return observed

    async def _create(
        self, api_key: str, resource: Resource, desired: DesiredT, state: ObjectState, report: Report
    ) -> ObservedT:
        state.create_attempted = time.monotonic()
        try:
            observed = await self.adapter.create(api_key, desired)
        except Unavailable as exc:
            state.create_unknown_at = time.monotonic() if exc.outcome_unknown else None
            raise
        except (InvalidSpec, Conflict):
            # A unique key taken since the listing we searched: by our own lost create, or by hand.
            if self.adapter.unique is None:
                raise
            found = await self._find(api_key, resource, desired, state, fresh=True)
            if found is None:
                raise
            return await self._adopt(resource, state, report, found)
        state.create_unknown_at = None
        self._remember(api_key, desired, observed)
        return observed

    async def _adopt(self, resource: Resource, state: ObjectState, report: Report, found: ObservedT) -> ObservedT:
        """Take over an existing upstream object, unless another resource manages it."""
        holder = self.ownership.holder(self.adapter.upstream_id(found), _claimant(resource), named=False)
        if holder is not None:
            await self._already_managed(
                resource, state, report, f"{self._describe(found)} is managed by {self.info.kind} {holder.name}"
            )
        state.create_unknown_at = None
        report.adopted = True
        report.event("Normal", "Adopted", f"adopted existing {self._describe(found)}")
        return found

    async def _already_managed(
        self, resource: Resource, state: ObjectState, report: Report, why: str, *, observed: ObservedT | None = None
    ) -> None:
        report.fail(
            "AlreadyManaged", f"{why}; each upstream object can be managed by one resource only", set_ready=True
        )
        await self._finish(resource, state, report, observed, warning=True)
        raise _Halt(Outcome(self._resync_delay(resource)))

    async def _find(
        self, api_key: str, resource: Resource, desired: DesiredT, state: ObjectState, *, fresh: bool = False
    ) -> ObservedT | None:
        """The object of a create whose outcome is unknown, if it exists."""
        unique, lister = self.adapter.unique, self._lister
        if unique is not None and lister is not None:
            # Only a listing begun after our last create attempt can prove that attempt failed.
            found: ObservedT | None = await self.listings.find(
                self._listing_key(api_key, desired),
                lambda: lister.list_all(api_key, desired),
                unique.unique_key(desired),
                unique.item_key,
                max_age=0.0 if fresh else FIND_LISTING_MAX_AGE,
                started_after=state.create_attempted,
            )
            return found
        since = _marker_time(resource)
        if self.adapter.search is not None and since is not None:
            # Without a unique key, only a create we may have sent is looked for, never adopted by name.
            return await self.adapter.search.find(api_key, desired, since)
        return None

    async def _key_taken(
        self, api_key: str, resource: Resource, desired: DesiredT, state: ObjectState, observed: ObservedT
    ) -> str | None:
        """Why a change of the upstream's unique key (a slug or name rename) must not go ahead:
        the new key belongs to an object another resource manages. Asked before any write, so
        that neither that object nor this resource's own one is touched."""
        unique = self.adapter.unique
        if unique is None or unique.unique_key(desired) == unique.item_key(observed):
            return None
        taken = await self._find(api_key, resource, desired, state, fresh=True)
        if taken is None or self.adapter.upstream_id(taken) == self.adapter.upstream_id(observed):
            return None
        holder = self.ownership.holder(self.adapter.upstream_id(taken), _claimant(resource), named=False)
        if holder is None:
            return None
        return (
            f"{unique.unique_key(desired)!r} belongs to {self._describe(taken)}, which {self.info.kind} "
            f"{holder.name} manages. This resource's own {self._describe(observed)} is left as it was"
        )

    def _unsettled_create(self, resource: Resource, state: ObjectState) -> float:
        """Seconds a create with a lost answer may still land upstream (0: none pending).

        Without an idempotency key, a second POST while the first may still be carried out
        is a second (billed) object: keep looking for the first one until it cannot come.
        """
        settle = self.settings.create_settle_seconds
        if not self.adapter.traits.create_guard:
            unknown = state.create_unknown_at
            return 0.0 if unknown is None else max(0.0, unknown + settle - time.monotonic())
        marker = resource.annotations.get(CREATE_PENDING_ANNOTATION)
        sent = _marker_time(resource)
        if sent is None or marker == state.create_answered:
            return 0.0
        return max(0.0, sent + settle - time.time())

    # ---------------------------------------------------------------- the listing shortcut

    async def _unchanged_by_listing(
        self, api_key: str, resource: Resource, desired: DesiredT, state: ObjectState, report: Report
    ) -> tuple[bool, ObservedT | None]:
        """Whether a routine resync's object shows nothing to act on in a shared listing; and,
        when it does show something, the listed object if it is complete and just fetched, so
        that the observation needs no second call."""
        status = resource.status
        synced = cond.find(status.get("conditions"), cond.SYNCED)
        progressing = cond.find(status.get("conditions"), cond.PROGRESSING)
        dependents = self.adapter.dependents
        partial = self.adapter.partial_listing
        routine = (
            self._lister is not None
            and status.get("id")
            and status.get("observedGeneration") == resource.generation
            and synced is not None
            and synced.get("status") == "True"
            # A moving object is followed with GETs: the listing would only add a call.
            and (progressing is None or progressing.get("status") != "True")
            and state.failures == 0
            and all(status.get(k) == v for k, v in report.extra_status.items())
            and (dependents is None or dependents.current(desired, status))
            # Where the list lacks fields, a full observation now and then catches drift in them.
            and (partial is None or time.monotonic() - state.observed_at < self.settings.full_observe_interval)
        )
        if not routine:
            return False, None
        max_age = self._resync_interval(resource) * (1 - self.settings.resync_jitter)
        item = (await self._listing(api_key, desired, max_age=max_age)).get(str(status["id"]))
        if item is None:
            return False, None
        if partial is not None:
            return partial.listed_unchanged(desired, item, status), None
        age = self.listings.age(self._listing_key(api_key, desired))
        fresh = item if age is not None and age <= FIND_LISTING_MAX_AGE else None
        if self.adapter.diff(desired, item) or self.adapter.replacement(desired, item):
            return False, fresh
        readiness = self.adapter.readiness(desired, item)
        ready = cond.find(status.get("conditions"), cond.READY)
        if (
            readiness.progressing
            or ready is None
            or ready.get("status") != ("True" if readiness.ready else "False")
            or ready.get("reason") != readiness.reason
        ):
            return False, fresh
        unchanged = all(status.get(k) == v for k, v in self.adapter.status_fields(item).items() if v is not None)
        return unchanged, None if unchanged else fresh

    def _listing_key(self, api_key: str, desired: DesiredT) -> tuple[str, str]:
        scope = self._lister.list_scope(desired) if self._lister is not None else ""
        return credential_fingerprint(api_key), scope

    async def _listing(self, api_key: str, desired: DesiredT, *, max_age: float) -> Mapping[str, ObservedT]:
        lister = self._lister
        assert lister is not None
        items = await self.listings.get(
            self._listing_key(api_key, desired), lambda: lister.list_all(api_key, desired), max_age=max_age
        )
        return cast(Mapping[str, ObservedT], items)

    def _remember(self, api_key: str, desired: DesiredT, observed: ObservedT) -> None:
        """Our own writes go into the shared listing, which would otherwise show them late."""
        if self.adapter.listing is not None:
            self.listings.put(self._listing_key(api_key, desired), self.adapter.upstream_id(observed), observed)

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
        message = redact(exc.message or str(exc))
        ready_known = observed is not None or cond.find(resource.status.get("conditions"), cond.READY) is not None
        if isinstance(exc, InvalidSpec | Conflict):
            report.fail(exc.reason or "InvalidSpec", message, set_ready=True)
            await self._finish(resource, state, report, observed, warning=True)
            return Outcome(None)
        if isinstance(exc, AccessDenied):
            self.credentials.invalidate(resource.ref.namespace, ref)
            report.fail("AccessDenied", message, set_ready=True)
            await self._finish(resource, state, report, observed, warning=True)
            return Outcome(self.settings.access_denied_retry_interval)
        if isinstance(exc, RateLimited):
            report.fail("RateLimited", message, set_ready=not ready_known)
            await self._finish(resource, state, report, observed, warning=True)
            return Outcome(max(exc.retry_after, 0.1))
        # Unavailable, or a 404 on a call other than the initial observe (the object vanished
        # mid-reconcile): both settle at the next attempt.
        reason = exc.reason or ("UpstreamUnavailable" if isinstance(exc, Unavailable) else "UpstreamChanged")
        state.failures += 1
        report.fail(reason, message, set_ready=not ready_known)
        await self._finish(resource, state, report, observed, warning=True)
        return Outcome(self._backoff(state.failures))

    # ---------------------------------------------------------------- deletion

    async def finalize(self, resource: Resource, state: ObjectState) -> Outcome:
        async with state.lock:
            return await self._finalize(resource, state)

    async def _finalize(self, resource: Resource, state: ObjectState) -> Outcome:
        report = Report(resource)
        post = self.reporter.post
        if resource.spec.get("deletionPolicy", "Delete") == "Orphan":
            await post(resource, state, "Normal", "Orphaned", "left the upstream object in place")
            self._release(resource)
            return Outcome(None)
        try:
            spec = self._parse(resource)
        except pydantic.ValidationError:
            # Nothing valid was ever sent upstream from this spec: there is nothing to address.
            message = "the spec is unreadable, so the upstream object cannot be addressed; it is left in place"
            await post(resource, state, "Warning", "Orphaned", message)
            return Outcome(None)
        upstream_id = resource.status.get("id") or resource.annotations.get(EXTERNAL_ID_ANNOTATION)
        try:
            api_key = await self._api_key(resource, spec.credentials_secret_ref)
            desired = await self.adapter.desire(api_key, spec, self._view(resource, deleting=True))
            if not upstream_id:
                # A create may have succeeded without its id reaching the status.
                try:
                    found = await self._find(api_key, resource, desired, state, fresh=True)
                except (InvalidSpec, AccessDenied) as exc:
                    # The upstream refuses even to look (an unknown tenant, a key without access):
                    # nothing can have been created there by this spec with this key.
                    message = f"no upstream object was found: {redact(exc.message)}"
                    await post(resource, state, "Normal", "NothingToDelete", message)
                    self._release(resource)
                    return Outcome(None)
                upstream_id = self.adapter.upstream_id(found) if found is not None else None
            if upstream_id and self._claim(resource, str(upstream_id)):
                upstream_id = None  # another resource manages it: never delete it from here
            if upstream_id:
                try:
                    extra = await self.adapter.delete(api_key, desired, str(upstream_id))
                except NotFound:
                    await post(resource, state, "Normal", "AlreadyDeleted", f"upstream object {upstream_id} was gone")
                else:
                    for event in extra:
                        await post(resource, state, *event)
                    await post(resource, state, "Normal", "Deleted", f"deleted upstream object {upstream_id}")
                self.listings.drop(self._listing_key(api_key, desired), str(upstream_id))
            self._release(resource)
            return Outcome(None)
        except CredentialsMissing as exc:
            if not upstream_id and not resource.annotations.get(CREATE_PENDING_ANNOTATION):
                # Its credentials were never readable (they are protected once read, see
                # secret_protection), so nothing was ever created with them.
                await post(resource, state, "Normal", "NothingToDelete", f"no upstream object was created: {exc}")
                self._release(resource)
                return Outcome(None)
            state.failures += 1
            return await self._deletion_blocked(resource, state, report, str(exc), self._backoff(state.failures))
        except UpstreamError as exc:
            if isinstance(exc, RateLimited):
                delay = max(exc.retry_after, 0.1)
            else:
                state.failures += 1
                delay = self._backoff(state.failures)
            return await self._deletion_blocked(resource, state, report, redact(exc.message), delay)

    async def _deletion_blocked(
        self, resource: Resource, state: ObjectState, report: Report, message: str, delay: float
    ) -> Outcome:
        report.fail("DeletionBlocked", f"cannot delete the upstream object yet: {message}", set_ready=True)
        await self.reporter.finish(resource, state, report, warning=True)
        return Outcome(delay, done=False)

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
        self.ownership.record(claimant, (body.get("status") or {}).get("id"))

    def forget(self, uid: str) -> None:
        self.ownership.release(uid)

    def _claim(self, resource: Resource, upstream_id: str) -> str | None:
        """Record that ``resource`` manages ``upstream_id``; the other owner's name if taken."""
        claimant = _claimant(resource)
        holder = self.ownership.holder(upstream_id, claimant, named=resource.status.get("id") == upstream_id)
        if holder is not None:
            return holder.name
        self.ownership.record(claimant, upstream_id)
        return None

    def _release(self, resource: Resource) -> None:
        self.ownership.release(resource.ref.uid)

    # ---------------------------------------------------------------- helpers

    async def _api_key(self, resource: Resource, ref: SecretKeyRef | None) -> str:
        try:
            return await self.credentials.api_key(self.adapter.upstream, resource.ref.namespace, ref)
        except CredentialsMissing:
            if ref is None and self.adapter.traits.credentials_optional:
                return ""
            raise

    def _view(self, resource: Resource, *, deleting: bool = False) -> KubeView:
        async def read_secret(ref: SecretKeyRef) -> SecretValue:
            try:
                return await self.credentials.secret(resource.ref.namespace, ref)
            except CredentialsMissing:
                # Deleting never needs the values an object holds, and the Secret may be gone already.
                if deleting:
                    return SecretValue("", "")
                raise

        ready = cond.find(resource.status.get("conditions"), cond.READY)
        return KubeView(
            namespace=resource.ref.namespace,
            name=resource.ref.name,
            uid=resource.ref.uid,
            recorded=resource.status,
            spec_changed=ready is None or ready.get("observedGeneration") != resource.generation,
            read_secret=read_secret,
            deleting=deleting,
        )

    async def _finish(
        self,
        resource: Resource,
        state: ObjectState,
        report: Report,
        observed: ObservedT | None,
        *,
        warning: bool = False,
    ) -> None:
        fields = self.adapter.status_fields(observed) if observed is not None else None
        await self.reporter.finish(resource, state, report, warning=warning, observed_status=fields)

    def _parse(self, resource: Resource) -> SpecT:
        return cast(SpecT, self.info.spec_model.model_validate(resource.spec))

    def _who(self, resource: Resource) -> tuple[str, str, str]:
        return self.info.kind, resource.ref.namespace, resource.ref.name

    def _describe(self, observed: ObservedT) -> str:
        return f"{self.adapter.upstream} object {self.adapter.upstream_id(observed)}"

    def _resync_delay(self, resource: Resource) -> float:
        jitter = self.settings.resync_jitter
        return self._resync_interval(resource) * random.uniform(1 - jitter, 1 + jitter)

    def _resync_interval(self, resource: Resource) -> float:
        interval = self.settings.resync_interval
        override = resource.annotations.get(RESYNC_ANNOTATION)
        if override:
            try:
                interval = max(float(override), 1.0)
            except ValueError:
                logger.warning(
                    "ignoring %s=%r on %s/%s: not a number of seconds",
                    RESYNC_ANNOTATION,
                    override,
                    resource.ref.namespace,
                    resource.ref.name,
                )
        return interval

    def _backoff(self, failures: int) -> float:
        return backoff(failures - 1, self.settings.error_backoff_base, self.settings.error_backoff_cap)


def _claimant(resource: Resource) -> Claimant:
    return Claimant(resource.created or 0.0, resource.ref.uid, f"{resource.ref.namespace}/{resource.ref.name}")


def _marker_time(resource: Resource) -> float | None:
    try:
        return float(resource.annotations[CREATE_PENDING_ANNOTATION])
    except (KeyError, ValueError):
        return None


def _validation_message(exc: pydantic.ValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        location = ".".join(str(p) for p in error["loc"])
        parts.append(f"spec.{location}: {error['msg']}")
    return "; ".join(parts)
