"""Two replicas with Lease-based leader election: one leads and writes, the other waits with
no kopf running; a clean stop hands over within 5 s, a crash within the lease duration plus one
retry period, and a leader that cannot renew stops before anyone else could take over."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import httpx
import pytest

from aigw_operator.base.settings import LeaderElectionSettings
from aigw_operator.runtime.operator import LeadershipLost
from aigw_testbed.simulators.together import TogetherSimulator
from tests.conftest import record_summary
from tests.operator.conftest import KubeEnv, OperatorRunner, make_settings
from tests.operator.test_dedicated_endpoint import spec as dedicated_spec

LEASE = "aigw-operator"
# Short, in the controller-runtime proportions (15 / 10 / 2 s), so that the tests are quick.
DURATION, RENEW, RETRY = 3.0, 2.0, 0.5
_takeovers: dict[str, float] = {}


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Replica:
    def __init__(self, env: KubeEnv, together: TogetherSimulator, identity: str) -> None:
        self.identity = identity
        self.port = _port()
        election = LeaderElectionSettings(
            enabled=True,
            lease_name=LEASE,
            lease_namespace=env.kube.namespace,
            identity=identity,
            lease_duration=DURATION,
            renew_deadline=RENEW,
            retry_period=RETRY,
        )
        settings = make_settings(env, "http://127.0.0.1:9", together_url=together.url, leader_election=election)
        self.runner = OperatorRunner(settings, liveness_endpoint=f"http://127.0.0.1:{self.port}/healthz")

    async def health(self, path: str) -> httpx.Response:
        async with httpx.AsyncClient(timeout=2) as http:
            return await http.get(f"http://127.0.0.1:{self.port}{path}")

    async def wait_following(self) -> None:
        deadline = time.monotonic() + 10
        while True:
            try:
                response = await self.health("/readyz")
                if response.status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"{self.identity} never became ready"
            await asyncio.sleep(0.05)


async def _holder(env: KubeEnv) -> str | None:
    response = await env.kube.http.get(f"/apis/coordination.k8s.io/v1/namespaces/{env.kube.namespace}/leases/{LEASE}")
    if response.status_code == 404:
        return None
    return str((response.json().get("spec") or {}).get("holderIdentity") or "")


async def _wait_holder(env: KubeEnv, identity: str, timeout: float) -> float:
    started = time.monotonic()
    while await _holder(env) != identity:
        assert time.monotonic() - started < timeout, f"{identity} did not take the Lease within {timeout}s"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


@pytest.fixture
async def replicas(kube_env: KubeEnv, together: TogetherSimulator, credentials: str) -> Any:
    made: list[Replica] = []

    def make(identity: str) -> Replica:
        replica = Replica(kube_env, together, identity)
        made.append(replica)
        return replica

    yield make
    for replica in made:
        await replica.runner.stop()


async def test_only_the_leader_runs_and_a_clean_stop_hands_over_within_5s(
    kube_env: KubeEnv, together: TogetherSimulator, replicas: Any
) -> None:
    assert kube_env.emulator is not None
    first, second = replicas("first"), replicas("second")
    await first.runner.start()
    assert await _holder(kube_env) == "first"
    await asyncio.sleep(1.0)  # the leader's watches open after kopf reports ready
    watches_of_one = kube_env.emulator.open_watches
    assert watches_of_one > 0
    await second.runner.start(wait_ready=False)
    await second.wait_following()
    await asyncio.sleep(1.0)
    # The standby runs no kopf: no watch of its own, no write; it is live, ready and not leading.
    assert kube_env.emulator.open_watches == watches_of_one
    before = kube_env.emulator.counters()
    window = 2.0
    await asyncio.sleep(window)
    after = kube_env.emulator.counters()
    written = {k: after[k] - before.get(k, 0) for k in after if k[0] in ("create", "update", "patch", "delete")}
    written = {k: v for k, v in written.items() if v}
    renewals = written.pop(("update", "leases", None), 0)
    assert written == {}, f"writes other than the leader's Lease renewals: {written}"
    # One renewal per retry period, by the leader alone (a standby only reads a Lease it sees held).
    assert 1 <= renewals <= window / RETRY + 1, renewals
    _takeovers["renewals per second"] = renewals / window
    assert (await second.health("/readyz")).json() == {"leading": False, "ready": True}
    assert (await second.health("/healthz")).status_code == 200
    assert (await first.health("/readyz")).json() == {"leading": True, "ready": True}

    await kube_env.kube.create("DedicatedEndpoint", "dedicatedendpoints", "before", dedicated_spec())
    await kube_env.kube.wait_condition("dedicatedendpoints", "before", "Ready", "True")
    # A rolling upgrade: the old leader stops (SIGTERM's path: kopf stops, the Lease is released).
    stopping = asyncio.create_task(first.runner.stop())
    taken = await _wait_holder(kube_env, "second", timeout=5.0)
    await stopping
    _takeovers["clean stop"] = taken
    # A resource created during the handover converges under the new leader.
    await kube_env.kube.create("DedicatedEndpoint", "dedicatedendpoints", "during", dedicated_spec())
    await kube_env.kube.wait_condition("dedicatedendpoints", "during", "Ready", "True", timeout=15)
    posts = [r for r in together.requests if r.method == "POST" and r.route == "/v1/endpoints"]
    assert len(posts) == 2 and len(together.endpoints) == 2, "one endpoint per resource, each POSTed once"
    assert (await second.health("/readyz")).json()["leading"] is True


async def test_a_crashed_leader_is_replaced_within_the_lease_duration_and_a_retry(
    kube_env: KubeEnv, together: TogetherSimulator, replicas: Any
) -> None:
    first, second = replicas("first"), replicas("second")
    await first.runner.start()
    await second.runner.start(wait_ready=False)
    await second.wait_following()
    await first.runner.kill()  # its loop stops mid-flight: no release, the Lease must expire
    taken = await _wait_holder(kube_env, "second", timeout=DURATION + RETRY * 1.2 + 2.0)
    _takeovers["crash"] = taken
    assert taken <= DURATION + RETRY * 1.2 + 1.0, taken
    await kube_env.kube.create("DedicatedEndpoint", "dedicatedendpoints", "after", dedicated_spec())
    await kube_env.kube.wait_condition("dedicatedendpoints", "after", "Ready", "True", timeout=15)


async def test_a_leader_that_cannot_renew_stops_writing_before_the_lease_expires(
    kube_env: KubeEnv, together: TogetherSimulator, replicas: Any
) -> None:
    assert kube_env.emulator is not None
    leader = replicas("leader")
    await leader.runner.start()
    lease = f"/apis/coordination.k8s.io/v1/namespaces/{kube_env.kube.namespace}/leases/{LEASE}"
    kube_env.emulator["put", lease] << 503  # the API server refuses its renewals from now on
    refused_at = time.monotonic()
    while leader.runner.running:
        assert time.monotonic() - refused_at < DURATION, "still leading when the Lease could expire"
        await asyncio.sleep(0.02)
    stopped_after = time.monotonic() - refused_at
    assert isinstance(leader.runner.error, LeadershipLost), leader.runner.error
    leader.runner.error = None  # seen: the stop must not raise it again
    # It stopped within the renew deadline (plus one period), before anyone could take over.
    assert stopped_after < RENEW + 2 * RETRY * 1.2 + 0.5, stopped_after
    writes = kube_env.emulator.writes()
    await kube_env.kube.create("DedicatedEndpoint", "dedicatedendpoints", "orphan", dedicated_spec())
    await asyncio.sleep(1.0)
    assert kube_env.emulator.writes() == writes + 1, "nothing but the test's own create was written"
    assert together.requests == [] or all(r.method == "GET" for r in together.requests)
    record_summary(
        "leader election",
        f"takeover after a clean stop {_takeovers.get('clean stop', float('nan')):.2f}s (bound 5s), "
        f"after a crash {_takeovers.get('crash', float('nan')):.2f}s (bound {DURATION + RETRY * 1.2:.1f}s); "
        f"a leader that cannot renew stopped after {stopped_after:.2f}s (renew deadline {RENEW:.0f}s); "
        f"two replicas idle: {_takeovers.get('renewals per second', float('nan')):.1f} Lease renewals/s, "
        "0 other writes",
    )


async def test_a_release_while_a_renewal_is_in_flight_still_frees_the_lease(kube_env: KubeEnv) -> None:
    """SIGTERM can arrive while a renewal is on the wire: the release must not be sent on the
    resourceVersion from before it (refused with 409, the Lease left to expire, so the next
    leader waits out the lease duration instead of taking it at once)."""
    from aigw_operator.kube.client import Connection, KubeClient
    from aigw_operator.runtime.leader import LeaderElector

    client = KubeClient(Connection(server=kube_env.url))
    renewing, proceed = asyncio.Event(), asyncio.Event()

    class SlowRenewals:
        """The real API, with the answer to a renewal of the held Lease held back until told."""

        async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
            return await client.get_lease(namespace, name)

        async def create_lease(self, namespace: str, name: str, spec: Any) -> dict[str, Any] | None:
            return await client.create_lease(namespace, name, spec)

        async def replace_lease(self, namespace: str, name: str, spec: Any, version: str) -> dict[str, Any] | None:
            written = await client.replace_lease(namespace, name, spec, version)
            if spec.get("holderIdentity") == "leader" and elector.leading and not proceed.is_set():
                # Written, its answer not back yet: this process still knows the old version.
                renewing.set()
                await proceed.wait()
            return written

    settings = LeaderElectionSettings(
        enabled=True,
        lease_name=LEASE,
        lease_namespace=kube_env.kube.namespace,
        identity="leader",
        lease_duration=DURATION,
        renew_deadline=RENEW,
        retry_period=0.05,
    )
    elector = LeaderElector(SlowRenewals(), settings)
    try:
        assert await elector.acquire(lambda: False)
        keeping = asyncio.create_task(elector.keep(lambda: None))
        await asyncio.wait_for(renewing.wait(), 5)
        releasing = asyncio.create_task(elector.release())
        await asyncio.sleep(0.1)  # the release is asked for while the renewal is still out
        proceed.set()
        await asyncio.wait_for(releasing, 5)
        await asyncio.wait_for(keeping, 5)
        assert await _holder(kube_env) == "", "released, not left to expire"
    finally:
        await client.aclose()
