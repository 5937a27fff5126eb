"""GPU-backed replay: a reference model server, a profiler that fits the simulator's service
model to a live endpoint, and an open-loop trace replayer that checks the simulator against it.

- `simulator.replay.model_server`: OpenAI-compatible completions over a real continuous-batching
  engine (`simulator.replay.model`, torch) with vLLM-named Prometheus metrics;
- `simulator.replay.profiler`: closed-loop load at a grid of concurrencies and prompt lengths,
  least-squares fit of the per-iteration time model, a `ServiceProfile` JSON;
- `simulator.replay.replay`: a trace sent open-loop at its recorded times, per-request TTFT and
  end-to-end latency, and the simulator's numbers for the same slice;
- `simulator.replay.cli`: the `serve-model`, `profile` and `replay` subcommands.

torch is needed only by the model server (the ``gpu`` extra); everything else runs without it.
"""
