"""Reports on simulated runs: per-policy numbers, a rich table, JSON, and PNG plots.

`build_report(run, oracle, targets)` turns one `engine.RunResult` into a `PolicyReport`:

- requests / served / dropped: requests arriving at or after the run's eval start; dropped
  = rejected, timed out or unfinished when the run ended. Weighted (a fluid cohort in
  aggregate mode stands for many requests).
- slo_attainment: percent of requests meeting the workload's SLO metric (TTFT by default)
  at its target; dropped requests count as misses. ttft/itl/e2e_attainment likewise for
  each metric: ITL compares a request's mean inter-token gap with `targets.itl_s`, e2e its
  end-to-end time with ttft_s + (output_tokens - 1) * itl_s unless the SLO itself is e2e.
  slo_met: slo_attainment >= the SLO percentile.
- p50/p95/p99_latency_s: percentiles over served requests of the SLO's metric (seconds):
  TTFT for a TTFT SLO, end-to-end time for an e2e SLO, the mean inter-token gap for ITL.
- gpu_hours / cost_usd (and by pool): billed over the whole run, warm-up and drain tail
  included; cost_per_1k_requests_usd = cost / served * 1000; cost_over_oracle divides by
  the oracle's cost (simulator.oracle: the cheapest schedule, spot included where the
  workload has a spot pool); gpu_hours_over_oracle by the on-demand oracle's GPU-hours (the
  fewest GPU-hours any schedule covering r(t) can have; a spot schedule trades a few boots
  for price).
- scale_events: replica patches the loop made; seconds_under_capacity: poll ticks where
  ready serving replicas (spot + on-demand) were fewer than the oracle's required r(t),
  times the poll interval.

Plots are PNGs made with matplotlib's Agg backend (no display needed): timelines (the oracle
and one panel per policy), CDFs of the SLO's metric, cost vs SLO attainment. Long series are
thinned to 600 points (max per block, so peaks stay); a plot is saved at 100 dpi, or lower
(85, 70, 60) until the file is under 190 KB.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from simulator.engine import RunResult
from simulator.oracle import OracleResult

F64 = NDArray[np.float64]

# Keys every policy entry of the compare JSON carries (more may follow).
POLICY_JSON_KEYS: tuple[str, ...] = (
    "name",
    "requests",
    "dropped",
    "slo_attainment",
    "p50_latency_s",
    "p95_latency_s",
    "p99_latency_s",
    "gpu_hours",
    "cost_usd",
    "cost_per_1k_requests_usd",
    "cost_over_oracle",
    "scale_events",
)


@dataclass(frozen=True)
class LatencyTargets:
    """Targets the report checks each request against (seconds).

    slo_metric / slo_target_s / percentile: the workload's SLO; ttft_s, itl_s: per-metric
    targets (itl_s None when the workload names none: ITL and e2e attainment read NaN)."""

    slo_metric: str
    slo_target_s: float
    percentile: float
    ttft_s: float | None
    itl_s: float | None
    e2e_s: float | None = None

    @classmethod
    def for_workload(cls, run_or_workload: Any, itl_s: float | None = None) -> LatencyTargets:
        """From the workload's SLO; itl_s adds an ITL target when the SLO is not ITL."""
        w = getattr(run_or_workload, "workload", run_or_workload)
        slo = w.spec.policy.slo
        return cls(
            slo_metric=slo.metric,
            slo_target_s=float(slo.target_s),
            percentile=float(slo.percentile),
            ttft_s=float(slo.target_s) if slo.metric == "ttft" else None,
            itl_s=float(slo.target_s) if slo.metric == "itl" else itl_s,
            e2e_s=float(slo.target_s) if slo.metric == "e2e" else None,
        )


@dataclass(frozen=True)
class PolicyReport:
    """One policy's numbers on one trace (units in names; attainments in percent)."""

    name: str
    requests: float
    served: float
    dropped: float
    slo_attainment: float
    slo_met: bool
    ttft_attainment: float
    itl_attainment: float
    e2e_attainment: float
    p50_latency_s: float
    p95_latency_s: float
    p99_latency_s: float
    gpu_hours: float
    gpu_hours_by_pool: dict[str, float]
    cost_usd: float
    cost_usd_by_pool: dict[str, float]
    cost_per_1k_requests_usd: float
    cost_over_oracle: float
    gpu_hours_over_oracle: float
    scale_events: int
    seconds_under_capacity: float
    interruptions: int
    mode: str
    wall_s: float
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        out: dict[str, Any] = {k: d.pop(k) for k in POLICY_JSON_KEYS}
        out.update(d)
        safe: dict[str, Any] = _json_safe(out)
        return safe


def json_safe(x: Any) -> Any:
    """NaN/inf -> None, numpy scalars -> Python, recursively (JSON has no NaN)."""
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [json_safe(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


_json_safe = json_safe


def weighted_quantile(values: F64, weights: F64, q: float) -> float:
    """The q-quantile (0..1) of values with weights: the smallest v whose cumulative
    weight reaches q * total. NaN when there is no weight."""
    v = np.asarray(values, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    keep = np.isfinite(v) & (w > 0)
    v, w = v[keep], w[keep]
    if v.size == 0:
        return math.nan
    order = np.argsort(v, kind="stable")
    v, w = v[order], w[order]
    cum = np.cumsum(w)
    idx = int(np.searchsorted(cum, q * cum[-1] - 1e-12 * cum[-1], side="left"))
    return float(v[min(idx, v.size - 1)])


def _attainment(ok: NDArray[np.bool_], weight: F64, total: float) -> float:
    return 100.0 * float(weight[ok].sum()) / total if total > 0 else math.nan


def _under_capacity_s(run: RunResult) -> float:
    tl = run.timeline
    poll_t = tl.get("poll_t_s")
    t = tl.get("t_s")
    if poll_t is None or t is None or t.size == 0:
        return math.nan
    ready = np.zeros_like(t, dtype=np.float64)
    for pool in ("spot", "on_demand"):
        col = tl.get(f"ready_{pool}")
        if col is not None:
            ready = ready + np.asarray(col, dtype=np.float64)
    idx = np.clip(np.searchsorted(t, poll_t, side="right") - 1, 0, t.size - 1)
    ready_at = ready[idx]
    req = np.asarray(run.required, dtype=np.float64)[: poll_t.size]
    in_eval = poll_t[: req.size] >= run.eval_start_s
    short = (ready_at[: req.size] < req) & in_eval
    return float(short.sum()) * run.poll_interval_s


def build_report(
    run: RunResult,
    oracle: OracleResult | None,
    targets: LatencyTargets | None = None,
    hours_oracle: OracleResult | None = None,
) -> PolicyReport:
    """Numbers for one run (module docstring). cost_over_oracle divides by `oracle`;
    gpu_hours_over_oracle by `hours_oracle` (the on-demand oracle, fewest GPU-hours) when
    given, else by `oracle`. oracle None leaves the ratios NaN."""
    tg = targets if targets is not None else LatencyTargets.for_workload(run)
    sel = run.arrival_s >= run.eval_start_s
    w = run.weight[sel]
    dropped_mask = run.dropped[sel]
    total = float(w.sum())
    n_dropped = float(w[dropped_mask].sum())
    served = total - n_dropped
    ttft, e2e, itl = (_request_latency(run, m)[sel] for m in ("ttft", "e2e", "itl"))
    out_tok = run.output_tokens[sel]
    ok_served = ~dropped_mask
    with np.errstate(invalid="ignore"):
        ttft_ok = ok_served & (ttft <= tg.ttft_s) if tg.ttft_s is not None else None
        # single-token outputs have no inter-token gap: they meet any ITL target
        itl_ok = (
            ok_served & (~np.isfinite(itl) | (itl <= tg.itl_s)) if tg.itl_s is not None else None
        )
        if tg.e2e_s is not None:
            e2e_ok: NDArray[np.bool_] | None = ok_served & (e2e <= tg.e2e_s)
        elif tg.ttft_s is not None and tg.itl_s is not None:
            budget = tg.ttft_s + np.maximum(out_tok - 1.0, 0.0) * tg.itl_s
            e2e_ok = ok_served & (e2e <= budget)
        else:
            e2e_ok = None
    att = {
        "ttft": _attainment(ttft_ok, w, total) if ttft_ok is not None else math.nan,
        "itl": _attainment(itl_ok, w, total) if itl_ok is not None else math.nan,
        "e2e": _attainment(e2e_ok, w, total) if e2e_ok is not None else math.nan,
    }
    slo_att = att[tg.slo_metric]
    served_w = np.where(ok_served, w, 0.0)
    lat = {"ttft": ttft, "e2e": e2e, "itl": itl}[tg.slo_metric]
    p50, p95, p99 = (weighted_quantile(lat, served_w, q) for q in (0.5, 0.95, 0.99))
    gpus = run.workload.spec.cost.gpus_per_replica
    by_pool_h = {k: v / 3600.0 for k, v in run.gpu_seconds_by_pool.items()}
    gpu_hours = float(sum(by_pool_h.values()))
    cost = float(sum(run.cost_usd_by_pool.values()))
    o_cost = oracle.cost_usd if oracle is not None else math.nan
    h_oracle = hours_oracle if hours_oracle is not None else oracle
    o_hours = h_oracle.gpu_hours if h_oracle is not None else math.nan
    return PolicyReport(
        name=run.policy,
        requests=total,
        served=served,
        dropped=n_dropped,
        slo_attainment=slo_att,
        slo_met=bool(slo_att >= tg.percentile) if math.isfinite(slo_att) else False,
        ttft_attainment=att["ttft"],
        itl_attainment=att["itl"],
        e2e_attainment=att["e2e"],
        p50_latency_s=p50,
        p95_latency_s=p95,
        p99_latency_s=p99,
        gpu_hours=gpu_hours,
        gpu_hours_by_pool=by_pool_h,
        cost_usd=cost,
        cost_usd_by_pool=dict(run.cost_usd_by_pool),
        cost_per_1k_requests_usd=1000.0 * cost / served if served > 0 else math.nan,
        cost_over_oracle=cost / o_cost if o_cost > 0 else math.nan,
        gpu_hours_over_oracle=gpu_hours / o_hours if o_hours > 0 else math.nan,
        scale_events=len(run.scale_events),
        seconds_under_capacity=_under_capacity_s(run),
        interruptions=run.interruptions,
        mode=run.mode,
        wall_s=run.wall_s,
        extra={
            "gpus_per_replica": gpus,
            "initial_replicas": run.initial_replicas,
            "capacity_rps_per_replica": run.capacity_rps,
        },
    )


# -- compare: JSON and table ---------------------------------------------------------------


@dataclass(frozen=True)
class CompareReport:
    """Several policies on one trace, with the oracle they are measured against."""

    trace: str
    scenario: str
    mode: str
    oracle: OracleResult
    policies: list[PolicyReport]
    targets: LatencyTargets
    info: dict[str, Any] = field(default_factory=dict)
    oracle_on_demand: OracleResult | None = None

    def to_dict(self) -> dict[str, Any]:
        safe: dict[str, Any] = _json_safe(
            {
                "trace": self.trace,
                "scenario": self.scenario,
                "mode": self.mode,
                "slo": asdict(self.targets),
                "oracle": self.oracle.to_dict(),
                "oracle_on_demand": (
                    self.oracle_on_demand.to_dict() if self.oracle_on_demand is not None else None
                ),
                "policies": [p.to_dict() for p in self.policies],
                **self.info,
            }
        )
        return safe

    def write_json(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n")
        return p


def _fmt(x: float, spec: str) -> str:
    return "-" if not math.isfinite(x) else format(x, spec)


def table_rows(reports: Sequence[PolicyReport]) -> list[list[str]]:
    """The table's cells, one row per policy (shared by rich and Markdown renderers)."""
    rows = []
    for r in reports:
        rows.append(
            [
                r.name,
                f"{r.requests:,.0f}",
                f"{r.dropped:,.0f}",
                _fmt(r.slo_attainment, ".2f") + ("" if r.slo_met else " ✗"),
                _fmt(r.p50_latency_s, ".3f"),
                _fmt(r.p95_latency_s, ".3f"),
                _fmt(r.p99_latency_s, ".3f"),
                _fmt(r.gpu_hours, ".2f"),
                _fmt(r.cost_usd, ".2f"),
                _fmt(r.cost_per_1k_requests_usd, ".3f"),
                _fmt(r.cost_over_oracle, ".2f"),
                str(r.scale_events),
                _fmt(r.seconds_under_capacity, ".0f"),
            ]
        )
    return rows


TABLE_HEADER = [
    "policy",
    "requests",
    "dropped",
    "SLO %",
    "p50 s",
    "p95 s",
    "p99 s",
    "GPU-h",
    "cost $",
    "$/1k req",
    "x oracle",
    "scalings",
    "short s",
]


def render_table(report: CompareReport) -> Any:
    """A rich Table of the compare report (print it with a rich Console)."""
    from rich.table import Table

    t = report.targets
    title = (
        f"{report.trace} ({report.scenario}, {report.mode} mode): SLO {t.slo_metric} "
        f"P{t.percentile:g} <= {t.slo_target_s:g} s; oracle {report.oracle.gpu_hours:.2f} "
        f"GPU-h, ${report.oracle.cost_usd:.2f}"
    )
    table = Table(
        title=title,
        caption=(
            f"p50/p95/p99: {METRIC_NAMES[t.slo_metric]} of served requests; x oracle: cost / "
            "oracle cost; scalings: "
            "replica patches; short s: seconds with fewer ready replicas than the oracle's "
            "r(t); ✗: SLO attainment below its percentile"
        ),
    )
    for i, h in enumerate(TABLE_HEADER):
        table.add_column(h, justify="left" if i == 0 else "right")
    for row in table_rows(report.policies):
        table.add_row(*row)
    return table


def markdown_table(report: CompareReport) -> str:
    """The same table as GitHub Markdown (for BENCHMARKS.md)."""
    lines = [
        "| " + " | ".join(TABLE_HEADER) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(TABLE_HEADER) - 1)) + "|",
    ]
    for row in table_rows(report.policies):
        lines.append("| " + " | ".join(row) + " |")
    lines.append(
        f"| oracle | | | | | | | {report.oracle.gpu_hours:.2f} | "
        f"{report.oracle.cost_usd:.2f} | | 1.00 | {report.oracle.starts} starts | |"
    )
    return "\n".join(lines)


# -- plots ---------------------------------------------------------------------------------

_POOL_COLORS = {"on_demand": "#4c72b0", "spot": "#55a868", "warm": "#c7a200"}
_MAX_POINTS = 600


def _thin(t: F64, *ys: F64) -> tuple[F64, ...]:
    """Keep at most _MAX_POINTS points (max per block for step-like series: peaks stay)."""
    n = t.size
    if n <= _MAX_POINTS:
        return (t, *ys)
    k = math.ceil(n / _MAX_POINTS)
    m = n // k * k
    out = [t[:m:k]]
    for y in ys:
        out.append(np.nanmax(y[:m].reshape(-1, k), axis=1))
    return tuple(out)


def _time_axis(t_s: F64, start_s: float) -> tuple[F64, str]:
    span = float(t_s[-1] - start_s) if t_s.size else 0.0
    if span > 2 * 86400:
        return (t_s - start_s) / 86400.0, "time (days)"
    if span > 3 * 3600:
        return (t_s - start_s) / 3600.0, "time (hours)"
    return (t_s - start_s) / 60.0, "time (minutes)"


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_timelines(
    runs: Sequence[RunResult], oracle: OracleResult | None, path: str | Path
) -> Path:
    """One panel per policy (and the oracle's schedule on top): ready replicas by pool
    (stacked), the loop's decided total, and the replicas the demand requires (the
    oracle's r(t), see simulator.oracle)."""
    plt = _plt()
    panels = len(runs) + (1 if oracle is not None else 0)
    n = max(1, panels)
    fig, axes = plt.subplots(n, 1, figsize=(9, 1.7 * n + 1.0), sharex=True, squeeze=False)
    xlabel = "time"
    start = runs[0].start_s if runs else 0.0
    need_x: F64 | None = None
    need_y: F64 | None = None
    if runs:
        r0 = runs[0]
        pt = np.asarray(r0.timeline.get("poll_t_s", np.zeros(0)), dtype=np.float64)
        k = min(pt.size, r0.required.size)
        need = np.asarray(r0.required, dtype=np.float64)[:k]
        pt2, need2 = _thin(pt[:k], need)
        need_x, xlabel = _time_axis(pt2, start)
        need_y = need2
    row = 0
    if oracle is not None:
        ax = axes[row, 0]
        tl = oracle.replicas_timeline
        t, od, sp = _thin(tl["t_s"], tl["on_demand"], tl["spot"])
        x, xlabel = _time_axis(t, start)
        ax.stackplot(
            x,
            od,
            sp,
            labels=["ready on-demand", "ready spot"],
            colors=[_POOL_COLORS["on_demand"], _POOL_COLORS["spot"]],
            alpha=0.55,
            step="post",
        )
        ax.set_title(
            f"oracle (billed replicas incl. boots): {oracle.gpu_hours:.1f} GPU-h, "
            f"${oracle.cost_usd:.2f}",
            fontsize=9,
            loc="left",
        )
        row += 1
    for run in runs:
        ax = axes[row, 0]
        row += 1
        tl = run.timeline
        t = np.asarray(tl.get("t_s", np.zeros(0)), dtype=np.float64)
        pools = [p for p in ("on_demand", "spot", "warm") if f"ready_{p}" in tl]
        if t.size:
            cols = [np.asarray(tl[f"ready_{p}"], dtype=np.float64) for p in pools]
            tt, *cs = _thin(t, *cols)
            x, xlabel = _time_axis(tt, start)
            ax.stackplot(
                x,
                *cs,
                labels=[f"ready {p.replace('_', '-')}" for p in pools],
                colors=[_POOL_COLORS[p] for p in pools],
                alpha=0.55,
                step="post",
            )
        pt = np.asarray(tl.get("poll_t_s", np.zeros(0)), dtype=np.float64)
        if pt.size:
            dec = np.asarray(tl.get("decided_total", np.full(pt.size, np.nan)))[: pt.size]
            pt2, dec2 = _thin(pt, dec)
            x2, xlabel = _time_axis(pt2, start)
            ax.plot(x2, dec2, color="#c44e52", lw=0.8, ls="--", label="decided total")
        cost = sum(run.cost_usd_by_pool.values())
        hours = sum(run.gpu_seconds_by_pool.values()) / 3600.0
        ax.set_title(f"{run.policy}: {hours:.1f} GPU-h, ${cost:.2f}", fontsize=9, loc="left")
    for ax in axes[:, 0]:
        if need_x is not None and need_y is not None:
            ax.step(need_x, need_y, where="post", color="black", lw=0.8, label="required r(t)")
        ax.set_ylabel("replicas", fontsize=8)
        ax.tick_params(labelsize=7)
        # headroom above the stack so lines at its top stay visible
        ax.set_ylim(0, ax.get_ylim()[1] * 1.12 + 0.1)
    axes[-1, 0].set_xlabel(xlabel, fontsize=8)
    seen: dict[str, Any] = {}
    for ax in axes[:, 0]:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(lab, h)
    fig.legend(
        list(seen.values()), list(seen), loc="lower center", fontsize=7, ncol=6, frameon=False
    )
    title = f"Demand vs capacity: {runs[0].trace}" if runs else "Demand vs capacity"
    fig.suptitle(title, fontsize=10, x=0.01, ha="left")
    fig.tight_layout(rect=(0, 0.035, 1, 0.98))
    return _save(fig, path)


METRIC_NAMES = {"ttft": "TTFT", "e2e": "end-to-end time", "itl": "mean inter-token gap"}
# (short name, axis label) of each SLO metric in the latency plots
_METRIC_LABELS = {
    "ttft": ("TTFT", "time to first token"),
    "e2e": ("e2e", "end-to-end time"),
    "itl": ("itl", "mean inter-token gap"),
}


def _request_latency(run: RunResult, metric: str) -> F64:
    """Per request of the run: TTFT, e2e time or mean inter-token gap (seconds)."""
    if metric == "e2e":
        return np.asarray(run.finish_s - run.arrival_s, dtype=np.float64)
    if metric == "itl":
        return np.asarray(run.itl_s, dtype=np.float64)
    return np.asarray(run.first_token_s - run.arrival_s, dtype=np.float64)


def plot_latency_cdf(runs: Sequence[RunResult], targets: LatencyTargets, path: str | Path) -> Path:
    """CDF per policy of the SLO's metric over served requests (log x), target marked."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    styles = ["-", "--", "-.", ":"]
    for i, run in enumerate(runs):
        sel = (run.arrival_s >= run.eval_start_s) & ~run.dropped
        lat = _request_latency(run, targets.slo_metric)[sel]
        w = run.weight[sel]
        keep = np.isfinite(lat)
        lat, w = lat[keep], w[keep]
        if lat.size == 0:
            continue
        order = np.argsort(lat)
        x = np.maximum(lat[order], 1e-3)
        y = np.cumsum(w[order]) / w.sum()
        if x.size > 2000:  # thin evenly in probability
            idx = np.unique(np.searchsorted(y, np.linspace(0, 1, 2000)).clip(0, x.size - 1))
            x, y = x[idx], y[idx]
        ax.step(x, 100 * y, where="post", lw=1.2, ls=styles[i % len(styles)], label=run.policy)
    short, label = _METRIC_LABELS[targets.slo_metric]
    ax.axvline(
        targets.slo_target_s,
        color="black",
        ls=":",
        lw=1,
        label=f"{short} target {targets.slo_target_s:g} s",
    )
    ax.axhline(targets.percentile, color="grey", ls="--", lw=0.8, label=f"P{targets.percentile:g}")
    ax.set_xscale("log")
    ax.set_xlabel(f"{label} (s, log scale)")
    ax.set_ylabel("served requests (%)")
    ax.set_ylim(0, 100.5)
    trace = runs[0].trace if runs else ""
    ax.set_title(f"{short} CDF per policy: {trace}", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def plot_cost_vs_slo(
    reports: Sequence[PolicyReport], targets: LatencyTargets, path: str | Path, title: str = ""
) -> Path:
    """Cost relative to the oracle vs SLO attainment, one point per policy."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4.2))
    # policies landing on the same point share one label
    groups: dict[tuple[float, float], list[str]] = {}
    for r in reports:
        x, y = r.cost_over_oracle, r.slo_attainment
        if math.isfinite(x) and math.isfinite(y):
            groups.setdefault((round(x, 3), round(y, 2)), []).append(r.name)
    for (x, y), names in groups.items():
        ax.scatter([x], [y], s=36)
        ax.annotate(", ".join(names), (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ys = [y for _, y in groups] + [targets.percentile]
    ax.set_ylim(max(0.0, min(ys) - 3.0), 100.8)
    xs = [x for x, _ in groups] + [1.0]
    ax.set_xlim(0.0, max(xs) * 1.15 + 0.1)
    ax.axhline(
        targets.percentile, color="grey", ls="--", lw=0.8, label=f"target P{targets.percentile:g}"
    )
    ax.axvline(1.0, color="black", ls=":", lw=0.8, label="oracle cost")
    ax.set_xlabel("cost / oracle cost (x)")
    ax.set_ylabel(f"SLO attainment ({targets.slo_metric} <= {targets.slo_target_s:g} s, %)")
    ax.set_title(title or "Cost vs SLO attainment", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


MAX_PNG_BYTES = 190_000  # plots stay small enough to commit


def _save(fig: Any, path: str | Path) -> Path:
    """Write a PNG at 100 dpi, lowering the resolution until it fits MAX_PNG_BYTES."""
    import io

    plt = _plt()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    data = b""
    for dpi in (100, 85, 70, 60):
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
        data = buf.getvalue()
        if len(data) <= MAX_PNG_BYTES:
            break
    p.write_bytes(data)
    plt.close(fig)
    return p


def write_plots(
    runs: Sequence[RunResult],
    report: CompareReport,
    out_dir: str | Path,
    prefix: str = "",
) -> list[Path]:
    """The three plots into out_dir: {prefix}timeline.png, latency_cdf.png, cost_vs_slo.png."""
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    return [
        plot_timelines(runs, report.oracle, d / f"{prefix}timeline.png"),
        plot_latency_cdf(runs, report.targets, d / f"{prefix}latency_cdf.png"),
        plot_cost_vs_slo(
            report.policies,
            report.targets,
            d / f"{prefix}cost_vs_slo.png",
            title=f"Cost vs SLO attainment: {report.trace}",
        ),
    ]
