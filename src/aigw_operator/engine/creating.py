"""The create path every create takes, and what it may adopt.

A create whose answer was lost may still be carried out, and sending another would make a second
object. So before every POST the create-pending mark is written to Kubernetes, on the
resourceVersion read (of two processes reconciling one resource only one gets to send it); a
create is never sent while an earlier one may still land (kinds whose duplicates cost money wait
``create_settle_seconds``); and a lost create is looked for, by the upstream's unique key in a
fresh listing or, without one, by a search from the time of the mark.

What is found is adopted only with proof that this resource created it: the mark, and an upstream
creation time no earlier than the mark (or the id in the status). An object someone else made
under the same key is ``AlreadyExists`` and never written to; a user who wants it managed says
so with ``aigw.dev/external-id``. Nothing is adopted that another resource manages (also the rule
for a rename onto another's unique key). After a create or an adoption the object's id is written
to ``aigw.dev/external-id``, in the same write that clears the mark, so a rebuild from Git or a
restore without status finds it again instead of creating another.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Generic, NoReturn

from aigw_operator.base.api import EXTERNAL_ID_ANNOTATION
from aigw_operator.engine.context import Context, Halt, claimant_of
from aigw_operator.engine.contract import DesiredT, ObservedT
from aigw_operator.engine.reporting import Report
from aigw_operator.engine.resource import ObjectState, Outcome, Resource
from aigw_operator.engine.shortcut import ListingShortcut
from aigw_operator.kube.client import WriteConflict
from aigw_operator.upstreams.http import Conflict, InvalidSpec, Unavailable, UpstreamError

logger = logging.getLogger("aigw_operator.reconcile")

# The time a create was last attempted, written before the POST.
CREATE_PENDING_ANNOTATION = "aigw.dev/create-pending"
# How much earlier than the mark an upstream may date an object the mark's create made: the two
# clocks (ours, the upstream's) disagree by this much at most.
CLOCK_SKEW_SECONDS = 300.0


class NotOurs(Exception):
    """An upstream object holds the resource's unique key, and nothing shows this resource made it."""

    def __init__(self, found: Any) -> None:
        super().__init__()
        self.found = found


class Creator(Generic[DesiredT, ObservedT]):
    def __init__(
        self, context: Context[Any, DesiredT, ObservedT], shortcut: ListingShortcut[DesiredT, ObservedT]
    ) -> None:
        self.context = context
        self.adapter = context.adapter
        self.shortcut = shortcut

    async def create(
        self, api_key: str, resource: Resource, desired: DesiredT, state: ObjectState, report: Report
    ) -> ObservedT:
        """Create the upstream object, never while an earlier create may still be carried out;
        for kinds whose duplicates cost money, behind a mark written to Kubernetes first."""
        settings = self.context.settings
        wait = self._unsettled(resource, state)
        if wait:
            report.fail(
                "CreatePending",
                "a create whose answer was lost may still be carried out upstream; looking for "
                f"its object for up to {wait:.0f}s more before sending another",
                set_ready=True,
            )
            await self.context.reporter.finish(resource, state, report)
            # A few looks over the window, not a poll at the short interval throughout.
            look = max(settings.short_poll_interval, settings.create_settle_seconds / 4)
            raise Halt(Outcome(min(wait, look)))
        # Written before the POST: if its outcome is lost, the search knows to look for it. On
        # the resourceVersion read, so that of two processes reconciling this resource at once
        # (two replicas, a split brain) only one gets to POST; the other reads again and finds
        # the mark, or the id.
        marker = f"{time.time():.3f}"
        try:
            version = await self.context.kube.patch_annotations(
                resource.ref, {CREATE_PENDING_ANNOTATION: marker}, expect_version=resource.version or None
            )
        except WriteConflict:
            who = self.adapter.info.kind, resource.ref.namespace, resource.ref.name
            logger.info("%s %s/%s changed before its create: reading it again", *who)
            raise Halt(Outcome(settings.short_poll_interval)) from None
        state.wrote(version)
        state.create_marked_at = float(marker)
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

    async def record_identity(self, resource: Resource, state: ObjectState, report: Report, upstream_id: str) -> None:
        """The object's id into ``aigw.dev/external-id`` and the mark away, in one write, only
        when either differs: the id is in the status too, and a later search must never adopt
        by an old mark."""
        changes: dict[str, str | None] = {}
        if report.marked:
            changes[CREATE_PENDING_ANNOTATION] = None
        if resource.annotations.get(EXTERNAL_ID_ANNOTATION) != upstream_id:
            changes[EXTERNAL_ID_ANNOTATION] = upstream_id
        if changes:
            state.wrote(await self.context.kube.patch_annotations(resource.ref, changes))

    async def not_ours(self, resource: Resource, state: ObjectState, report: Report, found: ObservedT) -> NoReturn:
        """Report an object someone else made under this resource's unique key; touch nothing."""
        holder = self.context.ownership.holder(self.adapter.upstream_id(found), claimant_of(resource), named=False)
        if holder is not None:
            why = f"{self.context.describe(found)} is managed by {self.adapter.info.kind} {holder.name}"
            await self.already_managed(resource, state, report, why)
        # On the resourceVersion read: a body older than another process's create of this very
        # object (two replicas without election) must not report it as someone else's. The mark,
        # if any, goes in the same write: the create it announced was answered (refused), and a
        # later object under the key must not pass for it.
        changes: dict[str, str | None] = {CREATE_PENDING_ANNOTATION: None} if report.marked else {}
        try:
            version = await self.context.kube.patch_annotations(
                resource.ref, changes, expect_version=resource.version or None
            )
        except WriteConflict:
            raise Halt(Outcome(self.context.settings.short_poll_interval)) from None
        if changes:
            state.wrote(version)
            report.marked = False
        report.fail(
            "AlreadyExists",
            f"{self.context.describe(found)} already exists upstream under this resource's unique key, and "
            "nothing shows this resource created it; it is left untouched. To manage it from here, annotate "
            f"the resource with {EXTERNAL_ID_ANNOTATION}={self.adapter.upstream_id(found)}; otherwise choose "
            "another key",
            set_ready=True,
        )
        await self.context.finish(resource, state, report, None, warning=True)
        raise Halt(Outcome(self.context.resync_delay(resource)))

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
            found = await self.find(api_key, resource, desired, state, fresh=True)
            if found is None:
                raise
            return await self.adopt(resource, state, report, found)
        state.create_unknown_at = None
        self.shortcut.remember(api_key, desired, observed)
        return observed

    async def adopt(self, resource: Resource, state: ObjectState, report: Report, found: ObservedT) -> ObservedT:
        """Take over an existing upstream object, unless another resource manages it."""
        holder = self.context.ownership.holder(self.adapter.upstream_id(found), claimant_of(resource), named=False)
        if holder is not None:
            await self.already_managed(
                resource,
                state,
                report,
                f"{self.context.describe(found)} is managed by {self.adapter.info.kind} {holder.name}",
            )
        state.create_unknown_at = None
        report.adopted = True
        report.event("Normal", "Adopted", f"adopted existing {self.context.describe(found)}")
        return found

    async def already_managed(
        self, resource: Resource, state: ObjectState, report: Report, why: str, *, observed: ObservedT | None = None
    ) -> None:
        report.fail(
            "AlreadyManaged", f"{why}; each upstream object can be managed by one resource only", set_ready=True
        )
        await self.context.finish(resource, state, report, observed, warning=True)
        raise Halt(Outcome(self.context.resync_delay(resource)))

    async def find(
        self, api_key: str, resource: Resource, desired: DesiredT, state: ObjectState, *, fresh: bool = False
    ) -> ObservedT | None:
        """The object of a create whose outcome is unknown, if it exists; :class:`NotOurs` when an
        object holds the unique key but nothing shows this resource created it."""
        unique = self.adapter.unique
        if unique is not None:
            # Only a listing begun after our last create attempt can prove that attempt failed.
            found = await self.shortcut.find(
                api_key, desired, unique, fresh=fresh, started_after=state.create_attempted
            )
            if found is None or self.adapter.upstream_id(found) == resource.status.get("id"):
                return found
            marks = [m for m in (_marker_time(resource), state.create_marked_at) if m is not None]
            sent, created = (min(marks) if marks else None), unique.item_created(found)
            if sent is not None and created is not None and created >= sent - CLOCK_SKEW_SECONDS:
                return found
            raise NotOurs(found)
        since = _marker_time(resource)
        if self.adapter.search is not None and since is not None:
            # Without a unique key, only a create we may have sent is looked for, never adopted by name.
            return await self.adapter.search.find(api_key, desired, since)
        return None

    async def key_taken(
        self, api_key: str, resource: Resource, desired: DesiredT, state: ObjectState, observed: ObservedT
    ) -> str | None:
        """Why a change of the upstream's unique key (a slug or name rename) must not go ahead:
        the new key belongs to an object another resource manages. Asked before any write, so
        that neither that object nor this resource's own one is touched."""
        unique = self.adapter.unique
        if unique is None or unique.unique_key(desired) == unique.item_key(observed):
            return None
        taken = await self.shortcut.find(api_key, desired, unique, fresh=True, started_after=state.create_attempted)
        if taken is None or self.adapter.upstream_id(taken) == self.adapter.upstream_id(observed):
            return None
        holder = self.context.ownership.holder(self.adapter.upstream_id(taken), claimant_of(resource), named=False)
        if holder is None:
            return None
        describe = self.context.describe
        return (
            f"{unique.unique_key(desired)!r} belongs to {describe(taken)}, which {self.adapter.info.kind} "
            f"{holder.name} manages. This resource's own {describe(observed)} is left as it was"
        )

    def _unsettled(self, resource: Resource, state: ObjectState) -> float:
        """Seconds a create with a lost answer may still land upstream (0: none pending).

        Without an idempotency key, a second POST while the first may still be carried out
        is a second (billed) object: keep looking for the first one until it cannot come.
        """
        settle = self.context.settings.create_settle_seconds
        if not self.adapter.traits.create_guard:
            unknown = state.create_unknown_at
            return 0.0 if unknown is None else max(0.0, unknown + settle - time.monotonic())
        marker = resource.annotations.get(CREATE_PENDING_ANNOTATION)
        sent = _marker_time(resource)
        if sent is None or marker == state.create_answered:
            return 0.0
        return max(0.0, sent + settle - time.time())


def _marker_time(resource: Resource) -> float | None:
    try:
        return float(resource.annotations[CREATE_PENDING_ANNOTATION])
    except (KeyError, ValueError):
        return None
