"""``crmsync run``: the long-running worker (for systemd)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
from datetime import timedelta
from types import FrameType

from worker import settings
from worker.app import App
from worker.commands.common import open_engine
from worker.errors import ConfigurationError
from worker.runtime.http import StatusServer
from worker.runtime.systemd import SystemdHooks
from worker.runtime.worker import Worker, WorkerConfig

log = logging.getLogger(__name__)


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("run", help="run the worker: claim and run due job queue entries")
    settings.add_options(parser, settings.WORKER)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    settings.resolve(args, settings.WORKER)
    if not settings.Settings.from_env().database_url and not args.embedded:
        raise ConfigurationError(
            "CRMSYNC_DATABASE_URL: not set: the worker needs the shared database; set "
            "CRMSYNC_DATABASE_URL=postgresql://user@host:5432/db, or pass --embedded to run "
            "on the embedded PostgreSQL under $CRMSYNC_HOME")
    engine = open_engine(pool_size=args.concurrency + 3)
    app = App(engine, plugins=os.environ.get("CRMSYNC_PLUGINS", "").split(","))
    config = WorkerConfig(
        concurrency=args.concurrency,
        lease=timedelta(seconds=args.lease_seconds),
        poll_interval=args.poll_interval,
        reap_interval=max(min(args.lease_seconds / 2, 10.0), 0.5),
        shutdown_timeout=args.shutdown_timeout,
        change_wake_delay=timedelta(seconds=args.change_delay),
        remote_probe=args.remote_probe,
    )
    worker = app.worker(config, identity=args.identity, hooks=[SystemdHooks()])
    server = None
    if args.metrics_address:
        app.install_cluster_metrics()
        webhooks = app.webhooks().start()  # answers only connections that enable it
        server = StatusServer(args.metrics_address, worker.health, worker.readiness,
                              webhooks=webhooks).start()
        log.info("metrics endpoint", extra={"url": f"{server.url}/metrics"})
    install_signal_handlers(worker)
    try:
        worker.run()
    finally:
        if server is not None:
            server.stop()
        app.close()
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
