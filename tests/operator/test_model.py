"""Model end to end: the real operator, the Kubernetes API, the model registry simulator."""

from __future__ import annotations

import asyncio
import copy
import logging
from typing import Any

import pytest

from aigw_operator.crds import all_crds
from aigw_testbed.emulator.admission import Invalid, admit
from aigw_testbed.kubectl import condition
from aigw_testbed.simulators.model_registry import ModelRegistrySimulator
from tests.conftest import OPENAI_KEY
from tests.operator.conftest import KubeEnv, OperatorRunner

PLURAL = "models"
KIND = "Model"


def spec(**extra: Any) -> dict[str, Any]:
    return {
        "dtype": "openai",
        "configuration": {"model": "gpt-4o", "apiKeySecretRef": {"name": "openai"}},
        "summary": "support bot",
        "tags": ["openai", "prod"],
        "credentialsSecretRef": {"name": "registry"},
        "tenant": "root",  # the registry fixture is multi-tenant: every call names a tenant
        **extra,
    }


async def create_ready(env: KubeEnv, name: str = "assistant", **kw: Any) -> dict[str, Any]:
    response = await env.kube.create(KIND, PLURAL, name, spec(**kw))
    assert response.status_code == 201, response.text
    return await env.kube.wait_condition(PLURAL, name, "Ready", "True")


async def wait_generation(env: KubeEnv, generation: int, name: str = "assistant") -> dict[str, Any]:
    obj = await env.kube.wait_for(
        PLURAL, name, lambda o: bool(o and (o.get("status") or {}).get("observedGeneration") == generation)
    )
    assert obj is not None
    return obj


async def test_create_defaults_name_and_never_exposes_the_key(
    kube_env: KubeEnv,
    registry: ModelRegistrySimulator,
    operator: OperatorRunner,
    credentials: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    obj = await create_ready(kube_env)
    stored = registry.models("root")["assistant"]
    assert stored["configuration"] == {
        "api_key": OPENAI_KEY,
        "model": "gpt-4o",
        "base_url": "https://api.openai.com/v1",
        "system_prompt": "",
    }
    assert sorted(stored["tags"].split(",")) == ["openai", "prod"]
    status = obj["status"]
    assert status["id"] == stored["id"] and status["name"] == "assistant" and status["dtype"] == "openai"
    assert status["createdAt"]
    assert OPENAI_KEY not in str(obj)
    assert OPENAI_KEY not in str(await kube_env.kube.events())
    assert OPENAI_KEY not in caplog.text


async def test_connected_endpoints_are_reported(
    kube_env: KubeEnv, registry: ModelRegistrySimulator, operator: OperatorRunner, credentials: str
) -> None:
    await kube_env.kube.create(KIND, PLURAL, "assistant", spec(), annotations={"aigw.dev/resync-seconds": "1"})
    await kube_env.kube.wait_condition(PLURAL, "assistant", "Ready", "True")
    registry.connect_endpoint("assistant", "Support Assistant", "support-assistant")
    obj = await kube_env.kube.wait_for(
        PLURAL, "assistant", lambda o: bool(o and (o["status"].get("connectedEndpoints") or []))
    )
    assert obj is not None
    assert obj["status"]["connectedEndpoints"][0]["slug"] == "support-assistant"


async def test_rename_summary_and_tags_are_patched_and_tag_order_is_not_drift(
    kube_env: KubeEnv, registry: ModelRegistrySimulator, operator: OperatorRunner, credentials: str
) -> None:
    obj = await create_ready(kube_env)
    model_id = obj["status"]["id"]
    registry.reset_counts()
    await kube_env.kube.patch_spec(PLURAL, "assistant", {"tags": ["prod", "openai"]})
    await wait_generation(kube_env, 2)
    assert [r for r in registry.requests if r.method != "GET"] == []
    await kube_env.kube.patch_spec(PLURAL, "assistant", {"name": "helper", "summary": "new", "tags": ["x"]})
    obj = await wait_generation(kube_env, 3)
    patches = [r for r in registry.requests if r.method == "PATCH"]
    assert len(patches) == 1
    assert patches[0].body == {"name": "helper", "summary": "new", "tags": "x"}
    assert obj["status"]["name"] == "helper" and obj["status"]["id"] == model_id
    assert list(registry.models()) == ["helper"]


async def test_immutable_edit_is_refused_at_apply_time(
    kube_env: KubeEnv, registry: ModelRegistrySimulator, operator: OperatorRunner, credentials: str
) -> None:
    await create_ready(kube_env)
    response = await kube_env.kube.patch_spec(
        PLURAL, "assistant", {"configuration": {"model": "gpt-4.1", "apiKeySecretRef": {"name": "openai"}}}
    )
    assert response.status_code == 422
    assert "replacePolicy: Recreate" in response.text


async def test_recreate_applies_configuration_and_warns_about_lost_links(
    kube_env: KubeEnv, registry: ModelRegistrySimulator, operator: OperatorRunner, credentials: str
) -> None:
    obj = await create_ready(kube_env, replacePolicy="Recreate")
    old_id = obj["status"]["id"]
    registry.connect_endpoint("assistant", "Support Assistant", "support-assistant")
    await kube_env.kube.patch_spec(
        PLURAL, "assistant", {"configuration": {"model": "gpt-4.1", "apiKeySecretRef": {"name": "openai"}}}
    )
    obj = await wait_generation(kube_env, 2)
    assert obj["status"]["id"] != old_id
    assert registry.models()["assistant"]["configuration"]["model"] == "gpt-4.1"
    warnings = [e for e in await kube_env.kube.events("assistant") if e["reason"] == "Recreated"]
    assert warnings and "Support Assistant" in warnings[0]["message"]


async def test_recreate_posts_one_event_that_names_the_change(
    kube_env: KubeEnv, registry: ModelRegistrySimulator, operator: OperatorRunner, credentials: str
) -> None:
    await create_ready(kube_env, replacePolicy="Recreate")
    await kube_env.kube.patch_spec(
        PLURAL, "assistant", {"configuration": {"model": "gpt-4.1", "apiKeySecretRef": {"name": "openai"}}}
    )
    await wait_generation(kube_env, 2)
    events = [(e["reason"], e["message"]) for e in await kube_env.kube.events("assistant")]
    assert not [m for r, m in events if r == "Updated"], events  # never "updated recreate"
    [recreated] = [m for r, m in events if r == "Recreated"]
    assert "model" in recreated


async def test_tenant_is_immutable_at_apply_time_without_recreate(
    kube_env: KubeEnv, registry: ModelRegistrySimulator, operator: OperatorRunner, credentials: str
) -> None:
    await create_ready(kube_env)
    response = await kube_env.kube.patch_spec(PLURAL, "assistant", {"tenant": "team-a"})
    assert response.status_code == 422
    assert "tenant cannot be changed" in response.text
    assert registry.models("team-a") == {}


async def test_tenant_move_creates_in_the_new_tenant_then_deletes_the_old(
    kube_env: KubeEnv, registry: ModelRegistrySimulator, operator: OperatorRunner, credentials: str
) -> None:
    obj = await create_ready(kube_env, replacePolicy="Recreate")
    assert obj["status"]["tenant"] == "root"
    await kube_env.kube.patch_spec(PLURAL, "assistant", {"tenant": "team-a"})
    obj = await wait_generation(kube_env, 2)
    assert condition(obj, "Ready")["status"] == "True"  # type: ignore[index]
    assert list(registry.models("team-a")) == ["assistant"]
    assert registry.models("root") == {}
    assert obj["status"]["tenant"] == "team-a"
    assert obj["status"]["id"] == registry.models("team-a")["assistant"]["id"]
    posts = [r for r in registry.requests if r.method == "POST"]
    deletes = [r for r in registry.requests if r.method == "DELETE"]
    assert len(posts) == 2 and len(deletes) == 1
    assert registry.requests.index(posts[-1]) < registry.requests.index(deletes[0]), "new first, then old"
    # Deleting the resource deletes the moved model, and leaves nothing in either tenant.
    await kube_env.kube.delete(PLURAL, "assistant")
    await kube_env.kube.wait_gone(PLURAL, "assistant")
    assert registry.models("team-a") == {} and registry.models("root") == {}


async def test_tenant_move_onto_a_taken_name_keeps_the_old_model(
    kube_env: KubeEnv, registry: ModelRegistrySimulator, operator: OperatorRunner, credentials: str
) -> None:
    response = await kube_env.kube.create(KIND, PLURAL, "other", spec(name="assistant", tenant="team-a"))
    assert response.status_code == 201, response.text
    await kube_env.kube.wait_condition(PLURAL, "other", "Ready", "True")
    obj = await create_ready(kube_env, replacePolicy="Recreate")
    await kube_env.kube.patch_spec(PLURAL, "assistant", {"tenant": "team-a"})
    # The name is taken in the new tenant by a model another resource manages: it says whose.
    obj = await kube_env.kube.wait_condition(PLURAL, "assistant", "Ready", "False", reason="AlreadyManaged")
    assert f"{kube_env.kube.namespace}/other" in condition(obj, "Ready")["message"]  # type: ignore[index]
    assert list(registry.models("root")) == ["assistant"], "the old model is kept"
    other = await kube_env.kube.get(PLURAL, "other")
    assert other and registry.models("team-a")["assistant"]["id"] == other["status"]["id"]
    reasons = [e["reason"] for e in await kube_env.kube.events("assistant")]
    assert "Adopted" not in reasons
    await kube_env.kube.delete(PLURAL, "assistant")
    await kube_env.kube.wait_gone(PLURAL, "assistant")
    assert registry.models("root") == {}
    assert list(registry.models("team-a")) == ["assistant"], "the other resource's model is untouched"


async def test_a_model_never_created_upstream_is_deleted_at_once(
    kube_env: KubeEnv, registry: ModelRegistrySimulator, operator: OperatorRunner, credentials: str
) -> None:
    await kube_env.kube.create(KIND, PLURAL, "nowhere", spec(tenant="initech"))
    obj = await kube_env.kube.wait_condition(PLURAL, "nowhere", "Ready", "False", reason="InvalidSpec")
    assert "initech" in condition(obj, "Ready")["message"]  # type: ignore[index]
    assert not obj["status"].get("id")
    await kube_env.kube.delete(PLURAL, "nowhere")
    await kube_env.kube.wait_gone(PLURAL, "nowhere", timeout=5)
    assert "NothingToDelete" in [e["reason"] for e in await kube_env.kube.events("nowhere")]


async def test_deleting_a_model_with_connected_endpoints_warns(
    kube_env: KubeEnv, registry: ModelRegistrySimulator, operator: OperatorRunner, credentials: str
) -> None:
    await create_ready(kube_env)
    registry.connect_endpoint("assistant", "Support Assistant", "support-assistant", tenant="root")
    await kube_env.kube.delete(PLURAL, "assistant")
    await kube_env.kube.wait_gone(PLURAL, "assistant")
    warnings = [e for e in await kube_env.kube.events("assistant") if e["type"] == "Warning"]
    assert [e["reason"] for e in warnings] == ["EndpointsOrphaned"]
    assert "Support Assistant" in warnings[0]["message"]


async def test_a_drift_resync_lists_the_tenant_once(
    kube_env: KubeEnv, registry: ModelRegistrySimulator, operator: OperatorRunner, credentials: str
) -> None:
    await kube_env.kube.create(KIND, PLURAL, "assistant", spec())
    await kube_env.kube.wait_condition(PLURAL, "assistant", "Ready", "True")
    await asyncio.sleep(1.2)  # the create's own listing is now older than a 1 s resync accepts
    registry.modify_out_of_band("assistant", tenant="root", summary="edited by hand")
    registry.reset_counts()
    await kube_env.kube.patch_meta(PLURAL, "assistant", {"annotations": {"aigw.dev/resync-seconds": "1"}})
    await kube_env.kube.wait_for(
        PLURAL, "assistant", lambda o: bool(o) and registry.models("root")["assistant"]["summary"] == "support bot"
    )
    # One listing found the drift and served as the observation; the PATCH's answer is the new state.
    assert registry.count("GET") == 1, [r.path for r in registry.requests]
    assert [r.body for r in registry.requests if r.method == "PATCH"] == [{"summary": "support bot"}]


async def test_rotated_key_needs_recreate_policy(
    kube_env: KubeEnv, registry: ModelRegistrySimulator, operator: OperatorRunner, credentials: str
) -> None:
    await kube_env.kube.create(KIND, PLURAL, "never", spec(name="never"), annotations={"aigw.dev/resync-seconds": "1"})
    await kube_env.kube.create(
        KIND,
        PLURAL,
        "recreate",
        spec(name="recreate", replacePolicy="Recreate"),
        annotations={"aigw.dev/resync-seconds": "1"},
    )
    await kube_env.kube.wait_condition(PLURAL, "never", "Ready", "True")
    await kube_env.kube.wait_condition(PLURAL, "recreate", "Ready", "True")
    await kube_env.kube.put_secret("openai", {"apiKey": "sk-rotated-key-123456"})
    obj = await kube_env.kube.wait_condition(PLURAL, "never", "Ready", "False", reason="RecreateRequired")
    assert "configuration.apiKey" in condition(obj, "Ready")["message"]  # type: ignore[index]
    assert registry.models()["never"]["configuration"]["api_key"] == OPENAI_KEY
    await kube_env.kube.wait_for(
        PLURAL,
        "recreate",
        lambda o: (
            registry.models().get("recreate", {}).get("configuration", {}).get("api_key") == "sk-rotated-key-123456"
        ),
    )
    assert "sk-rotated-key-123456" not in str(await kube_env.kube.get(PLURAL, "recreate"))


async def test_lost_create_response_adopts(
    kube_env: KubeEnv, registry: ModelRegistrySimulator, operator: OperatorRunner, credentials: str
) -> None:
    registry.faults.lose_next_response("POST")
    await create_ready(kube_env)
    assert len(registry.models()) == 1
    assert registry.count("POST") == 1


async def test_out_of_band_delete_is_recreated_and_delete_removes(
    kube_env: KubeEnv, registry: ModelRegistrySimulator, operator: OperatorRunner, credentials: str
) -> None:
    await kube_env.kube.create(KIND, PLURAL, "assistant", spec(), annotations={"aigw.dev/resync-seconds": "1"})
    obj = await kube_env.kube.wait_condition(PLURAL, "assistant", "Ready", "True")
    registry.delete_out_of_band("assistant")
    await kube_env.kube.wait_for(
        PLURAL, "assistant", lambda o: bool(o and o["status"].get("id") not in (None, obj["status"]["id"]))
    )
    await kube_env.kube.delete(PLURAL, "assistant")
    await kube_env.kube.wait_gone(PLURAL, "assistant")
    assert registry.models() == {}


async def test_tenant_header(
    kube_env: KubeEnv, registry: ModelRegistrySimulator, operator: OperatorRunner, credentials: str
) -> None:
    await create_ready(kube_env, tenant="team-a")
    assert "assistant" in registry.models("team-a")
    assert "assistant" not in registry.models()
    # Every request the operator sent the registry names the tenant, the tenant-agnostic
    # /models/types/ included (the client sends it on all of them; the registry fixture's server
    # is multi-tenant, so a call without it is a 400 or lands in the wrong tenant). The fixture's
    # simulator serves no one else in this test, so these are the operator's requests.
    sent = [(r.method, r.route) for r in registry.requests]
    assert ("POST", "/api/v1/models/") in sent, sent
    tenants = [(r.method, r.path, r.header("X-Tenant-Name")) for r in registry.requests]
    assert [t for t in tenants if t[2] != "team-a"] == [], tenants


CRD = next(c for c in all_crds() if c["spec"]["names"]["kind"] == KIND)
GOOD = {
    "apiVersion": "aigw.dev/v1alpha1",
    "kind": KIND,
    "metadata": {"name": "m", "namespace": "default"},
    "spec": {"configuration": {"apiKeySecretRef": {"name": "openai"}}},
}


def manifest(**changes: Any) -> dict[str, Any]:
    result = copy.deepcopy(GOOD)
    result["spec"].update(changes)
    return result


BAD = {
    "inline api key": (
        manifest(configuration={"apiKey": "sk-x", "apiKeySecretRef": {"name": "o"}}),
        "spec.configuration.apiKey",
    ),
    "missing key ref": (manifest(configuration={"model": "gpt-4o"}), "spec.configuration.apiKeySecretRef"),
    "unknown dtype": (manifest(dtype="anthropic"), "spec.dtype"),
    "http base url": (
        manifest(configuration={"baseUrl": "http://x.example.com", "apiKeySecretRef": {"name": "o"}}),
        "spec.configuration.baseUrl",
    ),
    "duplicate tags": (manifest(tags=["a", "a"]), "spec.tags"),
    "comma in tag": (manifest(tags=["a,b"]), "spec.tags"),
    "bad replace policy": (manifest(replacePolicy="Always"), "spec.replacePolicy"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_models_are_refused_naming_the_field(case: str) -> None:
    bad, field = BAD[case]
    with pytest.raises(Invalid) as refused:
        admit(CRD, bad)
    assert any(c.field.startswith(field) for c in refused.value.causes), str(refused.value)


def test_configuration_change_allowed_only_with_recreate() -> None:
    old = admit(CRD, manifest())
    changed = manifest(configuration={"model": "gpt-4.1", "apiKeySecretRef": {"name": "openai"}})
    with pytest.raises(Invalid):
        admit(CRD, changed, old)
    changed["spec"]["replacePolicy"] = "Recreate"
    admit(CRD, changed, old)
