"""Reports: per-policy numbers on hand-made runs, the compare JSON, tables and plots."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from policies.baselines import StaticPolicy
from simulator import traces
from simulator.cli import default_workload
from simulator.cluster import ClusterConfig
from simulator.engine import RunResult, ScaleEvent, SimConfig, oracle_for, simulate
from simulator.oracle import solve_oracle
from simulator.report import (
    POLICY_JSON_KEYS,
    CompareReport,
    LatencyTargets,
    build_report,
    markdown_table,
    render_table,
    weighted_quantile,
    write_plots,
)

WORKLOAD = default_workload("chat", max_replicas=20)  # TTFT P95 <= 0.5 s


def hand_run(**over: Any) -> RunResult:
    """Four requests: TTFT 0.1, 0.3, 0.7 s and one dropped; one on-demand replica-hour."""
    arrival = np.array([0.0, 10.0, 20.0, 30.0])
    first = arrival + np.array([0.1, 0.3, 0.7, np.nan])
    out_tok = np.array([11.0, 1.0, 21.0, 5.0])
    itl = np.array([0.02, np.nan, 0.03, np.nan])
    finish = first + np.nan_to_num(itl) * (out_tok - 1)
    fields: dict[str, Any] = {
        "policy": "hand",
        "trace": "tiny",
        "workload": WORKLOAD,
        "mode": "request",
        "seed": 0,
        "start_s": 0.0,
        "end_s": 40.0,
        "eval_start_s": 0.0,
        "arrival_s": arrival,
        "first_token_s": first,
        "finish_s": finish,
        "itl_s": itl,
        "output_tokens": out_tok,
        "dropped": np.array([False, False, False, True]),
        "weight": np.ones(4),
        "gpu_seconds_by_pool": {"on_demand": 3600.0, "spot": 0.0, "warm": 0.0},
        "cost_usd_by_pool": {"on_demand": 6.9, "spot": 0.0, "warm": 0.0},
        "timeline": {
            "t_s": np.array([0.0, 10.0, 20.0, 30.0]),
            "ready_on_demand": np.array([1.0, 1.0, 1.0, 1.0]),
            "ready_spot": np.array([0.0, 0.0, 1.0, 0.0]),
            "poll_t_s": np.array([0.0, 10.0, 20.0, 30.0]),
            "demand_rps": np.array([1.0, 1.0, 20.0, 20.0]),
        },
        "scale_events": [ScaleEvent(20.0, "spot", 0, 1, "ScaleUp")],
        "interruptions": 0,
        "initial_replicas": 1,
        "capacity_rps": 13.0,
        "required": np.array([1, 1, 2, 2], dtype=np.int64),
        "poll_interval_s": 10.0,
        "cluster": ClusterConfig(),
        "spot_interruptions": (),
        "wall_s": 0.0,
    }
    fields.update(over)
    return RunResult(**fields)


class TestWeightedQuantile:
    def test_unit_weights_pick_order_statistics(self) -> None:
        v = np.array([5.0, 1.0, 3.0, 2.0, 4.0])
        w = np.ones(5)
        # the smallest v whose cumulative weight reaches q * 5
        assert weighted_quantile(v, w, 0.5) == 3.0  # 2.5 of 5 -> 3rd value
        assert weighted_quantile(v, w, 0.95) == 5.0
        assert weighted_quantile(v, w, 0.2) == 1.0  # exactly 1 of 5

    def test_weights_count_as_repeated_values(self) -> None:
        # value 1 x 9, value 10 x 1: P50 = 1, P95 = 10
        v, w = np.array([10.0, 1.0]), np.array([1.0, 9.0])
        assert weighted_quantile(v, w, 0.5) == 1.0
        assert weighted_quantile(v, w, 0.95) == 10.0

    def test_nothing_to_rank_is_nan(self) -> None:
        assert math.isnan(weighted_quantile(np.array([np.nan]), np.array([1.0]), 0.5))


class TestBuildReport:
    def test_hand_computed_numbers(self) -> None:
        oracle = solve_oracle([1, 1, 1, 1], 10.0, lead_s=0.0, initial_on_demand=1)
        # oracle: one replica for 40 s = 40/3600 GPU-h at $6.9/h
        rep = build_report(hand_run(), oracle, LatencyTargets.for_workload(WORKLOAD, 0.025))
        assert (rep.requests, rep.served, rep.dropped) == (4, 3, 1)
        # TTFT <= 0.5 s: 0.1 and 0.3 -> 2 of 4 (the dropped one is a miss)
        assert rep.slo_attainment == pytest.approx(50.0)
        assert rep.ttft_attainment == pytest.approx(50.0)
        assert not rep.slo_met
        # ITL <= 25 ms: 0.02 yes, one-token output yes, 0.03 no, dropped no -> 2 of 4
        assert rep.itl_attainment == pytest.approx(50.0)
        # e2e <= 0.5 + (out - 1) * 0.025: 0.1 + 0.2 <= 0.75 yes; 0.3 <= 0.5 yes;
        # 0.7 + 0.6 = 1.3 > 1.0 no; dropped no -> 2 of 4
        assert rep.e2e_attainment == pytest.approx(50.0)
        # TTFT percentiles over the 3 served: 0.1, 0.3, 0.7
        assert rep.p50_latency_s == pytest.approx(0.3)
        assert rep.p99_latency_s == pytest.approx(0.7)
        assert rep.gpu_hours == pytest.approx(1.0)
        assert rep.cost_usd == pytest.approx(6.9)
        # an e2e SLO: the percentiles are of end-to-end times (0.3, 0.3, 1.3 s)
        wl_e2e = WORKLOAD.model_copy(
            update={
                "spec": WORKLOAD.spec.model_copy(
                    update={
                        "policy": WORKLOAD.spec.policy.model_copy(
                            update={
                                "slo": WORKLOAD.spec.policy.slo.model_copy(
                                    update={"metric": "e2e", "target_s": 1.0}
                                )
                            }
                        )
                    }
                )
            }
        )
        rep_e2e = build_report(hand_run(), oracle, LatencyTargets.for_workload(wl_e2e))
        assert rep_e2e.slo_attainment == pytest.approx(50.0)  # 0.3, 0.3 <= 1 s of 4
        assert rep_e2e.p50_latency_s == pytest.approx(0.3)
        assert rep_e2e.p99_latency_s == pytest.approx(1.3)
        assert rep.cost_per_1k_requests_usd == pytest.approx(6.9 / 3 * 1000)
        assert rep.cost_over_oracle == pytest.approx(6.9 / (6.9 * 40 / 3600))
        assert rep.gpu_hours_over_oracle == pytest.approx(3600 / 40)
        assert rep.scale_events == 1
        # ready 1, 1, 2, 1 vs required 1, 1, 2, 2: short in the last 10 s tick
        assert rep.seconds_under_capacity == pytest.approx(10.0)

    def test_eval_start_leaves_out_the_warmup(self) -> None:
        rep = build_report(hand_run(eval_start_s=15.0), None)
        # requests arriving at 20 (TTFT 0.7, a miss) and 30 (dropped): 0 of 2
        assert rep.requests == 2 and rep.slo_attainment == 0.0
        assert math.isnan(rep.cost_over_oracle)  # no oracle given
        assert rep.seconds_under_capacity == pytest.approx(10.0)

    def test_weights_stand_for_cohorts(self) -> None:
        # aggregate mode: a row is a cohort; 3 of 4 rows weigh 100, the dropped one 300
        w = np.array([100.0, 100.0, 100.0, 300.0])
        rep = build_report(hand_run(weight=w), None)
        assert rep.requests == 600 and rep.dropped == 300
        assert rep.slo_attainment == pytest.approx(100 * 200 / 600)


@pytest.fixture(scope="module")
def tiny() -> tuple[CompareReport, list[RunResult]]:
    return tiny_compare()


def tiny_compare() -> tuple[CompareReport, list[RunResult]]:
    tr = traces.step(240.0, 5.0, 12.0, at_s=120.0, seed=1)
    cfg = SimConfig(cluster=ClusterConfig(cold_start_median_s=60.0, cold_start_p95_s=90.0))
    runs = [
        simulate(tr, WORKLOAD, StaticPolicy(1), cfg, seed=0, itl_slo_ms=25.0),
        simulate(tr, WORKLOAD, StaticPolicy(2), cfg, seed=0, itl_slo_ms=25.0),
    ]
    oracle = oracle_for(runs[0])
    targets = LatencyTargets.for_workload(WORKLOAD, itl_s=0.025)
    reports = [build_report(r, oracle, targets) for r in runs]
    return CompareReport("step", "chat", "request", oracle, reports, targets), runs


class TestCompareOutputs:
    def test_json_keys_and_values_on_a_tiny_run(
        self, tmp_path: Path, tiny: tuple[CompareReport, list[RunResult]]
    ) -> None:
        rep, runs = tiny
        path = rep.write_json(tmp_path / "out.json")
        data = json.loads(path.read_text())
        assert set(data["oracle"]) >= {"gpu_hours", "cost_usd"}
        assert data["oracle"]["gpu_hours"] == pytest.approx(rep.oracle.gpu_hours)
        assert [p["name"] for p in data["policies"]] == ["static", "static"]
        for entry, run in zip(data["policies"], runs, strict=True):
            assert list(entry)[: len(POLICY_JSON_KEYS)] == list(POLICY_JSON_KEYS)
            assert entry["requests"] == run.arrival_s.size
            assert entry["dropped"] == 0
            assert 0.0 <= entry["slo_attainment"] <= 100.0
            assert entry["p50_latency_s"] <= entry["p95_latency_s"] <= entry["p99_latency_s"]
            cost = sum(run.cost_usd_by_pool.values())
            assert entry["cost_usd"] == pytest.approx(cost)
            assert entry["cost_over_oracle"] == pytest.approx(cost / rep.oracle.cost_usd)
            assert entry["cost_per_1k_requests_usd"] == pytest.approx(
                1000 * cost / run.arrival_s.size
            )
        # two replicas cost more than one, from the same start
        assert data["policies"][1]["gpu_hours"] > data["policies"][0]["gpu_hours"]
        assert data["policies"][1]["scale_events"] == 1

    def test_nan_becomes_null(
        self, tmp_path: Path, tiny: tuple[CompareReport, list[RunResult]]
    ) -> None:
        rep, runs = tiny
        no_oracle = build_report(runs[0], None)
        rep2 = CompareReport(
            rep.trace, rep.scenario, rep.mode, rep.oracle, [no_oracle], rep.targets
        )
        data = json.loads(rep2.write_json(tmp_path / "x.json").read_text())
        assert data["policies"][0]["cost_over_oracle"] is None

    def test_tables_list_every_policy(self, tiny: tuple[CompareReport, list[RunResult]]) -> None:
        from rich.console import Console

        rep, _ = tiny
        md = markdown_table(rep)
        assert md.count("| static |") == 2 and "| oracle |" in md
        console = Console(width=200, record=True)
        console.print(render_table(rep))
        text = console.export_text()
        assert "static" in text and "SLO %" in text

    def test_plots_are_small_pngs(
        self, tmp_path: Path, tiny: tuple[CompareReport, list[RunResult]]
    ) -> None:
        rep, runs = tiny
        paths = write_plots(runs, rep, tmp_path, prefix="t_")
        assert [p.name for p in paths] == [
            "t_timeline.png",
            "t_latency_cdf.png",
            "t_cost_vs_slo.png",
        ]
        for p in paths:
            data = p.read_bytes()
            assert data[:8] == b"\x89PNG\r\n\x1a\n"
            assert 5_000 < len(data) < 200_000
