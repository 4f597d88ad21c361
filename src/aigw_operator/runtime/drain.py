"""``aigw-operator drain``: release every aigw.dev custom resource from the operator's finalizer.

For uninstalling. Once the operator is gone nothing removes ``aigw.dev/finalizer``, so a resource
deleted afterwards (or already being deleted) would stay in Kubernetes forever, and so would its
namespace. The same holds for the finalizer that keeps credentials Secrets while resources need
them (``aigw.dev/credentials-in-use``). Drain removes those finalizers and nothing else: it never
calls an upstream API, so the upstream objects of drained resources are orphaned, whatever their
``deletionPolicy``. To have upstream objects deleted, delete the resources while the operator
still runs, and drain after.

Run it after the operator has stopped (``helm uninstall``, or the Deployment scaled to 0): a
running operator puts the finalizer straight back. ``verify`` detects exactly that.

The chart's ``pre-delete`` hook runs it while the operator still runs, with a policy
(:func:`uninstall`): ``Retain`` scales the operator's Deployment to 0 first, then drains until no
finalizer comes back (the upstream objects are orphaned); ``Delete`` deletes every resource
and waits, while the operator deletes their upstream objects (per ``deletionPolicy``) and
releases them, then frees the credentials Secrets nothing refers to any more. Both are
bounded by a timeout, and fail (exit 1, naming what is left) rather than orphan anything a
``Delete`` was meant to delete.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TextIO

import httpx

from aigw_operator import FINALIZER, GROUP, VERSION
from aigw_operator.kube.secret_protection import PROTECTION_FINALIZER

_CONFLICT_RETRIES = 5


@dataclass(frozen=True)
class Drained:
    kind: str
    namespace: str
    name: str
    # Being deleted: removing the finalizer lets Kubernetes delete it now, upstream untouched.
    deleting: bool


@dataclass
class DrainReport:
    drained: list[Drained] = field(default_factory=list)
    # Kinds whose CRD is not installed in the cluster.
    missing_kinds: list[str] = field(default_factory=list)
    dry_run: bool = False


@dataclass(frozen=True)
class KindRef:
    kind: str
    plural: str
    finalizer: str = FINALIZER
    api: str = f"/apis/{GROUP}/{VERSION}"


# Credentials Secrets the operator keeps while resources need them (see secret_protection).
SECRETS = KindRef("Secret", "secrets", PROTECTION_FINALIZER, "/api/v1")


def operator_kinds() -> list[KindRef]:
    from aigw_operator.crds import all_kinds

    return [*(KindRef(info.kind, info.plural) for info in all_kinds()), SECRETS]


def client_from_config(
    kube_api_url: str | None = None, *, kubeconfig: str | None = None, context: str | None = None
) -> httpx.AsyncClient:
    """An httpx client for the API server: the URL as is (no auth, the emulator), else the
    in-cluster service account, else the kubeconfig, as the official client's loader finds them."""
    if kube_api_url:
        return httpx.AsyncClient(base_url=kube_api_url, timeout=30.0)
    from kubernetes import client
    from kubernetes import config as kube_config

    # The kubernetes package ships no type hints.
    config: Any = kube_config
    configuration = client.Configuration()
    if kubeconfig is None and context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config(client_configuration=configuration)
    else:
        config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=configuration)
    headers = {"Accept": "application/json"}
    # Newer clients store the token under BearerToken, older ones under authorization.
    token = configuration.get_api_key_with_prefix("BearerToken", alias="authorization")
    if token:
        headers["Authorization"] = token
    verify: ssl.SSLContext | bool = bool(configuration.verify_ssl)
    if configuration.verify_ssl and configuration.ssl_ca_cert:
        verify = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
    if configuration.cert_file:
        if not isinstance(verify, ssl.SSLContext):
            verify = ssl.create_default_context()
            if not configuration.verify_ssl:
                verify.check_hostname = False
                verify.verify_mode = ssl.CERT_NONE
        verify.load_cert_chain(configuration.cert_file, configuration.key_file)
    return httpx.AsyncClient(base_url=configuration.host, headers=headers, verify=verify, timeout=30.0)


def _collection(kind: KindRef, namespace: str | None) -> str:
    if namespace:
        return f"{kind.api}/namespaces/{namespace}/{kind.plural}"
    return f"{kind.api}/{kind.plural}"


def _item_path(kind: KindRef, namespace: str, name: str) -> str:
    return f"{kind.api}/namespaces/{namespace}/{kind.plural}/{name}"


async def _list(http: httpx.AsyncClient, kind: KindRef, namespace: str | None) -> list[dict[str, Any]] | None:
    response = await http.get(_collection(kind, namespace))
    if response.status_code == 404:
        return None
    response.raise_for_status()
    items: list[dict[str, Any]] = response.json().get("items") or []
    return items


def _entry(kind: KindRef, obj: dict[str, Any]) -> Drained:
    meta = obj["metadata"]
    return Drained(kind.kind, meta["namespace"], meta["name"], bool(meta.get("deletionTimestamp")))


def _held(kind: KindRef, obj: dict[str, Any]) -> bool:
    return kind.finalizer in (obj.get("metadata", {}).get("finalizers") or [])


async def _release(http: httpx.AsyncClient, kind: KindRef, obj: dict[str, Any]) -> bool:
    """Remove our finalizer, keeping anyone else's; False when the object vanished meanwhile."""
    meta = obj["metadata"]
    path = _item_path(kind, meta["namespace"], meta["name"])
    for _ in range(_CONFLICT_RETRIES):
        finalizers = [f for f in (meta.get("finalizers") or []) if f != kind.finalizer]
        # resourceVersion makes the patch fail on a concurrent change rather than drop
        # a finalizer someone else added in between.
        patch = {"metadata": {"finalizers": finalizers or None, "resourceVersion": meta["resourceVersion"]}}
        response = await http.patch(path, json=patch, headers={"Content-Type": "application/merge-patch+json"})
        if response.status_code == 404:
            return False
        if response.status_code != 409:
            response.raise_for_status()
            return True
        fresh = await http.get(path)
        if fresh.status_code == 404:
            return False
        fresh.raise_for_status()
        meta = fresh.json()["metadata"]
        if kind.finalizer not in (meta.get("finalizers") or []):
            return True
    raise RuntimeError(f"{kind.plural} {meta['namespace']}/{meta['name']} kept changing; run drain again")


def _scopes(namespace: str | None, namespaces: Sequence[str] | None) -> list[str | None]:
    """The namespaces to list in (None: all of them, one cluster-wide list)."""
    if namespaces:
        return list(dict.fromkeys(namespaces))
    return [namespace]


async def _list_in(http: httpx.AsyncClient, kind: KindRef, scopes: Sequence[str | None]) -> list[dict[str, Any]] | None:
    found: list[dict[str, Any]] = []
    for scope in scopes:
        items = await _list(http, kind, scope)
        if items is None:
            return None
        found += items
    return found


async def drain(
    http: httpx.AsyncClient,
    *,
    namespace: str | None = None,
    kinds: Iterable[KindRef] | None = None,
    dry_run: bool = False,
    namespaces: Sequence[str] | None = None,
) -> DrainReport:
    report = DrainReport(dry_run=dry_run)
    for kind in kinds if kinds is not None else operator_kinds():
        items = await _list_in(http, kind, _scopes(namespace, namespaces))
        if items is None:
            report.missing_kinds.append(kind.kind)
            continue
        for obj in items:
            if not _held(kind, obj):
                continue
            if not dry_run and not await _release(http, kind, obj):
                continue
            report.drained.append(_entry(kind, obj))
    return report


async def still_held(
    http: httpx.AsyncClient,
    *,
    namespace: str | None = None,
    kinds: Iterable[KindRef] | None = None,
    namespaces: Sequence[str] | None = None,
) -> list[Drained]:
    """Resources that carry the finalizer (again): after a drain, a sign the operator still runs."""
    held: list[Drained] = []
    for kind in kinds if kinds is not None else operator_kinds():
        for obj in await _list_in(http, kind, _scopes(namespace, namespaces)) or []:
            if _held(kind, obj):
                held.append(_entry(kind, obj))
    return held


async def run(
    kube_api_url: str | None = None,
    *,
    kubeconfig: str | None = None,
    context: str | None = None,
    namespace: str | None = None,
    dry_run: bool = False,
    verify_after: float = 2.0,
    out: TextIO | None = None,
    namespaces: Sequence[str] | None = None,
) -> int:
    """The CLI: drain, wait a moment, and fail if a running operator took the finalizers back."""
    stream = out or sys.stdout

    def say(line: str) -> None:
        stream.write(line + "\n")

    async with client_from_config(kube_api_url, kubeconfig=kubeconfig, context=context) as http:
        report = await drain(http, namespace=namespace, dry_run=dry_run, namespaces=namespaces)
        verb = "would release" if dry_run else "released"
        for item in report.drained:
            note = " (being deleted: goes now, its upstream object is orphaned)" if item.deleting else ""
            say(f"{verb} {item.kind} {item.namespace}/{item.name}{note}")
        for kind in report.missing_kinds:
            say(f"no {kind} CRD in the cluster; skipped")
        say(f"{len(report.drained)} resource(s) {verb} from {FINALIZER} (Secrets: {PROTECTION_FINALIZER})")
        if dry_run or not report.drained:
            return 0
        await asyncio.sleep(verify_after)
        again = await still_held(http, namespace=namespace, namespaces=namespaces)
        if again:
            names = ", ".join(f"{i.kind} {i.namespace}/{i.name}" for i in again)
            say(f"the finalizer is back on: {names}. Is the operator still running? Stop it and drain again.")
            return 1
    return 0


# ---------------------------------------------------------------------- the uninstall hook

Policy = Literal["Delete", "Retain"]


class UninstallFailed(Exception):
    """The policy could not be carried out within the timeout; the message says what is left."""


async def stop_deployment(
    http: httpx.AsyncClient, namespace: str, name: str, *, deadline: float, poll: float = 1.0
) -> bool:
    """Scale the operator's Deployment to 0 and wait until its controller reports no pod left
    running for it (terminating pods are no longer counted, and have been told to stop). False
    when there is no such Deployment."""
    path = f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}"
    response = await http.patch(
        f"{path}/scale",
        json={"spec": {"replicas": 0}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    if response.status_code == 404:
        return False
    response.raise_for_status()
    while True:
        current = await http.get(path)
        if current.status_code == 404:
            return True
        current.raise_for_status()
        body = current.json()
        status = body.get("status") or {}
        observed = status.get("observedGeneration", 0) >= (body.get("metadata") or {}).get("generation", 0)
        if observed and not status.get("replicas"):
            return True
        if time.monotonic() >= deadline:
            raise UninstallFailed(f"Deployment {namespace}/{name} still runs {status.get('replicas')} pod(s)")
        await asyncio.sleep(poll)


async def _resources(http: httpx.AsyncClient, scopes: Sequence[str | None]) -> list[tuple[KindRef, dict[str, Any]]]:
    found: list[tuple[KindRef, dict[str, Any]]] = []
    for kind in operator_kinds():
        if kind is SECRETS:
            continue
        found += [(kind, obj) for obj in await _list_in(http, kind, scopes) or []]
    return found


def _describe_left(left: list[tuple[KindRef, dict[str, Any]]]) -> str:
    lines = []
    for kind, obj in left[:20]:
        meta = obj["metadata"]
        ready: dict[str, Any] = next(
            (c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == "Ready"), {}
        )
        why = f": {ready.get('reason')}: {ready.get('message')}" if ready.get("reason") else ""
        lines.append(f"{kind.kind} {meta['namespace']}/{meta['name']}{why}")
    more = f" (and {len(left) - 20} more)" if len(left) > 20 else ""
    return "; ".join(lines) + more


async def uninstall(
    http: httpx.AsyncClient,
    policy: Policy,
    *,
    namespaces: Sequence[str] | None = None,
    timeout: float = 240.0,
    deployment: tuple[str, str] | None = None,
    verify_after: float = 2.0,
    poll: float = 1.0,
    say: Callable[[str], None] = print,
) -> None:
    """What the chart's pre-delete hook does before Helm deletes the operator (see the module's
    docstring). Raises :class:`UninstallFailed` when the timeout passes first."""
    deadline = time.monotonic() + timeout
    scopes = _scopes(None, namespaces)
    if policy == "Retain":
        if deployment is not None:
            namespace, name = deployment
            if await stop_deployment(http, namespace, name, deadline=deadline, poll=poll):
                say(f"stopped the operator (Deployment {namespace}/{name} scaled to 0)")
        total = 0
        while True:
            report = await drain(http, namespaces=namespaces)
            total += len(report.drained)
            await asyncio.sleep(verify_after)
            again = await still_held(http, namespaces=namespaces)
            if not again:
                say(f"{total} resource(s) released from {FINALIZER}; their upstream objects are orphaned (Retain)")
                return
            if time.monotonic() >= deadline:
                names = ", ".join(f"{i.kind} {i.namespace}/{i.name}" for i in again)
                raise UninstallFailed(f"the finalizer keeps coming back on: {names}. Is another operator running?")
    # Delete: the operator, still running, deletes each upstream object and then the finalizer.
    requested = 0
    for kind, obj in await _resources(http, scopes):
        meta = obj["metadata"]
        if meta.get("deletionTimestamp"):
            continue
        response = await http.delete(_item_path(kind, meta["namespace"], meta["name"]))
        if response.status_code != 404:
            response.raise_for_status()
            requested += 1
    say(f"deleting {requested} resource(s); the operator deletes their upstream objects per deletionPolicy")
    while left := await _resources(http, scopes):
        if time.monotonic() >= deadline:
            raise UninstallFailed(
                f"{len(left)} resource(s) not deleted within {timeout:.0f}s, nothing orphaned: {_describe_left(left)}. "
                "Fix what blocks them and uninstall again, or set drain.policy=Retain to orphan them"
            )
        await asyncio.sleep(poll)
    # No resource is left to need a credentials Secret: free those the operator has not yet.
    freed = await drain(http, namespaces=namespaces, kinds=[SECRETS])
    say(f"all resources deleted; {len(freed.drained)} credentials Secret(s) released from {PROTECTION_FINALIZER}")


async def run_uninstall(
    kube_api_url: str | None = None,
    *,
    policy: Policy,
    kubeconfig: str | None = None,
    context: str | None = None,
    namespaces: Sequence[str] | None = None,
    timeout: float = 240.0,
    deployment: tuple[str, str] | None = None,
    verify_after: float = 2.0,
    out: TextIO | None = None,
) -> int:
    """The CLI's ``drain --policy``: 0 done, 1 not within the timeout (the reason printed)."""
    stream = out or sys.stdout

    def say(line: str) -> None:
        stream.write(line + "\n")
        stream.flush()

    async with client_from_config(kube_api_url, kubeconfig=kubeconfig, context=context) as http:
        try:
            await uninstall(
                http,
                policy,
                namespaces=namespaces,
                timeout=timeout,
                deployment=deployment,
                verify_after=verify_after,
                say=say,
            )
        except UninstallFailed as exc:
            say(f"drain --policy {policy} failed: {exc}")
            return 1
    return 0
