"""Baseten Frontier Gateway endpoints API (``/v1/gateway/endpoints``)."""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict

from aigw_operator.upstreams.http import UpstreamClient

ENDPOINTS = "/v1/gateway/endpoints"
ENDPOINT = "/v1/gateway/endpoints/{id}"
SECRETS = "/v1/secrets"
SECRET = "/v1/secrets/{name}"
PAGE_SIZE = 1000  # the API's maximum; one call covers most installations
PRODUCTION = "production"


class Target(BaseModel):
    model_config = ConfigDict(extra="ignore")

    provider: str
    model_id: str | None = None
    environment_name: str | None = None
    secret_id: str | None = None
    target_model: str | None = None

    def normalised(self) -> dict[str, Any]:
        """The target as the API compares it: unset fields dropped, production implied."""
        data = self.model_dump(exclude_none=True)
        if data.get("environment_name") == PRODUCTION:
            del data["environment_name"]
        return data


class Endpoint(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    slug: str
    region: Literal["UNRESTRICTED", "EU"] | str | None = None
    targets: list[Target]
    created_at: str | None = None
    updated_at: str | None = None


class Secret(BaseModel):
    """A Baseten secret's metadata; the API never returns values."""

    model_config = ConfigDict(extra="ignore")

    id: str
    name: str
    created_at: str | None = None


def _retry_after(response: httpx.Response) -> float | None:
    try:
        value = response.json().get("retry_after")
    except (ValueError, AttributeError):
        return None
    return float(value) if isinstance(value, int | float) else None


def new_client(base_url: str, *, transport: httpx.AsyncBaseTransport | None = None, **options: Any) -> UpstreamClient:
    return UpstreamClient(
        name="baseten",
        base_url=base_url,
        auth_scheme="Api-Key",
        retry_after_from_body=_retry_after,
        transport=transport,
        **options,
    )


class BasetenClient:
    def __init__(self, http: UpstreamClient) -> None:
        self.http = http

    async def get(self, api_key: str, endpoint_id: str) -> Endpoint:
        response = await self.http.request("GET", f"{ENDPOINTS}/{endpoint_id}", api_key=api_key, route=ENDPOINT)
        return Endpoint.model_validate(response.json())

    async def list(self, api_key: str) -> AsyncIterator[Endpoint]:
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": PAGE_SIZE}
            if cursor:
                params["cursor"] = cursor
            response = await self.http.request("GET", ENDPOINTS, api_key=api_key, route=ENDPOINTS, params=params)
            page = response.json()
            for item in page.get("items", []):
                yield Endpoint.model_validate(item)
            pagination = page.get("pagination") or {}
            cursor = pagination.get("cursor")
            if not pagination.get("has_more") or not cursor:
                return

    async def find_by_slug(self, api_key: str, slug: str) -> Endpoint | None:
        async for endpoint in self.list(api_key):
            if endpoint.slug == slug:
                return endpoint
        return None

    async def create(self, api_key: str, payload: dict[str, Any]) -> Endpoint:
        response = await self.http.request("POST", ENDPOINTS, api_key=api_key, route=ENDPOINTS, json=payload)
        return Endpoint.model_validate(response.json())

    async def patch(self, api_key: str, endpoint_id: str, changes: dict[str, Any]) -> Endpoint:
        # Both fields are full replacements, so repeating the PATCH is harmless.
        response = await self.http.request(
            "PATCH", f"{ENDPOINTS}/{endpoint_id}", api_key=api_key, route=ENDPOINT, json=changes, idempotent=True
        )
        return Endpoint.model_validate(response.json())

    async def delete(self, api_key: str, endpoint_id: str) -> None:
        await self.http.request("DELETE", f"{ENDPOINTS}/{endpoint_id}", api_key=api_key, route=ENDPOINT)

    async def upsert_secret(self, api_key: str, name: str, value: str) -> Secret:
        # An upsert by name: repeating it stores the same value under the same id.
        response = await self.http.request(
            "POST", SECRETS, api_key=api_key, route=SECRETS, json={"name": name, "value": value}, idempotent=True
        )
        return Secret.model_validate(response.json())

    async def list_secrets(self, api_key: str) -> builtins.list[Secret]:
        response = await self.http.request("GET", SECRETS, api_key=api_key, route=SECRETS)
        return [Secret.model_validate(item) for item in response.json().get("secrets") or []]

    async def delete_secret(self, api_key: str, name: str) -> None:
        await self.http.request("DELETE", f"{SECRETS}/{name}", api_key=api_key, route=SECRET)
