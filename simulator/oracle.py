"""The cost oracle: the cheapest provisioning that meets demand, with perfect knowledge of the
future and the same lead times as every policy. Its GPU-hours and cost are the denominator of
every report (`cost_over_oracle`).

Method (performance.md section 4.1; Lin, Wierman, Andrew & Thereska, "Dynamic right-sizing",
INFOCOM 2011):

1. Required replicas per control tick. Demand d(t) is the arrival rate in each tick of
   `dt_s` seconds; for a per-request trace it is smoothed by a centered moving average over
   `smooth_s` (60 s by default): one replica holds ~64 concurrent streams and a queue that
   may wait up to the TTFT target, so it absorbs fluctuations shorter than about a minute,
   while a sustained minute above capacity breaks the SLO. The capacity per replica c is the
   service profile's sustainable rate at the SLO (`ServiceProfile.capacity_rps` with the
   workload's ITL / TTFT targets), and r(t) = ceil(d(t) / c). Every tick must be covered;
   the oracle does not spend the SLO's error budget (a policy meeting P95 may dip below r
   for up to 5 % of requests, so in rare cases it can beat the oracle: reported, not hidden).

2. On-demand only: the problem separates by level. Level k is needed on U_k = {t: r(t) >= k}.
   For each gap g between needed stretches of level k the replica is kept idle when
   p*g <= p*B + s (B: billed boot seconds, s: fixed start cost in USD), otherwise it is
   stopped and restarted exactly L (lead time) before the next stretch, paying B. Gaps of
   level k nest inside gaps of level k+1, so the per-level choices form a feasible schedule,
   and since cost is a sum over levels the greedy is optimal (exact for the model).
   Replicas that run at the start (`initial_on_demand`) cost nothing to start; a level that
   begins running keeps idle to its first need or stops and restarts, whichever is cheaper.

3. With spot: per level, a shortest path over time with states {off, on-demand, spot in zone
   z}. Spot in zone z may serve a tick only when the zone is available for the whole tick (no
   shortage and no interruption inside it). An interruption therefore forces a switch, and
   because the oracle knows the kill time it starts the replacement L before it, paying B at
   the new pool's price. Exact for its model as long as per-zone spot capacity is not binding
   and boots succeed (availability is checked on serving ticks only). The shortest path is a
   dynamic program vectorized over levels: O(T * K * (2 + zones)).

Everything before `start_s` is free except boots: a start that would need to begin before the
horizon is still charged B. Drain time on scale-down is not charged (a lower bound).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
B = NDArray[np.bool_]

OFF, ON_DEMAND = 0, 1  # state ids in the spot dynamic program; spot zone z is 2 + z


@dataclass(frozen=True)
class OracleResult:
    """The oracle's schedule and its price.

    gpu_hours: GPU-hours billed (serving + idle-kept + boots), all pools.
    cost_usd: total price in USD.
    replicas_timeline: "t_s" [T] tick start times (seconds); "required" [T] replicas needed;
      "on_demand", "spot" [T] replicas billed per pool in each tick (serving, kept idle or
      booting); "total" their sum.
    gpu_hours_by_pool / cost_usd_by_pool: the split per pool ("on_demand", "spot").
    starts: replica starts (boots paid); method: "greedy" or "shortest-path".
    """

    gpu_hours: float
    cost_usd: float
    replicas_timeline: dict[str, NDArray[np.float64]]
    gpu_hours_by_pool: dict[str, float]
    cost_usd_by_pool: dict[str, float]
    starts: int
    method: str
    dt_s: float
    boot_billed_s: float

    def to_dict(self) -> dict[str, object]:
        return {
            "gpu_hours": self.gpu_hours,
            "cost_usd": self.cost_usd,
            "gpu_hours_by_pool": dict(self.gpu_hours_by_pool),
            "cost_usd_by_pool": dict(self.cost_usd_by_pool),
            "starts": self.starts,
            "method": self.method,
            "dt_s": self.dt_s,
            "boot_billed_s": self.boot_billed_s,
        }


@dataclass(frozen=True)
class SpotAvailability:
    """Where spot may serve: available[z, i] is True when zone z can keep a spot replica
    serving for the whole tick i; startable[z, i] (default: available) whether a spot
    replica may begin serving in zone z at tick i (False where its pod, created one lead
    time earlier, would stay Pending in a shortage). Built from a schedule with
    `from_events`."""

    available: B
    startable: B | None = None

    def __post_init__(self) -> None:
        a = np.asarray(self.available, dtype=bool)
        if a.ndim != 2:
            raise ValueError(f"available must be [zones, ticks]; found shape {a.shape}")
        object.__setattr__(self, "available", a)
        if self.startable is not None:
            st = np.broadcast_to(np.asarray(self.startable, dtype=bool), a.shape)
            object.__setattr__(self, "startable", st & a)

    @property
    def zones(self) -> int:
        return int(self.available.shape[0])

    @classmethod
    def always(cls, zones: int, n_ticks: int) -> SpotAvailability:
        return cls(np.ones((zones, n_ticks), dtype=bool))

    @classmethod
    def from_events(
        cls,
        start_s: float,
        dt_s: float,
        n_ticks: int,
        zones: int,
        interruptions: Sequence[tuple[float, int]] = (),
        shortages: Sequence[tuple[int, float, float]] = (),
    ) -> SpotAvailability:
        """interruptions: (kill time s, zone); shortages: (zone, start s, end s) when the zone
        has no spot capacity. A tick touched by either is unavailable in that zone."""
        if zones < 1:
            raise ValueError(f"zones must be >= 1; found {zones}")
        avail = np.ones((zones, n_ticks), dtype=bool)
        for t_s, zone in interruptions:
            _check_zone(zone, zones)
            i = math.floor((t_s - start_s) / dt_s)
            if 0 <= i < n_ticks:
                avail[zone, i] = False
        for zone, a_s, b_s in shortages:
            _check_zone(zone, zones)
            if b_s < a_s:
                raise ValueError(f"shortage in zone {zone} ends before it starts: {a_s} > {b_s}")
            i0 = max(0, math.floor((a_s - start_s) / dt_s))
            i1 = min(n_ticks, math.ceil((b_s - start_s) / dt_s))
            if i1 > i0:
                avail[zone, i0:i1] = False
        return cls(avail)


def _check_zone(zone: int, zones: int) -> None:
    if not 0 <= zone < zones:
        raise ValueError(f"zone {zone} out of range [0, {zones})")


# -- required replicas ----------------------------------------------------------------------


def demand_per_tick(
    arrival_s: F64, start_s: float, end_s: float, dt_s: float, smooth_s: float = 60.0
) -> F64:
    """Arrival rate (requests/s) in each tick [start_s + i*dt_s, +dt_s) of [start_s, end_s).

    arrival_s: sorted arrival times (seconds). The per-tick counts are smoothed by a centered
    moving average `smooth_s` wide (rounded to whole ticks; <= dt_s means no smoothing).
    Returns [T] float64 with T = ceil((end_s - start_s) / dt_s).
    """
    if dt_s <= 0:
        raise ValueError(f"dt_s must be > 0; found {dt_s}")
    if end_s <= start_s:
        raise ValueError(f"end_s must be > start_s; found {start_s} .. {end_s}")
    n = math.ceil((end_s - start_s) / dt_s - 1e-9)
    idx = np.floor((np.asarray(arrival_s, dtype=np.float64) - start_s) / dt_s).astype(np.int64)
    idx = idx[(idx >= 0) & (idx < n)]
    counts = np.bincount(idx, minlength=n).astype(np.float64)
    rate = counts / dt_s
    w = max(1, int(round(smooth_s / dt_s)))
    if w > 1:
        rate = _centered_mean(rate, w)
    return rate


def _centered_mean(x: F64, w: int) -> F64:
    """Centered moving average of width w; near the edges the window shrinks (mean of what
    exists), so a lone edge burst is not diluted by imaginary zeros."""
    c = np.concatenate(([0.0], np.cumsum(x)))
    n = x.shape[0]
    i = np.arange(n)
    lo = np.clip(i - w // 2, 0, n)
    hi = np.clip(i - w // 2 + w, 0, n)
    out: F64 = (c[hi] - c[lo]) / np.maximum(hi - lo, 1)
    return out


def required_replicas(demand_rps: F64, capacity_rps: float | F64) -> I64:
    """r(t) = ceil(d(t) / c): replicas needed per tick. capacity_rps scalar or [T], > 0."""
    cap = np.asarray(capacity_rps, dtype=np.float64)
    if np.any(~np.isfinite(cap)) or np.any(cap <= 0):
        raise ValueError("capacity_rps must be finite and > 0")
    d = np.asarray(demand_rps, dtype=np.float64)
    if np.any(d < 0) or np.any(~np.isfinite(d)):
        raise ValueError("demand_rps must be finite and >= 0")
    # the 1e-9 keeps an exact multiple (d = k*c) from rounding up to k+1 through float error
    out: I64 = np.ceil(d / cap - 1e-9).astype(np.int64)
    return np.maximum(out, 0)


DEFAULT_WINDOWS_S: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0)


def required_from_arrivals(
    arrival_s: F64,
    start_s: float,
    end_s: float,
    dt_s: float,
    capacity_rps: float,
    queue_budget_s: float | None,
    windows_s: Sequence[float] = DEFAULT_WINDOWS_S,
) -> I64:
    """Replicas needed per tick of `dt_s` for a per-request trace: a burst bound.

    Requests arriving in a window [k, k + W) that must all start within `queue_budget_s`
    (tau) of arriving are done starting by k + W + tau; N replicas start at most
    N * c * (W + tau) of them (c = capacity_rps, the sustainable rate at the SLO), so
    N >= A(k, W) / (c (W + tau)). Every window size in `windows_s` (seconds, resolved at
    1 s) is checked and the bound holds for every tick the window covers; r(t) is the
    ceiling of the largest bound. With tau None (no queueing budget, e.g. an ITL SLO) only
    the longest window counts, with tau = 0: the sustained rate. A budget longer than every
    window (an e2e SLO of minutes) would let those bounds fall far below the sustained rate
    (a minute's arrivals spread over tau); there the rate over the trailing tau seconds also
    holds at each second: serving at it, each request starts within about tau of arriving.
    Returns [T] int64 with T = ceil((end_s - start_s) / dt_s).
    """
    from scipy.ndimage import maximum_filter1d

    if dt_s <= 0 or end_s <= start_s:
        raise ValueError(f"need dt_s > 0 and end_s > start_s; found {dt_s}, {start_s}..{end_s}")
    if not capacity_rps > 0:
        raise ValueError(f"capacity_rps must be > 0; found {capacity_rps}")
    if queue_budget_s is not None and queue_budget_s < 0:
        raise ValueError(f"queue_budget_s must be >= 0; found {queue_budget_s}")
    n_ticks = math.ceil((end_s - start_s) / dt_s - 1e-9)
    n_sec = math.ceil(n_ticks * dt_s - 1e-9)
    idx = np.floor(np.asarray(arrival_s, dtype=np.float64) - start_s).astype(np.int64)
    idx = idx[(idx >= 0) & (idx < n_sec)]
    counts = np.bincount(idx, minlength=n_sec).astype(np.float64)
    csum = np.concatenate(([0.0], np.cumsum(counts)))
    if queue_budget_s is None:
        pairs = [(max(windows_s), 0.0)]
    else:
        pairs = [(w, float(queue_budget_s)) for w in windows_s]
    need = np.zeros(n_sec)
    k = np.arange(n_sec)
    for w_s, tau in pairs:
        w = max(1, int(round(w_s)))
        a = csum[np.minimum(k + w, n_sec)] - csum[k]  # arrivals in [k, k + w)
        bound = a / (capacity_rps * (w + tau))
        # the bound holds for every second the window covers: a max over the w windows
        # that contain each second (origin shifts the filter to look back)
        covered = maximum_filter1d(bound, size=w, origin=(w - 1) // 2, mode="constant")
        need = np.maximum(need, covered)
    if queue_budget_s is not None and queue_budget_s > max(windows_s):
        tau_s = max(1, int(round(queue_budget_s)))
        trailing = csum[k + 1] - csum[np.maximum(k + 1 - tau_s, 0)]  # arrivals in (k - tau, k]
        need = np.maximum(need, trailing / (capacity_rps * tau_s))
    per_tick = np.zeros(n_ticks)
    sec_tick = np.minimum((np.arange(n_sec) * 1.0 // dt_s).astype(np.int64), n_ticks - 1)
    np.maximum.at(per_tick, sec_tick, need)
    out: I64 = np.ceil(per_tick - 1e-9).astype(np.int64)
    return np.maximum(out, 0)


# -- the solver -----------------------------------------------------------------------------


def solve_oracle(
    required: I64 | Sequence[int],
    dt_s: float,
    *,
    lead_s: float,
    boot_billed_s: float | None = None,
    on_demand_usd_per_gpu_hour: float = 6.9,
    spot_price_ratio: float = 0.4,
    gpus_per_replica: int = 1,
    start_cost_usd: float = 0.0,
    initial_on_demand: int = 0,
    spot: SpotAvailability | None = None,
    start_s: float = 0.0,
) -> OracleResult:
    """Cheapest schedule covering `required[i]` replicas in every tick i of `dt_s` seconds.

    lead_s: seconds from start to serving (every start happens exactly that early);
    boot_billed_s: GPU seconds billed per start before it serves (default: lead_s, a cold start
    on a new node); start_cost_usd: fixed price per start; initial_on_demand: replicas already
    serving at start_s (free to keep); spot: where spot may serve (None = on-demand only).
    """
    r = np.asarray(required, dtype=np.int64)
    if r.ndim != 1:
        raise ValueError(f"required must be 1-D; found shape {r.shape}")
    if np.any(r < 0):
        raise ValueError("required replicas must be >= 0")
    if dt_s <= 0:
        raise ValueError(f"dt_s must be > 0; found {dt_s}")
    if lead_s < 0:
        raise ValueError(f"lead_s must be >= 0; found {lead_s}")
    b_s = float(lead_s if boot_billed_s is None else boot_billed_s)
    if b_s < 0:
        raise ValueError(f"boot_billed_s must be >= 0; found {b_s}")
    if initial_on_demand < 0:
        raise ValueError(f"initial_on_demand must be >= 0; found {initial_on_demand}")
    if spot is not None and spot.available.shape[1] != r.shape[0]:
        raise ValueError(
            f"spot availability covers {spot.available.shape[1]} ticks, demand {r.shape[0]}"
        )
    price_s = on_demand_usd_per_gpu_hour * gpus_per_replica / 3600.0  # USD per replica-second
    if spot is None or spot.zones == 0:
        return _solve_greedy(
            r, dt_s, b_s, price_s, gpus_per_replica, start_cost_usd, initial_on_demand, start_s
        )
    return _solve_shortest_path(
        r,
        dt_s,
        b_s,
        price_s,
        spot_price_ratio,
        gpus_per_replica,
        start_cost_usd,
        initial_on_demand,
        spot,
        start_s,
    )


def _runs(mask: B) -> tuple[I64, I64]:
    """Start and end (exclusive) indices of the True runs of a 1-D mask."""
    m = np.concatenate(([False], mask, [False])).astype(np.int8)
    d = np.diff(m)
    return np.flatnonzero(d == 1).astype(np.int64), np.flatnonzero(d == -1).astype(np.int64)


def _boot_ticks(b_s: float, dt_s: float) -> int:
    return math.ceil(b_s / dt_s - 1e-9) if b_s > 0 else 0


def _solve_greedy(
    r: I64,
    dt_s: float,
    b_s: float,
    price_s: float,
    gpus: int,
    s_usd: float,
    initial: int,
    start_s: float,
) -> OracleResult:
    n = r.shape[0]
    top = int(r.max(initial=0))
    # keep idle through a gap of g seconds iff price*g <= price*B + s (break-even B + s/p)
    breakeven_s = b_s + (s_usd / price_s if price_s > 0 else math.inf)
    boot = _boot_ticks(b_s, dt_s)
    # billed replicas per tick via a difference array: +1 where a billed stretch begins,
    # -1 where it ends (a stretch = serving, kept idle, or booting)
    diff = np.zeros(n + 1, dtype=np.float64)
    busy_s = 0.0
    starts = 0
    for k in range(1, top + 1):
        lo, hi = _runs(r >= k)
        busy_s += float(np.sum(hi - lo)) * dt_s
        # the first stretch: a level running at the start may idle up to it instead of a boot
        first = int(lo[0])
        if k <= initial and first * dt_s <= breakeven_s:
            busy_s += first * dt_s
            lo = lo.copy()
            lo[0] = 0
        else:
            starts += 1
            lo = lo.copy()
            lo[0] = max(0, first - boot)
        gaps = (lo[1:] - hi[:-1]) * dt_s
        keep = gaps <= breakeven_s
        busy_s += float(np.sum(gaps[keep]))
        starts += int(np.sum(~keep))
        # kept gaps merge neighbouring stretches; dropped gaps restart `boot` ticks early
        seg_lo = np.concatenate(([lo[0]], np.maximum(hi[:-1][~keep], lo[1:][~keep] - boot)))
        seg_hi = np.concatenate((hi[:-1][~keep], [hi[-1]]))
        np.add.at(diff, seg_lo, 1.0)
        np.add.at(diff, seg_hi, -1.0)
    billed = np.cumsum(diff[:n])
    gpu_s = (busy_s + starts * b_s) * gpus
    cost = (busy_s + starts * b_s) * price_s + starts * s_usd
    t = start_s + dt_s * np.arange(n, dtype=np.float64)
    timeline = {
        "t_s": t,
        "required": r.astype(np.float64),
        "on_demand": billed,
        "spot": np.zeros(n),
        "total": billed.copy(),
    }
    return OracleResult(
        gpu_hours=gpu_s / 3600.0,
        cost_usd=cost,
        replicas_timeline=timeline,
        gpu_hours_by_pool={"on_demand": gpu_s / 3600.0, "spot": 0.0},
        cost_usd_by_pool={"on_demand": cost, "spot": 0.0},
        starts=starts,
        method="greedy",
        dt_s=dt_s,
        boot_billed_s=b_s,
    )


def _solve_shortest_path(
    r: I64,
    dt_s: float,
    b_s: float,
    price_s: float,
    spot_ratio: float,
    gpus: int,
    s_usd: float,
    initial: int,
    spot: SpotAvailability,
    start_s: float,
) -> OracleResult:
    n = r.shape[0]
    top = int(r.max(initial=0))
    t = start_s + dt_s * np.arange(n, dtype=np.float64)
    if top == 0:
        z = np.zeros(n)
        return OracleResult(
            0.0,
            0.0,
            {"t_s": t, "required": z, "on_demand": z, "spot": z, "total": z},
            {"on_demand": 0.0, "spot": 0.0},
            {"on_demand": 0.0, "spot": 0.0},
            0,
            "shortest-path",
            dt_s,
            b_s,
        )
    zones = spot.zones
    n_states = 2 + zones
    levels = np.arange(1, top + 1, dtype=np.int64)
    # price per replica-second of each state; entering a serving state pays B at its price + s
    rate = np.array([0.0, price_s] + [price_s * spot_ratio] * zones)
    run = rate * dt_s
    enter = rate * b_s + np.where(np.arange(n_states) == OFF, 0.0, s_usd)
    inf = math.inf
    # initial costs: levels already running on demand start there for free
    cost = np.tile(enter, (top, 1))
    cost[:, OFF] = 0.0
    cost[levels <= initial, ON_DEMAND] = 0.0
    blocked = None if spot.startable is None else ~spot.startable
    if blocked is not None and blocked[:, 0].any():
        cost[:, 2 + np.flatnonzero(blocked[:, 0])] = inf
    came_from_best = np.zeros((n, top), dtype=np.int8)  # argmin predecessor per tick and level
    stayed = np.zeros((n, top, n_states), dtype=bool)  # True: state b continued from b
    avail = spot.available
    for i in range(n):
        if i > 0:
            best = cost.argmin(axis=1)
            m = cost[np.arange(top), best]
            switch = m[:, None] + enter[None, :]
            if blocked is not None and blocked[:, i].any():
                switch[:, 2 + np.flatnonzero(blocked[:, i])] = inf
            stay = cost <= switch
            cost = np.where(stay, cost, switch)
            came_from_best[i] = best
            stayed[i] = stay
        cost = cost + run[None, :]
        need = r[i] >= levels
        cost[need, OFF] = inf
        bad = ~avail[:, i]
        if bad.any():
            cost[:, 2 + np.flatnonzero(bad)] = inf
    # backtrack per level
    state = np.zeros((n, top), dtype=np.int8)
    cur = cost.argmin(axis=1).astype(np.int8)
    total_cost = float(cost[np.arange(top), cur].sum())
    rows = np.arange(top)
    for i in range(n - 1, -1, -1):
        state[i] = cur
        if i > 0:
            cur = np.where(stayed[i, rows, cur], cur, came_from_best[i]).astype(np.int8)
    # count starts and bill boots per pool
    prev = np.concatenate(
        [np.where(levels <= initial, ON_DEMAND, OFF)[None, :].astype(np.int8), state[:-1]]
    )
    started = (state != prev) & (state != OFF)
    # a level that starts in a pool at tick 0 without being initially there also boots
    boot = _boot_ticks(b_s, dt_s)
    od = (state == ON_DEMAND).sum(axis=1).astype(np.float64)
    sp = (state >= 2).sum(axis=1).astype(np.float64)
    od_starts = int((started & (state == ON_DEMAND)).sum())
    sp_starts = int((started & (state >= 2)).sum())
    if boot > 0:
        for i, k in zip(*np.nonzero(started), strict=True):
            lo = max(0, int(i) - boot)
            if state[i, k] == ON_DEMAND:
                od[lo:i] += 1
            else:
                sp[lo:i] += 1
    od_s = float((state == ON_DEMAND).sum()) * dt_s + od_starts * b_s
    sp_s = float((state >= 2).sum()) * dt_s + sp_starts * b_s
    cost_od = od_s * price_s + od_starts * s_usd
    cost_sp = sp_s * price_s * spot_ratio + sp_starts * s_usd
    # the path's own cost and the re-priced schedule must agree (guards the backtrack)
    if not math.isclose(total_cost, cost_od + cost_sp, rel_tol=1e-6, abs_tol=1e-6):
        raise RuntimeError(
            f"oracle backtrack mismatch: path {total_cost} vs schedule {cost_od + cost_sp}"
        )
    timeline = {
        "t_s": t,
        "required": r.astype(np.float64),
        "on_demand": od,
        "spot": sp,
        "total": od + sp,
    }
    return OracleResult(
        gpu_hours=(od_s + sp_s) * gpus / 3600.0,
        cost_usd=cost_od + cost_sp,
        replicas_timeline=timeline,
        gpu_hours_by_pool={"on_demand": od_s * gpus / 3600.0, "spot": sp_s * gpus / 3600.0},
        cost_usd_by_pool={"on_demand": cost_od, "spot": cost_sp},
        starts=od_starts + sp_starts,
        method="shortest-path",
        dt_s=dt_s,
        boot_billed_s=b_s,
    )
