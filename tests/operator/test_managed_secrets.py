"""Upstream credentials from Kubernetes Secrets: Baseten secrets behind GatewayEndpoint targets
and ngrok provider keys behind Providers, created, rotated and cleaned up by the operator.

The values used here are canaries (conftest): every Event, custom resource and log line of
each test is scanned for them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from aigw_testbed.kubectl import condition
from aigw_testbed.simulators.baseten import BasetenSimulator
from aigw_testbed.simulators.ngrok import NgrokSimulator
from tests.conftest import OPENAI_KEY
from tests.operator.conftest import KubeEnv, OperatorRunner

WATCHED = {"aigw.dev/watch": "true"}
ROTATED = "sk-rotated-key-123456"
BACKUP = "sk-backup-value-77"
SECRETS = "/v1/secrets"


def baseten_secret(env: KubeEnv, secret: str = "openai") -> str:
    """The Baseten secret the operator makes for key apiKey of ``secret`` in the test's namespace."""
    return f"aigw_{env.kube.namespace}_{secret}_apiKey"


def endpoint_spec(slug: str = "my-org/gpt", secret: str = "openai", **extra: Any) -> dict[str, Any]:
    return {
        "slug": slug,
        "targets": [{"provider": "OPENAI", "secretRef": {"name": secret}, "targetModel": "gpt-4o"}],
        "credentialsSecretRef": {"name": "baseten"},
        **extra,
    }


def provider_spec(**extra: Any) -> dict[str, Any]:
    return {
        "providerId": "internal-vllm",
        "name": "vLLM",
        "baseUrl": "http://vllm.internal",
        "providerKeys": [{"name": "primary", "secretRef": {"name": "openai"}}],
        "credentialsSecretRef": {"name": "ngrok"},
        **extra,
    }


async def until(check: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


# ------------------------------------------------------------------ GatewayEndpoint


async def test_secret_ref_becomes_a_baseten_secret(
    kube_env: KubeEnv, baseten: BasetenSimulator, operator: OperatorRunner, credentials: str
) -> None:
    await kube_env.kube.create("GatewayEndpoint", "gatewayendpoints", "gpt", endpoint_spec())
    obj = await kube_env.kube.wait_condition("gatewayendpoints", "gpt", "Ready", "True")
    stored = baseten.secrets[baseten_secret(kube_env)]
    assert stored.value == OPENAI_KEY
    [endpoint] = baseten.endpoints.values()
    assert endpoint["targets"][0]["secret_id"] == stored.id
    [record] = obj["status"]["secrets"]
    assert record["name"] == baseten_secret(kube_env) and record["id"] == stored.id
    assert record["secretName"] == "openai" and record["key"] == "apiKey" and record["secretVersion"]
    assert baseten.count("POST", SECRETS) == 1


async def test_rotation_is_one_upsert_with_the_same_id_and_no_endpoint_change(
    kube_env: KubeEnv, baseten: BasetenSimulator, operator: OperatorRunner, credentials: str
) -> None:
    await kube_env.kube.put_secret("openai", {"apiKey": OPENAI_KEY}, labels=WATCHED)
    await kube_env.kube.create("GatewayEndpoint", "gatewayendpoints", "gpt", endpoint_spec())
    obj = await kube_env.kube.wait_condition("gatewayendpoints", "gpt", "Ready", "True")
    secret_id = baseten.secrets[baseten_secret(kube_env)].id
    version = obj["status"]["secrets"][0]["secretVersion"]
    baseten.reset_counts()
    started = time.monotonic()
    await kube_env.kube.put_secret("openai", {"apiKey": ROTATED}, labels=WATCHED)
    # The default resync is 30 s here: only the watch on labelled Secrets explains seconds.
    await until(lambda: baseten.secrets[baseten_secret(kube_env)].value == ROTATED, what="the rotated value in Baseten")
    assert time.monotonic() - started < 5
    obj = await kube_env.kube.wait_for(
        "gatewayendpoints", "gpt", lambda o: bool(o and o["status"]["secrets"][0]["secretVersion"] != version)
    )
    assert baseten.secrets[baseten_secret(kube_env)].id == secret_id == obj["status"]["secrets"][0]["id"]
    assert baseten.count("POST", SECRETS) == 1
    # The endpoint kept its secret_id and was never touched: no downtime.
    assert [r.method for r in baseten.requests if r.route.startswith("/v1/gateway") and r.method != "GET"] == []
    assert condition(obj, "Ready")["status"] == "True"  # type: ignore[index]


async def test_unlabelled_secret_is_picked_up_at_the_next_resync(
    kube_env: KubeEnv, baseten: BasetenSimulator, operator: OperatorRunner, credentials: str
) -> None:
    await kube_env.kube.create(
        "GatewayEndpoint", "gatewayendpoints", "gpt", endpoint_spec(), annotations={"aigw.dev/resync-seconds": "1"}
    )
    await kube_env.kube.wait_condition("gatewayendpoints", "gpt", "Ready", "True")
    await kube_env.kube.put_secret("openai", {"apiKey": ROTATED})
    await until(lambda: baseten.secrets[baseten_secret(kube_env)].value == ROTATED, what="the rotated value in Baseten")


async def test_shared_secret_is_deleted_with_its_last_user_only(
    kube_env: KubeEnv, baseten: BasetenSimulator, operator: OperatorRunner, credentials: str
) -> None:
    await kube_env.kube.create("GatewayEndpoint", "gatewayendpoints", "a", endpoint_spec("my-org/a"))
    await kube_env.kube.create("GatewayEndpoint", "gatewayendpoints", "b", endpoint_spec("my-org/b"))
    a = await kube_env.kube.wait_condition("gatewayendpoints", "a", "Ready", "True")
    b = await kube_env.kube.wait_condition("gatewayendpoints", "b", "Ready", "True")
    assert list(baseten.secrets) == [baseten_secret(kube_env)]
    assert a["status"]["secrets"][0]["id"] == b["status"]["secrets"][0]["id"]
    await kube_env.kube.delete("gatewayendpoints", "a")
    await kube_env.kube.wait_gone("gatewayendpoints", "a")
    assert list(baseten.secrets) == [baseten_secret(kube_env)], "still used by b"
    await kube_env.kube.delete("gatewayendpoints", "b")
    await kube_env.kube.wait_gone("gatewayendpoints", "b")
    assert baseten.secrets == {} and baseten.endpoints == {}


async def test_a_secret_stays_for_a_resource_whose_endpoint_does_not_exist_yet(
    kube_env: KubeEnv, baseten: BasetenSimulator, operator: OperatorRunner, credentials: str
) -> None:
    """b refers to the same Secret key as a, but has no endpoint upstream (its slug is held by an
    endpoint it did not make), so no Baseten endpoint shows the secret in use: the loop's rule
    that a dependent made from a Secret key is shared by every resource naming that key keeps it."""
    held = await baseten_endpoint_made_elsewhere(kube_env, "my-org/held")
    await kube_env.kube.create("GatewayEndpoint", "gatewayendpoints", "a", endpoint_spec("my-org/a"))
    await kube_env.kube.wait_condition("gatewayendpoints", "a", "Ready", "True")
    await kube_env.kube.create("GatewayEndpoint", "gatewayendpoints", "b", endpoint_spec("my-org/held"))
    await kube_env.kube.wait_condition("gatewayendpoints", "b", "Ready", "False", reason="AlreadyExists")
    assert all(t.get("secret_id") is None for t in baseten.endpoints[held]["targets"])
    await kube_env.kube.delete("gatewayendpoints", "a")
    await kube_env.kube.wait_gone("gatewayendpoints", "a")
    assert list(baseten.secrets) == [baseten_secret(kube_env)], "b still names the key"
    await kube_env.kube.delete("gatewayendpoints", "b")
    await kube_env.kube.wait_gone("gatewayendpoints", "b")
    assert baseten.secrets == {}, "its last user gone, the secret goes too"


async def baseten_endpoint_made_elsewhere(env: KubeEnv, slug: str) -> str:
    """An endpoint nobody here manages: made by a resource then deleted with deletionPolicy Orphan."""
    spec = {"slug": slug, "targets": [{"provider": "BASETEN", "modelId": "3kZ9xqd"}]}
    await env.kube.create(
        "GatewayEndpoint",
        "gatewayendpoints",
        "elsewhere",
        {**spec, "deletionPolicy": "Orphan", "credentialsSecretRef": {"name": "baseten"}},
    )
    made = await env.kube.wait_condition("gatewayendpoints", "elsewhere", "Ready", "True")
    await env.kube.delete("gatewayendpoints", "elsewhere")
    await env.kube.wait_gone("gatewayendpoints", "elsewhere")
    return str(made["status"]["id"])


async def test_orphaned_endpoint_keeps_its_secret(
    kube_env: KubeEnv, baseten: BasetenSimulator, operator: OperatorRunner, credentials: str
) -> None:
    await kube_env.kube.create("GatewayEndpoint", "gatewayendpoints", "gpt", endpoint_spec(deletionPolicy="Orphan"))
    await kube_env.kube.wait_condition("gatewayendpoints", "gpt", "Ready", "True")
    await kube_env.kube.delete("gatewayendpoints", "gpt")
    await kube_env.kube.wait_gone("gatewayendpoints", "gpt")
    assert list(baseten.secrets) == [baseten_secret(kube_env)] and len(baseten.endpoints) == 1


async def test_switching_to_a_secret_id_releases_the_managed_secret(
    kube_env: KubeEnv, baseten: BasetenSimulator, operator: OperatorRunner, credentials: str
) -> None:
    by_hand = baseten.put_secret("made-by-hand", "sk-by-hand")
    await kube_env.kube.create("GatewayEndpoint", "gatewayendpoints", "gpt", endpoint_spec())
    await kube_env.kube.wait_condition("gatewayendpoints", "gpt", "Ready", "True")
    target = {"provider": "OPENAI", "secretId": by_hand.id, "targetModel": "gpt-4o"}
    response = await kube_env.kube.http.patch(
        f"/apis/aigw.dev/v1alpha1/namespaces/{kube_env.kube.namespace}/gatewayendpoints/gpt",
        json=[{"op": "replace", "path": "/spec/targets", "value": [target]}],
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert response.status_code == 200, response.text
    obj = await kube_env.kube.wait_for(
        "gatewayendpoints", "gpt", lambda o: bool(o and o["status"].get("observedGeneration") == 2)
    )
    assert "secrets" not in obj["status"]
    assert list(baseten.secrets) == ["made-by-hand"]
    [endpoint] = baseten.endpoints.values()
    assert endpoint["targets"][0]["secret_id"] == by_hand.id


async def test_missing_secret_is_reported_then_recovers(
    kube_env: KubeEnv, baseten: BasetenSimulator, operator: OperatorRunner, credentials: str
) -> None:
    await kube_env.kube.create("GatewayEndpoint", "gatewayendpoints", "gpt", endpoint_spec(secret="later"))
    obj = await kube_env.kube.wait_condition("gatewayendpoints", "gpt", "Ready", "False")
    ready = condition(obj, "Ready")
    assert ready is not None and ready["reason"] == "CredentialsMissing"
    assert f"{kube_env.kube.namespace}/later" in ready["message"]
    assert baseten.endpoints == {} and baseten.secrets == {}
    await kube_env.kube.put_secret("later", {"apiKey": OPENAI_KEY})
    await kube_env.kube.wait_condition("gatewayendpoints", "gpt", "Ready", "True")
    assert list(baseten.secrets) == [baseten_secret(kube_env, "later")]


async def test_secret_ref_rules_at_admission(kube_env: KubeEnv) -> None:
    both = endpoint_spec()
    both["targets"][0]["secretId"] = "abc"
    neither = endpoint_spec()
    del neither["targets"][0]["secretRef"]
    baseten_target = {
        "slug": "my-org/x",
        "targets": [{"provider": "BASETEN", "modelId": "m", "secretRef": {"name": "s"}}],
    }
    elsewhere = endpoint_spec()
    elsewhere["targets"][0]["secretRef"]["namespace"] = "other"
    for name, spec, message in [
        ("both", both, "exactly one of secretId and secretRef"),
        ("neither", neither, "exactly one of secretId and secretRef"),
        ("baseten", baseten_target, "secretRef applies to ANTHROPIC and OPENAI targets only"),
    ]:
        response = await kube_env.kube.create("GatewayEndpoint", "gatewayendpoints", name, spec)
        assert response.status_code == 422, (name, response.text)
        assert message in response.json()["message"], response.text
    # A Secret in another namespace cannot even be named: the reference has no such field.
    response = await kube_env.kube.http.post(
        f"/apis/aigw.dev/v1alpha1/namespaces/{kube_env.kube.namespace}/gatewayendpoints?fieldValidation=Strict",
        json={
            "apiVersion": "aigw.dev/v1alpha1",
            "kind": "GatewayEndpoint",
            "metadata": {"name": "elsewhere"},
            "spec": elsewhere,
        },
    )
    assert response.status_code in (400, 422), response.text
    assert "namespace" in response.text


# ------------------------------------------------------------------ Provider keys


def keys_of(ngrok: NgrokSimulator) -> list[Any]:
    return list(ngrok.provider_keys.values())


async def test_provider_key_lifecycle(
    kube_env: KubeEnv, ngrok: NgrokSimulator, operator: OperatorRunner, credentials: str
) -> None:
    await kube_env.kube.put_secret("openai", {"apiKey": OPENAI_KEY}, labels=WATCHED)
    await kube_env.kube.put_secret("backup", {"apiKey": BACKUP}, labels=WATCHED)
    await kube_env.kube.create("Provider", "providers", "vllm", provider_spec())
    obj = await kube_env.kube.wait_condition("providers", "vllm", "Ready", "True")
    [key] = keys_of(ngrok)
    assert key.value == OPENAI_KEY and key.name == "primary" and key.provider_id == "internal-vllm"
    [record] = obj["status"]["providerKeys"]
    assert record["id"] == key.id and record["secretName"] == "openai" and record["secretVersion"]

    # Rotation: one rotate call, same id.
    ngrok.reset_counts()
    await kube_env.kube.put_secret("openai", {"apiKey": ROTATED}, labels=WATCHED)
    await until(lambda: key.value == ROTATED, what="the rotated provider key")
    await asyncio.sleep(0.3)
    assert ngrok.count("POST", "/provider-keys/{id}/rotate") == 1
    assert ngrok.count("POST", "/provider-keys") == 0
    assert [k.id for k in keys_of(ngrok)] == [key.id]

    # A second key, then the first removed from the list.
    second = {"name": "backup", "secretRef": {"name": "backup"}}
    await kube_env.kube.patch_spec("providers", "vllm", {"providerKeys": [second]})
    obj = await kube_env.kube.wait_for(
        "providers",
        "vllm",
        lambda o: bool(o and [r["name"] for r in o["status"].get("providerKeys") or ()] == ["backup"]),
    )
    [backup] = keys_of(ngrok)
    assert backup.name == "backup" and backup.value == BACKUP

    # Deletion: the keys go first, so ngrok never answers 409 for the provider.
    ngrok.reset_counts()
    await kube_env.kube.delete("providers", "vllm")
    await kube_env.kube.wait_gone("providers", "vllm")
    deletes = [r.route for r in ngrok.requests if r.method == "DELETE"]
    assert deletes == ["/provider-keys/{id}", "/providers/{id}"]
    assert all(r.status != 409 for r in ngrok.requests)
    assert ngrok.providers == {} and ngrok.provider_keys == {}


async def test_provider_key_secret_missing_then_added(
    kube_env: KubeEnv, ngrok: NgrokSimulator, operator: OperatorRunner, credentials: str
) -> None:
    spec = provider_spec(providerKeys=[{"name": "primary", "secretRef": {"name": "later"}}])
    await kube_env.kube.create("Provider", "providers", "vllm", spec)
    obj = await kube_env.kube.wait_condition("providers", "vllm", "Ready", "False")
    ready = condition(obj, "Ready")
    assert ready is not None and ready["reason"] == "CredentialsMissing"
    assert f"{kube_env.kube.namespace}/later" in ready["message"]
    await kube_env.kube.put_secret("later", {"apiKey": OPENAI_KEY})
    await kube_env.kube.wait_condition("providers", "vllm", "Ready", "True")
    [key] = keys_of(ngrok)
    assert key.value == OPENAI_KEY


async def test_provider_key_deleted_out_of_band_is_recreated(
    kube_env: KubeEnv, ngrok: NgrokSimulator, operator: OperatorRunner, credentials: str
) -> None:
    await kube_env.kube.create("Provider", "providers", "vllm", provider_spec())
    await kube_env.kube.wait_condition("providers", "vllm", "Ready", "True")
    [key] = keys_of(ngrok)
    ngrok.remove_provider_key(key.id)
    # A change of the spec (or a resync without the listing's shortcut) makes the operator look.
    await kube_env.kube.patch_spec("providers", "vllm", {"name": "vLLM 2"})
    await until(lambda: len(ngrok.provider_keys) == 1, what="the key to be recreated")
    [again] = keys_of(ngrok)
    assert again.id != key.id and again.value == OPENAI_KEY
