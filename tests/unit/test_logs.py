"""Log lines: JSON on request, with the object they are about, and never a key.

These tests leave process-wide logging as they found it: the whole session runs under one setup,
the operator's own (see ``pytest_sessionstart`` in conftest.py), so that the canary scan is as
strict for every test file whatever the order."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from aigw_operator.base import logs
from aigw_operator.base.logs import JsonFormatter
from aigw_operator.base.redaction import REDACTED, RedactingFilter, register_secret


@pytest.fixture
def pristine_logging() -> Iterator[None]:
    """Process-wide logging as a fresh ``aigw-operator run`` process finds it (no handler, no
    redaction), and the session's setup put back afterwards, whatever the test did."""
    root = logging.getLogger()
    httpx = logging.getLogger("httpx")
    saved = (list(root.handlers), root.level, httpx.level, logging.getLogRecordFactory())
    root.handlers[:] = []
    logging.setLogRecordFactory(logging.LogRecord)
    try:
        yield
    finally:
        root.handlers[:], level, httpx_level, factory = saved
        root.setLevel(level)
        httpx.setLevel(httpx_level)
        logging.setLogRecordFactory(factory)


def test_json_lines_carry_the_object_and_no_key() -> None:
    register_secret("json-canary-key-8842")
    # Built directly, not by a logger: the session's record factory would redact it already, and
    # this is about the handler-level filter alone (records built without the factory).
    record = logging.LogRecord(
        "aigw_operator.engine.reconcile",
        logging.WARNING,
        __file__,
        1,
        "GatewayEndpoint %s: refused with key %s",
        ("ns/glm", "json-canary-key-8842"),
        None,
    )
    record.__dict__.update(kind="GatewayEndpoint", namespace="ns", object_name="glm")
    assert "json-canary-key-8842" in record.getMessage()
    RedactingFilter().filter(record)
    line = json.loads(JsonFormatter().format(record))
    assert line["kind"] == "GatewayEndpoint" and line["namespace"] == "ns" and line["object_name"] == "glm"
    assert line["level"] == "WARNING"
    assert "json-canary-key-8842" not in json.dumps(line)


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_the_operators_setup_redacts_every_line(fmt: str, pristine_logging: None) -> None:
    """What ``aigw-operator run`` installs, on its own: a registered key, a credential the operator
    was never told about, and a key in a traceback are all masked, in both formats."""
    key = "setup-canary-key-5531"
    unregistered = "never-registered-token-77"
    register_secret(key)
    out = io.StringIO()
    handler = logs.configure("DEBUG", fmt, stream=out)
    assert logging.getLogger().handlers == [handler]
    log = logging.getLogger("aigw_operator.test_logs")
    log.info("using %s", key)
    log.debug("headers %s", {"Authorization": f"Bearer {unregistered}"})
    try:
        raise RuntimeError(f"refused: {key}")
    except RuntimeError:
        log.exception("call failed")
    text = out.getvalue()
    assert key not in text and unregistered not in text, text
    assert text.count(REDACTED) >= 3, text
    if fmt == "json":
        lines = [json.loads(line) for line in text.splitlines()]
        assert len(lines) == 3 and "RuntimeError" in lines[2]["exception"]
    else:
        assert "RuntimeError" in text


def test_the_session_logs_as_the_operator_does() -> None:
    """The canary scan watches the operator's own setup: one root handler from logs.configure (pytest
    adds its capture handlers beside it), every record redacted when it is made."""
    ours = [h for h in logging.getLogger().handlers if isinstance(h.formatter, JsonFormatter)]
    assert len(ours) == 1 and any(isinstance(f, RedactingFilter) for f in ours[0].filters)
    assert getattr(logging.getLogRecordFactory(), "_aigw_redacting", False)
