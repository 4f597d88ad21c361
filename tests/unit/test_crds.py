"""The committed CRDs are what the models generate; examples pass and bad manifests are refused
by the generated schema and CEL rules, with a message naming the field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from aigw_operator import crds
from aigw_testbed.emulator.admission import Invalid, admit

REPO = Path(__file__).resolve().parents[2]
CRDS = {crd["spec"]["names"]["kind"]: crd for crd in crds.all_crds()}


def test_committed_crds_match_the_models() -> None:
    committed = {}
    for path in sorted((REPO / "deploy" / "crds").glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        committed[doc["metadata"]["name"]] = doc
    generated = {crd["metadata"]["name"]: crd for crd in crds.all_crds()}
    assert committed == generated, "deploy/crds is stale: run `aigw-operator crds --output-dir deploy/crds`"


def _walk(schema: dict[str, Any], path: str = "") -> list[str]:
    missing = []
    for name, prop in (schema.get("properties") or {}).items():
        where = f"{path}.{name}"
        if name not in ("apiVersion", "kind", "metadata") and not prop.get("description"):
            missing.append(where)
        missing += _walk(prop, where)
        if "items" in prop:
            missing += _walk(prop["items"], where + "[]")
    return missing


@pytest.mark.parametrize("kind", sorted(CRDS))
def test_every_field_is_described_for_kubectl_explain(kind: str) -> None:
    schema = CRDS[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert _walk(schema) == []


def examples() -> list[dict[str, Any]]:
    docs = []
    for path in sorted((REPO / "examples").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d and d["apiVersion"].startswith("aigw.dev/")]
    return docs


@pytest.mark.parametrize("manifest", examples(), ids=lambda m: f"{m['kind']}/{m['metadata']['name']}")
def test_examples_are_admitted(manifest: dict[str, Any]) -> None:
    admitted = admit(CRDS[manifest["kind"]], copy.deepcopy(manifest))
    # No default is stored for deletionPolicy: unset means Delete for an object the resource
    # created and Orphan for one it adopted, which only an unset value can tell apart.
    assert admitted["spec"].get("deletionPolicy") == manifest["spec"].get("deletionPolicy")
    assert admitted["spec"] == admit(CRDS[manifest["kind"]], copy.deepcopy(admitted))["spec"]


GOOD_GWE: dict[str, Any] = {
    "apiVersion": "aigw.dev/v1alpha1",
    "kind": "GatewayEndpoint",
    "metadata": {"name": "x", "namespace": "default"},
    "spec": {"slug": "my-org/x", "targets": [{"provider": "BASETEN", "modelId": "m1"}]},
}


def gwe(**spec: Any) -> dict[str, Any]:
    manifest = copy.deepcopy(GOOD_GWE)
    for key, value in spec.items():
        if value is None:
            manifest["spec"].pop(key, None)
        else:
            manifest["spec"][key] = value
    return manifest


BAD_GATEWAY_ENDPOINTS = {
    "no targets": (gwe(targets=[]), "spec.targets"),
    "two targets": (gwe(targets=[{"provider": "BASETEN", "modelId": "a"}] * 2), "spec.targets"),
    "missing targets": (gwe(targets=None), "spec.targets"),
    "missing slug": (gwe(slug=None), "spec.slug"),
    "slug without prefix": (gwe(slug="glm"), "spec.slug"),
    "slug not url-safe": (gwe(slug="my-org/a b"), "spec.slug"),
    "slug too long": (gwe(slug="my-org/" + "a" * 300), "spec.slug"),
    "unknown provider": (gwe(targets=[{"provider": "VERTEXX", "modelId": "a"}]), "spec.targets[0].provider"),
    "baseten without modelId": (gwe(targets=[{"provider": "BASETEN"}]), "spec.targets[0]"),
    "anthropic without secretId": (
        gwe(targets=[{"provider": "ANTHROPIC", "targetModel": "claude"}]),
        "spec.targets[0]",
    ),
    "openai without targetModel": (gwe(targets=[{"provider": "OPENAI", "secretId": "s"}]), "spec.targets[0]"),
    "openai with modelId": (
        gwe(targets=[{"provider": "OPENAI", "secretId": "s", "targetModel": "m", "modelId": "x"}]),
        "spec.targets[0]",
    ),
    "bad region": (gwe(region="US"), "spec.region"),
    "bad deletion policy": (gwe(deletionPolicy="Keep"), "spec.deletionPolicy"),
    "unknown field": (gwe(replicas=3), "spec.replicas"),
    "wrong type": (gwe(slug=5), "spec.slug"),
    "secret ref without name": (gwe(credentialsSecretRef={"key": "k"}), "spec.credentialsSecretRef.name"),
}


@pytest.mark.parametrize("case", sorted(BAD_GATEWAY_ENDPOINTS))
def test_bad_gateway_endpoints_are_refused_naming_the_field(case: str) -> None:
    manifest, field = BAD_GATEWAY_ENDPOINTS[case]
    with pytest.raises(Invalid) as refused:
        admit(CRDS["GatewayEndpoint"], manifest)
    fields = [cause.field for cause in refused.value.causes]
    assert any(f.startswith(field) for f in fields), (fields, str(refused.value))


def test_region_is_immutable() -> None:
    old = admit(CRDS["GatewayEndpoint"], gwe(region="EU"))
    new = gwe(region="UNRESTRICTED")
    with pytest.raises(Invalid) as refused:
        admit(CRDS["GatewayEndpoint"], new, old)
    assert "region is immutable" in str(refused.value)
    # Unrelated edits pass.
    admit(CRDS["GatewayEndpoint"], gwe(region="EU", slug="my-org/y"), old)


def test_the_application_examples_consume_connection_details_the_examples_write() -> None:
    """examples/apps/ (not applied by the demo): valid Kubernetes objects, and every envFrom names
    a ConfigMap or Secret that an example resource's writeConnectionDetailsTo writes."""
    import kubernetes_validate

    written = set()
    for resource in examples():
        target = resource["spec"].get("writeConnectionDetailsTo") or {}
        written |= {("configMapRef", target.get("configMap")), ("secretRef", target.get("secret"))}
    apps = [d for p in sorted((REPO / "examples" / "apps").glob("*.yaml")) for d in yaml.safe_load_all(p.read_text())]
    assert apps
    for app in apps:
        kubernetes_validate.validate(app, "1.30", strict=True)
        sources = [s for c in app["spec"]["template"]["spec"]["containers"] for s in c.get("envFrom") or []]
        assert sources, f"{app['metadata']['name']} consumes no connection details"
        for source in sources:
            [(ref, value)] = [(k, v) for k, v in source.items() if k in ("configMapRef", "secretRef")]
            assert (ref, value["name"]) in written, (ref, value)
