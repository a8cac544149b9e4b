"""The sync job kinds. Until the sync engine is installed these are placeholders that
only record their outcome (the README says so); the engine replaces them through
``worker.jobs.load_handlers``."""

from __future__ import annotations

import sqlalchemy as sa

from worker.jobs import RunContext, RunResult
from worker.sync.order import topological_order


def sync_mapping(ctx: RunContext) -> RunResult:
    return RunResult(message=f"{ctx.entry.mapping_name}: placeholder run (no sync engine yet)")


def sync_all_modified(ctx: RunContext) -> RunResult:
    order = topological_order(load_dependencies(ctx))
    return RunResult(message="placeholder run in order: " + ", ".join(order))


def load_dependencies(ctx: RunContext) -> dict[str, set[str]]:
    with ctx.engine.connect() as conn:
        names = conn.scalars(sa.text(
            "SELECT name FROM crmsync.integration_table_mappings WHERE enabled "
            "ORDER BY created_at, name")).all()
        deps: dict[str, set[str]] = {n: set() for n in names}
        for child, parent in conn.execute(sa.text(
                "SELECT mapping_name, depends_on FROM crmsync.integration_table_mapping_dependencies")):
            if child in deps:
                deps[child].add(parent)
    return deps
