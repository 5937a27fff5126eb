"""The Kubernetes side of the in-cluster controller, over the `kubernetes` Python client.

- `KubeActuator` (Actuator): sets spec.replicas through the Deployment's scale subresource,
  only on change, with the read resourceVersion as a precondition.
- `KubeClusterView` (ClusterView): list+watch informers of Deployments, Nodes and Pods (one
  thread per kind); `facts` is pure in-memory work over their caches.
- `LeaderElector`: a coordination.k8s.io/v1 Lease, driven by the caller's scheduler.
- `KubeStateStore` (StateStore): policy state and the last decision in the AutoscalingPolicy's
  `status` subresource, rate-limited per workload.
- `CustomResourceSource`: AutoscalingPolicy objects (list+watch) to workloads; an invalid one
  gets a `Ready=False/InvalidSpec` condition and a Warning Event, the others go on.
- `KubeEventRecorder` (EventRecorder): core/v1 Events on the AutoscalingPolicy object.
- `api_client_from`: in-cluster config inside a pod, a kubeconfig otherwise.

Every adapter raises our exceptions (`TemporaryError`, `ConflictError`, `PermanentError`),
never the client's `ApiException` (kopf's `_cogs/clients/errors.py` gives the reason: callers
should not depend on a client library's error classes). `KUBE_CALLS` declares every
(apiGroup, resource, subresource, verb) these adapters use; the ClusterRole in the manifests
must grant exactly those, and a test checks the request log of a full exercise against it.

Responses are read with `_preload_content=False` and parsed as plain JSON: the client's
pydantic models added 0.6-0.8 ms per (small) Pod to a 2,000-Pod list here, too slow for
cluster-wide lists, and they reject objects that miss fields their schema requires. Small
objects take the same path, so there is one way of reading the API.

## Node-disruption signals (`DisruptionSignals`, defaults)

A spot replica is *at risk* when its pod has the condition `DisruptionTarget=True` (set by
the eviction and taint managers and by graceful node shutdown) or runs on a node with any of:

| source | signal |
|---|---|
| Karpenter | taint `karpenter.sh/disrupted` (disruption and termination controllers) |
| AWS NTH | taint `aws-node-termination-handler/spot-itn` |
| AWS NTH | taint `aws-node-termination-handler/rebalance-recommendation` |
| AWS NTH | taint `aws-node-termination-handler/scheduled-maintenance` |
| AWS NTH | taint `aws-node-termination-handler/asg-lifecycle-termination` |
| core / NTH (newer) | taint `node.kubernetes.io/out-of-service` |
| GKE | taint `cloud.google.com/impending-node-termination` |
| AKS | taint `remediator.kubernetes.azure.com/unschedulable` |
| AKS (node problem detector) | node condition `VMEventScheduled=True` |
| Cluster Autoscaler | taint `ToBeDeletedByClusterAutoscaler` |
| node lifecycle controller | taint `node.kubernetes.io/unreachable` |
| node lifecycle controller | taint `node.kubernetes.io/not-ready` |
| anyone draining | `spec.unschedulable: true` (cordoned) |

Spot nodes are recognised by the labels `karpenter.sh/capacity-type=spot`,
`cloud.google.com/gke-spot=true`, `cloud.google.com/gke-preemptible=true`,
`kubernetes.azure.com/scalesetpriority=spot` and `eks.amazonaws.com/capacityType=SPOT`.
By default a disrupted node counts whatever its capacity type (the spot Deployment's pods
may land on on-demand nodes under soft affinity, and a drained node loses them either way);
`spot_nodes_only=True` narrows the signals to spot nodes. Karpenter's NodeClaim condition
`DisruptionReason` is not read (it would need read access to `karpenter.sh` nodeclaims);
Karpenter taints the node `karpenter.sh/disrupted` when it acts on it.

## Time

`now_s` passed to `KubeClusterView.facts` is Unix time in seconds (the service ticks on
`time.time`): a pod's pending age is `now_s` minus its `metadata.creationTimestamp`. The
leader elector decides expiry on its own monotonic clock (client-go's `observedTime`), so
replicas need no synchronised clocks; the Lease's timestamps are for people.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, cast

import numpy as np
import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from autoscaler.config import GROUP, KIND, PLURAL, VERSION, Workload, WorkloadKey
from autoscaler.protocols import (
    AdapterError,
    ConflictError,
    PermanentError,
    TemporaryError,
)
from policies.spec import SpecError
from policies.types import ClusterFacts, Decision

log = logging.getLogger("gpu_autoscaler.kube")

JSON = dict[str, Any]

# Every (apiGroup, resource, subresource, verb) the adapters below call; "" is the core group.
# The ClusterRole in manifests/ grants exactly these (a test checks both directions).
KUBE_CALLS: tuple[tuple[str, str, str, str], ...] = (
    ("apps", "deployments", "", "list"),  # KubeClusterView informer
    ("apps", "deployments", "", "watch"),
    ("apps", "deployments", "scale", "get"),  # KubeActuator
    ("apps", "deployments", "scale", "patch"),
    ("", "nodes", "", "list"),  # KubeClusterView informer
    ("", "nodes", "", "watch"),
    ("", "pods", "", "list"),  # KubeClusterView informer
    ("", "pods", "", "watch"),
    ("", "events", "", "create"),  # KubeEventRecorder
    ("coordination.k8s.io", "leases", "", "get"),  # LeaderElector
    ("coordination.k8s.io", "leases", "", "create"),
    ("coordination.k8s.io", "leases", "", "update"),
    (GROUP, PLURAL, "", "list"),  # CustomResourceSource, KubeStateStore.load
    (GROUP, PLURAL, "", "watch"),  # CustomResourceSource
    (GROUP, PLURAL, "status", "patch"),  # KubeStateStore.save, InvalidSpec conditions
)

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
# The client's config loaders and watch helpers are untyped.
_kube_config: Any = config
_iter_resp_lines = cast(Callable[[Any], Iterable[str]], iter_resp_lines)
API_VERSION = f"{GROUP}/{VERSION}"


# -- errors -------------------------------------------------------------------------------


def _api_message(e: ApiException) -> str:
    """The Status object's message when the body carries one, else the HTTP status line."""
    try:
        body = json.loads(e.body or "")
    except (TypeError, ValueError):
        body = None
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return f"HTTP {e.status} {e.reason or ''}".strip()


def _retry_after_s(e: ApiException) -> float:
    try:
        return float((e.headers or {}).get("Retry-After", 1.0))
    except (TypeError, ValueError):
        return 1.0


def classify(e: BaseException, what: str) -> AdapterError:
    """Our exception for a client or transport error; `what` names the call and object.

    409 -> ConflictError; 429, 5xx, timeouts and connection errors -> TemporaryError; any
    other 4xx (400, 401, 403, 404, 405, 415, 422) -> PermanentError."""
    if isinstance(e, AdapterError):
        return e
    if isinstance(e, ApiException):
        status = int(e.status or 0)
        msg = f"{what}: {_api_message(e)}"
        if status == 409:
            return ConflictError(msg)
        if status == 429:
            return TemporaryError(msg, delay_s=_retry_after_s(e))
        if status == 0 or status == 408 or status >= 500:
            return TemporaryError(msg)
        return PermanentError(msg)
    if isinstance(e, urllib3.exceptions.TimeoutError | TimeoutError | socket.timeout):
        return TemporaryError(f"{what}: timed out ({e})")
    return TemporaryError(f"{what}: {type(e).__name__}: {e}")


def _status_code(e: BaseException) -> int:
    return int(e.status or 0) if isinstance(e, ApiException) else 0


def _read_json(resp: Any) -> JSON:
    """Body of a raw (`_preload_content=False`) response as JSON; the connection goes back."""
    try:
        data = json.loads(resp.data)
    finally:
        resp.release_conn()
    if not isinstance(data, dict):
        raise TemporaryError(f"unexpected response body of type {type(data).__name__}")
    return data


def _rfc3339(t_s: float) -> str:
    return datetime.fromtimestamp(t_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _micro_time(t_s: float) -> str:
    """metav1.MicroTime (RFC 3339 with microseconds), as Lease times are written."""
    return datetime.fromtimestamp(t_s, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time_s(text: Any) -> float | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


# -- client configuration -------------------------------------------------------------------


def _retries() -> urllib3.Retry:
    # Connection errors are retried (the request never reached the server); read errors are
    # not: a write may have landed, and the adapters decide (re-read) how to go on.
    return urllib3.Retry(total=None, connect=2, read=0, redirect=0, status=0, other=0)


def api_client_from(kubeconfig: str | None = None, context: str | None = None) -> client.ApiClient:
    """An ApiClient for the cluster: in-cluster service account config when running in a pod
    (KUBERNETES_SERVICE_HOST set) and neither argument is given; the kubeconfig otherwise
    (`kubeconfig` None means $KUBECONFIG or ~/.kube/config; `context` None its current one).

    Raises PermanentError naming the source when the configuration cannot be loaded."""
    cfg = client.Configuration()
    in_cluster = (
        kubeconfig is None and context is None and bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
    )
    try:
        if in_cluster:
            _kube_config.load_incluster_config(client_configuration=cfg)
        else:
            _kube_config.load_kube_config(
                config_file=kubeconfig,
                context=context,
                client_configuration=cfg,
                persist_config=False,
            )
    except (config.ConfigException, OSError, ValueError, TypeError) as e:
        where = (
            "the in-cluster service account"
            if in_cluster
            else f"kubeconfig {kubeconfig or '(default location)'}"
            + (f" context {context!r}" if context else "")
        )
        raise PermanentError(
            f"cannot load Kubernetes client configuration from {where}: {e}"
        ) from e
    cfg.retries = _retries()
    return client.ApiClient(configuration=cfg)


# -- actuator -------------------------------------------------------------------------------


class KubeActuator:
    """Sets a Deployment's spec.replicas through its scale subresource.

    Reads the scale, returns False when spec.replicas already has the value, else sends a
    JSON merge patch carrying the read `metadata.resourceVersion` as a precondition.
    - 409 (someone wrote in between): re-read and retry, at most `max_conflicts` times, then
      ConflictError;
    - 404: PermanentError naming the Deployment; other 4xx (422 invalid, 403 RBAC):
      PermanentError with the API server's message;
    - 5xx, 429 and timeouts: retried with exponential backoff (`backoff_s`, doubling, capped at
      `max_backoff_s`) up to `max_attempts` attempts in all, then TemporaryError. Each retry
      starts with a re-read, so a patch that landed although its reply was lost is never sent
      twice (and counts as made: True).
    `timeout_s` bounds each request; a call takes at most about
    `max_attempts * timeout_s + sum of backoffs` plus conflict re-reads.
    """

    def __init__(
        self,
        api_client: client.ApiClient,
        field_manager: str = "gpu-autoscaler",
        timeout_s: float = 10.0,
        *,
        max_attempts: int = 3,
        max_conflicts: int = 3,
        backoff_s: float = 0.5,
        max_backoff_s: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0; found {timeout_s}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1; found {max_attempts}")
        if max_conflicts < 0:
            raise ValueError(f"max_conflicts must be >= 0; found {max_conflicts}")
        self._apps = client.AppsV1Api(api_client)
        self.field_manager = field_manager
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.max_conflicts = max_conflicts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._sleep = sleep

    def _wait(self, attempt: int, err: TemporaryError) -> None:
        delay = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
        self._sleep(max(delay, err.delay_s))

    def set_replicas(self, namespace: str, deployment: str, replicas: int, reason: str) -> bool:
        """Set `namespace/deployment` to `replicas`; True when a patch was made."""
        if isinstance(replicas, bool) or not isinstance(replicas, int | np.integer):
            raise PermanentError(
                f"replicas for deployment {namespace}/{deployment} must be an integer; "
                f"found {replicas!r}"
            )
        replicas = int(replicas)
        what = f"deployment {namespace}/{deployment}"
        failures = 0  # temporary failures so far
        conflicts = 0
        unsure = False  # a patch was sent whose outcome we did not see
        while True:
            try:
                scale = _read_json(
                    self._apps.read_namespaced_deployment_scale(
                        deployment,
                        namespace,
                        _preload_content=False,
                        _request_timeout=self.timeout_s,
                    )
                )
            except Exception as e:
                err = classify(e, f"read scale of {what}")
                if isinstance(e, ApiException) and e.status == 404:
                    raise PermanentError(f"{what} not found: {_api_message(e)}") from e
                if not isinstance(err, TemporaryError):
                    raise err from e
                failures += 1
                if failures >= self.max_attempts:
                    raise TemporaryError(
                        f"{err} (gave up after {failures} attempts)", err.delay_s
                    ) from e
                self._wait(failures, err)
                continue
            current = (scale.get("spec") or {}).get("replicas", 0)
            if current == replicas:
                # Already there: either nothing to do, or our earlier patch landed.
                return unsure
            rv = (scale.get("metadata") or {}).get("resourceVersion", "")
            body = {"metadata": {"resourceVersion": rv}, "spec": {"replicas": replicas}}
            try:
                _read_json(
                    self._apps.patch_namespaced_deployment_scale(
                        deployment,
                        namespace,
                        body,
                        field_manager=self.field_manager,
                        _content_type=MERGE_PATCH,
                        _preload_content=False,
                        _request_timeout=self.timeout_s,
                    )
                )
            except Exception as e:
                err = classify(e, f"patch scale of {what} to {replicas}")
                if isinstance(e, ApiException) and e.status == 404:
                    raise PermanentError(f"{what} not found: {_api_message(e)}") from e
                if isinstance(err, ConflictError):
                    conflicts += 1
                    if conflicts > self.max_conflicts:
                        raise ConflictError(
                            f"{err} ({conflicts} conflicts in a row; giving up this tick)"
                        ) from e
                    continue  # re-read the new resourceVersion and try again
                if isinstance(err, TemporaryError):
                    unsure = True
                    failures += 1
                    if failures >= self.max_attempts:
                        raise TemporaryError(
                            f"{err} (gave up after {failures} attempts)", err.delay_s
                        ) from e
                    self._wait(failures, err)
                    continue  # re-read first: the patch may have landed
                raise err from e
            log.info("scaled %s from %s to %d (%s)", what, current, replicas, reason)
            return True


# -- label selectors and disruption signals --------------------------------------------------


@dataclass(frozen=True)
class LabelSelector:
    """A metav1.LabelSelector: matchLabels AND matchExpressions (In, NotIn, Exists,
    DoesNotExist). Empty matches every pod; an unknown operator matches none."""

    match_labels: tuple[tuple[str, str], ...] = ()
    expressions: tuple[tuple[str, str, frozenset[str]], ...] = ()

    @classmethod
    def from_object(cls, sel: Any) -> LabelSelector | None:
        """None when the object has no selector (it then selects no pods)."""
        if not isinstance(sel, Mapping):
            return None
        labels = tuple(sorted((str(k), str(v)) for k, v in (sel.get("matchLabels") or {}).items()))
        exprs = tuple(
            (
                str(e.get("key", "")),
                str(e.get("operator", "")),
                frozenset(str(v) for v in (e.get("values") or ())),
            )
            for e in (sel.get("matchExpressions") or ())
            if isinstance(e, Mapping)
        )
        return cls(labels, exprs)

    def matches(self, labels: Mapping[str, str]) -> bool:
        for k, v in self.match_labels:
            if labels.get(k) != v:
                return False
        for key, op, values in self.expressions:
            if op == "In":
                if labels.get(key) not in values:
                    return False
            elif op == "NotIn":
                if key in labels and labels[key] in values:
                    return False
            elif op == "Exists":
                if key not in labels:
                    return False
            elif op == "DoesNotExist":
                if key in labels:
                    return False
            else:
                return False
        return True


DEFAULT_DISRUPTION_TAINTS: tuple[str, ...] = (
    "karpenter.sh/disrupted",
    "aws-node-termination-handler/spot-itn",
    "aws-node-termination-handler/rebalance-recommendation",
    "aws-node-termination-handler/scheduled-maintenance",
    "aws-node-termination-handler/asg-lifecycle-termination",
    "node.kubernetes.io/out-of-service",
    "cloud.google.com/impending-node-termination",
    "remediator.kubernetes.azure.com/unschedulable",
    "ToBeDeletedByClusterAutoscaler",
    "node.kubernetes.io/unreachable",
    "node.kubernetes.io/not-ready",
)

DEFAULT_SPOT_NODE_LABELS: dict[str, tuple[str, ...]] = {
    "karpenter.sh/capacity-type": ("spot",),
    "cloud.google.com/gke-spot": ("true",),
    "cloud.google.com/gke-preemptible": ("true",),
    "kubernetes.azure.com/scalesetpriority": ("spot",),
    "eks.amazonaws.com/capacityType": ("SPOT",),
}


def _label_hit(labels: Mapping[str, str], wanted: Mapping[str, tuple[str, ...]]) -> str | None:
    for key, values in wanted.items():
        if key in labels and (not values or labels[key] in values):
            return f"{key}={labels[key]}"
    return None


@dataclass(frozen=True)
class DisruptionSignals:
    """Which node and pod states mean "this spot replica is about to go" (module docstring).

    taint_keys: taint keys (any value, any effect). node_labels: label key -> values that
    mark a node (an empty tuple: any value). node_conditions / pod_conditions: condition
    type -> status that marks it. cordoned: a node with spec.unschedulable counts.
    spot_node_labels: labels that identify spot nodes; spot_nodes_only: ignore disruption
    signals on nodes without one of them.
    """

    taint_keys: tuple[str, ...] = DEFAULT_DISRUPTION_TAINTS
    node_labels: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    node_conditions: Mapping[str, str] = field(default_factory=lambda: {"VMEventScheduled": "True"})
    pod_conditions: Mapping[str, str] = field(default_factory=lambda: {"DisruptionTarget": "True"})
    cordoned: bool = True
    spot_node_labels: Mapping[str, tuple[str, ...]] = field(
        default_factory=lambda: dict(DEFAULT_SPOT_NODE_LABELS)
    )
    spot_nodes_only: bool = False

    def node_is_spot(self, node: Mapping[str, Any]) -> bool:
        labels = (node.get("metadata") or {}).get("labels") or {}
        return _label_hit(labels, self.spot_node_labels) is not None

    def node_disruption(self, node: Mapping[str, Any]) -> str | None:
        """Why the node is under an interruption notice or disruption (None when it is not)."""
        spec = node.get("spec") or {}
        if self.spot_nodes_only and not self.node_is_spot(node):
            return None
        keys = set(self.taint_keys)
        for t in spec.get("taints") or ():
            if isinstance(t, Mapping) and t.get("key") in keys:
                return f"taint {t['key']}"
        hit = _label_hit((node.get("metadata") or {}).get("labels") or {}, self.node_labels)
        if hit is not None:
            return f"label {hit}"
        for c in (node.get("status") or {}).get("conditions") or ():
            if isinstance(c, Mapping) and self.node_conditions.get(c.get("type", "")) == c.get(
                "status"
            ):
                return f"condition {c['type']}={c['status']}"
        if self.cordoned and spec.get("unschedulable"):
            return "cordoned (spec.unschedulable)"
        return None

    def pod_disruption(self, pod: Mapping[str, Any]) -> str | None:
        for c in (pod.get("status") or {}).get("conditions") or ():
            if isinstance(c, Mapping) and self.pod_conditions.get(c.get("type", "")) == c.get(
                "status"
            ):
                return f"pod condition {c['type']}={c['status']}"
        return None


# -- informers ----------------------------------------------------------------------------


class _Gone(Exception):
    """The watch's resourceVersion is too old (410): relist."""


class _Sink:
    """Where an informer delivers objects: a full state after each list, events after."""

    def reset(self, items: list[JSON]) -> None:
        raise NotImplementedError

    def apply(self, event_type: str, obj: JSON) -> None:
        raise NotImplementedError


class _Informer:
    """List, then watch from the list's resourceVersion, in a thread of its own.

    A watch that ends (timeoutSeconds) resumes from the last resourceVersion seen, without a
    relist; a 410 Gone (history compacted) relists at once; other errors wait with
    exponential backoff (`backoff_s` doubling to `max_backoff_s`), then re-watch from the last
    version (relist when the list itself failed).
    """

    def __init__(
        self,
        kind: str,
        list_fn: Callable[..., Any],
        sink: _Sink,
        *,
        watch_timeout_s: float,
        request_timeout_s: float,
        backoff_s: float,
        max_backoff_s: float,
        list_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        self.kind = kind
        self._list_fn = list_fn
        self._sink = sink
        self.watch_timeout_s = watch_timeout_s
        self.request_timeout_s = request_timeout_s
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._list_kwargs = dict(list_kwargs or {})
        self.synced = threading.Event()
        self._stop = threading.Event()
        self._resp: Any = None
        self._thread: threading.Thread | None = None
        self.n_lists = 0
        self.n_watches = 0
        self.last_error: str | None = None
        # monotonic time of the first error since the last good list or watch (None: healthy)
        self.failing_since_s: float | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._run, name=f"kube-informer-{self.kind}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        resp = self._resp
        if resp is not None:
            _interrupt(resp)
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)

    def _run(self) -> None:
        rv: str | None = None
        failures = 0
        while not self._stop.is_set():
            try:
                if rv is None:
                    rv = self._list()
                    failures = 0
                started = time.monotonic()
                rv, n_events = self._watch(rv)
                if n_events or time.monotonic() - started >= min(1.0, self.watch_timeout_s / 2):
                    failures = 0
                    continue
                # An empty watch that ended at once: do not spin.
                failures += 1
            except _Gone as e:
                log.info("%s watch expired (%s); relisting", self.kind, e)
                rv = None
                continue
            except Exception as e:
                if self._stop.is_set():
                    break
                failures += 1
                self.last_error = str(classify(e, f"{self.kind} list/watch"))
                if self.failing_since_s is None:
                    self.failing_since_s = time.monotonic()
                log.warning("%s", self.last_error)
            delay = min(self.max_backoff_s, self.backoff_s * 2 ** max(failures - 1, 0))
            self._stop.wait(delay)

    def _list(self) -> str:
        data = _read_json(
            self._list_fn(
                _preload_content=False,
                _request_timeout=self.request_timeout_s,
                **self._list_kwargs,
            )
        )
        items = data.get("items") or []
        rv = str((data.get("metadata") or {}).get("resourceVersion") or "")
        self._sink.reset([i for i in items if isinstance(i, dict)])
        self.n_lists += 1
        self.failing_since_s = None
        self.synced.set()
        return rv

    def _watch(self, rv: str) -> tuple[str, int]:
        try:
            resp = self._list_fn(
                watch=True,
                resource_version=rv,
                timeout_seconds=max(1, int(self.watch_timeout_s)),
                allow_watch_bookmarks=True,
                _preload_content=False,
                _request_timeout=(
                    self.request_timeout_s,
                    self.watch_timeout_s + self.request_timeout_s,
                ),
                **self._list_kwargs,
            )
        except ApiException as e:
            if e.status == 410:
                raise _Gone(_api_message(e)) from e
            raise
        self.n_watches += 1
        self.failing_since_s = None
        self._resp = resp
        n = 0
        try:
            if self._stop.is_set():
                return rv, n
            for line in _iter_resp_lines(resp):
                if self._stop.is_set():
                    break
                if not line.strip():
                    continue
                event = json.loads(line)
                etype = event.get("type")
                obj = event.get("object") or {}
                if etype == "ERROR":
                    if obj.get("code") == 410:
                        raise _Gone(obj.get("message", "410 Gone"))
                    raise TemporaryError(
                        f"{self.kind} watch error {obj.get('code')}: {obj.get('message')}"
                    )
                new_rv = (obj.get("metadata") or {}).get("resourceVersion")
                if etype != "BOOKMARK":
                    self._sink.apply(str(etype), obj)
                    n += 1
                if new_rv:
                    rv = str(new_rv)
        finally:
            self._resp = None
            resp.close()
            resp.release_conn()
        return rv, n


def _interrupt(resp: Any) -> None:
    """Unblock a thread reading a streaming response (urllib3 >= 2.3 has shutdown())."""
    try:
        shutdown = getattr(resp, "shutdown", None)
        if callable(shutdown):
            shutdown()
            return
        sock = getattr(getattr(resp, "connection", None), "sock", None)
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
    except (OSError, RuntimeError, ValueError):
        pass  # already finished or released: nothing to unblock


# -- cluster view -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Deployment:
    replicas: int
    ready: int
    selector: LabelSelector | None


@dataclass(frozen=True, slots=True)
class _Node:
    disruption: str | None
    spot: bool


@dataclass(frozen=True, slots=True)
class _Pod:
    labels: Mapping[str, str]
    node: str
    pending: bool
    created_s: float
    disruption: str | None
    gone: bool  # Succeeded, Failed or terminating: no longer one of the replicas


class _CallbackSink(_Sink):
    def __init__(self, reset: Callable[[list[JSON]], None], apply: Callable[[str, JSON], None]):
        self._reset, self._apply = reset, apply

    def reset(self, items: list[JSON]) -> None:
        self._reset(items)

    def apply(self, event_type: str, obj: JSON) -> None:
        self._apply(event_type, obj)


def _key(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace") or ""), str(meta.get("name") or ""))


class KubeClusterView:
    """ClusterView over list+watch informers of Deployments, Nodes and Pods.

    `start()` launches one thread per kind; `facts` raises TemporaryError until all three have
    listed once, then answers from memory (about O(pods of the workloads' spot Deployments)).
    Per workload and pool: current = the Deployment's spec.replicas, ready =
    status.readyReplicas (0 when the Deployment is missing). `spot_at_risk` counts pods
    selected by the spot Deployment's selector, neither finished nor terminating, that have a
    pod disruption condition or run on a disrupted node (`DisruptionSignals`);
    `spot_pending_too_long` counts such pods in phase Pending created more than the pool's
    `spot_pending_limit_s` before `now_s` (Unix seconds).

    `pod_label_selector` narrows the Pod informer (e.g. to labelled GPU workloads) in large
    clusters; Deployments and Nodes are watched cluster-wide.

    Fail static: once synced, a broken watch keeps the last known state while it retries,
    but when an informer has failed for longer than `max_unhealthy_s` (monotonic seconds)
    `facts` raises TemporaryError again rather than serve a view that old.
    """

    def __init__(
        self,
        api_client: client.ApiClient,
        *,
        signals: DisruptionSignals | None = None,
        pod_label_selector: str | None = None,
        watch_timeout_s: float = 300.0,
        request_timeout_s: float = 30.0,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        max_unhealthy_s: float = 60.0,
    ) -> None:
        self.signals = signals if signals is not None else DisruptionSignals()
        self.max_unhealthy_s = max_unhealthy_s
        self._lock = threading.Lock()
        self._deployments: dict[tuple[str, str], _Deployment] = {}
        self._nodes: dict[str, _Node] = {}
        self._pods: dict[tuple[str, str], _Pod] = {}
        self._pods_by_label: dict[tuple[str, str, str], set[tuple[str, str]]] = {}
        self._pods_by_ns: dict[str, set[tuple[str, str]]] = {}
        apps, core = client.AppsV1Api(api_client), client.CoreV1Api(api_client)
        informer = partial(
            _Informer,
            watch_timeout_s=watch_timeout_s,
            request_timeout_s=request_timeout_s,
            backoff_s=backoff_s,
            max_backoff_s=max_backoff_s,
        )
        pod_kwargs = {"label_selector": pod_label_selector} if pod_label_selector else {}
        self._informers: dict[str, _Informer] = {
            "deployments": informer(
                "deployments",
                apps.list_deployment_for_all_namespaces,
                _CallbackSink(self._reset_deployments, self._apply_deployment),
            ),
            "nodes": informer(
                "nodes", core.list_node, _CallbackSink(self._reset_nodes, self._apply_node)
            ),
            "pods": informer(
                "pods",
                core.list_pod_for_all_namespaces,
                _CallbackSink(self._reset_pods, self._apply_pod),
                list_kwargs=pod_kwargs,
            ),
        }

    # -- lifecycle ------------------------------------------------------------------------

    def start(self, workloads: Sequence[Workload] | None = None) -> KubeClusterView:
        """Start the informers (idempotent). `workloads` is accepted for callers that pass
        them; the informers are cluster-wide, so any later workload set is covered."""
        del workloads
        for inf in self._informers.values():
            inf.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        for inf in self._informers.values():
            inf.stop(timeout_s)

    def __enter__(self) -> KubeClusterView:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def synced(self) -> bool:
        return all(inf.synced.is_set() for inf in self._informers.values())

    def wait_synced(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        for inf in self._informers.values():
            if not inf.synced.wait(max(0.0, deadline - time.monotonic())):
                return False
        return True

    def list_counts(self) -> dict[str, int]:
        """Lists made per kind since start (1 each while watches keep up)."""
        return {k: inf.n_lists for k, inf in self._informers.items()}

    # -- informer sinks --------------------------------------------------------------------

    @staticmethod
    def _deployment(obj: JSON) -> _Deployment:
        spec, status = obj.get("spec") or {}, obj.get("status") or {}
        return _Deployment(
            replicas=int(spec.get("replicas", 1) or 0),
            ready=int(status.get("readyReplicas") or 0),
            selector=LabelSelector.from_object(spec.get("selector")),
        )

    def _reset_deployments(self, items: list[JSON]) -> None:
        fresh = {_key(o): self._deployment(o) for o in items}
        with self._lock:
            self._deployments = fresh

    def _apply_deployment(self, etype: str, obj: JSON) -> None:
        key = _key(obj)
        with self._lock:
            if etype == "DELETED":
                self._deployments.pop(key, None)
            else:
                self._deployments[key] = self._deployment(obj)

    def _node(self, obj: JSON) -> _Node:
        return _Node(self.signals.node_disruption(obj), self.signals.node_is_spot(obj))

    def _reset_nodes(self, items: list[JSON]) -> None:
        fresh = {_key(o)[1]: self._node(o) for o in items}
        with self._lock:
            self._nodes = fresh

    def _apply_node(self, etype: str, obj: JSON) -> None:
        name = _key(obj)[1]
        with self._lock:
            if etype == "DELETED":
                self._nodes.pop(name, None)
            else:
                self._nodes[name] = self._node(obj)

    def _pod(self, obj: JSON) -> _Pod:
        meta, spec, status = (
            obj.get("metadata") or {},
            obj.get("spec") or {},
            obj.get("status") or {},
        )
        phase = status.get("phase") or "Pending"
        return _Pod(
            labels=dict(meta.get("labels") or {}),
            node=str(spec.get("nodeName") or ""),
            pending=phase == "Pending",
            created_s=_parse_time_s(meta.get("creationTimestamp")) or math.inf,
            disruption=self.signals.pod_disruption(obj),
            gone=phase in ("Succeeded", "Failed") or bool(meta.get("deletionTimestamp")),
        )

    def _index_add(self, key: tuple[str, str], pod: _Pod) -> None:
        self._pods[key] = pod
        self._pods_by_ns.setdefault(key[0], set()).add(key)
        for k, v in pod.labels.items():
            self._pods_by_label.setdefault((key[0], k, v), set()).add(key)

    def _index_remove(self, key: tuple[str, str]) -> None:
        old = self._pods.pop(key, None)
        if old is None:
            return
        ns_set = self._pods_by_ns.get(key[0])
        if ns_set is not None:
            ns_set.discard(key)
            if not ns_set:
                del self._pods_by_ns[key[0]]
        for k, v in old.labels.items():
            s = self._pods_by_label.get((key[0], k, v))
            if s is not None:
                s.discard(key)
                if not s:
                    del self._pods_by_label[(key[0], k, v)]

    def _reset_pods(self, items: list[JSON]) -> None:
        parsed = [(_key(o), self._pod(o)) for o in items]
        with self._lock:
            self._pods, self._pods_by_label, self._pods_by_ns = {}, {}, {}
            for key, pod in parsed:
                self._index_add(key, pod)

    def _apply_pod(self, etype: str, obj: JSON) -> None:
        key = _key(obj)
        pod = None if etype == "DELETED" else self._pod(obj)
        with self._lock:
            self._index_remove(key)
            if pod is not None:
                self._index_add(key, pod)

    # -- queries ---------------------------------------------------------------------------

    def _selected_pods(self, namespace: str, selector: LabelSelector) -> Iterable[_Pod]:
        """Pods in `namespace` matching `selector` (call with the lock held)."""
        if selector.match_labels:
            sets: list[set[tuple[str, str]]] = [
                self._pods_by_label.get((namespace, k, v), set()) for k, v in selector.match_labels
            ]
            candidates = min(sets, key=len)
        else:
            candidates = self._pods_by_ns.get(namespace, set())
        for key in candidates:
            pod = self._pods[key]
            if selector.matches(pod.labels):
                yield pod

    def node_disruption(self, name: str) -> str | None:
        """Why node `name` is disrupted, per the signals (None: it is not, or is unknown)."""
        with self._lock:
            node = self._nodes.get(name)
        return node.disruption if node is not None else None

    def is_spot_node(self, name: str) -> bool:
        with self._lock:
            node = self._nodes.get(name)
        return bool(node is not None and node.spot)

    def current_replicas(self, workload: Workload) -> dict[str, int] | None:
        """spec.replicas of each pool's Deployment (None until the view has synced)."""
        if not self.synced:
            return None
        out: dict[str, int] = {}
        with self._lock:
            for pool in ("spot", "on_demand", "warm"):
                name = getattr(workload.spec.targets, pool)
                dep = self._deployments.get((workload.namespace, name)) if name else None
                out[pool] = dep.replicas if dep is not None else 0
        return out

    def facts(self, workloads: Sequence[Workload], now_s: float) -> ClusterFacts:
        """Cluster facts for `workloads` (in order); `now_s` is Unix time in seconds."""
        if not self.synced:
            waiting = [k for k, inf in self._informers.items() if not inf.synced.is_set()]
            errors = [
                inf.last_error for inf in self._informers.values() if inf.last_error is not None
            ]
            raise TemporaryError(
                f"cluster view not synced yet (waiting for {', '.join(waiting)})"
                + (f"; last error: {errors[-1]}" if errors else "")
            )
        mono = time.monotonic()
        for kind, inf in self._informers.items():
            since = inf.failing_since_s
            if since is not None and mono - since > self.max_unhealthy_s:
                raise TemporaryError(
                    f"cluster view stale: {kind} list/watch failing for {mono - since:.0f} s "
                    f"(> {self.max_unhealthy_s:g} s); last error: {inf.last_error}"
                )
        n = len(workloads)
        cols = {
            name: np.zeros(n, dtype=np.int64)
            for name in (
                "current_spot",
                "current_on_demand",
                "current_warm",
                "ready_spot",
                "ready_on_demand",
                "ready_warm",
                "spot_at_risk",
                "spot_pending_too_long",
            )
        }
        with self._lock:
            for i, w in enumerate(workloads):
                targets, ns = w.spec.targets, w.namespace
                for pool in ("spot", "on_demand", "warm"):
                    name = getattr(targets, pool)
                    dep = self._deployments.get((ns, name)) if name else None
                    if dep is None:
                        continue
                    cols[f"current_{pool}"][i] = dep.replicas
                    cols[f"ready_{pool}"][i] = dep.ready
                    if pool != "spot" or dep.selector is None:
                        continue
                    limit_s = w.spec.policy.pools.spot_pending_limit_s
                    at_risk = pending = 0
                    for pod in self._selected_pods(ns, dep.selector):
                        if pod.gone:
                            continue
                        node = self._nodes.get(pod.node) if pod.node else None
                        node_risk = node is not None and node.disruption is not None
                        if pod.disruption is not None or node_risk:
                            at_risk += 1
                        elif pod.pending and now_s - pod.created_s > limit_s:
                            pending += 1
                    cols["spot_at_risk"][i] = at_risk
                    cols["spot_pending_too_long"][i] = pending
        return ClusterFacts(**cols)


# -- leader election ----------------------------------------------------------------------


class LeaderElector:
    """Leader election on a coordination.k8s.io/v1 Lease, client-go's algorithm.

    `try_acquire_or_renew(now)` is meant for the caller's scheduler (every `retry_period_s`);
    it starts no thread. A holder's lease counts as expired when its record has not changed
    for `lease_duration_s` on *our* clock since we first saw it (client-go's observedTime),
    so clocks need not agree across replicas. Writes carry the read resourceVersion; a 409
    means someone else wrote first and we are not the leader this round.

    `is_leader` turns False at once when another holder is seen, and when no renewal
    succeeded for `renew_deadline_s` (so the leader stops acting before others may take
    over at `lease_duration_s`). `release()` clears holderIdentity on graceful shutdown so a
    standby takes over without waiting for expiry. API errors never raise.
    """

    def __init__(
        self,
        api_client: client.ApiClient,
        namespace: str,
        name: str,
        identity: str,
        lease_duration_s: float = 15,
        renew_deadline_s: float = 10,
        retry_period_s: float = 2,
        clock: Callable[[], float] = time.monotonic,
        *,
        wall_clock: Callable[[], float] = time.time,
        timeout_s: float = 5.0,
    ) -> None:
        if not identity:
            raise ValueError("identity must be a non-empty string")
        if not lease_duration_s > renew_deadline_s:
            raise ValueError(
                f"lease_duration_s must be > renew_deadline_s; found {lease_duration_s} <= "
                f"{renew_deadline_s}"
            )
        if not renew_deadline_s > retry_period_s > 0:
            raise ValueError(
                f"renew_deadline_s must be > retry_period_s > 0; found renew_deadline_s="
                f"{renew_deadline_s}, retry_period_s={retry_period_s}"
            )
        self._api = client.CoordinationV1Api(api_client)
        self.namespace, self.name, self.identity = namespace, name, identity
        self.lease_duration_s = lease_duration_s
        self.renew_deadline_s = renew_deadline_s
        self.retry_period_s = retry_period_s
        self._clock, self._wall = clock, wall_clock
        self.timeout_s = timeout_s
        self._leader = False
        self._last_renew_s = -math.inf
        self._observed: tuple[Any, ...] | None = None
        self._observed_at_s = -math.inf
        self._lease: JSON | None = None  # the last lease we wrote or read
        self._lock = threading.Lock()
        self.last_error: str | None = None

    @property
    def is_leader(self) -> bool:
        """Leading and renewed within `renew_deadline_s` (reads without waiting for a round
        in progress)."""
        leader, last = self._leader, self._last_renew_s
        return leader and self._clock() - last <= self.renew_deadline_s

    @property
    def holder(self) -> str:
        """holderIdentity last observed ("" when none)."""
        observed = self._observed
        return str(observed[0]) if observed else ""

    @staticmethod
    def _record(lease: JSON) -> tuple[Any, ...]:
        spec = lease.get("spec") or {}
        return (
            spec.get("holderIdentity") or "",
            spec.get("leaseDurationSeconds"),
            spec.get("acquireTime"),
            spec.get("renewTime"),
            spec.get("leaseTransitions"),
        )

    def _spec(self, acquire_time: str | None, transitions: int) -> JSON:
        now = _micro_time(self._wall())
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, math.ceil(self.lease_duration_s)),
            "acquireTime": acquire_time or now,
            "renewTime": now,
            "leaseTransitions": transitions,
        }

    def _lost(self, now: float, why: str) -> bool:
        if self._leader:
            log.warning("lost leadership of lease %s/%s: %s", self.namespace, self.name, why)
        self._leader = False
        return False

    def _failed(self, now: float, err: AdapterError) -> bool:
        self.last_error = str(err)
        if self._leader and now - self._last_renew_s <= self.renew_deadline_s:
            log.warning("lease renewal failed, still leader until the deadline: %s", err)
            return True
        return self._lost(now, f"renewal failed past the deadline: {err}")

    def _won(self, now: float, lease: JSON) -> bool:
        if not self._leader:
            log.info("became leader of lease %s/%s as %s", self.namespace, self.name, self.identity)
        self._leader = True
        self._last_renew_s = now
        self._lease = lease
        self._observed = self._record(lease)
        self._observed_at_s = now
        self.last_error = None
        return True

    def try_acquire_or_renew(self, now: float | None = None) -> bool:
        """One round: acquire the lease if free or expired, renew it if ours. True when we
        lead after this round. `now` is the elector's clock (default: `clock()`)."""
        with self._lock:
            now = self._clock() if now is None else now
            what = f"lease {self.namespace}/{self.name}"
            try:
                lease = _read_json(
                    self._api.read_namespaced_lease(
                        self.name,
                        self.namespace,
                        _preload_content=False,
                        _request_timeout=self.timeout_s,
                    )
                )
            except Exception as e:
                if _status_code(e) != 404:
                    return self._failed(now, classify(e, f"read {what}"))
                body = {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": self._spec(None, 0),
                }
                try:
                    created = _read_json(
                        self._api.create_namespaced_lease(
                            self.namespace,
                            client.V1Lease.model_validate(body),
                            _preload_content=False,
                            _request_timeout=self.timeout_s,
                        )
                    )
                except Exception as e2:
                    err = classify(e2, f"create {what}")
                    if isinstance(err, ConflictError):
                        return self._lost(now, "another candidate created the lease first")
                    return self._failed(now, err)
                return self._won(now, created)
            record = self._record(lease)
            if record != self._observed:
                self._observed, self._observed_at_s = record, now
            self._lease = lease
            holder = record[0]
            duration_s = float(record[1] or self.lease_duration_s)
            if holder and holder != self.identity and self._observed_at_s + duration_s > now:
                return self._lost(now, f"lease held by {holder}")
            spec = lease.get("spec") or {}
            transitions = int(spec.get("leaseTransitions") or 0)
            ours = holder == self.identity
            new = dict(lease)
            new["spec"] = self._spec(
                spec.get("acquireTime") if ours else None,
                transitions if ours else transitions + 1,
            )
            try:
                updated = _read_json(
                    self._api.replace_namespaced_lease(
                        self.name,
                        self.namespace,
                        client.V1Lease.model_validate(new),
                        _preload_content=False,
                        _request_timeout=self.timeout_s,
                    )
                )
            except Exception as e:
                err = classify(e, f"update {what}")
                if isinstance(err, ConflictError):
                    return self._lost(now, "lease changed under us (409)")
                return self._failed(now, err)
            return self._won(now, updated)

    def release(self) -> None:
        """Give the lease up (graceful shutdown): holderIdentity cleared. Never raises."""
        with self._lock:
            if not self._leader or self._lease is None:
                self._leader = False
                return
            self._leader = False
            lease = dict(self._lease)
            spec = dict(lease.get("spec") or {})
            now = _micro_time(self._wall())
            spec.update(
                {
                    "holderIdentity": "",
                    "leaseDurationSeconds": 1,
                    "renewTime": now,
                    "acquireTime": now,
                }
            )
            lease["spec"] = spec
            try:
                self._lease = _read_json(
                    self._api.replace_namespaced_lease(
                        self.name,
                        self.namespace,
                        client.V1Lease.model_validate(lease),
                        _preload_content=False,
                        _request_timeout=self.timeout_s,
                    )
                )
                log.info("released lease %s/%s", self.namespace, self.name)
            except Exception as e:
                self.last_error = str(classify(e, f"release lease {self.namespace}/{self.name}"))
                log.warning("%s", self.last_error)


# -- events -------------------------------------------------------------------------------


class KubeEventRecorder:
    """core/v1 Events on AutoscalingPolicy objects (what `kubectl describe` shows).

    Best effort: an API error is logged, never raised. Messages longer than 1024 characters
    are cut (the events.k8s.io limit; core/v1 has none, but Events are not logs).
    `uid_of(namespace, name)` supplies the object's uid when known (CustomResourceSource.uid_of).
    """

    def __init__(
        self,
        api_client: client.ApiClient,
        *,
        component: str = "gpu-autoscaler",
        instance: str | None = None,
        uid_of: Callable[[str, str], str | None] | None = None,
        timeout_s: float = 5.0,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._core = client.CoreV1Api(api_client)
        self.component = component
        self.instance = instance or socket.gethostname()
        self.uid_of = uid_of
        self.timeout_s = timeout_s
        self._wall = wall_clock
        self._seq = itertools.count()
        self.n_failed = 0

    def record(self, workload: Workload, reason: str, message: str, warning: bool = False) -> None:
        self.record_for(workload.namespace, workload.name, reason, message, warning)

    def record_for(
        self,
        namespace: str,
        name: str,
        reason: str,
        message: str,
        warning: bool = False,
        uid: str | None = None,
    ) -> bool:
        """An Event on AutoscalingPolicy `namespace/name`; True when it was created."""
        if uid is None and self.uid_of is not None:
            try:
                uid = self.uid_of(namespace, name)
            except Exception:  # a lookup bug must not stop the event
                uid = None
        now = self._wall()
        involved: JSON = {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": name,
            "namespace": namespace,
        }
        if uid:
            involved["uid"] = uid
        # client-go names events "<object>.<unix nanos in hex>"; the counter keeps two events
        # in the same nanosecond apart.
        suffix = f"{time.time_ns():x}{next(self._seq) % 4096:03x}"
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{name[: 253 - len(suffix) - 1]}.{suffix}",
                "namespace": namespace,
            },
            "involvedObject": involved,
            "reason": reason or "Unknown",
            "message": message[:1024],
            "type": "Warning" if warning else "Normal",
            "source": {"component": self.component},
            "reportingComponent": self.component,
            "reportingInstance": self.instance,
            "firstTimestamp": _rfc3339(now),
            "lastTimestamp": _rfc3339(now),
            "count": 1,
        }
        try:
            _read_json(
                self._core.create_namespaced_event(
                    namespace,
                    client.CoreV1Event.model_validate(body),
                    _preload_content=False,
                    _request_timeout=self.timeout_s,
                )
            )
            return True
        except Exception as e:
            self.n_failed += 1
            log.warning("%s", classify(e, f"create event {reason} on {KIND} {namespace}/{name}"))
            return False


# -- status of AutoscalingPolicy objects -----------------------------------------------------


def _jsonable(x: Any) -> Any:
    """Plain JSON values: numpy scalars/arrays unpacked, NaN and infinities -> None (JSON
    has no such numbers and the API server rejects them)."""
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, np.generic):
        return _jsonable(x.item())
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if x is None or isinstance(x, bool | int | str):
        return x
    return str(x)


_REASON_RE = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")


def _condition_reason(reason: Any) -> str:
    """metav1.Condition reasons are CamelCase identifiers; other characters are dropped."""
    text = str(reason or "")
    if _REASON_RE.match(text):
        return text
    text = re.sub(r"[^A-Za-z0-9_,:]", "", text).lstrip("0123456789_,:").rstrip(",:")
    return text or "Unknown"


def _patch_policy_status(
    custom: client.CustomObjectsApi,
    namespace: str,
    name: str,
    status: JSON,
    field_manager: str,
    timeout_s: float,
    replace: bool,
) -> JSON:
    """Patch an AutoscalingPolicy's status: `replace` swaps the whole status in one JSON
    patch (null values kept, keys we no longer write dropped); otherwise a merge patch sets
    only the given fields."""
    body: Any = (
        [{"op": "add", "path": "/status", "value": status}] if replace else {"status": status}
    )
    return _read_json(
        custom.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            body,
            field_manager=field_manager,
            _content_type=JSON_PATCH if replace else MERGE_PATCH,
            _preload_content=False,
            _request_timeout=timeout_s,
        )
    )


def _pool_counts(spot: int, on_demand: int, warm: int) -> JSON:
    return {"spot": spot, "onDemand": on_demand, "warm": warm, "total": spot + on_demand}


class KubeStateStore:
    """StateStore in the AutoscalingPolicy `status` subresource.

    `load` lists AutoscalingPolicy objects once and returns each wanted workload's
    `.status.policyState`. `save` replaces `.status` (one JSON patch `add /status`, so
    null values survive and keys no longer written go away) with:
    `policyState` (numpy values unpacked; NaN and infinities become null, as JSON has no
    such numbers); `lastDecision` (replicas per pool, demand and forecast, reason, message,
    held, time); `conditions` (metav1.Condition shape; `lastTransitionTime` moves only when
    a condition's status changes); `observedGeneration`; `desiredReplicas` and, with a
    `cluster` view, `currentReplicas` as `{spot, onDemand, warm, total}` (total = serving
    replicas) for printer columns. A workload is written at most every `min_interval_s` of
    the loop's clock unless its decision (replicas, reason, held) or a condition's
    status/reason changed. `save` never raises; a failed write is retried next call.

    With `background=True` (the default) `save` only queues the write and a worker thread
    sends it (latest status per workload wins), so the tick never waits on the API server:
    1,000 workloads every 15 s would otherwise add 1,000 round trips to a tick. `flush`
    waits for the queue to drain; `close` flushes and stops the worker.
    """

    def __init__(
        self,
        api_client: client.ApiClient,
        *,
        min_interval_s: float = 15.0,
        field_manager: str = "gpu-autoscaler",
        timeout_s: float = 10.0,
        cluster: KubeClusterView | None = None,
        wall_clock: Callable[[], float] = time.time,
        background: bool = True,
    ) -> None:
        if min_interval_s < 0:
            raise ValueError(f"min_interval_s must be >= 0; found {min_interval_s}")
        self._custom = client.CustomObjectsApi(api_client)
        self.min_interval_s = min_interval_s
        self.field_manager = field_manager
        self.timeout_s = timeout_s
        self.cluster = cluster
        self._wall = wall_clock
        self._lock = threading.Lock()
        self._generation: dict[WorkloadKey, int] = {}
        self._conditions: dict[WorkloadKey, list[JSON]] = {}
        self._saved_at_s: dict[WorkloadKey, float] = {}
        self._fingerprint: dict[WorkloadKey, tuple[Any, ...]] = {}
        self.n_writes = 0
        self.n_failed = 0
        self.background = background
        self._cond = threading.Condition(self._lock)
        self._pending: dict[WorkloadKey, tuple[Workload, JSON, float]] = {}
        self._busy = False
        self._closed = False
        self._worker: threading.Thread | None = None

    def observe(self, obj: Mapping[str, Any]) -> None:
        """Note an AutoscalingPolicy object's generation and current status (the source
        calls this for every object it sees)."""
        meta = obj.get("metadata") or {}
        key = WorkloadKey(f"{meta.get('namespace', 'default')}/{meta.get('name')}")
        status = obj.get("status") or {}
        with self._lock:
            if meta.get("generation") is not None:
                self._generation[key] = int(meta["generation"])
            conds = status.get("conditions")
            if isinstance(conds, list):
                self._conditions[key] = [c for c in conds if isinstance(c, dict)]

    def load(self, workloads: Sequence[Workload]) -> dict[WorkloadKey, dict[str, Any]]:
        """Persisted policy state of each workload that has one (one list call).

        Raises TemporaryError/PermanentError when the list fails (the loop starts fresh)."""
        try:
            data = _read_json(
                self._custom.list_cluster_custom_object(
                    GROUP, VERSION, PLURAL, _preload_content=False, _request_timeout=self.timeout_s
                )
            )
        except Exception as e:
            raise classify(e, f"list {PLURAL}.{GROUP}") from e
        wanted = {w.key for w in workloads}
        out: dict[WorkloadKey, dict[str, Any]] = {}
        for obj in data.get("items") or ():
            if not isinstance(obj, dict):
                continue
            meta = obj.get("metadata") or {}
            key = WorkloadKey(f"{meta.get('namespace', 'default')}/{meta.get('name')}")
            if key not in wanted:
                continue
            self.observe(obj)
            state = (obj.get("status") or {}).get("policyState")
            if isinstance(state, dict):
                out[key] = state
        return out

    @staticmethod
    def _decision_json(d: Decision, wall_s: float) -> JSON:
        return cast(
            JSON,
            _jsonable(
                {
                    "spot": d.spot,
                    "onDemand": d.on_demand,
                    "warm": d.warm,
                    "desiredTotal": d.desired_total,
                    "demandNow": d.demand_now,
                    "forecast": d.forecast,
                    "forecastUpper": d.forecast_upper,
                    "reason": d.reason,
                    "message": d.message,
                    "held": d.held,
                    "time": _rfc3339(wall_s),
                }
            ),
        )

    def _merge_conditions(
        self,
        key: WorkloadKey,
        given: Sequence[Mapping[str, str]],
        generation: int | None,
        wall_s: float,
    ) -> list[JSON]:
        prev = {c.get("type"): c for c in self._conditions.get(key, [])}
        out: list[JSON] = []
        for c in given:
            ctype, status = str(c.get("type", "")), str(c.get("status", "Unknown"))
            old = prev.get(ctype)
            same = old is not None and old.get("status") == status and old.get("lastTransitionTime")
            cond: JSON = {
                "type": ctype,
                "status": status,
                "reason": _condition_reason(c.get("reason")),
                "message": str(c.get("message") or "")[:32768],
                "lastTransitionTime": old["lastTransitionTime"]
                if same and old
                else _rfc3339(wall_s),
            }
            if generation is not None:
                cond["observedGeneration"] = generation
            out.append(cond)
        return out

    def save(
        self,
        workload: Workload,
        state: dict[str, Any],
        decision: Decision | None,
        conditions: Sequence[Mapping[str, str]],
        now_s: float,
    ) -> None:
        key = workload.key
        try:
            fingerprint = (
                None
                if decision is None
                else (
                    decision.spot,
                    decision.on_demand,
                    decision.warm,
                    decision.reason,
                    decision.held,
                ),
                tuple(
                    (str(c.get("type")), str(c.get("status")), str(c.get("reason")))
                    for c in conditions
                ),
            )
            with self._lock:
                last = self._saved_at_s.get(key)
                if (
                    last is not None
                    and self._fingerprint.get(key) == fingerprint
                    and now_s - last < self.min_interval_s
                ):
                    return
                wall_s = self._wall()
                generation = self._generation.get(key)
                new_state = _jsonable(state)
                status: JSON = {
                    "policyState": new_state,
                    "conditions": self._merge_conditions(key, conditions, generation, wall_s),
                }
            if generation is not None:
                status["observedGeneration"] = generation
            if decision is not None:
                status["lastDecision"] = self._decision_json(decision, wall_s)
                status["desiredReplicas"] = _pool_counts(
                    decision.spot, decision.on_demand, decision.warm
                )
            current = self.cluster.current_replicas(workload) if self.cluster is not None else None
            if current is not None:
                status["currentReplicas"] = _pool_counts(
                    current["spot"], current["on_demand"], current["warm"]
                )
            with self._lock:
                self._saved_at_s[key] = now_s
                self._fingerprint[key] = fingerprint
                self._conditions[key] = status["conditions"]
            if self.background:
                self._enqueue(key, workload, status, now_s)
            else:
                self._write(key, workload, status, now_s)
        except Exception as e:  # a bug building the status must not stop the tick
            with self._lock:
                self.n_failed += 1
            log.warning("%s", classify(e, f"save status of {KIND} {key}"))

    def _write(self, key: WorkloadKey, workload: Workload, status: JSON, now_s: float) -> None:
        try:
            _patch_policy_status(
                self._custom,
                workload.namespace,
                workload.name,
                status,
                self.field_manager,
                self.timeout_s,
                replace=True,
            )
        except Exception as e:
            with self._lock:
                self.n_failed += 1
                if self._saved_at_s.get(key) == now_s:
                    del self._saved_at_s[key]  # not rate-limited: the next save retries
            log.warning("%s", classify(e, f"save status of {KIND} {key}"))
            return
        with self._lock:
            self.n_writes += 1

    def _enqueue(self, key: WorkloadKey, workload: Workload, status: JSON, now_s: float) -> None:
        with self._cond:
            if self._closed:
                raise TemporaryError("state store is closed")
            self._pending[key] = (workload, status, now_s)
            if self._worker is None:
                self._worker = threading.Thread(
                    target=self._run, name="kube-state-store", daemon=True
                )
                self._worker.start()
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: bool(self._pending) or self._closed)
                if not self._pending:
                    return
                key = next(iter(self._pending))
                workload, status, now_s = self._pending.pop(key)
                self._busy = True
            try:
                self._write(key, workload, status, now_s)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every queued write was sent (True) or `timeout_s` passed (False)."""
        with self._cond:
            return self._cond.wait_for(
                lambda: not self._pending and not self._busy, timeout=timeout_s
            )

    def close(self, timeout_s: float = 10.0) -> None:
        """Send what is queued (up to `timeout_s`), then stop the worker."""
        self.flush(timeout_s)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            worker = self._worker
        if worker is not None:
            worker.join(timeout=timeout_s)


# -- the custom resource as a workload source ------------------------------------------------


class CustomResourceSource:
    """Workloads from AutoscalingPolicy objects, kept current by a list+watch informer.

    Valid objects become workloads (`workloads()`); an invalid one (`autoscaler.config.
    workload_from_object` raises SpecError) is left out, gets a status condition
    `Ready=False` with reason `InvalidSpec` and a message naming every bad field, and a
    Warning Event, once per generation. Other workloads go on. `on_change(workloads)` is
    called from the informer thread whenever the valid set changes. `namespace` limits the
    informer to one namespace (None: all).
    """

    def __init__(
        self,
        api_client: client.ApiClient,
        *,
        namespace: str | None = None,
        events: KubeEventRecorder | None = None,
        state_store: KubeStateStore | None = None,
        on_change: Callable[[list[Workload]], None] | None = None,
        field_manager: str = "gpu-autoscaler",
        watch_timeout_s: float = 300.0,
        request_timeout_s: float = 10.0,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._custom = client.CustomObjectsApi(api_client)
        self.namespace = namespace
        self.events = events if events is not None else KubeEventRecorder(api_client)
        if self.events.uid_of is None:
            self.events.uid_of = self.uid_of
        self.state_store = state_store
        self.on_change = on_change
        self.field_manager = field_manager
        self.request_timeout_s = request_timeout_s
        self._wall = wall_clock
        self._lock = threading.Lock()
        self._valid: dict[WorkloadKey, Workload] = {}
        self._invalid: dict[WorkloadKey, SpecError] = {}
        self._uids: dict[WorkloadKey, str] = {}
        self._reported: dict[WorkloadKey, Any] = {}  # key -> generation reported invalid
        self.version = 0
        if namespace:
            list_fn = partial(
                self._custom.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL
            )
        else:
            list_fn = partial(self._custom.list_cluster_custom_object, GROUP, VERSION, PLURAL)
        self._informer = _Informer(
            PLURAL,
            list_fn,
            _CallbackSink(self._reset, self._apply),
            watch_timeout_s=watch_timeout_s,
            request_timeout_s=request_timeout_s,
            backoff_s=backoff_s,
            max_backoff_s=max_backoff_s,
        )

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> CustomResourceSource:
        self._informer.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._informer.stop(timeout_s)

    def __enter__(self) -> CustomResourceSource:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def synced(self) -> bool:
        return self._informer.synced.is_set()

    def wait_synced(self, timeout_s: float) -> bool:
        return self._informer.synced.wait(timeout_s)

    @property
    def list_count(self) -> int:
        """Lists made since start (1 while the watch keeps up)."""
        return self._informer.n_lists

    # -- queries ---------------------------------------------------------------------------

    def workloads(self) -> list[Workload]:
        with self._lock:
            return [self._valid[k] for k in sorted(self._valid)]

    def invalid(self) -> dict[WorkloadKey, SpecError]:
        with self._lock:
            return dict(self._invalid)

    def uid_of(self, namespace: str, name: str) -> str | None:
        with self._lock:
            return self._uids.get(WorkloadKey(f"{namespace}/{name}"))

    def load(self) -> tuple[list[Workload], list[SpecError]]:
        """Valid workloads and the errors of invalid objects, as of now. Starts the informer
        on first use and waits for its first list (up to `request_timeout_s`); raises
        TemporaryError when it has not listed by then."""
        self.start()
        if not self.wait_synced(self.request_timeout_s):
            raise TemporaryError(
                f"{KIND} objects not listed yet"
                + (f": {self._informer.last_error}" if self._informer.last_error else "")
            )
        with self._lock:
            return (
                [self._valid[k] for k in sorted(self._valid)],
                [self._invalid[k] for k in sorted(self._invalid)],
            )

    # -- informer sink ---------------------------------------------------------------------

    def _parse(self, obj: JSON) -> tuple[WorkloadKey, Workload | SpecError]:
        from autoscaler.config import workload_from_object

        meta = obj.get("metadata") or {}
        key = WorkloadKey(f"{meta.get('namespace', 'default')}/{meta.get('name')}")
        try:
            return key, workload_from_object(obj)
        except SpecError as e:
            return key, e

    def _reset(self, items: list[JSON]) -> None:
        parsed = [(obj, *self._parse(obj)) for obj in items]
        with self._lock:
            before = dict(self._valid)
            self._valid, self._invalid, self._uids = {}, {}, {}
            for obj, key, res in parsed:
                self._store(obj, key, res)
            self._reported = {k: g for k, g in self._reported.items() if k in self._invalid}
        for obj, key, res in parsed:
            self._after(obj, key, res)
        self._changed(before)

    def _apply(self, etype: str, obj: JSON) -> None:
        key, res = self._parse(obj)
        with self._lock:
            before = dict(self._valid)
            if etype == "DELETED":
                self._valid.pop(key, None)
                self._invalid.pop(key, None)
                self._uids.pop(key, None)
                self._reported.pop(key, None)
            else:
                self._store(obj, key, res)
        if etype != "DELETED":
            self._after(obj, key, res)
        self._changed(before)

    def _store(self, obj: JSON, key: WorkloadKey, res: Workload | SpecError) -> None:
        uid = (obj.get("metadata") or {}).get("uid")
        if uid:
            self._uids[key] = str(uid)
        if isinstance(res, Workload):
            self._valid[key] = res
            self._invalid.pop(key, None)
            self._reported.pop(key, None)
        else:
            self._invalid[key] = res
            self._valid.pop(key, None)

    def _after(self, obj: JSON, key: WorkloadKey, res: Workload | SpecError) -> None:
        """Side effects outside the lock: the state store's bookkeeping, InvalidSpec reports."""
        if self.state_store is not None:
            self.state_store.observe(obj)
        if isinstance(res, SpecError):
            self._report_invalid(obj, key, res)

    def _changed(self, before: Mapping[WorkloadKey, Workload]) -> None:
        with self._lock:
            if self._valid == before:
                return
            self.version += 1
            current = [self._valid[k] for k in sorted(self._valid)]
        if self.on_change is not None:
            try:
                self.on_change(current)
            except Exception:
                log.exception("workload change callback failed")

    def _report_invalid(self, obj: JSON, key: WorkloadKey, err: SpecError) -> None:
        meta = obj.get("metadata") or {}
        generation = meta.get("generation")
        with self._lock:
            if key in self._reported and self._reported[key] == generation:
                return
            self._reported[key] = generation
        ns, name = str(meta.get("namespace", "default")), str(meta.get("name"))
        problems = "; ".join(f"{path}: {msg}" for path, msg in err.problems)
        message = f"invalid spec, {len(err.problems)} problem(s): {problems}"
        log.warning("%s %s: %s", KIND, key, message)
        cond: JSON = {
            "type": "Ready",
            "status": "False",
            "reason": "InvalidSpec",
            "message": message[:32768],
            "lastTransitionTime": _rfc3339(self._wall()),
        }
        status: JSON = {"conditions": [cond]}
        if generation is not None:
            cond["observedGeneration"] = int(generation)
            status["observedGeneration"] = int(generation)
        try:
            _patch_policy_status(
                self._custom,
                ns,
                name,
                status,
                self.field_manager,
                self.request_timeout_s,
                replace=False,
            )
        except Exception as e:
            log.warning("%s", classify(e, f"set InvalidSpec condition on {KIND} {key}"))
        self.events.record_for(ns, name, "InvalidSpec", message, warning=True, uid=meta.get("uid"))
