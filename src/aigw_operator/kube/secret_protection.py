"""Credentials Secrets outlive the resources that need them to delete their upstream objects.

When a namespace is deleted, the namespace controller deletes its Secrets and its custom
resources in no order anyone controls. A resource whose ``credentialsSecretRef`` Secret went
first could never delete its upstream object, so it would keep its finalizer, and the
namespace would stay Terminating forever (no one may create the Secret again there). As
Crossplane protects a ProviderConfig that is in use, the operator puts a finalizer on every
Secret a resource uses as its credentials, before anything is created upstream with it, and
takes it off when no resource that refers to the Secret is left. A deleted Secret thus stays
readable, with a deletionTimestamp, until the last such resource has finished its deletion.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, Protocol

from aigw_operator.base.redaction import redact

PROTECTION_FINALIZER = "aigw.dev/credentials-in-use"
logger = logging.getLogger("aigw_operator.secret_protection")

SecretId = tuple[str, str]  # namespace, name


class SecretFinalizers(Protocol):
    async def get_secret(self, namespace: str, name: str) -> Mapping[str, Any] | None: ...

    # Replaces the finalizers if the Secret is still at ``resource_version`` (False: it moved on).
    async def set_secret_finalizers(
        self, namespace: str, name: str, finalizers: list[str], resource_version: str
    ) -> bool: ...


class SecretProtection:
    def __init__(self, kube: SecretFinalizers) -> None:
        self._kube = kube
        self._uses: dict[str, SecretId] = {}  # resource uid -> the credentials Secret it names
        self._protected: set[SecretId] = set()  # protected by this process, as far as it knows
        self._protecting: dict[SecretId, asyncio.Future[bool]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def note(self, uid: str, namespace: str, secret: str | None) -> None:
        """What the watch shows: the credentials Secret a resource refers to (None: none).
        A Secret no resource refers to any more is released."""
        previous = self._uses.get(uid)
        current = (namespace, secret) if secret else None
        if previous == current:
            return
        if current is None:
            self._uses.pop(uid, None)
        else:
            self._uses[uid] = current
        if previous is not None:
            self._later(self.release_if_unused(previous))

    def forget(self, uid: str) -> None:
        """The resource is gone (its deletion finished, or it was removed without us)."""
        previous = self._uses.pop(uid, None)
        if previous is not None:
            self._later(self.release_if_unused(previous))

    def in_use(self, secret: SecretId) -> bool:
        return secret in self._uses.values()

    async def protect(self, namespace: str, name: str) -> None:
        """Before the first upstream write with this Secret's key: keep it while it is needed.
        A burst of resources sharing one Secret shares one write."""
        secret = (namespace, name)
        if secret in self._protected:
            return
        pending = self._protecting.get(secret)
        if pending is None:
            pending = self._protecting[secret] = asyncio.ensure_future(self._update(secret, add=True))
            pending.add_done_callback(lambda _: self._protecting.pop(secret, None))
        if await asyncio.shield(pending):
            self._protected.add(secret)

    async def release_if_unused(self, secret: SecretId) -> None:
        if self.in_use(secret):
            return
        self._protected.discard(secret)
        await self._update(secret, add=False)

    async def aclose(self) -> None:
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=10)

    async def _update(self, secret: SecretId, *, add: bool) -> bool:
        """Add or remove our finalizer; True when the Secret ends up as wanted."""
        namespace, name = secret
        try:
            for _ in range(5):  # a concurrent writer moved the resourceVersion on: read again
                body = await self._kube.get_secret(namespace, name)
                if body is None:
                    return not add
                meta = body.get("metadata") or {}
                finalizers = list(meta.get("finalizers") or ())
                if (PROTECTION_FINALIZER in finalizers) == add:
                    return True
                if add and meta.get("deletionTimestamp"):
                    return False  # going already: too late to protect, and it cannot be re-added
                others = [f for f in finalizers if f != PROTECTION_FINALIZER]
                wanted = [*others, PROTECTION_FINALIZER] if add else others
                version = str(meta.get("resourceVersion", ""))
                if await self._kube.set_secret_finalizers(namespace, name, wanted, version):
                    return True
        except Exception as exc:  # protection is a safety net: never fail a reconcile for it
            logger.warning(
                "could not %s the finalizer %s on Secret %s/%s: %s",
                "add" if add else "remove",
                PROTECTION_FINALIZER,
                namespace,
                name,
                redact(str(exc)),
            )
        return False

    def _later(self, work: Any) -> None:
        try:
            task = asyncio.get_running_loop().create_task(work)
        except RuntimeError:  # no loop (a unit test's watch event): nothing was protected here
            work.close()
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
