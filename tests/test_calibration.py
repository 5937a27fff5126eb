"""policies.calibration: scored forecast errors at the planning horizon."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.special import ndtri

from policies.calibration import (
    CALIBRATION_MIN_SCORES,
    RING_SLOTS,
    HorizonErrors,
    calibrated_upper,
    file,
    score,
    trusted,
)


def _run(
    truth: np.ndarray, forecast: np.ndarray, horizon_s: float, step_s: float, window_s: float
) -> HorizonErrors:
    """File forecast[k] for (k * step + horizon) and score with truth at each step."""
    n = truth.shape[0]
    e = HorizonErrors.initial(n)
    h = np.full(n, horizon_s)
    w = np.full(n, window_s)
    for k in range(truth.shape[1]):
        t = k * step_s
        e = score(e, np.full(n, t), truth[:, k], w)
        e = file(e, t, h, forecast[:, k])
    return e


def test_bias_and_spread_match_the_errors_of_a_stationary_forecast() -> None:
    # truth = forecast made a horizon earlier + 5 + N(0, 2^2): the bound learns bias 5, sd 2
    rng = np.random.default_rng(3)
    step, horizon = 15.0, 300.0
    lag = int(horizon / step)
    k = 4000
    fc = np.full((1, k), 100.0)
    truth = np.full((1, k), np.nan)
    truth[0, lag:] = fc[0, :-lag] + 5.0 + rng.normal(0.0, 2.0, k - lag)
    e = _run(truth, fc, horizon, step, window_s=1e9)  # ~equal weights: the sample moments
    assert e.n_scores[0] > 3000
    assert e.bias[0] == pytest.approx(5.0, abs=0.1)
    assert np.sqrt(e.var[0]) == pytest.approx(2.0, rel=0.05)
    up = calibrated_upper(e, np.array([100.0]), np.array([0.95]))
    assert bool(trusted(e)[0])
    # 100 + 5 + 1.645 * 2
    assert up[0] == pytest.approx(105.0 + float(ndtri(0.95)) * 2.0, abs=0.3)


def test_calibrated_bound_covers_its_quantile_on_a_random_walk() -> None:
    # a random walk forecast by its last value: the horizon error is N(0, h * s^2); the
    # bound filed at each tick should cover the realized value ~90 % of the time
    rng = np.random.default_rng(11)
    step, horizon = 10.0, 200.0
    lag = int(horizon / step)
    k = 6000
    walk = 1000.0 + np.cumsum(rng.normal(0.0, 1.0, k))
    e = HorizonErrors.initial(1)
    hits = total = 0
    bounds: dict[int, float] = {}
    for j in range(k):
        t = j * step
        e = score(e, np.array([t]), np.array([walk[j]]), np.array([3600.0]))
        if j in bounds:
            hits += int(walk[j] <= bounds.pop(j))
            total += 1
        up = calibrated_upper(e, np.array([walk[j]]), np.array([0.9]))
        if trusted(e)[0] and j > 500:
            bounds[j + lag] = float(up[0])
        e = file(e, t, np.array([horizon]), np.array([walk[j]]))
    assert total > 4000
    assert 0.86 <= hits / total <= 0.94


def test_ring_spacing_files_at_most_one_forecast_per_slot_interval() -> None:
    e = HorizonErrors.initial(1)
    h = np.array([220.0])  # spacing = 220 / (RING_SLOTS - 2) = 10 s
    for t in np.arange(0.0, 100.0, 1.0):  # a 1 s tick for 100 s
        e = file(e, float(t), h, np.array([1.0]))
    filed = int(np.isfinite(e.ring_target_s).sum())
    assert filed == 10  # one every 10 s, never more than the ring holds
    assert filed < RING_SLOTS


def test_not_trusted_until_enough_scores_and_nan_samples_score_nothing() -> None:
    e = HorizonErrors.initial(2)
    h = np.array([10.0, 10.0])
    for j in range(CALIBRATION_MIN_SCORES + 2):
        t = 10.0 * j
        e = score(e, np.array([t, t]), np.array([1.0, np.nan]), np.array([600.0, 600.0]))
        e = file(e, t, h, np.array([1.0, 1.0]))
    ok = trusted(e)
    assert bool(ok[0]) and not bool(ok[1])
    assert e.n_scores[1] == 0


def test_state_round_trips_through_json_and_old_records_start_fresh() -> None:
    rng = np.random.default_rng(0)
    e = _run(rng.normal(10, 1, (3, 200)), np.full((3, 200), 10.0), 60.0, 5.0, 600.0)
    back = HorizonErrors.from_dicts(json.loads(json.dumps(e.to_dicts(), allow_nan=False)))
    for name in ("ring_target_s", "ring_mean", "bias", "var", "last_filed_s", "last_scored_s"):
        np.testing.assert_array_equal(getattr(back, name), getattr(e, name))
    np.testing.assert_array_equal(back.n_scores, e.n_scores)
    fresh = HorizonErrors.from_dicts([{}])
    assert fresh.n == 1 and fresh.n_scores[0] == 0
    with pytest.raises(ValueError, match=r"item \[0\]"):
        HorizonErrors.from_dicts([{"ring_target_s": [1.0]}])
