"""Workload configuration: one pydantic model behind the CRD, the YAML file and the simulator.

One `AutoscalingPolicy` custom resource (group `gpuautoscaler.io`, version `v1alpha1`) per
workload; its `.spec` is `WorkloadSpec`. The same objects load from a YAML file (`--config`)
for use without CRDs: either `kind: AutoscalingPolicy` documents (the very files in
manifests/examples) or one document `{workloads: [{name, namespace, spec}, ...]}`.

Loading validates every workload and keeps the good ones: `load_workloads` returns the valid
workloads and one `SpecError` per invalid one, each naming every bad field.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NewType

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from policies.spec import (
    PROBLEM_SEP,
    PolicySpec,
    SpecError,
    problems_from_validation_error,
)

GROUP = "gpuautoscaler.io"
VERSION = "v1alpha1"
KIND = "AutoscalingPolicy"
PLURAL = "autoscalingpolicies"
SINGULAR = "autoscalingpolicy"
SHORT_NAMES = ["gpuap"]

WorkloadKey = NewType("WorkloadKey", str)  # "<namespace>/<name>"

MetricFamily = Literal[
    "rps", "queue", "running", "tokens_ps", "streams", "backlog", "backlog_age_s"
]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class TargetsSpec(_Model):
    """Names of the Deployments (in the workload's namespace) whose replicas we set.

    `on_demand` is required; without `spot` every serving replica is on-demand; without
    `warm` no warm pool is kept (placeholder pods of a low PriorityClass)."""

    on_demand: str = Field(min_length=1, description="Deployment on on-demand GPU nodes.")
    spot: str | None = Field(default=None, min_length=1, description="Deployment on spot nodes.")
    warm: str | None = Field(
        default=None, min_length=1, description="Warm-pool placeholder Deployment."
    )


class MetricsSpec(_Model):
    """Where the workload's load comes from.

    A preset names the inference server (algorithms.md section 5); `queries` overrides or
    adds PromQL per metric family. The MetricsSource runs ONE query per family per tick for
    all workloads, grouped by `namespace_label` and `workload_label`; series are matched to
    this workload by `workload` (defaults to the object's name)."""

    preset: Literal["vllm", "triton", "tgi", "dcgm", "custom"] = "vllm"
    workload: str | None = Field(
        default=None, description="Value of workload_label on the series; default: the name."
    )
    workload_label: str = Field(default="workload", min_length=1)
    namespace_label: str = Field(default="namespace", min_length=1)
    queries: dict[MetricFamily, str] = Field(
        default_factory=dict,
        description="PromQL per family; must aggregate by (namespace_label, workload_label).",
    )
    rate_window_s: int = Field(default=60, ge=5, le=3600, description="rate() window.")
    stale_after_s: float = Field(
        default=60.0, gt=0, description="Newest sample older than this marks the series stale."
    )


class CostSpec(_Model):
    """Prices for reports and the simulator (USD)."""

    on_demand_usd_per_gpu_hour: float = Field(default=6.9, gt=0)
    spot_price_ratio: float = Field(default=0.4, gt=0, le=1)
    gpus_per_replica: int = Field(default=1, ge=1)


class WorkloadSpec(_Model):
    """The `.spec` of an AutoscalingPolicy: targets, metrics, the policy and prices."""

    targets: TargetsSpec
    metrics: MetricsSpec = Field(default_factory=MetricsSpec)
    policy: PolicySpec
    cost: CostSpec = Field(default_factory=CostSpec)

    @model_validator(mode="after")
    def _schedules_parse(self) -> WorkloadSpec:
        # cron and time zones are checked here, at the boundary, with the library that
        # evaluates them (policies/ stays free of scheduler imports)
        from autoscaler.schedules import entry_problems

        problems = []
        names = set()
        for i, entry in enumerate(self.policy.schedules):
            if entry.name in names:
                problems.append(f"policy.schedules[{i}].name: duplicate entry name {entry.name!r}")
            names.add(entry.name)
            for fld, msg in entry_problems(entry):
                problems.append(f"policy.schedules[{i}].{fld}: {msg}")
        if problems:
            raise ValueError(PROBLEM_SEP.join(problems))
        return self


_DNS1123 = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class Workload(_Model):
    """One workload: its identity and spec."""

    namespace: str = Field(min_length=1, max_length=63, pattern=_DNS1123)
    name: str = Field(min_length=1, max_length=253)
    spec: WorkloadSpec

    @field_validator("name")
    @classmethod
    def _name_is_dns(cls, v: str) -> str:
        import re

        if not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", v):
            raise ValueError("must be a DNS subdomain name (lowercase letters, digits, '-', '.')")
        return v

    @property
    def key(self) -> WorkloadKey:
        return WorkloadKey(f"{self.namespace}/{self.name}")

    @property
    def series_name(self) -> str:
        """The workload label value its metric series carry."""
        return self.spec.metrics.workload or self.name


def parse_workload(namespace: Any, name: Any, spec: Any, source: str = "workload") -> Workload:
    """Validate one workload or raise a SpecError naming every bad field (paths from spec)."""
    try:
        return Workload.model_validate({"namespace": namespace, "name": name, "spec": spec})
    except ValidationError as err:
        raise SpecError(problems_from_validation_error(err), source) from None


def workload_from_object(obj: Mapping[str, Any]) -> Workload:
    """An AutoscalingPolicy object (dict as the API returns it) to a Workload."""
    meta = obj.get("metadata") or {}
    ns, name = meta.get("namespace", "default"), meta.get("name")
    return parse_workload(ns, name, obj.get("spec"), f"{KIND} {ns}/{name}")


@dataclass(frozen=True)
class LoadResult:
    workloads: list[Workload]
    errors: list[SpecError]


def _documents(path: Path) -> Iterable[Any]:
    try:
        text = path.read_text()
    except OSError as e:
        raise SpecError([("(file)", f"cannot read {path}: {e.strerror}")], str(path)) from e
    try:
        return [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        raise SpecError([("(file)", f"not valid YAML: {e}")], str(path)) from e


def load_workloads(paths: Iterable[str | Path]) -> LoadResult:
    """Load workloads from YAML files; invalid ones are reported, valid ones kept.

    Raises SpecError only when a file cannot be read or parsed at all, or holds no workload.
    """
    good: list[Workload] = []
    errors: list[SpecError] = []
    seen: set[str] = set()
    for p in paths:
        path = Path(p)
        docs = list(_documents(path))
        found = 0
        for i, doc in enumerate(docs):
            if not isinstance(doc, dict):
                errors.append(SpecError([(f"[{i}]", "document is not a mapping")], str(path)))
                continue
            items: list[tuple[Any, Any, Any, str]] = []
            if doc.get("kind") == KIND:
                meta = doc.get("metadata") or {}
                items.append(
                    (
                        meta.get("namespace", "default"),
                        meta.get("name"),
                        doc.get("spec"),
                        f"{path}: {KIND} {meta.get('name')}",
                    )
                )
            elif "workloads" in doc:
                for j, w in enumerate(doc.get("workloads") or []):
                    if not isinstance(w, dict):
                        errors.append(SpecError([(f"workloads[{j}]", "not a mapping")], str(path)))
                        continue
                    items.append(
                        (
                            w.get("namespace", "default"),
                            w.get("name"),
                            w.get("spec"),
                            f"{path}: workloads[{j}] ({w.get('name')})",
                        )
                    )
            elif doc.get("kind") is not None:
                continue  # other Kubernetes objects in the same file (Deployments, ...)
            else:
                errors.append(
                    SpecError(
                        [(f"[{i}]", f"expected kind: {KIND} or a 'workloads' list")], str(path)
                    )
                )
                continue
            for ns, name, spec, where in items:
                found += 1
                try:
                    w = parse_workload(ns, name, spec, where)
                except SpecError as e:
                    errors.append(e)
                    continue
                if w.key in seen:
                    errors.append(SpecError([("name", f"duplicate workload {w.key}")], where))
                    continue
                seen.add(w.key)
                good.append(w)
        if found == 0 and not errors:
            raise SpecError([("(file)", f"no {KIND} or workloads found")], str(path))
    return LoadResult(good, errors)


def dump_workloads(workloads: Iterable[Workload]) -> str:
    """YAML of AutoscalingPolicy objects for these workloads (round-trips through load)."""
    docs = [
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "metadata": {"name": w.name, "namespace": w.namespace},
            "spec": w.spec.model_dump(mode="json", by_alias=True, exclude_none=True),
        }
        for w in workloads
    ]
    return yaml.safe_dump_all(docs, sort_keys=False)
