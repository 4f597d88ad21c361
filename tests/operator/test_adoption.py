"""What the operator may take over upstream: only what it can show this resource created (a create
whose answer was lost), or what the user names with ``aigw.dev/external-id``. An object under the
same natural key made by anyone else is ``AlreadyExists`` and never written to; an adopted object
outlives its resource unless ``deletionPolicy: Delete`` is set on it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from aigw_testbed.kubectl import condition
from aigw_testbed.simulators.base import SimulatorServer
from tests.operator import test_dedicated_endpoint, test_gateway_endpoint, test_model, test_provider
from tests.operator.conftest import KubeEnv, OperatorRunner

EXTERNAL_ID = "aigw.dev/external-id"


@dataclass(frozen=True)
class Kind:
    kind: str
    plural: str
    spec: Callable[..., dict[str, Any]]
    sim: str
    # Whether the upstream has a natural key (slug, providerId, name) a second object cannot share.
    unique: bool = True
    # What makes two resources' specs name the same key (a Model's name is the resource's own).
    key: tuple[tuple[str, str], ...] = ()

    def make(self, **extra: Any) -> dict[str, Any]:
        return self.spec(**dict(self.key), **extra)


KINDS = [
    Kind("GatewayEndpoint", "gatewayendpoints", test_gateway_endpoint.spec, "baseten"),
    Kind("Provider", "providers", test_provider.spec, "ngrok"),
    Kind("Model", "models", test_model.spec, "registry", key=(("name", "assistant"),)),
    Kind("DedicatedEndpoint", "dedicatedendpoints", test_dedicated_endpoint.spec, "together", unique=False),
]


def writes(sim: SimulatorServer) -> list[str]:
    return [f"{r.method} {r.path}" for r in sim.requests if r.method != "GET"]


async def orphaned_object(env: KubeEnv, kind: Kind) -> str:
    """An upstream object nobody manages any more: made by a resource that was then deleted with
    deletionPolicy Orphan (as another cluster, Terraform or a person would leave one)."""
    await env.kube.create(kind.kind, kind.plural, "original", kind.make(deletionPolicy="Orphan"))
    obj = await env.kube.wait_condition(kind.plural, "original", "Ready", "True", timeout=20)
    await env.kube.delete(kind.plural, "original")
    await env.kube.wait_gone(kind.plural, "original")
    return str(obj["status"]["id"])


@pytest.mark.parametrize("kind", [k for k in KINDS if k.unique], ids=lambda k: k.kind)
async def test_an_object_under_the_same_key_is_not_taken_without_a_request(
    kind: Kind, kube_env: KubeEnv, simulators: dict[str, SimulatorServer], operator: OperatorRunner, credentials: str
) -> None:
    sim = simulators[kind.sim]
    foreign = await orphaned_object(kube_env, kind)
    sim.reset_counts()
    await kube_env.kube.create(kind.kind, kind.plural, "newcomer", kind.make())
    obj = await kube_env.kube.wait_condition(kind.plural, "newcomer", "Ready", "False", reason="AlreadyExists")
    message = condition(obj, "Ready")["message"]  # type: ignore[index]
    assert f"{EXTERNAL_ID}={foreign}" in message, message
    await asyncio.sleep(0.5)
    assert writes(sim) == [], "not one write to an object this resource did not make"
    assert not obj["status"].get("id")
    assert "aigw.dev/create-pending" not in (obj["metadata"].get("annotations") or {})
    warnings = [e for e in await kube_env.kube.events("newcomer") if e.get("reason") == "AlreadyExists"]
    assert len(warnings) == 1 and warnings[0]["type"] == "Warning", warnings
    # Deleting it deletes nothing upstream either.
    await kube_env.kube.delete(kind.plural, "newcomer")
    await kube_env.kube.wait_gone(kind.plural, "newcomer")
    assert [w for w in writes(sim) if "DELETE" in w] == []


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
async def test_an_object_named_by_external_id_is_adopted_and_outlives_its_resource(
    kind: Kind, kube_env: KubeEnv, simulators: dict[str, SimulatorServer], operator: OperatorRunner, credentials: str
) -> None:
    sim = simulators[kind.sim]
    foreign = await orphaned_object(kube_env, kind)
    sim.reset_counts()
    await kube_env.kube.create(kind.kind, kind.plural, "adopter", kind.make(), annotations={EXTERNAL_ID: foreign})
    obj = await kube_env.kube.wait_condition(kind.plural, "adopter", "Ready", "True", timeout=20)
    assert obj["status"]["id"] == foreign and obj["status"]["adopted"] is True
    assert [w for w in writes(sim) if w.startswith("POST")] == [], "adopted, not created"
    assert "Adopted" in [e["reason"] for e in await kube_env.kube.events("adopter")]
    sim.reset_counts()
    await kube_env.kube.delete(kind.plural, "adopter")
    await kube_env.kube.wait_gone(kind.plural, "adopter")
    assert [w for w in writes(sim) if w.startswith("DELETE")] == [], "no deletionPolicy: left in place"
    orphaned = [e for e in await kube_env.kube.events("adopter") if e.get("reason") == "Orphaned"]
    assert orphaned and "deletionPolicy: Delete" in orphaned[0]["message"]


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
async def test_an_adopted_object_is_deleted_when_delete_is_set_explicitly(
    kind: Kind, kube_env: KubeEnv, simulators: dict[str, SimulatorServer], operator: OperatorRunner, credentials: str
) -> None:
    sim = simulators[kind.sim]
    foreign = await orphaned_object(kube_env, kind)
    spec = kind.make(deletionPolicy="Delete")
    await kube_env.kube.create(kind.kind, kind.plural, "adopter", spec, annotations={EXTERNAL_ID: foreign})
    await kube_env.kube.wait_condition(kind.plural, "adopter", "Ready", "True", timeout=20)
    sim.reset_counts()
    await kube_env.kube.delete(kind.plural, "adopter")
    await kube_env.kube.wait_gone(kind.plural, "adopter", timeout=20)
    assert [w for w in writes(sim) if w.startswith("DELETE")], "deletionPolicy: Delete deletes it"


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
async def test_the_id_is_recorded_in_metadata_so_a_restore_without_status_creates_nothing(
    kind: Kind, kube_env: KubeEnv, simulators: dict[str, SimulatorServer], operator: OperatorRunner, credentials: str
) -> None:
    """After a create the id is in aigw.dev/external-id (one write with the mark's removal). A
    resource restored from a backup without its status (the annotation kept) finds its object."""
    sim = simulators[kind.sim]
    await kube_env.kube.create(kind.kind, kind.plural, "made", kind.make())
    await kube_env.kube.wait_condition(kind.plural, "made", "Ready", "True", timeout=20)

    def recorded(obj: dict[str, Any] | None) -> bool:
        # Written right after the status (the id is known only once the create is answered).
        annotations = (obj or {}).get("metadata", {}).get("annotations") or {}
        return bool(obj) and annotations.get(EXTERNAL_ID) == obj["status"].get("id")  # type: ignore[index]

    obj = await kube_env.kube.wait_for(kind.plural, "made", recorded, timeout=5)
    assert obj is not None
    assert "aigw.dev/create-pending" not in (obj["metadata"].get("annotations") or {})
    # The restore: the same object, its status gone (a restore tool creates it anew). Let go of
    # the first one without touching upstream, as a cluster that is rebuilt does.
    response = await kube_env.kube.patch_spec(kind.plural, "made", {"deletionPolicy": "Orphan"})
    assert response.status_code == 200, response.text
    await kube_env.kube.delete(kind.plural, "made")
    await kube_env.kube.wait_gone(kind.plural, "made")
    sim.reset_counts()
    restored = kind.make(deletionPolicy="Delete")
    await kube_env.kube.create(kind.kind, kind.plural, "made", restored, annotations={EXTERNAL_ID: obj["status"]["id"]})
    again = await kube_env.kube.wait_condition(kind.plural, "made", "Ready", "True", timeout=20)
    assert again["status"]["id"] == obj["status"]["id"]
    assert [w for w in writes(sim) if w.startswith("POST")] == [], "no second upstream object"
