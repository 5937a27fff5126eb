"""The GPU service model: arithmetic, the performance.md 3.4 anchors, profile files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from simulator.service import PROFILES_DIR, ServiceProfile

DEFAULT = ServiceProfile.default()
FP8 = ServiceProfile.load(PROFILES_DIR / "llama3-8b-fp8-h100.json")
CONV = (1155, 211)  # azure-conv mean input / output tokens
CODE = (2048, 28)  # azure-code


def test_iteration_ms_is_the_affine_model() -> None:
    # 7.0 + 0.020*64 + 0.065*(80_000/1000) + 0.028*1155 = 7 + 1.28 + 5.2 + 32.34
    assert DEFAULT.iteration_ms(64, 80_000, 1155) == pytest.approx(45.82)
    # an empty iteration costs t0
    assert DEFAULT.iteration_ms(0, 0, 0) == pytest.approx(7.0)
    # each term is linear in its count
    d = DEFAULT.iteration_ms(2, 3000, 10) - DEFAULT.iteration_ms(1, 2000, 5)
    assert d == pytest.approx(0.020 + 0.065 + 0.028 * 5)


@pytest.mark.parametrize(
    ("profile", "tokens", "c", "itl_ms", "rps"),
    [
        # performance.md 3.4, BF16 azure-conv table
        pytest.param(DEFAULT, CONV, 1, 7.3, 0.64, id="bf16-conv-c1"),
        pytest.param(DEFAULT, CONV, 16, 11.1, 6.7, id="bf16-conv-c16"),
        pytest.param(DEFAULT, CONV, 32, 15.2, 9.9, id="bf16-conv-c32"),
        pytest.param(DEFAULT, CONV, 64, 23.3, 12.9, id="bf16-conv-c64"),
        pytest.param(DEFAULT, CONV, 96, 31.5, 14.4, id="bf16-conv-c96"),
        pytest.param(DEFAULT, CONV, 128, 39.7, 15.2, id="bf16-conv-c128"),
        pytest.param(DEFAULT, CONV, 256, 72.3, 16.7, id="bf16-conv-c256"),
        # BF16 azure-code table (prefill-bound)
        pytest.param(DEFAULT, CODE, 1, 9.2, 3.1, id="bf16-code-c1"),
        pytest.param(DEFAULT, CODE, 16, 42.0, 12.8, id="bf16-code-c16"),
        pytest.param(DEFAULT, CODE, 64, 148.0, 15.2, id="bf16-code-c64"),
        pytest.param(DEFAULT, CODE, 128, 289.0, 15.7, id="bf16-code-c128"),
        # FP8 azure-conv rows
        pytest.param(FP8, CONV, 64, 13.7, 21.9, id="fp8-conv-c64"),
        pytest.param(FP8, CONV, 128, 23.1, 26.1, id="fp8-conv-c128"),
    ],
)
def test_steady_state_reproduces_the_reference_tables(
    profile: ServiceProfile, tokens: tuple[int, int], c: int, itl_ms: float, rps: float
) -> None:
    s = profile.steady_state(c, *tokens)
    assert s.itl_ms == pytest.approx(itl_ms, rel=0.02)
    assert s.rps == pytest.approx(rps, rel=0.03)
    assert s.out_tps == pytest.approx(s.rps * tokens[1])


def _closed_loop(
    profile: ServiceProfile, c: int, i_tok: int, o_tok: int, rounds: int
) -> tuple[float, float]:
    """Per-iteration stepping of one replica with c requests always in flight: a finished
    request is replaced by a new one that prefills in the next iteration. Returns the mean
    ITL (ms) of completed requests and the completion rate (req/s)."""
    # stagger the slots evenly over one request lifetime (o_tok iterations)
    rem = np.round(np.arange(c) * o_tok / c).astype(np.int64)  # 0 = prefill next iteration
    ctx = np.where(rem > 0, i_tok + o_tok - rem, 0).astype(np.float64)
    first = np.zeros(c)
    t = 0.0
    itls, done_t = [], []
    for _ in range(rounds * o_tok):
        join = rem == 0
        dec = ~join
        dur = profile.iteration_ms(int(dec.sum()), float(ctx[dec].sum()), int(join.sum()) * i_tok)
        t += dur
        rem[dec] -= 1
        ctx[dec] += 1
        fin = dec & (rem == 0)
        itls.extend((t - first[fin]) / (o_tok - 1))
        done_t.extend([t] * int(fin.sum()))
        first[join] = t
        rem[join] = o_tok - 1
        ctx[join] = i_tok + 1
    done = np.asarray(done_t)
    warm = done > done[-1] / 3  # skip the start-up third
    rate = (warm.sum() - 1) / (done[warm][-1] - done[warm][0]) * 1e3
    return float(np.mean(np.asarray(itls)[warm])), float(rate)


@pytest.mark.parametrize(
    ("c", "itl_ms", "rps"),
    [
        pytest.param(16, 11.1, 6.7, id="c16"),
        pytest.param(64, 23.3, 12.9, id="c64"),
        pytest.param(128, 39.7, 15.2, id="c128"),
    ],
)
def test_closed_loop_iteration_stepping_matches_the_conv_table(
    c: int, itl_ms: float, rps: float
) -> None:
    itl, rate = _closed_loop(DEFAULT, c, *CONV, rounds=6)
    assert itl == pytest.approx(itl_ms, rel=0.03)
    # closed loop: a finished request's successor joins at once (no residual wait), so it
    # runs a little faster than the table's open-loop TTFT allows
    assert rate == pytest.approx(rps, rel=0.04)


def test_capacity_per_replica_at_slo_matches_the_reference() -> None:
    # chat: ITL <= 25 ms -> about 64 streams, about 13 req/s
    assert DEFAULT.capacity_rps(*CONV, itl_slo_ms=25) == pytest.approx(13.0, rel=0.05)
    # chat, strict: ITL <= 15 ms -> about 32 streams, about 10 req/s
    assert DEFAULT.capacity_rps(*CONV, itl_slo_ms=15) == pytest.approx(10.0, rel=0.05)
    # batch: saturation at 256 sequences, 16.7 req/s
    assert DEFAULT.capacity_rps(*CONV) == pytest.approx(16.7, rel=0.02)
    # code saturates near 16 req/s (TensorRT-LLM-like prefill bound)
    assert DEFAULT.capacity_rps(*CODE) == pytest.approx(16.0, rel=0.05)
    # FP8 code saturates at about 26.5 req/s
    assert FP8.capacity_rps(*CODE) == pytest.approx(26.5, rel=0.03)


def test_capacity_shrinks_with_tighter_targets_and_reaches_zero() -> None:
    caps = [DEFAULT.capacity_rps(*CONV, itl_slo_ms=x) for x in (100, 40, 25, 15, 10)]
    assert caps == sorted(caps, reverse=True)
    assert caps[0] == pytest.approx(DEFAULT.capacity_rps(*CONV))  # not binding
    # ITL(1) = 7.3 ms: a 7 ms target cannot be met
    assert DEFAULT.capacity_rps(*CONV, itl_slo_ms=7.0) == 0.0
    # TTFT_min(1) = 1.5*7.3 + 32.3 = 43 ms
    assert DEFAULT.capacity_rps(*CONV, ttft_slo_s=0.04) == 0.0
    assert 0 < DEFAULT.capacity_rps(*CONV, ttft_slo_s=0.06) < DEFAULT.capacity_rps(*CONV)


def test_kv_capacity_binds_for_long_requests() -> None:
    # 400k KV / (3000 + 1000) tokens reserved = 100 < 256 sequences
    assert DEFAULT.max_concurrency(3000, 1000) == pytest.approx(100.0)
    expect = DEFAULT.steady_state(100, 3000, 1000).rps
    assert DEFAULT.capacity_rps(3000, 1000) == pytest.approx(expect)


@pytest.mark.parametrize("c", [1.0, 10.0, 64.0, 200.0])
def test_concurrency_for_rps_inverts_steady_state(c: float) -> None:
    rps = DEFAULT.steady_state(c, *CONV).rps
    assert DEFAULT.concurrency_for_rps(rps, *CONV) == pytest.approx(c, rel=1e-9)


def test_concurrency_for_rps_is_infinite_beyond_the_asymptote() -> None:
    assert DEFAULT.concurrency_for_rps(1e6, *CONV) == float("inf")
    assert DEFAULT.concurrency_for_rps(0.0, *CONV) == 0.0


def test_profile_json_round_trip(tmp_path: Path) -> None:
    p = ServiceProfile(
        name="x",
        device="1xH100",
        model="m",
        dtype="bf16",
        date="2026-01",
        t0_ms=5.0,
        a_ms_per_seq=0.01,
        b_ms_per_1k_kv=0.05,
        g_ms_per_prefill_token=0.02,
        max_num_seqs=128,
        raw_points=({"batch": 8, "itl_ms": 5.5},),
        fit={"r2": 0.99},
    )
    path = tmp_path / "p.json"
    p.save(path)
    assert ServiceProfile.load(path) == p
    assert ServiceProfile.from_dict(json.loads(path.read_text())) == p


def test_committed_profiles_load() -> None:
    files = sorted(PROFILES_DIR.glob("*.json"))
    assert len(files) >= 2
    loaded = {ServiceProfile.load(f).name: ServiceProfile.load(f) for f in files}
    assert loaded["llama3-8b-bf16-h100"] == DEFAULT


def test_bad_profile_json_names_the_file_and_every_bad_field(tmp_path: Path) -> None:
    d = DEFAULT.to_dict()
    del d["t0_ms"]  # missing
    d["a_ms_per_seq"] = -1.0  # negative
    d["max_num_seqs"] = 2.5  # not an integer
    d["b_ms_per_1k_kv"] = "fast"  # not a number
    d["colour"] = "red"  # unknown
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(d))
    with pytest.raises(ValueError) as e:
        ServiceProfile.load(path)
    msg = str(e.value)
    assert str(path) in msg
    for name in ("t0_ms", "a_ms_per_seq", "max_num_seqs", "b_ms_per_1k_kv", "colour"):
        assert name in msg
    assert "g_ms_per_prefill_token" not in msg  # a good field is not blamed


def test_invalid_json_and_missing_file_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="broken.json.*not valid JSON"):
        ServiceProfile.load(path)
    with pytest.raises(ValueError, match="absent.json"):
        ServiceProfile.load(tmp_path / "absent.json")
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="broken.json.*JSON object"):
        ServiceProfile.load(path)


def test_constructor_rejects_a_zero_iteration_time() -> None:
    with pytest.raises(ValueError, match="t0_ms"):
        ServiceProfile("x", "d", "m", "bf16", "2026", 0.0, 0.0, 0.0, 0.0)


def test_bad_token_means_are_rejected() -> None:
    with pytest.raises(ValueError, match="mean_output_tokens"):
        DEFAULT.capacity_rps(100, 0)
    with pytest.raises(ValueError, match="mean_input_tokens"):
        DEFAULT.steady_state(4, -1, 10)
