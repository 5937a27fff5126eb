"""Value types that flow through `policies.decide`: observations in, decisions and state out.

Shapes: `n` = number of workloads, `s` = samples in the metric window. All arrays are numpy;
float64 for metrics (NaN = missing), int64 for replica counts. Nothing here is mutated after
construction: policies return new values.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Protocol, TypeVar

import numpy as np
from numpy.typing import NDArray

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
B = NDArray[np.bool_]

# Metric families the observation may carry ([n, s] float64 each, NaN = missing).
METRIC_FAMILIES: tuple[str, ...] = (
    "rps",  # arriving requests/s
    "queue",  # waiting requests (queue depth)
    "running",  # requests being served (in flight)
    "tokens_ps",  # tokens/s (prompt + generated, as configured)
    "streams",  # active streams (image/ASR/chat sessions holding a GPU slot)
    "backlog",  # batch items waiting
    "backlog_age_s",  # age of the oldest batch item, seconds
)

POOLS: tuple[str, ...] = ("spot", "on_demand", "warm")


def _i64(x: Any, n: int) -> I64:
    a = np.asarray(x, dtype=np.int64)
    return np.broadcast_to(a, (n,)).copy() if a.ndim == 0 else a


@dataclass(frozen=True)
class ClusterFacts:
    """What the cluster looks like now, per workload ([n] int64 each).

    `current_*` are the scale subresource's spec.replicas of each pool's Deployment (what
    HPA calls current replicas); `ready_*` count Ready pods. `spot_at_risk` counts spot
    replicas on nodes under an interruption notice; `spot_pending_too_long` spot pods
    pending longer than the pool's limit.
    """

    current_spot: I64
    current_on_demand: I64
    current_warm: I64
    ready_spot: I64
    ready_on_demand: I64
    ready_warm: I64
    spot_at_risk: I64
    spot_pending_too_long: I64

    @property
    def n(self) -> int:
        return int(self.current_spot.shape[0])

    @property
    def current_total(self) -> I64:
        """Serving replicas asked for (spot + on-demand; warm slots do not serve)."""
        return self.current_spot + self.current_on_demand

    @property
    def ready_total(self) -> I64:
        return self.ready_spot + self.ready_on_demand

    @classmethod
    def uniform(
        cls,
        n: int,
        spot: int = 0,
        on_demand: int = 1,
        warm: int = 0,
        ready: bool = True,
    ) -> ClusterFacts:
        """All workloads alike; handy for tests and benchmarks."""
        z = np.zeros(n, dtype=np.int64)
        return cls(
            current_spot=_i64(spot, n),
            current_on_demand=_i64(on_demand, n),
            current_warm=_i64(warm, n),
            ready_spot=_i64(spot if ready else 0, n),
            ready_on_demand=_i64(on_demand if ready else 0, n),
            ready_warm=_i64(warm if ready else 0, n),
            spot_at_risk=z.copy(),
            spot_pending_too_long=z.copy(),
        )

    def take(self, idx: I64 | list[int]) -> ClusterFacts:
        return ClusterFacts(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})


@dataclass(frozen=True)
class Floors:
    """Scheduled floors active now, per workload ([n] each; 0 = no floor)."""

    min_spot: I64
    min_on_demand: I64
    min_warm: I64
    min_replicas: I64
    min_demand: F64
    # Name of the schedule entry that set each floor ("" when none), for reasons.
    source: NDArray[np.str_]

    @classmethod
    def none(cls, n: int) -> Floors:
        z = np.zeros(n, dtype=np.int64)
        return cls(z, z.copy(), z.copy(), z.copy(), np.zeros(n), np.full(n, "", dtype=object))

    def take(self, idx: I64 | list[int]) -> Floors:
        return Floors(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})


@dataclass(frozen=True)
class Observation:
    """Metric windows for n workloads on a shared time axis, plus cluster facts.

    t_s: [s] sample times in seconds (same clock as `now_s`), oldest first.
    metrics: family name -> [n, s] float64; NaN where a sample is missing. A family absent
      from the mapping is missing for every workload.
    stale: [n] bool; the source marks a workload whose series stopped updating.
    """

    t_s: F64
    metrics: Mapping[str, F64]
    cluster: ClusterFacts
    stale: B | None = None
    floors: Floors | None = None

    def __post_init__(self) -> None:
        n, s = self.cluster.n, int(self.t_s.shape[0])
        for name, arr in self.metrics.items():
            if name not in METRIC_FAMILIES:
                raise ValueError(f"unknown metric family {name!r}; known: {METRIC_FAMILIES}")
            if arr.shape != (n, s):
                raise ValueError(f"metrics[{name!r}] has shape {arr.shape}, expected {(n, s)}")

    @property
    def n(self) -> int:
        return self.cluster.n

    def metric(self, name: str) -> F64:
        """[n, s] array for a family; all-NaN when the family is absent."""
        arr = self.metrics.get(name)
        if arr is None:
            # a read-only all-NaN view: costs nothing however large the window
            return np.broadcast_to(np.float64(np.nan), (self.n, self.t_s.shape[0]))
        return arr

    def take(self, idx: I64 | list[int]) -> Observation:
        return Observation(
            t_s=self.t_s,
            metrics={k: v[idx] for k, v in self.metrics.items()},
            cluster=self.cluster.take(idx),
            stale=None if self.stale is None else self.stale[idx],
            floors=None if self.floors is None else self.floors.take(idx),
        )


@dataclass(frozen=True)
class Decision:
    """One workload's decision (a row of `Decisions`).

    desired replicas per pool; `forecast` and `forecast_upper` are the demand forecast at
    the lead time in the scenario metric's units; `demand_now` the smoothed current demand.
    """

    spot: int
    on_demand: int
    warm: int
    desired_total: int
    demand_now: float
    forecast: float
    forecast_upper: float
    reason: str
    message: str
    held: bool

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class LazyMessages:
    """Human messages formatted only when read: formatting 10,000 sentences each tick would
    cost more than deciding. Indexing with an int gives a str; with an index array, a view."""

    def __init__(self, fmt: Callable[[int], str], rows: I64) -> None:
        self._fmt = fmt
        self._rows = rows

    def __len__(self) -> int:
        return int(self._rows.shape[0])

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, (int, np.integer)):
            return self._fmt(int(self._rows[i]))
        return LazyMessages(self._fmt, self._rows[i])

    def __array__(self, dtype: Any = None, copy: Any = None) -> NDArray[np.object_]:
        out = np.empty(len(self), dtype=object)
        for k in range(len(self)):
            out[k] = self[k]
        return out


@dataclass(frozen=True)
class Decisions:
    """Decisions for n workloads, as arrays ([n] each). `reason` holds short codes
    (HPA-style, e.g. "ScaleUpForecast", "HoldStaleMetrics"); `detail` a human message."""

    spot: I64
    on_demand: I64
    warm: I64
    desired_total: I64
    demand_now: F64
    forecast: F64
    forecast_upper: F64
    reason: NDArray[np.object_]
    detail: NDArray[np.object_] | LazyMessages
    held: B

    @property
    def n(self) -> int:
        return int(self.spot.shape[0])

    def __getitem__(self, i: int) -> Decision:
        return Decision(
            spot=int(self.spot[i]),
            on_demand=int(self.on_demand[i]),
            warm=int(self.warm[i]),
            desired_total=int(self.desired_total[i]),
            demand_now=float(self.demand_now[i]),
            forecast=float(self.forecast[i]),
            forecast_upper=float(self.forecast_upper[i]),
            reason=str(self.reason[i]),
            message=str(self.detail[i]),
            held=bool(self.held[i]),
        )

    def take(self, idx: I64 | list[int]) -> Decisions:
        return Decisions(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})

    @classmethod
    def concat(cls, parts: list[Decisions]) -> Decisions:
        return cls(
            **{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)}
        )


S = TypeVar("S")


class Policy(Protocol[S]):
    """What the control loop calls each tick. `policies.PredictivePolicy` and the
    baselines (`policies.baselines`) implement it; the loop never knows which one it runs."""

    name: str

    def initial_state(self, specs: Any) -> S:
        """State for `specs` before any observation (what a fresh controller starts with)."""
        ...

    def decide(self, specs: Any, state: S, obs: Observation, now_s: float) -> tuple[Decisions, S]:
        """Decide for every workload in `specs` (a sequence of PolicySpec or a SpecTable)."""
        ...


__all__ = [
    "B",
    "ClusterFacts",
    "Decision",
    "Decisions",
    "F64",
    "Floors",
    "I64",
    "METRIC_FAMILIES",
    "Observation",
    "POOLS",
    "Policy",
]
