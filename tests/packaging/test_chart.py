"""The Helm chart, rendered and linted by real Helm (Helm's Go SDK through helm-python-sdk),
checked against the Kubernetes schemas (kubernetes-validate) and against deploy/crds."""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

from aigw_operator.crds import all_kinds
from tests.alerts import rules as alert_rules
from tests.alerts import selected

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "aigw-operator"
CRDS = REPO / "deploy" / "crds"
MONITORING = REPO / "deploy" / "monitoring"
RELEASE = "aigw"
NAMESPACE = "aigw-system"
KUBE_VERSIONS = ["1.29.0", "1.33.0"]

VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "namespaced": {"watch": {"namespaces": ["team-a", "team-b"]}},
    "existing-secret": {
        "upstreams": {"baseten": {"apiKey": {"existingSecret": "baseten-credentials", "secretKey": "token"}}}
    },
    "created-secret": {"upstreams": {"baseten": {"apiKey": {"value": "bt-secret-value"}}}},
    "keys-from-values": {
        "upstreams": {
            "baseten": {"apiKey": {"value": "bt-secret-value"}},
            "ngrok": {"apiKey": {"value": "ng-secret-value", "secretKey": "token"}},
            "together": {"apiKey": {"value": "tg-secret-value"}},
            "modelRegistry": {
                "baseUrl": "https://syft.example.com/api/v1",
                "apiKey": {"value": "mr-secret-value"},
            },
        }
    },
    "existing-and-value": {
        "upstreams": {
            "ngrok": {"apiKey": {"existingSecret": "ngrok-credentials", "secretKey": "token"}},
            "modelRegistry": {
                "baseUrl": "https://syft.example.com/api/v1",
                "apiKey": {"value": "mr-secret-value"},
            },
        }
    },
    "no-crds": {"crds": {"install": False}},
    "everything": {
        "watch": {"namespaces": ["team-a"]},
        "image": {"digest": "sha256:" + "a" * 64},
        "imagePullSecrets": [{"name": "regcred"}],
        "crds": {"keep": False, "annotations": {"argocd.argoproj.io/sync-wave": "-10"}},
        "operator": {
            "logLevel": "DEBUG",
            "logFormat": "text",
            "resyncInterval": 60,
            "shortPollInterval": 2.5,
            "extraEnv": [{"name": "AIGW_BASETEN__MAX_RETRIES", "value": "5"}],
        },
        "upstreams": {
            "baseten": {"baseUrl": "https://baseten.example", "rateLimitPerSecond": 20, "apiKey": {"value": "k"}},
            "ngrok": {"baseUrl": "https://ngrok.example", "rateLimitPerSecond": 0.5, "timeout": 30},
            "modelRegistry": {
                "baseUrl": "https://syft.example.com/api/v1",
                "timeout": 2.5,
                "apiKey": {"existingSecret": "registry-admin"},
            },
        },
        "serviceAccount": {"create": True, "name": "custom-sa", "annotations": {"a": "b"}},
        "podAnnotations": {"x": "y"},
        "podLabels": {"team": "ai"},
        "priorityClassName": "system-cluster-critical",
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ops", "effect": "NoSchedule"}],
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]}
                    ]
                }
            }
        },
        "podDisruptionBudget": {"enabled": True},
        "metrics": {"enabled": True, "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
    },
    "drain-delete": {"drain": {"policy": "Delete", "timeoutSeconds": 600}},
    "namespaced-drain-delete": {"watch": {"namespaces": ["team-a", "team-b"]}, "drain": {"policy": "Delete"}},
    "no-drain-no-aggregation": {"drain": {"enabled": False}, "rbac": {"aggregateToDefaultRoles": False}},
    "metrics-port-and-monitor": {"metrics": {"port": 9100, "serviceMonitor": {"enabled": True}}},
    "monitoring": {
        "metrics": {
            "serviceMonitor": {"enabled": True},
            "prometheusRule": {"enabled": True, "labels": {"release": "prom"}},
            "dashboards": {"enabled": True, "annotations": {"grafana_folder": "Operators"}},
        }
    },
    "metrics-service-off": {"metrics": {"enabled": False}},
    "metrics-open": {"metrics": {"auth": {"enabled": False}, "serviceMonitor": {"enabled": True}}},
    "metrics-reader-secret-token": {
        "watch": {"namespaces": ["team-a"]},
        "metrics": {
            "reader": {"subjects": [{"kind": "ServiceAccount", "name": "prometheus-k8s", "namespace": "monitoring"}]},
            "serviceMonitor": {
                "enabled": True,
                "authorization": {"type": "Bearer", "credentials": {"name": "prom-token", "key": "token"}},
            },
        },
    },
    "paused-no-rbac": {"replicaCount": 0, "rbac": {"create": False}, "serviceAccount": {"create": False}},
    "single-without-election": {"replicaCount": 1, "leaderElection": {"enabled": False}},
    "three-replicas-spread": {
        "replicaCount": 3,
        "leaderElection": {"leaseDuration": 30, "renewDeadline": 20, "retryPeriod": 4},
        "podAntiAffinityPreset": "hard",
        "topologySpreadConstraints": [
            {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway"}
        ],
        "podDisruptionBudget": {"maxUnavailable": "50%"},
    },
}


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def render(chart: helm.Chart, values: dict[str, Any]) -> list[dict[str, Any]]:
    manifests = chart.render(values=copy.deepcopy(values), name=RELEASE, namespace=NAMESPACE, is_install=True)
    objects: list[dict[str, Any]] = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


def notes(chart: helm.Chart, values: dict[str, Any]) -> str:
    manifests = chart.render(values=copy.deepcopy(values), name=RELEASE, namespace=NAMESPACE, is_install=True)
    return next(text for path, text in manifests.items() if path.endswith("NOTES.txt"))


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    [found] = of_kind(objects, kind)
    return found


def is_hook(obj: dict[str, Any]) -> bool:
    return "helm.sh/hook" in (obj["metadata"].get("annotations") or {})


def aggregated(obj: dict[str, Any]) -> bool:
    labels = obj["metadata"].get("labels") or {}
    return any(k.startswith("rbac.authorization.k8s.io/aggregate-to-") for k in labels)


def metrics_auth(obj: dict[str, Any]) -> bool:
    """The RBAC of /metrics' access checks: the operator's reviews and the scrapers' reader role."""
    return (obj["metadata"].get("labels") or {}).get("app.kubernetes.io/component") == "metrics-auth"


def operator_objects(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the operator itself runs with: without the pre-delete hook's objects, the
    aggregated tenant roles and the metrics access RBAC (each tested on their own below)."""
    return [o for o in objects if not is_hook(o) and not aggregated(o) and not metrics_auth(o)]


def key_files(objects: list[dict[str, Any]]) -> dict[str, tuple[str, str]]:
    """AIGW_<NAME> -> (Secret, key) of each upstream's default key, followed from its
    AIGW_<NAME>__API_KEY_FILE through the mounted projected volume."""
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    [main] = pod["containers"]
    mounts = {m["name"]: m["mountPath"] for m in main.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    files: dict[str, tuple[str, str]] = {}
    for name, sources in ((n, v["projected"]["sources"]) for n, v in volumes.items() if "projected" in v):
        for source in sources:
            for item in source["secret"]["items"]:
                files[f"{mounts[name]}/{item['path']}"] = (source["secret"]["name"], item["key"])
    found: dict[str, tuple[str, str]] = {}
    for variable, value in env(objects).items():
        if variable.endswith("__API_KEY_FILE"):
            found[variable.removesuffix("__API_KEY_FILE")] = files[value]
    return found


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    [result] = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    return dict(result)


def env(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(objects).get("env", [])}


# ------------------------------------------------------------------ lint and schema validation


@pytest.mark.parametrize("name", VALUE_SETS)
def test_lint_strict(name: str) -> None:
    report = helm.lint(CHART, copy.deepcopy(VALUE_SETS[name]), strict=True, namespace=NAMESPACE)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("name", VALUE_SETS)
def test_rendered_objects_validate_against_kubernetes_schemas(chart: helm.Chart, name: str, kube_version: str) -> None:
    objects = render(chart, VALUE_SETS[name])
    assert objects
    for obj in objects:
        if obj["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # Prometheus Operator's CRD: not in the Kubernetes schemas; checked below.
        try:
            kubernetes_validate.validate(obj, kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{obj['kind']} {obj['metadata'].get('name')}: {exc.message} at {list(exc.path)}")


@pytest.mark.parametrize("name", VALUE_SETS)
def test_every_object_is_labelled_and_namespaced_correctly(chart: helm.Chart, name: str) -> None:
    for obj in render(chart, VALUE_SETS[name]):
        labels = obj["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/part-of") == "aigw-operator", obj["metadata"]
        if obj["kind"] in ("CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"):
            assert "namespace" not in obj["metadata"]
        elif obj["kind"] not in ("Role", "RoleBinding"):
            assert obj["metadata"]["namespace"] == NAMESPACE


# ------------------------------------------------------------------ the Deployment


def test_defaults_deployment(chart: helm.Chart) -> None:
    objects = render(chart, {})
    deployment = one(objects, "Deployment")
    # Two replicas by default: one leads (holds the Lease), the other stands by.
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1},
    }
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == one(operator_objects(objects), "ServiceAccount")["metadata"]["name"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    main = container(objects)
    assert main["image"] == "ghcr.io/aigw-dev/aigw-operator:0.1.0"
    assert [*main["command"], *main["args"]] == ["aigw-operator", "run", "--liveness", "http://0.0.0.0:8080/healthz"]
    probe = main["livenessProbe"]["httpGet"]
    assert probe["path"] == "/healthz"
    assert {p["name"]: p["containerPort"] for p in main["ports"]}[probe["port"]] == 8080
    # Readiness is /readyz on the same port: a standby is ready once it follows the Lease.
    assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert main["readinessProbe"]["periodSeconds"] == 10
    security = main["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert {m["mountPath"] for m in main["volumeMounts"]} == {"/tmp"}  # no key: nothing mounted
    assert env(objects) == {
        "POD_NAME": {"fieldRef": {"fieldPath": "metadata.name"}},
        "POD_NAMESPACE": {"fieldRef": {"fieldPath": "metadata.namespace"}},
        "AIGW_LEADER_ELECTION__ENABLED": "true",
        "AIGW_LEADER_ELECTION__LEASE_NAME": "aigw-aigw-operator",
        "AIGW_LEADER_ELECTION__LEASE_NAMESPACE": NAMESPACE,
        "AIGW_LEADER_ELECTION__LEASE_DURATION": "15",
        "AIGW_LEADER_ELECTION__RENEW_DEADLINE": "10",
        "AIGW_LEADER_ELECTION__RETRY_PERIOD": "2",
        "AIGW_RESYNC_INTERVAL": "300",
        "AIGW_SHORT_POLL_INTERVAL": "5",
        "AIGW_LOG_LEVEL": "INFO",
        "AIGW_LOG_FORMAT": "json",
        "AIGW_METRICS_PORT": "9090",
        "AIGW_METRICS_AUTH": "kubernetes",
        "AIGW_METRICS_AUTH_CACHE_TTL": "10",
        "AIGW_SECRET_LABEL_SELECTOR": "aigw.dev/watch=true",
        "AIGW_BASETEN__BASE_URL": "https://api.baseten.co",
        "AIGW_NGROK__BASE_URL": "https://api.ngrok.ai",
        "AIGW_TOGETHER__BASE_URL": "https://api.together.ai/v1",
    }
    assert main["resources"]["limits"]["memory"] == "256Mi"
    # Without any key configured, no Secret exists and none is referenced.
    assert of_kind(objects, "Secret") == []
    # With two replicas the PDB keeps one through a drain.
    assert one(objects, "PodDisruptionBudget")["spec"]["minAvailable"] == 1
    assert pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["weight"] == 100
    assert "topologySpreadConstraints" not in pod
    # Metrics are on by default: the port and its Service; the ServiceMonitor stays opt-in.
    assert {p["name"]: p["containerPort"] for p in main["ports"]}["metrics"] == 9090
    assert one(objects, "Service")["spec"]["ports"][0]["targetPort"] == "metrics"
    assert of_kind(objects, "ServiceMonitor") == []


def test_metrics_port_service_and_service_monitor(chart: helm.Chart, monkeypatch: pytest.MonkeyPatch) -> None:
    """metrics.port reaches the operator (AIGW_METRICS_PORT), the container port, the Service and the monitor."""
    objects = render(chart, VALUE_SETS["metrics-port-and-monitor"])
    assert env(objects)["AIGW_METRICS_PORT"] == "9100"
    assert _settings(chart, VALUE_SETS["metrics-port-and-monitor"], monkeypatch).metrics_port == 9100
    ports = {p["name"]: p for p in container(objects)["ports"]}
    assert ports["metrics"] == {"name": "metrics", "containerPort": 9100, "protocol": "TCP"}
    service = one(objects, "Service")
    assert service["metadata"]["name"] == "aigw-aigw-operator-metrics"
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 9100, "targetPort": "metrics", "protocol": "TCP"}]
    pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    monitor = one(objects, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert monitor["spec"]["endpoints"] == [
        {
            "port": "metrics",
            "path": "/metrics",
            "interval": "30s",
            "scrapeTimeout": "10s",
            # /metrics wants a bearer token by default: Prometheus' own, over plain http.
            "scheme": "http",
            "bearerTokenFile": "/var/run/secrets/kubernetes.io/serviceaccount/token",
        }
    ]
    # Without the Service the operator still serves metrics, and no ServiceMonitor is rendered.
    objects = render(chart, {"metrics": {"enabled": False, "serviceMonitor": {"enabled": True}}})
    assert env(objects)["AIGW_METRICS_PORT"] == "9090"
    assert "metrics" in {p["name"] for p in container(objects)["ports"]}
    assert of_kind(objects, "Service") == [] and of_kind(objects, "ServiceMonitor") == []


def test_alerts_and_dashboard_are_off_by_default(chart: helm.Chart) -> None:
    objects = render(chart, {})
    assert of_kind(objects, "PrometheusRule") == []
    assert of_kind(objects, "ConfigMap") == []
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())["metrics"]
    assert defaults["prometheusRule"]["enabled"] is False and defaults["dashboards"]["enabled"] is False


def test_one_copy_of_the_monitoring_files_deploy_monitoring_is_the_charts() -> None:
    """The chart ships the alerts and the dashboard from its files/monitoring; deploy/monitoring
    (for kubectl and Grafana's import) links there, as deploy/crds does: no second copy to drift."""
    assert MONITORING.is_symlink()
    assert MONITORING.resolve() == (CHART / "files" / "monitoring").resolve()
    assert sorted(p.name for p in MONITORING.iterdir()) == ["grafana-dashboard.json", "prometheusrule.yaml"]


def test_prometheus_rule_is_the_monitoring_file(chart: helm.Chart) -> None:
    objects = render(chart, VALUE_SETS["monitoring"])
    rule = one(objects, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["name"] == "aigw-aigw-operator"
    assert rule["metadata"]["namespace"] == NAMESPACE
    assert rule["metadata"]["labels"]["release"] == "prom"
    assert rule["spec"] == yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())["spec"]
    # Prometheus' own templates reach it untouched by Helm's.
    [not_ready] = [r for g in rule["spec"]["groups"] for r in g["rules"] if r["alert"] == "AigwResourceNotReady"]
    assert "{{ $labels.gvk }}" in not_ready["annotations"]["summary"]


@pytest.mark.parametrize("name_override", ["", "gateway-operator"])
def test_operator_down_alert_selects_the_job_the_service_monitor_gives(chart: helm.Chart, name_override: str) -> None:
    """The Prometheus Operator names the job after the Service label the ServiceMonitor's jobLabel
    names: the alert's `up` selector picks that job, whatever the release or nameOverride."""
    values = copy.deepcopy(VALUE_SETS["monitoring"])
    values["nameOverride"] = name_override
    objects = render(chart, values)
    monitor = one(objects, "ServiceMonitor")
    service = one(objects, "Service")
    job = service["metadata"]["labels"][monitor["spec"]["jobLabel"]]
    assert job == (name_override or "aigw-operator")
    rule = one(objects, "PrometheusRule")
    [down] = [r for g in rule["spec"]["groups"] for r in g["rules"] if r["alert"] == "AigwOperatorDown"]
    up = {"job": job, "namespace": NAMESPACE, "service": service["metadata"]["name"]}
    assert selected(down["expr"], "up", [up, {**up, "job": "other"}]) == [up]
    # The file itself, as kubectl applies it, selects the default job.
    assert selected(alert_rules()["AigwOperatorDown"]["expr"], "up", [{"job": "aigw-operator"}]) != []


def test_dashboard_config_map_for_the_grafana_sidecar(chart: helm.Chart) -> None:
    objects = render(chart, VALUE_SETS["monitoring"])
    config_map = one(objects, "ConfigMap")
    assert config_map["metadata"]["name"] == "aigw-aigw-operator-dashboard"
    assert config_map["metadata"]["namespace"] == NAMESPACE
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "Operators"}
    [(key, text)] = config_map["data"].items()
    assert key.endswith(".json")
    assert json.loads(text) == json.loads((MONITORING / "grafana-dashboard.json").read_text())
    # The sidecar's label and where it looks are the sidecar's settings: configurable.
    values = {"metrics": {"dashboards": {"enabled": True, "label": "example.com/dashboard", "labelValue": "aigw"}}}
    labels = one(render(chart, values), "ConfigMap")["metadata"]["labels"]
    assert labels["example.com/dashboard"] == "aigw" and "grafana_dashboard" not in labels
    values = {"metrics": {"dashboards": {"enabled": True, "namespace": "monitoring"}}}
    assert one(render(chart, values), "ConfigMap")["metadata"]["namespace"] == "monitoring"


def test_metrics_port_must_differ_from_the_health_port(chart: helm.Chart) -> None:
    with pytest.raises(Exception, match="must differ"):
        render(chart, {"metrics": {"port": 8080}})


def _settings(chart: helm.Chart, values: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Any:
    """The operator's Settings from the env the chart renders (keys from Secrets left out)."""
    from aigw_operator.base.settings import Settings

    for name in [n for n in os.environ if n.startswith("AIGW_")]:
        monkeypatch.delenv(name)
    for name, value in env(render(chart, values)).items():
        if isinstance(value, str):
            monkeypatch.setenv(name, value)
    return Settings()


def test_env_values_reach_the_operator_settings(chart: helm.Chart, monkeypatch: pytest.MonkeyPatch) -> None:
    """The env the chart renders is what Settings parses: names, JSON list and numbers."""
    settings = _settings(chart, VALUE_SETS["everything"], monkeypatch)
    assert settings.namespaces == ["team-a"]
    assert settings.resync_interval == 60
    assert settings.short_poll_interval == 2.5
    assert settings.log_level == "DEBUG"
    assert settings.log_format == "text"
    assert settings.baseten.base_url == "https://baseten.example"
    assert settings.baseten.rate_limit_per_second == 20
    assert settings.baseten.max_retries == 5
    assert settings.ngrok.base_url == "https://ngrok.example"
    assert settings.ngrok.rate_limit_per_second == 0.5
    assert settings.ngrok.timeout == 30
    assert settings.model_registry.base_url == "https://syft.example.com/api/v1"
    assert settings.model_registry.timeout == 2.5
    assert settings.model_registry.rate_limit_per_second is None


def test_default_upstreams_reach_the_operator_settings(chart: helm.Chart, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without values, each upstream keeps the operator's own defaults (the registry has no real one)."""
    from aigw_operator.base.settings import Settings

    settings = _settings(chart, {}, monkeypatch)
    defaults = Settings()
    assert settings.baseten.base_url == "https://api.baseten.co"
    assert settings.ngrok.base_url == "https://api.ngrok.ai"
    assert settings.model_registry.base_url == defaults.model_registry.base_url
    for name in ("baseten", "ngrok", "model_registry"):
        upstream = getattr(settings, name)
        assert upstream.api_key is None
        assert upstream.rate_limit_per_second == getattr(defaults, name).rate_limit_per_second
        assert upstream.timeout == getattr(defaults, name).timeout
    with_registry = _settings(chart, VALUE_SETS["keys-from-values"], monkeypatch)
    assert with_registry.baseten.base_url == "https://api.baseten.co"
    assert with_registry.ngrok.base_url == "https://api.ngrok.ai"
    assert with_registry.model_registry.base_url == "https://syft.example.com/api/v1"


def test_everything_value_set(chart: helm.Chart) -> None:
    objects = render(chart, VALUE_SETS["everything"])
    pod = one(objects, "Deployment")["spec"]["template"]
    assert pod["metadata"]["labels"]["team"] == "ai"
    assert pod["metadata"]["annotations"]["x"] == "y"
    spec = pod["spec"]
    assert spec["serviceAccountName"] == "custom-sa"
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert spec["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert spec["tolerations"][0]["key"] == "dedicated"
    assert "nodeAffinity" in spec["affinity"]
    # The preset's podAntiAffinity is added next to the given nodeAffinity.
    assert "preferredDuringSchedulingIgnoredDuringExecution" in spec["affinity"]["podAntiAffinity"]
    assert spec["priorityClassName"] == "system-cluster-critical"
    assert container(objects)["image"] == "ghcr.io/aigw-dev/aigw-operator@sha256:" + "a" * 64
    assert one(objects, "PodDisruptionBudget")["spec"] == {
        "minAvailable": 1,
        "unhealthyPodEvictionPolicy": "AlwaysAllow",
        "selector": {"matchLabels": one(objects, "Deployment")["spec"]["selector"]["matchLabels"]},
    }
    service = one(objects, "Service")
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}]
    assert "metrics" in {p["name"] for p in container(objects)["ports"]}
    monitor = one(objects, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    for crd in of_kind(objects, "CustomResourceDefinition"):
        assert crd["metadata"]["annotations"] == {"argocd.argoproj.io/sync-wave": "-10"}


def test_paused_without_rbac(chart: helm.Chart) -> None:
    objects = render(chart, VALUE_SETS["paused-no-rbac"])  # the hook's objects are counted apart
    assert one(objects, "Deployment")["spec"]["replicas"] == 0
    assert one(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "default"
    kinds = {o["kind"] for o in objects if not is_hook(o)}
    assert not kinds & {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
    # The hook's own ServiceAccount is there, but no RBAC for it: rbac.create is off.
    assert {o["kind"] for o in objects if is_hook(o)} == {"ServiceAccount", "Job"}


# ------------------------------------------------------------------ leader election and high availability


def test_leader_election_env_reaches_the_operator_settings(chart: helm.Chart, monkeypatch: pytest.MonkeyPatch) -> None:
    """The chart turns election on (the operator's default is off), on a Lease named after the release."""
    election = _settings(chart, {}, monkeypatch).leader_election
    assert election.enabled is True
    assert election.lease_name == one(render(chart, {}), "Deployment")["metadata"]["name"] == "aigw-aigw-operator"
    assert election.lease_namespace == NAMESPACE
    assert (election.lease_duration, election.renew_deadline, election.retry_period) == (15, 10, 2)
    tuned = _settings(chart, VALUE_SETS["three-replicas-spread"], monkeypatch).leader_election
    assert (tuned.lease_duration, tuned.renew_deadline, tuned.retry_period) == (30, 20, 4)
    fractional = {"leaderElection": {"leaseDuration": 7.5, "renewDeadline": 5, "retryPeriod": 0.5}}
    assert _settings(chart, fractional, monkeypatch).leader_election.retry_period == 0.5
    # The pod's name is its identity: from the downward API, not a value.
    assert env(render(chart, {}))["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}


def test_without_leader_election_one_replica_and_recreate(chart: helm.Chart, monkeypatch: pytest.MonkeyPatch) -> None:
    objects = render(chart, VALUE_SETS["single-without-election"])
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    # No overlap at all during a rollout: two operators without election would both reconcile.
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    variables = env(objects)
    assert variables["AIGW_LEADER_ELECTION__ENABLED"] == "false"
    assert not [name for name in variables if name.startswith("AIGW_LEADER_ELECTION__") and "ENABLED" not in name]
    assert "POD_NAME" in variables and "POD_NAMESPACE" in variables
    assert _settings(chart, VALUE_SETS["single-without-election"], monkeypatch).leader_election.enabled is False
    assert [r for r in of_kind(objects, "Role") if r["metadata"]["name"].endswith("-leader-election")] == []
    assert of_kind(operator_objects(objects), "RoleBinding") == []
    # The PDB must not block drains of the only replica.
    assert one(objects, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    assert "minAvailable" not in one(objects, "PodDisruptionBudget")["spec"]


def test_default_key_namespaces_reach_the_operator(chart: helm.Chart, monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset, only the release namespace may spend a default key (the operator's own, from
    POD_NAMESPACE); a list or ["*"] reaches the operator's settings as given."""
    assert not [name for name in env(render(chart, {})) if name.endswith("__DEFAULT_KEY_NAMESPACES")]
    assert _settings(chart, {}, monkeypatch).together.default_key_namespaces is None
    values = {
        "upstreams": {
            "together": {"apiKey": {"namespaces": ["team-a", "team-b"]}},
            "baseten": {"apiKey": {"namespaces": ["*"]}},
        }
    }
    rendered = env(render(chart, values))
    assert rendered["AIGW_TOGETHER__DEFAULT_KEY_NAMESPACES"] == '["team-a","team-b"]'
    assert rendered["AIGW_BASETEN__DEFAULT_KEY_NAMESPACES"] == '["*"]'
    settings = _settings(chart, values, monkeypatch)
    assert settings.together.default_key_namespaces == ["team-a", "team-b"]
    assert settings.baseten.default_key_namespaces == ["*"]
    assert settings.ngrok.default_key_namespaces is None


@pytest.mark.parametrize("replicas", [2, 5])
def test_more_than_one_replica_needs_leader_election(chart: helm.Chart, replicas: int, tmp_path: Path) -> None:
    values = {"replicaCount": replicas, "leaderElection": {"enabled": False}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(chart.merge_values(copy.deepcopy(values)), _schema())
    with pytest.raises(helm.HelmValuesError):
        chart.render(values=copy.deepcopy(values), name=RELEASE, namespace=NAMESPACE)
    # The template refuses it too when the schema is skipped (--skip-schema-validation).
    unchecked = tmp_path / "aigw-operator"
    shutil.copytree(CHART, unchecked)
    (unchecked / "values.schema.json").unlink()
    with helm.Chart.load(unchecked) as without_schema, pytest.raises(Exception, match=r"needs leaderElection\.enabled"):
        render(without_schema, values)
    # With election on any number is fine, and without it 0 and 1 are.
    for allowed in ({"replicaCount": replicas}, {"replicaCount": 0, "leaderElection": {"enabled": False}}):
        assert one(render(chart, allowed), "Deployment")["spec"]["replicas"] == allowed["replicaCount"]


@pytest.mark.parametrize(
    ("lease", "renew", "retry"),
    [(10, 10, 2), (15, 20, 2), (15, 10, 10), (15, 10, 12), (5, 10, 2)],
)
def test_leader_election_timings_must_be_ordered(
    chart: helm.Chart, monkeypatch: pytest.MonkeyPatch, lease: float, renew: float, retry: float
) -> None:
    """retryPeriod < renewDeadline < leaseDuration, as the operator requires (it would not start)."""
    values = {"leaderElection": {"leaseDuration": lease, "renewDeadline": renew, "retryPeriod": retry}}
    jsonschema.validate(chart.merge_values(copy.deepcopy(values)), _schema())  # each is a valid number alone
    with pytest.raises(Exception, match=r"retryPeriod < renewDeadline < leaseDuration"):
        render(chart, values)
    # The operator refuses the same settings.
    from aigw_operator.base.settings import LeaderElectionSettings

    with pytest.raises(ValueError, match="retry_period < renew_deadline < lease_duration"):
        LeaderElectionSettings(lease_duration=lease, renew_deadline=renew, retry_period=retry)


def test_pod_disruption_budget_follows_the_replicas(chart: helm.Chart) -> None:
    def spec(values: dict[str, Any]) -> dict[str, Any]:
        budget = one(render(chart, values), "PodDisruptionBudget")["spec"]
        # Pods that are not Ready never block a drain, whatever the budget.
        assert budget["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
        return {k: v for k, v in budget.items() if k not in ("selector", "unhealthyPodEvictionPolicy")}

    # Two or more: one pod at a time may go, a standby stays to take over the Lease.
    assert spec({}) == {"minAvailable": 1}
    assert spec({"replicaCount": 3}) == {"minAvailable": 1}
    # One (or none): minAvailable 1 would block every drain, so the eviction is permitted.
    assert spec({"replicaCount": 1}) == {"maxUnavailable": 1}
    assert spec({"replicaCount": 0}) == {"maxUnavailable": 1}
    # An explicit maxUnavailable wins.
    assert spec(VALUE_SETS["three-replicas-spread"]) == {"maxUnavailable": "50%"}
    assert spec({"podDisruptionBudget": {"maxUnavailable": 0}}) == {"maxUnavailable": 0}
    assert of_kind(render(chart, {"podDisruptionBudget": {"enabled": False}}), "PodDisruptionBudget") == []
    selector = one(render(chart, {}), "PodDisruptionBudget")["spec"]["selector"]["matchLabels"]
    assert selector == one(render(chart, {}), "Deployment")["spec"]["selector"]["matchLabels"]


def _pod_spec(chart: helm.Chart, values: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = one(render(chart, values), "Deployment")["spec"]["template"]["spec"]
    return spec


def test_pod_anti_affinity_spreads_replicas_over_nodes(chart: helm.Chart) -> None:
    selector = one(render(chart, {}), "Deployment")["spec"]["selector"]["matchLabels"]
    term = {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": selector}}
    assert _pod_spec(chart, {})["affinity"] == {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "podAffinityTerm": term}]
        }
    }
    assert _pod_spec(chart, {"podAntiAffinityPreset": "hard"})["affinity"] == {
        "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}
    }
    assert "affinity" not in _pod_spec(chart, {"podAntiAffinityPreset": ""})
    # The user's own podAntiAffinity replaces the preset's; other affinity is kept beside it.
    own = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{**term, "topologyKey": "zone"}]}}
    assert _pod_spec(chart, {"affinity": own})["affinity"] == own
    node = VALUE_SETS["everything"]["affinity"]
    assert _pod_spec(chart, {"affinity": node, "podAntiAffinityPreset": ""})["affinity"] == node
    merged = _pod_spec(chart, {"affinity": node})["affinity"]
    assert merged["nodeAffinity"] == node["nodeAffinity"] and "podAntiAffinity" in merged


def test_topology_spread_constraints_get_the_pod_selector(chart: helm.Chart) -> None:
    selector = one(render(chart, {}), "Deployment")["spec"]["selector"]["matchLabels"]
    [constraint] = _pod_spec(chart, VALUE_SETS["three-replicas-spread"])["topologySpreadConstraints"]
    assert constraint == {
        "maxSkew": 1,
        "topologyKey": "topology.kubernetes.io/zone",
        "whenUnsatisfiable": "ScheduleAnyway",
        "labelSelector": {"matchLabels": selector},
    }
    given = {
        "maxSkew": 2,
        "topologyKey": "kubernetes.io/hostname",
        "whenUnsatisfiable": "DoNotSchedule",
        "labelSelector": {"matchLabels": {"app": "other"}},
    }
    assert _pod_spec(chart, {"topologySpreadConstraints": [given]})["topologySpreadConstraints"] == [given]


def test_probes_liveness_on_healthz_readiness_on_readyz(chart: helm.Chart) -> None:
    for name in ("defaults", "single-without-election", "three-replicas-spread"):
        main = container(render(chart, VALUE_SETS[name]))
        assert main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
        assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    main = container(render(chart, {"liveness": {"port": 8181}, "readiness": {"failureThreshold": 6}}))
    assert {p["name"]: p["containerPort"] for p in main["ports"]}["health"] == 8181
    assert main["args"][-1] == "http://0.0.0.0:8181/healthz"
    assert main["readinessProbe"]["failureThreshold"] == 6


# ------------------------------------------------------------------ credentials


def test_existing_secret_is_mounted_not_created(chart: helm.Chart, monkeypatch: pytest.MonkeyPatch) -> None:
    objects = render(chart, VALUE_SETS["existing-secret"])
    assert of_kind(objects, "Secret") == []
    assert key_files(objects) == {"AIGW_BASETEN": ("baseten-credentials", "token")}
    # A file, never the key in env: the operator reads the file again, so a rotation reaches it.
    assert not [name for name in env(objects) if name.endswith("__API_KEY")]
    settings = _settings(chart, VALUE_SETS["existing-secret"], monkeypatch)
    assert str(settings.baseten.api_key_file) == env(objects)["AIGW_BASETEN__API_KEY_FILE"]
    [mount] = [m for m in container(objects)["volumeMounts"] if m["name"] == "api-keys"]
    # Not a subPath (the kubelet never updates those), and read-only.
    assert "subPath" not in mount and mount["readOnly"] is True
    [volume] = [v for v in one(objects, "Deployment")["spec"]["template"]["spec"]["volumes"] if v["name"] == "api-keys"]
    assert volume["projected"]["defaultMode"] == 0o440  # the group is the pod's fsGroup
    # Nothing rolls the pod for a Secret change: none is needed.
    assert "checksum/secret" not in json.dumps(one(objects, "Deployment"))


def test_created_secret_holds_the_key_and_is_mounted(chart: helm.Chart) -> None:
    objects = render(chart, VALUE_SETS["created-secret"])
    secret = one(objects, "Secret")
    assert base64.b64decode(secret["data"]["apiKey"]).decode() == "bt-secret-value"
    assert key_files(objects) == {"AIGW_BASETEN": (secret["metadata"]["name"], "apiKey")}
    # The key itself appears only in the Secret.
    for obj in objects:
        if obj["kind"] != "Secret":
            assert "bt-secret-value" not in json.dumps(obj)


def test_keys_from_values_for_every_upstream(chart: helm.Chart) -> None:
    values = VALUE_SETS["keys-from-values"]
    objects = render(chart, values)
    secrets = {s["metadata"]["name"]: s for s in of_kind(objects, "Secret")}
    expected = {
        "AIGW_BASETEN": ("aigw-aigw-operator-baseten", "apiKey", "bt-secret-value"),
        "AIGW_NGROK": ("aigw-aigw-operator-ngrok", "token", "ng-secret-value"),
        "AIGW_TOGETHER": ("aigw-aigw-operator-together", "apiKey", "tg-secret-value"),
        "AIGW_MODEL_REGISTRY": ("aigw-aigw-operator-model-registry", "apiKey", "mr-secret-value"),
    }
    assert sorted(secrets) == sorted(name for name, _, _ in expected.values())
    assert key_files(objects) == {prefix: (name, key) for prefix, (name, key, _) in expected.items()}
    for name, key, value in expected.values():
        assert base64.b64decode(secrets[name]["data"][key]).decode() == value
    for obj in objects:
        if obj["kind"] != "Secret":
            for _, _, value in expected.values():
                assert value not in json.dumps(obj)
    # One file per upstream, named after it, in one directory.
    files = [v for v in env(objects).values() if isinstance(v, str) and v.startswith("/etc/aigw-operator/api-keys/")]
    assert sorted(f.rsplit("/", 1)[1] for f in files) == ["baseten", "model-registry", "ngrok", "together"]


def test_existing_secret_for_one_upstream_and_value_for_another(chart: helm.Chart) -> None:
    objects = render(chart, VALUE_SETS["existing-and-value"])
    # Only the key given as a value gets a Secret.
    [secret] = of_kind(objects, "Secret")
    assert secret["metadata"]["name"] == "aigw-aigw-operator-model-registry"
    assert base64.b64decode(secret["data"]["apiKey"]).decode() == "mr-secret-value"
    assert key_files(objects) == {
        "AIGW_NGROK": ("ngrok-credentials", "token"),
        "AIGW_MODEL_REGISTRY": ("aigw-aigw-operator-model-registry", "apiKey"),
    }


# ------------------------------------------------------------------ RBAC


def _rules(obj: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    result: dict[tuple[str, str], set[str]] = {}
    for rule in obj["rules"]:
        if "nonResourceURLs" in rule:
            continue
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                result.setdefault((group, resource), set()).update(rule["verbs"])
    return result


def _expected_namespaced_rules() -> dict[tuple[str, str], set[str]]:
    from aigw_operator.crds import all_kinds

    expected: dict[tuple[str, str], set[str]] = {
        # patch: a repeated Event counts on the one posted before.
        ("", "events"): {"create", "patch"},
        # patch: the finalizer that keeps a credentials Secret while resources need it; create,
        # update, delete: the connection details (spec.writeConnectionDetailsTo), as for configmaps.
        ("", "secrets"): {"get", "list", "watch", "patch", "create", "update", "delete"},
        ("", "configmaps"): {"get", "create", "update", "delete"},
    }
    for info in all_kinds():
        expected[("aigw.dev", info.plural)] = {"list", "watch", "patch"}
        expected[("aigw.dev", f"{info.plural}/status")] = {"patch"}
    return expected


def _without_lease_rbac(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The Roles or RoleBindings of the watched namespaces (the leader election ones are tested apart)."""
    return [o for o in of_kind(objects, kind) if not o["metadata"]["name"].endswith("-leader-election")]


def test_rbac_cluster_wide(chart: helm.Chart) -> None:
    objects = operator_objects(render(chart, {}))
    assert _without_lease_rbac(objects, "Role") == [] and _without_lease_rbac(objects, "RoleBinding") == []
    rules = _rules(one(objects, "ClusterRole"))
    assert rules == {
        **_expected_namespaced_rules(),
        ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
    }
    binding = one(objects, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == one(objects, "ClusterRole")["metadata"]["name"]
    account = one(objects, "ServiceAccount")["metadata"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["name"], "namespace": NAMESPACE}]


def test_rbac_namespaced(chart: helm.Chart) -> None:
    objects = operator_objects(render(chart, VALUE_SETS["namespaced"]))
    assert json.loads(env(objects)["AIGW_NAMESPACES"]) == ["team-a", "team-b"]
    # Nothing at cluster scope: with named namespaces kopf scans neither namespaces nor CRDs (the
    # metrics reviews' ClusterRole, left out by operator_objects, grants no object).
    assert of_kind(objects, "ClusterRole") == [] and of_kind(objects, "ClusterRoleBinding") == []
    roles = _without_lease_rbac(objects, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    for role in roles:
        assert _rules(role) == _expected_namespaced_rules()
    bindings = _without_lease_rbac(objects, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    for binding in bindings:
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": roles[0]["metadata"]["name"],
        }
        assert binding["subjects"][0]["namespace"] == NAMESPACE


def test_secret_watch_is_what_list_and_watch_on_secrets_are_for(chart: helm.Chart) -> None:
    objects = render(chart, {})
    assert env(objects)["AIGW_SECRET_LABEL_SELECTOR"] == "aigw.dev/watch=true"
    objects = operator_objects(render(chart, {"secretWatch": {"enabled": False}}))
    assert env(objects)["AIGW_SECRET_LABEL_SELECTOR"] == ""
    writes = {"create", "update", "delete"}  # the connection details
    assert _rules(one(objects, "ClusterRole"))[("", "secrets")] == {"get", "patch"} | writes
    namespaced = operator_objects(render(chart, {**VALUE_SETS["namespaced"], "secretWatch": {"enabled": False}}))
    for role in _without_lease_rbac(namespaced, "Role"):
        assert _rules(role)[("", "secrets")] == {"get", "patch"} | writes


def _lease_rbac(objects: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    [role] = [r for r in of_kind(objects, "Role") if r["metadata"]["name"].endswith("-leader-election")]
    [binding] = [b for b in of_kind(objects, "RoleBinding") if b["metadata"]["name"].endswith("-leader-election")]
    return role, binding


@pytest.mark.parametrize("name", ["defaults", "namespaced", "everything", "three-replicas-spread"])
def test_rbac_for_the_lease_in_the_release_namespace_only(chart: helm.Chart, name: str) -> None:
    objects = operator_objects(render(chart, VALUE_SETS[name]))
    lease = env(objects)["AIGW_LEADER_ELECTION__LEASE_NAME"]
    assert env(objects)["AIGW_LEADER_ELECTION__LEASE_NAMESPACE"] == NAMESPACE
    role, binding = _lease_rbac(objects)
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == NAMESPACE
    # create cannot be limited by name; get and update are limited to the one Lease.
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": [lease],
            "verbs": ["get", "update"],
        },
    ]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    account = one(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}]
    # Leases appear nowhere else: not cluster-wide, not in the watched namespaces.
    for obj in objects:
        if obj["kind"] in ("Role", "ClusterRole") and obj is not role:
            assert ("coordination.k8s.io", "leases") not in _rules(obj)
    # A watched namespace that is the release namespace keeps both Roles, under different names.
    both = operator_objects(render(chart, {"watch": {"namespaces": [NAMESPACE]}}))
    assert sorted(r["metadata"]["name"] for r in of_kind(both, "Role")) == [
        "aigw-aigw-operator",
        "aigw-aigw-operator-leader-election",
    ]


def test_no_lease_rbac_without_election_or_rbac(chart: helm.Chart) -> None:
    for values in (VALUE_SETS["single-without-election"], {"rbac": {"create": False}}):
        objects = operator_objects(render(chart, values))
        assert of_kind(objects, "Role") == [] and of_kind(objects, "RoleBinding") == []


@pytest.mark.parametrize("name", VALUE_SETS)
def test_rbac_has_no_wildcards(chart: helm.Chart, name: str) -> None:
    for obj in render(chart, VALUE_SETS[name]):
        for rule in obj.get("rules", []) if obj["kind"] in ("Role", "ClusterRole") else []:
            assert "*" not in rule["verbs"] and "*" not in rule.get("resources", [])
            assert "*" not in rule.get("apiGroups", []) and "*" not in rule.get("nonResourceURLs", [])


# ------------------------------------------------------------------ CRDs


def test_one_copy_of_the_crds_deploy_crds_is_the_charts() -> None:
    """Helm reads only files inside the chart, so the chart holds the CRDs and deploy/crds (what
    `kubectl apply -f deploy/crds` and tests/unit/test_crds.py use) links to them: no second copy
    to forget when a kind changes."""
    assert CRDS.is_symlink()
    assert CRDS.resolve() == (CHART / "files" / "crds").resolve()
    assert not (CHART / "files" / "crds").is_symlink()
    assert sorted(p.name for p in CRDS.glob("*.yaml")) == sorted(f"{info.plural}.aigw.dev.yaml" for info in all_kinds())


def test_rendered_crds_equal_deploy_crds(chart: helm.Chart) -> None:
    rendered = {c["metadata"]["name"]: c for c in of_kind(render(chart, {}), "CustomResourceDefinition")}
    expected = {c["metadata"]["name"]: c for c in (yaml.safe_load(p.read_text()) for p in CRDS.glob("*.yaml"))}
    assert rendered.keys() == expected.keys()
    for name, crd in rendered.items():
        assert crd["metadata"].pop("annotations") == {"helm.sh/resource-policy": "keep"}
        assert crd == expected[name], name


def test_crds_can_be_left_out(chart: helm.Chart) -> None:
    assert of_kind(render(chart, VALUE_SETS["no-crds"]), "CustomResourceDefinition") == []
    # RBAC still follows every kind even when the CRDs are installed some other way.
    assert ("aigw.dev", "gatewayendpoints") in _rules(
        one(operator_objects(render(chart, VALUE_SETS["no-crds"])), "ClusterRole")
    )


# ------------------------------------------------------------------ values.schema.json


def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text())
    return schema


def _resolve(sub: dict[str, Any] | None) -> dict[str, Any] | None:
    """Follows a local "$ref": "#/definitions/..." (the upstreams share one definition)."""
    if sub is not None and "$ref" in sub:
        resolved: dict[str, Any] = _schema()
        for part in sub["$ref"].removeprefix("#/").split("/"):
            resolved = resolved[part]
        return resolved
    return sub


def _paths(values: Any, schema: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, dict[str, Any] | None]]:
    if isinstance(values, dict) and "properties" in schema:
        for key, value in values.items():
            sub = _resolve(schema["properties"].get(key))
            yield f"{prefix}{key}", sub
            if sub is not None:
                yield from _paths(value, sub, f"{prefix}{key}.")


def test_schema_covers_every_value() -> None:
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    missing = [path for path, sub in _paths(defaults, _schema()) if sub is None]
    assert missing == []
    undocumented = [
        path
        for path, sub in _paths(defaults, _schema())
        if sub is not None and not sub.get("description") and sub.get("type") != "object"
    ]
    assert undocumented == []
    jsonschema.Draft7Validator.check_schema(_schema())
    jsonschema.validate(defaults, _schema())


BAD_VALUES: dict[str, dict[str, Any]] = {
    "two replicas without leader election": {"replicaCount": 2, "leaderElection": {"enabled": False}},
    "negative replicas": {"replicaCount": -1},
    "replicas as a string": {"replicaCount": "2"},
    "leader election enabled as a string": {"leaderElection": {"enabled": "true"}},
    "zero lease duration": {"leaderElection": {"leaseDuration": 0}},
    "negative renew deadline": {"leaderElection": {"renewDeadline": -10}},
    "retry period as a string": {"leaderElection": {"retryPeriod": "2s"}},
    "unknown leader election key": {"leaderElection": {"leaseName": "mine"}},
    "unknown anti-affinity preset": {"podAntiAffinityPreset": "spread"},
    "spread constraint without topology key": {
        "topologySpreadConstraints": [{"maxSkew": 1, "whenUnsatisfiable": "ScheduleAnyway"}]
    },
    "PDB maxUnavailable not a number or percentage": {"podDisruptionBudget": {"maxUnavailable": "one"}},
    "unknown log level": {"operator": {"logLevel": "TRACE"}},
    "unknown log format": {"operator": {"logFormat": "yaml"}},
    "namespaces as a string": {"watch": {"namespaces": "default"}},
    "invalid namespace name": {"watch": {"namespaces": ["Team_A"]}},
    "unknown top-level key": {"replicas": 1},
    "typo in a nested key": {"upstreams": {"baseten": {"apiKey": {"existingSecrets": "x"}}}},
    "base URL without scheme": {"upstreams": {"baseten": {"baseUrl": "api.baseten.co"}}},
    "registry URL without scheme": {"upstreams": {"modelRegistry": {"baseUrl": "syft.example.com"}}},
    "unknown upstream": {"upstreams": {"openai": {"baseUrl": "https://api.openai.com"}}},
    "zero rate limit": {"upstreams": {"ngrok": {"rateLimitPerSecond": 0}}},
    "rate limit as a string": {"upstreams": {"ngrok": {"rateLimitPerSecond": "fast"}}},
    "negative timeout": {"upstreams": {"modelRegistry": {"timeout": -1}}},
    "empty secret key": {"upstreams": {"ngrok": {"apiKey": {"secretKey": ""}}}},
    "old top-level baseten key": {"baseten": {"baseUrl": "https://api.baseten.co"}},
    "zero resync": {"operator": {"resyncInterval": 0}},
    "bad pull policy": {"image": {"pullPolicy": "Sometimes"}},
    "port out of range": {"liveness": {"port": 70000}},
    "metrics port out of range": {"metrics": {"port": 0}},
    "metrics port as a string": {"metrics": {"port": "9090"}},
    "unknown readiness key": {"readiness": {"path": "/ready"}},
    "bad digest": {"image": {"digest": "latest"}},
    "bad scrape interval": {"metrics": {"serviceMonitor": {"interval": "soon"}}},
    "crds.install not a boolean": {"crds": {"install": "yes"}},
    "wildcard beside a namespace": {"upstreams": {"together": {"apiKey": {"namespaces": ["*", "team-a"]}}}},
    "default-key namespace not a name": {"upstreams": {"baseten": {"apiKey": {"namespaces": ["Team_A"]}}}},
    "default-key namespaces as a string": {"upstreams": {"baseten": {"apiKey": {"namespaces": "*"}}}},
    "prometheusRule.enabled as a string": {"metrics": {"prometheusRule": {"enabled": "true"}}},
    "prometheusRule label not a string": {"metrics": {"prometheusRule": {"labels": {"release": 1}}}},
    "unknown prometheusRule key": {"metrics": {"prometheusRule": {"rules": []}}},
    "dashboards.enabled as a string": {"metrics": {"dashboards": {"enabled": "yes"}}},
    "empty dashboard label": {"metrics": {"dashboards": {"label": ""}}},
    "dashboard label with a space": {"metrics": {"dashboards": {"label": "grafana dashboard"}}},
    "dashboard label value as a number": {"metrics": {"dashboards": {"labelValue": 1}}},
    "invalid dashboard namespace": {"metrics": {"dashboards": {"namespace": "Monitoring"}}},
    "unknown drain policy": {"drain": {"policy": "Orphan"}},
    "drain timeout too short": {"drain": {"timeoutSeconds": 1}},
    "drain timeout as a string": {"drain": {"timeoutSeconds": "4m"}},
    "unknown drain key": {"drain": {"wait": True}},
    "aggregated roles flag as a string": {"rbac": {"aggregateToDefaultRoles": "yes"}},
}


@pytest.mark.parametrize("case", BAD_VALUES)
def test_schema_rejects_bad_values(chart: helm.Chart, case: str) -> None:
    values = BAD_VALUES[case]
    merged = chart.merge_values(copy.deepcopy(values))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(merged, _schema())
    # Helm itself refuses to render them.
    with pytest.raises(helm.HelmValuesError):
        chart.render(values=copy.deepcopy(values), name=RELEASE, namespace=NAMESPACE)


# ------------------------------------------------------------------ NOTES.txt


def test_notes_show_how_to_see_the_leader(chart: helm.Chart) -> None:
    text = notes(chart, {})
    assert "kubectl get lease -n aigw-system aigw-aigw-operator" in text
    assert "HOLDER" in text
    assert "kubectl get lease" not in notes(chart, VALUE_SETS["single-without-election"])


def test_notes_explain_the_first_resource(chart: helm.Chart) -> None:
    text = notes(chart, {})
    assert "kind: GatewayEndpoint" in text
    assert "kubectl -n default apply -f -" in text
    assert "credentialsSecretRef" in text  # no default key: the user needs a Secret
    assert "aigw-operator drain" in text
    assert "upstreams.modelRegistry.baseUrl is not set" in text
    assert "upstreams.modelRegistry.baseUrl" not in notes(chart, VALUE_SETS["keys-from-values"])
    namespaced = notes(chart, {**VALUE_SETS["namespaced"], **VALUE_SETS["created-secret"]})
    assert "kubectl -n team-a apply -f -" in namespaced
    # The manifest in the notes is valid for the CRD's schema as the emulator's admission sees it.
    manifest = namespaced.split("apply -f -\n", 1)[1].split("  YAML", 1)[0]
    assert "credentialsSecretRef" not in manifest  # the default key serves it
    body = yaml.safe_load("\n".join(line[2:] for line in manifest.splitlines()))
    from aigw_operator.kinds.gateway_endpoint import INFO

    INFO.spec_model.model_validate(body["spec"])


def test_notes_show_every_kind(chart: helm.Chart) -> None:
    crds = {
        c["spec"]["names"]["kind"]: c["spec"]["names"] for c in of_kind(render(chart, {}), "CustomResourceDefinition")
    }
    text = notes(chart, VALUE_SETS["existing-and-value"])
    rows = dict(re.findall(r"^  (\w+) +.*\(kubectl get (\w+)\)", text, re.M))
    assert sorted(rows) == sorted(info.kind for info in all_kinds())
    for kind, short in rows.items():
        names = crds[kind]
        assert short in [names["singular"], names["plural"], *names.get("shortNames", [])], (kind, short)
    # Each kind's default key, as the values give it.
    assert "Secret ngrok-credentials (upstreams.ngrok)" in text
    assert "Secret aigw-aigw-operator-model-registry (upstreams.modelRegistry)" in text
    assert "none, each resource sets spec.credentialsSecretRef (upstreams.together)" in text
    assert "`aigw-operator drain --policy Retain`" in text
    assert "drain --policy Delete" in notes(chart, VALUE_SETS["drain-delete"])
    assert "aigw-operator drain` removes" in notes(chart, VALUE_SETS["no-drain-no-aggregation"])


# ------------------------------------------------------------------ Chart.yaml


def _chart_yaml() -> dict[str, Any]:
    metadata: dict[str, Any] = yaml.safe_load((CHART / "Chart.yaml").read_text())
    return metadata


def test_artifacthub_lists_every_crd() -> None:
    listed = yaml.safe_load(_chart_yaml()["annotations"]["artifacthub.io/crds"])
    crds = [yaml.safe_load(p.read_text()) for p in sorted((CHART / "files" / "crds").glob("*.yaml"))]
    expected = {
        (c["spec"]["names"]["kind"], c["metadata"]["name"], v["name"])
        for c in crds
        for v in c["spec"]["versions"]
        if v["served"]
    }
    assert {(e["kind"], e["name"], e["version"]) for e in listed} == expected
    assert len(listed) == len(crds) == len(list(all_kinds()))
    assert all(e["displayName"] and e["description"] for e in listed)


def _field_paths(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for rule in node.get("x-kubernetes-validations") or []:
            if "fieldPath" in rule:
                yield rule["fieldPath"]
        for value in node.values():
            yield from _field_paths(value)
    elif isinstance(node, list):
        for value in node:
            yield from _field_paths(value)


def test_kube_version_is_what_the_crds_need_and_metadata_is_complete() -> None:
    metadata = _chart_yaml()
    # x-kubernetes-validations[].fieldPath is served from Kubernetes 1.28 on.
    assert any(_field_paths(yaml.safe_load(p.read_text())) for p in (CHART / "files" / "crds").glob("*.yaml"))
    assert metadata["kubeVersion"] == ">=1.28.0-0"
    assert all(v >= "1.28" for v in KUBE_VERSIONS)
    assert metadata["home"] == "https://github.com/aigw-dev/aigw-operator"
    assert metadata["home"] in metadata["sources"]
    # The icon is a file of this repository, at the path its raw URL names.
    prefix = "https://raw.githubusercontent.com/aigw-dev/aigw-operator/main/"
    assert metadata["icon"].startswith(prefix)
    icon = REPO / metadata["icon"].removeprefix(prefix)
    assert icon.is_file() and icon.read_text().lstrip().startswith("<svg")


# ------------------------------------------------------------------ aggregated tenant roles


def test_aggregated_view_and_edit_roles_cover_every_kind(chart: helm.Chart) -> None:
    objects = render(chart, {})
    roles = {r["metadata"]["name"]: r for r in of_kind(objects, "ClusterRole") if aggregated(r)}
    assert sorted(roles) == ["aigw-aigw-operator-edit", "aigw-aigw-operator-view"]
    plurals = {info.plural for info in all_kinds()}
    view, edit = roles["aigw-aigw-operator-view"], roles["aigw-aigw-operator-edit"]
    assert _rules(view) == {("aigw.dev", p): {"get", "list", "watch"} for p in plurals}
    assert _rules(edit) == {
        ("aigw.dev", p): {"get", "list", "watch", "create", "update", "patch", "delete"} for p in plurals
    }
    label = "rbac.authorization.k8s.io/aggregate-to-{}"
    assert view["metadata"]["labels"][label.format("view")] == "true"
    assert not {label.format("edit"), label.format("admin")} & set(view["metadata"]["labels"])
    assert (
        edit["metadata"]["labels"][label.format("edit")] == edit["metadata"]["labels"][label.format("admin")] == "true"
    )
    # Bound to nobody by the chart: they only extend view, edit and admin.
    for binding in of_kind(objects, "ClusterRoleBinding") + of_kind(objects, "RoleBinding"):
        assert binding["roleRef"]["name"] not in roles
    # Namespaced installations get them too (they are for tenants, not for the operator).
    assert len([r for r in of_kind(render(chart, VALUE_SETS["namespaced"]), "ClusterRole") if aggregated(r)]) == 2
    for off in (VALUE_SETS["no-drain-no-aggregation"], {"rbac": {"create": False}}):
        assert not [r for r in of_kind(render(chart, off), "ClusterRole") if aggregated(r)]


# ------------------------------------------------------------------ the pre-delete hook


def _hook(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if is_hook(o)]


def _job_args(objects: list[dict[str, Any]]) -> list[str]:
    [job] = of_kind(_hook(objects), "Job")
    [main] = job["spec"]["template"]["spec"]["containers"]
    args: list[str] = [*main["command"][1:], *main["args"]]
    return args


def test_pre_delete_hook_retain_by_default(chart: helm.Chart) -> None:
    objects = render(chart, {})
    hook = _hook(objects)
    assert sorted((o["kind"], o["metadata"]["name"]) for o in hook) == [
        ("ClusterRole", "aigw-aigw-operator-drain"),
        ("ClusterRoleBinding", "aigw-aigw-operator-drain"),
        ("Job", "aigw-aigw-operator-drain"),
        ("Role", "aigw-aigw-operator-drain-stop-operator"),
        ("RoleBinding", "aigw-aigw-operator-drain-stop-operator"),
        ("ServiceAccount", "aigw-aigw-operator-drain"),
    ]
    for obj in hook:
        annotations = obj["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == "pre-delete"
        assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
        # The ServiceAccount and RBAC first: Helm creates hooks in weight order.
        assert annotations["helm.sh/hook-weight"] == ("0" if obj["kind"] == "Job" else "-10")
    [job] = of_kind(hook, "Job")
    deployment = one(objects, "Deployment")
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "aigw-aigw-operator-drain"
    assert pod["restartPolicy"] == "Never" and job["spec"]["backoffLimit"] == 0
    assert job["spec"]["activeDeadlineSeconds"] == 240 + 60
    [main] = pod["containers"]
    assert main["image"] == container(objects)["image"]
    assert main["securityContext"] == container(objects)["securityContext"]
    # The Job's pod is no target of the operator's Service, PDB or anti-affinity.
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert not selector.items() <= job["spec"]["template"]["metadata"]["labels"].items()
    # The command line is the CLI's own, stopping this release's Deployment.
    from aigw_operator.cli import build_parser

    args = build_parser().parse_args(_job_args(objects))
    assert (args.command, args.policy, args.timeout, args.namespace) == ("drain", "Retain", 240.0, None)
    assert args.stop_deployment == f"{NAMESPACE}/{deployment['metadata']['name']}"
    plurals = {info.plural for info in all_kinds()}
    [role] = of_kind(hook, "ClusterRole")
    assert _rules(role) == {
        **{("aigw.dev", p): {"list", "get", "patch"} for p in plurals},
        ("", "secrets"): {"list", "get", "patch"},
    }
    [stop] = of_kind(hook, "Role")
    assert stop["metadata"]["namespace"] == NAMESPACE
    assert stop["rules"] == [
        {
            "apiGroups": ["apps"],
            "resources": ["deployments"],
            "resourceNames": [deployment["metadata"]["name"]],
            "verbs": ["get"],
        },
        {
            "apiGroups": ["apps"],
            "resources": ["deployments/scale"],
            "resourceNames": [deployment["metadata"]["name"]],
            "verbs": ["patch"],
        },
    ]
    for binding in of_kind(hook, "ClusterRoleBinding") + of_kind(hook, "RoleBinding"):
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "aigw-aigw-operator-drain", "namespace": NAMESPACE}
        ]


def test_pre_delete_hook_delete_policy_and_watched_namespaces(chart: helm.Chart) -> None:
    from aigw_operator.cli import build_parser

    objects = render(chart, VALUE_SETS["drain-delete"])
    args = build_parser().parse_args(_job_args(objects))
    assert (args.policy, args.timeout, args.stop_deployment) == ("Delete", 600.0, None)
    assert one(_hook(objects), "Job")["spec"]["activeDeadlineSeconds"] == 660
    [role] = of_kind(_hook(objects), "ClusterRole")
    plurals = {info.plural for info in all_kinds()}
    # Delete leaves the resources' finalizers to the operator, and stops nothing.
    assert _rules(role) == {
        **{("aigw.dev", p): {"list", "delete"} for p in plurals},
        ("", "secrets"): {"list", "get", "patch"},
    }
    assert of_kind(_hook(objects), "Role") == []

    namespaced = render(chart, VALUE_SETS["namespaced-drain-delete"])
    args = build_parser().parse_args(_job_args(namespaced))
    assert args.namespace == ["team-a", "team-b"]
    hook = _hook(namespaced)
    assert of_kind(hook, "ClusterRole") == [] and of_kind(hook, "ClusterRoleBinding") == []
    assert sorted(r["metadata"]["namespace"] for r in of_kind(hook, "Role")) == ["team-a", "team-b"]
    assert sorted(b["metadata"]["namespace"] for b in of_kind(hook, "RoleBinding")) == ["team-a", "team-b"]

    assert _hook(render(chart, VALUE_SETS["no-drain-no-aggregation"])) == []


# ------------------------------------------------------------------ several installations


def test_two_installations_share_the_crds_and_nothing_else(chart: helm.Chart) -> None:
    """One installation per model registry: the second (and every further) one has
    crds.install=false, watches its own namespaces, and its objects never collide with the first's."""
    first = render_release(chart, "registry-a", {"watch": {"namespaces": ["team-a"]}})
    second = render_release(chart, "registry-b", {"watch": {"namespaces": ["team-b"]}, "crds": {"install": False}})
    assert len(of_kind(first, "CustomResourceDefinition")) == len(list(all_kinds()))
    assert of_kind(second, "CustomResourceDefinition") == []

    def names(objects: list[dict[str, Any]]) -> set[tuple[str, str | None, str]]:
        return {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objects}

    assert names(first) & names(second) == set()
    assert env(first)["AIGW_LEADER_ELECTION__LEASE_NAME"] != env(second)["AIGW_LEADER_ELECTION__LEASE_NAME"]
    # Both documented where a user looks: the README's Helm section and values.yaml.
    readme = (REPO / "README.md").read_text()
    assert "crds.install=false" in readme.split("## Install with Helm", 1)[1].split("\n## ", 1)[0]
    assert "crds.install=false" in (CHART / "values.yaml").read_text()


def render_release(chart: helm.Chart, name: str, values: dict[str, Any]) -> list[dict[str, Any]]:
    manifests = chart.render(values=copy.deepcopy(values), name=name, namespace=NAMESPACE, is_install=True)
    return [
        doc
        for path, text in sorted(manifests.items())
        if not path.endswith("NOTES.txt")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


# ------------------------------------------------------------------ /metrics access


def test_metrics_access_rbac_in_both_modes(chart: helm.Chart, monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator may create TokenReviews and SubjectAccessReviews (cluster-level APIs: a
    ClusterRole even when it watches named namespaces only), and nothing else through them; the
    reader role is what a scraper is bound to."""
    for values in ({}, VALUE_SETS["namespaced"]):
        objects = render(chart, values)
        assert env(objects)["AIGW_METRICS_AUTH"] == "kubernetes"
        assert _settings(chart, values, monkeypatch).metrics_auth == "kubernetes"
        assert _settings(chart, values, monkeypatch).metrics_auth_cache_ttl == 10
        roles = {r["metadata"]["name"]: r for r in of_kind(objects, "ClusterRole") if metrics_auth(r)}
        assert sorted(roles) == ["aigw-aigw-operator-metrics-auth", "aigw-aigw-operator-metrics-reader"]
        assert roles["aigw-aigw-operator-metrics-auth"]["rules"] == [
            {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
            {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]},
        ]
        assert roles["aigw-aigw-operator-metrics-reader"]["rules"] == [
            {"nonResourceURLs": ["/metrics"], "verbs": ["get"]}
        ]
        bindings = [b for b in of_kind(objects, "ClusterRoleBinding") if metrics_auth(b)]
        assert [b["metadata"]["name"] for b in bindings] == ["aigw-aigw-operator-metrics-auth"]
        account = one(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"]
        assert bindings[0]["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "aigw-aigw-operator-metrics-auth",
        }
        assert bindings[0]["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}]
    # The reader role bound to the subjects given, and the monitor's token from a Secret instead.
    objects = render(chart, VALUE_SETS["metrics-reader-secret-token"])
    [reader] = [b for b in of_kind(objects, "ClusterRoleBinding") if b["metadata"]["name"].endswith("-metrics-reader")]
    assert reader["roleRef"]["name"] == "aigw-aigw-operator-metrics-reader"
    assert reader["subjects"] == [{"kind": "ServiceAccount", "name": "prometheus-k8s", "namespace": "monitoring"}]
    [endpoint] = one(objects, "ServiceMonitor")["spec"]["endpoints"]
    assert endpoint["authorization"] == {"type": "Bearer", "credentials": {"name": "prom-token", "key": "token"}}
    assert "bearerTokenFile" not in endpoint


def test_metrics_auth_off_is_open_and_asks_nothing(chart: helm.Chart, monkeypatch: pytest.MonkeyPatch) -> None:
    objects = render(chart, VALUE_SETS["metrics-open"])
    assert env(objects)["AIGW_METRICS_AUTH"] == "none"
    assert _settings(chart, VALUE_SETS["metrics-open"], monkeypatch).metrics_auth == "none"
    # No review permission and no token sent; the reader role stays, for when it is turned on.
    assert [r["metadata"]["name"] for r in of_kind(objects, "ClusterRole") if metrics_auth(r)] == [
        "aigw-aigw-operator-metrics-reader"
    ]
    assert not [b for b in of_kind(objects, "ClusterRoleBinding") if metrics_auth(b)]
    [endpoint] = one(objects, "ServiceMonitor")["spec"]["endpoints"]
    assert not {"bearerTokenFile", "authorization", "scheme"} & set(endpoint)
    # Without RBAC from the chart, none of it.
    objects = render(chart, {"rbac": {"create": False}})
    assert not [o for o in objects if metrics_auth(o)]
    # The values file says it loudly.
    values = (CHART / "values.yaml").read_text()
    assert "!!! OFF (false) SERVES /metrics TO ANYONE WHO CAN REACH THE POD'S PORT" in values
