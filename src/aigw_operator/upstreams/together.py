"""Together AI dedicated endpoints (``https://api.together.ai/v1/endpoints``)."""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict

from aigw_operator.upstreams.http import UpstreamClient

ENDPOINTS = "/endpoints"
ENDPOINT = "/endpoints/{id}"
HARDWARE = "/hardware"


class Autoscaling(BaseModel):
    min_replicas: int
    max_replicas: int


class Endpoint(BaseModel):
    """A dedicated endpoint. List items lack display_name, hardware and autoscaling."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())

    id: str
    name: str | None = None
    display_name: str | None = None
    model: str | None = None
    hardware: str | None = None
    type: str | None = None
    owner: str | None = None
    state: str
    autoscaling: Autoscaling | None = None
    created_at: str | None = None


def new_client(base_url: str, *, transport: httpx.AsyncBaseTransport | None = None, **options: Any) -> UpstreamClient:
    return UpstreamClient(
        name="together",
        base_url=base_url,
        auth_scheme="Bearer",
        transport=transport,
        **options,
    )


class TogetherClient:
    def __init__(self, http: UpstreamClient) -> None:
        self.http = http

    async def get(self, api_key: str, endpoint_id: str) -> Endpoint:
        response = await self.http.request("GET", f"{ENDPOINTS}/{endpoint_id}", api_key=api_key, route=ENDPOINT)
        return Endpoint.model_validate(response.json())

    async def list(self, api_key: str) -> list[Endpoint]:
        response = await self.http.request(
            "GET", ENDPOINTS, api_key=api_key, route=ENDPOINTS, params={"type": "dedicated", "mine": "true"}
        )
        return [Endpoint.model_validate(item) for item in response.json().get("data") or []]

    async def hardware(self, api_key: str, model: str) -> dict[str, str]:
        """Hardware id -> availability status for ``model``."""
        response = await self.http.request("GET", HARDWARE, api_key=api_key, route=HARDWARE, params={"model": model})
        options: dict[str, str] = {}
        for item in response.json().get("data") or []:
            availability = item.get("availability") or {}
            options[str(item.get("id"))] = str(availability.get("status", "available"))
        return options

    async def create(self, api_key: str, payload: dict[str, Any]) -> Endpoint:
        # Never retried: a second POST is a second billed endpoint.
        response = await self.http.request("POST", ENDPOINTS, api_key=api_key, route=ENDPOINTS, json=payload)
        return Endpoint.model_validate(response.json())

    async def patch(self, api_key: str, endpoint_id: str, changes: dict[str, Any]) -> Endpoint:
        response = await self.http.request(
            "PATCH", f"{ENDPOINTS}/{endpoint_id}", api_key=api_key, route=ENDPOINT, json=changes, idempotent=True
        )
        return Endpoint.model_validate(response.json())

    async def delete(self, api_key: str, endpoint_id: str) -> None:
        await self.http.request("DELETE", f"{ENDPOINTS}/{endpoint_id}", api_key=api_key, route=ENDPOINT)
