"""What KEDA is told about one workload's pool: request parsing and the replica metric.

Shared by the gRPC external scaler (`autoscaler.keda.server`) and the metrics-api JSON
route (`autoscaler.keda.http`), so both answer the same numbers for the same request.

The metric
----------
KEDA turns our MetricSpec into an HPA `External` metric with an `AverageValue` target T and
the HPA computes (algorithms.md 1.2, `GetExternalPerPodMetricReplicas`)::

    ratio    = V / (T * current)            # V: the value we report, current: HPA's replicas
    replicas = current            if 0.9 <= ratio <= 1.1      (tolerance band, inclusive)
             = ceil(V / T)        otherwise

with V and T taken as integer milli-units (KEDA formats floats with 3 decimals). We fix
T = 1 and report V in the half-open interval (desired - 1, desired], so `ceil(V / T)` is
exactly `desired` whenever the HPA leaves its tolerance band: the HPA lands on the
controller's count or stays where it is, never on a third value. Scaling T changes nothing
(the ratio is scale-free); where V sits inside that interval does:

- scale-up (desired > current): V = desired, the largest ratio the interval allows;
- scale-down (desired < current): V = desired - 1 + 0.01, the smallest ratio (0.01 survives
  both KEDA's `int64(v * 1000)` truncation and its `%.3f` rounding);
- otherwise V = desired; desired 0 gives V = 0 in both the float and the int field.

So the HPA lands exactly in one sync when `desired > 1.1 * current` (up) or
`desired - 0.99 < 0.9 * current` (down). Pairs between those bounds only exist for
current >= 10 (below that a change of one replica is more than 10%). In that dead band no
value of V can move the HPA in one sync (every V with ceil(V) = desired has a ratio inside
the band), so:

- `deadBand: hold` (default): the HPA stays at `current`: at most 10% short on a scale-up,
  at most 10% (+1 replica) over on a scale-down.
- `deadBand: overshoot`: report u = `overshoot_replicas(current, desired)`, the smallest
  count above both that the HPA reaches in one sync and from which the down value lands on
  `desired`; the next sync (the loop then sees current = u) lands there. Two syncs when
  the HPA may scale down at once (`advanced.horizontalPodAutoscalerConfig.behavior.scaleDown.
  stabilizationWindowSeconds: 0`), otherwise after that window. It never goes below
  `desired`; it runs up to ~23% extra replicas for that one step.
- With configurable HPA tolerance (HPAConfigurableTolerance, Kubernetes 1.33+),
  `behavior.scaleUp.tolerance: 0` and `behavior.scaleDown.tolerance: 0` remove the band:
  every pair lands in one sync (leave `deadBand: hold`; overshoot assumes tolerance 0.1).

`current` is the pool's spec.replicas the control loop saw in its last tick
(`DecisionRecord.current`); when unknown, V = desired.

Activity (IsActive)
-------------------
Active when the pool's desired replicas > 0, or when the workload has demand in the newest
sample (`DecisionRecord.active`) and the pool is its primary serving pool (spot when the
workload has a spot target, else on_demand). Demand does not activate the other pools: KEDA's
HPA never goes below 1 replica, so an active pool the controller wants at 0 would keep one
GPU replica running for nothing.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Literal

from autoscaler.config import Workload
from autoscaler.protocols import DecisionRecord
from autoscaler.store import DecisionStore
from policies.hpa import DEFAULT_TOLERANCE, Tolerances

Pool = Literal["spot", "on_demand", "warm"]
DeadBand = Literal["hold", "overshoot"]

# scalerMetadata keys read; every other key (scalerAddress, enableTLS, ...) is ignored.
KEY_WORKLOAD = "workload"
KEY_POOL = "pool"
KEY_DEAD_BAND = "deadBand"
METADATA_KEYS: tuple[str, ...] = (KEY_WORKLOAD, KEY_POOL, KEY_DEAD_BAND)

POOL_NAMES: dict[str, Pool] = {
    "spot": "spot",
    "on_demand": "on_demand",
    "on-demand": "on_demand",
    "warm": "warm",
}
DEAD_BANDS: tuple[DeadBand, ...] = ("hold", "overshoot")

TARGET_PER_REPLICA = 1.0  # T: one unit of the metric per replica
# V = desired - DOWN_OFFSET on a scale-down: ceil(V) = desired with the smallest ratio that
# survives KEDA's milli-unit conversion (10 milli above desired - 1).
DOWN_OFFSET = 0.99
# The HPA controller's default --horizontal-pod-autoscaler-tolerance (both directions).
HPA_TOLERANCE = DEFAULT_TOLERANCE
_TOLERANCES = Tolerances(scale_down=HPA_TOLERANCE, scale_up=HPA_TOLERANCE)
METRIC_PREFIX = "gpu-autoscaler-"

_NAMESPACE_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_NAME_RE = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")


class KedaRequestError(Exception):
    """A request the scaler cannot answer; `grpc_code` and `http_status` say how to reply."""

    grpc_code: ClassVar[str] = "INTERNAL"  # a grpc.StatusCode member name
    http_status: ClassVar[int] = 500


class InvalidScalerMetadata(KedaRequestError):
    """A known scalerMetadata key has a bad value, or no workload can be named at all."""

    grpc_code = "INVALID_ARGUMENT"
    http_status = 422


class PoolNotConfigured(KedaRequestError):
    """The pool asked for has no Deployment in the workload's spec.targets."""

    grpc_code = "FAILED_PRECONDITION"
    http_status = 422


class WorkloadNotFound(KedaRequestError):
    """No decision for that workload in the store."""

    grpc_code = "NOT_FOUND"
    http_status = 404


class NoDecisionYet(KedaRequestError):
    """The control loop has not finished its first tick (the store is empty and unversioned)."""

    grpc_code = "UNAVAILABLE"
    http_status = 503


@dataclass(frozen=True)
class ScalerQuery:
    """One validated request: which workload, which pool (None = its default), dead band."""

    namespace: str
    name: str
    pool: Pool | None
    dead_band: DeadBand

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def parse_query(ref_namespace: str, ref_name: str, metadata: Mapping[str, str]) -> ScalerQuery:
    """Validate a ScaledObjectRef's identity and scalerMetadata into a ScalerQuery.

    `metadata["workload"]` ("<namespace>/<name>") wins over the ref's namespace/name. Empty
    values count as unset (KEDA templating often yields ""). Unknown keys are ignored.
    Raises InvalidScalerMetadata naming every bad key and value at once.
    """
    problems: list[str] = []
    workload = metadata.get(KEY_WORKLOAD, "").strip()
    namespace, name = ref_namespace, ref_name
    if workload:
        parts = workload.split("/")
        if len(parts) != 2 or not all(parts):
            problems.append(
                f"scalerMetadata[{KEY_WORKLOAD!r}]={workload!r}: expected '<namespace>/<name>',"
                " e.g. 'llm/chat'"
            )
            namespace = name = ""
        else:
            namespace, name = parts
            where = f"scalerMetadata[{KEY_WORKLOAD!r}]={workload!r}"
            problems.extend(_identity_problems(namespace, name, where))
    elif not ref_namespace or not ref_name:
        problems.append(
            f"no workload: scalerMetadata has no {KEY_WORKLOAD!r} and the ScaledObjectRef has"
            f" namespace={ref_namespace!r} name={ref_name!r}; set metadata"
            f" {KEY_WORKLOAD}: '<namespace>/<name>'"
        )
    else:
        where = f"ScaledObjectRef namespace={ref_namespace!r} name={ref_name!r}"
        problems.extend(_identity_problems(ref_namespace, ref_name, where))

    pool: Pool | None = None
    raw_pool = metadata.get(KEY_POOL, "").strip()
    if raw_pool:
        found = POOL_NAMES.get(raw_pool)
        if found is None:
            problems.append(
                f"scalerMetadata[{KEY_POOL!r}]={raw_pool!r}: must be one of spot, on_demand"
                " (or on-demand), warm"
            )
        pool = found

    dead_band: DeadBand = "hold"
    raw_band = metadata.get(KEY_DEAD_BAND, "").strip()
    if raw_band:
        if raw_band == "overshoot":
            dead_band = "overshoot"
        elif raw_band != "hold":
            problems.append(
                f"scalerMetadata[{KEY_DEAD_BAND!r}]={raw_band!r}: must be one of"
                f" {', '.join(DEAD_BANDS)}"
            )
    if problems:
        raise InvalidScalerMetadata("; ".join(problems))
    return ScalerQuery(namespace=namespace, name=name, pool=pool, dead_band=dead_band)


def _identity_problems(namespace: str, name: str, where: str) -> list[str]:
    out = []
    if len(namespace) > 63 or not _NAMESPACE_RE.fullmatch(namespace):
        out.append(f"{where}: namespace {namespace!r} is not a DNS-1123 label")
    if len(name) > 253 or not _NAME_RE.fullmatch(name):
        out.append(f"{where}: name {name!r} is not a DNS subdomain name")
    return out


def primary_pool(workload: Workload) -> Pool:
    """The pool a ScaledObject without `pool` scales: spot if the workload has one."""
    return "spot" if workload.spec.targets.spot else "on_demand"


def resolve_pool(workload: Workload, pool: Pool | None) -> Pool:
    """The pool to serve; raises PoolNotConfigured when its Deployment is not in the spec."""
    if pool is None:
        return primary_pool(workload)
    targets = workload.spec.targets
    if (pool == "spot" and not targets.spot) or (pool == "warm" and not targets.warm):
        raise PoolNotConfigured(
            f"workload {workload.key} has no {pool} Deployment (spec.targets.{pool} is unset);"
            f" set scalerMetadata {KEY_POOL}: on_demand, or add spec.targets.{pool}"
        )
    return pool


def metric_name(pool: Pool) -> str:
    """The metric name KEDA sees (it prefixes `s<trigger index>-` for the HPA)."""
    return METRIC_PREFIX + pool.replace("_", "-")


def hpa_ratio(value: float, target: float, current: int) -> float:
    """The HPA's AverageValue ratio with KEDA's milli-unit conversion (3 decimals)."""
    return round(value * 1000) / (round(target * 1000) * float(current))


def overshoot_replicas(current: int, desired: int) -> int:
    """Smallest count u above both `current` and `desired` that the HPA reaches from
    `current` in one sync, and from which the down value (desired - 0.99) brings it to
    `desired` in one more: u / current > 1.1 and (desired - 0.99) / u < 0.9."""
    down = desired - DOWN_OFFSET
    # Start just below both bounds and step over float edges (at most a few steps).
    u = max(
        max(current, desired) + 1,
        math.floor(current * (1 + HPA_TOLERANCE)),
        math.floor(down / (1 - HPA_TOLERANCE)),
    )
    while _TOLERANCES.is_within(hpa_ratio(u, TARGET_PER_REPLICA, current)) or (
        hpa_ratio(down, TARGET_PER_REPLICA, u) >= 1.0 - HPA_TOLERANCE
    ):
        u += 1
    return u


def replica_metric_value(desired: int, current: int | None, dead_band: DeadBand = "hold") -> float:
    """V such that the HPA with AverageValue target 1 lands on `desired` (module docstring).

    desired: replicas the controller wants for the pool (>= 0); current: the pool's replicas
    now (None or 0 when unknown or scaled to zero). Returns 0.0 for desired <= 0. With
    dead_band "overshoot", a pair inside the HPA's tolerance band gets `overshoot_replicas`.
    """
    if desired <= 0:
        return 0.0
    if current is None or current <= 0 or desired == current:
        return float(desired)
    # ceil(value) == desired either way; pick the end of (desired - 1, desired] that moves
    # the ratio furthest from 1 in the direction of the change.
    value = float(desired) if desired > current else round(desired - DOWN_OFFSET, 3)
    if dead_band == "overshoot" and _TOLERANCES.is_within(
        hpa_ratio(value, TARGET_PER_REPLICA, current)
    ):
        return float(overshoot_replicas(current, desired))
    return value


@dataclass(frozen=True)
class ScalerView:
    """What KEDA is told for one (workload, pool): the served record, flattened.

    desired_replicas: the decision for the pool; current_replicas: the pool's spec.replicas
    seen in the last tick (None when the loop had no cluster view); value / target: the
    metric (value in replicas, target 1 per replica).
    """

    workload: str
    pool: Pool
    metric_name: str
    desired_replicas: int
    current_replicas: int | None
    value: float
    target: float
    active: bool
    held: bool
    stale: bool
    reason: str


def view_of(record: DecisionRecord, query: ScalerQuery) -> ScalerView:
    """Flatten a stored record for a query (the held decision is served as stored)."""
    pool = resolve_pool(record.workload, query.pool)
    desired = max(0, int(getattr(record.decision, pool)))
    current = record.current.get(pool)
    active = desired > 0 or (record.active and pool == primary_pool(record.workload))
    return ScalerView(
        workload=record.key,
        pool=pool,
        metric_name=metric_name(pool),
        desired_replicas=desired,
        current_replicas=None if current is None else int(current),
        value=replica_metric_value(desired, current, query.dead_band),
        target=TARGET_PER_REPLICA,
        active=active,
        held=record.decision.held,
        stale=record.stale,
        reason=record.decision.reason,
    )


def lookup(store: DecisionStore, query: ScalerQuery) -> ScalerView:
    """The view for a query from the store; raises NoDecisionYet, WorkloadNotFound or
    PoolNotConfigured."""
    record = store.get(query.key)
    if record is None:
        if store.version == 0:
            raise NoDecisionYet(
                "no decisions yet: the control loop has not finished its first tick; retry"
            )
        raise WorkloadNotFound(
            f"workload {query.key} is not managed by gpu-autoscaler: create an"
            f" AutoscalingPolicy {query.name!r} in namespace {query.namespace!r} (it appears"
            f" after the next control tick), or point scalerMetadata {KEY_WORKLOAD!r} at an"
            " existing one ('<namespace>/<name>')"
        )
    return view_of(record, query)
