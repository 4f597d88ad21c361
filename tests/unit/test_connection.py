"""engine/connection.py against an in-memory Kubernetes: what it writes, what it refuses to touch,
and what a failing API server leaves in the report (the operator tests cover the rest end to end)."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from aigw_operator.base.settings import Settings
from aigw_operator.engine.connection import CONFLICT_REASON, FAILED_REASON, ConnectionDetails, Target
from aigw_operator.engine.context import Context
from aigw_operator.engine.reporting import Report, Reporter
from aigw_operator.kinds.gateway_endpoint import GatewayEndpointAdapter, GatewayEndpointSpec
from aigw_operator.kube.client import KubeError, ObjectRef
from aigw_operator.kube.credentials import Credentials
from aigw_operator.upstreams import baseten
from tests.unit.test_kinds_pure import gw_desired, gw_observed

KEY = "bt-test-key-4d1c9a"


class FakeKube:
    """ConfigMaps and Secrets by (plural, name); every write recorded; ``fail`` makes writes fail."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.writes: list[tuple[str, str, str]] = []
        self.fail = False
        self._uid = 0

    async def get_core(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects.get((plural, name))

    async def create_core(self, plural: str, namespace: str, body: Mapping[str, Any]) -> dict[str, Any] | None:
        self.writes.append(("create", plural, body["metadata"]["name"]))
        if self.fail:
            raise KubeError(f"POST /api/v1/namespaces/{namespace}/{plural}: 403 Forbidden")
        self._uid += 1
        obj = {**body, "metadata": {**body["metadata"], "uid": f"cm-{self._uid}", "resourceVersion": "1"}}
        self.objects[(plural, body["metadata"]["name"])] = obj
        return obj

    async def replace_core(
        self, plural: str, namespace: str, name: str, body: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        self.writes.append(("update", plural, name))
        old = self.objects[(plural, name)]
        self.objects[(plural, name)] = {**body, "metadata": {**body["metadata"], "uid": old["metadata"]["uid"]}}
        return self.objects[(plural, name)]

    async def delete_core(self, plural: str, namespace: str, name: str, *, uid: str) -> None:
        self.writes.append(("delete", plural, name))
        if self.objects.get((plural, name), {}).get("metadata", {}).get("uid") == uid:
            del self.objects[(plural, name)]


def _details(kube: FakeKube) -> ConnectionDetails[Any, Any, Any]:
    settings = Settings(kube_api_url="http://127.0.0.1:9")
    adapter = GatewayEndpointAdapter(client=None, inference_url="https://inference.example/v1")  # type: ignore[arg-type]
    reporter = Reporter("GatewayEndpoint", kube, settings)  # type: ignore[arg-type]
    credentials = Credentials(kube, {}, ttl=0, scopes={})  # type: ignore[arg-type]
    return ConnectionDetails(Context(adapter, kube, credentials, settings, reporter))  # type: ignore[arg-type]


def _resource(target: dict[str, Any] | None, status: dict[str, Any] | None = None) -> Any:
    from aigw_operator.engine.resource import Resource

    spec: dict[str, Any] = {"slug": "my-org/a", "targets": [{"provider": "BASETEN", "modelId": "m1"}]}
    if target is not None:
        spec["writeConnectionDetailsTo"] = target
    return Resource(
        ref=ObjectRef("GatewayEndpoint", "gatewayendpoints", "ns", "glm", uid="u1"),
        generation=1,
        spec=spec,
        status={"observedGeneration": 1, **(status or {})},
        annotations={},
    )


async def _write(details: ConnectionDetails[Any, Any, Any], resource: Any, observed: baseten.Endpoint) -> Report:
    report = Report(resource)
    spec = GatewayEndpointSpec.model_validate(resource.spec)
    await details.write(KEY, resource, spec, gw_desired(), observed, report)
    return report


async def test_written_once_then_left_alone_while_the_digest_holds() -> None:
    kube = FakeKube()
    details = _details(kube)
    report = await _write(details, _resource({"configMap": "glm-connection"}), gw_observed())
    entry = report.extra_status["connectionDetails"]
    assert kube.writes == [("create", "configmaps", "glm-connection")]
    assert kube.objects[("configmaps", "glm-connection")]["data"]["MODEL"] == "my-org/a"
    assert entry["configMap"] == "glm-connection" and len(entry["digest"]) == 32
    # The same data recorded: nothing is read or written.
    again = await _write(
        details, _resource({"configMap": "glm-connection"}, {"connectionDetails": entry}), gw_observed()
    )
    assert kube.writes == [("create", "configmaps", "glm-connection")]
    assert again.extra_status["connectionDetails"] == entry and again.failure is None


async def test_a_foreign_object_is_left_alone_and_reported() -> None:
    kube = FakeKube()
    kube.objects[("secrets", "taken")] = {"metadata": {"name": "taken", "uid": "x"}, "data": {}}
    report = await _write(_details(kube), _resource({"secret": "taken"}), gw_observed())
    assert kube.writes == []
    assert report.failure is not None and report.failure[0] == CONFLICT_REASON
    assert report.extra_status["connectionDetails"] == {"secret": "taken", "digest": ""}
    assert [e[:2] for e in report.events] == [("Warning", CONFLICT_REASON)]


async def test_a_failing_api_server_is_reported_and_retried_later() -> None:
    kube = FakeKube()
    kube.fail = True
    report = await _write(_details(kube), _resource({"configMap": "glm-connection"}), gw_observed())
    assert report.failure is not None and report.failure[0] == FAILED_REASON
    assert "403 Forbidden" in report.failure[1]
    # Ready stays what the upstream says; the empty digest makes the next resync try again.
    assert all(c.type != "Ready" for c in report.conditions)
    assert report.extra_status["connectionDetails"] == {"configMap": "glm-connection", "digest": ""}


async def test_the_key_only_in_a_secret_that_asks_for_it_and_the_old_kind_removed_from_status() -> None:
    kube = FakeKube()
    details = _details(kube)
    first = await _write(details, _resource({"configMap": "c"}), gw_observed())
    recorded = first.extra_status["connectionDetails"]
    target = {"secret": "s", "includeApiKeyAs": "API_KEY"}
    report = await _write(details, _resource(target, {"connectionDetails": recorded}), gw_observed())
    secret = kube.objects[("secrets", "s")]
    assert base64.b64decode(secret["data"]["API_KEY"]).decode() == KEY
    # The old ConfigMap went; the merge-patched status loses its configMap field.
    assert ("configmaps", "c") not in kube.objects
    assert report.extra_status["connectionDetails"]["configMap"] is None
    assert KEY not in str(report.extra_status)


def test_targets_of_spec_and_status() -> None:
    assert Target.of_status({"secret": "s", "digest": "d"}) == Target("secrets", "s")
    assert Target.of_status(None) is None
    assert Target("configmaps", "c").entry("d", {"secret": "s"}) == {"configMap": "c", "digest": "d", "secret": None}
