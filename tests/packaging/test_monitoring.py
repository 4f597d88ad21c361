"""deploy/monitoring: the Grafana dashboard and the PrometheusRule only query what the operator exports.

Metric and label names come from the prometheus_client collectors in aigw_operator.base.metrics (and
the one series Prometheus records of the scrape itself, ``up``). Every expression is parsed with
promql-parser; the name and label checks below use the parse tree, and a tokenizer as a cross-check.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

from aigw_operator.base import metrics
from tests.alerts import selected

MONITORING = Path(__file__).resolve().parents[2] / "deploy" / "monitoring"
DASHBOARD = MONITORING / "grafana-dashboard.json"
RULE = MONITORING / "prometheusrule.yaml"

SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"), "gauge": ("",)}


# What Prometheus records of every target it scrapes, with the target labels the Prometheus
# Operator gives it through a ServiceMonitor (the chart's: job from app.kubernetes.io/name).
SCRAPE_SERIES = {"up": {"job", "instance", "namespace", "service", "pod", "endpoint", "container"}}


def exported() -> dict[str, set[str]]:
    """Exposed series name -> its label names, from the collectors themselves: prometheus_client's,
    and the module's own collectors counted when scraped."""
    names: dict[str, set[str]] = {}
    for collector in vars(metrics).values():
        if isinstance(collector, MetricWrapperBase):
            [family] = collector.describe()
            families = [(family, set(collector._labelnames))]
        elif Collector in type(collector).__mro__:  # the module's own: a Protocol, so no isinstance
            families = [(family, set(family._labelnames)) for family in collector.describe()]  # type: ignore[attr-defined]
        else:
            continue
        for family, labels in families:
            for suffix in SUFFIXES[family.type]:
                names[family.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return names


EXPORTED = exported()
KNOWN = {**EXPORTED, **SCRAPE_SERIES}


def test_exported_names_match_the_documented_ones() -> None:
    """controller-runtime's, client-go's and Crossplane's names and labels; aigw_ only for the rest."""
    controller = {"controller"}
    queue = {"name", "controller"}
    conventional = {
        "controller_runtime_reconcile_total": {"controller", "result"},
        "controller_runtime_reconcile_errors_total": controller,
        "controller_runtime_terminal_reconcile_errors_total": controller,
        "controller_runtime_reconcile_time_seconds_bucket": controller | {"le"},
        "controller_runtime_active_workers": controller,
        "controller_runtime_max_concurrent_reconciles": controller,
        "workqueue_depth": queue,
        "workqueue_adds_total": queue,
        "workqueue_queue_duration_seconds_bucket": queue | {"le"},
        "workqueue_work_duration_seconds_bucket": queue | {"le"},
        "workqueue_retries_total": queue,
        "workqueue_unfinished_work_seconds": queue,
        "workqueue_longest_running_processor_seconds": queue,
        "rest_client_requests_total": {"code", "method", "host"},
        "leader_election_master_status": {"name"},
        "crossplane_managed_resource_exists": {"gvk"},
        "crossplane_managed_resource_ready": {"gvk"},
        "crossplane_managed_resource_synced": {"gvk"},
        "crossplane_managed_resource_first_time_to_readiness_seconds_bucket": {"gvk", "le"},
    }
    ours = {
        "aigw_upstream_requests_total": {"upstream", "method", "route", "code"},
        "aigw_upstream_request_duration_seconds_bucket": {"upstream", "method", "route", "code", "le"},
        "aigw_upstream_retries_total": {"upstream", "reason"},
        "aigw_upstream_rate_limit_waits_total": {"upstream"},
        "aigw_upstream_rate_limit_wait_seconds_total": {"upstream"},
        "aigw_reconcile_failures_total": {"controller", "reason"},
        "aigw_managed_resources": {"gvk", "condition", "status", "reason"},
        "aigw_drift_corrections_total": controller,
        "aigw_leader_election_transitions_total": {"name"},
    }
    for name, labels in {**conventional, **ours}.items():
        assert EXPORTED.get(name) == labels, name
    # Nothing else, and nothing per object.
    assert {n for n in EXPORTED if not n.endswith(("_created", "_sum", "_count"))} == {*conventional, *ours}
    assert not [n for n, labels in EXPORTED.items() if labels & {"namespace", "kind"}]


# ------------------------------------------------------------------ the files


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULE.read_text())
    return [rule for group in doc["spec"]["groups"] for rule in group["rules"]]


def expressions() -> dict[str, str]:
    found = {}
    for panel in all_panels(dashboard()["panels"]):
        for target in panel.get("targets", []):
            found[f"panel {panel['id']} {panel['title']} {target['refId']}"] = target["expr"]
    for rule in rules():
        found[f"alert {rule['alert']}"] = rule["expr"]
    return found


EXPRESSIONS = expressions()


def test_dashboard_is_well_formed() -> None:
    data = dashboard()
    assert 36 <= data["schemaVersion"] <= 41
    panels = list(all_panels(data["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), ids
    variables = {v["name"]: v for v in data["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables.keys() == {"datasource", "controller"}  # no per-object variables: no per-object series
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
    titles = {p["title"] for p in panels}
    for wanted in (
        "Reconcile rate by result",
        "Reconcile duration p50 / p95",
        "Reconcile errors",
        "Reconcile failures by reason",
        "Workers in use",
        "Work queue depth",
        "Work queue adds and retries",
        "Work queue wait and work p95",
        "Unfinished work",
        "Upstream request rate by upstream and code",
        "Upstream p95 latency by route",
        "Retries and 429 waits",
        "Kubernetes API requests by method and code",
        "Resources by kind: exist, Ready, Synced",
        "Resources not Ready by reason",
        "Resources not Synced by reason",
        "Time to first Ready p50 / p95",
        "Drift corrections",
    ):
        assert wanted in titles
    # Every series name the operator exports (but _created/_sum/_count) is shown somewhere.
    used = " ".join(EXPRESSIONS.values())
    shown = {n for n in EXPORTED if not n.endswith(("_created", "_sum", "_count"))}
    assert {n for n in shown if not re.search(rf"\b{n}\b", used)} == set()


def test_prometheus_rule_is_well_formed() -> None:
    doc = yaml.safe_load(RULE.read_text())
    assert doc["apiVersion"] == "monitoring.coreos.com/v1"
    assert doc["kind"] == "PrometheusRule"
    assert doc["metadata"]["name"]
    found = rules()
    assert {r["alert"] for r in found} == {
        "AigwOperatorDown",
        "AigwResourceNotReady",
        "AigwResourceNotSynced",
        "AigwUpstreamErrorRate",
        "AigwUpstreamRateLimited",
    }
    for rule in found:
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert re.fullmatch(r"([0-9]+(ms|s|m|h|d|w|y))+", rule["for"]), rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}
        assert rule["annotations"]["summary"].strip()
        assert len(rule["annotations"]["description"]) > 80
    by_name = {r["alert"]: r for r in found}
    assert by_name["AigwResourceNotReady"]["for"] == "15m"
    assert by_name["AigwResourceNotSynced"]["for"] == "15m"
    for alert in ("AigwResourceNotReady", "AigwResourceNotSynced"):
        # Per kind and reason: the resources themselves are in their conditions and Events.
        assert "$labels.gvk" in by_name[alert]["annotations"]["summary"], alert
        assert "$labels.reason" in by_name[alert]["annotations"]["summary"], alert
    assert "[10m]" in by_name["AigwUpstreamErrorRate"]["expr"]
    assert "[10m]" in by_name["AigwUpstreamRateLimited"]["expr"]
    assert by_name["AigwOperatorDown"]["labels"]["severity"] == "critical"
    # Annotations only template labels the alert's series keep.
    for rule in found:
        kept = labels_kept(rule["expr"])
        for text in rule["annotations"].values():
            assert set(re.findall(r"\$labels\.(\w+)", text)) <= kept, rule["alert"]


def labels_kept(expr: str) -> set[str]:
    grouped = re.findall(r"\bby\s*\(([^)]*)\)", expr)
    if grouped:
        return set.intersection(*({g.strip() for g in group.split(",") if g.strip()} for group in grouped))
    return set.union(*(KNOWN[name] for name in metric_names(expr)))


def _series(**fixed: str) -> list[dict[str, str]]:
    """aigw_managed_resources' Ready series for each reason a kind's readiness can give."""
    reasons = ["Available", "Starting", "Stopping", "Stopped", "AutoStopped", "Error", "Scaling", "InvalidSpec", ""]
    return [{"condition": "Ready", "status": "False", "reason": r, **fixed} for r in reasons]


def test_a_resource_stopped_on_purpose_is_no_outage() -> None:
    """AigwResourceNotReady picks every not-Ready series but the one of a DedicatedEndpoint stopped
    as its spec says (tests/operator/test_metrics.py checks the same on what the operator exports)."""
    expr = rules_by_name()["AigwResourceNotReady"]["expr"]
    kind = {"gvk": "aigw.dev/v1alpha1, Kind=DedicatedEndpoint"}
    picked = {s["reason"] for s in selected(expr, "aigw_managed_resources", _series(**kind))}
    assert picked == {"Available", "Starting", "Stopping", "AutoStopped", "Error", "Scaling", "InvalidSpec", ""}
    ready = [{"condition": "Ready", "status": "True", "reason": "Available", **kind}]
    assert selected(expr, "aigw_managed_resources", ready) == []
    synced = [{"condition": "Synced", "status": "False", "reason": "InvalidSpec", **kind}]
    assert selected(expr, "aigw_managed_resources", synced) == []
    assert selected(rules_by_name()["AigwResourceNotSynced"]["expr"], "aigw_managed_resources", synced) == synced


def rules_by_name() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for rule in rules()}


def test_operator_down_covers_targets_down_and_targets_gone() -> None:
    expr = rules_by_name()["AigwOperatorDown"]["expr"]
    assert "absent(" in expr.replace(" ", "")  # no target at all: the Deployment scaled to 0, deleted
    assert "==0" in expr.replace(" ", "")  # targets there, none answering
    ours = [{"job": "aigw-operator", "namespace": "aigw-system", "service": "aigw-operator-metrics"}]
    others = [{"job": "kube-state-metrics", "namespace": "monitoring", "service": "kube-state-metrics"}]
    assert selected(expr, "up", ours + others) == ours


# ------------------------------------------------------------------ PromQL

GRAFANA_RANGES = re.compile(r"\$__(rate_interval|interval|range)\b")
KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset",
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values",
    "rate", "irate", "increase", "delta", "idelta", "histogram_quantile", "abs", "clamp_min", "clamp_max",
    "label_replace", "vector", "scalar", "time", "absent", "changes", "resets", "sort", "sort_desc",
    "avg_over_time", "max_over_time", "min_over_time", "sum_over_time", "count_over_time", "last_over_time",
    "inf", "nan",
}  # fmt: skip


def promql(expr: str) -> str:
    """The expression with Grafana's range variables replaced, so that Prometheus' grammar applies."""
    return GRAFANA_RANGES.sub("5m", expr)


def _strip_strings(expr: str) -> str:
    return re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)


def metric_names(expr: str) -> set[str]:
    """Metric names by tokenizing: identifiers not followed by '(' outside matchers, grouping and durations."""
    text = _strip_strings(promql(expr))
    text = re.sub(r"\{[^}]*\}", "{}", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\[[^\]]*\]", "[]", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][\w:]*)(\s*\()?", text):
        if match.group(2) or match.group(1) in KEYWORDS:
            continue
        names.add(match.group(1))
    return names


def _regex_selectors(expr: str) -> list[tuple[str | None, set[str]]]:
    text = _strip_strings(promql(expr))
    found: list[tuple[str | None, set[str]]] = []
    for match in re.finditer(r"([a-zA-Z_:][\w:]*)?\s*\{([^}]*)\}", text):
        labels = {m.group(1) for m in re.finditer(r"(\w+)\s*(=~|!~|!=|=)", match.group(2))}
        found.append((match.group(1), labels))
    return found


def _regex_groupings(expr: str) -> list[set[str]]:
    return [
        {label.strip() for label in m.group(1).split(",") if label.strip()}
        for m in re.finditer(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", promql(expr))
    ]


def _parsed(expr: str) -> tuple[set[str], list[tuple[str | None, set[str]]], list[set[str]]]:
    """Metric names, selectors (name, matcher labels) and grouping label sets from the parse tree."""
    import promql_parser as parser  # a dev dependency: the expressions are always parsed

    names: set[str] = set()
    selectors: list[tuple[str | None, set[str]]] = []
    groupings: list[set[str]] = []

    def walk(node: Any) -> None:
        if isinstance(node, parser.VectorSelector):
            matchers = {m.name for m in node.matchers.matchers} - {"__name__"}
            name = node.name or next((m.value for m in node.matchers.matchers if m.name == "__name__"), None)
            if name:
                names.add(name)
            selectors.append((name, matchers))
        elif isinstance(node, parser.MatrixSelector):
            walk(node.vector_selector)
        elif isinstance(node, parser.AggregateExpr):
            if node.modifier is not None:
                groupings.append(set(node.modifier.labels))
            walk(node.expr)
            if node.param is not None:
                walk(node.param)
        elif isinstance(node, parser.BinaryExpr):
            modifier = node.modifier
            if modifier is not None:
                if modifier.matching is not None:
                    groupings.append(set(modifier.matching.labels))
                groupings.append(set(modifier.group_labels or []))
            walk(node.lhs)
            walk(node.rhs)
        elif isinstance(node, parser.Call):
            for arg in node.args:
                walk(arg)
        elif isinstance(node, parser.ParenExpr | parser.UnaryExpr | parser.SubqueryExpr):
            walk(node.expr)

    walk(parser.parse(promql(expr)))
    return names, selectors, [g for g in groupings if g]


def check_names_and_labels(
    expr: str, names: set[str], selectors: list[tuple[str | None, set[str]]], groupings: list[set[str]]
) -> None:
    unknown = names - KNOWN.keys()
    assert unknown == set(), f"unknown metrics {unknown} in {expr}"
    assert names, expr
    for name, matchers in selectors:
        assert name is not None, f"selector without a metric name in {expr}"
        assert matchers <= KNOWN[name], f"{name} has no labels {matchers - KNOWN[name]}: {expr}"
    available = set.union(*(KNOWN[name] for name in names))
    for group in groupings:
        assert group <= available, f"grouping by {group - available} that {names} lack: {expr}"


@pytest.mark.parametrize("where", EXPRESSIONS)
def test_expression_uses_exported_metrics_and_labels(where: str) -> None:
    expr = EXPRESSIONS[where]
    check_names_and_labels(expr, metric_names(expr), _regex_selectors(expr), _regex_groupings(expr))


@pytest.mark.parametrize("where", EXPRESSIONS)
def test_expression_parses_and_uses_exported_metrics_and_labels(where: str) -> None:
    expr = EXPRESSIONS[where]
    names, selectors, groupings = _parsed(expr)
    assert names == metric_names(expr), "the tokenizer disagrees with the parser"
    check_names_and_labels(expr, names, selectors, groupings)


def test_template_variable_queries_use_exported_metrics_and_labels() -> None:
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] != "query":
            continue
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", variable["definition"])
        assert match, variable["definition"]
        selector, label = match.groups()
        check_names_and_labels(selector, metric_names(selector), _regex_selectors(selector), [])
        assert all(label in KNOWN[name] for name in metric_names(selector)), variable["name"]
        assert variable["query"]["query"] == variable["definition"]


def test_the_checks_catch_mistakes() -> None:
    """The checks themselves: unknown metrics, wrong suffixes and foreign labels fail."""
    bad = [
        "rate(aigw_reconcile_total[5m])",  # the old name
        "aigw_resource_ready == 0",  # the old per-object gauge
        "rate(controller_runtime_reconciles_total[5m])",
        "rate(controller_runtime_reconcile[5m])",
        "controller_runtime_reconcile_time_seconds",
        'controller_runtime_reconcile_total{kind="GatewayEndpoint"}',
        "sum by (namespace) (rate(controller_runtime_reconcile_total[$__rate_interval]))",
        'crossplane_managed_resource_ready{namespace="x"}',
        'workqueue_depth{queue="x"}',
        'up{pod_name="x"} == 0',
        "histogram_quantile(0.9, sum by (le, reason) (rate(aigw_upstream_request_duration_seconds_bucket[5m])))",
    ]
    for expr in bad:
        with pytest.raises(AssertionError):
            check_names_and_labels(expr, metric_names(expr), _regex_selectors(expr), _regex_groupings(expr))
    assert metric_names('sum by (controller) (rate(controller_runtime_reconcile_total{result="error"}[5m])) > 0') == {
        "controller_runtime_reconcile_total"
    }
    # The selector check of the alerts: a matcher that does not hold drops the series.
    assert selected('up{job="x"} == 0', "up", [{"job": "y"}]) == []
