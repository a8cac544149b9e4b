"""``crmsync run``: the long-running worker (for systemd)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
from datetime import timedelta
from types import FrameType

from worker.commands.common import open_engine
from worker.jobs import load_handlers
from worker.metrics import MetricsHooks, install_cluster_collector, prime
from worker.runtime.http import StatusServer
from worker.runtime.systemd import SystemdHooks
from worker.runtime.worker import Worker, WorkerConfig

log = logging.getLogger(__name__)


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("run", help="run the worker: claim and run due job queue entries")
    env = os.environ.get
    parser.add_argument("--concurrency", type=int, default=int(env("CRMSYNC_CONCURRENCY", "4")),
                        help="runs at the same time in this process (default 4)")
    parser.add_argument("--lease-seconds", type=float,
                        default=float(env("CRMSYNC_LEASE_SECONDS", "60")),
                        help="a run whose worker is silent this long is rescued (default 60)")
    parser.add_argument("--poll-interval", type=float,
                        default=float(env("CRMSYNC_POLL_INTERVAL", "2")),
                        help="seconds between polls when no notification arrives (default 2)")
    parser.add_argument("--shutdown-timeout", type=float,
                        default=float(env("CRMSYNC_SHUTDOWN_TIMEOUT", "30")),
                        help="on SIGTERM, wait this long for running jobs (default 30)")
    parser.add_argument("--change-delay", type=float,
                        default=float(env("CRMSYNC_CHANGE_DELAY", "30")),
                        help="a change to a mapped table makes its entry due within this many "
                             "seconds (NAV: 30)")
    parser.add_argument("--metrics-address", default=env("CRMSYNC_METRICS_ADDRESS",
                                                         "127.0.0.1:9465"),
                        help="host:port of /metrics, /healthz and /readyz "
                             "(default 127.0.0.1:9465; empty: off)")
    parser.add_argument("--identity", default=env("CRMSYNC_WORKER_ID"),
                        help="worker identity (default host:pid:start)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if args.concurrency < 1:
        raise SystemExit("crmsync run: --concurrency must be at least 1")
    engine = open_engine(pool_size=args.concurrency + 3)
    handlers = load_handlers(os.environ.get("CRMSYNC_PLUGINS", "").split(","))
    config = WorkerConfig(
        concurrency=args.concurrency,
        lease=timedelta(seconds=args.lease_seconds),
        poll_interval=args.poll_interval,
        reap_interval=max(min(args.lease_seconds / 2, 10.0), 0.5),
        shutdown_timeout=args.shutdown_timeout,
        change_wake_delay=timedelta(seconds=args.change_delay),
    )
    metrics_hooks = MetricsHooks()
    worker = Worker(engine, handlers, config, identity=args.identity,
                    hooks=[metrics_hooks, SystemdHooks()])
    server = None
    if args.metrics_address:
        install_cluster_collector(engine)
        prime(engine)
        server = StatusServer(args.metrics_address, worker.health, worker.readiness).start()
        log.info("metrics endpoint", extra={"url": f"{server.url}/metrics"})
    install_signal_handlers(worker)
    try:
        worker.run()
    finally:
        if server is not None:
            server.stop()
        engine.dispose()
    return 0


def install_signal_handlers(worker: Worker) -> None:
    def on_signal(signum: int, frame: FrameType | None) -> None:
        again = worker.stopping
        log.info("signal received", extra={"signal": signal.Signals(signum).name,
                                           "immediately": again})
        worker.stop(immediately=again)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
