"""The Argo CD health check, run with a real Lua interpreter (lupa, Lua 5.1 as Argo CD's
gopher-lua) over the fixtures in Argo CD's own layout (statuses the operator wrote, see
tests/operator/test_argocd_fixtures.py) and over hand-built edge cases; and the Application
examples against the options Argo CD documents."""

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
    # Left alone on purpose (aigw.dev/paused): Ready as it was, a spec changed meanwhile not seen.
    "paused": (endpoint(synced=("False", "ReconcilePaused")), "Suspended"),
    "paused with a spec changed meanwhile": (
        endpoint(generation=2, observed=1, synced=("False", "ReconcilePaused")),
        "Suspended",
    ),
    "paused while refused": (
        endpoint(ready=("False", "InvalidSpec"), synced=("False", "ReconcilePaused")),
        "Suspended",
    ),
    "paused deletion": (endpoint(deleting=True, synced=("False", "DeletionPaused")), "Suspended"),
    "invalid spec": (endpoint(ready=("False", "InvalidSpec"), synced=("False", "InvalidSpec")), "Degraded"),
    # A refused spec change: the old spec still serves, but the new one will never apply by itself.
    "invalid spec while serving the old one": (
        endpoint(generation=2, observed=2, synced=("False", "InvalidSpec")),
        "Degraded",
    ),
    # The spec was changed since the refusal: the operator has yet to try the new one.
    "invalid spec of an older generation": (
        endpoint(generation=3, observed=2, ready=("False", "InvalidSpec")),
        "Progressing",
    ),
    "access denied": (endpoint(ready=("False", "AccessDenied"), synced=("False", "AccessDenied")), "Degraded"),
    # The operator recovers by itself once the Secret appears (External Secrets, a later sync).
    "credentials missing": (endpoint(ready=("False", "CredentialsMissing")), "Progressing"),
    "upstream deleted (Orphan)": (endpoint(ready=("False", "UpstreamDeleted")), "Degraded"),
    "deletion blocked": (endpoint(deleting=True, ready=("False", "DeletionBlocked")), "Degraded"),
    "slug owned by another resource": (endpoint(ready=("False", "AlreadyManaged")), "Degraded"),
    "recreate required": (endpoint(ready=("False", "RecreateRequired")), "Degraded"),
    "dedicated endpoint in ERROR": (endpoint(ready=("False", "Error")), "Degraded"),
    "dedicated endpoint stopped": (endpoint(ready=("False", "Stopped")), "Suspended"),
    "dedicated endpoint auto-stopped": (endpoint(ready=("False", "AutoStopped")), "Suspended"),
    "dedicated endpoint starting": (endpoint(ready=("False", "Starting")), "Progressing"),
    # Not Progressing for ever: only a human can pick other hardware (see health.lua).
    "hardware unavailable": (endpoint(ready=("False", "HardwareUnavailable")), "Degraded"),
    "being deleted, generation moved on": (endpoint(generation=2, observed=1, deleting=True), "Progressing"),
    "deletion blocked, stale generation": (
        endpoint(generation=2, observed=1, deleting=True, ready=("False", "DeletionBlocked")),
        "Degraded",
    ),
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


# ------------------------------------------------------------------ Argo CD's fixture layout

CUSTOMIZATIONS = ARGOCD / "resource_customizations" / "aigw.dev"


def fixture_tests() -> list[tuple[str, str, dict[str, str]]]:
    found = []
    for kind_dir in sorted(CUSTOMIZATIONS.iterdir()):
        for test in yaml.safe_load((kind_dir / "health_test.yaml").read_text())["tests"]:
            found.append((kind_dir.name, test["inputPath"], test["healthStatus"]))
    return found


FIXTURES = fixture_tests()


def test_one_directory_per_kind_each_with_the_one_script() -> None:
    from aigw_operator.crds import all_kinds

    assert sorted(p.name for p in CUSTOMIZATIONS.iterdir()) == sorted(info.kind for info in all_kinds())
    for kind_dir in CUSTOMIZATIONS.iterdir():
        script = kind_dir / "health.lua"
        # A link to deploy/argocd/health.lua: one copy to change (cp -rL makes Argo CD's copies).
        assert script.is_symlink() and script.resolve() == (ARGOCD / "health.lua").resolve()
        inputs = {t["inputPath"] for t in yaml.safe_load((kind_dir / "health_test.yaml").read_text())["tests"]}
        assert inputs == {f"testdata/{p.name}" for p in (kind_dir / "testdata").glob("*.yaml")}


@pytest.mark.parametrize(("kind", "path", "expected"), FIXTURES, ids=[f"{k}-{p}" for k, p, _ in FIXTURES])
def test_health_of_each_fixture(kind: str, path: str, expected: dict[str, str]) -> None:
    """As Argo CD's resource_customizations test runs it: the object from inputPath, the status
    and message health_test.yaml gives."""
    obj = yaml.safe_load((CUSTOMIZATIONS / kind / path).read_text())
    assert obj["kind"] == kind and obj["apiVersion"] == "aigw.dev/v1alpha1"
    assert health(obj) == (expected["status"], expected["message"])


def test_the_fixtures_cover_every_health_status_and_reason() -> None:
    statuses = {expected["status"] for _, _, expected in FIXTURES}
    assert statuses == {"Healthy", "Progressing", "Degraded", "Suspended"}
    for kind_dir in CUSTOMIZATIONS.iterdir():
        reasons = set()
        for path in (kind_dir / "testdata").glob("*.yaml"):
            for c in (yaml.safe_load(path.read_text()).get("status") or {}).get("conditions") or []:
                reasons.add(c["reason"])
        engine = {"Available", "ReconcileSuccess", "InvalidSpec", "CredentialsMissing", "AccessDenied", "RateLimited"}
        engine |= {"UpstreamUnavailable", "UpstreamDeleted", "AlreadyManaged", "DeletionBlocked"}
        assert engine <= reasons, (kind_dir.name, engine - reasons)


# ------------------------------------------------------------------ the Application examples

# Documented by Argo CD: docs/user-guide/sync-options.md (spec.syncPolicy.syncOptions) and
# docs/user-guide/diff-strategies.md, compare-options.md (the argocd.argoproj.io/compare-options
# annotation). A compare option under syncOptions is silently ignored by Argo CD.
SYNC_OPTIONS = {
    "Prune",
    "Validate",
    "SkipDryRunOnMissingResource",
    "Delete",
    "ApplyOutOfSyncOnly",
    "PrunePropagationPolicy",
    "PruneLast",
    "Replace",
    "Force",
    "ServerSideApply",
    "ClientSideApplyMigration",
    "FailOnSharedResource",
    "RespectIgnoreDifferences",
    "CreateNamespace",
}
COMPARE_OPTIONS = {"ServerSideDiff", "IncludeMutationWebhook", "IgnoreExtraneous"}
# The Application fields these examples may use (argoproj.io/v1alpha1 ApplicationSpec).
SPEC_FIELDS = {"project", "source", "sources", "destination", "syncPolicy", "ignoreDifferences", "info"}
SYNC_POLICY_FIELDS = {"automated", "syncOptions", "retry", "managedNamespaceMetadata"}


def _options(text: str) -> dict[str, str]:
    pairs = [item.strip().split("=", 1) for item in text.split(",") if item.strip()]
    assert all(len(pair) == 2 for pair in pairs), text
    return dict(pairs)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["application.yaml", "resources-application.yaml"])
def test_application_examples_use_documented_options_where_argo_cd_reads_them(name: str) -> None:
    app = yaml.safe_load((ARGOCD / name).read_text())
    assert (app["apiVersion"], app["kind"]) == ("argoproj.io/v1alpha1", "Application")
    assert set(app["spec"]) <= SPEC_FIELDS
    assert set(app["spec"]["syncPolicy"]) <= SYNC_POLICY_FIELDS
    sync = _options(",".join(app["spec"]["syncPolicy"].get("syncOptions", [])))
    assert set(sync) <= SYNC_OPTIONS, f"not sync options: {set(sync) - SYNC_OPTIONS}"
    annotations = app["metadata"].get("annotations") or {}
    compare = _options(annotations.get("argocd.argoproj.io/compare-options", ""))
    assert set(compare) <= COMPARE_OPTIONS
    if name == "resources-application.yaml":
        assert sync["SkipDryRunOnMissingResource"] == "true"
        # Server-side diff: a compare option, so the annotation (never syncOptions).
        assert compare == {"ServerSideDiff": "true"}
    else:
        assert app["spec"]["source"]["path"] == "deploy/helm/aigw-operator"
        assert (REPO / app["spec"]["source"]["path"] / "Chart.yaml").exists()


def test_the_option_check_catches_a_compare_option_under_sync_options() -> None:
    """The mistake this file once had: ServerSideDiff=true under syncOptions."""
    assert not set(_options("SkipDryRunOnMissingResource=true,ServerSideDiff=true")) <= SYNC_OPTIONS
