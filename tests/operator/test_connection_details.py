"""Connection details (``spec.writeConnectionDetailsTo``), for every kind: one ConfigMap or Secret
per resource, owned by it, holding the documented keys; written when what it holds changes
(once), never on a no-op resync; never over an object the resource does not own; an API key
only in a Secret and only when asked; the old object deleted when the target moves or goes; the
object gone with the resource (the garbage collector)."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from aigw_testbed.kubectl import condition
from aigw_testbed.simulators.base import SimulatorServer
from aigw_testbed.simulators.baseten import BasetenSimulator
from aigw_testbed.simulators.together import TogetherSimulator
from tests.conftest import API_KEY, NGROK_KEY, REGISTRY_KEY, TOGETHER_KEY
from tests.operator import test_dedicated_endpoint, test_gateway_endpoint, test_model, test_provider
from tests.operator.conftest import KubeEnv, OperatorRunner
from tests.operator.test_adoption import KINDS as ADOPTION_KINDS
from tests.operator.test_adoption import Kind as AdoptionKind
from tests.operator.test_adoption import orphaned_object, writes
from tests.operator.test_management_policy import _observer_annotations, _observer_spec

REQUESTED = "aigw.dev/reconcile-requested-at"
RESYNC = {"aigw.dev/resync-seconds": "1"}
ROTATED = "bt-rotated-key-77aa01"  # a canary too: the scan holds it to the Secret alone
WRITES = frozenset({"create", "update", "patch", "delete"})

Change = Callable[[KubeEnv, dict[str, SimulatorServer], dict[str, Any]], Awaitable[None]]


async def _patch(env: KubeEnv, plural: str, name: str, spec: dict[str, Any]) -> None:
    response = await env.kube.patch_spec(plural, name, spec)
    assert response.status_code == 200, response.text


def _rename_slug(env: KubeEnv, sims: dict[str, SimulatorServer], obj: dict[str, Any]) -> Awaitable[None]:
    return _patch(env, "gatewayendpoints", obj["metadata"]["name"], {"slug": "my-org/renamed"})


def _one_model(env: KubeEnv, sims: dict[str, SimulatorServer], obj: dict[str, Any]) -> Awaitable[None]:
    return _patch(env, "providers", obj["metadata"]["name"], {"models": ["llama-3-8b"]})


def _rename_model(env: KubeEnv, sims: dict[str, SimulatorServer], obj: dict[str, Any]) -> Awaitable[None]:
    return _patch(env, "models", obj["metadata"]["name"], {"name": "renamed"})


async def _auto_stop(env: KubeEnv, sims: dict[str, SimulatorServer], obj: dict[str, Any]) -> None:
    # Together stops the idle endpoint by itself: nothing in the spec changes.
    together = sims["together"]
    assert isinstance(together, TogetherSimulator)
    together.auto_stop(obj["status"]["id"])


@dataclass(frozen=True)
class Kind:
    kind: str
    plural: str
    spec: Callable[[int], dict[str, Any]]  # the i-th resource's: natural keys differ
    sim: str
    # The key the resource's credentials hold (includeApiKeyAs).
    api_key: str
    # Each documented key and its value, from the resource as Ready and the simulators.
    expected: Callable[[dict[str, Any], dict[str, SimulatorServer]], dict[str, str]]
    # A change of an upstream value, and the key and value it must show.
    change: Change
    changed: tuple[str, str]


KINDS = [
    Kind(
        "GatewayEndpoint",
        "gatewayendpoints",
        lambda i: test_gateway_endpoint.spec(slug=f"my-org/m{i}"),
        "baseten",
        API_KEY,
        # Under the tests the inference URL is unset, so BASE_URL is the (simulated) base_url.
        lambda obj, sims: {
            "MODEL": obj["status"]["slug"],
            "SLUG": obj["status"]["slug"],
            "BASE_URL": sims["baseten"].url,
            "ENDPOINT_ID": obj["status"]["id"],
        },
        _rename_slug,
        ("MODEL", "my-org/renamed"),
    ),
    Kind(
        "Provider",
        "providers",
        lambda i: test_provider.spec(providerId=f"vllm-{i}"),
        "ngrok",
        NGROK_KEY,
        lambda obj, sims: {
            "PROVIDER_ID": obj["spec"]["providerId"],
            "MODELS": f"{obj['spec']['providerId']}:llama-3-8b,{obj['spec']['providerId']}:qwen-2",
        },
        _one_model,
        ("MODELS", "vllm-0:llama-3-8b"),
    ),
    Kind(
        "Model",
        "models",
        lambda i: test_model.spec(name=f"assistant-{i}"),
        "registry",
        REGISTRY_KEY,
        lambda obj, sims: {"MODEL_ID": obj["status"]["id"], "MODEL_NAME": obj["status"]["name"], "TENANT": "root"},
        _rename_model,
        ("MODEL_NAME", "renamed"),
    ),
    Kind(
        "DedicatedEndpoint",
        "dedicatedendpoints",
        # Left stopped when Together stops it: the state change is the upstream's alone.
        lambda i: test_dedicated_endpoint.spec(restartAfterAutoStop=False),
        "together",
        TOGETHER_KEY,
        lambda obj, sims: {
            "MODEL": obj["status"]["name"],
            "BASE_URL": f"{sims['together'].url}/v1",
            "STATE": "STARTED",
            "ENDPOINT_ID": obj["status"]["id"],
        },
        _auto_stop,
        ("STATE", "STOPPED"),
    ),
]
IDS = [k.kind for k in KINDS]


def _emulator(env: KubeEnv) -> Any:
    if env.emulator is None:
        pytest.fail("counts the API server's writes of ConfigMaps and Secrets: needs the emulator's counters")
    return env.emulator


def _path(env: KubeEnv, plural: str, name: str = "") -> str:
    path = f"/api/v1/namespaces/{env.kube.namespace}/{plural}"
    return f"{path}/{name}" if name else path


async def _get(env: KubeEnv, plural: str, name: str) -> dict[str, Any] | None:
    response = await env.kube.http.get(_path(env, plural, name))
    if response.status_code == 404:
        return None
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def _data(obj: dict[str, Any] | None, plural: str) -> dict[str, str]:
    data = dict((obj or {}).get("data") or {})
    if plural == "secrets":
        return {k: base64.b64decode(v).decode() for k, v in data.items()}
    return data


async def _until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"{what} within {timeout}s"
        await asyncio.sleep(0.05)


async def _written(env: KubeEnv, plural: str, name: str, key: str, value: str) -> dict[str, Any]:
    async def check() -> bool:
        return _data(await _get(env, plural, name), plural).get(key) == value

    await _until(check, f"{plural}/{name} holds {key}={value}")
    found = await _get(env, plural, name)
    assert found is not None
    return found


async def _create_ready(
    env: KubeEnv, kind: Kind, name: str, target: dict[str, Any] | None, index: int = 0, **kw: Any
) -> dict[str, Any]:
    spec = kind.spec(index)
    if target is not None:
        spec["writeConnectionDetailsTo"] = target
    response = await env.kube.create(kind.kind, kind.plural, name, spec, **kw)
    assert response.status_code == 201, response.text
    return (
        await env.kube.wait_for(
            kind.plural,
            name,
            lambda o: bool(
                o
                and (condition(o, "Ready") or {}).get("status") == "True"
                and (target is None or ((o.get("status") or {}).get("connectionDetails") or {}).get("digest"))
            ),
            timeout=20,
        )
        or {}
    )


def _core_writes(env: KubeEnv) -> int:
    """Writes of ConfigMaps and Secrets, but for the finalizer patches that protect credentials
    Secrets (secret_protection): the connection details are never patched."""
    emulator = _emulator(env)
    patches = emulator.requests_count(frozenset({"patch"}), "secrets")
    return int(emulator.requests_count(WRITES, "configmaps") + emulator.requests_count(WRITES, "secrets") - patches)


async def _settled(seconds: float = 0.5) -> None:
    await asyncio.sleep(seconds)


# ---------------------------------------------------------------------------- the keys


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
async def test_the_details_hold_the_documented_keys_in_an_object_the_resource_owns(
    kind: Kind, kube_env: KubeEnv, simulators: dict[str, SimulatorServer], operator: OperatorRunner, credentials: str
) -> None:
    obj = await _create_ready(kube_env, kind, "app", {"configMap": "app-connection"})
    found = await _get(kube_env, "configmaps", "app-connection")
    assert found is not None
    assert found["data"] == kind.expected(obj, simulators)
    assert found["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "aigw.dev/v1alpha1",
            "kind": kind.kind,
            "name": "app",
            "uid": obj["metadata"]["uid"],
            "controller": True,
        }
    ]
    assert found["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "aigw-operator"
    recorded = obj["status"]["connectionDetails"]
    assert set(recorded) == {"configMap", "digest"} and recorded["configMap"] == "app-connection"
    assert kind.api_key not in str(found), "no API key in a ConfigMap"
    # Without the field, the status has no entry at all.
    plain = await _create_ready(kube_env, kind, "plain", None, index=1)
    assert "connectionDetails" not in plain["status"]


# ---------------------------------------------------------------------------- writes


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
async def test_the_details_follow_the_upstream_with_one_write_and_none_on_a_noop_resync(
    kind: Kind, kube_env: KubeEnv, simulators: dict[str, SimulatorServer], operator: OperatorRunner, credentials: str
) -> None:
    emulator = _emulator(kube_env)
    obj = await _create_ready(kube_env, kind, "app", {"configMap": "app-connection"}, annotations=RESYNC)
    await _settled()
    emulator.reset_counters()
    await asyncio.sleep(3.5)  # three resyncs or so
    assert _core_writes(kube_env) == 0, emulator.counters()
    assert emulator.writes(kind.plural, "status") == 0, emulator.counters()

    await kind.change(kube_env, simulators, obj)
    key, value = kind.changed
    await _written(kube_env, "configmaps", "app-connection", key, value)
    await asyncio.sleep(2.5)  # the reconcile that wrote, and resyncs after it
    assert emulator.requests_count(WRITES, "configmaps") == 1, emulator.counters()
    assert emulator.requests_count(frozenset({"update"}), "configmaps") == 1, "one replace of the object"


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
async def test_a_hand_deleted_object_is_written_again_on_a_reconcile_request(
    kind: Kind, kube_env: KubeEnv, simulators: dict[str, SimulatorServer], operator: OperatorRunner, credentials: str
) -> None:
    obj = await _create_ready(kube_env, kind, "app", {"configMap": "app-connection"})
    expected = kind.expected(obj, simulators)
    response = await kube_env.kube.http.delete(_path(kube_env, "configmaps", "app-connection"))
    assert response.status_code == 200
    await kube_env.kube.patch_meta(kind.plural, "app", {"annotations": {REQUESTED: "2026-12-01T00:00:00Z"}})

    async def back() -> bool:
        return _data(await _get(kube_env, "configmaps", "app-connection"), "configmaps") == expected

    await _until(back, "the ConfigMap is written again")


# ---------------------------------------------------------------------------- conflicts


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
async def test_an_object_the_resource_does_not_own_is_never_overwritten(
    kind: Kind, kube_env: KubeEnv, simulators: dict[str, SimulatorServer], operator: OperatorRunner, credentials: str
) -> None:
    emulator = _emulator(kube_env)
    mine = {"metadata": {"name": "taken"}, "data": {"MINE": "yes"}}
    assert (await kube_env.kube.http.post(_path(kube_env, "configmaps"), json=mine)).status_code == 201
    before = await _get(kube_env, "configmaps", "taken")
    assert before is not None
    emulator.reset_counters()
    spec = {**kind.spec(0), "writeConnectionDetailsTo": {"configMap": "taken"}}
    response = await kube_env.kube.create(kind.kind, kind.plural, "app", spec, annotations=RESYNC)
    assert response.status_code == 201, response.text
    obj = await kube_env.kube.wait_condition(
        kind.plural, "app", "Ready", "False", reason="ConnectionDetailsConflict", timeout=20
    )
    message = condition(obj, "Ready")["message"]  # type: ignore[index]
    assert "ConfigMap" in message and "taken" in message and "never overwritten" in message
    assert condition(obj, "Synced")["reason"] == "ConnectionDetailsConflict"  # type: ignore[index]
    assert obj["status"]["connectionDetails"] == {"configMap": "taken", "digest": ""}
    await asyncio.sleep(2.5)  # resyncs: each looks again, none writes, the Warning is not repeated
    after = await _get(kube_env, "configmaps", "taken")
    assert after == before, "the foreign ConfigMap is untouched"
    assert _core_writes(kube_env) == 0, emulator.counters()
    warnings = [e for e in await kube_env.kube.events("app") if e.get("reason") == "ConnectionDetailsConflict"]
    assert len(warnings) == 1 and warnings[0]["type"] == "Warning" and warnings[0].get("count", 1) == 1

    # Once the name is free, the next resync writes it and the resource is Ready again.
    assert (await kube_env.kube.http.delete(_path(kube_env, "configmaps", "taken"))).status_code == 200
    await kube_env.kube.wait_condition(kind.plural, "app", "Ready", "True", timeout=10)
    owned = await _get(kube_env, "configmaps", "taken")
    assert owned is not None and owned["data"] == kind.expected(obj, simulators)


# ---------------------------------------------------------------------------- the API key


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
async def test_include_api_key_as_puts_the_key_in_the_secret_and_nowhere_else(
    kind: Kind, kube_env: KubeEnv, simulators: dict[str, SimulatorServer], operator: OperatorRunner, credentials: str
) -> None:
    target = {"secret": "app-connection", "includeApiKeyAs": "API_KEY"}
    obj = await _create_ready(kube_env, kind, "app", target)
    secret = await _get(kube_env, "secrets", "app-connection")
    assert secret is not None and secret["type"] == "Opaque"
    assert _data(secret, "secrets") == {**kind.expected(obj, simulators), "API_KEY": kind.api_key}
    assert kind.api_key not in str(obj), "not in the resource"
    events = await kube_env.kube.events()
    assert all(kind.api_key not in str(e) for e in events)
    configmaps = (await kube_env.kube.http.get(_path(kube_env, "configmaps"))).json()["items"]
    assert all(kind.api_key not in str(c) for c in configmaps)
    # Without includeApiKeyAs a Secret holds the details alone.
    plain = await _create_ready(kube_env, kind, "plain", {"secret": "plain-connection"}, index=1)
    assert "API_KEY" not in _data(await _get(kube_env, "secrets", "plain-connection"), "secrets")
    assert kind.api_key not in str(plain)


# ---------------------------------------------------------------------------- moving and removing


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
async def test_renaming_or_removing_the_target_deletes_the_old_object(
    kind: Kind, kube_env: KubeEnv, simulators: dict[str, SimulatorServer], operator: OperatorRunner, credentials: str
) -> None:
    obj = await _create_ready(kube_env, kind, "app", {"configMap": "first"})
    expected = kind.expected(obj, simulators)
    await _patch(kube_env, kind.plural, "app", {"writeConnectionDetailsTo": {"configMap": None, "secret": "second"}})

    async def moved() -> bool:
        return (
            _data(await _get(kube_env, "secrets", "second"), "secrets") == expected
            and await _get(kube_env, "configmaps", "first") is None
        )

    await _until(moved, "the details move from ConfigMap first to Secret second")
    moved_obj = await kube_env.kube.wait_for(
        kind.plural, "app", lambda o: bool(o and (o["status"].get("connectionDetails") or {}).get("secret") == "second")
    )
    assert moved_obj is not None and set(moved_obj["status"]["connectionDetails"]) == {"secret", "digest"}

    await _patch(kube_env, kind.plural, "app", {"writeConnectionDetailsTo": None})

    async def removed() -> bool:
        return await _get(kube_env, "secrets", "second") is None

    await _until(removed, "the Secret is deleted once the field is removed")
    await kube_env.kube.wait_for(kind.plural, "app", lambda o: bool(o and "connectionDetails" not in o["status"]))


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
async def test_a_renamed_target_never_deletes_an_object_the_resource_does_not_own(
    kind: Kind, kube_env: KubeEnv, simulators: dict[str, SimulatorServer], operator: OperatorRunner, credentials: str
) -> None:
    await _create_ready(kube_env, kind, "app", {"configMap": "first"})
    # Someone takes the object over (the resource no longer owns it).
    response = await kube_env.kube.http.patch(
        _path(kube_env, "configmaps", "first"),
        json={"metadata": {"ownerReferences": None}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert response.status_code == 200, response.text
    await _patch(kube_env, kind.plural, "app", {"writeConnectionDetailsTo": {"configMap": "second"}})
    await kube_env.kube.wait_for(
        kind.plural,
        "app",
        lambda o: bool(o and (o["status"].get("connectionDetails") or {}).get("configMap") == "second"),
    )
    await _settled()
    assert await _get(kube_env, "configmaps", "first") is not None, "not ours any more: left in place"


# ---------------------------------------------------------------------------- with the resource


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
async def test_deleting_the_resource_removes_the_object(
    kind: Kind, kube_env: KubeEnv, simulators: dict[str, SimulatorServer], operator: OperatorRunner, credentials: str
) -> None:
    await _create_ready(kube_env, kind, "app", {"secret": "app-connection"})
    assert await _get(kube_env, "secrets", "app-connection") is not None
    await kube_env.kube.delete(kind.plural, "app")
    await kube_env.kube.wait_gone(kind.plural, "app")

    async def collected() -> bool:
        return await _get(kube_env, "secrets", "app-connection") is None

    # The garbage collector's work (a real cluster's takes a moment).
    await _until(collected, "the owned Secret goes with its owner", timeout=30)


async def test_a_rotated_api_key_is_written_to_the_secret_at_the_next_resync(
    kube_env: KubeEnv, simulators: dict[str, SimulatorServer], operator: OperatorRunner, credentials: str
) -> None:
    """includeApiKeyAs: the key the resource uses, rotated in its credentials Secret, reaches the
    connection details without a spec change (the routine resync that finds it new is not
    answered from the listing alone), in one write."""
    kind = KINDS[0]
    baseten = simulators["baseten"]
    assert isinstance(baseten, BasetenSimulator)
    target = {"secret": "app-connection", "includeApiKeyAs": "API_KEY"}
    await _create_ready(kube_env, kind, "app", target, annotations=RESYNC)
    emulator = _emulator(kube_env)
    await _settled()
    emulator.reset_counters()
    baseten.add_key(ROTATED)
    await kube_env.kube.put_secret("baseten", {"apiKey": ROTATED})
    await _written(kube_env, "secrets", "app-connection", "API_KEY", ROTATED)
    await asyncio.sleep(2.5)  # resyncs after it
    assert emulator.requests_count(frozenset({"update"}), "secrets") == 1, emulator.counters()
    # (The create counted is the test's own put_secret, which then patches.)
    assert emulator.requests_count(frozenset({"delete"}), "secrets") == 0, emulator.counters()


@pytest.mark.parametrize("kind", ADOPTION_KINDS, ids=lambda k: k.kind)
async def test_observe_only_writes_the_details_of_the_object_it_observes_and_nothing_upstream(
    kind: AdoptionKind,
    kube_env: KubeEnv,
    simulators: dict[str, SimulatorServer],
    operator: OperatorRunner,
    credentials: str,
) -> None:
    """The connection details are a Kubernetes object: ObserveOnly writes them too (the upstream
    object is only read), with the observed object's id."""
    sim = simulators[kind.sim]
    foreign = await orphaned_object(kube_env, kind)
    sim.reset_counts()
    spec = {**_observer_spec(kind, kube_env), "writeConnectionDetailsTo": {"configMap": "observed"}}
    response = await kube_env.kube.create(
        kind.kind, kind.plural, "observer", spec, annotations=_observer_annotations(kind, foreign)
    )
    assert response.status_code == 201, response.text
    obj = await kube_env.kube.wait_condition(kind.plural, "observer", "Ready", "True", timeout=20)

    # Its id (ENDPOINT_ID, MODEL_ID), or for a Provider the providerId its model strings use.
    identity = obj["status"]["providerId"] if kind.kind == "Provider" else foreign
    assert obj["status"]["id"] == foreign

    async def written() -> bool:
        return identity in _data(await _get(kube_env, "configmaps", "observed"), "configmaps").values()

    await _until(written, "the observed object's identity in the ConfigMap")
    found = await _get(kube_env, "configmaps", "observed")
    assert found is not None and found["metadata"]["ownerReferences"][0]["uid"] == obj["metadata"]["uid"]
    assert writes(sim) == [], "ObserveOnly writes nothing upstream"
