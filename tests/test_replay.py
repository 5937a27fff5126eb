"""GPU-backed replay on CPU: the reference model server (tiny model), the profiler's fit, the
open-loop replay, and the errors a broken endpoint gives. Everything on 127.0.0.1, bounded.

Tests that need torch are marked `torch` and skip with the reason when it is absent.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from simulator.replay.client import EndpointError, normalize_endpoint, stream_completion
from simulator.replay.profiler import ProfilePoint, fit_iterations, fit_points
from simulator.replay.replay import (
    ReplaySettings,
    compare_with_sim,
    markdown_summary,
    prepare_trace,
    replay_trace,
    simulate_slice,
)
from simulator.service import ServiceProfile
from simulator.traces import Trace, write_trace

try:
    import torch  # noqa: F401

    HAVE_TORCH = True
except ImportError:
    HAVE_TORCH = False

needs_torch = [
    pytest.mark.torch,
    pytest.mark.skipif(
        not HAVE_TORCH, reason="torch is not installed (pip install torch==2.13.0 for CPU)"
    ),
]


def _trace_file(tmp_path: Path, arrival_s: list[float], tin: int, tout: int) -> Path:
    n = len(arrival_s)
    tr = Trace(
        name="t",
        arrival_s=np.asarray(arrival_s),
        input_tokens=np.full(n, tin),
        output_tokens=np.full(n, tout),
        source="test",
    )
    return write_trace(tr, tmp_path / "trace.csv")


# ---- fakes: a stdlib HTTP server that sleeps or misbehaves ------------------------------------


class FakeServer:
    """An OpenAI-ish completions server on 127.0.0.1 (stdlib, one thread per request).

    mode: "slow" (sleep `delay_s`, then two tokens), "non_json", "no_choices", "http500",
    "no_done", "models_not_json". Records the time each request arrived and the peak
    number of requests it was handling at once."""

    def __init__(self, mode: str = "slow", delay_s: float = 0.0) -> None:
        self.mode = mode
        self.delay_s = delay_s
        self.arrived: list[float] = []
        self.in_flight = 0
        self.peak = 0
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if fake.mode == "models_not_json":
                    self._send(200, b"<html>hello</html>", "text/html")
                else:
                    body = json.dumps({"object": "list", "data": [{"id": "fake"}]}).encode()
                    self._send(200, body, "application/json")

            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length", "0"))
                self.rfile.read(n)
                with fake._lock:
                    fake.arrived.append(time.perf_counter())
                    fake.in_flight += 1
                    fake.peak = max(fake.peak, fake.in_flight)
                try:
                    time.sleep(fake.delay_s)
                    if fake.mode == "http500":
                        self._send(500, b'{"error": "engine exploded"}', "application/json")
                        return
                    chunk = {"choices": [{"index": 0, "text": "a", "finish_reason": None}]}
                    events = [f"data: {json.dumps(chunk)}\n\n"] * 2
                    if fake.mode == "non_json":
                        events.append("data: {not json at all\n\n")
                    if fake.mode == "no_choices":
                        events.append('data: {"id": "x"}\n\n')
                    if fake.mode != "no_done":
                        events.append("data: [DONE]\n\n")
                    self._send(200, "".join(events).encode(), "text/event-stream")
                finally:
                    with fake._lock:
                        fake.in_flight -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# ---- the fit (no torch) -------------------------------------------------------------------------


def _synthetic_points(
    t0: float, a: float, b: float, g: float, mbt: int, out: float = 64.0
) -> list[ProfilePoint]:
    """Points that follow the profiler's mean-field mapping exactly."""
    pts = []
    for i in (128, 512, 2048):
        for c in (1, 4, 16, 64):
            itl = t0 + a * c + b * c * (i + out / 2) / 1000 + g * c * i / out
            ttft = math.ceil(i / mbt) * t0 + g * i if c == 1 else 3 * itl
            pts.append(
                ProfilePoint(c, i, out, 20, 0, ttft, ttft, itl, 0.0, 0.0, 0.0, float(c), 5.0)
            )
    return pts


@pytest.mark.parametrize(
    "params",
    [
        pytest.param((7.0, 0.020, 0.065, 0.028), id="recovers-the-h100-default-constants"),
        pytest.param((3.2, 0.15, 0.4, 0.002), id="recovers-a-decode-heavy-small-model"),
    ],
)
def test_fit_recovers_the_parameters_the_points_were_made_with(
    params: tuple[float, float, float, float],
) -> None:
    t0, a, b, g = params
    fit = fit_points(
        _synthetic_points(t0, a, b, g, mbt=512), max_batched_tokens=512, max_num_seqs=256
    )
    got = (fit.t0_ms, fit.a_ms_per_seq, fit.b_ms_per_1k_kv, fit.g_ms_per_prefill_token)
    assert got == pytest.approx(params, rel=1e-6)
    assert fit.r2 == pytest.approx(1.0)
    assert fit.max_rel_err < 1e-9


def test_fit_needs_enough_points() -> None:
    pts = _synthetic_points(7.0, 0.02, 0.065, 0.028, 2048)[:2]
    with pytest.raises(ValueError, match="too few usable points"):
        fit_points(pts, 2048, 256)


def test_engine_record_fit_recovers_iteration_constants() -> None:
    rng = np.random.default_rng(0)
    n_dec = rng.integers(0, 64, 500)
    kv = n_dec * rng.integers(100, 3000, 500)
    pre = rng.integers(0, 2048, 500) * (rng.random(500) < 0.3)
    dur = 5.0 + 0.05 * n_dec + 0.2 * kv / 1000 + 0.01 * pre
    fit = fit_iterations(np.column_stack([n_dec, kv, pre, dur]))
    assert (fit.t0_ms, fit.a_ms_per_seq, fit.b_ms_per_1k_kv, fit.g_ms_per_prefill_token) == (
        pytest.approx((5.0, 0.05, 0.2, 0.01), rel=1e-6)
    )


# ---- the open-loop sender and endpoint errors (no torch) ---------------------------------------


def test_replay_sends_on_schedule_while_a_slow_server_lags(tmp_path: Path) -> None:
    # 12 requests 0.05 s apart against a server that takes 1 s per request: a closed-loop
    # sender would send the second one after the first answer; open loop sends all 12
    # within 0.55 s and the server holds all of them at once
    delay = 1.0
    trace = prepare_trace(
        _trace_file(tmp_path, [0.05 * k for k in range(12)], 5, 2), ReplaySettings()
    )
    with FakeServer("slow", delay_s=delay) as srv:
        res = asyncio.run(replay_trace(trace, srv.url, ReplaySettings(lead_s=0.2)))
    assert res.ok.all()
    assert srv.peak == 12
    lag = res.send_lag_s
    assert np.nanmax(np.abs(lag)) < 0.25 * delay
    # sent in the order and spacing of the schedule, answered a full delay later
    assert np.diff(res.sent_s) == pytest.approx(np.full(11, 0.05), abs=0.25 * delay)
    assert np.min(res.ttft_s) > 0.9 * delay
    summary = res.summary()
    assert summary["send_lag_s"]["max"] == pytest.approx(float(np.nanmax(lag)))
    assert summary["ok"] == 12 and summary["errors"] == 0


def test_concurrency_limit_holds_requests_back_and_shows_as_lag(tmp_path: Path) -> None:
    delay = 0.5
    trace = prepare_trace(_trace_file(tmp_path, [0.0] * 4, 5, 2), ReplaySettings())
    with FakeServer("slow", delay_s=delay) as srv:
        res = asyncio.run(
            replay_trace(trace, srv.url, ReplaySettings(concurrency_limit=2, lead_s=0.1))
        )
    assert srv.peak == 2
    # the last two waited for a slot: about one server delay late
    assert np.sort(res.send_lag_s)[-1] > 0.8 * delay


def test_connection_refused_names_the_url() -> None:
    async def go() -> None:
        async with httpx.AsyncClient() as c:
            await stream_completion(c, "http://127.0.0.1:1", {"prompt": "x", "max_tokens": 1})

    with pytest.raises(
        EndpointError,
        match=r"http://127\.0\.0\.1:1/v1/completions: cannot "
        r"connect",
    ):
        asyncio.run(go())


@pytest.mark.parametrize(
    ("mode", "problem"),
    [
        pytest.param("non_json", "chunk is not JSON", id="a-chunk-that-is-not-json"),
        pytest.param("no_choices", "no 'choices'", id="a-chunk-without-choices"),
        pytest.param("http500", "HTTP 500", id="an-http-500-with-its-body"),
        pytest.param("no_done", r"without 'data: \[DONE\]'", id="a-stream-without-done"),
    ],
)
def test_malformed_answers_give_errors_naming_url_and_problem(mode: str, problem: str) -> None:
    async def go(url: str) -> None:
        async with httpx.AsyncClient() as c:
            await stream_completion(c, url, {"prompt": "x", "max_tokens": 1})

    with FakeServer(mode) as srv, pytest.raises(EndpointError) as ei:
        asyncio.run(go(srv.url))
    msg = str(ei.value)
    assert f"{srv.url}/v1/completions" in msg
    assert re.search(problem, msg)


def test_replay_cli_reports_a_refused_endpoint_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from simulator.replay.cli import main

    f = _trace_file(tmp_path, [0.0, 0.1], 5, 2)
    assert main(["replay", "--trace", str(f), "--endpoint", "http://127.0.0.1:1"]) == 1
    err = capsys.readouterr().err
    assert "http://127.0.0.1:1/v1/models" in err and "cannot connect" in err


def test_replay_cli_says_when_every_request_failed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from simulator.replay.cli import main

    f = _trace_file(tmp_path, [0.0, 0.05], 5, 2)
    with FakeServer("http500") as srv:
        assert main(["replay", "--trace", str(f), "--endpoint", srv.url]) == 1
    err = capsys.readouterr().err
    assert "all 2 requests failed" in err and "HTTP 500" in err and srv.url in err


def test_models_route_that_is_not_json_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from simulator.replay.cli import main

    f = _trace_file(tmp_path, [0.0], 5, 2)
    with FakeServer("models_not_json") as srv:
        assert main(["replay", "--trace", str(f), "--endpoint", srv.url + "/v1/"]) == 1
    assert f"{srv.url}/v1/models: response is not JSON" in capsys.readouterr().err


def test_gpu_check_script_parses_and_refuses_unknown_arguments() -> None:
    import subprocess

    script = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0
    ok = subprocess.run(
        ["bash", str(script), "--help"], capture_output=True, text=True, check=False, timeout=30
    )
    assert ok.returncode == 0 and "--cpu-smoke" in ok.stdout and "--traces" in ok.stdout
    bad = subprocess.run(
        ["bash", str(script), "--frobnicate"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert bad.returncode == 2 and "unknown argument --frobnicate" in bad.stderr


def test_endpoint_must_be_http() -> None:
    with pytest.raises(ValueError, match="must start with http"):
        normalize_endpoint("127.0.0.1:8000")
    assert normalize_endpoint("http://h:1/v1/") == "http://h:1"


def test_caps_shape_the_requests_sent(tmp_path: Path) -> None:
    f = _trace_file(tmp_path, [0.0, 1.0, 2.0, 3.0], 900, 300)
    tr = prepare_trace(f, ReplaySettings(max_input_tokens=100, max_tokens=20, speedup=2.0))
    assert tr.input_tokens.tolist() == [100] * 4 and tr.output_tokens.tolist() == [20] * 4
    assert tr.arrival_s.tolist() == [0.0, 0.5, 1.0, 1.5]
    assert any("capped at 100" in n for n in tr.notes)


# ---- missing torch (no torch needed) ------------------------------------------------------------


def test_missing_torch_gives_the_install_message(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from simulator.replay.cli import main
    from simulator.replay.model_server import TorchMissing, require_torch

    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    with pytest.raises(TorchMissing, match=re.escape("pip install 'gpu-autoscaler[gpu]'")):
        require_torch()
    assert main(["serve-model", "--size", "tiny"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'gpu-autoscaler[gpu]'" in err and "torch==2.13.0" in err
    assert main(["profile", "--local"]) == 2
    assert "pip install 'gpu-autoscaler[gpu]'" in capsys.readouterr().err


# ---- the reference server (torch, tiny model on CPU) --------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[Any]:
    if not HAVE_TORCH:
        pytest.skip("torch is not installed (pip install torch==2.13.0 for CPU)")
    from simulator.replay.model_server import (
        ServerConfig,
        ServerThread,
        VllmMetrics,
        build_engine,
        create_app,
    )

    cfg = ServerConfig(
        size="tiny",
        device="cpu",
        max_batch=16,
        max_model_len=512,
        max_batched_tokens=256,
        threads=1,
    )
    engine, info = build_engine(cfg)
    mx = VllmMetrics(info.model_name, info.engine.max_kv_tokens, namespace="ns1", workload="chat")
    with ServerThread(create_app(engine, info, mx)) as srv:
        srv.engine = engine  # type: ignore[attr-defined]
        yield srv


def _metrics(url: str) -> dict[str, float]:
    """name{labels} -> value for the vllm: series."""
    out = {}
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith("vllm:"):
            key, val = line.rsplit(" ", 1)
            out[key] = float(val)
    return out


def _one(m: dict[str, float], prefix: str) -> float:
    vals = [v for k, v in m.items() if k.startswith(prefix + "{")]
    assert len(vals) == 1, (prefix, vals)
    return vals[0]


@pytest.mark.torch
def test_non_streaming_completion_is_json_with_usage(server: Any) -> None:
    r = httpx.post(
        server.url + "/v1/completions", json={"prompt": "hello", "max_tokens": 7}, timeout=30
    )
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "text_completion" and body["model"] == "random-tiny"
    assert len(body["choices"][0]["text"]) == 7  # one character per token
    assert body["choices"][0]["finish_reason"] == "length"
    # "hello" is 5 UTF-8 bytes: 5 prompt tokens
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}


@pytest.mark.torch
def test_streaming_is_server_sent_completion_chunks_ending_with_done(server: Any) -> None:
    body = {
        "prompt": [3, 4, 5, 6],
        "max_tokens": 5,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=30) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = r.read().decode()
    events = [e for e in raw.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e[6:]) for e in events[:-1]]
    content = [c for c in chunks if c["choices"]]
    assert len(content) == 5
    assert {c["object"] for c in chunks} == {"text_completion"}
    assert len({c["id"] for c in chunks}) == 1
    assert [c["choices"][0]["finish_reason"] for c in content] == [None] * 4 + ["length"]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 4, "completion_tokens": 5, "total_tokens": 9}


@pytest.mark.torch
@pytest.mark.parametrize(
    ("body", "code", "fragment"),
    [
        pytest.param({"max_tokens": 3}, 400, "prompt must be", id="no-prompt"),
        pytest.param(
            {"prompt": "x", "max_tokens": 0}, 400, "max_tokens must be", id="zero-max-tokens"
        ),
        pytest.param(
            {"prompt": "x", "max_tokens": 600},
            400,
            "context length 512",
            id="longer-than-the-context",
        ),
        pytest.param(
            {"prompt": [1, 9999], "max_tokens": 2},
            400,
            "token ids must be in",
            id="token-id-outside-the-vocabulary",
        ),
        pytest.param({"prompt": "x", "model": "gpt-9"}, 404, "does not exist", id="unknown-model"),
    ],
)
def test_bad_requests_get_openai_style_errors(
    server: Any, body: dict[str, Any], code: int, fragment: str
) -> None:
    r = httpx.post(server.url + "/v1/completions", json=body, timeout=30)
    assert r.status_code == code
    assert fragment in r.json()["error"]["message"]


@pytest.mark.torch
def test_metrics_use_vllm_names_and_move_as_requests_run(server: Any) -> None:
    before = _metrics(server.url)
    labels = 'model_name="random-tiny",namespace="ns1",workload="chat"'
    assert f"vllm:num_requests_running{{{labels}}}" in before
    n, n_prompt, n_out = 6, 20, 30
    seen_running = 0.0

    async def go() -> None:
        nonlocal seen_running
        async with httpx.AsyncClient(timeout=60) as c:
            tasks = [
                asyncio.create_task(
                    stream_completion(
                        c, server.url, {"prompt": [7 + k] * n_prompt, "max_tokens": n_out}
                    )
                )
                for k in range(n)
            ]
            for _ in range(400):  # bounded: poll while the requests run
                text = (await c.get(server.url + "/metrics")).text
                m = re.search(r"^vllm:num_requests_running\{.*\} (\S+)$", text, re.M)
                assert m is not None
                seen_running = max(seen_running, float(m.group(1)))
                if all(t.done() for t in tasks):
                    break
                await asyncio.sleep(0.01)
            await asyncio.gather(*tasks)

    asyncio.run(go())
    after = _metrics(server.url)
    assert seen_running >= 2  # several requests were in the batch at once

    def delta(name: str) -> float:
        return _one(after, name) - _one(before, name)

    assert delta("vllm:prompt_tokens_total") == n * n_prompt
    assert delta("vllm:generation_tokens_total") == n * n_out
    assert delta("vllm:request_success_total") == n
    assert delta("vllm:time_to_first_token_seconds_count") == n
    assert delta("vllm:e2e_request_latency_seconds_count") == n
    assert _one(after, "vllm:num_requests_running") == 0
    assert _one(after, "vllm:num_requests_waiting") == 0
    assert _one(after, "vllm:kv_cache_usage_perc") == 0


@pytest.mark.torch
def test_continuous_batching_shares_iterations_between_requests(server: Any) -> None:
    eng = server.engine
    it0 = eng.n_iterations
    n, n_out = 8, 24

    async def go() -> list[Any]:
        async with httpx.AsyncClient(timeout=60) as c:
            return await asyncio.gather(
                *(
                    stream_completion(c, server.url, {"prompt": [11 + k] * 16, "max_tokens": n_out})
                    for k in range(n)
                )
            )

    results = asyncio.run(go())
    iters = eng.n_iterations - it0
    # one token per sequence per iteration: alone, 8 x 24 = 192 iterations; shared, far fewer
    assert iters < 0.5 * n * n_out
    recs = eng.iterations()[-iters:]
    assert max(r.n_decode for r in recs) >= 4
    assert all(r.completion_tokens == n_out for r in results)


@pytest.mark.torch
def test_a_request_joins_a_running_batch_without_waiting_for_it(server: Any) -> None:
    async def go() -> tuple[Any, Any]:
        async with httpx.AsyncClient(timeout=60) as c:
            long = asyncio.create_task(
                stream_completion(c, server.url, {"prompt": [5] * 8, "max_tokens": 150})
            )
            while server.engine.counts()["running"] == 0:  # bounded by the long request
                await asyncio.sleep(0.005)
            short = await stream_completion(c, server.url, {"prompt": [6] * 8, "max_tokens": 3})
            return await long, short

    long, short = asyncio.run(go())
    # the short request started and finished while the long one was still streaming
    assert short.finish_s < long.finish_s
    assert short.first_token_s > long.first_token_s


@pytest.mark.torch
def test_chunked_prefill_and_batching_do_not_change_the_tokens() -> None:
    from simulator.replay.model import Engine
    from simulator.replay.model_server import MODEL_SIZES, EngineConfig

    prompt = [(7 * i) % 250 for i in range(300)]
    other = [(11 * i) % 250 for i in range(200)]

    def run(mbt: int, with_other: bool) -> tuple[list[int], list[Any]]:
        eng = Engine(MODEL_SIZES["tiny"], EngineConfig(8, 8 * 512, mbt, 512), seed=3)
        a = eng.submit(prompt, 12)
        if with_other:
            eng.submit(other, 12)
        while eng.step():
            pass
        return a.generated, eng.iterations()

    alone, _ = run(2048, False)
    chunked, recs = run(64, True)
    assert len(alone) == 12 and chunked == alone
    # the 500 prompt tokens went through in chunks of at most 64 tokens per iteration
    assert max(r.prefill_tokens for r in recs) <= 64
    assert sum(r.prefill_tokens for r in recs) == 500


@pytest.mark.torch
def test_an_engine_failure_ends_requests_with_an_error_not_a_hang() -> None:
    from simulator.replay.model_server import ServerConfig, ServerThread, build_engine, create_app

    engine, info = build_engine(
        ServerConfig(size="tiny", device="cpu", max_batch=4, max_model_len=256, warmup=False)
    )

    def broken(batch: Any) -> list[int]:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    engine.runner.forward = broken
    with ServerThread(create_app(engine, info)) as srv:
        r = httpx.post(
            srv.url + "/v1/completions", json={"prompt": "x", "max_tokens": 2}, timeout=30
        )
        assert r.status_code == 500
        assert "illegal memory access" in r.json()["error"]["message"]
        assert httpx.get(srv.url + "/health").status_code == 503


# ---- profile -> simulator, replay -> simulator (torch) ------------------------------------------


@pytest.fixture(scope="module")
def tiny_profile(server: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from simulator.replay.profiler import ProfileSettings, profile_endpoint

    settings = ProfileSettings(
        concurrency=(1, 4), input_lens=(16, 128), output_len=8, duration_s=0.8, warmup_s=0.2
    )
    prof = asyncio.run(profile_endpoint(server.url, settings))
    path = tmp_path_factory.mktemp("profile") / "cpu-tiny.json"
    prof.save(path)
    return path


@pytest.mark.torch
def test_profile_json_round_trips_into_the_simulator(tiny_profile: Path) -> None:
    prof = ServiceProfile.load(tiny_profile)
    data = json.loads(tiny_profile.read_text())
    assert ServiceProfile.from_dict(data) == prof
    assert prof.device == "cpu" and prof.dtype == "float32"
    assert prof.max_num_seqs == 16 and prof.max_batched_tokens == 256
    assert len(prof.raw_points) == 4
    assert {"r2", "max_rel_err", "client"} <= set(prof.fit)
    assert "engine" in prof.fit  # the reference server serves its iteration records
    assert prof.fit["model_params"] > 900_000
    tr = Trace(
        name="x",
        arrival_s=np.arange(10, dtype=np.float64) * 0.2,
        input_tokens=np.full(10, 50),
        output_tokens=np.full(10, 10),
        source="test",
    )
    run = simulate_slice(tr, prof, replicas=1)
    ttft = run.first_token_s - run.arrival_s
    assert np.isfinite(ttft).all() and (ttft > 0).all()


@pytest.mark.torch
def test_replay_cli_compares_with_the_simulator(
    server: Any, tiny_profile: Path, tmp_path: Path
) -> None:
    from simulator.replay.cli import main

    f = _trace_file(tmp_path, [0.15 * k for k in range(10)], 40, 12)
    out = tmp_path / "replay.json"
    code = main(
        [
            "replay",
            "--trace",
            str(f),
            "--endpoint",
            server.url,
            "--compare-sim",
            "--profile",
            str(tiny_profile),
            "--replicas",
            "1",
            "--json",
            str(out),
            "--plots",
            str(tmp_path / "plots"),
        ]
    )
    assert code == 0
    d = json.loads(out.read_text())
    assert d["summary"]["ok"] == 10
    cmp = d["compare"]["cpu-tiny"]
    for q in ("p50", "p95", "p99"):
        r, s = cmp[f"{q}_ttft_replay_s"], cmp[f"{q}_ttft_sim_s"]
        assert cmp[f"{q}_ttft_rel_err"] == pytest.approx((s - r) / r)
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "replay_cdf.png",
        "replay_timeline.png",
    ]
    assert "| trace | cpu-tiny | 10 |" in markdown_summary([d])


def test_compare_with_sim_relative_errors(tmp_path: Path) -> None:
    # a replay whose numbers equal the simulator's own gives zero error
    from simulator.replay.replay import ReplayResult

    tr = Trace(
        name="x",
        arrival_s=np.arange(8, dtype=np.float64) * 0.5,
        input_tokens=np.full(8, 100),
        output_tokens=np.full(8, 20),
        source="test",
    )
    run = simulate_slice(tr, ServiceProfile.default(), replicas=1)
    n = len(tr)
    res = ReplayResult(
        endpoint="http://x",
        model=None,
        trace=tr,
        scheduled_s=tr.arrival_s.copy(),
        sent_s=run.arrival_s.copy(),
        first_token_s=run.first_token_s.copy(),
        finish_s=run.finish_s.copy(),
        itl_s=run.itl_s.copy(),
        tokens_received=np.full(n, 20),
        errors=[None] * n,
        wall_s=5.0,
        settings=ReplaySettings(),
    )
    cmp = compare_with_sim(res, run, "default")
    assert cmp["p95_ttft_rel_err"] == 0.0 and cmp["p99_e2e_rel_err"] == 0.0
    assert cmp["replicas"] == 1
