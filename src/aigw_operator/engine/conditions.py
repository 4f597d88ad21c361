"""Ready / Synced conditions in the standard Kubernetes shape.

``lastTransitionTime`` moves only when a condition's status flips, so that a
reconcile which finds nothing new produces an identical status (and no write).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

READY = "Ready"
SYNCED = "Synced"
PROGRESSING = "Progressing"

Status = Literal["True", "False", "Unknown"]


@dataclass(frozen=True)
class Condition:
    type: str
    status: Status
    reason: str
    message: str = ""


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_conditions(
    current: Sequence[Mapping[str, Any]] | None,
    wanted: Sequence[Condition],
    generation: int,
    now: str | None = None,
) -> list[dict[str, Any]]:
    """The conditions list after applying ``wanted``; others are kept as they are."""
    by_type = {c.get("type"): dict(c) for c in current or ()}
    stamp = now or now_rfc3339()
    for condition in wanted:
        previous = by_type.get(condition.type)
        flipped = previous is None or previous.get("status") != condition.status
        by_type[condition.type] = {
            "type": condition.type,
            "status": condition.status,
            "reason": condition.reason,
            "message": condition.message,
            "lastTransitionTime": stamp if flipped else previous.get("lastTransitionTime", stamp),  # type: ignore[union-attr]
            "observedGeneration": generation,
        }
    order = [READY, SYNCED, PROGRESSING]
    return sorted(by_type.values(), key=lambda c: (order.index(c["type"]) if c["type"] in order else 99, c["type"]))


def find(conditions: Sequence[Mapping[str, Any]] | None, type_: str) -> Mapping[str, Any] | None:
    for condition in conditions or ():
        if condition.get("type") == type_:
            return condition
    return None
