"""The embedded default: the real control loop against simulated GPU clusters.

`gpu-autoscaler run` with no cluster configuration starts this: three demo workloads (chat on
the bundled Azure conversation trace, RAG on the Azure code trace, image/ASR streaming on the
conversation trace at a different scale), each with its own simulated cluster of spot,
on-demand and warm-pool replicas (cold starts, spot interruptions), replayed in a loop at
`--speed` simulated seconds per wall second. The loop, the policy, the HTTP API and the KEDA
gRPC endpoint are exactly the ones that run in a cluster; only the adapters differ.
`--config` replaces the demo workloads (each gets the bundled conversation trace).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autoscaler.config import Workload, load_workloads, parse_workload
from autoscaler.loop import ControlLoop
from autoscaler.protocols import MetricWindows
from autoscaler.schedules import ScheduleEvaluator
from autoscaler.store import DecisionStore
from policies.spec import SpecError
from policies.types import ClusterFacts

DATA_DIR = Path(__file__).resolve().parent.parent / "simulator" / "data"
CONV_TRACE = DATA_DIR / "azure_conv_2023.csv.gz"
CODE_TRACE = DATA_DIR / "azure_code_2023.csv.gz"


def demo_workloads() -> list[tuple[Workload, Path, float]]:
    """(workload, bundled trace, rate scale) for the demo."""
    targets = {
        "chat-llama": ("chat", "tight"),
        "rag-code": ("rag", "moderate"),
        "asr-stream": ("streaming", "moderate"),
    }
    out: list[tuple[Workload, Path, float]] = []
    for name, (scenario, slo) in targets.items():
        policy: dict[str, Any] = {
            "scenario": scenario,
            "slo": {"slo_class": slo, "target_s": 0.5 if slo == "tight" else 1.0},
            "min_replicas": 1,
            "max_replicas": 40,
        }
        if scenario == "chat":
            policy["capacity"] = {"rps_per_replica": 13.0, "target_utilization": 0.8}
            trace, scale = CONV_TRACE, 4.0
        elif scenario == "rag":
            policy["capacity"] = {"queue_per_replica": 24.0, "rps_per_replica": 12.0}
            trace, scale = CODE_TRACE, 4.0
        else:
            policy["capacity"] = {"streams_per_replica": 64.0}
            trace, scale = CONV_TRACE, 2.0
        spec = {
            "targets": {"on_demand": f"{name}-od", "spot": f"{name}-spot", "warm": f"{name}-warm"},
            "policy": policy,
        }
        out.append((parse_workload("demo", name, spec), trace, scale))
    return out


@dataclass
class _Part:
    workload: Workload
    cluster: Any
    metrics: Any
    view: Any
    actuator: Any


def _looped(arrival_s: np.ndarray, period_s: float, loops: int) -> np.ndarray:
    """The trace's arrivals repeated `loops` times, back to back."""
    out: np.ndarray = (arrival_s[None, :] + period_s * np.arange(loops)[:, None]).ravel()
    return out


class MultiSim:
    """MetricsSource, ClusterView and Actuator over several single-workload simulations."""

    def __init__(self, parts: Sequence[_Part], scrape_interval_s: float) -> None:
        self.parts = {p.workload.key: p for p in parts}
        self.scrape_interval_s = scrape_interval_s
        self.next_scrape_s = 0.0
        self.now_s = 0.0

    # driving ------------------------------------------------------------------------------
    def advance(self, t_s: float) -> None:
        while self.next_scrape_s <= t_s + 1e-9:
            for p in self.parts.values():
                p.cluster.advance(self.next_scrape_s)
                p.metrics.scrape(self.next_scrape_s)
            self.next_scrape_s += self.scrape_interval_s
        for p in self.parts.values():
            p.cluster.advance(t_s)
            p.actuator.now_s = t_s
        self.now_s = t_s

    # MetricsSource ----------------------------------------------------------------------------
    def _stack(self, wins: list[MetricWindows]) -> MetricWindows:
        s = max((w.t_s.size for w in wins), default=0)
        t_s = next((w.t_s for w in wins if w.t_s.size == s), np.zeros(0))
        n = len(wins)
        fams = sorted({f for w in wins for f in w.metrics})
        metrics = {f: np.full((n, s), np.nan) for f in fams}
        stale = np.zeros(n, dtype=bool)
        errors: dict[int, str] = {}
        for i, w in enumerate(wins):
            k = w.t_s.size
            for f, arr in w.metrics.items():
                if k:
                    metrics[f][i, s - k :] = arr[0]
            stale[i] = bool(w.stale[0]) if len(w.stale) else True
            if 0 in w.errors:
                errors[i] = w.errors[0]
        return MetricWindows(t_s=t_s, metrics=metrics, stale=stale, errors=errors)

    def observe(self, workloads: Sequence[Workload], now_s: float) -> MetricWindows:
        return self._stack([self.parts[w.key].metrics.observe([w], now_s) for w in workloads])

    def history(
        self, workloads: Sequence[Workload], start_s: float, end_s: float, step_s: float
    ) -> MetricWindows:
        return self._stack(
            [self.parts[w.key].metrics.history([w], start_s, end_s, step_s) for w in workloads]
        )

    # ClusterView ------------------------------------------------------------------------------
    def facts(self, workloads: Sequence[Workload], now_s: float) -> ClusterFacts:
        rows = [self.parts[w.key].view.facts([w], now_s) for w in workloads]
        names = [
            "current_spot",
            "current_on_demand",
            "current_warm",
            "ready_spot",
            "ready_on_demand",
            "ready_warm",
            "spot_at_risk",
            "spot_pending_too_long",
        ]
        return ClusterFacts(**{k: np.concatenate([getattr(r, k) for r in rows]) for k in names})

    # Actuator ---------------------------------------------------------------------------------
    def set_replicas(self, namespace: str, deployment: str, replicas: int, reason: str) -> bool:
        for p in self.parts.values():
            t = p.workload.spec.targets
            if p.workload.namespace == namespace and deployment in (t.spot, t.on_demand, t.warm):
                changed: bool = p.actuator.set_replicas(namespace, deployment, replicas, reason)
                return changed
        from autoscaler.protocols import PermanentError

        raise PermanentError(f"deployment {namespace}/{deployment} not found in the simulation")


def build_embedded(args: argparse.Namespace, store: DecisionStore) -> tuple[Any, list[SpecError]]:
    """The Backend of the embedded default (see module docstring)."""
    from autoscaler.service import Backend
    from simulator.cluster import ClusterConfig, SimCluster
    from simulator.engine import SimActuator, SimClusterView, SimMetricsSource
    from simulator.service import ServiceProfile
    from simulator.traces import load_trace

    errors: list[SpecError] = []
    if getattr(args, "config", None):
        res = load_workloads(args.config)
        chosen = [(w, CONV_TRACE, 1.0) for w in res.workloads]
        errors = list(res.errors)
    else:
        chosen = demo_workloads()
    profile = ServiceProfile.default()
    scrape_s = 15.0
    parts: list[_Part] = []
    speed = float(getattr(args, "speed", 10.0))
    duration = float(getattr(args, "duration", 0.0) or 0.0)
    # the simulated span to prepare: the run's duration, or half a day when open-ended
    span_s = duration * speed + 600.0 if duration > 0 else 12 * 3600.0
    for i, (w, trace_path, scale) in enumerate(chosen):
        trace = load_trace(trace_path, rate_scale=scale, seed=args.seed + i)
        arrivals = np.asarray(trace.arrival_s, dtype=np.float64)
        period = float(max(trace.duration_s, arrivals[-1] + 1.0 if arrivals.size else 1.0))
        loops = max(1, math.ceil(span_s / period))
        cap = w.spec.policy.capacity
        per_replica = cap.rps_per_replica or 13.0
        first = float(np.sum(arrivals < 60.0)) / 60.0
        initial = max(w.spec.policy.min_replicas, math.ceil(first / per_replica))
        cluster = SimCluster(
            ClusterConfig(spot_notice_s=120.0),
            profile,
            seed=args.seed + i,
            initial={"on_demand": initial},
        )
        cluster.submit(
            _looped(arrivals, period, loops),
            np.tile(np.asarray(trace.input_tokens), loops),
            np.tile(np.asarray(trace.output_tokens), loops),
        )
        parts.append(
            _Part(
                workload=w,
                cluster=cluster,
                metrics=SimMetricsSource(cluster, w, scrape_interval_s=scrape_s),
                view=SimClusterView(cluster, w),
                actuator=SimActuator(cluster, w),
            )
        )
    sim = MultiSim(parts, scrape_s)
    workloads = [p.workload for p in parts]
    loop = ControlLoop(
        workloads,
        metrics=sim,
        cluster=sim,
        actuator=sim,
        store=store,
        schedules=ScheduleEvaluator(epoch_s=time.time()),
        dry_run=getattr(args, "dry_run", False),
    )
    wall0 = time.monotonic()

    def clock() -> float:
        return (time.monotonic() - wall0) * speed

    return (
        Backend(
            mode="embedded",
            loop=loop,
            clock_s=clock,
            before_tick=sim.advance,
            describe=lambda: f"simulated cluster at {speed:g}x, t={sim.now_s:,.0f}s",
            extra={"sim": sim},
        ),
        errors,
    )
