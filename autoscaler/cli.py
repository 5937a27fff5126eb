"""`gpu-autoscaler` command line: one entry point, subcommands registered by their modules."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

# module -> it defines `register(subparsers)` adding its subcommands. Imported lazily so
# `gpu-autoscaler --help` stays fast and optional parts (torch) load only when used.
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "autoscaler.service",  # run
    "autoscaler.keda.cli",  # keda-check
    "simulator.cli",  # simulate, compare, sweep
    "simulator.replay.cli",  # serve-model, profile, replay
    "autoscaler.crdgen",  # crd
    "simulator.sweep",  # sweep
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpu-autoscaler",
        description="Predictive, SLO-aware autoscaler for GPU inference on Kubernetes.",
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name is not None and (name == e.name or name.startswith(e.name + ".")):
                continue  # that part is not installed in this build
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
