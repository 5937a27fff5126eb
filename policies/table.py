"""SpecTable: many PolicySpecs compiled into arrays, so one decide call is a few numpy ops.

Compiling costs ~tens of microseconds per workload; the control loop compiles once when the
workload set changes, not every tick.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from policies.forecast import METHOD_CODES
from policies.hpa import BehaviorTable
from policies.spec import (
    BehaviorSpec,
    PolicySpec,
    ScalingRulesSpec,
    Scenario,
)
from policies.types import F64, I64, B

SCENARIO_CODES: dict[Scenario, int] = {
    Scenario.CHAT: 0,
    Scenario.RAG: 1,
    Scenario.STREAMING: 2,
    Scenario.BATCH: 3,
}
CHAT, RAG, STREAMING, BATCH = 0, 1, 2, 3


def _rules(
    window_s: int, select: str, *policies: tuple[str, int, int], tolerance: float | None = None
) -> ScalingRulesSpec:
    return ScalingRulesSpec.model_validate(
        {
            "stabilizationWindowSeconds": window_s,
            "selectPolicy": select,
            "policies": [{"type": t, "value": v, "periodSeconds": p} for t, v, p in policies],
            "tolerance": tolerance,
        }
    )


# Scale-up tolerance of the serving scenarios: none. The plan already carries its margin (the
# forecast's bound at the SLO quantile); HPA's 10 % band would withhold replicas it asked for
# (at 16 replicas, up to 1.6 replicas' worth of demand unserved until the next step).
_UP_TOLERANCE = 0.0


# Behavior used when a spec leaves `behavior` unset. Scale-up is immediate everywhere (the
# forecast already looks a lead time ahead) and, for serving scenarios, without a tolerance
# band; scale-down speed follows the scenario.
SCENARIO_BEHAVIOR: dict[Scenario, BehaviorSpec] = {
    # chat: interactive with a strict P95: give back capacity slowly, one pod a minute
    # after ten quiet minutes (a cold start costs ~5 min of misses, an idle pod only money).
    Scenario.CHAT: BehaviorSpec(
        scale_up=_rules(0, "Max", ("Pods", 4, 15), ("Percent", 100, 15), tolerance=_UP_TOLERANCE),
        scale_down=_rules(600, "Max", ("Pods", 1, 60)),
    ),
    # rag: bursts come and go within minutes; halve at most once a minute after 5 quiet min.
    Scenario.RAG: BehaviorSpec(
        scale_up=_rules(0, "Max", ("Pods", 4, 15), ("Percent", 100, 15), tolerance=_UP_TOLERANCE),
        scale_down=_rules(300, "Max", ("Percent", 50, 60)),
    ),
    # streaming: sessions are long; shed two pods a minute after 5 quiet minutes.
    Scenario.STREAMING: BehaviorSpec(
        scale_up=_rules(0, "Max", ("Pods", 4, 15), ("Percent", 100, 15), tolerance=_UP_TOLERANCE),
        scale_down=_rules(300, "Max", ("Pods", 2, 60)),
    ),
    # batch: throughput only; grow fast to meet the deadline, release after 5 quiet minutes
    # (sooner cancels the replicas a burst asked for before their cold start is over).
    Scenario.BATCH: BehaviorSpec(
        scale_up=_rules(0, "Max", ("Pods", 8, 15), ("Percent", 200, 15)),
        scale_down=_rules(300, "Max", ("Percent", 100, 15)),
    ),
}


def behavior_for(spec: PolicySpec) -> BehaviorSpec:
    """The spec's `behavior` over its scenario's default, field by field: a direction or a
    field the spec leaves unset keeps the scenario's value (a spec that only slows
    scale-down keeps the serving scenarios' scale-up without a tolerance band)."""
    base = SCENARIO_BEHAVIOR[spec.scenario]
    if spec.behavior is None:
        return base
    return base.model_copy(
        update={
            "scale_up": _over(spec.behavior.scale_up, base.scale_up),
            "scale_down": _over(spec.behavior.scale_down, base.scale_down),
        }
    )


def _over(rules: ScalingRulesSpec | None, base: ScalingRulesSpec | None) -> ScalingRulesSpec | None:
    """`rules`' set fields over `base` (either may be missing)."""
    if rules is None:
        return base
    if base is None:
        return rules
    return base.model_copy(update={k: v for k, v in rules if v is not None})


def _capacity(spec: PolicySpec) -> tuple[float, float]:
    """(capacity per replica in the primary metric's units, planning utilization)."""
    c = spec.capacity
    if spec.scenario is Scenario.CHAT:
        return float(c.rps_per_replica or 1.0), c.target_utilization
    if spec.scenario is Scenario.RAG:
        return float(c.queue_per_replica or 1.0), c.target_utilization
    if spec.scenario is Scenario.STREAMING:
        # A concurrency cap is a hard limit per pod: plan on it fully, headroom comes from
        # streaming.headroom_ratio. A tokens/s capacity is a throughput: plan at utilization.
        if c.streams_per_replica is not None:
            return float(c.streams_per_replica), 1.0
        return float(c.tokens_per_s_per_replica or 1.0), c.target_utilization
    return float(c.rps_per_replica or 1.0), 1.0


@dataclass(frozen=True)
class SpecTable:
    """Compiled specs ([n] arrays). Build with `SpecTable.compile(specs)`."""

    specs: tuple[PolicySpec, ...]
    scenario: I64
    min_replicas: I64
    max_replicas: I64
    capacity: F64  # per replica, primary metric units
    utilization: F64
    uses_tokens: B  # streaming on tokens/s instead of streams
    rag_rps_capacity: F64  # rag: optional rps per replica (NaN when not set)
    lead_cold_s: F64
    lead_warm_s: F64
    quantile: F64
    method: I64
    alpha: F64
    beta: F64
    gamma: F64
    season_s: F64
    observation_lag_s: F64
    calibrate: B
    error_window_s: F64
    spot_enabled: B
    base_on_demand: I64
    base_on_demand_ratio: F64
    min_warm: I64
    max_warm: I64
    warm_floor_from_replicas: I64  # min_warm applies from this many serving replicas
    spot_pending_limit_s: F64
    spot_healthy_hold_s: F64
    rag_short_s: F64
    rag_long_s: F64
    rag_burst_factor: F64
    stream_headroom: F64
    batch_deadline_s: F64
    batch_idle_s: F64
    batch_to_zero: B
    silence_ratio: F64
    silence_hold_s: F64  # 0 for batch (never holds)
    behavior: BehaviorTable

    @property
    def n(self) -> int:
        return len(self.specs)

    @classmethod
    def compile(cls, specs: Sequence[PolicySpec]) -> SpecTable:
        specs = tuple(specs)
        caps = [_capacity(s) for s in specs]
        pools = [s.resolved_pools for s in specs]

        def f(values: list[Any]) -> F64:
            return np.asarray(values, dtype=np.float64).reshape(len(specs))

        def i(values: list[Any]) -> I64:
            return np.asarray(values, dtype=np.int64).reshape(len(specs))

        def b(values: list[Any]) -> B:
            return np.asarray(values, dtype=np.bool_).reshape(len(specs))

        batch = [s.scenario is Scenario.BATCH for s in specs]
        return cls(
            specs=specs,
            scenario=i([SCENARIO_CODES[s.scenario] for s in specs]),
            min_replicas=i([s.min_replicas for s in specs]),
            max_replicas=i([s.max_replicas for s in specs]),
            capacity=f([c for c, _ in caps]),
            utilization=f([u for _, u in caps]),
            uses_tokens=b(
                [
                    s.scenario is Scenario.STREAMING and s.capacity.streams_per_replica is None
                    for s in specs
                ]
            ),
            rag_rps_capacity=f(
                [
                    s.capacity.rps_per_replica
                    if s.scenario is Scenario.RAG and s.capacity.rps_per_replica
                    else np.nan
                    for s in specs
                ]
            ),
            lead_cold_s=f([s.lead_time.cold_s for s in specs]),
            lead_warm_s=f([s.lead_time.warm_s for s in specs]),
            quantile=f([s.forecast_quantile for s in specs]),
            method=i([METHOD_CODES[s.forecast.method] for s in specs]),
            alpha=f([s.forecast.alpha for s in specs]),
            beta=f([s.forecast.beta for s in specs]),
            gamma=f([s.forecast.gamma for s in specs]),
            season_s=f([s.forecast.season_s for s in specs]),
            observation_lag_s=f([s.forecast.observation_lag_s for s in specs]),
            calibrate=b([s.forecast.calibrate for s in specs]),
            error_window_s=f([s.forecast.error_window_s for s in specs]),
            spot_enabled=b([p.spot_enabled for p in pools]),
            # batch prefers spot: no on-demand base unless the spec sets one explicitly
            base_on_demand=i(
                [
                    (s.pools.base_on_demand_replicas or 0) if bt else p.base_on_demand_replicas
                    for s, p, bt in zip(specs, pools, batch, strict=True)
                ]
            ),
            base_on_demand_ratio=f(
                [
                    (s.pools.base_on_demand_ratio or 0.0) if bt else p.base_on_demand_ratio
                    for s, p, bt in zip(specs, pools, batch, strict=True)
                ]
            ),
            min_warm=i([p.min_warm for p in pools]),
            max_warm=i([p.max_warm for p in pools]),
            warm_floor_from_replicas=i([p.warm_floor_from_replicas for p in pools]),
            spot_pending_limit_s=f([p.spot_pending_limit_s for p in pools]),
            spot_healthy_hold_s=f([p.spot_healthy_hold_s for p in pools]),
            rag_short_s=f([s.rag.short_window_s for s in specs]),
            rag_long_s=f([s.rag.long_window_s for s in specs]),
            rag_burst_factor=f([s.rag.burst_factor for s in specs]),
            stream_headroom=f([s.streaming.headroom_ratio for s in specs]),
            # an end-to-end SLO shorter than the drain deadline is the deadline
            batch_deadline_s=f(
                [
                    min(s.batch.deadline_s, s.slo.target_s)
                    if s.slo.metric == "e2e"
                    else s.batch.deadline_s
                    for s in specs
                ]
            ),
            batch_idle_s=f([s.batch.idle_s for s in specs]),
            batch_to_zero=b([s.batch.scale_to_zero for s in specs]),
            silence_ratio=f([s.silence.ratio for s in specs]),
            silence_hold_s=f(
                [0.0 if bt else s.silence.hold_s for s, bt in zip(specs, batch, strict=True)]
            ),
            behavior=BehaviorTable.compile([behavior_for(s) for s in specs]),
        )

    def take(self, idx: I64 | list[int]) -> SpecTable:
        ix = np.asarray(idx, dtype=np.int64)
        out: dict[str, Any] = {}
        for fld in fields(self):
            v = getattr(self, fld.name)
            if fld.name == "specs":
                out["specs"] = tuple(self.specs[int(j)] for j in ix)
            elif fld.name == "behavior":
                out["behavior"] = self.behavior.take(ix)
            else:
                out[fld.name] = v[ix]
        return SpecTable(**out)
