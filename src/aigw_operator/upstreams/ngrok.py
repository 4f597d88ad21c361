"""ngrok AI Gateway providers API (``https://api.ngrok.ai/providers``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field

from aigw_operator.upstreams.http import UpstreamClient

PROVIDERS = "/providers"
PROVIDER = "/providers/{id}"
KEYS = "/provider-keys"
KEY = "/provider-keys/{id}"
ROTATE = "/provider-keys/{id}/rotate"
PAGE_SIZE = 100  # the API's maximum


class Ref(BaseModel):
    id: str
    uri: str | None = None


class SupportedParam(BaseModel):
    name: str


class ApiSurface(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    format: str
    surface: str | None = None
    supported_params: list[SupportedParam] | None = Field(default=None, alias="supportedParams")


class ProviderModel(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    id: str | None = None
    model_id: str = Field(alias="modelId")


class Provider(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    id: str
    uri: str | None = None
    provider_id: str = Field(alias="providerId")
    name: str
    base_url: str = Field(alias="baseUrl")
    metadata: str | None = None
    created_at: str | None = Field(default=None, alias="createdAt")
    updated_at: str | None = Field(default=None, alias="updatedAt")
    created_by: Ref | None = Field(default=None, alias="createdBy")
    last_updated_by: Ref | None = Field(default=None, alias="lastUpdatedBy")
    supported_api_surfaces: list[ApiSurface] | None = Field(default=None, alias="supportedApiSurfaces")
    models: list[ProviderModel] | None = None


class ProviderKey(BaseModel):
    """A provider key's metadata; the API never returns its value."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    id: str
    name: str
    provider_id: str = Field(alias="providerId")
    updated_at: str | None = Field(default=None, alias="updatedAt")


def new_client(base_url: str, *, transport: httpx.AsyncBaseTransport | None = None, **options: Any) -> UpstreamClient:
    return UpstreamClient(name="ngrok", base_url=base_url, auth_scheme="Bearer", transport=transport, **options)


class NgrokClient:
    def __init__(self, http: UpstreamClient) -> None:
        self.http = http

    async def get(self, api_key: str, provider_id: str) -> Provider:
        response = await self.http.request("GET", f"{PROVIDERS}/{provider_id}", api_key=api_key, route=PROVIDER)
        return Provider.model_validate(response.json())

    async def list(self, api_key: str) -> AsyncIterator[Provider]:
        async for item in self._pages(api_key, PROVIDERS, "aiGatewayProviders", {}):
            yield Provider.model_validate(item)

    async def _pages(
        self, api_key: str, route: str, items: str, query: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        path = route
        params: dict[str, Any] | None = {"limit": PAGE_SIZE, **query}
        while True:
            response = await self.http.request("GET", path, api_key=api_key, route=route, params=params)
            page = response.json()
            for item in page.get(items) or []:
                yield item
            next_uri = page.get("nextPageUri")
            if not next_uri:
                return
            # Follow only the path and query: the key must never go to a host other than ours.
            parts = urlsplit(next_uri)
            path = f"{parts.path}?{parts.query}" if parts.query else parts.path
            params = None

    async def create(self, api_key: str, payload: dict[str, Any]) -> Provider:
        response = await self.http.request("POST", PROVIDERS, api_key=api_key, route=PROVIDERS, json=payload)
        return Provider.model_validate(response.json())

    async def patch(self, api_key: str, provider_id: str, changes: dict[str, Any]) -> Provider:
        # Every field is a full replacement, so repeating the PATCH is harmless.
        response = await self.http.request(
            "PATCH", f"{PROVIDERS}/{provider_id}", api_key=api_key, route=PROVIDER, json=changes, idempotent=True
        )
        return Provider.model_validate(response.json())

    async def delete(self, api_key: str, provider_id: str) -> None:
        await self.http.request("DELETE", f"{PROVIDERS}/{provider_id}", api_key=api_key, route=PROVIDER)

    async def list_keys(self, api_key: str, provider_id: str) -> dict[str, ProviderKey]:
        pages = self._pages(api_key, KEYS, "aiGatewayProviderKeys", {"provider": provider_id})
        keys = [ProviderKey.model_validate(item) async for item in pages]
        return {key.id: key for key in keys}

    async def create_key(self, api_key: str, provider_id: str, name: str, value: str) -> ProviderKey:
        payload = {"providerId": provider_id, "name": name, "value": value}
        response = await self.http.request("POST", KEYS, api_key=api_key, route=KEYS, json=payload)
        return ProviderKey.model_validate(response.json())

    async def rotate_key(self, api_key: str, key_id: str, name: str, value: str) -> ProviderKey:
        # Sets the value outright, so repeating it is harmless.
        response = await self.http.request(
            "POST",
            f"{KEYS}/{key_id}/rotate",
            api_key=api_key,
            route=ROTATE,
            json={"name": name, "value": value},
            idempotent=True,
        )
        return ProviderKey.model_validate(response.json())

    async def delete_key(self, api_key: str, key_id: str) -> None:
        await self.http.request("DELETE", f"{KEYS}/{key_id}", api_key=api_key, route=KEY)
