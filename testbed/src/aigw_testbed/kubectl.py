"""A plain HTTP Kubernetes client for the demo and the tests: the emulator or a real cluster."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from aigw_testbed import API_VERSION, GROUP, VERSION


def cr_path(plural: str, namespace: str, name: str | None = None) -> str:
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{plural}"
    return f"{path}/{name}" if name else path


class Kube:
    def __init__(self, http: httpx.AsyncClient, namespace: str) -> None:
        self.http = http
        self.namespace = namespace

    async def apply_crd(self, crd: Mapping[str, Any]) -> None:
        path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
        name = crd["metadata"]["name"]
        existing = await self.http.get(f"{path}/{name}")
        if existing.status_code == 200:
            body = dict(crd)
            body["metadata"] = {**crd["metadata"], "resourceVersion": existing.json()["metadata"]["resourceVersion"]}
            response = await self.http.put(f"{path}/{name}", json=body)
        else:
            response = await self.http.post(path, json=crd)
        response.raise_for_status()

    async def ensure_namespace(self, name: str) -> None:
        response = await self.http.post("/api/v1/namespaces", json={"metadata": {"name": name}})
        if response.status_code not in (200, 201, 409):
            response.raise_for_status()

    async def put_secret(self, name: str, data: Mapping[str, str], labels: Mapping[str, str] | None = None) -> None:
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": self.namespace, "labels": dict(labels or {})},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
        }
        path = f"/api/v1/namespaces/{self.namespace}/secrets"
        response = await self.http.post(path, json=body)
        if response.status_code == 409:
            response = await self.http.patch(
                f"{path}/{name}",
                json={"data": body["data"], "metadata": {"labels": body["metadata"]["labels"]}},
                headers={"Content-Type": "application/merge-patch+json"},
            )
        response.raise_for_status()

    async def delete_secret(self, name: str) -> None:
        await self.http.delete(f"/api/v1/namespaces/{self.namespace}/secrets/{name}")

    async def create(
        self, kind: str, plural: str, name: str, spec: Mapping[str, Any], annotations: Mapping[str, str] | None = None
    ) -> httpx.Response:
        body: dict[str, Any] = {
            "apiVersion": API_VERSION,
            "kind": kind,
            "metadata": {"name": name, "namespace": self.namespace, "annotations": dict(annotations or {})},
            "spec": dict(spec),
        }
        return await self.http.post(cr_path(plural, self.namespace), json=body)

    async def get(self, plural: str, name: str) -> dict[str, Any] | None:
        response = await self.http.get(cr_path(plural, self.namespace, name))
        if response.status_code == 404:
            return None
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    async def patch_spec(self, plural: str, name: str, spec: Mapping[str, Any]) -> httpx.Response:
        return await self.http.patch(
            cr_path(plural, self.namespace, name),
            json={"spec": dict(spec)},
            headers={"Content-Type": "application/merge-patch+json"},
        )

    async def patch_meta(self, plural: str, name: str, metadata: Mapping[str, Any]) -> httpx.Response:
        return await self.http.patch(
            cr_path(plural, self.namespace, name),
            json={"metadata": dict(metadata)},
            headers={"Content-Type": "application/merge-patch+json"},
        )

    async def delete(self, plural: str, name: str) -> httpx.Response:
        return await self.http.delete(cr_path(plural, self.namespace, name))

    async def events(self, name: str | None = None) -> list[dict[str, Any]]:
        response = await self.http.get(f"/api/v1/namespaces/{self.namespace}/events")
        response.raise_for_status()
        items: list[dict[str, Any]] = response.json().get("items", [])
        return [e for e in items if name is None or e.get("involvedObject", {}).get("name") == name]

    async def wait_for(
        self, plural: str, name: str, predicate: Callable[[dict[str, Any] | None], bool], timeout: float = 15.0
    ) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        last: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            last = await self.get(plural, name)
            if predicate(last):
                return last
            await asyncio.sleep(0.05)
        raise AssertionError(f"{plural}/{name} did not reach the expected state in {timeout}s; last: {last}")

    async def wait_condition(
        self, plural: str, name: str, type_: str, status: str, reason: str | None = None, timeout: float = 15.0
    ) -> dict[str, Any]:
        def check(obj: dict[str, Any] | None) -> bool:
            found = condition(obj, type_)
            return bool(found and found["status"] == status and (reason is None or found["reason"] == reason))

        result = await self.wait_for(plural, name, check, timeout)
        assert result is not None
        return result

    async def wait_gone(self, plural: str, name: str, timeout: float = 15.0) -> None:
        await self.wait_for(plural, name, lambda obj: obj is None, timeout)


def condition(obj: Mapping[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for item in ((obj or {}).get("status") or {}).get("conditions") or []:
        if item.get("type") == type_:
            return dict(item)
    return None
