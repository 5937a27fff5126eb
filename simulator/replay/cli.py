"""`gpu-autoscaler serve-model`, `profile` and `replay`: the GPU-backed replay commands.

    gpu-autoscaler serve-model [--size tiny|small|1b] [--device auto|cpu|cuda] [--dtype auto]
                               [--port 8000] [--max-batch 64] [--max-kv-tokens N]
    gpu-autoscaler profile --endpoint URL | --local [--size ...] [--out profile.json]
                           [--concurrency 1,4,16,64] [--input-lens 128,512,2048]
                           [--output-len 64] [--duration-s 6]
    gpu-autoscaler replay --trace F --endpoint URL [--speedup X] [--start S] [--duration S]
                          [--max-tokens N] [--max-input-tokens N] [--concurrency-limit N]
                          [--json out.json] [--plots DIR]
                          [--compare-sim --profile P --replicas N]

Exit status: 0 done; 1 the endpoint failed (unreachable, malformed answers, every request
failed); 2 bad arguments, unreadable trace or profile, or torch missing where it is needed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# simulator.replay.model_server.MODEL_SIZES' keys (not imported here: it loads FastAPI)
MODEL_SIZE_NAMES = ("tiny", "small", "1b")
EXIT_ENDPOINT = 1
EXIT_USAGE = 2


def _ints(text: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not vals:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return vals


def register(subparsers: Any) -> None:
    """Add `serve-model`, `profile` and `replay` to the gpu-autoscaler command line."""
    s = subparsers.add_parser(
        "serve-model",
        help="serve a random-weight transformer with OpenAI-compatible completions (torch)",
        description=(
            "Reference model server: OpenAI-compatible /v1/completions over a real "
            "continuous-batching engine (random weights, nothing downloaded), vLLM-named "
            "metrics on /metrics. Needs torch (the gpu extra)."
        ),
    )
    s.add_argument("--size", choices=MODEL_SIZE_NAMES, default="tiny")
    s.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (default: auto)")
    s.add_argument(
        "--dtype", default="auto", help="auto (bf16 on CUDA, fp32 on CPU), bf16, fp16 or fp32"
    )
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--max-batch", type=int, default=64, help="sequences running at once")
    s.add_argument(
        "--max-kv-tokens",
        type=int,
        default=None,
        help="KV tokens admission may reserve (default: max batch x context)",
    )
    s.add_argument(
        "--max-batched-tokens",
        type=int,
        default=2048,
        help="tokens per iteration (decode + prompt chunks)",
    )
    s.add_argument(
        "--max-model-len",
        type=int,
        default=None,
        help="prompt + output tokens of one request (default: per size)",
    )
    s.add_argument("--model-name", default=None, help="model id served (default random-SIZE)")
    s.add_argument(
        "--metrics-namespace", default=None, help="value of a `namespace` label on every metric"
    )
    s.add_argument(
        "--metrics-workload", default=None, help="value of a `workload` label on every metric"
    )
    s.add_argument("--seed", type=int, default=0, help="weight initialization seed")
    s.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    s.set_defaults(func=cmd_serve_model)

    p = subparsers.add_parser(
        "profile",
        help="measure an endpoint and fit the simulator's service profile",
        description=(
            "Closed-loop load at a grid of concurrencies and prompt lengths against an "
            "OpenAI-compatible endpoint; least-squares fit of the per-iteration time model; "
            "writes a ServiceProfile JSON for `simulate`/`compare --profile`."
        ),
    )
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--endpoint", help="base URL, e.g. http://127.0.0.1:8000")
    where.add_argument(
        "--local",
        action="store_true",
        help="start the reference server (serve-model) in a child process",
    )
    p.add_argument(
        "--size", choices=MODEL_SIZE_NAMES, default="tiny", help="with --local: model size"
    )
    p.add_argument("--device", default="auto", help="with --local: device")
    p.add_argument("--dtype", default="auto", help="with --local: dtype")
    p.add_argument("--max-batch", type=int, default=64, help="with --local: max batch")
    p.add_argument(
        "--max-batched-tokens",
        type=int,
        default=None,
        help="the engine's tokens per iteration (read from the endpoint when it "
        "reports them; else 8192)",
    )
    p.add_argument(
        "--max-num-seqs",
        type=int,
        default=None,
        help="the engine's max batch (read from the endpoint when reported)",
    )
    p.add_argument(
        "--max-kv-tokens",
        type=int,
        default=None,
        help="the engine's KV capacity (read from the endpoint when reported)",
    )
    p.add_argument("--out", default="profile.json", help="profile JSON to write")
    p.add_argument("--concurrency", type=_ints, default=(1, 4, 16, 64))
    p.add_argument("--input-lens", type=_ints, default=(128, 512, 2048))
    p.add_argument("--output-len", type=int, default=64)
    p.add_argument("--duration-s", type=float, default=6.0, help="measured seconds per point")
    p.add_argument(
        "--warmup-s",
        type=float,
        default=None,
        help="seconds per point before measuring (default min(2, duration/4))",
    )
    p.add_argument(
        "--fit-source",
        choices=("client", "engine"),
        default="client",
        help="client: TTFT/ITL measured by the clients (any endpoint); engine: the "
        "reference server's per-iteration records",
    )
    p.add_argument("--device-name", default=None, help="device recorded in the profile")
    p.add_argument("--model", default=None, help="model id to request and record")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_profile)

    r = subparsers.add_parser(
        "replay",
        help="send a trace open-loop to an endpoint; compare with the simulator",
        description=(
            "Replay a request trace open-loop (each request at its recorded time) against "
            "an OpenAI-compatible endpoint, report TTFT and end-to-end latency, and with "
            "--compare-sim the simulator's numbers for the same slice."
        ),
    )
    r.add_argument("--trace", required=True, help="trace file (Azure, Mooncake, BurstGPT, ...)")
    r.add_argument("--format", default="auto", help="trace format (default: auto-detect)")
    r.add_argument("--endpoint", required=True, help="base URL, e.g. http://127.0.0.1:8000")
    r.add_argument("--speedup", type=float, default=1.0, help="replay X times faster")
    r.add_argument("--start", type=float, default=None, help="window start, seconds")
    r.add_argument("--duration", type=float, default=None, help="window length, seconds")
    r.add_argument("--max-tokens", type=int, default=None, help="cap on output tokens")
    r.add_argument("--max-input-tokens", type=int, default=None, help="cap on prompt tokens")
    r.add_argument(
        "--concurrency-limit",
        type=int,
        default=None,
        help="cap requests in flight (no longer open-loop beyond it)",
    )
    r.add_argument("--timeout-s", type=float, default=600.0, help="per request")
    r.add_argument("--model", default=None, help="model id (default: the endpoint's first)")
    r.add_argument("--json", default=None, help="write the results as JSON here")
    r.add_argument("--plots", default=None, help="write PNG plots into this directory")
    r.add_argument("--plot-prefix", default="", help="prefix of the plot file names")
    r.add_argument(
        "--compare-sim",
        action="store_true",
        help="simulate the same slice with --profile and --replicas",
    )
    r.add_argument(
        "--profile",
        action="append",
        default=None,
        help="service profile JSON (repeat to compare several)",
    )
    r.add_argument("--replicas", type=int, default=1, help="replicas behind the endpoint")
    r.add_argument("--seed", type=int, default=0)
    r.set_defaults(func=cmd_replay)


# ---- command bodies ------------------------------------------------------------------------------


class UsageError(Exception):
    """Bad inputs: printed as one message, exit status 2."""


def _guarded(body: Callable[[argparse.Namespace, Any], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        import logging

        from rich.console import Console

        from simulator.replay.client import EndpointError
        from simulator.replay.model_server import TorchMissing
        from simulator.replay.replay import ReplayError
        from simulator.traces import TraceError

        # one line per HTTP request from httpx would drown the progress lines
        logging.getLogger("httpx").setLevel(logging.WARNING)
        console = Console(stderr=False, highlight=False, soft_wrap=True)
        if not console.is_terminal:  # logs and pipes: room for a column per profile
            console = Console(stderr=False, highlight=False, soft_wrap=True, width=160)
        err = Console(stderr=True, highlight=False, soft_wrap=True)
        try:
            return body(args, console)
        except TorchMissing as e:
            err.print(f"error: {e}", markup=False)
            return EXIT_USAGE
        except (EndpointError, ReplayError) as e:
            err.print(f"error: {e}", markup=False)
            return EXIT_ENDPOINT
        except (UsageError, TraceError, FileNotFoundError, ValueError) as e:
            err.print(f"error: {e}", markup=False)
            return EXIT_USAGE

    return run


def _serve_model(args: argparse.Namespace, console: Any) -> int:
    from simulator.replay.model_server import ServerConfig, require_torch, serve

    require_torch()
    cfg = ServerConfig(
        size=args.size,
        device=args.device,
        dtype=args.dtype,
        host=args.host,
        port=args.port,
        max_batch=args.max_batch,
        max_kv_tokens=args.max_kv_tokens,
        max_batched_tokens=args.max_batched_tokens,
        max_model_len=args.max_model_len,
        model_name=args.model_name,
        namespace=args.metrics_namespace,
        workload=args.metrics_workload,
        seed=args.seed,
        threads=args.threads,
    )
    return serve(cfg, echo=lambda m: console.print(m, markup=False))


def _profile(args: argparse.Namespace, console: Any) -> int:
    from simulator.replay.profiler import LocalServer, ProfileSettings, profile_endpoint

    settings = ProfileSettings(
        concurrency=args.concurrency,
        input_lens=args.input_lens,
        output_len=args.output_len,
        duration_s=args.duration_s,
        warmup_s=args.warmup_s,
        seed=args.seed,
        fit_source=args.fit_source,
        max_num_seqs=args.max_num_seqs,
        max_kv_tokens=args.max_kv_tokens,
        max_batched_tokens=args.max_batched_tokens,
        device=args.device_name,
        model=args.model,
    )

    def say(m: str) -> None:
        console.print(m, markup=False)

    if args.local:
        from simulator.replay.model_server import require_torch

        require_torch()
        server_args = [
            "--size",
            args.size,
            "--device",
            args.device,
            "--dtype",
            args.dtype,
            "--max-batch",
            str(args.max_batch),
        ]
        if args.max_batched_tokens:
            server_args += ["--max-batched-tokens", str(args.max_batched_tokens)]
        with LocalServer(server_args) as srv:
            say(f"local reference server ({args.size}) at {srv.url}")
            prof = asyncio.run(profile_endpoint(srv.url, settings, say))
    else:
        prof = asyncio.run(profile_endpoint(args.endpoint, settings, say))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    prof.save(out)
    f = prof.fit
    say(
        f"fit ({f['source']}): t0 {prof.t0_ms:.3f} ms, a {prof.a_ms_per_seq:.4f} ms/seq, "
        f"b {prof.b_ms_per_1k_kv:.4f} ms/1k KV, g {prof.g_ms_per_prefill_token:.5f} ms/token; "
        f"R^2 {f['r2']:.3f}, max relative error {f['max_rel_err'] * 100:.1f} %"
    )
    if "engine" in f:
        e = f["engine"]
        say(
            f"engine-side check: t0 {e['t0_ms']:.3f}, a {e['a_ms_per_seq']:.4f}, "
            f"b {e['b_ms_per_1k_kv']:.4f}, g {e['g_ms_per_prefill_token']:.5f}; "
            f"R^2 {e['r2']:.3f}"
        )
    say(f"wrote {out}")
    return 0


def _replay(args: argparse.Namespace, console: Any) -> int:
    from rich.table import Table

    from simulator.replay.replay import (
        ReplayError,
        ReplaySettings,
        compare_with_sim,
        comparison_rows,
        prepare_trace,
        replay_trace,
        simulate_slice,
        write_plots,
    )
    from simulator.service import ServiceProfile

    if not Path(args.trace).is_file():
        raise UsageError(f"trace file not found: {args.trace}")
    profiles: list[tuple[str, Any]] = []
    if args.compare_sim:
        if not args.profile:
            raise UsageError("--compare-sim needs --profile (a service profile JSON)")
        if args.replicas < 1:
            raise UsageError(f"--replicas must be >= 1, got {args.replicas}")
        for path in args.profile:
            profiles.append((Path(path).stem, ServiceProfile.load(path)))
    settings = ReplaySettings(
        speedup=args.speedup,
        start_s=args.start,
        duration_s=args.duration,
        max_tokens=args.max_tokens,
        max_input_tokens=args.max_input_tokens,
        concurrency_limit=args.concurrency_limit,
        timeout_s=args.timeout_s,
        model=args.model,
        format=args.format,
        seed=args.seed,
    )
    trace = prepare_trace(args.trace, settings)

    def say(m: str) -> None:
        console.print(m, markup=False)

    say(
        f"replaying {len(trace)} requests of {trace.name} over {trace.duration_s:.1f} s "
        f"({trace.mean_rate_rps:.2f} req/s) against {args.endpoint}"
    )
    for note in trace.notes:
        say(f"note: {note}")
    result = asyncio.run(replay_trace(trace, args.endpoint, settings, say))
    summ = result.summary()
    if summ["ok"] == 0:
        raise ReplayError(
            f"all {summ['requests']} requests failed; first error: {summ['first_errors'][0]}"
        )
    runs = []
    for name, prof in profiles:
        run = simulate_slice(trace, prof, args.replicas, seed=args.seed)
        runs.append((name, run))
        result.sim[name] = compare_with_sim(result, run, name)

    t = Table(
        title=f"{trace.name}: {summ['ok']} ok, {summ['errors']} failed, "
        f"send lag p50 {summ['send_lag_s']['p50'] * 1e3:.2f} ms / p99 "
        f"{summ['send_lag_s']['p99'] * 1e3:.2f} ms / max "
        f"{summ['send_lag_s']['max'] * 1e3:.2f} ms"
    )
    t.add_column("metric")
    t.add_column("replay ms", justify="right")
    for name, _ in profiles:
        t.add_column(f"sim ms ({name})", justify="right")
        t.add_column("error", justify="right")
    if profiles:
        for row in comparison_rows(result):
            t.add_row(*row)
    else:
        for metric, key in (("TTFT", "ttft_s"), ("e2e", "e2e_s"), ("ITL", "itl_s")):
            st = summ[key]
            for q in ("p50", "p95", "p99"):
                t.add_row(f"{q.upper()} {metric}", f"{st[q] * 1e3:.1f}")
    console.print(t)
    if summ["errors"]:
        say(f"{summ['errors']} request(s) failed, e.g. {summ['first_errors'][0]}")
    if args.json:
        say(f"wrote {result.write_json(args.json)}")
    if args.plots:
        for p in write_plots(result, runs, args.plots, prefix=args.plot_prefix):
            say(f"wrote {p}")
    return 0


cmd_serve_model = _guarded(_serve_model)
cmd_profile = _guarded(_profile)
cmd_replay = _guarded(_replay)


def main(argv: Sequence[str] | None = None) -> int:
    """Run these subcommands without the rest of the CLI (tests, `python -m`)."""
    parser = argparse.ArgumentParser(prog="gpu-autoscaler")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
