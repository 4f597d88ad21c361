"""The Baseten simulator over real HTTP: behaviour, faults, accounting and contract checks.

Every test's simulator runs with contract checking on, and the ``sim`` fixture
asserts at teardown that no exchange broke the vendor's spec; tests that break it
on purpose take the violations out of the list themselves.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from aigw_testbed.simulators.baseten import BasetenSimulator, default_spec_path
from aigw_testbed.simulators.contract import ContractChecker, ContractRequest, ContractResponse

KEY = "sk-test"
EP = "/v1/gateway/endpoints"
EP_ID = "/v1/gateway/endpoints/{id}"


def baseten_target(model_id: str = "3kZ9xqd", **extra: Any) -> dict[str, Any]:
    return {"provider": "BASETEN", "model_id": model_id, **extra}


def body(slug: Any = "my-org/glm-5.2", targets: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    return {"slug": slug, "targets": targets if targets is not None else [baseten_target()], **extra}


@pytest.fixture
async def sim() -> AsyncIterator[BasetenSimulator]:
    async with BasetenSimulator({KEY}, contract=True) as simulator:
        yield simulator
        assert simulator.contract_violations == []


@pytest.fixture
async def client(sim: BasetenSimulator) -> AsyncIterator[httpx.AsyncClient]:
    # verify=False: no TLS here, and building the default SSL context costs ~0.1 s per client.
    async with httpx.AsyncClient(base_url=sim.url, headers={"Authorization": f"Api-Key {KEY}"}, verify=False) as c:
        yield c


async def create(client: httpx.AsyncClient, **kwargs: Any) -> dict[str, Any]:
    response = await client.post(EP, json=body(**kwargs))
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def make_secret(client: httpx.AsyncClient, name: str = "openai-key", value: str = "v1") -> str:
    response = await client.post("/v1/secrets", json={"name": name, "value": value})
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


# ----------------------------------------------------------------------------- CRUD


async def test_crud_round_trip(sim: BasetenSimulator, client: httpx.AsyncClient) -> None:
    created = await create(client)
    assert set(created) == {"id", "slug", "region", "targets", "created_at", "updated_at"}
    assert created["slug"] == "my-org/glm-5.2"
    assert created["region"] == "UNRESTRICTED"
    assert created["targets"] == [{"provider": "BASETEN", "model_id": "3kZ9xqd"}]
    assert created["created_at"].endswith("Z") and created["created_at"] == created["updated_at"]
    assert sim.endpoints[created["id"]] == created

    got = await client.get(f"{EP}/{created['id']}")
    assert got.status_code == 200 and got.json() == created

    patched = await client.patch(
        f"{EP}/{created['id']}", json={"targets": [baseten_target("7mP2wqe", environment_name="staging")]}
    )
    assert patched.status_code == 200
    assert patched.json()["targets"] == [{"provider": "BASETEN", "model_id": "7mP2wqe", "environment_name": "staging"}]
    assert patched.json()["updated_at"] > created["updated_at"]

    deleted = await client.delete(f"{EP}/{created['id']}")
    assert deleted.status_code == 200
    assert deleted.json() == {"id": created["id"], "slug": "my-org/glm-5.2"}
    assert (await client.get(f"{EP}/{created['id']}")).status_code == 404
    # Deleting frees the slug.
    again = await create(client)
    assert again["id"] != created["id"]


async def test_production_environment_is_not_echoed(client: httpx.AsyncClient) -> None:
    created = await create(client, targets=[baseten_target(environment_name="production")])
    assert created["targets"] == [{"provider": "BASETEN", "model_id": "3kZ9xqd"}]


async def test_region_is_create_only(client: httpx.AsyncClient) -> None:
    created = await create(client, region="EU")
    assert created["region"] == "EU"
    refused = await client.patch(f"{EP}/{created['id']}", json={"region": "UNRESTRICTED"})
    assert refused.status_code == 400


async def test_external_targets(client: httpx.AsyncClient) -> None:
    secret_id = await make_secret(client)
    created = await create(
        client, targets=[{"provider": "ANTHROPIC", "secret_id": secret_id, "target_model": "claude-x"}]
    )
    assert created["targets"] == [{"provider": "ANTHROPIC", "secret_id": secret_id, "target_model": "claude-x"}]
    compatible = {
        "provider": "OPENAI_COMPATIBLE",
        "secret_id": secret_id,
        "target_model": "m",
        "base_url": "https://vllm.example.com/v1",
    }
    assert (await create(client, slug="my-org/c", targets=[compatible]))["targets"] == [compatible]


# ----------------------------------------------------------------------------- list


async def test_pagination_across_pages(sim: BasetenSimulator, client: httpx.AsyncClient) -> None:
    ids = [(await create(client, slug=f"my-org/m{i}"))["id"] for i in range(5)]
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await client.get(EP, params=params)).json()
        pages += 1
        seen += [item["id"] for item in page["items"]]
        if pages == 1:
            # A deletion between pages must not make the next page skip anything.
            sim.delete_out_of_band(ids[0])
        if not page["pagination"]["has_more"]:
            assert page["pagination"]["cursor"] is None
            break
        cursor = page["pagination"]["cursor"]
        assert isinstance(cursor, str)
    assert pages == 3
    assert seen == ids


async def test_list_default_limit_is_100(sim: BasetenSimulator, client: httpx.AsyncClient) -> None:
    sim.contract_checker = None  # 101 creates: keep this test fast
    for i in range(101):
        await create(client, slug=f"my-org/m{i}")
    page = (await client.get(EP)).json()
    assert len(page["items"]) == 100 and page["pagination"]["has_more"] is True
    assert len((await client.get(EP, params={"limit": 1000})).json()["items"]) == 101


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 1001}, {"limit": "x"}, {"cursor": "!!not-ours"}])
async def test_list_bad_parameters(client: httpx.AsyncClient, params: dict[str, Any]) -> None:
    response = await client.get(EP, params=params)
    assert response.status_code == 400
    assert isinstance(response.json()["error"], str)


# ----------------------------------------------------------------------------- validation


BAD_CREATES: dict[str, Any] = {
    "not an object": [1, 2],
    "missing slug": {"targets": [baseten_target()]},
    "missing targets": {"slug": "my-org/x"},
    "slug without prefix": body(slug="glm"),
    "slug with two slashes": body(slug="my-org/a/b"),
    "slug with space": body(slug="my-org/a b"),
    "slug not a string": body(slug=7),
    "unowned prefix": body(slug="their-org/x"),
    "no targets": body(targets=[]),
    "two targets": body(targets=[baseten_target(), baseten_target()]),
    "BASETEN without model_id": body(targets=[{"provider": "BASETEN"}]),
    "ANTHROPIC without secret_id": body(targets=[{"provider": "ANTHROPIC", "target_model": "c"}]),
    "OPENAI without target_model": body(targets=[{"provider": "OPENAI", "secret_id": "SECRET"}]),
    "unknown provider": body(targets=[{"provider": "MISTRAL", "model_id": "x"}]),
    "missing provider": body(targets=[{"model_id": "x"}]),
    "unknown secret_id": body(targets=[{"provider": "OPENAI", "secret_id": "nope", "target_model": "g"}]),
    "model_id on OPENAI": body(
        targets=[{"provider": "OPENAI", "secret_id": "SECRET", "target_model": "g", "model_id": "x"}]
    ),
    "environment_name on OPENAI": body(
        targets=[{"provider": "OPENAI", "secret_id": "SECRET", "target_model": "g", "environment_name": "s"}]
    ),
    "base_url with port": body(
        targets=[
            {
                "provider": "OPENAI_COMPATIBLE",
                "secret_id": "SECRET",
                "target_model": "m",
                "base_url": "https://h.example.com:8443",
            }
        ]
    ),
    "base_url not https": body(
        targets=[{"provider": "OPENAI_COMPATIBLE", "secret_id": "SECRET", "target_model": "m", "base_url": "http://h"}]
    ),
    "VERTEX without vertex_config": body(
        targets=[{"provider": "VERTEX", "secret_id": "SECRET", "target_model": "gemini"}]
    ),
    "unknown region": body(region="US"),
}


@pytest.mark.parametrize("payload", BAD_CREATES.values(), ids=BAD_CREATES.keys())
async def test_create_refusals(sim: BasetenSimulator, client: httpx.AsyncClient, payload: Any) -> None:
    secret_id = await make_secret(client)
    text = json.dumps(payload).replace("SECRET", secret_id)
    response = await client.post(EP, content=text, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert set(response.json()) == {"error"} and response.json()["error"]
    assert sim.endpoints == {}


async def test_invalid_json_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(EP, content=b"{nope", headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and "JSON" in response.json()["error"]


async def test_duplicate_slug_is_400_even_across_workspaces(sim: BasetenSimulator, client: httpx.AsyncClient) -> None:
    await create(client)
    assert (await client.post(EP, json=body())).status_code == 400
    sim.add_foreign_endpoint("my-org/theirs")
    assert (await client.post(EP, json=body(slug="my-org/theirs"))).status_code == 400
    # ...and the other workspace's endpoint is never listed, so adoption by slug cannot find it.
    assert [i["slug"] for i in (await client.get(EP)).json()["items"]] == ["my-org/glm-5.2"]


async def test_patch_refusals(client: httpx.AsyncClient) -> None:
    created = await create(client)
    url = f"{EP}/{created['id']}"
    assert (await client.patch(url, json={"targets": []})).status_code == 400
    assert (await client.patch(url, json={"targets": [{"provider": "BASETEN"}]})).status_code == 400
    assert (await client.patch(url, json=[1])).status_code == 400


# ----------------------------------------------------------------------------- auth


async def test_auth(sim: BasetenSimulator) -> None:
    async with httpx.AsyncClient(base_url=sim.url, verify=False) as c:
        assert (await c.get(EP)).status_code == 401
        assert (await c.get(EP, headers={"Authorization": "Api-Key wrong"})).status_code == 401
        assert (await c.get(EP, headers={"Authorization": KEY})).status_code == 401
        assert (await c.get(EP, headers={"Authorization": f"Bearer {KEY}"})).status_code == 200
        assert (await c.get(EP, headers={"Authorization": f"Api-Key {KEY}"})).status_code == 200
        assert set((await c.get(EP)).json()) == {"error"}

        sim.rotate_key(KEY, "sk-new")
        assert (await c.get(EP, headers={"Authorization": f"Api-Key {KEY}"})).status_code == 401
        assert (await c.get(EP, headers={"Authorization": "Api-Key sk-new"})).status_code == 200
        sim.remove_key("sk-new")
        assert (await c.get(EP, headers={"Authorization": "Api-Key sk-new"})).status_code == 401

        sim.add_key("sk-readonly", management=False)
        forbidden = await c.get(EP, headers={"Authorization": "Api-Key sk-readonly"})
        assert forbidden.status_code == 403 and "scope" in forbidden.json()["error"]


async def test_workspace_not_onboarded(sim: BasetenSimulator, client: httpx.AsyncClient) -> None:
    sim.onboarded = False
    response = await client.post(EP, json=body())
    assert response.status_code == 403 and "onboarded" in response.json()["error"]
    assert (await client.get(EP)).status_code == 403
    # The secrets API is not part of Frontier Gateway.
    assert (await client.get("/v1/secrets")).status_code == 200


async def test_other_workspace_endpoint_is_403(sim: BasetenSimulator, client: httpx.AsyncClient) -> None:
    foreign = sim.add_foreign_endpoint("my-org/theirs")
    assert (await client.get(f"{EP}/{foreign}")).status_code == 403
    assert (await client.patch(f"{EP}/{foreign}", json={"targets": [baseten_target()]})).status_code == 403
    assert (await client.delete(f"{EP}/{foreign}")).status_code == 403


async def test_unknown_id_is_404(client: httpx.AsyncClient) -> None:
    assert (await client.get(f"{EP}/missing")).status_code == 404
    assert (await client.patch(f"{EP}/missing", json={"targets": [baseten_target()]})).status_code == 404
    response = await client.delete(f"{EP}/missing")
    assert response.status_code == 404 and set(response.json()) == {"error"}
    assert (await client.get("/v2/nothing")).status_code == 404


# ----------------------------------------------------------------------------- rate limits and faults


async def test_rate_limit_burst(sim: BasetenSimulator, client: httpx.AsyncClient) -> None:
    sim.faults.rate_limit_burst(2, retry_after=37)
    for _ in range(2):
        response = await client.post(EP, json=body())
        assert response.status_code == 429
        assert response.json() == {"error": response.json()["error"], "retry_after": 37}
        assert response.headers["Retry-After"] == "37"
    assert sim.endpoints == {}
    assert (await client.post(EP, json=body())).status_code == 200


def most_in_one_second(times: list[float]) -> int:
    """The most arrivals within any one-second window ending at an arrival (the simulator's definition)."""
    return max((sum(1 for t in times[: i + 1] if t > now - 1.0) for i, now in enumerate(times)), default=0)


async def test_token_bucket_per_key_and_max_rate(sim: BasetenSimulator, client: httpx.AsyncClient) -> None:
    rate = 5  # requests per second; the bucket holds one second's worth
    sim.rate_limit = rate
    # Back to back until the first 429. Not a fixed [200]*5 + [429]: a slow machine refills a
    # token every 1/rate s while the requests go out. The bucket starts full, so the first `rate`
    # pass whatever the load; and no more can pass than it held plus what it refilled between
    # the first arrival and the 429's (the bucket reads its clock after the arrival of each
    # request, and each request is answered before the next is sent, so the bound is exact).
    # Fails without a bucket (no 429 in 100), with a bigger one or a faster refill (too many pass).
    responses: list[httpx.Response] = []
    while not any(r.status_code == 429 for r in responses) and len(responses) < 100:
        responses.append(await client.get(EP))
    statuses = [r.status_code for r in responses]
    assert 429 in statuses, statuses
    passed = statuses.index(429)
    assert statuses[:passed] == [200] * passed
    refill = (sim.requests[passed].time - sim.requests[0].time) * rate
    assert rate <= passed <= rate + refill, (passed, refill)
    throttled = responses[passed]
    assert throttled.json()["retry_after"] >= 1 and int(throttled.headers["Retry-After"]) >= 1
    sim.add_key("sk-other")
    # Buckets are per key: another key's first request finds its own full bucket.
    assert (await client.get(EP, headers={"Authorization": "Api-Key sk-other"})).status_code == 200
    # The one-second windows are computed from the arrival times, not assumed: a busy machine
    # may spread these requests over more than a second.
    mine = [r.time for r in sim.requests if r.key == KEY]
    assert sim.max_rate == most_in_one_second([r.time for r in sim.requests])
    assert sim.max_rate_by_key[KEY] == most_in_one_second(mine)
    assert sim.max_rate_by_key["sk-other"] == 1


async def test_latency(sim: BasetenSimulator, client: httpx.AsyncClient) -> None:
    latency = 0.5
    sim.faults.latency = latency
    started = time.monotonic()
    assert (await client.get(EP)).status_code == 200
    assert time.monotonic() - started >= latency  # a lower bound: load only adds to it
    sim.faults.reset()
    # A latency left after the reset would make this take at least `latency`; without one it is
    # a loopback request (milliseconds, tens on a busy machine), so the bound has ~0.5 s margin.
    started = time.monotonic()
    await client.get(EP)
    assert time.monotonic() - started < latency


async def test_fail_next(sim: BasetenSimulator, client: httpx.AsyncClient) -> None:
    sim.faults.fail_next(2, status=503)
    for _ in range(2):
        response = await client.post(EP, json=body())
        assert response.status_code == 503 and set(response.json()) == {"error"}
    assert sim.endpoints == {}
    assert (await client.post(EP, json=body())).status_code == 200
    sim.faults.fail_next()
    assert (await client.get(EP)).status_code == 500


async def test_lost_response_still_creates(sim: BasetenSimulator, client: httpx.AsyncClient) -> None:
    sim.faults.lose_next_response("POST")
    with pytest.raises(httpx.TransportError):
        await client.post(EP, json=body())
    assert [e["slug"] for e in sim.endpoints.values()] == ["my-org/glm-5.2"]
    assert sim.requests[-1].lost and sim.requests[-1].status == 200
    # Only POSTs were armed, and only once: the retry sees the duplicate slug, the GET is fine.
    assert (await client.get(EP)).status_code == 200
    assert (await client.post(EP, json=body())).status_code == 400


async def test_faults_reset(sim: BasetenSimulator, client: httpx.AsyncClient) -> None:
    sim.faults.fail_next(3)
    sim.faults.rate_limit_burst(3)
    sim.faults.lose_next_response("GET", 3)
    sim.faults.reset()
    assert (await client.get(EP)).status_code == 200


# ----------------------------------------------------------------------------- slug renames


async def test_slug_rename_modes(sim: BasetenSimulator, client: httpx.AsyncClient) -> None:
    created = await create(client)
    url = f"{EP}/{created['id']}"

    renamed = await client.patch(url, json={"slug": "my-org/renamed"})
    assert renamed.status_code == 200 and renamed.json()["slug"] == "my-org/renamed"
    # The old slug is free again; a rename onto a taken or unowned slug is refused.
    other = await create(client, slug="my-org/glm-5.2")
    assert (await client.patch(url, json={"slug": "my-org/glm-5.2"})).status_code == 400
    assert (await client.patch(url, json={"slug": "their-org/x"})).status_code == 400

    sim.slug_rename = "immutable"
    refused = await client.patch(url, json={"slug": "my-org/again", "targets": [baseten_target("zz")]})
    assert refused.status_code == 400 and "immutable" in refused.json()["error"]
    assert sim.endpoints[created["id"]]["slug"] == "my-org/renamed"
    assert sim.endpoints[created["id"]]["targets"] == [baseten_target()]  # nothing applied
    # Sending the current slug back is not a rename, so it passes; but only "patch" mode
    # excuses a slug in a PATCH body, so the contract check still flags it.
    assert (await client.patch(url, json={"slug": "my-org/renamed"})).status_code == 200
    assert len(sim.contract_violations) == 1 and "'slug' was unexpected" in sim.contract_violations[0]
    sim.contract_violations.clear()

    sim.slug_rename = "patch"
    assert (await client.patch(f"{EP}/{other['id']}", json={"slug": "my-org/back"})).status_code == 200


async def test_slug_rename_ignored_mode_is_a_contract_violation(
    sim: BasetenSimulator, client: httpx.AsyncClient
) -> None:
    created = await create(client)
    sim.slug_rename = "ignore"
    response = await client.patch(f"{EP}/{created['id']}", json={"slug": "my-org/new"})
    assert response.status_code == 200 and response.json()["slug"] == "my-org/glm-5.2"
    # Only "patch" mode excuses a slug in a PATCH; against the newer API it breaks the spec.
    violations, sim.contract_violations[:] = list(sim.contract_violations), []
    assert len(violations) == 1 and "'slug' was unexpected" in violations[0]


# ----------------------------------------------------------------------------- secrets


async def test_secrets_upsert_list_delete(sim: BasetenSimulator, client: httpx.AsyncClient) -> None:
    first = (await client.post("/v1/secrets", json={"name": "openai-key", "value": "v1"})).json()
    assert set(first) == {"id", "created_at", "name", "team_name"}
    rotated = (await client.post("/v1/secrets", json={"name": "openai-key", "value": "v2"})).json()
    assert rotated == first  # id (and creation time) stable across rotation
    assert sim.secrets["openai-key"].value == "v2"

    listed = await client.get("/v1/secrets")
    assert listed.json() == {"secrets": [first]}
    assert "v2" not in listed.text and "value" not in listed.text

    assert (await client.post("/v1/secrets", json={"name": "x"})).status_code == 400
    assert (await client.post("/v1/secrets", json={"name": "a/b", "value": "v"})).status_code == 400

    deleted = await client.delete("/v1/secrets/openai-key")
    assert deleted.status_code == 200 and deleted.json() == {"name": "openai-key"}
    assert (await client.delete("/v1/secrets/openai-key")).status_code == 404
    assert (await client.get("/v1/secrets")).json() == {"secrets": []}


# ----------------------------------------------------------------------------- accounting, out of band


async def test_request_accounting(sim: BasetenSimulator, client: httpx.AsyncClient) -> None:
    created = await create(client)
    await client.get(EP)
    await client.get(f"{EP}/{created['id']}")
    await client.patch(f"{EP}/{created['id']}", json={"targets": [baseten_target("b")]})
    assert sim.count() == 4
    assert sim.count("GET") == 2
    assert sim.count(route=EP_ID) == 2
    assert sim.count("patch", EP_ID) == 1
    assert [(w.method, w.route, w.status) for w in sim.writes()] == [("POST", EP, 200), ("PATCH", EP_ID, 200)]
    assert sim.writes()[1].body == {"targets": [baseten_target("b")]}
    assert sim.requests[0].key == KEY
    sim.reset_counts()
    assert sim.count() == 0 and sim.writes() == []


async def test_out_of_band_changes(sim: BasetenSimulator, client: httpx.AsyncClient) -> None:
    created = await create(client)
    changed = sim.modify_out_of_band(created["id"], targets=[baseten_target("drifted")])
    assert changed["updated_at"] >= created["updated_at"]
    assert (await client.get(f"{EP}/{created['id']}")).json()["targets"] == [baseten_target("drifted")]
    sim.delete_out_of_band(created["id"])
    assert (await client.get(f"{EP}/{created['id']}")).status_code == 404
    assert sim.count() == 3  # create and two GETs: out-of-band changes are not requests


# ----------------------------------------------------------------------------- contract


async def test_contract_catches_an_invalid_request(sim: BasetenSimulator, client: httpx.AsyncClient) -> None:
    # Baseten ignores unknown fields, so this typo succeeds upstream; the contract check catches it.
    response = await client.post(EP, json=body(targets=[{"provider": "BASETEN", "model_id": "x", "modle": "y"}]))
    assert response.status_code == 200
    violations, sim.contract_violations[:] = list(sim.contract_violations), []
    assert len(violations) == 1
    assert violations[0].startswith("POST /v1/gateway/endpoints request:") and "modle" in violations[0]


async def test_contract_catches_an_invalid_response(sim: BasetenSimulator, client: httpx.AsyncClient) -> None:
    created = await create(client)
    sim.modify_out_of_band(created["id"], region="MARS", created_at="yesterday")
    assert (await client.get(f"{EP}/{created['id']}")).status_code == 200
    violations, sim.contract_violations[:] = list(sim.contract_violations), []
    assert len(violations) == 1
    assert "-> 200 response" in violations[0] and "MARS" in violations[0] and "date-time" in violations[0]


async def test_contract_checker_directly() -> None:
    checker = ContractChecker(default_spec_path(), ["/v1/secrets"])
    get = ContractRequest("GET", "/v1/secrets", headers={"Authorization": "Bearer k"})
    good = json.dumps({"secrets": [{"id": "a", "created_at": "2026-01-01T00:00:00Z", "name": "n", "team_name": "t"}]})
    assert checker.check_response(get, ContractResponse(200, good.encode())) == []
    bad = ContractResponse(200, json.dumps([{"id": "a", "value": "leaked"}]).encode())
    assert len(checker.check_response(get, bad)) == 1
    # The spec documents no error statuses, so their bodies are not judged.
    assert checker.check_response(get, ContractResponse(404, b'{"error": "x"}')) == []
    assert checker.check_request(ContractRequest("GET", "/v1/secrets")) != []  # no credentials
    # Built once per process: a second checker for the same slice reuses the validator.
    assert ContractChecker(default_spec_path(), ["/v1/secrets"]).app is checker.app
