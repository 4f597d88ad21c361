"""GatewayEndpoint: a Baseten Frontier Gateway endpoint (a routing slug plus one target)."""

from __future__ import annotations

import contextlib
from typing import Any, Literal

from pydantic import Field

from aigw_operator.kinds.common import (
    AGE_COLUMN,
    READY_COLUMNS,
    CamelModel,
    CommonStatus,
    DeletionPolicy,
    KindInfo,
    PrinterColumn,
    SecretKeyRef,
    cel,
    immutable,
    validations,
)
from aigw_operator.reconcile import Readiness
from aigw_operator.upstreams.baseten import BasetenClient, Endpoint, Target
from aigw_operator.upstreams.http import InvalidSpec, NotFound

Provider = Literal["BASETEN", "ANTHROPIC", "OPENAI"]
EXTERNAL_PROVIDERS = ("ANTHROPIC", "OPENAI")
# URL-safe segments, as Baseten requires for both halves of the slug.
SLUG_PATTERN = r"^[A-Za-z0-9._~-]+/[A-Za-z0-9._~-]+$"


class GatewayTarget(CamelModel):
    """Where the gateway routes requests for the slug."""

    model_config = CamelModel.model_config | {
        "json_schema_extra": validations(
            cel(
                "self.provider != 'BASETEN' || has(self.modelId)",
                "modelId is required when provider is BASETEN",
                field_path=".modelId",
            ),
            cel(
                "self.provider == 'BASETEN' || (has(self.secretId) && has(self.targetModel))",
                "secretId and targetModel are required when provider is ANTHROPIC or OPENAI",
            ),
            cel(
                "self.provider == 'BASETEN' || (!has(self.modelId) && !has(self.environmentName))",
                "modelId and environmentName apply to BASETEN targets only",
            ),
        )
    }

    provider: Provider = Field(description="Upstream provider: BASETEN, ANTHROPIC or OPENAI.")
    model_id: str | None = Field(
        default=None, max_length=128, description="The Baseten model to route to (BASETEN targets; required there)."
    )
    environment_name: str | None = Field(
        default=None,
        max_length=128,
        description="Baseten environment of the model (BASETEN targets); omitted means production.",
    )
    secret_id: str | None = Field(
        default=None,
        max_length=256,
        description="Baseten secret that holds the provider credential (ANTHROPIC and OPENAI; required there).",
    )
    target_model: str | None = Field(
        default=None,
        max_length=256,
        description="Upstream model name to send (required for ANTHROPIC and OPENAI; optional for BASETEN).",
    )

    def to_upstream(self) -> Target:
        return Target(
            provider=self.provider,
            model_id=self.model_id,
            environment_name=self.environment_name,
            secret_id=self.secret_id,
            target_model=self.target_model,
        )


class GatewayEndpointSpec(CamelModel):
    """The desired Baseten gateway endpoint."""

    slug: str = Field(
        description="Globally unique routing slug, {org_prefix}/{name}; the org prefix must be one your "
        "Baseten organization owns. Changing it renames the endpoint.",
        pattern=SLUG_PATTERN,
        min_length=3,
        max_length=253,
    )
    region: Literal["UNRESTRICTED", "EU"] = Field(
        default="UNRESTRICTED",
        description="Where requests may be served: UNRESTRICTED or EU. Set at creation; immutable.",
        json_schema_extra=immutable("region"),
    )
    targets: list[GatewayTarget] = Field(
        description="The endpoint's target. Exactly one target is supported.",
        min_length=1,
        max_length=1,
        json_schema_extra=validations(cel("size(self) == 1", "exactly one target is supported")),
    )
    credentials_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="Secret key holding a Baseten workspace API key with management scope. "
        "Unset: the operator's default Baseten key.",
    )
    deletion_policy: DeletionPolicy = Field(
        default="Delete",
        description="Delete: delete the Baseten endpoint with this resource. Orphan: leave it in Baseten.",
    )

    def payload(self) -> dict[str, Any]:
        return {
            "slug": self.slug,
            "region": self.region,
            "targets": [t.to_upstream().model_dump(exclude_none=True) for t in self.targets],
        }


class GatewayEndpointStatus(CommonStatus):
    """What the operator last observed in Baseten."""

    slug: str | None = Field(default=None, description="The endpoint's slug in Baseten.")
    region: str | None = Field(default=None, description="The endpoint's region in Baseten.")


INFO = KindInfo(
    kind="GatewayEndpoint",
    plural="gatewayendpoints",
    singular="gatewayendpoint",
    short_names=("gwe",),
    description="A Baseten Frontier Gateway endpoint: a routing slug and the one target it routes to.",
    spec_model=GatewayEndpointSpec,
    status_model=GatewayEndpointStatus,
    printer_columns=(
        PrinterColumn("Slug", ".spec.slug", description="Routing slug"),
        PrinterColumn("Provider", ".spec.targets[0].provider", description="Target provider"),
        *READY_COLUMNS,
        PrinterColumn("ID", ".status.id", description="Baseten endpoint id"),
        AGE_COLUMN,
    ),
)


class GatewayEndpointAdapter:
    """Observe / create / update / delete Baseten endpoints for the generic loop."""

    info = INFO
    upstream = "baseten"

    def __init__(self, client: BasetenClient) -> None:
        self.client = client

    async def get(self, api_key: str, spec: Any, upstream_id: str) -> Endpoint:
        return await self.client.get(api_key, upstream_id)

    async def find(self, api_key: str, spec: GatewayEndpointSpec) -> Endpoint | None:
        # Slugs are unique and Baseten has no idempotency key: the slug is how a create
        # whose response was lost (or a crash before the status write) is found again.
        return await self.client.find_by_slug(api_key, spec.slug)

    async def create(self, api_key: str, spec: GatewayEndpointSpec) -> Endpoint:
        return await self.client.create(api_key, spec.payload())

    def diff(self, spec: GatewayEndpointSpec, observed: Endpoint) -> dict[str, Any] | None:
        changes: dict[str, Any] = {}
        if spec.slug != observed.slug:
            changes["slug"] = spec.slug
        desired = [t.to_upstream().normalised() for t in spec.targets]
        if desired != [t.normalised() for t in observed.targets]:
            changes["targets"] = spec.payload()["targets"]
        return changes or None

    async def update(
        self, api_key: str, observed: Endpoint, spec: GatewayEndpointSpec, changes: dict[str, Any]
    ) -> Endpoint:
        current = observed
        if "slug" in changes:
            try:
                current = await self.client.patch(api_key, observed.id, {"slug": changes["slug"]})
            except InvalidSpec:
                current = observed
            if current.slug != spec.slug:
                # Newer Baseten API: slugs are immutable (refused, or silently kept). Converge
                # anyway: new endpoint first, so the route never disappears, then the old one.
                return await self._replace(api_key, observed, spec)
        if "targets" in changes:
            current = await self.client.patch(api_key, current.id, {"targets": changes["targets"]})
        return current

    async def _replace(self, api_key: str, old: Endpoint, spec: GatewayEndpointSpec) -> Endpoint:
        # A crash between the create and the delete leaves the new slug in place: adopt it.
        replacement = await self.client.find_by_slug(api_key, spec.slug)
        if replacement is None:
            replacement = await self.client.create(api_key, spec.payload())
        elif self.diff(spec, replacement):
            replacement = await self.client.patch(api_key, replacement.id, {"targets": spec.payload()["targets"]})
        with contextlib.suppress(NotFound):
            await self.client.delete(api_key, old.id)
        return replacement

    async def delete(self, api_key: str, spec: Any, upstream_id: str) -> None:
        await self.client.delete(api_key, upstream_id)

    def upstream_id(self, observed: Endpoint) -> str:
        return observed.id

    def readiness(self, spec: GatewayEndpointSpec, observed: Endpoint) -> Readiness:
        if observed.region and observed.region != spec.region:
            return Readiness(
                False,
                "RegionMismatch",
                f"the Baseten endpoint is in region {observed.region}, the spec says {spec.region}; "
                "region is set at creation only: delete the endpoint or change the spec",
            )
        target = observed.targets[0] if observed.targets else None
        where = f"{target.provider} {target.model_id or target.target_model or ''}".strip() if target else "?"
        return Readiness(True, "Available", f"{observed.slug} routes to {where}")

    def status_fields(self, observed: Endpoint) -> dict[str, Any]:
        return {
            "id": observed.id,
            "slug": observed.slug,
            "region": observed.region,
            "createdAt": observed.created_at,
            "updatedAt": observed.updated_at,
        }
