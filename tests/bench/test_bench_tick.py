"""Benchmark: one observe() for 1,000 workloads against a real Prometheus, and the policy on it.

Setup: a text-format exporter serves the five vLLM series of 1,000 workloads (10 namespaces x
100; 5,000 series), scraped every second by /usr/bin/prometheus; the 11 minutes before the
start are backfilled at 15 s with promtool, so the 600 s window at 15 s (41 points a series)
is full, as in production. Timed: `PrometheusMetricsSource.observe` (window 600 s, step 15 s)
and, when `policies.PredictivePolicy` is importable, `decide` on the resulting Observation.

Targets: observe <= 1 s wall; the policy <= 10 % of the tick. Printed, not asserted (timings
depend on the machine); the asserts are loose sanity bounds and the query count.

Run: make bench  (or .venv/bin/pytest -q -s tests/bench/test_bench_tick.py)
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from autoscaler.adapters.prometheus import PrometheusMetricsSource
from autoscaler.config import Workload
from tests.prom_fixtures import (
    VLLM_GENERATION_TOKENS,
    VLLM_PROMPT_TOKENS,
    VLLM_RUNNING,
    VLLM_SUCCESS,
    VLLM_WAITING,
    MetricsExporter,
    PrometheusServer,
    have_prometheus,
    openmetrics_history,
)

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]

N_WORKLOADS = 1000
N_NAMESPACES = 10
WINDOW_S = 600.0
STEP_S = 15.0
HISTORY_S = 660.0
N_TIMED = 5

SCENARIOS: list[dict[str, Any]] = [
    {"scenario": "chat", "capacity": {"rps_per_replica": 2.0}},
    {"scenario": "rag", "capacity": {"queue_per_replica": 4.0}},
    {"scenario": "streaming", "capacity": {"streams_per_replica": 8.0}},
]


def _ns(i: int) -> str:
    return f"bench-{i % N_NAMESPACES}"


def _name(i: int) -> str:
    return f"llm-{i:04d}"


def _rates(i: int) -> tuple[float, float, float, float, float]:
    """(waiting, running, success/s, prompt tokens/s, generation tokens/s) of workload i."""
    return float(i % 7), float(i % 5 + 1), 1.0 + i % 4, 100.0 + i % 10, 50.0 + i % 3


def _workloads() -> list[Workload]:
    return [
        Workload.model_validate(
            {
                "namespace": _ns(i),
                "name": _name(i),
                "spec": {
                    "targets": {"on_demand": f"{_name(i)}-od", "spot": f"{_name(i)}-spot"},
                    "policy": SCENARIOS[i % len(SCENARIOS)],
                },
            }
        )
        for i in range(N_WORKLOADS)
    ]


@pytest.fixture(scope="module")
def bench_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    if not have_prometheus():
        pytest.skip("prometheus binary not found (Debian package prometheus)")
    exporter = MetricsExporter("text")  # keeps the vllm: names, as backfilled below
    exporter.start()
    t0 = time.time()
    hist_start = t0 - HISTORY_S
    series: list[tuple[str, str, dict[str, str], Any]] = []
    for i in range(N_WORKLOADS):
        waiting, running, ok_rps, p_tps, g_tps = _rates(i)
        # the labels the live scrape will carry (job, instance added by Prometheus): one series
        labels = {
            "namespace": _ns(i),
            "workload": _name(i),
            "pod": "pod-0",
            "model_name": _name(i),
            "job": "exporter",
            "instance": exporter.target,
        }
        series += [
            (VLLM_WAITING, "gauge", labels, lambda t, v=waiting: v),
            (VLLM_RUNNING, "gauge", labels, lambda t, v=running: v),
            (
                VLLM_SUCCESS,
                "counter",
                {**labels, "finished_reason": "stop"},
                lambda t, r=ok_rps: r * (t - hist_start),
            ),
            (VLLM_PROMPT_TOKENS, "counter", labels, lambda t, r=p_tps: r * (t - hist_start)),
            (VLLM_GENERATION_TOKENS, "counter", labels, lambda t, r=g_tps: r * (t - hist_start)),
        ]
        # live series carry on from the backfilled counters (no reset at the seam)
        exporter.set_vllm(_ns(i), _name(i), waiting, running, ok_rps, p_tps, g_tps)
        for metric, r in ((VLLM_SUCCESS, ok_rps), (VLLM_PROMPT_TOKENS, p_tps)):
            exporter.inc(metric, _ns(i), _name(i), r * (t0 - hist_start))
        exporter.inc(VLLM_GENERATION_TOKENS, _ns(i), _name(i), g_tps * (t0 - hist_start))
    stamps = np.arange(hist_start, t0 - STEP_S, STEP_S)
    server = PrometheusServer(Path(tmp_path_factory.mktemp("bench-prom")), [exporter.target])
    t_text = time.perf_counter()
    text = openmetrics_history(series, stamps)
    t_fill = time.perf_counter()
    server.backfill_openmetrics(text)
    t_start = time.perf_counter()
    server.start()
    try:
        server.wait_scraped(2, timeout_s=30)
        print(
            f"\nsetup: {exporter.n_series()} live series, {len(stamps)} backfilled points each; "
            f"text {t_fill - t_text:.1f} s, promtool {t_start - t_fill:.1f} s, "
            f"start + 2 scrapes {time.perf_counter() - t_start:.1f} s"
        )
        yield server
    finally:
        server.stop()
        exporter.stop()


def test_observe_1000_workloads(bench_prometheus: PrometheusServer) -> None:
    ws = _workloads()
    src = PrometheusMetricsSource.from_url(bench_prometheus.url, window_s=WINDOW_S, step_s=STEP_S)
    src.observe(ws, time.time())  # warm-up: connection, Prometheus caches
    walls: list[float] = []
    q0 = src.queries_total
    out = None
    for _ in range(N_TIMED):
        t = time.perf_counter()
        out = src.observe(ws, time.time())
        walls.append(time.perf_counter() - t)
    assert out is not None
    per_tick = (src.queries_total - q0) / N_TIMED
    s = out.t_s.shape[0]
    finite = np.isfinite(out.metrics["queue"]).mean()
    print(
        f"observe: {N_WORKLOADS} workloads, {len(out.metrics)} families, {per_tick:g} queries "
        f"per tick, window {s} points; wall median {statistics.median(walls) * 1e3:.0f} ms, "
        f"min {min(walls) * 1e3:.0f} ms, max {max(walls) * 1e3:.0f} ms (target <= 1000 ms); "
        f"queue samples present {finite:.0%}"
    )
    # sanity, not timing: the batched plan and the values
    assert per_tick == 4
    assert not out.stale.any() and out.errors == {}
    np.testing.assert_array_equal(out.metrics["queue"][:, -1], [i % 7 for i in range(N_WORKLOADS)])
    np.testing.assert_allclose(
        out.metrics["rps"][:, -1], [1.0 + i % 4 for i in range(N_WORKLOADS)], rtol=0.15
    )
    assert finite > 0.9  # the backfilled window is full
    assert statistics.median(walls) < 30.0  # loose: a broken plan would be minutes

    _time_policy(ws, out, walls)


def _time_policy(ws: list[Workload], windows: Any, observe_walls: list[float]) -> None:
    try:
        import policies
        from autoscaler.loop import windows_to_observation
        from policies.types import ClusterFacts

        policy = policies.PredictivePolicy()
    except (ImportError, AttributeError) as e:
        print(f"policy: skipped ({e})")
        return
    effective = getattr(policies, "effective_policy_spec", None)
    specs = [effective(w.spec.policy, w.spec.targets) if effective else w.spec.policy for w in ws]
    table = policy.compile(specs)
    state = policy.initial_state(table)
    obs = windows_to_observation(windows, ClusterFacts.uniform(len(ws), spot=2, on_demand=1))
    now = float(windows.t_s[-1])
    walls: list[float] = []
    for k in range(N_TIMED + 1):
        t = time.perf_counter()
        decisions, state = policy.decide(table, state, obs, now + k * STEP_S)
        if k:  # the first call warms up
            walls.append(time.perf_counter() - t)
    decide_s = statistics.median(walls)
    tick_s = statistics.median(observe_walls) + decide_s
    print(
        f"policy: decide for {len(ws)} workloads median {decide_s * 1e3:.1f} ms = "
        f"{decide_s / tick_s:.1%} of observe + decide (claim <= 10 %)"
    )
    assert decisions.n == len(ws)
