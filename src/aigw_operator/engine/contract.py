"""What a kind contributes to the loop: the adapter contract.

An adapter knows one upstream API and nothing of Kubernetes beyond a narrow view (namespace,
name, what the loop last recorded in the status, a Secret reader). Everything else is the
loop's: ownership, the create guard, replace, deletion, reporting.

Capabilities a kind may have are declared, never probed: each is a typed attribute that is
None when the kind lacks it (mypy checks the object a kind assigns against the protocol), and
static traits are data. The loop reads both once, when it is built.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Literal, Protocol, TypeVar

from aigw_operator.base.api import ConnectionDetailsTarget, KindInfo, SecretKeyRef
from aigw_operator.kube.credentials import ReadSecret

# An Event to post: (type, reason, message).
Event = tuple[str, str, str]

SpecT = TypeVar("SpecT", bound="ManagedSpec")
DesiredT = TypeVar("DesiredT")
ObservedT = TypeVar("ObservedT")
DesiredT_contra = TypeVar("DesiredT_contra", contravariant=True)
ObservedT_co = TypeVar("ObservedT_co", covariant=True)
ObservedT_contra = TypeVar("ObservedT_contra", contravariant=True)


class ManagedSpec(Protocol):
    """What the loop itself reads from every kind's spec, as written."""

    @property
    def credentials_secret_ref(self) -> SecretKeyRef | None: ...
    # None: Delete for an object the operator created, Orphan for one it adopted on request.
    @property
    def deletion_policy(self) -> Literal["Delete", "Orphan"] | None: ...
    # None: Full.
    @property
    def management_policy(self) -> Literal["Full", "ObserveOnly", "NoDelete"] | None: ...
    @property
    def write_connection_details_to(self) -> ConnectionDetailsTarget | None: ...


@dataclass(frozen=True)
class Traits:
    # The upstream object moves through states: a Progressing condition, short polls meanwhile.
    progressing: bool = False
    # No idempotency key and a duplicate costs money: the loop marks the resource (with a
    # resourceVersion precondition) before every create and searches before creating again.
    create_guard: bool = False
    # Without a configured key the upstream takes unauthenticated calls.
    credentials_optional: bool = False


@dataclass(frozen=True)
class KubeView:
    """All an adapter learns of Kubernetes."""

    namespace: str
    name: str
    uid: str
    # The status the loop last wrote (ids of dependent objects, the tenant a model lives in...).
    recorded: Mapping[str, Any]
    # The spec changed since readiness was last reported: what it asks for is the user's wish,
    # not a reaction to something the upstream did by itself.
    spec_changed: bool
    read_secret: ReadSecret
    deleting: bool = False
    # managementPolicy: ObserveOnly: ``desire`` may read the upstream, never write to it.
    observing: bool = False
    # Whether another live resource of this kind in this namespace refers to this Secret key:
    # an upstream object made from the key (a Baseten secret) is shared by all of them.
    shared_elsewhere: Callable[[SecretKeyRef], bool] = field(default=lambda ref: False)


class SecretUsers(Protocol):
    """Who refers to a Secret key: the controller knows every resource, the loop only its own."""

    def refers(self, kind: str, namespace: str, ref: SecretKeyRef, *, besides: str) -> bool: ...


@dataclass(frozen=True)
class Replace:
    """Fields the upstream cannot change in place: a new object must replace the old one."""

    fields: tuple[str, ...]
    # delete-first: never two objects at once (names must be free, or each one is billed);
    # create-first: the route never disappears.
    order: Literal["delete-first", "create-first"]
    # The spec allows it (replacePolicy: Recreate); otherwise ``refusal`` says what to do.
    allowed: bool
    refusal: str = ""


class ReplaceInstead(Exception):
    """Raised by ``update``: the upstream would not take a change in place after all (e.g. a
    slug rename refused by an API whose slugs became immutable)."""

    def __init__(self, fields: tuple[str, ...]) -> None:
        super().__init__(", ".join(fields))
        self.fields = fields


class Listing(Protocol[DesiredT_contra, ObservedT_co]):
    """A list call for batched drift checks, its items complete objects."""

    async def list_all(self, api_key: str, desired: DesiredT_contra) -> Mapping[str, ObservedT_co]: ...
    # When one key sees several collections (a registry's tenants): which one.
    def list_scope(self, desired: DesiredT_contra) -> str: ...


class PartialListing(Listing[DesiredT_contra, ObservedT], Protocol[DesiredT_contra, ObservedT]):
    """A list call whose items lack fields: the kind decides from what they have, and the loop
    still reads each object in full every ``full_observe_interval``."""

    def listed_unchanged(self, desired: DesiredT_contra, item: ObservedT, status: Mapping[str, Any]) -> bool: ...


class UniqueKey(Protocol[DesiredT_contra, ObservedT_contra]):
    """The upstream's unique key (a slug, a name): how a lost create is found, and what a rename
    must not take from another resource."""

    def unique_key(self, desired: DesiredT_contra) -> str: ...
    def item_key(self, item: ObservedT_contra) -> str: ...
    # When the upstream created the object (Unix time), None if it does not say: how a lost
    # create is told from an object someone else made under the same key.
    def item_created(self, item: ObservedT_contra) -> float | None: ...


class Search(Protocol[DesiredT_contra, ObservedT_co]):
    """For kinds without a unique key: look for the object of a create whose answer was lost,
    sent at Unix time ``since`` or later (the loop asks only then)."""

    async def find(self, api_key: str, desired: DesiredT_contra, since: float) -> ObservedT_co | None: ...


class Dependents(Protocol[DesiredT_contra, ObservedT_contra]):
    """Upstream objects that refer to the main one and live and die with it (provider keys)."""

    # Synced after the main object; returns their status fields.
    async def settle(self, api_key: str, desired: DesiredT_contra, observed: ObservedT_contra) -> dict[str, Any]: ...
    # Whether a routine resync may skip them.
    def current(self, desired: DesiredT_contra, status: Mapping[str, Any]) -> bool: ...


@dataclass(frozen=True)
class Readiness:
    ready: bool
    reason: str
    message: str = ""
    # The upstream is still moving towards the spec: poll at the short interval.
    progressing: bool = False


class Adapter(ABC, Generic[SpecT, DesiredT, ObservedT]):
    info: ClassVar[KindInfo]
    upstream: ClassVar[str]
    traits: ClassVar[Traits] = Traits()

    # Capabilities: None where the kind lacks one. At most one of the two listings.
    listing: Listing[DesiredT, ObservedT] | None = None
    partial_listing: PartialListing[DesiredT, ObservedT] | None = None
    unique: UniqueKey[DesiredT, ObservedT] | None = None
    search: Search[DesiredT, ObservedT] | None = None
    dependents: Dependents[DesiredT, ObservedT] | None = None

    @abstractmethod
    async def desire(self, api_key: str, spec: SpecT, view: KubeView) -> DesiredT:
        """The spec with what only Kubernetes knows filled in (names, Secret values); may put
        upstream objects the main one refers to in place first."""

    @abstractmethod
    async def get(self, api_key: str, desired: DesiredT, upstream_id: str) -> ObservedT: ...

    @abstractmethod
    async def create(self, api_key: str, desired: DesiredT) -> ObservedT: ...

    @abstractmethod
    def diff(self, desired: DesiredT, observed: ObservedT) -> dict[str, Any] | None:
        """The fields that differ and can change in place (None: nothing to send)."""

    @abstractmethod
    async def update(
        self, api_key: str, observed: ObservedT, desired: DesiredT, changes: dict[str, Any]
    ) -> ObservedT: ...

    @abstractmethod
    async def delete(self, api_key: str, desired: DesiredT, upstream_id: str) -> list[Event]:
        """Delete the object (NotFound: already gone); Events to post beside "Deleted"."""

    @abstractmethod
    def upstream_id(self, observed: ObservedT) -> str: ...

    @abstractmethod
    def readiness(self, desired: DesiredT, observed: ObservedT) -> Readiness: ...

    @abstractmethod
    def status_fields(self, observed: ObservedT) -> dict[str, Any]: ...

    async def release(self, api_key: str, desired: DesiredT) -> None:
        """Delete what ``desire`` put in place upstream for this resource (Baseten secrets made
        from its Secret keys), once the main object is gone or was never made. Called on every
        deletion that gets that far, whether or not there was a main object to delete."""
        return None

    def replacement(self, desired: DesiredT, observed: ObservedT) -> Replace | None:
        """Fields only a new object can take (None: everything can change in place)."""
        return None

    def desired_status(self, desired: DesiredT) -> dict[str, Any]:
        """Status fields the desired state itself determines (e.g. the secrets it refers to)."""
        return {}

    def connection_details(self, desired: DesiredT, observed: ObservedT) -> dict[str, str]:
        """What a client needs to call the upstream object, for spec.writeConnectionDetailsTo:
        stable UPPER_SNAKE keys (so that ``envFrom`` makes them environment variables), documented
        per kind in the README. Never an API key: the loop adds the one this resource uses only
        when the target is a Secret and the spec names the key (``includeApiKeyAs``)."""
        return {}

    def describe_update(self, desired: DesiredT, changes: dict[str, Any], before: ObservedT) -> list[Event]:
        """Events that say what an update meant better than "Updated <fields>" (empty: that)."""
        return []

    def describe_replace(self, desired: DesiredT, replace: Replace, before: ObservedT) -> list[Event]:
        """Events beside "Replaced", e.g. what lost its link to the old object."""
        return []


def check(adapter: Adapter[Any, Any, Any]) -> None:
    """Once, when a loop is built: a kind's declarations must be coherent."""
    if adapter.listing is not None and adapter.partial_listing is not None:
        raise TypeError(f"{adapter.info.kind}: a listing is complete or partial, not both")
    if adapter.unique is not None and adapter.search is not None:
        raise TypeError(f"{adapter.info.kind}: a unique key makes a search for lost creates needless")
    if adapter.unique is not None and adapter.listing is None and adapter.partial_listing is None:
        raise TypeError(f"{adapter.info.kind}: a unique key is looked up in a listing: declare one")
