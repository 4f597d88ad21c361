"""DedicatedEndpoint end to end: the real operator, the Kubernetes API, the Together simulator."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from aigw_testbed.kubectl import condition
from aigw_testbed.simulators.together import TogetherSimulator
from tests.operator.conftest import KubeEnv, OperatorRunner, kill_while_held

PLURAL = "dedicatedendpoints"
KIND = "DedicatedEndpoint"
MODEL = "meta-llama/Llama-3-8b-chat-hf"
HARDWARE = "1x_nvidia_h100_80gb_sxm"


def spec(**extra: Any) -> dict[str, Any]:
    return {
        "model": MODEL,
        "hardware": HARDWARE,
        "autoscaling": {"minReplicas": 1, "maxReplicas": 2},
        "credentialsSecretRef": {"name": "together"},
        **extra,
    }


def only(sim: TogetherSimulator) -> str:
    """The id of the one endpoint upstream."""
    [endpoint_id] = sim.endpoints
    return endpoint_id


async def watch_reasons(env: KubeEnv, name: str, until: str, timeout: float = 15.0) -> list[str]:
    """Ready reasons seen while polling, until Ready has ``until`` as its reason."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        obj = await env.kube.get(PLURAL, name)
        ready = condition(obj, "Ready")
        if ready and (not seen or seen[-1] != ready["reason"]):
            seen.append(ready["reason"])
        if ready and ready["reason"] == until:
            return seen
        await asyncio.sleep(0.05)
    raise AssertionError(f"never reached {until}; saw {seen}")


async def test_create_goes_through_every_state_to_ready(
    kube_env: KubeEnv, together: TogetherSimulator, operator: OperatorRunner, credentials: str
) -> None:
    await kube_env.kube.create(KIND, PLURAL, "llama", spec())
    seen = await watch_reasons(kube_env, "llama", "Available")
    assert "Starting" in seen and seen[-1] == "Available"
    obj = await kube_env.kube.get(PLURAL, "llama")
    assert obj is not None
    status = obj["status"]
    assert status["state"] == "STARTED" and status["id"] == only(together)
    assert status["name"] and status["hardware"] == HARDWARE
    assert status["minReplicas"] == 1 and status["maxReplicas"] == 2
    assert condition(obj, "Progressing")["status"] == "False"  # type: ignore[index]
    assert together.count("POST") == 1


async def test_stop_and_start_from_the_spec(
    kube_env: KubeEnv, together: TogetherSimulator, operator: OperatorRunner, credentials: str
) -> None:
    await kube_env.kube.create(KIND, PLURAL, "llama", spec())
    await kube_env.kube.wait_condition(PLURAL, "llama", "Ready", "True")
    await kube_env.kube.patch_spec(PLURAL, "llama", {"state": "Stopped"})
    seen = await watch_reasons(kube_env, "llama", "Stopped")
    assert together.state(only(together)) == "STOPPED"
    assert "Stopping" in seen
    await kube_env.kube.patch_spec(PLURAL, "llama", {"state": "Started"})
    await kube_env.kube.wait_condition(PLURAL, "llama", "Ready", "True")
    assert together.state(only(together)) == "STARTED"
    assert together.count("POST") == 1


async def test_autoscaling_change_is_one_patch(
    kube_env: KubeEnv, together: TogetherSimulator, operator: OperatorRunner, credentials: str
) -> None:
    await kube_env.kube.create(KIND, PLURAL, "llama", spec())
    await kube_env.kube.wait_condition(PLURAL, "llama", "Ready", "True")
    together.reset_counts()
    await kube_env.kube.patch_spec(PLURAL, "llama", {"autoscaling": {"minReplicas": 2, "maxReplicas": 4}})
    obj = await kube_env.kube.wait_for(
        PLURAL,
        "llama",
        lambda o: bool(o and o["status"].get("maxReplicas") == 4 and condition(o, "Ready")["status"] == "True"),  # type: ignore[index]
    )
    patches = [r for r in together.requests if r.method == "PATCH"]
    assert len(patches) == 1 and patches[0].body == {"autoscaling": {"min_replicas": 2, "max_replicas": 4}}
    assert obj is not None and obj["status"]["minReplicas"] == 2


async def test_error_is_reported(
    kube_env: KubeEnv, together: TogetherSimulator, operator: OperatorRunner, credentials: str
) -> None:
    await kube_env.kube.create(KIND, PLURAL, "llama", spec(), annotations={"aigw.dev/resync-seconds": "1"})
    obj = await kube_env.kube.wait_condition(PLURAL, "llama", "Ready", "True")
    together.fail(obj["status"]["id"], "GPU node lost")
    await kube_env.kube.wait_condition(PLURAL, "llama", "Ready", "False", reason="Error")


@pytest.mark.parametrize("restart", [True, False])
async def test_auto_stop_reaction(
    restart: bool, kube_env: KubeEnv, together: TogetherSimulator, operator: OperatorRunner, credentials: str
) -> None:
    await kube_env.kube.create(
        KIND, PLURAL, "llama", spec(restartAfterAutoStop=restart), annotations={"aigw.dev/resync-seconds": "1"}
    )
    obj = await kube_env.kube.wait_condition(PLURAL, "llama", "Ready", "True")
    together.reset_counts()
    together.auto_stop(obj["status"]["id"])
    if restart:
        await watch_reasons(kube_env, "llama", "Starting")
        await kube_env.kube.wait_condition(PLURAL, "llama", "Ready", "True")
        assert "Restarted" in [e["reason"] for e in await kube_env.kube.events("llama")]
        assert [r.body for r in together.requests if r.method == "PATCH"] == [{"state": "STARTED"}]
    else:
        await kube_env.kube.wait_condition(PLURAL, "llama", "Ready", "False", reason="AutoStopped")
        await asyncio.sleep(1.5)
        assert [r for r in together.requests if r.method != "GET"] == []


async def test_without_auto_restart_a_spec_change_still_starts_an_auto_stopped_endpoint(
    kube_env: KubeEnv, together: TogetherSimulator, operator: OperatorRunner, credentials: str
) -> None:
    """restartAfterAutoStop: false governs what happens without a spec change, nothing more."""
    await kube_env.kube.create(KIND, PLURAL, "llama", spec(restartAfterAutoStop=False))
    obj = await kube_env.kube.wait_condition(PLURAL, "llama", "Ready", "True")
    together.auto_stop(obj["status"]["id"])
    # The next resync finds it stopped, and leaves it so.
    await kube_env.kube.patch_meta(PLURAL, "llama", {"annotations": {"aigw.dev/resync-seconds": "1"}})
    await kube_env.kube.wait_condition(PLURAL, "llama", "Ready", "False", reason="AutoStopped")
    await kube_env.kube.patch_spec(PLURAL, "llama", {"state": "Stopped"})
    await kube_env.kube.wait_condition(PLURAL, "llama", "Ready", "False", reason="Stopped")
    together.reset_counts()
    await kube_env.kube.patch_spec(PLURAL, "llama", {"state": "Started"})
    await kube_env.kube.wait_condition(PLURAL, "llama", "Ready", "True", timeout=20)
    assert [r.body for r in together.requests if r.method == "PATCH"] == [{"state": "STARTED"}]
    assert together.state(only(together)) == "STARTED"
    events = await kube_env.kube.events("llama")
    # The user's own start is a Normal Event of its own, not a warning about Together.
    assert [(e["type"], e["reason"]) for e in events if e["reason"] in ("Started", "Restarted")] == [
        ("Normal", "Started")
    ]


async def test_create_pending_mark_is_removed_once_the_id_is_recorded(
    kube_env: KubeEnv, together: TogetherSimulator, operator: OperatorRunner, credentials: str
) -> None:
    await kube_env.kube.create(KIND, PLURAL, "llama", spec())
    obj = await kube_env.kube.wait_condition(PLURAL, "llama", "Ready", "True")
    obj = await kube_env.kube.wait_for(
        PLURAL, "llama", lambda o: bool(o and "aigw.dev/create-pending" not in o["metadata"].get("annotations", {}))
    )
    assert obj is not None and obj["status"]["id"] == only(together)
    # Deleted out of band, it is created again, never "found" by a stale mark: one new POST.
    together.reset_counts()
    together.delete_out_of_band(obj["status"]["id"])
    await kube_env.kube.patch_meta(PLURAL, "llama", {"annotations": {"aigw.dev/resync-seconds": "1"}})
    again = await kube_env.kube.wait_for(
        PLURAL, "llama", lambda o: bool(o and o["status"].get("id") not in (None, obj["status"]["id"]))
    )
    assert again is not None and together.count("POST") == 1


async def test_lost_create_response_makes_one_endpoint(
    kube_env: KubeEnv, together: TogetherSimulator, operator: OperatorRunner, credentials: str
) -> None:
    together.faults.lose_next_response("POST")
    await kube_env.kube.create(KIND, PLURAL, "llama", spec())
    obj = await kube_env.kube.wait_condition(PLURAL, "llama", "Ready", "True")
    assert len(together.endpoints) == 1 and obj["status"]["id"] in together.endpoints
    assert together.count("POST") == 1


async def test_killed_right_after_post_makes_one_endpoint(
    kube_env: KubeEnv, together: TogetherSimulator, operator: OperatorRunner, credentials: str
) -> None:
    async def create() -> None:
        response = await kube_env.kube.create(KIND, PLURAL, "llama", spec())
        assert response.status_code == 201, response.text

    # Together starts the endpoint and holds its answer; the operator dies waiting for it.
    await kill_while_held(together, "POST", create, operator.kill)
    assert len(together.endpoints) == 1
    obj = await kube_env.kube.get(PLURAL, "llama")
    assert obj is not None
    assert not (obj.get("status") or {}).get("id"), "the id reached the status: the kill came too late"
    await operator.start()
    obj = await kube_env.kube.wait_condition(PLURAL, "llama", "Ready", "True")
    assert len(together.endpoints) == 1 and obj["status"]["id"] in together.endpoints
    assert together.count("POST") == 1


async def test_hardware_unavailable_is_reported_with_options(
    kube_env: KubeEnv, together: TogetherSimulator, operator: OperatorRunner, credentials: str
) -> None:
    await kube_env.kube.create(KIND, PLURAL, "big", spec(hardware="8x_nvidia_h200_140gb_sxm"))
    obj = await kube_env.kube.wait_condition(PLURAL, "big", "Ready", "False", reason="HardwareUnavailable")
    assert HARDWARE in condition(obj, "Ready")["message"]  # type: ignore[index]
    assert together.count("POST") == 0


async def test_immutable_edit_is_refused_at_apply_time(
    kube_env: KubeEnv, together: TogetherSimulator, operator: OperatorRunner, credentials: str
) -> None:
    await kube_env.kube.create(KIND, PLURAL, "llama", spec())
    response = await kube_env.kube.patch_spec(PLURAL, "llama", {"hardware": "2x_nvidia_h100_80gb_sxm"})
    assert response.status_code == 422 and "replacePolicy: Recreate" in response.text


async def test_delete_of_a_started_endpoint(
    kube_env: KubeEnv, together: TogetherSimulator, operator: OperatorRunner, credentials: str
) -> None:
    await kube_env.kube.create(KIND, PLURAL, "llama", spec())
    await kube_env.kube.wait_condition(PLURAL, "llama", "Ready", "True")
    await kube_env.kube.delete(PLURAL, "llama")
    await kube_env.kube.wait_gone(PLURAL, "llama")
    assert together.endpoints == {}


async def test_polls_while_moving_and_is_quiet_when_converged(
    kube_env: KubeEnv, together: TogetherSimulator, operator: OperatorRunner, credentials: str
) -> None:
    await kube_env.kube.create(KIND, PLURAL, "llama", spec())
    await kube_env.kube.wait_condition(PLURAL, "llama", "Ready", "True")
    gets_while_moving = together.count("GET", "/v1/endpoints/{id}")
    assert gets_while_moving >= 1, "the short poll followed the start-up"
    together.reset_counts()
    await asyncio.sleep(2.0)  # the normal resync is 30 s in the tests
    assert together.requests == []
