"""Two operators at once (a second release, a pod left on a partitioned node, 'aigw-operator run'
from a laptop), without leader election: what guards a create must hold across processes, so
every resource still ends with exactly one upstream object and no Together endpoint is POSTed
twice (each one is billed)."""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import pytest

from aigw_testbed.simulators.base import SimulatorServer
from tests.operator.conftest import KubeEnv, OperatorRunner, make_settings
from tests.operator.test_dedicated_endpoint import spec as dedicated_spec
from tests.operator.test_gateway_endpoint import spec as gateway_spec
from tests.operator.test_model import spec as model_spec
from tests.operator.test_provider import spec as provider_spec

COUNT = 4
# kind, plural, simulator, spec for resource i, the create route, what names the resource upstream
KINDS: list[tuple[str, str, str, Any, str, Any]] = [
    (
        "GatewayEndpoint",
        "gatewayendpoints",
        "baseten",
        lambda i: gateway_spec(slug=f"my-org/split-{i}"),
        "/v1/gateway/endpoints",
        lambda body: body.get("slug"),
    ),
    (
        "Provider",
        "providers",
        "ngrok",
        lambda i: provider_spec(providerId=f"split-{i}"),
        "/providers",
        lambda body: body.get("providerId"),
    ),
    (
        "Model",
        "models",
        "registry",
        lambda i: model_spec(name=f"split-{i}"),
        "/api/v1/models/",
        lambda body: body.get("name"),
    ),
    (
        "DedicatedEndpoint",
        "dedicatedendpoints",
        "together",
        lambda i: dedicated_spec(displayName=f"split-{i}"),
        "/v1/endpoints",
        lambda body: body.get("display_name"),
    ),
]


@pytest.mark.parametrize("kind", KINDS, ids=[k[0] for k in KINDS])
async def test_two_operators_without_election_make_one_upstream_object_per_resource(
    kind: tuple[str, str, str, Any, str, Any],
    kube_env: KubeEnv,
    simulators: dict[str, SimulatorServer],
    credentials: str,
) -> None:
    name, plural, sim_name, spec, create_route, key_of = kind
    sim = simulators[sim_name]
    urls = {n: s.url for n, s in simulators.items()}
    settings = make_settings(kube_env, urls["baseten"], urls["ngrok"], urls["registry"], urls["together"])
    first, second = OperatorRunner(settings), OperatorRunner(settings)
    await first.start()
    await second.start()
    try:
        await asyncio.gather(*(kube_env.kube.create(name, plural, f"split-{i}", spec(i)) for i in range(COUNT)))
        objects = [
            await kube_env.kube.wait_condition(plural, f"split-{i}", "Ready", "True", timeout=30) for i in range(COUNT)
        ]
        await asyncio.sleep(1.0)  # anything either operator still had in flight
        posts = [r for r in sim.requests if r.method == "POST" and r.route == create_route]
        sent = collections.Counter(key_of(r.body) for r in posts if isinstance(r.body, dict))
        accepted = [r for r in posts if r.status < 300]
        ids = {obj["status"]["id"] for obj in objects}
        # One upstream object per resource, each named by exactly one resource's status.
        assert len(ids) == COUNT
        assert len(accepted) == COUNT, f"{len(accepted)} objects created for {COUNT} resources: {sent}"
        if name == "DedicatedEndpoint":
            # No idempotency key: a second POST would be a second billed endpoint, even if one
            # of the two were deleted later. The fenced create-pending mark must prevent it.
            assert sent == {f"split-{i}": 1 for i in range(COUNT)}, sent
    finally:
        await second.stop()
        await first.stop()
