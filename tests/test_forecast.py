"""Forecasting: accuracy on synthetic series, bounds, NaN handling, fitting, persistence.

Series are batches: one call runs every row, so statistical checks use many rows at once.
"""

from __future__ import annotations

import json
from dataclasses import fields

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.forecast import (
    ALPHA_MIN,
    FIT_MIN_SAMPLES,
    METHOD_CODES,
    METHOD_EWMA,
    METHOD_HOLT,
    METHOD_HOLT_WINTERS,
    METHOD_NONE,
    N_SEASON_BUCKETS,
    ForecastState,
    fit,
    predict,
    update,
)

DAY_S = 86400.0
STEP_S = 60.0


def make_state(
    n: int,
    method: str,
    alpha: float = 0.3,
    beta: float = 0.05,
    gamma: float = 0.1,
    season_s: float = DAY_S,
) -> ForecastState:
    return ForecastState.initial(n, method, alpha, beta, gamma, season_s)


def assert_states_equal(a: ForecastState, b: ForecastState, rtol: float = 0.0) -> None:
    for f in fields(ForecastState):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if rtol:
            np.testing.assert_allclose(x, y, rtol=rtol, atol=0, equal_nan=True, err_msg=f.name)
        else:
            np.testing.assert_array_equal(x, y, err_msg=f.name)


def one_step_sse(state: ForecastState, t_s: np.ndarray, y: np.ndarray) -> np.ndarray:
    """SSE of one-step residuals computed from the public API only: before each sample,
    predict at its time (horizon 0, quantile 0.5), then update with it."""
    sse = np.zeros(state.n)
    s = state
    for j in range(t_s.size):
        mean, _ = predict(s, float(t_s[j]), 0.0, 0.5)
        seen = s.n_obs > 0
        r = np.where(seen & np.isfinite(y[:, j]), y[:, j] - np.where(seen, mean, 0.0), 0.0)
        sse += r * r
        s = update(s, t_s[: j + 1], y[:, : j + 1])
    return sse


def holt_process(
    rng: np.random.Generator, n: int, s: int, alpha: float, beta: float, sigma: float, level0: float
) -> np.ndarray:
    """Series from the Holt model itself (ETS(A,A,N), trend per second, STEP_S steps)."""
    eps = rng.normal(0.0, sigma, (n, s))
    y = np.empty((n, s))
    level, trend = np.full(n, level0), np.zeros(n)
    for j in range(s):
        y[:, j] = level + trend * STEP_S + eps[:, j]
        level = level + trend * STEP_S + alpha * eps[:, j]
        trend = trend + alpha * beta * eps[:, j] / STEP_S
    return y


# --- accuracy -------------------------------------------------------------------------------


def test_holt_follows_a_linear_ramp_within_the_noise_bound() -> None:
    rng = np.random.default_rng(1)
    n, s = 200, 600
    t = np.arange(s) * STEP_S
    slope_per_s = 0.02  # 1.2 units per 60 s step
    y = 50.0 + slope_per_s * t[None, :] + rng.normal(0.0, 1.0, (n, s))
    state = update(make_state(n, "holt"), t, y)
    horizon_s = 300.0
    mean, _ = predict(state, float(t[-1]), horizon_s, 0.5)
    truth = 50.0 + slope_per_s * (t[-1] + horizon_s)  # 50 + 0.02 * 36240 = 774.8
    err = mean - truth
    # Level noise is about sigma * sqrt(alpha / (2 - alpha)) = 0.42; the trend estimate adds
    # a few hundredths of a unit/step over 5 steps: the mean abs error stays well under 1.
    assert np.mean(np.abs(err)) < 1.0
    assert abs(np.mean(err)) < 0.2  # no lag bias once the trend is learned
    np.testing.assert_allclose(np.median(state.trend), slope_per_s, rtol=0.05)


def _ewma_on_noise(seed: int, n: int, s: int) -> tuple[np.ndarray, ForecastState]:
    """EWMA (alpha 0.1) run over n series of s samples of 20 + N(0, 1), STEP_S apart."""
    rng = np.random.default_rng(seed)
    t = np.arange(s) * STEP_S
    y = 20.0 + rng.normal(0.0, 1.0, (n, s))
    return t, update(make_state(n, "ewma", alpha=0.1), t, y)


def test_ewma_on_a_constant_converges_to_it() -> None:
    _, state = _ewma_on_noise(2, 500, 500)
    # Level std = sigma * sqrt(alpha / (2 - alpha)) = sqrt(0.1 / 1.9) = 0.23; 4 std = 0.92.
    assert np.max(np.abs(state.level - 20.0)) < 0.92
    assert abs(np.mean(state.level) - 20.0) < 0.05
    # One-step residual variance = sigma^2 * (1 + alpha / (2 - alpha)) = 1.053.
    assert 0.9 < np.median(state.resid_var) < 1.2
    np.testing.assert_array_equal(state.trend, 0.0)


def test_upper_semivariance_matches_the_variance_on_symmetric_noise_and_ignores_a_drop() -> None:
    n = 400
    t, state = _ewma_on_noise(21, n, 400)
    # doubled upper semi-variance of symmetric residuals: the same expectation as resid_var
    ratio = state.resid_up / state.resid_var
    assert 0.95 < np.median(ratio) < 1.05
    # a drop to 2 (one residual of about -18): resid_var jumps, resid_up only decays
    before = state
    state = update(state, t[-1:] + STEP_S, np.full((n, 1), 2.0))
    assert np.all(state.resid_var > 5.0 * before.resid_var)
    assert np.all(state.resid_up <= before.resid_up)
    now = float(t[-1] + STEP_S)
    _, full = predict(state, now, 20 * STEP_S, 0.95)
    mean, up = predict(state, now, 20 * STEP_S, 0.95, upside_only=True)
    assert np.all(up < full)
    assert np.all(up - mean < 0.5 * (full - mean))


def test_upside_only_never_widens_the_bound() -> None:
    # a ramp: every residual positive, resid_up = 2 * resid_var; the bound stays resid_var's
    t = np.arange(60) * STEP_S
    y = np.vstack([5.0 + 0.5 * np.arange(60), 50.0 - 0.5 * np.arange(60)])
    state = update(make_state(2, "ewma", alpha=0.3), t, y)
    assert state.resid_up[0] > 1.9 * state.resid_var[0]
    _, full = predict(state, float(t[-1]), 300.0, 0.95)
    _, up = predict(state, float(t[-1]), 300.0, 0.95, upside_only=np.array([True, True]))
    np.testing.assert_allclose(up[0], full[0])
    assert up[1] < full[1]  # the falling row: over-forecasts only


def test_holt_winters_beats_holt_across_a_daily_peak() -> None:
    rng = np.random.default_rng(3)
    n = 20
    t = np.arange(3 * 1440) * STEP_S  # 3 days at 60 s

    def truth(tt: np.ndarray | float) -> np.ndarray:
        return np.asarray(100.0 + 50.0 * np.sin(2 * np.pi * np.asarray(tt) / DAY_S))

    y = truth(t)[None, :] + rng.normal(0.0, 2.0, (n, t.size))
    # History ends 1.5 h before the third day's peak (peaks at 6 h of each day): the 3 h
    # horizon crosses the peak, where Holt's straight line overshoots.
    end = int((2 * DAY_S + DAY_S / 4 - 5400.0) / STEP_S)
    now_s, horizon_s = float(t[end - 1]), 3 * 3600.0
    # A slow level (alpha = 0.003: ~5 h memory) and a fast season leave the daily swing to
    # the season buckets; Holt keeps its default parameters.
    hw = update(make_state(n, "holt_winters", 0.003, 0.0, 0.2), t[:end], y[:, :end])
    holt = update(make_state(n, "holt"), t[:end], y[:, :end])
    assert np.all(hw.last_t_s - hw.first_t_s >= 2 * DAY_S)  # the season is in use
    hw_err = np.abs(predict(hw, now_s, horizon_s, 0.5)[0] - truth(now_s + horizon_s))
    holt_err = np.abs(predict(holt, now_s, horizon_s, 0.5)[0] - truth(now_s + horizon_s))
    # Holt's line misses by ~19 (the swing is 50 units); HW's learned season within 8.
    assert np.mean(hw_err) < 0.5 * np.mean(holt_err)
    assert np.mean(hw_err) < 8.0


def test_holt_winters_forecasts_like_holt_before_two_seasons() -> None:
    rng = np.random.default_rng(4)
    t = np.arange(600) * STEP_S  # 10 h of a daily season
    y = 100.0 + rng.normal(0.0, 5.0, (3, t.size))
    state = update(make_state(3, "holt_winters", gamma=0.5), t, y)
    assert np.any(state.season != 0.0)  # the season is learning...
    horizons = np.array([600.0, 3600.0, 7200.0])  # ...but different target buckets
    means = np.stack([predict(state, float(t[-1]), h, 0.5)[0] for h in horizons])
    # ...do not matter yet: mean(h) = level + trend * (h + 0) + season[bucket(last_t)].
    expected = (
        state.level
        + state.trend * horizons[:, None]
        + state.season[np.arange(3), int((t[-1] % DAY_S) // 600)]
    )
    np.testing.assert_allclose(means, np.maximum(expected, 0.0), rtol=1e-12)


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        # none: the last sample, no trend: 7.0 at any horizon.
        pytest.param("none", 7.0, id="none-holds-the-last-sample"),
        # ewma on 1, 3, 5, 7 with alpha 0.5: 1 -> 2 -> 3.5 -> 5.25; no trend.
        pytest.param("ewma", 5.25, id="ewma-holds-the-smoothed-level"),
    ],
)
def test_methods_without_trend_hold_the_level(method: str, expected: float) -> None:
    t = np.arange(4) * STEP_S
    y = np.array([[1.0, 3.0, 5.0, 7.0]])
    state = update(make_state(1, method, alpha=0.5), t, y)
    mean, upper = predict(state, float(t[-1]), 3600.0, 0.5)
    assert mean[0] == pytest.approx(expected)
    assert upper[0] == mean[0]


def test_forecasts_are_clipped_at_zero() -> None:
    t = np.arange(50) * STEP_S
    y = (100.0 - 2.0 * np.arange(50))[None, :]  # falling 2 per step, at 2 by the end
    state = update(make_state(1, "holt", alpha=0.9, beta=0.9), t, y)
    mean, upper = predict(state, float(t[-1]), 600.0, 0.95)  # 10 more steps: -18 unclipped
    assert mean[0] == 0.0
    assert upper[0] >= 0.0


# --- prediction bounds ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "horizon_s"),
    [
        # one step ahead: the bound is the residual std times ndtri(0.95) = 1.645
        pytest.param("ewma", STEP_S, id="ewma-one-step"),
        pytest.param("holt", STEP_S, id="holt-one-step"),
        # five steps: c(5) widens the bound for the level (and trend) uncertainty
        pytest.param("ewma", 5 * STEP_S, id="ewma-five-steps"),
        pytest.param("holt", 5 * STEP_S, id="holt-five-steps"),
    ],
)
def test_upper_bound_covers_about_its_quantile_on_stationary_noise(
    method: str, horizon_s: float
) -> None:
    rng = np.random.default_rng(5)
    n, s = 4000, 400
    steps = int(horizon_s / STEP_S)
    t = np.arange(s + steps) * STEP_S
    y = 100.0 + rng.normal(0.0, 5.0, (n, s + steps))
    state = update(make_state(n, method, alpha=0.2, beta=0.02), t[:s], y[:, :s])
    mean, upper = predict(state, float(t[s - 1]), horizon_s, 0.95)
    covered = np.mean(y[:, s - 1 + steps] <= upper)
    assert 0.90 <= covered <= 0.99
    mean50, upper50 = predict(state, float(t[s - 1]), horizon_s, 0.5)
    np.testing.assert_array_equal(upper50, mean50)
    assert np.all(upper > mean)


def test_bound_widens_with_the_horizon() -> None:
    rng = np.random.default_rng(6)
    t = np.arange(300) * STEP_S
    y = 100.0 + rng.normal(0.0, 5.0, (2, 300))
    state = update(make_state(2, "holt"), t, y)
    widths = [np.subtract(*predict(state, float(t[-1]), h, 0.9)[::-1]) for h in (60.0, 600.0)]
    assert np.all(widths[1] > widths[0])


# --- NaN, chunks and edge rows --------------------------------------------------------------


METHODS = ["none", "ewma", "holt", "holt_winters"]


def test_nan_samples_are_skipped_as_if_absent() -> None:
    rng = np.random.default_rng(7)
    s = 300
    t = np.arange(s) * STEP_S
    y = 100.0 + np.cumsum(rng.normal(0.0, 1.0, (4, s)), axis=1)
    nan_cols = rng.random(s) < 0.2  # the same columns in every row
    y_nan = y.copy()
    y_nan[:, nan_cols] = np.nan
    start = ForecastState.initial(4, METHODS, 0.3, 0.05, 0.2, 3600.0)
    with_nan = update(start, t, y_nan)
    without = update(start, t[~nan_cols], y[:, ~nan_cols])
    assert_states_equal(with_nan, without)


def test_all_nan_rows_stay_empty_and_do_not_disturb_other_rows() -> None:
    rng = np.random.default_rng(8)
    t = np.arange(100) * STEP_S
    y = 10.0 + rng.normal(0.0, 1.0, (3, 100))
    y_nan = y.copy()
    y_nan[1] = np.nan
    state = update(make_state(3, "holt"), t, y_nan)
    alone = update(make_state(2, "holt"), t, y[[0, 2]])
    assert_states_equal(state.take([0, 2]), alone)
    assert state.n_obs[1] == 0 and np.isnan(state.level[1])
    assert state.last_t_s[1] == -np.inf and np.isnan(state.first_t_s[1])
    mean, upper = predict(state, float(t[-1]), 300.0, 0.9)
    assert np.isnan(mean[1]) and np.isnan(upper[1])
    assert np.all(np.isfinite(mean[[0, 2]]))


@pytest.mark.parametrize(
    "chunk",
    [
        pytest.param(1, id="one-new-sample-per-tick"),
        pytest.param(3, id="three-new-samples-per-tick"),
        pytest.param(50, id="large-chunks"),
    ],
)
def test_chunked_updates_equal_one_update(chunk: int) -> None:
    rng = np.random.default_rng(9)
    s, window = 400, 120
    t = 1.7e9 + np.arange(s) * STEP_S
    y = 50.0 + np.cumsum(rng.normal(0.0, 1.0, (8, s)), axis=1)
    y[rng.random(y.shape) < 0.1] = np.nan
    y[7, :200] = np.nan  # a series that starts late
    start = ForecastState.initial(8, METHODS * 2, 0.3, 0.05, 0.3, 7200.0)
    whole = update(start, t, y)
    ticked = start
    for end in range(chunk, s + chunk, chunk):
        lo = max(0, end - window)  # each tick sees a sliding window, as the loop passes it
        ticked = update(ticked, t[lo:end], y[:, lo:end])
    assert_states_equal(ticked, whole)


def test_a_sample_that_arrives_late_is_still_taken() -> None:
    t = np.arange(5) * STEP_S
    y = np.array([[1.0, 2.0, 3.0, 4.0, 5.0]])
    early = y.copy()
    early[0, 4] = np.nan  # the newest point is not scraped yet on this tick
    state = update(update(make_state(1, "ewma"), t, early), t, y)
    assert_states_equal(state, update(make_state(1, "ewma"), t, y))


def test_update_returns_a_new_state_and_leaves_the_input_alone() -> None:
    t = np.arange(10) * STEP_S
    y = np.arange(10.0)[None, :]
    start = make_state(1, "holt_winters", season_s=600.0)
    snapshot = {f.name: getattr(start, f.name).copy() for f in fields(start)}
    after = update(start, t, y)
    assert after is not start
    for name, value in snapshot.items():
        np.testing.assert_array_equal(getattr(start, name), value)
    assert update(after, t, y) is after  # nothing new: the same (immutable) state


# --- fit ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alpha", "beta"),
    [
        pytest.param(0.5, 0.2, id="fast-level-and-trend"),
        pytest.param(0.2, 0.1, id="slow-level"),
        pytest.param(0.8, 0.05, id="near-random-walk"),
    ],
)
def test_fit_recovers_the_parameters_of_a_holt_process(alpha: float, beta: float) -> None:
    rng = np.random.default_rng(10)
    n, s = 12, 600
    t = np.arange(s) * STEP_S
    # level0 far above the walk's spread (hundreds) so predict's clipping at 0 never acts
    y = holt_process(rng, n, s, alpha, beta, sigma=1.0, level0=1e5)
    start = make_state(n, "holt")  # the spec defaults: alpha 0.3, beta 0.05
    fitted = fit(t, y, start)
    assert np.all((fitted.alpha >= ALPHA_MIN) & (fitted.alpha <= 1.0))
    assert np.all((fitted.beta >= 0.0) & (fitted.beta <= 1.0))
    np.testing.assert_array_equal(fitted.gamma, start.gamma)  # holt has no season
    # The one-step SSE, measured through update/predict, never rises above the start's.
    sse_fit = one_step_sse(fitted, t, y)
    sse_start = one_step_sse(start, t, y)
    assert np.all(sse_fit <= sse_start * (1 + 1e-12))
    # 600 samples pin alpha and beta down to a few hundredths (median over series).
    assert np.median(fitted.alpha) == pytest.approx(alpha, abs=0.05)
    assert np.median(fitted.beta) == pytest.approx(beta, abs=0.05)
    # The filter state is left as it was: fit only changes parameters.
    np.testing.assert_array_equal(fitted.level, start.level)


def test_fit_per_method_touches_only_its_parameters() -> None:
    rng = np.random.default_rng(11)
    s = 400
    t = np.arange(s) * 600.0  # 10-minute steps: 400 samples are 2.8 days
    y = holt_process(rng, 4, s, 0.4, 0.1, sigma=1.0, level0=1e4)
    y += 20.0 * np.sin(2 * np.pi * t / DAY_S)
    y[3, FIT_MIN_SAMPLES - 1 :] = np.nan  # one sample short of fitting: keeps its parameters
    start = ForecastState.initial(
        4, ["none", "ewma", "holt_winters", "holt"], 0.3, 0.05, 0.1, DAY_S
    )
    fitted = fit(t, y, start)
    for name in ("alpha", "beta", "gamma"):
        assert getattr(fitted, name)[0] == getattr(start, name)[0]  # none: nothing to fit
        assert getattr(fitted, name)[3] == getattr(start, name)[3]  # too few samples
    assert fitted.alpha[1] != start.alpha[1]
    assert fitted.beta[1] == start.beta[1] and fitted.gamma[1] == start.gamma[1]  # ewma
    assert fitted.alpha[2] != start.alpha[2]  # holt_winters over > 2 seasons fits all three
    assert fitted.gamma[2] != start.gamma[2]
    sse_fit = one_step_sse(fitted.take([1, 2]), t, y[[1, 2]])
    sse_start = one_step_sse(start.take([1, 2]), t, y[[1, 2]])
    assert np.all(sse_fit <= sse_start * (1 + 1e-12))


def test_fit_gradient_matches_finite_differences() -> None:
    # The analytic J^T e of the fit pass against central differences of its SSE: the
    # sensitivity recursions are the one part of fit that a wrong sign would silently slow.
    from policies.forecast import _FitProblem

    rng = np.random.default_rng(12)
    t = np.arange(300) * STEP_S
    y = 100.0 + np.cumsum(rng.normal(0.0, 1.0, (3, 300)), axis=1)
    y += 10.0 * np.sin(2 * np.pi * t / 3600.0)
    y[rng.random(y.shape) < 0.05] = np.nan
    start = ForecastState.initial(3, ["ewma", "holt", "holt_winters"], 0.3, 0.1, 0.2, 3600.0)
    problem = _FitProblem.build(t, y, start)
    theta = problem.theta0
    grad = problem.evaluate(theta).grad
    eps = 1e-6
    for ch in range(problem.n_channels):
        up, down = theta.copy(), theta.copy()
        up[ch] += eps
        down[ch] -= eps
        numeric = (problem.evaluate(up).sse - problem.evaluate(down).sse) / (2 * eps) / 2
        free = problem.free[ch]
        np.testing.assert_allclose(grad[ch, free], numeric[free], rtol=1e-5)


# --- persistence and batching ---------------------------------------------------------------


def test_to_dicts_from_dicts_round_trips_exactly_through_strict_json() -> None:
    rng = np.random.default_rng(13)
    t = np.arange(200) * STEP_S
    y = 10.0 + rng.normal(0.0, 1.0, (5, 200))
    y[4] = np.nan  # no sample: NaN level, -inf last_t_s
    state = update(ForecastState.initial(5, METHODS + ["holt"], 0.3, 0.05, 0.2, 3600.0), t, y)
    text = json.dumps(state.to_dicts(), allow_nan=False)  # CR status: strict JSON
    back = ForecastState.from_dicts(json.loads(text))
    assert_states_equal(back, state)
    items = json.loads(text)
    assert items[0]["method"] == "none" and items[0]["season"] == []
    assert len(items[3]["season"]) == N_SEASON_BUCKETS  # holt_winters carries its season
    assert items[4]["level"] == "nan" and items[4]["last_t_s"] == "-inf"


def test_from_dicts_takes_a_state_saved_before_resid_up() -> None:
    rng = np.random.default_rng(14)
    t = np.arange(50) * STEP_S
    state = update(make_state(1, "holt"), t, 10.0 + rng.normal(0.0, 1.0, (1, 50)))
    old = {k: v for k, v in state.to_dicts()[0].items() if k != "resid_up"}
    back = ForecastState.from_dicts([old])
    np.testing.assert_array_equal(back.resid_up, state.resid_var)
    np.testing.assert_array_equal(back.level, state.level)


@pytest.mark.parametrize(
    ("item", "message"),
    [
        pytest.param({"method": "arima"}, "item [0]", id="unknown-method"),
        pytest.param({"season": [1.0, 2.0]}, "season has 2 values", id="short-season"),
        pytest.param({"alpha": None}, "item [0]", id="null-parameter"),
    ],
)
def test_from_dicts_names_the_bad_item(item: dict[str, object], message: str) -> None:
    good = make_state(1, "holt").to_dicts()[0]
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        ForecastState.from_dicts([{**good, **item}])


def test_take_and_concat_are_inverse() -> None:
    state = ForecastState.initial(
        4,
        np.array([METHOD_NONE, METHOD_EWMA, METHOD_HOLT, METHOD_HOLT_WINTERS]),
        np.array([0.1, 0.2, 0.3, 0.4]),
        0.05,
        0.1,
        DAY_S,
    )
    state = update(state, np.arange(3) * STEP_S, np.arange(12.0).reshape(4, 3))
    parts = [
        state.take([0, 1]),
        state.take(np.array([2])),
        state.take(np.array([False, False, False, True])),
    ]
    assert_states_equal(ForecastState.concat(parts), state)
    assert state.take([3, 0]).alpha.tolist() == [0.4, 0.1]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"alpha": 0.0}, "alpha must be in", id="alpha-zero"),
        pytest.param({"beta": 1.5}, "beta must be in", id="beta-above-one"),
        pytest.param({"season_s": -1.0}, "season_s must be", id="negative-season"),
        pytest.param({"method": "arima"}, "unknown forecast method", id="unknown-method"),
        pytest.param({"method": 7}, "unknown forecast method code", id="unknown-code"),
    ],
)
def test_initial_rejects_bad_parameters(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {
        "method": "holt",
        "alpha": 0.3,
        "beta": 0.05,
        "gamma": 0.1,
        "season_s": DAY_S,
    }
    with pytest.raises(ValueError, match=message):
        ForecastState.initial(2, **{**args, **kwargs})  # type: ignore[arg-type]


def test_initial_accepts_names_codes_and_arrays() -> None:
    by_name = ForecastState.initial(2, ["ewma", "holt_winters"], [0.1, 0.2], 0.0, 1.0, 600.0)
    by_code = ForecastState.initial(
        2,
        np.array([METHOD_CODES["ewma"], METHOD_HOLT_WINTERS]),
        np.array([0.1, 0.2]),
        0.0,
        1.0,
        600.0,
    )
    assert_states_equal(by_name, by_code)


@pytest.mark.parametrize(
    ("t_s", "message"),
    [
        pytest.param([0.0, 60.0, 60.0], "strictly increasing", id="repeated-time"),
        pytest.param([0.0, 120.0, 60.0], "strictly increasing", id="unsorted-times"),
        pytest.param([0.0, np.nan, 120.0], "finite", id="nan-time"),
        pytest.param([0.0, 60.0], "shape", id="wrong-length"),
    ],
)
def test_update_rejects_a_bad_time_axis(t_s: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        update(make_state(1, "holt"), np.array(t_s), np.ones((1, 3)))


@pytest.mark.parametrize("quantile", [pytest.param(0.0, id="zero"), pytest.param(1.0, id="one")])
def test_predict_rejects_a_quantile_outside_the_open_interval(quantile: float) -> None:
    state = update(make_state(1, "holt"), np.arange(3.0), np.ones((1, 3)))
    with pytest.raises(ValueError, match="quantile"):
        predict(state, 3.0, 60.0, quantile)


# --- property -------------------------------------------------------------------------------


@st.composite
def batches(draw: st.DrawFn) -> tuple[ForecastState, np.ndarray, np.ndarray, int]:
    n = draw(st.integers(1, 4))
    s = draw(st.integers(1, 25))
    gaps = draw(st.lists(st.floats(1.0, 120.0), min_size=s, max_size=s))
    t = 1.7e9 + np.cumsum(gaps)
    values = st.one_of(st.just(np.nan), st.floats(-1e3, 1e4))
    y = np.array(draw(st.lists(values, min_size=n * s, max_size=n * s))).reshape(n, s)
    unit = st.floats(0.0, 1.0)
    state = ForecastState.initial(
        n,
        np.array(draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))),
        np.array(draw(st.lists(st.floats(ALPHA_MIN, 1.0), min_size=n, max_size=n))),
        np.array(draw(st.lists(unit, min_size=n, max_size=n))),
        np.array(draw(st.lists(unit, min_size=n, max_size=n))),
        np.array(draw(st.lists(st.floats(60.0, 1e5), min_size=n, max_size=n))),
    )
    return state, t, y, draw(st.integers(0, s))


@settings(max_examples=200, deadline=None)
@given(
    batch=batches(),
    ahead_s=st.floats(-100.0, 1e4),
    horizon_s=st.floats(0.0, 1e5),
    quantile=st.floats(0.01, 0.99),
)
def test_predict_is_finite_and_non_negative_for_rows_with_a_sample(
    batch: tuple[ForecastState, np.ndarray, np.ndarray, int],
    ahead_s: float,
    horizon_s: float,
    quantile: float,
) -> None:
    state, t, y, split = batch
    whole = update(state, t, y)
    in_two = update(update(state, t[:split], y[:, :split]), t, y)
    assert_states_equal(in_two, whole)
    mean, upper = predict(whole, float(t[-1]) + ahead_s, horizon_s, quantile)
    seen = whole.n_obs > 0
    np.testing.assert_array_equal(seen, np.isfinite(y).any(axis=1))
    assert np.all(np.isfinite(mean[seen]) & np.isfinite(upper[seen]))
    assert np.all((mean[seen] >= 0.0) & (upper[seen] >= 0.0))
    assert np.all(np.isnan(mean[~seen]) & np.isnan(upper[~seen]))
