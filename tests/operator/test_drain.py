"""`aigw-operator drain` against the Kubernetes API emulator, with and without the real operator."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import yaml

from aigw_operator import FINALIZER
from aigw_operator.cli import main
from aigw_operator.runtime import drain
from aigw_testbed.kubectl import cr_path
from aigw_testbed.simulators.baseten import BasetenSimulator
from tests.operator.conftest import KubeEnv, OperatorRunner

PLURAL = "gatewayendpoints"
KIND = "GatewayEndpoint"
OTHER_FINALIZER = "example.com/keep"


def spec(slug: str) -> dict[str, object]:
    return {
        "slug": slug,
        "targets": [{"provider": "BASETEN", "modelId": "3kZ9xqd"}],
        "credentialsSecretRef": {"name": "baseten"},
    }


@pytest.fixture
def emulator_url(kube_env: KubeEnv) -> str:
    if kube_env.url is None:
        pytest.fail("drains the whole cluster: only against the emulator")
    return kube_env.url


async def held(env: KubeEnv, name: str, finalizers: list[str]) -> None:
    response = await env.kube.create(KIND, PLURAL, name, spec(f"my-org/{name}"))
    assert response.status_code == 201, response.text
    response = await env.kube.patch_meta(PLURAL, name, {"finalizers": finalizers})
    assert response.status_code == 200, response.text


async def test_drain_releases_every_resource_and_keeps_other_finalizers(kube_env: KubeEnv, emulator_url: str) -> None:
    await held(kube_env, "kept", [FINALIZER])
    await held(kube_env, "shared", [OTHER_FINALIZER, FINALIZER])
    await held(kube_env, "deleting", [FINALIZER])
    assert (await kube_env.kube.delete(PLURAL, "deleting")).status_code in (200, 202)
    stuck = await kube_env.kube.get(PLURAL, "deleting")
    assert stuck is not None and stuck["metadata"]["deletionTimestamp"]

    out = io.StringIO()
    assert await drain.run(emulator_url, verify_after=0, out=out) == 0

    await kube_env.kube.wait_gone(PLURAL, "deleting")
    kept = await kube_env.kube.get(PLURAL, "kept")
    shared = await kube_env.kube.get(PLURAL, "shared")
    assert kept is not None and not kept["metadata"].get("finalizers")
    assert shared is not None and shared["metadata"]["finalizers"] == [OTHER_FINALIZER]
    text = out.getvalue()
    assert "3 resource(s) released" in text
    assert "deleting (being deleted: goes now, its upstream object is orphaned)" in text
    # Nothing left to do: a second drain is a no-op.
    again = io.StringIO()
    assert await drain.run(emulator_url, verify_after=0, out=again) == 0
    assert "0 resource(s) released" in again.getvalue()


async def test_dry_run_changes_nothing(kube_env: KubeEnv, emulator_url: str) -> None:
    await held(kube_env, "kept", [FINALIZER])
    out = io.StringIO()
    assert await drain.run(emulator_url, dry_run=True, verify_after=0, out=out) == 0
    assert f"would release GatewayEndpoint {kube_env.kube.namespace}/kept" in out.getvalue()
    obj = await kube_env.kube.get(PLURAL, "kept")
    assert obj is not None and obj["metadata"]["finalizers"] == [FINALIZER]


async def test_namespace_scope(kube_env: KubeEnv, emulator_url: str) -> None:
    await held(kube_env, "kept", [FINALIZER])
    out = io.StringIO()
    assert await drain.run(emulator_url, namespace="elsewhere", verify_after=0, out=out) == 0
    obj = await kube_env.kube.get(PLURAL, "kept")
    assert obj is not None and obj["metadata"]["finalizers"] == [FINALIZER]


async def test_kubeconfig_login(kube_env: KubeEnv, emulator_url: str, tmp_path: Path) -> None:
    await held(kube_env, "kept", [FINALIZER])
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "emu", "cluster": {"server": emulator_url}}],
                "users": [{"name": "me", "user": {"token": "t0ken"}}],
                "contexts": [{"name": "emu", "context": {"cluster": "emu", "user": "me"}}],
                "current-context": "emu",
            }
        )
    )
    async with drain.client_from_config(kubeconfig=str(kubeconfig)) as http:
        assert http.headers["Authorization"] == "Bearer t0ken"
        report = await drain.drain(http)
    assert [(d.kind, d.name) for d in report.drained] == [(KIND, "kept")]
    obj = await kube_env.kube.get(PLURAL, "kept")
    assert obj is not None and not obj["metadata"].get("finalizers")


class UntilFinalizerBack(ModuleType):
    """Stands in for ``asyncio`` inside :mod:`aigw_operator.runtime.drain`, whose only sleep is the
    ``--verify-after`` wait (it comes after the release): that wait ends as soon as the
    finalizer is seen back on the object, or after the full delay as before.

    Why: a fixed wait races the operator, and a busy machine can lose that race. With this,
    the drain's check runs right after the operator put the finalizer back, however long that
    took (up to the delay), so the test still fails if the drain misses a finalizer that is
    back, or if the operator does not put it back (then the full delay passes first); and
    :attr:`waited` shows whether the drain waited at all.
    """

    def __init__(self, kube_api_url: str, path: str) -> None:
        super().__init__("asyncio")
        self.kube_api_url = kube_api_url
        self.path = path
        self.waited: list[float] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    async def sleep(self, delay: float) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with httpx.AsyncClient(base_url=self.kube_api_url) as http:
            while loop.time() - started < delay:
                response = await http.get(self.path)
                if response.status_code == 200 and FINALIZER in response.json()["metadata"].get("finalizers", []):
                    break
                await asyncio.sleep(0.05)
        self.waited.append(loop.time() - started)


async def test_uninstall_with_the_real_operator(
    kube_env: KubeEnv,
    emulator_url: str,
    baseten: BasetenSimulator,
    operator: OperatorRunner,
    credentials: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The documented sequence: the operator ran, is uninstalled, a resource is deleted afterwards
    and hangs on the finalizer; drain lets it go and leaves the Baseten endpoint alone (orphaned)."""
    response = await kube_env.kube.create(KIND, PLURAL, "glm", spec("my-org/glm"))
    assert response.status_code == 201, response.text
    ready = await kube_env.kube.wait_condition(PLURAL, "glm", "Ready", "True")
    endpoint_id = ready["status"]["id"]

    # While the operator runs, it takes the finalizer straight back: drain says so and fails.
    # The verify wait is cut short once the finalizer is back (see UntilFinalizerBack), so 30 s
    # is only the ceiling a broken operator would cost, not a race the operator must win.
    gate = UntilFinalizerBack(emulator_url, cr_path(PLURAL, kube_env.kube.namespace, "glm"))
    with monkeypatch.context() as patched:
        patched.setattr(drain, "asyncio", gate)
        assert await asyncio.to_thread(main, ["drain", "--kube-api-url", emulator_url, "--verify-after", "30"]) == 1
    assert gate.waited and gate.waited[-1] < 30  # it waited, and the finalizer came back first
    await kube_env.kube.wait_for(PLURAL, "glm", lambda o: bool(o and FINALIZER in o["metadata"]["finalizers"]))

    await operator.stop()
    assert (await kube_env.kube.delete(PLURAL, "glm")).status_code in (200, 202)
    await asyncio.sleep(0.2)
    assert await kube_env.kube.get(PLURAL, "glm") is not None  # stuck without the operator

    assert await asyncio.to_thread(main, ["drain", "--kube-api-url", emulator_url, "--verify-after", "0"]) == 0
    await kube_env.kube.wait_gone(PLURAL, "glm")
    assert endpoint_id in baseten.endpoints


# ------------------------------------------------------------------ the chart's pre-delete hook


def uninstall_args(env: KubeEnv, url: str, policy: str, *extra: str) -> list[str]:
    """The hook Job's command line (templates/drain-job.yaml), against the emulator."""
    return ["drain", "--kube-api-url", url, "--policy", policy, "-n", env.kube.namespace, *extra]


async def test_delete_policy_lets_the_running_operator_delete_upstream_objects(
    kube_env: KubeEnv, emulator_url: str, baseten: BasetenSimulator, operator: OperatorRunner, credentials: str
) -> None:
    kube = kube_env.kube
    assert (await kube.create(KIND, PLURAL, "deleted", spec("my-org/deleted"))).status_code == 201
    orphan = {**spec("my-org/kept"), "deletionPolicy": "Orphan"}
    assert (await kube.create(KIND, PLURAL, "orphaned", orphan)).status_code == 201
    deleted = (await kube.wait_condition(PLURAL, "deleted", "Ready", "True"))["status"]["id"]
    kept = (await kube.wait_condition(PLURAL, "orphaned", "Ready", "True"))["status"]["id"]
    secret = await kube.http.get(f"/api/v1/namespaces/{kube.namespace}/secrets/baseten")
    assert "aigw.dev/credentials-in-use" in secret.json()["metadata"]["finalizers"]

    args = uninstall_args(kube_env, emulator_url, "Delete", "--timeout", "20")
    assert await asyncio.to_thread(main, args) == 0

    assert await kube.get(PLURAL, "deleted") is None and await kube.get(PLURAL, "orphaned") is None
    assert deleted not in baseten.endpoints  # deleted upstream by the operator
    assert kept in baseten.endpoints  # deletionPolicy Orphan, honoured
    secret = await kube.http.get(f"/api/v1/namespaces/{kube.namespace}/secrets/baseten")
    assert not secret.json()["metadata"].get("finalizers")


async def test_delete_policy_fails_within_its_timeout_and_orphans_nothing(
    kube_env: KubeEnv, emulator_url: str, baseten: BasetenSimulator, operator: OperatorRunner, credentials: str
) -> None:
    kube = kube_env.kube
    assert (await kube.create(KIND, PLURAL, "glm", spec("my-org/glm"))).status_code == 201
    upstream_id = (await kube.wait_condition(PLURAL, "glm", "Ready", "True"))["status"]["id"]
    baseten.faults.fail_next(10_000, status=503)  # Baseten down: the delete cannot happen

    out = io.StringIO()
    started = asyncio.get_running_loop().time()
    code = await drain.run_uninstall(emulator_url, policy="Delete", namespaces=[kube.namespace], timeout=3, out=out)
    took = asyncio.get_running_loop().time() - started
    assert code == 1
    assert 3 <= took < 10, f"bounded by its timeout: took {took:.1f}s"
    text = out.getvalue()
    assert f"GatewayEndpoint {kube.namespace}/glm: DeletionBlocked" in text, text
    assert "nothing orphaned" in text
    obj = await kube.get(PLURAL, "glm")
    assert obj is not None and FINALIZER in obj["metadata"]["finalizers"]  # still the operator's to finish
    assert upstream_id in baseten.endpoints
    baseten.faults.reset()
    await kube.wait_gone(PLURAL, "glm")  # once Baseten is back, the operator completes the delete
    assert upstream_id not in baseten.endpoints


async def test_retain_policy_stops_the_operator_then_orphans_upstream_objects(
    kube_env: KubeEnv, emulator_url: str, baseten: BasetenSimulator, operator: OperatorRunner, credentials: str
) -> None:
    """The Deployment is the test's: the emulator serves no apps/v1, so it answers for one whose
    pods are the operator running here (scaling it to 0 stops that operator)."""
    kube = kube_env.kube
    assert kube_env.emulator is not None
    assert (await kube.create(KIND, PLURAL, "glm", spec("my-org/glm"))).status_code == 201
    upstream_id = (await kube.wait_condition(PLURAL, "glm", "Ready", "True"))["status"]["id"]
    deployment = "/apis/apps/v1/namespaces/aigw-system/deployments/aigw-aigw-operator"
    scaled: list[int] = []

    def scale() -> dict[str, Any]:
        scaled.append(0)
        operator.stop_flag.set()  # what the ReplicaSet controller does to the pod, in short
        return {"kind": "Scale", "spec": {"replicas": 0}}

    def current() -> dict[str, Any]:
        pods = 1 if operator.running else 0
        return {
            "kind": "Deployment",
            "metadata": {"generation": 2},
            "status": {"observedGeneration": 2, "replicas": pods},
        }

    kube_env.emulator["patch", f"{deployment}/scale"] << scale
    kube_env.emulator["get", deployment] << current

    args = uninstall_args(
        kube_env, emulator_url, "Retain", "--timeout", "30", "--stop-deployment", "aigw-system/aigw-aigw-operator"
    )
    assert await asyncio.to_thread(main, args) == 0
    assert scaled == [0]
    assert not operator.running
    obj = await kube.get(PLURAL, "glm")
    assert obj is not None and not obj["metadata"].get("finalizers")  # stays, released
    assert upstream_id in baseten.endpoints  # orphaned, whatever its deletionPolicy
    secret = await kube.http.get(f"/api/v1/namespaces/{kube.namespace}/secrets/baseten")
    assert not secret.json()["metadata"].get("finalizers")
    assert (await kube.delete(PLURAL, "glm")).status_code in (200, 202)
    await kube.wait_gone(PLURAL, "glm")  # nothing holds it any more
