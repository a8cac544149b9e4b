"""A plugin for tests (``CRMSYNC_PLUGINS=tests.support.handlers``): every job kind becomes a
job that sleeps ``parameters.sleep`` seconds (checking for cancellation), then fails when
``parameters.fail`` is set or reports ``parameters.changed``. It uses the worker's own
plugin seam; the database, the worker and the CLI are the real ones."""

from __future__ import annotations

import time

from worker.errors import JobError
from worker.jobs import Handlers, RunContext, RunResult
from worker.queue.models import JobKind


def scripted(ctx: RunContext) -> RunResult:
    params = ctx.entry.parameters
    deadline = time.monotonic() + float(params.get("sleep", 0))
    while time.monotonic() < deadline:
        ctx.raise_if_cancelled()
        time.sleep(min(0.02, max(deadline - time.monotonic(), 0)))
    if params.get("fail"):
        raise JobError(str(params["fail"]))
    return RunResult(message="scripted", changed=params.get("changed"))


def register(handlers: Handlers) -> None:
    for kind in JobKind:
        handlers[kind] = scripted
