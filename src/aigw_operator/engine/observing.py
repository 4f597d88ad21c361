"""managementPolicy: ObserveOnly. The upstream object is found and read, never written: no
create, no update, no replace, no delete, no dependent object put in place. The status mirrors
what the upstream holds, and where it differs from the spec the loop says so (Synced=False,
reason UpstreamDrift) and leaves it.

An observed object is found by the status's id, by ``aigw.dev/external-id``, or by the kind's
unique key (a slug, a provider id, a registry name). Finding it by key is safe here, unlike on
the create path, because nothing is ever written to it; it still counts as managed by this
resource, so no other resource takes it over while it is observed.
"""

from __future__ import annotations

import time
from typing import Any, Generic, NoReturn

from aigw_operator.base.api import EXTERNAL_ID_ANNOTATION
from aigw_operator.engine.context import Context, Halt
from aigw_operator.engine.contract import DesiredT, ObservedT
from aigw_operator.engine.creating import Creator
from aigw_operator.engine.reporting import Report
from aigw_operator.engine.resource import ObjectState, Outcome, Resource
from aigw_operator.engine.shortcut import ListingShortcut
from aigw_operator.upstreams.http import InvalidSpec, NotFound

DRIFT_REASON = "UpstreamDrift"
NOT_FOUND_REASON = "UpstreamNotFound"
POLICY = "managementPolicy is ObserveOnly"


class Observer(Generic[DesiredT, ObservedT]):
    def __init__(
        self,
        context: Context[Any, DesiredT, ObservedT],
        creator: Creator[DesiredT, ObservedT],
        shortcut: ListingShortcut[DesiredT, ObservedT],
    ) -> None:
        self.context = context
        self.adapter = context.adapter
        self.creator = creator
        self.shortcut = shortcut

    async def observe(
        self,
        api_key: str,
        resource: Resource,
        desired: DesiredT,
        state: ObjectState,
        report: Report,
        *,
        listed: ObservedT | None = None,
    ) -> ObservedT:
        """The object this resource observes; reports and halts when there is none."""
        context = self.context
        known = resource.known_id
        if known:
            try:
                observed = listed if listed is not None else await self.adapter.get(api_key, desired, known)
            except NotFound:
                await self._missing(resource, state, report, f"{self.adapter.upstream} object {known} does not exist")
        else:
            observed = await self._by_key(api_key, resource, desired, state, report)
        state.observed_at = time.monotonic()
        upstream_id = self.adapter.upstream_id(observed)
        if other := context.claim(resource, upstream_id):
            why = f"{context.describe(observed)} is managed by {self.adapter.info.kind} {other}"
            await self.creator.already_managed(resource, state, report, why, observed=observed)
        report.extra_status["adopted"] = True
        if resource.status.get("id") != upstream_id:
            message = f"observing {context.describe(observed)}; {POLICY}, so it is never changed or deleted from here"
            report.event("Normal", "Observing", message)
        return observed

    def drift(self, desired: DesiredT, observed: ObservedT) -> str | None:
        """What differs from the spec, in words (None: nothing)."""
        fields = set(self.adapter.diff(desired, observed) or ())
        if (replace := self.adapter.replacement(desired, observed)) is not None:
            fields.update(replace.fields)
        if not fields:
            return None
        return (
            f"the upstream object differs from the spec in: {', '.join(sorted(fields))}; "
            f"{POLICY}, so it is not corrected"
        )

    async def _by_key(
        self, api_key: str, resource: Resource, desired: DesiredT, state: ObjectState, report: Report
    ) -> ObservedT:
        unique = self.adapter.unique
        if unique is None:
            raise InvalidSpec(
                upstream=self.adapter.upstream,
                status=None,
                message=f"{POLICY} and {self.adapter.info.kind} has no unique key to find its object by: "
                f"name the {self.adapter.upstream} object with the annotation {EXTERNAL_ID_ANNOTATION}",
                method="GET",
                route="",
            )
        found = await self.shortcut.find(api_key, desired, unique, fresh=False, started_after=None)
        if found is None:
            await self._missing(
                resource, state, report, f"no {self.adapter.upstream} object has the key {unique.unique_key(desired)!r}"
            )
        return found

    async def _missing(self, resource: Resource, state: ObjectState, report: Report, what: str) -> NoReturn:
        # Something outside Kubernetes may make it: looked for again at the resync, not before.
        report.fail(NOT_FOUND_REASON, f"{what}; {POLICY}, so none is created", set_ready=True)
        await self.context.finish(resource, state, report, None, warning=True)
        raise Halt(Outcome(self.context.resync_delay(resource)))
