"""KEDA external scaler gRPC server over the DecisionStore.

`serve(store)` starts a `grpc.Server` in the calling process (beside the control loop) that
answers KEDA's `externalscaler.ExternalScaler` service plus the standard gRPC health service
(`grpc.health.v1.Health`, SERVING for "" and "externalscaler.ExternalScaler"). The caller
owns the returned server and stops it (`server.stop(grace_s)`).

Every RPC reads the latest `DecisionRecord` of the workload the request names and answers
through `autoscaler.keda.core` (metadata keys, the replica metric and its HPA arithmetic are
documented there and in docs/keda.md). A held decision (stale metrics) is served as stored,
never as an error, so KEDA's fallback does not fight the hold.

Status codes: INVALID_ARGUMENT (bad scalerMetadata), FAILED_PRECONDITION (pool without a
Deployment), NOT_FOUND (workload not managed), UNAVAILABLE (before the first control tick),
RESOURCE_EXHAUSTED (stream limit reached; KEDA retries and keeps polling), INTERNAL
(unexpected; logged with its traceback). Nothing else escapes a handler.

Streams. StreamIsActive sends the current activity at once, then on every change (it wakes
on `DecisionStore.wait_for_change` through one shared watcher thread, so a queue turning
non-empty is pushed as soon as the loop stores that tick), and re-sends the current value
every `keepalive_s` (KEDA acts on each `true` with one scale check; the write also detects
dead peers). StreamMetricSpec sends the spec at once and then only when it changes (each
message makes KEDA update its HPA). A stream ends when the client cancels, when the workload
disappears (NOT_FOUND) or when the server stops; it holds one worker thread and O(1) memory
while open. `max_streams` caps open streams so they cannot starve the unary calls the HPA
depends on: size `max_workers` above twice the number of `external-push` ScaledObjects.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from autoscaler.keda import core
from autoscaler.keda.gen import externalscaler_pb2 as pb
from autoscaler.keda.gen import externalscaler_pb2_grpc as pb_grpc
from autoscaler.store import DecisionStore

log = logging.getLogger(__name__)

SERVICE_NAME = "externalscaler.ExternalScaler"
DEFAULT_ADDRESS = "0.0.0.0:9090"
DEFAULT_MAX_WORKERS = 128

T = TypeVar("T")


@dataclass(frozen=True)
class TLSConfig:
    """Server TLS: PEM certificate chain and key; with `client_ca_file`, mutual TLS.

    Matches KEDA's trigger auth params: KEDA verifies our certificate with `caCert` (its
    SANs must cover the host in `scalerAddress`), and presents `tlsClientCert` /
    `tlsClientKey`, which we then require and verify against `client_ca_file`.
    """

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None

    @classmethod
    def from_files(
        cls,
        cert_file: str | Path | None,
        key_file: str | Path | None,
        client_ca_file: str | Path | None = None,
    ) -> TLSConfig:
        """From command-line paths; raises ValueError when the certificate or key is missing
        (the files themselves are read by `server_credentials`)."""
        if not cert_file or not key_file:
            raise ValueError(
                "gRPC TLS needs both a certificate and a key:"
                f" cert_file={cert_file!r} key_file={key_file!r}"
            )
        ca = Path(client_ca_file) if client_ca_file else None
        return cls(Path(cert_file), Path(key_file), ca)

    def server_credentials(self) -> grpc.ServerCredentials:
        """Read the files; raises ValueError naming a file that cannot be read or is empty."""
        cert = _read_pem(self.cert_file, "cert_file")
        key = _read_pem(self.key_file, "key_file")
        ca = (
            None
            if self.client_ca_file is None
            else _read_pem(self.client_ca_file, "client_ca_file")
        )
        return grpc.ssl_server_credentials(
            [(key, cert)], root_certificates=ca, require_client_auth=ca is not None
        )


def _read_pem(path: Path, field: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ValueError(f"TLSConfig.{field}: cannot read {path}: {e.strerror}") from e
    if b"-----BEGIN" not in data:
        raise ValueError(f"TLSConfig.{field}: {path} holds no PEM block")
    return data


class _ChangeFeed:
    """Fan-out of store changes: one thread waits on the store, each stream on its Event.

    The thread starts with the first subscriber and exits within `wait_s` after the last
    one leaves, so an idle server holds no extra thread.
    """

    def __init__(self, store: DecisionStore, wait_s: float) -> None:
        self._store = store
        self._wait_s = wait_s
        self._lock = threading.Lock()
        self._subscribers: set[threading.Event] = set()
        self._thread: threading.Thread | None = None

    def subscribe(self) -> threading.Event:
        event = threading.Event()
        with self._lock:
            self._subscribers.add(event)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run,
                    args=(self._store.version,),
                    name="keda-change-feed",
                    daemon=True,
                )
                self._thread.start()
        return event

    def unsubscribe(self, event: threading.Event) -> None:
        with self._lock:
            self._subscribers.discard(event)

    def _run(self, seen: int) -> None:
        while True:
            with self._lock:
                if not self._subscribers:
                    self._thread = None
                    return
            version = self._store.wait_for_change(seen, self._wait_s)
            if version != seen:
                seen = version
                with self._lock:
                    for event in self._subscribers:
                        event.set()


class ExternalScalerService(pb_grpc.ExternalScalerServicer):
    """The ExternalScaler servicer over a DecisionStore.

    tick_s: the control loop's period (s); the change watcher re-checks for departed
      streams at this period. keepalive_s: StreamIsActive re-sends its current value after
      this long without a change (None: never). max_streams: open streams (both kinds)
      beyond which new ones get RESOURCE_EXHAUSTED.
    """

    def __init__(
        self,
        store: DecisionStore,
        tick_s: float,
        *,
        keepalive_s: float | None = 30.0,
        max_streams: int = 64,
    ) -> None:
        if not tick_s > 0:
            raise ValueError(f"tick_s must be > 0 seconds, got {tick_s!r}")
        if keepalive_s is not None and not keepalive_s > 0:
            raise ValueError(f"keepalive_s must be > 0 seconds or None, got {keepalive_s!r}")
        if max_streams < 1:
            raise ValueError(f"max_streams must be >= 1, got {max_streams!r}")
        self.store = store
        self.tick_s = tick_s
        self.keepalive_s = keepalive_s
        self.max_streams = max_streams
        self._feed = _ChangeFeed(store, wait_s=tick_s)
        self._streams_lock = threading.Lock()
        self._open_streams = 0

    @property
    def open_streams(self) -> int:
        with self._streams_lock:
            return self._open_streams

    # -- unary ---------------------------------------------------------------------------

    def IsActive(self, request: pb.ScaledObjectRef, context: grpc.ServicerContext) -> Any:
        view = self._answer(context, "IsActive", lambda: self._view(request))
        return pb.IsActiveResponse(result=view.active)

    def GetMetricSpec(self, request: pb.ScaledObjectRef, context: grpc.ServicerContext) -> Any:
        view = self._answer(context, "GetMetricSpec", lambda: self._view(request))
        return _spec_response(view)

    def GetMetrics(self, request: pb.GetMetricsRequest, context: grpc.ServicerContext) -> Any:
        def answer() -> core.ScalerView:
            view = self._view(request.scaledObjectRef)
            if request.metricName and request.metricName != view.metric_name:
                raise core.InvalidScalerMetadata(
                    f"metricName {request.metricName!r} is not served for workload"
                    f" {view.workload} pool {view.pool}; GetMetricSpec names"
                    f" {view.metric_name!r} (did the trigger's pool change?)"
                )
            return view

        view = self._answer(context, "GetMetrics", answer)
        return pb.GetMetricsResponse(metricValues=[_metric_value(view)])

    # -- streams -------------------------------------------------------------------------

    def StreamIsActive(
        self, request: pb.ScaledObjectRef, context: grpc.ServicerContext
    ) -> Iterator[Any]:
        return self._stream(
            request,
            context,
            "StreamIsActive",
            lambda v: pb.IsActiveResponse(result=v.active),
            lambda v: v.active,
            self.keepalive_s,
        )

    def StreamMetricSpec(
        self, request: pb.ScaledObjectRef, context: grpc.ServicerContext
    ) -> Iterator[Any]:
        return self._stream(
            request,
            context,
            "StreamMetricSpec",
            _spec_response,
            lambda v: (v.metric_name, v.target),
            None,
        )

    def _stream(
        self,
        request: pb.ScaledObjectRef,
        context: grpc.ServicerContext,
        rpc: str,
        message: Callable[[core.ScalerView], Any],
        state: Callable[[core.ScalerView], object],
        keepalive_s: float | None,
    ) -> Iterator[Any]:
        """Send `message(view)` now, then whenever `state(view)` changes, plus keepalives."""
        if not self._acquire_stream():
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{self.max_streams} streams already open (max_streams); raise the server's"
                " max_workers/max_streams. Polling (IsActive, GetMetrics) keeps working.",
            )
        # Subscribe before the first read, so no store change falls between the two.
        wake = self._feed.subscribe()
        try:
            view = self._answer(context, rpc, lambda: self._view(request))
            if not context.add_callback(wake.set):  # cancellation wakes the wait below
                return  # already over
            last = state(view)
            yield message(view)
            sent_at = time.monotonic()
            while context.is_active():
                wait_s = self.tick_s  # a safety net: changes and cancellation set `wake`
                if keepalive_s is not None:
                    wait_s = max(0.0, min(wait_s, sent_at + keepalive_s - time.monotonic()))
                wake.wait(wait_s)
                wake.clear()
                if not context.is_active():
                    return
                view = self._answer(context, rpc, lambda: self._view(request))
                now = time.monotonic()
                current = state(view)
                if current != last or (keepalive_s is not None and now - sent_at >= keepalive_s):
                    last = current
                    sent_at = now
                    yield message(view)
        finally:
            self._feed.unsubscribe(wake)
            self._release_stream()

    def _acquire_stream(self) -> bool:
        with self._streams_lock:
            if self._open_streams >= self.max_streams:
                return False
            self._open_streams += 1
            return True

    def _release_stream(self) -> None:
        with self._streams_lock:
            self._open_streams -= 1

    # -- shared --------------------------------------------------------------------------

    def _view(self, ref: pb.ScaledObjectRef) -> core.ScalerView:
        query = core.parse_query(ref.namespace, ref.name, ref.scalerMetadata)
        return core.lookup(self.store, query)

    def _answer(self, context: grpc.ServicerContext, rpc: str, fn: Callable[[], T]) -> T:
        """Run `fn`; map our errors to their status codes, anything else to INTERNAL."""
        try:
            return fn()
        except core.KedaRequestError as e:
            code, detail = getattr(grpc.StatusCode, e.grpc_code), str(e)
            log.debug("%s: %s %s", rpc, code.name, detail)
        except Exception as e:
            log.exception("%s: unexpected error", rpc)
            code, detail = (
                grpc.StatusCode.INTERNAL,
                f"{rpc}: internal error: {type(e).__name__}: {e}",
            )
        context.abort(code, detail)
        raise AssertionError("unreachable: context.abort raises")  # pragma: no cover


def _spec_response(view: core.ScalerView) -> Any:
    return pb.GetMetricSpecResponse(
        metricSpecs=[
            pb.MetricSpec(
                metricName=view.metric_name,
                targetSize=_int_field(view.target),
                targetSizeFloat=view.target,
            )
        ]
    )


def _metric_value(view: core.ScalerView) -> Any:
    # KEDA reads metricValue when metricValueFloat is 0: desired 0 must send 0 in both.
    return pb.MetricValue(
        metricName=view.metric_name,
        metricValue=view.desired_replicas,
        metricValueFloat=view.value,
    )


def _int_field(x: float) -> int:
    # For KEDA releases without the float fields; 1 replica per unit survives intact.
    return int(round(x))


def start_server(
    store: DecisionStore,
    address: str = DEFAULT_ADDRESS,
    tls: TLSConfig | None = None,
    max_workers: int = DEFAULT_MAX_WORKERS,
    *,
    tick_s: float = 15.0,
    keepalive_s: float | None = 30.0,
    max_streams: int | None = None,
) -> tuple[grpc.Server, int]:
    """Build, bind and start the server; return it with the bound port (for address ':0').

    max_streams defaults to max_workers minus a quarter (at least 4) kept for unary calls.
    Raises ValueError on bad arguments or TLS files, OSError when the address cannot be bound.
    """
    if max_workers < 2:
        raise ValueError(f"max_workers must be >= 2, got {max_workers!r}")
    if max_streams is None:
        max_streams = max(1, max_workers - max(4, max_workers // 4))
    if max_streams >= max_workers:
        raise ValueError(
            f"max_streams ({max_streams}) must be < max_workers ({max_workers}), or streams"
            " could take every worker and starve IsActive/GetMetrics"
        )
    service = ExternalScalerService(store, tick_s, keepalive_s=keepalive_s, max_streams=max_streams)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="keda-grpc"),
        options=[
            ("grpc.so_reuseport", 0),  # a second server on the same port fails loudly
            ("grpc.keepalive_time_ms", 60_000),  # ping idle stream peers every minute
            ("grpc.keepalive_timeout_ms", 20_000),
        ],
    )
    pb_grpc.add_ExternalScalerServicer_to_server(service, server)  # type: ignore[no-untyped-call]
    health_servicer = health.HealthServicer()
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    try:
        if tls is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, tls.server_credentials())
    except RuntimeError as e:
        raise OSError(f"cannot bind the KEDA external scaler to {address!r}: {e}") from e
    if port == 0:
        raise OSError(f"cannot bind the KEDA external scaler to {address!r}")
    server.start()
    log.info(
        "KEDA external scaler listening on %s (port %d, %s)",
        address,
        port,
        "mTLS" if tls and tls.client_ca_file else "TLS" if tls else "plaintext",
    )
    return server, port


def serve(
    store: DecisionStore,
    address: str = DEFAULT_ADDRESS,
    tls: TLSConfig | None = None,
    max_workers: int = DEFAULT_MAX_WORKERS,
    *,
    tick_s: float = 15.0,
    keepalive_s: float | None = 30.0,
    max_streams: int | None = None,
) -> grpc.Server:
    """Start the KEDA external scaler (and gRPC health) on `address`; the caller stops it.

    See `start_server` for the arguments; this returns only the server.
    """
    server, _ = start_server(
        store,
        address,
        tls,
        max_workers,
        tick_s=tick_s,
        keepalive_s=keepalive_s,
        max_streams=max_streams,
    )
    return server
