"""The in-cluster controller end to end: real Prometheus, Kubernetes API test server, the
real `Service` built from `gpu-autoscaler run` flags, ticks driven by the test.

Faults covered: NaN / negative / infinite metrics, API 500s (retries, no double patch), a
spot node tainted for interruption (on-demand spill-over patched within one tick),
Prometheus killed mid-run (hold, then recover), two controller instances (only the leader
patches; on leader loss the other takes over with the persisted state).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from autoscaler.service import Service, add_run_arguments
from tests import prom_fixtures
from tests.kube_apiserver import KubeAPIServer
from tests.prom_fixtures import VLLM_RUNNING, VLLM_WAITING, MetricsExporter, PrometheusServer

# a real Prometheus scraping a test-driven exporter (module-scoped fixtures)
prom_exporter = prom_fixtures.prom_exporter
prom_exporter_text = prom_fixtures.prom_exporter_text
prom_server = prom_fixtures.prom_server

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]

NS = "inference"


def deployment(name: str, replicas: int, ready: int | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai:v0.6.3"}]},
            },
        },
        "status": {"replicas": replicas, "readyReplicas": replicas if ready is None else ready},
    }


def node(name: str, spot: bool, taints: list[dict[str, str]] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {"karpenter.sh/capacity-type": "spot" if spot else "on-demand"},
        },
        "spec": {"taints": taints or []},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }


def pod(name: str, app: str, node_name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": {"app": app}},
        "spec": {"nodeName": node_name, "containers": [{"name": "vllm", "image": "x"}]},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
    }


def policy(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "gpuautoscaler.io/v1alpha1",
        "kind": "AutoscalingPolicy",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "targets": {"on_demand": f"{name}-od", "spot": f"{name}-spot"},
            "metrics": {"preset": "vllm", "rate_window_s": 5, "stale_after_s": 20},
            "policy": {
                "scenario": "chat",
                "slo": {"slo_class": "moderate"},
                "min_replicas": 1,
                "max_replicas": 20,
                # 10 req/s per replica at full utilization: arithmetic stays simple
                "capacity": {"rps_per_replica": 10, "target_utilization": 1.0},
                # plan on the current rate (no trend, no upper bound): exact arithmetic
                "forecast": {"method": "none", "quantile": 0.5},
                "pools": {"base_on_demand_ratio": 0.2, "spot_healthy_hold_s": 60},
            },
        },
    }


def kubeconfig(path: Path, url: str) -> Path:
    path.write_text(
        f"""apiVersion: v1
kind: Config
clusters: [{{name: test, cluster: {{server: "{url}"}}}}]
users: [{{name: test, user: {{token: test}}}}]
contexts: [{{name: test, context: {{cluster: test, user: test, namespace: {NS}}}}}]
current-context: test
"""
    )
    return path


def make_service(
    kube: KubeAPIServer, prom: PrometheusServer, tmp: Path, identity: str, leader: bool = False
) -> Service:
    parser = argparse.ArgumentParser()
    add_run_arguments(parser)
    argv = [
        "--prometheus-url",
        prom.url,
        "--kubeconfig",
        str(kubeconfig(tmp / f"kubeconfig-{identity}", kube.url)),
        "--scrape-interval",
        "1",
        "--identity",
        identity,
        "--lease-namespace",
        NS,
        "--lease-duration",
        "2",
        "--renew-deadline",
        "1.5",
        "--grpc-port",
        "0",
        "--no-live",
    ]
    if not leader:
        argv.append("--no-leader-elect")
    return Service(parser.parse_args(argv))


def wait_synced(svc: Service, timeout_s: float = 20.0) -> None:
    view = svc.backend.loop.cluster
    assert view.wait_synced(timeout_s)  # type: ignore[attr-defined]


def replicas(kube: KubeAPIServer, name: str) -> int:
    obj = kube.get("deployments", NS, name)
    assert obj is not None
    return int(obj["spec"]["replicas"])


def serve_load(
    exp: MetricsExporter, workload: str, rps: float, waiting: float = 0.0, settle_s: float = 6.0
) -> None:
    """Serve a steady load and wait until Prometheus' 5 s rate() window holds only it."""
    exp.set_vllm(
        NS,
        workload,
        waiting=waiting,
        running=rps * 0.5,
        success_rps=rps,
        prompt_tps=rps * 1000,
        generation_tps=rps * 200,
    )
    time.sleep(settle_s)


def tick_until(svc: Service, cond: Any, timeout_s: float = 45.0) -> Any:
    """Tick once a second until cond(report) holds (Prometheus needs a few scrapes)."""
    deadline = time.monotonic() + timeout_s
    report = None
    while time.monotonic() < deadline:
        report = svc.run_tick()
        if report is not None and cond(report):
            return report
        time.sleep(1.0)
    pytest.fail(f"condition not met within {timeout_s}s; last report: {report}")


@pytest.fixture()
def kube() -> Iterator[KubeAPIServer]:
    with KubeAPIServer() as server:
        for name, n in (("chat-od", 1), ("chat-spot", 2)):
            server.put(deployment(name, n))
        server.put(node("od-a", spot=False))
        server.put(node("spot-a", spot=True))
        server.put(node("spot-b", spot=True))
        server.put(pod("chat-spot-1", "chat-spot", "spot-a"))
        server.put(pod("chat-spot-2", "chat-spot", "spot-b"))
        server.put(pod("chat-od-1", "chat-od", "od-a"))
        server.put(policy("chat"))
        yield server


@pytest.fixture()
def service(
    kube: KubeAPIServer, prom_server: PrometheusServer, tmp_path: Path
) -> Iterator[Service]:
    svc = make_service(kube, prom_server, tmp_path, "solo")
    wait_synced(svc)
    try:
        yield svc
    finally:
        svc.backend.close()


def test_load_is_patched_with_event_and_persisted_state(
    service: Service, kube: KubeAPIServer, prom_exporter: MetricsExporter
) -> None:
    # 55 req/s at 10 per replica = 6 replicas (loads sit mid-way between replica counts so
    # rate() noise never flips a ceiling): on-demand base ceil(0.2 * 6) = 2, spot 4
    serve_load(prom_exporter, "chat", 55.0)
    patches: list[tuple[str, str, int]] = []

    def settled(r: Any) -> bool:
        patches.extend(r.patches)
        return replicas(kube, "chat-spot") == 4 and replicas(kube, "chat-od") == 2

    tick_until(service, settled)
    assert ("inference/chat", "spot", 4) in patches
    assert ("inference/chat", "on_demand", 2) in patches
    assert replicas(kube, "chat-spot") == 4
    assert replicas(kube, "chat-od") == 2
    rec = service.store.get("inference/chat")
    assert rec is not None and rec.decision.desired_total == 6 and not rec.decision.held
    events = kube.objects("events", NS)
    assert any(e["reason"].startswith("ScaleUp") and "chat-spot" in e["message"] for e in events)
    service.backend.loop.state_store.flush(5.0)  # type: ignore[union-attr]
    status = kube.get("autoscalingpolicies", NS, "chat")["status"]  # type: ignore[index]
    assert status["policyState"]["version"] == 1
    assert status["desiredReplicas"]["total"] == 6


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(math.nan, id="nan"),
        pytest.param(-5.0, id="negative"),
        pytest.param(math.inf, id="infinite"),
    ],
)
def test_bad_metric_values_hold_never_scale_down(
    service: Service, kube: KubeAPIServer, prom_exporter: MetricsExporter, bad: float
) -> None:
    serve_load(prom_exporter, "chat", 25.0)
    tick_until(service, lambda r: "inference/chat" not in r.held)
    before = replicas(kube, "chat-od") + replicas(kube, "chat-spot")
    # every demand series of the workload turns bad
    prom_exporter.remove(NS, "chat")
    for metric in (VLLM_WAITING, VLLM_RUNNING):
        prom_exporter.set_gauge(metric, NS, "chat", bad)
    report = tick_until(service, lambda r: "inference/chat" in r.held)
    rec = service.store.get("inference/chat")
    assert rec is not None and rec.decision.reason == "HoldStaleMetrics"
    assert not [p for p in report.patches if p[0] == "inference/chat"]
    # while the series turn bad a transient value may still scale up; never down
    assert replicas(kube, "chat-od") + replicas(kube, "chat-spot") >= before


def test_api_500_retries_without_double_patch(
    service: Service, kube: KubeAPIServer, prom_exporter: MetricsExporter
) -> None:
    serve_load(prom_exporter, "chat", 25.0)  # 3 replicas: od 1, spot 2 (already so)
    tick_until(service, lambda r: "inference/chat" not in r.held)
    serve_load(prom_exporter, "chat", 75.0)  # 8: od 2, spot 6
    # the spot patch lands but the API answers 500: the actuator re-reads and stops
    kube.inject(
        "patch", "deployments", subresource="scale", name="chat-spot", code=500, after_apply=True
    )
    kube.clear_requests()
    report = tick_until(service, lambda r: replicas(kube, "chat-spot") == 6)
    patches = [
        r
        for r in kube.requests
        if r.verb == "patch" and r.subresource == "scale" and r.name == "chat-spot"
    ]
    # the patch that landed behind a 500 is never sent again: every patch carries a new
    # value (the load may still be settling into Prometheus' rate window, 5 then 6)
    values = [r.body["spec"]["replicas"] for r in patches]
    assert patches, "no scale patch was made"
    assert len(values) == len(set(values)), [(r.status, r.body) for r in patches]
    assert patches[0].status == 500, [(r.status, r.body) for r in patches]
    assert not report.errors.get("inference/chat")


def test_spot_interruption_notice_spills_to_on_demand_within_one_tick(
    service: Service, kube: KubeAPIServer, prom_exporter: MetricsExporter
) -> None:
    serve_load(prom_exporter, "chat", 25.0)  # od 1, spot 2
    tick_until(service, lambda r: "inference/chat" not in r.held)
    assert replicas(kube, "chat-od") == 1
    kube.put(
        node(
            "spot-a",
            spot=True,
            taints=[
                {
                    "key": "aws-node-termination-handler/spot-itn",
                    "value": "true",
                    "effect": "NoSchedule",
                }
            ],
        )
    )
    time.sleep(0.5)  # the watch delivers the taint
    report = service.run_tick()
    assert report is not None
    # one spot replica on the tainted node: on-demand 1 + 1, patched in this very tick
    assert ("inference/chat", "on_demand", 2) in report.patches
    assert replicas(kube, "chat-od") == 2
    assert service.store.get("inference/chat").decision.reason == "SpotSpillover"  # type: ignore[union-attr]


def test_two_instances_only_the_leader_patches_and_failover_keeps_state(
    kube: KubeAPIServer,
    prom_server: PrometheusServer,
    prom_exporter: MetricsExporter,
    tmp_path: Path,
) -> None:
    a = make_service(kube, prom_server, tmp_path, "ctl-a", leader=True)
    b = None
    try:
        wait_synced(a)
        serve_load(prom_exporter, "chat", 95.0)  # 10 replicas
        tick_until(a, lambda r: replicas(kube, "chat-spot") >= 8)
        assert a.status.leader
        a_rec = a.store.get("inference/chat")
        assert a_rec is not None
        high = a_rec.decision.desired_total  # 10, or 11 while the ramp is in the rate window
        assert high >= 10
        a.backend.loop.state_store.flush(5.0)  # type: ignore[union-attr]

        # load drops; B starts now and has never seen the high load itself
        serve_load(prom_exporter, "chat", 15.0)
        b = make_service(kube, prom_server, tmp_path, "ctl-b", leader=True)
        wait_synced(b)
        kube.clear_requests()
        b.run_tick()
        assert not b.status.leader
        assert not [r for r in kube.requests if r.verb == "patch" and r.subresource == "scale"]

        # A stops renewing (crash); after the lease expires B leads with A's history: the
        # 600 s chat stabilization window still holds A's level, so B does not scale down
        # (a fresh controller would shed a pod at once: 15 req/s needs only 2).
        time.sleep(2.5)
        tick_until(b, lambda r: b.status.leader and "inference/chat" not in r.held)
        rec = b.store.get("inference/chat")
        assert rec is not None and rec.decision.desired_total == high, rec.decision
        assert replicas(kube, "chat-spot") + replicas(kube, "chat-od") == high
        lease = kube.get("leases", NS, "gpu-autoscaler-leader")
        assert lease is not None and lease["spec"]["holderIdentity"] == "ctl-b"
    finally:
        a.backend.close()
        if b is not None:
            b.backend.close()


def test_prometheus_killed_mid_run_holds_then_recovers(
    service: Service,
    kube: KubeAPIServer,
    prom_server: PrometheusServer,
    prom_exporter: MetricsExporter,
) -> None:
    serve_load(prom_exporter, "chat", 45.0)
    tick_until(service, lambda r: "inference/chat" not in r.held and not r.patches)
    before = {n: replicas(kube, n) for n in ("chat-od", "chat-spot")}
    prom_server.kill()
    try:
        report = service.run_tick()
        assert report is not None and report.metrics_error
        assert "inference/chat" in report.held and not report.patches
        assert {n: replicas(kube, n) for n in before} == before
        assert service.status.last_tick_error
    finally:
        prom_server.start()
    tick_until(
        service, lambda r: r.metrics_error is None and "inference/chat" not in r.held, timeout_s=40
    )
