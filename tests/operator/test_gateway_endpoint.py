"""GatewayEndpoint end to end: the real operator, the Kubernetes API, the Baseten simulator."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from aigw_testbed.kubectl import condition
from aigw_testbed.simulators.baseten import BasetenSimulator
from tests.conftest import API_KEY
from tests.operator.conftest import KubeEnv, OperatorRunner, kill_while_held, make_settings

PLURAL = "gatewayendpoints"
KIND = "GatewayEndpoint"
ENDPOINTS = "/v1/gateway/endpoints"
ENDPOINT = "/v1/gateway/endpoints/{id}"


def spec(slug: str = "my-org/glm", model_id: str = "3kZ9xqd", **extra: Any) -> dict[str, Any]:
    return {
        "slug": slug,
        "targets": [{"provider": "BASETEN", "modelId": model_id}],
        "credentialsSecretRef": {"name": "baseten"},
        **extra,
    }


def upstream_by_slug(sim: BasetenSimulator, slug: str) -> list[dict[str, Any]]:
    return [e for e in sim.endpoints.values() if e["slug"] == slug]


async def create_ready(env: KubeEnv, name: str = "glm", **kw: Any) -> dict[str, Any]:
    response = await env.kube.create(KIND, PLURAL, name, spec(**kw))
    assert response.status_code == 201, response.text
    return await env.kube.wait_condition(PLURAL, name, "Ready", "True")


async def test_create_reports_status_and_event(
    kube_env: KubeEnv, baseten: BasetenSimulator, operator: OperatorRunner, credentials: str
) -> None:
    obj = await create_ready(kube_env)
    status = obj["status"]
    [upstream] = upstream_by_slug(baseten, "my-org/glm")
    assert status["id"] == upstream["id"]
    assert status["slug"] == "my-org/glm"
    assert status["createdAt"] and status["updatedAt"]
    assert status["observedGeneration"] == obj["metadata"]["generation"]
    assert "aigw.dev/finalizer" in obj["metadata"]["finalizers"]
    assert upstream["targets"] == [{"provider": "BASETEN", "model_id": "3kZ9xqd"}]
    synced = condition(obj, "Synced")
    assert synced and synced["status"] == "True"
    reasons = [e["reason"] for e in await kube_env.kube.events("glm")]
    assert "Created" in reasons
    assert baseten.count("POST", ENDPOINTS) == 1


async def test_spec_change_is_one_patch_with_only_the_change(
    kube_env: KubeEnv, baseten: BasetenSimulator, operator: OperatorRunner, credentials: str
) -> None:
    obj = await create_ready(kube_env)
    baseten.reset_counts()
    await kube_env.kube.patch_spec(PLURAL, "glm", {"targets": [{"provider": "BASETEN", "modelId": "7mP2wqe"}]})
    generation = obj["metadata"]["generation"] + 1
    await kube_env.kube.wait_for(
        PLURAL, "glm", lambda o: bool(o and o["status"].get("observedGeneration") == generation)
    )
    patches = [r for r in baseten.requests if r.method == "PATCH"]
    assert len(patches) == 1
    assert patches[0].body == {"targets": [{"provider": "BASETEN", "model_id": "7mP2wqe"}]}
    assert baseten.count("POST") == 0
    [upstream] = upstream_by_slug(baseten, "my-org/glm")
    assert upstream["targets"][0]["model_id"] == "7mP2wqe"
    assert "Updated" in [e["reason"] for e in await kube_env.kube.events("glm")]


async def test_noop_resync_writes_nothing(
    kube_env: KubeEnv, baseten: BasetenSimulator, operator: OperatorRunner, credentials: str
) -> None:
    await kube_env.kube.create(KIND, PLURAL, "glm", spec(), annotations={"aigw.dev/resync-seconds": "1"})
    obj = await kube_env.kube.wait_condition(PLURAL, "glm", "Ready", "True")
    await asyncio.sleep(0.5)  # let the create's own writes settle
    obj = await kube_env.kube.get(PLURAL, "glm")
    assert obj is not None
    version = obj["metadata"]["resourceVersion"]
    events = len(await kube_env.kube.events())
    writes_before = kube_env.emulator.writes() if kube_env.emulator else 0
    baseten.reset_counts()
    await asyncio.sleep(3.2)  # about three resyncs
    after = await kube_env.kube.get(PLURAL, "glm")
    assert after is not None
    assert after["metadata"]["resourceVersion"] == version
    assert len(await kube_env.kube.events()) == events
    if kube_env.emulator:
        assert kube_env.emulator.writes() == writes_before
    # Each resync looked at the upstream through the (here one-item) list, not with a GET each.
    assert baseten.count("GET", ENDPOINTS) >= 2, "the resyncs did observe the upstream"
    assert baseten.count("GET", ENDPOINT) == 0
    assert [r for r in baseten.requests if r.method != "GET"] == []


async def test_lost_create_response_makes_exactly_one_endpoint(
    kube_env: KubeEnv, baseten: BasetenSimulator, operator: OperatorRunner, credentials: str
) -> None:
    baseten.faults.lose_next_response("POST")
    obj = await create_ready(kube_env)
    assert len(upstream_by_slug(baseten, "my-org/glm")) == 1
    assert len(baseten.endpoints) == 1
    assert [r.lost for r in baseten.requests if r.method == "POST"] == [True]
    assert obj["status"]["id"] == upstream_by_slug(baseten, "my-org/glm")[0]["id"]
    assert "Adopted" in [e["reason"] for e in await kube_env.kube.events("glm")]


async def test_operator_killed_between_post_and_status_write(
    kube_env: KubeEnv, baseten: BasetenSimulator, operator: OperatorRunner, credentials: str
) -> None:
    async def create() -> None:
        response = await kube_env.kube.create(KIND, PLURAL, "glm", spec())
        assert response.status_code == 201, response.text

    # Baseten makes the endpoint and holds its answer; the operator dies waiting for it.
    await kill_while_held(baseten, "POST", create, operator.kill)
    assert len(baseten.endpoints) == 1
    obj = await kube_env.kube.get(PLURAL, "glm")
    assert obj is not None
    assert not (obj.get("status") or {}).get("id"), "the id reached the status: the kill came too late"
    await operator.start()
    obj = await kube_env.kube.wait_condition(PLURAL, "glm", "Ready", "True")
    assert len(baseten.endpoints) == 1
    assert obj["status"]["id"] in baseten.endpoints
    assert baseten.count("POST", ENDPOINTS) == 1


async def test_429_waits_at_least_retry_after(
    kube_env: KubeEnv, baseten: BasetenSimulator, operator: OperatorRunner, credentials: str
) -> None:
    baseten.faults.rate_limit_burst(1, retry_after=2)
    await create_ready(kube_env)
    throttled = [r for r in baseten.requests if r.status == 429]
    assert len(throttled) == 1
    following = [r for r in baseten.requests if r.time > throttled[0].time]
    assert following, "nothing was sent after the 429"
    assert following[0].time - throttled[0].time >= 2.0
    assert len(baseten.endpoints) == 1


async def test_missing_credentials_then_secret_appears(
    kube_env: KubeEnv, baseten: BasetenSimulator, operator: OperatorRunner
) -> None:
    await kube_env.kube.create(KIND, PLURAL, "glm", spec())
    obj = await kube_env.kube.wait_condition(PLURAL, "glm", "Ready", "False", reason="CredentialsMissing")
    assert "baseten" in condition(obj, "Ready")["message"]  # type: ignore[index]
    assert baseten.requests == []
    await kube_env.kube.put_secret("baseten", {"apiKey": API_KEY})
    await kube_env.kube.wait_condition(PLURAL, "glm", "Ready", "True")
    assert len(baseten.endpoints) == 1


async def test_rotated_secret_is_used_without_restart(
    kube_env: KubeEnv, baseten: BasetenSimulator, operator: OperatorRunner, credentials: str
) -> None:
    await create_ready(kube_env)
    baseten.rotate_key(API_KEY, "bt-rotated-key-77aa01")
    await kube_env.kube.put_secret("baseten", {"apiKey": "bt-rotated-key-77aa01"})
    await kube_env.kube.patch_spec(PLURAL, "glm", {"targets": [{"provider": "BASETEN", "modelId": "7mP2wqe"}]})
    await kube_env.kube.wait_for(
        PLURAL,
        "glm",
        lambda o: bool(o and o["status"].get("observedGeneration") == 2 and condition(o, "Ready")["status"] == "True"),  # type: ignore[index]
    )
    assert upstream_by_slug(baseten, "my-org/glm")[0]["targets"][0]["model_id"] == "7mP2wqe"
    patches = [r for r in baseten.requests if r.method == "PATCH"]
    assert patches and all(r.key == "bt-rotated-key-77aa01" for r in patches)


async def test_out_of_band_delete_is_recreated(
    kube_env: KubeEnv, baseten: BasetenSimulator, operator: OperatorRunner, credentials: str
) -> None:
    await kube_env.kube.create(KIND, PLURAL, "glm", spec(), annotations={"aigw.dev/resync-seconds": "1"})
    obj = await kube_env.kube.wait_condition(PLURAL, "glm", "Ready", "True")
    old_id = obj["status"]["id"]
    baseten.delete_out_of_band(old_id)
    obj = await kube_env.kube.wait_for(
        PLURAL, "glm", lambda o: bool(o and o["status"].get("id") not in (None, old_id)), timeout=10
    )
    assert len(baseten.endpoints) == 1
    assert condition(obj, "Ready")["status"] == "True"  # type: ignore[index]
    assert "Recreated" in [e["reason"] for e in await kube_env.kube.events("glm")]


async def test_out_of_band_delete_under_orphan_is_reported(
    kube_env: KubeEnv, baseten: BasetenSimulator, operator: OperatorRunner, credentials: str
) -> None:
    await kube_env.kube.create(
        KIND, PLURAL, "glm", spec(deletionPolicy="Orphan"), annotations={"aigw.dev/resync-seconds": "1"}
    )
    obj = await kube_env.kube.wait_condition(PLURAL, "glm", "Ready", "True")
    baseten.delete_out_of_band(obj["status"]["id"])
    await kube_env.kube.wait_condition(PLURAL, "glm", "Ready", "False", reason="UpstreamDeleted", timeout=10)
    assert baseten.endpoints == {}


async def test_delete_removes_upstream_and_releases_finalizer(
    kube_env: KubeEnv, baseten: BasetenSimulator, operator: OperatorRunner, credentials: str
) -> None:
    await create_ready(kube_env)
    await kube_env.kube.delete(PLURAL, "glm")
    await kube_env.kube.wait_gone(PLURAL, "glm")
    assert baseten.endpoints == {}
    assert baseten.count("DELETE", ENDPOINT) == 1


async def test_orphan_delete_leaves_upstream(
    kube_env: KubeEnv, baseten: BasetenSimulator, operator: OperatorRunner, credentials: str
) -> None:
    await create_ready(kube_env, deletionPolicy="Orphan")
    await kube_env.kube.delete(PLURAL, "glm")
    await kube_env.kube.wait_gone(PLURAL, "glm")
    assert len(upstream_by_slug(baseten, "my-org/glm")) == 1
    assert baseten.count("DELETE") == 0


async def test_delete_while_upstream_down_keeps_finalizer_then_completes(
    kube_env: KubeEnv, baseten: BasetenSimulator, operator: OperatorRunner, credentials: str
) -> None:
    await create_ready(kube_env)
    baseten.faults.fail_next(8, status=503)
    await kube_env.kube.delete(PLURAL, "glm")
    obj = await kube_env.kube.wait_condition(PLURAL, "glm", "Ready", "False", reason="DeletionBlocked")
    assert "aigw.dev/finalizer" in obj["metadata"]["finalizers"]
    await kube_env.kube.wait_gone(PLURAL, "glm", timeout=20)
    assert baseten.endpoints == {}


@pytest.mark.parametrize("mode", ["patch", "immutable"])
async def test_slug_rename_converges_under_both_api_behaviours(
    mode: str, kube_env: KubeEnv, baseten: BasetenSimulator, operator: OperatorRunner, credentials: str
) -> None:
    baseten.slug_rename = mode  # type: ignore[assignment]
    obj = await create_ready(kube_env)
    old_id = obj["status"]["id"]
    await kube_env.kube.patch_spec(PLURAL, "glm", {"slug": "my-org/glm-renamed"})
    obj = await kube_env.kube.wait_for(
        PLURAL,
        "glm",
        lambda o: bool(
            o and o["status"].get("slug") == "my-org/glm-renamed" and o["status"].get("observedGeneration") == 2
        ),
    )
    assert [e["slug"] for e in baseten.endpoints.values()] == ["my-org/glm-renamed"]
    events = [(e["reason"], e["message"]) for e in await kube_env.kube.events("glm")]
    if mode == "patch":
        assert obj["status"]["id"] == old_id
        assert ("Updated", "updated slug") in events
    else:
        assert obj["status"]["id"] != old_id
        assert old_id not in baseten.endpoints
        # A replace says so, naming both endpoints; it is not an "update" of the slug.
        [replaced] = [m for r, m in events if r == "Replaced"]
        assert old_id in replaced and obj["status"]["id"] in replaced
        assert not [m for r, m in events if r == "Updated"], events
    assert condition(obj, "Ready")["status"] == "True"  # type: ignore[index]


@pytest.mark.parametrize("mode", ["patch", "immutable", "ignore"])
async def test_slug_rename_onto_another_resources_slug_touches_neither_endpoint(
    mode: str, kube_env: KubeEnv, baseten: BasetenSimulator, operator: OperatorRunner, credentials: str
) -> None:
    baseten.slug_rename = mode  # type: ignore[assignment]
    a = await create_ready(kube_env, "ga", slug="my-org/a", model_id="aaaaaaa")
    b = await create_ready(kube_env, "gb", slug="my-org/b", model_id="bbbbbbb")
    before = {id_: dict(e) for id_, e in baseten.endpoints.items()}
    baseten.reset_counts()
    await kube_env.kube.patch_spec(PLURAL, "ga", {"slug": "my-org/b"})
    obj = await kube_env.kube.wait_condition(PLURAL, "ga", "Ready", "False", reason="AlreadyManaged")
    message = condition(obj, "Ready")["message"]  # type: ignore[index]
    assert f"{kube_env.kube.namespace}/gb" in message and "my-org/b" in message
    await asyncio.sleep(1.0)  # let any further reconcile of either resource happen
    assert [r for r in baseten.requests if r.method != "GET"] == [], "nothing may be written upstream"
    assert baseten.endpoints == before
    after_a = await kube_env.kube.get(PLURAL, "ga")
    after_b = await kube_env.kube.get(PLURAL, "gb")
    assert after_a and after_b
    assert after_a["status"]["id"] == a["status"]["id"] != after_b["status"]["id"] == b["status"]["id"]
    assert condition(after_b, "Ready")["status"] == "True"  # type: ignore[index]
    assert "AlreadyManaged" in [e["reason"] for e in await kube_env.kube.events("ga") if e["type"] == "Warning"]
    # Renamed back, it is Ready again with its own endpoint.
    await kube_env.kube.patch_spec(PLURAL, "ga", {"slug": "my-org/a"})
    obj = await kube_env.kube.wait_condition(PLURAL, "ga", "Ready", "True")
    assert obj["status"]["id"] == a["status"]["id"]


async def test_two_resources_naming_one_endpoint_the_older_keeps_it_across_a_restart(
    kube_env: KubeEnv, baseten: BasetenSimulator, credentials: str
) -> None:
    settings = make_settings(kube_env, baseten.url)
    runner = OperatorRunner(settings)
    await runner.start()
    try:
        first = await create_ready(kube_env, "first", slug="my-org/one")
        await kube_env.kube.create(KIND, PLURAL, "second", spec(slug="my-org/one"))
        await kube_env.kube.wait_condition(PLURAL, "second", "Ready", "False", reason="AlreadyManaged")
    finally:
        await runner.stop()
    runner = OperatorRunner(settings)
    await runner.start()
    try:
        # The unconverged "second" is reconciled first after a restart; both then every second.
        await asyncio.sleep(1.0)
        for name in ("second", "first"):
            await kube_env.kube.patch_meta(PLURAL, name, {"annotations": {"aigw.dev/resync-seconds": "1"}})
        await asyncio.sleep(2.5)
        again_first = await kube_env.kube.get(PLURAL, "first")
        second = await kube_env.kube.get(PLURAL, "second")
        assert again_first and second
        assert again_first["status"]["id"] == first["status"]["id"]
        assert condition(again_first, "Ready")["status"] == "True"  # type: ignore[index]
        assert condition(second, "Ready")["reason"] == "AlreadyManaged"  # type: ignore[index]
        assert not second["status"].get("id")
        assert len(baseten.endpoints) == 1
    finally:
        await runner.stop()


@pytest.mark.parametrize("order", ["response-first", "event-first"])
async def test_own_write_seen_by_the_watch_before_its_response_causes_no_stall(
    order: str, kube_env: KubeEnv, baseten: BasetenSimulator, operator: OperatorRunner, credentials: str
) -> None:
    """A real API server may send the watch event of a write before the write's response: the
    operator must not then wait for an event it has already had (a 5 s stall per write)."""
    if kube_env.emulator is None:
        pytest.fail("this test orders the API server's answers, which only the emulator can do")
    kube_env.emulator.write_order = order
    if order == "event-first":
        # Sent first is not yet handled first: hold each response long enough for the operator
        # to have processed the event, as happens on a busy real server.
        kube_env.emulator.response_delay = 0.3
    await create_ready(kube_env)
    started = time.monotonic()
    await kube_env.kube.patch_spec(PLURAL, "glm", {"targets": [{"provider": "BASETEN", "modelId": "7mP2wqe"}]})
    await kube_env.kube.wait_for(PLURAL, "glm", lambda o: bool(o and o["status"].get("observedGeneration") == 2))
    # The stall this guards against is operator._CATCH_UP_SECONDS (5 s); the change itself takes
    # well under a second, so 4 s leaves a loaded machine room and still catches the stall.
    assert time.monotonic() - started < 4.0


async def test_upstream_refusal_is_reported_once_without_retry_storm(
    kube_env: KubeEnv, baseten: BasetenSimulator, operator: OperatorRunner, credentials: str
) -> None:
    await kube_env.kube.create(KIND, PLURAL, "glm", spec(slug="not-our-org/glm"))
    obj = await kube_env.kube.wait_condition(PLURAL, "glm", "Ready", "False", reason="InvalidSpec")
    message = condition(obj, "Ready")["message"]  # type: ignore[index]
    assert "not-our-org" in message
    await asyncio.sleep(1.5)
    assert baseten.count("POST", ENDPOINTS) == 1
    warnings = [e for e in await kube_env.kube.events("glm") if e["type"] == "Warning"]
    assert [e["reason"] for e in warnings] == ["InvalidSpec"]
    # A new generation is tried again.
    await kube_env.kube.patch_spec(PLURAL, "glm", {"slug": "my-org/glm"})
    await kube_env.kube.wait_condition(PLURAL, "glm", "Ready", "True")
    assert baseten.count("POST", ENDPOINTS) == 2


async def test_adopts_existing_endpoint_by_id_annotation(
    kube_env: KubeEnv, baseten: BasetenSimulator, operator: OperatorRunner, credentials: str
) -> None:
    async with httpx.AsyncClient(base_url=baseten.url) as http:
        created = await http.post(
            ENDPOINTS,
            headers={"Authorization": f"Api-Key {API_KEY}"},
            json={"slug": "my-org/legacy", "targets": [{"provider": "BASETEN", "model_id": "3kZ9xqd"}]},
        )
    existing = created.json()["id"]
    baseten.reset_counts()
    await kube_env.kube.create(
        KIND, PLURAL, "legacy", spec(slug="my-org/legacy"), annotations={"aigw.dev/external-id": existing}
    )
    obj = await kube_env.kube.wait_condition(PLURAL, "legacy", "Ready", "True")
    assert obj["status"]["id"] == existing
    assert baseten.count("POST") == 0
    assert len(baseten.endpoints) == 1


async def test_api_key_never_leaks(
    kube_env: KubeEnv,
    baseten: BasetenSimulator,
    operator: OperatorRunner,
    credentials: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    baseten.faults.fail_next(1, status=500)
    await create_ready(kube_env)
    baseten.remove_key(API_KEY)
    await kube_env.kube.patch_spec(PLURAL, "glm", {"targets": [{"provider": "BASETEN", "modelId": "x1"}]})
    obj = await kube_env.kube.wait_condition(PLURAL, "glm", "Ready", "False", reason="AccessDenied")
    assert API_KEY not in str(obj)
    assert API_KEY not in str(await kube_env.kube.events())
    assert API_KEY not in caplog.text


async def test_operator_default_credentials(kube_env: KubeEnv, baseten: BasetenSimulator) -> None:
    settings = make_settings(kube_env, baseten.url)
    settings.baseten = settings.baseten.model_copy(update={"api_key": SecretStr(API_KEY)})
    runner = OperatorRunner(settings)
    await runner.start()
    try:
        body = spec()
        del body["credentialsSecretRef"]
        await kube_env.kube.create(KIND, PLURAL, "glm", body)
        await kube_env.kube.wait_condition(PLURAL, "glm", "Ready", "True")
    finally:
        await runner.stop()
