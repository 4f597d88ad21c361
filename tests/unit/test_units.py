"""Pure units: diffs, payload mapping, condition logic."""

from __future__ import annotations

import pytest

from aigw_operator.base.api import SecretKeyRef
from aigw_operator.base.settings import Settings
from aigw_operator.engine import conditions as cond
from aigw_operator.kinds.gateway_endpoint import (
    DesiredGatewayEndpoint,
    GatewayEndpointAdapter,
    GatewayEndpointSpec,
    secret_name,
)
from aigw_operator.upstreams.baseten import Endpoint


def make_spec(**targets: str) -> DesiredGatewayEndpoint:
    target = {"provider": "BASETEN", "modelId": "m1", **targets}
    return DesiredGatewayEndpoint(GatewayEndpointSpec.model_validate({"slug": "my-org/a", "targets": [target]}))


def observed(slug: str = "my-org/a", **target: str) -> Endpoint:
    return Endpoint.model_validate(
        {
            "id": "e1",
            "slug": slug,
            "region": "UNRESTRICTED",
            "targets": [{"provider": "BASETEN", "model_id": "m1", **target}],
        }
    )


adapter = GatewayEndpointAdapter(client=None)  # type: ignore[arg-type]


def test_no_diff_when_equal() -> None:
    assert adapter.diff(make_spec(), observed()) is None


def test_production_environment_is_the_default_not_a_diff() -> None:
    assert adapter.diff(make_spec(environmentName="production"), observed()) is None
    assert adapter.diff(make_spec(), observed(environment_name="production")) is None


def test_other_environment_is_a_diff_of_targets_only() -> None:
    changes = adapter.diff(make_spec(environmentName="staging"), observed())
    assert changes == {"targets": [{"provider": "BASETEN", "model_id": "m1", "environment_name": "staging"}]}


def test_slug_change_is_a_rename() -> None:
    assert adapter.diff(make_spec(), observed(slug="my-org/old")) == {"slug": "my-org/a"}


def test_payload_uses_upstream_names_and_drops_unset_fields() -> None:
    assert make_spec().payload() == {
        "slug": "my-org/a",
        "region": "UNRESTRICTED",
        "targets": [{"provider": "BASETEN", "model_id": "m1"}],
    }


def test_last_transition_time_moves_only_when_status_flips() -> None:
    first = cond.merge_conditions([], [cond.Condition("Ready", "False", "Creating")], 1, now="t1")
    same = cond.merge_conditions(first, [cond.Condition("Ready", "False", "Other", "m")], 2, now="t2")
    flipped = cond.merge_conditions(same, [cond.Condition("Ready", "True", "Available")], 2, now="t3")
    assert same[0]["lastTransitionTime"] == "t1"
    assert same[0]["reason"] == "Other" and same[0]["observedGeneration"] == 2
    assert flipped[0]["lastTransitionTime"] == "t3"


def test_conditions_keep_others_and_stable_order() -> None:
    merged = cond.merge_conditions(
        [{"type": "Synced", "status": "True", "reason": "X", "lastTransitionTime": "t0"}],
        [cond.Condition("Ready", "True", "Available")],
        1,
        now="t1",
    )
    assert [c["type"] for c in merged] == ["Ready", "Synced"]
    assert merged[1]["lastTransitionTime"] == "t0"


def test_baseten_secret_names_are_one_per_secret_key_and_never_collide() -> None:
    names = {
        secret_name("aigw", namespace, SecretKeyRef(name=name, key=key))
        for namespace, name, key in [
            ("a", "b.c", "d"),
            ("a", "b", "c.d"),
            ("a-b", "c", "d"),
            ("a", "b-c", "d"),
            ("a", "b", "c_d"),
            ("a", "b", "d"),
        ]
    }
    assert len(names) == 6
    assert secret_name("aigw", "a", SecretKeyRef(name="b", key="d")) == "aigw_a_b_d"
    long_ref = SecretKeyRef(name="s" * 253, key="k" * 253)
    long_names = {
        secret_name("aigw", "ns", long_ref),
        secret_name("aigw", "ns", SecretKeyRef(name="s" * 253, key="k" * 252)),
    }
    assert len(long_names) == 2 and all(len(n) <= 255 for n in long_names)


def test_an_upstream_setting_from_the_environment_keeps_the_other_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIGW_NGROK__BASE_URL", "https://ngrok.example")
    settings = Settings()
    assert settings.ngrok.base_url == "https://ngrok.example"
    assert settings.ngrok.rate_limit_per_second == 1.5
    assert settings.baseten.rate_limit_per_second == 50
    monkeypatch.setenv("AIGW_NGROK__RATE_LIMIT_PER_SECOND", "null")
    assert Settings().ngrok.rate_limit_per_second is None  # how to switch a limit off


def test_the_terminal_retry_interval_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().terminal_retry_interval == 1800.0
    monkeypatch.setenv("AIGW_TERMINAL_RETRY_INTERVAL", "600")
    assert Settings().terminal_retry_interval == 600.0
    monkeypatch.setenv("AIGW_TERMINAL_RETRY_INTERVAL", "0")
    with pytest.raises(ValueError):
        Settings()  # 0 would ask a refused spec again in a loop
