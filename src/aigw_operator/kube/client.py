"""A small async Kubernetes API client for what kopf does not do for us:
reading Secrets, writing status only when it changed, and posting Events (aggregated as
client-go's event recorder does: a repeat is a count on the Event already there)."""

from __future__ import annotations

import datetime
import ssl
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from aigw_operator import GROUP, VERSION, __version__
from aigw_operator.base import metrics
from aigw_operator.base.redaction import redact
from aigw_operator.base.transport import AiohttpTransport


@dataclass(frozen=True)
class ObjectRef:
    """The Kubernetes object a reconcile is about."""

    kind: str
    plural: str
    namespace: str
    name: str
    uid: str = ""

    @property
    def path(self) -> str:
        return f"/apis/{GROUP}/{VERSION}/namespaces/{self.namespace}/{self.plural}/{self.name}"


@dataclass(frozen=True)
class Connection:
    """How to reach the API server (as kopf's login handlers find it)."""

    server: str
    token: str | None = None
    scheme: str | None = "Bearer"
    ca_path: str | None = None
    ca_data: bytes | None = None
    insecure: bool = False
    certificate_path: str | None = None
    private_key_path: str | None = None


# Events remembered for aggregation, the least recently posted forgotten first (client-go's
# event correlator keeps 4096 as well).
EVENT_CACHE_SIZE = 4096

# What makes two Events one: the object (its uid too: a namesake created later is another
# object), the type, the reason and the message, as client-go's aggregation key has them.
EventKey = tuple[str, str, str, str, str, str, str]


# The core objects the operator writes for applications (connection details).
CorePlural = Literal["configmaps", "secrets"]


def _core_path(plural: CorePlural, namespace: str, name: str | None = None) -> str:
    path = f"/api/v1/namespaces/{namespace}/{plural}"
    return f"{path}/{name}" if name else path


class KubeError(Exception):
    """A Kubernetes request refused or failed: its method, path and status code, nothing of the body."""


def _raise_for_status(response: httpx.Response) -> None:
    if response.is_error:
        request = response.request
        raise KubeError(f"{request.method} {request.url.path}: {response.status_code} {response.reason_phrase}")


class WriteConflict(Exception):
    """A write made on a precondition (the object's resourceVersion) found the object changed."""


class KubeClient:
    def __init__(self, connection: Connection, *, component: str = "aigw-operator", timeout: float = 30.0) -> None:
        # Says who is asking, in API server audit logs (and the emulator's access counts).
        headers = {"Accept": "application/json", "User-Agent": f"{component}/{__version__}"}
        if connection.token:
            headers["Authorization"] = f"{connection.scheme or 'Bearer'} {connection.token}"
        verify: ssl.SSLContext | bool = not connection.insecure
        if not connection.insecure and (connection.ca_path or connection.ca_data):
            verify = ssl.create_default_context(
                cafile=connection.ca_path,
                cadata=connection.ca_data.decode() if connection.ca_data else None,
            )
        if isinstance(verify, ssl.SSLContext) and connection.certificate_path:
            verify.load_cert_chain(connection.certificate_path, connection.private_key_path)
        self._http = httpx.AsyncClient(
            base_url=connection.server,
            headers=headers,
            timeout=timeout,
            transport=AiohttpTransport(verify=verify),
        )
        self.component = component
        # client-go's host label: the API server's host[:port].
        self.host = httpx.URL(connection.server).netloc.decode("ascii")
        # The Event each key was last posted as, and its count.
        self._events: OrderedDict[EventKey, tuple[str, int]] = OrderedDict()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, method: str, path: str, *, json: Any = None, merge_patch: bool = False) -> httpx.Response:
        """Every request of this client, counted as client-go counts them (rest_client_requests_total)."""
        headers = {"Content-Type": "application/merge-patch+json"} if merge_patch else None
        try:
            response = await self._http.request(method, path, json=json, headers=headers)
        except Exception:
            metrics.observe_kube_request(self.host, method, None)
            raise
        metrics.observe_kube_request(self.host, method, response.status_code)
        return response

    async def get(self, path: str) -> dict[str, Any] | None:
        response = await self._send("GET", path)
        if response.status_code == 404:
            return None
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    async def get_secret(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return await self.get(f"/api/v1/namespaces/{namespace}/secrets/{name}")

    async def set_secret_finalizers(
        self, namespace: str, name: str, finalizers: list[str], resource_version: str
    ) -> bool:
        """Replace a Secret's finalizers if it is still at ``resource_version``: False on a conflict."""
        body = {"metadata": {"finalizers": finalizers, "resourceVersion": resource_version}}
        path = f"/api/v1/namespaces/{namespace}/secrets/{name}"
        response = await self._send("PATCH", path, json=body, merge_patch=True)
        if response.status_code == 409:
            return False
        if response.status_code != 404:
            response.raise_for_status()
        return True

    # ------------------------------------------------------------------ ConfigMaps and Secrets it writes

    # (spec.writeConnectionDetailsTo: one object per resource, owned by it). The bodies are
    # never logged, and an error says only the method, the path and the status code.

    async def get_core(self, plural: CorePlural, namespace: str, name: str) -> dict[str, Any] | None:
        return await self.get(_core_path(plural, namespace, name))

    async def create_core(self, plural: CorePlural, namespace: str, body: Mapping[str, Any]) -> dict[str, Any] | None:
        """The created object; None if one of that name exists already (409)."""
        response = await self._send("POST", _core_path(plural, namespace), json=body)
        if response.status_code == 409:
            return None
        _raise_for_status(response)
        result: dict[str, Any] = response.json()
        return result

    async def replace_core(
        self, plural: CorePlural, namespace: str, name: str, body: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """The object after a PUT on the resourceVersion in ``body``; None if it moved on or is gone."""
        response = await self._send("PUT", _core_path(plural, namespace, name), json=body)
        if response.status_code in (404, 409):
            return None
        _raise_for_status(response)
        result: dict[str, Any] = response.json()
        return result

    async def delete_core(self, plural: CorePlural, namespace: str, name: str, *, uid: str) -> None:
        """Delete the object if it is still the one with ``uid`` (a namesake made since is left alone)."""
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": uid}}
        response = await self._send("DELETE", _core_path(plural, namespace, name), json=body)
        if response.status_code not in (404, 409):
            _raise_for_status(response)

    # ------------------------------------------------------------------ Reviews (/metrics access)

    async def review_token(self, token: str) -> Mapping[str, Any]:
        """A TokenReview's status: whom the API server says the bearer ``token`` belongs to
        (``authenticated``, ``user``), as controller-runtime's secure metrics serving asks it."""
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}}
        response = await self._send("POST", "/apis/authentication.k8s.io/v1/tokenreviews", json=body)
        response.raise_for_status()
        status: Mapping[str, Any] = response.json().get("status") or {}
        return status

    async def review_access(self, user: Mapping[str, Any], verb: str, path: str) -> Mapping[str, Any]:
        """A SubjectAccessReview's status (``allowed``, ``reason``): may ``user`` (a TokenReview's
        status.user) ``verb`` the non-resource URL ``path``?"""
        spec: dict[str, Any] = {"nonResourceAttributes": {"path": path, "verb": verb}}
        for ours, theirs in (("user", "username"), ("uid", "uid"), ("groups", "groups"), ("extra", "extra")):
            if user.get(theirs):
                spec[ours] = user[theirs]
        body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec}
        response = await self._send("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", json=body)
        response.raise_for_status()
        status: Mapping[str, Any] = response.json().get("status") or {}
        return status

    # ------------------------------------------------------------------ Leases (leader election)

    def _lease_path(self, namespace: str, name: str | None = None) -> str:
        path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
        return f"{path}/{name}" if name else path

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self.get(self._lease_path(namespace, name))

    async def create_lease(self, namespace: str, name: str, spec: Mapping[str, Any]) -> dict[str, Any] | None:
        """The created Lease; None if another process created it first (409)."""
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": name}, "spec": spec}
        response = await self._send("POST", self._lease_path(namespace), json=body)
        if response.status_code == 409:
            return None
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    async def replace_lease(
        self, namespace: str, name: str, spec: Mapping[str, Any], resource_version: str
    ) -> dict[str, Any] | None:
        """The Lease after a PUT on its resourceVersion; None if another writer moved it on (409)."""
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": name, "namespace": namespace, "resourceVersion": resource_version},
            "spec": spec,
        }
        response = await self._send("PUT", self._lease_path(namespace, name), json=body)
        if response.status_code in (404, 409):
            return None
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    async def patch_status(self, ref: ObjectRef, status: Mapping[str, Any]) -> str | None:
        """Merge-patch the status subresource: the new resourceVersion, None when the object is gone."""
        return await self._patch(f"{ref.path}/status", {"status": dict(status)})

    async def patch_annotations(
        self, ref: ObjectRef, annotations: Mapping[str, str | None], *, expect_version: str | None = None
    ) -> str | None:
        """Merge-patch annotations (None removes one): the new resourceVersion, None when the object
        is gone. With ``expect_version``, only if the object is still at that resourceVersion
        (else WriteConflict): a guard another process may be writing at the same time."""
        metadata: dict[str, Any] = {"annotations": dict(annotations)}
        if expect_version:
            metadata["resourceVersion"] = expect_version
        return await self._patch(ref.path, {"metadata": metadata})

    async def _patch(self, path: str, body: Mapping[str, Any]) -> str | None:
        response = await self._send("PATCH", path, json=body, merge_patch=True)
        if response.status_code == 404:
            return None
        if response.status_code == 409:
            raise WriteConflict(path)
        response.raise_for_status()
        version: str = response.json().get("metadata", {}).get("resourceVersion", "")
        return version

    async def post_event(self, ref: ObjectRef, type_: str, reason: str, message: str) -> None:
        """Post an Event, or count a repeat on the one posted before (same object, type, reason
        and message): its ``count`` goes up and ``lastTimestamp`` moves, as ``kubectl describe``
        shows ("x3 over 10m"), instead of a new object per repeat. Which Event that is lives in
        this process's memory; after a restart, or once the Event has expired (a 404), the next
        one is a new Event again."""
        now = datetime.datetime.now(datetime.UTC)
        stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        text = redact(message)[:1024]
        key: EventKey = (ref.namespace, ref.kind, ref.name, ref.uid, type_, reason, text)
        seen = self._events.get(key)
        if seen is not None:
            name, count = seen
            path = f"/api/v1/namespaces/{ref.namespace}/events/{name}"
            response = await self._send(
                "PATCH", path, json={"count": count + 1, "lastTimestamp": stamp}, merge_patch=True
            )
            if response.status_code != 404:
                response.raise_for_status()
                self._remember_event(key, name, int(response.json().get("count") or count + 1))
                return
            del self._events[key]  # expired: post it anew
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{ref.name}.", "namespace": ref.namespace},
            "involvedObject": {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": ref.kind,
                "name": ref.name,
                "namespace": ref.namespace,
                "uid": ref.uid,
            },
            "type": type_,
            "reason": reason,
            "message": text,
            "source": {"component": self.component},
            "reportingComponent": self.component,
            "reportingInstance": self.component,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "eventTime": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "action": reason,
            "count": 1,
        }
        response = await self._send("POST", f"/api/v1/namespaces/{ref.namespace}/events", json=event)
        response.raise_for_status()
        self._remember_event(key, str(response.json()["metadata"]["name"]), 1)

    def _remember_event(self, key: EventKey, name: str, count: int) -> None:
        self._events[key] = (name, count)
        self._events.move_to_end(key)
        while len(self._events) > EVENT_CACHE_SIZE:
            self._events.popitem(last=False)
