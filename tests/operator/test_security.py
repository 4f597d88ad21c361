"""The chart's RBAC grants exactly what the operator uses: every request the operator makes
through a full lifecycle of every kind is allowed by the rendered ClusterRole, and every verb
the ClusterRole grants was needed by at least one of those requests."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import helm_python as helm
import pytest

from aigw_operator.base import metrics
from aigw_operator.base.settings import LeaderElectionSettings
from aigw_testbed.simulators.baseten import BasetenSimulator
from aigw_testbed.simulators.model_registry import ModelRegistrySimulator
from aigw_testbed.simulators.ngrok import NgrokSimulator
from aigw_testbed.simulators.together import TogetherSimulator
from tests.conftest import OPENAI_KEY, record_summary
from tests.operator import test_dedicated_endpoint, test_metrics_access, test_model, test_provider
from tests.operator.conftest import KubeEnv, OperatorRunner, make_settings
from tests.operator.test_managed_secrets import endpoint_spec
from tests.packaging.test_chart import CHART, NAMESPACE, _rules, env, render

WATCHED = {"aigw.dev/watch": "true"}
# Clients that are not the operator: the test's own HTTP client.
TEST_CLIENTS = {"python-httpx"}


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def _granted(chart: helm.Chart, namespaces: list[str]) -> dict[tuple[str | None, str, str], set[str]]:
    """Every grant the chart renders, by (namespace, API group, resource): None is cluster scope,
    where a ClusterRole (bound by a ClusterRoleBinding) also covers every namespace."""
    granted: dict[tuple[str | None, str, str], set[str]] = {}
    objects = render(chart, {"watch": {"namespaces": namespaces}})
    account = next(o for o in objects if o["kind"] == "Deployment")["spec"]["template"]["spec"]["serviceAccountName"]
    # Only the roles bound to the operator's ServiceAccount: not the tenants' aggregated roles,
    # nor the pre-delete hook's own.
    bound = {
        (b["roleRef"]["kind"], b["metadata"].get("namespace"), b["roleRef"]["name"])
        for b in objects
        if b.get("kind") in ("ClusterRoleBinding", "RoleBinding")
        and any(s.get("kind") == "ServiceAccount" and s.get("name") == account for s in b["subjects"])
    }
    for obj in objects:
        if obj.get("kind") in ("ClusterRole", "Role"):
            scope = obj["metadata"].get("namespace") if obj["kind"] == "Role" else None
            if (obj["kind"], scope, obj["metadata"]["name"]) not in bound and (
                obj["kind"],
                None,
                obj["metadata"]["name"],
            ) not in bound:
                continue
            for (group, resource), verbs in _rules(obj).items():
                granted.setdefault((scope, group, resource), set()).update(verbs)
    return granted


def _allows(granted: dict[tuple[str | None, str, str], set[str]], key: tuple[str | None, str, str]) -> set[str]:
    namespace, group, resource = key
    verbs = set(granted.get((None, group, resource), set()))
    if namespace is not None:
        verbs |= granted.get((namespace, group, resource), set())
    return verbs


async def _full_lifecycle(env: KubeEnv, baseten: BasetenSimulator) -> None:
    kube = env.kube
    await kube.put_secret("openai", {"apiKey": OPENAI_KEY}, labels=WATCHED)
    # Connection details in each form, so that every verb they are granted is used: created as
    # ConfigMaps and Secrets, replaced (update) when a value changes, deleted when the target moves
    # or goes (the objects go with their resources by the garbage collector, not the operator).
    resources: list[tuple[str, str, str, dict[str, Any], dict[str, Any]]] = [
        (
            "GatewayEndpoint",
            "gatewayendpoints",
            "gpt",
            {**endpoint_spec(), "writeConnectionDetailsTo": {"secret": "gpt-connection"}},
            {"slug": "my-org/gpt-2"},
        ),
        (
            "Provider",
            "providers",
            "vllm",
            test_provider.spec(
                providerKeys=[{"name": "primary", "secretRef": {"name": "openai"}}],
                writeConnectionDetailsTo={"configMap": "vllm-connection"},
            ),
            {"name": "vLLM 2", "writeConnectionDetailsTo": {"configMap": None, "secret": "vllm-connection"}},
        ),
        (
            "Model",
            "models",
            "assistant",
            test_model.spec(writeConnectionDetailsTo={"secret": "assistant-connection"}),
            {"summary": "changed"},
        ),
        (
            "DedicatedEndpoint",
            "dedicatedendpoints",
            "llama",
            test_dedicated_endpoint.spec(writeConnectionDetailsTo={"configMap": "llama-connection"}),
            {"state": "Stopped"},
        ),
    ]
    for kind, plural, name, spec, _ in resources:
        response = await kube.create(kind, plural, name, spec)
        assert response.status_code == 201, response.text
    for _, plural, name, _, _ in resources:
        await kube.wait_condition(plural, name, "Ready", "True")
    await kube.put_secret("openai", {"apiKey": "sk-rotated-key-123456"}, labels=WATCHED)
    deadline = asyncio.get_running_loop().time() + 5
    while baseten.secrets[f"aigw_{kube.namespace}_openai_apiKey"].value != "sk-rotated-key-123456":
        assert asyncio.get_running_loop().time() < deadline, "rotation did not arrive"
        await asyncio.sleep(0.05)
    for _, plural, name, _, change in resources:
        await kube.patch_spec(plural, name, change)
    for _, plural, name, _, _ in resources:
        await kube.wait_for(plural, name, lambda o: bool(o and o["status"].get("observedGeneration") == 2))
    # The Provider's name back and forth: the same "updated name" Event twice, the second a patch.
    for generation, name_value in ((3, "vLLM"), (4, "vLLM 2")):
        await kube.patch_spec("providers", "vllm", {"name": name_value})
        await kube.wait_for(
            "providers", "vllm", lambda o, g=generation: bool(o and o["status"].get("observedGeneration") == g)
        )
    # The Provider's connection details removed: its Secret is deleted.
    await kube.patch_spec("providers", "vllm", {"writeConnectionDetailsTo": None})
    await kube.wait_for("providers", "vllm", lambda o: bool(o and "connectionDetails" not in o["status"]))
    for _, plural, name, _, _ in resources:
        await kube.delete(plural, name)
    for _, plural, name, _, _ in resources:
        await kube.wait_gone(plural, name)


MODES = ["cluster-wide", "namespaced"]


@pytest.mark.parametrize("mode", MODES)
async def test_chart_rbac_is_exactly_what_the_operator_uses(
    mode: str,
    chart: helm.Chart,
    kube_env: KubeEnv,
    baseten: BasetenSimulator,
    ngrok: NgrokSimulator,
    registry: ModelRegistrySimulator,
    together: TogetherSimulator,
    credentials: str,
) -> None:
    """The operator as the chart runs it in each mode: watch.namespaces empty (AIGW_NAMESPACES
    unset, a ClusterRole) or listing the namespace (a Role there; at cluster scope only the metrics reviews)."""
    if kube_env.emulator is None:
        pytest.fail("needs the emulator: it records which client made which request")
    namespaces = [kube_env.kube.namespace] if mode == "namespaced" else []
    # Leader election on, as the chart runs it: its Lease in the release namespace, by the name
    # the chart gives it.
    chart_env = env(render(chart, {"watch": {"namespaces": namespaces}}))
    await kube_env.kube.http.post("/api/v1/namespaces", json={"metadata": {"name": NAMESPACE}})
    election = LeaderElectionSettings(
        enabled=chart_env["AIGW_LEADER_ELECTION__ENABLED"] == "true",
        lease_name=chart_env["AIGW_LEADER_ELECTION__LEASE_NAME"],
        lease_namespace=chart_env["AIGW_LEADER_ELECTION__LEASE_NAMESPACE"],
        identity="rbac-proof",
    )
    assert election.enabled and election.lease_namespace == NAMESPACE
    # /metrics as the chart serves it: Prometheus' scrapes cost the operator a TokenReview and a
    # SubjectAccessReview (its ClusterRole <fullname>-metrics-auth).
    assert chart_env["AIGW_METRICS_AUTH"] == "kubernetes"
    kube_env.emulator.tokens[test_metrics_access.READER_TOKEN] = test_metrics_access.PROMETHEUS
    kube_env.emulator.allowed.add((test_metrics_access.PROMETHEUS["username"], "get", "/metrics"))
    settings = make_settings(
        kube_env,
        baseten.url,
        ngrok.url,
        registry.url,
        together.url,
        namespaces=namespaces,
        leader_election=election,
        metrics_auth=chart_env["AIGW_METRICS_AUTH"],
    )
    # Cluster-wide only on the emulator (checked above), which holds this test's objects alone.
    operator = OperatorRunner(settings, cluster_wide=not namespaces)
    await operator.start()
    try:
        await _full_lifecycle(kube_env, baseten)
        assert (await test_metrics_access.get_metrics(test_metrics_access.READER_TOKEN)).status_code == 200
    finally:
        await operator.stop()  # its last requests (watch ends, cleanup) count too
        metrics.set_gate(None)
    used: dict[tuple[str | None, str, str], set[str]] = {}
    clients = set()
    for (client, verb, group, plural, subresource, namespace), _ in kube_env.emulator.access().items():
        if client in TEST_CLIENTS:
            continue
        clients.add(client)
        resource = f"{plural}/{subresource}" if subresource else plural
        used.setdefault((namespace, group, resource), set()).add(verb)
    assert clients == {"kopf", "aigw-operator"}, clients
    granted = _granted(chart, namespaces)
    denied = {k: v - _allows(granted, k) for k, v in used.items() if v - _allows(granted, k)}
    assert denied == {}, f"the operator needs more than the chart grants: {denied}"
    # A grant is used when a request in its scope (any namespace, for a ClusterRole) needed it.
    unused = {}
    for (scope, group, resource), verbs in granted.items():
        needed = set().union(
            *(v for (ns, g, r), v in used.items() if (g, r) == (group, resource) and scope in (None, ns))
        )
        if verbs - needed:
            unused[(scope, group, resource)] = verbs - needed
    assert unused == {}, f"the chart grants what the operator never used: {unused}"
    # Only what this test measured, per mode that has passed (the other areas print their own).
    requests = sum(n for (client, *_), n in kube_env.emulator.access().items() if client not in TEST_CLIENTS)
    _RBAC_MEASURED[mode] = (
        f"{mode} {sum(len(v) for v in granted.values())} granted verbs, all used by "
        f"{requests} operator requests ({sum(len(v) for v in used.values())} verbs used), none missing"
    )
    record_summary(
        "security", f"RBAC ({len(_RBAC_MEASURED)}/{len(MODES)} modes): " + "; ".join(sorted(_RBAC_MEASURED.values()))
    )


# The security summary's parts, by mode: set once that mode's checks have all passed.
_RBAC_MEASURED: dict[str, str] = {}
