"""The simulated cluster: service exactness, queueing theory, lifecycle, spot, billing, fluid."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from simulator.cluster import ClusterConfig, FluidCluster, SimCluster
from simulator.service import ServiceProfile

DEFAULT = ServiceProfile.default()
NO_SPOT = ClusterConfig(spot_hazard_per_hour=0.0)
# deterministic cold starts where a test needs exact ready times
FIXED_COLD = ClusterConfig(
    spot_hazard_per_hour=0.0, cold_start_median_s=300.0, cold_start_p95_s=300.0
)


def _poisson(rate_rps: float, n: int, seed: int, t0_s: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return t0_s + np.cumsum(rng.exponential(1.0 / rate_rps, n))


def _conv_tokens(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed + 1000)
    inp = np.clip(np.round(rng.lognormal(np.log(1020), 0.6, n)), 1, 6000).astype(np.int64)
    out = np.clip(np.round(rng.lognormal(np.log(129), 0.9, n)), 1, 1000).astype(np.int64)
    return inp, out


# ---- exactness against per-iteration stepping ---------------------------------------------


def _step_one_replica(
    profile: ServiceProfile, arr: list[float], inp: list[int], out: list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Per-iteration stepping of one replica Ready at t = 0, with the rules in the
    cluster module docstring: FCFS, a request joins the prefill of the first boundary at or
    after its arrival if slots, KV reservation and the iteration's token budget allow
    (head-of-line otherwise), first token at the end of that iteration, then one token per
    iteration. Prompts must fit one iteration's budget (no chunking here)."""
    t0, a = profile.t0_ms / 1e3, profile.a_ms_per_seq / 1e3
    b, g = profile.b_ms_per_1k_kv / 1e6, profile.g_ms_per_prefill_token / 1e3
    n = len(arr)
    first, fin = np.full(n, np.nan), np.full(n, np.nan)
    running: list[list[int]] = []  # [request, tokens left, context]
    waiting: list[int] = []
    i, t = 0, 0.0
    while i < n or running or waiting:
        if not running and not waiting:
            t = max(t, arr[i])
        while i < n and arr[i] <= t:
            waiting.append(i)
            i += 1
        n_dec = len(running)
        beta = max(1, profile.max_batched_tokens - n_dec)
        kres = sum(inp[x[0]] + out[x[0]] for x in running)
        group: list[int] = []
        p = 0
        for r in waiting:
            if n_dec + len(group) >= profile.max_num_seqs:
                break
            if kres + inp[r] + out[r] > profile.max_kv_tokens:
                break
            if group and p + inp[r] > beta:
                break
            assert inp[r] <= beta, "the reference does not chunk prompts"
            group.append(r)
            p += inp[r]
            kres += inp[r] + out[r]
        waiting = waiting[len(group) :]
        kv = sum(x[2] for x in running)
        t += t0 + a * n_dec + b * kv + g * p
        nxt = []
        for x in running:
            x[1] -= 1
            x[2] += 1
            if x[1] == 0:
                fin[x[0]] = t
            else:
                nxt.append(x)
        for r in group:
            first[r] = t
            if out[r] == 1:
                fin[r] = t
            else:
                nxt.append([r, out[r] - 1, inp[r] + 1])
        running = nxt
    return first, fin


@pytest.mark.parametrize(
    ("max_num_seqs", "max_kv_tokens", "rate_rps"),
    [
        pytest.param(256, 400_000, 12.0, id="no-limits-binding"),
        # slots bind: requests queue at the gateway and join at completion boundaries
        pytest.param(8, 400_000, 12.0, id="slot-limit-queues"),
        # the KV reservation binds (8 x ~2600 tokens)
        pytest.param(256, 20_000, 12.0, id="kv-limit-queues"),
    ],
)
def test_event_driven_replica_equals_per_iteration_stepping(
    max_num_seqs: int, max_kv_tokens: int, rate_rps: float
) -> None:
    profile = ServiceProfile(
        **{**DEFAULT.to_dict(), "max_num_seqs": max_num_seqs, "max_kv_tokens": max_kv_tokens}
    )
    n = 3000
    rng = np.random.default_rng(70)
    arr = _poisson(rate_rps, n, seed=7)
    inp = rng.integers(1, 2500, n)  # several prompts share an iteration's 8192 budget
    out = rng.integers(1, 400, n)
    c = SimCluster(NO_SPOT, profile, initial={"on_demand": 1})
    c.submit(arr, inp, out)
    c.advance(float(arr[-1]) + 3600)
    r = c.results()
    first, fin = _step_one_replica(profile, arr.tolist(), inp.tolist(), out.tolist())
    assert np.isfinite(r.finish_s).all()
    np.testing.assert_allclose(r.first_token_s, first, rtol=0, atol=1e-9)
    np.testing.assert_allclose(r.finish_s, fin, rtol=0, atol=1e-9)


def test_long_prompt_is_prefilled_in_chunks_of_the_token_budget() -> None:
    # 20,000 prompt tokens with an 8,192-token budget on an idle replica: ceil(20000/8192)
    # = 3 iterations of t0 plus g * 20000 of prefill, then 9 decode iterations whose
    # context grows from 20,001 tokens: (t0 + a + b (20001 + j) / 1000) for j = 0..8
    c = SimCluster(NO_SPOT, DEFAULT, initial={"on_demand": 1})
    c.submit([1.0], [20_000], [10])
    c.advance(100.0)
    r = c.results()
    ttft_ms = 3 * 7.0 + 0.028 * 20_000
    decode_ms = sum(7.0 + 0.020 + 0.065 * (20_001 + j) / 1000 for j in range(9))
    assert r.first_token_s[0] == pytest.approx(1.0 + ttft_ms / 1e3, rel=1e-12)
    assert r.finish_s[0] == pytest.approx(1.0 + (ttft_ms + decode_ms) / 1e3, rel=1e-12)
    assert r.itl_s[0] == pytest.approx(decode_ms / 9 / 1e3, rel=1e-12)


def test_open_loop_itl_matches_the_mean_field_model() -> None:
    # azure-conv tokens at 12.9 req/s on one replica: about 64 in flight, ITL ~23.3 ms
    n = 20_000
    arr = _poisson(12.9, n, seed=3)
    c = SimCluster(NO_SPOT, DEFAULT, initial={"on_demand": 1})
    c.submit(arr, np.full(n, 1155), np.full(n, 211))
    c.advance(float(arr[-1]) + 600)
    r = c.results()
    steady = slice(n // 10, None)
    conc = 12.9 * float(np.mean(r.latency_s[steady]))  # Little's law
    assert conc == pytest.approx(64, rel=0.08)
    model = DEFAULT.steady_state(conc, 1155, 211)
    assert float(np.mean(r.itl_s[steady])) * 1e3 == pytest.approx(model.itl_ms, rel=0.03)


# ---- queueing theory ---------------------------------------------------------------------


def _erlang_c(servers: int, load: float) -> float:
    top = load**servers / math.factorial(servers) * servers / (servers - load)
    return top / (sum(load**k / math.factorial(k) for k in range(servers)) + top)


def test_constant_rate_single_seat_replicas_form_an_mmc_queue() -> None:
    # a = b = g = 0, one sequence per replica: service = output_tokens * t0, and with
    # geometric outputs (mean 1000, CV^2 = 0.999) exponential with mean 1 s: M/M/4.
    profile = ServiceProfile(
        "mmc",
        "none",
        "none",
        "none",
        "2026",
        t0_ms=1.0,
        a_ms_per_seq=0.0,
        b_ms_per_1k_kv=0.0,
        g_ms_per_prefill_token=0.0,
        max_num_seqs=1,
    )
    servers, lam, n = 4, 3.2, 200_000
    rng = np.random.default_rng(55)  # not the arrivals' seed: service must be independent
    arr = _poisson(lam, n, seed=5)
    c = SimCluster(NO_SPOT, profile, initial={"on_demand": servers})
    c.submit(arr, np.ones(n, dtype=np.int64), rng.geometric(1 / 1000, n))
    c.advance(float(arr[-1]) + 3600)
    r = c.results()
    wait = r.first_token_s - r.arrival_s - 0.001  # minus the one-token prefill iteration
    p_wait = _erlang_c(servers, lam)  # 0.596
    # P(W > t) = C exp(-(c mu - lambda) t)  =>  P95 = ln(C / 0.05) / (c mu - lambda) = 3.10 s
    p95 = math.log(p_wait / 0.05) / (servers - lam)
    assert float(np.mean(wait > 1e-9)) == pytest.approx(p_wait, abs=0.015)
    assert float(np.quantile(wait, 0.95)) == pytest.approx(p95, rel=0.05)
    assert float(np.mean(wait > 1.0)) == pytest.approx(p_wait * math.exp(-0.8), abs=0.015)


# ---- conservation and determinism --------------------------------------------------------


def _churn_run(seed: int) -> tuple[SimCluster, Any]:
    """Spot kills (hazard and schedule), scale-ups and scale-downs with short drains."""
    cfg = ClusterConfig(
        spot_hazard_per_hour=3.0,
        spot_notice_s=30.0,
        spot_interruptions=None,
        drain_s=5.0,
        cold_start_median_s=60.0,
        cold_start_p95_s=120.0,
        warm_start_s=10.0,
    )
    n = 20_000
    arr = _poisson(40.0, n, seed=seed)
    inp, out = _conv_tokens(n, seed)
    c = SimCluster(cfg, DEFAULT, seed=seed, initial={"spot": 3, "on_demand": 1, "warm": 1})
    c.submit(arr, inp, out)
    rng = np.random.default_rng(seed + 7)
    t = 0.0
    while t < arr[-1]:
        t += 30.0
        c.advance(t)
        c.set_desired("spot", int(rng.integers(0, 5)), t)
        c.set_desired("on_demand", int(rng.integers(1, 3)), t)
        c.set_desired("warm", int(rng.integers(0, 2)), t)
    c.set_desired("on_demand", 4, t)
    c.advance(t + 7200)
    return c, c.results()


def test_every_request_completes_or_is_dropped_under_churn() -> None:
    c, r = _churn_run(seed=1)
    n = r.arrival_s.size
    assert r.interruptions > 0 and r.retried.sum() > 0 and r.scale_events > 10
    done = np.isfinite(r.finish_s)
    assert np.all(done ^ r.dropped)  # each request exactly one of the two
    assert not r.dropped.any()  # nothing bounds the queue here
    assert np.all(r.first_token_s[done] >= r.arrival_s[done])
    assert np.all(r.finish_s[done] >= r.first_token_s[done])
    k = c.counters()
    assert k["requests_total"] == n
    assert k["completed_total"] + k["dropped_total"] == n
    g = c.gauges()
    assert g["queue"] == 0 and g["running"] == 0


def test_same_seed_same_run_other_seed_other_run() -> None:
    _, r1 = _churn_run(seed=2)
    _, r2 = _churn_run(seed=2)
    np.testing.assert_array_equal(r1.finish_s, r2.finish_s)
    np.testing.assert_array_equal(r1.retried, r2.retried)
    assert r1.gpu_seconds == r2.gpu_seconds and r1.interruptions == r2.interruptions
    _, r3 = _churn_run(seed=3)
    assert r3.gpu_seconds != r1.gpu_seconds


# ---- spot interruptions and shortages ----------------------------------------------------


def test_interruption_notice_marks_at_risk_then_kill_requeues_in_flight_work() -> None:
    cfg = ClusterConfig(
        spot_interruptions=((100.0, 1),),
        spot_notice_s=120.0,
        zones=3,
        cold_start_median_s=300.0,
        cold_start_p95_s=300.0,
    )
    n = 6000
    arr = _poisson(20.0, n, seed=4)
    inp, out = _conv_tokens(n, seed=4)
    c = SimCluster(cfg, DEFAULT, initial={"spot": 3, "on_demand": 0})
    c.submit(arr, inp, out)
    assert [p["zone"] for p in c.pods("spot")] == [0, 1, 2]  # round-robin
    f = c.facts(99.0, spot_pending_limit_s=60)
    assert f["spot_at_risk"] == 0
    f = c.facts(150.0, spot_pending_limit_s=60)
    assert f["spot_at_risk"] == 1 and f["ready_spot"] == 3  # notice: still serving
    f = c.facts(219.9, spot_pending_limit_s=60)
    assert f["spot_at_risk"] == 1 and f["ready_spot"] == 3
    f = c.facts(220.1, spot_pending_limit_s=60)  # killed at 100 + 120
    assert f["spot_at_risk"] == 0 and f["ready_spot"] == 2 and f["current_spot"] == 3
    states = sorted(p["state"] for p in c.pods("spot"))
    assert states == ["Ready", "Ready", "Starting"]  # the Deployment re-created it
    assert c.facts(519.9, 60)["ready_spot"] == 2
    assert c.facts(520.2, 60)["ready_spot"] == 3  # cold start of 300 s
    c.advance(float(arr[-1]) + 3600)
    r = c.results()
    assert r.interruptions == 1
    again = r.retried > 0
    # the killed replica held about a third of the ~20 req/s x ~4 s in flight
    assert 5 <= again.sum() <= 60
    assert np.all(r.retried[again] == 1)
    assert np.all(r.arrival_s[again] < 220.0)
    # some of them were routed to the replica during its notice: it still took requests
    assert np.any(r.arrival_s[again] > 100.0)
    assert np.all(r.first_token_s[again] > 220.0)  # the successful attempt began after
    assert np.all(np.isfinite(r.finish_s))


def test_zone_correlated_hazard_takes_the_whole_zone_within_minutes() -> None:
    # a long notice keeps noticed pods visible while the zone event spreads
    cfg = ClusterConfig(
        spot_hazard_per_hour=0.5, zones=2, zone_event_spread_s=180.0, spot_notice_s=900.0
    )
    c = SimCluster(cfg, DEFAULT, seed=11, initial={"spot": 8, "on_demand": 0})
    t = 0.0
    while t < 8 * 3600 and not any(p["notice_s"] is not None for p in c.pods("spot")):
        t += 10.0
        c.advance(t)
    assert t < 8 * 3600, "no zone event in 8 h at 0.5 /h per zone"
    c.advance(t + 181.0)
    noticed = [p for p in c.pods("spot") if p["notice_s"] is not None]
    zones = {p["zone"] for p in noticed}
    assert len(zones) == 1  # one zone's event (the other zone is untouched)
    # every spot pod of that zone (4 of 8) got its notice, within the 180 s spread
    assert len(noticed) == 4
    times = [p["notice_s"] for p in noticed]
    assert max(times) - min(times) <= 180.0
    assert c.facts(t + 181.0, 60)["spot_at_risk"] == 4


def test_independent_hazard_rate_matches_the_configured_rate() -> None:
    cfg = ClusterConfig(
        spot_hazard_per_hour=0.5,
        zone_correlated=False,
        spot_notice_s=0.0,
        cold_start_median_s=1.0,
        cold_start_p95_s=1.0,
    )
    c = SimCluster(cfg, DEFAULT, seed=3, initial={"spot": 20, "on_demand": 0})
    hours = 40.0
    c.advance(hours * 3600)
    # 20 replicas x 40 h x 0.5 /h = 400 expected kills (Poisson sd 20)
    assert c.results().interruptions == pytest.approx(400, abs=60)


def test_shortage_keeps_spot_pods_pending_unbilled_and_flags_them() -> None:
    cfg = ClusterConfig(
        spot_hazard_per_hour=0.0,
        spot_shortages=((100.0, 400.0),),
        cold_start_median_s=300.0,
        cold_start_p95_s=300.0,
    )
    c = SimCluster(cfg, DEFAULT, initial={"on_demand": 1})
    c.set_desired("spot", 2, 150.0)
    assert [p["state"] for p in c.pods("spot")] == ["Pending", "Pending"]
    assert c.facts(170.0, spot_pending_limit_s=30.0)["spot_pending_too_long"] == 0  # 20 s
    f = c.facts(181.0, spot_pending_limit_s=30.0)
    assert f["spot_pending_too_long"] == 2 and f["current_spot"] == 2 and f["ready_spot"] == 0
    c.advance(400.5)  # the window closed at 400: cold starts began
    assert [p["state"] for p in c.pods("spot")] == ["Starting", "Starting"]
    assert c.facts(401.0, 30.0)["spot_pending_too_long"] == 0
    assert c.facts(700.5, 30.0)["ready_spot"] == 2
    c.advance(1000.0)
    r = c.results()
    # billed from 400 (node boot), not from 150: 2 x 600 s
    assert r.gpu_seconds["spot"] == pytest.approx(2 * 600.0)


def test_a_shortage_keeps_spot_pods_pending_even_with_a_free_warm_slot() -> None:
    cfg = ClusterConfig(spot_hazard_per_hour=0.0, spot_shortages=((0.0, 500.0),))
    c = SimCluster(cfg, DEFAULT, initial={"on_demand": 1, "warm": 1})
    c.set_desired("spot", 1, 10.0)
    assert c.pods("spot")[0]["state"] == "Pending"
    assert c.facts(10.0, 60)["ready_warm"] == 1  # the slot is kept
    c.set_desired("on_demand", 2, 20.0)  # on-demand is not short: takes the slot
    assert c.pods("on_demand")[1]["warm_start"]


def test_scale_down_cancels_pending_pods_first() -> None:
    cfg = ClusterConfig(spot_hazard_per_hour=0.0, spot_shortages=((0.0, 1000.0),))
    c = SimCluster(cfg, DEFAULT, initial={"on_demand": 1})
    c.set_desired("spot", 3, 10.0)
    c.set_desired("spot", 1, 20.0)
    assert [p["state"] for p in c.pods("spot")] == ["Pending"]


# ---- lead times --------------------------------------------------------------------------


def test_warm_slot_gives_a_warm_start_and_the_placeholder_is_recreated_cold() -> None:
    c = SimCluster(FIXED_COLD, DEFAULT, initial={"on_demand": 1, "warm": 1})
    c.set_desired("on_demand", 2, 10.0)
    f = c.facts(10.0, 60)
    assert f["ready_warm"] == 0 and f["current_warm"] == 1  # evicted, desired unchanged
    assert c.pods("warm")[0]["state"] == "Starting"  # re-created, cold
    assert c.pods("on_demand")[1]["warm_start"]
    assert c.facts(54.9, 60)["ready_on_demand"] == 1
    assert c.facts(55.1, 60)["ready_on_demand"] == 2  # 10 + 45 s
    # no free slot now: the next replica starts cold (300 s)
    c.set_desired("on_demand", 3, 60.0)
    assert not c.pods("on_demand")[2]["warm_start"]
    assert c.facts(359.9, 60)["ready_on_demand"] == 2
    f = c.facts(360.1, 60)
    assert f["ready_on_demand"] == 3 and f["ready_warm"] == 1  # placeholder back at 310


def test_cold_starts_follow_the_lognormal_median_and_p95() -> None:
    cfg = ClusterConfig(spot_hazard_per_hour=0.0)  # median 300 s, p95 600 s
    c = SimCluster(cfg, DEFAULT, seed=9, initial={"on_demand": 0})
    c.set_desired("on_demand", 2000, 0.0)
    assert c.facts(300.0, 60)["ready_on_demand"] / 2000 == pytest.approx(0.50, abs=0.03)
    assert c.facts(600.0, 60)["ready_on_demand"] / 2000 == pytest.approx(0.95, abs=0.015)


# ---- draining, queue bounds --------------------------------------------------------------


def test_scale_down_drains_in_flight_work_and_requeues_what_outlives_drain_s() -> None:
    n = 400
    arr = np.linspace(0.0, 1.0, n)  # a burst in the first second
    # long generations (~30 s); 200 per replica fit the KV cache (200 x 1600 tokens)
    out = np.full(n, 1500, dtype=np.int64)
    cfg = ClusterConfig(
        spot_hazard_per_hour=0.0, drain_s=10.0, cold_start_median_s=300.0, cold_start_p95_s=300.0
    )
    c = SimCluster(cfg, DEFAULT, initial={"on_demand": 2})
    c.submit(arr, np.full(n, 100), out)
    c.advance(5.0)
    running_before = c.gauges()["running"]
    assert running_before == n
    c.set_desired("on_demand", 1, 5.0)
    f = c.facts(5.0, 60)
    assert f["current_on_demand"] == 1 and f["ready_on_demand"] == 1
    assert c.gauges()["running"] == n  # the draining replica still holds its work
    c.advance(15.5)  # drain deadline at 15 s: its unfinished requests are re-queued
    r = c.results()
    assert r.retried.sum() == n // 2
    assert c.gauges()["queue"] > 0
    c.advance(3600.0)
    r = c.results()
    assert np.isfinite(r.finish_s).all()
    # the drained replica was billed until its deadline: 15 s, plus 1 h for the other
    assert r.gpu_seconds["on_demand"] == pytest.approx(3600.0 + 15.0)


def test_idle_replica_scaled_down_stops_billing_at_once() -> None:
    c = SimCluster(NO_SPOT, DEFAULT, initial={"on_demand": 3})
    c.set_desired("on_demand", 1, 600.0)
    c.advance(3600.0)
    # 3 x 600 s + 1 x 3000 s
    assert c.results().gpu_seconds["on_demand"] == pytest.approx(3 * 600.0 + 3000.0)


def test_max_queue_and_request_timeout_drop_and_count() -> None:
    n = 2000
    arr = np.linspace(0.0, 2.0, n)
    cfg = ClusterConfig(spot_hazard_per_hour=0.0, max_queue=100)
    c = SimCluster(
        cfg, ServiceProfile(**{**DEFAULT.to_dict(), "max_num_seqs": 16}), initial={"on_demand": 1}
    )
    c.submit(arr, np.full(n, 500), np.full(n, 50))
    c.advance(2.0)
    k = c.counters()
    assert c.gauges()["queue"] == 100
    assert k["dropped_total"] > 0
    c.advance(1000.0)
    r = c.results()
    assert r.dropped.sum() == c.counters()["dropped_total"]
    assert np.all(np.isnan(r.finish_s[r.dropped]))
    assert (~r.dropped).sum() == np.isfinite(r.finish_s).sum()

    cfg = ClusterConfig(spot_hazard_per_hour=0.0, request_timeout_s=3.0)
    c = SimCluster(
        cfg, ServiceProfile(**{**DEFAULT.to_dict(), "max_num_seqs": 16}), initial={"on_demand": 1}
    )
    c.submit(arr, np.full(n, 500), np.full(n, 50))
    c.advance(1000.0)
    r = c.results()
    assert 0 < r.dropped.sum() < n
    served = ~r.dropped
    # whoever was served started within the timeout (+ one prefill iteration)
    assert np.all(r.first_token_s[served] - r.arrival_s[served] < 3.0 + 1.0)


# ---- billing -----------------------------------------------------------------------------


def test_billing_arithmetic() -> None:
    c = SimCluster(NO_SPOT, DEFAULT, initial={"on_demand": 2})
    c.advance(3600.0)
    r = c.results()
    assert r.cost_usd["on_demand"] == pytest.approx(13.8)  # 2 x 1 h x $6.9
    assert r.gpu_seconds["on_demand"] == pytest.approx(7200.0)

    cfg = ClusterConfig(spot_hazard_per_hour=0.0, gpus_per_replica=4, spot_price_ratio=0.4)
    c = SimCluster(cfg, DEFAULT, initial={"spot": 1, "on_demand": 0, "warm": 1})
    c.advance(1800.0)
    r = c.results()
    assert r.gpu_seconds["spot"] == pytest.approx(4 * 1800.0)
    assert r.cost_usd["spot"] == pytest.approx(0.5 * 4 * 6.9 * 0.4)  # $5.52
    assert r.cost_usd["warm"] == pytest.approx(0.5 * 4 * 6.9)  # placeholders: on-demand
    assert r.total_cost_usd == pytest.approx(5.52 + 13.8)


def test_cold_start_bills_boot_time_and_warm_start_has_no_double_billing() -> None:
    c = SimCluster(FIXED_COLD, DEFAULT, initial={"on_demand": 0})
    c.set_desired("on_demand", 1, 0.0)  # cold: node boots 300 s, billed from 0
    c.advance(1000.0)
    assert c.results().gpu_seconds["on_demand"] == pytest.approx(1000.0)

    c = SimCluster(FIXED_COLD, DEFAULT, initial={"on_demand": 0, "warm": 1})
    c.set_desired("on_demand", 1, 100.0)  # takes the slot at 100
    c.advance(1000.0)
    r = c.results()
    assert r.gpu_seconds["on_demand"] == pytest.approx(900.0)
    # placeholder 0-100, then the re-created placeholder 100-1000 (cold, billed from start)
    assert r.gpu_seconds["warm"] == pytest.approx(100.0 + 900.0)


# ---- observation -------------------------------------------------------------------------


def test_facts_gauges_counters_and_timeline() -> None:
    n = 3000
    arr = _poisson(30.0, n, seed=2)
    inp, out = _conv_tokens(n, seed=2)
    c = SimCluster(NO_SPOT, DEFAULT, initial={"on_demand": 3})
    c.submit(arr, inp, out)
    c.advance(60.0)
    f = c.facts(60.0, 60)
    assert set(f) == {
        "current_spot",
        "current_on_demand",
        "current_warm",
        "ready_spot",
        "ready_on_demand",
        "ready_warm",
        "spot_at_risk",
        "spot_pending_too_long",
    }
    g = c.gauges()
    assert g["streams"] == g["running"] > 0 and 0 < g["kv_usage"] < 1
    k = c.counters()
    arrived = int(np.searchsorted(arr, 60.0, side="right"))
    assert k["requests_total"] == arrived
    assert k["prompt_tokens_total"] >= inp[: int(k["completed_total"])].sum() * 0.5
    # generated tokens of completed requests are a lower bound, plus at most the in-flight
    assert k["generation_tokens_total"] >= out[r_done(c)].sum()
    c.advance(float(arr[-1]) + 600)
    k = c.counters()
    assert k["completed_total"] == n
    assert k["generation_tokens_total"] == out.sum()
    assert k["prompt_tokens_total"] == inp.sum()
    tl = c.results().timeline
    assert np.allclose(np.diff(tl["t_s"]), 5.0)
    assert tl["ready_on_demand"][0] == 3 and tl["desired_on_demand"][-1] == 3
    # arrivals per second integrate back to the arrival count
    assert tl["arrivals_rps"].sum() * 5.0 == n
    assert tl["running"].max() > 0


def r_done(c: SimCluster) -> np.ndarray:
    return np.isfinite(c.results().finish_s)


def test_bad_inputs_are_named() -> None:
    with pytest.raises(ValueError) as e:
        ClusterConfig(warm_start_s=-1, zones=0, spot_shortages=((5.0, 1.0),))
    msg = str(e.value)
    assert "warm_start_s" in msg and "zones" in msg and "spot_shortages[0]" in msg
    c = SimCluster(NO_SPOT, DEFAULT)
    with pytest.raises(ValueError, match="not sorted"):
        c.submit([1.0, 0.5], [1, 1], [1, 1])
    with pytest.raises(ValueError, match="output_tokens must be >= 1"):
        c.submit([1.0, 2.0], [1, 1], [1, 0])
    with pytest.raises(ValueError, match="pool"):
        c.set_desired("gpu", 1, 0.0)
    with pytest.raises(ValueError, match="before the simulated present"):
        c.advance(10.0)
        c.set_desired("spot", 1, 5.0)
    with pytest.raises(ValueError, match="initial"):
        SimCluster(NO_SPOT, DEFAULT, initial={"ondemand": 1})


def test_requests_too_large_for_any_replica_are_dropped() -> None:
    profile = ServiceProfile(**{**DEFAULT.to_dict(), "max_kv_tokens": 1000})
    c = SimCluster(NO_SPOT, profile)
    c.submit([0.0, 0.1], [500, 900], [100, 200])
    c.advance(100.0)
    r = c.results()
    assert r.dropped.tolist() == [False, True]


# ---- fluid mode --------------------------------------------------------------------------


def test_fluid_conserves_requests_and_matches_the_mean_field_when_not_saturated() -> None:
    c = FluidCluster(NO_SPOT, DEFAULT, initial={"on_demand": 4}, step_s=5.0)
    t = np.arange(0.0, 3600.0, 60.0)
    c.submit_rate(t, np.full(t.size, 30.0), 60.0, 1155, 211)
    c.advance(3600.0)
    r = c.results()
    assert r.arrivals.sum() == pytest.approx(30.0 * 3600)
    assert r.arrivals.sum() == pytest.approx(r.served.sum() + r.dropped.sum() + r.queue[-1])
    assert r.queue.max() == pytest.approx(0.0, abs=1e-9)
    # 7.5 req/s per replica -> the mean-field concurrency and ITL
    conc = DEFAULT.concurrency_for_rps(7.5, 1155, 211)
    assert r.concurrency[-1] == pytest.approx(conc)
    assert r.itl_s[-1] * 1e3 == pytest.approx(DEFAULT.steady_state(conc, 1155, 211).itl_ms)
    assert r.gpu_seconds["on_demand"] == pytest.approx(4 * 3600.0)
    k = c.counters()
    assert k["requests_total"] == pytest.approx(108_000)


def test_fluid_queue_grows_when_overloaded_and_drains_after_scale_up() -> None:
    c = FluidCluster(FIXED_COLD, DEFAULT, initial={"on_demand": 1}, step_s=5.0)
    c.submit_rate([0.0], [30.0], 3600.0, 1155, 211)
    c.advance(600.0)
    mu = DEFAULT.capacity_rps(1155, 211)  # 16.7 req/s per replica
    q = c.gauges()["queue"]
    assert q == pytest.approx((30.0 - mu) * 600.0, rel=1e-6)
    c.set_desired("on_demand", 3, 600.0)  # ready at 900 s (cold start)
    c.advance(900.0)
    assert c.gauges()["queue"] > q
    c.advance(3600.0)
    r = c.results()
    assert r.queue[-1] == pytest.approx(0.0, abs=1e-6)
    # requests served while the queue was long waited: Little's law, minutes
    assert r.wait_s.max() > 60.0
    assert 0.0 < r.attainment(ttft_slo_s=1.0) < 1.0


def test_oldest_wait_is_the_age_of_the_queue_head_since_arrival() -> None:
    c = SimCluster(FIXED_COLD, DEFAULT, initial={"on_demand": 0})
    c.submit(np.array([1.0, 2.0, 3.0]), np.full(3, 100), np.full(3, 10))
    c.advance(10.0)
    g = c.gauges()
    assert g["queue"] == 3 and g["oldest_wait_s"] == pytest.approx(9.0)
    c.set_desired("on_demand", 1, 10.0)  # ready at 310 s: all served within a second
    c.advance(320.0)
    assert c.gauges()["queue"] == 0 and c.gauges()["oldest_wait_s"] == 0.0


def test_fluid_oldest_wait_inverts_the_cumulative_arrivals() -> None:
    mu = DEFAULT.capacity_rps(1155, 211)  # 16.7 req/s, one replica from the start
    c = FluidCluster(FIXED_COLD, DEFAULT, initial={"on_demand": 1}, step_s=5.0)
    # 40 req/s for a minute, a silent minute, 40 req/s again
    c.submit_rate([0.0, 60.0, 120.0], [40.0, 0.0, 40.0], 60.0, 1155, 211)
    c.advance(120.0)
    # FIFO: the first 120 * mu arrivals were served; the next arrived at 120 * mu / 40
    assert c.gauges()["oldest_wait_s"] == pytest.approx(120.0 - 120.0 * mu / 40.0, rel=1e-6)
    c.advance(200.0)
    # 200 * mu served > the 2,400 of the first minute: the oldest arrived after the gap
    tau = 120.0 + (200.0 * mu - 2400.0) / 40.0
    assert c.gauges()["oldest_wait_s"] == pytest.approx(200.0 - tau, rel=1e-6)
    c.set_desired("on_demand", 8, 200.0)  # ready at 500 s, the queue drains
    c.advance(600.0)
    assert c.gauges()["queue"] == pytest.approx(0.0, abs=1e-9)
    assert c.gauges()["oldest_wait_s"] == 0.0


def test_fluid_and_per_request_agree_on_a_steady_poisson_load() -> None:
    n = 30_000
    rate = 40.0
    arr = _poisson(rate, n, seed=8)
    inp, out = _conv_tokens(n, seed=8)
    sim = SimCluster(NO_SPOT, DEFAULT, initial={"on_demand": 4})
    sim.submit(arr, inp, out)
    horizon = float(arr[-1])
    sim.advance(horizon)
    rs = sim.results()
    flu = FluidCluster(NO_SPOT, DEFAULT, initial={"on_demand": 4})
    flu.submit_rate([0.0], [rate], horizon, float(inp.mean()), float(out.mean()))
    flu.advance(horizon)
    rf = flu.results()
    assert rf.gpu_seconds == pytest.approx(rs.gpu_seconds)
    done = np.isfinite(rs.itl_s)
    itl_sim = float(np.sum(rs.itl_s[done] * (out[done] - 1)) / np.sum(out[done] - 1))
    # token-weighted ITL of the simulation vs the fluid mean field: same model, same load
    assert float(np.mean(rf.itl_s)) == pytest.approx(itl_sim, rel=0.15)
