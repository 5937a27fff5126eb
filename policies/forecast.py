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
    upper = mean + ndtri(quantile) * sqrt(resid_var * c(h)),   both clipped at >= 0

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
residuals of exactly the recursion above, run from a fresh state (first sample, zero trend,
the state's current season) over the given history. The objective is separable (each
series' SSE depends on its own 1-3 parameters only), so `fit` runs a bounded Levenberg-Marquardt
iteration vectorized over series: one forward pass carries the sensitivities
`d(level, trend, season)/d(alpha, beta, gamma)` alongside the state and accumulates the
gradient `J^T e` and the Gauss-Newton matrix `J^T J` (at most 3x3) of every series; each series
then takes its own damped step (projected onto the bounds), keeps it only if its SSE falls,
and adapts its own damping. Converged series drop out of the next pass. A single
`scipy.optimize.minimize(L-BFGS-B)` over all parameters at once was measured too: its one
line search and one low-rank curvature model are shared by thousands of unrelated 1-3
parameter problems, so it needs many more passes for the same SSE; see `fit`.

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
FIT_MAX_ITER: int = 30

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
    second sample); `n_obs` the number of accepted samples. Never mutated: functions return
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
                    floats[name][i] = float(item[name])
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
    out, _ = _run(state, t_s[cols], np.ascontiguousarray(y[:, cols].T))
    return out


def predict(
    state: ForecastState,
    now_s: float,
    horizon_s: F64 | float,
    quantile: F64 | float,
) -> tuple[F64, F64]:
    """(mean, upper) [n]: the forecast at `now_s + horizon_s` and its upper bound at
    `quantile` (scalars or [n] arrays; quantile in (0, 1), 0.5 gives upper == mean).

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
    upper = mean + z * np.sqrt(state.resid_var * c)
    mean = np.where(seen, np.maximum(mean, 0.0), np.nan)
    upper = np.where(seen, np.maximum(upper, 0.0), np.nan)
    return mean, upper


def fit(t_s: F64, y: F64, state: ForecastState, max_iter: int = FIT_MAX_ITER) -> ForecastState:
    """Re-estimate alpha (ewma), alpha and beta (holt), alpha, beta and gamma (holt_winters)
    per series to minimize the one-step squared error over the history `y` [n, s] at `t_s`.

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
class _Sensitivity:
    """What a fit pass accumulates per series: SSE of the one-step residuals e, J^T e
    ([P, n], half the SSE gradient) and J^T J ([P, P, n]), J = de/d(alpha, beta, gamma)[:P]."""

    sse: F64
    grad: F64
    gn: F64


def _run(
    state: ForecastState,
    t_s: F64,
    y_t: F64,
    n_sens: int = 0,
    track_resid: bool = True,
) -> tuple[ForecastState, _Sensitivity | None]:
    """Run the recursions over the samples `y_t` [m, n] (transposed: one time step is
    contiguous) at times `t_s` [m]; the one implementation that `update` and `fit` share.

    With `n_sens` = P > 0, also carries the sensitivities of level, trend and season to the
    first P of (alpha, beta, gamma) and accumulates SSE, J^T e and J^T J of the residuals
    (method none is never fitted, so a = alpha wherever they are used).
    """
    n = state.n
    a, ab, g1, hw = _effective_params(state.method, state.alpha, state.beta, state.gamma)
    level = state.level.copy()
    trend = state.trend.copy()
    resid_var = state.resid_var.copy()
    first_t = state.first_t_s.copy()
    last_t = state.last_t_s.copy()
    n_obs = state.n_obs.copy()
    unseen = n_obs == 0
    n_unseen = int(unseen.sum())
    use_season = bool(hw.any())
    hwf = hw.astype(np.float64)
    # Season bucket-major ([N_SEASON_BUCKETS, n]): with one season length for all rows
    # (the usual case) every row's bucket at a time step is the same, so the bucket is one
    # contiguous row instead of n scattered elements.
    col = np.arange(n, dtype=np.intp)
    season_t = np.ascontiguousarray(state.season.T) if use_season else np.zeros((0, n))
    flat_t = season_t.reshape(-1)
    uniform = use_season and bool(np.all(state.season_s == state.season_s[0]))
    if uniform:
        k_cols = _bucket(t_s, np.full(t_s.shape, state.season_s[0])).tolist()

    p_ch = n_sens
    sse = np.zeros(n)
    grad = np.zeros((p_ch, n))
    gn = np.zeros((p_ch, p_ch, n))
    d_level = np.zeros((p_ch, n))
    d_trend = np.zeros((p_ch, n))
    d_season_t = np.zeros((p_ch, season_t.shape[0], n))
    d_flat_t = d_season_t.reshape(p_ch, season_t.size)
    zeros = np.zeros(n)
    trendf = ((state.method == METHOD_HOLT) | hw).astype(np.float64)
    # d(a*b)/d(alpha, beta, gamma) and d(g*(1-a))/d(alpha, beta, gamma).
    d_ab = np.stack([state.beta * trendf, state.alpha * trendf, zeros])[:p_ch]
    d_g1 = np.stack([-state.gamma * hwf, zeros, (1.0 - state.alpha) * hwf])[:p_ch]

    for j in range(t_s.shape[0]):
        t = float(t_s[j])
        y = y_t[j]
        acc = np.isfinite(y)
        acc &= t > last_t
        upd = acc
        if n_unseen:
            new = acc & unseen
            if new.any():
                # A row's first sample initializes it and makes no residual.
                rows = np.nonzero(new)[0]
                y0 = y[rows]
                if use_season:
                    k0 = _bucket(np.full(rows.shape, t), state.season_s[rows])
                    y0 = y0 - hwf[rows] * season_t[k0, rows]
                level[rows] = y0
                trend[rows] = 0.0
                first_t[rows] = t
                unseen[rows] = False
                n_unseen -= rows.size
                upd = acc & ~new
        # Rows without a sample here get dt = 0 and e = 0: every update below is then an
        # exact no-op for them (unseen rows: t - (-inf) = inf, masked here).
        dt = np.where(upd, t - last_t, 0.0)
        inv_dt = np.divide(1.0, dt, out=np.zeros(n), where=upd)
        np.copyto(last_t, t, where=acc)
        n_obs += acc
        lp = level + trend * dt
        if use_season:
            if uniform:
                k = k_cols[j]
                sk = season_t[k]
            else:
                idx = _bucket(np.full(n, t), state.season_s) * n + col
                sk = flat_t[idx]
            p = lp + sk * hwf
        else:
            p = lp
        e = np.where(upd, y - p, 0.0)
        if p_ch:
            d_lp = d_level + d_trend * dt
            if use_season:
                d_sk = d_season_t[:, k] if uniform else d_flat_t[:, idx]
                d_p = d_lp + d_sk * hwf
            else:
                d_p = d_lp
            d_e = np.where(upd, -d_p, 0.0)
            sse += e * e
            grad += e * d_e
            gn += d_e[:, None, :] * d_e[None, :, :]
            d_level = d_lp + a * d_e
            d_level[0] += e
            d_trend = d_trend + (d_ab * e + ab * d_e) * inv_dt
            if use_season:
                d_s = d_sk + d_g1 * e + g1 * d_e
                if uniform:
                    d_season_t[:, k] = d_s
                else:
                    d_flat_t[:, idx] = d_s
        level = lp + a * e
        trend = trend + ab * e * inv_dt
        if use_season:
            if uniform:
                season_t[k] = sk + g1 * e
            else:
                flat_t[idx] = sk + g1 * e
        if track_resid:
            # Weight 1/r for the r-th residual until it reaches RESID_WEIGHT.
            w = np.maximum(1.0 / np.maximum(n_obs - 1, 1), RESID_WEIGHT)
            resid_var += np.where(upd, w, 0.0) * (e * e - resid_var)

    out = replace(
        state,
        level=level,
        trend=trend,
        season=np.ascontiguousarray(season_t.T) if use_season else state.season,
        first_t_s=first_t,
        last_t_s=last_t,
        resid_var=resid_var,
        n_obs=n_obs,
    )
    return out, (_Sensitivity(sse, grad, gn) if p_ch else None)


@dataclass(frozen=True)
class _FitProblem:
    """A fit's fixed data for k series: the history `y_t` [m, k] (transposed) at `t_s`, a
    fresh filter per series (no sample, zero trend, the series' current season), the
    starting parameters `theta0` [P, k], which channels are free ([P, k]) and the bounds."""

    t_s: F64
    y_t: F64
    fresh: ForecastState
    theta0: F64
    free: B
    lo: F64  # [P, 1]
    hi: F64  # [P, 1]

    @property
    def n_channels(self) -> int:
        return int(self.theta0.shape[0])

    @classmethod
    def build(cls, t_s: F64, y: F64, state: ForecastState) -> _FitProblem:
        m = state.method
        hw = m == METHOD_HOLT_WINTERS
        trend_free = (m == METHOD_HOLT) | hw
        p_ch = 3 if hw.any() else 2 if trend_free.any() else 1
        lo = np.array([[ALPHA_MIN], [0.0], [0.0]])[:p_ch]
        hi = np.ones((p_ch, 1))
        fresh = ForecastState.initial(
            state.n, m, state.alpha, state.beta, state.gamma, state.season_s
        )
        return cls(
            t_s=t_s,
            y_t=np.ascontiguousarray(y.T),
            fresh=replace(fresh, season=state.season),
            theta0=np.clip(np.stack([state.alpha, state.beta, state.gamma])[:p_ch], lo, hi),
            free=np.stack([m != METHOD_NONE, trend_free, hw])[:p_ch],
            lo=lo,
            hi=hi,
        )

    def take(self, idx: NDArray[np.intp]) -> _FitProblem:
        return replace(
            self,
            y_t=np.ascontiguousarray(self.y_t[:, idx]),
            fresh=self.fresh.take(idx),
            theta0=self.theta0[:, idx],
            free=self.free[:, idx],
        )

    def evaluate(self, theta: F64) -> _Sensitivity:
        """SSE, J^T e and J^T J at `theta` [P, k]."""
        p_ch = self.n_channels
        params = {"alpha": theta[0]}
        if p_ch > 1:
            params["beta"] = theta[1]
        if p_ch > 2:
            params["gamma"] = theta[2]
        _, sens = _run(
            replace(self.fresh, **params), self.t_s, self.y_t, n_sens=p_ch, track_resid=False
        )
        if sens is None:  # n_sens >= 1 always returns sensitivities
            raise RuntimeError("fit pass returned no sensitivities")
        return sens


def _fit_lm(problem: _FitProblem, max_iter: int) -> F64:
    """Bounded Levenberg-Marquardt per series, batched: returns theta [P, n].

    Each series keeps (theta, SSE, J^T e, J^T J) of its best point and its own damping;
    a pass evaluates the trial points of the series still active. A trial that lowers the
    SSE is taken (damping / 10); otherwise the damping grows x 10 and the next trial is
    shorter and closer to the projected gradient direction. A series stops when its SSE
    falls by less than a relative _LM_RTOL, its projected step is zero, or its damping
    passes _LM_LAMBDA_MAX. Once fewer than 3/4 of the series in the pass are active, the
    pass is compacted to the active ones.
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
        # Marquardt scaling by diag(J^T J), floored so a parameter without effect (or a
        # fixed one) still gives a nonsingular system; fixed channels get identity rows.
        floor = 1e-12 * diag.sum(axis=0) + 1e-300
        damp = lam[ids] * np.maximum(diag, floor) + (1.0 - f)
        mat = np.moveaxis(h, -1, 0) + damp.T[:, :, None] * eye  # [k, P, P]
        step = np.linalg.solve(mat, -g.T[:, :, None])[:, :, 0].T  # [P, k]
        trial = np.clip(theta[:, ids] + step * f, problem.lo, problem.hi)
        moved = np.any(trial != theta[:, ids], axis=0)
        theta_before = theta[:, ids]
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
        done = act & (
            ~moved
            | (better & (gain <= _LM_RTOL * sse[ids]))
            | (better & (np.abs(trial - theta_before).max(axis=0) <= _LM_STEP_TOL))
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
