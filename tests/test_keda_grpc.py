"""KEDA external scaler: a real gRPC server on 127.0.0.1, real clients, real TLS.

Also the metrics-api JSON route (a real uvicorn on 127.0.0.1), the stub regeneration, and the HPA
arithmetic: the reported metric fed through `policies.hpa.replicas_for_average_value` lands
on the controller's desired replicas.
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from google.protobuf.descriptor import FieldDescriptor as FD
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import given, settings
from hypothesis import strategies as st

from autoscaler.config import Workload, parse_workload
from autoscaler.keda import core
from autoscaler.keda.cli import run_checks
from autoscaler.keda.gen import externalscaler_pb2 as pb
from autoscaler.keda.gen import externalscaler_pb2_grpc as pb_grpc
from autoscaler.keda.http import router
from autoscaler.keda.server import TLSConfig, start_server
from autoscaler.protocols import DecisionRecord
from autoscaler.store import DecisionStore
from policies.hpa import (
    POLICY_PERCENT,
    POLICY_PODS,
    SELECT_MAX,
    HPABehavior,
    HPAHistory,
    ScalingPolicy,
    ScalingRules,
    Tolerances,
    behavior_step,
    default_scale_down_rules,
    default_scale_up_rules,
    replicas_for_average_value,
)
from policies.types import Decision

SPEC: dict[str, Any] = {
    "targets": {"on_demand": "x-od", "spot": "x-spot", "warm": "x-warm"},
    "policy": {"scenario": "chat", "capacity": {"rps_per_replica": 10}},
}
SPEC_NO_SPOT: dict[str, Any] = {
    "targets": {"on_demand": "x-od"},
    "policy": {"scenario": "chat", "capacity": {"rps_per_replica": 10}},
}
CALL_TIMEOUT_S = 10.0  # bounds every client call; tests never wait longer


def make_workload(key: str = "llm/chat", spec: dict[str, Any] | None = None) -> Workload:
    ns, name = key.split("/")
    return parse_workload(ns, name, spec or SPEC)


def make_record(
    workload: Workload,
    spot: int = 0,
    on_demand: int = 0,
    warm: int = 0,
    *,
    active: bool = False,
    current: dict[str, int] | None = None,
    held: bool = False,
    stale: bool = False,
) -> DecisionRecord:
    decision = Decision(
        spot=spot,
        on_demand=on_demand,
        warm=warm,
        desired_total=spot + on_demand,
        demand_now=0.0,
        forecast=0.0,
        forecast_upper=0.0,
        reason="HoldStaleMetrics" if held else "ScaleUpForecast",
        message="",
        held=held,
    )
    return DecisionRecord(
        key=workload.key,
        workload=workload,
        decision=decision,
        at_s=0.0,
        current=current or {},
        ready={},
        actuated={},
        errors=[],
        stale=stale,
        active=active,
    )


def ref(workload: str | None = "llm/chat", ns: str = "", name: str = "", **md: str) -> Any:
    metadata = {"scalerAddress": "gpu-autoscaler.gpu-autoscaler.svc:9090", **md}
    if workload is not None:
        metadata["workload"] = workload
    return pb.ScaledObjectRef(name=name, namespace=ns, scalerMetadata=metadata)


@dataclass
class Scaler:
    store: DecisionStore
    server: grpc.Server
    port: int
    channel: grpc.Channel
    stub: Any

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture
def scaler() -> Iterator[Scaler]:
    store = DecisionStore()
    server, port = start_server(store, "127.0.0.1:0", max_workers=16, tick_s=0.5)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Scaler(store, server, port, channel, pb_grpc.ExternalScalerStub(channel))
    finally:
        channel.close()
        server.stop(None)


def rpc_error(fn: Any, *args: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        fn(*args, timeout=CALL_TIMEOUT_S)
    return info.value


# --------------------------------------------------------------------------------------------
# Unary RPCs
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pool", "expected_name"),
    [
        pytest.param("spot", "gpu-autoscaler-spot", id="spot"),
        pytest.param("on_demand", "gpu-autoscaler-on-demand", id="on-demand-underscore"),
        pytest.param("on-demand", "gpu-autoscaler-on-demand", id="on-demand-hyphen-alias"),
        pytest.param("warm", "gpu-autoscaler-warm", id="warm"),
        pytest.param("", "gpu-autoscaler-spot", id="empty-pool-means-default"),
    ],
)
def test_metric_spec_names_the_pool_with_target_one(
    scaler: Scaler, pool: str, expected_name: str
) -> None:
    scaler.store.put(make_record(make_workload(), spot=3, on_demand=1, warm=2))
    resp = scaler.stub.GetMetricSpec(ref(pool=pool), timeout=CALL_TIMEOUT_S)
    assert [(s.metricName, s.targetSize, s.targetSizeFloat) for s in resp.metricSpecs] == [
        (expected_name, 1, 1.0)
    ]


def test_get_metrics_reports_each_pools_desired_replicas(scaler: Scaler) -> None:
    scaler.store.put(make_record(make_workload(), spot=7, on_demand=2, warm=5))
    got = {}
    for pool in ("spot", "on_demand", "warm"):
        spec = scaler.stub.GetMetricSpec(ref(pool=pool), timeout=CALL_TIMEOUT_S).metricSpecs[0]
        req = pb.GetMetricsRequest(scaledObjectRef=ref(pool=pool), metricName=spec.metricName)
        (value,) = scaler.stub.GetMetrics(req, timeout=CALL_TIMEOUT_S).metricValues
        assert value.metricName == spec.metricName
        got[pool] = (value.metricValueFloat, value.metricValue)
    # No current replicas known: value = desired, in both the float and the int field.
    assert got == {"spot": (7.0, 7), "on_demand": (2.0, 2), "warm": (5.0, 5)}


def test_get_metrics_on_a_scale_down_reports_just_above_desired_minus_one(scaler: Scaler) -> None:
    scaler.store.put(make_record(make_workload(), spot=12, current={"spot": 20}))
    req = pb.GetMetricsRequest(scaledObjectRef=ref(pool="spot"), metricName="")
    (value,) = scaler.stub.GetMetrics(req, timeout=CALL_TIMEOUT_S).metricValues
    # 12 - 0.99 = 11.01: ceil(11.01 / 1) = 12, ratio 11.01 / 20 = 0.55 leaves the band.
    assert value.metricValueFloat == pytest.approx(11.01)
    assert value.metricValue == 12  # int field for KEDA releases without the float


def test_desired_zero_sends_zero_in_the_float_and_the_int_field(scaler: Scaler) -> None:
    # KEDA reads metricValue when metricValueFloat is 0: both must say 0.
    scaler.store.put(make_record(make_workload(), spot=0, on_demand=1, current={"spot": 4}))
    req = pb.GetMetricsRequest(scaledObjectRef=ref(pool="spot"))
    (value,) = scaler.stub.GetMetrics(req, timeout=CALL_TIMEOUT_S).metricValues
    assert (value.metricValueFloat, value.metricValue) == (0.0, 0)


def test_default_pool_is_on_demand_when_the_workload_has_no_spot(scaler: Scaler) -> None:
    w = make_workload("llm/od-only", SPEC_NO_SPOT)
    scaler.store.put(make_record(w, on_demand=4))
    spec = scaler.stub.GetMetricSpec(ref("llm/od-only"), timeout=CALL_TIMEOUT_S).metricSpecs[0]
    assert spec.metricName == "gpu-autoscaler-on-demand"
    req = pb.GetMetricsRequest(scaledObjectRef=ref("llm/od-only"), metricName=spec.metricName)
    assert scaler.stub.GetMetrics(req, timeout=CALL_TIMEOUT_S).metricValues[0].metricValue == 4


def test_without_workload_metadata_the_scaled_object_ref_names_the_workload(
    scaler: Scaler,
) -> None:
    scaler.store.put(make_record(make_workload("team-a/chat"), spot=2))
    r = ref(None, ns="team-a", name="chat")
    assert scaler.stub.IsActive(r, timeout=CALL_TIMEOUT_S).result is True
    req = pb.GetMetricsRequest(scaledObjectRef=r)
    assert scaler.stub.GetMetrics(req, timeout=CALL_TIMEOUT_S).metricValues[0].metricValue == 2


def test_workload_metadata_wins_over_the_scaled_object_ref(scaler: Scaler) -> None:
    scaler.store.put(make_record(make_workload("llm/chat"), spot=6))
    r = ref("llm/chat", ns="other", name="chat-spot")  # the ScaledObject's own name differs
    req = pb.GetMetricsRequest(scaledObjectRef=r)
    assert scaler.stub.GetMetrics(req, timeout=CALL_TIMEOUT_S).metricValues[0].metricValue == 6


def test_held_decision_is_served_as_stored_never_as_an_error(scaler: Scaler) -> None:
    scaler.store.put(
        make_record(make_workload(), spot=5, held=True, stale=True, current={"spot": 5})
    )
    req = pb.GetMetricsRequest(scaledObjectRef=ref(pool="spot"))
    value = scaler.stub.GetMetrics(req, timeout=CALL_TIMEOUT_S).metricValues[0]
    assert (value.metricValueFloat, value.metricValue) == (5.0, 5)
    assert scaler.stub.IsActive(ref(pool="spot"), timeout=CALL_TIMEOUT_S).result is True


@pytest.mark.parametrize(
    ("spot", "on_demand", "warm", "demand", "pool", "active"),
    [
        pytest.param(0, 0, 0, False, "spot", False, id="nothing-wanted-no-demand"),
        pytest.param(2, 0, 0, False, "spot", True, id="desired-above-zero"),
        # Demand with desired still 0 activates the primary pool (scale from zero for batch).
        pytest.param(0, 0, 0, True, "spot", True, id="demand-activates-primary-pool"),
        # ... but not another pool: KEDA's HPA keeps >= 1 replica on any active pool.
        pytest.param(0, 0, 0, True, "on_demand", False, id="demand-not-for-secondary-pool"),
        pytest.param(0, 0, 0, True, "warm", False, id="demand-not-for-warm-pool"),
        pytest.param(0, 0, 3, False, "warm", True, id="warm-slots-wanted"),
        pytest.param(0, 1, 0, False, "spot", False, id="other-pool-busy-this-one-idle"),
    ],
)
def test_is_active(
    scaler: Scaler, spot: int, on_demand: int, warm: int, demand: bool, pool: str, active: bool
) -> None:
    scaler.store.put(make_record(make_workload(), spot, on_demand, warm, active=demand))
    assert scaler.stub.IsActive(ref(pool=pool), timeout=CALL_TIMEOUT_S).result is active


def test_unknown_keys_are_ignored(scaler: Scaler) -> None:
    scaler.store.put(make_record(make_workload(), spot=1))
    r = ref(pool="spot", enableTLS="true", unsafeSsl="false", anything="x", FOOFromEnv="y")
    assert scaler.stub.IsActive(r, timeout=CALL_TIMEOUT_S).result is True


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


def test_unknown_workload_is_not_found_and_says_how_to_fix(scaler: Scaler) -> None:
    scaler.store.put(make_record(make_workload(), spot=1))
    for call, arg in [
        (scaler.stub.IsActive, ref("llm/missing")),
        (scaler.stub.GetMetricSpec, ref("llm/missing")),
        (scaler.stub.GetMetrics, pb.GetMetricsRequest(scaledObjectRef=ref("llm/missing"))),
    ]:
        err = rpc_error(call, arg)
        assert err.code() == grpc.StatusCode.NOT_FOUND
        assert "llm/missing" in err.details()
        assert "AutoscalingPolicy" in err.details()


def test_before_the_first_tick_calls_are_unavailable(scaler: Scaler) -> None:
    err = rpc_error(scaler.stub.IsActive, ref())
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert "first tick" in err.details()


@pytest.mark.parametrize(
    ("metadata", "named"),
    [
        pytest.param({"pool": "gold"}, ["'pool'", "'gold'"], id="pool-not-one-of-three"),
        pytest.param({"workload": "chat"}, ["'workload'", "'chat'"], id="workload-without-slash"),
        pytest.param({"workload": "a/b/c"}, ["'a/b/c'"], id="workload-two-slashes"),
        pytest.param({"workload": "/chat"}, ["'/chat'"], id="workload-empty-namespace"),
        pytest.param({"workload": "LLM/chat"}, ["'LLM'", "DNS-1123"], id="namespace-uppercase"),
        pytest.param({"workload": "llm/chat_1"}, ["'chat_1'"], id="name-underscore"),
        pytest.param({"deadBand": "wide"}, ["'deadBand'", "'wide'"], id="dead-band-unknown"),
        pytest.param(
            {"pool": "gold", "deadBand": "wide"}, ["'gold'", "'wide'"], id="all-problems-at-once"
        ),
    ],
)
def test_malformed_metadata_is_invalid_argument_naming_key_and_value(
    scaler: Scaler, metadata: dict[str, str], named: list[str]
) -> None:
    scaler.store.put(make_record(make_workload(), spot=1))
    md = {"workload": "llm/chat", **metadata}
    r = pb.ScaledObjectRef(name="so", namespace="llm", scalerMetadata=md)
    err = rpc_error(scaler.stub.GetMetricSpec, r)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    for text in named:
        assert text in err.details()


def test_no_workload_anywhere_is_invalid_argument(scaler: Scaler) -> None:
    scaler.store.put(make_record(make_workload(), spot=1))
    err = rpc_error(scaler.stub.IsActive, ref(None))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'workload'" in err.details()


def test_pool_without_a_deployment_is_failed_precondition(scaler: Scaler) -> None:
    scaler.store.put(make_record(make_workload("llm/od-only", SPEC_NO_SPOT), on_demand=1))
    err = rpc_error(scaler.stub.GetMetricSpec, ref("llm/od-only", pool="warm"))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "spec.targets.warm" in err.details()


def test_get_metrics_for_another_metric_name_is_invalid_argument(scaler: Scaler) -> None:
    scaler.store.put(make_record(make_workload(), spot=1))
    req = pb.GetMetricsRequest(scaledObjectRef=ref(pool="spot"), metricName="gpu-autoscaler-warm")
    err = rpc_error(scaler.stub.GetMetrics, req)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'gpu-autoscaler-warm'" in err.details() and "'gpu-autoscaler-spot'" in err.details()


class _BrokenStore(DecisionStore):
    """A store whose reads fail once, as an unexpected bug would."""

    def __init__(self) -> None:
        super().__init__()
        self.fail_next = True

    def get(self, key: str) -> DecisionRecord | None:
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("disk on fire")
        return super().get(key)


def test_unexpected_error_is_internal_logged_and_the_server_keeps_serving(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = _BrokenStore()
    store.put(make_record(make_workload(), spot=1))
    server, port = start_server(store, "127.0.0.1:0", max_workers=4, tick_s=0.5)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.ExternalScalerStub(channel)
            with caplog.at_level(logging.ERROR, logger="autoscaler.keda.server"):
                err = rpc_error(stub.IsActive, ref())
            assert err.code() == grpc.StatusCode.INTERNAL
            assert "disk on fire" in err.details()
            assert any("unexpected" in r.message and r.exc_info for r in caplog.records)
            assert stub.IsActive(ref(), timeout=CALL_TIMEOUT_S).result is True
    finally:
        server.stop(None)


# --------------------------------------------------------------------------------------------
# Streams
# --------------------------------------------------------------------------------------------


class StreamReader:
    """Reads a server stream in a thread, so the test can wait for messages with a bound."""

    def __init__(self, call: Any) -> None:
        self.call = call
        self.messages: list[Any] = []
        self.error: grpc.RpcError | None = None
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for m in self.call:
                with self._cond:
                    self.messages.append(m)
                    self._cond.notify_all()
        except grpc.RpcError as e:
            with self._cond:
                self.error = e
                self._cond.notify_all()

    def wait_for(self, n: int, timeout_s: float = CALL_TIMEOUT_S) -> list[Any]:
        with self._cond:
            self._cond.wait_for(lambda: len(self.messages) >= n or self.error, timeout_s)
            return list(self.messages)

    def wait_error(self, timeout_s: float = CALL_TIMEOUT_S) -> grpc.RpcError | None:
        with self._cond:
            self._cond.wait_for(lambda: self.error is not None, timeout_s)
            return self.error

    def close(self) -> None:
        self.call.cancel()
        self._thread.join(CALL_TIMEOUT_S)


def test_stream_is_active_pushes_true_when_the_workload_turns_active(scaler: Scaler) -> None:
    w = make_workload()
    scaler.store.put(make_record(w, spot=0))
    reader = StreamReader(scaler.stub.StreamIsActive(ref(pool="spot"), timeout=60))
    try:
        assert [m.result for m in reader.wait_for(1)] == [False]  # current value on open
        scaler.store.put(make_record(w, spot=0, active=True))  # the queue turns non-empty
        assert [m.result for m in reader.wait_for(2)] == [False, True]
        # Same activity again (more replicas, still active): nothing is pushed, so the next
        # message after it is the change to inactive.
        scaler.store.put(make_record(w, spot=4, active=True))
        scaler.store.put(make_record(w, spot=0, active=False))
        assert [m.result for m in reader.wait_for(3)] == [False, True, False]
        assert reader.error is None
    finally:
        reader.close()


def test_stream_is_active_sends_keepalives_of_the_current_value() -> None:
    store = DecisionStore()
    store.put(make_record(make_workload(), spot=2))
    server, port = start_server(store, "127.0.0.1:0", max_workers=4, tick_s=1.0, keepalive_s=0.05)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.ExternalScalerStub(channel)
            reader = StreamReader(stub.StreamIsActive(ref(), timeout=60))
            try:
                assert [m.result for m in reader.wait_for(3)] == [True, True, True]
            finally:
                reader.close()
    finally:
        server.stop(None)


def test_stream_ends_with_not_found_when_the_workload_is_removed(scaler: Scaler) -> None:
    w = make_workload()
    scaler.store.put(make_record(w, spot=1))
    reader = StreamReader(scaler.stub.StreamIsActive(ref(), timeout=60))
    try:
        assert len(reader.wait_for(1)) == 1
        scaler.store.remove([w.key])
        err = reader.wait_error()
        assert err is not None and err.code() == grpc.StatusCode.NOT_FOUND
    finally:
        reader.close()


def test_stream_with_bad_metadata_fails_at_once(scaler: Scaler) -> None:
    scaler.store.put(make_record(make_workload(), spot=1))
    reader = StreamReader(scaler.stub.StreamIsActive(ref(pool="gold"), timeout=60))
    try:
        err = reader.wait_error()
        assert err is not None and err.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        reader.close()


def test_stream_metric_spec_sends_at_once_then_on_change_consistent_with_get(
    scaler: Scaler,
) -> None:
    w = make_workload("llm/chat")
    scaler.store.put(make_record(w, spot=1))
    reader = StreamReader(scaler.stub.StreamMetricSpec(ref("llm/chat"), timeout=60))
    try:
        (first,) = reader.wait_for(1)
        assert first == scaler.stub.GetMetricSpec(ref("llm/chat"), timeout=CALL_TIMEOUT_S)
        assert first.metricSpecs[0].metricName == "gpu-autoscaler-spot"
        # A new replica count changes nothing in the spec: nothing is pushed ...
        scaler.store.put(make_record(w, spot=9))
        # ... but the spot Deployment leaving the spec moves the default pool to on_demand.
        scaler.store.put(make_record(make_workload("llm/chat", SPEC_NO_SPOT), on_demand=2))
        msgs = reader.wait_for(2)
        assert [m.metricSpecs[0].metricName for m in msgs] == [
            "gpu-autoscaler-spot",
            "gpu-autoscaler-on-demand",
        ]
        assert msgs[-1] == scaler.stub.GetMetricSpec(ref("llm/chat"), timeout=CALL_TIMEOUT_S)
    finally:
        reader.close()


def _thread_count_settles(limit: int, timeout_s: float = 10.0) -> int:
    deadline = time.monotonic() + timeout_s
    while threading.active_count() > limit and time.monotonic() < deadline:
        time.sleep(0.05)
    return threading.active_count()


def test_many_stream_open_close_cycles_do_not_grow_threads(scaler: Scaler) -> None:
    scaler.store.put(make_record(make_workload(), spot=1))

    def cycle(rpc: Any) -> None:
        call = rpc(ref(), timeout=CALL_TIMEOUT_S)
        next(call)
        call.cancel()

    # Warm up the worker pool past what overlapping cycles can use (it grows, then reuses).
    readers = [StreamReader(scaler.stub.StreamIsActive(ref(), timeout=60)) for _ in range(8)]
    for r in readers:
        assert len(r.wait_for(1)) == 1
    for r in readers:
        r.close()
    for _ in range(10):
        cycle(scaler.stub.StreamIsActive)
    baseline = _thread_count_settles(limit=0, timeout_s=1.0)
    for i in range(300):
        cycle(scaler.stub.StreamIsActive if i % 2 else scaler.stub.StreamMetricSpec)
    # The change-feed thread leaves within one tick of the last stream; workers are reused.
    after = _thread_count_settles(limit=baseline)
    assert after <= baseline + 1, f"threads grew from {baseline} to {after} over 300 streams"
    # Streams released their slots: a unary call and a fresh stream still work.
    assert scaler.stub.IsActive(ref(), timeout=CALL_TIMEOUT_S).result is True
    cycle(scaler.stub.StreamIsActive)


def test_stream_limit_answers_resource_exhausted_and_unary_calls_keep_working() -> None:
    store = DecisionStore()
    store.put(make_record(make_workload(), spot=1))
    server, port = start_server(store, "127.0.0.1:0", max_workers=4, max_streams=2, tick_s=0.5)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.ExternalScalerStub(channel)
            held = [StreamReader(stub.StreamIsActive(ref(), timeout=60)) for _ in range(2)]
            try:
                for r in held:
                    assert len(r.wait_for(1)) == 1
                extra = StreamReader(stub.StreamIsActive(ref(), timeout=60))
                err = extra.wait_error()
                assert err is not None and err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert stub.IsActive(ref(), timeout=CALL_TIMEOUT_S).result is True
                held[0].close()
                again = StreamReader(stub.StreamIsActive(ref(), timeout=60))
                deadline = time.monotonic() + CALL_TIMEOUT_S
                # The slot frees when the server sees the cancellation; retry like KEDA does.
                while again.wait_for(1, 0.5) == [] and time.monotonic() < deadline:
                    if again.error is not None:
                        again = StreamReader(stub.StreamIsActive(ref(), timeout=60))
                assert [m.result for m in again.wait_for(1)] == [True]
                again.close()
            finally:
                for r in held:
                    r.close()
    finally:
        server.stop(None)


# --------------------------------------------------------------------------------------------
# Health, CLI
# --------------------------------------------------------------------------------------------


def test_health_service_reports_serving(scaler: Scaler) -> None:
    hstub = health_pb2_grpc.HealthStub(scaler.channel)
    for service in ("", "externalscaler.ExternalScaler"):
        resp = hstub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.RpcError) as info:
        hstub.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=5)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_keda_check_calls_every_rpc(scaler: Scaler) -> None:
    scaler.store.put(make_record(make_workload(), spot=3, current={"spot": 3}))
    results = run_checks(scaler.channel, "", "", {"workload": "llm/chat", "pool": "spot"})
    assert [r.call for r in results] == [
        "health",
        "IsActive",
        "GetMetricSpec",
        "GetMetrics",
        "StreamIsActive",
        "StreamMetricSpec",
    ]
    assert all(r.ok for r in results), results
    assert "value=3" in results[3].detail
    bad = run_checks(scaler.channel, "", "", {"workload": "llm/nope"})
    assert [r.code for r in bad if not r.ok] == ["NOT_FOUND"] * 5


def test_keda_check_command_line(scaler: Scaler, capsys: pytest.CaptureFixture[str]) -> None:
    from autoscaler.cli import main

    scaler.store.put(make_record(make_workload(), spot=2))
    rc = main(["keda-check", "--address", scaler.address, "--workload", "llm/chat"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "GetMetrics" in out and "value=2" in out
    rc = main(["keda-check", "--address", scaler.address, "--workload", "llm/chat", "--pool", "x"])
    assert rc == 1
    assert "INVALID_ARGUMENT" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------
# TLS
# --------------------------------------------------------------------------------------------


def _openssl(cwd: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _make_ca(d: Path, name: str) -> None:
    _openssl(
        d, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "1",
        "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip


def _make_leaf(d: Path, name: str, ca: str, ext: str) -> None:
    (d / f"{name}.ext").write_text(ext)
    _openssl(
        d, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}",
    )  # fmt: skip
    _openssl(
        d, "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-out", f"{name}.pem", "-days", "1", "-extfile", f"{name}.ext",
    )  # fmt: skip


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway CA with a server and a client certificate, plus a foreign CA's client."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command line tool")
    d = tmp_path_factory.mktemp("pki")
    _make_ca(d, "ca")
    _make_ca(d, "other-ca")
    _make_leaf(
        d,
        "server",
        "ca",
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    _make_leaf(d, "client", "ca", "extendedKeyUsage=clientAuth\n")
    _make_leaf(d, "intruder", "other-ca", "extendedKeyUsage=clientAuth\n")
    return d


def _tls_channel(port: int, pki: Path, client: str | None) -> grpc.Channel:
    creds = grpc.ssl_channel_credentials(
        root_certificates=(pki / "ca.pem").read_bytes(),
        private_key=None if client is None else (pki / f"{client}.key").read_bytes(),
        certificate_chain=None if client is None else (pki / f"{client}.pem").read_bytes(),
    )
    return grpc.secure_channel(
        f"127.0.0.1:{port}", creds, options=[("grpc.ssl_target_name_override", "localhost")]
    )


def _is_active(channel: grpc.Channel) -> bool | grpc.StatusCode:
    try:
        return bool(pb_grpc.ExternalScalerStub(channel).IsActive(ref(), timeout=5).result)
    except grpc.RpcError as e:
        return e.code()


def test_tls_server_without_client_ca(pki: Path) -> None:
    store = DecisionStore()
    store.put(make_record(make_workload(), spot=1))
    tls = TLSConfig(cert_file=pki / "server.pem", key_file=pki / "server.key")
    server, port = start_server(store, "127.0.0.1:0", tls, max_workers=4, tick_s=0.5)
    try:
        with _tls_channel(port, pki, client=None) as ch:
            assert _is_active(ch) is True
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:  # plaintext is refused
            assert _is_active(ch) == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop(None)


def test_mutual_tls_requires_a_client_certificate_from_the_ca(pki: Path) -> None:
    store = DecisionStore()
    store.put(make_record(make_workload(), spot=1))
    tls = TLSConfig(pki / "server.pem", pki / "server.key", client_ca_file=pki / "ca.pem")
    server, port = start_server(store, "127.0.0.1:0", tls, max_workers=4, tick_s=0.5)
    try:
        with _tls_channel(port, pki, client="client") as ch:
            assert _is_active(ch) is True
        with _tls_channel(port, pki, client=None) as ch:
            assert _is_active(ch) == grpc.StatusCode.UNAVAILABLE
        with _tls_channel(port, pki, client="intruder") as ch:
            assert _is_active(ch) == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop(None)


def test_tls_config_names_the_unreadable_file(tmp_path: Path, pki: Path) -> None:
    tls = TLSConfig(cert_file=pki / "server.pem", key_file=tmp_path / "missing.key")
    with pytest.raises(ValueError, match=r"key_file: cannot read .*missing\.key"):
        start_server(DecisionStore(), "127.0.0.1:0", tls)
    (tmp_path / "empty.pem").write_text("not a certificate")
    tls = TLSConfig(tmp_path / "empty.pem", pki / "server.key")
    with pytest.raises(ValueError, match=r"cert_file: .*empty\.pem holds no PEM block"):
        start_server(DecisionStore(), "127.0.0.1:0", tls)


def test_tls_config_from_command_line_paths(pki: Path) -> None:
    tls = TLSConfig.from_files(str(pki / "server.pem"), str(pki / "server.key"), None)
    assert tls == TLSConfig(pki / "server.pem", pki / "server.key")
    mtls = TLSConfig.from_files(pki / "server.pem", pki / "server.key", pki / "ca.pem")
    assert mtls.client_ca_file == pki / "ca.pem"
    with pytest.raises(ValueError, match="certificate and a key"):
        TLSConfig.from_files(pki / "server.pem", None)


def test_binding_a_busy_port_fails_loudly(scaler: Scaler) -> None:
    with pytest.raises(OSError, match="cannot bind"):
        start_server(DecisionStore(), scaler.address)


# --------------------------------------------------------------------------------------------
# Arbitrary ScaledObjectRefs: only documented status codes, never a crash
# --------------------------------------------------------------------------------------------

DOCUMENTED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
}


@pytest.fixture(scope="module")
def shared_scaler() -> Iterator[Scaler]:
    store = DecisionStore()
    store.put_many(
        [
            make_record(make_workload("llm/chat"), spot=3, on_demand=1, warm=1, active=True),
            make_record(make_workload("llm/od", SPEC_NO_SPOT), on_demand=2),
            make_record(make_workload("a/b"), spot=0, current={"spot": 12}),
        ]
    )
    server, port = start_server(store, "127.0.0.1:0", max_workers=8, tick_s=0.5)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Scaler(store, server, port, channel, pb_grpc.ExternalScalerStub(channel))
    finally:
        channel.close()
        server.stop(None)


_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
_dns = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,10}[a-z0-9])?", fullmatch=True)
_workload_values = st.one_of(
    _text,
    st.sampled_from(["llm/chat", "llm/od", "a/b", "llm/", "/", "a/b/c", ""]),
    st.builds(lambda a, b: f"{a}/{b}", _dns, _dns),
)
_metadata = st.fixed_dictionaries(
    {},
    optional={
        "workload": _workload_values,
        "pool": st.one_of(_text, st.sampled_from(["spot", "on_demand", "on-demand", "warm", ""])),
        "deadBand": st.one_of(_text, st.sampled_from(["hold", "overshoot"])),
        "scalerAddress": _text,
    },
).flatmap(lambda d: st.dictionaries(_text, _text, max_size=3).map(lambda extra: {**extra, **d}))


@settings(max_examples=100, deadline=None)
@given(
    namespace=st.one_of(_text, _dns, st.just("llm")),
    name=st.one_of(_text, _dns, st.just("chat")),
    metadata=_metadata,
    metric_name=st.one_of(st.just(""), _text, st.just("gpu-autoscaler-spot")),
)
def test_arbitrary_refs_get_only_documented_status_codes(
    shared_scaler: Scaler, namespace: str, name: str, metadata: dict[str, str], metric_name: str
) -> None:
    r = pb.ScaledObjectRef(name=name, namespace=namespace, scalerMetadata=metadata)
    stub = shared_scaler.stub
    calls = [
        (stub.IsActive, r),
        (stub.GetMetricSpec, r),
        (stub.GetMetrics, pb.GetMetricsRequest(scaledObjectRef=r, metricName=metric_name)),
    ]
    for call, arg in calls:
        try:
            resp = call(arg, timeout=CALL_TIMEOUT_S)
        except grpc.RpcError as e:
            assert e.code() in DOCUMENTED, (e.code(), e.details())
            assert e.details(), "an error says what is wrong"
            continue
        if isinstance(resp, pb.GetMetricsResponse):
            (value,) = resp.metricValues
            assert value.metricValueFloat >= 0 and value.metricValue >= 0


# --------------------------------------------------------------------------------------------
# HPA arithmetic: the metric makes KEDA's HPA land on the desired replicas
# --------------------------------------------------------------------------------------------

TARGET_MILLI = 1000  # targetSizeFloat 1.0 as the HPA sees it


def keda_milli(value: float, formatting: str) -> int:
    """The milli-value KEDA hands the HPA: newer releases format '%.3f', older truncate."""
    if formatting == "format":
        return round(float(f"{value:.3f}") * 1000)
    return int(value * 1000)


def hpa_sync(current: int, desired: int, dead_band: core.DeadBand, formatting: str) -> int:
    """One HPA sync's metric recommendation with the server told current and desired."""
    value = core.replica_metric_value(desired, current, dead_band)
    usage = keda_milli(value, formatting)
    return replicas_for_average_value(current, usage, TARGET_MILLI).replicas


def reachable_in_one_sync(current: int, desired: int) -> bool:
    """Whether ANY value V with ceil(V) = desired (V at least 10 milli above desired - 1, the
    quantization margin) leaves the tolerance band: the ratio is monotone in V, so checking
    both ends of the interval suffices."""
    if desired == current:
        return True
    tol = Tolerances()
    low = (1000 * (desired - 1) + 10) / (TARGET_MILLI * current)
    high = 1000 * desired / (TARGET_MILLI * current)
    return not tol.is_within(low) or not tol.is_within(high)


@pytest.mark.parametrize("formatting", ["format", "truncate"])
def test_hpa_lands_on_desired_whenever_any_metric_could_make_it(formatting: str) -> None:
    landed = held = 0
    for current in range(1, 501):
        for desired in range(1, 501):
            got = hpa_sync(current, desired, "hold", formatting)
            if reachable_in_one_sync(current, desired):
                assert got == desired, (current, desired, got)
                landed += 1
            else:
                # Inside the band the HPA keeps current: never a third value.
                assert got == current, (current, desired, got)
                assert current >= 10  # below 10 replicas one replica is more than 10%
                held += 1
    # Dead band: c < d <= 1.1c (up) and 0.9c <= d - 0.99 < c (down): about 20% of c per
    # row for c >= 10, i.e. ~0.2 * sum(c) over this grid, well under half of all pairs.
    assert held > 0 and landed > 4 * held
    print(f"\nHPA lands exactly on {landed} pairs, holds on {held} (dead band), {formatting}")


def test_desired_zero_reports_zero_and_the_hpa_floor_of_one_holds() -> None:
    for current in (1, 2, 10, 500):
        usage = keda_milli(core.replica_metric_value(0, current), "format")
        assert usage == 0
        # ceil(0) = 0; KEDA's HPA minReplicas (>= 1) then clamps, and IsActive=false lets
        # KEDA itself scale to zero after cooldownPeriod.
        assert replicas_for_average_value(current, usage, TARGET_MILLI).replicas == 0


def _converge(
    current: int,
    desired: int,
    dead_band: core.DeadBand,
    behavior: HPABehavior,
    syncs: int,
) -> list[int]:
    """Run `syncs` HPA syncs (15 s apart) against the server's metric; the loop sees the
    HPA's replicas as current each time. Returns the replica count after each sync."""
    history = HPAHistory()
    path = []
    now_s = 0.0
    for _ in range(syncs):
        value = core.replica_metric_value(desired, current, dead_band)
        rec = replicas_for_average_value(
            current, keda_milli(value, "format"), TARGET_MILLI, behavior.tolerances
        ).replicas
        current, _, history = behavior_step(
            history, behavior, current, rec, min_replicas=1, max_replicas=1000, now_s=now_s
        )
        path.append(current)
        now_s += 15.0
    return path


def pass_through_behavior(tolerance: float = 0.1) -> HPABehavior:
    """The HPA behavior docs/keda.md recommends: the controller already stabilizes and
    rate-limits, so the HPA may move anywhere in one sync (no window, 1000%/1000 pods up)."""
    up = ScalingRules(
        stabilization_window_s=0.0,
        select_policy=SELECT_MAX,
        policies=(
            ScalingPolicy(POLICY_PERCENT, 1000, 15.0),
            ScalingPolicy(POLICY_PODS, 1000, 15.0),
        ),
        tolerance=tolerance,
    )
    down = ScalingRules(0.0, SELECT_MAX, (ScalingPolicy(POLICY_PERCENT, 100, 15.0),), tolerance)
    return HPABehavior(up, down)


def test_overshoot_converges_within_two_syncs_with_pass_through_behavior() -> None:
    behavior = pass_through_behavior()
    in_band = 0
    for current in range(1, 151):
        for desired in range(1, 151):
            path = _converge(current, desired, "overshoot", behavior, syncs=3)
            assert path[1] == desired and path[2] == desired, (current, desired, path)
            if not reachable_in_one_sync(current, desired):
                in_band += 1
                # Through a count above both, never below desired.
                assert path[0] > max(current, desired), (current, desired, path)
                assert path[0] <= math.ceil(1.25 * max(current, desired)) + 1
            else:
                assert path[0] == desired, (current, desired, path)
    assert in_band > 0


def test_overshoot_waits_for_the_default_scale_down_window() -> None:
    # KEDA's HPA without behavior: legacy path, 300 s downscale stabilization. 100 -> 105
    # overshoots to 116 and comes down only after the window (20 syncs of 15 s).
    behavior = HPABehavior(default_scale_up_rules(), default_scale_down_rules(300.0))
    path = _converge(100, 105, "overshoot", behavior, syncs=23)
    assert path[0] == 116
    assert path[:20] == [116] * 20
    assert path[-1] == 105


def test_hold_keeps_current_in_the_dead_band_across_syncs() -> None:
    behavior = pass_through_behavior()
    # 100 -> 105 is a 5% change: the HPA holds at 100 sync after sync.
    assert _converge(100, 105, "hold", behavior, syncs=3) == [100, 100, 100]
    # 100 -> 95: also held (over-provisioned by 5, never under).
    assert _converge(100, 95, "hold", behavior, syncs=3) == [100, 100, 100]
    # 100 -> 111 and 100 -> 90 leave the band: one sync.
    assert _converge(100, 111, "hold", behavior, syncs=1) == [111]
    assert _converge(100, 90, "hold", behavior, syncs=1) == [90]


def test_zero_hpa_tolerance_lands_every_pair_in_one_sync_with_hold() -> None:
    # behavior.scaleUp.tolerance: 0 and scaleDown.tolerance: 0 (HPAConfigurableTolerance).
    behavior = pass_through_behavior(tolerance=0.0)
    for current in range(1, 151):
        for desired in range(1, 151):
            assert _converge(current, desired, "hold", behavior, syncs=1) == [desired]


# --------------------------------------------------------------------------------------------
# metrics-api JSON route
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def serve_http(app: FastAPI) -> Iterator[httpx.Client]:
    """Run `app` under a real uvicorn on 127.0.0.1 (a free port) in a thread."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + CALL_TIMEOUT_S
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.started, "uvicorn did not start"
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=CALL_TIMEOUT_S) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(CALL_TIMEOUT_S)
        sock.close()


@pytest.fixture
def api() -> Iterator[tuple[httpx.Client, DecisionStore]]:
    store = DecisionStore()
    app = FastAPI()
    app.include_router(router)
    app.state.decision_store = store
    with serve_http(app) as client:
        yield client, store


def test_metrics_api_route_serves_the_same_numbers_as_grpc(
    api: tuple[httpx.Client, DecisionStore], scaler: Scaler
) -> None:
    client, store = api
    for s in (store, scaler.store):
        s.put(make_record(make_workload(), spot=3, on_demand=1, active=True, current={"spot": 5}))
    resp = client.get("/v1/keda/llm/chat", params={"pool": "spot"})
    assert resp.status_code == 200
    body = resp.json()
    assert body == {
        "workload": "llm/chat",
        "pool": "spot",
        "metricName": "gpu-autoscaler-spot",
        "desiredReplicas": 3,
        "currentReplicas": 5,
        "value": 2.01,  # scale-down 5 -> 3: 3 - 0.99
        "target": 1.0,
        "active": True,
        "held": False,
        "stale": False,
        "reason": "ScaleUpForecast",
    }
    req = pb.GetMetricsRequest(scaledObjectRef=ref(pool="spot"))
    grpc_value = scaler.stub.GetMetrics(req, timeout=CALL_TIMEOUT_S).metricValues[0]
    assert grpc_value.metricValueFloat == body["value"]
    # Default pool and the on-demand alias.
    assert client.get("/v1/keda/llm/chat").json()["pool"] == "spot"
    assert client.get("/v1/keda/llm/chat?pool=on-demand").json()["desiredReplicas"] == 1


@pytest.mark.parametrize(
    ("path", "status", "text"),
    [
        pytest.param("/v1/keda/llm/missing", 404, "llm/missing", id="unknown-workload"),
        pytest.param("/v1/keda/llm/chat?pool=gold", 422, "'gold'", id="bad-pool"),
        pytest.param("/v1/keda/llm/chat?deadBand=x", 422, "'deadBand'", id="bad-dead-band"),
        pytest.param("/v1/keda/LLM/chat", 422, "DNS-1123", id="bad-namespace"),
        pytest.param("/v1/keda/llm/od?pool=spot", 422, "spec.targets.spot", id="pool-absent"),
    ],
)
def test_metrics_api_errors_are_json_with_the_reason(
    api: tuple[httpx.Client, DecisionStore], path: str, status: int, text: str
) -> None:
    client, store = api
    store.put_many(
        [
            make_record(make_workload(), spot=1),
            make_record(make_workload("llm/od", SPEC_NO_SPOT), on_demand=1),
        ]
    )
    resp = client.get(path)
    assert resp.status_code == status
    assert text in resp.json()["detail"]


def test_metrics_api_without_a_store_is_503() -> None:
    app = FastAPI()
    app.include_router(router)
    with serve_http(app) as client:
        resp = client.get("/v1/keda/llm/chat")
    assert resp.status_code == 503
    assert "decision_store" in resp.json()["detail"]


# --------------------------------------------------------------------------------------------
# Generated stubs
# --------------------------------------------------------------------------------------------


def test_regenerating_the_stubs_gives_identical_files() -> None:
    import grpc_tools.grpc_version

    from autoscaler.keda import regen
    from autoscaler.keda.gen import externalscaler_pb2_grpc as gen_grpc

    if grpc_tools.grpc_version.VERSION != gen_grpc.GRPC_GENERATED_VERSION:
        pytest.skip(
            f"grpcio-tools {grpc_tools.grpc_version.VERSION} installed; the stubs were made"
            f" with {gen_grpc.GRPC_GENERATED_VERSION}"
        )
    assert regen.differences() == []


def test_proto_matches_kedas_wire_contract() -> None:
    d = pb.DESCRIPTOR
    assert d.package == "externalscaler"
    assert d.GetOptions().go_package == ".;externalscaler"
    service = d.services_by_name["ExternalScaler"]
    methods = {m.name: (m.input_type.name, m.output_type.name) for m in service.methods}
    assert methods == {
        "IsActive": ("ScaledObjectRef", "IsActiveResponse"),
        "StreamIsActive": ("ScaledObjectRef", "IsActiveResponse"),
        "GetMetricSpec": ("ScaledObjectRef", "GetMetricSpecResponse"),
        "GetMetrics": ("GetMetricsRequest", "GetMetricsResponse"),
        "StreamMetricSpec": ("ScaledObjectRef", "GetMetricSpecResponse"),
    }
    fields = {
        name: {f.name: (f.number, f.type) for f in msg.fields}
        for name, msg in d.message_types_by_name.items()
    }
    T = FD
    assert fields == {
        "ScaledObjectRef": {
            "name": (1, T.TYPE_STRING),
            "namespace": (2, T.TYPE_STRING),
            "scalerMetadata": (3, T.TYPE_MESSAGE),
        },
        "IsActiveResponse": {"result": (1, T.TYPE_BOOL)},
        "GetMetricSpecResponse": {"metricSpecs": (1, T.TYPE_MESSAGE)},
        "MetricSpec": {
            "metricName": (1, T.TYPE_STRING),
            "targetSize": (2, T.TYPE_INT64),
            "targetSizeFloat": (3, T.TYPE_DOUBLE),
        },
        "GetMetricsRequest": {
            "scaledObjectRef": (1, T.TYPE_MESSAGE),
            "metricName": (2, T.TYPE_STRING),
        },
        "GetMetricsResponse": {"metricValues": (1, T.TYPE_MESSAGE)},
        "MetricValue": {
            "metricName": (1, T.TYPE_STRING),
            "metricValue": (2, T.TYPE_INT64),
            "metricValueFloat": (3, T.TYPE_DOUBLE),
        },
    }
    server_streaming = {m.name for m in service.methods if m.server_streaming}
    assert server_streaming == {"StreamIsActive", "StreamMetricSpec"}
