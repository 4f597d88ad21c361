"""``spec.managementPolicy``, written once in the loop for every kind.

ObserveOnly reads: it finds the upstream object (by ``aigw.dev/external-id``, or by the kind's
unique key), mirrors it in the status, reports where it differs from the spec without
correcting it, and never writes upstream, deletion included. NoDelete manages the object but
never deletes it: not with the resource, and not to replace it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from aigw_testbed.kubectl import condition
from aigw_testbed.simulators.base import SimulatorServer
from aigw_testbed.simulators.baseten import BasetenSimulator
from tests.operator import test_economy as economy
from tests.operator import test_gateway_endpoint
from tests.operator.conftest import KubeEnv, OperatorRunner
from tests.operator.test_adoption import EXTERNAL_ID, KINDS, Kind, orphaned_object, writes

# The spec change per kind that test_economy makes (one the upstream takes in place), and the one
# field it changes, which a drift report must name.
CHANGES: dict[str, tuple[dict[str, Any], str]] = {k.kind: (k.change, next(iter(k.change))) for k in economy.KINDS}
OBSERVE_ONLY = {"managementPolicy": "ObserveOnly"}
LATER = "2030-01-01T00:00:00Z"


def _edit_by_hand(kind: str, sim: Any, upstream_id: str) -> None:
    """Change the upstream object as someone in the vendor's dashboard would."""
    if kind == "GatewayEndpoint":
        sim.modify_out_of_band(upstream_id, targets=[{"provider": "BASETEN", "model_id": "edited0"}], updated_at=LATER)
    elif kind == "Provider":
        sim.modify_out_of_band(upstream_id, name="edited by hand", updatedAt=LATER)
    elif kind == "Model":
        [name] = [m["name"] for m in sim.models("root").values() if m["id"] == upstream_id]
        sim.modify_out_of_band(name, tenant="root", summary="edited by hand")
        # What the status mirrors of a model (its list item has no updated_at): who uses it.
        sim.connect_endpoint(name, "support", "my-org/support", tenant="root")
    else:
        endpoint = sim.endpoints[upstream_id]
        endpoint.min_replicas, endpoint.max_replicas = 3, 4


def _mirrored(kind: str, status: dict[str, Any]) -> bool:
    if kind == "DedicatedEndpoint":
        return status.get("minReplicas") == 3 and status.get("maxReplicas") == 4
    if kind == "Model":
        return [e.get("slug") for e in status.get("connectedEndpoints") or ()] == ["my-org/support"]
    return status.get("updatedAt") == LATER


NO_DELETE = {"managementPolicy": "NoDelete"}


def _reasons(events: list[dict[str, Any]]) -> list[str]:
    return [e["reason"] for e in events]


def _observer_spec(kind: Kind, env: KubeEnv, **extra: Any) -> dict[str, Any]:
    """The spec the orphaned object was made from, observed under another resource's name."""
    if kind.kind == "DedicatedEndpoint":
        # Its display name defaults to the resource's namespace/name: the original's.
        extra.setdefault("displayName", f"{env.kube.namespace}/original")
    return kind.make(**OBSERVE_ONLY, **extra)


def _observer_annotations(kind: Kind, foreign: str) -> dict[str, str] | None:
    # Kinds with a unique key are found by it; Together has none, so the id must be named.
    return None if kind.unique else {EXTERNAL_ID: foreign}


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
async def test_observe_only_mirrors_reports_drift_and_never_writes_upstream(
    kind: Kind, kube_env: KubeEnv, simulators: dict[str, SimulatorServer], operator: OperatorRunner, credentials: str
) -> None:
    sim = simulators[kind.sim]
    foreign = await orphaned_object(kube_env, kind)
    sim.reset_counts()
    await kube_env.kube.create(
        kind.kind,
        kind.plural,
        "observer",
        _observer_spec(kind, kube_env),
        annotations=_observer_annotations(kind, foreign),
    )
    obj = await kube_env.kube.wait_condition(kind.plural, "observer", "Ready", "True", timeout=20)
    assert obj["status"]["id"] == foreign and obj["status"]["adopted"] is True
    assert condition(obj, "Synced")["reason"] == "ReconcileSuccess"  # type: ignore[index]
    assert "Observing" in _reasons(await kube_env.kube.events("observer"))

    change, field = CHANGES[kind.kind]
    response = await kube_env.kube.patch_spec(kind.plural, "observer", change)
    assert response.status_code == 200, response.text
    obj = await kube_env.kube.wait_condition(kind.plural, "observer", "Synced", "False", reason="UpstreamDrift")
    message = condition(obj, "Synced")["message"]  # type: ignore[index]
    assert field in message and "ObserveOnly" in message, message
    assert condition(obj, "Ready")["status"] == "True", "the object is there and serves: only the spec differs"  # type: ignore[index]
    drift = [e for e in await kube_env.kube.events("observer") if e["reason"] == "UpstreamDrift"]
    assert len(drift) == 1 and drift[0]["type"] == "Warning", drift
    # Changed by hand upstream, and looked at again: the status follows; nothing is corrected.
    _edit_by_hand(kind.kind, sim, foreign)
    await kube_env.kube.patch_meta(kind.plural, "observer", {"annotations": {"aigw.dev/reconcile-requested-at": "1"}})
    obj = await kube_env.kube.wait_for(
        kind.plural, "observer", lambda o: bool(o and _mirrored(kind.kind, o["status"])), timeout=10
    )
    assert condition(obj, "Synced")["reason"] == "UpstreamDrift"  # type: ignore[index]
    # Recorded for a rebuild from Git, as for any adoption.
    assert (obj["metadata"].get("annotations") or {}).get(EXTERNAL_ID) == foreign

    await kube_env.kube.delete(kind.plural, "observer")
    await kube_env.kube.wait_gone(kind.plural, "observer")
    assert writes(sim) == [], "not one upstream write, deletion included"
    orphaned = [e for e in await kube_env.kube.events("observer") if e["reason"] == "Orphaned"]
    assert orphaned and "managementPolicy is ObserveOnly" in orphaned[0]["message"], orphaned


@pytest.mark.parametrize("kind", [k for k in KINDS if k.unique], ids=lambda k: k.kind)
async def test_observe_only_without_an_upstream_object_creates_none(
    kind: Kind, kube_env: KubeEnv, simulators: dict[str, SimulatorServer], operator: OperatorRunner, credentials: str
) -> None:
    sim = simulators[kind.sim]
    sim.reset_counts()
    await kube_env.kube.create(kind.kind, kind.plural, "observer", kind.make(**OBSERVE_ONLY))
    obj = await kube_env.kube.wait_condition(kind.plural, "observer", "Ready", "False", reason="UpstreamNotFound")
    assert "none is created" in condition(obj, "Ready")["message"]  # type: ignore[index]
    await asyncio.sleep(0.5)
    assert writes(sim) == [], "ObserveOnly never creates"
    assert not obj["status"].get("id")


async def test_observe_only_of_a_dedicated_endpoint_needs_its_id(
    kube_env: KubeEnv, simulators: dict[str, SimulatorServer], operator: OperatorRunner, credentials: str
) -> None:
    [kind] = [k for k in KINDS if k.kind == "DedicatedEndpoint"]
    sim = simulators[kind.sim]
    await orphaned_object(kube_env, kind)  # an endpoint with this very spec: still not taken by guess
    sim.reset_counts()
    await kube_env.kube.create(kind.kind, kind.plural, "observer", kind.make(**OBSERVE_ONLY))
    obj = await kube_env.kube.wait_condition(kind.plural, "observer", "Synced", "False", reason="InvalidSpec")
    assert EXTERNAL_ID in condition(obj, "Synced")["message"]  # type: ignore[index]
    await asyncio.sleep(0.5)
    assert writes(sim) == []
    assert not obj["status"].get("id")


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
async def test_switching_from_observe_only_to_full_corrects_the_drift(
    kind: Kind, kube_env: KubeEnv, simulators: dict[str, SimulatorServer], operator: OperatorRunner, credentials: str
) -> None:
    sim = simulators[kind.sim]
    foreign = await orphaned_object(kube_env, kind)
    change, _ = CHANGES[kind.kind]
    spec = _observer_spec(kind, kube_env, **change)
    await kube_env.kube.create(
        kind.kind, kind.plural, "observer", spec, annotations=_observer_annotations(kind, foreign)
    )
    await kube_env.kube.wait_condition(kind.plural, "observer", "Synced", "False", reason="UpstreamDrift", timeout=20)
    sim.reset_counts()
    await kube_env.kube.patch_spec(kind.plural, "observer", {"managementPolicy": "Full"})
    obj = await kube_env.kube.wait_condition(kind.plural, "observer", "Synced", "True", timeout=20)
    assert obj["status"]["id"] == foreign, "the same object, now managed"
    assert [w for w in writes(sim) if not w.startswith("POST")], "the drift is corrected in place"
    assert [w for w in writes(sim) if w.startswith(("POST", "DELETE"))] == [], writes(sim)


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
async def test_no_delete_manages_but_leaves_the_object_when_the_resource_goes(
    kind: Kind, kube_env: KubeEnv, simulators: dict[str, SimulatorServer], operator: OperatorRunner, credentials: str
) -> None:
    sim = simulators[kind.sim]
    await kube_env.kube.create(kind.kind, kind.plural, "kept", kind.make(**NO_DELETE))
    obj = await kube_env.kube.wait_condition(kind.plural, "kept", "Ready", "True", timeout=20)
    upstream_id = obj["status"]["id"]
    assert not obj["status"].get("adopted"), "created here"
    change, _ = CHANGES[kind.kind]
    await kube_env.kube.patch_spec(kind.plural, "kept", change)
    await kube_env.kube.wait_for(
        kind.plural,
        "kept",
        lambda o: bool(o and o["status"].get("observedGeneration") == 2 and condition(o, "Synced")["status"] == "True"),  # type: ignore[index]
        timeout=20,
    )
    sim.reset_counts()
    await kube_env.kube.delete(kind.plural, "kept")
    await kube_env.kube.wait_gone(kind.plural, "kept", timeout=20)
    assert [w for w in writes(sim) if w.startswith("DELETE")] == [], "NoDelete never deletes"
    orphaned = [e for e in await kube_env.kube.events("kept") if e["reason"] == "Orphaned"]
    assert orphaned and "managementPolicy is NoDelete" in orphaned[0]["message"], orphaned
    # Still there: a new resource can take it over by name.
    await kube_env.kube.create(kind.kind, kind.plural, "again", kind.make(), annotations={EXTERNAL_ID: upstream_id})
    again = await kube_env.kube.wait_condition(kind.plural, "again", "Ready", "True", timeout=20)
    assert again["status"]["id"] == upstream_id


async def test_no_delete_refuses_a_rename_that_needs_a_replace(
    kube_env: KubeEnv, baseten: BasetenSimulator, operator: OperatorRunner, credentials: str
) -> None:
    baseten.slug_rename = "immutable"
    plural = "gatewayendpoints"
    await kube_env.kube.create("GatewayEndpoint", plural, "kept", test_gateway_endpoint.spec(**NO_DELETE))
    obj = await kube_env.kube.wait_condition(plural, "kept", "Ready", "True")
    baseten.reset_counts()
    await kube_env.kube.patch_spec(plural, "kept", {"slug": "my-org/glm-renamed"})
    obj = await kube_env.kube.wait_condition(plural, "kept", "Synced", "False", reason="RecreateRequired")
    assert "managementPolicy is NoDelete" in condition(obj, "Synced")["message"]  # type: ignore[index]
    await asyncio.sleep(0.5)
    sent = writes(baseten)
    assert [w for w in sent if w.startswith(("POST", "DELETE"))] == [], "neither a new endpoint nor a delete"
    assert len(sent) == 1, f"one refused rename, no retry storm: {sent}"
    assert [e["slug"] for e in baseten.endpoints.values()] == ["my-org/glm"]
