"""The AutoscalingPolicy CustomResourceDefinition, generated from the pydantic model.

`crd_manifest()` builds the apiextensions.k8s.io/v1 CRD whose `.spec` schema is
`autoscaler.config.WorkloadSpec.model_json_schema()` turned into a *structural* OpenAPI v3
schema, the dialect the API server accepts (Kubernetes docs, "Specifying a structural
schema"). One model, one schema: `make crd` (`gpu-autoscaler crd`) writes
manifests/base/crd.yaml and a test regenerates it and compares.

The conversion (`structural_schema`), rule by rule:

- `$ref`/`$defs` are inlined (the API server resolves no references); the referring field's
  own keywords (its description) win over the definition's.
- `anyOf: [X, {type: null}]` (an `Optional` field) becomes X with `nullable: true`; any other
  `anyOf`/`oneOf`/`allOf` is refused (structural schemas forbid types inside them).
- JSON Schema 2020-12 `exclusiveMinimum: 0` becomes OpenAPI 3.0 `minimum: 0` plus
  `exclusiveMinimum: true` (same for the maximum); `const` becomes a one-value `enum`.
- `additionalProperties: false` is dropped: v1 forbids it beside `properties`, and structural
  pruning already removes unknown fields (kubectl's default `--validate=strict` rejects them).
  A schema for `additionalProperties` (a `dict[str, X]`) is kept; a dict keyed by a `Literal`
  (`propertyNames: {enum: [...]}`, e.g. `metrics.queries`) becomes one property per key.
- `title`s are dropped (pydantic's are derived from the field name: noise in `kubectl
  explain`). `default`s are moved into the description ("Default: 3600.0") instead of being
  kept: the API server would write them into every stored object, freezing today's defaults
  into objects that a later release should read with its own (the controller applies
  pydantic's defaults when it reads an object).
- Any other keyword raises `UnsupportedSchema` naming it and where it was met, so a model
  change that the API server would not accept fails here, not at `kubectl apply`.

The `status` schema is written out below: it is what `autoscaler.adapters.kube.KubeStateStore`
and `CustomResourceSource` write (a test saves a status through them and validates it), with
`x-kubernetes-preserve-unknown-fields` only on `policyState` (the policies' own state, whose
shape belongs to the policy code).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from typing import Any

import yaml

from autoscaler.config import GROUP, KIND, PLURAL, SHORT_NAMES, SINGULAR, VERSION, WorkloadSpec

JSON = dict[str, Any]

CRD_NAME = f"{PLURAL}.{GROUP}"

# Keywords copied as they are (OpenAPI v3.0 and JSON Schema agree on their meaning).
_COPIED = (
    "type",
    "description",
    "enum",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "uniqueItems",
    "minProperties",
    "maxProperties",
    "multipleOf",
    "required",
)
# Keywords dropped on purpose (see the module docstring).
_DROPPED = ("title", "default", "additionalProperties", "$defs", "examples")
# `format` values the API server knows (k8s.io/kube-openapi strfmt); others would be ignored
# by it and are refused here.
_FORMATS = frozenset(
    {"int32", "int64", "float", "double", "byte", "date", "date-time", "duration", "uri"}
)


class UnsupportedSchema(ValueError):
    """The JSON schema uses a construct a structural CRD schema cannot express."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path or '(root)'}: {message}")
        self.path = path


def _resolve(node: Mapping[str, Any], defs: Mapping[str, Any], path: str) -> JSON:
    """Inline a `$ref` (or a single-element `allOf`), keeping the referrer's own keywords."""
    node = dict(node)
    if "allOf" in node:
        parts = node.pop("allOf")
        if len(parts) != 1:
            raise UnsupportedSchema(path, f"allOf with {len(parts)} schemas")
        node = {**parts[0], **node}
    while "$ref" in node:
        ref = node.pop("$ref")
        prefix = "#/$defs/"
        if not isinstance(ref, str) or not ref.startswith(prefix) or ref[len(prefix) :] not in defs:
            raise UnsupportedSchema(path, f"unresolvable $ref {ref!r}")
        node = {**defs[ref[len(prefix) :]], **node}
    return node


def _with_default(description: str | None, default: Any) -> str | None:
    if default is None:
        return description
    text = f"Default: {json.dumps(default)}."
    return f"{description.rstrip()} {text}" if description else text


def _convert(node: Mapping[str, Any], defs: Mapping[str, Any], path: str) -> JSON:
    node = _resolve(node, defs, path)
    if "anyOf" in node or "oneOf" in node:
        key = "anyOf" if "anyOf" in node else "oneOf"
        branches = list(node.pop(key))
        others = [b for b in branches if b != {"type": "null"}]
        if len(others) != 1 or len(others) == len(branches):
            raise UnsupportedSchema(
                path, f"{key} other than [schema, null] (an Optional field): {branches}"
            )
        inner = _resolve(others[0], defs, path)
        optional = _convert({**inner, **node}, defs, path)
        optional["nullable"] = True
        return optional

    unknown = set(node) - set(_COPIED) - set(_DROPPED)
    unknown -= {
        "properties",
        "items",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "const",
        "propertyNames",
        "format",
    }
    if unknown:
        raise UnsupportedSchema(path, f"unsupported keyword(s) {sorted(unknown)}")

    out: JSON = {k: node[k] for k in _COPIED if k in node}
    description = _with_default(node.get("description"), node.get("default"))
    if description:
        out["description"] = description
    if "const" in node:
        out["enum"] = [node["const"]]
    if "format" in node:
        if node["format"] not in _FORMATS:
            raise UnsupportedSchema(path, f"format {node['format']!r} is not known to Kubernetes")
        out["format"] = node["format"]
    for bound, plain in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if bound in node:
            value = node[bound]
            if isinstance(value, bool):  # already OpenAPI 3.0 style
                out[bound] = value
                continue
            if plain in node:
                raise UnsupportedSchema(path, f"both {plain} and {bound}")
            out[plain] = value
            out[bound] = True
    if "type" not in out:
        raise UnsupportedSchema(path, "no type (structural schemas need one on every node)")

    if out["type"] == "object":
        props: JSON = {}
        for name, sub in (node.get("properties") or {}).items():
            props[name] = _convert(sub, defs, f"{path}.{name}" if path else name)
        extra = node.get("additionalProperties")
        keys = node.get("propertyNames")
        if keys is not None:
            names = _resolve(keys, defs, path).get("enum")
            if not names or not isinstance(extra, Mapping):
                raise UnsupportedSchema(path, "propertyNames other than an enum of keys")
            # a dict keyed by a Literal: one optional property per allowed key
            for name in names:
                props[str(name)] = _convert(extra, defs, f"{path}.{name}")
        elif isinstance(extra, Mapping):
            if props:
                raise UnsupportedSchema(path, "both properties and additionalProperties")
            out["additionalProperties"] = _convert(extra, defs, f"{path}.*")
        elif extra is True:
            out["x-kubernetes-preserve-unknown-fields"] = True
        if props:
            out["properties"] = props
    elif out["type"] == "array":
        if "items" not in node:
            raise UnsupportedSchema(path, "array without items")
        out["items"] = _convert(node["items"], defs, f"{path}[]")
    elif "properties" in node or "items" in node:
        raise UnsupportedSchema(path, f"properties/items on a {out['type']}")
    return out


def structural_schema(schema: Mapping[str, Any]) -> JSON:
    """A pydantic (JSON Schema 2020-12) schema as a structural OpenAPI v3 schema.

    Raises UnsupportedSchema naming the field path of the first construct Kubernetes would
    not accept. The input is not modified."""
    return _convert(schema, schema.get("$defs") or {}, "")


def spec_schema() -> JSON:
    """The structural schema of `.spec` (WorkloadSpec), with scheduling keyed by name."""
    spec = structural_schema(WorkloadSpec.model_json_schema(by_alias=True))
    schedules = spec["properties"]["policy"]["properties"]["schedules"]
    # entry names are unique (WorkloadSpec checks it); a list-map lets server-side apply merge
    # entries by name and makes the API server refuse duplicates too
    schedules["x-kubernetes-list-type"] = "map"
    schedules["x-kubernetes-list-map-keys"] = ["name"]
    return spec


def _pool_counts(what: str) -> JSON:
    return {
        "type": "object",
        "description": f"{what} replicas per pool; total = spot + onDemand (serving replicas).",
        "properties": {
            pool: {"type": "integer", "format": "int32", "minimum": 0}
            for pool in ("spot", "onDemand", "warm", "total")
        },
    }


# metav1.Condition, as controller-gen writes it for every built-in and kubebuilder CRD.
_CONDITION: JSON = {
    "type": "object",
    "description": "metav1.Condition: one aspect of the object's state.",
    "required": ["type", "status", "lastTransitionTime", "reason", "message"],
    "properties": {
        "type": {
            "type": "string",
            "maxLength": 316,
            "pattern": r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
            r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
            "description": "Ready (decided and actuated without error) or Holding (the "
            "decision holds the last good one, e.g. on stale metrics).",
        },
        "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
        "observedGeneration": {"type": "integer", "format": "int64", "minimum": 0},
        "lastTransitionTime": {"type": "string", "format": "date-time"},
        "reason": {
            "type": "string",
            "minLength": 1,
            "maxLength": 1024,
            "pattern": r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        },
        "message": {"type": "string", "maxLength": 32768},
    },
}


def status_schema() -> JSON:
    """The structural schema of `.status`, as the controller writes it."""
    number = {"type": "number", "nullable": True}  # NaN/inf are written as null
    return {
        "type": "object",
        "description": "Written by the controller (status subresource).",
        "properties": {
            "observedGeneration": {
                "type": "integer",
                "format": "int64",
                "minimum": 0,
                "description": "metadata.generation of the spec the controller last read.",
            },
            "policyState": {
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": True,
                "description": "The policy's state (forecast level, trend, stabilization "
                "history), so a new leader resumes where the old one stopped. Its shape "
                "belongs to the policy code.",
            },
            "lastDecision": {
                "type": "object",
                "description": "The last decision: replicas per pool, demand, reason.",
                "properties": {
                    "spot": {"type": "integer", "format": "int32", "minimum": 0},
                    "onDemand": {"type": "integer", "format": "int32", "minimum": 0},
                    "warm": {"type": "integer", "format": "int32", "minimum": 0},
                    "desiredTotal": {"type": "integer", "format": "int32", "minimum": 0},
                    "demandNow": {
                        **number,
                        "description": "Smoothed demand now, in the scenario metric's units.",
                    },
                    "forecast": {**number, "description": "Mean forecast at the lead time."},
                    "forecastUpper": {
                        **number,
                        "description": "Upper prediction bound at the lead time.",
                    },
                    "reason": {"type": "string", "description": "Short code (ScaleUpForecast)."},
                    "message": {"type": "string"},
                    "held": {
                        "type": "boolean",
                        "description": "True when the last good decision was held.",
                    },
                    "time": {"type": "string", "format": "date-time"},
                },
            },
            "desiredReplicas": _pool_counts("Desired"),
            "currentReplicas": _pool_counts("Current (spec.replicas of the Deployments)"),
            "conditions": {
                "type": "array",
                "items": _CONDITION,
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
            },
        },
    }


def _column(name: str, kind: str, path: str, description: str, priority: int = 0) -> JSON:
    col: JSON = {"name": name, "type": kind, "jsonPath": path, "description": description}
    if priority:
        col["priority"] = priority
    return col


PRINTER_COLUMNS: list[JSON] = [
    _column("Scenario", "string", ".spec.policy.scenario", "chat, rag, streaming or batch"),
    _column("Spot", "integer", ".status.desiredReplicas.spot", "Desired spot replicas"),
    _column("OnDemand", "integer", ".status.desiredReplicas.onDemand", "Desired on-demand"),
    _column("Warm", "integer", ".status.desiredReplicas.warm", "Desired warm-pool slots"),
    _column("Cur-Spot", "integer", ".status.currentReplicas.spot", "Current spot replicas"),
    _column("Cur-OnDemand", "integer", ".status.currentReplicas.onDemand", "Current on-demand"),
    _column("Cur-Warm", "integer", ".status.currentReplicas.warm", "Current warm-pool slots"),
    _column("Reason", "string", ".status.lastDecision.reason", "Reason of the last decision"),
    _column("Age", "date", ".metadata.creationTimestamp", "Time since creation"),
]


def crd_manifest() -> JSON:
    """The AutoscalingPolicy CustomResourceDefinition (apiextensions.k8s.io/v1) as a dict."""
    spec = spec_schema()
    spec["description"] = (
        "What to scale (targets), where its load comes from (metrics), how to decide "
        "(policy) and what capacity costs (cost). The controller validates it with the same "
        "model; rules across fields (min_replicas <= max_replicas, a capacity for the "
        "scenario, cron syntax) are reported on the object as Ready=False/InvalidSpec."
    )
    root: JSON = {
        "type": "object",
        "description": "One GPU inference workload's autoscaling policy: spot, on-demand and "
        "warm-pool Deployments sized from forecast load.",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status_schema(),
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": CRD_NAME,
            "labels": {
                "app.kubernetes.io/name": "gpu-autoscaler",
                "app.kubernetes.io/part-of": "gpu-autoscaler",
            },
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
                "categories": ["gpu-autoscaler"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": root},
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                }
            ],
        },
    }


class _Dumper(yaml.SafeDumper):
    """Block style, multi-line strings as literal blocks, key order kept."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)

HEADER = (
    "# Generated by `gpu-autoscaler crd` (make crd) from autoscaler.config.WorkloadSpec.\n"
    "# Do not edit: change the pydantic model and regenerate; tests/test_crd.py compares.\n"
)


def crd_yaml() -> str:
    """The CRD as a YAML document with a header saying where it comes from."""
    body = yaml.dump(crd_manifest(), Dumper=_Dumper, sort_keys=False, width=100)
    return HEADER + body


def cmd_crd(args: argparse.Namespace) -> int:
    sys.stdout.write(crd_yaml())
    return 0


def register(subparsers: Any) -> None:
    """Add the `crd` subcommand."""
    p = subparsers.add_parser(
        "crd",
        help="print the AutoscalingPolicy CustomResourceDefinition (YAML)",
        description="Print the AutoscalingPolicy CRD generated from the pydantic model "
        "(make crd writes it to manifests/base/crd.yaml).",
    )
    p.set_defaults(func=cmd_crd)
