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


class Listings:
    def __init__(self) -> None:
        self._latest: dict[tuple[str, ...], _Listing] = {}

    async def get(
        self, key: tuple[str, ...], load: Loader, *, max_age: float, started_after: float | None = None
    ) -> Mapping[str, Any]:
        """Items by upstream id, from a fetch no older than ``max_age`` seconds (and, if given,
        begun after the monotonic time ``started_after``), or from a new fetch."""
        now = time.monotonic()
        listing = self._latest.get(key)
        fresh_enough = listing is not None and now - listing.started <= max_age
        if listing is not None and fresh_enough and (started_after is None or listing.started > started_after):
            if not listing.fetch.done():
                return await asyncio.shield(listing.fetch)
            if listing.fetch.exception() is None:
                return listing.items
        return await self._fetch(key, load)

    async def _fetch(self, key: tuple[str, ...], load: Loader) -> Mapping[str, Any]:
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
        return listing.items

    def put(self, key: tuple[str, ...], upstream_id: str, item: Any) -> None:
        """Our own write: later lookups see it without another fetch."""
        listing = self._latest.get(key)
        if listing is not None and listing.fetch.done() and listing.fetch.exception() is None:
            listing.items[upstream_id] = item

    def drop(self, key: tuple[str, ...], upstream_id: str) -> None:
        listing = self._latest.get(key)
        if listing is not None and listing.fetch.done() and listing.fetch.exception() is None:
            listing.items.pop(upstream_id, None)
