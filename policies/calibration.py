"""Empirical prediction bounds at the planning horizon: how wrong the forecast actually was.

`policies.forecast.predict` bounds its forecast with the h-step variance of its own model
(ETS(A,A,N)): exact when the model is true, but a demand signal measured as a rate over a
window has strongly autocorrelated residuals and moves in ways no local-trend model
describes, so at a lead time of minutes that bound can be far too narrow or too wide. This
module keeps score instead. Every tick the policy files its forecast for the planning
horizon (target time and mean); once a demand sample at or after the target time arrives the
forecast is scored, and the error `actual - forecast` updates an exponentially weighted bias
and variance per workload. The planning bound is then

    upper = mean + bias + z(quantile) * sqrt(var)

i.e. the forecast corrected by its recent systematic error plus the quantile of its recent
spread: a calibrated bound at the horizon the plan is made for, whatever the traffic.

Memory is time based: an error whose target time lies `dt` seconds after the previous
scored one's weighs
`max(1 / count, 1 - exp(-dt / window_s))` (the first scores average equally), so the bound
follows a change of volatility within about `window_s` seconds regardless of the tick.
Pending forecasts live in a ring of `RING_SLOTS` slots per workload; a forecast is filed only
when `horizon / (RING_SLOTS - 2)` seconds have passed since the previous one, so the ring
never overflows at any tick rate (a slot still pending when reused is dropped unscored).

Shapes: [n] per workload, [n, RING_SLOTS] for the ring. Values are never mutated: `file` and
`score` return new states.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from scipy.special import ndtri

from policies.types import F64, I64, B

RING_SLOTS: int = 24
# Scores before the empirical bound is trusted over the model's (one lead time of history at
# the default ring spacing is about 22 scores).
CALIBRATION_MIN_SCORES: int = 12


@dataclass(frozen=True)
class HorizonErrors:
    """Per-workload record of forecasts in flight and of the errors of scored ones.

    ring_target_s / ring_mean [n, RING_SLOTS]: target time (seconds, NaN = empty slot) and
    forecast mean of each pending forecast; next_slot [n]: the slot the next forecast takes;
    last_filed_s [n]: when the last one was filed (-inf: never); bias / var [n]: weighted
    mean and variance of `actual - forecast`, in the demand's units (squared for var);
    n_scores [n]: forecasts scored so far; last_scored_s [n]: the target time of the last
    scored forecast (-inf: none).
    """

    ring_target_s: F64
    ring_mean: F64
    next_slot: I64
    last_filed_s: F64
    bias: F64
    var: F64
    n_scores: I64
    last_scored_s: F64

    @property
    def n(self) -> int:
        return int(self.next_slot.shape[0])

    @classmethod
    def initial(cls, n: int) -> HorizonErrors:
        return cls(
            ring_target_s=np.full((n, RING_SLOTS), np.nan),
            ring_mean=np.zeros((n, RING_SLOTS)),
            next_slot=np.zeros(n, dtype=np.int64),
            last_filed_s=np.full(n, -np.inf),
            bias=np.zeros(n),
            var=np.zeros(n),
            n_scores=np.zeros(n, dtype=np.int64),
            last_scored_s=np.full(n, -np.inf),
        )

    def take(self, idx: I64 | list[int]) -> HorizonErrors:
        ix = np.asarray(idx, dtype=np.int64)
        return HorizonErrors(**{f.name: getattr(self, f.name)[ix] for f in fields(self)})

    @classmethod
    def concat(cls, parts: Sequence[HorizonErrors]) -> HorizonErrors:
        return cls(
            **{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)}
        )

    def to_dicts(self) -> list[dict[str, Any]]:
        """One JSON-serializable dict per workload (non-finite floats as strings)."""
        out: list[dict[str, Any]] = []
        for i in range(self.n):
            d: dict[str, Any] = {}
            for f in fields(self):
                v = getattr(self, f.name)[i]
                if v.ndim:
                    d[f.name] = [_enc(float(x)) for x in v.tolist()]
                elif f.name in _INT_FIELDS:
                    d[f.name] = int(v)
                else:
                    d[f.name] = _enc(float(v))
            out.append(d)
        return out

    @classmethod
    def from_dicts(cls, items: Sequence[dict[str, Any]]) -> HorizonErrors:
        """Inverse of `to_dicts`; a workload without a record starts fresh. Raises ValueError
        on a malformed record."""
        parts = []
        for i, d in enumerate(items):
            if not d:
                parts.append(cls.initial(1))
                continue
            try:
                vals: dict[str, Any] = {}
                for f in fields(cls):
                    raw = d[f.name]
                    if f.name in ("ring_target_s", "ring_mean"):
                        arr = np.asarray([[float(x) for x in raw]], dtype=np.float64)
                        if arr.shape != (1, RING_SLOTS):
                            raise ValueError(f"{f.name} has {arr.shape[1]} slots")
                        vals[f.name] = arr
                    elif f.name in _INT_FIELDS:
                        vals[f.name] = np.asarray([int(raw)], dtype=np.int64)
                    else:
                        vals[f.name] = np.asarray([float(raw)], dtype=np.float64)
            except (KeyError, TypeError, ValueError) as e:
                raise ValueError(f"horizon errors item [{i}]: {type(e).__name__}: {e}") from e
            parts.append(cls(**vals))
        if not parts:
            return cls.initial(0)
        return cls.concat(parts)


_INT_FIELDS = frozenset({"next_slot", "n_scores"})


def _enc(x: float) -> float | str:
    return x if np.isfinite(x) else str(x)


def score(errs: HorizonErrors, sample_s: F64, actual: F64, window_s: F64) -> HorizonErrors:
    """Score the pending forecasts whose target time is at or before each workload's newest
    demand sample (`sample_s` [n] seconds, `actual` [n] its value; NaN/-inf: no sample).

    Several forecasts due at once are scored against the same sample, oldest first, each
    weighing as described in the module docstring (`window_s` [n] seconds).
    """
    # an empty slot (NaN) compares False; a row without a sample scores nothing
    upto = np.where(np.isfinite(actual), sample_s, -np.inf)
    due = errs.ring_target_s <= upto[:, None]
    if not due.any():
        return errs
    n_due_all = due.sum(axis=1)
    rows = np.nonzero(n_due_all)[0]
    bias = errs.bias.copy()
    var = errs.var.copy()
    count = errs.n_scores.copy()
    last = errs.last_scored_s.copy()
    # each due forecast in turn, oldest target first (usually one per tick)
    masked = np.where(due[rows], errs.ring_target_s[rows], np.inf)
    n_due = n_due_all[rows]
    for k in range(int(n_due.max())):
        live = np.nonzero(n_due > k)[0]
        r = rows[live]
        slot = np.argmin(masked[live], axis=1)
        masked[live, slot] = np.inf
        e = actual[r] - errs.ring_mean[r, slot]
        target = errs.ring_target_s[r, slot]
        c = count[r] + 1
        # time-based weight between successive targets (not sample times: forecasts due
        # together each get their own share)
        dt = np.maximum(target - last[r], 0.0)
        with np.errstate(invalid="ignore"):
            w_time = -np.expm1(-dt / window_s[r])
        # equal weights until the time-based weight is the larger (like forecast.RESID_WEIGHT)
        w = np.maximum(1.0 / c, np.nan_to_num(w_time, nan=1.0))
        d = e - bias[r]
        bias[r] = bias[r] + w * d
        # West's weighted incremental variance (exact for equal weights)
        var[r] = (1.0 - w) * (var[r] + w * d * d)
        count[r] = c
        last[r] = target
    ring_t = np.where(due, np.nan, errs.ring_target_s)
    return HorizonErrors(
        ring_target_s=ring_t,
        ring_mean=errs.ring_mean,
        next_slot=errs.next_slot,
        last_filed_s=errs.last_filed_s,
        bias=bias,
        var=var,
        n_scores=count,
        last_scored_s=last,
    )


def file(errs: HorizonErrors, now_s: float, horizon_s: F64, mean: F64) -> HorizonErrors:
    """File the forecast `mean` [n] for `now_s + horizon_s` [n] where the ring's spacing
    allows (module docstring); rows with a NaN mean file nothing."""
    spacing = horizon_s / (RING_SLOTS - 2)
    ok = np.isfinite(mean) & (now_s - errs.last_filed_s >= spacing)
    if not ok.any():
        return errs
    rows = np.nonzero(ok)[0]
    slot = errs.next_slot[rows]
    ring_t = errs.ring_target_s.copy()
    ring_m = errs.ring_mean.copy()
    ring_t[rows, slot] = now_s + horizon_s[rows]
    ring_m[rows, slot] = mean[rows]
    nxt = errs.next_slot.copy()
    nxt[rows] = (slot + 1) % RING_SLOTS
    filed = errs.last_filed_s.copy()
    filed[rows] = now_s
    return HorizonErrors(
        ring_target_s=ring_t,
        ring_mean=ring_m,
        next_slot=nxt,
        last_filed_s=filed,
        bias=errs.bias,
        var=errs.var,
        n_scores=errs.n_scores,
        last_scored_s=errs.last_scored_s,
    )


def trusted(errs: HorizonErrors) -> B:
    """[n]: whether the row has at least CALIBRATION_MIN_SCORES scores (before that the
    caller keeps the model's bound)."""
    return errs.n_scores >= CALIBRATION_MIN_SCORES


def calibrated_upper(errs: HorizonErrors, mean: F64, quantile: F64) -> F64:
    """[n]: mean + bias + z(quantile) * sqrt(var), clipped at >= 0 (meaningful where
    `trusted(errs)`)."""
    z = np.asarray(ndtri(quantile), dtype=np.float64)
    return np.maximum(mean + errs.bias + z * np.sqrt(np.maximum(errs.var, 0.0)), 0.0)


__all__ = [
    "CALIBRATION_MIN_SCORES",
    "RING_SLOTS",
    "HorizonErrors",
    "calibrated_upper",
    "file",
    "score",
    "trusted",
]
