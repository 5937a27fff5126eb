"""The simulation engine: the loop's Protocols over a simulated cluster, and the driver.

`simulate(...)` replays a trace (per request, `SimCluster`) or a rate curve (aggregate,
`FluidCluster`) against one workload, calling the very `autoscaler.loop.ControlLoop` and
policy code the service runs at every poll, on a simulated clock:

    every scrape_interval_s   cluster.advance(t); SimMetricsSource.scrape(t)   (Prometheus)
    every poll_interval_s     cluster.advance(t); ControlLoop.tick(t)          (the service)

The loop sees the cluster only through the three adapters below:

- `SimMetricsSource` sees what Prometheus would: it scrapes the cluster's counters and gauges
  every scrape interval into its own series store, and `observe()` evaluates the window on
  the scrape grid with PromQL semantics: rps = rate(requests_total[rate_window]) with
  Prometheus' extrapolation rules, tokens_ps = rate of prompt + generated tokens, gauges
  (queue, running, streams) as the last scraped value. A failed scrape (an injected gap)
  leaves no sample: gauges read NaN there (Prometheus writes staleness markers), rates use
  the samples that exist, and a workload whose newest sample is older than the workload's
  `metrics.stale_after_s` is marked stale.
  `backlog` is the waiting queue; `backlog_age_s` the age of its oldest request since
  arrival (the clusters' `oldest_wait_s` gauge; 0 when nothing waits).
- `SimClusterView` turns `SimCluster.facts` into `policies.types.ClusterFacts`.
- `SimActuator` turns a scale-subresource patch into `SimCluster.set_desired`.

Initial replicas: the run starts with max(spec min_replicas, ceil(mean demand of the first
minute / capacity per replica at SLO)) ready on-demand replicas (capped at max_replicas), so
no policy starts from an empty cluster; the oracle gets the same replicas for free.

Spot reclaims: unless the cluster config carries an explicit schedule, the engine draws the
per-zone reclaim events (`zone_reclaims`, Poisson at spot_hazard_per_hour per zone) from the
seed and hands them to the cluster, so all policies run with one seed face the same reclaims
and the oracle knows them.

Cost is the cluster's billing over the whole run: the horizon plus the short tail in which
the loop keeps running until requests in flight finish (at most `SimConfig.tail_s`).

Determinism: for a given (trace, workload, policy, config, profile, seed) a run is bit-for-bit
repeatable; all randomness comes from the seed (the cluster's generators and the reclaims).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import NDArray

from autoscaler.config import Workload
from autoscaler.protocols import MetricWindows
from policies.types import ClusterFacts

if TYPE_CHECKING:
    from policies.types import Policy
    from simulator.cluster import ClusterConfig
    from simulator.oracle import OracleResult
    from simulator.service import ServiceProfile
    from simulator.traces import RateCurve, Trace

F64 = NDArray[np.float64]

# Families the simulated exporter serves. Gauges map to `SimCluster.gauges()` keys; `backlog`
# is the waiting queue (batch items are requests here).
GAUGE_FAMILIES: dict[str, str] = {
    "queue": "queue",
    "running": "running",
    "streams": "streams",
    "backlog": "queue",
    "backlog_age_s": "oldest_wait_s",
}
COUNTER_FAMILIES: dict[str, tuple[str, ...]] = {
    "rps": ("requests_total",),
    "tokens_ps": ("prompt_tokens_total", "generation_tokens_total"),
}


# -- PromQL rate() ---------------------------------------------------------------------------


def prom_rate(sample_t: F64, sample_v: F64, eval_t: F64, window_s: float) -> F64:
    """Prometheus `rate(counter[window])` evaluated at each time in `eval_t`.

    sample_t: [m] scrape times (seconds, increasing), sample_v: [m] counter values.
    The range is left-open, (t - window, t] (Prometheus 3). With fewer than two samples in
    the range the result is NaN. Counter resets (a drop) add the value before the drop. The
    increase between the first and last sample is extrapolated toward the range edges:
    fully when the gap to an edge is under 1.1x the average sample spacing, else by half a
    spacing; at the start never past the counter's extrapolated zero point (promql
    `extrapolatedRate`). Returns [len(eval_t)] requests/s (or units/s).
    """
    t = np.asarray(sample_t, dtype=np.float64)
    v = np.asarray(sample_v, dtype=np.float64)
    e = np.asarray(eval_t, dtype=np.float64)
    out = np.full(e.shape, np.nan)
    if t.size < 2 or window_s <= 0:
        return out
    # reset-corrected cumulative value: a drop means the counter restarted from zero
    drops = np.concatenate(([0.0], np.where(v[1:] < v[:-1], v[:-1], 0.0)))
    corrected = v + np.cumsum(drops)
    first = np.searchsorted(t, e - window_s, side="right")
    last = np.searchsorted(t, e, side="right") - 1
    ok = last - first >= 1
    if not ok.any():
        return out
    f, la, ee = first[ok], last[ok], e[ok]
    result = corrected[la] - corrected[f]
    sampled = t[la] - t[f]
    avg = sampled / (la - f)
    threshold = avg * 1.1
    to_start = t[f] - (ee - window_s)
    to_end = ee - t[la]
    to_start = np.where(to_start >= threshold, avg / 2, to_start)
    with np.errstate(divide="ignore", invalid="ignore"):
        to_zero = np.where((result > 0) & (v[f] >= 0), sampled * (v[f] / result), to_start)
    to_start = np.minimum(to_start, to_zero)
    to_end = np.where(to_end >= threshold, avg / 2, to_end)
    factor = (sampled + to_start + to_end) / sampled / window_s
    out[ok] = result * factor
    return out


# -- the series store ------------------------------------------------------------------------


class _Series:
    """Append-only scrape attempts: times, success flags and one column per series."""

    def __init__(self, names: Sequence[str], capacity: int = 1024) -> None:
        self.names = tuple(names)
        self.n = 0
        self.t = np.empty(capacity)
        self.ok = np.empty(capacity, dtype=bool)
        self.values = np.empty((len(self.names), capacity))

    def append(self, t_s: float, ok: bool, values: Sequence[float]) -> None:
        if self.n and t_s <= self.t[self.n - 1]:
            raise ValueError(f"scrape at {t_s} s is not after the previous {self.t[self.n - 1]} s")
        if self.n == self.t.shape[0]:
            cap = 2 * self.n
            self.t = np.resize(self.t, cap)
            self.ok = np.resize(self.ok, cap)
            grown = np.empty((len(self.names), cap))
            grown[:, : self.n] = self.values[:, : self.n]
            self.values = grown
        self.t[self.n] = t_s
        self.ok[self.n] = ok
        self.values[:, self.n] = values if ok else np.nan
        self.n += 1

    def column(self, name: str) -> int:
        return self.names.index(name)


class SimMetricsSource:
    """`autoscaler.protocols.MetricsSource` over a simulated cluster, as Prometheus sees it.

    cluster: anything with `counters()` and `gauges()` dicts (SimCluster, FluidCluster).
    workload: the workload whose series these are; other workloads read all-missing.
    scrape_interval_s: Prometheus scrape interval (15 s default); rate_window_s: the rate()
    range (60 s); window_s: how far back `observe` returns samples (600 s);
    scrape_gaps: (start_s, end_s) spans where scrapes fail (target down), for tests.
    """

    def __init__(
        self,
        cluster: Any,
        workload: Workload,
        scrape_interval_s: float = 15.0,
        rate_window_s: float | None = None,
        window_s: float = 600.0,
        scrape_gaps: Sequence[tuple[float, float]] = (),
    ) -> None:
        if scrape_interval_s <= 0:
            raise ValueError(f"scrape_interval_s must be > 0; found {scrape_interval_s}")
        if window_s <= 0:
            raise ValueError(f"window_s must be > 0; found {window_s}")
        self.cluster = cluster
        self.workload = workload
        self.scrape_interval_s = float(scrape_interval_s)
        rw = workload.spec.metrics.rate_window_s if rate_window_s is None else rate_window_s
        self.rate_window_s = float(rw)
        self.window_s = float(window_s)
        self.stale_after_s = float(workload.spec.metrics.stale_after_s)
        self.scrape_gaps = tuple((float(a), float(b)) for a, b in scrape_gaps)
        counters = sorted({c for cs in COUNTER_FAMILIES.values() for c in cs})
        gauges = sorted(set(GAUGE_FAMILIES.values()))
        self._counter_names = counters
        self._gauge_names = gauges
        self._series = _Series(counters + gauges)
        # every family evaluated at each scrape attempt: a point's value depends only on
        # samples at or before it, so it is computed once, when first observed
        self._fams = (*COUNTER_FAMILIES, *GAUGE_FAMILIES)
        self._cache = np.empty((len(self._fams), 1024))
        self._n_cached = 0
        self.scrapes = 0
        self.failed_scrapes = 0

    # -- scraping -----------------------------------------------------------------------------

    def in_gap(self, t_s: float) -> bool:
        return any(a <= t_s < b for a, b in self.scrape_gaps)

    def scrape(self, now_s: float) -> bool:
        """Scrape the cluster's exporter at now_s (the cluster must have advanced to it).
        Returns False when the scrape fails (inside an injected gap)."""
        ok = not self.in_gap(now_s)
        values: list[float] = []
        if ok:
            counters = self.cluster.counters()
            gauges = self.cluster.gauges()
            values = [float(counters.get(c, np.nan)) for c in self._counter_names]
            values += [float(gauges.get(g, np.nan)) for g in self._gauge_names]
        self._series.append(now_s, ok, values)
        self.scrapes += 1
        self.failed_scrapes += int(not ok)
        return ok

    def last_ok_scrape_s(self, now_s: float = math.inf) -> float:
        """Time of the newest successful scrape at or before now_s (-inf: none)."""
        s = self._series
        i = int(np.searchsorted(s.t[: s.n], now_s, side="right")) - 1
        while i >= 0 and not s.ok[i]:  # walk back over a gap (gaps are short)
            i -= 1
        return float(s.t[i]) if i >= 0 else -math.inf

    # -- evaluation ---------------------------------------------------------------------------

    def evaluate(self, eval_t: F64) -> dict[str, F64]:
        """Every family at the given times (PromQL semantics); [len(eval_t)] each."""
        s = self._series
        e = np.asarray(eval_t, dtype=np.float64)
        out: dict[str, F64] = {}
        if e.size == 0 or s.n == 0:
            return {f: np.full(e.shape, np.nan) for f in (*COUNTER_FAMILIES, *GAUGE_FAMILIES)}
        # only attempts that can matter: from one rate window before the first point
        lo = int(np.searchsorted(s.t[: s.n], e.min() - self.rate_window_s, side="right"))
        hi = int(np.searchsorted(s.t[: s.n], e.max(), side="right"))
        t = s.t[lo:hi]
        ok = s.ok[lo:hi]
        vals = s.values[:, lo:hi]
        for fam, names in COUNTER_FAMILIES.items():
            total = np.zeros(e.shape)
            for name in names:
                col = vals[s.column(name)]
                good = ok & np.isfinite(col)
                total = total + prom_rate(t[good], col[good], e, self.rate_window_s)
            out[fam] = total
        # gauges: the value of the latest attempt at or before each point; a failed attempt
        # (staleness marker) or none at all reads NaN
        idx = np.searchsorted(t, e, side="right") - 1
        has = idx >= 0
        for fam, name in GAUGE_FAMILIES.items():
            col = vals[s.column(name)]
            g = np.full(e.shape, np.nan)
            g[has] = col[idx[has]]
            out[fam] = g
        return out

    def _windows(
        self,
        workloads: Sequence[Workload],
        eval_t: F64,
        now_s: float,
        values: dict[str, F64] | None = None,
    ) -> MetricWindows:
        n = len(workloads)
        if values is None:
            values = self.evaluate(eval_t)
        fams = [f for f in values if np.isfinite(values[f]).any()]
        metrics = {f: np.full((n, eval_t.size), np.nan) for f in fams}
        stale = np.ones(n, dtype=bool)
        errors: dict[int, str] = {}
        fresh = now_s - self.last_ok_scrape_s(now_s) <= self.stale_after_s
        for i, w in enumerate(workloads):
            if w.key != self.workload.key:
                errors[i] = f"no simulated series for {w.key}"
                continue
            for f in fams:
                metrics[f][i] = values[f]
            stale[i] = not fresh
        return MetricWindows(t_s=eval_t, metrics=metrics, stale=stale, errors=errors)

    def observe(self, workloads: Sequence[Workload], now_s: float) -> MetricWindows:
        """The last `window_s` of every family on the scrape grid, newest point <= now_s."""
        s = self._series
        t = s.t[: s.n]
        lo = int(np.searchsorted(t, now_s - self.window_s, side="right"))
        hi = int(np.searchsorted(t, now_s, side="right"))
        if hi > self._n_cached:
            fresh = self.evaluate(t[self._n_cached : hi])
            if hi > self._cache.shape[1]:
                grown = np.empty((len(self._fams), max(hi, 2 * self._cache.shape[1])))
                grown[:, : self._n_cached] = self._cache[:, : self._n_cached]
                self._cache = grown
            for k, fam in enumerate(self._fams):
                self._cache[k, self._n_cached : hi] = fresh[fam]
            self._n_cached = hi
        values = {fam: self._cache[k, lo:hi] for k, fam in enumerate(self._fams)}
        return self._windows(workloads, t[lo:hi].copy(), now_s, values)

    def history(
        self, workloads: Sequence[Workload], start_s: float, end_s: float, step_s: float
    ) -> MetricWindows:
        """Families evaluated every step_s over [start_s, end_s] (a range query)."""
        if step_s <= 0:
            raise ValueError(f"step_s must be > 0; found {step_s}")
        n_pts = int(math.floor((end_s - start_s) / step_s + 1e-9)) + 1
        grid = start_s + step_s * np.arange(max(n_pts, 0), dtype=np.float64)
        return self._windows(workloads, grid, end_s)


class SimClusterView:
    """`autoscaler.protocols.ClusterView` over a simulated cluster (one workload)."""

    def __init__(self, cluster: Any, workload: Workload) -> None:
        self.cluster = cluster
        self.workload = workload
        self.spot_pending_limit_s = effective_pools(workload).spot_pending_limit_s

    def facts(self, workloads: Sequence[Workload], now_s: float) -> ClusterFacts:
        f = self.cluster.facts(now_s, self.spot_pending_limit_s)
        mine = np.array([w.key == self.workload.key for w in workloads], dtype=bool)
        cols = {name: np.where(mine, int(f[name]), 0).astype(np.int64) for name in _FACT_NAMES}
        return ClusterFacts(**cols)


_FACT_NAMES = (
    "current_spot",
    "current_on_demand",
    "current_warm",
    "ready_spot",
    "ready_on_demand",
    "ready_warm",
    "spot_at_risk",
    "spot_pending_too_long",
)


def effective_pools(workload: Workload) -> Any:
    from policies import effective_policy_spec

    return effective_policy_spec(workload.spec.policy, workload.spec.targets).resolved_pools


@dataclass(frozen=True)
class ScaleEvent:
    """One patch the loop made: at t_s, pool from -> to, with the decision's reason."""

    t_s: float
    pool: str
    from_replicas: int
    to_replicas: int
    reason: str


class SimActuator:
    """`autoscaler.protocols.Actuator` over a simulated cluster: a patch of a Deployment's
    scale subresource becomes `set_desired(pool, replicas, now_s)`. The driver sets
    `now_s` before each tick (the Protocol carries no time)."""

    def __init__(self, cluster: Any, workload: Workload) -> None:
        self.cluster = cluster
        self.workload = workload
        self.now_s = 0.0
        t = workload.spec.targets
        self._pool_of: dict[str, str] = {}
        for pool in ("spot", "on_demand", "warm"):
            name = getattr(t, pool)
            if name is not None:
                self._pool_of[name] = pool
        self.events: list[ScaleEvent] = []

    def set_replicas(self, namespace: str, deployment: str, replicas: int, reason: str) -> bool:
        from autoscaler.protocols import PermanentError

        if namespace != self.workload.namespace or deployment not in self._pool_of:
            raise PermanentError(f"deployment {namespace}/{deployment} not found")
        if replicas < 0:
            raise PermanentError(f"replicas must be >= 0; found {replicas}")
        pool = self._pool_of[deployment]
        have = int(self.cluster.desired(pool))
        if have == replicas:
            return False
        self.cluster.set_desired(pool, int(replicas), self.now_s)
        self.events.append(ScaleEvent(self.now_s, pool, have, int(replicas), reason))
        return True


# -- the driver ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SimConfig:
    """How a run is driven.

    poll_interval_s: control tick (the loop's period and the oracle's resolution);
    scrape_interval_s: Prometheus scrape; rate_window_s: rate() range; window_s: how much
    history each observation carries; cluster: the simulated world (None: ClusterConfig());
    mode: "request" (per-request SimCluster) or "aggregate" (FluidCluster over a rate curve);
    warmup_s: seconds from the start whose arrivals the report leaves out (eval_start_s,
    absolute, overrides it); tail_s: after the horizon, how long the loop keeps running at
    most so requests in flight can finish (unfinished ones count as dropped);
    aggregate_bin_s: bin of the rate curve made from a per-request trace in aggregate mode;
    fluid_step_s: FluidCluster step; oracle_windows_s: the burst windows of the oracle's
    required replicas for a per-request trace (simulator.oracle.required_from_arrivals);
    oracle_smooth_s: the centered smoothing of the demand curve shown in plots
    (timeline "demand_rps"); scrape_gaps: injected scrape failures (start_s, end_s).
    """

    poll_interval_s: float = 5.0
    scrape_interval_s: float = 15.0
    rate_window_s: float = 60.0
    window_s: float = 600.0
    cluster: ClusterConfig | None = None
    mode: Literal["request", "aggregate"] = "request"
    warmup_s: float = 0.0
    eval_start_s: float | None = None
    tail_s: float = 600.0
    aggregate_bin_s: float = 5.0
    fluid_step_s: float = 5.0
    oracle_smooth_s: float = 60.0
    oracle_windows_s: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0)
    scrape_gaps: tuple[tuple[float, float], ...] = ()

    def __post_init__(self) -> None:
        problems = []
        for name in (
            "poll_interval_s",
            "scrape_interval_s",
            "rate_window_s",
            "window_s",
            "aggregate_bin_s",
            "fluid_step_s",
        ):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
                problems.append(f"{name} must be > 0; found {v!r}")
        if not (self.warmup_s >= 0 and self.tail_s >= 0 and self.oracle_smooth_s >= 0):
            problems.append(
                f"warmup_s, tail_s and oracle_smooth_s must be >= 0; found {self.warmup_s}, "
                f"{self.tail_s}, {self.oracle_smooth_s}"
            )
        if self.mode not in ("request", "aggregate"):
            problems.append(f"mode must be 'request' or 'aggregate'; found {self.mode!r}")
        if problems:
            raise ValueError("invalid SimConfig: " + "; ".join(problems))

    def cluster_config(self) -> ClusterConfig:
        from simulator.cluster import ClusterConfig

        return self.cluster if self.cluster is not None else ClusterConfig()


@dataclass(frozen=True)
class RunResult:
    """One policy's run on one trace: per-request outcomes, cost and timelines.

    Requests ([m] arrays): arrival_s, first_token_s, finish_s (NaN when not served), itl_s
    (mean inter-token gap of the request, NaN for one-token outputs), output_tokens, dropped
    (rejected, timed out, or unfinished when the run ended), weight (requests a row stands
    for: 1 in request mode; in aggregate mode a row is one fluid step's cohort, with the
    step's mean latencies).
    Cost: gpu_seconds_by_pool / cost_usd_by_pool billed over the whole run (horizon + tail).
    timeline: the cluster's samples ("t_s", "desired_<pool>", "ready_<pool>", "queue",
      "running") and, on the poll grid, "poll_t_s", "required" (oracle's replicas needed),
      "demand_rps", and the loop's decisions "decided_total", "forecast", "demand_now",
      "held" (1.0 when the policy held).
    required: [ticks] int64, the oracle's r(t) at poll resolution; capacity_rps: capacity
    per replica at the SLO behind it; spot_interruptions: the reclaim schedule the cluster
    ran with, (t_s, zone).
    """

    policy: str
    trace: str
    workload: Workload
    mode: str
    seed: int
    start_s: float
    end_s: float
    eval_start_s: float
    arrival_s: F64
    first_token_s: F64
    finish_s: F64
    itl_s: F64
    output_tokens: F64
    dropped: NDArray[np.bool_]
    weight: F64
    gpu_seconds_by_pool: dict[str, float]
    cost_usd_by_pool: dict[str, float]
    timeline: dict[str, F64]
    scale_events: list[ScaleEvent]
    interruptions: int
    initial_replicas: int
    capacity_rps: float
    required: NDArray[np.int64]
    poll_interval_s: float
    cluster: ClusterConfig
    spot_interruptions: tuple[tuple[float, int], ...]
    wall_s: float
    metrics_scrapes: int = 0
    failed_scrapes: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_requests(self) -> float:
        return float(self.weight.sum())


def capacity_at_slo(
    workload: Workload,
    profile: ServiceProfile,
    mean_input_tokens: float,
    mean_output_tokens: float,
    itl_slo_ms: float | None = None,
) -> float:
    """Requests/s one replica sustains inside the workload's SLO (ServiceProfile.capacity_rps).

    A TTFT SLO passes its target as ttft_slo_s, an ITL SLO as itl_slo_ms, an e2e SLO as an
    ITL budget of target / mean output tokens; `itl_slo_ms` adds an ITL bound (the report's
    ITL target) to a TTFT or e2e SLO. Raises ValueError when nothing fits the SLO."""
    slo = workload.spec.policy.slo
    ttft: float | None = None
    itl: float | None = itl_slo_ms
    if slo.metric == "ttft":
        ttft = slo.target_s
    elif slo.metric == "itl":
        itl = slo.target_s * 1000.0
    else:
        budget = slo.target_s * 1000.0 / max(mean_output_tokens, 1.0)
        itl = budget if itl is None else min(itl, budget)
    cap = float(
        profile.capacity_rps(mean_input_tokens, mean_output_tokens, itl_slo_ms=itl, ttft_slo_s=ttft)
    )
    if not cap > 0:
        raise ValueError(
            f"the service profile sustains no load inside the SLO ({slo.metric} <= "
            f"{slo.target_s} s) for {mean_input_tokens:.0f} input / {mean_output_tokens:.0f} "
            "output tokens"
        )
    return cap


def queue_budget_s(
    workload: Workload, profile: ServiceProfile, mean_input_tokens: float, mean_output_tokens: float
) -> float | None:
    """Seconds a request may wait in the queue and still meet the SLO: the TTFT target for a
    TTFT SLO; the e2e target minus the unloaded service time for an e2e SLO (>= 0); None for
    an ITL SLO (waiting does not change the inter-token gap)."""
    slo = workload.spec.policy.slo
    if slo.metric == "ttft":
        return float(slo.target_s)
    if slo.metric == "e2e":
        ss = profile.steady_state(1.0, mean_input_tokens, mean_output_tokens)
        service_s = (ss.ttft_ms + (mean_output_tokens - 1.0) * ss.itl_ms) / 1000.0
        return max(0.0, float(slo.target_s) - float(service_s))
    return None


def zone_reclaims(
    config: ClusterConfig, start_s: float, end_s: float, seed: int
) -> tuple[tuple[float, int], ...]:
    """A per-zone spot reclaim schedule: Poisson events at spot_hazard_per_hour per zone over
    [start_s, end_s), drawn from `seed` alone, as (t_s, zone) sorted by time."""
    h = config.spot_hazard_per_hour
    if h <= 0:
        return ()
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5EC1A1]))
    out: list[tuple[float, int]] = []
    for z in range(config.zones):
        t = start_s
        while True:
            t += float(rng.exponential(3600.0 / h))
            if t >= end_s:
                break
            out.append((t, z))
    return tuple(sorted(out))


@dataclass(frozen=True)
class Demand:
    """A run's horizon and demand on the poll grid (times: seconds from the trace start).

    demand_rps: [T] arrival rate per tick (a trace: centered mean over oracle_smooth_s; a
    curve: its bin's rate); required: [T] the oracle's replicas needed (a trace: the burst
    bound of simulator.oracle.required_from_arrivals; a curve: ceil(rate / capacity));
    capacity_rps: capacity per replica at the SLO."""

    start_s: float
    end_s: float
    n_ticks: int
    demand_rps: F64
    required: NDArray[np.int64]
    capacity_rps: float
    mean_input_tokens: float
    mean_output_tokens: float


def demand_for(
    trace_or_curve: Trace | RateCurve,
    workload: Workload,
    profile: ServiceProfile,
    config: SimConfig,
    itl_slo_ms: float | None = None,
) -> Demand:
    """Horizon, demand and required replicas for a run (see `Demand`)."""
    from simulator.oracle import demand_per_tick, required_from_arrivals, required_replicas

    src: Any = trace_or_curve
    name = str(getattr(src, "name", "trace"))
    dt = config.poll_interval_s
    start_s = 0.0
    curve = _is_curve(src)
    if len(src) == 0:
        raise ValueError(f"{'rate curve' if curve else 'trace'} {name!r} is empty")
    if curve:
        end_s = float(src.duration_s)
        m_in, m_out = float(src.mean_input_tokens), float(src.mean_output_tokens)
    else:
        end_s = max(float(src.duration_s), float(src.arrival_s[-1]) + 1e-6)
        m_in = float(np.mean(src.input_tokens))
        m_out = float(np.mean(src.output_tokens))
    n_ticks = max(1, math.ceil((end_s - start_s) / dt - 1e-9))
    end_s = start_s + n_ticks * dt
    capacity = capacity_at_slo(workload, profile, m_in, m_out, itl_slo_ms)
    if curve:
        demand = _curve_rate_at(src, start_s + dt * np.arange(n_ticks, dtype=np.float64))
        required = required_replicas(demand, capacity)
    else:
        demand = demand_per_tick(src.arrival_s, start_s, end_s, dt, config.oracle_smooth_s)
        budget = queue_budget_s(workload, profile, m_in, m_out)
        required = required_from_arrivals(
            src.arrival_s, start_s, end_s, dt, capacity, budget, config.oracle_windows_s
        )
    return Demand(start_s, end_s, n_ticks, demand, required, capacity, m_in, m_out)


def _is_curve(source: Any) -> bool:
    return hasattr(source, "rate_rps") and not hasattr(source, "arrival_s")


def simulate(
    trace_or_curve: Trace | RateCurve,
    workload: Workload,
    policy: Policy[Any],
    config: SimConfig | None = None,
    profile: ServiceProfile | None = None,
    seed: int = 0,
    progress: Callable[[float, float], None] | None = None,
    itl_slo_ms: float | None = None,
    schedules: Any = None,
) -> RunResult:
    """Run `policy` for `workload` on a trace (request or aggregate mode) or a rate curve
    (aggregate mode), calling the service's ControlLoop at every poll.

    schedules: a ScheduleSource (e.g. `autoscaler.schedules.ScheduleEvaluator(epoch_s=...)`,
    where epoch_s is the wall-clock time of the trace's t=0) whose floors the loop feeds to
    the policy on simulated time, exactly as the service does on wall time.

    The cluster starts with the initial replicas of the module docstring on demand. When the
    cluster config uses the per-zone hazard (no explicit schedule), the reclaim schedule is
    drawn from `seed` by `zone_reclaims` and handed to the cluster explicitly, so every policy
    run with one seed meets the same reclaims and the oracle knows them (explicit events
    notify a zone's spot pods at once, without the ~3 min spread). Deterministic for a seed.
    progress(done_s, total_s) is called about every 1 % of simulated time.
    itl_slo_ms: an ITL bound added to the capacity at SLO (see capacity_at_slo).
    """
    from autoscaler.loop import ControlLoop
    from simulator.cluster import FluidCluster, SimCluster
    from simulator.service import ServiceProfile
    from simulator.traces import RateCurve

    cfg = config if config is not None else SimConfig()
    prof = profile if profile is not None else ServiceProfile.default()
    ccfg = cfg.cluster_config()
    wall0 = time.perf_counter()
    curve_in = _is_curve(trace_or_curve)
    if curve_in and cfg.mode == "request":
        raise ValueError("a rate curve has no individual requests: use mode='aggregate'")
    src: Any = trace_or_curve

    dm = demand_for(src, workload, prof, cfg, itl_slo_ms)
    start_s, end_s, dt, n_ticks = dm.start_s, dm.end_s, cfg.poll_interval_s, dm.n_ticks
    demand, required, capacity = dm.demand_rps, dm.required, dm.capacity_rps
    m_in, m_out = dm.mean_input_tokens, dm.mean_output_tokens

    spec = workload.spec.policy
    first_min = float(np.mean(demand[: max(1, int(round(60.0 / dt)))]))
    initial = max(spec.min_replicas, math.ceil(first_min / capacity - 1e-9))
    initial = min(initial, spec.max_replicas)

    # the same reclaims for every policy on this seed, known to the oracle
    if ccfg.spot_interruptions is None and ccfg.zone_correlated:
        ccfg = replace(
            ccfg, spot_interruptions=zone_reclaims(ccfg, start_s, end_s + cfg.tail_s, seed)
        )
    reclaims = tuple(ccfg.spot_interruptions or ())

    cluster: Any
    if cfg.mode == "aggregate":
        cluster = FluidCluster(
            ccfg,
            prof,
            seed=seed,
            start_s=start_s,
            initial={"on_demand": initial},
            step_s=cfg.fluid_step_s,
        )
        curve = src if curve_in else RateCurve.from_trace(src, cfg.aggregate_bin_s)
        cluster.submit_rate(
            curve.t_s,
            curve.rate_rps,
            curve.bin_s,
            curve.mean_input_tokens,
            curve.mean_output_tokens,
        )
    else:
        cluster = SimCluster(ccfg, prof, seed=seed, start_s=start_s, initial={"on_demand": initial})
        cluster.submit(src.arrival_s, src.input_tokens, src.output_tokens)
    metrics = SimMetricsSource(
        cluster, workload, cfg.scrape_interval_s, cfg.rate_window_s, cfg.window_s, cfg.scrape_gaps
    )
    view = SimClusterView(cluster, workload)
    actuator = SimActuator(cluster, workload)
    loop = ControlLoop([workload], metrics, view, actuator, policy=policy, schedules=schedules)

    decided: dict[str, list[float]] = {
        "decided_total": [],
        "forecast": [],
        "demand_now": [],
        "held": [],
    }
    poll_t: list[float] = []
    next_scrape = start_s
    every = max(1, n_ticks // 100)
    total_s = end_s - start_s

    def advance_to(t: float) -> None:
        nonlocal next_scrape
        while next_scrape <= t + 1e-9:
            cluster.advance(next_scrape)
            metrics.scrape(next_scrape)
            next_scrape += cfg.scrape_interval_s
        cluster.advance(t)

    def tick(t: float) -> None:
        advance_to(t)
        actuator.now_s = t
        loop.tick(t)
        rec = loop.store.get(workload.key)
        poll_t.append(t)
        if rec is None:
            for v in decided.values():
                v.append(math.nan)
            return
        d = rec.decision
        decided["decided_total"].append(float(d.desired_total))
        decided["forecast"].append(float(d.forecast))
        decided["demand_now"].append(float(d.demand_now))
        decided["held"].append(float(d.held))

    for k in range(n_ticks):
        tick(start_s + k * dt)
        if progress is not None and k % every == 0:
            progress(k * dt, total_s)
    # the tail: the loop keeps running until requests in flight finish (bounded by tail_s)
    t = end_s
    while True:
        advance_to(t)
        if _idle(cluster) or t >= end_s + cfg.tail_s:
            break
        tick(t)
        t += dt
    if progress is not None:
        progress(total_s, total_s)

    res = cluster.results()
    if cfg.mode == "aggregate":
        outcome, timeline = _fluid_outcomes(res)
    else:
        outcome, timeline = _request_outcomes(res, src)
    n_poll = len(poll_t)
    timeline["poll_t_s"] = np.asarray(poll_t)
    timeline["required"] = np.concatenate([required, np.zeros(n_poll - required.size)]).astype(
        np.float64
    )
    timeline["demand_rps"] = np.concatenate([demand, np.zeros(n_poll - demand.size)])
    for key, vals in decided.items():
        timeline[key] = np.asarray(vals, dtype=np.float64)
    eval_start = cfg.eval_start_s if cfg.eval_start_s is not None else start_s + cfg.warmup_s
    return RunResult(
        policy=str(getattr(policy, "name", type(policy).__name__)),
        trace=str(getattr(src, "name", "trace")),
        workload=workload,
        mode=cfg.mode,
        seed=seed,
        start_s=start_s,
        end_s=end_s,
        eval_start_s=float(eval_start),
        arrival_s=outcome["arrival_s"],
        first_token_s=outcome["first_token_s"],
        finish_s=outcome["finish_s"],
        itl_s=outcome["itl_s"],
        output_tokens=outcome["output_tokens"],
        dropped=outcome["dropped"] > 0,
        weight=outcome["weight"],
        gpu_seconds_by_pool={k: float(v) for k, v in res.gpu_seconds.items()},
        cost_usd_by_pool={k: float(v) for k, v in res.cost_usd.items()},
        timeline=timeline,
        scale_events=list(actuator.events),
        interruptions=int(res.interruptions),
        initial_replicas=initial,
        capacity_rps=capacity,
        required=required,
        poll_interval_s=dt,
        cluster=ccfg,
        spot_interruptions=reclaims,
        wall_s=time.perf_counter() - wall0,
        metrics_scrapes=metrics.scrapes,
        failed_scrapes=metrics.failed_scrapes,
        extra={"mean_input_tokens": m_in, "mean_output_tokens": m_out, "ended_s": float(t)},
    )


def _curve_rate_at(curve: Any, t: F64) -> F64:
    """The curve's rate (requests/s) in the bin holding each time (0 outside the bins)."""
    t_bins = np.asarray(curve.t_s, dtype=np.float64)
    rate = np.asarray(curve.rate_rps, dtype=np.float64)
    idx = np.searchsorted(t_bins, t, side="right") - 1
    inside = (idx >= 0) & (t < t_bins[np.clip(idx, 0, None)] + float(curve.bin_s))
    out: F64 = np.where(inside, rate[np.clip(idx, 0, None)], 0.0)
    return out


def _idle(cluster: Any) -> bool:
    g = cluster.gauges()
    return float(g["queue"]) <= 1e-9 and float(g["running"]) <= 1e-9


def _request_outcomes(res: Any, trace: Any) -> tuple[dict[str, F64], dict[str, F64]]:
    m = int(np.asarray(res.arrival_s).size)
    finish = np.asarray(res.finish_s, dtype=np.float64)
    dropped = np.asarray(res.dropped, dtype=bool) | ~np.isfinite(finish)
    outcome = {
        "arrival_s": np.asarray(res.arrival_s, dtype=np.float64),
        "first_token_s": np.asarray(res.first_token_s, dtype=np.float64),
        "finish_s": finish,
        "itl_s": np.asarray(res.itl_s, dtype=np.float64),
        "output_tokens": np.asarray(trace.output_tokens, dtype=np.float64),
        "dropped": dropped.astype(np.float64),
        "weight": np.ones(m),
    }
    timeline = {k: np.asarray(v, dtype=np.float64) for k, v in res.timeline.items()}
    return outcome, timeline


def _fluid_outcomes(res: Any) -> tuple[dict[str, F64], dict[str, F64]]:
    """Fluid steps as weighted cohorts: the served part of each step with the step's mean
    latencies, the dropped part, and what is still queued at the end (dropped). Weights add
    up to the arrivals: re-served (retried) mass is taken out of the served cohorts."""
    t = np.asarray(res.t_s, dtype=np.float64)
    ttft = np.asarray(res.ttft_s, dtype=np.float64)
    itl = np.asarray(res.itl_s, dtype=np.float64)
    lat = np.asarray(res.latency_s, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        out_tok = np.where(itl > 0, 1.0 + (lat - ttft) / itl, 1.0)
    served = np.asarray(res.served, dtype=np.float64)
    dropped = np.asarray(res.dropped, dtype=np.float64)
    left = float(res.queue[-1]) if np.asarray(res.queue).size else 0.0
    t_end = float(t[-1] + res.dt_s[-1]) if t.size else 0.0
    # what is still queued when the run ends counts as dropped, as one cohort at the end
    t_d = np.concatenate([t[dropped > 0], [t_end] if left > 0 else []])
    w_d = np.concatenate([dropped[dropped > 0], [left] if left > 0 else []])
    # a request re-queued by a kill or a drain deadline enters service twice; count it
    # once: take the re-served mass out of the served cohorts, pro rata
    re_served = float(np.sum(res.retried))
    total_served = float(served.sum())
    if re_served > 0 and total_served > 0:
        served = served * max(0.0, 1.0 - re_served / total_served)
    s_ok = served > 0
    n_s, n_d = int(s_ok.sum()), int(t_d.size)
    nan_d = np.full(n_d, np.nan)
    outcome = {
        "arrival_s": np.concatenate([t[s_ok], t_d]),
        "first_token_s": np.concatenate([t[s_ok] + ttft[s_ok], nan_d]),
        "finish_s": np.concatenate([t[s_ok] + lat[s_ok], nan_d]),
        "itl_s": np.concatenate([itl[s_ok], nan_d]),
        "output_tokens": np.concatenate([out_tok[s_ok], nan_d]),
        "dropped": np.concatenate([np.zeros(n_s), np.ones(n_d)]),
        "weight": np.concatenate([served[s_ok], w_d]),
    }
    timeline: dict[str, F64] = {"t_s": t, "queue": np.asarray(res.queue, dtype=np.float64)}
    serving = np.zeros_like(t)
    for pool in ("spot", "on_demand", "warm"):
        timeline[f"ready_{pool}"] = np.asarray(res.ready[pool], dtype=np.float64)
        timeline[f"desired_{pool}"] = np.asarray(res.desired[pool], dtype=np.float64)
        if pool != "warm":
            serving = serving + timeline[f"ready_{pool}"]
    timeline["running"] = np.asarray(res.concurrency, dtype=np.float64) * serving
    with np.errstate(invalid="ignore", divide="ignore"):
        timeline["arrivals_rps"] = np.asarray(res.arrivals) / np.asarray(res.dt_s)
    return outcome, timeline


def oracle_for(run: RunResult, spot: bool | None = None) -> OracleResult:
    """The oracle (simulator.oracle) for a run: the same required replicas r(t) at the poll
    resolution, cold lead time and billed boot = the cluster's median cold start, the same
    prices and initial replicas; spot where the workload may use it (spot=None) or not at
    all (spot=False: the on-demand oracle, which also has the fewest GPU-hours of any
    schedule covering r(t)). Spot is unavailable in a zone during the tick of each reclaim's
    kill (notice + spot_notice_s) and, for new starts, inside spot shortages (checked at the
    start's creation time, one lead time early)."""
    from simulator.oracle import SpotAvailability, solve_oracle

    c = run.cluster
    use_spot = effective_pools(run.workload).spot_enabled if spot is None else spot
    spot_av: SpotAvailability | None = None
    if use_spot:
        n = int(run.required.size)
        kills = [(t + c.spot_notice_s, z) for t, z in run.spot_interruptions]
        spot_av = SpotAvailability.from_events(
            run.start_s, run.poll_interval_s, n, c.zones, interruptions=kills
        )
        if c.spot_shortages:
            created = run.start_s + run.poll_interval_s * np.arange(n) - c.cold_start_median_s
            blocked = np.zeros(n, dtype=bool)
            for a, b in c.spot_shortages:
                blocked |= (created >= a) & (created < b)
            spot_av = SpotAvailability(
                spot_av.available, startable=~blocked[None, :] & spot_av.available
            )
    return solve_oracle(
        run.required,
        run.poll_interval_s,
        lead_s=float(c.cold_start_median_s),
        boot_billed_s=float(c.cold_start_median_s),
        on_demand_usd_per_gpu_hour=float(c.on_demand_usd_per_gpu_hour),
        spot_price_ratio=float(c.spot_price_ratio),
        gpus_per_replica=int(c.gpus_per_replica),
        initial_on_demand=run.initial_replicas,
        spot=spot_av,
        start_s=run.start_s,
    )


__all__ = [
    "COUNTER_FAMILIES",
    "GAUGE_FAMILIES",
    "RunResult",
    "ScaleEvent",
    "SimActuator",
    "SimClusterView",
    "SimConfig",
    "SimMetricsSource",
    "capacity_at_slo",
    "oracle_for",
    "prom_rate",
    "simulate",
    "zone_reclaims",
]
