"""The Argo CD health check, run with a real Lua interpreter (lupa) against sample objects."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import lupa.lua51
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ARGOCD = REPO / "deploy" / "argocd"
HEALTH = (ARGOCD / "health.lua").read_text()


def to_lua(runtime: Any, value: Any) -> Any:
    if isinstance(value, dict):
        return runtime.table_from({k: to_lua(runtime, v) for k, v in value.items()})
    if isinstance(value, list):
        return runtime.table_from([to_lua(runtime, v) for v in value])
    return value


def health(obj: dict[str, Any]) -> tuple[str, str]:
    """Evaluate the script as Argo CD does: `obj` is a global, the chunk returns a table."""
    # Lua 5.1, as Argo CD's gopher-lua: 5.2+ syntax (goto, //, bit operators) fails here too.
    runtime = lupa.lua51.LuaRuntime(unpack_returned_tuples=True)
    assert runtime.eval("_VERSION") == "Lua 5.1"
    runtime.globals().obj = to_lua(runtime, obj)
    result = runtime.execute(HEALTH)
    return str(result["status"]), str(result["message"])


def endpoint(
    generation: int = 1,
    observed: int | None = 1,
    ready: tuple[str, str] | None = ("True", "Available"),
    synced: tuple[str, str] | None = ("True", "ReconcileSuccess"),
    deleting: bool = False,
    with_status: bool = True,
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "aigw.dev/v1alpha1",
        "kind": "GatewayEndpoint",
        "metadata": {"name": "glm", "namespace": "default", "generation": generation},
        "spec": {"slug": "my-org/glm", "targets": [{"provider": "BASETEN", "modelId": "3kZ9xqd"}]},
    }
    if deleting:
        obj["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    if not with_status:
        return obj
    conditions = []
    for type_, condition in (("Ready", ready), ("Synced", synced)):
        if condition is not None:
            conditions.append({"type": type_, "status": condition[0], "reason": condition[1], "message": "details"})
    obj["status"] = {"id": "abc123", "conditions": conditions}
    if observed is not None:
        obj["status"]["observedGeneration"] = observed
    return obj


CASES: dict[str, tuple[dict[str, Any], str]] = {
    "ready and current": (endpoint(), "Healthy"),
    "no status yet": (endpoint(with_status=False), "Progressing"),
    "empty status": ({**endpoint(with_status=False), "status": {}}, "Progressing"),
    "stale generation": (endpoint(generation=2, observed=1), "Progressing"),
    "no observedGeneration": (endpoint(observed=None), "Progressing"),
    "no Ready condition yet": (endpoint(ready=None, synced=None), "Progressing"),
    "creating": (endpoint(ready=("False", "Creating")), "Progressing"),
    "ready unknown": (endpoint(ready=("Unknown", "Reconciling")), "Progressing"),
    "upstream unavailable": (
        endpoint(ready=("False", "UpstreamUnavailable"), synced=("False", "UpstreamUnavailable")),
        "Progressing",
    ),
    "rate limited": (endpoint(ready=("False", "RateLimited"), synced=("False", "RateLimited")), "Progressing"),
    "deleting": (endpoint(deleting=True), "Progressing"),
    "invalid spec": (endpoint(ready=("False", "InvalidSpec"), synced=("False", "InvalidSpec")), "Degraded"),
    # A refused spec change: the old spec still serves, but the new one will never apply by itself.
    "invalid spec while serving the old one": (
        endpoint(generation=2, observed=2, synced=("False", "InvalidSpec")),
        "Degraded",
    ),
    "invalid spec reported before the generation": (
        endpoint(generation=3, observed=2, ready=("False", "InvalidSpec")),
        "Degraded",
    ),
    "access denied": (endpoint(ready=("False", "AccessDenied"), synced=("False", "AccessDenied")), "Degraded"),
    "credentials missing": (endpoint(ready=("False", "CredentialsMissing")), "Degraded"),
    "upstream deleted (Orphan)": (endpoint(ready=("False", "UpstreamDeleted")), "Degraded"),
    "deletion blocked": (endpoint(deleting=True, ready=("False", "DeletionBlocked")), "Degraded"),
    "slug owned by another resource": (endpoint(ready=("False", "AlreadyManaged")), "Degraded"),
    "recreate required": (endpoint(ready=("False", "RecreateRequired")), "Degraded"),
    "dedicated endpoint in ERROR": (endpoint(ready=("False", "Error")), "Degraded"),
    "dedicated endpoint stopped": (endpoint(ready=("False", "Stopped")), "Suspended"),
    "dedicated endpoint auto-stopped": (endpoint(ready=("False", "AutoStopped")), "Suspended"),
    "dedicated endpoint starting": (endpoint(ready=("False", "Starting")), "Progressing"),
    "hardware unavailable": (endpoint(ready=("False", "HardwareUnavailable")), "Progressing"),
    "transient sync failure while serving": (
        endpoint(synced=("False", "UpstreamUnavailable")),
        "Healthy",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_health(case: str) -> None:
    obj, expected = CASES[case]
    status, message = health(copy.deepcopy(obj))
    assert status == expected, message
    assert message


def test_message_carries_reason_and_message() -> None:
    assert health(endpoint(ready=("False", "InvalidSpec"))) == ("Degraded", "InvalidSpec: details")


def test_argocd_cm_snippet_embeds_the_script_for_every_kind() -> None:
    from aigw_operator.crds import all_kinds

    configmap = yaml.safe_load((ARGOCD / "argocd-cm.yaml").read_text())
    assert configmap["kind"] == "ConfigMap" and configmap["metadata"]["name"] == "argocd-cm"
    expected = {f"resource.customizations.health.aigw.dev_{info.kind}" for info in all_kinds()}
    assert set(configmap["data"]) == expected
    for key, script in configmap["data"].items():
        assert script == HEALTH, f"{key} differs from deploy/argocd/health.lua"


@pytest.mark.parametrize("name", ["application.yaml", "resources-application.yaml"])
def test_application_examples_parse(name: str) -> None:
    app = yaml.safe_load((ARGOCD / name).read_text())
    assert app["kind"] == "Application"
    options = app["spec"]["syncPolicy"]["syncOptions"]
    if name == "resources-application.yaml":
        assert "SkipDryRunOnMissingResource=true" in options
    else:
        assert app["spec"]["source"]["path"] == "deploy/helm/aigw-operator"
        assert (REPO / app["spec"]["source"]["path"] / "Chart.yaml").exists()
