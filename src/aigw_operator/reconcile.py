"""The one reconcile loop every kind shares: observe the upstream object, compare it with
the spec, act, and report. Kinds plug in through an :class:`Adapter`; this module knows
Kubernetes conventions (conditions, Events, status) but not kopf, and no upstream API."""

from __future__ import annotations

import asyncio
import datetime
import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import pydantic

from aigw_operator import conditions as cond
from aigw_operator import metrics
from aigw_operator.conditions import Condition
from aigw_operator.credentials import Credentials, CredentialsMissing, SecretValue
from aigw_operator.kinds.common import EXTERNAL_ID_ANNOTATION, RESYNC_ANNOTATION, KindInfo, SecretKeyRef
from aigw_operator.kube import ObjectRef
from aigw_operator.listings import Listings
from aigw_operator.ownership import Claimant, Ownership
from aigw_operator.redaction import redact
from aigw_operator.secret_protection import SecretProtection
from aigw_operator.settings import Settings
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
# How old a shared listing may be when it is searched for an object to create: a create that
# the listing missed is refused by the upstream's unique key and then found by a fresh listing.
FIND_LISTING_MAX_AGE = 2.0

# Refusals that only a new spec can cure: no upstream call until the generation changes.
TERMINAL_REASONS = ("InvalidSpec", "RecreateRequired")
# Failures the loop retries by itself (reported as result="requeue" in the metrics).
TRANSIENT_REASONS = (
    "HardwareUnavailable",
    "UpstreamUnavailable",
    "UpstreamChanged",
    "RateLimited",
    "CredentialsMissing",
    "DeletionBlocked",
    "CreatePending",
)


class ReplaceRequired(InvalidSpec):
    """The upstream cannot change a field in place and the spec does not allow a replace."""

    reason = "RecreateRequired"


SpecT = TypeVar("SpecT", bound=pydantic.BaseModel)
SpecT_contra = TypeVar("SpecT_contra", bound=pydantic.BaseModel, contravariant=True)
ObservedT = TypeVar("ObservedT")


@dataclass(frozen=True)
class Readiness:
    ready: bool
    reason: str
    message: str = ""
    # The upstream is still moving towards the spec: poll at the short interval.
    progressing: bool = False


class Adapter(Protocol[SpecT_contra, ObservedT]):
    """What a kind contributes: its API, nothing about Kubernetes.

    Optional extras the loop uses when an adapter has them:

    - ``list_all(api_key, spec) -> {id: item}``: the upstream's list call, for batched drift
      checks; ``list_scope(spec) -> str`` when one credential sees several collections.
      Items are full observed objects unless the adapter also has
      ``listed_unchanged(spec, item, status) -> bool`` (the list lacks fields: it decides
      from what the list has, and the loop still GETs every ``full_observe_interval``).
    - ``unique_key(spec) -> str`` and ``item_key(item) -> str``: the upstream's unique key, so
      that creates look for an existing object in a shared listing, and a create refused as
      a duplicate adopts it.
    - ``find(api_key, spec)``: the search for adapters without such a key.
    - ``prepare(spec, resource, secret, deleting=)``: fills in what only Kubernetes knows
      (names, Secret values) and may put upstream objects the main one refers to in place
      first; what it did goes into the status through the prepared spec's ``extra_status``.
    - ``settle(api_key, spec, observed) -> status fields``: upstream objects that refer to
      the main one, synced after it; ``extras_current(spec, status)`` says whether a routine
      resync may skip that.
    - ``describe_update``, ``create_marker``, ``progressing_condition``,
      ``credentials_optional``: see their use below.
    """

    info: KindInfo
    upstream: str

    async def get(self, api_key: str, spec: SpecT_contra, upstream_id: str) -> ObservedT: ...
    async def create(self, api_key: str, spec: SpecT_contra) -> ObservedT: ...
    def diff(self, spec: SpecT_contra, observed: ObservedT) -> dict[str, Any] | None: ...
    async def update(
        self, api_key: str, observed: ObservedT, spec: SpecT_contra, changes: dict[str, Any]
    ) -> ObservedT: ...
    # Returns Events to post beside "Deleted" (e.g. what lost its link), or None.
    async def delete(self, api_key: str, spec: SpecT_contra, upstream_id: str) -> list[tuple[str, str, str]] | None: ...
    def upstream_id(self, observed: ObservedT) -> str: ...
    def readiness(self, spec: SpecT_contra, observed: ObservedT) -> Readiness: ...
    def status_fields(self, observed: ObservedT) -> dict[str, Any]: ...


class KubeWriter(Protocol):
    """Writes to the object return its new resourceVersion (None: the object is gone)."""

    async def patch_status(self, ref: ObjectRef, status: Mapping[str, Any]) -> str | None: ...
    async def post_event(self, ref: ObjectRef, type_: str, reason: str, message: str) -> None: ...
    async def patch_annotations(self, ref: ObjectRef, annotations: Mapping[str, str | None]) -> str | None: ...


@dataclass(frozen=True)
class Resource:
    """The parts of a custom resource the loop reads."""

    ref: ObjectRef
    generation: int
    spec: Mapping[str, Any]
    status: Mapping[str, Any]
    annotations: Mapping[str, str]
    created: float | None = None  # creationTimestamp, as a Unix time

    @classmethod
    def from_body(cls, info: KindInfo, body: Mapping[str, Any]) -> Resource:
        meta = body.get("metadata", {})
        return cls(
            ref=ObjectRef(
                kind=info.kind,
                plural=info.plural,
                namespace=meta.get("namespace", ""),
                name=meta.get("name", ""),
                uid=meta.get("uid", ""),
            ),
            generation=int(meta.get("generation") or 0),
            spec=dict(body.get("spec") or {}),
            status=dict(body.get("status") or {}),
            annotations=dict(meta.get("annotations") or {}),
            created=_unix_time(meta.get("creationTimestamp")),
        )


@dataclass
class ObjectState:
    """What the loop remembers about one object between reconciles (in memory only)."""

    failures: int = 0
    events: dict[tuple[str, str], float] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Monotonic times: the last create attempt (a listing must be newer to prove it failed)
    # and the last full observation (GET) of the upstream object.
    create_attempted: float | None = None
    observed_at: float = field(default_factory=time.monotonic)
    # The create-pending mark of a create that was answered: its outcome is known.
    create_answered: str | None = None
    # The resourceVersion of our last write to the object until a watch event brings it (and
    # when it was written): a body older than that misses what this loop did last time.
    written_version: str | None = None
    written_at: float = 0.0

    def wrote(self, version: str | None) -> None:
        if version:
            self.written_version, self.written_at = version, time.monotonic()


@dataclass(frozen=True)
class Outcome:
    # Seconds until the next reconcile; None: only when the resource changes.
    requeue_after: float | None
    # For deletion: the upstream side is finished, the finalizer may go.
    done: bool = True


class Reconciler(Generic[SpecT, ObservedT]):
    def __init__(
        self,
        adapter: Adapter[SpecT, ObservedT],
        kube: KubeWriter,
        credentials: Credentials,
        settings: Settings,
        *,
        protection: SecretProtection | None = None,
    ) -> None:
        self.adapter = adapter
        self.protection = protection
        self.kube = kube
        self.credentials = credentials
        self.settings = settings
        self.info = adapter.info
        # Which resource manages which upstream object: one upstream object, one resource.
        self.ownership = Ownership()
        self.listings = Listings()

    # ---------------------------------------------------------------- reconcile

    async def reconcile(self, resource: Resource, state: ObjectState) -> Outcome:
        async with state.lock:
            in_flight = metrics.IN_FLIGHT.labels(self.info.kind)
            in_flight.inc()
            try:
                with metrics.RECONCILE_SECONDS.labels(self.info.kind).time():
                    return await self._reconcile(resource, state)
            finally:
                in_flight.dec()

    async def _reconcile(self, resource: Resource, state: ObjectState) -> Outcome:
        report = _Report(resource)
        try:
            spec = self._parse(resource)
        except pydantic.ValidationError as exc:
            report.fail("InvalidSpec", _validation_message(exc), set_ready=True)
            await self._finish(resource, state, report, warning=True)
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

        # Read from the spec as written: what an adapter's prepare() makes of it need not carry them.
        ref: SecretKeyRef | None = getattr(spec, "credentials_secret_ref", None)
        policy = getattr(spec, "deletion_policy", "Delete")
        observed: ObservedT | None = None
        try:
            api_key = await self._api_key(resource, ref)
            if ref is not None and self.protection is not None:
                # Before anything exists upstream that would need this key to be deleted.
                await self.protection.protect(resource.ref.namespace, ref.name)
            spec = await self._prepare(resource, spec, api_key)
            report.extra_status.update(getattr(spec, "extra_status", None) or {})
            unchanged, listed = await self._unchanged_by_listing(api_key, resource, spec, state, report)
            if unchanged:
                state.failures = 0
                self._claim(resource, str(resource.status["id"]))
                self._record(resource, report, list(resource.status.get("conditions") or ()))
                return Outcome(self._resync_delay(resource))
            observed, gone = await self._observe(api_key, resource, spec, state, report, listed=listed)
            if gone and policy == "Orphan":
                report.fail(
                    "UpstreamDeleted",
                    f"{self.info.kind} {resource.status.get('id')} was deleted outside Kubernetes; "
                    "deletionPolicy is Orphan, so it is not recreated",
                    set_ready=True,
                    synced_status="True",
                )
                await self._finish(resource, state, report, warning=True)
                return Outcome(self._resync_delay(resource))
            if observed is not None and (other := self._claim(resource, self.adapter.upstream_id(observed))):
                report.fail(
                    "AlreadyManaged",
                    f"{self._describe(observed)} is managed by {self.info.kind} {other}; "
                    "each upstream object can be managed by one resource only",
                    set_ready=True,
                )
                await self._finish(resource, state, report, warning=True)
                return Outcome(self._resync_delay(resource))
            marked = CREATE_PENDING_ANNOTATION in resource.annotations
            if observed is None:
                if getattr(self.adapter, "create_marker", False):
                    if wait := self._unsettled_create(resource, state):
                        report.fail(
                            "CreatePending",
                            "a create whose answer was lost may still be carried out upstream; looking for "
                            f"its object for up to {wait:.0f}s more before sending another",
                            set_ready=True,
                        )
                        await self._finish(resource, state, report)
                        # A few looks over the window, not a poll at the short interval throughout.
                        look = max(self.settings.short_poll_interval, self.settings.create_settle_seconds / 4)
                        return Outcome(min(wait, look))
                    # Written before the POST: if its outcome is lost, find() knows to look for it.
                    marker = f"{time.time():.3f}"
                    state.wrote(await self.kube.patch_annotations(resource.ref, {CREATE_PENDING_ANNOTATION: marker}))
                    marked = True
                    try:
                        observed = await self._create(api_key, spec, state, report)
                        state.create_answered = marker
                    except Unavailable as exc:
                        if not exc.outcome_unknown:
                            state.create_answered = marker
                        raise
                    except UpstreamError:
                        state.create_answered = marker
                        raise
                else:
                    observed = await self._create(api_key, spec, state, report)
                if not report.adopted:
                    report.event("Normal", "Created", f"created {self._describe(observed)}")
                if gone:
                    report.event("Warning", "Recreated", "the upstream object was deleted outside Kubernetes")
            else:
                changes = self.adapter.diff(spec, observed)
                if changes and (taken := await self._key_taken(api_key, resource, spec, state, observed)):
                    report.fail("AlreadyManaged", taken, set_ready=True)
                    await self._finish(resource, state, report, warning=True, observed=observed)
                    return Outcome(self._resync_delay(resource))
                if changes:
                    unchanged_spec = resource.status.get("observedGeneration") == resource.generation and not gone
                    before = observed
                    observed = await self.adapter.update(api_key, observed, spec, changes)
                    self._remember(api_key, spec, observed)
                    describe = getattr(self.adapter, "describe_update", None)
                    described = describe(spec, changes, before) if describe else []
                    for event in described:
                        report.event(*event)
                    fields = ", ".join(_changed_fields(changes))
                    if described:
                        pass  # the adapter's own words say what happened
                    elif self.adapter.upstream_id(observed) != self.adapter.upstream_id(before):
                        report.event(
                            "Normal",
                            "Replaced",
                            f"replaced {self._describe(before)} with {self._describe(observed)} to change {fields}, "
                            "which cannot be changed in place",
                        )
                    elif unchanged_spec and not report.adopted:
                        report.event("Normal", "DriftCorrected", f"upstream differed from the spec in: {fields}")
                    else:
                        report.event("Normal", "Updated", f"updated {fields}")
            settle = getattr(self.adapter, "settle", None)
            if settle is not None:
                report.extra_status.update(await settle(api_key, spec, observed))
        except CredentialsMissing as exc:
            report.fail("CredentialsMissing", str(exc), set_ready=True)
            await self._finish(resource, state, report, warning=True, observed=observed)
            return Outcome(self.settings.credentials_retry_interval)
        except UpstreamError as exc:
            return await self._upstream_error(resource, state, report, exc, observed, ref)

        state.failures = 0
        self._claim(resource, self.adapter.upstream_id(observed))
        readiness = self.adapter.readiness(spec, observed)
        report.set(Condition(cond.READY, "True" if readiness.ready else "False", readiness.reason, readiness.message))
        report.set(Condition(cond.SYNCED, "True", "ReconcileSuccess"))
        if getattr(self.adapter, "progressing_condition", False):
            report.set(
                Condition(
                    cond.PROGRESSING,
                    "True" if readiness.progressing else "False",
                    readiness.reason if readiness.progressing else "Settled",
                    readiness.message if readiness.progressing else "",
                )
            )
        await self._finish(resource, state, report, observed=observed)
        if marked:
            # The id is in the status now: a later search must never adopt by this old mark.
            state.wrote(await self.kube.patch_annotations(resource.ref, {CREATE_PENDING_ANNOTATION: None}))
        if readiness.progressing:
            return Outcome(self.settings.short_poll_interval)
        return Outcome(self._resync_delay(resource))

    def _unsettled_create(self, resource: Resource, state: ObjectState) -> float:
        """Seconds a create with a lost answer may still land upstream (0: none pending).

        Without an idempotency key, a second POST while the first may still be carried out
        is a second (billed) object: keep looking for the first one until it cannot come.
        """
        marker = resource.annotations.get(CREATE_PENDING_ANNOTATION)
        if not marker or marker == state.create_answered:
            return 0.0
        try:
            sent = float(marker)
        except ValueError:
            return 0.0
        return max(0.0, sent + self.settings.create_settle_seconds - time.time())

    async def _unchanged_by_listing(
        self, api_key: str, resource: Resource, spec: SpecT, state: ObjectState, report: _Report
    ) -> tuple[bool, ObservedT | None]:
        """Whether a routine resync's object shows nothing to act on in a shared listing; and,
        when it does show something, the listed object if it is complete and just fetched, so
        that the observation needs no second call."""
        list_all = getattr(self.adapter, "list_all", None)
        listed_unchanged = getattr(self.adapter, "listed_unchanged", None)
        extras_current = getattr(self.adapter, "extras_current", None)
        status = resource.status
        synced = cond.find(status.get("conditions"), cond.SYNCED)
        progressing = cond.find(status.get("conditions"), cond.PROGRESSING)
        routine = (
            list_all is not None
            and status.get("id")
            and status.get("observedGeneration") == resource.generation
            and synced is not None
            and synced.get("status") == "True"
            # A moving object is followed with GETs: the listing would only add a call.
            and (progressing is None or progressing.get("status") != "True")
            and state.failures == 0
            and all(status.get(k) == v for k, v in report.extra_status.items())
            and (extras_current is None or extras_current(spec, status))
            # Where the list lacks fields, a full observation now and then catches drift in them.
            and (listed_unchanged is None or time.monotonic() - state.observed_at < self.settings.full_observe_interval)
        )
        if not routine:
            return False, None
        max_age = self._resync_interval(resource) * (1 - self.settings.resync_jitter)
        item = (await self._listing(api_key, spec, max_age=max_age)).get(str(status["id"]))
        if item is None:
            return False, None
        if listed_unchanged is not None:
            return bool(listed_unchanged(spec, item, status)), None
        age = self.listings.age(self._listing_key(api_key, spec))
        fresh = item if age is not None and age <= FIND_LISTING_MAX_AGE else None
        if self.adapter.diff(spec, item):
            return False, fresh
        readiness = self.adapter.readiness(spec, item)
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

    def _listing_key(self, api_key: str, spec: SpecT) -> tuple[str, str]:
        scope = getattr(self.adapter, "list_scope", None)
        return credential_fingerprint(api_key), scope(spec) if scope else ""

    async def _listing(
        self, api_key: str, spec: SpecT, *, max_age: float, started_after: float | None = None
    ) -> Mapping[str, Any]:
        list_all = self.adapter.list_all  # type: ignore[attr-defined]
        return await self.listings.get(
            self._listing_key(api_key, spec),
            lambda: list_all(api_key, spec),
            max_age=max_age,
            started_after=started_after,
        )

    def _remember(self, api_key: str, spec: SpecT, observed: ObservedT) -> None:
        """Our own writes go into the shared listing, which would otherwise show them late."""
        if hasattr(self.adapter, "list_all") and not hasattr(self.adapter, "listed_unchanged"):
            self.listings.put(self._listing_key(api_key, spec), self.adapter.upstream_id(observed), observed)

    async def _find(self, api_key: str, spec: SpecT, state: ObjectState, *, fresh: bool = False) -> ObservedT | None:
        unique_key = getattr(self.adapter, "unique_key", None)
        list_all = getattr(self.adapter, "list_all", None)
        if unique_key is None or list_all is None:
            # Without a unique key, only the adapter knows when searching is safe (if ever).
            find = getattr(self.adapter, "find", None)
            return await find(api_key, spec) if find is not None else None
        # Only a listing begun after our last create attempt can prove that attempt failed.
        found: ObservedT | None = await self.listings.find(
            self._listing_key(api_key, spec),
            lambda: list_all(api_key, spec),
            unique_key(spec),
            self.adapter.item_key,  # type: ignore[attr-defined]
            max_age=0.0 if fresh else FIND_LISTING_MAX_AGE,
            started_after=state.create_attempted,
        )
        return found

    async def _create(self, api_key: str, spec: SpecT, state: ObjectState, report: _Report) -> ObservedT:
        state.create_attempted = time.monotonic()
        try:
            observed = await self.adapter.create(api_key, spec)
        except (InvalidSpec, Conflict):
            # A unique key taken since the listing we searched: by our own lost create, or by hand.
            if not hasattr(self.adapter, "unique_key"):
                raise
            found = await self._find(api_key, spec, state, fresh=True)
            if found is None:
                raise
            report.adopted = True
            report.event("Normal", "Adopted", f"adopted existing {self._describe(found)}")
            return found
        self._remember(api_key, spec, observed)
        return observed

    async def _observe(
        self,
        api_key: str,
        resource: Resource,
        spec: SpecT,
        state: ObjectState,
        report: _Report,
        *,
        listed: ObservedT | None = None,
    ) -> tuple[ObservedT | None, bool]:
        """The upstream object and whether a previously known one has disappeared."""
        known_id = resource.status.get("id") or resource.annotations.get(EXTERNAL_ID_ANNOTATION)
        if known_id and listed is not None:
            state.observed_at = time.monotonic()
            return listed, False
        if known_id:
            try:
                observed = await self.adapter.get(api_key, spec, str(known_id))
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
        else:
            gone = False
        found = await self._find(api_key, spec, state)
        if found is not None:
            report.adopted = True
            report.event("Normal", "Adopted", f"adopted existing {self._describe(found)}")
        return found, gone

    async def _upstream_error(
        self,
        resource: Resource,
        state: ObjectState,
        report: _Report,
        exc: UpstreamError,
        observed: ObservedT | None,
        ref: SecretKeyRef | None,
    ) -> Outcome:
        message = redact(exc.message or str(exc))
        ready_known = observed is not None or cond.find(resource.status.get("conditions"), cond.READY) is not None
        if isinstance(exc, InvalidSpec | Conflict):
            report.fail(getattr(exc, "reason", "InvalidSpec"), message, set_ready=True)
            await self._finish(resource, state, report, warning=True, observed=observed)
            return Outcome(None)
        if isinstance(exc, AccessDenied):
            self.credentials.invalidate(resource.ref.namespace, ref)
            report.fail("AccessDenied", message, set_ready=True)
            await self._finish(resource, state, report, warning=True, observed=observed)
            return Outcome(self.settings.access_denied_retry_interval)
        if isinstance(exc, RateLimited):
            report.fail("RateLimited", message, set_ready=not ready_known)
            await self._finish(resource, state, report, warning=True, observed=observed)
            return Outcome(max(exc.retry_after, 0.1))
        # Unavailable, or a 404 on a call other than the initial observe (the object vanished
        # mid-reconcile): both settle at the next attempt.
        reason = getattr(exc, "reason", None) or (
            "UpstreamUnavailable" if isinstance(exc, Unavailable) else "UpstreamChanged"
        )
        state.failures += 1
        report.fail(reason, message, set_ready=not ready_known)
        await self._finish(resource, state, report, warning=True, observed=observed)
        return Outcome(self._backoff(state.failures))

    # ---------------------------------------------------------------- deletion

    async def finalize(self, resource: Resource, state: ObjectState) -> Outcome:
        async with state.lock:
            return await self._finalize(resource, state)

    async def _finalize(self, resource: Resource, state: ObjectState) -> Outcome:
        report = _Report(resource)
        try:
            spec = self._parse(resource)
        except pydantic.ValidationError:
            # Nothing valid was ever sent upstream from this spec; nothing to clean up by key.
            spec = None
        policy = resource.spec.get("deletionPolicy", "Delete")
        if policy == "Orphan":
            await self._post(resource, state, "Normal", "Orphaned", "left the upstream object in place")
            self._release(resource)
            return Outcome(None)
        ref: SecretKeyRef | None = getattr(spec, "credentials_secret_ref", None)
        if spec is None:
            await self._post(
                resource,
                state,
                "Warning",
                "Orphaned",
                "the spec is unreadable, so the upstream object cannot be addressed; it is left in place",
            )
            return Outcome(None)
        upstream_id = resource.status.get("id") or resource.annotations.get(EXTERNAL_ID_ANNOTATION)
        try:
            api_key = await self._api_key(resource, ref)
            spec = await self._prepare(resource, spec, api_key, for_deletion=True)
            if not upstream_id:
                # A create may have succeeded without its id reaching the status.
                try:
                    found = await self._find(api_key, spec, state, fresh=True)
                except (InvalidSpec, AccessDenied) as exc:
                    # The upstream refuses even to look (an unknown tenant, a key without access):
                    # nothing can have been created there by this spec with this key.
                    message = f"no upstream object was found: {redact(exc.message)}"
                    await self._post(resource, state, "Normal", "NothingToDelete", message)
                    self._release(resource)
                    return Outcome(None)
                upstream_id = self.adapter.upstream_id(found) if found is not None else None
            if upstream_id and self._claim(resource, str(upstream_id)):
                upstream_id = None  # another resource manages it: never delete it from here
            if upstream_id:
                try:
                    extra = await self.adapter.delete(api_key, spec, str(upstream_id))
                except NotFound:
                    await self._post(
                        resource, state, "Normal", "AlreadyDeleted", f"upstream object {upstream_id} was already gone"
                    )
                else:
                    for event in extra or ():
                        await self._post(resource, state, *event)
                    await self._post(resource, state, "Normal", "Deleted", f"deleted upstream object {upstream_id}")
                self.listings.drop(self._listing_key(api_key, spec), str(upstream_id))
            self._release(resource)
            return Outcome(None)
        except CredentialsMissing as exc:
            if not upstream_id and not resource.annotations.get(CREATE_PENDING_ANNOTATION):
                # Its credentials were never readable (they are protected once read, see
                # secret_protection), so nothing was ever created with them.
                await self._post(resource, state, "Normal", "NothingToDelete", f"no upstream object was created: {exc}")
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
        self, resource: Resource, state: ObjectState, report: _Report, message: str, delay: float
    ) -> Outcome:
        report.fail("DeletionBlocked", f"cannot delete the upstream object yet: {message}", set_ready=True)
        await self._finish(resource, state, report, warning=True)
        return Outcome(delay, done=False)

    # ---------------------------------------------------------------- helpers

    def note(self, resource: Resource) -> None:
        """What the watch shows: the upstream object this resource's status names, so that every
        owner is known before any reconcile runs (after a restart, in whatever order)."""
        self.ownership.record(_claimant(resource), resource.status.get("id"))

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

    async def _key_taken(
        self, api_key: str, resource: Resource, spec: SpecT, state: ObjectState, observed: ObservedT
    ) -> str | None:
        """Why a change of the upstream's unique key (a slug or name rename) must not go ahead:
        the new key belongs to an object another resource manages. Asked before any write, so
        that neither that object nor this resource's own one is touched."""
        unique_key = getattr(self.adapter, "unique_key", None)
        if unique_key is None or unique_key(spec) == self.adapter.item_key(observed):  # type: ignore[attr-defined]
            return None
        taken = await self._find(api_key, spec, state, fresh=True)
        if taken is None or self.adapter.upstream_id(taken) == self.adapter.upstream_id(observed):
            return None
        holder = self.ownership.holder(self.adapter.upstream_id(taken), _claimant(resource), named=False)
        if holder is None:
            return None
        return (
            f"{unique_key(spec)!r} belongs to {self._describe(taken)}, which {self.info.kind} {holder.name} "
            f"manages; each upstream object can be managed by one resource only. This resource's own "
            f"{self._describe(observed)} is left as it was"
        )

    async def _api_key(self, resource: Resource, ref: SecretKeyRef | None) -> str:
        try:
            return await self.credentials.api_key(self.adapter.upstream, resource.ref.namespace, ref)
        except CredentialsMissing:
            if ref is None and getattr(self.adapter, "credentials_optional", False):
                return ""
            raise

    async def _prepare(self, resource: Resource, spec: SpecT, api_key: str, *, for_deletion: bool = False) -> SpecT:
        """Let the adapter fill in what only Kubernetes knows (names, Secret values)."""
        prepare = getattr(self.adapter, "prepare", None)
        if prepare is None:
            return spec

        async def secret(ref: SecretKeyRef) -> SecretValue:
            try:
                return await self.credentials.secret(resource.ref.namespace, ref)
            except CredentialsMissing:
                # Deleting never needs the values an object holds, and the Secret may be gone already.
                if for_deletion:
                    return SecretValue("", "")
                raise

        prepared: SpecT = await prepare(spec, resource, secret, api_key=api_key, deleting=for_deletion)
        return prepared

    def _parse(self, resource: Resource) -> SpecT:
        model: type[SpecT] = self.info.spec_model  # type: ignore[assignment]
        return model.model_validate(resource.spec)

    def _describe(self, observed: ObservedT) -> str:
        return f"{self.adapter.upstream} object {self.adapter.upstream_id(observed)}"

    def _resync_delay(self, resource: Resource) -> float:
        return _jitter(self._resync_interval(resource), self.settings.resync_jitter)

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
        delay = min(self.settings.error_backoff_base * 2 ** (failures - 1), self.settings.error_backoff_cap)
        return random.uniform(delay / 2, delay)

    async def _finish(
        self,
        resource: Resource,
        state: ObjectState,
        report: _Report,
        *,
        warning: bool = False,
        observed: ObservedT | None = None,
    ) -> None:
        status: dict[str, Any] = {}
        if observed is not None:
            status.update(self.adapter.status_fields(observed))
        elif resource.status.get("id"):
            status.update({k: v for k, v in resource.status.items() if k not in ("conditions", "observedGeneration")})
        status.update(report.extra_status)
        status["observedGeneration"] = resource.generation
        status["conditions"] = cond.merge_conditions(
            resource.status.get("conditions"), report.conditions, resource.generation
        )
        status = {k: v for k, v in status.items() if v is not None}
        self._record(resource, report, status["conditions"])
        # Events first: whoever waits for the status to change then finds the Events too.
        for type_, reason, message in report.events:
            await self._post(resource, state, type_, reason, message)
        if warning and report.failure:
            reason, message = report.failure
            await self._post(resource, state, "Warning", reason, message)
        if _status_differs(resource.status, status):
            # Keys we no longer report are removed by a merge-patch null.
            patch: dict[str, Any] = {k: None for k in resource.status if k not in status}
            patch.update(status)
            state.wrote(await self.kube.patch_status(resource.ref, patch))

    def _record(self, resource: Resource, report: _Report, conditions: list[dict[str, Any]]) -> None:
        kind, ref = self.info.kind, resource.ref
        if report.failure is None:
            result = "success"
        else:
            reason = report.failure[0]
            metrics.RECONCILE_ERRORS.labels(kind, reason).inc()
            result = "requeue" if reason in TRANSIENT_REASONS else "error"
        metrics.RECONCILES.labels(kind, result).inc()
        ready = cond.find(conditions, cond.READY)
        synced = cond.find(conditions, cond.SYNCED)
        is_ready = bool(ready and ready.get("status") == "True")
        metrics.READY.labels(kind, ref.namespace, ref.name).set(1 if is_ready else 0)
        metrics.SYNCED.labels(kind, ref.namespace, ref.name).set(1 if synced and synced.get("status") == "True" else 0)
        was_ever_ready = any(
            c.get("type") == cond.READY and c.get("status") == "True" for c in resource.status.get("conditions") or ()
        )
        if is_ready and not was_ever_ready and not resource.status.get("id") and resource.created:
            metrics.TIME_TO_FIRST_READY.labels(kind).observe(max(time.time() - resource.created, 0.0))
        if any(reason == "DriftCorrected" for _, reason, _ in report.events):
            metrics.DRIFT_CORRECTIONS.labels(kind).inc()

    async def _post(self, resource: Resource, state: ObjectState, type_: str, reason: str, message: str) -> None:
        key = (reason, message)
        now = time.monotonic()
        last = state.events.get(key)
        if type_ == "Warning" and last is not None and now - last < self.settings.event_dedupe_seconds:
            return
        state.events[key] = now
        level = logging.WARNING if type_ == "Warning" else logging.INFO
        logger.log(
            level,
            "%s %s/%s: %s: %s",
            self.info.kind,
            resource.ref.namespace,
            resource.ref.name,
            reason,
            message,
            extra={"kind": self.info.kind, "namespace": resource.ref.namespace, "object_name": resource.ref.name},
        )
        try:
            await self.kube.post_event(resource.ref, type_, reason, message)
        except Exception as exc:  # an Event is best effort: never fail a reconcile for it
            logger.warning(
                "could not post Event %s for %s/%s: %s",
                reason,
                resource.ref.namespace,
                resource.ref.name,
                redact(str(exc)),
            )


class _Report:
    """Conditions and Events a reconcile has decided on."""

    def __init__(self, resource: Resource) -> None:
        self.resource = resource
        self.conditions: list[Condition] = []
        self.events: list[tuple[str, str, str]] = []
        self.failure: tuple[str, str] | None = None
        self.adopted = False
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


def _changed_fields(changes: Mapping[str, Any]) -> list[str]:
    """The spec fields a change set touches; ``recreate`` lists the ones only a new object can take."""
    fields = {key for key in changes if key != "recreate"} | set(changes.get("recreate") or ())
    return sorted(fields)


def _claimant(resource: Resource) -> Claimant:
    return Claimant(resource.created or 0.0, resource.ref.uid, f"{resource.ref.namespace}/{resource.ref.name}")


def _status_differs(current: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    return any(current.get(k) != v for k, v in wanted.items()) or any(k not in wanted for k in current)


def _unix_time(stamp: str | None) -> float | None:
    if not stamp:
        return None
    try:
        return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _jitter(interval: float, fraction: float) -> float:
    return interval * random.uniform(1 - fraction, 1 + fraction)


def _validation_message(exc: pydantic.ValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        location = ".".join(str(p) for p in error["loc"])
        parts.append(f"spec.{location}: {error['msg']}")
    return "; ".join(parts)
