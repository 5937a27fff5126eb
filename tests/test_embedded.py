"""`make run` (gpu-autoscaler run on the embedded default) end to end, as a user runs it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CLI = Path(sys.executable).parent / "gpu-autoscaler"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.mark.slow
def test_embedded_default_serves_and_decides() -> None:
    http, grpc_port = free_port(), free_port()
    proc = subprocess.Popen(
        [
            str(CLI),
            "run",
            "--host",
            "127.0.0.1",
            "--http-port",
            str(http),
            "--grpc-port",
            str(grpc_port),
            "--speed",
            "30",
            "--duration",
            "60",
            "--no-live",
            "--log-format",
            "json",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    base = f"http://127.0.0.1:{http}"
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            try:
                if get(base + "/healthz")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.3)
        else:
            pytest.fail("healthz never answered")
        assert json.loads(get(base + "/healthz")[1]) == {"status": "ok"}

        seen: dict[str, list[tuple[float, int, str]]] = {}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            code, body = get(base + "/v1/workloads")
            assert code == 200
            items = json.loads(body)["items"]
            for it in items:
                if "decidedAt" in it:
                    seen.setdefault(it["name"], []).append(
                        (it["decidedAt"], it["desiredTotal"], it["reason"])
                    )
            if len(seen) == 3 and all(len({t for t, _, _ in v}) >= 4 for v in seen.values()):
                break
            time.sleep(0.5)
        assert set(seen) == {"chat-llama", "rag-code", "asr-stream"}
        for name, hist in seen.items():
            times = [t for t, _, _ in hist]
            # simulated time moves on between polls (decisions are re-made every tick)
            assert times[-1] > times[0] + 20, (name, times)
            assert all(r for _, _, r in hist)

        code, body = get(base + "/v1/workloads/demo/chat-llama")
        one = json.loads(body)
        assert code == 200 and one["scenario"] == "chat" and one["message"]
        assert set(one["desired"]) == {"spot", "on_demand", "warm"}
        assert get(base + "/v1/workloads/demo/nope")[0] == 404

        assert get(base + "/readyz")[0] == 200
        metrics = get(base + "/metrics")[1].decode()
        assert (
            'gpu_autoscaler_desired_replicas{namespace="demo",pool="spot",workload="chat-llama"}'
            in metrics
        )
        assert "gpu_autoscaler_tick_duration_seconds_count" in metrics

        # the KEDA endpoint is served from the same process
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            resp = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
    assert proc.returncode == 0, err[-2000:]
    assert "Traceback" not in err, err[-3000:]
    # structured JSON logs
    lines = [ln for ln in err.splitlines() if ln.startswith("{")]
    assert lines and all("level" in json.loads(ln) for ln in lines)


def test_a_job_cancelled_by_scheduler_shutdown_lets_its_thread_finish(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Shutdown cancels the job's task while its tick thread is patching replicas: the
    thread finishes before shutdown goes on, and nothing is logged as a crash."""
    import asyncio
    import logging
    import threading

    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    from autoscaler.service import run_to_completion

    started, release = threading.Event(), threading.Event()
    finished: list[str] = []

    def tick() -> None:
        started.set()
        assert release.wait(5)
        finished.append("tick")

    async def main() -> list[str]:
        in_flight: set[asyncio.Future[object]] = set()
        scheduler = AsyncIOScheduler(event_loop=asyncio.get_running_loop())

        async def job() -> None:
            await run_to_completion(tick, in_flight)

        scheduler.add_job(job, "date", id="tick")
        scheduler.start()
        for _ in range(200):  # bounded: 10 s at most
            if started.is_set():
                break
            await asyncio.sleep(0.05)
        assert started.is_set() and len(in_flight) == 1
        scheduler.shutdown(wait=False)  # cancels the job's task
        await asyncio.sleep(0.05)
        seen_while_running = list(finished)
        threading.Timer(0.2, release.set).start()
        await asyncio.wait(set(in_flight))
        await asyncio.sleep(0.05)  # let the job's task end
        return seen_while_running

    with caplog.at_level(logging.DEBUG, logger="apscheduler"):
        seen_while_running = asyncio.run(main())
    assert seen_while_running == []  # the cancel did not pretend the tick had finished
    assert finished == ["tick"]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]


def test_run_to_completion_reraises_what_the_job_raised() -> None:
    import asyncio

    from autoscaler.service import run_to_completion

    def broken() -> None:
        raise ValueError("metrics source misconfigured")

    async def main() -> set[asyncio.Future[object]]:
        in_flight: set[asyncio.Future[object]] = set()
        with pytest.raises(ValueError, match="misconfigured"):
            await run_to_completion(broken, in_flight)
        return in_flight

    assert asyncio.run(main()) == set()
