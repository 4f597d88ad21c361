"""The README's commands are what CI runs, and each distribution declares what it imports."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: Where each of our top-level packages lives in the checkout.
SOURCES = {"aigw_operator": REPO / "src", "aigw_testbed": REPO / "testbed" / "src"}


def readme_block(heading: str) -> str:
    """The first ```sh block of the README section whose heading starts with ``## {heading}``."""
    section = re.search(rf"^## {re.escape(heading)}.*?$(.*?)(?=^## |\Z)", (REPO / "README.md").read_text(), re.M | re.S)
    assert section, f"README.md has no section '## {heading}'"
    block = re.search(r"^```sh[ \t]*\n(.*?)^```[ \t]*$", section.group(1), re.M | re.S)
    assert block, f"README.md's '## {heading}' section has no ```sh block"
    return block.group(1).rstrip("\n")


def ci_steps() -> list[tuple[str, str, str]]:
    """(name, directory, command) of each step `.ci/run` would run, in order."""
    # Without its --dry-run, .ci/run would install everything and run this whole suite again.
    assert "--dry-run) dry_run=true" in (REPO / ".ci" / "run").read_text()
    result = subprocess.run(
        ["bash", str(REPO / ".ci" / "run"), "--dry-run"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    steps = re.findall(r"^## step (.+?) in (.+?)\n(.*?)\n## end$", result.stdout, re.M | re.S)
    assert steps, result.stdout
    return steps


def test_ci_runs_every_readme_command_verbatim() -> None:
    try_it, run_tests, benchmarks = readme_block("Try it"), readme_block("Run the tests"), readme_block("Benchmarks")
    assert "aigw-testbed demo" in try_it and "pytest" in run_tests and "benchmarks.run" in benchmarks
    steps = ci_steps()
    assert [(name, command) for name, _, command in steps] == [
        ("Try it", try_it),
        ("Run the tests", run_tests),
        ("Benchmarks", benchmarks),
    ]
    # The demo's `python3 -m venv .venv` must make a virtualenv of its own, not reuse the checkout's
    # (where the dev extra would hide a dependency missing from the testbed's); the tests run in the checkout.
    (_, demo_dir, _), (_, tests_dir, _), (_, benchmarks_dir, _) = steps
    assert Path(tests_dir) == REPO and Path(benchmarks_dir) == REPO
    assert not Path(demo_dir).is_relative_to(REPO)


def test_ci_fails_when_the_readme_loses_a_command(tmp_path: Path) -> None:
    (tmp_path / ".ci").mkdir()
    (tmp_path / ".ci" / "run").write_bytes((REPO / ".ci" / "run").read_bytes())
    readme = (REPO / "README.md").read_text()
    (tmp_path / "README.md").write_text(readme.replace("## Try it", "## Give it a go", 1))
    result = subprocess.run(
        ["bash", str(tmp_path / ".ci" / "run"), "--dry-run"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode != 0
    assert "Try it" in result.stderr


def _imports(path: Path, module: str) -> set[str]:
    """Modules imported by one source file at run time (``if TYPE_CHECKING:`` blocks left out)."""
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for statement in node.orelse:
                visit(statement)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _third_party_imports(*roots: str) -> dict[str, str]:
    """Top-level third-party module -> one of our modules importing it, over everything reachable."""
    seen: set[str] = set()
    todo = list(roots)
    third: dict[str, str] = {}
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        parts = module.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # importing a.b.c runs a and a.b
        base = SOURCES[parts[0]].joinpath(*parts)
        path = base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"
        if not path.is_file():
            continue  # a name imported from a module, not a module
        for name in _imports(path, module):
            top = name.split(".")[0]
            if top in SOURCES:
                todo.append(name)
            elif top not in sys.stdlib_module_names and top != "__future__":
                third.setdefault(top, module)
    return third


def _requirement_names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}


def _undeclared(roots: tuple[str, ...], requirements: list[str]) -> dict[str, str]:
    declared = _requirement_names(requirements)
    distributions = packages_distributions()
    missing = {}
    for top, importer in sorted(_third_party_imports(*roots).items()):
        names = {d.lower().replace("_", "-") for d in distributions.get(top, [])}
        assert names, f"{top} (imported by {importer}) is not installed here"
        if not names & declared:
            missing[top] = f"{'/'.join(sorted(names))} (imported by {importer})"
    return missing


def test_each_distribution_declares_every_third_party_import() -> None:
    """`pip install -e . -e ./testbed && aigw-testbed demo` (the README's first command) must not hit
    a ModuleNotFoundError: every third-party import reachable from a distribution's entry points is
    in its own dependencies, not left to another package (or the other distribution) to bring along."""
    operator = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    testbed = tomllib.loads((REPO / "testbed" / "pyproject.toml").read_text())["project"]
    assert operator["scripts"] == {"aigw-operator": "aigw_operator.cli:main"}
    assert testbed["scripts"] == {"aigw-testbed": "aigw_testbed.cli:main"}
    missing = _undeclared(("aigw_operator.cli", "aigw_operator.runtime.operator"), operator["dependencies"])
    assert not missing, f"add to pyproject.toml's dependencies: {missing}"
    everything = tuple(
        ".".join(path.relative_to(SOURCES["aigw_testbed"]).with_suffix("").parts)
        for path in (SOURCES["aigw_testbed"] / "aigw_testbed").rglob("*.py")
    )
    missing = _undeclared(everything, testbed["dependencies"])
    assert not missing, f"add to testbed/pyproject.toml's dependencies: {missing}"


def test_both_readme_commands_install_the_testbed_beside_the_operator() -> None:
    """The demo and the suite need both distributions; the operator's extras cannot name the testbed
    (it is on no index, and a name resolved from an index could be anyone's)."""
    for heading in ("Try it", "Run the tests", "Benchmarks"):
        assert "-e ./testbed" in readme_block(heading), heading
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert not any("testbed" in requirement for requirements in extras.values() for requirement in requirements)
