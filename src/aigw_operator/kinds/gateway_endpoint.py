"""GatewayEndpoint: a Baseten Frontier Gateway endpoint (a routing slug plus one target)."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, cast

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
from aigw_operator.engine.contract import Adapter, Event, KubeView, Readiness, ReplaceInstead
from aigw_operator.engine.listings import Listings
from aigw_operator.engine.resource import unix_time
from aigw_operator.upstreams.baseten import BasetenClient, Endpoint, Secret, Target
from aigw_operator.upstreams.http import InvalidSpec, NotFound, credential_fingerprint

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
                "self.provider == 'BASETEN' || has(self.secretId) != has(self.secretRef)",
                "exactly one of secretId and secretRef is required when provider is ANTHROPIC or OPENAI",
            ),
            cel(
                "self.provider == 'BASETEN' || has(self.targetModel)",
                "targetModel is required when provider is ANTHROPIC or OPENAI",
                field_path=".targetModel",
            ),
            cel(
                "self.provider == 'BASETEN' || (!has(self.modelId) && !has(self.environmentName))",
                "modelId and environmentName apply to BASETEN targets only",
            ),
            cel(
                "self.provider != 'BASETEN' || !has(self.secretRef)",
                "secretRef applies to ANTHROPIC and OPENAI targets only",
                field_path=".secretRef",
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
        description="Id of a Baseten secret that holds the provider credential (ANTHROPIC and OPENAI; "
        "this or secretRef is required there).",
    )
    secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="Kubernetes Secret key (same namespace) holding the provider credential, instead of "
        "secretId: the operator stores it as a Baseten secret, keeps it in sync when the Secret changes, "
        "and deletes it when no endpoint uses it any more.",
    )
    target_model: str | None = Field(
        default=None,
        max_length=256,
        description="Upstream model name to send (required for ANTHROPIC and OPENAI; optional for BASETEN).",
    )

    def to_upstream(self, secret_id: str | None = None) -> Target:
        return Target(
            provider=self.provider,
            model_id=self.model_id,
            environment_name=self.environment_name,
            secret_id=secret_id or self.secret_id,
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
    deletion_policy: DeletionPolicy | None = Field(
        default=None,
        description="Delete: delete the Baseten endpoint with this resource. Orphan: leave it in Baseten."
        " Unset: Delete for an object this resource created, Orphan for one it adopted (aigw.dev/external-id).",
    )
    management_policy: ManagementPolicy | None = management_policy_field()
    write_connection_details_to: ConnectionDetailsTarget | None = connection_details_field()


class ManagedSecretStatus(CamelModel):
    """A Baseten secret the operator keeps in sync with a Kubernetes Secret (never its value)."""

    name: str = Field(description="The Baseten secret's name, derived from the Kubernetes Secret's reference.")
    id: str = Field(description="The Baseten secret's id, used as the target's secret_id; stable across rotation.")
    secret_name: str = Field(description="The Kubernetes Secret it comes from.")
    key: str = Field(description="The key within that Secret.")
    secret_version: str = Field(description="resourceVersion of the Kubernetes Secret last stored in Baseten.")


class GatewayEndpointStatus(CommonStatus):
    """What the operator last observed in Baseten."""

    slug: str | None = Field(default=None, description="The endpoint's slug in Baseten.")
    region: str | None = Field(default=None, description="The endpoint's region in Baseten.")
    secrets: list[ManagedSecretStatus] | None = Field(
        default=None, description="Baseten secrets the operator manages for this endpoint's targets."
    )


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


# How old the shared listing of Baseten secrets may be when it proves ours still exist.
SECRETS_LISTING_MAX_AGE = 60.0
SECRET_NAME_MAX = 255


@dataclass
class DesiredGatewayEndpoint:
    """The spec with the Baseten secrets its targets refer to put in place."""

    spec: GatewayEndpointSpec
    # Target index -> Baseten secret id, for targets with a secretRef.
    secret_ids: dict[int, str] = field(default_factory=dict)
    # Managed secrets this endpoint refers to, and ones it referred to before but no longer does.
    secrets: list[dict[str, Any]] = field(default_factory=list)
    stale: list[dict[str, Any]] = field(default_factory=list)
    namespace: str = ""
    uid: str = ""
    # Whether another GatewayEndpoint refers to a Secret key (then its Baseten secret stays).
    shared_elsewhere: Callable[[SecretKeyRef], bool] = field(default=lambda ref: False)

    @property
    def slug(self) -> str:
        return self.spec.slug

    @property
    def region(self) -> str:
        return self.spec.region

    def upstream_targets(self) -> list[Target]:
        return [t.to_upstream(self.secret_ids.get(i)) for i, t in enumerate(self.spec.targets)]

    def payload(self) -> dict[str, Any]:
        return {
            "slug": self.spec.slug,
            "region": self.spec.region,
            "targets": [t.model_dump(exclude_none=True) for t in self.upstream_targets()],
        }


def secret_name(prefix: str, namespace: str, ref: SecretKeyRef) -> str:
    """The Baseten secret for a Kubernetes Secret key: one per key, so that endpoints sharing a
    Secret share it and different Secrets never collide ('_' occurs in neither namespaces nor
    Secret names, so the parts cannot run into each other)."""
    name = f"{prefix}_{namespace}_{ref.name}_{ref.key}"
    if len(name) <= SECRET_NAME_MAX:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:16]
    return f"{name[: SECRET_NAME_MAX - 17]}_{digest}"


class GatewayEndpointAdapter(Adapter[GatewayEndpointSpec, DesiredGatewayEndpoint, Endpoint]):
    """Observe / create / update / delete Baseten endpoints for the generic loop."""

    info = INFO
    upstream = "baseten"

    def __init__(
        self,
        client: BasetenClient,
        *,
        secret_prefix: str = "aigw",
        inference_url: str = "",
    ) -> None:
        self.client = client
        self.secret_prefix = secret_prefix
        # Where clients send the slug as their model (the Frontier Gateway), for the connection details.
        self.inference_url = inference_url
        self._secrets = Listings()
        # Baseten lists endpoints in full; slugs are unique and Baseten has no idempotency key:
        # the slug is how a create whose response was lost (or a crash before the status write)
        # is found again.
        self.listing = self
        self.unique = self

    async def desire(self, api_key: str, spec: GatewayEndpointSpec, view: KubeView) -> DesiredGatewayEndpoint:
        namespace = view.namespace
        desired = DesiredGatewayEndpoint(
            spec, namespace=namespace, uid=view.uid, shared_elsewhere=view.shared_elsewhere
        )
        recorded = {r.get("name"): dict(r) for r in view.recorded.get("secrets") or ()}
        for index, target in enumerate(spec.targets):
            if target.secret_ref is None:
                continue
            name = secret_name(self.secret_prefix, namespace, target.secret_ref)
            record = recorded.pop(name, None)
            if view.deleting:
                if record is not None:
                    desired.secrets.append(record)
                continue
            if view.observing:
                # Read only: the Baseten secret is looked up by its name, never written (and, not
                # kept in sync from here, not listed in the status as one the operator keeps).
                if record is not None:
                    desired.secret_ids[index] = record["id"]
                    desired.secrets.append(record)
                elif (listed := await self._listed(api_key, name)) is not None:
                    desired.secret_ids[index] = listed.id
                continue
            value = await view.read_secret(target.secret_ref)
            if record is None or record.get("secretVersion") != value.version or not await self._exists(api_key, name):
                stored = await self.client.upsert_secret(api_key, name, value.value)
                self._secrets.put((credential_fingerprint(api_key),), stored.name, stored)
                record = {
                    "name": stored.name,
                    "id": stored.id,
                    "secretName": target.secret_ref.name,
                    "key": target.secret_ref.key,
                    "secretVersion": value.version,
                }
            desired.secret_ids[index] = record["id"]
            desired.secrets.append(record)
        desired.stale = list(recorded.values())
        return desired

    async def _exists(self, api_key: str, name: str) -> bool:
        return await self._listed(api_key, name) is not None

    async def _listed(self, api_key: str, name: str) -> Secret | None:
        async def load() -> dict[str, Any]:
            return {s.name: s for s in await self.client.list_secrets(api_key)}

        listing = await self._secrets.get((credential_fingerprint(api_key),), load, max_age=SECRETS_LISTING_MAX_AGE)
        return cast(Secret | None, listing.get(name))

    async def _release_secrets(self, api_key: str, spec: DesiredGatewayEndpoint, records: list[dict[str, Any]]) -> None:
        """Delete the Baseten secrets no endpoint refers to any more (ours or anyone else's)."""
        if not records:
            return
        in_use = {
            target.secret_id
            for endpoint in (await self.list_all(api_key, spec)).values()
            for target in endpoint.targets
        }
        for record in records:
            if record.get("id") in in_use:
                continue
            if spec.shared_elsewhere(SecretKeyRef(name=record["secretName"], key=record["key"])):
                continue
            with contextlib.suppress(NotFound):
                await self.client.delete_secret(api_key, record["name"])
            self._secrets.drop((credential_fingerprint(api_key),), record["name"])

    async def get(self, api_key: str, spec: Any, upstream_id: str) -> Endpoint:
        return await self.client.get(api_key, upstream_id)

    async def list_all(self, api_key: str, spec: Any) -> dict[str, Endpoint]:
        return {endpoint.id: endpoint async for endpoint in self.client.list(api_key)}

    def list_scope(self, desired: DesiredGatewayEndpoint) -> str:
        return ""

    def desired_status(self, desired: DesiredGatewayEndpoint) -> dict[str, Any]:
        return {"secrets": desired.secrets or None}

    def unique_key(self, spec: DesiredGatewayEndpoint) -> str:
        return spec.slug

    def item_key(self, item: Endpoint) -> str:
        return item.slug

    def item_created(self, item: Endpoint) -> float | None:
        return unix_time(item.created_at)

    async def create(self, api_key: str, spec: DesiredGatewayEndpoint) -> Endpoint:
        return await self.client.create(api_key, spec.payload())

    def diff(self, spec: DesiredGatewayEndpoint, observed: Endpoint) -> dict[str, Any] | None:
        changes: dict[str, Any] = {}
        if spec.slug != observed.slug:
            changes["slug"] = spec.slug
        desired = [t.normalised() for t in spec.upstream_targets()]
        if desired != [t.normalised() for t in observed.targets]:
            changes["targets"] = spec.payload()["targets"]
        return changes or None

    async def update(
        self, api_key: str, observed: Endpoint, spec: DesiredGatewayEndpoint, changes: dict[str, Any]
    ) -> Endpoint:
        current = observed
        if "slug" in changes:
            try:
                current = await self.client.patch(api_key, observed.id, {"slug": changes["slug"]})
            except InvalidSpec:
                current = observed
            if current.slug != spec.slug:
                # Newer Baseten API: slugs are immutable (refused, or silently kept). The loop
                # replaces it: new endpoint first, so the route never disappears, then the old one.
                raise ReplaceInstead(("slug",))
        if "targets" in changes:
            current = await self.client.patch(api_key, current.id, {"targets": changes["targets"]})
            await self._release_secrets(api_key, spec, spec.stale)
        return current

    async def delete(self, api_key: str, spec: DesiredGatewayEndpoint, upstream_id: str) -> list[Event]:
        await self.client.delete(api_key, upstream_id)
        return []

    async def release(self, api_key: str, desired: DesiredGatewayEndpoint) -> None:
        await self._release_secrets(api_key, desired, desired.secrets + desired.stale)

    def upstream_id(self, observed: Endpoint) -> str:
        return observed.id

    def readiness(self, spec: DesiredGatewayEndpoint, observed: Endpoint) -> Readiness:
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

    def connection_details(self, desired: DesiredGatewayEndpoint, observed: Endpoint) -> dict[str, str]:
        # The slug is the model string clients send to the gateway.
        return {
            "MODEL": observed.slug,
            "SLUG": observed.slug,
            "BASE_URL": self.inference_url,
            "ENDPOINT_ID": observed.id,
        }

    def status_fields(self, observed: Endpoint) -> dict[str, Any]:
        return {
            "id": observed.id,
            "slug": observed.slug,
            "region": observed.region,
            "createdAt": observed.created_at,
            "updatedAt": observed.updated_at,
        }
