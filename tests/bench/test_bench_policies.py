"""Benchmark: one policies.decide for 10,000 workloads with 600-sample windows.

Target (policy core): <= 50 ms on one core for a steady-state tick. Prints the median of
repeated runs; asserts only a loose sanity bound (timings on shared machines vary).
"""

from __future__ import annotations

import os
import platform
import time

import numpy as np

from policies import PredictivePolicy, validate_policy_spec
from policies.types import ClusterFacts, Observation

N_WORKLOADS = 10_000
N_SAMPLES = 600


def _specs() -> list:
    base = [
        validate_policy_spec(
            {"scenario": "chat", "capacity": {"rps_per_replica": 10}, "max_replicas": 100}
        ),
        validate_policy_spec(
            {"scenario": "rag", "capacity": {"queue_per_replica": 8}, "max_replicas": 100}
        ),
        validate_policy_spec(
            {"scenario": "streaming", "capacity": {"streams_per_replica": 16}, "max_replicas": 100}
        ),
        validate_policy_spec(
            {
                "scenario": "batch",
                "capacity": {"rps_per_replica": 2},
                "min_replicas": 0,
                "max_replicas": 100,
            }
        ),
    ]
    return [base[i % 4] for i in range(N_WORKLOADS)]


def _obs(rng: np.random.Generator, t: np.ndarray, step_s: float) -> Observation:
    n, s = N_WORKLOADS, t.size
    lvl = rng.uniform(5, 200, (n, 1))
    rps = lvl * (1 + 0.1 * rng.standard_normal((n, s)))
    metrics = {
        "rps": rps,
        "queue": rps / 4,
        "running": rps / 2,
        "streams": rps,
        "backlog": np.full((n, s), 100.0),
        "backlog_age_s": np.full((n, s), 30.0),
    }
    return Observation(
        t_s=t, metrics=metrics, cluster=ClusterFacts.uniform(n, spot=5, on_demand=5, warm=1)
    )


def _run(step_s: float) -> dict[str, float]:
    rng = np.random.default_rng(0)
    p = PredictivePolicy()
    t0 = time.perf_counter()
    table = p.compile(_specs())
    compile_s = time.perf_counter() - t0
    state = p.initial_state(table)
    t = np.arange(-(N_SAMPLES - 1), 1, 1.0) * step_s
    obs = _obs(rng, t, step_s)
    t0 = time.perf_counter()
    _, state = p.decide(table, state, obs, 0.0)
    cold_s = time.perf_counter() - t0
    times = []
    metrics = dict(obs.metrics)
    for k in range(1, 16):
        # one new sample per tick: the window slides by one step
        now = k * step_s
        o = Observation(t_s=t + now, metrics=metrics, cluster=obs.cluster)
        t0 = time.perf_counter()
        _, state = p.decide(table, state, o, now)
        times.append(time.perf_counter() - t0)
    return {
        "compile_s": compile_s,
        "cold_s": cold_s,
        "median_s": float(np.median(times)),
        "p90_s": float(np.quantile(times, 0.9)),
    }


def test_bench_decide_10k_workloads() -> None:
    print(
        f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
        f"numpy {np.__version__}"
    )
    for step_s in (1.0, 15.0):
        r = _run(step_s)
        print(
            f"decide {N_WORKLOADS} workloads x {N_SAMPLES} samples (step {step_s:g}s): "
            f"steady-state median {r['median_s'] * 1e3:.1f} ms, p90 {r['p90_s'] * 1e3:.1f} ms; "
            f"cold (all samples new) {r['cold_s'] * 1e3:.0f} ms; compile {r['compile_s']:.2f} s"
        )
        assert r["median_s"] < 1.0  # sanity only: the target is 50 ms
