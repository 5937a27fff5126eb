#!/usr/bin/env bash
# gpu_check.sh: profile the reference model server on this machine's GPU, replay a 2-minute
# slice of each Azure trace against it, and compare the replay with the simulator.
#
#   bash scripts/gpu_check.sh [--traces DIR] [--out DIR] [--size 1b] [--dtype bf16]
#                             [--start 600] [--duration 120] [--speedup 1]
#                             [--profile-duration 5] [--cpu-smoke]
#   bash scripts/gpu_check.sh --fetch-wheels      # on a machine with PyPI access (see below)
#
# Steps (about 6 minutes on one H100/H200 with the defaults; budget 8):
#   1. start `serve-model --size 1b --device cuda --dtype bf16` (random weights) on 127.0.0.1;
#   2. `profile` it (concurrency 1,4,16,64 x prompts 128,512,2048 x 64 output tokens) and
#      write the profile to simulator/profiles/<device>-<model>.json (and to --out); an
#      engine-fit variant (fit from the server's own iteration records) goes to --out;
#   3. `replay` --duration seconds from --start of AzureLLMInferenceTrace_conv.csv and
#      AzureLLMInferenceTrace_code.csv (in --traces) open-loop with --compare-sim against
#      both profiles, 1 replica;
#   4. write summary.json and summary.md (a table for BENCHMARKS.md) into --out and print it.
#      Goal: simulator P95 TTFT within 5 % of the replay.
#
# Nothing is installed from the network. Python is $PYTHON, else .venv/bin/python, else
# python3; torch must already be there (a GPU machine's image has it). Packages it lacks can
# travel as wheels in .whl/ (ignored by git): `--fetch-wheels` downloads the ones a CUDA
# image usually lacks (FastAPI, uvicorn, pydantic, APScheduler and their dependencies) for
# CPython 3.12 / manylinux x86-64; when .whl/ holds wheels they are installed with
# `pip --no-index` into a private directory when a needed module is missing.
#
# Traces: --traces DIR must hold AzureLLMInferenceTrace_{conv,code}.csv (copy them from
# ../shared/traces into the ignored out/traces first when the repository travels without
# ../shared). Without --traces: ../shared/traces when present, else the gzip copies bundled
# in simulator/data (the same rows).
#
# --cpu-smoke runs the same pipeline with the tiny model on the CPU in about two minutes
# (short windows, capped lengths), without touching simulator/profiles: a check of the
# script itself on a machine without a GPU.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

WHEELS=(
  fastapi==0.165.0 starlette==1.10.0 uvicorn==0.54.0 pydantic==2.14.4 pydantic-core==2.50.5
  annotated-types==0.8.0 annotated-doc==0.0.7 typing-inspection==0.4.5
  typing-extensions==4.16.0 opentelemetry-api==1.45.2 apscheduler==3.11.3 tzlocal==5.4.5
)

TRACES=""
OUT_DIR="out/gpu-check"
SIZE="1b"
DTYPE="bf16"
DEVICE="cuda"
START=600
DURATION=120
SPEEDUP=1
PROFILE_DURATION=5
CONCURRENCY="1,4,16,64"
INPUT_LENS="128,512,2048"
OUTPUT_LEN=64
MAX_INPUT=7000
MAX_OUTPUT=1024
MAX_MODEL_LEN=8192
SMOKE=0
FETCH=0

usage() { sed -n '2,35p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --traces) TRACES="$2"; shift 2 ;;
    --out) OUT_DIR="$2"; shift 2 ;;
    --size) SIZE="$2"; shift 2 ;;
    --dtype) DTYPE="$2"; shift 2 ;;
    --start) START="$2"; shift 2 ;;
    --duration) DURATION="$2"; shift 2 ;;
    --speedup) SPEEDUP="$2"; shift 2 ;;
    --profile-duration) PROFILE_DURATION="$2"; shift 2 ;;
    --cpu-smoke) SMOKE=1; shift ;;
    --fetch-wheels) FETCH=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

if [[ -n "${PYTHON:-}" ]]; then PY="$PYTHON"
elif [[ -x .venv/bin/python ]]; then PY=".venv/bin/python"
else PY="python3"; fi

if [[ $FETCH == 1 ]]; then
  mkdir -p .whl
  "$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d .whl "${WHEELS[@]}"
  echo "wheels in .whl/ ($(du -sh .whl | cut -f1)): $(ls .whl | wc -l) files"
  exit 0
fi

if [[ $SMOKE == 1 ]]; then
  SIZE="tiny"; DTYPE="fp32"; DEVICE="cpu"; DURATION=20; PROFILE_DURATION=1.5
  CONCURRENCY="1,4,8"; INPUT_LENS="32,128"; OUTPUT_LEN=16
  MAX_INPUT=256; MAX_OUTPUT=32; MAX_MODEL_LEN=512
fi

# -- packages ---------------------------------------------------------------------------------
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
missing_modules() {
  "$PY" - <<'EOF'
import importlib.util
need = ["torch", "fastapi", "uvicorn", "pydantic", "httpx", "prometheus_client", "numpy",
        "scipy", "pandas", "matplotlib", "rich", "yaml", "apscheduler"]
print(" ".join(m for m in need if importlib.util.find_spec(m) is None))
EOF
}
missing=$(missing_modules)
if [[ -n "$missing" ]] && compgen -G ".whl/*.whl" > /dev/null; then
  # carried wheels, only when something is missing (they are built for the GPU image's Python)
  SITE="${TMPDIR:-/tmp}/gpu-check-site"
  echo "== installing carried wheels from .whl/ into $SITE (missing: $missing)"
  "$PY" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" .whl/*.whl
  export PYTHONPATH="$ROOT:$SITE${PYTHONPATH#"$ROOT"}"
  missing=$(missing_modules)
fi
if [[ -n "$missing" ]]; then
  echo "gpu_check.sh: $PY lacks: $missing" >&2
  echo "  torch: use the machine's own (pip install 'gpu-autoscaler[gpu]' where there is a" >&2
  echo "  network); the others: run 'bash scripts/gpu_check.sh --fetch-wheels' where PyPI is" >&2
  echo "  reachable and carry .whl/ along (docs/gpu-replay.md)." >&2
  exit 2
fi

if [[ $SMOKE == 0 ]]; then
  if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check.sh: torch sees no CUDA device (use --cpu-smoke to check the script on CPU)" >&2
    exit 2
  fi
fi

# -- traces -----------------------------------------------------------------------------------
trace_file() {  # kind -> path
  local kind="$1" d
  for d in "$TRACES" "$ROOT/../shared/traces"; do
    if [[ -n "$d" && -f "$d/AzureLLMInferenceTrace_${kind}.csv" ]]; then
      echo "$d/AzureLLMInferenceTrace_${kind}.csv"; return
    fi
  done
  if [[ -n "$TRACES" ]]; then
    echo "gpu_check.sh: $TRACES/AzureLLMInferenceTrace_${kind}.csv not found" >&2; return 1
  fi
  echo "$ROOT/simulator/data/azure_${kind}_2023.csv.gz"
}
CONV=$(trace_file conv)
CODE=$(trace_file code)

mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
CLI=("$PY" -m simulator.replay.cli)

# -- 1. the server ----------------------------------------------------------------------------
PORT=$("$PY" -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
URL="http://127.0.0.1:$PORT"
T_START=$(date +%s)
echo "== starting serve-model --size $SIZE --device $DEVICE --dtype $DTYPE on $URL"
"${CLI[@]}" serve-model --size "$SIZE" --device "$DEVICE" --dtype "$DTYPE" --port "$PORT" \
  --max-batch 64 --max-batched-tokens 2048 --max-model-len "$MAX_MODEL_LEN" \
  > "$OUT_DIR/server.log" 2>&1 &
SERVER_PID=$!
cleanup() {
  if kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -INT "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
  fi
}
trap cleanup EXIT

"$PY" - "$URL" "$SERVER_PID" <<'EOF'
import os, sys, time
import httpx
url, pid = sys.argv[1], int(sys.argv[2])
deadline = time.monotonic() + 300
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit("gpu_check.sh: the model server exited; see server.log")
    try:
        if httpx.get(url + "/health", timeout=2).status_code == 200:
            sys.exit(0)
    except httpx.HTTPError:
        pass
    time.sleep(0.5)
sys.exit("gpu_check.sh: the model server did not come up within 300 s; see server.log")
EOF
cat "$OUT_DIR/server.log"
echo "   up after $(( $(date +%s) - T_START )) s"

# -- 2. profile -------------------------------------------------------------------------------
echo "== profile"
"${CLI[@]}" profile --endpoint "$URL" --out "$OUT_DIR/profile.json" \
  --concurrency "$CONCURRENCY" --input-lens "$INPUT_LENS" --output-len "$OUTPUT_LEN" \
  --duration-s "$PROFILE_DURATION"
PROFILES=$("$PY" - "$OUT_DIR" "$SMOKE" <<'EOF'
import json, sys
from pathlib import Path
from simulator.service import PROFILES_DIR, ServiceProfile
out, smoke = Path(sys.argv[1]), sys.argv[2] == "1"
prof = ServiceProfile.load(out / "profile.json")
main = out / f"{prof.name}.json"
prof.save(main)
if not smoke:
    prof.save(PROFILES_DIR / f"{prof.name}.json")
paths = [str(main)]
eng = prof.fit.get("engine")
if eng:
    d = prof.to_dict()
    d.update({k: eng[k] for k in ("t0_ms", "a_ms_per_seq", "b_ms_per_1k_kv",
                                  "g_ms_per_prefill_token")})
    d["fit"] = {**d["fit"], "source": "engine", "r2": eng["r2"],
                "max_rel_err": eng["max_rel_err"], "by_kind": eng["by_kind"]}
    d["name"] = prof.name + "-engine-fit"
    d["source"] = prof.source + "; constants from the server's iteration records"
    p = out / f"{prof.name}-engine-fit.json"
    ServiceProfile.from_dict(d).save(p)
    paths.append(str(p))
(out / "profile.json").unlink()
print(" ".join(paths))
EOF
)
PROFILE_ARGS=()
for p in $PROFILES; do PROFILE_ARGS+=(--profile "$p"); done
echo "   profiles: $PROFILES"

# -- 3. replays -------------------------------------------------------------------------------
for kind in conv code; do
  tr=$([[ $kind == conv ]] && echo "$CONV" || echo "$CODE")
  echo "== replay $kind: $tr from ${START} s for ${DURATION} s (speedup $SPEEDUP)"
  "${CLI[@]}" replay --trace "$tr" --endpoint "$URL" --start "$START" --duration "$DURATION" \
    --speedup "$SPEEDUP" --max-input-tokens "$MAX_INPUT" --max-tokens "$MAX_OUTPUT" \
    --compare-sim "${PROFILE_ARGS[@]}" --replicas 1 --json "$OUT_DIR/replay-$kind.json" \
    --plots "$OUT_DIR" --plot-prefix "$kind-"
done

# -- 4. summary -------------------------------------------------------------------------------
"$PY" - "$OUT_DIR" "$(( $(date +%s) - T_START ))" <<'EOF'
import json, sys
from pathlib import Path
from simulator.replay.replay import markdown_summary
from simulator.service import ServiceProfile
out, wall = Path(sys.argv[1]), int(sys.argv[2])
reps = [json.loads((out / f"replay-{k}.json").read_text()) for k in ("conv", "code")]
profs = [ServiceProfile.load(p) for p in sorted(out.glob("*.json"))
         if not p.name.startswith(("replay-", "summary"))]
rows = []
for r in reps:
    for name, c in r["compare"].items():
        err = c["p95_ttft_rel_err"]
        rows.append({"trace": r["trace"], "profile": name, "requests": r["summary"]["ok"],
                     "failed": r["summary"]["errors"],
                     "p95_ttft_replay_s": c["p95_ttft_replay_s"],
                     "p95_ttft_sim_s": c["p95_ttft_sim_s"], "p95_ttft_rel_err": err,
                     "within_5_percent": err is not None and abs(err) <= 0.05,
                     "send_lag_p99_s": r["summary"]["send_lag_s"]["p99"]})
fits = {p.name: {"device": p.device, "model": p.model, "dtype": p.dtype,
                 "t0_ms": p.t0_ms, "a_ms_per_seq": p.a_ms_per_seq,
                 "b_ms_per_1k_kv": p.b_ms_per_1k_kv,
                 "g_ms_per_prefill_token": p.g_ms_per_prefill_token,
                 "r2": p.fit.get("r2"), "max_rel_err": p.fit.get("max_rel_err")}
        for p in profs}
(out / "summary.json").write_text(json.dumps({"wall_s": wall, "profiles": fits,
                                              "comparisons": rows}, indent=2) + "\n")
lines = ["| profile | device | t0 ms | a ms/seq | b ms/1k KV | g ms/token | fit R^2 |",
         "|---|---|---:|---:|---:|---:|---:|"]
for name, f in fits.items():
    r2 = "-" if f["r2"] is None else f"{f['r2']:.3f}"
    lines.append(f"| {name} | {f['device']} | {f['t0_ms']:.3f} | {f['a_ms_per_seq']:.4f} | "
                 f"{f['b_ms_per_1k_kv']:.4f} | {f['g_ms_per_prefill_token']:.5f} | {r2} |")
md = "\n".join(lines) + "\n\n" + markdown_summary(reps) + "\n"
(out / "summary.md").write_text(md)
print(md)
ok = [r for r in rows if r["within_5_percent"]]
print(f"P95 TTFT within 5 %: {len(ok)} of {len(rows)} (trace, profile) pairs; {wall} s in all")
EOF
echo "results in $OUT_DIR"
