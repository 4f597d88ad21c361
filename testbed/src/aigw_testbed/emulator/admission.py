"""Admission checks of a Kubernetes API server for custom resources: defaulting,
structural-schema validation and CEL rules (``x-kubernetes-validations``).

Used by the Kubernetes API emulator (so that bad manifests are refused at apply
time, as a real API server would) and by the schema tests.

What is emulated, in the order the API server does it:

1. the version's ``openAPIV3Schema`` is chosen by the object's ``apiVersion``;
2. ``default`` values are applied to absent fields (and to ``null`` ones that are not
   ``nullable``), recursively, also inside defaults and on updates; the old object is
   defaulted too, since the API server defaults what it reads from etcd;
3. the object is validated against the structural schema; unknown fields are reported
   as causes (the emulator prunes them first, see :func:`prune_unknown_fields`, and applies
   ``fieldValidation`` itself, so that through it they are a 400, a warning or nothing);
4. the CEL rules are evaluated bottom-up, with ``self`` (and ``oldSelf`` for transition
   rules on updates) bound to the CEL value of the node, unless step 3 found a "blocking"
   error (required, type, enum, too long, too many), in which case the API server skips
   them and says so in one more cause.

Error messages follow the API server's ``field.Error`` bodies (``Required value``,
``Invalid value: ...``, ``Unsupported value: ...``, ``Too long: ...``, ``Duplicate value: ...``),
so that tests can assert on them as they would on a real cluster's response.

Formats checked (the subset of the API server's ``format`` registry our CRDs can meet):
``date-time``, ``date``, ``duration``, ``uri``, ``email``, ``hostname``, ``ipv4``, ``ipv6``,
``cidr``, ``uuid``, ``byte``. Any other format is accepted unchecked, as the API server does
for formats it does not know.
"""

from __future__ import annotations

import base64
import binascii
import copy
import datetime
import functools
import ipaddress
import json
import logging
import math
import re
import sys
import threading
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import celpy
import celpy.evaluation
import re2  # type: ignore[import-untyped]
from celpy import celtypes

Schema = dict[str, Any]


@dataclass(frozen=True)
class FieldError:
    """One refused field, as the API server reports it in ``details.causes``.

    ``message`` is the API server's error body, e.g. ``Required value`` or
    ``Invalid value: "object": <the CEL rule's message>``; ``field`` is empty for the
    object's root (the API server prints it as ``<nil>``).
    """

    field: str  # e.g. "spec.targets[0].modelId"
    message: str  # e.g. 'Required value' or the CEL rule's message
    reason: str = "FieldValueInvalid"


@dataclass
class Invalid(Exception):
    """The object is refused (HTTP 422, reason Invalid)."""

    kind: str
    name: str
    causes: list[FieldError] = field(default_factory=list)

    def __str__(self) -> str:
        details = "; ".join(f"{c.field or '<nil>'}: {c.message}" for c in self.causes)
        return f'{self.kind} "{self.name}" is invalid: {details}'


REQUIRED = "FieldValueRequired"
INVALID = "FieldValueInvalid"
NOT_SUPPORTED = "FieldValueNotSupported"
DUPLICATE = "FieldValueDuplicate"
TOO_LONG = "FieldValueTooLong"
TOO_MANY = "FieldValueTooMany"
TYPE_INVALID = "FieldValueTypeInvalid"
FORBIDDEN = "FieldValueForbidden"
# Not a field.ErrorType: the API server finds unknown fields while decoding, by structural
# pruning (see :func:`prune_unknown_fields`), before any field validation. The emulator does
# that pruning itself and honours ``fieldValidation`` (400 BadRequest under Strict); ``admit``
# called on its own, as the schema tests do, still reports them here with the other causes.
UNKNOWN = "FieldValueUnknown"
# The error types after which the API server skips the CEL rules (hasBlockingErr).
_BLOCKING = frozenset({NOT_SUPPORTED, REQUIRED, TOO_LONG, TOO_MANY, TYPE_INVALID})
_RULES_SKIPPED = (
    "some validation rules were not checked because the object was invalid; "
    "correct the existing errors to complete validation"
)


def admit(crd: dict[str, Any], obj: dict[str, Any], old: dict[str, Any] | None = None) -> dict[str, Any]:
    """Return ``obj`` with schema defaults applied, or raise :class:`Invalid`.

    ``obj`` is not modified. ``old`` is the stored object on updates (``None`` on create);
    it enables the CEL transition rules (those referring to ``oldSelf``).
    """
    kind = str(crd.get("spec", {}).get("names", {}).get("kind", obj.get("kind", "")))
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    name = str(meta.get("name") or meta.get("generateName") or "") if meta else ""

    schema, version_errors = _version_schema(crd, obj)
    if version_errors:
        raise Invalid(kind, name, version_errors)

    result = copy.deepcopy(obj)
    _default(schema, result)
    old_defaulted: dict[str, Any] | None = None
    if old is not None:
        old_defaulted = copy.deepcopy(old)
        _default(schema, old_defaulted)

    errors: list[FieldError] = []
    _validate_metadata(schema, result.get("metadata"), errors)
    _validate(schema, result, "", errors, strict=True, root=True)
    if any(e.reason in _BLOCKING for e in errors):
        # As the API server does: rules written against the schema could only fail
        # confusingly (or cost too much) on an object of the wrong shape.
        errors.append(FieldError("", f'Invalid value: "null": {_RULES_SKIPPED}'))
    else:
        _CelWalker(errors).walk_root(schema, result, old_defaulted)
    if errors:
        raise Invalid(kind, name, errors)
    return result


# --- structural pruning (decoding) --------------------------------------------------------

# ObjectMeta's JSON fields: anything else under the root ``metadata`` is an unknown field.
_OBJECT_META_FIELDS = frozenset(
    {
        "name",
        "generateName",
        "namespace",
        "selfLink",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "labels",
        "annotations",
        "ownerReferences",
        "finalizers",
        "managedFields",
    }
)


def prune_unknown_fields(crd: dict[str, Any], obj: dict[str, Any]) -> list[str]:
    """Drop, in place, every field of ``obj`` that the CRD's schema does not declare, and return
    their paths (``spec.x``, ``spec.targets[0].y``, ``metadata.z``), as the API server's decoder
    does for custom resources before anything else looks at the body.

    This is apiextensions-apiserver's structural pruning (``pkg/apiserver/schema/pruning``): a
    key is unknown when its object's schema has neither ``properties`` naming it nor
    ``additionalProperties``, unless ``x-kubernetes-preserve-unknown-fields`` is set. So an
    object with keys where a scalar or a list is declared loses those keys (``spec.slug.a``),
    and so do objects inside a list where a scalar is declared (``spec.slug[0].a``); a scalar
    where an object or a list is declared, a list of scalars where a scalar is declared, or an
    empty object, have nothing to prune and are left to validation ("must be of type").
    ObjectMeta keys it does not have are unknown too (they come first, like the API server's).
    The pruned paths are sorted, as ``PruneWithOptions`` sorts them.
    """
    if crd.get("spec", {}).get("preserveUnknownFields"):
        return []
    schema, version_errors = _version_schema(crd, obj)
    if version_errors:
        return []  # the admission refuses the apiVersion or kind; nothing to decode against
    unknown: list[str] = []
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        for key in [k for k in meta if k not in _OBJECT_META_FIELDS]:
            unknown.append(f"metadata.{key}")
            del meta[key]
    pruned: list[str] = []
    _prune(obj, schema, "", pruned, embedded=True)
    return unknown + sorted(pruned)


def _prune(value: Any, schema: Schema | None, path: str, pruned: list[str], *, embedded: bool = False) -> None:
    if schema is not None and schema.get("x-kubernetes-preserve-unknown-fields"):
        _skip_prune(value, schema, path, pruned)
        return
    if isinstance(value, dict):
        if schema is None:
            for key in list(value):
                pruned.append(_child(path, key))
                del value[key]
            return
        embedded = embedded or bool(schema.get("x-kubernetes-embedded-resource"))
        props: dict[str, Schema] = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        for key in list(value):
            if embedded and key in _ROOT_FIELDS:
                continue  # type meta and ObjectMeta are the API server's, not the schema's
            if key in props:
                _prune(value[key], props[key], _child(path, key), pruned)
            elif isinstance(additional, dict):
                _prune(value[key], additional, _child(path, key), pruned)
            elif additional is True:
                _prune(value[key], None, _child(path, key), pruned)
            else:
                pruned.append(_child(path, key))
                del value[key]
    elif isinstance(value, list):
        items = schema.get("items") if schema is not None else None
        for index, item in enumerate(value):
            _prune(item, items if isinstance(items, dict) else None, f"{path}[{index}]", pruned)


def _skip_prune(value: Any, schema: Schema, path: str, pruned: list[str]) -> None:
    # Below preserve-unknown-fields, declared properties are still pruned inside.
    if isinstance(value, dict):
        props: dict[str, Schema] = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        for key, item in value.items():
            if schema.get("x-kubernetes-embedded-resource") and key in _ROOT_FIELDS:
                continue
            if key in props:
                _prune(item, props[key], _child(path, key), pruned)
            elif isinstance(additional, dict):
                _prune(item, additional, _child(path, key), pruned)
    elif isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, dict):
            for index, item in enumerate(value):
                _skip_prune(item, items, f"{path}[{index}]", pruned)


# --- version selection -------------------------------------------------------------------


def _version_schema(crd: dict[str, Any], obj: dict[str, Any]) -> tuple[Schema, list[FieldError]]:
    spec = crd.get("spec", {})
    group = str(spec.get("group", ""))
    api_version = obj.get("apiVersion")
    if not isinstance(api_version, str) or "/" not in api_version:
        return {}, [FieldError("apiVersion", "Required value: must be <group>/<version>", REQUIRED)]
    obj_group, _, obj_version = api_version.rpartition("/")
    versions = [v for v in spec.get("versions", []) if v.get("served", True)]
    names = [str(v.get("name")) for v in versions]
    if obj_group != group or obj_version not in names:
        supported = ", ".join(_fmt(f"{group}/{n}") for n in names)
        msg = f"Unsupported value: {_fmt(api_version)}: supported values: {supported}"
        return {}, [FieldError("apiVersion", msg, NOT_SUPPORTED)]
    expected_kind = spec.get("names", {}).get("kind")
    if expected_kind and obj.get("kind") != expected_kind:
        msg = f"Unsupported value: {_fmt(obj.get('kind'))}: supported values: {_fmt(expected_kind)}"
        return {}, [FieldError("kind", msg, NOT_SUPPORTED)]
    version = versions[names.index(obj_version)]
    schema = version.get("schema", {}).get("openAPIV3Schema")
    if not isinstance(schema, dict):
        # A version without a schema accepts anything, as with preserveUnknownFields.
        return {"type": "object", "x-kubernetes-preserve-unknown-fields": True}, []
    return schema, []


# --- defaulting --------------------------------------------------------------------------


def _default(schema: Schema, value: Any) -> None:
    if isinstance(value, dict):
        props: dict[str, Schema] | None = schema.get("properties")
        if props:
            required = schema.get("required", [])
            for key, sub in props.items():
                present = key in value
                # The API server defaults non-nullable nulls like absent fields, and prunes
                # them if there is no default and they are not required (a required null
                # stays, to be refused by the type check).
                if (
                    present
                    and value[key] is None
                    and not sub.get("nullable", False)
                    and ("default" in sub or key not in required)
                ):
                    del value[key]
                    present = False
                if not present and "default" in sub:
                    value[key] = copy.deepcopy(sub["default"])
                    present = True
                if present:
                    _default(sub, value[key])
        additional = schema.get("additionalProperties")
        if isinstance(additional, dict):
            for key, item in value.items():
                if not props or key not in props:
                    _default(additional, item)
    elif isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, dict):
            for item in value:
                _default(items, item)


# --- structural validation ---------------------------------------------------------------

_DNS1123_SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_DNS1123_SUBDOMAIN_RE = re.compile(_DNS1123_SUBDOMAIN)
_ROOT_FIELDS = frozenset({"apiVersion", "kind", "metadata"})


def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _fmt(value: Any) -> str:
    """Render a value as the API server does in error bodies (Go's %q for strings)."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _type_ok(schema: Schema, value: Any) -> bool:
    if value is None:
        return bool(schema.get("nullable")) or "type" not in schema
    if schema.get("x-kubernetes-int-or-string"):
        return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))
    expected: str | None = schema.get("type")
    if not expected:
        return True
    if expected == "integer":
        if isinstance(value, float):
            # Go decodes 1.0 as a float and go-openapi accepts integral floats.
            return bool(value.is_integer())
        return isinstance(value, int) and not isinstance(value, bool)
    if expected == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return _json_type(value) == expected


def _validate_metadata(schema: Schema, meta: Any, errors: list[FieldError]) -> None:
    if meta is None:
        errors.append(FieldError("metadata.name", "Required value: name or generateName is required", REQUIRED))
        return
    if not isinstance(meta, dict):
        got = _json_type(meta)
        errors.append(
            FieldError("metadata", f"Invalid value: {_fmt(got)}: metadata in body must be of type object", TYPE_INVALID)
        )
        return
    name = meta.get("name")
    if not name and not meta.get("generateName"):
        errors.append(FieldError("metadata.name", "Required value: name or generateName is required", REQUIRED))
    if name:
        if not isinstance(name, str):
            errors.append(FieldError("metadata.name", f"Invalid value: {_fmt(name)}: must be a string", TYPE_INVALID))
        elif len(name) > 253:
            errors.append(
                FieldError("metadata.name", f"Invalid value: {_fmt(name)}: must be no more than 253 characters")
            )
        elif not _DNS1123_SUBDOMAIN_RE.fullmatch(name):
            errors.append(
                FieldError(
                    "metadata.name",
                    f"Invalid value: {_fmt(name)}: a lowercase RFC 1123 subdomain must consist of lower case "
                    "alphanumeric characters, '-' or '.', and must start and end with an alphanumeric "
                    f"character (e.g. 'example.com', regex used for validation is '{_DNS1123_SUBDOMAIN}')",
                )
            )
    # CRDs may only constrain name and generateName; everything else is ObjectMeta's.
    meta_props = schema.get("properties", {}).get("metadata", {}).get("properties", {})
    for key in ("name", "generateName"):
        if key in meta_props and key in meta:
            _validate(meta_props[key], meta[key], f"metadata.{key}", errors, strict=False)


def _validate(
    schema: Schema, value: Any, path: str, errors: list[FieldError], *, strict: bool, root: bool = False
) -> None:
    """Append the errors of ``value`` against ``schema``.

    ``strict`` reports unknown fields; it is off inside ``allOf``/``anyOf``/``oneOf``/``not``,
    which in structural schemas only add constraints to fields declared elsewhere.
    """
    if value is None and (schema.get("nullable") or "type" not in schema):
        return
    if not _type_ok(schema, value):
        got = _json_type(value)
        expected = "integer or string" if schema.get("x-kubernetes-int-or-string") else schema.get("type")
        errors.append(
            FieldError(
                path,
                f"Invalid value: {_fmt(got)}: {path} in body must be of type {expected}: {_fmt(got)}",
                TYPE_INVALID,
            )
        )
        return

    if "enum" in schema and not any(_json_equal(value, e) for e in schema["enum"]):
        supported = ", ".join(_fmt(e) for e in schema["enum"])
        errors.append(
            FieldError(path, f"Unsupported value: {_fmt(value)}: supported values: {supported}", NOT_SUPPORTED)
        )

    if isinstance(value, str):
        _validate_string(schema, value, path, errors)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        _validate_number(schema, value, path, errors)
    elif isinstance(value, list):
        _validate_array(schema, value, path, errors, strict=strict)
    elif isinstance(value, dict):
        _validate_object(schema, value, path, errors, strict=strict, root=root)

    _validate_junctors(schema, value, path, errors)


def _json_equal(a: Any, b: Any) -> bool:
    # Python's True == 1 must not make a boolean match an integer enum value.
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return bool(a == b)


def _validate_string(schema: Schema, value: str, path: str, errors: list[FieldError]) -> None:
    # go-openapi counts runes, i.e. Python characters.
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        errors.append(FieldError(path, f"Too long: may not be more than {schema['maxLength']} bytes", TOO_LONG))
    if "minLength" in schema and len(value) < schema["minLength"]:
        errors.append(
            FieldError(
                path,
                f"Invalid value: {_fmt(value)}: {path} in body should be at least {schema['minLength']} chars long",
            )
        )
    pattern = schema.get("pattern")
    if isinstance(pattern, str) and _compile_pattern(pattern).search(value) is None:
        errors.append(FieldError(path, f"Invalid value: {_fmt(value)}: {path} in body should match '{pattern}'"))
    fmt = schema.get("format")
    if isinstance(fmt, str) and fmt in _FORMATS and not _FORMATS[fmt](value):
        errors.append(
            FieldError(path, f"Invalid value: {_fmt(value)}: {path} in body must be of type {fmt}: {_fmt(value)}")
        )


_PATTERNS: dict[str, Any] = {}


def _compile_pattern(pattern: str) -> Any:
    compiled = _PATTERNS.get(pattern)
    if compiled is None:
        # The API server uses Go's RE2 engine; so do we, so that lookarounds are refused alike.
        compiled = re2.compile(pattern)
        _PATTERNS[pattern] = compiled
    return compiled


def _validate_number(schema: Schema, value: float, path: str, errors: list[FieldError]) -> None:
    shown = _fmt(value)
    if "minimum" in schema:
        low = schema["minimum"]
        if schema.get("exclusiveMinimum") is True:
            if value <= low:
                errors.append(FieldError(path, f"Invalid value: {shown}: {path} in body should be greater than {low}"))
        elif value < low:
            errors.append(
                FieldError(path, f"Invalid value: {shown}: {path} in body should be greater than or equal to {low}")
            )
    if "maximum" in schema:
        high = schema["maximum"]
        if schema.get("exclusiveMaximum") is True:
            if value >= high:
                errors.append(FieldError(path, f"Invalid value: {shown}: {path} in body should be less than {high}"))
        elif value > high:
            errors.append(
                FieldError(path, f"Invalid value: {shown}: {path} in body should be less than or equal to {high}")
            )
    factor = schema.get("multipleOf")
    if factor and not math.isclose(value / factor, round(value / factor)):
        errors.append(FieldError(path, f"Invalid value: {shown}: {path} in body should be a multiple of {factor}"))


def _validate_array(schema: Schema, value: list[Any], path: str, errors: list[FieldError], *, strict: bool) -> None:
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        errors.append(
            FieldError(path, f"Too many: {len(value)}: must have at most {schema['maxItems']} items", TOO_MANY)
        )
    if "minItems" in schema and len(value) < schema["minItems"]:
        errors.append(
            FieldError(
                path, f"Invalid value: {len(value)}: {path} in body should have at least {schema['minItems']} items"
            )
        )
    items = schema.get("items")
    if isinstance(items, dict):
        for index, item in enumerate(value):
            _validate(items, item, f"{path}[{index}]", errors, strict=strict)

    list_type = schema.get("x-kubernetes-list-type")
    if list_type == "set":
        seen: list[Any] = []
        for index, item in enumerate(value):
            if any(_json_equal(item, s) for s in seen):
                errors.append(FieldError(f"{path}[{index}]", f"Duplicate value: {_fmt(item)}", DUPLICATE))
            else:
                seen.append(item)
    elif list_type == "map":
        keys: list[str] = schema.get("x-kubernetes-list-map-keys", [])
        seen_keys: set[str] = set()
        for index, item in enumerate(value):
            if not isinstance(item, dict):
                continue
            key_values = {k: item.get(k) for k in keys if k in item}
            rendered = _fmt(key_values)
            if rendered in seen_keys:
                errors.append(FieldError(f"{path}[{index}]", f"Duplicate value: {rendered}", DUPLICATE))
            seen_keys.add(rendered)


def _validate_object(
    schema: Schema, value: dict[str, Any], path: str, errors: list[FieldError], *, strict: bool, root: bool
) -> None:
    if "maxProperties" in schema and len(value) > schema["maxProperties"]:
        errors.append(
            FieldError(path, f"Too many: {len(value)}: must have at most {schema['maxProperties']} items", TOO_MANY)
        )
    if "minProperties" in schema and len(value) < schema["minProperties"]:
        errors.append(
            FieldError(
                path,
                f"Invalid value: {len(value)}: {path} in body should have at least "
                f"{schema['minProperties']} properties",
            )
        )
    for key in schema.get("required", []):
        if key not in value:
            errors.append(FieldError(_child(path, key), "Required value", REQUIRED))

    props: dict[str, Schema] = schema.get("properties", {})
    additional = schema.get("additionalProperties")
    preserve = bool(schema.get("x-kubernetes-preserve-unknown-fields"))
    embedded = bool(schema.get("x-kubernetes-embedded-resource"))
    for key, item in value.items():
        if (root or embedded) and key in _ROOT_FIELDS:
            # ObjectMeta and type meta are the API server's, not the CRD's, to validate.
            if key != "metadata" and key in props:
                _validate(props[key], item, _child(path, key), errors, strict=strict)
            continue
        if key in props:
            _validate(props[key], item, _child(path, key), errors, strict=strict)
        elif isinstance(additional, dict):
            _validate(additional, item, f"{path}[{key}]" if path else key, errors, strict=strict)
        elif additional is True or preserve:
            continue
        elif strict:
            full = _child(path, key)
            errors.append(FieldError(full, f"unknown field {_fmt(full)}", UNKNOWN))


def _validate_junctors(schema: Schema, value: Any, path: str, errors: list[FieldError]) -> None:
    def failures(sub: Schema) -> list[FieldError]:
        found: list[FieldError] = []
        _validate(sub, value, path, found, strict=False)
        return found

    shown = _fmt(value) if not isinstance(value, dict | list) else _fmt(_json_type(value))
    for sub in schema.get("allOf", []):
        errors.extend(failures(sub))
    any_of = schema.get("anyOf")
    if any_of:
        results = [failures(sub) for sub in any_of]
        if all(results):
            errors.append(
                FieldError(path, f"Invalid value: {shown}: {path} in body must validate at least one schema (anyOf)")
            )
            for found in results:
                errors.extend(found)
    one_of = schema.get("oneOf")
    if one_of:
        passing = sum(1 for sub in one_of if not failures(sub))
        if passing != 1:
            detail = "Found none valid" if passing == 0 else f"Found {passing} valid alternatives"
            errors.append(
                FieldError(
                    path,
                    f"Invalid value: {shown}: {path} in body must validate one and only one schema (oneOf). {detail}",
                )
            )
    not_schema = schema.get("not")
    if isinstance(not_schema, dict) and not failures(not_schema):
        errors.append(FieldError(path, f"Invalid value: {shown}: {path} in body must not validate the schema (not)"))


# --- formats -----------------------------------------------------------------------------

_DURATION_RE = re.compile(r"^[-+]?((\d+(\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h|d|w))+$")
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)*$"
)
_UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")
_DATE_TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([Zz]|[+-]\d{2}:?\d{2})?$")


def _is_date_time(value: str) -> bool:
    if not _DATE_TIME_RE.match(value):
        return False
    try:
        datetime.datetime.fromisoformat(value.replace("z", "Z").replace("t", "T"))
    except ValueError:
        return False
    return True


def _is_date(value: str) -> bool:
    try:
        datetime.date.fromisoformat(value)
    except ValueError:
        return False
    return len(value) == 10


def _is_ip(value: str, version: int) -> bool:
    try:
        return ipaddress.ip_address(value).version == version
    except ValueError:
        return False


def _is_cidr(value: str) -> bool:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    return "/" in value


def _is_byte(value: str) -> bool:
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def _is_uri(value: str) -> bool:
    # kube-openapi's "uri" is Go's url.ParseRequestURI: an absolute URI or an absolute path.
    return _parse_request_uri(value) is not None


_FORMATS: dict[str, Callable[[str], bool]] = {
    "date-time": _is_date_time,
    "datetime": _is_date_time,
    "date": _is_date,
    "duration": lambda v: bool(_DURATION_RE.match(v)),
    "uri": _is_uri,
    "email": lambda v: bool(_EMAIL_RE.match(v)),
    "hostname": lambda v: bool(_HOSTNAME_RE.match(v)),
    "ipv4": lambda v: _is_ip(v, 4),
    "ipv6": lambda v: _is_ip(v, 6),
    "cidr": _is_cidr,
    "uuid": lambda v: bool(_UUID_RE.match(v)),
    "byte": _is_byte,
}


# --- CEL ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Program:
    runner: Any  # celpy.Runner, or None when the rule does not compile
    error: str
    uses_old_self: bool


class _OptionalNamespace:
    """The value bound to ``optional`` so that ``optional.of(x)``/``optional.none()`` parse
    as method calls on it (cel-python has no ``optional`` type)."""


class CelOptional:
    """CEL's ``optional_type``, as ``oldSelf`` is with ``optionalOldSelf: true``."""

    def __init__(self, value: Any = None, present: bool = False) -> None:
        self.value = value
        self.present = present

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CelOptional) and (self.present, self.value) == (other.present, other.value)

    def __hash__(self) -> int:
        return hash(self.present)

    def __repr__(self) -> str:
        return f"optional.of({self.value!r})" if self.present else "optional.none()"


_OPTIONAL = _OptionalNamespace()
_NONE = CelOptional()


class CelURL:
    """The Kubernetes CEL URL library's ``URL`` type."""

    def __init__(self, parts: urllib.parse.SplitResult) -> None:
        self.parts = parts

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CelURL) and self.parts == other.parts

    def __hash__(self) -> int:
        return hash(self.parts)


def _parse_request_uri(text: str) -> urllib.parse.SplitResult | None:
    if not text or any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        return None
    try:
        parts = urllib.parse.urlsplit(text)
        _ = parts.port  # raises on a non-numeric port, as Go's parser does
    except ValueError:
        return None
    if " " in parts.netloc:
        return None
    if parts.scheme:
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", parts.scheme):
            return None
        return parts
    return parts if text.startswith("/") else None


def _propagate(function: Callable[..., Any]) -> Callable[..., Any]:
    """Make an extension function pass on an error argument, as CEL's own functions do.

    Extension functions raise ValueError on bad input: cel-python's transpiled code turns
    raised errors into CEL error values only at &&, ||, ?: and macro boundaries, which is
    where CEL semantics absorb them (``!isURL(s) || url(s)...``)."""

    @functools.wraps(function)
    def wrapper(*args: Any) -> Any:
        for arg in args:
            if isinstance(arg, celpy.evaluation.CELEvalError):
                return arg
        return function(*args)

    return wrapper


def _str(value: str) -> Any:
    return celtypes.StringType(value)


@_propagate
def cel_lower_ascii(text: str) -> Any:
    return _str("".join(c.lower() if c.isascii() else c for c in text))


@_propagate
def cel_upper_ascii(text: str) -> Any:
    return _str("".join(c.upper() if c.isascii() else c for c in text))


@_propagate
def cel_trim(text: str) -> Any:
    return _str(text.strip())


@_propagate
def cel_char_at(text: str, index: int) -> Any:
    if index < 0 or index > len(text):
        raise ValueError(f"index out of range: {index}")
    return _str(text[index : index + 1])


@_propagate
def cel_index_of(target: Any, item: Any, start: int = 0) -> Any:
    if isinstance(target, str):
        if start < 0 or start > len(target):
            raise ValueError(f"index out of range: {start}")
        return celtypes.IntType(target.find(item, start))
    for index, element in enumerate(target):
        if element == item:
            return celtypes.IntType(index)
    return celtypes.IntType(-1)


@_propagate
def cel_last_index_of(target: Any, item: Any) -> Any:
    if isinstance(target, str):
        return celtypes.IntType(target.rfind(item))
    for index in range(len(target) - 1, -1, -1):
        if target[index] == item:
            return celtypes.IntType(index)
    return celtypes.IntType(-1)


@_propagate
def cel_replace(text: str, old: str, new: str, count: int = -1) -> Any:
    return _str(text.replace(old, new, count))


@_propagate
def cel_split(text: str, sep: str, limit: int = -1) -> Any:
    if limit == 0:
        return celtypes.ListType([])
    parts = text.split(sep, limit - 1) if limit > 0 else text.split(sep)
    return celtypes.ListType([_str(p) for p in parts])


@_propagate
def cel_substring(text: str, start: int, end: int | None = None) -> Any:
    stop = len(text) if end is None else end
    if start < 0 or stop > len(text) or start > stop:
        raise ValueError(f"substring out of range: {start}, {stop}")
    return _str(text[start:stop])


@_propagate
def cel_join(items: Iterable[Any], sep: str = "") -> Any:
    return _str(sep.join(str(i) for i in items))


@_propagate
def cel_find(text: str, pattern: str) -> Any:
    found = re2.search(pattern, text)
    return _str(found.group(0) if found else "")


@_propagate
def cel_find_all(text: str, pattern: str, limit: int = -1) -> Any:
    matches = [m.group(0) for m in re2.finditer(pattern, text)]
    if limit >= 0:
        matches = matches[:limit]
    return celtypes.ListType([_str(m) for m in matches])


@_propagate
def cel_is_sorted(items: list[Any]) -> Any:
    return celtypes.BoolType(all(items[i] <= items[i + 1] for i in range(len(items) - 1)))


@_propagate
def cel_sum(items: list[Any]) -> Any:
    total: Any = celtypes.IntType(0)
    for index, item in enumerate(items):
        total = item if index == 0 else total + item
    return total


@_propagate
def cel_max(items: list[Any]) -> Any:
    if not items:
        raise ValueError("max called on an empty list")
    return max(items)


@_propagate
def cel_is_url(text: str) -> Any:
    return celtypes.BoolType(_parse_request_uri(text) is not None)


@_propagate
def cel_url(text: str) -> CelURL:
    parts = _parse_request_uri(text)
    if parts is None:
        raise ValueError(f"URL parse error during conversion from string: {text}")
    return CelURL(parts)


@_propagate
def cel_get_scheme(url: CelURL) -> Any:
    return _str(url.parts.scheme)


@_propagate
def cel_get_host(url: CelURL) -> Any:
    return _str(url.parts.netloc.rpartition("@")[2])


@_propagate
def cel_get_hostname(url: CelURL) -> Any:
    host = url.parts.netloc.rpartition("@")[2]
    if host.startswith("["):
        return _str(host[1 : host.find("]")])
    return _str(host.partition(":")[0])


@_propagate
def cel_get_port(url: CelURL) -> Any:
    host = url.parts.netloc.rpartition("@")[2]
    if host.startswith("["):
        host = host[host.find("]") + 1 :]
    return _str(host.partition(":")[2])


@_propagate
def cel_get_escaped_path(url: CelURL) -> Any:
    return _str(urllib.parse.quote(url.parts.path, safe="/%!$&'()*+,;=:@~-._"))


@_propagate
def cel_get_query(url: CelURL) -> Any:
    query = urllib.parse.parse_qs(url.parts.query, keep_blank_values=True)
    return celtypes.MapType({_str(k): celtypes.ListType([_str(v) for v in vs]) for k, vs in query.items()})


@_propagate
def cel_is_ip(text: str) -> Any:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return celtypes.BoolType(False)
    return celtypes.BoolType(True)


@_propagate
def cel_is_cidr(text: str) -> Any:
    return celtypes.BoolType(_is_cidr(text))


@_propagate
def cel_optional_of(_namespace: _OptionalNamespace, value: Any) -> CelOptional:
    return CelOptional(value, True)


@_propagate
def cel_optional_of_non_zero_value(_namespace: _OptionalNamespace, value: Any) -> CelOptional:
    return CelOptional(value, True) if value else _NONE


@_propagate
def cel_optional_none(_namespace: _OptionalNamespace) -> CelOptional:
    return _NONE


@_propagate
def cel_has_value(opt: CelOptional) -> Any:
    return celtypes.BoolType(opt.present)


@_propagate
def cel_value(opt: CelOptional) -> Any:
    if not opt.present:
        raise ValueError("optional.none() dereference")
    return opt.value


@_propagate
def cel_or_value(opt: CelOptional, default: Any) -> Any:
    return opt.value if opt.present else default


def _cel_bool(value: Any) -> Any:
    # cel-python's transpiled has() yields a Python bool, which its own logical operators
    # refuse ("no such overload"), breaking the ubiquitous ``!has(self.x) || ...``.
    return celtypes.BoolType(value) if type(value) is bool else value


def cel_not(value: Any) -> Any:
    return celtypes.logical_not(_cel_bool(value))


def cel_and(left: Any, right: Any) -> Any:
    return celtypes.logical_and(_cel_bool(left), _cel_bool(right))


def cel_or(left: Any, right: Any) -> Any:
    return celtypes.logical_or(_cel_bool(left), _cel_bool(right))


def cel_condition(condition: Any, when_true: Any, when_false: Any) -> Any:
    return celtypes.logical_condition(_cel_bool(condition), when_true, when_false)


# Methods and functions Kubernetes adds to CEL (strings and lists extensions, regex, URL,
# IP, optionals) that cel-python lacks. cel-python dispatches ``x.f(a)`` to ``f(x, a)``,
# so one registration serves both call syntaxes. Natively available and not redefined:
# size, has, matches, startsWith, endsWith, contains, exists, all, exists_one, map, filter,
# int/uint/double/string/bytes/timestamp/duration conversions, type, dyn.
CEL_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "!_": cel_not,
    "_&&_": cel_and,
    "_||_": cel_or,
    "_?_:_": cel_condition,
    "lowerAscii": cel_lower_ascii,
    "upperAscii": cel_upper_ascii,
    "trim": cel_trim,
    "charAt": cel_char_at,
    "indexOf": cel_index_of,
    "lastIndexOf": cel_last_index_of,
    "replace": cel_replace,
    "split": cel_split,
    "substring": cel_substring,
    "join": cel_join,
    "find": cel_find,
    "findAll": cel_find_all,
    "isSorted": cel_is_sorted,
    "sum": cel_sum,
    "max": cel_max,
    "isURL": cel_is_url,
    "url": cel_url,
    "getScheme": cel_get_scheme,
    "getHost": cel_get_host,
    "getHostname": cel_get_hostname,
    "getPort": cel_get_port,
    "getEscapedPath": cel_get_escaped_path,
    "getQuery": cel_get_query,
    "isIP": cel_is_ip,
    "isCIDR": cel_is_cidr,
    "of": cel_optional_of,
    "ofNonZeroValue": cel_optional_of_non_zero_value,
    "none": cel_optional_none,
    "hasValue": cel_has_value,
    "value": cel_value,
    "orValue": cel_or_value,
}

# The transpiling runner (about 4x faster than cel-python's tree interpreter) emits calls as
# ``<func.__module__>.<func.__qualname__>(...)`` and runs them in celpy.evaluation's globals,
# so our package must be reachable from there.
vars(celpy.evaluation).setdefault(__name__.split(".")[0], sys.modules[__name__.split(".")[0]])
# That runner logs every evaluation error at ERROR level before raising it; we report those
# errors as field errors, so the log line is only noise.
logging.getLogger("celpy.Transpiler").addFilter(lambda record: not record.getMessage().startswith("Internal error"))

_ENV = celpy.Environment(runner_class=celpy.CompiledRunner)
_PROGRAMS: dict[str, _Program] = {}
# The transpiling runner executes in celpy.evaluation's module globals (it stores the
# activation there), so evaluations must not interleave across threads.
_EVAL_LOCK = threading.Lock()
_OLD_SELF_RE = re.compile(r"\boldSelf\b")


def _program(expression: str) -> _Program:
    cached = _PROGRAMS.get(expression)
    if cached is None:
        uses_old_self = bool(_OLD_SELF_RE.search(expression))
        try:
            ast = _ENV.compile(expression)
            _refuse_unsupported(ast)
            runner = _ENV.program(ast, functions=CEL_FUNCTIONS)
            cached = _Program(runner, "", uses_old_self)
        except Exception as exc:  # cel-python raises several unrelated exception types
            cached = _Program(None, f"compilation failed: {exc}".splitlines()[0], uses_old_self)
        _PROGRAMS[expression] = cached
    return cached


def _refuse_unsupported(ast: Any) -> None:
    """Refuse what cel-python would get silently wrong rather than fail on."""
    for node in ast.iter_subtrees():
        if (
            node.data == "member_dot_arg"
            and str(node.children[1]) == "map"
            and len(node.children) > 2
            and node.children[2] is not None
            and len(node.children[2].children) == 3
        ):
            # cel-python would map with the predicate and ignore the transform.
            raise ValueError("the three-argument map(x, predicate, transform) macro is not supported")


def _evaluate(program: _Program, activation: dict[str, Any]) -> tuple[Any, str]:
    """Return (value, "") or (None, error text)."""
    if program.runner is None:
        return None, program.error
    try:
        with _EVAL_LOCK:
            return program.runner.evaluate(activation), ""
    except Exception as exc:  # CELEvalError and whatever an extension function raised
        return None, _eval_error_text(exc)


def _eval_error_text(exc: BaseException) -> str:
    # cel-python nests the error it wraps in the args, as (text, class, args); dig down to
    # the text that names the actual problem (e.g. the ValueError of an extension function).
    args: tuple[Any, ...] = exc.args
    while (
        len(args) >= 3
        and isinstance(args[1], type)
        and isinstance(args[2], tuple)
        and args[2]
        and isinstance(args[2][0], str)
        and (issubclass(args[1], celpy.evaluation.CELEvalError) or args[0] in _WRAPPING_TEXTS)
    ):
        args = args[2]
    return str(args[0]) if args else (str(exc) or type(exc).__name__)


_WRAPPING_TEXTS = frozenset({"return error for overflow", "evaluation error"})


def _plain_to_cel(value: Any) -> Any:
    """Convert a value the schema says nothing about (preserve-unknown-fields)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return celtypes.BoolType(value)
    if isinstance(value, int):
        return celtypes.IntType(value)
    if isinstance(value, float):
        return celtypes.DoubleType(value)
    if isinstance(value, str):
        return celtypes.StringType(value)
    if isinstance(value, list):
        return celtypes.ListType([_plain_to_cel(v) for v in value])
    if isinstance(value, dict):
        return celtypes.MapType({celtypes.StringType(k): _plain_to_cel(v) for k, v in value.items()})
    return value


def _scalar_to_cel(schema: Schema, value: Any) -> Any:
    if isinstance(value, bool):
        return celtypes.BoolType(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        # The schema type, not the JSON spelling, decides: "number" fields are doubles.
        if schema.get("type") == "number":
            return celtypes.DoubleType(value)
        if isinstance(value, float) and schema.get("type") == "integer":
            return celtypes.IntType(int(value))
        return _plain_to_cel(value)
    if isinstance(value, str):
        fmt = schema.get("format")
        try:
            # Kubernetes gives these formats their CEL types.
            if fmt in ("date-time", "datetime"):
                return celtypes.TimestampType(value)
            if fmt == "duration":
                return celtypes.DurationType(value)
            if fmt == "byte":
                return celtypes.BytesType(base64.b64decode(value))
        except (ValueError, TypeError, binascii.Error):
            pass
        return celtypes.StringType(value)
    return _plain_to_cel(value)


def _to_cel(schema: Schema, value: Any) -> Any:
    """Convert without evaluating rules (for ``oldSelf``)."""
    if isinstance(value, dict):
        props: dict[str, Schema] = schema.get("properties", {})
        additional = schema.get("additionalProperties")
        out = {}
        for key, item in value.items():
            sub = props.get(key) or (additional if isinstance(additional, dict) else None)
            out[celtypes.StringType(key)] = _plain_to_cel(item) if sub is None else _to_cel(sub, item)
        return celtypes.MapType(out)
    if isinstance(value, list):
        items = schema.get("items")
        if not isinstance(items, dict):
            return _plain_to_cel(value)
        return celtypes.ListType([_to_cel(items, item) for item in value])
    return _scalar_to_cel(schema, value)


_ABSENT = object()


class _CelWalker:
    """Evaluates every rule of the schema bottom-up, converting each value to CEL once."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors

    def walk_root(self, schema: Schema, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        # CEL sees only name and generateName of the metadata, as on a real API server.
        view = dict(obj)
        old_view: Any = _ABSENT if old is None else dict(old)
        for target in (view, old_view):
            if isinstance(target, dict) and isinstance(target.get("metadata"), dict):
                meta = target["metadata"]
                target["metadata"] = {k: meta[k] for k in ("name", "generateName") if k in meta}
        self.walk(schema, view, old_view, "")

    def walk(self, schema: Schema, value: Any, old: Any, path: str) -> Any:
        """Return the CEL value of ``value``; ``old`` is the correlated old value or _ABSENT."""
        if not _type_ok(schema, value):
            # Already reported by the structural validation; rules would only add noise.
            return _plain_to_cel(value)
        cel: Any
        if isinstance(value, dict):
            props: dict[str, Schema] = schema.get("properties", {})
            additional = schema.get("additionalProperties")
            converted = {}
            for key, item in value.items():
                sub = props.get(key)
                child_path = _child(path, key)
                if sub is None and isinstance(additional, dict):
                    sub = additional
                    child_path = f"{path}[{key}]" if path else key
                if sub is None:
                    converted[celtypes.StringType(key)] = _plain_to_cel(item)
                    continue
                old_item = old.get(key, _ABSENT) if isinstance(old, dict) else _ABSENT
                converted[celtypes.StringType(key)] = self.walk(sub, item, old_item, child_path)
            cel = celtypes.MapType(converted)
        elif isinstance(value, list) and isinstance(schema.get("items"), dict):
            items: Schema = schema["items"]
            old_items = self._correlate(schema, value, old)
            cel = celtypes.ListType(
                [self.walk(items, item, old_items[i], f"{path}[{i}]") for i, item in enumerate(value)]
            )
        else:
            cel = _scalar_to_cel(schema, value)

        rules = schema.get("x-kubernetes-validations")
        if rules:
            self._check(schema, rules, cel, old, path)
        return cel

    @staticmethod
    def _correlate(schema: Schema, value: list[Any], old: Any) -> list[Any]:
        # Only list-type=map items have an identity across updates; items of atomic
        # lists and sets get no oldSelf, as on a real API server.
        absent: list[Any] = [_ABSENT] * len(value)
        if schema.get("x-kubernetes-list-type") != "map" or not isinstance(old, list):
            return absent
        keys: list[str] = schema.get("x-kubernetes-list-map-keys", [])

        def identity(item: Any) -> str:
            return _fmt([item.get(k) for k in keys]) if isinstance(item, dict) else ""

        by_key = {identity(item): item for item in old}
        return [by_key.get(identity(item), _ABSENT) for item in value]

    def _check(self, schema: Schema, rules: list[dict[str, Any]], cel: Any, old: Any, path: str) -> None:
        old_cel: Any = _ABSENT
        for rule in rules:
            expression = str(rule.get("rule", ""))
            program = _program(expression)
            activation: dict[str, Any] = {"self": cel, "optional": _OPTIONAL}
            if program.uses_old_self:
                optional_old = bool(rule.get("optionalOldSelf", False))
                if old is _ABSENT and not optional_old:
                    continue
                if old_cel is _ABSENT and old is not _ABSENT:
                    old_cel = _to_cel(schema, old)
                if optional_old:
                    activation["oldSelf"] = _NONE if old is _ABSENT else CelOptional(old_cel, True)
                else:
                    activation["oldSelf"] = old_cel
            result, error = _evaluate(program, activation)
            result = _cel_bool(result)
            if not error and isinstance(result, celtypes.BoolType) and bool(result):
                continue
            field_path = _join_field_path(path, rule.get("fieldPath"))
            shown = _fmt(
                str(
                    schema.get("type")
                    or ("integer or string" if schema.get("x-kubernetes-int-or-string") else "object")
                )
            )
            if error:
                self.errors.append(
                    FieldError(field_path, f"Invalid value: {shown}: {error} evaluating rule: {expression}")
                )
                continue
            if not isinstance(result, celtypes.BoolType):
                self.errors.append(
                    FieldError(field_path, f"Invalid value: {shown}: rule did not evaluate to a bool: {expression}")
                )
                continue
            message = self._message(rule, activation, expression)
            reason = str(rule.get("reason") or INVALID)
            if reason == REQUIRED:
                body = f"Required value: {message}"
            elif reason == FORBIDDEN:
                body = f"Forbidden: {message}"
            elif reason == DUPLICATE:
                body = f"Duplicate value: {message}"
            else:
                reason = INVALID
                body = f"Invalid value: {shown}: {message}"
            self.errors.append(FieldError(field_path, body, reason))

    @staticmethod
    def _message(rule: dict[str, Any], activation: dict[str, Any], expression: str) -> str:
        fallback = str(rule.get("message") or f"failed rule: {expression}")
        message_expression = rule.get("messageExpression")
        if not message_expression:
            return fallback
        value, error = _evaluate(_program(str(message_expression)), activation)
        # The API server falls back to the static message when messageExpression fails.
        if error or not isinstance(value, str) or not value.strip() or "\n" in value:
            return fallback
        return str(value)


_FIELD_PATH_RE = re.compile(r"\.([A-Za-z_][A-Za-z0-9_-]*)|\[\s*'((?:[^'\\]|\\.)*)'\s*\]|\[\s*(\d+)\s*\]")


def _join_field_path(path: str, relative: Any) -> str:
    """Append a rule's ``fieldPath`` (``.spec.foo``, ``['a.b']``, ``[0]``) to the node's path."""
    if not isinstance(relative, str) or not relative:
        return path
    result = path
    for name, quoted, index in _FIELD_PATH_RE.findall(relative):
        result = f"{result}[{index}]" if index else _child(result, name or quoted)
    return result
