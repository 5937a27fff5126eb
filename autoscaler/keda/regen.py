"""Regenerate the Python stubs in `autoscaler/keda/gen/` from `externalscaler.proto`.

    python -m autoscaler.keda.regen            # rewrite gen/
    python -m autoscaler.keda.regen --check    # exit 1 when gen/ differs from a fresh run

Runs grpcio-tools' bundled protoc (`--python_out`, `--grpc_python_out`, `--pyi_out`), then
makes the generated `import externalscaler_pb2` package-relative so the stubs import as
`autoscaler.keda.gen`. The output depends on the grpcio-tools version (the stubs record it
in `GRPC_GENERATED_VERSION` and refuse an older grpcio at import time).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

KEDA_DIR = Path(__file__).resolve().parent
PROTO = KEDA_DIR / "externalscaler.proto"
GEN_DIR = KEDA_DIR / "gen"
GENERATED = ("externalscaler_pb2.py", "externalscaler_pb2.pyi", "externalscaler_pb2_grpc.py")
INIT_TEXT = '"""Generated from ../externalscaler.proto by `python -m autoscaler.keda.regen`."""\n'

_ABSOLUTE_IMPORT = "import externalscaler_pb2 as externalscaler__pb2"
_RELATIVE_IMPORT = "from . import externalscaler_pb2 as externalscaler__pb2"


def generate(out_dir: Path) -> dict[str, str]:
    """Run protoc into `out_dir` and return {file name: text} of the fixed-up stubs.

    Raises RuntimeError with protoc's exit code when generation fails.
    """
    from grpc_tools import protoc  # dev dependency; imported only when regenerating

    args = [
        "grpc_tools.protoc",
        f"-I{KEDA_DIR}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--pyi_out={out_dir}",
        str(PROTO),
    ]
    rc = protoc.main(args)
    if rc != 0:
        raise RuntimeError(f"protoc failed with exit code {rc} on {PROTO}")
    files: dict[str, str] = {}
    for name in GENERATED:
        text = (out_dir / name).read_text()
        if name.endswith("_grpc.py"):
            if _ABSOLUTE_IMPORT not in text:
                raise RuntimeError(f"{name}: expected line {_ABSOLUTE_IMPORT!r} not found")
            text = text.replace(_ABSOLUTE_IMPORT, _RELATIVE_IMPORT)
        files[name] = text
    files["__init__.py"] = INIT_TEXT
    return files


def fresh() -> dict[str, str]:
    """The stubs a regeneration would write now, generated in a temporary directory."""
    with tempfile.TemporaryDirectory(prefix="keda-gen-") as tmp:
        return generate(Path(tmp))


def differences(gen_dir: Path = GEN_DIR) -> list[str]:
    """Names of files in `gen_dir` that differ from (or are missing against) a fresh run."""
    out = []
    for name, text in fresh().items():
        path = gen_dir / name
        if not path.exists() or path.read_text() != text:
            out.append(name)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autoscaler.keda.regen", description=__doc__)
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 on drift")
    args = parser.parse_args(argv)
    if args.check:
        diff = differences()
        if diff:
            print(f"stale generated files in {GEN_DIR}: {', '.join(diff)}", file=sys.stderr)
            return 1
        print(f"{GEN_DIR} is up to date")
        return 0
    GEN_DIR.mkdir(exist_ok=True)
    files = fresh()
    for name, text in files.items():
        (GEN_DIR / name).write_text(text)
    print(f"wrote {', '.join(sorted(files))} to {GEN_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
