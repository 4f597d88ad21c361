"""DedicatedEndpoint: a Together AI dedicated inference endpoint (billed per minute of GPU time)."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

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
from aigw_operator.engine import conditions as cond
from aigw_operator.engine.contract import Adapter, Event, KubeView, Readiness, Replace, Traits
from aigw_operator.engine.listings import Listings
from aigw_operator.upstreams.http import InvalidSpec, Unavailable, credential_fingerprint
from aigw_operator.upstreams.together import Endpoint, TogetherClient

# Seconds a hardware answer serves other creates; a shortage shorter than this is not chased.
HARDWARE_MAX_AGE = 10.0
# How far Together's clock may be behind ours when its creation times are compared with the mark.
CLOCK_SKEW = 300.0
IMMUTABLE_FIELDS = ("model", "hardware", "disableSpeculativeDecoding", "availabilityZone")
IMMUTABLE_RULE = cel(
    "self.replacePolicy == 'Recreate' || ("
    + " && ".join(
        f"(has(self.{f}) == has(oldSelf.{f}) && (!has(self.{f}) || self.{f} == oldSelf.{f}))" for f in IMMUTABLE_FIELDS
    )
    + ")",
    "model, hardware, disableSpeculativeDecoding and availabilityZone cannot be changed on a Together endpoint: "
    "set replacePolicy: Recreate to let the operator delete it and create a new one (with downtime)",
)
MOVING = ("PENDING", "STARTING", "STOPPING")


class AutoscalingSpec(CamelModel):
    """Replica bounds."""

    model_config = CamelModel.model_config | {
        "json_schema_extra": validations(
            cel("self.minReplicas <= self.maxReplicas", "minReplicas must not exceed maxReplicas")
        )
    }

    min_replicas: int = Field(ge=1, le=100, description="Replicas kept even without load (>= 1).")
    max_replicas: int = Field(ge=1, le=100, description="Replicas under load (>= minReplicas).")


class DedicatedEndpointSpec(CamelModel):
    """The desired Together AI dedicated endpoint."""

    model_config = CamelModel.model_config | {"json_schema_extra": validations(IMMUTABLE_RULE, RECREATE_RULE)}

    model: str = Field(min_length=1, max_length=256, description="Model to deploy, e.g. meta-llama/Llama-3-8b-chat-hf.")
    hardware: str = Field(min_length=1, max_length=128, description="Hardware id, e.g. 2x_nvidia_h100_80gb_sxm.")
    autoscaling: AutoscalingSpec = Field(description="Replica bounds.")
    state: Literal["Started", "Stopped"] = Field(
        default="Started", description="Started serves (and bills); Stopped stops the endpoint."
    )
    display_name: str | None = Field(
        default=None, max_length=256, description="Human-readable name. Default: <namespace>/<name>."
    )
    inactive_timeout_minutes: int | None = Field(
        default=None, ge=0, le=100000, description="Stop automatically after this many idle minutes; 0 disables."
    )
    disable_speculative_decoding: bool | None = Field(default=None, description="Turn speculative decoding off.")
    availability_zone: str | None = Field(default=None, max_length=64, description="Availability zone to deploy in.")
    restart_after_auto_stop: bool = Field(
        default=True,
        description="When Together stops an idle endpoint while state is Started, start it again (it costs "
        "money); false: report Ready=False reason AutoStopped and leave it stopped.",
    )
    replace_policy: Literal["Never", "Recreate"] = Field(
        default="Never",
        description="Never: refuse changes of model, hardware, disableSpeculativeDecoding or availabilityZone. "
        "Recreate: delete the endpoint, then create the new one (never two billed endpoints; downtime).",
    )
    credentials_secret_ref: SecretKeyRef | None = Field(
        default=None, description="Secret key holding a Together API key. Unset: the operator's default key."
    )
    deletion_policy: DeletionPolicy | None = Field(
        default=None,
        description="Delete: delete the Together endpoint with this resource. Orphan: leave it."
        " Unset: Delete for an object this resource created, Orphan for one it adopted (aigw.dev/external-id).",
    )
    management_policy: ManagementPolicy | None = management_policy_field()
    write_connection_details_to: ConnectionDetailsTarget | None = connection_details_field()


@dataclass(frozen=True)
class DesiredEndpoint:
    spec: DedicatedEndpointSpec
    display_name: str
    # The spec changed since readiness was last reported: whatever it asks for now is the
    # user's wish, not a reaction to what Together did by itself (an auto-stop).
    spec_changed: bool = True
    # managementPolicy: ObserveOnly: nothing moves the endpoint towards the spec.
    observing: bool = False

    def autoscaling(self) -> dict[str, int]:
        return {"min_replicas": self.spec.autoscaling.min_replicas, "max_replicas": self.spec.autoscaling.max_replicas}

    def payload(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "model": self.spec.model,
            "hardware": self.spec.hardware,
            "autoscaling": self.autoscaling(),
            "display_name": self.display_name,
            "state": self.spec.state.upper(),
        }
        if self.spec.inactive_timeout_minutes is not None:
            data["inactive_timeout"] = self.spec.inactive_timeout_minutes
        if self.spec.disable_speculative_decoding is not None:
            data["disable_speculative_decoding"] = self.spec.disable_speculative_decoding
        if self.spec.availability_zone is not None:
            data["availability_zone"] = self.spec.availability_zone
        return data


class DedicatedEndpointStatus(CommonStatus):
    """What the operator last observed in Together."""

    name: str | None = Field(default=None, description="System name used for inference requests.")
    state: str | None = Field(default=None, description="Upstream state: PENDING, STARTING, STARTED, ...")
    hardware: str | None = Field(default=None, description="Hardware the endpoint runs on.")
    min_replicas: int | None = Field(default=None, description="Autoscaling minimum as Together reports it.")
    max_replicas: int | None = Field(default=None, description="Autoscaling maximum as Together reports it.")


INFO = KindInfo(
    kind="DedicatedEndpoint",
    plural="dedicatedendpoints",
    singular="dedicatedendpoint",
    short_names=("dep",),
    description="A Together AI dedicated inference endpoint (billed per minute while it runs).",
    spec_model=DedicatedEndpointSpec,
    status_model=DedicatedEndpointStatus,
    printer_columns=(
        PrinterColumn("Model", ".spec.model", description="Deployed model"),
        PrinterColumn("Hardware", ".spec.hardware", description="Hardware"),
        PrinterColumn("State", ".status.state", description="Upstream state"),
        PrinterColumn("Min", ".spec.autoscaling.minReplicas", type="integer", description="Min replicas"),
        PrinterColumn("Max", ".spec.autoscaling.maxReplicas", type="integer", description="Max replicas"),
        *READY_COLUMNS,
        AGE_COLUMN,
    ),
)


class HardwareUnavailable(Unavailable):
    reason = "HardwareUnavailable"


class DedicatedEndpointAdapter(Adapter[DedicatedEndpointSpec, DesiredEndpoint, Endpoint]):
    """Observe / create / update / delete Together endpoints for the generic loop."""

    info = INFO
    upstream = "together"
    # Endpoints move through states, and each one is billed per minute with no idempotency key.
    traits = Traits(progressing=True, create_guard=True)

    def __init__(self, client: TogetherClient, *, inference_url: str = "") -> None:
        self.client = client
        # Together's OpenAI-compatible base URL, for the connection details.
        self.inference_url = inference_url
        # Hardware offers per key and model, shared by a burst of creates: one call, not one each.
        self._hardware = Listings()
        # The list lacks display name, hardware and autoscaling; display names are not unique.
        self.partial_listing = self
        self.search = self

    async def desire(self, api_key: str, spec: DedicatedEndpointSpec, view: KubeView) -> DesiredEndpoint:
        name = spec.display_name or f"{view.namespace}/{view.name}"
        return DesiredEndpoint(spec, name, view.spec_changed, view.observing)

    def list_scope(self, desired: DesiredEndpoint) -> str:
        return ""

    async def list_all(self, api_key: str, spec: Any) -> dict[str, Endpoint]:
        return {endpoint.id: endpoint for endpoint in await self.client.list(api_key)}

    def listed_unchanged(self, spec: DesiredEndpoint, item: Endpoint, status: Mapping[str, Any]) -> bool:
        """The list lacks display name, hardware and autoscaling: it can only show that an
        endpoint settled where the spec wants it is still there, in the same state."""
        settled = {"Started": ("STARTED", "Available"), "Stopped": ("STOPPED", "Stopped")}[spec.spec.state]
        ready = cond.find(status.get("conditions"), cond.READY)
        return (
            item.state == status.get("state") == settled[0]
            and item.model in (None, spec.spec.model)
            and ready is not None
            and ready.get("reason") == settled[1]
        )

    async def get(self, api_key: str, spec: DesiredEndpoint, upstream_id: str) -> Endpoint:
        return await self.client.get(api_key, upstream_id)

    async def find(self, api_key: str, spec: DesiredEndpoint, since: float) -> Endpoint | None:
        # Only after a create whose outcome is unknown (the loop asks only then): display names
        # are not unique, so never adopt an endpoint this resource did not (maybe) create.
        for item in await self.client.list(api_key):
            if item.model not in (None, spec.spec.model) or _created_before(item.created_at, since - CLOCK_SKEW):
                continue
            candidate = await self.client.get(api_key, item.id)
            if candidate.display_name == spec.display_name and candidate.hardware == spec.spec.hardware:
                return candidate
        return None

    async def create(self, api_key: str, spec: DesiredEndpoint) -> Endpoint:
        model = spec.spec.model
        options = await self._hardware.get(
            (credential_fingerprint(api_key), model),
            lambda: self.client.hardware(api_key, model),
            max_age=HARDWARE_MAX_AGE,
        )
        if spec.spec.hardware not in options:
            # Not a shortage that may pass: this model is not served on that hardware at all.
            offered = ", ".join(sorted(options)) or "none (is the model name right?)"
            raise InvalidSpec(
                "together",
                None,
                f"hardware {spec.spec.hardware} is not offered for {spec.spec.model}; offered: {offered}",
                method="GET",
                route="/hardware",
            )
        if options[spec.spec.hardware] != "available":
            offered = ", ".join(f"{h} ({s})" for h, s in sorted(options.items())) or "none"
            raise HardwareUnavailable(
                "together",
                None,
                f"hardware {spec.spec.hardware} is {options[spec.spec.hardware]} for "
                f"{spec.spec.model}; options: {offered}",
                method="GET",
                route="/hardware",
            )
        return await self.client.create(api_key, spec.payload())

    def diff(self, spec: DesiredEndpoint, observed: Endpoint) -> dict[str, Any] | None:
        changes: dict[str, Any] = {}
        if observed.display_name is not None and observed.display_name != spec.display_name:
            changes["display_name"] = spec.display_name
        if observed.autoscaling is not None and observed.autoscaling.model_dump() != spec.autoscaling():
            changes["autoscaling"] = spec.autoscaling()
        wanted = spec.spec.state.upper()
        # restartAfterAutoStop governs only what happens without a spec change: a spec that
        # changed (e.g. to Started after Stopped) is always carried out.
        restart = spec.spec.restart_after_auto_stop or spec.spec_changed
        if wanted == "STARTED" and observed.state == "STOPPED" and restart:
            changes["state"] = "STARTED"
        elif wanted == "STOPPED" and observed.state in ("PENDING", "STARTING", "STARTED", "ERROR"):
            changes["state"] = "STOPPED"
        return changes or None

    def replacement(self, spec: DesiredEndpoint, observed: Endpoint) -> Replace | None:
        immutable = tuple(
            name
            for name, wanted, actual in (
                ("model", spec.spec.model, observed.model),
                ("hardware", spec.spec.hardware, observed.hardware),
            )
            if actual is not None and wanted != actual
        )
        if not immutable:
            return None
        return Replace(
            immutable,
            # Never two billed endpoints for one resource.
            "delete-first",
            allowed=spec.spec.replace_policy == "Recreate",
            refusal=f"the Together endpoint differs from the spec in {', '.join(immutable)}, which "
            "cannot change in place; set replacePolicy: Recreate to replace it",
        )

    async def update(
        self, api_key: str, observed: Endpoint, spec: DesiredEndpoint, changes: dict[str, Any]
    ) -> Endpoint:
        patch = dict(changes)
        if spec.spec.inactive_timeout_minutes is not None:
            # Not reported back by the API, so it is sent with every other change.
            patch["inactive_timeout"] = spec.spec.inactive_timeout_minutes
        return await self.client.patch(api_key, observed.id, patch)

    def describe_update(self, spec: DesiredEndpoint, changes: dict[str, Any], before: Endpoint) -> list[Event]:
        if changes.get("state") == "STARTED" and before.state == "STOPPED":
            if spec.spec_changed:
                also = ", ".join(sorted(k for k in changes if k != "state"))
                message = "starting the endpoint, as the spec asks" + (f"; updated {also}" if also else "")
                return [("Normal", "Started", message)]
            return [
                (
                    "Warning",
                    "Restarted",
                    "Together had stopped the endpoint (idle timeout?) while the spec says Started; started it again",
                )
            ]
        return []

    def describe_replace(self, spec: DesiredEndpoint, replace: Replace, before: Endpoint) -> list[Event]:
        return [("Warning", "Recreated", f"replaced endpoint {before.id} to change {', '.join(replace.fields)}")]

    async def delete(self, api_key: str, spec: DesiredEndpoint, upstream_id: str) -> list[Event]:
        await self.client.delete(api_key, upstream_id)
        return []

    def upstream_id(self, observed: Endpoint) -> str:
        return observed.id

    def readiness(self, spec: DesiredEndpoint, observed: Endpoint) -> Readiness:
        state = observed.state
        if state in ("PENDING", "STARTING"):
            return Readiness(False, "Starting", f"the endpoint is {state}", progressing=True)
        if state == "STOPPING":
            return Readiness(False, "Stopping", "the endpoint is STOPPING", progressing=True)
        if state == "ERROR":
            return Readiness(False, "Error", "Together reports the endpoint in state ERROR")
        if state == "STOPPED":
            if spec.observing:
                return Readiness(False, "Stopped", "Together reports the endpoint STOPPED")
            if spec.spec.state == "Started":
                return Readiness(
                    False,
                    "AutoStopped",
                    "Together stopped the endpoint; restartAfterAutoStop is "
                    "false, so it stays stopped until the spec changes",
                )
            return Readiness(False, "Stopped", "the endpoint is stopped, as the spec says")
        scaling = observed.autoscaling is not None and observed.autoscaling.model_dump() != spec.autoscaling()
        if scaling and not spec.observing:
            return Readiness(False, "Scaling", "autoscaling is moving to the spec's bounds", progressing=True)
        return Readiness(True, "Available", f"{observed.name} serves {observed.model}")

    def connection_details(self, desired: DesiredEndpoint, observed: Endpoint) -> dict[str, str]:
        # The system name is what a client sends as "model" (MODEL is left out until Together
        # has named the endpoint).
        details = {"BASE_URL": self.inference_url, "STATE": observed.state, "ENDPOINT_ID": observed.id}
        if observed.name:
            details["MODEL"] = observed.name
        return details

    def status_fields(self, observed: Endpoint) -> dict[str, Any]:
        return {
            "id": observed.id,
            "name": observed.name,
            "state": observed.state,
            "hardware": observed.hardware,
            "minReplicas": observed.autoscaling.min_replicas if observed.autoscaling else None,
            "maxReplicas": observed.autoscaling.max_replicas if observed.autoscaling else None,
            "createdAt": observed.created_at,
        }


def _created_before(stamp: str | None, moment: float) -> bool:
    """Whether an upstream creation time is known to be before ``moment`` (a Unix time)."""
    if not stamp:
        return False
    try:
        return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() < moment
    except ValueError:
        return False
