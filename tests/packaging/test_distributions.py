"""The two distributions, built as wheels: the operator's (what `pip install aigw-operator` and the
image hold) carries no fake; the testbed's carries the specs and examples the demo needs."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED_SPECS = REPO.parent / "shared" / "openapi"
#: The testbed's own third-party dependencies; none may reach the operator's image.
TESTBED_ONLY = {"kmock", "cel-python", "google-re2", "jsonschema", "jsonpatch", "openapi-core", "attrs"}


def build_wheel(project: Path, into: Path) -> zipfile.ZipFile:
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(into), str(project)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    (wheel,) = into.glob("*.whl")
    return zipfile.ZipFile(wheel)


def requirements(wheel: zipfile.ZipFile) -> set[str]:
    (metadata,) = [name for name in wheel.namelist() if name.endswith(".dist-info/METADATA")]
    headers = Parser().parsestr(wheel.read(metadata).decode())
    return {
        requirement.split(";")[0].split("[")[0].split(">")[0].split("<")[0].split("=")[0].strip().lower()
        for requirement in headers.get_all("Requires-Dist") or []
        if "extra ==" not in requirement
    }


@pytest.fixture(scope="module")
def operator_wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    return build_wheel(REPO, tmp_path_factory.mktemp("operator"))


@pytest.fixture(scope="module")
def testbed_wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    return build_wheel(REPO / "testbed", tmp_path_factory.mktemp("testbed"))


def test_operator_wheel_holds_the_operator_only(operator_wheel: zipfile.ZipFile) -> None:
    packages = {
        name.split("/")[0] for name in operator_wheel.namelist() if not name.split("/")[0].endswith(".dist-info")
    }
    assert packages == {"aigw_operator"}
    fakes = [
        name
        for name in operator_wheel.namelist()
        if any(word in name for word in ("simulator", "emulator", "admission", "testbed", "demo", "openapi"))
    ]
    assert fakes == []
    # A module of every layer is there: the wheel is the operator, not an empty shell.
    for module in ("cli.py", "runtime/operator.py", "engine/reconcile.py", "kinds/model.py", "upstreams/together.py"):
        assert f"aigw_operator/{module}" in operator_wheel.namelist(), module
    assert requirements(operator_wheel) & TESTBED_ONLY == set()


def test_image_installs_that_wheel_and_nothing_of_the_testbed() -> None:
    """No Docker engine here: the image is what its Dockerfile can see, and its build context is
    cut down by .dockerignore to pyproject.toml, README.md, the runtime lock and src/ (the testbed is
    outside src/)."""
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "testbed" not in dockerfile
    allowed = [line for line in (REPO / ".dockerignore").read_text().splitlines() if line.startswith("!")]
    assert allowed == ["!pyproject.toml", "!README.md", "!requirements/runtime.lock", "!src/"]
    assert not list((REPO / "src").glob("aigw_testbed*")), "the testbed must stay out of src/, which the image copies"


def test_testbed_wheel_carries_the_specs_and_the_examples(testbed_wheel: zipfile.ZipFile) -> None:
    names = set(testbed_wheel.namelist())
    packages = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert packages == {"aigw_testbed"}
    specs = {
        "baseten.openapi.yaml",
        "ngrok-ai-gateway.openapi.yaml",
        "together.openapi.yaml",
        "model_registry.openapi.yaml",
    }
    assert {f"aigw_testbed/specs/{spec}" for spec in specs} <= names
    for example in sorted((REPO / "examples").glob("*.yaml")):
        packaged = testbed_wheel.read(f"aigw_testbed/examples/{example.name}")
        assert packaged == example.read_bytes(), f"{example.name}: the wheel holds a copy, not the link"


def test_packaged_specs_are_the_vendors_published_ones() -> None:
    """The copies the testbed ships are byte for byte the specs in ../shared/openapi (which CI lays
    out beside the checkout): replacing a vendor's spec there means copying it here too."""
    packaged = REPO / "testbed" / "src" / "aigw_testbed" / "specs"
    vendors = sorted(path.name for path in SHARED_SPECS.glob("*.openapi.yaml"))
    assert vendors == ["baseten.openapi.yaml", "ngrok-ai-gateway.openapi.yaml", "together.openapi.yaml"]
    for name in vendors:
        assert (packaged / name).read_bytes() == (SHARED_SPECS / name).read_bytes(), name
