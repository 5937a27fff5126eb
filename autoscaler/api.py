"""HTTP API (FastAPI): health, Prometheus metrics, and what the loop decided and why.

GET /healthz                          process is alive
GET /readyz                           a tick completed recently (503 otherwise)
GET /metrics                          Prometheus exposition of the controller's metrics
GET /v1/workloads                     every workload: spec, current state, last decision
GET /v1/workloads/{namespace}/{name}  one workload, with its reason and forecast
GET /v1/keda/{namespace}/{name}       KEDA metrics-api JSON (see docs/keda.md)
GET /docs, /openapi.json              OpenAPI docs
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, HTTPException, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from autoscaler.config import Workload
from autoscaler.protocols import DecisionRecord
from autoscaler.store import DecisionStore
from autoscaler.telemetry import Telemetry


@dataclass
class ServiceStatus:
    """Mutable facts the API reports; the service updates them."""

    store: DecisionStore
    telemetry: Telemetry
    mode: str = "embedded"
    tick_interval_s: float = 5.0
    last_tick_wall_s: float | None = None
    last_tick_error: str | None = None
    leader: bool = True
    workloads: list[Workload] = field(default_factory=list)
    invalid: list[dict[str, Any]] = field(default_factory=list)
    clock: Callable[[], float] = time.monotonic
    # workload key -> list of schedule entries (active and upcoming), filled by the service
    schedules: Callable[[Workload], dict[str, Any]] | None = None


def _record_json(rec: DecisionRecord | None, w: Workload, status: ServiceStatus) -> dict[str, Any]:
    out: dict[str, Any] = {
        "namespace": w.namespace,
        "name": w.name,
        "scenario": w.spec.policy.scenario.value,
        "spec": w.spec.model_dump(mode="json", by_alias=True, exclude_none=True),
    }
    if rec is not None:
        d = rec.decision
        out.update(
            {
                "decidedAt": rec.at_s,
                "current": dict(rec.current),
                "ready": dict(rec.ready),
                "desired": {"spot": d.spot, "on_demand": d.on_demand, "warm": d.warm},
                "desiredTotal": d.desired_total,
                "reason": d.reason,
                "message": d.message,
                "holding": d.held,
                "stale": rec.stale,
                "active": rec.active,
                "forecast": {
                    "demandNow": _num(d.demand_now),
                    "mean": _num(d.forecast),
                    "upper": _num(d.forecast_upper),
                },
                "actuated": dict(rec.actuated),
                "errors": list(rec.errors),
            }
        )
    else:
        out["reason"] = "Pending"
        out["message"] = "no decision yet"
    if status.schedules is not None:
        out["schedules"] = status.schedules(w)
    return out


def _num(x: float) -> float | None:
    return x if x == x and abs(x) != float("inf") else None


def create_app(status: ServiceStatus) -> FastAPI:
    app = FastAPI(
        title="gpu-autoscaler",
        version="0.1.0",
        description="Predictive, SLO-aware autoscaler for GPU inference: decisions and reasons.",
    )

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    def readyz(response: Response) -> dict[str, Any]:
        last = status.last_tick_wall_s
        age = None if last is None else status.clock() - last
        # ready once a tick has run and the loop is not wedged (3 missed ticks)
        ok = age is not None and age <= max(3 * status.tick_interval_s, 15.0)
        if not ok:
            response.status_code = 503
        return {
            "ready": ok,
            "lastTickAgeSeconds": age,
            "leader": status.leader,
            "mode": status.mode,
            "lastTickError": status.last_tick_error,
        }

    @app.get("/metrics", tags=["metrics"])
    def metrics() -> Response:
        return Response(generate_latest(status.telemetry.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/workloads", tags=["workloads"])
    def list_workloads() -> dict[str, Any]:
        items = [_record_json(status.store.get(w.key), w, status) for w in status.workloads]
        return {
            "mode": status.mode,
            "leader": status.leader,
            "items": items,
            "invalid": status.invalid,
        }

    @app.get("/v1/workloads/{namespace}/{name}", tags=["workloads"])
    def get_workload(namespace: str, name: str) -> dict[str, Any]:
        key = f"{namespace}/{name}"
        for w in status.workloads:
            if w.key == key:
                return _record_json(status.store.get(key), w, status)
        for bad in status.invalid:
            if bad.get("key") == key:
                raise HTTPException(422, detail=bad)
        raise HTTPException(404, detail=f"unknown workload {key}")

    try:
        from autoscaler.keda.http import router as keda_router
    except ImportError:
        pass
    else:
        app.state.decision_store = status.store
        app.include_router(keda_router)
    return app
