"""The AutoscalingPolicy CRD: generated from the pydantic model, structural, and as strict.

Custom resources are checked offline the way the API server checks them: the CRD's
openAPIV3Schema with OpenAPI 3.0 semantics (boolean exclusiveMinimum, `nullable`), unknown
fields refused as kubectl's default `--validate=strict` refuses them, list-map keys unique.
CEL rules and defaulting are not modelled (the CRD has neither).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import json
import re
import time
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from autoscaler.config import GROUP, KIND, PLURAL, SHORT_NAMES, VERSION, WorkloadSpec
from autoscaler.crdgen import (
    CRD_NAME,
    PRINTER_COLUMNS,
    UnsupportedSchema,
    crd_manifest,
    crd_yaml,
    structural_schema,
)
from policies.spec import SpecError

ROOT = Path(__file__).resolve().parents[1]
CRD_FILE = ROOT / "manifests" / "base" / "crd.yaml"
EXAMPLES = ROOT / "manifests" / "examples"
# Kubernetes minor the manifests are validated against (kubernetes-validate ships 1.25-1.37)
K8S_VERSION = "1.32"

JSON = dict[str, Any]


# -- an offline validator for custom resources ---------------------------------------------


def _nullable(keyword: str) -> Any:
    """Wrap a Draft 4 keyword so that null passes where the schema says `nullable: true`."""
    base = jsonschema.Draft4Validator.VALIDATORS[keyword]

    def check(validator: Any, value: Any, instance: Any, schema: Mapping[str, Any]) -> Any:
        if instance is None and schema.get("nullable") is True:
            return
        yield from base(validator, value, instance, schema)

    return check


def _list_map_keys(validator: Any, keys: Any, instance: Any, schema: Mapping[str, Any]) -> Any:
    """x-kubernetes-list-type: map: no two items share their key fields."""
    if not isinstance(instance, list):
        return
    seen: dict[tuple[Any, ...], int] = {}
    for i, item in enumerate(instance):
        if not isinstance(item, dict):
            continue
        key = tuple(item.get(k) for k in keys)
        if key in seen:
            yield jsonschema.ValidationError(
                f"Duplicate value: items {seen[key]} and {i} have the same {keys}: {key}",
                path=[i],
            )
        seen[key] = i


# OpenAPI v3.0 as the API server reads it is JSON Schema draft 4 (boolean exclusive bounds)
# plus `nullable`; Draft4Validator ignores the x-kubernetes-* keywords it does not know.
CRDSchemaValidator = jsonschema.validators.extend(
    jsonschema.Draft4Validator,
    {
        "type": _nullable("type"),
        "enum": _nullable("enum"),
        "x-kubernetes-list-map-keys": _list_map_keys,
    },
)


# The formats the API server checks in our schema (kube-openapi strfmt): RFC 3339 date-time
# and the integer ranges.
FORMATS = jsonschema.FormatChecker(formats=())
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")


def _date_time(value: object) -> bool:
    if isinstance(value, str):
        if not _RFC3339.fullmatch(value):
            raise ValueError(f"{value!r} is not an RFC 3339 date-time")
        datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    return True


def _int32(value: object) -> bool:
    return not isinstance(value, int) or -(2**31) <= value < 2**31


def _int64(value: object) -> bool:
    return not isinstance(value, int) or -(2**63) <= value < 2**63


FORMATS.checks("date-time", raises=ValueError)(_date_time)
FORMATS.checks("int32")(_int32)
FORMATS.checks("int64")(_int64)


def strict(schema: Mapping[str, Any]) -> JSON:
    """The schema with unknown fields refused wherever the API server would prune them."""
    out: JSON = {}
    for k, v in schema.items():
        if k == "properties":
            out[k] = {name: strict(sub) for name, sub in v.items()}
        elif k in ("items", "additionalProperties") and isinstance(v, Mapping):
            out[k] = strict(v)
        else:
            out[k] = v
    if (
        out.get("type") == "object"
        and "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def _path(parts: Iterator[Any] | Any) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else ("." if out else "") + str(p)
    return out


def schema_errors(schema: Mapping[str, Any], instance: Any, prefix: str = "") -> list[str]:
    """`field.path: message` for every violation; missing and unknown fields are named by
    their own path (jsonschema reports them on the parent)."""
    out = []
    validator = CRDSchemaValidator(strict(schema), format_checker=FORMATS)
    for e in validator.iter_errors(instance):
        where = _path([*([prefix] if prefix else []), *e.absolute_path])
        if e.validator == "required" and isinstance(e.instance, dict):
            for name in e.validator_value:
                if name not in e.instance:
                    out.append(f"{where}.{name}: Required value")
        elif e.validator == "additionalProperties" and isinstance(e.instance, dict):
            known = set((e.schema.get("properties") or {}).keys())
            for name in sorted(set(e.instance) - known):
                out.append(f"{where}.{name}: field not declared in schema")
        else:
            out.append(f"{where}: {e.message}")
    return sorted(out)


@functools.cache
def _committed_crd() -> JSON:
    return dict(yaml.safe_load(CRD_FILE.read_text()))


def crd_schema(crd: Mapping[str, Any] | None = None) -> JSON:
    """The openAPIV3Schema of a CRD (default: the committed manifests/base/crd.yaml)."""
    crd = crd if crd is not None else _committed_crd()
    (version,) = crd["spec"]["versions"]
    return dict(version["schema"]["openAPIV3Schema"])


def crd_errors(obj: Mapping[str, Any], crd: Mapping[str, Any] | None = None) -> list[str]:
    """Violations of an AutoscalingPolicy object against the CRD (empty: accepted)."""
    return schema_errors(crd_schema(crd), obj)


# -- structural schema rules (Kubernetes docs, "Specifying a structural schema") ------------

_JUNCTORS = ("allOf", "anyOf", "oneOf", "not")
_FORBIDDEN_IN_JUNCTORS = ("description", "type", "default", "additionalProperties", "nullable")


def structural_problems(node: Mapping[str, Any], path: str = "") -> list[str]:
    """Why the API server would refuse this schema as structural (empty: it is)."""
    out: list[str] = []
    where = path or "(root)"
    if "$ref" in node:
        out.append(f"{where}: $ref is not allowed")
    preserve = node.get("x-kubernetes-preserve-unknown-fields") is True
    if not node.get("type") and not preserve and not node.get("x-kubernetes-int-or-string"):
        out.append(f"{where}: no type")
    for j in _JUNCTORS:
        for sub in node.get(j, []) if j != "not" else [node[j]] if j in node else []:
            bad = [k for k in _FORBIDDEN_IN_JUNCTORS if k in sub]
            if bad:
                out.append(f"{where}: {j} sets {bad}")
    if "properties" in node and "additionalProperties" in node:
        out.append(f"{where}: properties and additionalProperties are mutually exclusive")
    if "additionalProperties" in node and not isinstance(node["additionalProperties"], dict):
        out.append(f"{where}: additionalProperties must be a schema, not a boolean")
    if "nullable" in node and not isinstance(node["nullable"], bool):
        out.append(f"{where}: nullable must be a boolean")
    if node.get("x-kubernetes-list-type") == "map":
        items = node.get("items") or {}
        for key in node.get("x-kubernetes-list-map-keys") or []:
            if key not in (items.get("required") or []):
                out.append(f"{where}: list-map key {key!r} is not required in the items")
    for name, sub in (node.get("properties") or {}).items():
        out += structural_problems(sub, f"{path}.{name}" if path else name)
    if isinstance(node.get("additionalProperties"), dict):
        out += structural_problems(node["additionalProperties"], f"{path}.*")
    if isinstance(node.get("items"), dict):
        out += structural_problems(node["items"], f"{path}[]")
    return out


# -- fixtures ---------------------------------------------------------------------------------


@functools.cache
def _example_policies() -> tuple[JSON, ...]:
    docs: list[JSON] = []
    for f in sorted(EXAMPLES.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(f.read_text()) if d and d.get("kind") == KIND]
    return tuple(docs)


def example_policies() -> list[JSON]:
    """Every AutoscalingPolicy in manifests/examples (fresh copies)."""
    return copy.deepcopy(list(_example_policies()))


def chat_policy() -> JSON:
    (obj,) = [d for d in example_policies() if d["spec"]["policy"]["scenario"] == "chat"]
    return copy.deepcopy(obj)


def model_errors(obj: Mapping[str, Any]) -> list[str]:
    """The controller's verdict (`workload_from_object`), as `path: message` lines."""
    from autoscaler.config import workload_from_object

    try:
        workload_from_object(obj)
    except SpecError as e:
        return [f"{p}: {m}" for p, m in e.problems]
    return []


def names(error: str, field: str) -> bool:
    """The `path: message` line is about `field` (or a part of it, as `queries.x.[key]`)."""
    path = error.partition(": ")[0]
    return path == field or path.startswith(field + ".")


def set_path(obj: JSON, path: str, value: Any) -> JSON:
    """A copy of obj with `a.b.c` set (intermediate mappings created)."""
    out = copy.deepcopy(obj)
    node = out
    *parents, leaf = path.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value
    return out


def del_path(obj: JSON, path: str) -> JSON:
    out = copy.deepcopy(obj)
    node = out
    *parents, leaf = path.split(".")
    for p in parents:
        node = node[p]
    del node[leaf]
    return out


# -- the committed CRD is the model's -------------------------------------------------------


def test_committed_crd_is_what_the_model_generates() -> None:
    # `make crd` writes it; regenerate after changing autoscaler/config.py or policies/spec.py
    assert yaml.safe_load(CRD_FILE.read_text()) == crd_manifest()
    assert CRD_FILE.read_text() == crd_yaml()


def test_crd_subcommand_prints_the_crd() -> None:
    from autoscaler.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["crd"]) == 0
    assert out.getvalue() == crd_yaml()


def test_crd_names_and_scope() -> None:
    crd = crd_manifest()
    spec = crd["spec"]
    assert crd["metadata"]["name"] == CRD_NAME == f"{PLURAL}.{GROUP}"
    assert spec["group"] == GROUP and spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == KIND and spec["names"]["plural"] == PLURAL
    assert spec["names"]["shortNames"] == SHORT_NAMES
    (version,) = spec["versions"]
    assert version["name"] == VERSION and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}


def test_crd_is_a_valid_kubernetes_object() -> None:
    # JSONSchemaProps in strict mode: an unknown keyword anywhere in the schema fails here
    kubernetes_validate.validate(crd_manifest(), K8S_VERSION, strict=True)


def test_crd_schema_is_structural() -> None:
    assert structural_problems(crd_schema(crd_manifest())) == []


@pytest.mark.parametrize(
    ("schema", "problem"),
    [
        pytest.param({"type": "object", "properties": {"a": {}}}, "a: no type", id="untyped-field"),
        pytest.param(
            {"type": "object", "anyOf": [{"type": "string"}]},
            "(root): anyOf sets ['type']",
            id="type-inside-anyOf",
        ),
        pytest.param(
            {"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": {}},
            "(root): properties and additionalProperties are mutually exclusive",
            id="properties-and-additionalProperties",
        ),
        pytest.param(
            {"type": "object", "additionalProperties": False},
            "(root): additionalProperties must be a schema, not a boolean",
            id="additionalProperties-false",
        ),
        pytest.param(
            {"type": "object", "properties": {"a": {"$ref": "#/x", "type": "object"}}},
            "a: $ref is not allowed",
            id="ref",
        ),
        pytest.param(
            {
                "type": "array",
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["name"],
                "items": {"type": "object", "properties": {"name": {"type": "string"}}},
            },
            "(root): list-map key 'name' is not required in the items",
            id="list-map-key-optional",
        ),
    ],
)
def test_structural_checker_finds_what_the_api_server_refuses(schema: JSON, problem: str) -> None:
    assert problem in structural_problems(schema)


def _leaves(node: Mapping[str, Any], defs: Mapping[str, Any], path: str) -> Iterator[str]:
    """Every property path of a pydantic JSON schema ($refs and Optionals followed)."""
    if "$ref" in node:
        node = {
            **defs[node["$ref"].split("/")[-1]],
            **{k: v for k, v in node.items() if k != "$ref"},
        }
    for branch in node.get("anyOf", []):
        if branch != {"type": "null"}:
            yield from _leaves(branch, defs, path)
    if "items" in node:
        yield from _leaves(node["items"], defs, f"{path}[]")
    for name, sub in (node.get("properties") or {}).items():
        p = f"{path}.{name}" if path else name
        yield p
        yield from _leaves(sub, defs, p)


def _structural_paths(node: Mapping[str, Any], path: str = "") -> Iterator[str]:
    if "items" in node:
        yield from _structural_paths(node["items"], f"{path}[]")
    for name, sub in (node.get("properties") or {}).items():
        p = f"{path}.{name}" if path else name
        yield p
        yield from _structural_paths(sub, p)


def test_every_model_field_is_in_the_crd() -> None:
    model = WorkloadSpec.model_json_schema(by_alias=True)
    wanted = set(_leaves(model, model["$defs"], ""))
    got = set(_structural_paths(crd_schema(crd_manifest())["properties"]["spec"]))
    # metrics.queries is a dict keyed by a Literal: its keys become properties
    assert wanted <= got, sorted(wanted - got)
    assert "metrics.queries.backlog_age_s" in got
    assert "policy.behavior.scaleUp.policies[].periodSeconds" in got  # aliases, as served


# -- the converter --------------------------------------------------------------------------


def test_optional_fields_become_nullable_and_bounds_openapi_style() -> None:
    spec = crd_schema(crd_manifest())["properties"]["spec"]
    quantile = spec["properties"]["policy"]["properties"]["forecast"]["properties"]["quantile"]
    # Optional[float] with 0 < q < 1: JSON Schema 2020-12 numbers -> OpenAPI 3.0 booleans
    assert quantile == {
        "type": "number",
        "description": quantile["description"],
        "minimum": 0,
        "exclusiveMinimum": True,
        "maximum": 1,
        "exclusiveMaximum": True,
        "nullable": True,
    }
    deadline = spec["properties"]["policy"]["properties"]["batch"]["properties"]["deadline_s"]
    assert "default" not in deadline and deadline["description"].endswith("Default: 3600.0.")


@pytest.mark.parametrize(
    ("schema", "where"),
    [
        pytest.param(
            {
                "type": "object",
                "properties": {"a": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
            },
            "a: anyOf other than [schema, null]",
            id="union-of-two-types",
        ),
        pytest.param(
            {"type": "object", "properties": {"a": {"type": "string", "format": "email"}}},
            "a: format 'email' is not known",
            id="unknown-format",
        ),
        pytest.param(
            {"type": "object", "properties": {"a": {"type": "object", "patternProperties": {}}}},
            "a: unsupported keyword(s) ['patternProperties']",
            id="unsupported-keyword",
        ),
        pytest.param(
            {"type": "object", "properties": {"b": {"$ref": "#/$defs/Missing"}}, "$defs": {}},
            "b: unresolvable $ref '#/$defs/Missing'",
            id="dangling-ref",
        ),
        pytest.param({"properties": {}}, "(root): no type", id="no-type"),
    ],
)
def test_converter_refuses_what_kubernetes_cannot_express(schema: JSON, where: str) -> None:
    with pytest.raises(UnsupportedSchema) as ei:
        structural_schema(schema)
    assert where in str(ei.value)


def test_converter_leaves_its_input_alone() -> None:
    model = WorkloadSpec.model_json_schema(by_alias=True)
    before = json.dumps(model, sort_keys=True)
    structural_schema(model)
    assert json.dumps(model, sort_keys=True) == before


# -- what the CRD accepts and refuses ---------------------------------------------------------


def test_examples_exist_for_every_scenario() -> None:
    scenarios = sorted(d["spec"]["policy"]["scenario"] for d in example_policies())
    assert scenarios == ["batch", "chat", "rag", "streaming"]


@pytest.mark.parametrize(
    "obj", [pytest.param(d, id=d["metadata"]["name"]) for d in example_policies()]
)
def test_crd_and_model_accept_every_example(obj: JSON) -> None:
    assert crd_errors(obj) == []
    assert model_errors(obj) == []


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        # a negative bound
        pytest.param(
            lambda o: set_path(o, "spec.policy.max_replicas", -3),
            "spec.policy.max_replicas",
            id="negative-max-replicas",
        ),
        # not one of chat, rag, streaming, batch
        pytest.param(
            lambda o: set_path(o, "spec.policy.scenario", "chatbot"),
            "spec.policy.scenario",
            id="unknown-scenario",
        ),
        # the on-demand Deployment is the one target that is required
        pytest.param(
            lambda o: del_path(o, "spec.targets.on_demand"),
            "spec.targets.on_demand",
            id="missing-on-demand-target",
        ),
        # exclusive bound: 0 < rps_per_replica
        pytest.param(
            lambda o: set_path(o, "spec.policy.capacity.rps_per_replica", 0),
            "spec.policy.capacity.rps_per_replica",
            id="zero-capacity",
        ),
        # exclusive bound: percentile < 100
        pytest.param(
            lambda o: set_path(o, "spec.policy.slo.percentile", 100),
            "spec.policy.slo.percentile",
            id="percentile-100",
        ),
        # a typo: unknown fields are refused, not silently dropped
        pytest.param(
            lambda o: set_path(o, "spec.policy.max_replica", 5),
            "spec.policy.max_replica",
            id="misspelled-field",
        ),
        # metrics.queries keys are the metric families
        pytest.param(
            lambda o: set_path(o, "spec.metrics.queries", {"latency": "sum(x)"}),
            "spec.metrics.queries.latency",
            id="unknown-metric-family",
        ),
        # a string where an integer belongs
        pytest.param(
            lambda o: set_path(o, "spec.policy.min_replicas", "two"),
            "spec.policy.min_replicas",
            id="string-for-integer",
        ),
        # null only where the model says Optional
        pytest.param(
            lambda o: set_path(o, "spec.policy.min_replicas", None),
            "spec.policy.min_replicas",
            id="null-for-required-number",
        ),
        # HPA rate policy type
        pytest.param(
            lambda o: set_path(
                o,
                "spec.policy.behavior",
                {"scaleUp": {"policies": [{"type": "Nodes", "value": 1, "periodSeconds": 60}]}},
            ),
            "spec.policy.behavior.scaleUp.policies[0].type",
            id="unknown-hpa-policy-type",
        ),
    ],
)
def test_crd_and_model_refuse_broken_objects_naming_the_field(mutate: Any, field: str) -> None:
    obj = mutate(chat_policy())
    crd = crd_errors(obj)
    assert any(names(e, field) for e in crd), crd
    model = model_errors(obj)
    assert any(names(e, field) for e in model), model


def test_duplicate_schedule_names_are_refused_by_both() -> None:
    obj = chat_policy()
    entry = obj["spec"]["policy"]["schedules"][0]
    obj["spec"]["policy"]["schedules"] = [entry, dict(entry)]
    assert any("Duplicate value" in e for e in crd_errors(obj))
    assert any("duplicate entry name" in e for e in model_errors(obj))


def test_optional_targets_accept_null() -> None:
    obj = set_path(chat_policy(), "spec.targets.warm", None)
    assert crd_errors(obj) == [] and model_errors(obj) == []


def _bounded_leaves(node: Mapping[str, Any], path: str) -> Iterator[tuple[str, JSON]]:
    for name, sub in (node.get("properties") or {}).items():
        p = f"{path}.{name}"
        if sub.get("type") in ("number", "integer") and ("minimum" in sub or "maximum" in sub):
            yield p, sub
        if sub.get("type") == "object":
            yield from _bounded_leaves(sub, p)


def _bound_cases() -> list[Any]:
    spec = crd_schema(crd_manifest())["properties"]["spec"]
    cases = []
    for path, leaf in _bounded_leaves(spec, "spec"):
        step = 1 if leaf["type"] == "integer" else 1e-6
        for side, sign in (("minimum", -1), ("maximum", 1)):
            if side not in leaf:
                continue
            exclusive = leaf.get("exclusive" + side[0].upper() + side[1:]) is True
            bound = leaf[side]
            outside = bound if exclusive else bound + sign * step
            inside = bound - sign * step if exclusive else bound
            cases.append(pytest.param(path, outside, inside, id=f"{path}-{side}"))
    return cases


@pytest.mark.parametrize(("path", "outside", "inside"), _bound_cases())
def test_every_bound_agrees_with_the_model(path: str, outside: float, inside: float) -> None:
    base = chat_policy()
    # out of bounds: both refuse and both name the field
    bad = set_path(base, path, outside)
    assert any(names(e, path) for e in crd_errors(bad)), (path, outside)
    assert any(names(e, path) for e in model_errors(bad)), (path, outside)
    # on the allowed side of the bound: the CRD accepts (the model may still refuse on a
    # rule across fields, e.g. min_replicas <= max_replicas, which it reports on the object)
    assert crd_errors(set_path(base, path, inside)) == [], (path, inside)


def test_bound_cases_cover_the_policy() -> None:
    ids = {c.id for c in _bound_cases()}
    assert len(ids) > 40
    assert {"spec.policy.max_replicas-minimum", "spec.policy.slo.percentile-maximum"} <= ids


# -- status: what the controller writes fits the schema ------------------------------------


def test_printer_columns_point_at_schema_fields() -> None:
    schema = crd_schema(crd_manifest())
    types = {"integer": "integer", "string": "string", "number": "number", "boolean": "boolean"}
    names = [c["name"] for c in PRINTER_COLUMNS]
    assert names[0] == "Scenario" and names[-1] == "Age" and "Reason" in names
    for col in PRINTER_COLUMNS:
        if col["jsonPath"] == ".metadata.creationTimestamp":
            continue
        node = schema
        for part in col["jsonPath"].strip(".").split("."):
            node = node["properties"][part]
        assert types[node["type"]] == col["type"], col


def _wait(cond: Any, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return bool(cond())


def test_status_the_controller_writes_fits_the_status_schema() -> None:
    from autoscaler.adapters.kube import CustomResourceSource, KubeClusterView, KubeStateStore
    from autoscaler.config import workload_from_object
    from policies.types import Decision
    from tests.kube_apiserver import KubeAPIServer

    status_schema = crd_schema(crd_manifest())["properties"]["status"]
    obj = chat_policy()
    docs = list(yaml.safe_load_all((EXAMPLES / "chat.yaml").read_text()))
    with KubeAPIServer() as server:
        for d in docs:
            if d["kind"] == "Deployment":
                d = copy.deepcopy(d)
                d["spec"]["replicas"] = 2
                server.put(d)
        server.put(obj)
        broken = set_path(obj, "spec.policy.min_replicas", 50)  # > max_replicas: invalid
        broken["metadata"] = {"name": "chat-broken", "namespace": "inference"}
        server.put(broken)
        api = server.api_client()
        view = KubeClusterView(api, watch_timeout_s=2.0).start()
        source = CustomResourceSource(api, watch_timeout_s=2.0, request_timeout_s=5.0)
        store = KubeStateStore(api, cluster=view, min_interval_s=0.0)
        try:
            assert view.wait_synced(5.0)
            workload = workload_from_object(server.get(PLURAL, "inference", "chat-llama") or {})
            store.observe(server.get(PLURAL, "inference", "chat-llama") or {})
            nan = float("nan")
            decision = Decision(2, 3, 1, 5, 31.2, nan, 44.9, "ScaleUpForecast", "3 -> 5", False)
            conditions = [
                {"type": "Ready", "status": "True", "reason": "ScaleUpForecast", "message": "ok"},
                {"type": "Holding", "status": "False", "reason": "ScaleUpForecast", "message": ""},
            ]
            state = {"level": [1.5, 2.0], "history": {"t_s": [1.0], "replicas": [3]}}
            store.save(workload, state, decision, conditions, 100.0)
            assert store.flush(5.0)  # writes go through a background worker
            assert store.n_writes == 1, store.n_failed
            # an invalid object gets Ready=False/InvalidSpec from the source
            workloads, errors = source.load()
            assert [w.name for w in workloads] == ["chat-llama"] and len(errors) == 1
            assert _wait(lambda: "status" in (server.get(PLURAL, "inference", "chat-broken") or {}))
        finally:
            store.close()
            source.stop()
            view.stop()
        written = (server.get(PLURAL, "inference", "chat-llama") or {})["status"]
        invalid = (server.get(PLURAL, "inference", "chat-broken") or {})["status"]
    # every field the controller writes is declared (nothing would be pruned), values fit
    assert schema_errors(status_schema, written, "status") == []
    assert schema_errors(status_schema, invalid, "status") == []
    assert written["desiredReplicas"] == {"spot": 2, "onDemand": 3, "warm": 1, "total": 5}
    assert written["currentReplicas"]["spot"] == 2
    # NaN goes out as null: the field is nullable, so the API server keeps the null rather
    # than pruning it (a null in a field without `nullable` would be dropped)
    assert written["lastDecision"].get("forecast") is None
    assert written["policyState"] == state  # kept whole: preserve-unknown-fields
    assert invalid["conditions"][0]["reason"] == "InvalidSpec"


def test_status_schema_refuses_undeclared_fields() -> None:
    # the check above can fail: an undeclared field is reported by name
    status_schema = crd_schema(crd_manifest())["properties"]["status"]
    errors = schema_errors(status_schema, {"desiredReplicas": {"gpu": 1}}, "status")
    assert errors == ["status.desiredReplicas.gpu: field not declared in schema"]


@pytest.mark.parametrize(
    ("status", "error"),
    [
        # a time that is not RFC 3339
        pytest.param(
            {"lastDecision": {"time": "yesterday"}},
            "status.lastDecision.time: 'yesterday' is not a 'date-time'",
            id="bad-time",
        ),
        # a condition status outside True/False/Unknown
        pytest.param(
            {
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "Yes",
                        "reason": "Ok",
                        "message": "",
                        "lastTransitionTime": "2025-01-01T00:00:00Z",
                    }
                ]
            },
            "status.conditions[0].status: 'Yes' is not one of ['True', 'False', 'Unknown']",
            id="bad-condition-status",
        ),
        # replicas beyond int32
        pytest.param(
            {"desiredReplicas": {"spot": 2**31}},
            "status.desiredReplicas.spot: 2147483648 is not a 'int32'",
            id="replicas-beyond-int32",
        ),
    ],
)
def test_status_schema_checks_values(status: JSON, error: str) -> None:
    status_schema = crd_schema(crd_manifest())["properties"]["status"]
    assert error in schema_errors(status_schema, status, "status")
