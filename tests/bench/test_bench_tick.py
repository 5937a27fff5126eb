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

import json
import multiprocessing
import os
import statistics
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
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
SCRAPE_S = 5.0
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


def _serve_exporter(ports: Any, stop: Any, t0: float, hist_start: float) -> None:
    """Child process: the exporter, away from the GIL of the process being timed."""
    exporter = MetricsExporter("text")  # keeps the vllm: names, as backfilled
    for i in range(N_WORKLOADS):
        waiting, running, ok_rps, p_tps, g_tps = _rates(i)
        set_at = time.time()
        exporter.set_vllm(_ns(i), _name(i), waiting, running, ok_rps, p_tps, g_tps)
        # live counters carry on from the backfilled ones: value = rate * (t - hist_start),
        # anchored at the moment they were set (a counter that drops is a reset to rate())
        for metric, r in (
            (VLLM_SUCCESS, ok_rps),
            (VLLM_PROMPT_TOKENS, p_tps),
            (VLLM_GENERATION_TOKENS, g_tps),
        ):
            exporter.inc(metric, _ns(i), _name(i), r * (set_at - hist_start))
    exporter.start()
    ports.put(exporter.port)
    stop.wait(600)
    exporter.stop()


def _history(target: str, hist_start: float, t0: float) -> tuple[str, int]:
    """OpenMetrics backfill of the same series, with the labels the scrape will add."""
    series: list[tuple[str, str, dict[str, str], Any]] = []
    for i in range(N_WORKLOADS):
        waiting, running, ok_rps, p_tps, g_tps = _rates(i)
        labels = {
            "namespace": _ns(i),
            "workload": _name(i),
            "pod": "pod-0",
            "model_name": _name(i),
            "job": "exporter",
            "instance": target,
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
    stamps = np.arange(hist_start, t0 - STEP_S, STEP_S)
    return openmetrics_history(series, stamps), len(stamps)


@pytest.fixture(scope="module")
def bench_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    if not have_prometheus():
        pytest.skip("prometheus binary not found (Debian package prometheus)")
    t0 = time.time()
    hist_start = t0 - HISTORY_S
    ctx = multiprocessing.get_context("spawn")
    ports, stop = ctx.Queue(), ctx.Event()
    child = ctx.Process(target=_serve_exporter, args=(ports, stop, t0, hist_start), daemon=True)
    child.start()
    try:
        target = f"127.0.0.1:{ports.get(timeout=60)}"
        server = PrometheusServer(
            Path(tmp_path_factory.mktemp("bench-prom")), [target], scrape_interval_s=SCRAPE_S
        )
        t_text = time.perf_counter()
        text, n_points = _history(target, hist_start, t0)
        t_fill = time.perf_counter()
        server.backfill_openmetrics(text)
        t_start = time.perf_counter()
        server.start()
        try:
            server.wait_scraped(1, timeout_s=60)
            started_s = time.perf_counter() - t_start
            print(
                f"\nsetup: {N_WORKLOADS * 5} series, {n_points} backfilled points each, live "
                f"scrape every {SCRAPE_S:g} s; text {t_fill - t_text:.1f} s, promtool "
                f"{t_start - t_fill:.1f} s, start + first scrape {started_s:.1f} s"
            )
            yield server
        finally:
            server.stop()
    finally:
        stop.set()
        child.join(timeout=10)
        if child.is_alive():
            child.kill()
            child.join(timeout=10)


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _eval_s(server: PrometheusServer, promql: str, start: float, end: float) -> float:
    """Prometheus' own evaluation time for one range query (its stats=all), seconds."""
    query = urllib.parse.urlencode(
        {"query": promql, "start": start, "end": end, "step": STEP_S, "stats": "all"}
    )
    with urllib.request.urlopen(f"{server.url}/api/v1/query_range?{query}", timeout=60) as r:
        return float(json.loads(r.read())["data"]["stats"]["timings"]["evalTotalTime"])


@dataclass
class _Timed:
    walls: list[float]
    client_cpu: list[float]
    server_cpu: list[float]
    fetched: list[int]
    out: Any


def _timed_observes(
    src: PrometheusMetricsSource, ws: list[Workload], prom_pid: int, n: int
) -> _Timed:
    timed = _Timed([], [], [], [], None)
    for _ in range(n):
        t, c, p = time.perf_counter(), time.process_time(), _cpu_s(prom_pid)
        timed.out = src.observe(ws, time.time())
        timed.walls.append(time.perf_counter() - t)
        timed.client_cpu.append(time.process_time() - c)
        timed.server_cpu.append(_cpu_s(prom_pid) - p)
        timed.fetched.append(max(src.last_fetched_points))
    return timed


def _line(name: str, t: _Timed) -> str:
    med = statistics.median
    return (
        f"  {name}: {med(t.fetched)} points per series read; wall median "
        f"{med(t.walls) * 1e3:.0f} ms (min {min(t.walls) * 1e3:.0f}, max "
        f"{max(t.walls) * 1e3:.0f}); Prometheus CPU {med(t.server_cpu) * 1e3:.0f} ms, this "
        f"process CPU {med(t.client_cpu) * 1e3:.0f} ms (HTTP, JSON, arrays)"
    )


def test_observe_1000_workloads(bench_prometheus: PrometheusServer) -> None:
    ws = _workloads()
    assert bench_prometheus.proc is not None
    prom_pid = bench_prometheus.proc.pid
    load_before = os.getloadavg()[0]
    # every tick reads the whole window (a cold start; incremental=False)
    full_src = PrometheusMetricsSource.from_url(
        bench_prometheus.url, window_s=WINDOW_S, step_s=STEP_S, incremental=False
    )
    full_src.observe(ws, time.time())  # warm-up: connection, Prometheus caches
    q0 = full_src.queries_total
    full = _timed_observes(full_src, ws, prom_pid, N_TIMED)
    per_tick = (full_src.queries_total - q0) / N_TIMED
    out = full.out
    start, end = float(out.t_s[0]), float(out.t_s[-1])
    evals = [sum(_eval_s(bench_prometheus, q, start, end) for q in full_src.last_queries)]
    evals.append(sum(_eval_s(bench_prometheus, q, start, end) for q in full_src.last_queries))
    # steady state (the default): one full read, then each tick re-reads refetch_s + new
    inc_src = PrometheusMetricsSource.from_url(
        bench_prometheus.url, window_s=WINDOW_S, step_s=STEP_S
    )
    inc_src.observe(ws, time.time())
    wait_s = STEP_S - time.time() % STEP_S + 0.5  # let the grid move one step, as a tick does
    time.sleep(wait_s)
    inc = _timed_observes(inc_src, ws, prom_pid, N_TIMED)
    finite = np.isfinite(out.metrics["queue"]).mean()
    print(
        f"observe: {N_WORKLOADS} workloads, {len(out.metrics)} families, {per_tick:g} queries "
        f"per tick, window {out.t_s.shape[0]} points x {STEP_S:g} s (target <= 1000 ms wall)\n"
        + _line("full window", full)
        + f"; Prometheus evaluation {min(evals) * 1e3:.0f} ms (its stats, 4 queries summed)\n"
        + _line("incremental", inc)
        + f"\n  machine: {os.cpu_count()} cores, load average {load_before:.1f} -> "
        f"{os.getloadavg()[0]:.1f}"
    )
    # sanity, not timing: the batched plan and the values
    assert per_tick == 4
    for o in (full.out, inc.out):
        assert not o.stale.any() and o.errors == {}, list(o.errors.items())[:3]
        queue_now = o.metrics["queue"][:, -1]
        np.testing.assert_array_equal(queue_now, [i % 7 for i in range(N_WORKLOADS)])
        # rates: 2 minutes back, inside the backfill; the newest 60 s rate windows straddle
        # the seam between backfill and the first live scrapes (a ~20 s gap rate() cannot
        # extrapolate over), which is the benchmark's doing, not the source's
        np.testing.assert_allclose(
            o.metrics["rps"][:, -9], [1.0 + i % 4 for i in range(N_WORKLOADS)], rtol=0.05
        )
    assert finite > 0.9  # the backfilled window is full
    assert max(inc.fetched) < out.t_s.shape[0] / 2  # the incremental ticks did reuse
    # loose: a plan of one query per workload would take minutes
    assert statistics.median(full.walls) < 30.0

    _time_policy(ws, inc.out, inc.walls)


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
