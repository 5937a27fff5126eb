"""Traffic traces for the offline simulator: real request logs and seeded synthetic load.

A `Trace` is a list of requests: arrival time (s, relative to the trace start), prompt tokens
and generated tokens. A `RateCurve` is the fluid view of a long trace: the mean arrival rate
per fixed bin, for horizons (weeks) where per-request arrays would be too large.

Loaders (`load_trace`, `load_rate_curve`) read:

- ``azure``: Azure LLM inference trace 2023, CSV ``TIMESTAMP,ContextTokens,GeneratedTokens``,
  wall-clock ``TIMESTAMP`` with 7 fractional digits and no zone (read as UTC). It records no
  trace start, so t=0 is the first arrival.
- ``mooncake``: JSONL, one object per line with ``timestamp`` (ms since the first request),
  ``input_length``, ``output_length``; other keys (``hash_ids``) are ignored.
- ``burstgpt``: CSV ``Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type``,
  ``Timestamp`` in seconds from 0:00 of the first day (kept as is: t=0 is that midnight).
  Failed requests carry ``Response tokens`` 0; they are kept (they arrived and were
  prefilled) with 1 output token, like every other zero token count (see below).
- ``servegen``: ServeGen per-client 10-minute windows
  ``client_id,timestamp,rate,cv,pat_name,pat_arg1,pat_arg2``. It holds rates and fitted
  inter-arrival families, not requests: `load_trace` synthesizes arrivals from it
  (`synthesize_servegen`), `load_rate_curve` sums the clients' rates per window.
- ``csv`` / ``jsonl`` / ``parquet``: any table, with ``column_map`` naming its columns.

``column_map`` keys: ``arrival``, ``input_tokens``, ``output_tokens`` (column names in the
file), ``arrival_unit`` (``s``, ``ms``, ``us``, ``ns``, ``datetime`` or ``auto``: numbers
if at least half the non-empty values are numbers, else datetime strings),
``arrival_format`` (a strftime format or ``ISO8601`` for datetime strings) and
``arrival_origin`` (``zero``: numeric times are already offsets from the trace start;
``first``: t=0 is the first arrival; the default is ``zero``, except that numeric times
above 1e8 s, over three years, can only be epoch stamps and are re-based to the first
arrival, with a note). Datetime strings always start at the first arrival. Without a
column_map the generic formats look for ``arrival_s``, ``input_tokens``, ``output_tokens``
(what `write_trace` writes); for the named formats, column_map entries override their
built-in names. CSV rows are one record per line (the C parser; rows with extra fields
are skipped with the parser's reason).

Bad input, decided once for all formats:

- Broken rows (missing field, extra CSV field, unparseable time, non-numeric /
  non-finite / negative / fractional token count, negative arrival, invalid JSON) are
  skipped and listed in
  `Trace.skipped` as (1-based line number in the file, reason); for Parquet the number is
  the 1-based row. Rows whose every field is empty (blank lines) are not data and are
  ignored without a report.
- Zero token counts become 1 (a request has at least one prompt token and produces at
  least one token, even a failed one), counted in `Trace.notes`.
- Arrivals out of order are sorted (stable, so ties keep file order), noted in
  `Trace.notes`; the loaders never reject a file for order alone.
- A file with no usable row raises `TraceError` naming the file.

Synthetic token lengths (ServeGen windows and generators) come from `TokenLengths`:
independent lognormals matched to the mean and median of the Azure conversation trace
(prompt 1,155 / 1,020, output 211 / 129 tokens), rounded, at least 1.
"""

from __future__ import annotations

import gzip
import json
import math
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]

FORMATS: tuple[str, ...] = ("azure", "mooncake", "burstgpt", "servegen", "csv", "jsonl", "parquet")

# A full two-week ServeGen synthesis is ~2e9 requests (1,790 req/s x 1.2 M s); 20 M requests
# (three float64/int64 arrays, ~480 MB) is the most one Trace should hold in memory.
MAX_REQUESTS = 20_000_000

# Numeric arrival stamps above this (s, ~3.2 years) can only be epoch-based, not offsets.
_EPOCH_THRESHOLD_S = 1e8

_MAP_COLUMNS = ("arrival", "input_tokens", "output_tokens")
_MAP_OPTIONS = ("arrival_unit", "arrival_format", "arrival_origin")
_ARRIVAL_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}

_DEFAULT_MAPS: dict[str, dict[str, str]] = {
    "azure": {
        "arrival": "TIMESTAMP",
        "input_tokens": "ContextTokens",
        "output_tokens": "GeneratedTokens",
        "arrival_unit": "datetime",
        # pandas' vectorized ISO 8601 parser: keeps all 7 fractional digits (ns resolution),
        # also takes a stamp without a fraction, and beats an explicit strptime format.
        "arrival_format": "ISO8601",
    },
    "mooncake": {
        "arrival": "timestamp",
        "input_tokens": "input_length",
        "output_tokens": "output_length",
        "arrival_unit": "ms",
        "arrival_origin": "zero",
    },
    "burstgpt": {
        "arrival": "Timestamp",
        "input_tokens": "Request tokens",
        "output_tokens": "Response tokens",
        "arrival_unit": "s",
        "arrival_origin": "zero",
    },
    "csv": {
        "arrival": "arrival_s",
        "input_tokens": "input_tokens",
        "output_tokens": "output_tokens",
    },
    "jsonl": {
        "arrival": "arrival_s",
        "input_tokens": "input_tokens",
        "output_tokens": "output_tokens",
    },
    "parquet": {
        "arrival": "arrival_s",
        "input_tokens": "input_tokens",
        "output_tokens": "output_tokens",
    },
}

_SERVEGEN_COLUMNS = ("client_id", "timestamp", "rate", "pat_name", "pat_arg1", "pat_arg2")
_SERVEGEN_FAMILIES = ("gamma", "weibull")


class TraceError(ValueError):
    """A trace file that cannot be used: no usable rows, unknown format, bad column map.

    The message names the file and the problem.
    """


# --------------------------------------------------------------------------- token lengths


@dataclass(frozen=True)
class TokenLengths:
    """Independent lognormal prompt and output lengths, matched to a mean and a median.

    For a lognormal, median = exp(mu) and mean / median = exp(sigma^2 / 2), so a mean and
    a median (tokens, mean >= median > 0) fix the distribution. Samples are rounded to
    integers, at least 1, and capped at `max_*_tokens` when set (capping lowers the mean).
    """

    mean_input_tokens: float = 1155.0
    median_input_tokens: float = 1020.0
    mean_output_tokens: float = 211.0
    median_output_tokens: float = 129.0
    max_input_tokens: int | None = None
    max_output_tokens: int | None = None

    def __post_init__(self) -> None:
        for kind in ("input", "output"):
            mean = getattr(self, f"mean_{kind}_tokens")
            median = getattr(self, f"median_{kind}_tokens")
            if not (math.isfinite(mean) and math.isfinite(median) and 0 < median <= mean):
                raise ValueError(
                    f"TokenLengths needs 0 < median_{kind}_tokens <= mean_{kind}_tokens "
                    f"(a lognormal's mean is at least its median); got "
                    f"median={median}, mean={mean}"
                )
            cap = getattr(self, f"max_{kind}_tokens")
            if cap is not None and cap < 1:
                raise ValueError(f"max_{kind}_tokens must be >= 1 or None, got {cap}")

    def with_means(self, mean_input_tokens: float, mean_output_tokens: float) -> TokenLengths:
        """The same shape (mean / median ratio) moved to other means (tokens, >= 1 each)."""
        mi = max(float(mean_input_tokens), 1.0)
        mo = max(float(mean_output_tokens), 1.0)
        return replace(
            self,
            mean_input_tokens=mi,
            median_input_tokens=mi * self.median_input_tokens / self.mean_input_tokens,
            mean_output_tokens=mo,
            median_output_tokens=mo * self.median_output_tokens / self.mean_output_tokens,
        )

    def sample(self, n: int, rng: np.random.Generator) -> tuple[I64, I64]:
        """Draw `n` (prompt tokens, output tokens) pairs: two int64 arrays of shape [n]."""
        return (
            self._draw(
                n, rng, self.mean_input_tokens, self.median_input_tokens, self.max_input_tokens
            ),
            self._draw(
                n, rng, self.mean_output_tokens, self.median_output_tokens, self.max_output_tokens
            ),
        )

    @staticmethod
    def _draw(n: int, rng: np.random.Generator, mean: float, median: float, cap: int | None) -> I64:
        sigma = math.sqrt(2.0 * math.log(mean / median))
        x = np.rint(rng.lognormal(math.log(median), sigma, size=n))
        x = np.clip(x, 1, cap if cap is not None else np.inf)
        return x.astype(np.int64)


AZURE_CONV_TOKENS = TokenLengths()
"""Azure LLM inference 2023 conversation trace: prompt mean 1,155 / median 1,020 tokens,
output mean 211 / median 129 tokens (shared traces README)."""


# --------------------------------------------------------------------------- value types


def _frozen_array(x: Any, dtype: type) -> Any:
    a: NDArray[Any] = np.array(x, dtype=dtype, copy=True)
    a.setflags(write=False)
    return a


def _check_positive(name: str, value: float) -> float:
    v = float(value)
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return v


def _check_nonnegative(name: str, value: float) -> float:
    v = float(value)
    if not (math.isfinite(v) and v >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return v


@dataclass(frozen=True, eq=False)
class Trace:
    """Requests in arrival order: when each arrives and how many tokens it carries.

    Shapes: `arrival_s`, `input_tokens`, `output_tokens` are [m]; arrays are read-only.
    `arrival_s` is sorted ascending, >= 0, seconds from the trace start (t=0). A windowed
    trace starts at its window start, so its first arrival sits at its offset from it.

    `horizon_s`: end of the observed span (s) when known (synthetic traces, windows, rate
    scaling); None means "ends at the last arrival". `skipped` lists broken file rows as
    (1-based line number, reason); `notes` says what the loader repaired (zero token
    counts, sort order). Equality is identity: compare arrays explicitly.
    """

    name: str
    arrival_s: F64
    input_tokens: I64
    output_tokens: I64
    source: str
    skipped: tuple[tuple[int, str], ...] = ()
    horizon_s: float | None = None
    notes: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        arrival = _frozen_array(self.arrival_s, np.float64)
        tin = _frozen_array(self.input_tokens, np.int64)
        tout = _frozen_array(self.output_tokens, np.int64)
        if not (arrival.ndim == tin.ndim == tout.ndim == 1):
            raise ValueError(
                f"trace {self.name!r}: arrival_s, input_tokens, output_tokens must be 1-D, "
                f"got shapes {arrival.shape}, {tin.shape}, {tout.shape}"
            )
        if not (arrival.size == tin.size == tout.size):
            raise ValueError(
                f"trace {self.name!r}: arrays differ in length: arrival_s {arrival.size}, "
                f"input_tokens {tin.size}, output_tokens {tout.size}"
            )
        if arrival.size:
            if not np.all(np.isfinite(arrival)) or arrival[0] < 0:
                raise ValueError(f"trace {self.name!r}: arrival_s must be finite and >= 0")
            if np.any(np.diff(arrival) < 0):
                raise ValueError(f"trace {self.name!r}: arrival_s must be sorted ascending")
            if tin.min() < 1 or tout.min() < 1:
                raise ValueError(f"trace {self.name!r}: token counts must be >= 1")
        if self.horizon_s is not None:
            h = _check_nonnegative("horizon_s", self.horizon_s)
            if arrival.size and arrival[-1] > h:
                raise ValueError(
                    f"trace {self.name!r}: last arrival {arrival[-1]:.6g} s lies beyond "
                    f"horizon_s {h:.6g} s"
                )
            object.__setattr__(self, "horizon_s", h)
        object.__setattr__(self, "arrival_s", arrival)
        object.__setattr__(self, "input_tokens", tin)
        object.__setattr__(self, "output_tokens", tout)
        object.__setattr__(self, "skipped", tuple(self.skipped))
        object.__setattr__(self, "notes", tuple(self.notes))

    @property
    def duration_s(self) -> float:
        """Span of the trace (s): `horizon_s` if set, else the last arrival (0 if empty)."""
        if self.horizon_s is not None:
            return self.horizon_s
        return float(self.arrival_s[-1]) if self.arrival_s.size else 0.0

    @property
    def mean_rate_rps(self) -> float:
        """Requests per second over `duration_s` (0 for an empty or zero-length trace)."""
        d = self.duration_s
        return len(self) / d if d > 0 else 0.0

    def __len__(self) -> int:
        return int(self.arrival_s.size)

    def __repr__(self) -> str:
        return (
            f"Trace(name={self.name!r}, n={len(self)}, duration_s={self.duration_s:.6g}, "
            f"skipped={len(self.skipped)}, source={self.source!r})"
        )

    def _derive(
        self, arrival: F64, tin: I64, tout: I64, horizon_s: float | None, step: str
    ) -> Trace:
        return Trace(
            name=self.name,
            arrival_s=arrival,
            input_tokens=tin,
            output_tokens=tout,
            source=f"{self.source} | {step}",
            skipped=self.skipped,
            horizon_s=horizon_s,
            notes=self.notes,
        )

    def window(self, start_s: float | None, duration_s: float | None) -> Trace:
        """Keep arrivals in [start_s, start_s + duration_s), re-based so the window starts at 0.

        None start means 0; None duration means "to the end of the trace". The result's
        horizon is the window length, so an idle tail still counts in its rates. A window
        past the end gives an empty trace.
        """
        start = 0.0 if start_s is None else _check_nonnegative("start_s", start_s)
        if duration_s is None:
            length = max(self.duration_s - start, 0.0)
            i1 = len(self)
        else:
            length = _check_positive("duration_s", duration_s)
            i1 = int(np.searchsorted(self.arrival_s, start + length, side="left"))
        i0 = int(np.searchsorted(self.arrival_s, start, side="left"))
        arrival = self.arrival_s[i0:i1] - start
        if duration_s is not None:
            # x - start can round up to `length` for x just below the end; keep it half-open.
            arrival = np.minimum(arrival, np.nextafter(length, 0.0))
        return self._derive(
            arrival,
            self.input_tokens[i0:i1],
            self.output_tokens[i0:i1],
            length,
            f"window(start_s={start:g}, duration_s={length:g})",
        )

    def scale_time(self, speedup: float) -> Trace:
        """Replay `speedup` times faster: every time (arrivals, horizon) is divided by it.

        speedup 2 halves the duration and doubles every rate; speedup 0.5 stretches it.
        Token counts are unchanged.
        """
        s = _check_positive("speedup", speedup)
        horizon = None if self.horizon_s is None else self.horizon_s / s
        return self._derive(
            self.arrival_s / s,
            self.input_tokens,
            self.output_tokens,
            horizon,
            f"scale_time(speedup={s:g})",
        )

    def scale_rate(self, factor: float, seed: int = 0, jitter_s: float | None = None) -> Trace:
        """Multiply the load by `factor` over the same span, keeping the shape of the curve.

        factor = n + f (n whole copies, fraction f): the original requests, n - 1 more
        copies, and a copy thinned to a fraction f (each request kept with probability f).
        Added copies move every arrival by an independent uniform jitter in
        [-jitter_s, +jitter_s] (default: the mean inter-arrival time, so bursts stay bursts
        at coarser scales), wrapped around the trace span so counts are exact. factor < 1
        thins the original. Seeded: same seed, same trace. Tokens travel with their request.
        The result's horizon is this trace's duration.
        """
        k = _check_nonnegative("factor", factor)
        rng = np.random.default_rng(seed)
        span = self.duration_s
        m = len(self)
        if jitter_s is None:
            jitter = span / m if m and span > 0 else 0.0
        else:
            jitter = _check_nonnegative("jitter_s", jitter_s)
        n_full = int(math.floor(k))
        frac = k - n_full
        parts: list[NDArray[np.int64]] = []
        times: list[F64] = []
        for copy in range(n_full + (1 if frac > 0 else 0)):
            idx = np.arange(m, dtype=np.int64)
            if copy == n_full:  # the fractional copy
                idx = idx[rng.random(m) < frac]
            t = self.arrival_s[idx]
            if copy > 0 and jitter > 0 and span > 0:
                t = np.mod(t + rng.uniform(-jitter, jitter, size=idx.size), span)
            parts.append(idx)
            times.append(t)
        if parts:
            idx_all = np.concatenate(parts)
            t_all = np.concatenate(times)
        else:
            idx_all = np.zeros(0, dtype=np.int64)
            t_all = np.zeros(0, dtype=np.float64)
        order = np.argsort(t_all, kind="stable")
        idx_all = idx_all[order]
        return self._derive(
            t_all[order],
            self.input_tokens[idx_all],
            self.output_tokens[idx_all],
            span,
            f"scale_rate(factor={k:g}, seed={seed})",
        )

    def rate_per_bin(self, bin_s: float) -> tuple[F64, F64]:
        """Arrival rate in fixed bins from t=0: (bin starts [k] s, requests/s [k]).

        k = ceil(duration_s / bin_s) bins, and at least enough to hold the last arrival.
        Every bin divides its count by `bin_s`, the last one too even when the trace ends
        inside it (a partial last bin reads low). Empty bins are included.
        """
        b = _check_positive("bin_s", bin_s)
        idx = np.floor(self.arrival_s / b).astype(np.int64)
        k = int(math.ceil(self.duration_s / b))
        if idx.size:
            k = max(k, int(idx[-1]) + 1)
        counts = np.bincount(idx, minlength=k).astype(np.float64)
        return np.arange(k, dtype=np.float64) * b, counts / b

    def to_frame(self) -> pd.DataFrame:
        """The requests as a DataFrame with columns arrival_s, input_tokens, output_tokens."""
        return pd.DataFrame(
            {
                "arrival_s": self.arrival_s,
                "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens,
            }
        )


@dataclass(frozen=True, eq=False)
class RateCurve:
    """Fluid description of a trace: mean arrival rate per fixed bin.

    Shapes: `t_s` (bin starts, s, ascending, spaced `bin_s` apart) and `rate_rps`
    (requests/s, >= 0) are [k]; read-only. Token means (tokens per request) let callers
    turn rates into tokens/s. For multi-day traces where per-request arrays would not fit.
    """

    name: str
    t_s: F64
    bin_s: float
    rate_rps: F64
    mean_input_tokens: float
    mean_output_tokens: float
    source: str

    def __post_init__(self) -> None:
        t = _frozen_array(self.t_s, np.float64)
        r = _frozen_array(self.rate_rps, np.float64)
        b = _check_positive("bin_s", self.bin_s)
        if t.ndim != 1 or r.ndim != 1 or t.size != r.size:
            raise ValueError(
                f"rate curve {self.name!r}: t_s and rate_rps must be 1-D of equal length, "
                f"got shapes {t.shape} and {r.shape}"
            )
        if t.size and (not np.all(np.isfinite(t)) or np.any(np.diff(t) <= 0) or t[0] < 0):
            raise ValueError(
                f"rate curve {self.name!r}: t_s must be finite, >= 0, strictly ascending"
            )
        if r.size and (not np.all(np.isfinite(r)) or r.min() < 0):
            raise ValueError(f"rate curve {self.name!r}: rate_rps must be finite and >= 0")
        object.__setattr__(self, "t_s", t)
        object.__setattr__(self, "rate_rps", r)
        object.__setattr__(self, "bin_s", b)
        object.__setattr__(self, "mean_input_tokens", float(self.mean_input_tokens))
        object.__setattr__(self, "mean_output_tokens", float(self.mean_output_tokens))

    @classmethod
    def from_trace(cls, trace: Trace, bin_s: float) -> RateCurve:
        """Bin a trace (see `Trace.rate_per_bin`); token means are the trace's (0 if empty)."""
        t, r = trace.rate_per_bin(bin_s)
        m = len(trace)
        return cls(
            name=trace.name,
            t_s=t,
            bin_s=bin_s,
            rate_rps=r,
            mean_input_tokens=float(trace.input_tokens.mean()) if m else 0.0,
            mean_output_tokens=float(trace.output_tokens.mean()) if m else 0.0,
            source=f"{trace.source} | binned(bin_s={bin_s:g})",
        )

    def __len__(self) -> int:
        return int(self.t_s.size)

    def __repr__(self) -> str:
        return (
            f"RateCurve(name={self.name!r}, bins={len(self)}, bin_s={self.bin_s:g}, "
            f"mean_rate_rps={self.mean_rate_rps:.6g}, source={self.source!r})"
        )

    @property
    def duration_s(self) -> float:
        """End of the last bin (s); 0 for an empty curve."""
        return float(self.t_s[-1] + self.bin_s) if self.t_s.size else 0.0

    @property
    def mean_rate_rps(self) -> float:
        """Mean of the per-bin rates (requests/s; bins are equal, so the time average)."""
        return float(self.rate_rps.mean()) if self.rate_rps.size else 0.0

    @property
    def peak_rate_rps(self) -> float:
        """Largest per-bin rate (requests/s)."""
        return float(self.rate_rps.max()) if self.rate_rps.size else 0.0

    def _derive(self, t: F64, bin_s: float, rate: F64, step: str) -> RateCurve:
        return replace(self, t_s=t, bin_s=bin_s, rate_rps=rate, source=f"{self.source} | {step}")

    def window(self, start_s: float | None, duration_s: float | None) -> RateCurve:
        """Keep the bins that start in [start_s, start_s + duration_s), re-based to start_s.

        Bins are kept whole: a start inside a bin drops that bin, so align the start to
        `bin_s` to keep it. None start means 0, None duration means to the end.
        """
        start = 0.0 if start_s is None else _check_nonnegative("start_s", start_s)
        end = math.inf if duration_s is None else start + _check_positive("duration_s", duration_s)
        keep = (self.t_s >= start) & (self.t_s < end)
        length = "end" if duration_s is None else f"{duration_s:g}"
        return self._derive(
            self.t_s[keep] - start,
            self.bin_s,
            self.rate_rps[keep],
            f"window(start_s={start:g}, duration_s={length})",
        )

    def scale_rate(self, factor: float) -> RateCurve:
        """Multiply every rate by `factor` (>= 0)."""
        k = _check_nonnegative("factor", factor)
        return self._derive(self.t_s, self.bin_s, self.rate_rps * k, f"scale_rate(factor={k:g})")

    def scale_time(self, speedup: float) -> RateCurve:
        """Replay `speedup` times faster: times and bin width / speedup, rates x speedup."""
        s = _check_positive("speedup", speedup)
        return self._derive(
            self.t_s / s, self.bin_s / s, self.rate_rps * s, f"scale_time(speedup={s:g})"
        )

    def coarsen(self, n_bins: int) -> RateCurve:
        """Merge every `n_bins` consecutive bins into one (mean rate); a partial tail is dropped."""
        if int(n_bins) != n_bins or n_bins < 1:
            raise ValueError(f"n_bins must be a whole number >= 1, got {n_bins!r}")
        n = int(n_bins)
        k = len(self) // n
        rate = self.rate_rps[: k * n].reshape(k, n).mean(axis=1)
        return self._derive(self.t_s[: k * n : n], self.bin_s * n, rate, f"coarsen(n_bins={n})")

    def sample(
        self, seed: int = 0, tokens: TokenLengths | None = None, max_requests: int = MAX_REQUESTS
    ) -> Trace:
        """Draw requests as a Poisson process whose rate is constant within each bin.

        `tokens` defaults to the Azure conversation shape moved to this curve's token
        means. Raises ValueError when the expected count exceeds `max_requests`.
        """
        expected = float(self.rate_rps.sum() * self.bin_s)
        if expected > max_requests:
            raise ValueError(
                f"rate curve {self.name!r} would give about {expected:.3g} requests, more than "
                f"max_requests={max_requests}; window it or scale it down first"
            )
        rng = np.random.default_rng(seed)
        width = np.full(len(self), self.bin_s)
        arrival = _sample_bins(rng, self.t_s, width, self.rate_rps)
        tok = tokens or AZURE_CONV_TOKENS.with_means(
            self.mean_input_tokens, self.mean_output_tokens
        )
        tin, tout = tok.sample(arrival.size, rng)
        return Trace(
            name=self.name,
            arrival_s=arrival,
            input_tokens=tin,
            output_tokens=tout,
            source=f"{self.source} | sample(seed={seed})",
            horizon_s=self.duration_s,
        )


# --------------------------------------------------------------------------- format detection


def _open_text(path: Path) -> Any:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return path.open("r", encoding="utf-8", errors="replace")


def _first_line(path: Path) -> str:
    """First non-blank line of a (possibly gzip) text file, '' if none in the first 64 lines."""
    with _open_text(path) as f:
        for _ in range(64):
            line = f.readline()
            if not line:
                return ""
            if line.strip():
                return str(line.strip().lstrip("\ufeff"))
    return ""


def _classify_header(header: list[str]) -> str:
    cols = {c.strip() for c in header}
    if {"TIMESTAMP", "ContextTokens", "GeneratedTokens"} <= cols:
        return "azure"
    if {"Timestamp", "Request tokens", "Response tokens"} <= cols:
        return "burstgpt"
    if set(_SERVEGEN_COLUMNS) <= cols:
        return "servegen"
    return "csv"


def _classify_json(line: str, path: Path) -> str:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise TraceError(f"{path}: first line is not JSON ({e.msg}); cannot tell its format") from e
    if isinstance(obj, dict) and {"timestamp", "input_length", "output_length"} <= obj.keys():
        return "mooncake"
    return "jsonl"


def detect_format(path: str | Path) -> str:
    """Tell a trace file's format from its extension and its header or first line.

    Returns one of `FORMATS`. ``.parquet``/``.pq`` is parquet; ``.jsonl``/``.ndjson``/
    ``.json`` (optionally ``.gz``) is mooncake when its first object has ``timestamp``,
    ``input_length`` and ``output_length``, else jsonl; ``.csv``/``.txt`` (optionally
    ``.gz``) is told by its header (azure, burstgpt, servegen, else csv). Other extensions
    are sniffed: Parquet magic bytes, a leading ``{``, or a comma-separated header.
    Raises TraceError for a missing, empty or unrecognizable file.
    """
    p = Path(path)
    if not p.is_file():
        raise TraceError(f"{p}: no such file")
    suffixes = [s.lower() for s in p.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    ext = suffixes[-1] if suffixes else ""
    if ext in (".parquet", ".pq"):
        return "parquet"
    with p.open("rb") as f:
        magic = f.read(4)
    if not magic:
        raise TraceError(f"{p}: file is empty")
    if magic == b"PAR1":
        return "parquet"
    try:
        line = _first_line(p)
    except (OSError, EOFError) as e:
        raise TraceError(f"{p}: cannot read it as text ({e})") from e
    if not line:
        raise TraceError(f"{p}: no header or data line found")
    if ext in (".jsonl", ".ndjson", ".json") or line.startswith("{"):
        return _classify_json(line, p)
    if ext in (".csv", ".txt") or "," in line:
        return _classify_header(line.split(","))
    raise TraceError(
        f"{p}: unknown trace format (extension {ext or 'none'!r}, first line {line[:60]!r}); "
        f"pass format= one of {', '.join(FORMATS)}"
    )


# --------------------------------------------------------------------------- reading tables

_SKIP_LINE = re.compile(r"Skipping line (\d+): (.*)")


@dataclass
class _Table:
    """Raw columns of a file plus the 1-based file line of each row."""

    frame: pd.DataFrame
    line_no: I64
    skipped: list[tuple[int, str]]
    notes: list[str]


def _read_csv(path: Path) -> _Table:
    # skip_blank_lines=False keeps row i of the frame on file line i + 2 (header on line 1);
    # rows with too many fields are dropped by the C parser with a warning naming the line.
    # All columns are read (no usecols): with usecols pandas accepts rows with extra fields
    # silently, and a stray field usually means the row is shifted. One record per line is
    # assumed (quoted fields with line breaks would shift the reported line numbers).
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            frame = pd.read_csv(
                path,
                skip_blank_lines=False,
                on_bad_lines="warn",
                low_memory=False,
            )
        except pd.errors.EmptyDataError as e:
            raise TraceError(f"{path}: file is empty") from e
        except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as e:
            raise TraceError(f"{path}: cannot parse as CSV ({e})") from e
    skipped: list[tuple[int, str]] = []
    for w in caught:
        if not issubclass(w.category, pd.errors.ParserWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
            continue
        for m in _SKIP_LINE.finditer(str(w.message)):
            skipped.append((int(m.group(1)), m.group(2).strip()))
    bad = np.array(sorted(n for n, _ in skipped), dtype=np.int64)
    # Data lines are 2, 3, ... minus the dropped ones; row i is the i-th survivor.
    n_rows = len(frame)
    candidates = np.arange(2, n_rows + bad.size + 2, dtype=np.int64)
    line_no = np.setdiff1d(candidates, bad, assume_unique=True)[:n_rows]
    return _Table(frame, line_no, skipped, [])


def _read_jsonl(path: Path, keys: Sequence[str]) -> _Table:
    values: dict[str, list[Any]] = {k: [] for k in keys}
    lines: list[int] = []
    skipped: list[tuple[int, str]] = []
    with _open_text(path) as f:
        for i, raw in enumerate(f, start=1):
            s = raw.strip()
            if not s:
                continue
            try:
                obj = json.loads(s)
            except json.JSONDecodeError as e:
                skipped.append((i, f"invalid JSON: {e.msg}"))
                continue
            if not isinstance(obj, dict):
                skipped.append((i, f"not a JSON object: {s[:40]!r}"))
                continue
            for k in keys:
                values[k].append(obj.get(k))
            lines.append(i)
    frame = pd.DataFrame({k: pd.Series(v, dtype=object) for k, v in values.items()})
    return _Table(frame, np.array(lines, dtype=np.int64), skipped, [])


def _read_parquet(path: Path, columns: Sequence[str]) -> _Table:
    import pyarrow.parquet as pq

    try:
        schema_names = pq.read_schema(path).names
    except Exception as e:  # pyarrow raises its own ArrowInvalid / OSError family
        raise TraceError(f"{path}: cannot read as Parquet ({e})") from e
    missing = [c for c in columns if c not in schema_names]
    if missing:
        raise TraceError(_missing_columns_message(path, missing, schema_names))
    frame = pq.read_table(path, columns=list(columns)).to_pandas()
    return _Table(frame, np.arange(1, len(frame) + 1, dtype=np.int64), [], [])


def _missing_columns_message(path: Path, missing: Sequence[str], have: Sequence[str]) -> str:
    return (
        f"{path}: column(s) {', '.join(repr(c) for c in missing)} not in the file "
        f"(it has {', '.join(repr(str(c)) for c in have)}); fix column_map"
    )


def _resolve_column_map(
    path: Path, fmt: str, column_map: Mapping[str, str] | None
) -> dict[str, str]:
    cmap = dict(_DEFAULT_MAPS[fmt])
    if column_map is None:
        return cmap
    if not isinstance(column_map, Mapping):
        raise TraceError(f"{path}: column_map must be a mapping, got {type(column_map).__name__}")
    allowed = _MAP_COLUMNS + _MAP_OPTIONS
    unknown = [k for k in column_map if k not in allowed]
    if unknown:
        raise TraceError(
            f"{path}: column_map has unknown key(s) {', '.join(map(repr, unknown))}; "
            f"allowed: {', '.join(allowed)}"
        )
    bad = [k for k, v in column_map.items() if not isinstance(v, str) or not v]
    if bad:
        raise TraceError(
            f"{path}: column_map values must be non-empty strings; bad: "
            + ", ".join(f"{k}={column_map[k]!r}" for k in bad)
        )
    cmap.update(column_map)
    unit = cmap.get("arrival_unit", "auto")
    if unit not in (*_ARRIVAL_UNITS, "datetime", "auto"):
        raise TraceError(
            f"{path}: column_map arrival_unit={unit!r}; use one of s, ms, us, ns, datetime, auto"
        )
    origin = cmap.get("arrival_origin")
    if origin is not None and origin not in ("zero", "first"):
        raise TraceError(f"{path}: column_map arrival_origin={origin!r}; use zero or first")
    return cmap


# --------------------------------------------------------------------------- row validation


def _raw(frame: pd.DataFrame, col: str, i: int) -> str:
    v = frame[col].iloc[i]
    return repr(v) if isinstance(v, str) else str(v)


def _as_numbers(s: pd.Series) -> tuple[F64, NDArray[np.bool_]]:
    """(float values, missing mask); non-numeric values become NaN but are not 'missing'."""
    missing = s.isna().to_numpy()
    if pd.api.types.is_bool_dtype(s.dtype):
        return np.full(len(s), np.nan), missing
    if pd.api.types.is_numeric_dtype(s.dtype):
        return s.to_numpy(dtype=np.float64, na_value=np.nan), missing
    if s.dtype == object:  # JSON values: true/false are not token counts
        s = s.where(~s.map(lambda v: isinstance(v, bool)))
    num = pd.to_numeric(s, errors="coerce")
    return num.to_numpy(dtype=np.float64, na_value=np.nan), missing


def _datetime_ns(s: pd.Series, fmt: str | None) -> tuple[NDArray[np.int64], NDArray[np.bool_]]:
    """Parse datetime strings (naive ones read as UTC) to int64 ns; (values, ok mask)."""
    with warnings.catch_warnings():
        # pandas warns when it falls back to per-element parsing; the result is the same.
        warnings.simplefilter("ignore", UserWarning)
        ts = pd.to_datetime(s.astype("string"), format=fmt or "ISO8601", errors="coerce", utc=True)
    ok = ts.notna().to_numpy()
    ns = np.zeros(len(s), dtype=np.int64)
    if ok.any():
        naive = ts[ok].dt.tz_localize(None).dt.as_unit("ns")
        ns[ok] = naive.to_numpy(dtype="datetime64[ns]").view(np.int64)
    return ns, ok


def _rows_to_trace(path: Path, fmt: str, table: _Table, cmap: Mapping[str, str]) -> Trace:
    frame = table.frame
    n = len(frame)
    acol, icol, ocol = cmap["arrival"], cmap["input_tokens"], cmap["output_tokens"]
    missing_cols = [c for c in (acol, icol, ocol) if c not in frame.columns]
    if missing_cols:
        raise TraceError(_missing_columns_message(path, missing_cols, list(frame.columns)))

    reason: list[str | None] = [None] * n
    bad = np.zeros(n, dtype=bool)

    def flag(mask: NDArray[np.bool_], what: str, col: str) -> None:
        """Mark rows newly failing `mask` with '<what> <raw value> in <col>'."""
        new = mask & ~bad
        for i in np.flatnonzero(new):
            reason[i] = f"{what} {_raw(frame, col, int(i))} in {col!r}"
        bad[new] = True

    def flag_missing(mask: NDArray[np.bool_], col: str) -> None:
        new = mask & ~bad
        for i in np.flatnonzero(new):
            reason[i] = f"missing field {col!r}"
        bad[new] = True

    # Blank lines: every field empty. Not data, not reported.
    blank = frame.isna().all(axis=1).to_numpy() if frame.shape[1] else np.zeros(n, bool)

    # ---- arrival
    a_num, a_missing = _as_numbers(frame[acol])
    unit = cmap.get("arrival_unit", "auto")
    if unit == "auto":
        present = ~a_missing
        n_num = int(np.count_nonzero(np.isfinite(a_num) & present))
        unit = "s" if n_num * 2 >= max(int(present.sum()), 1) else "datetime"
    notes: list[str] = list(table.notes)
    flag_missing(a_missing & ~blank, acol)
    if unit == "datetime":
        ns, ok = _datetime_ns(frame[acol], cmap.get("arrival_format"))
        flag(~ok & ~blank, "unparseable time", acol)
        good = ~bad & ~blank
        arrival = np.zeros(n, dtype=np.float64)
        if good.any():
            t0 = ns[good].min()
            arrival[good] = (ns[good] - t0).astype(np.float64) / 1e9
    else:
        flag(np.isnan(a_num), "unparseable time", acol)
        flag(~np.isfinite(a_num), "non-finite time", acol)
        flag(a_num < 0, "negative time", acol)
        arrival = a_num * _ARRIVAL_UNITS[unit]
        good = ~bad & ~blank
        origin = cmap.get("arrival_origin")
        if good.any():
            t_min = float(arrival[good].min())
            if origin is None and t_min > _EPOCH_THRESHOLD_S:
                origin = "first"
                notes.append(
                    f"arrival times start at {t_min:.6g} s (epoch stamps, not offsets); "
                    f"re-based to the first arrival"
                )
            if origin == "first":
                arrival = arrival - t_min

    # ---- tokens
    tokens: dict[str, F64] = {}
    for key, col in (("input_tokens", icol), ("output_tokens", ocol)):
        v, miss = _as_numbers(frame[col])
        flag_missing(miss & ~blank, col)
        flag(np.isnan(v), f"non-numeric {key}", col)
        flag(~np.isfinite(v), f"non-finite {key}", col)
        flag(v < 0, f"negative {key}", col)
        flag(v != np.floor(v), f"fractional {key}", col)
        tokens[key] = v

    keep = ~bad & ~blank
    skipped = list(table.skipped)
    skipped += [(int(table.line_no[i]), str(reason[i])) for i in np.flatnonzero(bad & ~blank)]
    skipped.sort(key=lambda x: x[0])
    if not keep.any():
        detail = f"; first problems: {skipped[:3]}" if skipped else ""
        raise TraceError(f"{path}: no usable rows ({len(skipped)} broken, format {fmt}){detail}")

    t = arrival[keep]
    tin = tokens["input_tokens"][keep].astype(np.int64)
    tout = tokens["output_tokens"][keep].astype(np.int64)
    for key, arr in (("input_tokens", tin), ("output_tokens", tout)):
        zeros = int(np.count_nonzero(arr == 0))
        if zeros:
            notes.append(f"{zeros} row(s) with 0 {key} set to 1")
            arr[arr == 0] = 1
    descents = int(np.count_nonzero(np.diff(t) < 0))
    if descents:
        order = np.argsort(t, kind="stable")
        t, tin, tout = t[order], tin[order], tout[order]
        notes.append(f"arrivals out of order at {descents} place(s); sorted (stable)")
    return Trace(
        name=_trace_name(path),
        arrival_s=t,
        input_tokens=tin,
        output_tokens=tout,
        source=f"{path} ({fmt})",
        skipped=tuple(skipped),
        notes=tuple(notes),
    )


def _trace_name(path: Path) -> str:
    name = path.name
    for ext in (".gz", ".csv", ".jsonl", ".ndjson", ".json", ".parquet", ".pq", ".txt"):
        if name.lower().endswith(ext):
            name = name[: -len(ext)]
    return name


def _resolve_format(p: Path, format: str) -> str:
    if format == "auto":
        return detect_format(p)
    if format not in FORMATS:
        raise TraceError(f"{p}: unknown format {format!r}; use auto or one of {', '.join(FORMATS)}")
    if not p.is_file():
        raise TraceError(f"{p}: no such file")
    return format


def _read_requests(p: Path, fmt: str, column_map: Mapping[str, str] | None) -> Trace:
    cmap = _resolve_column_map(p, fmt, column_map)
    cols = [cmap["arrival"], cmap["input_tokens"], cmap["output_tokens"]]
    if fmt in ("mooncake", "jsonl"):
        table = _read_jsonl(p, cols)
    elif fmt == "parquet":
        table = _read_parquet(p, cols)
    else:
        table = _read_csv(p)
    return _rows_to_trace(p, fmt, table, cmap)


# --------------------------------------------------------------------------- public loaders


def load_trace(
    path: str | Path,
    format: str = "auto",
    column_map: Mapping[str, str] | None = None,
    start_s: float | None = None,
    duration_s: float | None = None,
    speedup: float = 1.0,
    rate_scale: float = 1.0,
    seed: int = 0,
    max_requests: int = MAX_REQUESTS,
) -> Trace:
    """Read a request trace, then window it, speed it up and scale its rate, in that order.

    `start_s` / `duration_s` are in the file's own time (before `speedup`); see
    `Trace.window`. `speedup` divides times (`Trace.scale_time`); `rate_scale` multiplies
    load (`Trace.scale_rate`, seeded by `seed`). ServeGen window files are synthesized
    (`synthesize_servegen`, with `rate_scale` applied to the window rates instead of by
    copying). See the module docstring for formats, column_map and broken rows.

    Raises TraceError (file, format, column_map, no usable rows, a ServeGen span that would
    exceed `max_requests`) and ValueError (bad window or scale arguments).
    """
    p = Path(path)
    fmt = _resolve_format(p, format)
    if fmt == "servegen":
        if column_map is not None:
            raise TraceError(f"{p}: column_map does not apply to servegen window files")
        trace = synthesize_servegen(
            p,
            start_s=start_s,
            duration_s=duration_s,
            rate_scale=rate_scale,
            seed=seed,
            max_requests=max_requests,
        )
        return trace.scale_time(speedup) if speedup != 1.0 else trace
    trace = _read_requests(p, fmt, column_map)
    if start_s is not None or duration_s is not None:
        trace = trace.window(start_s, duration_s)
    if speedup != 1.0:
        trace = trace.scale_time(speedup)
    if rate_scale != 1.0:
        trace = trace.scale_rate(rate_scale, seed=seed)
    return trace


def load_rate_curve(
    path: str | Path,
    format: str = "auto",
    column_map: Mapping[str, str] | None = None,
    bin_s: float | None = None,
    start_s: float | None = None,
    duration_s: float | None = None,
    speedup: float = 1.0,
    rate_scale: float = 1.0,
) -> RateCurve:
    """Read a trace as a rate curve: mean requests/s per bin.

    ServeGen window files: the sum of the clients' rates per window (bin_s = the window,
    600 s; a `bin_s` that is a multiple of it merges windows); token means are
    `AZURE_CONV_TOKENS`' (ServeGen has none). Request files: `load_trace` then
    `RateCurve.from_trace` with `bin_s` (default 60 s). The window is cut first (in file
    time), then `speedup`, then `rate_scale`.
    """
    p = Path(path)
    fmt = _resolve_format(p, format)
    if fmt == "servegen":
        if column_map is not None:
            raise TraceError(f"{p}: column_map does not apply to servegen window files")
        windows = _read_servegen(p)
        agg = windows.frame.groupby("timestamp", sort=True)["rate"].sum()
        curve = RateCurve(
            name=_trace_name(p),
            t_s=agg.index.to_numpy(dtype=np.float64),
            bin_s=windows.window_s,
            rate_rps=agg.to_numpy(dtype=np.float64),
            mean_input_tokens=AZURE_CONV_TOKENS.mean_input_tokens,
            mean_output_tokens=AZURE_CONV_TOKENS.mean_output_tokens,
            source=f"{p} (servegen, sum over clients)",
        )
        if bin_s is not None:
            ratio = _check_positive("bin_s", bin_s) / windows.window_s
            if abs(ratio - round(ratio)) > 1e-9 or round(ratio) < 1:
                raise TraceError(
                    f"{p}: bin_s={bin_s:g} is not a whole multiple of the "
                    f"{windows.window_s:g} s ServeGen window"
                )
            curve = curve.coarsen(int(round(ratio)))
        if start_s is not None or duration_s is not None:
            curve = curve.window(start_s, duration_s)
    else:
        trace = _read_requests(p, fmt, column_map)
        if start_s is not None or duration_s is not None:
            trace = trace.window(start_s, duration_s)
        curve = RateCurve.from_trace(trace, 60.0 if bin_s is None else bin_s)
    if speedup != 1.0:
        curve = curve.scale_time(speedup)
    if rate_scale != 1.0:
        curve = curve.scale_rate(rate_scale)
    return curve


def write_trace(trace: Trace, path: str | Path) -> Path:
    """Write a trace as csv, jsonl or parquet (by extension) with the generic column names.

    Columns: arrival_s, input_tokens, output_tokens; `load_trace` reads the file back
    (arrival times round-trip exactly in parquet, to 17 significant digits in text).
    """
    p = Path(path)
    frame = trace.to_frame()
    name = p.name.lower()
    if name.endswith((".parquet", ".pq")):
        frame.to_parquet(p, index=False)
    elif name.endswith((".jsonl", ".jsonl.gz", ".ndjson")):
        frame.to_json(p, orient="records", lines=True, double_precision=15)
    elif name.endswith((".csv", ".csv.gz")):
        frame.to_csv(p, index=False, float_format="%.17g")
    else:
        raise ValueError(f"{p}: write_trace needs a .csv, .jsonl or .parquet path")
    return p


# --------------------------------------------------------------------------- ServeGen


@dataclass
class _ServeGenWindows:
    frame: pd.DataFrame  # usable rows: client_id, timestamp, rate, family, shape
    window_s: float
    skipped: list[tuple[int, str]]


def _read_servegen(path: Path) -> _ServeGenWindows:
    table = _read_csv(path)
    frame = table.frame
    missing = [c for c in _SERVEGEN_COLUMNS if c not in frame.columns]
    if missing:
        raise TraceError(_missing_columns_message(path, missing, list(frame.columns)))
    n = len(frame)
    blank = frame.isna().all(axis=1).to_numpy()
    t, _ = _as_numbers(frame["timestamp"])
    rate, _ = _as_numbers(frame["rate"])
    shape, _ = _as_numbers(frame["pat_arg1"])
    scale, _ = _as_numbers(frame["pat_arg2"])
    family = frame["pat_name"].astype("string").str.strip().str.lower().fillna("")
    fam = family.to_numpy(dtype=object)
    active = np.nan_to_num(rate) > 0
    checks: list[tuple[NDArray[np.bool_], str, str]] = [
        (~np.isfinite(t) | (t < 0), "timestamp", "bad window start"),
        (~np.isfinite(rate) | (rate < 0), "rate", "bad rate"),
        (active & ~np.isin(fam, _SERVEGEN_FAMILIES), "pat_name", "unknown family"),
        (active & ~(np.isfinite(shape) & (shape > 0)), "pat_arg1", "bad shape"),
        (active & ~(np.isfinite(scale) & (scale > 0)), "pat_arg2", "bad scale"),
    ]
    bad = np.zeros(n, dtype=bool)
    skipped = list(table.skipped)
    for mask, col, what in checks:
        new = mask & ~bad & ~blank
        for i in np.flatnonzero(new):
            skipped.append((int(table.line_no[i]), f"{what} {_raw(frame, col, int(i))} in {col!r}"))
        bad |= new
    skipped.sort(key=lambda x: x[0])
    keep = ~bad & ~blank
    if not keep.any():
        raise TraceError(f"{path}: no usable rows ({len(skipped)} broken, format servegen)")
    out = pd.DataFrame(
        {
            "client_id": frame["client_id"].to_numpy()[keep],
            "timestamp": t[keep],
            "rate": rate[keep],
            "family": fam[keep],
            "shape": shape[keep],
        }
    )
    starts = np.unique(out["timestamp"].to_numpy())
    # Windows are evenly spaced (600 s in ServeGen); the smallest gap is the window length.
    window_s = float(np.diff(starts).min()) if starts.size > 1 else 600.0
    return _ServeGenWindows(out, window_s, skipped)


def synthesize_servegen(
    path: str | Path,
    start_s: float | None = None,
    duration_s: float | None = None,
    rate_scale: float = 1.0,
    seed: int = 0,
    tokens: TokenLengths = AZURE_CONV_TOKENS,
    max_requests: int = MAX_REQUESTS,
) -> Trace:
    """Draw a request stream from ServeGen per-client windows over [start_s, start_s + duration_s).

    For every client and window with rate > 0: n = rate x window x `rate_scale` requests
    (rounded at random to a whole count with the right mean); n + 1 gaps drawn from the
    window's fitted Gamma(shape) or Weibull(shape); the first n partial sums, divided by
    the sum of all n + 1, place the arrivals inside the window. This keeps the fitted
    burstiness (the family and shape set the gaps' CV) and holds about rate x window
    requests per window; the fitted scale only sets the mean gap, which the rescaling
    replaces, so it is not used. Idle windows (rate 0) stay empty. Windows cut by the span
    are synthesized whole, then trimmed. Token lengths come from `tokens` (ServeGen windows
    carry none; the default is `AZURE_CONV_TOKENS`).

    Times are re-based to `start_s` (None: 0); `duration_s` None means to the end of the
    file. Raises TraceError when the expected request count exceeds `max_requests` (a full
    two-week synthesis is about 2e9): shorten the span (duration) or use `load_rate_curve`.
    """
    p = Path(path)
    if not p.is_file():
        raise TraceError(f"{p}: no such file")
    scale = _check_nonnegative("rate_scale", rate_scale)
    start = 0.0 if start_s is None else _check_nonnegative("start_s", start_s)
    windows = _read_servegen(p)
    w = windows.window_s
    df = windows.frame
    t_all = df["timestamp"].to_numpy()
    end_of_file = float(t_all.max()) + w
    end = end_of_file if duration_s is None else start + _check_positive("duration_s", duration_s)
    sel = (t_all + w > start) & (t_all < end) & (df["rate"].to_numpy() > 0)
    t_w = t_all[sel]
    lam = df["rate"].to_numpy()[sel] * scale
    overlap = np.minimum(t_w + w, end) - np.maximum(t_w, start)
    expected = float(np.sum(lam * overlap))
    if expected > max_requests:
        raise TraceError(
            f"{p}: synthesizing {end - start:.6g} s from {start:g} s would give about "
            f"{expected:.3g} requests, more than max_requests={max_requests}; pass a shorter "
            f"duration (--duration) or use the aggregate rate curve (load_rate_curve)"
        )
    rng = np.random.default_rng(seed)
    mean_n = lam * w
    n = np.floor(mean_n).astype(np.int64)
    n += (rng.random(n.size) < (mean_n - n)).astype(np.int64)
    arrival = _renewal_in_windows(
        rng, t_w, w, n, df["family"].to_numpy()[sel], df["shape"].to_numpy()[sel]
    )
    arrival = arrival[(arrival >= start) & (arrival < end)] - start
    arrival.sort()
    length = end - start
    if arrival.size:
        arrival = np.minimum(arrival, np.nextafter(length, 0.0))
    tin, tout = tokens.sample(arrival.size, rng)
    dur = "end" if duration_s is None else f"{duration_s:g}"
    return Trace(
        name=_trace_name(p),
        arrival_s=arrival,
        input_tokens=tin,
        output_tokens=tout,
        source=(
            f"{p} (servegen synthesized: start_s={start:g}, duration_s={dur}, "
            f"rate_scale={scale:g}, seed={seed})"
        ),
        skipped=tuple(windows.skipped),
        horizon_s=length,
    )


def _renewal_in_windows(
    rng: np.random.Generator,
    t_w: F64,
    window_s: float,
    n: I64,
    family: NDArray[Any],
    shape: F64,
) -> F64:
    """Place n[i] arrivals in window i ([t_w[i], t_w[i] + window_s)) with fitted gaps.

    Vectorized over all windows: one flat array of sum(n + 1) gaps, one normalization per
    window (`np.add.reduceat`), one cumulative sum.
    """
    keep = n > 0
    t_w, n, family, shape = t_w[keep], n[keep], family[keep], shape[keep]
    if n.size == 0:
        return np.zeros(0, dtype=np.float64)
    m = n + 1  # gaps per window: before each arrival and after the last
    seg_start = np.concatenate(([0], np.cumsum(m)[:-1]))
    total = int(m.sum())
    shape_rep = np.repeat(shape, m)
    is_gamma = np.repeat(family == "gamma", m)
    gaps = np.empty(total, dtype=np.float64)
    gaps[is_gamma] = rng.gamma(shape_rep[is_gamma])
    gaps[~is_gamma] = rng.weibull(shape_rep[~is_gamma])
    gaps[~np.isfinite(gaps)] = np.finfo(np.float64).max / (total + 1.0)
    seg_sum = np.add.reduceat(gaps, seg_start)
    # A Gamma with a tiny shape can underflow every gap of a window to 0: spread it evenly.
    degenerate = seg_sum <= 0
    if degenerate.any():
        gaps[np.repeat(degenerate, m)] = 1.0
        seg_sum = np.where(degenerate, m.astype(np.float64), seg_sum)
    frac = gaps / np.repeat(seg_sum, m)  # each window's gaps now sum to 1
    csum = np.cumsum(frac)
    before = np.repeat(csum[seg_start] - frac[seg_start], m)  # cumsum before the window
    pos = csum - before
    last = seg_start + m - 1  # the trailing gap ends the window; it is not an arrival
    is_arrival = np.ones(total, dtype=bool)
    is_arrival[last] = False
    pos = np.clip(pos[is_arrival], 0.0, np.nextafter(1.0, 0.0))
    out: F64 = np.repeat(t_w, n) + pos * window_s
    return out


# --------------------------------------------------------------------------- synthetic


def _sample_bins(rng: np.random.Generator, start_s: F64, width_s: F64, rate_rps: F64) -> F64:
    """Poisson arrivals at `rate_rps[i]` on [start_s[i], start_s[i] + width_s[i]); sorted [m].

    Bins must not overlap. Per bin: a Poisson count, then uniform positions (exact for a
    rate that is constant within the bin).
    """
    counts = rng.poisson(np.maximum(rate_rps, 0.0) * width_s)
    start = np.repeat(start_s, counts)
    width = np.repeat(width_s, counts)
    t: F64 = start + rng.random(start.size) * width
    t = np.minimum(t, np.nextafter(start + width, -np.inf))
    t.sort()
    return t


def _sample_piecewise(rng: np.random.Generator, edges_s: F64, rate_rps: F64) -> F64:
    """Poisson arrivals at `rate_rps[i]` on [edges_s[i], edges_s[i+1]); sorted [m]."""
    return _sample_bins(rng, edges_s[:-1], np.diff(edges_s), rate_rps)


def _synthetic(
    name: str,
    arrival: F64,
    duration_s: float,
    rng: np.random.Generator,
    tokens: TokenLengths,
    source: str,
) -> Trace:
    tin, tout = tokens.sample(arrival.size, rng)
    return Trace(
        name=name,
        arrival_s=arrival,
        input_tokens=tin,
        output_tokens=tout,
        source=source,
        horizon_s=duration_s,
    )


def _check_count(name: str, expected: float, max_requests: int) -> None:
    if expected > max_requests:
        raise ValueError(
            f"{name} would give about {expected:.3g} requests, more than "
            f"max_requests={max_requests}; shorten duration_s or lower the rate"
        )


def _von_mises_kappa(peak_to_mean: float) -> float:
    """kappa with exp(kappa) / I0(kappa) = peak_to_mean (peak / mean of exp(kappa cos))."""
    from scipy.optimize import brentq
    from scipy.special import i0e

    if peak_to_mean == 1.0:
        return 0.0
    # 1 / i0e(kappa) = exp(kappa) / I0(kappa) grows like sqrt(2 pi kappa): bracket it.
    hi = max(1.0, peak_to_mean**2)
    return float(brentq(lambda k: 1.0 / i0e(k) - peak_to_mean, 0.0, hi))


def poisson_daily(
    duration_s: float,
    mean_rps: float,
    peak_to_mean: float = 2.0,
    period_s: float = 86400.0,
    phase_s: float | None = None,
    seed: int = 0,
    tokens: TokenLengths = AZURE_CONV_TOKENS,
    max_requests: int = MAX_REQUESTS,
) -> Trace:
    """Poisson arrivals with a smooth daily cycle.

    Rate (requests/s): mean_rps x exp(kappa cos(2 pi (t - phase_s) / period_s)) / I0(kappa),
    a von Mises bump whose time average over a period is exactly `mean_rps` and whose
    peak / mean is `peak_to_mean` (>= 1; 1 is a constant rate; the trough is
    mean_rps x exp(-kappa) / I0(kappa)). The peak is at `phase_s` (default 14/24 of the
    period: 14:00 when t=0 is midnight). Sampled exactly by thinning.
    """
    dur = _check_positive("duration_s", duration_s)
    mean = _check_nonnegative("mean_rps", mean_rps)
    ratio = float(peak_to_mean)
    if not (math.isfinite(ratio) and ratio >= 1.0):
        raise ValueError(f"peak_to_mean must be >= 1, got {peak_to_mean!r}")
    period = _check_positive("period_s", period_s)
    phase = period * 14.0 / 24.0 if phase_s is None else float(phase_s)
    peak = mean * ratio
    _check_count("poisson_daily", peak * dur, max_requests)
    kappa = _von_mises_kappa(ratio)
    rng = np.random.default_rng(seed)
    candidates = _sample_piecewise(rng, np.array([0.0, dur]), np.array([peak]))
    # exp(kappa (cos - 1)) = rate / peak, computed without overflow for large kappa.
    accept_p = np.exp(kappa * (np.cos(2 * np.pi * (candidates - phase) / period) - 1.0))
    arrival = candidates[rng.random(candidates.size) < accept_p]
    src = (
        f"poisson_daily(duration_s={dur:g}, mean_rps={mean:g}, peak_to_mean={ratio:g}, "
        f"period_s={period:g}, phase_s={phase:g}, seed={seed})"
    )
    return _synthetic("poisson_daily", arrival, dur, rng, tokens, src)


def bursts(
    duration_s: float,
    base_rps: float,
    burst_rps: float,
    burst_every_s: float,
    burst_len_s: float,
    seed: int = 0,
    first_burst_s: float | None = None,
    tokens: TokenLengths = AZURE_CONV_TOKENS,
    max_requests: int = MAX_REQUESTS,
) -> Trace:
    """Poisson arrivals at `base_rps`, switching to `burst_rps` during periodic bursts.

    Bursts last `burst_len_s` (<= burst_every_s) and start every `burst_every_s`, the
    first at `first_burst_s` (default: one period in, so the trace opens calm). During a
    burst the rate is `burst_rps` (not base + burst).
    """
    dur = _check_positive("duration_s", duration_s)
    base = _check_nonnegative("base_rps", base_rps)
    peak = _check_nonnegative("burst_rps", burst_rps)
    every = _check_positive("burst_every_s", burst_every_s)
    length = _check_positive("burst_len_s", burst_len_s)
    if length > every:
        raise ValueError(f"burst_len_s ({length:g}) must be <= burst_every_s ({every:g})")
    first = every if first_burst_s is None else _check_nonnegative("first_burst_s", first_burst_s)
    _check_count("bursts", max(base, peak) * dur, max_requests)
    starts = np.arange(first, dur, every)
    ends = np.minimum(starts + length, dur)
    edges = np.unique(np.concatenate(([0.0, dur], starts, ends)))
    mids = (edges[:-1] + edges[1:]) / 2
    k = np.floor((mids - first) / every)
    in_burst = (mids >= first) & (mids - first - k * every < length)
    rate = np.where(in_burst, peak, base)
    rng = np.random.default_rng(seed)
    arrival = _sample_piecewise(rng, edges, rate)
    src = (
        f"bursts(duration_s={dur:g}, base_rps={base:g}, burst_rps={peak:g}, "
        f"burst_every_s={every:g}, burst_len_s={length:g}, first_burst_s={first:g}, seed={seed})"
    )
    return _synthetic("bursts", arrival, dur, rng, tokens, src)


def mmpp(
    duration_s: float,
    rates_rps: Sequence[float],
    mean_sojourn_s: Sequence[float],
    seed: int = 0,
    tokens: TokenLengths = AZURE_CONV_TOKENS,
    max_requests: int = MAX_REQUESTS,
) -> Trace:
    """Markov-modulated Poisson process: the rate switches between hidden states.

    State i emits Poisson arrivals at `rates_rps[i]` for an exponential time with mean
    `mean_sojourn_s[i]`, then jumps to one of the other states, uniformly. The first state
    is drawn from the stationary law, which for uniform jumps is proportional to the mean
    sojourns, so the long-run rate is sum(rate_i x sojourn_i) / sum(sojourn_i).
    """
    dur = _check_positive("duration_s", duration_s)
    rates = np.array([_check_nonnegative("rates_rps", r) for r in rates_rps], dtype=np.float64)
    soj = np.array([_check_positive("mean_sojourn_s", s) for s in mean_sojourn_s])
    if rates.size == 0 or rates.size != soj.size:
        raise ValueError(
            f"rates_rps and mean_sojourn_s must be non-empty and of equal length, got "
            f"{rates.size} and {soj.size}"
        )
    _check_count("mmpp", float(rates.max()) * dur, max_requests)
    rng = np.random.default_rng(seed)
    k = rates.size
    state0 = int(rng.choice(k, p=soj / soj.sum()))
    # Draw the state path in batches until its sojourns cover the duration; a jump
    # (cur + U{1..k-1}) mod k lands uniformly on one of the other states.
    batch = int(min(max(2.0 * dur / soj.min(), 16.0), 1e6))
    path = np.array([state0], dtype=np.int64)
    soj_t = rng.exponential(soj[path])
    while soj_t.sum() < dur:
        if k > 1:
            more = (int(path[-1]) + np.cumsum(rng.integers(1, k, size=batch))) % k
        else:
            more = np.zeros(batch, dtype=np.int64)
        path = np.concatenate((path, more))
        soj_t = np.concatenate((soj_t, rng.exponential(soj[more])))
    edges = np.concatenate(([0.0], np.cumsum(soj_t)))
    n_seg = int(np.searchsorted(edges, dur, side="left"))
    edges = np.append(edges[:n_seg], dur)
    arrival = _sample_piecewise(rng, edges, rates[path[:n_seg]])
    src = (
        f"mmpp(duration_s={dur:g}, rates_rps={rates.tolist()}, "
        f"mean_sojourn_s={soj.tolist()}, seed={seed})"
    )
    return _synthetic("mmpp", arrival, dur, rng, tokens, src)


def step(
    duration_s: float,
    before_rps: float,
    after_rps: float,
    at_s: float,
    seed: int = 0,
    tokens: TokenLengths = AZURE_CONV_TOKENS,
    max_requests: int = MAX_REQUESTS,
) -> Trace:
    """Poisson arrivals at `before_rps` until `at_s`, then at `after_rps` (a load step)."""
    dur = _check_positive("duration_s", duration_s)
    before = _check_nonnegative("before_rps", before_rps)
    after = _check_nonnegative("after_rps", after_rps)
    at = min(_check_nonnegative("at_s", at_s), dur)
    _check_count("step", max(before, after) * dur, max_requests)
    rng = np.random.default_rng(seed)
    edges = np.array([0.0, at, dur])
    arrival = _sample_piecewise(rng, edges, np.array([before, after]))
    src = (
        f"step(duration_s={dur:g}, before_rps={before:g}, after_rps={after:g}, "
        f"at_s={at:g}, seed={seed})"
    )
    return _synthetic("step", arrival, dur, rng, tokens, src)
