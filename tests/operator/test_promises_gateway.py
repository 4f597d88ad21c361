"""README promises about GatewayEndpoints (Baseten) that had no test of their own: AlreadyManaged
for a shared slug, AccessDenied retries and the key change, Warning Event dedupe, the rename
order under immutable slugs, RateLimited and Orphaned."""

from __future__ import annotations

import asyncio
import datetime
import itertools
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aigw_testbed.kubectl import condition
from aigw_testbed.simulators.baseten import BasetenSimulator
from tests.conftest import API_KEY, sampling
from tests.operator.conftest import KubeEnv, OperatorRunner, make_settings, release_resources, scan_for_canaries

PLURAL = "gatewayendpoints"
KIND = "GatewayEndpoint"
ENDPOINTS = "/v1/gateway/endpoints"
WRONG_KEY = "bt-wrong-key-000000"  # a key Baseten does not know: 401


def spec(slug: str = "my-org/glm", model_id: str = "3kZ9xqd", **extra: Any) -> dict[str, Any]:
    return {
        "slug": slug,
        "targets": [{"provider": "BASETEN", "modelId": model_id}],
        "credentialsSecretRef": {"name": "baseten"},
        **extra,
    }


@asynccontextmanager
async def running(settings: Any, env: KubeEnv) -> AsyncIterator[OperatorRunner]:
    runner = OperatorRunner(settings)
    await runner.start()
    try:
        yield runner
        await scan_for_canaries(env)
        await release_resources(env.kube)
    finally:
        await runner.stop()


async def test_second_resource_with_the_same_slug_is_already_managed_and_never_touches_the_first(
    kube_env: KubeEnv, baseten: BasetenSimulator, operator: OperatorRunner, credentials: str
) -> None:
    fast = {"aigw.dev/resync-seconds": "1"}
    await kube_env.kube.create(KIND, PLURAL, "first", spec(slug="my-org/one", model_id="aaaaaaa"), annotations=fast)
    first = await kube_env.kube.wait_condition(PLURAL, "first", "Ready", "True")
    before = {id_: dict(e) for id_, e in baseten.endpoints.items()}
    baseten.reset_counts()
    # Another target: were the second resource to take the endpoint over, it would PATCH it.
    await kube_env.kube.create(KIND, PLURAL, "second", spec(slug="my-org/one", model_id="bbbbbbb"), annotations=fast)
    second = await kube_env.kube.wait_condition(PLURAL, "second", "Ready", "False", reason="AlreadyManaged")
    assert f"{kube_env.kube.namespace}/first" in condition(second, "Ready")["message"]  # type: ignore[index]
    assert not second["status"].get("id")
    await asyncio.sleep(2.5)  # a few resyncs of both
    assert [r for r in baseten.requests if r.method != "GET"] == [], "nothing may be written upstream"
    assert baseten.endpoints == before
    again = await kube_env.kube.get(PLURAL, "first")
    second = await kube_env.kube.get(PLURAL, "second")
    assert again and second
    assert again["status"]["id"] == first["status"]["id"]
    assert condition(again, "Ready")["status"] == "True"  # type: ignore[index]
    assert condition(second, "Ready")["reason"] == "AlreadyManaged"  # type: ignore[index]
    # Deleting the second resource leaves the first one's endpoint alone.
    await kube_env.kube.delete(PLURAL, "second")
    await kube_env.kube.wait_gone(PLURAL, "second")
    assert baseten.endpoints == before
    assert baseten.count("DELETE") == 0


async def test_access_denied_is_retried_on_the_interval_without_a_storm(
    kube_env: KubeEnv, baseten: BasetenSimulator, operator: OperatorRunner
) -> None:
    interval = operator.settings.access_denied_retry_interval
    assert interval == 0.5
    await kube_env.kube.put_secret("baseten", {"apiKey": WRONG_KEY})
    await kube_env.kube.create(KIND, PLURAL, "glm", spec())
    await kube_env.kube.wait_condition(PLURAL, "glm", "Ready", "False", reason="AccessDenied")
    await asyncio.sleep(3.0)
    refused = [r.time for r in baseten.requests if r.status == 401]
    window = refused[-1] - refused[0]
    gaps = [b - a for a, b in itertools.pairwise(refused)]
    assert len(refused) >= 4, f"retried only {len(refused)} times in {window:.1f}s"
    assert min(gaps) >= interval * 0.9, f"retries {min(gaps):.3f}s apart, the interval is {interval}s"
    assert len(refused) <= window / interval + 2, f"{len(refused)} attempts in {window:.1f}s: a storm"
    assert baseten.endpoints == {}
    warnings = [e for e in await kube_env.kube.events("glm") if e["type"] == "Warning"]
    assert [e["reason"] for e in warnings] == ["AccessDenied"], "one Warning, deduplicated"


async def test_access_denied_is_retried_at_once_after_the_key_changes(
    kube_env: KubeEnv, baseten: BasetenSimulator
) -> None:
    interval = 60.0
    settings = make_settings(kube_env, baseten.url, access_denied_retry_interval=interval)
    async with running(settings, kube_env):
        watched = {"aigw.dev/watch": "true"}
        await kube_env.kube.put_secret("baseten", {"apiKey": WRONG_KEY}, labels=watched)
        await kube_env.kube.create(KIND, PLURAL, "glm", spec())
        await kube_env.kube.wait_condition(PLURAL, "glm", "Ready", "False", reason="AccessDenied")
        # (The operator's own finalizer on the watched Secret may wake it once more at the start.)
        await asyncio.sleep(1.0)
        refused = sum(1 for r in baseten.requests if r.status == 401)
        await asyncio.sleep(1.5)
        assert sum(1 for r in baseten.requests if r.status == 401) == refused, "the next retry is a minute away"
        assert refused <= 2
        changed = time.monotonic()
        await kube_env.kube.put_secret("baseten", {"apiKey": API_KEY}, labels=watched)
        obj = await kube_env.kube.wait_condition(PLURAL, "glm", "Ready", "True", timeout=10)
        took = time.monotonic() - changed
        assert took < 5.0, f"Ready {took:.1f}s after the key change"
        assert obj["status"]["id"] in baseten.endpoints
        assert all(r.key == API_KEY for r in baseten.requests if r.status != 401)


async def test_the_same_warning_is_posted_once_per_dedupe_window(kube_env: KubeEnv, baseten: BasetenSimulator) -> None:
    """Within the window a repeated Warning is not posted at all; after it, the repeat counts on
    the Event already there (count 2, lastTimestamp moved), as Kubernetes aggregates Events."""
    dedupe = 3.0
    settings = make_settings(kube_env, baseten.url, event_dedupe_seconds=dedupe, access_denied_retry_interval=0.3)
    async with running(settings, kube_env):
        await kube_env.kube.put_secret("baseten", {"apiKey": WRONG_KEY})
        await kube_env.kube.create(KIND, PLURAL, "glm", spec())

        async def warnings() -> list[dict[str, Any]]:
            return [e for e in await kube_env.kube.events("glm") if e["type"] == "Warning"]

        deadline = time.monotonic() + dedupe + 8
        seen = await warnings()
        while not seen and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            seen = await warnings()
        first_seen = time.monotonic()
        refused_before_second = 0
        while seen and seen[0].get("count") == 1 and time.monotonic() < deadline:
            refused_before_second = sum(1 for r in baseten.requests if r.status == 401)
            await asyncio.sleep(0.05)
            seen = await warnings()
        second_seen = time.monotonic()
        assert len(seen) == 1, f"a repeat is not a new Event: {seen}"
        [event] = seen
        assert event["reason"] == "AccessDenied"
        assert event["count"] == 2, f"the warning was not posted again after the window: {event}"
        # Meanwhile the same refusal came back again and again, with no Event.
        assert refused_before_second >= 5, f"only {refused_before_second} refusals before the second Event"
        apart = second_seen - first_seen
        # Seen by polling every 0.05 s (plus a list): allow for that on both sides.
        assert apart >= dedupe - 0.3, f"posted again {apart:.2f}s later, within the {dedupe}s window"
        assert apart <= dedupe + 1.5, f"posted again only {apart:.2f}s later"
        stamped = _stamp(event["lastTimestamp"]) - _stamp(event["firstTimestamp"])
        assert dedupe - 1 <= stamped <= dedupe + 2, (event["firstTimestamp"], event["lastTimestamp"])


def _stamp(value: str) -> float:
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


async def test_rename_under_immutable_slugs_creates_first_and_the_route_is_never_absent(
    kube_env: KubeEnv, baseten: BasetenSimulator, operator: OperatorRunner, credentials: str
) -> None:
    baseten.slug_rename = "immutable"
    obj = await kube_env.kube.create(KIND, PLURAL, "glm", spec())
    obj = await kube_env.kube.wait_condition(PLURAL, "glm", "Ready", "True")
    old_id = obj["status"]["id"]
    baseten.reset_counts()
    # Had the operator deleted first, the route would be absent for these 0.3 s: the sampler sees it.
    baseten.faults.slow_next(1, seconds=0.3, method="POST")
    slugs = ("my-org/glm", "my-org/glm-renamed")
    async with sampling(lambda: {e["slug"] for e in baseten.endpoints.values()}) as samples:
        await kube_env.kube.patch_spec(PLURAL, "glm", {"slug": "my-org/glm-renamed"})
        obj = await kube_env.kube.wait_for(
            PLURAL,
            "glm",
            lambda o: bool(
                o and o["status"].get("slug") == "my-org/glm-renamed" and o["status"].get("observedGeneration") == 2
            ),
        )
    assert obj is not None
    assert len(samples) > 10
    absent = [t for t, present in samples if not present & set(slugs)]
    assert not absent, f"no endpoint routed either slug in {len(absent)} of {len(samples)} samples"
    [post] = [r for r in baseten.requests if r.method == "POST" and r.path == ENDPOINTS]
    [delete] = [r for r in baseten.requests if r.method == "DELETE"]
    assert delete.path == f"{ENDPOINTS}/{old_id}"
    assert delete.time >= post.time + 0.3, "the old endpoint was deleted before the new one was answered"
    assert [e["slug"] for e in baseten.endpoints.values()] == ["my-org/glm-renamed"]
    assert obj["status"]["id"] != old_id and obj["status"]["id"] in baseten.endpoints
    assert "Replaced" in [e["reason"] for e in await kube_env.kube.events("glm")]


async def test_a_long_retry_after_is_reported_as_rate_limited_and_waited_out(
    kube_env: KubeEnv, baseten: BasetenSimulator, operator: OperatorRunner, credentials: str
) -> None:
    retry_after = 6
    assert retry_after > operator.settings.baseten.max_inline_retry_after
    baseten.faults.rate_limit_burst(1, retry_after=retry_after)
    await kube_env.kube.create(KIND, PLURAL, "glm", spec())
    obj = await kube_env.kube.wait_condition(PLURAL, "glm", "Ready", "False", reason="RateLimited")
    assert condition(obj, "Synced")["reason"] == "RateLimited"  # type: ignore[index]
    [throttled] = [r for r in baseten.requests if r.status == 429]
    await kube_env.kube.wait_condition(PLURAL, "glm", "Ready", "True", timeout=retry_after + 10)
    following = [r for r in baseten.requests if r.time > throttled.time]
    assert following[0].time - throttled.time >= retry_after, "sent again before Retry-After had passed"
    assert len(baseten.endpoints) == 1
    assert "RateLimited" in [e["reason"] for e in await kube_env.kube.events("glm") if e["type"] == "Warning"]


async def test_orphan_deletion_posts_orphaned_and_leaves_the_endpoint(
    kube_env: KubeEnv, baseten: BasetenSimulator, operator: OperatorRunner, credentials: str
) -> None:
    await kube_env.kube.create(KIND, PLURAL, "glm", spec(deletionPolicy="Orphan"))
    obj = await kube_env.kube.wait_condition(PLURAL, "glm", "Ready", "True")
    await kube_env.kube.delete(PLURAL, "glm")
    await kube_env.kube.wait_gone(PLURAL, "glm")
    orphaned = [e for e in await kube_env.kube.events("glm") if e["reason"] == "Orphaned"]
    assert [e["type"] for e in orphaned] == ["Normal"]
    assert list(baseten.endpoints) == [obj["status"]["id"]]
    assert baseten.count("DELETE") == 0
