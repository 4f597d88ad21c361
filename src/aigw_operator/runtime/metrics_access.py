"""Who may read /metrics: controller-runtime's secure metrics serving
(``filters.WithAuthenticationAndAuthorization``), through the Kubernetes API.

Each request's bearer token goes to a TokenReview (``authentication.k8s.io/v1``): no token, or
one the API server does not authenticate, is 401. The user it names then needs ``get`` (the
request's method, in lowercase) on the non-resource URL (the request's path, ``/metrics``)
through a SubjectAccessReview (``authorization.k8s.io/v1``): not allowed is 403. Both answers
are kept ``ttl`` seconds, the TokenReview's by the token's SHA-256 (never the token itself,
which is in no log and no message), so a scraper costs the API server at most one review of
each kind per period; concurrent requests with the same token wait on one review. A review
that fails (the API unreachable, the operator's RBAC missing) is not cached: 401 for a
TokenReview, 500 for a SubjectAccessReview, as controller-runtime answers.

The reviews run on the operator's event loop, with its own Kubernetes client; the metrics
server's threads wait for them (at most ``timeout`` seconds, then 500)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Hashable, Mapping
from typing import Any, TypeVar

from aigw_operator.kube.client import KubeClient

logger = logging.getLogger("aigw_operator.metrics")

T = TypeVar("T")

# Entries kept before the expired ones are swept: one per scraper in practice.
CACHE_SWEEP_SIZE = 1024


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (the scheme in any case)."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


class _Cache:
    """Answers by key for ``ttl`` seconds, one computation at a time per key (on one loop)."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._values: dict[Hashable, tuple[float, Any]] = {}
        self._pending: dict[Hashable, asyncio.Future[Any]] = {}

    async def get(self, key: Hashable, compute: Callable[[], Awaitable[T]]) -> T:
        now = time.monotonic()
        found = self._values.get(key)
        if found is not None and found[0] > now:
            value: T = found[1]
            return value
        pending = self._pending.get(key)
        if pending is not None:
            shared: T = await asyncio.shield(pending)
            return shared
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            result = await compute()
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: a waiter-less failure is not logged as unhandled
            raise
        else:
            future.set_result(result)
            if self.ttl > 0:
                if len(self._values) >= CACHE_SWEEP_SIZE:
                    self._values = {k: v for k, v in self._values.items() if v[0] > now}
                self._values[key] = (time.monotonic() + self.ttl, result)
            return result
        finally:
            del self._pending[key]


class MetricsAccess:
    """The metrics server's gate (``metrics.set_gate``): None to serve a request, else the refusal."""

    def __init__(
        self,
        client: KubeClient,
        loop: asyncio.AbstractEventLoop,
        *,
        ttl: float = 10.0,
        timeout: float = 10.0,
    ) -> None:
        self._client = client
        self._loop = loop
        self._timeout = timeout
        self._tokens = _Cache(ttl)
        self._decisions = _Cache(ttl)

    def __call__(self, method: str, path: str, authorization: str | None) -> tuple[int, str] | None:
        """From a server thread: wait for the decision made on the operator's loop."""
        token = bearer_token(authorization)
        if token is None:
            return 401, "Unauthorized"
        if self._loop.is_closed():
            return 503, "the operator has stopped"
        future = asyncio.run_coroutine_threadsafe(self.decide(token, method.lower(), path), self._loop)
        try:
            return future.result(self._timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            logger.error("No decision on a /metrics request within %ss", self._timeout)
            return 500, "Authorization timed out"
        except RuntimeError:  # the loop stopped while the decision was pending
            return 503, "the operator has stopped"

    async def decide(self, token: str, verb: str, path: str) -> tuple[int, str] | None:
        digest = token_hash(token)
        try:
            user = await self._tokens.get(digest, lambda: self._authenticate(token))
        except Exception as exc:
            logger.error("TokenReview for a /metrics request (token sha256 %s…) failed: %s", digest[:12], exc)
            return 401, "Authentication failed"
        if user is None:
            logger.debug("/metrics: a token (sha256 %s…) not authenticated", digest[:12])
            return 401, "Unauthorized"
        name = str(user.get("username") or "")
        key = (name, str(user.get("uid") or ""), tuple(user.get("groups") or ()), verb, path)
        try:
            allowed, reason = await self._decisions.get(key, lambda: self._authorize(user, verb, path))
        except Exception as exc:
            logger.error("SubjectAccessReview for %s on %s %s failed: %s", name, verb, path, exc)
            return 500, f"Authorization for user {name} failed"
        if not allowed:
            logger.debug("/metrics: %s may not %s %s: %s", name, verb, path, reason or "no reason given")
            return 403, f"Authorization denied for user {name}"
        return None

    async def _authenticate(self, token: str) -> Mapping[str, Any] | None:
        status = await self._client.review_token(token)
        if not status.get("authenticated"):
            return None
        user: Mapping[str, Any] = status.get("user") or {}
        return user

    async def _authorize(self, user: Mapping[str, Any], verb: str, path: str) -> tuple[bool, str]:
        status = await self._client.review_access(user, verb, path)
        return bool(status.get("allowed")) and not status.get("denied"), str(status.get("reason") or "")
