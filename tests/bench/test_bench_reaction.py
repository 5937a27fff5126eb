"""Benchmark: reaction time from a load step at the exporter to the scale patch.

Setup: a real Prometheus scraping a test-driven vLLM exporter every 5 s; the controller's
`run` path (real Prometheus source, Kubernetes adapters against the API test server) ticking
every 5 s on its own schedule (a thread, as APScheduler would). A RAG workload scales on
in-flight requests (queue + running gauges). Each step raises the queue enough to need
more replicas; the time from the exporter change to the patch landing on the API server is
measured over 20 up-steps under `make bench`, 5 under `make test` (scale-down is slow on
purpose: RAG holds a 5-minute window).

Target: median <= 6 s, p95 <= 10 s (scrape 5 s + tick 5 s: ~5 s expected on average).
Printed; the assert is a loose sanity bound.
"""

from __future__ import annotations

import argparse
import random
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from autoscaler.service import Service, add_run_arguments
from tests.bench import FULL
from tests.kube_apiserver import KubeAPIServer
from tests.prom_fixtures import (
    VLLM_RUNNING,
    VLLM_WAITING,
    MetricsExporter,
    PrometheusServer,
    have_prometheus,
)
from tests.test_controller_e2e import deployment, kubeconfig

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]

NS = "inference"  # the namespace the e2e test builders use
# 20 up-steps for the recorded figure (`make bench`), 5 under `make test` (~8 s each)
N_STEPS = 20 if FULL else 5
SCRAPE_S = 5.0
TICK_S = 5.0


def policy() -> dict[str, Any]:
    return {
        "apiVersion": "gpuautoscaler.io/v1alpha1",
        "kind": "AutoscalingPolicy",
        "metadata": {"name": "rag", "namespace": NS},
        "spec": {
            "targets": {"on_demand": "rag-od"},
            "metrics": {"preset": "vllm", "rate_window_s": 10, "stale_after_s": 30},
            "policy": {
                "scenario": "rag",
                "min_replicas": 1,
                "max_replicas": 100,
                "capacity": {"queue_per_replica": 10, "target_utilization": 1.0},
                "forecast": {"method": "none", "quantile": 0.5},
                "behavior": {
                    # tolerance 0: each +2 step counts even above 20 replicas (> 10 %)
                    "scaleUp": {
                        "stabilizationWindowSeconds": 0,
                        "tolerance": 0.0,
                        "policies": [{"type": "Percent", "value": 1000, "periodSeconds": 15}],
                    },
                    "scaleDown": {
                        "stabilizationWindowSeconds": 0,
                        "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}],
                    },
                },
            },
        },
    }


def test_bench_reaction_load_step_to_patch(tmp_path: Path) -> None:
    if not have_prometheus():
        pytest.skip("prometheus binary not found (Debian package prometheus)")
    exp = MetricsExporter("text")
    exp.start()
    prom = PrometheusServer(tmp_path / "prom", [exp.target], scrape_interval_s=SCRAPE_S)
    kube = KubeAPIServer().start()
    stop = threading.Event()
    try:
        prom.start()
        kube.put(deployment("rag-od", 2))
        kube.put(policy())
        exp.set_gauge(VLLM_WAITING, NS, "rag", 10.0)
        exp.set_gauge(VLLM_RUNNING, NS, "rag", 10.0)  # 20 in flight: 2 replicas
        prom.wait_for('up{job="exporter"} == 1')
        parser = argparse.ArgumentParser()
        add_run_arguments(parser)
        svc = Service(
            parser.parse_args(
                [
                    "--prometheus-url",
                    prom.url,
                    "--kubeconfig",
                    str(kubeconfig(tmp_path / "kc", kube.url)),
                    "--scrape-interval",
                    str(SCRAPE_S),
                    "--no-leader-elect",
                    "--grpc-port",
                    "0",
                    "--no-live",
                ]
            )
        )
        assert svc.backend.loop.cluster.wait_synced(20)  # type: ignore[attr-defined]

        def ticker() -> None:
            nxt = time.monotonic()
            while not stop.is_set():
                svc.run_tick()
                nxt += TICK_S
                stop.wait(max(0.0, nxt - time.monotonic()))

        th = threading.Thread(target=ticker, daemon=True)
        th.start()
        time.sleep(2 * SCRAPE_S)
        reactions: list[float] = []
        rng = random.Random(0)
        for k in range(N_STEPS):
            # each step adds 2 replicas' worth of in-flight requests (RAG keeps a 5-minute
            # window for scale-down by design, so only up-steps are timed)
            in_flight = 20.0 + 20.0 * (k + 1)
            want = int(in_flight // 10)
            t0 = time.monotonic()
            exp.set_gauge(VLLM_WAITING, NS, "rag", in_flight - 10.0)
            deadline = t0 + 40.0
            while time.monotonic() < deadline:
                obj = kube.get("deployments", NS, "rag-od")
                if obj is not None and int(obj["spec"]["replicas"]) == want:
                    break
                time.sleep(0.05)
            else:
                pytest.fail(f"step {k}: no patch to {want} within 40 s")
            reactions.append(time.monotonic() - t0)
            # the next step starts at a random phase of the scrape and tick grids
            time.sleep(rng.uniform(0.0, max(SCRAPE_S, TICK_S)))
        med = statistics.median(reactions)
        p95 = sorted(reactions)[max(0, int(round(0.95 * len(reactions))) - 1)]
        print(
            f"\nreaction (exporter step -> scale patch), scrape {SCRAPE_S:g}s, tick {TICK_S:g}s, "
            f"{len(reactions)} steps: median {med:.2f} s, p95 {p95:.2f} s, "
            f"min {min(reactions):.2f} s, max {max(reactions):.2f} s"
        )
        assert med < 30
    finally:
        stop.set()
        kube.stop()
        prom.stop()
        exp.stop()
