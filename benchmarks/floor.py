"""The cost floor: a bare asyncio HTTP client sending exactly the requests one create must send.

    python -m benchmarks.floor --kind GatewayEndpoint --namespace bench-floor [--client httpx]

For every object the one watch of its kind brings (ADDED), and nothing else: the finalizer
(a merge patch of the object's metadata), the upstream POST, the status (id and Ready=True, a
merge patch of /status) and one Event. No retries, no validation, no listing, no logging: what
any operator must pay per create, over the same loopback, against the same emulator and
simulator. One watch request serves all creates (an operator needs one too), and at most
``--workers`` creates are in flight (ours: 32 workers per kind).

``--client aiohttp`` (the floor) or ``httpx`` (httpx's own transport, httpcore on anyio: several
times the CPU per request on loopback, see src/aigw_operator/base/transport.py). It prints
nothing; the benchmark measures it from outside (/proc CPU, the emulator's commit times).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import signal
from collections.abc import AsyncIterator
from typing import Any, Protocol

import aiohttp
import httpx

from benchmarks.naive import APIS, NaiveApi, ready_condition

GROUP, VERSION = "aigw.dev", "v1alpha1"
PLURALS = {"GatewayEndpoint": "gatewayendpoints", "Provider": "providers"}
FINALIZER = "bench.aigw.dev/floor"
MERGE = {"Content-Type": "application/merge-patch+json"}


class Client(Protocol):
    async def send(self, method: str, path: str, body: Any, headers: dict[str, str] | None = None) -> Any: ...

    def lines(self, path: str) -> AsyncIterator[bytes]: ...


class AiohttpClient:
    def __init__(self, session: aiohttp.ClientSession, base: str, headers: dict[str, str]) -> None:
        self.session, self.base, self.headers = session, base, headers

    async def send(self, method: str, path: str, body: Any, headers: dict[str, str] | None = None) -> Any:
        data = json.dumps(body).encode()
        merged = {**self.headers, "Content-Type": "application/json", **(headers or {})}
        async with self.session.request(method, self.base + path, data=data, headers=merged) as response:
            return json.loads(await response.read())

    async def lines(self, path: str) -> AsyncIterator[bytes]:
        async with self.session.get(self.base + path, params={"watch": "true"}, timeout=None) as response:
            async for line in response.content:
                yield line


class HttpxClient:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def send(self, method: str, path: str, body: Any, headers: dict[str, str] | None = None) -> Any:
        response = await self.client.request(
            method,
            path,
            content=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", **(headers or {})},
        )
        return response.json()

    async def lines(self, path: str) -> AsyncIterator[bytes]:
        async with self.client.stream("GET", path, params={"watch": "true"}, timeout=None) as response:
            async for line in response.aiter_lines():
                yield line.encode()


async def handle(kube: Client, upstream: Client, api: NaiveApi, path: str, obj: Any) -> None:
    meta = obj["metadata"]
    name = meta["name"]
    await kube.send("PATCH", f"{path}/{name}", {"metadata": {"finalizers": [FINALIZER]}}, MERGE)
    created = await upstream.send("POST", api.collection, api.create_body(obj["spec"]))
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    status = {"status": {**api.status_of(created), "conditions": [ready_condition(now)]}}
    await kube.send("PATCH", f"{path}/{name}/status", status, MERGE)
    event = {
        "metadata": {"generateName": f"{name}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": obj["apiVersion"],
            "kind": obj["kind"],
            "name": name,
            "namespace": meta["namespace"],
            "uid": meta["uid"],
        },
        "reason": "Created",
        "message": f"created upstream as {created['id']}",
        "type": "Normal",
    }
    await kube.send("POST", f"/api/v1/namespaces/{meta['namespace']}/events", event)


async def serve(kube: Client, upstream: Client, api: NaiveApi, path: str, workers: int, stop: asyncio.Event) -> None:
    slots = asyncio.Semaphore(workers)
    tasks: set[asyncio.Task[None]] = set()

    async def bounded(obj: Any) -> None:
        async with slots:
            await handle(kube, upstream, api, path, obj)

    async def watch() -> None:
        async for line in kube.lines(path):
            if not line.strip():
                continue
            event = json.loads(line)
            if event["type"] == "ADDED":
                task = asyncio.create_task(bounded(event["object"]))
                tasks.add(task)
                task.add_done_callback(tasks.discard)

    watching = asyncio.create_task(watch())
    await stop.wait()
    watching.cancel()


async def main(kind: str, namespace: str, workers: int, client: str) -> None:
    api = APIS[kind]
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURALS[kind]}"
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    kube_url, upstream_url = os.environ["BENCH_KUBE_URL"], os.environ[api.base_url_env]
    headers = api.headers(os.environ[api.key_env])
    if client == "aiohttp":
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=workers + 1)) as k,
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=workers)) as u,
        ):
            await serve(
                AiohttpClient(k, kube_url, {}), AiohttpClient(u, upstream_url, headers), api, path, workers, stop
            )
    else:
        # As many connections as creates in flight: requests queued for a connection make
        # httpcore's pool costlier still.
        limits = httpx.Limits(max_connections=workers + 1, max_keepalive_connections=workers + 1)
        async with (
            httpx.AsyncClient(base_url=kube_url, limits=limits) as k,
            httpx.AsyncClient(base_url=upstream_url, headers=headers, limits=limits) as u,
        ):
            await serve(HttpxClient(k), HttpxClient(u), api, path, workers, stop)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--kind", required=True, choices=sorted(APIS))
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--workers", type=int, default=32, help="creates in flight (ours: 32 workers per kind)")
    parser.add_argument("--client", choices=("aiohttp", "httpx"), default="aiohttp")
    args = parser.parse_args()
    asyncio.run(main(args.kind, args.namespace, args.workers, args.client))
