"""`gpu-autoscaler keda-check`: call the external scaler as KEDA would and print the answers.

    gpu-autoscaler keda-check --address gpu-autoscaler.gpu-autoscaler.svc:9090 \\
        --workload llm/chat --pool spot [--ca-cert ca.pem --client-cert c.pem --client-key k.pem]

Calls gRPC health, IsActive, GetMetricSpec, GetMetrics (with the name GetMetricSpec gave),
and reads the first message of StreamIsActive and StreamMetricSpec. Exit status 0 when every
call succeeded, 1 otherwise (each failure prints its status code and message).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from autoscaler.keda.gen import externalscaler_pb2 as pb
from autoscaler.keda.gen import externalscaler_pb2_grpc as pb_grpc

SERVICE_NAME = "externalscaler.ExternalScaler"


@dataclass(frozen=True)
class CheckResult:
    """One call's outcome: `ok`, a one-line `detail`, and its status code name on failure."""

    call: str
    ok: bool
    detail: str
    code: str = "OK"


def channel_for(
    address: str,
    ca_cert: Path | None = None,
    client_cert: Path | None = None,
    client_key: Path | None = None,
    server_name: str | None = None,
) -> grpc.Channel:
    """A plaintext channel, or TLS when any of the PEM files is given (like KEDA's client).

    server_name overrides the name the server certificate is checked against.
    """
    if ca_cert is None and client_cert is None and client_key is None:
        return grpc.insecure_channel(address)
    if (client_cert is None) != (client_key is None):
        raise ValueError("--client-cert and --client-key go together")
    creds = grpc.ssl_channel_credentials(
        root_certificates=None if ca_cert is None else Path(ca_cert).read_bytes(),
        private_key=None if client_key is None else Path(client_key).read_bytes(),
        certificate_chain=None if client_cert is None else Path(client_cert).read_bytes(),
    )
    options = [] if server_name is None else [("grpc.ssl_target_name_override", server_name)]
    return grpc.secure_channel(address, creds, options=options)


def run_checks(
    channel: grpc.Channel,
    namespace: str,
    name: str,
    metadata: Mapping[str, str],
    timeout_s: float = 5.0,
) -> list[CheckResult]:
    """Call every RPC once against `channel` and describe each answer."""
    stub = pb_grpc.ExternalScalerStub(channel)  # type: ignore[no-untyped-call]
    ref = pb.ScaledObjectRef(name=name, namespace=namespace, scalerMetadata=dict(metadata))
    results: list[CheckResult] = []

    def call(label: str, fn: Callable[[], str]) -> None:
        try:
            results.append(CheckResult(label, True, fn()))
        except grpc.RpcError as e:
            code = e.code()
            results.append(CheckResult(label, False, str(e.details()), code.name))

    def check_health() -> str:
        hstub = health_pb2_grpc.HealthStub(channel)
        resp = hstub.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=timeout_s)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status))

    spec_name: list[str] = []

    def check_spec() -> str:
        resp = stub.GetMetricSpec(ref, timeout=timeout_s)
        spec_name.extend(s.metricName for s in resp.metricSpecs)
        return "; ".join(_describe_spec(s) for s in resp.metricSpecs) or "no metric specs"

    def check_metrics() -> str:
        request = pb.GetMetricsRequest(
            scaledObjectRef=ref, metricName=spec_name[0] if spec_name else ""
        )
        resp = stub.GetMetrics(request, timeout=timeout_s)
        return "; ".join(_describe_value(v) for v in resp.metricValues) or "no metric values"

    def first_of(rpc: Callable[..., Any], describe: Callable[[Any], str]) -> Callable[[], str]:
        def read() -> str:
            started = time.monotonic()
            stream = rpc(ref, timeout=timeout_s)
            try:
                first = next(stream)
            except StopIteration:
                return "stream ended without a message"
            finally:
                stream.cancel()
            return f"{describe(first)} (first message after {time.monotonic() - started:.3f} s)"

        return read

    call("health", check_health)
    call("IsActive", lambda: str(stub.IsActive(ref, timeout=timeout_s).result).lower())
    call("GetMetricSpec", check_spec)
    call("GetMetrics", check_metrics)
    call("StreamIsActive", first_of(stub.StreamIsActive, lambda m: str(m.result).lower()))
    call(
        "StreamMetricSpec",
        first_of(
            stub.StreamMetricSpec,
            lambda m: "; ".join(_describe_spec(s) for s in m.metricSpecs) or "no metric specs",
        ),
    )
    return results


def _describe_spec(spec: Any) -> str:
    return f"{spec.metricName} target={spec.targetSizeFloat:g} (targetSize={spec.targetSize})"


def _describe_value(value: Any) -> str:
    # KEDA reads the float when it is > 0, else the int (see docs/keda.md).
    v = value.metricValueFloat if value.metricValueFloat > 0 else float(value.metricValue)
    return f"{value.metricName} value={v:g} (metricValue={value.metricValue})"


def _metadata(items: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"--metadata {item!r}: expected KEY=VALUE")
        out[key] = value
    return out


def register(subparsers: Any) -> None:
    """Add the `keda-check` subcommand."""
    p = subparsers.add_parser(
        "keda-check",
        help="call the KEDA external scaler's RPCs and print the answers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--address", default="127.0.0.1:9090", help="host:port of the scaler")
    p.add_argument("--workload", help="scalerMetadata workload: '<namespace>/<name>'")
    p.add_argument("--pool", help="scalerMetadata pool: spot | on_demand | warm")
    p.add_argument(
        "--metadata",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="another scalerMetadata entry (repeatable)",
    )
    p.add_argument("--namespace", default="", help="ScaledObjectRef namespace")
    p.add_argument("--name", default="", help="ScaledObjectRef name")
    p.add_argument("--ca-cert", type=Path, help="PEM CA that signed the server certificate")
    p.add_argument("--client-cert", type=Path, help="PEM client certificate (mutual TLS)")
    p.add_argument("--client-key", type=Path, help="PEM client key (mutual TLS)")
    p.add_argument("--server-name", help="name to verify the server certificate against")
    p.add_argument("--timeout-s", type=float, default=5.0, help="deadline per call, seconds")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    try:
        metadata = _metadata(args.metadata)
    except argparse.ArgumentTypeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.workload:
        metadata["workload"] = args.workload
    if args.pool:
        metadata["pool"] = args.pool
    try:
        channel = channel_for(
            args.address, args.ca_cert, args.client_cert, args.client_key, args.server_name
        )
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    with channel:
        results = run_checks(channel, args.namespace, args.name, metadata, args.timeout_s)
    width = max(len(r.call) for r in results)
    for r in results:
        status = "ok  " if r.ok else f"FAIL {r.code}:"
        print(f"{r.call:<{width}}  {status} {r.detail}")
    return 0 if all(r.ok for r in results) else 1
