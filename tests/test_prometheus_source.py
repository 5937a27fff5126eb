"""PrometheusMetricsSource: query planning, failure classes, and a real Prometheus end to end.

The integration tests run one real Prometheus for the module (1 s scrape interval) scraping
two real exporters that serve vLLM-named series: prometheus_client's own server (whose
OpenMetrics answer spells `vllm:x` as `vllm_x`) and a text-format one that keeps `vllm:x`.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from autoscaler.adapters.prometheus import (
    PRESETS,
    PrometheusMetricsSource,
    PrometheusSourceConfig,
    QueryPlan,
    plan_queries,
    render_template,
)
from autoscaler.config import Workload
from autoscaler.protocols import MetricsSource, PermanentError, TemporaryError
from tests import prom_fixtures
from tests.prom_fixtures import VLLM_WAITING, MetricsExporter, PrometheusServer, free_port

# The real-server fixtures (module-scoped: one Prometheus for this module).
prom_server = prom_fixtures.prom_server
prom_exporter = prom_fixtures.prom_exporter
prom_exporter_text = prom_fixtures.prom_exporter_text

RATE_WINDOW_S = 5  # the smallest rate window MetricsSpec allows; 5 scrapes at 1 s


def workload(
    name: str,
    namespace: str = "team-a",
    rate_window_s: int = RATE_WINDOW_S,
    **metrics: Any,
) -> Workload:
    return Workload.model_validate(
        {
            "namespace": namespace,
            "name": name,
            "spec": {
                "targets": {"on_demand": f"{name}-od"},
                "metrics": {"rate_window_s": rate_window_s, **metrics},
                "policy": {"scenario": "rag", "capacity": {"queue_per_replica": 4}},
            },
        }
    )


# -- planning (pure) ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("namespaces", "workloads", "max_chars", "expected"),
    [
        # one value per label: exact matchers
        pytest.param(["a"], ["x"], 4096, '{namespace="a",workload="x"}', id="single-values-exact"),
        # several: an RE2 alternation, sorted, metacharacters escaped ('.' -> '\\.')
        pytest.param(
            ["b", "a"],
            ["y.z", "x"],
            4096,
            '{namespace=~"a|b",workload=~"x|y\\\\.z"}',
            id="several-values-regex-escaped",
        ),
        # too long for the URL budget: namespaces only, any workload label
        pytest.param(
            ["a"],
            [f"w{i}" for i in range(100)],
            64,
            '{namespace="a",workload!=""}',
            id="long-selector-falls-back-to-namespaces",
        ),
    ],
)
def test_selector_rendering(
    namespaces: list[str], workloads: list[str], max_chars: int, expected: str
) -> None:
    out = render_template(
        "x{selector}", "namespace", "workload", 60, namespaces, workloads, max_chars
    )
    assert out == "x" + expected


def test_template_placeholders_are_filled() -> None:
    out = render_template(
        "sum by ({by}) (rate(m{job='j',{matchers}}[{window}]))", "ns", "app", 30, ["a"], ["x"]
    )
    assert out == 'sum by (ns, app) (rate(m{job=\'j\',ns="a",app="x"}[30s]))'


def test_unknown_placeholder_is_named() -> None:
    with pytest.raises(ValueError, match=r"unknown placeholder\(s\) \{windows\}"):
        render_template("rate(m{selector}[{windows}])", "namespace", "workload", 60)


def test_range_queries_are_told_from_instant_ones() -> None:
    plans, _ = plan_queries([workload("a"), workload("b", preset="tgi")])
    ranged = {(p.template, f) for p in plans if p.reads_a_range for f in p.families}
    assert {f for _, f in ranged} == {"rps", "tokens_ps"}  # rate(...[{window}]) in both presets
    assert not any(p.reads_a_range and "queue" in p.families for p in plans)
    for text, expected in [
        ("max_over_time(q{selector}[5m])", True),
        ("rate(x{selector}[90s])", True),
        ("max_over_time(rate(x[1m])[10m:30s])", True),
        ('sum by ({by}) (q{selector,le=~"[0-9]+"})', False),
    ]:
        assert QueryPlan("", text, "ns", "wl").reads_a_range is expected, text


def test_fifty_workloads_one_query_per_distinct_query() -> None:
    ws = [workload(f"w{i}", namespace=f"ns-{i % 3}") for i in range(50)]
    plans, wanted = plan_queries(ws)
    # vLLM: rps, queue, running, tokens_ps, streams; streams == running -> 4 queries
    assert len(plans) == 4
    assert sorted(wanted) == sorted(PRESETS["vllm"])
    shared = [p for p in plans if len(p.families) == 2]
    assert len(shared) == 1 and sorted(shared[0].families) == ["running", "streams"]
    assert all(len(wanted[f]) == 50 for f in wanted)


def test_distinct_templates_get_their_own_query_never_one_per_workload() -> None:
    custom = "sum by ({by}) (my_queue{selector})"
    ws = [workload(f"w{i}") for i in range(40)]
    ws += [workload(f"c{i}", queries={"queue": custom}) for i in range(10)]
    ws += [workload(f"t{i}", queries={"tokens_ps": ""}) for i in range(5)]  # switched off
    plans, wanted = plan_queries(ws)
    assert len(plans) == 5  # the 4 vLLM queries + one for the custom queue template
    custom_plan = [p for p in plans if p.template == custom]
    assert len(custom_plan) == 1 and len(custom_plan[0].rows["queue"]) == 10
    assert len(wanted["tokens_ps"]) == 50  # not the 5 that switched it off


def test_other_label_names_or_windows_are_other_queries() -> None:
    ws = [workload("a"), workload("b", workload_label="app"), workload("c", rate_window_s=30)]
    plans, _ = plan_queries(ws)
    # queue/running do not use the window: 2 label layouts x 2 + rps/tokens: 3 variants x 2
    assert len(plans) == 2 * 2 + 3 * 2


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        pytest.param({"step_s": 30, "window_s": 10}, "step_s must be <= window_s", id="step"),
        pytest.param({"url": "prometheus:9090"}, "url must start with http", id="scheme"),
        pytest.param({"verify_tls": False, "ca_file": "/x"}, "ca_file is set but", id="tls"),
    ],
)
def test_config_errors_name_the_field(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PrometheusSourceConfig(**{"url": "http://127.0.0.1:9", **settings})


def test_implements_the_protocol() -> None:
    source: MetricsSource = PrometheusMetricsSource.from_url("http://127.0.0.1:9")
    assert callable(source.observe) and callable(source.history)


# -- failure classes against small real HTTP servers -----------------------------------------


@dataclass
class Scripted:
    """An HTTP server on 127.0.0.1 answering every request with `status` and `body`."""

    status: int = 200
    body: str = '{"status":"success","data":{"resultType":"matrix","result":[]}}'
    hang_s: float = 0.0
    requests: list[dict[str, str]] = field(default_factory=list)
    port: int = 0


@pytest.fixture
def scripted() -> Iterator[Scripted]:
    state = Scripted()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            state.requests.append(dict(self.headers))
            if state.hang_s:
                time.sleep(state.hang_s)
            body = state.body.encode()
            self.send_response(state.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def source_for(
    port: int, sleeps: list[float] | None = None, **settings: Any
) -> PrometheusMetricsSource:
    record = sleeps if sleeps is not None else []
    return PrometheusMetricsSource(
        PrometheusSourceConfig(url=f"http://127.0.0.1:{port}", window_s=60, **settings),
        sleep=record.append,
    )


@pytest.mark.parametrize("parallel", [1, 4], ids=["in-turn", "side-by-side"])
def test_5xx_is_retried_once_per_tick_with_doubling_backoff_then_temporary_error(
    scripted: Scripted, parallel: int
) -> None:
    scripted.status, scripted.body = 503, '{"status":"error","errorType":"unavailable"}'
    sleeps: list[float] = []
    src = source_for(
        scripted.port, sleeps, attempts=3, backoff_s=0.25, max_parallel_queries=parallel
    )
    with pytest.raises(TemporaryError, match=r"after 3 attempt\(s\): HTTP 503"):
        src.observe([workload("a")], time.time())
    # the 4 vLLM queries tried once each, then the first retried alone until it gives up:
    # 4 + (3 - 1) requests and one backoff sequence, not one per query (that would be 12)
    assert src.queries_total == 4
    assert len(scripted.requests) == 6 == src.requests_total
    assert sleeps == [0.25, 0.5]


def test_retry_budget_bounds_the_attempts(scripted: Scripted) -> None:
    scripted.status = 502
    # the first backoff (1 s) would end past the 0.5 s budget: no second try
    src = source_for(scripted.port, attempts=5, backoff_s=1.0, retry_budget_s=0.5)
    with pytest.raises(TemporaryError, match=r"after 1 attempt\(s\)"):
        src.observe([workload("a")], time.time())
    assert len(scripted.requests) == 4  # the first try of each of the 4 queries, no retry


def test_no_answer_within_timeout_is_temporary(scripted: Scripted) -> None:
    scripted.hang_s = 2.0
    src = source_for(scripted.port, attempts=1, timeout_s=0.2)
    with pytest.raises(TemporaryError, match="no answer within timeout_s=0.2"):
        src.observe([workload("a")], time.time())


def test_connection_refused_is_temporary() -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(TemporaryError, match="connection failed"):
        source_for(port, attempts=2, backoff_s=0.0).observe([workload("a")], time.time())


def test_an_answer_that_is_not_the_prometheus_api_is_temporary(scripted: Scripted) -> None:
    scripted.body = "<html>login</html>"
    with pytest.raises(TemporaryError, match="JSONDecodeError"):
        source_for(scripted.port, attempts=1).observe([workload("a")], time.time())


@pytest.mark.parametrize("status", [401, 403, 404])
def test_auth_and_wrong_path_are_permanent(scripted: Scripted, status: int) -> None:
    scripted.status = status
    with pytest.raises(PermanentError, match=f"HTTP {status}"):
        source_for(scripted.port).observe([workload("a")], time.time())
    assert len(scripted.requests) == 4  # one try per query, none retried


def test_bearer_token_is_reread_from_the_file_every_tick(
    scripted: Scripted, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text("first\n")
    src = source_for(scripted.port, bearer_token_file=str(token), headers={"X-Scope-OrgID": "t1"})
    src.observe([workload("a")], time.time())
    token.write_text("rotated")
    src.observe([workload("a")], time.time())
    auth = [r["Authorization"] for r in scripted.requests]
    assert auth[0] == "Bearer first" and auth[-1] == "Bearer rotated"
    assert all(r["X-Scope-OrgID"] == "t1" for r in scripted.requests)


def test_missing_token_file_is_permanent(scripted: Scripted, tmp_path: Path) -> None:
    src = source_for(scripted.port, bearer_token_file=str(tmp_path / "absent"))
    with pytest.raises(PermanentError, match="bearer_token_file"):
        src.observe([workload("a")], time.time())


def test_bad_arguments_are_named() -> None:
    src = PrometheusMetricsSource.from_url("http://127.0.0.1:9")
    with pytest.raises(ValueError, match="now_s must be finite"):
        src.observe([workload("a")], math.nan)
    with pytest.raises(ValueError, match="start_s <= end_s"):
        src.history([workload("a")], 10.0, 5.0, 1.0)


# -- real Prometheus --------------------------------------------------------------------------

N_MANY = 50


def many() -> list[Workload]:
    return [workload(f"w{i:02d}", namespace=f"many-{i % 3}") for i in range(N_MANY)]


@dataclass
class World:
    server: PrometheusServer
    neg: MetricsExporter  # prometheus_client's server: stored as vllm_*
    text: MetricsExporter  # text format: stored as vllm:*
    t_ready: float
    t_removed: float


@pytest.fixture(scope="module")
def world(
    prom_exporter: MetricsExporter, prom_exporter_text: MetricsExporter
) -> tuple[MetricsExporter, MetricsExporter]:
    """Series every test below reads, set before Prometheus starts."""
    neg, text = prom_exporter, prom_exporter_text
    for i in range(N_MANY):
        # half through each exporter: both spellings of the vLLM names
        exp = neg if i % 2 else text
        exp.set_vllm(f"many-{i % 3}", f"w{i:02d}", i % 7, i % 5 + 1, 1 + i % 4, 100.0, 50.0)
    # two pods of one workload: the source sums them
    neg.set_vllm("team-a", "two-pods", 3, 1, 2.0, 10.0, 5.0, pod="p1")
    neg.set_vllm("team-a", "two-pods", 4, 2, 1.0, 20.0, 5.0, pod="p2")
    # arrivals = completions + d(waiting + running)/dt: 3/s done while the queue grows 2/s
    neg.set_vllm("team-a", "surge", 0, 2, 3.0, 0.0, 0.0)
    neg.set_gauge(VLLM_WAITING, "team-a", "surge", 0.0, slope_per_s=2.0)
    # bad values
    for name, waiting in (("nan-q", math.nan), ("inf-q", math.inf), ("neg-q", -3.0)):
        neg.set_vllm("team-a", name, waiting, 1, 1.0, 1.0, 1.0)
    # goes away after the first scrapes
    neg.set_vllm("team-a", "going", 1, 1, 1.0, 1.0, 1.0)
    # a custom family
    neg.set_gauge("batch_backlog_items", "team-b", "jobs", 17.0)
    neg.set_vllm("team-b", "jobs", 0, 0, 0.0, 0.0, 0.0)
    return neg, text


@pytest.fixture(scope="module")
def live(world: tuple[MetricsExporter, MetricsExporter], prom_server: PrometheusServer) -> World:
    prom_server.wait_scraped(2)
    world[0].remove("team-a", "going")
    return World(prom_server, world[0], world[1], time.time(), time.time())


def wait_until(t_s: float, limit_s: float = 15.0) -> None:
    """Sleep until wall time t_s (bounded)."""
    time.sleep(min(limit_s, max(0.0, t_s - time.time())))


def points_per_query(src: PrometheusMetricsSource, n: int) -> list[int]:
    """n grid points per query of the last call, one fewer for a range query (a rate): its
    newest point lies after now."""
    return [n - 1 if f"[{RATE_WINDOW_S}s]" in q else n for q in src.last_queries]


def src_of(live: World, **settings: Any) -> PrometheusMetricsSource:
    return PrometheusMetricsSource.from_url(
        live.server.url, **{"window_s": 30.0, "step_s": 1.0, **settings}
    )


@pytest.mark.prometheus
def test_gauges_read_back_exactly_for_many_workloads_in_one_query_per_family(
    live: World,
) -> None:
    src = src_of(live)
    ws = many()
    out = src.observe(ws, time.time())
    # 5 families from 4 queries (streams shares running's), whatever the workload count
    assert src.queries_total == 4 == len(src.last_queries)
    assert set(out.metrics) == {"rps", "queue", "running", "tokens_ps", "streams"}
    assert out.metrics["queue"].shape == (N_MANY, 31)
    np.testing.assert_array_equal(out.metrics["queue"][:, -1], [i % 7 for i in range(N_MANY)])
    np.testing.assert_array_equal(out.metrics["running"][:, -1], [i % 5 + 1 for i in range(N_MANY)])
    np.testing.assert_array_equal(out.metrics["streams"][:, -1], out.metrics["running"][:, -1])
    assert not out.stale.any() and out.errors == {}
    # grid: step-aligned, oldest first
    assert np.all(np.diff(out.t_s) == 1.0) and out.t_s[-1] == math.floor(out.t_s[-1])


@pytest.mark.prometheus
def test_two_pods_are_summed(live: World) -> None:
    out = src_of(live).observe([workload("two-pods")], time.time())
    assert out.metrics["queue"][0, -1] == 3 + 4
    assert out.metrics["running"][0, -1] == 1 + 2


@pytest.mark.prometheus
def test_rates_match_the_driven_rates(live: World) -> None:
    wait_until(live.t_ready + RATE_WINDOW_S + 2)
    ws = many() + [workload("two-pods"), workload("surge")]
    now = time.time()
    out = src_of(live).observe(ws, now)
    rps, tps = out.metrics["rps"][:, -1], out.metrics["tokens_ps"][:, -1]
    if out.t_s[-1] > now:
        # rates stop at the last grid point before now; the newest column repeats it
        np.testing.assert_array_equal(rps, out.metrics["rps"][:, -2])
    expected_rps = [1 + i % 4 for i in range(N_MANY)] + [2.0 + 1.0, 3.0 + 2.0]
    np.testing.assert_allclose(rps, expected_rps, rtol=0.1)
    # prompt + generation tokens/s: 100 + 50; two pods 10 + 5 + 20 + 5
    np.testing.assert_allclose(tps[: N_MANY + 1], [150.0] * N_MANY + [40.0], rtol=0.1)


@pytest.mark.prometheus
def test_non_finite_and_negative_values_become_nan_with_an_error(live: World) -> None:
    ws = [workload("nan-q"), workload("inf-q"), workload("neg-q"), workload("w00", "many-0")]
    out = src_of(live).observe(ws, time.time())
    queue = out.metrics["queue"]
    assert np.isnan(queue[:3]).all()  # never passed on as numbers
    assert not np.isnan(queue[3, -1])
    assert np.isfinite(out.metrics["running"][:3, -1]).all()  # other families unaffected
    assert "queue:" in out.errors[0] and "non-finite sample(s) dropped" in out.errors[0]
    assert "queue:" in out.errors[1] and "non-finite sample(s) dropped" in out.errors[1]
    assert "queue:" in out.errors[2] and "negative sample(s) dropped" in out.errors[2]
    assert 3 not in out.errors
    assert not out.stale[:3].any()  # running is fresh: not stale, but said so per family


@pytest.mark.prometheus
def test_series_that_went_away_are_stale(live: World) -> None:
    stale_after_s = 2.0
    # marker at the next scrape (<= 1 s), +1 s step alignment, then stale_after_s
    wait_until(live.t_removed + stale_after_s + 2.5)
    ws = [workload("going", stale_after_s=stale_after_s), workload("w00", "many-0")]
    out = src_of(live).observe(ws, time.time())
    assert out.stale.tolist() == [True, False]
    assert "stale: newest sample" in out.errors[0]
    assert np.isfinite(out.metrics["queue"][0]).any()  # the old samples are still served


@pytest.mark.prometheus
def test_unknown_workload_is_a_nan_row_and_stale(live: World) -> None:
    out = src_of(live).observe([workload("ghost"), workload("w00", "many-0")], time.time())
    for arr in out.metrics.values():
        assert np.isnan(arr[0]).all()
    assert out.stale.tolist() == [True, False]
    assert "no sample of any family" in out.errors[0]


@pytest.mark.prometheus
def test_a_bad_custom_query_fails_only_its_family(live: World) -> None:
    bad = "sum by ({by}) (rate(batch_backlog_items{selector}[{window}])"  # unclosed (
    ws = [
        workload("jobs", "team-b", queries={"backlog": bad}),
        workload("w00", "many-0"),
    ]
    src = src_of(live)
    out = src.observe(ws, time.time())
    assert np.isnan(out.metrics["backlog"]).all()
    assert "backlog: query rejected (HTTP 400 bad_data" in out.errors[0]
    assert "rate(batch_backlog_items{selector}[{window}])" in out.errors[0]  # names the query
    assert out.metrics["queue"][1, -1] == 0.0 and out.metrics["queue"][0, -1] == 0.0
    assert 1 not in out.errors and not out.stale.any()


@pytest.mark.prometheus
def test_a_custom_query_feeds_its_family(live: World) -> None:
    good = "sum by ({by}) (batch_backlog_items{selector})"
    out = src_of(live).observe([workload("jobs", "team-b", queries={"backlog": good})], time.time())
    assert out.metrics["backlog"][0, -1] == 17.0
    assert out.errors == {}


@pytest.mark.prometheus
def test_a_custom_query_without_by_is_reported(live: World) -> None:
    flat = "sum(batch_backlog_items{selector})"
    out = src_of(live).observe([workload("jobs", "team-b", queries={"backlog": flat})], time.time())
    assert np.isnan(out.metrics["backlog"]).all()
    assert "lack the 'namespace' or 'workload' label" in out.errors[0]


@pytest.mark.prometheus
def test_a_custom_query_that_does_not_aggregate_pods_is_reported_not_summed(
    live: World,
) -> None:
    per_pod = '{__name__=~"vllm:num_requests_waiting|vllm_num_requests_waiting",{matchers}}'
    ws = [workload("two-pods", queries={"backlog": per_pod}), workload("w00", "many-0")]
    out = src_of(live).observe(ws, time.time())
    assert np.isnan(out.metrics["backlog"][0]).all()  # neither pod's value, nor their sum
    assert "backlog: query returned several series for team-a/two-pods" in out.errors[0]
    assert out.metrics["queue"][0, -1] == 7.0  # the preset families are unaffected


@pytest.mark.prometheus
@pytest.mark.parametrize("preset", ["vllm", "triton", "tgi", "dcgm"])
def test_every_preset_query_is_valid_promql(live: World, preset: str) -> None:
    out = src_of(live).observe([workload("x", preset=preset)], time.time())
    assert set(out.metrics) == set(PRESETS[preset])
    assert "rejected" not in out.errors.get(0, "")  # no 400/422 from Prometheus


@pytest.mark.prometheus
def test_history_matches_observe_and_splits_long_ranges(live: World) -> None:
    ws = many()[:6]
    now = time.time()
    src = src_of(live)
    obs = src.observe(ws, now)
    whole = src.history(ws, obs.t_s[0], obs.t_s[-1], 1.0)
    np.testing.assert_array_equal(whole.t_s, obs.t_s)
    np.testing.assert_array_equal(whole.metrics["queue"], obs.metrics["queue"])
    chunked_src = src_of(live, max_points_per_query=8)
    chunked = chunked_src.history(ws, obs.t_s[0], obs.t_s[-1], 1.0)
    # 31 points in chunks of 8: 4 chunks x 4 queries
    assert chunked_src.queries_total == 4 * 4
    np.testing.assert_array_equal(chunked.metrics["queue"], obs.metrics["queue"])
    np.testing.assert_array_equal(chunked.metrics["running"], obs.metrics["running"])


@pytest.mark.prometheus
def test_incremental_observe_reads_the_end_only_and_equals_a_full_read(live: World) -> None:
    window = {"window_s": 10.0}  # 11 points
    wait_until(live.t_ready + 12)  # the whole window holds data
    ws = many()[:10] + [workload("two-pods"), workload("surge"), workload("nan-q")]
    inc = src_of(live, refetch_s=3.0, **window)
    first = inc.observe(ws, time.time())
    # nothing to reuse yet; the range queries (rates) stop at the last point before now
    assert inc.last_fetched_points == points_per_query(inc, 11)
    time.sleep(2.0)
    now = time.time()
    again = inc.observe(ws, now)
    # the grid moved by ~2 steps: read those + the 3 s re-read (4 points), not all 11
    moved = int(round(again.t_s[-1] - first.t_s[-1]))
    assert inc.last_fetched_points == points_per_query(inc, moved + 3 + 1)
    reused = 11 - (moved + 4)
    # the reuse carried data (all rows but nan-q, whose queue is NaN by design)
    assert np.isfinite(again.metrics["queue"][:-1, :reused]).all()
    full = src_of(live, incremental=False, **window).observe(ws, now)
    np.testing.assert_array_equal(again.t_s, full.t_s)
    for fam, arr in full.metrics.items():
        # exact, the surge row's ramp included: a column shifted by one would show
        np.testing.assert_array_equal(again.metrics[fam], arr, err_msg=fam)
    assert again.errors == full.errors
    np.testing.assert_array_equal(again.stale, full.stale)


@pytest.mark.prometheus
def test_a_changed_workload_set_is_read_in_full(live: World) -> None:
    src = src_of(live, refetch_s=3.0)
    src.observe(many()[:5], time.time())
    src.observe(many()[:6], time.time())  # other selector: other queries, nothing to reuse
    assert src.last_fetched_points == points_per_query(src, 31)
    src.observe(many()[:6], time.time())
    assert max(src.last_fetched_points) < 31


@pytest.mark.prometheus
def test_prometheus_killed_then_restarted(live: World) -> None:
    src = src_of(live, attempts=2, backoff_s=0.05)
    ws = many()[:5]
    assert src.observe(ws, time.time()).metrics["queue"][:, -1].tolist() == [0, 1, 2, 3, 4]
    live.server.kill()
    try:
        with pytest.raises(TemporaryError, match="Connection refused"):
            src.observe(ws, time.time())
    finally:
        live.server.start()
    live.server.wait_scraped(2)
    out = src.observe(ws, time.time())
    assert out.metrics["queue"][:, -1].tolist() == [0, 1, 2, 3, 4]
    assert not out.stale.any()
