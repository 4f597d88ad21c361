"""The Kubernetes API emulator, over real HTTP on loopback, plus the real kopf operator against it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import pathlib
import shutil
from collections.abc import AsyncIterator
from typing import Any

import httpx
import kopf
import pytest
import yaml

from aigw_testbed.emulator.admission import FieldError, Invalid, admit
from aigw_testbed.emulator.server import (
    KubeEmulator,
    KubeEmulatorServer,
    human_duration,
    jsonpath_find,
)

GROUP = "test.aigw.dev"
WIDGETS = f"/apis/{GROUP}/v1/namespaces/default/widgets"
MERGE = {"Content-Type": "application/merge-patch+json"}
JSONPATCH = {"Content-Type": "application/json-patch+json"}
CRDS = pathlib.Path(__file__).parents[2] / "deploy" / "crds"


def widget_crd(*, status: bool = True, versions: tuple[str, ...] = ("v1",)) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "plural": "widgets",
                "singular": "widget",
                "kind": "Widget",
                "shortNames": ["wdg"],
                "categories": ["aigw"],
            },
            "versions": [
                {
                    "name": v,
                    "served": True,
                    "storage": i == 0,
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
                    **({"subresources": {"status": {}}} if status else {}),
                }
                for i, v in enumerate(versions)
            ],
        },
    }


def widget(name: str = "w1", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/v1", "kind": "Widget", "metadata": {"name": name}, "spec": spec or {"size": 1}}


@pytest.fixture
async def server() -> AsyncIterator[KubeEmulatorServer]:
    async with KubeEmulatorServer(host="127.0.0.1", port=0) as srv:
        yield srv


@pytest.fixture
def emulator(server: KubeEmulatorServer) -> KubeEmulator:
    return server.emulator


@pytest.fixture
async def client(server: KubeEmulatorServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=5) as c:
        yield c


@pytest.fixture
def crd(emulator: KubeEmulator) -> dict[str, Any]:
    return emulator.register_crd(widget_crd())


def rv(obj: dict[str, Any]) -> int:
    return int(obj["metadata"]["resourceVersion"])


async def read_events(client: httpx.AsyncClient, url: str, params: dict[str, str], count: int) -> list[Any]:
    """Read ``count`` watch events (or fewer if the server ends the stream)."""
    events: list[Any] = []
    async with client.stream("GET", url, params={"watch": "true", **params}) as rsp:
        assert rsp.status_code == 200
        async for line in rsp.aiter_lines():
            if line.strip():
                events.append(json.loads(line))
            if len(events) >= count:
                break
    return events


async def test_discovery_lists_builtins_and_default_namespaces(client: httpx.AsyncClient) -> None:
    core = (await client.get("/api/v1")).json()
    by_name = {r["name"]: r for r in core["resources"]}
    assert by_name["namespaces"]["namespaced"] is False
    assert {"secrets", "configmaps", "events", "serviceaccounts", "namespaces/status"} <= set(by_name)
    groups = {g["name"] for g in (await client.get("/apis")).json()["groups"]}
    assert {"apiextensions.k8s.io", "coordination.k8s.io", "events.k8s.io"} <= groups
    crds = (await client.get("/apis/apiextensions.k8s.io/v1")).json()["resources"]
    assert crds[0]["name"] == "customresourcedefinitions" and crds[0]["namespaced"] is False
    names = [ns["metadata"]["name"] for ns in (await client.get("/api/v1/namespaces")).json()["items"]]
    assert names == ["default", "kube-system"]
    assert (await client.get("/apis/nope.dev/v1/things")).status_code == 404


async def test_crd_post_registers_resource_and_is_established(client: httpx.AsyncClient) -> None:
    rsp = await client.post(
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=widget_crd(versions=("v1", "v1beta1"))
    )
    assert rsp.status_code == 201
    conditions = {c["type"]: c["status"] for c in rsp.json()["status"]["conditions"]}
    assert conditions == {"Established": "True", "NamesAccepted": "True"}
    group = (await client.get(f"/apis/{GROUP}")).json()
    assert group["preferredVersion"]["version"] == "v1"
    assert [v["version"] for v in group["versions"]] == ["v1", "v1beta1"]
    resources = {r["name"]: r for r in (await client.get(f"/apis/{GROUP}/v1beta1")).json()["resources"]}
    assert resources["widgets"]["kind"] == "Widget" and resources["widgets"]["shortNames"] == ["wdg"]
    assert resources["widgets"]["categories"] == ["aigw"] and resources["widgets"]["namespaced"] is True
    assert "widgets/status" in resources

    # The same object is served through both versions.
    assert (await client.post(WIDGETS, json=widget())).status_code == 201
    other = await client.get(f"/apis/{GROUP}/v1beta1/namespaces/default/widgets/w1")
    assert other.json()["apiVersion"] == f"{GROUP}/v1beta1"

    # Replacing the CRD updates the registration: drop v1beta1 and the status subresource.
    current = (await client.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.{GROUP}")).json()
    current["spec"] = widget_crd(status=False)["spec"]
    rsp = await client.put(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.{GROUP}", json=current)
    assert rsp.status_code == 200 and rsp.json()["metadata"]["generation"] == 2
    assert (await client.get(f"/apis/{GROUP}/v1beta1")).status_code == 404
    assert "widgets/status" not in {r["name"] for r in (await client.get(f"/apis/{GROUP}/v1")).json()["resources"]}


async def test_bad_crd_is_refused(client: httpx.AsyncClient) -> None:
    bad = widget_crd()
    bad["metadata"]["name"] = "wrong"
    rsp = await client.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=bad)
    assert rsp.status_code == 422 and rsp.json()["reason"] == "Invalid"


async def test_create_metadata_generate_name_and_conflicts(client: httpx.AsyncClient, crd: Any) -> None:
    body = widget()
    body["status"] = {"ignored": True}
    created = (await client.post(WIDGETS, json=body)).json()
    meta = created["metadata"]
    assert meta["namespace"] == "default" and meta["generation"] == 1 and meta["uid"]
    assert meta["creationTimestamp"].endswith("Z") and "status" not in created
    assert (await client.post(WIDGETS, json=widget())).json()["reason"] == "AlreadyExists"
    generated = await client.post(WIDGETS, json={"metadata": {"generateName": "w-"}, "spec": {}})
    assert generated.status_code == 201 and generated.json()["metadata"]["name"].startswith("w-")
    missing_ns = await client.post(f"/apis/{GROUP}/v1/namespaces/nowhere/widgets", json=widget())
    assert missing_ns.status_code == 404


async def test_generation_and_resource_version_semantics(client: httpx.AsyncClient, crd: Any) -> None:
    created = (await client.post(WIDGETS, json=widget())).json()
    labelled = (await client.patch(f"{WIDGETS}/w1", headers=MERGE, json={"metadata": {"labels": {"a": "b"}}})).json()
    assert rv(labelled) > rv(created) and labelled["metadata"]["generation"] == 1
    spec = (await client.patch(f"{WIDGETS}/w1", headers=MERGE, json={"spec": {"size": 2}})).json()
    assert rv(spec) > rv(labelled) and spec["metadata"]["generation"] == 2
    status = (await client.patch(f"{WIDGETS}/w1/status", headers=MERGE, json={"status": {"ok": True}})).json()
    assert rv(status) > rv(spec) and status["metadata"]["generation"] == 2
    finalized = (await client.patch(f"{WIDGETS}/w1", headers=MERGE, json={"metadata": {"finalizers": ["x/y"]}})).json()
    assert rv(finalized) > rv(status) and finalized["metadata"]["generation"] == 2
    listing = (await client.get(WIDGETS)).json()
    assert listing["metadata"]["resourceVersion"] == finalized["metadata"]["resourceVersion"]
    assert listing["kind"] == "WidgetList"

    # PUT with a stale resourceVersion conflicts; with the current one it succeeds.
    stale = dict(created, spec={"size": 9})
    assert (await client.put(f"{WIDGETS}/w1", json=stale)).status_code == 409
    fresh = dict(finalized, spec={"size": 9})
    replaced = await client.put(f"{WIDGETS}/w1", json=fresh)
    assert replaced.status_code == 200 and replaced.json()["metadata"]["generation"] == 3
    assert replaced.json()["status"] == {"ok": True}  # PUT of the main resource keeps the status

    # A merge patch with a stale resourceVersion in its metadata conflicts too.
    stale_patch = {"metadata": {"resourceVersion": created["metadata"]["resourceVersion"]}, "spec": {"size": 1}}
    assert (await client.patch(f"{WIDGETS}/w1", headers=MERGE, json=stale_patch)).status_code == 409


async def test_status_subresource_isolation(client: httpx.AsyncClient, crd: Any) -> None:
    await client.post(WIDGETS, json=widget())
    main = (await client.patch(f"{WIDGETS}/w1", headers=MERGE, json={"status": {"x": 1}, "spec": {"size": 5}})).json()
    assert "status" not in main and main["spec"] == {"size": 5}
    status = await client.patch(
        f"{WIDGETS}/w1/status",
        headers=MERGE,
        json={"status": {"x": 2}, "spec": {"size": 7}, "metadata": {"labels": {"l": "v"}}},
    )
    body = status.json()
    assert body["status"] == {"x": 2} and body["spec"] == {"size": 5} and "labels" not in body["metadata"]
    assert (await client.get(f"{WIDGETS}/w1/status")).json()["status"] == {"x": 2}


async def test_without_status_subresource_status_is_spec_like(
    client: httpx.AsyncClient, emulator: KubeEmulator
) -> None:
    emulator.register_crd(widget_crd(status=False))
    await client.post(WIDGETS, json=widget())
    patched = (await client.patch(f"{WIDGETS}/w1", headers=MERGE, json={"status": {"x": 1}})).json()
    assert patched["status"] == {"x": 1} and patched["metadata"]["generation"] == 2
    assert (await client.get(f"{WIDGETS}/w1/status")).status_code == 404


async def test_merge_patch_null_removes_and_lists_replace(client: httpx.AsyncClient, crd: Any) -> None:
    await client.post(WIDGETS, json=widget(a=1, b=2, items=[1, 2, 3]))
    patched = (
        await client.patch(f"{WIDGETS}/w1", headers=MERGE, json={"spec": {"a": None, "items": [9], "c": {"d": 1}}})
    ).json()
    assert patched["spec"] == {"b": 2, "items": [9], "c": {"d": 1}}


async def test_json_patch_with_test_op(client: httpx.AsyncClient, crd: Any) -> None:
    created = (await client.post(WIDGETS, json=widget())).json()
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": created["metadata"]["resourceVersion"]},
        {"op": "add", "path": "/metadata/finalizers", "value": ["a/b"]},
    ]
    ok = await client.patch(f"{WIDGETS}/w1", headers=JSONPATCH, json=ops)
    assert ok.status_code == 200 and ok.json()["metadata"]["finalizers"] == ["a/b"]

    failed = await client.patch(f"{WIDGETS}/w1", headers=JSONPATCH, json=ops)  # the rv is stale now
    assert failed.status_code == 422
    assert failed.json()["kind"] == "Status" and failed.json()["reason"] == "Invalid"
    bad_path = await client.patch(
        f"{WIDGETS}/w1", headers=JSONPATCH, json=[{"op": "remove", "path": "/spec/nonexistent"}]
    )
    assert bad_path.status_code == 422

    status_ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": ok.json()["metadata"]["resourceVersion"]},
        {"op": "add", "path": "/status", "value": {"done": True}},
    ]
    status = await client.patch(f"{WIDGETS}/w1/status", headers=JSONPATCH, json=status_ops)
    assert status.status_code == 200 and status.json()["status"] == {"done": True}
    strategic = await client.patch(
        f"{WIDGETS}/w1", json={"spec": {}}, headers={"Content-Type": "application/strategic-merge-patch+json"}
    )
    assert strategic.status_code == 415  # as for custom resources in a real cluster


async def test_noop_patch_does_not_bump_or_emit(client: httpx.AsyncClient, emulator: KubeEmulator, crd: Any) -> None:
    created = (await client.post(WIDGETS, json=widget(size=1))).json()
    before = emulator.resource_version
    same = (await client.patch(f"{WIDGETS}/w1", headers=MERGE, json={"spec": {"size": 1}})).json()
    assert same["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]
    assert emulator.resource_version == before
    events = await read_events(client, WIDGETS, {"resourceVersion": str(rv(created)), "timeoutSeconds": "0.3"}, 5)
    assert events == []


async def test_finalizers_and_deletion(client: httpx.AsyncClient, crd: Any) -> None:
    created = (await client.post(WIDGETS, json={**widget(), "metadata": {"name": "w1", "finalizers": ["a/b"]}})).json()
    deleting = await client.delete(f"{WIDGETS}/w1")
    assert deleting.status_code == 200
    meta = deleting.json()["metadata"]
    assert meta["deletionTimestamp"] and meta["deletionGracePeriodSeconds"] == 0 and meta["generation"] == 2
    assert (await client.get(f"{WIDGETS}/w1")).status_code == 200

    refused = await client.patch(f"{WIDGETS}/w1", headers=MERGE, json={"metadata": {"finalizers": ["a/b", "c/d"]}})
    assert refused.status_code == 422 and refused.json()["details"]["causes"][0]["field"] == "metadata.finalizers"

    released = await client.patch(f"{WIDGETS}/w1", headers=MERGE, json={"metadata": {"finalizers": None}})
    assert released.status_code == 200
    assert (await client.get(f"{WIDGETS}/w1")).status_code == 404

    events = await read_events(client, WIDGETS, {"resourceVersion": str(rv(created))}, 3)
    assert [e["type"] for e in events] == ["MODIFIED", "MODIFIED", "DELETED"]
    assert [rv(e["object"]) for e in events] == sorted(rv(e["object"]) for e in events)

    # Without finalizers, the object goes at once.
    await client.post(WIDGETS, json=widget("w2"))
    assert (await client.delete(f"{WIDGETS}/w2")).status_code == 200
    assert (await client.get(f"{WIDGETS}/w2")).status_code == 404


async def test_label_and_field_selectors(client: httpx.AsyncClient, crd: Any) -> None:
    for name, labels in [("a", {"env": "prod", "tier": "web"}), ("b", {"env": "dev"}), ("c", {})]:
        await client.post(WIDGETS, json={**widget(name), "metadata": {"name": name, "labels": labels}})

    async def names(**params: str) -> list[str]:
        return [o["metadata"]["name"] for o in (await client.get(WIDGETS, params=params)).json()["items"]]

    assert await names(labelSelector="env=prod") == ["a"]
    assert await names(labelSelector="env==prod") == ["a"]
    assert await names(labelSelector="env!=prod") == ["b", "c"]
    assert await names(labelSelector="env") == ["a", "b"]
    assert await names(labelSelector="!env") == ["c"]
    assert await names(labelSelector="env in (dev, prod)") == ["a", "b"]
    assert await names(labelSelector="env notin (dev)") == ["a", "c"]
    assert await names(labelSelector="env in (prod,dev),tier") == ["a"]
    assert await names(fieldSelector="metadata.name=b") == ["b"]
    assert await names(fieldSelector="metadata.name!=b,metadata.namespace=default") == ["a", "c"]
    assert (await client.get(WIDGETS, params={"fieldSelector": "spec.size=1"})).status_code == 400
    cluster_wide = await client.get(f"/apis/{GROUP}/v1/widgets", params={"labelSelector": "env"})
    assert len(cluster_wide.json()["items"]) == 2

    # Watches honour selectors, and moving out of a selector is seen as DELETED.
    start = (await client.get(WIDGETS)).json()["metadata"]["resourceVersion"]
    await client.patch(f"{WIDGETS}/b", headers=MERGE, json={"spec": {"size": 3}})
    await client.patch(f"{WIDGETS}/a", headers=MERGE, json={"metadata": {"labels": {"env": "dev"}}})
    events = await read_events(client, WIDGETS, {"resourceVersion": start, "labelSelector": "env=prod"}, 1)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("DELETED", "a")]


async def test_watch_initial_and_from_resource_version(client: httpx.AsyncClient, crd: Any) -> None:
    first = (await client.post(WIDGETS, json=widget("w1"))).json()
    await client.post(WIDGETS, json=widget("w2"))

    initial = await read_events(client, WIDGETS, {}, 2)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in initial] == [("ADDED", "w1"), ("ADDED", "w2")]
    streamed = await read_events(client, WIDGETS, {"sendInitialEvents": "true"}, 3)
    assert streamed[-1]["type"] == "BOOKMARK"
    assert streamed[-1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}

    resumed = await read_events(client, WIDGETS, {"resourceVersion": str(rv(first))}, 1)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in resumed] == [("ADDED", "w2")]

    async def live() -> list[Any]:
        return await read_events(client, WIDGETS, {"resourceVersion": str(rv(first) + 1)}, 2)

    task = asyncio.create_task(live())
    await asyncio.sleep(0.1)
    await client.patch(f"{WIDGETS}/w1", headers=MERGE, json={"spec": {"size": 42}})
    await client.delete(f"{WIDGETS}/w2")
    events = await asyncio.wait_for(task, 5)
    assert [e["type"] for e in events] == ["MODIFIED", "DELETED"]
    assert events[0]["object"]["spec"] == {"size": 42}

    # timeoutSeconds ends the stream.
    ended = await asyncio.wait_for(
        read_events(client, WIDGETS, {"resourceVersion": "999999", "timeoutSeconds": "0.2"}, 1), 3
    )
    assert ended == []


async def test_watch_from_too_old_resource_version_is_gone(server: KubeEmulatorServer) -> None:
    server.emulator.history_limit = 3
    async with httpx.AsyncClient(base_url=server.url) as client:
        await client.post("/api/v1/namespaces/default/configmaps", json={"metadata": {"name": "cm0"}})
        for i in range(5):
            await client.patch("/api/v1/namespaces/default/configmaps/cm0", headers=MERGE, json={"data": {"i": str(i)}})
        events = await read_events(client, "/api/v1/namespaces/default/configmaps", {"resourceVersion": "1"}, 1)
    assert events[0]["type"] == "ERROR"
    assert events[0]["object"]["code"] == 410 and events[0]["object"]["reason"] == "Expired"


async def test_admission_hook_defaults_and_refuses(client: httpx.AsyncClient, emulator: KubeEmulator) -> None:
    emulator.register_crd(widget_crd())
    seen: list[tuple[str, bool]] = []

    def admit(crd: dict[str, Any], obj: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
        seen.append((crd["metadata"]["name"], old is not None))
        if obj.get("spec", {}).get("size", 0) < 0:
            raise Invalid(
                kind="Widget",
                name=obj["metadata"]["name"],
                causes=[
                    FieldError(field="spec.size", message="Invalid value: -1: must be >= 0"),
                    FieldError(field="spec.name", message="Required value", reason="FieldValueRequired"),
                ],
            )
        obj.setdefault("spec", {}).setdefault("color", "blue")
        return obj

    emulator.admission = admit
    created = await client.post(WIDGETS, json=widget(size=1))
    assert created.json()["spec"] == {"size": 1, "color": "blue"}
    refused = await client.patch(f"{WIDGETS}/w1", headers=MERGE, json={"spec": {"size": -1}})
    assert refused.status_code == 422
    body = refused.json()
    assert body["kind"] == "Status" and body["status"] == "Failure" and body["reason"] == "Invalid"
    assert body["code"] == 422
    assert body["message"] == (
        f'Widget.{GROUP} "w1" is invalid: [spec.size: Invalid value: -1: must be >= 0, spec.name: Required value]'
    )
    assert body["details"]["name"] == "w1" and body["details"]["group"] == GROUP
    assert body["details"]["kind"] == "Widget"
    assert body["details"]["causes"][1] == {
        "reason": "FieldValueRequired",
        "message": "Required value",
        "field": "spec.name",
    }
    assert (await client.get(f"{WIDGETS}/w1")).json()["spec"]["size"] == 1
    assert seen == [(f"widgets.{GROUP}", False), (f"widgets.{GROUP}", True)]


async def test_counters_events_and_bounded_request_log(
    client: httpx.AsyncClient, emulator: KubeEmulator, crd: Any
) -> None:
    emulator.request_log_limit = 5
    await client.post(WIDGETS, json=widget())
    await client.patch(f"{WIDGETS}/w1/status", headers=MERGE, json={"status": {"a": 1}})
    await client.get(f"{WIDGETS}/w1")
    await client.get(WIDGETS)
    assert emulator.writes(plural="widgets") == 2
    assert emulator.writes(plural="widgets", subresource=None) == 1
    assert emulator.writes(plural="widgets", subresource="status") == 1
    assert emulator.reads(plural="widgets") == 2
    snapshot = emulator.counters()
    assert snapshot[("get", "widgets", None)] == 1
    emulator.reset_counters()
    assert emulator.writes() == 0

    await client.post("/api/v1/namespaces/default/events", json={"metadata": {"generateName": "e-"}, "reason": "R"})
    await client.post(
        "/apis/events.k8s.io/v1/namespaces/default/events", json={"metadata": {"name": "e2"}, "reason": "S"}
    )
    assert [e["reason"] for e in emulator.posted_events] == ["R", "S"]

    for _ in range(20):
        await client.get("/api/v1/namespaces")
    assert len(list(emulator)) <= 2 * emulator.request_log_limit


async def test_secret_string_data_and_core_namespace_status(client: httpx.AsyncClient) -> None:
    rsp = await client.post(
        "/api/v1/namespaces/default/secrets", json={"metadata": {"name": "s"}, "stringData": {"key": "val"}}
    )
    assert rsp.json()["data"] == {"key": "dmFs"} and "stringData" not in rsp.json()
    ns = (await client.get("/api/v1/namespaces/default")).json()
    assert ns["status"] == {"phase": "Active"}


async def test_kopf_operator_end_to_end(server: KubeEmulatorServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    registry = kopf.OperatorRegistry()
    created: list[str] = []
    deleted: list[str] = []

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=server.url, insecure=True)

    @kopf.on.create(GROUP, "v1", "widgets", id="on_create", registry=registry)
    def on_create(name: str | None, body: kopf.Body, **_: Any) -> dict[str, Any]:
        created.append(name or "")
        kopf.info(body, reason="Widgeted", message="hello from on_create")
        return {"message": "hello"}

    @kopf.on.delete(GROUP, "v1", "widgets", id="on_delete", registry=registry)
    def on_delete(name: str | None, **_: Any) -> None:
        deleted.append(name or "")

    settings = kopf.OperatorSettings()
    settings.peering.standalone = True
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.batching.idle_timeout = 0.2
    settings.batching.exit_timeout = 0.5
    settings.watching.inactivity_timeout = 5

    stop_flag: asyncio.Event = asyncio.Event()
    ready_flag: asyncio.Event = asyncio.Event()
    operator = asyncio.create_task(
        kopf.operator(
            registry=registry, settings=settings, clusterwide=True, stop_flag=stop_flag, ready_flag=ready_flag
        )
    )

    async def until(predicate: Any, seconds: float = 10) -> Any:
        for _ in range(int(seconds / 0.05)):
            if result := await predicate():
                return result
            await asyncio.sleep(0.05)
        raise AssertionError(f"not reached in {seconds}s: {predicate.__name__}")

    try:
        await asyncio.wait_for(ready_flag.wait(), 10)
        async with httpx.AsyncClient(base_url=server.url, timeout=5) as client:
            # The CRD appears only after the operator started: kopf must notice it via its CRD watch.
            # (Posting it before kopf lists CRDs would hit kopf's own scan-then-list race, as in a cluster.)
            async def crds_watched() -> bool:
                return server.emulator.requests_count(frozenset({"watch"}), "customresourcedefinitions") > 0

            await until(crds_watched)
            crd_rsp = await client.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=widget_crd())
            assert crd_rsp.status_code == 201

            async def watched() -> bool:
                return server.emulator.reads(plural="widgets") > 0

            await until(watched)
            assert (await client.post(WIDGETS, json=widget("w1"))).status_code == 201

            async def handled() -> dict[str, Any] | None:
                obj: dict[str, Any] = (await client.get(f"{WIDGETS}/w1")).json()
                done = obj.get("status", {}).get("on_create") == {"message": "hello"}
                return obj if done and f"{GROUP}/finalizer" in obj["metadata"].get("finalizers", []) else None

            obj = await until(handled)
            assert created == ["w1"]
            assert obj["metadata"]["generation"] == 1
            assert server.emulator.writes(plural="widgets", subresource="status") >= 1

            assert (await client.delete(f"{WIDGETS}/w1")).status_code == 200

            async def gone() -> bool:
                return (await client.get(f"{WIDGETS}/w1")).status_code == 404

            await until(gone)
            assert deleted == ["w1"]

            async def posted() -> bool:
                return any(
                    e.get("reason") == "Widgeted" and e["involvedObject"]["name"] == "w1"
                    for e in server.emulator.posted_events
                )

            await until(posted)
    finally:
        stop_flag.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(operator, 15)

    async def unwatched() -> bool:
        return server.emulator.open_watches == 0

    await until(unwatched)

    messages = "\n".join(record.getMessage() for record in caplog.records)
    assert "Patching failed with inconsistencies" not in messages
    assert "JsonPatchTestFailed" not in messages
    assert "Could not apply the patch in full" not in messages


async def test_dry_run_changes_nothing(client: httpx.AsyncClient, emulator: KubeEmulator, crd: Any) -> None:
    before = emulator.resource_version
    rsp = await client.post(WIDGETS, params={"dryRun": "All"}, json=widget())
    assert rsp.status_code == 201 and rsp.json()["metadata"]["name"] == "w1"
    assert (await client.get(f"{WIDGETS}/w1")).status_code == 404
    assert emulator.resource_version == before


async def test_deleting_the_crd_removes_its_objects_and_resource(client: httpx.AsyncClient, crd: Any) -> None:
    created = (await client.post(WIDGETS, json=widget())).json()
    rsp = await client.delete(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.{GROUP}")
    assert rsp.status_code == 200
    assert (await client.get(WIDGETS)).status_code == 404
    assert (await client.get(f"/apis/{GROUP}")).status_code == 404
    assert GROUP not in {g["name"] for g in (await client.get("/apis")).json()["groups"]}
    crds = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    events = await read_events(client, crds, {"resourceVersion": created["metadata"]["resourceVersion"]}, 1)
    assert events[0]["type"] == "DELETED"


async def test_user_reactions_take_precedence(client: httpx.AsyncClient, emulator: KubeEmulator, crd: Any) -> None:
    await client.post(WIDGETS, json=widget())
    emulator["get", f"{WIDGETS}/w1"] << 503
    assert (await client.get(f"{WIDGETS}/w1")).status_code == 503
    assert (await client.get(WIDGETS)).status_code == 200


# --- fieldValidation and structural pruning ----------------------------------------------------------

WIDGET_COLUMNS = [
    {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
    {"name": "Label", "type": "string", "jsonPath": ".spec.name", "description": "the label"},
    {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
    {"name": "First", "type": "string", "jsonPath": ".spec.items[0]", "priority": 1},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def structural_widget_crd() -> dict[str, Any]:
    """The widget CRD with a structural schema (no preserve-unknown-fields) and printer columns."""
    crd = widget_crd()
    version = crd["spec"]["versions"][0]
    version["schema"] = {
        "openAPIV3Schema": {
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "properties": {
                        "size": {"type": "integer"},
                        "name": {"type": "string"},
                        "items": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            },
        }
    }
    version["additionalPrinterColumns"] = WIDGET_COLUMNS
    return crd


@pytest.fixture
def structural(emulator: KubeEmulator) -> dict[str, Any]:
    return emulator.register_crd(structural_widget_crd())


STRICT = {"fieldValidation": "Strict"}


async def test_strict_field_validation_refuses_unknown_fields_with_400(
    client: httpx.AsyncClient, emulator: KubeEmulator, structural: Any
) -> None:
    before = emulator.resource_version
    body = widget(size=1, x=2, a=3)
    body["metadata"]["bogus"] = True
    rsp = await client.post(WIDGETS, json=body, params=STRICT)
    assert rsp.status_code == 400, rsp.text
    assert rsp.json() == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'Widget in version "v1" cannot be handled as a Widget: strict decoding error: '
        'unknown field "metadata.bogus", unknown field "spec.a", unknown field "spec.x"',
        "reason": "BadRequest",
        "code": 400,
    }
    assert emulator.resource_version == before and (await client.get(f"{WIDGETS}/w1")).status_code == 404

    created = (await client.post(WIDGETS, json=widget(size=1), params=STRICT)).json()
    # A patch's result is decoded too; the message is the bare decoding error there.
    merge = await client.patch(f"{WIDGETS}/w1", headers=MERGE, json={"spec": {"y": 1}}, params=STRICT)
    assert merge.status_code == 400
    assert merge.json()["message"] == 'strict decoding error: unknown field "spec.y"'
    json_patch = await client.patch(
        f"{WIDGETS}/w1", headers=JSONPATCH, json=[{"op": "add", "path": "/spec/z", "value": 1}], params=STRICT
    )
    assert json_patch.status_code == 400 and 'unknown field "spec.z"' in json_patch.json()["message"]
    put = await client.put(f"{WIDGETS}/w1", json={**created, "spec": {"size": 1, "q": 1}}, params=STRICT)
    assert put.status_code == 400
    assert put.json()["message"].startswith('Widget in version "v1" cannot be handled as a Widget: strict decoding')
    status = await client.patch(f"{WIDGETS}/w1/status", headers=MERGE, json={"spec": {"s": 1}}, params=STRICT)
    assert status.status_code == 400, "the status subresource decodes the whole body too"
    assert (await client.get(f"{WIDGETS}/w1")).json()["metadata"]["resourceVersion"] == created["metadata"][
        "resourceVersion"
    ]


async def test_warn_and_ignore_prune_unknown_fields(client: httpx.AsyncClient, structural: Any) -> None:
    # No fieldValidation (what kopf sends) means Warn: admitted, pruned, one Warning per field.
    warned = await client.post(WIDGETS, json=widget(size=1, x=2, a=3))
    assert warned.status_code == 201 and warned.json()["spec"] == {"size": 1}
    assert warned.headers.get_list("Warning") == [
        '299 - "unknown field \\"spec.a\\""',
        '299 - "unknown field \\"spec.x\\""',
    ]
    assert (await client.get(f"{WIDGETS}/w1")).json()["spec"] == {"size": 1}
    patched = await client.patch(f"{WIDGETS}/w1", headers=MERGE, json={"spec": {"size": 2, "y": 1}})
    assert patched.json()["spec"] == {"size": 2} and patched.headers.get_list("Warning") == [
        '299 - "unknown field \\"spec.y\\""'
    ]
    explicit = await client.patch(
        f"{WIDGETS}/w1", headers=MERGE, json={"spec": {"y": 1}}, params={"fieldValidation": "Warn"}
    )
    assert explicit.status_code == 200 and len(explicit.headers.get_list("Warning")) == 1

    ignored = await client.post(WIDGETS, json=widget("w2", size=1, x=2), params={"fieldValidation": "Ignore"})
    assert ignored.status_code == 201 and ignored.json()["spec"] == {"size": 1}
    assert "Warning" not in ignored.headers
    clean = await client.post(WIDGETS, json=widget("w3", size=1))
    assert clean.status_code == 201 and "Warning" not in clean.headers

    bogus = await client.post(WIDGETS, json=widget("w4"), params={"fieldValidation": "strict"})
    assert bogus.status_code == 422 and bogus.json()["reason"] == "Invalid"
    assert bogus.json()["message"] == (
        'CreateOptions.meta.k8s.io "" is invalid: fieldValidation: Unsupported value: "strict": '
        'supported values: "", "Ignore", "Strict", "Warn"'
    )


async def test_wrong_shapes_are_decoding_errors_only_when_pruning_finds_a_key(
    client: httpx.AsyncClient, emulator: KubeEmulator, structural: Any
) -> None:
    emulator.admission = admit
    # An object with keys where a scalar is declared, or objects in a list there: 400 under Strict.
    for spec, path in [
        ({"name": {"a": 1}}, "spec.name.a"),
        ({"name": [{"a": 1}]}, "spec.name[0].a"),
        ({"items": {"k": "v"}}, "spec.items.k"),
    ]:
        rsp = await client.post(WIDGETS, json={**widget(), "spec": spec}, params=STRICT)
        assert rsp.status_code == 400, (spec, rsp.text)
        assert rsp.json()["message"].endswith(f'strict decoding error: unknown field "{path}"')
    # Nothing to prune (a list of scalars, an empty object, a scalar where a list is declared):
    # the schema validation refuses it, 422 Invalid.
    for spec, path in [({"name": ["a"]}, "spec.name"), ({"name": {}}, "spec.name"), ({"items": "a"}, "spec.items")]:
        rsp = await client.post(WIDGETS, json={**widget(), "spec": spec}, params=STRICT)
        assert rsp.status_code == 422, (spec, rsp.text)
        assert path in [c["field"] for c in rsp.json()["details"]["causes"]]
    # Under Warn, the pruned object is validated: 422, and the warning still goes out.
    warned = await client.post(WIDGETS, json={**widget(), "spec": {"name": {"a": 1}}})
    assert warned.status_code == 422 and "spec.name in body must be of type string" in warned.json()["message"]
    assert warned.headers.get_list("Warning") == ['299 - "unknown field \\"spec.name.a\\""']


# --- Table output -------------------------------------------------------------------------------------

TABLE_ACCEPT = {
    "Accept": "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,"
    "application/json"
}


async def test_table_output_uses_printer_columns(client: httpx.AsyncClient, structural: Any) -> None:
    await client.post(WIDGETS, json={**widget(), "spec": {"size": 3, "name": "big", "items": ["x", "y"]}})
    await client.patch(
        f"{WIDGETS}/w1/status",
        headers=MERGE,
        json={"status": {"conditions": [{"type": "Synced", "status": "False"}, {"type": "Ready", "status": "True"}]}},
    )
    await client.post(WIDGETS, json=widget("w2", size=1))

    table = (await client.get(WIDGETS, headers=TABLE_ACCEPT)).json()
    assert table["kind"] == "Table" and table["apiVersion"] == "meta.k8s.io/v1"
    columns = table["columnDefinitions"]
    assert [(c["name"], c["type"], c["format"], c["priority"]) for c in columns] == [
        ("Name", "string", "name", 0),
        ("Size", "integer", "", 0),
        ("Label", "string", "", 0),
        ("Ready", "string", "", 0),
        ("First", "string", "", 1),
        ("Age", "date", "", 0),
    ]
    assert columns[2]["description"] == "the label"
    assert columns[1]["description"] == "Custom resource definition column (in JSONPath format): .spec.size"
    first, second = table["rows"]
    assert first["cells"][:5] == ["w1", 3, "big", "True", "x"]
    assert second["cells"][:5] == ["w2", 1, None, None, None]  # missing values are null cells
    assert first["cells"][5].endswith("s")  # the server renders dates as ages: "0s", "5m3s", "2d"
    assert first["object"]["kind"] == "PartialObjectMetadata"
    assert first["object"]["apiVersion"] == "meta.k8s.io/v1"
    assert first["object"]["metadata"]["name"] == "w1" and "spec" not in first["object"]
    assert table["metadata"]["resourceVersion"] == (await client.get(WIDGETS)).json()["metadata"]["resourceVersion"]

    one = (await client.get(f"{WIDGETS}/w2", headers=TABLE_ACCEPT, params={"includeObject": "Object"})).json()
    assert len(one["rows"]) == 1 and one["rows"][0]["object"]["spec"] == {"size": 1}
    bare = (await client.get(WIDGETS, headers=TABLE_ACCEPT, params={"includeObject": "None"})).json()
    assert all("object" not in row for row in bare["rows"])
    beta = await client.get(WIDGETS, headers={"Accept": "application/json;as=Table;v=v1beta1;g=meta.k8s.io"})
    assert beta.json()["apiVersion"] == "meta.k8s.io/v1beta1"
    assert (await client.get(WIDGETS, headers={"Accept": "application/json"})).json()["kind"] == "WidgetList"


async def test_table_output_for_builtins_and_a_crd_without_columns(client: httpx.AsyncClient, crd: Any) -> None:
    await client.post(WIDGETS, json=widget())
    plain = (await client.get(WIDGETS, headers=TABLE_ACCEPT)).json()
    assert [c["name"] for c in plain["columnDefinitions"]] == ["Name", "Age"]  # the API server's default

    namespaces = (await client.get("/api/v1/namespaces", headers=TABLE_ACCEPT)).json()
    assert [c["name"] for c in namespaces["columnDefinitions"]] == ["Name", "Status", "Age"]
    assert [r["cells"][:2] for r in namespaces["rows"]] == [["default", "Active"], ["kube-system", "Active"]]
    await client.post("/api/v1/namespaces/default/secrets", json={"metadata": {"name": "s"}, "data": {"k": "dg=="}})
    secrets = (await client.get("/api/v1/namespaces/default/secrets", headers=TABLE_ACCEPT)).json()
    assert [c["name"] for c in secrets["columnDefinitions"]] == ["Name", "Type", "Data", "Age"]
    assert secrets["rows"][0]["cells"][:3] == ["s", "", 1]
    crds = (await client.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", headers=TABLE_ACCEPT)).json()
    assert [c["name"] for c in crds["columnDefinitions"]] == ["Name", "Created At"]
    assert crds["rows"][0]["cells"][1].endswith("Z")  # the default convertor prints RFC 3339


def test_jsonpath_and_human_duration() -> None:
    obj = {"a": {"b": [{"t": "x", "v": 1}, {"t": "y", "v": 2}], "c.d": True}}
    assert jsonpath_find(obj, '.a.b[?(@.t=="y")].v') == [2]
    assert jsonpath_find(obj, "{.a.b[*].t}") == ["x", "y"]
    assert jsonpath_find(obj, ".a.b[-1].v") == [2]
    assert jsonpath_find(obj, ".a['c.d']") == [True]
    assert jsonpath_find(obj, ".a.missing.deeper") == []
    assert [
        human_duration(s)
        for s in (-5, -0.5, 42, 150, 630, 3 * 3600 + 60, 9 * 3600, 50 * 3600, 400 * 86400, 800 * 86400)
    ] == [
        "<invalid>",
        "0s",
        "42s",
        "2m30s",
        "10m",
        "3h1m",
        "9h",
        "2d2h",
        "400d",
        "2y70d",
    ]


async def test_real_kubectl_get_and_describe(server: KubeEmulatorServer, tmp_path: Any) -> None:
    assert shutil.which("kubectl"), "kubectl is part of the dev environment"
    emulator = server.emulator
    emulator.admission = admit
    for path in sorted(CRDS.glob("*.yaml")):
        emulator.register_crd(yaml.safe_load(path.read_text()))
    async with httpx.AsyncClient(base_url=server.url) as client:
        gwe = {
            "apiVersion": "aigw.dev/v1alpha1",
            "kind": "GatewayEndpoint",
            "metadata": {"name": "glm", "namespace": "default"},
            "spec": {"slug": "my-org/glm", "targets": [{"provider": "BASETEN", "modelId": "abc"}]},
        }
        created = await client.post("/apis/aigw.dev/v1alpha1/namespaces/default/gatewayendpoints", json=gwe)
        assert created.status_code == 201, created.text
        ready = {"type": "Ready", "status": "False", "reason": "AccessDenied", "message": "no key"}
        await client.patch(
            "/apis/aigw.dev/v1alpha1/namespaces/default/gatewayendpoints/glm/status",
            headers=MERGE,
            json={"status": {"id": "ep-1", "conditions": [{**ready, "lastTransitionTime": "2024-01-01T00:00:00Z"}]}},
        )
        event = {
            "metadata": {"name": "glm.1"},
            "involvedObject": {
                "kind": "GatewayEndpoint",
                "name": "glm",
                "namespace": "default",
                "uid": created.json()["metadata"]["uid"],
            },
            "reason": "AccessDenied",
            "message": "the key was refused",
            "type": "Warning",
            "lastTimestamp": "2024-01-01T00:00:00Z",
        }
        assert (await client.post("/api/v1/namespaces/default/events", json=event)).status_code == 201
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "e", "cluster": {"server": server.url}}],
                "users": [{"name": "u", "user": {}}],
                "contexts": [{"name": "e", "context": {"cluster": "e", "user": "u", "namespace": "default"}}],
                "current-context": "e",
            }
        )
    )

    async def kubectl(*args: str) -> list[list[str]]:
        proc = await asyncio.create_subprocess_exec(
            "kubectl",
            *args,
            env={"KUBECONFIG": str(kubeconfig), "HOME": str(tmp_path), "PATH": os.environ.get("PATH", "")},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, out.decode()
        return [line.split() for line in out.decode().splitlines()]

    lines = await kubectl("get", "gwe")
    assert lines[0] == ["NAME", "SLUG", "PROVIDER", "READY", "SYNCED", "REASON", "ID", "AGE"]
    assert lines[1][:6] == ["glm", "my-org/glm", "BASETEN", "False", "AccessDenied", "ep-1"]
    everything = await kubectl("get", "aigw", "-A")
    assert everything[0][:3] == ["NAMESPACE", "NAME", "SLUG"]
    assert everything[1][:3] == ["default", "gatewayendpoint.aigw.dev/glm", "my-org/glm"]
    described = await kubectl("describe", "gwe", "glm")
    assert ["Slug:", "my-org/glm"] in described and ["Id:", "ep-1"] in described
    assert any(line[:2] == ["Warning", "AccessDenied"] for line in described), described  # its Events too
    assert (await kubectl("get", "ns"))[0] == ["NAME", "STATUS", "AGE"]


async def test_event_field_selectors(client: httpx.AsyncClient) -> None:
    events = "/api/v1/namespaces/default/events"
    for name, kind in [("e1", "GatewayEndpoint"), ("e2", "Model")]:
        body = {"metadata": {"name": name}, "involvedObject": {"kind": kind, "name": "x"}, "source": {"component": "c"}}
        await client.post(events, json=body)
    selected = await client.get(events, params={"fieldSelector": "involvedObject.kind=Model,involvedObject.name=x"})
    assert [e["metadata"]["name"] for e in selected.json()["items"]] == ["e2"]
    assert len((await client.get(events, params={"fieldSelector": "source=c"})).json()["items"]) == 2
    assert (await client.get(events, params={"fieldSelector": "spec.x=1"})).status_code == 400
    secrets = await client.get("/api/v1/secrets", params={"fieldSelector": "involvedObject.kind=Model"})
    assert secrets.status_code == 400, "field labels are per resource"


# --- namespace deletion -------------------------------------------------------------------------------


async def test_namespace_deletion_cascades_like_the_namespace_controller(
    client: httpx.AsyncClient, emulator: KubeEmulator, crd: Any
) -> None:
    assert (await client.post("/api/v1/namespaces", json={"metadata": {"name": "doomed"}})).status_code == 201
    base = "/api/v1/namespaces/doomed"
    widgets = f"/apis/{GROUP}/v1/namespaces/doomed/widgets"
    await client.post(f"{base}/secrets", json={"metadata": {"name": "key"}, "data": {}})
    await client.post(f"{base}/configmaps", json={"metadata": {"name": "cm"}})
    await client.post(f"{base}/events", json={"metadata": {"name": "ev"}, "reason": "R"})
    await client.post(widgets, json={**widget("kept"), "metadata": {"name": "kept", "finalizers": ["a/b"]}})
    await client.post(widgets, json=widget("plain"))
    start = str(emulator.resource_version)

    deleting = await client.delete("/api/v1/namespaces/doomed")
    assert deleting.status_code == 200
    ns = deleting.json()
    assert ns["metadata"]["deletionTimestamp"] and ns["status"]["phase"] == "Terminating"
    assert ns["spec"] == {"finalizers": ["kubernetes"]}
    assert (await client.get(f"{base}/secrets/key")).status_code == 200, "content goes asynchronously"

    refused = await client.post(f"{base}/secrets", json={"metadata": {"name": "late"}})
    assert refused.status_code == 403
    assert refused.json()["reason"] == "Forbidden"
    assert refused.json()["message"] == (
        'secrets "late" is forbidden: unable to create new content in namespace doomed because it is being terminated'
    )
    assert refused.json()["details"]["causes"] == [
        {
            "reason": "NamespaceTerminating",
            "message": "namespace doomed is being terminated",
            "field": "metadata.namespace",
        }
    ]
    assert (await client.post(widgets, json=widget("late"))).status_code == 403

    async def namespace() -> dict[str, Any]:
        rsp = await client.get("/api/v1/namespaces/doomed")
        return rsp.json() if rsp.status_code == 200 else {}

    for _ in range(100):
        conditions = {c["type"]: c for c in (await namespace()).get("status", {}).get("conditions", [])}
        if conditions:
            break
        await asyncio.sleep(0.02)
    assert conditions["NamespaceContentRemaining"]["status"] == "True"
    assert conditions["NamespaceContentRemaining"]["reason"] == "SomeResourcesRemain"
    assert conditions["NamespaceContentRemaining"]["message"] == (
        f"Some resources are remaining: widgets.{GROUP} has 1 resource instances"
    )
    assert conditions["NamespaceFinalizersRemaining"]["message"] == (
        "Some content in the namespace has finalizers remaining: a/b in 1 resource instances"
    )
    assert conditions["NamespaceDeletionContentFailure"]["status"] == "False"
    for path in (f"{base}/secrets/key", f"{base}/configmaps/cm", f"{base}/events/ev", f"{widgets}/plain"):
        assert (await client.get(path)).status_code == 404, path
    kept = (await client.get(f"{widgets}/kept")).json()
    assert kept["metadata"]["deletionTimestamp"]

    # Existing objects can still be written: status, then the finalizer's removal.
    status = await client.patch(f"{widgets}/kept/status", headers=MERGE, json={"status": {"cleaning": True}})
    assert status.status_code == 200
    released = await client.patch(f"{widgets}/kept", headers=MERGE, json={"metadata": {"finalizers": None}})
    assert released.status_code == 200
    for _ in range(100):
        if not await namespace():
            break
        await asyncio.sleep(0.02)
    assert not await namespace(), "an emptied namespace is removed"

    ns_events = await read_events(client, "/api/v1/namespaces", {"resourceVersion": start, "timeoutSeconds": "0.3"}, 9)
    # Terminating; content remaining; all clear (written before finalizing, as the controller does); gone.
    assert [e["type"] for e in ns_events] == ["MODIFIED", "MODIFIED", "MODIFIED", "DELETED"]
    assert ns_events[0]["object"]["status"]["phase"] == "Terminating"
    last = {c["type"]: c["status"] for c in ns_events[-1]["object"]["status"]["conditions"]}
    assert last["NamespaceContentRemaining"] == "False" and last["NamespaceFinalizersRemaining"] == "False"
    # Every deletion was a watch event, Secrets first (the default order).
    secret_gone = await read_events(client, "/api/v1/secrets", {"resourceVersion": start, "timeoutSeconds": "0.3"}, 5)
    widget_events = await read_events(
        client, f"/apis/{GROUP}/v1/widgets", {"resourceVersion": start, "timeoutSeconds": "0.3"}, 9
    )
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in secret_gone] == [("DELETED", "key")]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in widget_events] == [
        ("MODIFIED", "kept"),  # deletionTimestamp
        ("DELETED", "plain"),
        ("MODIFIED", "kept"),  # status
        ("MODIFIED", "kept"),  # finalizer removed (a real server sends only the DELETED)
        ("DELETED", "kept"),
    ]
    assert rv(secret_gone[0]["object"]) < rv(widget_events[0]["object"])


async def test_namespace_deletion_order_is_configurable_and_immortal_namespaces_stay(
    client: httpx.AsyncClient, emulator: KubeEmulator, crd: Any
) -> None:
    emulator.namespace_deletion_order = (f"widgets.{GROUP}", "secrets")
    emulator.namespace_deletion_delay = 0.2
    await client.post("/api/v1/namespaces", json={"metadata": {"name": "ns2"}})
    await client.post("/api/v1/namespaces/ns2/secrets", json={"metadata": {"name": "key"}})
    await client.post(f"/apis/{GROUP}/v1/namespaces/ns2/widgets", json=widget())
    start = str(emulator.resource_version)
    await client.delete("/api/v1/namespaces/ns2")
    await asyncio.sleep(0.1)
    assert (await client.get("/api/v1/namespaces/ns2/secrets/key")).status_code == 200, "not before the delay"
    deleted = await read_events(client, "/api/v1/namespaces", {"resourceVersion": start, "timeoutSeconds": "1"}, 3)
    assert deleted[-1]["type"] == "DELETED"
    secret = await read_events(client, "/api/v1/secrets", {"resourceVersion": start, "timeoutSeconds": "0.2"}, 1)
    widgets = await read_events(
        client, f"/apis/{GROUP}/v1/widgets", {"resourceVersion": start, "timeoutSeconds": "0.2"}, 1
    )
    assert rv(widgets[0]["object"]) < rv(secret[0]["object"])

    immortal = await client.delete("/api/v1/namespaces/default")
    assert immortal.status_code == 403
    assert immortal.json()["message"] == 'namespaces "default" is forbidden: this namespace may not be deleted'


# --- the order of a write's response and its watch event ------------------------------------------------


async def _raw_watch(port: int, path: str, since: str, seen: list[str], order: list[str]) -> None:
    """A minimal watch client on a raw socket: it records "event" as soon as a line arrives."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path}?watch=true&resourceVersion={since} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    try:
        while True:
            line = await reader.readline()
            if not line:
                return
            if line.startswith(b"{"):
                order.append("event")
                seen.append(json.loads(line)["object"]["metadata"]["resourceVersion"])
    finally:
        writer.close()


async def _raw_patch(port: int, path: str, body: dict[str, Any], order: list[str]) -> str:
    """A minimal writer on a raw socket: it records "response" as soon as the status line arrives."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    data = json.dumps(body).encode()
    writer.write(
        f"PATCH {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/merge-patch+json\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode()
        + data
    )
    await writer.drain()
    status = await reader.readline()
    order.append("response")
    rest = await reader.read()
    writer.close()
    assert status.startswith(b"HTTP/1.1 200"), status
    return str(json.loads(rest.split(b"\r\n\r\n", 1)[1])["metadata"]["resourceVersion"])


async def _eventually(check: Any, seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.01)):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("not reached in time")


@pytest.mark.parametrize(
    ("mode", "delay", "expected"),
    [
        ("natural", 0.0, ["response", "event"]),
        ("response-first", 0.0, ["response", "event"]),
        ("event-first", 0.0, ["event", "response"]),
        ("natural", 0.2, ["event", "response"]),  # a slow response alone lets the event overtake it
    ],
)
async def test_write_order_knob(
    server: KubeEmulatorServer, client: httpx.AsyncClient, crd: Any, mode: str, delay: float, expected: list[str]
) -> None:
    emulator = server.emulator
    emulator.write_order = mode  # type: ignore[assignment]
    emulator.response_delay = delay
    created = (await client.post(WIDGETS, json=widget())).json()
    for attempt in range(5):  # the same order every time, not by luck
        order: list[str] = []
        seen: list[str] = []
        await _eventually(lambda: emulator.open_watches == 0)  # the previous attempt's watch is gone too
        watch = asyncio.create_task(_raw_watch(server.port, WIDGETS, str(emulator.resource_version), seen, order))
        await _eventually(lambda: emulator.open_watches == 1)
        written = await _raw_patch(server.port, f"{WIDGETS}/w1", {"spec": {"size": attempt + 2}}, order)
        await _eventually(lambda seen=seen: bool(seen))
        watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watch
        assert seen == [written], "the event carries the write's resourceVersion"
        assert order == expected, (attempt, order)
    assert rv(created) < emulator.resource_version


TOKEN_REVIEWS = "/apis/authentication.k8s.io/v1/tokenreviews"
ACCESS_REVIEWS = "/apis/authorization.k8s.io/v1/subjectaccessreviews"


def access_review(spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec}


async def test_token_reviews_answer_from_the_policy_and_store_nothing(
    client: httpx.AsyncClient, emulator: KubeEmulator
) -> None:
    """As the API server: create only, 201 with the request's spec and a status, never stored
    (no list, get or watch), and a token outside the policy is not authenticated."""
    user = {"username": "system:serviceaccount:monitoring:prometheus", "uid": "u-1", "groups": ["system:authenticated"]}
    emulator.tokens["good-token"] = user
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": "good-token"}}
    response = await client.post(TOKEN_REVIEWS, json=body)
    assert response.status_code == 201, response.text
    review = response.json()
    assert review["apiVersion"] == "authentication.k8s.io/v1" and review["kind"] == "TokenReview"
    assert review["spec"] == {"token": "good-token"}
    assert review["status"]["authenticated"] is True and review["status"]["user"] == user
    unknown = (await client.post(TOKEN_REVIEWS, json={**body, "spec": {"token": "other"}})).json()["status"]
    assert "authenticated" not in unknown and unknown["user"] == {} and unknown["error"]
    assert (await client.post(TOKEN_REVIEWS, json={**body, "spec": {}})).status_code == 400
    for method, url in (("GET", TOKEN_REVIEWS), ("GET", f"{TOKEN_REVIEWS}/x"), ("DELETE", f"{TOKEN_REVIEWS}/x")):
        assert (await client.request(method, url)).status_code == 405, (method, url)
    resources = (await client.get("/apis/authentication.k8s.io/v1")).json()["resources"]
    assert [(r["name"], r["namespaced"], r["verbs"]) for r in resources] == [("tokenreviews", False, ["create"])]
    assert emulator.list_objects("authentication.k8s.io", "tokenreviews") == []
    assert emulator.access()[("python-httpx", "create", "authentication.k8s.io", "tokenreviews", None, None)] == 3


async def test_subject_access_reviews_allow_what_the_policy_lists(
    client: httpx.AsyncClient, emulator: KubeEmulator
) -> None:
    emulator.allowed = {("alice", "get", "/metrics"), ("metrics-readers", "get", "/healthz")}

    async def allowed(spec: dict[str, Any]) -> bool:
        response = await client.post(ACCESS_REVIEWS, json=access_review(spec))
        assert response.status_code == 201, response.text
        assert response.json()["spec"] == spec
        return bool(response.json()["status"]["allowed"])

    assert await allowed({"user": "alice", "nonResourceAttributes": {"path": "/metrics", "verb": "get"}})
    assert not await allowed({"user": "alice", "nonResourceAttributes": {"path": "/metrics", "verb": "post"}})
    assert not await allowed({"user": "bob", "nonResourceAttributes": {"path": "/metrics", "verb": "get"}})
    groups = {"user": "bob", "groups": ["metrics-readers"]}
    assert await allowed({**groups, "nonResourceAttributes": {"path": "/healthz", "verb": "get"}})
    resource = {"verb": "get", "resource": "secrets", "namespace": "default"}
    assert not await allowed({"user": "alice", "resourceAttributes": resource})
    # Validation, as the API server's: someone to ask about, and exactly one kind of attributes.
    for spec in (
        {"nonResourceAttributes": {"path": "/metrics", "verb": "get"}},
        {"user": "alice"},
        {"user": "alice", "resourceAttributes": resource, "nonResourceAttributes": {"path": "/", "verb": "get"}},
    ):
        response = await client.post(ACCESS_REVIEWS, json=access_review(spec))
        assert response.status_code == 422 and response.json()["reason"] == "Invalid", spec
    assert (await client.get(ACCESS_REVIEWS)).status_code == 405
    assert emulator.list_objects("authorization.k8s.io", "subjectaccessreviews") == []


# ---------------------------------------------------------------------------- garbage collection
# What a real API server's garbage collector does with ownerReferences once an owner is deleted,
# by propagationPolicy (Background, the default; Foreground; Orphan).

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
    crd: Any,
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
    crd: Any,
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
    crd: Any,
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
    crd: Any,
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
    crd: Any,
    emulator: KubeEmulator,
) -> None:
    await _owner(client)
    bad = await client.delete(f"{WIDGETS}/w1", params={"propagationPolicy": "Sideways"})
    assert bad.status_code == 422 and "propagationPolicy" in bad.json()["message"]
    response = await client.request("DELETE", f"{WIDGETS}/w1", json={"propagationPolicy": "Foreground"})
    assert response.status_code == 200
    assert not await _exists(client, f"{WIDGETS}/w1")
    assert emulator.list_objects("", "configmaps", "default") == []
