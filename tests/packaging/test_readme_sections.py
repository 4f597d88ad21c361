"""The README's Helm, RBAC and uninstall sections against the chart they describe: the RBAC
table is the rendered ClusterRole, and every kind, upstream and CRD is named where it should be."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import helm_python as helm
import pytest
import yaml

from aigw_operator.crds import all_kinds
from aigw_operator.registry import KINDS
from tests.packaging.test_chart import CHART, _rules, of_kind, operator_objects, render

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def section(heading: str) -> str:
    found = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", README, re.M | re.S)
    assert found, heading
    return found.group(1)


def paragraph(text: str, start: str) -> str:
    """From the paragraph starting with ``start`` (at the start of a line) to the next bold-headed one."""
    at = re.search(rf"^{re.escape(start)}", text, re.M).start()  # type: ignore[union-attr]
    following = re.search(r"^\*\*[A-Z]", text[at + len(start) :], re.M)
    return text[at : at + len(start) + following.start()] if following else text[at:]


HELM = section("Install with Helm")
RBAC = paragraph(HELM, "**RBAC.**")
UNINSTALL = paragraph(HELM, "**Uninstall**")


def test_the_rbac_table_is_the_rendered_cluster_role(chart: helm.Chart) -> None:
    rows = re.findall(r"^\| (`[^|]+) \| ([a-z, ]+) \| [^|]+ \|$", RBAC, re.M)
    assert rows, RBAC
    documented: dict[str, set[str]] = {}
    for resources, verbs in rows:
        for resource in re.findall(r"`([^`]+)`", resources):
            documented.setdefault(resource, set()).update(v.strip() for v in verbs.split(","))
    [role] = of_kind(operator_objects(render(chart, {})), "ClusterRole")
    rendered: dict[str, set[str]] = {}
    for (_, resource), verbs in _rules(role).items():
        rendered.setdefault(resource, set()).update(verbs)
    assert documented == rendered


@pytest.mark.parametrize("kind", [info.kind for info in all_kinds()])
def test_every_kind_is_named_in_the_helm_rbac_and_uninstall_sections(kind: str) -> None:
    for name, text in (("Helm", HELM), ("RBAC", RBAC), ("Uninstall", UNINSTALL)):
        assert re.search(rf"\b{kind}\b", text), f"{kind} missing from the README's {name} section"


def test_every_upstream_is_named_in_the_helm_section() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())["upstreams"]
    assert len(values) == len({kind.upstream for kind in KINDS})
    count = ["zero", "one", "two", "three", "four", "five", "six"][len(values)]
    assert f"The {count}\nupstreams" in HELM or f"The {count} upstreams" in HELM
    for other in ("one", "two", "three", "five"):
        assert not re.search(rf"\b{other}\s+upstreams\b", README), other
    for name in values:
        assert f"`{name}`" in HELM, name


def test_the_uninstall_step_deletes_every_crd() -> None:
    crds = sorted(yaml.safe_load(p.read_text())["metadata"]["name"] for p in (CHART / "files" / "crds").glob("*.yaml"))
    [command] = [line for line in UNINSTALL.splitlines() if line.startswith("kubectl delete crd")]
    assert sorted(command.split()[3:]) == crds
