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


def new_client(base_url: str, *, transport: httpx.AsyncBaseTransport | None = None, **options: Any) -> UpstreamClient:
    return UpstreamClient(name="ngrok", base_url=base_url, auth_scheme="Bearer", transport=transport, **options)


class NgrokClient:
    def __init__(self, http: UpstreamClient) -> None:
        self.http = http

    async def get(self, api_key: str, provider_id: str) -> Provider:
        response = await self.http.request("GET", f"{PROVIDERS}/{provider_id}", api_key=api_key, route=PROVIDER)
        return Provider.model_validate(response.json())

    async def list(self, api_key: str) -> AsyncIterator[Provider]:
        path = PROVIDERS
        params: dict[str, Any] | None = {"limit": PAGE_SIZE}
        while True:
            response = await self.http.request("GET", path, api_key=api_key, route=PROVIDERS, params=params)
            page = response.json()
            for item in page.get("aiGatewayProviders") or []:
                yield Provider.model_validate(item)
            next_uri = page.get("nextPageUri")
            if not next_uri:
                return
            # Follow only the path and query: the key must never go to a host other than ours.
            parts = urlsplit(next_uri)
            path = f"{parts.path}?{parts.query}" if parts.query else parts.path
            params = None

    async def find_by_provider_id(self, api_key: str, provider_id: str) -> Provider | None:
        async for provider in self.list(api_key):
            if provider.provider_id == provider_id:
                return provider
        return None

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
