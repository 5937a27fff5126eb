"""KEDA metrics-api JSON: `GET /v1/keda/{namespace}/{name}?pool=spot`.

For clusters that prefer KEDA's built-in `metrics-api` scaler over the external gRPC one:
point its `url` here with `valueLocation: value` and `targetValue: "1"`. The body carries
the same numbers the gRPC scaler serves (`autoscaler.keda.core`), e.g.::

    {"workload": "llm/chat", "pool": "spot", "metricName": "gpu-autoscaler-spot",
     "desiredReplicas": 3, "currentReplicas": 2, "value": 3.0, "target": 1.0,
     "active": true, "held": false, "stale": false, "reason": "ScaleUpForecast"}

Query parameters mirror the scalerMetadata keys: `pool` (spot | on_demand | on-demand |
warm; default: spot when the workload has a spot Deployment, else on_demand) and `deadBand`
(hold | overshoot). Errors are JSON `{"detail": "..."}`: 404 unknown workload, 422 bad
namespace/name/pool/deadBand or a pool the workload lacks, 503 before the first control tick
or when no DecisionStore is wired.

The app provides the store: `app.state.decision_store = store` (or override the
`decision_store` dependency).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from autoscaler.keda import core
from autoscaler.store import DecisionStore

router = APIRouter(tags=["keda"])


def decision_store(request: Request) -> DecisionStore:
    """The app's DecisionStore (`app.state.decision_store`); 503 when none is wired."""
    store = getattr(request.app.state, "decision_store", None)
    if not isinstance(store, DecisionStore):
        raise HTTPException(503, "no DecisionStore: set app.state.decision_store")
    return store


class KedaMetric(BaseModel):
    """One workload pool's replica metric for KEDA's metrics-api scaler."""

    model_config = ConfigDict(frozen=True)

    workload: str = Field(description="'<namespace>/<name>' of the AutoscalingPolicy.")
    pool: core.Pool
    metricName: str
    desiredReplicas: int = Field(ge=0, description="Replicas the controller wants for the pool.")
    currentReplicas: int | None = Field(
        description="The pool's spec.replicas in the last tick; null without a cluster view."
    )
    value: float = Field(
        ge=0, description="valueLocation: value. HPA with targetValue 1 lands on desired."
    )
    target: float = Field(gt=0, description="The targetValue to configure (1 per replica).")
    active: bool = Field(description="What the gRPC scaler's IsActive answers.")
    held: bool = Field(description="The controller holds the last good decision.")
    stale: bool = Field(description="The workload's metrics were stale this tick.")
    reason: str


@router.get(
    "/v1/keda/{namespace}/{name}",
    response_model=KedaMetric,
    responses={404: {"description": "unknown workload"}, 422: {"description": "bad request"}},
)
def get_keda_metric(
    namespace: str,
    name: str,
    store: Annotated[DecisionStore, Depends(decision_store)],
    pool: Annotated[str | None, Query(description="spot | on_demand | warm")] = None,
    dead_band: Annotated[
        str | None, Query(alias="deadBand", description="hold | overshoot")
    ] = None,
) -> KedaMetric:
    """The replica metric of one workload pool (same numbers as the gRPC GetMetrics)."""
    metadata = {"workload": f"{namespace}/{name}"}
    if pool is not None:
        metadata[core.KEY_POOL] = pool
    if dead_band is not None:
        metadata[core.KEY_DEAD_BAND] = dead_band
    try:
        view = core.lookup(store, core.parse_query("", "", metadata))
    except core.KedaRequestError as e:
        raise HTTPException(e.http_status, str(e)) from None
    return KedaMetric(
        workload=view.workload,
        pool=view.pool,
        metricName=view.metric_name,
        desiredReplicas=view.desired_replicas,
        currentReplicas=view.current_replicas,
        value=view.value,
        target=view.target,
        active=view.active,
        held=view.held,
        stale=view.stale,
        reason=view.reason,
    )
