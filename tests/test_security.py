"""The chart's RBAC grants exactly what the operator uses: every request the operator makes
through a full lifecycle of every kind is allowed by the rendered ClusterRole, and every verb
the ClusterRole grants was needed by at least one of those requests."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import helm_python as helm
import pytest

from aigw_operator.simulators.baseten import BasetenSimulator
from tests import test_dedicated_endpoint, test_model, test_provider
from tests.conftest import OPENAI_KEY, KubeEnv, OperatorRunner, record_summary
from tests.test_chart import CHART, _rules, one, render
from tests.test_managed_secrets import endpoint_spec

WATCHED = {"aigw.dev/watch": "true"}
# Clients that are not the operator: the test's own HTTP client.
TEST_CLIENTS = {"python-httpx"}


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def _granted(chart: helm.Chart) -> dict[tuple[str, str], set[str]]:
    return _rules(one(render(chart, {}), "ClusterRole"))


async def _full_lifecycle(env: KubeEnv, baseten: BasetenSimulator) -> None:
    kube = env.kube
    await kube.put_secret("openai", {"apiKey": OPENAI_KEY}, labels=WATCHED)
    resources: list[tuple[str, str, str, dict[str, Any], dict[str, Any]]] = [
        ("GatewayEndpoint", "gatewayendpoints", "gpt", endpoint_spec(), {"slug": "my-org/gpt-2"}),
        (
            "Provider",
            "providers",
            "vllm",
            test_provider.spec(providerKeys=[{"name": "primary", "secretRef": {"name": "openai"}}]),
            {"name": "vLLM 2"},
        ),
        ("Model", "models", "assistant", test_model.spec(), {"summary": "changed"}),
        ("DedicatedEndpoint", "dedicatedendpoints", "llama", test_dedicated_endpoint.spec(), {"state": "Stopped"}),
    ]
    for kind, plural, name, spec, _ in resources:
        response = await kube.create(kind, plural, name, spec)
        assert response.status_code == 201, response.text
    for _, plural, name, _, _ in resources:
        await kube.wait_condition(plural, name, "Ready", "True")
    await kube.put_secret("openai", {"apiKey": "sk-rotated-key-123456"}, labels=WATCHED)
    deadline = asyncio.get_running_loop().time() + 5
    while baseten.secrets["aigw_test_openai_apiKey"].value != "sk-rotated-key-123456":
        assert asyncio.get_running_loop().time() < deadline, "rotation did not arrive"
        await asyncio.sleep(0.05)
    for _, plural, name, _, change in resources:
        await kube.patch_spec(plural, name, change)
    for _, plural, name, _, _ in resources:
        await kube.wait_for(plural, name, lambda o: bool(o and o["status"].get("observedGeneration") == 2))
    for _, plural, name, _, _ in resources:
        await kube.delete(plural, name)
    for _, plural, name, _, _ in resources:
        await kube.wait_gone(plural, name)


async def test_chart_rbac_is_exactly_what_the_operator_uses(
    chart: helm.Chart,
    kube_env: KubeEnv,
    baseten: BasetenSimulator,
    operator: OperatorRunner,
    credentials: str,
) -> None:
    if kube_env.emulator is None:
        pytest.fail("needs the emulator: it records which client made which request")
    await _full_lifecycle(kube_env, baseten)
    await operator.stop()  # its last requests (watch ends, cleanup) count too
    used: dict[tuple[str, str], set[str]] = {}
    clients = set()
    for (client, verb, group, plural, subresource), _ in kube_env.emulator.access().items():
        if client in TEST_CLIENTS:
            continue
        clients.add(client)
        resource = f"{plural}/{subresource}" if subresource else plural
        used.setdefault((group, resource), set()).add(verb)
    assert clients == {"kopf", "aigw-operator"}, clients
    granted = _granted(chart)
    denied = {k: v - granted.get(k, set()) for k, v in used.items() if v - granted.get(k, set())}
    assert denied == {}, f"the operator needs more than the chart grants: {denied}"
    unused = {k: v - used.get(k, set()) for k, v in granted.items() if v - used.get(k, set())}
    assert unused == {}, f"the chart grants what the operator never used: {unused}"
    record_summary(
        "security",
        f"RBAC: {sum(len(v) for v in granted.values())} granted verbs, all used, none missing; "
        "non-root, read-only root filesystem (test_chart, test_dockerfile); Secrets only in the "
        "resource's namespace (test_bad_inputs)",
    )
