"""Prometheus metrics of the controller itself (exported on /metrics).

Per-workload gauges are produced at scrape time by a Collector that reads the
DecisionStore, so a tick costs nothing extra however many workloads there are. Counters and
the tick-duration histogram are updated by the service after each tick.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from autoscaler.loop import TickReport
from autoscaler.store import DecisionStore

POOLS = ("spot", "on_demand", "warm")


class DecisionCollector(Collector):
    """Desired and current replicas per pool, forecasts, hold state, per workload."""

    def __init__(self, store: DecisionStore) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        labels = ["namespace", "workload", "pool"]
        desired = GaugeMetricFamily(
            "gpu_autoscaler_desired_replicas", "Replicas decided per pool.", labels=labels
        )
        current = GaugeMetricFamily(
            "gpu_autoscaler_current_replicas",
            "Replicas the pool's Deployment asked for when the decision was made.",
            labels=labels,
        )
        ready = GaugeMetricFamily(
            "gpu_autoscaler_ready_replicas", "Ready replicas per pool.", labels=labels
        )
        wl = ["namespace", "workload"]
        demand = GaugeMetricFamily(
            "gpu_autoscaler_demand",
            "Current demand in the scenario metric's units.",
            labels=wl,
        )
        forecast = GaugeMetricFamily(
            "gpu_autoscaler_demand_forecast",
            "Demand forecast at the lead time (kind=mean|upper).",
            labels=[*wl, "kind"],
        )
        held = GaugeMetricFamily(
            "gpu_autoscaler_holding",
            "1 while the workload holds its last decision on missing or stale metrics.",
            labels=wl,
        )
        stale = GaugeMetricFamily(
            "gpu_autoscaler_metrics_stale", "1 while the workload's metrics are stale.", labels=wl
        )
        age = GaugeMetricFamily(
            "gpu_autoscaler_decision_timestamp_seconds",
            "When the last decision was made (clock of the loop).",
            labels=wl,
        )
        for r in self.store.all():
            ns, name = r.workload.namespace, r.workload.name
            d = r.decision
            for pool in POOLS:
                desired.add_metric([ns, name, pool], float(getattr(d, pool)))
                if pool in r.current:
                    current.add_metric([ns, name, pool], float(r.current[pool]))
                if pool in r.ready:
                    ready.add_metric([ns, name, pool], float(r.ready[pool]))
            if math.isfinite(d.demand_now):
                demand.add_metric([ns, name], d.demand_now)
            if math.isfinite(d.forecast):
                forecast.add_metric([ns, name, "mean"], d.forecast)
            if math.isfinite(d.forecast_upper):
                forecast.add_metric([ns, name, "upper"], d.forecast_upper)
            held.add_metric([ns, name], 1.0 if d.held else 0.0)
            stale.add_metric([ns, name], 1.0 if r.stale else 0.0)
            age.add_metric([ns, name], r.at_s)
        yield from (desired, current, ready, demand, forecast, held, stale, age)


class Telemetry:
    """The controller's registry: loop counters plus the DecisionCollector."""

    def __init__(self, store: DecisionStore, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.registry.register(DecisionCollector(store))
        self.tick_duration = Histogram(
            "gpu_autoscaler_tick_duration_seconds",
            "Wall time of one control tick.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=self.registry,
        )
        self.ticks = Counter(
            "gpu_autoscaler_ticks_total", "Control ticks run.", registry=self.registry
        )
        self.errors = Counter(
            "gpu_autoscaler_errors_total",
            "Errors by kind (metrics, cluster, actuate, policy).",
            ["kind"],
            registry=self.registry,
        )
        self.patches = Counter(
            "gpu_autoscaler_scale_patches_total",
            "Scale subresource patches made, by pool.",
            ["pool"],
            registry=self.registry,
        )
        self.workloads = Gauge(
            "gpu_autoscaler_workloads", "Workloads under control.", registry=self.registry
        )
        self.leader = Gauge(
            "gpu_autoscaler_leader",
            "1 while this instance holds the lease.",
            registry=self.registry,
        )

    def observe_tick(self, report: TickReport) -> None:
        self.ticks.inc()
        self.tick_duration.observe(report.duration_s)
        self.workloads.set(report.n_workloads)
        if report.metrics_error:
            self.errors.labels("metrics").inc()
        if report.cluster_error:
            self.errors.labels("cluster").inc()
        for errs in report.errors.values():
            for e in errs:
                kind = "policy" if e.startswith("policy") else "actuate"
                self.errors.labels(kind).inc()
        for _key, pool, _n in report.patches:
            self.patches.labels(pool).inc()
