"""A self-hosted model registry (OpenMined Syft Space), ``<server>/api/v1/models``."""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

from aigw_operator.upstreams.http import InvalidSpec, NotFound, UpstreamClient

MODELS = "/models/"
MODEL = "/models/{name}"
TYPES = "/models/types/"


class ConnectedEndpoint(BaseModel):
    id: str
    name: str | None = None
    slug: str | None = None


class RegistryModel(BaseModel):
    model_config = ConfigDict(extra="ignore", protected_namespaces=())

    id: str
    name: str
    dtype: str
    # Not in the registry's answers: the tenant the client asked in (None: the default one).
    tenant: str | None = None
    # Holds the model's API key as stored: never copy it into status, Events or logs.
    configuration: dict[str, Any] = Field(default_factory=dict, repr=False)
    summary: str | None = ""
    tags: str | None = ""
    created_at: str | None = None
    updated_at: str | None = None
    connected_endpoints: list[ConnectedEndpoint] = Field(default_factory=list)

    def tag_set(self) -> set[str]:
        return {t.strip() for t in (self.tags or "").split(",") if t.strip()}


def new_client(base_url: str, *, transport: httpx.AsyncBaseTransport | None = None, **options: Any) -> UpstreamClient:
    return UpstreamClient(
        name="model-registry", base_url=base_url.rstrip("/"), auth_scheme="Bearer", transport=transport, **options
    )


class ModelRegistryClient:
    def __init__(self, http: UpstreamClient) -> None:
        self.http = http
        self._types: dict[str | None, dict[str, Any]] = {}

    @staticmethod
    def _headers(tenant: str | None) -> dict[str, str]:
        return {"X-Tenant-Name": tenant} if tenant else {}

    async def list(self, api_key: str | None, tenant: str | None) -> list[RegistryModel]:
        try:
            response = await self.http.request(
                "GET", MODELS, api_key=api_key, route=MODELS, headers=self._headers(tenant)
            )
        except NotFound as exc:
            # The collection itself is missing only when the tenant is: a spec error, not a blip.
            raise InvalidSpec(exc.upstream, exc.status, exc.message, method="GET", route=MODELS) from None
        return [RegistryModel.model_validate({**item, "tenant": tenant or None}) for item in response.json()]

    async def config_schema(self, api_key: str | None, tenant: str | None, dtype: str) -> dict[str, Any] | None:
        """The dtype's configuration schema; cached, since it changes only with the server's version."""
        if tenant not in self._types:
            response = await self.http.request(
                "GET", TYPES, api_key=api_key, route=TYPES, headers=self._headers(tenant)
            )
            body = response.json()
            items = body if isinstance(body, list) else body.get("types", body.get("items", []))
            self._types[tenant] = {
                str(item.get("dtype") or item.get("name") or item.get("type") or ""): item.get("config_schema") or {}
                for item in items
                if isinstance(item, dict)
            }
        return self._types[tenant].get(dtype)

    async def create(self, api_key: str | None, tenant: str | None, payload: dict[str, Any]) -> RegistryModel:
        response = await self.http.request(
            "POST", MODELS, api_key=api_key, route=MODELS, json=payload, headers=self._headers(tenant)
        )
        return RegistryModel.model_validate({**response.json(), "tenant": tenant or None})

    async def patch(self, api_key: str | None, tenant: str | None, name: str, changes: dict[str, Any]) -> RegistryModel:
        response = await self.http.request(
            "PATCH",
            f"/models/{name}",
            api_key=api_key,
            route=MODEL,
            json=changes,
            headers=self._headers(tenant),
            idempotent=True,
        )
        return RegistryModel.model_validate({**response.json(), "tenant": tenant or None})

    async def delete(self, api_key: str | None, tenant: str | None, name: str) -> None:
        await self.http.request(
            "DELETE", f"/models/{name}", api_key=api_key, route=MODEL, headers=self._headers(tenant)
        )
