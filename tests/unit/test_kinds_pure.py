"""Pure units for all four kinds, table-driven: diff, readiness, status fields and payload mapping.

No HTTP, no operator, no Kubernetes: desired objects are built as the adapters' ``desire()``
builds them (the Desired* dataclasses from validated spec models), observed objects from the
upstream clients' models. Every row has an id and asserts exact values.
"""

from __future__ import annotations

from typing import Any

import pytest

from aigw_operator.engine.contract import Readiness
from aigw_operator.kinds.dedicated_endpoint import (
    DedicatedEndpointAdapter,
    DedicatedEndpointSpec,
    DesiredEndpoint,
)
from aigw_operator.kinds.gateway_endpoint import (
    DesiredGatewayEndpoint,
    GatewayEndpointAdapter,
    GatewayEndpointSpec,
)
from aigw_operator.kinds.model import DesiredModel, ModelAdapter, ModelSpec
from aigw_operator.kinds.provider import DesiredProvider, ProviderAdapter, ProviderSpec
from aigw_operator.kube.credentials import SecretValue
from aigw_operator.upstreams import baseten, ngrok, together
from aigw_operator.upstreams.model_registry import RegistryModel

# The pure functions never touch the client.
GATEWAY = GatewayEndpointAdapter(client=None)  # type: ignore[arg-type]
PROVIDER = ProviderAdapter(client=None)  # type: ignore[arg-type]
MODEL = ModelAdapter(client=None)  # type: ignore[arg-type]
DEDICATED = DedicatedEndpointAdapter(client=None)  # type: ignore[arg-type]

SECRET_KEY = "sk-canary-do-not-leak-0123456789"


# --------------------------------------------------------------------------------------------
# GatewayEndpoint (Baseten)
# --------------------------------------------------------------------------------------------

BASETEN_TARGET = {"provider": "BASETEN", "modelId": "m1"}
OPENAI_TARGET = {"provider": "OPENAI", "secretId": "sec-1", "targetModel": "gpt-4o"}
OPENAI_REF_TARGET = {"provider": "OPENAI", "secretRef": {"name": "openai", "key": "token"}, "targetModel": "gpt-4o"}


def changes_of(adapter: Any, desired: Any, observed: Any) -> dict[str, Any] | None:
    """What a reconcile would do to ``observed``: the in-place changes (``diff``) and, under
    "recreate", the fields only a replacement can take (``replacement``), in its order."""
    changes = dict(adapter.diff(desired, observed) or {})
    replace = adapter.replacement(desired, observed)
    if replace is not None:
        changes["recreate"] = list(replace.fields)
    return changes or None


def gw_desired(
    target: dict[str, Any] | None = None,
    *,
    slug: str = "my-org/a",
    region: str | None = None,
    secret_ids: dict[int, str] | None = None,
) -> DesiredGatewayEndpoint:
    spec: dict[str, Any] = {"slug": slug, "targets": [target or BASETEN_TARGET]}
    if region is not None:
        spec["region"] = region
    return DesiredGatewayEndpoint(
        GatewayEndpointSpec.model_validate(spec), secret_ids=dict(secret_ids or {}), namespace="ns", uid="u1"
    )


def gw_observed(*targets: dict[str, Any], slug: str = "my-org/a", **fields: Any) -> baseten.Endpoint:
    data: dict[str, Any] = {"id": "e1", "slug": slug, "region": "UNRESTRICTED", **fields}
    data["targets"] = list(targets) if targets else [{"provider": "BASETEN", "model_id": "m1"}]
    return baseten.Endpoint.model_validate(data)


GATEWAY_DIFF = [
    pytest.param(gw_desired(), gw_observed(), None, id="no-change"),
    pytest.param(
        gw_desired({**BASETEN_TARGET, "environmentName": "production"}),
        gw_observed(),
        None,
        id="spec-production-is-the-default",
    ),
    pytest.param(
        gw_desired(),
        gw_observed({"provider": "BASETEN", "model_id": "m1", "environment_name": "production"}),
        None,
        id="observed-production-is-the-default",
    ),
    pytest.param(
        gw_desired(),
        gw_observed({"provider": "BASETEN", "model_id": "m1", "secret_id": None, "target_model": None}),
        None,
        id="observed-explicit-nulls-no-change",
    ),
    pytest.param(gw_desired(), gw_observed(slug="my-org/old"), {"slug": "my-org/a"}, id="slug-rename-only"),
    pytest.param(
        gw_desired({"provider": "BASETEN", "modelId": "m2"}),
        gw_observed(),
        {"targets": [{"provider": "BASETEN", "model_id": "m2"}]},
        id="model-id-change-targets-only",
    ),
    pytest.param(
        gw_desired({**BASETEN_TARGET, "environmentName": "staging"}),
        gw_observed(),
        {"targets": [{"provider": "BASETEN", "model_id": "m1", "environment_name": "staging"}]},
        id="environment-change",
    ),
    pytest.param(
        gw_desired({"provider": "BASETEN", "modelId": "m2"}),
        gw_observed(slug="my-org/old"),
        {"slug": "my-org/a", "targets": [{"provider": "BASETEN", "model_id": "m2"}]},
        id="slug-and-target-change",
    ),
    pytest.param(
        gw_desired(OPENAI_TARGET),
        gw_observed({"provider": "OPENAI", "secret_id": "sec-1", "target_model": "gpt-4o"}),
        None,
        id="external-target-no-change",
    ),
    pytest.param(
        gw_desired({**OPENAI_TARGET, "targetModel": "gpt-4.1"}),
        gw_observed({"provider": "OPENAI", "secret_id": "sec-1", "target_model": "gpt-4o"}),
        {"targets": [{"provider": "OPENAI", "secret_id": "sec-1", "target_model": "gpt-4.1"}]},
        id="external-target-model-change",
    ),
    pytest.param(
        gw_desired(OPENAI_REF_TARGET, secret_ids={0: "sec-managed"}),
        gw_observed({"provider": "OPENAI", "secret_id": "sec-managed", "target_model": "gpt-4o"}),
        None,
        id="secret-ref-resolved-no-change",
    ),
    pytest.param(
        gw_desired(OPENAI_REF_TARGET, secret_ids={0: "sec-managed"}),
        gw_observed({"provider": "OPENAI", "secret_id": "sec-other", "target_model": "gpt-4o"}),
        {"targets": [{"provider": "OPENAI", "secret_id": "sec-managed", "target_model": "gpt-4o"}]},
        id="secret-ref-points-elsewhere",
    ),
    pytest.param(
        gw_desired(OPENAI_TARGET),
        gw_observed(),
        {"targets": [{"provider": "OPENAI", "secret_id": "sec-1", "target_model": "gpt-4o"}]},
        id="provider-change",
    ),
    pytest.param(
        gw_desired(region="EU"),
        gw_observed(),
        None,
        id="region-is-not-patched",
    ),
]


@pytest.mark.parametrize(("desired", "observed", "expected"), GATEWAY_DIFF)
def test_gateway_diff(desired: DesiredGatewayEndpoint, observed: baseten.Endpoint, expected: Any) -> None:
    assert GATEWAY.diff(desired, observed) == expected


REGION_MISMATCH = (
    "the Baseten endpoint is in region EU, the spec says UNRESTRICTED; "
    "region is set at creation only: delete the endpoint or change the spec"
)

GATEWAY_READINESS = [
    pytest.param(
        gw_desired(), gw_observed(), Readiness(True, "Available", "my-org/a routes to BASETEN m1"), id="available"
    ),
    pytest.param(
        gw_desired(region="EU"),
        gw_observed(region="EU"),
        Readiness(True, "Available", "my-org/a routes to BASETEN m1"),
        id="available-eu",
    ),
    pytest.param(
        gw_desired(),
        gw_observed(region="EU"),
        Readiness(False, "RegionMismatch", REGION_MISMATCH),
        id="region-mismatch",
    ),
    pytest.param(
        gw_desired(region="EU"),
        gw_observed(region="UNRESTRICTED"),
        Readiness(
            False,
            "RegionMismatch",
            "the Baseten endpoint is in region UNRESTRICTED, the spec says EU; "
            "region is set at creation only: delete the endpoint or change the spec",
        ),
        id="region-mismatch-spec-eu",
    ),
    pytest.param(
        gw_desired(region="EU"),
        gw_observed(region=None),
        Readiness(True, "Available", "my-org/a routes to BASETEN m1"),
        id="region-not-reported-is-no-mismatch",
    ),
    pytest.param(
        gw_desired(OPENAI_TARGET),
        gw_observed({"provider": "OPENAI", "secret_id": "sec-1", "target_model": "gpt-4o"}),
        Readiness(True, "Available", "my-org/a routes to OPENAI gpt-4o"),
        id="external-target-message",
    ),
]


@pytest.mark.parametrize(("desired", "observed", "expected"), GATEWAY_READINESS)
def test_gateway_readiness(desired: DesiredGatewayEndpoint, observed: baseten.Endpoint, expected: Readiness) -> None:
    assert GATEWAY.readiness(desired, observed) == expected


GATEWAY_STATUS = [
    pytest.param(
        gw_observed(region="EU", created_at="2025-01-01T00:00:00Z", updated_at="2025-01-02T00:00:00Z"),
        {
            "id": "e1",
            "slug": "my-org/a",
            "region": "EU",
            "createdAt": "2025-01-01T00:00:00Z",
            "updatedAt": "2025-01-02T00:00:00Z",
        },
        id="full",
    ),
    pytest.param(
        gw_observed(region=None),
        {"id": "e1", "slug": "my-org/a", "region": None, "createdAt": None, "updatedAt": None},
        id="unreported-fields-are-none",
    ),
    pytest.param(
        gw_observed({"provider": "OPENAI", "secret_id": "sec-1", "target_model": "gpt-4o"}),
        {"id": "e1", "slug": "my-org/a", "region": "UNRESTRICTED", "createdAt": None, "updatedAt": None},
        id="no-target-or-secret-id-in-status",
    ),
]


@pytest.mark.parametrize(("observed", "expected"), GATEWAY_STATUS)
def test_gateway_status_fields(observed: baseten.Endpoint, expected: dict[str, Any]) -> None:
    assert GATEWAY.status_fields(observed) == expected


GATEWAY_PAYLOAD = [
    pytest.param(
        gw_desired(),
        {"slug": "my-org/a", "region": "UNRESTRICTED", "targets": [{"provider": "BASETEN", "model_id": "m1"}]},
        id="baseten-defaults-unset-dropped",
    ),
    pytest.param(
        gw_desired({**BASETEN_TARGET, "environmentName": "staging", "targetModel": "x"}, region="EU"),
        {
            "slug": "my-org/a",
            "region": "EU",
            "targets": [{"provider": "BASETEN", "model_id": "m1", "environment_name": "staging", "target_model": "x"}],
        },
        id="baseten-all-fields",
    ),
    pytest.param(
        gw_desired(OPENAI_TARGET),
        {
            "slug": "my-org/a",
            "region": "UNRESTRICTED",
            "targets": [{"provider": "OPENAI", "secret_id": "sec-1", "target_model": "gpt-4o"}],
        },
        id="external-secret-id",
    ),
    pytest.param(
        gw_desired(OPENAI_REF_TARGET, secret_ids={0: "sec-managed"}),
        {
            "slug": "my-org/a",
            "region": "UNRESTRICTED",
            "targets": [{"provider": "OPENAI", "secret_id": "sec-managed", "target_model": "gpt-4o"}],
        },
        id="external-secret-ref-resolved-no-ref-sent",
    ),
]


@pytest.mark.parametrize(("desired", "expected"), GATEWAY_PAYLOAD)
def test_gateway_payload(desired: DesiredGatewayEndpoint, expected: dict[str, Any]) -> None:
    assert desired.payload() == expected
    assert [t.model_dump(exclude_none=True) for t in desired.upstream_targets()] == expected["targets"]


def test_gateway_extra_status_without_managed_secrets_is_none() -> None:
    assert GATEWAY.desired_status(gw_desired()) == {"secrets": None}


# --------------------------------------------------------------------------------------------
# Provider (ngrok)
# --------------------------------------------------------------------------------------------

CHAT = {"format": "openai", "surface": "chat-completions", "supportedParams": [{"name": "temperature"}, {"name": "n"}]}
MESSAGES = {"format": "anthropic", "surface": "messages"}


def pv_desired(**spec: Any) -> DesiredProvider:
    data = {"providerId": "local", "name": "Local", "baseUrl": "https://llm.example.com/v1", **spec}
    return DesiredProvider(ProviderSpec.model_validate(data))


def pv_observed(**fields: Any) -> ngrok.Provider:
    data = {
        "id": "aigwp_1",
        "providerId": "local",
        "name": "Local",
        "baseUrl": "https://llm.example.com/v1",
        **fields,
    }
    return ngrok.Provider.model_validate(data)


PROVIDER_DIFF = [
    pytest.param(pv_desired(), pv_observed(), None, id="no-change"),
    pytest.param(
        pv_desired(metadata="m", supportedApiSurfaces=[CHAT, MESSAGES], models=["a", "b"]),
        pv_observed(
            metadata="m",
            supportedApiSurfaces=[CHAT, MESSAGES],
            models=[{"id": "pm1", "modelId": "a"}, {"id": "pm2", "modelId": "b"}],
        ),
        None,
        id="no-change-everything-managed",
    ),
    pytest.param(pv_desired(name="Renamed"), pv_observed(), {"name": "Renamed"}, id="name-only"),
    pytest.param(
        pv_desired(baseUrl="https://other.example.com"),
        pv_observed(),
        {"baseUrl": "https://other.example.com"},
        id="base-url-only",
    ),
    pytest.param(pv_desired(metadata="new"), pv_observed(metadata="old"), {"metadata": "new"}, id="metadata-change"),
    pytest.param(pv_desired(), pv_observed(metadata="by hand"), None, id="metadata-unset-left-alone"),
    pytest.param(pv_desired(metadata=""), pv_observed(metadata=None), None, id="metadata-empty-equals-missing"),
    pytest.param(
        pv_desired(supportedApiSurfaces=[CHAT, MESSAGES]),
        pv_observed(supportedApiSurfaces=[MESSAGES, CHAT]),
        None,
        id="surfaces-order-not-drift",
    ),
    pytest.param(
        pv_desired(supportedApiSurfaces=[CHAT]),
        pv_observed(supportedApiSurfaces=[{**CHAT, "supportedParams": [{"name": "n"}, {"name": "temperature"}]}]),
        None,
        id="surface-params-order-not-drift",
    ),
    pytest.param(
        pv_desired(supportedApiSurfaces=[{"format": "openai"}]),
        pv_observed(supportedApiSurfaces=[{"format": "openai", "supportedParams": []}]),
        None,
        id="surface-params-unset-equals-empty",
    ),
    pytest.param(
        pv_desired(supportedApiSurfaces=[CHAT, MESSAGES]),
        pv_observed(supportedApiSurfaces=[CHAT]),
        {
            "supportedApiSurfaces": [
                {
                    "format": "openai",
                    "surface": "chat-completions",
                    "supportedParams": [{"name": "temperature"}, {"name": "n"}],
                },
                {"format": "anthropic", "surface": "messages"},
            ]
        },
        id="surface-added-full-list-sent",
    ),
    pytest.param(
        pv_desired(supportedApiSurfaces=[{**CHAT, "supportedParams": [{"name": "temperature"}]}]),
        pv_observed(supportedApiSurfaces=[CHAT]),
        {
            "supportedApiSurfaces": [
                {"format": "openai", "surface": "chat-completions", "supportedParams": [{"name": "temperature"}]}
            ]
        },
        id="surface-param-removed",
    ),
    pytest.param(pv_desired(), pv_observed(supportedApiSurfaces=[CHAT]), None, id="surfaces-unset-left-alone"),
    pytest.param(
        pv_desired(models=["b", "a"]),
        pv_observed(models=[{"modelId": "a"}, {"modelId": "b"}]),
        None,
        id="models-order-not-drift",
    ),
    pytest.param(
        pv_desired(models=["a", "b", "c"]),
        pv_observed(models=[{"modelId": "a"}, {"modelId": "b"}]),
        {"models": [{"modelId": "a"}, {"modelId": "b"}, {"modelId": "c"}]},
        id="model-added",
    ),
    pytest.param(
        pv_desired(models=[]),
        pv_observed(models=[{"modelId": "a"}]),
        {"models": []},
        id="empty-models-removes-all",
    ),
    pytest.param(pv_desired(models=[]), pv_observed(models=None), None, id="empty-models-equals-none-observed"),
    pytest.param(pv_desired(), pv_observed(models=[{"modelId": "a"}]), None, id="models-unset-left-alone"),
    pytest.param(
        pv_desired(name="N", models=["a"]),
        pv_observed(metadata="x", models=[{"modelId": "z"}]),
        {"name": "N", "models": [{"modelId": "a"}]},
        id="only-changed-fields",
    ),
]


@pytest.mark.parametrize(("desired", "observed", "expected"), PROVIDER_DIFF)
def test_provider_diff(desired: DesiredProvider, observed: ngrok.Provider, expected: Any) -> None:
    assert PROVIDER.diff(desired, observed) == expected


PROVIDER_READINESS = [
    pytest.param(
        pv_desired(),
        pv_observed(),
        Readiness(True, "Available", "local at https://llm.example.com/v1 with 0 model(s)"),
        id="no-models",
    ),
    pytest.param(
        pv_desired(models=["a", "b"]),
        pv_observed(models=[{"modelId": "a"}, {"modelId": "b"}]),
        Readiness(True, "Available", "local at https://llm.example.com/v1 with 2 model(s)"),
        id="two-models",
    ),
]


@pytest.mark.parametrize(("desired", "observed", "expected"), PROVIDER_READINESS)
def test_provider_readiness(desired: DesiredProvider, observed: ngrok.Provider, expected: Readiness) -> None:
    assert PROVIDER.readiness(desired, observed) == expected


PROVIDER_STATUS = [
    pytest.param(
        pv_observed(),
        {
            "id": "aigwp_1",
            "uri": None,
            "providerId": "local",
            "createdAt": None,
            "updatedAt": None,
            "createdBy": None,
            "lastUpdatedBy": None,
            "models": [],
        },
        id="minimal",
    ),
    pytest.param(
        pv_observed(
            uri="https://api.ngrok.ai/providers/aigwp_1",
            createdAt="2025-01-01T00:00:00Z",
            updatedAt="2025-01-02T00:00:00Z",
            createdBy={"id": "ak_1", "uri": "https://api.ngrok.com/api_keys/ak_1"},
            lastUpdatedBy={"id": "usr_2"},
            models=[{"id": "pm1", "modelId": "a"}, {"modelId": "b"}],
            metadata="not in status",
        ),
        {
            "id": "aigwp_1",
            "uri": "https://api.ngrok.ai/providers/aigwp_1",
            "providerId": "local",
            "createdAt": "2025-01-01T00:00:00Z",
            "updatedAt": "2025-01-02T00:00:00Z",
            "createdBy": {"id": "ak_1", "uri": "https://api.ngrok.com/api_keys/ak_1"},
            "lastUpdatedBy": {"id": "usr_2"},
            "models": [{"id": "pm1", "modelId": "a"}, {"modelId": "b"}],
        },
        id="full-camel-case-nulls-dropped",
    ),
]


@pytest.mark.parametrize(("observed", "expected"), PROVIDER_STATUS)
def test_provider_status_fields(observed: ngrok.Provider, expected: dict[str, Any]) -> None:
    assert PROVIDER.status_fields(observed) == expected


PROVIDER_PAYLOAD = [
    pytest.param(
        pv_desired(),
        {"providerId": "local", "name": "Local", "baseUrl": "https://llm.example.com/v1"},
        id="minimal-unset-fields-not-sent",
    ),
    pytest.param(
        pv_desired(metadata="m", supportedApiSurfaces=[CHAT, {"format": "anthropic"}], models=["a", "b"]),
        {
            "providerId": "local",
            "name": "Local",
            "baseUrl": "https://llm.example.com/v1",
            "metadata": "m",
            "supportedApiSurfaces": [
                {
                    "format": "openai",
                    "surface": "chat-completions",
                    "supportedParams": [{"name": "temperature"}, {"name": "n"}],
                },
                {"format": "anthropic"},
            ],
            "models": [{"modelId": "a"}, {"modelId": "b"}],
        },
        id="full",
    ),
    pytest.param(
        pv_desired(models=[], supportedApiSurfaces=[]),
        {
            "providerId": "local",
            "name": "Local",
            "baseUrl": "https://llm.example.com/v1",
            "supportedApiSurfaces": [],
            "models": [],
        },
        id="empty-lists-are-sent",
    ),
    pytest.param(
        pv_desired(providerKeys=[{"name": "k", "secretRef": {"name": "s", "key": "v"}}]),
        {"providerId": "local", "name": "Local", "baseUrl": "https://llm.example.com/v1"},
        id="provider-keys-not-in-payload",
    ),
]


@pytest.mark.parametrize(("desired", "expected"), PROVIDER_PAYLOAD)
def test_provider_payload(desired: DesiredProvider, expected: dict[str, Any]) -> None:
    assert desired.spec.payload() == expected


def pv_keys(*keys: tuple[str, str, str, str]) -> DesiredProvider:
    """A prepared provider with keys (name, secret name, secret key, resourceVersion)."""
    spec = pv_desired(providerKeys=[{"name": n, "secretRef": {"name": s, "key": k}} for n, s, k, _ in keys]).spec
    values = [SecretValue(f"value-{n}", v) for n, _, _, v in keys]
    return DesiredProvider(spec, list(zip(spec.provider_keys or [], values, strict=True)))


def record(name: str, secret: str, key: str, version: str) -> dict[str, str]:
    return {"name": name, "id": f"pk_{name}", "secretName": secret, "key": key, "secretVersion": version}


PROVIDER_EXTRAS = [
    pytest.param(pv_desired(), {}, True, id="keys-unset-always-current"),
    pytest.param(pv_desired(), {"providerKeys": [record("a", "s", "k", "1")]}, True, id="keys-unset-ignores-status"),
    pytest.param(pv_keys(("a", "s", "k", "1")), {"providerKeys": [record("a", "s", "k", "1")]}, True, id="current"),
    pytest.param(
        pv_keys(("a", "s", "k", "1"), ("b", "s", "k2", "1")),
        {"providerKeys": [record("b", "s", "k2", "1"), record("a", "s", "k", "1")]},
        True,
        id="order-not-drift",
    ),
    pytest.param(
        pv_keys(("a", "s", "k", "2")), {"providerKeys": [record("a", "s", "k", "1")]}, False, id="secret-rotated"
    ),
    pytest.param(pv_keys(("a", "s", "k", "1")), {}, False, id="never-recorded"),
    pytest.param(
        pv_keys(("a", "s", "other", "1")),
        {"providerKeys": [record("a", "s", "k", "1")]},
        False,
        id="secret-key-changed",
    ),
    pytest.param(
        pv_keys(("a", "s", "k", "1")),
        {"providerKeys": [record("a", "s", "k", "1"), record("old", "s", "k", "1")]},
        False,
        id="key-removed-from-spec",
    ),
    pytest.param(pv_desired(providerKeys=[]), {}, True, id="empty-keys-nothing-recorded"),
]


@pytest.mark.parametrize(("desired", "status", "expected"), PROVIDER_EXTRAS)
def test_provider_extras_current(desired: DesiredProvider, status: dict[str, Any], expected: bool) -> None:
    assert PROVIDER.current(desired, status) is expected


# --------------------------------------------------------------------------------------------
# Model (model registry)
# --------------------------------------------------------------------------------------------

CONFIG = {"model": "gpt-4o", "baseUrl": "https://api.openai.com/v1", "apiKeySecretRef": {"name": "llm", "key": "k"}}
STORED = {"api_key": SECRET_KEY, "model": "gpt-4o", "base_url": "https://api.openai.com/v1", "system_prompt": ""}


def md_desired(
    *, name: str = "m1", api_key: str = SECRET_KEY, current_tenant: str | None = None, **spec: Any
) -> DesiredModel:
    data = {"configuration": CONFIG, "summary": "s", "tags": ["a", "b"], **spec}
    return DesiredModel(ModelSpec.model_validate(data), name, api_key, current_tenant=current_tenant)


def md_observed(**fields: Any) -> RegistryModel:
    data = {"id": "id-1", "name": "m1", "dtype": "openai", "configuration": STORED, "summary": "s", "tags": "a,b"}
    return RegistryModel.model_validate({**data, **fields})


MODEL_DIFF = [
    pytest.param(md_desired(), md_observed(), None, id="no-change"),
    pytest.param(md_desired(), md_observed(tags="b,a"), None, id="tags-order-not-drift"),
    pytest.param(md_desired(), md_observed(tags=" a , b ,"), None, id="tags-whitespace-not-drift"),
    pytest.param(md_desired(tags=["b", "a", "a"]), md_observed(), None, id="tags-duplicates-not-drift"),
    pytest.param(md_desired(tags=["c", "a", "b"]), md_observed(), {"tags": "a,b,c"}, id="tag-added-sorted"),
    pytest.param(md_desired(tags=[]), md_observed(), {"tags": ""}, id="tags-cleared"),
    pytest.param(md_desired(tags=[]), md_observed(tags=None), None, id="no-tags-equals-null"),
    pytest.param(md_desired(summary="new"), md_observed(), {"summary": "new"}, id="summary-only"),
    pytest.param(md_desired(summary=""), md_observed(summary=None), None, id="empty-summary-equals-null"),
    pytest.param(md_desired(name="m2"), md_observed(), {"name": "m2"}, id="rename-in-place"),
    pytest.param(md_desired(api_key="sk-rotated"), md_observed(), {"recreate": ["api_key"]}, id="api-key-rotated"),
    pytest.param(
        md_desired(configuration={**CONFIG, "model": "gpt-4.1"}), md_observed(), {"recreate": ["model"]}, id="model"
    ),
    pytest.param(
        md_desired(configuration={**CONFIG, "baseUrl": "https://llm.example.com/v1", "systemPrompt": "be brief"}),
        md_observed(),
        {"recreate": ["base_url", "system_prompt"]},
        id="base-url-and-system-prompt",
    ),
    pytest.param(md_desired(), md_observed(dtype="anthropic"), {"recreate": ["dtype"]}, id="dtype"),
    pytest.param(md_desired(tenant="t2"), md_observed(), {"recreate": ["tenant"]}, id="tenant-added"),
    pytest.param(md_desired(tenant="t2"), md_observed(tenant="t1"), {"recreate": ["tenant"]}, id="tenant-moved"),
    pytest.param(md_desired(), md_observed(tenant="t1"), {"recreate": ["tenant"]}, id="tenant-removed"),
    pytest.param(md_desired(tenant="t1"), md_observed(tenant="t1"), None, id="same-tenant"),
    pytest.param(md_desired(tenant=""), md_observed(tenant=None), None, id="empty-tenant-is-default"),
    pytest.param(
        md_desired(tenant="t2", api_key="sk-rotated"),
        md_observed(tenant="t1", dtype="anthropic"),
        {"recreate": ["tenant", "dtype", "api_key"]},
        id="recreate-order-tenant-dtype-config",
    ),
    pytest.param(
        md_desired(name="m2", summary="new", tags=["z"], api_key="sk-rotated"),
        md_observed(),
        {"recreate": ["api_key"], "name": "m2", "summary": "new", "tags": "z"},
        id="recreate-with-mutable-changes",
    ),
    pytest.param(
        md_desired(),
        md_observed(configuration={}),
        {"recreate": ["api_key", "model", "base_url", "system_prompt"]},
        id="configuration-not-reported",
    ),
]


@pytest.mark.parametrize(("desired", "observed", "expected"), MODEL_DIFF)
def test_model_diff(desired: DesiredModel, observed: RegistryModel, expected: Any) -> None:
    changes = changes_of(MODEL, desired, observed)
    assert changes == expected
    # The change set names fields; it never carries the key itself.
    assert SECRET_KEY not in repr(changes)
    assert "sk-rotated" not in repr(changes)


MODEL_READINESS = [
    pytest.param(
        md_desired(), md_observed(), Readiness(True, "Available", "m1 (openai) used by 0 endpoint(s)"), id="0"
    ),
    pytest.param(
        md_desired(),
        md_observed(connected_endpoints=[{"id": "ep1", "name": "one"}, {"id": "ep2"}]),
        Readiness(True, "Available", "m1 (openai) used by 2 endpoint(s)"),
        id="connected",
    ),
]


@pytest.mark.parametrize(("desired", "observed", "expected"), MODEL_READINESS)
def test_model_readiness(desired: DesiredModel, observed: RegistryModel, expected: Readiness) -> None:
    readiness = MODEL.readiness(desired, observed)
    assert readiness == expected
    assert SECRET_KEY not in readiness.message


MODEL_STATUS = [
    pytest.param(
        md_observed(),
        {
            "id": "id-1",
            "name": "m1",
            "tenant": "",
            "dtype": "openai",
            "createdAt": None,
            "updatedAt": None,
            "connectedEndpoints": [],
        },
        id="default-tenant-is-empty-string",
    ),
    pytest.param(
        md_observed(
            tenant="t1",
            created_at="2025-01-01T00:00:00Z",
            updated_at="2025-01-02T00:00:00Z",
            connected_endpoints=[{"id": "ep1", "name": "one", "slug": "one"}, {"id": "ep2"}],
        ),
        {
            "id": "id-1",
            "name": "m1",
            "tenant": "t1",
            "dtype": "openai",
            "createdAt": "2025-01-01T00:00:00Z",
            "updatedAt": "2025-01-02T00:00:00Z",
            "connectedEndpoints": [{"id": "ep1", "name": "one", "slug": "one"}, {"id": "ep2"}],
        },
        id="full-nulls-dropped",
    ),
]


@pytest.mark.parametrize(("observed", "expected"), MODEL_STATUS)
def test_model_status_fields(observed: RegistryModel, expected: dict[str, Any]) -> None:
    fields = MODEL.status_fields(observed)
    assert fields == expected
    # The stored configuration holds the API key: none of it reaches the status.
    assert SECRET_KEY not in repr(fields)
    assert "configuration" not in fields
    assert SECRET_KEY not in repr(observed)


MODEL_PAYLOAD = [
    pytest.param(
        md_desired(),
        {"name": "m1", "dtype": "openai", "configuration": STORED, "summary": "s", "tags": "a,b"},
        id="full",
    ),
    pytest.param(
        md_desired(tags=["z", "a", "z"], summary=""),
        {"name": "m1", "dtype": "openai", "configuration": STORED, "summary": "", "tags": "a,z"},
        id="tags-deduplicated-sorted",
    ),
    pytest.param(
        md_desired(name="other", configuration={"apiKeySecretRef": {"name": "llm", "key": "k"}}, tags=[]),
        {
            "name": "other",
            "dtype": "openai",
            "configuration": {
                "api_key": SECRET_KEY,
                "model": "gpt-3.5-turbo",
                "base_url": "https://api.openai.com/v1",
                "system_prompt": "",
            },
            "summary": "s",
            "tags": "",
        },
        id="configuration-defaults",
    ),
]


@pytest.mark.parametrize(("desired", "expected"), MODEL_PAYLOAD)
def test_model_payload(desired: DesiredModel, expected: dict[str, Any]) -> None:
    assert desired.payload() == expected
    assert desired.configuration() == expected["configuration"]


MODEL_TENANTS = [
    pytest.param(md_desired(), None, None, id="default-never-recorded"),
    pytest.param(md_desired(tenant="t1"), "t1", "t1", id="spec-tenant-never-recorded"),
    pytest.param(md_desired(tenant="t2", current_tenant="t1"), "t2", "t1", id="moving-stored-in-old"),
    pytest.param(md_desired(tenant="t2", current_tenant=""), "t2", None, id="moving-from-default"),
    pytest.param(md_desired(tenant=""), None, None, id="empty-spec-tenant-is-default"),
]


@pytest.mark.parametrize(("desired", "tenant", "stored"), MODEL_TENANTS)
def test_model_tenants(desired: DesiredModel, tenant: str | None, stored: str | None) -> None:
    assert (desired.tenant, desired.stored_tenant) == (tenant, stored)


# --------------------------------------------------------------------------------------------
# DedicatedEndpoint (Together)
# --------------------------------------------------------------------------------------------

DE_SPEC = {"model": "meta/llama", "hardware": "1x_h100", "autoscaling": {"minReplicas": 1, "maxReplicas": 2}}


def de_desired(*, spec_changed: bool = False, observing: bool = False, **spec: Any) -> DesiredEndpoint:
    validated = DedicatedEndpointSpec.model_validate({**DE_SPEC, **spec})
    # As desire() names it: the spec's displayName, else <namespace>/<name>.
    return DesiredEndpoint(validated, validated.display_name or "ns/de", spec_changed=spec_changed, observing=observing)


def de_observed(state: str = "STARTED", **fields: Any) -> together.Endpoint:
    data = {
        "id": "ep-1",
        "name": "acct/meta/llama-abc",
        "display_name": "ns/de",
        "model": "meta/llama",
        "hardware": "1x_h100",
        "state": state,
        "autoscaling": {"min_replicas": 1, "max_replicas": 2},
        **fields,
    }
    return together.Endpoint.model_validate(data)


def de_listed(state: str = "STARTED", model: str | None = "meta/llama") -> together.Endpoint:
    """A list item: no display name, hardware or autoscaling."""
    return together.Endpoint.model_validate(
        {"id": "ep-1", "name": "acct/meta/llama-abc", "model": model, "state": state}
    )


STOPPED_SPEC = {"state": "Stopped"}
NO_RESTART = {"restartAfterAutoStop": False}

DEDICATED_DIFF = [
    pytest.param(de_desired(), de_observed(), None, id="no-change"),
    pytest.param(de_desired(), de_listed(), None, id="list-item-lacks-fields-no-change"),
    pytest.param(de_desired(), de_listed(model=None), None, id="list-item-without-model"),
    pytest.param(de_desired(), de_observed(model="meta/other"), {"recreate": ["model"]}, id="model-recreate"),
    pytest.param(de_desired(), de_observed(hardware="8x_h100"), {"recreate": ["hardware"]}, id="hardware-recreate"),
    pytest.param(
        de_desired(model="meta/new", hardware="2x_h100"),
        de_observed(),
        {"recreate": ["model", "hardware"]},
        id="model-and-hardware-recreate",
    ),
    pytest.param(de_desired(displayName="pretty"), de_observed(), {"display_name": "pretty"}, id="display-name"),
    pytest.param(
        de_desired(autoscaling={"minReplicas": 2, "maxReplicas": 4}),
        de_observed(),
        {"autoscaling": {"min_replicas": 2, "max_replicas": 4}},
        id="autoscaling",
    ),
    pytest.param(
        de_desired(hardware="2x_h100", autoscaling={"minReplicas": 1, "maxReplicas": 3}),
        de_observed(),
        {"recreate": ["hardware"], "autoscaling": {"min_replicas": 1, "max_replicas": 3}},
        id="recreate-plus-autoscaling",
    ),
    # The start rule: STOPPED under spec Started.
    pytest.param(de_desired(), de_observed("STOPPED"), {"state": "STARTED"}, id="auto-stopped-restart"),
    pytest.param(
        de_desired(spec_changed=True), de_observed("STOPPED"), {"state": "STARTED"}, id="stopped-spec-changed-start"
    ),
    pytest.param(de_desired(**NO_RESTART), de_observed("STOPPED"), None, id="auto-stopped-no-restart-left-stopped"),
    pytest.param(
        de_desired(spec_changed=True, **NO_RESTART),
        de_observed("STOPPED"),
        {"state": "STARTED"},
        id="no-restart-but-spec-changed-start",
    ),
    pytest.param(
        de_desired(autoscaling={"minReplicas": 1, "maxReplicas": 3}),
        de_observed("STOPPED"),
        {"autoscaling": {"min_replicas": 1, "max_replicas": 3}, "state": "STARTED"},
        id="restart-with-autoscaling",
    ),
    pytest.param(de_desired(), de_observed("PENDING"), None, id="started-pending-wait"),
    pytest.param(de_desired(), de_observed("STARTING"), None, id="started-starting-wait"),
    pytest.param(de_desired(), de_observed("STOPPING"), None, id="started-stopping-wait"),
    pytest.param(de_desired(), de_observed("ERROR"), None, id="started-error-no-state-change"),
    # Spec Stopped: stop whatever runs or is about to.
    pytest.param(de_desired(**STOPPED_SPEC), de_observed("STARTED"), {"state": "STOPPED"}, id="stop-started"),
    pytest.param(de_desired(**STOPPED_SPEC), de_observed("PENDING"), {"state": "STOPPED"}, id="stop-pending"),
    pytest.param(de_desired(**STOPPED_SPEC), de_observed("STARTING"), {"state": "STOPPED"}, id="stop-starting"),
    pytest.param(de_desired(**STOPPED_SPEC), de_observed("ERROR"), {"state": "STOPPED"}, id="stop-error"),
    pytest.param(de_desired(**STOPPED_SPEC), de_observed("STOPPING"), None, id="stopped-stopping-wait"),
    pytest.param(de_desired(**STOPPED_SPEC), de_observed("STOPPED"), None, id="stopped-no-change"),
    pytest.param(
        de_desired(spec_changed=True, **STOPPED_SPEC), de_observed("STOPPED"), None, id="stopped-spec-changed-no-change"
    ),
]


@pytest.mark.parametrize(("desired", "observed", "expected"), DEDICATED_DIFF)
def test_dedicated_diff(desired: DesiredEndpoint, observed: together.Endpoint, expected: Any) -> None:
    assert changes_of(DEDICATED, desired, observed) == expected


AUTO_STOPPED = (
    "Together stopped the endpoint; restartAfterAutoStop is false, so it stays stopped until the spec changes"
)

DEDICATED_READINESS = [
    pytest.param(
        de_desired(),
        de_observed("PENDING"),
        Readiness(False, "Starting", "the endpoint is PENDING", True),
        id="pending",
    ),
    pytest.param(
        de_desired(),
        de_observed("STARTING"),
        Readiness(False, "Starting", "the endpoint is STARTING", True),
        id="starting",
    ),
    pytest.param(
        de_desired(),
        de_observed("STARTED"),
        Readiness(True, "Available", "acct/meta/llama-abc serves meta/llama"),
        id="started-available",
    ),
    pytest.param(
        de_desired(autoscaling={"minReplicas": 2, "maxReplicas": 2}),
        de_observed("STARTED"),
        Readiness(False, "Scaling", "autoscaling is moving to the spec's bounds", True),
        id="started-scaling",
    ),
    pytest.param(
        de_desired(observing=True, autoscaling={"minReplicas": 2, "maxReplicas": 2}),
        de_observed("STARTED"),
        Readiness(True, "Available", "acct/meta/llama-abc serves meta/llama"),
        id="observed-other-bounds-serves-nothing-moves",
    ),
    pytest.param(
        de_desired(observing=True),
        de_observed("STOPPED"),
        Readiness(False, "Stopped", "Together reports the endpoint STOPPED"),
        id="observed-stopped-no-auto-stop-claim",
    ),
    pytest.param(
        de_desired(),
        de_listed("STARTED"),
        Readiness(True, "Available", "acct/meta/llama-abc serves meta/llama"),
        id="started-autoscaling-unreported",
    ),
    pytest.param(
        de_desired(**STOPPED_SPEC),
        de_observed("STOPPING"),
        Readiness(False, "Stopping", "the endpoint is STOPPING", True),
        id="stopping",
    ),
    pytest.param(
        de_desired(**NO_RESTART),
        de_observed("STOPPED"),
        Readiness(False, "AutoStopped", AUTO_STOPPED),
        id="stopped-spec-started-auto-stopped",
    ),
    pytest.param(
        de_desired(**STOPPED_SPEC),
        de_observed("STOPPED"),
        Readiness(False, "Stopped", "the endpoint is stopped, as the spec says"),
        id="stopped-spec-stopped",
    ),
    pytest.param(
        de_desired(**STOPPED_SPEC, autoscaling={"minReplicas": 2, "maxReplicas": 2}),
        de_observed("STOPPED"),
        Readiness(False, "Stopped", "the endpoint is stopped, as the spec says"),
        id="stopped-ignores-autoscaling",
    ),
    pytest.param(
        de_desired(),
        de_observed("ERROR"),
        Readiness(False, "Error", "Together reports the endpoint in state ERROR"),
        id="error-not-progressing",
    ),
]


@pytest.mark.parametrize(("desired", "observed", "expected"), DEDICATED_READINESS)
def test_dedicated_readiness(desired: DesiredEndpoint, observed: together.Endpoint, expected: Readiness) -> None:
    assert DEDICATED.readiness(desired, observed) == expected


DEDICATED_STATUS = [
    pytest.param(
        de_observed(created_at="2025-01-01T00:00:00Z"),
        {
            "id": "ep-1",
            "name": "acct/meta/llama-abc",
            "state": "STARTED",
            "hardware": "1x_h100",
            "minReplicas": 1,
            "maxReplicas": 2,
            "createdAt": "2025-01-01T00:00:00Z",
        },
        id="full",
    ),
    pytest.param(
        de_listed("STOPPED"),
        {
            "id": "ep-1",
            "name": "acct/meta/llama-abc",
            "state": "STOPPED",
            "hardware": None,
            "minReplicas": None,
            "maxReplicas": None,
            "createdAt": None,
        },
        id="list-item-unreported-are-none",
    ),
]


@pytest.mark.parametrize(("observed", "expected"), DEDICATED_STATUS)
def test_dedicated_status_fields(observed: together.Endpoint, expected: dict[str, Any]) -> None:
    assert DEDICATED.status_fields(observed) == expected


DE_BASE_PAYLOAD = {
    "model": "meta/llama",
    "hardware": "1x_h100",
    "autoscaling": {"min_replicas": 1, "max_replicas": 2},
    "display_name": "ns/de",
}

DEDICATED_PAYLOAD = [
    pytest.param(de_desired(), {**DE_BASE_PAYLOAD, "state": "STARTED"}, id="minimal-started"),
    pytest.param(de_desired(**STOPPED_SPEC), {**DE_BASE_PAYLOAD, "state": "STOPPED"}, id="stopped-upper-case"),
    pytest.param(
        de_desired(inactiveTimeoutMinutes=30, disableSpeculativeDecoding=True, availabilityZone="us-east-1a"),
        {
            **DE_BASE_PAYLOAD,
            "state": "STARTED",
            "inactive_timeout": 30,
            "disable_speculative_decoding": True,
            "availability_zone": "us-east-1a",
        },
        id="all-options",
    ),
    pytest.param(
        de_desired(inactiveTimeoutMinutes=0, disableSpeculativeDecoding=False),
        {**DE_BASE_PAYLOAD, "state": "STARTED", "inactive_timeout": 0, "disable_speculative_decoding": False},
        id="falsy-options-still-sent",
    ),
    pytest.param(
        de_desired(restartAfterAutoStop=False, replacePolicy="Recreate", deletionPolicy="Orphan"),
        {**DE_BASE_PAYLOAD, "state": "STARTED"},
        id="operator-only-fields-not-sent",
    ),
]


@pytest.mark.parametrize(("desired", "expected"), DEDICATED_PAYLOAD)
def test_dedicated_payload(desired: DesiredEndpoint, expected: dict[str, Any]) -> None:
    assert desired.payload() == expected


def ready(reason: str) -> dict[str, Any]:
    return {"conditions": [{"type": "Ready", "status": "True" if reason == "Available" else "False", "reason": reason}]}


DEDICATED_LISTED = [
    pytest.param(de_desired(), de_listed(), {"state": "STARTED", **ready("Available")}, True, id="settled-started"),
    pytest.param(
        de_desired(), de_listed(model=None), {"state": "STARTED", **ready("Available")}, True, id="listed-without-model"
    ),
    pytest.param(
        de_desired(),
        de_listed(model="meta/other"),
        {"state": "STARTED", **ready("Available")},
        False,
        id="other-model",
    ),
    pytest.param(
        de_desired(), de_listed("STOPPED"), {"state": "STARTED", **ready("Available")}, False, id="auto-stopped-since"
    ),
    pytest.param(de_desired(), de_listed(), {"state": "STARTING", **ready("Starting")}, False, id="was-starting"),
    pytest.param(de_desired(), de_listed(), {"state": "STARTED", **ready("Scaling")}, False, id="was-scaling"),
    pytest.param(de_desired(), de_listed(), {"state": "STARTED"}, False, id="no-ready-condition"),
    pytest.param(
        de_desired(**STOPPED_SPEC),
        de_listed("STOPPED"),
        {"state": "STOPPED", **ready("Stopped")},
        True,
        id="settled-stopped",
    ),
    pytest.param(
        de_desired(**STOPPED_SPEC),
        de_listed("STARTED"),
        {"state": "STOPPED", **ready("Stopped")},
        False,
        id="started-behind-our-back",
    ),
    pytest.param(
        de_desired(**NO_RESTART),
        de_listed("STOPPED"),
        {"state": "STOPPED", **ready("AutoStopped")},
        False,
        id="auto-stopped-is-not-settled",
    ),
]


@pytest.mark.parametrize(("desired", "item", "status", "expected"), DEDICATED_LISTED)
def test_dedicated_listed_unchanged(
    desired: DesiredEndpoint, item: together.Endpoint, status: dict[str, Any], expected: bool
) -> None:
    assert DEDICATED.listed_unchanged(desired, item, status) is expected


# --------------------------------------------------------------------------------------------
# Connection details (spec.writeConnectionDetailsTo), every kind
# --------------------------------------------------------------------------------------------

GATEWAY_URL = GatewayEndpointAdapter(client=None, inference_url="https://inference.example/v1")  # type: ignore[arg-type]
TOGETHER_URL = DedicatedEndpointAdapter(client=None, inference_url="https://api.together.example/v1")  # type: ignore[arg-type]

CONNECTION_DETAILS = [
    pytest.param(
        GATEWAY_URL,
        gw_desired(slug="my-org/glm"),
        gw_observed(slug="my-org/glm"),
        {"MODEL": "my-org/glm", "SLUG": "my-org/glm", "BASE_URL": "https://inference.example/v1", "ENDPOINT_ID": "e1"},
        id="gateway-the-slug-is-the-model",
    ),
    pytest.param(
        PROVIDER,
        pv_desired(),
        pv_observed(models=[{"id": "pm1", "modelId": "a"}, {"modelId": "b"}]),
        {"PROVIDER_ID": "local", "MODELS": "local:a,local:b"},
        id="provider-several-models-no-single-model",
    ),
    pytest.param(
        PROVIDER,
        pv_desired(),
        pv_observed(models=[{"id": "pm1", "modelId": "a"}]),
        {"PROVIDER_ID": "local", "MODELS": "local:a", "MODEL": "local:a"},
        id="provider-one-model-is-also-MODEL",
    ),
    pytest.param(
        PROVIDER, pv_desired(), pv_observed(), {"PROVIDER_ID": "local", "MODELS": ""}, id="provider-no-models"
    ),
    pytest.param(
        MODEL,
        md_desired(),
        md_observed(tenant="t1"),
        {"MODEL_ID": "id-1", "MODEL_NAME": "m1", "TENANT": "t1"},
        id="model-in-a-tenant",
    ),
    pytest.param(
        MODEL, md_desired(), md_observed(), {"MODEL_ID": "id-1", "MODEL_NAME": "m1"}, id="model-default-tenant"
    ),
    pytest.param(
        TOGETHER_URL,
        de_desired(),
        de_observed("STARTING"),
        {
            "MODEL": "acct/meta/llama-abc",
            "BASE_URL": "https://api.together.example/v1",
            "STATE": "STARTING",
            "ENDPOINT_ID": "ep-1",
        },
        id="dedicated-the-system-name-is-the-model",
    ),
    pytest.param(
        TOGETHER_URL,
        de_desired(),
        de_observed("PENDING", name=None),
        {"BASE_URL": "https://api.together.example/v1", "STATE": "PENDING", "ENDPOINT_ID": "ep-1"},
        id="dedicated-not-named-yet-no-MODEL",
    ),
]


@pytest.mark.parametrize(("adapter", "desired", "observed", "expected"), CONNECTION_DETAILS)
def test_connection_details(adapter: Any, desired: Any, observed: Any, expected: dict[str, str]) -> None:
    details = adapter.connection_details(desired, observed)
    assert details == expected
    # Never a key: the loop adds one only when the user asks (includeApiKeyAs).
    assert SECRET_KEY not in str(details)
