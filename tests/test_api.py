"""The HTTP API on an in-process ASGI transport: workloads with reasons and schedules."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import numpy as np
import pytest

from autoscaler.api import ServiceStatus, create_app
from autoscaler.config import parse_workload
from autoscaler.loop import ControlLoop
from autoscaler.protocols import MetricWindows, PermanentError, TemporaryError
from autoscaler.schedules import ScheduleEvaluator
from autoscaler.store import DecisionStore
from autoscaler.telemetry import Telemetry
from policies.types import ClusterFacts

LAUNCH = "2030-01-01T10:00:00+00:00"


def workload() -> Any:
    return parse_workload(
        "llm",
        "chat",
        {
            "targets": {"on_demand": "chat-od"},
            "policy": {
                "scenario": "chat",
                "capacity": {"rps_per_replica": 10},
                "schedules": [
                    {
                        "name": "launch",
                        "start": LAUNCH,
                        "duration_s": 600,
                        "prewarm_s": 300,
                        "min_replicas": 6,
                    },
                ],
            },
        },
    )


class Static:
    """MetricsSource, ClusterView and Actuator in one: fixed load, records patches."""

    def __init__(self) -> None:
        self.patches: list[tuple[str, int]] = []
        self.replicas = 1

    def observe(self, workloads: Any, now_s: float) -> MetricWindows:
        t = np.arange(now_s - 60, now_s + 1e-9, 15.0)
        return MetricWindows(
            t_s=t,
            metrics={"rps": np.full((len(workloads), t.size), 5.0)},
            stale=np.zeros(len(workloads), dtype=bool),
        )

    def history(self, workloads: Any, start_s: float, end_s: float, step_s: float) -> Any:
        return self.observe(workloads, end_s)

    def facts(self, workloads: Any, now_s: float) -> ClusterFacts:
        return ClusterFacts.uniform(len(workloads), spot=0, on_demand=self.replicas)

    def set_replicas(self, namespace: str, deployment: str, replicas: int, reason: str) -> bool:
        self.patches.append((deployment, replicas))
        self.replicas = replicas
        return True


def get(app: Any, path: str) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            return await c.get(path)

    return asyncio.run(go())


def test_workloads_show_decision_reason_and_schedules() -> None:
    from datetime import datetime

    sim = Static()
    store = DecisionStore()
    sched = ScheduleEvaluator()
    loop = ControlLoop([workload()], sim, sim, sim, store=store, schedules=sched)
    status = ServiceStatus(
        store=store, telemetry=Telemetry(store), mode="test", workloads=[workload()]
    )
    now = datetime.fromisoformat(LAUNCH).timestamp() - 3600.0
    status.schedules = lambda w: sched.describe(w, now)
    app = create_app(status)

    assert get(app, "/readyz").status_code == 503  # no tick yet
    before = get(app, "/v1/workloads/llm/chat").json()
    assert before["reason"] == "Pending"

    # inside the pre-warm lead of the launch entry: the floor applies and says so
    now = datetime.fromisoformat(LAUNCH).timestamp() - 120.0
    loop.tick(now)
    status.last_tick_wall_s = status.clock()
    body = get(app, "/v1/workloads/llm/chat").json()
    assert body["desiredTotal"] == 6 and body["reason"] == "ScheduleFloor"
    assert "schedule launch active" in body["message"]
    assert [a["name"] for a in body["schedules"]["active"]] == ["launch"]
    assert sim.patches == [("chat-od", 6)]
    assert get(app, "/readyz").status_code == 200

    # a day earlier: the entry is upcoming, with its pre-warm start
    now = datetime.fromisoformat(LAUNCH).timestamp() - 86400.0
    listing = get(app, "/v1/workloads").json()
    item = listing["items"][0]
    assert item["schedules"]["active"] == []
    assert item["schedules"]["upcoming"][0]["prewarmFrom"].startswith("2030-01-01T09:55:00")

    assert get(app, "/v1/workloads/llm/nope").status_code == 404
    metrics = get(app, "/metrics").text
    assert (
        'gpu_autoscaler_desired_replicas{namespace="llm",pool="on_demand",workload="chat"} 6.0'
        in metrics
    )


def test_invalid_workloads_are_listed_with_their_fields() -> None:
    store = DecisionStore()
    bad = {
        "source": "AutoscalingPolicy llm/broken",
        "key": "llm/broken",
        "problems": [{"field": "spec.policy.max_replicas", "message": "greater than 0"}],
    }
    status = ServiceStatus(store=store, telemetry=Telemetry(store), invalid=[bad])
    app = create_app(status)
    assert get(app, "/v1/workloads").json()["invalid"] == [bad]
    r = get(app, "/v1/workloads/llm/broken")
    assert r.status_code == 422 and r.json()["detail"]["problems"][0]["field"].endswith(
        "max_replicas"
    )


def test_a_misconfigured_metrics_source_holds_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Failing(Static):
        error: Exception = PermanentError("HTTP 401 from http://prometheus:9090: unauthorized")

        def observe(self, workloads: Any, now_s: float) -> MetricWindows:
            raise self.error

    sim = Failing()
    loop = ControlLoop([workload()], sim, sim, sim, store=DecisionStore())
    with caplog.at_level(logging.WARNING, logger="autoscaler.loop"):
        report = loop.tick(1_000.0)
    assert report.metrics_error is not None
    assert report.metrics_error.startswith("metrics source misconfigured: HTTP 401")
    assert [r.levelno for r in caplog.records] == [logging.ERROR]
    assert sim.patches == []  # held: nothing patched
    caplog.clear()
    sim.error = TemporaryError("connection refused")
    with caplog.at_level(logging.WARNING, logger="autoscaler.loop"):
        report = loop.tick(1_015.0)
    assert report.metrics_error == "connection refused"
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
