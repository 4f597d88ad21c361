"""/metrics moves as the operator reconciles against the simulators."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from aigw_operator.base import metrics
from aigw_testbed.simulators.baseten import BasetenSimulator
from tests.operator.conftest import KubeEnv, OperatorRunner

PLURAL = "gatewayendpoints"


async def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    port = metrics.serve(0)  # the operator's server: once per process
    async with httpx.AsyncClient() as http:
        response = await http.get(f"http://127.0.0.1:{port}/metrics")
    response.raise_for_status()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], metric: str, /, **labels: str) -> float:
    return samples.get((metric, tuple(sorted(labels.items()))), 0.0)


def spec(model_id: str = "m1") -> dict[str, object]:
    return {
        "slug": "my-org/metrics",
        "targets": [{"provider": "BASETEN", "modelId": model_id}],
        "credentialsSecretRef": {"name": "baseten"},
    }


async def test_metrics_follow_a_create_and_an_upstream_failure(
    kube_env: KubeEnv, baseten: BasetenSimulator, operator: OperatorRunner, credentials: str
) -> None:
    before = await scrape()
    await kube_env.kube.create("GatewayEndpoint", PLURAL, "metered", spec())
    await kube_env.kube.wait_condition(PLURAL, "metered", "Ready", "True")
    after = await scrape()
    kind = {"kind": "GatewayEndpoint"}
    assert value(after, "aigw_reconcile_total", result="success", **kind) > value(
        before, "aigw_reconcile_total", result="success", **kind
    )
    assert value(after, "aigw_resource_ready", namespace=kube_env.kube.namespace, name="metered", **kind) == 1
    assert value(after, "aigw_resource_synced", namespace=kube_env.kube.namespace, name="metered", **kind) == 1
    post = {"upstream": "baseten", "method": "POST", "route": "/v1/gateway/endpoints", "code": "200"}
    assert (
        value(after, "aigw_upstream_requests_total", **post)
        == value(before, "aigw_upstream_requests_total", **post) + 1
    )
    assert value(after, "aigw_time_to_first_ready_seconds_count", **kind) > value(
        before, "aigw_time_to_first_ready_seconds_count", **kind
    )
    assert all(
        "/v1/gateway/endpoints/" not in name or "{id}" in name
        for (_, labels) in after
        for key, name in labels
        if key == "route"
    ), "route templates, not ids"

    # The next reconcile's observe (a GET, retried twice) meets three 500s: an error with its labels.
    baseten.faults.fail_next(3, status=500)
    await kube_env.kube.patch_spec(PLURAL, "metered", {"targets": [{"provider": "BASETEN", "modelId": "m2"}]})
    await kube_env.kube.wait_condition(PLURAL, "metered", "Synced", "False", reason="UpstreamUnavailable")
    failed = await scrape()
    get_500 = {"upstream": "baseten", "method": "GET", "route": "/v1/gateway/endpoints/{id}", "code": "500"}
    requests_500 = value(failed, "aigw_upstream_requests_total", **get_500)
    assert requests_500 - value(after, "aigw_upstream_requests_total", **get_500) == 3
    retries = {"upstream": "baseten", "reason": "server_error"}
    assert (
        value(failed, "aigw_upstream_retries_total", **retries) - value(after, "aigw_upstream_retries_total", **retries)
        == 2
    )
    assert value(failed, "aigw_reconcile_errors_total", reason="UpstreamUnavailable", **kind) > value(
        after, "aigw_reconcile_errors_total", reason="UpstreamUnavailable", **kind
    )
    assert value(failed, "aigw_reconcile_total", result="requeue", **kind) > value(
        after, "aigw_reconcile_total", result="requeue", **kind
    )
    await kube_env.kube.wait_condition(PLURAL, "metered", "Synced", "True")

    await kube_env.kube.delete(PLURAL, "metered")
    await kube_env.kube.wait_gone(PLURAL, "metered")
    gone = await scrape()
    assert (
        "aigw_resource_ready",
        tuple(sorted({"namespace": kube_env.kube.namespace, "name": "metered", **kind}.items())),
    ) not in gone
