"""Kubernetes HPA semantics, exactly, as pure functions a reader can check against upstream.

Every public function names the kubernetes/kubernetes function it mirrors, in
`pkg/controller/podautoscaler/replica_calculator.go` (RC), `horizontal.go` (HC),
`metrics/utilization.go` (UT) or `pkg/apis/autoscaling/v2/defaults.go` (DF); the tests in
`tests/test_hpa.py` replay rows of upstream's own tables (`replica_calculator_test.go`,
`horizontal_test.go`).

Why two implementations of the behavior stage. The scalar functions (`normalize_desired_*`,
`calculate_scale_*_limit`, `HPAHistory`) read like upstream, one workload at a time, and are
what the baselines use. `apply_behavior` does the same for thousands of workloads in one numpy
pass over bounded ring buffers (`BehaviorState`), which is what `policies.decide` needs. A
hypothesis property test holds the two equal; upstream's history lists grow without bound, the
rings do not, and that is the only place they may differ (see `BehaviorState`).

Conventions. Time is float seconds on the caller's clock, passed in (`now_s`); nothing here reads
a clock, and it must not decrease from one call to the next. Go's `t.After(cutoff)` is
`t > cutoff` and `t.Before(cutoff)` is `t < cutoff`, so a record exactly on a cutoff is neither
(legacy stabilization, which only asks Before, counts it). Metric values of the replica
calculator are milli-units as int (Go int64), as the Kubernetes tests state them. Replica counts
are int.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from policies.spec import BehaviorSpec, ScalingPolicySpec, ScalingRulesSpec

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
B = NDArray[np.bool_]

MAX_INT32 = 2**31 - 1
MIN_INT32 = -(2**31)

# Flag defaults (config/v1alpha1/defaults.go).
DEFAULT_TOLERANCE = 0.1
DEFAULT_DOWNSCALE_STABILIZATION_S = 300.0
DEFAULT_SYNC_PERIOD_S = 15.0
DEFAULT_CPU_INITIALIZATION_PERIOD_S = 300.0
DEFAULT_INITIAL_READINESS_DELAY_S = 30.0
# Legacy (no behavior) scale-up limit: max(2 * current, 4) (HC scaleUpLimitFactor/Minimum).
SCALE_UP_LIMIT_FACTOR = 2.0
SCALE_UP_LIMIT_MINIMUM = 4.0

# ScalingLimited condition reasons (HC convertDesiredReplicasWith*).
SCALE_UP_LIMIT = "ScaleUpLimit"
TOO_MANY_REPLICAS = "TooManyReplicas"
SCALE_DOWN_LIMIT = "ScaleDownLimit"
TOO_FEW_REPLICAS = "TooFewReplicas"
DESIRED_WITHIN_RANGE = "DesiredWithinRange"
# AbleToScale condition reasons (HC stabilizeRecommendation*).
READY_FOR_NEW_SCALE = "ReadyForNewScale"
SCALE_UP_STABILIZED = "ScaleUpStabilized"
SCALE_DOWN_STABILIZED = "ScaleDownStabilized"
# reconcileAutoscaler gates (HC); the last two are ours, upstream only logs a sentence.
SCALING_DISABLED = "ScalingDisabled"
ABOVE_MAX_REPLICAS = "AboveMaxReplicas"
BELOW_MIN_REPLICAS = "BelowMinReplicas"
COMPUTE_FROM_METRICS = "ComputeFromMetrics"
HELD = "Held"

POLICY_PODS = "Pods"
POLICY_PERCENT = "Percent"
SELECT_MAX = "Max"
SELECT_MIN = "Min"
SELECT_DISABLED = "Disabled"


# --------------------------------------------------------------------------------------------
# Tolerance
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tolerances:
    """Usage-ratio band inside which the HPA keeps the current count (RC `Tolerances`).

    Both bounds are inclusive: `(1 - scale_down) <= ratio <= (1 + scale_up)`. Defaults are the
    `--horizontal-pod-autoscaler-tolerance` flag (0.1); `behavior.scale{Up,Down}.tolerance`
    overrides each side (KEP-4951).
    """

    scale_down: float = DEFAULT_TOLERANCE
    scale_up: float = DEFAULT_TOLERANCE

    def is_within(self, usage_ratio: float) -> bool:
        """RC `Tolerances.isWithin`. NaN is never within (Go compares false too)."""
        return (1.0 - self.scale_down) <= usage_ratio <= (1.0 + self.scale_up)


# --------------------------------------------------------------------------------------------
# Replica calculator
# --------------------------------------------------------------------------------------------


class MetricError(ValueError):
    """The replica calculator could not compute a count; upstream returns an error and the HPA
    holds (ScalingActive=False). The message is upstream's."""


@dataclass(frozen=True)
class PodInfo:
    """One pod as the replica calculator sees it.

    value: the pod's metric sample in milli-units (None: the metrics API returned none).
    request: the pod's resource request in milli-units (resource metrics only; None = unset,
      which upstream rejects with "missing request for ...").
    phase: Pending, Running, Succeeded, Failed or Unknown.
    ready: status of the Ready condition; None = the pod has no Ready condition.
    deleting: the pod has a deletionTimestamp.
    start_time_s, ready_transition_s, metric_time_s, metric_window_s: read only by the CPU
      readiness rules (`CPUReadiness`); start_time_s None = StartTime unset. The defaults
      describe a pod started and Ready long ago with a sample older than one window after it,
      which is what upstream's tests build when they leave these fields unset (zero times).
    """

    value: int | None = None
    request: int | None = None
    phase: str = "Running"
    ready: bool | None = True
    deleting: bool = False
    start_time_s: float | None = 0.0
    ready_transition_s: float = 0.0
    metric_time_s: float = 0.0
    metric_window_s: float = 60.0


@dataclass(frozen=True)
class CPUReadiness:
    """Turns on the CPU-only readiness rules of RC `groupPods` at time `now_s`.

    Defaults are the controller flags (`--horizontal-pod-autoscaler-cpu-initialization-period`
    5m, `--horizontal-pod-autoscaler-initial-readiness-delay` 30s); upstream's tests use 2m/10s.
    """

    now_s: float
    cpu_initialization_period_s: float = DEFAULT_CPU_INITIALIZATION_PERIOD_S
    delay_of_initial_readiness_status_s: float = DEFAULT_INITIAL_READINESS_DELAY_S

    def is_unready(self, pod: PodInfo) -> bool:
        if pod.ready is None or pod.start_time_s is None:
            return True
        if pod.start_time_s + self.cpu_initialization_period_s > self.now_s:
            # Inside the initialization period: unready, or one metric window not yet
            # collected since the last Ready transition.
            return pod.ready is False or pod.metric_time_s < (
                pod.ready_transition_s + pod.metric_window_s
            )
        # After it: unready only if not Ready and never Ready within the initial delay.
        return pod.ready is False and (
            pod.start_time_s + self.delay_of_initial_readiness_status_s > pod.ready_transition_s
        )


class PodGroups(NamedTuple):
    """RC `groupPods` result: pod indexes per group."""

    ready_count: int
    unready: tuple[int, ...]
    missing: tuple[int, ...]
    ignored: tuple[int, ...]


def group_pods(pods: Sequence[PodInfo], cpu: CPUReadiness | None = None) -> PodGroups:
    """RC `groupPods`: ignored (deleting or Failed), unready (Pending; for CPU also the
    readiness rules), missing (no sample), the rest ready. `cpu=None` is any non-CPU metric."""
    ready = 0
    unready: list[int] = []
    missing: list[int] = []
    ignored: list[int] = []
    for i, pod in enumerate(pods):
        if pod.deleting or pod.phase == "Failed":
            ignored.append(i)
        elif pod.phase == "Pending":
            unready.append(i)
        elif pod.value is None:
            missing.append(i)
        elif cpu is not None and cpu.is_unready(pod):
            unready.append(i)
        else:
            ready += 1
    return PodGroups(ready, tuple(unready), tuple(missing), tuple(ignored))


def _go_div(a: int, b: int) -> int:
    """Go integer division: truncates toward zero (Python's // floors)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def _ceil_i32(x: float) -> int:
    """int32(math.Ceil(x)), saturating where upstream caps at MaxInt32."""
    if x != x:  # NaN: upstream only reaches this through 0/0; treat as 0 replicas
        return 0
    if x > MAX_INT32:
        return MAX_INT32
    return math.ceil(x)


class UtilizationReplicas(NamedTuple):
    replicas: int
    utilization: int  # percent of request, integer (UT currentUtilization)
    raw_average: int  # milli-units per pod, int64 average of the samples used


class MetricReplicas(NamedTuple):
    replicas: int
    usage: int  # milli-units: average per pod (Pods metric) or per replica (AverageValue)


def resource_utilization_ratio(
    metrics: dict[int, int], requests: Sequence[int], target_utilization: int
) -> tuple[float, int, int]:
    """UT `GetResourceUtilizationRatio`: (ratio, utilization %, raw average).

    utilization = int(sum(usage) * 100 / sum(request)) with integer division, over the pods
    that have a sample; ratio = utilization / target as float.
    """
    metrics_total = sum(metrics.values())
    requests_total = sum(requests[i] for i in metrics)
    if requests_total == 0:
        raise MetricError("no metrics returned matched known pods")
    utilization = _go_div(metrics_total * 100, requests_total)
    raw = _go_div(metrics_total, len(metrics))
    return utilization / target_utilization, utilization, raw


def metric_usage_ratio(metrics: dict[int, int], target_usage: int) -> tuple[float, int]:
    """UT `GetMetricUsageRatio`: usage = int64 average of the samples; ratio = usage/target."""
    usage = _go_div(sum(metrics.values()), len(metrics))
    return usage / target_usage, usage


def _direction_flips(ratio: float, new_ratio: float) -> bool:
    return (ratio < 1.0 < new_ratio) or (ratio > 1.0 > new_ratio)


def replicas_for_utilization(
    current_replicas: int,
    target_utilization: int,
    pods: Sequence[PodInfo],
    tolerances: Tolerances = Tolerances(),
    cpu: CPUReadiness | None = None,
) -> UtilizationReplicas:
    """RC `GetResourceReplicas`: a Resource metric with an AverageUtilization target (percent).

    Fast path (no missing pods, and no unready pods on a scale-up): inside tolerance keep
    `current_replicas`, else `ceil(ratio * ready)`. Slow path: on a scale-down missing pods count
    as using `request * max(100, target) / 100`, on a scale-up as 0 (at ratio exactly 1 they stay
    out); unready pods count as 0 on a scale-up; the ratio is recomputed over all those pods and
    the count is `ceil(new_ratio * pods counted)`, unless that is within tolerance or flips the
    direction, which keeps `current_replicas`. `cpu` turns on the CPU readiness rules.

    Raises MetricError with upstream's messages (no pods, no usable samples, missing request).
    Not modelled: samples for pods absent from the pod list (upstream ignores them for the ratio
    but counts them in the slow path's `len(metrics)`), per-container metrics.
    """
    if not pods:
        raise MetricError("no pods returned by selector while calculating replica count")
    groups = group_pods(pods, cpu)
    skip = set(groups.ignored) | set(groups.unready)
    metrics = {
        i: pod.value for i, pod in enumerate(pods) if pod.value is not None and i not in skip
    }
    if not metrics:
        raise MetricError("did not receive metrics for targeted pods (pods might be unready)")
    requests: list[int] = []
    for i, pod in enumerate(pods):
        if pod.request is None:
            raise MetricError(f"missing request for pod {i}")
        requests.append(pod.request)

    ratio, utilization, raw = resource_utilization_ratio(metrics, requests, target_utilization)
    scale_up_with_unready = bool(groups.unready) and ratio > 1.0
    if not scale_up_with_unready and not groups.missing:
        if tolerances.is_within(ratio):
            return UtilizationReplicas(current_replicas, utilization, raw)
        return UtilizationReplicas(_ceil_i32(ratio * groups.ready_count), utilization, raw)

    if groups.missing:
        if ratio < 1.0:
            # On a scale-down, missing pods use all of their request (or the target if > 100%).
            fallback = max(100, target_utilization)
            for i in groups.missing:
                metrics[i] = _go_div(requests[i] * fallback, 100)
        elif ratio > 1.0:
            for i in groups.missing:
                metrics[i] = 0
    if scale_up_with_unready:
        for i in groups.unready:
            metrics[i] = 0

    new_ratio, _, _ = resource_utilization_ratio(metrics, requests, target_utilization)
    if tolerances.is_within(new_ratio) or _direction_flips(ratio, new_ratio):
        return UtilizationReplicas(current_replicas, utilization, raw)
    new_replicas = _ceil_i32(new_ratio * len(metrics))
    if (new_ratio < 1.0 and new_replicas > current_replicas) or (
        new_ratio > 1.0 and new_replicas < current_replicas
    ):
        # The extra pods changed the direction of the change: keep the current count.
        return UtilizationReplicas(current_replicas, utilization, raw)
    return UtilizationReplicas(new_replicas, utilization, raw)


def replicas_for_plain_metric(
    current_replicas: int,
    target_usage: int,
    pods: Sequence[PodInfo],
    tolerances: Tolerances = Tolerances(),
) -> MetricReplicas:
    """RC `calcPlainMetricReplicas` (via `GetMetricReplicas`): a Pods metric, AverageValue target.

    usage is the int64 average of the samples (milli-units). Readiness is not considered (only
    Pending, Failed and deleting pods are set aside). Missing pods count as exactly the target
    on a scale-down and 0 on a scale-up; unready pods 0 on a scale-up.
    """
    if not pods:
        raise MetricError("no pods returned by selector while calculating replica count")
    groups = group_pods(pods, None)
    skip = set(groups.ignored) | set(groups.unready)
    metrics = {
        i: pod.value for i, pod in enumerate(pods) if pod.value is not None and i not in skip
    }
    if not metrics:
        raise MetricError("did not receive metrics for targeted pods (pods might be unready)")

    ratio, usage = metric_usage_ratio(metrics, target_usage)
    scale_up_with_unready = bool(groups.unready) and ratio > 1.0
    if not scale_up_with_unready and not groups.missing:
        if tolerances.is_within(ratio):
            return MetricReplicas(current_replicas, usage)
        return MetricReplicas(_ceil_i32(ratio * groups.ready_count), usage)

    if groups.missing:
        if ratio < 1.0:
            for i in groups.missing:
                metrics[i] = target_usage
        elif ratio > 1.0:
            for i in groups.missing:
                metrics[i] = 0
    if scale_up_with_unready:
        for i in groups.unready:
            metrics[i] = 0

    new_ratio, _ = metric_usage_ratio(metrics, target_usage)
    if tolerances.is_within(new_ratio) or _direction_flips(ratio, new_ratio):
        return MetricReplicas(current_replicas, usage)
    new_replicas = _ceil_i32(new_ratio * len(metrics))
    if (new_ratio < 1.0 and new_replicas > current_replicas) or (
        new_ratio > 1.0 and new_replicas < current_replicas
    ):
        return MetricReplicas(current_replicas, usage)
    return MetricReplicas(new_replicas, usage)


def count_ready_pods(pods: Sequence[PodInfo]) -> int:
    """RC `getReadyPodsCount`: pods in phase Running with Ready=True."""
    return sum(1 for p in pods if p.phase == "Running" and p.ready is True)


def replicas_for_value(
    current_replicas: int,
    usage: float,
    target: float,
    ready_pod_count: int,
    tolerances: Tolerances = Tolerances(),
) -> int:
    """RC `getUsageRatioReplicaCount` (Object and External metrics with a Value target).

    ratio = usage / target (External: usage is the sum of the series). With current replicas,
    inside tolerance keep them, else `ceil(ratio * ready_pod_count)` (Running and Ready pods
    only, see `count_ready_pods`), capped at MaxInt32. With `current_replicas == 0`:
    `ceil(ratio)` with no tolerance (the scale-from-zero path of HPAScaleToZero).
    """
    ratio = usage / target
    if current_replicas != 0:
        if tolerances.is_within(ratio):
            return current_replicas
        return _ceil_i32(ratio * ready_pod_count)
    return _ceil_i32(ratio)


def replicas_for_average_value(
    status_replicas: int,
    usage: float,
    target_average: float,
    tolerances: Tolerances = Tolerances(),
) -> MetricReplicas:
    """RC `GetObjectPerPodMetricReplicas` / `GetExternalPerPodMetricReplicas`: AverageValue
    target on an Object or External metric (KEDA's default).

    ratio = usage / (target_average * status_replicas); outside tolerance the count is
    `ceil(usage / target_average)` (capped at MaxInt32), readiness ignored. The reported usage is
    `ceil(usage / status_replicas)`. With `status_replicas == 0` Go divides by zero: the ratio is
    +Inf (or NaN for 0/0), never within tolerance, so the count is `ceil(usage/target)`; the
    reported usage is then undefined in Go and reported here as `ceil(usage)`.
    """
    replicas = status_replicas
    denominator = target_average * status_replicas
    if denominator == 0:
        within = False
    else:
        within = tolerances.is_within(usage / denominator)
    if not within:
        replicas = _ceil_i32(usage / target_average)
    average = math.ceil(usage / status_replicas) if status_replicas else math.ceil(usage)
    return MetricReplicas(replicas, int(average))


def replicas_for_metrics(proposals: Sequence[int | None], spec_replicas: int) -> int:
    """HC `computeReplicasForMetrics`: the largest proposal over the HPA's metrics.

    None marks a metric that failed. Returns -1 (upstream's failure signal: the HPA does
    nothing and sets ScalingActive=False) when every metric failed, or when some failed and the
    largest of the rest is below `spec_replicas` (no scale-down on partial data, #99514).
    """
    replicas = 0
    invalid = 0
    for proposal in proposals:
        if proposal is None:
            invalid += 1
        elif replicas == 0 or proposal > replicas:
            replicas = proposal
    if invalid >= len(proposals) or (invalid > 0 and replicas < spec_replicas):
        return -1
    return replicas


def reconcile_order(
    current_replicas: int, min_replicas: int, max_replicas: int
) -> tuple[int | None, str]:
    """HC `reconcileAutoscaler`'s gates, checked before any metric is read.

    Returns (desired, reason): (current, "ScalingDisabled") when current is 0 and min is not
    (the HPA leaves a workload scaled to zero by hand alone); (max, "AboveMaxReplicas") and
    (min, "BelowMinReplicas") when current is out of bounds (no normalization, no history);
    (None, "ComputeFromMetrics") otherwise.
    """
    if current_replicas == 0 and min_replicas != 0:
        return current_replicas, SCALING_DISABLED
    if current_replicas > max_replicas:
        return max_replicas, ABOVE_MAX_REPLICAS
    if current_replicas < min_replicas:
        return min_replicas, BELOW_MIN_REPLICAS
    return None, COMPUTE_FROM_METRICS


# --------------------------------------------------------------------------------------------
# Behavior rules
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScalingPolicy:
    """One resolved `HPAScalingPolicy`: type Pods or Percent, value > 0, period in seconds."""

    type: str
    value: int
    period_s: float


@dataclass(frozen=True)
class ScalingRules:
    """Resolved `HPAScalingRules` for one direction: every field set (DF GenerateHPA*Rules)."""

    stabilization_window_s: float
    select_policy: str
    policies: tuple[ScalingPolicy, ...]
    tolerance: float = DEFAULT_TOLERANCE

    @property
    def longest_period_s(self) -> float:
        """HC `getLongestPolicyPeriod` (0 when there are no policies)."""
        return max((p.period_s for p in self.policies), default=0.0)


@dataclass(frozen=True)
class HPABehavior:
    """A resolved `behavior`: both directions filled with Kubernetes' defaults."""

    scale_up: ScalingRules
    scale_down: ScalingRules

    @property
    def tolerances(self) -> Tolerances:
        return Tolerances(scale_down=self.scale_down.tolerance, scale_up=self.scale_up.tolerance)


def default_scale_up_rules(tolerance: float = DEFAULT_TOLERANCE) -> ScalingRules:
    """DF `defaultHPAScaleUpRules`: window 0, selectPolicy Max, Pods 4/15s and Percent 100/15s."""
    return ScalingRules(
        stabilization_window_s=0.0,
        select_policy=SELECT_MAX,
        policies=(ScalingPolicy(POLICY_PODS, 4, 15.0), ScalingPolicy(POLICY_PERCENT, 100, 15.0)),
        tolerance=tolerance,
    )


def default_scale_down_rules(
    downscale_stabilization_s: float = DEFAULT_DOWNSCALE_STABILIZATION_S,
    tolerance: float = DEFAULT_TOLERANCE,
) -> ScalingRules:
    """DF `defaultHPAScaleDownRules` + HC `maybeInitScaleDownStabilizationWindow`: the window
    comes from `--horizontal-pod-autoscaler-downscale-stabilization` (5m), selectPolicy Max,
    Percent 100/15s."""
    return ScalingRules(
        stabilization_window_s=float(downscale_stabilization_s),
        select_policy=SELECT_MAX,
        policies=(ScalingPolicy(POLICY_PERCENT, 100, 15.0),),
        tolerance=tolerance,
    )


def _policy(spec: ScalingPolicySpec) -> ScalingPolicy:
    return ScalingPolicy(spec.type, int(spec.value), float(spec.period_seconds))


def resolve_rules(spec: ScalingRulesSpec | None, defaults: ScalingRules) -> ScalingRules:
    """DF `copyHPAScalingRules`: each field the spec sets replaces the default."""
    if spec is None:
        return defaults
    return ScalingRules(
        stabilization_window_s=(
            defaults.stabilization_window_s
            if spec.stabilization_window_seconds is None
            else float(spec.stabilization_window_seconds)
        ),
        select_policy=defaults.select_policy if spec.select_policy is None else spec.select_policy,
        policies=(
            defaults.policies if spec.policies is None else tuple(_policy(p) for p in spec.policies)
        ),
        tolerance=defaults.tolerance if spec.tolerance is None else float(spec.tolerance),
    )


def resolve_behavior(
    spec: BehaviorSpec | None,
    downscale_stabilization_s: float = DEFAULT_DOWNSCALE_STABILIZATION_S,
    tolerance: float = DEFAULT_TOLERANCE,
) -> HPABehavior | None:
    """DF `SetDefaults_HorizontalPodAutoscalerBehavior`; None stays None (the legacy path)."""
    if spec is None:
        return None
    return HPABehavior(
        scale_up=resolve_rules(spec.scale_up, default_scale_up_rules(tolerance)),
        scale_down=resolve_rules(
            spec.scale_down, default_scale_down_rules(downscale_stabilization_s, tolerance)
        ),
    )


# --------------------------------------------------------------------------------------------
# History (the controller's in-memory maps, as a value)
# --------------------------------------------------------------------------------------------


class Recommendation(NamedTuple):
    """HC `timestampedRecommendation`."""

    t_s: float
    replicas: int


class ScaleEvent(NamedTuple):
    """HC `timestampedScaleEvent`; `change` is positive in both directions."""

    t_s: float
    change: int
    outdated: bool


@dataclass(frozen=True)
class HPAHistory:
    """One HPA's entries in the controller's `recommendations`, `scaleUpEvents` and
    `scaleDownEvents` maps. Immutable: every `record_*` returns a new history."""

    recommendations: tuple[Recommendation, ...] = ()
    scale_up_events: tuple[ScaleEvent, ...] = ()
    scale_down_events: tuple[ScaleEvent, ...] = ()

    def record_initial_recommendation(self, current_replicas: int, now_s: float) -> HPAHistory:
        """HC `recordInitialRecommendation`: (now, current) when the HPA is first seen."""
        if self.recommendations:
            return self
        return HPAHistory(
            (Recommendation(now_s, current_replicas),), self.scale_up_events, self.scale_down_events
        )

    def record_recommendation(self, replicas: int, now_s: float, old: Sequence[bool]) -> HPAHistory:
        """Store an unstabilized recommendation: it replaces the last record flagged in `old`
        (too old for any window), else it is appended (HC stabilizeRecommendation*)."""
        new = Recommendation(now_s, replicas)
        recs = list(self.recommendations)
        idx = max((i for i, o in enumerate(old) if o), default=-1)
        if idx >= 0:
            recs[idx] = new
        else:
            recs.append(new)
        return HPAHistory(tuple(recs), self.scale_up_events, self.scale_down_events)

    def record_scale_event(
        self, prev_replicas: int, new_replicas: int, behavior: HPABehavior | None, now_s: float
    ) -> HPAHistory:
        """HC `storeScaleEvent`: nothing without behavior; else mark the direction's events
        older than its longest policy period outdated (`markScaleEventsOutdated`), and replace
        the last outdated one with the new event or append it."""
        if behavior is None:
            return self
        up = new_replicas > prev_replicas
        rules = behavior.scale_up if up else behavior.scale_down
        events = self.scale_up_events if up else self.scale_down_events
        cutoff = now_s - rules.longest_period_s
        marked = [e._replace(outdated=True) if e.t_s < cutoff else e for e in events]
        new = ScaleEvent(now_s, abs(new_replicas - prev_replicas), False)
        idx = max((i for i, e in enumerate(marked) if e.outdated), default=-1)
        if idx >= 0:
            marked[idx] = new
        else:
            marked.append(new)
        if up:
            return HPAHistory(self.recommendations, tuple(marked), self.scale_down_events)
        return HPAHistory(self.recommendations, self.scale_up_events, tuple(marked))


# --------------------------------------------------------------------------------------------
# Behavior: stabilization, rate limits, normalization (scalar)
# --------------------------------------------------------------------------------------------


def stabilize_recommendation(
    history: HPAHistory,
    desired_replicas: int,
    now_s: float,
    downscale_stabilization_s: float = DEFAULT_DOWNSCALE_STABILIZATION_S,
) -> tuple[int, HPAHistory]:
    """HC `stabilizeRecommendation` (no behavior): the largest recommendation not older than the
    downscale window, the new one included; the new one replaces an older record or is added."""
    cutoff = now_s - downscale_stabilization_s
    best = desired_replicas
    old = [r.t_s < cutoff for r in history.recommendations]
    for r, is_old in zip(history.recommendations, old, strict=True):
        if not is_old and r.replicas > best:
            best = r.replicas
    return best, history.record_recommendation(desired_replicas, now_s, old)


def stabilize_recommendation_with_behaviors(
    history: HPAHistory,
    desired_replicas: int,
    current_replicas: int,
    scale_up_window_s: float,
    scale_down_window_s: float,
    now_s: float,
) -> tuple[int, str, HPAHistory]:
    """HC `stabilizeRecommendationWithBehaviors`.

    up = min(desired, recommendations after now - upWindow); down = max(desired, those after
    now - downWindow); the result is `current` brought into [up, down], so the HPA only moves as
    far as the most conservative recent recommendation in each direction allows. Returns
    (replicas, AbleToScale reason, history with `desired` recorded).
    """
    up_cutoff = now_s - scale_up_window_s
    down_cutoff = now_s - scale_down_window_s
    up_rec = desired_replicas
    down_rec = desired_replicas
    old: list[bool] = []
    for r in history.recommendations:
        if r.t_s > up_cutoff:
            up_rec = min(r.replicas, up_rec)
        if r.t_s > down_cutoff:
            down_rec = max(r.replicas, down_rec)
        old.append(r.t_s < up_cutoff and r.t_s < down_cutoff)
    recommendation = current_replicas
    if recommendation < up_rec:
        recommendation = up_rec
    if recommendation > down_rec:
        recommendation = down_rec
    reason = SCALE_UP_STABILIZED if desired_replicas >= current_replicas else SCALE_DOWN_STABILIZED
    if recommendation == desired_replicas:
        reason = READY_FOR_NEW_SCALE
    return recommendation, reason, history.record_recommendation(desired_replicas, now_s, old)


def get_replicas_change_per_period(
    period_s: float, events: Sequence[ScaleEvent], now_s: float
) -> int:
    """HC `getReplicasChangePerPeriod`: the changes of events after now - period."""
    cutoff = now_s - period_s
    return sum(e.change for e in events if e.t_s > cutoff)


def _period_start(
    current: int, up: Sequence[ScaleEvent], down: Sequence[ScaleEvent], period_s: float, now: float
) -> int:
    return (
        current
        - get_replicas_change_per_period(period_s, up, now)
        + get_replicas_change_per_period(period_s, down, now)
    )


def calculate_scale_up_limit(
    current_replicas: int,
    scale_up_events: Sequence[ScaleEvent],
    scale_down_events: Sequence[ScaleEvent],
    rules: ScalingRules,
    now_s: float,
) -> int:
    """HC `calculateScaleUpLimitWithScalingRules`.

    Per policy, periodStart = current - added + deleted within its period; Pods proposes
    periodStart + value, Percent ceil(periodStart * (1 + value/100)). selectPolicy Max takes the
    largest proposal, Min the smallest, Disabled returns current.
    """
    if rules.select_policy == SELECT_DISABLED:
        return current_replicas
    use_min = rules.select_policy == SELECT_MIN
    result = MAX_INT32 if use_min else MIN_INT32
    for p in rules.policies:
        start = _period_start(
            current_replicas, scale_up_events, scale_down_events, p.period_s, now_s
        )
        if p.type == POLICY_PODS:
            proposed = start + p.value
        else:
            proposed = math.ceil(start * (1 + p.value / 100))
        result = min(result, proposed) if use_min else max(result, proposed)
    return result


def calculate_scale_down_limit(
    current_replicas: int,
    scale_up_events: Sequence[ScaleEvent],
    scale_down_events: Sequence[ScaleEvent],
    rules: ScalingRules,
    now_s: float,
) -> int:
    """HC `calculateScaleDownLimitWithBehaviors`: Pods proposes periodStart - value, Percent
    int(periodStart * (1 - value/100)) (truncated toward zero). Max takes the lowest proposal
    (the largest change), Min the highest, Disabled returns current."""
    if rules.select_policy == SELECT_DISABLED:
        return current_replicas
    use_min = rules.select_policy == SELECT_MIN
    result = MIN_INT32 if use_min else MAX_INT32
    for p in rules.policies:
        start = _period_start(
            current_replicas, scale_up_events, scale_down_events, p.period_s, now_s
        )
        if p.type == POLICY_PODS:
            proposed = start - p.value
        else:
            proposed = int(start * (1 - p.value / 100))
        result = max(result, proposed) if use_min else min(result, proposed)
    return result


def convert_desired_replicas_with_behavior_rate(
    current_replicas: int,
    desired_replicas: int,
    min_replicas: int,
    max_replicas: int,
    behavior: HPABehavior,
    history: HPAHistory,
    now_s: float,
) -> tuple[int, str]:
    """HC `convertDesiredReplicasWithBehaviorRate`: rate limit, then [min, max].

    A scale-up limit below current is raised to current (and a scale-down limit above it lowered)
    so old events never force a move against the recommendation.
    """
    if desired_replicas > current_replicas:
        limit = calculate_scale_up_limit(
            current_replicas,
            history.scale_up_events,
            history.scale_down_events,
            behavior.scale_up,
            now_s,
        )
        limit = max(limit, current_replicas)
        if max_replicas > limit:
            allowed, reason = limit, SCALE_UP_LIMIT
        else:
            allowed, reason = max_replicas, TOO_MANY_REPLICAS
        if desired_replicas > allowed:
            return allowed, reason
    elif desired_replicas < current_replicas:
        limit = calculate_scale_down_limit(
            current_replicas,
            history.scale_up_events,
            history.scale_down_events,
            behavior.scale_down,
            now_s,
        )
        limit = min(limit, current_replicas)
        if min_replicas < limit:
            allowed, reason = limit, SCALE_DOWN_LIMIT
        else:
            allowed, reason = min_replicas, TOO_FEW_REPLICAS
        if desired_replicas < allowed:
            return allowed, reason
    return desired_replicas, DESIRED_WITHIN_RANGE


def calculate_legacy_scale_up_limit(current_replicas: int) -> int:
    """HC `calculateScaleUpLimit`: int(max(2 * current, 4))."""
    return int(max(SCALE_UP_LIMIT_FACTOR * current_replicas, SCALE_UP_LIMIT_MINIMUM))


def convert_desired_replicas_with_rules(
    current_replicas: int, desired_replicas: int, min_replicas: int, max_replicas: int
) -> tuple[int, str]:
    """HC `convertDesiredReplicasWithRules` (no behavior): [min, min(max, max(2*current, 4))]."""
    limit = calculate_legacy_scale_up_limit(current_replicas)
    if max_replicas > limit:
        allowed, reason = limit, SCALE_UP_LIMIT
    else:
        allowed, reason = max_replicas, TOO_MANY_REPLICAS
    if desired_replicas < min_replicas:
        return min_replicas, TOO_FEW_REPLICAS
    if desired_replicas > allowed:
        return allowed, reason
    return desired_replicas, DESIRED_WITHIN_RANGE


class Normalized(NamedTuple):
    """A normalized recommendation: `reason` is the ScalingLimited reason (ScaleUpLimit,
    TooManyReplicas, ScaleDownLimit, TooFewReplicas, DesiredWithinRange), `stabilization` the
    AbleToScale one (ReadyForNewScale, ScaleUpStabilized, ScaleDownStabilized)."""

    replicas: int
    reason: str
    stabilization: str
    stabilized: int
    history: HPAHistory

    @property
    def summary_reason(self) -> str:
        """One reason for a decision record: the limit that bound the result, else the
        stabilization that held it, else DesiredWithinRange."""
        if self.reason == DESIRED_WITHIN_RANGE and self.stabilization != READY_FOR_NEW_SCALE:
            return self.stabilization
        return self.reason


def normalize_desired_replicas_with_behaviors(
    history: HPAHistory,
    behavior: HPABehavior,
    current_replicas: int,
    desired_replicas: int,
    min_replicas: int,
    max_replicas: int,
    now_s: float,
) -> Normalized:
    """HC `normalizeDesiredReplicasWithBehaviors`: stabilize (recording `desired`), then
    `convertDesiredReplicasWithBehaviorRate`."""
    stabilized, stab_reason, history = stabilize_recommendation_with_behaviors(
        history,
        desired_replicas,
        current_replicas,
        behavior.scale_up.stabilization_window_s,
        behavior.scale_down.stabilization_window_s,
        now_s,
    )
    replicas, reason = convert_desired_replicas_with_behavior_rate(
        current_replicas, stabilized, min_replicas, max_replicas, behavior, history, now_s
    )
    return Normalized(replicas, reason, stab_reason, stabilized, history)


def normalize_desired_replicas(
    history: HPAHistory,
    current_replicas: int,
    desired_replicas: int,
    min_replicas: int,
    max_replicas: int,
    now_s: float,
    downscale_stabilization_s: float = DEFAULT_DOWNSCALE_STABILIZATION_S,
) -> Normalized:
    """HC `normalizeDesiredReplicas` (no behavior): max over the downscale window, then
    `convertDesiredReplicasWithRules` (scale-up limit max(2*current, 4))."""
    stabilized, history = stabilize_recommendation(
        history, desired_replicas, now_s, downscale_stabilization_s
    )
    stab_reason = READY_FOR_NEW_SCALE if stabilized == desired_replicas else SCALE_DOWN_STABILIZED
    replicas, reason = convert_desired_replicas_with_rules(
        current_replicas, stabilized, min_replicas, max_replicas
    )
    return Normalized(replicas, reason, stab_reason, stabilized, history)


def behavior_step(
    history: HPAHistory,
    behavior: HPABehavior | None,
    current_replicas: int,
    desired_replicas: int,
    min_replicas: int,
    max_replicas: int,
    now_s: float,
    downscale_stabilization_s: float = DEFAULT_DOWNSCALE_STABILIZATION_S,
) -> tuple[int, str, HPAHistory]:
    """One workload's `apply_behavior`, built from the scalar pieces (its reference).

    Initial recommendation, normalization (behavior or legacy), a final clamp to
    [min, max] (reached only when current is out of bounds, where upstream's
    `reconcile_order` would have skipped normalization), and the scale event when the result
    differs from current. Returns (replicas, summary reason, history).
    """
    history = history.record_initial_recommendation(current_replicas, now_s)
    if behavior is None:
        norm = normalize_desired_replicas(
            history,
            current_replicas,
            desired_replicas,
            min_replicas,
            max_replicas,
            now_s,
            downscale_stabilization_s,
        )
    else:
        norm = normalize_desired_replicas_with_behaviors(
            history, behavior, current_replicas, desired_replicas, min_replicas, max_replicas, now_s
        )
    replicas, reason = norm.replicas, norm.summary_reason
    if replicas > max_replicas:
        replicas, reason = max_replicas, TOO_MANY_REPLICAS
    if replicas < min_replicas:
        replicas, reason = min_replicas, TOO_FEW_REPLICAS
    history = norm.history
    if replicas != current_replicas:
        history = history.record_scale_event(current_replicas, replicas, behavior, now_s)
    return replicas, reason, history


# --------------------------------------------------------------------------------------------
# Vectorized behavior
# --------------------------------------------------------------------------------------------

_SELECT_CODE = {SELECT_MAX: 0, SELECT_MIN: 1, SELECT_DISABLED: 2}
_TYPE_CODE = {POLICY_PODS: 0, POLICY_PERCENT: 1}
_NO_POLICY = -1

# Reason codes for apply_behavior; REASONS[code] is the string.
REASONS: tuple[str, ...] = (
    DESIRED_WITHIN_RANGE,
    SCALE_UP_LIMIT,
    TOO_MANY_REPLICAS,
    SCALE_DOWN_LIMIT,
    TOO_FEW_REPLICAS,
    SCALE_UP_STABILIZED,
    SCALE_DOWN_STABILIZED,
    HELD,
)
_R = {name: code for code, name in enumerate(REASONS)}
_REASON_ARRAY = np.array(REASONS, dtype=object)


def _take_fields(obj: Any, idx: Any) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name)[idx] for f in fields(obj)}


@dataclass(frozen=True)
class BehaviorTable:
    """Behavior of n workloads, compiled once from their specs into arrays.

    has_behavior [n] bool: False = the legacy path (no `behavior`), which stabilizes over
      `down_window_s` and limits scale-up to max(2*current, 4).
    up_window_s, down_window_s [n]: stabilization windows (legacy rows: both the downscale flag).
    up_select, down_select [n] int8: 0 Max, 1 Min, 2 Disabled.
    up_type, down_type [n, P] int8: 0 Pods, 1 Percent, -1 no policy in that column.
    up_value, down_value [n, P] int64; up_period_s, down_period_s [n, P] float64.
    up_longest_s, down_longest_s [n]: longest policy period (when events become outdated).
    tol_up, tol_down [n]: tolerances for the caller's tolerance stage (`is_within`).
    """

    has_behavior: B
    up_window_s: F64
    down_window_s: F64
    up_select: NDArray[np.int8]
    down_select: NDArray[np.int8]
    up_type: NDArray[np.int8]
    up_value: I64
    up_period_s: F64
    down_type: NDArray[np.int8]
    down_value: I64
    down_period_s: F64
    up_longest_s: F64
    down_longest_s: F64
    tol_up: F64
    tol_down: F64

    @property
    def n(self) -> int:
        return int(self.has_behavior.shape[0])

    @classmethod
    def compile(
        cls,
        behaviors: Sequence[BehaviorSpec | HPABehavior | None],
        downscale_stabilization_s: float = DEFAULT_DOWNSCALE_STABILIZATION_S,
        tolerance: float = DEFAULT_TOLERANCE,
    ) -> BehaviorTable:
        """Resolve each spec with Kubernetes' defaults (`resolve_behavior`); None -> legacy."""
        resolved: list[HPABehavior | None] = [
            b
            if isinstance(b, HPABehavior) or b is None
            else resolve_behavior(b, downscale_stabilization_s, tolerance)
            for b in behaviors
        ]
        n = len(resolved)
        width = max(
            [1]
            + [len(b.scale_up.policies) for b in resolved if b is not None]
            + [len(b.scale_down.policies) for b in resolved if b is not None]
        )

        def direction(up: bool) -> tuple[Any, ...]:
            window = np.full(n, float(downscale_stabilization_s))
            select = np.zeros(n, dtype=np.int8)
            ptype = np.full((n, width), _NO_POLICY, dtype=np.int8)
            value = np.zeros((n, width), dtype=np.int64)
            period = np.zeros((n, width), dtype=np.float64)
            longest = np.zeros(n)
            tol = np.full(n, float(tolerance))
            for i, b in enumerate(resolved):
                if b is None:
                    continue
                rules = b.scale_up if up else b.scale_down
                window[i] = rules.stabilization_window_s
                select[i] = _SELECT_CODE[rules.select_policy]
                for j, p in enumerate(rules.policies):
                    ptype[i, j] = _TYPE_CODE[p.type]
                    value[i, j] = p.value
                    period[i, j] = p.period_s
                longest[i] = rules.longest_period_s
                tol[i] = rules.tolerance
            return window, select, ptype, value, period, longest, tol

        uw, us, ut, uv, up, ul, tu = direction(True)
        dw, ds, dt, dv, dp, dl, td = direction(False)
        return cls(
            has_behavior=np.array([b is not None for b in resolved], dtype=bool),
            up_window_s=uw,
            down_window_s=dw,
            up_select=us,
            down_select=ds,
            up_type=ut,
            up_value=uv,
            up_period_s=up,
            down_type=dt,
            down_value=dv,
            down_period_s=dp,
            up_longest_s=ul,
            down_longest_s=dl,
            tol_up=tu,
            tol_down=td,
        )

    def take(self, idx: I64 | list[int] | slice) -> BehaviorTable:
        return BehaviorTable(**_take_fields(self, idx))

    def is_within(self, usage_ratio: F64) -> B:
        """`Tolerances.is_within` per row: (1 - tol_down) <= ratio <= (1 + tol_up)."""
        within: B = ((1.0 - self.tol_down) <= usage_ratio) & (usage_ratio <= (1.0 + self.tol_up))
        return within


@dataclass(frozen=True)
class BehaviorState:
    """The HPA controller's history maps for n workloads, as bounded ring buffers.

    Slot-major arrays (slot first, workload second):
    rec_t_s [w, n] (NaN = empty slot), rec_replicas [w, n]: unstabilized recommendations.
    up_t_s, up_change, up_outdated [we, n] and down_* [wd, n]: scale events (change > 0 in
    both directions), as HC `timestampedScaleEvent`.

    Layout. Conceptually each workload has a ring of `capacity` recommendations and
    `event_capacity` events per direction. The arrays are stored slot-major so a reduction over
    slots is a few elementwise operations across all workloads (row-major reductions over ~20
    slots were 5-10x slower), and they are only as wide as the records in use: w grows on demand
    up to `capacity` (we, wd up to `event_capacity`), so the cost of `apply_behavior` follows
    window / tick rather than the capacity.

    Slots fill from the front in upstream's list order: a new record takes the slot upstream
    would (the last record too old for every window / the last outdated event), else the next
    free slot (upstream appends). Upstream's lists grow as needed; here, when a ring is full of
    records still in use, the oldest is dropped. So a stabilization window longer than
    capacity * tick (300 s at a 2 s tick needs 151 slots > 128) or more than event_capacity
    scale events inside the longest policy period forgets the oldest entries, and results may
    then differ from upstream.
    """

    rec_t_s: F64
    rec_replicas: I64
    up_t_s: F64
    up_change: I64
    up_outdated: B
    down_t_s: F64
    down_change: I64
    down_outdated: B
    capacity: int = 128
    event_capacity: int = 32

    @property
    def n(self) -> int:
        return int(self.rec_t_s.shape[1])

    @classmethod
    def initial(cls, n: int, capacity: int = 128, event_capacity: int = 32) -> BehaviorState:
        """Empty histories (a controller that has just started)."""
        if capacity < 1 or event_capacity < 1:
            raise ValueError(
                f"capacity and event_capacity must be >= 1; found {capacity}, {event_capacity}"
            )
        return cls(
            rec_t_s=np.full((1, n), np.nan),
            rec_replicas=np.zeros((1, n), dtype=np.int64),
            up_t_s=np.full((1, n), np.nan),
            up_change=np.zeros((1, n), dtype=np.int64),
            up_outdated=np.zeros((1, n), dtype=bool),
            down_t_s=np.full((1, n), np.nan),
            down_change=np.zeros((1, n), dtype=np.int64),
            down_outdated=np.zeros((1, n), dtype=bool),
            capacity=capacity,
            event_capacity=event_capacity,
        )

    def _arrays(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _CAPS}

    def take(self, idx: I64 | list[int] | slice) -> BehaviorState:
        return BehaviorState(
            **{k: v[:, idx] for k, v in self._arrays().items()},
            capacity=self.capacity,
            event_capacity=self.event_capacity,
        )

    @classmethod
    def concat(cls, parts: Sequence[BehaviorState]) -> BehaviorState:
        if not parts:
            raise ValueError("concat needs at least one BehaviorState")
        caps = {(p.capacity, p.event_capacity) for p in parts}
        if len(caps) != 1:
            raise ValueError(f"cannot concat states of different capacities: {sorted(caps)}")
        rec_w = max(p.rec_t_s.shape[0] for p in parts)
        up_w = max(p.up_t_s.shape[0] for p in parts)
        down_w = max(p.down_t_s.shape[0] for p in parts)
        wide = [p._widened(rec_w, up_w, down_w) for p in parts]
        capacity, event_capacity = caps.pop()
        return cls(
            **{
                name: np.concatenate([getattr(p, name) for p in wide], axis=1)
                for name in wide[0]._arrays()
            },
            capacity=capacity,
            event_capacity=event_capacity,
        )

    def _widened(self, rec_w: int, up_w: int, down_w: int) -> BehaviorState:
        """The same histories with empty slots appended up to the given widths."""
        rt, rv = _widen(self.rec_t_s, rec_w), _widen(self.rec_replicas, rec_w)
        ut, uc, uo = (_widen(a, up_w) for a in (self.up_t_s, self.up_change, self.up_outdated))
        dt, dc, do = (
            _widen(a, down_w) for a in (self.down_t_s, self.down_change, self.down_outdated)
        )
        return BehaviorState(rt, rv, ut, uc, uo, dt, dc, do, self.capacity, self.event_capacity)

    def history(self, i: int) -> HPAHistory:
        """Workload i as an `HPAHistory` (records in slot order, empty slots left out)."""

        def events(t: F64, c: I64, o: B) -> tuple[ScaleEvent, ...]:
            keep = np.flatnonzero(~np.isnan(t[:, i])).tolist()
            return tuple(ScaleEvent(float(t[j, i]), int(c[j, i]), bool(o[j, i])) for j in keep)

        keep = np.flatnonzero(~np.isnan(self.rec_t_s[:, i])).tolist()
        recs = tuple(
            Recommendation(float(self.rec_t_s[j, i]), int(self.rec_replicas[j, i])) for j in keep
        )
        return HPAHistory(
            recs,
            events(self.up_t_s, self.up_change, self.up_outdated),
            events(self.down_t_s, self.down_change, self.down_outdated),
        )

    def to_dicts(self) -> list[dict[str, Any]]:
        """JSON-serializable, one dict per workload: its records in slot order and the
        capacities. `from_dicts` rebuilds the same state (floats round-trip exactly)."""
        out: list[dict[str, Any]] = []
        for i in range(self.n):
            h = self.history(i)
            out.append(
                {
                    "capacity": self.capacity,
                    "event_capacity": self.event_capacity,
                    "recommendations": [[r.t_s, r.replicas] for r in h.recommendations],
                    "scale_up_events": [[e.t_s, e.change, e.outdated] for e in h.scale_up_events],
                    "scale_down_events": [
                        [e.t_s, e.change, e.outdated] for e in h.scale_down_events
                    ],
                }
            )
        return out

    @classmethod
    def from_dicts(
        cls, items: Sequence[dict[str, Any]], capacity: int = 128, event_capacity: int = 32
    ) -> BehaviorState:
        """Inverse of `to_dicts`. Capacities come from the items (the arguments serve only an
        empty list); array widths are those the records need."""
        if items:
            capacity = int(items[0]["capacity"])
            event_capacity = int(items[0]["event_capacity"])
        for i, item in enumerate(items):
            if (int(item["capacity"]), int(item["event_capacity"])) != (capacity, event_capacity):
                raise ValueError(
                    f"item {i}: capacity ({item['capacity']}, {item['event_capacity']}) differs "
                    f"from item 0 ({capacity}, {event_capacity})"
                )
            lengths = (
                len(item["recommendations"]),
                len(item["scale_up_events"]),
                len(item["scale_down_events"]),
            )
            if lengths[0] > capacity or max(lengths[1:]) > event_capacity:
                raise ValueError(
                    f"item {i}: more records than capacity ({capacity}, {event_capacity}): "
                    f"{lengths}"
                )

        def width(key: str) -> int:
            return max([1] + [len(item[key]) for item in items])

        state = cls.initial(len(items), capacity, event_capacity)._widened(
            width("recommendations"), width("scale_up_events"), width("scale_down_events")
        )
        for i, item in enumerate(items):
            for j, (t, v) in enumerate(item["recommendations"]):
                state.rec_t_s[j, i], state.rec_replicas[j, i] = t, v
            for j, (t, c, o) in enumerate(item["scale_up_events"]):
                state.up_t_s[j, i], state.up_change[j, i], state.up_outdated[j, i] = t, c, o
            for j, (t, c, o) in enumerate(item["scale_down_events"]):
                state.down_t_s[j, i], state.down_change[j, i], state.down_outdated[j, i] = t, c, o
        return state


_CAPS = ("capacity", "event_capacity")


def _widen(a: NDArray[Any], width: int) -> NDArray[Any]:
    """Append empty slots (NaN times, zero values, False flags) up to `width` slots."""
    extra = width - a.shape[0]
    if extra <= 0:
        return a
    fill: Any = np.nan if a.dtype == np.float64 else 0
    pad = np.full((extra, a.shape[1]), fill, dtype=a.dtype)
    return np.concatenate([a, pad], axis=0)


def _masked_max(values: I64, mask: B) -> I64:
    """Max over the slots flagged, 0 where none is (values are replica counts, >= 0).
    Multiplying by the mask is several times faster than np.where with a scalar."""
    out: I64 = (values * mask).max(axis=0)
    return out


def _masked_min(values: I64, mask: B) -> I64:
    """Min over the slots flagged, MAX_INT32 where none is (values in [0, MAX_INT32])."""
    out: I64 = MAX_INT32 - ((MAX_INT32 - values) * mask).max(axis=0)
    return out


def _choose_slots(t: F64, replace: B, rows: B, capacity: int) -> I64:
    """Upstream's slot for a new record of each workload: the last replaceable one, else the
    next free slot (upstream appends; slots fill from the front, so that is the number of
    records, possibly one past the current width), else, when the ring is full, the oldest."""
    count = t.shape[0] - np.isnan(t).sum(axis=0)
    order = np.arange(1, t.shape[0] + 1)[:, None]
    last = (order * replace).max(axis=0) - 1  # -1: nothing to replace
    slot: I64 = np.where(last >= 0, last, count).astype(np.int64)
    full = rows & (last < 0) & (count >= capacity)
    if full.any():
        r = np.flatnonzero(full)
        slot[r] = np.argmin(t[:, r], axis=0)
    return slot


def _change_within(t: F64, change: I64, cutoff: F64) -> I64:
    """HC `getReplicasChangePerPeriod` per workload: sum of changes with t > cutoff."""
    total: I64 = (change * (t > cutoff)).sum(axis=0)
    return total


def _rate_limit(
    up: bool,
    current: I64,
    select: NDArray[np.int8],
    ptype: NDArray[np.int8],
    value: I64,
    period_s: F64,
    state: BehaviorState,
    now_s: float,
) -> I64:
    """HC `calculateScale{Up,Down}Limit*` for every workload."""
    use_min = select == _SELECT_CODE[SELECT_MIN]
    # Up: Max takes the largest proposal; down: Max takes the lowest (the largest change).
    take_largest = ~use_min if up else use_min
    result: I64 = np.where(take_largest, MIN_INT32, MAX_INT32).astype(np.int64)
    for j in range(ptype.shape[1]):
        kind = ptype[:, j]
        if not (kind != _NO_POLICY).any():
            continue
        cutoff = now_s - period_s[:, j]
        start = (
            current
            - _change_within(state.up_t_s, state.up_change, cutoff)
            + _change_within(state.down_t_s, state.down_change, cutoff)
        )
        v = value[:, j]
        if up:
            percent = np.ceil(start * (1 + v / 100)).astype(np.int64)
            proposed = np.where(kind == _TYPE_CODE[POLICY_PODS], start + v, percent)
        else:
            percent = np.trunc(start * (1 - v / 100)).astype(np.int64)
            proposed = np.where(kind == _TYPE_CODE[POLICY_PODS], start - v, percent)
        chosen = np.where(take_largest, np.maximum(result, proposed), np.minimum(result, proposed))
        result = np.where(kind != _NO_POLICY, chosen, result)
    out: I64 = np.where(select == _SELECT_CODE[SELECT_DISABLED], current, result)
    return out


def _store_events(
    rows: B,
    t: F64,
    change: I64,
    outdated: B,
    longest_s: F64,
    new_change: I64,
    now_s: float,
    capacity: int,
) -> tuple[F64, I64, B]:
    """HC `storeScaleEvent` for the workloads flagged: mark their events older than the longest
    policy period outdated, then replace the last outdated event or append."""
    if not rows.any():
        return t, change, outdated
    outdated = outdated | (rows & (t < now_s - longest_s))
    slot = _choose_slots(t, outdated, rows, capacity)
    r = np.flatnonzero(rows)
    s = slot[r]
    w = max(t.shape[0], int(s.max()) + 1)
    if w > t.shape[0]:
        t, change, outdated = _widen(t, w), _widen(change, w), _widen(outdated, w)
    else:
        t, change = t.copy(), change.copy()  # `outdated` is already a new array
    t[s, r] = now_s
    change[s, r] = new_change[r]
    outdated[s, r] = False
    return t, change, outdated


def apply_behavior(
    table: BehaviorTable,
    state: BehaviorState,
    desired: I64,
    current: I64,
    min_replicas: I64,
    max_replicas: I64,
    now_s: float,
    mask: B | None = None,
) -> tuple[I64, NDArray[np.object_], BehaviorState]:
    """HPA behavior for n workloads at once: the vectorized `behavior_step`.

    desired: raw recommendations [n] >= 0 (the caller already applied tolerance, using
      `table.tol_up` / `table.tol_down` or `table.is_within`); current, min_replicas,
      max_replicas [n]. For each workload: record the initial recommendation (first call),
      stabilize and record `desired` (behavior: HC `stabilizeRecommendationWithBehaviors`;
      legacy: `stabilizeRecommendation`), rate-limit (behavior policies; legacy
      max(2*current, 4)), clamp to [min, max], and, for workloads with behavior whose result
      differs from current, record the scale event (upstream stores none without behavior).
    now_s must not decrease from one call to the next (records are never in the future).

    The `reconcile_order` gates (current 0 with min > 0, current out of bounds) are the
    caller's: workloads whose current lies outside [min, max] are normalized and then clamped.
    mask [n] bool (optional): workloads False are held at current with reason "Held" and their
    history untouched (upstream records nothing when metrics fail).

    Returns (replicas [n] int64, reasons [n] object (`Normalized.summary_reason` strings),
    new state). The state passed in is not modified. A history longer than the ring capacity
    loses its oldest records (see `BehaviorState`).
    """
    desired = np.asarray(desired, dtype=np.int64)
    current = np.asarray(current, dtype=np.int64)
    lo = np.asarray(min_replicas, dtype=np.int64)
    hi = np.asarray(max_replicas, dtype=np.int64)
    n = desired.shape[0]
    if state.n != n or table.n != n:
        raise ValueError(f"rows differ: desired {n}, state {state.n}, table {table.n}")
    if n and (desired.min() < 0 or current.min() < 0):
        raise ValueError("desired and current replicas must be >= 0")
    act = np.ones(n, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    behav = table.has_behavior
    legacy = ~behav

    # Recommendations: the initial record (a fresh workload has slot 0 free), then stabilize.
    rec_t = state.rec_t_s.copy()
    rec_v = state.rec_replicas.copy()
    fresh = act & np.isnan(rec_t[0])
    if fresh.any():
        rec_t[0, fresh] = now_s
        rec_v[0, fresh] = current[fresh]

    up_cut = now_s - table.up_window_s
    down_cut = now_s - table.down_window_s
    stabilized = desired
    if legacy.any():
        # Legacy keeps a record exactly at the cutoff (not Before); behavior does not (After).
        best = _masked_max(rec_v, rec_t >= down_cut)
        stabilized = np.where(legacy, np.maximum(desired, best), stabilized)
    if behav.any():
        up_rec = desired
        if (table.up_window_s[behav] > 0).any():
            # With a zero window no record is after now, so the scan is skipped.
            up_rec = np.minimum(desired, _masked_min(rec_v, rec_t > up_cut))
        down_rec = np.maximum(desired, _masked_max(rec_v, rec_t > down_cut))
        held = np.minimum(np.maximum(current, up_rec), down_rec)
        stabilized = np.where(behav, held, stabilized)
    # Too old for both windows (upstream: Before(upCutoff) && Before(downCutoff)).
    old = rec_t < np.minimum(up_cut, down_cut)
    slot = _choose_slots(rec_t, old, act, state.capacity)
    r = np.flatnonzero(act)
    if r.size:
        w = max(rec_t.shape[0], int(slot[r].max()) + 1)
        rec_t, rec_v = _widen(rec_t, w), _widen(rec_v, w)
        rec_t[slot[r], r] = now_s
        rec_v[slot[r], r] = desired[r]

    # Rate limits and bounds.
    result = stabilized
    reason = np.full(n, _R[DESIRED_WITHIN_RANGE], dtype=np.int64)
    going_up = behav & (stabilized > current)
    going_down = behav & (stabilized < current)
    if going_up.any():
        limit = np.maximum(
            _rate_limit(
                True,
                current,
                table.up_select,
                table.up_type,
                table.up_value,
                table.up_period_s,
                state,
                now_s,
            ),
            current,
        )
        by_rate = hi > limit
        allowed = np.where(by_rate, limit, hi)
        cut = going_up & (stabilized > allowed)
        result = np.where(cut, allowed, result)
        reason = np.where(cut, np.where(by_rate, _R[SCALE_UP_LIMIT], _R[TOO_MANY_REPLICAS]), reason)
    if going_down.any():
        limit = np.minimum(
            _rate_limit(
                False,
                current,
                table.down_select,
                table.down_type,
                table.down_value,
                table.down_period_s,
                state,
                now_s,
            ),
            current,
        )
        by_rate = lo < limit
        allowed = np.where(by_rate, limit, lo)
        cut = going_down & (stabilized < allowed)
        result = np.where(cut, allowed, result)
        reason = np.where(
            cut, np.where(by_rate, _R[SCALE_DOWN_LIMIT], _R[TOO_FEW_REPLICAS]), reason
        )
    if legacy.any():
        limit = np.maximum(SCALE_UP_LIMIT_FACTOR * current, SCALE_UP_LIMIT_MINIMUM).astype(np.int64)
        by_rate = hi > limit
        allowed = np.where(by_rate, limit, hi)
        too_few = legacy & (stabilized < lo)
        too_many = legacy & ~too_few & (stabilized > allowed)
        result = np.where(too_few, lo, np.where(too_many, allowed, result))
        reason = np.where(too_few, _R[TOO_FEW_REPLICAS], reason)
        reason = np.where(
            too_many, np.where(by_rate, _R[SCALE_UP_LIMIT], _R[TOO_MANY_REPLICAS]), reason
        )

    # Summary reason: a stabilization that held the count, when no limit did.
    stab_changed = (stabilized != desired) & (reason == _R[DESIRED_WITHIN_RANGE])
    stab_reason = np.where(
        behav & (desired >= current), _R[SCALE_UP_STABILIZED], _R[SCALE_DOWN_STABILIZED]
    )
    reason = np.where(stab_changed, stab_reason, reason)
    # Bounds the normalization did not enforce (current out of [min, max]).
    over = result > hi
    under = ~over & (result < lo)
    result = np.where(over, hi, np.where(under, lo, result))
    reason = np.where(over, _R[TOO_MANY_REPLICAS], np.where(under, _R[TOO_FEW_REPLICAS], reason))

    # Held workloads keep their count; the rest record scale events (behavior only).
    result = np.where(act, result, current)
    reason = np.where(act, reason, _R[HELD])
    up_t, up_c, up_o = _store_events(
        behav & (result > current),
        state.up_t_s,
        state.up_change,
        state.up_outdated,
        table.up_longest_s,
        result - current,
        now_s,
        state.event_capacity,
    )
    down_t, down_c, down_o = _store_events(
        behav & (result < current),
        state.down_t_s,
        state.down_change,
        state.down_outdated,
        table.down_longest_s,
        current - result,
        now_s,
        state.event_capacity,
    )
    new_state = BehaviorState(
        rec_t,
        rec_v,
        up_t,
        up_c,
        up_o,
        down_t,
        down_c,
        down_o,
        state.capacity,
        state.event_capacity,
    )
    reasons: NDArray[np.object_] = _REASON_ARRAY[reason]
    return result, reasons, new_state


__all__ = [
    "BehaviorState",
    "BehaviorTable",
    "CPUReadiness",
    "HPABehavior",
    "HPAHistory",
    "MetricError",
    "MetricReplicas",
    "Normalized",
    "PodGroups",
    "PodInfo",
    "REASONS",
    "Recommendation",
    "ScaleEvent",
    "ScalingPolicy",
    "ScalingRules",
    "Tolerances",
    "UtilizationReplicas",
    "apply_behavior",
    "behavior_step",
    "calculate_legacy_scale_up_limit",
    "calculate_scale_down_limit",
    "calculate_scale_up_limit",
    "convert_desired_replicas_with_behavior_rate",
    "convert_desired_replicas_with_rules",
    "count_ready_pods",
    "default_scale_down_rules",
    "default_scale_up_rules",
    "get_replicas_change_per_period",
    "group_pods",
    "metric_usage_ratio",
    "normalize_desired_replicas",
    "normalize_desired_replicas_with_behaviors",
    "reconcile_order",
    "replicas_for_average_value",
    "replicas_for_metrics",
    "replicas_for_plain_metric",
    "replicas_for_utilization",
    "replicas_for_value",
    "resolve_behavior",
    "resolve_rules",
    "resource_utilization_ratio",
    "stabilize_recommendation",
    "stabilize_recommendation_with_behaviors",
]
