"""CustomResourceDefinitions generated from the kinds' pydantic models.

The models are the one source of truth: ``aigw-operator crds`` writes deploy/crds/, and a
test fails when the committed YAML differs from what the models generate.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from aigw_operator import GROUP, VERSION
from aigw_operator.base.api import MANAGEMENT_RULES, KindInfo

# JSON-schema keywords a structural Kubernetes schema has no use for.
_DROPPED = {"title", "examples", "discriminator", "$defs", "definitions", "additionalProperties"}
_FORMATS = {"date-time", "date", "int32", "int64", "byte", "uri", "email", "uuid", "hostname", "ipv4", "ipv6"}


def _inline(schema: Any, defs: dict[str, Any]) -> Any:
    """Resolve $refs and turn pydantic's JSON schema into a structural OpenAPI v3 schema."""
    if isinstance(schema, list):
        return [_inline(item, defs) for item in schema]
    if not isinstance(schema, dict):
        return schema
    schema = dict(schema)
    if "$ref" in schema:
        target = copy.deepcopy(defs[schema.pop("$ref").split("/")[-1]])
        # A field's own description and rules win over the referenced model's.
        extra_rules = schema.pop("x-kubernetes-validations", [])
        target.update(schema)
        if extra_rules:
            target["x-kubernetes-validations"] = target.get("x-kubernetes-validations", []) + extra_rules
        schema = target
    for key in ("anyOf", "oneOf"):
        if key in schema:
            options = [o for o in schema[key] if o.get("type") != "null"]
            if len(options) == 1:
                del schema[key]
                merged = dict(options[0])
                merged.update({k: v for k, v in schema.items() if k != "default" or v is not None})
                return _inline(merged, defs)
    if "allOf" in schema and len(schema["allOf"]) == 1:
        merged = dict(schema.pop("allOf")[0])
        merged.update(schema)
        return _inline(merged, defs)
    if "const" in schema:
        schema["enum"] = [schema.pop("const")]
    if schema.get("default", 0) is None:
        del schema["default"]
    if "format" in schema and schema["format"] not in _FORMATS:
        del schema["format"]
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _DROPPED:
            continue
        if key == "properties":
            out[key] = {name: _inline(prop, defs) for name, prop in value.items()}
        elif key == "items":
            out[key] = _inline(value, defs)
        else:
            out[key] = value
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    return out


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    schema: dict[str, Any] = _inline(raw, defs)
    return schema


def _printer_column(column: Any) -> dict[str, Any]:
    result = {"name": column.name, "type": column.type, "jsonPath": column.json_path}
    if column.description:
        result["description"] = column.description
    if column.priority:
        result["priority"] = column.priority
    return result


def crd_for(info: KindInfo) -> dict[str, Any]:
    spec_schema = model_schema(info.spec_model)
    # Every kind carries the management fields (see engine.contract.ManagedSpec).
    rules = [*spec_schema.get("x-kubernetes-validations", ()), *MANAGEMENT_RULES]
    spec_schema["x-kubernetes-validations"] = rules
    status_schema = model_schema(info.status_model)
    status_schema["description"] = f"Observed state of the {info.kind}, written by the operator."
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{info.plural}.{GROUP}",
            "labels": {"app.kubernetes.io/name": "aigw-operator", "app.kubernetes.io/part-of": "aigw-operator"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": info.kind,
                "listKind": f"{info.kind}List",
                "plural": info.plural,
                "singular": info.singular,
                "shortNames": list(info.short_names),
                "categories": list(info.categories),
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [_printer_column(c) for c in info.printer_columns],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": info.description,
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {
                                    "type": "string",
                                    "description": "APIVersion defines the versioned schema of this object.",
                                },
                                "kind": {
                                    "type": "string",
                                    "description": "Kind is the REST resource this object represents.",
                                },
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


def all_kinds() -> list[KindInfo]:
    from aigw_operator import registry

    return registry.all_kinds()


def all_crds() -> list[dict[str, Any]]:
    return [crd_for(info) for info in all_kinds()]


def render(crd: dict[str, Any]) -> str:
    return yaml.safe_dump(crd, sort_keys=False, width=120)


def render_all() -> str:
    return "---\n".join(render(crd) for crd in all_crds())


def write(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for crd in all_crds():
        path = directory / f"{crd['metadata']['name']}.yaml"
        path.write_text("# Generated by `aigw-operator crds`: edit the pydantic models, not this file.\n" + render(crd))
        written.append(path)
    return written
