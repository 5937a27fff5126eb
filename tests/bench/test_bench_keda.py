"""Benchmark: KEDA GetMetrics over a real socket, 10,000 workloads in the DecisionStore.

Target: p99 <= 5 ms per GetMetrics. Figures, printed:
- one client calling back to back (KEDA's metrics adapter reads one metric per HPA sync);
- 50 concurrent clients (threads, one channel each, 200 calls each) in the server's process,
  so clients and server share one interpreter lock: a pessimistic bound;
- the same 50 clients in a separate process (as KEDA is);
- the handler's own work without gRPC (request parsing, store lookup, the metric).
With 50 closed-loop clients, latency = 50 / throughput (Little's law): p99 <= 5 ms needs
more than 10,000 calls/s. KEDA itself is not closed-loop: it calls GetMetrics once per HPA
sync (15 s) per ScaledObject, ~130 calls/s per 1,000 of them counting IsActive. So a second
benchmark offers that load open-loop: 50 clients (grpc.aio, one channel each, one process),
each sending on its own fixed schedule, latency timed per call (and how late the client
sent, which is the client's own jitter); plus one client pacing its calls 10 ms apart, which
shows what an idle wake-up costs on the machine. Asserts only loose sanity bounds (shared
machines vary).
"""

from __future__ import annotations

import json
import os
import platform
import random
import subprocess
import sys
import threading
import time
from typing import Any

import grpc
import numpy as np
import pytest

from autoscaler.config import Workload, parse_workload
from autoscaler.keda import core
from autoscaler.keda.gen import externalscaler_pb2 as pb
from autoscaler.keda.gen import externalscaler_pb2_grpc as pb_grpc
from autoscaler.keda.server import start_server
from autoscaler.protocols import DecisionRecord
from autoscaler.store import DecisionStore
from policies.types import Decision

pytestmark = pytest.mark.slow

N_WORKLOADS = 10_000
N_CLIENTS = 50
CALLS_PER_CLIENT = 200
SEQUENTIAL_CALLS = 2_000
TIMEOUT_S = 10.0


def _store(rng: np.random.Generator) -> tuple[DecisionStore, list[str]]:
    base = parse_workload(
        "ns-0",
        "w-0",
        {
            "targets": {"on_demand": "x-od", "spot": "x-spot", "warm": "x-warm"},
            "policy": {"scenario": "chat", "capacity": {"rps_per_replica": 10}},
        },
    )
    records = []
    keys = []
    desired = rng.integers(0, 200, size=(N_WORKLOADS, 3))
    current = rng.integers(0, 200, size=(N_WORKLOADS, 3))
    for i in range(N_WORKLOADS):
        w = Workload(namespace=f"ns-{i % 100}", name=f"w-{i}", spec=base.spec)
        spot, od, warm = (int(x) for x in desired[i])
        d = Decision(spot, od, warm, spot + od, 1.0, 1.0, 1.0, "ScaleUpForecast", "", False)
        cur = dict(zip(("spot", "on_demand", "warm"), (int(x) for x in current[i]), strict=True))
        records.append(
            DecisionRecord(w.key, w, d, 0.0, cur, cur, {}, [], False, bool(spot + od > 0))
        )
        keys.append(w.key)
    store = DecisionStore()
    store.put_many(records)
    return store, keys


def _request(key: str, pool: str) -> Any:
    ref = pb.ScaledObjectRef(
        name="so",
        namespace=key.split("/")[0],
        scalerMetadata={"workload": key, "pool": pool, "scalerAddress": "x:9090"},
    )
    return pb.GetMetricsRequest(scaledObjectRef=ref, metricName=core.metric_name(pool))


# GetMetrics for workload i and a random pool, as both client scripts below build it.
REQUEST_BUILDER = """
pools = ("spot", "on_demand", "warm")
def request(i, r):
    key, pool = f"ns-{i % 100}/w-{i}", r.choice(pools)
    ref = pb.ScaledObjectRef(name="so", namespace=f"ns-{i % 100}",
                             scalerMetadata={"workload": key, "pool": pool})
    return pb.GetMetricsRequest(scaledObjectRef=ref,
                                metricName="gpu-autoscaler-" + pool.replace("_", "-"))
"""

# The 50 clients as a separate process: argv = address, clients, calls each; prints JSON.
CLIENT_PROCESS = """
import json, random, sys, threading, time
import grpc
from autoscaler.keda.gen import externalscaler_pb2 as pb
from autoscaler.keda.gen import externalscaler_pb2_grpc as pb_grpc
address, n, calls, n_workloads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
# REQUEST_BUILDER
lat = [[] for _ in range(n)]
barrier = threading.Barrier(n + 1)
def client(c):
    r = random.Random(c)
    mine = [request(r.randrange(n_workloads), r) for _ in range(calls)]
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.ExternalScalerStub(channel)
        stub.GetMetrics(mine[0], timeout=10)
        barrier.wait(60)
        for q in mine:
            t = time.perf_counter()
            stub.GetMetrics(q, timeout=10)
            lat[c].append(time.perf_counter() - t)
threads = [threading.Thread(target=client, args=(c,)) for c in range(n)]
for t in threads:
    t.start()
barrier.wait(60)
t0 = time.perf_counter()
for t in threads:
    t.join(120)
print(json.dumps({"lat": [x for per in lat for x in per], "wall_s": time.perf_counter() - t0}))
""".replace("# REQUEST_BUILDER", REQUEST_BUILDER)


def _clients_in_another_process(address: str) -> tuple[list[float], float]:
    out = subprocess.run(
        [sys.executable, "-c", CLIENT_PROCESS, address, str(N_CLIENTS), str(CALLS_PER_CLIENT),
         str(N_WORKLOADS)],
        capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    result = json.loads(out.stdout)
    assert len(result["lat"]) == N_CLIENTS * CALLS_PER_CLIENT
    return result["lat"], result["wall_s"]


def _pct(lat_s: list[float]) -> tuple[float, float, float]:
    a = np.asarray(lat_s) * 1e3
    return float(np.percentile(a, 50)), float(np.percentile(a, 99)), float(a.max())


def test_bench_get_metrics_latency_and_throughput() -> None:
    rng = np.random.default_rng(7)
    t0 = time.perf_counter()
    store, keys = _store(rng)
    build_s = time.perf_counter() - t0
    pools = ("spot", "on_demand", "warm")
    server, port = start_server(store, "127.0.0.1:0", max_workers=64, tick_s=15.0)
    address = f"127.0.0.1:{port}"
    try:
        # 1. One client, back to back.
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.ExternalScalerStub(channel)
            reqs = [_request(random.Random(i).choice(keys), pools[i % 3]) for i in range(100)]
            for r in reqs:  # warm-up
                stub.GetMetrics(r, timeout=TIMEOUT_S)
            seq = []
            seq_reqs = [
                _request(keys[i % N_WORKLOADS], pools[i % 3]) for i in range(SEQUENTIAL_CALLS)
            ]
            t_seq = time.perf_counter()
            for r in seq_reqs:
                t = time.perf_counter()
                stub.GetMetrics(r, timeout=TIMEOUT_S)
                seq.append(time.perf_counter() - t)
            seq_wall_s = time.perf_counter() - t_seq

        # 2. 50 concurrent clients, 200 calls each.
        lat: list[list[float]] = [[] for _ in range(N_CLIENTS)]
        errors: list[BaseException] = []
        start = threading.Barrier(N_CLIENTS + 1)

        def client(i: int) -> None:
            r = random.Random(i)
            my = [_request(r.choice(keys), r.choice(pools)) for _ in range(CALLS_PER_CLIENT)]
            try:
                with grpc.insecure_channel(address) as channel:
                    stub = pb_grpc.ExternalScalerStub(channel)
                    stub.GetMetrics(my[0], timeout=TIMEOUT_S)  # connect before the clock
                    start.wait(TIMEOUT_S)
                    for req in my:
                        t = time.perf_counter()
                        resp = stub.GetMetrics(req, timeout=TIMEOUT_S)
                        lat[i].append(time.perf_counter() - t)
                        assert resp.metricValues[0].metricValueFloat >= 0
            except BaseException as e:  # reported below, after every thread ends
                errors.append(e)
                start.abort()

        threads = [threading.Thread(target=client, args=(i,)) for i in range(N_CLIENTS)]
        for th in threads:
            th.start()
        start.wait(TIMEOUT_S * 3)
        t_conc = time.perf_counter()
        for th in threads:
            th.join(120)
        conc_wall_s = time.perf_counter() - t_conc
        assert not errors, errors[:3]
        flat = [x for per in lat for x in per]
        assert len(flat) == N_CLIENTS * CALLS_PER_CLIENT

        # 3. The same clients in a separate process.
        proc_lat, proc_wall_s = _clients_in_another_process(address)
    finally:
        server.stop(None)

    # 4. The handler's work without gRPC.
    queries = [
        core.parse_query("", "", {"workload": keys[i % N_WORKLOADS], "pool": pools[i % 3]})
        for i in range(20_000)
    ]
    t = time.perf_counter()
    for q in queries:
        core.lookup(store, q)
    lookup_us = (time.perf_counter() - t) / len(queries) * 1e6
    md = {"workload": keys[1], "pool": "spot", "scalerAddress": "x:9090"}
    t = time.perf_counter()
    for _ in range(20_000):
        core.parse_query("", "", md)
    parse_us = (time.perf_counter() - t) / 20_000 * 1e6

    s50, s99, smax = _pct(seq)
    c50, c99, cmax = _pct(flat)
    p50, p99, pmax = _pct(proc_lat)
    print(
        f"\nKEDA GetMetrics, {N_WORKLOADS} workloads in the store (built in {build_s:.2f} s);"
        f" {platform.python_implementation()} {platform.python_version()},"
        f" {os.cpu_count()} CPUs, grpcio {grpc.__version__}"
        f"\n  1 client, {SEQUENTIAL_CALLS} calls:  p50 {s50:.3f} ms  p99 {s99:.3f} ms"
        f"  max {smax:.2f} ms  {SEQUENTIAL_CALLS / seq_wall_s:,.0f} calls/s"
        f"\n  {N_CLIENTS} clients x {CALLS_PER_CLIENT}:  p50 {c50:.3f} ms  p99 {c99:.3f} ms"
        f"  max {cmax:.2f} ms  {len(flat) / conc_wall_s:,.0f} calls/s  (same process)"
        f"\n  {N_CLIENTS} clients x {CALLS_PER_CLIENT}:  p50 {p50:.3f} ms  p99 {p99:.3f} ms"
        f"  max {pmax:.2f} ms  {len(proc_lat) / proc_wall_s:,.0f} calls/s  (client process)"
        f"\n  handler work: parse {parse_us:.1f} us + lookup/metric {lookup_us:.1f} us per call"
        f"\n  target: p99 <= 5 ms"
    )
    # Loose sanity only: a call must not take a visible fraction of an HPA sync (15 s).
    assert s99 < 100.0
    assert c99 < 1000.0
    assert p99 < 1000.0


# Open loop: 50 aio clients in one process, each on its own schedule (rate / 50 per second,
# random phase); argv = address, clients, offered calls/s, seconds, workloads; prints JSON.
OPEN_LOOP_PROCESS = """
import asyncio, json, random, sys, time
import grpc
from autoscaler.keda.gen import externalscaler_pb2 as pb
from autoscaler.keda.gen import externalscaler_pb2_grpc as pb_grpc
address, n, rate, dur, n_workloads = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), \\
    float(sys.argv[4]), int(sys.argv[5])
per = rate / n
# REQUEST_BUILDER
async def client(c, start, lat, late):
    r = random.Random(c)
    mine = [request(r.randrange(n_workloads), r) for _ in range(max(1, int(per * dur)))]
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.ExternalScalerStub(channel)
        await stub.GetMetrics(mine[0], timeout=10)
        await start.wait()
        t0 = time.perf_counter() + r.random() / per
        for k, q in enumerate(mine):
            due = t0 + k / per
            if due > time.perf_counter():
                await asyncio.sleep(due - time.perf_counter())
            t = time.perf_counter()
            late.append(t - due)
            await stub.GetMetrics(q, timeout=10)
            lat.append(time.perf_counter() - t)
async def main():
    start, lat, late = asyncio.Event(), [], []
    tasks = [asyncio.create_task(client(c, start, lat, late)) for c in range(n)]
    await asyncio.sleep(1.0)
    start.set()
    t0 = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*tasks), dur + 60)
    print(json.dumps({"lat": lat, "late": late, "wall_s": time.perf_counter() - t0}))
asyncio.run(main())
""".replace("# REQUEST_BUILDER", REQUEST_BUILDER)

OPEN_LOOP_RATES = (130.0, 650.0)  # KEDA's load for 1,000 and 5,000 ScaledObjects
OPEN_LOOP_S = 10.0
PACED_GAP_S = 0.010


def test_bench_get_metrics_open_loop_at_keda_rates() -> None:
    store, keys = _store(np.random.default_rng(7))
    server, port = start_server(store, "127.0.0.1:0", max_workers=64, tick_s=15.0)
    address = f"127.0.0.1:{port}"
    rows = []
    try:
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.ExternalScalerStub(channel)
            reqs = [_request(keys[i], ("spot", "on_demand", "warm")[i % 3]) for i in range(400)]
            for r in reqs[:100]:  # warm-up
                stub.GetMetrics(r, timeout=TIMEOUT_S)
            paced = []
            for r in reqs[100:]:
                time.sleep(PACED_GAP_S)
                t = time.perf_counter()
                stub.GetMetrics(r, timeout=TIMEOUT_S)
                paced.append(time.perf_counter() - t)
        for rate in OPEN_LOOP_RATES:
            out = subprocess.run(
                [sys.executable, "-c", OPEN_LOOP_PROCESS, address, str(N_CLIENTS), str(rate),
                 str(OPEN_LOOP_S), str(N_WORKLOADS)],
                capture_output=True, text=True, timeout=OPEN_LOOP_S + 120, check=True,
            )  # fmt: skip
            res = json.loads(out.stdout)
            n_calls = N_CLIENTS * max(1, int(rate / N_CLIENTS * OPEN_LOOP_S))
            assert len(res["lat"]) == n_calls
            rows.append((rate, res["lat"], res["late"], n_calls / res["wall_s"]))
    finally:
        server.stop(None)

    a50, a99, amax = _pct(paced)
    lines = [
        f"\nKEDA GetMetrics open loop, {N_WORKLOADS} workloads in the store, {os.cpu_count()} CPUs,"
        f" grpcio {grpc.__version__}",
        f"  1 client, calls {PACED_GAP_S * 1e3:.0f} ms apart:  p50 {a50:.3f} ms  p99 {a99:.3f} ms"
        f"  max {amax:.2f} ms",
    ]
    for rate, lat, late, achieved in rows:
        p50, p99, pmax = _pct(lat)
        l50, l99, _ = _pct(late)
        lines.append(
            f"  {N_CLIENTS} clients, {rate:,.0f} calls/s offered ({achieved:,.0f} achieved):"
            f"  p50 {p50:.3f} ms  p99 {p99:.3f} ms  max {pmax:.2f} ms"
            f"  (client sent late: p50 {l50:.2f} ms, p99 {l99:.2f} ms)"
        )
        # no throughput bound: a slow machine saturates at the higher rate (the calls are
        # then sent late, which `late` shows); each call itself must still be answered
        assert p99 < 1000.0
    lines.append("  target: p99 <= 5 ms")
    print("\n".join(lines))
