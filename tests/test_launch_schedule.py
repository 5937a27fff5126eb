"""A one-off launch entry, simulated: pre-warming removes the misses a reactive policy has
at the launch's load step (the same ScheduleEvaluator the service runs, on simulated time)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from autoscaler.config import parse_workload
from autoscaler.schedules import ScheduleEvaluator
from policies import PredictivePolicy
from simulator.cluster import ClusterConfig
from simulator.engine import SimConfig, simulate
from simulator.traces import step

EPOCH_S = 1_790_000_000.0  # wall-clock time of the trace's t=0
LAUNCH_AT_S = 1_800.0
TTFT_SLO_S = 1.0


def workload(schedules: list[dict[str, Any]]) -> Any:
    return parse_workload(
        "launch",
        "chat",
        {
            "targets": {"on_demand": "chat-od"},
            "policy": {
                "scenario": "chat",
                "slo": {"slo_class": "moderate", "target_s": TTFT_SLO_S},
                "min_replicas": 1,
                "max_replicas": 30,
                "capacity": {"rps_per_replica": 12.0, "target_utilization": 0.8},
                "schedules": schedules,
            },
        },
    )


def run(schedules: list[dict[str, Any]]) -> dict[str, float]:
    # 4 req/s, then the launch: 60 req/s from t = 1800 s (needs ~7 replicas)
    trace = step(3000.0, before_rps=4.0, after_rps=60.0, at_s=LAUNCH_AT_S, seed=3)
    cfg = SimConfig(cluster=ClusterConfig(spot_hazard_per_hour=0.0), tail_s=120.0)
    res = simulate(
        trace,
        workload(schedules),
        PredictivePolicy(),
        cfg,
        seed=3,
        schedules=ScheduleEvaluator(epoch_s=EPOCH_S),
    )
    after = (res.arrival_s >= LAUNCH_AT_S) & (res.arrival_s < LAUNCH_AT_S + 900.0)
    ttft = res.first_token_s - res.arrival_s
    ok = ~res.dropped & (ttft <= TTFT_SLO_S)
    gpu_h = sum(res.gpu_seconds_by_pool.values()) / 3600.0
    return {
        "attainment_pct": float(100.0 * ok[after].mean()),
        "gpu_hours": gpu_h,
        "requests": float(after.sum()),
    }


@pytest.mark.slow
def test_prewarmed_launch_removes_the_misses_at_the_step() -> None:
    reactive = run([])
    iso = np.datetime64(int(EPOCH_S + LAUNCH_AT_S), "s").astype(str) + "+00:00"
    planned = run(
        [
            {
                "name": "launch",
                "start": iso,
                "duration_s": 1200.0,
                "prewarm_s": 600.0,
                "min_replicas": 7,
            }
        ]
    )
    print(f"\nlaunch step, 15 min after: reactive {reactive}, pre-warmed {planned}")
    # reactive: the cold start (median 300 s) after the step costs minutes of misses
    assert reactive["attainment_pct"] < 95.0
    # pre-warmed 600 s ahead: capacity is ready at the step
    assert planned["attainment_pct"] >= 99.0
    assert planned["attainment_pct"] > reactive["attainment_pct"]
