"""/metrics moves as the operator reconciles against the simulators, under controller-runtime's,
client-go's and Crossplane's names, and counts resources per kind, never per object."""

from __future__ import annotations

import httpx

from aigw_testbed.kubectl import condition
from aigw_testbed.simulators.baseten import BasetenSimulator
from aigw_testbed.simulators.together import TogetherSimulator
from tests.alerts import rules, selected
from tests.operator.conftest import KubeEnv, OperatorRunner
from tests.scrape import Samples, scrape, series, total, until, value

PLURAL = "gatewayendpoints"
GATEWAY = {"gvk": "aigw.dev/v1alpha1, Kind=GatewayEndpoint"}
DEDICATED = {"gvk": "aigw.dev/v1alpha1, Kind=DedicatedEndpoint"}
CONTROLLER = {"controller": "gatewayendpoint"}
QUEUE = {"name": "gatewayendpoint", "controller": "gatewayendpoint"}


def spec(model_id: str = "m1") -> dict[str, object]:
    return {
        "slug": "my-org/metrics",
        "targets": [{"provider": "BASETEN", "modelId": model_id}],
        "credentialsSecretRef": {"name": "baseten"},
    }


def gauges(samples: Samples, labels: dict[str, str]) -> tuple[float, float, float]:
    """Crossplane's exists, ready and synced for one kind."""
    return (
        value(samples, "crossplane_managed_resource_exists", **labels),
        value(samples, "crossplane_managed_resource_ready", **labels),
        value(samples, "crossplane_managed_resource_synced", **labels),
    )


def moved(before: tuple[float, ...], after: tuple[float, ...]) -> tuple[float, ...]:
    return tuple(b - a for a, b in zip(before, after, strict=True))


async def test_metrics_follow_a_create_and_an_upstream_failure(
    kube_env: KubeEnv, baseten: BasetenSimulator, operator: OperatorRunner, credentials: str
) -> None:
    before = await scrape()
    await kube_env.kube.create("GatewayEndpoint", PLURAL, "metered", spec())
    obj = await kube_env.kube.wait_condition(PLURAL, "metered", "Ready", "True")
    after = await until(lambda s: moved(gauges(before, GATEWAY), gauges(s, GATEWAY)) == (1, 1, 1))
    assert moved(gauges(before, GATEWAY), gauges(after, GATEWAY)) == (1, 1, 1)
    reason = condition(obj, "Ready")["reason"]  # type: ignore[index]
    ready = {**GATEWAY, "condition": "Ready", "status": "True", "reason": reason}
    assert value(after, "aigw_managed_resources", **ready) - value(before, "aigw_managed_resources", **ready) == 1

    def grew(metric: str, **labels: str) -> float:
        return value(after, metric, **labels) - value(before, metric, **labels)

    # controller-runtime's reconcile metrics, every result's series there from the start.
    assert grew("controller_runtime_reconcile_total", result="success", **CONTROLLER) >= 1
    for result in ("error", "requeue", "requeue_after"):
        assert ("controller_runtime_reconcile_total", tuple(sorted({**CONTROLLER, "result": result}.items()))) in after
    assert grew("controller_runtime_reconcile_time_seconds_count", **CONTROLLER) >= 1
    assert (
        value(after, "controller_runtime_max_concurrent_reconciles", **CONTROLLER) == operator.settings.workers_per_kind
    )
    assert value(after, "controller_runtime_active_workers", **CONTROLLER) >= 0
    assert grew("controller_runtime_reconcile_errors_total", **CONTROLLER) == 0
    # The work queue's: the create made the object due at least once, a worker took it, ran
    # it, and scheduled the resync (a delayed add: client-go's retry).
    assert grew("workqueue_adds_total", **QUEUE) >= 1
    assert grew("workqueue_queue_duration_seconds_count", **QUEUE) >= 1
    assert grew("workqueue_work_duration_seconds_count", **QUEUE) >= 1
    assert grew("workqueue_retries_total", **QUEUE) >= 1
    assert ("workqueue_depth", tuple(sorted(QUEUE.items()))) in after
    assert ("workqueue_unfinished_work_seconds", tuple(sorted(QUEUE.items()))) in after
    # Upstream calls by route template and code, in the counter and the histogram alike.
    post = {"upstream": "baseten", "method": "POST", "route": "/v1/gateway/endpoints", "code": "200"}
    assert grew("aigw_upstream_requests_total", **post) == 1
    assert grew("aigw_upstream_request_duration_seconds_count", **post) == 1
    assert grew("crossplane_managed_resource_first_time_to_readiness_seconds_count", **GATEWAY) == 1
    assert all(
        "/v1/gateway/endpoints/" not in name or "{id}" in name
        for (_, labels) in after
        for key, name in labels
        if key == "route"
    ), "route templates, not ids"
    # The operator's own Kubernetes requests, as client-go counts them: its status write and Events.
    host = httpx.URL(kube_env.url).netloc.decode()
    for method, code in (("PATCH", "200"), ("POST", "201")):
        labels = {"code": code, "method": method, "host": host}
        assert grew("rest_client_requests_total", **labels) >= 1, labels
    # Nothing per object: no series names the resource or its namespace.
    assert not [
        labels
        for (_, labels) in after
        if any(key == "namespace" or value_ in ("metered", kube_env.kube.namespace) for key, value_ in labels)
    ]

    # Each reconcile's observe (a GET, retried twice) meets 500s until the gauges have been seen:
    # a single failed reconcile is retried within 0.2 s, quicker than a scrape may catch it.
    baseten.faults.fail_next(10_000, status=500)
    await kube_env.kube.patch_spec(PLURAL, "metered", {"targets": [{"provider": "BASETEN", "modelId": "m2"}]})
    await kube_env.kube.wait_condition(PLURAL, "metered", "Synced", "False", reason="UpstreamUnavailable")
    failed = await until(lambda s: moved(gauges(before, GATEWAY), gauges(s, GATEWAY)) == (1, 1, 0))
    # Synced=False counts out of synced (Ready stays: the upstream object still serves).
    assert moved(gauges(before, GATEWAY), gauges(failed, GATEWAY)) == (1, 1, 0)
    unsynced = {**GATEWAY, "condition": "Synced", "status": "False", "reason": "UpstreamUnavailable"}
    assert (
        value(failed, "aigw_managed_resources", **unsynced) - value(before, "aigw_managed_resources", **unsynced) == 1
    )
    failures = {"reason": "UpstreamUnavailable", **CONTROLLER}
    assert value(failed, "aigw_reconcile_failures_total", **failures) > value(
        after, "aigw_reconcile_failures_total", **failures
    )
    # A transient failure is retried by the loop: controller-runtime's requeue, not an error.
    requeue = {"result": "requeue", **CONTROLLER}
    assert value(failed, "controller_runtime_reconcile_total", **requeue) > value(
        after, "controller_runtime_reconcile_total", **requeue
    )
    baseten.faults.reset()
    await kube_env.kube.wait_condition(PLURAL, "metered", "Synced", "True")
    recovered = await scrape()
    # Every failed reconcile made one call and retried it twice, each answered 500.
    get_500 = {"upstream": "baseten", "method": "GET", "route": "/v1/gateway/endpoints/{id}", "code": "500"}
    calls = value(recovered, "aigw_upstream_requests_total", **get_500) - value(
        after, "aigw_upstream_requests_total", **get_500
    )
    retries = {"upstream": "baseten", "reason": "server_error"}
    retried = value(recovered, "aigw_upstream_retries_total", **retries) - value(
        after, "aigw_upstream_retries_total", **retries
    )
    assert calls >= 3 and calls % 3 == 0, calls
    assert retried == calls * 2 / 3, (calls, retried)

    await kube_env.kube.delete(PLURAL, "metered")
    await kube_env.kube.wait_gone(PLURAL, "metered")
    gone = await until(lambda s: moved(gauges(before, GATEWAY), gauges(s, GATEWAY)) == (0, 0, 0))
    assert moved(gauges(before, GATEWAY), gauges(gone, GATEWAY)) == (0, 0, 0)
    # The deletion was a reconcile too, with its own Events.
    assert value(gone, "controller_runtime_reconcile_total", result="success", **CONTROLLER) > value(
        failed, "controller_runtime_reconcile_total", result="success", **CONTROLLER
    )


async def test_an_invalid_spec_is_a_terminal_error(
    kube_env: KubeEnv, baseten: BasetenSimulator, operator: OperatorRunner, credentials: str
) -> None:
    before = await scrape()
    await kube_env.kube.create("GatewayEndpoint", PLURAL, "refused", {**spec(), "slug": "not-our-org/refused"})
    await kube_env.kube.wait_condition(PLURAL, "refused", "Ready", "False", reason="InvalidSpec")
    after = await until(
        lambda s: (
            total(s, "controller_runtime_terminal_reconcile_errors_total", **CONTROLLER)
            > total(before, "controller_runtime_terminal_reconcile_errors_total", **CONTROLLER)
        )
    )
    for metric in ("controller_runtime_terminal_reconcile_errors_total", "controller_runtime_reconcile_errors_total"):
        assert value(after, metric, **CONTROLLER) - value(before, metric, **CONTROLLER) == 1, metric
    error = {"result": "error", **CONTROLLER}
    assert (
        value(after, "controller_runtime_reconcile_total", **error)
        - value(before, "controller_runtime_reconcile_total", **error)
        == 1
    )
    unready = {**GATEWAY, "condition": "Ready", "status": "False", "reason": "InvalidSpec"}
    after = await until(
        lambda s: value(s, "aigw_managed_resources", **unready) > value(before, "aigw_managed_resources", **unready)
    )
    assert value(after, "aigw_managed_resources", **unready) - value(before, "aigw_managed_resources", **unready) == 1
    # A resource not Ready because of its spec is what the alert is for.
    assert unready in not_ready_alert_selects(after)


async def test_resource_gauges_drop_however_a_resource_goes(
    kube_env: KubeEnv, baseten: BasetenSimulator, operator: OperatorRunner, credentials: str
) -> None:
    before = await scrape()
    for n, name in enumerate(("finalized", "stripped", "kept")):
        await kube_env.kube.create("GatewayEndpoint", PLURAL, name, {**spec(f"m{n}"), "slug": f"my-org/{name}"})
    for name in ("finalized", "stripped", "kept"):
        await kube_env.kube.wait_condition(PLURAL, name, "Ready", "True")
    three = await until(lambda s: moved(gauges(before, GATEWAY), gauges(s, GATEWAY)) == (3, 3, 3))
    assert moved(gauges(before, GATEWAY), gauges(three, GATEWAY)) == (3, 3, 3)

    # Deleted with the finalizer: the operator deletes upstream, then lets it go.
    await kube_env.kube.delete(PLURAL, "finalized")
    await kube_env.kube.wait_gone(PLURAL, "finalized")
    two = await until(lambda s: moved(gauges(before, GATEWAY), gauges(s, GATEWAY))[0] == 2)
    assert moved(gauges(before, GATEWAY), gauges(two, GATEWAY)) == (2, 2, 2)

    # Deleted without it: the upstream refuses the delete, and the finalizer is taken off by
    # hand (as `aigw-operator drain` does): the operator's deletion never finishes, the object goes.
    baseten.faults.fail_next(1000, status=500)
    await kube_env.kube.delete(PLURAL, "stripped")
    await kube_env.kube.wait_condition(PLURAL, "stripped", "Ready", "False", reason="DeletionBlocked")
    blocked = {**GATEWAY, "condition": "Ready", "status": "False", "reason": "DeletionBlocked"}
    seen = await until(
        lambda s: value(s, "aigw_managed_resources", **blocked) > value(before, "aigw_managed_resources", **blocked)
    )
    assert value(seen, "aigw_managed_resources", **blocked) - value(before, "aigw_managed_resources", **blocked) == 1
    (await kube_env.kube.patch_meta(PLURAL, "stripped", {"finalizers": None})).raise_for_status()
    await kube_env.kube.wait_gone(PLURAL, "stripped")
    baseten.faults.reset()
    one = await until(lambda s: moved(gauges(before, GATEWAY), gauges(s, GATEWAY))[0] == 1)
    assert moved(gauges(before, GATEWAY), gauges(one, GATEWAY)) == (1, 1, 1)
    assert value(one, "aigw_managed_resources", **blocked) == value(before, "aigw_managed_resources", **blocked)

    # Forgotten by the controller: an operator that stops (or loses its Lease) counts nothing;
    # its successor counts what it finds.
    await operator.stop()
    stopped = await scrape()
    assert gauges(stopped, GATEWAY) == gauges(before, GATEWAY)
    assert value(stopped, "workqueue_depth", **QUEUE) == value(before, "workqueue_depth", **QUEUE)
    await operator.start()
    back = await until(lambda s: moved(gauges(before, GATEWAY), gauges(s, GATEWAY)) == (1, 1, 1))
    assert moved(gauges(before, GATEWAY), gauges(back, GATEWAY)) == (1, 1, 1)


def not_ready_alert_selects(samples: Samples) -> list[dict[str, str]]:
    """The series of aigw_managed_resources that the AigwResourceNotReady alert's selector picks."""
    expr = rules()["AigwResourceNotReady"]["expr"]
    return selected(expr, "aigw_managed_resources", series(samples, "aigw_managed_resources"))


async def test_a_dedicated_endpoint_stopped_on_purpose_is_no_outage(
    kube_env: KubeEnv, together: TogetherSimulator, operator: OperatorRunner, credentials: str
) -> None:
    before = await scrape()
    body = {
        "model": "meta-llama/Llama-3-8b-chat-hf",
        "hardware": "1x_nvidia_h100_80gb_sxm",
        "autoscaling": {"minReplicas": 1, "maxReplicas": 2},
        "credentialsSecretRef": {"name": "together"},
    }
    await kube_env.kube.create("DedicatedEndpoint", "dedicatedendpoints", "llama", body)
    await kube_env.kube.wait_condition("dedicatedendpoints", "llama", "Ready", "True")
    # While it started, the loop polled it at the short interval: controller-runtime's requeue_after.
    polled = {"controller": "dedicatedendpoint", "result": "requeue_after"}
    seen = await scrape()
    assert value(seen, "controller_runtime_reconcile_total", **polled) > value(
        before, "controller_runtime_reconcile_total", **polled
    )

    await kube_env.kube.patch_spec("dedicatedendpoints", "llama", {"state": "Stopped"})
    await kube_env.kube.wait_condition("dedicatedendpoints", "llama", "Ready", "False", reason="Stopped")
    stopped = {**DEDICATED, "condition": "Ready", "status": "False", "reason": "Stopped"}
    samples = await until(
        lambda s: (
            value(s, "aigw_managed_resources", **stopped) - value(before, "aigw_managed_resources", **stopped) == 1
        )
    )
    assert value(samples, "aigw_managed_resources", **stopped) - value(before, "aigw_managed_resources", **stopped) == 1
    assert moved(gauges(before, DEDICATED), gauges(samples, DEDICATED)) == (1, 0, 1)
    # Not Ready, as the spec says: the alert's selector leaves it out, all of this kind's series.
    assert [labels for labels in not_ready_alert_selects(samples) if labels["gvk"] == DEDICATED["gvk"]] == []
