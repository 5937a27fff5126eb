"""The simulation engine: Prometheus-like metrics, the adapters, and the driver."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from autoscaler.config import Workload
from policies import PredictivePolicy
from policies.baselines import StaticPolicy
from simulator import traces
from simulator.cli import default_workload
from simulator.cluster import ClusterConfig, SimCluster
from simulator.engine import SimConfig, SimMetricsSource, oracle_for, prom_rate, simulate
from simulator.report import LatencyTargets, build_report
from simulator.service import ServiceProfile
from simulator.traces import RateCurve


def make_workload(**policy: Any) -> Workload:
    spec = {
        "targets": {"on_demand": "llm-od"},
        "policy": {"scenario": "chat", "capacity": {"rps_per_replica": 10.0}, **policy},
    }
    return Workload.model_validate({"namespace": "default", "name": "llm", "spec": spec})


class TestPromRate:
    """rate() on hand-made counter series; arithmetic beside each assert."""

    def test_steady_counter_reads_its_slope(self) -> None:
        # 1 req/s scraped every 15 s; at t=60 the window (0, 60] holds 15, 30, 45, 60:
        # increase 45 over 45 s, extrapolated 15 s to the start (< 1.1 * 15) -> 60/60 = 1.0
        t = np.arange(0.0, 61.0, 15.0)
        assert prom_rate(t, t * 1.0, np.array([60.0]), 60.0)[0] == pytest.approx(1.0)

    def test_large_offset_counter_is_not_capped_by_its_zero_point(self) -> None:
        t = np.arange(0.0, 61.0, 15.0)
        v = 1e6 + 3.0 * t
        assert prom_rate(t, v, np.array([60.0]), 60.0)[0] == pytest.approx(3.0)

    def test_series_starting_inside_the_window_extrapolates_half_a_spacing(self) -> None:
        # samples only at 45 (45) and 60 (60): increase 15 over 15 s; the gap to the window
        # start (45 s) exceeds 1.1 * 15, so extrapolate 7.5 s; zero point is 45 s away.
        # rate = 15 * (15 + 7.5) / 15 / 60 = 0.375
        t = np.array([45.0, 60.0])
        assert prom_rate(t, t.copy(), np.array([60.0]), 60.0)[0] == pytest.approx(0.375)

    def test_zero_point_limits_the_start_extrapolation(self) -> None:
        # samples 2 @ 45 s, 17 @ 60 s: slope 1/s would hit zero 2 s before 45 s, so the
        # extrapolation to the start is 2 s, not 7.5: 15 * (15 + 2) / 15 / 60 = 0.28333
        t = np.array([45.0, 60.0])
        v = np.array([2.0, 17.0])
        assert prom_rate(t, v, np.array([60.0]), 60.0)[0] == pytest.approx(17 / 60)

    def test_counter_reset_adds_the_value_before_the_drop(self) -> None:
        # 100, 115, (restart) 5, 20 at 15..60: increase = (20 - 100) + 115 = 35 over 45 s,
        # start extrapolation 15 s (zero point 128 s away): 35 * 60 / 45 / 60 = 0.7778
        t = np.array([15.0, 30.0, 45.0, 60.0])
        v = np.array([100.0, 115.0, 5.0, 20.0])
        assert prom_rate(t, v, np.array([60.0]), 60.0)[0] == pytest.approx(35 / 45)

    def test_window_is_left_open(self) -> None:
        # at t=60 with window 45 the sample at 15 is outside (15 is not > 15):
        # 30, 45, 60 -> 30 over 30 s, extrapolated 15 s at the start: 30 * 45 / 30 / 45 = 1.0
        t = np.arange(0.0, 61.0, 15.0)
        assert prom_rate(t, t * 1.0, np.array([60.0]), 45.0)[0] == pytest.approx(1.0)

    def test_end_extrapolation_when_evaluated_between_scrapes(self) -> None:
        # eval at 65 (5 s after the last scrape, < 1.1 * 15): samples in (5, 65] are
        # 15..60, increase 45 over 45 s, to start 10 s, to end 5 s: 45 * 60 / 45 / 60 = 1.0
        t = np.arange(0.0, 61.0, 15.0)
        assert prom_rate(t, t * 1.0, np.array([65.0]), 60.0)[0] == pytest.approx(1.0)

    def test_fewer_than_two_samples_is_missing(self) -> None:
        t = np.array([0.0, 100.0])
        out = prom_rate(t, np.array([0.0, 5.0]), np.array([50.0, 100.0]), 60.0)
        assert np.isnan(out).all()

    def test_vectorized_over_evaluation_times(self) -> None:
        # the rate doubles at t=120: evaluations before and after read each slope
        t = np.arange(0.0, 301.0, 15.0)
        v = np.where(t <= 120, t, 120 + 2 * (t - 120))
        out = prom_rate(t, v, np.array([120.0, 300.0]), 60.0)
        np.testing.assert_allclose(out, [1.0, 2.0])


class Exporter:
    """A hand-driven exporter: counters and gauges the test sets between scrapes."""

    def __init__(self) -> None:
        self.c = {"requests_total": 0.0, "prompt_tokens_total": 0.0, "generation_tokens_total": 0.0}
        self.g = {"queue": 0.0, "running": 0.0, "streams": 0.0, "kv_usage": 0.0}

    def counters(self) -> dict[str, float]:
        return dict(self.c)

    def gauges(self) -> dict[str, float]:
        return dict(self.g)


def drive(src: SimMetricsSource, exp: Exporter, until_s: float, rps: float = 2.0) -> None:
    """Scrape every 15 s from 0 to until_s with a steady load of `rps`."""
    for t in np.arange(0.0, until_s + 1e-9, 15.0):
        exp.c["requests_total"] = rps * t
        exp.c["prompt_tokens_total"] = 100 * rps * t
        exp.c["generation_tokens_total"] = 10 * rps * t
        exp.g["queue"] = t / 15.0
        src.scrape(float(t))


class TestSimMetricsSource:
    def test_observe_returns_the_window_on_the_scrape_grid(self) -> None:
        w = make_workload()
        exp = Exporter()
        src = SimMetricsSource(exp, w, scrape_interval_s=15.0, rate_window_s=60.0, window_s=300.0)
        drive(src, exp, 600.0)
        win = src.observe([w], 607.0)
        # grid points in (307, 607]: 315, 330, ..., 600 -> 20 points
        np.testing.assert_allclose(win.t_s, np.arange(315.0, 601.0, 15.0))
        np.testing.assert_allclose(win.metrics["rps"][0], 2.0)
        np.testing.assert_allclose(win.metrics["tokens_ps"][0], 2.0 * 110)
        np.testing.assert_allclose(win.metrics["queue"][0], win.t_s / 15.0)
        assert not win.stale[0]

    def test_scrape_gap_makes_gauges_missing_and_the_series_stale(self) -> None:
        w = make_workload()  # stale_after_s 60
        exp = Exporter()
        src = SimMetricsSource(exp, w, window_s=300.0, scrape_gaps=[(300.0, 420.0)])
        drive(src, exp, 600.0)
        assert src.failed_scrapes == 8  # 300, 315, ..., 405
        during = src.observe([w], 405.0)
        gap = (during.t_s >= 300) & (during.t_s < 420)
        assert np.isnan(during.metrics["queue"][0][gap]).all()
        assert np.isfinite(during.metrics["queue"][0][~gap]).all()
        # newest good sample at 285 s: 405 - 285 = 120 s > 60 s
        assert during.stale[0]
        # 45 s into the gap: 330 - 285 = 45 s <= 60 s, not yet stale
        assert not src.observe([w], 330.0).stale[0]
        # rate over a window with no samples is missing; one window later it reads again
        assert np.isnan(during.metrics["rps"][0][-1])
        after = src.observe([w], 600.0)
        assert not after.stale[0]
        assert after.metrics["rps"][0][-1] == pytest.approx(2.0)

    def test_never_scraped_is_stale(self) -> None:
        w = make_workload()
        src = SimMetricsSource(Exporter(), w)
        win = src.observe([w], 100.0)
        assert win.stale[0] and win.t_s.size == 0

    def test_other_workloads_read_missing_with_an_error(self) -> None:
        w = make_workload()
        other = Workload.model_validate({"namespace": "x", "name": "other", "spec": w.spec})
        exp = Exporter()
        src = SimMetricsSource(exp, w)
        drive(src, exp, 120.0)
        win = src.observe([other, w], 120.0)
        assert win.stale[0] and not win.stale[1]
        assert 0 in win.errors and 1 not in win.errors
        assert np.isnan(win.metrics["rps"][0]).all()

    def test_history_is_a_range_query(self) -> None:
        w = make_workload()
        exp = Exporter()
        src = SimMetricsSource(exp, w)
        drive(src, exp, 600.0, rps=4.0)
        h = src.history([w], 120.0, 600.0, 60.0)
        np.testing.assert_allclose(h.t_s, np.arange(120.0, 601.0, 60.0))
        np.testing.assert_allclose(h.metrics["rps"][0], 4.0)

    def test_scrapes_must_move_forward(self) -> None:
        w = make_workload()
        src = SimMetricsSource(Exporter(), w)
        src.scrape(15.0)
        with pytest.raises(ValueError, match="not after"):
            src.scrape(15.0)


# -- the driver: the service's loop on a simulated cluster ------------------------------------

CONV = Path(__file__).resolve().parents[2] / "shared" / "traces" / "AzureLLMInferenceTrace_conv.csv"
CODE = Path(__file__).resolve().parents[2] / "shared" / "traces" / "AzureLLMInferenceTrace_code.csv"
# short cold starts keep the runs short while scale-ups still land inside them
FAST = ClusterConfig(cold_start_median_s=60.0, cold_start_p95_s=90.0)


def chat_workload(spot: bool = True, max_replicas: int = 20) -> Workload:
    w = default_workload("chat", max_replicas=max_replicas)
    if spot:
        return w
    targets = w.spec.targets.model_copy(update={"spot": None, "warm": None})
    return w.model_copy(update={"spec": w.spec.model_copy(update={"targets": targets})})


class TestSimulate:
    def test_same_seed_same_run_other_seed_other_reclaims(self) -> None:
        tr = traces.step(600.0, 4.0, 30.0, at_s=200.0, seed=3)
        w = chat_workload()
        # a high reclaim rate so the schedule is not empty in 10 minutes
        cfg = SimConfig(cluster=replace(FAST, spot_hazard_per_hour=30.0))
        a = simulate(tr, w, PredictivePolicy(), cfg, seed=11)
        b = simulate(tr, w, PredictivePolicy(), cfg, seed=11)
        np.testing.assert_array_equal(a.first_token_s, b.first_token_s)
        np.testing.assert_array_equal(a.finish_s, b.finish_s)
        assert a.gpu_seconds_by_pool == b.gpu_seconds_by_pool
        assert [(e.t_s, e.pool, e.to_replicas) for e in a.scale_events] == [
            (e.t_s, e.pool, e.to_replicas) for e in b.scale_events
        ]
        np.testing.assert_array_equal(a.timeline["decided_total"], b.timeline["decided_total"])
        assert a.spot_interruptions  # the same reclaims, and some
        c = simulate(tr, w, PredictivePolicy(), cfg, seed=12)
        assert c.spot_interruptions != a.spot_interruptions

    def test_static_policy_keeps_replicas_constant(self) -> None:
        tr = traces.step(400.0, 3.0, 9.0, at_s=200.0, seed=1)
        w = chat_workload(spot=False)
        run = simulate(tr, w, StaticPolicy(1), SimConfig(cluster=FAST), seed=0)
        assert run.initial_replicas == 1
        assert run.scale_events == []
        assert set(run.timeline["desired_on_demand"]) == {1.0}
        assert set(run.timeline["decided_total"]) == {1.0}
        # a static count different from the initial one is one patch, then nothing
        two = simulate(tr, w, StaticPolicy(2), SimConfig(cluster=FAST), seed=0)
        assert [(e.pool, e.from_replicas, e.to_replicas) for e in two.scale_events] == [
            ("on_demand", 1, 2)
        ]

    def test_a_load_step_makes_the_predictive_policy_scale_up(self) -> None:
        # 4 -> 40 req/s at 200 s: 1 replica before, ceil(40 / (13.26 * 0.8)) = 4 after
        tr = traces.step(900.0, 4.0, 40.0, at_s=200.0, seed=2)
        run = simulate(tr, chat_workload(), PredictivePolicy(), SimConfig(cluster=FAST), seed=0)
        poll = run.timeline["poll_t_s"]
        decided = run.timeline["decided_total"]
        assert decided[poll < 200].max() <= 2
        assert decided[poll > 400].min() >= 4
        ready = run.timeline["ready_spot"] + run.timeline["ready_on_demand"]
        assert ready[run.timeline["t_s"] > 600].min() >= 4
        assert any(e.to_replicas > e.from_replicas for e in run.scale_events)

    def test_every_request_is_served_or_dropped(self) -> None:
        # an overloaded single replica with a short queue: some requests are dropped
        tr = traces.step(300.0, 30.0, 30.0, at_s=0.0, seed=4)
        cfg = SimConfig(cluster=ClusterConfig(max_queue=20), tail_s=30.0)
        run = simulate(tr, chat_workload(spot=False), StaticPolicy(1), cfg, seed=0)
        served = np.isfinite(run.finish_s) & ~run.dropped
        assert run.dropped.sum() > 0
        assert served.sum() + run.dropped.sum() == len(tr) == run.n_requests

    def test_stale_metrics_hold_the_decision(self) -> None:
        # scrapes fail for 200 s: once the newest sample is older than stale_after_s (60 s)
        # the loop hands the policy a stale window and it holds (never scales down)
        tr = traces.step(600.0, 10.0, 10.0, at_s=0.0, seed=5)
        cfg = SimConfig(cluster=FAST, scrape_gaps=((200.0, 400.0),))
        run = simulate(tr, chat_workload(), PredictivePolicy(), cfg, seed=0)
        poll = run.timeline["poll_t_s"]
        held = run.timeline["held"] > 0
        assert held[(poll > 270) & (poll < 400)].all()
        assert not held[(poll > 100) & (poll < 200)].any()
        # scrapes every 15 s from 0: 210, 225, ..., 390 fall in the gap; the newest good
        # one is at 195 s, so the window is stale from 195 + 60 = 255 s on
        assert run.failed_scrapes == (390 - 210) // 15 + 1

    def test_rate_curve_needs_aggregate_mode(self) -> None:
        curve = RateCurve(
            "flat", np.arange(0.0, 600.0, 60.0), 60.0, np.full(10, 5.0), 1155.0, 211.0, "test"
        )
        with pytest.raises(ValueError, match="aggregate"):
            simulate(curve, chat_workload(), StaticPolicy(1), SimConfig(mode="request"))
        run = simulate(curve, chat_workload(), StaticPolicy(1), SimConfig(mode="aggregate"))
        # 5 req/s for 600 s, all served by one replica
        assert run.n_requests == pytest.approx(3000.0, rel=1e-6)
        assert run.dropped.sum() == 0


@pytest.mark.parametrize(
    ("path", "scenario", "slo_tol_pts"),
    [
        # conv is near Poisson: the fluid model tracks per-request simulation closely
        pytest.param(CONV, "chat", 1.0, id="azure-conv"),
        # code bursts within seconds: the fluid model (5 s bins) is still within a few points
        pytest.param(CODE, "rag", 6.0, id="azure-code"),
    ],
)
def test_aggregate_mode_tracks_request_mode(path: Path, scenario: str, slo_tol_pts: float) -> None:
    tr = traces.load_trace(path, duration_s=900.0)
    w = default_workload(scenario, None, tr.input_tokens.mean(), tr.output_tokens.mean())
    itl_s = 0.025 if scenario == "chat" else 0.05
    targets = LatencyTargets.for_workload(w, itl_s=itl_s)
    out = {}
    for mode in ("request", "aggregate"):
        run = simulate(
            tr, w, StaticPolicy(2), SimConfig(mode=mode), seed=0, itl_slo_ms=itl_s * 1000
        )
        out[mode] = build_report(run, oracle_for(run), targets)
    req, agg = out["request"], out["aggregate"]
    assert agg.requests == pytest.approx(req.requests, rel=1e-3)
    assert agg.gpu_hours == pytest.approx(req.gpu_hours, rel=0.03)
    assert abs(agg.slo_attainment - req.slo_attainment) <= slo_tol_pts


def test_aggregate_mode_counts_each_request_once_despite_reclaims() -> None:
    # spot replicas reclaimed often: re-queued requests enter service twice in the fluid
    # model, yet served + dropped must still equal the arrivals of the curve
    curve = RateCurve(
        "flat", np.arange(0.0, 1800.0, 60.0), 60.0, np.full(30, 40.0), 1155.0, 211.0, "test"
    )
    cfg = SimConfig(
        mode="aggregate", cluster=replace(FAST, spot_hazard_per_hour=20.0, spot_notice_s=0.0)
    )
    run = simulate(curve, chat_workload(), PredictivePolicy(), cfg, seed=1)
    assert run.interruptions > 0
    assert run.n_requests == pytest.approx(40.0 * 1800.0, rel=1e-6)


def test_backlog_age_reads_the_clusters_oldest_wait() -> None:
    w = make_workload()
    c = SimCluster(
        ClusterConfig(spot_hazard_per_hour=0.0), ServiceProfile.default(), initial={"on_demand": 0}
    )
    c.submit(np.array([5.0, 20.0]), np.full(2, 100), np.full(2, 10))
    src = SimMetricsSource(c, w, window_s=300.0)
    for t in np.arange(0.0, 121.0, 15.0):
        c.advance(float(t))
        src.scrape(float(t))
    win = src.observe([w], 120.0)
    age, backlog = win.metrics["backlog_age_s"][0], win.metrics["backlog"][0]
    # nothing serves: the request that arrived at 5 s is the oldest from then on
    np.testing.assert_allclose(age, np.where(win.t_s >= 5.0, win.t_s - 5.0, 0.0))
    np.testing.assert_allclose(backlog, (win.t_s >= 5.0).astype(float) + (win.t_s >= 20.0))
