"""Leader election on a coordination.k8s.io/v1 Lease, as client-go's leaderelection does it.

Every write to the Lease is a PUT on the resourceVersion last read, so of two candidates only
one can take or renew it. Expiry is judged by the time this process last saw the Lease change
(its own clock, never the holder's timestamps), so clock skew between nodes does not matter.
Timing, with controller-runtime's defaults: a leader renews every ``retry_period`` (2 s);
one that has not renewed for ``renew_deadline`` (10 s) stops at once; a Lease that nobody
renewed for ``lease_duration`` (15 s) may be taken. Since renew_deadline < lease_duration,
a leader that is cut off has stopped writing before another can lead. A leader that stops
cleanly releases the Lease (empty holder), so a standby takes over within one retry period.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from aigw_operator.base import metrics
from aigw_operator.base.redaction import redact
from aigw_operator.base.settings import LeaderElectionSettings

logger = logging.getLogger("aigw_operator.leader")


class LeaseClient(Protocol):
    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    async def create_lease(self, namespace: str, name: str, spec: Mapping[str, Any]) -> dict[str, Any] | None: ...
    async def replace_lease(
        self, namespace: str, name: str, spec: Mapping[str, Any], resource_version: str
    ) -> dict[str, Any] | None: ...


def default_identity() -> str:
    # Outside a pod: unique per process, since two candidates with one identity would both lead.
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def default_namespace() -> str:
    return os.environ.get("POD_NAMESPACE") or "default"


def _micro_time() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(self, client: LeaseClient, settings: LeaderElectionSettings) -> None:
        self.client = client
        self.settings = settings
        self.identity = settings.identity or default_identity()
        self.namespace = settings.lease_namespace or default_namespace()
        self.name = settings.lease_name
        self.leading = False
        # The Lease as last seen, and when (monotonic) it last changed: the basis of expiry.
        self._seen: tuple[str, str, str] | None = None  # holder, renewTime, resourceVersion
        self._seen_at = 0.0
        self._renewed_at = 0.0
        self._version = ""
        # Monotonic time of the last successful read or write of the Lease (for liveness).
        self.contact_at = time.monotonic()
        # A renewal and the release never overlap: a release sent while a renewal is in flight
        # carries the resourceVersion from before it, is refused (409), and the Lease is left to
        # expire, so the next leader would wait out the lease duration instead of taking it at once.
        self._writing = asyncio.Lock()

    async def acquire(self, stopping: Callable[[], bool]) -> bool:
        """Wait until this process holds the Lease (True), or ``stopping()`` (False)."""
        logger.info("waiting to lead: Lease %s/%s as %s", self.namespace, self.name, self.identity)
        while not stopping():
            if await self._try():
                self._became(True)
                return True
            await self._pause()
        return False

    async def keep(self, lost: Callable[[], None]) -> None:
        """Renew until a renewal has failed for ``renew_deadline``; then call ``lost`` and return."""
        while self.leading:
            await self._pause()
            async with self._writing:
                if not self.leading:
                    return  # released meanwhile: a renewal now would take the freed Lease back
                renewed = await self._try()
            if renewed:
                continue
            if time.monotonic() - self._renewed_at >= self.settings.renew_deadline:
                self._became(False)
                lost()
                return

    async def release(self) -> None:
        """Give the Lease up, so that a standby need not wait for it to expire."""
        async with self._writing:
            if not self.leading:
                return
            self._became(False)
            spec = {
                "holderIdentity": "",
                "leaseDurationSeconds": 1,
                "renewTime": _micro_time(),
            }
            try:
                released = await self.client.replace_lease(self.namespace, self.name, spec, self._version)
            except Exception as exc:  # it expires by itself
                logger.warning("could not release Lease %s/%s: %s", self.namespace, self.name, redact(str(exc)))
                return
            if released is None:
                logger.warning("could not release Lease %s/%s: it changed meanwhile", self.namespace, self.name)

    async def _try(self) -> bool:
        """One attempt to take or renew the Lease; True if this process holds it now."""
        try:
            return await self._try_once()
        except Exception as exc:  # an unreachable API server: try again next period
            logger.warning("Lease %s/%s: %s", self.namespace, self.name, redact(str(exc)))
            return False

    async def _try_once(self) -> bool:
        lease = await self.client.get_lease(self.namespace, self.name)
        self.contact_at = time.monotonic()
        duration = round(self.settings.lease_duration)
        now = _micro_time()
        if lease is None:
            new = {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": duration,
                "acquireTime": now,
                "renewTime": now,
                "leaseTransitions": 0,
            }
            return self._held(await self.client.create_lease(self.namespace, self.name, new))
        spec: dict[str, Any] = dict(lease.get("spec") or {})
        version = str((lease.get("metadata") or {}).get("resourceVersion", ""))
        holder = str(spec.get("holderIdentity") or "")
        seen = (holder, str(spec.get("renewTime", "")), version)
        if seen != self._seen:
            self._seen, self._seen_at = seen, time.monotonic()
        held_for = float(spec.get("leaseDurationSeconds") or duration)
        if holder and holder != self.identity and time.monotonic() - self._seen_at < held_for:
            return False  # someone else's, and alive as far as we can tell
        mine = holder == self.identity
        wanted = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": duration,
            "acquireTime": spec.get("acquireTime") if mine else now,
            "renewTime": now,
            "leaseTransitions": int(spec.get("leaseTransitions") or 0) + (0 if mine else 1),
        }
        return self._held(await self.client.replace_lease(self.namespace, self.name, wanted, version))

    def _held(self, lease: Mapping[str, Any] | None) -> bool:
        if lease is None:
            return False  # another candidate wrote first
        self._version = str((lease.get("metadata") or {}).get("resourceVersion", ""))
        spec = lease.get("spec") or {}
        self._seen = (self.identity, str(spec.get("renewTime", "")), self._version)
        self._seen_at = self._renewed_at = self.contact_at = time.monotonic()
        return True

    def _became(self, leading: bool) -> None:
        if leading == self.leading:
            return
        self.leading = leading
        metrics.LEADER.labels(self.name).set(1 if leading else 0)
        metrics.LEADERSHIP_CHANGES.labels(self.name).inc()
        if leading:
            logger.info("leading: acquired Lease %s/%s as %s", self.namespace, self.name, self.identity)
        else:
            logger.warning("no longer leading: Lease %s/%s (%s)", self.namespace, self.name, self.identity)

    async def _pause(self) -> None:
        # client-go's JitterFactor of 1.2 on the retry period, scaled down: spread, never faster.
        await asyncio.sleep(self.settings.retry_period * random.uniform(1.0, 1.2))
