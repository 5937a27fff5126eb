"""The policy part of a workload's spec: one pydantic model, validated at the boundary.

Everything here is data. `PolicySpec` is what `policies.decide` needs to know about one
workload; the service's custom resource (`autoscaler.config.WorkloadSpec`) embeds it
unchanged, so the CRD schema, the YAML config file and the simulator all read the same model.

SLO classes are presets: `slo.slo_class` fills pool, warm-pool and forecast defaults that the
spec did not set explicitly (seed article's table):

| class    | target      | preset                                                          |
|----------|-------------|-----------------------------------------------------------------|
| tight    | < 100 ms    | on-demand baseline, small pre-warm pool, forecast upper bound   |
| moderate | 100-200 ms  | mixed spot and on-demand, burst buffer, bound at SLO percentile |
| flexible | > 200 ms    | mostly spot, no warm pool, forecast mean (deferred batch)       |

`validate_policy_spec` raises one `SpecError` that lists every problem with its field path.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class Scenario(StrEnum):
    """Which scenario policy decides for the workload (DESIGN.md's table)."""

    CHAT = "chat"
    RAG = "rag"
    STREAMING = "streaming"
    BATCH = "batch"


class SLOClass(StrEnum):
    TIGHT = "tight"
    MODERATE = "moderate"
    FLEXIBLE = "flexible"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class SLOSpec(_Model):
    """Latency objective: `percentile` of `metric` at most `target_s` seconds."""

    slo_class: SLOClass = Field(
        default=SLOClass.MODERATE, description="Preset for pools, warm pool and forecast bound."
    )
    metric: Literal["ttft", "itl", "e2e"] = Field(
        default="ttft", description="ttft: time to first token; itl: inter-token; e2e: end to end."
    )
    target_s: float = Field(default=0.5, gt=0, description="Latency target in seconds.")
    percentile: float = Field(default=95.0, gt=0, lt=100, description="e.g. 95 for P95.")


class CapacitySpec(_Model):
    """What one replica sustains inside its SLO, in the units of the scenario's metric.

    chat needs `rps_per_replica`; rag needs `queue_per_replica` (target in-flight requests,
    waiting plus running, per replica); streaming needs `streams_per_replica` (the GPU
    concurrency cap per pod) or `tokens_per_s_per_replica`; batch needs `rps_per_replica`
    (items/s one replica drains).
    """

    rps_per_replica: float | None = Field(default=None, gt=0, description="requests/s.")
    tokens_per_s_per_replica: float | None = Field(default=None, gt=0, description="tokens/s.")
    streams_per_replica: float | None = Field(
        default=None, gt=0, description="Concurrent streams per pod (GPU concurrency cap)."
    )
    queue_per_replica: float | None = Field(
        default=None, gt=0, description="Target in-flight requests (waiting + running) per pod."
    )
    target_utilization: float = Field(
        default=0.8, gt=0, le=1, description="Fraction of capacity to plan for (headroom = 1 - u)."
    )


class LeadTimeSpec(_Model):
    """Seconds from a scale-up decision until the new replica serves."""

    cold_s: float = Field(default=300.0, ge=0, description="New GPU node (nothing cached).")
    warm_s: float = Field(default=45.0, ge=0, description="Replica landing on a warm-pool slot.")


class ForecastSpec(_Model):
    """Predictive smoothing of the scenario's demand metric."""

    method: Literal["none", "ewma", "holt", "holt_winters"] = Field(
        default="holt", description="holt_winters falls back to holt until 2 seasons are seen."
    )
    alpha: float = Field(default=0.3, gt=0, le=1, description="Level smoothing per sample.")
    beta: float = Field(default=0.05, ge=0, le=1, description="Trend smoothing per sample.")
    gamma: float = Field(default=0.1, ge=0, le=1, description="Season smoothing per sample.")
    season_s: float = Field(default=86400.0, gt=0, description="Season length in seconds.")
    quantile: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description=(
            "Upper prediction bound quantile; None takes the SLO class preset (tight 0.95,"
            " moderate the SLO's own percentile, flexible 0.5: the mean)."
        ),
    )
    fit: bool = Field(default=True, description="Refit alpha/beta/gamma on a slow schedule.")
    calibrate: bool = Field(
        default=True,
        description=(
            "Bound the forecast at the planning horizon by its own scored errors there "
            "(policies.calibration) instead of the model's variance, once enough are scored."
        ),
    )
    error_window_s: float = Field(
        default=1800.0,
        gt=0,
        description="Memory of the scored forecast errors, seconds (exponential weighting).",
    )
    observation_lag_s: float = Field(
        default=30.0,
        ge=0,
        le=3600,
        description=(
            "Age of the demand signal in seconds, added to the lead time: a rate over a 60 s "
            "window describes the load about 30 s ago."
        ),
    )


class ScalingPolicySpec(_Model):
    """One HPA rate policy (`HPAScalingPolicy`)."""

    type: Literal["Pods", "Percent"]
    value: int = Field(gt=0)
    period_seconds: int = Field(gt=0, le=1800, alias="periodSeconds")


class ScalingRulesSpec(_Model):
    """HPA `HPAScalingRules` for one direction. Fields left unset keep the scenario's default
    behavior for this direction, and where that sets none either, Kubernetes' default."""

    stabilization_window_seconds: int | None = Field(
        default=None, ge=0, le=3600, alias="stabilizationWindowSeconds"
    )
    select_policy: Literal["Max", "Min", "Disabled"] | None = Field(
        default=None, alias="selectPolicy"
    )
    policies: list[ScalingPolicySpec] | None = None
    tolerance: float | None = Field(default=None, ge=0)


class BehaviorSpec(_Model):
    """HPA `behavior`, laid over the scenario's default behavior field by field: a direction
    or field left unset keeps the scenario's value."""

    # (The HPA and KEDA baselines take a BehaviorSpec too, with Kubernetes' semantics: unset
    # fields take Kubernetes' defaults and None is the legacy no-behavior path.)

    scale_up: ScalingRulesSpec | None = Field(default=None, alias="scaleUp")
    scale_down: ScalingRulesSpec | None = Field(default=None, alias="scaleDown")


class PoolSpec(_Model):
    """Spot / on-demand split and warm-pool sizing. None takes the SLO class preset."""

    spot_enabled: bool = True
    base_on_demand_replicas: int | None = Field(default=None, ge=0)
    base_on_demand_ratio: float | None = Field(default=None, ge=0, le=1)
    min_warm: int | None = Field(default=None, ge=0)
    max_warm: int | None = Field(default=None, ge=0)
    warm_floor_from_replicas: int | None = Field(
        default=None,
        ge=0,
        description=(
            "min_warm applies once the serving replicas reach this many; below, warm slots"
            " come only from the forecast's headroom (one slot beside one replica doubles"
            " its GPU bill). Unset: the SLO class preset, or 0 when min_warm is set."
        ),
    )
    spot_pending_limit_s: float = Field(
        default=120.0, ge=0, description="Spot pods pending longer than this spill to on-demand."
    )
    spot_healthy_hold_s: float = Field(
        default=300.0, ge=0, description="Spot must be healthy this long before spill drains."
    )


class RagSpec(_Model):
    short_window_s: float = Field(default=30.0, gt=0)
    long_window_s: float = Field(default=300.0, gt=0)
    burst_factor: float = Field(default=2.0, gt=1, description="short/long mean that is a burst.")


class StreamingSpec(_Model):
    headroom_ratio: float = Field(default=0.1, ge=0, le=5)


class SilenceSpec(_Model):
    """Sudden silence: steady demand that falls from its recent peak to (nearly) nothing
    within a minute or two is far more often an upstream outage (gateway, load balancer,
    client fleet) than the end of demand (bursty demand, silent between bursts, is not
    held), and the traffic comes back all at once when it heals. Chat, rag
    and streaming workloads hold their replicas through such a silence for `hold_s`
    seconds instead of scaling in, so the return meets warm capacity rather than a cold
    start; a silence that lasts longer is treated as real and scaled down as usual. Batch
    workloads ignore it (they scale to zero on purpose)."""

    ratio: float = Field(
        default=0.05,
        ge=0,
        lt=1,
        description="Demand at or below this fraction of its peak over the last 5 min is silence.",
    )
    hold_s: float = Field(
        default=1800.0,
        ge=0,
        le=86400,
        description="Seconds to hold replicas through a sudden silence (0 disables).",
    )


class BatchSpec(_Model):
    deadline_s: float = Field(
        default=3600.0,
        gt=0,
        description="Backlog must drain by then (an e2e SLO target, when shorter, instead).",
    )
    scale_to_zero: bool = True
    idle_s: float = Field(
        default=300.0,
        ge=0,
        description="Idle this long before going to zero (then the scale-down window).",
    )


class ScheduleEntrySpec(_Model):
    """Scheduled capacity (pre-warm before known launches, time-of-day bounds)."""

    name: str = Field(min_length=1)
    cron: str | None = Field(default=None, description="5-field cron expression.")
    timezone: str = Field(default="UTC")
    start: str | None = Field(default=None, description="One-off ISO 8601 start time.")
    duration_s: float = Field(gt=0)
    prewarm_s: float = Field(default=0.0, ge=0, description="Act this long before the start.")
    min_spot: int | None = Field(default=None, ge=0)
    min_on_demand: int | None = Field(default=None, ge=0)
    min_warm: int | None = Field(default=None, ge=0)
    min_replicas: int | None = Field(default=None, ge=0)
    min_demand: float | None = Field(default=None, ge=0, description="Floor on forecast demand.")


class PolicySpec(_Model):
    """The policy part of one workload's spec (units in every name)."""

    scenario: Scenario
    slo: SLOSpec = Field(default_factory=SLOSpec)
    min_replicas: int = Field(default=1, ge=0)
    max_replicas: int = Field(default=10, ge=1)
    capacity: CapacitySpec = Field(default_factory=CapacitySpec)
    lead_time: LeadTimeSpec = Field(default_factory=LeadTimeSpec)
    forecast: ForecastSpec = Field(default_factory=ForecastSpec)
    behavior: BehaviorSpec | None = Field(
        default=None, description="HPA behavior; None takes the scenario's default behavior."
    )
    pools: PoolSpec = Field(default_factory=PoolSpec)
    rag: RagSpec = Field(default_factory=RagSpec)
    streaming: StreamingSpec = Field(default_factory=StreamingSpec)
    batch: BatchSpec = Field(default_factory=BatchSpec)
    silence: SilenceSpec = Field(default_factory=SilenceSpec)
    schedules: list[ScheduleEntrySpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _cross_field(self) -> PolicySpec:
        problems = cross_field_problems(self)
        if problems:
            raise ValueError(PROBLEM_SEP.join(f"{p}: {m}" for p, m in problems))
        return self

    # Presets resolved: every None above becomes a number here.
    @property
    def resolved_pools(self) -> ResolvedPools:
        return resolve_pools(self)

    @property
    def forecast_quantile(self) -> float:
        if self.forecast.quantile is not None:
            return self.forecast.quantile
        preset = SLO_PRESETS[self.slo.slo_class]["forecast_quantile"]
        if preset is None:  # plan on the bound the SLO itself is written at (P95 -> 0.95)
            return self.slo.percentile / 100.0
        return float(preset)


class ResolvedPools(_Model):
    spot_enabled: bool
    base_on_demand_replicas: int
    base_on_demand_ratio: float
    min_warm: int
    max_warm: int
    warm_floor_from_replicas: int
    spot_pending_limit_s: float
    spot_healthy_hold_s: float


SLO_PRESETS: dict[SLOClass, dict[str, Any]] = {
    # tight: the baseline runs on on-demand; a small warm pool absorbs what the forecast misses
    # (its floor from 4 serving replicas up, where one slot costs at most a quarter more).
    SLOClass.TIGHT: {
        "base_on_demand_ratio": 0.5,
        "base_on_demand_replicas": 1,
        "min_warm": 1,
        "max_warm": 4,
        "forecast_quantile": 0.95,
        "warm_floor_from_replicas": 4,
    },
    # moderate: mostly spot with some on-demand, a burst buffer of warm slots; the forecast
    # bound at the SLO's own percentile (at 0.8, rag on the bursty Azure code trace met its
    # P95 for 86 % of requests on the trace's first half; at 0.95, 94.7 %).
    SLOClass.MODERATE: {
        "base_on_demand_ratio": 0.2,
        "base_on_demand_replicas": 0,
        "min_warm": 0,
        "max_warm": 2,
        "forecast_quantile": None,
        "warm_floor_from_replicas": 4,
    },
    # flexible: spot only, no warm pool, plan on the forecast mean.
    SLOClass.FLEXIBLE: {
        "base_on_demand_ratio": 0.0,
        "base_on_demand_replicas": 0,
        "min_warm": 0,
        "max_warm": 0,
        "forecast_quantile": 0.5,
        "warm_floor_from_replicas": 0,
    },
}


def resolve_pools(spec: PolicySpec) -> ResolvedPools:
    """Fill the pool fields the spec left unset from its SLO class preset."""
    preset = SLO_PRESETS[spec.slo.slo_class]
    p = spec.pools

    def pick(value: Any, key: str) -> Any:
        return preset[key] if value is None else value

    return ResolvedPools(
        spot_enabled=p.spot_enabled,
        base_on_demand_replicas=pick(p.base_on_demand_replicas, "base_on_demand_replicas"),
        base_on_demand_ratio=pick(p.base_on_demand_ratio, "base_on_demand_ratio"),
        min_warm=pick(p.min_warm, "min_warm"),
        max_warm=pick(p.max_warm, "max_warm"),
        # a min_warm the spec sets is meant at every size; the preset's only at scale
        warm_floor_from_replicas=(
            p.warm_floor_from_replicas
            if p.warm_floor_from_replicas is not None
            else 0
            if p.min_warm is not None
            else preset["warm_floor_from_replicas"]
        ),
        spot_pending_limit_s=p.spot_pending_limit_s,
        spot_healthy_hold_s=p.spot_healthy_hold_s,
    )


_REQUIRED_CAPACITY: dict[Scenario, tuple[str, ...]] = {
    Scenario.CHAT: ("rps_per_replica",),
    Scenario.RAG: ("queue_per_replica",),
    Scenario.STREAMING: ("streams_per_replica", "tokens_per_s_per_replica"),
    Scenario.BATCH: ("rps_per_replica",),
}


def cross_field_problems(spec: PolicySpec) -> list[tuple[str, str]]:
    """Rules that span fields, as (field path, message) pairs."""
    problems: list[tuple[str, str]] = []
    if spec.min_replicas > spec.max_replicas:
        problems.append(
            (
                "min_replicas",
                f"must be <= max_replicas; found min_replicas={spec.min_replicas}, "
                f"max_replicas={spec.max_replicas}",
            )
        )
    needed = _REQUIRED_CAPACITY[spec.scenario]
    if all(getattr(spec.capacity, f) is None for f in needed):
        problems.append(
            (
                "capacity." + needed[0],
                f"scenario {spec.scenario.value!r} needs "
                + " or ".join(f"capacity.{f}" for f in needed),
            )
        )
    pools = spec.pools
    if (
        pools.min_warm is not None
        and pools.max_warm is not None
        and pools.min_warm > pools.max_warm
    ):
        problems.append(
            (
                "pools.min_warm",
                f"must be <= pools.max_warm; found min_warm={pools.min_warm}, "
                f"max_warm={pools.max_warm}",
            )
        )
    if spec.rag.short_window_s >= spec.rag.long_window_s:
        problems.append(
            (
                "rag.short_window_s",
                f"must be < rag.long_window_s; found {spec.rag.short_window_s} >= "
                f"{spec.rag.long_window_s}",
            )
        )
    return problems


# Cross-field validators report several problems in one ValueError, one per line.
PROBLEM_SEP = "\n"


class SpecError(ValueError):
    """A spec failed validation. `problems` lists (field path, message) for every problem."""

    def __init__(self, problems: list[tuple[str, str]], source: str = "spec") -> None:
        self.problems = problems
        self.source = source
        lines = "\n".join(f"  - {path}: {msg}" for path, msg in problems)
        super().__init__(f"invalid {source}: {len(problems)} problem(s)\n{lines}")


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(root)"


def problems_from_validation_error(err: ValidationError, prefix: str = "") -> list[tuple[str, str]]:
    """Turn pydantic's errors into (field path, message) pairs; cross-field messages split."""
    problems: list[tuple[str, str]] = []
    for e in err.errors(include_url=False):
        loc = tuple(e["loc"])
        path = _path(loc)
        msg = str(e["msg"])
        if e["type"] == "value_error" and msg.startswith("Value error, "):
            # our cross-field validator joined "path: message; path: message"
            for item in msg.removeprefix("Value error, ").split(PROBLEM_SEP):
                sub, _, text = item.partition(": ")
                full = ".".join(p for p in (prefix, path if loc else "", sub) if p)
                problems.append((full, text))
            continue
        if "input" in e and e["type"] not in ("missing",):
            msg = f"{msg} (found {e['input']!r})"
        problems.append((f"{prefix}.{path}" if prefix else path, msg))
    return problems


def _raw_cross_field(data: Any) -> list[tuple[str, str]]:
    """Cross-field checks on raw input, so they are reported even when a field fails too."""
    if not isinstance(data, dict):
        return []
    out: list[tuple[str, str]] = []
    lo, hi = data.get("min_replicas", 1), data.get("max_replicas", 10)
    if isinstance(lo, int) and isinstance(hi, int) and lo > hi:
        out.append(
            (
                "min_replicas",
                f"must be <= max_replicas; found min_replicas={lo}, max_replicas={hi}",
            )
        )
    return out


def validate_policy_spec(data: Any, source: str = "spec", prefix: str = "") -> PolicySpec:
    """Validate raw data (a dict from YAML/JSON) into a PolicySpec or raise one SpecError."""
    try:
        return PolicySpec.model_validate(data)
    except ValidationError as err:
        problems = problems_from_validation_error(err, prefix)
        seen = {p for p, _ in problems}
        for path, msg in _raw_cross_field(data):
            full = f"{prefix}.{path}" if prefix else path
            if full not in seen:
                problems.append((full, msg))
        raise SpecError(problems, source) from None
