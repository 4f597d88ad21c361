"""README promises about DedicatedEndpoints (Together) that had no test of their own:
Recreate never bills two endpoints, the create-pending mark comes before every POST and
nothing is adopted without it, the settle window after a lost create, and Scaling/Progressing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from aigw_testbed.kubectl import condition
from aigw_testbed.simulators.together import TogetherSimulator
from tests.conftest import TOGETHER_KEY, sampling
from tests.operator.conftest import KubeEnv, OperatorRunner, make_settings, release_resources, scan_for_canaries

PLURAL = "dedicatedendpoints"
KIND = "DedicatedEndpoint"
MODEL = "meta-llama/Llama-3-8b-chat-hf"
HARDWARE = "1x_nvidia_h100_80gb_sxm"
OTHER_HARDWARE = "2x_nvidia_h100_80gb_sxm"  # offered for MODEL, "insufficient" unless a test frees it
MARK = "aigw.dev/create-pending"
ENDPOINTS = "/v1/endpoints"
ENDPOINT = "/v1/endpoints/{id}"


def spec(**extra: Any) -> dict[str, Any]:
    return {
        "model": MODEL,
        "hardware": HARDWARE,
        "autoscaling": {"minReplicas": 1, "maxReplicas": 2},
        "credentialsSecretRef": {"name": "together"},
        **extra,
    }


async def test_recreate_deletes_before_it_creates_never_two_billed_endpoints(
    kube_env: KubeEnv, together: TogetherSimulator, operator: OperatorRunner, credentials: str
) -> None:
    together.set_availability(MODEL, OTHER_HARDWARE, "available")
    await kube_env.kube.create(KIND, PLURAL, "llama", spec(replacePolicy="Recreate"))
    obj = await kube_env.kube.wait_condition(PLURAL, "llama", "Ready", "True")
    old_id = obj["status"]["id"]
    together.reset_counts()
    # Had the operator created first, the old endpoint would stay 0.3 s longer: the sampler sees it.
    together.faults.slow_next(1, seconds=0.3, method="DELETE")
    async with sampling(lambda: set(together.endpoints)) as samples:
        response = await kube_env.kube.patch_spec(PLURAL, "llama", {"hardware": OTHER_HARDWARE})
        assert response.status_code == 200, response.text
        obj = await kube_env.kube.wait_for(
            PLURAL,
            "llama",
            lambda o: bool(
                o and o["status"].get("hardware") == OTHER_HARDWARE and condition(o, "Ready")["status"] == "True"  # type: ignore[index]
            ),
            timeout=20,
        )
    assert obj is not None
    assert len(samples) > 20, "the sampler ran throughout the change"
    most = max(len(ids) for _, ids in samples)
    assert most <= 1, f"{most} billed endpoints existed at once for one resource"
    # Delete, its answer, then the POST: the 0.3 s the DELETE was held precede the POST.
    [delete] = [r for r in together.requests if r.method == "DELETE"]
    [post] = [r for r in together.requests if r.method == "POST"]
    assert delete.path == f"/v1/endpoints/{old_id}" and delete.status == 204
    assert post.time >= delete.time + 0.3, "the POST went out before Together had answered the DELETE"
    [new_id] = together.endpoints
    assert new_id != old_id and obj["status"]["id"] == new_id
    assert together.endpoints[new_id].hardware == OTHER_HARDWARE
    assert "Recreated" in [e["reason"] for e in await kube_env.kube.events("llama")]


async def _mark_while_post_is_held(env: KubeEnv, together: TogetherSimulator, act: Callable[[], Any]) -> Any:
    """The resource as the API server has it while Together holds the answer to a POST."""
    hold = together.faults.hold_next_response("POST")
    try:
        await act()
        await asyncio.wait_for(hold.reached.wait(), timeout=10)
        seen = await env.kube.get(PLURAL, "llama")
    finally:
        hold.release()
    assert hold.record is not None
    return seen, hold.record


async def test_create_pending_mark_is_written_before_the_post(
    kube_env: KubeEnv, together: TogetherSimulator, operator: OperatorRunner, credentials: str
) -> None:
    before = time.time()

    async def create() -> None:
        response = await kube_env.kube.create(KIND, PLURAL, "llama", spec())
        assert response.status_code == 201, response.text

    seen, post = await _mark_while_post_is_held(kube_env, together, create)
    assert seen is not None
    annotations = seen["metadata"].get("annotations") or {}
    assert MARK in annotations, "Together has the POST but the resource carries no create-pending mark"
    assert before - 1 <= float(annotations[MARK]) <= time.time()
    assert not (seen.get("status") or {}).get("id")
    assert post.path == ENDPOINTS and len(together.endpoints) == 1
    # Once the id is in the status, the mark goes.
    obj = await kube_env.kube.wait_for(
        PLURAL,
        "llama",
        lambda o: bool(o and o.get("status", {}).get("id") and MARK not in (o["metadata"].get("annotations") or {})),
    )
    assert obj is not None and obj["status"]["id"] in together.endpoints


async def test_create_pending_mark_is_written_before_the_post_of_a_recreate(
    kube_env: KubeEnv, together: TogetherSimulator, operator: OperatorRunner, credentials: str
) -> None:
    """README: "Before every POST the operator writes the annotation" - a Recreate POSTs too,
    and its answer can be lost like any other."""
    together.set_availability(MODEL, OTHER_HARDWARE, "available")
    await kube_env.kube.create(KIND, PLURAL, "llama", spec(replacePolicy="Recreate"))
    await kube_env.kube.wait_condition(PLURAL, "llama", "Ready", "True")
    await kube_env.kube.wait_for(
        PLURAL, "llama", lambda o: bool(o and MARK not in (o["metadata"].get("annotations") or {}))
    )

    async def change_hardware() -> None:
        response = await kube_env.kube.patch_spec(PLURAL, "llama", {"hardware": OTHER_HARDWARE})
        assert response.status_code == 200, response.text

    seen, post = await _mark_while_post_is_held(kube_env, together, change_hardware)
    assert post.path == ENDPOINTS and post.body["hardware"] == OTHER_HARDWARE  # type: ignore[index]
    assert seen is not None
    assert MARK in (seen["metadata"].get("annotations") or {}), (
        "the Recreate's POST reached Together while the resource carried no create-pending mark: "
        "had its answer been lost, nothing would tell the operator to look for the endpoint"
    )


async def test_recreate_whose_post_answer_is_lost_still_ends_with_one_billed_endpoint(
    kube_env: KubeEnv, together: TogetherSimulator, operator: OperatorRunner, credentials: str
) -> None:
    """The consequence of a Recreate POST without the mark: its lost answer must be looked for,
    like a first create's, not followed by another POST."""
    together.set_availability(MODEL, OTHER_HARDWARE, "available")
    await kube_env.kube.create(KIND, PLURAL, "llama", spec(replacePolicy="Recreate"))
    await kube_env.kube.wait_condition(PLURAL, "llama", "Ready", "True")
    together.faults.lose_next_response("POST")
    await kube_env.kube.patch_spec(PLURAL, "llama", {"hardware": OTHER_HARDWARE})
    obj = await kube_env.kube.wait_for(
        PLURAL,
        "llama",
        lambda o: bool(
            o and o["status"].get("hardware") == OTHER_HARDWARE and condition(o, "Ready")["status"] == "True"  # type: ignore[index]
        ),
        timeout=20,
    )
    await asyncio.sleep(1.0)
    assert obj is not None
    billed = {k: (e.hardware, e.display_name) for k, e in together.endpoints.items()}
    assert list(billed) == [obj["status"]["id"]], f"billed endpoints for one resource: {billed}"


async def test_without_the_mark_a_look_alike_endpoint_is_never_adopted(
    kube_env: KubeEnv, together: TogetherSimulator, operator: OperatorRunner, credentials: str
) -> None:
    # Made by hand with exactly what the resource will ask for: display name (the default
    # <namespace>/<name>), model and hardware.
    display_name = f"{kube_env.kube.namespace}/llama"
    async with httpx.AsyncClient(base_url=together.url, headers={"Authorization": f"Bearer {TOGETHER_KEY}"}) as http:
        response = await http.post(
            ENDPOINTS,
            json={
                "model": MODEL,
                "hardware": HARDWARE,
                "display_name": display_name,
                "autoscaling": {"min_replicas": 1, "max_replicas": 1},
            },
        )
        assert response.status_code == 200, response.text
    by_hand = response.json()["id"]
    together.reset_counts()
    await kube_env.kube.create(KIND, PLURAL, "llama", spec())
    obj = await kube_env.kube.wait_condition(PLURAL, "llama", "Ready", "True")
    assert obj["status"]["id"] != by_hand, "a look-alike endpoint was adopted without a create-pending mark"
    assert together.count("POST", ENDPOINTS) == 1, "the resource created its own endpoint"
    assert set(together.endpoints) == {by_hand, obj["status"]["id"]}
    hand = together.endpoints[by_hand]
    assert (hand.display_name, hand.min_replicas, hand.max_replicas) == (display_name, 1, 1), "left untouched"
    assert all(r.path != f"/v1/endpoints/{by_hand}" or r.method == "GET" for r in together.requests)
    assert "Adopted" not in [e["reason"] for e in await kube_env.kube.events("llama")]
    # Deleting the resource deletes its own endpoint only.
    await kube_env.kube.delete(PLURAL, "llama")
    await kube_env.kube.wait_gone(PLURAL, "llama")
    assert set(together.endpoints) == {by_hand}


async def test_after_a_lost_create_that_did_not_land_it_waits_the_settle_window_before_posting_again(
    kube_env: KubeEnv, together: TogetherSimulator, credentials: str
) -> None:
    settle = 4.0
    runner = OperatorRunner(
        make_settings(kube_env, "http://127.0.0.1:9", together_url=together.url, create_settle_seconds=settle)
    )
    await runner.start()
    try:
        # The POST is carried out and held; the endpoint then vanishes (it never landed, as far as
        # anyone can tell) and the connection is dropped: the operator cannot know either way.
        hold = together.faults.hold_next_response("POST")
        together.faults.lose_next_response("POST")
        await kube_env.kube.create(KIND, PLURAL, "llama", spec())
        await asyncio.wait_for(hold.reached.wait(), timeout=10)
        [landed] = together.endpoints
        together.delete_out_of_band(landed)
        hold.release()
        assert hold.record is not None
        first = hold.record.time
        pending = await kube_env.kube.wait_condition(PLURAL, "llama", "Ready", "False", reason="CreatePending")
        assert MARK in pending["metadata"]["annotations"]
        assert time.monotonic() < first + settle - 0.5, "CreatePending was reported within the window"

        def posts() -> list[float]:
            return [r.time for r in together.requests if r.method == "POST" and r.path == ENDPOINTS]

        # Nothing is posted again within the window...
        await asyncio.sleep(max(0.0, first + settle - 0.6 - time.monotonic()))
        assert posts() == [first], "a second POST went out inside the settle window"
        # ...while the operator keeps looking for the first one...
        looks = [r for r in together.requests if r.method == "GET" and r.path == ENDPOINTS and r.time > first]
        assert len(looks) >= 2, f"the operator looked for the lost endpoint only {len(looks)} time(s)"
        # ...and exactly one POST follows once it has passed.
        obj = await kube_env.kube.wait_condition(PLURAL, "llama", "Ready", "True", timeout=settle + 10)
        assert len(posts()) == 2
        second = posts()[1]
        assert second - first >= settle - 0.5, f"second POST {second - first:.2f}s after the first"
        assert second - first <= settle + 3.0, f"second POST only {second - first:.2f}s after the first"
        assert list(together.endpoints) == [obj["status"]["id"]]
        await scan_for_canaries(kube_env)
        await release_resources(kube_env.kube)
    finally:
        await runner.stop()


@pytest.fixture(autouse=True)
def _no_hold_left(together: TogetherSimulator) -> Any:
    yield
    together.faults.reset()
