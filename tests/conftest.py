"""What every test shares: the operator's own logging setup scanning every line for the suite's
keys (canaries), the session's summary lines, and small helpers. The operator's harness (emulator,
simulators, the operator in-process) is tests/operator/conftest.py."""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import io
import logging
import os
import threading
import time
import traceback
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from aigw_operator.base import logs

REPO = Path(__file__).resolve().parents[1]
API_KEY = "bt-test-key-4d1c9a"
NGROK_KEY = "ngrok-test-key-93be11"
REGISTRY_KEY = "registry-admin-key-5521ab"
OPENAI_KEY = "sk-canary-openai-key-0f3e9d"
TOGETHER_KEY = "together-test-key-6c02d4"


# Every key the suite uses is a canary: none may appear in any log line of the whole run, nor in
# any Event or custom resource, as it is or base64-encoded (as a Secret's data holds it).
CANARIES = (
    API_KEY,
    NGROK_KEY,
    REGISTRY_KEY,
    OPENAI_KEY,
    TOGETHER_KEY,
    "bt-rotated-key-77aa01",
    "sk-rotated-key-123456",
    "sk-backup-value-77",
)


_CANARY_FORMS = tuple((c, (c, base64.b64encode(c.encode()).decode())) for c in CANARIES)


def _keys_in(text: str) -> list[str]:
    """The canaries in ``text`` (plain or base64), abridged to their first six characters."""
    return [canary[:6] for canary, forms in _CANARY_FORMS if any(form in text for form in forms)]


def _abridged(text: str) -> str:
    """``text`` with each canary cut to its first six characters, for the report."""
    for _, forms in _CANARY_FORMS:
        for form in forms:
            text = text.replace(form, form[:6] + "...")
    return text[:300]


class _CanaryStream(io.TextIOBase):
    """The stream of the session's one log handler, the operator's own (``logs.configure``): it gets
    every record as the pod log would, formatted and redacted, and scans it instead of printing it."""

    def __init__(self) -> None:
        super().__init__()
        self.lines = 0
        self.leaks: list[str] = []

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        # logging.StreamHandler writes a record and its terminator in one call, under its lock.
        self.lines += 1
        if _keys_in(text):
            self.leaks.append(_abridged(text))
        return len(text)


class _RawRecords:
    """Every record as the code made it, before redaction: the record factory that the redacting
    one wraps. A key here reached a log call, and only the redaction kept it out of the log."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.records = 0
        self.leaks: list[str] = []

    def factory(self, inner: Callable[..., logging.LogRecord]) -> Callable[..., logging.LogRecord]:
        def make(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = inner(*args, **kwargs)
            self.check(record)
            return record

        return make

    def check(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # a broken format string: its pieces, as the redaction sees them
            text = f"{record.msg} {record.args}"
        if record.exc_info and record.exc_info[1] is not None:
            text += "".join(traceback.format_exception(record.exc_info[1]))
        if record.stack_info:
            text += record.stack_info
        leaked = _keys_in(text)
        with self.lock:
            self.records += 1
            if leaked:
                self.leaks.append(f"{record.name}: {_abridged(text)}")


_log_stream = _CanaryStream()
_raw_records = _RawRecords()
# The session's logging setup (set in pytest_sessionstart): its handler and record factory.
_session_logging: dict[str, Any] = {}
# The operator's most verbose level, in the chart's default format (deploy/helm values.yaml).
SESSION_LOG_LEVEL, SESSION_LOG_FORMAT = "DEBUG", "json"

# One line per reliability area (fault matrix, bad inputs, load, security), printed at the end.
_summaries: dict[str, str] = {}
# Events and custom resources scanned for canary keys before each test's teardown.
_scanned: collections.Counter[str] = collections.Counter()
# Namespaces deleted, resources finalized by the operator at teardown, and those it had not
# released in time (or that no running operator was left to release), stripped of their finalizer.
_teardown_counts: collections.Counter[str] = collections.Counter()


def record_summary(area: str, line: str) -> None:
    """Set the summary line the session prints for ``area`` (the last call per area wins)."""
    _summaries[area] = line


def pytest_sessionstart(session: pytest.Session) -> None:
    """One logging setup for every test, installed once: the operator's own, as ``aigw-operator run``
    installs it (``logs.configure``: one root handler, redaction of every record), at DEBUG, writing
    to the canary stream. Under the redaction, ``_raw_records`` sees each record as it was made."""
    assert not getattr(logging.getLogRecordFactory(), "_aigw_redacting", False), "redaction installed too early"
    logging.setLogRecordFactory(_raw_records.factory(logging.getLogRecordFactory()))
    _session_logging["handler"] = logs.configure(SESSION_LOG_LEVEL, SESSION_LOG_FORMAT, stream=_log_stream)
    _session_logging["factory"] = logging.getLogRecordFactory()
    # cel-python traces every evaluation step at DEBUG: no keys there, only a slowdown.
    logging.getLogger("celpy").setLevel(logging.WARNING)
    # The pipeline works: a record reaches the raw check and the stream. Not counted.
    lines, records = _log_stream.lines, _raw_records.records
    logging.getLogger("aigw_operator.tests").info("canary scan: logging set up")
    assert (_log_stream.lines, _raw_records.records) == (lines + 1, records + 1), "the canary scan sees no log"
    _log_stream.lines, _raw_records.records = lines, records


def _logging_changes() -> list[str]:
    """How process-wide logging differs from the session's setup (pytest's own handlers aside)."""
    root = logging.getLogger()
    changes = []
    if _session_logging["handler"] not in root.handlers:
        changes.append("the session's log handler is no longer on the root logger")
    if logging.getLogRecordFactory() is not _session_logging["factory"]:
        changes.append("the log record factory was replaced")
    if root.level != logging.getLevelName(SESSION_LOG_LEVEL):
        changes.append(f"the root logger's level is {logging.getLevelName(root.level)}")
    return changes


def _restore_logging() -> None:
    root = logging.getLogger()
    if _session_logging["handler"] not in root.handlers:
        root.addHandler(_session_logging["handler"])
    logging.setLogRecordFactory(_session_logging["factory"])
    root.setLevel(SESSION_LOG_LEVEL)


@pytest.fixture(autouse=True)
def _one_logging_setup() -> Iterator[None]:
    """Every test runs under the session's logging setup and leaves it as it found it: a test
    that changes it fails (and the setup is put back), or the scan's strength would depend on
    the order of the tests."""
    yield
    changes = _logging_changes()
    if changes:
        _restore_logging()
    assert not changes, "the test changed process-wide logging: " + "; ".join(changes)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    changes = _logging_changes() if _session_logging else ["the session's logging setup was never installed"]
    objects = sum(_scanned[k] for k in ("event_writes", "resource_writes", "events", "resources"))
    empty = []
    if _scanned["operators"] and not _log_stream.lines:
        empty.append("no log line")
    if _scanned["operators"] and not objects:
        empty.append("no Event or custom resource")
    if os.environ.get("AIGW_TEST_KUBECONFIG"):
        api = f"{_scanned['events']} Events and {_scanned['resources']} custom resources listed before teardowns"
    else:
        api = (
            f"{_scanned['event_writes']} Event, {_scanned['resource_writes']} custom resource and "
            f"{_scanned['configmap_writes']} ConfigMap writes (each write)"
        )
    summary = (
        f"canary keys: {len(_log_stream.leaks)} leaks in {_log_stream.lines} log lines ({SESSION_LOG_FORMAT}, "
        f"{SESSION_LOG_LEVEL}, redacted, as the pod log holds them), {len(_raw_records.leaks)} in "
        f"{_raw_records.records} log records before redaction; {_scanned['leaks']} in {api}, statuses included; "
        f"{_scanned['operators']} operators run"
    )
    teardown = (
        f"teardown: {_teardown_counts['namespaces']} namespaces deleted; {_teardown_counts['released']} resources "
        f"released by the operator, {_teardown_counts['stripped']} stripped of their finalizer"
    )
    problems = [f"LEAK in the log: {leak}" for leak in _log_stream.leaks[:20]]
    problems += [f"LEAK to a log call (redacted in the log): {leak}" for leak in _raw_records.leaks[:20]]
    if _scanned["leaks"]:
        problems.append(f"LEAK to the Kubernetes API: {_scanned['leaks']} (see the failed tests)")
    problems += [f"CANARY SCAN: {change}: later log lines were not scanned" for change in changes]
    if empty:
        problems.append(f"CANARY SCAN scanned {' and '.join(empty)} although {_scanned['operators']} operators ran")
    if reporter is not None:
        for area, line in sorted(_summaries.items()):
            reporter.write_line(f"{area}: {line}")
        reporter.write_line(summary)
        reporter.write_line(teardown)
        for problem in problems:
            reporter.write_line(problem)
    if problems:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@contextlib.asynccontextmanager
async def sampling(sample: Callable[[], Any], every: float = 0.02) -> AsyncIterator[list[tuple[float, Any]]]:
    """Call ``sample`` every ``every`` seconds in the background while the block runs."""
    samples: list[tuple[float, Any]] = []
    stop = asyncio.Event()

    async def loop() -> None:
        while not stop.is_set():
            samples.append((time.monotonic(), sample()))
            await asyncio.sleep(every)

    task = asyncio.create_task(loop())
    try:
        yield samples
    finally:
        stop.set()
        await task
        samples.append((time.monotonic(), sample()))
