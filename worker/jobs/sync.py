"""The sync job kinds: 'sync_mapping' runs one mapping, 'sync_all_modified' runs every
enabled mapping in dependency order (the seed's "Synchronize Modified Records"), both on
the process' one sync engine (``RunContext.services``)."""

from __future__ import annotations

from worker.errors import JobError
from worker.jobs import RunContext, RunResult


def sync_mapping(ctx: RunContext) -> RunResult:
    assert ctx.entry.mapping_name is not None
    summary = ctx.services.sync.run_mapping(
        ctx.entry.mapping_name, log_entry_id=ctx.log_id,
        full=bool(ctx.entry.parameters.get("full")), check_cancelled=ctx.raise_if_cancelled)
    if summary.error and not summary.passes:
        raise JobError(f"{ctx.entry.mapping_name}: {summary.error}")
    return RunResult(message=summary.describe(), changed=summary.changed)


def sync_all_modified(ctx: RunContext) -> RunResult:
    summaries = ctx.services.sync.run_all(
        log_entry_id=ctx.log_id, full=bool(ctx.entry.parameters.get("full")),
        check_cancelled=ctx.raise_if_cancelled)
    failed = [s for s in summaries if s.error]
    text = " | ".join(s.describe() for s in summaries)
    if failed:
        raise JobError(f"{len(failed)} of {len(summaries)} mappings failed: {text}")
    return RunResult(message=text, changed=any(s.changed for s in summaries))
