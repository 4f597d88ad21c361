"""The shared upstream transport against a real HTTP server on loopback, scripted per test."""

from __future__ import annotations

import asyncio
import email.utils
import logging
import pickle
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from aigw_operator.base import redaction
from aigw_operator.base.redaction import REDACTED, RedactingFilter, install_log_redaction, redact, register_secret
from aigw_operator.upstreams.http import (
    AccessDenied,
    Conflict,
    InvalidSpec,
    NotFound,
    RateLimited,
    Unavailable,
    UpstreamClient,
    UpstreamError,
    backoff_delay,
    credential_fingerprint,
    default_error_message,
    error_for_status,
    parse_retry_after,
)

Handler = Callable[[web.Request, int], Awaitable[web.StreamResponse]]
KEY = "sk-test-0123456789abcdef"
OTHER_KEY = "sk-other-fedcba9876543210"


@dataclass
class Seen:
    method: str
    path: str
    authorization: str | None
    at: float


@dataclass
class Scripted:
    """A loopback server whose answer to the n-th request (0-based) each test decides."""

    url: str
    seen: list[Seen] = field(default_factory=list)
    handler: Handler | None = None

    def script(self, handler: Handler) -> None:
        self.handler = handler

    def answers(self, *responses: tuple[int, Any, dict[str, str]]) -> None:
        """Answer in order; the last answer repeats."""

        async def handler(request: web.Request, n: int) -> web.StreamResponse:
            status, body, headers = responses[min(n, len(responses) - 1)]
            if isinstance(body, str):
                return web.Response(status=status, text=body, headers=headers)
            return web.json_response(body, status=status, headers=headers)

        self.handler = handler


@pytest.fixture
async def server() -> AsyncIterator[Scripted]:
    scripted = Scripted(url="")

    async def dispatch(request: web.Request) -> web.StreamResponse:
        n = len(scripted.seen)
        scripted.seen.append(Seen(request.method, request.path, request.headers.get("Authorization"), time.monotonic()))
        await request.read()
        assert scripted.handler is not None, "test did not script the server"
        return await scripted.handler(request, n)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", dispatch)
    test_server = TestServer(app, host="127.0.0.1")
    await test_server.start_server()
    scripted.url = str(test_server.make_url("/"))
    try:
        yield scripted
    finally:
        await test_server.close()


def make_client(base_url: str, **overrides: Any) -> UpstreamClient:
    options: dict[str, Any] = {
        "name": "test",
        "base_url": base_url,
        "auth_scheme": "Api-Key",
        "timeout": httpx.Timeout(0.3),
        "max_retries": 3,
        "backoff_base": 0.01,
        "backoff_cap": 0.05,
        "max_inline_retry_after": 5.0,
        "rate_limit_per_second": None,
    }
    options.update(overrides)
    return UpstreamClient(**options)


def ok(body: Any = None) -> tuple[int, Any, dict[str, str]]:
    return (200, body if body is not None else {"ok": True}, {})


@pytest.fixture
def record_factory() -> Iterator[None]:
    """Install log redaction for one test and put logging back as it was."""
    factory = logging.getLogRecordFactory()
    root_filters = {h: list(h.filters) for h in logging.getLogger().handlers}
    try:
        yield
    finally:
        logging.setLogRecordFactory(factory)
        for handler, filters in root_filters.items():
            handler.filters[:] = filters


# --- retries -----------------------------------------------------------------------------------


async def test_5xx_twice_then_success(server: Scripted) -> None:
    server.answers((500, {"error": "boom"}, {}), (502, "bad gateway", {}), ok({"id": "x"}))
    attempts: list[tuple[str, str, str, int | None, float]] = []
    retries: list[tuple[str, str, str, str, float]] = []
    async with make_client(
        server.url, observer=lambda *a: attempts.append(a), retry_observer=lambda *a: retries.append(a)
    ) as client:
        response = await client.request("GET", "/v1/things/abc", api_key=KEY, route="/v1/things/{id}")
    assert response.json() == {"id": "x"}
    assert len(server.seen) == 3
    assert [a[3] for a in attempts] == [500, 502, 200]
    assert all(a[:3] == ("test", "GET", "/v1/things/{id}") for a in attempts)
    assert [r[3] for r in retries] == ["server_error", "server_error"]
    assert server.seen[0].authorization == f"Api-Key {KEY}"


async def test_5xx_exhausted_is_unavailable(server: Scripted) -> None:
    server.answers((503, {"message": "down for maintenance"}, {}))
    async with make_client(server.url, max_retries=2) as client:
        with pytest.raises(Unavailable) as caught:
            await client.request("GET", "/x", api_key=KEY, route="/x")
    assert len(server.seen) == 3
    assert caught.value.status == 503
    assert caught.value.message == "down for maintenance"
    assert caught.value.outcome_unknown is False


async def test_post_5xx_not_retried_and_outcome_unknown(server: Scripted) -> None:
    server.answers((500, {"error": {"message": "internal"}}, {}), ok())
    async with make_client(server.url) as client:
        with pytest.raises(Unavailable) as caught:
            await client.request("POST", "/endpoints", api_key=KEY, route="/endpoints", json={"a": 1})
    assert len(server.seen) == 1
    assert caught.value.outcome_unknown is True
    assert caught.value.message == "internal"


async def test_idempotent_post_5xx_is_retried(server: Scripted) -> None:
    server.answers((500, "oops", {}), ok())
    async with make_client(server.url) as client:
        response = await client.request(
            "POST", "/v1/secrets", api_key=KEY, route="/v1/secrets", json={}, idempotent=True
        )
    assert response.status_code == 200
    assert len(server.seen) == 2


async def test_post_timeout_is_outcome_unknown_and_sent_once(server: Scripted) -> None:
    async def slow(request: web.Request, n: int) -> web.StreamResponse:
        await asyncio.sleep(0.5)
        return web.json_response({})

    server.script(slow)
    async with make_client(server.url, timeout=httpx.Timeout(0.15)) as client:
        with pytest.raises(Unavailable) as caught:
            await client.request("POST", "/endpoints", api_key=KEY, route="/endpoints", json={})
    assert caught.value.outcome_unknown is True
    assert caught.value.status is None
    assert "ReadTimeout" in caught.value.message
    # The httpx exception holds the request and its headers: it must not ride along.
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__ is True
    await asyncio.sleep(0.05)
    assert len(server.seen) == 1


async def test_post_dropped_after_sending_is_outcome_unknown_and_sent_once(server: Scripted) -> None:
    """The server takes the request and hangs up without an answer: it may have acted on it."""

    async def hang_up(request: web.Request, n: int) -> web.StreamResponse:
        assert request.transport is not None
        request.transport.close()
        await asyncio.sleep(0.05)
        return web.json_response({})

    server.script(hang_up)
    async with make_client(server.url) as client:
        with pytest.raises(Unavailable) as caught:
            await client.request("POST", "/endpoints", api_key=KEY, route="/endpoints", json={})
        assert caught.value.outcome_unknown is True
        assert len(server.seen) == 1
        # The same hang-up on a GET is retried (max_retries=3; aiohttp may add one more on a
        # reused connection): reading again is safe.
        with pytest.raises(Unavailable) as caught:
            await client.request("GET", "/endpoints", api_key=KEY, route="/endpoints")
        assert caught.value.outcome_unknown is False
        assert len(server.seen) >= 1 + 4


async def test_compressed_answer_is_decoded_once(server: Scripted) -> None:
    body = {"id": "abc", "padding": "x" * 4096}

    async def gzipped(request: web.Request, n: int) -> web.StreamResponse:
        response = web.json_response(body)
        response.enable_compression(web.ContentCoding.gzip)
        return response

    server.script(gzipped)
    async with make_client(server.url) as client:
        response = await client.request("GET", "/x", api_key=KEY, route="/x")
    assert response.headers["Content-Encoding"] == "gzip"
    assert response.json() == body


async def test_get_timeout_is_retried(server: Scripted) -> None:
    async def slow_once(request: web.Request, n: int) -> web.StreamResponse:
        if n == 0:
            await asyncio.sleep(0.4)
        return web.json_response({"n": n})

    server.script(slow_once)
    retries: list[str] = []
    async with make_client(
        server.url, timeout=httpx.Timeout(0.15), retry_observer=lambda *a: retries.append(a[3])
    ) as client:
        response = await client.request("GET", "/x", api_key=KEY, route="/x")
    assert response.json() == {"n": 1}
    assert len(server.seen) == 2
    assert retries == ["timeout"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_connection_refused_is_retried_for_any_method(method: str) -> None:
    attempts: list[int | None] = []
    retries: list[str] = []
    async with make_client(
        f"http://127.0.0.1:{_free_port()}",
        max_retries=2,
        observer=lambda *a: attempts.append(a[3]),
        retry_observer=lambda *a: retries.append(a[3]),
    ) as client:
        with pytest.raises(Unavailable) as caught:
            await client.request(method, "/x", api_key=KEY, route="/x", json={} if method == "POST" else None)
    assert attempts == [None, None, None]
    assert retries == ["connection", "connection"]
    # Never sent, so even a POST can be repeated safely.
    assert caught.value.outcome_unknown is False
    assert "ConnectError" in caught.value.message


async def test_backoff_is_capped(server: Scripted) -> None:
    assert all(backoff_delay(attempt, 10.0, 0.05) <= 0.05 for attempt in range(100))
    assert all(0.0 <= backoff_delay(2, 0.1, 10.0) <= 0.4 for _ in range(100))
    server.answers((500, "x", {}))
    delays: list[float] = []
    async with make_client(
        server.url,
        max_retries=4,
        backoff_base=10.0,
        backoff_cap=0.05,
        retry_observer=lambda *a: delays.append(a[4]),
    ) as client:
        started = time.monotonic()
        with pytest.raises(Unavailable):
            await client.request("GET", "/x", api_key=KEY, route="/x")
    assert time.monotonic() - started < 1.0
    assert len(delays) == 4
    assert all(0.0 <= d <= 0.05 for d in delays)


# --- error mapping -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, InvalidSpec),
        (401, AccessDenied),
        (403, AccessDenied),
        (404, NotFound),
        (409, Conflict),
        (418, InvalidSpec),
        (422, InvalidSpec),
    ],
)
async def test_status_mapping(server: Scripted, status: int, cls: type[UpstreamError]) -> None:
    server.answers((status, {"detail": f"said {status}"}, {}))
    async with make_client(server.url) as client:
        with pytest.raises(cls) as caught:
            await client.request("DELETE", "/models/m1", api_key=KEY, route="/models/{name}")
    assert type(caught.value) is cls
    assert len(server.seen) == 1  # 4xx are never retried
    exc = caught.value
    assert (exc.upstream, exc.status, exc.method, exc.route) == ("test", status, "DELETE", "/models/{name}")
    assert exc.message == f"said {status}"
    assert str(exc) == f"test DELETE /models/{{name}}: {status}: said {status}"


def test_error_for_status_pure() -> None:
    assert type(error_for_status("u", 500, "", method="GET", route="/")) is Unavailable
    assert type(error_for_status("u", 408, "", method="GET", route="/")) is Unavailable
    assert type(error_for_status("u", 302, "", method="GET", route="/")) is Unavailable
    limited = error_for_status("u", 429, "", method="GET", route="/", retry_after=3.0)
    assert isinstance(limited, RateLimited)
    assert limited.retry_after == 3.0
    # Errors cross process and copy boundaries intact.
    clone = pickle.loads(pickle.dumps(limited))
    assert (type(clone), clone.retry_after, str(clone)) == (RateLimited, 3.0, str(limited))


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"error": "duplicate slug", "retry_after": 3}, "duplicate slug"),  # Baseten
        # Together
        ({"error": {"message": "no such hardware", "type": "invalid_request"}}, "no such hardware"),
        (
            {"errorCode": "ERR_1", "statusCode": 409, "msg": "referenced by a key", "details": {}},
            "referenced by a key",
        ),  # ngrok
        ({"detail": "Admin API key required"}, "Admin API key required"),  # FastAPI
        (
            {"detail": [{"loc": ["body", "name"], "msg": "field required", "type": "missing"}]},
            "name: field required",
        ),  # FastAPI 422
        ("plain text failure", "plain text failure"),
        ({"unexpected": 1}, '{"unexpected":1}'),
    ],
)
def test_default_error_message(body: Any, expected: str) -> None:
    response = httpx.Response(400, text=body) if isinstance(body, str) else httpx.Response(400, json=body)
    assert default_error_message(response) == expected


async def test_message_truncated(server: Scripted) -> None:
    server.answers((400, {"error": "x" * 5000}, {}))
    async with make_client(server.url) as client:
        with pytest.raises(InvalidSpec) as caught:
            await client.request("GET", "/x", api_key=KEY, route="/x")
    assert len(caught.value.message) <= 500


async def test_custom_error_message_callback(server: Scripted) -> None:
    server.answers((400, {"code": "E1"}, {}))
    async with make_client(server.url, error_message=lambda r: f"code {r.json()['code']}") as client:
        with pytest.raises(InvalidSpec, match="code E1"):
            await client.request("GET", "/x", api_key=KEY, route="/x")


# --- 429 and rate limits -----------------------------------------------------------------------


async def test_429_retry_after_header_is_honoured(server: Scripted) -> None:
    server.answers((429, {"error": "slow down"}, {"Retry-After": "1"}), ok())
    retries: list[tuple[str, float]] = []
    async with make_client(server.url, retry_observer=lambda *a: retries.append((a[3], a[4]))) as client:
        response = await client.request("POST", "/endpoints", api_key=KEY, route="/endpoints", json={})
    assert response.status_code == 200
    assert len(server.seen) == 2  # a 429 was not processed: even a POST is retried
    assert server.seen[1].at - server.seen[0].at >= 1.0
    assert retries[0][0] == "rate_limited"
    assert retries[0][1] == pytest.approx(1.0, abs=0.05)


def _baseten_retry_after(response: httpx.Response) -> float | None:
    value = response.json().get("retry_after")
    return float(value) if value is not None else None


async def test_429_body_retry_after_larger_than_header_wins(server: Scripted) -> None:
    server.answers((429, {"error": "rate limited", "retry_after": 0.4}, {"Retry-After": "0.1"}), ok())
    async with make_client(server.url, retry_after_from_body=_baseten_retry_after) as client:
        await client.request("GET", "/x", api_key=KEY, route="/x")
    assert server.seen[1].at - server.seen[0].at >= 0.4


async def test_429_header_larger_than_body_wins(server: Scripted) -> None:
    server.answers((429, {"error": "rate limited", "retry_after": 0.05}, {"Retry-After": "0.3"}), ok())
    async with make_client(server.url, retry_after_from_body=_baseten_retry_after) as client:
        await client.request("GET", "/x", api_key=KEY, route="/x")
    assert server.seen[1].at - server.seen[0].at >= 0.3


async def test_429_without_hint_still_waits(server: Scripted) -> None:
    server.answers((429, "", {}), ok())
    async with make_client(server.url, backoff_base=0.1, backoff_cap=1.0) as client:
        await client.request("GET", "/x", api_key=KEY, route="/x")
    assert server.seen[1].at - server.seen[0].at >= 0.1


async def test_long_429_raises_and_blocks_the_credential(server: Scripted) -> None:
    server.answers((429, {"error": "rate limited", "retry_after": 37}, {}), ok())
    async with make_client(server.url, retry_after_from_body=_baseten_retry_after) as client:
        started = time.monotonic()
        with pytest.raises(RateLimited) as caught:
            await client.request("GET", "/x", api_key=KEY, route="/x")
        assert caught.value.retry_after == pytest.approx(37, abs=0.5)
        assert caught.value.status == 429
        # The same credential is refused without a request while the block lasts.
        with pytest.raises(RateLimited) as again:
            await client.request("GET", "/y", api_key=KEY, route="/y")
        assert 35 < again.value.retry_after <= 37
        assert time.monotonic() - started < 0.5
        assert len(server.seen) == 1
        # Another credential is not affected.
        response = await client.request("GET", "/z", api_key=OTHER_KEY, route="/z")
        assert response.status_code == 200
    assert len(server.seen) == 2


async def test_429_retries_exhausted(server: Scripted) -> None:
    server.answers((429, "", {"Retry-After": "0.05"}))
    async with make_client(server.url, max_retries=2) as client:
        with pytest.raises(RateLimited) as caught:
            await client.request("GET", "/x", api_key=KEY, route="/x")
    assert len(server.seen) == 3
    assert caught.value.retry_after == pytest.approx(0.05, abs=0.02)


async def test_one_429_holds_back_every_request_of_that_credential(server: Scripted) -> None:
    # Long enough that "the other key was not held" has a margin of a second over the one
    # loopback request it takes, even on a busy machine.
    retry_after = 1.0
    limited_at: list[float] = []

    async def first_limited(request: web.Request, n: int) -> web.StreamResponse:
        if n == 0:
            limited_at.append(time.monotonic())
            return web.json_response({"error": "rate"}, status=429, headers={"Retry-After": str(retry_after)})
        return web.json_response({"n": n})

    server.script(first_limited)
    saw_429 = asyncio.Event()

    def observer(upstream: str, method: str, route: str, status: int | None, seconds: float) -> None:
        if status == 429:
            saw_429.set()

    async with make_client(server.url, observer=observer) as client:
        first = asyncio.create_task(client.request("GET", "/a", api_key=KEY, route="/a"))
        await saw_429.wait()
        others = [client.request("GET", f"/b{i}", api_key=KEY, route="/b") for i in range(5)]
        other_key = await client.request("GET", "/c", api_key=OTHER_KEY, route="/c")
        # Served while the first key's hold still runs: if the hold were per client, not per
        # credential, this request could not have finished before the first one's retry.
        assert not first.done()
        results = await asyncio.gather(first, *others)
    assert all(r.status_code == 200 for r in results)
    assert other_key.status_code == 200
    assert len(server.seen) == 8
    held = [s for s in server.seen[1:] if s.authorization == f"Api-Key {KEY}"]
    assert len(held) == 6
    # A lower bound: load only delays requests further.
    assert all(s.at - limited_at[0] >= retry_after for s in held)
    unaffected = [s for s in server.seen if s.authorization == f"Api-Key {OTHER_KEY}"]
    # Held, it would arrive at or after limited_at + retry_after (like every request above):
    # before that is "not held", whatever the load (one request takes milliseconds, not 1 s).
    assert unaffected[0].at - limited_at[0] < retry_after
    assert unaffected[0].at < min(s.at for s in held)


async def test_client_side_rate_limit(server: Scripted) -> None:
    server.answers(ok())
    rate, n = 20.0, 7
    async with make_client(server.url, rate_limit_per_second=rate) as client:
        started = time.monotonic()
        await asyncio.gather(*(client.request("GET", "/x", api_key=KEY, route="/x") for _ in range(n)))
        elapsed = time.monotonic() - started
        # Burst 1: the first goes at once, each next one 1/rate later.
        assert elapsed >= (n - 1) / rate - 0.01
        # Each credential has its own bucket: a request of another key sent behind a second burst
        # of n on KEY. Sharing KEY's bucket (and its first-come lock), it would queue behind them
        # and arrive at least n/rate (0.35 s) after the burst's first; with its own it goes at
        # once. The bound, (n - 1)/rate, leaves 0.3 s for one loopback request, which load does
        # not eat; a slow machine only delays the burst, which widens the margin.
        burst = [client.request("GET", "/x", api_key=KEY, route="/x") for _ in range(n)]
        await asyncio.gather(*burst, client.request("GET", "/x", api_key=OTHER_KEY, route="/x"))
        # Buckets are keyed by a fingerprint, never the key.
        assert credential_fingerprint(KEY) in client._credentials
        assert KEY not in repr(client._credentials)
        assert KEY not in "".join(client._credentials)
    keyed = [hit for hit in server.seen if hit.authorization == f"Api-Key {KEY}"]
    [other] = [hit for hit in server.seen if hit.authorization == f"Api-Key {OTHER_KEY}"]
    assert other.at - keyed[n].at < (n - 1) / rate
    # The i-th request cannot arrive before i/rate after the first (arrival jitter does not add up).
    first = keyed[0].at
    assert all(hit.at - first >= i / rate - 0.02 for i, hit in enumerate(keyed[:n]))


def test_parse_retry_after() -> None:
    assert parse_retry_after("37") == 37.0
    assert parse_retry_after("0.5") == 0.5
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("nan") is None
    now = time.time()
    date = email.utils.formatdate(now + 5, usegmt=True)
    assert parse_retry_after(date, now=now) == pytest.approx(5, abs=1.0)
    assert parse_retry_after(email.utils.formatdate(now - 60, usegmt=True), now=now) == 0.0


# --- redaction ---------------------------------------------------------------------------------


async def test_secrets_never_reach_error_text_or_logs(
    server: Scripted, caplog: pytest.LogCaptureFixture, record_factory: None
) -> None:
    install_log_redaction()
    key = "sk-leaky-abcdef0123456789"
    unregistered = "tok-never-registered-42"
    server.answers(
        (
            400,
            {"error": f"invalid key {key}; request had Authorization: Bearer {unregistered}"},
            {},
        )
    )
    log = logging.getLogger("aigw_operator.test")
    async with make_client(server.url) as client:
        with pytest.raises(InvalidSpec) as caught:
            await client.request("GET", "/x", api_key=key, route="/x")
    exc = caught.value
    for text in (str(exc), repr(exc), exc.message, " ".join(map(str, exc.args))):
        assert key not in text
        assert unregistered not in text
        assert REDACTED in text
    with caplog.at_level(logging.DEBUG):
        log.error("call failed: %s", exc)
        log.info("using %s", key)
        log.info("headers %s", {"Authorization": f"Api-Key {key}"})
        try:
            raise RuntimeError(f"boom with {key}")
        except RuntimeError:
            log.exception("crashed")
    assert key not in caplog.text
    assert unregistered not in caplog.text
    assert caplog.text.count(REDACTED) >= 4
    assert all(key not in r.getMessage() for r in caplog.records)


async def test_timeout_error_text_has_no_header(server: Scripted) -> None:
    async def slow(request: web.Request, n: int) -> web.StreamResponse:
        await asyncio.sleep(0.3)
        return web.json_response({})

    server.script(slow)
    async with make_client(server.url, timeout=httpx.Timeout(0.1), max_retries=0) as client:
        with pytest.raises(Unavailable) as caught:
            await client.request("GET", "/x", api_key=KEY, route="/x")
    assert KEY not in str(caught.value)
    assert "Authorization" not in str(caught.value)
    assert caught.value.__cause__ is None


def test_redact_patterns_and_registry() -> None:
    register_secret("long-secret-value-1\n")
    assert redact("x long-secret-value-1 y") == f"x {REDACTED} y"
    assert redact("prefixlong-secret-value-1suffix") == f"prefix{REDACTED}suffix"
    assert redact("Authorization: Api-Key abc.def") == f"Authorization: {REDACTED}"
    assert redact("{'authorization': 'Bearer xyz'}") == f"{{'authorization': '{REDACTED}'}}"
    assert redact("sent bearer abc123 today") == f"sent bearer {REDACTED} today"
    assert redact("header Api-Key qwerty") == f"header Api-Key {REDACTED}"
    assert redact('{"api_key": "sk-1", "model": "gpt"}') == f'{{"api_key": "{REDACTED}", "model": "gpt"}}'
    assert redact("api_key is required") == "api_key is required"
    once = redact("Authorization: Bearer tok")
    assert redact(once) == once


def test_short_secrets_only_redacted_as_whole_tokens() -> None:
    register_secret("kiwi7")
    assert redact("key kiwi7 used") == f"key {REDACTED} used"
    assert redact("kiwi77 and xkiwi7 stay") == "kiwi77 and xkiwi7 stay"
    register_secret("")
    register_secret("   ")
    assert redact("nothing to hide") == "nothing to hide"


def test_redacting_filter_on_a_handler() -> None:
    register_secret("filter-secret-987654")
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "a %s b", ("filter-secret-987654",), None)
    assert RedactingFilter().filter(record) is True
    assert record.getMessage() == f"a {REDACTED} b"
    assert record.args is None


def test_install_is_idempotent(record_factory: None) -> None:
    handler = logging.StreamHandler()
    logging.getLogger().addHandler(handler)
    try:
        install_log_redaction()
        factory = logging.getLogRecordFactory()
        install_log_redaction()
        assert logging.getLogRecordFactory() is factory
        assert sum(isinstance(f, RedactingFilter) for f in handler.filters) == 1
        assert getattr(factory, "_aigw_redacting", False)
    finally:
        logging.getLogger().removeHandler(handler)
    assert redaction.MIN_SUBSTRING_LENGTH == 8


# ---------------------------------------------------------------------------- proxies


async def test_the_proxy_from_the_environment_is_used_and_no_proxy_bypasses_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """HTTP(S)_PROXY and NO_PROXY are honoured as httpx would, though read once per transport."""
    from aigw_operator.base.transport import AiohttpTransport

    requested: list[str] = []

    async def proxy(request: web.Request) -> web.Response:
        requested.append(str(request.url))
        return web.json_response({"via": "proxy"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", proxy)
    server = TestServer(app)
    await server.start_server()
    try:
        proxy_url = f"http://127.0.0.1:{server.port}"
        monkeypatch.setenv("HTTP_PROXY", proxy_url)
        monkeypatch.setenv("NO_PROXY", "internal.test,.corp.test")
        for variable in ("http_proxy", "no_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.delenv(variable, raising=False)
        async with httpx.AsyncClient(transport=AiohttpTransport()) as client:
            response = await client.get("http://api.upstream.test/v1/things")
            assert response.json() == {"via": "proxy"}
            assert requested == ["http://api.upstream.test/v1/things"], "sent to the proxy, for the upstream's URL"
            with pytest.raises(httpx.ConnectError):
                # Bypassed: sent directly, and nothing answers for that name here.
                await client.get("http://models.corp.test/v1/things", timeout=2)
            assert len(requested) == 1
    finally:
        await server.close()
