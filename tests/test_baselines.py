"""policies.baselines: HPA, KEDA and Knative KPA baselines against upstream behaviour.

KAT = knative/serving pkg/autoscaler/scaling/autoscaler_test.go (its DeciderSpec: max scale
up/down rates 10, panic threshold 2.0, stable window 60 s); HC = kubernetes horizontal.go;
KEX = kedacore/keda pkg/scaling/executor/scale_scaledobjects.go. The KPA "derived example" is
the one in shared/reference/algorithms.md section 3.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest

from policies.baselines import (
    HPABaseline,
    KEDABaseline,
    KPABaseline,
    KPADeciderSpec,
    KPAScalerState,
    StaticPolicy,
    kpa_scale,
    window_average,
)
from policies.spec import BehaviorSpec, CapacitySpec, PolicySpec, ScalingRulesSpec
from policies.types import I64, ClusterFacts, Decisions, Observation


def _spec(lo: int = 1, hi: int = 10) -> PolicySpec:
    return PolicySpec(
        scenario="chat",
        capacity=CapacitySpec(rps_per_replica=1.0),
        min_replicas=lo,
        max_replicas=hi,
    )


def _cluster(current: int, ready: int | None = None) -> ClusterFacts:
    def one(x: int) -> I64:
        return np.array([x], dtype=np.int64)

    return ClusterFacts(
        current_spot=one(0),
        current_on_demand=one(current),
        current_warm=one(0),
        ready_spot=one(0),
        ready_on_demand=one(current if ready is None else ready),
        ready_warm=one(0),
        spot_at_risk=one(0),
        spot_pending_too_long=one(0),
    )


def _obs(
    now_s: float,
    current: int,
    ready: int | None = None,
    stale: bool = False,
    **latest: float,
) -> Observation:
    """One workload, one sample per family at now_s."""
    return Observation(
        t_s=np.array([now_s]),
        metrics={k: np.array([[v]]) for k, v in latest.items()},
        cluster=_cluster(current, ready),
        stale=np.array([stale]),
    )


def _row(d: Decisions) -> tuple[int, str]:
    return int(d.desired_total[0]), str(d.reason[0])


# --------------------------------------------------------------------------------------------
# HPA
# --------------------------------------------------------------------------------------------


def test_hpa_acts_only_every_sync_period() -> None:
    hpa = HPABaseline(target=2.0)  # running, AverageValue 2 per replica, legacy path
    specs = [_spec()]
    state = hpa.initial_state(specs)
    d, state = hpa.decide(specs, state, _obs(0.0, 2, running=10.0), 0.0)
    # 10 / (2 * 2) = 2.5 -> ceil(10 / 2) = 5, legacy scale-up limit max(2*2, 4) = 4
    assert _row(d) == (4, "HPASync")
    assert "ScaleUpLimit" in str(d.detail[0])
    d, state = hpa.decide(specs, state, _obs(5.0, 4, running=20.0), 5.0)
    assert _row(d) == (4, "HPAWaitSync")  # 5 s < the 15 s sync period
    d, state = hpa.decide(specs, state, _obs(15.0, 4, running=20.0), 15.0)
    # 20 / (2 * 4) = 2.5 -> ceil(20 / 2) = 10, limit max(2*4, 4) = 8
    assert _row(d) == (8, "HPASync")


@pytest.mark.parametrize(
    "obs",
    [
        pytest.param(_obs(0.0, 3, running=math.nan), id="nan-sample"),
        pytest.param(_obs(0.0, 3, stale=True, running=40.0), id="stale-series"),
        pytest.param(_obs(0.0, 3, queue=40.0), id="family-absent"),
    ],
)
def test_hpa_fails_static_on_missing_metric(obs: Observation) -> None:
    # HC computeReplicasForMetrics error: ScalingActive=False, no change, nothing recorded
    hpa = HPABaseline(target=2.0)
    state = hpa.initial_state([_spec()])
    d, state = hpa.decide([_spec()], state, obs, 0.0)
    assert _row(d) == (3, "HPAFailedGetMetric")
    assert bool(d.held[0])
    assert state.workloads[0].history.recommendations[1:] == ()  # only the initial record


def test_hpa_legacy_holds_the_downscale_window() -> None:
    # HC stabilizeRecommendation: the max over 300 s, records at exactly the cutoff included
    hpa = HPABaseline(target=2.0)
    specs = [_spec()]
    state = hpa.initial_state(specs)
    d, state = hpa.decide(specs, state, _obs(0.0, 5, running=10.0), 0.0)
    assert _row(d) == (5, "HPASync")  # 10 / (2 * 5) = 1.0, within tolerance
    got, detail = {}, {}
    for t in range(15, 331, 15):
        # 2 / (2 * 5) = 0.2 -> ceil(2 / 2) = 1, held by the 5 recorded at t=0
        d, state = hpa.decide(specs, state, _obs(float(t), 5 if t <= 300 else 1, running=2.0), t)
        got[t], detail[t] = _row(d), str(d.detail[0])
    assert got[150] == (5, "HPASync")
    assert "ScaleDownStabilized" in detail[150]
    assert got[300] == (5, "HPASync")  # t=0 is exactly at the cutoff 300 - 300: still counted
    assert got[315] == (1, "HPASync")  # cutoff 15: only the 1s remain


def test_hpa_with_behavior_scales_down_at_once_and_up_by_policy() -> None:
    behavior = BehaviorSpec(scale_down=ScalingRulesSpec(stabilization_window_seconds=0))
    hpa = HPABaseline(target=2.0, behavior=behavior)
    specs = [_spec()]
    state = hpa.initial_state(specs)
    d, state = hpa.decide(specs, state, _obs(0.0, 10, running=2.0), 0.0)
    # 2 / (2 * 10) = 0.1 -> 1; default scale-down Percent 100/15 s allows int(10 * 0) = 0
    assert _row(d) == (1, "HPASync")
    d, state = hpa.decide(specs, state, _obs(15.0, 1, running=20.0), 15.0)
    # 20 / 2 = 10; default scale-up: max(1 + 4, ceil(1 * 2)) = 5
    assert _row(d) == (5, "HPASync")
    assert "ScaleUpLimit" in str(d.detail[0])


def test_hpa_value_target_scales_by_ready_pods() -> None:
    # RC getUsageRatioReplicaCount: ratio 50 / 10 = 5 times 1 ready pod -> 5, limit max(4, 4)
    hpa = HPABaseline(target=10.0, target_type="Value", metric="queue")
    d, _ = hpa.decide(
        [_spec()], hpa.initial_state([_spec()]), _obs(0.0, 2, ready=1, queue=50.0), 0.0
    )
    assert _row(d) == (4, "HPASync")


@pytest.mark.parametrize(
    "current, lo, hi, expected",
    [
        # HC TestZeroReplicas: 0 replicas with minReplicas 3 -> scaling disabled, stays 0
        pytest.param(0, 3, 5, (0, "HPAScalingDisabled"), id="ZeroReplicas"),
        # HC TestScaleDownRCImmediately: above max -> max, metrics not read
        pytest.param(12, 1, 10, (10, "HPAAboveMaxReplicas"), id="ScaleDownRCImmediately"),
        # HC TestScaleUpRCImmediately: below min -> min
        pytest.param(1, 2, 6, (2, "HPABelowMinReplicas"), id="ScaleUpRCImmediately"),
    ],
)
def test_hpa_reconcile_gates(current: int, lo: int, hi: int, expected: tuple[int, str]) -> None:
    hpa = HPABaseline(target=2.0)
    specs = [_spec(lo, hi)]
    d, _ = hpa.decide(specs, hpa.initial_state(specs), _obs(0.0, current, running=4.0), 0.0)
    assert _row(d) == expected


def test_hpa_puts_replicas_in_its_pool() -> None:
    hpa = HPABaseline(target=2.0, pool="spot")
    d, _ = hpa.decide([_spec()], hpa.initial_state([_spec()]), _obs(0.0, 2, running=8.0), 0.0)
    # 8 / 2 = 4 replicas, all spot, no warm slots
    assert (int(d.spot[0]), int(d.on_demand[0]), int(d.warm[0])) == (4, 0, 0)
    assert float(d.demand_now[0]) == 8.0


def test_baselines_validate_constructor_arguments() -> None:
    with pytest.raises(ValueError, match="target must be > 0"):
        HPABaseline(target=0.0)
    with pytest.raises(ValueError, match="pool must be one of"):
        HPABaseline(target=1.0, pool="warm")
    with pytest.raises(ValueError, match="max_scale_down_rate must be > 1"):
        KPABaseline(max_scale_down_rate=1.0)


# --------------------------------------------------------------------------------------------
# KEDA
# --------------------------------------------------------------------------------------------


def _keda_timeline(
    keda: KEDABaseline, spec: PolicySpec, queue: dict[int, float], until: int, start: int = 0
) -> dict[int, tuple[int, str]]:
    """Run every 15 s; the cluster applies each decision at once. `queue` maps a start time to
    the value from then on."""
    state = keda.initial_state([spec])
    current, out = start, {}
    for t in range(0, until + 1, 15):
        value = [v for since, v in sorted(queue.items()) if since <= t][-1]
        d, state = keda.decide([spec], state, _obs(float(t), current, queue=value), float(t))
        out[t] = _row(d)
        current = out[t][0]
    return out


def test_keda_activation_hpa_and_cooldown_timeline() -> None:
    keda = KEDABaseline(target=1.0)  # queue, AverageValue 1, poll 30 s, cooldown 300 s
    got = _keda_timeline(keda, _spec(0, 10), {0: 0.0, 30: 5.0, 120: 0.0, 600: 3.0}, 660)
    # at 0 replicas the HPA (min 1) is disabled and the inactive executor does nothing
    assert got[0] == (0, "HPAScalingDisabled")
    # KEX RequestScale: active (5 > 0) with 0 replicas -> max(minReplicaCount, 1) = 1
    assert got[30] == (1, "KEDAActivate")
    # the HPA's next sync: 5 / (5 * 1) -> ceil(5 / 1) = 5, legacy limit max(2*1, 4) = 4
    assert got[45] == (4, "HPASync")
    assert got[60] == (5, "HPASync")
    # queue empty from 120; the HPA keeps 5 (max over its 300 s window, last 5 at t=105)
    assert got[405] == (5, "HPASync")
    # last active poll at 90: 90 + 300 = 390 is not Before 390, so the poll at 390 waits and
    # the one at 420 scales to zero (the HPA does not run in that tick)
    assert got[390] == (5, "HPASync")
    assert got[420] == (0, "KEDADeactivate")
    assert got[435] == (0, "HPAScalingDisabled")
    assert got[600] == (1, "KEDAActivate")  # activated again by the next poll


def test_keda_min_replica_count_never_scales_to_zero() -> None:
    # KEX: inactive below minReplicaCount -> set to it; the HPA's minReplicas is 2 as well
    keda = KEDABaseline(target=1.0, min_replica_count=2)
    got = _keda_timeline(keda, _spec(0, 10), {0: 0.0}, 900)
    assert got[0] == (2, "KEDAMinReplicas")
    assert {r for t, (r, _) in got.items() if t > 0} == {2}


def test_keda_activation_threshold_is_strict() -> None:
    # active iff value > activation (metrics-api activationTargetValue)
    keda = KEDABaseline(target=1.0, activation=5.0)
    got = _keda_timeline(keda, _spec(0, 10), {0: 5.0, 60: 6.0}, 60)
    assert got[30][0] == 0
    assert got[60] == (1, "KEDAActivate")


def test_keda_holds_on_missing_metric() -> None:
    # a scaler error without fallback: no activation change, and the HPA fails static
    keda = KEDABaseline(target=1.0)
    got = _keda_timeline(keda, _spec(0, 10), {0: math.nan}, 900, start=3)
    assert got[0] == (3, "HPAFailedGetMetric")
    assert {r for r, _ in got.values()} == {3}  # never deactivated, even after the cooldown


# --------------------------------------------------------------------------------------------
# Knative KPA: the decider (autoscaler.go Scale)
# --------------------------------------------------------------------------------------------

T0 = 1_000.0
_FRESH = KPAScalerState.new(1, T0)  # KAT newTestAutoscaler: created with 1 ready pod
_PANICKING = KPAScalerState(T0 - 5.0, 5)  # KAT prepFunc: panicTime now-5s, maxPanicPods 5


def _kat(target: float, **overrides: object) -> KPADeciderSpec:
    base: dict[str, object] = {"max_scale_up_rate": 10.0, "max_scale_down_rate": 10.0}
    base.update(overrides)
    return KPADeciderSpec(target, **base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "spec, state, ready, stable, panic, want",
    [
        # KAT TestAutoscalerScale rows
        pytest.param(_kat(10), _FRESH, 1, 0.0, 0.0, 0, id="AutoscalerNoDataAtZeroNoAutoscale"),
        # ceil(21 / 181) = 1
        pytest.param(_kat(181), _FRESH, 1, 21.0, 26.0, 1, id="AutoscalerStableModeUnlimitedTBC"),
        pytest.param(_kat(10), _FRESH, 1, 50.0, 49.0, 5, id="Autoscaler0TBC"),
        pytest.param(_kat(10), _FRESH, 1, 50.0, 50.0, 5, id="AutoscalerStableModeNoChange"),
        # in panic: max(ceil(50/1), ceil(30/1)) = 50 > maxPanicPods 5
        pytest.param(
            _kat(1), _PANICKING, 5, 50.0, 30.0, 50, id="AutoscalerPanicStableLargerThanPanic"
        ),
        pytest.param(
            _kat(1), _PANICKING, 5, 20.0, 30.0, 30, id="AutoscalerPanicStableLessThanPanic"
        ),
        # 5 / 5 = 1 < 2: no panic
        pytest.param(
            _kat(10), _FRESH, 5, 50.0, 50.0, 5, id="AutoscalerStableModeNoChangeAlreadyScaled"
        ),
        # maxScaleUp = ceil(1.1 * 2) = 3 keeps growth possible with a tiny rate
        pytest.param(
            _kat(1, max_scale_up_rate=1.1),
            _FRESH,
            2,
            3.0,
            3.1,
            3,
            id="AutoscalerStableModeIncreaseWithSmallScaleUpRate",
        ),
        # maxScaleDown = floor(100 / 1.1) = 90
        pytest.param(
            _kat(10, max_scale_down_rate=1.1),
            _FRESH,
            100,
            1.0,
            1.0,
            90,
            id="AutoscalerStableModeDecreaseWithSmallScaleDownRate",
        ),
        # not reachable: maxScaleDown 0
        pytest.param(
            _kat(10, max_scale_down_rate=1.1, reachable=False),
            _FRESH,
            100,
            1.0,
            1.0,
            1,
            id="AutoscalerStableModeDecreaseNonReachable",
        ),
        # ceil(100 / 10) = 10; 10 / 1 >= 2 -> panic, panic count wins
        pytest.param(_kat(10), _FRESH, 1, 50.0, 100.0, 10, id="AutoscalerPanicModeDoublePodCount"),
        # KAT TestAutoscalerUseOnePodAsMinimumIfEndpointsNotFound: ready 0 counts as 1 ->
        # maxScaleUp ceil(10 * 1) = 10
        pytest.param(_kat(10), _FRESH, 0, 1000.0, 888.0, 10, id="UseOnePodAsMinimum"),
    ],
)
def test_kpa_scale_table(
    spec: KPADeciderSpec,
    state: KPAScalerState,
    ready: int,
    stable: float,
    panic: float,
    want: int,
) -> None:
    got, _ = kpa_scale(state, spec, ready, stable, panic, T0)
    assert got == want


def _sequence(
    spec: KPADeciderSpec,
    state: KPAScalerState,
    steps: Sequence[tuple[float, int, float, float]],
) -> tuple[list[int], KPAScalerState]:
    out = []
    for t, ready, stable, panic in steps:
        got, state = kpa_scale(state, spec, ready, stable, panic, t)
        out.append(got)
    return out, state


def test_kpa_panic_then_unpanic_scale_down() -> None:
    # KAT TestAutoscalerPanicThenUnPanicScaleDown
    got, _ = _sequence(
        _kat(10),
        _FRESH,
        [
            (T0, 1, 100.0, 100.0),  # 10
            (T0, 10, 100.0, 1000.0),  # panic: ceil(1000/10) = 100 (maxScaleUp 100)
            (T0 + 30, 10, 1.0, 1.0),  # traffic gone, still panicking: never scale down
            (T0 + 61, 10, 1.0, 1.0),  # panic time + 60 s is before now: back to 1
        ],
    )
    assert got == [10, 100, 100, 1]


def test_kpa_unpanic_after_slow_increase() -> None:
    # KAT TestAutoscalerUnpanicAfterSlowIncrease
    got, state = _sequence(
        _kat(1),
        _FRESH,
        [
            (T0, 10, 11.0, 25.0),  # 25 / 10 = 2.5 >= 2: panic at T0, 25 pods
            (T0 + 30, 40, 30.0, 41.0),  # 41 / 40 < 2: not extended, still in panic: 41
            (T0 + 62, 55, 50.0, 56.0),  # T0 + 60 < T0 + 62: panic over, stable 50
        ],
    )
    assert got == [25, 41, 50]
    assert state.panic_time_s is None


def test_kpa_extend_panic_window() -> None:
    # KAT TestAutoscalerExtendPanicWindow: 80 / 40 = 2 >= 2 refreshes the panic time
    got, state = _sequence(_kat(1), _FRESH, [(T0, 10, 11.0, 25.0), (T0 + 30, 40, 30.0, 80.0)])
    assert got == [25, 80]
    assert state.panic_time_s == T0 + 30


def test_kpa_rate_limits() -> None:
    # KAT TestAutoscalerRateLimitScaleUp: x10 per tick
    assert _sequence(_kat(10), _FRESH, [(T0, 1, 1000.0, 1001.0), (T0, 10, 1000.0, 1001.0)])[0] == [
        10,
        100,
    ]
    # KAT TestAutoscalerRateLimitScaleDown: /10 per tick
    assert _sequence(_kat(10), _FRESH, [(T0, 100, 1.0, 1.0), (T0, 10, 1.0, 1.0)])[0] == [10, 1]


def test_kpa_no_traffic_and_activation_scale() -> None:
    # KAT TestAutoscalerStableModeNoTrafficScaleToZero: ceil(1/10) = 1, then 0
    assert _sequence(_kat(10), _FRESH, [(T0, 1, 1.0, 0.0), (T0, 1, 0.0, 0.0)])[0] == [1, 0]
    # KAT TestAutoscalerActivationScale: 0 stays 0, any traffic -> activation scale 2
    spec = _kat(10, activation_scale=2)
    assert _sequence(spec, _FRESH, [(T0, 1, 0.0, 0.0), (T0, 1, 1.0, 0.0)])[0] == [0, 2]


@pytest.mark.parametrize(
    "ready, panicking, max_panic",
    [
        # KAT TestStartInPanicMode: 0 or 1 ready pods start calm; 2 start in panic
        pytest.param(0, False, 0, id="zero-pods"),
        pytest.param(1, False, 1, id="one-pod"),
        pytest.param(2, True, 2, id="two-pods"),
    ],
)
def test_kpa_start_in_panic_mode(ready: int, panicking: bool, max_panic: int) -> None:
    state = KPAScalerState.new(ready, T0)
    assert (state.panic_time_s is not None, state.max_panic_pods) == (panicking, max_panic)


# --------------------------------------------------------------------------------------------
# Knative KPA: the baseline (windows from observations, reconciler rules)
# --------------------------------------------------------------------------------------------


def _kpa_obs(now_s: float, current: int, stable_rest: float, panic: float) -> Observation:
    """30 samples 2 s apart ending at now: the last 3 (the 6 s panic window) at `panic`, the
    27 before at `stable_rest`."""
    t = (now_s - 2.0 * np.arange(29, -1, -1)).astype(np.float64)
    values = np.where(t > now_s - 6.0, panic, stable_rest)[None, :]
    return Observation(t_s=t, metrics={"running": values}, cluster=_cluster(current))


def test_kpa_derived_example_panics_and_holds() -> None:
    # algorithms.md section 3: target 10, ready 2, stable 35, panic 50 -> dspc 4, dppc 5;
    # 5 / 2 = 2.5 >= 2 -> panic -> 5
    kpa = KPABaseline(target=10.0)
    specs = [_spec(0, 100)]
    state = kpa.initial_state(specs)
    obs = _kpa_obs(T0, 2, 900.0 / 27.0, 50.0)  # (27 * 33.3 + 3 * 50) / 30 = 35
    d, state = kpa.decide(specs, state, obs, T0)
    assert _row(d) == (5, "KPAPanic")
    # then stable = panic = 30 -> 3 pods wanted, but no scale-down in panic until 60 s after
    # the last tick over the threshold (T0)
    got = {}
    for t in np.arange(T0 + 2, T0 + 65, 2.0):
        d, state = kpa.decide(specs, state, _kpa_obs(t, 5, 30.0, 30.0), t)
        got[t - T0] = _row(d)
    assert got[2.0] == (5, "KPAPanic")
    assert got[60.0] == (5, "KPAPanic")  # T0 + 60 is not before T0 + 60
    assert got[62.0] == (3, "KPAStable")


def test_kpa_no_data_holds() -> None:
    # KAT TestAutoscalerNoDataNoAutoscale: no samples -> invalid result, no change
    kpa = KPABaseline()
    d, _ = kpa.decide([_spec()], kpa.initial_state([_spec()]), _obs(T0, 4, running=math.nan), T0)
    assert _row(d) == (4, "KPANoData")
    assert bool(d.held[0])


def test_kpa_scale_to_zero_after_grace() -> None:
    # the reconciler applies 0 only after 30 s of the decider asking for 0
    kpa = KPABaseline()
    specs = [_spec(0, 10)]
    state = kpa.initial_state(specs)
    current, got = 1, {}
    for t in range(0, 34, 2):
        d, state = kpa.decide(specs, state, _kpa_obs(float(t), current, 0.0, 0.0), float(t))
        got[t] = _row(d)
        current = got[t][0]
    assert got[0] == (1, "KPAScaleToZeroGrace")
    assert got[28] == (1, "KPAScaleToZeroGrace")
    assert got[30] == (0, "KPAScaleToZero")


@pytest.mark.parametrize(
    "enable, lo, expected",
    [
        # enable-scale-to-zero false keeps one pod
        pytest.param(False, 0, (1, "KPAStable"), id="scale-to-zero-disabled"),
        # min-scale 1: the bound applies before the scale-to-zero rules
        pytest.param(True, 1, (1, "KPAStable"), id="min-scale-1"),
    ],
)
def test_kpa_keeps_one_pod(enable: bool, lo: int, expected: tuple[int, str]) -> None:
    kpa = KPABaseline(enable_scale_to_zero=enable)
    specs = [_spec(lo, 10)]
    d, _ = kpa.decide(specs, kpa.initial_state(specs), _kpa_obs(T0, 1, 0.0, 0.0), T0)
    assert _row(d) == expected


def test_kpa_ticks_every_two_seconds() -> None:
    kpa = KPABaseline(target=10.0)
    specs = [_spec(0, 100)]
    state = kpa.initial_state(specs)
    _, state = kpa.decide(specs, state, _kpa_obs(T0, 1, 20.0, 20.0), T0)
    d, _ = kpa.decide(specs, state, _kpa_obs(T0 + 1, 1, 80.0, 80.0), T0 + 1)
    assert _row(d) == (1, "KPAWaitTick")


def test_kpa_default_target_is_70() -> None:
    # ResolveMetricTarget: containerConcurrency 0 -> 100, times 0.7
    assert KPABaseline().target == 70.0
    assert KPABaseline(container_concurrency=4).target == max(1.0, 4 * 0.7)


def test_window_average_uses_samples_inside_the_window() -> None:
    t = np.array([0.0, 2.0, 4.0, 6.0])
    values = np.array([[100.0, 1.0, np.nan, 3.0], [np.nan, np.nan, np.nan, np.nan]])
    got = window_average(t, values, now_s=6.0, window_s=6.0)
    # t=0 is not after 6 - 6; NaN skipped: (1 + 3) / 2
    assert got[0] == 2.0
    assert math.isnan(got[1])


# --------------------------------------------------------------------------------------------
# Static
# --------------------------------------------------------------------------------------------


def test_static_policy() -> None:
    policy = StaticPolicy(3, pool="spot")
    specs = [_spec(), _spec()]
    obs = Observation(
        t_s=np.array([0.0]),
        metrics={},
        cluster=ClusterFacts.uniform(2, on_demand=5),
    )
    d, state = policy.decide(specs, policy.initial_state(specs), obs, 0.0)
    assert d.spot.tolist() == [3, 3]
    assert d.on_demand.tolist() == [0, 0]
    assert d.reason.tolist() == ["Static", "Static"]
    assert state == policy.initial_state(specs)
