"""Demand forecasting for a batch of series: EWMA, Holt and additive Holt-Winters.

Shapes: `n` series (one per workload and metric), `s` samples on a shared time axis `t_s`
(seconds, strictly increasing, the caller's clock). Everything is vectorized over series; the
only Python loop is over time steps, because the recursions are sequential in time.

State conventions
-----------------
- A row with no sample yet has `n_obs == 0`, `level` NaN, `first_t_s` NaN and `last_t_s`
  -inf (so "the sample is newer than `last_t_s`" needs no special case).
- `trend` is in units per second, so a gap (skipped NaN samples) extrapolates correctly.
- `season[i, k]` is the additive offset of bucket `k = floor((t mod season_s) / width)`,
  `width = season_s / N_SEASON_BUCKETS`; buckets are aligned to t = 0 of the caller's clock
  (epoch seconds and `season_s = 86400` give UTC days in 10-minute buckets).

Recursions (one accepted sample `y` at time `t`; `dt = t - t_prev > 0` since the row's
previous accepted sample; `k = bucket(t)`):

    p         = level + trend * dt + season[k]           one-step-ahead forecast
    e         = y - p                                    one-step-ahead residual
    level     = level + trend * dt + a * e
    trend     = trend + a * b * e / dt
    season[k] = season[k] + g * (1 - a) * e
    resid_var = resid_var + w * (e**2 - resid_var),      w = max(RESID_WEIGHT, 1 / r)
    resid_up  = resid_up + w * (2 * max(e, 0)**2 - resid_up)

where `r` counts the row's residuals including this one (the first residuals are averaged
equally, then the weight settles at RESID_WEIGHT), and the effective parameters are

    method        a      b     g      (season is read and written only for holt_winters)
    none          1      0     0      level = last sample
    ewma          alpha  0     0
    holt          alpha  beta  0
    holt_winters  alpha  beta  gamma

This is the error-correction form of the textbook recursions: `level` above equals
`alpha * (y - season[k]) + (1 - alpha) * (level + trend * dt)`; `trend` equals
`beta * (level' - level) / dt + (1 - beta) * trend`, Holt's slope update with the level change
measured per second; `season[k]` equals `gamma * (y - level') + (1 - gamma) * season[k]`
(Holt-Winters additive). With regular sampling they are exactly Holt / Holt-Winters.

Why divide by `dt`: Prometheus range queries have a fixed step, so `dt` is the step or a
multiple of it after skipped (NaN) samples; the division keeps `trend` per second across gaps
and never sees a tiny `dt`. `t_s` must be strictly increasing (ValueError otherwise: bad input
is not repaired here).

The first accepted sample sets `level = y - season[k]` (season applies to holt_winters only),
`trend = 0`, and makes no residual. The season is not renormalized to zero mean: shifting a
constant between `level` and `season` changes no forecast and no residual.

Samples are skipped when NaN or not newer than the row's `last_t_s` (so passing the whole
window every tick incorporates only new samples, and a sample that arrives late, NaN on one
tick and filled on the next, is still taken). Updating chunk by chunk gives bit-identical
state to one update over the whole series: a step where a row has no accepted sample is an
exact no-op for that row (`dt = 0`, `e = 0`).

Prediction at `now_s + horizon_s`, with `D = max(now_s + horizon_s - last_t_s, 0)`:

    mean  = level + trend * D + season_offset          (trend only for holt, holt_winters)
    upper = mean + ndtri(quantile) * sqrt(var * c(h)),   both clipped at >= 0

with `var = resid_var`, or, for rows `predict` is asked to bound by under-forecasts only,
`var = min(resid_var, resid_up)`. `resid_up` is the upper semi-variance doubled (equal to
`resid_var` when residuals are symmetric): a sudden drop makes one large negative residual,
which widens `resid_var` and, at a horizon of many samples, could put the bound above the
level before the drop; it leaves `resid_up` alone. Taking the smaller of the two never
widens the bound, so a series whose residuals are mostly positive (a ramp) keeps its
`resid_var` bound.

`season_offset` is `season[bucket(now_s + horizon_s)]` for holt_winters once the row's history
spans two seasons (`last_t_s - first_t_s >= 2 * season_s`); before that the model forecasts
like Holt from its current smoothed value, `season[bucket(last_t_s)]` (the offset the level
was last deseasonalized with), so a half-learned season is never projected. `c(h)` is the
h-step variance factor of ETS(A,A,N) (Hyndman et al. 2008, table 6.1), with `b' = a * b` and
`h = D / mean_sample_interval` samples (at least 1, at most 1e6):

    c(h) = 1 + (h - 1) * (a**2 + a * b' * h + b'**2 * h * (2h - 1) / 6)

which is `h` for none (a random walk) and `1 + a**2 (h - 1)` for ewma. The season's own
variance term (horizons beyond one season) is left out: lead times are minutes, seasons a day.

Fitting (`fit`): parameters are chosen per series to minimize the sum of squared one-step
residuals of exactly the recursion above (the same code), run from a fresh state (first
sample, zero trend, the state's current season) over the given history. gamma is fitted only
where that history spans two seasons: a bucket's offset matters on the bucket's next visit,
and a shorter window holds none to judge it by (gamma then stays as configured).

The objective is separable (each series' SSE depends on its own 1-3 parameters), so `fit`
runs a bounded Levenberg-Marquardt iteration vectorized over series: one forward pass
carries the sensitivities `d(level, trend, season)/d(alpha, beta, gamma)` alongside the
state and accumulates the gradient `J^T e` and the Gauss-Newton matrix `J^T J` (at most 3x3)
of every series; each series then takes its own damped step (projected onto the bounds),
keeps it only if its SSE falls, and adapts its own damping. Converged series drop out of
later passes. One `scipy.optimize.minimize(L-BFGS-B)` over all parameters at once, with the
same analytic gradient, was measured as the alternative: its single line search and
low-rank curvature model are shared by thousands of unrelated small problems, and on 3,000
Holt series x 600 samples it needed about 230 full passes to reach the SSE that this
iteration reaches in 20 passes (9 per series on average, the rest compacted away).

What the fit optimizes is the one-step error. For a daily season sampled every minute that
rewards a Holt-like fit (a fast level, gamma near 0): the next minute is well predicted
without the season. Forecasting hours ahead across a daily peak wants the opposite (a slow
level, a fast season); choose such parameters and set `fit: false` for those workloads.

`fit` returns the state with new parameters only; level, trend, season and residual variance
keep running from where `update` left them. Re-running the filter over the fit window would
discard a season learned over days and restart the two-season clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.special import ndtri

from policies.types import F64, I64, B

METHOD_NONE, METHOD_EWMA, METHOD_HOLT, METHOD_HOLT_WINTERS = 0, 1, 2, 3
METHOD_CODES: dict[str, int] = {
    "none": METHOD_NONE,
    "ewma": METHOD_EWMA,
    "holt": METHOD_HOLT,
    "holt_winters": METHOD_HOLT_WINTERS,
}
METHOD_NAMES: dict[int, str] = {code: name for name, code in METHOD_CODES.items()}

# Season profile resolution: 144 buckets are 10-minute buckets of a daily season.
N_SEASON_BUCKETS: int = 144

# Weight of the newest squared residual in `resid_var` once warmed up: a memory of about
# 1 / 0.02 = 50 samples (50 min at a 60 s step, 12.5 min at 15 s); long enough that the
# relative error of the variance estimate is about sqrt(2 * 0.02 / (2 - 0.02)) = 14%, short
# enough to follow a change of volatility within the hour.
RESID_WEIGHT: float = 0.02

# Fit bounds. alpha > 0 in the spec; below 1e-3 the level would take > 1000 samples to move.
ALPHA_MIN: float = 1e-3
# A series needs this many finite samples in the fit window before its parameters are refit:
# with fewer, 1-3 parameters are fitted to a handful of residuals.
FIT_MIN_SAMPLES: int = 10
FIT_MAX_ITER: int = 20

# Levenberg-Marquardt damping: start, bounds, and the relative SSE decrease that ends a series.
_LM_LAMBDA0 = 1e-2
_LM_LAMBDA_MIN = 1e-9
_LM_LAMBDA_MAX = 1e10
_LM_RTOL = 1e-6
_LM_STEP_TOL = 1e-3

# Columns at the end of the window checked for new samples for every row; rows that lag
# further behind (new or stale series) are checked on their own, so one stale row does not
# make every tick scan the whole window.
_TAIL_COLS = 8
# Columns per block in `update`: bounds the schedule's memory (3 [cols, n] arrays) and keeps
# each array under glibc's mmap threshold, so blocks reuse memory instead of page-faulting.
_UPDATE_BLOCK_COLS = 128
# From this many columns on, a run transposes the season to bucket-major (see `_run`).
_BUCKET_MAJOR_MIN_COLS = 16
# Horizon cap in samples for the variance factor (keeps c(h) finite).
_H_MAX_STEPS = 1e6

_FLOAT_FIELDS = (
    "alpha",
    "beta",
    "gamma",
    "season_s",
    "level",
    "trend",
    "first_t_s",
    "last_t_s",
    "resid_var",
    "resid_up",
)


@dataclass(frozen=True)
class ForecastState:
    """Per-series forecast state ([n] each; `season` [n, N_SEASON_BUCKETS]).

    `method` holds METHOD_* codes; `alpha`, `beta`, `gamma` are smoothing weights per sample
    (see the module docstring for where each applies); `season_s` the season length in
    seconds. `level` is the (deseasonalized) level at `last_t_s`, NaN before the first
    sample; `trend` is units per second; `first_t_s` (NaN before the first sample) and
    `last_t_s` (-inf before) are the times of the first and last accepted samples;
    `resid_var` the exponentially weighted mean square of one-step residuals (0 until the
    second sample) and `resid_up` the same mean of `2 * max(residual, 0)**2` (the upper
    semi-variance, doubled); `n_obs` the number of accepted samples. Never mutated: functions return
    new states, which may share arrays with the state they came from.
    """

    method: I64
    alpha: F64
    beta: F64
    gamma: F64
    season_s: F64
    level: F64
    trend: F64
    season: F64
    first_t_s: F64
    last_t_s: F64
    resid_var: F64
    resid_up: F64
    n_obs: I64

    def __post_init__(self) -> None:
        n = self.method.shape[0] if self.method.ndim == 1 else -1
        problems = []
        for f in fields(self):
            arr = getattr(self, f.name)
            want_shape = (n, N_SEASON_BUCKETS) if f.name == "season" else (n,)
            want_kind = "i" if f.name in ("method", "n_obs") else "f"
            if not isinstance(arr, np.ndarray) or arr.shape != want_shape:
                problems.append(f"{f.name}: shape {np.shape(arr)}, expected {want_shape}")
            elif arr.dtype.kind != want_kind or arr.dtype.itemsize != 8:
                problems.append(f"{f.name}: dtype {arr.dtype}, expected {want_kind}8")
        if problems:
            raise ValueError("invalid ForecastState: " + "; ".join(problems))

    @property
    def n(self) -> int:
        return int(self.method.shape[0])

    @classmethod
    def initial(
        cls,
        n: int,
        method: str | int | Sequence[str] | Sequence[int] | NDArray[Any],
        alpha: float | F64,
        beta: float | F64,
        gamma: float | F64,
        season_s: float | F64,
    ) -> ForecastState:
        """State of `n` series before any sample; scalars or [n] arrays broadcast.

        `method` is a name ("holt"), a METHOD_* code, or a sequence/array of either.
        Raises ValueError naming every parameter out of range (alpha in (0, 1], beta and
        gamma in [0, 1], season_s > 0).
        """
        codes = _method_codes(method, n)
        values = {"alpha": alpha, "beta": beta, "gamma": gamma, "season_s": season_s}
        params = {
            name: np.array(np.broadcast_to(np.asarray(v, dtype=np.float64), (n,)))
            for name, v in values.items()
        }
        ok = {
            "alpha": (params["alpha"] > 0) & (params["alpha"] <= 1),
            "beta": (params["beta"] >= 0) & (params["beta"] <= 1),
            "gamma": (params["gamma"] >= 0) & (params["gamma"] <= 1),
            "season_s": (params["season_s"] > 0) & np.isfinite(params["season_s"]),
        }
        rules = {"alpha": "in (0, 1]", "beta": "in [0, 1]", "gamma": "in [0, 1]"}
        problems = []
        for name, good in ok.items():
            bad = np.nonzero(~good)[0]
            if bad.size:
                i = int(bad[0])
                problems.append(
                    f"{name} must be {rules.get(name, '> 0 and finite')}; found "
                    f"{name}[{i}]={params[name][i]!r} ({bad.size} row(s) bad)"
                )
        if problems:
            raise ValueError("; ".join(problems))
        return cls(
            method=codes,
            season=np.zeros((n, N_SEASON_BUCKETS)),
            level=np.full(n, np.nan),
            trend=np.zeros(n),
            first_t_s=np.full(n, np.nan),
            last_t_s=np.full(n, -np.inf),
            resid_var=np.zeros(n),
            resid_up=np.zeros(n),
            n_obs=np.zeros(n, dtype=np.int64),
            **params,
        )

    def take(self, idx: I64 | B | list[int]) -> ForecastState:
        """Rows `idx` (integer indices or a boolean mask), as a new state."""
        return ForecastState(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})

    @classmethod
    def concat(cls, parts: list[ForecastState]) -> ForecastState:
        """Rows of `parts`, in order. Raises ValueError on an empty list."""
        if not parts:
            raise ValueError("ForecastState.concat needs at least one part")
        return cls(
            **{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)}
        )

    def to_dicts(self) -> list[dict[str, Any]]:
        """One JSON-serializable dict per series (strict JSON: no NaN or Infinity literals).

        Non-finite floats are written as the strings "nan", "inf", "-inf"; `method` as its
        name; `season` as a list of N_SEASON_BUCKETS floats, or [] when all zero (every
        series that is not holt_winters). `from_dicts` restores the state bit for bit.
        """
        cols = {name: getattr(self, name).tolist() for name in _FLOAT_FIELDS}
        methods = self.method.tolist()
        n_obs = self.n_obs.tolist()
        nonzero = np.any(self.season != 0.0, axis=1).tolist()
        out: list[dict[str, Any]] = []
        for i in range(self.n):
            item: dict[str, Any] = {"method": METHOD_NAMES[methods[i]]}
            for name in _FLOAT_FIELDS:
                item[name] = _encode_float(cols[name][i])
            item["season"] = (
                [_encode_float(v) for v in self.season[i].tolist()] if nonzero[i] else []
            )
            item["n_obs"] = n_obs[i]
            out.append(item)
        return out

    @classmethod
    def from_dicts(cls, items: list[dict[str, Any]]) -> ForecastState:
        """Inverse of `to_dicts`. Raises ValueError naming the item and key on bad input."""
        n = len(items)
        floats = {name: np.empty(n) for name in _FLOAT_FIELDS}
        season = np.zeros((n, N_SEASON_BUCKETS))
        method = np.empty(n, dtype=np.int64)
        n_obs = np.empty(n, dtype=np.int64)
        for i, item in enumerate(items):
            try:
                method[i] = METHOD_CODES[item["method"]]
                for name in _FLOAT_FIELDS:
                    # a state saved before `resid_up` existed: the full variance stands in
                    key = "resid_var" if name == "resid_up" and name not in item else name
                    floats[name][i] = float(item[key])
                n_obs[i] = int(item["n_obs"])
                values = item["season"]
                if values:
                    if len(values) != N_SEASON_BUCKETS:
                        raise ValueError(
                            f"season has {len(values)} values, expected {N_SEASON_BUCKETS} or 0"
                        )
                    season[i] = [float(v) for v in values]
            except (KeyError, TypeError, ValueError) as e:
                raise ValueError(f"forecast state item [{i}]: {type(e).__name__}: {e}") from e
        return cls(method=method, season=season, n_obs=n_obs, **floats)


def update(state: ForecastState, t_s: F64, y: F64) -> ForecastState:
    """Incorporate the samples of `y` [n, s] at times `t_s` [s] that are newer than each row's
    `last_t_s` and not NaN; returns a new state (`state` itself when nothing is new).

    The loop runs only over columns that are new for at least one row, so the usual tick
    (the whole window, 1-3 new columns) costs a few column steps; rows that lag (new or
    stale series) are scanned separately. Raises ValueError on mismatched shapes or a
    `t_s` that is not finite and strictly increasing.
    """
    t_s, y = _check_window(t_s, y, state.n)
    cols = _active_columns(t_s, y, state.last_t_s)
    if cols.size == 0:
        return state
    # Blocks of columns give the same state as one run (updates compose exactly).
    for start in range(0, cols.size, _UPDATE_BLOCK_COLS):
        block = cols[start : start + _UPDATE_BLOCK_COLS]
        t = t_s[block]
        y_t = np.ascontiguousarray(y[:, block].T)
        sched = _schedule(t, y_t, state.first_t_s, state.last_t_s, state.n_obs, True)
        run = _run(state, t, y_t, sched)
        state = replace(
            state,
            level=run.level,
            trend=run.trend,
            season=run.season,
            first_t_s=sched.first_t_s,
            last_t_s=sched.last_t_s,
            resid_var=run.resid_var,
            resid_up=run.resid_up,
            n_obs=sched.n_obs,
        )
    return state


def predict(
    state: ForecastState,
    now_s: float,
    horizon_s: F64 | float,
    quantile: F64 | float,
    upside_only: B | bool = False,
) -> tuple[F64, F64]:
    """(mean, upper) [n]: the forecast at `now_s + horizon_s` and its upper bound at
    `quantile` (scalars or [n] arrays; quantile in (0, 1), 0.5 gives upper == mean).
    Rows where `upside_only` (a bool or [n]) bound with `min(resid_var, resid_up)`: the
    load falling below the forecast does not widen their bound (module docstring).

    Both are clipped at >= 0 (demand is non-negative). Rows without a sample get NaN. See
    the module docstring for the formulas. Raises ValueError for a quantile outside (0, 1).
    """
    n = state.n
    h_s = np.broadcast_to(np.asarray(horizon_s, dtype=np.float64), (n,))
    q = np.broadcast_to(np.asarray(quantile, dtype=np.float64), (n,))
    if not np.all((q > 0) & (q < 1)):
        raise ValueError(f"quantile must be in (0, 1); found {q[~((q > 0) & (q < 1))][:3]}")
    m = state.method
    seen = state.n_obs > 0
    a, ab, _, hw = _effective_params(m, state.alpha, state.beta, state.gamma)
    target_t = now_s + h_s
    # Unseen rows (last_t_s = -inf) get D = 0 so no inf * 0 arises; they end up NaN anyway.
    d_s = np.where(seen, np.maximum(target_t - np.where(seen, state.last_t_s, 0.0), 0.0), 0.0)
    has_trend = (m == METHOD_HOLT) | (m == METHOD_HOLT_WINTERS)
    mean = state.level + np.where(has_trend, state.trend * d_s, 0.0)
    span_s = np.where(seen, state.last_t_s - state.first_t_s, 0.0)
    if hw.any():
        projected = hw & (span_s >= 2.0 * state.season_s)
        at_t = np.where(projected, target_t, np.where(seen, state.last_t_s, 0.0))
        k = _bucket(at_t, state.season_s)
        mean = mean + np.where(hw, state.season[np.arange(n), k], 0.0)
    many = state.n_obs >= 2
    dt_mean_s = np.where(many & (span_s > 0), span_s / np.maximum(state.n_obs - 1, 1), 1.0)
    h = np.clip(d_s / dt_mean_s, 1.0, _H_MAX_STEPS)
    c = 1.0 + (h - 1.0) * (a * a + a * ab * h + ab * ab * h * (2.0 * h - 1.0) / 6.0)
    z = np.asarray(ndtri(q), dtype=np.float64)
    var = np.where(upside_only, np.fmin(state.resid_var, state.resid_up), state.resid_var)
    upper = mean + z * np.sqrt(np.maximum(var * c, 0.0))
    mean = np.where(seen, np.maximum(mean, 0.0), np.nan)
    upper = np.where(seen, np.maximum(upper, 0.0), np.nan)
    return mean, upper


def fit(t_s: F64, y: F64, state: ForecastState, max_iter: int = FIT_MAX_ITER) -> ForecastState:
    """Re-estimate alpha (ewma), alpha and beta (holt), alpha, beta and gamma (holt_winters;
    gamma only where the history spans two of the series' seasons) per series to minimize the
    one-step squared error over the history `y` [n, s] at `t_s` (NaN samples skipped).

    Each series starts from its current parameters (clipped into the bounds alpha in
    [ALPHA_MIN, 1], beta and gamma in [0, 1]) and only ever moves to parameters with a lower
    SSE, so its SSE never exceeds the SSE at its starting parameters. Series with method
    none or fewer than FIT_MIN_SAMPLES finite samples keep their parameters. `max_iter`
    bounds the number of batched passes over the history (each costs about one cold
    `update` with sensitivities, on the series not yet converged). Returns the state with
    the new parameters; the filter state (level, trend, season, resid_var, times) is
    unchanged. Raises ValueError like `update`.
    """
    t_s, y = _check_window(t_s, y, state.n)
    n_finite = np.isfinite(y).sum(axis=1)
    rows = np.nonzero((state.method != METHOD_NONE) & (n_finite >= FIT_MIN_SAMPLES))[0]
    if rows.size == 0 or max_iter <= 0:
        return state
    problem = _FitProblem.build(t_s, y[rows], state.take(rows))
    theta = _fit_lm(problem, max_iter)
    alpha, beta, gamma = state.alpha.copy(), state.beta.copy(), state.gamma.copy()
    for ch, out in enumerate((alpha, beta, gamma)[: problem.n_channels]):
        free = problem.free[ch]
        out[rows[free]] = theta[ch, free]
    return replace(state, alpha=alpha, beta=beta, gamma=gamma)


# ---------------------------------------------------------------------------------------------
# Internals


def _encode_float(v: float) -> float | str:
    return v if np.isfinite(v) else str(v)


def _method_codes(method: Any, n: int) -> I64:
    arr = np.asarray(method)
    if arr.dtype.kind in "USO":
        unknown = sorted({str(v) for v in arr.ravel().tolist()} - set(METHOD_CODES))
        if unknown:
            raise ValueError(f"unknown forecast method(s) {unknown}; known: {list(METHOD_CODES)}")
        arr = np.vectorize(METHOD_CODES.__getitem__, otypes=[np.int64])(arr)
    codes = np.array(np.broadcast_to(arr.astype(np.int64), (n,)))
    bad = ~np.isin(codes, list(METHOD_NAMES))
    if bad.any():
        raise ValueError(f"unknown forecast method code(s) {sorted(set(codes[bad].tolist()))}")
    return codes


def _check_window(t_s: Any, y: Any, n: int) -> tuple[F64, F64]:
    t = np.asarray(t_s, dtype=np.float64)
    v = np.asarray(y, dtype=np.float64)
    if t.ndim != 1 or v.shape != (n, t.shape[0]):
        raise ValueError(f"y has shape {v.shape} and t_s {t.shape}; expected y ({n}, s), t_s (s,)")
    if not np.all(np.isfinite(t)) or np.any(np.diff(t) <= 0):
        raise ValueError("t_s must be finite and strictly increasing")
    return t, v


def _bucket(t_s: F64, season_s: F64) -> NDArray[np.intp]:
    """Season bucket of times `t_s` for seasons `season_s` (elementwise, broadcast)."""
    k = (np.mod(t_s, season_s) * (N_SEASON_BUCKETS / season_s)).astype(np.intp)
    # (season_s - tiny) * 144 / season_s can round up to 144.0.
    return np.minimum(k, N_SEASON_BUCKETS - 1)


def _effective_params(method: I64, alpha: F64, beta: F64, gamma: F64) -> tuple[F64, F64, F64, B]:
    """(a, a*b, g*(1-a), is_holt_winters) per series; see the module docstring's table."""
    hw = method == METHOD_HOLT_WINTERS
    a = np.where(method == METHOD_NONE, 1.0, alpha)
    b = np.where((method == METHOD_HOLT) | hw, beta, 0.0)
    g = np.where(hw, gamma, 0.0)
    return a, a * b, g * (1.0 - a), hw


def _active_columns(t_s: F64, y: F64, last_t_s: F64) -> NDArray[np.intp]:
    """Columns holding a finite sample newer than its row's `last_t_s`, ascending."""
    s = t_s.shape[0]
    if y.shape[0] == 0 or s == 0:
        return np.zeros(0, dtype=np.intp)
    first_new = np.searchsorted(t_s, last_t_s, side="right")
    j0 = int(first_new.min())
    if j0 >= s:
        return np.zeros(0, dtype=np.intp)
    cut = max(j0, s - _TAIL_COLS)
    tail = np.isfinite(y[:, cut:]) & (np.arange(cut, s)[None, :] >= first_new[:, None])
    active = tail.any(axis=0)
    if j0 < cut:
        lag = np.nonzero(first_new < cut)[0]
        head = np.isfinite(y[lag, j0:cut]) & (np.arange(j0, cut)[None, :] >= first_new[lag, None])
        active = np.concatenate([head.any(axis=0), active])
    return np.nonzero(active)[0] + j0


@dataclass(frozen=True)
class _Schedule:
    """Which sample updates which row, for a block of m columns ([m, n] arrays).

    Parameter-free bookkeeping, computed once per block (a fit reuses it on every pass).
    `upd`: the sample updates the row (finite, newer than the row's last accepted sample,
    and not the row's first-ever sample, which initializes instead: `first_col` [n], -1 if
    none in the block); `dt_s`, `inv_dt`: seconds since the row's previous accepted sample
    and its inverse where `upd`, else 0; `resid_w`: the resid_var weight where `upd`, else 0
    ([0, n] when not needed); `first_t_s`, `last_t_s`, `n_obs` [n]: the state's after the block.
    """

    upd: B
    dt_s: F64
    inv_dt: F64
    resid_w: F64
    first_col: NDArray[np.intp]
    first_t_s: F64
    last_t_s: F64
    n_obs: I64

    def take(self, idx: NDArray[np.intp]) -> _Schedule:
        return _Schedule(
            upd=np.ascontiguousarray(self.upd[:, idx]),
            dt_s=np.ascontiguousarray(self.dt_s[:, idx]),
            inv_dt=np.ascontiguousarray(self.inv_dt[:, idx]),
            resid_w=np.ascontiguousarray(self.resid_w[:, idx]),
            first_col=self.first_col[idx],
            first_t_s=self.first_t_s[idx],
            last_t_s=self.last_t_s[idx],
            n_obs=self.n_obs[idx],
        )


def _schedule(
    t_s: F64,
    y_t: F64,
    first_t_s: F64,
    last_t_s: F64,
    n_obs: I64,
    with_resid_w: bool,
) -> _Schedule:
    """Bookkeeping for samples `y_t` [m, n] (transposed) at `t_s` [m]; see `_Schedule`."""
    m, n = y_t.shape
    upd = np.zeros((m, n), dtype=bool)
    dt_s = np.zeros((m, n))
    inv_dt = np.zeros((m, n))
    resid_w = np.zeros((m if with_resid_w else 0, n))
    first_col = np.full(n, -1, dtype=np.intp)
    first_t = first_t_s.copy()
    last_t = last_t_s.copy()
    count = n_obs.copy()
    unseen = count == 0
    n_unseen = int(unseen.sum())
    warm = False
    for j in range(m):
        t = float(t_s[j])
        acc = np.greater(t, last_t)
        acc &= np.isfinite(y_t[j])
        u = upd[j]
        np.copyto(u, acc)
        if n_unseen:
            rows = np.nonzero(acc & unseen)[0]
            if rows.size:
                u[rows] = False
                unseen[rows] = False
                n_unseen -= rows.size
                first_col[rows] = j
                first_t[rows] = t
        np.subtract(t, last_t, out=dt_s[j], where=u)
        np.divide(1.0, dt_s[j], out=inv_dt[j], where=u)
        np.copyto(last_t, t, where=acc)
        count += acc
        if with_resid_w:
            # The r-th residual (r = samples - 1) weighs 1/r until that reaches RESID_WEIGHT.
            if warm or count.min() - 1 >= 1.0 / RESID_WEIGHT:
                warm = True
                np.copyto(resid_w[j], RESID_WEIGHT, where=u)
            else:
                w = 1.0 / np.maximum(count - 1, 1)
                np.maximum(w, RESID_WEIGHT, out=resid_w[j], where=u)
    return _Schedule(upd, dt_s, inv_dt, resid_w, first_col, first_t, last_t, count)


@dataclass(frozen=True)
class _RunResult:
    """Filter state after a run, and for a fit pass (`n_sens` = P > 0) the SSE of the
    one-step residuals e, J^T e ([P, n], half the SSE gradient) and J^T J ([P, P, n]),
    J = de/d(alpha, beta, gamma)[:P]."""

    level: F64
    trend: F64
    season: F64
    resid_var: F64
    resid_up: F64
    sse: F64
    grad: F64
    gn: F64


def _run(
    state: ForecastState,
    t_s: F64,
    y_t: F64,
    sched: _Schedule,
    n_sens: int = 0,
    track_resid: bool = True,
) -> _RunResult:
    """Run the recursions over samples `y_t` [m, n] (transposed: one time step is
    contiguous) at `t_s` [m] as `sched` says; the one implementation of the module
    docstring's recursions, shared by `update` and `fit`.

    With `n_sens` = P > 0, also carries the sensitivities of level, trend and season to the
    first P of (alpha, beta, gamma) and accumulates SSE, J^T e and J^T J (method none is
    never fitted, so a = alpha wherever sensitivities are used).
    """
    n = state.n
    a, ab, g1, hw = _effective_params(state.method, state.alpha, state.beta, state.gamma)
    level = state.level.copy()
    trend = state.trend.copy()
    resid_var = state.resid_var.copy()
    resid_up = state.resid_up.copy()
    use_season = bool(hw.any())
    hwf = hw.astype(np.float64)
    # Season bucket-major ([N_SEASON_BUCKETS, n]): with one season length for all rows (the
    # usual case) all rows are in the same bucket at a time step, so the bucket is one
    # contiguous row instead of n scattered elements.
    # For a few columns (the usual tick) the transposes would cost more than they save, so
    # the season stays row-major and each step gathers n scattered elements.
    all_hw = bool(hw.all())
    uniform = use_season and bool(np.all(state.season_s == state.season_s[0]))
    major = uniform and t_s.shape[0] >= _BUCKET_MAJOR_MIN_COLS
    season_t = np.ascontiguousarray(state.season.T) if major else np.zeros((0, n))
    flat = state.season.copy().reshape(-1) if use_season and not major else np.zeros(0)
    base = np.arange(n, dtype=np.intp) * N_SEASON_BUCKETS
    k_cols = _bucket(t_s, np.full(t_s.shape, state.season_s[0])).tolist() if uniform else []

    # A row's first-ever sample initializes it (no residual); before it, the row's steps
    # are no-ops, so initializing up front gives the same result.
    rows0 = np.nonzero(sched.first_col >= 0)[0]
    cols0 = sched.first_col[rows0]
    y0 = y_t[cols0, rows0]
    if use_season:
        k0 = _bucket(t_s[cols0], state.season_s[rows0])
        y0 = y0 - hwf[rows0] * state.season[rows0, k0]
    level[rows0] = y0
    trend[rows0] = 0.0

    p_ch = n_sens
    sse = np.zeros(n if p_ch else 0)
    grad = np.zeros((p_ch, n))
    gn = np.zeros((p_ch, p_ch, n))
    d_level = np.zeros((p_ch, n))
    d_trend = np.zeros((p_ch, n))
    d_season_t = np.zeros((p_ch, season_t.shape[0], n))
    d_flat = np.zeros((p_ch, flat.shape[0]))
    zeros = np.zeros(n)
    trendf = ((state.method == METHOD_HOLT) | hw).astype(np.float64)
    # d(a*b) and d(g*(1-a)) with respect to (alpha, beta, gamma).
    d_ab = np.stack([state.beta * trendf, state.alpha * trendf, zeros])[:p_ch]
    d_g1 = np.stack([-state.gamma * hwf, zeros, (1.0 - state.alpha) * hwf])[:p_ch]

    for j in range(t_s.shape[0]):
        # Where a row has no update, dt = inv_dt = 0 and e = 0: every line is an exact no-op.
        # (In-place forms of the module docstring's expressions, same operation order.)
        upd = sched.upd[j]
        dt = sched.dt_s[j]
        inv_dt = sched.inv_dt[j]
        lp = trend * dt
        lp += level
        if use_season:
            if major:
                k = k_cols[j]
                sk = season_t[k]  # a view: updated in place below
            else:
                idx = base + (k_cols[j] if uniform else _bucket(np.full(n, t_s[j]), state.season_s))
                sk = flat[idx]
            p = lp + (sk if all_hw else sk * hwf)
        else:
            p = lp
        e = np.where(upd, y_t[j] - p, 0.0)
        if p_ch:
            # d_pm = -de/dtheta: the sensitivity of the forecast, masked like e.
            d_lp = d_trend * dt
            d_lp += d_level
            if use_season:
                d_sk = d_season_t[:, k] if major else d_flat[:, idx]
                d_p = d_lp + (d_sk if all_hw else d_sk * hwf)
            else:
                d_p = d_lp
            d_pm = np.where(upd, d_p, 0.0)
            sse += e * e
            grad -= e * d_pm
            gn += d_pm[:, None, :] * d_pm[None, :, :]
            d_lp -= a * d_pm
            d_level = d_lp
            d_level[0] += e
            d_tr = d_ab * e
            d_tr -= ab * d_pm
            d_tr *= inv_dt
            d_trend += d_tr
            if use_season:
                if major:
                    d_sk += d_g1 * e
                    d_sk -= g1 * d_pm
                else:
                    d_flat[:, idx] = d_sk + d_g1 * e - g1 * d_pm
        lp += a * e
        level = lp
        trend += ab * e * inv_dt
        if use_season:
            if major:
                sk += g1 * e
            else:
                flat[idx] = sk + g1 * e
        if track_resid:
            r2 = e * e
            u2 = np.where(e > 0.0, r2, 0.0)
            u2 *= 2.0
            u2 -= resid_up
            u2 *= sched.resid_w[j]
            resid_up += u2
            r2 -= resid_var
            r2 *= sched.resid_w[j]
            resid_var += r2

    return _RunResult(
        level=level,
        trend=trend,
        season=(
            np.ascontiguousarray(season_t.T)
            if major
            else flat.reshape(n, N_SEASON_BUCKETS)
            if use_season
            else state.season
        ),
        resid_var=resid_var,
        resid_up=resid_up,
        sse=sse,
        grad=grad,
        gn=gn,
    )


@dataclass(frozen=True)
class _FitProblem:
    """A fit's fixed data for k series: the history `y_t` [m, k] (transposed) at `t_s` and
    its schedule from a fresh filter (`fresh`: no sample, zero trend, the series' current
    season), the starting parameters `theta0` [P, k], which channels are free ([P, k]) and
    the bounds ([P, 1])."""

    t_s: F64
    y_t: F64
    sched: _Schedule
    fresh: ForecastState
    theta0: F64
    free: B
    lo: F64
    hi: F64

    @property
    def n_channels(self) -> int:
        return int(self.theta0.shape[0])

    @classmethod
    def build(cls, t_s: F64, y: F64, state: ForecastState) -> _FitProblem:
        k = state.n
        m = state.method
        fresh = replace(
            ForecastState.initial(k, m, state.alpha, state.beta, state.gamma, state.season_s),
            season=state.season,
        )
        y_t = np.ascontiguousarray(y.T)
        sched = _schedule(
            t_s, y_t, fresh.first_t_s, fresh.last_t_s, fresh.n_obs, with_resid_w=False
        )
        hw = m == METHOD_HOLT_WINTERS
        trend_free = (m == METHOD_HOLT) | hw
        # gamma only moves a bucket's offset for the bucket's next visit: a window shorter
        # than two seasons holds no revisit to judge it by, so it stays as configured.
        gamma_free = hw & (sched.last_t_s - sched.first_t_s >= 2.0 * state.season_s)
        p_ch = 3 if gamma_free.any() else 2 if trend_free.any() else 1
        lo = np.array([[ALPHA_MIN], [0.0], [0.0]])[:p_ch]
        hi = np.ones((p_ch, 1))
        return cls(
            t_s=t_s,
            y_t=y_t,
            sched=sched,
            fresh=fresh,
            theta0=np.clip(np.stack([state.alpha, state.beta, state.gamma])[:p_ch], lo, hi),
            free=np.stack([m != METHOD_NONE, trend_free, gamma_free])[:p_ch],
            lo=lo,
            hi=hi,
        )

    def take(self, idx: NDArray[np.intp]) -> _FitProblem:
        return replace(
            self,
            y_t=np.ascontiguousarray(self.y_t[:, idx]),
            sched=self.sched.take(idx),
            fresh=self.fresh.take(idx),
            theta0=self.theta0[:, idx],
            free=self.free[:, idx],
        )

    def evaluate(self, theta: F64) -> _RunResult:
        """One pass at `theta` [P, k]: SSE, J^T e and J^T J of every series."""
        names = ("alpha", "beta", "gamma")[: self.n_channels]
        params = {name: theta[i] for i, name in enumerate(names)}
        return _run(
            replace(self.fresh, **params),
            self.t_s,
            self.y_t,
            self.sched,
            n_sens=self.n_channels,
            track_resid=False,
        )


def _fit_lm(problem: _FitProblem, max_iter: int) -> F64:
    """Bounded Levenberg-Marquardt per series, batched: returns theta [P, n].

    Each series keeps (theta, SSE, J^T e, J^T J) of its best point and its own damping;
    a pass evaluates the trial points of the series still active. A trial that lowers the
    SSE is taken (damping / 10); otherwise the damping grows x 10 and the next trial is
    shorter and closer to the projected gradient direction. A series stops when a taken
    step moves no parameter by more than _LM_STEP_TOL or lowers the SSE by less than a
    relative _LM_RTOL, when its projected step is zero, or when its damping passes
    _LM_LAMBDA_MAX. Once fewer than 3/4 of the series in a pass are active, the pass is
    compacted to the active ones.
    """
    theta = problem.theta0.copy()
    p_ch, n = theta.shape
    first = problem.evaluate(theta)
    sse, grad, gn = first.sse, first.grad, first.gn
    lam = np.full(n, _LM_LAMBDA0)
    active = np.ones(n, dtype=bool)
    eye = np.eye(p_ch)
    cur, ids = problem, np.arange(n)
    for _ in range(max_iter - 1):
        act = active[ids]
        if not act.any():
            break
        if act.sum() < 0.75 * ids.size:
            keep = np.nonzero(act)[0]
            cur, ids, act = cur.take(keep), ids[keep], act[keep]
        f = (cur.free & act).astype(np.float64)  # [P, k]; inactive series take no step
        g = grad[:, ids] * f
        h = gn[:, :, ids] * f[:, None, :] * f[None, :, :]
        diag = np.einsum("iik->ik", h)
        # Marquardt scaling by diag(J^T J), floored so a parameter without effect still
        # gives a nonsingular system; fixed channels get identity rows (and no step).
        floor = 1e-12 * diag.sum(axis=0) + 1e-300
        damp = lam[ids] * np.maximum(diag, floor) + (1.0 - f)
        mat = np.moveaxis(h, -1, 0) + damp.T[:, :, None] * eye  # [k, P, P]
        step = np.linalg.solve(mat, -g.T[:, :, None])[:, :, 0].T  # [P, k]
        before = theta[:, ids]
        trial = np.clip(before + step * f, problem.lo, problem.hi)
        moved = np.any(trial != before, axis=0)
        res = cur.evaluate(trial)
        better = act & moved & (res.sse < sse[ids])
        gain = np.where(better, sse[ids] - res.sse, 0.0)
        take = ids[better]
        theta[:, take] = trial[:, better]
        sse[take] = res.sse[better]
        grad[:, take] = res.grad[:, better]
        gn[:, :, take] = res.gn[:, :, better]
        lam[ids] = np.where(
            better,
            np.maximum(lam[ids] / 10.0, _LM_LAMBDA_MIN),
            np.where(act, lam[ids] * 10.0, lam[ids]),
        )
        small_step = np.abs(trial - before).max(axis=0) <= _LM_STEP_TOL
        done = act & (
            ~moved
            | (better & (small_step | (gain <= _LM_RTOL * sse[ids])))
            | (~better & (lam[ids] > _LM_LAMBDA_MAX))
        )
        active[ids[done]] = False
    return theta


__all__ = [
    "ALPHA_MIN",
    "FIT_MAX_ITER",
    "FIT_MIN_SAMPLES",
    "METHOD_CODES",
    "METHOD_EWMA",
    "METHOD_HOLT",
    "METHOD_HOLT_WINTERS",
    "METHOD_NAMES",
    "METHOD_NONE",
    "N_SEASON_BUCKETS",
    "RESID_WEIGHT",
    "ForecastState",
    "fit",
    "predict",
    "update",
]
