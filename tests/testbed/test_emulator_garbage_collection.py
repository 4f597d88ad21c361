"""The emulator's garbage collector: what a real API server's does with ownerReferences once an
owner is deleted, by propagationPolicy (Background, the default; Foreground; Orphan)."""

from __future__ import annotations

from typing import Any

import httpx

from aigw_testbed.emulator.server import KubeEmulator
from tests.testbed.test_kube_emulator import MERGE, WIDGETS, client, crd, emulator, server, widget  # noqa: F401

CONFIGMAPS = "/api/v1/namespaces/default/configmaps"


async def _owner(client: httpx.AsyncClient, name: str = "w1", finalizers: list[str] | None = None) -> dict[str, Any]:
    body = widget(name)
    if finalizers:
        body["metadata"]["finalizers"] = finalizers
    response = await client.post(WIDGETS, json=body)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def _ref(owner: dict[str, Any], *, block: bool = False) -> dict[str, Any]:
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
        **({"blockOwnerDeletion": True} if block else {}),
    }


async def _dependent(client: httpx.AsyncClient, name: str, *owners: dict[str, Any], **extra: Any) -> None:
    metadata = {"name": name, "ownerReferences": list(owners), **extra}
    response = await client.post(CONFIGMAPS, json={"metadata": metadata, "data": {"K": "v"}})
    assert response.status_code == 201, response.text


async def _exists(client: httpx.AsyncClient, path: str) -> bool:
    response = await client.get(path)
    if response.status_code == 404:
        return False
    response.raise_for_status()
    return True


async def test_background_deletion_removes_dependents_once_the_owner_is_gone(
    client: httpx.AsyncClient,
    crd: Any,  # noqa: F811
) -> None:
    owner = await _owner(client, finalizers=["a/b"])
    other = await _owner(client, "w2")
    await _dependent(client, "only-w1", _ref(owner))
    await _dependent(client, "both", {**_ref(owner), "controller": False}, {**_ref(other), "controller": False})
    await _dependent(client, "unrelated")
    assert (await client.delete(f"{WIDGETS}/w1")).status_code == 200
    # Terminating, its finalizer still there: the owner exists, so its dependents stay.
    assert await _exists(client, f"{CONFIGMAPS}/only-w1")
    await client.patch(f"{WIDGETS}/w1", headers=MERGE, json={"metadata": {"finalizers": None}})
    assert not await _exists(client, f"{WIDGETS}/w1")
    assert not await _exists(client, f"{CONFIGMAPS}/only-w1")
    # A dependent with a live owner stays, without the reference to the one that went.
    both = (await client.get(f"{CONFIGMAPS}/both")).json()
    assert [r["uid"] for r in both["metadata"]["ownerReferences"]] == [other["metadata"]["uid"]]
    assert await _exists(client, f"{CONFIGMAPS}/unrelated")


async def test_a_dependent_in_another_namespace_is_not_collected(
    client: httpx.AsyncClient,
    crd: Any,  # noqa: F811
) -> None:
    owner = await _owner(client)
    await client.post("/api/v1/namespaces", json={"metadata": {"name": "elsewhere"}})
    response = await client.post(
        "/api/v1/namespaces/elsewhere/configmaps", json={"metadata": {"name": "cm", "ownerReferences": [_ref(owner)]}}
    )
    assert response.status_code == 201
    assert (await client.delete(f"{WIDGETS}/w1")).status_code == 200
    # A namespaced owner cannot own objects in another namespace: the GC leaves it.
    assert await _exists(client, "/api/v1/namespaces/elsewhere/configmaps/cm")


async def test_orphan_propagation_keeps_the_dependents_without_the_reference(
    client: httpx.AsyncClient,
    crd: Any,  # noqa: F811
) -> None:
    owner = await _owner(client)
    await _dependent(client, "cm", _ref(owner))
    response = await client.request(
        "DELETE", f"{WIDGETS}/w1", json={"kind": "DeleteOptions", "propagationPolicy": "Orphan"}
    )
    assert response.status_code == 200
    assert not await _exists(client, f"{WIDGETS}/w1")
    cm = (await client.get(f"{CONFIGMAPS}/cm")).json()
    assert "ownerReferences" not in cm["metadata"]


async def test_foreground_propagation_waits_for_blocking_dependents(
    client: httpx.AsyncClient,
    crd: Any,  # noqa: F811
) -> None:
    owner = await _owner(client)
    # A blocking dependent that has a finalizer of its own holds the owner.
    await _dependent(client, "blocking", _ref(owner, block=True), finalizers=["x/y"])
    await _dependent(client, "loose", _ref(owner))
    response = await client.delete(f"{WIDGETS}/w1", params={"propagationPolicy": "Foreground"})
    assert response.status_code == 200
    held = (await client.get(f"{WIDGETS}/w1")).json()
    assert held["metadata"]["deletionTimestamp"] and held["metadata"]["finalizers"] == ["foregroundDeletion"]
    assert not await _exists(client, f"{CONFIGMAPS}/loose")
    blocking = (await client.get(f"{CONFIGMAPS}/blocking")).json()
    assert blocking["metadata"]["deletionTimestamp"]
    await client.patch(f"{CONFIGMAPS}/blocking", headers=MERGE, json={"metadata": {"finalizers": None}})
    assert not await _exists(client, f"{CONFIGMAPS}/blocking")
    assert not await _exists(client, f"{WIDGETS}/w1")


async def test_foreground_without_dependents_deletes_at_once_and_bad_policies_are_refused(
    client: httpx.AsyncClient,
    crd: Any,  # noqa: F811
    emulator: KubeEmulator,  # noqa: F811
) -> None:
    await _owner(client)
    bad = await client.delete(f"{WIDGETS}/w1", params={"propagationPolicy": "Sideways"})
    assert bad.status_code == 422 and "propagationPolicy" in bad.json()["message"]
    response = await client.request("DELETE", f"{WIDGETS}/w1", json={"propagationPolicy": "Foreground"})
    assert response.status_code == 200
    assert not await _exists(client, f"{WIDGETS}/w1")
    assert emulator.list_objects("", "configmaps", "default") == []
