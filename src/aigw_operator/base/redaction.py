"""Keep API keys out of error text and logs.

Two layers, because neither is enough alone:

* a process-wide registry of known secret values (every key the operator loads is registered before
  it is used), replaced wherever they occur;
* patterns for credentials we were never told about: ``Authorization: <scheme> <token>``,
  ``Bearer <token>``, ``Api-Key <token>`` and ``api_key: <token>``-style fields (the model registry
  echoes ``api_key`` in its bodies).

Short values (fewer than ``MIN_SUBSTRING_LENGTH`` characters) are registered but only redacted where
they stand as a whole token, not inside longer words: a 4-character key such as ``test`` would
otherwise shred "latest" and "testing" in every log line, while a key that short is a misconfiguration
worth seeing rather than hiding everywhere. A short key that is itself a common word is still
redacted where that word stands alone; over-redacting a log line costs little, leaking costs a lot.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from typing import Any

__all__ = [
    "MIN_SUBSTRING_LENGTH",
    "REDACTED",
    "RedactingFilter",
    "install_log_redaction",
    "redact",
    "register_secret",
]

REDACTED = "[REDACTED]"
MIN_SUBSTRING_LENGTH = 8

# Characters that make up a token; a short secret only matches when not flanked by one of them.
_TOKEN_CHARS = r"A-Za-z0-9_\-.~+/="
_TOKEN = r"""[^\s"',;}\]\)]+"""

_AUTH_HEADER = re.compile(
    r"""(?i)(\bauthorization["']?\s*[:=]\s*["']?)(?:[A-Za-z][\w-]*\s+)?+(?!\[REDACTED\])""" + _TOKEN,
)
_SCHEME_TOKEN = re.compile(r"(?i)(\b(?:bearer|api-key)\s+)(?!\[REDACTED\])" + _TOKEN)
_KEY_FIELD = re.compile(
    r"""(?i)(\b(?:x-)?(?:api[-_]?key|apikey|password|client[-_]?secret)["']?\s*[:=]\s*["']?)"""
    r"(?!\[REDACTED\])" + _TOKEN,
)


class _Registry:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.secrets: set[str] = set()
        # Rebuilt under the lock on registration and read without it: redact() takes the pair of
        # references once, and rebinding an attribute is atomic.
        self.patterns: tuple[re.Pattern[str] | None, re.Pattern[str] | None] = (None, None)


_registry = _Registry()


def _alternation(values: list[str]) -> str:
    # Longest first so that a secret containing another registered secret is replaced whole.
    return "|".join(re.escape(v) for v in sorted(values, key=len, reverse=True))


def register_secret(value: str) -> None:
    """Remember ``value`` so that ``redact`` and the log filter hide it from now on.

    Values read from Kubernetes Secrets often carry a trailing newline, so the stripped form is
    registered as well. Blank values are ignored: they would match everywhere.
    """
    candidates = {v for v in (value, value.strip()) if v.strip()}
    if not candidates:
        return
    with _registry.lock:
        if candidates <= _registry.secrets:
            return
        _registry.secrets.update(candidates)
        long_values = [v for v in _registry.secrets if len(v) >= MIN_SUBSTRING_LENGTH]
        short_values = [v for v in _registry.secrets if len(v) < MIN_SUBSTRING_LENGTH]
        _registry.patterns = (
            re.compile(_alternation(long_values)) if long_values else None,
            (
                re.compile(rf"(?<![{_TOKEN_CHARS}])(?:{_alternation(short_values)})(?![{_TOKEN_CHARS}])")
                if short_values
                else None
            ),
        )


def redact(text: str) -> str:
    """Return ``text`` with every registered secret and credential-looking pattern replaced."""
    long_pattern, short_pattern = _registry.patterns
    if long_pattern is not None:
        text = long_pattern.sub(REDACTED, text)
    if short_pattern is not None:
        text = short_pattern.sub(REDACTED, text)
    text = _AUTH_HEADER.sub(lambda m: m.group(1) + REDACTED, text)
    text = _SCHEME_TOKEN.sub(lambda m: m.group(1) + REDACTED, text)
    return _KEY_FIELD.sub(lambda m: m.group(1) + REDACTED, text)


def _redact_record(record: logging.LogRecord) -> None:
    # Redact the formatted message rather than msg and args apart: "Authorization: %s" with the
    # token in args only looks like a credential once the two are joined.
    try:
        message = record.getMessage()
    except Exception:
        # A broken format string must not lose the record; redact the pieces instead.
        record.msg = redact(str(record.msg))
        if isinstance(record.args, tuple):
            record.args = tuple(redact(str(a)) for a in record.args)
        elif record.args:
            record.args = {k: redact(str(v)) for k, v in record.args.items()}
        return
    else:
        record.msg = redact(message)
        record.args = None
    if record.exc_info and not record.exc_text:
        # Pre-format the traceback so Formatter.format uses this redacted text instead of its own.
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


class RedactingFilter(logging.Filter):
    """Redacts message, arguments, traceback and stack text of every record; never drops one."""

    def filter(self, record: logging.LogRecord) -> bool:
        _redact_record(record)
        return True


_install_lock = threading.Lock()
_FACTORY_MARK = "_aigw_redacting"


def install_log_redaction() -> None:
    """Make every log record redacted, whichever logger or handler it goes through. Idempotent.

    The main mechanism is a log record factory wrapping the current one: it runs when any logger
    creates a record, so it covers handlers added later (kopf configures its own when it starts),
    handlers on non-root loggers, and records that never propagate to the root. A filter on the
    root's handlers misses all three; patching ``logging.Handler.format`` misses handlers that
    override ``format`` and leaves ``record.msg`` unredacted for structured handlers and Kubernetes
    Event posters that read the record itself. The filter is also attached to the root's current
    handlers, for records built without the factory (``logging.makeLogRecord``, e.g. from a socket).
    """
    with _install_lock:
        current = logging.getLogRecordFactory()
        if not getattr(current, _FACTORY_MARK, False):
            logging.setLogRecordFactory(_redacting_factory(current))
        for handler in logging.getLogger().handlers:
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(RedactingFilter())


def _redacting_factory(inner: Callable[..., logging.LogRecord]) -> Callable[..., logging.LogRecord]:
    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = inner(*args, **kwargs)
        _redact_record(record)
        return record

    setattr(factory, _FACTORY_MARK, True)
    return factory
