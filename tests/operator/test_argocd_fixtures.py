"""The Argo CD health fixtures are statuses the real operator writes.

Each scenario drives the operator (against the emulator and a simulator) into one situation,
reads the resource as Argo CD would see it, and normalizes what changes from run to run (the
namespace, uids, upstream ids, timestamps). The result must match the committed file in
``deploy/argocd/resource_customizations/aigw.dev/<Kind>/testdata/``, so a fixture cannot drift from
what the operator writes; ``health_test.yaml`` must give each the health the scenario declares
(tests/packaging/test_argocd_health.py runs the Lua over them). With AIGW_WRITE_ARGOCD_FIXTURES=1
the files are written instead (the expected health from here, the message from the Lua), for a
human to review in the diff.
"""

from __future__ import annotations

import os
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr

from aigw_operator.base.api import EXTERNAL_ID_ANNOTATION, PAUSED_ANNOTATION
from aigw_testbed.kubectl import Kube, condition
from aigw_testbed.simulators.base import SimulatorServer
from aigw_testbed.simulators.together import TogetherSimulator
from tests.conftest import OPENAI_KEY
from tests.operator.conftest import KubeEnv, OperatorRunner, make_settings
from tests.operator.test_fault_matrix import DRIVERS, Driver

REPO = Path(__file__).resolve().parents[2]
CUSTOMIZATIONS = REPO / "deploy" / "argocd" / "resource_customizations" / "aigw.dev"
WRITE = os.environ.get("AIGW_WRITE_ARGOCD_FIXTURES") == "1"
NAME = "example"
STAMP = "2026-01-01T00:00:00Z"
FAST = {"aigw.dev/resync-seconds": "1"}


@dataclass
class Case:
    """One scenario: the operator running against ``sim``; ``drive`` returns the resource to capture."""

    env: KubeEnv
    driver: Driver
    sim: SimulatorServer
    operator: OperatorRunner

    @property
    def kube(self) -> Kube:
        return self.env.kube

    async def create(self, spec: dict[str, Any] | None = None, name: str = NAME, **annotations: str) -> None:
        response = await self.kube.create(
            self.driver.kind, self.driver.plural, name, spec or self.driver.spec(), annotations=annotations or None
        )
        assert response.status_code == 201, response.text

    async def reason(
        self, reason: str, status: str = "False", type_: str = "Ready", name: str = NAME
    ) -> dict[str, Any]:
        return await self.kube.wait_condition(self.driver.plural, name, type_, status, reason=reason, timeout=20)

    async def ready(self, name: str = NAME) -> dict[str, Any]:
        return await self.reason("Available", "True", name=name)

    async def get(self) -> dict[str, Any]:
        obj = await self.kube.get(self.driver.plural, NAME)
        assert obj is not None
        return obj


Drive = Callable[[Case], Awaitable[dict[str, Any]]]


async def no_status(c: Case) -> dict[str, Any]:
    await c.operator.stop()
    await c.create()
    return await c.get()


async def available(c: Case) -> dict[str, Any]:
    await c.create()
    return await c.ready()


async def invalid_spec(c: Case) -> dict[str, Any]:
    c.sim.faults.fail_next(10_000, status=400)
    await c.create()
    return await c.reason("InvalidSpec")


async def spec_just_fixed(c: Case) -> dict[str, Any]:
    """The refused spec was changed and the operator has not seen the change yet."""
    await invalid_spec(c)
    await c.operator.stop()
    response = await c.kube.patch_spec(c.driver.plural, NAME, c.driver.update)
    assert response.status_code == 200, response.text
    return await c.get()


async def credentials_missing(c: Case) -> dict[str, Any]:
    await c.create({**c.driver.spec(), "credentialsSecretRef": {"name": "not-there-yet"}})
    return await c.reason("CredentialsMissing")


async def access_denied(c: Case) -> dict[str, Any]:
    await c.kube.put_secret("wrong-key", {"apiKey": "not-a-valid-key"})
    await c.create({**c.driver.spec(), "credentialsSecretRef": {"name": "wrong-key"}})
    return await c.reason("AccessDenied")


async def upstream_unavailable(c: Case) -> dict[str, Any]:
    c.sim.faults.fail_next(10_000, status=503)
    await c.create()
    return await c.reason("UpstreamUnavailable")


async def rate_limited(c: Case) -> dict[str, Any]:
    c.sim.faults.rate_limit_burst(10_000, retry_after=30)
    await c.create()
    return await c.reason("RateLimited")


async def upstream_deleted(c: Case) -> dict[str, Any]:
    await c.create({**c.driver.spec(), "deletionPolicy": "Orphan"}, **FAST)
    obj = await c.ready()
    c.driver.delete_out_of_band(c.sim, obj["status"]["id"])
    return await c.reason("UpstreamDeleted")


async def already_managed(c: Case) -> dict[str, Any]:
    await c.create(name="first")
    first = await c.ready(name="first")
    await c.create(**{EXTERNAL_ID_ANNOTATION: first["status"]["id"]})
    return await c.reason("AlreadyManaged")


async def already_exists(c: Case) -> dict[str, Any]:
    """An object under the same unique key that this resource did not make: left alone."""
    spec = c.driver.spec()
    if c.driver.kind == "Model":
        spec["name"] = "shared-name"  # a Model's registry name is its resource's name otherwise
    await c.create({**spec, "deletionPolicy": "Orphan"}, name="first")
    await c.ready(name="first")
    assert (await c.kube.delete(c.driver.plural, "first")).status_code in (200, 202)
    await c.kube.wait_gone(c.driver.plural, "first")
    await c.create(spec)
    return await c.reason("AlreadyExists")


# The Settings field of each driver's upstream, by its make_settings() URL argument.
UPSTREAM_SETTING = {
    "baseten_url": "baseten",
    "ngrok_url": "ngrok",
    "registry_url": "model_registry",
    "together_url": "together",
}


async def credentials_not_permitted(c: Case) -> dict[str, Any]:
    """The operator's default key, in a namespace that may not spend it."""
    await c.operator.stop()
    setting = UPSTREAM_SETTING[c.driver.url_setting]
    settings = make_settings(c.env, **{"baseten_url": "http://127.0.0.1:9", c.driver.url_setting: c.sim.url})
    scoped = getattr(settings, setting).model_copy(update={"api_key": SecretStr("a-default-key-1234")})
    runner = OperatorRunner(settings.model_copy(update={"operator_namespace": "aigw-system", setting: scoped}))
    await runner.start()
    try:
        spec = c.driver.spec()
        spec.pop("credentialsSecretRef", None)
        await c.create(spec)
        return await c.reason("CredentialsNotPermitted")
    finally:
        await runner.stop()


async def deleting(c: Case) -> dict[str, Any]:
    await available(c)
    await c.operator.stop()
    assert (await c.kube.delete(c.driver.plural, NAME)).status_code in (200, 202)
    return await c.get()


async def deletion_blocked(c: Case) -> dict[str, Any]:
    await available(c)
    c.sim.faults.fail_next(10_000, status=503)
    assert (await c.kube.delete(c.driver.plural, NAME)).status_code in (200, 202)
    return await c.reason("DeletionBlocked")


async def reconcile_paused(c: Case) -> dict[str, Any]:
    await available(c)
    response = await c.kube.patch_meta(c.driver.plural, NAME, {"annotations": {PAUSED_ANNOTATION: "true"}})
    assert response.status_code == 200, response.text
    return await c.reason("ReconcilePaused", type_="Synced")


async def deletion_paused(c: Case) -> dict[str, Any]:
    await reconcile_paused(c)
    assert (await c.kube.delete(c.driver.plural, NAME)).status_code in (200, 202)
    obj = await c.reason("DeletionPaused", type_="Synced")
    # Let go, so that the namespace can go: the deletion resumes once the pause is lifted.
    response = await c.kube.patch_meta(c.driver.plural, NAME, {"annotations": {PAUSED_ANNOTATION: None}})
    assert response.status_code == 200, response.text
    await c.kube.wait_gone(c.driver.plural, NAME, timeout=20)
    return obj


async def connection_details_conflict(c: Case) -> dict[str, Any]:
    """The ConfigMap spec.writeConnectionDetailsTo names exists and is not the resource's."""
    path = f"/api/v1/namespaces/{c.kube.namespace}/configmaps"
    response = await c.kube.http.post(path, json={"metadata": {"name": "taken"}, "data": {"MINE": "yes"}})
    assert response.status_code == 201, response.text
    await c.create({**c.driver.spec(), "writeConnectionDetailsTo": {"configMap": "taken"}})
    return await c.reason("ConnectionDetailsConflict")


async def upstream_drift(c: Case) -> dict[str, Any]:
    """Switched to ObserveOnly with a spec the upstream object does not match: reported, not corrected."""
    await available(c)
    change = {"managementPolicy": "ObserveOnly", **c.driver.update}
    response = await c.kube.patch_spec(c.driver.plural, NAME, change)
    assert response.status_code == 200, response.text
    return await c.reason("UpstreamDrift", type_="Synced")


async def upstream_not_found(c: Case) -> dict[str, Any]:
    """ObserveOnly, and no upstream object holds the spec's key: nothing is created."""
    await c.create({**c.driver.spec(), "managementPolicy": "ObserveOnly"})
    return await c.reason("UpstreamNotFound")


GENERIC: dict[str, tuple[str, Drive]] = {
    "progressing_no_status": ("Progressing", no_status),
    "suspended_reconcile_paused": ("Suspended", reconcile_paused),
    "suspended_deletion_paused": ("Suspended", deletion_paused),
    "healthy_available": ("Healthy", available),
    "degraded_invalid_spec": ("Degraded", invalid_spec),
    "progressing_spec_just_fixed": ("Progressing", spec_just_fixed),
    "progressing_credentials_missing": ("Progressing", credentials_missing),
    "degraded_access_denied": ("Degraded", access_denied),
    "progressing_upstream_unavailable": ("Progressing", upstream_unavailable),
    "progressing_rate_limited": ("Progressing", rate_limited),
    "degraded_upstream_deleted": ("Degraded", upstream_deleted),
    "degraded_already_managed": ("Degraded", already_managed),
    "degraded_credentials_not_permitted": ("Degraded", credentials_not_permitted),
    "progressing_deleting": ("Progressing", deleting),
    "degraded_deletion_blocked": ("Degraded", deletion_blocked),
    "degraded_connection_details_conflict": ("Degraded", connection_details_conflict),
    "degraded_upstream_drift": ("Degraded", upstream_drift),
}


async def region_mismatch(c: Case) -> dict[str, Any]:
    """An endpoint in EU adopted (named by its id) by a resource that says UNRESTRICTED (region is
    set at creation)."""
    eu = {**c.driver.spec(), "region": "EU", "deletionPolicy": "Orphan"}
    await c.create(eu, name="eu")
    made = await c.ready(name="eu")
    assert (await c.kube.delete(c.driver.plural, "eu")).status_code in (200, 202)
    await c.kube.wait_gone(c.driver.plural, "eu")
    await c.create({**c.driver.spec(), "region": "UNRESTRICTED"}, **{EXTERNAL_ID_ANNOTATION: made["status"]["id"]})
    return await c.reason("RegionMismatch")


async def recreate_required(c: Case) -> dict[str, Any]:
    """The registry cannot change a model's key in place, and replacePolicy is Never."""
    await c.kube.put_secret("openai", {"apiKey": OPENAI_KEY}, labels={"aigw.dev/watch": "true"})
    await c.create()
    await c.ready()
    await c.kube.put_secret("openai", {"apiKey": "sk-rotated-key-123456"}, labels={"aigw.dev/watch": "true"})
    return await c.reason("RecreateRequired")


def _together(c: Case) -> TogetherSimulator:
    assert isinstance(c.sim, TogetherSimulator)
    return c.sim


async def starting(c: Case) -> dict[str, Any]:
    _together(c).starting_seconds = 600
    await c.create()
    return await c.reason("Starting")


async def stopped(c: Case) -> dict[str, Any]:
    await c.create({**c.driver.spec(), "state": "Stopped"})
    return await c.reason("Stopped")


async def auto_stopped(c: Case) -> dict[str, Any]:
    await c.create({**c.driver.spec(), "restartAfterAutoStop": False}, **FAST)
    obj = await c.ready()
    _together(c).auto_stop(obj["status"]["id"])
    return await c.reason("AutoStopped")


async def error(c: Case) -> dict[str, Any]:
    await c.create(**FAST)
    obj = await c.ready()
    _together(c).fail(obj["status"]["id"])
    return await c.reason("Error")


async def hardware_unavailable(c: Case) -> dict[str, Any]:
    spec = c.driver.spec()
    _together(c).set_availability(spec["model"], spec["hardware"], "unavailable")
    await c.create()
    return await c.reason("HardwareUnavailable")


SPECIFIC: dict[str, dict[str, tuple[str, Drive]]] = {
    "GatewayEndpoint": {"degraded_region_mismatch": ("Degraded", region_mismatch)},
    "Provider": {},
    "Model": {"degraded_recreate_required": ("Degraded", recreate_required)},
    "DedicatedEndpoint": {
        "progressing_starting": ("Progressing", starting),
        "suspended_stopped": ("Suspended", stopped),
        "suspended_auto_stopped": ("Suspended", auto_stopped),
        "degraded_error": ("Degraded", error),
        "degraded_hardware_unavailable": ("Degraded", hardware_unavailable),
    },
}


# Kinds whose upstream has a unique key another object can already hold (Together has none).
UNIQUE_KEY: dict[str, tuple[str, Drive]] = {
    "degraded_already_exists": ("Degraded", already_exists),
    "degraded_upstream_not_found": ("Degraded", upstream_not_found),
}


def scenarios(kind: str) -> dict[str, tuple[str, Drive]]:
    return {**GENERIC, **(UNIQUE_KEY if kind != "DedicatedEndpoint" else {}), **SPECIFIC[kind]}


CASES = [(driver, name) for driver in DRIVERS for name in scenarios(driver.kind)]


# ------------------------------------------------------------------ normalizing


def normalize(obj: dict[str, Any], namespace: str, kind: str) -> dict[str, Any]:
    """The object as a fixture: what varies from run to run replaced by stable stand-ins."""
    meta = obj["metadata"]
    ids: dict[str, str] = {}

    def collect(node: Any, key: str = "") -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                collect(v, k)
        elif isinstance(node, list):
            for v in node:
                collect(v, key)
        elif isinstance(node, str) and (key == "id" or key.endswith("Id")) and key != "providerId" and node:
            ids.setdefault(node, f"{kind.lower()}-id-{len(ids) + 1}")

    collect(obj.get("status") or {})
    external = (meta.get("annotations") or {}).get(EXTERNAL_ID_ANNOTATION)
    if external:
        ids.setdefault(external, f"{kind.lower()}-id-{len(ids) + 1}")

    def clean(node: Any, key: str = "") -> Any:
        if isinstance(node, dict):
            return {k: clean(v, k) for k, v in node.items()}
        if isinstance(node, list):
            return [clean(v, key) for v in node]
        if isinstance(node, str):
            if key in ("lastTransitionTime", "createdAt", "updatedAt", "deletionTimestamp", "creationTimestamp"):
                return STAMP
            if key in ("resourceVersion", "version"):
                return "1"
            for value, stand_in in sorted(ids.items(), key=lambda item: -len(item[0])):
                node = node.replace(value, stand_in)
            return node.replace(namespace, "default")
        return node

    metadata: dict[str, Any] = {"name": meta["name"], "namespace": "default", "generation": meta["generation"]}
    for key in ("annotations", "finalizers", "deletionTimestamp"):
        if meta.get(key):
            metadata[key] = meta[key]
    fixture = {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "metadata": metadata, "spec": obj["spec"]}
    if obj.get("status"):
        fixture["status"] = obj["status"]
    result: dict[str, Any] = clean(fixture)
    return result


def essence(fixture: dict[str, Any]) -> dict[str, Any]:
    """What must not drift: each condition's type, status, reason and message (numbers aside:
    a retry-after or a wait in seconds), which status fields there are, the generations, deletion."""
    status = fixture.get("status") or {}
    return {
        "conditions": [
            (c["type"], c["status"], c["reason"], _mask(c.get("message", ""))) for c in status.get("conditions") or []
        ],
        "fields": sorted(status),
        "generation": fixture["metadata"]["generation"],
        "observedGeneration": status.get("observedGeneration"),
        "deleting": "deletionTimestamp" in fixture["metadata"],
    }


def _mask(message: str) -> str:
    """Ids the upstreams make (named as the object of a message or in the annotation that would
    adopt it), random suffixes (hex, 8 characters or more), then numbers."""
    message = re.sub(r"(object |external-id=)[A-Za-z0-9_-]+", r"\1ID", message)
    return re.sub(r"\d+(\.\d+)?", "N", re.sub(r"[0-9a-f]{8,}", "H", message))


# ------------------------------------------------------------------ the test


@pytest.mark.parametrize(("driver", "scenario"), CASES, ids=[f"{d.kind}-{n}" for d, n in CASES])
async def test_fixture_is_what_the_operator_writes(
    driver: Driver, scenario: str, kube_env: KubeEnv, credentials: str
) -> None:
    sim = driver.simulator()
    async with sim:
        settings = make_settings(kube_env, **{"baseten_url": "http://127.0.0.1:9", driver.url_setting: sim.url})
        operator = OperatorRunner(settings)
        await operator.start()
        try:
            expected, drive = scenarios(driver.kind)[scenario]
            captured = normalize(
                await drive(Case(kube_env, driver, sim, operator)), kube_env.kube.namespace, driver.kind
            )
        finally:
            sim.faults.reset()
            await operator.stop()
    path = CUSTOMIZATIONS / driver.kind / "testdata" / f"{scenario}.yaml"
    if WRITE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(captured, sort_keys=False, width=1000))
        _write_expectation(driver.kind, scenario, expected, captured)
        return
    assert path.is_file(), f"no fixture {path.relative_to(REPO)}: run with AIGW_WRITE_ARGOCD_FIXTURES=1"
    committed = yaml.safe_load(path.read_text())
    assert essence(captured) == essence(committed), f"{path.relative_to(REPO)} drifted from what the operator writes"
    assert _expectations(driver.kind).get(f"testdata/{scenario}.yaml") == expected
    if scenario == "progressing_spec_just_fixed":
        ready = condition(committed, "Ready")
        # The point of the case: a refusal that no longer applies to the spec in Git.
        assert ready is not None and ready["reason"] == "InvalidSpec"
        assert committed["status"]["observedGeneration"] < committed["metadata"]["generation"]


@pytest.mark.parametrize("driver", DRIVERS, ids=[d.kind for d in DRIVERS])
def test_every_fixture_has_a_scenario(driver: Driver) -> None:
    """No fixture outlives its scenario, and health_test.yaml lists exactly the fixtures."""
    files = sorted(p.stem for p in (CUSTOMIZATIONS / driver.kind / "testdata").glob("*.yaml"))
    assert files == sorted(scenarios(driver.kind))
    assert sorted(_expectations(driver.kind)) == sorted(f"testdata/{name}.yaml" for name in files)


def _health_test(kind: str) -> Path:
    return CUSTOMIZATIONS / kind / "health_test.yaml"


def _expectations(kind: str) -> dict[str, str]:
    tests = yaml.safe_load(_health_test(kind).read_text())["tests"]
    return {t["inputPath"]: t["healthStatus"]["status"] for t in tests}


def _write_expectation(kind: str, scenario: str, expected: str, captured: dict[str, Any]) -> None:
    from tests.packaging.test_argocd_health import health

    status, message = health(captured)
    assert status == expected, f"{kind} {scenario}: the script says {status} ({message}), the scenario {expected}"
    path = _health_test(kind)
    tests = yaml.safe_load(path.read_text())["tests"] if path.is_file() else []
    tests = [t for t in tests if t["inputPath"] != f"testdata/{scenario}.yaml"]
    tests.append({"healthStatus": {"status": status, "message": message}, "inputPath": f"testdata/{scenario}.yaml"})
    order = list(scenarios(kind))
    tests.sort(key=lambda t: order.index(Path(t["inputPath"]).stem) if Path(t["inputPath"]).stem in order else 99)
    path.write_text(yaml.safe_dump({"tests": tests}, sort_keys=False, width=1000))
