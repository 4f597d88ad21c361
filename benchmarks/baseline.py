"""The naive baseline: the operator a user writes in an afternoon with kopf.

Create = POST upstream, update = PATCH upstream (the whole mapped spec), delete = DELETE
upstream, and a kopf timer per object that GETs the upstream object and writes the status every
interval. kopf's defaults throughout (its finalizer, its last-handled-configuration annotation,
its Events, INFO logging), as ``kopf run`` gives them. The benchmark runs it exactly so:

    python -m kopf run benchmarks/baseline.py --standalone --namespace bench-baseline

configured by BENCH_* environment variables (the emulator's and the simulators' URLs and keys,
the timer's interval): see benchmarks/harness.py. It is never imported by the benchmark itself.
"""

from __future__ import annotations

import datetime
import os
from typing import Any

import httpx
import kopf

from benchmarks.naive import APIS, NaiveApi, ready_condition

GROUP, VERSION = "aigw.dev", "v1alpha1"
PLURALS = {"GatewayEndpoint": "gatewayendpoints", "Provider": "providers"}
INTERVAL = float(os.environ.get("BENCH_INTERVAL", "300"))

_clients: dict[str, httpx.AsyncClient] = {}


def _client(api: NaiveApi) -> httpx.AsyncClient:
    if api.collection not in _clients:
        _clients[api.collection] = httpx.AsyncClient(
            base_url=os.environ[api.base_url_env], headers=api.headers(os.environ[api.key_env]), timeout=30
        )
    return _clients[api.collection]


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@kopf.on.login()
def login(**_: Any) -> kopf.ConnectionInfo:
    # What a kubeconfig would say: the emulator on loopback, plain HTTP, no credentials.
    return kopf.ConnectionInfo(server=os.environ["BENCH_KUBE_URL"], insecure=True)


def _register(kind: str, plural: str, api: NaiveApi) -> None:
    @kopf.on.create(GROUP, VERSION, plural, id=f"create-{plural}")
    async def create(spec: kopf.Spec, patch: kopf.Patch, **_: Any) -> None:
        response = await _client(api).post(api.collection, json=api.create_body(dict(spec)))
        response.raise_for_status()
        obj = response.json()
        patch.status.update(api.status_of(obj))
        patch.status["conditions"] = [ready_condition(_now())]

    @kopf.on.update(GROUP, VERSION, plural, field="spec", id=f"update-{plural}")
    async def update(spec: kopf.Spec, status: kopf.Status, patch: kopf.Patch, **_: Any) -> None:
        response = await _client(api).patch(api.item.format(id=status["id"]), json=api.patch_body(dict(spec)))
        response.raise_for_status()
        patch.status.update(api.status_of(response.json()))
        patch.status["conditions"] = [ready_condition(_now())]

    @kopf.on.delete(GROUP, VERSION, plural, id=f"delete-{plural}")
    async def delete(status: kopf.Status, **_: Any) -> None:
        if status.get("id"):
            response = await _client(api).delete(api.item.format(id=status["id"]))
            if response.status_code != 404:
                response.raise_for_status()

    @kopf.timer(GROUP, VERSION, plural, interval=INTERVAL, id=f"sync-{plural}")
    async def sync(status: kopf.Status, patch: kopf.Patch, **_: Any) -> None:
        if not status.get("id"):
            return  # not created yet
        response = await _client(api).get(api.item.format(id=status["id"]))
        response.raise_for_status()
        patch.status.update(api.status_of(response.json()))
        patch.status["lastSyncedAt"] = _now()


for _kind, _api in APIS.items():
    _register(_kind, PLURALS[_kind], _api)
