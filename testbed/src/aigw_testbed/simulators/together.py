"""Simulator of Together AI dedicated endpoints (``https://api.together.ai/v1``).

Implements ``shared/apis.md`` section 4 and the vendor's spec
(``shared/openapi/together.openapi.yaml``): ``/v1/endpoints``,
``/v1/endpoints/{id}`` and ``/v1/hardware``. Where both are silent, the choices
made here are listed on :class:`TogetherSimulator`.
"""

from __future__ import annotations

import copy
import re
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from aiohttp import web

from aigw_testbed import SPECS
from aigw_testbed.simulators import DemoUpstream
from aigw_testbed.simulators.base import ApiError, Call, Json, Route, SimulatorServer
from aigw_testbed.simulators.contract import ContractChecker

# Spec paths are relative to the spec's server (``https://api.together.ai/v1``).
TOGETHER_SPEC_PATHS = ("/endpoints", "/endpoints/{endpointId}", "/hardware")
BASE_PATH = "/v1"

DEFAULT_MODEL = "meta-llama/Llama-3-8b-chat-hf"
DEFAULT_HARDWARE: dict[str, dict[str, str]] = {
    DEFAULT_MODEL: {
        "1x_nvidia_h100_80gb_sxm": "available",
        "2x_nvidia_h100_80gb_sxm": "insufficient",
        "8x_nvidia_h200_140gb_sxm": "unavailable",
    },
    "deepseek-ai/DeepSeek-R1": {
        "8x_nvidia_h200_140gb_sxm": "unavailable",
        "8x_nvidia_h100_80gb_sxm": "available",
    },
}
# Serverless endpoints owned by Together: listed unless the caller asks for ``mine=true``
# or ``type=dedicated``, so a client that forgets the filters sees endpoints it does not own.
DEFAULT_SERVERLESS_MODELS = ("meta-llama/Llama-3.3-70B-Instruct-Turbo",)
AVAILABILITY = ("available", "unavailable", "insufficient")

# Published list prices are per hour; these only need to be plausible and stable.
_CENTS_PER_GPU_MINUTE = {"h100-80gb": 5.6, "h200-140gb": 8.3, "a100-80gb": 4.3, "l40s-48gb": 2.4}
_HARDWARE_ID = re.compile(r"^(?P<count>\d+)x_nvidia_(?P<gpu>[a-z0-9]+)_(?P<mem>\d+)gb_(?P<link>[a-z0-9]+)$")

Heading = Literal["start", "stop"]


def default_spec_path() -> Path:
    """The vendor's published spec, shipped as package data (a copy of ``shared/openapi/together.openapi.yaml``)."""
    return SPECS / "together.openapi.yaml"


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TogetherError(ApiError):
    """An :class:`ApiError` carrying Together's ``type``, ``param`` and ``code``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str | None = None,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(status, message, headers)
        self.type = type_ or _default_type(status)
        self.param = param
        self.code = code


def _default_type(status: int) -> str:
    return {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        429: "rate_limit_exceeded",
    }.get(status, "server_error")


def _invalid(message: str, param: str | None = None, code: str | None = "invalid_value") -> TogetherError:
    return TogetherError(400, message, param=param, code=code)


@dataclass
class TogetherEndpoint:
    """One dedicated endpoint. The API state is derived from the timeline on every read.

    ``path`` is where the endpoint is heading ("start": PENDING -> STARTING ->
    STARTED, "stop": STOPPING -> STOPPED) and ``moved_at`` (monotonic) when it
    set off; ``error`` overrides both.
    """

    id: str
    name: str
    display_name: str
    model: str
    hardware: str
    owner: str
    created_at: str
    min_replicas: int
    max_replicas: int
    path: Heading
    moved_at: float
    inactive_timeout: int | None = None
    disable_speculative_decoding: bool = False
    availability_zone: str | None = None
    error: str | None = None
    #: Last (simulated) inference traffic; idleness for ``inactive_timeout`` counts from here.
    last_active: float = 0.0
    #: True once the endpoint stopped by itself (inactive_timeout or :meth:`TogetherSimulator.auto_stop`).
    auto_stopped: bool = False
    scale_from: int = 0
    scaled_at: float = float("-inf")
    history: list[str] = field(default_factory=list)


class TogetherSimulator(SimulatorServer):
    """Together AI dedicated endpoints, state in memory, lifecycle driven by time.

    Decisions where Together documents nothing:

    - Auth: ``Authorization: Bearer <key>``; a missing or unknown key is 401
      (``authentication_error``/``invalid_api_key``, undocumented in the spec but
      what the real API answers); a known key in ``forbidden_keys`` is 403
      (``permission_error``), the spec's documented "Unauthorized".
    - Errors are ``{"error": {"message", "type", "param", "code"}}``. Types:
      400 ``invalid_request_error``, 401 ``authentication_error``, 403
      ``permission_error``, 404 ``not_found_error``, 429 ``rate_limit_exceeded``
      (with ``Retry-After``), 5xx ``server_error``. Clients should key on status.
    - Create (200): ``model``, ``hardware``, ``autoscaling`` required. A model
      not in the catalogue is 400 ``code=model_not_available``; hardware not
      offered for the model 400 ``code=invalid_hardware``; hardware whose
      availability is ``unavailable``/``insufficient`` 400
      ``code=hardware_unavailable`` (no endpoint is made). Autoscaling needs
      integer ``1 <= min_replicas <= max_replicas``. ``display_name`` defaults
      to the system name. ``state: STOPPED`` creates a STOPPED endpoint.
      Unknown fields are ignored; the contract checker flags them.
    - Timeline: PENDING for ``pending_seconds``, STARTING for
      ``starting_seconds``, then STARTED; a stop is STOPPING for
      ``stopping_seconds`` then STOPPED. ``inactive_timeout`` minutes (each
      ``minute_seconds`` long) of no activity after STARTED stops the endpoint
      by itself (STOPPING then STOPPED).
    - PATCH: ``display_name``, ``state``, ``autoscaling`` (both bounds),
      ``inactive_timeout`` (0 or null disables). ``model``, ``hardware``,
      ``disable_speculative_decoding``, ``availability_zone`` and the read-only
      fields (``id``, ``name``, ``owner``, ...) are refused with 400
      ``code=immutable_field`` whenever present, since the PATCH schema has no
      such fields. ``state: STARTED`` on a STOPPING/STOPPED/ERROR endpoint
      restarts it from PENDING; ``state: STOPPED`` on a PENDING/STARTING/
      STARTED/ERROR endpoint stops it; otherwise the state is left as it is.
    - DELETE: 204 in any state; unknown ids 404 on every by-id route.
    - List: ``{"object": "list", "data": [...]}`` with the spec's
      ``ListEndpoint`` items (no ``display_name``, ``hardware`` or
      ``autoscaling``), oldest first, no pagination. ``type``/``usage_type``/
      ``mine`` outside their enums (``mine``: ``true``/``false``) are 400.
      Every simulated dedicated endpoint is ``on-demand``.
    - Hardware: without ``model`` every known configuration, no
      ``availability``; with a catalogue model, that model's configurations
      with ``availability.status``; an unknown model gives an empty list.
    - Replicas are not in the API object. :meth:`replicas` gives the running
      count: 0 unless STARTED, ``min_replicas`` once started, and after an
      autoscaling change it moves linearly to the new ``min_replicas`` over
      ``scaling_seconds``.

    With ``contract=True`` every exchange on these routes is checked against the
    spec (closed objects; see :class:`ServerPathContractChecker` for the ``/v1``
    server path) and violations collect in ``contract_violations``.
    """

    upstream_name = "Together AI"

    def __init__(
        self,
        api_keys: Iterable[str] = ("test-key",),
        *,
        contract: bool = False,
        spec_path: str | Path | None = None,
        pending_seconds: float = 0.2,
        starting_seconds: float = 0.3,
        stopping_seconds: float = 0.3,
        scaling_seconds: float = 0.3,
        minute_seconds: float = 60.0,
        hardware: Mapping[str, Mapping[str, str]] | None = None,
        serverless_models: Iterable[str] = DEFAULT_SERVERLESS_MODELS,
        owner: str = "devuser",
        host: str = "127.0.0.1",
        port: int = 0,
        rate_limit: float | None = None,
    ) -> None:
        checker = (
            ContractChecker(Path(spec_path) if spec_path else default_spec_path(), TOGETHER_SPEC_PATHS)
            if contract
            else None
        )
        super().__init__(host=host, port=port, rate_limit=rate_limit, contract_checker=checker)
        self.api_keys: set[str] = set(api_keys)
        #: Known keys answered 403 (a key without access to dedicated endpoints).
        self.forbidden_keys: set[str] = set()
        self.pending_seconds = pending_seconds
        self.starting_seconds = starting_seconds
        self.stopping_seconds = stopping_seconds
        self.scaling_seconds = scaling_seconds
        self.minute_seconds = minute_seconds
        #: model -> {hardware id -> availability status}; may be changed at run time.
        self.hardware: dict[str, dict[str, str]] = {
            model: dict(options) for model, options in (hardware if hardware is not None else DEFAULT_HARDWARE).items()
        }
        for options in self.hardware.values():
            for hw, status in options.items():
                _check_availability(hw, status)
        self.serverless_models = tuple(serverless_models)
        self.owner = owner
        #: Dedicated endpoints by id.
        self.endpoints: dict[str, TogetherEndpoint] = {}
        self._serverless_ids = {m: f"endpoint-{uuid.uuid4()}" for m in self.serverless_models}
        self._started_wall = rfc3339(datetime.now(UTC))

    # ----------------------------------------------------------------- test hooks

    def now(self) -> float:
        """The clock of the state machine (monotonic seconds); tests may replace it."""
        return time.monotonic()

    def state(self, endpoint_id: str) -> str:
        return self._state(self._endpoint(endpoint_id), self.now())

    def fail(self, endpoint_id: str, message: str = "Deployment failed.") -> None:
        """Put the endpoint in ERROR, as a failed deployment would; PATCH state clears it."""
        ep = self._endpoint(endpoint_id)
        ep.error = message
        ep.history.append("ERROR")

    def auto_stop(self, endpoint_id: str) -> None:
        """Stop a STARTED endpoint at once, as if its inactive timeout had passed."""
        ep = self._endpoint(endpoint_id)
        state = self._state(ep, self.now())
        if state != "STARTED":
            raise ValueError(f"auto_stop needs a STARTED endpoint, {endpoint_id} is {state}")
        self._move(ep, "stop", self.now() - self.stopping_seconds)
        ep.auto_stopped = True

    def record_activity(self, endpoint_id: str) -> None:
        """Count inference traffic now, postponing the inactive-timeout stop."""
        self._endpoint(endpoint_id).last_active = self.now()

    def replicas(self, endpoint_id: str) -> int:
        ep = self._endpoint(endpoint_id)
        now = self.now()
        if self._state(ep, now) != "STARTED":
            return 0
        elapsed = now - ep.scaled_at
        if self.scaling_seconds <= 0 or elapsed >= self.scaling_seconds:
            return ep.min_replicas
        progress = elapsed / self.scaling_seconds
        # Truncate towards the origin: a replica counts only once it has fully arrived or gone.
        return ep.scale_from + int((ep.min_replicas - ep.scale_from) * progress)

    def delete_out_of_band(self, endpoint_id: str) -> TogetherEndpoint:
        """Delete as if someone used the dashboard; returns the removed endpoint."""
        return self.endpoints.pop(endpoint_id)

    def set_availability(self, model: str, hardware: str, status: str) -> None:
        _check_availability(hardware, status)
        self.hardware.setdefault(model, {})[hardware] = status

    def add_key(self, key: str) -> None:
        self.api_keys.add(key)

    def remove_key(self, key: str) -> None:
        self.api_keys.discard(key)

    # ----------------------------------------------------------------- base hooks

    def routes(self) -> Iterable[Route]:
        return [
            Route("POST", f"{BASE_PATH}/endpoints", self._create),
            Route("GET", f"{BASE_PATH}/endpoints", self._list),
            Route("GET", f"{BASE_PATH}/endpoints/{{id}}", self._get),
            Route("PATCH", f"{BASE_PATH}/endpoints/{{id}}", self._patch),
            Route("DELETE", f"{BASE_PATH}/endpoints/{{id}}", self._delete),
            Route("GET", f"{BASE_PATH}/hardware", self._list_hardware),
        ]

    def error_body(self, status: int, message: str) -> Json:
        return _error(message, _default_type(status), None, None)

    def rate_limited(self, retry_after: int) -> web.Response:
        return web.json_response(
            _error("Rate limit exceeded, please retry later.", "rate_limit_exceeded", None, "rate_limit_exceeded"),
            status=429,
            headers={"Retry-After": str(retry_after)},
        )

    def _error_response(self, err: ApiError) -> web.Response:
        if isinstance(err, TogetherError):
            body = _error(err.message, err.type, err.param, err.code)
        else:
            body = _error(err.message, _default_type(err.status), None, None)
        return web.json_response(body, status=err.status, headers=err.headers)

    def identify(self, request: web.Request) -> str | None:
        scheme, _, credential = request.headers.get("Authorization", "").strip().partition(" ")
        if scheme.lower() != "bearer" or not credential.strip():
            return None
        return credential.strip()

    def authenticate(self, call: Call) -> None:
        if call.key is None or call.key not in self.api_keys:
            raise TogetherError(
                401,
                "Invalid API key provided. You can find your API key at https://api.together.ai/settings/api-keys.",
                code="invalid_api_key",
            )
        if call.key in self.forbidden_keys:
            raise TogetherError(403, "You do not have access to dedicated endpoints.", code="forbidden")

    # ----------------------------------------------------------------- state machine

    def _state(self, ep: TogetherEndpoint, now: float) -> str:
        if ep.error is not None:
            return "ERROR"
        elapsed = now - ep.moved_at
        if ep.path == "stop":
            return "STOPPING" if elapsed < self.stopping_seconds else "STOPPED"
        if elapsed < self.pending_seconds:
            return "PENDING"
        if elapsed < self.pending_seconds + self.starting_seconds:
            return "STARTING"
        if ep.inactive_timeout:
            started_at = ep.moved_at + self.pending_seconds + self.starting_seconds
            deadline = max(started_at, ep.last_active) + ep.inactive_timeout * self.minute_seconds
            if now >= deadline:
                # Rewrite the timeline as if the stop had been noticed at the deadline.
                self._move(ep, "stop", deadline)
                ep.auto_stopped = True
                return self._state(ep, now)
        return "STARTED"

    def _move(self, ep: TogetherEndpoint, path: Heading, at: float) -> None:
        ep.path = path
        ep.moved_at = at
        ep.error = None
        ep.auto_stopped = False
        ep.last_active = at
        # A (re)start comes up with min_replicas at once; scaling only follows autoscaling changes.
        ep.scale_from = ep.min_replicas
        ep.scaled_at = float("-inf")
        ep.history.append(path)

    # ----------------------------------------------------------------- views

    def _detail(self, ep: TogetherEndpoint) -> dict[str, Any]:
        return {
            "object": "endpoint",
            "id": ep.id,
            "name": ep.name,
            "display_name": ep.display_name,
            "model": ep.model,
            "hardware": ep.hardware,
            "type": "dedicated",
            "owner": ep.owner,
            "state": self._state(ep, self.now()),
            "autoscaling": {"min_replicas": ep.min_replicas, "max_replicas": ep.max_replicas},
            "created_at": ep.created_at,
        }

    def _list_item(self, ep: TogetherEndpoint) -> dict[str, Any]:
        detail = self._detail(ep)
        for hidden in ("display_name", "hardware", "autoscaling"):
            del detail[hidden]
        return detail

    def _serverless_items(self) -> list[dict[str, Any]]:
        return [
            {
                "object": "endpoint",
                "id": self._serverless_ids[model],
                "name": model,
                "model": model,
                "type": "serverless",
                "owner": "together",
                "state": "STARTED",
                "created_at": self._started_wall,
            }
            for model in self.serverless_models
        ]

    def _hardware_item(self, hardware_id: str, status: str | None) -> dict[str, Any]:
        match = _HARDWARE_ID.match(hardware_id)
        count, gpu, memory, link = (
            (int(match["count"]), match["gpu"], int(match["mem"]), match["link"]) if match else (1, "unknown", 0, "sxm")
        )
        gpu_type = f"{gpu}-{memory}gb"
        item: dict[str, Any] = {
            "object": "hardware",
            "id": hardware_id,
            "pricing": {"cents_per_minute": round(count * _CENTS_PER_GPU_MINUTE.get(gpu_type, 5.0), 2)},
            "specs": {"gpu_type": gpu_type, "gpu_link": link, "gpu_memory": float(memory), "gpu_count": count},
            "updated_at": self._started_wall,
        }
        if status is not None:
            item["availability"] = {"status": status}
        return item

    # ----------------------------------------------------------------- handlers

    def _endpoint(self, endpoint_id: str) -> TogetherEndpoint:
        ep = self.endpoints.get(endpoint_id)
        if ep is None:
            raise TogetherError(404, f"Endpoint {endpoint_id} not found.", code="endpoint_not_found")
        return ep

    async def _create(self, call: Call) -> web.Response:
        body = _body(call)
        model = _string(body, "model", required=True)
        hardware = _string(body, "hardware", required=True)
        if "autoscaling" not in body:
            raise _invalid("autoscaling is required.", "autoscaling", "missing_required_parameter")
        min_replicas, max_replicas = _autoscaling(body["autoscaling"])
        display_name = _string(body, "display_name")
        state = body.get("state", "STARTED")
        if state not in ("STARTED", "STOPPED"):
            raise _invalid("state must be STARTED or STOPPED.", "state")
        inactive_timeout = _inactive_timeout(body)
        speculative = body.get("disable_speculative_decoding", False)
        if not isinstance(speculative, bool):
            raise _invalid("disable_speculative_decoding must be a boolean.", "disable_speculative_decoding")
        zone = _string(body, "availability_zone")
        assert model is not None and hardware is not None
        options = self.hardware.get(model)
        if options is None:
            raise _invalid(f"Model {model} is not available for dedicated endpoints.", "model", "model_not_available")
        if hardware not in options:
            raise _invalid(
                f"Hardware {hardware} is not supported for model {model}; see GET /v1/hardware?model=.",
                "hardware",
                "invalid_hardware",
            )
        if options[hardware] != "available":
            raise _invalid(
                f"Hardware {hardware} is currently {options[hardware]} for model {model}.",
                "hardware",
                "hardware_unavailable",
            )
        now = self.now()
        endpoint_id = f"endpoint-{uuid.uuid4()}"
        name = f"{self.owner}/{model}-{uuid.uuid4().hex[:8]}"
        ep = TogetherEndpoint(
            id=endpoint_id,
            name=name,
            display_name=display_name if display_name is not None else name,
            model=model,
            hardware=hardware,
            owner=self.owner,
            created_at=rfc3339(datetime.now(UTC)),
            min_replicas=min_replicas,
            max_replicas=max_replicas,
            path="start",
            moved_at=now,
            inactive_timeout=inactive_timeout,
            disable_speculative_decoding=speculative,
            availability_zone=zone,
        )
        if state == "STOPPED":
            self._move(ep, "stop", now - self.stopping_seconds)
        else:
            self._move(ep, "start", now)
        self.endpoints[endpoint_id] = ep
        return web.json_response(self._detail(ep))

    async def _list(self, call: Call) -> web.Response:
        kind = call.query.get("type")
        if kind not in (None, "dedicated", "serverless"):
            raise _invalid("type must be dedicated or serverless.", "type")
        usage = call.query.get("usage_type")
        if usage not in (None, "on-demand", "reserved"):
            raise _invalid("usage_type must be on-demand or reserved.", "usage_type")
        mine = call.query.get("mine")
        if mine not in (None, "true", "false"):
            raise _invalid("mine must be true or false.", "mine")
        items: list[dict[str, Any]] = []
        if kind in (None, "dedicated") and usage in (None, "on-demand"):
            items.extend(self._list_item(ep) for ep in self.endpoints.values())
        if kind in (None, "serverless") and mine != "true" and usage is None:
            items.extend(self._serverless_items())
        return web.json_response({"object": "list", "data": items})

    async def _get(self, call: Call) -> web.Response:
        return web.json_response(self._detail(self._endpoint(call.match["id"])))

    async def _patch(self, call: Call) -> web.Response:
        ep = self._endpoint(call.match["id"])
        body = _body(call)
        for name in (
            "model",
            "hardware",
            "disable_speculative_decoding",
            "availability_zone",
            "id",
            "name",
            "owner",
            "type",
            "object",
            "created_at",
        ):
            if name in body:
                raise _invalid(f"{name} cannot be changed after creation.", name, "immutable_field")
        display_name = _string(body, "display_name")
        state = body.get("state")
        if state not in (None, "STARTED", "STOPPED"):
            raise _invalid("state must be STARTED or STOPPED.", "state")
        bounds = _autoscaling(body["autoscaling"]) if "autoscaling" in body else None
        timeout_given = "inactive_timeout" in body
        inactive_timeout = _inactive_timeout(body)
        # All validation before any change: a refused PATCH leaves the endpoint untouched.
        now = self.now()
        if display_name is not None:
            ep.display_name = display_name
        if timeout_given:
            ep.inactive_timeout = inactive_timeout
        if bounds is not None and bounds != (ep.min_replicas, ep.max_replicas):
            ep.scale_from = self.replicas(ep.id)
            ep.scaled_at = now
            ep.min_replicas, ep.max_replicas = bounds
        current = self._state(ep, now)
        if state == "STARTED" and current in ("STOPPING", "STOPPED", "ERROR"):
            self._move(ep, "start", now)
        elif state == "STOPPED" and current in ("PENDING", "STARTING", "STARTED", "ERROR"):
            self._move(ep, "stop", now)
        return web.json_response(self._detail(ep))

    async def _delete(self, call: Call) -> web.Response:
        ep = self._endpoint(call.match["id"])
        del self.endpoints[ep.id]
        return web.Response(status=204)

    async def _list_hardware(self, call: Call) -> web.Response:
        model = call.query.get("model")
        if model is None:
            known = sorted({hw for options in self.hardware.values() for hw in options})
            data = [self._hardware_item(hw, None) for hw in known]
        else:
            options = self.hardware.get(model, {})
            data = [self._hardware_item(hw, status) for hw, status in sorted(options.items())]
        return web.json_response({"object": "list", "data": copy.deepcopy(data)})


def _error(message: str, type_: str, param: str | None, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _check_availability(hardware: str, status: str) -> None:
    if status not in AVAILABILITY:
        raise ValueError(f"availability of {hardware} must be one of {AVAILABILITY}, not {status!r}")


def _body(call: Call) -> dict[str, Json]:
    try:
        return call.json_object()
    except ApiError as err:
        raise _invalid(err.message, None, "invalid_json") from None


def _string(body: Mapping[str, Json], name: str, *, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise _invalid(f"{name} is required.", name, "missing_required_parameter")
        return None
    if not isinstance(value, str) or (required and not value):
        raise _invalid(f"{name} must be a non-empty string." if required else f"{name} must be a string.", name)
    return value


def _int(value: Json) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _autoscaling(value: Json) -> tuple[int, int]:
    if not isinstance(value, dict):
        raise _invalid("autoscaling must be an object with min_replicas and max_replicas.", "autoscaling")
    low, high = value.get("min_replicas"), value.get("max_replicas")
    if not _int(low) or not _int(high):
        raise _invalid(
            "autoscaling needs integer min_replicas and max_replicas.", "autoscaling", "missing_required_parameter"
        )
    assert isinstance(low, int) and isinstance(high, int)
    if low < 1 or high < low:
        raise _invalid("autoscaling needs 1 <= min_replicas <= max_replicas.", "autoscaling")
    return low, high


def _inactive_timeout(body: Mapping[str, Json]) -> int | None:
    value = body.get("inactive_timeout")
    if value is None:
        return None
    if not _int(value) or value < 0:
        raise _invalid("inactive_timeout must be a non-negative integer number of minutes.", "inactive_timeout")
    assert isinstance(value, int)
    return value or None


DEMO = DemoUpstream(
    "Together simulator",
    "together",
    # A short simulated start-up, so the demo's table shows PENDING -> STARTING -> STARTED.
    lambda key: TogetherSimulator(api_keys=[key], pending_seconds=1.0, starting_seconds=2.0),
    key="demo-together-key",
    api_path="/v1",
)
