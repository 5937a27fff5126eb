"""`gpu-autoscaler simulate` and `gpu-autoscaler compare`: replay a trace against policies.

    gpu-autoscaler simulate --trace F --policy predictive [--scenario chat] [--config spec.yaml]
    gpu-autoscaler compare  --trace F [--scenario chat] [--config spec.yaml] [--json out.json]
                            [--plots DIR]

`compare` runs the scenario's predictive policy and four baselines on the same trace, seed and
cluster, then prints a table (cost relative to the oracle of simulator.oracle) and writes JSON
and plots on request.

Default workloads (`default_workload`) per scenario, sized from the service profile for the
trace's mean prompt / output tokens:

| scenario  | SLO (P95)     | SLO class | ITL target (report) | capacity per replica         |
|-----------|---------------|-----------|---------------------|------------------------------|
| chat      | TTFT <= 0.5 s | tight     | 25 ms               | capacity_rps at ITL 25 ms    |
| rag       | TTFT <= 1.0 s | moderate  | 50 ms               | capacity_rps at ITL 50 ms    |
| streaming | ITL <= 30 ms  | moderate  | 30 ms               | capacity_rps at ITL 30 ms    |
| batch     | e2e <= 600 s  | flexible  | none                | capacity_rps (engine limits) |

Every default spec sets rps_per_replica = that capacity, queue_per_replica and
streams_per_replica = the in-flight requests per replica at that rate
(`ServiceProfile.concurrency_for_rps`), tokens_per_s_per_replica = capacity x (prompt +
output tokens); target utilization 0.8; min 1, max 200 replicas; Deployments for the
on-demand, spot and warm pools.

Baselines (`baseline_policies`), at their upstream defaults, one on-demand pool, targets
derived from the spec's capacity per replica C (rps_per_replica) and utilization u:

- hpa:    HPABaseline(metric="rps", target=C*u)  (AverageValue requests/s per replica)
- keda:   KEDABaseline(metric="queue", target=C*u*W, min_replica_count=spec min) with W
          = max(1 s, queueing budget): the budget is the TTFT target for a TTFT SLO, the
          e2e target minus the unloaded service time for an e2e SLO, none (1 s) for an ITL
          SLO (a replica drains C*u*W waiting requests in W). An empty queue proposes zero
          replicas, so this baseline sits at its minimum until a queue builds.
- kpa:    KPABaseline(container_concurrency=concurrency_for_rps(C))  (target 70 % of it)
- static: StaticPolicy(replicas=max over the trace of the oracle's required r(t)), i.e. sized
          by hand for the peak minute with perfect knowledge

Trace and spec errors print one message and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autoscaler.config import Workload
from policies.spec import Scenario, SpecError

EXIT_USAGE = 2

POLICY_NAMES: tuple[str, ...] = ("predictive", "hpa", "keda", "kpa", "static")


@dataclass(frozen=True)
class ScenarioDefaults:
    """A scenario's default SLO, report ITL target and token means (when no trace says)."""

    slo_class: str
    metric: str
    target_s: float
    itl_target_s: float | None
    mean_input_tokens: float
    mean_output_tokens: float


SCENARIOS: dict[str, ScenarioDefaults] = {
    # token means: Azure conversation (1,155 / 211) and code (2,048 / 28) traces
    "chat": ScenarioDefaults("tight", "ttft", 0.5, 0.025, 1155.0, 211.0),
    "rag": ScenarioDefaults("moderate", "ttft", 1.0, 0.050, 2048.0, 28.0),
    "streaming": ScenarioDefaults("moderate", "itl", 0.030, 0.030, 1155.0, 211.0),
    "batch": ScenarioDefaults("flexible", "e2e", 600.0, None, 1155.0, 211.0),
}


def default_workload(
    scenario: str | Scenario,
    profile: Any = None,
    mean_input_tokens: float | None = None,
    mean_output_tokens: float | None = None,
    max_replicas: int = 200,
) -> Workload:
    """The default spec for a scenario (module docstring), capacity from `profile`
    (ServiceProfile; default: ServiceProfile.default()) at the given token means."""
    from simulator.service import ServiceProfile

    key = Scenario(scenario).value
    d = SCENARIOS[key]
    prof = profile if profile is not None else ServiceProfile.default()
    m_in = d.mean_input_tokens if mean_input_tokens is None else float(mean_input_tokens)
    m_out = d.mean_output_tokens if mean_output_tokens is None else float(mean_output_tokens)
    itl_ms = None if d.itl_target_s is None else d.itl_target_s * 1000.0
    ttft = d.target_s if d.metric == "ttft" else None
    if d.metric == "e2e":
        itl_ms = d.target_s * 1000.0 / max(m_out, 1.0)
    cap = float(prof.capacity_rps(m_in, m_out, itl_slo_ms=itl_ms, ttft_slo_s=ttft))
    if not cap > 0:
        raise ValueError(
            f"profile {prof.name!r} sustains no {key} load within its SLO at "
            f"{m_in:.0f} input / {m_out:.0f} output tokens"
        )
    inflight = float(prof.concurrency_for_rps(cap, m_in, m_out))
    spec = {
        "targets": {"on_demand": f"{key}-od", "spot": f"{key}-spot", "warm": f"{key}-warm"},
        "policy": {
            "scenario": key,
            "slo": {
                "slo_class": d.slo_class,
                "metric": d.metric,
                "target_s": d.target_s,
                "percentile": 95.0,
            },
            "min_replicas": 1,
            "max_replicas": max_replicas,
            "capacity": {
                "rps_per_replica": round(cap, 4),
                "queue_per_replica": round(inflight, 3),
                "streams_per_replica": round(inflight, 3),
                "tokens_per_s_per_replica": round(cap * (m_in + m_out), 1),
                "target_utilization": 0.8,
            },
        },
    }
    return Workload.model_validate({"namespace": "default", "name": key, "spec": spec})


def baseline_policies(
    workload: Workload,
    profile: Any,
    mean_input_tokens: float,
    mean_output_tokens: float,
    peak_required: int,
    names: Sequence[str] = ("hpa", "keda", "kpa", "static"),
) -> list[Any]:
    """The baselines at their defaults with targets derived as in the module docstring."""
    from policies.baselines import HPABaseline, KEDABaseline, KPABaseline, StaticPolicy
    from simulator.engine import capacity_at_slo, queue_budget_s

    spec = workload.spec.policy
    cap = spec.capacity.rps_per_replica
    if cap is None:
        cap = capacity_at_slo(workload, profile, mean_input_tokens, mean_output_tokens)
    u = spec.capacity.target_utilization
    out: list[Any] = []
    for name in names:
        if name == "hpa":
            out.append(HPABaseline(metric="rps", target=cap * u))
        elif name == "keda":
            budget = queue_budget_s(workload, profile, mean_input_tokens, mean_output_tokens)
            w_s = max(1.0, budget) if budget is not None else 1.0
            out.append(
                KEDABaseline(
                    metric="queue",
                    target=cap * u * w_s,
                    min_replica_count=spec.min_replicas,
                )
            )
        elif name == "kpa":
            cc = profile.concurrency_for_rps(cap, mean_input_tokens, mean_output_tokens)
            out.append(KPABaseline(container_concurrency=max(1.0, float(cc))))
        elif name == "static":
            out.append(StaticPolicy(replicas=max(1, int(peak_required))))
        else:
            raise ValueError(f"unknown baseline {name!r}; known: hpa, keda, kpa, static")
    return out


# -- command line ----------------------------------------------------------------------------


def register(subparsers: Any) -> None:
    """Add `simulate` and `compare` to the gpu-autoscaler command line."""
    sim = subparsers.add_parser(
        "simulate",
        help="replay a trace against one policy",
        description="Replay a trace against one policy on a simulated GPU cluster.",
    )
    _common_args(sim)
    sim.add_argument("--policy", choices=POLICY_NAMES, default="predictive")
    sim.set_defaults(func=cmd_simulate)
    cmp = subparsers.add_parser(
        "compare",
        help="replay a trace against the predictive policy and the baselines",
        description=(
            "Replay a trace against the scenario's predictive policy and the HPA, KEDA, "
            "Knative KPA and static baselines; report cost against the oracle."
        ),
    )
    _common_args(cmp)
    cmp.add_argument(
        "--policies",
        default=",".join(POLICY_NAMES),
        help="comma-separated subset of " + ",".join(POLICY_NAMES),
    )
    cmp.set_defaults(func=cmd_compare)


def _common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trace", required=True, help="trace file (Azure, Mooncake, BurstGPT, ...)")
    p.add_argument("--format", default="auto", help="trace format (default: auto-detect)")
    p.add_argument("--start", type=float, default=None, help="window start, seconds")
    p.add_argument("--duration", type=float, default=None, help="window length, seconds")
    p.add_argument("--speedup", type=float, default=1.0, help="replay X times faster")
    p.add_argument("--rate-scale", type=float, default=1.0, help="multiply the load by X")
    p.add_argument(
        "--peak-replicas",
        type=float,
        default=None,
        help="scale the load so its busiest minute (a rate curve: its busiest bin) needs "
        "this many replicas at the SLO (overrides --rate-scale)",
    )
    p.add_argument("--scenario", choices=[s.value for s in Scenario], default="chat")
    p.add_argument("--config", default=None, help="AutoscalingPolicy YAML (first workload)")
    p.add_argument("--workload", default=None, help="namespace/name in --config")
    p.add_argument("--profile", default=None, help="service profile JSON")
    p.add_argument(
        "--mode",
        choices=("request", "aggregate"),
        default=None,
        help="per-request or fluid simulation (default: aggregate for ServeGen windows)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--poll-interval", type=float, default=5.0, help="control tick, seconds")
    p.add_argument("--json", default=None, help="write the report as JSON here")
    p.add_argument("--plots", default=None, help="write PNG plots into this directory")
    p.add_argument("--plot-prefix", default="", help="prefix of the plot file names")


class UsageError(Exception):
    """A problem with the command's inputs: printed as one message, exit status 2."""


@dataclass
class Prepared:
    source: Any  # Trace or RateCurve
    workload: Workload
    profile: Any
    mode: str
    mean_input_tokens: float
    mean_output_tokens: float
    itl_target_s: float | None
    notes: list[str]


def _load_workload(args: argparse.Namespace) -> Workload | None:
    if args.config is None:
        return None
    from autoscaler.config import load_workloads

    result = load_workloads([args.config])
    good = result.workloads
    if args.workload is not None:
        good = [w for w in good if w.key == args.workload]
        if not good:
            bad = [e for e in result.errors if args.workload.split("/")[-1] in str(e)]
            if bad:
                raise bad[0]
            raise UsageError(f"workload {args.workload} not found in {args.config}")
    if not good:
        if result.errors:
            raise result.errors[0]
        raise UsageError(f"no workload in {args.config}")
    return good[0]


def _prepare(args: argparse.Namespace) -> Prepared:
    from simulator.service import ServiceProfile
    from simulator.traces import detect_format, load_rate_curve, load_trace

    path = Path(args.trace)
    if not path.is_file():
        raise UsageError(f"trace file not found: {path}")
    profile = ServiceProfile.load(args.profile) if args.profile else ServiceProfile.default()
    fmt = detect_format(path) if args.format == "auto" else args.format
    mode = args.mode or ("aggregate" if fmt == "servegen" else "request")
    notes: list[str] = []
    window = {"start_s": args.start, "duration_s": args.duration, "speedup": args.speedup}
    source: Any
    if fmt == "servegen" and mode == "aggregate":
        source = load_rate_curve(path, format=fmt, **window)
    else:
        source = load_trace(path, format=fmt, seed=args.seed, **window)
        skipped = getattr(source, "skipped", ())
        if skipped:
            lines = ", ".join(str(line) for line, _ in skipped[:5])
            more = ", ..." if len(skipped) > 5 else ""
            notes.append(
                f"skipped {len(skipped)} broken row(s) of {path.name} (lines {lines}{more}; "
                f"first: {skipped[0][1]})"
            )
    if len(source) == 0:
        raise UsageError(f"{path}: nothing left to replay in the chosen window")
    if hasattr(source, "arrival_s"):
        m_in = float(np.mean(source.input_tokens))
        m_out = float(np.mean(source.output_tokens))
    else:
        m_in, m_out = float(source.mean_input_tokens), float(source.mean_output_tokens)
    workload = _load_workload(args)
    scenario = args.scenario if workload is None else workload.spec.policy.scenario.value
    if workload is None:
        workload = default_workload(scenario, profile, m_in, m_out)
    itl_t = SCENARIOS[scenario].itl_target_s
    scale = args.rate_scale
    if args.peak_replicas is not None:
        from simulator.engine import capacity_at_slo

        if not args.peak_replicas > 0:
            raise UsageError(f"--peak-replicas must be > 0; found {args.peak_replicas}")
        cap = capacity_at_slo(workload, profile, m_in, m_out, _itl_ms(itl_t, workload))
        peak = _peak_minute_rps(source)
        if not peak > 0:
            raise UsageError(f"{path}: the trace has no load to scale")
        scale = args.peak_replicas * cap / peak
        what = "minute" if hasattr(source, "arrival_s") else f"{source.bin_s:g} s bin"
        notes.append(
            f"rate scale {scale:.4g}: busiest {what} {peak:.1f} req/s -> "
            f"{peak * scale:.1f} req/s = {args.peak_replicas:g} replicas of {cap:.2f} req/s"
        )
    if scale != 1.0:
        if hasattr(source, "arrival_s"):
            source = source.scale_rate(scale, seed=args.seed)
        else:
            source = source.scale_rate(scale)
    return Prepared(source, workload, profile, mode, m_in, m_out, itl_t, notes)


def _itl_ms(itl_target_s: float | None, workload: Workload) -> float | None:
    if workload.spec.policy.slo.metric == "itl" or itl_target_s is None:
        return None
    return itl_target_s * 1000.0


def _peak_minute_rps(source: Any) -> float:
    if hasattr(source, "arrival_s"):
        _, rate = source.rate_per_bin(60.0)
        return float(rate.max()) if rate.size else 0.0
    return float(source.peak_rate_rps)


def _build_policy(name: str, prep: Prepared, peak_required: int) -> Any:
    if name == "predictive":
        from policies import PredictivePolicy

        return PredictivePolicy()
    return baseline_policies(
        prep.workload,
        prep.profile,
        prep.mean_input_tokens,
        prep.mean_output_tokens,
        peak_required,
        names=[name],
    )[0]


def _run_all(
    prep: Prepared, names: Sequence[str], args: argparse.Namespace, console: Any
) -> tuple[list[Any], Any]:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from simulator.engine import SimConfig, demand_for, oracle_for, simulate

    cfg = SimConfig(poll_interval_s=args.poll_interval, mode=prep.mode)  # type: ignore[arg-type]
    itl_ms = _itl_ms(prep.itl_target_s, prep.workload)
    # the static baseline's size: the peak of the oracle's required replicas
    dm = demand_for(prep.source, prep.workload, prep.profile, cfg, itl_ms)
    peak_required = int(dm.required.max(initial=1))
    src = prep.source
    runs = []
    with Progress(
        TextColumn("[bold]{task.description:<11}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
        disable=not console.is_terminal,
    ) as bar:
        tasks = {n: bar.add_task(n, total=1.0) for n in names}
        for name in names:
            task = tasks[name]

            def report(done_s: float, total_s: float, task: Any = task) -> None:
                bar.update(task, completed=done_s / total_s if total_s > 0 else 1.0)

            policy = _build_policy(name, prep, peak_required)
            run = simulate(
                src,
                prep.workload,
                policy,
                cfg,
                profile=prep.profile,
                seed=args.seed,
                progress=report,
                itl_slo_ms=itl_ms,
            )
            bar.update(task, completed=1.0)
            runs.append(run)
    return runs, (oracle_for(runs[0]), oracle_for(runs[0], spot=False))


def _finish(
    prep: Prepared, runs: list[Any], oracles: Any, args: argparse.Namespace, console: Any
) -> None:
    from simulator.report import (
        CompareReport,
        LatencyTargets,
        build_report,
        render_table,
        write_plots,
    )

    targets = LatencyTargets.for_workload(prep.workload, itl_s=prep.itl_target_s)
    oracle, hours_oracle = oracles
    reports = [build_report(r, oracle, targets, hours_oracle) for r in runs]
    rep = CompareReport(
        trace=runs[0].trace,
        scenario=prep.workload.spec.policy.scenario.value,
        mode=prep.mode,
        oracle=oracle,
        policies=reports,
        targets=targets,
        oracle_on_demand=hours_oracle,
        info={
            "seed": args.seed,
            "workload": prep.workload.key,
            "duration_s": runs[0].end_s - runs[0].start_s,
            "capacity_rps_per_replica": runs[0].capacity_rps,
            "peak_required_replicas": int(runs[0].required.max(initial=0)),
            "notes": list(prep.notes),
        },
    )
    console.print(render_table(rep))
    if args.json:
        path = rep.write_json(args.json)
        console.print(f"wrote {path}")
    if args.plots:
        for path in write_plots(runs, rep, args.plots, prefix=args.plot_prefix):
            console.print(f"wrote {path}")


def _guarded(body: Callable[[argparse.Namespace, Any], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from rich.console import Console

        from simulator.traces import TraceError

        console = Console(stderr=False)
        if not console.is_terminal:  # piped or captured: do not squeeze the table to 80
            console = Console(stderr=False, width=160)
        err = Console(stderr=True)
        if not err.is_terminal:
            err = Console(stderr=True, width=160)
        try:
            return body(args, console)
        except (UsageError, TraceError, SpecError, FileNotFoundError) as e:
            err.print(f"[red]error:[/red] {e}", highlight=False, markup=True)
            return EXIT_USAGE
        except ValueError as e:
            # bad numbers in arguments, profiles or windows (our own validation messages)
            err.print(f"[red]error:[/red] {e}", highlight=False)
            return EXIT_USAGE

    return run


def _simulate(args: argparse.Namespace, console: Any) -> int:
    prep = _prepare(args)
    for note in prep.notes:
        console.print(note, highlight=False)
    runs, oracles = _run_all(prep, [args.policy], args, console)
    _finish(prep, runs, oracles, args, console)
    return 0


def _compare(args: argparse.Namespace, console: Any) -> int:
    names = [n.strip() for n in args.policies.split(",") if n.strip()]
    unknown = [n for n in names if n not in POLICY_NAMES]
    if unknown or not names:
        raise UsageError(
            f"--policies: unknown {', '.join(unknown) or '(none given)'}; known: "
            + ", ".join(POLICY_NAMES)
        )
    prep = _prepare(args)
    for note in prep.notes:
        console.print(note, highlight=False)
    runs, oracles = _run_all(prep, names, args, console)
    _finish(prep, runs, oracles, args, console)
    return 0


cmd_simulate = _guarded(_simulate)
cmd_compare = _guarded(_compare)


def main(argv: Sequence[str] | None = None) -> int:
    """Run these subcommands without the rest of the CLI (tests, `python -m`)."""
    parser = argparse.ArgumentParser(prog="gpu-autoscaler")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
