"""The fault-injection matrix: every kind against every fault, with the real operator end to end.

Rows are the kinds (a :class:`Driver` each: spec, the update to apply, how to read, change and
delete its objects in the simulator, how to rotate its key). Columns are the faults (:data:`CASES`):
responses lost after a successful POST, PATCH and DELETE; the operator killed hard before the POST,
after the POST, after the PATCH and after the DELETE; a 5xx storm; a 429 storm; connections
refused; an upstream slower than the client's timeout; credentials missing then added; credentials
rotated; the upstream object deleted or edited out of band.

After each fault is switched off, the same invariants are checked: exactly one upstream object
per resource and a truthful status (its id, Ready=True, Synced=True, the current generation),
a bounded number of upstream requests, and finally (every case ends with a deletion) no upstream
object left and no Kubernetes object stuck on its finalizer. The counts of duplicates, leaks and
stuck finalizers over the whole matrix go into the session summary.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from aigw_operator import FINALIZER
from aigw_operator.settings import Settings
from aigw_operator.simulators.base import RequestRecord, SimulatorServer
from aigw_operator.simulators.baseten import BasetenSimulator
from aigw_operator.simulators.kubectl import Kube, condition
from aigw_operator.simulators.model_registry import ModelRegistrySimulator
from aigw_operator.simulators.ngrok import NgrokSimulator
from aigw_operator.simulators.together import TogetherSimulator
from tests.conftest import (
    API_KEY,
    NGROK_KEY,
    REGISTRY_KEY,
    TOGETHER_KEY,
    KubeEnv,
    OperatorRunner,
    kill_while_held,
    make_settings,
    record_summary,
)

NAME = "fm"
CLOSED = "http://127.0.0.1:9"  # the discard port: nothing listens there
RESYNC = {"aigw.dev/resync-seconds": "1"}
# A slow upstream answers after this long: twice the client timeout of make_settings().
SLOW_SECONDS = 2.0
STORM_SECONDS = 1.5


# ------------------------------------------------------------------------------------- the kinds


@dataclass(frozen=True)
class Driver:
    """What the matrix needs to know about one kind and its simulator."""

    kind: str
    plural: str
    secret: str  # the Secret holding the upstream API key (put there by the ``credentials`` fixture)
    key: str  # the key in it
    url_setting: str  # the make_settings() argument for this upstream's URL
    simulator: Callable[[], SimulatorServer]
    spec: Callable[[], dict[str, Any]]
    update: dict[str, Any]  # a spec change that the upstream applies in place (one PATCH)
    objects: Callable[[Any], list[str]]  # ids of the upstream objects
    updated: Callable[[Any, str], bool]  # the update has reached the upstream object
    in_spec: Callable[[Any, str], bool]  # the upstream object is as the original spec says
    delete_out_of_band: Callable[[Any, str], None]
    change_out_of_band: Callable[[Any, str], None]  # change a field the operator corrects in place
    rotate: Callable[[Any, str, str], None]  # the upstream accepts the new key and refuses the old one


def _drop(sim: Any, upstream_id: str) -> None:
    """Delete by id, as someone in the vendor's dashboard would."""
    sim.delete_out_of_band(upstream_id)


# GatewayEndpoint / Baseten


def _baseten() -> SimulatorServer:
    return BasetenSimulator(api_keys=[API_KEY], contract=True)


def _baseten_model_id(sim: BasetenSimulator, upstream_id: str) -> str:
    return str(sim.endpoints[upstream_id]["targets"][0]["model_id"])


def _baseten_rotate(sim: BasetenSimulator, old: str, new: str) -> None:
    sim.rotate_key(old, new)


def _baseten_edit(sim: BasetenSimulator, upstream_id: str) -> None:
    sim.modify_out_of_band(upstream_id, targets=[{"provider": "BASETEN", "model_id": "edited0"}])


GATEWAY_ENDPOINT = Driver(
    kind="GatewayEndpoint",
    plural="gatewayendpoints",
    secret="baseten",
    key=API_KEY,
    url_setting="baseten_url",
    simulator=_baseten,
    spec=lambda: {
        "slug": "my-org/fm",
        "targets": [{"provider": "BASETEN", "modelId": "3kZ9xqd"}],
        "credentialsSecretRef": {"name": "baseten"},
    },
    update={"targets": [{"provider": "BASETEN", "modelId": "7mP2wqe"}]},
    objects=lambda sim: list(sim.endpoints),
    updated=lambda sim, i: _baseten_model_id(sim, i) == "7mP2wqe",
    in_spec=lambda sim, i: _baseten_model_id(sim, i) == "3kZ9xqd",
    delete_out_of_band=_drop,
    change_out_of_band=_baseten_edit,
    rotate=_baseten_rotate,
)


# Provider / ngrok


def _ngrok() -> SimulatorServer:
    return NgrokSimulator(api_keys=[NGROK_KEY], contract=True)


def _ngrok_rotate(sim: NgrokSimulator, old: str, new: str) -> None:
    sim.add_key(new)
    sim.remove_key(old)


def _ngrok_edit(sim: NgrokSimulator, upstream_id: str) -> None:
    sim.modify_out_of_band(upstream_id, name="edited by hand")


PROVIDER = Driver(
    kind="Provider",
    plural="providers",
    secret="ngrok",
    key=NGROK_KEY,
    url_setting="ngrok_url",
    simulator=_ngrok,
    spec=lambda: {
        "providerId": "internal-vllm",
        "name": "vLLM",
        "baseUrl": "http://vllm.internal",
        "models": ["llama-3-8b", "qwen-2"],
        "credentialsSecretRef": {"name": "ngrok"},
    },
    update={"name": "vLLM cluster"},
    objects=lambda sim: list(sim.providers),
    updated=lambda sim, i: sim.providers[i]["name"] == "vLLM cluster",
    in_spec=lambda sim, i: sim.providers[i]["name"] == "vLLM",
    delete_out_of_band=_drop,
    change_out_of_band=_ngrok_edit,
    rotate=_ngrok_rotate,
)


# Model / model registry

TENANT = "root"


def _registry() -> SimulatorServer:
    return ModelRegistrySimulator(admin_key=REGISTRY_KEY, tenants=["team-a"], contract=True)


def _registry_model(sim: ModelRegistrySimulator, upstream_id: str) -> dict[str, Any]:
    [model] = [m for m in sim.models(TENANT).values() if m["id"] == upstream_id]
    return model


def _registry_delete(sim: ModelRegistrySimulator, upstream_id: str) -> None:
    sim.delete_out_of_band(_registry_model(sim, upstream_id)["name"], tenant=TENANT)


def _registry_edit(sim: ModelRegistrySimulator, upstream_id: str) -> None:
    # configuration is immutable upstream; the summary is not.
    sim.modify_out_of_band(_registry_model(sim, upstream_id)["name"], tenant=TENANT, summary="edited by hand")


def _registry_rotate(sim: ModelRegistrySimulator, old: str, new: str) -> None:
    sim.rotate_admin_key(new)


MODEL = Driver(
    kind="Model",
    plural="models",
    secret="registry",
    key=REGISTRY_KEY,
    url_setting="registry_url",
    simulator=_registry,
    spec=lambda: {
        "dtype": "openai",
        "configuration": {"model": "gpt-4o", "apiKeySecretRef": {"name": "openai"}},
        "summary": "support bot",
        "tags": ["openai", "prod"],
        "credentialsSecretRef": {"name": "registry"},
        "tenant": TENANT,
    },
    update={"summary": "updated summary"},
    objects=lambda sim: [m["id"] for m in sim.models(TENANT).values()],
    updated=lambda sim, i: _registry_model(sim, i)["summary"] == "updated summary",
    in_spec=lambda sim, i: _registry_model(sim, i)["summary"] == "support bot",
    delete_out_of_band=_registry_delete,
    change_out_of_band=_registry_edit,
    rotate=_registry_rotate,
)


# DedicatedEndpoint / Together


def _together() -> SimulatorServer:
    # Start-up in a tenth of a second: the matrix is about faults, not about waiting for GPUs.
    return TogetherSimulator(
        api_keys=[TOGETHER_KEY],
        contract=True,
        pending_seconds=0.05,
        starting_seconds=0.05,
        stopping_seconds=0.05,
        scaling_seconds=0.05,
    )


def _together_bounds(sim: TogetherSimulator, upstream_id: str) -> tuple[int, int]:
    endpoint = sim.endpoints[upstream_id]
    return endpoint.min_replicas, endpoint.max_replicas


def _together_edit(sim: TogetherSimulator, upstream_id: str) -> None:
    # The simulator has no out-of-band editor: change its record as the dashboard would.
    endpoint = sim.endpoints[upstream_id]
    endpoint.min_replicas, endpoint.max_replicas = 3, 4


def _together_rotate(sim: TogetherSimulator, old: str, new: str) -> None:
    sim.add_key(new)
    sim.remove_key(old)


DEDICATED_ENDPOINT = Driver(
    kind="DedicatedEndpoint",
    plural="dedicatedendpoints",
    secret="together",
    key=TOGETHER_KEY,
    url_setting="together_url",
    simulator=_together,
    spec=lambda: {
        "model": "meta-llama/Llama-3-8b-chat-hf",
        "hardware": "1x_nvidia_h100_80gb_sxm",
        "autoscaling": {"minReplicas": 1, "maxReplicas": 2},
        "credentialsSecretRef": {"name": "together"},
    },
    update={"autoscaling": {"minReplicas": 2, "maxReplicas": 3}},
    objects=lambda sim: list(sim.endpoints),
    updated=lambda sim, i: _together_bounds(sim, i) == (2, 3),
    in_spec=lambda sim, i: _together_bounds(sim, i) == (1, 2),
    delete_out_of_band=_drop,
    change_out_of_band=_together_edit,
    rotate=_together_rotate,
)

DRIVERS = [GATEWAY_ENDPOINT, PROVIDER, MODEL, DEDICATED_ENDPOINT]


# ------------------------------------------------------------------------------------ the summary


@dataclass
class Tally:
    cases: int = 0
    duplicates: int = 0  # cases where some resource had more than one upstream object
    leaks: int = 0  # cases that left an upstream object behind a deleted resource
    stuck: int = 0  # cases whose resource stayed on its finalizer after deletion

    def record(self) -> None:
        record_summary(
            "fault matrix",
            f"{self.cases} cases, duplicates {self.duplicates}, leaks {self.leaks}, stuck finalizers {self.stuck}",
        )


TALLY = Tally()


# ------------------------------------------------------------------------------------ the harness


def _ok(record: RequestRecord) -> bool:
    return record.status is not None and 200 <= record.status < 300


class Harness:
    """One kind's simulator, the Kubernetes API and the operator, for one case."""

    def __init__(self, driver: Driver, env: KubeEnv, sim: Any, max_requests: int) -> None:
        self.driver = driver
        self.env = env
        self.sim = sim
        self.max_requests = max_requests
        self.runner: OperatorRunner | None = None
        self.generation = 0
        self.duplicate = False
        self.leak = False
        self.stuck = False
        # Broken invariants that do not stop the case: it goes on to the deletion, so that a
        # duplicate also shows whether it leaks. The test fails on them at the end.
        self.problems: list[str] = []

    # -- the operator

    def settings(self) -> Settings:
        urls = {"baseten_url": CLOSED, "ngrok_url": CLOSED, "registry_url": CLOSED, "together_url": CLOSED}
        urls[self.driver.url_setting] = self.sim_url
        return make_settings(
            self.env,
            urls.pop("baseten_url"),
            **urls,
            short_poll_interval=0.2,
            # Together's list lacks autoscaling: the out-of-band edit of it shows only to a GET.
            full_observe_interval=1.0,
        )

    async def start(self) -> None:
        runner = OperatorRunner(self.settings())
        await runner.start()
        self.runner = runner

    async def kill(self) -> None:
        assert self.runner is not None
        await self.runner.kill()
        self.runner = None

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.stop()
            self.runner = None

    # -- the resource

    @property
    def kube(self) -> Kube:
        return self.env.kube

    async def create(self, *, resync: bool = False) -> None:
        response = await self.kube.create(
            self.driver.kind, self.driver.plural, NAME, self.driver.spec(), annotations=RESYNC if resync else None
        )
        assert response.status_code == 201, response.text
        self.generation = 1

    async def change_spec(self) -> None:
        response = await self.kube.patch_spec(self.driver.plural, NAME, self.driver.update)
        assert response.status_code == 200, response.text
        self.generation += 1

    async def delete(self) -> None:
        response = await self.kube.delete(self.driver.plural, NAME)
        assert response.status_code == 200, response.text

    async def get(self) -> dict[str, Any] | None:
        return await self.kube.get(self.driver.plural, NAME)

    async def ready(self, *, resync: bool = False) -> dict[str, Any]:
        """Create the resource, let it converge, and start counting upstream requests afresh."""
        await self.create(resync=resync)
        obj = await self.converged(count=False)
        self.sim.reset_counts()
        return obj

    # -- the upstream

    @property
    def sim_url(self) -> str:
        return f"http://{self.sim.host}:{self.sim.port}"

    def objects(self) -> list[str]:
        ids = self.driver.objects(self.sim)
        if len(ids) > 1:
            self.duplicate = True
        return ids

    def requests(self, method: str | None = None, *, ok: bool = False) -> list[RequestRecord]:
        return [r for r in self.sim.requests if (method is None or r.method == method) and (not ok or _ok(r))]

    async def wait_request(self, predicate: Callable[[RequestRecord], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(predicate(r) for r in self.sim.requests):
            assert time.monotonic() < deadline, f"no such upstream request; saw {self._log()}"
            await asyncio.sleep(0.005)

    async def quiesce(self, timeout: float = 5.0) -> None:
        """Wait until every request the upstream received has been answered (or dropped)."""
        deadline = time.monotonic() + timeout
        while any(r.status is None for r in self.sim.requests):
            assert time.monotonic() < deadline, f"upstream requests still in flight: {self._log()}"
            await asyncio.sleep(0.02)

    def _log(self) -> list[str]:
        """The upstream requests, with their arrival time from the first one's."""
        start = self.sim.requests[0].time if self.sim.requests else 0.0
        return [
            f"+{r.time - start:.2f}s {r.method} {r.path} -> {r.status}{' (lost)' if r.lost else ''}"
            for r in self.sim.requests
        ]

    # -- the invariants

    async def converged(self, *, count: bool = True, timeout: float = 15.0) -> dict[str, Any]:
        """Ready and Synced for the current generation, one upstream object, and the status names it."""

        def done(obj: dict[str, Any] | None) -> bool:
            if obj is None:
                return False
            ready, synced = condition(obj, "Ready"), condition(obj, "Synced")
            return bool(
                ready
                and ready["status"] == "True"
                and synced
                and synced["status"] == "True"
                and obj["metadata"]["generation"] == self.generation
                and (obj.get("status") or {}).get("observedGeneration") == self.generation
            )

        obj = await self.kube.wait_for(self.driver.plural, NAME, done, timeout)
        assert obj is not None
        # A request the upstream is still working on (a slow one) may yet create something.
        await self.quiesce()
        ids = self.objects()
        if ids != [obj["status"]["id"]]:
            self.problems.append(
                f"{self.driver.kind}: upstream objects {ids}, status.id {obj['status']['id']}; requests {self._log()}"
            )
        assert FINALIZER in obj["metadata"]["finalizers"]
        obj = await self.get()
        assert obj is not None and condition(obj, "Ready")["status"] == "True", obj  # type: ignore[index]
        if count:
            self.check_bound()
        return obj

    def check_bound(self) -> None:
        used = len(self.sim.requests)
        assert used <= self.max_requests, f"{used} upstream requests > {self.max_requests}: {self._log()}"

    async def deleted(self, timeout: float = 15.0) -> None:
        """The resource is gone from the API, and so is its upstream object."""
        try:
            await self.kube.wait_gone(self.driver.plural, NAME, timeout=timeout)
        except AssertionError:
            self.stuck = True
            raise
        await self.quiesce()
        left = self.objects()
        if left:
            self.leak = True
            self.problems.append(f"{self.driver.kind}: upstream objects left behind: {left}")


# ------------------------------------------------------------------------------------- the cases


async def lost_post(h: Harness) -> None:
    h.sim.faults.lose_next_response("POST")
    await h.start()
    await h.create()
    await h.converged()
    posts = h.requests("POST")
    assert posts and posts[0].lost, "the fault did not hit the create"
    assert len(posts) <= 2, "at most one more POST than the lost one"


async def lost_patch(h: Harness) -> None:
    await h.start()
    obj = await h.ready()
    h.sim.faults.lose_next_response("PATCH")
    await h.change_spec()
    await h.converged()
    patches = h.requests("PATCH")
    assert patches and patches[0].lost, "the fault did not hit the update"
    assert len(patches) <= 2
    assert h.driver.updated(h.sim, obj["status"]["id"])
    assert h.requests("POST") == []


async def lost_delete(h: Harness) -> None:
    await h.start()
    await h.ready()
    h.sim.faults.lose_next_response("DELETE")
    await h.delete()
    await h.deleted()
    deletes = h.requests("DELETE")
    assert deletes and deletes[0].lost, "the fault did not hit the delete"
    assert len(deletes) <= 3
    h.check_bound()


async def kill_before_post(h: Harness) -> None:
    await h.start()
    # Every upstream request hangs (past the client timeout): the operator is stuck before its POST.
    h.sim.faults.latency = SLOW_SECONDS
    await h.create()
    await h.wait_request(lambda r: True)
    await h.kill()
    h.sim.faults.latency = 0.0
    assert h.requests("POST") == [], "the kill came too late: the POST was sent"
    await h.start()
    await h.converged()
    assert len(h.requests("POST")) == 1


async def kill_after_post(h: Harness) -> None:
    await h.start()
    # The upstream creates the object and holds its answer: the kill lands before the id can be known.
    await kill_while_held(h.sim, "POST", h.create, h.kill)
    obj = await h.get()
    assert obj is not None
    assert not (obj.get("status") or {}).get("id"), "the id reached the status: the kill came too late"
    await h.start()
    await h.converged()
    assert len(h.requests("POST")) == 1


async def kill_after_patch(h: Harness) -> None:
    await h.start()
    obj = await h.ready()
    await kill_while_held(h.sim, "PATCH", h.change_spec, h.kill)
    current = await h.get()
    assert current is not None
    assert current["status"].get("observedGeneration") == 1, "the update reached the status: the kill came too late"
    await h.start()
    await h.converged()
    assert h.driver.updated(h.sim, obj["status"]["id"])
    assert len(h.requests("PATCH")) == 1
    assert h.requests("POST") == []


async def kill_after_delete(h: Harness) -> None:
    await h.start()
    await h.ready()
    # The upstream deletes the object and holds its answer: the finalizer cannot have come off yet.
    await kill_while_held(h.sim, "DELETE", h.delete, h.kill)
    obj = await h.get()
    assert obj is not None and FINALIZER in obj["metadata"]["finalizers"], "the finalizer came off: too late"
    await h.start()
    await h.deleted()
    assert len(h.requests("DELETE")) <= 2
    h.check_bound()


async def storm_5xx(h: Harness) -> None:
    await h.start()
    h.sim.faults.fail_next(100_000, status=503)
    started = time.monotonic()
    await h.create()
    obj = await h.kube.wait_condition(h.driver.plural, NAME, "Synced", "False", reason="UpstreamUnavailable")
    assert condition(obj, "Ready")["status"] == "False"  # type: ignore[index]
    await asyncio.sleep(max(0.0, started + STORM_SECONDS - time.monotonic()))
    h.sim.faults.reset()
    await h.converged()
    assert len(h.requests("POST", ok=True)) == 1


async def storm_429(h: Harness) -> None:
    retry_after = 1
    await h.start()
    h.sim.faults.rate_limit_burst(3, retry_after=retry_after)
    await h.create()
    await h.converged()
    throttled = [r for r in h.sim.requests if r.status == 429]
    assert len(throttled) == 3
    for first in throttled:
        later = [r for r in h.sim.requests if r.time > first.time]
        assert later, "nothing was sent after a 429"
        assert later[0].time - first.time >= retry_after, "a request came before Retry-After had passed"
    assert len(h.requests("POST")) == 1


async def connection_refused(h: Harness) -> None:
    await h.start()
    await h.sim.stop()  # the port is kept: start() listens on it again
    try:
        await h.create()
        await h.kube.wait_condition(h.driver.plural, NAME, "Synced", "False", reason="UpstreamUnavailable")
    finally:
        await h.sim.start()
    assert h.sim.requests == []
    await h.converged()
    assert len(h.requests("POST")) == 1


async def slow_upstream(h: Harness) -> None:
    await h.start()
    # The create is carried out, but only after the client has given up on it.
    h.sim.faults.slow_next(1, SLOW_SECONDS, method="POST")
    await h.create()
    await h.converged()
    assert 1 <= len(h.requests("POST")) <= 2


async def secret_missing(h: Harness) -> None:
    await h.kube.delete_secret(h.driver.secret)
    await h.start()
    await h.create()
    await h.kube.wait_condition(h.driver.plural, NAME, "Ready", "False", reason="CredentialsMissing")
    assert h.sim.requests == [], "nothing may be sent without credentials"
    await h.kube.put_secret(h.driver.secret, {"apiKey": h.driver.key})
    await h.converged()
    assert len(h.requests("POST")) == 1


async def secret_rotated(h: Harness) -> None:
    new = f"{h.driver.secret}-rotated-key-5e1f0a"
    await h.start()
    obj = await h.ready()
    h.driver.rotate(h.sim, h.driver.key, new)
    await h.kube.put_secret(h.driver.secret, {"apiKey": new})
    await h.change_spec()
    await h.converged()
    assert h.driver.updated(h.sim, obj["status"]["id"])
    accepted = h.requests(ok=True)
    assert accepted and all(r.key == new for r in accepted), "only the new key can be accepted"
    assert len(h.requests("PATCH", ok=True)) == 1
    assert h.requests("POST") == []


async def deleted_out_of_band(h: Harness) -> None:
    await h.start()
    obj = await h.ready(resync=True)
    old = obj["status"]["id"]
    h.driver.delete_out_of_band(h.sim, old)
    await h.kube.wait_for(h.driver.plural, NAME, lambda o: bool(o and o["status"].get("id") not in (None, old)))
    obj = await h.converged()
    assert obj["status"]["id"] != old
    assert len(h.requests("POST")) == 1, "recreated exactly once"
    assert "Recreated" in [e["reason"] for e in await h.kube.events(NAME)]


async def changed_out_of_band(h: Harness) -> None:
    await h.start()
    obj = await h.ready(resync=True)
    upstream_id = obj["status"]["id"]
    h.driver.change_out_of_band(h.sim, upstream_id)
    assert not h.driver.in_spec(h.sim, upstream_id)
    deadline = time.monotonic() + 10
    while not h.driver.in_spec(h.sim, upstream_id):
        assert time.monotonic() < deadline, "the drift was never corrected"
        await asyncio.sleep(0.05)
    await h.converged()
    # The Event follows the upstream PATCH the loop above saw: give it the moment it takes.
    deadline = time.monotonic() + 5
    while "DriftCorrected" not in [e["reason"] for e in await h.kube.events(NAME)]:
        assert time.monotonic() < deadline, "no DriftCorrected Event"
        await asyncio.sleep(0.05)
    assert len(h.requests("PATCH")) == 1, "drift corrected with one PATCH"
    assert h.requests("POST") == []


@dataclass(frozen=True)
class Case:
    run: Callable[[Harness], Awaitable[None]]
    # Upstream requests allowed from the fault's start until convergence (or deletion).
    max_requests: int
    # The case deletes the resource itself; the others end with a plain deletion.
    deletes: bool = False


CASES: dict[str, Case] = {
    "lost-post": Case(lost_post, 10),
    "lost-patch": Case(lost_patch, 10),
    "lost-delete": Case(lost_delete, 8, deletes=True),
    "kill-before-post": Case(kill_before_post, 12),
    "kill-after-post": Case(kill_after_post, 12),
    "kill-after-patch": Case(kill_after_patch, 10),
    "kill-after-delete": Case(kill_after_delete, 8, deletes=True),
    "5xx-storm": Case(storm_5xx, 30),
    "429-storm": Case(storm_429, 12),
    "connection-refused": Case(connection_refused, 10),
    "slow-upstream": Case(slow_upstream, 12),
    "secret-missing": Case(secret_missing, 10),
    "secret-rotated": Case(secret_rotated, 12),
    "deleted-out-of-band": Case(deleted_out_of_band, 12),
    "changed-out-of-band": Case(changed_out_of_band, 12),
}


@pytest.mark.parametrize("driver", DRIVERS, ids=lambda d: d.kind)
@pytest.mark.parametrize("case", list(CASES))
async def test_fault_matrix(case: str, driver: Driver, kube_env: KubeEnv, credentials: str) -> None:
    spec = CASES[case]
    async with driver.simulator() as sim:
        h = Harness(driver, kube_env, sim, spec.max_requests)
        try:
            await spec.run(h)
            if not spec.deletes:
                await h.delete()
                await h.deleted()
        finally:
            try:
                await h.stop()
            finally:
                TALLY.cases += 1
                TALLY.duplicates += h.duplicate
                TALLY.leaks += h.leak
                TALLY.stuck += h.stuck
                TALLY.record()
        assert h.problems == [], "\n".join(h.problems)
        # Every driver's simulator is built with contract=True (the registry's against our own
        # spec, as it publishes none), so this checks each kind; no getattr fallback that could
        # let a simulator without a checker pass unchecked.
        assert sim.contract_checker is not None, f"{driver.kind}: no contract checker"
        assert sim.contract_violations == [], sim.contract_violations
