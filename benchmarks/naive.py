"""What a user writing an operator in an afternoon writes for each upstream: one request per
create, update, read and delete, the body mapped from the spec by hand, no diff, no listing.

Used by the naive baseline operator (baseline.py) and by the cost floor (floor.py), so both send
the same upstream requests as each other. Only the kinds marked ``compared`` in workloads.py
(GatewayEndpoint: Baseten; Provider: ngrok) have one: see benchmarks/README.md for why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

JSON = dict[str, Any]


@dataclass(frozen=True)
class NaiveApi:
    base_url_env: str  # the environment variable holding the simulator's URL
    key_env: str
    auth_scheme: str
    collection: str  # POST here to create
    item: str  # GET / PATCH / DELETE here, "{id}" filled in

    def headers(self, key: str) -> dict[str, str]:
        return {"Authorization": f"{self.auth_scheme} {key}"}

    def create_body(self, spec: JSON) -> JSON:
        raise NotImplementedError

    def patch_body(self, spec: JSON) -> JSON:
        raise NotImplementedError

    def status_of(self, obj: JSON) -> JSON:
        """The status fields the naive operator writes from the upstream object."""
        raise NotImplementedError


class BasetenEndpoints(NaiveApi):
    def create_body(self, spec: JSON) -> JSON:
        return {
            "slug": spec["slug"],
            "region": spec.get("region", "UNRESTRICTED"),
            "targets": [_baseten_target(t) for t in spec["targets"]],
        }

    def patch_body(self, spec: JSON) -> JSON:
        return {"slug": spec["slug"], "targets": [_baseten_target(t) for t in spec["targets"]]}

    def status_of(self, obj: JSON) -> JSON:
        return {"id": obj["id"], "slug": obj.get("slug"), "updatedAt": obj.get("updated_at")}


def _baseten_target(target: JSON) -> JSON:
    out: JSON = {"provider": target["provider"]}
    if "modelId" in target:
        out["model_id"] = target["modelId"]
    return out


class NgrokProviders(NaiveApi):
    def create_body(self, spec: JSON) -> JSON:
        return {**self.patch_body(spec), "providerId": spec["providerId"]}

    def patch_body(self, spec: JSON) -> JSON:
        return {
            "name": spec["name"],
            "baseUrl": spec["baseUrl"],
            "models": [{"modelId": m} for m in spec.get("models", [])],
        }

    def status_of(self, obj: JSON) -> JSON:
        return {"id": obj["id"], "updatedAt": obj.get("updatedAt")}


APIS: dict[str, NaiveApi] = {
    "GatewayEndpoint": BasetenEndpoints(
        "BENCH_BASETEN_URL", "BENCH_BASETEN_KEY", "Api-Key", "/v1/gateway/endpoints", "/v1/gateway/endpoints/{id}"
    ),
    "Provider": NgrokProviders("BENCH_NGROK_URL", "BENCH_NGROK_KEY", "Bearer", "/providers", "/providers/{id}"),
}


def ready_condition(now: str, message: str = "") -> JSON:
    return {"type": "Ready", "status": "True", "reason": "Available", "message": message, "lastTransitionTime": now}
