"""policies.hpa against Kubernetes' own tables.

Rows cite the upstream test they replay: RCT = kubernetes/kubernetes
pkg/controller/podautoscaler/replica_calculator_test.go, HCT = horizontal_test.go (same
directory). Upstream builds pods with two containers, each requesting the pod's quantity and
using its level, so a pod requests 2 x request and uses 2 x level (`_pods` does the same); the
raw average is per pod, as upstream's `expectedValue = numContainersPerPod * level`.
CPU readiness rows use upstream's testing flags (2 min initialization, 10 s readiness delay),
`hotCPUCreationTime` = now and `coolCPUCreationTime` = now - 3 min.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies.hpa import (
    ABOVE_MAX_REPLICAS,
    BELOW_MIN_REPLICAS,
    COMPUTE_FROM_METRICS,
    DESIRED_WITHIN_RANGE,
    HELD,
    SCALE_DOWN_LIMIT,
    SCALE_DOWN_STABILIZED,
    SCALE_UP_LIMIT,
    SCALING_DISABLED,
    TOO_FEW_REPLICAS,
    TOO_MANY_REPLICAS,
    BehaviorState,
    BehaviorTable,
    CPUReadiness,
    HPABehavior,
    HPAHistory,
    MetricError,
    PodInfo,
    Recommendation,
    ScaleEvent,
    ScalingPolicy,
    ScalingRules,
    Tolerances,
    apply_behavior,
    behavior_step,
    calculate_legacy_scale_up_limit,
    calculate_scale_down_limit,
    calculate_scale_up_limit,
    convert_desired_replicas_with_behavior_rate,
    convert_desired_replicas_with_rules,
    count_ready_pods,
    default_scale_down_rules,
    default_scale_up_rules,
    get_replicas_change_per_period,
    group_pods,
    normalize_desired_replicas,
    normalize_desired_replicas_with_behaviors,
    reconcile_order,
    replicas_for_average_value,
    replicas_for_metrics,
    replicas_for_plain_metric,
    replicas_for_utilization,
    replicas_for_value,
    resolve_behavior,
    stabilize_recommendation,
    stabilize_recommendation_with_behaviors,
)
from policies.spec import BehaviorSpec, ScalingPolicySpec, ScalingRulesSpec

NOW = 100_000.0
HOT = NOW  # hotCPUCreationTime
COOL = NOW - 180.0  # coolCPUCreationTime
CPU = CPUReadiness(NOW, cpu_initialization_period_s=120.0, delay_of_initial_readiness_status_s=10.0)
MIN = 60.0


def _pods(
    levels: Sequence[int],
    requests: Sequence[float] | None = None,
    n: int | None = None,
    readiness: Sequence[bool] | None = None,
    phases: Sequence[str] | None = None,
    deleting: Sequence[bool] | None = None,
    start: Sequence[float] | None = None,
) -> list[PodInfo]:
    """Pods as RCT `prepareTestClientSet` builds them (2 containers per pod)."""
    count = n if n is not None else max(len(levels), len(phases or ()))
    pods = []
    for i in range(count):
        pods.append(
            PodInfo(
                value=2 * levels[i] if i < len(levels) else None,
                request=None if requests is None else round(2 * 1000 * requests[i]),
                phase=phases[i] if phases else "Running",
                ready=readiness[i] if readiness else True,
                deleting=deleting[i] if deleting else False,
                start_time_s=start[i] if start else 0.0,
            )
        )
    return pods


ONE = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)  # resource.MustParse("1.0") per pod


# --------------------------------------------------------------------------------------------
# Tolerances
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tol, ratio, within",
    [
        # isWithin's bounds are inclusive: 0.9 and 1.1 are inside the default band
        pytest.param(Tolerances(), 0.9, True, id="lower-bound-inclusive"),
        pytest.param(Tolerances(), 1.1, True, id="upper-bound-inclusive"),
        pytest.param(Tolerances(), 1.1000001, False, id="just-above-band"),
        pytest.param(Tolerances(), 0.8999999, False, id="just-below-band"),
        # KEP-4951: separate sides, e.g. scaleUp.tolerance 0 scales on any increase
        pytest.param(Tolerances(scale_down=0.1, scale_up=0.0), 1.01, False, id="zero-up-tol"),
        pytest.param(Tolerances(scale_down=0.5, scale_up=0.0), 0.6, True, id="wide-down-tol"),
        pytest.param(Tolerances(), math.nan, False, id="nan-never-within"),
    ],
)
def test_tolerances_is_within(tol: Tolerances, ratio: float, within: bool) -> None:
    assert tol.is_within(ratio) is within


# --------------------------------------------------------------------------------------------
# Replica calculator: Resource metric, AverageUtilization target
# --------------------------------------------------------------------------------------------

RESOURCE_CASES = [
    # RCT TestReplicaCalcScaleUp: util (600+1000+1400)*100/6000 = 50; 50/30 -> ceil(1.667*3) = 5
    pytest.param(3, 30, _pods([300, 500, 700], ONE), None, (5, 50, 1000), id="ScaleUp"),
    # RCT TestReplicaCalcScaleUpUnreadyLessScale: pod 0 unready (CPU); util over the 2 ready
    # pods (1000+1400)*100/4000 = 60 -> 2.0 > 1 with unready: slow path, unready count as 0:
    # 2400*100/6000 = 40 -> 40/30 = 1.333 -> ceil(1.333*3) = 4
    pytest.param(
        3,
        30,
        _pods([300, 500, 700], ONE, readiness=[False, True, True]),
        CPU,
        (4, 60, 1200),
        id="ScaleUpUnreadyLessScale",
    ),
    # RCT TestReplicaCalcScaleUpHotCpuLessScale: the hot pod's sample predates Ready + window
    pytest.param(
        3,
        30,
        _pods([300, 500, 700], ONE, start=[HOT, COOL, COOL]),
        CPU,
        (4, 60, 1200),
        id="ScaleUpHotCpuLessScale",
    ),
    # RCT TestReplicaCalcScaleUpUnreadyNoScale: 1 ready pod at 40% -> 1.333; with 2 unready at 0:
    # 800*100/6000 = 13 -> 0.433 flips direction -> keep 3
    pytest.param(
        3,
        30,
        _pods([400, 500, 700], ONE, readiness=[True, False, False]),
        CPU,
        (3, 40, 800),
        id="ScaleUpUnreadyNoScale",
    ),
    # RCT TestReplicaCalcScaleHotCpuNoScale: same, the two unready pods are also hot
    pytest.param(
        3,
        30,
        _pods([400, 500, 700], ONE, readiness=[True, False, False], start=[COOL, HOT, HOT]),
        CPU,
        (3, 40, 800),
        id="ScaleHotCpuNoScale",
    ),
    # RCT TestReplicaCalcScaleUpIgnoresFailedPods: Failed pods are dropped: 60/30 -> ceil(2*2) = 4
    pytest.param(
        2,
        30,
        _pods(
            [500, 700],
            ONE,
            readiness=[True, True, False, False],
            phases=["Running", "Running", "Failed", "Failed"],
        ),
        CPU,
        (4, 60, 1200),
        id="ScaleUpIgnoresFailedPods",
    ),
    # RCT TestReplicaCalcScaleUpIgnoresDeletionPods: pods being deleted are dropped the same way
    pytest.param(
        2,
        30,
        _pods(
            [500, 700],
            ONE,
            n=4,
            readiness=[True, True, False, False],
            deleting=[False, False, True, True],
        ),
        CPU,
        (4, 60, 1200),
        id="ScaleUpIgnoresDeletionPods",
    ),
    # RCT TestReplicaCalcScaleDown: 2800*100/10000 = 28; 28/50 = 0.56 -> ceil(0.56*5) = 3
    pytest.param(5, 50, _pods([100, 300, 500, 250, 250], ONE), None, (3, 28, 560), id="ScaleDown"),
    # RCT TestReplicaCalcScaleDownExcludeUnreadyPods: 3 ready pods at 30% -> ceil(0.6*3) = 2
    pytest.param(
        5,
        50,
        _pods([100, 300, 500, 250, 250], ONE, readiness=[True, True, True, False, False]),
        CPU,
        (2, 30, 600),
        id="ScaleDownExcludeUnreadyPods",
    ),
    # RCT TestReplicaCalcScaleDownExcludeUnscheduledPods: Pending pods are unready: 10/50 -> 1
    pytest.param(
        5,
        50,
        _pods(
            [100],
            ONE,
            readiness=[True, False, False, False, False],
            phases=["Running", "Pending", "Pending", "Pending", "Pending"],
        ),
        CPU,
        (1, 10, 200),
        id="ScaleDownExcludeUnscheduledPods",
    ),
    # RCT TestReplicaCalcScaleDownIgnoreHotCpuPods: the 2 hot pods are unready -> 2
    pytest.param(
        5,
        50,
        _pods([100, 300, 500, 250, 250], ONE, start=[COOL, COOL, COOL, HOT, HOT]),
        CPU,
        (2, 30, 600),
        id="ScaleDownIgnoreHotCpuPods",
    ),
    # RCT TestReplicaCalcScaleDownIgnoresFailedPods: 5 Running + 2 Failed -> as ScaleDown
    pytest.param(
        5,
        50,
        _pods(
            [100, 300, 500, 250, 250],
            ONE,
            readiness=[True] * 5 + [False] * 2,
            phases=["Running"] * 5 + ["Failed"] * 2,
        ),
        CPU,
        (3, 28, 560),
        id="ScaleDownIgnoresFailedPods",
    ),
    # RCT TestReplicaCalcScaleDownIgnoresDeletionPods
    pytest.param(
        5,
        50,
        _pods(
            [100, 300, 500, 250, 250],
            ONE,
            n=7,
            readiness=[True] * 5 + [False] * 2,
            deleting=[False] * 5 + [True] * 2,
        ),
        CPU,
        (3, 28, 560),
        id="ScaleDownIgnoresDeletionPods",
    ),
    # RCT TestReplicaCalcTolerance: 6120*100/6000 = 102 -> 1.02 within 0.1 -> keep 3
    pytest.param(
        3,
        100,
        _pods([1010, 1030, 1020], (0.9, 1.0, 1.1)),
        None,
        (3, 102, 2040),
        id="Tolerance",
    ),
    # RCT TestReplicaCalcSuperfluousMetrics (the 2 samples of unknown pods are left out; on the
    # fast path they do not count): 47000*100/8000 = 587 -> ceil(5.87*4) = 24
    pytest.param(
        4,
        100,
        _pods([4000, 9500, 3000, 7000], ONE),
        None,
        (24, 587, 11750),
        id="SuperfluousMetrics",
    ),
    # RCT TestReplicaCalcMissingMetrics: 990*100/4000 = 24 -> 0.24; scale-down: the 2 missing
    # pods use 100% of request: (990+4000)*100/8000 = 62 -> ceil(0.62*4) = 3
    pytest.param(4, 100, _pods([400, 95], ONE, n=4), None, (3, 24, 495), id="MissingMetrics"),
    # RCT TestReplicaCalcMissingMetricsNoChangeEq: ratio exactly 1: missing pods stay out -> 2
    pytest.param(
        2, 100, _pods([1000], ONE, n=2), None, (2, 100, 2000), id="MissingMetricsNoChangeEq"
    ),
    # RCT TestReplicaCalcMissingMetricsNoChangeGt: 1.9, missing at 0: 3800*100/4000 = 95 -> within
    pytest.param(
        2, 100, _pods([1900], ONE, n=2), None, (2, 190, 3800), id="MissingMetricsNoChangeGt"
    ),
    # RCT TestReplicaCalcMissingMetricsNoChangeLt: 0.6, missing at 100%: 3200*100/4000 = 80 ->
    # 0.8 -> ceil(0.8*2) = 2
    pytest.param(
        2, 100, _pods([600], ONE, n=2), None, (2, 60, 1200), id="MissingMetricsNoChangeLt"
    ),
    # RCT TestReplicaCalcMissingMetricsUnreadyChange: 45/50 = 0.9 (scale-down), missing pod at
    # 100%: 2900*100/4000 = 72 -> 1.44 flips direction -> keep 3
    pytest.param(
        3,
        50,
        _pods([100, 450], ONE, n=3, readiness=[False, True, True]),
        CPU,
        (3, 45, 900),
        id="MissingMetricsUnreadyChange",
    ),
    # RCT TestReplicaCalcMissingMetricsHotCpuNoChange
    pytest.param(
        3,
        50,
        _pods([100, 450], ONE, n=3, start=[HOT, COOL, COOL]),
        CPU,
        (3, 45, 900),
        id="MissingMetricsHotCpuNoChange",
    ),
    # RCT TestReplicaCalcMissingMetricsUnreadyScaleUp: 200/50 = 4; missing and unready at 0:
    # 4000*100/6000 = 66 -> 1.32 -> ceil(1.32*3) = 4
    pytest.param(
        3,
        50,
        _pods([100, 2000], ONE, n=3, readiness=[False, True, True]),
        CPU,
        (4, 200, 4000),
        id="MissingMetricsUnreadyScaleUp",
    ),
    # RCT TestReplicaCalcMissingMetricsHotCpuScaleUp
    pytest.param(
        3,
        50,
        _pods([100, 2000], ONE, n=3, readiness=[False, True, True], start=[HOT, COOL, COOL]),
        CPU,
        (4, 200, 4000),
        id="MissingMetricsHotCpuScaleUp",
    ),
    # RCT TestReplicaCalcMissingMetricsUnreadyScaleDown: 400*100/4000 = 10 -> 0.2; missing at
    # 100%: 2400*100/6000 = 40 -> 0.8 -> ceil(0.8*3) = 3
    pytest.param(
        4,
        50,
        _pods([100, 100, 100], ONE, n=4, readiness=[False, True, True, True]),
        CPU,
        (3, 10, 200),
        id="MissingMetricsUnreadyScaleDown",
    ),
    # RCT TestReplicaCalcMissingMetricsScaleDownTargetOver100: 400*100/6000 = 6 -> 0.02; the
    # missing pod uses request * 300/100 = 12000: 12400*100/10000 = 124 -> 0.413 ->
    # ceil(0.413*3) = 2
    pytest.param(
        4,
        300,
        _pods([200, 100, 100], (1.0, 1.0, 2.0, 2.0), n=4, readiness=[False, True, True, True]),
        CPU,
        (2, 6, 200),
        id="MissingMetricsScaleDownTargetOver100",
    ),
    # RCT TestReplicaCalcDuringRollingUpdateWithMaxSurge: 3 pods for 2 replicas; 0.2, missing at
    # 100%: 0.8 -> ceil(0.8*3) = 3 > 2 while scaling down -> keep 2
    pytest.param(
        2, 50, _pods([100, 100], ONE, n=3), None, (2, 10, 200), id="RollingUpdateWithMaxSurge"
    ),
    # RCT TestReplicaCalcComputedToleranceAlgImplementation (first run): 10 pods at 150m per
    # container, requests 300m +/- jitter; target int(100*(1/(2*0.9) + 0.01)) = 56;
    # util 3000*100/6000 = 50 -> 50/56 = 0.893 < 0.9 -> ceil(8.93) = 9
    pytest.param(
        10,
        56,
        _pods([150] * 10, [x / 1000 for x in (400, 200, 310, 290, 302, 298, 301, 299, 300, 300)]),
        None,
        (9, 50, 300),
        id="ComputedToleranceAlg-scales",
    ),
    # ... second run: target int(100*(1/1.8 + 0.004)) = 55 -> 50/55 = 0.909 within -> keep 10
    pytest.param(
        10,
        55,
        _pods([150] * 10, [x / 1000 for x in (400, 200, 310, 290, 302, 298, 301, 299, 300, 300)]),
        None,
        (10, 50, 300),
        id="ComputedToleranceAlg-holds",
    ),
]


@pytest.mark.parametrize("current, target, pods, cpu, expected", RESOURCE_CASES)
def test_replicas_for_utilization(
    current: int,
    target: int,
    pods: list[PodInfo],
    cpu: CPUReadiness | None,
    expected: tuple[int, int, int],
) -> None:
    got = replicas_for_utilization(current, target, pods, Tolerances(), cpu)
    assert (got.replicas, got.utilization, got.raw_average) == expected


@pytest.mark.parametrize(
    "pods, message",
    [
        # RCT TestReplicaCalcEmptyCPURequest: "missing request for"
        pytest.param(_pods([200]), "missing request for", id="EmptyCPURequest"),
        # RC GetResourceReplicas: every sample belongs to an unready pod
        pytest.param(
            _pods([200], ONE, phases=["Pending"]), "did not receive metrics", id="all-unready"
        ),
        pytest.param([], "no pods returned by selector", id="no-pods"),
    ],
)
def test_replicas_for_utilization_errors(pods: list[PodInfo], message: str) -> None:
    with pytest.raises(MetricError, match=message):
        replicas_for_utilization(1, 100, pods, Tolerances(), CPU)


# --------------------------------------------------------------------------------------------
# groupPods
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pod, cpu, group",
    [
        # HCT/RCT TestGroupPods "count in a ready pod - memory" (readiness ignored off CPU)
        pytest.param(PodInfo(value=1, phase="Succeeded", ready=None), None, "ready", id="memory"),
        # "unready a pod without ready condition - CPU"
        pytest.param(
            PodInfo(value=1, phase="Succeeded", ready=None, start_time_s=NOW),
            CPU,
            "unready",
            id="no-ready-condition",
        ),
        # "count in a ready pod with fresh metrics during initialization period - CPU":
        # sample at now >= Ready (now-30s) + window 30s
        pytest.param(
            PodInfo(
                value=1,
                start_time_s=NOW - MIN,
                ready=True,
                ready_transition_s=NOW - 30,
                metric_time_s=NOW,
                metric_window_s=30,
            ),
            CPU,
            "ready",
            id="fresh-metrics-in-init-period",
        ),
        # "unready a ready pod without fresh metrics during initialization period - CPU":
        # sample at now < Ready (now-30s) + window 60s
        pytest.param(
            PodInfo(
                value=1,
                start_time_s=NOW - MIN,
                ready=True,
                ready_transition_s=NOW - 30,
                metric_time_s=NOW,
                metric_window_s=60,
            ),
            CPU,
            "unready",
            id="stale-metrics-in-init-period",
        ),
        # "unready an unready pod during initialization period - CPU": start+10s > Ready change
        pytest.param(
            PodInfo(value=1, start_time_s=NOW - 600, ready=False, ready_transition_s=NOW - 594),
            CPU,
            "unready",
            id="never-ready-within-delay",
        ),
        # "count in a ready pod without fresh metrics after initialization period - CPU"
        pytest.param(
            PodInfo(
                value=1,
                start_time_s=NOW - 180,
                ready=True,
                ready_transition_s=NOW - 180,
                metric_time_s=NOW - 120,
            ),
            CPU,
            "ready",
            id="after-init-period",
        ),
        # "count in an unready pod that was ready after initialization period - CPU"
        pytest.param(
            PodInfo(value=1, start_time_s=NOW - 600, ready=False, ready_transition_s=NOW - 540),
            CPU,
            "ready",
            id="was-ready-once",
        ),
        # "unready pod that has never been ready after initialization period - CPU": start+10s
        # equals the transition, not After it -> counted ready (as upstream expects)
        pytest.param(
            PodInfo(value=1, start_time_s=NOW - 600, ready=False, ready_transition_s=NOW - 590),
            CPU,
            "ready",
            id="transition-exactly-at-delay",
        ),
        # "a missing pod"
        pytest.param(PodInfo(value=None, start_time_s=NOW - 180), CPU, "missing", id="missing"),
        # "pending pods are unreadied"
        pytest.param(PodInfo(value=None, phase="Pending"), CPU, "unready", id="pending"),
        # "ignore pods with deletion timestamps" (even Pending ones)
        pytest.param(PodInfo(value=1, phase="Pending", deleting=True), CPU, "ignored", id="del"),
        # "ignore pods in a failed state"
        pytest.param(PodInfo(value=1, phase="Failed"), CPU, "ignored", id="failed"),
    ],
)
def test_group_pods(pod: PodInfo, cpu: CPUReadiness | None, group: str) -> None:
    groups = group_pods([pod], cpu)
    got = {
        "ready": groups.ready_count == 1,
        "unready": groups.unready == (0,),
        "missing": groups.missing == (0,),
        "ignored": groups.ignored == (0,),
    }
    assert [k for k, v in got.items() if v] == [group]


# --------------------------------------------------------------------------------------------
# Replica calculator: Pods metric (plain), Object/External Value and AverageValue
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "current, target, pods, expected",
    [
        # RCT TestReplicaCalcScaleUpCM: avg 20000/15000 = 1.333 -> ceil(4.0) = 4
        pytest.param(3, 15000, [20000, 10000, 30000], (4, 20000), id="ScaleUpCM"),
        # RCT TestReplicaCalcScaleUpCMUnreadyHotCpuNoLessScale: readiness ignored off CPU:
        # 30000/15000 = 2 -> 6
        pytest.param(
            3, 15000, [(50000, True), (10000, True), (30000, False)], (6, 30000), id="UnreadyHot"
        ),
        # RCT TestReplicaCalcScaleUpCMUnreadyHotCpuScaleWouldScaleDown: int64(95000/3) = 31666
        # -> 2.111 -> ceil(6.33) = 7
        pytest.param(
            3,
            15000,
            [(50000, False), (15000, True), (30000, False)],
            (7, 31666),
            id="WouldScaleDown",
        ),
        # RCT TestReplicaCalcScaleUpCMExternalNoLabels (a Pods metric on 1 pod): 8600/4400 -> 2
        pytest.param(1, 4400, [8600], (2, 8600), id="ExternalNoLabels"),
        # RCT TestReplicaCalcScaleDownCM: 12000/20000 = 0.6 -> 3
        pytest.param(5, 20000, [12000] * 5, (3, 12000), id="ScaleDownCM"),
        # RCT TestReplicaCalcToleranceCM: int64(62000/3) = 20666 -> 1.033 within -> 3
        pytest.param(3, 20000, [20000, 21000, 21000], (3, 20666), id="ToleranceCM"),
        # RCT TestPlainMetricReplicaCalcMissingMetricsNoChangeEq: ratio 1, 2 pods missing -> 5
        pytest.param(5, 20000, [20000, 19000, 21000, None, None], (5, 20000), id="MissingEq"),
        # RCT TestReplicaCalcDuringRollingUpdateWithMaxSurgeCM: 10000/17000 = 0.588, missing at
        # target: 37000/3 = 12333 -> 0.725 -> ceil(2.18) = 3 > 2 while scaling down -> keep 2
        pytest.param(2, 17000, [10000, 10000, None], (2, 10000), id="RollingUpdateMaxSurgeCM"),
    ],
)
def test_replicas_for_plain_metric(
    current: int, target: int, pods: list[int | None | tuple[int, bool]], expected: tuple[int, int]
) -> None:
    # a pod is its sample, or (sample, Ready)
    infos = [
        PodInfo(value=p[0], ready=p[1]) if isinstance(p, tuple) else PodInfo(value=p) for p in pods
    ]
    got = replicas_for_plain_metric(current, target, infos)
    assert (got.replicas, got.usage) == expected


# ready pods of upstream's pod list with the given readiness (RC getReadyPodsCount)
_3_READY = count_ready_pods(_pods([0, 0, 0]))
_1_READY = count_ready_pods(_pods([0, 0, 0], readiness=[False, True, False]))


@pytest.mark.parametrize(
    "current, usage, target, ready, expected",
    [
        # RCT TestReplicaCalcScaleUpCMObject: 20000/15000 = 1.333 -> ceil(1.333*3) = 4
        pytest.param(3, 20000, 15000, _3_READY, 4, id="ScaleUpCMObject"),
        # RCT TestReplicaCalcScaleUpCMObjectIgnoresUnreadyPods: 5.0 * 1 ready pod = 5 (not 15)
        pytest.param(3, 50000, 10000, _1_READY, 5, id="ScaleUpCMObjectIgnoresUnreadyPods"),
        # RCT TestReplicaCalcScaleUpCMExternalIgnoresUnreadyPods: ceil(1.954 * 1) = 2 (not 6)
        pytest.param(3, 8600, 4400, _1_READY, 2, id="ScaleUpCMExternalIgnoresUnreadyPods"),
        # RCT TestReplicaCalcScaleDownCMObject: 0.6 * 5 = 3
        pytest.param(5, 12000, 20000, 5, 3, id="ScaleDownCMObject"),
        # RCT TestReplicaCalcScaleDownCMExternal: ceil(0.59997 * 5) = 3
        pytest.param(5, 8600, 14334, 5, 3, id="ScaleDownCMExternal"),
        # RCT TestReplicaCalcToleranceCMObject: 1.033 within -> 3
        pytest.param(3, 20666, 20000, 3, 3, id="ToleranceCMObject"),
        # RCT TestReplicaCalcToleranceCMExternal: 0.9676 within -> 3
        pytest.param(3, 8600, 8888, 3, 3, id="ToleranceCMExternal"),
        # RC getUsageRatioReplicaCount, currentReplicas == 0: ceil(ratio), no tolerance
        pytest.param(0, 8600, 4400, 0, 2, id="scale-from-zero"),
        pytest.param(0, 0, 4400, 0, 0, id="stays-at-zero"),
        pytest.param(0, 4000, 4400, 0, 1, id="from-zero-ignores-tolerance"),
    ],
)
def test_replicas_for_value(
    current: int, usage: float, target: float, ready: int, expected: int
) -> None:
    assert replicas_for_value(current, usage, target, ready) == expected


@pytest.mark.parametrize(
    "status, usage, target, expected",
    [
        # RCT TestReplicaCalcScaleUpCMPerPodObject: 20000/(5000*3) = 1.33 -> ceil(20000/5000) = 4;
        # usage ceil(20000/3) = 6667
        pytest.param(3, 20000, 5000, (4, 6667), id="ScaleUpCMPerPodObject"),
        # RCT TestReplicaCalcScaleUpPerPodCMExternal: ceil(8600/2150) = 4; ceil(8600/3) = 2867
        pytest.param(3, 8600, 2150, (4, 2867), id="ScaleUpPerPodCMExternal"),
        # RCT TestReplicaCalcScaleDownPerPodCMObject: 0.6 -> 3; 6000/5 = 1200
        pytest.param(5, 6000, 2000, (3, 1200), id="ScaleDownPerPodCMObject"),
        # RCT TestReplicaCalcScaleDownPerPodCMExternal: ceil(8600/2867) = ceil(2.9996) = 3
        pytest.param(5, 8600, 2867, (3, 1720), id="ScaleDownPerPodCMExternal"),
        # RCT TestReplicaCalcTolerancePerPodCMObject: 20166/20000 = 1.0083 within -> 4;
        # ceil(5041.5) = 5042
        pytest.param(4, 20166, 5000, (4, 5042), id="TolerancePerPodCMObject"),
        # RCT TestReplicaCalcTolerancePerPodCMExternal: 8600/8700 = 0.9885 within -> 3
        pytest.param(3, 8600, 2900, (3, 2867), id="TolerancePerPodCMExternal"),
        # status 0: the ratio is +Inf in Go, never within -> ceil(30/10) = 3
        pytest.param(0, 30, 10, (3, 30), id="from-zero-status"),
    ],
)
def test_replicas_for_average_value(
    status: int, usage: float, target: float, expected: tuple[int, int]
) -> None:
    got = replicas_for_average_value(status, usage, target)
    assert (got.replicas, got.usage) == expected


def _cpu_proposal(levels: list[int], target: int, current: int) -> int:
    """HCT CPU metric: per-pod usage `levels` (milli), 1 core requested per pod."""
    pods = [PodInfo(value=v, request=1000) for v in levels]
    return replicas_for_utilization(current, target, pods).replicas


@pytest.mark.parametrize(
    "proposals, spec_replicas, expected",
    [
        # HCT TestScaleUpOneMetricInvalid: CPU 1200/3000 = 40% vs 30 -> 4; the other is invalid;
        # 4 >= 3 -> scale on the valid metric
        pytest.param([_cpu_proposal([300, 400, 500], 30, 3), None], 3, 4, id="ScaleUpOneInvalid"),
        # HCT TestScaleUpOneMetricEmpty: an External metric fails the same way
        pytest.param([_cpu_proposal([300, 400, 500], 30, 3), None], 3, 4, id="ScaleUpOneEmpty"),
        # HCT TestScaleUpFromZeroOneMetricInvalid: spec 0, proposal 4 >= 0
        pytest.param([_cpu_proposal([300, 400, 500], 30, 0), None], 0, 4, id="FromZeroInvalid"),
        # HCT TestNoScaleDownOneMetricInvalid: CPU 1400/5000 = 28% vs 50 -> ceil(2.8) = 3 < 5
        # with a failed metric -> -1, no change (#99514)
        pytest.param(
            [_cpu_proposal([100, 300, 500, 250, 250], 50, 5), None], 5, -1, id="NoScaleDownInvalid"
        ),
        # HCT TestNoScaleDownOneMetricEmpty
        pytest.param(
            [_cpu_proposal([100, 300, 500, 250, 250], 50, 5), None], 5, -1, id="NoScaleDownEmpty"
        ),
        # HC computeReplicasForMetrics: all metrics invalid -> -1
        pytest.param([None, None], 3, -1, id="all-invalid"),
        # the largest proposal wins
        pytest.param([3, 7, 5], 4, 7, id="max-of-metrics"),
    ],
)
def test_replicas_for_metrics(
    proposals: list[int | None], spec_replicas: int, expected: int
) -> None:
    assert replicas_for_metrics(proposals, spec_replicas) == expected


@pytest.mark.parametrize(
    "current, lo, hi, expected",
    [
        # HCT TestZeroReplicas: min 3, current 0 -> ScalingDisabled, stays 0
        pytest.param(0, 3, 5, (0, SCALING_DISABLED), id="ZeroReplicas"),
        # HCT TestTooFewReplicas: current 2 < min 3 -> 3
        pytest.param(2, 3, 5, (3, BELOW_MIN_REPLICAS), id="TooFewReplicas"),
        # HCT TestScaleUpRCImmediately: current 1 < min 2 -> 2 without metrics
        pytest.param(1, 2, 6, (2, BELOW_MIN_REPLICAS), id="ScaleUpRCImmediately"),
        # HCT TestScaleDownRCImmediately: current 6 > max 5 -> 5 without metrics
        pytest.param(6, 2, 5, (5, ABOVE_MAX_REPLICAS), id="ScaleDownRCImmediately"),
        # HPAScaleToZero: min 0 and current 0 -> metrics decide (scale from zero)
        pytest.param(0, 0, 5, (None, COMPUTE_FROM_METRICS), id="scale-to-zero-enabled"),
        pytest.param(3, 1, 5, (None, COMPUTE_FROM_METRICS), id="in-range"),
    ],
)
def test_reconcile_order(current: int, lo: int, hi: int, expected: tuple[int | None, str]) -> None:
    assert reconcile_order(current, lo, hi) == expected


# --------------------------------------------------------------------------------------------
# Legacy normalization (no behavior)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "current, desired, lo, hi, expected",
    [
        # HCT TestConvertDesiredReplicasWithRules, row by row
        pytest.param(5, 7, 3, 8, (7, DESIRED_WITHIN_RANGE), id="within-range"),
        pytest.param(3, 1, 2, 8, (2, TOO_FEW_REPLICAS), id="below-min"),
        pytest.param(1, 0, 0, 10, (0, DESIRED_WITHIN_RANGE), id="zero-within-range"),
        # scaleUpLimit max(2*20, 4) = 40 > max 10 -> max is the limit
        pytest.param(20, 1000, 1, 10, (10, TOO_MANY_REPLICAS), id="max-below-scale-up-limit"),
        # scaleUpLimit max(2*3, 4) = 6 < max 2000
        pytest.param(3, 1000, 1, 2000, (6, SCALE_UP_LIMIT), id="scale-up-limit"),
    ],
)
def test_convert_desired_replicas_with_rules(
    current: int, desired: int, lo: int, hi: int, expected: tuple[int, str]
) -> None:
    assert convert_desired_replicas_with_rules(current, desired, lo, hi) == expected


def test_legacy_scale_up_limit() -> None:
    # HC calculateScaleUpLimit: max(2*current, 4)
    assert [calculate_legacy_scale_up_limit(c) for c in (0, 1, 2, 3, 10)] == [4, 4, 4, 6, 20]


def _recs(*pairs: tuple[int, float]) -> HPAHistory:
    """Recommendations as upstream's tests write them: (replicas, seconds before NOW)."""
    return HPAHistory(tuple(Recommendation(NOW - ago, v) for v, ago in pairs))


@pytest.mark.parametrize(
    "history, desired, expected, log_length",
    [
        # HCT TestNormalizeDesiredReplicas, 5 min window
        pytest.param(_recs(), 5, 5, 1, id="empty log"),
        pytest.param(_recs((4, 2 * MIN), (5, MIN)), 3, 5, 3, id="stabilize"),
        pytest.param(_recs((1, 2 * MIN), (2, MIN)), 3, 3, 3, id="no stabilize"),
        # both records are older than 5 min: the last is replaced -> 2 entries
        pytest.param(_recs((10, 10 * MIN), (9, 9 * MIN)), 3, 3, 2, id="old recommendations"),
        pytest.param(
            _recs((10, 10 * MIN), (4, MIN), (5, 2 * MIN), (9, 9 * MIN)),
            3,
            5,
            4,
            id="stabilize - old recommendations",
        ),
    ],
)
def test_stabilize_recommendation(
    history: HPAHistory, desired: int, expected: int, log_length: int
) -> None:
    got, new = stabilize_recommendation(history, desired, NOW, 300.0)
    assert got == expected
    assert len(new.recommendations) == log_length
    assert Recommendation(NOW, desired) in new.recommendations


def test_stabilize_downscale_holds_highest_recent() -> None:
    # HCT TestStabilizeDownscale: 3 pods at 50m of 100m vs target 100% -> ceil(0.5*3) = 2, but
    # 4 was recommended a minute ago: stays 4 (ScaleDownStabilized)
    proposal = replicas_for_utilization(
        4, 100, [PodInfo(value=50, request=100) for _ in range(3)]
    ).replicas
    assert proposal == 2
    norm = normalize_desired_replicas(_recs((10, 10 * MIN), (4, MIN)), 4, proposal, 1, 5, NOW)
    assert (norm.replicas, norm.stabilization, norm.reason) == (
        4,
        SCALE_DOWN_STABILIZED,
        DESIRED_WITHIN_RANGE,
    )


# --------------------------------------------------------------------------------------------
# Behavior: stabilization windows
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "history, current, desired, up_s, down_s, expected, stored",
    [
        # HCT TestNormalizeDesiredReplicasWithBehavior, row by row (window 0 = unset in the test)
        pytest.param(_recs(), 100, 5, 0, 0, 5, [5], id="empty recommendations for scaling down"),
        pytest.param(
            _recs((4, 2 * MIN), (5, MIN)),
            100,
            3,
            0,
            180,
            5,
            [4, 5, 3],
            id="simple scale down stabilization",
        ),
        pytest.param(
            _recs((4, 2 * MIN), (5, MIN)),
            1,
            7,
            300,
            0,
            4,
            [4, 5, 7],
            id="simple scale up stabilization",
        ),
        pytest.param(
            _recs((1, 2 * MIN), (2, MIN)),
            100,
            3,
            300,
            0,
            3,
            [1, 2, 3],
            id="no scale down stabilization",
        ),
        pytest.param(
            _recs((4, 2 * MIN), (5, MIN)),
            1,
            3,
            0,
            300,
            3,
            [4, 5, 3],
            id="no scale up stabilization",
        ),
        # both records older than both windows: the last old one (index 1) is reused
        pytest.param(
            _recs((10, 10 * MIN), (9, 9 * MIN)),
            100,
            3,
            0,
            0,
            3,
            [10, 3],
            id="no scale down stabilization, reuse recommendation element",
        ),
        pytest.param(
            _recs((10, 10 * MIN), (9, 9 * MIN)),
            1,
            100,
            0,
            0,
            100,
            [10, 100],
            id="no scale up stabilization, reuse recommendation element",
        ),
        pytest.param(
            _recs((10, 10 * MIN), (4, MIN), (5, 2 * MIN), (9, 9 * MIN)),
            100,
            3,
            0,
            180,
            5,
            [10, 4, 5, 3],
            id="scale down stabilization, reuse one of obsolete recommendation element",
        ),
        # up window 300: min(100, 6, 5, 9) = 5; only the 100-minute-old record is obsolete
        pytest.param(
            _recs((10, 100 * MIN), (6, MIN), (5, 2 * MIN), (9, 3 * MIN)),
            1,
            100,
            300,
            0,
            5,
            [100, 6, 5, 9],
            id="scale up stabilization, reuse one of obsolete recommendation element",
        ),
        # up = min(1, 3) = 1, down = max(1, 3) = 3: current 2 stays inside [1, 3]
        pytest.param(
            _recs((2, 100 * MIN), (3, 3 * MIN)),
            2,
            1,
            300,
            300,
            2,
            [1, 3],
            id="do not scale up when prenormalized rec goes down",
        ),
        pytest.param(
            _recs((2, 100 * MIN), (1, 3 * MIN)),
            2,
            3,
            300,
            300,
            2,
            [3, 1],
            id="do not scale down when prenormalized rec goes up",
        ),
    ],
)
def test_stabilize_recommendation_with_behaviors(
    history: HPAHistory,
    current: int,
    desired: int,
    up_s: float,
    down_s: float,
    expected: int,
    stored: list[int],
) -> None:
    got, _, new = stabilize_recommendation_with_behaviors(
        history, desired, current, up_s, down_s, NOW
    )
    assert got == expected
    assert [r.replicas for r in new.recommendations] == stored


# --------------------------------------------------------------------------------------------
# Behavior: rate limits
# --------------------------------------------------------------------------------------------


def _rules(
    pods: int, pods_period: float, percent: int, percent_period: float, window: float = 0.0
) -> ScalingRules:
    """HCT generateScalingRules: selectPolicy Max, a policy for each non-zero value."""
    policies = []
    if pods:
        policies.append(ScalingPolicy("Pods", pods, pods_period))
    if percent:
        policies.append(ScalingPolicy("Percent", percent, percent_period))
    return ScalingRules(window, "Max", tuple(policies))


def _events(changes: Sequence[int], period_s: float) -> tuple[ScaleEvent, ...]:
    """HCT generateEventsUniformDistribution: events at the centres of equal segments of the
    last period, oldest first; e.g. [1, 5, 9] over 120 s sit 100, 60 and 20 s before now."""
    seg = period_s / len(changes)
    return tuple(
        ScaleEvent(NOW - math.trunc(period_s - seg * (i + 1) + seg / 2), c, False)
        for i, c in enumerate(changes)
    )


SCALING_WITH_RULES = [
    # HCT TestScalingWithRules, in upstream's order: (up events, down events, up rules,
    # down rules, min, max, current, desired) -> (replicas, condition)
    pytest.param((), (), None, None, 3, 8, 5, 7, (7, DESIRED_WITHIN_RANGE), id="within range"),
    pytest.param((), (), None, None, 2, 8, 3, 1, (2, TOO_FEW_REPLICAS), id="below minReplicas"),
    pytest.param((), (), None, None, 0, 10, 1, 0, (0, DESIRED_WITHIN_RANGE), id="min 0"),
    # default up rules: max(20+4, 20*2) = 40 > max 10
    pytest.param((), (), None, None, 1, 10, 20, 1000, (10, TOO_MANY_REPLICAS), id="max < limit"),
    pytest.param((), (), None, None, 100, 150, 100, 1000, (150, TOO_MANY_REPLICAS), id="max 150"),
    # Percent 1: ceil(3 * 1.01) = 4
    pytest.param(
        (), (), _rules(0, 0, 1, 60), None, 1, 2000, 3, 1000, (4, SCALE_UP_LIMIT), id="1 percent"
    ),
    # (upstream skips this row with testThis) Pods 20: 1000 - 20 = 980
    pytest.param(
        (),
        (),
        None,
        _rules(20, 60, 0, 0),
        3,
        2000,
        1000,
        3,
        (980, SCALE_DOWN_LIMIT),
        id="scaleDownLimit > minReplicas",
    ),
    # default up rules: max(10 + 4, ceil(10 * 2)) = 20
    pytest.param((), (), None, None, 1, 1000, 10, 50, (20, SCALE_UP_LIMIT), id="default scaleUp"),
    pytest.param(
        (),
        (),
        _rules(100, 60, 100, 60),
        None,
        1,
        1000,
        10,
        500,
        (110, SCALE_UP_LIMIT),
        id="pods policy larger than percent",
    ),
    pytest.param(
        (),
        (),
        _rules(2, 60, 100, 60),
        None,
        1,
        1000,
        10,
        500,
        (20, SCALE_UP_LIMIT),
        id="percent policy larger than pods",
    ),
    pytest.param(
        (), (), _rules(100, 60, 0, 0), None, 1, 1000, 10, 50, (50, DESIRED_WITHIN_RANGE), id="pods"
    ),
    pytest.param(
        (),
        (),
        _rules(10000, 60, 0, 0),
        None,
        1,
        1000,
        10,
        50,
        (50, DESIRED_WITHIN_RANGE),
        id="large pods",
    ),
    pytest.param(
        (), (), _rules(30, 60, 0, 0), None, 1, 1000, 10, 50, (40, SCALE_UP_LIMIT), id="pod limit"
    ),
    # Percent 200: ceil(10 * 3) = 30
    pytest.param(
        (),
        (),
        _rules(0, 0, 200, 60),
        None,
        1,
        1000,
        10,
        50,
        (30, SCALE_UP_LIMIT),
        id="percent limit",
    ),
    # down Max: min(100 - 20, int(100 * 0.99)) = 80
    pytest.param(
        (),
        (),
        None,
        _rules(20, 60, 1, 60, 300),
        1,
        1000,
        100,
        2,
        (80, SCALE_DOWN_LIMIT),
        id="down percent larger than pods",
    ),
    pytest.param(
        (),
        (),
        None,
        _rules(2, 60, 1, 60, 300),
        1,
        1000,
        100,
        2,
        (98, SCALE_DOWN_LIMIT),
        id="down pods larger than percent",
    ),
    pytest.param(
        (),
        (),
        None,
        _rules(100, 60, 0, 0, 300),
        1,
        1000,
        10,
        0,
        (1, TOO_FEW_REPLICAS),
        id="down min limits large pods",
    ),
    pytest.param(
        (),
        (),
        None,
        _rules(0, 0, 100, 60, 300),
        5,
        1000,
        10,
        2,
        (5, TOO_FEW_REPLICAS),
        id="down min limits large percent",
    ),
    pytest.param(
        (),
        (),
        None,
        _rules(5, 60, 0, 0, 300),
        1,
        1000,
        10,
        2,
        (5, SCALE_DOWN_LIMIT),
        id="down pod limit",
    ),
    # int(10 * 0.5) = 5 = desired
    pytest.param(
        (),
        (),
        None,
        _rules(0, 0, 50, 60, 300),
        1,
        1000,
        10,
        5,
        (5, DESIRED_WITHIN_RANGE),
        id="down percent limit reached exactly",
    ),
    # 100 - 15 + 300 = 385 > max 200
    pytest.param(
        _events([1, 5, 9], 120),
        (),
        _rules(300, 60, 0, 0),
        None,
        1,
        200,
        100,
        500,
        (200, TOO_MANY_REPLICAS),
        id="max with large pod policy and events",
    ),
    pytest.param(
        _events([1, 5, 9], 120),
        (),
        _rules(0, 0, 10000, 60),
        None,
        1,
        200,
        100,
        500,
        (200, TOO_MANY_REPLICAS),
        id="max with large percent policy and events",
    ),
    # 120 s ago there were 100 - 15 = 85 replicas; + 5 = 90 < current -> raised to 100
    pytest.param(
        _events([1, 5, 9], 120),
        (),
        _rules(5, 120, 0, 0),
        None,
        1,
        1000,
        100,
        500,
        (100, SCALE_UP_LIMIT),
        id="currentReplicas limitation with a lot of recent scale up events",
    ),
    pytest.param(
        _events([1, 5, 9], 120),
        (),
        _rules(150, 120, 0, 0),
        None,
        1,
        1000,
        100,
        500,
        (235, SCALE_UP_LIMIT),  # 100 - 15 + 150
        id="pod policy and previous scale up events",
    ),
    pytest.param(
        _events([1, 5, 9], 120),
        (),
        _rules(0, 0, 200, 120),
        None,
        1,
        1000,
        100,
        500,
        (255, SCALE_UP_LIMIT),  # (100 - 15) * 3
        id="percent policy and previous scale up events",
    ),
    pytest.param(
        _events([4], 120),
        _events([2], 120),
        _rules(0, 0, 300, 300),
        None,
        1,
        1000,
        6,
        24,
        (16, SCALE_UP_LIMIT),  # (6 - 4 + 2) * 4
        id="percent policy and previous scale up and down events",
    ),
    # default down rules: Percent 100/15 s; the events are older than 15 s -> 0 allowed
    pytest.param(
        (),
        _events([1, 5, 9], 120),
        None,
        None,
        1,
        1000,
        10,
        5,
        (5, DESIRED_WITHIN_RANGE),
        id="scaleDown with default policy and previous events",
    ),
    pytest.param(
        (),
        _events([1, 5, 9], 120),
        None,
        _rules(115, 120, 0, 0, 300),
        1,
        1000,
        100,
        0,
        (1, TOO_FEW_REPLICAS),
        id="down min limits large pod policy and previous events",
    ),
    pytest.param(
        (),
        _events([1, 5, 9], 120),
        None,
        _rules(130, 120, 0, 0, 300),
        5,
        1000,
        100,
        0,
        (5, TOO_FEW_REPLICAS),
        id="down min 5 limits large pod policy and previous events",
    ),
    pytest.param(
        (),
        _events([1, 5, 9], 120),
        None,
        _rules(0, 0, 100, 120, 300),
        5,
        1000,
        100,
        2,
        (5, TOO_FEW_REPLICAS),
        id="down min limits 100 percent and previous events",
    ),
    # 100 + 15 - 5 = 110 > current -> lowered to 100
    pytest.param(
        (),
        _events([1, 5, 9], 120),
        None,
        _rules(5, 120, 0, 0, 300),
        1,
        1000,
        100,
        2,
        (100, SCALE_DOWN_LIMIT),
        id="down pod policy limitation and previous events",
    ),
    pytest.param(
        (),
        _events([2, 4, 6], 120),
        None,
        _rules(0, 0, 50, 120, 300),
        1,
        1000,
        100,
        0,
        (56, SCALE_DOWN_LIMIT),  # int((100 + 12) * 0.5)
        id="down percent policy limitation and previous events",
    ),
    pytest.param(
        _events([2], 120),
        _events([4], 120),
        None,
        _rules(0, 0, 50, 180, 0),
        1,
        1000,
        10,
        1,
        (6, SCALE_DOWN_LIMIT),  # int((10 - 2 + 4) * 0.5)
        id="down percent policy and previous scale up and down events",
    ),
    pytest.param(
        (),
        _events([10, 10, 10], 120),
        None,
        _rules(0, 0, 10, 120, 300),
        1,
        1000,
        100,
        0,
        (100, SCALE_DOWN_LIMIT),  # int(130 * 0.9) = 117 > 100 -> keep 100
        id="previous events preventing further scale down",
    ),
    pytest.param(
        (),
        _events([10, 10, 10], 120),
        None,
        _rules(0, 0, 1000, 120, 300),
        1,
        1000,
        10,
        5,
        (5, DESIRED_WITHIN_RANGE),  # int(40 * -9) = -360 < 5
        id="previous events still allowing more scale down",
    ),
    pytest.param(
        _events([8, 12, 9, 11], 120),
        (),
        _rules(1000, 60, 0, 0),
        None,
        1,
        1000,
        100,
        200,
        (200, DESIRED_WITHIN_RANGE),
        id="outdated flag for events for one behavior for up",
    ),
    pytest.param(
        _events([8, 12, 9, 11], 120),
        (),
        _rules(1000, 120, 100, 60),
        None,
        1,
        1000,
        100,
        200,
        (200, DESIRED_WITHIN_RANGE),
        id="events not outdated for two policies for up",
    ),
    pytest.param(
        _events([8, 12, 9, 11], 120),
        (),
        _rules(1000, 30, 100, 60),
        None,
        1,
        1000,
        100,
        200,
        (200, DESIRED_WITHIN_RANGE),
        id="events outdated for two policies for up",
    ),
    pytest.param(
        (),
        _events([8, 12, 9, 11], 120),
        None,
        _rules(1000, 60, 0, 0, 300),
        1,
        1000,
        100,
        5,
        (5, DESIRED_WITHIN_RANGE),
        id="outdated flag for events for one behavior for down",
    ),
    pytest.param(
        (),
        _events([8, 12, 9, 11], 120),
        None,
        _rules(1000, 120, 100, 60, 300),
        1,
        1000,
        100,
        5,
        (5, DESIRED_WITHIN_RANGE),
        id="events not outdated for two policies for down",
    ),
    pytest.param(
        (),
        _events([8, 12, 9, 11], 120),
        None,
        _rules(1000, 30, 100, 60, 300),
        1,
        1000,
        100,
        5,
        (5, DESIRED_WITHIN_RANGE),
        id="events outdated for two policies for down",
    ),
]


@pytest.mark.parametrize(
    "up_events, down_events, up_rules, down_rules, lo, hi, current, desired, expected",
    SCALING_WITH_RULES,
)
def test_scaling_with_rules(
    up_events: tuple[ScaleEvent, ...],
    down_events: tuple[ScaleEvent, ...],
    up_rules: ScalingRules | None,
    down_rules: ScalingRules | None,
    lo: int,
    hi: int,
    current: int,
    desired: int,
    expected: tuple[int, str],
) -> None:
    # HCT uses GenerateHPAScale{Up,Down}Rules: nil rules take Kubernetes' defaults
    behavior = HPABehavior(
        up_rules or default_scale_up_rules(), down_rules or default_scale_down_rules()
    )
    history = HPAHistory((), up_events, down_events)
    got = convert_desired_replicas_with_behavior_rate(
        current, desired, lo, hi, behavior, history, NOW
    )
    assert got == expected


def test_calculate_scale_limits_with_min_select_policy() -> None:
    rules = ScalingRules(
        300.0, "Min", (ScalingPolicy("Pods", 2, 60.0), ScalingPolicy("Percent", 50, 60.0))
    )
    # HCT TestCalculateScaleUpLimitWithScalingRules: min(1 + 2, ceil(1 * 1.5)) = 2
    assert calculate_scale_up_limit(1, (), (), rules, NOW) == 2
    # HCT TestCalculateScaleDownLimitWithBehaviors: max(5 - 2, int(5 * 0.5)) = 3
    assert calculate_scale_down_limit(5, (), (), rules, NOW) == 3


@pytest.mark.parametrize("up", [True, False], ids=["up", "down"])
def test_disabled_select_policy_keeps_current(up: bool) -> None:
    # HC calculateScale*Limit: selectPolicy Disabled -> current (KEDA paused-scale-in/out)
    rules = ScalingRules(0.0, "Disabled", (ScalingPolicy("Pods", 100, 15.0),))
    behavior = HPABehavior(
        rules if up else default_scale_up_rules(), default_scale_down_rules() if up else rules
    )
    got = convert_desired_replicas_with_behavior_rate(
        10, 50 if up else 1, 1, 100, behavior, HPAHistory(), NOW
    )
    assert got == (10, SCALE_UP_LIMIT if up else SCALE_DOWN_LIMIT)


def test_kubernetes_docs_scale_down_policy_example() -> None:
    # kubernetes.io "Horizontal Pod Autoscaling", scaling policies: Percent 10 and Pods 5 per
    # 60 s, selectPolicy Max: "if there are 80 replicas and the target has to be scaled down to
    # 10 replicas then during the first step 8 replicas will be reduced. In the next iteration
    # when the number of replicas is 72, 10% of the pods is 7.2 but the number is rounded up to
    # 8."
    down = ScalingRules(
        0.0, "Max", (ScalingPolicy("Percent", 10, 60.0), ScalingPolicy("Pods", 5, 60.0))
    )
    behavior = HPABehavior(default_scale_up_rules(), down)
    history = HPAHistory()
    replicas, current, t = [], 80, NOW
    for _ in range(2):
        norm = normalize_desired_replicas_with_behaviors(history, behavior, current, 10, 1, 100, t)
        history = norm.history.record_scale_event(current, norm.replicas, behavior, t)
        replicas.append(norm.replicas)
        current, t = norm.replicas, t + 61.0
    # int(80 * 0.9) = 72 (min with 80 - 5 = 75); 61 s later int(72 * 0.9) = int(64.8) = 64
    assert replicas == [72, 64]


def test_kubernetes_docs_replicas_formula() -> None:
    # kubernetes.io: desiredReplicas = ceil[currentReplicas * (currentMetricValue /
    # desiredMetricValue)]: "if the current metric value is 200m, and the desired value is 100m,
    # the number of replicas will be doubled ... if the current value is instead 50m, you'll
    # halve the number of replicas"
    assert replicas_for_plain_metric(2, 100, [PodInfo(value=200)] * 2).replicas == 4
    assert replicas_for_plain_metric(2, 100, [PodInfo(value=50)] * 2).replicas == 1


# --------------------------------------------------------------------------------------------
# Scale events storage
# --------------------------------------------------------------------------------------------


def _ev(*items: tuple[int, float, bool]) -> tuple[ScaleEvent, ...]:
    return tuple(ScaleEvent(NOW - ago, change, out) for change, ago, out in items)


@pytest.mark.parametrize(
    "prev, rules, changed_60s, new",
    [
        # HCT TestStoreScaleEvents, row by row: (previous events, rules, change within 60 s,
        # stored events as (change, outdated))
        pytest.param(_ev(), None, 0, [], id="empty entries with default behavior"),
        pytest.param(
            _ev(), _rules(10, 60, 100, 60), 0, [(5, False)], id="empty entries with two-policy"
        ),
        pytest.param(
            _ev((7, 61, False)),
            None,
            0,
            [(7, False)],
            id="one outdated entry to be kept untouched without behavior",
        ),
        pytest.param(
            _ev((7, 61, False)),
            _rules(10, 60, 100, 60),
            0,
            [(5, False)],
            id="one outdated entry to be replaced with behavior",
        ),
        pytest.param(
            _ev((7, 58, False)),
            _rules(10, 60, 100, 60),
            7,
            [(7, False), (5, False)],
            id="one actual entry to be not touched with behavior",
        ),
        pytest.param(
            _ev((7, 61, False), (6, 59, False)),
            _rules(10, 60, 0, 0),
            6,
            [(5, False), (6, False)],
            id="two entries, one of them to be replaced",
        ),
        pytest.param(
            _ev((8, 29, False), (6, 59, False), (7, 61, False), (9, 61, False)),
            _rules(10, 60, 100, 30),
            14,
            [(8, False), (6, False), (7, True), (5, False)],
            id="replace one entry, use policies with different periods",
        ),
        pytest.param(
            _ev((7, 58, False), (6, 59, False)),
            _rules(10, 120, 100, 30),
            13,
            [(7, False), (6, False), (5, False)],
            id="two entries, both actual",
        ),
    ],
)
def test_store_scale_events(
    prev: tuple[ScaleEvent, ...],
    rules: ScalingRules | None,
    changed_60s: int,
    new: list[tuple[int, bool]],
) -> None:
    # up: scaleUpEvents and a behavior with only ScaleUp set (scale down defaulted)
    up_behavior = None if rules is None else HPABehavior(rules, default_scale_down_rules())
    history = HPAHistory(scale_up_events=prev)
    assert get_replicas_change_per_period(60.0, history.scale_up_events, NOW) == changed_60s
    stored = history.record_scale_event(10, 15, up_behavior, NOW).scale_up_events
    assert [(e.change, e.outdated) for e in stored] == new
    # down: the same through scaleDownEvents
    down_behavior = None if rules is None else HPABehavior(default_scale_up_rules(), rules)
    history = HPAHistory(scale_down_events=prev)
    stored = history.record_scale_event(10, 5, down_behavior, NOW).scale_down_events
    assert [(e.change, e.outdated) for e in stored] == new
    assert history.scale_down_events == prev  # the input history is never mutated


def test_initial_recommendation_is_recorded_once() -> None:
    # HC recordInitialRecommendation: (now, current) only when the HPA has no history
    h = HPAHistory().record_initial_recommendation(3, NOW)
    assert h.recommendations == (Recommendation(NOW, 3),)
    assert h.record_initial_recommendation(7, NOW + 15) is h


# --------------------------------------------------------------------------------------------
# Defaults
# --------------------------------------------------------------------------------------------


def test_default_rules_are_kubernetes_defaults() -> None:
    # DF defaultHPAScaleUpRules / defaultHPAScaleDownRules (+ the downscale flag, 5 min)
    assert default_scale_up_rules() == ScalingRules(
        0.0, "Max", (ScalingPolicy("Pods", 4, 15.0), ScalingPolicy("Percent", 100, 15.0)), 0.1
    )
    assert default_scale_down_rules() == ScalingRules(
        300.0, "Max", (ScalingPolicy("Percent", 100, 15.0),), 0.1
    )
    assert default_scale_down_rules(120.0).stabilization_window_s == 120.0


def test_resolve_behavior_fills_unset_fields() -> None:
    # DF copyHPAScalingRules: only the fields the spec sets replace the defaults
    spec = BehaviorSpec(
        scale_up=ScalingRulesSpec(select_policy="Min", tolerance=0.0),
        scale_down=ScalingRulesSpec(
            policies=[ScalingPolicySpec(type="Pods", value=1, period_seconds=60)]
        ),
    )
    got = resolve_behavior(spec, downscale_stabilization_s=600.0)
    assert got is not None
    assert got.scale_up == ScalingRules(
        0.0, "Min", default_scale_up_rules().policies, tolerance=0.0
    )
    assert got.scale_down == ScalingRules(600.0, "Max", (ScalingPolicy("Pods", 1, 60.0),), 0.1)
    assert got.tolerances == Tolerances(scale_down=0.1, scale_up=0.0)
    assert resolve_behavior(None) is None


# --------------------------------------------------------------------------------------------
# Vectorized behavior
# --------------------------------------------------------------------------------------------


def _run_both(
    behaviors: list[HPABehavior | None],
    steps: list[tuple[float, list[int], list[int] | None]],
    current: list[int],
    lo: list[int],
    hi: list[int],
) -> None:
    """Drive apply_behavior and behavior_step side by side; every result must agree."""
    n = len(behaviors)
    table = BehaviorTable.compile(behaviors)
    state = BehaviorState.initial(n, capacity=64, event_capacity=64)
    histories = [HPAHistory() for _ in range(n)]
    t = NOW
    cur = list(current)
    for dt, desired, override in steps:
        t += dt
        got, reasons, state = apply_behavior(
            table, state, np.array(desired), np.array(cur), np.array(lo), np.array(hi), t
        )
        for i in range(n):
            want, reason, histories[i] = behavior_step(
                histories[i], behaviors[i], cur[i], desired[i], lo[i], hi[i], t
            )
            assert (int(got[i]), str(reasons[i])) == (want, reason), (i, t)
            assert state.history(i) == histories[i]
        # the cluster follows the decision, unless the step overrides it (a manual scale)
        cur = [int(x) for x in got] if override is None else override


_policy = st.builds(
    ScalingPolicy,
    st.sampled_from(["Pods", "Percent"]),
    st.integers(1, 300),
    st.sampled_from([15.0, 30.0, 60.0, 120.0]),
)
_rules_st = st.builds(
    ScalingRules,
    st.sampled_from([0.0, 15.0, 30.0, 60.0, 300.0]),
    st.sampled_from(["Max", "Min", "Disabled"]),
    st.lists(_policy, max_size=3).map(tuple),
)
_behavior = st.one_of(st.none(), st.builds(HPABehavior, _rules_st, _rules_st))


@st.composite
def _scenario(draw: st.DrawFn) -> tuple[Any, ...]:
    n = draw(st.integers(1, 4))
    behaviors = draw(st.lists(_behavior, min_size=n, max_size=n))
    lo = draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
    hi = [x + draw(st.integers(0, 25)) for x in lo]
    current = draw(st.lists(st.integers(0, 30), min_size=n, max_size=n))
    n_steps = draw(st.integers(1, 25))
    steps = []
    for _ in range(n_steps):
        dt = draw(st.sampled_from([0.5, 1.0, 5.0, 15.0, 15.0, 30.0, 61.0]))
        desired = draw(st.lists(st.integers(0, 40), min_size=n, max_size=n))
        override = draw(st.one_of(st.none(), st.lists(st.integers(0, 30), min_size=n, max_size=n)))
        steps.append((dt, desired, override))
    return behaviors, steps, current, lo, hi


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_scenario())
def test_apply_behavior_matches_scalar(scenario: tuple[Any, ...]) -> None:
    # the vectorized path gives the scalar path's replicas, reasons and histories, step by step
    _run_both(*scenario)


def test_apply_behavior_mixed_table_example() -> None:
    # 1 legacy row and 1 default-behavior row through a scale-up, a drop and the 300 s window
    default = resolve_behavior(BehaviorSpec())
    steps: list[tuple[float, list[int], list[int] | None]] = [
        (0.0, [10, 10], None),  # legacy: max(2*2, 4) = 4; behavior: max(2+4, 2*2) = 6
        # the 10 stays in the 300 s window: legacy climbs on to max(2*4, 4) = 8, behavior holds 6
        (15.0, [1, 1], None),
        (300.0, [1, 1], None),
        (15.0, [1, 1], None),
    ]
    _run_both([None, default], steps, [2, 2], [1, 1], [10, 10])


def test_apply_behavior_example_values() -> None:
    table = BehaviorTable.compile([None, BehaviorSpec()])
    state = BehaviorState.initial(2)
    cur = np.array([2, 2])
    lo, hi = np.array([1, 1]), np.array([10, 10])
    got, reasons, state = apply_behavior(table, state, np.array([10, 10]), cur, lo, hi, NOW)
    # legacy: min(10, max(2*2, 4)) = 4; behavior default up: max(2 + 4, ceil(2 * 2)) = 6
    assert got.tolist() == [4, 6]
    assert reasons.tolist() == [SCALE_UP_LIMIT, SCALE_UP_LIMIT]
    got, reasons, state = apply_behavior(table, state, np.array([1, 1]), got, lo, hi, NOW + 15)
    # the 10 recorded 15 s ago is still in the 300 s window. Legacy: the max, 10, so it keeps
    # scaling up, by max(2*4, 4) = 8. Behavior: current 6 stays inside [min(1), max(1, 10)].
    assert got.tolist() == [8, 6]
    assert reasons.tolist() == [SCALE_UP_LIMIT, SCALE_DOWN_STABILIZED]


def test_apply_behavior_mask_holds_and_leaves_history() -> None:
    table = BehaviorTable.compile([BehaviorSpec(), BehaviorSpec()])
    state = BehaviorState.initial(2)
    cur = np.array([3, 3])
    got, reasons, new = apply_behavior(
        table,
        state,
        np.array([8, 8]),
        cur,
        np.array([1, 1]),
        np.array([10, 10]),
        NOW,
        mask=np.array([True, False]),
    )
    assert got.tolist() == [7, 3]  # max(3 + 4, ceil(3 * 2)) = 7; row 1 held
    assert reasons.tolist() == [SCALE_UP_LIMIT, HELD]
    assert new.history(1) == HPAHistory()
    assert new.history(0).scale_up_events == (ScaleEvent(NOW, 4, False),)
    assert state.history(0) == HPAHistory()  # the input state is untouched


def test_apply_behavior_clamps_out_of_bounds_current() -> None:
    # current above max: normalized, then clamped (reconcile_order would set max directly)
    table = BehaviorTable.compile([None])
    got, reasons, _ = apply_behavior(
        table,
        BehaviorState.initial(1),
        np.array([9]),
        np.array([12]),
        np.array([1]),
        np.array([10]),
        NOW,
    )
    assert (got.tolist(), reasons.tolist()) == ([10], [TOO_MANY_REPLICAS])


def test_behavior_table_tolerances() -> None:
    spec = BehaviorSpec(scale_up=ScalingRulesSpec(tolerance=0.0))
    table = BehaviorTable.compile([None, spec], tolerance=0.2)
    assert table.tol_up.tolist() == [0.2, 0.0]
    assert table.tol_down.tolist() == [0.2, 0.2]
    assert table.is_within(np.array([1.1, 1.1])).tolist() == [True, False]


def test_behavior_state_round_trips_through_json() -> None:
    table = BehaviorTable.compile([BehaviorSpec(), None, BehaviorSpec()])
    state = BehaviorState.initial(3, capacity=16, event_capacity=8)
    cur = np.array([1, 5, 9])
    for k, desired in enumerate([[4, 9, 2], [1, 1, 1], [6, 2, 8]]):
        cur, _, state = apply_behavior(
            table,
            state,
            np.array(desired),
            cur,
            np.ones(3, dtype=np.int64),
            np.full(3, 20),
            NOW + 15.0 * k,
        )
    back = BehaviorState.from_dicts(json.loads(json.dumps(state.to_dicts())))
    assert back.to_dicts() == state.to_dicts()
    assert (back.capacity, back.event_capacity) == (16, 8)
    for i in range(3):
        assert back.history(i) == state.history(i)
    # take / concat keep each workload's history
    joined = BehaviorState.concat(
        [state.take([2]), BehaviorState.initial(1, 16, 8), state.take([0])]
    )
    assert [joined.history(i) for i in range(3)] == [
        state.history(2),
        HPAHistory(),
        state.history(0),
    ]
    assert table.take([2]).has_behavior.tolist() == [True]


def test_behavior_state_capacity_drops_oldest() -> None:
    # a 300 s window at a 15 s tick needs 21 records; with capacity 4 the oldest go first
    table = BehaviorTable.compile([None])
    state = BehaviorState.initial(1, capacity=4)
    for k, desired in enumerate([9, 1, 1, 1, 1]):
        _, _, state = apply_behavior(
            table,
            state,
            np.array([desired]),
            np.array([1]),
            np.array([1]),
            np.array([10]),
            NOW + 15.0 * k,
        )
    recs = state.history(0).recommendations
    assert len(recs) == 4
    assert 9 not in [r.replicas for r in recs]  # the initial record (1) and the 9 were dropped


def test_behavior_state_rejects_mixed_capacities() -> None:
    with pytest.raises(ValueError, match="different capacities"):
        BehaviorState.concat([BehaviorState.initial(1, 8), BehaviorState.initial(1, 16)])
