"""Benchmark: how fast the simulated cluster runs.

1. Per request (SimCluster): 1,000,000 requests, Poisson at 300 req/s with conv-like tokens
   (lognormal, means ~1,220 in / ~190 out, like the Azure conv trace) on 30 on-demand
   replicas (~10 req/s and ~40 sequences each, below the ~16 req/s saturation). Target:
   >= 1 M requests in <= 10 s wall on one core. Also reported: the same with a control-loop
   cadence (advance every 15 s, a scale change every 60 s).
2. Fluid (FluidCluster): 14 days at 5 s steps with a daily cycle, driven like the engine
   (advance every 15 s, a scale change every 60 s).

Printed, not asserted (timings depend on the machine and its load); the asserts are loose
sanity bounds. CPU time is printed next to wall time: on a shared machine the difference
is time spent waiting for a core.

Run: make bench  (or .venv/bin/pytest -q -s tests/bench/test_bench_sim.py)
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import pytest

from simulator.cluster import ClusterConfig, FluidCluster, SimCluster
from simulator.service import ServiceProfile

pytestmark = pytest.mark.slow

N_REQUESTS = 1_000_000
RATE_RPS = 300.0
REPLICAS = 30


def _workload(n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    arr = np.cumsum(rng.exponential(1.0 / RATE_RPS, n))
    inp = np.clip(np.round(rng.lognormal(np.log(1020), 0.6, n)), 1, 14_000).astype(np.int64)
    out = np.clip(np.round(rng.lognormal(np.log(129), 0.9, n)), 1, 1000).astype(np.int64)
    return arr, inp, out


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def test_bench_one_million_requests_per_request_mode() -> None:
    arr, inp, out = _workload(N_REQUESTS)
    cfg = ClusterConfig(spot_hazard_per_hour=0.0)
    c = SimCluster(cfg, ServiceProfile.default(), initial={"on_demand": REPLICAS})
    c.submit(arr, inp, out)
    horizon = float(arr[-1]) + 600.0
    wall, cpu = _timed(lambda: c.advance(horizon))
    r = c.results()
    done = int(np.isfinite(r.finish_s).sum())
    print(
        f"\nSimCluster: {N_REQUESTS:,} requests ({horizon / 3600:.2f} h simulated, "
        f"{REPLICAS} replicas, mean {inp.mean():.0f} in / {out.mean():.0f} out tokens) in "
        f"{wall:.2f} s wall ({cpu:.2f} s CPU): {N_REQUESTS / wall:,.0f} requests/s simulated "
        f"({N_REQUESTS / cpu:,.0f} per CPU-second); mean ITL {np.nanmean(r.itl_s) * 1e3:.1f} "
        f"ms, mean TTFT {np.nanmean(r.ttft_s) * 1e3:.0f} ms"
    )
    assert done == N_REQUESTS
    assert wall < 300.0  # sanity only: ~10 s expected on an idle core


def test_bench_per_request_mode_with_a_control_loop_cadence() -> None:
    n = N_REQUESTS // 4
    arr, inp, out = _workload(n, seed=2)
    cfg = ClusterConfig()  # spot interruptions on
    c = SimCluster(cfg, ServiceProfile.default(), initial={"on_demand": 10, "spot": 24})
    c.submit(arr, inp, out)
    horizon = float(arr[-1]) + 600.0

    def drive() -> None:
        t = 0.0
        k = 0
        while t < horizon:
            t += 15.0
            c.advance(t)
            c.facts(t, 120.0)
            c.gauges()
            c.counters()
            k += 1
            if k % 4 == 0:  # a scale change every minute, 22..26 spot replicas
                c.set_desired("spot", 22 + (k // 4) % 5, t)

    wall, cpu = _timed(drive)
    r = c.results()
    print(
        f"\nSimCluster with a 15 s scrape/tick cadence: {n:,} requests in {wall:.2f} s wall "
        f"({cpu:.2f} s CPU): {n / wall:,.0f} requests/s; {r.interruptions} interruptions, "
        f"{int(r.retried.sum())} retries, {r.scale_events} scale events"
    )
    assert int(np.isfinite(r.finish_s).sum() + r.dropped.sum()) == n
    assert wall < 300.0


def test_bench_fluid_fourteen_days_at_five_second_steps() -> None:
    days = 14
    bin_s = 600.0
    t = np.arange(0.0, days * 86_400.0, bin_s)
    rate = 200.0 + 150.0 * np.sin(2 * np.pi * t / 86_400.0)
    c = FluidCluster(ClusterConfig(), ServiceProfile.default(), initial={"on_demand": 20})
    c.submit_rate(t, rate, bin_s, 1155, 211)

    def drive() -> None:
        now = 0.0
        k = 0
        while now < days * 86_400.0:
            now += 15.0
            c.advance(now)
            c.facts(now, 120.0)
            c.gauges()
            c.counters()
            k += 1
            if k % 4 == 0:  # a scale change every minute, sized on the current rate
                need = int(np.ceil(rate[int(now // bin_s) % rate.size] / 13.0)) + 1
                c.set_desired("spot", need // 2, now)
                c.set_desired("on_demand", need - need // 2, now)

    wall, cpu = _timed(drive)
    r = c.results()
    print(
        f"\nFluidCluster: {days} days, {r.t_s.size:,} steps in {wall:.2f} s wall ({cpu:.2f} s "
        f"CPU); cost ${r.total_cost_usd:,.0f}, {r.interruptions} interruptions, attainment "
        f"(TTFT <= 1 s) {r.attainment(ttft_slo_s=1.0):.3f}"
    )
    assert r.arrivals.sum() == pytest.approx(float(np.sum(rate * bin_s)), rel=1e-6)
    assert wall < 120.0
