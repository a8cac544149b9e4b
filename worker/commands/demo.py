"""``crmsync demo``: everything on this machine, nothing to configure."""

from __future__ import annotations

import argparse
import logging
from datetime import timedelta

from worker import settings


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "demo", help="run a self-contained demo: embedded database, local CRM, seven mappings")
    parser.add_argument("--duration", type=settings.argument(settings.seconds(0.1, 1e7)),
                        help="stop after this many seconds (default: until Ctrl-C)")
    parser.add_argument("--customers", type=settings.argument(settings.count(0, 100_000)),
                        default=50, help="sample ERP customers to start with (default 50)")
    parser.add_argument("--interval", type=settings.argument(settings.seconds(1, 86400)),
                        default=10.0,
                        help="seconds between runs of each mapping (default 10)")
    parser.add_argument("--crm-port", type=settings.PORT, default=8080,
                        help="port of the local CRM (a free one if taken)")
    parser.add_argument("--metrics-address", type=settings.argument(settings.address),
                        default="127.0.0.1:9465",
                        help="HOST:PORT of /metrics and the webhook ('' for none; default "
                             "127.0.0.1:9465)")
    parser.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from worker.demo import Demo, DemoOptions

    if logging.getLogger().level <= logging.INFO:
        # The demo shows its own view; the worker's log lines would scroll it away.
        logging.getLogger().setLevel(logging.WARNING)
    demo = Demo(DemoOptions(duration=args.duration, customers=args.customers,
                            interval=timedelta(seconds=args.interval),
                            crm_port=args.crm_port, metrics_address=args.metrics_address))
    try:
        demo.start()
    except KeyboardInterrupt:
        return demo.finish()
    return demo.run()
