"""A real decoder-only transformer with random weights and a continuous-batching engine.

Imports torch at module level: import this module only after `require_torch()`
(simulator.replay.model_server) has said torch is there.

The model
---------
Llama-style: token embedding, ``n_layers`` blocks of RMSNorm -> grouped-query attention with
rotary position embeddings -> RMSNorm -> SwiGLU MLP, a final RMSNorm and an untied LM head.
Weights are random (``torch.manual_seed(seed)`` then PyTorch's default initialization);
nothing is downloaded. Sizes (`MODEL_SIZES`): ``tiny`` (~1 M parameters, CPU tests),
``small`` (~33 M), ``1b`` (~1.1 B, Llama-3.2-1B's shape with a 32 k vocabulary, for a GPU).

The tokenizer is bytes: a text prompt is its UTF-8 bytes (one token each, ids 0-255); a
prompt may also be a list of token ids below the vocabulary size. Generated ids are shown
as one printable ASCII character each (``chr(32 + id % 95)``), so a streamed chunk carries
exactly one token. Decoding is greedy and ignores any end-of-sequence: a request produces
exactly ``max_tokens`` tokens.

The engine (one iteration = one forward pass)
---------------------------------------------
``Engine.step()`` is one iteration of a continuous-batching scheduler, the rules of
simulator.cluster.SimCluster's replica:

1. admit from the FCFS waiting queue while running sequences < ``max_batch`` and the KV
   reservation (prompt + max_tokens of every running sequence) plus the head's fits
   ``max_kv_tokens`` (head-of-line: the head blocks the queue when it does not fit);
2. every running sequence that has its first token decodes one token; the iteration's
   token budget ``max_batched_tokens`` minus those decode tokens goes to prompt chunks of
   sequences still in prefill, oldest first (chunked prefill; a long prompt spans several
   iterations, alongside the decodes);
3. ONE forward over all of it: the linear layers run on the packed [T, d_model] tokens
   (T = decode tokens + prefill chunk tokens); attention runs once per layer over the
   decoding sequences (their KV cache slots as one padded batch, masked by length) and
   once per prefill chunk (causal over its cached prefix);
4. greedy sampling for every decoding sequence and every sequence whose prompt finished in
   this iteration (its first token); sequences that reached max_tokens leave and free their
   slot and reservation.

KV cache: one slot per batch place, ``[max_batch, n_kv_heads, max_model_len, head_dim]``
per layer for K and for V, preallocated. Decode attention reads the slots
``[0, highest decoding slot]`` up to the longest decoding context (slots are allocated
lowest-first, so holes stay few); its cost grows with batch x longest context, which the
simulator's ``b * KV`` term approximates.

Every iteration is timed (wall clock from the start of the step to the end of its output
hand-off: scheduling, tensor building, the forward and sampling) and recorded with its
decode count, KV tokens and prefill tokens: `Engine.iterations()` returns them (a ring of
the last 100 k), for tests and for the profiler's engine-side cross-check.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from simulator.replay.model_server import MODEL_SIZES, EngineConfig, EngineHooks, ModelConfig

_log = logging.getLogger(__name__)

# ---- the model -------------------------------------------------------------------------------


class RMSNorm(nn.Module):
    """Root-mean-square layer norm over the last dimension (no bias)."""

    def __init__(self, dim: int, eps: float = 1e-5, **kw: Any) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, **kw))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y.to(x.dtype)) * self.weight


class Block(nn.Module):
    """One pre-norm transformer block: GQA attention with RoPE, then a SwiGLU MLP."""

    def __init__(self, cfg: ModelConfig, **kw: Any) -> None:
        super().__init__()
        self.n_heads = cfg.n_heads
        self.n_kv = cfg.n_kv_heads
        self.hd = cfg.head_dim
        self.attn_norm = RMSNorm(cfg.d_model, **kw)
        n_qkv = (cfg.n_heads + 2 * cfg.n_kv_heads) * self.hd
        self.qkv = nn.Linear(cfg.d_model, n_qkv, bias=False, **kw)
        self.o = nn.Linear(cfg.n_heads * self.hd, cfg.d_model, bias=False, **kw)
        self.mlp_norm = RMSNorm(cfg.d_model, **kw)
        self.gate_up = nn.Linear(cfg.d_model, 2 * cfg.d_ff, bias=False, **kw)
        self.down = nn.Linear(cfg.d_ff, cfg.d_model, bias=False, **kw)


class Transformer(nn.Module):
    """Embedding, blocks, final norm, LM head; `forward_packed` is the engine's forward."""

    def __init__(self, cfg: ModelConfig, device: torch.device, dtype: torch.dtype) -> None:
        super().__init__()
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model, **kw)
        self.blocks = nn.ModuleList(Block(cfg, **kw) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, **kw)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False, **kw)
        with torch.no_grad():
            # unit-variance embeddings keep the random network's activations O(1)
            self.embed.weight.normal_(0.0, 1.0)


def _rope_tables(
    head_dim: int, max_len: int, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin, [max_len, head_dim / 2], base 10000."""
    inv = 1.0 / (10000.0 ** (torch.arange(0, head_dim, 2, device=device).float() / head_dim))
    ang = torch.arange(max_len, device=device).float()[:, None] * inv[None, :]
    return ang.cos().to(dtype), ang.sin().to(dtype)


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (first half, second half) of x [T, heads, hd] by the angles [T, hd/2]."""
    h = x.shape[-1] // 2
    x1, x2 = x[..., :h], x[..., h:]
    c, s = cos[:, None, :], sin[:, None, :]
    return torch.cat((x1 * c - x2 * s, x1 * s + x2 * c), dim=-1)


# ---- the batch of one iteration ------------------------------------------------------------


@dataclass
class _Batch:
    """Index tensors of one iteration. T = n_dec + sum(chunk lengths); decode tokens first."""

    tokens: torch.Tensor  # [T] int64
    positions: torch.Tensor  # [T] int64
    slots: torch.Tensor  # [T] int64
    n_dec: int
    dec_slots: torch.Tensor  # [n_dec] int64
    dec_span: int  # slots [0, dec_span) take part in decode attention
    dec_len: int  # keys [0, dec_len) take part
    dec_mask: torch.Tensor | None  # [dec_span, 1, 1, dec_len] bool
    chunks: list[tuple[int, int, int, int]]  # (offset in T, slot, start position, length)
    chunk_masks: list[torch.Tensor | None]  # [len, start + len] bool, None = plain causal
    sample_rows: torch.Tensor  # [n_sample] int64 rows of T whose logits are sampled


class _Runner:
    """The model, its KV cache and the packed forward of one iteration."""

    def __init__(
        self,
        model_cfg: ModelConfig,
        eng: EngineConfig,
        device: torch.device,
        dtype: torch.dtype,
        seed: int,
    ) -> None:
        torch.manual_seed(seed)
        self.cfg = model_cfg
        self.device = device
        self.dtype = dtype
        self.model = Transformer(model_cfg, device, dtype).eval()
        shape = (eng.max_batch, model_cfg.n_kv_heads, eng.max_model_len, model_cfg.head_dim)
        # torch.empty: untouched pages cost no memory on CPU; every read is masked to written
        # positions, so the garbage is never seen
        self.k_cache = [
            torch.empty(shape, device=device, dtype=dtype) for _ in range(model_cfg.n_layers)
        ]
        self.v_cache = [
            torch.empty(shape, device=device, dtype=dtype) for _ in range(model_cfg.n_layers)
        ]
        self.cos, self.sin = _rope_tables(model_cfg.head_dim, eng.max_model_len, device, dtype)
        self.group = model_cfg.n_heads // model_cfg.n_kv_heads

    def _attend(self, li: int, q: torch.Tensor, b: _Batch) -> torch.Tensor:
        """Attention of layer li for the packed queries q [T, H, hd] -> [T, H, hd]."""
        out = torch.empty_like(q)
        kc, vc = self.k_cache[li], self.v_cache[li]
        hkv, g, hd = self.cfg.n_kv_heads, self.group, self.cfg.head_dim
        if b.n_dec:
            s, ln = b.dec_span, b.dec_len
            qs = q.new_zeros((s, hkv * g, hd))
            qs[b.dec_slots] = q[: b.n_dec]
            # GQA without copying K/V: the group's heads become the query-length dimension
            qg = qs.view(s, hkv, g, hd)
            o = F.scaled_dot_product_attention(
                qg, kc[:s, :, :ln], vc[:s, :, :ln], attn_mask=b.dec_mask
            )
            out[: b.n_dec] = o.reshape(s, hkv * g, hd)[b.dec_slots]
        for (off, slot, start, n), mask in zip(b.chunks, b.chunk_masks, strict=True):
            qc = q[off : off + n].transpose(0, 1).unsqueeze(0)  # [1, H, n, hd]
            k = kc[slot, :, : start + n].repeat_interleave(g, dim=0).unsqueeze(0)
            v = vc[slot, :, : start + n].repeat_interleave(g, dim=0).unsqueeze(0)
            if mask is None:
                o = F.scaled_dot_product_attention(qc, k, v, is_causal=True)
            else:
                o = F.scaled_dot_product_attention(qc, k, v, attn_mask=mask)
            out[off : off + n] = o[0].transpose(0, 1)
        return out

    def forward(self, b: _Batch) -> list[int]:
        """One packed forward; returns the greedy token of each row in b.sample_rows."""
        m = self.model
        cfg = self.cfg
        hd, nh, nkv = cfg.head_dim, cfg.n_heads, cfg.n_kv_heads
        cos, sin = self.cos[b.positions], self.sin[b.positions]
        x = m.embed(b.tokens)
        for li, mod in enumerate(m.blocks):
            blk = cast(Block, mod)
            h = blk.attn_norm(x)
            qkv = blk.qkv(h)
            q = qkv[:, : nh * hd].view(-1, nh, hd)
            k = qkv[:, nh * hd : (nh + nkv) * hd].view(-1, nkv, hd)
            v = qkv[:, (nh + nkv) * hd :].view(-1, nkv, hd)
            q = _rope(q, cos, sin)
            k = _rope(k, cos, sin)
            # write this iteration's keys and values: cache[slot, :, position] per token
            self.k_cache[li][b.slots, :, b.positions] = k
            self.v_cache[li][b.slots, :, b.positions] = v
            a = self._attend(li, q, b)
            x = x + blk.o(a.reshape(-1, nh * hd))
            gu = blk.gate_up(blk.mlp_norm(x))
            gate, up = gu.chunk(2, dim=-1)
            x = x + blk.down(F.silu(gate) * up)
        hs = m.norm(x[b.sample_rows])
        logits = m.lm_head(hs)
        # the device-to-host copy waits for the GPU with the GIL released (tensor ops drop
        # it), so the HTTP thread runs meanwhile; tolist() on a device tensor would not
        ids = logits.argmax(dim=-1).to("cpu")
        return [int(t) for t in ids.tolist()]


# ---- sequences and the engine ----------------------------------------------------------------


@dataclass(eq=False)
class EngineRequest:
    """One request inside the engine. Times are time.perf_counter() seconds.

    prompt: token ids; max_tokens: tokens to generate (exactly); n_prefilled: prompt tokens
    already in the KV cache; generated: ids so far; sink: called from the engine thread with
    batches of (sequence, new token ids, finished)."""

    rid: int
    prompt: list[int]
    max_tokens: int
    sink: Callable[[EngineRequest, list[int], bool], None] | None
    arrival_t: float
    slot: int = -1
    n_prefilled: int = 0
    generated: list[int] = field(default_factory=list)
    first_token_t: float = math.nan
    last_token_t: float = math.nan
    finish_t: float = math.nan
    aborted: bool = False
    finished: bool = False
    error: str | None = None

    @property
    def reserve(self) -> int:
        """KV tokens reserved at admission: prompt + max_tokens."""
        return len(self.prompt) + self.max_tokens

    @property
    def context(self) -> int:
        """Tokens this sequence holds in the KV cache now."""
        return self.n_prefilled + max(0, len(self.generated) - 1)


@dataclass(frozen=True)
class IterationRecord:
    """One engine iteration: when it started (perf_counter s), its duration (ms), the
    sequences that decoded, their KV tokens before it, and the prompt tokens it prefilled."""

    t_start: float
    duration_ms: float
    n_decode: int
    kv_tokens: int
    prefill_tokens: int
    n_running: int
    n_waiting: int


class NullHooks:
    """EngineHooks that do nothing (an engine without metrics)."""

    def on_admit(self, seq: EngineRequest) -> None: ...
    def on_first_token(self, seq: EngineRequest) -> None: ...
    def on_tokens(self, n: int) -> None: ...
    def on_finish(self, seq: EngineRequest) -> None: ...
    def on_state(self, n_running: int, n_waiting: int, kv_used_tokens: int) -> None: ...


class Engine:
    """Continuous batching over a `_Runner` (module docstring); thread-safe `submit`/`abort`.

    `start()` runs `step()` in a daemon thread until `stop()`; tests may call `step()`
    directly instead. `emit` receives each iteration's outputs as one list (one cross-thread
    hand-off per iteration)."""

    MAX_RECORDS = 100_000

    def __init__(
        self,
        model_cfg: ModelConfig,
        eng: EngineConfig,
        device: str = "cpu",
        dtype: str = "float32",
        seed: int = 0,
        hooks: EngineHooks | None = None,
        emit: Callable[[list[tuple[EngineRequest, list[int], bool]]], None] | None = None,
    ) -> None:
        self.model_cfg = model_cfg
        self.cfg = eng
        self.device = torch.device(device)
        self.dtype = _DTYPES[dtype]
        self.runner = _Runner(model_cfg, eng, self.device, self.dtype, seed)
        self.hooks: EngineHooks = hooks or NullHooks()
        self.emit = emit
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._waiting: deque[EngineRequest] = deque()
        self._running: list[EngineRequest] = []
        self._free_slots = list(range(eng.max_batch))
        heapq.heapify(self._free_slots)
        self._kv_reserved = 0
        self._ids = itertools.count(1)
        self._records: deque[IterationRecord] = deque(maxlen=self.MAX_RECORDS)
        self.n_iterations = 0
        self.n_tokens_generated = 0
        self.n_prefill_tokens = 0
        self._stop = False
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    # ---- public, thread-safe -----------------------------------------------------------

    def submit(
        self,
        prompt: Sequence[int],
        max_tokens: int,
        sink: Callable[[EngineRequest, list[int], bool], None] | None = None,
    ) -> EngineRequest:
        """Queue a request; ValueError when it can never run (lengths, token ids)."""
        problems = self.check_request(len(prompt), max_tokens)
        bad = [t for t in prompt if not 0 <= int(t) < self.model_cfg.vocab_size]
        if bad:
            problems.append(f"token ids must be in [0, {self.model_cfg.vocab_size}); got {bad[:3]}")
        if problems:
            raise ValueError("; ".join(problems))
        seq = EngineRequest(
            rid=next(self._ids),
            prompt=[int(t) for t in prompt],
            max_tokens=int(max_tokens),
            sink=sink,
            arrival_t=time.perf_counter(),
        )
        with self._wake:
            self._waiting.append(seq)
            self.hooks.on_state(len(self._running), len(self._waiting), self._kv_used())
            self._wake.notify()
        return seq

    def check_request(self, n_prompt: int, max_tokens: int) -> list[str]:
        """Why a request of these lengths can never run (empty when it can)."""
        c = self.cfg
        out = []
        if n_prompt < 1:
            out.append("prompt must hold at least one token")
        if max_tokens < 1:
            out.append(f"max_tokens must be >= 1, got {max_tokens}")
        if n_prompt + max_tokens > c.max_model_len:
            out.append(
                f"prompt ({n_prompt} tokens) + max_tokens ({max_tokens}) exceeds the model's "
                f"context length {c.max_model_len}"
            )
        elif n_prompt + max_tokens > c.max_kv_tokens:
            out.append(
                f"prompt + max_tokens ({n_prompt + max_tokens}) exceeds the KV cache "
                f"({c.max_kv_tokens} tokens)"
            )
        return out

    def abort(self, seq: EngineRequest) -> None:
        """Drop a request (client gone): it leaves at the next iteration."""
        with self._wake:
            seq.aborted = True
            self._wake.notify()

    def start(self) -> None:
        """Run the engine loop in a daemon thread."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="engine", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the loop thread (in-flight requests are left unfinished)."""
        with self._wake:
            self._stop = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def iterations(self) -> list[IterationRecord]:
        """The recorded iterations, oldest first (at most MAX_RECORDS)."""
        with self._lock:
            return list(self._records)

    def clear_iterations(self) -> None:
        with self._lock:
            self._records.clear()

    def counts(self) -> dict[str, int]:
        """Running and waiting requests, KV tokens held and reserved."""
        with self._lock:
            return {
                "running": len(self._running),
                "waiting": len(self._waiting),
                "kv_used_tokens": self._kv_used(),
                "kv_reserved_tokens": self._kv_reserved,
            }

    def warmup(self, n_prompt: int = 64, max_tokens: int = 4) -> None:
        """Run a few requests through `step()` (kernels, allocator, caches), then forget them."""
        n_prompt = max(1, min(n_prompt, self.cfg.max_model_len - max_tokens))
        for _ in range(2):
            self.submit([1] * n_prompt, max_tokens)
            self.submit([2] * max(1, n_prompt // 2), max_tokens)
        while self.step():
            pass
        self.clear_iterations()
        self.n_iterations = self.n_tokens_generated = self.n_prefill_tokens = 0

    # ---- the loop ---------------------------------------------------------------------------

    def _loop(self) -> None:
        try:
            with torch.inference_mode():
                while True:
                    with self._wake:
                        while not self._stop and not self._running and not self._waiting:
                            self._wake.wait(0.5)
                        if self._stop:
                            return
                    self.step()
        except Exception as e:  # surfaced through /health, the requests and the log
            self.error = e
            _log.exception("the engine stopped")
            self._fail_all(f"the engine stopped: {e!r}")

    def _fail_all(self, message: str) -> None:
        """Finish every queued and running request with `message` as its error."""
        with self._lock:
            seqs = [*self._waiting, *self._running]
            self._waiting.clear()
        outputs: list[tuple[EngineRequest, list[int], bool]] = []
        for s in seqs:
            s.error = message
            s.finished = True
            outputs.append((s, [], True))
        if not outputs:
            return
        if self.emit is not None:
            self.emit(outputs)
        else:
            for seq, toks, done in outputs:
                if seq.sink is not None:
                    seq.sink(seq, toks, done)

    def _kv_used(self) -> int:
        return sum(s.context for s in self._running)

    def step(self) -> bool:
        """One iteration (module docstring). Returns False when there was nothing to do."""
        t_start = time.perf_counter()
        with self._lock:
            self._reap()
            self._admit()
            running = list(self._running)
            n_waiting = len(self._waiting)
        if not running:
            return False
        decode = [s for s in running if s.n_prefilled == len(s.prompt)]
        budget = max(1, self.cfg.max_batched_tokens - len(decode))
        chunks: list[tuple[EngineRequest, int]] = []
        for s in running:
            if budget <= 0:
                break
            left = len(s.prompt) - s.n_prefilled
            if left > 0:
                n = min(left, budget)
                chunks.append((s, n))
                budget -= n
        kv_before = sum(s.context for s in decode)
        batch, samplers = self._build(decode, chunks)
        with torch.inference_mode():
            tokens = self.runner.forward(batch)
        now = time.perf_counter()
        outputs: list[tuple[EngineRequest, list[int], bool]] = []
        n_gen = 0
        for seq, tok in zip(samplers, tokens, strict=True):
            first = not seq.generated
            seq.generated.append(tok)
            seq.last_token_t = now
            n_gen += 1
            if first:
                seq.first_token_t = now
                self.hooks.on_first_token(seq)
            done = len(seq.generated) >= seq.max_tokens
            if done:
                seq.finished = True
                seq.finish_t = now
            outputs.append((seq, [tok], done))
        for s, n in chunks:
            s.n_prefilled += n
        prefill = sum(n for _, n in chunks)
        self.n_iterations += 1
        self.n_tokens_generated += n_gen
        self.n_prefill_tokens += prefill
        self.hooks.on_tokens(n_gen)
        with self._lock:
            finished = [s for s in self._running if s.finished]
            for s in finished:
                self._release(s)
                self.hooks.on_finish(s)
            self.hooks.on_state(len(self._running), len(self._waiting), self._kv_used())
        if outputs:
            if self.emit is not None:
                self.emit(outputs)
            else:
                for seq, toks, done in outputs:
                    if seq.sink is not None:
                        seq.sink(seq, toks, done)
        with self._lock:
            t_end = time.perf_counter()
            self._records.append(
                IterationRecord(
                    t_start=t_start,
                    duration_ms=(t_end - t_start) * 1e3,
                    n_decode=len(decode),
                    kv_tokens=kv_before,
                    prefill_tokens=prefill,
                    n_running=len(running),
                    n_waiting=n_waiting,
                )
            )
        return True

    def _reap(self) -> None:
        """Drop aborted sequences (lock held)."""
        if any(s.aborted for s in self._waiting):
            self._waiting = deque(s for s in self._waiting if not s.aborted)
        for s in [s for s in self._running if s.aborted]:
            self._release(s)

    def _release(self, s: EngineRequest) -> None:
        self._running.remove(s)
        self._kv_reserved -= s.reserve
        heapq.heappush(self._free_slots, s.slot)
        s.slot = -1

    def _admit(self) -> None:
        """FCFS admission with head-of-line blocking (lock held)."""
        c = self.cfg
        while self._waiting and len(self._running) < c.max_batch:
            head = self._waiting[0]
            if self._kv_reserved + head.reserve > c.max_kv_tokens:
                break
            self._waiting.popleft()
            head.slot = heapq.heappop(self._free_slots)
            self._kv_reserved += head.reserve
            self._running.append(head)
            self.hooks.on_admit(head)

    def _build(
        self, decode: list[EngineRequest], chunks: list[tuple[EngineRequest, int]]
    ) -> tuple[_Batch, list[EngineRequest]]:
        """Index tensors for the packed forward, and the sequences sampled, in row order."""
        dev = self.device
        toks: list[int] = []
        pos: list[int] = []
        slots: list[int] = []
        sample_rows: list[int] = []
        samplers: list[EngineRequest] = []
        for i, s in enumerate(decode):
            toks.append(s.generated[-1])
            pos.append(len(s.prompt) + len(s.generated) - 1)
            slots.append(s.slot)
            sample_rows.append(i)
            samplers.append(s)
        chunk_meta: list[tuple[int, int, int, int]] = []
        chunk_masks: list[torch.Tensor | None] = []
        for s, n in chunks:
            off = len(toks)
            start = s.n_prefilled
            toks.extend(s.prompt[start : start + n])
            pos.extend(range(start, start + n))
            slots.extend([s.slot] * n)
            chunk_meta.append((off, s.slot, start, n))
            if start == 0:
                chunk_masks.append(None)
            else:
                q_pos = torch.arange(start, start + n, device=dev)
                chunk_masks.append(torch.arange(start + n, device=dev)[None, :] <= q_pos[:, None])
            if start + n == len(s.prompt):  # the prompt completes: sample its first token
                sample_rows.append(off + n - 1)
                samplers.append(s)
        n_dec = len(decode)
        dec_mask = None
        dec_span = dec_len = 0
        dec_slots = torch.empty(0, dtype=torch.long, device=dev)
        if n_dec:
            lens = [p + 1 for p in pos[:n_dec]]
            dec_span = max(slots[:n_dec]) + 1
            dec_len = max(lens)
            per_slot = [1] * dec_span  # unused slots attend one (ignored) key, never none
            for sl, ln in zip(slots[:n_dec], lens, strict=True):
                per_slot[sl] = ln
            lt = torch.tensor(per_slot, device=dev)
            dec_mask = (torch.arange(dec_len, device=dev)[None, :] < lt[:, None])[:, None, None, :]
            dec_slots = torch.tensor(slots[:n_dec], dtype=torch.long, device=dev)
        batch = _Batch(
            tokens=torch.tensor(toks, dtype=torch.long, device=dev),
            positions=torch.tensor(pos, dtype=torch.long, device=dev),
            slots=torch.tensor(slots, dtype=torch.long, device=dev),
            n_dec=n_dec,
            dec_slots=dec_slots,
            dec_span=dec_span,
            dec_len=dec_len,
            dec_mask=dec_mask,
            chunks=chunk_meta,
            chunk_masks=chunk_masks,
            sample_rows=torch.tensor(sample_rows, dtype=torch.long, device=dev),
        )
        return batch, samplers


_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


def count_parameters(model_cfg: ModelConfig) -> int:
    """Parameters of the model built from model_cfg (computed, no allocation)."""
    return model_cfg.n_params


def device_name(device: str) -> str:
    """torch.cuda.get_device_name for a CUDA device, else "cpu"."""
    d = torch.device(device)
    if d.type == "cuda":
        return str(torch.cuda.get_device_name(d))
    return "cpu"


__all__ = [
    "MODEL_SIZES",
    "Engine",
    "IterationRecord",
    "NullHooks",
    "EngineRequest",
    "Transformer",
    "count_parameters",
    "device_name",
]
