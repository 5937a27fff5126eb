"""`gpu-autoscaler sweep`: tune each policy's parameters on one half of a trace, judge on the other.

    gpu-autoscaler sweep --trace F [--format auto] [--scenario chat] [--config spec.yaml]
                         [--grid grid.yaml] [--policies predictive,hpa,keda,kpa]
                         [--workers N] [--ray-address ADDR] [--tune-fraction 0.5]
                         [--json out.json] [--plot frontier.png] [--mode request|aggregate]
                         [--rate-scale X | --peak-replicas N] [--eval-all] [--spot]

Protocol (the same for every policy, baselines included):

1. Split the trace at `tune_fraction` of its duration (rounded down to the control tick, and
   to the rate curve's bin for a curve). The *tune* half is the trace before the split,
   simulated on its own (reported from `--tune-warmup` seconds on). The *eval* half is the
   rest: the run starts `--eval-warmup` seconds before the split (default: at 0, the whole
   trace) so controllers and forecasts are warm, and the report covers only requests
   arriving after the split (`SimConfig.eval_start_s`).
2. Every grid point of every policy runs on the tune half. A policy's chosen setting is the
   cheapest (`--objective`, cost by default) point whose SLO attainment reaches
   `--attainment-goal` (percent of requests meeting the workload's SLO, 99.5 by default); when
   none does, the point with the highest attainment (then the cheapest).
3. The chosen setting runs on the eval half; with `--eval-all` every point does, so each
   policy also has an eval-half frontier (needed to compare "at equal SLO attainment").

Numbers per point: SLO attainment (percent, dropped requests count as misses), p95 latency
(of the SLO's metric), and GPU-hours and cost *inside the reported window*: the replicas
provisioned in each pool (spot and on-demand replicas, warm placeholders; Starting pods
included, they are billed) integrated over [report start, trace end), priced per pool.
Drain tails after a scale-down (<= the cluster's drain_s per removed replica) and the
post-horizon tail are not counted, for every policy alike. The oracle (simulator.oracle,
perfect foresight, same lead time and initial replicas) is computed once per half and
restricted to the same window.

Pareto frontier: the points not dominated in (cost lower or equal, attainment higher or
equal, one strictly); reported against cost and against GPU-hours, per policy.

Built-in grids (`builtin_grids`) scale with the capacity per replica C at the SLO: HPA on
requests/s per replica, KEDA on queue length per replica, KPA on in-flight requests per
replica, the predictive policy over planning utilization and forecast quantile. A grid file
(YAML) maps policy names to {parameter: [values]}; for the predictive policy parameters are
dotted paths into the workload's policy spec (`capacity.target_utilization`,
`forecast.method`, ...), for baselines they are constructor arguments.

Runs go to a `concurrent.futures.ProcessPoolExecutor` (spawned workers; each loads the trace
once, and exits when the sweep that started it is killed) or, with `--ray-address`, to a Ray
cluster (`pip install 'gpu-autoscaler[ray]'`); the workers read the trace (and --config,
--profile) at their absolute paths, so every node needs them there (a shared filesystem, or
the same checkout on each node).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

EXIT_USAGE = 2
SWEEP_POLICIES: tuple[str, ...] = ("predictive", "hpa", "keda", "kpa")
HALVES: tuple[str, ...] = ("tune", "eval")
RAY_INSTALL_HINT = (
    "Ray is not installed: install the optional extra with "
    "`pip install 'gpu-autoscaler[ray]'` (or `pip install 'ray>=2.9'`), "
    "or drop --ray-address to use the local process pool"
)


class SweepError(ValueError):
    """A problem with the sweep's inputs (grid, policies, split): exit status 2."""


# -- grids ------------------------------------------------------------------------------------


def expand_grid(grid: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every combination of a grid {parameter: [values]} as a list of {parameter: value}.

    A scalar value counts as a one-value list. Parameters keep the grid's order, and the last
    parameter varies fastest. An empty grid gives one empty setting (the defaults). A list of
    grids is their union, in order (for parameters that only make sense together, such as a
    metric and a target in its units); settings already listed are not repeated. Raises
    SweepError for an empty value list.
    """
    if isinstance(grid, Sequence) and not isinstance(grid, str | bytes):
        out: list[dict[str, Any]] = []
        for part in grid:
            if not isinstance(part, Mapping):
                raise SweepError(
                    f"a grid list holds mappings of parameter -> values; found {part!r}"
                )
            for setting in expand_grid(part):
                if setting not in out:
                    out.append(setting)
        return out
    keys = list(grid)
    values: list[list[Any]] = []
    for k in keys:
        v = grid[k]
        vals = list(v) if isinstance(v, list | tuple) else [v]
        if not vals:
            raise SweepError(f"grid parameter {k!r} has no values")
        values.append(vals)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*values)]


def builtin_grids(capacity_rps: float, default_targets: Mapping[str, float]) -> dict[str, Any]:
    """The default grid per policy, scaled by the capacity per replica at the SLO.

    capacity_rps: requests/s one replica sustains inside the SLO; default_targets: "keda"
    the KEDA default target (queue per replica), "inflight" the requests in flight on one
    replica at capacity_rps (the KPA and KEDA-on-running scale).
    """
    c = float(capacity_rps)
    inflight = float(default_targets["inflight"])
    return {
        "predictive": {
            "capacity.target_utilization": [0.8, 0.9, 1.0],
            "forecast.quantile": [0.5, 0.8, 0.95],
        },
        # AverageValue requests/s per replica: from a fifth of the capacity up to all of it
        "hpa": {"target": [round(c * f, 3) for f in (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)]},
        # KEDA's trigger: the waiting queue (its default here; from a tenth of the default
        # target to 4x) or requests running (vLLM's num_requests_running, per replica)
        "keda": [
            {
                "metric": ["queue"],
                "target": [
                    round(max(0.1, default_targets["keda"] * f), 3) for f in (0.1, 0.5, 1.0, 4.0)
                ],
            },
            {
                "metric": ["running"],
                "target": [
                    round(inflight * f, 3) for f in (0.2, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
                ],
            },
        ],
        # in-flight requests per replica (KPA's target concurrency)
        "kpa": {"target": [round(inflight * f, 3) for f in (0.1, 0.2, 0.3, 0.5, 0.7, 0.85, 1.0)]},
    }


def load_grid_file(path: str | Path) -> dict[str, Any]:
    """A grid YAML: {policy: {parameter: [values]}} (or a list of such grids per policy, their
    union). Raises SweepError on a bad shape."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise SweepError(f"grid file not found: {p}")
    data = yaml.safe_load(p.read_text())
    if not isinstance(data, dict):
        raise SweepError(f"{p}: expected a mapping of policy -> {{parameter: [values]}}")
    out: dict[str, Any] = {}
    for name, grid in data.items():
        if name not in SWEEP_POLICIES:
            raise SweepError(f"{p}: unknown policy {name!r}; known: {', '.join(SWEEP_POLICIES)}")
        if grid is None:
            grid = {}
        parts = grid if isinstance(grid, list) else [grid]
        for part in parts:
            if not isinstance(part, dict):
                raise SweepError(f"{p}: {name}: expected {{parameter: [values]}}, found {part!r}")
        out[str(name)] = grid
    return out


# -- frontier and choice -------------------------------------------------------------------------


def pareto_frontier(
    points: Sequence[Mapping[str, Any]],
    x_key: str = "cost_usd",
    y_key: str = "slo_attainment",
) -> list[int]:
    """Indices of the points on the frontier of low `x_key` and high `y_key`, by rising x.

    A point is on it when no other point has x <= its x and y >= its y with one of them
    strict; of exact duplicates the first is kept. Points with a non-finite x or y are left
    out.
    """
    idx = [
        i
        for i, p in enumerate(points)
        if math.isfinite(float(p[x_key])) and math.isfinite(float(p[y_key]))
    ]
    # by x ascending, then y descending, then index: a point is on the frontier iff its y
    # beats every y seen before it
    idx.sort(key=lambda i: (float(points[i][x_key]), -float(points[i][y_key]), i))
    out: list[int] = []
    best = -math.inf
    for i in idx:
        y = float(points[i][y_key])
        if y > best:
            out.append(i)
            best = y
    return out


def choose_setting(
    points: Sequence[Mapping[str, Any]], attainment_goal: float, objective: str = "cost_usd"
) -> int:
    """Index of the cheapest point (by `objective`) with slo_attainment >= attainment_goal;
    when none reaches it, of the point with the highest attainment (ties: the cheapest).
    Raises SweepError when there are no points with finite numbers."""
    ok = [
        i
        for i, p in enumerate(points)
        if math.isfinite(float(p["slo_attainment"])) and math.isfinite(float(p[objective]))
    ]
    if not ok:
        raise SweepError("no sweep point has finite SLO attainment and cost")
    meet = [i for i in ok if float(points[i]["slo_attainment"]) >= attainment_goal]
    if meet:
        return min(meet, key=lambda i: (float(points[i][objective]), i))
    return min(ok, key=lambda i: (-float(points[i]["slo_attainment"]), float(points[i][objective])))


def at_equal_attainment(
    points: Sequence[Mapping[str, Any]], attainment: float, key: str = "gpu_hours"
) -> Mapping[str, Any] | None:
    """The point with the lowest `key` among those with slo_attainment >= attainment (None
    when no point reaches it): what a policy costs once tuned to a given attainment."""
    meet = [p for p in points if float(p["slo_attainment"]) >= attainment - 1e-9]
    if not meet:
        return None
    return min(meet, key=lambda p: float(p[key]))


def interpolated_at_attainment(
    points: Sequence[Mapping[str, Any]], attainment: float, key: str = "gpu_hours"
) -> float | None:
    """`key` at exactly `attainment` on the frontier of (key, attainment), by linear
    interpolation between the two frontier points around it (a policy tuned in finer steps
    would land there); the frontier's own value when a point hits it; None when no point
    reaches the attainment. Less favourable to the challenger than `at_equal_attainment`,
    which takes the next point at or above it."""
    fr = [points[i] for i in pareto_frontier(points, x_key=key)]
    above = [p for p in fr if float(p["slo_attainment"]) >= attainment - 1e-9]
    if not above:
        return None
    hi = min(above, key=lambda p: float(p[key]))
    below = [p for p in fr if float(p["slo_attainment"]) < attainment - 1e-9]
    if not below or float(hi["slo_attainment"]) <= attainment + 1e-9:
        return float(hi[key])
    lo = max(below, key=lambda p: float(p["slo_attainment"]))
    a0, a1 = float(lo["slo_attainment"]), float(hi["slo_attainment"])
    x0, x1 = float(lo[key]), float(hi[key])
    return x0 + (x1 - x0) * (attainment - a0) / (a1 - a0)


def split_s(duration_s: float, tune_fraction: float, step_s: float) -> float:
    """The split time: tune_fraction of duration_s, rounded down to a multiple of step_s
    (seconds). Raises SweepError unless both halves are at least one step long."""
    if not 0.0 < tune_fraction < 1.0:
        raise SweepError(f"--tune-fraction must be in (0, 1); found {tune_fraction}")
    t = math.floor(duration_s * tune_fraction / step_s + 1e-9) * step_s
    if t < step_s or duration_s - t < step_s:
        raise SweepError(
            f"cannot split {duration_s:g} s at {tune_fraction:g} into halves of at least "
            f"{step_s:g} s each"
        )
    return float(t)


# -- one run --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepSetup:
    """What a worker needs to rebuild the trace, workload and simulator settings (small and
    picklable; each worker process loads the trace once per setup)."""

    trace: str
    format: str = "auto"
    scenario: str = "chat"
    config: str | None = None
    workload: str | None = None
    profile: str | None = None
    mode: str | None = None
    seed: int = 0
    rate_scale: float = 1.0
    peak_replicas: float | None = None
    start_s: float | None = None
    duration_s: float | None = None
    poll_interval_s: float = 5.0
    scrape_interval_s: float = 15.0
    fluid_step_s: float | None = None
    tune_fraction: float = 0.5
    tune_warmup_s: float = 0.0
    eval_warmup_s: float | None = None
    spot: bool = False
    cluster: tuple[tuple[str, Any], ...] = ()  # ClusterConfig overrides (name, value)

    def with_absolute_paths(self) -> SweepSetup:
        """The same setup with trace, config and profile as absolute paths: a Ray worker runs
        in its own directory, and reads the files at those paths on its node."""

        def absolute(path: str | None) -> str | None:
            return None if path is None else str(Path(path).expanduser().resolve())

        return replace(
            self,
            trace=str(absolute(self.trace)),
            config=absolute(self.config),
            profile=absolute(self.profile),
        )

    def cli_namespace(self) -> argparse.Namespace:
        """The arguments `simulator.cli` reads to load the trace and the workload."""
        return argparse.Namespace(
            trace=self.trace,
            format=self.format,
            start=self.start_s,
            duration=self.duration_s,
            speedup=1.0,
            rate_scale=self.rate_scale,
            peak_replicas=self.peak_replicas,
            scenario=self.scenario,
            config=self.config,
            workload=self.workload,
            profile=self.profile,
            mode=self.mode,
            seed=self.seed,
        )


@dataclass(frozen=True)
class Job:
    """One simulation: a policy with parameters on one half; `with_oracle` also solves the
    oracle for that half."""

    policy: str
    params: dict[str, Any]
    half: str
    with_oracle: bool = False


_PREPARED: dict[SweepSetup, Any] = {}


def prepared(setup: SweepSetup) -> Any:
    """`simulator.cli.Prepared` for a setup, loaded once per process."""
    if setup not in _PREPARED:
        from simulator.cli import _prepare

        _PREPARED.clear()
        _PREPARED[setup] = _prepare(setup.cli_namespace())
    return _PREPARED[setup]


def _duration_s(source: Any) -> float:
    if hasattr(source, "arrival_s"):
        return max(float(source.duration_s), float(source.arrival_s[-1]) + 1e-6)
    return float(source.duration_s)


def _split_step_s(setup: SweepSetup, source: Any) -> float:
    step = setup.poll_interval_s
    if not hasattr(source, "arrival_s"):
        # a rate curve is cut at bin edges; a multiple of both keeps ticks aligned
        b = float(source.bin_s)
        step = b if abs(b / step - round(b / step)) < 1e-9 else b * step
    return step


def halves(setup: SweepSetup) -> dict[str, tuple[Any, float, float]]:
    """{half: (source, report start s, split s)}: the sources each half simulates (re-based
    to start at 0) and where its report starts on that clock."""
    prep = prepared(setup)
    src = prep.source
    step = _split_step_s(setup, src)
    t_split = split_s(_duration_s(src), setup.tune_fraction, step)
    tune = src.window(0.0, t_split)
    if setup.tune_warmup_s >= t_split:
        raise SweepError(
            f"--tune-warmup {setup.tune_warmup_s:g} s leaves nothing of the {t_split:g} s tune half"
        )
    if setup.eval_warmup_s is None:
        start0 = 0.0
    else:
        start0 = max(0.0, math.floor((t_split - setup.eval_warmup_s) / step + 1e-9) * step)
    ev = src.window(start0, None) if start0 > 0 else src
    return {
        "tune": (tune, float(setup.tune_warmup_s), t_split),
        "eval": (ev, t_split - start0, t_split),
    }


def _set_path(d: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    cur = d
    for p in parts[:-1]:
        nxt = cur.get(p)
        if nxt is None:
            nxt = {}
            cur[p] = nxt
        if not isinstance(nxt, dict):
            raise SweepError(f"parameter {path!r}: {p!r} is not a section")
        cur = nxt
    cur[parts[-1]] = value


def workload_with(workload: Any, params: Mapping[str, Any], spot: bool) -> Any:
    """The workload with policy-spec overrides (dotted paths) applied; spot off unless
    `spot` (or a `pools.spot_enabled` parameter) turns it on. Validated like any spec."""
    from autoscaler.config import Workload

    data = workload.model_dump(mode="json", by_alias=True, exclude_none=True)
    policy = data["spec"]["policy"]
    _set_path(policy, "pools.spot_enabled", bool(spot))
    for k, v in params.items():
        _set_path(policy, k, v)
    return Workload.model_validate(data)


def default_baseline_kwargs(name: str, prep: Any) -> dict[str, Any]:
    """Constructor arguments of a baseline at the defaults `simulator.cli.compare` uses."""
    from simulator.cli import baseline_policies

    if name not in ("hpa", "keda", "kpa"):
        raise SweepError(f"unknown baseline {name!r}; known: hpa, keda, kpa")
    (b,) = baseline_policies(
        prep.workload, prep.profile, prep.mean_input_tokens, prep.mean_output_tokens, 1, [name]
    )
    if name == "hpa":
        return {"metric": b.metric, "target": b.target}
    if name == "keda":
        return {"metric": b.metric, "target": b.target, "min_replica_count": b.min_replica_count}
    return {"target": b.target}


def build_policy(name: str, params: Mapping[str, Any], prep: Any, spot: bool) -> tuple[Any, Any]:
    """(policy, workload) for a policy name and its parameters."""
    if name == "predictive":
        from policies import PredictivePolicy

        return PredictivePolicy(), workload_with(prep.workload, params, spot)
    from policies.baselines import HPABaseline, KEDABaseline, KPABaseline

    classes = {"hpa": HPABaseline, "keda": KEDABaseline, "kpa": KPABaseline}
    kwargs = default_baseline_kwargs(name, prep)
    kwargs.update(params)
    try:
        policy = classes[name](**kwargs)
    except TypeError as e:
        raise SweepError(f"{name}: bad parameter: {e}") from e
    # baselines run one on-demand pool; the workload keeps its spec
    return policy, workload_with(prep.workload, {}, False)


def sim_config(setup: SweepSetup, mode: str, eval_start_s: float) -> Any:
    from simulator.cluster import ClusterConfig
    from simulator.engine import SimConfig

    extra: dict[str, Any] = {}
    if setup.fluid_step_s is not None:
        extra["fluid_step_s"] = setup.fluid_step_s
    return SimConfig(
        poll_interval_s=setup.poll_interval_s,
        scrape_interval_s=setup.scrape_interval_s,
        mode=mode,  # type: ignore[arg-type]
        eval_start_s=eval_start_s,
        cluster=ClusterConfig(**dict(setup.cluster)),
        **extra,
    )


def window_usage(run: Any, start_s: float, end_s: float) -> dict[str, float]:
    """GPU-hours and cost of the replicas provisioned in each pool over [start_s, end_s),
    from the run's cluster timeline (desired replicas per pool, sampled; each sample holds
    until the next)."""
    tl = run.timeline
    t = np.asarray(tl["t_s"], dtype=np.float64)
    if t.size == 0:
        return {"gpu_hours": math.nan, "cost_usd": math.nan}
    step = float(np.median(np.diff(t))) if t.size > 1 else run.poll_interval_s
    t_next = np.concatenate([t[1:], [t[-1] + step]])
    lo = np.clip(t, start_s, end_s)
    hi = np.clip(t_next, start_s, end_s)
    dur = np.maximum(hi - lo, 0.0)
    c = run.cluster
    gpu_s = 0.0
    cost = 0.0
    by_pool: dict[str, float] = {}
    for pool in ("spot", "on_demand", "warm"):
        col = tl.get(f"desired_{pool}")
        if col is None:
            continue
        rep_s = float(np.sum(np.asarray(col, dtype=np.float64) * dur))
        by_pool[pool] = rep_s * c.gpus_per_replica / 3600.0
        gpu_s += rep_s * c.gpus_per_replica
        cost += rep_s / 3600.0 * c.price_usd_per_replica_hour(pool)
    out = {"gpu_hours": gpu_s / 3600.0, "cost_usd": cost}
    out.update({f"gpu_hours_{k}": v for k, v in by_pool.items()})
    return out


def oracle_window(oracle: Any, run: Any, start_s: float, end_s: float) -> dict[str, float]:
    """The oracle's GPU-hours and cost restricted to ticks starting in [start_s, end_s)."""
    tl = oracle.replicas_timeline
    t = np.asarray(tl["t_s"], dtype=np.float64)
    sel = (t >= start_s - 1e-9) & (t < end_s - 1e-9)
    c = run.cluster
    od_s = float(np.sum(tl["on_demand"][sel])) * oracle.dt_s
    sp_s = float(np.sum(tl["spot"][sel])) * oracle.dt_s
    return {
        "gpu_hours": (od_s + sp_s) * c.gpus_per_replica / 3600.0,
        "cost_usd": (
            od_s * c.price_usd_per_replica_hour("on_demand")
            + sp_s * c.price_usd_per_replica_hour("spot")
        )
        / 3600.0,
        "starts": float(oracle.starts),
        "method": oracle.method,
    }


def run_job(setup: SweepSetup, job: Job) -> dict[str, Any]:
    """Simulate one job and return its numbers (module docstring)."""
    from simulator.engine import oracle_for, simulate
    from simulator.report import LatencyTargets, build_report

    prep = prepared(setup)
    src, report_start_s, t_split = halves(setup)[job.half]
    policy, workload = build_policy(job.policy, job.params, prep, setup.spot)
    cfg = sim_config(setup, prep.mode, report_start_s)
    itl_ms = None
    if prep.itl_target_s is not None and workload.spec.policy.slo.metric != "itl":
        itl_ms = prep.itl_target_s * 1000.0
    wall0 = time.perf_counter()
    run = simulate(
        src, workload, policy, cfg, profile=prep.profile, seed=setup.seed, itl_slo_ms=itl_ms
    )
    targets = LatencyTargets.for_workload(workload, itl_s=prep.itl_target_s)
    rep = build_report(run, None, targets)
    use = window_usage(run, report_start_s, run.end_s)
    out: dict[str, Any] = {
        "policy": job.policy,
        "params": dict(job.params),
        "half": job.half,
        "slo_attainment": rep.slo_attainment,
        "p95_latency_s": rep.p95_latency_s,
        "p99_latency_s": rep.p99_latency_s,
        "requests": rep.requests,
        "dropped": rep.dropped,
        "scale_events": rep.scale_events,
        "seconds_under_capacity": rep.seconds_under_capacity,
        "interruptions": rep.interruptions,
        "gpu_hours_run": rep.gpu_hours,
        "cost_usd_run": rep.cost_usd,
        "window_s": [report_start_s, run.end_s],
        "wall_s": time.perf_counter() - wall0,
        **use,
    }
    if job.with_oracle:
        # the on-demand oracle has the fewest GPU-hours of any schedule covering r(t); with
        # spot the cheapest schedule (what cost is measured against) is solved as well
        o = oracle_for(run, spot=False)
        out["oracle"] = oracle_window(o, run, report_start_s, run.end_s)
        if setup.spot:
            o_spot = oracle_for(run)
            out["oracle"]["spot"] = oracle_window(o_spot, run, report_start_s, run.end_s)
        out["oracle"]["capacity_rps_per_replica"] = run.capacity_rps
        out["oracle"]["peak_required_replicas"] = int(run.required.max(initial=0))
        out["oracle"]["split_s"] = t_split
    return out


def oracle_cost_usd(oracle: Mapping[str, Any]) -> float:
    """The oracle cost a policy's cost is measured against: the spot oracle's when the sweep
    lets the policy use spot, else the on-demand oracle's (USD)."""
    sp = oracle.get("spot")
    return float(sp["cost_usd"] if sp else oracle["cost_usd"])


def _json_safe(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_json_safe(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


# -- executors ------------------------------------------------------------------------------------


def _run_local(
    setup: SweepSetup,
    jobs: Sequence[Job],
    workers: int,
    on_done: Callable[[int, dict[str, Any]], None],
) -> None:
    import multiprocessing

    if workers <= 1:
        for i, job in enumerate(jobs):
            on_done(i, run_job(setup, job))
        return
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=min(workers, len(jobs)),
        mp_context=ctx,
        initializer=exit_with_parent,
        initargs=(os.getpid(),),
    ) as pool:
        futures: dict[Future[dict[str, Any]], int] = {
            pool.submit(run_job, setup, job): i for i, job in enumerate(jobs)
        }
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in done:
                on_done(futures[f], f.result())


def exit_with_parent(parent_pid: int, poll_s: float = 1.0) -> None:
    """Pool-worker initializer: end this worker when the sweep that started it is gone.

    A sweep killed by a signal to its own PID (a job runner's SIGTERM, `kill`) cannot shut
    its pool down, and a worker would otherwise finish the simulation it started, minutes
    of CPU for nobody. A daemon thread notices the re-parenting within `poll_s`.
    """

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def import_ray() -> Any:
    """The `ray` module, or SweepError with the install hint when it is missing."""
    try:
        import ray
    except ImportError as e:
        raise RayMissing(RAY_INSTALL_HINT) from e
    return ray


class RayMissing(SweepError):
    """Ray was asked for but is not installed."""


def _run_ray(
    setup: SweepSetup,
    jobs: Sequence[Job],
    address: str,
    on_done: Callable[[int, dict[str, Any]], None],
) -> None:
    ray = import_ray()
    if not ray.is_initialized():
        ray.init(address=address)
    remote = ray.remote(run_job)
    setup_ref = ray.put(setup.with_absolute_paths())
    refs = {remote.remote(setup_ref, job): i for i, job in enumerate(jobs)}
    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        for r in done:
            on_done(refs[r], ray.get(r))


# -- the sweep ------------------------------------------------------------------------------------


@dataclass
class PolicySweep:
    """One policy's sweep: every point per half, the frontiers, its choice."""

    name: str
    grid: Any
    settings: list[dict[str, Any]]
    points: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    chosen: int = -1

    def frontier(self, half: str, x_key: str) -> list[int]:
        return pareto_frontier(self.points.get(half, []), x_key=x_key)

    def chosen_eval(self) -> dict[str, Any] | None:
        for p in self.points.get("eval", []):
            if p["params"] == self.settings[self.chosen]:
                return p
        return None


@dataclass
class SweepResult:
    setup: SweepSetup
    attainment_goal: float
    objective: str
    policies: dict[str, PolicySweep]
    oracle: dict[str, dict[str, Any]]
    info: dict[str, Any]

    def comparisons(self) -> dict[str, Any]:
        """Eval-half ratios of the predictive policy's chosen setting against the oracle and
        each baseline at equal attainment: the baseline's cheapest eval point reaching the
        predictive policy's eval attainment, and its frontier interpolated to exactly that
        attainment (`interpolated_at_attainment`); None when no point reaches it."""
        pred = self.policies.get("predictive")
        if pred is None or pred.chosen < 0:
            return {}
        ours = pred.chosen_eval()
        if ours is None:
            return {}
        out: dict[str, Any] = {
            "predictive": {k: ours[k] for k in ("slo_attainment", "gpu_hours", "cost_usd")}
        }
        o = self.oracle.get("eval")
        if o:
            out["gpu_hours_over_oracle"] = ours["gpu_hours"] / o["gpu_hours"]
            out["cost_over_oracle"] = ours["cost_usd"] / oracle_cost_usd(o)
        for name, ps in self.policies.items():
            if name == "predictive":
                continue
            pts = ps.points.get("eval", [])
            same = at_equal_attainment(pts, float(ours["slo_attainment"]), "gpu_hours")
            interp = interpolated_at_attainment(pts, float(ours["slo_attainment"]), "gpu_hours")
            out[name] = {
                "interpolated_gpu_hours": interp,
                "predictive_gpu_hours_ratio_interpolated": (
                    None if interp is None else ours["gpu_hours"] / interp
                ),
                "at_equal_attainment": None
                if same is None
                else {
                    "params": same["params"],
                    "slo_attainment": same["slo_attainment"],
                    "gpu_hours": same["gpu_hours"],
                    "predictive_gpu_hours_ratio": ours["gpu_hours"] / same["gpu_hours"],
                },
                "best_eval_attainment": max(
                    (float(p["slo_attainment"]) for p in pts), default=math.nan
                ),
            }
        return out

    def to_dict(self) -> dict[str, Any]:
        pol: dict[str, Any] = {}
        for name, ps in self.policies.items():
            entry: dict[str, Any] = {
                "grid": ps.grid,
                "chosen_params": ps.settings[ps.chosen] if ps.chosen >= 0 else None,
                "chosen_eval": ps.chosen_eval(),
            }
            for half, pts in ps.points.items():
                entry[half] = {
                    "points": pts,
                    "frontier_cost": ps.frontier(half, "cost_usd"),
                    "frontier_gpu_hours": ps.frontier(half, "gpu_hours"),
                }
            pol[name] = entry
        safe: dict[str, Any] = _json_safe(
            {
                "setup": asdict(self.setup),
                "attainment_goal": self.attainment_goal,
                "objective": self.objective,
                "oracle": self.oracle,
                "policies": pol,
                "comparisons": self.comparisons(),
                **self.info,
            }
        )
        return safe


def run_sweep(
    setup: SweepSetup,
    grids: Mapping[str, Any],
    policies: Sequence[str] = SWEEP_POLICIES,
    *,
    attainment_goal: float = 99.5,
    objective: str = "cost_usd",
    workers: int | None = None,
    ray_address: str | None = None,
    eval_all: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> SweepResult:
    """Run the protocol of the module docstring and return every point.

    grids: {policy: {parameter: [values]}} for the policies named in `policies`;
    workers: processes (None: os.cpu_count(); 1 runs in this process);
    progress(phase, done, total) is called after each finished run.
    """
    if objective not in ("cost_usd", "gpu_hours"):
        raise SweepError(f"objective must be cost_usd or gpu_hours; found {objective!r}")
    unknown = [p for p in policies if p not in SWEEP_POLICIES]
    if unknown or not policies:
        raise SweepError(
            f"--policies: unknown {', '.join(unknown) or '(none given)'}; known: "
            + ", ".join(SWEEP_POLICIES)
        )
    prepared(setup)
    halves(setup)  # fail early on a bad split
    n_workers = workers if workers is not None else (os.cpu_count() or 1)
    sweeps = {
        name: PolicySweep(name, grids.get(name, {}), expand_grid(grids.get(name, {})))
        for name in policies
    }
    oracle: dict[str, dict[str, Any]] = {}
    wall0 = time.perf_counter()

    def execute(phase: str, jobs: list[Job]) -> list[dict[str, Any]]:
        results: list[dict[str, Any] | None] = [None] * len(jobs)
        count = 0

        def done(i: int, res: dict[str, Any]) -> None:
            nonlocal count
            results[i] = res
            count += 1
            if progress is not None:
                progress(phase, count, len(jobs))

        if ray_address:
            _run_ray(setup, jobs, ray_address, done)
        else:
            _run_local(setup, jobs, n_workers, done)
        return [r for r in results if r is not None]

    # 1. every point on the tune half (the oracle rides with the first job)
    tune_jobs = [Job(name, s, "tune") for name, ps in sweeps.items() for s in ps.settings]
    tune_jobs[0] = replace(tune_jobs[0], with_oracle=True)
    for job, res in zip(tune_jobs, execute("tune", tune_jobs), strict=True):
        if "oracle" in res:
            oracle["tune"] = res.pop("oracle")
        sweeps[job.policy].points.setdefault("tune", []).append(res)
    # 2. choose per policy
    for ps in sweeps.values():
        ps.chosen = choose_setting(ps.points["tune"], attainment_goal, objective)
    # 3. eval half: the chosen settings, or every point
    eval_jobs = [
        Job(name, s, "eval")
        for name, ps in sweeps.items()
        for k, s in enumerate(ps.settings)
        if eval_all or k == ps.chosen
    ]
    eval_jobs[0] = replace(eval_jobs[0], with_oracle=True)
    for job, res in zip(eval_jobs, execute("eval", eval_jobs), strict=True):
        if "oracle" in res:
            oracle["eval"] = res.pop("oracle")
        sweeps[job.policy].points.setdefault("eval", []).append(res)
    prep = prepared(setup)
    info = {
        "trace": Path(setup.trace).name,
        "scenario": prep.workload.spec.policy.scenario.value,
        "mode": prep.mode,
        "notes": list(prep.notes),
        "capacity_rps_per_replica": float(prep.workload.spec.policy.capacity.rps_per_replica),
        "wall_s": time.perf_counter() - wall0,
        "workers": 0 if ray_address else n_workers,
        "ray_address": ray_address,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip()
        + f", {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    return SweepResult(setup, attainment_goal, objective, sweeps, oracle, info)


# -- plot -----------------------------------------------------------------------------------------

_COLORS = {"predictive": "#c44e52", "hpa": "#4c72b0", "keda": "#55a868", "kpa": "#8172b2"}
_MISS_FLOOR_PCT = 0.01


def plot_frontier(result: SweepResult, path: str | Path, x_max: float = 3.0) -> Path:
    """Two panels, SLO misses (log, fewer is up) against cost and against GPU-hours (both
    relative to the oracle): every point of every policy on the eval half when it has them
    (else tune), its Pareto frontier as a line, the chosen setting circled. Points beyond
    `x_max` times the oracle sit on the right edge as triangles. PNG, 100 dpi."""
    from matplotlib.ticker import FuncFormatter

    from simulator.report import _plt, _save

    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4), sharey=True)
    goal_miss = 100.0 - result.attainment_goal
    halves_used: set[str] = set()
    y_top = goal_miss
    for ax, key, label in (
        (axes[0], "cost_usd", "cost / oracle cost"),
        (axes[1], "gpu_hours", "GPU-hours / oracle GPU-hours"),
    ):
        for name, ps in result.policies.items():
            half = "eval" if len(ps.points.get("eval", [])) > 1 else "tune"
            halves_used.add(half)
            pts = ps.points.get(half, [])
            oh = result.oracle.get(half, {})
            o = (oracle_cost_usd(oh) if key == "cost_usd" else oh.get(key)) if oh else None
            denom = float(o) if o else 1.0
            xs = np.array([float(p[key]) / denom for p in pts])
            ys = np.array([max(100.0 - float(p["slo_attainment"]), _MISS_FLOOR_PCT) for p in pts])
            y_top = max(y_top, float(ys.max(initial=0.0)))
            color = _COLORS.get(name, "grey")
            inside = xs <= x_max
            ax.scatter(xs[inside], ys[inside], s=14, color=color, alpha=0.45, lw=0)
            ax.scatter(
                np.full(int((~inside).sum()), x_max), ys[~inside], s=22, marker=">", color=color
            )
            fr = [i for i in ps.frontier(half, key) if inside[i]]
            ax.plot(xs[fr], ys[fr], color=color, lw=1.3, label=f"{name} ({half})")
            ch = ps.chosen_eval() if half == "eval" else None
            if ch is not None:
                cx = min(float(ch[key]) / denom, x_max)
                cy = max(100.0 - float(ch["slo_attainment"]), _MISS_FLOOR_PCT)
                ax.scatter([cx], [cy], s=80, facecolors="none", edgecolors=color, lw=1.5)
        ax.axhline(goal_miss, color="grey", ls="--", lw=0.8)
        ax.axvline(1.0, color="black", ls=":", lw=0.8)
        ax.set_yscale("log")
        ax.set_xlim(0.0, x_max * 1.03)
        ax.set_xlabel(label + f" (points past {x_max:g}x on the edge)", fontsize=9)
        ax.grid(alpha=0.3, which="both")
        ax.tick_params(labelsize=8)
    axes[0].set_ylim(min(100.0, y_top * 1.5), _MISS_FLOOR_PCT * 0.8)  # inverted: fewer is up
    axes[0].yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g} %"))
    axes[0].set_ylabel("requests missing the SLO (log; fewer is up)", fontsize=9)
    handles, labels = axes[1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    halves_txt = " / ".join(sorted(halves_used))
    fig.suptitle(
        f"{result.info.get('trace', '')} ({halves_txt} half): each point one setting\n"
        f"dashed {goal_miss:g} % goal, dotted oracle, circled the setting chosen on the tune half",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0.05, 1, 0.92))
    return Path(_save(fig, path))


# -- table ----------------------------------------------------------------------------------------


def summary_rows(result: SweepResult) -> list[tuple[list[str], str]]:
    """One (row under SUMMARY_HEADER, chosen parameters) per policy: the eval-half numbers
    of the setting chosen on the tune half, and that setting."""
    rows = []
    o = result.oracle.get("eval", {})
    for name, ps in result.policies.items():
        ch = ps.chosen_eval()
        if ch is None:
            continue
        params = ", ".join(f"{k}={v}" for k, v in ps.settings[ps.chosen].items()) or "defaults"
        og = o.get("gpu_hours")
        oc = oracle_cost_usd(o) if o else None
        rows.append(
            (
                [
                    name,
                    f"{ch['slo_attainment']:.2f}",
                    f"{ch['p95_latency_s']:.3f}",
                    f"{ch['gpu_hours']:.2f}",
                    f"{ch['cost_usd']:.2f}",
                    f"{ch['gpu_hours'] / og:.2f}" if og else "-",
                    f"{ch['cost_usd'] / oc:.2f}" if oc else "-",
                ],
                params,
            )
        )
    return rows


SUMMARY_HEADER = [
    "policy",
    "eval SLO %",
    "p95 latency s",
    "GPU-h",
    "cost $",
    "GPU-h / oracle",
    "cost / oracle",
]


# -- command line ---------------------------------------------------------------------------------


def register(subparsers: Any) -> None:
    """Add `sweep` to the gpu-autoscaler command line."""
    p = subparsers.add_parser(
        "sweep",
        help="tune policies on one half of a trace, evaluate on the other",
        description=(
            "Run a parameter grid per policy on the first part of a trace, choose each "
            "policy's cheapest setting that meets the attainment goal, evaluate it on the "
            "rest; print the frontier of SLO attainment vs cost."
        ),
    )
    p.add_argument("--trace", required=True, help="trace file (Azure, ServeGen, ...)")
    p.add_argument("--format", default="auto", help="trace format (default: auto-detect)")
    p.add_argument("--scenario", default="chat", help="chat, rag, streaming or batch")
    p.add_argument("--config", default=None, help="AutoscalingPolicy YAML (first workload)")
    p.add_argument("--workload", default=None, help="namespace/name in --config")
    p.add_argument("--profile", default=None, help="service profile JSON")
    p.add_argument("--grid", default=None, help="grid YAML {policy: {param: [values]}}")
    p.add_argument("--policies", default=",".join(SWEEP_POLICIES))
    p.add_argument("--workers", type=int, default=None, help="processes (default: CPU count)")
    p.add_argument("--ray-address", default=None, help="run on a Ray cluster (needs ray)")
    p.add_argument("--tune-fraction", type=float, default=0.5)
    p.add_argument("--tune-warmup", type=float, default=0.0, help="s of the tune half unreported")
    p.add_argument(
        "--eval-warmup",
        type=float,
        default=None,
        help="start the eval run this many s before the split (default: at the trace start)",
    )
    p.add_argument("--attainment-goal", type=float, default=99.5, help="percent of requests")
    p.add_argument("--objective", choices=("cost_usd", "gpu_hours"), default="cost_usd")
    p.add_argument(
        "--eval-all", action="store_true", help="evaluate every point, not just the chosen"
    )
    p.add_argument("--spot", action="store_true", help="let the predictive policy use spot")
    p.add_argument("--json", default=None, help="write every point and frontier here")
    p.add_argument("--plot", default=None, help="write the frontier PNG here")
    p.add_argument("--mode", choices=("request", "aggregate"), default=None)
    p.add_argument("--rate-scale", type=float, default=1.0, help="multiply the load by X")
    p.add_argument("--peak-replicas", type=float, default=None, help="scale to this peak need")
    p.add_argument("--start", type=float, default=None, help="trace window start, s")
    p.add_argument("--duration", type=float, default=None, help="trace window length, s")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--poll-interval", type=float, default=5.0, help="control tick, s")
    p.add_argument("--scrape-interval", type=float, default=15.0, help="Prometheus scrape, s")
    p.add_argument("--fluid-step", type=float, default=None, help="aggregate-mode step, s")
    p.set_defaults(func=cmd_sweep)


def _setup_from_args(args: argparse.Namespace) -> SweepSetup:
    return SweepSetup(
        trace=str(args.trace),
        format=args.format,
        scenario=args.scenario,
        config=args.config,
        workload=args.workload,
        profile=args.profile,
        mode=args.mode,
        seed=args.seed,
        rate_scale=args.rate_scale,
        peak_replicas=args.peak_replicas,
        start_s=args.start,
        duration_s=args.duration,
        poll_interval_s=args.poll_interval,
        scrape_interval_s=args.scrape_interval,
        fluid_step_s=args.fluid_step,
        tune_fraction=args.tune_fraction,
        tune_warmup_s=args.tune_warmup,
        eval_warmup_s=args.eval_warmup,
        spot=bool(args.spot),
    )


def resolve_grids(setup: SweepSetup, names: Iterable[str], grid_file: str | None) -> dict[str, Any]:
    """Built-in grids for `names`, overridden per policy by the grid file's entries."""
    prep = prepared(setup)
    cap = float(prep.workload.spec.policy.capacity.rps_per_replica)
    inflight = float(
        prep.profile.concurrency_for_rps(cap, prep.mean_input_tokens, prep.mean_output_tokens)
    )
    defaults = {
        "keda": float(default_baseline_kwargs("keda", prep)["target"]),
        "inflight": inflight,
    }
    grids = builtin_grids(cap, defaults)
    if grid_file:
        grids.update(load_grid_file(grid_file))
    return {n: grids.get(n, {}) for n in names}


def cmd_sweep(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from policies.spec import SpecError
    from simulator.cli import UsageError
    from simulator.traces import TraceError

    console = Console()
    err = Console(stderr=True)
    try:
        if args.ray_address:
            import_ray()
        names = [n.strip() for n in args.policies.split(",") if n.strip()]
        setup = _setup_from_args(args)
        grids = resolve_grids(setup, names, args.grid)
        for note in prepared(setup).notes:
            console.print(note, highlight=False)
        with Progress(
            TextColumn("[bold]{task.description:<5}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as bar:
            tasks: dict[str, Any] = {}

            def progress(phase: str, done: int, total: int) -> None:
                if phase not in tasks:
                    tasks[phase] = bar.add_task(phase, total=total)
                bar.update(tasks[phase], completed=done, total=total)

            result = run_sweep(
                setup,
                grids,
                names,
                attainment_goal=args.attainment_goal,
                objective=args.objective,
                workers=args.workers,
                ray_address=args.ray_address,
                eval_all=args.eval_all,
                progress=progress,
            )
    except RayMissing as e:
        err.print(f"[red]error:[/red] {escape(str(e))}", highlight=False, soft_wrap=True)
        return EXIT_USAGE
    except (SweepError, UsageError, TraceError, SpecError, FileNotFoundError, ValueError) as e:
        err.print(f"[red]error:[/red] {escape(str(e))}", highlight=False, soft_wrap=True)
        return EXIT_USAGE
    o = result.oracle.get("eval", {})
    table = Table(
        title=(
            f"{result.info['trace']}: eval half, goal {result.attainment_goal:g} % of requests "
            f"in SLO; oracle {o.get('gpu_hours', math.nan):.2f} GPU-h, "
            f"${o.get('cost_usd', math.nan):.2f}"
        )
    )
    # the chosen parameters go below the table, one line per policy: as a column they would
    # squeeze every figure on an 80-column console (or a log file)
    rows = summary_rows(result)
    names = [row[0] for row, _ in rows]
    table.add_column(SUMMARY_HEADER[0], no_wrap=True, min_width=max(map(len, names), default=0))
    for h in SUMMARY_HEADER[1:]:
        table.add_column(h, justify="right")
    for row, _ in rows:
        table.add_row(*row)
    console.print(table)
    console.print("chosen on the tune half:", highlight=False)
    for row, params in rows:
        console.print(f"  {row[0]}: {escape(params)}", highlight=False, soft_wrap=True)
    if args.json:
        p = Path(args.json)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(result.to_dict(), indent=1, allow_nan=False) + "\n")
        console.print(f"wrote {p}")
    if args.plot:
        console.print(f"wrote {plot_frontier(result, args.plot)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpu-autoscaler")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
