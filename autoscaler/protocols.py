"""The small Protocols the control loop talks through, owned by the loop.

The loop (`autoscaler.loop.ControlLoop`) never knows whether it talks to a cluster or to the
simulator: `autoscaler.adapters` implements these over Prometheus and the Kubernetes API,
`simulator` over a simulated GPU cluster with a simulated clock.

Adapters raise the exceptions below (never a client library's), classed by how the loop
responds: a `TemporaryError` holds the affected workloads this tick and retries next tick.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from autoscaler.config import Workload, WorkloadKey
from policies.types import F64, ClusterFacts, Decision, Floors


class AdapterError(Exception):
    """Base class of errors raised by adapters."""


class TemporaryError(AdapterError):
    """Retry later (timeouts, 5xx, connection refused). `delay_s` suggests when."""

    def __init__(self, message: str, delay_s: float = 0.0) -> None:
        super().__init__(message)
        self.delay_s = delay_s


class PermanentError(AdapterError):
    """Retrying the same call will not help (404 target missing, 422 invalid, 403 RBAC)."""


class ConflictError(TemporaryError):
    """The object changed under us (HTTP 409); re-read and retry."""


@dataclass(frozen=True)
class MetricWindows:
    """Metric windows for the workloads asked for, in that order.

    t_s: [s] sample times (seconds, same clock as now_s), oldest first.
    metrics: family -> [n, s] float64, NaN where missing.
    stale: [n] bool; errors: row index -> message for rows the source could not serve.
    """

    t_s: F64
    metrics: Mapping[str, F64]
    stale: np.ndarray
    errors: Mapping[int, str] = field(default_factory=dict)


class MetricsSource(Protocol):
    def observe(self, workloads: Sequence[Workload], now_s: float) -> MetricWindows:
        """Recent window for every workload; ONE query per metric family for all of them.

        Raises TemporaryError when the backend is unreachable (the loop holds everything)."""
        ...

    def history(
        self, workloads: Sequence[Workload], start_s: float, end_s: float, step_s: float
    ) -> MetricWindows:
        """A longer range (seeds forecast history at start-up, feeds refits)."""
        ...


class ClusterView(Protocol):
    def facts(self, workloads: Sequence[Workload], now_s: float) -> ClusterFacts:
        """Current and ready replicas per pool, spot replicas under an interruption notice,
        spot pods pending too long. Raises TemporaryError when the view is not in sync."""
        ...


class Actuator(Protocol):
    def set_replicas(self, namespace: str, deployment: str, replicas: int, reason: str) -> bool:
        """Set spec.replicas through the scale subresource; True when a patch was made
        (False when it already had that value). Raises ConflictError/TemporaryError/
        PermanentError."""
        ...


class EventRecorder(Protocol):
    def record(self, workload: Workload, reason: str, message: str, warning: bool = False) -> None:
        """A Kubernetes Event on the workload's object (best effort, never raises)."""
        ...


class StateStore(Protocol):
    """Where policy state survives restarts and failover (the custom resource's status)."""

    def load(self, workloads: Sequence[Workload]) -> Mapping[WorkloadKey, dict[str, Any]]: ...

    def save(
        self,
        workload: Workload,
        state: dict[str, Any],
        decision: Decision | None,
        conditions: Sequence[Mapping[str, str]],
        now_s: float,
    ) -> None:
        """Persist (implementations may rate-limit per workload); never raises."""
        ...


class ScheduleSource(Protocol):
    """Scheduled floors (pre-warm before launches, time-of-day bounds) active at now_s."""

    def floors(self, workloads: Sequence[Workload], now_s: float) -> Floors: ...


@dataclass(frozen=True)
class DecisionRecord:
    """What the loop decided for one workload, as served by the API, KEDA and metrics."""

    key: WorkloadKey
    workload: Workload
    decision: Decision
    at_s: float
    current: Mapping[str, int]  # pool -> spec.replicas seen this tick
    ready: Mapping[str, int]
    actuated: Mapping[str, int]  # pool -> replicas patched this tick (empty when none)
    errors: Sequence[str]
    stale: bool
    # demand signal for KEDA's IsActive (queue/backlog/rps > 0 in the newest sample)
    active: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "namespace": self.workload.namespace,
            "name": self.workload.name,
            "scenario": self.workload.spec.policy.scenario.value,
            "at_s": self.at_s,
            "decision": self.decision.to_dict(),
            "current": dict(self.current),
            "ready": dict(self.ready),
            "actuated": dict(self.actuated),
            "errors": list(self.errors),
            "stale": self.stale,
            "active": self.active,
        }
