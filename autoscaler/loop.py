"""The control tick: observe -> decide -> act -> record. One code path for cluster and simulator.

`ControlLoop.tick(now_s)` is synchronous and takes time as an argument: the service calls it
from APScheduler (in a worker thread, with wall-clock time), the simulator with its simulated
clock. No policy logic lives here: every number comes from `Policy.decide`; the loop only
moves data between the Protocols and contains failures.

Failure containment (fail static):
- metrics backend down -> every workload is decided on an all-missing window, which the
  policy answers by holding its last good decision (never a scale-down), and says so;
- cluster view out of sync -> nothing is actuated this tick (decisions still recorded);
- one workload's patch fails -> that workload's error is recorded; the others go on;
- the policy raising on the batch (a bug) -> each workload is decided alone, so only the
  workload that triggers it is held.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from autoscaler.config import Workload, WorkloadKey
from autoscaler.protocols import (
    Actuator,
    AdapterError,
    ClusterView,
    ConflictError,
    DecisionRecord,
    EventRecorder,
    MetricsSource,
    MetricWindows,
    PermanentError,
    ScheduleSource,
    StateStore,
)
from autoscaler.store import DecisionStore
from policies import PredictivePolicy, effective_policy_spec
from policies.types import ClusterFacts, Decisions, Observation, Policy

log = logging.getLogger("gpu_autoscaler.loop")

ACTIVE_FAMILIES = ("queue", "backlog", "rps", "running", "streams")


@dataclass
class TickReport:
    """What one tick did (for logs, metrics and tests)."""

    now_s: float
    n_workloads: int
    duration_s: float = 0.0
    observe_s: float = 0.0
    decide_s: float = 0.0
    act_s: float = 0.0
    patches: list[tuple[WorkloadKey, str, int]] = field(default_factory=list)
    errors: dict[WorkloadKey, list[str]] = field(default_factory=dict)
    held: list[WorkloadKey] = field(default_factory=list)
    metrics_error: str | None = None
    cluster_error: str | None = None


class ControlLoop:
    """Runs ticks for a set of workloads against the given adapters."""

    def __init__(
        self,
        workloads: Sequence[Workload],
        metrics: MetricsSource,
        cluster: ClusterView,
        actuator: Actuator,
        store: DecisionStore | None = None,
        policy: Policy[Any] | None = None,
        state_store: StateStore | None = None,
        events: EventRecorder | None = None,
        schedules: ScheduleSource | None = None,
        dry_run: bool = False,
    ) -> None:
        self.metrics = metrics
        self.cluster = cluster
        self.actuator = actuator
        self.store = store if store is not None else DecisionStore()
        self.policy: Policy[Any] = policy if policy is not None else PredictivePolicy()
        self.state_store = state_store
        self.events = events
        self.schedules = schedules
        self.dry_run = dry_run
        self.workloads: list[Workload] = []
        self._specs: Any = None
        self._state: Any = None
        self.last_report: TickReport | None = None
        # tick and refit run in different worker threads; state swaps happen under this lock
        self._lock = threading.RLock()
        self.set_workloads(workloads)

    # -- configuration -------------------------------------------------------------------

    def set_workloads(self, workloads: Sequence[Workload]) -> None:
        """Replace the workload set; state of workloads that stay is kept, new ones start
        from persisted state when the StateStore has it."""
        with self._lock:
            self._set_workloads(workloads)

    def _set_workloads(self, workloads: Sequence[Workload]) -> None:
        old = {w.key: i for i, w in enumerate(self.workloads)}
        new = list(workloads)
        specs = [effective_policy_spec(w.spec.policy, w.spec.targets) for w in new]
        compiled = self.policy.compile(specs) if hasattr(self.policy, "compile") else specs
        fresh = self.policy.initial_state(compiled)
        persisted: Mapping[WorkloadKey, dict[str, Any]] = {}
        if self.state_store is not None and hasattr(self.policy, "import_state"):
            todo = [w for w in new if w.key not in old]
            if todo:
                try:
                    persisted = self.state_store.load(todo)
                except AdapterError as e:
                    log.warning("could not load persisted state: %s", e)
        if self._state is not None and hasattr(self.policy, "merge_state"):
            carry = [(i, old[w.key]) for i, w in enumerate(new) if w.key in old]
            fresh = self.policy.merge_state(fresh, self._state, carry)
        if persisted and hasattr(self.policy, "import_state"):
            rows = [(i, persisted[w.key]) for i, w in enumerate(new) if w.key in persisted]
            fresh = self.policy.import_state(compiled, fresh, rows)
        self.workloads = new
        self._specs = compiled
        self._state = fresh
        gone = [k for k in old if k not in {w.key for w in new}]
        if gone:
            self.store.remove(gone)

    @property
    def state(self) -> Any:
        return self._state

    # -- the tick --------------------------------------------------------------------------

    def refit(self, now_s: float, history_s: float = 6 * 3600.0, step_s: float = 60.0) -> bool:
        """Re-estimate forecast parameters from a longer history (the slow job).

        The fit runs outside the lock on a snapshot; only the fitted parameters are applied
        to the live state, so ticks that ran meanwhile are not lost. False when the policy
        has nothing to fit or the history is unavailable."""
        if not hasattr(self.policy, "refit") or not self.workloads:
            return False
        with self._lock:
            workloads, specs, state = list(self.workloads), self._specs, self._state
        try:
            windows = self.metrics.history(workloads, now_s - history_s, now_s, step_s)
        except AdapterError as e:
            log.warning("refit skipped, history unavailable: %s", e)
            return False
        obs = Observation(
            t_s=windows.t_s,
            metrics=dict(windows.metrics),
            cluster=ClusterFacts.uniform(len(workloads), 0, 0, 0),
        )
        policy: Any = self.policy
        params = policy.refit(specs, state, obs)
        with self._lock:
            if [w.key for w in self.workloads] != [w.key for w in workloads]:
                return False  # workload set changed meanwhile; next refit catches up
            self._state = policy.apply_refit(self._state, params)
        return True

    def tick(self, now_s: float) -> TickReport:
        with self._lock:
            return self._tick(now_s)

    def _tick(self, now_s: float) -> TickReport:
        t0 = time.perf_counter()
        n = len(self.workloads)
        report = TickReport(now_s=now_s, n_workloads=n)
        if n == 0:
            self.last_report = report
            return report

        windows = self._observe(now_s, report)
        facts = self._facts(now_s, report)
        floors = None
        if self.schedules is not None:
            try:
                floors = self.schedules.floors(self.workloads, now_s)
            except Exception as e:  # a schedule bug must not stop scaling
                log.exception("schedule evaluation failed")
                report.errors.setdefault(WorkloadKey("*"), []).append(f"schedules: {e}")
        obs = Observation(
            t_s=windows.t_s,
            metrics=dict(windows.metrics),
            cluster=facts if facts is not None else ClusterFacts.uniform(n, 0, 0, 0),
            stale=np.asarray(windows.stale, dtype=bool),
            floors=floors,
        )
        t1 = time.perf_counter()
        report.observe_s = t1 - t0
        decisions = self._decide(obs, now_s, report)
        t2 = time.perf_counter()
        report.decide_s = t2 - t1
        actuated = self._act(decisions, facts, report) if facts is not None else {}
        report.act_s = time.perf_counter() - t2
        self._record(decisions, obs, facts, windows, actuated, now_s, report)
        report.duration_s = time.perf_counter() - t0
        self.last_report = report
        return report

    def _observe(self, now_s: float, report: TickReport) -> MetricWindows:
        try:
            return self.metrics.observe(self.workloads, now_s)
        except AdapterError as e:
            if isinstance(e, PermanentError):
                # 401/403/404, an unreadable token: retrying will not help, a person must
                report.metrics_error = f"metrics source misconfigured: {e}"
                log.error("%s; holding all workloads until it is fixed", report.metrics_error)
            else:
                report.metrics_error = str(e)
                log.warning("metrics unavailable, holding all workloads: %s", e)
            n = len(self.workloads)
            return MetricWindows(
                t_s=np.array([now_s]),
                metrics={},
                stale=np.ones(n, dtype=bool),
                errors=dict.fromkeys(range(n), f"metrics unavailable: {e}"),
            )

    def _facts(self, now_s: float, report: TickReport) -> ClusterFacts | None:
        try:
            return self.cluster.facts(self.workloads, now_s)
        except AdapterError as e:
            report.cluster_error = str(e)
            log.warning("cluster view unavailable, not actuating this tick: %s", e)
            return None

    def _decide(self, obs: Observation, now_s: float, report: TickReport) -> Decisions:
        try:
            decisions, state = self.policy.decide(self._specs, self._state, obs, now_s)
            self._state = state
            return decisions
        except Exception:
            if not hasattr(self.policy, "take_state"):
                raise
            log.exception("policy failed on the batch; deciding workloads one by one")
        return self._decide_one_by_one(obs, now_s, report)

    def _decide_one_by_one(self, obs: Observation, now_s: float, report: TickReport) -> Decisions:
        policy: Any = self.policy
        parts: list[Decisions] = []
        states: list[Any] = []
        for i, w in enumerate(self.workloads):
            specs_i = policy.take_specs(self._specs, [i])
            state_i = policy.take_state(self._state, [i])
            try:
                d, s = policy.decide(specs_i, state_i, obs.take([i]), now_s)
            except Exception as e:  # contain: hold this workload only
                log.exception("policy failed for %s", w.key)
                report.errors.setdefault(w.key, []).append(f"policy error: {e}")
                d, s = policy.hold(specs_i, state_i, obs.take([i]), f"policy error: {e}")
            parts.append(d)
            states.append(s)
        self._state = policy.concat_states(states)
        return Decisions.concat(parts)

    def _act(
        self, decisions: Decisions, facts: ClusterFacts, report: TickReport
    ) -> dict[int, dict[str, int]]:
        actuated: dict[int, dict[str, int]] = {}
        current = {
            "spot": facts.current_spot,
            "on_demand": facts.current_on_demand,
            "warm": facts.current_warm,
        }
        desired = {"spot": decisions.spot, "on_demand": decisions.on_demand, "warm": decisions.warm}
        for i, w in enumerate(self.workloads):
            targets = w.spec.targets
            for pool in ("on_demand", "spot", "warm"):
                deployment = getattr(targets, pool)
                if deployment is None:
                    continue
                want, have = int(desired[pool][i]), int(current[pool][i])
                if want == have:
                    continue
                reason = str(decisions.reason[i])
                if self.dry_run:
                    log.info(
                        "dry-run: would scale %s/%s %d -> %d (%s)",
                        w.namespace,
                        deployment,
                        have,
                        want,
                        reason,
                    )
                    actuated.setdefault(i, {})[pool] = want
                    continue
                try:
                    try:
                        changed = self.actuator.set_replicas(w.namespace, deployment, want, reason)
                    except ConflictError:
                        changed = self.actuator.set_replicas(w.namespace, deployment, want, reason)
                except AdapterError as e:
                    msg = f"scale {pool} {w.namespace}/{deployment} to {want}: {e}"
                    report.errors.setdefault(w.key, []).append(msg)
                    log.warning("%s", msg)
                    continue
                if changed:
                    actuated.setdefault(i, {})[pool] = want
                    report.patches.append((w.key, pool, want))
                    if self.events is not None:
                        self.events.record(
                            w,
                            reason,
                            f"{pool} {deployment}: {have} -> {want}. {decisions.detail[i]}",
                        )
        return actuated

    def _record(
        self,
        decisions: Decisions,
        obs: Observation,
        facts: ClusterFacts | None,
        windows: MetricWindows,
        actuated: dict[int, dict[str, int]],
        now_s: float,
        report: TickReport,
    ) -> None:
        records: list[DecisionRecord] = []
        active = _active(obs)
        exported = None
        if self.state_store is not None and hasattr(self.policy, "export_state"):
            exported = self.policy.export_state(self._state)
        for i, w in enumerate(self.workloads):
            d = decisions[i]
            errs = list(report.errors.get(w.key, []))
            if i in windows.errors:
                errs.append(windows.errors[i])
            if d.held:
                report.held.append(w.key)
            cur = (
                {
                    "spot": int(facts.current_spot[i]),
                    "on_demand": int(facts.current_on_demand[i]),
                    "warm": int(facts.current_warm[i]),
                }
                if facts is not None
                else {}
            )
            ready = (
                {
                    "spot": int(facts.ready_spot[i]),
                    "on_demand": int(facts.ready_on_demand[i]),
                    "warm": int(facts.ready_warm[i]),
                }
                if facts is not None
                else {}
            )
            records.append(
                DecisionRecord(
                    key=w.key,
                    workload=w,
                    decision=d,
                    at_s=now_s,
                    current=cur,
                    ready=ready,
                    actuated=actuated.get(i, {}),
                    errors=errs,
                    stale=bool(obs.stale[i]) if obs.stale is not None else False,
                    active=bool(active[i]),
                )
            )
            if exported is not None and self.state_store is not None:
                conditions = [
                    {
                        "type": "Ready",
                        "status": "False" if errs else "True",
                        "reason": "Error" if errs else d.reason,
                        "message": "; ".join(errs) if errs else d.message,
                    },
                    {
                        "type": "Holding",
                        "status": "True" if d.held else "False",
                        "reason": d.reason,
                        "message": d.message,
                    },
                ]
                self.state_store.save(w, exported[i], d, conditions, now_s)
        self.store.put_many(records)


def _active(obs: Observation) -> np.ndarray:
    """Demand in the newest sample of any demand family (KEDA's IsActive)."""
    n = obs.n
    out = np.zeros(n, dtype=bool)
    if obs.t_s.shape[0] == 0:
        return out
    for fam in ACTIVE_FAMILIES:
        arr = obs.metrics.get(fam)
        if arr is None or arr.shape[1] == 0:
            continue
        # newest finite sample per row
        finite = np.isfinite(arr)
        idx = np.where(
            finite.any(axis=1), arr.shape[1] - 1 - np.argmax(finite[:, ::-1], axis=1), -1
        )
        vals = np.where(idx >= 0, arr[np.arange(n), np.maximum(idx, 0)], 0.0)
        out |= vals > 0
    return out


def windows_to_observation(windows: MetricWindows, facts: ClusterFacts) -> Observation:
    """Helper for callers that assemble an Observation themselves (tests, benchmarks)."""
    return Observation(
        t_s=windows.t_s,
        metrics=dict(windows.metrics),
        cluster=facts,
        stale=np.asarray(windows.stale, dtype=bool),
    )
