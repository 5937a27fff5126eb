"""`gpu-autoscaler simulate` / `compare` end to end, and their error exits."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from autoscaler.config import dump_workloads
from simulator.cli import default_workload, main

REPO = Path(__file__).resolve().parents[1]
CLI = REPO / ".venv" / "bin" / "gpu-autoscaler"
CONV = REPO.parent / "shared" / "traces" / "AzureLLMInferenceTrace_conv.csv"


def run_cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    exe = [str(CLI)] if CLI.exists() else [sys.executable, "-m", "autoscaler.cli"]
    return subprocess.run(
        [*exe, *args], cwd=cwd, capture_output=True, text=True, timeout=240, check=False
    )


@pytest.mark.skipif(not CONV.exists(), reason="shared Azure conversation trace not present")
def test_compare_end_to_end_on_a_short_slice(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    plots = tmp_path / "plots"
    proc = run_cli(
        "compare",
        "--trace",
        "../shared/traces/AzureLLMInferenceTrace_conv.csv",
        "--duration",
        "300",
        "--json",
        str(out),
        "--plots",
        str(plots),
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert set(data["oracle"]) >= {"gpu_hours", "cost_usd"}
    assert data["oracle"]["gpu_hours"] > 0
    # the on-demand oracle has the fewest GPU-hours; the cheapest one may boot spot instead
    assert data["oracle_on_demand"]["gpu_hours"] <= data["oracle"]["gpu_hours"] + 1e-9
    assert data["oracle_on_demand"]["cost_usd"] >= data["oracle"]["cost_usd"] - 1e-9
    names = [p["name"] for p in data["policies"]]
    assert names == ["predictive", "hpa", "keda", "kpa", "static"]
    keys = {
        "name",
        "requests",
        "dropped",
        "slo_attainment",
        "p50_latency_s",
        "p95_latency_s",
        "p99_latency_s",
        "gpu_hours",
        "cost_usd",
        "cost_per_1k_requests_usd",
        "cost_over_oracle",
        "scale_events",
    }
    for p in data["policies"]:
        assert keys <= set(p)
        # the same 300 s of the trace for every policy
        assert p["requests"] == data["policies"][0]["requests"] > 1000
        assert p["cost_over_oracle"] >= 1.0 or p["slo_attainment"] < 95.0
    assert sorted(f.name for f in plots.iterdir()) == [
        "cost_vs_slo.png",
        "latency_cdf.png",
        "timeline.png",
    ]
    assert "predictive" in proc.stdout and "x oracle" in proc.stdout


@pytest.mark.skipif(not CONV.exists(), reason="shared Azure conversation trace not present")
def test_simulate_reads_a_spec_file(tmp_path: Path) -> None:
    w = default_workload("chat", max_replicas=7)
    spec = tmp_path / "spec.yaml"
    spec.write_text(dump_workloads([w]))
    out = tmp_path / "one.json"
    code = main(
        [
            "simulate",
            "--trace",
            str(CONV),
            "--duration",
            "120",
            "--policy",
            "hpa",
            "--config",
            str(spec),
            "--json",
            str(out),
        ]
    )
    assert code == 0
    data = json.loads(out.read_text())
    assert [p["name"] for p in data["policies"]] == ["hpa"]
    assert data["workload"] == "default/chat"


def test_broken_rows_are_counted_with_line_numbers(tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"
    rows = ["TIMESTAMP,ContextTokens,GeneratedTokens"]
    rows += [f"2023-11-16 18:00:{s:02d}.0000000,500,50" for s in range(0, 40)]
    rows[5] = "garbage"  # line 6
    rows[9] = "2023-11-16 18:00:08.0000000,x,50"  # line 10
    trace.write_text("\n".join(rows) + "\n")
    proc = run_cli("simulate", "--trace", str(trace), "--policy", "static")
    assert proc.returncode == 0, proc.stderr
    assert "skipped 2 broken row(s)" in proc.stdout
    assert "lines 6, 10" in proc.stdout


@pytest.mark.parametrize(
    ("make", "message"),
    [
        pytest.param(lambda d: ["--trace", str(d / "missing.csv")], "not found", id="no-trace"),
        pytest.param(
            lambda d: ["--trace", str(CONV), "--config", str(d / "missing.yaml")],
            "cannot read",
            id="no-spec",
        ),
        pytest.param(
            lambda d: ["--trace", str(CONV), "--config", str(d / "bad.yaml")],
            "max_replicas",
            id="invalid-spec",
        ),
        pytest.param(
            lambda d: ["--trace", str(d / "empty.csv")],
            "no usable",
            id="empty-trace",
        ),
    ],
)
def test_errors_exit_2_with_one_message(tmp_path: Path, make: object, message: str) -> None:
    bad = default_workload("chat").spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    bad["policy"]["max_replicas"] = 0
    (tmp_path / "bad.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "gpuautoscaler.io/v1alpha1",
                "kind": "AutoscalingPolicy",
                "metadata": {"name": "chat", "namespace": "default"},
                "spec": bad,
            }
        )
    )
    (tmp_path / "empty.csv").write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n")
    args = make(tmp_path)  # type: ignore[operator]
    proc = run_cli("compare", *args, "--duration", "60")
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_unknown_policy_in_the_list_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["compare", "--trace", str(CONV), "--policies", "hpa,nope"])
    assert code == 2
    assert "nope" in capsys.readouterr().err
