"""Traffic traces: every file format, broken rows, windows and scaling, synthetic load."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from simulator.traces import (
    AZURE_CONV_TOKENS,
    FORMATS,
    RateCurve,
    TokenLengths,
    Trace,
    TraceError,
    bursts,
    detect_format,
    load_rate_curve,
    load_trace,
    mmpp,
    poisson_daily,
    step,
    synthesize_servegen,
    write_trace,
)

FIXTURES = Path(__file__).parent / "fixtures" / "traces"
SHARED = Path(__file__).parents[2] / "shared" / "traces"
AZURE_CODE = SHARED / "AzureLLMInferenceTrace_code.csv"
AZURE_CONV = SHARED / "AzureLLMInferenceTrace_conv.csv"
SERVEGEN = SHARED / "servegen_language_m-mid_client_windows.csv.gz"


def _need(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(f"shared trace {path} is not present in this checkout")
    return path


def _trace(arrival: list[float], horizon_s: float | None = None) -> Trace:
    n = len(arrival)
    return Trace(
        name="t",
        arrival_s=np.array(arrival, dtype=np.float64),
        input_tokens=np.arange(1, n + 1, dtype=np.int64),
        output_tokens=np.full(n, 7, dtype=np.int64),
        source="test",
        horizon_s=horizon_s,
    )


# --------------------------------------------------------------------------- formats


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param("azure_small.csv", "azure", id="azure-header"),
        pytest.param("mooncake_small.jsonl", "mooncake", id="mooncake-keys"),
        pytest.param("burstgpt_small.csv", "burstgpt", id="burstgpt-header"),
        pytest.param("servegen_small.csv", "servegen", id="servegen-header"),
        pytest.param("generic_ms.csv", "csv", id="other-csv-header"),
        pytest.param("requests.jsonl", "jsonl", id="other-json-keys"),
    ],
)
def test_detects_format_from_extension_and_header(name: str, expected: str) -> None:
    assert detect_format(FIXTURES / name) == expected


def test_detects_parquet_by_magic_bytes_without_extension(tmp_path: Path) -> None:
    path = tmp_path / "requests.bin"
    pd.DataFrame({"arrival_s": [0.0], "input_tokens": [1], "output_tokens": [1]}).to_parquet(path)
    assert detect_format(path) == "parquet"


def test_detects_json_lines_without_extension(tmp_path: Path) -> None:
    path = tmp_path / "trace.log"
    path.write_text('{"timestamp": 0, "input_length": 5, "output_length": 2}\n')
    assert detect_format(path) == "mooncake"


def test_detects_gzipped_servegen_windows() -> None:
    assert detect_format(_need(SERVEGEN)) == "servegen"


def test_azure_rows_parse_exactly_and_broken_rows_are_reported_by_line() -> None:
    trace = load_trace(FIXTURES / "azure_small.csv")
    # First arrival 18:17:03.9799600 is t=0; 18:17:07.2500000 - 18:17:03.9799600 = 3.27004 s.
    np.testing.assert_allclose(trace.arrival_s, [0.0, 0.052, 3.27004, 7.0], rtol=0, atol=1e-9)
    assert trace.input_tokens.tolist() == [4808, 3180, 250, 700]
    # Line 8 has GeneratedTokens 0: kept, clamped to 1, and said so.
    assert trace.output_tokens.tolist() == [10, 8, 1, 20]
    assert any("0 output_tokens" in note for note in trace.notes)
    # Line 4 is blank (ignored); 5 bad time, 6 empty field, 7 negative, 9 non-numeric.
    assert [line for line, _ in trace.skipped] == [5, 6, 7, 9]
    reasons = dict(trace.skipped)
    assert "unparseable time" in reasons[5] and "not-a-time" in reasons[5]
    assert "missing field 'ContextTokens'" in reasons[6]
    assert "negative input_tokens" in reasons[7]
    assert "non-numeric input_tokens" in reasons[9]
    assert trace.name == "azure_small"
    assert trace.duration_s == pytest.approx(7.0)


def test_mooncake_reads_ms_timestamps_and_ignores_extra_keys() -> None:
    trace = load_trace(FIXTURES / "mooncake_small.jsonl")
    np.testing.assert_allclose(trace.arrival_s, [0.0, 0.0, 3.052, 9.1])
    assert trace.input_tokens.tolist() == [6755, 7319, 7234, 655]
    assert trace.output_tokens.tolist() == [500, 490, 794, 52]
    # 4 truncated JSON, 5 blank (ignored), 6 no input_length, 7 text time, 8 array, 9 12.5.
    assert [line for line, _ in trace.skipped] == [4, 6, 7, 8, 9]
    reasons = dict(trace.skipped)
    assert reasons[4].startswith("invalid JSON")
    assert "missing field 'input_length'" in reasons[6]
    assert "unparseable time 'soon'" in reasons[7]
    assert reasons[8].startswith("not a JSON object")
    assert "fractional input_tokens" in reasons[9]


def test_burstgpt_keeps_failed_requests_with_one_output_token() -> None:
    trace = load_trace(FIXTURES / "burstgpt_small.csv")
    # Timestamp is seconds from midnight of the first day: kept, not re-based.
    assert trace.arrival_s.tolist() == [5.0, 45.0, 47.0, 118.0, 120.0]
    # Line 4 (Response tokens 0, a failed request) and line 8 (Request tokens 0) -> 1.
    assert trace.output_tokens.tolist() == [18, 230, 1, 276, 15]
    assert trace.input_tokens.tolist() == [472, 1087, 300, 417, 1]
    assert len(trace.notes) == 2
    # Line 5 has a seventh field, line 6 a text token count.
    assert trace.skipped == (
        (5, "expected 6 fields, saw 7"),
        (6, "non-numeric input_tokens 'x' in 'Request tokens'"),
    )


def test_generic_csv_with_datetimes_sorts_out_of_order_rows_stably() -> None:
    trace = load_trace(
        FIXTURES / "generic_datetime.csv",
        column_map={"arrival": "when", "input_tokens": "prompt", "output_tokens": "completion"},
    )
    # Line 4 is 11:00+01:00 = 10:00Z, the same instant as line 2: it sorts right after it.
    assert trace.arrival_s.tolist() == [0.0, 0.0, 1.5, 3.0]
    assert trace.input_tokens.tolist() == [10, 30, 20, 50]
    assert trace.skipped == ((5, "unparseable time 'yesterday' in 'when'"),)
    assert any("sorted" in note for note in trace.notes)


def test_generic_csv_with_millisecond_arrivals() -> None:
    trace = load_trace(
        FIXTURES / "generic_ms.csv",
        column_map={
            "arrival": "t_ms",
            "input_tokens": "in",
            "output_tokens": "out",
            "arrival_unit": "ms",
        },
    )
    assert trace.arrival_s.tolist() == [0.5, 1.5, 2.5]
    assert trace.input_tokens.tolist() == [20, 10, 30]


def test_generic_jsonl_with_default_column_names() -> None:
    trace = load_trace(FIXTURES / "requests.jsonl")
    assert trace.arrival_s.tolist() == [0.25, 1.0, 4.0]
    assert trace.skipped == (
        (3, "negative time -1.0 in 'arrival_s'"),
        (4, "missing field 'input_tokens'"),
    )


def test_parquet_with_column_map_reports_broken_rows_by_row_number(tmp_path: Path) -> None:
    path = tmp_path / "log.parquet"
    pd.DataFrame(
        {
            "t": [0.0, 1.0, np.nan, 3.0],
            "p": [10, 20, 30, 40],
            "c": [1.0, 2.0, 3.0, np.nan],
        }
    ).to_parquet(path)
    trace = load_trace(path, column_map={"arrival": "t", "input_tokens": "p", "output_tokens": "c"})
    assert trace.arrival_s.tolist() == [0.0, 1.0]
    assert trace.skipped == ((3, "missing field 't'"), (4, "missing field 'c'"))


def test_epoch_seconds_are_rebased_to_the_first_arrival(tmp_path: Path) -> None:
    path = tmp_path / "epoch.csv"
    path.write_text("arrival_s,input_tokens,output_tokens\n1700000010.5,1,1\n1700000012,2,2\n")
    trace = load_trace(path)
    assert trace.arrival_s.tolist() == [0.0, 1.5]
    assert any("epoch" in note for note in trace.notes)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_written_traces_read_back_unchanged(tmp_path: Path, suffix: str) -> None:
    original = poisson_daily(600, 2.0, seed=3)
    back = load_trace(write_trace(original, tmp_path / f"out{suffix}"))
    np.testing.assert_allclose(back.arrival_s, original.arrival_s, rtol=1e-14, atol=0)
    np.testing.assert_array_equal(back.input_tokens, original.input_tokens)
    np.testing.assert_array_equal(back.output_tokens, original.output_tokens)
    assert back.skipped == ()


def test_formats_constant_lists_every_format() -> None:
    assert set(FORMATS) == {"azure", "mooncake", "burstgpt", "servegen", "csv", "jsonl", "parquet"}


# --------------------------------------------------------------------------- errors


def test_file_without_usable_rows_names_the_file() -> None:
    path = FIXTURES / "all_broken.csv"
    with pytest.raises(TraceError, match="no usable rows") as err:
        load_trace(path)
    assert str(path) in str(err.value)


def test_unknown_format_name_is_refused() -> None:
    with pytest.raises(TraceError, match=r"unknown format 'xml'.*azure") as err:
        load_trace(FIXTURES / "azure_small.csv", format="xml")
    assert "azure_small.csv" in str(err.value)


def test_unrecognizable_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "trace.bin"
    path.write_bytes(b"\x00\x01\x02 binary")
    with pytest.raises(TraceError, match="unknown trace format") as err:
        load_trace(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param("", "file is empty", id="empty-file"),
        pytest.param("arrival_s,input_tokens,output_tokens\n", "no usable rows", id="header-only"),
        pytest.param("arrival_s,input_tokens,output_tokens\n\n,,\n", "no usable rows", id="blank"),
    ],
)
def test_files_without_rows_are_refused(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "trace.csv"
    path.write_text(content)
    with pytest.raises(TraceError, match=message) as err:
        load_trace(path)
    assert str(path) in str(err.value)


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="no such file"):
        load_trace(tmp_path / "nope.csv")


@pytest.mark.parametrize(
    ("column_map", "message"),
    [
        # a key we do not know
        pytest.param({"arrival": "when", "tokens": "x"}, "unknown key.*'tokens'", id="unknown-key"),
        # a column that is not in the file; the message lists what the file has
        pytest.param(
            {"arrival": "time", "input_tokens": "prompt", "output_tokens": "completion"},
            r"'time' not in the file.*'when'",
            id="missing-column",
        ),
        pytest.param({"arrival_unit": "hours"}, "arrival_unit='hours'", id="bad-unit"),
        pytest.param({"arrival": ""}, "non-empty strings", id="empty-name"),
    ],
)
def test_bad_column_map_is_refused(column_map: dict[str, str], message: str) -> None:
    with pytest.raises(TraceError, match=message) as err:
        load_trace(FIXTURES / "generic_datetime.csv", column_map=column_map)
    assert "generic_datetime.csv" in str(err.value)


def test_forcing_the_wrong_known_format_names_missing_columns() -> None:
    with pytest.raises(TraceError, match="'TIMESTAMP'"):
        load_trace(FIXTURES / "burstgpt_small.csv", format="azure")


def test_trace_rejects_unsorted_arrivals() -> None:
    with pytest.raises(ValueError, match="sorted"):
        _trace([1.0, 0.5])


# --------------------------------------------------------------------------- real traces


@pytest.mark.parametrize(
    ("path", "rows", "duration_s", "rate_rps", "mean_in", "mean_out"),
    [
        # README: 8,819 rows over 3,436 s = 2.57 req/s; tokens 2,048 in / 28 out.
        pytest.param(AZURE_CODE, 8819, 3436, 2.57, 2048, 28, id="azure-code"),
        # README: 19,366 rows over 3,502 s = 5.53 req/s; tokens 1,155 in / 211 out.
        pytest.param(AZURE_CONV, 19366, 3502, 5.53, 1155, 211, id="azure-conv"),
    ],
)
def test_shared_azure_traces_match_their_published_statistics(
    path: Path, rows: int, duration_s: float, rate_rps: float, mean_in: float, mean_out: float
) -> None:
    trace = load_trace(_need(path))
    assert len(trace) == rows
    assert trace.skipped == ()
    assert trace.duration_s == pytest.approx(duration_s, abs=1.0)
    assert trace.mean_rate_rps == pytest.approx(rate_rps, abs=0.005)
    assert trace.input_tokens.mean() == pytest.approx(mean_in, abs=1.0)
    assert trace.output_tokens.mean() == pytest.approx(mean_out, abs=1.0)
    # Bins cover every request; the README's 1-min peak for conv is 8.45 req/s.
    _, rate = trace.rate_per_bin(60.0)
    assert rate.sum() * 60.0 == pytest.approx(rows)


def test_conv_window_keeps_exactly_the_requests_inside_it() -> None:
    full = load_trace(_need(AZURE_CONV))
    win = load_trace(AZURE_CONV, start_s=600, duration_s=300)
    inside = (full.arrival_s >= 600) & (full.arrival_s < 900)
    assert len(win) == int(inside.sum())
    np.testing.assert_allclose(win.arrival_s, full.arrival_s[inside] - 600, atol=1e-9)
    np.testing.assert_array_equal(win.input_tokens, full.input_tokens[inside])
    assert win.duration_s == 300.0


def test_servegen_rate_curve_matches_published_aggregate() -> None:
    curve = load_rate_curve(_need(SERVEGEN))
    # README: 2,016 windows of 600 s; sum over clients: mean 1,790, peak 3,445, min 0 req/s.
    assert len(curve) == 2016
    assert curve.bin_s == 600.0
    assert curve.mean_rate_rps == pytest.approx(1790.06, abs=0.5)
    assert curve.peak_rate_rps == pytest.approx(3444.76, abs=0.5)
    assert curve.rate_rps.min() == 0.0
    assert curve.duration_s == 14 * 86400
    hourly = load_rate_curve(SERVEGEN, bin_s=3600)
    assert len(hourly) == 336  # 2016 / 6
    assert hourly.mean_rate_rps == pytest.approx(curve.mean_rate_rps)


def test_servegen_synthesis_of_ten_minutes_holds_the_window_rate() -> None:
    curve = load_rate_curve(_need(SERVEGEN))
    start_s = 14 * 3600.0  # 14:00 on day one, window index 84
    trace = load_trace(SERVEGEN, start_s=start_s, duration_s=600, seed=1)
    expected = curve.rate_rps[84] * 600
    # Each client window is rounded to a whole count at random: off by < 1 per client.
    assert abs(len(trace) - expected) < 109
    assert trace.duration_s == 600.0
    assert trace.arrival_s[0] >= 0 and trace.arrival_s[-1] < 600


def test_servegen_full_synthesis_is_refused_with_a_way_out() -> None:
    with pytest.raises(TraceError, match=r"--duration.*load_rate_curve") as err:
        load_trace(_need(SERVEGEN))
    assert "servegen_language_m-mid_client_windows" in str(err.value)


# --------------------------------------------------------------------------- servegen fixture


def test_servegen_fixture_counts_per_window_are_exact() -> None:
    trace = synthesize_servegen(FIXTURES / "servegen_small.csv", seed=5)
    # Windows: t=0 client 1 at 0.5 req/s -> 300; t=600 clients 0+1 at 2+3 -> 3000;
    # t=1200 client 0 at 1 -> 600 (client 1's "Pareto" row, line 7, is skipped).
    counts = np.bincount((trace.arrival_s // 600).astype(int), minlength=3)
    assert counts.tolist() == [300, 3000, 600]
    assert trace.skipped == ((7, "unknown family 'Pareto' in 'pat_name'"),)
    assert trace.duration_s == 1800.0


def test_servegen_fitted_family_sets_burstiness() -> None:
    trace = synthesize_servegen(FIXTURES / "servegen_small.csv", seed=0)
    gaps_weibull = np.diff(trace.window(1200, 600).arrival_s)  # Weibull(0.5): CV sqrt(5)
    gaps_gamma = np.diff(trace.window(0, 600).arrival_s)  # Gamma(1): CV 1
    cv_weibull = gaps_weibull.std() / gaps_weibull.mean()
    cv_gamma = gaps_gamma.std() / gaps_gamma.mean()
    assert cv_weibull > 1.6
    assert 0.75 < cv_gamma < 1.3


def test_servegen_span_rate_scale_and_limit() -> None:
    path = FIXTURES / "servegen_small.csv"
    # [300, 900): half of window 0 (150 expected) and half of window 600 (1500 expected).
    part = synthesize_servegen(path, start_s=300, duration_s=600, rate_scale=2.0, seed=1)
    assert part.duration_s == 600.0
    assert len(part) == pytest.approx(2 * 1650, rel=0.15)
    with pytest.raises(TraceError, match="max_requests=100"):
        synthesize_servegen(path, max_requests=100)


def test_servegen_same_seed_same_trace_other_seed_other_trace() -> None:
    path = FIXTURES / "servegen_small.csv"
    a = load_trace(path, seed=11)
    b = load_trace(path, seed=11)
    c = load_trace(path, seed=12)
    np.testing.assert_array_equal(a.arrival_s, b.arrival_s)
    np.testing.assert_array_equal(a.output_tokens, b.output_tokens)
    assert len(a) == len(c) and not np.array_equal(a.arrival_s, c.arrival_s)


def test_servegen_fixture_rate_curve_sums_clients() -> None:
    curve = load_rate_curve(FIXTURES / "servegen_small.csv")
    assert curve.t_s.tolist() == [0.0, 600.0, 1200.0]
    assert curve.rate_rps.tolist() == [0.5, 5.0, 1.0]
    assert curve.mean_input_tokens == AZURE_CONV_TOKENS.mean_input_tokens


# --------------------------------------------------------------------------- transforms


def test_window_is_half_open_and_rebased() -> None:
    trace = _trace([0.0, 1.0, 2.0, 3.0, 4.0], horizon_s=5.0)
    win = trace.window(1.0, 2.0)
    assert win.arrival_s.tolist() == [0.0, 1.0]
    assert win.input_tokens.tolist() == [2, 3]
    assert win.duration_s == 2.0
    assert trace.window(None, None).arrival_s.tolist() == trace.arrival_s.tolist()
    assert len(trace.window(10.0, 1.0)) == 0
    with pytest.raises(ValueError, match="duration_s"):
        trace.window(0, 0)


def test_speedup_divides_times_and_multiplies_rates() -> None:
    trace = load_trace(FIXTURES / "burstgpt_small.csv", speedup=4.0)
    assert trace.arrival_s.tolist() == [1.25, 11.25, 11.75, 29.5, 30.0]
    base = poisson_daily(3600, 3.0, peak_to_mean=1.0, seed=2)
    fast = base.scale_time(2.0)
    assert fast.duration_s == 1800.0
    assert fast.mean_rate_rps == pytest.approx(2 * base.mean_rate_rps)
    with pytest.raises(ValueError, match="speedup"):
        base.scale_time(0.0)


def test_load_trace_windows_in_file_time_before_speedup() -> None:
    trace = load_trace(FIXTURES / "burstgpt_small.csv", start_s=40, duration_s=80, speedup=2.0)
    # Kept 45, 47, 118 (file seconds), then (t - 40) / 2.
    assert trace.arrival_s.tolist() == [2.5, 3.5, 39.0]
    assert trace.duration_s == 40.0


def test_rate_scale_up_adds_exact_whole_copies_with_jitter() -> None:
    base = load_trace(_need(AZURE_CONV))
    double = base.scale_rate(2.0, seed=1)
    assert len(double) == 2 * len(base)
    assert double.duration_s == base.duration_s
    # The 5-minute rate curve doubles: each bin within 5 % of twice the original.
    _, r1 = base.rate_per_bin(300)
    _, r2 = double.rate_per_bin(300)
    np.testing.assert_allclose(r2[:-1], 2 * r1[:-1], rtol=0.05)
    # Tokens travel with their request: the multiset of prompts doubles.
    assert double.input_tokens.sum() == 2 * base.input_tokens.sum()


def test_rate_scale_fraction_thins_within_binomial_noise() -> None:
    base = poisson_daily(3600, 10.0, peak_to_mean=1.0, seed=4)
    m = len(base)
    for factor in (0.5, 1.5, 2.25):
        scaled = base.scale_rate(factor, seed=9)
        frac = factor - math.floor(factor)
        sigma = math.sqrt(m * frac * (1 - frac))
        # whole copies are exact; the thinned copy is Binomial(m, frac): within 5 sigma
        assert abs(len(scaled) - factor * m) < 5 * sigma + 1, factor


def test_rate_scale_is_seeded() -> None:
    base = poisson_daily(600, 5.0, seed=0)
    a = base.scale_rate(1.7, seed=3)
    b = base.scale_rate(1.7, seed=3)
    c = base.scale_rate(1.7, seed=4)
    np.testing.assert_array_equal(a.arrival_s, b.arrival_s)
    assert not np.array_equal(a.arrival_s, c.arrival_s)


def test_rate_per_bin_counts_every_arrival_including_a_partial_last_bin() -> None:
    trace = _trace([0.1, 0.2, 1.5, 2.9], horizon_s=2.95)
    t, rate = trace.rate_per_bin(1.0)
    assert t.tolist() == [0.0, 1.0, 2.0]
    assert rate.tolist() == [2.0, 1.0, 1.0]


def test_rate_curve_transforms() -> None:
    curve = RateCurve(
        name="c",
        t_s=np.array([0.0, 60.0, 120.0, 180.0]),
        bin_s=60.0,
        rate_rps=np.array([1.0, 2.0, 3.0, 4.0]),
        mean_input_tokens=100.0,
        mean_output_tokens=10.0,
        source="test",
    )
    win = curve.window(60, 120)
    assert win.t_s.tolist() == [0.0, 60.0] and win.rate_rps.tolist() == [2.0, 3.0]
    assert curve.scale_rate(3).rate_rps.tolist() == [3.0, 6.0, 9.0, 12.0]
    fast = curve.scale_time(2)
    assert fast.bin_s == 30.0 and fast.t_s[-1] == 90.0 and fast.rate_rps[0] == 2.0
    assert curve.coarsen(2).rate_rps.tolist() == [1.5, 3.5]


def test_rate_curve_sample_and_from_trace_round_trip() -> None:
    curve = RateCurve(
        name="c",
        t_s=np.arange(10, dtype=np.float64) * 600.0,
        bin_s=600.0,
        rate_rps=np.linspace(1.0, 10.0, 10),
        mean_input_tokens=500.0,
        mean_output_tokens=50.0,
        source="test",
    )
    trace = curve.sample(seed=2)
    expected = curve.rate_rps.sum() * 600  # 33,000
    assert abs(len(trace) - expected) < 5 * math.sqrt(expected)
    back = RateCurve.from_trace(trace, 600.0)
    np.testing.assert_allclose(back.rate_rps, curve.rate_rps, rtol=0.1)
    assert back.mean_input_tokens == pytest.approx(500, rel=0.03)


# --------------------------------------------------------------------------- synthetic


def test_poisson_daily_count_peak_and_phase() -> None:
    trace = poisson_daily(2 * 86400, mean_rps=5.0, peak_to_mean=2.0, seed=1)
    expected = 5.0 * 2 * 86400  # 864,000 over two whole periods
    assert abs(len(trace) - expected) < 5 * math.sqrt(expected)
    t, rate = trace.rate_per_bin(3600)
    assert rate.max() / rate.mean() == pytest.approx(2.0, rel=0.03)
    assert t[np.argmax(rate[:24])] in (13 * 3600.0, 14 * 3600.0)  # peak hour around 14:00
    flat = poisson_daily(3600, 4.0, peak_to_mean=1.0, seed=1)
    assert abs(len(flat) - 14400) < 5 * 120


def test_poisson_daily_supports_sharp_peaks() -> None:
    trace = poisson_daily(86400, mean_rps=1.0, peak_to_mean=6.0, seed=3)
    _, rate = trace.rate_per_bin(600)
    assert rate.max() / rate.mean() == pytest.approx(6.0, rel=0.1)


def test_bursts_alternate_base_and_burst_rates() -> None:
    trace = bursts(1000, base_rps=2.0, burst_rps=50.0, burst_every_s=100, burst_len_s=10, seed=0)
    phase = trace.arrival_s % 100
    in_burst = (phase < 10) & (trace.arrival_s >= 100)
    n_burst = int(in_burst.sum())  # 9 bursts x 10 s x 50 req/s = 4,500
    n_base = len(trace) - n_burst  # (1000 - 90) s x 2 req/s = 1,820
    assert abs(n_burst - 4500) < 5 * math.sqrt(4500)
    assert abs(n_base - 1820) < 5 * math.sqrt(1820)
    with pytest.raises(ValueError, match="burst_len_s"):
        bursts(100, 1, 2, burst_every_s=10, burst_len_s=20)


def test_step_changes_rate_at_the_step() -> None:
    trace = step(600, before_rps=2.0, after_rps=20.0, at_s=300, seed=0)
    before = int((trace.arrival_s < 300).sum())  # 600 expected
    after = len(trace) - before  # 6,000 expected
    assert abs(before - 600) < 5 * math.sqrt(600)
    assert abs(after - 6000) < 5 * math.sqrt(6000)
    assert trace.duration_s == 600.0


def test_mmpp_long_run_rate_and_overdispersion() -> None:
    trace = mmpp(1e6, rates_rps=[0.1, 1.0], mean_sojourn_s=[60.0, 30.0], seed=0)
    # (0.1 x 60 + 1.0 x 30) / (60 + 30) = 0.4 req/s
    assert trace.mean_rate_rps == pytest.approx(0.4, rel=0.03)
    _, rate = trace.rate_per_bin(60)
    counts = rate * 60
    assert counts.var() / counts.mean() > 2.0  # a Poisson process would give ~1
    single = mmpp(1e4, rates_rps=[3.0], mean_sojourn_s=[10.0], seed=0)
    assert abs(len(single) - 3e4) < 5 * math.sqrt(3e4)
    with pytest.raises(ValueError, match="equal length"):
        mmpp(10, [1.0, 2.0], [1.0])


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda s: poisson_daily(3600, 2.0, seed=s), id="poisson_daily"),
        pytest.param(lambda s: bursts(3600, 1.0, 5.0, 600, 60, seed=s), id="bursts"),
        pytest.param(lambda s: mmpp(3600, [1.0, 4.0], [100.0, 50.0], seed=s), id="mmpp"),
        pytest.param(lambda s: step(3600, 1.0, 3.0, 1800, seed=s), id="step"),
    ],
)
def test_generators_are_seeded(make: Callable[[int], Trace]) -> None:
    a, b, c = make(1), make(1), make(2)
    np.testing.assert_array_equal(a.arrival_s, b.arrival_s)
    np.testing.assert_array_equal(a.input_tokens, b.input_tokens)
    assert not np.array_equal(a.arrival_s, c.arrival_s)
    assert np.all(np.diff(a.arrival_s) >= 0) and a.arrival_s[-1] < 3600


def test_token_lengths_match_azure_conv_mean_and_median() -> None:
    tin, tout = AZURE_CONV_TOKENS.sample(200_000, np.random.default_rng(0))
    assert tin.mean() == pytest.approx(1155, rel=0.01)
    assert np.median(tin) == pytest.approx(1020, rel=0.01)
    assert tout.mean() == pytest.approx(211, rel=0.02)
    assert np.median(tout) == pytest.approx(129, rel=0.02)
    assert tin.min() >= 1 and tout.min() >= 1
    with pytest.raises(ValueError, match="median"):
        TokenLengths(mean_input_tokens=10, median_input_tokens=20)
