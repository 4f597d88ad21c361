"""Provider: an ngrok AI Gateway provider (a model server reachable as ``providerId:modelId``)."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import Field

from aigw_operator.base.api import (
    AGE_COLUMN,
    READY_COLUMNS,
    CamelModel,
    CommonStatus,
    ConnectionDetailsTarget,
    DeletionPolicy,
    KindInfo,
    ManagementPolicy,
    PrinterColumn,
    SecretKeyRef,
    cel,
    connection_details_field,
    immutable,
    management_policy_field,
    validations,
)
from aigw_operator.engine.contract import Adapter, Event, KubeView, Readiness
from aigw_operator.engine.resource import unix_time
from aigw_operator.kube.credentials import SecretValue
from aigw_operator.upstreams.http import NotFound
from aigw_operator.upstreams.ngrok import NgrokClient, Provider, ProviderKey

ModelId = Annotated[str, Field(min_length=1, max_length=255)]

# https everywhere; plain http only to ngrok's private .internal endpoints.
BASE_URL_RULE = cel(
    "isURL(self) && url(self).getHostname() != '' && (url(self).getScheme() == 'https' || "
    "(url(self).getScheme() == 'http' && url(self).getHostname().endsWith('.internal')))",
    "baseUrl must be an https URL with a host (http is allowed only for ngrok .internal hosts)",
)


class SupportedParamSpec(CamelModel):
    """A request parameter the provider understands."""

    name: str = Field(min_length=1, max_length=255, description="Parameter name, e.g. temperature.")


class ApiSurfaceSpec(CamelModel):
    """An API the provider speaks."""

    format: str = Field(min_length=1, max_length=64, description="API format, e.g. openai or anthropic.")
    surface: str | None = Field(
        default=None, max_length=64, description="API surface, e.g. chat-completions, responses or messages."
    )
    supported_params: list[SupportedParamSpec] | None = Field(
        default=None, max_length=100, description="Parameters this surface supports."
    )

    def to_upstream(self) -> dict[str, Any]:
        data: dict[str, Any] = {"format": self.format}
        if self.surface is not None:
            data["surface"] = self.surface
        if self.supported_params is not None:
            data["supportedParams"] = [{"name": p.name} for p in self.supported_params]
        return data


class ProviderKeySpec(CamelModel):
    """A credential the gateway sends to the provider, kept in sync from a Kubernetes Secret."""

    name: str = Field(min_length=1, max_length=255, description="The key's label in ngrok; unique in this list.")
    secret_ref: SecretKeyRef = Field(
        description="Secret key (same namespace) holding the key's value. A change of the Secret rotates "
        "the key in ngrok."
    )


class ProviderSpec(CamelModel):
    """The desired ngrok AI Gateway provider."""

    provider_id: str = Field(
        min_length=1,
        max_length=255,
        pattern=r"^[^:\s]+$",
        description="Identifier used in model strings (providerId:modelId), unique in the ngrok account. Immutable.",
        json_schema_extra=immutable("providerId"),
    )
    name: str = Field(min_length=1, max_length=255, description="User-friendly label for the provider.")
    base_url: str = Field(
        min_length=1,
        max_length=2048,
        description="Base URL of the provider's API: https, or http for ngrok .internal hosts.",
        json_schema_extra=validations(BASE_URL_RULE),
    )
    metadata: str | None = Field(
        default=None, max_length=4096, description="Arbitrary metadata. Unset: whatever ngrok has is left alone."
    )
    supported_api_surfaces: list[ApiSurfaceSpec] | None = Field(
        default=None,
        max_length=32,
        description="API surfaces the provider supports. Unset: whatever ngrok has is left alone.",
    )
    models: list[ModelId] | None = Field(
        default=None,
        max_length=1000,
        description="Model ids served by the provider, the full set (order does not matter). "
        "An empty list removes every model; unset leaves ngrok's models alone.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    provider_keys: list[ProviderKeySpec] | None = Field(
        default=None,
        max_length=20,
        description="Provider keys the operator creates in ngrok from Kubernetes Secrets, rotates when a "
        "Secret changes, and deletes when removed from this list or before the provider itself is deleted. "
        "Unset: keys are left alone.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    credentials_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="Secret key holding an ngrok API key. Unset: the operator's default ngrok key.",
    )
    deletion_policy: DeletionPolicy | None = Field(
        default=None,
        description="Delete: delete the ngrok provider with this resource. Orphan: leave it in ngrok."
        " Unset: Delete for an object this resource created, Orphan for one it adopted (aigw.dev/external-id).",
    )
    management_policy: ManagementPolicy | None = management_policy_field()
    write_connection_details_to: ConnectionDetailsTarget | None = connection_details_field()

    def payload(self) -> dict[str, Any]:
        data: dict[str, Any] = {"providerId": self.provider_id, "name": self.name, "baseUrl": self.base_url}
        data.update(self._managed())
        return data

    def _managed(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if self.metadata is not None:
            data["metadata"] = self.metadata
        if self.supported_api_surfaces is not None:
            data["supportedApiSurfaces"] = [s.to_upstream() for s in self.supported_api_surfaces]
        if self.models is not None:
            data["models"] = [{"modelId": m} for m in self.models]
        return data


class ActorRef(CamelModel):
    """An ngrok API identity."""

    id: str = Field(description="Id of the API key or user.")
    uri: str | None = Field(default=None, description="URI of that identity in the ngrok API.")


class ProviderModelStatus(CamelModel):
    """A model attached to the provider in ngrok."""

    id: str | None = Field(default=None, description="ngrok's id of the model entry.")
    model_id: str = Field(description="The model id, as used in providerId:modelId.")


class ProviderKeyStatus(CamelModel):
    """A provider key the operator manages (never its value)."""

    name: str = Field(description="The key's label in ngrok.")
    id: str = Field(description="The key's id in ngrok.")
    secret_name: str = Field(description="The Kubernetes Secret its value comes from.")
    key: str = Field(description="The key within that Secret.")
    secret_version: str = Field(description="resourceVersion of the Kubernetes Secret last sent to ngrok.")


class ProviderStatus(CommonStatus):
    """What the operator last observed in ngrok."""

    uri: str | None = Field(default=None, description="URI of the provider in the ngrok API.")
    provider_id: str | None = Field(default=None, description="The provider's providerId in ngrok.")
    created_by: ActorRef | None = Field(default=None, description="Who created the provider.")
    last_updated_by: ActorRef | None = Field(default=None, description="Who last updated the provider.")
    models: list[ProviderModelStatus] | None = Field(default=None, description="Models attached in ngrok.")
    provider_keys: list[ProviderKeyStatus] | None = Field(
        default=None, description="Provider keys the operator manages for this provider."
    )


INFO = KindInfo(
    kind="Provider",
    plural="providers",
    singular="provider",
    short_names=("aigwp",),
    description="An ngrok AI Gateway provider: a model server the gateway routes providerId:modelId to.",
    spec_model=ProviderSpec,
    status_model=ProviderStatus,
    printer_columns=(
        PrinterColumn("Provider ID", ".spec.providerId", description="providerId in model strings"),
        PrinterColumn("Base URL", ".spec.baseUrl", description="Where the gateway sends requests"),
        PrinterColumn("Models", ".spec.models", description="Model ids"),
        *READY_COLUMNS,
        AGE_COLUMN,
    ),
)


def _surfaces(items: list[dict[str, Any]]) -> list[tuple[str, str, tuple[str, ...]]]:
    """Surfaces in a comparable form: order of surfaces and of parameters is not drift."""
    return sorted(
        (
            item["format"],
            item.get("surface") or "",
            tuple(sorted(p["name"] for p in item.get("supportedParams") or [])),
        )
        for item in items
    )


@dataclass
class DesiredProvider:
    """The spec with the values of its provider keys' Secrets read."""

    spec: ProviderSpec
    keys: list[tuple[ProviderKeySpec, SecretValue]] = field(default_factory=list)
    # What the status says the operator manages in ngrok.
    recorded: list[dict[str, Any]] = field(default_factory=list)

    def key_versions(self) -> list[tuple[str, str, str, str]]:
        return sorted((k.name, k.secret_ref.name, k.secret_ref.key, v.version) for k, v in self.keys)


def _recorded_versions(records: Any) -> list[tuple[str, str, str, str]]:
    return sorted((r["name"], r["secretName"], r["key"], r["secretVersion"]) for r in records or ())


class ProviderAdapter(Adapter[ProviderSpec, DesiredProvider, Provider]):
    """Observe / create / update / delete ngrok providers for the generic loop."""

    info = INFO
    upstream = "ngrok"

    def __init__(self, client: NgrokClient) -> None:
        self.client = client
        # Providers are listed in full; providerId is unique per account, so a lost create, or
        # a provider made by hand, is found by it; provider keys live and die with a provider.
        self.listing = self
        self.unique = self
        self.dependents = self

    async def get(self, api_key: str, spec: Any, upstream_id: str) -> Provider:
        return await self.client.get(api_key, upstream_id)

    async def desire(self, api_key: str, spec: ProviderSpec, view: KubeView) -> DesiredProvider:
        keys = (
            [(k, await view.read_secret(k.secret_ref)) for k in spec.provider_keys or ()] if not view.deleting else []
        )
        return DesiredProvider(spec, keys, [dict(r) for r in view.recorded.get("providerKeys") or ()])

    async def list_all(self, api_key: str, spec: Any) -> dict[str, Provider]:
        return {provider.id: provider async for provider in self.client.list(api_key)}

    def list_scope(self, desired: DesiredProvider) -> str:
        return ""

    def unique_key(self, desired: DesiredProvider) -> str:
        return desired.spec.provider_id

    def item_key(self, item: Provider) -> str:
        return item.provider_id

    def item_created(self, item: Provider) -> float | None:
        return unix_time(item.created_at)

    async def create(self, api_key: str, desired: DesiredProvider) -> Provider:
        return await self.client.create(api_key, desired.spec.payload())

    def diff(self, desired: DesiredProvider, observed: Provider) -> dict[str, Any] | None:
        spec = desired.spec
        changes: dict[str, Any] = {}
        if spec.name != observed.name:
            changes["name"] = spec.name
        if spec.base_url != observed.base_url:
            changes["baseUrl"] = spec.base_url
        if spec.metadata is not None and spec.metadata != (observed.metadata or ""):
            changes["metadata"] = spec.metadata
        if spec.supported_api_surfaces is not None:
            surfaces = [s.to_upstream() for s in spec.supported_api_surfaces]
            current = [s.model_dump(by_alias=True, exclude_none=True) for s in observed.supported_api_surfaces or []]
            if _surfaces(surfaces) != _surfaces(current):
                changes["supportedApiSurfaces"] = surfaces
        if spec.models is not None:
            current_models = {m.model_id for m in observed.models or []}
            if set(spec.models) != current_models:
                changes["models"] = [{"modelId": m} for m in spec.models]
        return changes or None

    async def update(
        self, api_key: str, observed: Provider, desired: DesiredProvider, changes: dict[str, Any]
    ) -> Provider:
        return await self.client.patch(api_key, observed.id, changes)

    def current(self, desired: DesiredProvider, status: Mapping[str, Any]) -> bool:
        if desired.spec.provider_keys is None:
            return True
        return desired.key_versions() == _recorded_versions(status.get("providerKeys"))

    async def settle(self, api_key: str, desired: DesiredProvider, observed: Provider) -> dict[str, Any]:
        """Provider keys after the provider (ngrok refuses keys for an unknown provider)."""
        if desired.spec.provider_keys is None:
            return {}
        existing = await self.client.list_keys(api_key, observed.provider_id)
        recorded = {r["name"]: r for r in desired.recorded}
        records = []
        for spec, value in desired.keys:
            record = recorded.pop(spec.name, None)
            key: ProviderKey | None = existing.get(record["id"]) if record else None
            if key is None:
                # Not created yet, deleted out of band, or created by a request whose answer was lost.
                found = next((k for k in existing.values() if k.name == spec.name), None)
                if found is None:
                    key = await self.client.create_key(api_key, observed.provider_id, spec.name, value.value)
                else:
                    key = await self.client.rotate_key(api_key, found.id, spec.name, value.value)
            elif record is not None and record["secretVersion"] != value.version:
                key = await self.client.rotate_key(api_key, key.id, spec.name, value.value)
            records.append(
                {
                    "name": key.name,
                    "id": key.id,
                    "secretName": spec.secret_ref.name,
                    "key": spec.secret_ref.key,
                    "secretVersion": value.version,
                }
            )
        for stale in recorded.values():
            with contextlib.suppress(NotFound):
                await self.client.delete_key(api_key, stale["id"])
        return {"providerKeys": records or None}

    async def delete(self, api_key: str, desired: DesiredProvider, upstream_id: str) -> list[Event]:
        # Our keys first: ngrok refuses to delete a provider that keys still refer to.
        ids = {r["id"] for r in desired.recorded}
        names = {r["name"] for r in desired.recorded} | {k.name for k in desired.spec.provider_keys or ()}
        if ids or names:
            for key in (await self.client.list_keys(api_key, desired.spec.provider_id)).values():
                if key.id in ids or key.name in names:
                    with contextlib.suppress(NotFound):
                        await self.client.delete_key(api_key, key.id)
        await self.client.delete(api_key, upstream_id)
        return []

    def upstream_id(self, observed: Provider) -> str:
        return observed.id

    def readiness(self, desired: DesiredProvider, observed: Provider) -> Readiness:
        count = len(observed.models or [])
        return Readiness(True, "Available", f"{observed.provider_id} at {observed.base_url} with {count} model(s)")

    def connection_details(self, desired: DesiredProvider, observed: Provider) -> dict[str, str]:
        # The model strings clients send to the gateway, providerId:modelId (MODEL too when
        # there is exactly one, so that a client of a one-model provider needs no parsing).
        models = [f"{observed.provider_id}:{m.model_id}" for m in observed.models or []]
        details = {"PROVIDER_ID": observed.provider_id, "MODELS": ",".join(models)}
        if len(models) == 1:
            details["MODEL"] = models[0]
        return details

    def status_fields(self, observed: Provider) -> dict[str, Any]:
        return {
            "id": observed.id,
            "uri": observed.uri,
            "providerId": observed.provider_id,
            "createdAt": observed.created_at,
            "updatedAt": observed.updated_at,
            "createdBy": observed.created_by.model_dump(exclude_none=True) if observed.created_by else None,
            "lastUpdatedBy": (
                observed.last_updated_by.model_dump(exclude_none=True) if observed.last_updated_by else None
            ),
            "models": [m.model_dump(by_alias=True, exclude_none=True) for m in observed.models or []],
        }
