"""The listing shortcut: a routine resync answered from one shared listing of its kind instead
of a GET per object (see :mod:`~aigw_operator.engine.listings`).

It owns the kind's listings, so everything else that reads or amends them goes through here,
keyed the same way (per credential and scope): the search for a lost create by its unique key,
and the loop's own writes and deletes, which a listing would otherwise show late.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Generic, cast

from aigw_operator.engine import conditions as cond
from aigw_operator.engine.context import Context
from aigw_operator.engine.contract import DesiredT, Listing, ObservedT, PartialListing, UniqueKey
from aigw_operator.engine.listings import Listings
from aigw_operator.engine.reporting import Report
from aigw_operator.engine.resource import ObjectState, Resource
from aigw_operator.upstreams.http import credential_fingerprint

# How old a shared listing may be when it is searched for an object to create, or used as the
# observation itself: a create the listing missed is refused by the upstream's unique key and
# then found by a fresh listing.
FIND_LISTING_MAX_AGE = 2.0


class ListingShortcut(Generic[DesiredT, ObservedT]):
    def __init__(self, context: Context[Any, DesiredT, ObservedT]) -> None:
        self.context = context
        self.adapter = context.adapter
        self.listings = Listings()
        self._lister: Listing[DesiredT, ObservedT] | PartialListing[DesiredT, ObservedT] | None = (
            self.adapter.listing or self.adapter.partial_listing
        )

    async def unchanged(
        self, api_key: str, resource: Resource, desired: DesiredT, state: ObjectState, report: Report
    ) -> tuple[bool, ObservedT | None]:
        """Whether a routine resync's object shows nothing to act on in a shared listing; and,
        when it does show something, the listed object if it is complete and just fetched, so
        that the observation needs no second call."""
        settings = self.context.settings
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
            and (partial is None or time.monotonic() - state.observed_at < settings.full_observe_interval)
        )
        if not routine:
            return False, None
        max_age = self.context.resync_interval(resource) * (1 - settings.resync_jitter)
        item = (await self._listing(api_key, desired, max_age=max_age)).get(str(status["id"]))
        if item is None:
            return False, None
        if partial is not None:
            return partial.listed_unchanged(desired, item, status), None
        age = self.listings.age(self._key(api_key, desired))
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

    async def find(
        self,
        api_key: str,
        desired: DesiredT,
        unique: UniqueKey[DesiredT, ObservedT],
        *,
        fresh: bool,
        started_after: float | None,
    ) -> ObservedT | None:
        """The listed object whose unique key is the one ``desired`` asks for."""
        lister = self._lister
        assert lister is not None  # check(): a unique key is looked up in a listing
        found: ObservedT | None = await self.listings.find(
            self._key(api_key, desired),
            lambda: lister.list_all(api_key, desired),
            unique.unique_key(desired),
            unique.item_key,
            max_age=0.0 if fresh else FIND_LISTING_MAX_AGE,
            started_after=started_after,
        )
        return found

    def remember(self, api_key: str, desired: DesiredT, observed: ObservedT) -> None:
        """Our own writes go into the shared listing, which would otherwise show them late."""
        if self.adapter.listing is not None:
            self.listings.put(self._key(api_key, desired), self.adapter.upstream_id(observed), observed)

    def drop(self, api_key: str, desired: DesiredT, upstream_id: str) -> None:
        self.listings.drop(self._key(api_key, desired), upstream_id)

    def _key(self, api_key: str, desired: DesiredT) -> tuple[str, str]:
        scope = self._lister.list_scope(desired) if self._lister is not None else ""
        return credential_fingerprint(api_key), scope

    async def _listing(self, api_key: str, desired: DesiredT, *, max_age: float) -> Mapping[str, ObservedT]:
        lister = self._lister
        assert lister is not None
        items = await self.listings.get(
            self._key(api_key, desired), lambda: lister.list_all(api_key, desired), max_age=max_age
        )
        return cast(Mapping[str, ObservedT], items)
