"""Every query on the view ``crmsync.record_status`` (revision 0010): one row per record of
every mapping that crmsync knows, with its state in four words — ``synced``, ``failed``,
``skipped``, ``pending`` (a write in flight, or a lookup waiting for its parent to be
coupled). The view is the supported way for the ERP's own screens to show a record's CRM
status; ``crmsync records`` prints it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from worker.db.engine import translate_errors

STATES = ("synced", "failed", "skipped", "pending")
COLUMNS = ("mapping_name", "local_id", "business_key", "remote_id", "state", "skipped",
           "last_synced_at", "last_error", "last_error_at")


def records(engine: Engine, mapping: str, *, state: str | None = None
            ) -> Iterator[dict[str, Any]]:
    """The mapping's records by business key (then local id, then CRM id), streamed from
    the server in batches, of one state or all."""
    where = " AND state = :state" if state is not None else ""
    statement = sa.text(
        f"SELECT {', '.join(COLUMNS)} FROM crmsync.record_status WHERE mapping_name = :m"
        f"{where} ORDER BY business_key NULLS LAST, local_id NULLS LAST, remote_id")
    with translate_errors(), engine.connect() as conn:
        result = conn.execution_options(yield_per=1000).execute(
            statement, {"m": mapping, "state": state})
        for row in result.mappings():
            yield dict(row)
