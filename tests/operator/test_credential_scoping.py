"""Who may spend the operator's default keys: by default only the operator's own namespace, or the
namespaces an upstream's ``default_key_namespaces`` lists (``["*"]``: all). A resource elsewhere
that names no key of its own makes no upstream call and says how to fix it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import SecretStr

from aigw_operator.base.settings import UpstreamSettings
from aigw_testbed.kubectl import condition
from aigw_testbed.simulators.base import SimulatorServer
from tests.conftest import API_KEY, NGROK_KEY, REGISTRY_KEY, TOGETHER_KEY
from tests.operator import test_dedicated_endpoint, test_gateway_endpoint, test_model, test_provider
from tests.operator.conftest import KubeEnv, OperatorRunner, make_settings


@dataclass(frozen=True)
class Kind:
    kind: str
    plural: str
    spec: Callable[[], dict[str, Any]]
    sim: str  # the simulators fixture's name
    setting: str  # the Settings field
    key: str


KINDS = [
    Kind("GatewayEndpoint", "gatewayendpoints", test_gateway_endpoint.spec, "baseten", "baseten", API_KEY),
    Kind("Provider", "providers", test_provider.spec, "ngrok", "ngrok", NGROK_KEY),
    Kind("Model", "models", test_model.spec, "registry", "model_registry", REGISTRY_KEY),
    Kind("DedicatedEndpoint", "dedicatedendpoints", test_dedicated_endpoint.spec, "together", "together", TOGETHER_KEY),
]


def default_key_settings(
    env: KubeEnv, sims: dict[str, SimulatorServer], *, operator_namespace: str, namespaces: list[str] | None
) -> Any:
    """Settings whose every upstream has a default key, scoped to ``namespaces``."""
    settings = make_settings(env, sims["baseten"].url, sims["ngrok"].url, sims["registry"].url, sims["together"].url)
    scoped = {
        kind.setting: UpstreamSettings(
            **{
                **getattr(settings, kind.setting).model_dump(),
                "api_key": SecretStr(kind.key),
                "default_key_namespaces": namespaces,
            }
        )
        for kind in KINDS
    }
    return settings.model_copy(update={"operator_namespace": operator_namespace, **scoped})


def without_own_key(kind: Kind) -> dict[str, Any]:
    spec = kind.spec()
    spec.pop("credentialsSecretRef")
    return spec


async def run_operator(settings: Any) -> OperatorRunner:
    runner = OperatorRunner(settings)
    await runner.start()
    return runner


@pytest.mark.parametrize("kind", KINDS, ids=[k.kind for k in KINDS])
async def test_a_namespace_not_allowed_spends_no_default_key(
    kind: Kind, kube_env: KubeEnv, simulators: dict[str, SimulatorServer], credentials: str
) -> None:
    """The operator runs in another namespace, and this one is not listed: Ready=False
    CredentialsNotPermitted saying how to fix it, and not one request to the upstream."""
    sim = simulators[kind.sim]
    settings = default_key_settings(kube_env, simulators, operator_namespace="aigw-system", namespaces=None)
    runner = await run_operator(settings)
    try:
        sim.reset_counts()
        response = await kube_env.kube.create(kind.kind, kind.plural, "no-key", without_own_key(kind))
        assert response.status_code == 201, response.text
        obj = await kube_env.kube.wait_condition(
            kind.plural, "no-key", "Ready", "False", reason="CredentialsNotPermitted"
        )
        ready = condition(obj, "Ready")
        assert ready is not None and ready["reason"] == "CredentialsNotPermitted", ready
        namespace = kube_env.kube.namespace
        assert f"namespace {namespace} may not use the operator's default" in ready["message"]
        assert "spec.credentialsSecretRef" in ready["message"]
        assert f"AIGW_{kind.setting.upper()}__DEFAULT_KEY_NAMESPACES" in ready["message"]
        await asyncio.sleep(1.0)  # several retry intervals of the test settings: still nothing
        assert sim.requests == [], [(r.method, r.path) for r in sim.requests]
        events = [e for e in await kube_env.kube.events() if e.get("reason") == "CredentialsNotPermitted"]
        assert len(events) == 1, events
        # The fix the message names: a key of its own, from a Secret in this namespace.
        fixed = {"credentialsSecretRef": kind.spec()["credentialsSecretRef"]}
        response = await kube_env.kube.patch_spec(kind.plural, "no-key", fixed)
        assert response.status_code == 200, response.text
        await kube_env.kube.wait_condition(kind.plural, "no-key", "Ready", "True", timeout=20)
        assert sim.requests, "the resource's own key is used"
    finally:
        await runner.stop()


@pytest.mark.parametrize("kind", KINDS, ids=[k.kind for k in KINDS])
async def test_listed_and_own_namespaces_spend_the_default_key(
    kind: Kind, kube_env: KubeEnv, simulators: dict[str, SimulatorServer], credentials: str
) -> None:
    """Listed: the default key is used (the upstream sees it). Unlisted but the operator's own
    namespace (the default): used too."""
    sim = simulators[kind.sim]
    namespace = kube_env.kube.namespace
    for name, operator_namespace, namespaces in (
        ("listed", "aigw-system", ["team-a", namespace]),
        ("own", namespace, None),
    ):
        runner = await run_operator(
            default_key_settings(kube_env, simulators, operator_namespace=operator_namespace, namespaces=namespaces)
        )
        try:
            sim.reset_counts()
            spec = without_own_key(kind)
            if kind.kind == "GatewayEndpoint":
                spec["slug"] = f"my-org/{name}"
            elif kind.kind == "Provider":
                spec["providerId"] = f"vllm-{name}"
            elif kind.kind == "Model":
                spec["name"] = f"assistant-{name}"
            response = await kube_env.kube.create(kind.kind, kind.plural, name, spec)
            assert response.status_code == 201, response.text
            await kube_env.kube.wait_condition(kind.plural, name, "Ready", "True", timeout=20)
            assert sim.requests, "the default key reached the upstream"
        finally:
            await runner.stop()


async def test_wildcard_lets_every_namespace_spend_it(
    kube_env: KubeEnv, simulators: dict[str, SimulatorServer], credentials: str
) -> None:
    kind = KINDS[0]
    runner = await run_operator(
        default_key_settings(kube_env, simulators, operator_namespace="aigw-system", namespaces=["*"])
    )
    try:
        response = await kube_env.kube.create(kind.kind, kind.plural, "anyone", without_own_key(kind))
        assert response.status_code == 201, response.text
        await kube_env.kube.wait_condition(kind.plural, "anyone", "Ready", "True", timeout=20)
    finally:
        await runner.stop()


def test_a_wildcard_is_alone_or_absent() -> None:
    with pytest.raises(ValueError, match="every namespace"):
        UpstreamSettings(base_url="https://x.example", default_key_namespaces=["*", "team-a"])
    assert UpstreamSettings(base_url="https://x.example", default_key_namespaces=["*"]).default_key_namespaces == ["*"]


async def test_a_default_key_from_a_file_is_scoped_the_same(
    kube_env: KubeEnv, simulators: dict[str, SimulatorServer], credentials: str, tmp_path: Any
) -> None:
    """The chart mounts default keys as files (AIGW_<UPSTREAM>__API_KEY_FILE): the scope holds
    for a key read from a file as for one given as a value."""
    kind = KINDS[0]
    key_file = tmp_path / "baseten"
    key_file.write_text(kind.key)
    settings = default_key_settings(kube_env, simulators, operator_namespace="aigw-system", namespaces=["team-a"])
    baseten = settings.baseten.model_copy(update={"api_key": None, "api_key_file": key_file})
    sim = simulators[kind.sim]
    runner = await run_operator(settings.model_copy(update={"baseten": baseten}))
    try:
        sim.reset_counts()
        await kube_env.kube.create(kind.kind, kind.plural, "from-file", without_own_key(kind))
        await kube_env.kube.wait_condition(kind.plural, "from-file", "Ready", "False", reason="CredentialsNotPermitted")
        await asyncio.sleep(0.5)
        assert sim.requests == []
    finally:
        await runner.stop()
