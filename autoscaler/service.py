"""`gpu-autoscaler run`: the control loop as a service.

With no cluster configuration it runs the embedded default: the same loop against the
simulator's GPU cluster replaying bundled production traces at accelerated time, with the
HTTP API (:8080) and the KEDA gRPC endpoint (:9090) up and a live view in the terminal.
`--prometheus-url` plus `--kubeconfig` (or in-cluster config) switch to the real adapters.

Jobs (APScheduler AsyncIOScheduler, blocking work in worker threads):
  tick       every --tick-interval seconds: observe -> decide -> act -> record
  refit      every --refit-interval seconds: re-estimate forecast smoothing parameters
  leader     every 2 s (real mode): renew or acquire the Lease; only the leader actuates
  workloads  every 10 s (real mode, no --config): reload AutoscalingPolicy objects
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

from autoscaler.api import ServiceStatus, create_app
from autoscaler.config import Workload, load_workloads
from autoscaler.loop import ControlLoop, TickReport
from autoscaler.protocols import AdapterError
from autoscaler.store import DecisionStore
from autoscaler.telemetry import Telemetry
from policies.spec import SpecError

log = logging.getLogger("gpu_autoscaler.service")


async def run_to_completion(fn: Callable[[], Any], in_flight: set[asyncio.Future[Any]]) -> None:
    """Run `fn` in a worker thread and wait for it, even if this task is cancelled.

    APScheduler's shutdown cancels the asyncio task of a job in flight, but a thread cannot
    be interrupted: a tick cancelled half-way through patching replicas would go on running
    while the backend closes, and the scheduler would log the cancellation as a crash. So
    the thread's future is shielded, cancellation waits for it, and the job ends normally.
    `in_flight` holds the futures that have not finished, for shutdown to wait on.
    """
    fut = asyncio.ensure_future(asyncio.to_thread(fn))
    in_flight.add(fut)
    fut.add_done_callback(in_flight.discard)
    try:
        await asyncio.shield(fut)
        return
    except asyncio.CancelledError:
        pass
    await asyncio.wait({fut})
    fut.result()  # an exception raised by fn still reaches the scheduler's log


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and any `extra` fields."""

    _std = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in vars(record).items():
            if k not in self._std and not k.startswith("_"):
                out[k] = v if isinstance(v, (str, int, float, bool, type(None))) else str(v)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def configure_logging(fmt: str, level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("uvicorn.access", "httpx", "kubernetes", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # a tick that outlasts its interval is coalesced on purpose; don't warn each time
    logging.getLogger("apscheduler").setLevel(logging.ERROR)


@dataclass
class Backend:
    """Adapters plus the clock the loop runs on."""

    mode: str  # "embedded" | "cluster"
    loop: ControlLoop
    clock_s: Callable[[], float]  # the loop's clock (simulated in embedded mode)
    before_tick: Callable[[float], None] = lambda now: None
    leader: Any = None  # LeaderElector or None
    reload_workloads: Callable[[], tuple[list[Workload], list[SpecError]]] | None = None
    close: Callable[[], None] = lambda: None
    describe: Callable[[], str] = lambda: ""
    extra: dict[str, Any] = field(default_factory=dict)


def build_backend(
    args: argparse.Namespace, store: DecisionStore
) -> tuple[Backend, list[SpecError]]:
    in_cluster = bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and not args.embedded
    if args.prometheus_url or args.kubeconfig or in_cluster:
        return _cluster_backend(args, store)
    from autoscaler.embedded import build_embedded

    return build_embedded(args, store)


def _cluster_backend(
    args: argparse.Namespace, store: DecisionStore
) -> tuple[Backend, list[SpecError]]:
    from autoscaler.adapters.kube import (
        CustomResourceSource,
        KubeActuator,
        KubeClusterView,
        KubeEventRecorder,
        KubeStateStore,
        LeaderElector,
        api_client_from,
    )
    from autoscaler.adapters.prometheus import PrometheusMetricsSource, PrometheusSourceConfig

    if not args.prometheus_url:
        raise SystemExit(
            "error: --prometheus-url is required with a cluster (e.g. http://prometheus:9090)"
        )
    api = api_client_from(args.kubeconfig, args.context)
    metrics = PrometheusMetricsSource(
        PrometheusSourceConfig(
            url=args.prometheus_url,
            step_s=args.scrape_interval,
            bearer_token_file=args.prometheus_token_file,
            ca_file=args.prometheus_ca_file,
        )
    )
    cluster = KubeClusterView(api)
    actuator = KubeActuator(api)
    events = KubeEventRecorder(api)
    state_store = KubeStateStore(api, cluster=cluster)
    errors: list[SpecError] = []
    reload: Callable[[], tuple[list[Workload], list[SpecError]]] | None
    if args.config:
        res = load_workloads(args.config)
        workloads, errors = res.workloads, res.errors
        reload = None
    else:
        source = CustomResourceSource(
            api, namespace=args.namespace, events=events, state_store=state_store
        )

        def reload() -> tuple[list[Workload], list[SpecError]]:
            return source.load()

        workloads, errors = reload()
    from autoscaler.schedules import ScheduleEvaluator

    loop = ControlLoop(
        workloads,
        metrics=metrics,
        cluster=cluster,
        actuator=actuator,
        store=store,
        state_store=state_store,
        events=events,
        schedules=ScheduleEvaluator(epoch_s=0.0),
        dry_run=args.dry_run,
    )
    elector = None
    if args.leader_elect:
        identity = args.identity or f"{socket.gethostname()}-{os.getpid()}"
        elector = LeaderElector(
            api,
            namespace=args.lease_namespace,
            name=args.lease_name,
            identity=identity,
            lease_duration_s=args.lease_duration,
            renew_deadline_s=min(args.renew_deadline, args.lease_duration),
            retry_period_s=min(2.0, args.renew_deadline / 2),
        )
    cluster.start(workloads)

    def close() -> None:
        state_store.close()  # sends status writes still queued
        cluster.stop()

    return (
        Backend(
            mode="cluster",
            loop=loop,
            clock_s=time.time,
            leader=elector,
            reload_workloads=reload,
            close=close,
            describe=lambda: f"prometheus {args.prometheus_url}",
        ),
        errors,
    )


def _invalid_json(errors: Sequence[SpecError]) -> list[dict[str, Any]]:
    out = []
    for e in errors:
        out.append(
            {"source": e.source, "problems": [{"field": p, "message": m} for p, m in e.problems]}
        )
    return out


class Service:
    """Wires the loop, the scheduler, HTTP and gRPC; runs until a signal or --duration."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.store = DecisionStore()
        self.telemetry = Telemetry(self.store)
        self.backend, errors = build_backend(args, self.store)
        for e in errors:
            log.warning("invalid workload skipped: %s", e)
        self.status = ServiceStatus(
            store=self.store,
            telemetry=self.telemetry,
            mode=self.backend.mode,
            tick_interval_s=args.tick_interval / max(getattr(args, "speed", 1.0), 1e-9)
            if self.backend.mode == "embedded"
            else args.tick_interval,
            workloads=list(self.backend.loop.workloads),
            invalid=_invalid_json(errors),
            leader=self.backend.leader is None,
        )
        sched = self.backend.loop.schedules
        if sched is not None and hasattr(sched, "describe"):
            clock = self.backend.clock_s
            self.status.schedules = lambda w: sched.describe(w, clock())
        self.app = create_app(self.status)
        self._stop = asyncio.Event()
        self.ticks = 0

    # -- jobs ------------------------------------------------------------------------------

    def run_tick(self) -> TickReport | None:
        b = self.backend
        now = b.clock_s()
        if b.leader is not None:
            leading = b.leader.try_acquire_or_renew()
            if leading and not self.status.leader:
                log.info("became leader; loading persisted policy state")
                b.loop.set_workloads([])  # drop in-memory state: the persisted one wins
                b.loop.set_workloads(self.status.workloads)
            self.status.leader = leading
            self.telemetry.leader.set(1 if leading else 0)
            b.loop.dry_run = self.args.dry_run or not leading
        try:
            b.before_tick(now)
            report = b.loop.tick(now)
        except Exception as e:  # the loop contains workload errors; this is a bug: keep serving
            log.exception("tick failed")
            self.status.last_tick_error = str(e)
            self.telemetry.errors.labels("tick").inc()
            return None
        self.status.last_tick_error = report.metrics_error or report.cluster_error
        self.status.last_tick_wall_s = time.monotonic()
        self.telemetry.observe_tick(report)
        self.ticks += 1
        if report.patches or report.errors:
            log.debug(
                "tick",
                extra={
                    "now_s": round(now, 1),
                    "patches": len(report.patches),
                    "errors": sum(len(v) for v in report.errors.values()),
                    "held": len(report.held),
                    "duration_s": round(report.duration_s, 4),
                },
            )
        return report

    def run_refit(self) -> None:
        loop = self.backend.loop
        try:
            loop.refit(self.backend.clock_s())
        except Exception:
            log.exception("forecast refit failed; keeping current parameters")

    def run_reload(self) -> None:
        if self.backend.reload_workloads is None:
            return
        try:
            workloads, errors = self.backend.reload_workloads()
        except AdapterError as e:
            log.warning("could not reload workloads: %s", e)
            return
        if [w.model_dump() for w in workloads] != [w.model_dump() for w in self.status.workloads]:
            self.backend.loop.set_workloads(workloads)
            self.status.workloads = list(workloads)
            log.info("workloads reloaded", extra={"count": len(workloads), "invalid": len(errors)})
        self.status.invalid = _invalid_json(errors)

    # -- main ------------------------------------------------------------------------------

    async def serve(self) -> int:
        import uvicorn
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        args = self.args
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self._stop.set)
            except (NotImplementedError, RuntimeError):
                pass

        grpc_server = self._start_grpc()
        config = uvicorn.Config(
            self.app,
            host=args.host,
            port=args.http_port,
            log_config=None,
            access_log=False,
            lifespan="off",
        )
        http = uvicorn.Server(config)
        http_task = asyncio.create_task(http.serve())

        scheduler = AsyncIOScheduler(event_loop=loop)
        tick_s = self.status.tick_interval_s

        in_flight: set[asyncio.Future[Any]] = set()

        async def tick_job() -> None:
            await run_to_completion(self.run_tick, in_flight)

        async def refit_job() -> None:
            await run_to_completion(self.run_refit, in_flight)

        async def reload_job() -> None:
            await run_to_completion(self.run_reload, in_flight)

        scheduler.add_job(
            tick_job,
            "interval",
            seconds=tick_s,
            id="tick",
            max_instances=1,
            coalesce=True,
            next_run_time=_now_dt(),
        )
        refit_wall = args.refit_interval / (args.speed if self.backend.mode == "embedded" else 1.0)
        scheduler.add_job(
            refit_job,
            "interval",
            seconds=max(refit_wall, 1.0),
            id="refit",
            max_instances=1,
            coalesce=True,
        )
        if self.backend.reload_workloads is not None:
            scheduler.add_job(
                reload_job, "interval", seconds=10, id="workloads", max_instances=1, coalesce=True
            )
        self.backend.extra["scheduler"] = scheduler
        scheduler.start()
        log.info(
            "gpu-autoscaler running",
            extra={
                "mode": self.backend.mode,
                "workloads": len(self.status.workloads),
                "http": f"{args.host}:{args.http_port}",
                "grpc": f"{args.host}:{args.grpc_port}" if grpc_server is not None else "off",
                "backend": self.backend.describe(),
            },
        )
        live = _LiveView(self) if args.live else None
        try:
            if live is not None:
                live_task = asyncio.create_task(live.run(self._stop))
            if args.duration and args.duration > 0:
                try:
                    await asyncio.wait_for(self._stop.wait(), timeout=args.duration)
                except TimeoutError:
                    pass
            else:
                await self._stop.wait()
        finally:
            self._stop.set()
            if live is not None:
                await live_task
            scheduler.shutdown(wait=False)  # cancels the job tasks; their threads run on
            if in_flight:  # a tick half-way through act() finishes before the backend closes
                await asyncio.wait(set(in_flight))
            http.should_exit = True
            await http_task
            if grpc_server is not None:
                grpc_server.stop(grace=2).wait(5)
            if self.backend.leader is not None:
                try:
                    self.backend.leader.release()
                except Exception:
                    log.warning("could not release the lease", exc_info=True)
            self.backend.close()
            log.info("stopped", extra={"ticks": self.ticks})
        return 0

    def _start_grpc(self) -> Any:
        if self.args.grpc_port <= 0:
            return None
        try:
            from autoscaler.keda.server import TLSConfig, serve
        except ImportError:
            log.warning("KEDA gRPC endpoint not available in this build")
            return None
        tls = None
        if self.args.grpc_tls_cert:
            tls = TLSConfig.from_files(
                self.args.grpc_tls_cert, self.args.grpc_tls_key, self.args.grpc_client_ca
            )
        return serve(
            self.store,
            address=f"{self.args.host}:{self.args.grpc_port}",
            tls=tls,
            tick_s=self.status.tick_interval_s,
        )


def _now_dt() -> Any:
    from datetime import datetime

    return datetime.now(UTC)


class _LiveView:
    """A terminal table of decisions, refreshed every second (rich)."""

    def __init__(self, service: Service) -> None:
        self.service = service

    def render(self) -> Any:
        from rich.table import Table

        st = self.service.status
        title = f"gpu-autoscaler · {st.mode} · {self.service.backend.describe()}"
        table = Table(title=title, expand=True)
        for col in (
            "workload",
            "scenario",
            "demand",
            "forecast↑",
            "spot",
            "on-demand",
            "warm",
            "ready",
            "reason",
        ):
            table.add_column(col, overflow="fold")
        for r in st.store.all():
            d = r.decision
            ready = sum(r.ready.get(p, 0) for p in ("spot", "on_demand"))
            table.add_row(
                r.key,
                r.workload.spec.policy.scenario.value,
                f"{d.demand_now:.2f}" if d.demand_now == d.demand_now else "—",
                f"{d.forecast_upper:.2f}" if d.forecast_upper == d.forecast_upper else "—",
                f"{r.current.get('spot', 0)}→{d.spot}",
                f"{r.current.get('on_demand', 0)}→{d.on_demand}",
                f"{r.current.get('warm', 0)}→{d.warm}",
                str(ready),
                ("[red]" if d.held else "") + d.reason,
            )
        return table

    async def run(self, stop: asyncio.Event) -> None:
        from rich.console import Console
        from rich.live import Live

        console = Console(stderr=False)
        with Live(self.render(), console=console, refresh_per_second=2, transient=False) as live:
            while not stop.is_set():
                try:
                    await asyncio.wait_for(stop.wait(), timeout=1.0)
                except TimeoutError:
                    pass
                live.update(self.render())


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("workloads and cluster")
    g.add_argument(
        "--config",
        action="append",
        metavar="FILE",
        help="YAML with AutoscalingPolicy objects (repeatable); default: watch the CRD",
    )
    g.add_argument("--prometheus-url", help="Prometheus base URL; switches to the real adapters")
    g.add_argument(
        "--scrape-interval",
        type=float,
        default=15.0,
        help="Prometheus scrape interval of the inference servers, the range-query step (s)",
    )
    g.add_argument("--prometheus-token-file", help="bearer token file for Prometheus")
    g.add_argument("--prometheus-ca-file", help="CA bundle to verify Prometheus' certificate")
    g.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster config in a pod)")
    g.add_argument("--context", help="kubeconfig context")
    g.add_argument("--namespace", help="only watch AutoscalingPolicy objects in this namespace")
    g.add_argument(
        "--embedded",
        action="store_true",
        help="force the embedded simulated cluster even inside a pod",
    )
    g.add_argument("--dry-run", action="store_true", help="decide and record, never patch")
    g = p.add_argument_group("loop")
    g.add_argument(
        "--tick-interval", type=float, default=5.0, help="seconds between ticks (default 5)"
    )
    g.add_argument(
        "--refit-interval",
        type=float,
        default=600.0,
        help="seconds between forecast refits (default 600)",
    )
    g.add_argument(
        "--leader-elect",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Lease-based leader election in cluster mode (default on)",
    )
    g.add_argument("--lease-namespace", default=os.environ.get("POD_NAMESPACE", "gpu-autoscaler"))
    g.add_argument("--lease-name", default="gpu-autoscaler-leader")
    g.add_argument(
        "--lease-duration",
        type=float,
        default=15.0,
        help="seconds a leader's Lease is valid without renewal (default 15)",
    )
    g.add_argument(
        "--renew-deadline",
        type=float,
        default=10.0,
        help="a leader that could not renew for this long steps down (default 10)",
    )
    g.add_argument("--identity", default=os.environ.get("POD_NAME"))
    g = p.add_argument_group("endpoints")
    g.add_argument("--host", default="0.0.0.0", help="bind address (default 0.0.0.0)")
    g.add_argument("--http-port", type=int, default=8080)
    g.add_argument("--grpc-port", type=int, default=9090, help="KEDA external scaler; 0 disables")
    g.add_argument("--grpc-tls-cert", help="server certificate (PEM) for gRPC TLS")
    g.add_argument("--grpc-tls-key", help="server key (PEM)")
    g.add_argument("--grpc-client-ca", help="CA (PEM) to require and verify client certificates")
    g = p.add_argument_group("embedded default")
    g.add_argument(
        "--speed",
        type=float,
        default=10.0,
        help="simulated seconds per wall second in embedded mode (default 10)",
    )
    g.add_argument(
        "--duration",
        type=float,
        default=0.0,
        help="stop after this many wall seconds (default: run until interrupted)",
    )
    g.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("output")
    g.add_argument(
        "--live",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="live terminal view of decisions (default: when stdout is a terminal)",
    )
    g.add_argument("--log-format", choices=["json", "text"], default="json")


def cmd_run(args: argparse.Namespace) -> int:
    if args.live is None:
        args.live = sys.stdout.isatty()
    level = logging.getLevelName(logging.getLogger().level)
    # the live table owns the terminal: only warnings and errors go to the log then
    configure_logging(args.log_format, "WARNING" if args.live else level)
    try:
        service = Service(args)
    except SpecError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return asyncio.run(service.serve())


def register(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="run the controller (embedded simulated cluster unless a cluster is configured)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_run_arguments(p)
    p.set_defaults(func=cmd_run)
