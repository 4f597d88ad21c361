"""The loop's view of one custom resource, what it remembers of it, and how it writes to it."""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from aigw_operator.base.api import EXTERNAL_ID_ANNOTATION, KindInfo
from aigw_operator.kube.client import CorePlural, ObjectRef


class KubeWriter(Protocol):
    """Writes to the object return its new resourceVersion (None: the object is gone)."""

    async def patch_status(self, ref: ObjectRef, status: Mapping[str, Any]) -> str | None: ...
    async def post_event(self, ref: ObjectRef, type_: str, reason: str, message: str) -> None: ...
    async def patch_annotations(
        self, ref: ObjectRef, annotations: Mapping[str, str | None], *, expect_version: str | None = None
    ) -> str | None: ...
    # The ConfigMaps and Secrets of spec.writeConnectionDetailsTo (see engine/connection.py).
    async def get_core(self, plural: CorePlural, namespace: str, name: str) -> dict[str, Any] | None: ...
    async def create_core(
        self, plural: CorePlural, namespace: str, body: Mapping[str, Any]
    ) -> dict[str, Any] | None: ...
    async def replace_core(
        self, plural: CorePlural, namespace: str, name: str, body: Mapping[str, Any]
    ) -> dict[str, Any] | None: ...
    async def delete_core(self, plural: CorePlural, namespace: str, name: str, *, uid: str) -> None: ...


@dataclass(frozen=True)
class Resource:
    """The parts of a custom resource the loop reads."""

    ref: ObjectRef
    generation: int
    spec: Mapping[str, Any]
    status: Mapping[str, Any]
    annotations: Mapping[str, str]
    created: float | None = None  # creationTimestamp, as a Unix time
    version: str = ""  # metadata.resourceVersion of the body read

    @classmethod
    def from_body(cls, info: KindInfo, body: Mapping[str, Any]) -> Resource:
        meta = body.get("metadata", {})
        return cls(
            ref=ObjectRef(
                kind=info.kind,
                plural=info.plural,
                namespace=meta.get("namespace", ""),
                name=meta.get("name", ""),
                uid=meta.get("uid", ""),
            ),
            generation=int(meta.get("generation") or 0),
            spec=dict(body.get("spec") or {}),
            status=dict(body.get("status") or {}),
            annotations=dict(meta.get("annotations") or {}),
            created=unix_time(meta.get("creationTimestamp")),
            version=str(meta.get("resourceVersion") or ""),
        )

    @property
    def known_id(self) -> str | None:
        """The upstream object this resource names: the id its status records, else the one
        aigw.dev/external-id gives (a rebuild from Git, a restore without status, an adoption)."""
        known = self.status.get("id") or self.annotations.get(EXTERNAL_ID_ANNOTATION)
        return str(known) if known else None


@dataclass
class ObjectState:
    """What the loop remembers about one object between reconciles (in memory only)."""

    failures: int = 0
    events: dict[tuple[str, str], float] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Monotonic times: the last create attempt (a listing must be newer to prove it failed)
    # and the last full observation (GET) of the upstream object.
    create_attempted: float | None = None
    observed_at: float = field(default_factory=time.monotonic)
    # The create-pending mark of a create that was answered: its outcome is known.
    create_answered: str | None = None
    # The create-pending mark this process last wrote (Unix time): the resource read before the
    # write does not show it yet.
    create_marked_at: float | None = None
    # Monotonic time of a create whose outcome is unknown (no answer: a timeout, a dropped
    # connection). A slow upstream may still be carrying it out, so a listing made meanwhile
    # cannot show its object; in memory only, for kinds whose duplicates the upstream refuses.
    create_unknown_at: float | None = None
    # The resourceVersion of our last write to the object until a watch event brings it (and
    # when it was written): a body older than that misses what this loop did last time.
    written_version: str | None = None
    written_at: float = 0.0
    # The reason of the failure the last report gave (None: it gave none), for the metrics.
    reported_failure: str | None = None
    # Refusals in a row of this generation's spec by the upstream (see Reconciler), and the
    # monotonic time its next timed retry is due (None: not planned yet, e.g. after a restart).
    refusals: int = 0
    refused_generation: int | None = None
    retry_at: float | None = None

    def wrote(self, version: str | None) -> None:
        if version:
            self.written_version, self.written_at = version, time.monotonic()


@dataclass(frozen=True)
class Outcome:
    # Seconds until the next reconcile; None: only when the resource changes.
    requeue_after: float | None
    # For deletion: the upstream side is finished, the finalizer may go.
    done: bool = True
    # A refusal only a change (or a slow timed retry) cures, for the metrics.
    terminal: bool = False


def unix_time(stamp: str | None) -> float | None:
    if not stamp:
        return None
    try:
        return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
