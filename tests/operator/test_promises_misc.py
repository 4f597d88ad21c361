"""README promises with no test of their own: AIGW_NAMESPACES scoping, listings over several
ngrok pages, the Model configuration checked against the dtype's config_schema, and the
operator never writing spec."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from aigw_testbed.kubectl import Kube, condition
from aigw_testbed.simulators import model_registry
from aigw_testbed.simulators.baseten import BasetenSimulator
from aigw_testbed.simulators.model_registry import ModelRegistrySimulator
from aigw_testbed.simulators.ngrok import NgrokSimulator
from aigw_testbed.simulators.together import TogetherSimulator
from tests.conftest import API_KEY
from tests.operator.conftest import KubeEnv, OperatorRunner

OPERATOR_AGENTS = ("kopf", "aigw-operator")


def gateway_spec(slug: str = "my-org/glm", model_id: str = "3kZ9xqd", **extra: Any) -> dict[str, Any]:
    return {
        "slug": slug,
        "targets": [{"provider": "BASETEN", "modelId": model_id}],
        "credentialsSecretRef": {"name": "baseten"},
        **extra,
    }


async def test_an_operator_scoped_to_its_namespace_ignores_resources_elsewhere(
    kube_env: KubeEnv, baseten: BasetenSimulator, operator: OperatorRunner, credentials: str
) -> None:
    assert operator.settings.namespaces == [kube_env.kube.namespace]
    other = Kube(kube_env.kube.http, namespace=f"{kube_env.kube.namespace}-other")
    response = await other.http.post("/api/v1/namespaces", json={"metadata": {"name": other.namespace}})
    assert response.status_code == 201, response.text
    try:
        await other.put_secret("baseten", {"apiKey": API_KEY}, labels={"aigw.dev/watch": "true"})
        response = await other.create("GatewayEndpoint", "gatewayendpoints", "stray", gateway_spec(slug="my-org/stray"))
        assert response.status_code == 201, response.text
        await kube_env.kube.create("GatewayEndpoint", "gatewayendpoints", "glm", gateway_spec())
        await kube_env.kube.wait_condition("gatewayendpoints", "glm", "Ready", "True")
        await asyncio.sleep(1.5)  # time enough for the stray one too, were it watched
        stray = await other.get("gatewayendpoints", "stray")
        assert stray is not None
        assert not stray["metadata"].get("finalizers"), "the operator put its finalizer on a resource out of scope"
        assert not stray.get("status"), "the operator wrote the status of a resource out of scope"
        assert await other.events() == []
        assert [e["slug"] for e in baseten.endpoints.values()] == ["my-org/glm"]
        assert not any("stray" in json.dumps(r.body) for r in baseten.requests)
        secret = (await other.http.get(f"/api/v1/namespaces/{other.namespace}/secrets/baseten")).json()
        assert not secret["metadata"].get("finalizers")
        if kube_env.emulator is not None:
            touched = {
                (client, verb, plural)
                for (client, verb, _, plural, _, namespace), n in kube_env.emulator.access().items()
                if client in OPERATOR_AGENTS and namespace == other.namespace and n
            }
            assert touched == set(), f"the operator sent requests to {other.namespace}: {touched}"
    finally:
        await other.delete("gatewayendpoints", "stray")
        await other.http.delete(f"/api/v1/namespaces/{other.namespace}")


async def test_a_resync_of_over_a_hundred_providers_reads_the_listing_page_by_page(
    kube_env: KubeEnv, ngrok: NgrokSimulator, operator: OperatorRunner, credentials: str
) -> None:
    count = 105  # ngrok pages by 100
    resync = 3.0

    async def create(n: int) -> None:
        response = await kube_env.kube.create(
            "Provider",
            "providers",
            f"p{n:03d}",
            {
                "providerId": f"vllm-{n:03d}",
                "name": f"vLLM {n}",
                "baseUrl": "http://vllm.internal",
                "credentialsSecretRef": {"name": "ngrok"},
            },
            annotations={"aigw.dev/resync-seconds": str(resync)},
        )
        assert response.status_code == 201, response.text

    await asyncio.gather(*(create(n) for n in range(count)))

    async def all_ready() -> bool:
        response = await kube_env.kube.http.get(
            f"/apis/aigw.dev/v1alpha1/namespaces/{kube_env.kube.namespace}/providers"
        )
        items = response.json()["items"]
        return len(items) == count and all(
            (condition(i, "Ready") or {}).get("status") == "True"
            and i["status"].get("observedGeneration") == i["metadata"]["generation"]
            for i in items
        )

    deadline = time.monotonic() + 90
    while not await all_ready():
        assert time.monotonic() < deadline, "not every Provider became Ready"
        await asyncio.sleep(0.5)
    assert len(ngrok.providers) == count
    await asyncio.sleep(1.0)  # the creates' own follow-ups
    ngrok.reset_counts()
    window = resync * 1.2 + 0.5  # every resource resyncs at least once
    await asyncio.sleep(window)
    lists = [r for r in ngrok.requests if r.method == "GET" and r.route == "/providers"]
    by_id = [r for r in ngrok.requests if r.route == "/providers/{id}"]
    assert by_id == [], f"{len(by_id)} requests by id during a no-op resync"
    assert [r for r in ngrok.requests if r.method != "GET"] == []
    first_pages = [r for r in lists if "beforeId" not in r.query]
    next_pages = [r for r in lists if "beforeId" in r.query]
    assert first_pages and next_pages, f"no paged listing: {[r.query for r in lists]}"
    # A listing is shared: about ceil(105 / 100) = 2 pages per resync interval, not one call each.
    rounds = window / (resync * (1 - operator.settings.resync_jitter))
    assert len(lists) <= 2 * (int(rounds) + 1), f"{len(lists)} list calls in {window:.1f}s for {count} resources"
    assert len(ngrok.requests) == len(lists)


async def test_a_configuration_the_dtype_schema_refuses_is_invalid_spec_before_any_post(
    kube_env: KubeEnv,
    registry: ModelRegistrySimulator,
    operator: OperatorRunner,
    credentials: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A registry whose openai type now also requires an organization the spec cannot give.
    [openai] = [dict(t) for t in model_registry.MODEL_TYPES]
    schema = json.loads(json.dumps(openai["config_schema"]))
    schema["properties"]["organization"] = {"type": "string", "title": "Organization"}
    schema["required"] = [*schema["required"], "organization"]
    openai["config_schema"] = schema
    monkeypatch.setattr(model_registry, "MODEL_TYPES", (openai,))
    await kube_env.kube.create(
        "Model",
        "models",
        "assistant",
        {
            "dtype": "openai",
            "configuration": {"model": "gpt-4o", "apiKeySecretRef": {"name": "openai"}},
            "credentialsSecretRef": {"name": "registry"},
            "tenant": "root",
        },
    )
    obj = await kube_env.kube.wait_condition("models", "assistant", "Ready", "False", reason="InvalidSpec")
    assert "organization" in condition(obj, "Ready")["message"]  # type: ignore[index]
    await asyncio.sleep(1.0)
    assert registry.count("POST") == 0, "the refused configuration was sent to the registry"
    assert registry.models("root") == {}
    assert any("/models/types" in r.path for r in registry.requests), "the schema was read from the registry"
    warnings = [e for e in await kube_env.kube.events("assistant") if e["type"] == "Warning"]
    assert [e["reason"] for e in warnings] == ["InvalidSpec"]


KINDS = {
    "gatewayendpoints": (
        "GatewayEndpoint",
        gateway_spec(),
        {"targets": [{"provider": "BASETEN", "modelId": "7mP2wqe"}]},
    ),
    "providers": (
        "Provider",
        {
            "providerId": "internal-vllm",
            "name": "vLLM",
            "baseUrl": "http://vllm.internal",
            "models": ["llama-3-8b"],
            "credentialsSecretRef": {"name": "ngrok"},
        },
        {"name": "vLLM cluster"},
    ),
    "models": (
        "Model",
        {
            "dtype": "openai",
            "configuration": {"model": "gpt-4o", "apiKeySecretRef": {"name": "openai"}},
            "summary": "support bot",
            "tags": ["openai"],
            "credentialsSecretRef": {"name": "registry"},
            "tenant": "root",
        },
        {"summary": "support bot v2"},
    ),
    "dedicatedendpoints": (
        "DedicatedEndpoint",
        {
            "model": "meta-llama/Llama-3-8b-chat-hf",
            "hardware": "1x_nvidia_h100_80gb_sxm",
            "autoscaling": {"minReplicas": 1, "maxReplicas": 2},
            "credentialsSecretRef": {"name": "together"},
        },
        {"autoscaling": {"minReplicas": 1, "maxReplicas": 3}},
    ),
}


def _writes_spec(body: Any) -> bool:
    if isinstance(body, dict):
        return "spec" in body
    if isinstance(body, list):  # JSON patch
        return any(isinstance(op, dict) and str(op.get("path", "")).startswith("/spec") for op in body)
    return False


async def test_a_full_lifecycle_of_every_kind_never_has_the_operator_write_spec(
    kube_env: KubeEnv,
    baseten: BasetenSimulator,
    ngrok: NgrokSimulator,
    registry: ModelRegistrySimulator,
    together: TogetherSimulator,
    operator: OperatorRunner,
    credentials: str,
) -> None:
    kube = kube_env.kube
    if kube_env.emulator is not None:
        kube_env.emulator.request_log_limit = 1_000_000
    start = len(list(kube_env.emulator)) if kube_env.emulator is not None else 0
    fast = {"aigw.dev/resync-seconds": "1"}
    # Every resource's generation, sampled throughout, against the spec changes the test made.
    own_changes = dict.fromkeys(KINDS, 0)
    in_flight = dict.fromkeys(KINDS, False)  # a spec patch of the test's is on its way
    generations: dict[str, set[tuple[int, int, bool]]] = {plural: set() for plural in KINDS}
    stop = asyncio.Event()

    async def sample() -> None:
        while not stop.is_set():
            for plural in KINDS:
                obj = await kube.get(plural, "x")
                if obj and not obj["metadata"].get("deletionTimestamp"):
                    generations[plural].add((obj["metadata"]["generation"], own_changes[plural], in_flight[plural]))
            await asyncio.sleep(0.02)

    sampler = asyncio.create_task(sample())
    try:
        for plural, (kind, body, _) in KINDS.items():
            response = await kube.create(kind, plural, "x", body, annotations=fast)
            assert response.status_code == 201, response.text
        for plural in KINDS:
            await kube.wait_condition(plural, "x", "Ready", "True", timeout=20)
        # Drift upstream: corrected upstream, never by bending the spec.
        gwe = await kube.get("gatewayendpoints", "x")
        assert gwe is not None
        baseten.modify_out_of_band(gwe["status"]["id"], targets=[{"provider": "BASETEN", "model_id": "drifted"}])
        await asyncio.sleep(2.5)
        for plural, (_, _, change) in KINDS.items():
            in_flight[plural] = True
            response = await kube.patch_spec(plural, "x", change)
            assert response.status_code == 200, response.text
            own_changes[plural] += 1
            in_flight[plural] = False
        for plural in KINDS:
            await kube.wait_for(
                plural,
                "x",
                lambda o: bool(
                    o
                    and o["status"].get("observedGeneration") == 2
                    and (condition(o, "Ready") or {}).get("status") == "True"
                ),
                timeout=20,
            )
        await asyncio.sleep(2.5)  # resyncs
        assert baseten.endpoints[gwe["status"]["id"]]["targets"][0]["model_id"] == "7mP2wqe"
    finally:
        stop.set()
        await sampler
    for plural in KINDS:
        assert generations[plural], f"{plural} was never sampled"
        wrong = sorted((g, n) for g, n, pending in generations[plural] if g != 1 + n and not (pending and g == 2 + n))
        assert not wrong, f"{plural}: generation moved without the test's spec change (generation, changes): {wrong}"
    for plural in KINDS:
        await kube.delete(plural, "x")
    for plural in KINDS:
        await kube.wait_gone(plural, "x", timeout=20)
    if kube_env.emulator is not None:
        log = list(kube_env.emulator)[start:]
        operators = [
            r
            for r in log
            if (r.headers.get("User-Agent") or "").split("/")[0] in OPERATOR_AGENTS
            and r.url.path.startswith("/apis/aigw.dev/")
        ]
        assert operators, "the request log holds the operator's requests"
        bad = []
        checked = 0
        for r in operators:
            method = str(r.method.value if hasattr(r.method, "value") else r.method).upper()
            if method not in ("POST", "PUT", "PATCH") or r.url.path.endswith("/status"):
                continue
            try:
                body = json.loads(r.body) if r.body else None
            except ValueError:
                body = None
            checked += 1
            if method == "PUT" or _writes_spec(body):
                bad.append(f"{method} {r.url.path}: {r.body[:300]!r}")
        assert checked, "the operator's own writes (finalizers, annotations) were looked at"
        assert not bad, f"the operator wrote spec: {bad}"
