"""Pure decision code: forecasting, scenario policies, HPA behavior, pool split, baselines.

No I/O, no clock: time is an argument. Everything works on arrays over workloads, so one
call decides for thousands of workloads:

    decisions, state = policies.decide(specs, state, observation, now_s)
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from policies.spec import PolicySpec, Scenario, SLOClass, SpecError, validate_policy_spec
from policies.types import ClusterFacts, Decision, Decisions, Floors, Observation, Policy

# Imported on first use: `import policies.types` stays light, and the numeric modules load
# only when a caller decides.
_LAZY = {
    "PolicyState": "policies.predictive",
    "PredictivePolicy": "policies.predictive",
    "decide": "policies.predictive",
    "SpecTable": "policies.table",
    "SCENARIO_BEHAVIOR": "policies.table",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'policies' has no attribute {name!r}")


def effective_policy_spec(spec: PolicySpec, targets: Any) -> PolicySpec:
    """The spec as the workload's Deployments allow it: no spot pool without a spot
    Deployment, no warm pool without a warm-pool Deployment. `targets` has optional
    `spot` and `warm` attributes (e.g. autoscaler.config.TargetsSpec)."""
    pools = spec.pools
    update: dict[str, Any] = {}
    if getattr(targets, "spot", None) is None and pools.spot_enabled:
        update["spot_enabled"] = False
    if getattr(targets, "warm", None) is None:
        update["min_warm"] = 0
        update["max_warm"] = 0
    if not update:
        return spec
    return spec.model_copy(update={"pools": pools.model_copy(update=update)})


__all__ = [
    "ClusterFacts",
    "Decision",
    "Decisions",
    "Floors",
    "Observation",
    "Policy",
    "PolicySpec",
    "PolicyState",
    "PredictivePolicy",
    "SCENARIO_BEHAVIOR",
    "SLOClass",
    "Scenario",
    "SpecError",
    "SpecTable",
    "decide",
    "effective_policy_spec",
    "validate_policy_spec",
]
