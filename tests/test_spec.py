"""Spec validation: one error listing every problem with its field path; SLO presets."""

from __future__ import annotations

import pytest

from autoscaler.config import LoadResult, dump_workloads, load_workloads, parse_workload
from policies import effective_policy_spec
from policies.spec import PolicySpec, SpecError, validate_policy_spec


def chat(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {"scenario": "chat", "capacity": {"rps_per_replica": 13}}
    base.update(kw)
    return base


def test_valid_spec_takes_defaults() -> None:
    spec = validate_policy_spec(chat())
    assert spec.min_replicas == 1 and spec.max_replicas == 10
    assert spec.lead_time.cold_s == 300.0 and spec.lead_time.warm_s == 45.0


def test_bad_spec_lists_every_problem_with_its_path() -> None:
    data = {
        "scenario": "chatbot",  # unknown scenario
        "min_replicas": 5,
        "max_replicas": 2,  # min > max
        "capacity": {"rps_per_replica": -1},  # negative capacity
        "pools": {"max_warm": -3},
    }
    with pytest.raises(SpecError) as ei:
        validate_policy_spec(data)
    paths = {p for p, _ in ei.value.problems}
    assert {"scenario", "min_replicas", "capacity.rps_per_replica", "pools.max_warm"} <= paths
    text = str(ei.value)
    assert "chatbot" in text and "min_replicas=5" in text and "max_replicas=2" in text


@pytest.mark.parametrize(
    ("data", "path", "words"),
    [
        pytest.param(
            chat(min_replicas=4, max_replicas=3),
            "min_replicas",
            "<= max_replicas",
            id="min-above-max",
        ),
        pytest.param(
            {"scenario": "rag"},
            "capacity.queue_per_replica",
            "needs",
            id="rag-needs-queue-capacity",
        ),
        pytest.param(
            {"scenario": "streaming"},
            "capacity.streams_per_replica",
            "tokens_per_s",
            id="streaming-needs-a-cap",
        ),
        pytest.param(
            chat(pools={"min_warm": 3, "max_warm": 1}),
            "pools.min_warm",
            "max_warm",
            id="warm-bounds",
        ),
        pytest.param(
            chat(rag={"short_window_s": 300, "long_window_s": 60}),
            "rag.short_window_s",
            "long_window_s",
            id="rag-windows",
        ),
        pytest.param(
            chat(unknown_field=1), "unknown_field", "Extra inputs", id="extra-field-forbidden"
        ),
        pytest.param(
            chat(slo={"percentile": 100}), "slo.percentile", "less than 100", id="percentile-bound"
        ),
    ],
)
def test_each_rule_names_its_field(data: dict[str, object], path: str, words: str) -> None:
    with pytest.raises(SpecError) as ei:
        validate_policy_spec(data)
    found = dict(ei.value.problems)
    assert path in found, ei.value.problems
    assert words in found[path]


@pytest.mark.parametrize(
    ("slo_class", "base_ratio", "max_warm", "quantile"),
    [
        pytest.param("tight", 0.5, 4, 0.95, id="tight-on-demand-baseline-small-warm-pool"),
        pytest.param("moderate", 0.2, 2, 0.95, id="moderate-mixed-with-burst-buffer"),
        pytest.param("flexible", 0.0, 0, 0.5, id="flexible-mostly-spot"),
    ],
)
def test_slo_class_presets(
    slo_class: str, base_ratio: float, max_warm: int, quantile: float
) -> None:
    spec = validate_policy_spec(chat(slo={"slo_class": slo_class}))
    pools = spec.resolved_pools
    assert pools.base_on_demand_ratio == base_ratio
    assert pools.max_warm == max_warm
    assert spec.forecast_quantile == quantile


def test_moderate_plans_on_the_slo_percentile() -> None:
    p99 = validate_policy_spec(chat(slo={"slo_class": "moderate", "percentile": 99}))
    assert p99.forecast_quantile == pytest.approx(0.99)
    tight = validate_policy_spec(chat(slo={"slo_class": "tight", "percentile": 99}))
    assert tight.forecast_quantile == 0.95  # tight's preset is a number, not the percentile


def test_explicit_fields_beat_the_preset() -> None:
    spec = validate_policy_spec(
        chat(slo={"slo_class": "tight"}, pools={"max_warm": 9}, forecast={"quantile": 0.7})
    )
    assert spec.resolved_pools.max_warm == 9
    assert spec.forecast_quantile == 0.7


def test_effective_spec_follows_the_deployments() -> None:
    spec = PolicySpec.model_validate(chat(pools={"min_warm": 1, "max_warm": 3}))

    class Targets:
        spot = None
        warm = None

    eff = effective_policy_spec(spec, Targets())
    assert eff.pools.spot_enabled is False
    assert eff.resolved_pools.max_warm == 0 and eff.resolved_pools.min_warm == 0


def test_workload_errors_name_fields_under_spec() -> None:
    with pytest.raises(SpecError) as ei:
        parse_workload("ns", "w", {"targets": {}, "policy": chat(max_replicas=0)})
    paths = {p for p, _ in ei.value.problems}
    assert "spec.targets.on_demand" in paths
    assert "spec.policy.max_replicas" in paths


def test_load_keeps_good_workloads_and_reports_bad_ones(tmp_path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "w.yaml"
    f.write_text(
        """
apiVersion: gpuautoscaler.io/v1alpha1
kind: AutoscalingPolicy
metadata: {name: good, namespace: inference}
spec:
  targets: {on_demand: good-od, spot: good-spot}
  policy: {scenario: chat, capacity: {rps_per_replica: 13}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: ignored}
---
apiVersion: gpuautoscaler.io/v1alpha1
kind: AutoscalingPolicy
metadata: {name: bad, namespace: inference}
spec:
  targets: {on_demand: bad-od}
  policy: {scenario: rag, min_replicas: 3, max_replicas: 1}
"""
    )
    res: LoadResult = load_workloads([f])
    assert [w.key for w in res.workloads] == ["inference/good"]
    assert len(res.errors) == 1
    msg = str(res.errors[0])
    assert "bad" in msg and "spec.policy.capacity.queue_per_replica" in msg
    assert "spec.policy.min_replicas" in msg
    # round trip
    g = tmp_path / "g.yaml"
    g.write_text(dump_workloads(res.workloads))
    again = load_workloads([g])
    assert again.workloads == res.workloads and not again.errors


def test_unreadable_and_empty_files_are_clear_errors(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SpecError, match="cannot read"):
        load_workloads([tmp_path / "missing.yaml"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_workloads([bad])
