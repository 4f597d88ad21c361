"""The transport every upstream client shares: timeouts, retries, Retry-After, rate limits, errors.

Retry policy, in one place so that every adapter behaves alike:

* 5xx, 408, timeouts and connection errors are retried with capped exponential backoff and full
  jitter, but only for requests that are safe to repeat: GET, HEAD, OPTIONS, PUT and DELETE, and
  POST/PATCH when the caller passes ``idempotent=True``.
* A connection that failed before the request was sent (connect error, connect timeout, pool
  timeout) is retried for every method: the server never saw it.
* A POST/PATCH that may have reached the server (timeout or lost response after sending, or a 5xx)
  raises ``Unavailable(outcome_unknown=True)`` at once. Together bills every endpoint a repeated
  POST creates, so the caller must look for the object before it posts again.
* 429 is retried for every method (a 429 was not processed), never sooner than the larger of the
  ``Retry-After`` header and the body's ``retry_after``. Every request with the same credential
  waits for that moment, so concurrent reconciles do not stampede. A wait longer than
  ``max_inline_retry_after`` is not slept: ``RateLimited`` goes up so the caller can requeue.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import logging
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import httpx

from aigw_operator.base.redaction import redact, register_secret
from aigw_operator.base.transport import AiohttpTransport

__all__ = [
    "AccessDenied",
    "AttemptObserver",
    "Conflict",
    "InvalidSpec",
    "NotFound",
    "RateLimited",
    "RetryObserver",
    "Unavailable",
    "UpstreamClient",
    "UpstreamError",
    "default_error_message",
    "error_for_status",
    "parse_retry_after",
]

logger = logging.getLogger(__name__)

MAX_MESSAGE_LENGTH = 500
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})

# (upstream, method, route, status or None for a transport error, seconds): once per HTTP attempt.
AttemptObserver = Callable[[str, str, str, int | None, float], None]
# (upstream, method, route, reason, delay seconds): once per retry or 429 wait, before sleeping.
# reason is one of "server_error", "timeout", "connection", "rate_limited".
RetryObserver = Callable[[str, str, str, str, float], None]


def _clean(message: str) -> str:
    # Redact before truncating: a cut could leave half a key that no longer matches the registry.
    text = redact(message).strip()
    if len(text) > MAX_MESSAGE_LENGTH:
        text = text[: MAX_MESSAGE_LENGTH - 3].rstrip() + "..."
    return text


class UpstreamError(Exception):
    """An upstream call failed. Every field is safe to log, put in a condition or an Event."""

    # The condition reason a subclass stands for, where it is more precise than its class's.
    reason: str | None = None

    def __init__(
        self,
        upstream: str,
        status: int | None,
        message: str,
        *,
        method: str,
        route: str,
    ) -> None:
        self.upstream = upstream
        self.status = status
        self.message = _clean(message)
        self.method = method
        self.route = route
        super().__init__(self.message)

    def __str__(self) -> str:
        status = self.status if self.status is not None else "no response"
        text = f"{self.upstream} {self.method} {self.route}: {status}"
        return f"{text}: {self.message}" if self.message else text

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickle through __dict__: the default would call __init__ with args=(message,) and fail.
        return (_rebuild, (type(self), self.__dict__.copy()))


def _rebuild(cls: type[UpstreamError], state: dict[str, Any]) -> UpstreamError:
    exc = cls.__new__(cls)
    exc.__dict__.update(state)
    exc.args = (state.get("message", ""),)
    return exc


class InvalidSpec(UpstreamError):
    """400, 422 and other 4xx: the request is wrong and repeating it will not help."""


class AccessDenied(UpstreamError):
    """401, 403: the credential is missing, wrong, or lacks the scope."""


class NotFound(UpstreamError):
    """404."""


class Conflict(UpstreamError):
    """409: name taken, or (ngrok) deletion blocked by a reference."""


class RateLimited(UpstreamError):
    """429 whose wait is longer than the client sleeps inline, or retries ran out."""

    def __init__(
        self,
        upstream: str,
        status: int | None,
        message: str,
        *,
        method: str,
        route: str,
        retry_after: float,
    ) -> None:
        super().__init__(upstream, status, message, method=method, route=route)
        self.retry_after = retry_after


class Unavailable(UpstreamError):
    """5xx, 408, timeout or connection error.

    ``outcome_unknown`` is True when a request that is not safe to repeat may have reached the
    server (it may have been carried out). ``retry_after`` is the server's hint, when it gave one.
    """

    def __init__(
        self,
        upstream: str,
        status: int | None,
        message: str,
        *,
        method: str,
        route: str,
        outcome_unknown: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(upstream, status, message, method=method, route=route)
        self.outcome_unknown = outcome_unknown
        self.retry_after = retry_after


def error_for_status(
    upstream: str,
    status: int,
    message: str,
    *,
    method: str,
    route: str,
    retry_after: float | None = None,
    outcome_unknown: bool = False,
) -> UpstreamError:
    """Map a non-2xx status to its error class (pure; the transport and tests share it)."""
    kwargs: dict[str, Any] = {"method": method, "route": route}
    if status in (401, 403):
        return AccessDenied(upstream, status, message, **kwargs)
    if status == 404:
        return NotFound(upstream, status, message, **kwargs)
    if status == 409:
        return Conflict(upstream, status, message, **kwargs)
    if status == 429:
        return RateLimited(upstream, status, message, retry_after=retry_after or 0.0, **kwargs)
    if status == 408 or status >= 500:
        return Unavailable(
            upstream, status, message, outcome_unknown=outcome_unknown, retry_after=retry_after, **kwargs
        )
    if 400 <= status < 500:
        return InvalidSpec(upstream, status, message, **kwargs)
    # 1xx/3xx (redirects are not followed): a misconfigured base URL, nothing was carried out.
    return Unavailable(upstream, status, message or f"unexpected HTTP {status}", **kwargs)


def default_error_message(response: httpx.Response) -> str:
    """The human part of an error body, for every shape our upstreams use.

    Baseten ``{"error": "..."}``, Together ``{"error": {"message": ...}}``, ngrok ``{"msg": ...}``,
    FastAPI ``{"detail": "..."}`` or ``{"detail": [{"loc": [...], "msg": ...}]}``; else the raw text.
    """
    try:
        body = response.json()
    except ValueError:
        return response.text
    found = _message_from(body)
    return found if found else response.text


def _message_from(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        for key in ("error", "message", "msg", "detail"):
            if key in value:
                found = _message_from(value[key])
                if found:
                    return found
        return None
    if isinstance(value, list):
        parts = []
        for item in value:
            if isinstance(item, dict) and "msg" in item:
                loc = ".".join(str(p) for p in item.get("loc", []) if p != "body")
                parts.append(f"{loc}: {item['msg']}" if loc else str(item["msg"]))
            else:
                found = _message_from(item)
                if found:
                    parts.append(found)
        return "; ".join(parts) or None
    return None


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def backoff_delay(attempt: int, base: float, cap: float) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**attempt)]."""
    ceiling = min(cap, base * (2.0 ** min(attempt, 62)))
    return random.uniform(0.0, ceiling)


def credential_fingerprint(api_key: str | None) -> str:
    """A stable name for a credential that can be kept in memory and metrics without the key."""
    if not api_key:
        return "anonymous"
    return hashlib.sha256(api_key.encode()).hexdigest()[:16]


class _TokenBucket:
    """A token is taken only when there is one at the moment of sending.

    (Reserving future slots instead lets every request whose slot passed during a stall,
    such as a 429 block, go out at once, and wastes the slots of requests that then wait
    out the block.)
    """

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.updated = time.monotonic()

    def take(self) -> float:
        """0 and a token taken, or the seconds until there is one (nothing taken)."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


@dataclass
class _Credential:
    bucket: _TokenBucket | None
    blocked_until: float = 0.0  # time.monotonic() before which no request may be sent
    # Callers wait for their turn in order, one at a time: first the block, then a token.
    turn: asyncio.Lock = field(default_factory=asyncio.Lock)


# Errors raised before any byte of the request left this process.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# Misconfiguration (bad base URL, invalid header): repeating cannot help.
_NOT_RETRYABLE = (httpx.UnsupportedProtocol, httpx.LocalProtocolError)


class UpstreamClient:
    """One per upstream: a pooled ``httpx.AsyncClient`` plus the retry and rate-limit policy."""

    def __init__(
        self,
        *,
        name: str,
        base_url: str,
        auth_scheme: str = "Bearer",
        timeout: float | httpx.Timeout = 10.0,
        max_retries: int = 3,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        max_inline_retry_after: float = 30.0,
        rate_limit_per_second: float | None = None,
        rate_limit_burst: float = 1.0,
        error_message: Callable[[httpx.Response], str] | None = None,
        retry_after_from_body: Callable[[httpx.Response], float | None] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        extra_headers: Mapping[str, str] | None = None,
        observer: AttemptObserver | None = None,
        retry_observer: RetryObserver | None = None,
        max_connections: int = 16,
    ) -> None:
        if rate_limit_per_second is not None and rate_limit_per_second <= 0:
            raise ValueError("rate_limit_per_second must be positive or None")
        self.name = name
        self.auth_scheme = auth_scheme
        self.max_retries = max(0, max_retries)
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.max_inline_retry_after = max_inline_retry_after
        self.rate_limit_per_second = rate_limit_per_second
        self.rate_limit_burst = max(1.0, rate_limit_burst)
        self._error_message = error_message or default_error_message
        self._retry_after_from_body = retry_after_from_body
        self._observer = observer
        self._retry_observer = retry_observer
        self._credentials: dict[str, _Credential] = {}
        self._client = httpx.AsyncClient(
            base_url=base_url,
            timeout=timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout),
            transport=transport or AiohttpTransport(max_connections=max_connections),
            headers=dict(extra_headers or {}),
            follow_redirects=False,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        api_key: str | None,
        route: str,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
    ) -> httpx.Response:
        """Send one logical request, retrying per the module's policy; return the 2xx response.

        ``route`` is the path template (``/v1/gateway/endpoints/{id}``): errors, logs and the
        observers carry it, never the URL.
        """
        method = method.upper()
        safe = method in SAFE_METHODS if idempotent is None else idempotent
        request_headers: dict[str, str] = dict(headers or {})
        if api_key:
            register_secret(api_key)
            request_headers["Authorization"] = f"{self.auth_scheme} {api_key}"
        credential = self._credential(api_key)

        attempt = 0
        while True:
            await self._acquire(credential, method, route)
            started = time.monotonic()
            try:
                response = await self._client.request(method, path, json=json, params=params, headers=request_headers)
            except httpx.RequestError as exc:
                self._observe(method, route, None, time.monotonic() - started)
                sent = not isinstance(exc, _NOT_SENT)
                description = f"{type(exc).__name__}: {exc}".rstrip(": ")
                retryable = (not sent or safe) and not isinstance(exc, _NOT_RETRYABLE)
                if retryable and attempt < self.max_retries:
                    reason = "timeout" if isinstance(exc, httpx.TimeoutException) else "connection"
                    await self._sleep_before_retry(method, route, reason, attempt, None)
                    attempt += 1
                    continue
                # from None: the httpx exception holds the request, and with it the headers.
                raise Unavailable(
                    self.name,
                    None,
                    description,
                    method=method,
                    route=route,
                    outcome_unknown=sent and not safe,
                ) from None

            self._observe(method, route, response.status_code, time.monotonic() - started)
            status = response.status_code
            if 200 <= status < 300:
                return response

            if status == 429:
                wait = self._rate_limit_wait(response, attempt)
                now = time.monotonic()
                credential.blocked_until = max(credential.blocked_until, now + wait)
                remaining = credential.blocked_until - now
                if remaining > self.max_inline_retry_after or attempt >= self.max_retries:
                    raise self._error(response, method, route, retry_after=remaining)
                self._notify_retry(method, route, "rate_limited", remaining)
                logger.debug("%s %s %s: 429, waiting %.2fs", self.name, method, route, remaining)
                attempt += 1
                continue  # _acquire sleeps until blocked_until

            if status == 408 or status >= 500:
                hint = parse_retry_after(response.headers.get("Retry-After"))
                if safe and attempt < self.max_retries and (hint or 0.0) <= self.max_inline_retry_after:
                    await self._sleep_before_retry(method, route, "server_error", attempt, hint)
                    attempt += 1
                    continue
                raise self._error(response, method, route, retry_after=hint, outcome_unknown=not safe)

            raise self._error(response, method, route)

    def _credential(self, api_key: str | None) -> _Credential:
        fingerprint = credential_fingerprint(api_key)
        credential = self._credentials.get(fingerprint)
        if credential is None:
            bucket = (
                _TokenBucket(self.rate_limit_per_second, self.rate_limit_burst) if self.rate_limit_per_second else None
            )
            credential = self._credentials[fingerprint] = _Credential(bucket=bucket)
        return credential

    async def _acquire(self, credential: _Credential, method: str, route: str) -> None:
        """Wait until this credential may send: past any 429 block, then a token from the bucket."""
        async with credential.turn:
            while True:
                remaining = credential.blocked_until - time.monotonic()
                if remaining > 0:
                    if remaining > self.max_inline_retry_after:
                        raise RateLimited(
                            self.name,
                            429,
                            f"credential rate limited by an earlier 429 for another {remaining:.1f}s",
                            method=method,
                            route=route,
                            retry_after=remaining,
                        )
                    await asyncio.sleep(remaining)
                    continue
                delay = credential.bucket.take() if credential.bucket is not None else 0.0
                if delay <= 0:
                    return
                await asyncio.sleep(delay)

    def _rate_limit_wait(self, response: httpx.Response, attempt: int) -> float:
        hints = [parse_retry_after(response.headers.get("Retry-After"))]
        if self._retry_after_from_body is not None:
            try:
                hints.append(self._retry_after_from_body(response))
            except Exception:
                logger.debug("%s: could not read retry_after from the 429 body", self.name)
        given = [h for h in hints if h is not None and math.isfinite(h) and h >= 0]
        if given:
            return max(given)
        # No hint: back off without jitter, so the wait still grows and is never zero.
        return min(self.backoff_cap, self.backoff_base * (2.0 ** min(attempt, 62)))

    async def _sleep_before_retry(self, method: str, route: str, reason: str, attempt: int, hint: float | None) -> None:
        delay = backoff_delay(attempt, self.backoff_base, self.backoff_cap)
        if hint is not None:
            delay = max(delay, hint)
        self._notify_retry(method, route, reason, delay)
        logger.debug("%s %s %s: %s, retrying in %.2fs", self.name, method, route, reason, delay)
        await asyncio.sleep(delay)

    def _error(
        self,
        response: httpx.Response,
        method: str,
        route: str,
        *,
        retry_after: float | None = None,
        outcome_unknown: bool = False,
    ) -> UpstreamError:
        try:
            message = self._error_message(response)
        except Exception:
            message = response.text
        return error_for_status(
            self.name,
            response.status_code,
            message,
            method=method,
            route=route,
            retry_after=retry_after,
            outcome_unknown=outcome_unknown,
        )

    def _observe(self, method: str, route: str, status: int | None, seconds: float) -> None:
        if self._observer is None:
            return
        try:
            self._observer(self.name, method, route, status, seconds)
        except Exception:
            # Metrics must never break a reconcile.
            logger.exception("%s: attempt observer failed", self.name)

    def _notify_retry(self, method: str, route: str, reason: str, delay: float) -> None:
        if self._retry_observer is None:
            return
        try:
            self._retry_observer(self.name, method, route, reason, delay)
        except Exception:
            logger.exception("%s: retry observer failed", self.name)
