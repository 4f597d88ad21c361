"""Events are aggregated as client-go's recorder does: a repeat (same object, type, reason and
message) counts on the Event already there instead of adding one, measured by the emulator's
write counters: one create per distinct Event, one patch per repeat."""

from __future__ import annotations

import datetime

import pytest

from aigw_operator.kube.client import Connection, KubeClient, ObjectRef
from aigw_testbed.emulator.server import KubeEmulator
from aigw_testbed.simulators.ngrok import NgrokSimulator
from tests.operator.conftest import KubeEnv, OperatorRunner
from tests.operator.test_provider import KIND, PLURAL, create_ready, spec, wait_generation


def _emulator(env: KubeEnv) -> KubeEmulator:
    if env.emulator is None:
        pytest.fail("counts the emulator's writes")
    return env.emulator


def _writes(emulator: KubeEmulator, verb: str) -> int:
    return emulator.requests_count(frozenset({verb}), "events")


def _time(stamp: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))


async def test_a_repeated_event_counts_on_the_first(kube_env: KubeEnv) -> None:
    emulator = _emulator(kube_env)
    assert kube_env.url is not None
    namespace = kube_env.kube.namespace
    ref = ObjectRef(KIND, PLURAL, namespace, "vllm", uid="uid-1")
    client = KubeClient(Connection(server=kube_env.url))
    try:
        emulator.reset_counters()
        for _ in range(3):
            await client.post_event(ref, "Normal", "Updated", "updated name")
        events = await kube_env.kube.events("vllm")
        assert [(e["reason"], e["count"]) for e in events] == [("Updated", 3)]
        assert (_writes(emulator, "create"), _writes(emulator, "patch")) == (1, 2)
        [event] = events
        assert _time(event["lastTimestamp"]) >= _time(event["firstTimestamp"])
        assert event["involvedObject"]["uid"] == "uid-1"

        # Another message, type or object (a namesake created later has another uid) is another Event.
        await client.post_event(ref, "Normal", "Updated", "updated models")
        await client.post_event(ref, "Warning", "Updated", "updated name")
        await client.post_event(
            ObjectRef(KIND, PLURAL, namespace, "vllm", uid="uid-2"), "Normal", "Updated", "updated name"
        )
        assert (_writes(emulator, "create"), _writes(emulator, "patch")) == (4, 2)
        counts = sorted(
            (e["type"], e["message"], e["involvedObject"]["uid"], e["count"])
            for e in await kube_env.kube.events("vllm")
        )
        assert counts == [
            ("Normal", "updated models", "uid-1", 1),
            ("Normal", "updated name", "uid-1", 3),
            ("Normal", "updated name", "uid-2", 1),
            ("Warning", "updated name", "uid-1", 1),
        ]

        # An Event that expired (deleted by the API server) is posted anew, not patched into nothing.
        response = await kube_env.kube.http.delete(f"/api/v1/namespaces/{namespace}/events/{event['metadata']['name']}")
        assert response.status_code == 200, response.text
        await client.post_event(ref, "Normal", "Updated", "updated name")
        assert (_writes(emulator, "create"), _writes(emulator, "patch")) == (5, 3)
        [again] = [
            e
            for e in await kube_env.kube.events("vllm")
            if e["message"] == "updated name" and e["type"] == "Normal" and e["involvedObject"]["uid"] == "uid-1"
        ]
        assert again["count"] == 1 and again["metadata"]["name"] != event["metadata"]["name"]
    finally:
        await client.aclose()


async def test_the_operator_counts_a_repeated_normal_event(
    kube_env: KubeEnv, ngrok: NgrokSimulator, operator: OperatorRunner, credentials: str
) -> None:
    """The engine posts "Updated: updated name" twice (a rename, then back): one Event, count 2."""
    emulator = _emulator(kube_env)
    await create_ready(kube_env)
    created, patched = _writes(emulator, "create"), _writes(emulator, "patch")
    for generation, name in ((2, "vLLM 2"), (3, spec()["name"])):
        response = await kube_env.kube.patch_spec(PLURAL, "vllm", {"name": name})
        assert response.status_code == 200, response.text
        await wait_generation(kube_env, generation)
    updated = [e for e in await kube_env.kube.events("vllm") if e["reason"] == "Updated"]
    assert [(e["message"], e["count"]) for e in updated] == [("updated name", 2)]
    # The first Updated is a create, the second a patch of it.
    assert (_writes(emulator, "create"), _writes(emulator, "patch")) == (created + 1, patched + 1)
