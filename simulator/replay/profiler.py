"""Measure a live completions endpoint and fit the simulator's per-iteration service model.

    gpu-autoscaler profile --endpoint URL | --local [--size tiny|small|1b] [--out profile.json]
                           [--concurrency 1,4,16,64] [--input-lens 128,512,2048]
                           [--output-len 64] [--duration-s 6]

Measurement. For every (concurrency c, prompt length I) of the grid, c closed-loop clients
stream completions (httpx, asyncio) for ``duration_s``: each sends a request of I prompt
tokens and about O output tokens, waits for its last token, and sends the next. Output
lengths are drawn uniformly from [O/2, 3O/2] (the first request of each client from [1, O])
so clients do not march in lockstep. Requests that start in the first ``warmup_s`` are left
out; the point's numbers are means over the rest: TTFT, ITL (a request's mean gap between
tokens after the first), end-to-end latency, output tokens/s, requests/s, and the mean
number of requests in flight ``c_eff`` (time-average over the window, from the client side).

The model (simulator.service): one iteration of a replica takes

    t_iter = t0 + a B + b KV/1000 + g P          [ms]

with B decoding sequences, KV their context tokens and P the prompt tokens it prefills.

From measurements to t_iter terms:

- ITL, every point. A stream sees every iteration of the replica while it decodes, so its
  mean ITL is the mean iteration time. With c requests in flight of mean prompt I and mean
  output O (closed loop, steady state): B = c; each context grows from I to I + O, so
  KV = c (I + O/2); each request prefills I tokens once in O iterations, so P = c I / O on
  average. Hence (service.py's mean field):

      ITL = t0 + a c + b c (I + O/2) / 1000 + g c I / O

  with c = min(c_eff, max_num_seqs) (beyond the batch limit requests queue, not decode).
- TTFT, points at concurrency 1. A lone request meets an idle replica: its TTFT is its own
  prefill, ceil(I / max_batched_tokens) iterations (chunked prefill) with no decodes:

      TTFT = ceil(I / max_batched_tokens) t0 + g I

  At higher concurrency TTFT adds waiting for the iteration in progress, which a closed loop
  does not sample like open traffic does, so those TTFTs are kept in the raw points but not
  fitted.

With one output length, the ITL rows alone only fix t0, a + b O/2000 and b/1000 + g/O
(b and g both scale with c I); the concurrency-1 TTFT rows fix g, which separates them.
The fit is non-negative least squares (scipy.optimize.nnls) on relative errors: each row is
divided by its measured value, so a 5 ms ITL weighs as much as a 500 ms TTFT. The profile's
``fit`` reports R^2 and the largest relative error over the fitted rows (and per kind).

Engine-side cross-check: when the endpoint serves ``/v1/engine/iterations`` (the reference
server does), the per-iteration records (B, KV, P, duration) of the measurement windows are
fitted directly, reported in ``fit["engine"]``; ``fit_source="engine"`` puts that fit in the
profile instead.
"""

from __future__ import annotations

import asyncio
import datetime
import math
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from simulator.replay.client import (
    EndpointError,
    StreamResult,
    fetch_models,
    make_client,
    normalize_endpoint,
    stream_completion,
)

DEFAULT_CONCURRENCY = (1, 4, 16, 64)
DEFAULT_INPUT_LENS = (128, 512, 2048)
DEFAULT_OUTPUT_LEN = 64
# prompt token ids are drawn from [lo, hi): valid for a byte vocabulary and any real one
TOKEN_ID_RANGE = (10, 250)


@dataclass(frozen=True)
class ProfilePoint:
    """Measured means at one grid point (times in ms; rates per second).

    concurrency: clients; input_tokens: prompt length I; output_tokens: mean output O of
    the measured requests; c_eff: mean requests in flight; n_requests: measured requests
    (after warm-up); errors: failed requests."""

    concurrency: int
    input_tokens: int
    output_tokens: float
    n_requests: int
    errors: int
    ttft_ms: float
    ttft_p50_ms: float
    itl_ms: float
    e2e_ms: float
    out_tps: float
    rps: float
    c_eff: float
    window_s: float


@dataclass(frozen=True)
class FitResult:
    """A fitted iteration model and its quality over the rows it was fitted on."""

    t0_ms: float
    a_ms_per_seq: float
    b_ms_per_1k_kv: float
    g_ms_per_prefill_token: float
    r2: float
    max_rel_err: float
    n_rows: int
    method: str
    by_kind: dict[str, dict[str, float]] = field(default_factory=dict)

    def params(self) -> dict[str, float]:
        return {
            "t0_ms": self.t0_ms,
            "a_ms_per_seq": self.a_ms_per_seq,
            "b_ms_per_1k_kv": self.b_ms_per_1k_kv,
            "g_ms_per_prefill_token": self.g_ms_per_prefill_token,
        }


# ---- fitting -------------------------------------------------------------------------------


def _quality(y: np.ndarray, yhat: np.ndarray) -> dict[str, float]:
    ss_res = float(np.sum((y - yhat) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    rel = np.abs(yhat - y) / y
    return {
        "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else math.nan,
        "max_rel_err": float(rel.max()) if rel.size else math.nan,
        "mean_rel_err": float(rel.mean()) if rel.size else math.nan,
        "n": int(y.size),
    }


def _nnls_relative(a_mat: np.ndarray, y: np.ndarray) -> np.ndarray:
    from scipy.optimize import nnls

    w = 1.0 / y
    coef, _ = nnls(a_mat * w[:, None], y * w)
    return np.asarray(coef, dtype=np.float64)


def _finish_fit(
    coef: np.ndarray, method: str, groups: dict[str, tuple[np.ndarray, np.ndarray]]
) -> FitResult:
    all_y = np.concatenate([y for _, y in groups.values()])
    all_hat = np.concatenate([a @ coef for a, _ in groups.values()])
    q = _quality(all_y, all_hat)
    by_kind = {k: _quality(y, a @ coef) for k, (a, y) in groups.items() if y.size}
    t0 = float(coef[0])
    if not t0 > 0:
        raise ValueError(
            "the fit gives t0 = 0: the measurements do not show a per-iteration floor "
            "(too few points, or all at high load?)"
        )
    return FitResult(
        t0_ms=t0,
        a_ms_per_seq=float(coef[1]),
        b_ms_per_1k_kv=float(coef[2]),
        g_ms_per_prefill_token=float(coef[3]),
        r2=q["r2"],
        max_rel_err=q["max_rel_err"],
        n_rows=int(q["n"]),
        method=method,
        by_kind=by_kind,
    )


def fit_points(
    points: Sequence[ProfilePoint], max_batched_tokens: int, max_num_seqs: int
) -> FitResult:
    """Fit (t0, a, b, g) to measured points (module docstring): ITL rows from every point,
    TTFT rows from points at concurrency 1. ValueError when too few rows are usable."""
    itl_rows, itl_y, ttft_rows, ttft_y = [], [], [], []
    for p in points:
        if p.n_requests < 1:
            continue
        i, o = float(p.input_tokens), float(p.output_tokens)
        if math.isfinite(p.itl_ms) and p.itl_ms > 0 and o >= 2:
            c = min(max(p.c_eff, 1e-9), float(max_num_seqs))
            itl_rows.append([1.0, c, c * (i + o / 2.0) / 1000.0, c * i / o])
            itl_y.append(p.itl_ms)
        if p.concurrency == 1 and math.isfinite(p.ttft_ms) and p.ttft_ms > 0:
            nit = math.ceil(i / max_batched_tokens)
            ttft_rows.append([float(nit), 0.0, 0.0, i])
            ttft_y.append(p.ttft_ms)
    if len(itl_rows) + len(ttft_rows) < 4:
        raise ValueError(
            f"too few usable points to fit 4 parameters: {len(itl_rows)} ITL and "
            f"{len(ttft_rows)} TTFT rows (need 4; measure more concurrencies or prompt lengths)"
        )
    groups = {
        "itl": (
            np.asarray(itl_rows, dtype=np.float64).reshape(-1, 4),
            np.asarray(itl_y, dtype=np.float64),
        ),
        "ttft": (
            np.asarray(ttft_rows, dtype=np.float64).reshape(-1, 4),
            np.asarray(ttft_y, dtype=np.float64),
        ),
    }
    a_mat = np.vstack([g[0] for g in groups.values()])
    y = np.concatenate([g[1] for g in groups.values()])
    coef = _nnls_relative(a_mat, y)
    return _finish_fit(coef, "nnls on relative errors: ITL (all points) + TTFT (c=1)", groups)


def fit_iterations(rows: np.ndarray) -> FitResult:
    """Fit (t0, a, b, g) to engine iteration records [n, 4] = (n_decode, kv_tokens,
    prefill_tokens, duration_ms), NNLS on relative errors."""
    r = np.asarray(rows, dtype=np.float64).reshape(-1, 4)
    r = r[np.isfinite(r).all(axis=1) & (r[:, 3] > 0)]
    if r.shape[0] < 8:
        raise ValueError(f"too few iteration records to fit: {r.shape[0]}")
    a_mat = np.column_stack([np.ones(r.shape[0]), r[:, 0], r[:, 1] / 1000.0, r[:, 2]])
    coef = _nnls_relative(a_mat, r[:, 3])
    fit = _finish_fit(
        coef, "nnls on relative errors: engine iteration records", {"iterations": (a_mat, r[:, 3])}
    )
    rel = np.abs(a_mat @ coef - r[:, 3]) / r[:, 3]
    fit.by_kind["iterations"]["p95_rel_err"] = float(np.quantile(rel, 0.95))
    return fit


# ---- measuring -----------------------------------------------------------------------------


def prompt_ids(n: int, rng: random.Random) -> list[int]:
    """n random token ids in TOKEN_ID_RANGE (distinct prompts: no prefix-cache hits)."""
    lo, hi = TOKEN_ID_RANGE
    return [rng.randrange(lo, hi) for _ in range(n)]


def _in_flight_mean(spans: list[tuple[float, float]], w0: float, w1: float) -> float:
    """Time-average number of [start, end) spans overlapping the window [w0, w1)."""
    if w1 <= w0:
        return math.nan
    total = sum(max(0.0, min(e, w1) - max(s, w0)) for s, e in spans)
    return total / (w1 - w0)


async def measure_point(
    client: Any,
    endpoint: str,
    model: str | None,
    concurrency: int,
    input_tokens: int,
    output_tokens: int,
    duration_s: float,
    warmup_s: float,
    seed: int = 0,
    min_requests: int | None = None,
    max_duration_s: float | None = None,
    drain_timeout_s: float = 120.0,
) -> tuple[ProfilePoint, float, float]:
    """Run one grid point (module docstring). Returns the point and its measurement window
    (start, end) on time.perf_counter().

    The window is ``duration_s`` long after ``warmup_s``, stretched (up to
    ``max_duration_s``, default 4 x duration_s) until ``min_requests`` (default
    max(concurrency, 8)) requests have started in it: at high load one request can take
    longer than the window. Raises EndpointError when every request failed."""
    rng = random.Random(f"{seed}-{concurrency}-{input_tokens}-{output_tokens}")
    clock = time.perf_counter
    t_begin = clock()
    w0, w1 = t_begin + warmup_s, t_begin + warmup_s + duration_s
    w_max = w0 + (max_duration_s if max_duration_s is not None else 4.0 * duration_s)
    need = min_requests if min_requests is not None else max(concurrency, 8)
    results: list[StreamResult] = []
    errors: list[str] = []
    o_lo, o_hi = max(1, output_tokens // 2), max(1, (3 * output_tokens) // 2)
    state = {"started_in_window": 0, "stop": math.inf}

    def keep_going() -> bool:
        now = clock()
        if now >= state["stop"]:
            return False
        if now < w1 or (state["started_in_window"] < need and now < w_max):
            return True
        state["stop"] = now
        return False

    async def client_loop(k: int) -> None:
        first = True
        while keep_going():
            n_out = rng.randint(1, output_tokens) if first else rng.randint(o_lo, o_hi)
            first = False
            payload: dict[str, Any] = {
                "prompt": prompt_ids(input_tokens, rng),
                "max_tokens": n_out,
                "ignore_eos": True,
                "temperature": 0.0,
            }
            if model:
                payload["model"] = model
            if clock() >= w0:
                state["started_in_window"] += 1
            try:
                results.append(await stream_completion(client, endpoint, payload, clock))
            except EndpointError as e:
                errors.append(str(e))
                if len(errors) >= 3 and not results:
                    raise

    tasks = [asyncio.create_task(client_loop(k)) for k in range(concurrency)]
    remaining = w_max - clock() + drain_timeout_s
    done, pending = await asyncio.wait(tasks, timeout=max(1.0, remaining))
    for t in pending:
        t.cancel()
    for t in done:
        exc = t.exception()
        if exc is not None and not results:
            raise exc
    w_end = min(state["stop"], w_max)
    measured = [r for r in results if w0 <= r.sent_s < w_end]
    spans = [(r.sent_s, r.finish_s) for r in results]
    if not measured:
        if errors:
            raise EndpointError(errors[0])
        nan = math.nan
        point = ProfilePoint(
            concurrency=concurrency,
            input_tokens=input_tokens,
            output_tokens=float(output_tokens),
            n_requests=0,
            errors=len(errors),
            ttft_ms=nan,
            ttft_p50_ms=nan,
            itl_ms=nan,
            e2e_ms=nan,
            out_tps=nan,
            rps=nan,
            c_eff=_in_flight_mean(spans, w0, w_end),
            window_s=w_end - w0,
        )
        return point, w0, w_end
    ttft = np.array([r.ttft_s for r in measured]) * 1e3
    itl = np.array([r.itl_s for r in measured]) * 1e3
    e2e = np.array([r.e2e_s for r in measured]) * 1e3
    n_out = np.array([r.completion_tokens for r in measured], dtype=np.float64)
    window = w_end - w0
    done_in = [r for r in results if w0 <= r.finish_s < w_end]
    point = ProfilePoint(
        concurrency=concurrency,
        input_tokens=input_tokens,
        output_tokens=float(n_out.mean()),
        n_requests=len(measured),
        errors=len(errors),
        ttft_ms=float(np.nanmean(ttft)),
        ttft_p50_ms=float(np.nanmedian(ttft)),
        itl_ms=float(np.nanmean(itl)) if np.isfinite(itl).any() else math.nan,
        e2e_ms=float(np.nanmean(e2e)),
        out_tps=float(sum(r.completion_tokens for r in done_in) / window),
        rps=len(done_in) / window,
        c_eff=_in_flight_mean(spans, w0, w_end),
        window_s=window,
    )
    return point, w0, w_end


async def _engine_records(client: Any, endpoint: str, since: float) -> np.ndarray | None:
    """(n_decode, kv_tokens, prefill_tokens, duration_ms) rows after `since`, or None when
    the endpoint has no /v1/engine/iterations."""
    try:
        resp = await client.get(f"{endpoint}/v1/engine/iterations", params={"since": since})
    except Exception:  # the cross-check is optional; the profile does not depend on it
        return None
    if resp.status_code != 200:
        return None
    try:
        body = resp.json()
        cols = body["columns"]
        idx = [cols.index(c) for c in ("n_decode", "kv_tokens", "prefill_tokens", "duration_ms")]
        rows = np.asarray(body["rows"], dtype=np.float64).reshape(-1, len(cols))
    except (ValueError, KeyError, TypeError):
        return None
    return rows[:, idx]


async def _server_clock(client: Any, endpoint: str) -> float | None:
    """The reference server's perf_counter now (for windowing its iteration records)."""
    try:
        resp = await client.get(f"{endpoint}/v1/engine/iterations", params={"since": 1e300})
        return float(resp.json()["now"]) if resp.status_code == 200 else None
    except Exception:  # optional: servers without the route have no such clock
        return None


@dataclass
class ProfileSettings:
    """What to measure and how (module docstring)."""

    concurrency: tuple[int, ...] = DEFAULT_CONCURRENCY
    input_lens: tuple[int, ...] = DEFAULT_INPUT_LENS
    output_len: int = DEFAULT_OUTPUT_LEN
    duration_s: float = 6.0
    warmup_s: float | None = None
    seed: int = 0
    timeout_s: float = 300.0
    fit_source: str = "client"
    max_num_seqs: int | None = None
    max_kv_tokens: int | None = None
    max_batched_tokens: int | None = None
    device: str | None = None
    model: str | None = None
    dtype: str | None = None

    def __post_init__(self) -> None:
        problems = []
        if not self.concurrency or min(self.concurrency) < 1:
            problems.append(f"concurrency values must be >= 1, got {self.concurrency}")
        if not self.input_lens or min(self.input_lens) < 1:
            problems.append(f"input lengths must be >= 1, got {self.input_lens}")
        if self.output_len < 2:
            problems.append(
                f"output_len must be >= 2 (ITL needs two tokens), got {self.output_len}"
            )
        if not self.duration_s > 0:
            problems.append(f"duration_s must be > 0, got {self.duration_s}")
        if self.fit_source not in ("client", "engine"):
            problems.append(f"fit_source must be 'client' or 'engine', got {self.fit_source!r}")
        if problems:
            raise ValueError("; ".join(problems))


def _slug(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-") or "unknown"


async def profile_endpoint(
    endpoint: str,
    settings: ProfileSettings,
    progress: Callable[[str], None] | None = None,
) -> Any:
    """Measure the grid against `endpoint`, fit, and return a ServiceProfile (module docstring).

    Raises EndpointError (unreachable or broken endpoint) or ValueError (fit impossible)."""
    from simulator.service import ServiceProfile

    base = normalize_endpoint(endpoint)
    say = progress or (lambda _m: None)
    async with make_client(settings.timeout_s) as client:
        models = await fetch_models(client, base)
        model_entry: dict[str, Any] = (models or [{}])[0]
        model_id = settings.model or model_entry.get("id")
        stats: dict[str, Any] = {}
        try:
            r = await client.get(f"{base}/v1/engine/stats")
            if r.status_code == 200:
                stats = r.json()
        except Exception:  # optional route of the reference server
            stats = {}
        max_seqs = settings.max_num_seqs or int(model_entry.get("max_num_seqs") or 256)
        max_kv = settings.max_kv_tokens or int(model_entry.get("max_kv_tokens") or 400_000)
        mbt = settings.max_batched_tokens or int(model_entry.get("max_batched_tokens") or 8192)
        max_len = int(model_entry.get("max_model_len") or 0)
        warm = (
            settings.warmup_s
            if settings.warmup_s is not None
            else min(2.0, 0.25 * settings.duration_s)
        )
        points: list[ProfilePoint] = []
        engine_rows: list[np.ndarray] = []
        for i_len in settings.input_lens:
            for c in settings.concurrency:
                if max_len and i_len + (3 * settings.output_len) // 2 > max_len:
                    say(f"skip c={c} I={i_len}: longer than the model's context {max_len}")
                    continue
                t_srv = await _server_clock(client, base)
                p, _, _ = await measure_point(
                    client,
                    base,
                    model_id,
                    c,
                    i_len,
                    settings.output_len,
                    settings.duration_s,
                    warm,
                    settings.seed,
                )
                if t_srv is not None:
                    recs = await _engine_records(client, base, t_srv)
                    if recs is not None and recs.size:
                        engine_rows.append(recs)
                points.append(p)
                say(
                    f"c={c:<3d} I={i_len:<5d} O={p.output_tokens:6.1f}  n={p.n_requests:<4d} "
                    f"TTFT {p.ttft_ms:8.1f} ms  ITL {p.itl_ms:7.2f} ms  "
                    f"{p.out_tps:8.1f} tok/s  in flight {p.c_eff:5.1f}"
                )
    fit = fit_points(points, mbt, max_seqs)
    engine_fit: FitResult | None = None
    if engine_rows:
        try:
            engine_fit = fit_iterations(np.vstack(engine_rows))
        except ValueError:
            engine_fit = None
    chosen = fit
    if settings.fit_source == "engine":
        if engine_fit is None:
            raise ValueError(
                f"fit_source 'engine' needs {base}/v1/engine/iterations (the reference server's "
                "iteration records); this endpoint does not serve them"
            )
        chosen = engine_fit
    device = settings.device or stats.get("device_name") or "unknown"
    model = settings.model or model_id or "unknown"
    dtype = settings.dtype or stats.get("dtype") or "unknown"
    n_params = stats.get("n_params")
    fit_info: dict[str, Any] = {
        "method": chosen.method,
        "source": settings.fit_source,
        "r2": chosen.r2,
        "max_rel_err": chosen.max_rel_err,
        "n_rows": chosen.n_rows,
        "by_kind": chosen.by_kind,
        "client": {
            **fit.params(),
            "r2": fit.r2,
            "max_rel_err": fit.max_rel_err,
            "by_kind": fit.by_kind,
        },
        "settings": {
            "concurrency": list(settings.concurrency),
            "input_lens": list(settings.input_lens),
            "output_len": settings.output_len,
            "duration_s": settings.duration_s,
            "warmup_s": warm,
        },
        "model_params": n_params,
        "model_size": stats.get("size"),
        "torch_version": stats.get("torch_version"),
    }
    if engine_fit is not None:
        fit_info["engine"] = {
            **engine_fit.params(),
            "r2": engine_fit.r2,
            "max_rel_err": engine_fit.max_rel_err,
            "by_kind": engine_fit.by_kind,
        }
    size_note = f", {n_params:,} parameters" if isinstance(n_params, int) else ""
    return ServiceProfile(
        name=f"{_slug(device)}-{_slug(model)}",
        device=str(device),
        model=f"{model}{size_note}",
        dtype=str(dtype),
        date=datetime.date.today().isoformat(),
        **chosen.params(),
        max_num_seqs=max_seqs,
        max_kv_tokens=max_kv,
        max_batched_tokens=mbt,
        source=f"gpu-autoscaler profile against {base} ({len(points)} points, "
        f"{settings.fit_source} fit)",
        raw_points=tuple(_json_point(p) for p in points),
        fit=_json_safe(fit_info),
    )


def _json_point(p: ProfilePoint) -> dict[str, Any]:
    return {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v)
        for k, v in asdict(p).items()
    }


def _json_safe(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_json_safe(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


# ---- a local server in a child process --------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class LocalServer:
    """`gpu-autoscaler serve-model` in a child process on 127.0.0.1 (a separate interpreter,
    so the profiler's client does not share the server's GIL). `start()` waits for /health."""

    def __init__(self, args: Sequence[str], startup_timeout_s: float = 600.0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = [*args, "--host", "127.0.0.1", "--port", str(self.port)]
        self.startup_timeout_s = startup_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> LocalServer:
        import httpx

        cmd = [sys.executable, "-m", "simulator.replay.cli", "serve-model", *self.args]
        env = dict(os.environ)
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen(cmd, env=env)
        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            if self.proc.poll() is not None:
                raise EndpointError(
                    f"the local model server exited with status {self.proc.returncode} "
                    f"before serving ({' '.join(cmd)})"
                )
            try:
                if httpx.get(f"{self.url}/health", timeout=2.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise EndpointError(
                    f"the local model server did not answer {self.url}/health within "
                    f"{self.startup_timeout_s:g} s"
                )
            time.sleep(0.25)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_INPUT_LENS",
    "DEFAULT_OUTPUT_LEN",
    "FitResult",
    "LocalServer",
    "ProfilePoint",
    "ProfileSettings",
    "fit_iterations",
    "fit_points",
    "measure_point",
    "profile_endpoint",
    "prompt_ids",
]
