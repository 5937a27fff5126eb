"""The predictive, per-scenario policy: `decide(specs, state, obs, now_s) -> (decisions, state)`.

Stages, each vectorized over workloads (HPA's `normalizeDesiredReplicasWithBehaviors`
lists its steps the same way):

1. demand     the scenario's primary signal per workload, in its own units:
              chat rps; rag in-flight (queue + running); streaming active streams or
              tokens/s; batch item arrivals/s (plus backlog and its age).
2. forecast   smooth and forecast the demand at the horizon lead + observation lag (warm
              lead when warm slots are ready, else cold; the lag is how old a rate()
              sample's load already is). The bound at the SLO class's quantile comes from
              the forecast's own scored errors at that horizon once it has enough of them
              (`policies.calibration`), else from the model's h-step variance, widened
              only by loads above its forecasts (a drop never raises it). The plan is
              the bound's maximum over [now, now + horizon]: what a replica started now
              will serve, and what the load needs before a replica given back could return.
              A forecast with fewer than PLAN_MIN_SAMPLES samples plans on the demand now.
3. recommend  replicas from the plan: chat/streaming/rag divide by capacity per replica
              (at target utilization); rag follows the short window during a burst; batch
              sizes for the backlog to drain before its deadline.
4. tolerance  HPA's band around current replicas (inclusive; none upward for serving
              scenarios by default). Current replicas exclude on-demand spill-over.
   silence    steady demand that drops to almost nothing is held as an outage for
              `silence.hold_s` (spec.SilenceSpec): the replicas it fell from stay.
5. behavior   HPA stabilization windows and rate policies, then [min, max] bounds.
6. hold       missing or stale demand -> keep the last good decision, never scale down.
7. split      spot / on-demand (base share, spill-over for spot at risk or stuck Pending,
              drift back only after spot has been healthy for a hold period; on-demand
              replicas that serve stay until the spot replicas replacing them are Ready)
              and the warm pool from forecast headroom.

Decisions carry a reason code and a human message. State is returned, never mutated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from policies.calibration import HorizonErrors, calibrated_upper, file, score, trusted
from policies.forecast import METHOD_HOLT_WINTERS, ForecastState, fit, predict, update
from policies.hpa import BehaviorState, apply_behavior
from policies.spec import PolicySpec
from policies.table import BATCH, CHAT, RAG, STREAMING, SpecTable
from policies.types import F64, I64, B, Decisions, Floors, LazyMessages, Observation

# A demand series whose newest finite sample is older than this is treated as missing,
# even when the source did not flag it stale (two 15 s scrapes plus a 30 s rate() lag).
DEFAULT_MAX_SAMPLE_AGE_S = 90.0
# Samples a forecast must have seen before its trend and spread are used for planning (two
# minutes at a 15 s scrape); before that the plan is the demand now.
PLAN_MIN_SAMPLES = 8
# A sudden silence is measured against the demand's peak over this many seconds.
SILENCE_REF_WINDOW_S = 300.0
# ... read at this many columns of the window at most, evenly spread (a rate over 60 s moves
# little between them, and a 1 s scrape would otherwise mean 300 columns per workload).
SILENCE_REF_COLS = 21
# ... and only when that peak needed at least this many replicas (the tail of a quiet
# workload's decline is not an outage, and min_replicas covers one replica anyway).
SILENCE_MIN_REPLICAS = 2.0
# ... and only when the demand had been steady: its minimum over the reference window, up to
# SILENCE_RAMP_S before now (a rate over a 60 s window takes that long to fall, plus a
# scrape), at least this fraction of the peak.
SILENCE_STEADY_RATIO = 0.5
SILENCE_RAMP_S = 90.0
# The batch policy never plans to drain a backlog in less than this, even when its
# deadline has (nearly) passed: it asks for capacity as fast as HPA rate limits allow.
BATCH_MIN_DRAIN_S = 60.0
BATCH_MEAN_SAMPLES = 64  # samples of the arrival rate averaged over a batch deadline

Specs = SpecTable | Sequence[PolicySpec]


def as_table(specs: Specs) -> SpecTable:
    return specs if isinstance(specs, SpecTable) else SpecTable.compile(list(specs))


@dataclass(frozen=True)
class PolicyState:
    """Per-workload state ([n] arrays; forecast and behavior hold their own arrays)."""

    forecast: ForecastState
    behavior: BehaviorState
    errors: HorizonErrors  # scored forecast errors at the planning horizon
    last_total: I64  # last good desired total (-1: none yet)
    last_good_s: F64  # when it was decided (-inf: never)
    spill: I64  # on-demand replicas covering spot at risk or stuck Pending
    handover: I64  # on-demand replicas serving until the spot replacing them is Ready
    spot_unhealthy_s: F64  # last time spot was at risk or stuck Pending (-inf: never)
    burst_until_s: F64  # rag: burst mode lasts until (-inf: not in burst)
    last_busy_s: F64  # batch: last time the backlog or arrivals were non-zero
    demand_last: F64  # newest raw demand sample seen (NaN: none)
    demand_last_s: F64  # its time (-inf: none)
    silence_since_s: F64  # a sudden silence began then (-inf: none)
    silence_ref: F64  # the demand peak it fell from (NaN: none)
    silence_total: I64  # replicas held through it (0: none)

    @property
    def n(self) -> int:
        return int(self.last_total.shape[0])

    @classmethod
    def initial(cls, table: SpecTable) -> PolicyState:
        n = table.n
        neg = np.full(n, -np.inf)
        return cls(
            forecast=ForecastState.initial(
                n, table.method, table.alpha, table.beta, table.gamma, table.season_s
            ),
            behavior=BehaviorState.initial(n),
            errors=HorizonErrors.initial(n),
            last_total=np.full(n, -1, dtype=np.int64),
            last_good_s=neg.copy(),
            spill=np.zeros(n, dtype=np.int64),
            handover=np.zeros(n, dtype=np.int64),
            spot_unhealthy_s=neg.copy(),
            burst_until_s=neg.copy(),
            last_busy_s=neg.copy(),
            demand_last=np.full(n, np.nan),
            demand_last_s=neg.copy(),
            silence_since_s=neg.copy(),
            silence_ref=np.full(n, np.nan),
            silence_total=np.zeros(n, dtype=np.int64),
        )

    def take(self, idx: I64 | list[int]) -> PolicyState:
        ix = np.asarray(idx, dtype=np.int64)
        return PolicyState(
            forecast=self.forecast.take(ix),
            behavior=self.behavior.take(ix),
            errors=self.errors.take(ix),
            **{k: getattr(self, k)[ix] for k in _SCALAR_FIELDS},
        )

    @classmethod
    def concat(cls, parts: Sequence[PolicyState]) -> PolicyState:
        return cls(
            forecast=ForecastState.concat([p.forecast for p in parts]),
            behavior=BehaviorState.concat([p.behavior for p in parts]),
            errors=HorizonErrors.concat([p.errors for p in parts]),
            **{k: np.concatenate([getattr(p, k) for p in parts]) for k in _SCALAR_FIELDS},
        )

    def to_dicts(self) -> list[dict[str, Any]]:
        """JSON-serializable, one dict per workload (persisted in the CR status)."""
        fc = self.forecast.to_dicts()
        bh = self.behavior.to_dicts()
        er = self.errors.to_dicts()
        out: list[dict[str, Any]] = []
        for i in range(self.n):
            d: dict[str, Any] = {
                "version": 1,
                "forecast": fc[i],
                "behavior": bh[i],
                "errors": er[i],
            }
            for k in _SCALAR_FIELDS:
                v = getattr(self, k)[i]
                d[k] = int(v) if k in _INT_FIELDS else _json_float(float(v))
            out.append(d)
        return out

    @classmethod
    def from_dicts(cls, items: Sequence[dict[str, Any]]) -> PolicyState:
        scalars: dict[str, Any] = {
            k: np.asarray(
                [(int if k in _INT_FIELDS else float)(_field(d, k)) for d in items],
                dtype=np.int64 if k in _INT_FIELDS else np.float64,
            )
            for k in _SCALAR_FIELDS
        }
        return cls(
            forecast=ForecastState.from_dicts([d["forecast"] for d in items]),
            behavior=BehaviorState.from_dicts([d["behavior"] for d in items]),
            # version 1 records carry no error record: the calibration starts fresh
            errors=HorizonErrors.from_dicts([d.get("errors") or {} for d in items]),
            **scalars,
        )


_SCALAR_FIELDS = (
    "last_total",
    "last_good_s",
    "spill",
    "spot_unhealthy_s",
    "burst_until_s",
    "last_busy_s",
    "demand_last",
    "demand_last_s",
    "silence_since_s",
    "silence_ref",
    "silence_total",
    "handover",
)
_INT_FIELDS = frozenset({"last_total", "spill", "silence_total", "handover"})
# Fields added after the first persisted version: what a record without them means.
_DEFAULTS: dict[str, Any] = {
    "silence_since_s": "-inf",
    "silence_ref": "nan",
    "silence_total": 0,
    "handover": 0,
}


def _field(d: dict[str, Any], key: str) -> Any:
    """A persisted scalar; a field added after version 1 may be absent (its default), any
    other missing field raises KeyError (the record is skipped as malformed)."""
    return d[key] if key not in _DEFAULTS else d.get(key, _DEFAULTS[key])


def _json_float(x: float) -> float | str:
    if np.isfinite(x):
        return x
    return "-inf" if x < 0 else ("inf" if x > 0 else "nan")


def _where_state(mask: B, new: Any, old: Any) -> Any:
    """Row-wise select between two frozen dataclasses of arrays (nested allowed)."""
    out: dict[str, Any] = {}
    for fld in fields(new):
        a, b = getattr(new, fld.name), getattr(old, fld.name)
        if isinstance(a, np.ndarray):
            m = mask.reshape(mask.shape + (1,) * (a.ndim - 1))
            out[fld.name] = np.where(m, a, b)
        elif hasattr(a, "__dataclass_fields__"):
            out[fld.name] = _where_state(mask, a, b)
        else:
            out[fld.name] = a
    return type(new)(**out)


def _last_finite(t_s: F64, arr: F64, since_s: float) -> tuple[F64, F64]:
    """(newest finite value, its time) per row among samples at t >= since_s; NaN/-inf if none.

    Scans backward from the newest column and drops rows as they resolve, so the usual case
    (every row fresh in the newest sample) costs one column."""
    n, k = arr.shape
    val = np.full(n, np.nan)
    at = np.full(n, -np.inf)
    todo = np.arange(n)
    for j in range(k - 1, -1, -1):
        if todo.size == 0 or t_s[j] < since_s:
            break
        col = arr[todo, j]
        ok = np.isfinite(col)
        if ok.any():
            val[todo[ok]] = col[ok]
            at[todo[ok]] = t_s[j]
            todo = todo[~ok]
    return val, at


def _window_mean(t_s: F64, arr: F64, now_s: float, window_s: F64) -> F64:
    """Mean of finite samples with t > now - window (per-row window); NaN when none."""
    lo = float(np.min(window_s)) if window_s.size else 0.0
    cols = np.nonzero(t_s > now_s - np.max(window_s, initial=lo))[0]
    if cols.size == 0:
        return np.full(arr.shape[0], np.nan)
    block = arr[:, cols]
    inside = t_s[cols][None, :] > (now_s - window_s)[:, None]
    ok = inside & np.isfinite(block)
    cnt = ok.sum(axis=1)
    tot = np.where(ok, block, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(cnt > 0, tot / np.maximum(cnt, 1), np.nan)


def _nan_add(a: F64, b: F64) -> F64:
    """a + b where a missing b counts as 0, but both missing stays missing."""
    return np.where(np.isnan(a), b, np.where(np.isnan(b), a, a + b))


class PredictivePolicy:
    """The product's policy. Implements `policies.types.Policy`."""

    name = "predictive"

    def __init__(self, max_sample_age_s: float = DEFAULT_MAX_SAMPLE_AGE_S) -> None:
        self.max_sample_age_s = max_sample_age_s

    # -- Policy protocol -----------------------------------------------------------------

    def compile(self, specs: Sequence[PolicySpec]) -> SpecTable:
        return SpecTable.compile(list(specs))

    def initial_state(self, specs: Specs) -> PolicyState:
        return PolicyState.initial(as_table(specs))

    def decide(
        self, specs: Specs, state: PolicyState, obs: Observation, now_s: float
    ) -> tuple[Decisions, PolicyState]:
        return decide(specs, state, obs, now_s, max_sample_age_s=self.max_sample_age_s)

    def refit(self, specs: Specs, state: PolicyState, history: Observation) -> ForecastState:
        """Fitted forecast parameters from a longer history (run on a slow schedule)."""
        table = as_table(specs)
        series = _demand_series(table, history)
        fitted = fit(history.t_s, series, state.forecast)
        # a workload whose spec disables fitting keeps its configured parameters
        keep = np.asarray([not s.forecast.fit for s in table.specs], dtype=bool)
        return _where_state(keep, state.forecast, fitted)  # type: ignore[no-any-return]

    def apply_refit(self, state: PolicyState, fitted: ForecastState) -> PolicyState:
        """Live state with the fitted smoothing parameters (levels keep their progress)."""
        fc = replace(state.forecast, alpha=fitted.alpha, beta=fitted.beta, gamma=fitted.gamma)
        return replace(state, forecast=fc)

    # -- helpers the control loop uses to isolate failures and persist state ----------------

    def take_specs(self, specs: Specs, idx: list[int]) -> SpecTable:
        return as_table(specs).take(idx)

    def take_state(self, state: PolicyState, idx: list[int]) -> PolicyState:
        return state.take(idx)

    def concat_states(self, states: Sequence[PolicyState]) -> PolicyState:
        return PolicyState.concat(states)

    def hold(
        self, specs: Specs, state: PolicyState, obs: Observation, why: str
    ) -> tuple[Decisions, PolicyState]:
        """Keep current replicas (or the last good decision if higher) with reason Hold."""
        cur = obs.cluster
        total = np.maximum(state.last_total, cur.current_total)
        n = obs.n
        return (
            Decisions(
                spot=cur.current_spot.copy(),
                on_demand=np.maximum(cur.current_on_demand, total - cur.current_spot),
                warm=cur.current_warm.copy(),
                desired_total=total,
                demand_now=np.full(n, np.nan),
                forecast=np.full(n, np.nan),
                forecast_upper=np.full(n, np.nan),
                reason=np.full(n, "HoldPolicyError", dtype=object),
                detail=np.full(n, f"holding current replicas: {why}", dtype=object),
                held=np.ones(n, dtype=bool),
            ),
            state,
        )

    def export_state(self, state: PolicyState) -> list[dict[str, Any]]:
        return state.to_dicts()

    def import_state(
        self, specs: Specs, state: PolicyState, rows: Sequence[tuple[int, dict[str, Any]]]
    ) -> PolicyState:
        """Overwrite rows of `state` with persisted dicts; malformed entries are skipped."""
        table = as_table(specs)
        good: list[tuple[int, PolicyState]] = []
        for i, d in rows:
            try:
                loaded = PolicyState.from_dicts([d])
            except (KeyError, TypeError, ValueError):
                continue
            # parameters that come from the spec win over persisted ones, except fitted
            # smoothing parameters (the point of persisting them)
            fc = loaded.forecast
            if int(fc.method[0]) != int(table.method[i]):
                continue
            good.append((i, loaded))
        if not good:
            return state
        return _replace_rows(state, good)

    def merge_state(
        self, fresh: PolicyState, old: PolicyState, carry: Sequence[tuple[int, int]]
    ) -> PolicyState:
        """Rows of `old` carried into `fresh` at new positions [(new_i, old_i), ...]."""
        if not carry:
            return fresh
        return _replace_rows(fresh, [(i, old.take([j])) for i, j in carry])


def _replace_rows(state: PolicyState, rows: Sequence[tuple[int, PolicyState]]) -> PolicyState:
    parts = [state.take([i]) for i in range(state.n)]
    for i, row in rows:
        parts[i] = row
    return PolicyState.concat(parts)


# ---------------------------------------------------------------------------------------


def _demand_series(
    table: SpecTable,
    obs: Observation,
    cols: slice | NDArray[np.intp] | None = None,
    rows: NDArray[np.intp] | None = None,
) -> F64:
    """[rows, cols] primary demand per workload in its scenario's units; `table` holds the
    specs of exactly those rows. Each scenario group reads only its own rows of its own
    families (one copy of the block it needs); column slices cost nothing more."""
    sc = table.scenario
    c = slice(None) if cols is None else cols
    obs_rows = np.arange(sc.shape[0]) if rows is None else rows
    width = int(obs.t_s[c].shape[0])
    out = np.empty((sc.shape[0], width))

    def m(name: str, sel: B) -> F64:
        r = obs_rows[sel]
        arr = obs.metric(name)
        block: F64 = arr[np.ix_(r, c)] if isinstance(c, np.ndarray) else arr[r, c]
        return block

    rag = sc == RAG
    st = sc == STREAMING
    other = ~(rag | st)
    if other.any():
        out[other] = m("rps", other)
    if rag.any():
        out[rag] = _nan_add(m("queue", rag), m("running", rag))
    if st.any():
        out[st] = np.where(table.uses_tokens[st][:, None], m("tokens_ps", st), m("streams", st))
    return out


def decide(
    specs: Specs,
    state: PolicyState,
    obs: Observation,
    now_s: float,
    max_sample_age_s: float = DEFAULT_MAX_SAMPLE_AGE_S,
) -> tuple[Decisions, PolicyState]:
    """Decide replicas per pool for every workload. See the module docstring for stages.

    specs: n PolicySpecs or their SpecTable; state: PolicyState for the same n (from
    `PredictivePolicy().initial_state(specs)` at first); obs: windows for the same n;
    now_s: the decision time in seconds on the observation's clock.
    """
    table = as_table(specs)
    n = table.n
    if obs.n != n or state.n != n:
        raise ValueError(f"specs ({n}), state ({state.n}) and observation ({obs.n}) differ in size")
    cur = obs.cluster
    # Spill-over (and handover) replicas cover spot on top of the desired total: every stage
    # below judges the desired total against the serving replicas without them (counted in, each
    # spill would ratchet the total up through the scale-down rate limit, and the spot pool
    # would keep the extra replicas after the spill drains).
    extra = np.where(table.spot_enabled, state.spill + state.handover, 0)
    current = np.maximum(cur.current_total - extra, 0)
    sc = table.scenario

    # 1. demand -------------------------------------------------------------------------
    # Only the columns that matter: samples the forecast has not seen yet and the recent
    # ones that tell whether data is fresh. (RAG's long window is read separately, below.)
    # Each row needs the samples after its last accepted one, never more than
    # max_sample_age_s back (older samples cannot make a row fresh); a workload with no
    # history yet takes the whole window to seed its forecast.
    since = now_s - max_sample_age_s
    seen = state.forecast.n_obs > 0
    need_from = np.where(seen, np.maximum(state.forecast.last_t_s, since), -np.inf)
    oldest = float(np.min(need_from, initial=since))
    # t_s is sorted: the columns needed are a contiguous tail, taken as a view
    cols = slice(
        int(np.searchsorted(obs.t_s, oldest, side="right")) if np.isfinite(oldest) else 0, None
    )
    t_tail = obs.t_s[cols]
    y_tail = _demand_series(table, obs, cols)

    newest_val, newest_at = _last_finite(t_tail, y_tail, since)
    got = np.isfinite(newest_val)
    last_val = np.where(got, newest_val, state.demand_last)
    last_at = np.where(got, newest_at, state.demand_last_s)
    missing = ~np.isfinite(last_val) | (last_at < since)
    if obs.stale is not None:
        missing |= obs.stale
    backlog = np.full(n, np.nan)
    backlog_age = np.full(n, np.nan)
    is_batch = sc == BATCH
    if is_batch.any():
        # backlog gauges are read over the freshness window (they are not forecast)
        bcols = slice(int(np.searchsorted(obs.t_s, since, side="left")), None)
        tb = obs.t_s[bcols]
        backlog, _ = _last_finite(tb, obs.metric("backlog")[:, bcols], since)
        age, _ = _last_finite(tb, obs.metric("backlog_age_s")[:, bcols], since)
        backlog_age = np.where(np.isfinite(age), age, 0.0)
        # batch needs its backlog; arrivals alone may be absent (push-style batch jobs)
        missing = np.where(is_batch, ~np.isfinite(backlog), missing)
        last_val = np.where(is_batch & ~np.isfinite(last_val), 0.0, last_val)

    # 2. forecast -----------------------------------------------------------------------
    fstate = update(state.forecast, t_tail, y_tail)
    ready_warm = cur.ready_warm > 0
    lead = np.where(ready_warm, table.lead_warm_s, table.lead_cold_s)
    # the demand signal is already `observation_lag_s` old (a rate over a window): a replica
    # started now serves at lead + lag past the newest sample's load
    lag = table.observation_lag_s
    horizon = lead + lag
    # the bound at the horizon from the forecast's own scored errors there, once it has them
    # (policies.calibration); this tick's forecast is filed to be scored in its turn
    errs = score(state.errors, last_at, last_val, table.error_window_s)
    calibrated = table.calibrate & trusted(errs)
    # until then the model's own bound is planned on, and it is widened only by loads above
    # its forecasts: a sudden drop must not make a young forecast ask for more replicas
    model_only = ~calibrated
    f_mean, f_upper = predict(fstate, now_s, horizon, table.quantile, model_only)
    cal_upper = calibrated_upper(errs, f_mean, table.quantile)
    f_upper = np.where(calibrated & np.isfinite(f_mean), cal_upper, f_upper)
    errs = file(errs, now_s, horizon, f_mean)
    f_mean = np.where(np.isfinite(f_mean), f_mean, last_val)
    f_upper = np.where(np.isfinite(f_upper), f_upper, f_mean)
    floors = obs.floors if obs.floors is not None else Floors.none(n)
    f_mean = np.maximum(f_mean, floors.min_demand)
    f_upper = np.maximum(f_upper, floors.min_demand)
    # plan on the upper bound (quantile from the SLO class; 0.5 plans on the mean) over the
    # whole window [now, now + lead]: what a replica started now would serve at the far end,
    # and what the load needs until then (a replica given back now could not return sooner).
    # Holt is linear in the horizon, so its maximum sits at an end; a seasonal profile can
    # peak inside, so the middle is checked too.
    plan = f_upper
    _, near = predict(fstate, now_s, lag, table.quantile, model_only)
    plan = np.fmax(plan, near)
    if bool(np.any(fstate.method == METHOD_HOLT_WINTERS)):
        _, mid = predict(fstate, now_s, lag + 0.5 * lead, table.quantile, model_only)
        plan = np.fmax(plan, mid)
    plan = np.maximum(np.where(np.isfinite(plan), plan, f_upper), floors.min_demand)
    # a young forecast (a few samples: the first rate() points ramp up as the window fills)
    # has neither a trend nor a residual spread worth extrapolating: plan on the demand now
    young = fstate.n_obs < PLAN_MIN_SAMPLES
    plan = np.where(young, np.fmax(f_mean, last_val), plan)
    # no forecast at all (method none, or no sample yet): the demand now
    plan = np.where(np.isfinite(plan), plan, np.nan_to_num(last_val))

    # 3. recommend ----------------------------------------------------------------------
    per_replica = table.capacity * table.utilization
    with np.errstate(invalid="ignore", divide="ignore"):
        need = plan / per_replica
    reason = np.full(n, "", dtype=object)

    rag = sc == RAG
    burst_until = state.burst_until_s
    if rag.any():
        ridx = np.nonzero(rag)[0]
        lo = now_s - float(np.max(table.rag_long_s[ridx]))
        long_cols = slice(int(np.searchsorted(obs.t_s, lo, side="right")), None)
        rsub = table.take(ridx)
        y_rag = _demand_series(rsub, obs, long_cols, ridx)
        t_rag = obs.t_s[long_cols]
        short = np.full(n, np.nan)
        long_ = np.full(n, np.nan)
        short[ridx] = _window_mean(t_rag, y_rag, now_s, rsub.rag_short_s)
        long_[ridx] = _window_mean(t_rag, y_rag, now_s, rsub.rag_long_s)
        bursting = (
            rag
            & np.isfinite(short)
            & (short > 0)
            & (~np.isfinite(long_) | (short > table.rag_burst_factor * np.nan_to_num(long_)))
        )
        burst_until = np.where(bursting, now_s + table.rag_short_s, burst_until)
        in_burst = rag & (burst_until >= now_s)
        rag_demand = np.where(in_burst, np.fmax(short, plan), np.fmax(long_, plan))
        rag_need = rag_demand / per_replica
        # optional arrival-rate floor: in-flight can lag a rise in arrivals
        rps_last, _ = _last_finite(t_tail, obs.metric("rps")[:, cols], since)
        with np.errstate(invalid="ignore"):
            rps_need = rps_last / (table.rag_rps_capacity * table.utilization)
        rag_need = np.fmax(rag_need, rps_need)
        need = np.where(rag, rag_need, need)
        reason = np.where(in_burst, "BurstMode", reason)

    st = sc == STREAMING
    if st.any():
        need = np.where(st, need * (1.0 + table.stream_headroom), need)

    last_busy = state.last_busy_s
    if is_batch.any():
        # The backlog must drain by the deadline (counted from its oldest item) while the
        # arrivals are served: Ready replicas drain from now, replicas asked for now only
        # after their lead time.
        time_left = np.maximum(table.batch_deadline_s - backlog_age, BATCH_MIN_DRAIN_S)
        late = np.maximum(time_left - lead, BATCH_MIN_DRAIN_S)
        q = np.nan_to_num(backlog)
        ready = cur.ready_total.astype(np.float64)
        by_ready = ready * table.capacity * time_left
        with np.errstate(invalid="ignore", divide="ignore"):
            drain = np.where(
                q <= by_ready,
                q / (table.capacity * time_left),
                ready + (q - by_ready) / (table.capacity * late),
            )
        # Arrivals may wait up to the deadline too: a burst joins the backlog and drains
        # with it, so they need no more than their mean rate over the deadline.
        # (at most ~64 evenly spaced samples: the rates are smoothed over their window, and
        # a deadline of an hour at a 1 s step would otherwise read 3,600 columns per row)
        bidx = np.nonzero(is_batch)[0]
        lo = now_s - float(np.max(table.batch_deadline_s[bidx]))
        first = int(np.searchsorted(obs.t_s, lo, side="right"))
        stride = max(1, (obs.t_s.shape[0] - first) // BATCH_MEAN_SAMPLES)
        dcols = slice(obs.t_s.shape[0] - 1, first - 1 if first > 0 else None, -stride)
        mean_rate = np.full(n, np.nan)
        mean_rate[bidx] = _window_mean(
            obs.t_s[dcols], obs.metric("rps")[:, dcols][bidx], now_s, table.batch_deadline_s[bidx]
        )
        with np.errstate(invalid="ignore", divide="ignore"):
            arrivals = np.fmin(need, mean_rate / per_replica)
        batch_need = drain + np.nan_to_num(arrivals)
        busy = (np.nan_to_num(backlog) > 0) | (np.nan_to_num(last_val) > 0)
        last_busy = np.where(is_batch & busy, now_s, last_busy)
        idle_long = (now_s - last_busy) >= table.batch_idle_s
        # keep one replica until idle for idle_s; then zero if allowed
        keep_one = ~idle_long | ~table.batch_to_zero
        batch_need = np.where(keep_one, np.maximum(batch_need, 1.0), batch_need)
        need = np.where(is_batch, batch_need, need)
        reason = np.where(
            is_batch & (np.nan_to_num(backlog) > 0),
            "BacklogDeadline",
            np.where(is_batch & idle_long & table.batch_to_zero, "ScaleToZeroIdle", reason),
        )

    need = np.where(np.isfinite(need), need, 0.0)
    raw = np.ceil(need - 1e-9).astype(np.int64)
    raw = np.maximum(raw, floors.min_replicas)
    sched = floors.min_replicas > 0

    # 4. tolerance (HPA semantics: inclusive band on desired/current) -------------------
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(current > 0, raw / np.maximum(current, 1), np.inf)
    within = (
        (current > 0)
        & (ratio >= 1.0 - table.behavior.tol_down)
        & (ratio <= 1.0 + table.behavior.tol_up)
    )
    rec = np.where(within, current, raw)

    # 4b. sudden silence: hold the replicas the demand fell from (spec.SilenceSpec) -------
    silence_since = state.silence_since_s
    silence_ref = state.silence_ref
    silence_total = state.silence_total
    in_silence = np.zeros(n, dtype=bool)
    if bool(np.any(table.silence_hold_s > 0)):
        lo = int(np.searchsorted(obs.t_s, now_s - SILENCE_REF_WINDOW_S, side="right"))
        hi = int(obs.t_s.shape[0])
        if hi > lo:
            k = min(SILENCE_REF_COLS, hi - lo)
            ref_cols = np.unique(np.round(np.linspace(lo, hi - 1, k)).astype(np.intp))
            ref = _demand_series(table, obs, ref_cols)
            peak = np.fmax.reduce(ref, axis=1)
            # the stream was steady before it stopped: bursty traffic is silent between
            # bursts all the time, and that is demand, not an outage (the last rate window,
            # where a stop ramps down, is left out of the check)
            steady_cols = obs.t_s[ref_cols] <= now_s - SILENCE_RAMP_S
            floor = np.fmin.reduce(np.where(steady_cols[None, :], ref, np.nan), axis=1)
        else:
            peak = floor = np.full(n, np.nan)
        quiet = ~missing & np.isfinite(last_val)
        ongoing = np.isfinite(silence_since)
        with np.errstate(invalid="ignore"):
            still = ongoing & quiet & (last_val <= table.silence_ratio * silence_ref)
            onset = (
                ~ongoing
                & quiet
                & (table.silence_hold_s > 0)
                & (peak >= SILENCE_MIN_REPLICAS * per_replica)
                & (floor >= SILENCE_STEADY_RATIO * peak)
                & (last_val <= table.silence_ratio * peak)
            )
        silence_since = np.where(onset, now_s, np.where(still, silence_since, -np.inf))
        silence_ref = np.where(onset, peak, np.where(still, silence_ref, np.nan))
        held_total = np.maximum(state.last_total, current)
        silence_total = np.where(onset, held_total, np.where(still, silence_total, 0))
        in_silence = (onset | still) & (now_s - silence_since < table.silence_hold_s)
        rec = np.where(in_silence, np.maximum(rec, silence_total), rec)

    # 5. hold on missing data: last good decision, never below current -------------------
    # A held workload's recommendation is the held count: its stabilization history then
    # keeps the pre-outage level for a full window after data returns (no sudden drop).
    held = missing
    hold_total = np.maximum(state.last_total, current)
    rec = np.where(held, hold_total, rec)

    # 6. behavior (stabilization, rate limits) and bounds --------------------------------
    min_r = np.minimum(np.maximum(table.min_replicas, floors.min_replicas), table.max_replicas)
    final, beh_reason, bstate = apply_behavior(
        table.behavior, state.behavior, rec, current, min_r, table.max_replicas, now_s
    )
    final = np.where(held, hold_total, final)

    # 7. pool split -----------------------------------------------------------------------
    spot_enabled = table.spot_enabled
    base = np.maximum(
        table.base_on_demand, np.ceil(table.base_on_demand_ratio * final - 1e-9).astype(np.int64)
    )
    base = np.where(spot_enabled, np.minimum(base, final), final)
    spot_target = final - base
    trouble = cur.spot_at_risk + cur.spot_pending_too_long
    unhealthy = spot_enabled & (trouble > 0)
    unhealthy_s = np.where(unhealthy, now_s, state.spot_unhealthy_s)
    healthy_long = (now_s - unhealthy_s) >= table.spot_healthy_hold_s
    spill = np.where(
        unhealthy,
        np.maximum(state.spill, trouble),
        np.where(healthy_long, 0, state.spill),
    )
    spill = np.where(spot_enabled, np.minimum(spill, spot_target), 0)
    # Make before break: on-demand replicas serving now stay until the spot replicas meant
    # to replace them are Ready (a shift to spot, e.g. the first decision of a workload that
    # starts on demand, must not leave a cold start without capacity). Kept in the state, so
    # the next tick's current replicas exclude it like the spill-over.
    spot_booting = np.maximum(spot_target - cur.ready_spot, 0)
    bridge = np.where(spot_enabled, np.clip(cur.ready_on_demand - base - spill, 0, spot_booting), 0)
    on_demand = base + spill + bridge
    spot = np.where(spot_enabled, spot_target, 0)
    on_demand = np.maximum(on_demand, floors.min_on_demand)
    spot = np.where(spot_enabled, np.maximum(spot, floors.min_spot), spot)
    # holding on missing data scales no pool down (spill-over and handover included)
    on_demand = np.where(held, np.maximum(on_demand, cur.current_on_demand), on_demand)
    spot = np.where(held & spot_enabled, np.maximum(spot, cur.current_spot), spot)

    # warm pool: headroom between the forecast's upper bound and what we ask for
    with np.errstate(invalid="ignore", divide="ignore"):
        upper_replicas = np.ceil(np.nan_to_num(f_upper) / per_replica - 1e-9)
    headroom = np.nan_to_num(upper_replicas - final, nan=0.0).astype(np.int64)
    max_warm = np.maximum(table.max_warm, floors.min_warm)
    min_warm = np.where(final >= table.warm_floor_from_replicas, table.min_warm, 0)
    warm = np.clip(headroom, min_warm, max_warm)
    warm = np.maximum(warm, floors.min_warm)
    warm = np.where(table.max_warm + floors.min_warm > 0, warm, 0)

    # reasons -------------------------------------------------------------------------------
    up = final > current
    down = final < current
    forecast_led = np.nan_to_num(f_upper) > np.nan_to_num(last_val) * 1.0001
    main = np.where(
        up,
        np.where(forecast_led, "ScaleUpForecast", "ScaleUpDemand"),
        np.where(down, "ScaleDownDemand", np.where(within, "WithinTolerance", "Steady")),
    )
    limited = np.isin(
        beh_reason, ("ScaleUpLimit", "ScaleDownLimit", "TooFewReplicas", "TooManyReplicas")
    )
    limit = np.where(limited & (final != rec), beh_reason, "")
    main = np.where(limit != "", limit, main)
    main = np.where(
        sched & (final == floors.min_replicas) & (raw <= floors.min_replicas), "ScheduleFloor", main
    )
    # the scenario's own cause (burst, backlog deadline, idle) names the decision
    main = np.where(reason != "", reason, main)
    main = np.where(in_silence & (final >= silence_total), "HoldSuddenSilence", main)
    main = np.where(spill > 0, "SpotSpillover", main)  # a handover (bridge) is in the message
    main = np.where(held, "HoldStaleMetrics", main)

    detail = _messages(
        table,
        main,
        final,
        current,
        last_val,
        f_upper,
        horizon,
        spot,
        on_demand,
        warm,
        spill,
        held,
        floors,
        limit,
        (in_silence, silence_ref, silence_since + table.silence_hold_s),
        bridge,
    )

    decisions = Decisions(
        spot=spot.astype(np.int64),
        on_demand=on_demand.astype(np.int64),
        warm=warm.astype(np.int64),
        desired_total=final.astype(np.int64),
        demand_now=last_val,
        forecast=f_mean,
        forecast_upper=f_upper,
        reason=main.astype(object),
        detail=detail,
        held=held,
    )
    new_state = PolicyState(
        forecast=fstate,
        behavior=bstate,
        errors=errs,
        last_total=np.where(held, state.last_total, final),
        last_good_s=np.where(held, state.last_good_s, now_s),
        spill=spill.astype(np.int64),
        handover=bridge.astype(np.int64),
        spot_unhealthy_s=unhealthy_s,
        burst_until_s=burst_until,
        last_busy_s=last_busy,
        demand_last=np.where(got, newest_val, state.demand_last),
        demand_last_s=np.where(got, newest_at, state.demand_last_s),
        silence_since_s=silence_since,
        silence_ref=silence_ref,
        silence_total=silence_total.astype(np.int64),
    )
    return decisions, new_state


_UNITS = {CHAT: "req/s", RAG: "in-flight", STREAMING: "streams", BATCH: "items/s"}


def _messages(
    table: SpecTable,
    reason: Any,
    final: I64,
    current: I64,
    demand: F64,
    upper: F64,
    horizon: F64,
    spot: I64,
    on_demand: I64,
    warm: I64,
    spill: I64,
    held: B,
    floors: Floors,
    limit: Any,
    silence: tuple[B, F64, F64],
    bridge: I64,
) -> LazyMessages:
    """One human sentence per workload (what and why, with the numbers), formatted on read."""

    def fmt(i: int) -> str:
        unit = "tokens/s" if table.uses_tokens[i] else _UNITS[int(table.scenario[i])]
        if held[i]:
            return (
                f"{reason[i]}: demand metric missing or stale: holding {final[i]} replicas "
                f"(last good decision, never a scale-down)"
            )
        msg = (
            f"{current[i]} -> {final[i]} replicas: demand {demand[i]:.3g} {unit}, "
            f"forecast upper {upper[i]:.3g} in {horizon[i]:.0f}s; "
            f"spot {spot[i]}, on-demand {on_demand[i]}, warm {warm[i]}"
        )
        if limit[i] and limit[i] != reason[i]:
            msg += f"; limited by behavior ({limit[i]})"
        if spill[i]:
            msg += f"; {spill[i]} on-demand covering spot at risk"
        if bridge[i]:
            msg += f"; {bridge[i]} on-demand serving until spot replicas are Ready"
        if floors.source[i]:
            msg += f"; schedule {floors.source[i]!s} active"
        if silence[0][i]:
            msg += (
                f"; sudden silence (demand <= {table.silence_ratio[i]:g} x its peak "
                f"{silence[1][i]:.3g}): holding replicas until t={silence[2][i]:.0f}s"
            )
        return f"{reason[i]}: {msg}"

    return LazyMessages(fmt, np.arange(final.shape[0], dtype=np.int64))
