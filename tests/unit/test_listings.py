"""Shared upstream listings: one fetch for concurrent callers, and lookups by unique key."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aigw_operator.engine.listings import Listings

KEY = ("fingerprint", "")


class Upstream:
    def __init__(self, items: dict[str, dict[str, Any]]) -> None:
        self.items = items
        self.calls = 0

    async def load(self) -> dict[str, Any]:
        self.calls += 1
        await asyncio.sleep(0.01)
        return dict(self.items)


def slug_of(item: dict[str, Any]) -> str:
    return str(item["slug"])


async def test_concurrent_callers_share_one_fetch_and_find_by_key() -> None:
    upstream = Upstream({f"id{n}": {"slug": f"org/s{n}"} for n in range(1000)})
    listings = Listings()
    found = await asyncio.gather(
        *(listings.find(KEY, upstream.load, f"org/s{n}", slug_of, max_age=2.0) for n in range(0, 1000, 10))
    )
    assert upstream.calls == 1
    assert [item["slug"] for item in found] == [f"org/s{n}" for n in range(0, 1000, 10)]
    assert await listings.find(KEY, upstream.load, "org/missing", slug_of, max_age=2.0) is None
    assert upstream.calls == 1


async def test_our_own_writes_are_found_without_a_fetch_and_drops_are_forgotten() -> None:
    upstream = Upstream({"id1": {"slug": "org/a"}})
    listings = Listings()
    assert await listings.find(KEY, upstream.load, "org/b", slug_of, max_age=60.0) is None
    listings.put(KEY, "id2", {"slug": "org/b"})
    assert await listings.find(KEY, upstream.load, "org/b", slug_of, max_age=60.0) == {"slug": "org/b"}
    listings.drop(KEY, "id1")
    assert await listings.find(KEY, upstream.load, "org/a", slug_of, max_age=60.0) is None
    assert (await listings.get(KEY, upstream.load, max_age=60.0)).keys() == {"id2"}
    assert upstream.calls == 1


async def test_a_listing_older_than_a_create_attempt_is_not_trusted() -> None:
    upstream = Upstream({})
    listings = Listings()
    assert await listings.find(KEY, upstream.load, "org/a", slug_of, max_age=60.0) is None
    attempted = time.monotonic()
    upstream.items["id1"] = {"slug": "org/a"}  # the create landed although its answer was lost
    found = await listings.find(KEY, upstream.load, "org/a", slug_of, max_age=60.0, started_after=attempted)
    assert found == {"slug": "org/a"}
    assert upstream.calls == 2
