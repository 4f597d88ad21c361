"""The Together AI dedicated-endpoint simulator over real HTTP: lifecycle, faults and contract checks.

Every test's simulator runs with contract checking on, and the ``sim`` fixture
asserts at teardown that no exchange broke the vendor's spec; tests that break it
on purpose take the violations out of the list themselves.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from aigw_testbed.simulators.contract import ContractRequest, ContractResponse
from aigw_testbed.simulators.together import DEFAULT_MODEL, TogetherSimulator

KEY = "together-sim-key-1"
ENDPOINTS = "/v1/endpoints"
HW = "1x_nvidia_h100_80gb_sxm"
# Short timers keep the suite fast; 0.1 s steps are still far apart on a loaded CI runner.
STEP = 0.25  # long enough that a loaded CI machine still sees every state


def body(**extra: Any) -> dict[str, Any]:
    return {"model": DEFAULT_MODEL, "hardware": HW, "autoscaling": {"min_replicas": 1, "max_replicas": 2}, **extra}


@pytest.fixture
async def sim() -> AsyncIterator[TogetherSimulator]:
    async with TogetherSimulator(
        [KEY],
        contract=True,
        pending_seconds=STEP,
        starting_seconds=STEP,
        stopping_seconds=STEP,
        scaling_seconds=4 * STEP,
        minute_seconds=STEP,
    ) as simulator:
        yield simulator
        assert simulator.contract_violations == []


@pytest.fixture
async def client(sim: TogetherSimulator) -> AsyncIterator[httpx.AsyncClient]:
    # verify=False: no TLS here, and building the default SSL context costs ~0.1 s per client.
    async with httpx.AsyncClient(base_url=sim.url, headers={"Authorization": f"Bearer {KEY}"}, verify=False) as c:
        yield c


async def create(client: httpx.AsyncClient, **extra: Any) -> dict[str, Any]:
    response = await client.post(ENDPOINTS, json=body(**extra))
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def state(client: httpx.AsyncClient, endpoint_id: str) -> str:
    response = await client.get(f"{ENDPOINTS}/{endpoint_id}")
    assert response.status_code == 200, response.text
    value: str = response.json()["state"]
    return value


async def wait_for(client: httpx.AsyncClient, endpoint_id: str, wanted: str, timeout: float = 10.0) -> list[str]:
    """Poll until ``wanted``; returns the distinct states seen on the way, in order."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = await state(client, endpoint_id)
        if not seen or seen[-1] != current:
            seen.append(current)
        if current == wanted:
            return seen
        await asyncio.sleep(STEP / 5)
    raise AssertionError(f"{endpoint_id} never reached {wanted}; saw {seen}")


def error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    payload: dict[str, Any] = response.json()
    assert set(payload) == {"error"}
    err: dict[str, Any] = payload["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert isinstance(err["message"], str) and err["message"] and isinstance(err["type"], str)
    if code is not None:
        assert err["code"] == code
    return err


# ----------------------------------------------------------------------------- lifecycle


async def test_create_walks_pending_starting_started(sim: TogetherSimulator, client: httpx.AsyncClient) -> None:
    created = await create(client, display_name="My endpoint")
    assert set(created) == {
        "object",
        "id",
        "name",
        "display_name",
        "model",
        "hardware",
        "type",
        "owner",
        "state",
        "autoscaling",
        "created_at",
    }
    assert created["object"] == "endpoint" and created["type"] == "dedicated"
    assert created["id"].startswith("endpoint-") and len(created["id"]) == len("endpoint-") + 36
    assert created["name"].startswith(f"{created['owner']}/{DEFAULT_MODEL}-")
    assert len(created["name"].rsplit("-", 1)[1]) == 8
    assert created["display_name"] == "My endpoint"
    assert created["autoscaling"] == {"min_replicas": 1, "max_replicas": 2}
    assert created["state"] == "PENDING"
    assert await wait_for(client, created["id"], "STARTED") == ["PENDING", "STARTING", "STARTED"]
    assert sim.replicas(created["id"]) == 1
    assert created["id"] in sim.endpoints


async def test_create_stopped_stays_stopped(sim: TogetherSimulator, client: httpx.AsyncClient) -> None:
    created = await create(client, state="STOPPED")
    assert created["state"] == "STOPPED"
    await asyncio.sleep(3 * STEP)
    assert await state(client, created["id"]) == "STOPPED"
    assert sim.replicas(created["id"]) == 0


async def test_stop_and_start_via_patch(sim: TogetherSimulator, client: httpx.AsyncClient) -> None:
    ep = await create(client)
    await wait_for(client, ep["id"], "STARTED")
    stopped = await client.patch(f"{ENDPOINTS}/{ep['id']}", json={"state": "STOPPED"})
    assert stopped.status_code == 200 and stopped.json()["state"] == "STOPPING"
    assert await wait_for(client, ep["id"], "STOPPED") == ["STOPPING", "STOPPED"]
    started = await client.patch(f"{ENDPOINTS}/{ep['id']}", json={"state": "STARTED"})
    assert started.status_code == 200 and started.json()["state"] == "PENDING"
    assert await wait_for(client, ep["id"], "STARTED") == ["PENDING", "STARTING", "STARTED"]
    # Asking for the state it is already heading to changes nothing.
    again = await client.patch(f"{ENDPOINTS}/{ep['id']}", json={"state": "STARTED"})
    assert again.json()["state"] == "STARTED"


async def test_patch_display_name_timeout_and_autoscaling(sim: TogetherSimulator, client: httpx.AsyncClient) -> None:
    ep = await create(client)
    await wait_for(client, ep["id"], "STARTED")
    response = await client.patch(
        f"{ENDPOINTS}/{ep['id']}",
        json={"display_name": "renamed", "autoscaling": {"min_replicas": 3, "max_replicas": 5}, "inactive_timeout": 0},
    )
    assert response.status_code == 200, response.text
    assert response.json()["display_name"] == "renamed"
    assert response.json()["autoscaling"] == {"min_replicas": 3, "max_replicas": 5}
    assert sim.replicas(ep["id"]) == 1
    seen = {sim.replicas(ep["id"])}
    deadline = time.monotonic() + 2.0
    while sim.replicas(ep["id"]) != 3 and time.monotonic() < deadline:
        await asyncio.sleep(STEP / 10)
        seen.add(sim.replicas(ep["id"]))
    assert seen == {1, 2, 3}
    assert sim.endpoints[ep["id"]].inactive_timeout is None


async def test_autoscaling_needs_both_bounds(client: httpx.AsyncClient) -> None:
    ep = await create(client)
    response = await client.patch(f"{ENDPOINTS}/{ep['id']}", json={"autoscaling": {"min_replicas": 2}})
    assert error(response, 400)["param"] == "autoscaling"
    inverted = await client.patch(
        f"{ENDPOINTS}/{ep['id']}", json={"autoscaling": {"min_replicas": 3, "max_replicas": 2}}
    )
    error(inverted, 400)


@pytest.mark.parametrize(
    "field, value",
    [
        ("model", "deepseek-ai/DeepSeek-R1"),
        ("hardware", "8x_nvidia_h100_80gb_sxm"),
        ("disable_speculative_decoding", True),
        ("availability_zone", "us-central-4b"),
    ],
)
async def test_immutable_fields_refused(
    sim: TogetherSimulator, client: httpx.AsyncClient, field: str, value: Any
) -> None:
    ep = await create(client)
    response = await client.patch(f"{ENDPOINTS}/{ep['id']}", json={field: value, "display_name": "x"})
    err = error(response, 400, "immutable_field")
    assert err["param"] == field and err["type"] == "invalid_request_error"
    # Refused as a whole: the valid part of the PATCH was not applied either.
    assert sim.endpoints[ep["id"]].display_name == ep["display_name"]


async def test_fail_puts_endpoint_in_error_and_start_recovers(
    sim: TogetherSimulator, client: httpx.AsyncClient
) -> None:
    ep = await create(client)
    sim.fail(ep["id"], "Out of capacity.")
    assert await state(client, ep["id"]) == "ERROR"
    await asyncio.sleep(3 * STEP)
    assert await state(client, ep["id"]) == "ERROR"
    assert sim.endpoints[ep["id"]].error == "Out of capacity."
    restarted = await client.patch(f"{ENDPOINTS}/{ep['id']}", json={"state": "STARTED"})
    assert restarted.json()["state"] == "PENDING"
    await wait_for(client, ep["id"], "STARTED")


async def test_auto_stop_hook(sim: TogetherSimulator, client: httpx.AsyncClient) -> None:
    ep = await create(client)
    with pytest.raises(ValueError):
        sim.auto_stop(ep["id"])  # still PENDING
    await wait_for(client, ep["id"], "STARTED")
    sim.auto_stop(ep["id"])
    assert await state(client, ep["id"]) == "STOPPED"
    assert sim.endpoints[ep["id"]].auto_stopped


async def test_inactive_timeout_stops_idle_endpoint(sim: TogetherSimulator, client: httpx.AsyncClient) -> None:
    # One simulated minute is STEP seconds: STARTED after 2 steps, idle-stopped 2 steps later.
    ep = await create(client, inactive_timeout=2)
    seen = await wait_for(client, ep["id"], "STOPPED", timeout=10.0)
    assert seen[:3] == ["PENDING", "STARTING", "STARTED"] and seen[-1] == "STOPPED"
    assert sim.endpoints[ep["id"]].auto_stopped


# ----------------------------------------------------------------------------- list, delete, hardware


async def test_list_items_lack_detail_fields(sim: TogetherSimulator, client: httpx.AsyncClient) -> None:
    ep = await create(client)
    response = await client.get(ENDPOINTS, params={"type": "dedicated", "mine": "true"})
    assert response.status_code == 200
    payload = response.json()
    assert payload["object"] == "list"
    [item] = payload["data"]
    assert item["id"] == ep["id"]
    assert set(item) == {"object", "id", "name", "model", "type", "owner", "state", "created_at"}
    # Without the filters, Together's own serverless endpoints show up too.
    everything = (await client.get(ENDPOINTS)).json()["data"]
    assert {e["owner"] for e in everything} == {ep["owner"], "together"}
    error(await client.get(ENDPOINTS, params={"type": "bogus"}), 400)


async def test_delete_then_404(sim: TogetherSimulator, client: httpx.AsyncClient) -> None:
    ep = await create(client)
    deleted = await client.delete(f"{ENDPOINTS}/{ep['id']}")
    assert deleted.status_code == 204 and deleted.content == b""
    error(await client.get(f"{ENDPOINTS}/{ep['id']}"), 404)
    error(await client.delete(f"{ENDPOINTS}/{ep['id']}"), 404)
    error(await client.patch(f"{ENDPOINTS}/{ep['id']}", json={"state": "STOPPED"}), 404)
    other = await create(client)
    sim.delete_out_of_band(other["id"])
    error(await client.get(f"{ENDPOINTS}/{other['id']}"), 404)


async def test_hardware_listing(sim: TogetherSimulator, client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/hardware", params={"model": DEFAULT_MODEL})
    assert response.status_code == 200
    payload = response.json()
    assert payload["object"] == "list"
    status = {item["id"]: item["availability"]["status"] for item in payload["data"]}
    assert status[HW] == "available" and status["8x_nvidia_h200_140gb_sxm"] == "unavailable"
    h200 = next(i for i in payload["data"] if i["id"] == "8x_nvidia_h200_140gb_sxm")
    assert h200["specs"] == {"gpu_type": "h200-140gb", "gpu_link": "sxm", "gpu_memory": 140.0, "gpu_count": 8}
    everything = (await client.get("/v1/hardware")).json()["data"]
    assert all("availability" not in item for item in everything)
    assert (await client.get("/v1/hardware", params={"model": "nope/nope"})).json()["data"] == []


async def test_create_validation(sim: TogetherSimulator, client: httpx.AsyncClient) -> None:
    err = error(await client.post(ENDPOINTS, json=body(model="nope/nope")), 400, "model_not_available")
    assert err["param"] == "model"
    error(await client.post(ENDPOINTS, json=body(hardware="1x_nvidia_l40s_48gb_pcie")), 400, "invalid_hardware")
    unavailable = error(
        await client.post(ENDPOINTS, json=body(hardware="8x_nvidia_h200_140gb_sxm")), 400, "hardware_unavailable"
    )
    assert "unavailable" in unavailable["message"]
    missing = {"model": DEFAULT_MODEL, "hardware": HW}
    error(await client.post(ENDPOINTS, json=missing), 400, "missing_required_parameter")
    error(await client.post(ENDPOINTS, content=b"{not json", headers={"Content-Type": "application/json"}), 400)
    assert sim.endpoints == {}


# ----------------------------------------------------------------------------- auth and faults


async def test_auth_401_and_403(sim: TogetherSimulator, client: httpx.AsyncClient) -> None:
    error(await client.get(ENDPOINTS, headers={"Authorization": "Bearer wrong"}), 401, "invalid_api_key")
    sim.forbidden_keys.add(KEY)
    err = error(await client.get(ENDPOINTS), 403)
    assert err["type"] == "permission_error"
    error(await client.post(ENDPOINTS, json=body()), 403)
    assert sim.endpoints == {}


async def test_injected_500_and_429(sim: TogetherSimulator, client: httpx.AsyncClient) -> None:
    sim.faults.fail_next(1, status=500)
    assert error(await client.get(ENDPOINTS), 500)["type"] == "server_error"
    sim.faults.rate_limit_burst(1, retry_after=3)
    throttled = await client.get(ENDPOINTS)
    error(throttled, 429)
    assert throttled.headers["Retry-After"] == "3"
    assert (await client.get(ENDPOINTS)).status_code == 200


async def test_lost_post_response_still_creates(sim: TogetherSimulator, client: httpx.AsyncClient) -> None:
    sim.faults.lose_next_response("POST")
    with pytest.raises(httpx.TransportError):
        await client.post(ENDPOINTS, json=body())
    [ep] = sim.endpoints.values()
    listed = (await client.get(ENDPOINTS, params={"type": "dedicated", "mine": "true"})).json()["data"]
    assert [e["id"] for e in listed] == [ep.id]
    assert sim.count("POST", "/v1/endpoints") == 1


# ----------------------------------------------------------------------------- contract


async def test_contract_catches_bad_request_and_response(sim: TogetherSimulator, client: httpx.AsyncClient) -> None:
    # The simulator accepts (ignores) unknown create fields; the closed-object spec does not.
    await create(client, replicas=3)
    assert any("request" in v for v in sim.contract_violations), sim.contract_violations
    sim.contract_violations.clear()

    checker = sim.contract_checker
    assert checker is not None
    req = ContractRequest(method="GET", path="/v1/endpoints/endpoint-1", headers={"Authorization": f"Bearer {KEY}"})
    bad = ContractResponse(status=200, body=b'{"object": "endpoint", "id": "endpoint-1", "state": "RUNNING"}')
    assert checker.check_response(req, bad)
    # An error body that is not Together's shape is caught too, null-tolerance notwithstanding.
    wrong_error = ContractResponse(status=404, body=b'{"detail": "not found"}')
    assert checker.check_response(req, wrong_error)
    good_error = ContractResponse(
        status=404, body=b'{"error": {"message": "gone", "type": "not_found_error", "param": null, "code": null}}'
    )
    assert checker.check_response(req, good_error) == []
