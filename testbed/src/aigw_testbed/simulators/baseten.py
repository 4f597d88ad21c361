"""Simulator of Baseten's management API: Frontier Gateway endpoints and secrets.

Implements ``shared/apis.md`` section 1. Where the vendor is silent, the choices
made here are listed on :class:`BasetenSimulator`.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import secrets as _secrets
import string
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from aiohttp import web

from aigw_testbed import SPECS
from aigw_testbed.simulators import DemoUpstream
from aigw_testbed.simulators.base import ApiError, Call, Json, Route, SimulatorServer
from aigw_testbed.simulators.contract import ContractChecker, ContractRequest

SlugRename = Literal["patch", "immutable", "ignore"]

PROVIDERS = ("BASETEN", "ANTHROPIC", "OPENAI", "BASETEN_MODEL_API", "VERTEX", "OPENAI_COMPATIBLE")
REGIONS = ("UNRESTRICTED", "EU")
# External providers authenticate with a customer credential held in a Baseten secret.
EXTERNAL_PROVIDERS = frozenset({"ANTHROPIC", "OPENAI", "VERTEX", "OPENAI_COMPATIBLE"})
TARGET_FIELDS = ("secret_id", "target_model", "base_url", "model_id", "environment_name", "vertex_config")

# RFC 3986 unreserved characters: what "URL-safe" means for each slug segment.
_SEGMENT = r"[A-Za-z0-9._~-]+"
_SLUG_RE = re.compile(rf"^({_SEGMENT})/({_SEGMENT})$")
_SECRET_NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,255}$")
_ID_ALPHABET = string.ascii_lowercase + string.digits

GATEWAY_SPEC_PATHS = (
    "/v1/gateway/endpoints",
    "/v1/gateway/endpoints/{endpoint_id}",
    "/v1/secrets",
    "/v1/secrets/{secret_name}",
)


def default_spec_path() -> Path:
    """The vendor's published spec, shipped as package data (a copy of ``shared/openapi/baseten.openapi.yaml``)."""
    return SPECS / "baseten.openapi.yaml"


def _new_id() -> str:
    return "".join(_secrets.choice(_ID_ALPHABET) for _ in range(10))


def rfc3339(moment: datetime) -> str:
    # Milliseconds: the seed shows whole seconds, but two writes within one second
    # must still yield different updated_at values for clients that compare them.
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Secret:
    id: str
    name: str
    value: str
    created_at: str
    team_name: str

    def metadata(self) -> dict[str, str]:
        return {"id": self.id, "created_at": self.created_at, "name": self.name, "team_name": self.team_name}


class BasetenSimulator(SimulatorServer):
    """Baseten ``/v1/gateway/endpoints`` and ``/v1/secrets``, state in memory.

    Decisions where Baseten documents nothing:

    - ``secret_id`` must name an existing secret's ``id`` (400 otherwise;
      ``check_secret_refs=False`` turns this off). The gateway cannot route an
      external target without the credential, and Baseten validates other
      references at write time, so refusing early is the likelier behaviour and the
      stricter one for the operator to cope with. Deleting a secret still in use is
      allowed (the secrets API documents no such check).
    - ``model_id`` is accepted as any non-empty string unless ``known_model_ids`` is given.
    - Field rules follow the spec's descriptions: ``model_id`` and
      ``environment_name`` only with BASETEN; ``base_url`` (https, no port) only
      and required with OPENAI_COMPATIBLE; ``vertex_config`` only and required with
      VERTEX; ``secret_id`` and ``target_model`` required for the external providers;
      ``target_model`` required for BASETEN_MODEL_API. ``null`` counts as absent.
    - Unknown fields are ignored, as pydantic/FastAPI services do; the contract
      checker (closed objects) is what flags a client sending them.
    - ``region`` in a PATCH is refused (400) when it differs from the current value.
    - ``slug_rename``: ``"patch"`` renames (the seed docs), ``"immutable"`` refuses
      a PATCH carrying a different slug with 400 (newer vendor behaviour), and
      ``"ignore"`` accepts the PATCH and silently keeps the old slug, which is
      what a pydantic service whose model dropped the field would do.
    - Secret names: 1-255 of ``[A-Za-z0-9._-]``; secrets are not gated by the
      Frontier Gateway onboarding switch.
    - ``limit`` outside 1..1000 or a malformed cursor answer 400. The cursor is
      positional by creation order, so deletions between pages skip nothing.
    - Timestamps carry milliseconds (see :func:`rfc3339`).

    With ``contract=True`` every exchange on these routes is checked against the
    vendor's spec (closed objects; see :mod:`.contract`) and violations collect in
    ``contract_violations``. Two departures are reconciled before checking (see
    :meth:`contract_request`): the ``Api-Key`` scheme is checked as bearer, and in
    ``"patch"`` mode a PATCH's ``slug`` is not counted.
    """

    upstream_name = "Baseten"

    def __init__(
        self,
        api_keys: Iterable[str] = ("test-key",),
        *,
        org_prefixes: Iterable[str] = ("my-org",),
        slug_rename: SlugRename = "patch",
        contract: bool = False,
        spec_path: str | Path | None = None,
        team_name: str = "Default Team",
        check_secret_refs: bool = True,
        known_model_ids: Iterable[str] | None = None,
        clock: Callable[[], datetime] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        rate_limit: float | None = None,
    ) -> None:
        checker = ContractChecker(spec_path or default_spec_path(), GATEWAY_SPEC_PATHS) if contract else None
        super().__init__(host=host, port=port, rate_limit=rate_limit, contract_checker=checker)
        #: Valid API keys -> whether the key has management scope.
        self.api_keys: dict[str, bool] = dict.fromkeys(api_keys, True)
        self.org_prefixes: set[str] = set(org_prefixes)
        self.slug_rename: SlugRename = slug_rename
        #: False answers 403 on the gateway routes, as for a workspace not onboarded.
        self.onboarded = True
        self.team_name = team_name
        self.check_secret_refs = check_secret_refs
        self.known_model_ids: set[str] | None = set(known_model_ids) if known_model_ids is not None else None
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))
        #: Endpoints of this workspace by id, in the API's response shape.
        self.endpoints: dict[str, dict[str, Any]] = {}
        #: Endpoints of other workspaces: they hold slugs and answer 403, and are never listed.
        self.foreign_endpoints: dict[str, dict[str, Any]] = {}
        #: Secrets by name (values kept so tests can check rotation; never served).
        self.secrets: dict[str, Secret] = {}
        self._seq: dict[str, int] = {}
        self._next_seq = 0

    # ----------------------------------------------------------------- keys

    def add_key(self, key: str, *, management: bool = True) -> None:
        self.api_keys[key] = management

    def remove_key(self, key: str) -> None:
        self.api_keys.pop(key, None)

    def rotate_key(self, old: str, new: str) -> None:
        self.api_keys[new] = self.api_keys.pop(old, True)

    # ----------------------------------------------------------------- out of band

    def delete_out_of_band(self, endpoint_id: str) -> dict[str, Any]:
        """Delete as if someone used the Baseten UI; returns the removed endpoint."""
        self._seq.pop(endpoint_id, None)
        return self.endpoints.pop(endpoint_id)

    def modify_out_of_band(self, endpoint_id: str, **fields: Any) -> dict[str, Any]:
        """Change fields with no validation (bad values go out as they are) and bump ``updated_at``."""
        endpoint = self.endpoints[endpoint_id]
        endpoint.update(copy.deepcopy(fields))
        if "updated_at" not in fields:
            endpoint["updated_at"] = self._now()
        return copy.deepcopy(endpoint)

    def add_foreign_endpoint(self, slug: str, region: str = "UNRESTRICTED") -> str:
        """An endpoint owned by another workspace: holds ``slug``, answers 403 by id."""
        endpoint_id = _new_id()
        now = self._now()
        self.foreign_endpoints[endpoint_id] = {
            "id": endpoint_id,
            "slug": slug,
            "region": region,
            "targets": [{"provider": "BASETEN", "model_id": "foreign"}],
            "created_at": now,
            "updated_at": now,
        }
        return endpoint_id

    def put_secret(self, name: str, value: str) -> Secret:
        """Create or rotate a secret without an HTTP call."""
        existing = self.secrets.get(name)
        if existing is not None:
            existing.value = value
            return existing
        secret = Secret(id=_new_id(), name=name, value=value, created_at=self._now(), team_name=self.team_name)
        self.secrets[name] = secret
        return secret

    # ----------------------------------------------------------------- base hooks

    def routes(self) -> Iterable[Route]:
        return [
            Route("POST", "/v1/gateway/endpoints", self._create),
            Route("GET", "/v1/gateway/endpoints", self._list),
            Route("GET", "/v1/gateway/endpoints/{id}", self._get),
            Route("PATCH", "/v1/gateway/endpoints/{id}", self._patch),
            Route("DELETE", "/v1/gateway/endpoints/{id}", self._delete),
            Route("POST", "/v1/secrets", self._upsert_secret),
            Route("GET", "/v1/secrets", self._list_secrets),
            Route("DELETE", "/v1/secrets/{name}", self._delete_secret),
        ]

    def error_body(self, status: int, message: str) -> Json:
        return {"error": message}

    def rate_limited(self, retry_after: int) -> web.Response:
        return web.json_response(
            {"error": "Too many requests. Please retry later.", "retry_after": retry_after},
            status=429,
            headers={"Retry-After": str(retry_after)},
        )

    def identify(self, request: web.Request) -> str | None:
        header = request.headers.get("Authorization", "")
        scheme, _, credential = header.strip().partition(" ")
        if scheme.lower() not in ("api-key", "bearer") or not credential.strip():
            return None
        return credential.strip()

    def authenticate(self, call: Call) -> None:
        if call.key is None:
            raise ApiError(401, "Missing or malformed Authorization header; use 'Api-Key <key>'.")
        if call.key not in self.api_keys:
            raise ApiError(401, "Invalid API key.")
        if not self.api_keys[call.key]:
            raise ApiError(403, "This API key does not have management scope.")
        if call.route.startswith("/v1/gateway/") and not self.onboarded:
            raise ApiError(403, "This workspace is not onboarded to Frontier Gateway.")

    def contract_request(self, call: Call, raw_body: bytes) -> ContractRequest | None:
        creq = super().contract_request(call, raw_body)
        assert creq is not None
        headers = dict(creq.headers)
        auth = headers.get("Authorization", "")
        if auth[:8].lower() == "api-key ":
            # The spec declares only HTTP bearer, but says in prose that the legacy
            # Api-Key scheme is accepted too: check the key, not the scheme's name.
            headers["Authorization"] = "Bearer " + auth[8:]
        body = raw_body or None
        if (
            self.slug_rename == "patch"
            and call.request.method == "PATCH"
            and isinstance(call.body, dict)
            and "slug" in call.body
        ):
            # In "patch" mode the simulator plays the vendor as its docs describe it
            # (the seed: PATCH renames). The spec from 2026-06-30 on describes the newer
            # behaviour, so a rename there is a disagreement between two vendor
            # sources, not a client bug. The rest of the body is still checked.
            rest = {k: v for k, v in call.body.items() if k != "slug"}
            body = _dump(rest)
        return ContractRequest(
            method=creq.method,
            path=creq.path,
            query=creq.query,
            headers=headers,
            body=body,
            content_type=creq.content_type,
        )

    # ----------------------------------------------------------------- helpers

    def _now(self) -> str:
        return rfc3339(self.clock())

    def _find(self, endpoint_id: str) -> dict[str, Any]:
        if endpoint_id in self.foreign_endpoints:
            raise ApiError(403, "You do not have access to this endpoint.")
        endpoint = self.endpoints.get(endpoint_id)
        if endpoint is None:
            raise ApiError(404, f"Endpoint {endpoint_id} not found.")
        return endpoint

    def _slug_taken(self, slug: str, except_id: str | None = None) -> bool:
        return any(
            e["slug"] == slug and e["id"] != except_id
            for e in (*self.endpoints.values(), *self.foreign_endpoints.values())
        )

    def _check_slug(self, slug: Json, except_id: str | None = None) -> str:
        if not isinstance(slug, str):
            raise ApiError(400, "slug must be a string.")
        match = _SLUG_RE.match(slug)
        if match is None:
            raise ApiError(400, f"Invalid slug {slug!r}: expected '{{org_prefix}}/{{name}}' with URL-safe segments.")
        if match.group(1) not in self.org_prefixes:
            raise ApiError(400, f"Your organization does not own the slug prefix {match.group(1)!r}.")
        if self._slug_taken(slug, except_id):
            raise ApiError(400, f"An endpoint with slug {slug!r} already exists.")
        return slug

    def _check_targets(self, targets: Json) -> list[dict[str, Any]]:
        if not isinstance(targets, list):
            raise ApiError(400, "targets must be a list.")
        if len(targets) != 1:
            raise ApiError(400, f"Exactly one target is supported; got {len(targets)}.")
        return [self._check_target(t) for t in targets]

    def _check_target(self, target: Json) -> dict[str, Any]:
        if not isinstance(target, dict):
            raise ApiError(400, "Each target must be an object.")
        provider = target.get("provider")
        if provider not in PROVIDERS:
            raise ApiError(400, f"Unknown provider {provider!r}; expected one of {', '.join(PROVIDERS)}.")
        given = {k: target[k] for k in TARGET_FIELDS if target.get(k) is not None}
        for name, value in given.items():
            if name != "vertex_config" and not (isinstance(value, str) and value):
                raise ApiError(400, f"{name} must be a non-empty string.")

        def need(*names: str) -> None:
            for name in names:
                if name not in given:
                    raise ApiError(400, f"{name} is required for {provider} targets.")

        def only(name: str, allowed: str) -> None:
            if name in given and provider != allowed:
                raise ApiError(400, f"{name} is only valid with {allowed} targets.")

        only("model_id", "BASETEN")
        only("environment_name", "BASETEN")
        only("base_url", "OPENAI_COMPATIBLE")
        only("vertex_config", "VERTEX")
        if provider == "BASETEN":
            need("model_id")
            if self.known_model_ids is not None and given["model_id"] not in self.known_model_ids:
                raise ApiError(400, f"Model {given['model_id']!r} not found in your workspace.")
        elif provider == "BASETEN_MODEL_API":
            need("target_model")
        else:
            need("secret_id", "target_model")
        if provider == "OPENAI_COMPATIBLE":
            need("base_url")
            _check_base_url(given["base_url"])
        if provider == "VERTEX":
            need("vertex_config")
            given["vertex_config"] = _check_vertex(given["vertex_config"])
        if (
            "secret_id" in given
            and self.check_secret_refs
            and not any(s.id == given["secret_id"] for s in self.secrets.values())
        ):
            raise ApiError(400, f"Secret {given['secret_id']!r} not found.")
        if given.get("environment_name") == "production":
            # Responses name the environment only when it is not production.
            del given["environment_name"]
        return {"provider": provider, **given}

    # ----------------------------------------------------------------- endpoints

    async def _create(self, call: Call) -> web.Response:
        body = call.json_object()
        if "slug" not in body:
            raise ApiError(400, "slug is required.")
        if "targets" not in body:
            raise ApiError(400, "targets is required.")
        region = body.get("region")
        region = "UNRESTRICTED" if region is None else region
        if region not in REGIONS:
            raise ApiError(400, f"Unknown region {region!r}; expected one of {', '.join(REGIONS)}.")
        targets = self._check_targets(body["targets"])
        slug = self._check_slug(body["slug"])
        now = self._now()
        endpoint_id = _new_id()
        endpoint: dict[str, Any] = {
            "id": endpoint_id,
            "slug": slug,
            "region": region,
            "targets": targets,
            "created_at": now,
            "updated_at": now,
        }
        self.endpoints[endpoint_id] = endpoint
        self._seq[endpoint_id] = self._next_seq
        self._next_seq += 1
        return web.json_response(copy.deepcopy(endpoint))

    async def _list(self, call: Call) -> web.Response:
        raw_limit = call.query.get("limit", "100")
        try:
            limit = int(raw_limit)
        except ValueError:
            raise ApiError(400, f"limit must be an integer, got {raw_limit!r}.") from None
        if not 1 <= limit <= 1000:
            raise ApiError(400, "limit must be between 1 and 1000.")
        after = -1
        cursor = call.query.get("cursor")
        if cursor:
            after = _decode_cursor(cursor)
        ordered = sorted(
            (self._seq.get(eid, 0), e) for eid, e in self.endpoints.items() if self._seq.get(eid, 0) > after
        )
        page = ordered[:limit]
        has_more = len(ordered) > limit
        next_cursor = _encode_cursor(page[-1][0]) if has_more and page else None
        return web.json_response(
            {
                "items": [copy.deepcopy(e) for _, e in page],
                "pagination": {"has_more": has_more, "cursor": next_cursor},
            }
        )

    async def _get(self, call: Call) -> web.Response:
        return web.json_response(copy.deepcopy(self._find(call.match["id"])))

    async def _patch(self, call: Call) -> web.Response:
        endpoint = self._find(call.match["id"])
        body = call.json_object()
        changes: dict[str, Any] = {}
        if body.get("targets") is not None:
            changes["targets"] = self._check_targets(body["targets"])
        region = body.get("region")
        if region is not None and region != endpoint["region"]:
            raise ApiError(400, "region cannot be changed after creation.")
        slug = body.get("slug")
        if slug is not None and slug != endpoint["slug"]:
            if self.slug_rename == "immutable":
                raise ApiError(400, "slug is immutable; create a new endpoint with the new slug and delete this one.")
            if self.slug_rename == "patch":
                changes["slug"] = self._check_slug(slug, except_id=endpoint["id"])
        if changes:
            endpoint.update(changes)
            endpoint["updated_at"] = self._now()
        return web.json_response(copy.deepcopy(endpoint))

    async def _delete(self, call: Call) -> web.Response:
        endpoint = self._find(call.match["id"])
        del self.endpoints[endpoint["id"]]
        self._seq.pop(endpoint["id"], None)
        return web.json_response({"id": endpoint["id"], "slug": endpoint["slug"]})

    # ----------------------------------------------------------------- secrets

    async def _upsert_secret(self, call: Call) -> web.Response:
        body = call.json_object()
        name, value = body.get("name"), body.get("value")
        if not isinstance(name, str) or not _SECRET_NAME_RE.match(name):
            raise ApiError(400, "name is required: 1-255 letters, digits, '.', '_' or '-'.")
        if not isinstance(value, str):
            raise ApiError(400, "value is required and must be a string.")
        return web.json_response(self.put_secret(name, value).metadata())

    async def _list_secrets(self, call: Call) -> web.Response:
        return web.json_response({"secrets": [s.metadata() for s in self.secrets.values()]})

    async def _delete_secret(self, call: Call) -> web.Response:
        name = call.match["name"]
        if self.secrets.pop(name, None) is None:
            raise ApiError(404, f"Secret {name!r} not found.")
        return web.json_response({"name": name})


def _check_base_url(url: str) -> None:
    match = re.match(r"^https://([^/:?#]+)(:[^/?#]*)?(/[^?#]*)?$", url)
    if match is None:
        raise ApiError(400, "base_url must be an https URL.")
    if match.group(2):
        raise ApiError(400, "base_url must not include a port.")


def _check_vertex(config: Json) -> dict[str, str]:
    if not isinstance(config, dict):
        raise ApiError(400, "vertex_config must be an object.")
    out: dict[str, str] = {}
    for name in ("project_id", "location"):
        value = config.get(name)
        if not isinstance(value, str) or not value:
            raise ApiError(400, f"vertex_config.{name} is required.")
        out[name] = value
    return out


def _encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"after:{seq}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, number = text.partition(":")
        if prefix != "after":
            raise ValueError(text)
        return int(number)
    except ValueError:
        raise ApiError(400, "Invalid pagination cursor.") from None


def _dump(value: Json) -> bytes:
    return json.dumps(value).encode()


def _demo_secrets(simulator: BasetenSimulator, resources: list[dict[str, Any]]) -> None:
    # Baseten names secrets by an id it assigns; the example refers to the secret by name.
    secret = simulator.put_secret("anthropic-key", "sk-demo-not-a-real-key")
    for manifest in resources:
        for target in manifest["spec"].get("targets", []):
            if target.get("secretId") == secret.name:
                target["secretId"] = secret.id


DEMO = DemoUpstream(
    "Baseten simulator",
    "baseten",
    lambda key: BasetenSimulator(api_keys=[key]),
    key="demo-baseten-key",
    prepare=_demo_secrets,
)
