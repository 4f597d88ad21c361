"""Log lines: JSON on request, with the object they are about, and never a key."""

from __future__ import annotations

import json
import logging

from aigw_operator.logs import JsonFormatter
from aigw_operator.redaction import install_log_redaction, register_secret


def test_json_lines_carry_the_object_and_no_key() -> None:
    install_log_redaction()
    register_secret("json-canary-key-8842")
    record = logging.getLogger("aigw_operator.reconcile").makeRecord(
        "aigw_operator.reconcile",
        logging.WARNING,
        __file__,
        1,
        "GatewayEndpoint %s: refused with key %s",
        ("ns/glm", "json-canary-key-8842"),
        None,
        extra={"kind": "GatewayEndpoint", "namespace": "ns", "object_name": "glm"},
    )
    # makeRecord bypasses the record factory; the handler-level filter is what redacts it then.
    from aigw_operator.redaction import RedactingFilter

    RedactingFilter().filter(record)
    line = json.loads(JsonFormatter().format(record))
    assert line["kind"] == "GatewayEndpoint" and line["namespace"] == "ns" and line["object_name"] == "glm"
    assert line["level"] == "WARNING"
    assert "json-canary-key-8842" not in json.dumps(line)
