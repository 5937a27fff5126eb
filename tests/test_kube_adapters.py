"""The Kubernetes adapters against a test API server that speaks the real API's JSON.

Every call goes through the real `kubernetes` client to `tests/kube_apiserver.py` on
127.0.0.1; faults are queued on the server (Karpenter's fake cloud provider style) and its
request log says exactly which calls were made.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from kubernetes import client

from autoscaler.adapters.kube import (
    KUBE_CALLS,
    CustomResourceSource,
    DisruptionSignals,
    KubeActuator,
    KubeClusterView,
    KubeEventRecorder,
    KubeStateStore,
    LabelSelector,
    LeaderElector,
    api_client_from,
)
from autoscaler.config import Workload, parse_workload
from autoscaler.protocols import ConflictError, PermanentError, TemporaryError
from policies.types import Decision
from tests.kube_apiserver import KubeAPIServer

NS = "serving"


# -- helpers ------------------------------------------------------------------------------


def wait_until(pred: Callable[[], bool], timeout_s: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def rfc3339(t_s: float) -> str:
    return datetime.fromtimestamp(t_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def deployment(name: str, replicas: int, labels: dict[str, str], ready: int = 0) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}},
        },
        "status": {"replicas": replicas, "readyReplicas": ready},
    }


def node(
    name: str,
    labels: dict[str, str] | None = None,
    taints: list[dict[str, str]] | None = None,
    conditions: list[dict[str, str]] | None = None,
    unschedulable: bool = False,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"taints": taints or []}
    if unschedulable:
        spec["unschedulable"] = True
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": spec,
        "status": {"conditions": [{"type": "Ready", "status": "True"}, *(conditions or [])]},
    }


def pod(
    name: str,
    labels: dict[str, str],
    node_name: str = "",
    phase: str = "Running",
    age_s: float = 10.0,
    conditions: list[dict[str, str]] | None = None,
    terminating: bool = False,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": NS,
        "labels": labels,
        "creationTimestamp": rfc3339(time.time() - age_s),
    }
    if terminating:
        meta["deletionTimestamp"] = rfc3339(time.time())
    spec = {"nodeName": node_name} if node_name else {}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": spec,
        "status": {"phase": phase, "conditions": conditions or []},
    }


SPOT = {"app": "chat", "pool": "spot"}
OD = {"app": "chat", "pool": "on-demand"}
WARM = {"app": "chat", "pool": "warm"}


def spec(name: str = "chat", pending_limit_s: float = 120.0) -> dict[str, Any]:
    return {
        "targets": {"on_demand": f"{name}-od", "spot": f"{name}-spot", "warm": f"{name}-warm"},
        "policy": {
            "scenario": "chat",
            "capacity": {"rps_per_replica": 5.0},
            "pools": {"spot_pending_limit_s": pending_limit_s},
        },
    }


def workload(name: str = "chat", pending_limit_s: float = 120.0) -> Workload:
    return parse_workload(NS, name, spec(name, pending_limit_s))


def policy_object(name: str, body: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "gpuautoscaler.io/v1alpha1",
        "kind": "AutoscalingPolicy",
        "metadata": {"name": name, "namespace": NS},
        "spec": body,
    }


def decision(
    spot: int = 3, on_demand: int = 1, warm: int = 1, reason: str = "ScaleUpForecast"
) -> Decision:
    return Decision(
        spot=spot,
        on_demand=on_demand,
        warm=warm,
        desired_total=spot + on_demand,
        demand_now=12.5,
        forecast=18.0,
        forecast_upper=float("nan"),
        reason=reason,
        message="forecast 18 rps at the lead time",
        held=False,
    )


class FakeClock:
    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def server() -> Iterator[KubeAPIServer]:
    with KubeAPIServer() as s:
        yield s


@pytest.fixture
def api(server: KubeAPIServer) -> Iterator[Any]:
    c: Any = server.api_client()
    yield c
    c.close()


def no_sleep(_s: float) -> None:
    return None


def stored(server: KubeAPIServer, plural: str, name: str) -> dict[str, Any]:
    """The object as the server holds it (fails the test when it is missing)."""
    obj = server.get(plural, NS, name)
    if obj is None:
        raise AssertionError(f"{plural}/{name} not found on the server")
    return obj


# -- the test API server keeps the real semantics -----------------------------------------


def test_server_answers_status_objects_like_the_real_one(server: KubeAPIServer, api: Any) -> None:
    server.put(deployment("chat-od", 1, OD))
    apps: Any = client.AppsV1Api(api)
    scale = apps.read_namespaced_deployment_scale("chat-od", NS)
    stale = {"metadata": {"resourceVersion": "1"}, "spec": {"replicas": 2}}
    apps.patch_namespaced_deployment_scale(
        "chat-od", NS, {"spec": {"replicas": 2}}, _content_type="application/merge-patch+json"
    )
    with pytest.raises(client.ApiException) as conflict:
        apps.patch_namespaced_deployment_scale(
            "chat-od", NS, stale, _content_type="application/merge-patch+json"
        )
    status = json.loads(conflict.value.body or "{}")
    assert (status["kind"], status["code"], status["reason"]) == ("Status", 409, "Conflict")
    assert status["details"] == {"name": "chat-od", "group": "apps", "kind": "deployments"}
    with pytest.raises(client.ApiException) as missing:
        apps.read_namespaced_deployment_scale("nope", NS)
    status = json.loads(missing.value.body or "{}")
    assert (status["code"], status["reason"]) == (404, "NotFound")
    assert status["message"] == 'deployments.apps "nope" not found'
    # resourceVersion moved exactly once (the no-op and failed writes did not bump it)
    assert int(apps.read_namespaced_deployment_scale("chat-od", NS).metadata.resource_version) == (
        int(scale.metadata.resource_version) + 1
    )


def test_server_watch_ends_at_timeout_and_expires_compacted_versions(
    server: KubeAPIServer, api: Any
) -> None:
    from kubernetes.watch import watch

    iter_resp_lines: Any = watch.iter_resp_lines
    core: Any = client.CoreV1Api(api)
    server.put(node("n1"))
    rv = core.list_node().metadata.resource_version
    server.put(node("n2"))
    resp = core.list_node(
        watch=True, resource_version=rv, timeout_seconds=1, _preload_content=False
    )
    lines = list(iter_resp_lines(resp))
    assert [yaml.safe_load(x)["type"] for x in lines] == ["ADDED"]
    server.compact()
    resp = core.list_node(
        watch=True, resource_version=rv, timeout_seconds=1, _preload_content=False
    )
    (line,) = list(iter_resp_lines(resp))
    event = yaml.safe_load(line)
    assert event["type"] == "ERROR" and event["object"]["code"] == 410


# -- KubeActuator -------------------------------------------------------------------------


def test_scale_is_patched_only_on_change(server: KubeAPIServer, api: Any) -> None:
    server.put(deployment("chat-od", 2, OD))
    act = KubeActuator(api, sleep=no_sleep)
    assert act.set_replicas(NS, "chat-od", 2, "Hold") is False
    assert server.count("patch", "deployments", "scale") == 0
    assert act.set_replicas(NS, "chat-od", 5, "ScaleUp") is True
    assert stored(server, "deployments", "chat-od")["spec"]["replicas"] == 5
    (patch,) = [r for r in server.requests if r.verb == "patch"]
    # merge patch with the read resourceVersion as a precondition, under our field manager
    assert patch.content_type.startswith("application/merge-patch+json")
    assert patch.body["spec"] == {"replicas": 5}
    assert patch.body["metadata"]["resourceVersion"]
    assert patch.query["fieldManager"] == "gpu-autoscaler"


def test_conflict_rereads_and_retries(server: KubeAPIServer, api: Any) -> None:
    server.put(deployment("chat-od", 2, OD))
    server.inject("patch", "deployments", subresource="scale", code=409)
    assert KubeActuator(api, sleep=no_sleep).set_replicas(NS, "chat-od", 4, "ScaleUp") is True
    assert [(r.verb, r.status) for r in server.requests] == [
        ("get", 200),
        ("patch", 409),
        ("get", 200),
        ("patch", 200),
    ]
    assert stored(server, "deployments", "chat-od")["spec"]["replicas"] == 4


def test_conflicts_past_the_bound_raise_conflict_error(server: KubeAPIServer, api: Any) -> None:
    server.put(deployment("chat-od", 2, OD))
    server.inject("patch", "deployments", subresource="scale", code=409, times=10)
    act = KubeActuator(api, max_conflicts=2, sleep=no_sleep)
    with pytest.raises(ConflictError, match="3 conflicts"):
        act.set_replicas(NS, "chat-od", 4, "ScaleUp")
    # 1 + max_conflicts patches, each after a fresh read
    assert server.count("patch", "deployments", "scale") == 3
    assert server.count("get", "deployments", "scale") == 3


def test_missing_deployment_is_permanent_and_named(server: KubeAPIServer, api: Any) -> None:
    with pytest.raises(PermanentError, match=f"deployment {NS}/ghost not found"):
        KubeActuator(api, sleep=no_sleep).set_replicas(NS, "ghost", 3, "ScaleUp")
    assert server.count("patch", "deployments", "scale") == 0


def test_invalid_replicas_is_permanent_with_the_api_message(
    server: KubeAPIServer, api: Any
) -> None:
    server.put(deployment("chat-od", 2, OD))
    with pytest.raises(PermanentError) as err:
        KubeActuator(api, sleep=no_sleep).set_replicas(NS, "chat-od", -1, "Bug")
    assert "spec.replicas: Invalid value: -1: must be greater than or equal to 0" in str(err.value)
    assert isinstance(err.value.__cause__, client.ApiException)
    assert stored(server, "deployments", "chat-od")["spec"]["replicas"] == 2


def test_500_after_the_patch_landed_does_not_patch_twice(server: KubeAPIServer, api: Any) -> None:
    server.put(deployment("chat-od", 2, OD))
    server.inject("patch", "deployments", subresource="scale", code=500, after_apply=True)
    assert KubeActuator(api, sleep=no_sleep).set_replicas(NS, "chat-od", 6, "ScaleUp") is True
    # read, patch (applied, answered 500), re-read shows 6: no second patch
    assert [(r.verb, r.status) for r in server.requests] == [
        ("get", 200),
        ("patch", 500),
        ("get", 200),
    ]
    assert stored(server, "deployments", "chat-od")["spec"]["replicas"] == 6


def test_500_then_success_makes_exactly_one_effective_patch(
    server: KubeAPIServer, api: Any
) -> None:
    server.put(deployment("chat-od", 2, OD))
    rv0 = stored(server, "deployments", "chat-od")["metadata"]["resourceVersion"]
    server.inject("patch", "deployments", subresource="scale", code=500)
    assert KubeActuator(api, sleep=no_sleep).set_replicas(NS, "chat-od", 6, "ScaleUp") is True
    patches = [r for r in server.requests if r.verb == "patch"]
    assert [p.status for p in patches] == [500, 200]
    after = stored(server, "deployments", "chat-od")
    assert after["spec"]["replicas"] == 6
    # one write happened: the resourceVersion moved by exactly one
    assert int(after["metadata"]["resourceVersion"]) == int(rv0) + 1


def test_persistent_5xx_raises_temporary_after_bounded_attempts(
    server: KubeAPIServer, api: Any
) -> None:
    server.put(deployment("chat-od", 2, OD))
    server.inject("patch", "deployments", subresource="scale", code=503, times=10)
    waits: list[float] = []
    act = KubeActuator(api, max_attempts=3, backoff_s=0.5, sleep=waits.append)
    with pytest.raises(TemporaryError, match="after 3 attempts"):
        act.set_replicas(NS, "chat-od", 6, "ScaleUp")
    assert server.count("patch", "deployments", "scale") == 3
    assert waits == [0.5, 1.0]  # exponential backoff between the attempts


def test_timeout_raises_temporary_error(server: KubeAPIServer, api: Any) -> None:
    server.put(deployment("chat-od", 2, OD))
    server.inject("get", "deployments", subresource="scale", code=None, delay_s=2.0, times=5)
    act = KubeActuator(api, timeout_s=0.2, max_attempts=2, sleep=no_sleep)
    with pytest.raises(TemporaryError, match="timed out"):
        act.set_replicas(NS, "chat-od", 6, "ScaleUp")
    assert server.count("get", "deployments", "scale") == 2
    assert server.count("patch", "deployments", "scale") == 0


def test_a_late_landing_timed_out_patch_cannot_overwrite(server: KubeAPIServer, api: Any) -> None:
    server.put(deployment("chat-od", 2, OD))
    # The first patch is held 1 s by the server (the client gives up after 0.2 s) and lands
    # after the retry: its resourceVersion precondition is stale by then, so it is refused.
    server.inject("patch", "deployments", subresource="scale", code=None, delay_s=1.0)
    act = KubeActuator(api, timeout_s=0.2, max_attempts=3, sleep=no_sleep)
    assert act.set_replicas(NS, "chat-od", 6, "ScaleUp") is True
    wait_until(lambda: all(r.status for r in server.requests), what="the late patch to finish")
    statuses = sorted(r.status for r in server.requests if r.verb == "patch")
    assert statuses == [200, 409]
    assert stored(server, "deployments", "chat-od")["spec"]["replicas"] == 6


# -- KubeClusterView ----------------------------------------------------------------------


@pytest.fixture
def cluster(server: KubeAPIServer, api: Any) -> Iterator[KubeClusterView]:
    server.put(deployment("chat-spot", 3, SPOT, ready=2))
    server.put(deployment("chat-od", 1, OD, ready=1))
    server.put(deployment("chat-warm", 2, WARM, ready=2))
    server.put(node("healthy", {"karpenter.sh/capacity-type": "spot"}))
    view = KubeClusterView(api, watch_timeout_s=5, request_timeout_s=5, backoff_s=0.05)
    yield view
    view.stop()


def started(view: KubeClusterView) -> KubeClusterView:
    view.start()
    assert view.wait_synced(5.0)
    return view


def test_facts_raise_temporary_until_synced(cluster: KubeClusterView) -> None:
    with pytest.raises(TemporaryError, match="not synced"):
        cluster.facts([workload()], time.time())


def test_facts_report_replicas_per_pool(server: KubeAPIServer, cluster: KubeClusterView) -> None:
    facts = started(cluster).facts([workload(), workload("absent")], time.time())
    assert facts.current_spot.tolist() == [3, 0]
    assert facts.ready_spot.tolist() == [2, 0]
    assert facts.current_on_demand.tolist() == [1, 0]
    assert facts.current_warm.tolist() == [2, 0]
    assert facts.ready_warm.tolist() == [2, 0]
    assert cluster.current_replicas(workload()) == {"spot": 3, "on_demand": 1, "warm": 2}


def _taint(key: str) -> dict[str, Any]:
    return {"taints": [{"key": key, "effect": "NoSchedule"}]}


SIGNALS = [
    pytest.param(_taint("aws-node-termination-handler/spot-itn"), [], id="nth-spot-itn"),
    pytest.param(
        _taint("aws-node-termination-handler/rebalance-recommendation"), [], id="nth-rebalance"
    ),
    pytest.param(
        _taint("aws-node-termination-handler/scheduled-maintenance"), [], id="nth-maintenance"
    ),
    pytest.param(
        _taint("aws-node-termination-handler/asg-lifecycle-termination"), [], id="nth-asg"
    ),
    pytest.param(_taint("node.kubernetes.io/out-of-service"), [], id="out-of-service"),
    pytest.param(_taint("karpenter.sh/disrupted"), [], id="karpenter-disrupted"),
    pytest.param(_taint("cloud.google.com/impending-node-termination"), [], id="gke-impending"),
    pytest.param(_taint("remediator.kubernetes.azure.com/unschedulable"), [], id="aks-remediator"),
    pytest.param(_taint("ToBeDeletedByClusterAutoscaler"), [], id="cluster-autoscaler"),
    pytest.param(_taint("node.kubernetes.io/unreachable"), [], id="unreachable"),
    pytest.param(_taint("node.kubernetes.io/not-ready"), [], id="not-ready"),
    # AKS node problem detector: a scheduled VM event (Preempt, Redeploy, ...)
    pytest.param(
        {"conditions": [{"type": "VMEventScheduled", "status": "True"}]}, [], id="aks-vm-event"
    ),
    # drained or being drained by anyone
    pytest.param({"unschedulable": True}, [], id="cordoned"),
    # the pod itself is marked for disruption (eviction, graceful node shutdown)
    pytest.param({}, [{"type": "DisruptionTarget", "status": "True"}], id="pod-disruption-target"),
]


@pytest.mark.parametrize(("node_kw", "pod_conditions"), SIGNALS)
def test_spot_pods_on_a_disrupted_node_are_at_risk(
    server: KubeAPIServer,
    cluster: KubeClusterView,
    node_kw: dict[str, Any],
    pod_conditions: list[dict[str, str]],
) -> None:
    server.put(node("doomed", {"karpenter.sh/capacity-type": "spot"}, **node_kw))
    # two spot pods on the signalled node, one on a healthy node; an on-demand pod on the
    # signalled node belongs to another Deployment and does not count
    server.put(pod("spot-a", SPOT, "doomed", conditions=pod_conditions))
    server.put(pod("spot-b", SPOT, "doomed", conditions=pod_conditions))
    server.put(pod("spot-c", SPOT, "healthy"))
    server.put(pod("od-a", OD, "doomed", conditions=pod_conditions))
    facts = started(cluster).facts([workload()], time.time())
    assert facts.spot_at_risk.tolist() == [2]
    assert facts.spot_pending_too_long.tolist() == [0]


@pytest.mark.parametrize(
    "node_kw",
    [
        # AKS puts this taint on every spot node: it is no interruption notice
        pytest.param(
            {"taints": [{"key": "kubernetes.azure.com/scalesetpriority", "value": "spot"}]},
            id="aks-spot-taint",
        ),
        pytest.param(
            {"conditions": [{"type": "VMEventScheduled", "status": "False"}]}, id="no-vm-event"
        ),
        pytest.param({}, id="plain"),
    ],
)
def test_healthy_nodes_put_nothing_at_risk(
    server: KubeAPIServer, cluster: KubeClusterView, node_kw: dict[str, Any]
) -> None:
    server.put(node("fine", {"kubernetes.azure.com/scalesetpriority": "spot"}, **node_kw))
    server.put(pod("spot-a", SPOT, "fine"))
    assert started(cluster).facts([workload()], time.time()).spot_at_risk.tolist() == [0]


def test_finished_and_terminating_pods_are_not_counted(
    server: KubeAPIServer, cluster: KubeClusterView
) -> None:
    server.put(node("doomed", taints=[{"key": "aws-node-termination-handler/spot-itn"}]))
    server.put(pod("spot-a", SPOT, "doomed"))
    server.put(pod("spot-done", SPOT, "doomed", phase="Succeeded"))
    server.put(pod("spot-going", SPOT, "doomed", terminating=True))
    server.put(pod("spot-old-pending", SPOT, phase="Pending", age_s=900, terminating=True))
    facts = started(cluster).facts([workload()], time.time())
    assert facts.spot_at_risk.tolist() == [1]
    assert facts.spot_pending_too_long.tolist() == [0]


@pytest.mark.parametrize(
    ("labels", "spot"),
    [
        pytest.param({"karpenter.sh/capacity-type": "spot"}, True, id="karpenter"),
        pytest.param({"karpenter.sh/capacity-type": "on-demand"}, False, id="karpenter-od"),
        pytest.param({"cloud.google.com/gke-spot": "true"}, True, id="gke-spot"),
        pytest.param({"cloud.google.com/gke-preemptible": "true"}, True, id="gke-preemptible"),
        pytest.param({"kubernetes.azure.com/scalesetpriority": "spot"}, True, id="aks"),
        pytest.param({"eks.amazonaws.com/capacityType": "SPOT"}, True, id="eks"),
        pytest.param({"eks.amazonaws.com/capacityType": "ON_DEMAND"}, False, id="eks-od"),
    ],
)
def test_spot_nodes_are_recognised_by_provider_labels(
    server: KubeAPIServer, cluster: KubeClusterView, labels: dict[str, str], spot: bool
) -> None:
    server.put(node("n", labels))
    assert started(cluster).is_spot_node("n") is spot


def test_spot_nodes_only_ignores_signals_on_other_nodes(server: KubeAPIServer, api: Any) -> None:
    server.put(deployment("chat-spot", 2, SPOT))
    server.put(node("od-node", {"karpenter.sh/capacity-type": "on-demand"}, unschedulable=True))
    server.put(node("spot-node", {"karpenter.sh/capacity-type": "spot"}, unschedulable=True))
    server.put(pod("spot-a", SPOT, "od-node"))
    server.put(pod("spot-b", SPOT, "spot-node"))
    counts = []
    for only in (False, True):
        view = KubeClusterView(api, signals=DisruptionSignals(spot_nodes_only=only))
        try:
            counts.append(int(started(view).facts([workload()], time.time()).spot_at_risk[0]))
        finally:
            view.stop()
    assert counts == [2, 1]


def test_spot_pods_pending_past_the_limit(server: KubeAPIServer, cluster: KubeClusterView) -> None:
    server.put(pod("p-old", SPOT, phase="Pending", age_s=300))  # 300 s > 120 s limit
    server.put(pod("p-new", SPOT, phase="Pending", age_s=30))  # within the limit
    server.put(pod("r-old", SPOT, "healthy", phase="Running", age_s=3000))
    server.put(pod("od-old", OD, phase="Pending", age_s=300))  # not a spot pod
    limits = [workload(), workload("chat", 600.0), workload("chat", 10.0)]
    facts = started(cluster).facts(limits, time.time())
    # limits 120 s, 600 s and 10 s: 1 (p-old), 0, 2 (p-old and p-new)
    assert facts.spot_pending_too_long.tolist() == [1, 0, 2]
    assert facts.spot_at_risk.tolist() == [0, 0, 0]


def test_watch_updates_are_reflected_without_relist(
    server: KubeAPIServer, cluster: KubeClusterView
) -> None:
    server.put(pod("spot-a", SPOT, "healthy"))
    started(cluster)
    w = [workload()]
    assert cluster.facts(w, time.time()).spot_at_risk.tolist() == [0]
    server.put(
        node(
            "healthy",
            {"karpenter.sh/capacity-type": "spot"},
            taints=[{"key": "aws-node-termination-handler/spot-itn", "effect": "NoSchedule"}],
        )
    )
    wait_until(lambda: cluster.facts(w, time.time()).spot_at_risk.tolist() == [1], what="taint")
    server.put(deployment("chat-spot", 7, SPOT, ready=5))
    wait_until(lambda: cluster.facts(w, time.time()).current_spot.tolist() == [7], what="scale")
    server.remove("pods", NS, "spot-a")
    wait_until(lambda: cluster.facts(w, time.time()).spot_at_risk.tolist() == [0], what="delete")
    assert cluster.list_counts() == {"deployments": 1, "nodes": 1, "pods": 1}
    assert server.count("list", "pods") == 1


def test_informers_relist_after_410_gone(server: KubeAPIServer, cluster: KubeClusterView) -> None:
    started(cluster)
    w = [workload()]
    server.compact()  # watch history gone: resuming informers get 410 and must relist
    server.close_watches()
    wait_until(lambda: cluster.list_counts()["deployments"] >= 2, what="a second list")
    server.put(deployment("chat-spot", 9, SPOT))
    wait_until(lambda: cluster.facts(w, time.time()).current_spot.tolist() == [9], what="update")
    expired = [r for r in server.requests if r.verb == "watch" and r.resource == "deployments"]
    assert len(expired) >= 2  # the first watch, then the one answered 410, then a new one


def test_informers_back_off_and_recover_from_list_errors(
    server: KubeAPIServer, cluster: KubeClusterView
) -> None:
    server.inject("list", "pods", code=500, times=2)
    started(cluster)
    assert server.count("list", "pods") == 3
    assert [r.status for r in server.requests if r.verb == "list" and r.resource == "pods"] == [
        500,
        500,
        200,
    ]


def test_a_view_failing_too_long_is_stale(server: KubeAPIServer, api: Any) -> None:
    view = KubeClusterView(api, backoff_s=0.02, max_backoff_s=0.05, max_unhealthy_s=0.3)
    errors: list[str] = []

    def facts_fail() -> bool:
        try:
            view.facts([workload()], time.time())
        except TemporaryError as e:
            errors.append(str(e))
            return True
        return False

    try:
        started(view)
        assert not facts_fail()
        for verb in ("list", "watch"):
            server.inject(verb, "pods", code=503, times=100_000)
        server.close_watches()  # the pods watch reconnects into 503s
        wait_until(facts_fail, what="the view to turn stale")
        assert "stale: pods list/watch failing" in errors[-1]
        assert "503" in errors[-1] or "injected" in errors[-1]
        server.clear_faults()
        wait_until(lambda: not facts_fail(), what="the view to recover")
    finally:
        view.stop()


def test_facts_for_1000_workloads_are_in_memory(server: KubeAPIServer, api: Any) -> None:
    n = 1000
    server.put(node("doomed", taints=[{"key": "cloud.google.com/impending-node-termination"}]))
    server.put(node("ok"))
    workloads = []
    for i in range(n):
        labels = {"app": f"w{i}", "pool": "spot"}
        server.put(deployment(f"w{i}-spot", 2, labels, ready=2))
        # workload i has i % 3 pods on the doomed node and one on the healthy one
        for j in range(i % 3):
            server.put(pod(f"w{i}-d{j}", labels, "doomed"))
        server.put(pod(f"w{i}-ok", labels, "ok"))
        workloads.append(workload(f"w{i}"))
    view = KubeClusterView(api)
    try:
        started(view)
        before = len(server.requests)
        facts = view.facts(workloads, time.time())
        assert facts.spot_at_risk.tolist() == [i % 3 for i in range(n)]
        assert facts.current_spot.tolist() == [2] * n
        # no API call on the tick path: watches run on, nothing else
        assert [r.verb for r in server.requests[before:] if r.verb != "watch"] == []
    finally:
        view.stop()


def test_label_selector_expressions() -> None:
    sel = LabelSelector.from_object(
        {
            "matchLabels": {"app": "chat"},
            "matchExpressions": [
                {"key": "pool", "operator": "In", "values": ["spot", "preemptible"]},
                {"key": "canary", "operator": "DoesNotExist"},
            ],
        }
    )
    assert sel is not None
    assert sel.matches({"app": "chat", "pool": "spot"})
    assert not sel.matches({"app": "chat", "pool": "on-demand"})
    assert not sel.matches({"app": "chat", "pool": "spot", "canary": "1"})
    assert LabelSelector.from_object(None) is None
    unknown = LabelSelector.from_object({"matchExpressions": [{"key": "a", "operator": "Gt"}]})
    assert unknown is not None and not unknown.matches({"a": "1"})


# -- LeaderElector ------------------------------------------------------------------------


def electors(api: Any) -> tuple[LeaderElector, LeaderElector, FakeClock, FakeClock]:
    # each replica has its own monotonic clock, with different origins
    ca, cb = FakeClock(100.0), FakeClock(5000.0)
    a = LeaderElector(api, NS, "gpu-autoscaler", "a", clock=ca)
    b = LeaderElector(api, NS, "gpu-autoscaler", "b", clock=cb)
    return a, b, ca, cb


def lease_spec(server: KubeAPIServer) -> dict[str, Any]:
    return dict(stored(server, "leases", "gpu-autoscaler")["spec"])


def test_only_one_elector_leads(server: KubeAPIServer, api: Any) -> None:
    a, b, ca, cb = electors(api)
    assert a.try_acquire_or_renew() is True
    assert b.try_acquire_or_renew() is False
    for _ in range(10):  # a renews every 2 s; b never sees the record stand still for 15 s
        ca.t += 2
        cb.t += 2
        assert a.try_acquire_or_renew() is True
        assert b.try_acquire_or_renew() is False
    assert a.is_leader and not b.is_leader
    assert b.holder == "a"
    assert lease_spec(server)["holderIdentity"] == "a"
    assert lease_spec(server)["leaseTransitions"] == 0


def test_takeover_after_expiry_when_the_leader_stops_renewing(
    server: KubeAPIServer, api: Any
) -> None:
    a, b, ca, cb = electors(api)
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()  # b first sees a's record at its t=5000
    ca.t += 11  # a stops renewing: past its renew deadline (10 s) it no longer acts
    assert not a.is_leader
    cb.t += 14  # 14 s < 15 s lease: not expired yet
    assert not b.try_acquire_or_renew()
    cb.t += 2  # 16 s > 15 s since b observed the record
    assert b.try_acquire_or_renew()
    spec = lease_spec(server)
    assert spec["holderIdentity"] == "b" and spec["leaseTransitions"] == 1
    ca.t += 1
    assert a.try_acquire_or_renew() is False  # a sees b and steps down
    assert not a.is_leader and b.is_leader


def test_leadership_is_lost_when_renewals_fail_past_the_deadline(
    server: KubeAPIServer, api: Any
) -> None:
    a, _, ca, _ = electors(api)
    assert a.try_acquire_or_renew()
    server.inject("get", "leases", code=500, times=10)
    ca.t += 4
    assert a.try_acquire_or_renew() is True  # failed, but within the 10 s renew deadline
    ca.t += 7  # 11 s since the last renewal
    assert a.try_acquire_or_renew() is False
    assert not a.is_leader
    assert "500" in (a.last_error or "") or "injected" in (a.last_error or "")


def test_release_lets_a_standby_take_over_at_once(server: KubeAPIServer, api: Any) -> None:
    a, b, _, cb = electors(api)
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    a.release()
    assert not a.is_leader
    assert lease_spec(server)["holderIdentity"] == ""
    cb.t += 1  # no need to wait for the 15 s lease to expire
    assert b.try_acquire_or_renew()
    assert lease_spec(server)["leaseTransitions"] == 1


def test_losing_the_create_race_is_not_leading(server: KubeAPIServer, api: Any) -> None:
    a, _, _, _ = electors(api)
    server.inject("create", "leases", code=409)
    assert a.try_acquire_or_renew() is False and not a.is_leader


def test_elector_rejects_inconsistent_durations(api: Any) -> None:
    with pytest.raises(ValueError, match="lease_duration_s must be > renew_deadline_s"):
        LeaderElector(api, NS, "l", "a", lease_duration_s=10, renew_deadline_s=10)
    with pytest.raises(ValueError, match="renew_deadline_s must be > retry_period_s"):
        LeaderElector(api, NS, "l", "a", renew_deadline_s=2, retry_period_s=2)


# -- KubeStateStore -----------------------------------------------------------------------


def status_patches(server: KubeAPIServer) -> int:
    return server.count("patch", "autoscalingpolicies", "status")


def test_state_round_trips_through_the_status(server: KubeAPIServer, api: Any) -> None:
    server.put(policy_object("chat", spec()))
    w = workload()
    store = KubeStateStore(api, wall_clock=lambda: 1_700_000_000.0, background=False)
    store.observe(stored(server, "autoscalingpolicies", "chat"))
    state = {"level": np.array([1.5, 2.5]), "n_samples": np.int64(3), "trend": math.nan}
    conditions = [{"type": "Ready", "status": "True", "reason": "ScaleUpForecast", "message": "ok"}]
    store.save(w, state, decision(), conditions, now_s=0.0)
    status = stored(server, "autoscalingpolicies", "chat")["status"]
    assert status["policyState"] == {"level": [1.5, 2.5], "n_samples": 3, "trend": None}
    assert status["observedGeneration"] == 1
    assert status["desiredReplicas"] == {"spot": 3, "onDemand": 1, "warm": 1, "total": 4}
    assert status["lastDecision"]["reason"] == "ScaleUpForecast"
    assert status["lastDecision"]["forecastUpper"] is None  # NaN has no JSON form
    (cond,) = status["conditions"]
    assert cond["lastTransitionTime"] == "2023-11-14T22:13:20Z"
    assert cond["observedGeneration"] == 1
    # a fresh store (a restarted controller) reads it back
    loaded = KubeStateStore(api, background=False).load([w, workload("other")])
    assert loaded == {w.key: {"level": [1.5, 2.5], "n_samples": 3, "trend": None}}


def test_saves_are_rate_limited_unless_the_decision_changes(
    server: KubeAPIServer, api: Any
) -> None:
    server.put(policy_object("chat", spec()))
    w, ready = workload(), [{"type": "Ready", "status": "True", "reason": "Steady", "message": ""}]
    store = KubeStateStore(api, min_interval_s=15.0, background=False)
    store.save(w, {"level": 1.0}, decision(), ready, now_s=0.0)
    store.save(w, {"level": 1.1}, decision(), ready, now_s=5.0)  # same decision, 5 s < 15 s
    assert status_patches(server) == 1
    store.save(w, {"level": 1.2}, decision(spot=4), ready, now_s=6.0)  # decision changed
    assert status_patches(server) == 2
    store.save(w, {"level": 1.3}, decision(spot=4), ready, now_s=20.0)  # 14 s later: held
    store.save(w, {"level": 1.4}, decision(spot=4), ready, now_s=21.0)  # 15 s later: written
    assert status_patches(server) == 3
    status = stored(server, "autoscalingpolicies", "chat")["status"]
    assert status["policyState"] == {"level": 1.4}


def test_condition_transition_time_moves_only_on_status_change(
    server: KubeAPIServer, api: Any
) -> None:
    server.put(policy_object("chat", spec()))
    clock = FakeClock(1_700_000_000.0)
    store = KubeStateStore(api, min_interval_s=0.0, wall_clock=clock, background=False)
    w = workload()

    def save(status: str, reason: str) -> str:
        cond = {"type": "Ready", "status": status, "reason": reason, "message": ""}
        store.save(w, {}, decision(), [cond], now_s=clock.t)
        got = stored(server, "autoscalingpolicies", "chat")["status"]["conditions"][0]
        return str(got["lastTransitionTime"])

    t0 = save("True", "Steady")
    clock.t += 60
    assert save("True", "ScaleUpForecast") == t0  # same status, new reason: no transition
    clock.t += 60
    assert save("False", "Error") == "2023-11-14T22:15:20Z"  # t0 + 120 s


def test_removed_state_keys_are_deleted(server: KubeAPIServer, api: Any) -> None:
    server.put(policy_object("chat", spec()))
    store = KubeStateStore(api, min_interval_s=0.0, background=False)
    w = workload()
    store.save(w, {"a": 1, "b": {"x": 1, "y": 2}}, None, [], now_s=0.0)
    store.save(w, {"a": 2, "b": {"x": 3}}, None, [], now_s=1.0)
    status = stored(server, "autoscalingpolicies", "chat")["status"]
    assert status["policyState"] == {"a": 2, "b": {"x": 3}}


def test_background_saves_leave_the_tick_and_coalesce(server: KubeAPIServer, api: Any) -> None:
    server.put(policy_object("chat", spec()))
    store = KubeStateStore(api, min_interval_s=0.0)
    w = workload()
    # the server holds the first write 0.5 s: save() must not wait for it
    server.inject("patch", "autoscalingpolicies", subresource="status", code=None, delay_s=0.5)
    try:
        for i in range(5):
            store.save(w, {"level": float(i)}, decision(), [], now_s=float(i))
        assert store.n_writes == 0  # all five calls returned while the first write was held
        assert store.flush(5.0)
        # the write in flight, then the newest queued status; the rest were superseded
        assert status_patches(server) in (1, 2)
        assert store.n_writes == status_patches(server)
        assert stored(server, "autoscalingpolicies", "chat")["status"]["policyState"] == {
            "level": 4.0
        }
    finally:
        store.close()


def test_save_never_raises_and_retries_next_time(server: KubeAPIServer, api: Any) -> None:
    server.put(policy_object("chat", spec()))
    store = KubeStateStore(api, background=False)
    w = workload()
    server.inject("patch", "autoscalingpolicies", subresource="status", code=500)
    store.save(w, {"a": 1}, decision(), [], now_s=0.0)
    assert store.n_failed == 1 and store.n_writes == 0
    store.save(w, {"a": 1}, decision(), [], now_s=1.0)  # not rate-limited: nothing was saved
    assert store.n_writes == 1
    store.save(workload("deleted"), {"a": 1}, decision(), [], now_s=2.0)  # 404: logged only
    assert store.n_failed == 2


# -- CustomResourceSource and events ------------------------------------------------------


def events_on(server: KubeAPIServer, name: str) -> list[dict[str, Any]]:
    return [e for e in server.objects("events", NS) if e["involvedObject"]["name"] == name]


def test_invalid_policy_gets_a_condition_and_a_warning_others_load(
    server: KubeAPIServer, api: Any
) -> None:
    bad = spec("bad")
    bad["policy"]["max_replicas"] = 0  # must be >= 1
    del bad["targets"]["on_demand"]  # required
    server.put(policy_object("good", spec("good")))
    server.put(policy_object("bad", bad))
    changes: list[list[str]] = []
    source = CustomResourceSource(
        api, on_change=lambda ws: changes.append([w.name for w in ws]), watch_timeout_s=5
    )
    try:
        workloads, errors = source.load()
        assert [w.name for w in workloads] == ["good"]
        (err,) = errors
        assert {p for p, _ in err.problems} >= {
            "spec.policy.max_replicas",
            "spec.targets.on_demand",
        }
        status = stored(server, "autoscalingpolicies", "bad")["status"]
        (cond,) = status["conditions"]
        assert (cond["type"], cond["status"], cond["reason"]) == ("Ready", "False", "InvalidSpec")
        assert "spec.policy.max_replicas" in cond["message"]
        assert "spec.targets.on_demand" in cond["message"]
        assert "status" not in stored(server, "autoscalingpolicies", "good")
        (event,) = events_on(server, "bad")
        assert event["type"] == "Warning" and event["reason"] == "InvalidSpec"
        assert event["involvedObject"]["kind"] == "AutoscalingPolicy"
        assert (
            event["involvedObject"]["uid"]
            == stored(server, "autoscalingpolicies", "bad")["metadata"]["uid"]
        )
        assert "spec.targets.on_demand" in event["message"]

        # a new valid object arrives through the watch
        server.put(policy_object("extra", spec("extra")))
        wait_until(lambda: changes[-1:] == [["extra", "good"]], what="the new workload")
        # fixing the bad one makes it a workload too
        server.put(policy_object("bad", spec("bad")))
        wait_until(lambda: len(source.workloads()) == 3, what="the fixed workload")
        assert source.invalid() == {}
        # relisting after 410 reports nothing twice
        server.compact()
        server.close_watches()
        wait_until(lambda: source.list_count >= 2, what="a relist")
        assert len(events_on(server, "bad")) == 1
    finally:
        source.stop()


def test_event_recorder_creates_events_and_never_raises(server: KubeAPIServer, api: Any) -> None:
    rec = KubeEventRecorder(api, instance="pod-1", uid_of=lambda ns, name: "uid-1")
    rec.record(workload(), "ScaleUpForecast", "spot chat-spot: 2 -> 4", warning=False)
    rec.record(workload(), "SpotInterrupted", "x" * 5000, warning=True)
    normal, warning = sorted(events_on(server, "chat"), key=lambda e: e["type"])
    assert normal["reason"] == "ScaleUpForecast" and normal["type"] == "Normal"
    assert normal["involvedObject"] == {
        "apiVersion": "gpuautoscaler.io/v1alpha1",
        "kind": "AutoscalingPolicy",
        "name": "chat",
        "namespace": NS,
        "uid": "uid-1",
    }
    assert normal["reportingComponent"] == "gpu-autoscaler"
    assert normal["reportingInstance"] == "pod-1"
    assert warning["type"] == "Warning" and len(warning["message"]) == 1024
    server.inject("create", "events", code=500)
    rec.record(workload(), "ScaleUpForecast", "lost")
    assert rec.n_failed == 1


# -- client configuration -----------------------------------------------------------------


def test_api_client_from_a_kubeconfig_context(server: KubeAPIServer, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "test", "cluster": {"server": server.url}}],
                "users": [{"name": "dev", "user": {"token": "t0ken"}}],
                "contexts": [{"name": "ctx", "context": {"cluster": "test", "user": "dev"}}],
                "current-context": "",
            }
        )
    )
    api: Any = api_client_from(str(kubeconfig), "ctx")
    try:
        server.put(node("n1"))
        core: Any = client.CoreV1Api(api)
        assert [n.metadata.name for n in core.list_node().items] == ["n1"]
    finally:
        api.close()
    with pytest.raises(PermanentError, match="missing-config"):
        api_client_from(str(tmp_path / "missing-config"), None)


# -- KUBE_CALLS is the truth ----------------------------------------------------------------


def test_a_full_exercise_uses_exactly_the_declared_calls(server: KubeAPIServer, api: Any) -> None:
    server.put(deployment("chat-spot", 1, SPOT))
    server.put(deployment("chat-od", 1, OD))
    server.put(node("n1"))
    server.put(policy_object("chat", spec()))
    bad = spec("bad")
    bad["policy"]["max_replicas"] = 0
    server.put(policy_object("bad", bad))
    view = KubeClusterView(api, watch_timeout_s=5)
    store = KubeStateStore(api, cluster=view)
    events = KubeEventRecorder(api)
    source = CustomResourceSource(api, events=events, state_store=store, watch_timeout_s=5)
    try:
        started(view)
        workloads, _ = source.load()
        store.load(workloads)
        view.facts(workloads, time.time())
        KubeActuator(api).set_replicas(NS, "chat-od", 2, "ScaleUp")
        elector = LeaderElector(api, NS, "gpu-autoscaler", "a")
        elector.try_acquire_or_renew()  # create
        elector.try_acquire_or_renew()  # get + update
        events.record(workloads[0], "ScaleUp", "on_demand chat-od: 1 -> 2")
        store.save(workloads[0], {"level": 1.0}, decision(), [], now_s=0.0)
        assert store.flush(5.0)
        kinds = ("deployments", "nodes", "pods", "autoscalingpolicies")
        wait_until(lambda: all(server.count("watch", k) for k in kinds), what="every watch")
    finally:
        view.stop()
        source.stop()
        store.close()
    assert server.calls() == set(KUBE_CALLS)
    assert len(set(KUBE_CALLS)) == len(KUBE_CALLS)


def test_custom_signals_by_label_and_condition() -> None:
    signals = DisruptionSignals(
        taint_keys=(),
        node_labels={"example.com/draining": (), "example.com/state": ("retiring",)},
        node_conditions={"example.com/Preempting": "True"},
        cordoned=False,
    )
    assert signals.node_disruption(node("a", {"example.com/draining": "x"})) == (
        "label example.com/draining=x"
    )
    assert signals.node_disruption(node("b", {"example.com/state": "retiring"})) is not None
    assert signals.node_disruption(node("c", {"example.com/state": "serving"})) is None
    preempting = node("d", conditions=[{"type": "example.com/Preempting", "status": "True"}])
    assert signals.node_disruption(preempting) == "condition example.com/Preempting=True"
    # taints and cordons switched off
    assert signals.node_disruption(node("e", unschedulable=True, **_taint("x"))) is None
