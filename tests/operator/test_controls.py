"""The management controls every kind shares, written once in the loop: a pause
(``aigw.dev/paused``) that stops every upstream call and every write but saying so, deletion
included, and the slow retry of a spec the upstream refused (``terminal_retry_interval``, with
backoff), asked again at once on a new ``aigw.dev/reconcile-requested-at``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from aigw_testbed.kubectl import condition
from aigw_testbed.simulators.base import SimulatorServer
from tests.operator.conftest import (
    KubeEnv,
    OperatorRunner,
    make_settings,
    release_resources,
    scan_for_canaries,
)
from tests.operator.test_economy import KINDS, Kind

PAUSED = "aigw.dev/paused"
REQUESTED = "aigw.dev/reconcile-requested-at"
FINALIZER = "aigw.dev/finalizer"


async def _settled() -> None:
    """Anything the operator still had in flight has landed."""
    await asyncio.sleep(0.5)


def _emulator(env: KubeEnv) -> Any:
    if env.emulator is None:
        pytest.fail("counts API-server writes: needs the emulator's counters")
    return env.emulator


async def _annotate(env: KubeEnv, kind: Kind, name: str, annotations: dict[str, str | None]) -> None:
    response = await env.kube.patch_meta(kind.plural, name, {"annotations": annotations})
    assert response.status_code == 200, response.text


def _events(events: list[dict[str, Any]], reason: str) -> list[dict[str, Any]]:
    return [e for e in events if e.get("reason") == reason]


@contextlib.asynccontextmanager
async def _operator(
    env: KubeEnv, simulators: dict[str, SimulatorServer], *, release: bool = True, **overrides: Any
) -> AsyncIterator[None]:
    """An operator with these settings; stopped at the end, after releasing the resources (unless
    ``release`` is False: another process takes them over, as after a restart)."""
    sims = {name: sim.url for name, sim in simulators.items()}
    settings = make_settings(
        env,
        sims["baseten"],
        sims["ngrok"],
        sims["registry"],
        sims["together"],
        **overrides,
    )
    runner = OperatorRunner(settings)
    await runner.start()
    try:
        yield
    finally:
        try:
            if runner.running and release:
                await scan_for_canaries(env)
                await release_resources(env.kube)
        finally:
            await runner.stop()


# ---------------------------------------------------------------------------- pause


@pytest.mark.parametrize("kind", KINDS, ids=[k.kind for k in KINDS])
async def test_a_paused_resource_is_not_created_until_the_pause_is_lifted(
    kind: Kind, kube_env: KubeEnv, simulators: dict[str, SimulatorServer], operator: OperatorRunner, credentials: str
) -> None:
    emulator = _emulator(kube_env)
    sim = simulators[kind.sim]
    sim.reset_counts()
    emulator.reset_counters()
    response = await kube_env.kube.create(kind.kind, kind.plural, "frozen", kind.spec(0), annotations={PAUSED: "true"})
    assert response.status_code == 201, response.text
    await kube_env.kube.wait_condition(kind.plural, "frozen", "Synced", "False", reason="ReconcilePaused")
    # Woken again (a trigger that is not the pause): still nothing.
    await _annotate(kube_env, kind, "frozen", {"aigw.dev/resync-seconds": "45"})
    await _settled()
    assert sim.requests == [], "not one upstream call while paused"
    got = await kube_env.kube.get(kind.plural, "frozen")
    assert got is not None
    obj = got
    assert condition(obj, "Ready") is None, "Ready is left as it was (never set)"
    assert not obj["status"].get("id")
    assert emulator.writes(kind.plural, "status") == 1, emulator.counters()
    assert emulator.writes("events") == 1, emulator.counters()
    # The main resource: our create and our annotation, and kopf's finalizer; no mark of a create.
    assert emulator.writes(kind.plural, None) == 3, emulator.counters()
    assert len(_events(await kube_env.kube.events("frozen"), "ReconcilePaused")) == 1

    await _annotate(kube_env, kind, "frozen", {PAUSED: None})
    obj = await kube_env.kube.wait_condition(kind.plural, "frozen", "Ready", "True", timeout=10)
    assert condition(obj, "Synced")["reason"] == "ReconcileSuccess"  # type: ignore[index]
    assert obj["status"]["id"]
    assert [r for r in sim.requests if r.method == "POST"], "created once the pause is lifted"


@pytest.mark.parametrize("kind", KINDS, ids=[k.kind for k in KINDS])
async def test_a_pause_freezes_a_resource_and_its_removal_applies_what_changed_meanwhile(
    kind: Kind, kube_env: KubeEnv, simulators: dict[str, SimulatorServer], operator: OperatorRunner, credentials: str
) -> None:
    emulator = _emulator(kube_env)
    sim = simulators[kind.sim]
    await kube_env.kube.create(kind.kind, kind.plural, "frozen", kind.spec(0))
    await kube_env.kube.wait_condition(kind.plural, "frozen", "Ready", "True", timeout=20)
    await _settled()
    sim.reset_counts()
    emulator.reset_counters()

    await _annotate(kube_env, kind, "frozen", {PAUSED: "true"})
    obj = await kube_env.kube.wait_condition(kind.plural, "frozen", "Synced", "False", reason="ReconcilePaused")
    assert condition(obj, "Ready")["status"] == "True", "Ready is left as it was"  # type: ignore[index]
    # Woken again by a trigger: a paused resource resynced again writes nothing.
    await _annotate(kube_env, kind, "frozen", {"aigw.dev/resync-seconds": "45"})
    await _settled()
    assert sim.requests == [], "not one upstream call while paused"
    assert emulator.writes(kind.plural, "status") == 1, emulator.counters()
    assert emulator.writes("events") == 1, emulator.counters()
    assert emulator.writes(kind.plural, None) == 2, "our two annotations only"
    paused_events = _events(await kube_env.kube.events("frozen"), "ReconcilePaused")
    assert len(paused_events) == 1 and paused_events[0]["type"] == "Normal", paused_events

    # A spec change while paused is not acted on upstream.
    response = await kube_env.kube.patch_spec(kind.plural, "frozen", kind.change)
    assert response.status_code == 200, response.text
    await _settled()
    assert sim.requests == [], "a spec change while paused makes no upstream call"
    got = await kube_env.kube.get(kind.plural, "frozen")
    assert got is not None and condition(got, "Synced")["reason"] == "ReconcilePaused"  # type: ignore[index]
    assert len(_events(await kube_env.kube.events("frozen"), "ReconcilePaused")) == 1

    await _annotate(kube_env, kind, "frozen", {PAUSED: None})
    generation = got["metadata"]["generation"]

    def resumed(body: dict[str, Any] | None) -> bool:
        synced = condition(body, "Synced")
        return bool(
            synced
            and synced["status"] == "True"
            and (body or {}).get("status", {}).get("observedGeneration") == generation
        )

    await kube_env.kube.wait_for(kind.plural, "frozen", resumed, timeout=10)
    assert [r for r in sim.requests if r.method in ("PATCH", "PUT", "POST")], "the change is applied once resumed"


@pytest.mark.parametrize("kind", KINDS, ids=[k.kind for k in KINDS])
async def test_the_deletion_of_a_paused_resource_waits_for_the_pause_to_be_lifted(
    kind: Kind, kube_env: KubeEnv, simulators: dict[str, SimulatorServer], operator: OperatorRunner, credentials: str
) -> None:
    sim = simulators[kind.sim]
    await kube_env.kube.create(kind.kind, kind.plural, "frozen", kind.spec(0))
    await kube_env.kube.wait_condition(kind.plural, "frozen", "Ready", "True", timeout=20)
    await _annotate(kube_env, kind, "frozen", {PAUSED: "true"})
    await kube_env.kube.wait_condition(kind.plural, "frozen", "Synced", "False", reason="ReconcilePaused")
    await _settled()
    sim.reset_counts()

    await kube_env.kube.delete(kind.plural, "frozen")
    await kube_env.kube.wait_condition(kind.plural, "frozen", "Synced", "False", reason="DeletionPaused")
    # Several of the deletion's retries (backed off up to the test's 1 s cap).
    await asyncio.sleep(2.5)
    obj = await kube_env.kube.get(kind.plural, "frozen")
    assert obj is not None, "the finalizer stays while paused"
    assert FINALIZER in obj["metadata"]["finalizers"]
    assert sim.requests == [], "not one upstream call while paused, deletion included"
    deletion_paused = _events(await kube_env.kube.events("frozen"), "DeletionPaused")
    assert len(deletion_paused) == 1 and deletion_paused[0]["type"] == "Normal", deletion_paused

    await _annotate(kube_env, kind, "frozen", {PAUSED: None})
    await kube_env.kube.wait_gone(kind.plural, "frozen", timeout=15)
    deletes = [r for r in sim.requests if r.method == "DELETE"]
    assert len(deletes) == 1, [f"{r.method} {r.path}" for r in sim.requests]


# ---------------------------------------------------------------------------- refusals


def _refused(body: dict[str, Any] | None) -> bool:
    synced = condition(body, "Synced")
    return bool(synced and synced["status"] == "False" and synced["reason"] == "InvalidSpec")


@pytest.mark.parametrize("kind", KINDS, ids=[k.kind for k in KINDS])
async def test_a_refused_spec_is_asked_again_slowly_with_backoff(
    kind: Kind, kube_env: KubeEnv, simulators: dict[str, SimulatorServer], credentials: str
) -> None:
    """Refused three times (an upstream 400: say, a model not deployed yet), then accepted: one
    call per attempt, each retry later than the one before (the backoff: uniform in [d/2, d], d =
    the interval, then twice, then four times it)."""
    interval = 0.5
    slack = 1.0  # the loop's own latency on a busy machine; the lower bounds carry the point
    sim = simulators[kind.sim]
    async with _operator(kube_env, simulators, terminal_retry_interval=interval):
        sim.reset_counts()
        sim.faults.fail_next(3, status=400)
        await kube_env.kube.create(kind.kind, kind.plural, "refused", kind.spec(0))
        await kube_env.kube.wait_for(kind.plural, "refused", _refused, timeout=10)
        assert len(sim.requests) == 1, "one call per attempt"
        obj = await kube_env.kube.wait_condition(kind.plural, "refused", "Ready", "True", timeout=15)
        assert obj["status"]["id"]
        calls = [(r.method, r.path, r.status) for r in sim.requests]
        assert [r.status for r in sim.requests[:3]] == [400, 400, 400], calls
        assert sim.requests[3].status is not None and sim.requests[3].status < 400, calls
        gaps = [b.time - a.time for a, b in zip(sim.requests[:3], sim.requests[1:4], strict=True)]
        for i, gap in enumerate(gaps):
            delay = interval * 2**i
            assert delay / 2 - 0.05 <= gap <= delay + slack, (i, gaps)
        refusals = _events(await kube_env.kube.events("refused"), "InvalidSpec")
        assert refusals and all(e["type"] == "Warning" for e in refusals)


@pytest.mark.parametrize("kind", KINDS, ids=[k.kind for k in KINDS])
async def test_a_refused_spec_is_asked_again_at_once_on_a_reconcile_request(
    kind: Kind, kube_env: KubeEnv, simulators: dict[str, SimulatorServer], credentials: str
) -> None:
    emulator = _emulator(kube_env)
    sim = simulators[kind.sim]
    async with _operator(kube_env, simulators, terminal_retry_interval=3600.0):
        sim.reset_counts()
        sim.faults.fail_next(1, status=400)
        await kube_env.kube.create(kind.kind, kind.plural, "refused", kind.spec(0))
        await kube_env.kube.wait_for(kind.plural, "refused", _refused, timeout=10)
        await _settled()
        assert len(sim.requests) == 1

        # Refused again on request: exactly one more call, and the request is recorded.
        sim.faults.fail_next(1, status=400)
        await _annotate(kube_env, kind, "refused", {REQUESTED: "2026-12-01T10:00:00Z"})
        await kube_env.kube.wait_for(
            kind.plural,
            "refused",
            lambda b: (b or {}).get("status", {}).get("lastHandledReconcileAt") == "2026-12-01T10:00:00Z",
            timeout=10,
        )
        await _settled()
        assert [r.status for r in sim.requests] == [400, 400]
        # Anything else that wakes it (not a new request, not a new generation) asks nothing.
        emulator.reset_counters()
        await _annotate(kube_env, kind, "refused", {"aigw.dev/resync-seconds": "45"})
        await _settled()
        assert [r.status for r in sim.requests] == [400, 400], "one call per request: no storm"
        assert emulator.writes(kind.plural, "status") == 0

        # A new request once the cause is gone: accepted.
        await _annotate(kube_env, kind, "refused", {REQUESTED: "2026-12-01T11:00:00Z"})
        obj = await kube_env.kube.wait_condition(kind.plural, "refused", "Ready", "True", timeout=15)
        assert obj["status"]["lastHandledReconcileAt"] == "2026-12-01T11:00:00Z"


@pytest.mark.parametrize("kind", KINDS, ids=[k.kind for k in KINDS])
async def test_after_a_restart_a_refusal_waits_and_a_request_made_meanwhile_is_honoured_once(
    kind: Kind, kube_env: KubeEnv, simulators: dict[str, SimulatorServer], credentials: str
) -> None:
    """What decides is in the status (the refusal, lastHandledReconcileAt), not in memory: a new
    process neither asks every refused spec again at once nor loses a request."""
    sim = simulators[kind.sim]
    sim.reset_counts()
    sim.faults.fail_next(1, status=400)
    async with _operator(kube_env, simulators, release=False, terminal_retry_interval=3600.0):
        await kube_env.kube.create(kind.kind, kind.plural, "refused", kind.spec(0))
        await kube_env.kube.wait_for(kind.plural, "refused", _refused, timeout=10)
        await _settled()
    async with _operator(kube_env, simulators, release=False, terminal_retry_interval=3600.0):
        await asyncio.sleep(1.5)
        assert [r.status for r in sim.requests] == [400], "a restart does not ask a refused spec again"
        sim.faults.fail_next(1, status=400)
        await _annotate(kube_env, kind, "refused", {REQUESTED: "once"})
        await kube_env.kube.wait_for(
            kind.plural, "refused", lambda b: (b or {}).get("status", {}).get("lastHandledReconcileAt") == "once"
        )
        await _settled()
        assert [r.status for r in sim.requests] == [400, 400]
    # Stopped with the request handled: the next process does not act on it again.
    async with _operator(kube_env, simulators, terminal_retry_interval=3600.0):
        await asyncio.sleep(1.5)
        assert [r.status for r in sim.requests] == [400, 400], "a handled request is not repeated"
