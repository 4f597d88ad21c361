"""Machinery shared by the upstream API simulators.

A simulator is an aiohttp server run in-process on loopback::

    async with BasetenSimulator(api_keys={"k"}) as sim:
        httpx.get(sim.url + "/v1/gateway/endpoints", headers=...)

Every request goes through one pipeline (:meth:`SimulatorServer._dispatch`):

1. log the arrival and update the observed request rate;
2. sleep ``faults.latency`` plus any :meth:`Faults.slow_next` delay (before
   processing, so a client that times out on a slow upstream may still find its
   write applied, as with a real one);
3. injected failures (:meth:`Faults.fail_next`) then injected 429s
   (:meth:`Faults.rate_limit_burst`), neither of which touches state;
4. :meth:`SimulatorServer.authenticate` (the subclass's auth rules);
5. the per-key token bucket (``rate_limit``, requests per second, None = off);
6. the route handler;
7. contract checking of the exchange, when enabled;
8. :meth:`Faults.hold_next_response`: the work is done and the answer waits
   until the test releases it;
9. :meth:`Faults.lose_next_response`: the work is done but the connection is
   aborted instead of answering.

Subclasses supply routes (:meth:`SimulatorServer.routes`), their error body
(:meth:`SimulatorServer.error_body`) and 429 shape (:meth:`SimulatorServer.rate_limited`).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from aiohttp import web

from aigw_testbed.simulators.contract import ContractChecker, ContractRequest, ContractResponse

Json = Any  # parsed JSON: dict, list, str, int, float, bool or None


class ApiError(Exception):
    """Raised by handlers to answer an error in the upstream's error shape."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


class _Invalid:
    """Marks a request body that is present but not JSON."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"<invalid JSON {self.text[:40]!r}>"


@dataclass(frozen=True)
class Call:
    """What a route handler gets: the raw request plus what the pipeline already parsed."""

    request: web.Request
    route: str
    body: Json | _Invalid  # None when the request had no body
    key: str | None  # the caller's credential, as identified by the simulator

    @property
    def match(self) -> Mapping[str, str]:
        return self.request.match_info

    @property
    def query(self) -> Mapping[str, str]:
        return self.request.query

    def json_object(self) -> dict[str, Json]:
        """The body as a JSON object, or a 400 in the upstream's shape."""
        if isinstance(self.body, _Invalid):
            raise ApiError(400, "Request body is not valid JSON.")
        if not isinstance(self.body, dict):
            raise ApiError(400, "Request body must be a JSON object.")
        return self.body


Handler = Callable[[Call], Awaitable[web.Response]]


@dataclass(frozen=True)
class Route:
    method: str
    template: str  # aiohttp syntax, e.g. "/v1/gateway/endpoints/{id}"
    handler: Handler
    #: Whether the contract checker sees this route's exchanges (when contract checking is on).
    contract: bool = True


@dataclass
class RequestRecord:
    method: str
    path: str
    route: str | None  # the matched route template; None when no route matched
    query: dict[str, str]
    body: Json  # parsed JSON, None for no body, the raw text when not JSON
    key: str | None
    time: float  # time.monotonic() at arrival
    status: int | None = None  # what was (or, if lost, would have been) answered
    lost: bool = False  # processed, then the connection was dropped without a response
    #: Request headers, names lower-cased (HTTP names are case-insensitive), credentials
    #: redacted by :func:`redact_headers`: a log of requests must not become a store of keys.
    headers: dict[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        """The request's ``name`` header (any case), None when it was not sent."""
        return self.headers.get(name.lower())


#: Headers that carry a credential; their values are never recorded.
CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "x-api-key", "api-key", "cookie"})
REDACTED = "<redacted>"


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """``headers`` with lower-cased names and every credential replaced by ``<redacted>``.

    An ``Authorization`` value keeps its scheme (``Bearer <redacted>``), so a test can still
    check which scheme a client used without the key itself being stored anywhere.
    """
    out: dict[str, str] = {}
    for name, value in headers.items():
        lower = name.lower()
        kept = value
        if lower in CREDENTIAL_HEADERS:
            scheme, sep, _ = value.partition(" ")
            kept = f"{scheme} {REDACTED}" if sep and lower.endswith("authorization") else REDACTED
        # A repeated header is one comma-joined value, as RFC 9110 section 5.3 allows.
        out[lower] = f"{out[lower]}, {kept}" if lower in out else kept
    return out


@dataclass
class Hold:
    """One request processed by the simulator whose answer waits for :meth:`release`: while it
    waits, the upstream's effect stands and the client provably does not know the outcome."""

    method: str
    reached: asyncio.Event = field(default_factory=asyncio.Event)  # processed, answer waiting
    record: RequestRecord | None = None  # the held request, once it has come
    _released: asyncio.Event = field(default_factory=asyncio.Event)

    def release(self) -> None:
        self._released.set()

    async def wait_released(self) -> None:
        await self._released.wait()


@dataclass
class Faults:
    """Switches tests flip at run time; each injected fault is consumed once per request."""

    latency: float = 0.0
    _failures: deque[int] = field(default_factory=deque)
    _throttles: deque[int] = field(default_factory=deque)
    _losses: dict[str, int] = field(default_factory=dict)
    _slowdowns: deque[tuple[str | None, float]] = field(default_factory=deque)
    _holds: deque[Hold] = field(default_factory=deque)

    def fail_next(self, n: int = 1, status: int = 500) -> None:
        """The next ``n`` requests answer ``status`` in the upstream's error shape, unprocessed."""
        self._failures.extend([status] * n)

    def rate_limit_burst(self, n: int = 1, retry_after: int = 1) -> None:
        """The next ``n`` requests answer 429 with ``retry_after`` seconds, unprocessed."""
        self._throttles.extend([retry_after] * n)

    def lose_next_response(self, method: str, n: int = 1) -> None:
        """The next ``n`` requests of ``method`` are processed, then the connection is dropped."""
        key = method.upper()
        self._losses[key] = self._losses.get(key, 0) + n

    def slow_next(self, n: int = 1, seconds: float = 2.0, method: str | None = None) -> None:
        """The next ``n`` requests (of ``method``, or of any method) wait ``seconds`` more than ``latency``
        before they are processed: a client that gives up first may still find its write carried out."""
        key = method.upper() if method else None
        self._slowdowns.extend([(key, seconds)] * n)

    def hold_next_response(self, method: str) -> Hold:
        """The next request of ``method`` is processed, then its answer waits until the returned
        hold is released (a kill in that window lands after the upstream's effect and before the
        client can act on it, whatever else is slow)."""
        hold = Hold(method.upper())
        self._holds.append(hold)
        return hold

    def take_hold(self, method: str) -> Hold | None:
        for index, hold in enumerate(self._holds):
            if hold.method == method.upper():
                del self._holds[index]
                return hold
        return None

    def reset(self) -> None:
        for hold in self._holds:
            hold.release()
        self._holds.clear()
        self.latency = 0.0
        self._failures.clear()
        self._throttles.clear()
        self._losses.clear()
        self._slowdowns.clear()

    def take_slowdown(self, method: str) -> float:
        for index, (key, seconds) in enumerate(self._slowdowns):
            if key is None or key == method.upper():
                del self._slowdowns[index]
                return seconds
        return 0.0

    def take_failure(self) -> int | None:
        return self._failures.popleft() if self._failures else None

    def take_throttle(self) -> int | None:
        return self._throttles.popleft() if self._throttles else None

    def take_loss(self, method: str) -> bool:
        left = self._losses.get(method.upper(), 0)
        if left <= 0:
            return False
        self._losses[method.upper()] = left - 1
        return True


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class SimulatorServer:
    """Base class of the upstream simulators. Use as an async context manager.

    ``port=0`` picks a free port. ``rate_limit`` is requests per second per key
    (token bucket holding one second's worth, so short bursts up to the rate pass);
    None turns it off. Both ``rate_limit`` and ``faults`` may be changed at run time.
    """

    #: Name used in messages of injected failures.
    upstream_name = "upstream"

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        rate_limit: float | None = None,
        contract_checker: ContractChecker | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.rate_limit = rate_limit
        self.faults = Faults()
        self.requests: list[RequestRecord] = []
        #: Every request since the simulator was built, in order: reset_counts() clears
        #: ``requests`` only, so what was sent per object (:meth:`sent_by_key`) outlives a reset.
        self.history: list[RequestRecord] = []
        self.contract_checker = contract_checker
        self.contract_violations: list[str] = []
        #: Highest number of requests seen within any one-second window, overall and per key.
        self.max_rate: int = 0
        self.max_rate_by_key: dict[str, int] = {}
        self._window: deque[float] = deque()
        self._windows_by_key: dict[str, deque[float]] = {}
        self._buckets: dict[str, _Bucket] = {}
        self._runner: web.AppRunner | None = None

    # ----------------------------------------------------------------- to override

    def routes(self) -> Iterable[Route]:
        raise NotImplementedError

    def error_body(self, status: int, message: str) -> Json:
        """The upstream's error body for ``status``."""
        raise NotImplementedError

    def rate_limited(self, retry_after: int) -> web.Response:
        """The upstream's 429 answer; the default sends the error body plus ``Retry-After``."""
        return web.json_response(
            self.error_body(429, "Rate limit exceeded."),
            status=429,
            headers={"Retry-After": str(retry_after)},
        )

    def identify(self, request: web.Request) -> str | None:
        """The caller's credential from the request (not yet checked), keying rate limits and the log."""
        return None

    def authenticate(self, call: Call) -> None:
        """Raise :class:`ApiError` (401/403) when the caller may not make ``call``."""

    def contract_request(self, call: Call, raw_body: bytes) -> ContractRequest | None:
        """The request as the contract checker should see it; None skips the check.

        Subclasses override to reconcile known, deliberate departures from the spec.
        """
        req = call.request
        return ContractRequest(
            method=req.method,
            path=req.path,
            query=dict(req.query),
            headers=dict(req.headers),
            body=raw_body or None,
            content_type=req.content_type if raw_body else "application/json",
        )

    # ----------------------------------------------------------------- lifecycle

    @property
    def url(self) -> str:
        if self._runner is None:
            raise RuntimeError("simulator not started")
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        for route in self.routes():
            app.router.add_route(route.method, route.template, self._adapter(route))
        app.router.add_route("*", "/{tail:.*}", self._adapter(None))
        # A short shutdown timeout: tests stop servers while clients keep idle connections.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        self._runner = runner
        self.port = int(runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # ----------------------------------------------------------------- accounting

    def count(self, method: str | None = None, route: str | None = None) -> int:
        return sum(
            1
            for r in self.requests
            if (method is None or r.method == method.upper()) and (route is None or r.route == route)
        )

    def sent_by_key(
        self, method: str, route: str, key: str | Callable[[RequestRecord], Any], *, since_reset: bool = False
    ) -> Counter[str]:
        """How many ``method`` requests to ``route`` each natural key got, whatever their answer:
        accepted, refused (a duplicate key, an injected 5xx or 429), lost, or still in flight.

        For a create route and the object's natural key (a slug, a provider id, a name, a display
        name) this is the number of creates sent per object, a figure that moves even where the
        upstream refuses a duplicate key and so never holds two objects. ``key`` names a field of
        the JSON body, or reads the key from the record. Counts :attr:`history` (every request),
        or with ``since_reset`` :attr:`requests` only.
        """
        records = self.requests if since_reset else self.history
        read = key if callable(key) else (lambda r: r.body.get(key) if isinstance(r.body, dict) else None)
        return Counter(str(read(r)) for r in records if r.method == method.upper() and r.route == route)

    def writes(self) -> list[RequestRecord]:
        return [r for r in self.requests if r.method not in ("GET", "HEAD", "OPTIONS")]

    def reset_counts(self) -> None:
        self.requests.clear()
        self.max_rate = 0
        self.max_rate_by_key.clear()
        self._window.clear()
        self._windows_by_key.clear()

    def _observe_rate(self, key: str | None, now: float) -> None:
        self.max_rate = max(self.max_rate, _slide(self._window, now))
        if key is not None:
            window = self._windows_by_key.setdefault(key, deque())
            self.max_rate_by_key[key] = max(self.max_rate_by_key.get(key, 0), _slide(window, now))

    def _take_token(self, key: str, now: float) -> int | None:
        """None when the request may pass, else the seconds to wait."""
        rate = self.rate_limit
        if rate is None or rate <= 0:
            return None
        capacity = max(1.0, rate)
        bucket = self._buckets.setdefault(key, _Bucket(tokens=capacity, stamp=now))
        bucket.tokens = min(capacity, bucket.tokens + (now - bucket.stamp) * rate)
        bucket.stamp = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return None
        return max(1, math.ceil((1.0 - bucket.tokens) / rate))

    # ----------------------------------------------------------------- pipeline

    def _adapter(self, route: Route | None) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await self._dispatch(request, route)

        return handle

    async def _not_found(self, call: Call) -> web.Response:
        raise ApiError(404, f"No route for {call.request.method} {call.request.path}.")

    async def _dispatch(self, request: web.Request, route: Route | None) -> web.StreamResponse:
        now = time.monotonic()
        raw = await request.read()
        body: Json | _Invalid = None
        if raw:
            text = raw.decode("utf-8", errors="replace")
            try:
                body = json.loads(text)
            except ValueError:
                body = _Invalid(text)
        key = self.identify(request)
        record = RequestRecord(
            method=request.method,
            path=request.path,
            route=route.template if route else None,
            query=dict(request.query),
            body=body.text if isinstance(body, _Invalid) else body,
            key=key,
            time=now,
            headers=redact_headers(request.headers),
        )
        self.requests.append(record)
        self.history.append(record)
        self._observe_rate(key, now)
        call = Call(request=request, route=record.route or "", body=body, key=key)

        delay = self.faults.latency + self.faults.take_slowdown(request.method)
        if delay > 0:
            await asyncio.sleep(delay)
        try:
            response = await self._answer(call, route, key)
        except ApiError as err:
            response = self._error_response(err)
        record.status = response.status

        if route is not None and route.contract and self.contract_checker is not None:
            self._check_contract(call, raw, response)

        hold = self.faults.take_hold(request.method)
        if hold is not None:
            hold.record = record
            hold.reached.set()
            await hold.wait_released()

        if self.faults.take_loss(request.method):
            record.lost = True
            # Abort rather than close: no bytes, no FIN handshake courtesy, just gone, so
            # the client sees a connection error while the server-side effect stands.
            if request.transport is not None:
                request.transport.abort()
        return response

    async def _answer(self, call: Call, route: Route | None, key: str | None) -> web.Response:
        failure = self.faults.take_failure()
        if failure is not None:
            raise ApiError(failure, f"Simulated {self.upstream_name} failure ({failure}).")
        throttle = self.faults.take_throttle()
        if throttle is not None:
            return self.rate_limited(throttle)
        if route is None:
            return await self._not_found(call)
        self.authenticate(call)
        wait = self._take_token(key or "", time.monotonic())
        if wait is not None:
            return self.rate_limited(wait)
        return await route.handler(call)

    def _error_response(self, err: ApiError) -> web.Response:
        return web.json_response(self.error_body(err.status, err.message), status=err.status, headers=err.headers)

    def _check_contract(self, call: Call, raw: bytes, response: web.Response) -> None:
        assert self.contract_checker is not None
        creq = self.contract_request(call, raw)
        if creq is None:
            return
        try:
            if 200 <= response.status < 300:
                # Only accepted requests: refused ones are refused precisely for breaking the rules.
                self.contract_violations.extend(self.contract_checker.check_request(creq))
            body = response.body if isinstance(response.body, bytes) else b""
            self.contract_violations.extend(
                self.contract_checker.check_response(
                    creq,
                    ContractResponse(
                        status=response.status,
                        body=body,
                        headers=dict(response.headers),
                        content_type=response.content_type,
                    ),
                )
            )
        except Exception as exc:  # a checker crash must surface in the test, not as a 500
            self.contract_violations.append(
                f"contract checker error on {call.request.method} {call.request.path}: {exc!r}"
            )


def _slide(window: deque[float], now: float) -> int:
    window.append(now)
    while window and window[0] <= now - 1.0:
        window.popleft()
    return len(window)
