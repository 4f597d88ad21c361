"""Provider end to end: the real operator, the Kubernetes API, the ngrok simulator."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import httpx
import pytest

from aigw_operator.crds import all_crds
from aigw_testbed.emulator.admission import Invalid, admit
from aigw_testbed.kubectl import condition
from aigw_testbed.simulators.ngrok import NgrokSimulator
from tests.conftest import NGROK_KEY
from tests.operator.conftest import KubeEnv, OperatorRunner

PLURAL = "providers"
KIND = "Provider"
PROVIDERS = "/providers"
PROVIDER = "/providers/{id}"


def spec(**extra: Any) -> dict[str, Any]:
    return {
        "providerId": "internal-vllm",
        "name": "vLLM",
        "baseUrl": "http://vllm.internal",
        "models": ["llama-3-8b", "qwen-2"],
        "credentialsSecretRef": {"name": "ngrok"},
        **extra,
    }


def only(sim: NgrokSimulator) -> dict[str, Any]:
    [provider] = sim.providers.values()
    return provider


async def create_ready(env: KubeEnv, name: str = "vllm", **kw: Any) -> dict[str, Any]:
    response = await env.kube.create(KIND, PLURAL, name, spec(**kw))
    assert response.status_code == 201, response.text
    return await env.kube.wait_condition(PLURAL, name, "Ready", "True")


async def wait_generation(env: KubeEnv, generation: int, name: str = "vllm") -> dict[str, Any]:
    obj = await env.kube.wait_for(
        PLURAL, name, lambda o: bool(o and (o.get("status") or {}).get("observedGeneration") == generation)
    )
    assert obj is not None
    return obj


async def test_create_reports_status(
    kube_env: KubeEnv, ngrok: NgrokSimulator, operator: OperatorRunner, credentials: str
) -> None:
    obj = await create_ready(kube_env)
    upstream = only(ngrok)
    status = obj["status"]
    assert status["id"] == upstream["id"] and status["id"].startswith("aigp_")
    assert status["providerId"] == "internal-vllm"
    assert status["uri"] and status["createdAt"] and status["updatedAt"]
    assert status["createdBy"]["id"] and status["lastUpdatedBy"]["id"]
    assert sorted(m["modelId"] for m in status["models"]) == ["llama-3-8b", "qwen-2"]
    assert all(m["id"] for m in status["models"])
    assert ngrok.count("POST", PROVIDERS) == 1


@pytest.mark.parametrize(
    ("field", "value", "upstream_key"),
    [
        ("name", "vLLM cluster", "name"),
        ("baseUrl", "https://vllm.example.com/v1", "baseUrl"),
        ("metadata", '{"team": "ml"}', "metadata"),
        ("supportedApiSurfaces", [{"format": "openai", "surface": "chat-completions"}], "supportedApiSurfaces"),
        ("models", ["llama-3-70b"], "models"),
    ],
)
async def test_each_field_change_is_one_patch_with_only_that_field(
    field: str,
    value: Any,
    upstream_key: str,
    kube_env: KubeEnv,
    ngrok: NgrokSimulator,
    operator: OperatorRunner,
    credentials: str,
) -> None:
    await create_ready(kube_env)
    ngrok.reset_counts()
    await kube_env.kube.patch_spec(PLURAL, "vllm", {field: value})
    await wait_generation(kube_env, 2)
    patches = [r for r in ngrok.requests if r.method == "PATCH"]
    assert len(patches) == 1
    assert isinstance(patches[0].body, dict) and list(patches[0].body) == [upstream_key]
    assert [r for r in ngrok.requests if r.method in ("POST", "DELETE")] == []


async def test_model_order_is_not_drift(
    kube_env: KubeEnv, ngrok: NgrokSimulator, operator: OperatorRunner, credentials: str
) -> None:
    await create_ready(kube_env)
    ngrok.reset_counts()
    await kube_env.kube.patch_spec(PLURAL, "vllm", {"models": ["qwen-2", "llama-3-8b"]})
    await wait_generation(kube_env, 2)
    assert [r for r in ngrok.requests if r.method != "GET"] == []


async def test_empty_models_clears_and_absent_models_leaves_alone(
    kube_env: KubeEnv, ngrok: NgrokSimulator, operator: OperatorRunner, credentials: str
) -> None:
    await create_ready(kube_env)
    await kube_env.kube.patch_spec(PLURAL, "vllm", {"models": None})
    await wait_generation(kube_env, 2)
    assert len(only(ngrok)["models"]) == 2, "an absent list leaves ngrok's models alone"
    await kube_env.kube.patch_spec(PLURAL, "vllm", {"models": []})
    obj = await wait_generation(kube_env, 3)
    assert only(ngrok)["models"] == []
    assert obj["status"].get("models", []) == []


async def provider_made_by_hand(ngrok: NgrokSimulator) -> str:
    """A provider with the spec's providerId that no resource made; the simulator's counts reset."""
    async with ngrok_client(ngrok) as http:
        response = await http.post(
            PROVIDERS, json={"providerId": "internal-vllm", "name": "by hand", "baseUrl": "http://vllm.internal"}
        )
        assert response.status_code == 201
    ngrok.reset_counts()
    return str(only(ngrok)["id"])


async def test_a_provider_with_the_same_provider_id_made_by_hand_is_not_taken_over(
    kube_env: KubeEnv, ngrok: NgrokSimulator, operator: OperatorRunner, credentials: str
) -> None:
    """Nothing shows this resource made it: AlreadyExists naming it, and not one write to it."""
    by_hand = await provider_made_by_hand(ngrok)
    await kube_env.kube.create(KIND, PLURAL, "vllm", spec())
    obj = await kube_env.kube.wait_condition(PLURAL, "vllm", "Ready", "False", reason="AlreadyExists")
    message = condition(obj, "Ready")["message"]  # type: ignore[index]
    assert by_hand in message and f"aigw.dev/external-id={by_hand}" in message
    await asyncio.sleep(0.5)
    assert [r.method for r in ngrok.requests if r.method != "GET"] == []
    assert only(ngrok)["name"] == "by hand"
    assert not obj["status"].get("id")
    # Deleting the resource leaves the provider it never managed.
    await kube_env.kube.delete(PLURAL, "vllm")
    await kube_env.kube.wait_gone(PLURAL, "vllm")
    assert only(ngrok)["id"] == by_hand


async def test_a_provider_named_by_external_id_is_adopted_and_kept_on_delete(
    kube_env: KubeEnv, ngrok: NgrokSimulator, operator: OperatorRunner, credentials: str
) -> None:
    by_hand = await provider_made_by_hand(ngrok)
    await kube_env.kube.create(KIND, PLURAL, "vllm", spec(), annotations={"aigw.dev/external-id": by_hand})
    obj = await kube_env.kube.wait_condition(PLURAL, "vllm", "Ready", "True")
    assert obj["status"]["id"] == by_hand and obj["status"]["adopted"] is True
    assert ngrok.count("POST", PROVIDERS) == 0
    assert only(ngrok)["name"] == "vLLM"  # managed from here on
    assert "Adopted" in [e["reason"] for e in await kube_env.kube.events("vllm")]
    # Adopted, and no deletionPolicy set: the provider outlives the resource.
    await kube_env.kube.delete(PLURAL, "vllm")
    await kube_env.kube.wait_gone(PLURAL, "vllm")
    assert only(ngrok)["id"] == by_hand


async def test_second_resource_with_same_provider_id_is_refused(
    kube_env: KubeEnv, ngrok: NgrokSimulator, operator: OperatorRunner, credentials: str
) -> None:
    await create_ready(kube_env)
    await kube_env.kube.create(KIND, PLURAL, "copy", spec(name="other"))
    obj = await kube_env.kube.wait_condition(PLURAL, "copy", "Ready", "False", reason="AlreadyManaged")
    assert f"{kube_env.kube.namespace}/vllm" in condition(obj, "Ready")["message"]  # type: ignore[index]
    assert only(ngrok)["name"] == "vLLM"
    await kube_env.kube.delete(PLURAL, "copy")
    await kube_env.kube.wait_gone(PLURAL, "copy")
    assert len(ngrok.providers) == 1, "deleting the second resource must not delete the first one's provider"


async def test_out_of_band_delete_is_recreated(
    kube_env: KubeEnv, ngrok: NgrokSimulator, operator: OperatorRunner, credentials: str
) -> None:
    await kube_env.kube.create(KIND, PLURAL, "vllm", spec(), annotations={"aigw.dev/resync-seconds": "1"})
    obj = await kube_env.kube.wait_condition(PLURAL, "vllm", "Ready", "True")
    ngrok.delete_out_of_band(obj["status"]["id"])
    await kube_env.kube.wait_for(
        PLURAL, "vllm", lambda o: bool(o and o["status"].get("id") not in (None, obj["status"]["id"]))
    )
    assert len(ngrok.providers) == 1


async def test_delete_blocked_by_provider_key_then_released(
    kube_env: KubeEnv, ngrok: NgrokSimulator, operator: OperatorRunner, credentials: str
) -> None:
    obj = await create_ready(kube_env)
    key_id = ngrok.add_provider_key_out_of_band(obj["status"]["providerId"])
    await kube_env.kube.delete(PLURAL, "vllm")
    blocked = await kube_env.kube.wait_condition(PLURAL, "vllm", "Ready", "False", reason="DeletionBlocked")
    assert "aigw.dev/finalizer" in blocked["metadata"]["finalizers"]
    assert condition(blocked, "Ready")["message"]  # type: ignore[index]
    ngrok.remove_provider_key(key_id)
    await kube_env.kube.wait_gone(PLURAL, "vllm", timeout=20)
    assert ngrok.providers == {}


async def test_lost_create_response_makes_one_provider(
    kube_env: KubeEnv, ngrok: NgrokSimulator, operator: OperatorRunner, credentials: str
) -> None:
    ngrok.faults.lose_next_response("POST")
    await create_ready(kube_env)
    assert len(ngrok.providers) == 1


async def test_orphan_delete_leaves_provider(
    kube_env: KubeEnv, ngrok: NgrokSimulator, operator: OperatorRunner, credentials: str
) -> None:
    await create_ready(kube_env, deletionPolicy="Orphan")
    await kube_env.kube.delete(PLURAL, "vllm")
    await kube_env.kube.wait_gone(PLURAL, "vllm")
    assert len(ngrok.providers) == 1


async def test_upstream_refusal_is_reported(
    kube_env: KubeEnv, ngrok: NgrokSimulator, operator: OperatorRunner, credentials: str
) -> None:
    # Only ngrok knows its catalog of built-in provider ids, so only ngrok can refuse one.
    await kube_env.kube.create(KIND, PLURAL, "vllm", spec(providerId="openai"))
    obj = await kube_env.kube.wait_condition(PLURAL, "vllm", "Ready", "False", reason="InvalidSpec")
    assert "openai" in condition(obj, "Ready")["message"]  # type: ignore[index]
    await asyncio.sleep(1.0)
    assert ngrok.count("POST", PROVIDERS) == 1


def ngrok_client(sim: NgrokSimulator) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=sim.url, headers={"Authorization": f"Bearer {NGROK_KEY}"})


CRD = next(c for c in all_crds() if c["spec"]["names"]["kind"] == KIND)
GOOD = {
    "apiVersion": "aigw.dev/v1alpha1",
    "kind": KIND,
    "metadata": {"name": "p", "namespace": "default"},
    "spec": {"providerId": "vllm", "name": "vLLM", "baseUrl": "https://vllm.example.com"},
}


def manifest(**changes: Any) -> dict[str, Any]:
    result = copy.deepcopy(GOOD)
    result["spec"].update(changes)
    return result


BAD = {
    "http to a public host": (manifest(baseUrl="http://vllm.example.com"), "spec.baseUrl"),
    "not a url": (manifest(baseUrl="vllm"), "spec.baseUrl"),
    "empty providerId": (manifest(providerId=""), "spec.providerId"),
    "providerId with colon": (manifest(providerId="a:b"), "spec.providerId"),
    "duplicate modelId": (manifest(models=["a", "a"]), "spec.models"),
    "metadata over 4096": (manifest(metadata="x" * 4097), "spec.metadata"),
    "surface without format": (
        manifest(supportedApiSurfaces=[{"surface": "messages"}]),
        "spec.supportedApiSurfaces[0].format",
    ),
    "missing name": ({**GOOD, "spec": {k: v for k, v in GOOD["spec"].items() if k != "name"}}, "spec.name"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_providers_are_refused_naming_the_field(case: str) -> None:
    bad, field = BAD[case]
    with pytest.raises(Invalid) as refused:
        admit(CRD, bad)
    assert any(c.field.startswith(field) for c in refused.value.causes), str(refused.value)


def test_provider_id_is_immutable_and_internal_http_allowed() -> None:
    old = admit(CRD, manifest(baseUrl="http://ollama.internal:11434"))
    with pytest.raises(Invalid) as refused:
        admit(CRD, manifest(providerId="other"), old)
    assert "providerId is immutable" in str(refused.value)
