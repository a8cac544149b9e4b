"""The 'audit' job kind: ``crmsync audit`` on a schedule (e.g. nightly). ``parameters``:
``mappings`` (a list of names; default every enabled mapping) and ``fix`` (true: the
drifted records are put on the next run's retry list). The run's message gives the counts;
the gauge ``crmsync_drift_records`` the drift of each mapping's last audit."""

from __future__ import annotations

from worker.errors import JobError
from worker.jobs import RunContext, RunResult
from worker.sync.audit import audit_run


def audit(ctx: RunContext) -> RunResult:
    names = ctx.entry.parameters.get("mappings")
    fix = ctx.entry.parameters.get("fix", False)
    if names is not None and (not isinstance(names, list)
                              or not all(isinstance(n, str) for n in names)):
        raise JobError(f"parameters.mappings: expected a list of mapping names, got {names!r}")
    if not isinstance(fix, bool):
        raise JobError(f"parameters.fix: expected true or false, got {fix!r}")
    results = audit_run(ctx.services.sync, names, fix=fix,
                        check_cancelled=ctx.raise_if_cancelled)
    text = "; ".join(f"{r.mapping}: {r.audited} audited, {r.drifted} drifted"
                     + (f", {r.fixed} fixed" if fix else "")
                     + (f", not audited: {r.error}" if r.error else "") for r in results)
    if any(r.error for r in results):
        raise JobError(text)
    return RunResult(message=text or "no mapping to audit")
