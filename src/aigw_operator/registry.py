"""The one list of kinds: what the controller runs, the CRDs generated, and the settings read.

A fifth kind is one entry here (see docs/adding-a-kind.md for the rest).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aigw_operator.base.api import KindInfo
from aigw_operator.base.settings import Settings
from aigw_operator.engine.contract import Adapter
from aigw_operator.kinds import dedicated_endpoint, gateway_endpoint, model, provider
from aigw_operator.upstreams import baseten, model_registry, ngrok, together
from aigw_operator.upstreams.http import UpstreamClient


@dataclass(frozen=True)
class Kind:
    info: KindInfo
    # The upstream's client and its settings (the Settings field, AIGW_<FIELD>__*).
    upstream: str
    new_client: Callable[..., UpstreamClient]
    adapter: Callable[[UpstreamClient, Settings], Adapter[Any, Any, Any]]


KINDS: tuple[Kind, ...] = (
    Kind(
        gateway_endpoint.INFO,
        "baseten",
        baseten.new_client,
        lambda http, settings: gateway_endpoint.GatewayEndpointAdapter(
            baseten.BasetenClient(http),
            secret_prefix=settings.baseten_secret_prefix,
            inference_url=settings.baseten.inference_url or settings.baseten.base_url,
        ),
    ),
    Kind(
        provider.INFO,
        "ngrok",
        ngrok.new_client,
        lambda http, settings: provider.ProviderAdapter(ngrok.NgrokClient(http)),
    ),
    Kind(
        model.INFO,
        "model_registry",
        model_registry.new_client,
        lambda http, settings: model.ModelAdapter(model_registry.ModelRegistryClient(http)),
    ),
    Kind(
        dedicated_endpoint.INFO,
        "together",
        together.new_client,
        lambda http, settings: dedicated_endpoint.DedicatedEndpointAdapter(
            together.TogetherClient(http), inference_url=settings.together.inference_url or settings.together.base_url
        ),
    ),
)


def all_kinds() -> list[KindInfo]:
    return [kind.info for kind in KINDS]
