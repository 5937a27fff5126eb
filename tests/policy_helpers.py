"""Builders for policy tests: specs, observations and a tiny driver loop."""

from __future__ import annotations

from typing import Any

import numpy as np

from policies import PredictivePolicy, validate_policy_spec
from policies.spec import PolicySpec
from policies.types import ClusterFacts, Decisions, Observation


def spec(scenario: str = "chat", **kw: Any) -> PolicySpec:
    caps = {
        "chat": {"rps_per_replica": 10.0, "target_utilization": 1.0},
        "rag": {"queue_per_replica": 10.0, "target_utilization": 1.0},
        "streaming": {"streams_per_replica": 16.0},
        "batch": {"rps_per_replica": 1.0},
    }
    data: dict[str, Any] = {"scenario": scenario, "capacity": caps[scenario], "max_replicas": 100}
    data.update(kw)
    return validate_policy_spec(data)


def facts(n: int, spot: int = 0, on_demand: int = 1, warm: int = 0, **kw: Any) -> ClusterFacts:
    f = ClusterFacts.uniform(n, spot=spot, on_demand=on_demand, warm=warm)
    for k, v in kw.items():
        getattr(f, k)[:] = v
    return f


def window(
    now_s: float, values: dict[str, Any], n: int = 1, step_s: float = 15.0, span_s: float = 600.0
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Metric windows ending at now_s; each value is a scalar, a function of t, or [s]."""
    t = np.arange(now_s - span_s + step_s, now_s + 1e-9, step_s)
    out: dict[str, np.ndarray] = {}
    for fam, v in values.items():
        if callable(v):
            row = np.asarray([v(x) for x in t], dtype=float)
        else:
            row = np.broadcast_to(np.asarray(v, dtype=float), t.shape).astype(float)
        out[fam] = np.tile(row, (n, 1))
    return t, out


class Driver:
    """Runs the policy tick by tick, applying its decisions as the new current replicas."""

    def __init__(
        self, specs: list[PolicySpec], spot: int = 0, on_demand: int = 1, warm: int = 0
    ) -> None:
        self.policy = PredictivePolicy()
        self.table = self.policy.compile(specs)
        self.state = self.policy.initial_state(self.table)
        self.n = len(specs)
        self.current = {"spot": spot, "on_demand": on_demand, "warm": warm}
        self.extra: dict[str, Any] = {}

    def step(
        self,
        now_s: float,
        values: dict[str, Any],
        apply: bool = True,
        step_s: float = 15.0,
        **fact_kw: Any,
    ) -> Decisions:
        t, m = window(now_s, values, self.n, step_s=step_s)
        f = facts(self.n, **self.current, **fact_kw)
        obs = Observation(t_s=t, metrics=m, cluster=f)
        d, self.state = self.policy.decide(self.table, self.state, obs, now_s)
        if apply:
            self.current = {
                "spot": int(d.spot[0]),
                "on_demand": int(d.on_demand[0]),
                "warm": int(d.warm[0]),
            }
        return d
