"""A real Prometheus server scraping a real, test-driven exporter, both on 127.0.0.1.

Reuse from any test module (fixtures are module-scoped: one Prometheus per module):

    from tests.prom_fixtures import prom_exporter, prom_server  # noqa: F401

    pytestmark = pytest.mark.prometheus

    def test_x(prom_server, prom_exporter):
        prom_exporter.set_gauge("vllm:num_requests_waiting", "ns", "wl", 3)
        prom_server.wait_scraped()

`MetricsExporter` serves vLLM-named series (or any names) labelled namespace/workload/pod
through prometheus_client's HTTP server and its own CollectorRegistry. Counters are driven by
rates: their value is computed at scrape time from the wall clock, so a rate holds exactly
without a thread incrementing anything. `PrometheusServer` runs /usr/bin/prometheus (Debian
package `prometheus`) on a free port with a temporary data dir and a 1 s scrape interval; it
can be killed and restarted on the same port and data, and can backfill history with
`promtool tsdb create-blocks-from openmetrics` before it starts.

Without the binary, the fixtures skip with the reason.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest
from prometheus_client import CollectorRegistry, make_wsgi_app, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector

PROMETHEUS_BIN = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL_BIN = shutil.which("promtool") or "/usr/bin/promtool"

# vLLM v1 names (algorithms.md section 5); counters are named without `_total` here and
# exposed with it, as prometheus_client does.
VLLM_WAITING = "vllm:num_requests_waiting"
VLLM_RUNNING = "vllm:num_requests_running"
VLLM_SUCCESS = "vllm:request_success"
VLLM_PROMPT_TOKENS = "vllm:prompt_tokens"
VLLM_GENERATION_TOKENS = "vllm:generation_tokens"
LABELS = ("namespace", "workload", "pod", "model_name")


def have_prometheus() -> bool:
    return os.access(PROMETHEUS_BIN, os.X_OK)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class _Linear:
    """A value that moves at a constant rate: base at t0_s, then + rate_per_s * elapsed."""

    base: float
    rate_per_s: float
    t0_s: float

    def value(self, now_s: float) -> float:
        if self.rate_per_s == 0.0:
            return self.base  # NaN and +-Inf stay as set
        return self.base + self.rate_per_s * (now_s - self.t0_s)


SeriesKey = tuple[str, str, str, str]  # metric, namespace, workload, pod


class _DrivenCollector(Collector):
    """Builds every metric family at scrape time from the state the test set."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.gauges: dict[SeriesKey, _Linear] = {}
        self.counters: dict[SeriesKey, _Linear] = {}

    def collect(self) -> Iterable[Metric]:
        now = time.time()
        with self.lock:
            gauges = {k: g.value(now) for k, g in self.gauges.items()}
            counters = {k: c.value(now) for k, c in self.counters.items()}
        g_families: dict[str, GaugeMetricFamily] = {}
        for (name, ns, wl, pod), value in gauges.items():
            g = g_families.get(name)
            if g is None:
                g = g_families[name] = GaugeMetricFamily(name, f"{name} (test)", labels=LABELS)
            g.add_metric([ns, wl, pod, wl], value)
        c_families: dict[str, CounterMetricFamily] = {}
        for (name, ns, wl, pod), value in counters.items():
            c = c_families.get(name)
            if c is None:
                labels = (*LABELS, "finished_reason") if name == VLLM_SUCCESS else LABELS
                c = c_families[name] = CounterMetricFamily(name, f"{name} (test)", labels=labels)
            extra = ["stop"] if name == VLLM_SUCCESS else []
            c.add_metric([ns, wl, pod, wl, *extra], value)
        yield from g_families.values()
        yield from c_families.values()


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


class MetricsExporter:
    """A prometheus_client HTTP exporter on 127.0.0.1 whose series the test drives.

    Series are keyed by (metric, namespace, workload, pod); labels exposed: namespace,
    workload, pod, model_name (= workload), plus finished_reason="stop" on
    vllm:request_success_total. Values may be NaN, +-Inf or negative (gauges) on purpose.

    exposition="negotiated": prometheus_client's own `start_http_server`, which answers
    Prometheus 2.x with OpenMetrics and, in prometheus_client 0.26, writes `vllm:x` samples as
    `vllm_x` (prometheus/client_python#1177) - what a vLLM pod does today.
    exposition="text": the same registry through `make_wsgi_app` with the Accept header
    dropped, so the text format 0.0.4 keeps the `vllm:` names.
    """

    def __init__(self, exposition: Literal["negotiated", "text"] = "negotiated") -> None:
        self.exposition = exposition
        self.registry = CollectorRegistry()
        self._collector = _DrivenCollector()
        self.registry.register(self._collector)
        self.port = 0
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.port = free_port()
        if self.exposition == "negotiated":
            self._server, self._thread = start_http_server(
                self.port, addr="127.0.0.1", registry=self.registry
            )
            return
        app = make_wsgi_app(self.registry)

        def text_only(environ: dict[str, Any], start_response: Any) -> Any:
            environ.pop("HTTP_ACCEPT", None)
            return app(environ, start_response)

        self._server = make_server(
            "127.0.0.1", self.port, text_only, ThreadingWSGIServer, handler_class=_QuietHandler
        )
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    # -- driving ----------------------------------------------------------------------------

    def set_gauge(
        self,
        metric: str,
        namespace: str,
        workload: str,
        value: float,
        pod: str = "pod-0",
        slope_per_s: float = 0.0,
    ) -> None:
        """Serve `value` now; with `slope_per_s` the gauge then moves linearly (a ramp)."""
        with self._collector.lock:
            self._collector.gauges[(metric, namespace, workload, pod)] = _Linear(
                float(value), float(slope_per_s), time.time()
            )

    def set_rate(
        self, metric: str, namespace: str, workload: str, per_s: float, pod: str = "pod-0"
    ) -> None:
        """From now on the counter grows by `per_s` per second (its value carries on)."""
        if per_s < 0:
            raise ValueError(f"a counter cannot decrease; found per_s={per_s}")
        now = time.time()
        key = (metric, namespace, workload, pod)
        with self._collector.lock:
            old = self._collector.counters.get(key)
            base = old.value(now) if old is not None else 0.0
            self._collector.counters[key] = _Linear(base, float(per_s), now)

    def inc(
        self, metric: str, namespace: str, workload: str, amount: float, pod: str = "pod-0"
    ) -> None:
        if amount < 0:
            raise ValueError(f"a counter cannot decrease; found amount={amount}")
        key = (metric, namespace, workload, pod)
        with self._collector.lock:
            c = self._collector.counters.setdefault(key, _Linear(0.0, 0.0, time.time()))
            c.base += amount

    def set_vllm(
        self,
        namespace: str,
        workload: str,
        waiting: float,
        running: float,
        success_rps: float,
        prompt_tps: float,
        generation_tps: float,
        pod: str = "pod-0",
    ) -> None:
        """All five vLLM series of one pod at once."""
        self.set_gauge(VLLM_WAITING, namespace, workload, waiting, pod)
        self.set_gauge(VLLM_RUNNING, namespace, workload, running, pod)
        self.set_rate(VLLM_SUCCESS, namespace, workload, success_rps, pod)
        self.set_rate(VLLM_PROMPT_TOKENS, namespace, workload, prompt_tps, pod)
        self.set_rate(VLLM_GENERATION_TOKENS, namespace, workload, generation_tps, pod)

    def remove(self, namespace: str, workload: str) -> int:
        """Stop serving every series of the workload (Prometheus marks them stale)."""
        c = self._collector
        with c.lock:
            gone = [k for k in c.gauges if k[1:3] == (namespace, workload)]
            gone_c = [k for k in c.counters if k[1:3] == (namespace, workload)]
            for k in gone:
                del c.gauges[k]
            for k in gone_c:
                del c.counters[k]
        return len(gone) + len(gone_c)

    def n_series(self) -> int:
        with self._collector.lock:
            return len(self._collector.gauges) + len(self._collector.counters)


class PrometheusServer:
    """/usr/bin/prometheus on 127.0.0.1:<free port> scraping `targets` every `scrape_interval_s`."""

    def __init__(
        self,
        workdir: Path,
        targets: list[str],
        scrape_interval_s: float = 1.0,
        binary: str = PROMETHEUS_BIN,
    ) -> None:
        if not os.access(binary, os.X_OK):
            raise FileNotFoundError(f"prometheus binary not found at {binary}")
        self.binary = binary
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "prometheus.log"
        self.config_path = workdir / "prometheus.yml"
        self.targets = targets
        self.scrape_interval_s = scrape_interval_s
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None
        self._write_config()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _write_config(self) -> None:
        interval = f"{int(self.scrape_interval_s * 1000)}ms"
        lines = [
            "global:",
            f"  scrape_interval: {interval}",
            f"  scrape_timeout: {interval}",
            f"  evaluation_interval: {interval}",
            "scrape_configs:",
            "  - job_name: exporter",
            "    honor_labels: true",
            "    static_configs:",
            f"      - targets: [{', '.join(repr(t) for t in self.targets)}]",
        ]
        self.config_path.write_text("\n".join(lines) + "\n")

    # -- lifecycle --------------------------------------------------------------------------

    def start(self, timeout_s: float = 30.0) -> None:
        """Start and wait until /-/ready answers 200 (bounded)."""
        if self.proc is not None and self.proc.poll() is None:
            return
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                self.binary,
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.data_dir}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1d",
                "--log.level=warn",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"prometheus exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"prometheus not ready within {timeout_s} s:\n{self.log_tail()}")

    def stop(self, timeout_s: float = 10.0) -> None:
        """Terminate, wait, kill if it does not exit."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=timeout_s)
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def kill(self) -> None:
        """SIGKILL (a crash): the next start replays the WAL from the same data dir."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.stop()

    def log_tail(self, n_chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n_chars:]
        except OSError:
            return "(no log)"

    # -- queries ----------------------------------------------------------------------------

    def query(self, promql: str, timeout_s: float = 5.0) -> list[dict[str, Any]]:
        """Instant query over the HTTP API (plain urllib: independent of the code under test)."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=timeout_s) as r:
            body = json.loads(r.read())
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def wait_for(self, promql: str, timeout_s: float = 20.0, min_results: int = 1) -> None:
        """Poll an instant query until it returns at least `min_results` series (bounded)."""
        deadline = time.monotonic() + timeout_s
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = self.query(promql)
                if len(last) >= min_results:
                    return
            except (urllib.error.URLError, OSError, ValueError) as e:
                last = e
            time.sleep(0.2)
        raise TimeoutError(
            f"{promql!r} had < {min_results} result(s) after {timeout_s} s (last: {last!r})"
        )

    def wait_scraped(self, n_scrapes: int = 2, timeout_s: float = 20.0) -> None:
        """Wait until every target has been scraped `n_scrapes` more times (bounded)."""
        query = 'count_over_time(up{job="exporter"}[1h])'

        def counts() -> list[float]:
            return [float(s["value"][1]) for s in self.query(query)]

        self.wait_for('up{job="exporter"} == 1', timeout_s, min_results=len(self.targets))
        start = counts()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            now = counts()
            if len(now) == len(start) and all(
                b - a >= n_scrapes for a, b in zip(start, now, strict=True)
            ):
                return
            time.sleep(0.1)
        raise TimeoutError(f"targets not scraped {n_scrapes} more time(s) in {timeout_s} s")

    def backfill_openmetrics(self, text: str, timeout_s: float = 120.0) -> None:
        """Write history into the data dir with promtool (only while stopped).

        `text` is OpenMetrics with timestamps in seconds, ending with '# EOF'.
        """
        if self.proc is not None:
            raise RuntimeError("backfill before start(): the server must be stopped")
        src = self.workdir / "backfill.om"
        src.write_text(text)
        subprocess.run(
            [
                PROMTOOL_BIN,
                "tsdb",
                "create-blocks-from",
                "openmetrics",
                str(src),
                str(self.data_dir),
            ],
            check=True,
            capture_output=True,
            timeout=timeout_s,
        )
        src.unlink()


def openmetrics_history(
    series: Iterable[tuple[str, str, dict[str, str], Any]],
    timestamps_s: Iterable[float],
) -> str:
    """OpenMetrics text for backfill: (family, type 'gauge'|'counter', labels, fn(t) -> value).

    Counter families are named without `_total`; samples get the suffix.
    """
    ts = list(timestamps_s)
    by_family: dict[tuple[str, str], list[tuple[dict[str, str], Any]]] = {}
    for fam, kind, labels, fn in series:
        by_family.setdefault((fam, kind), []).append((labels, fn))
    out: list[str] = []
    for (fam, kind), items in by_family.items():
        out.append(f"# TYPE {fam} {kind}")
        sample = f"{fam}_total" if kind == "counter" else fam
        for labels, fn in items:
            lab = ",".join(f'{k}="{v}"' for k, v in labels.items())
            for t in ts:
                v = float(fn(t))
                if math.isfinite(v):
                    out.append(f"{sample}{{{lab}}} {v!r} {t:.3f}")
    out.append("# EOF")
    return "\n".join(out) + "\n"


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prom_exporter() -> Iterator[MetricsExporter]:
    """A running exporter, prometheus_client's own server (module-scoped)."""
    exp = MetricsExporter("negotiated")
    exp.start()
    try:
        yield exp
    finally:
        exp.stop()


@pytest.fixture(scope="module")
def prom_exporter_text() -> Iterator[MetricsExporter]:
    """A second exporter that keeps `vllm:` names (text format), scraped by the same server."""
    exp = MetricsExporter("text")
    exp.start()
    try:
        yield exp
    finally:
        exp.stop()


@pytest.fixture(scope="module")
def prom_server(
    tmp_path_factory: pytest.TempPathFactory,
    prom_exporter: MetricsExporter,
    prom_exporter_text: MetricsExporter,
) -> Iterator[PrometheusServer]:
    """A real Prometheus scraping both exporters every second (module-scoped).

    Ready and each target scraped at least once when yielded; stopped (terminate, wait,
    kill) after.
    """
    if not have_prometheus():
        pytest.skip(f"prometheus binary not found at {PROMETHEUS_BIN} (Debian package prometheus)")
    server = PrometheusServer(
        tmp_path_factory.mktemp("prometheus"), [prom_exporter.target, prom_exporter_text.target]
    )
    server.start()
    try:
        server.wait_for('up{job="exporter"} == 1', min_results=2)
        yield server
    finally:
        server.stop()
