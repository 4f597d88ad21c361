"""The PrometheusRule's alerts, and which series an alert's selector picks (Prometheus' matching)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import promql_parser
import yaml

RULE = Path(__file__).resolve().parents[1] / "deploy" / "monitoring" / "prometheusrule.yaml"


def rules(text: str | None = None) -> dict[str, dict[str, Any]]:
    """Alert name -> its rule, from the file (or from ``text``)."""
    doc = yaml.safe_load(RULE.read_text() if text is None else text)
    return {rule["alert"]: rule for group in doc["spec"]["groups"] for rule in group["rules"]}


def selectors(expr: str) -> list[Any]:
    """Every vector selector of ``expr``, from the parse tree."""
    found: list[Any] = []

    def walk(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)
        for child in ("expr", "lhs", "rhs", "vector_selector", "param"):
            if getattr(node, child, None) is not None:
                walk(getattr(node, child))
        for arg in getattr(node, "args", None) or ():
            walk(arg)

    walk(promql_parser.parse(expr))
    return found


def _matches(selector: Any, labels: dict[str, str]) -> bool:
    for matcher in selector.matchers.matchers:
        found, wanted, op = labels.get(matcher.name, ""), matcher.value, matcher.op
        if op == promql_parser.MatchOp.Equal and found != wanted:
            return False
        if op == promql_parser.MatchOp.NotEqual and found == wanted:
            return False
        if op == promql_parser.MatchOp.Re and not re.fullmatch(wanted, found):
            return False
        if op == promql_parser.MatchOp.NotRe and re.fullmatch(wanted, found):
            return False
    return True


def selected(expr: str, metric: str, series: Iterable[dict[str, str]]) -> list[dict[str, str]]:
    """The series of ``metric`` that ``expr``'s selectors of it pick (Prometheus anchors regexes)."""
    mine = [s for s in selectors(expr) if s.name == metric]
    assert mine, f"{expr} selects no {metric}"
    return [labels for labels in series if any(_matches(s, labels) for s in mine)]
