"""Operator configuration, read from the environment (``AIGW_*``, nested with ``__``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class UpstreamSettings(BaseModel):
    """How the operator talks to one upstream API."""

    base_url: str
    inference_url: str | None = Field(
        default=None,
        description="The base URL clients call for inference, written to the connection details as "
        "BASE_URL (spec.writeConnectionDetailsTo). Unset: base_url.",
    )
    api_key: SecretStr | None = Field(
        default=None,
        description="Default API key, used by resources without spec.credentialsSecretRef.",
    )
    api_key_file: Path | None = Field(
        default=None,
        description="A file holding the default API key, read again (cached like a Secret) so that a "
        "rotated key is used without a restart: a mounted Secret, which the kubelet updates in place. "
        "Wins over api_key.",
    )
    timeout: float = Field(default=10.0, gt=0, description="Seconds per HTTP attempt.")
    max_retries: int = Field(default=3, ge=0)
    backoff_base: float = Field(default=0.5, gt=0)
    backoff_cap: float = Field(default=10.0, gt=0)
    max_inline_retry_after: float = Field(
        default=10.0,
        ge=0,
        description="429 waits up to this long are slept inline; longer ones requeue the resource.",
    )
    rate_limit_per_second: float | None = Field(
        default=None, gt=0, description="Client-side limit per credential; None disables it."
    )
    default_key_namespaces: list[str] | None = Field(
        default=None,
        description="Namespaces whose resources may spend api_key when they name no credentialsSecretRef: "
        'names, or ["*"] for every namespace. Unset: only the operator\'s own namespace (operator_namespace).',
    )

    @model_validator(mode="after")
    def _one_wildcard(self) -> UpstreamSettings:
        if self.default_key_namespaces and "*" in self.default_key_namespaces and len(self.default_key_namespaces) > 1:
            raise ValueError('default_key_namespaces is ["*"] (every namespace) or a list of names, not both')
        return self


class LeaderElectionSettings(BaseModel):
    """Only the holder of a Lease reconciles; the others wait to take over (controller-runtime's
    mechanism and defaults)."""

    enabled: bool = Field(default=False, description="Run only while holding the Lease (on in the chart).")
    lease_name: str = Field(default="aigw-operator", min_length=1, max_length=253)
    lease_namespace: str | None = Field(
        default=None, description="Namespace of the Lease. Unset: $POD_NAMESPACE (downward API), else default."
    )
    identity: str | None = Field(default=None, description="Unset: $POD_NAME (downward API), else host and pid.")
    lease_duration: float = Field(default=15.0, gt=0, description="How long a Lease not renewed stays valid.")
    renew_deadline: float = Field(default=10.0, gt=0, description="A leader that cannot renew for this long stops.")
    retry_period: float = Field(default=2.0, gt=0, description="Between attempts to acquire or renew.")

    @model_validator(mode="after")
    def _ordered(self) -> LeaderElectionSettings:
        # As client-go requires: the leader stops writing before anyone else may take over.
        if not self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError("leader election needs retry_period < renew_deadline < lease_duration")
        return self


# Client-side limits stay below the vendors' own: Baseten 100/s per key, ngrok about 120/min.
UPSTREAM_DEFAULTS: dict[str, dict[str, Any]] = {
    "baseten": {
        "base_url": "https://api.baseten.co",
        # The Frontier Gateway's OpenAI-compatible endpoint: what clients send the slug to.
        "inference_url": "https://inference.baseten.co/v1",
        "rate_limit_per_second": 50,
    },
    "model_registry": {"base_url": "http://127.0.0.1:8080/api/v1"},
    "together": {"base_url": "https://api.together.ai/v1", "rate_limit_per_second": 5},
    "ngrok": {"base_url": "https://api.ngrok.ai", "rate_limit_per_second": 1.5},
}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="AIGW_", env_nested_delimiter="__", extra="ignore", env_parse_none_str="null"
    )

    operator_namespace: str | None = Field(
        default_factory=lambda: os.environ.get("POD_NAMESPACE") or None,
        description="The namespace the operator runs in ($POD_NAMESPACE from the downward API): the one "
        "namespace allowed to use the default API keys unless an upstream's default_key_namespaces says more.",
    )
    kube_api_url: str | None = Field(
        default=None,
        description="Talk to this Kubernetes API URL without credentials (the local emulator). "
        "Unset: in-cluster service account or kubeconfig, as kopf finds them.",
    )
    namespaces: list[Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)]] = Field(
        default_factory=list,
        description="Watched namespaces, by exact name; empty = all. Named, the operator needs no "
        "cluster-scoped permission on objects (the chart then grants a Role per namespace; only /metrics' "
        "TokenReviews and SubjectAccessReviews are cluster-level).",
    )
    resync_interval: float = Field(default=300.0, gt=0, description="Seconds between drift checks.")
    resync_jitter: float = Field(default=0.1, ge=0, le=1, description="Fraction of random spread.")
    restart_spread: float = Field(
        default=30.0,
        ge=0,
        description="After a start, the first look at objects already converged is spread over this many "
        "seconds (at most the resync interval): a restart with thousands of them is verified within it "
        "without one burst of reconciles.",
    )
    full_observe_interval: float = Field(
        default=3600.0,
        gt=0,
        description="Where an upstream's list call lacks fields, GET each object at least this often.",
    )
    workers_per_kind: int = Field(
        default=32,
        ge=1,
        description="Reconciles of one kind that may run at once; the rest wait their turn in order.",
    )
    short_poll_interval: float = Field(default=5.0, gt=0, description="Polling while upstream moves.")
    create_settle_seconds: float = Field(
        default=120.0,
        ge=0,
        description="After a create whose answer was lost, on an upstream without idempotency keys "
        "(Together), how long the operator keeps looking for the object before it creates another.",
    )
    credentials_retry_interval: float = Field(default=10.0, gt=0)
    credentials_cache_ttl: float = Field(default=30.0, ge=0)
    error_backoff_base: float = Field(default=2.0, gt=0)
    error_backoff_cap: float = Field(default=300.0, gt=0)
    access_denied_retry_interval: float = Field(default=120.0, gt=0)
    terminal_retry_interval: float = Field(
        default=1800.0,
        gt=0,
        description="How long after the upstream refused a spec (InvalidSpec, RecreateRequired: something "
        "outside the spec may cure it) the operator asks again, jittered and doubling on each further "
        "refusal up to eight times this. A refusal of the spec's own shape is never retried by time.",
    )
    event_dedupe_seconds: float = Field(default=600.0, ge=0)
    liveness_stall_seconds: float = Field(
        default=900.0,
        gt=0,
        description="The liveness probe fails when an object that is due has waited for a worker, or one "
        "reconcile has run, this long. Objects that are simply not due never count.",
    )
    secret_label_selector: str = Field(
        default="aigw.dev/watch=true",
        description="Secrets matching this label selector are watched: a change reaches every resource "
        "referring to them within seconds. Other Secrets are read again at each resync. Empty: no watch "
        "(and no list/watch permission on Secrets needed).",
    )
    baseten_secret_prefix: str = Field(
        default="aigw",
        pattern=r"^[A-Za-z0-9.-]{1,32}$",
        description="First part of the Baseten secrets made from secretRefs: aigw_<namespace>_<secret>_<key>. "
        "Give each cluster its own when several share a Baseten workspace.",
    )
    leader_election: LeaderElectionSettings = Field(default_factory=LeaderElectionSettings)
    metrics_port: int | None = Field(
        default=9090, ge=0, le=65535, description="Serve Prometheus /metrics on this port; None disables it."
    )
    metrics_auth: Literal["kubernetes", "none"] = Field(
        default="kubernetes",
        description="Who may read /metrics. kubernetes: a bearer token the API server authenticates "
        "(TokenReview) whose user may get the non-resource URL /metrics (SubjectAccessReview), as "
        "controller-runtime serves metrics; 401/403 otherwise. none: anyone who reaches the port, "
        "for local runs only (in a cluster every pod could read them).",
    )
    metrics_auth_cache_ttl: float = Field(
        default=10.0, ge=0, description="Seconds a token's TokenReview and a user's SubjectAccessReview are reused."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"

    baseten: UpstreamSettings = Field(default_factory=lambda: UpstreamSettings(**UPSTREAM_DEFAULTS["baseten"]))
    model_registry: UpstreamSettings = Field(
        default_factory=lambda: UpstreamSettings(**UPSTREAM_DEFAULTS["model_registry"]),
        description="The one registry this installation manages Models in; resources cannot name a URL.",
    )
    together: UpstreamSettings = Field(default_factory=lambda: UpstreamSettings(**UPSTREAM_DEFAULTS["together"]))
    ngrok: UpstreamSettings = Field(default_factory=lambda: UpstreamSettings(**UPSTREAM_DEFAULTS["ngrok"]))

    def upstream(self, name: str) -> UpstreamSettings:
        """The settings of an upstream by its field name (the registry of kinds names it)."""
        value = getattr(self, name)
        if not isinstance(value, UpstreamSettings):
            raise KeyError(f"no upstream {name!r} in the settings")
        return value

    @model_validator(mode="before")
    @classmethod
    def _upstream_defaults(cls, data: Any) -> Any:
        # AIGW_NGROK__BASE_URL alone must not drop ngrok's default rate limit: fields given
        # for an upstream are laid over its defaults, not over UpstreamSettings' bare ones.
        if isinstance(data, dict):
            for name, defaults in UPSTREAM_DEFAULTS.items():
                given = data.get(name)
                if isinstance(given, dict):
                    data[name] = {**defaults, **given}
        return data
