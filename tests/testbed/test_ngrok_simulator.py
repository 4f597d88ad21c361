"""The ngrok AI Gateway simulator over real HTTP: behaviour, faults, accounting and contract checks.

Every test's simulator runs with contract checking on, and the ``sim`` fixture
asserts at teardown that no exchange broke the vendor's spec; tests that break it
on purpose take the violations out of the list themselves.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from aigw_testbed.simulators.contract import ContractRequest, ContractResponse
from aigw_testbed.simulators.ngrok import NgrokSimulator, api_key_identity

KEY = "ngrok-sim-key-1"
PROVIDERS = "/providers"
PROVIDER = "/providers/{id}"


def body(provider_id: str = "internal-vllm", **extra: Any) -> dict[str, Any]:
    return {"providerId": provider_id, "name": "Internal vLLM", "baseUrl": "https://vllm.example.com/v1", **extra}


@pytest.fixture
async def sim() -> AsyncIterator[NgrokSimulator]:
    async with NgrokSimulator([KEY], contract=True) as simulator:
        yield simulator
        assert simulator.contract_violations == []


@pytest.fixture
async def client(sim: NgrokSimulator) -> AsyncIterator[httpx.AsyncClient]:
    # verify=False: no TLS here, and building the default SSL context costs ~0.1 s per client.
    async with httpx.AsyncClient(base_url=sim.url, headers={"Authorization": f"Bearer {KEY}"}, verify=False) as c:
        yield c


async def create(client: httpx.AsyncClient, provider_id: str = "internal-vllm", **extra: Any) -> dict[str, Any]:
    response = await client.post(PROVIDERS, json=body(provider_id, **extra))
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    payload: dict[str, Any] = response.json()
    assert payload["statusCode"] == status and isinstance(payload["msg"], str) and payload["msg"]
    assert isinstance(payload["details"], dict)
    assert payload.get("errorCode") == code
    return payload


# ----------------------------------------------------------------------------- CRUD


async def test_crud_round_trip(sim: NgrokSimulator, client: httpx.AsyncClient) -> None:
    created = await create(
        client,
        metadata='{"owner": "ml"}',
        supportedApiSurfaces=[{"format": "openai", "surface": "chat-completions", "supportedParams": [{"name": "n"}]}],
        models=[{"modelId": "llama-3"}, {"modelId": "qwen"}],
    )
    assert set(created) == {
        "id",
        "uri",
        "providerId",
        "name",
        "baseUrl",
        "metadata",
        "createdAt",
        "updatedAt",
        "createdBy",
        "lastUpdatedBy",
        "supportedApiSurfaces",
        "models",
    }
    assert created["id"].startswith("aigp_")
    assert created["uri"] == f"{sim.url}/providers/{created['id']}"
    assert created["createdAt"].endswith("Z") and created["createdAt"] == created["updatedAt"]
    ident = api_key_identity(KEY)
    assert ident.startswith("ak_") and KEY not in json.dumps(created)
    assert created["createdBy"] == created["lastUpdatedBy"] == {"id": ident, "uri": f"{sim.url}/api-keys/{ident}"}
    assert [m["modelId"] for m in created["models"]] == ["llama-3", "qwen"]
    assert all(m["id"].startswith("aigm_") for m in created["models"])
    assert sim.providers[created["id"]] == created

    # The uri can be fetched as it is.
    got = await client.get(created["uri"])
    assert got.status_code == 200 and got.json() == created

    patched = await client.patch(f"{PROVIDERS}/{created['id']}", json={"name": "Renamed"})
    assert patched.status_code == 200
    assert patched.json()["name"] == "Renamed" and patched.json()["updatedAt"] > created["updatedAt"]

    deleted = await client.delete(f"{PROVIDERS}/{created['id']}")
    assert deleted.status_code == 204 and deleted.content == b""
    error(await client.get(f"{PROVIDERS}/{created['id']}"), 404)
    error(await client.delete(f"{PROVIDERS}/{created['id']}"), 404)
    error(await client.patch(f"{PROVIDERS}/{created['id']}", json={"name": "x"}), 404)


async def test_head_routes(client: httpx.AsyncClient) -> None:
    created = await create(client)
    assert (await client.head(PROVIDERS)).status_code == 200
    assert (await client.head(f"{PROVIDERS}/{created['id']}")).status_code == 200
    assert (await client.head(f"{PROVIDERS}/aigp_nope")).status_code == 404


async def test_http_internal_base_url_is_allowed(client: httpx.AsyncClient) -> None:
    created = await create(client, baseUrl="http://vllm.internal:8000/v1")
    assert created["baseUrl"] == "http://vllm.internal:8000/v1"


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        ({"name": "n", "baseUrl": "https://a.example"}, 400, "ERR_NGROK_27704"),
        (body(providerId=""), 400, "ERR_NGROK_27704"),
        (body(providerId=None), 400, "ERR_NGROK_27704"),
        (body(providerId="x" * 256), 400, None),
        (body(providerId="has:colon"), 400, None),
        (body(providerId="has space"), 400, None),
        (body(providerId=7), 400, None),
        (body(providerId="openai"), 400, "ERR_NGROK_27705"),
        ({"providerId": "p", "baseUrl": "https://a.example"}, 400, "ERR_NGROK_27704"),
        (body(name=""), 400, "ERR_NGROK_27704"),
        (body(name="n" * 256), 400, None),
        ({"providerId": "p", "name": "n"}, 400, "ERR_NGROK_27704"),
        (body(baseUrl=""), 400, "ERR_NGROK_27704"),
        (body(baseUrl="https://a.example/" + "p" * 2040), 400, "ERR_NGROK_27703"),
        (body(baseUrl="http://vllm.example.com"), 400, "ERR_NGROK_27718"),
        (body(baseUrl="ftp://vllm.internal"), 400, "ERR_NGROK_27718"),
        (body(baseUrl="not a url"), 400, "ERR_NGROK_27718"),
        (body(baseUrl="https://a.example:99999"), 400, None),
        (body(metadata="m" * 4097), 400, None),
        (body(metadata=5), 400, None),
        (body(supportedApiSurfaces=[{"surface": "chat-completions"}]), 400, "ERR_NGROK_27704"),
        (body(supportedApiSurfaces=[{"format": "cobol"}]), 400, None),
        (body(supportedApiSurfaces=[{"format": "openai", "surface": "telepathy"}]), 400, None),
        (body(supportedApiSurfaces={"format": "openai"}), 400, None),
        (body(models=[{"modelId": "a"}, {"modelId": "a"}]), 400, "ERR_NGROK_27711"),
        (body(models=[{"modelId": ""}]), 400, "ERR_NGROK_27704"),
        (body(models=[{"modelId": "m" * 256}]), 400, None),
        (body(models=["llama"]), 400, None),
        ([body()], 400, None),
    ],
)
async def test_create_refusals(
    sim: NgrokSimulator, client: httpx.AsyncClient, payload: Any, status: int, code: str | None
) -> None:
    error(await client.post(PROVIDERS, json=payload), status, code)
    assert sim.providers == {}


async def test_metadata_at_the_limit_is_accepted(client: httpx.AsyncClient) -> None:
    assert (await create(client, metadata="m" * 4096))["metadata"] == "m" * 4096


async def test_invalid_json_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(PROVIDERS, content=b"{nope", headers={"Content-Type": "application/json"})
    error(response, 400)


async def test_duplicate_provider_id_is_409(sim: NgrokSimulator, client: httpx.AsyncClient) -> None:
    await create(client)
    payload = error(await client.post(PROVIDERS, json=body()), 409, "ERR_NGROK_27712")
    assert "internal-vllm" in payload["msg"]
    sim.duplicate_provider_status = 400
    error(await client.post(PROVIDERS, json=body()), 400, "ERR_NGROK_27712")
    assert len(sim.providers) == 1


# ----------------------------------------------------------------------------- PATCH semantics


async def test_patch_models_semantics(sim: NgrokSimulator, client: httpx.AsyncClient) -> None:
    created = await create(client, models=[{"modelId": "a"}, {"modelId": "b"}])
    url = f"{PROVIDERS}/{created['id']}"
    ids = {m["modelId"]: m["id"] for m in created["models"]}

    untouched = (await client.patch(url, json={"name": "other"})).json()
    assert untouched["models"] == created["models"]
    assert (await client.patch(url, json={"models": None})).json()["models"] == created["models"]

    replaced = (await client.patch(url, json={"models": [{"modelId": "b"}, {"modelId": "c"}]})).json()
    assert [m["modelId"] for m in replaced["models"]] == ["b", "c"]
    # An unchanged modelId keeps its id across a replacement; a new one gets a new id.
    assert replaced["models"][0]["id"] == ids["b"] and replaced["models"][1]["id"] not in ids.values()

    cleared = (await client.patch(url, json={"models": []})).json()
    assert cleared["models"] == []
    assert sim.providers[created["id"]]["models"] == []


async def test_patch_other_fields(client: httpx.AsyncClient) -> None:
    created = await create(client, metadata="m1", supportedApiSurfaces=[{"format": "openai"}])
    url = f"{PROVIDERS}/{created['id']}"
    surfaces = [{"format": "anthropic", "surface": "messages"}]
    patched = (
        await client.patch(
            url, json={"baseUrl": "https://new.example", "metadata": "m2", "supportedApiSurfaces": surfaces}
        )
    ).json()
    assert patched["baseUrl"] == "https://new.example" and patched["metadata"] == "m2"
    assert patched["supportedApiSurfaces"] == surfaces
    # null is "not sent" for these fields; "" clears metadata.
    same = (await client.patch(url, json={"name": None, "metadata": None, "supportedApiSurfaces": None})).json()
    assert same == patched
    assert (await client.patch(url, json={"metadata": ""})).json()["metadata"] == ""


async def test_noop_patch_keeps_updated_at(sim: NgrokSimulator, client: httpx.AsyncClient) -> None:
    created = await create(client)
    sim.add_key("second-key")
    response = await client.patch(
        f"{PROVIDERS}/{created['id']}", json={"name": created["name"]}, headers={"Authorization": "Bearer second-key"}
    )
    assert response.json() == created
    changed = await client.patch(
        f"{PROVIDERS}/{created['id']}", json={"name": "new"}, headers={"Authorization": "Bearer second-key"}
    )
    assert changed.json()["lastUpdatedBy"]["id"] == api_key_identity("second-key")
    assert changed.json()["createdBy"] == created["createdBy"]


async def test_patch_refusals(sim: NgrokSimulator, client: httpx.AsyncClient) -> None:
    created = await create(client, models=[{"modelId": "a"}])
    url = f"{PROVIDERS}/{created['id']}"
    refused = error(await client.patch(url, json={"providerId": "renamed", "name": "x"}), 400)
    assert "immutable" in refused["msg"]
    error(await client.patch(url, json={"baseUrl": None}), 400, "ERR_NGROK_27704")
    error(await client.patch(url, json={"baseUrl": ""}), 400, "ERR_NGROK_27704")
    error(await client.patch(url, json={"baseUrl": "http://public.example"}), 400, "ERR_NGROK_27718")
    error(await client.patch(url, json={"name": ""}), 400, "ERR_NGROK_27704")
    error(await client.patch(url, json={"models": [{"modelId": "z"}, {"modelId": "z"}]}), 400, "ERR_NGROK_27711")
    assert sim.providers[created["id"]] == created  # nothing applied

    # Sending the current providerId back is not a change, so ngrok accepts it; the spec has
    # no providerId in the update schema, so the contract check flags the client.
    assert (await client.patch(url, json={"providerId": "internal-vllm"})).status_code == 200
    violations, sim.contract_violations[:] = list(sim.contract_violations), []
    assert len(violations) == 1 and "providerId" in violations[0]


# ----------------------------------------------------------------------------- references, provider keys


async def test_delete_blocked_while_provider_key_references(sim: NgrokSimulator, client: httpx.AsyncClient) -> None:
    created = await create(client)
    url = f"{PROVIDERS}/{created['id']}"
    key_id = sim.add_provider_key_out_of_band(created["id"])
    assert sim.references(created["id"]) == [key_id]
    payload = error(await client.delete(url), 409, "ERR_NGROK_27710")
    assert "referenced" in payload["msg"]
    assert created["id"] in sim.providers

    sim.remove_provider_key(key_id)
    assert (await client.delete(url)).status_code == 204
    assert sim.providers == {}


async def test_delete_blocked_by_access_key_configuration(sim: NgrokSimulator, client: httpx.AsyncClient) -> None:
    created = await create(client)
    ref = sim.add_access_key_configuration_reference("internal-vllm")
    error(await client.delete(f"{PROVIDERS}/{created['id']}"), 409, "ERR_NGROK_27710")
    sim.remove_access_key_configuration_reference(ref)
    assert (await client.delete(f"{PROVIDERS}/{created['id']}")).status_code == 204


async def test_provider_keys_over_http(sim: NgrokSimulator, client: httpx.AsyncClient) -> None:
    created = await create(client)
    made = await client.post(
        "/provider-keys", json={"providerId": "internal-vllm", "name": "k1", "value": "sk-secret-1234"}
    )
    assert made.status_code == 201, made.text
    key = made.json()
    assert key["id"].startswith("aigpk_") and key["providerId"] == "internal-vllm" and key["name"] == "k1"
    assert "sk-secret-1234" not in made.text and key["keyRedacted"] == "sk-...1234"
    assert sim.provider_keys[key["id"]].value == "sk-secret-1234"

    assert (await client.get(f"/provider-keys/{key['id']}")).json() == key
    listed = (await client.get("/provider-keys", params={"provider": "internal-vllm"})).json()
    assert [k["id"] for k in listed["aiGatewayProviderKeys"]] == [key["id"]]
    assert (await client.get("/provider-keys", params={"provider": "openai"})).json()["aiGatewayProviderKeys"] == []

    error(await client.delete(f"{PROVIDERS}/{created['id']}"), 409, "ERR_NGROK_27710")

    rotated = await client.post(f"/provider-keys/{key['id']}/rotate", json={"name": "k1", "value": "sk-rotated-9999"})
    assert rotated.status_code == 200 and rotated.json()["keyRedacted"] == "sk-...9999"
    assert sim.provider_keys[key["id"]].value == "sk-rotated-9999" and sim.provider_keys[key["id"]].rotations == 1
    error(await client.post(f"/provider-keys/{key['id']}/rotate", json={"value": "v"}), 400, "ERR_NGROK_27510")

    patched = await client.patch(f"/provider-keys/{key['id']}", json={"description": "prod"})
    assert patched.status_code == 200 and patched.json()["description"] == "prod"

    assert (await client.delete(f"/provider-keys/{key['id']}")).status_code == 204
    error(await client.get(f"/provider-keys/{key['id']}"), 404)
    error(await client.delete(f"/provider-keys/{key['id']}"), 404)
    assert (await client.delete(f"{PROVIDERS}/{created['id']}")).status_code == 204


async def test_provider_key_refusals(client: httpx.AsyncClient) -> None:
    error(await client.post("/provider-keys", json={"providerId": "openai", "name": "k"}), 400, "ERR_NGROK_27510")
    error(
        await client.post("/provider-keys", json={"providerId": "openai", "name": "k", "value": ""}),
        400,
        "ERR_NGROK_27507",
    )
    error(await client.post("/provider-keys", json={"providerId": "nobody", "name": "k", "value": "v"}), 400)
    # A catalog provider needs no user-defined provider.
    made = await client.post("/provider-keys", json={"providerId": "openai", "name": "k", "value": "sk-abcdefgh1234"})
    assert made.status_code == 201


# ----------------------------------------------------------------------------- lists


async def test_pagination_across_pages(sim: NgrokSimulator, client: httpx.AsyncClient) -> None:
    made = [(await create(client, f"p{i}"))["id"] for i in range(5)]
    first = await client.get(PROVIDERS, params={"limit": 2})
    assert first.status_code == 200
    page = first.json()
    assert set(page) == {"aiGatewayProviders", "uri", "nextPageUri"}
    assert page["uri"] == f"{sim.url}/providers"
    seen = [p["id"] for p in page["aiGatewayProviders"]]
    assert seen == made[::-1][:2]  # newest first
    next_uri = page["nextPageUri"]
    pages = 1
    while next_uri is not None:
        # The nextPageUri is fetched exactly as given.
        response = await client.get(next_uri)
        assert response.status_code == 200
        page = response.json()
        seen += [p["id"] for p in page["aiGatewayProviders"]]
        next_uri = page["nextPageUri"]
        pages += 1
    assert seen == made[::-1] and pages == 3

    # A deletion between pages skips nothing: the cursor is the id, not an offset.
    first_page = (await client.get(PROVIDERS, params={"limit": 2})).json()
    sim.delete_out_of_band(first_page["aiGatewayProviders"][0]["id"])
    rest = (await client.get(first_page["nextPageUri"])).json()
    assert [p["id"] for p in rest["aiGatewayProviders"]] == made[::-1][2:4]

    # An exact fit has no next page.
    exact = (await client.get(PROVIDERS, params={"limit": 4})).json()
    assert len(exact["aiGatewayProviders"]) == 4 and exact["nextPageUri"] is None
    assert (await client.get(PROVIDERS, params={"beforeId": made[0]})).json()["aiGatewayProviders"] == []


async def test_public_url_is_used_for_uris() -> None:
    sim = NgrokSimulator([KEY], public_url="https://api.ngrok.ai")
    async with sim, httpx.AsyncClient(base_url="", headers={"Authorization": f"Bearer {KEY}"}) as client:
        client.base_url = httpx.URL(sim.url)
        for i in range(2):
            await create(client, f"p{i}")
        page = (await client.get(PROVIDERS, params={"limit": 1})).json()
    assert page["aiGatewayProviders"][0]["uri"].startswith("https://api.ngrok.ai/providers/aigp_")
    assert page["nextPageUri"].startswith("https://api.ngrok.ai/providers?beforeId=aigp_")


async def test_list_default_limit_is_100(sim: NgrokSimulator, client: httpx.AsyncClient) -> None:
    sim.contract_checker = None  # 101 creates: keep this test fast
    for i in range(101):
        await create(client, f"p{i}")
    page = (await client.get(PROVIDERS)).json()
    assert len(page["aiGatewayProviders"]) == 100 and "limit=100" in page["nextPageUri"]


@pytest.mark.parametrize("params", [{"limit": "0"}, {"limit": "101"}, {"limit": "ten"}])
async def test_list_bad_parameters(client: httpx.AsyncClient, params: dict[str, Any]) -> None:
    error(await client.get(PROVIDERS, params=params), 400)


# ----------------------------------------------------------------------------- auth, rate limits, faults


async def test_auth(sim: NgrokSimulator) -> None:
    async with httpx.AsyncClient(base_url=sim.url) as anonymous:
        error(await anonymous.get(PROVIDERS), 401, "ERR_NGROK_200")
        error(await anonymous.get(PROVIDERS, headers={"Authorization": f"Token {KEY}"}), 401, "ERR_NGROK_201")
        wrong = await anonymous.get(PROVIDERS, headers={"Authorization": "Bearer not-a-key"})
        error(wrong, 401, "ERR_NGROK_203")
        assert "not-a-key" not in wrong.text
        sim.add_key("rotated")
        assert (await anonymous.get(PROVIDERS, headers={"Authorization": "Bearer rotated"})).status_code == 200
        sim.remove_key("rotated")
        error(await anonymous.get(PROVIDERS, headers={"Authorization": "Bearer rotated"}), 401, "ERR_NGROK_203")
    assert sim.providers == {}


async def test_unknown_route_is_404(client: httpx.AsyncClient) -> None:
    error(await client.get("/nothing-here"), 404)


async def test_rate_limit_burst(sim: NgrokSimulator, client: httpx.AsyncClient) -> None:
    sim.faults.rate_limit_burst(2, retry_after=37)
    for _ in range(2):
        response = await client.post(PROVIDERS, json=body())
        error(response, 429, "ERR_NGROK_1214")
        assert response.headers["Retry-After"] == "37"
    assert sim.providers == {}
    await create(client)


async def test_token_bucket_per_key(sim: NgrokSimulator, client: httpx.AsyncClient) -> None:
    rate = 2  # requests per second; the bucket holds one second's worth
    sim.rate_limit = rate
    # Back to back until the first 429, not a fixed four: a busy machine refills a token every
    # 1/rate s while they go out. The full bucket passes the first `rate` whatever the load, and
    # no more pass than it held plus its refill between the first arrival and the 429's (each is
    # answered before the next is sent). Fails with no bucket (no 429 in 100) or a bigger one.
    statuses: list[int] = []
    while 429 not in statuses and len(statuses) < 100:
        statuses.append((await client.get(PROVIDERS)).status_code)
    assert 429 in statuses, statuses
    passed = statuses.index(429)
    refill = (sim.requests[passed].time - sim.requests[0].time) * rate
    assert statuses[:passed] == [200] * passed and rate <= passed <= rate + refill, (statuses, refill)
    throttled = next(r for r in sim.requests if r.status == 429)
    assert throttled.key == KEY
    sim.rate_limit = None
    assert (await client.get(PROVIDERS)).status_code == 200


async def test_fail_next(sim: NgrokSimulator, client: httpx.AsyncClient) -> None:
    sim.faults.fail_next(1, status=503)
    error(await client.post(PROVIDERS, json=body()), 503)
    assert sim.providers == {}
    await create(client)


async def test_lost_response_still_creates(sim: NgrokSimulator, client: httpx.AsyncClient) -> None:
    sim.faults.lose_next_response("POST")
    with pytest.raises(httpx.TransportError):
        await client.post(PROVIDERS, json=body())
    assert [p["providerId"] for p in sim.providers.values()] == ["internal-vllm"]
    assert sim.requests[-1].lost and sim.requests[-1].status == 201
    # The retry finds the providerId taken; listing is how a client adopts what it made.
    error(await client.post(PROVIDERS, json=body()), 409, "ERR_NGROK_27712")
    listed = (await client.get(PROVIDERS)).json()["aiGatewayProviders"]
    assert [p["providerId"] for p in listed] == ["internal-vllm"]


async def test_latency_and_client_timeout(sim: NgrokSimulator, client: httpx.AsyncClient) -> None:
    latency = 0.5
    sim.faults.latency = latency
    # The server sleeps `latency` before it answers, so a client timeout ten times shorter
    # always fires first, however slow the machine.
    with pytest.raises(httpx.ReadTimeout):
        await client.post(PROVIDERS, json=body(), timeout=latency / 10)
    # The server finishes the write after the client gave up, as a slow upstream does. Each
    # sleep lasts at least 0.02 s, so this waits at least the latency plus ten seconds of margin
    # (load only lengthens it) before it gives up.
    for _ in range(int((latency + 10.0) / 0.02)):
        if sim.providers:
            break
        await asyncio.sleep(0.02)
    assert [p["providerId"] for p in sim.providers.values()] == ["internal-vllm"]
    sim.faults.reset()
    # A latency left after the reset would make this take at least `latency`; without one it is
    # a loopback request (milliseconds, tens on a busy machine): ~0.5 s of margin either way.
    started = time.monotonic()
    assert (await client.get(PROVIDERS)).status_code == 200
    assert time.monotonic() - started < latency


# ----------------------------------------------------------------------------- accounting, out of band


async def test_request_accounting(sim: NgrokSimulator, client: httpx.AsyncClient) -> None:
    created = await create(client)
    await client.get(PROVIDERS)
    await client.patch(f"{PROVIDERS}/{created['id']}", json={"name": "b"})
    await client.delete(f"{PROVIDERS}/{created['id']}")
    assert sim.count() == 4 and sim.count("GET") == 1 and sim.count(route=PROVIDER) == 2
    assert [(w.method, w.route, w.status) for w in sim.writes()] == [
        ("POST", PROVIDERS, 201),
        ("PATCH", PROVIDER, 200),
        ("DELETE", PROVIDER, 204),
    ]
    assert sim.requests[0].key == KEY


async def test_out_of_band_changes(sim: NgrokSimulator, client: httpx.AsyncClient) -> None:
    created = await create(client)
    changed = sim.modify_out_of_band(created["id"], baseUrl="https://drifted.example")
    assert changed["updatedAt"] >= created["updatedAt"]
    assert (await client.get(f"{PROVIDERS}/{created['id']}")).json()["baseUrl"] == "https://drifted.example"
    sim.delete_out_of_band(created["id"])
    error(await client.get(f"{PROVIDERS}/{created['id']}"), 404)
    assert sim.count() == 3  # out-of-band changes are not requests


# ----------------------------------------------------------------------------- contract


async def test_contract_catches_an_invalid_request(sim: NgrokSimulator, client: httpx.AsyncClient) -> None:
    # ngrok ignores unknown fields, so this typo succeeds upstream; the contract check catches it.
    response = await client.post(PROVIDERS, json=body(modles=[{"modelId": "x"}]))
    assert response.status_code == 201
    violations, sim.contract_violations[:] = list(sim.contract_violations), []
    assert len(violations) == 1
    assert violations[0].startswith("POST /providers request:") and "modles" in violations[0]


async def test_contract_catches_an_invalid_response(sim: NgrokSimulator, client: httpx.AsyncClient) -> None:
    created = await create(client)
    sim.modify_out_of_band(created["id"], createdAt="yesterday", apiKey="leaked")
    assert (await client.get(f"{PROVIDERS}/{created['id']}")).status_code == 200
    violations, sim.contract_violations[:] = list(sim.contract_violations), []
    assert len(violations) == 1
    assert "-> 200 response" in violations[0] and "date-time" in violations[0] and "apiKey" in violations[0]


async def test_contract_checks_error_bodies(sim: NgrokSimulator) -> None:
    assert sim.contract_checker is not None
    req = ContractRequest("GET", "/providers/aigp_x", headers={"Authorization": "Bearer k"})
    good = {"statusCode": 404, "msg": "Resource not found", "details": {}}
    assert sim.contract_checker.check_response(req, ContractResponse(404, json.dumps(good).encode())) == []
    # The spec documents a default error response, so snake_case (api.ngrok.com's style) is caught.
    bad = {"status_code": 404, "msg": "Resource not found", "details": {}}
    assert sim.contract_checker.check_response(req, ContractResponse(404, json.dumps(bad).encode())) != []
