"""Check HTTP exchanges against a vendor's published OpenAPI spec (openapi-core).

Generic over vendors: a simulator gives a spec path and the paths it serves, then
passes each request and response through :meth:`ContractChecker.check_request` /
:meth:`ContractChecker.check_response`, which return human-readable violations
instead of raising, so a test can collect them and assert the list is empty.

Why the spec is sliced: vendor specs are large (Baseten's is 1.1 MB, 139 paths) and
openapi-spec-validator takes seconds to validate the whole document. Keeping only
the paths a simulator serves plus the components they reference makes building
the validator (spec validation included) take milliseconds, and the result is
cached per process.

Why objects are closed by default: vendor specs generated from pydantic models
leave ``additionalProperties`` unset, which in JSON Schema means "anything goes".
That would let a misspelt field in our client, or an invented field in a simulator
response, pass silently. With ``closed_objects=True`` every object schema that
lists ``properties`` and has no ``additionalProperties`` or composition keyword is
treated as closed (schemas used inside ``allOf`` are left open, since closing them
would refuse the other branches' fields).
"""

from __future__ import annotations

import copy
import functools
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from openapi_core import Config, OpenAPI
from openapi_core.templating.paths.exceptions import PathError
from openapi_core.templating.paths.finders import APICallPathFinder
from openapi_core.testing import MockRequest, MockResponse

_COMPOSITION = ("allOf", "anyOf", "oneOf")
_LITERAL_KEYWORDS = frozenset({"examples", "example", "default", "enum", "const", "x-codeSamples"})


@dataclass(frozen=True)
class ContractRequest:
    """A request as seen by the server, reduced to what the spec constrains."""

    method: str
    path: str
    query: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | None = None
    content_type: str = "application/json"


@dataclass(frozen=True)
class ContractResponse:
    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


def _iter_refs(node: Any) -> Iterable[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _iter_refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _iter_refs(item)


def _resolve_pointer(doc: dict[str, Any], ref: str) -> Any:
    node: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _set_pointer(doc: dict[str, Any], ref: str, value: Any) -> None:
    parts = [p.replace("~1", "/").replace("~0", "~") for p in ref.removeprefix("#/").split("/")]
    node = doc
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def slice_spec(spec: dict[str, Any], paths: Iterable[str]) -> dict[str, Any]:
    """Return ``spec`` with only ``paths`` and the components they reach by ``$ref``."""
    wanted = list(paths)
    missing = [p for p in wanted if p not in spec.get("paths", {})]
    if missing:
        raise KeyError(f"paths not in spec: {missing}")
    out: dict[str, Any] = {k: v for k, v in spec.items() if k not in ("paths", "components")}
    out["paths"] = {p: copy.deepcopy(spec["paths"][p]) for p in wanted}
    # Security schemes are referenced by name, not $ref, so they would be lost otherwise.
    schemes = spec.get("components", {}).get("securitySchemes")
    if schemes:
        out["components"] = {"securitySchemes": copy.deepcopy(schemes)}
    seen: set[str] = set()
    todo = list(_iter_refs(out["paths"]))
    while todo:
        ref = todo.pop()
        if ref in seen or not ref.startswith("#/"):
            continue
        seen.add(ref)
        target = copy.deepcopy(_resolve_pointer(spec, ref))
        _set_pointer(out, ref, target)
        todo.extend(_iter_refs(target))
    return out


def _close_objects(doc: dict[str, Any]) -> None:
    all_of_refs = {
        ref for node in _walk(doc) if isinstance(node, dict) and "allOf" in node for ref in _iter_refs(node["allOf"])
    }
    shielded = {id(_resolve_pointer(doc, r)) for r in all_of_refs if r.startswith("#/")}
    for node in _walk(doc):
        if (
            isinstance(node, dict)
            and isinstance(node.get("properties"), dict)
            and "additionalProperties" not in node
            and "unevaluatedProperties" not in node
            and not any(k in node for k in _COMPOSITION)
            and id(node) not in shielded
        ):
            node["additionalProperties"] = False


def _nullable_to_type_union(doc: dict[str, Any]) -> None:
    """Read OpenAPI 3.0's ``nullable: true`` as 3.1 means it: ``type: [T, "null"]``.

    Some 3.1 documents (Together's) still use the 3.0 keyword, which a 3.1 validator
    ignores; the nulls the vendor really sends would then count as violations.
    """
    for node in _walk(doc):
        if isinstance(node, dict) and node.get("nullable") is True:
            del node["nullable"]
            kind = node.get("type")
            if isinstance(kind, str):
                node["type"] = [kind, "null"]


def _walk(node: Any) -> Iterable[Any]:
    yield node
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _LITERAL_KEYWORDS:
                continue  # instance data, not schemas: closing them would corrupt examples
            if key == "properties" and isinstance(value, dict):
                # Walk the property schemas, never the name->schema map itself, or a
                # property called "properties" would be mistaken for a schema.
                for sub in value.values():
                    yield from _walk(sub)
            else:
                yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


@dataclass(frozen=True)
class _Built:
    app: OpenAPI
    finder: APICallPathFinder
    server_url: str
    setup_seconds: float


@functools.lru_cache(maxsize=16)
def _build(spec_path: str, mtime_ns: int, paths: tuple[str, ...], closed_objects: bool) -> _Built:
    del mtime_ns  # part of the cache key only, so an edited spec file is reloaded
    started = time.perf_counter()
    with open(spec_path, encoding="utf-8") as fh:
        text = fh.read()
    try:
        # Some vendors ship JSON in a .yaml file; json is about 100x faster than a YAML parser.
        spec = json.loads(text)
    except ValueError:
        spec = yaml.safe_load(text)
    sliced = slice_spec(spec, paths) if paths else spec
    if str(sliced.get("openapi", "")).startswith("3.1"):
        _nullable_to_type_union(sliced)
    if closed_objects:
        _close_objects(sliced)
    app = OpenAPI.from_dict(sliced, config=Config())
    servers = sliced.get("servers") or [{"url": "http://localhost"}]
    return _Built(
        app=app,
        finder=APICallPathFinder(app.spec),
        server_url=str(servers[0]["url"]).rstrip("/"),
        setup_seconds=time.perf_counter() - started,
    )


def _describe(error: BaseException) -> str:
    """One line per problem: the schema errors when there are any, else the exception chain."""
    head = type(error).__name__
    details: list[str] = []
    cause: BaseException | None = error
    for _ in range(5):
        if cause is None:
            break
        schema_errors = getattr(cause, "schema_errors", None)
        if schema_errors:
            for se in schema_errors:
                where = "/".join(str(p) for p in getattr(se, "absolute_path", ())) or "<root>"
                details.append(f"{where}: {getattr(se, 'message', se)}")
            break
        if cause is not error:
            details.append(f"{type(cause).__name__}: {cause}")
        cause = cause.__cause__ or cause.__context__
    return f"{head}: " + ("; ".join(details) if details else str(error))


class ContractChecker:
    """Validates requests and responses against (a slice of) an OpenAPI spec.

    ``paths`` are spec path templates (e.g. ``/v1/gateway/endpoints/{endpoint_id}``);
    an empty tuple keeps the whole spec. Responses whose status the spec does not
    document are not checked (see :meth:`check_response`).
    """

    def __init__(
        self,
        spec_path: str | Path,
        paths: Iterable[str] = (),
        *,
        closed_objects: bool = True,
    ) -> None:
        resolved = Path(spec_path).resolve()
        self.spec_path = resolved
        self.paths = tuple(paths)
        before = time.perf_counter()
        built = _build(str(resolved), resolved.stat().st_mtime_ns, self.paths, closed_objects)
        self.app = built.app
        self._finder = built.finder
        # Requests are checked as if sent to the spec's first server: the simulator's
        # loopback address would otherwise match no server entry.
        self.host_url = built.server_url
        parts = urlsplit(self.host_url)
        self._origin = f"{parts.scheme}://{parts.netloc}"
        #: Time this process spent building the validator (load, slice, spec validation).
        self.setup_seconds = built.setup_seconds
        #: Time this constructor took: near zero when the cache already held the validator.
        self.construct_seconds = time.perf_counter() - before

    def _mock_request(self, req: ContractRequest) -> MockRequest:
        return MockRequest(
            self.host_url,
            req.method,
            req.path,
            args=dict(req.query),
            headers=dict(req.headers),
            data=req.body,
            content_type=req.content_type,
        )

    def check_request(self, req: ContractRequest) -> list[str]:
        # Validate without unmarshalling: turning bodies into objects costs ~10x the check.
        errors = self.app.request_validator.iter_errors(self._mock_request(req))
        return [f"{req.method.upper()} {req.path} request: {_describe(e)}" for e in errors]

    def documented_statuses(self, req: ContractRequest) -> set[str] | None:
        """Statuses the spec documents for this operation, or None when the operation is unknown."""
        try:
            # req.path is the full request path (a server URL's own path, e.g. /v1, included).
            found = self._finder.find(req.method.lower(), self._origin + req.path)
        except PathError:
            return None
        return {str(k) for k in (found.operation / "responses").keys()}  # noqa: SIM118 (a SchemaPath, not a dict)

    def check_response(self, req: ContractRequest, resp: ContractResponse) -> list[str]:
        """Violations of ``resp`` as the answer to ``req``.

        A status the spec does not document (vendors often document only 200) is
        skipped rather than reported: the absence of an error schema says nothing
        about what the vendor really sends, and reporting every 4xx would drown the
        violations that matter. A ``default`` or ``4XX``-style range entry makes it checked.
        """
        statuses = self.documented_statuses(req)
        if statuses is not None and not self._status_documented(resp.status, statuses):
            return []
        errors = self.app.response_validator.iter_errors(
            self._mock_request(req),
            MockResponse(resp.body, resp.status, headers=dict(resp.headers), content_type=resp.content_type),
        )
        return [f"{req.method.upper()} {req.path} -> {resp.status} response: {_describe(e)}" for e in errors]

    @staticmethod
    def _status_documented(status: int, statuses: set[str]) -> bool:
        return str(status) in statuses or f"{str(status)[0]}XX" in statuses or "default" in statuses
