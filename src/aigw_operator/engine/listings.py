"""Shared upstream listings: one list call answers the drift checks of many objects.

Each object's resync first looks itself up in a recent listing of its kind (per credential
and scope) and asks the upstream for more only when the listing shows something to act on.
N objects then cost about ceil(N / page size) list calls per resync interval instead of N
GETs. Concurrent callers share one fetch in flight.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

Loader = Callable[[], Awaitable[Mapping[str, Any]]]


@dataclass
class _Listing:
    started: float
    fetch: asyncio.Future[dict[str, Any]]
    items: dict[str, Any] = field(default_factory=dict)
    # Items by the upstream's unique key, built on the first lookup: a burst of N creates
    # searching one listing of N items would otherwise compare N * N times.
    by_key: dict[str, Any] | None = None
    key_of: Callable[[Any], str] | None = None


class Listings:
    def __init__(self) -> None:
        self._latest: dict[tuple[str, ...], _Listing] = {}

    async def get(
        self, key: tuple[str, ...], load: Loader, *, max_age: float, started_after: float | None = None
    ) -> Mapping[str, Any]:
        """Items by upstream id, from a fetch no older than ``max_age`` seconds (and, if given,
        begun after the monotonic time ``started_after``), or from a new fetch."""
        return (await self._get(key, load, max_age=max_age, started_after=started_after)).items

    async def find(
        self,
        key: tuple[str, ...],
        load: Loader,
        unique: str,
        key_of: Callable[[Any], str],
        *,
        max_age: float,
        started_after: float | None = None,
    ) -> Any | None:
        """The item whose unique key (``key_of(item)``) is ``unique``, as :meth:`get` finds the listing."""
        listing = await self._get(key, load, max_age=max_age, started_after=started_after)
        if listing.by_key is None:
            listing.by_key = {key_of(item): item for item in listing.items.values()}
            listing.key_of = key_of
        return listing.by_key.get(unique)

    async def _get(
        self, key: tuple[str, ...], load: Loader, *, max_age: float, started_after: float | None
    ) -> _Listing:
        now = time.monotonic()
        listing = self._latest.get(key)
        fresh_enough = listing is not None and now - listing.started <= max_age
        if listing is not None and fresh_enough and (started_after is None or listing.started > started_after):
            if not listing.fetch.done():
                await asyncio.shield(listing.fetch)
                return listing
            if listing.fetch.exception() is None:
                return listing
        return await self._fetch(key, load)

    async def _fetch(self, key: tuple[str, ...], load: Loader) -> _Listing:
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        listing = _Listing(started=time.monotonic(), fetch=future)
        self._latest[key] = listing
        try:
            listing.items = dict(await load())
        except BaseException as exc:
            if self._latest.get(key) is listing:
                del self._latest[key]
            future.set_exception(exc)
            future.exception()  # retrieved: callers that were not waiting must not warn
            raise
        future.set_result(listing.items)
        return listing

    def age(self, key: tuple[str, ...]) -> float | None:
        """Seconds since the latest complete listing for ``key`` was begun (None: there is none)."""
        listing = self._latest.get(key)
        if listing is None or not listing.fetch.done() or listing.fetch.exception() is not None:
            return None
        return time.monotonic() - listing.started

    def put(self, key: tuple[str, ...], upstream_id: str, item: Any) -> None:
        """Our own write: later lookups see it without another fetch."""
        listing = self._latest.get(key)
        if listing is not None and listing.fetch.done() and listing.fetch.exception() is None:
            listing.items[upstream_id] = item
            if listing.by_key is not None and listing.key_of is not None:
                listing.by_key[listing.key_of(item)] = item

    def drop(self, key: tuple[str, ...], upstream_id: str) -> None:
        listing = self._latest.get(key)
        if listing is not None and listing.fetch.done() and listing.fetch.exception() is None:
            listing.items.pop(upstream_id, None)
            listing.by_key = None  # rebuilt at the next lookup
