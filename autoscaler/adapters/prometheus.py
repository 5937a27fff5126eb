"""`MetricsSource` over the Prometheus HTTP API: one range query per metric family per tick.

Batching. Each tick issues ONE `query_range` per distinct query, never one per workload.
Workloads are grouped by the query their spec resolves to for a family (preset template or
`metrics.queries` override, label names, and the rate window where the template uses it);
every group's query aggregates `by (namespace_label, workload_label)` and its answer is split
back into rows by those two labels. Families whose queries come out identical (vLLM `streams`
and `running`) share one query. With the vLLM preset and one label layout, 1,000 workloads
cost 4 queries a tick. Up to `max_parallel_queries` run at once, so Prometheus evaluates them
side by side while this process parses the answers already in.

Templates. Preset and custom queries are PromQL with these placeholders (plain text
substitution, so PromQL's own braces need no escaping):

- `{by}`: the grouping labels, e.g. `namespace, workload`;
- `{selector}`: a full selector in braces, e.g. `{namespace=~"a|b",workload=~"x|y"}`;
- `{matchers}`: the same matchers without braces, to combine with others:
  `my_metric{job="vllm",{matchers}}`;
- `{window}`: the spec's `metrics.rate_window_s` as a duration, e.g. `60s`.

A custom query must aggregate by `{by}` (or the same label names written out); series that
lack either label, or several series for one (namespace, workload), are reported as errors,
not summed. An empty string in `metrics.queries` switches a preset family off. The selector
names the group's workloads when that fits in `max_selector_chars`, otherwise only their
namespaces (`workload!=""`), keeping the GET URL short; unasked-for series are dropped here.

Arrivals. vLLM exports no arrivals counter: `vllm:request_success_total` counts requests
that finished (every finish reason, aborts included), which lags arrivals in a surge exactly
when it matters (completions are capped by capacity while the queue grows). The vLLM and
Triton presets therefore take arrivals from flow conservation,
`arrivals/s = completions/s + d(waiting + running)/dt`, computed per series
(`rate()` of the completion counter plus `deriv()` of the in-system gauges, so pods coming
and going do not show up as load), clamped at 0. In steady state it equals the completion
rate; in a surge it adds the queue's growth. TGI has a true arrivals counter
(`tgi_request_count`, incremented as a request handler starts).

Presets (names as exported by vLLM v1 `vllm/v1/metrics/loggers.py`, Triton
`docs/user_guide/metrics.md`, TGI's metrics reference, dcgm-exporter's default counters; vLLM
names match both `vllm:x` and `vllm_x`, see `_vllm`):

- vllm: rps = completion rate + deriv(waiting + running); queue = num_requests_waiting;
  running = streams = num_requests_running; tokens_ps = prompt + generation token rate.
- triton: rps = success + failure rate + deriv(pending); queue =
  nv_inference_pending_request_count; running = streams =
  rate(nv_inference_compute_infer_duration_us) / 1e6 (Little's law: the mean number of
  requests executing); no tokens_ps.
- tgi: rps = rate(tgi_request_count); queue = tgi_queue_size; running = streams =
  tgi_batch_current_size; tokens_ps = rate of tgi_request_input_length_sum +
  tgi_request_generated_tokens_sum (counted when a request ends, so it lags).
- dcgm: streams only, sum(DCGM_FI_DEV_GPU_UTIL) / 100 (GPU-busy equivalents).
- custom: nothing; every family from `metrics.queries`.

DCGM is a secondary signal: GPU utilisation saturates at 100 % and does not see the queue,
so it cannot tell "busy" from "overloaded". The dcgm preset offers it only as `streams`
(busy GPUs), for servers that export nothing better, to pair with `streams_per_replica` =
GPUs per replica; add queue/rps through `metrics.queries` where you can.

Values. The query range is the `window_s` up to the first multiple of `step_s` at or after
now (that newest point sees the latest scrape); a sample absent at a step is NaN. NaN, +-Inf
and negative values returned by Prometheus are dropped (NaN) and counted in that row's error
message, never passed on as numbers.

A query that reads a range vector (`rate()`, `increase()`, `deriv()`, subqueries) stops at the
last grid point at or before now, and its newest column repeats that value. Evaluated later
than about 1.1 scrape intervals after its newest sample, `rate()` extrapolates only half an
interval towards the window's end, so a point up to a step in the future read 15-25 % low on
a window of four or five scrapes (a 60 s window at 15 s). The next observe() re-reads the
column (it lies within `refetch_s`); gauges keep the newest point.

Incremental reads. A window of 600 s at 15 s is 41 points per series, but only the newest
one or two change between ticks. observe() keeps each query's per-series window and, next
tick, reads only from `refetch_s` (30 s) before the previous window's end: new steps, plus the
steps that late scrapes (a sample stamped t lands up to scrape_timeout later), staleness
markers or rule lag may still change. Cost per tick falls from 41 to about 3 points per series
(see tests/bench/test_bench_tick.py). A query whose text changes (the workload set changed)
and history() read the whole range; `incremental=False` always does.

Staleness. A row whose newest sample (over all its families) is older than its spec's
`metrics.stale_after_s` is marked stale, with a message; a family that alone went quiet is
reported in the row's errors.

Failures. Connection refused, timeouts, HTTP 408/429/5xx are retried with exponential backoff
within `retry_budget_s`; if they persist, `observe` raises `TemporaryError` (the loop holds all
workloads). 401/403/404 and an unreadable token file raise `PermanentError`. A query
Prometheus rejects (400 bad_data, 422 execution error) costs only its rows of its families:
NaN plus an error naming the query (its template, placeholders unexpanded).
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import requests
from prometheus_api_client.exceptions import PrometheusApiClientException
from prometheus_api_client.prometheus_connect import PrometheusConnect
from pydantic import BaseModel, ConfigDict, Field, model_validator
from urllib3.util.retry import Retry

from autoscaler.config import MetricsSpec, Workload
from autoscaler.protocols import MetricWindows, PermanentError, TemporaryError
from policies.types import F64, METRIC_FAMILIES

__all__ = [
    "PRESETS",
    "PrometheusMetricsSource",
    "PrometheusSourceConfig",
    "QueryPlan",
    "plan_queries",
    "render_template",
]

# -- presets --------------------------------------------------------------------------------


def _vllm(name: str) -> str:
    """A selector for one vLLM metric under both spellings of its name.

    vLLM names its metrics `vllm:...`. prometheus_client >= 0.22, asked for OpenMetrics by a
    Prometheus 2.x scraper (no `escaping=` in Accept), writes sample names with `_` for `:`
    (prometheus/client_python#1177), so the same series may be stored as `vllm_...`. One
    target exposes one spelling at a time, so matching both does not double count (save for
    up to the 5-minute lookback after a Prometheus restart that switches the spelling).
    """
    return '{__name__=~"vllm:' + name + "|vllm_" + name + '",{matchers}}'


def _sum(fn: str, selector: str) -> str:
    """`sum by ({by}) (fn(selector[{window}]))`, or of the selector itself when fn is ''.

    One metric per term: rate()/deriv() drop the metric name, and Prometheus refuses a
    multi-name selector whose series then collide before the sum (HTTP 422)."""
    inner = f"{fn}({selector}[{{window}}])" if fn else selector
    return f"sum by ({{by}}) ({inner})"


_VLLM_RUNNING = _sum("", _vllm("num_requests_running"))
_TRITON_RUNNING = _sum("rate", "nv_inference_compute_infer_duration_us{selector}") + " / 1e6"
_TGI_RUNNING = _sum("", "tgi_batch_current_size{selector}")
_TRITON_DONE = (
    _sum("rate", "nv_inference_request_success{selector}")
    + " + "
    + _sum("rate", "nv_inference_request_failure{selector}")
)

PRESETS: Mapping[str, Mapping[str, str]] = {
    "vllm": {
        # arrivals = completions + growth of what is in the system (module docstring)
        "rps": (
            f"clamp_min({_sum('rate', _vllm('request_success_total'))}"
            f" + {_sum('deriv', _vllm('num_requests_waiting'))}"
            f" + {_sum('deriv', _vllm('num_requests_running'))}, 0)"
        ),
        "queue": _sum("", _vllm("num_requests_waiting")),
        "running": _VLLM_RUNNING,
        "streams": _VLLM_RUNNING,
        "tokens_ps": (
            f"{_sum('rate', _vllm('prompt_tokens_total'))}"
            f" + {_sum('rate', _vllm('generation_tokens_total'))}"
        ),
    },
    "triton": {
        # Older Triton releases lack the pending gauge: fall back to the completion rate.
        "rps": (
            f"clamp_min({_TRITON_DONE} + ("
            f"{_sum('deriv', 'nv_inference_pending_request_count{selector}')}"
            f" or 0 * ({_TRITON_DONE})), 0)"
        ),
        "queue": _sum("", "nv_inference_pending_request_count{selector}"),
        "running": _TRITON_RUNNING,
        "streams": _TRITON_RUNNING,
    },
    "tgi": {
        "rps": _sum("rate", "tgi_request_count{selector}"),
        "queue": _sum("", "tgi_queue_size{selector}"),
        "running": _TGI_RUNNING,
        "streams": _TGI_RUNNING,
        "tokens_ps": (
            f"{_sum('rate', 'tgi_request_input_length_sum{selector}')}"
            f" + {_sum('rate', 'tgi_request_generated_tokens_sum{selector}')}"
        ),
    },
    "dcgm": {
        "streams": "sum by ({by}) (DCGM_FI_DEV_GPU_UTIL{selector}) / 100",
    },
    "custom": {},
}

_PLACEHOLDERS = ("{by}", "{selector}", "{matchers}", "{window}")
_PLACEHOLDER_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
# A range selector: `[{window}]`, `[5m]`, `[90s]`, a subquery `[5m:30s]`.
_RANGE_RE = re.compile(r"\[\s*(\{window\}|\d+(ms|[smhdwy]))")
# Prometheus refuses range queries of more than 11,000 points per series.
PROMETHEUS_MAX_POINTS = 11_000


# -- configuration --------------------------------------------------------------------------


class PrometheusSourceConfig(BaseModel):
    """How to reach Prometheus and what window to read. Durations in seconds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str = Field(min_length=1, description="Base URL, e.g. http://prometheus:9090.")
    window_s: float = Field(default=600.0, gt=0, description="Span of each observe() window.")
    step_s: float = Field(
        default=15.0, gt=0, description="Range-query resolution; the scrape interval."
    )
    timeout_s: float = Field(default=10.0, gt=0, description="Per HTTP request.")
    attempts: int = Field(default=3, ge=1, le=10, description="Tries per query (1 = no retry).")
    backoff_s: float = Field(
        default=0.25, ge=0, description="Wait before the 2nd try; doubles for each later try."
    )
    retry_budget_s: float = Field(
        default=10.0,
        gt=0,
        description="Bound on the time spent retrying one query: no retry whose backoff "
        "would end past this many seconds after the retries began.",
    )
    headers: dict[str, str] = Field(default_factory=dict, description="Extra HTTP headers.")
    bearer_token_file: str | None = Field(
        default=None,
        description="Sent as 'Authorization: Bearer'; re-read on every observe()/history().",
    )
    verify_tls: bool = Field(default=True, description="Verify the server certificate.")
    ca_file: str | None = Field(default=None, description="CA bundle to verify it with.")
    max_selector_chars: int = Field(
        default=4096,
        ge=64,
        description="Longer workload-name selectors fall back to namespaces only.",
    )
    incremental: bool = Field(
        default=True,
        description="observe() re-reads only the end of the window and reuses the rest.",
    )
    refetch_s: float = Field(
        default=30.0,
        ge=0,
        description="How far before the previous window's end observe() reads again: covers "
        "scrapes that land late (scrape_timeout), staleness markers, rule or remote-write lag.",
    )
    max_parallel_queries: int = Field(
        default=4, ge=1, le=32, description="Range queries in flight at once (1 = in turn)."
    )
    max_points_per_query: int = Field(
        default=PROMETHEUS_MAX_POINTS,
        ge=2,
        le=PROMETHEUS_MAX_POINTS,
        description="history() splits longer ranges into several queries.",
    )

    @model_validator(mode="after")
    def _check(self) -> PrometheusSourceConfig:
        problems = []
        if self.step_s > self.window_s:
            problems.append(
                f"step_s must be <= window_s; found step_s={self.step_s}, window_s={self.window_s}"
            )
        if not re.match(r"^https?://", self.url):
            problems.append(f"url must start with http:// or https://; found {self.url!r}")
        if self.ca_file is not None and not self.verify_tls:
            problems.append("ca_file is set but verify_tls is false")
        if problems:
            raise ValueError("; ".join(problems))
        return self


# -- query planning (pure) ------------------------------------------------------------------


def _regex_literal(value: str) -> str:
    """`value` as an RE2 literal (escape metacharacters)."""
    return re.sub(r"([\\.+*?()|\[\]{}^$])", r"\\\1", value)


def _promql_string(value: str) -> str:
    """A double-quoted PromQL string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _matcher(label: str, values: Sequence[str]) -> str:
    if len(values) == 1:
        return f"{label}={_promql_string(values[0])}"
    return f"{label}=~{_promql_string('|'.join(_regex_literal(v) for v in values))}"


def _prefill(template: str, namespace_label: str, workload_label: str, rate_window_s: int) -> str:
    """Fill `{by}` and `{window}`; raise ValueError naming an unknown `{placeholder}`."""
    unknown = sorted({m.group(0) for m in _PLACEHOLDER_RE.finditer(template)} - set(_PLACEHOLDERS))
    if unknown:
        raise ValueError(
            f"unknown placeholder(s) {', '.join(unknown)}; known: {', '.join(_PLACEHOLDERS)}"
        )
    return template.replace("{by}", f"{namespace_label}, {workload_label}").replace(
        "{window}", f"{rate_window_s}s"
    )


def _fill_selector(
    template: str,
    namespace_label: str,
    workload_label: str,
    namespaces: Sequence[str],
    workloads: Sequence[str],
    max_selector_chars: int,
) -> str:
    ns_values = sorted(set(namespaces))
    wl_values = sorted(set(workloads))
    parts = []
    if ns_values:
        parts.append(_matcher(namespace_label, ns_values))
    wl_part = _matcher(workload_label, wl_values) if wl_values else ""
    if wl_part and len(wl_part) + sum(len(p) for p in parts) <= max_selector_chars:
        parts.append(wl_part)
    else:
        parts.append(f'{workload_label}!=""')
    matchers = ",".join(parts)
    return template.replace("{selector}", "{" + matchers + "}").replace("{matchers}", matchers)


def render_template(
    template: str,
    namespace_label: str,
    workload_label: str,
    rate_window_s: int,
    namespaces: Sequence[str] = (),
    workloads: Sequence[str] = (),
    max_selector_chars: int = 4096,
) -> str:
    """Fill a query template's placeholders (see the module docstring).

    The selector matches `namespaces` and, when the result stays within
    `max_selector_chars`, `workloads` by name; otherwise any non-empty workload label.
    Raises ValueError naming an unknown `{placeholder}`.
    """
    return _fill_selector(
        _prefill(template, namespace_label, workload_label, rate_window_s),
        namespace_label,
        workload_label,
        namespaces,
        workloads,
        max_selector_chars,
    )


def _family_templates(m: MetricsSpec) -> dict[str, str]:
    """family -> template for one spec: the preset, overridden by `queries` ('' = off)."""
    out = dict(PRESETS[m.preset])
    for fam, q in m.queries.items():
        if q.strip():
            out[fam] = q
        else:
            out.pop(fam, None)
    return out


RowKey = tuple[str, str]  # (namespace label value, workload label value)


@dataclass
class QueryPlan:
    """One PromQL query and the rows of each family it feeds.

    `rows[family]` maps (namespace, workload label value) to row indices; `template` is the
    unexpanded text (what error messages name), `error` set when it could not be rendered.
    """

    promql: str
    template: str
    namespace_label: str
    workload_label: str
    rows: dict[str, dict[RowKey, list[int]]] = field(default_factory=dict)
    error: str | None = None

    @property
    def families(self) -> list[str]:
        return list(self.rows)

    @property
    def reads_a_range(self) -> bool:
        """The query reads a range vector (`rate(x[{window}])`, `deriv(...[5m])`)."""
        return _RANGE_RE.search(self.template) is not None


@dataclass
class _Block:
    """One query's per-series windows on a grid: what the next observe() reuses.

    keys: (namespace, workload) -> row of `values`/`flags` ([k, s]); values NaN where
    absent or dropped; flags 1 = non-finite dropped, 2 = negative dropped."""

    t0_s: float
    step_s: float
    keys: dict[RowKey, int]
    values: F64
    flags: np.ndarray


def plan_queries(
    workloads: Sequence[Workload], max_selector_chars: int = 4096
) -> tuple[list[QueryPlan], dict[str, list[int]]]:
    """Group workloads into the fewest queries: one per distinct rendered query.

    Returns the plans and, per family, the rows that asked for it (for staleness and
    for deciding which families the result carries).
    """
    # (family, template with {by} and {window} filled, ns label, wl label) -> rows; a
    # template that does not use {window} is one group whatever the workloads' windows.
    groups: dict[tuple[str, str, str, str], list[int]] = {}
    original: dict[tuple[str, str, str, str], str] = {}
    bad: dict[tuple[str, str], tuple[str, list[int]]] = {}  # (family, template) -> why, rows
    cache: dict[tuple[Any, ...], dict[str, str]] = {}
    wanted: dict[str, list[int]] = {}
    for i, w in enumerate(workloads):
        m = w.spec.metrics
        ck = (m.preset, tuple(sorted(m.queries.items())))
        templates = cache.get(ck)
        if templates is None:
            templates = cache[ck] = _family_templates(m)
        for fam, tpl in templates.items():
            wanted.setdefault(fam, []).append(i)
            try:
                filled = _prefill(tpl, m.namespace_label, m.workload_label, m.rate_window_s)
            except ValueError as e:
                bad.setdefault((fam, tpl), (str(e), []))[1].append(i)
                continue
            key = (fam, filled, m.namespace_label, m.workload_label)
            groups.setdefault(key, []).append(i)
            original.setdefault(key, tpl)

    plans: dict[str, QueryPlan] = {}
    for key, rows in groups.items():
        fam, filled, ns_label, wl_label = key
        members = [workloads[i] for i in rows]
        promql = _fill_selector(
            filled,
            ns_label,
            wl_label,
            [w.namespace for w in members],
            [w.series_name for w in members],
            max_selector_chars,
        )
        plan = plans.get(promql)
        if plan is None:
            plan = plans[promql] = QueryPlan(promql, original[key], ns_label, wl_label)
        by_key = plan.rows.setdefault(fam, {})
        for i, w in zip(rows, members, strict=True):
            by_key.setdefault((w.namespace, w.series_name), []).append(i)
    failed: list[QueryPlan] = []
    for (fam, tpl), (why, rows) in bad.items():
        msg = f"{fam}: bad query template ({why}): {_short(tpl)}"
        plan = QueryPlan("", tpl, "", "", error=msg)
        by_key = plan.rows.setdefault(fam, {})
        for i in rows:
            by_key.setdefault((workloads[i].namespace, workloads[i].series_name), []).append(i)
        failed.append(plan)
    return [*plans.values(), *failed], wanted


def _short(text: str, limit: int = 240) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- errors from the client -----------------------------------------------------------------


class _QueryRejected(Exception):
    """Prometheus refused this one query (4xx other than auth); other queries may work."""


class _Retryable(Exception):
    """A try failed in a way another try may not (connection, timeout, 408/429/5xx)."""


_ERRNO_RE = re.compile(r"\[Errno -?\d+\] [^'\")\]]+")
_STATUS_RE = re.compile(r"HTTP Status Code (\d{3})")
_ERROR_TYPE_RE = re.compile(r'"errorType"\s*:\s*"([^"]*)"')
_ERROR_RE = re.compile(r'"error"\s*:\s*"((?:[^"\\]|\\.)*)"')


def _describe_http_error(e: PrometheusApiClientException) -> tuple[int | None, str]:
    """(status, short text) from the client's exception, whose message embeds both."""
    msg = str(e)
    m = _STATUS_RE.search(msg)
    status = int(m.group(1)) if m else None
    kind, err = _ERROR_TYPE_RE.search(msg), _ERROR_RE.search(msg)
    if err:
        detail = (f"{kind.group(1)}: " if kind else "") + err.group(1)
    else:
        detail = msg
    return status, f"HTTP {status} {_short(detail, 300)}" if status else _short(detail, 300)


# -- the source -----------------------------------------------------------------------------


class PrometheusMetricsSource:
    """`autoscaler.protocols.MetricsSource` over Prometheus (see the module docstring).

    `now_s`, `start_s`, `end_s` are Unix time in seconds (Prometheus' clock). Counters for
    tests and benchmarks: `queries_total` (queries issued, retries not counted),
    `requests_total` (HTTP requests, retries counted); `last_queries` holds the PromQL of the
    latest observe()/history(), `last_fetched_points` the grid points each of its requests
    asked for. `sleep` waits between retries (injectable for tests).

    One observe()/history() at a time (the control loop's tick); the queries inside one call
    run on a small thread pool, released by close().
    """

    def __init__(
        self,
        config: PrometheusSourceConfig,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config
        self._sleep = sleep
        session = requests.Session()
        session.verify = config.ca_file if config.ca_file else config.verify_tls
        # Retries are ours (bounded, classed by status); the client's own adapter must not
        # retry on top of them.
        self._client = PrometheusConnect(
            url=config.url.rstrip("/"),
            headers=dict(config.headers),
            retry=Retry(total=0, read=False),
            session=session,
            timeout=config.timeout_s,  # type: ignore[arg-type]  # annotated int, float works
        )
        self.queries_total = 0
        self.requests_total = 0
        self.last_queries: list[str] = []
        self.last_fetched_points: list[int] = []
        self._count_lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._blocks: dict[str, _Block] = {}

    @classmethod
    def from_url(cls, url: str, **settings: Any) -> PrometheusMetricsSource:
        """Shorthand: `PrometheusMetricsSource.from_url("http://...", window_s=300)`."""
        return cls(PrometheusSourceConfig(url=url, **settings))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._client.close()

    def __enter__(self) -> PrometheusMetricsSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- MetricsSource ----------------------------------------------------------------------

    def observe(self, workloads: Sequence[Workload], now_s: float) -> MetricWindows:
        """The last `window_s` seconds for every workload at `step_s`, on a step-aligned grid.

        Returns metrics family -> [n, s] float64 (NaN = missing), for the families at least
        one workload asks for. Raises TemporaryError when Prometheus is unreachable,
        PermanentError on 401/403/404.
        """
        if not math.isfinite(now_s):
            raise ValueError(f"now_s must be finite; found {now_s}")
        step = self.config.step_s
        # The newest grid point is the first one at or after now: Prometheus evaluates it with
        # the latest sample scraped so far, so a scrape that landed a moment ago is seen now
        # instead of one step later (the next tick re-reads it within refetch_s). Aligning
        # down instead would add up to a step to every reaction. Range queries stop a step
        # earlier (_windows).
        end = math.ceil(now_s / step - 1e-9) * step
        n_steps = int(math.floor(self.config.window_s / step + 1e-9))
        return self._windows(
            workloads, end - n_steps * step, end, step, now_s, reuse=self.config.incremental
        )

    def history(
        self, workloads: Sequence[Workload], start_s: float, end_s: float, step_s: float
    ) -> MetricWindows:
        """[start_s, end_s] at `step_s` (grid aligned down to multiples of the step).

        Ranges longer than `max_points_per_query` points are read in several chunks (each
        chunk one query per distinct query). Staleness is judged at `end_s`. The answer grows
        with workloads x points (about 30 bytes a point): to seed thousands of workloads with
        a day, prefer a coarser step (60 s: 1,441 points) over the 15 s of a tick.
        """
        if not (math.isfinite(start_s) and math.isfinite(end_s) and math.isfinite(step_s)):
            raise ValueError(
                f"start_s, end_s, step_s must be finite; found {start_s}, {end_s}, {step_s}"
            )
        if step_s <= 0 or start_s > end_s:
            raise ValueError(
                f"need step_s > 0 and start_s <= end_s; found start_s={start_s}, "
                f"end_s={end_s}, step_s={step_s}"
            )
        start = math.floor(start_s / step_s) * step_s
        end = math.floor(end_s / step_s) * step_s
        return self._windows(workloads, start, end, step_s, end_s)

    # -- internals --------------------------------------------------------------------------

    def _windows(
        self,
        workloads: Sequence[Workload],
        start: float,
        end: float,
        step: float,
        ref_now_s: float,
        reuse: bool = False,
    ) -> MetricWindows:
        """Query every plan over the grid [start, end] and assemble the windows.

        reuse: take the part of the grid the previous call already read from its blocks and
        query only from `refetch_s` before that call's end (observe()); history() reads all.
        """
        n = len(workloads)
        n_samples = int(round((end - start) / step)) + 1
        t_s: F64 = start + step * np.arange(n_samples, dtype=np.float64)
        plans, wanted = plan_queries(workloads, self.config.max_selector_chars)
        metrics: dict[str, F64] = {
            fam: np.full((n, n_samples), np.nan) for fam in METRIC_FAMILIES if fam in wanted
        }
        errors: dict[int, list[str]] = {}
        family_failed: dict[str, set[int]] = {}

        def fail(plan: QueryPlan, message: str) -> None:
            for fam, by_key in plan.rows.items():
                for ix in by_key.values():
                    metrics[fam][ix, :] = np.nan
                    for i in ix:
                        errors.setdefault(i, []).append(message.replace("{family}", fam))
                        family_failed.setdefault(fam, set()).add(i)

        for plan in plans:
            if plan.error is not None:
                fail(plan, plan.error)
        good = [p for p in plans if p.error is None]
        self.last_queries = [p.promql for p in good]
        # Per plan: the block to reuse and the first grid column to query.
        previous = [self._blocks.get(p.promql) if reuse else None for p in good]
        first_col = [self._first_column(b, t_s, step) for b in previous]
        # A range query at a grid point after now extrapolates past its newest sample and
        # reads low (module docstring): it stops at the last grid point at or before now,
        # and its newest column repeats that one until the next observe() re-reads it.
        beyond_now = n_samples >= 2 and float(t_s[-1]) > ref_now_s + 1e-6
        stop = [n_samples - 1 if beyond_now and p.reads_a_range else n_samples for p in good]
        chunk = self.config.max_points_per_query
        tasks = [
            (k, lo, min(stop[k], lo + chunk))
            for k in range(len(good))
            for lo in range(first_col[k], stop[k], chunk)
        ]
        if tasks:
            self._client.headers = self._headers()  # token re-read once per call
        answers = self._run_all(
            [(good[k].promql, float(t_s[lo]), float(t_s[hi - 1]), step) for k, lo, hi in tasks]
        )
        self.last_fetched_points = [hi - lo for _, lo, hi in tasks]
        by_plan: list[list[list[dict[str, Any]]]] = [[] for _ in good]
        rejected: dict[int, str] = {}
        for (k, _, _), answer in zip(tasks, answers, strict=True):
            if isinstance(answer, _QueryRejected):
                rejected.setdefault(k, str(answer))
            else:
                by_plan[k].append(answer)
        blocks: dict[str, _Block] = {}
        for k, plan in enumerate(good):
            if k in rejected:
                fail(plan, f"{{family}}: query rejected ({rejected[k]}): {_short(plan.template)}")
                continue
            prev = previous[k] if first_col[k] > 0 else None
            block, dup, unlabelled = self._build_block(
                plan, by_plan[k], t_s, step, first_col[k], prev
            )
            if stop[k] < n_samples:
                block.values[:, stop[k] :] = block.values[:, stop[k] - 1 : stop[k]]
                block.flags[:, stop[k] :] = 0  # a dropped value is reported once
            blocks[plan.promql] = block
            self._scatter(plan, block, metrics, errors, dup, unlabelled)
        if reuse:
            self._blocks = blocks  # only the current plans: a changed query starts afresh

        stale = self._staleness(workloads, t_s, metrics, wanted, family_failed, ref_now_s, errors)
        return MetricWindows(
            t_s=t_s,
            metrics=metrics,
            stale=stale,
            errors={i: "; ".join(msgs) for i, msgs in sorted(errors.items())},
        )

    def _first_column(self, prev: _Block | None, t_s: F64, step: float) -> int:
        """First grid column to query: 0, or `refetch_s` before the previous block's end."""
        if prev is None or prev.step_s != step or prev.values.shape[1] == 0:
            return 0
        offset = (t_s[0] - prev.t0_s) / step
        if abs(offset - round(offset)) > 1e-6 or offset < 0:
            return 0  # another grid
        prev_end = prev.t0_s + (prev.values.shape[1] - 1) * step
        if prev_end < t_s[0]:
            return 0  # no overlap: the previous tick is older than the window
        # Re-read what late scrapes, staleness markers or rule lag may still change.
        col = int(math.ceil((prev_end - self.config.refetch_s - float(t_s[0])) / step - 1e-9))
        return max(0, min(col, int(t_s.shape[0]) - 1))

    def _run_all(
        self, queries: list[tuple[str, float, float, float]]
    ) -> list[list[dict[str, Any]] | _QueryRejected]:
        """Run range queries; answers in input order (a rejected one as its `_QueryRejected`).

        First pass: up to `max_parallel_queries` at once, one try each, so Prometheus
        evaluates them side by side while this process parses the answers already in.
        Then the tries that failed in a retryable way are retried one query at a time with
        backoff; the first that still fails raises TemporaryError and ends the call. A
        backend that is down thus sees n_queries + attempts - 1 requests a tick, and one
        backoff sequence, not one per query."""
        with self._count_lock:
            self.queries_total += len(queries)
        width = min(self.config.max_parallel_queries, len(queries))
        if width <= 1:
            first = [self._try(q) for q in queries]
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=self.config.max_parallel_queries, thread_name_prefix="promql"
                )
            futures = [self._pool.submit(self._try, q) for q in queries]
            wait(futures)
            errors = [f.exception() for f in futures]
            # PermanentError (auth, wrong path) or a bug: raise the first, in input order
            raised = next((e for e in errors if e is not None), None)
            if raised is not None:
                raise raised
            first = [f.result() for f in futures]
        out: list[list[dict[str, Any]] | _QueryRejected] = []
        for q, answer in zip(queries, first, strict=True):
            if isinstance(answer, _Retryable):
                answer = self._retry(q, answer)
            out.append(answer)
        return out

    def _build_block(
        self,
        plan: QueryPlan,
        answers: list[list[dict[str, Any]]],
        t_s: F64,
        step: float,
        first_col: int,
        prev: _Block | None,
    ) -> tuple[_Block, set[RowKey], int]:
        """Per-series windows of one plan: `prev` for columns < first_col, answers after.

        Vectorised over each answer: one float conversion and one scatter (1,000 series
        cost a few numpy calls, not a few per series). Returns the block, the keys that came
        back as several series (the query does not aggregate by both labels) and the number
        of series that lack a grouping label."""
        ns_label, wl_label = plan.namespace_label, plan.workload_label
        asked: set[RowKey] = {rk for by_key in plan.rows.values() for rk in by_key}
        keys: dict[RowKey, int] = dict(prev.keys) if prev is not None else {}
        dup: set[RowKey] = set()
        unlabelled = 0
        flat: list[Any] = []  # [t, "v"] pairs of every kept series, back to back
        key_of: list[int] = []  # per kept series: its key index, and its number of pairs
        len_of: list[int] = []
        for result in answers:
            seen: set[RowKey] = set()
            for series in result:
                labels = series.get("metric", {})
                ns, wl = labels.get(ns_label), labels.get(wl_label)
                if ns is None or wl is None:
                    unlabelled += 1
                    continue
                rk: RowKey = (str(ns), str(wl))
                if rk not in asked:
                    continue  # a workload nobody asked about (namespace-wide selector)
                if rk in seen:
                    dup.add(rk)
                    continue
                seen.add(rk)
                values = series.get("values") or []
                key_of.append(keys.setdefault(rk, len(keys)))
                len_of.append(len(values))
                flat.extend(values)
        n_cols = t_s.shape[0]
        vals = np.full((len(keys), n_cols), np.nan)
        flags = np.zeros((len(keys), n_cols), dtype=np.int8)
        if prev is not None and first_col > 0:
            off = int(round((t_s[0] - prev.t0_s) / prev.step_s))
            k_prev = prev.values.shape[0]
            vals[:k_prev, :first_col] = prev.values[:, off : off + first_col]
            flags[:k_prev, :first_col] = prev.flags[:, off : off + first_col]
        if flat:
            t = np.fromiter((p[0] for p in flat), np.float64, len(flat))
            v = np.fromiter((float(p[1]) for p in flat), np.float64, len(flat))
            col = np.rint((t - t_s[0]) / step).astype(np.int64)
            row = np.repeat(np.asarray(key_of, dtype=np.int64), np.asarray(len_of))
            keep = (col >= first_col) & (col < n_cols)
            col, row, v = col[keep], row[keep], v[keep]
            bad = ~np.isfinite(v)
            neg = v < 0  # False for NaN
            vals[row, col] = np.where(bad | neg, np.nan, v)
            flags[row, col] = np.where(bad, 1, np.where(neg, 2, 0))
        for rk in dup:
            vals[keys[rk], :] = np.nan
            flags[keys[rk], :] = 0
        # forget series with nothing left in the window (gone workloads, old pods)
        alive = ~np.isnan(vals).all(axis=1) | (flags != 0).any(axis=1)
        if not alive.all():
            order = sorted(keys, key=keys.__getitem__)
            kept = [rk for rk, a in zip(order, alive, strict=True) if a]
            keys = {rk: i for i, rk in enumerate(kept)}
            vals, flags = vals[alive], flags[alive]
        return _Block(float(t_s[0]), step, keys, vals, flags), dup, unlabelled

    @staticmethod
    def _scatter(
        plan: QueryPlan,
        block: _Block,
        metrics: dict[str, F64],
        errors: dict[int, list[str]],
        dup: set[RowKey],
        unlabelled: int,
    ) -> None:
        """Copy a plan's per-series windows into the rows that asked, with their messages."""
        ns_label, wl_label = plan.namespace_label, plan.workload_label
        for fam, by_key in plan.rows.items():
            rows: list[int] = []
            src: list[int] = []
            for rk, ix in by_key.items():
                ki = block.keys.get(rk)
                if rk in dup:
                    for i in ix:
                        errors.setdefault(i, []).append(
                            f"{fam}: query returned several series for {rk[0]}/{rk[1]}; it must "
                            f"aggregate by ({ns_label}, {wl_label}): {_short(plan.template)}"
                        )
                elif ki is not None:
                    rows.extend(ix)
                    src.extend([ki] * len(ix))
            if rows:
                metrics[fam][rows] = block.values[src]
                f = block.flags[src]
                n_bad, n_neg = (f == 1).sum(axis=1), (f == 2).sum(axis=1)
                for j in np.flatnonzero(n_bad + n_neg):
                    if n_bad[j]:
                        errors.setdefault(rows[j], []).append(
                            f"{fam}: {n_bad[j]} non-finite sample(s) dropped"
                        )
                    if n_neg[j]:
                        errors.setdefault(rows[j], []).append(
                            f"{fam}: {n_neg[j]} negative sample(s) dropped"
                        )
            if unlabelled and not block.keys:
                # e.g. a custom `sum(x)` without `by`: nothing can be attributed to a workload
                for ix in by_key.values():
                    for i in ix:
                        errors.setdefault(i, []).append(
                            f"{fam}: {unlabelled} series lack the {ns_label!r} or {wl_label!r} "
                            f"label; aggregate by ({ns_label}, {wl_label}): "
                            f"{_short(plan.template)}"
                        )

    @staticmethod
    def _staleness(
        workloads: Sequence[Workload],
        t_s: F64,
        metrics: dict[str, F64],
        wanted: dict[str, list[int]],
        family_failed: dict[str, set[int]],
        ref_now_s: float,
        errors: dict[int, list[str]],
    ) -> np.ndarray:
        """stale[i]: no family of row i has a sample within its stale_after_s of ref_now_s."""
        n = len(workloads)
        s = int(t_s.shape[0])
        newest: dict[str, F64] = {}
        for fam, arr in metrics.items():
            finite = np.isfinite(arr)
            has = finite.any(axis=1)
            last = s - 1 - np.argmax(finite[:, ::-1], axis=1)
            newest[fam] = np.where(has, t_s[last], -np.inf)
        stale = np.ones(n, dtype=bool)
        limit = np.array([w.spec.metrics.stale_after_s for w in workloads], dtype=np.float64)
        fresh_by_fam: dict[str, np.ndarray] = {}
        for fam, rows in wanted.items():
            age = ref_now_s - newest[fam][rows]
            fresh = age <= limit[rows]
            fresh_by_fam[fam] = fresh
            stale[np.asarray(rows)[fresh]] = False
        for fam, rows in wanted.items():
            failed = family_failed.get(fam, set())
            for i, fresh in zip(rows, fresh_by_fam[fam], strict=True):
                if fresh or stale[i] or i in failed:
                    continue
                t_new = newest[fam][i]
                errors.setdefault(i, []).append(
                    f"{fam}: no sample in the window"
                    if not np.isfinite(t_new)
                    else f"{fam}: newest sample {ref_now_s - t_new:.0f} s old "
                    f"(stale_after_s={limit[i]:g})"
                )
        configured = np.zeros(n, dtype=bool)
        for rows in wanted.values():
            configured[rows] = True
        for row in np.flatnonzero(stale):
            i = int(row)
            if not configured[i]:
                errors.setdefault(i, []).append(
                    "stale: no metric family configured (preset without families and no "
                    "metrics.queries)"
                )
                continue
            t_new = max((newest[f][i] for f in metrics), default=-np.inf)
            errors.setdefault(i, []).append(
                f"stale: no sample of any family in the last {ref_now_s - t_s[0]:.0f} s"
                if not np.isfinite(t_new)
                else f"stale: newest sample {ref_now_s - t_new:.0f} s old "
                f"(stale_after_s={limit[i]:g})"
            )
        return stale

    def _headers(self) -> dict[str, str]:
        headers = dict(self.config.headers)
        path = self.config.bearer_token_file
        if path is not None:
            try:
                token = Path(path).read_text().strip()
            except OSError as e:
                raise PermanentError(
                    f"cannot read bearer_token_file {path}: {e.strerror or e}"
                ) from e
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def _try(
        self, query: tuple[str, float, float, float]
    ) -> list[dict[str, Any]] | _QueryRejected | _Retryable:
        """One HTTP request for one range query: its `data.result`, or why it failed.

        Raises PermanentError on 401/403/404."""
        promql, start, end, step = query
        cfg = self.config
        with self._count_lock:
            self.requests_total += 1
        # The client rounds datetimes to whole seconds; the params below override them with
        # the exact grid (a fractional step must keep its phase).
        params = {
            "start": repr(float(start)),
            "end": repr(float(end)),
            "timeout": f"{cfg.timeout_s:g}s",
        }
        try:
            result = self._client.custom_query_range(
                promql,
                start_time=datetime.fromtimestamp(start, tz=UTC),
                end_time=datetime.fromtimestamp(end, tz=UTC),
                step=f"{step:g}",
                params=params,
            )
            if not isinstance(result, list):
                raise ValueError(f"unexpected answer shape {type(result).__name__}")
            return result
        except PrometheusApiClientException as e:
            status, text = _describe_http_error(e)
            if status in (401, 403, 404):
                raise PermanentError(f"Prometheus at {cfg.url} refused the query: {text}") from e
            if status is not None and 400 <= status < 500 and status not in (408, 429):
                return _QueryRejected(text)
            return _Retryable(text)
        except requests.Timeout:
            return _Retryable(f"no answer within timeout_s={cfg.timeout_s:g}")
        except requests.ConnectionError as e:
            errno = _ERRNO_RE.findall(str(e))
            return _Retryable(f"connection failed ({errno[-1] if errno else _short(str(e), 200)})")
        except (requests.RequestException, ValueError, KeyError, TypeError) as e:
            # TypeError/KeyError/ValueError: a 200 that is not a Prometheus API answer
            return _Retryable(f"{type(e).__name__}: {_short(str(e), 200)}")

    def _retry(
        self, query: tuple[str, float, float, float], failed: _Retryable
    ) -> list[dict[str, Any]] | _QueryRejected:
        """Retry a query whose first try failed: exponential backoff from `backoff_s`, at
        most `attempts` tries in all, no try whose backoff ends past `retry_budget_s`."""
        cfg = self.config
        t_first = time.monotonic()
        delay = cfg.backoff_s
        last: list[dict[str, Any]] | _QueryRejected | _Retryable = failed
        attempt = 1
        while attempt < cfg.attempts and time.monotonic() + delay - t_first <= cfg.retry_budget_s:
            self._sleep(delay)
            delay *= 2
            attempt += 1
            last = self._try(query)
            if not isinstance(last, _Retryable):
                return last
        raise TemporaryError(
            f"Prometheus at {cfg.url} unavailable after {attempt} attempt(s): {last}",
            delay_s=delay,
        )
