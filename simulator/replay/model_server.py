"""Reference model server: OpenAI-compatible completions over a real continuous-batching engine.

    gpu-autoscaler serve-model [--size tiny|small|1b] [--device auto|cpu|cuda] [--dtype auto]
                               [--port 8000] [--max-batch 64] [--max-kv-tokens N]

`create_app(engine, ...)` is a FastAPI app over `simulator.replay.model.Engine` (a random-weight
decoder-only transformer in torch; the engine's rules are those of the simulator's replica):

- ``POST /v1/completions``: OpenAI's completions API for one prompt (a string, tokenized as
  UTF-8 bytes, or a list of token ids). Generation is greedy, ignores end-of-sequence and
  yields exactly ``max_tokens`` tokens (default 16). ``stream: true`` answers with
  server-sent events, one ``data: {completion chunk}`` per token, the last with
  ``finish_reason: "length"``, a usage chunk when ``stream_options.include_usage`` is set,
  then ``data: [DONE]``; otherwise one JSON ``text_completion`` object with ``usage``.
  Errors are OpenAI-style ``{"error": {"message", "type", "code"}}`` (400 bad request,
  404 unknown model).
- ``GET /v1/models``: the model, with the engine's limits (``max_model_len``,
  ``max_num_seqs``, ``max_kv_tokens``, ``max_batched_tokens``) as extra fields.
- ``GET /metrics``: Prometheus text with vLLM's names (`VllmMetrics`), so the controller's
  ``vllm`` preset reads this server as it reads vLLM.
- ``GET /v1/engine/stats`` and ``GET /v1/engine/iterations?since=N``: engine counters,
  device, parameters, and the per-iteration records (decode count, KV tokens, prefill tokens,
  duration) that tests and the profiler's engine-side fit read.
- ``GET /health``: 200 while the engine thread lives, 503 with the error after it died.

The engine runs in a background thread; each iteration's outputs reach the event loop in one
``call_soon_threadsafe`` and are fanned out to per-request asyncio queues. A client that
disconnects mid-stream aborts its request (its batch slot is freed at the next iteration).

torch is optional (the ``gpu`` extra): this module imports it only in `build_engine`;
without it `require_torch` raises `TorchMissing` whose message says how to install it.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

TORCH_INSTALL_HINT = (
    "torch is not installed; the reference model server and `profile --local` need it. "
    "Install it with `pip install 'gpu-autoscaler[gpu]'` (CUDA build for a GPU) or, for CPU "
    "only, `pip install torch==2.13.0`."
)


class TorchMissing(RuntimeError):
    """torch cannot be imported; the message says how to install it."""


def require_torch() -> Any:
    """Import and return torch, or raise TorchMissing with the install command."""
    try:
        import torch
    except ImportError as e:
        raise TorchMissing(f"{TORCH_INSTALL_HINT} ({e})") from e
    return torch


# ---- configuration -------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the decoder-only transformer (see simulator.replay.model)."""

    name: str
    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_ff: int
    default_max_model_len: int

    def __post_init__(self) -> None:
        problems = []
        if self.d_model % self.n_heads:
            problems.append(f"d_model {self.d_model} must be a multiple of n_heads {self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            problems.append(
                f"n_heads {self.n_heads} must be a multiple of n_kv_heads {self.n_kv_heads}"
            )
        if (self.d_model // self.n_heads) % 2:
            problems.append("head_dim must be even (rotary embeddings rotate pairs)")
        if self.vocab_size < 256:
            problems.append(f"vocab_size must be >= 256 (byte tokenizer), got {self.vocab_size}")
        if problems:
            raise ValueError("invalid ModelConfig: " + "; ".join(problems))

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def n_params(self) -> int:
        """Parameter count: embeddings, LM head, final norm and the blocks."""
        hd = self.head_dim
        per_block = (
            self.d_model * (self.n_heads + 2 * self.n_kv_heads) * hd  # qkv
            + self.n_heads * hd * self.d_model  # o
            + self.d_model * 2 * self.d_ff  # gate_up
            + self.d_ff * self.d_model  # down
            + 2 * self.d_model  # two norms
        )
        return 2 * self.vocab_size * self.d_model + self.d_model + self.n_layers * per_block

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        """KV-cache bytes one token takes over all layers (K and V)."""
        return 2 * self.n_layers * self.n_kv_heads * self.head_dim * dtype_bytes


MODEL_SIZES: dict[str, ModelConfig] = {
    # ~1.05 M parameters: fast on one CPU core, for tests
    "tiny": ModelConfig("tiny", 256, 128, 4, 4, 2, 512, 4096),
    # ~33 M parameters
    "small": ModelConfig("small", 8192, 512, 8, 8, 4, 1536, 4096),
    # ~1.1 B parameters: Llama-3.2-1B's blocks (d 2048, 16 layers, 32 heads, 8 KV heads,
    # MLP 8192) with a 32 k vocabulary and an untied head
    "1b": ModelConfig("1b", 32000, 2048, 16, 32, 8, 8192, 8192),
}


@dataclass(frozen=True)
class EngineConfig:
    """Scheduler limits (vLLM's names in brackets).

    max_batch: sequences running at once [--max-num-seqs]; max_kv_tokens: KV tokens that
    admission may reserve (prompt + max_tokens per request); max_batched_tokens: tokens one
    iteration processes, decode tokens first, the rest prompt chunks
    [--max-num-batched-tokens]; max_model_len: prompt + max_tokens of one request.
    """

    max_batch: int = 64
    max_kv_tokens: int = 262_144
    max_batched_tokens: int = 2048
    max_model_len: int = 4096

    def __post_init__(self) -> None:
        problems = [
            f"{k} must be an integer >= 1, got {v!r}"
            for k, v in asdict(self).items()
            if not (isinstance(v, int) and v >= 1)
        ]
        if problems:
            raise ValueError("invalid EngineConfig: " + "; ".join(problems))


@dataclass(frozen=True)
class ServerConfig:
    """Everything `serve` needs; see `gpu-autoscaler serve-model --help`."""

    size: str = "tiny"
    device: str = "auto"
    dtype: str = "auto"
    host: str = "127.0.0.1"
    port: int = 8000
    max_batch: int = 64
    max_kv_tokens: int | None = None
    max_batched_tokens: int = 2048
    max_model_len: int | None = None
    model_name: str | None = None
    namespace: str | None = None
    workload: str | None = None
    seed: int = 0
    threads: int | None = None
    warmup: bool = True

    def model_config(self) -> ModelConfig:
        try:
            return MODEL_SIZES[self.size]
        except KeyError:
            raise ValueError(
                f"unknown model size {self.size!r}; known: {', '.join(MODEL_SIZES)}"
            ) from None

    def engine_config(self) -> EngineConfig:
        mc = self.model_config()
        max_len = self.max_model_len or mc.default_max_model_len
        kv = self.max_kv_tokens or self.max_batch * max_len
        return EngineConfig(self.max_batch, kv, self.max_batched_tokens, max_len)


_DTYPE_ALIASES = {
    "fp32": "float32",
    "float32": "float32",
    "float": "float32",
    "fp16": "float16",
    "half": "float16",
    "float16": "float16",
    "bf16": "bfloat16",
    "bfloat16": "bfloat16",
}


def resolve_device(device: str) -> str:
    """auto -> cuda when torch sees a GPU, else cpu. ValueError for cuda without a GPU."""
    torch = require_torch()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: torch sees no CUDA device")
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"--device must be auto, cpu or cuda[:N], got {device!r}")
    return device


def resolve_dtype(dtype: str, device: str) -> str:
    """auto -> bfloat16 on CUDA, float32 on CPU; aliases bf16, fp16, fp32."""
    if dtype == "auto":
        return "bfloat16" if device.startswith("cuda") else "float32"
    try:
        return _DTYPE_ALIASES[dtype.lower()]
    except KeyError:
        raise ValueError(f"--dtype must be auto, bf16, fp16 or fp32, got {dtype!r}") from None


# ---- metrics -------------------------------------------------------------------------------

# vLLM's bucket boundaries (vllm/v1/metrics/loggers.py)
TTFT_BUCKETS_S = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
    160.0,
    640.0,
    2560.0,
)
E2E_BUCKETS_S = (
    0.3,
    0.5,
    0.8,
    1.0,
    1.5,
    2.0,
    2.5,
    5.0,
    10.0,
    15.0,
    20.0,
    30.0,
    40.0,
    50.0,
    60.0,
    120.0,
    240.0,
    480.0,
    960.0,
    1920.0,
    7680.0,
)


class EngineHooks(Protocol):
    """What the engine reports as it runs (called from the engine thread)."""

    def on_admit(self, seq: Any) -> None: ...
    def on_first_token(self, seq: Any) -> None: ...
    def on_tokens(self, n: int) -> None: ...
    def on_finish(self, seq: Any) -> None: ...
    def on_state(self, n_running: int, n_waiting: int, kv_used_tokens: int) -> None: ...


class VllmMetrics:
    """vLLM-named Prometheus metrics in a registry of their own (one per server).

    Series: ``vllm:num_requests_running``, ``vllm:num_requests_waiting``,
    ``vllm:kv_cache_usage_perc`` (0-1: KV tokens held / max_kv_tokens) gauges;
    ``vllm:prompt_tokens_total``, ``vllm:generation_tokens_total``,
    ``vllm:request_success_total{finished_reason="length"}`` counters;
    ``vllm:time_to_first_token_seconds`` and ``vllm:e2e_request_latency_seconds`` histograms
    (server side: from the request's arrival at the engine). Labels: ``model_name``, plus
    ``namespace`` and ``workload`` when given (what the controller's MetricsSource groups by).
    """

    def __init__(
        self,
        model_name: str,
        max_kv_tokens: int,
        namespace: str | None = None,
        workload: str | None = None,
    ) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        labels = {"model_name": model_name}
        if namespace is not None:
            labels["namespace"] = namespace
        if workload is not None:
            labels["workload"] = workload
        names = list(labels)
        reg = self.registry
        self.max_kv_tokens = max_kv_tokens

        def bind(metric: Any) -> Any:
            return metric.labels(**labels)

        self.running = bind(
            Gauge(
                "vllm:num_requests_running", "Requests in the running batch.", names, registry=reg
            )
        )
        self.waiting = bind(
            Gauge(
                "vllm:num_requests_waiting", "Requests waiting to be admitted.", names, registry=reg
            )
        )
        self.kv_usage = bind(
            Gauge("vllm:kv_cache_usage_perc", "KV-cache usage, 0 to 1.", names, registry=reg)
        )
        self.prompt_tokens = bind(
            Counter("vllm:prompt_tokens", "Prefilled prompt tokens.", names, registry=reg)
        )
        self.generation_tokens = bind(
            Counter("vllm:generation_tokens", "Generated tokens.", names, registry=reg)
        )
        self.success = Counter(
            "vllm:request_success", "Finished requests.", [*names, "finished_reason"], registry=reg
        ).labels(**labels, finished_reason="length")
        self.ttft = bind(
            Histogram(
                "vllm:time_to_first_token_seconds",
                "Time to first token (s).",
                names,
                buckets=TTFT_BUCKETS_S,
                registry=reg,
            )
        )
        self.e2e = bind(
            Histogram(
                "vllm:e2e_request_latency_seconds",
                "End-to-end request latency (s).",
                names,
                buckets=E2E_BUCKETS_S,
                registry=reg,
            )
        )

    # EngineHooks
    def on_admit(self, seq: Any) -> None:
        return None

    def on_first_token(self, seq: Any) -> None:
        self.ttft.observe(max(0.0, seq.first_token_t - seq.arrival_t))
        self.prompt_tokens.inc(len(seq.prompt))

    def on_tokens(self, n: int) -> None:
        if n:
            self.generation_tokens.inc(n)

    def on_finish(self, seq: Any) -> None:
        self.e2e.observe(max(0.0, seq.finish_t - seq.arrival_t))
        self.success.inc()

    def on_state(self, n_running: int, n_waiting: int, kv_used_tokens: int) -> None:
        self.running.set(n_running)
        self.waiting.set(n_waiting)
        self.kv_usage.set(kv_used_tokens / self.max_kv_tokens)

    def exposition(self) -> bytes:
        from prometheus_client import generate_latest

        return bytes(generate_latest(self.registry))


# ---- the engine ------------------------------------------------------------------------------


@dataclass
class EngineInfo:
    """What the server says about its engine (/v1/engine/stats, /v1/models)."""

    model_name: str
    size: str
    n_params: int
    device: str
    device_name: str
    dtype: str
    engine: EngineConfig
    torch_version: str
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(d.pop("extra"))
        return d


def build_engine(cfg: ServerConfig) -> tuple[Any, EngineInfo]:
    """Build (and warm up) the engine for cfg. Raises TorchMissing or ValueError."""
    torch = require_torch()
    mc = cfg.model_config()
    ec = cfg.engine_config()
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    if cfg.threads is not None:
        torch.set_num_threads(max(1, cfg.threads))
    from simulator.replay.model import Engine, device_name

    engine = Engine(mc, ec, device=device, dtype=dtype, seed=cfg.seed)
    if cfg.warmup:
        engine.warmup(n_prompt=min(256, ec.max_batched_tokens))
    info = EngineInfo(
        model_name=cfg.model_name or f"random-{mc.name}",
        size=mc.name,
        n_params=mc.n_params,
        device=device,
        device_name=device_name(device),
        dtype=dtype,
        engine=ec,
        torch_version=str(torch.__version__),
    )
    return engine, info


# ---- the HTTP app ----------------------------------------------------------------------------


def detokenize(ids: list[int]) -> str:
    """One printable ASCII character per token id."""
    return "".join(chr(32 + t % 95) for t in ids)


class _BadRequest(Exception):
    def __init__(self, message: str, code: int = 400, kind: str = "BadRequestError") -> None:
        super().__init__(message)
        self.code = code
        self.kind = kind


def _error(message: str, code: int = 400, kind: str = "BadRequestError") -> Any:
    return JSONResponse(
        {"error": {"message": message, "type": kind, "param": None, "code": code}},
        status_code=code,
    )


def _parse_completion(body: Any, model_name: str, vocab_size: int) -> dict[str, Any]:
    """Validate a completions body; returns prompt ids, max_tokens, stream, include_usage."""
    if not isinstance(body, dict):
        raise _BadRequest("request body must be a JSON object")
    model = body.get("model")
    if model is not None and model != model_name:
        raise _BadRequest(
            f"The model `{model}` does not exist; this server serves `{model_name}`.",
            404,
            "NotFoundError",
        )
    prompt = body.get("prompt")
    ids: list[int]
    if isinstance(prompt, str):
        ids = list(prompt.encode("utf-8"))
    elif (
        isinstance(prompt, list)
        and prompt
        and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt)
    ):
        ids = list(prompt)
        bad = [t for t in ids if not 0 <= t < vocab_size]
        if bad:
            raise _BadRequest(f"prompt token ids must be in [0, {vocab_size}); got {bad[:3]}")
    elif isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
        return _parse_completion({**body, "prompt": prompt[0]}, model_name, vocab_size)
    elif isinstance(prompt, list) and len(prompt) > 1:
        raise _BadRequest("this server takes one prompt per request")
    else:
        raise _BadRequest("prompt must be a non-empty string or a list of token ids")
    if not ids:
        raise _BadRequest("prompt must hold at least one token")
    max_tokens = body.get("max_tokens", 16)
    if max_tokens is None:
        max_tokens = 16
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise _BadRequest(f"max_tokens must be an integer >= 1, got {max_tokens!r}")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _BadRequest(f"stream must be true or false, got {stream!r}")
    opts = body.get("stream_options") or {}
    if not isinstance(opts, dict):
        raise _BadRequest("stream_options must be an object")
    n = body.get("n", 1)
    if n not in (1, None):
        raise _BadRequest(f"n must be 1 (one completion per request), got {n!r}")
    return {
        "ids": ids,
        "max_tokens": max_tokens,
        "stream": stream,
        "include_usage": bool(opts.get("include_usage", False)),
    }


def create_app(
    engine: Any,
    info: EngineInfo,
    metrics: VllmMetrics | None = None,
) -> Any:
    """The FastAPI app over a built engine (module docstring). Starts the engine thread on
    startup and stops it on shutdown; metrics default to a fresh VllmMetrics."""
    mx = metrics or VllmMetrics(info.model_name, info.engine.max_kv_tokens)
    model_name = info.model_name
    vocab = int(engine.model_cfg.vocab_size)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()

        def dispatch(outputs: list[tuple[Any, list[int], bool]]) -> None:
            for seq, toks, done in outputs:
                if seq.sink is not None:
                    seq.sink(seq, toks, done)

        def emit(outputs: list[tuple[Any, list[int], bool]]) -> None:
            try:
                loop.call_soon_threadsafe(dispatch, outputs)
            except RuntimeError:  # loop closed during shutdown
                pass

        engine.hooks = mx
        engine.emit = emit
        mx.on_state(0, 0, 0)
        engine.start()
        try:
            yield
        finally:
            engine.stop()

    app = FastAPI(title="gpu-autoscaler reference model server", lifespan=lifespan)
    app.state.engine = engine
    app.state.info = info
    app.state.metrics = mx

    @app.get("/health")
    async def health() -> Any:
        if engine.error is not None:
            return JSONResponse({"status": "error", "error": repr(engine.error)}, 503)
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics_route() -> Any:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(mx.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models() -> Any:
        ec = info.engine
        return {
            "object": "list",
            "data": [
                {
                    "id": model_name,
                    "object": "model",
                    "created": 0,
                    "owned_by": "gpu-autoscaler",
                    "max_model_len": ec.max_model_len,
                    "max_num_seqs": ec.max_batch,
                    "max_kv_tokens": ec.max_kv_tokens,
                    "max_batched_tokens": ec.max_batched_tokens,
                }
            ],
        }

    @app.get("/v1/engine/stats")
    async def stats() -> Any:
        recs = engine.iterations()
        sizes: dict[int, int] = {}
        for r in recs:
            sizes[r.n_decode] = sizes.get(r.n_decode, 0) + 1
        return {
            **info.to_dict(),
            "iterations": engine.n_iterations,
            "generated_tokens": engine.n_tokens_generated,
            "prefill_tokens": engine.n_prefill_tokens,
            "decode_batch_histogram": {str(k): v for k, v in sorted(sizes.items())},
            **engine.counts(),
        }

    @app.get("/v1/engine/iterations")
    async def iterations(since: float = 0.0) -> Any:
        """Iteration records whose start (perf_counter s) is after `since`."""
        recs = [r for r in engine.iterations() if r.t_start > since]
        cols = [
            "t_start",
            "duration_ms",
            "n_decode",
            "kv_tokens",
            "prefill_tokens",
            "n_running",
            "n_waiting",
        ]
        return {
            "columns": cols,
            "rows": [[getattr(r, c) for c in cols] for r in recs],
            "now": time.perf_counter(),
        }

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            return _error(f"request body is not JSON: {e}")
        try:
            req = _parse_completion(body, model_name, vocab)
        except _BadRequest as e:
            return _error(str(e), e.code, e.kind)
        queue: asyncio.Queue[tuple[list[int], bool]] = asyncio.Queue()

        def sink(seq: Any, toks: list[int], done: bool) -> None:
            queue.put_nowait((toks, done))

        try:
            seq = engine.submit(req["ids"], req["max_tokens"], sink)
        except ValueError as e:
            return _error(str(e))
        rid = f"cmpl-{secrets.token_hex(12)}"
        created = int(time.time())
        n_prompt = len(req["ids"])

        def usage(n_out: int) -> dict[str, int]:
            return {
                "prompt_tokens": n_prompt,
                "completion_tokens": n_out,
                "total_tokens": n_prompt + n_out,
            }

        if not req["stream"]:
            out: list[int] = []
            try:
                while True:
                    toks, done = await queue.get()
                    out.extend(toks)
                    if done:
                        break
            finally:
                if not seq.finished:
                    engine.abort(seq)
            if seq.error is not None:
                return _error(seq.error, 500, "InternalServerError")
            return {
                "id": rid,
                "object": "text_completion",
                "created": created,
                "model": model_name,
                "choices": [
                    {
                        "index": 0,
                        "text": detokenize(out),
                        "logprobs": None,
                        "finish_reason": "length",
                    }
                ],
                "usage": usage(len(out)),
            }

        include_usage = req["include_usage"]

        async def events() -> AsyncIterator[str]:
            n_out = 0
            try:
                while True:
                    toks, done = await queue.get()
                    if seq.error is not None:
                        err = {
                            "error": {
                                "message": seq.error,
                                "type": "InternalServerError",
                                "code": 500,
                            }
                        }
                        yield f"data: {json.dumps(err)}\n\n"
                        yield "data: [DONE]\n\n"
                        return
                    n_out += len(toks)
                    chunk: dict[str, Any] = {
                        "id": rid,
                        "object": "text_completion",
                        "created": created,
                        "model": model_name,
                        "choices": [
                            {
                                "index": 0,
                                "text": detokenize(toks),
                                "logprobs": None,
                                "finish_reason": "length" if done else None,
                            }
                        ],
                    }
                    if include_usage:
                        chunk["usage"] = None
                    yield f"data: {json.dumps(chunk, separators=(',', ':'))}\n\n"
                    if done:
                        break
                if include_usage:
                    tail = {
                        "id": rid,
                        "object": "text_completion",
                        "created": created,
                        "model": model_name,
                        "choices": [],
                        "usage": usage(n_out),
                    }
                    yield f"data: {json.dumps(tail, separators=(',', ':'))}\n\n"
                yield "data: [DONE]\n\n"
            finally:
                if not seq.finished:
                    engine.abort(seq)

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )

    @app.exception_handler(Exception)
    async def unhandled(request: Request, exc: Exception) -> Any:  # pragma: no cover
        return PlainTextResponse(f"internal error: {exc!r}", status_code=500)

    return app


# ---- running it ------------------------------------------------------------------------------


class ServerThread:
    """Serve an ASGI app with uvicorn in a background thread (tests, in-process tools).

    port 0 binds a free port; `url` is known once `start()` returns."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = app
        self.host = host
        self.port = port
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = 30.0) -> ServerThread:
        import uvicorn

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            self.app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2
        )
        self._server = uvicorn.Server(config)
        server = self._server

        def run() -> None:
            asyncio.run(server.serve(sockets=[sock]))

        self._thread = threading.Thread(target=run, name=f"uvicorn-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"server on {self.url} did not start within {timeout_s} s")
            time.sleep(0.02)
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(cfg: ServerConfig, echo: Callable[[str], None] = print) -> int:
    """Build the engine and serve it until interrupted (blocking). Returns an exit status."""
    import sys

    import uvicorn

    # The engine thread holds the GIL while it launches kernels; a shorter switch interval
    # (default 5 ms) bounds how long the HTTP thread waits for it to 1 ms per hand-over.
    sys.setswitchinterval(0.001)
    engine, info = build_engine(cfg)
    mx = VllmMetrics(info.model_name, info.engine.max_kv_tokens, cfg.namespace, cfg.workload)
    app = create_app(engine, info, mx)
    gb = info.n_params / 1e9
    echo(
        f"serving {info.model_name} ({info.n_params:,} parameters, {gb:.2f} B) on "
        f"{info.device_name} ({info.device}, {info.dtype}) at http://{cfg.host}:{cfg.port}; "
        f"max batch {info.engine.max_batch}, KV {info.engine.max_kv_tokens:,} tokens, "
        f"{info.engine.max_batched_tokens} tokens per iteration, context "
        f"{info.engine.max_model_len}"
    )
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning")
    return 0


__all__ = [
    "MODEL_SIZES",
    "TORCH_INSTALL_HINT",
    "EngineConfig",
    "EngineHooks",
    "EngineInfo",
    "ModelConfig",
    "ServerConfig",
    "ServerThread",
    "TorchMissing",
    "VllmMetrics",
    "build_engine",
    "create_app",
    "detokenize",
    "require_torch",
    "resolve_device",
    "resolve_dtype",
    "serve",
]
