"""Waking entries: the one rule for "this mapping has news", whoever saw it — a local table
changed (the capture's NOTIFY), the remote probe found a change, a Dataverse webhook called.
The mapping's sync entries become due within ``delay`` (out of 'on_hold_inactivity' too),
unless they are due sooner anyway; entries in error or on hold by a user stay as they are."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

_WAKE = sa.text(
    """
    UPDATE crmsync.job_queue_entries e
       SET next_run_at = LEAST(e.next_run_at, now() + :delay),
           status = CASE WHEN e.status = 'on_hold_inactivity' THEN 'ready' ELSE e.status END
      FROM crmsync.integration_table_mappings m
     WHERE e.job_kind = 'sync_mapping' AND e.mapping_name = m.name AND m.enabled
       AND (m.local_table = ANY(:tables) OR m.name = ANY(:names)
            OR (m.connection_name = :connection AND lower(m.entity_set) = ANY(:sets)
                AND m.direction IN ('from_integration', 'bidirectional')))
       AND e.status IN ('ready', 'waiting', 'on_hold_inactivity')
       AND (e.next_run_at IS NULL OR e.next_run_at > now() + :delay)
    RETURNING e.mapping_name
    """)


def wake(conn: Connection, delay: timedelta, *, tables: Sequence[str] = (),
         mappings: Sequence[str] = (), connection: str | None = None,
         entity_sets: Sequence[str] = ()) -> list[str]:
    """Wake the sync entries of the mappings of these local ``tables``, of these
    ``mappings``, and of the mappings reading these ``entity_sets`` of ``connection``
    (lower-case names) from the CRM; returns the mappings of the entries woken."""
    if not (tables or mappings or (connection and entity_sets)):
        return []
    return list(conn.scalars(_WAKE, {
        "delay": delay, "tables": list(tables), "names": list(mappings),
        "connection": connection, "sets": [s.lower() for s in entity_sets]}))
