"""/metrics behind Kubernetes authentication and authorisation, as controller-runtime's secure
serving has it: a bearer token the API server authenticates (TokenReview) whose user may ``get``
the non-resource URL ``/metrics`` (SubjectAccessReview). 401 without a token or with one the API
server does not know, 403 for a user without the permission, the metrics otherwise; each review
at most once per token (and user) per cache period. The emulator answers the reviews from its
policy (``tokens``, ``allowed``) and counts them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from aigw_operator.base import metrics
from aigw_testbed.emulator.server import KubeEmulator
from aigw_testbed.simulators.baseten import BasetenSimulator
from tests.operator import test_metrics
from tests.operator.conftest import KubeEnv, OperatorRunner, make_settings
from tests.scrape import value

PROMETHEUS = {
    "username": "system:serviceaccount:monitoring:prometheus",
    "uid": "3f1c7f43-prometheus",
    "groups": ["system:serviceaccounts", "system:serviceaccounts:monitoring", "system:authenticated"],
}
INTRUDER = {
    "username": "system:serviceaccount:team-a:default",
    "uid": "9d2e-default",
    "groups": ["system:authenticated"],
}
READER_TOKEN = "prometheus-token-3f1c7f43"
INTRUDER_TOKEN = "team-a-default-token-9d2e"
TTL = 1.0


def emulator_of(kube_env: KubeEnv) -> KubeEmulator:
    if kube_env.emulator is None:
        pytest.fail("the review policy is the emulator's (tokens, allowed); a cluster's is its own RBAC")
    return kube_env.emulator


@pytest.fixture
async def secured(kube_env: KubeEnv, baseten: BasetenSimulator, credentials: str) -> AsyncIterator[OperatorRunner]:
    """The operator as the chart runs it (metrics_auth kubernetes), against a known policy: the
    Prometheus ServiceAccount may get /metrics, the team's default one is authenticated only.
    It reconciles one resource, so that the metrics have something to say."""
    emulator = emulator_of(kube_env)
    emulator.tokens.update({READER_TOKEN: PROMETHEUS, INTRUDER_TOKEN: INTRUDER})
    emulator.allowed.add((PROMETHEUS["username"], "get", "/metrics"))
    settings = make_settings(kube_env, baseten.url, metrics_auth="kubernetes", metrics_auth_cache_ttl=TTL)
    runner = OperatorRunner(settings)
    await runner.start()
    try:
        await kube_env.kube.create("GatewayEndpoint", test_metrics.PLURAL, "metered", test_metrics.spec())
        await kube_env.kube.wait_condition(test_metrics.PLURAL, "metered", "Ready", "True")
        yield runner
    finally:
        await runner.stop()
        metrics.set_gate(None)  # open again for the other tests' scrape(), which sends no token


async def get_metrics(token: str | None = None, *, scheme: str = "Bearer") -> httpx.Response:
    headers = {"Authorization": f"{scheme} {token}".strip()} if token is not None else {}
    async with httpx.AsyncClient(timeout=15) as http:
        return await http.get(f"http://127.0.0.1:{metrics.serve(0)}/metrics", headers=headers)


def reviews(emulator: KubeEmulator) -> tuple[int, int]:
    """The operator's TokenReviews and SubjectAccessReviews so far."""
    access = emulator.access()
    return (
        access.get(("aigw-operator", "create", "authentication.k8s.io", "tokenreviews", None, None), 0),
        access.get(("aigw-operator", "create", "authorization.k8s.io", "subjectaccessreviews", None, None), 0),
    )


async def test_an_anonymous_scrape_or_an_unknown_token_is_refused(
    kube_env: KubeEnv, secured: OperatorRunner, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    emulator = emulator_of(kube_env)
    anonymous = await get_metrics()
    assert anonymous.status_code == 401, anonymous.text
    assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
    assert "controller_runtime" not in anonymous.text
    # Not a bearer token, or an empty one: refused before any review.
    for response in (await get_metrics(READER_TOKEN, scheme="Basic"), await get_metrics("")):
        assert response.status_code == 401
    assert reviews(emulator) == (0, 0)
    # A token the API server does not authenticate: one TokenReview, never a SubjectAccessReview.
    unknown = await get_metrics("a-token-nobody-issued")
    assert unknown.status_code == 401 and "controller_runtime" not in unknown.text
    assert reviews(emulator) == (1, 0)
    assert "a-token-nobody-issued" not in caplog.text, "a token in the logs"


async def test_a_known_user_without_the_permission_is_forbidden_and_a_reader_is_served(
    kube_env: KubeEnv, secured: OperatorRunner, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    emulator = emulator_of(kube_env)
    forbidden = await get_metrics(INTRUDER_TOKEN)
    assert forbidden.status_code == 403, forbidden.text
    assert forbidden.text.strip() == f"Authorization denied for user {INTRUDER['username']}"
    assert "controller_runtime" not in forbidden.text
    served = await get_metrics(READER_TOKEN)
    assert served.status_code == 200, served.text
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(served.text)
        for sample in family.samples
    }
    assert value(samples, "crossplane_managed_resource_ready", **test_metrics.GATEWAY) >= 1
    assert reviews(emulator) == (2, 2)
    # What was asked: the users the TokenReviews named, for get on the non-resource URL /metrics.
    assert not {READER_TOKEN, INTRUDER_TOKEN} & set(caplog.text.split()), "a token in the logs"
    # A permission granted to a group the user is in serves too.
    emulator.allowed.add(("system:serviceaccounts:team-a", "get", "/metrics"))
    emulator.tokens["team-a-reader"] = {**INTRUDER, "groups": ["system:serviceaccounts:team-a"]}
    assert (await get_metrics("team-a-reader")).status_code == 200


async def test_at_most_one_review_per_token_per_cache_period(kube_env: KubeEnv, secured: OperatorRunner) -> None:
    emulator = emulator_of(kube_env)
    # Concurrent scrapes with the same token wait on one review of each kind; so do later ones.
    first = await asyncio.gather(*(get_metrics(READER_TOKEN) for _ in range(5)))
    assert [r.status_code for r in first] == [200] * 5
    for _ in range(5):
        assert (await get_metrics(READER_TOKEN)).status_code == 200
    assert reviews(emulator) == (1, 1)
    # Refusals are kept as long: a token that does not authenticate, a user not allowed.
    for _ in range(3):
        assert (await get_metrics("a-token-nobody-issued")).status_code == 401
        assert (await get_metrics(INTRUDER_TOKEN)).status_code == 403
    assert reviews(emulator) == (3, 2)
    # A revoked permission stops serving once the period has passed, with one review more each.
    emulator.allowed.clear()
    await asyncio.sleep(TTL + 0.2)
    assert (await get_metrics(READER_TOKEN)).status_code == 403
    assert (await get_metrics(READER_TOKEN)).status_code == 403
    assert reviews(emulator) == (4, 3)


async def test_a_failing_review_is_not_served_nor_cached(kube_env: KubeEnv, secured: OperatorRunner) -> None:
    """The API server refusing the operator's review (its RBAC missing): 401 for a TokenReview, as
    controller-runtime answers, and the next request asks again."""
    emulator = emulator_of(kube_env)
    emulator["post", "/apis/authentication.k8s.io/v1/tokenreviews"] << 403
    assert (await get_metrics(READER_TOKEN)).status_code == 401
    assert (await get_metrics(READER_TOKEN)).status_code == 401
    assert len([r for r in emulator if r.url.path.endswith("/tokenreviews")]) == 2


async def test_metrics_stay_closed_after_the_operator_stops(kube_env: KubeEnv, secured: OperatorRunner) -> None:
    assert (await get_metrics(READER_TOKEN)).status_code == 200
    await secured.stop()
    after = await get_metrics(READER_TOKEN)
    assert after.status_code == 503 and "controller_runtime" not in after.text
