"""One upstream object, one resource: who manages which upstream object.

Built from what the watch shows (each resource's ``status.id``) as well as from the loop's own
results, so that after a restart every owner is known before any reconcile runs, whatever
order the objects are reconciled in. When two resources name the same object (a rename onto
another's slug, a copied manifest, a restore), the older resource keeps it: the same answer
in every process and after every restart.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Claimant:
    # Sort order is the precedence: the earliest-created resource wins, uid breaks ties.
    created: float
    uid: str
    name: str  # namespace/name, for messages


class Ownership:
    def __init__(self) -> None:
        self._claims: dict[str, dict[str, Claimant]] = {}  # upstream id -> uid -> claimant
        self._claimed: dict[str, str] = {}  # uid -> upstream id

    def record(self, claimant: Claimant, upstream_id: str | None) -> None:
        """``claimant``'s status names ``upstream_id`` (None: no object any more)."""
        previous = self._claimed.get(claimant.uid)
        if previous is not None and previous == upstream_id:
            self._claims[previous][claimant.uid] = claimant
            return
        self.release(claimant.uid)
        if upstream_id:
            self._claims.setdefault(upstream_id, {})[claimant.uid] = claimant
            self._claimed[claimant.uid] = upstream_id

    def holder(self, upstream_id: str, claimant: Claimant, *, named: bool) -> Claimant | None:
        """Who keeps ``upstream_id`` if ``claimant`` claims it: another resource, or None for
        ``claimant`` itself. ``named``: the claimant's status already names the object, so it
        competes by age; otherwise (adopting, renaming onto it) any existing owner keeps it."""
        claims = {uid: c for uid, c in (self._claims.get(upstream_id) or {}).items() if uid != claimant.uid}
        if not claims:
            return None
        first = min(claims.values())
        if named and claimant < first:
            return None
        return first

    def release(self, uid: str) -> None:
        upstream_id = self._claimed.pop(uid, None)
        if upstream_id is None:
            return
        claims = self._claims.get(upstream_id, {})
        claims.pop(uid, None)
        if not claims:
            self._claims.pop(upstream_id, None)
