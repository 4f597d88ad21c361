"""The Dockerfile, parsed (no Docker engine here): what a build elsewhere will produce."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    stage: int


def parse(text: str) -> list[Instruction]:
    """Dockerfile instructions with continuations joined and comments dropped."""
    instructions: list[Instruction] = []
    logical = ""
    stage = -1
    for raw in text.splitlines():
        line = raw.strip()
        if not logical and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        logical += line
        keyword, _, args = logical.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        instructions.append(Instruction(keyword, args.strip(), stage))
        logical = ""
    return instructions


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return parse(DOCKERFILE.read_text())


def args_default(instructions: list[Instruction], name: str) -> str:
    for ins in instructions:
        if ins.keyword == "ARG" and ins.args.startswith(f"{name}="):
            return ins.args.split("=", 1)[1]
    raise AssertionError(f"no ARG {name}")


def base_images(instructions: list[Instruction]) -> list[str]:
    images = []
    for ins in instructions:
        if ins.keyword == "FROM":
            image = ins.args.split()[0]
            images.append(re.sub(r"\$\{(\w+)\}", lambda m: args_default(instructions, m.group(1)), image))
    return images


def last_stage(instructions: list[Instruction]) -> list[Instruction]:
    final = max(i.stage for i in instructions)
    return [i for i in instructions if i.stage == final]


def test_multi_stage_on_a_pinned_python_311_slim(instructions: list[Instruction]) -> None:
    images = base_images(instructions)
    assert len(images) >= 2
    for image in images:
        name, _, tag = image.partition(":")
        assert name == "python"
        assert tag.startswith("3.11") and "slim" in tag, image
    # The build stage's virtualenv is what the final stage runs.
    assert any(i.keyword == "COPY" and "--from=build" in i.args for i in last_stage(instructions))


def test_installs_the_package_from_the_repository(instructions: list[Instruction]) -> None:
    copies = [shlex.split(i.args) for i in instructions if i.keyword == "COPY" and "--from" not in i.args]
    sources = {src for parts in copies for src in parts[:-1]}
    assert {"pyproject.toml", "README.md", "src"} <= sources
    for source in sources:
        assert (REPO / source).exists(), source
    assert any(i.keyword == "RUN" and re.search(r"pip install --no-deps \.(\s|$)", i.args) for i in instructions)


def test_dependencies_come_from_the_lock_with_hashes_only(instructions: list[Instruction]) -> None:
    """Every pip install is either the hash-checked lock or the operator alone (--no-deps): nothing
    is resolved at build time, so two builds install the same files."""
    installs = [i.args for i in instructions if i.keyword == "RUN" and "pip install" in i.args]
    for command in (part for args in installs for part in args.split("&&") if "pip install" in part):
        assert "--require-hashes -r requirements/runtime.lock" in command or "--no-deps" in command, command
    assert any("--require-hashes -r requirements/runtime.lock" in args for args in installs)
    assert (REPO / "requirements" / "runtime.lock").is_file()
    # The lock is installed before the sources are copied: its layer outlives source changes.
    order = [i.args for i in instructions if i.keyword in ("COPY", "RUN")]
    lock_install = next(n for n, args in enumerate(order) if "--require-hashes" in args)
    sources = next(n for n, args in enumerate(order) if args.split()[0] == "src")
    assert lock_install < sources


def test_no_pip_in_the_runtime_image(instructions: list[Instruction]) -> None:
    """The runtime stage runs the build stage's venv, from which pip and setuptools were removed
    (checked in the build itself), and installs nothing of its own."""
    build_runs = " && ".join(i.args for i in instructions if i.keyword == "RUN" and i.stage == 0)
    assert "pip uninstall --yes pip setuptools" in build_runs and "! test -e /opt/venv/bin/pip" in build_runs
    assert not [i for i in last_stage(instructions) if i.keyword == "RUN" and "pip" in i.args]


def test_the_base_image_can_be_pinned_by_digest(instructions: list[Instruction]) -> None:
    """Both stages start FROM one build argument, so --build-arg PYTHON_IMAGE=<tag>@sha256:<digest>
    pins both; the Dockerfile says how."""
    froms = [i.args.split()[0] for i in instructions if i.keyword == "FROM"]
    assert froms == ["${PYTHON_IMAGE}", "${PYTHON_IMAGE}"]
    assert "PYTHON_IMAGE=python:3.11-slim@sha256:" in DOCKERFILE.read_text()


def test_runs_as_a_numeric_non_root_user(instructions: list[Instruction]) -> None:
    users = [i for i in last_stage(instructions) if i.keyword == "USER"]
    assert users, "the final stage sets no USER"
    user = users[-1].args
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, user
    # The chart's podSecurityContext uses the same uid.
    import yaml

    values = yaml.safe_load((REPO / "deploy/helm/aigw-operator/values.yaml").read_text())
    assert values["podSecurityContext"]["runAsUser"] == int(uid)


def test_entrypoint_and_cmd(instructions: list[Instruction]) -> None:
    final = last_stage(instructions)
    [entrypoint] = [json.loads(i.args) for i in final if i.keyword == "ENTRYPOINT"]
    [cmd] = [json.loads(i.args) for i in final if i.keyword == "CMD"]
    assert entrypoint == ["aigw-operator"]
    assert cmd == ["run"]
    # The chart's liveness probe targets this port.
    assert any(i.keyword == "EXPOSE" and i.args.split()[0] == "8080" for i in final)


SECRETISH = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL)", re.IGNORECASE)


def test_no_secrets_baked_in(instructions: list[Instruction]) -> None:
    for ins in instructions:
        if ins.keyword in ("ENV", "ARG", "LABEL"):
            names = re.findall(r"([A-Za-z_][A-Za-z0-9_.]*)=", ins.args) or [ins.args.split()[0]]
            assert not any(SECRETISH.search(n) for n in names), ins
        if ins.keyword in ("COPY", "ADD"):
            assert not re.search(r"\.env|kubeconfig|\.kube|id_rsa|\.pem|credentials", ins.args), ins
    assert not any(i.keyword == "ADD" for i in instructions), "ADD fetches URLs and unpacks archives: use COPY"


def test_dockerignore_keeps_the_context_minimal() -> None:
    lines = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()]
    rules = [line for line in lines if line and not line.startswith("#")]
    # Everything is excluded first, then only the sources the build copies are let back in.
    assert rules[0] == "**"
    allowed = {line[1:].rstrip("/") for line in rules if line.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "requirements/runtime.lock", "src"}
