"""Leader election between real ``aigw-operator run`` processes, stopped by real signals.

tests/operator/test_leader_election.py runs the replicas in-process and "kills" one by stopping its event
loop. Here each replica is ``python -m aigw_operator.cli run`` in its own process (the operator as
a pod runs it), with election on and an identity of its own, serving /healthz and /readyz on a
port of its own, against the test's Kubernetes API (emulator or cluster) and the Together
simulator. SIGTERM goes through the process's own signal handling (kopf stops, the Lease is
released, exit 0); SIGKILL leaves a Lease that nobody releases, which must expire.

The issue's bounds: after a SIGTERM the standby holds the Lease within 5 s of the signal; after a
SIGKILL within the lease duration plus one retry period (jittered by client-go's factor 1.2), with
a stated 1 s margin for a loaded machine. Each takeover is measured from the signal to the first
poll (every 20 ms) that reads the new holder in the Lease, so it errs long, never short.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from aigw_testbed.emulator.server import ResourceType
from aigw_testbed.kubectl import condition
from aigw_testbed.simulators.together import TogetherSimulator
from tests.conftest import record_summary
from tests.operator.conftest import KubeEnv
from tests.operator.test_dedicated_endpoint import spec as dedicated_spec
from tests.operator.test_process_kill import STOP_SECONDS, OperatorProcess, Operators, operators

__all__ = ["operators"]  # the fixture, re-exported so that pytest finds it here

LEASE = "aigw-operator"
# As tests/operator/test_leader_election.py: controller-runtime's proportions (15 / 10 / 2 s), scaled down.
DURATION, RENEW, RETRY = 3.0, 2.0, 0.5
#: The issue's bound after a SIGTERM: from the signal to the standby holding the Lease.
CLEAN_TAKEOVER = 5.0
#: After a SIGKILL: the Lease expires (DURATION after the standby last saw it change), the
#: standby notices at its next attempt (a retry period, jittered up to 1.2x), plus 1 s of margin.
CRASH_TAKEOVER = DURATION + RETRY * 1.2 + 1.0
#: No earlier than this after a SIGKILL: the last renewal was at most one jittered retry period
#: before the kill, and the Lease is valid for DURATION after it. Earlier would be two leaders.
CRASH_EARLIEST = DURATION - RETRY * 1.2
#: From spawn to leading or following: the interpreter's imports, kopf's start, on a loaded machine.
START_SECONDS = 30.0
#: From a create to Ready under a running leader (the simulator provisions in well under this).
READY_SECONDS = 30.0

_measured: dict[str, str] = {}


def _tail(process: OperatorProcess) -> str:
    """The end of the process's log (also once it has exited, when ``output()`` cannot flush)."""
    return process.log.read_text(errors="replace")[-4000:]


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Candidate:
    """One operator process that takes part in the election, and its probes."""

    def __init__(self, operators: Operators, kube_env: KubeEnv, identity: str) -> None:
        self.identity = identity
        self.port = _port()
        env = {
            "AIGW_LEADER_ELECTION__ENABLED": "true",
            "AIGW_LEADER_ELECTION__LEASE_NAME": LEASE,
            "AIGW_LEADER_ELECTION__LEASE_NAMESPACE": kube_env.kube.namespace,
            "AIGW_LEADER_ELECTION__IDENTITY": identity,
            "AIGW_LEADER_ELECTION__LEASE_DURATION": str(DURATION),
            "AIGW_LEADER_ELECTION__RENEW_DEADLINE": str(RENEW),
            "AIGW_LEADER_ELECTION__RETRY_PERIOD": str(RETRY),
        }
        self.process: OperatorProcess = operators.start(env, ["--liveness", f"http://127.0.0.1:{self.port}/healthz"])

    async def probe(self, path: str) -> httpx.Response:
        async with httpx.AsyncClient(timeout=2) as http:
            return await http.get(f"http://127.0.0.1:{self.port}{path}")

    async def wait_ready(self, *, leading: bool, timeout: float = START_SECONDS) -> None:
        """Until /readyz answers 200 with this ``leading``."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            self.process.check_alive()
            try:
                response = await self.probe("/readyz")
                last = (response.status_code, response.text)
                if response.status_code == 200 and response.json().get("leading") is leading:
                    return
            except httpx.TransportError as exc:
                last = repr(exc)
            assert time.monotonic() < deadline, (
                f"{self.identity} not ready with leading={leading} after {timeout}s: last /readyz {last}\n"
                f"{self.process.output()}"
            )
            await asyncio.sleep(0.05)

    def send(self, sig: signal.Signals) -> float:
        """Send ``sig`` to the process (alive until then); when it was sent."""
        self.process.check_alive()
        self.process.proc.send_signal(sig)
        return time.monotonic()

    async def exit_code(self) -> int:
        return await self.process.wait(STOP_SECONDS)


class LeaseLog:
    """Every write of the Lease as the emulator stored it (holder, when): evidence of a release.
    Against a real cluster there is no hook; the log stays empty and only the polls are used."""

    def __init__(self, kube_env: KubeEnv) -> None:
        self.writes: list[tuple[float, str]] = []
        emulator = kube_env.emulator
        if emulator is None:
            return
        namespace = kube_env.kube.namespace
        previous = emulator.on_write

        def hook(rtype: ResourceType, event_type: str, obj: dict[str, Any]) -> None:
            meta = obj.get("metadata") or {}
            if rtype.kind == "Lease" and meta.get("namespace") == namespace and meta.get("name") == LEASE:
                self.writes.append((time.monotonic(), str((obj.get("spec") or {}).get("holderIdentity") or "")))
            if previous is not None:
                previous(rtype, event_type, obj)

        emulator.on_write = hook

    @property
    def available(self) -> bool:
        return bool(self.writes)

    def since(self, t: float) -> list[str]:
        return [holder for at, holder in self.writes if at >= t]

    def taken_at(self, identity: str, since: float, polled: float) -> float:
        """When ``identity``'s take of the Lease was stored: exact with the emulator's hook; else
        the poll that saw it, less 0.1 s (a poll may come that much late on a loaded machine)."""
        return next((at for at, holder in self.writes if at >= since and holder == identity), polled - 0.1)

    def timeline(self, t: float) -> str:
        """The writes around ``t``, relative to it: for a failure's message."""
        return ", ".join(f"{at - t:+.2f}s {holder or '(released)'}" for at, holder in self.writes if at >= t - 1.5)


async def _holder(kube_env: KubeEnv) -> str | None:
    path = f"/apis/coordination.k8s.io/v1/namespaces/{kube_env.kube.namespace}/leases/{LEASE}"
    response = await kube_env.kube.http.get(path)
    if response.status_code == 404:
        return None
    response.raise_for_status()
    return str((response.json().get("spec") or {}).get("holderIdentity") or "")


async def _wait_holder(kube_env: KubeEnv, wanted: set[str], since: float, timeout: float) -> tuple[str, float]:
    """Poll until one of ``wanted`` holds the Lease; (holder, seconds since ``since``)."""
    while True:
        holder = await _holder(kube_env)
        if holder in wanted:
            return holder, time.monotonic() - since
        assert time.monotonic() - since < timeout, f"none of {sorted(wanted)} took the Lease in {timeout}s: {holder!r}"
        await asyncio.sleep(0.02)


async def _ready(kube_env: KubeEnv, name: str, candidates: list[Candidate]) -> dict[str, Any]:
    try:
        return await kube_env.kube.wait_condition("dedicatedendpoints", name, "Ready", "True", timeout=READY_SECONDS)
    except AssertionError:
        obj = await kube_env.kube.get("dedicatedendpoints", name)
        alive = {c.identity: c.process.alive for c in candidates}
        raise AssertionError(
            f"{name} not Ready: {condition(obj, 'Ready')}; Lease holder {await _holder(kube_env)!r}; alive {alive}"
        ) from None


def _posts(together: TogetherSimulator, kube_env: KubeEnv) -> dict[str, list[float]]:
    """The times of the endpoint creates, by resource (the display name is namespace/name)."""
    found: dict[str, list[float]] = {}
    for r in together.requests:
        if r.method == "POST" and r.route == "/v1/endpoints":
            display = str((r.body or {}).get("display_name", "")) if isinstance(r.body, dict) else ""
            found.setdefault(display.removeprefix(f"{kube_env.kube.namespace}/"), []).append(r.time)
    return found


def _requests(together: TogetherSimulator) -> str:
    start = together.requests[0].time if together.requests else 0.0
    return ", ".join(f"+{r.time - start:.2f}s {r.method} {r.path} -> {r.status}" for r in together.requests)


async def _create(kube_env: KubeEnv, name: str) -> float:
    response = await kube_env.kube.create("DedicatedEndpoint", "dedicatedendpoints", name, dedicated_spec())
    assert response.status_code == 201, response.text
    return time.monotonic()


async def _leader_and_standby(
    operators: Operators, kube_env: KubeEnv, first: str, second: str
) -> tuple[Candidate, Candidate]:
    leader = Candidate(operators, kube_env, first)
    await _wait_holder(kube_env, {first}, time.monotonic(), START_SECONDS)
    await leader.wait_ready(leading=True)
    standby = Candidate(operators, kube_env, second)
    await standby.wait_ready(leading=False)
    # A standby is live and ready, and does not lead: the Lease stays the first's.
    assert (await standby.probe("/healthz")).status_code == 200
    assert (await standby.probe("/readyz")).json() == {"leading": False, "ready": True}
    assert (await leader.probe("/readyz")).json() == {"leading": True, "ready": True}
    assert await _holder(kube_env) == first
    return leader, standby


def _summary() -> None:
    record_summary("leader election (processes)", "; ".join(f"{k} {v}" for k, v in _measured.items()))


@pytest.fixture
async def lease_log(kube_env: KubeEnv) -> AsyncIterator[LeaseLog]:
    yield LeaseLog(kube_env)


async def test_sigterm_to_the_leader_process_hands_over_within_5s(
    kube_env: KubeEnv, together: TogetherSimulator, credentials: str, operators: Operators, lease_log: LeaseLog
) -> None:
    first, second = await _leader_and_standby(operators, kube_env, "first", "second")
    await _create(kube_env, "before")
    await _ready(kube_env, "before", [first, second])
    assert list(_posts(together, kube_env)) == ["before"]

    signalled = first.send(signal.SIGTERM)
    # Right after the signal, while the old leader stops and before the standby has taken over.
    await _create(kube_env, "during")
    holder, taken = await _wait_holder(kube_env, {"second"}, signalled, timeout=CLEAN_TAKEOVER * 3)
    code = await first.exit_code()
    exit_after = time.monotonic() - signalled
    _measured["SIGTERM takeover"] = (
        f"{taken:.2f}s (bound {CLEAN_TAKEOVER:.0f}s; old leader exited 0 in {exit_after:.2f}s)"
    )
    _summary()
    assert code == 0, f"the leader's SIGTERM exit code is {code}, not a clean stop:\n{_tail(first.process)}"
    if kube_env.emulator is not None:
        # The old leader released the Lease (an empty holder) before the standby took it: the
        # standby did not have to wait for it to expire.
        after = lease_log.since(signalled)
        assert "" in after and "second" in after and after.index("") < after.index("second"), (
            f"Lease writes after SIGTERM: {lease_log.timeline(signalled)}"
        )
        assert set(after) <= {"first", "", "second"}, after

    obj = await _ready(kube_env, "during", [first, second])
    took_at = lease_log.taken_at("second", signalled, signalled + taken)
    posts = _posts(together, kube_env)
    assert {k: len(v) for k, v in posts.items()} == {"before": 1, "during": 1}, _requests(together)
    assert len(together.endpoints) == 2, "one upstream endpoint per resource"
    assert obj["status"]["id"] in together.endpoints
    # Converged under the new leader: created by it, after it took the Lease; the old one is gone.
    [during_post] = posts["during"]
    assert during_post >= took_at, f"'during' POSTed {took_at - during_post:.2f}s before the standby took over"
    assert not first.process.alive
    assert (await second.probe("/readyz")).json() == {"leading": True, "ready": True}
    assert await _holder(kube_env) == "second"
    assert operators.leaked_keys() == []
    print(
        f"SIGTERM: Lease held by {holder} {taken:.2f}s after the signal; old leader exited 0 after {exit_after:.2f}s; "
        f"'during' POSTed {during_post - signalled:+.2f}s after the signal; "
        f"Lease writes {lease_log.timeline(signalled)}"
    )
    # Last, so that a slow handover is reported with everything else checked.
    assert taken <= CLEAN_TAKEOVER, (
        f"the standby took the Lease {taken:.2f}s after the SIGTERM (bound {CLEAN_TAKEOVER}s); the old leader "
        f"exited after {exit_after:.2f}s; Lease writes: {lease_log.timeline(signalled)}\n{_tail(first.process)}"
    )


async def test_sigkill_of_the_leader_process_hands_over_after_the_lease_expires(
    kube_env: KubeEnv, together: TogetherSimulator, credentials: str, operators: Operators, lease_log: LeaseLog
) -> None:
    first, second = await _leader_and_standby(operators, kube_env, "first", "second")
    await _create(kube_env, "before")
    await _ready(kube_env, "before", [first, second])

    killed = first.send(signal.SIGKILL)
    await _create(kube_env, "after")  # while nobody leads
    holder, taken = await _wait_holder(kube_env, {"second"}, killed, timeout=CRASH_TAKEOVER * 2)
    _measured["SIGKILL takeover"] = (
        f"{taken:.2f}s (bound {CRASH_TAKEOVER:.1f}s = lease {DURATION:.0f}s + retry {RETRY}s x 1.2 + 1s margin, "
        f"no earlier than {CRASH_EARLIEST:.1f}s)"
    )
    _summary()
    assert await first.exit_code() == -signal.SIGKILL
    if kube_env.emulator is not None:
        # Nobody released it: at most the dead leader's last renewal, then the standby's take.
        after = lease_log.since(killed)
        assert "" not in after and "second" in after, f"Lease writes after SIGKILL: {lease_log.timeline(killed)}"

    obj = await _ready(kube_env, "after", [first, second])
    posts = _posts(together, kube_env)
    assert {k: len(v) for k, v in posts.items()} == {"before": 1, "after": 1}, _requests(together)
    [after_post] = posts["after"]
    took_at = lease_log.taken_at("second", killed, killed + taken)
    assert after_post >= took_at, f"'after' POSTed {took_at - after_post:.2f}s before the standby took over"
    assert len(together.endpoints) == 2 and obj["status"]["id"] in together.endpoints
    assert (await second.probe("/readyz")).json() == {"leading": True, "ready": True}
    assert operators.leaked_keys() == []
    print(
        f"SIGKILL: Lease held by {holder} {taken:.2f}s after the kill; 'after' POSTed {after_post - killed:.2f}s "
        f"after it; Lease writes {lease_log.timeline(killed)}"
    )
    # Last, so that a slow (or early) takeover is reported with everything else checked.
    assert taken <= CRASH_TAKEOVER, (
        f"the standby took the Lease {taken:.2f}s after the SIGKILL (bound {CRASH_TAKEOVER}s); "
        f"Lease writes: {lease_log.timeline(killed)}"
    )
    assert taken >= CRASH_EARLIEST, f"the Lease was taken {taken:.2f}s after the kill, before it could have expired"


async def test_rolling_upgrade_loses_nothing_and_the_new_process_leads(
    kube_env: KubeEnv, together: TogetherSimulator, credentials: str, operators: Operators, lease_log: LeaseLog
) -> None:
    """Two replicas of the old version; the new one surges in, then the old ones go one by one,
    the leader first (it is the oldest pod), each with SIGTERM, as a Deployment's rollout does."""
    old_a, old_b = await _leader_and_standby(operators, kube_env, "old-a", "old-b")
    candidates = [old_a, old_b]
    created = ["r1"]
    await _create(kube_env, "r1")
    await _ready(kube_env, "r1", candidates)

    new = Candidate(operators, kube_env, "new-c")
    candidates.append(new)
    await _create(kube_env, "r2")  # while the new process starts
    created.append("r2")
    await new.wait_ready(leading=False)
    assert await _holder(kube_env) == "old-a", "the new process must not take a Lease that is held"

    takeovers: list[tuple[str, float]] = []  # (who to whom, seconds after the SIGTERM)
    # The old leader goes: either remaining process may take over.
    signalled = old_a.send(signal.SIGTERM)
    await _create(kube_env, "r3")
    created.append("r3")
    holder, taken = await _wait_holder(kube_env, {"old-b", "new-c"}, signalled, timeout=CLEAN_TAKEOVER * 3)
    assert await old_a.exit_code() == 0, _tail(old_a.process)
    takeovers.append((f"old-a -> {holder}", taken))

    # The other old process goes: if it leads now, the new one takes over.
    signalled = old_b.send(signal.SIGTERM)
    await _create(kube_env, "r4")
    created.append("r4")
    _, taken2 = await _wait_holder(kube_env, {"new-c"}, signalled, timeout=CLEAN_TAKEOVER * 3)
    assert await old_b.exit_code() == 0, _tail(old_b.process)
    old_b_exit = time.monotonic() - signalled
    if holder == "old-b":
        takeovers.append(("old-b -> new-c", taken2))

    objs = {name: await _ready(kube_env, name, candidates) for name in created}
    posts = _posts(together, kube_env)
    assert {k: len(v) for k, v in posts.items()} == dict.fromkeys(created, 1), _requests(together)
    ids = {name: obj["status"]["id"] for name, obj in objs.items()}
    assert sorted(ids.values()) == sorted(together.endpoints), (ids, list(together.endpoints))
    assert (await new.probe("/readyz")).json() == {"leading": True, "ready": True}
    assert await _holder(kube_env) == "new-c"
    if kube_env.emulator is not None:
        # Never two holders in a row without a release between them: each change of holder went
        # through an empty Lease (a clean stop's release), none through an expiry.
        holders = [h for _, h in lease_log.writes]
        changes = [(a, b) for a, b in itertools.pairwise(holders) if a != b]
        assert all("" in change for change in changes), f"a holder replaced without a release: {changes}"
    assert operators.leaked_keys() == []
    handovers = ", ".join(f"{who} {seconds:.2f}s" for who, seconds in takeovers)
    handovers += f" (old-b {'led' if holder == 'old-b' else 'stood by'}, exited 0 in {old_b_exit:.2f}s)"
    _measured["rolling upgrade"] = f"{handovers}; {len(created)} resources Ready, 1 POST each"
    _summary()
    print(f"rolling upgrade: {handovers}; Ready: {sorted(objs)}; Lease holders {[h for _, h in lease_log.writes]}")
    slow = [(who, seconds) for who, seconds in takeovers if seconds > CLEAN_TAKEOVER]
    assert not slow, f"handovers slower than {CLEAN_TAKEOVER}s after the SIGTERM: {slow}"
