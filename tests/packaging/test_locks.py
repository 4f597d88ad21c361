"""The lock files (requirements/*.lock) pin, with hashes, exactly what the pyproject.toml files
ask for: CI, the demo and the image install from them, so a drift would test one set of
dependencies and ship another."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
LOCKS = REPO / "requirements"
PIN = re.compile(r"^([A-Za-z0-9._-]+)==([^\s\\]+)\s*\\?$")


def inputs() -> dict[str, list[str]]:
    operator = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    testbed = tomllib.loads((REPO / "testbed" / "pyproject.toml").read_text())["project"]
    return {
        "runtime": operator["dependencies"],
        "demo": operator["dependencies"] + testbed["dependencies"],
        "dev": operator["dependencies"] + operator["optional-dependencies"]["dev"] + testbed["dependencies"],
    }


def pins(name: str) -> dict[str, str]:
    found = {}
    lines = (LOCKS / f"{name}.lock").read_text().splitlines()
    for i, line in enumerate(lines):
        match = PIN.match(line)
        if match:
            assert i + 1 < len(lines) and "--hash=sha256:" in lines[i + 1], f"{name}.lock: {line} has no hash"
            found[canonicalize_name(match.group(1))] = match.group(2)
    return found


@pytest.mark.parametrize("name", ["runtime", "demo", "dev"])
def test_every_requirement_is_pinned_by_its_lock(name: str) -> None:
    locked = pins(name)
    assert locked, f"{name}.lock pins nothing"
    for text in inputs()[name]:
        requirement = Requirement(text)
        version = locked.get(canonicalize_name(requirement.name))
        assert version is not None, f"{name}.lock lacks {requirement.name}: run requirements/compile"
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{name}.lock pins {requirement.name}=={version}, pyproject asks {requirement.specifier}: "
            "run requirements/compile"
        )


@pytest.mark.parametrize("name", ["runtime", "demo", "dev"])
def test_the_lock_inputs_are_the_pyproject_requirements(name: str) -> None:
    written = [line for line in (LOCKS / f"{name}.in").read_text().splitlines() if not line.startswith("#")]
    assert written == inputs()[name], f"requirements/{name}.in is stale: run requirements/compile"


def test_nested_locks_agree() -> None:
    """What the image runs is what the tests ran: shared pins are the same version everywhere."""
    runtime, demo, dev = pins("runtime"), pins("demo"), pins("dev")
    assert runtime.items() <= demo.items()
    assert {k: v for k, v in demo.items() if k in dev} == {k: dev[k] for k in demo if k in dev}
    assert set(demo) <= set(dev)
