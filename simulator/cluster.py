"""A simulated GPU cluster for ONE workload: three pools, replica lifecycle, requests, billing.

Two fidelity levels share one lifecycle (pods, lead times, spot interruptions and shortages,
billing, facts):

- ``SimCluster`` simulates every request through continuous-batching replicas driven by a
  ``ServiceProfile`` (event-driven, closed form between events).
- ``FluidCluster`` treats requests as a fluid in fixed steps (for multi-day traces).

Both are driven like a Kubernetes cluster: ``set_desired(pool, n, now_s)`` patches a
Deployment's scale, ``advance(until_s)`` lets time pass, ``facts``/``gauges``/``counters``
are what a ClusterView and a Prometheus scrape would see.

Pools and replica lifecycle
---------------------------
Pools are ``spot``, ``on_demand`` (serving replicas) and ``warm`` (placeholder pods of a low
PriorityClass that keep a GPU node up with the model cached; they serve nothing).

- Raising desired above the live pods creates pods. A spot pod created inside a shortage
  window (``spot_shortages``, [start_s, end_s)) stays *Pending* (not billed) until the window
  (and any window overlapping its end) closes. Otherwise it is *Starting*: if a READY warm
  placeholder exists it is consumed (the placeholder is evicted by priority; the warm
  Deployment's desired count is unchanged, so it re-creates a placeholder, cold) and the
  replica is Ready after ``warm_start_s``; else a cold start with a lognormal lead time
  (median ``cold_start_median_s``, 95th percentile ``cold_start_p95_s``; seeded).
- Billing: a cold start bills from pod creation (the node boots for it); a warm start bills
  from pod start (the slot was billed as a placeholder until then, so the node is billed
  without a gap). Pending pods are not billed. A consumed slot becomes the replica's node and
  is billed and interrupted as the replica's pool; placeholders bill at the on-demand price,
  are never interrupted and are not affected by spot shortages.
- Lowering desired removes pods: Pending ones first (newest first), then Starting ones
  (newest first), then Ready ones - those under an interruption notice first (as a
  pod-deletion-cost annotation would), then the least loaded. A removed Ready replica
  *drains*: it takes no new requests, finishes in-flight work for at most ``drain_s`` and is
  billed meanwhile; requests still unfinished then are re-queued and counted as retried.
  Placeholders are removed at once (Starting ones first).

Spot interruptions
------------------
Spot pods are spread round-robin over ``zones``. With ``zone_correlated`` (default) each zone
has a Poisson process of reclaim events at ``spot_hazard_per_hour``; an event gives every spot
pod on a node in that zone an interruption notice at a uniform time within
``zone_event_spread_s`` (~3 min, co-interruptions in performance.md 2.3), so each replica's
own hazard is ``spot_hazard_per_hour``. Without correlation each spot pod draws an
exponential lifetime when its node comes up. An explicit ``spot_interruptions`` schedule
(t_s, zone) replaces the hazard process: notices to the zone's spot pods exactly at t_s.
A notice at t kills the pod at t + ``spot_notice_s``; meanwhile it is *at risk*
(``facts()["spot_at_risk"]``) and still serves. At the kill its in-flight requests are
re-queued at the front of the queue (retried) and the pod is gone; the spot Deployment
re-creates it (Pending or Starting, as above) unless desired was lowered.

Requests (SimCluster)
---------------------
A workload-level FCFS queue (the gateway) dispatches each request to the Ready,
non-draining replica with the most free batch slots (on ties, the one that has had that
count longest; deterministic). A replica admits while its running sequences <
``max_num_seqs`` and the KV reservation (input + output tokens of its running sequences)
plus the request's fits ``max_kv_tokens``; if the replica with the most free slots lacks KV
room, the least-loaded one with room takes it; otherwise the queue head waits (head-of-line
FCFS). A request that could never fit one replica's KV cache
is dropped at arrival. ``max_queue`` bounds the queue (arrivals beyond it are dropped);
``request_timeout_s`` drops requests that waited longer in the queue (measured from their
last enqueue; enforced when they reach the head and whenever gauges, counters or results
are read). Re-queued requests lose their tokens and first-token time: their TTFT and ITL
are those of the attempt that completes.

Service model and exactness (SimCluster)
----------------------------------------
A replica runs iterations back to back while it has sequences (``ServiceProfile``):
t_iter = t0 + a B + b KV + g P with B the decoding sequences, KV their context tokens and P
the prefill tokens of the iteration. A request joins at the first iteration boundary at or
after its dispatch; its prefill runs in that iteration (together with every request joining
at the same boundary), its first token comes at the end of it, then one token per
iteration; it leaves at the end of the iteration that produces its last token.

Rather than stepping iterations, each replica keeps a *token clock* (iterations done,
``tok``) and its state at the last boundary (time, B, KV). With B constant between events,
KV grows by B per iteration, so k iterations take ``k c + d k (k - 1) / 2`` with
c = t0 + a B + b KV and d = b B (an arithmetic series); a request finishing at token-clock
value f is a heap entry keyed by f. A global event heap (lazy invalidation by version)
holds each replica's next completion; arrivals come from the sorted trace. An arrival is
placed in closed form: solve the series for the first boundary at or after it, settle the
replica there and commit the prefill iteration at once (the replica state jumps to that
iteration's end); later arrivals up to that boundary amend the committed iteration. Results
equal per-iteration stepping of the same rules, except where noted:

- chunked prefill: the iteration's token budget is ``max_batched_tokens`` minus the decoding
  sequences; a prompt larger than the budget takes ceil(P / budget) iterations, computed as
  one block (sequences finishing inside that block are charged to its end and keep decoding
  in it); a request that would not fit the budget of an already committed iteration goes to
  the next boundary instead of being split across both;
- a replica is settled up to the next boundary when a request is placed on it, so
  completions at that boundary (at most one iteration ahead) free their slot and are
  recorded at that moment; a kill within that iteration does not undo them;
- generation/prompt token counters count a committed iteration's tokens when it is
  committed (at most one iteration early);
- an arrival within 1e-9 iterations after a boundary joins that boundary (a rounding
  margin of the closed-form solve; picoseconds).

tests/test_cluster.py checks first-token and finish times against per-iteration stepping
(to 1e-9 s, with slot, KV and token-budget limits binding) and the M/M/c limit against
Erlang C.

Cost: one arrival, about one completion event and one superseded event per request; no
per-token or per-iteration work. Routing keeps replicas in buckets by running sequences,
so finding the least-loaded replica is O(1). About 33k CPU instructions per request on
CPython 3.11 (tests/bench/test_bench_sim.py: 1 M requests on 30 replicas). Memory: a few
Python lists of length m (~200 B per request); for multi-day traces use FluidCluster.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from simulator.service import ServiceProfile

F64 = NDArray[np.float64]
POOLS: tuple[str, ...] = ("spot", "on_demand", "warm")
_SERVING = ("spot", "on_demand")
_Z95 = 1.6448536269514722  # standard normal 95th percentile

# pod states
_PENDING, _STARTING, _READY, _DRAINING, _GONE = range(5)

# lifecycle event kinds (payload[0])
_EV_READY, _EV_NOTICE, _EV_KILL, _EV_DRAIN_END, _EV_ZONE, _EV_SHORTAGE_END, _EV_SAMPLE = range(7)


@dataclass(frozen=True)
class ClusterConfig:
    """The physical world of one workload (defaults: performance.md section 6).

    Lead times in seconds: ``warm_start_s`` on a free warm slot; cold starts lognormal with
    median ``cold_start_median_s`` and 95th percentile ``cold_start_p95_s``. Spot:
    ``spot_hazard_per_hour`` reclaim rate per replica-hour, ``spot_notice_s`` warning before
    the kill, ``zones`` zones (pods spread round-robin), ``zone_correlated`` (a zone event
    takes every spot replica in the zone within ``zone_event_spread_s``);
    ``spot_interruptions`` an explicit schedule of (t_s, zone) instead of the hazard process;
    ``spot_shortages`` [start_s, end_s) windows during which new spot pods stay Pending.
    Prices in USD per GPU-hour; ``gpus_per_replica`` GPUs per replica (and per placeholder).
    ``drain_s`` bounds graceful termination; ``max_queue`` bounds the gateway queue (None:
    unbounded); ``request_timeout_s`` drops requests queued longer (None: never).
    ``timeline_step_s`` is the sampling step of ``SimResults.timeline``.
    """

    warm_start_s: float = 45.0
    cold_start_median_s: float = 300.0
    cold_start_p95_s: float = 600.0
    spot_hazard_per_hour: float = 0.2
    spot_notice_s: float = 120.0
    zones: int = 3
    zone_correlated: bool = True
    zone_event_spread_s: float = 180.0
    spot_interruptions: tuple[tuple[float, int], ...] | None = None
    spot_shortages: tuple[tuple[float, float], ...] = ()
    on_demand_usd_per_gpu_hour: float = 6.9
    spot_price_ratio: float = 0.4
    gpus_per_replica: int = 1
    drain_s: float = 30.0
    max_queue: int | None = None
    request_timeout_s: float | None = None
    timeline_step_s: float = 5.0

    def __post_init__(self) -> None:
        def fin(x: Any) -> bool:
            return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)

        def nonneg(name: str) -> tuple[bool, str]:
            v = getattr(self, name)
            return fin(v) and v >= 0, f"{name} must be a number >= 0, got {v!r}"

        checks = [
            nonneg("warm_start_s"),
            (
                fin(self.cold_start_median_s) and self.cold_start_median_s > 0,
                f"cold_start_median_s must be > 0, got {self.cold_start_median_s!r}",
            ),
            (
                fin(self.cold_start_p95_s) and self.cold_start_p95_s >= self.cold_start_median_s,
                f"cold_start_p95_s ({self.cold_start_p95_s!r}) must be >= cold_start_median_s "
                f"({self.cold_start_median_s!r})",
            ),
            nonneg("spot_hazard_per_hour"),
            nonneg("spot_notice_s"),
            (
                isinstance(self.zones, int) and self.zones >= 1,
                f"zones must be an integer >= 1, got {self.zones!r}",
            ),
            nonneg("zone_event_spread_s"),
            nonneg("on_demand_usd_per_gpu_hour"),
            nonneg("spot_price_ratio"),
            (
                isinstance(self.gpus_per_replica, int) and self.gpus_per_replica >= 1,
                f"gpus_per_replica must be an integer >= 1, got {self.gpus_per_replica!r}",
            ),
            nonneg("drain_s"),
            (
                self.max_queue is None or (isinstance(self.max_queue, int) and self.max_queue >= 0),
                f"max_queue must be None or an integer >= 0, got {self.max_queue!r}",
            ),
            (
                self.request_timeout_s is None
                or (fin(self.request_timeout_s) and self.request_timeout_s > 0),
                f"request_timeout_s must be None or > 0, got {self.request_timeout_s!r}",
            ),
            (
                fin(self.timeline_step_s) and self.timeline_step_s > 0,
                f"timeline_step_s must be > 0, got {self.timeline_step_s!r}",
            ),
        ]
        for i, ev in enumerate(self.spot_interruptions or ()):
            ok = len(ev) == 2 and fin(ev[0]) and isinstance(ev[1], int) and 0 <= ev[1] < self.zones
            checks.append(
                (
                    ok,
                    f"spot_interruptions[{i}] must be (t_s, zone) with 0 <= zone < zones "
                    f"({self.zones!r}), got {ev!r}",
                )
            )
        for i, w in enumerate(self.spot_shortages):
            ok = len(w) == 2 and fin(w[0]) and fin(w[1]) and w[0] < w[1]
            checks.append(
                (
                    ok,
                    f"spot_shortages[{i}] must be (start_s, end_s) with start_s < end_s, got {w!r}",
                )
            )
        problems = [msg for ok, msg in checks if not ok]
        if problems:
            raise ValueError("invalid ClusterConfig: " + "; ".join(problems))

    def price_usd_per_replica_hour(self, pool: str) -> float:
        """Price of one replica (or placeholder) of ``pool`` per hour."""
        base = self.on_demand_usd_per_gpu_hour * self.gpus_per_replica
        return base * self.spot_price_ratio if pool == "spot" else base


@dataclass(frozen=True)
class SimResults:
    """Per-request outcome of a SimCluster run ([m] arrays in submission order).

    arrival_s, first_token_s, finish_s: seconds (NaN: dropped, or not finished yet);
    dropped: bool; retried: times re-queued after a spot kill or a drain deadline;
    itl_s: mean inter-token latency of the completing attempt,
    (finish - first_token) / (output_tokens - 1), NaN for one-token outputs.
    gpu_seconds / cost_usd: per pool, including warm placeholders and billed boot time.
    timeline: sampled every ``timeline_step_s``: t_s, desired_<pool>, ready_<pool>, queue,
    running, arrivals_rps (arrivals in [t_s, t_s + step) per second).
    scale_events: set_desired calls that changed a pool's desired count;
    interruptions: spot pods killed by an interruption.
    """

    arrival_s: F64
    first_token_s: F64
    finish_s: F64
    dropped: NDArray[np.bool_]
    retried: NDArray[np.int64]
    itl_s: F64
    gpu_seconds: dict[str, float]
    cost_usd: dict[str, float]
    timeline: dict[str, F64]
    scale_events: int
    interruptions: int

    @property
    def ttft_s(self) -> F64:
        """Time to first token from (first) arrival, seconds; NaN when none."""
        return self.first_token_s - self.arrival_s

    @property
    def latency_s(self) -> F64:
        """End-to-end latency, seconds; NaN when not finished."""
        return self.finish_s - self.arrival_s

    @property
    def total_cost_usd(self) -> float:
        return float(sum(self.cost_usd.values()))


class _Pod:
    """One pod: lifecycle fields plus, for a serving replica, its batching state."""

    __slots__ = (
        "pid",
        "pool",
        "state",
        "zone",
        "created_s",
        "bill_from_s",
        "notice_s",
        "warm_start",
        # batching state (SimCluster): state at the last iteration boundary t_tok
        "t_tok",  # s, time of that boundary (may lie up to one iteration ahead)
        "tok",  # iterations done at t_tok (the token clock)
        "n_run",  # B: running sequences (decoding, incl. joiners of a committed prefill)
        "kv",  # context tokens of the running sequences at t_tok
        "kres",  # KV reservation: sum of input + output of running sequences
        "heap",  # [(finish_tok, request)]
        "ver",  # version of the scheduled completion event (lazy invalidation)
        "ev_k",  # iterations from t_tok to the scheduled event
        "routed",  # Ready and not draining: in the routing buckets
        # the last committed prefill block (for amending)
        "c_start",  # s, start of the last committed prefill block
        "c_block",  # (base_s, prompt tokens, token budget, iterations, (joined requests))
    )

    def __init__(self, pid: int, pool: str, now_s: float) -> None:
        self.pid = pid
        self.pool = pool
        self.state = _PENDING
        self.zone = 0
        self.created_s = now_s
        self.bill_from_s: float | None = None
        self.notice_s: float | None = None
        self.warm_start = False
        self.t_tok = now_s
        self.tok = 0
        self.n_run = 0
        self.kv = 0.0
        self.kres = 0
        self.heap: list[tuple[int, int]] = []
        self.ver = 0
        self.ev_k = 0
        self.routed = False
        self.c_start = -math.inf
        self.c_block: tuple[float, int, int, int, tuple[int, ...]] = (0.0, 0, 1, 1, ())


class _Lifecycle:
    """Pods, pools, lead times, spot process, billing and facts shared by both clusters.

    Subclasses implement the service hooks ``_on_ready``, ``_on_drain``, ``_on_kill`` and
    the gauges ``_queue_len`` / ``_running``; lifecycle events share ``self._heap`` with the
    subclass's own events. Entries are (t_s, -1, seq, payload) for lifecycle events and
    (t_s, pod id, version, pod) for a replica's next completion: ties in time go to
    lifecycle events first, then by pod id; an entry never compares its last item."""

    _sampling = True  # sample the timeline every config.timeline_step_s

    def __init__(
        self,
        config: ClusterConfig,
        profile: ServiceProfile,
        seed: int,
        start_s: float,
        initial: Mapping[str, int],
    ) -> None:
        if not isinstance(config, ClusterConfig):
            raise TypeError(f"config must be a ClusterConfig, got {type(config).__name__}")
        if not isinstance(profile, ServiceProfile):
            raise TypeError(f"profile must be a ServiceProfile, got {type(profile).__name__}")
        bad = [
            f"initial[{k!r}]={v!r}"
            for k, v in initial.items()
            if k not in POOLS or isinstance(v, bool) or not isinstance(v, int) or v < 0
        ]
        if bad:
            raise ValueError(
                f"initial must map pools {POOLS} to integers >= 0; bad: {', '.join(bad)}"
            )
        if not math.isfinite(start_s):
            raise ValueError(f"start_s must be finite, got {start_s}")
        self.config = config
        self.profile = profile
        self.seed = seed
        self.start_s = float(start_s)
        self._now = float(start_s)
        cold, spot, spread = (
            np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)
        )
        self._rng_cold = cold
        self._rng_spot = spot
        self._rng_spread = spread
        self._cold_mu = math.log(config.cold_start_median_s)
        self._cold_sigma = math.log(config.cold_start_p95_s / config.cold_start_median_s) / _Z95
        self._heap: list[tuple[float, int, Any, Any]] = []
        self._seq = itertools.count()
        self._pid = itertools.count()
        self._desired = dict.fromkeys(POOLS, 0)
        self._pods: dict[str, list[_Pod]] = {p: [] for p in POOLS}
        self._draining: list[_Pod] = []
        self._ready_n = dict.fromkeys(POOLS, 0)  # Ready (not draining) pods per pool
        self._billed_s = dict.fromkeys(POOLS, 0.0)
        self._scale_events = 0
        self._interruptions = 0
        self._zone_rr = 0
        self._shortage_ends: set[float] = set()
        self._tl: dict[str, list[float]] = {
            k: []
            for k in (
                "t_s",
                *(f"desired_{p}" for p in POOLS),
                *(f"ready_{p}" for p in POOLS),
                "queue",
                "running",
            )
        }
        h = config.spot_hazard_per_hour
        if config.spot_interruptions is not None:
            for t, z in config.spot_interruptions:
                if t >= self._now:
                    self._push(float(t), (_EV_ZONE, z, True))
        elif h > 0 and config.zone_correlated:
            for z in range(config.zones):
                self._push(self._now + self._rng_spot.exponential(3600.0 / h), (_EV_ZONE, z, False))
        if self._sampling:
            self._push(self._now, (_EV_SAMPLE,))
        for pool in POOLS:
            n = int(initial.get(pool, 0))
            self._desired[pool] = n
            for _ in range(n):
                pod = self._new_pod(pool, self._now)
                pod.state = _READY
                self._ready_n[pool] += 1
                pod.bill_from_s = self._now
                self._arm_spot(pod, self._now)
                if pool != "warm":
                    self._on_ready(pod, self._now)

    # ---- hooks ---------------------------------------------------------------------------

    def _on_ready(self, pod: _Pod, now_s: float) -> None:
        raise NotImplementedError

    def _on_drain(self, pod: _Pod, now_s: float) -> None:
        """A Ready serving pod was removed; it is DRAINING and in self._draining."""
        raise NotImplementedError

    def _on_kill(self, pod: _Pod, now_s: float) -> None:
        """A Ready or draining serving pod dies now: re-queue its in-flight work."""
        raise NotImplementedError

    def _queue_len(self) -> float:
        raise NotImplementedError

    def _running(self) -> float:
        raise NotImplementedError

    def advance(self, until_s: float) -> None:
        raise NotImplementedError

    # ---- public control API --------------------------------------------------------------

    def set_desired(self, pool: str, replicas: int, now_s: float) -> None:
        """Set a pool Deployment's desired replicas at now_s (like patching its scale).

        now_s must not lie before the simulated present; a later now_s advances to it."""
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
        if isinstance(replicas, bool) or not isinstance(replicas, int | np.integer):
            raise ValueError(f"replicas must be an integer, got {replicas!r}")
        if replicas < 0:
            raise ValueError(f"replicas must be >= 0, got {replicas}")
        self._sync(now_s)
        if int(replicas) != self._desired[pool]:
            self._scale_events += 1
            self._desired[pool] = int(replicas)
            self._reconcile(pool, self._now)

    def desired(self, pool: str) -> int:
        """Desired replicas of a pool (the Deployment's spec.replicas)."""
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
        return self._desired[pool]

    def facts(self, now_s: float, spot_pending_limit_s: float) -> dict[str, int]:
        """Cluster facts at now_s (the ClusterView's ClusterFacts for this workload).

        current_<pool>: desired replicas; ready_<pool>: Ready pods (not draining);
        spot_at_risk: live spot pods whose node has an interruption notice;
        spot_pending_too_long: spot pods Pending (no capacity: a shortage) for longer than
        spot_pending_limit_s. Starting pods (node booting, image pulling) are not Pending
        in this sense."""
        self._sync(now_s)
        now = self._now
        spot = self._pods["spot"]
        return {
            "current_spot": self._desired["spot"],
            "current_on_demand": self._desired["on_demand"],
            "current_warm": self._desired["warm"],
            "ready_spot": self._n_ready("spot"),
            "ready_on_demand": self._n_ready("on_demand"),
            "ready_warm": self._n_ready("warm"),
            "spot_at_risk": sum(1 for p in spot if p.notice_s is not None),
            "spot_pending_too_long": sum(
                1 for p in spot if p.state == _PENDING and now - p.created_s > spot_pending_limit_s
            ),
        }

    @property
    def now_s(self) -> float:
        """The simulated present (seconds)."""
        return self._now

    def pods(self, pool: str) -> list[dict[str, Any]]:
        """Live pods of a pool, oldest first (for inspection and tests): state, zone,
        created_s, notice_s, warm_start."""
        names = {_PENDING: "Pending", _STARTING: "Starting", _READY: "Ready"}
        return [
            {
                "state": names[p.state],
                "zone": p.zone,
                "created_s": p.created_s,
                "notice_s": p.notice_s,
                "warm_start": p.warm_start,
            }
            for p in self._pods[pool]
        ]

    # ---- lifecycle internals -------------------------------------------------------------

    def _sync(self, now_s: float) -> None:
        if now_s < self._now - 1e-9:
            raise ValueError(f"now_s={now_s} lies before the simulated present {self._now}")
        if now_s > self._now:
            self.advance(now_s)

    def _push(self, t: float, payload: tuple[Any, ...]) -> None:
        heapq.heappush(self._heap, (t, -1, next(self._seq), payload))

    def _n_ready(self, pool: str) -> int:
        return self._ready_n[pool]

    def _cold_lead_s(self) -> float:
        if self._cold_sigma == 0.0:
            return self.config.cold_start_median_s
        return float(math.exp(self._cold_mu + self._cold_sigma * self._rng_cold.standard_normal()))

    def _shortage_end(self, t: float) -> float | None:
        """End of the shortage covering t (following windows that overlap it), or None."""
        end: float | None = None
        x = t
        changed = True
        while changed:
            changed = False
            for s, e in self.config.spot_shortages:
                if s <= x < e:
                    end = x = e
                    changed = True
        return end

    def _new_pod(self, pool: str, now: float) -> _Pod:
        pod = _Pod(next(self._pid), pool, now)
        if pool == "spot":
            pod.zone = self._zone_rr % self.config.zones
            self._zone_rr += 1
        self._pods[pool].append(pod)
        return pod

    def _create(self, pool: str, now: float) -> None:
        pod = self._new_pod(pool, now)
        if pool == "spot":
            end = self._shortage_end(now)
            if end is not None:
                if end not in self._shortage_ends:
                    self._shortage_ends.add(end)
                    self._push(end, (_EV_SHORTAGE_END,))
                return  # Pending, not billed
        self._start(pod, now)

    def _start(self, pod: _Pod, now: float) -> None:
        lead = None
        if pod.pool != "warm":
            for slot in self._pods["warm"]:
                if slot.state == _READY:
                    # Evicted by priority; the warm Deployment re-creates its placeholder.
                    self._gone(slot, now)
                    self._reconcile("warm", now)
                    lead = self.config.warm_start_s
                    pod.warm_start = True
                    break
        if lead is None:
            lead = self._cold_lead_s()
        pod.state = _STARTING
        pod.bill_from_s = now
        self._push(now + lead, (_EV_READY, pod))
        self._arm_spot(pod, now)

    def _arm_spot(self, pod: _Pod, now: float) -> None:
        """Independent hazard: draw the lifetime of a spot pod's node when it comes up."""
        c = self.config
        if (
            pod.pool == "spot"
            and c.spot_interruptions is None
            and not c.zone_correlated
            and c.spot_hazard_per_hour > 0
        ):
            life = self._rng_spot.exponential(3600.0 / c.spot_hazard_per_hour)
            self._push(now + life, (_EV_NOTICE, pod))

    def _gone(self, pod: _Pod, now: float) -> None:
        if pod.state == _GONE:
            return
        if pod.bill_from_s is not None:
            self._billed_s[pod.pool] += max(0.0, now - pod.bill_from_s)
        if pod.state == _DRAINING:
            self._draining.remove(pod)
        else:
            if pod.state == _READY:
                self._ready_n[pod.pool] -= 1
            self._pods[pod.pool].remove(pod)
        pod.state = _GONE

    def _reconcile(self, pool: str, now: float) -> None:
        live = self._pods[pool]
        want = self._desired[pool]
        while len(live) < want:
            self._create(pool, now)
        excess = len(live) - want
        if excess <= 0:
            return
        for state in (_PENDING, _STARTING):
            for pod in [p for p in reversed(live) if p.state == state][:excess]:
                self._gone(pod, now)
                excess -= 1
        if excess <= 0:
            return
        ready = [p for p in live if p.state == _READY]
        # at-risk first, then least loaded, then newest
        ready.sort(key=lambda p: (p.notice_s is None, p.n_run, -p.pid))
        for pod in ready[:excess]:
            if pool == "warm":
                self._gone(pod, now)
            else:
                live.remove(pod)
                self._ready_n[pool] -= 1
                pod.state = _DRAINING
                self._draining.append(pod)
                self._on_drain(pod, now)

    def _handle(self, t: float, payload: tuple[Any, ...]) -> None:
        kind = payload[0]
        c = self.config
        if kind == _EV_READY:
            pod = payload[1]
            if pod.state == _STARTING:
                pod.state = _READY
                self._ready_n[pod.pool] += 1
                if pod.pool != "warm":
                    self._on_ready(pod, t)
        elif kind == _EV_NOTICE:
            pod = payload[1]
            if pod.state in (_STARTING, _READY, _DRAINING) and pod.notice_s is None:
                pod.notice_s = t
                self._push(t + c.spot_notice_s, (_EV_KILL, pod))
        elif kind == _EV_KILL:
            pod = payload[1]
            if pod.state != _GONE:
                self._interruptions += 1
                if pod.state in (_READY, _DRAINING):
                    self._on_kill(pod, t)
                self._gone(pod, t)
                self._reconcile("spot", t)
        elif kind == _EV_DRAIN_END:
            pod = payload[1]
            if pod.state == _DRAINING:
                self._on_kill(pod, t)
                self._gone(pod, t)
        elif kind == _EV_ZONE:
            _, zone, explicit = payload
            for pod in [*self._pods["spot"], *self._draining]:
                if (
                    pod.pool == "spot"
                    and pod.zone == zone
                    and pod.state in (_STARTING, _READY, _DRAINING)
                    and pod.notice_s is None
                ):
                    if explicit or c.zone_event_spread_s == 0:
                        self._handle(t, (_EV_NOTICE, pod))
                    else:
                        dt = self._rng_spread.uniform(0.0, c.zone_event_spread_s)
                        self._push(t + dt, (_EV_NOTICE, pod))
            if not explicit:
                nxt = t + self._rng_spot.exponential(3600.0 / c.spot_hazard_per_hour)
                self._push(nxt, (_EV_ZONE, zone, False))
        elif kind == _EV_SHORTAGE_END:
            self._shortage_ends.discard(t)
            end = self._shortage_end(t)
            if end is not None:
                if end not in self._shortage_ends:
                    self._shortage_ends.add(end)
                    self._push(end, (_EV_SHORTAGE_END,))
            else:
                for pod in [p for p in self._pods["spot"] if p.state == _PENDING]:
                    self._start(pod, t)
        elif kind == _EV_SAMPLE:
            self._sample(t)
            self._push(t + c.timeline_step_s, (_EV_SAMPLE,))

    def _sample(self, t: float) -> None:
        tl = self._tl
        tl["t_s"].append(t)
        for p in POOLS:
            tl[f"desired_{p}"].append(self._desired[p])
            tl[f"ready_{p}"].append(self._n_ready(p))
        tl["queue"].append(self._queue_len())
        tl["running"].append(self._running())

    def _billing(self) -> tuple[dict[str, float], dict[str, float]]:
        sec = dict(self._billed_s)
        for pod in [*(p for pool in POOLS for p in self._pods[pool]), *self._draining]:
            if pod.bill_from_s is not None:
                sec[pod.pool] += max(0.0, self._now - pod.bill_from_s)
        g = self.config.gpus_per_replica
        gpu_s = {p: s * g for p, s in sec.items()}
        cost = {p: s / 3600.0 * self.config.price_usd_per_replica_hour(p) for p, s in sec.items()}
        return gpu_s, cost

    def _timeline(self) -> dict[str, F64]:
        return {k: np.asarray(v, dtype=np.float64) for k, v in self._tl.items()}


class SimCluster(_Lifecycle):
    """Per-request simulation of one workload on a simulated GPU cluster (module docstring).

    initial: replicas per pool Ready at start_s (billed from start_s)."""

    def __init__(
        self,
        config: ClusterConfig,
        profile: ServiceProfile,
        seed: int = 0,
        start_s: float = 0.0,
        initial: Mapping[str, int] | None = None,
    ) -> None:
        # service constants in seconds (b per KV token)
        self._t0 = profile.t0_ms / 1e3
        self._a = profile.a_ms_per_seq / 1e3
        self._b = profile.b_ms_per_1k_kv / 1e6
        self._g = profile.g_ms_per_prefill_token / 1e3
        self._max_seqs = profile.max_num_seqs
        self._max_kv = profile.max_kv_tokens
        self._mbt = profile.max_batched_tokens
        # Routing: the routable replicas, and buckets of them by running sequences (an
        # insertion-ordered dict per count) with the lowest non-empty count in _ml[0]
        # (max_num_seqs + 1 when none is routable). Cheaper than min() over a list.
        self._routable: list[_Pod] = []
        self._buckets: list[dict[_Pod, None]] = [{} for _ in range(profile.max_num_seqs + 2)]
        self._ml = [profile.max_num_seqs + 1]
        self._queue: deque[tuple[int, float]] = deque()
        self._submitted = False
        self._n = 0
        self._ai = 0
        self._arr: list[float] = [math.inf]
        self._inp: list[int] = []
        self._out: list[int] = []
        self._first: list[float] = []
        self._fin: list[float] = []
        self._retried: list[int] = []
        self._dropped = bytearray()
        self._arrival_np: F64 = np.zeros(0)
        self._completed = 0
        self._n_dropped = 0
        self._prompt_total = 0
        self._gen_done = 0
        self._gen_lost = 0
        super().__init__(
            config, profile, seed, start_s, {"on_demand": 1} if initial is None else initial
        )

    # ---- input ---------------------------------------------------------------------------

    def submit(self, arrival_s: Any, input_tokens: Any, output_tokens: Any) -> None:
        """Submit the whole trace once, before advancing: [m] arrival times (s, sorted, not
        before start_s), prompt tokens (>= 0) and output tokens (>= 1)."""
        if self._submitted:
            raise RuntimeError("submit() may be called once")
        arr = np.asarray(arrival_s, dtype=np.float64)
        inp = np.asarray(input_tokens)
        out = np.asarray(output_tokens)
        problems = []
        if arr.ndim != 1 or inp.shape != arr.shape or out.shape != arr.shape:
            problems.append(
                f"arrival_s, input_tokens, output_tokens must be 1-D of one length, got shapes "
                f"{arr.shape}, {inp.shape}, {out.shape}"
            )
        else:
            if not np.all(np.isfinite(arr)):
                problems.append("arrival_s has non-finite values")
            elif arr.size and np.any(np.diff(arr) < 0):
                first_bad = int(np.argmax(np.diff(arr) < 0)) + 1
                problems.append(f"arrival_s is not sorted (first at index {first_bad})")
            if arr.size and arr[0] < self._now:
                problems.append(f"arrival_s starts at {arr[0]}, before now_s={self._now}")
            for name, a, lo in (("input_tokens", inp, 0), ("output_tokens", out, 1)):
                if a.size and not np.issubdtype(a.dtype, np.integer):
                    if not np.all(np.isfinite(a)) or np.any(a != np.round(a)):
                        problems.append(f"{name} must be integers")
                        continue
                if a.size and a.min() < lo:
                    problems.append(f"{name} must be >= {lo}, min is {a.min()}")
        if problems:
            raise ValueError("submit: " + "; ".join(problems))
        self._submitted = True
        m = int(arr.size)
        self._n = m
        self._arrival_np = arr.copy()
        self._arr = [*arr.tolist(), math.inf]  # a sentinel ends the arrivals
        self._inp = inp.astype(np.int64).tolist()
        self._out = out.astype(np.int64).tolist()
        self._first = [math.nan] * m
        self._fin = [math.nan] * m
        self._retried = [0] * m
        self._dropped = bytearray(m)

    # ---- the event loop ------------------------------------------------------------------

    def advance(self, until_s: float) -> None:
        """Process every event (arrivals, completions, pod start/ready/kill) up to until_s."""
        if not math.isfinite(until_s):
            raise ValueError(f"until_s must be finite, got {until_s}")
        if until_s < self._now - 1e-9:
            raise ValueError(f"until_s={until_s} lies before the simulated present {self._now}")
        self._run(until_s)

    def _run(self, until_s: float) -> None:
        # The hot loop: arrivals and completions are inlined (this runs once per request);
        # lifecycle events and queueing go through methods.
        heap = self._heap
        heappop = heapq.heappop
        heappush = heapq.heappush
        arr, inp, out, fin, first = self._arr, self._inp, self._out, self._fin, self._first
        buckets, ml, queue = self._buckets, self._ml, self._queue
        max_seqs, max_kv, mbt = self._max_seqs, self._max_kv, self._mbt
        t0, a, b, g = self._t0, self._a, self._b, self._g
        admit = self._admit
        finish_at = self._finish_at
        sqrt = math.sqrt
        prompt_total = 0
        ai = self._ai
        ta = arr[ai]
        completed = gen_done = 0
        draining = _DRAINING
        ceil = math.ceil
        if not heap:
            raise RuntimeError("the timeline sample event is missing from the event heap")
        while True:
            # the heap is never empty: the next timeline sample is always scheduled
            top = heap[0]
            t = top[0]
            if t <= ta:
                if t > until_s:
                    break
                heappop(heap)
                pod = top[3]
                if top[1] < 0:
                    self._now = t
                    self._handle(t, pod)
                    continue
                if top[2] != pod.ver:
                    continue  # superseded
                # -- completion: settle ev_k iterations, finish every run-out sequence
                k = pod.ev_k
                nrun = pod.n_run
                tok = pod.tok + k
                kv = pod.kv + nrun * k
                kres = pod.kres
                h = pod.heap
                while True:  # a valid event has at least one sequence to finish
                    key, req = heappop(h)
                    fin[req] = t
                    o = out[req]
                    i = inp[req] + o
                    kv -= i + tok - key
                    kres -= i
                    gen_done += o
                    nrun -= 1
                    if not h or h[0][0] > tok:
                        break
                pod_n = pod.n_run
                completed += pod_n - nrun
                pod.tok = tok
                pod.t_tok = t
                pod.n_run = nrun
                pod.kv = kv
                pod.kres = kres
                if pod.routed:
                    del buckets[pod_n][pod]
                    buckets[nrun][pod] = None
                    if nrun < ml[0]:
                        ml[0] = nrun
                if queue:
                    self._now = t
                    self._dispatch(t)
                    nrun = pod.n_run
                    kv = pod.kv
                    tok = pod.tok
                    t = pod.t_tok
                # -- reschedule (as _resched)
                v = pod.ver + 1
                pod.ver = v
                if h:
                    k = h[0][0] - tok
                    if k < 0:
                        k = 0
                    te = t + k * (t0 + a * nrun + b * (kv + nrun * (k - 1) * 0.5))
                    pod.ev_k = k
                    heappush(heap, (te, pod.pid, v, pod))
                elif pod.state == draining:
                    self._gone(pod, t)
            else:
                if ta > until_s:
                    break
                req = ai
                t = ta
                ai += 1
                ta = arr[ai]
                need = inp[req] + out[req]
                m = ml[0]
                if queue or need > max_kv or m >= max_seqs:
                    self._now = t
                    self._arrive_slow(req, t)
                    continue
                bm = buckets[m]
                pod = next(iter(bm))  # most free slots; ties: longest at that count
                if pod.kres + need > max_kv:
                    self._now = t
                    self._arrive_slow(req, t)
                    continue
                if m == 0 or t <= pod.c_start:
                    admit(pod, req, t)  # idle replica, or amend a committed prefill
                    continue
                # -- inlined _admit for a busy replica whose committed prefill has
                # started: settle to the first boundary >= t, commit a prefill block there
                nrun = m
                i = inp[req]
                h = pod.heap
                tok = pod.tok
                kv = pod.kv
                t0a = t0 + a * nrun
                start = pod.t_tok
                if t > start:
                    c = t0a + b * kv
                    d = b * nrun
                    # k = the smallest k with  k c + d k (k - 1) / 2 >= t - start, minus
                    # a rounding margin of 1e-9 iterations (joining a boundary that lies
                    # a few ps before the arrival)
                    if d > 0.0:
                        hc = c - 0.5 * d
                        k = ceil((sqrt(hc * hc + 2.0 * d * (t - start)) - hc) / d - 1e-9)
                    else:
                        k = ceil((t - start) / c - 1e-9)
                    kc = h[0][0] - tok
                    if k > kc:
                        k = kc  # the next completion is not before t (event order)
                    elif k < 1:
                        k = 1
                    start += k * c + d * k * (k - 1) * 0.5
                    tok += k
                    kv += nrun * k
                if h[0][0] <= tok:
                    pod.tok = tok
                    pod.kv = kv
                    pod.t_tok = start
                    finish_at(pod, start)
                    nrun = pod.n_run
                    kv = pod.kv
                    t0a = t0 + a * nrun
                beta = mbt - nrun
                if i <= beta:
                    nit = 1
                    base = t0a + b * kv
                else:
                    if beta < 1:
                        beta = 1
                    nit = (i + beta - 1) // beta
                    base = nit * (t0a + b * kv) + b * nrun * nit * (nit - 1) * 0.5
                end = start + base + g * i
                o = out[req]
                tok += nit
                kv += nrun * nit + i + 1
                nrun += 1
                pod.tok = tok
                pod.kv = kv
                pod.n_run = nrun
                pod.t_tok = end
                pod.kres += need
                prompt_total += i
                heappush(h, (tok + o - 1, req))
                first[req] = end
                pod.c_start = start
                pod.c_block = (base, i, beta, nit, (req,))
                # routing bucket nrun - 1 -> nrun (not always m: a settle may finish some)
                bm = buckets[nrun - 1]
                del bm[pod]
                buckets[nrun][pod] = None
                if not bm and ml[0] == nrun - 1:
                    ml[0] = nrun
                v = pod.ver + 1
                pod.ver = v
                k = h[0][0] - tok
                if k < 0:
                    k = 0
                te = end + k * (t0a + a + b * (kv + nrun * (k - 1) * 0.5))
                pod.ev_k = k
                heappush(heap, (te, pod.pid, v, pod))
        self._ai = ai
        self._completed += completed
        self._gen_done += gen_done
        self._prompt_total += prompt_total
        self._now = max(self._now, float(until_s))

    def _drop(self, req: int) -> None:
        self._dropped[req] = 1
        self._first[req] = math.nan
        self._n_dropped += 1

    def _arrive_slow(self, req: int, t: float) -> None:
        """Arrival when the fast path does not apply: queue non-empty (FCFS), no replica
        with a free slot, KV does not fit the least-loaded replica, or never fits."""
        need = self._inp[req] + self._out[req]
        q = self._queue
        if need > self._max_kv:
            self._drop(req)  # can never be admitted by one replica
            return
        if not q:
            pod = self._route(need)
            if pod is not None:
                self._admit(pod, req, t)
                return
        mq = self.config.max_queue
        if mq is not None and len(q) >= mq:
            self._drop(req)
        else:
            q.append((req, t))

    def _route(self, need: int) -> _Pod | None:
        """The routable replica with the most free batch slots (ties: the one longest at
        that count) that fits ``need`` KV tokens; None when none can admit."""
        m = self._ml[0]
        if m >= self._max_seqs:
            return None
        pod = next(iter(self._buckets[m]))
        if pod.kres + need <= self._max_kv:
            return pod
        best: _Pod | None = None
        for p in self._routable:
            if p.n_run < self._max_seqs and p.kres + need <= self._max_kv:
                if best is None or p.n_run < best.n_run:
                    best = p
        return best

    def _set_load(self, pod: _Pod, old: int, new: int) -> None:
        """Move a routable pod between routing buckets (running sequences old -> new)."""
        b = self._buckets
        del b[old][pod]
        b[new][pod] = None
        ml = self._ml
        if new < ml[0]:
            ml[0] = new
        elif old == ml[0] and not b[old]:
            m = old
            while not b[m]:  # stops at `new` at the latest
                m += 1
            ml[0] = m

    def _dispatch(self, t: float) -> None:
        """Move queued requests (FCFS) onto replicas while the head fits somewhere."""
        q = self._queue
        timeout = self.config.request_timeout_s
        inp, out = self._inp, self._out
        while q:
            req, t_enq = q[0]
            if timeout is not None and t - t_enq > timeout:
                q.popleft()
                self._drop(req)
                continue
            pod = self._route(inp[req] + out[req])
            if pod is None:
                return
            q.popleft()
            self._admit(pod, req, t)

    def _admit(self, pod: _Pod, req: int, t: float) -> None:
        """Place request ``req`` on ``pod`` at time t: join its prefill at the first
        iteration boundary at or after t (module docstring). The event loop inlines the
        common case (a busy replica whose last committed prefill has started)."""
        inp = self._inp[req]
        out = self._out[req]
        g = self._g
        b = self._b
        if t <= pod.c_start:
            # The last committed prefill block has not started: amend it if the request
            # fits its token budget without another chunk.
            base, p, beta, nit, join = pod.c_block
            p += inp
            if (p + beta - 1) // beta <= nit:
                join = (*join, req)
                pod.c_block = (base, p, beta, nit, join)
                end = pod.c_start + base + g * p
                pod.t_tok = end
                nrun = pod.n_run + 1
                pod.n_run = nrun
                pod.kv += inp + 1
                pod.kres += inp + out
                self._prompt_total += inp
                heapq.heappush(pod.heap, (pod.tok + out - 1, req))
                first = self._first
                for r in join:
                    first[r] = end
                if pod.routed:
                    self._set_load(pod, nrun - 1, nrun)
                self._resched(pod)
                return
        nrun = pod.n_run
        t0a = self._t0 + self._a * nrun
        start = pod.t_tok
        if nrun == 0:
            if t > start:
                start = t  # idle: the iteration starts now
        else:
            h = pod.heap
            if t > start:
                # settle to the first boundary >= t: k iterations of c + d j, with a
                # rounding margin of 1e-9 iterations
                c = t0a + b * pod.kv
                d = b * nrun
                if d > 0.0:
                    hc = c - 0.5 * d
                    k = math.ceil((math.sqrt(hc * hc + 2.0 * d * (t - start)) - hc) / d - 1e-9)
                else:
                    k = math.ceil((t - start) / c - 1e-9)
                kc = h[0][0] - pod.tok
                if k > kc:
                    k = kc  # the next completion is not before t (event order)
                elif k < 1:
                    k = 1
                start += k * c + d * k * (k - 1) * 0.5
                pod.tok += k
                pod.kv += nrun * k
                pod.t_tok = start
            if h[0][0] <= pod.tok:
                self._finish_at(pod, start)
                nrun = pod.n_run
                t0a = self._t0 + self._a * nrun
        # commit a prefill block of ceil(inp / beta) iterations starting at `start`
        kv0 = pod.kv
        beta = self._mbt - nrun
        if beta < 1:
            beta = 1
        nit = 1 if inp <= beta else (inp + beta - 1) // beta
        base = nit * (t0a + b * kv0) + b * nrun * nit * (nit - 1) * 0.5
        end = start + base + g * inp
        tok = pod.tok + nit
        pod.tok = tok
        pod.kv = kv0 + nrun * nit + inp + 1
        pod.n_run = nrun + 1
        pod.t_tok = end
        pod.kres += inp + out
        self._prompt_total += inp
        heapq.heappush(pod.heap, (tok + out - 1, req))
        self._first[req] = end
        pod.c_start = start
        pod.c_block = (base, inp, beta, nit, (req,))
        if pod.routed:
            self._set_load(pod, nrun, nrun + 1)
        self._resched(pod)

    def _finish_at(self, pod: _Pod, t: float) -> None:
        """Complete every sequence of ``pod`` whose token clock has run out, at time t."""
        h = pod.heap
        tok = pod.tok
        fin = self._fin
        inp, out = self._inp, self._out
        heappop = heapq.heappop
        nrun, kv, kres, gen = pod.n_run, pod.kv, pod.kres, 0
        done = 0
        while h and h[0][0] <= tok:
            key, req = heappop(h)
            fin[req] = t
            o = out[req]
            nrun -= 1
            kv -= inp[req] + o + (tok - key)
            kres -= inp[req] + o
            gen += o
            done += 1
        if pod.routed and done:
            self._set_load(pod, pod.n_run, nrun)
        pod.n_run, pod.kv, pod.kres = nrun, kv, kres
        self._gen_done += gen
        self._completed += done

    def _resched(self, pod: _Pod) -> None:
        """Schedule the replica's next completion (invalidating the previous event)."""
        pod.ver += 1
        h = pod.heap
        if not h:
            return
        k = h[0][0] - pod.tok
        if k < 0:
            k = 0
        nrun = pod.n_run
        b = self._b
        te = pod.t_tok + k * (self._t0 + self._a * nrun + b * pod.kv) + b * nrun * k * (k - 1) * 0.5
        pod.ev_k = k
        heapq.heappush(self._heap, (te, pod.pid, pod.ver, pod))

    # ---- lifecycle hooks -----------------------------------------------------------------

    def _on_ready(self, pod: _Pod, now_s: float) -> None:
        pod.t_tok = now_s
        pod.routed = True
        self._routable.append(pod)
        self._buckets[pod.n_run][pod] = None
        if pod.n_run < self._ml[0]:
            self._ml[0] = pod.n_run
        if self._queue:
            self._dispatch(now_s)

    def _unroute(self, pod: _Pod) -> None:
        if not pod.routed:
            return
        pod.routed = False
        self._routable.remove(pod)
        b, ml = self._buckets, self._ml
        del b[pod.n_run][pod]
        while ml[0] < len(b) - 1 and not b[ml[0]]:
            ml[0] += 1

    def _on_drain(self, pod: _Pod, now_s: float) -> None:
        self._unroute(pod)
        if pod.n_run == 0:
            self._gone(pod, now_s)
        else:
            self._push(now_s + self.config.drain_s, (_EV_DRAIN_END, pod))

    def _iters_done(self, pod: _Pod, t: float) -> int:
        """Iterations completed between pod.t_tok and t (0 when t <= t_tok)."""
        dt = t - pod.t_tok
        if dt <= 0 or pod.n_run == 0:
            return 0
        c = self._t0 + self._a * pod.n_run + self._b * pod.kv
        d = self._b * pod.n_run
        if d > 0:
            hc = c - 0.5 * d
            k = int((math.sqrt(hc * hc + 2.0 * d * dt) - hc) / d)
        else:
            k = int(dt / c)
        if pod.heap:
            k = min(k, pod.heap[0][0] - pod.tok)
        return max(0, k)

    def _generated_in_flight(self, pod: _Pod, t: float) -> int:
        """Tokens generated by t for the requests running on ``pod`` (a committed prefill
        counts its first token)."""
        done = pod.tok + self._iters_done(pod, t)
        out = self._out
        return sum(max(0, out[req] - (key - done)) for key, req in pod.heap)

    def _on_kill(self, pod: _Pod, now_s: float) -> None:
        self._unroute(pod)
        pod.ver += 1
        self._gen_lost += self._generated_in_flight(pod, now_s)
        reqs = sorted(req for _, req in pod.heap)
        pod.heap = []
        pod.n_run = 0
        pod.kv = 0.0
        pod.kres = 0
        first, retried = self._first, self._retried
        for req in reqs:
            first[req] = math.nan
            retried[req] += 1
        self._queue.extendleft((req, now_s) for req in reversed(reqs))
        self._dispatch(now_s)

    # ---- observation ---------------------------------------------------------------------

    def _purge(self) -> None:
        """Drop queued requests past request_timeout_s (anywhere in the queue)."""
        timeout = self.config.request_timeout_s
        if timeout is None or not self._queue:
            return
        now = self._now
        keep: list[tuple[int, float]] = []
        for req, t_enq in self._queue:
            if now - t_enq > timeout:
                self._drop(req)
            else:
                keep.append((req, t_enq))
        self._queue.clear()  # in place: the event loop holds a reference
        self._queue.extend(keep)

    def _queue_len(self) -> float:
        self._purge()
        return float(len(self._queue))

    def _running(self) -> float:
        return float(sum(p.n_run for p in self._routable) + sum(p.n_run for p in self._draining))

    def gauges(self) -> dict[str, float]:
        """Now: queue (waiting requests), running (in flight), streams (= running),
        kv_usage (context tokens / max_kv_tokens, mean over Ready replicas; 0 when none),
        oldest_wait_s (age of the oldest waiting request since its arrival; 0 when none)."""
        running = self._running()
        ready = self._routable
        if ready:
            kv = 0.0
            for p in ready:
                kv += min(1.0, (p.kv + p.n_run * self._iters_done(p, self._now)) / self._max_kv)
            kv_usage = kv / len(ready)
        else:
            kv_usage = 0.0
        queue = self._queue_len()
        # FCFS: the head arrived first (a re-queued request goes back to the front, and it
        # arrived before anything still waiting behind it)
        oldest = self._now - float(self._arrival_np[self._queue[0][0]]) if self._queue else 0.0
        return {
            "queue": queue,
            "running": running,
            "streams": running,
            "kv_usage": kv_usage,
            "oldest_wait_s": max(0.0, oldest),
        }

    def counters(self) -> dict[str, float]:
        """Cumulative since start: requests_total (arrived), completed_total, dropped_total,
        prompt_tokens_total (prefilled, re-prefills included), generation_tokens_total."""
        self._purge()
        gen = self._gen_done + self._gen_lost
        for p in [*self._routable, *self._draining]:
            gen += self._generated_in_flight(p, self._now)
        return {
            "requests_total": float(self._ai),
            "completed_total": float(self._completed),
            "dropped_total": float(self._n_dropped),
            "prompt_tokens_total": float(self._prompt_total),
            "generation_tokens_total": float(gen),
        }

    def results(self) -> SimResults:
        """Per-request outcomes so far, billing up to now and the timeline."""
        self._purge()
        first = np.asarray(self._first, dtype=np.float64)
        fin = np.asarray(self._fin, dtype=np.float64)
        out = np.asarray(self._out, dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            itl = np.where(out > 1, (fin - first) / np.maximum(out - 1, 1), np.nan)
        gpu_s, cost = self._billing()
        tl = self._timeline()
        step = self.config.timeline_step_s
        if tl["t_s"].size:
            idx = np.searchsorted(self._arrival_np[: self._ai], tl["t_s"], side="left")
            nxt = np.searchsorted(self._arrival_np[: self._ai], tl["t_s"] + step, side="left")
            tl["arrivals_rps"] = (nxt - idx) / step
        else:
            tl["arrivals_rps"] = np.zeros(0)
        return SimResults(
            arrival_s=self._arrival_np.copy(),
            first_token_s=first,
            finish_s=fin,
            dropped=np.frombuffer(bytes(self._dropped), dtype=np.uint8).astype(bool),
            retried=np.asarray(self._retried, dtype=np.int64),
            itl_s=itl,
            gpu_seconds=gpu_s,
            cost_usd=cost,
            timeline=tl,
            scale_events=self._scale_events,
            interruptions=self._interruptions,
        )


@dataclass(frozen=True)
class FluidResults:
    """Per-step outcome of a FluidCluster run ([s] arrays, one per step).

    t_s, dt_s: step start and length (s); arrivals, served (entered service), dropped,
    retried (re-queued by kills and drain deadlines): request counts in the step (fractional);
    queue: waiting requests at the step's end; ready_<pool>, desired_<pool>: during the step;
    wait_s: mean queueing delay of the step's served requests (Little's law on the fluid
    queue); ttft_s = wait_s + TTFT_min at the step's concurrency; itl_s: mean inter-token
    latency; latency_s = ttft_s + (O - 1) itl_s; concurrency: requests in flight per ready
    replica. Billing as in SimResults.
    """

    t_s: F64
    dt_s: F64
    arrivals: F64
    served: F64
    dropped: F64
    retried: F64
    queue: F64
    wait_s: F64
    ttft_s: F64
    itl_s: F64
    latency_s: F64
    concurrency: F64
    ready: dict[str, F64]
    desired: dict[str, F64]
    gpu_seconds: dict[str, float]
    cost_usd: dict[str, float]
    scale_events: int
    interruptions: int

    @property
    def total_cost_usd(self) -> float:
        return float(sum(self.cost_usd.values()))

    def attainment(self, ttft_slo_s: float | None = None, itl_slo_s: float | None = None) -> float:
        """Share of served requests (weighted by served count) in steps whose mean TTFT and
        ITL meet the targets; dropped requests count as misses. NaN when nothing arrived.

        A coarse estimate: within a step all requests get the step's mean latency."""
        ok = np.ones(self.served.shape, dtype=bool)
        if ttft_slo_s is not None:
            ok &= self.ttft_s <= ttft_slo_s
        if itl_slo_s is not None:
            ok &= self.itl_s <= itl_slo_s
        total = float(self.served.sum() + self.dropped.sum())
        return float(self.served[ok].sum() / total) if total > 0 else math.nan


class FluidCluster(_Lifecycle):
    """Aggregate (fluid) simulation for multi-day traces; same lifecycle as SimCluster.

    Demand is a piecewise-constant rate (``submit_rate``); ``advance`` steps time in steps of
    at most ``step_s``, split at lifecycle events (a replica Ready mid-step counts from its
    Ready time). Per step of length dt with N Ready replicas, arrivals A (the rate integrated
    over the step) and queue Q, with the step's mean tokens I (input) and O (output):

    - capacity per replica mu = ServiceProfile.capacity_rps(I, O) (the saturation rate at the
      engine's concurrency cap); served = min(Q + A, mu N dt); Q' = Q + A - served;
    - max_queue caps Q' (the excess is dropped); request_timeout_s drops the part of Q' that
      could not start within the timeout at the current rate (Q' <= timeout mu N);
    - concurrency per replica c = ServiceProfile.concurrency_for_rps(served / (N dt)), capped
      at the engine's limit; ITL(max(c, 1)) and TTFT_min(max(c, 1)) from the mean-field model
      (a request in flight is batched at least with itself);
    - wait = ((Q + Q') / 2) / (served / dt) (Little's law for the step; with nothing served
      the wait is Q' / (mu N), or the step length when N = 0); TTFT = wait + TTFT_min.

    A kill re-queues the killed replica's share of in-flight requests (c); a drained replica
    is billed until its in-flight requests would finish (the mean residence time at c, at
    most drain_s) and re-queues the share that would not finish by drain_s. Means only:
    percentiles inside a step are not modelled (``FluidResults.attainment``).
    """

    _sampling = False  # per-step rows replace the timeline

    def __init__(
        self,
        config: ClusterConfig,
        profile: ServiceProfile,
        seed: int = 0,
        start_s: float = 0.0,
        initial: Mapping[str, int] | None = None,
        step_s: float = 5.0,
    ) -> None:
        if not (math.isfinite(step_s) and step_s > 0):
            raise ValueError(f"step_s must be > 0, got {step_s}")
        self.step_s = float(step_s)
        self._q = 0.0
        self._c = 0.0  # concurrency per ready replica in the last step
        self._submitted = False
        self._bin_s = 1.0
        # per-bin Python lists (bisect and scalar arithmetic are faster than numpy here)
        self._rt: list[float] = []
        self._rate: list[float] = []
        self._cum_arr: list[float] = []  # arrivals before each bin's start
        self._mi: list[float] = []
        self._mo: list[float] = []
        self._mu: list[float] = []
        self._cmax: list[float] = []
        self._slope_ms: list[float] = []
        self._alpha_s: list[float] = []
        self._beta_s: list[float] = []
        self._cum = dict.fromkeys(("arrived", "served", "dropped", "retried", "prompt", "gen"), 0.0)
        self._rows: dict[str, list[float]] = {
            k: []
            for k in (
                "t_s",
                "dt_s",
                "arrivals",
                "served",
                "dropped",
                "retried",
                "queue",
                "wait_s",
                "ttft_s",
                "itl_s",
                "latency_s",
                "concurrency",
                *(f"ready_{p}" for p in POOLS),
                *(f"desired_{p}" for p in POOLS),
            )
        }
        self._pend_retried = 0.0
        super().__init__(
            config, profile, seed, start_s, {"on_demand": 1} if initial is None else initial
        )

    def submit_rate(
        self,
        t_s: Any,
        rate_rps: Any,
        bin_s: float,
        mean_input_tokens: Any,
        mean_output_tokens: Any,
    ) -> None:
        """Submit the demand once: bins starting at t_s ([b] sorted, spaced >= bin_s apart),
        each of length bin_s with rate_rps ([b] req/s >= 0) and mean tokens (scalars or [b]).
        Outside the bins the rate is 0 (token means: those of the last bin started)."""
        if self._submitted:
            raise RuntimeError("submit_rate() may be called once")
        t = np.asarray(t_s, dtype=np.float64)
        r = np.asarray(rate_rps, dtype=np.float64)
        problems = []
        if t.ndim != 1 or r.shape != t.shape:
            problems.append(f"t_s and rate_rps must be 1-D of one length, got {t.shape}, {r.shape}")
        if not (math.isfinite(bin_s) and bin_s > 0):
            problems.append(f"bin_s must be > 0, got {bin_s}")
        elif not problems:
            if not np.all(np.isfinite(t)) or (t.size > 1 and np.any(np.diff(t) < bin_s - 1e-9)):
                problems.append("t_s must be finite, sorted and spaced at least bin_s apart")
            if not np.all(np.isfinite(r)) or (r.size and r.min() < 0):
                problems.append("rate_rps must be finite and >= 0")
        try:
            i = np.broadcast_to(np.asarray(mean_input_tokens, dtype=np.float64), t.shape).copy()
            o = np.broadcast_to(np.asarray(mean_output_tokens, dtype=np.float64), t.shape).copy()
        except ValueError:
            problems.append("mean_input_tokens / mean_output_tokens must be scalars or [b]")
            i = o = np.zeros(0)
        else:
            if np.any(~np.isfinite(i)) or np.any(i < 0):
                problems.append("mean_input_tokens must be >= 0")
            if np.any(~np.isfinite(o)) or np.any(o < 1):
                problems.append("mean_output_tokens must be >= 1")
        if problems:
            raise ValueError("submit_rate: " + "; ".join(problems))
        self._submitted = True
        self._bin_s = float(bin_s)
        prof = self.profile
        # mean-field constants per bin (ServiceProfile.steady_state / concurrency_for_rps)
        slope = prof.a_ms_per_seq + prof.b_ms_per_1k_kv * (i + o / 2.0) / 1000.0
        slope = slope + prof.g_ms_per_prefill_token * i / o
        k = 0.5 + o
        self._rt = t.tolist()
        self._rate = r.tolist()
        self._cum_arr = np.concatenate(([0.0], np.cumsum(r * bin_s)[:-1])).tolist()
        self._mi, self._mo = i.tolist(), o.tolist()
        self._mu = [prof.capacity_rps(x, y) for x, y in zip(self._mi, self._mo, strict=True)]
        self._cmax = [prof.max_concurrency(x, y) for x, y in zip(self._mi, self._mo, strict=True)]
        self._slope_ms = slope.tolist()
        self._alpha_s = ((prof.t0_ms * k + prof.g_ms_per_prefill_token * i) / 1000.0).tolist()
        self._beta_s = (slope * k / 1000.0).tolist()

    # ---- stepping ------------------------------------------------------------------------

    def _tokens_bin(self, t: float) -> int:
        """Bin whose token means apply at t: the last bin started at or before t (the first
        bin before any has started); -1 when nothing was submitted."""
        if not self._rt:
            return -1
        return max(0, bisect.bisect_right(self._rt, t) - 1)

    def _arrived_by(self, t: float) -> float:
        """Requests arrived before t (the piecewise-constant rate integrated)."""
        j = bisect.bisect_right(self._rt, t) - 1
        if j < 0:
            return 0.0
        dt = t - self._rt[j]
        return self._cum_arr[j] + self._rate[j] * (dt if dt < self._bin_s else self._bin_s)

    def advance(self, until_s: float) -> None:
        """Step the fluid model to until_s (steps of at most step_s, split at events)."""
        if not math.isfinite(until_s):
            raise ValueError(f"until_s must be finite, got {until_s}")
        if until_s < self._now - 1e-9:
            raise ValueError(f"until_s={until_s} lies before the simulated present {self._now}")
        heap = self._heap
        while True:
            while heap and heap[0][0] <= self._now:
                t, _, _, payload = heapq.heappop(heap)
                self._handle(t, payload)
            if self._now >= until_s:
                break
            t1 = min(until_s, self._now + self.step_s)
            if heap and heap[0][0] < t1:
                t1 = heap[0][0]
            self._step(self._now, t1)
            self._now = t1

    def _step(self, t0: float, t1: float) -> None:
        dt = t1 - t0
        cfg, prof = self.config, self.profile
        j = self._tokens_bin(t0)
        if j >= 0:
            mu, cmax, mi, mo = self._mu[j], self._cmax[j], self._mi[j], self._mo[j]
            slope, alpha, beta = self._slope_ms[j], self._alpha_s[j], self._beta_s[j]
            a = self._arrived_by(t1) - self._arrived_by(t0)
        else:
            mu, cmax, mi, mo = 0.0, 0.0, 0.0, 1.0
            slope, alpha, beta = 0.0, 0.0, 0.0
            a = 0.0
        ready_n = self._ready_n
        n_ready = ready_n["spot"] + ready_n["on_demand"]
        q0 = self._q
        cap = mu * n_ready * dt
        served = q0 + a if q0 + a < cap else cap
        q1 = q0 + a - served
        dropped = 0.0
        if cfg.max_queue is not None and q1 > cfg.max_queue:
            dropped += q1 - cfg.max_queue
            q1 = float(cfg.max_queue)
        if cfg.request_timeout_s is not None:
            lim = cfg.request_timeout_s * mu * n_ready
            if q1 > lim:
                dropped += q1 - lim
                q1 = lim
        self._q = q1
        c = 0.0
        if n_ready > 0 and served > 0:
            x = served / (n_ready * dt)
            den = 1.0 - x * beta
            c = x * alpha / den if den > 0 else cmax
            if c > cmax:
                c = cmax
        self._c = c
        ce = c if c > 1.0 else 1.0
        itl = (prof.t0_ms + ce * slope) / 1e3
        ttft_min = 1.5 * itl + prof.g_ms_per_prefill_token * mi / 1e3
        if served > 0:
            wait = 0.5 * (q0 + q1) / (served / dt)
        elif n_ready > 0 and mu > 0:
            wait = q1 / (mu * n_ready)
        else:
            wait = dt if q1 > 0 else 0.0
        ttft = wait + ttft_min
        retried = self._pend_retried
        self._pend_retried = 0.0
        rows = self._rows
        rows["t_s"].append(t0)
        rows["dt_s"].append(dt)
        rows["arrivals"].append(a)
        rows["served"].append(served)
        rows["dropped"].append(dropped)
        rows["retried"].append(retried)
        rows["queue"].append(q1)
        rows["wait_s"].append(wait)
        rows["ttft_s"].append(ttft)
        rows["itl_s"].append(itl)
        rows["latency_s"].append(ttft + (mo - 1.0) * itl)
        rows["concurrency"].append(c)
        desired = self._desired
        for p in POOLS:
            rows["ready_" + p].append(ready_n[p])
            rows["desired_" + p].append(desired[p])
        cum = self._cum
        cum["arrived"] += a
        cum["served"] += served
        cum["dropped"] += dropped
        cum["retried"] += retried
        cum["prompt"] += served * mi
        cum["gen"] += served * mo

    # ---- lifecycle hooks -----------------------------------------------------------------

    def _on_ready(self, pod: _Pod, now_s: float) -> None:
        pass

    def _means(self) -> tuple[float, float]:
        j = self._tokens_bin(self._now)
        return (self._mi[j], self._mo[j]) if j >= 0 else (0.0, 1.0)

    def _residence_s(self) -> float:
        mi, mo = self._means()
        ss = self.profile.steady_state(max(self._c, 1.0), mi, mo)
        return (ss.ttft_ms + (mo - 1.0) * ss.itl_ms) / 1e3

    def _on_drain(self, pod: _Pod, now_s: float) -> None:
        if self._c <= 0.0:
            self._gone(pod, now_s)
            return
        r = self._residence_s()
        d = self.config.drain_s
        if r > d:
            # the share of in-flight work that would not finish by the drain deadline
            back = self._c * (1.0 - d / r)
            self._q += back
            self._pend_retried += back
        self._push(now_s + min(r, d), (_EV_DRAIN_END, pod))

    def _on_kill(self, pod: _Pod, now_s: float) -> None:
        if pod.state == _DRAINING:
            return  # its re-queued share was accounted when it started draining
        self._q += self._c
        self._pend_retried += self._c

    def _queue_len(self) -> float:
        return self._q

    def _running(self) -> float:
        return self._c * (self._ready_n["spot"] + self._ready_n["on_demand"])

    # ---- observation ---------------------------------------------------------------------

    def gauges(self) -> dict[str, float]:
        """Now: queue, running (= streams), kv_usage (mean context / max_kv_tokens),
        oldest_wait_s (age of the oldest queued request, _oldest_wait_s)."""
        mi, mo = self._means()
        running = self._running()
        return {
            "queue": self._q,
            "running": running,
            "streams": running,
            "kv_usage": min(1.0, self._c * (mi + mo / 2.0) / self.profile.max_kv_tokens),
            "oldest_wait_s": self._oldest_wait_s(),
        }

    def _oldest_wait_s(self) -> float:
        """Age of the oldest queued request, FIFO: everything that ever left the queue (served,
        dropped, net of re-queues) is the first A(now) - Q arrivals, so the oldest one still
        waiting arrived at A^-1(A(now) - Q) (A: cumulative arrivals, piecewise linear).
        Re-queued work counts as the oldest, and a back-of-queue drop (max_queue) as if it had
        left from the front: both are means-only approximations, like the rest of the model."""
        q = self._q
        if q <= 1e-9 or not self._rt:
            return 0.0
        x = self._arrived_by(self._now) - q  # arrivals ahead of the oldest waiting one
        cum = self._cum_arr
        j = bisect.bisect_right(cum, x) - 1
        if j < 0:
            tau = self._rt[0]
        else:
            rate = self._rate[j]
            into = (x - cum[j]) / rate if rate > 0 else 0.0
            tau = self._rt[j] + min(into, self._bin_s)
        return max(0.0, self._now - tau)

    def counters(self) -> dict[str, float]:
        """Cumulative: requests_total, completed_total (entered service), dropped_total,
        prompt_tokens_total, generation_tokens_total (served * mean tokens)."""
        c = self._cum
        return {
            "requests_total": c["arrived"],
            "completed_total": c["served"],
            "dropped_total": c["dropped"],
            "prompt_tokens_total": c["prompt"],
            "generation_tokens_total": c["gen"],
        }

    def results(self) -> FluidResults:
        """Per-step rows so far and billing up to now."""
        r = {k: np.asarray(v, dtype=np.float64) for k, v in self._rows.items()}
        gpu_s, cost = self._billing()
        return FluidResults(
            t_s=r["t_s"],
            dt_s=r["dt_s"],
            arrivals=r["arrivals"],
            served=r["served"],
            dropped=r["dropped"],
            retried=r["retried"],
            queue=r["queue"],
            wait_s=r["wait_s"],
            ttft_s=r["ttft_s"],
            itl_s=r["itl_s"],
            latency_s=r["latency_s"],
            concurrency=r["concurrency"],
            ready={p: r[f"ready_{p}"] for p in POOLS},
            desired={p: r[f"desired_{p}"] for p in POOLS},
            gpu_seconds=gpu_s,
            cost_usd=cost,
            scale_events=self._scale_events,
            interruptions=self._interruptions,
        )
