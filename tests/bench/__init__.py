"""Benchmarks: print measured figures; assert only loose sanity bounds.

`make bench` sets GPU_AUTOSCALER_BENCH=full and runs each benchmark at the size its
BENCHMARKS.md figure was measured at; under `make test` the slow ones run a few iterations,
as a check that the path works.
"""

from __future__ import annotations

import os

FULL: bool = os.environ.get("GPU_AUTOSCALER_BENCH") == "full"
