"""GPU service model: the per-iteration time of one inference replica under continuous batching.

One replica (one engine such as vLLM on ``gpus_per_replica`` GPUs) runs *iterations*. Each
iteration produces one token for every decoding sequence and processes a chunk of prompt
(prefill) tokens of newly admitted requests. Its duration, in milliseconds, is affine:

    t_iter_ms = t0_ms + a_ms_per_seq * B_decode
                      + b_ms_per_1k_kv * (KV_tokens / 1000)
                      + g_ms_per_prefill_token * P_prefill_tokens

- ``B_decode``: sequences decoding in the iteration;
- ``KV_tokens``: their current context length (prompt + tokens generated so far), summed;
- ``P_prefill_tokens``: prompt tokens processed in the iteration, at most the engine's token
  budget ``max_batched_tokens`` (chunked prefill).

The default constants are the Llama-3-8B-class BF16 model on 1xH100 fitted in
shared/reference/performance.md section 3.4 (t0 7.0 ms, a 0.020 ms/seq, b 0.065 ms per 1k KV
tokens, g 0.028 ms per prefill token; 256 sequences, 400 k KV tokens). Engine versions move
these numbers by 2x or more, so a profile is data: it loads from JSON (``PROFILES_DIR`` holds
the committed ones) and a GPU replay can regenerate it on the engine actually deployed.

Steady state (``steady_state``, ``capacity_rps``) is a mean-field model of a replica holding
``c`` requests in flight with mean prompt ``I`` and mean output ``O`` tokens:

- each sequence lives about ``O`` iterations, so ``c / O`` requests join per iteration and
  their prefill adds ``g * I * c / O`` to every iteration on average;
- the mean context of a running sequence is ``I + O / 2``;
- ITL(c) = t0 + c * (a + b * (I + O/2) / 1000 + g * I / O)               [ms, linear in c]
- TTFT_min(c) = ITL(c) / 2 + ITL(c) + g * I: the mean residual of the iteration in progress
  at arrival, then the iteration that carries the request's own prefill (no queueing);
- throughput X(c) = c / (TTFT_min(c) + (O - 1) * ITL(c))                  [req/s]

This reproduces the section 3.4 ITL and req/s tables (e.g. azure-conv 1155/211 at c = 64:
ITL 23.3 ms, 12.9 req/s). Its TTFT_min is a few ms above that table's column (67 vs 63 ms
at c = 64; the table adds t0 where this adds half an iteration), and a per-request
simulation with Poisson arrivals sees more still (mean 82 ms at 12.9 req/s): requests that
arrive during one iteration share the next one's prefill.

``capacity_rps`` is X at the largest concurrency the engine admits
(``max_num_seqs``, and ``max_kv_tokens`` reserved at ``I + O`` per request) that also meets
the optional ITL and TTFT targets; X grows with c, so that concurrency gives the most
throughput inside the targets. The TTFT target is checked against TTFT_min, i.e. without
queueing in front of the replica: size with a utilization margin when the SLO is a high
percentile of TTFT including queueing.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

PROFILES_DIR = Path(__file__).parent / "profiles"

_FLOAT_FIELDS = ("t0_ms", "a_ms_per_seq", "b_ms_per_1k_kv", "g_ms_per_prefill_token")
_INT_FIELDS = ("max_num_seqs", "max_kv_tokens", "max_batched_tokens")
_STR_FIELDS = ("name", "device", "model", "dtype", "date", "source")
_REQUIRED = ("name", "device", "model", "dtype", "date", *_FLOAT_FIELDS)


@dataclass(frozen=True)
class SteadyState:
    """Mean-field steady state of one replica at a given concurrency (see module docstring).

    concurrency: requests in flight on the replica; itl_ms: mean inter-token latency;
    ttft_ms: time to first token without queueing; rps: completed requests/s;
    out_tps: generated tokens/s; kv_tokens: mean context tokens held (reserved is
    concurrency * (I + O)).
    """

    concurrency: float
    itl_ms: float
    ttft_ms: float
    rps: float
    out_tps: float
    kv_tokens: float


@dataclass(frozen=True)
class ServiceProfile:
    """Per-iteration time of one replica under continuous batching.

    t_iter_ms = t0_ms + a_ms_per_seq*B_decode + b_ms_per_1k_kv*(KV_tokens/1000)
                + g_ms_per_prefill_token*P_prefill_tokens

    max_num_seqs: sequences a replica runs at once (vLLM ``--max-num-seqs``);
    max_kv_tokens: KV-cache capacity in tokens; max_batched_tokens: token budget of one
    iteration (vLLM ``--max-num-batched-tokens``; decode tokens count against it, the rest
    goes to prefill chunks). ``raw_points`` and ``fit`` keep the measurements a profile was
    fitted from and the fit's quality, when it came from a GPU run.
    """

    name: str
    device: str
    model: str
    dtype: str
    date: str
    t0_ms: float
    a_ms_per_seq: float
    b_ms_per_1k_kv: float
    g_ms_per_prefill_token: float
    max_num_seqs: int = 256
    max_kv_tokens: int = 400_000
    max_batched_tokens: int = 8192
    source: str = ""
    raw_points: tuple[dict[str, Any], ...] = ()
    fit: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = _problems(self.to_dict())
        if problems:
            raise ValueError("invalid service profile: " + "; ".join(problems))

    # ---- construction and persistence -------------------------------------------------

    @classmethod
    def default(cls) -> ServiceProfile:
        """Llama-3-8B class, BF16, vLLM, 1xH100 80 GB (performance.md section 3.4)."""
        return cls(
            name="llama3-8b-bf16-h100",
            device="1xH100-80GB",
            model="Llama-3-8B",
            dtype="bf16",
            date="2026-11",
            t0_ms=7.0,
            a_ms_per_seq=0.020,
            b_ms_per_1k_kv=0.065,
            g_ms_per_prefill_token=0.028,
            max_num_seqs=256,
            max_kv_tokens=400_000,
            max_batched_tokens=8192,
            source="shared/reference/performance.md section 3.4 (derived from NIM, vLLM and "
            "TensorRT-LLM anchors; not a measurement of one engine)",
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every field (raw_points as a list)."""
        d: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        d["raw_points"] = [dict(p) for p in self.raw_points]
        d["fit"] = dict(self.fit)
        return d

    @classmethod
    def from_dict(cls, d: Any) -> ServiceProfile:
        """Build from a dict; ValueError naming every missing, unknown or bad field."""
        if not isinstance(d, dict):
            raise ValueError(f"service profile must be a JSON object, got {type(d).__name__}")
        problems = _problems(d)
        if problems:
            raise ValueError("invalid service profile: " + "; ".join(problems))
        kw: dict[str, Any] = dict(d)
        for k in _FLOAT_FIELDS:
            kw[k] = float(kw[k])
        for k in _INT_FIELDS:
            if k in kw:
                kw[k] = int(kw[k])
        kw["raw_points"] = tuple(dict(p) for p in kw.get("raw_points", ()))
        kw["fit"] = dict(kw.get("fit", {}))
        return cls(**kw)

    @classmethod
    def load(cls, path: str | Path) -> ServiceProfile:
        """Read a profile from JSON. Errors name the file and each bad or missing field."""
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as e:
            raise ValueError(f"{p}: cannot read service profile: {e}") from e
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{p}: not valid JSON: {e}") from e
        try:
            return cls.from_dict(data)
        except ValueError as e:
            raise ValueError(f"{p}: {e}") from e

    def save(self, path: str | Path) -> None:
        """Write the profile as indented JSON (round-trips through ``load``)."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    # ---- the model -----------------------------------------------------------------------

    def iteration_ms(self, n_decode: int, kv_tokens: float, prefill_tokens: int) -> float:
        """Duration of one iteration in ms (the affine model above; no caps applied)."""
        return (
            self.t0_ms
            + self.a_ms_per_seq * n_decode
            + self.b_ms_per_1k_kv * (kv_tokens / 1000.0)
            + self.g_ms_per_prefill_token * prefill_tokens
        )

    def _slopes(self, mean_input_tokens: float, mean_output_tokens: float) -> float:
        i, o = float(mean_input_tokens), float(mean_output_tokens)
        return (
            self.a_ms_per_seq
            + self.b_ms_per_1k_kv * (i + o / 2.0) / 1000.0
            + self.g_ms_per_prefill_token * i / o
        )

    def steady_state(
        self, concurrency: float, mean_input_tokens: float, mean_output_tokens: float
    ) -> SteadyState:
        """Mean-field steady state at ``concurrency`` requests in flight (module docstring).

        concurrency may be fractional (a time average); it is not capped here."""
        _check_tokens(mean_input_tokens, mean_output_tokens)
        c = float(concurrency)
        if not c >= 0.0:
            raise ValueError(f"concurrency must be >= 0, got {concurrency}")
        i, o = float(mean_input_tokens), float(mean_output_tokens)
        itl = self.t0_ms + c * self._slopes(i, o)
        ttft = 1.5 * itl + self.g_ms_per_prefill_token * i
        rps = c / ((ttft + (o - 1.0) * itl) / 1000.0)
        return SteadyState(c, itl, ttft, rps, rps * o, c * (i + o / 2.0))

    def max_concurrency(self, mean_input_tokens: float, mean_output_tokens: float) -> float:
        """Requests a replica admits at once: max_num_seqs, or fewer when the KV cache
        (``max_kv_tokens``, reserved at input + output tokens per request) binds."""
        _check_tokens(mean_input_tokens, mean_output_tokens)
        kv_cap = self.max_kv_tokens / (float(mean_input_tokens) + float(mean_output_tokens))
        return min(float(self.max_num_seqs), kv_cap)

    def concurrency_for_rps(
        self, rps: float, mean_input_tokens: float, mean_output_tokens: float
    ) -> float:
        """Inverse of ``steady_state(c).rps``: the concurrency at which one replica completes
        ``rps`` requests/s; ``inf`` when rps is at or beyond the replica's asymptotic rate.

        X(c) = c / (alpha + beta c) with alpha = t0 (1.5 + O - 1) + g I and
        beta = slope (1.5 + O - 1), in seconds, so c = X alpha / (1 - X beta).
        """
        _check_tokens(mean_input_tokens, mean_output_tokens)
        i, o = float(mean_input_tokens), float(mean_output_tokens)
        k = 0.5 + o
        alpha = (self.t0_ms * k + self.g_ms_per_prefill_token * i) / 1000.0
        beta = self._slopes(i, o) * k / 1000.0
        x = max(0.0, float(rps))
        den = 1.0 - x * beta
        return math.inf if den <= 0.0 else x * alpha / den

    def capacity_rps(
        self,
        mean_input_tokens: float,
        mean_output_tokens: float,
        itl_slo_ms: float | None = None,
        ttft_slo_s: float | None = None,
    ) -> float:
        """Steady-state requests/s one replica sustains, optionally inside latency targets.

        Method (module docstring): the largest concurrency c allowed by max_num_seqs, the KV
        capacity, ITL(c) <= itl_slo_ms and TTFT_min(c) <= ttft_slo_s (both linear in c), then
        X(c). Returns 0.0 when even one request at a time misses a target. The TTFT target
        excludes queueing in front of the replica."""
        _check_tokens(mean_input_tokens, mean_output_tokens)
        i, o = float(mean_input_tokens), float(mean_output_tokens)
        slope = self._slopes(i, o)
        c = self.max_concurrency(i, o)
        if itl_slo_ms is not None:
            # ITL(c) = t0 + c slope <= slo
            c = min(c, (float(itl_slo_ms) - self.t0_ms) / slope)
        if ttft_slo_s is not None:
            # 1.5 (t0 + c slope) + g I <= slo
            lim_ms = float(ttft_slo_s) * 1000.0 - self.g_ms_per_prefill_token * i
            c = min(c, (lim_ms / 1.5 - self.t0_ms) / slope)
        if c < 1.0:
            # Even one request at a time misses a target (or does not fit the KV cache).
            return 0.0
        return self.steady_state(c, i, o).rps


def _check_tokens(mean_input_tokens: float, mean_output_tokens: float) -> None:
    bad = []
    if not float(mean_input_tokens) >= 0.0:
        bad.append(f"mean_input_tokens must be >= 0, got {mean_input_tokens}")
    if not float(mean_output_tokens) >= 1.0:
        bad.append(f"mean_output_tokens must be >= 1, got {mean_output_tokens}")
    if bad:
        raise ValueError("; ".join(bad))


def _problems(d: dict[str, Any]) -> list[str]:
    """Every problem with a profile dict, one message per field (empty when valid)."""
    known = {f.name for f in fields(ServiceProfile)}
    out = [f"unknown field {k!r}" for k in d if k not in known]
    out += [f"missing field {k!r}" for k in _REQUIRED if k not in d]
    for k in _STR_FIELDS:
        if k in d and not isinstance(d[k], str):
            out.append(f"field {k!r} must be a string, got {d[k]!r}")
    for k in _FLOAT_FIELDS:
        if k not in d:
            continue
        v = d[k]
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            out.append(f"field {k!r} must be a finite number, got {v!r}")
        elif k == "t0_ms" and v <= 0:
            out.append(f"field 't0_ms' must be > 0, got {v!r}")
        elif v < 0:
            out.append(f"field {k!r} must be >= 0, got {v!r}")
    for k in _INT_FIELDS:
        if k not in d:
            continue
        v = d[k]
        if (
            isinstance(v, bool)
            or not isinstance(v, int | float)
            or not math.isfinite(v)
            or v != int(v)
            or v < 1
        ):
            out.append(f"field {k!r} must be an integer >= 1, got {v!r}")
    if "raw_points" in d and not (
        isinstance(d["raw_points"], list | tuple)
        and all(isinstance(p, dict) for p in d["raw_points"])
    ):
        out.append("field 'raw_points' must be a list of objects")
    if "fit" in d and not isinstance(d["fit"], dict):
        out.append(f"field 'fit' must be an object, got {d['fit']!r}")
    return out
