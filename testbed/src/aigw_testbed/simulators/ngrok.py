"""Simulator of the ngrok AI Gateway API (``https://api.ngrok.ai``): providers and provider keys.

Implements ``shared/apis.md`` section 3 and the vendor's spec
(``shared/openapi/ngrok-ai-gateway.openapi.yaml``). Where both are silent, the
choices made here are listed on :class:`NgrokSimulator`.
"""

from __future__ import annotations

import copy
import hashlib
import secrets as _secrets
import string
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from aiohttp import web

from aigw_testbed import SPECS
from aigw_testbed.simulators import DemoUpstream
from aigw_testbed.simulators.base import ApiError, Call, Handler, Json, Route, SimulatorServer
from aigw_testbed.simulators.contract import ContractChecker

NGROK_SPEC_PATHS = (
    "/providers",
    "/providers/{id}",
    "/provider-keys",
    "/provider-keys/{id}",
    "/provider-keys/{id}/rotate",
)

# Error codes from ngrok's published error pages (ngrok.com/docs/errors/err_ngrok_NNNNN).
# Cases with no published code answer without ``errorCode``, which the spec allows
# ("stable ngrok error code when available"), so clients must not depend on it.
ERR_AUTH_MISSING = "ERR_NGROK_200"  # "The ngrok API requires that you set the Authorization header"
ERR_AUTH_UNPARSEABLE = "ERR_NGROK_201"  # "... use Basic or Bearer authentication ... could not parse"
ERR_AUTH_INVALID = "ERR_NGROK_203"  # "The API authentication you specified is properly formed, but it is invalid"
ERR_RATE_LIMITED = "ERR_NGROK_1214"  # "Your account is rate limited to MAX requests per INTERVAL"
ERR_PROVIDER_BASE_URL_TOO_LONG = "ERR_NGROK_27703"
ERR_PROVIDER_FIELD_REQUIRED = "ERR_NGROK_27704"  # "The MISSING field is required."
ERR_PROVIDER_ID_RESERVED = "ERR_NGROK_27705"  # providerId of a built-in catalog provider
ERR_PROVIDER_REFERENCED = "ERR_NGROK_27710"  # delete blocked by a provider key / access key configuration
ERR_PROVIDER_DUPLICATE_MODEL = "ERR_NGROK_27711"
ERR_PROVIDER_ID_TAKEN = "ERR_NGROK_27712"
ERR_PROVIDER_BASE_URL_HOST = "ERR_NGROK_27718"  # "The base_url host HOST is not allowed."
ERR_PROVIDER_KEY_VALUE_EMPTY = "ERR_NGROK_27507"
ERR_PROVIDER_KEY_FIELD_REQUIRED = "ERR_NGROK_27510"

# Built-in providers of ngrok's model catalog: user-defined providers may not take these ids.
DEFAULT_CATALOG_PROVIDER_IDS = (
    "openai",
    "anthropic",
    "google",
    "groq",
    "mistral",
    "deepseek",
    "xai",
    "openrouter",
    "together",
    "fireworks",
    "cohere",
    "perplexity",
)
# The spec's own examples; ngrok validates against a longer list it does not publish.
DEFAULT_API_FORMATS = ("openai", "anthropic")
DEFAULT_API_SURFACES = ("chat-completions", "responses", "messages")

# Ascending in ASCII, so fixed-width ids built from it sort like the numbers they encode.
_BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
_DEFAULT_LIMIT = 100
_MAX_LIMIT = 100


def default_spec_path() -> Path:
    """The vendor's published spec, shipped as package data (``shared/openapi/ngrok-ai-gateway.openapi.yaml``)."""
    return SPECS / "ngrok-ai-gateway.openapi.yaml"


def _checker(spec_path: Path) -> ContractChecker:
    return ContractChecker(spec_path, NGROK_SPEC_PATHS)


def rfc3339(moment: datetime) -> str:
    # Milliseconds: two writes within one second must still yield different updatedAt values.
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def api_key_identity(api_key: str) -> str:
    """The stable, non-secret id the simulator reports for an API key in ``createdBy``/``lastUpdatedBy``."""
    return "ak_" + hashlib.sha256(api_key.encode()).hexdigest()[:24]


class NgrokError(ApiError):
    """An :class:`ApiError` carrying ngrok's ``errorCode`` and ``details``."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        details: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(status, message, headers)
        self.code = code
        self.details = dict(details or {})


@dataclass
class ProviderKey:
    """A provider key (a customer credential for a provider); ``value`` is kept for tests, never served."""

    id: str
    uri: str
    provider_id: str
    name: str
    value: str
    created_at: str
    updated_at: str
    created_by: dict[str, str]
    last_updated_by: dict[str, str]
    description: str = ""
    metadata: str = ""
    last_used: str | None = None
    rotations: int = 0

    def detail(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "uri": self.uri,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
            "providerId": self.provider_id,
            "name": self.name,
            "keyRedacted": _redact(self.value),
            "description": self.description,
            "metadata": self.metadata,
            "createdBy": dict(self.created_by),
            "lastUpdatedBy": dict(self.last_updated_by),
            "lastUsed": self.last_used,
        }


class NgrokSimulator(SimulatorServer):
    """ngrok AI Gateway ``/providers`` and ``/provider-keys``, state in memory.

    Decisions where ngrok documents nothing (error codes are listed at the top of
    this module; "no code" means the body has no ``errorCode``):

    - Auth: ``Authorization: Bearer <key>``. No header: 401 ``ERR_NGROK_200``; a
      header that is not ``Bearer <token>``: 401 ``ERR_NGROK_201``; an unknown
      key: 401 ``ERR_NGROK_203``. Messages never echo the credential.
    - Duplicate ``providerId`` on create: **409** ``ERR_NGROK_27712``
      (``duplicate_provider_status`` switches it to 400). The spec documents only
      ``default`` for create; ngrok's error page gives the code but not the status.
      409 because the same service answers 409 for the other state conflict
      (delete while referenced), and a duplicate is a conflict with existing
      state, not a malformed request. Clients should key on the code, not the status.
    - Create validation (all 400): a missing, null or empty ``providerId``,
      ``name`` or ``baseUrl`` is ``ERR_NGROK_27704``; ``baseUrl`` over 2048 is
      ``ERR_NGROK_27703``; a ``baseUrl`` that is not https (or http to a
      ``*.internal`` host) is ``ERR_NGROK_27718``; a built-in catalog
      ``providerId`` is ``ERR_NGROK_27705``; a ``modelId`` listed twice is
      ``ERR_NGROK_27711``. No code: wrong JSON types, ``providerId``/``name``
      over 255, ``providerId`` with ``:`` or whitespace (it is the first part of
      ``providerId:modelId``), ``metadata`` over 4096, a surface without
      ``format``, a format or surface outside ``api_formats``/``api_surfaces``
      (None accepts any), ``modelId`` not 1-255.
    - Unknown fields are ignored, as Go's JSON decoder does; the contract checker
      (closed objects) is what flags a client sending them.
    - PATCH: ``null`` counts as omitted for ``name``, ``metadata``,
      ``supportedApiSurfaces`` and ``models`` (the spec gives them no
      nullable-wrapper type, unlike ``/gateway-config``, so a Go server reads
      null as "not sent"). ``models``: omitted = untouched, ``[]`` = clear, a
      list = full replacement in which an unchanged ``modelId`` keeps its id.
      ``baseUrl`` null or ``""`` is 400 ``ERR_NGROK_27704`` (it cannot be
      cleared). A ``providerId`` different from the current one is 400, no code
      (immutable); the same value is accepted. ``updatedAt``/``lastUpdatedBy``
      change only when something did.
    - DELETE: 204; 409 ``ERR_NGROK_27710`` while a provider key's ``providerId``
      names the provider (by ``providerId`` or ``aigp_`` id) or an access key
      configuration references it (only settable out of band). Like ngrok's
      message, the error does not say which references block; list
      ``/provider-keys?provider=<providerId>`` to find them.
    - Unknown ids: 404, no code (ngrok's API answers "Resource not found").
    - Lists: newest first (descending id, ids are time-ordered like ngrok's);
      ``beforeId`` returns items with a smaller id (it need not exist);
      ``limit`` defaults to 100, outside 1..100 or not an integer is 400, no
      code; ``nextPageUri`` is absolute (``public_url`` or the simulator's own
      URL), carries ``beforeId`` and ``limit``, and is null on the last page.
    - ``uri`` fields are ``<public_url or simulator URL>/providers/<id>`` so a
      client can GET them as-is; ``createdBy``/``lastUpdatedBy`` are
      ``{id: ak_<sha256 prefix of the key>, uri: <base>/api-keys/<id>}``.
    - Provider keys: create needs ``providerId``, ``name`` and ``value``
      (missing: 400 ``ERR_NGROK_27510``; empty ``value``: ``ERR_NGROK_27507``);
      ``providerId`` must be a catalog provider or one of this account's
      providers (by ``providerId`` or ``aigp_`` id), else 400 no code. Rotate
      (``POST /provider-keys/{id}/rotate``) needs ``name`` and ``value`` as the
      spec says, answers 200. The value is never returned, only ``keyRedacted``.
    - 429 (``faults.rate_limit_burst`` or ``rate_limit``): ``ERR_NGROK_1214``
      with a ``Retry-After`` header.
    - Timestamps carry milliseconds (see :func:`rfc3339`).

    With ``contract=True`` every exchange on the provider and provider-key routes
    is checked against the spec (closed objects) and violations collect in
    ``contract_violations``.
    """

    upstream_name = "ngrok"

    def __init__(
        self,
        api_keys: Iterable[str] = ("test-key",),
        *,
        contract: bool = False,
        spec_path: str | Path | None = None,
        public_url: str | None = None,
        catalog_provider_ids: Iterable[str] = DEFAULT_CATALOG_PROVIDER_IDS,
        api_formats: Iterable[str] | None = DEFAULT_API_FORMATS,
        api_surfaces: Iterable[str] | None = DEFAULT_API_SURFACES,
        duplicate_provider_status: int = 409,
        clock: Callable[[], datetime] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        rate_limit: float | None = None,
    ) -> None:
        checker = _checker(Path(spec_path) if spec_path else default_spec_path()) if contract else None
        super().__init__(host=host, port=port, rate_limit=rate_limit, contract_checker=checker)
        self.api_keys: set[str] = set(api_keys)
        #: Base of every ``uri`` and ``nextPageUri``; None = the simulator's own URL.
        self.public_url = public_url
        self.catalog_provider_ids: set[str] = set(catalog_provider_ids)
        self.api_formats: set[str] | None = set(api_formats) if api_formats is not None else None
        self.api_surfaces: set[str] | None = set(api_surfaces) if api_surfaces is not None else None
        self.duplicate_provider_status = duplicate_provider_status
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))
        #: Providers by id, in the API's response shape.
        self.providers: dict[str, dict[str, Any]] = {}
        #: Provider keys by id.
        self.provider_keys: dict[str, ProviderKey] = {}
        #: Access key configuration references: reference id -> provider (``providerId`` or ``aigp_`` id).
        self.access_key_configuration_refs: dict[str, str] = {}
        self._last_stamp = 0

    # ----------------------------------------------------------------- keys

    def add_key(self, key: str) -> None:
        self.api_keys.add(key)

    def remove_key(self, key: str) -> None:
        self.api_keys.discard(key)

    # ----------------------------------------------------------------- out of band

    def delete_out_of_band(self, provider_id: str) -> dict[str, Any]:
        """Delete as if someone used the dashboard, ignoring references; returns the removed provider."""
        return self.providers.pop(provider_id)

    def modify_out_of_band(self, provider_id: str, **fields: Any) -> dict[str, Any]:
        """Change fields with no validation (bad values go out as they are) and bump ``updatedAt``."""
        provider = self.providers[provider_id]
        provider.update(copy.deepcopy(fields))
        if "updatedAt" not in fields:
            provider["updatedAt"] = self._now()
        return copy.deepcopy(provider)

    def add_provider_key_out_of_band(
        self, provider: str, *, name: str = "out-of-band", value: str = "sk-out-of-band-0000"
    ) -> str:
        """A provider key for ``provider`` (an ``aigp_`` id or a ``providerId``), made without HTTP; returns its id."""
        target = self.providers.get(provider)
        provider_id = target["providerId"] if target is not None else provider
        ref = {
            "id": api_key_identity("out-of-band"),
            "uri": f"{self._base()}/api-keys/{api_key_identity('out-of-band')}",
        }
        return self._store_key(provider_id, name, value, "", "", ref).id

    def remove_provider_key(self, key_id: str) -> ProviderKey:
        return self.provider_keys.pop(key_id)

    def add_access_key_configuration_reference(self, provider: str) -> str:
        """Make an access key configuration reference ``provider`` (``aigp_`` id or ``providerId``)."""
        ref_id = self._new_id("aigakc_")
        self.access_key_configuration_refs[ref_id] = provider
        return ref_id

    def remove_access_key_configuration_reference(self, ref_id: str) -> None:
        del self.access_key_configuration_refs[ref_id]

    def references(self, provider_id: str) -> list[str]:
        """Ids of the provider keys and access key configurations that block deleting ``provider_id``."""
        provider = self.providers[provider_id]
        names = {provider["id"], provider["providerId"]}
        keys = [k.id for k in self.provider_keys.values() if k.provider_id in names]
        configs = [r for r, target in self.access_key_configuration_refs.items() if target in names]
        return keys + configs

    # ----------------------------------------------------------------- base hooks

    def routes(self) -> Iterable[Route]:
        return [
            Route("POST", "/providers", self._create),
            Route("GET", "/providers", self._list),
            Route("HEAD", "/providers", _head(self._list)),
            Route("GET", "/providers/{id}", self._get),
            Route("HEAD", "/providers/{id}", _head(self._get)),
            Route("PATCH", "/providers/{id}", self._patch),
            Route("DELETE", "/providers/{id}", self._delete),
            Route("POST", "/provider-keys", self._create_key),
            Route("GET", "/provider-keys", self._list_keys),
            Route("GET", "/provider-keys/{id}", self._get_key),
            Route("PATCH", "/provider-keys/{id}", self._patch_key),
            Route("DELETE", "/provider-keys/{id}", self._delete_key),
            Route("POST", "/provider-keys/{id}/rotate", self._rotate_key),
        ]

    def error_body(self, status: int, message: str) -> Json:
        return self._error(status, message, None, {})

    def rate_limited(self, retry_after: int) -> web.Response:
        return web.json_response(
            self._error(429, "Your account is rate limited. Retry later.", ERR_RATE_LIMITED, {}),
            status=429,
            headers={"Retry-After": str(retry_after)},
        )

    def _error_response(self, err: ApiError) -> web.Response:
        code = err.code if isinstance(err, NgrokError) else None
        details = err.details if isinstance(err, NgrokError) else {}
        return web.json_response(
            self._error(err.status, err.message, code, details), status=err.status, headers=err.headers
        )

    def identify(self, request: web.Request) -> str | None:
        scheme, _, credential = request.headers.get("Authorization", "").strip().partition(" ")
        if scheme.lower() != "bearer" or not credential.strip():
            return None
        return credential.strip()

    def authenticate(self, call: Call) -> None:
        if not call.request.headers.get("Authorization", "").strip():
            raise NgrokError(
                401,
                "The ngrok API requires that you set the Authorization header for authentication.",
                ERR_AUTH_MISSING,
            )
        if call.key is None:
            raise NgrokError(
                401, "The ngrok API requires Bearer authentication via the Authorization header.", ERR_AUTH_UNPARSEABLE
            )
        if call.key not in self.api_keys:
            raise NgrokError(
                401, "The API authentication you specified is properly formed, but it is invalid.", ERR_AUTH_INVALID
            )

    # ----------------------------------------------------------------- helpers

    def _error(self, status: int, message: str, code: str | None, details: Mapping[str, str]) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if code is not None:
            body["errorCode"] = code
        body["statusCode"] = status
        body["msg"] = message
        body["details"] = {"operationId": "op_" + _random(27), **details}
        return body

    def _base(self) -> str:
        return (self.public_url or self.url).rstrip("/")

    def _now(self) -> str:
        return rfc3339(self.clock())

    def _new_id(self, prefix: str) -> str:
        # Time-ordered like ngrok's ids, strictly increasing even within one millisecond,
        # so "descending id" is "newest first" and beforeId paging is stable.
        stamp = max(time.time_ns() // 1000, self._last_stamp + 1)
        self._last_stamp = stamp
        return prefix + _base62(stamp, 11) + _random(16)

    def _identity(self, call: Call) -> dict[str, str]:
        ident = api_key_identity(call.key or "")
        return {"id": ident, "uri": f"{self._base()}/api-keys/{ident}"}

    def _find(self, provider_id: str) -> dict[str, Any]:
        provider = self.providers.get(provider_id)
        if provider is None:
            raise NgrokError(404, "Resource not found")
        return provider

    def _find_key(self, key_id: str) -> ProviderKey:
        key = self.provider_keys.get(key_id)
        if key is None:
            raise NgrokError(404, "Resource not found")
        return key

    def _check_provider_id(self, value: Json) -> str:
        text = _required_string(value, "providerId", ERR_PROVIDER_FIELD_REQUIRED)
        _max_length(text, "providerId", 255)
        if ":" in text or any(c.isspace() for c in text):
            raise NgrokError(400, f"The providerId {text!r} must not contain ':' or whitespace.")
        if text in self.catalog_provider_ids:
            raise NgrokError(
                400,
                f'The provider_id "{text}" is reserved by a built-in ngrok provider and cannot be used for a '
                "user-defined provider.",
                ERR_PROVIDER_ID_RESERVED,
            )
        if any(p["providerId"] == text for p in self.providers.values()):
            raise NgrokError(
                self.duplicate_provider_status,
                f'A provider with provider_id "{text}" already exists for this account.',
                ERR_PROVIDER_ID_TAKEN,
            )
        return text

    def _check_surfaces(self, value: Json) -> list[dict[str, Any]]:
        if not isinstance(value, list):
            raise NgrokError(400, "supportedApiSurfaces must be an array.")
        surfaces: list[dict[str, Any]] = []
        for item in value:
            if not isinstance(item, dict):
                raise NgrokError(400, "Each supportedApiSurfaces entry must be an object.")
            fmt = _required_string(item.get("format"), "format", ERR_PROVIDER_FIELD_REQUIRED)
            if self.api_formats is not None and fmt not in self.api_formats:
                raise NgrokError(
                    400, f"Unknown API format {fmt!r}; expected one of {', '.join(sorted(self.api_formats))}."
                )
            out: dict[str, Any] = {"format": fmt}
            surface = item.get("surface")
            if surface is not None:
                if not isinstance(surface, str):
                    raise NgrokError(400, "surface must be a string.")
                if self.api_surfaces is not None and surface not in self.api_surfaces:
                    raise NgrokError(
                        400, f"Unknown API surface {surface!r}; expected one of {', '.join(sorted(self.api_surfaces))}."
                    )
                out["surface"] = surface
            params = item.get("supportedParams")
            if params is not None:
                if not isinstance(params, list):
                    raise NgrokError(400, "supportedParams must be an array.")
                names = []
                for param in params:
                    if not isinstance(param, dict):
                        raise NgrokError(400, "Each supportedParams entry must be an object.")
                    names.append({"name": _required_string(param.get("name"), "name", ERR_PROVIDER_FIELD_REQUIRED)})
                out["supportedParams"] = names
            surfaces.append(out)
        return surfaces

    def _check_models(self, value: Json, current: list[dict[str, str]]) -> list[dict[str, str]]:
        if not isinstance(value, list):
            raise NgrokError(400, "models must be an array.")
        existing = {m["modelId"]: m["id"] for m in current}
        seen: set[str] = set()
        models: list[dict[str, str]] = []
        for item in value:
            if not isinstance(item, dict):
                raise NgrokError(400, "Each models entry must be an object.")
            model_id = _required_string(item.get("modelId"), "modelId", ERR_PROVIDER_FIELD_REQUIRED)
            _max_length(model_id, "modelId", 255)
            if model_id in seen:
                raise NgrokError(
                    400,
                    f'The model_id "{model_id}" is listed more than once for this provider.',
                    ERR_PROVIDER_DUPLICATE_MODEL,
                )
            seen.add(model_id)
            models.append({"id": existing.get(model_id) or self._new_id("aigm_"), "modelId": model_id})
        return models

    def _page(
        self, call: Call, items: list[dict[str, Any]], path: str, extra: Mapping[str, str]
    ) -> tuple[list[Any], str | None]:
        raw_limit = call.query.get("limit")
        limit = _DEFAULT_LIMIT
        if raw_limit is not None:
            try:
                limit = int(raw_limit)
            except ValueError:
                raise NgrokError(400, f"limit must be an integer, got {raw_limit!r}.") from None
            if not 1 <= limit <= _MAX_LIMIT:
                raise NgrokError(400, f"limit must be between 1 and {_MAX_LIMIT}.")
        ordered = sorted(items, key=lambda item: str(item["id"]), reverse=True)
        before = call.query.get("beforeId")
        if before:
            ordered = [item for item in ordered if str(item["id"]) < before]
        page = ordered[:limit]
        if len(ordered) <= limit or not page:
            return page, None
        query = {**extra, "beforeId": str(page[-1]["id"]), "limit": str(limit)}
        return page, f"{self._base()}{path}?{urlencode(query)}"

    def _store_key(
        self, provider_id: str, name: str, value: str, description: str, metadata: str, who: dict[str, str]
    ) -> ProviderKey:
        key_id = self._new_id("aigpk_")
        now = self._now()
        key = ProviderKey(
            id=key_id,
            uri=f"{self._base()}/provider-keys/{key_id}",
            provider_id=provider_id,
            name=name,
            value=value,
            created_at=now,
            updated_at=now,
            created_by=dict(who),
            last_updated_by=dict(who),
            description=description,
            metadata=metadata,
        )
        self.provider_keys[key_id] = key
        return key

    # ----------------------------------------------------------------- providers

    async def _create(self, call: Call) -> web.Response:
        body = call.json_object()
        for name in ("providerId", "name", "baseUrl"):
            _required_string(body.get(name), name, ERR_PROVIDER_FIELD_REQUIRED)
        name = _required_string(body["name"], "name", ERR_PROVIDER_FIELD_REQUIRED)
        _max_length(name, "name", 255)
        base_url = _check_base_url(body["baseUrl"])
        metadata = _check_metadata(body.get("metadata"))
        surfaces = (
            self._check_surfaces(body["supportedApiSurfaces"]) if body.get("supportedApiSurfaces") is not None else []
        )
        models = self._check_models(body["models"], []) if body.get("models") is not None else []
        # Uniqueness last: a request that is wrong anyway is refused for that, as a validator-first server does.
        provider_id = self._check_provider_id(body["providerId"])
        now = self._now()
        new_id = self._new_id("aigp_")
        who = self._identity(call)
        provider: dict[str, Any] = {
            "id": new_id,
            "uri": f"{self._base()}/providers/{new_id}",
            "providerId": provider_id,
            "name": name,
            "baseUrl": base_url,
            "metadata": metadata,
            "createdAt": now,
            "updatedAt": now,
            "createdBy": who,
            "lastUpdatedBy": dict(who),
            "supportedApiSurfaces": surfaces,
            "models": models,
        }
        self.providers[new_id] = provider
        return web.json_response(copy.deepcopy(provider), status=201)

    async def _list(self, call: Call) -> web.Response:
        page, next_uri = self._page(call, list(self.providers.values()), "/providers", {})
        return web.json_response(
            {
                "aiGatewayProviders": copy.deepcopy(page),
                "uri": f"{self._base()}/providers",
                "nextPageUri": next_uri,
            }
        )

    async def _get(self, call: Call) -> web.Response:
        return web.json_response(copy.deepcopy(self._find(call.match["id"])))

    async def _patch(self, call: Call) -> web.Response:
        provider = self._find(call.match["id"])
        body = call.json_object()
        changes: dict[str, Any] = {}
        if "providerId" in body and body["providerId"] != provider["providerId"]:
            raise NgrokError(400, "The providerId is immutable after creation; create a new provider instead.")
        if body.get("name") is not None:
            name = _required_string(body["name"], "name", ERR_PROVIDER_FIELD_REQUIRED)
            _max_length(name, "name", 255)
            changes["name"] = name
        if "baseUrl" in body:
            if body["baseUrl"] is None or body["baseUrl"] == "":
                raise NgrokError(
                    400, "The baseUrl field is required; it cannot be cleared.", ERR_PROVIDER_FIELD_REQUIRED
                )
            changes["baseUrl"] = _check_base_url(body["baseUrl"])
        if body.get("metadata") is not None:
            changes["metadata"] = _check_metadata(body["metadata"])
        if body.get("supportedApiSurfaces") is not None:
            changes["supportedApiSurfaces"] = self._check_surfaces(body["supportedApiSurfaces"])
        if body.get("models") is not None:
            changes["models"] = self._check_models(body["models"], provider["models"])
        changes = {k: v for k, v in changes.items() if provider.get(k) != v}
        if changes:
            provider.update(changes)
            provider["updatedAt"] = self._now()
            provider["lastUpdatedBy"] = self._identity(call)
        return web.json_response(copy.deepcopy(provider))

    async def _delete(self, call: Call) -> web.Response:
        provider = self._find(call.match["id"])
        if self.references(provider["id"]):
            raise NgrokError(
                409,
                "This provider cannot be deleted because it is referenced by a provider key or an access key "
                "configuration. Remove those references first.",
                ERR_PROVIDER_REFERENCED,
            )
        del self.providers[provider["id"]]
        return web.Response(status=204)

    # ----------------------------------------------------------------- provider keys

    async def _create_key(self, call: Call) -> web.Response:
        body = call.json_object()
        for required in ("providerId", "name", "value"):
            if body.get(required) is None:
                raise NgrokError(400, f"The {required} field is required.", ERR_PROVIDER_KEY_FIELD_REQUIRED)
        provider_id = _required_string(body["providerId"], "providerId", ERR_PROVIDER_KEY_FIELD_REQUIRED)
        known = self.catalog_provider_ids | {p["providerId"] for p in self.providers.values()} | set(self.providers)
        if provider_id not in known:
            raise NgrokError(400, f"Unknown provider {provider_id!r}: not a catalog provider nor one of yours.")
        name, description, metadata = _key_labels(body, required_name=True)
        value = _key_value(body["value"])
        key = self._store_key(provider_id, name or "", value, description or "", metadata or "", self._identity(call))
        return web.json_response(key.detail(), status=201)

    async def _list_keys(self, call: Call) -> web.Response:
        wanted = call.query.get("provider")
        keys = [k.detail() for k in self.provider_keys.values() if wanted is None or k.provider_id == wanted]
        page, next_uri = self._page(call, keys, "/provider-keys", {"provider": wanted} if wanted else {})
        return web.json_response(
            {"aiGatewayProviderKeys": page, "uri": f"{self._base()}/provider-keys", "nextPageUri": next_uri}
        )

    async def _get_key(self, call: Call) -> web.Response:
        return web.json_response(self._find_key(call.match["id"]).detail())

    async def _patch_key(self, call: Call) -> web.Response:
        key = self._find_key(call.match["id"])
        name, description, metadata = _key_labels(call.json_object(), required_name=False)
        changed = False
        for attr, new in (("name", name), ("description", description), ("metadata", metadata)):
            if new is not None and getattr(key, attr) != new:
                setattr(key, attr, new)
                changed = True
        if changed:
            key.updated_at = self._now()
            key.last_updated_by = self._identity(call)
        return web.json_response(key.detail())

    async def _delete_key(self, call: Call) -> web.Response:
        key = self._find_key(call.match["id"])
        del self.provider_keys[key.id]
        return web.Response(status=204)

    async def _rotate_key(self, call: Call) -> web.Response:
        key = self._find_key(call.match["id"])
        body = call.json_object()
        for required in ("name", "value"):
            if body.get(required) is None:
                raise NgrokError(400, f"The {required} field is required.", ERR_PROVIDER_KEY_FIELD_REQUIRED)
        name, _, _ = _key_labels({"name": body["name"]}, required_name=True)
        key.value = _key_value(body["value"])
        key.name = name or key.name
        key.rotations += 1
        key.updated_at = self._now()
        key.last_updated_by = self._identity(call)
        return web.json_response(key.detail())


def _head(handler: Handler) -> Handler:
    async def head(call: Call) -> web.Response:
        response = await handler(call)
        return web.Response(status=response.status)

    return head


def _required_string(value: Json, name: str, missing_code: str) -> str:
    if value is None or value == "":
        raise NgrokError(400, f"The {name} field is required.", missing_code)
    if not isinstance(value, str):
        raise NgrokError(400, f"The {name} field must be a string.")
    return value


def _max_length(value: str, name: str, limit: int) -> None:
    if len(value) > limit:
        raise NgrokError(400, f"The {name} field cannot be longer than {limit} characters. was {len(value)}")


def _check_base_url(value: Json) -> str:
    url = _required_string(value, "baseUrl", ERR_PROVIDER_FIELD_REQUIRED)
    if len(url) > 2048:
        raise NgrokError(
            400,
            f"The base_url field cannot be longer than 2048 characters. was {len(url)}",
            ERR_PROVIDER_BASE_URL_TOO_LONG,
        )
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018 (parsing the port is what raises on a malformed one)
    except ValueError:
        raise NgrokError(400, f"The baseUrl {url!r} is not a valid URL.") from None
    allowed = host and (parts.scheme == "https" or (parts.scheme == "http" and host.endswith(".internal")))
    if not allowed:
        raise NgrokError(
            400,
            f'The base_url host "{host}" is not allowed: use https, or http only for ngrok .internal hosts.',
            ERR_PROVIDER_BASE_URL_HOST,
        )
    return url


def _check_metadata(value: Json) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise NgrokError(400, "The metadata field must be a string.")
    _max_length(value, "metadata", 4096)
    return value


def _key_labels(body: Mapping[str, Json], *, required_name: bool) -> tuple[str | None, str | None, str | None]:
    out: list[str | None] = []
    for name, limit in (("name", 255), ("description", 255), ("metadata", 4096)):
        value = body.get(name)
        if value is None:
            out.append(None)
            continue
        if not isinstance(value, str):
            raise NgrokError(400, f"The {name} field must be a string.")
        _max_length(value, name, limit)
        out.append(value)
    if required_name and not out[0]:
        raise NgrokError(400, "The name field is required.", ERR_PROVIDER_KEY_FIELD_REQUIRED)
    return out[0], out[1], out[2]


def _key_value(value: Json) -> str:
    if not isinstance(value, str):
        raise NgrokError(400, "The value field must be a string.")
    if not value:
        raise NgrokError(400, "The value field is required and cannot be empty.", ERR_PROVIDER_KEY_VALUE_EMPTY)
    return value


def _redact(value: str) -> str:
    # Enough to recognise a key, never enough to use it.
    return f"{value[:3]}...{value[-4:]}" if len(value) >= 12 else "****"


def _base62(number: int, width: int) -> str:
    digits = []
    while number:
        number, rem = divmod(number, 62)
        digits.append(_BASE62[rem])
    return "".join(reversed(digits)).rjust(width, "0")


def _random(n: int) -> str:
    return "".join(_secrets.choice(_BASE62) for _ in range(n))


DEMO = DemoUpstream("ngrok simulator", "ngrok", lambda key: NgrokSimulator(api_keys=[key]), key="demo-ngrok-key")
