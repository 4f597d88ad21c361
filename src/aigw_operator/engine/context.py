"""What the parts of one kind's loop share: the adapter and the services it works through
(Kubernetes, credentials, settings, reporting), who manages which upstream object, and the few
readings of a resource that more than one path makes (its spec, its API key, the adapter's
view of it, when to look at it again).

The loop, its create path and its finalize path each take this one object rather than each
other, so a part sees what it may use and nothing of the loop that composes it; and a resource
reads the same on every path.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, cast

from aigw_operator.base.api import PAUSED_ANNOTATION, RESYNC_ANNOTATION, SecretKeyRef
from aigw_operator.base.settings import Settings
from aigw_operator.engine import conditions as cond
from aigw_operator.engine.backoff import backoff
from aigw_operator.engine.contract import Adapter, DesiredT, KubeView, ObservedT, SecretUsers, SpecT
from aigw_operator.engine.ownership import Claimant, Ownership
from aigw_operator.engine.reporting import Report, Reporter
from aigw_operator.engine.resource import KubeWriter, ObjectState, Outcome, Resource
from aigw_operator.kube.credentials import Credentials, CredentialsMissing, CredentialsNotPermitted, SecretValue

logger = logging.getLogger("aigw_operator.reconcile")


class Halt(Exception):
    """A reconcile that has reported why it stops here, and when to come back: a part (a create
    that must wait, an object another resource manages) ends the whole sequence with it."""

    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome


@dataclass(frozen=True)
class Context(Generic[SpecT, DesiredT, ObservedT]):
    adapter: Adapter[SpecT, DesiredT, ObservedT]
    kube: KubeWriter
    credentials: Credentials
    settings: Settings
    reporter: Reporter
    # Which resource manages which upstream object: one upstream object, one resource.
    ownership: Ownership = field(default_factory=Ownership)
    secret_users: SecretUsers | None = None

    # ---------------------------------------------------------------- ownership

    def claim(self, resource: Resource, upstream_id: str) -> str | None:
        """Record that ``resource`` manages ``upstream_id``; the other owner's name if taken."""
        claimant = claimant_of(resource)
        holder = self.ownership.holder(upstream_id, claimant, named=resource.status.get("id") == upstream_id)
        if holder is not None:
            return holder.name
        self.ownership.record(claimant, upstream_id)
        return None

    def release(self, resource: Resource) -> None:
        self.ownership.release(resource.ref.uid)

    # ---------------------------------------------------------------- reading a resource

    def parse(self, resource: Resource) -> SpecT:
        return cast(SpecT, self.adapter.info.spec_model.model_validate(resource.spec))

    async def api_key(self, resource: Resource, ref: SecretKeyRef | None) -> str:
        try:
            return await self.credentials.api_key(self.adapter.upstream, resource.ref.namespace, ref)
        except CredentialsNotPermitted:
            # A key is configured but not for this namespace: calling without one would spend
            # the upstream's anonymous quota on the resource's behalf all the same.
            raise
        except CredentialsMissing:
            if ref is None and self.adapter.traits.credentials_optional:
                return ""
            raise

    def view(self, resource: Resource, *, deleting: bool = False, observing: bool = False) -> KubeView:
        async def read_secret(ref: SecretKeyRef) -> SecretValue:
            try:
                return await self.credentials.secret(resource.ref.namespace, ref)
            except CredentialsMissing:
                # Deleting never needs the values an object holds, and the Secret may be gone already.
                if deleting:
                    return SecretValue("", "")
                raise

        ready = cond.find(resource.status.get("conditions"), cond.READY)
        return KubeView(
            namespace=resource.ref.namespace,
            name=resource.ref.name,
            uid=resource.ref.uid,
            recorded=resource.status,
            spec_changed=ready is None or ready.get("observedGeneration") != resource.generation,
            read_secret=read_secret,
            deleting=deleting,
            observing=observing,
            shared_elsewhere=self._shared_elsewhere(resource),
        )

    def _shared_elsewhere(self, resource: Resource) -> Callable[[SecretKeyRef], bool]:
        users, kind, ref = self.secret_users, self.adapter.info.kind, resource.ref

        def shared(secret: SecretKeyRef) -> bool:
            return users is not None and users.refers(kind, ref.namespace, secret, besides=ref.uid)

        return shared

    # ---------------------------------------------------------------- reporting

    async def finish(
        self,
        resource: Resource,
        state: ObjectState,
        report: Report,
        observed: ObservedT | None,
        *,
        warning: bool = False,
    ) -> None:
        fields = self.adapter.status_fields(observed) if observed is not None else None
        await self.reporter.finish(resource, state, report, warning=warning, observed_status=fields)

    def describe(self, observed: ObservedT) -> str:
        return f"{self.adapter.upstream} object {self.adapter.upstream_id(observed)}"

    # ---------------------------------------------------------------- when to come back

    def resync_delay(self, resource: Resource) -> float:
        jitter = self.settings.resync_jitter
        return self.resync_interval(resource) * random.uniform(1 - jitter, 1 + jitter)

    def resync_interval(self, resource: Resource) -> float:
        interval = self.settings.resync_interval
        override = resource.annotations.get(RESYNC_ANNOTATION)
        if override:
            try:
                interval = max(float(override), 1.0)
            except ValueError:
                logger.warning(
                    "ignoring %s=%r on %s/%s: not a number of seconds",
                    RESYNC_ANNOTATION,
                    override,
                    resource.ref.namespace,
                    resource.ref.name,
                )
        return interval

    def backoff(self, failures: int) -> float:
        return backoff(failures - 1, self.settings.error_backoff_base, self.settings.error_backoff_cap)


def claimant_of(resource: Resource) -> Claimant:
    return Claimant(resource.created or 0.0, resource.ref.uid, f"{resource.ref.namespace}/{resource.ref.name}")


def deletion_policy(declared: Literal["Delete", "Orphan"] | None, status: Mapping[str, Any]) -> str:
    """What deleting the resource does to its upstream object: what the spec says, or, unset,
    Delete for an object this resource created and Orphan for one it adopted on request."""
    if declared is not None:
        return declared
    return "Orphan" if status.get("adopted") else "Delete"


def management_policy(resource: Resource) -> str:
    """Full (unset), NoDelete or ObserveOnly: read from the spec as stored, so that the finalize
    path knows it even for a spec that no longer parses."""
    return str(resource.spec.get("managementPolicy") or "Full")


def observe_only(resource: Resource) -> bool:
    return management_policy(resource) == "ObserveOnly"


def orphans(resource: Resource) -> str | None:
    """Why deleting ``resource`` leaves its upstream object in place (None: it is deleted)."""
    policy = management_policy(resource)
    if policy != "Full":
        return f"managementPolicy is {policy}"
    declared = resource.spec.get("deletionPolicy")
    if deletion_policy(declared, resource.status) == "Delete":
        return None
    return "deletionPolicy is Orphan" if declared else "adopted: deleted only with deletionPolicy: Delete"


def paused(resource: Resource) -> bool:
    """Whether the user has paused the resource (``aigw.dev/paused: "true"``): no upstream call and
    no write but saying so, on the reconcile and the finalize path alike."""
    return resource.annotations.get(PAUSED_ANNOTATION, "").strip().lower() == "true"
