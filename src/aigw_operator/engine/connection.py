"""Connection details: what an application needs to call the upstream object, written to the
ConfigMap or Secret ``spec.writeConnectionDetailsTo`` names, in the resource's namespace.

One object per resource, owned by it (``ownerReferences`` with ``controller: true``), so that
Kubernetes' garbage collector deletes it with the resource. Its data are the adapter's
``connection_details`` (stable UPPER_SNAKE keys, documented per kind in the README), and, only
in a Secret and only when the spec names the key (``includeApiKeyAs``), the API key the
resource uses. ``status.connectionDetails`` records the target and a digest of the data, so
that the object is written only when the digest or the target changed (or on a new spec
generation or reconcile request, which look at the object itself: one hand-deleted is written
again): a no-op resync writes nothing.

Safety: an object of that name this resource does not own (by uid) is never overwritten nor
deleted; the resource reports ``Ready=False reason=ConnectionDetailsConflict`` and a Warning,
and looks again at its next resync. A target renamed or removed: the old object is deleted if
this resource owns it.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Generic

import httpx

from aigw_operator import GROUP, VERSION
from aigw_operator.base.api import RECONCILE_REQUEST_ANNOTATION, ConnectionDetailsTarget
from aigw_operator.base.redaction import redact
from aigw_operator.engine.context import Context
from aigw_operator.engine.contract import DesiredT, ManagedSpec, ObservedT, SpecT
from aigw_operator.engine.reporting import Report
from aigw_operator.engine.resource import Resource
from aigw_operator.kube.client import CorePlural, KubeError
from aigw_operator.upstreams.http import credential_fingerprint

STATUS_KEY = "connectionDetails"
CONFLICT_REASON = "ConnectionDetailsConflict"
FAILED_REASON = "ConnectionDetailsFailed"
MANAGED_BY_LABELS = {"app.kubernetes.io/managed-by": "aigw-operator"}
# Attempts at one write when the object changes between the read and the write.
_ATTEMPTS = 3


@dataclass(frozen=True)
class Target:
    """A ConfigMap or a Secret in the resource's namespace."""

    plural: CorePlural
    name: str

    @property
    def kind(self) -> str:
        return "ConfigMap" if self.plural == "configmaps" else "Secret"

    @property
    def field(self) -> str:
        return "configMap" if self.plural == "configmaps" else "secret"

    @classmethod
    def of_spec(cls, spec: ConnectionDetailsTarget | None) -> Target | None:
        if spec is None:
            return None
        if spec.config_map:
            return cls("configmaps", spec.config_map)
        if spec.secret:
            return cls("secrets", spec.secret)
        return None

    @classmethod
    def of_status(cls, recorded: Any) -> Target | None:
        if not isinstance(recorded, Mapping):
            return None
        if recorded.get("configMap"):
            return cls("configmaps", str(recorded["configMap"]))
        if recorded.get("secret"):
            return cls("secrets", str(recorded["secret"]))
        return None

    def entry(self, digest: str, recorded: Any = None) -> dict[str, str | None]:
        """The status entry; a field of another kind that ``recorded`` still has is removed (the
        status is merge-patched, so its nested keys would otherwise stay)."""
        entry: dict[str, str | None] = {self.field: self.name, "digest": digest}
        other = "secret" if self.field == "configMap" else "configMap"
        if isinstance(recorded, Mapping) and other in recorded:
            entry[other] = None
        return entry


class ConnectionDetails(Generic[SpecT, DesiredT, ObservedT]):
    def __init__(self, context: Context[SpecT, DesiredT, ObservedT]) -> None:
        self.context = context
        # uid -> fingerprint of the API key last written under includeApiKeyAs (memory only: after
        # a restart each such resource is looked at once in full, which writes only if it changed).
        self._keys: dict[str, str] = {}

    def forget(self, uid: str) -> None:
        self._keys.pop(uid, None)

    def carry(self, api_key: str, resource: Resource, spec: ManagedSpec, report: Report) -> bool:
        """Before the listing shortcut: keep the status entry as it is, whichever path writes the
        status; and say whether a routine resync may leave the object alone (False: the target
        changed or was removed, the last write did not happen, or the API key to include is not
        the one last written)."""
        recorded = resource.status.get(STATUS_KEY) or None
        report.extra_status[STATUS_KEY] = recorded
        wanted = spec.write_connection_details_to
        target = Target.of_spec(wanted)
        if target is None or wanted is None:
            return recorded is None
        if recorded is None or Target.of_status(recorded) != target or not recorded.get("digest"):
            return False
        if wanted.include_api_key_as:
            return self._keys.get(resource.ref.uid) == credential_fingerprint(api_key)
        return True

    async def write(
        self,
        api_key: str,
        resource: Resource,
        spec: ManagedSpec,
        desired: DesiredT,
        observed: ObservedT,
        report: Report,
    ) -> None:
        """On the success path, before the status write: write the object if what it should hold
        changed, and record the result in the report (a conflict or a failure as a condition)."""
        uid = resource.ref.uid
        wanted = spec.write_connection_details_to
        target = Target.of_spec(wanted)
        recorded = resource.status.get(STATUS_KEY) or None
        old = Target.of_status(recorded)
        try:
            if target is None or wanted is None:
                report.extra_status[STATUS_KEY] = None
                self._keys.pop(uid, None)
                if old is not None:
                    await self._delete_owned(resource, old)
                return
            data = dict(self.context.adapter.connection_details(desired, observed))
            with_key = bool(wanted.include_api_key_as and target.plural == "secrets" and api_key)
            if with_key and wanted.include_api_key_as:
                data[wanted.include_api_key_as] = api_key
            digest = _digest(data)
            requested = resource.annotations.get(RECONCILE_REQUEST_ANNOTATION)
            look = (
                old != target
                or recorded is None
                or recorded.get("digest") != digest
                # A new spec or a request: the object itself is looked at (a user may have deleted it).
                or resource.status.get("observedGeneration") != resource.generation
                or (requested is not None and requested != resource.status.get("lastHandledReconcileAt"))
            )
            if look:
                foreign = await self._put(resource, target, data)
                if foreign is not None:
                    report.extra_status[STATUS_KEY] = target.entry("", recorded)
                    message = _conflict_message(resource, target, foreign)
                    report.fail(CONFLICT_REASON, message, set_ready=True)
                    report.event("Warning", CONFLICT_REASON, message)
                    return
            report.extra_status[STATUS_KEY] = target.entry(digest, recorded)
            if with_key:
                self._keys[uid] = credential_fingerprint(api_key)
            else:
                self._keys.pop(uid, None)
            if old is not None and old != target:
                await self._delete_owned(resource, old)
        except (httpx.HTTPError, KubeError) as exc:
            where = f"{target.kind} {target.name}" if target is not None else "the connection details"
            report.extra_status[STATUS_KEY] = target.entry("", recorded) if target is not None else recorded
            message = f"could not write {where}: {redact(str(exc)) or type(exc).__name__}"
            report.fail(FAILED_REASON, message, set_ready=False)
            report.event("Warning", FAILED_REASON, message)

    async def _put(self, resource: Resource, target: Target, data: Mapping[str, str]) -> Mapping[str, Any] | None:
        """Create or replace the object with ``data``: None when done, or the object of that name
        this resource does not own (left as it is)."""
        kube, namespace = self.context.kube, resource.ref.namespace
        for _ in range(_ATTEMPTS):
            existing = await kube.get_core(target.plural, namespace, target.name)
            if existing is None:
                if await kube.create_core(target.plural, namespace, _body(resource, target, data, None)) is not None:
                    return None
                continue  # made meanwhile by someone: look at it
            if not _owned(existing, resource.ref.uid):
                return existing
            if _holds(existing, target, data):
                return None
            body = _body(resource, target, data, existing)
            if await kube.replace_core(target.plural, namespace, target.name, body) is not None:
                return None
        raise KubeError(f"{target.kind} {namespace}/{target.name} kept changing while it was written")

    async def _delete_owned(self, resource: Resource, old: Target) -> None:
        """Delete the object the status last named, if this resource owns it (by uid)."""
        kube, namespace = self.context.kube, resource.ref.namespace
        existing = await kube.get_core(old.plural, namespace, old.name)
        if existing is not None and _owned(existing, resource.ref.uid):
            await kube.delete_core(old.plural, namespace, old.name, uid=str(existing["metadata"].get("uid") or ""))


def _digest(data: Mapping[str, str]) -> str:
    """What the status records of the data: a SHA-256, never the data (which may hold a key)."""
    return hashlib.sha256(json.dumps(dict(data), sort_keys=True).encode()).hexdigest()[:32]


def _owner_reference(resource: Resource) -> dict[str, Any]:
    ref = resource.ref
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": ref.kind,
        "name": ref.name,
        "uid": ref.uid,
        "controller": True,
        # No blockOwnerDeletion: it would only make a foreground deletion of the resource wait
        # for this object, which nothing needs, and where OwnerReferencesPermissionEnforcement
        # is on (OpenShift) setting it needs update on every kind's finalizers subresource.
    }


def _owned(obj: Mapping[str, Any], uid: str) -> bool:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or ()
    return bool(uid) and any(isinstance(r, Mapping) and r.get("uid") == uid for r in refs)


def _encoded(target: Target, data: Mapping[str, str]) -> dict[str, str]:
    if target.plural == "secrets":
        return {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    return dict(data)


def _holds(existing: Mapping[str, Any], target: Target, data: Mapping[str, str]) -> bool:
    labels = (existing.get("metadata") or {}).get("labels") or {}
    return (existing.get("data") or {}) == _encoded(target, data) and all(
        labels.get(k) == v for k, v in MANAGED_BY_LABELS.items()
    )


def _body(
    resource: Resource, target: Target, data: Mapping[str, str], existing: Mapping[str, Any] | None
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": target.name, "namespace": resource.ref.namespace}
    owner = _owner_reference(resource)
    if existing is not None:
        old = existing.get("metadata") or {}
        meta["resourceVersion"] = old.get("resourceVersion")
        meta["labels"] = {**(old.get("labels") or {}), **MANAGED_BY_LABELS}
        if old.get("annotations"):
            meta["annotations"] = old["annotations"]
        others = [r for r in old.get("ownerReferences") or () if r.get("uid") != resource.ref.uid]
        meta["ownerReferences"] = [owner, *others]
    else:
        meta["labels"] = dict(MANAGED_BY_LABELS)
        meta["ownerReferences"] = [owner]
    body: dict[str, Any] = {"apiVersion": "v1", "kind": target.kind, "metadata": meta}
    if target.plural == "secrets":
        body["type"] = "Opaque"
    body["data"] = _encoded(target, data)
    return body


def _conflict_message(resource: Resource, target: Target, foreign: Mapping[str, Any]) -> str:
    owners = [
        f"{r.get('kind')} {r.get('name')}"
        for r in (foreign.get("metadata") or {}).get("ownerReferences") or ()
        if isinstance(r, Mapping)
    ]
    owned = f"owned by {', '.join(owners)}" if owners else "not owned by any resource"
    return (
        f"{target.kind} {resource.ref.namespace}/{target.name} already exists and is {owned}, not by this "
        f"{resource.ref.kind}: it is never overwritten. Delete it, or name another {target.field} in "
        "spec.writeConnectionDetailsTo"
    )
