"""Logging: human-readable or JSON lines, every record passed through secret redaction."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any, TextIO

from aigw_operator.base.redaction import install_log_redaction

_CONTEXT = ("kind", "namespace", "object_name")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in _CONTEXT:
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        # kopf's per-object loggers carry the object in record.k8s_ref.
        ref = getattr(record, "k8s_ref", None)
        if isinstance(ref, dict):
            entry.setdefault("kind", ref.get("kind"))
            entry.setdefault("namespace", ref.get("namespace"))
            entry.setdefault("object_name", ref.get("name"))
        if record.exc_text:  # the redaction puts the redacted traceback here: never format it anew
            entry["exception"] = record.exc_text
        elif record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure(level: str = "INFO", fmt: str = "text", *, stream: TextIO | None = None) -> logging.Handler:
    """The operator's one logging setup (``aigw-operator run``): a single root handler writing
    ``fmt`` lines to ``stream`` (default: standard error), and redaction of every record.

    The test suite installs the same setup for the whole session, with a ``stream`` that scans what
    would reach the pod log for API keys. Returns the handler."""
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx logs every request URL at INFO; too chatty for an operator's normal log.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    install_log_redaction()
    return handler
