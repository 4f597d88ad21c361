"""One simulator per upstream API, faithful to ``shared/apis.md`` and checked against the vendors'
OpenAPI specs. A simulator module joins the demo by declaring ``DEMO`` (a :class:`DemoUpstream`),
so a new upstream needs no edit anywhere else in the testbed."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aigw_testbed.simulators.base import SimulatorServer


@dataclass(frozen=True)
class DemoUpstream:
    """How the demo runs one simulator and points the operator at it."""

    title: str
    #: The operator's settings field for this upstream: the demo sets AIGW_<SETTING>__BASE_URL.
    setting: str
    #: A simulator that accepts ``key``, the key the examples' Secret holds.
    start: Callable[[str], SimulatorServer]
    key: str
    #: Appended to the simulator's URL to make the base URL the operator is given.
    api_path: str = ""
    #: Fixes up the examples for this simulator once it runs (e.g. ids it assigns).
    prepare: Callable[[Any, list[dict[str, Any]]], None] | None = None


def demo_upstreams() -> list[DemoUpstream]:
    """Every simulator module's ``DEMO``, in module order."""
    found = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda module: module.name):
        declared = vars(importlib.import_module(f"{__name__}.{info.name}")).get("DEMO")
        if isinstance(declared, DemoUpstream):
            found.append(declared)
    return found
