"""`gpu-autoscaler sweep`: grids, Pareto frontiers, the tune/eval split, parallel execution."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from simulator import sweep
from simulator.cli import UsageError
from simulator.sweep import (
    Job,
    SweepError,
    SweepSetup,
    at_equal_attainment,
    choose_setting,
    expand_grid,
    halves,
    pareto_frontier,
    run_job,
    run_sweep,
    split_s,
)
from simulator.traces import Trace, write_trace


def _pt(cost: float, att: float, gpu: float | None = None) -> dict[str, float]:
    return {"cost_usd": cost, "slo_attainment": att, "gpu_hours": cost if gpu is None else gpu}


# -- grids -----------------------------------------------------------------------------------


def test_grid_expands_to_the_cartesian_product_last_parameter_fastest() -> None:
    got = expand_grid({"a": [1, 2], "b": ["x", "y", "z"]})
    assert len(got) == 2 * 3
    assert got[0] == {"a": 1, "b": "x"}
    assert got[1] == {"a": 1, "b": "y"}
    assert got[3] == {"a": 2, "b": "x"}


def test_grid_scalar_is_one_value_and_empty_grid_is_the_defaults() -> None:
    assert expand_grid({"a": 0.5, "b": [1, 2]}) == [{"a": 0.5, "b": 1}, {"a": 0.5, "b": 2}]
    assert expand_grid({}) == [{}]


def test_grid_list_is_the_union_without_repeats() -> None:
    # a metric and a target in its units vary together: two grids, not one product
    got = expand_grid(
        [{"metric": ["queue"], "target": [1, 2]}, {"metric": "running", "target": [50]}, {}]
    )
    assert got == [
        {"metric": "queue", "target": 1},
        {"metric": "queue", "target": 2},
        {"metric": "running", "target": 50},
        {},
    ]
    assert expand_grid([{"a": [1]}, {"a": [1, 2]}]) == [{"a": 1}, {"a": 2}]


def test_grid_with_an_empty_value_list_names_the_parameter() -> None:
    with pytest.raises(SweepError, match="'target' has no values"):
        expand_grid({"target": []})


def test_grid_file_rejects_unknown_policies(tmp_path: Path) -> None:
    p = tmp_path / "grid.yaml"
    p.write_text("hpa:\n  target: [1, 2]\nvpa:\n  x: [1]\n")
    with pytest.raises(SweepError, match="unknown policy 'vpa'"):
        sweep.load_grid_file(p)


# -- frontier and choice -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("points", "frontier"),
    [
        pytest.param(
            # cheaper and better: each point beats the previous on attainment
            [_pt(1, 90), _pt(2, 95), _pt(3, 99)],
            [0, 1, 2],
            id="all-on-a-rising-staircase",
        ),
        pytest.param(
            # (2, 93) is dominated by (1.5, 95); (4, 99) by (3, 99.5)
            [_pt(1, 90), _pt(2, 93), _pt(1.5, 95), _pt(4, 99), _pt(3, 99.5)],
            [0, 2, 4],
            id="dominated-points-dropped",
        ),
        pytest.param(
            # equal cost: only the better attainment; exact duplicates: the first
            [_pt(1, 90), _pt(1, 92), _pt(2, 95), _pt(2, 95)],
            [1, 2],
            id="ties-keep-one",
        ),
        pytest.param(
            # a NaN point is never on the frontier
            [_pt(1, math.nan), _pt(2, 95)],
            [1],
            id="nan-left-out",
        ),
    ],
)
def test_pareto_frontier_on_hand_made_points(
    points: list[dict[str, float]], frontier: list[int]
) -> None:
    assert pareto_frontier(points) == frontier


def test_pareto_frontier_matches_brute_force_on_random_points() -> None:
    rng = np.random.default_rng(7)
    pts = [
        _pt(float(c), float(a))
        for c, a in zip(rng.integers(0, 20, 60), rng.integers(80, 100, 60), strict=True)
    ]
    got = set(pareto_frontier(pts))
    for i, p in enumerate(pts):
        dominated = any(
            q["cost_usd"] <= p["cost_usd"]
            and q["slo_attainment"] >= p["slo_attainment"]
            and (q["cost_usd"] < p["cost_usd"] or q["slo_attainment"] > p["slo_attainment"])
            for q in pts
        )
        duplicate_before = any(
            q["cost_usd"] == p["cost_usd"] and q["slo_attainment"] == p["slo_attainment"]
            for q in pts[:i]
        )
        assert (i in got) == (not dominated and not duplicate_before), (i, p)


def test_pareto_frontier_against_gpu_hours_uses_that_key() -> None:
    pts = [_pt(1, 90, gpu=5), _pt(2, 95, gpu=1)]
    assert pareto_frontier(pts, x_key="gpu_hours") == [1]  # 1 GPU-h and better: dominates


def test_choice_is_the_cheapest_point_meeting_the_goal() -> None:
    pts = [_pt(5, 99.9), _pt(3, 99.6), _pt(1, 98.0), _pt(4, 99.5)]
    assert choose_setting(pts, 99.5) == 1  # 3 < 4 < 5 among the three meeting 99.5


def test_choice_without_a_point_meeting_the_goal_is_the_best_attainment() -> None:
    pts = [_pt(5, 97.0), _pt(3, 98.0), _pt(1, 98.0)]
    assert choose_setting(pts, 99.5) == 2  # 98.0 twice: the cheaper one


def test_equal_attainment_takes_the_cheapest_reaching_it() -> None:
    pts = [_pt(5, 99.9, gpu=10), _pt(3, 99.2, gpu=6), _pt(4, 99.6, gpu=8)]
    got = at_equal_attainment(pts, 99.5)
    assert got is not None and got["gpu_hours"] == 8
    assert at_equal_attainment(pts, 99.95) is None


def test_interpolation_on_the_frontier_between_bracketing_points() -> None:
    # frontier (gpu 6, 99.2) - (8, 99.6) - (10, 99.9); 99.5 lies 3/4 of the way to 99.6
    pts = [_pt(5, 99.9, gpu=10), _pt(3, 99.2, gpu=6), _pt(4, 99.6, gpu=8), _pt(9, 99.0, gpu=9)]
    got = sweep.interpolated_at_attainment(pts, 99.5)
    assert got == pytest.approx(6 + (8 - 6) * (99.5 - 99.2) / (99.6 - 99.2))
    assert sweep.interpolated_at_attainment(pts, 99.6) == 8  # a point on it: its own value
    assert sweep.interpolated_at_attainment(pts, 99.0) == 6  # below the frontier's start
    assert sweep.interpolated_at_attainment(pts, 99.95) is None


# -- the split -----------------------------------------------------------------------------------


def test_split_rounds_down_to_the_step() -> None:
    # 3502 s * 0.5 = 1751 s -> 1750 s, a multiple of the 5 s tick
    assert split_s(3502.0, 0.5, 5.0) == 1750.0
    with pytest.raises(SweepError, match="tune-fraction"):
        split_s(100.0, 1.0, 5.0)
    with pytest.raises(SweepError, match="halves of at least"):
        split_s(8.0, 0.5, 5.0)


def _tiny_trace(tmp_path: Path, duration_s: float = 240.0, rate_rps: float = 20.0) -> Path:
    rng = np.random.default_rng(0)
    n = int(duration_s * rate_rps)
    t = np.sort(rng.uniform(0.0, duration_s, n))
    tr = Trace(
        name="tiny",
        arrival_s=t,
        input_tokens=rng.integers(200, 1200, n),
        output_tokens=rng.integers(20, 200, n),
        source="test",
        horizon_s=duration_s,
    )
    return write_trace(tr, tmp_path / "tiny.csv")


def test_halves_cut_at_the_split_and_eval_reports_only_after_it(tmp_path: Path) -> None:
    path = _tiny_trace(tmp_path)
    setup = SweepSetup(trace=str(path), mode="aggregate", tune_fraction=0.5)
    h = halves(setup)
    tune, tune_start, t_split = h["tune"]
    ev, ev_start, _ = h["eval"]
    # the file keeps arrivals only: the trace ends at its last arrival (~239.9 s), so the
    # split is half of that rounded down to the 5 s tick
    assert t_split == split_s(sweep._duration_s(sweep.prepared(setup).source), 0.5, 5.0) == 115.0
    assert tune_start == 0.0
    assert tune.arrival_s.max() < t_split  # the tune run never sees the eval half
    assert ev_start == t_split  # eval run covers the whole trace, reported after the split
    assert len(ev) == len(sweep.prepared(setup).source)
    # an eval warm-up starts the eval run later, re-based: the report still starts at the split
    setup2 = SweepSetup(trace=str(path), mode="aggregate", tune_fraction=0.5, eval_warmup_s=60.0)
    ev2, ev2_start, _ = halves(setup2)["eval"]
    assert ev2_start == 60.0  # the run starts at 115 - 60 = 55 s
    assert ev2.arrival_s.max() == pytest.approx(sweep.prepared(setup).source.arrival_s.max() - 55.0)


def test_run_job_reports_only_the_window_and_usage_matches_billing(tmp_path: Path) -> None:
    path = _tiny_trace(tmp_path)
    setup = SweepSetup(trace=str(path), mode="aggregate")
    res = run_job(setup, Job("hpa", {"target": 8.0}, "eval", with_oracle=True))
    assert res["window_s"][0] == 115.0
    assert 0.0 <= res["slo_attainment"] <= 100.0
    # the window's GPU-hours are part of the whole run's billing
    assert 0.0 < res["gpu_hours"] < res["gpu_hours_run"]
    assert res["oracle"]["gpu_hours"] > 0.0
    # arrivals after the split only: about half of the 240 s trace's requests
    assert res["requests"] == pytest.approx(20.0 * 125.0, rel=0.1)


def test_ray_workers_get_absolute_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a Ray worker runs in its own directory: a relative trace path would not be found there
    path = _tiny_trace(tmp_path)
    monkeypatch.chdir(tmp_path)
    setup = SweepSetup(trace=path.name, mode="aggregate", profile=None)
    shipped = setup.with_absolute_paths()
    assert shipped.trace == str(path.resolve()) and shipped.profile is None
    worker_dir = tmp_path / "worker"
    worker_dir.mkdir()
    monkeypatch.chdir(worker_dir)
    job = Job("hpa", {"target": 8.0}, "eval")
    sweep._PREPARED.clear()
    with pytest.raises(UsageError, match="trace file not found"):
        run_job(setup, job)
    assert 0.0 <= run_job(shipped, job)["slo_attainment"] <= 100.0


def test_window_usage_integrates_desired_replicas_per_pool() -> None:
    class Run:
        timeline = {
            "t_s": np.array([0.0, 10.0, 20.0, 30.0]),
            "desired_on_demand": np.array([1.0, 2.0, 2.0, 4.0]),
            "desired_spot": np.array([0.0, 0.0, 1.0, 1.0]),
            "desired_warm": np.zeros(4),
        }
        poll_interval_s = 10.0

        class cluster:  # noqa: N801 - stands in for ClusterConfig
            gpus_per_replica = 1

            @staticmethod
            def price_usd_per_replica_hour(pool: str) -> float:
                return 4.0 if pool == "spot" else 10.0

    got = sweep.window_usage(Run(), 10.0, 40.0)
    # on-demand 2+2+4 replicas x 10 s = 80 s; spot 0+1+1 x 10 s = 20 s
    assert got["gpu_hours"] == pytest.approx(100.0 / 3600.0)
    assert got["cost_usd"] == pytest.approx((80.0 * 10.0 + 20.0 * 4.0) / 3600.0)


# -- the whole sweep -----------------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_process_pool_sweep_on_a_tiny_trace(tmp_path: Path) -> None:
    path = _tiny_trace(tmp_path)
    setup = SweepSetup(trace=str(path), mode="aggregate")
    grids = {
        "predictive": {"capacity.target_utilization": [0.8, 1.0]},
        "hpa": {"target": [6.0, 12.0]},
    }
    seen: list[tuple[str, int, int]] = []
    res = run_sweep(
        setup,
        grids,
        ["predictive", "hpa"],
        attainment_goal=99.0,
        workers=2,
        eval_all=True,
        progress=lambda phase, done, total: seen.append((phase, done, total)),
    )
    assert [s for s in seen if s[0] == "tune"][-1] == ("tune", 4, 4)
    assert [s for s in seen if s[0] == "eval"][-1] == ("eval", 4, 4)
    for name in ("predictive", "hpa"):
        ps = res.policies[name]
        assert len(ps.points["tune"]) == len(ps.points["eval"]) == 2
        assert ps.chosen == choose_setting(ps.points["tune"], 99.0)
        assert ps.chosen_eval() is not None
    # fewer replicas per target: HPA's larger target provisions fewer GPU-hours
    hpa = {p["params"]["target"]: p for p in res.policies["hpa"].points["tune"]}
    assert hpa[12.0]["gpu_hours"] <= hpa[6.0]["gpu_hours"]
    assert res.oracle["tune"]["gpu_hours"] > 0 and res.oracle["eval"]["gpu_hours"] > 0
    d = res.to_dict()
    json.dumps(d, allow_nan=False)
    assert set(d["policies"]["hpa"]["eval"]) == {"points", "frontier_cost", "frontier_gpu_hours"}
    png = sweep.plot_frontier(res, tmp_path / "frontier.png")
    assert png.stat().st_size < 200_000


def test_ray_sweep_gives_the_process_pools_figures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a real (single-node, 127.0.0.1) Ray cluster, where the `ray` extra is installed
    ray = pytest.importorskip("ray", reason="needs the ray extra: pip install '.[ray]'")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    path = _tiny_trace(tmp_path)
    setup = SweepSetup(trace=str(path), mode="aggregate")
    grids = {"predictive": {"forecast.quantile": [0.8, 0.95]}, "hpa": {"target": [6.0, 12.0]}}
    args: dict[str, Any] = {"attainment_goal": 99.0, "eval_all": True}
    local = run_sweep(setup, grids, ["predictive", "hpa"], workers=1, **args)
    ray.init(
        num_cpus=2,
        _node_ip_address="127.0.0.1",
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    try:
        # the sweep joins the cluster this process already started
        on_ray = run_sweep(setup, grids, ["predictive", "hpa"], ray_address="auto", **args)
    finally:
        ray.shutdown()

    def figures(res: Any) -> dict[str, Any]:
        # every figure but each run's own wall time
        out = res.to_dict()["policies"]
        for ps in out.values():
            for half in ("tune", "eval"):
                for pt in ps[half]["points"]:
                    pt.pop("wall_s")
            ps["chosen_eval"].pop("wall_s")
        return out

    assert figures(on_ray) == figures(local)
    assert on_ray.to_dict()["ray_address"] == "auto"
    assert on_ray.to_dict()["workers"] == 0


def test_ray_missing_prints_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    path = _tiny_trace(tmp_path)
    rc = sweep.main(["sweep", "--trace", str(path), "--ray-address", "ray://127.0.0.1:10001"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "pip install 'gpu-autoscaler[ray]'" in err


def test_cli_summary_keeps_names_and_figures_whole_on_80_columns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _tiny_trace(tmp_path)
    grid = tmp_path / "grid.yaml"
    grid.write_text(
        "predictive:\n  forecast.quantile: [0.8, 0.95]\n"
        "  behavior.scaleDown.stabilizationWindowSeconds: [300]\nhpa:\n  target: [6.0]\n"
    )
    args = ["sweep", "--trace", str(path), "--mode", "aggregate", "--grid", str(grid)]
    rc = sweep.main([*args, "--policies", "predictive,hpa", "--workers", "1"])
    assert rc == 0
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if line.startswith("│")]
    assert [line.split("│")[1].strip() for line in table] == ["predictive", "hpa"]
    assert "…" not in "".join(table)
    assert max(len(line) for line in table) <= 80
    chosen = out[out.index("chosen on the tune half:") :].splitlines()
    assert chosen[1].startswith("  predictive: forecast.quantile=")
    assert "behavior.scaleDown.stabilizationWindowSeconds=300" in chosen[1]
    assert chosen[2] == "  hpa: target=6.0"


def test_unknown_policy_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _tiny_trace(tmp_path)
    rc = sweep.main(
        ["sweep", "--trace", str(path), "--policies", "predictive,vpa", "--workers", "1"]
    )
    assert rc == 2
    assert "unknown vpa" in capsys.readouterr().err


# A sweep's parent process, as a script: a spawned pool (the sweep's initializer) whose two
# workers write their PIDs and then "simulate" for a minute; argv = the PID directory.
_ORPHAN_PARENT = """
import os, sys, time
from concurrent.futures import ProcessPoolExecutor
import multiprocessing
from simulator.sweep import exit_with_parent

def busy(d):
    open(os.path.join(d, str(os.getpid())), "w").close()
    end = time.monotonic() + 60
    while time.monotonic() < end:
        sum(range(10_000))

if __name__ == "__main__":
    ctx = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(2, mp_context=ctx, initializer=exit_with_parent,
                               initargs=(os.getpid(), 0.2))
    for _ in range(2):
        pool.submit(busy, sys.argv[1])
    time.sleep(120)
"""


def test_pool_workers_exit_when_the_sweep_is_killed(tmp_path: Path) -> None:
    """Killing the sweep's own PID (SIGKILL: no cleanup at all) must not leave its workers
    simulating for nobody: they notice the re-parenting and exit."""
    import os
    import signal
    import subprocess
    import time

    script = tmp_path / "parent.py"
    script.write_text(_ORPHAN_PARENT)
    pids_dir = tmp_path / "pids"
    pids_dir.mkdir()
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    parent = subprocess.Popen([sys.executable, str(script), str(pids_dir)], env=env)
    try:
        deadline = time.monotonic() + 60
        while len(list(pids_dir.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        workers = [int(p.name) for p in pids_dir.iterdir()]
        assert len(workers) == 2, "the workers did not start within 60 s"
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)

    def alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        # a zombie (exited, not yet reaped by its new parent) counts as gone
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().split(")")[-1].split()[0] != "Z"
        except FileNotFoundError:
            return False

    deadline = time.monotonic() + 20
    while any(alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [p for p in workers if alive(p)]
    for p in left:  # do not leave them behind even when the assertion fails
        os.kill(p, signal.SIGKILL)
    assert not left, f"workers {left} kept running after their sweep was killed"
