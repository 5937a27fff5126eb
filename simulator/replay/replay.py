"""Replay a request trace open-loop against a live completions endpoint, and check the simulator.

    gpu-autoscaler replay --trace F --endpoint URL [--speedup X] [--start S] [--duration S]
                          [--max-tokens N] [--max-input-tokens N] [--concurrency-limit N]
                          [--json out.json] [--plots DIR]
                          [--compare-sim --profile P [--profile P2 ...] --replicas N]

Open loop. Every request is its own asyncio task that sleeps until its scheduled time (the
trace's arrival, after windowing and ``speedup``, plus a short lead) and then sends, whether
or not earlier requests have been answered: a server that falls behind sees the trace's
arrivals all the same and its queue grows, as in production. The HTTP client has no
connection-pool cap (httpx's default of 100 would make the replay closed-loop at 100 in
flight). The sender's own lateness is measured per request, ``send lag = sent - scheduled``,
and reported (p50 / p99 / max): a large lag means the sending machine, not the server, was
the bottleneck. ``--concurrency-limit N`` deliberately caps requests in flight; requests
beyond it wait in the sender, and that wait shows up as send lag.

Requests. Prompts are lists of random token ids (from one seeded pool, each request a slice
at its own offset, so no two share a prefix and prefix caches do not help) of the trace's
prompt length, capped at ``--max-input-tokens``; ``max_tokens`` is the trace's output length,
capped at ``--max-tokens``, with ``ignore_eos`` so an engine like vLLM produces exactly that
many. Both caps exist for small models with short contexts; the simulator replays the
capped lengths, i.e. what was actually sent.

Measurements per request (seconds, client side): TTFT = first token chunk - sent; e2e =
last byte of the stream - sent; mean ITL; tokens received. Failed requests keep their error
message (HTTP status, malformed stream, timeout) and are left out of the latency statistics.

Comparison (``--compare-sim``). The same slice runs through `simulator.engine.simulate` with
the given ServiceProfile and ``StaticPolicy(replicas)``: the workload's min = max replicas =
N, so the cluster starts with N ready on-demand replicas and never scales; no spot, no
timeouts. The report gives P50 / P95 / P99 of TTFT and e2e for both and the relative error
(sim - replay) / replay. Percentiles are `simulator.report.weighted_quantile` with unit
weights on both sides.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from simulator.replay.client import (
    EndpointError,
    fetch_models,
    make_client,
    normalize_endpoint,
    stream_completion,
)
from simulator.replay.profiler import TOKEN_ID_RANGE

F64 = NDArray[np.float64]
QUANTILES = (0.5, 0.95, 0.99)


class ReplayError(RuntimeError):
    """The replay cannot run or produced nothing usable; the message says why."""


@dataclass(frozen=True)
class ReplaySettings:
    """How to send the trace (module docstring). Times in seconds."""

    speedup: float = 1.0
    start_s: float | None = None
    duration_s: float | None = None
    max_tokens: int | None = None
    max_input_tokens: int | None = None
    concurrency_limit: int | None = None
    timeout_s: float = 600.0
    model: str | None = None
    format: str = "auto"
    seed: int = 0
    lead_s: float = 0.5

    def __post_init__(self) -> None:
        problems = []
        if not (math.isfinite(self.speedup) and self.speedup > 0):
            problems.append(f"speedup must be > 0, got {self.speedup}")
        for name in ("max_tokens", "max_input_tokens", "concurrency_limit"):
            v = getattr(self, name)
            if v is not None and v < 1:
                problems.append(f"{name} must be >= 1, got {v}")
        if not self.timeout_s > 0:
            problems.append(f"timeout_s must be > 0, got {self.timeout_s}")
        if problems:
            raise ValueError("; ".join(problems))


def prepare_trace(path: str | Path, settings: ReplaySettings) -> Any:
    """Load, window, speed up and cap the trace: the requests exactly as they will be sent.

    Raises TraceError (file) or ReplayError (nothing left in the window)."""
    from simulator.traces import Trace, load_trace

    tr = load_trace(
        path,
        format=settings.format,
        start_s=settings.start_s,
        duration_s=settings.duration_s,
        speedup=settings.speedup,
    )
    if len(tr) == 0:
        raise ReplayError(f"{path}: no requests in the chosen window")
    tin = np.asarray(tr.input_tokens, dtype=np.int64)
    tout = np.asarray(tr.output_tokens, dtype=np.int64)
    notes = list(tr.notes)
    if settings.max_input_tokens is not None:
        n = int((tin > settings.max_input_tokens).sum())
        tin = np.minimum(tin, settings.max_input_tokens)
        notes.append(f"{n} prompt(s) capped at {settings.max_input_tokens} tokens")
    if settings.max_tokens is not None:
        n = int((tout > settings.max_tokens).sum())
        tout = np.minimum(tout, settings.max_tokens)
        notes.append(f"{n} output(s) capped at {settings.max_tokens} tokens")
    return Trace(
        name=tr.name,
        arrival_s=tr.arrival_s,
        input_tokens=tin,
        output_tokens=tout,
        source=f"{tr.source} | caps(input={settings.max_input_tokens}, "
        f"output={settings.max_tokens})",
        skipped=tr.skipped,
        horizon_s=tr.horizon_s,
        notes=tuple(notes),
    )


@dataclass
class ReplayResult:
    """Per-request outcomes of one replay ([m] arrays, seconds from the replay's t=0, which
    is the trace's t=0; NaN where a request failed or never got that far)."""

    endpoint: str
    model: str | None
    trace: Any
    scheduled_s: F64
    sent_s: F64
    first_token_s: F64
    finish_s: F64
    itl_s: F64
    tokens_received: NDArray[np.int64]
    errors: list[str | None]
    wall_s: float
    settings: ReplaySettings
    sim: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> NDArray[np.bool_]:
        return np.array([e is None for e in self.errors], dtype=bool)

    @property
    def ttft_s(self) -> F64:
        out: F64 = self.first_token_s - self.sent_s
        return out

    @property
    def e2e_s(self) -> F64:
        out: F64 = self.finish_s - self.sent_s
        return out

    @property
    def send_lag_s(self) -> F64:
        out: F64 = self.sent_s - self.scheduled_s
        return out

    def summary(self) -> dict[str, Any]:
        """Counts and latency percentiles (s) of the successful requests, send lag."""
        ok = self.ok
        lag = self.send_lag_s[np.isfinite(self.sent_s)]
        errs = [e for e in self.errors if e is not None]
        return {
            "requests": len(self.errors),
            "ok": int(ok.sum()),
            "errors": len(errs),
            "first_errors": sorted(set(errs))[:3],
            "ttft_s": latency_stats(self.ttft_s[ok]),
            "e2e_s": latency_stats(self.e2e_s[ok]),
            "itl_s": latency_stats(self.itl_s[ok]),
            "send_lag_s": {
                "p50": _q(lag, 0.5),
                "p99": _q(lag, 0.99),
                "max": float(lag.max()) if lag.size else math.nan,
            },
            "output_tokens_per_s": float(self.tokens_received[ok].sum()) / self.wall_s
            if self.wall_s > 0
            else math.nan,
            "wall_s": self.wall_s,
        }

    def to_dict(self) -> dict[str, Any]:
        s = self.settings
        out: dict[str, Any] = _json_safe(
            {
                "endpoint": self.endpoint,
                "model": self.model,
                "trace": self.trace.name,
                "source": self.trace.source,
                "notes": list(self.trace.notes),
                "settings": {
                    "speedup": s.speedup,
                    "start_s": s.start_s,
                    "duration_s": s.duration_s,
                    "max_tokens": s.max_tokens,
                    "max_input_tokens": s.max_input_tokens,
                    "concurrency_limit": s.concurrency_limit,
                },
                "summary": self.summary(),
                "compare": self.sim,
                "requests": {
                    "scheduled_s": self.scheduled_s.tolist(),
                    "sent_s": self.sent_s.tolist(),
                    "ttft_s": self.ttft_s.tolist(),
                    "e2e_s": self.e2e_s.tolist(),
                    "input_tokens": np.asarray(self.trace.input_tokens).tolist(),
                    "output_tokens": np.asarray(self.trace.output_tokens).tolist(),
                    "tokens_received": self.tokens_received.tolist(),
                    "error": self.errors,
                },
            }
        )
        return out

    def write_json(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n")
        return p


def _q(x: F64, q: float) -> float:
    from simulator.report import weighted_quantile

    x = np.asarray(x, dtype=np.float64)
    return weighted_quantile(x, np.ones_like(x), q)


def latency_stats(x: F64) -> dict[str, float]:
    """n, mean, p50, p95, p99 and max of the finite values (s)."""
    v = np.asarray(x, dtype=np.float64)
    v = v[np.isfinite(v)]
    out: dict[str, float] = {"n": float(v.size), "mean": float(v.mean()) if v.size else math.nan}
    for q in QUANTILES:
        out[f"p{int(q * 100)}"] = _q(v, q)
    out["max"] = float(v.max()) if v.size else math.nan
    return out


def _json_safe(x: Any) -> Any:
    from simulator.report import json_safe

    return json_safe(x)


# ---- the sender --------------------------------------------------------------------------------


async def replay_trace(
    trace: Any,
    endpoint: str,
    settings: ReplaySettings,
    progress: Callable[[str], None] | None = None,
    progress_every_s: float = 10.0,
) -> ReplayResult:
    """Send `trace` open-loop to `endpoint` (module docstring) and collect the outcomes.

    Raises EndpointError when the endpoint cannot be reached before the replay starts."""
    base = normalize_endpoint(endpoint)
    say = progress or (lambda _m: None)
    m = len(trace)
    sched = np.asarray(trace.arrival_s, dtype=np.float64)
    tin = np.asarray(trace.input_tokens, dtype=np.int64)
    tout = np.asarray(trace.output_tokens, dtype=np.int64)
    sent = np.full(m, np.nan)
    first = np.full(m, np.nan)
    fin = np.full(m, np.nan)
    itl = np.full(m, np.nan)
    got = np.zeros(m, dtype=np.int64)
    errors: list[str | None] = [None] * m
    rng = np.random.default_rng(settings.seed)
    lo, hi = TOKEN_ID_RANGE
    longest = int(tin.max()) if m else 1
    pool = rng.integers(lo, hi, size=max(1 << 20, 4 * longest), dtype=np.int64)
    offsets = rng.integers(0, pool.size - longest, size=m)
    sem = asyncio.Semaphore(settings.concurrency_limit) if settings.concurrency_limit else None
    clock = time.perf_counter
    counts = {"sent": 0, "done": 0, "failed": 0}

    async with make_client(settings.timeout_s) as client:
        models = await fetch_models(client, base)
        model = settings.model or (str(models[0]["id"]) if models else None)
        t0 = clock() + settings.lead_s

        async def one(i: int) -> None:
            delay = t0 + sched[i] - clock()
            if delay > 0:
                await asyncio.sleep(delay)
            if sem is not None:
                await sem.acquire()
            try:
                o = int(offsets[i])
                payload: dict[str, Any] = {
                    "prompt": pool[o : o + int(tin[i])].tolist(),
                    "max_tokens": int(tout[i]),
                    "ignore_eos": True,
                    "temperature": 0.0,
                }
                if model:
                    payload["model"] = model
                sent[i] = clock() - t0
                counts["sent"] += 1
                try:
                    r = await stream_completion(client, base, payload, clock)
                except EndpointError as e:
                    errors[i] = str(e)
                    counts["failed"] += 1
                    return
                sent[i] = r.sent_s - t0
                first[i] = r.first_token_s - t0
                fin[i] = r.finish_s - t0
                itl[i] = r.itl_s
                got[i] = r.completion_tokens
                counts["done"] += 1
            finally:
                if sem is not None:
                    sem.release()

        async def report() -> None:
            while True:
                await asyncio.sleep(progress_every_s)
                t = clock() - t0
                say(
                    f"t={t:7.1f} s  sent {counts['sent']}/{m}  done {counts['done']}  "
                    f"failed {counts['failed']}  in flight "
                    f"{counts['sent'] - counts['done'] - counts['failed']}"
                )

        reporter = asyncio.create_task(report())
        try:
            await asyncio.gather(*(one(i) for i in range(m)))
        finally:
            reporter.cancel()
        wall = clock() - t0
    return ReplayResult(
        endpoint=base,
        model=model,
        trace=trace,
        scheduled_s=sched.copy(),
        sent_s=sent,
        first_token_s=first,
        finish_s=fin,
        itl_s=itl,
        tokens_received=got,
        errors=errors,
        wall_s=wall,
        settings=settings,
    )


# ---- the simulator on the same slice -----------------------------------------------------------


def static_workload(replicas: int, name: str = "replay") -> Any:
    """A workload pinned at `replicas` on-demand replicas (min = max), SLO loose enough that
    any profile has capacity inside it (the static policy ignores the SLO anyway)."""
    from autoscaler.config import Workload

    spec = {
        "targets": {"on_demand": f"{name}-od"},
        "policy": {
            "scenario": "chat",
            "slo": {
                "slo_class": "flexible",
                "metric": "ttft",
                "target_s": 3600.0,
                "percentile": 95.0,
            },
            "min_replicas": replicas,
            "max_replicas": replicas,
            "capacity": {"rps_per_replica": 1.0},
        },
    }
    return Workload.model_validate({"namespace": "default", "name": name, "spec": spec})


def simulate_slice(trace: Any, profile: Any, replicas: int, seed: int = 0) -> Any:
    """`simulate` the trace with StaticPolicy(replicas) from `replicas` ready replicas, no
    spot, no scaling, no timeouts (module docstring). Returns the engine's RunResult."""
    from policies.baselines import StaticPolicy
    from simulator.cluster import ClusterConfig
    from simulator.engine import SimConfig, simulate

    if replicas < 1:
        raise ValueError(f"replicas must be >= 1, got {replicas}")
    cfg = SimConfig(
        cluster=ClusterConfig(spot_hazard_per_hour=0.0, max_queue=None, request_timeout_s=None),
        tail_s=3600.0,
    )
    return simulate(
        trace, static_workload(replicas), StaticPolicy(replicas), cfg, profile=profile, seed=seed
    )


def compare_with_sim(result: ReplayResult, run: Any, profile_name: str) -> dict[str, Any]:
    """Percentiles of TTFT and e2e, replay vs simulator, and (sim - replay) / replay."""
    ok = result.ok
    served = ~np.asarray(run.dropped, dtype=bool)
    sim_ttft = (run.first_token_s - run.arrival_s)[served]
    sim_e2e = (run.finish_s - run.arrival_s)[served]
    out: dict[str, Any] = {
        "profile": profile_name,
        "replicas": run.initial_replicas,
        "sim_requests": int(served.sum()),
        "sim_dropped": int((~served).sum()),
        "replay_requests": int(ok.sum()),
    }
    for metric, rep, sim in (
        ("ttft", result.ttft_s[ok], sim_ttft),
        ("e2e", result.e2e_s[ok], sim_e2e),
    ):
        for q in QUANTILES:
            key = f"p{int(q * 100)}_{metric}"
            r, s = _q(rep, q), _q(sim, q)
            out[f"{key}_replay_s"] = r
            out[f"{key}_sim_s"] = s
            out[f"{key}_rel_err"] = (s - r) / r if r > 0 else math.nan
    return out


# ---- plots ---------------------------------------------------------------------------------------


def write_plots(
    result: ReplayResult, runs: Sequence[tuple[str, Any]], out_dir: str | Path, prefix: str = ""
) -> list[Path]:
    """Two PNGs: {prefix}replay_cdf.png (TTFT and e2e CDFs, replay and each simulated run)
    and {prefix}replay_timeline.png (TTFT and send lag against scheduled time)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    ok = result.ok
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("ttft", "e2e"), strict=True):
        series = [("replay", (result.ttft_s if metric == "ttft" else result.e2e_s)[ok])]
        for name, run in runs:
            served = ~np.asarray(run.dropped, dtype=bool)
            end = run.first_token_s if metric == "ttft" else run.finish_s
            series.append((f"sim: {name}", (end - run.arrival_s)[served]))
        for i, (label, x) in enumerate(series):
            x = np.sort(x[np.isfinite(x)])
            if x.size == 0:
                continue
            y = np.arange(1, x.size + 1) / x.size * 100.0
            ax.step(
                np.maximum(x, 1e-4),
                y,
                where="post",
                lw=1.2,
                ls="-" if i == 0 else "--",
                label=label,
            )
        ax.set_xscale("log")
        ax.set_xlabel(f"{'time to first token' if metric == 'ttft' else 'end-to-end'} (s, log)")
        ax.set_ylabel("requests (%)")
        ax.set_ylim(0, 100.5)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"Replay of {result.trace.name} against {result.endpoint}", fontsize=10)
    fig.tight_layout()
    p1 = d / f"{prefix}replay_cdf.png"
    fig.savefig(p1, dpi=100, metadata={"Software": None})
    plt.close(fig)

    fig, ax = plt.subplots(2, 1, figsize=(9, 5), sharex=True)
    ax[0].plot(result.scheduled_s[ok], result.ttft_s[ok], ".", ms=2)
    ax[0].set_ylabel("TTFT (s)")
    ax[0].grid(alpha=0.3)
    lag = result.send_lag_s
    have = np.isfinite(lag)
    ax[1].plot(result.scheduled_s[have], lag[have] * 1e3, ".", ms=2, color="#c44e52")
    ax[1].set_ylabel("send lag (ms)")
    ax[1].set_xlabel("scheduled time (s)")
    ax[1].grid(alpha=0.3)
    fig.suptitle(f"TTFT and sender lag over time: {result.trace.name}", fontsize=10)
    fig.tight_layout()
    p2 = d / f"{prefix}replay_timeline.png"
    fig.savefig(p2, dpi=100, metadata={"Software": None})
    plt.close(fig)
    return [p1, p2]


# ---- tables ------------------------------------------------------------------------------------


def _ms(x: float) -> str:
    return "-" if not math.isfinite(x) else f"{x * 1e3:.1f}"


def _pct(x: float) -> str:
    return "-" if not math.isfinite(x) else f"{x * 100:+.1f} %"


def comparison_rows(result: ReplayResult) -> list[list[str]]:
    """Rows (metric, replay ms, then per profile: sim ms, error) for the comparison table."""
    rows = []
    for metric in ("ttft", "e2e"):
        for q in QUANTILES:
            key = f"p{int(q * 100)}_{metric}"
            row = [f"P{int(q * 100)} {metric.upper()}"]
            first = True
            for cmp in result.sim.values():
                if first:
                    row.append(_ms(cmp[f"{key}_replay_s"]))
                    first = False
                row += [_ms(cmp[f"{key}_sim_s"]), _pct(cmp[f"{key}_rel_err"])]
            rows.append(row)
    return rows


def markdown_summary(results: Sequence[dict[str, Any]]) -> str:
    """A Markdown table of replay-vs-simulator errors from replay JSON dicts (`to_dict`),
    one row per (trace, profile): requests, P50/P95/P99 TTFT replay and sim (ms) and the
    relative error of each, P95 e2e error, sender lag p99."""
    head = (
        "| trace | profile | requests | P50 TTFT replay / sim (ms) | err | "
        "P95 TTFT replay / sim (ms) | err | P99 TTFT replay / sim (ms) | err | "
        "P95 e2e err | send lag p99 (ms) |"
    )
    lines = [head, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def num(x: Any, scale: float = 1e3, spec: str = ".1f") -> str:
        return "-" if x is None else format(float(x) * scale, spec)

    def pct(x: Any) -> str:
        return "-" if x is None else f"{float(x) * 100:+.1f} %"

    for r in results:
        s = r["summary"]
        for name, c in (r.get("compare") or {}).items():
            cells = [r["trace"], name, str(s["ok"])]
            for q in ("p50", "p95", "p99"):
                cells.append(f"{num(c[f'{q}_ttft_replay_s'])} / {num(c[f'{q}_ttft_sim_s'])}")
                cells.append(pct(c[f"{q}_ttft_rel_err"]))
            cells.append(pct(c["p95_e2e_rel_err"]))
            cells.append(num(s["send_lag_s"]["p99"]))
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


__all__ = [
    "QUANTILES",
    "ReplayError",
    "ReplayResult",
    "ReplaySettings",
    "compare_with_sim",
    "comparison_rows",
    "latency_stats",
    "markdown_summary",
    "prepare_trace",
    "replay_trace",
    "simulate_slice",
    "static_workload",
    "write_plots",
]
