"""KEDA integration: an external scaler (gRPC) and a metrics-api JSON route over the
DecisionStore, so KEDA's HPA runs each pool at the controller's desired replicas.

- `autoscaler.keda.server`: `serve(store, address, tls, max_workers) -> grpc.Server`, the
  `externalscaler.ExternalScaler` service (wire-compatible with KEDA's
  pkg/scalers/externalscaler/externalscaler.proto) plus gRPC health.
- `autoscaler.keda.http`: `router`, `GET /v1/keda/{namespace}/{name}?pool=...` for KEDA's
  metrics-api scaler (`valueLocation: value`, `targetValue: "1"`).
- `autoscaler.keda.core`: request parsing, the replica metric and its HPA arithmetic.
- `autoscaler.keda.cli`: the `keda-check` subcommand; `autoscaler.keda.regen` rebuilds gen/.

scalerMetadata keys (the trigger's `metadata`; KEDA sends all of it, so unknown keys such as
`scalerAddress` or `enableTLS` are ignored; known keys are validated, "" counts as unset):

- `workload`: `<namespace>/<name>` of the AutoscalingPolicy; default: the ScaledObjectRef's
  namespace and name.
- `pool`: `spot`, `on_demand` (or `on-demand`), `warm`; default: `spot` when the workload has
  a spot Deployment, else `on_demand`.
- `deadBand`: `hold` (default) or `overshoot`, how a scale-up inside the HPA's tolerance band
  is handled (see `autoscaler.keda.core`).

The metric: target 1 per replica, value in (desired - 1, desired], so KEDA's HPA
(AverageValue) computes exactly the desired replicas whenever it leaves its 10% tolerance
band; docs/keda.md has the arithmetic and the dead band analysis.
"""

from autoscaler.keda.core import (
    METADATA_KEYS,
    InvalidScalerMetadata,
    KedaRequestError,
    NoDecisionYet,
    PoolNotConfigured,
    ScalerQuery,
    ScalerView,
    WorkloadNotFound,
    lookup,
    metric_name,
    parse_query,
    replica_metric_value,
)

__all__ = [
    "METADATA_KEYS",
    "InvalidScalerMetadata",
    "KedaRequestError",
    "NoDecisionYet",
    "PoolNotConfigured",
    "ScalerQuery",
    "ScalerView",
    "WorkloadNotFound",
    "lookup",
    "metric_name",
    "parse_query",
    "replica_metric_value",
]
