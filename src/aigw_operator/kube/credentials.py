"""API keys from Kubernetes Secrets: cached briefly, rotation-aware, never logged."""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from pydantic import SecretStr

from aigw_operator.base.api import SecretKeyRef
from aigw_operator.base.redaction import register_secret


class SecretReader(Protocol):
    async def get_secret(self, namespace: str, name: str) -> Mapping[str, Any] | None: ...


class CredentialsMissing(Exception):
    """The Secret, or the key in it, is not there (yet)."""

    reason = "CredentialsMissing"


class CredentialsNotPermitted(CredentialsMissing):
    """The resource names no key of its own, and its namespace may not spend the operator's."""

    reason = "CredentialsNotPermitted"


class SecretValue(NamedTuple):
    value: str
    # The Secret's resourceVersion: tells a rotated value from the one last sent upstream.
    version: str


# What an adapter's prepare() gets to read the Secrets its spec refers to.
ReadSecret = Callable[[SecretKeyRef], Awaitable[SecretValue]]


class Credentials:
    """Resolves the API key a resource should use for its upstream.

    A resource's own ``credentialsSecretRef`` wins; otherwise the operator's default key
    for that upstream, if the resource's namespace may spend it (``scopes``, per upstream): from
    its file when one is configured (a mounted Secret, which the kubelet rewrites when the Secret
    changes), else the value it started with. Values are cached for ``ttl`` seconds so that a
    resync of many resources does not read the same Secret (or file) many times, and so that a
    rotated key is picked up within ``ttl`` without a restart. ``invalidate`` drops a cached value
    at once (after the upstream refused it).
    """

    def __init__(
        self,
        reader: SecretReader,
        defaults: Mapping[str, SecretStr | None],
        ttl: float,
        default_files: Mapping[str, Path | None] | None = None,
        *,
        scopes: Mapping[str, KeyScope],
    ) -> None:
        self._reader = reader
        self._defaults = dict(defaults)
        self._files = {upstream: path for upstream, path in (default_files or {}).items() if path is not None}
        self._scopes = dict(scopes)
        self._ttl = ttl
        self._cache: dict[tuple[str, str, str], tuple[float, SecretValue]] = {}
        self._file_cache: dict[str, tuple[float, str]] = {}

    async def api_key(self, upstream: str, namespace: str, ref: SecretKeyRef | None) -> str:
        if ref is not None:
            return (await self.secret(namespace, ref)).value
        default = self._defaults.get(upstream)
        if upstream not in self._files and (default is None or not default.get_secret_value()):
            raise CredentialsMissing(
                f"no spec.credentialsSecretRef and no default {upstream} API key is configured in the operator"
            )
        # Whichever way the default key arrives (a file or a value), who may spend it is the same.
        scope = self._scopes.get(upstream)
        if scope is None or not scope.allows(namespace):
            setting = scope.setting.upper() if scope else upstream.upper()
            raise CredentialsNotPermitted(
                f"namespace {namespace} may not use the operator's default {upstream} API key: set "
                f"spec.credentialsSecretRef to a Secret in {namespace}, or have the platform team add "
                f"{namespace} to AIGW_{setting}__DEFAULT_KEY_NAMESPACES (the chart's "
                "upstreams.<name>.apiKey.namespaces)"
            )
        if upstream in self._files:
            return self._default_from_file(upstream, self._files[upstream])
        assert default is not None
        value = default.get_secret_value()
        register_secret(value)
        return value

    async def secret(self, namespace: str, ref: SecretKeyRef) -> SecretValue:
        """Any Secret value a spec refers to (e.g. a key the upstream object must hold)."""
        cache_key = (namespace, ref.name, ref.key)
        cached = self._cache.get(cache_key)
        if cached and time.monotonic() - cached[0] < self._ttl:
            return cached[1]
        value = await self._read(namespace, ref)
        self._cache[cache_key] = (time.monotonic(), value)
        return value

    def invalidate(self, namespace: str, ref: SecretKeyRef | None) -> None:
        if ref is not None:
            self._cache.pop((namespace, ref.name, ref.key), None)
        else:
            # A default key was refused: its file may hold a newer one already.
            self._file_cache.clear()

    def _default_from_file(self, upstream: str, path: Path) -> str:
        cached = self._file_cache.get(upstream)
        if cached and time.monotonic() - cached[0] < self._ttl:
            return cached[1]
        try:
            value = path.read_text().strip()
        except FileNotFoundError:
            raise CredentialsMissing(f"the default {upstream} API key file {path} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise CredentialsMissing(
                f"the default {upstream} API key file {path} cannot be read: {type(exc).__name__}"
            ) from None
        if not value:
            raise CredentialsMissing(f"the default {upstream} API key file {path} is empty")
        register_secret(value)
        self._file_cache[upstream] = (time.monotonic(), value)
        return value

    def forget_secret(self, namespace: str, name: str) -> None:
        """The Secret changed: every key of it is read again on next use."""
        for cached in [k for k in self._cache if k[:2] == (namespace, name)]:
            del self._cache[cached]

    async def _read(self, namespace: str, ref: SecretKeyRef) -> SecretValue:
        secret = await self._reader.get_secret(namespace, ref.name)
        if secret is None:
            raise CredentialsMissing(f"Secret {namespace}/{ref.name} not found")
        encoded = (secret.get("data") or {}).get(ref.key)
        if not encoded:
            raise CredentialsMissing(f"Secret {namespace}/{ref.name} has no key {ref.key!r}")
        try:
            value = base64.b64decode(encoded, validate=True).decode().strip()
        except (binascii.Error, UnicodeDecodeError):
            raise CredentialsMissing(
                f"Secret {namespace}/{ref.name} key {ref.key!r} is not valid base64 text"
            ) from None
        if not value:
            raise CredentialsMissing(f"Secret {namespace}/{ref.name} key {ref.key!r} is empty")
        register_secret(value)
        return SecretValue(value, str((secret.get("metadata") or {}).get("resourceVersion") or ""))


class KeyScope(NamedTuple):
    """Who may spend one upstream's default key."""

    # The upstream's settings name: AIGW_<SETTING>__DEFAULT_KEY_NAMESPACES.
    setting: str
    # The namespaces allowed; None: every one.
    namespaces: frozenset[str] | None

    @classmethod
    def of(cls, setting: str, namespaces: list[str] | None, operator_namespace: str | None) -> KeyScope:
        """The listed namespaces, every one (``["*"]``), or, unset, only the operator's own (none
        at all when that is unknown: outside a pod, set AIGW_OPERATOR_NAMESPACE)."""
        if namespaces is None:
            return cls(setting, frozenset([operator_namespace] if operator_namespace else []))
        if namespaces == ["*"]:
            return cls(setting, None)
        return cls(setting, frozenset(namespaces))

    def allows(self, namespace: str) -> bool:
        return self.namespaces is None or namespace in self.namespaces
