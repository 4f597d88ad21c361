"""The finalize path: what a resource's deletion does upstream before its finalizer may go.

The upstream object is deleted unless the spec orphans it or another resource manages it; a
create whose id never reached the status is looked for first, so that it is not left behind
unmanaged. Whatever stops the delete (credentials, the upstream) keeps the finalizer, with a
DeletionBlocked condition, and the deletion comes back after a backoff. So does a pause
(``aigw.dev/paused``): nothing happens upstream, Synced says DeletionPaused, and the deletion
is looked at again, with the same backoff, until the annotation is gone.
"""

from __future__ import annotations

import contextlib
from typing import Generic

import pydantic

from aigw_operator.base.api import PAUSED_ANNOTATION
from aigw_operator.base.redaction import redact
from aigw_operator.engine.context import Context, orphans, paused
from aigw_operator.engine.contract import DesiredT, ObservedT, SpecT
from aigw_operator.engine.creating import CREATE_PENDING_ANNOTATION, Creator, NotOurs
from aigw_operator.engine.reporting import Report
from aigw_operator.engine.resource import ObjectState, Outcome, Resource
from aigw_operator.engine.shortcut import ListingShortcut
from aigw_operator.kube.credentials import CredentialsMissing
from aigw_operator.upstreams.http import AccessDenied, InvalidSpec, NotFound, RateLimited, UpstreamError

DELETION_PAUSED_REASON = "DeletionPaused"


class Deleter(Generic[SpecT, DesiredT, ObservedT]):
    def __init__(
        self,
        context: Context[SpecT, DesiredT, ObservedT],
        creator: Creator[DesiredT, ObservedT],
        shortcut: ListingShortcut[DesiredT, ObservedT],
    ) -> None:
        self.context = context
        self.adapter = context.adapter
        self.creator = creator
        self.shortcut = shortcut

    async def finalize(self, resource: Resource, state: ObjectState) -> Outcome:
        async with state.lock:
            return await self._finalize(resource, state)

    async def delete_quietly(self, api_key: str, desired: DesiredT, upstream_id: str) -> None:
        with contextlib.suppress(NotFound):
            await self.adapter.delete(api_key, desired, upstream_id)
        self.shortcut.drop(api_key, desired, upstream_id)
        # What the replacement still uses stays: releasing checks who uses each dependent.
        await self.adapter.release(api_key, desired)

    async def _finalize(self, resource: Resource, state: ObjectState) -> Outcome:
        context = self.context
        if paused(resource):
            message = (
                f"the resource is deleted but paused by {PAUSED_ANNOTATION}=true: the upstream object is "
                "left as it is and the finalizer stays until the annotation is removed"
            )
            await context.reporter.paused(resource, state, DELETION_PAUSED_REASON, message)
            # kopf keeps the deletion's retries: backed off, each costs it one annotation write.
            state.failures += 1
            return Outcome(context.backoff(state.failures), done=False)
        report = Report(resource)
        post = context.reporter.post
        if why := orphans(resource):
            await post(resource, state, "Normal", "Orphaned", f"left the upstream object in place ({why})")
            context.release(resource)
            return Outcome(None)
        try:
            spec = context.parse(resource)
        except pydantic.ValidationError:
            # Nothing valid was ever sent upstream from this spec: there is nothing to address.
            message = "the spec is unreadable, so the upstream object cannot be addressed; it is left in place"
            await post(resource, state, "Warning", "Orphaned", message)
            return Outcome(None)
        upstream_id = resource.known_id
        try:
            api_key = await context.api_key(resource, spec.credentials_secret_ref)
            desired = await self.adapter.desire(api_key, spec, context.view(resource, deleting=True))
            if not upstream_id:
                # A create may have succeeded without its id reaching the status.
                try:
                    found = await self.creator.find(api_key, resource, desired, state, fresh=True)
                except NotOurs as exc:
                    # The key's object is someone else's: never delete it from here.
                    message = f"{context.describe(exc.found)} holds this resource's key but was not created by it"
                    await post(resource, state, "Normal", "NothingToDelete", f"{message}; left in place")
                    await self.adapter.release(api_key, desired)
                    context.release(resource)
                    return Outcome(None)
                except (InvalidSpec, AccessDenied) as exc:
                    # The upstream refuses even to look (an unknown tenant, a key without access):
                    # nothing can have been created there by this spec with this key.
                    message = f"no upstream object was found: {redact(exc.message)}"
                    await post(resource, state, "Normal", "NothingToDelete", message)
                    context.release(resource)
                    return Outcome(None)
                upstream_id = self.adapter.upstream_id(found) if found is not None else None
            if upstream_id and context.claim(resource, upstream_id):
                upstream_id = None  # another resource manages it: never delete it from here
            if upstream_id:
                try:
                    extra = await self.adapter.delete(api_key, desired, upstream_id)
                except NotFound:
                    await post(resource, state, "Normal", "AlreadyDeleted", f"upstream object {upstream_id} was gone")
                else:
                    for event in extra:
                        await post(resource, state, *event)
                    await post(resource, state, "Normal", "Deleted", f"deleted upstream object {upstream_id}")
                self.shortcut.drop(api_key, desired, upstream_id)
            await self.adapter.release(api_key, desired)
            context.release(resource)
            return Outcome(None)
        except CredentialsMissing as exc:
            if not upstream_id and not resource.annotations.get(CREATE_PENDING_ANNOTATION):
                # Its credentials were never readable (they are protected once read, see
                # secret_protection), so nothing was ever created with them.
                await post(resource, state, "Normal", "NothingToDelete", f"no upstream object was created: {exc}")
                context.release(resource)
                return Outcome(None)
            state.failures += 1
            return await self._blocked(resource, state, report, str(exc), context.backoff(state.failures))
        except UpstreamError as exc:
            if isinstance(exc, RateLimited):
                delay = max(exc.retry_after, 0.1)
            else:
                state.failures += 1
                delay = context.backoff(state.failures)
            return await self._blocked(resource, state, report, redact(exc.message), delay)

    async def _blocked(
        self, resource: Resource, state: ObjectState, report: Report, message: str, delay: float
    ) -> Outcome:
        report.fail("DeletionBlocked", f"cannot delete the upstream object yet: {message}", set_ready=True)
        await self.context.reporter.finish(resource, state, report, warning=True)
        return Outcome(delay, done=False)
