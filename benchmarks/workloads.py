"""The workloads: the kinds the benchmark drives, their specs, a one-field change of each, and
the upstream routes and page sizes the figures are checked against.

``spec(i, tag)`` makes the i-th object's spec; ``tag`` keeps the upstream natural keys of the
operators sharing one simulator apart (ours "bench", the baseline's "base", the floor's "floor").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aigw_operator.upstreams import baseten as baseten_api
from aigw_operator.upstreams import ngrok as ngrok_api
from aigw_testbed.emulator.server import JSON

# One namespace per operator under test: ours, the naive baseline, the floor client (twice).
NAMESPACE = "bench"
BASELINE_NAMESPACE = "bench-baseline"
FLOOR_NAMESPACE = "bench-floor"
FLOOR_HTTPX_NAMESPACE = "bench-floor-httpx"
NAMESPACES = (NAMESPACE, BASELINE_NAMESPACE, FLOOR_NAMESPACE, FLOOR_HTTPX_NAMESPACE)
TAGS = {NAMESPACE: "bench", BASELINE_NAMESPACE: "base", FLOOR_NAMESPACE: "floor", FLOOR_HTTPX_NAMESPACE: "floorx"}

BASETEN_KEY = "bench-baseten-key"
NGROK_KEY = "bench-ngrok-key"
REGISTRY_KEY = "bench-registry-key"
TOGETHER_KEY = "bench-together-key"
OPENAI_SECRET = "openai-credentials"
UPSTREAM_SETTINGS = ("baseten", "ngrok", "model_registry", "together")


@dataclass(frozen=True)
class KindSpec:
    """One kind as the benchmark drives it: valid specs, a one-field change, upstream routes."""

    kind: str
    plural: str
    prefix: str  # object names: <prefix>-<i>
    upstream: str  # which simulator serves it
    list_route: str
    patch_route: str
    page_size: int | None  # None: the list call is not paged
    spec: Callable[[int, str], JSON]
    change: Callable[[int], JSON]  # a merge patch of the spec changing one field
    changed_fields: frozenset[str]  # what the upstream PATCH may carry for that change
    # Whether the naive baseline and the floor client know this kind's upstream API (see naive.py).
    compared: bool = False


KINDS: tuple[KindSpec, ...] = (
    KindSpec(
        kind="GatewayEndpoint",
        plural="gatewayendpoints",
        prefix="gwe",
        upstream="baseten",
        list_route=baseten_api.ENDPOINTS,
        patch_route=baseten_api.ENDPOINT,
        page_size=baseten_api.PAGE_SIZE,
        spec=lambda i, tag: {
            "slug": f"my-org/{tag}-{i}",
            "targets": [{"provider": "BASETEN", "modelId": "3kZ9xqd"}],
        },
        change=lambda i: {"targets": [{"provider": "BASETEN", "modelId": "7pQ4wrt"}]},
        changed_fields=frozenset({"targets"}),
        compared=True,
    ),
    KindSpec(
        kind="Provider",
        plural="providers",
        prefix="prov",
        upstream="ngrok",
        list_route=ngrok_api.PROVIDERS,
        patch_route=ngrok_api.PROVIDER,
        page_size=ngrok_api.PAGE_SIZE,
        spec=lambda i, tag: {
            "providerId": f"{tag}-{i}",
            "name": f"Bench {i}",
            "baseUrl": "http://vllm.internal",
            "models": ["llama-3-8b"],
        },
        change=lambda i: {"name": f"Bench {i} v2"},
        changed_fields=frozenset({"name"}),
        compared=True,
    ),
    KindSpec(
        kind="Model",
        plural="models",
        prefix="model",
        upstream="registry",
        list_route="/api/v1/models/",
        patch_route="/api/v1/models/{name}",
        page_size=None,
        spec=lambda i, tag: {
            "dtype": "openai",
            "configuration": {"model": "gpt-4o", "apiKeySecretRef": {"name": OPENAI_SECRET}},
            "summary": "benchmark model",
            "tags": ["bench"],
        },
        change=lambda i: {"summary": "benchmark model v2"},
        changed_fields=frozenset({"summary"}),
    ),
    KindSpec(
        kind="DedicatedEndpoint",
        plural="dedicatedendpoints",
        prefix="dep",
        upstream="together",
        list_route="/v1/endpoints",
        patch_route="/v1/endpoints/{id}",
        page_size=None,
        spec=lambda i, tag: {
            "model": "meta-llama/Llama-3-8b-chat-hf",
            "hardware": "1x_nvidia_h100_80gb_sxm",
            "autoscaling": {"minReplicas": 1, "maxReplicas": 2},
        },
        change=lambda i: {"autoscaling": {"minReplicas": 1, "maxReplicas": 3}},
        changed_fields=frozenset({"autoscaling"}),
    ),
)
KINDS_BY_NAME = {k.kind.lower(): k for k in KINDS}


def lists_per_interval(kind: KindSpec, n: int) -> int:
    """ceil(N / page size): the list calls one listing of N objects takes (1 where not paged)."""
    return -(-n // kind.page_size) if kind.page_size else 1
