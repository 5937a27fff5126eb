"""The cost oracle: hand-computable schedules, the spot shortest path, and the bound it sets."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from simulator.oracle import (
    SpotAvailability,
    demand_per_tick,
    required_from_arrivals,
    required_replicas,
    solve_oracle,
)

P_HOUR = 6.9  # USD per GPU-hour, on demand
P_S = P_HOUR / 3600.0  # USD per replica-second


def level(*runs: tuple[int, int]) -> np.ndarray:
    """A required-replicas series from (value, ticks) runs."""
    return np.concatenate([np.full(n, v, dtype=np.int64) for v, n in runs])


class TestOnDemandGreedy:
    def test_short_gap_is_kept_idle(self) -> None:
        # 10 ticks on, 10 off, 10 on at dt 10 s; boot 300 s. Gap 100 s < break-even 300 s:
        # keep the replica: 200 s serving + 100 s idle + one boot of 300 s = 600 s.
        r = level((1, 10), (0, 10), (1, 10))
        o = solve_oracle(r, 10.0, lead_s=300.0)
        assert o.starts == 1
        assert o.gpu_hours == pytest.approx(600 / 3600)
        assert o.cost_usd == pytest.approx(600 * P_S)

    def test_long_gap_stops_and_restarts(self) -> None:
        # gap 40 ticks * 10 s = 400 s > 300 s: stop, restart 300 s early.
        # 200 s serving + 2 boots * 300 s = 800 s (keeping would cost 200 + 400 + 300 = 900 s)
        r = level((1, 10), (0, 40), (1, 10))
        o = solve_oracle(r, 10.0, lead_s=300.0)
        assert o.starts == 2
        assert o.gpu_hours == pytest.approx(800 / 3600)
        # the restart is billed during the 30 ticks before the second stretch
        billed = o.replicas_timeline["total"]
        assert billed[10:20].sum() == 0 and billed[20:50].sum() == 30

    def test_gap_exactly_at_break_even_is_kept(self) -> None:
        # gap 30 ticks = 300 s = B: keeping and restarting cost the same; keep (fewer starts)
        r = level((1, 10), (0, 30), (1, 10))
        o = solve_oracle(r, 10.0, lead_s=300.0)
        assert o.starts == 1
        assert o.gpu_hours == pytest.approx((200 + 300 + 300) / 3600)

    def test_start_cost_moves_the_break_even(self) -> None:
        # s = 1 USD adds s/p = 521.7 s to the break-even: a 400 s gap is now kept
        r = level((1, 10), (0, 40), (1, 10))
        o = solve_oracle(r, 10.0, lead_s=300.0, start_cost_usd=1.0)
        assert o.starts == 1
        assert o.cost_usd == pytest.approx((200 + 400 + 300) * P_S + 1.0)

    def test_initial_replicas_start_free(self) -> None:
        # level 1 runs at t0: no boot. Level 2 needed for 10 ticks: one boot of 300 s.
        r = level((1, 10), (2, 10), (1, 10))
        o = solve_oracle(r, 10.0, lead_s=300.0, initial_on_demand=1)
        assert o.starts == 1
        assert o.gpu_hours == pytest.approx((300 + 100 + 300) / 3600)

    def test_initial_replica_idles_to_its_first_need_when_cheaper(self) -> None:
        # a running replica first needed after 200 s: idling (200 s) beats a boot (300 s)
        r = level((0, 20), (1, 10))
        kept = solve_oracle(r, 10.0, lead_s=300.0, initial_on_demand=1)
        assert kept.starts == 0 and kept.gpu_hours == pytest.approx(300 / 3600)
        # first needed after 500 s: stop it and boot again
        r2 = level((0, 50), (1, 10))
        restarted = solve_oracle(r2, 10.0, lead_s=300.0, initial_on_demand=1)
        assert restarted.starts == 1 and restarted.gpu_hours == pytest.approx(400 / 3600)

    def test_levels_are_priced_separately(self) -> None:
        # level 1 always (70 ticks), level 2 twice for 5 ticks with a 500 s gap (restart).
        # 700 + (50 + 50 + 2 * 100) = 1000 s with a 100 s boot
        r = level((1, 10), (2, 5), (1, 50), (2, 5))
        o = solve_oracle(r, 10.0, lead_s=100.0, initial_on_demand=1)
        assert o.starts == 2
        assert o.gpu_hours == pytest.approx((r.size * 10 + 100 + 2 * 100) / 3600)

    def test_gpus_per_replica_scale_hours_and_cost(self) -> None:
        r = level((3, 12))
        one = solve_oracle(r, 5.0, lead_s=45.0)
        four = solve_oracle(r, 5.0, lead_s=45.0, gpus_per_replica=4)
        assert four.gpu_hours == pytest.approx(4 * one.gpu_hours)
        assert four.cost_usd == pytest.approx(4 * one.cost_usd)

    def test_zero_demand_costs_nothing(self) -> None:
        o = solve_oracle(np.zeros(10, dtype=np.int64), 5.0, lead_s=300.0)
        assert o.gpu_hours == 0 and o.cost_usd == 0 and o.starts == 0

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            pytest.param({"required": [1, -1]}, "required", id="negative-required"),
            pytest.param({"dt_s": 0.0}, "dt_s", id="zero-tick"),
            pytest.param({"lead_s": -1.0}, "lead_s", id="negative-lead"),
        ],
    )
    def test_bad_input_names_the_field(self, kwargs: dict[str, Any], match: str) -> None:
        args: dict[str, Any] = {"required": [1, 2], "dt_s": 5.0, "lead_s": 45.0}
        args.update(kwargs)
        with pytest.raises(ValueError, match=match):
            solve_oracle(args["required"], args["dt_s"], lead_s=args["lead_s"])


class TestSpotShortestPath:
    def test_matches_the_greedy_when_spot_is_never_available(self) -> None:
        rng = np.random.default_rng(7)
        for _ in range(60):
            n = int(rng.integers(5, 60))
            r = rng.integers(0, 5, n)
            dt = float(rng.choice([5.0, 10.0, 30.0]))
            lead = float(rng.choice([0.0, 45.0, 300.0]))
            init = int(rng.integers(0, 4))
            greedy = solve_oracle(r, dt, lead_s=lead, initial_on_demand=init)
            dp = solve_oracle(
                r,
                dt,
                lead_s=lead,
                initial_on_demand=init,
                spot=SpotAvailability(np.zeros((2, n), dtype=bool)),
            )
            assert dp.method == "shortest-path" and greedy.method == "greedy"
            assert dp.cost_usd == pytest.approx(greedy.cost_usd, abs=1e-9)
            assert dp.gpu_hours == pytest.approx(greedy.gpu_hours, abs=1e-9)
            np.testing.assert_allclose(
                dp.replicas_timeline["total"], greedy.replicas_timeline["total"]
            )

    def test_spot_always_available_costs_the_spot_ratio(self) -> None:
        r = level((2, 30))
        od = solve_oracle(r, 60.0, lead_s=300.0)
        sp = solve_oracle(r, 60.0, lead_s=300.0, spot=SpotAvailability.always(3, r.size))
        assert sp.cost_usd == pytest.approx(0.4 * od.cost_usd)
        assert sp.gpu_hours == pytest.approx(od.gpu_hours)
        assert sp.gpu_hours_by_pool["on_demand"] == 0

    def test_interruption_in_the_only_zone_bridges_with_on_demand(self) -> None:
        # 1 replica for 20 ticks of 60 s, boot 300 s, one zone interrupted in tick 10.
        # spot boot + ticks 0-9 spot, tick 10 on demand (boot + 60 s), spot boot again for
        # ticks 11-19: 0.4 * (300 + 600) + (300 + 60) + 0.4 * (300 + 540) = 1056 p-seconds.
        # (all on demand: 300 + 1200 = 1500; spot but idle... not allowed in the zone)
        r = level((1, 20))
        avail = SpotAvailability.from_events(0.0, 60.0, 20, zones=1, interruptions=[(630.0, 0)])
        o = solve_oracle(r, 60.0, lead_s=300.0, spot=avail)
        assert o.cost_usd == pytest.approx(1056 * P_S)
        assert o.starts == 3

    def test_interruption_moves_to_another_zone(self) -> None:
        # two zones, zone 1 killed in tick 3 and zone 0 in tick 10: run in zone 0, switch to
        # zone 1 before the kill: 2 spot boots + 20 ticks of spot = 0.4 * (2 * 300 + 1200)
        # = 720 p-seconds
        r = level((1, 20))
        avail = SpotAvailability.from_events(
            0.0, 60.0, 20, zones=2, interruptions=[(630.0, 0), (200.0, 1)]
        )
        o = solve_oracle(r, 60.0, lead_s=300.0, spot=avail)
        assert o.cost_usd == pytest.approx(720 * P_S)
        assert o.gpu_hours_by_pool["on_demand"] == 0

    def test_shortage_blocks_spot_for_its_span(self) -> None:
        # the only zone is short of capacity for the whole horizon: on demand it is
        r = level((1, 10))
        avail = SpotAvailability.from_events(0.0, 60.0, 10, zones=1, shortages=[(0, 0.0, 600.0)])
        o = solve_oracle(r, 60.0, lead_s=300.0, spot=avail)
        assert o.cost_usd_by_pool["spot"] == 0
        assert o.cost_usd == pytest.approx((300 + 600) * P_S)

    def test_spot_never_costs_more_than_on_demand_only(self) -> None:
        rng = np.random.default_rng(3)
        for _ in range(30):
            n = int(rng.integers(10, 80))
            r = rng.integers(0, 6, n)
            avail = SpotAvailability(rng.random((3, n)) > 0.3)
            od = solve_oracle(r, 10.0, lead_s=120.0)
            sp = solve_oracle(r, 10.0, lead_s=120.0, spot=avail)
            assert sp.cost_usd <= od.cost_usd + 1e-9

    def test_a_start_blocked_by_a_shortage_waits_for_its_end(self) -> None:
        # spot may serve everywhere but may not start before tick 5 (its pod would stay
        # Pending): on demand for ticks 0-4, then one spot boot: (300 + 300) + 0.4 * (300 +
        # 300) = 840 p-seconds, cheaper than on demand throughout (300 + 600 = 900)
        r = level((1, 10))
        startable = np.zeros((1, 10), dtype=bool)
        startable[:, 5:] = True
        avail = SpotAvailability(np.ones((1, 10), dtype=bool), startable=startable)
        o = solve_oracle(r, 60.0, lead_s=300.0, spot=avail)
        assert o.cost_usd == pytest.approx(840 * P_S)
        np.testing.assert_array_equal(o.replicas_timeline["spot"][5:], 1)

    def test_bad_zone_is_rejected(self) -> None:
        with pytest.raises(ValueError, match="zone 3"):
            SpotAvailability.from_events(0.0, 10.0, 5, zones=2, interruptions=[(1.0, 3)])


class TestRequired:
    def test_exact_multiples_do_not_round_up(self) -> None:
        # 39 req/s at 13 req/s per replica is exactly 3 replicas
        np.testing.assert_array_equal(
            required_replicas(np.array([0.0, 13.0, 39.0, 39.01]), 13.0), [0, 1, 3, 4]
        )

    def test_demand_per_tick_counts_and_smooths(self) -> None:
        arrivals = np.array([0.5, 1.0, 6.0, 12.0, 12.5, 13.0])
        raw = demand_per_tick(arrivals, 0.0, 15.0, 5.0, smooth_s=0.0)
        np.testing.assert_allclose(raw, [2 / 5, 1 / 5, 3 / 5])
        # a 15 s centered mean over 3 ticks; the edges average what exists
        smooth = demand_per_tick(arrivals, 0.0, 15.0, 5.0, smooth_s=15.0)
        np.testing.assert_allclose(
            smooth, [(0.4 + 0.2) / 2, (0.4 + 0.2 + 0.6) / 3, (0.2 + 0.6) / 2]
        )

    def test_capacity_must_be_positive(self) -> None:
        with pytest.raises(ValueError, match="capacity_rps"):
            required_replicas(np.array([1.0]), 0.0)


class TestBound:
    """The oracle never costs more than a simulated policy run that met its SLO."""

    @pytest.mark.parametrize("seed", [0, 1])
    @pytest.mark.parametrize("spot", [False, True], ids=["on-demand", "with-spot"])
    def test_never_above_a_run_that_met_the_slo(self, seed: int, spot: bool) -> None:
        from policies import PredictivePolicy
        from policies.baselines import HPABaseline, StaticPolicy
        from simulator import traces
        from simulator.cli import default_workload
        from simulator.cluster import ClusterConfig
        from simulator.engine import SimConfig, oracle_for, simulate
        from simulator.report import LatencyTargets, build_report

        tr = traces.bursts(600.0, 6.0, 30.0, burst_every_s=240.0, burst_len_s=90.0, seed=seed)
        w = default_workload("chat", max_replicas=20)
        if not spot:
            t = w.spec.targets.model_copy(update={"spot": None, "warm": None})
            w = w.model_copy(update={"spec": w.spec.model_copy(update={"targets": t})})
        cfg = SimConfig(cluster=ClusterConfig(cold_start_median_s=60.0, cold_start_p95_s=90.0))
        targets = LatencyTargets.for_workload(w, itl_s=0.025)
        met = 0
        for policy in (
            PredictivePolicy(),
            HPABaseline(metric="rps", target=10.0),
            StaticPolicy(3),
            StaticPolicy(4),
        ):
            run = simulate(tr, w, policy, cfg, seed=seed, itl_slo_ms=25.0)
            oracle = oracle_for(run)
            rep = build_report(run, oracle, targets)
            if rep.slo_met:
                met += 1
                assert oracle.cost_usd <= rep.cost_usd
                if not spot:  # one price: the cheapest schedule is also the fewest GPU-hours
                    assert oracle.gpu_hours <= rep.gpu_hours
        assert met >= 1  # the property was exercised


class TestRequiredFromArrivals:
    def test_a_burst_needs_more_than_its_minute_average(self) -> None:
        # 60 requests in the first second of a quiet minute, c = 10 req/s, tau = 1 s:
        # 1 s window: 60 / (10 * (1 + 1)) = 3 replicas for the tick holding it;
        # 60 s window: 60 / (10 * 61) < 1 -> 1 replica for the rest of the minute
        arrivals = np.linspace(0.0, 0.99, 60)
        r = required_from_arrivals(arrivals, 0.0, 60.0, 5.0, 10.0, queue_budget_s=1.0)
        assert r[0] == 3
        # windows of 5, 10, 20 s starting at 0 cover ticks 1-3: 60/(10*11)=0.55 -> 1
        assert (r[1:] == 1).all()

    def test_without_a_queue_budget_only_the_sustained_rate_counts(self) -> None:
        # the same burst with an ITL SLO: 60 / (10 * 60) = 0.1 -> 1 replica everywhere
        arrivals = np.linspace(0.0, 0.99, 60)
        r = required_from_arrivals(arrivals, 0.0, 60.0, 5.0, 10.0, queue_budget_s=None)
        assert (r == 1).all()

    def test_a_budget_of_minutes_still_needs_the_sustained_rate(self) -> None:
        # 25 req/s for an hour, c = 10, an e2e budget of 600 s: a minute's window alone
        # gives 1500 / (10 * 660) < 1; the rate over the trailing 600 s needs 3 replicas
        arrivals = np.arange(0.0, 3600.0, 0.04)
        r = required_from_arrivals(arrivals, 0.0, 3600.0, 5.0, 10.0, queue_budget_s=600.0)
        assert set(r[120:].tolist()) == {3}
        assert r[:12].max() == 1  # the first requests may wait while the load builds up

    def test_steady_load_matches_the_fluid_rate(self) -> None:
        # 25 req/s evenly for 10 minutes, c = 10: 60 s window 1500 / (10 * 61) = 2.46 -> 3
        arrivals = np.arange(0.0, 600.0, 0.04)
        r = required_from_arrivals(arrivals, 0.0, 600.0, 5.0, 10.0, queue_budget_s=1.0)
        assert set(r[12:-12].tolist()) == {3}
