"""The model registry (Syft Space) simulator over real HTTP: behaviour, auth, tenants and faults."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from aigw_testbed.simulators import model_registry
from aigw_testbed.simulators.base import redact_headers
from aigw_testbed.simulators.model_registry import OPENAI_CONFIG_SCHEMA, ModelRegistrySimulator, iso8601

ADMIN = "admin-key-5e2f"
MODELS = "/api/v1/models/"
MODEL = "/api/v1/models/{name}"
CONFIG = {"api_key": "sk-secret", "model": "gpt-4", "base_url": "https://api.openai.com/v1"}


def body(name: Any = "gpt-4-assistant", **extra: Any) -> dict[str, Any]:
    return {"name": name, "dtype": "openai", "configuration": CONFIG, **extra}


class Clock:
    """Advances one second per reading, so every write gets a distinct, ordered timestamp."""

    def __init__(self) -> None:
        self.now = datetime(2024, 3, 15, 10, 30, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@pytest.fixture
async def sim() -> AsyncIterator[ModelRegistrySimulator]:
    async with ModelRegistrySimulator(ADMIN, clock=Clock()) as simulator:
        yield simulator


@pytest.fixture
async def client(sim: ModelRegistrySimulator) -> AsyncIterator[httpx.AsyncClient]:
    # verify=False: no TLS here, and building the default SSL context costs ~0.1 s per client.
    async with httpx.AsyncClient(base_url=sim.url, headers={"Authorization": f"Bearer {ADMIN}"}, verify=False) as c:
        yield c


async def create(client: httpx.AsyncClient, **kwargs: Any) -> dict[str, Any]:
    response = await client.post(MODELS, json=body(**kwargs))
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


# ----------------------------------------------------------------------------- CRUD


async def test_create_get_list_delete(sim: ModelRegistrySimulator, client: httpx.AsyncClient) -> None:
    created = await create(client, summary="Support bot", tags="openai,gpt-4")
    assert list(created) == ["id", "name", "dtype", "configuration", "summary", "tags", "created_at", "updated_at"]
    assert created["name"] == "gpt-4-assistant" and created["dtype"] == "openai"
    assert created["configuration"] == CONFIG  # api_key returned as stored
    assert created["summary"] == "Support bot" and created["tags"] == "openai,gpt-4"
    assert created["created_at"] == created["updated_at"] == "2024-03-15T10:30:01Z"

    got = await client.get("/api/v1/models/gpt-4-assistant")
    assert got.status_code == 200
    assert got.json() == {**created, "connected_endpoints": []}
    assert sim.models()["gpt-4-assistant"] == got.json()

    deleted = await client.delete("/api/v1/models/gpt-4-assistant")
    assert deleted.status_code == 200
    assert deleted.json() == {"message": "Successfully deleted model 'gpt-4-assistant'"}
    assert sim.models() == {}
    again = await client.delete("/api/v1/models/gpt-4-assistant")
    assert again.status_code == 404 and again.json() == {"detail": "Model 'gpt-4-assistant' not found"}


async def test_defaults_and_unvalidated_configuration(client: httpx.AsyncClient) -> None:
    created = await create(client, configuration={"no_api_key": True})
    assert created["summary"] == "" and created["tags"] == ""
    assert created["configuration"] == {"no_api_key": True}


async def test_duplicate_name_is_409(sim: ModelRegistrySimulator, client: httpx.AsyncClient) -> None:
    first = await create(client)
    response = await client.post(MODELS, json=body(summary="other"))
    assert response.status_code == 409
    assert response.json() == {"detail": "Model 'gpt-4-assistant' already exists"}
    assert sim.models()["gpt-4-assistant"]["id"] == first["id"]


async def test_unknown_dtype_is_400(sim: ModelRegistrySimulator, client: httpx.AsyncClient) -> None:
    response = await client.post(MODELS, json={**body(), "dtype": "anthropic"})
    assert response.status_code == 400
    assert response.json() == {"detail": "Model type 'anthropic' not found"}
    assert sim.models() == {}


async def test_list_carries_connected_endpoints(sim: ModelRegistrySimulator, client: httpx.AsyncClient) -> None:
    a = await create(client, name="a")
    await create(client, name="b")
    link = sim.connect_endpoint("a", "Support Assistant", "support-assistant")
    assert set(link) == {"id", "name", "slug"}
    listed = (await client.get(MODELS)).json()
    assert [m["name"] for m in listed] == ["a", "b"]
    # The list item has no updated_at; it has the endpoints.
    assert list(listed[0]) == [
        "id",
        "name",
        "dtype",
        "configuration",
        "summary",
        "tags",
        "created_at",
        "connected_endpoints",
    ]
    assert listed[0]["connected_endpoints"] == [link] and listed[1]["connected_endpoints"] == []
    got = (await client.get("/api/v1/models/a")).json()
    assert got["connected_endpoints"] == [link]
    assert got["updated_at"] == a["updated_at"]  # linking does not touch the model row
    sim.disconnect_endpoint("a", "support-assistant")
    assert (await client.get("/api/v1/models/a")).json()["connected_endpoints"] == []


async def test_get_unknown_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/models/nope")
    assert response.status_code == 404 and response.json() == {"detail": "Model 'nope' not found"}
    # Without the slash "types" is a model name, exactly as Starlette routes it.
    assert (await client.get("/api/v1/models/types")).json() == {"detail": "Model 'types' not found"}


# ----------------------------------------------------------------------------- validation


async def test_422_detail_lists(sim: ModelRegistrySimulator, client: httpx.AsyncClient) -> None:
    missing = await client.post(MODELS, json={"dtype": "openai"})
    assert missing.status_code == 422
    detail = missing.json()["detail"]
    assert [(e["loc"], e["type"], e["msg"]) for e in detail] == [
        (["body", "name"], "missing", "Field required"),
        (["body", "configuration"], "missing", "Field required"),
    ]

    wrong = await client.post(MODELS, json={**body(name=5), "configuration": "x", "tags": ["a"]})
    assert [(e["loc"], e["type"]) for e in wrong.json()["detail"]] == [
        (["body", "name"], "string_type"),
        (["body", "configuration"], "dict_type"),
        (["body", "tags"], "string_type"),
    ]
    assert wrong.json()["detail"][0]["input"] == 5

    not_object = await client.post(MODELS, json=[1])
    assert not_object.status_code == 422
    assert not_object.json()["detail"][0]["loc"] == ["body"]
    assert (await client.post(MODELS)).json()["detail"][0] == {
        "type": "missing",
        "loc": ["body"],
        "msg": "Field required",
        "input": None,
    }

    garbage = await client.post(MODELS, content=b'{"name": ', headers={"Content-Type": "application/json"})
    assert garbage.status_code == 422
    assert garbage.json()["detail"][0]["type"] == "json_invalid"
    assert garbage.json()["detail"][0]["loc"] == ["body", 9]
    # Validation runs before the dtype check, and nothing is stored.
    assert (await client.post(MODELS, json={"dtype": "nope"})).status_code == 422
    assert sim.models() == {}


# ----------------------------------------------------------------------------- PATCH


async def test_patch_name_summary_tags(sim: ModelRegistrySimulator, client: httpx.AsyncClient) -> None:
    created = await create(client)
    sim.connect_endpoint("gpt-4-assistant", "Support", "support")
    response = await client.patch(
        "/api/v1/models/gpt-4-assistant", json={"summary": "Support bot", "tags": "openai,support"}
    )
    assert response.status_code == 200
    patched = response.json()
    assert patched["summary"] == "Support bot" and patched["tags"] == "openai,support"
    assert patched["id"] == created["id"] and patched["created_at"] == created["created_at"]
    assert patched["updated_at"] > created["updated_at"]
    assert "connected_endpoints" not in patched  # response_model=ModelResponse filters them

    renamed = await client.patch("/api/v1/models/gpt-4-assistant", json={"name": "support-bot"})
    assert renamed.status_code == 200 and renamed.json()["name"] == "support-bot"
    assert (await client.get("/api/v1/models/gpt-4-assistant")).status_code == 404
    got = (await client.get("/api/v1/models/support-bot")).json()
    assert got["id"] == created["id"] and got["summary"] == "Support bot"
    assert [e["slug"] for e in got["connected_endpoints"]] == ["support"]

    sim.patch_echoes_endpoints = True
    echoed = await client.patch("/api/v1/models/support-bot", json={"tags": "x"})
    assert [e["slug"] for e in echoed.json()["connected_endpoints"]] == ["support"]


async def test_patch_without_fields_is_422(client: httpx.AsyncClient) -> None:
    await create(client)
    for payload in ({}, {"name": None}, {"configuration": {"api_key": "new"}}):
        response = await client.patch("/api/v1/models/gpt-4-assistant", json=payload)
        assert response.status_code == 422, payload
        [error] = response.json()["detail"]
        assert error["type"] == "value_error" and error["loc"] == ["body"]
        assert "At least one field" in error["msg"]
    # Body validation precedes the lookup: an empty PATCH of a missing model is 422 too.
    assert (await client.patch("/api/v1/models/nope", json={})).status_code == 422
    assert (await client.patch("/api/v1/models/nope", json={"tags": "x"})).status_code == 404
    bad = await client.patch("/api/v1/models/gpt-4-assistant", json={"summary": 3})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "summary"]


async def test_rename_onto_taken_name_is_409(sim: ModelRegistrySimulator, client: httpx.AsyncClient) -> None:
    await create(client, name="a")
    await create(client, name="b")
    response = await client.patch("/api/v1/models/a", json={"name": "b", "summary": "lost"})
    assert response.status_code == 409
    assert response.json() == {"detail": "Model 'b' already exists for this tenant"}
    assert sim.models()["a"]["summary"] == ""  # nothing applied
    # Renaming onto its own name is not a conflict.
    assert (await client.patch("/api/v1/models/a", json={"name": "a"})).status_code == 200


async def test_patch_ignores_immutable_fields(sim: ModelRegistrySimulator, client: httpx.AsyncClient) -> None:
    await create(client)
    response = await client.patch(
        "/api/v1/models/gpt-4-assistant",
        json={"summary": "s", "dtype": "other", "configuration": {"api_key": "rotated"}, "id": "x"},
    )
    assert response.status_code == 200
    assert response.json()["configuration"] == CONFIG and response.json()["dtype"] == "openai"
    assert sim.models()["gpt-4-assistant"]["configuration"] == CONFIG


# ----------------------------------------------------------------------------- types, routing


async def test_types_endpoint(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/models/types/")
    assert response.status_code == 200
    [openai] = response.json()
    assert openai["name"] == "openai" and openai["enabled"] is True
    assert set(openai) == {"name", "description", "config_schema", "icon", "enabled"}
    schema = openai["config_schema"]
    assert schema == OPENAI_CONFIG_SCHEMA
    assert schema["required"] == ["api_key"]
    assert schema["properties"]["model"]["default"] == "gpt-3.5-turbo"
    assert schema["properties"]["base_url"]["default"] == "https://api.openai.com/v1"
    assert schema["properties"]["system_prompt"]["default"] == ""
    assert (await client.get("/api/v1/models/types/openai")).json() == openai
    assert (await client.get("/api/v1/models/types/openai/schema")).json() == schema
    missing = await client.get("/api/v1/models/types/anthropic")
    assert missing.status_code == 404 and missing.json() == {"detail": "Model type 'anthropic' not found"}


async def test_trailing_slash_redirects_and_405(sim: ModelRegistrySimulator, client: httpx.AsyncClient) -> None:
    bare = await client.post("/api/v1/models", json=body())
    assert bare.status_code == 307
    assert bare.headers["Location"] == f"{sim.url}/api/v1/models/"
    assert sim.models() == {}
    assert (await client.get("/api/v1/models?x=1")).headers["Location"] == f"{sim.url}/api/v1/models/?x=1"
    await create(client)
    slashed = await client.get("/api/v1/models/gpt-4-assistant/")
    assert slashed.status_code == 307 and slashed.headers["Location"].endswith("/api/v1/models/gpt-4-assistant")
    assert (await client.get("/api/v1/models", follow_redirects=True)).status_code == 200

    put = await client.put("/api/v1/models/gpt-4-assistant", json=body())
    assert put.status_code == 405 and put.json() == {"detail": "Method Not Allowed"}
    assert put.headers["Allow"] == "GET, PATCH, DELETE"
    assert (await client.delete("/api/v1/models/types/")).status_code == 405
    assert (await client.delete(MODELS)).status_code == 405
    unknown = await client.get("/api/v2/models/")
    assert unknown.status_code == 404 and unknown.json() == {"detail": "Not Found"}


# ----------------------------------------------------------------------------- auth


async def test_auth(sim: ModelRegistrySimulator) -> None:
    required = {"detail": "Admin API key required"}
    async with httpx.AsyncClient(base_url=sim.url, verify=False) as c:
        for headers in (
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": ADMIN},
            {"Authorization": f"bearer {ADMIN}"},
        ):
            response = await c.get(MODELS, headers=headers)
            assert response.status_code == 401, headers
            assert response.json() == required
        # Auth comes before routing-level answers.
        assert (await c.get("/api/v1/models")).status_code == 401
        assert (await c.get(MODELS, headers={"Authorization": f"Bearer {ADMIN}"})).status_code == 200

        sim.rotate_admin_key("new-key")
        assert (await c.get(MODELS, headers={"Authorization": f"Bearer {ADMIN}"})).status_code == 401
        assert (await c.get(MODELS, headers={"Authorization": "Bearer new-key"})).status_code == 200
        sim.rotate_admin_key(None)
        assert (await c.get(MODELS)).status_code == 200


async def test_no_admin_key_means_no_auth() -> None:
    async with ModelRegistrySimulator() as sim, httpx.AsyncClient(base_url=sim.url, verify=False) as c:
        assert (await c.post(MODELS, json=body())).status_code == 201
        assert (await c.get(MODELS, headers={"Authorization": "Bearer anything"})).status_code == 200
        # Single-tenant servers ignore the tenant header.
        assert len((await c.get(MODELS, headers={"X-Tenant-Name": "whoever"})).json()) == 1
        assert sim.requests[-1].key is None


# ----------------------------------------------------------------------------- tenants


async def test_tenants() -> None:
    async with (
        ModelRegistrySimulator(ADMIN, tenants=["acme", "globex"]) as sim,
        httpx.AsyncClient(base_url=sim.url, headers={"Authorization": f"Bearer {ADMIN}"}, verify=False) as c,
    ):
        missing = await c.get(MODELS)
        assert missing.status_code == 400 and "X-Tenant-Name" in missing.json()["detail"]
        assert (await c.post(MODELS, json=body())).status_code == 400
        unknown = await c.get(MODELS, headers={"X-Tenant-Name": "initech"})
        assert unknown.status_code == 404 and unknown.json() == {"detail": "Tenant 'initech' not found"}
        # The types routes are tenant-agnostic; an unknown tenant is refused everywhere.
        assert (await c.get("/api/v1/models/types/")).status_code == 200
        assert (await c.get("/api/v1/models/types/", headers={"X-Tenant-Name": "initech"})).status_code == 404

        acme, globex = {"X-Tenant-Name": "acme"}, {"X-Tenant-Name": "globex"}
        a = await c.post(MODELS, json=body(summary="acme's"), headers=acme)
        assert a.status_code == 201
        g = await c.post(MODELS, json=body(summary="globex's"), headers=globex)
        assert g.status_code == 201 and g.json()["id"] != a.json()["id"]
        assert (await c.post(MODELS, json=body(), headers=acme)).status_code == 409

        assert (await c.get("/api/v1/models/gpt-4-assistant", headers=acme)).json()["summary"] == "acme's"
        assert (await c.delete("/api/v1/models/gpt-4-assistant", headers=globex)).status_code == 200
        assert (await c.get(MODELS, headers=globex)).json() == []
        assert [m["summary"] for m in (await c.get(MODELS, headers=acme)).json()] == ["acme's"]
        assert list(sim.models("acme")) == ["gpt-4-assistant"] and sim.models("globex") == {}
        # The default tenant exists and is addressable, and holds nothing here.
        assert (await c.get(MODELS, headers={"X-Tenant-Name": "root"})).json() == []
        assert sim.models() == {}

        sim.modify_out_of_band("gpt-4-assistant", tenant="acme", summary="drifted")
        assert (await c.get("/api/v1/models/gpt-4-assistant", headers=acme)).json()["summary"] == "drifted"
        with pytest.raises(KeyError):
            sim.models("initech")


# ----------------------------------------------------------------------------- faults, accounting, out of band


async def test_lost_response_still_creates(sim: ModelRegistrySimulator, client: httpx.AsyncClient) -> None:
    sim.faults.lose_next_response("POST")
    with pytest.raises(httpx.TransportError):
        await client.post(MODELS, json=body())
    assert list(sim.models()) == ["gpt-4-assistant"]
    assert sim.requests[-1].lost and sim.requests[-1].status == 201
    # The retry finds the name taken: adopt by GET, as the operator must.
    assert (await client.post(MODELS, json=body())).status_code == 409
    assert (await client.get("/api/v1/models/gpt-4-assistant")).status_code == 200


async def test_rate_limit_and_failures(sim: ModelRegistrySimulator, client: httpx.AsyncClient) -> None:
    sim.faults.rate_limit_burst(1, retry_after=7)
    throttled = await client.post(MODELS, json=body())
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "7"
    assert set(throttled.json()) == {"detail"}
    sim.faults.fail_next(status=503)
    failed = await client.post(MODELS, json=body())
    assert failed.status_code == 503 and set(failed.json()) == {"detail"}
    assert sim.models() == {}
    assert (await client.post(MODELS, json=body())).status_code == 201


async def test_accounting_and_out_of_band(sim: ModelRegistrySimulator, client: httpx.AsyncClient) -> None:
    created = await create(client)
    await client.get(MODELS)
    await client.patch("/api/v1/models/gpt-4-assistant", json={"tags": "t"})
    assert sim.count() == 3 and sim.count("GET", MODELS) == 1 and sim.count("PATCH", MODEL) == 1
    assert sim.requests[0].key == ADMIN

    changed = sim.modify_out_of_band("gpt-4-assistant", configuration={"api_key": "other"})
    assert changed["updated_at"] > created["updated_at"]
    got = (await client.get("/api/v1/models/gpt-4-assistant")).json()
    assert got["configuration"] == {"api_key": "other"}
    sim.modify_out_of_band("gpt-4-assistant", name="renamed")
    assert (await client.get("/api/v1/models/renamed")).status_code == 200
    removed = sim.delete_out_of_band("renamed")
    assert removed["id"] == created["id"]
    assert (await client.get("/api/v1/models/renamed")).status_code == 404
    with pytest.raises(KeyError):
        sim.delete_out_of_band("renamed")


def test_iso8601() -> None:
    assert iso8601(datetime(2024, 3, 15, 10, 30, tzinfo=UTC)) == "2024-03-15T10:30:00Z"
    assert iso8601(datetime(2024, 3, 15, 10, 30, 0, 1500, tzinfo=UTC)) == "2024-03-15T10:30:00.001500Z"


# ----------------------------------------------------------------------------- contract (our OpenAPI document)


@pytest.fixture
async def checked() -> AsyncIterator[tuple[ModelRegistrySimulator, httpx.AsyncClient]]:
    async with (
        ModelRegistrySimulator(ADMIN, tenants=["acme"], clock=Clock(), contract=True) as simulator,
        httpx.AsyncClient(
            base_url=simulator.url, headers={"Authorization": f"Bearer {ADMIN}", "X-Tenant-Name": "acme"}, verify=False
        ) as c,
    ):
        yield simulator, c


async def test_contract_accepts_every_documented_exchange(
    checked: tuple[ModelRegistrySimulator, httpx.AsyncClient],
) -> None:
    """Every route and every documented answer (201/200, 400, 401, 404, 409, 422) agrees with
    our spec, so the violations the other tests provoke are the malformations, not noise."""
    sim, c = checked
    assert sim.contract_checker is not None
    await create(c, summary="s", tags="a,b")
    sim.connect_endpoint("gpt-4-assistant", "Support", "support", tenant="acme")
    for method, path, payload, status in [
        ("GET", MODELS, None, 200),
        ("GET", "/api/v1/models/gpt-4-assistant", None, 200),
        ("PATCH", "/api/v1/models/gpt-4-assistant", {"summary": "t", "tags": None}, 200),
        ("PATCH", "/api/v1/models/gpt-4-assistant", {}, 422),
        ("POST", MODELS, body(), 409),
        ("POST", MODELS, {**body("x"), "dtype": "anthropic"}, 400),
        ("POST", MODELS, {"dtype": "openai"}, 422),
        ("GET", "/api/v1/models/missing", None, 404),
        ("GET", "/api/v1/models/types/", None, 200),
        ("GET", "/api/v1/models/types/openai", None, 200),
        ("GET", "/api/v1/models/types/openai/schema", None, 200),
        ("GET", "/api/v1/models/types/nope", None, 404),
        ("DELETE", "/api/v1/models/gpt-4-assistant", None, 200),
    ]:
        response = await c.request(method, path, json=payload)
        assert response.status_code == status, (method, path, response.text)
    assert (await c.get(MODELS, headers={"Authorization": "Bearer wrong"})).status_code == 401
    assert (await c.get(MODELS, headers={"X-Tenant-Name": ""})).status_code == 400
    assert sim.contract_violations == []


async def test_contract_catches_malformed_requests(
    checked: tuple[ModelRegistrySimulator, httpx.AsyncClient],
) -> None:
    """Requests the server accepts (it validates little) but the API does not allow."""
    sim, c = checked
    # A misspelt configuration field: the server stores it, the model would have no key.
    assert (await c.post(MODELS, json=body(configuration={"apiKey": "sk-x"}))).status_code == 201
    [misspelt] = sim.contract_violations
    assert misspelt.startswith("POST /api/v1/models/ request:")
    assert "'api_key' is a required property" in misspelt and "'apiKey' was unexpected" in misspelt
    # An immutable field in a PATCH is ignored by the server, so a client sending it believes
    # in a change that never happens.
    sim.contract_violations.clear()
    patched = await c.patch("/api/v1/models/gpt-4-assistant", json={"summary": "s", "configuration": {}})
    assert patched.status_code == 200
    [immutable] = sim.contract_violations
    assert immutable.startswith("PATCH /api/v1/models/gpt-4-assistant request:") and "'configuration'" in immutable
    # A method (and a spelling of the path) the API does not serve is reported too.
    sim.contract_violations.clear()
    assert (await c.put(MODELS, json=body())).status_code == 405
    assert (await c.get("/api/v1/models")).status_code == 307
    assert [v.split(":")[0] for v in sim.contract_violations] == [
        "PUT /api/v1/models/ -> 405 response",
        "GET /api/v1/models -> 307 response",
    ]


async def test_contract_catches_malformed_responses(
    checked: tuple[ModelRegistrySimulator, httpx.AsyncClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    sim, c = checked
    await create(c)
    assert sim.contract_violations == []
    # Stored data the API cannot return: a null summary and a timestamp that is not RFC 3339.
    sim.modify_out_of_band("gpt-4-assistant", tenant="acme", summary=None, created_at="yesterday")
    assert (await c.get("/api/v1/models/gpt-4-assistant")).status_code == 200
    [bad] = sim.contract_violations
    assert bad.startswith("GET /api/v1/models/gpt-4-assistant -> 200 response:")
    assert "summary: None is not of type 'string'" in bad and "'yesterday' is not a 'date-time'" in bad
    # A simulator bug: the create answer loses a required field.
    sim.contract_violations.clear()
    fields = tuple(f for f in model_registry._RESPONSE_FIELDS if f != "updated_at")
    monkeypatch.setattr(model_registry, "_RESPONSE_FIELDS", fields)
    assert (await c.post(MODELS, json=body("other"))).status_code == 201
    [missing] = sim.contract_violations
    assert missing.startswith("POST /api/v1/models/ -> 201 response:") and "'updated_at' is a required" in missing


async def test_request_log_redacts_credentials(sim: ModelRegistrySimulator, client: httpx.AsyncClient) -> None:
    """The log keeps the headers tests check (the tenant, the auth scheme), never a credential."""
    await client.get(MODELS, headers={"X-Tenant-Name": "acme", "X-Api-Key": ADMIN})
    [record] = sim.requests
    assert record.header("x-tenant-name") == "acme" and record.header("X-TENANT-NAME") == "acme"
    assert record.header("Authorization") == "Bearer <redacted>"
    assert record.header("X-Api-Key") == "<redacted>"
    assert ADMIN not in str(record.headers)
    assert record.header("X-Absent") is None
    assert redact_headers({"Authorization": "opaque-token", "Cookie": "s=1"}) == {
        "authorization": "<redacted>",
        "cookie": "<redacted>",
    }
