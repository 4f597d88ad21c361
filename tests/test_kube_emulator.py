"""The Kubernetes API emulator, over real HTTP on loopback, plus the real kopf operator against it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import kopf
import pytest

from aigw_operator.simulators.admission import FieldError, Invalid
from aigw_operator.simulators.kubernetes import KubeEmulator, KubeEmulatorServer

GROUP = "test.aigw.dev"
WIDGETS = f"/apis/{GROUP}/v1/namespaces/default/widgets"
MERGE = {"Content-Type": "application/merge-patch+json"}
JSONPATCH = {"Content-Type": "application/json-patch+json"}


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
