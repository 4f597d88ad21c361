"""Model: a model definition in a self-hosted model registry (Syft Space)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import Field

from aigw_operator.base.api import (
    AGE_COLUMN,
    READY_COLUMNS,
    RECREATE_RULE,
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
    management_policy_field,
    validations,
)
from aigw_operator.engine.contract import Adapter, Event, KubeView, Readiness, Replace, Traits
from aigw_operator.engine.resource import unix_time
from aigw_operator.upstreams.http import InvalidSpec, NotFound
from aigw_operator.upstreams.model_registry import ModelRegistryClient, RegistryModel

Tag = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[^,\s]+$")]

IMMUTABLE_RULE = cel(
    "self.replacePolicy == 'Recreate' || (self.dtype == oldSelf.dtype && self.configuration == oldSelf.configuration)",
    "dtype and configuration cannot be changed in the model registry: set replacePolicy: Recreate to let "
    "the operator delete and recreate the model (its connected endpoints then lose their link)",
)


TENANT_RULE = cel(
    "self.replacePolicy == 'Recreate' || "
    "(has(self.tenant) == has(oldSelf.tenant) && (!has(self.tenant) || self.tenant == oldSelf.tenant))",
    "tenant cannot be changed: a model lives in one tenant of the registry; set replacePolicy: Recreate to let "
    "the operator create it in the new tenant and then delete it from the old one",
)


class OpenAIConfiguration(CamelModel):
    """Configuration of an openai-type model. The API key comes from a Secret, never inline."""

    model: str = Field(default="gpt-3.5-turbo", min_length=1, max_length=256, description="Upstream model name.")
    base_url: str = Field(
        default="https://api.openai.com/v1",
        max_length=2048,
        description="OpenAI-compatible API base URL (https).",
        json_schema_extra=validations(
            cel("isURL(self) && url(self).getScheme() == 'https'", "baseUrl must be an https URL")
        ),
    )
    system_prompt: str = Field(default="", max_length=32768, description="System prompt sent with every request.")
    api_key_secret_ref: SecretKeyRef = Field(
        description="Secret key holding the upstream LLM's API key (same namespace as this resource)."
    )


class ModelSpec(CamelModel):
    """The desired model in the registry."""

    model_config = CamelModel.model_config | {
        "json_schema_extra": validations(IMMUTABLE_RULE, RECREATE_RULE, TENANT_RULE)
    }

    name: str | None = Field(
        default=None,
        min_length=1,
        max_length=255,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="Name in the registry (unique per tenant). Defaults to metadata.name; a change renames it.",
    )
    dtype: Literal["openai"] = Field(default="openai", description="Model type; the registry knows openai.")
    configuration: OpenAIConfiguration = Field(description="Type-specific configuration. Immutable upstream.")
    summary: str = Field(default="", max_length=4096, description="Description of the model.")
    tags: list[Tag] = Field(
        default_factory=list,
        max_length=64,
        description="Tags (a set: order does not matter), stored upstream as a comma-separated string.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    replace_policy: Literal["Never", "Recreate"] = Field(
        default="Never",
        description="Never: refuse changes of dtype or configuration (and report a rotated API key). "
        "Recreate: delete and recreate the model to apply them.",
    )
    tenant: str | None = Field(
        default=None,
        max_length=255,
        description="Tenant of a multi-tenant registry (X-Tenant-Name). Immutable unless replacePolicy is Recreate.",
    )
    credentials_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="Secret key holding the registry's admin API key. Unset: the operator's default key "
        "(or no key, for a registry without authentication).",
    )
    deletion_policy: DeletionPolicy | None = Field(
        default=None,
        description="Delete: delete the model with this resource. Orphan: leave it."
        " Unset: Delete for an object this resource created, Orphan for one it adopted (aigw.dev/external-id).",
    )
    management_policy: ManagementPolicy | None = management_policy_field()
    write_connection_details_to: ConnectionDetailsTarget | None = connection_details_field()


@dataclass(frozen=True)
class DesiredModel:
    """The spec with what only Kubernetes knows filled in: the name and the API key."""

    spec: ModelSpec
    name: str
    api_key: str
    # The tenant the model was last seen in (status.tenant): where its stored id lives, which
    # differs from the spec's while a tenant move is under way.
    current_tenant: str | None = None

    @property
    def tenant(self) -> str | None:
        return self.spec.tenant or None

    @property
    def stored_tenant(self) -> str | None:
        if self.current_tenant is None:  # not recorded yet
            return self.tenant
        return self.current_tenant or None  # "" is the default tenant

    def configuration(self) -> dict[str, Any]:
        config = self.spec.configuration
        return {
            "api_key": self.api_key,
            "model": config.model,
            "base_url": config.base_url,
            "system_prompt": config.system_prompt,
        }

    def payload(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dtype": self.spec.dtype,
            "configuration": self.configuration(),
            "summary": self.spec.summary,
            "tags": ",".join(sorted(set(self.spec.tags))),
        }


class ConnectedEndpointStatus(CamelModel):
    """A registry endpoint that uses this model."""

    id: str = Field(description="Endpoint id in the registry.")
    name: str | None = Field(default=None, description="Endpoint name.")
    slug: str | None = Field(default=None, description="Endpoint slug.")


class ModelStatus(CommonStatus):
    """What the operator last observed in the registry (never the API key)."""

    name: str | None = Field(default=None, description="The model's name in the registry.")
    tenant: str | None = Field(default=None, description="The registry tenant the model is in.")
    dtype: str | None = Field(default=None, description="The model's type in the registry.")
    connected_endpoints: list[ConnectedEndpointStatus] | None = Field(
        default=None, description="Registry endpoints that use this model."
    )


INFO = KindInfo(
    kind="Model",
    plural="models",
    singular="model",
    short_names=("aigwm",),
    description="A model definition in a self-hosted model registry (Syft Space).",
    spec_model=ModelSpec,
    status_model=ModelStatus,
    printer_columns=(
        PrinterColumn("Name", ".status.name", description="Name in the registry"),
        PrinterColumn("DType", ".spec.dtype", description="Model type"),
        PrinterColumn("Endpoints", ".status.connectedEndpoints[*].name", description="Connected endpoints"),
        *READY_COLUMNS,
        AGE_COLUMN,
    ),
)

CONFIG_FIELDS = ("api_key", "model", "base_url", "system_prompt")


class ModelAdapter(Adapter[ModelSpec, DesiredModel, RegistryModel]):
    """Observe / create / update / delete registry models for the generic loop."""

    info = INFO
    upstream = "model-registry"
    # A registry without an admin key has no authentication at all.
    traits = Traits(credentials_optional=True)

    def __init__(self, client: ModelRegistryClient) -> None:
        self.client = client
        # The registry lists a tenant's models in full (unpaged); names are unique per tenant.
        self.listing = self
        self.unique = self

    async def desire(self, api_key: str, spec: ModelSpec, view: KubeView) -> DesiredModel:
        name = spec.name or view.name
        value = (await view.read_secret(spec.configuration.api_key_secret_ref)).value
        return DesiredModel(spec, name, value, current_tenant=view.recorded.get("tenant"))

    async def get(self, api_key: str, spec: DesiredModel, upstream_id: str) -> RegistryModel:
        # The API addresses models by name, which can change: the id is found in the (unpaged) list.
        for model in await self.client.list(api_key, spec.stored_tenant):
            if model.id == upstream_id:
                return model
        raise _not_found(upstream_id)

    async def list_all(self, api_key: str, spec: DesiredModel) -> dict[str, RegistryModel]:
        return {model.id: model for model in await self.client.list(api_key, spec.tenant)}

    def list_scope(self, spec: DesiredModel) -> str:
        return spec.spec.tenant or ""

    def unique_key(self, spec: DesiredModel) -> str:
        return spec.name

    def item_key(self, item: RegistryModel) -> str:
        return item.name

    def item_created(self, item: RegistryModel) -> float | None:
        return unix_time(item.created_at)

    async def create(self, api_key: str, spec: DesiredModel) -> RegistryModel:
        # The registry stores any configuration it is given; check it against the dtype's schema first.
        schema = await self.client.config_schema(api_key, spec.spec.tenant, spec.spec.dtype)
        if schema is None:
            raise InvalidSpec(
                "model-registry",
                None,
                f"the registry does not know dtype {spec.spec.dtype!r}",
                method="POST",
                route="/models/",
            )
        problems = _check_config(spec.configuration(), schema)
        if problems:
            raise InvalidSpec("model-registry", None, "; ".join(problems), method="POST", route="/models/")
        return await self.client.create(api_key, spec.tenant, spec.payload())

    def diff(self, spec: DesiredModel, observed: RegistryModel) -> dict[str, Any] | None:
        changes: dict[str, Any] = {}
        if spec.name != observed.name:
            changes["name"] = spec.name
        if spec.spec.summary != (observed.summary or ""):
            changes["summary"] = spec.spec.summary
        if set(spec.spec.tags) != observed.tag_set():
            changes["tags"] = ",".join(sorted(set(spec.spec.tags)))
        return changes or None

    def replacement(self, spec: DesiredModel, observed: RegistryModel) -> Replace | None:
        stored = observed.configuration or {}
        changed = [f for f in CONFIG_FIELDS if stored.get(f) != spec.configuration()[f]]
        if spec.spec.dtype != observed.dtype:
            changed.insert(0, "dtype")
        moving = observed.tenant != spec.tenant
        if moving:
            changed.insert(0, "tenant")
        if not changed:
            return None
        fields = ", ".join("configuration.apiKey" if f == "api_key" else f for f in changed)
        return Replace(
            tuple(changed),
            # Another tenant is another namespace of names: create there first, so that a refusal
            # (the name is taken there) leaves the old model in place. Within a tenant the name
            # is unique: the old model must go before the new one can be created.
            "create-first" if moving else "delete-first",
            allowed=spec.spec.replace_policy == "Recreate",
            refusal=f"the registry's model differs from the spec in {fields}, which the registry cannot "
            "change in place; set replacePolicy: Recreate to delete and recreate it",
        )

    async def update(
        self, api_key: str, observed: RegistryModel, spec: DesiredModel, changes: dict[str, Any]
    ) -> RegistryModel:
        return await self.client.patch(api_key, observed.tenant, observed.name, changes)

    def describe_replace(self, spec: DesiredModel, replace: Replace, before: RegistryModel) -> list[Event]:
        lost = ", ".join(e.name or e.slug or e.id for e in before.connected_endpoints) or "none"
        return [
            (
                "Warning" if before.connected_endpoints else "Normal",
                "Recreated",
                f"recreated model {before.name} to apply a change of {', '.join(replace.fields)}; "
                f"connected endpoints that lost their link: {lost}",
            )
        ]

    async def delete(self, api_key: str, spec: DesiredModel, upstream_id: str) -> list[Event]:
        model = await self.get(api_key, spec, upstream_id)
        await self.client.delete(api_key, model.tenant, model.name)
        if not model.connected_endpoints:
            return []
        lost = ", ".join(e.name or e.slug or e.id for e in model.connected_endpoints)
        message = f"deleted model {model.name}; these endpoints lost their model: {lost}"
        return [("Warning", "EndpointsOrphaned", message)]

    def upstream_id(self, observed: RegistryModel) -> str:
        return observed.id

    def readiness(self, spec: DesiredModel, observed: RegistryModel) -> Readiness:
        count = len(observed.connected_endpoints)
        return Readiness(True, "Available", f"{observed.name} ({observed.dtype}) used by {count} endpoint(s)")

    def connection_details(self, desired: DesiredModel, observed: RegistryModel) -> dict[str, str]:
        details = {"MODEL_ID": observed.id, "MODEL_NAME": observed.name}
        if observed.tenant:
            details["TENANT"] = observed.tenant  # the registry's X-Tenant-Name
        return details

    def status_fields(self, observed: RegistryModel) -> dict[str, Any]:
        return {
            "id": observed.id,
            "name": observed.name,
            "tenant": observed.tenant or "",
            "dtype": observed.dtype,
            "createdAt": observed.created_at,
            "updatedAt": observed.updated_at,
            "connectedEndpoints": [e.model_dump(exclude_none=True) for e in observed.connected_endpoints],
        }


def _not_found(upstream_id: str) -> Exception:
    return NotFound("model-registry", 404, f"no model with id {upstream_id}", method="GET", route="/models/")


def _check_config(config: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    """The parts of a JSON schema the registry's config schemas use: required keys and types."""
    problems = []
    properties = schema.get("properties") or {}
    for key in schema.get("required") or []:
        if config.get(key) in (None, ""):
            problems.append(f"configuration.{key} is required by the registry")
    types: dict[str, type | tuple[type, ...]] = {
        "string": str,
        "integer": int,
        "number": (int, float),
        "boolean": bool,
        "object": dict,
        "array": list,
    }
    for key, value in config.items():
        expected = types.get((properties.get(key) or {}).get("type", ""))
        if properties and key not in properties:
            problems.append(f"configuration.{key} is not part of the registry's schema")
        elif expected and not isinstance(value, expected):
            problems.append(f"configuration.{key} must be a {properties[key]['type']}")
    return problems
