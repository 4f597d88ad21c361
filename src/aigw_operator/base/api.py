"""Building blocks shared by every kind: camelCase models, secret references,
deletion policy, CEL rule helpers and the status fields every kind reports."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

DeletionPolicy = Literal["Delete", "Orphan"]
# Full: create, update, delete. NoDelete: create and update, never delete the upstream object
# (neither with the resource nor to replace it). ObserveOnly: read only; adopts by id or key.
ManagementPolicy = Literal["Full", "ObserveOnly", "NoDelete"]

# Lets a user point a resource at an existing upstream object (adoption by id).
EXTERNAL_ID_ANNOTATION = "aigw.dev/external-id"
# Per-resource override of the resync interval, in seconds.
RESYNC_ANNOTATION = "aigw.dev/resync-seconds"
# "true": the operator leaves the resource alone (no upstream call, no write but one status
# update and one Event saying so), its deletion included, until the annotation goes.
PAUSED_ANNOTATION = "aigw.dev/paused"
# Any new value asks for a reconcile now, a refused one included (as Crossplane and Flux users do).
RECONCILE_REQUEST_ANNOTATION = "aigw.dev/reconcile-requested-at"


def cel(rule: str, message: str, *, field_path: str | None = None, reason: str | None = None) -> dict[str, str]:
    """One ``x-kubernetes-validations`` entry."""
    entry = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    if reason:
        entry["reason"] = reason
    return entry


def validations(*rules: dict[str, str]) -> dict[str, Any]:
    return {"x-kubernetes-validations": list(rules)}


def immutable(what: str) -> dict[str, Any]:
    return validations(cel("self == oldSelf", f"{what} is immutable"))


class CamelModel(BaseModel):
    """Python names in snake_case, Kubernetes names in camelCase."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


class SecretKeyRef(CamelModel):
    """A key in a Kubernetes Secret in the resource's own namespace."""

    name: str = Field(
        description="Name of the Secret, in the same namespace as this resource.",
        min_length=1,
        max_length=253,
        pattern=DNS_SUBDOMAIN,
    )
    key: str = Field(
        default="apiKey",
        description="Key within the Secret's data.",
        min_length=1,
        max_length=253,
        pattern=r"^[-._a-zA-Z0-9]+$",
    )


class ConnectionDetailsTarget(CamelModel):
    """Where the operator writes what an application needs to call the upstream object."""

    model_config = CamelModel.model_config | {
        "json_schema_extra": validations(
            cel("has(self.configMap) != has(self.secret)", "set exactly one of configMap and secret"),
            cel(
                "!has(self.includeApiKeyAs) || has(self.secret)",
                "includeApiKeyAs needs secret: an API key is never written to a ConfigMap",
                field_path=".includeApiKeyAs",
            ),
        )
    }

    config_map: str | None = Field(
        default=None,
        description="Name of a ConfigMap in this namespace to write the connection details to.",
        min_length=1,
        max_length=253,
        pattern=DNS_SUBDOMAIN,
    )
    secret: str | None = Field(
        default=None,
        description="Name of a Secret in this namespace to write the connection details to.",
        min_length=1,
        max_length=253,
        pattern=DNS_SUBDOMAIN,
    )
    include_api_key_as: str | None = Field(
        default=None,
        description="Only with secret: also write the API key this resource uses, under this key. "
        "Unset: no API key is written.",
        min_length=1,
        max_length=253,
        pattern=r"^[-._a-zA-Z0-9]+$",
    )


def management_policy_field() -> Any:
    return Field(
        default=None,
        description="Full: create, update and delete the upstream object. NoDelete: create and update it, "
        "never delete it (not with this resource, not to replace it). ObserveOnly: only read it (named by "
        "aigw.dev/external-id or by its unique key), report drift from the spec without correcting it, "
        "never delete it. Unset: Full.",
    )


def connection_details_field() -> Any:
    return Field(
        default=None,
        description="Write what a client needs to call the upstream object (keys documented per kind) to "
        "a ConfigMap or Secret in this namespace, owned by this resource.",
    )


# Rules every kind's spec carries: a policy that never deletes cannot be asked to delete.
MANAGEMENT_RULES = (
    cel(
        "!has(self.managementPolicy) || self.managementPolicy == 'Full' || "
        "!has(self.deletionPolicy) || self.deletionPolicy != 'Delete'",
        "deletionPolicy: Delete contradicts managementPolicy ObserveOnly or NoDelete, which never delete "
        "the upstream object; use deletionPolicy: Orphan or leave it unset",
        field_path=".deletionPolicy",
    ),
)
# For kinds whose replacePolicy: Recreate deletes the old object to replace it.
RECREATE_RULE = cel(
    "!has(self.managementPolicy) || self.managementPolicy == 'Full' || "
    "!has(self.replacePolicy) || self.replacePolicy != 'Recreate'",
    "replacePolicy: Recreate deletes the upstream object to replace it, which managementPolicy "
    "ObserveOnly and NoDelete forbid",
    field_path=".replacePolicy",
)


class ConditionModel(CamelModel):
    """A standard Kubernetes condition."""

    type: str = Field(description="Condition type: Ready or Synced.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(default="", description="CamelCase reason for the condition's last transition.")
    message: str = Field(default="", description="Human-readable detail, e.g. what the upstream said.")
    last_transition_time: str = Field(default="", description="When the status last changed (RFC 3339).")
    observed_generation: int | None = Field(default=None, description="The generation this condition describes.")


CONDITIONS_SCHEMA_EXTRA: dict[str, Any] = {
    "x-kubernetes-list-type": "map",
    "x-kubernetes-list-map-keys": ["type"],
}


class ConnectionDetailsStatus(CamelModel):
    """The ConfigMap or Secret the operator last wrote the connection details to."""

    config_map: str | None = Field(default=None, description="The ConfigMap written (in this namespace).")
    secret: str | None = Field(default=None, description="The Secret written (in this namespace).")
    digest: str = Field(
        default="",
        description="SHA-256 of the data written (never the data itself); empty: not written yet, "
        "e.g. because an object of that name exists that this resource does not own.",
    )


class CommonStatus(CamelModel):
    """Status fields every kind reports."""

    id: str | None = Field(default=None, description="The upstream object's id.")
    created_at: str | None = Field(default=None, description="Upstream creation time (RFC 3339).")
    updated_at: str | None = Field(default=None, description="Upstream last update time (RFC 3339).")
    observed_generation: int | None = Field(
        default=None, description="The metadata.generation the operator last reconciled."
    )
    adopted: bool | None = Field(
        default=None,
        description="The upstream object was named by aigw.dev/external-id, not created by this resource: "
        "deleting the resource leaves it in place unless spec.deletionPolicy is Delete.",
    )
    last_handled_reconcile_at: str | None = Field(
        default=None,
        description="The value of the aigw.dev/reconcile-requested-at annotation the operator last acted on.",
    )
    connection_details: ConnectionDetailsStatus | None = Field(
        default=None,
        description="Where spec.writeConnectionDetailsTo was last written, and a digest of what; absent "
        "without spec.writeConnectionDetailsTo.",
    )
    conditions: list[ConditionModel] = Field(
        default_factory=list,
        description="Ready: the upstream object exists and serves the spec. "
        "Synced: the last reconcile reached the upstream and applied the spec.",
        json_schema_extra=CONDITIONS_SCHEMA_EXTRA,
    )


@dataclass(frozen=True)
class PrinterColumn:
    name: str
    json_path: str
    type: str = "string"
    priority: int = 0
    description: str = ""


READY_COLUMNS = (
    PrinterColumn("Ready", '.status.conditions[?(@.type=="Ready")].status', description="Ready condition"),
    PrinterColumn(
        "Synced",
        '.status.conditions[?(@.type=="Synced")].status',
        description="Whether the last reconcile applied the spec",
    ),
    PrinterColumn("Reason", '.status.conditions[?(@.type=="Ready")].reason', description="Why (not) ready"),
)
AGE_COLUMN = PrinterColumn("Age", ".metadata.creationTimestamp", type="date")


@dataclass(frozen=True)
class KindInfo:
    """What Kubernetes needs to know about a kind: names, schema models, columns."""

    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    description: str
    spec_model: type[BaseModel]
    status_model: type[BaseModel]
    printer_columns: tuple[PrinterColumn, ...]
    categories: tuple[str, ...] = ("aigw",)
