"""Deleting a namespace deletes the upstream objects of the resources in it, for every kind,
although the namespace controller may delete their credentials Secrets first."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aigw_operator.kube.secret_protection import PROTECTION_FINALIZER
from aigw_testbed.simulators.baseten import BasetenSimulator
from aigw_testbed.simulators.model_registry import ModelRegistrySimulator
from aigw_testbed.simulators.ngrok import NgrokSimulator
from aigw_testbed.simulators.together import TogetherSimulator
from tests.operator.conftest import KubeEnv, OperatorRunner
from tests.operator.test_dedicated_endpoint import spec as dedicated_spec
from tests.operator.test_gateway_endpoint import spec as gateway_spec
from tests.operator.test_model import spec as model_spec
from tests.operator.test_provider import spec as provider_spec

RESOURCES: list[tuple[str, str, Any]] = [
    ("GatewayEndpoint", "gatewayendpoints", gateway_spec),
    ("Provider", "providers", provider_spec),
    ("Model", "models", model_spec),
    ("DedicatedEndpoint", "dedicatedendpoints", dedicated_spec),
]


async def _secret(env: KubeEnv, name: str) -> dict[str, Any] | None:
    response = await env.kube.http.get(f"/api/v1/namespaces/{env.kube.namespace}/secrets/{name}")
    return response.json() if response.status_code == 200 else None


async def test_namespace_deletion_deletes_every_upstream_object_although_secrets_go_first(
    kube_env: KubeEnv,
    baseten: BasetenSimulator,
    ngrok: NgrokSimulator,
    registry: ModelRegistrySimulator,
    together: TogetherSimulator,
    operator: OperatorRunner,
    credentials: str,
) -> None:
    kube = kube_env.kube
    for kind, plural, spec in RESOURCES:
        response = await kube.create(kind, plural, "doomed", spec())
        assert response.status_code == 201, response.text
    for _, plural, _ in RESOURCES:
        await kube.wait_condition(plural, "doomed", "Ready", "True", timeout=30)
    counts = [len(baseten.endpoints), len(ngrok.providers), len(registry.models("root")), len(together.endpoints)]
    assert counts == [1, 1, 1, 1]
    # Every credentials Secret in use is protected; a Secret no resource uses as credentials is not.
    for name in ("baseten", "ngrok", "registry", "together"):
        secret = await _secret(kube_env, name)
        assert secret and PROTECTION_FINALIZER in secret["metadata"].get("finalizers", []), name
    openai = await _secret(kube_env, "openai")
    assert openai and PROTECTION_FINALIZER not in (openai["metadata"].get("finalizers") or [])

    response = await kube.http.delete(f"/api/v1/namespaces/{kube.namespace}")
    assert response.status_code in (200, 202), response.text
    deadline = time.monotonic() + 60
    while (await kube.http.get(f"/api/v1/namespaces/{kube.namespace}")).status_code != 404:
        assert time.monotonic() < deadline, "the namespace is still Terminating"
        await asyncio.sleep(0.1)

    assert baseten.endpoints == {}
    assert ngrok.providers == {}
    assert registry.models("root") == {}
    assert together.endpoints == {}


async def test_a_secret_is_released_when_no_resource_uses_it_any_more(
    kube_env: KubeEnv, baseten: BasetenSimulator, operator: OperatorRunner, credentials: str
) -> None:
    kube = kube_env.kube
    await kube.put_secret("baseten-2", {"apiKey": (await _api_key(kube_env, "baseten"))})
    for name in ("one", "two"):
        await kube.create("GatewayEndpoint", "gatewayendpoints", name, gateway_spec(slug=f"my-org/{name}"))
        await kube.wait_condition("gatewayendpoints", name, "Ready", "True")

    async def protected(name: str) -> bool:
        secret = await _secret(kube_env, name)
        return bool(secret and PROTECTION_FINALIZER in (secret["metadata"].get("finalizers") or []))

    assert await protected("baseten")
    await kube.delete("gatewayendpoints", "one")
    await kube.wait_gone("gatewayendpoints", "one")
    assert await protected("baseten"), "still used by 'two'"
    # Switching "two" to another Secret releases the first and protects the second.
    await kube.patch_spec("gatewayendpoints", "two", {"credentialsSecretRef": {"name": "baseten-2"}})
    deadline = time.monotonic() + 10
    while await protected("baseten") or not await protected("baseten-2"):
        assert time.monotonic() < deadline, "the protection did not follow the reference"
        await asyncio.sleep(0.05)
    await kube.delete("gatewayendpoints", "two")
    await kube.wait_gone("gatewayendpoints", "two")
    deadline = time.monotonic() + 10
    while await protected("baseten-2"):
        assert time.monotonic() < deadline, "the last user is gone, the Secret must be released"
        await asyncio.sleep(0.05)


async def _api_key(env: KubeEnv, secret: str) -> str:
    import base64

    body = await _secret(env, secret)
    assert body is not None
    return base64.b64decode(body["data"]["apiKey"]).decode()
