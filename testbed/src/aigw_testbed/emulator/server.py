"""A Kubernetes API emulator that the real kopf operator can run against on loopback.

kmock's :class:`~kmock.KubernetesEmulator` only merges dicts. kopf relies on more of the
API server's contract: ``resourceVersion`` bumped on every effective write (and used in
``test`` ops of JSON patches), ``generation`` bumped on spec changes only, the ``/status``
subresource, finalizers with ``deletionTimestamp``, watches resumable from a
resourceVersion, and discovery that includes namespaces and CRDs. This module keeps its own
store with those semantics and reuses kmock's HTTP handler, request parsing and DSL (user
reactions declared with ``emulator[...] << ...`` still take precedence, e.g. to inject faults).

See ``docs/emulator.md`` for every known difference from a real API server.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import contextvars
import copy
import datetime
import json
import math
import re
import secrets
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import EllipsisType, TracebackType
from typing import Any, Literal, Self

import aiohttp.web
import attrs
import jsonpatch
import kmock

from aigw_testbed.emulator.admission import Invalid, prune_unknown_fields

JSON = dict[str, Any]
Admission = Callable[[JSON, JSON, JSON | None], JSON]

_CRD_GROUP = "apiextensions.k8s.io"
_CRD_PLURAL = "customresourcedefinitions"
_NAME_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # the API server's generateName alphabet
_MAIN_VERBS = ("create", "delete", "get", "list", "patch", "update", "watch")
_SUB_VERBS = ("get", "patch", "update")
_READ_VERBS = frozenset({"get", "list", "watch"})
# The namespaces the API server's NamespaceLifecycle admission refuses to delete.
_IMMORTAL_NAMESPACES = frozenset({"default", "kube-system", "kube-public"})
_FIELD_VALIDATIONS = ("", "Ignore", "Strict", "Warn")  # sorted, as the API server lists them
WriteOrder = Literal["natural", "event-first", "response-first"]
_WRITE_VERBS = frozenset({"create", "update", "patch", "delete"})
# Fields only the server sets; client-sent values are ignored on every main-resource write.
_SYSTEM_META = (
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
    "resourceVersion",
    "namespace",
    "name",
    "selfLink",
    "generateName",
)


class ApiError(Exception):
    """An API failure rendered as a ``v1/Status`` body with the matching HTTP code."""

    def __init__(self, code: int, reason: str, message: str, details: JSON | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> JSON:
        body: JSON = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


@dataclass(frozen=True)
class ResourceType:
    """One served group/version/plural, as announced in discovery."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str = ""
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: frozenset[str] = frozenset()
    crd_name: str | None = None  # set for custom resources only
    tracks_generation: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        # The spelling the API server uses in messages: "widgets.test.aigw.dev", "secrets".
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources


_BUILTINS: tuple[ResourceType, ...] = (
    ResourceType("", "v1", "namespaces", "Namespace", False, "namespace", ("ns",), subresources=frozenset({"status"})),
    ResourceType("", "v1", "secrets", "Secret", True, "secret"),
    ResourceType("", "v1", "configmaps", "ConfigMap", True, "configmap", ("cm",)),
    ResourceType("", "v1", "events", "Event", True, "event", ("ev",)),
    ResourceType("", "v1", "serviceaccounts", "ServiceAccount", True, "serviceaccount", ("sa",)),
    ResourceType(
        _CRD_GROUP,
        "v1",
        _CRD_PLURAL,
        "CustomResourceDefinition",
        False,
        "customresourcedefinition",
        ("crd", "crds"),
        ("api-extensions",),
        frozenset({"status"}),
        tracks_generation=True,
    ),
    ResourceType("coordination.k8s.io", "v1", "leases", "Lease", True, "lease"),
    ResourceType("events.k8s.io", "v1", "events", "Event", True, "event", ("ev",)),
    # Reviews: create only, answered from ``KubeEmulator.tokens`` and ``allowed``, never stored.
    ResourceType("authentication.k8s.io", "v1", "tokenreviews", "TokenReview", False, "tokenreview"),
    ResourceType(
        "authorization.k8s.io", "v1", "subjectaccessreviews", "SubjectAccessReview", False, "subjectaccessreview"
    ),
)
_REVIEWS = frozenset({("authentication.k8s.io", "tokenreviews"), ("authorization.k8s.io", "subjectaccessreviews")})


#: ``KubeEmulator.on_write``: (resource type, watch event type, the object as stored, a copy).
WriteHook = Callable[[ResourceType, str, JSON], None]


@dataclass
class _RequestState:
    """What one HTTP write request carries through the store code: its ``fieldValidation``
    directive and the warnings it collects (``Warning: 299`` headers)."""

    field_validation: str = "Warn"  # the API server's default when the client sends none
    warnings: list[str] = field(default_factory=list)


# Per request (each aiohttp handler runs in its own task, hence its own context). Writes made
# by the emulator itself (its namespace controller, ``register_crd``) see None: no decoding
# warnings, unknown fields pruned silently.
_REQUEST: contextvars.ContextVar[_RequestState | None] = contextvars.ContextVar("kube_emulator_request", default=None)


@dataclass(frozen=True)
class _Event:
    rv: int
    group: str
    plural: str
    type: str
    obj: JSON
    prev: JSON | None  # the state before a MODIFIED, so that selector transitions can be seen


@dataclass(eq=False)
class _Watcher:
    group: str
    plural: str
    version: str
    namespace: str | None
    labels: list[tuple[str, str, frozenset[str]]]
    fields: list[tuple[str, str, str]]
    queue: asyncio.Queue[tuple[str, JSON, int] | None] = field(default_factory=asyncio.Queue)
    overflowed: bool = False
    queued_rv: int = 0  # the resourceVersion of the last live event queued for this watch
    written_rv: int = 0  # ... and of the last one written to its connection
    progress: asyncio.Event = field(default_factory=asyncio.Event)  # set after each written event


# --- selectors -----------------------------------------------------------------------------------

_LABEL_TERM = re.compile(
    r"^\s*(?P<neg>!)?\s*(?P<key>[A-Za-z0-9][-A-Za-z0-9_./]*)\s*"
    r"(?:(?P<op>==|=|!=)\s*(?P<val>[-A-Za-z0-9_.]*)"
    r"|\s+(?P<setop>in|notin)\s*\((?P<vals>[^()]*)\))?\s*$"
)


def _split_outside_parens(text: str) -> Iterator[str]:
    depth, start = 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            yield text[start:i]
            start = i + 1
    yield text[start:]


def parse_label_selector(text: str | None) -> list[tuple[str, str, frozenset[str]]]:
    """Parse a ``labelSelector`` into (key, operator, values) requirements."""
    if not text:
        return []
    result: list[tuple[str, str, frozenset[str]]] = []
    for term in _split_outside_parens(text):
        match = _LABEL_TERM.match(term)
        if not match or (match["neg"] and (match["op"] or match["setop"])):
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {term.strip()!r}")
        key = match["key"]
        if match["neg"]:
            result.append((key, "!", frozenset()))
        elif match["op"]:
            op = "!=" if match["op"] == "!=" else "="
            result.append((key, op, frozenset({match["val"]})))
        elif match["setop"]:
            values = frozenset(v.strip() for v in match["vals"].split(",") if v.strip())
            result.append((key, match["setop"], values))
        else:
            result.append((key, "exists", frozenset()))
    return result


_COMMON_FIELDS = frozenset({"metadata.name", "metadata.namespace"})
# The field labels the API server supports beyond the common two (its per-kind field label
# conversion functions); custom resources get only the common ones.
_FIELD_LABELS: dict[tuple[str, str], frozenset[str]] = {
    ("", "events"): _COMMON_FIELDS
    | {
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    },
    ("", "secrets"): _COMMON_FIELDS | {"type"},
    ("", "namespaces"): _COMMON_FIELDS | {"status.phase"},
}


def parse_field_selector(text: str | None, allowed: frozenset[str] = _COMMON_FIELDS) -> list[tuple[str, str, str]]:
    """Parse a ``fieldSelector``; only the ``allowed`` field labels are accepted."""
    if not text:
        return []
    result: list[tuple[str, str, str]] = []
    for term in text.split(","):
        match = re.match(r"^\s*([A-Za-z.]+)\s*(==|=|!=)\s*(.*?)\s*$", term)
        if not match:
            raise ApiError(400, "BadRequest", f"invalid field selector: {term.strip()!r}")
        path, op, value = match.groups()
        if path not in allowed:
            raise ApiError(400, "BadRequest", f"field label not supported: {path}")
        result.append((path, "!=" if op == "!=" else "=", value))
    return result


def _labels_match(obj: Mapping[str, Any], requirements: list[tuple[str, str, frozenset[str]]]) -> bool:
    labels: Mapping[str, str] = obj.get("metadata", {}).get("labels") or {}
    for key, op, values in requirements:
        present = key in labels
        value = labels.get(key)
        ok = (
            (op == "=" and present and value in values)
            or (op == "!=" and (not present or value not in values))
            or (op == "in" and present and value in values)
            or (op == "notin" and (not present or value not in values))
            or (op == "exists" and present)
            or (op == "!" and not present)
        )
        if not ok:
            return False
    return True


def _fields_match(obj: Mapping[str, Any], requirements: list[tuple[str, str, str]]) -> bool:
    for path, op, value in requirements:
        actual: Any = obj
        for key in path.split("."):
            actual = actual.get(key) if isinstance(actual, Mapping) else None
        if path == "source" and isinstance(actual, Mapping):  # an Event's source is selected by its component
            actual = actual.get("component")
        if (str(actual if actual is not None else "") == value) != (op == "="):
            return False
    return True


# --- patches ---------------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """Apply an RFC 7386 JSON merge patch (returns a new value; inputs are not modified)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result: JSON = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _version_priority(version: str) -> tuple[int, int, int, str]:
    # Kubernetes orders versions GA > beta > alpha, higher numbers first; others last, by name.
    match = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", version)
    if not match:
        return (3, 0, 0, version)
    major, stage, minor = match.groups()
    rank = {None: 0, "beta": 1, "alpha": 2}[stage]
    return (rank, -int(major), -int(minor or 0), version)


_FOREGROUND = "foregroundDeletion"
_PROPAGATION_POLICIES = ("Background", "Foreground", "Orphan")


def _owner_uids(obj: Mapping[str, Any] | None) -> set[str]:
    refs = ((obj or {}).get("metadata") or {}).get("ownerReferences") or []
    return {str(r["uid"]) for r in refs if isinstance(r, dict) and r.get("uid")}


def _propagation_policy(body: Any, query: str | None) -> str:
    """DeleteOptions' propagationPolicy (the body wins over the query parameter, and the
    deprecated orphanDependents counts as Orphan or Background); unset: Background."""
    options = body if isinstance(body, dict) else {}
    policy = options.get("propagationPolicy") or query
    if policy is None and options.get("orphanDependents") is not None:
        policy = "Orphan" if options["orphanDependents"] else "Background"
    if policy is None:
        return "Background"
    if policy not in _PROPAGATION_POLICIES:
        supported = ", ".join(f'"{p}"' for p in _PROPAGATION_POLICIES)
        raise ApiError(
            422,
            "Invalid",
            f'DeleteOptions.meta.k8s.io "" is invalid: propagationPolicy: Unsupported value: "{policy}": '
            f"supported values: {supported}",
        )
    return str(policy)


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _without(obj: Mapping[str, Any], *keys: str) -> JSON:
    return {k: v for k, v in obj.items() if k not in keys}


def _invalid(rtype: ResourceType, name: str, causes: list[tuple[str, str, str]]) -> ApiError:
    """A 422 Invalid error from (field, message, reason) causes, worded like the API server."""
    parts = [f"{f}: {m}" for f, m, _ in causes]
    summary = parts[0] if len(parts) == 1 else f"[{', '.join(parts)}]"
    kind = f"{rtype.kind}.{rtype.group}" if rtype.group else rtype.kind
    return ApiError(
        422,
        "Invalid",
        f'{kind} "{name}" is invalid: {summary}',
        {
            "name": name,
            "group": rtype.group,
            "kind": rtype.kind,
            "causes": [{"reason": r, "message": m, "field": f} for f, m, r in causes],
        },
    )


# --- response helpers: warnings, Table output ----------------------------------------------------------


def _add_warnings(response: aiohttp.web.StreamResponse) -> None:
    """Write the request's warnings as ``Warning: 299 - "<text>"`` headers (one per warning, in
    order, duplicates dropped), as the API server's warning recorder does."""
    state = _REQUEST.get()
    if state is None:
        return
    for text in dict.fromkeys(state.warnings):
        response.headers.add("Warning", f"299 - {json.dumps(text)}")  # json.dumps quotes like Go's %q


def _table_version(accept: str) -> str | None:
    """The ``meta.k8s.io`` Table version an ``Accept`` header asks for (kubectl's
    ``application/json;as=Table;v=v1;g=meta.k8s.io,...,application/json``), or None when the first
    acceptable media type is plain JSON."""
    for media in accept.split(","):
        parts = [p.strip() for p in media.split(";")]
        params = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
        if params.get("as") == "Table":
            if params.get("g") == "meta.k8s.io" and params.get("v") in ("v1", "v1beta1"):
                return params["v"]
            continue
        if parts[0] in ("application/json", "application/*", "*/*") and "as" not in params:
            return None
    return None


_NAME_DOC = (
    "Name must be unique within a namespace. Is required when creating resources, although some resources may "
    "allow a client to request the generation of an appropriate name automatically. Name is primarily intended "
    "for creation idempotence and configuration definition. Cannot be updated. More info: "
    "https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names"
)
_CREATED_DOC = (
    "CreationTimestamp is a timestamp representing the server time when this object was created. It is not "
    "guaranteed to be set in happens-before order across separate operations. Clients may not set this value. "
    "It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. "
    "More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"
)


def _column(name: str, type_: str, description: str, *, format_: str = "", priority: int = 0) -> JSON:
    return {"name": name, "type": type_, "format": format_, "description": description, "priority": priority}


_NAME_COLUMN = _column("Name", "string", _NAME_DOC, format_="name")


def human_duration(seconds: float) -> str:
    """apimachinery's ``duration.HumanDuration``: how the API server renders ages ("42s", "5m3s", "3d")."""
    whole = int(seconds)
    if whole < -1:
        return "<invalid>"
    if whole < 0:
        return "0s"
    if whole < 120:
        return f"{whole}s"
    minutes = whole // 60
    if minutes < 10:
        return f"{minutes}m" if whole % 60 == 0 else f"{minutes}m{whole % 60}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = whole // 3600
    if hours < 8:
        return f"{hours}h" if minutes % 60 == 0 else f"{hours}h{minutes % 60}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d" if hours % 24 == 0 else f"{hours // 24}d{hours % 24}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        years, days = hours // 24 // 365, (hours // 24) % 365
        return f"{years}y" if days == 0 else f"{years}y{days}d"
    return f"{hours // 24 // 365}y"


def _age(timestamp: Any) -> str:
    # metav1.Time.UnmarshalQueryParameter accepts RFC3339 only; anything else is "<invalid>".
    if not isinstance(timestamp, str) or not timestamp:
        return "<unknown>"
    try:
        then = datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return "<invalid>"
    if then.tzinfo is None:
        return "<invalid>"
    return human_duration((datetime.datetime.now(tz=datetime.UTC) - then).total_seconds())


_JSONPATH_STEP = re.compile(
    r"(?P<star>\[\*\]|\.\*)"
    r"|\.(?P<field>[^.\[\]]+)"
    r"|\[(?P<index>-?\d+)\]"
    r"|\[\s*['\"](?P<quoted>[^'\"]*)['\"]\s*\]"
    r"|\[\?\(\s*@(?P<filter>(?:\.[^.=!\s)]+)+)\s*(?P<op>==|!=)\s*(?P<literal>\"[^\"]*\"|'[^']*'|[^)\s]+)\s*\)\]"
)
_MISSING = object()


def jsonpath_find(obj: Any, path: str) -> list[Any]:
    """The values a printer column's simple JSONPath selects, in order (``.spec.slug``,
    ``.spec.targets[0].provider``, ``.status.conditions[?(@.type=="Ready")].status``, ``[*]``,
    ``['a.b']``). Missing keys select nothing, as with ``AllowMissingKeys(true)``."""
    text = path.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1].strip()
    text = text.removeprefix("$")
    values = [obj]
    pos = 0
    while pos < len(text):
        step = _JSONPATH_STEP.match(text, pos)
        if step is None:
            raise ValueError(f"unsupported JSONPath {path!r} at {text[pos:]!r}")
        pos = step.end()
        found: list[Any] = []
        for value in values:
            if step["star"]:
                found.extend(value.values() if isinstance(value, dict) else value if isinstance(value, list) else [])
            elif step["field"] is not None or step["quoted"] is not None:
                key = step["field"] if step["field"] is not None else step["quoted"]
                if isinstance(value, dict) and key in value:
                    found.append(value[key])
            elif step["index"] is not None:
                index = int(step["index"])
                if isinstance(value, list) and -len(value) <= index < len(value):
                    found.append(value[index])
            else:
                found.extend(_filter(value, step["filter"], step["op"], step["literal"]))
        values = found
    return values


def _filter(value: Any, path: str, op: str, literal_text: str) -> list[Any]:
    literal: Any
    if literal_text[:1] in ("'", '"'):
        literal = literal_text[1:-1]
    else:
        try:
            literal = json.loads(literal_text)
        except ValueError:
            literal = literal_text
    items = value if isinstance(value, list) else list(value.values()) if isinstance(value, dict) else []
    selected = []
    for item in items:
        got: Any = item
        for key in path.lstrip(".").split("."):
            got = got.get(key, _MISSING) if isinstance(got, dict) else _MISSING
        if got is _MISSING:
            continue
        equal = type(got) is type(literal) and got == literal if isinstance(got, bool) else got == literal
        if equal == (op == "=="):
            selected.append(item)
    return selected


def _jsonpath_text(value: Any) -> str | None:
    # JSONPath.PrintResults: strings as they are, objects and lists as JSON, scalars as Go prints them.
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = repr(value)
        return text.removesuffix(".0") if "e" not in text else text
    if isinstance(value, int):
        return str(value)
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _printer_cell(column_type: str, found: list[Any]) -> Any:
    """A custom resource's cell, as apiextensions' tableconvertor renders it (cellForJSONValue)."""
    if not found:
        return None
    value = found[0]
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if column_type == "string":
        return _jsonpath_text(value)
    if column_type == "integer":
        return int(value) if number else None
    if column_type == "number":
        return float(value) if number else None
    if column_type == "boolean":
        return value if isinstance(value, bool) else None
    if column_type == "date":
        return _age(value) if isinstance(value, str) else None
    return None


def _event_object(involved: Any) -> str:
    involved = involved if isinstance(involved, dict) else {}
    return f"{str(involved.get('kind', '')).lower()}/{involved.get('name', '')}"


_Printer = tuple[list[JSON], Callable[[JSON], list[Any]]]
_AGE = ("Age", "string", _CREATED_DOC, lambda o: _age(o["metadata"].get("creationTimestamp")))
# (group, plural) -> extra columns after Name, as k8s.io/kubernetes pkg/printers/internalversion
# prints them; everything not listed gets the API server's default: Name and "Created At".
_BUILTIN_COLUMNS: dict[tuple[str, str], list[tuple[str, str, str, Callable[[JSON], Any]]]] = {
    ("", "namespaces"): [
        ("Status", "string", "The status of the namespace", lambda o: (o.get("status") or {}).get("phase", "")),
        _AGE,
    ],
    ("", "secrets"): [
        ("Type", "string", "The type of the secret", lambda o: o.get("type", "")),
        ("Data", "string", "The number of keys in the secret", lambda o: len(o.get("data") or {})),
        _AGE,
    ],
    ("", "configmaps"): [
        (
            "Data",
            "string",
            "The number of keys in the config map",
            lambda o: len(o.get("data") or {}) + len(o.get("binaryData") or {}),
        ),
        _AGE,
    ],
    ("", "serviceaccounts"): [
        ("Secrets", "string", "The number of secrets", lambda o: len(o.get("secrets") or [])),
        _AGE,
    ],
    ("coordination.k8s.io", "leases"): [
        ("Holder", "string", "The holder of the lease", lambda o: (o.get("spec") or {}).get("holderIdentity", "")),
        _AGE,
    ],
    ("", "events"): [
        (
            "Last Seen",
            "string",
            "The time at which the most recent occurrence of this event was recorded.",
            lambda o: _age(o.get("lastTimestamp") or o.get("eventTime")),
        ),
        ("Type", "string", "Type of this event (Normal, Warning)", lambda o: o.get("type", "")),
        ("Reason", "string", "The reason of this event", lambda o: o.get("reason", "")),
        ("Object", "string", "The object this event is about", lambda o: _event_object(o.get("involvedObject"))),
        ("Message", "string", "A human-readable description of the event", lambda o: o.get("message", "")),
    ],
    ("events.k8s.io", "events"): [
        (
            "Last Seen",
            "string",
            "The time at which the most recent occurrence of this event was recorded.",
            lambda o: _age(o.get("deprecatedLastTimestamp") or o.get("eventTime")),
        ),
        ("Type", "string", "Type of this event (Normal, Warning)", lambda o: o.get("type", "")),
        ("Reason", "string", "The reason of this event", lambda o: o.get("reason", "")),
        ("Object", "string", "The object this event is about", lambda o: _event_object(o.get("regarding"))),
        ("Message", "string", "A human-readable description of the event", lambda o: o.get("note", "")),
    ],
}
_DEFAULT_COLUMNS: list[tuple[str, str, str, Callable[[JSON], Any]]] = [
    ("Created At", "date", _CREATED_DOC, lambda o: o["metadata"].get("creationTimestamp")),
]


# --- the emulator ------------------------------------------------------------------------------------


def _failed_while_streaming(exc: Exception) -> bool:
    """Whether kmock raised this for a reaction that failed after its response was prepared.

    kmock wraps such errors in a class it does not export (``StreamingError``, holding the prepared
    response); this tells it by that shape instead of importing kmock's private module.
    """
    return (
        type(exc).__module__.startswith("kmock.")
        and bool(exc.args)
        and isinstance(exc.args[0], aiohttp.web.StreamResponse)
        and exc.args[0].prepared
    )


@attrs.define(kw_only=True)
class KubeEmulator(kmock.KubernetesEmulator):
    """An in-memory Kubernetes API server: see the module docstring and ``docs/emulator.md``."""

    admission: Admission | None = None
    history_limit: int = 10_000  # watch events kept for resuming watches; older -> 410 Gone
    watch_queue_limit: int = 10_000  # events buffered per slow watcher before it gets 410 Gone
    request_log_limit: int = 1_000  # kmock's request log (``list(emulator)``) is trimmed to this
    events_limit: int = 1_000  # stored Event objects and the ``posted_events`` log
    # Which reaches clients first after a write: its HTTP response or its watch events. "natural"
    # coordinates nothing (in practice the response usually goes out first); "event-first" holds
    # each write's response until every open watch has written that write's events to its
    # connection; "response-first" holds those events until the response has been written. Either
    # hold lasts at most ``write_order_timeout`` seconds. See docs/emulator.md.
    write_order: WriteOrder = "natural"
    write_order_timeout: float = 2.0
    response_delay: float = 0.0  # seconds every effective write's response is held (after the above)
    # The namespace controller: seconds from a namespace's DELETE to its first content-deletion
    # pass, between re-checks of a terminating namespace, and between resource types in a pass.
    namespace_deletion_delay: float = 0.05
    namespace_resync_interval: float = 0.1
    namespace_deletion_step: float = 0.0
    # Resources (as "secrets", "gatewayendpoints.aigw.dev") whose objects a pass deletes first, in
    # this order; the other namespaced resources follow, sorted by that spelling.
    namespace_deletion_order: tuple[str, ...] = ("secrets", "configmaps")
    # Called once for every stored write of any object, whoever made it (a client's create, update,
    # patch, /status write or delete, the namespace controller, Event expiry, register_crd), with
    # the resource type, the watch event type ("ADDED", "MODIFIED", "DELETED") and a deep copy of
    # the object as stored. Not for refused writes, dry runs or no-ops. It runs synchronously inside
    # the write, after the store and the watch queues are updated and before the response: keep it
    # cheap, and record rather than raise (an exception reaches the writer, the write stays stored).
    on_write: WriteHook | None = None
    # The authentication and authorisation policy the review APIs answer from: a bearer token ->
    # the user it authenticates as ({"username": ..., "uid": ..., "groups": [...]}), and the
    # (user or group, verb, non-resource path) triples a SubjectAccessReview allows. Callers of
    # the emulator itself are never authenticated: only the reviews read these.
    tokens: dict[str, JSON] = attrs.field(factory=dict)
    allowed: set[tuple[str, str, str]] = attrs.field(factory=set)

    _types: dict[tuple[str, str, str], ResourceType] = attrs.field(factory=dict, init=False)
    _store: dict[tuple[str, str], dict[tuple[str | None, str], JSON]] = attrs.field(
        factory=lambda: collections.defaultdict(dict), init=False
    )
    _rv: int = attrs.field(default=0, init=False)
    _history: collections.deque[_Event] = attrs.field(factory=collections.deque, init=False)
    _history_floor: int = attrs.field(default=0, init=False)
    _watchers: set[_Watcher] = attrs.field(factory=set, init=False)
    _counts: collections.Counter[tuple[str, str, str | None]] = attrs.field(factory=collections.Counter, init=False)
    # (client, verb, group, plural, subresource): which client needed which permission.
    _access: collections.Counter[tuple[str, str, str, str, str | None, str | None]] = attrs.field(
        factory=collections.Counter, init=False
    )
    _posted_events: collections.deque[JSON] = attrs.field(factory=collections.deque, init=False)
    _fallback_payloads: dict[int, bool] = attrs.field(factory=dict, init=False)
    # resourceVersions whose write has not been answered yet (write_order="response-first").
    _unanswered: set[int] = attrs.field(factory=set, init=False)
    _answered: asyncio.Event = attrs.field(factory=asyncio.Event, init=False)
    _controllers: dict[str, asyncio.Task[None]] = attrs.field(factory=dict, init=False)
    # The garbage collector's graph: every stored object by uid, and the dependents that name
    # each uid in their ownerReferences (as (group, plural, namespace, name)).
    _by_uid: dict[str, tuple[str, str, str | None, str]] = attrs.field(factory=dict, init=False)
    _dependents: dict[str, set[tuple[str, str, str | None, str]]] = attrs.field(
        factory=lambda: collections.defaultdict(set), init=False
    )

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for rtype in _BUILTINS:
            self._types[(rtype.group, rtype.version, rtype.plural)] = rtype
        for name in ("default", "kube-system"):
            self._create(self._type("", "v1", "namespaces"), None, {"metadata": {"name": name}})

    # --- public helpers for tests and the demo ---

    @property
    def resource_version(self) -> int:
        """The current global resourceVersion (the last write's)."""
        return self._rv

    def register_crd(self, crd: JSON) -> JSON:
        """Create or replace a CRD (as ``kubectl apply`` would) and return the stored object."""
        rtype = self._type(_CRD_GROUP, "v1", _CRD_PLURAL)
        name = (crd.get("metadata") or {}).get("name", "")
        body = copy.deepcopy(crd)
        if (None, name) in self._store[(_CRD_GROUP, _CRD_PLURAL)]:
            body.setdefault("metadata", {}).pop("resourceVersion", None)
            return self._update(rtype, None, name, None, lambda _: body)
        return self._create(rtype, None, body)

    def get_object(self, group: str, plural: str, namespace: str | None, name: str) -> JSON | None:
        """The stored object (a deep copy), or None."""
        obj = self._store[(group, plural)].get((namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def list_objects(self, group: str, plural: str, namespace: str | None = None) -> list[JSON]:
        return [
            copy.deepcopy(o)
            for (ns, _), o in sorted(self._store[(group, plural)].items(), key=lambda kv: (kv[0][0] or "", kv[0][1]))
            if namespace is None or ns == namespace
        ]

    @property
    def posted_events(self) -> list[JSON]:
        """Event objects created via core v1 or events.k8s.io/v1 (the last ``events_limit``)."""
        return list(self._posted_events)

    def requests_count(
        self,
        verbs: frozenset[str] | None = None,
        plural: str | None = None,
        subresource: str | EllipsisType | None = ...,
    ) -> int:
        """Requests received by verb (create/update/patch/delete/get/list/watch), plural and
        subresource (``...`` = any, ``None`` = the main resource only)."""
        return sum(
            n
            for (verb, p, sub), n in self._counts.items()
            if (verbs is None or verb in verbs)
            and (plural is None or p == plural)
            and (subresource is ... or sub == subresource)
        )

    def writes(self, plural: str | None = None, subresource: str | EllipsisType | None = ...) -> int:
        """Write requests (POST/PUT/PATCH/DELETE), including the refused ones."""
        return self.requests_count(_WRITE_VERBS, plural, subresource)

    def reads(self, plural: str | None = None, subresource: str | EllipsisType | None = ...) -> int:
        """Read requests (get/list/watch), including the refused ones."""
        return self.requests_count(_READ_VERBS, plural, subresource)

    def counters(self) -> dict[tuple[str, str, str | None], int]:
        """A snapshot of all counters keyed by (verb, plural, subresource)."""
        return dict(self._counts)

    def access(self) -> dict[tuple[str, str, str, str, str | None, str | None], int]:
        """Requests by (client, verb, API group, plural, subresource, namespace); the client is
        the User-Agent's product name (kopf, aigw-operator, python-httpx...); the namespace is
        None for a cluster-scoped request (what RBAC needs a ClusterRole for)."""
        return dict(self._access)

    def reset_counters(self) -> None:
        self._counts.clear()
        self._access.clear()

    @property
    def open_watches(self) -> int:
        """Watch streams currently being served."""
        return len(self._watchers)

    def close_watches(self) -> None:
        """End every open watch stream (clients see a normal end of stream and reconnect)."""
        for watcher in list(self._watchers):
            watcher.queue.put_nowait(None)

    # --- HTTP entry ---

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        # kmock's own request parser fails on some valid paths (e.g. listing ``/api/v1/namespaces``);
        # such requests get a plain kmock Request: this emulator routes by the URL path anyway.
        body = await raw_request.read()
        try:
            request = await kmock.Request._parse(raw_request, id=len(self._requests))
        except ValueError:
            request = kmock.Request(
                id=len(self._requests),
                raw_request=raw_request,
                url=raw_request.url,
                method=raw_request.method,
                params=dict(raw_request.query),
                headers=dict(raw_request.headers),
                body=body,
            )
        self._requests.append(request)
        self._trim_request_log()
        try:
            return await self._handle(request)
        except Exception as exc:
            if not _failed_while_streaming(exc):
                if self._errors:  # kept for kmock's strict mode, which re-raises them on exit
                    self._errors[-1].append(exc)
                return await self._render_error(exc)
            # A user reaction failed after its headers went out.
            cause = exc.__cause__ if isinstance(exc.__cause__, Exception) else exc
            if self._errors:
                self._errors[-1].append(cause)
            raw_response: aiohttp.web.StreamResponse = exc.args[0]
            await self._stream_error(cause, raw_response)
            await raw_response.write_eof()
            return raw_response

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        if self._user_reaction_matches(request):
            return await kmock.RawHandler._handle(self, request)
        try:
            return await self._dispatch(request)
        except ApiError as exc:
            response = aiohttp.web.json_response(exc.status(), status=exc.code)
            # Warnings gathered before the refusal still go out, as the API server writes them
            # to the response headers as soon as they are recorded.
            _add_warnings(response)
            return response

    def _trim_request_log(self) -> None:
        # kmock appends every request to this list forever; trim in batches to stay O(1) amortised.
        log = self._requests
        if len(log) > 2 * self.request_log_limit or (self.request_log_limit == 0 and log):
            del log[: len(log) - self.request_log_limit]

    def _user_reaction_matches(self, request: kmock.Request) -> bool:
        # The scaffold registers its own reactions under `fallback` (priority -inf); anything else
        # was declared by a test and must win over the emulation, like in plain kmock.
        for payload in self._payloads:
            fallback = self._fallback_payloads.get(id(payload))
            if fallback is None:  # computing priorities walks the DSL tree: remember the answer
                fallback = self._fallback_payloads[id(payload)] = any(p == -math.inf for p in payload.priorities)
            if fallback:
                continue
            if not payload._disabled.is_set() and request in payload._source:
                return True
        return False

    async def _dispatch(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        raw = request._raw_request
        method = raw.method.upper() if raw is not None else str(request.method.value).upper()
        path = request.url.path.rstrip("/") or "/"
        query = dict(request.params)
        segments = [s for s in path.split("/") if s]

        if method == "GET" and path in ("/", "/version", "/api", "/apis"):
            return aiohttp.web.json_response(self._discovery_root(path))
        if method == "GET" and len(segments) == 2 and segments[0] == "api":
            return aiohttp.web.json_response(self._discovery_version("", segments[1]))
        if method == "GET" and len(segments) == 2 and segments[0] == "apis":
            return aiohttp.web.json_response(self._discovery_group(segments[1]))
        if method == "GET" and len(segments) == 3 and segments[0] == "apis":
            return aiohttp.web.json_response(self._discovery_version(segments[1], segments[2]))

        if segments[:1] == ["api"] and len(segments) >= 3:
            group, version, rest = "", segments[1], segments[2:]
        elif segments[:1] == ["apis"] and len(segments) >= 4:
            group, version, rest = segments[1], segments[2], segments[3:]
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")

        namespace: str | None = None
        if (
            rest[0] == "namespaces"
            and len(rest) >= 3
            and not (group == "" and len(rest) == 3 and rest[2] in ("status", "finalize"))
        ):
            namespace, rest = rest[1], rest[2:]
        if len(rest) > 3:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        plural = rest[0]
        name = rest[1] if len(rest) > 1 else None
        subresource = rest[2] if len(rest) > 2 else None
        rtype = self._type(group, version, plural)

        verb = {
            ("GET", False): "watch" if query.get("watch") in ("true", "1") else "list",
            ("GET", True): "watch" if query.get("watch") in ("true", "1") else "get",
            ("POST", False): "create",
            ("PUT", True): "update",
            ("PATCH", True): "patch",
            ("DELETE", True): "delete",
        }.get((method, name is not None))
        self._counts[(verb or method.lower(), plural, subresource)] += 1
        agent = raw.headers.get("User-Agent", "") if raw is not None else ""
        self._access[(agent.split("/")[0], verb or method.lower(), group, plural, subresource, namespace)] += 1
        if verb is None:
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
        if subresource is not None and (subresource not in rtype.subresources or verb not in _SUB_VERBS):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if rtype.namespaced and namespace is None and verb not in ("list", "watch"):
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
        if not rtype.namespaced:
            namespace = None
        if (rtype.group, rtype.plural) in _REVIEWS:
            if verb != "create" or subresource is not None:
                raise ApiError(
                    405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
                )
            review = self._review(rtype, self._parse_body(request.body))
            return aiohttp.web.json_response(review, status=201)

        if verb == "watch":
            return await self._watch(request, rtype, namespace, name, query)
        table = _table_version(request.headers.get("Accept") or "")
        if verb == "list":
            listing = self._list(rtype, namespace, query)
            if table is not None:
                return aiohttp.web.json_response(self._table(rtype, listing["items"], listing, table, query))
            return aiohttp.web.json_response(listing)

        assert name is not None or verb == "create"  # guaranteed by the verb table above
        if verb == "get":
            assert name is not None
            obj = self._present(rtype, self._get(rtype, namespace, name))
            if table is not None:
                return aiohttp.web.json_response(self._table(rtype, [obj], obj, table, query))
            return aiohttp.web.json_response(obj)

        body = self._parse_body(request.body)
        dry_run = "dryRun" in query  # the only valid value is "All"
        state = _RequestState()
        _REQUEST.set(state)
        if verb != "delete":
            directive = query.get("fieldValidation", "")
            if directive not in _FIELD_VALIDATIONS:
                options = {"create": "CreateOptions", "update": "UpdateOptions", "patch": "PatchOptions"}[verb]
                supported = ", ".join(json.dumps(v) for v in _FIELD_VALIDATIONS)
                raise ApiError(
                    422,
                    "Invalid",
                    f'{options}.meta.k8s.io "" is invalid: fieldValidation: Unsupported value: '
                    f"{json.dumps(directive)}: supported values: {supported}",
                    {
                        "group": "meta.k8s.io",
                        "kind": options,
                        "causes": [
                            {
                                "reason": "FieldValueNotSupported",
                                "message": f"Unsupported value: {json.dumps(directive)}: supported values: {supported}",
                                "field": "fieldValidation",
                            }
                        ],
                    },
                )
            state.field_validation = directive or "Warn"

        before = self._rv
        status = 200
        if verb == "create":
            result, status = self._create(rtype, namespace, body, dry_run=dry_run), 201
        elif verb == "update":
            assert name is not None
            result = self._update(rtype, namespace, name, subresource, lambda _old: body, dry_run=dry_run)
        elif verb == "patch":
            assert name is not None
            content_type = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            patcher = self._patcher(rtype, name, content_type, body)
            result = self._update(rtype, namespace, name, subresource, patcher, dry_run=dry_run, patch=True)
        else:
            assert name is not None
            result = self._delete(
                rtype, namespace, name, body, dry_run=dry_run, propagation=query.get("propagationPolicy")
            )
        return await self._respond_to_write(request, self._present(rtype, result), status, before)

    # --- reviews (authentication.k8s.io, authorization.k8s.io) ---

    def _review(self, rtype: ResourceType, body: Any) -> JSON:
        """A TokenReview or SubjectAccessReview answered, as the API server does: the request
        back with its status, metadata.creationTimestamp null, and nothing stored."""
        if not isinstance(body, dict) or not isinstance(body.get("spec"), dict):
            raise ApiError(400, "BadRequest", f"the request body is not a {rtype.kind}")
        if body.get("kind") not in (None, rtype.kind) or body.get("apiVersion") not in (None, rtype.api_version):
            raise ApiError(
                400, "BadRequest", f"the body is {body.get('apiVersion')}/{body.get('kind')}, not {rtype.kind}"
            )
        spec: JSON = body["spec"]
        if rtype.kind == "TokenReview":
            token = spec.get("token")
            if not token:
                raise ApiError(400, "BadRequest", "token is required for TokenReview in authentication")
            user = self.tokens.get(str(token))
            if user is not None:
                status: JSON = {
                    "authenticated": True,
                    "user": copy.deepcopy(user),
                    "audiences": list(spec.get("audiences") or ["https://kubernetes.default.svc"]),
                }
            else:
                # The API server leaves authenticated out (false) and names no user.
                status = {"user": {}, "error": "[invalid bearer token, token lookup failed]"}
        else:
            status = self._access_review(rtype, spec)
        metadata = dict(body.get("metadata") or {})
        metadata["creationTimestamp"] = None
        return {
            "kind": rtype.kind,
            "apiVersion": rtype.api_version,
            "metadata": metadata,
            "spec": spec,
            "status": status,
        }

    def _access_review(self, rtype: ResourceType, spec: JSON) -> JSON:
        user, groups = spec.get("user") or "", list(spec.get("groups") or [])
        resource, non_resource = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
        causes = []
        if not user and not groups:
            causes.append(("spec.user", "at least one of user or group must be specified", "FieldValueRequired"))
        if (resource is None) == (non_resource is None):
            causes.append(
                (
                    "spec.resourceAttributes",
                    "exactly one of nonResourceAttributes or resourceAttributes must be specified",
                    "FieldValueRequired",
                )
            )
        if causes:
            raise _invalid(rtype, "", causes)
        if non_resource is None:
            return {"allowed": False, "reason": "the emulator's policy covers non-resource URLs only"}
        verb, path = str(non_resource.get("verb") or ""), str(non_resource.get("path") or "")
        if any((who, verb, path) in self.allowed for who in [user, *groups] if who):
            return {"allowed": True, "reason": f"allowed by the emulator's policy: {verb} {path}"}
        return {"allowed": False}

    @staticmethod
    def _parse_body(body: bytes) -> Any:
        if not body:
            return None
        try:
            return json.loads(body)
        except ValueError as exc:
            raise ApiError(400, "BadRequest", f"the request body is not valid JSON: {exc}") from exc

    # --- discovery ---

    def _type(self, group: str, version: str, plural: str) -> ResourceType:
        try:
            return self._types[(group, version, plural)]
        except KeyError:
            raise ApiError(404, "NotFound", "the server could not find the requested resource") from None

    @staticmethod
    def _field_labels(rtype: ResourceType) -> frozenset[str]:
        return _FIELD_LABELS.get((rtype.group, rtype.plural), _COMMON_FIELDS)

    def _versions_of(self, group: str) -> list[str]:
        versions = {v for g, v, _ in self._types if g == group}
        return sorted(versions, key=_version_priority)

    def _discovery_root(self, path: str) -> JSON:
        if path == "/version":
            return {
                "major": "1",
                "minor": "31",
                "gitVersion": "v1.31.0-aigw-emulator",
                "platform": "linux/amd64",
            }
        if path == "/api":
            return {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
            }
        groups = sorted({g for g, _, _ in self._types if g})
        if path == "/apis":
            return {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [self._discovery_group(g) for g in groups],
            }
        paths = {"/api", "/api/v1", "/apis", "/version"}
        paths |= {f"/apis/{g}" for g in groups}
        paths |= {f"/apis/{g}/{v}" for g, v, _ in self._types if g}
        return {"paths": sorted(paths)}

    def _discovery_group(self, group: str) -> JSON:
        versions = self._versions_of(group)
        if not group or not versions:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {
            "kind": "APIGroup",
            "apiVersion": "v1",
            "name": group,
            "versions": entries,
            "preferredVersion": entries[0],
        }

    def _discovery_version(self, group: str, version: str) -> JSON:
        types = sorted(
            (t for (g, v, _), t in self._types.items() if g == group and v == version), key=lambda t: t.plural
        )
        if not types:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        resources: list[JSON] = []
        for t in types:
            resources.append(
                {
                    "name": t.plural,
                    "singularName": t.singular,
                    "namespaced": t.namespaced,
                    "kind": t.kind,
                    "verbs": ["create"] if (t.group, t.plural) in _REVIEWS else list(_MAIN_VERBS),
                    "shortNames": list(t.short_names),
                    "categories": list(t.categories),
                }
            )
            for sub in sorted(t.subresources):
                resources.append(
                    {
                        "name": f"{t.plural}/{sub}",
                        "singularName": "",
                        "namespaced": t.namespaced,
                        "kind": t.kind,
                        "verbs": list(_SUB_VERBS),
                    }
                )
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": resources,
        }

    # --- reads ---

    def _present(self, rtype: ResourceType, obj: JSON) -> JSON:
        # Objects are stored once per group/plural; a request through another served version sees
        # the same object relabelled, as with a CRD's conversion strategy "None".
        if obj.get("apiVersion") == rtype.api_version:
            return obj
        return {**obj, "apiVersion": rtype.api_version}

    def _get(self, rtype: ResourceType, namespace: str | None, name: str) -> JSON:
        obj = self._store[(rtype.group, rtype.plural)].get((namespace, name))
        if obj is None:
            raise self._not_found(rtype, name)
        return obj

    @staticmethod
    def _not_found(rtype: ResourceType, name: str) -> ApiError:
        return ApiError(
            404,
            "NotFound",
            f'{rtype.qualified} "{name}" not found',
            {"name": name, "group": rtype.group, "kind": rtype.plural},
        )

    def _list(self, rtype: ResourceType, namespace: str | None, query: Mapping[str, str]) -> JSON:
        labels = parse_label_selector(query.get("labelSelector"))
        fields = parse_field_selector(query.get("fieldSelector"), self._field_labels(rtype))
        items = [
            self._present(rtype, obj)
            for (ns, _), obj in sorted(
                self._store[(rtype.group, rtype.plural)].items(), key=lambda kv: (kv[0][0] or "", kv[0][1])
            )
            if (namespace is None or ns == namespace) and _labels_match(obj, labels) and _fields_match(obj, fields)
        ]
        return {
            "kind": f"{rtype.kind}List",
            "apiVersion": rtype.api_version,
            "metadata": {"resourceVersion": str(self._rv)},
            "items": items,
        }

    # --- watches ---

    async def _watch(
        self,
        request: kmock.Request,
        rtype: ResourceType,
        namespace: str | None,
        name: str | None,
        query: Mapping[str, str],
    ) -> aiohttp.web.StreamResponse:
        raw = request._raw_request
        if raw is None:
            raise ApiError(500, "InternalError", "watching needs a real HTTP request")
        fields = parse_field_selector(query.get("fieldSelector"), self._field_labels(rtype))
        if name is not None:  # the deprecated /watch-by-name form is a field selector in disguise
            fields.append(("metadata.name", "=", name))
        watcher = _Watcher(
            rtype.group,
            rtype.plural,
            rtype.version,
            namespace,
            parse_label_selector(query.get("labelSelector")),
            fields,
        )
        timeout_text = query.get("timeoutSeconds")
        try:
            timeout = float(timeout_text) if timeout_text else None
        except ValueError:
            raise ApiError(400, "BadRequest", f"invalid timeoutSeconds: {timeout_text!r}") from None

        since_text = query.get("resourceVersion") or ""
        initial = query.get("sendInitialEvents") == "true" or since_text in ("", "0")
        backlog: list[tuple[str, JSON]] = []
        gone = False
        if initial:
            for obj in self._store[(rtype.group, rtype.plural)].values():
                if self._visible(watcher, obj):
                    backlog.append(("ADDED", self._present(rtype, obj)))
            if query.get("sendInitialEvents") == "true":
                backlog.append(
                    (
                        "BOOKMARK",
                        {
                            "kind": rtype.kind,
                            "apiVersion": rtype.api_version,
                            "metadata": {
                                "resourceVersion": str(self._rv),
                                "annotations": {"k8s.io/initial-events-end": "true"},
                            },
                        },
                    )
                )
        else:
            try:
                since = int(since_text)
            except ValueError:
                raise ApiError(400, "BadRequest", f"invalid resourceVersion: {since_text!r}") from None
            if since < self._history_floor:
                gone = True
            else:
                for event in self._history:
                    if event.rv > since:
                        translated = self._translate(watcher, event)
                        if translated is not None:
                            backlog.append(translated)
        # Registered before the first await so that no write can fall between backlog and live events.
        if not gone:
            self._watchers.add(watcher)

        response = aiohttp.web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        try:
            await response.prepare(raw)
            if gone:
                await self._write_event(
                    response,
                    "ERROR",
                    ApiError(
                        410, "Expired", f"too old resource version: {since_text} ({self._history_floor})"
                    ).status(),
                )
                return response
            for event_type, obj in backlog:
                await self._write_event(response, event_type, obj)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout if timeout is not None else None
            while True:
                remaining = deadline - loop.time() if deadline is not None else None
                if remaining is not None and remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(watcher.queue.get(), timeout=remaining)
                except TimeoutError:
                    break
                if item is None:
                    if watcher.overflowed:
                        await self._write_event(
                            response,
                            "ERROR",
                            ApiError(410, "Expired", "the watcher fell too far behind").status(),
                        )
                    break
                event_type, obj, event_rv = item
                if self.write_order == "response-first":
                    await self._until_answered(event_rv)
                await self._write_event(response, event_type, obj)
                watcher.written_rv = event_rv
                watcher.progress.set()
            await response.write_eof()
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            pass  # the client went away; nothing to tell it
        finally:
            self._watchers.discard(watcher)
            watcher.progress.set()  # a write waiting for this watch's delivery need not wait on
        return response

    # --- the order of write responses and watch events ---

    async def _respond_to_write(
        self, request: kmock.Request, body: JSON, status: int, before: int
    ) -> aiohttp.web.StreamResponse:
        response = aiohttp.web.json_response(body, status=status)
        _add_warnings(response)
        after = self._rv
        if after == before:  # refused as a no-op, or a dry run: no events to order against
            return response
        raw = request._raw_request
        holding = self.write_order == "response-first" and raw is not None
        if holding:
            # Registered before the first await, so no watch can write these events earlier.
            self._unanswered.update(range(before + 1, after + 1))
        try:
            if self.write_order == "event-first":
                await self._until_delivered(after)
            if self.response_delay > 0:
                await asyncio.sleep(self.response_delay)
            if holding:
                assert raw is not None
                await response.prepare(raw)
                await response.write_eof()
        finally:
            if holding:
                self._unanswered.difference_update(range(before + 1, after + 1))
                self._answered.set()
        return response

    async def _until_delivered(self, upto: int) -> None:
        """Wait until every open watch has written its events up to resourceVersion ``upto``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.write_order_timeout
        for watcher in list(self._watchers):
            target = min(watcher.queued_rv, upto)
            while watcher in self._watchers and not watcher.overflowed and watcher.written_rv < target:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return
                watcher.progress.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(watcher.progress.wait(), remaining)

    async def _until_answered(self, rv: int) -> None:
        """Wait until the write that made resourceVersion ``rv`` has had its response written."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.write_order_timeout
        while rv in self._unanswered:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._answered.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._answered.wait(), remaining)

    # --- Table output (kubectl get) ---

    def _table(
        self, rtype: ResourceType, objs: list[JSON], source: JSON, version: str, query: Mapping[str, str]
    ) -> JSON:
        """A ``meta.k8s.io`` Table of ``objs``, as the API server answers ``Accept: ...;as=Table``."""
        include = query.get("includeObject") or "Metadata"
        if include not in ("None", "Metadata", "Object"):
            raise ApiError(400, "BadRequest", f"includeObject: unsupported value {include!r}")
        columns, cells = self._printer(rtype)
        rows: list[JSON] = []
        for obj in objs:
            row: JSON = {"cells": cells(obj)}
            if include == "Object":
                row["object"] = obj
            elif include == "Metadata":
                row["object"] = {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": f"meta.k8s.io/{version}",
                    "metadata": obj["metadata"],
                }
            rows.append(row)
        return {
            "kind": "Table",
            "apiVersion": f"meta.k8s.io/{version}",
            "metadata": {"resourceVersion": source["metadata"].get("resourceVersion", "")},
            "columnDefinitions": columns,
            "rows": rows,
        }

    def _printer(self, rtype: ResourceType) -> _Printer:
        if rtype.crd_name is not None:
            crd = self._store[(_CRD_GROUP, _CRD_PLURAL)].get((None, rtype.crd_name)) or {}
            served = [v for v in crd.get("spec", {}).get("versions", []) if v.get("name") == rtype.version]
            # apiextensions' serveDefaultColumnsIfEmpty: a version without columns gets Age.
            printed: list[JSON] = (served[0].get("additionalPrinterColumns") if served else None) or [
                {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp", "description": _CREATED_DOC}
            ]
            columns = [_NAME_COLUMN] + [
                _column(
                    str(c.get("name", "")),
                    str(c.get("type", "string")),
                    str(
                        c.get("description")
                        or f"Custom resource definition column (in JSONPath format): {c.get('jsonPath')}"
                    ),
                    format_=str(c.get("format", "")),
                    priority=int(c.get("priority", 0)),
                )
                for c in printed
            ]

            def custom_cells(obj: JSON) -> list[Any]:
                cells: list[Any] = [obj["metadata"]["name"]]
                for c in printed:
                    try:
                        found = jsonpath_find(obj, str(c.get("jsonPath", "")))
                    except ValueError:
                        found = []
                    cells.append(_printer_cell(str(c.get("type", "string")), found))
                return cells

            return columns, custom_cells
        extra = _BUILTIN_COLUMNS.get((rtype.group, rtype.plural), _DEFAULT_COLUMNS)
        columns = [_NAME_COLUMN] + [_column(name, type_, doc) for name, type_, doc, _ in extra]
        return columns, lambda obj: [obj["metadata"]["name"]] + [fn(obj) for _, _, _, fn in extra]

    @staticmethod
    async def _write_event(response: aiohttp.web.StreamResponse, event_type: str, obj: JSON) -> None:
        await response.write(json.dumps({"type": event_type, "object": obj}).encode() + b"\n")

    @staticmethod
    def _visible(watcher: _Watcher, obj: JSON) -> bool:
        ns = obj.get("metadata", {}).get("namespace")
        return (
            (watcher.namespace is None or ns == watcher.namespace)
            and _labels_match(obj, watcher.labels)
            and _fields_match(obj, watcher.fields)
        )

    def _translate(self, watcher: _Watcher, event: _Event) -> tuple[str, JSON] | None:
        if (event.group, event.plural) != (watcher.group, watcher.plural):
            return None
        rtype = self._types.get((watcher.group, watcher.version, watcher.plural))
        present = self._present(rtype, event.obj) if rtype is not None else event.obj
        now_visible = self._visible(watcher, event.obj)
        if event.type != "MODIFIED" or event.prev is None:
            return (event.type, present) if now_visible else None
        was_visible = self._visible(watcher, event.prev)
        # Like the API server, an object moving into or out of a selector is seen as ADDED/DELETED.
        if now_visible and was_visible:
            return ("MODIFIED", present)
        if now_visible:
            return ("ADDED", present)
        if was_visible:
            return ("DELETED", present)
        return None

    def _emit(self, event_type: str, rtype: ResourceType, obj: JSON, prev: JSON | None) -> None:
        event = _Event(self._rv, rtype.group, rtype.plural, event_type, obj, prev)
        self._history.append(event)
        while len(self._history) > self.history_limit:
            self._history_floor = self._history.popleft().rv
        for watcher in list(self._watchers):
            if watcher.overflowed:
                continue
            translated = self._translate(watcher, event)
            if translated is None:
                continue
            if watcher.queue.qsize() >= self.watch_queue_limit:
                watcher.overflowed = True
                watcher.queue.put_nowait(None)
            else:
                watcher.queue.put_nowait((*translated, event.rv))
                watcher.queued_rv = event.rv

    # --- writes ---

    def _commit(self, rtype: ResourceType, event_type: str, obj: JSON, prev: JSON | None) -> JSON:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        meta = obj["metadata"]
        bucket = self._store[(rtype.group, rtype.plural)]
        if event_type == "DELETED":
            bucket.pop((meta.get("namespace"), meta["name"]), None)
        else:
            bucket[(meta.get("namespace"), meta["name"])] = obj
        self._index_owners(rtype, event_type, obj, prev)
        self._emit(event_type, rtype, obj, prev)
        if self.on_write is not None:
            self.on_write(rtype, event_type, copy.deepcopy(obj))
        if event_type == "DELETED":
            self._collect_garbage(obj)
        return obj

    # --- the garbage collector (ownerReferences) ---

    def _index_owners(self, rtype: ResourceType, event_type: str, obj: JSON, prev: JSON | None) -> None:
        meta = obj["metadata"]
        key = (rtype.group, rtype.plural, meta.get("namespace"), meta["name"])
        uid = meta.get("uid")
        if event_type == "DELETED":
            if uid and self._by_uid.get(uid) == key:
                del self._by_uid[uid]
        elif uid:
            self._by_uid[uid] = key
        before = _owner_uids(prev) if prev is not None and event_type != "ADDED" else set()
        after = set() if event_type == "DELETED" else _owner_uids(obj)
        for owner in before - after:
            self._dependents[owner].discard(key)
            if not self._dependents[owner]:
                del self._dependents[owner]
        for owner in after - before:
            self._dependents[owner].add(key)

    def _lookup(self, key: tuple[str, str, str | None, str]) -> tuple[ResourceType, JSON] | None:
        group, plural, namespace, name = key
        obj = self._store[(group, plural)].get((namespace, name))
        if obj is None:
            return None
        rtype = next((t for t in self._types.values() if (t.group, t.plural) == (group, plural)), None)
        return (rtype, obj) if rtype is not None else None

    def _dependents_of(self, owner: JSON) -> list[tuple[ResourceType, JSON]]:
        """The stored objects whose ownerReferences name ``owner``'s uid: in its own namespace
        only when it is namespaced (a namespaced owner cannot own objects elsewhere)."""
        meta = owner["metadata"]
        found = []
        for key in sorted(
            self._dependents.get(meta.get("uid") or "", ()), key=lambda k: (k[2] or "", k[0], k[1], k[3])
        ):
            if meta.get("namespace") is not None and key[2] != meta.get("namespace"):
                continue
            looked_up = self._lookup(key)
            if looked_up is not None:
                found.append(looked_up)
        return found

    def _collect_garbage(self, owner: JSON) -> None:
        """``owner`` is gone from the store: what the garbage collector does next, at once.

        Each dependent whose every owner is now gone is deleted (background propagation: one with
        finalizers is marked for deletion and waits for them); one that still has a live owner
        loses the references to the owners that are gone. An owner waiting in foreground deletion
        for this object may be released."""
        for rtype, dependent in self._dependents_of(owner):
            refs = dependent["metadata"].get("ownerReferences") or []
            live = [r for r in refs if isinstance(r, dict) and r.get("uid") in self._by_uid]
            if live:
                if len(live) != len(refs):
                    self._rewrite_owner_references(rtype, dependent, live)
            elif not dependent["metadata"].get("deletionTimestamp"):
                self._delete(rtype, dependent["metadata"].get("namespace"), dependent["metadata"]["name"], None)
        for uid in _owner_uids(owner):
            self._release_foreground(uid)

    def _rewrite_owner_references(self, rtype: ResourceType, obj: JSON, refs: list[JSON]) -> None:
        new = copy.deepcopy(obj)
        if refs:
            new["metadata"]["ownerReferences"] = refs
        else:
            new["metadata"].pop("ownerReferences", None)
        self._commit(rtype, "MODIFIED", new, obj)

    def _orphan_dependents(self, owner: JSON) -> None:
        """propagationPolicy Orphan: the dependents lose their reference to ``owner`` and stay."""
        uid = owner["metadata"].get("uid")
        for rtype, dependent in self._dependents_of(owner):
            refs = dependent["metadata"].get("ownerReferences") or []
            self._rewrite_owner_references(rtype, dependent, [r for r in refs if r.get("uid") != uid])

    def _release_foreground(self, uid: str | None) -> None:
        """An owner in foreground deletion loses its ``foregroundDeletion`` finalizer once no
        dependent with ``blockOwnerDeletion: true`` is left (and goes, if that was the last one)."""
        key = self._by_uid.get(uid or "")
        looked_up = self._lookup(key) if key is not None else None
        if looked_up is None:
            return
        rtype, owner = looked_up
        meta = owner["metadata"]
        if not meta.get("deletionTimestamp") or _FOREGROUND not in (meta.get("finalizers") or []):
            return
        for _, dependent in self._dependents_of(owner):
            for ref in dependent["metadata"].get("ownerReferences") or []:
                if ref.get("uid") == uid and ref.get("blockOwnerDeletion"):
                    return
        new = copy.deepcopy(owner)
        new["metadata"]["finalizers"] = [f for f in meta.get("finalizers") or [] if f != _FOREGROUND]
        if not new["metadata"]["finalizers"]:
            new["metadata"].pop("finalizers")
        committed = self._commit(rtype, "MODIFIED", new, owner)
        if not committed["metadata"].get("finalizers"):
            self._remove(rtype, committed)

    def _create(self, rtype: ResourceType, namespace: str | None, body: Any, *, dry_run: bool = False) -> JSON:
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the request body must be a JSON object")
        obj = copy.deepcopy(body)
        meta = obj.get("metadata")
        if meta is None:
            meta = obj["metadata"] = {}
        if not isinstance(meta, dict):
            raise ApiError(400, "BadRequest", "metadata must be an object")
        self._decode(rtype, obj, patch=False)
        bucket = self._store[(rtype.group, rtype.plural)]

        body_ns = meta.get("namespace")
        if rtype.namespaced:
            if body_ns and namespace and body_ns != namespace:
                raise ApiError(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match the namespace sent on the request",
                )
            ns: str | None = namespace or body_ns
            namespace_obj = self._store[("", "namespaces")].get((None, str(ns or "")))
            if namespace_obj is None:
                raise ApiError(404, "NotFound", f'namespaces "{ns}" not found', {"name": ns, "kind": "namespaces"})
            if (namespace_obj.get("status") or {}).get("phase") == "Terminating":
                raise self._namespace_terminating(rtype, str(meta.get("name") or ""), str(ns))
        else:
            ns = None

        name = meta.get("name")
        if not isinstance(name, str | None) or not isinstance(meta.get("generateName"), str | None):
            # What Go's JSON decoding into ObjectMeta says: a 400 before anything else.
            raise ApiError(400, "BadRequest", "metadata.name and metadata.generateName must be strings")
        if not name and meta.get("generateName"):
            for _ in range(100):
                suffix = "".join(secrets.choice(_NAME_SUFFIX_ALPHABET) for _ in range(5))
                name = f"{meta['generateName']}{suffix}"
                if (ns, name) not in bucket:
                    break
        if not name:
            raise _invalid(
                rtype,
                "",
                [("metadata.name", "Required value: name or generateName is required", "FieldValueRequired")],
            )
        if (ns, name) in bucket:
            raise ApiError(
                409,
                "AlreadyExists",
                f'{rtype.qualified} "{name}" already exists',
                {"name": name, "group": rtype.group, "kind": rtype.plural},
            )

        for key in (
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "selfLink",
            "namespace",
        ):
            meta.pop(key, None)
        meta["name"] = name
        if ns is not None:
            meta["namespace"] = ns
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = _now()
        obj["apiVersion"] = rtype.api_version
        obj["kind"] = rtype.kind
        if rtype.has_status:
            obj.pop("status", None)

        obj = self._server_side_fields(rtype, obj, None)
        if rtype.crd_name is not None:
            obj = self._admit(rtype, obj, None)
        if rtype.tracks_generation:
            obj["metadata"]["generation"] = 1
        if dry_run:
            return obj
        committed = self._commit(rtype, "ADDED", obj, None)
        self._after_write(rtype, committed, None)
        return committed

    def _update(
        self,
        rtype: ResourceType,
        namespace: str | None,
        name: str,
        subresource: str | None,
        make: Callable[[JSON], Any],
        *,
        dry_run: bool = False,
        patch: bool = False,
    ) -> JSON:
        old = self._get(rtype, namespace, name)
        candidate = make(copy.deepcopy(self._present(rtype, old)))
        if not isinstance(candidate, dict):
            raise ApiError(400, "BadRequest", "the resulting object must be a JSON object")
        cmeta = candidate.get("metadata")
        if cmeta is not None and not isinstance(cmeta, dict):
            raise ApiError(400, "BadRequest", "metadata must be an object")
        # The API server decodes a PUT's body, and a patch's result, with the same strict decoder.
        self._decode(rtype, candidate, patch=patch)
        cmeta = candidate.get("metadata") or {}

        wanted_rv = cmeta.get("resourceVersion")
        if wanted_rv not in (None, "") and str(wanted_rv) != old["metadata"]["resourceVersion"]:
            raise ApiError(
                409,
                "Conflict",
                (
                    f'Operation cannot be fulfilled on {rtype.qualified} "{name}": '
                    f"the object has been modified; please apply your changes to the latest version and try again"
                ),
                {"name": name, "group": rtype.group, "kind": rtype.plural},
            )
        if cmeta.get("name") not in (None, name):
            raise ApiError(
                400,
                "BadRequest",
                f"the name of the object ({cmeta.get('name')}) does not match the name on the URL ({name})",
            )

        if subresource == "status":
            new = copy.deepcopy(old)
            if "status" in candidate:
                new["status"] = candidate["status"]
            else:
                new.pop("status", None)
        else:
            new = candidate
            meta = new.setdefault("metadata", {})
            for key in _SYSTEM_META:
                if key in old["metadata"]:
                    meta[key] = old["metadata"][key]
                else:
                    meta.pop(key, None)
            if rtype.has_status:
                if "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
                else:
                    new.pop("status", None)
            if old["metadata"].get("deletionTimestamp"):
                added = set(meta.get("finalizers") or []) - set(old["metadata"].get("finalizers") or [])
                if added:
                    raise _invalid(
                        rtype,
                        name,
                        [
                            (
                                "metadata.finalizers",
                                f"Forbidden: no new finalizers can be added if the object is being deleted, "
                                f"found new finalizers {sorted(added)}",
                                "FieldValueForbidden",
                            )
                        ],
                    )
        new["apiVersion"] = rtype.api_version
        new["kind"] = rtype.kind
        new = self._server_side_fields(rtype, new, old)
        if rtype.crd_name is not None:
            new = self._admit(rtype, new, self._present(rtype, old))

        if rtype.tracks_generation:
            excluded = ("metadata", "apiVersion", "kind") + (("status",) if rtype.has_status else ())
            generation = int(old["metadata"].get("generation", 1))
            if _without(new, *excluded) != _without(old, *excluded):
                generation += 1
            new["metadata"]["generation"] = generation

        if _without(new, "apiVersion") == _without(old, "apiVersion"):
            return old  # a no-op: no new resourceVersion, no watch event, like the API server
        if dry_run:
            return new

        committed = self._commit(rtype, "MODIFIED", new, old)
        self._after_write(rtype, committed, old)
        if committed["metadata"].get("deletionTimestamp") and not committed["metadata"].get("finalizers"):
            self._remove(rtype, committed)
        return committed

    def _patcher(self, rtype: ResourceType, name: str, content_type: str, patch: Any) -> Callable[[JSON], Any]:
        if content_type == "application/merge-patch+json" or (
            content_type == "application/strategic-merge-patch+json" and rtype.crd_name is None
        ):
            if not isinstance(patch, dict):
                raise ApiError(400, "BadRequest", "a merge patch must be a JSON object")
            return lambda old: merge_patch(old, patch)
        if content_type == "application/json-patch+json":
            if not isinstance(patch, list):
                raise ApiError(400, "BadRequest", "a JSON patch must be a JSON array")

            def apply(old: JSON) -> Any:
                try:
                    return jsonpatch.JsonPatch(patch).apply(old)
                except (
                    jsonpatch.JsonPatchException,
                    jsonpatch.JsonPointerException,
                    KeyError,
                    TypeError,
                    ValueError,
                ) as exc:
                    raise ApiError(
                        422,
                        "Invalid",
                        f"the server rejected our request due to an error in our request: {exc}",
                        {"name": name, "group": rtype.group, "kind": rtype.plural},
                    ) from exc

            return apply
        raise ApiError(
            415,
            "UnsupportedMediaType",
            "the body of the request was in an unknown format - "
            "accepted media types include: application/json-patch+json, "
            "application/merge-patch+json" + ("" if rtype.crd_name else ", application/strategic-merge-patch+json"),
        )

    def _delete_in_foreground(self, rtype: ResourceType, old: JSON) -> JSON:
        """propagationPolicy Foreground: the owner is marked for deletion with the
        ``foregroundDeletion`` finalizer, its dependents are deleted (in foreground too when they
        have dependents of their own), and the finalizer goes once no dependent with
        ``blockOwnerDeletion: true`` is left; the owner goes with it unless other finalizers stay."""
        new = copy.deepcopy(old)
        meta = new["metadata"]
        meta["deletionTimestamp"] = _now()
        meta["deletionGracePeriodSeconds"] = 0
        meta["finalizers"] = [*(meta.get("finalizers") or []), _FOREGROUND]
        if rtype.tracks_generation:
            meta["generation"] = int(old["metadata"].get("generation", 1)) + 1
        committed = self._commit(rtype, "MODIFIED", new, old)
        for dep_type, dependent in self._dependents_of(committed):
            if dependent["metadata"].get("deletionTimestamp"):
                continue
            nested = self._dependents.get(dependent["metadata"].get("uid") or "")
            self._delete(
                dep_type,
                dependent["metadata"].get("namespace"),
                dependent["metadata"]["name"],
                None,
                propagation="Foreground" if nested else "Background",
            )
        self._release_foreground(committed["metadata"]["uid"])
        current = self._store[(rtype.group, rtype.plural)].get(
            (committed["metadata"].get("namespace"), committed["metadata"]["name"])
        )
        return current if current is not None else committed

    def _delete(
        self,
        rtype: ResourceType,
        namespace: str | None,
        name: str,
        body: Any,
        *,
        dry_run: bool = False,
        propagation: str | None = None,
    ) -> JSON:
        old = self._get(rtype, namespace, name)
        is_namespace = (rtype.group, rtype.plural) == ("", "namespaces")
        if is_namespace and name in _IMMORTAL_NAMESPACES:
            # NamespaceLifecycle admission, before the store looks at preconditions.
            raise ApiError(
                403,
                "Forbidden",
                f'namespaces "{name}" is forbidden: this namespace may not be deleted',
                {"name": name, "group": "", "kind": "namespaces"},
            )
        preconditions = (body or {}).get("preconditions") or {} if isinstance(body, dict) else {}
        for key in ("uid", "resourceVersion"):
            if preconditions.get(key) and preconditions[key] != old["metadata"].get(key):
                raise ApiError(
                    409,
                    "Conflict",
                    (
                        f'Operation cannot be fulfilled on {rtype.qualified} "{name}": '
                        f"Precondition failed: {key}: {preconditions[key]}, "
                        f"ObjectMeta.{key}: {old['metadata'].get(key)}"
                    ),
                    {"name": name, "group": rtype.group, "kind": rtype.plural},
                )
        if is_namespace:
            return self._delete_namespace(rtype, old, dry_run=dry_run)
        policy = _propagation_policy(body, propagation)
        if dry_run:
            return old
        if policy == "Orphan" and not old["metadata"].get("deletionTimestamp"):
            self._orphan_dependents(old)
        if policy == "Foreground" and not old["metadata"].get("deletionTimestamp"):
            return self._delete_in_foreground(rtype, old)
        if not old["metadata"].get("finalizers"):
            return self._remove(rtype, old)
        if old["metadata"].get("deletionTimestamp"):
            return old
        new = copy.deepcopy(old)
        new["metadata"]["deletionTimestamp"] = _now()
        new["metadata"]["deletionGracePeriodSeconds"] = 0
        if rtype.tracks_generation:
            new["metadata"]["generation"] = int(old["metadata"].get("generation", 1)) + 1
        return self._commit(rtype, "MODIFIED", new, old)

    def _remove(self, rtype: ResourceType, obj: JSON) -> JSON:
        gone = self._commit(rtype, "DELETED", copy.deepcopy(obj), obj)
        if (rtype.group, rtype.plural) == (_CRD_GROUP, _CRD_PLURAL):
            self._unregister_crd(gone)
        return gone

    # --- decoding: structural pruning and fieldValidation ---

    def _decode(self, rtype: ResourceType, obj: JSON, *, patch: bool) -> None:
        """Prune the fields a custom resource's schema does not declare, as the API server's
        decoder does, and apply the request's ``fieldValidation``: Strict refuses them with 400
        BadRequest, Warn (the default) admits the pruned object with one ``Warning`` header per
        field, Ignore admits it silently."""
        if rtype.crd_name is None:
            return
        crd = self._store[(_CRD_GROUP, _CRD_PLURAL)].get((None, rtype.crd_name))
        if crd is None:
            return
        # The emulator serves the body as the URL's version and kind anyway; decode it as such.
        obj["apiVersion"] = rtype.api_version
        obj["kind"] = rtype.kind
        unknown = prune_unknown_fields(crd, obj)
        if not unknown:
            return
        state = _REQUEST.get()
        texts = [f'unknown field "{path}"' for path in unknown]
        if state is not None and state.field_validation == "Strict":
            message = "strict decoding error: " + ", ".join(texts)
            if not patch:  # create and update wrap it (transformDecodeError); patch does not
                message = f'{rtype.kind} in version "{rtype.version}" cannot be handled as a {rtype.kind}: {message}'
            raise ApiError(400, "BadRequest", message)
        if state is not None and state.field_validation == "Warn":
            state.warnings.extend(texts)

    # --- namespaces: lifecycle admission and the namespace controller ---

    @staticmethod
    def _namespace_terminating(rtype: ResourceType, name: str, namespace: str) -> ApiError:
        reason = f"unable to create new content in namespace {namespace} because it is being terminated"
        return ApiError(
            403,
            "Forbidden",
            f'{rtype.qualified} "{name}" is forbidden: {reason}'
            if name
            else f"{rtype.qualified} is forbidden: {reason}",
            {
                "name": name,
                "group": rtype.group,
                "kind": rtype.plural,
                "causes": [
                    {
                        "reason": "NamespaceTerminating",
                        "message": f"namespace {namespace} is being terminated",
                        "field": "metadata.namespace",
                    }
                ],
            },
        )

    def _delete_namespace(self, rtype: ResourceType, old: JSON, *, dry_run: bool) -> JSON:
        # The namespace registry: the first DELETE only marks the namespace Terminating; the
        # namespace controller removes its content, then its "kubernetes" finalizer.
        if old["metadata"].get("deletionTimestamp"):
            gone = not (old.get("spec") or {}).get("finalizers") and not old["metadata"].get("finalizers")
            return self._remove(rtype, old) if gone and not dry_run else old
        new = copy.deepcopy(old)
        new["metadata"]["deletionTimestamp"] = _now()
        new.setdefault("status", {})["phase"] = "Terminating"
        if dry_run:
            return new
        committed = self._commit(rtype, "MODIFIED", new, old)
        self._start_namespace_controller(committed)
        return committed

    def _start_namespace_controller(self, namespace: JSON) -> None:
        name = namespace["metadata"]["name"]
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no event loop (a direct call outside a server): nothing runs the controller
        running = self._controllers.get(name)
        if running is not None and not running.done():
            return
        # A fresh context: the controller's writes are the server's, not the DELETE request's.
        task = loop.create_task(
            self._namespace_controller(name, namespace["metadata"]["uid"]), context=contextvars.Context()
        )
        self._controllers[name] = task

    def stop_controllers(self) -> None:
        """Cancel the emulator's background controllers (the server does this on exit)."""
        for task in self._controllers.values():
            task.cancel()
        self._controllers.clear()

    async def _namespace_controller(self, name: str, uid: str) -> None:
        await asyncio.sleep(self.namespace_deletion_delay)
        while True:
            namespace = self._store[("", "namespaces")].get((None, name))
            if namespace is None or namespace["metadata"].get("uid") != uid:
                return
            # Like the real controller, it only acts while its own finalizer is there.
            if "kubernetes" not in ((namespace.get("spec") or {}).get("finalizers") or []):
                return
            for rtype in self._namespaced_types():
                for obj in [o for (ns, _), o in self._store[(rtype.group, rtype.plural)].items() if ns == name]:
                    if not obj["metadata"].get("deletionTimestamp"):
                        self._delete(rtype, name, obj["metadata"]["name"], None)
                if self.namespace_deletion_step > 0:
                    await asyncio.sleep(self.namespace_deletion_step)
            if self._sync_namespace_status(name, uid):
                return
            await asyncio.sleep(self.namespace_resync_interval)

    def _namespaced_types(self) -> list[ResourceType]:
        """One type per namespaced store (group, plural), in the configured deletion order."""
        by_store: dict[tuple[str, str], ResourceType] = {}
        for t in sorted(self._types.values(), key=lambda t: _version_priority(t.version)):
            if t.namespaced:
                by_store.setdefault((t.group, t.plural), t)
        order = {name: i for i, name in enumerate(self.namespace_deletion_order)}
        return sorted(by_store.values(), key=lambda t: (order.get(t.qualified, len(order)), t.qualified))

    def _sync_namespace_status(self, name: str, uid: str) -> bool:
        """Record what remains in the namespace's conditions; remove it once empty. True when done."""
        remaining: dict[str, int] = {}
        finalizers: collections.Counter[str] = collections.Counter()
        for rtype in self._namespaced_types():
            objs = [o for (ns, _), o in self._store[(rtype.group, rtype.plural)].items() if ns == name]
            if objs:
                # "%s.%s" of resource and group, so core resources read "secrets." on a real cluster.
                remaining[f"{rtype.plural}.{rtype.group}"] = len(objs)
                for obj in objs:
                    finalizers.update(obj["metadata"].get("finalizers") or [])
        rtype = self._type("", "v1", "namespaces")
        old = self._store[("", "namespaces")].get((None, name))
        if old is None or old["metadata"].get("uid") != uid:
            return True
        failing: dict[str, tuple[str, str]] = {}
        if remaining:
            listed = ", ".join(sorted(f"{r} has {n} resource instances" for r, n in remaining.items()))
            failing["NamespaceContentRemaining"] = ("SomeResourcesRemain", f"Some resources are remaining: {listed}")
        if finalizers:
            listed = ", ".join(sorted(f"{f} in {n} resource instances" for f, n in finalizers.items()))
            failing["NamespaceFinalizersRemaining"] = (
                "SomeFinalizersRemain",
                f"Some content in the namespace has finalizers remaining: {listed}",
            )
        new = copy.deepcopy(old)
        status = new.setdefault("status", {})
        status["conditions"] = _namespace_conditions(status.get("conditions") or [], failing)
        if new != old:
            old = self._commit(rtype, "MODIFIED", new, old)
        if remaining:
            return False
        # Content gone: the controller finalizes (PUT .../finalize without "kubernetes"), and the
        # registry deletes a namespace whose spec and metadata finalizers are then all gone.
        finalized = copy.deepcopy(old)
        spec = finalized.setdefault("spec", {})
        spec["finalizers"] = [f for f in spec.get("finalizers") or [] if f != "kubernetes"]
        if not spec["finalizers"] and not finalized["metadata"].get("finalizers"):
            self._remove(rtype, finalized)
        else:
            self._commit(rtype, "MODIFIED", finalized, old)
        return True

    # --- server-side behaviour of particular kinds ---

    def _server_side_fields(self, rtype: ResourceType, obj: JSON, old: JSON | None) -> JSON:
        key = (rtype.group, rtype.plural)
        if key == ("", "namespaces"):
            obj.setdefault("spec", {"finalizers": ["kubernetes"]})
            obj["status"] = (old or {}).get("status") or {"phase": "Active"}
            obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
        elif key == ("", "secrets") and isinstance(obj.get("stringData"), dict):
            data = obj.setdefault("data", {})
            for k, v in obj.pop("stringData").items():
                data[k] = base64.b64encode(str(v).encode()).decode()
        elif key == (_CRD_GROUP, _CRD_PLURAL):
            self._validate_crd(rtype, obj)
            obj["status"] = self._crd_status(obj, (old or {}).get("status") or {})
        return obj

    def _validate_crd(self, rtype: ResourceType, crd: JSON) -> None:
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        group, plural = spec.get("group"), names.get("plural")
        causes: list[tuple[str, str, str]] = []
        if not group:
            causes.append(("spec.group", "Required value", "FieldValueRequired"))
        if not plural:
            causes.append(("spec.names.plural", "Required value", "FieldValueRequired"))
        if not names.get("kind"):
            causes.append(("spec.names.kind", "Required value", "FieldValueRequired"))
        if spec.get("scope") not in ("Namespaced", "Cluster"):
            causes.append(
                (
                    "spec.scope",
                    'Unsupported value: must be "Namespaced" or "Cluster"',
                    "FieldValueNotSupported",
                )
            )
        versions = spec.get("versions") or []
        if not versions or sum(1 for v in versions if v.get("storage")) != 1:
            causes.append(
                (
                    "spec.versions",
                    "Invalid value: must have exactly one version marked as storage version",
                    "FieldValueInvalid",
                )
            )
        if group and plural and crd["metadata"]["name"] != f"{plural}.{group}":
            causes.append(
                (
                    "metadata.name",
                    f'Invalid value: "{crd["metadata"]["name"]}": must be spec.names.plural+"."+spec.group',
                    "FieldValueInvalid",
                )
            )
        if group and plural and not causes:
            for (g, _, p), t in self._types.items():
                if (g, p) == (group, plural) and t.crd_name is None:
                    causes.append(("spec.names.plural", "Invalid value: a built-in resource", "FieldValueInvalid"))
                    break
        if causes:
            raise _invalid(rtype, crd["metadata"]["name"], causes)

    @staticmethod
    def _crd_status(crd: JSON, old_status: JSON) -> JSON:
        spec = crd["spec"]
        now = _now()
        previous = {c.get("type"): c for c in old_status.get("conditions") or []}

        def condition(kind: str, reason: str, message: str) -> JSON:
            since = previous.get(kind, {}).get("lastTransitionTime", now)
            return {
                "type": kind,
                "status": "True",
                "reason": reason,
                "message": message,
                "lastTransitionTime": since,
            }

        stored = list(old_status.get("storedVersions") or [])
        for version in spec["versions"]:
            if version.get("storage") and version["name"] not in stored:
                stored.append(version["name"])
        names = dict(spec["names"])
        names.setdefault("singular", names["kind"].lower())
        names.setdefault("listKind", f"{names['kind']}List")
        return {
            "conditions": [
                condition("NamesAccepted", "NoConflicts", "no conflicts found"),
                condition("Established", "InitialNamesAccepted", "the initial names have been accepted"),
            ],
            "acceptedNames": names,
            "storedVersions": stored,
        }

    def _after_write(self, rtype: ResourceType, obj: JSON, old: JSON | None) -> None:
        key = (rtype.group, rtype.plural)
        if key == (_CRD_GROUP, _CRD_PLURAL):
            self._register_crd_types(obj)
        elif rtype.plural == "events" and key in (("", "events"), ("events.k8s.io", "events")) and old is None:
            self._posted_events.append(obj)
            while len(self._posted_events) > self.events_limit:
                self._posted_events.popleft()
            bucket = self._store[key]
            # Real clusters expire Events after an hour; here the oldest go once there are too many.
            while len(bucket) > self.events_limit:
                oldest = next(iter(bucket.values()))
                self._remove(rtype, oldest)

    def _register_crd_types(self, crd: JSON) -> None:
        spec = crd["spec"]
        names = spec["names"]
        group, plural = spec["group"], names["plural"]
        for key in [k for k, t in self._types.items() if t.crd_name == crd["metadata"]["name"]]:
            del self._types[key]
        for version in spec["versions"]:
            if not version.get("served", True):
                continue
            subresources = version.get("subresources") or {}
            self._types[(group, version["name"], plural)] = ResourceType(
                group=group,
                version=version["name"],
                plural=plural,
                kind=names["kind"],
                namespaced=spec["scope"] == "Namespaced",
                singular=names.get("singular") or names["kind"].lower(),
                short_names=tuple(names.get("shortNames") or ()),
                categories=tuple(names.get("categories") or ()),
                subresources=frozenset(s for s in ("status", "scale") if s in subresources),
                crd_name=crd["metadata"]["name"],
                tracks_generation=True,
            )

    def _unregister_crd(self, crd: JSON) -> None:
        name = crd["metadata"]["name"]
        types = [t for t in self._types.values() if t.crd_name == name]
        if types:
            # The API server deletes all custom resources before the CRD itself disappears.
            for obj in list(self._store[(types[0].group, types[0].plural)].values()):
                self._commit(types[0], "DELETED", copy.deepcopy(obj), obj)
        for key in [k for k, t in self._types.items() if t.crd_name == name]:
            del self._types[key]
        # Watches of a resource that no longer exists end, as on a real server.
        for watcher in list(self._watchers):
            if types and (watcher.group, watcher.plural) == (types[0].group, types[0].plural):
                watcher.queue.put_nowait(None)

    def _admit(self, rtype: ResourceType, new: JSON, old: JSON | None) -> JSON:
        if self.admission is None or rtype.crd_name is None:
            return new
        crd = self._store[(_CRD_GROUP, _CRD_PLURAL)].get((None, rtype.crd_name))
        if crd is None:
            return new
        name = new["metadata"]["name"]
        try:
            admitted = self.admission(copy.deepcopy(crd), new, copy.deepcopy(old) if old is not None else None)
        except Invalid as exc:
            raise _invalid(rtype, name, [(c.field, c.message, c.reason) for c in exc.causes]) from exc
        return admitted


_NAMESPACE_CONDITIONS = {
    # type: (reason, message) when nothing is wrong, as the namespace controller words them
    "NamespaceDeletionDiscoveryFailure": ("ResourcesDiscovered", "All resources successfully discovered"),
    "NamespaceDeletionGroupVersionParsingFailure": ("ParsedGroupVersions", "All legacy kube types successfully parsed"),
    "NamespaceDeletionContentFailure": (
        "ContentDeleted",
        "All content successfully deleted, may be waiting on finalization",
    ),
    "NamespaceContentRemaining": ("ContentRemoved", "All content successfully removed"),
    "NamespaceFinalizersRemaining": ("ContentHasNoFinalizers", "All content-preserving finalizers finished"),
}


def _namespace_conditions(old: list[JSON], failing: Mapping[str, tuple[str, str]]) -> list[JSON]:
    """The namespace controller's updateConditions: every type present, True with the failing
    reason or False with the ok one; lastTransitionTime changes only when status flips."""
    result = [copy.deepcopy(c) for c in old]
    now = _now()
    for kind, (ok_reason, ok_message) in _NAMESPACE_CONDITIONS.items():
        status, (reason, message) = ("True", failing[kind]) if kind in failing else ("False", (ok_reason, ok_message))
        current = next((c for c in result if c.get("type") == kind), None)
        if current is None:
            result.append(
                {"type": kind, "status": status, "lastTransitionTime": now, "reason": reason, "message": message}
            )
        elif (current.get("status"), current.get("reason"), current.get("message")) != (status, reason, message):
            if current.get("status") != status:
                current["lastTransitionTime"] = now
            current.update(status=status, reason=reason, message=message)
    return result


class KubeEmulatorServer:
    """Serves a :class:`KubeEmulator` over HTTP on loopback for the duration of an ``async with``.

    Not kmock's ``Server``: that one also patches aiohttp's DNS resolution process-wide, which other
    in-process HTTP simulators do not need. Watch handlers are cancelled when clients disconnect.
    """

    def __init__(self, emulator: KubeEmulator | None = None, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.emulator = emulator if emulator is not None else KubeEmulator()
        self.host = host
        self.port = port
        self._runner: aiohttp.web.ServerRunner | None = None

    @property
    def url(self) -> str:
        if self._runner is None:
            raise RuntimeError("the server is not running")
        return f"http://{self.host}:{self.port}"

    async def __aenter__(self) -> Self:
        await self.emulator.__aenter__()
        server = aiohttp.web.Server(self.emulator, handler_cancellation=True)
        self._runner = aiohttp.web.ServerRunner(server, shutdown_timeout=1.0)
        await self._runner.setup()
        site = aiohttp.web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.emulator.stop_controllers()
        self.emulator.close_watches()
        await asyncio.sleep(0)  # let the watch handlers see their end-of-stream markers
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.emulator.__aexit__(exc_type, exc, tb)
