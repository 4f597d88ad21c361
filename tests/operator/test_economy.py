"""API-call economy on small N: what one create, one no-op resync and one spec change cost on
the cluster's API server and on the upstream's quota, and that resyncs are batched into list
calls. benchmarks/ measures the same at scale; these keep regressions out of CI."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from aigw_operator.base.settings import LeaderElectionSettings
from aigw_testbed.kubectl import condition
from aigw_testbed.simulators.base import SimulatorServer
from aigw_testbed.simulators.baseten import BasetenSimulator
from tests import scrape
from tests.operator import test_dedicated_endpoint, test_gateway_endpoint, test_model, test_provider
from tests.operator.conftest import KubeEnv, OperatorRunner, make_settings, release_resources

# The upstream calls a routine resync of a converged object may make: list calls only.
LIST_ROUTES = {
    "gatewayendpoints": "/v1/gateway/endpoints",
    "providers": "/providers",
    "models": "/api/v1/models/",
    "dedicatedendpoints": "/v1/endpoints",
}


@dataclass(frozen=True)
class Kind:
    """One kind's budget, per single create and per single spec change: docs/reliability.md
    states the same figures ("Cheap on quotas"). Upstream calls count every request, GETs by id
    included."""

    kind: str
    plural: str
    spec: Callable[[int], dict[str, Any]]
    sim: str
    change: dict[str, Any]  # one spec change, applied in place upstream
    # A create: the finalizer, the create-pending mark before the POST (on the resourceVersion
    # read: the proof that an object found after a lost answer is this resource's, and the fence
    # between two processes), the status, the Created Event, and one metadata write that clears
    # the mark and records the id in aigw.dev/external-id (+ extras below).
    k8s_writes: int = 5
    # A create: the listing searched for the natural key (one listing serves the creates of a
    # burst, so later ones often cost the POST alone), the POST.
    upstream_calls: int = 2
    # Made by the first create of an operator process only, not by each: upstream calls, and
    # Kubernetes writes per credentials Secret (the finalizer that keeps it while resources
    # need it to delete their upstream objects, secret_protection).
    once: int = 0
    k8s_once: int = 1
    # A spec change: the status, the Updated Event.
    change_writes: int = 2
    # A spec change: the read of the stored id (a GET), the PATCH.
    change_calls: int = 2


KINDS = [
    Kind(
        "GatewayEndpoint",
        "gatewayendpoints",
        lambda i: test_gateway_endpoint.spec(slug=f"my-org/m{i}"),
        "baseten",
        {"targets": [{"provider": "BASETEN", "modelId": "7mP2wqe"}]},
    ),
    Kind(
        "Provider",
        "providers",
        lambda i: test_provider.spec(providerId=f"vllm-{i}"),
        "ngrok",
        {"name": "vLLM cluster"},
    ),
    # Model: the registry's configuration schemas, read once per tenant.
    Kind(
        "Model",
        "models",
        lambda i: test_model.spec(name=f"assistant-{i}"),
        "registry",
        {"summary": "changed summary"},
        once=1,
    ),
    # Together: one more write, a status write while the endpoint starts (the mark and its
    # removal with the id are every kind's now).
    # Upstream: no search (no unique key; only a create-pending mark makes it look), the POST
    # and the GETs that follow the start-up: at most 2 for the simulator's 0.5 s start-up polled
    # every short_poll_interval (0.5 s). The hardware check for the model is made once, shared
    # by the creates.
    Kind(
        "DedicatedEndpoint",
        "dedicatedendpoints",
        lambda i: test_dedicated_endpoint.spec(),
        "together",
        {"autoscaling": {"minReplicas": 2, "maxReplicas": 3}},
        k8s_writes=6,
        upstream_calls=3,
        once=1,
    ),
]


def _writes(env: KubeEnv) -> int:
    assert env.emulator is not None
    return env.emulator.writes()


async def _settled() -> None:
    """Anything the operator still had in flight for the last step has landed."""
    await asyncio.sleep(0.3)


@pytest.mark.parametrize("kind", KINDS, ids=[k.kind for k in KINDS])
async def test_create_and_spec_change_costs(
    kind: Kind,
    kube_env: KubeEnv,
    simulators: dict[str, SimulatorServer],
    operator: OperatorRunner,
    credentials: str,
) -> None:
    """Each create on its own, one after another (a sum over several would let one of them cost
    more), then one spec change of each resource: Kubernetes writes and upstream calls of each."""
    if kube_env.emulator is None:
        pytest.fail("counts API-server writes: needs the emulator's counters")
    sim = simulators[kind.sim]
    creates: list[tuple[int, list[tuple[str, str | None]]]] = []
    for i in range(3):
        sim.reset_counts()
        before = _writes(kube_env)
        response = await kube_env.kube.create(kind.kind, kind.plural, f"x{i}", kind.spec(i))
        assert response.status_code == 201, response.text
        await kube_env.kube.wait_condition(kind.plural, f"x{i}", "Ready", "True")
        await _settled()
        creates.append((_writes(kube_env) - before - 1, [(r.method, r.route) for r in sim.requests]))  # -1: our POST
    for i, (writes, calls) in enumerate(creates):
        first = i == 0
        assert writes <= kind.k8s_writes + (kind.k8s_once if first else 0), (i, writes, kube_env.emulator.counters())
        assert len(calls) <= kind.upstream_calls + (kind.once if first else 0), (i, calls)

    for i in range(3):
        sim.reset_counts()
        before = _writes(kube_env)
        response = await kube_env.kube.patch_spec(kind.plural, f"x{i}", kind.change)
        assert response.status_code == 200, response.text

        def current(obj: dict[str, Any] | None) -> bool:
            ready = condition(obj, "Ready") if obj else None
            return bool(
                obj
                and obj["status"].get("observedGeneration") == 2
                and ready
                and ready["status"] == "True"
                and ready.get("observedGeneration") == 2
            )

        await kube_env.kube.wait_for(kind.plural, f"x{i}", current)
        await _settled()
        writes = _writes(kube_env) - before - 1  # -1: our PATCH of the spec
        calls = [(r.method, r.route) for r in sim.requests]
        assert [m for m, _ in calls].count("PATCH") == 1, calls
        assert writes <= kind.change_writes, (i, writes, kube_env.emulator.counters())
        assert len(calls) <= kind.change_calls, (i, calls)


async def test_many_resyncs_share_list_calls(
    kube_env: KubeEnv, baseten: BasetenSimulator, operator: OperatorRunner, credentials: str
) -> None:
    count, interval, window = 20, 2.0, 5.0
    await asyncio.gather(
        *(
            kube_env.kube.create(
                "GatewayEndpoint",
                "gatewayendpoints",
                f"e{i}",
                test_gateway_endpoint.spec(slug=f"my-org/e{i}"),
                annotations={"aigw.dev/resync-seconds": str(interval)},
            )
            for i in range(count)
        )
    )
    for i in range(count):
        await kube_env.kube.wait_condition("gatewayendpoints", f"e{i}", "Ready", "True")
    await asyncio.sleep(0.5)
    writes = _writes(kube_env)
    baseten.reset_counts()
    await asyncio.sleep(window)
    resyncs = count * window / interval  # about 50
    lists = baseten.count("GET", LIST_ROUTES["gatewayendpoints"])
    # One list call serves every object resyncing within its age limit (0.9 x the interval).
    assert 1 <= lists <= math.ceil(window / (interval * 0.9)) + 2, lists
    assert lists < resyncs / 5
    assert baseten.count("GET", "/v1/gateway/endpoints/{id}") == 0
    assert [r for r in baseten.requests if r.method != "GET"] == []
    assert _writes(kube_env) == writes


async def test_drift_seen_in_the_listing_is_confirmed_and_corrected(
    kube_env: KubeEnv, baseten: BasetenSimulator, operator: OperatorRunner, credentials: str
) -> None:
    await kube_env.kube.create(
        "GatewayEndpoint",
        "gatewayendpoints",
        "glm",
        test_gateway_endpoint.spec(),
        annotations={"aigw.dev/resync-seconds": "1"},
    )
    obj = await kube_env.kube.wait_condition("gatewayendpoints", "glm", "Ready", "True")
    endpoint = baseten.endpoints[obj["status"]["id"]]
    baseten.reset_counts()
    endpoint["targets"] = [{"provider": "BASETEN", "model_id": "changed1"}]
    deadline = asyncio.get_running_loop().time() + 5
    while baseten.count("PATCH") == 0:
        assert asyncio.get_running_loop().time() < deadline, "drift not corrected"
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    # The listing, fetched for this very resync, showed the drift and is the observation: no
    # GET to confirm it, one PATCH.
    assert baseten.count("GET", "/v1/gateway/endpoints/{id}") == 0
    assert baseten.count("PATCH") == 1
    assert endpoint["targets"][0]["model_id"] == "3kZ9xqd"


@pytest.mark.parametrize("handover", ["restart", "fail-over"])
async def test_a_restart_with_converged_objects_lists_once_and_writes_nothing(
    handover: str, kube_env: KubeEnv, baseten: BasetenSimulator, credentials: str
) -> None:
    """The restart scenario of benchmarks/ at small N: with N Ready objects, the operator stops
    and starts again (or hands over to a standby). Every object is verified against the upstream
    (reconciled once by the new process, as its reconcile counter shows), at the cost of the
    shared listing alone: at most ceil(N / page) list calls and a small constant, no GET per
    object, no upstream write, and not one Kubernetes write (the Lease apart)."""
    if kube_env.emulator is None:
        pytest.fail("counts API-server writes: needs the emulator's counters")
    count, resync = 30, 4.0
    overrides: dict[str, Any] = {"resync_interval": resync}  # converged objects: first seen within 4 s

    def runner(identity: str) -> OperatorRunner:
        if handover == "restart":
            return OperatorRunner(make_settings(kube_env, baseten.url, **overrides))
        election = LeaderElectionSettings(
            enabled=True,
            lease_name="economy",
            lease_namespace=kube_env.kube.namespace,
            identity=identity,
            lease_duration=3.0,
            renew_deadline=2.0,
            retry_period=0.5,
        )
        return OperatorRunner(make_settings(kube_env, baseten.url, leader_election=election, **overrides))

    first, second = runner("first"), runner("second")
    await first.start()
    try:
        if handover == "fail-over":
            await second.start(wait_ready=False)
        await asyncio.gather(
            *(
                kube_env.kube.create(
                    "GatewayEndpoint", "gatewayendpoints", f"r{i}", test_gateway_endpoint.spec(slug=f"my-org/r{i}")
                )
                for i in range(count)
            )
        )
        for i in range(count):
            await kube_env.kube.wait_condition("gatewayendpoints", f"r{i}", "Ready", "True")
        await _settled()
        await first.stop()
        writes = _writes(kube_env) - kube_env.emulator.writes("leases")
        baseten.reset_counts()
        reconciled = scrape.total(
            await scrape.scrape(), "controller_runtime_reconcile_total", controller="gatewayendpoint"
        )
        if handover == "restart":
            await second.start()
        deadline = asyncio.get_running_loop().time() + resync + 10
        while True:
            samples = await scrape.scrape()
            done = (
                scrape.total(samples, "controller_runtime_reconcile_total", controller="gatewayendpoint") - reconciled
            )
            if done >= count:
                break
            assert asyncio.get_running_loop().time() < deadline, (
                f"{done} of {count} objects reconciled after the {handover}"
            )
            await asyncio.sleep(0.1)
        await _settled()
        calls = [(r.method, r.route) for r in baseten.requests]
        lists = calls.count(("GET", LIST_ROUTES["gatewayendpoints"]))
        assert len(calls) == lists, calls  # the listing only: no GET by id, no write
        # ceil(N / 1000) listings, one more where the first grew older than 0.9 x the interval
        # while the start-up spread ran, and a small constant.
        assert 1 <= lists <= math.ceil(count / 1000) + 2, calls
        assert _writes(kube_env) - kube_env.emulator.writes("leases") == writes, kube_env.emulator.counters()
        await release_resources(kube_env.kube)
    finally:
        await first.stop()
        await second.stop()
