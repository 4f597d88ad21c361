"""Simulator of a self-hosted model registry (OpenMined Syft Space), ``/api/v1/models``.

Implements ``shared/apis.md`` section 2. There is no vendor OpenAPI spec; where the
docs are silent, behaviour follows the server's published source
(``OpenMined/syft-space``, ``backend/syft_space/components/{models,tenants,auth}``),
and the choices made are listed on :class:`ModelRegistrySimulator`.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from aigw_testbed import SPECS
from aigw_testbed.simulators import DemoUpstream
from aigw_testbed.simulators.base import ApiError, Call, Handler, Json, Route, SimulatorServer, _Invalid
from aigw_testbed.simulators.contract import ContractChecker

PREFIX = "/api/v1/models"
# The spec's paths (its server URL ends in /api/v1), every one the simulator serves.
REGISTRY_SPEC_PATHS = (
    "/models/",
    "/models/{name}",
    "/models/types/",
    "/models/types/{dtype}",
    "/models/types/{dtype}/schema",
)
DEFAULT_TENANT = "root"
TENANT_HEADER = "X-Tenant-Name"

OPENAI_CONFIG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "api_key": {"type": "string", "title": "OpenAI API Key", "description": "Your OpenAI API key"},
        "model": {
            "type": "string",
            "title": "Model",
            "description": "Model to use for chat completions",
            "default": "gpt-3.5-turbo",
        },
        "base_url": {
            "type": "string",
            "title": "Base URL",
            "description": "Custom base URL for OpenAI-compatible APIs (optional)",
            "default": "https://api.openai.com/v1",
        },
        "system_prompt": {
            "type": "string",
            "title": "System Prompt",
            "description": "System prompt to use for chat completions",
            "default": "",
        },
    },
    "required": ["api_key"],
    "order": ["api_key", "model", "base_url"],
}

# The server serves the model type's class docstring as its description, verbatim.
_OPENAI_DESCRIPTION = """OpenAI model type for interacting with OpenAI's API.

    Supports OpenAI's chat completion API and compatible endpoints.
    Can be configured with API key, model selection, and custom base URL.

    Reference: https://platform.openai.com/docs/api-reference
    """

MODEL_TYPES: tuple[dict[str, Any], ...] = (
    {
        "name": "openai",
        "description": _OPENAI_DESCRIPTION,
        "config_schema": OPENAI_CONFIG_SCHEMA,
        "icon": "\N{ROBOT FACE}",
        "enabled": True,
    },
)

# Response views, as the server's pydantic response models filter them.
_FULL_FIELDS = (
    "id",
    "name",
    "dtype",
    "configuration",
    "summary",
    "tags",
    "created_at",
    "updated_at",
    "connected_endpoints",
)
_RESPONSE_FIELDS = _FULL_FIELDS[:-1]  # ModelResponse: create (and PATCH, see patch_echoes_endpoints)
_LIST_FIELDS = tuple(f for f in _FULL_FIELDS if f != "updated_at")  # ModelListItem

_PATCH_NEEDS_A_FIELD = "At least one field (name, summary, or tags) must be provided"


def default_spec_path() -> Path:
    """Our OpenAPI document for the registry, shipped beside this module (package data).

    Unlike the vendors' specs in ``shared/openapi/`` it is ours: Syft Space publishes none.
    """
    return SPECS / "model_registry.openapi.yaml"


def iso8601(moment: datetime) -> str:
    """A timestamp as pydantic v2 writes an aware UTC datetime: ``Z``, microseconds only when non-zero."""
    text = moment.astimezone(UTC).isoformat()
    return text.replace("+00:00", "Z")


class Unprocessable(Exception):
    """FastAPI's request validation failure: 422 with ``detail`` a list of pydantic v2 errors."""

    def __init__(self, errors: list[dict[str, Json]]) -> None:
        super().__init__(errors)
        self.errors = errors


class ModelRegistrySimulator(SimulatorServer):
    """Syft Space ``/api/v1/models``, state in memory, one model table per tenant.

    Sources, strongest first: the server's source code, then apis.md and the docs
    seed. Where they disagree the source wins, and the difference is listed here:

    - 422 bodies are FastAPI + **pydantic v2** error lists, as the server uses v2:
      ``{"detail": [{"type": "missing", "loc": ["body", "name"], "msg": "Field required",
      "input": {...}}]}``; a wrong type is ``string_type`` / ``dict_type``, a body that
      is not an object ``model_attributes_type`` at ``["body"]``, unparseable JSON
      ``json_invalid`` at ``["body", <offset>]``. Clients should read ``loc`` and ``msg`` only.
    - Auth (when ``admin_key`` is set and non-empty): the header must be exactly
      ``Authorization: Bearer <admin_key>``; missing, malformed **and wrong** keys
      all answer 401 ``{"detail": "Admin API key required"}`` (there is no 403).
      It is checked first, before routing-level answers (307, 405) and tenants.
    - Tenants (when ``tenants`` is given): an ``X-Tenant-Name`` naming no tenant is
      404 ``{"detail": "Tenant '<x>' not found"}`` on every route. A missing header
      is 400 on the tenant-scoped routes (all of ``/models/`` and ``/models/{name}``),
      but the ``/models/types/...`` routes are tenant-agnostic and answer without it.
      The default tenant (``default_tenant``, ``"root"``) always exists and is where a
      single-tenant server keeps everything; there the header is ignored.
    - Order of checks, as FastAPI runs them: auth 401, unknown tenant 404, JSON
      decode 422, missing tenant header 400, body validation 422, then 404 / 400
      (unknown dtype) / 409. So an empty PATCH of a missing model is 422, not 404.
    - Messages: 400 ``Model type '<dtype>' not found``, 409 ``Model '<name>' already
      exists`` (create) and ``Model '<name>' already exists for this tenant`` (rename),
      404 ``Model '<name>' not found``, DELETE 200 ``{"message": "Successfully deleted
      model '<name>'"}`` (the source's wording; the brief guessed another).
    - Response views follow the response models: POST and PATCH answer without
      ``connected_endpoints`` (``patch_echoes_endpoints=True`` adds them to PATCH, as
      the docs seed shows), the list omits ``updated_at``, GET by name has every field.
    - PATCH takes ``name``, ``summary``, ``tags``; other fields (``dtype``,
      ``configuration``, ...) are ignored, as pydantic ignores extra fields, and
      ``null`` counts as not given. An accepted PATCH always bumps ``updated_at``,
      even when nothing changes. Renaming onto its own name is not a conflict.
    - Strings are not coerced (pydantic v2 lax mode refuses numbers for ``str``).
      Names are not validated at all, like the server (even ``""`` is accepted).
      ``configuration`` is stored and returned as given, ``api_key`` included.
    - Trailing slashes, as Starlette routes: the collection is ``/models/``;
      ``/models`` (and ``/models/<name>/``, ``/models/types/<x>/``) answer 307 with
      ``Location`` set to the other spelling and nothing is done (httpx does not follow
      redirects by default, so a client must use the canonical path). ``/models/types``
      without the slash is the model named ``types``, as on the server. A method a
      path does not serve is 405 ``{"detail": "Method Not Allowed"}`` with ``Allow``.
    - Deleting a model with connected endpoints succeeds; the links go with it.
    - Unknown paths answer 404 ``{"detail": "Not Found"}`` (before auth, unlike the
      server, whose auth middleware would say 401 first).
    - 429s come only from the base's faults and token bucket, with ``Retry-After``;
      the server itself has no rate limit.
    - Timestamps: ISO 8601 in UTC with ``Z`` (see :func:`iso8601`).

    With ``contract=True`` every exchange on these routes (the 307 and 405 answers
    included, so a client using a path or method the API does not serve is reported)
    is checked against our OpenAPI document for the registry (:func:`default_spec_path`,
    closed objects; see :mod:`.contract`) and violations collect in ``contract_violations``.
    """

    upstream_name = "model registry"

    def __init__(
        self,
        admin_key: str | None = None,
        *,
        tenants: Iterable[str] | None = None,
        default_tenant: str = DEFAULT_TENANT,
        patch_echoes_endpoints: bool = False,
        clock: Callable[[], datetime] | None = None,
        contract: bool = False,
        spec_path: str | Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        rate_limit: float | None = None,
    ) -> None:
        checker = ContractChecker(spec_path or default_spec_path(), REGISTRY_SPEC_PATHS) if contract else None
        super().__init__(host=host, port=port, rate_limit=rate_limit, contract_checker=checker)
        #: None or "" turns auth off, as an unset ``admin_api_key`` does on the server.
        self.admin_key = admin_key
        #: Known tenant names (the default one included); None = multi-tenancy disabled.
        self.tenants: set[str] | None = {default_tenant, *tenants} if tenants is not None else None
        self.default_tenant = default_tenant
        self.patch_echoes_endpoints = patch_echoes_endpoints
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))
        # tenant -> model id -> model in full response shape; keyed by id so that a
        # rename keeps the list order, which on the server is insertion order.
        self._tables: dict[str, dict[str, dict[str, Any]]] = {}

    # ----------------------------------------------------------------- out of band

    def rotate_admin_key(self, new: str | None) -> None:
        self.admin_key = new

    def models(self, tenant: str | None = None) -> dict[str, dict[str, Any]]:
        """Copies of the tenant's models by name, every field included (``api_key`` too)."""
        return {m["name"]: copy.deepcopy(m) for m in self._table(tenant).values()}

    def connect_endpoint(
        self, model_name: str, endpoint_name: str, slug: str, tenant: str | None = None
    ) -> dict[str, str]:
        """Link an endpoint to the model, as creating a Syft Space endpoint on it would.

        The model's ``updated_at`` is left alone: the link lives on the endpoint's row.
        """
        link = {"id": str(uuid.uuid4()), "name": endpoint_name, "slug": slug}
        self._by_name(model_name, tenant)["connected_endpoints"].append(link)
        return dict(link)

    def disconnect_endpoint(self, model_name: str, slug: str, tenant: str | None = None) -> None:
        model = self._by_name(model_name, tenant)
        model["connected_endpoints"] = [e for e in model["connected_endpoints"] if e["slug"] != slug]

    def delete_out_of_band(self, name: str, tenant: str | None = None) -> dict[str, Any]:
        """Delete as if someone used the Syft Space UI; returns the removed model."""
        model = self._by_name(name, tenant)
        return self._table(tenant).pop(model["id"])

    def modify_out_of_band(self, name: str, /, tenant: str | None = None, **fields: Any) -> dict[str, Any]:
        """Change any fields (``name=`` renames) with no validation, bumping ``updated_at`` unless given.

        ``name`` is positional-only so that a rename can be passed as a field.
        """
        model = self._by_name(name, tenant)
        model.update(copy.deepcopy(fields))
        if "updated_at" not in fields:
            model["updated_at"] = self._now()
        return copy.deepcopy(model)

    # ----------------------------------------------------------------- base hooks

    def routes(self) -> Iterable[Route]:
        # aiohttp tries a resource's routes in order, so each "*" (405) route follows
        # the methods its path does serve; /types/ precedes /{name}/ so it wins.
        return [
            Route("GET", f"{PREFIX}/types/", self._wrap(self._list_types)),
            Route("*", f"{PREFIX}/types/", self._not_allowed("GET")),
            Route("GET", f"{PREFIX}/types/{{dtype}}", self._wrap(self._get_type)),
            Route("*", f"{PREFIX}/types/{{dtype}}", self._not_allowed("GET")),
            Route("GET", f"{PREFIX}/types/{{dtype}}/schema", self._wrap(self._get_type_schema)),
            Route("*", f"{PREFIX}/types/{{dtype}}/schema", self._not_allowed("GET")),
            Route("POST", f"{PREFIX}/", self._wrap(self._create)),
            Route("GET", f"{PREFIX}/", self._wrap(self._list)),
            Route("*", f"{PREFIX}/", self._not_allowed("GET, POST")),
            Route("GET", f"{PREFIX}/{{name}}", self._wrap(self._get)),
            Route("PATCH", f"{PREFIX}/{{name}}", self._wrap(self._patch)),
            Route("DELETE", f"{PREFIX}/{{name}}", self._wrap(self._delete)),
            Route("*", f"{PREFIX}/{{name}}", self._not_allowed("GET, PATCH, DELETE")),
            Route("*", PREFIX, self._redirect_slash),
            Route("*", f"{PREFIX}/{{name}}/", self._redirect_slash),
            Route("*", f"{PREFIX}/types/{{dtype}}/", self._redirect_slash),
            Route("*", f"{PREFIX}/types/{{dtype}}/schema/", self._redirect_slash),
        ]

    def error_body(self, status: int, message: str) -> Json:
        return {"detail": message}

    def identify(self, request: web.Request) -> str | None:
        # The server compares ``header[7:]`` after an exact, case-sensitive "Bearer " prefix.
        header = request.headers.get("Authorization", "")
        return header[7:] if header.startswith("Bearer ") else None

    def authenticate(self, call: Call) -> None:
        if self.admin_key and call.key != self.admin_key:
            raise ApiError(401, "Admin API key required")
        if self.tenants is not None:
            name = call.request.headers.get(TENANT_HEADER)
            if name and name not in self.tenants:
                raise ApiError(404, f"Tenant '{name}' not found")

    async def _not_found(self, call: Call) -> web.Response:
        raise ApiError(404, "Not Found")

    # ----------------------------------------------------------------- helpers

    def _now(self) -> str:
        return iso8601(self.clock())

    def _table(self, tenant: str | None) -> dict[str, dict[str, Any]]:
        name = tenant or self.default_tenant
        if self.tenants is not None and name not in self.tenants:
            raise KeyError(f"unknown tenant {name!r}")
        return self._tables.setdefault(name, {})

    def _find(self, name: str, tenant: str | None) -> dict[str, Any] | None:
        return next((m for m in self._table(tenant).values() if m["name"] == name), None)

    def _by_name(self, name: str, tenant: str | None) -> dict[str, Any]:
        model = self._find(name, tenant)
        if model is None:
            raise KeyError(f"no model {name!r} in tenant {tenant or self.default_tenant!r}")
        return model

    def _scoped_tenant(self, call: Call) -> str:
        """The tenant of a tenant-scoped route: with multi-tenancy on, the header is required."""
        if self.tenants is None:
            return self.default_tenant
        name = call.request.headers.get(TENANT_HEADER)
        if not name:
            raise ApiError(400, "X-Tenant-Name header is required for this endpoint when multi-tenancy is enabled")
        return name

    def _wrap(self, handler: Handler) -> Handler:
        async def run(call: Call) -> web.Response:
            try:
                return await handler(call)
            except Unprocessable as err:
                return web.json_response({"detail": err.errors}, status=422)

        return run

    def _not_allowed(self, allow: str) -> Handler:
        async def refuse(call: Call) -> web.Response:
            raise ApiError(405, "Method Not Allowed", headers={"Allow": allow})

        return refuse

    async def _redirect_slash(self, call: Call) -> web.Response:
        url = call.request.url
        path = url.path[:-1] if url.path.endswith("/") else url.path + "/"
        return web.Response(status=307, headers={"Location": str(url.with_path(path).with_query(url.query_string))})

    # ----------------------------------------------------------------- model types

    async def _list_types(self, call: Call) -> web.Response:
        return web.json_response([copy.deepcopy(t) for t in MODEL_TYPES])

    def _model_type(self, dtype: str) -> dict[str, Any]:
        found = next((t for t in MODEL_TYPES if t["name"] == dtype), None)
        if found is None:
            raise ApiError(404, f"Model type '{dtype}' not found")
        return copy.deepcopy(found)

    async def _get_type(self, call: Call) -> web.Response:
        return web.json_response(self._model_type(call.match["dtype"]))

    async def _get_type_schema(self, call: Call) -> web.Response:
        return web.json_response(self._model_type(call.match["dtype"])["config_schema"])

    # ----------------------------------------------------------------- models

    async def _create(self, call: Call) -> web.Response:
        _check_json(call)
        tenant = self._scoped_tenant(call)
        body = _body_object(call)
        errors: list[dict[str, Json]] = []
        for field in ("name", "dtype"):
            _expect(errors, body, field, str, required=True)
        _expect(errors, body, "configuration", dict, required=True)
        for field in ("summary", "tags"):
            _expect(errors, body, field, str, required=False)
        if errors:
            raise Unprocessable(errors)
        if not any(t["name"] == body["dtype"] for t in MODEL_TYPES):
            raise ApiError(400, f"Model type '{body['dtype']}' not found")
        if self._find(body["name"], tenant) is not None:
            raise ApiError(409, f"Model '{body['name']}' already exists")
        now = self._now()
        model: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "name": body["name"],
            "dtype": body["dtype"],
            "configuration": copy.deepcopy(body["configuration"]),
            "summary": body.get("summary", ""),
            "tags": body.get("tags", ""),
            "created_at": now,
            "updated_at": now,
            "connected_endpoints": [],
        }
        self._table(tenant)[model["id"]] = model
        return web.json_response(_view(model, _RESPONSE_FIELDS), status=201)

    async def _list(self, call: Call) -> web.Response:
        tenant = self._scoped_tenant(call)
        return web.json_response([_view(m, _LIST_FIELDS) for m in self._table(tenant).values()])

    async def _get(self, call: Call) -> web.Response:
        tenant = self._scoped_tenant(call)
        name = call.match["name"]
        model = self._find(name, tenant)
        if model is None:
            raise ApiError(404, f"Model '{name}' not found")
        return web.json_response(_view(model, _FULL_FIELDS))

    async def _patch(self, call: Call) -> web.Response:
        _check_json(call)
        tenant = self._scoped_tenant(call)
        body = _body_object(call)
        errors: list[dict[str, Json]] = []
        for field in ("name", "summary", "tags"):
            _expect(errors, body, field, str, required=False, nullable=True)
        if errors:
            raise Unprocessable(errors)
        changes = {f: body[f] for f in ("name", "summary", "tags") if body.get(f) is not None}
        if not changes:
            raise Unprocessable(
                [
                    {
                        "type": "value_error",
                        "loc": ["body"],
                        "msg": f"Value error, {_PATCH_NEEDS_A_FIELD}",
                        "input": body,
                        "ctx": {"error": {}},
                    }
                ]
            )
        name = call.match["name"]
        model = self._find(name, tenant)
        if model is None:
            raise ApiError(404, f"Model '{name}' not found")
        new_name = changes.get("name")
        if new_name is not None and new_name != model["name"] and self._find(new_name, tenant) is not None:
            raise ApiError(409, f"Model '{new_name}' already exists for this tenant")
        model.update(changes)
        model["updated_at"] = self._now()
        fields = _FULL_FIELDS if self.patch_echoes_endpoints else _RESPONSE_FIELDS
        return web.json_response(_view(model, fields))

    async def _delete(self, call: Call) -> web.Response:
        tenant = self._scoped_tenant(call)
        name = call.match["name"]
        model = self._find(name, tenant)
        if model is None:
            raise ApiError(404, f"Model '{name}' not found")
        del self._table(tenant)[model["id"]]
        return web.json_response({"message": f"Successfully deleted model '{name}'"})


def _view(model: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    return {f: copy.deepcopy(model[f]) for f in fields}


def _check_json(call: Call) -> None:
    """FastAPI decodes the body before it resolves any dependency, so this 422 comes first."""
    if not isinstance(call.body, _Invalid):
        return
    pos, why = 0, "Invalid JSON"
    try:
        json.loads(call.body.text)
    except json.JSONDecodeError as err:
        pos, why = err.pos, err.msg
    raise Unprocessable(
        [{"type": "json_invalid", "loc": ["body", pos], "msg": "JSON decode error", "input": {}, "ctx": {"error": why}}]
    )


def _body_object(call: Call) -> dict[str, Json]:
    body = call.body
    if body is None:
        raise Unprocessable([{"type": "missing", "loc": ["body"], "msg": "Field required", "input": None}])
    if not isinstance(body, dict):
        raise Unprocessable(
            [
                {
                    "type": "model_attributes_type",
                    "loc": ["body"],
                    "msg": "Input should be a valid dictionary or object to extract fields from",
                    "input": body,
                }
            ]
        )
    return body


def _expect(
    errors: list[dict[str, Json]],
    body: dict[str, Json],
    field: str,
    kind: type[str] | type[dict[str, Any]],
    *,
    required: bool,
    nullable: bool = False,
) -> None:
    """Append the pydantic v2 error for ``body[field]``, if any."""
    if field not in body:
        if required:
            errors.append({"type": "missing", "loc": ["body", field], "msg": "Field required", "input": body})
        return
    value = body[field]
    if (value is None and nullable) or isinstance(value, kind):
        return
    if kind is str:
        errors.append(
            {"type": "string_type", "loc": ["body", field], "msg": "Input should be a valid string", "input": value}
        )
    else:
        errors.append(
            {"type": "dict_type", "loc": ["body", field], "msg": "Input should be a valid dictionary", "input": value}
        )


DEMO = DemoUpstream(
    "model registry",
    "model_registry",
    lambda key: ModelRegistrySimulator(admin_key=key),
    key="demo-registry-key",
    api_path="/api/v1",
)
