"""Faithful baselines for the simulator's comparisons: Kubernetes HPA, KEDA, Knative KPA, static.

Each class implements `policies.types.Policy` and mirrors one upstream controller closely
enough that a result can be checked against upstream's own code and tests:

- `HPABaseline`: kubernetes/kubernetes `pkg/controller/podautoscaler/horizontal.go`
  `reconcileAutoscaler`, with the replica calculator and behavior of `policies.hpa`.
- `KEDABaseline`: kedacore/keda `pkg/scaling/executor/scale_scaledobjects.go` `RequestScale`
  (activation 0 -> 1, deactivation to 0 after the cooldown) over the HPA that
  `controllers/keda/hpa.go` generates (minReplicas = max(1, minReplicaCount), AverageValue).
- `KPABaseline`: knative/serving `pkg/autoscaler/scaling/autoscaler.go` `Scale` (stable and
  panic windows, panic mode) plus the KPA reconciler's bounds and scale-to-zero grace.
- `StaticPolicy`: a fixed replica count (what a hand-sized deployment does).

They differ from our predictive policy on purpose: no forecast, one pool, no warm slots. Only
min/max replicas are read from the specs (a sequence of `policies.spec.PolicySpec`, or any
object with `min_replicas`/`max_replicas` arrays); every baseline parameter is a constructor
argument with upstream's default. They loop over workloads in Python: the simulator runs one
workload per policy instance, and clarity beats speed here.

Metric reads. A baseline reads the newest sample of a metric family, `obs.metric(name)[:, -1]`
(or the samples inside a window, for KPA). NaN there, or `obs.stale`, is a failed metric
fetch: the upstream controller errors and does nothing, so the baseline holds the current
count (fail static) and marks the decision `held`. Values are taken as floats; the
milli-quantity rounding of the Kubernetes metrics APIs is not modelled.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from policies.hpa import (
    DEFAULT_DOWNSCALE_STABILIZATION_S,
    DEFAULT_SYNC_PERIOD_S,
    DEFAULT_TOLERANCE,
    SCALING_DISABLED,
    HPABehavior,
    HPAHistory,
    Tolerances,
    normalize_desired_replicas,
    normalize_desired_replicas_with_behaviors,
    reconcile_order,
    replicas_for_average_value,
    replicas_for_value,
    resolve_behavior,
)
from policies.spec import BehaviorSpec
from policies.types import F64, METRIC_FAMILIES, Decisions, Observation

# A sync is due when at least this close to a full period has passed (float clocks drift).
_EPS_S = 1e-9
_SERVING_POOLS = ("spot", "on_demand")


def _bounds(specs: Any) -> tuple[list[int], list[int]]:
    """(min_replicas, max_replicas) per workload from PolicySpecs or a table of arrays."""
    if hasattr(specs, "min_replicas") and hasattr(specs, "max_replicas"):
        lo = np.atleast_1d(np.asarray(specs.min_replicas)).tolist()
        hi = np.atleast_1d(np.asarray(specs.max_replicas)).tolist()
        return [int(x) for x in lo], [int(x) for x in hi]
    return [int(s.min_replicas) for s in specs], [int(s.max_replicas) for s in specs]


def _latest(obs: Observation, name: str) -> F64:
    """Newest sample per workload, NaN where missing or the workload's series is stale."""
    samples = obs.metric(name)
    if samples.shape[1] == 0:
        return np.full(obs.n, np.nan)
    value: F64 = samples[:, -1].astype(np.float64)
    if obs.stale is not None:
        value = np.where(obs.stale, np.nan, value)
    return value


def _check_pool(pool: str) -> str:
    if pool not in _SERVING_POOLS:
        raise ValueError(f"pool must be one of {_SERVING_POOLS}; found {pool!r}")
    return pool


def _check_metric(metric: str) -> str:
    if metric not in METRIC_FAMILIES:
        raise ValueError(f"metric must be one of {METRIC_FAMILIES}; found {metric!r}")
    return metric


def _check_n(name: str, n_state: int, obs: Observation, n_specs: int) -> None:
    if not n_state == obs.n == n_specs:
        raise ValueError(
            f"{name}: workloads differ: state {n_state}, observation {obs.n}, specs {n_specs}"
        )


def _due(last_s: float | None, period_s: float, now_s: float) -> bool:
    return last_s is None or now_s - last_s >= period_s - _EPS_S


@dataclass(frozen=True)
class _Row:
    """One workload's decision before it is put into arrays."""

    replicas: int
    reason: str
    detail: str
    held: bool = False
    demand: float = math.nan
    demand_upper: float = math.nan


def _decisions(rows: Sequence[_Row], pool: str) -> Decisions:
    """All replicas in `pool`, no warm slots; no forecast, so forecast = demand now."""
    n = len(rows)
    replicas = np.array([r.replicas for r in rows], dtype=np.int64)
    zeros = np.zeros(n, dtype=np.int64)
    demand = np.array([r.demand for r in rows], dtype=np.float64)
    upper = np.array([r.demand_upper for r in rows], dtype=np.float64)
    reason = np.empty(n, dtype=object)
    detail = np.empty(n, dtype=object)
    for i, r in enumerate(rows):
        reason[i], detail[i] = r.reason, r.detail
    return Decisions(
        spot=replicas if pool == "spot" else zeros,
        on_demand=replicas if pool == "on_demand" else zeros.copy(),
        warm=np.zeros(n, dtype=np.int64),
        desired_total=replicas.copy(),
        demand_now=demand,
        forecast=demand.copy(),
        forecast_upper=upper,
        reason=reason,
        detail=detail,
        held=np.array([r.held for r in rows], dtype=bool),
    )


# --------------------------------------------------------------------------------------------
# HPA
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HPAWorkloadState:
    """One HPA: the controller's history for it and the time of its last sync."""

    history: HPAHistory = HPAHistory()
    last_sync_s: float | None = None


@dataclass(frozen=True)
class HPABaselineState:
    workloads: tuple[HPAWorkloadState, ...]


def _hpa_reconcile(
    ws: HPAWorkloadState,
    *,
    behavior: HPABehavior | None,
    tolerances: Tolerances,
    metric: str,
    target_type: str,
    target: float,
    value: float,
    current: int,
    ready: int,
    min_replicas: int,
    max_replicas: int,
    now_s: float,
    downscale_stabilization_s: float,
) -> tuple[_Row, HPAWorkloadState]:
    """HC `reconcileAutoscaler` for one HPA with one External metric."""
    history = ws.history.record_initial_recommendation(current, now_s)
    gate, why = reconcile_order(current, min_replicas, max_replicas)
    if why == SCALING_DISABLED:
        row = _Row(
            current,
            "HPAScalingDisabled",
            f"current replicas are 0 and min_replicas is {min_replicas}: scaling is disabled",
            demand=value,
            demand_upper=value,
        )
        return row, HPAWorkloadState(history, now_s)
    if gate is not None:
        if gate != current:
            history = history.record_scale_event(current, gate, behavior, now_s)
        row = _Row(
            gate,
            f"HPA{why}",
            f"current replicas {current} outside [{min_replicas}, {max_replicas}]: set to {gate}",
            demand=value,
            demand_upper=value,
        )
        return row, HPAWorkloadState(history, now_s)
    if math.isnan(value):
        # computeReplicasForMetrics fails: no recommendation is recorded, nothing changes.
        row = _Row(
            current,
            "HPAFailedGetMetric",
            f"metric {metric!r} missing or stale: holding {current} replicas",
            held=True,
        )
        return row, HPAWorkloadState(history, now_s)
    if target_type == "AverageValue":
        proposal = replicas_for_average_value(current, value, target, tolerances).replicas
    else:
        proposal = replicas_for_value(current, value, target, ready, tolerances)
    if behavior is None:
        norm = normalize_desired_replicas(
            history,
            current,
            proposal,
            min_replicas,
            max_replicas,
            now_s,
            downscale_stabilization_s,
        )
    else:
        norm = normalize_desired_replicas_with_behaviors(
            history, behavior, current, proposal, min_replicas, max_replicas, now_s
        )
    history = norm.history
    if norm.replicas != current:
        history = history.record_scale_event(current, norm.replicas, behavior, now_s)
    row = _Row(
        norm.replicas,
        "HPASync",
        f"{metric}={value:g} vs {target_type} target {target:g}: metrics propose {proposal}, "
        f"{norm.summary_reason} -> {norm.replicas} (current {current})",
        demand=value,
        demand_upper=value,
    )
    return row, HPAWorkloadState(history, now_s)


class HPABaseline:
    """Kubernetes HPA on one External metric (horizontal.go `reconcileAutoscaler`).

    Every `sync_period_s` (the `--horizontal-pod-autoscaler-sync-period` flag, 15 s) it reads
    the newest sample of `metric`, proposes replicas with `replicas_for_average_value`
    (target_type "AverageValue": `target` per replica, KEDA's default) or
    `replicas_for_value` ("Value": `target` in total, scaled by ready pods), and normalizes
    with the legacy path (`behavior=None`: max over `downscale_stabilization_s`, scale-up at
    most max(2*current, 4)) or with `behavior` (a `BehaviorSpec`, Kubernetes' defaults filled
    in). Current replicas are `obs.cluster.current_total` (upstream's spec.replicas, also used
    as status.replicas); ready pods `obs.cluster.ready_total`. Between syncs it keeps the
    current count. A missing metric holds the count (fail static, as upstream).

    Defaults: metric "running", target_type "AverageValue", sync_period_s 15, tolerance 0.1
    (also the behavior's when it sets none), downscale_stabilization_s 300, behavior None,
    pool "on_demand". `target` has no default.
    """

    name = "hpa"

    def __init__(
        self,
        *,
        target: float,
        metric: str = "running",
        target_type: str = "AverageValue",
        sync_period_s: float = DEFAULT_SYNC_PERIOD_S,
        tolerance: float = DEFAULT_TOLERANCE,
        behavior: BehaviorSpec | None = None,
        downscale_stabilization_s: float = DEFAULT_DOWNSCALE_STABILIZATION_S,
        pool: str = "on_demand",
    ) -> None:
        if not target > 0:
            raise ValueError(f"target must be > 0; found {target}")
        if target_type not in ("AverageValue", "Value"):
            raise ValueError(f"target_type must be AverageValue or Value; found {target_type!r}")
        if not sync_period_s > 0:
            raise ValueError(f"sync_period_s must be > 0; found {sync_period_s}")
        self.target = float(target)
        self.metric = _check_metric(metric)
        self.target_type = target_type
        self.sync_period_s = float(sync_period_s)
        self.downscale_stabilization_s = float(downscale_stabilization_s)
        self.behavior = resolve_behavior(behavior, downscale_stabilization_s, tolerance)
        self.tolerances = (
            Tolerances(tolerance, tolerance) if self.behavior is None else self.behavior.tolerances
        )
        self.pool = _check_pool(pool)

    def initial_state(self, specs: Any) -> HPABaselineState:
        n = len(_bounds(specs)[0])
        return HPABaselineState(tuple(HPAWorkloadState() for _ in range(n)))

    def decide(
        self, specs: Any, state: HPABaselineState, obs: Observation, now_s: float
    ) -> tuple[Decisions, HPABaselineState]:
        lo, hi = _bounds(specs)
        _check_n(self.name, len(state.workloads), obs, len(lo))
        value = _latest(obs, self.metric)
        current = obs.cluster.current_total
        ready = obs.cluster.ready_total
        rows: list[_Row] = []
        new: list[HPAWorkloadState] = []
        for i, ws in enumerate(state.workloads):
            cur = int(current[i])
            if not _due(ws.last_sync_s, self.sync_period_s, now_s):
                rows.append(_Row(cur, "HPAWaitSync", "between HPA syncs: no change"))
                new.append(ws)
                continue
            row, ws = _hpa_reconcile(
                ws,
                behavior=self.behavior,
                tolerances=self.tolerances,
                metric=self.metric,
                target_type=self.target_type,
                target=self.target,
                value=float(value[i]),
                current=cur,
                ready=int(ready[i]),
                min_replicas=lo[i],
                max_replicas=hi[i],
                now_s=now_s,
                downscale_stabilization_s=self.downscale_stabilization_s,
            )
            rows.append(row)
            new.append(ws)
        return _decisions(rows, self.pool), HPABaselineState(tuple(new))


# --------------------------------------------------------------------------------------------
# KEDA
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KEDAWorkloadState:
    """One ScaledObject: its HPA, and the executor's poll time and `status.lastActiveTime`.
    `first_seen_s` stands for the ScaledObject's creation (initialCooldownPeriod)."""

    hpa: HPAWorkloadState = HPAWorkloadState()
    last_poll_s: float | None = None
    last_active_s: float | None = None
    first_seen_s: float | None = None


@dataclass(frozen=True)
class KEDABaselineState:
    workloads: tuple[KEDAWorkloadState, ...]


class KEDABaseline:
    """KEDA ScaledObject with one trigger: the executor over a generated HPA.

    Executor (scale_scaledobjects.go `RequestScale`, every `polling_interval_s`): the trigger
    is active iff value > `activation` (metrics-api `activationTargetValue` semantics). Active
    with 0 replicas: scale to max(min_replica_count, 1) ("KEDAActivate") and stamp
    lastActiveTime; active otherwise: stamp lastActiveTime. Inactive with replicas and
    min_replica_count 0: scale to 0 once lastActiveTime + `cooldown_s` is before now
    ("KEDADeactivate"; with no lastActiveTime, once `initial_cooldown_s` has passed since the
    object was first seen). Inactive below min_replica_count: scale to it. A failed read (NaN)
    makes no change (no fallback configured: the ScaledObject turns not Ready).

    HPA (controllers/keda/hpa.go, every `sync_period_s`): AverageValue `target` per replica on
    the metric, minReplicas max(1, min_replica_count), maxReplicas `max_replica_count` (None:
    the spec's max_replicas), `behavior` passed through (advanced.horizontalPodAutoscalerConfig).
    At 0 replicas the HPA is disabled, so only the executor moves 0 <-> 1. When the executor
    changes the count in a tick, the HPA waits for its next sync.

    Defaults (apis/keda/v1alpha1, scale_executor.go): metric "queue", activation 0,
    polling_interval_s 30, cooldown_s 300, initial_cooldown_s 0, min_replica_count 0,
    max_replica_count None, sync_period_s 15, tolerance 0.1, behavior None, pool "on_demand".
    `target` has no default.
    """

    name = "keda"

    def __init__(
        self,
        *,
        target: float,
        metric: str = "queue",
        activation: float = 0.0,
        polling_interval_s: float = 30.0,
        cooldown_s: float = 300.0,
        initial_cooldown_s: float = 0.0,
        min_replica_count: int = 0,
        max_replica_count: int | None = None,
        sync_period_s: float = DEFAULT_SYNC_PERIOD_S,
        tolerance: float = DEFAULT_TOLERANCE,
        behavior: BehaviorSpec | None = None,
        downscale_stabilization_s: float = DEFAULT_DOWNSCALE_STABILIZATION_S,
        pool: str = "on_demand",
    ) -> None:
        problems = []
        if not target > 0:
            problems.append(f"target must be > 0; found {target}")
        if not polling_interval_s > 0:
            problems.append(f"polling_interval_s must be > 0; found {polling_interval_s}")
        if not sync_period_s > 0:
            problems.append(f"sync_period_s must be > 0; found {sync_period_s}")
        if cooldown_s < 0 or initial_cooldown_s < 0:
            problems.append(
                f"cooldown_s and initial_cooldown_s must be >= 0; found {cooldown_s}, "
                f"{initial_cooldown_s}"
            )
        if min_replica_count < 0:
            problems.append(f"min_replica_count must be >= 0; found {min_replica_count}")
        if max_replica_count is not None and max_replica_count < max(1, min_replica_count):
            problems.append(
                f"max_replica_count must be >= max(1, min_replica_count); found "
                f"max_replica_count={max_replica_count}, min_replica_count={min_replica_count}"
            )
        if problems:
            raise ValueError("; ".join(problems))
        self.target = float(target)
        self.metric = _check_metric(metric)
        self.activation = float(activation)
        self.polling_interval_s = float(polling_interval_s)
        self.cooldown_s = float(cooldown_s)
        self.initial_cooldown_s = float(initial_cooldown_s)
        self.min_replica_count = int(min_replica_count)
        self.max_replica_count = max_replica_count
        self.sync_period_s = float(sync_period_s)
        self.downscale_stabilization_s = float(downscale_stabilization_s)
        self.behavior = resolve_behavior(behavior, downscale_stabilization_s, tolerance)
        self.tolerances = (
            Tolerances(tolerance, tolerance) if self.behavior is None else self.behavior.tolerances
        )
        self.pool = _check_pool(pool)

    def initial_state(self, specs: Any) -> KEDABaselineState:
        n = len(_bounds(specs)[0])
        return KEDABaselineState(tuple(KEDAWorkloadState() for _ in range(n)))

    def _execute(
        self, ws: KEDAWorkloadState, value: float, current: int, now_s: float
    ) -> tuple[_Row | None, KEDAWorkloadState]:
        """One executor poll; a row only when it changes the replica count."""
        ws = KEDAWorkloadState(ws.hpa, now_s, ws.last_active_s, ws.first_seen_s)
        if math.isnan(value):
            return None, ws  # scaler error, no fallback: nothing changes
        active = value > self.activation
        if active:
            ws = KEDAWorkloadState(ws.hpa, now_s, now_s, ws.first_seen_s)
            if current == 0:
                to = max(self.min_replica_count, 1)
                detail = f"{self.metric}={value:g} > activation {self.activation:g}: 0 -> {to}"
                return _Row(to, "KEDAActivate", detail, demand=value, demand_upper=value), ws
            return None, ws
        if current > 0 and self.min_replica_count == 0:
            if ws.last_active_s is None:
                since = ws.first_seen_s if ws.first_seen_s is not None else now_s
                cooled = since + self.initial_cooldown_s < now_s
            else:
                cooled = ws.last_active_s + self.cooldown_s < now_s
            if cooled:
                detail = (
                    f"{self.metric}={value:g} <= activation {self.activation:g} for the "
                    f"cooldown ({self.cooldown_s:g} s): {current} -> 0"
                )
                return _Row(0, "KEDADeactivate", detail, demand=value, demand_upper=value), ws
            return None, ws
        if current < self.min_replica_count:
            to = self.min_replica_count
            detail = f"inactive below min_replica_count: {current} -> {to}"
            return _Row(to, "KEDAMinReplicas", detail, demand=value, demand_upper=value), ws
        return None, ws

    def decide(
        self, specs: Any, state: KEDABaselineState, obs: Observation, now_s: float
    ) -> tuple[Decisions, KEDABaselineState]:
        _, spec_max = _bounds(specs)
        _check_n(self.name, len(state.workloads), obs, len(spec_max))
        value = _latest(obs, self.metric)
        current = obs.cluster.current_total
        ready = obs.cluster.ready_total
        rows: list[_Row] = []
        new: list[KEDAWorkloadState] = []
        for i, ws in enumerate(state.workloads):
            cur, v = int(current[i]), float(value[i])
            if ws.first_seen_s is None:
                ws = KEDAWorkloadState(ws.hpa, ws.last_poll_s, ws.last_active_s, now_s)
            row: _Row | None = None
            if _due(ws.last_poll_s, self.polling_interval_s, now_s):
                row, ws = self._execute(ws, v, cur, now_s)
            if row is None and _due(ws.hpa.last_sync_s, self.sync_period_s, now_s):
                hpa_max = spec_max[i] if self.max_replica_count is None else self.max_replica_count
                row, hpa = _hpa_reconcile(
                    ws.hpa,
                    behavior=self.behavior,
                    tolerances=self.tolerances,
                    metric=self.metric,
                    target_type="AverageValue",
                    target=self.target,
                    value=v,
                    current=cur,
                    ready=int(ready[i]),
                    min_replicas=max(1, self.min_replica_count),
                    max_replicas=hpa_max,
                    now_s=now_s,
                    downscale_stabilization_s=self.downscale_stabilization_s,
                )
                ws = KEDAWorkloadState(hpa, ws.last_poll_s, ws.last_active_s, ws.first_seen_s)
            if row is None:
                row = _Row(cur, "KEDAWait", "no executor or HPA action this tick")
            rows.append(row)
            new.append(ws)
        return _decisions(rows, self.pool), KEDABaselineState(tuple(new))


# --------------------------------------------------------------------------------------------
# Knative KPA
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KPADeciderSpec:
    """The parts of knative `DeciderSpec` that `Scale` reads (scaling/multiscaler.go).

    target: TargetValue per pod (concurrency or RPS). Defaults are config-autoscaler's:
    panic threshold 200% (2.0), max scale up/down rates 1000 and 2, stable window 60 s.
    """

    target: float
    panic_threshold: float = 2.0
    max_scale_up_rate: float = 1000.0
    max_scale_down_rate: float = 2.0
    stable_window_s: float = 60.0
    reachable: bool = True
    activation_scale: int = 1


@dataclass(frozen=True)
class KPAScalerState:
    """knative `autoscaler` panic state: panic_time_s None = not panicking."""

    panic_time_s: float | None = None
    max_panic_pods: int = 0

    @classmethod
    def new(cls, ready_pods: int, now_s: float) -> KPAScalerState:
        """autoscaler.go `newAutoscaler`: start in panic when more than one pod is ready, so
        a restarted autoscaler (which has lost its metric history) never scales down at once."""
        if ready_pods > 1:
            return cls(now_s, ready_pods)
        return cls(None, max(ready_pods, 0))


def kpa_scale(
    state: KPAScalerState,
    spec: KPADeciderSpec,
    ready_pods: int,
    observed_stable: float,
    observed_panic: float,
    now_s: float,
) -> tuple[int, KPAScalerState]:
    """knative autoscaler.go `(*autoscaler).Scale` (no scale-down delay, no burst capacity).

    ready = max(1, ready_pods); the stable and panic pod counts ceil(observed / target) are
    kept in [floor(ready / max_scale_down_rate) (0 when unreachable),
    ceil(max_scale_up_rate * ready)] and raised to activation_scale when > 0. Panic begins
    when ceil(panic / target) / ready >= panic_threshold, is extended on every such tick, and
    ends once not over the threshold and panic_time + stable_window is before now. In panic the
    count is max(stable, panic) and never decreases (max_panic_pods).
    """
    ready = max(1.0, float(ready_pods))
    max_scale_up = math.ceil(spec.max_scale_up_rate * ready)
    max_scale_down = math.floor(ready / spec.max_scale_down_rate) if spec.reachable else 0.0
    dspc = math.ceil(observed_stable / spec.target)
    dppc = math.ceil(observed_panic / spec.target)
    stable_pods = int(min(max(dspc, max_scale_down), max_scale_up))
    panic_pods = int(min(max(dppc, max_scale_down), max_scale_up))
    if spec.activation_scale > 1:
        if dspc > 0 and spec.activation_scale > stable_pods:
            stable_pods = spec.activation_scale
        if dppc > 0 and spec.activation_scale > panic_pods:
            panic_pods = spec.activation_scale

    over = dppc / ready >= spec.panic_threshold
    panic_time, max_panic = state.panic_time_s, state.max_panic_pods
    if over:
        panic_time = now_s  # begin, or extend, the panic
    elif panic_time is not None and panic_time + spec.stable_window_s < now_s:
        panic_time, max_panic = None, 0  # the surge has reached the stable window

    desired = stable_pods
    if panic_time is not None:
        desired = max(desired, panic_pods)
        # Never scale down in panic mode.
        max_panic = max(max_panic, desired)
        desired = max_panic
    return desired, KPAScalerState(panic_time, max_panic)


@dataclass(frozen=True)
class KPAWorkloadState:
    """One revision's decider (None until the first tick), tick time and scale-to-zero clock."""

    scaler: KPAScalerState | None = None
    last_tick_s: float | None = None
    zero_since_s: float | None = None


@dataclass(frozen=True)
class KPABaselineState:
    workloads: tuple[KPAWorkloadState, ...]


def window_average(t_s: F64, values: F64, now_s: float, window_s: float) -> F64:
    """Per workload, the mean of the non-NaN samples with now - window < t <= now (NaN when
    there is none): the stable or panic window average of knative's metric collector."""
    inside = (t_s > now_s - window_s) & (t_s <= now_s)
    picked = np.where(inside[None, :] & ~np.isnan(values), values, 0.0)
    count = (inside[None, :] & ~np.isnan(values)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean: F64 = np.where(count > 0, picked.sum(axis=1) / np.maximum(count, 1), np.nan)
    return mean


class KPABaseline:
    """Knative Pod Autoscaler on in-flight concurrency (autoscaler.go `Scale`).

    Every `tick_s` (knative's tickInterval, 2 s) it averages the observed concurrency, the sum
    of `metrics` ("running" + "queue": requests in flight, waiting or served), over the stable
    window (`stable_window_s`) and the panic window (`panic_window_pct` of it), and runs
    `kpa_scale` with target = `target` or max(1, total * target_utilization), total being
    `container_concurrency` or 100 when it is 0 (resources/target.go `ResolveMetricTarget`).
    Then the KPA reconciler's part: [min_replicas, max_replicas] of the spec (min-scale /
    max-scale); with `enable_scale_to_zero` False the count is at least 1; a count of 0 is
    applied only after the decider has asked for 0 for `scale_to_zero_grace_s` (until then the
    current count stays). No samples in either window: no change (knative's invalid scale
    result). The decider starts in panic when more than one pod is ready.

    Defaults (config-autoscaler): metrics ("running", "queue"), container_concurrency 0,
    target_utilization 0.7 (target 70), stable_window_s 60, panic_window_pct 10,
    panic_threshold_pct 200, max_scale_up_rate 1000, max_scale_down_rate 2,
    scale_to_zero_grace_s 30, enable_scale_to_zero True, tick_s 2, pool "on_demand".
    Not modelled: scale-down-delay, target burst capacity / activator, initial-scale.
    """

    name = "kpa"

    def __init__(
        self,
        *,
        metrics: Sequence[str] = ("running", "queue"),
        container_concurrency: float = 0.0,
        target_utilization: float = 0.7,
        target: float | None = None,
        stable_window_s: float = 60.0,
        panic_window_pct: float = 10.0,
        panic_threshold_pct: float = 200.0,
        max_scale_up_rate: float = 1000.0,
        max_scale_down_rate: float = 2.0,
        scale_to_zero_grace_s: float = 30.0,
        enable_scale_to_zero: bool = True,
        tick_s: float = 2.0,
        pool: str = "on_demand",
    ) -> None:
        problems = []
        if not metrics:
            problems.append("metrics must name at least one metric family")
        if container_concurrency < 0:
            problems.append(f"container_concurrency must be >= 0; found {container_concurrency}")
        if not 0 < target_utilization <= 1:
            problems.append(f"target_utilization must be in (0, 1]; found {target_utilization}")
        if target is not None and not target > 0:
            problems.append(f"target must be > 0; found {target}")
        if not stable_window_s > 0 or not 0 < panic_window_pct <= 100:
            problems.append(
                f"stable_window_s must be > 0 and panic_window_pct in (0, 100]; found "
                f"{stable_window_s}, {panic_window_pct}"
            )
        if not max_scale_up_rate > 1 or not max_scale_down_rate > 1:
            problems.append(
                f"max_scale_up_rate and max_scale_down_rate must be > 1 (knative validation); "
                f"found {max_scale_up_rate}, {max_scale_down_rate}"
            )
        if not tick_s > 0:
            problems.append(f"tick_s must be > 0; found {tick_s}")
        if problems:
            raise ValueError("; ".join(problems))
        self.metrics = tuple(_check_metric(m) for m in metrics)
        total = container_concurrency if container_concurrency > 0 else 100.0
        self.target = float(target) if target is not None else max(1.0, total * target_utilization)
        self.spec = KPADeciderSpec(
            target=self.target,
            panic_threshold=panic_threshold_pct / 100.0,
            max_scale_up_rate=float(max_scale_up_rate),
            max_scale_down_rate=float(max_scale_down_rate),
            stable_window_s=float(stable_window_s),
        )
        self.panic_window_s = stable_window_s * panic_window_pct / 100.0
        self.scale_to_zero_grace_s = float(scale_to_zero_grace_s)
        self.enable_scale_to_zero = bool(enable_scale_to_zero)
        self.tick_s = float(tick_s)
        self.pool = _check_pool(pool)

    def initial_state(self, specs: Any) -> KPABaselineState:
        n = len(_bounds(specs)[0])
        return KPABaselineState(tuple(KPAWorkloadState() for _ in range(n)))

    def _concurrency(self, obs: Observation) -> F64:
        """Sum of the metric families; NaN only where all of them are missing."""
        arrays = [obs.metric(m) for m in self.metrics]
        missing = np.logical_and.reduce([np.isnan(a) for a in arrays])
        total = np.sum([np.nan_to_num(a, nan=0.0) for a in arrays], axis=0)
        values: F64 = np.where(missing, np.nan, total)
        if obs.stale is not None:
            values = np.where(obs.stale[:, None], np.nan, values)
        return values

    def decide(
        self, specs: Any, state: KPABaselineState, obs: Observation, now_s: float
    ) -> tuple[Decisions, KPABaselineState]:
        lo, hi = _bounds(specs)
        _check_n(self.name, len(state.workloads), obs, len(lo))
        conc = self._concurrency(obs)
        stable = window_average(obs.t_s, conc, now_s, self.spec.stable_window_s)
        panic = window_average(obs.t_s, conc, now_s, self.panic_window_s)
        current = obs.cluster.current_total
        ready = obs.cluster.ready_total
        rows: list[_Row] = []
        new: list[KPAWorkloadState] = []
        for i, ws in enumerate(state.workloads):
            cur, rdy = int(current[i]), int(ready[i])
            if not _due(ws.last_tick_s, self.tick_s, now_s):
                rows.append(_Row(cur, "KPAWaitTick", "between autoscaler ticks: no change"))
                new.append(ws)
                continue
            scaler = ws.scaler if ws.scaler is not None else KPAScalerState.new(rdy, now_s)
            s, p = float(stable[i]), float(panic[i])
            if math.isnan(s) or math.isnan(p):
                rows.append(
                    _Row(cur, "KPANoData", "no concurrency samples in the windows: no change", True)
                )
                new.append(KPAWorkloadState(scaler, now_s, ws.zero_since_s))
                continue
            desired, scaler = kpa_scale(scaler, self.spec, rdy, s, p, now_s)
            mode = "KPAPanic" if scaler.panic_time_s is not None else "KPAStable"
            detail = (
                f"concurrency stable={s:g} panic={p:g} target={self.target:g} ready={rdy}: "
                f"{'panic' if mode == 'KPAPanic' else 'stable'} mode wants {desired}"
            )
            # The reconciler: min-scale / max-scale first, then the scale-to-zero rules.
            bounded = min(max(desired, lo[i]), hi[i])
            if bounded != desired:
                detail += f"; bounded to [{lo[i]}, {hi[i]}]: {bounded}"
            zero_since = None
            reason = mode
            if bounded == 0 and not self.enable_scale_to_zero:
                bounded, detail = 1, detail + "; scale to zero disabled: 1"
            elif bounded == 0 and cur > 0:
                zero_since = ws.zero_since_s if ws.zero_since_s is not None else now_s
                if now_s - zero_since < self.scale_to_zero_grace_s:
                    bounded, reason = cur, "KPAScaleToZeroGrace"
                    detail += f"; holding {cur} for the scale-to-zero grace period"
                else:
                    reason = "KPAScaleToZero"
            rows.append(_Row(bounded, reason, detail, demand=s, demand_upper=max(s, p)))
            new.append(KPAWorkloadState(scaler, now_s, zero_since))
        return _decisions(rows, self.pool), KPABaselineState(tuple(new))


# --------------------------------------------------------------------------------------------
# Static
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StaticState:
    n: int


class StaticPolicy:
    """A fixed replica count in one pool, whatever the load: a deployment sized by hand.
    The spec's bounds are not applied (the count is the experiment's parameter)."""

    name = "static"

    def __init__(self, replicas: int, pool: str = "on_demand") -> None:
        if replicas < 0:
            raise ValueError(f"replicas must be >= 0; found {replicas}")
        self.replicas = int(replicas)
        self.pool = _check_pool(pool)

    def initial_state(self, specs: Any) -> StaticState:
        return StaticState(len(_bounds(specs)[0]))

    def decide(
        self, specs: Any, state: StaticState, obs: Observation, now_s: float
    ) -> tuple[Decisions, StaticState]:
        _check_n(self.name, state.n, obs, len(_bounds(specs)[0]))
        row = _Row(self.replicas, "Static", f"static policy: {self.replicas} replicas")
        return _decisions([row] * state.n, self.pool), state


__all__ = [
    "HPABaseline",
    "HPABaselineState",
    "HPAWorkloadState",
    "KEDABaseline",
    "KEDABaselineState",
    "KEDAWorkloadState",
    "KPABaseline",
    "KPABaselineState",
    "KPADeciderSpec",
    "KPAScalerState",
    "KPAWorkloadState",
    "StaticPolicy",
    "StaticState",
    "kpa_scale",
    "window_average",
]
