"""A catalogue of bad inputs.

Part 1, admission: invalid manifests of the four kinds, each refused by the Kubernetes API (over
HTTP, so that the same cases run against a real cluster with AIGW_TEST_KUBECONFIG) with a message
that names the offending field. Every request carries ``fieldValidation=Strict``, as kubectl sends
by default, so that unknown fields (a cross-namespace Secret reference among them) are refused
rather than silently pruned. Both refusals happen at ``kubectl apply`` time, in two steps that
each case states (``Bad.status``), the same on the emulator and on a real API server:

- 400 BadRequest, "strict decoding error: unknown field ...": the decoder's structural pruning
  found a key the schema does not declare. That is an unknown field, and also an object with keys
  where a scalar or a list is declared (``spec.metadata.team``), or objects in a list there.
- 422 Invalid, naming the field in ``details.causes``: everything the decoder lets through and the
  validation refuses: a scalar of the wrong type, a scalar where an object or a list is declared,
  a list of scalars where a scalar is declared, enum, pattern, lengths, ranges, required, CEL.

Part 2, upstream refusals: specs the schema cannot fault but the upstream refuses. The operator
must report them (Ready=False with the upstream's message, a Warning Event) after exactly one
refused call for that generation, and not retry them.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from aigw_testbed.emulator.server import merge_patch
from aigw_testbed.kubectl import Kube, condition, cr_path
from aigw_testbed.simulators.base import RequestRecord
from aigw_testbed.simulators.baseten import BasetenSimulator
from aigw_testbed.simulators.model_registry import ModelRegistrySimulator
from aigw_testbed.simulators.ngrok import NgrokSimulator
from aigw_testbed.simulators.together import TogetherSimulator
from tests.conftest import REGISTRY_KEY, record_summary
from tests.operator.conftest import KubeEnv, OperatorRunner

NAME = "bad"
# What kubectl sends by default (--validate=strict): unknown fields are errors, not pruned.
STRICT = {"fieldValidation": "Strict"}
MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}

GWE, PROVIDER, MODEL, DEP = "GatewayEndpoint", "Provider", "Model", "DedicatedEndpoint"
PLURALS = {GWE: "gatewayendpoints", PROVIDER: "providers", MODEL: "models", DEP: "dedicatedendpoints"}

# A valid spec per kind (the examples' shapes): each case changes one thing in it.
VALID: dict[str, dict[str, Any]] = {
    GWE: {
        "slug": "my-org/glm",
        "targets": [{"provider": "BASETEN", "modelId": "3kZ9xqd"}],
        "credentialsSecretRef": {"name": "baseten"},
    },
    PROVIDER: {
        "providerId": "internal-vllm",
        "name": "Internal vLLM",
        "baseUrl": "http://vllm.internal",
        "supportedApiSurfaces": [
            {"format": "openai", "surface": "chat-completions", "supportedParams": [{"name": "temperature"}]}
        ],
        "models": ["llama-3-8b"],
        "credentialsSecretRef": {"name": "ngrok"},
    },
    MODEL: {
        "dtype": "openai",
        "configuration": {"model": "gpt-4o", "apiKeySecretRef": {"name": "openai"}},
        "summary": "support bot",
        "tags": ["openai"],
        "tenant": "root",  # the registry fixture is multi-tenant: every call names a tenant
        "credentialsSecretRef": {"name": "registry"},
    },
    DEP: {
        "model": "meta-llama/Llama-3-8b-chat-hf",
        "hardware": "1x_nvidia_h100_80gb_sxm",
        "autoscaling": {"minReplicas": 1, "maxReplicas": 2},
        "credentialsSecretRef": {"name": "together"},
    },
}

# Categories, for the catalogue's tally.
WRONG_TYPE = "wrong type"
MISSING = "missing required field"
CEL_RULE = "CEL rule"
IMMUTABLE = "immutable edit"
OUT_OF_RANGE = "out-of-range number"
BAD_URL = "bad URL"
TOO_LONG = "over-long string"
TOO_MANY = "too many items"
BAD_VALUE = "value not allowed (enum, pattern, empty, duplicate)"
UNKNOWN = "unknown field"
CROSS_NAMESPACE = "cross-namespace Secret reference"
WRONG_SHAPE = "object where a scalar or a list is declared"
# Found while decoding, before validation: 400 BadRequest on every API server.
DECODING = frozenset({UNKNOWN, CROSS_NAMESPACE, WRONG_SHAPE})


@dataclass(frozen=True)
class Bad:
    """One invalid manifest.

    ``spec`` is a JSON merge patch on ``VALID[kind]`` (``None`` removes a key). Without ``edit``
    the result is created and must be refused. With ``edit`` the result is a valid object that is
    created first; then ``edit`` (again a merge patch on the spec) is sent as a PATCH, or as a PUT
    of the whole object (``replace=True``), and that update must be refused.
    """

    id: str
    kind: str
    category: str
    path: str  # the field path the API server names, e.g. "spec.targets[0].modelId"
    spec: dict[str, Any] = field(default_factory=dict)
    edit: dict[str, Any] | None = None
    replace: bool = False
    without_spec: bool = False
    says: str = ""  # more text the message must carry (the CEL rule's message)

    @property
    def status(self) -> int:
        """The refusal every API server gives: 400 from the decoder, else 422 from validation."""
        return 400 if self.category in DECODING else 422

    @property
    def needle(self) -> str:
        # A decoding error names the pruned key ("strict decoding error: unknown field ..."), the
        # others are field errors ("<path>: Required value", "<path>: Invalid value: ...").
        return f'unknown field "{self.path}"' if self.status == 400 else f"{self.path}: "


def long(n: int, prefix: str = "") -> str:
    return prefix + "a" * (n - len(prefix))


T0 = "spec.targets[0]"
SURFACE0 = "spec.supportedApiSurfaces[0]"
KEY0 = "spec.providerKeys[0]"
CONFIG = "spec.configuration"
AUTOSCALING = "spec.autoscaling"
ONE_TARGET = "exactly one target is supported"
BASETEN_ONLY = "modelId and environmentName apply to BASETEN targets only"
ONE_SECRET = "exactly one of secretId and secretRef is required when provider is ANTHROPIC or OPENAI"
BASE_URL_RULE = "baseUrl must be an https URL with a host (http is allowed only for ngrok .internal hosts)"
MODEL_IMMUTABLE = "dtype and configuration cannot be changed in the model registry"
DEP_IMMUTABLE = "cannot be changed on a Together endpoint"


def anthropic(**extra: Any) -> dict[str, Any]:
    return {"targets": [{"provider": "ANTHROPIC", "secretId": "anthropic-key", "targetModel": "claude", **extra}]}


def surface(**extra: Any) -> dict[str, Any]:
    return {"supportedApiSurfaces": [{"format": "openai", **extra}]}


def provider_keys(*keys: dict[str, Any]) -> dict[str, Any]:
    return {"providerKeys": list(keys)}


def config(**extra: Any) -> dict[str, Any]:
    return {"configuration": extra}


def scaling(**bounds: Any) -> dict[str, Any]:
    return {"autoscaling": bounds}


CASES: list[Bad] = [
    # ---------------------------------------------------------------- GatewayEndpoint
    Bad("gwe/slug-not-a-string", GWE, WRONG_TYPE, "spec.slug", {"slug": 5}),
    Bad("gwe/targets-an-object", GWE, WRONG_SHAPE, "spec.targets.provider", {"targets": {"provider": "BASETEN"}}),
    Bad(
        "gwe/provider-an-object",
        GWE,
        WRONG_SHAPE,
        f"{T0}.provider.a",
        {"targets": [{"provider": {"a": 1}, "modelId": "3kZ9xqd"}]},
    ),
    Bad("gwe/slug-a-list-of-objects", GWE, WRONG_SHAPE, "spec.slug[0].org", {"slug": [{"org": "my-org"}]}),
    Bad("gwe/slug-a-list-of-strings", GWE, WRONG_TYPE, "spec.slug", {"slug": ["my-org/glm"]}),
    Bad("gwe/target-a-string", GWE, WRONG_TYPE, T0, {"targets": ["BASETEN"]}),
    Bad("gwe/secret-ref-a-string", GWE, WRONG_TYPE, "spec.credentialsSecretRef", {"credentialsSecretRef": "baseten"}),
    Bad("gwe/no-spec", GWE, MISSING, "spec", without_spec=True),
    Bad("gwe/no-slug", GWE, MISSING, "spec.slug", {"slug": None}),
    Bad("gwe/no-targets", GWE, MISSING, "spec.targets", {"targets": None}),
    Bad("gwe/target-without-provider", GWE, MISSING, f"{T0}.provider", {"targets": [{"modelId": "3kZ9xqd"}]}),
    Bad(
        "gwe/secret-ref-without-name",
        GWE,
        MISSING,
        "spec.credentialsSecretRef.name",
        {"credentialsSecretRef": {"name": None, "key": "apiKey"}},
    ),
    Bad(
        "gwe/baseten-without-model-id",
        GWE,
        CEL_RULE,
        f"{T0}.modelId",
        {"targets": [{"provider": "BASETEN"}]},
        says="modelId is required when provider is BASETEN",
    ),
    Bad(
        "gwe/baseten-with-target-model-only",
        GWE,
        CEL_RULE,
        f"{T0}.modelId",
        {"targets": [{"provider": "BASETEN", "targetModel": "glm"}]},
        says="modelId is required",
    ),
    Bad(
        "gwe/anthropic-without-secret-id",
        GWE,
        CEL_RULE,
        T0,
        {"targets": [{"provider": "ANTHROPIC", "targetModel": "claude"}]},
        says=ONE_SECRET,
    ),
    Bad(
        "gwe/anthropic-with-secret-id-and-secret-ref",
        GWE,
        CEL_RULE,
        T0,
        anthropic(secretRef={"name": "anthropic"}),
        says=ONE_SECRET,
    ),
    Bad(
        "gwe/openai-without-target-model",
        GWE,
        CEL_RULE,
        f"{T0}.targetModel",
        {"targets": [{"provider": "OPENAI", "secretId": "openai-key"}]},
        says="targetModel is required when provider is ANTHROPIC or OPENAI",
    ),
    Bad(
        "gwe/baseten-with-secret-ref",
        GWE,
        CEL_RULE,
        f"{T0}.secretRef",
        {"targets": [{"provider": "BASETEN", "modelId": "3kZ9xqd", "secretRef": {"name": "anthropic"}}]},
        says="secretRef applies to ANTHROPIC and OPENAI targets only",
    ),
    Bad(
        "gwe/target-secret-ref-without-name",
        GWE,
        MISSING,
        f"{T0}.secretRef.name",
        {"targets": [{"provider": "ANTHROPIC", "targetModel": "claude", "secretRef": {"key": "apiKey"}}]},
    ),
    Bad(
        "gwe/openai-with-model-id",
        GWE,
        CEL_RULE,
        T0,
        {"targets": [{"provider": "OPENAI", "secretId": "k", "targetModel": "gpt-4o", "modelId": "3kZ9xqd"}]},
        says=BASETEN_ONLY,
    ),
    Bad("gwe/anthropic-with-environment", GWE, CEL_RULE, T0, anthropic(environmentName="staging"), says=BASETEN_ONLY),
    Bad("gwe/empty-targets", GWE, CEL_RULE, "spec.targets", {"targets": []}, says=ONE_TARGET),
    Bad(
        "gwe/two-targets",
        GWE,
        TOO_MANY,
        "spec.targets",
        {"targets": [{"provider": "BASETEN", "modelId": "a"}, {"provider": "BASETEN", "modelId": "b"}]},
    ),
    Bad("gwe/region-us", GWE, BAD_VALUE, "spec.region", {"region": "US"}),
    Bad(
        "gwe/secret-name-not-dns",
        GWE,
        BAD_VALUE,
        "spec.credentialsSecretRef.name",
        {"credentialsSecretRef": {"name": "Bad_Name"}},
    ),
    Bad(
        "gwe/secret-key-with-slash",
        GWE,
        BAD_VALUE,
        "spec.credentialsSecretRef.key",
        {"credentialsSecretRef": {"name": "baseten", "key": "a/b"}},
    ),
    Bad(
        "gwe/provider-vertex",
        GWE,
        BAD_VALUE,
        f"{T0}.provider",
        {"targets": [{"provider": "VERTEX", "secretId": "k", "targetModel": "gemini"}]},
    ),
    Bad(
        "gwe/provider-lower-case",
        GWE,
        BAD_VALUE,
        f"{T0}.provider",
        {"targets": [{"provider": "baseten", "modelId": "3kZ9xqd"}]},
    ),
    Bad("gwe/deletion-policy-keep", GWE, BAD_VALUE, "spec.deletionPolicy", {"deletionPolicy": "Keep"}),
    Bad("gwe/slug-without-prefix", GWE, BAD_VALUE, "spec.slug", {"slug": "glm"}),
    Bad("gwe/slug-with-space", GWE, BAD_VALUE, "spec.slug", {"slug": "my-org/glm 5"}),
    Bad("gwe/slug-three-segments", GWE, BAD_VALUE, "spec.slug", {"slug": "my-org/team/glm"}),
    Bad(
        "gwe/secret-ref-name-empty",
        GWE,
        BAD_VALUE,
        "spec.credentialsSecretRef.name",
        {"credentialsSecretRef": {"name": ""}},
    ),
    Bad("gwe/slug-254", GWE, TOO_LONG, "spec.slug", {"slug": long(254, "my-org/")}),
    Bad(
        "gwe/model-id-129", GWE, TOO_LONG, f"{T0}.modelId", {"targets": [{"provider": "BASETEN", "modelId": long(129)}]}
    ),
    Bad(
        "gwe/environment-129",
        GWE,
        TOO_LONG,
        f"{T0}.environmentName",
        {"targets": [{"provider": "BASETEN", "modelId": "m", "environmentName": long(129)}]},
    ),
    Bad("gwe/secret-id-257", GWE, TOO_LONG, f"{T0}.secretId", anthropic(secretId=long(257))),
    Bad("gwe/target-model-257", GWE, TOO_LONG, f"{T0}.targetModel", anthropic(targetModel=long(257))),
    Bad(
        "gwe/secret-ref-key-254",
        GWE,
        TOO_LONG,
        "spec.credentialsSecretRef.key",
        {"credentialsSecretRef": {"key": long(254)}},
    ),
    Bad(
        "gwe/region-patched",
        GWE,
        IMMUTABLE,
        "spec.region",
        {"region": "EU"},
        edit={"region": "UNRESTRICTED"},
        says="region is immutable",
    ),
    Bad(
        "gwe/region-replaced",
        GWE,
        IMMUTABLE,
        "spec.region",
        edit={"region": "EU"},
        replace=True,
        says="region is immutable",
    ),
    Bad(
        "gwe/region-removed",
        GWE,
        IMMUTABLE,
        "spec.region",
        {"region": "EU"},
        edit={"region": None},
        says="region is immutable",
    ),
    Bad("gwe/unknown-spec-field", GWE, UNKNOWN, "spec.replicas", {"replicas": 3}),
    Bad(
        "gwe/unknown-target-field",
        GWE,
        UNKNOWN,
        f"{T0}.weight",
        {"targets": [{"provider": "BASETEN", "modelId": "m", "weight": 1}]},
    ),
    Bad("gwe/openai-compatible-base-url", GWE, UNKNOWN, f"{T0}.baseUrl", anthropic(baseUrl="https://llm.example.com")),
    Bad(
        "gwe/target-secret-in-other-namespace",
        GWE,
        CROSS_NAMESPACE,
        f"{T0}.secretRef.namespace",
        {
            "targets": [
                {
                    "provider": "ANTHROPIC",
                    "targetModel": "claude",
                    "secretRef": {"name": "anthropic", "namespace": "ai"},
                }
            ]
        },
    ),
    Bad(
        "gwe/secret-in-other-namespace",
        GWE,
        CROSS_NAMESPACE,
        "spec.credentialsSecretRef.namespace",
        {"credentialsSecretRef": {"namespace": "kube-system"}},
    ),
    # ---------------------------------------------------------------- Provider
    Bad("provider/models-a-string", PROVIDER, WRONG_TYPE, "spec.models", {"models": "llama-3-8b"}),
    Bad("provider/metadata-an-object", PROVIDER, WRONG_SHAPE, "spec.metadata.team", {"metadata": {"team": "ml"}}),
    Bad("provider/metadata-an-empty-object", PROVIDER, WRONG_TYPE, "spec.metadata", {"metadata": {}}),
    Bad(
        "provider/surfaces-an-object",
        PROVIDER,
        WRONG_SHAPE,
        "spec.supportedApiSurfaces.format",
        {"supportedApiSurfaces": {"format": "openai"}},
    ),
    Bad("provider/name-a-boolean", PROVIDER, WRONG_TYPE, "spec.name", {"name": True}),
    Bad("provider/no-spec", PROVIDER, MISSING, "spec", without_spec=True),
    Bad("provider/no-provider-id", PROVIDER, MISSING, "spec.providerId", {"providerId": None}),
    Bad("provider/no-name", PROVIDER, MISSING, "spec.name", {"name": None}),
    Bad("provider/no-base-url", PROVIDER, MISSING, "spec.baseUrl", {"baseUrl": None}),
    Bad(
        "provider/surface-without-format",
        PROVIDER,
        MISSING,
        f"{SURFACE0}.format",
        {"supportedApiSurfaces": [{"surface": "messages"}]},
    ),
    Bad(
        "provider/param-without-name",
        PROVIDER,
        MISSING,
        f"{SURFACE0}.supportedParams[0].name",
        surface(supportedParams=[{}]),
    ),
    Bad(
        "provider/http-public-host",
        PROVIDER,
        BAD_URL,
        "spec.baseUrl",
        {"baseUrl": "http://vllm.example.com"},
        says=BASE_URL_RULE,
    ),
    Bad("provider/not-a-url", PROVIDER, BAD_URL, "spec.baseUrl", {"baseUrl": "vllm"}, says=BASE_URL_RULE),
    Bad("provider/ftp", PROVIDER, BAD_URL, "spec.baseUrl", {"baseUrl": "ftp://vllm.internal"}, says=BASE_URL_RULE),
    Bad("provider/no-host", PROVIDER, BAD_URL, "spec.baseUrl", {"baseUrl": "https://"}, says=BASE_URL_RULE),
    Bad("provider/empty-host", PROVIDER, BAD_URL, "spec.baseUrl", {"baseUrl": "https:///v1"}, says=BASE_URL_RULE),
    Bad(
        "provider/http-internal-lookalike",
        PROVIDER,
        BAD_URL,
        "spec.baseUrl",
        {"baseUrl": "http://vllm.internal.example.com"},
        says=BASE_URL_RULE,
    ),
    Bad(
        "provider/http-internal-userinfo",
        PROVIDER,
        BAD_URL,
        "spec.baseUrl",
        {"baseUrl": "http://vllm.internal@evil.example.com"},
        says=BASE_URL_RULE,
    ),
    Bad(
        "provider/http-bare-internal",
        PROVIDER,
        BAD_URL,
        "spec.baseUrl",
        {"baseUrl": "http://internal"},
        says=BASE_URL_RULE,
    ),
    Bad("provider/relative-url", PROVIDER, BAD_URL, "spec.baseUrl", {"baseUrl": "/v1"}, says=BASE_URL_RULE),
    Bad("provider/empty-base-url", PROVIDER, BAD_URL, "spec.baseUrl", {"baseUrl": ""}),
    Bad("provider/provider-id-with-colon", PROVIDER, BAD_VALUE, "spec.providerId", {"providerId": "vllm:8b"}),
    Bad("provider/provider-id-with-space", PROVIDER, BAD_VALUE, "spec.providerId", {"providerId": "my vllm"}),
    Bad("provider/provider-id-empty", PROVIDER, BAD_VALUE, "spec.providerId", {"providerId": ""}),
    Bad("provider/model-listed-twice", PROVIDER, BAD_VALUE, "spec.models[1]", {"models": ["llama-3-8b", "llama-3-8b"]}),
    Bad("provider/model-id-empty", PROVIDER, BAD_VALUE, "spec.models[0]", {"models": [""]}),
    Bad("provider/deletion-policy-retain", PROVIDER, BAD_VALUE, "spec.deletionPolicy", {"deletionPolicy": "Retain"}),
    Bad("provider/provider-id-256", PROVIDER, TOO_LONG, "spec.providerId", {"providerId": long(256)}),
    Bad("provider/name-256", PROVIDER, TOO_LONG, "spec.name", {"name": long(256)}),
    Bad(
        "provider/base-url-2049",
        PROVIDER,
        TOO_LONG,
        "spec.baseUrl",
        {"baseUrl": long(2049, "https://vllm.example.com/")},
    ),
    Bad("provider/metadata-4097", PROVIDER, TOO_LONG, "spec.metadata", {"metadata": long(4097)}),
    Bad(
        "provider/format-65", PROVIDER, TOO_LONG, f"{SURFACE0}.format", {"supportedApiSurfaces": [{"format": long(65)}]}
    ),
    Bad("provider/surface-65", PROVIDER, TOO_LONG, f"{SURFACE0}.surface", surface(surface=long(65))),
    Bad(
        "provider/param-name-256",
        PROVIDER,
        TOO_LONG,
        f"{SURFACE0}.supportedParams[0].name",
        surface(supportedParams=[{"name": long(256)}]),
    ),
    Bad("provider/model-id-256", PROVIDER, TOO_LONG, "spec.models[0]", {"models": [long(256)]}),
    Bad("provider/1001-models", PROVIDER, TOO_MANY, "spec.models", {"models": [f"m{i}" for i in range(1001)]}),
    Bad(
        "provider/33-surfaces",
        PROVIDER,
        TOO_MANY,
        "spec.supportedApiSurfaces",
        {"supportedApiSurfaces": [{"format": f"f{i}"} for i in range(33)]},
    ),
    Bad(
        "provider/101-params",
        PROVIDER,
        TOO_MANY,
        f"{SURFACE0}.supportedParams",
        surface(supportedParams=[{"name": f"p{i}"} for i in range(101)]),
    ),
    Bad(
        "provider/provider-id-patched",
        PROVIDER,
        IMMUTABLE,
        "spec.providerId",
        edit={"providerId": "other-vllm"},
        says="providerId is immutable",
    ),
    Bad(
        "provider/provider-id-replaced",
        PROVIDER,
        IMMUTABLE,
        "spec.providerId",
        edit={"providerId": "vllm-2"},
        replace=True,
        says="providerId is immutable",
    ),
    Bad("provider/inline-api-key", PROVIDER, UNKNOWN, "spec.apiKey", {"apiKey": "not-a-real-key"}),
    Bad("provider/unknown-surface-field", PROVIDER, UNKNOWN, f"{SURFACE0}.version", surface(version="v1")),
    Bad(
        "provider/key-name-listed-twice",
        PROVIDER,
        BAD_VALUE,
        "spec.providerKeys[1]",
        provider_keys(
            {"name": "primary", "secretRef": {"name": "k1"}}, {"name": "primary", "secretRef": {"name": "k2"}}
        ),
    ),
    Bad(
        "provider/21-keys",
        PROVIDER,
        TOO_MANY,
        "spec.providerKeys",
        provider_keys(*({"name": f"key-{i}", "secretRef": {"name": "k"}} for i in range(21))),
    ),
    Bad("provider/key-without-secret-ref", PROVIDER, MISSING, f"{KEY0}.secretRef", provider_keys({"name": "primary"})),
    Bad(
        "provider/key-value-inline",
        PROVIDER,
        UNKNOWN,
        f"{KEY0}.value",
        provider_keys({"name": "primary", "value": "not-a-real-key", "secretRef": {"name": "k1"}}),
    ),
    Bad(
        "provider/key-secret-in-other-namespace",
        PROVIDER,
        CROSS_NAMESPACE,
        f"{KEY0}.secretRef.namespace",
        provider_keys({"name": "primary", "secretRef": {"name": "k1", "namespace": "vllm"}}),
    ),
    Bad(
        "provider/secret-in-other-namespace",
        PROVIDER,
        CROSS_NAMESPACE,
        "spec.credentialsSecretRef.namespace",
        {"credentialsSecretRef": {"namespace": "ngrok-system"}},
    ),
    # ---------------------------------------------------------------- Model
    Bad("model/configuration-a-string", MODEL, WRONG_TYPE, CONFIG, {"configuration": "gpt-4o"}),
    Bad("model/tags-a-string", MODEL, WRONG_TYPE, "spec.tags", {"tags": "openai,support"}),
    Bad("model/tag-a-number", MODEL, WRONG_TYPE, "spec.tags[0]", {"tags": [1]}),
    Bad("model/summary-a-list", MODEL, WRONG_TYPE, "spec.summary", {"summary": ["support"]}),
    Bad("model/no-spec", MODEL, MISSING, "spec", without_spec=True),
    Bad("model/no-configuration", MODEL, MISSING, CONFIG, {"configuration": None}),
    Bad("model/no-api-key-secret-ref", MODEL, MISSING, f"{CONFIG}.apiKeySecretRef", config(apiKeySecretRef=None)),
    Bad(
        "model/api-key-secret-ref-without-name",
        MODEL,
        MISSING,
        f"{CONFIG}.apiKeySecretRef.name",
        config(apiKeySecretRef={"name": None, "key": "apiKey"}),
    ),
    Bad(
        "model/base-url-http",
        MODEL,
        BAD_URL,
        f"{CONFIG}.baseUrl",
        config(baseUrl="http://api.openai.com/v1"),
        says="baseUrl must be an https URL",
    ),
    Bad(
        "model/base-url-http-internal",
        MODEL,
        BAD_URL,
        f"{CONFIG}.baseUrl",
        config(baseUrl="http://llm.internal/v1"),
        says="baseUrl must be an https URL",
    ),
    Bad(
        "model/base-url-not-a-url",
        MODEL,
        BAD_URL,
        f"{CONFIG}.baseUrl",
        config(baseUrl="api.openai.com"),
        says="baseUrl must be an https URL",
    ),
    Bad(
        "model/base-url-empty",
        MODEL,
        BAD_URL,
        f"{CONFIG}.baseUrl",
        config(baseUrl=""),
        says="baseUrl must be an https URL",
    ),
    Bad("model/name-leading-dash", MODEL, BAD_VALUE, "spec.name", {"name": "-assistant"}),
    Bad("model/name-with-slash", MODEL, BAD_VALUE, "spec.name", {"name": "team/assistant"}),
    Bad("model/name-empty", MODEL, BAD_VALUE, "spec.name", {"name": ""}),
    Bad("model/tag-with-comma", MODEL, BAD_VALUE, "spec.tags[0]", {"tags": ["openai,support"]}),
    Bad("model/tag-with-space", MODEL, BAD_VALUE, "spec.tags[0]", {"tags": ["open ai"]}),
    Bad("model/tag-listed-twice", MODEL, BAD_VALUE, "spec.tags[1]", {"tags": ["openai", "openai"]}),
    Bad("model/dtype-anthropic", MODEL, BAD_VALUE, "spec.dtype", {"dtype": "anthropic"}),
    Bad("model/replace-policy-always", MODEL, BAD_VALUE, "spec.replacePolicy", {"replacePolicy": "Always"}),
    Bad("model/name-256", MODEL, TOO_LONG, "spec.name", {"name": long(256)}),
    Bad("model/summary-4097", MODEL, TOO_LONG, "spec.summary", {"summary": long(4097)}),
    Bad("model/tag-65", MODEL, TOO_LONG, "spec.tags[0]", {"tags": [long(65)]}),
    Bad("model/tenant-256", MODEL, TOO_LONG, "spec.tenant", {"tenant": long(256)}),
    Bad("model/upstream-model-257", MODEL, TOO_LONG, f"{CONFIG}.model", config(model=long(257))),
    Bad("model/system-prompt-32769", MODEL, TOO_LONG, f"{CONFIG}.systemPrompt", config(systemPrompt=long(32769))),
    Bad(
        "model/base-url-2049",
        MODEL,
        TOO_LONG,
        f"{CONFIG}.baseUrl",
        config(baseUrl=long(2049, "https://api.openai.com/")),
    ),
    Bad("model/65-tags", MODEL, TOO_MANY, "spec.tags", {"tags": [f"t{i}" for i in range(65)]}),
    Bad("model/upstream-model-patched", MODEL, IMMUTABLE, "spec", edit=config(model="gpt-4.1"), says=MODEL_IMMUTABLE),
    Bad(
        "model/base-url-replaced",
        MODEL,
        IMMUTABLE,
        "spec",
        edit=config(baseUrl="https://llm.example.com/v1"),
        replace=True,
        says=MODEL_IMMUTABLE,
    ),
    Bad(
        "model/system-prompt-patched",
        MODEL,
        IMMUTABLE,
        "spec",
        edit=config(systemPrompt="Be brief."),
        says=MODEL_IMMUTABLE,
    ),
    Bad(
        "model/api-key-secret-patched",
        MODEL,
        IMMUTABLE,
        "spec",
        edit=config(apiKeySecretRef={"name": "openai-2"}),
        says=MODEL_IMMUTABLE,
    ),
    Bad(
        "model/api-key-secret-key-replaced",
        MODEL,
        IMMUTABLE,
        "spec",
        edit=config(apiKeySecretRef={"key": "token"}),
        replace=True,
        says=MODEL_IMMUTABLE,
    ),
    Bad("model/inline-api-key", MODEL, UNKNOWN, f"{CONFIG}.apiKey", config(apiKey="not-a-real-key")),
    Bad("model/unknown-spec-field", MODEL, UNKNOWN, "spec.temperature", {"temperature": 0.2}),
    Bad(
        "model/api-key-secret-in-other-namespace",
        MODEL,
        CROSS_NAMESPACE,
        f"{CONFIG}.apiKeySecretRef.namespace",
        config(apiKeySecretRef={"namespace": "openai"}),
    ),
    Bad(
        "model/secret-in-other-namespace",
        MODEL,
        CROSS_NAMESPACE,
        "spec.credentialsSecretRef.namespace",
        {"credentialsSecretRef": {"namespace": "registry"}},
    ),
    # ---------------------------------------------------------------- DedicatedEndpoint
    Bad("dep/min-replicas-a-string", DEP, WRONG_TYPE, f"{AUTOSCALING}.minReplicas", scaling(minReplicas="1")),
    Bad(
        "dep/inactive-timeout-fraction", DEP, WRONG_TYPE, "spec.inactiveTimeoutMinutes", {"inactiveTimeoutMinutes": 1.5}
    ),
    Bad(
        "dep/speculative-a-string",
        DEP,
        WRONG_TYPE,
        "spec.disableSpeculativeDecoding",
        {"disableSpeculativeDecoding": "yes"},
    ),
    Bad("dep/restart-a-string", DEP, WRONG_TYPE, "spec.restartAfterAutoStop", {"restartAfterAutoStop": "true"}),
    Bad("dep/autoscaling-a-number", DEP, WRONG_TYPE, AUTOSCALING, {"autoscaling": 2}),
    Bad("dep/no-spec", DEP, MISSING, "spec", without_spec=True),
    Bad("dep/no-model", DEP, MISSING, "spec.model", {"model": None}),
    Bad("dep/no-hardware", DEP, MISSING, "spec.hardware", {"hardware": None}),
    Bad("dep/no-autoscaling", DEP, MISSING, AUTOSCALING, {"autoscaling": None}),
    Bad("dep/no-min-replicas", DEP, MISSING, f"{AUTOSCALING}.minReplicas", scaling(minReplicas=None)),
    Bad("dep/no-max-replicas", DEP, MISSING, f"{AUTOSCALING}.maxReplicas", scaling(maxReplicas=None)),
    Bad("dep/min-replicas-0", DEP, OUT_OF_RANGE, f"{AUTOSCALING}.minReplicas", scaling(minReplicas=0)),
    Bad("dep/min-replicas-negative", DEP, OUT_OF_RANGE, f"{AUTOSCALING}.minReplicas", scaling(minReplicas=-1)),
    Bad("dep/max-replicas-0", DEP, OUT_OF_RANGE, f"{AUTOSCALING}.maxReplicas", scaling(minReplicas=1, maxReplicas=0)),
    Bad("dep/max-replicas-101", DEP, OUT_OF_RANGE, f"{AUTOSCALING}.maxReplicas", scaling(maxReplicas=101)),
    Bad(
        "dep/inactive-timeout-negative",
        DEP,
        OUT_OF_RANGE,
        "spec.inactiveTimeoutMinutes",
        {"inactiveTimeoutMinutes": -1},
    ),
    Bad(
        "dep/inactive-timeout-100001",
        DEP,
        OUT_OF_RANGE,
        "spec.inactiveTimeoutMinutes",
        {"inactiveTimeoutMinutes": 100001},
    ),
    Bad(
        "dep/min-over-max",
        DEP,
        CEL_RULE,
        AUTOSCALING,
        scaling(minReplicas=3, maxReplicas=2),
        says="minReplicas must not exceed maxReplicas",
    ),
    Bad("dep/state-running", DEP, BAD_VALUE, "spec.state", {"state": "Running"}),
    Bad("dep/state-upper-case", DEP, BAD_VALUE, "spec.state", {"state": "STARTED"}),
    Bad("dep/replace-policy-always", DEP, BAD_VALUE, "spec.replacePolicy", {"replacePolicy": "Always"}),
    Bad("dep/model-empty", DEP, BAD_VALUE, "spec.model", {"model": ""}),
    Bad("dep/hardware-empty", DEP, BAD_VALUE, "spec.hardware", {"hardware": ""}),
    Bad("dep/model-257", DEP, TOO_LONG, "spec.model", {"model": long(257)}),
    Bad("dep/hardware-129", DEP, TOO_LONG, "spec.hardware", {"hardware": long(129)}),
    Bad("dep/display-name-257", DEP, TOO_LONG, "spec.displayName", {"displayName": long(257)}),
    Bad("dep/availability-zone-65", DEP, TOO_LONG, "spec.availabilityZone", {"availabilityZone": long(65)}),
    Bad("dep/model-patched", DEP, IMMUTABLE, "spec", edit={"model": "deepseek-ai/DeepSeek-R1"}, says=DEP_IMMUTABLE),
    Bad(
        "dep/hardware-replaced",
        DEP,
        IMMUTABLE,
        "spec",
        edit={"hardware": "2x_nvidia_h100_80gb_sxm"},
        replace=True,
        says=DEP_IMMUTABLE,
    ),
    Bad(
        "dep/availability-zone-added",
        DEP,
        IMMUTABLE,
        "spec",
        edit={"availabilityZone": "us-east-1a"},
        says=DEP_IMMUTABLE,
    ),
    Bad(
        "dep/speculative-removed",
        DEP,
        IMMUTABLE,
        "spec",
        {"disableSpeculativeDecoding": True},
        edit={"disableSpeculativeDecoding": None},
        says=DEP_IMMUTABLE,
    ),
    Bad(
        "dep/speculative-flipped",
        DEP,
        IMMUTABLE,
        "spec",
        {"disableSpeculativeDecoding": True},
        edit={"disableSpeculativeDecoding": False},
        replace=True,
        says=DEP_IMMUTABLE,
    ),
    Bad("dep/unknown-spec-field", DEP, UNKNOWN, "spec.replicas", {"replicas": 2}),
    Bad(
        "dep/unknown-autoscaling-field", DEP, UNKNOWN, f"{AUTOSCALING}.targetUtilization", scaling(targetUtilization=80)
    ),
    Bad(
        "dep/secret-in-other-namespace",
        DEP,
        CROSS_NAMESPACE,
        "spec.credentialsSecretRef.namespace",
        {"credentialsSecretRef": {"namespace": "together"}},
    ),
]

NEVER_DELETES = "deletionPolicy: Delete contradicts managementPolicy ObserveOnly or NoDelete"
ONE_TARGET_OBJECT = "set exactly one of configMap and secret"
KEY_NEEDS_SECRET = "includeApiKeyAs needs secret"
NO_RECREATE = "replacePolicy: Recreate deletes the upstream object to replace it"
DETAILS = "spec.writeConnectionDetailsTo"


def management_cases(kind: str) -> list[Bad]:
    """The fields every kind shares: management policy and connection details."""
    short = {GWE: "gwe", PROVIDER: "provider", MODEL: "model", DEP: "dep"}[kind]
    cases = [
        Bad(
            f"{short}/management-policy-unknown",
            kind,
            BAD_VALUE,
            "spec.managementPolicy",
            {"managementPolicy": "Manage"},
        ),
        Bad(
            f"{short}/observe-only-but-delete",
            kind,
            CEL_RULE,
            "spec.deletionPolicy",
            {"managementPolicy": "ObserveOnly", "deletionPolicy": "Delete"},
            says=NEVER_DELETES,
        ),
        Bad(
            f"{short}/no-delete-but-delete",
            kind,
            CEL_RULE,
            "spec.deletionPolicy",
            {"managementPolicy": "NoDelete", "deletionPolicy": "Delete"},
            says=NEVER_DELETES,
        ),
        Bad(
            f"{short}/no-delete-then-delete",
            kind,
            IMMUTABLE,
            "spec.deletionPolicy",
            {"managementPolicy": "NoDelete"},
            edit={"deletionPolicy": "Delete"},
            says=NEVER_DELETES,
        ),
        Bad(
            f"{short}/connection-details-both",
            kind,
            CEL_RULE,
            DETAILS,
            {"writeConnectionDetailsTo": {"configMap": "a", "secret": "b"}},
            says=ONE_TARGET_OBJECT,
        ),
        Bad(
            f"{short}/connection-details-empty",
            kind,
            CEL_RULE,
            DETAILS,
            {"writeConnectionDetailsTo": {}},
            says=ONE_TARGET_OBJECT,
        ),
        Bad(
            f"{short}/api-key-in-a-configmap",
            kind,
            CEL_RULE,
            f"{DETAILS}.includeApiKeyAs",
            {"writeConnectionDetailsTo": {"configMap": "conn", "includeApiKeyAs": "API_KEY"}},
            says=KEY_NEEDS_SECRET,
        ),
        Bad(
            f"{short}/connection-details-bad-name",
            kind,
            BAD_VALUE,
            f"{DETAILS}.secret",
            {"writeConnectionDetailsTo": {"secret": "Conn_Details"}},
        ),
        Bad(
            f"{short}/connection-details-bad-key",
            kind,
            BAD_VALUE,
            f"{DETAILS}.includeApiKeyAs",
            {"writeConnectionDetailsTo": {"secret": "conn", "includeApiKeyAs": "API KEY"}},
        ),
        Bad(
            f"{short}/connection-details-a-string",
            kind,
            WRONG_TYPE,
            DETAILS,
            {"writeConnectionDetailsTo": "conn"},
        ),
        Bad(
            f"{short}/connection-details-in-other-namespace",
            kind,
            CROSS_NAMESPACE,
            f"{DETAILS}.namespace",
            {"writeConnectionDetailsTo": {"secret": "conn", "namespace": "apps"}},
        ),
    ]
    if kind in (MODEL, DEP):
        cases.append(
            Bad(
                f"{short}/observe-only-but-recreate",
                kind,
                CEL_RULE,
                "spec.replacePolicy",
                {"managementPolicy": "ObserveOnly", "replacePolicy": "Recreate"},
                says=NO_RECREATE,
            )
        )
    return cases


CASES += [case for kind in PLURALS for case in management_cases(kind)]


@dataclass
class Tally:
    total: int = 0
    refused: Counter[int] = field(default_factory=Counter)  # by HTTP status
    upstream: int = 0

    def record(self) -> None:
        record_summary(
            "bad inputs",
            f"refused {sum(self.refused.values())}/{self.total} at kubectl-apply time "
            f"({self.refused[400]} with 400 while decoding, {self.refused[422]} with 422 by validation), "
            f"{self.upstream}/{len(REFUSED)} upstream refusals reported after exactly 1 refused call "
            "(no other upstream write) for the generation",
        )


TALLY = Tally()


def manifest(case: Bad) -> dict[str, Any]:
    body: dict[str, Any] = {"apiVersion": "aigw.dev/v1alpha1", "kind": case.kind, "metadata": {"name": NAME}}
    if not case.without_spec:
        body["spec"] = merge_patch(VALID[case.kind], case.spec)
    return body


async def submit(kube: Kube, case: Bad) -> httpx.Response:
    """Send the bad request, as ``kubectl create``, ``kubectl patch --type merge`` or ``kubectl replace`` would."""
    plural = PLURALS[case.kind]
    collection, item = cr_path(plural, kube.namespace), cr_path(plural, kube.namespace, NAME)
    if case.edit is None:
        return await kube.http.post(collection, json=manifest(case), params=STRICT)
    created = await kube.http.post(collection, json=manifest(case), params=STRICT)
    assert created.status_code == 201, f"the valid object to edit was refused: {created.text}"
    if not case.replace:
        return await kube.http.patch(item, json={"spec": case.edit}, headers=MERGE_PATCH, params=STRICT)
    stored = created.json()  # carries metadata.resourceVersion, which a real API server requires on PUT
    stored["spec"] = merge_patch(stored["spec"], case.edit)
    return await kube.http.put(item, json=stored, params=STRICT)


def test_the_catalogue() -> None:
    assert len(CASES) >= 60
    assert len({c.id for c in CASES}) == len(CASES), "case ids are unique"
    per_kind = Counter(c.kind for c in CASES)
    assert all(per_kind[kind] >= 15 for kind in PLURALS), per_kind
    for case in CASES:
        assert case.path == "spec" or case.path.startswith("spec."), case.id
        assert (case.edit is None) != (case.category == IMMUTABLE), case.id
        assert not case.replace or case.edit is not None, case.id
    assert {c.status for c in CASES} == {400, 422}, "both kinds of refusal are covered"


@pytest.mark.parametrize("kind", sorted(PLURALS))
async def test_the_valid_specs_the_cases_start_from_are_admitted(kind: str, kube_env: KubeEnv) -> None:
    # Each case changes one thing in these: the refusal must be that change's doing.
    response = await kube_env.kube.http.post(
        cr_path(PLURALS[kind], kube_env.kube.namespace),
        json={"apiVersion": "aigw.dev/v1alpha1", "kind": kind, "metadata": {"name": NAME}, "spec": VALID[kind]},
        params=STRICT,
    )
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_bad_input_is_refused_naming_the_field(case: Bad, kube_env: KubeEnv) -> None:
    TALLY.total += 1
    TALLY.record()
    response = await submit(kube_env.kube, case)
    status = case.status
    assert response.status_code == status, f"expected {status}, got {response.status_code}: {response.text}"
    body = response.json()
    message = str(body.get("message", ""))
    assert body["reason"] == ("Invalid" if status == 422 else "BadRequest"), body
    assert case.needle in message, f"{case.needle!r} not in {message!r}"
    assert case.says in message, f"{case.says!r} not in {message!r}"
    if status == 422:
        causes = [c.get("field") for c in body["details"]["causes"]]
        assert case.path in causes, causes
    # Nothing was stored: no object for a refused create, the first generation for a refused edit.
    stored = await kube_env.kube.get(PLURALS[case.kind], NAME)
    if case.edit is None:
        assert stored is None, stored
    else:
        assert stored is not None and stored["metadata"]["generation"] == 1, stored
    TALLY.refused[status] += 1
    TALLY.record()


# ==================================================================== upstream refusals


@dataclass(frozen=True)
class Call:
    """An upstream request, as the simulators record it; ``route`` None matches any route."""

    method: str
    route: str | None
    status: int

    @property
    def is_write(self) -> bool:
        return self.method not in ("GET", "HEAD", "OPTIONS")

    def matches(self, request: RequestRecord) -> bool:
        return request.method == self.method and self.route in (None, request.route) and request.status == self.status


@dataclass(frozen=True)
class Refused:
    """A spec the schema admits and the upstream refuses.

    ``spec`` is a merge patch on ``VALID[kind]``. With ``ready_first`` a valid object is created
    from that patch first and must become Ready; ``spec`` is then applied as a merge patch (a new
    generation). The refused generation makes exactly one refused call, ``refused``, and no
    write but that one (none at all when the refusal came on a read).
    """

    id: str
    kind: str
    spec: dict[str, Any]
    says: str  # the upstream's message
    refused: Call
    ready_first: dict[str, Any] | None = None
    # Baseten: the model ids the workspace has (None: any id exists).
    baseten_models: tuple[str, ...] | None = None
    # Baseten: slugs held by endpoints of other workspaces (invisible to us, but taken).
    baseten_foreign_slugs: tuple[str, ...] = ()
    # Model registry: names already taken in the tenant, by models no resource manages.
    registry_names: tuple[str, ...] = ()


BASETEN_CREATE = Call("POST", "/v1/gateway/endpoints", 400)
NGROK_CREATE = Call("POST", "/providers", 400)

REFUSED: list[Refused] = [
    Refused(
        "gwe/secret-id-not-in-baseten",
        GWE,
        {"slug": "my-org/claude", **anthropic(secretId="no-such-secret")},
        "Secret 'no-such-secret' not found.",
        BASETEN_CREATE,
    ),
    Refused(
        "gwe/slug-prefix-of-another-org",
        GWE,
        {"slug": "not-our-org/glm"},
        "Your organization does not own the slug prefix 'not-our-org'.",
        BASETEN_CREATE,
    ),
    Refused(
        "gwe/slug-taken-by-another-workspace",
        GWE,
        {},
        "An endpoint with slug 'my-org/glm' already exists.",
        BASETEN_CREATE,
        baseten_foreign_slugs=("my-org/glm",),
    ),
    Refused(
        "gwe/model-id-not-in-workspace",
        GWE,
        {"targets": [{"provider": "BASETEN", "modelId": "nosuch1"}]},
        "Model 'nosuch1' not found in your workspace.",
        BASETEN_CREATE,
        baseten_models=("3kZ9xqd",),
    ),
    Refused(
        "provider/reserved-provider-id",
        PROVIDER,
        {"providerId": "openai"},
        'The provider_id "openai" is reserved by a built-in ngrok provider',
        NGROK_CREATE,
    ),
    Refused(
        "provider/api-format-ngrok-does-not-know",
        PROVIDER,
        {"supportedApiSurfaces": [{"format": "gemini"}]},
        "Unknown API format 'gemini'",
        NGROK_CREATE,
    ),
    Refused(
        "provider/api-surface-ngrok-does-not-know",
        PROVIDER,
        surface(surface="embeddings"),
        "Unknown API surface 'embeddings'",
        NGROK_CREATE,
    ),
    Refused(
        "model/rename-onto-a-taken-name",
        MODEL,
        {"name": "taken"},
        "Model 'taken' already exists for this tenant",
        Call("PATCH", "/api/v1/models/{name}", 409),
        ready_first={"name": "assistant"},
        registry_names=("taken",),
    ),
    Refused(
        "model/tenant-the-registry-does-not-have",
        MODEL,
        {"tenant": "nope"},
        "Tenant 'nope' not found",
        Call("GET", "/api/v1/models/", 404),
    ),
    Refused(
        # Together's hardware list says no before any POST: nothing is created, nothing retried.
        "dedicated/hardware-not-offered-for-the-model",
        DEP,
        {"hardware": "8x_nvidia_b300"},
        "hardware 8x_nvidia_b300 is not offered for",
        Call("GET", "/v1/hardware", 200),
    ),
    Refused(
        # The registry fixture is multi-tenant: a spec without a tenant is refused on the first read.
        "model/no-tenant-on-a-multi-tenant-registry",
        MODEL,
        {"tenant": None},
        "X-Tenant-Name header is required",
        Call("GET", None, 400),
    ),
]


async def take_registry_names(registry: ModelRegistrySimulator, tenant: str, names: tuple[str, ...]) -> None:
    async with httpx.AsyncClient(base_url=registry.url) as http:
        for name in names:
            response = await http.post(
                "/api/v1/models/",
                headers={"Authorization": f"Bearer {REGISTRY_KEY}", "X-Tenant-Name": tenant},
                json={"name": name, "dtype": "openai", "configuration": {"api_key": "sk-someone-elses"}},
            )
            assert response.status_code == 201, response.text


@pytest.mark.parametrize("case", REFUSED, ids=[c.id for c in REFUSED])
async def test_upstream_refusal_is_reported_after_one_call(
    case: Refused,
    kube_env: KubeEnv,
    baseten: BasetenSimulator,
    ngrok: NgrokSimulator,
    registry: ModelRegistrySimulator,
    together: TogetherSimulator,
    operator: OperatorRunner,
    credentials: str,
) -> None:
    sim = {GWE: baseten, PROVIDER: ngrok, MODEL: registry, DEP: together}[case.kind]
    plural, kube = PLURALS[case.kind], kube_env.kube
    if case.baseten_models is not None:
        baseten.known_model_ids = set(case.baseten_models)
    for slug in case.baseten_foreign_slugs:
        baseten.add_foreign_endpoint(slug)
    await take_registry_names(registry, VALID[MODEL]["tenant"], case.registry_names)

    if case.ready_first is None:
        generation = 1
        sim.reset_counts()
        response = await kube.create(case.kind, plural, NAME, merge_patch(VALID[case.kind], case.spec))
        assert response.status_code == 201, f"the schema should admit this spec: {response.text}"
    else:
        generation = 2
        response = await kube.create(case.kind, plural, NAME, merge_patch(VALID[case.kind], case.ready_first))
        assert response.status_code == 201, response.text
        await kube.wait_condition(plural, NAME, "Ready", "True")
        sim.reset_counts()
        response = await kube.patch_spec(plural, NAME, case.spec)
        assert response.status_code == 200, f"the schema should admit this spec: {response.text}"

    obj = await kube.wait_condition(plural, NAME, "Ready", "False", reason="InvalidSpec")
    ready = condition(obj, "Ready")
    assert ready is not None and case.says in ready["message"], ready
    assert obj["status"]["observedGeneration"] == generation
    # No retry storm: the refused spec is not tried again until it changes.
    await asyncio.sleep(1.5)
    calls = [(r.method, r.route, r.status) for r in sim.requests]
    assert sum(1 for r in sim.requests if case.refused.matches(r)) == 1, calls
    writes = [(w.method, w.route, w.status) for w in sim.writes()]
    expected = [(case.refused.method, case.refused.route, case.refused.status)] if case.refused.is_write else []
    assert writes == expected, calls
    warnings = [e for e in await kube.events(NAME) if e["type"] == "Warning"]
    assert [e["reason"] for e in warnings] == ["InvalidSpec"], warnings
    assert case.says in warnings[0]["message"], warnings[0]
    TALLY.upstream += 1
    TALLY.record()
