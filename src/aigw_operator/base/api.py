"""Building blocks shared by every kind: camelCase models, secret references,
deletion policy, CEL rule helpers and the status fields every kind reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

DeletionPolicy = Literal["Delete", "Orphan"]

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


class SecretKeyRef(CamelModel):
    """A key in a Kubernetes Secret in the resource's own namespace."""

    name: str = Field(
        description="Name of the Secret, in the same namespace as this resource.",
        min_length=1,
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
    )
    key: str = Field(
        default="apiKey",
        description="Key within the Secret's data.",
        min_length=1,
        max_length=253,
        pattern=r"^[-._a-zA-Z0-9]+$",
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
    spec_rules: tuple[dict[str, str], ...] = field(default=())
