"""The SQL of the worker's queue operations on the job queue tables, readable in one place;
worker/queue/manager.py runs them. (The administrator's writes are in editing.py.)"""

from __future__ import annotations

import sqlalchemy as sa

# Ancestors are followed transitively; an enabled parent counts as failed while the most
# recent sync job of any of its directions is 'failed' or 'abandoned' (record-level failures
# do not count; a disabled parent never runs again, so it holds nobody). The LATERAL reads
# the newest row per (mapping, direction) from its index.
CANDIDATES = sa.text(
    """
    WITH RECURSIVE ancestors (mapping_name, ancestor) AS (
        SELECT mapping_name, depends_on FROM crmsync.integration_table_mapping_dependencies
        UNION
        SELECT a.mapping_name, d.depends_on
          FROM ancestors a
          JOIN crmsync.integration_table_mapping_dependencies d ON d.mapping_name = a.ancestor
    ), failed_parents AS (
        SELECT a.mapping_name,
               string_agg(a.ancestor || ' sync job ' || j.id || ' ' || j.status, ', '
                          ORDER BY a.ancestor, j.direction) AS parents
          FROM ancestors a
         CROSS JOIN (VALUES ('to_integration'), ('from_integration')) AS dir (direction)
         CROSS JOIN LATERAL (
               SELECT s.id, s.direction, s.status FROM crmsync.sync_jobs s
                WHERE s.mapping_name = a.ancestor AND s.direction = dir.direction
                ORDER BY s.id DESC LIMIT 1) j
          JOIN crmsync.integration_table_mappings m ON m.name = a.ancestor AND m.enabled
         WHERE j.status IN ('failed', 'abandoned')
         GROUP BY a.mapping_name
    )
    SELECT e.*,
           (e.category_code IS NOT NULL AND EXISTS (
               SELECT 1 FROM crmsync.job_queue_entries r
                WHERE r.status = 'in_process' AND r.category_code = e.category_code
           )) AS category_busy,
           EXISTS (
               SELECT 1 FROM crmsync.job_queue_entries r
                WHERE r.status = 'in_process' AND r.id <> e.id
                  AND (r.mapping_name = e.mapping_name
                       OR (r.job_kind = 'sync_all_modified'
                           AND e.job_kind IN ('sync_mapping', 'sync_all_modified'))
                       OR (e.job_kind = 'sync_all_modified' AND r.job_kind = 'sync_mapping'))
           ) AS mapping_busy,
           (e.job_kind = 'sync_mapping' AND EXISTS (
               SELECT 1
                 FROM crmsync.integration_table_mapping_dependencies d
                 JOIN crmsync.job_queue_entries p
                   ON p.mapping_name = d.depends_on AND p.job_kind = 'sync_mapping'
                WHERE d.mapping_name = e.mapping_name
                  AND (p.status = 'in_process'
                       OR (p.status IN ('ready', 'waiting', 'on_hold_inactivity')
                           AND p.next_run_at <= :now))
           )) AS dependency_busy,
           f.parents AS failed_parents
      FROM crmsync.job_queue_entries e
      LEFT JOIN failed_parents f
        ON e.job_kind = 'sync_mapping' AND f.mapping_name = e.mapping_name
     WHERE e.status IN ('ready', 'waiting', 'on_hold_inactivity')
       AND e.next_run_at <= :now AND NOT e.schedule_changed
       AND (CAST(:only AS bigint) IS NULL OR e.id = :only)
     ORDER BY e.priority, e.id
     LIMIT 500
       FOR UPDATE OF e SKIP LOCKED
    """
)

INSERT_LOG = sa.text(
    """
    INSERT INTO crmsync.job_queue_log_entries
           (entry_id, job_kind, mapping_name, description, category_code, worker_id,
            scheduled_for, started_at)
    VALUES (:entry_id, :job_kind, :mapping_name, :description, :category_code, :worker_id,
            :scheduled_for, clock_timestamp())
    ON CONFLICT (entry_id, scheduled_for) WHERE status <> 'abandoned' DO NOTHING
    RETURNING id, started_at
    """
)

MARK_CLAIMED = sa.text(
    """
    UPDATE crmsync.job_queue_entries
       SET status = 'in_process', locked_by = :worker_id, lease_expires_at = :now + :lease,
           running_since = :now, scheduled_for = :scheduled_for, current_log_id = :log_id,
           waiting_reason = NULL
     WHERE id = :id
    """
)

APPLY_DECISION = sa.text(
    """
    UPDATE crmsync.job_queue_entries
       SET status = :status, next_run_at = :next_run_at, attempts = :attempts,
           last_error = :last_error, locked_by = NULL, lease_expires_at = NULL,
           running_since = NULL, scheduled_for = NULL, current_log_id = NULL,
           schedule_changed = false, waiting_reason = NULL
     WHERE id = :id
    """
)

FINISH_LOG = sa.text(
    """
    UPDATE crmsync.job_queue_log_entries
       SET status = :status, finished_at = :now, message = :message,
           error_message = :error, error_traceback = :traceback
     WHERE id = :log_id AND status = 'in_process'
    """
)


MARK_WAITING = sa.text(
    """
    UPDATE crmsync.job_queue_entries SET status = 'waiting', waiting_reason = :reason
     WHERE id = :id AND (status <> 'waiting' OR waiting_reason IS DISTINCT FROM :reason)
    """
)

PUT_IN_ERROR = sa.text(
    """
    UPDATE crmsync.job_queue_entries
       SET status = 'error', next_run_at = NULL, last_error = :message, locked_by = NULL,
           lease_expires_at = NULL, running_since = NULL, scheduled_for = NULL,
           current_log_id = NULL, schedule_changed = false, waiting_reason = NULL
     WHERE id = :id
    """
)

PUT_IN_ERROR_IF_OWNED = sa.text(
    str(PUT_IN_ERROR) + " AND locked_by = :w AND current_log_id = :log")

# A run is orphaned when its lease expired, or when its worker is not registered (a row a
# user set to in_process by hand, or a worker forgotten after long silence): a live worker
# registers before it claims and renews its row with every heartbeat.
ORPHANED_RUNS = sa.text(
    """
    SELECT e.id, e.locked_by, e.current_log_id, e.scheduled_for, e.status
      FROM crmsync.job_queue_entries e
     WHERE e.locked_by IS NOT NULL
       AND (e.lease_expires_at < :now
            OR NOT EXISTS (SELECT 1 FROM crmsync.workers w WHERE w.id = e.locked_by))
       FOR UPDATE OF e SKIP LOCKED
    """
)

# Rescues of one occurrence: a job that kills whichever worker runs it is stopped after a few.
RESCUES_OF_OCCURRENCE = sa.text(
    """
    SELECT count(*) FROM crmsync.job_queue_log_entries
     WHERE entry_id = :id AND scheduled_for = :scheduled_for AND status = 'abandoned'
       AND error_message LIKE 'abandoned: worker % stopped renewing its lease'
    """
)

GIVE_BACK = sa.text(
    """
    UPDATE crmsync.job_queue_entries
       SET status = CASE WHEN status = 'in_process' THEN 'ready' ELSE status END,
           next_run_at = CASE WHEN status = 'in_process' THEN COALESCE(scheduled_for, now())
                              ELSE next_run_at END,
           last_error = CASE WHEN status = 'in_process' THEN :reason ELSE last_error END,
           locked_by = NULL, lease_expires_at = NULL, running_since = NULL,
           scheduled_for = NULL, current_log_id = NULL
     WHERE id = :id
    """
)

FLAGGED = sa.text(
    """
    SELECT e.*,
           (SELECT l.scheduled_for FROM crmsync.job_queue_log_entries l
             WHERE l.entry_id = e.id AND l.status <> 'abandoned'
             ORDER BY l.started_at DESC LIMIT 1) AS last_scheduled_for
      FROM crmsync.job_queue_entries e
     WHERE e.schedule_changed AND e.status <> 'in_process'
       AND (CAST(:ids AS bigint[]) IS NULL OR e.id = ANY(CAST(:ids AS bigint[])))
       AND (CAST(:only AS bigint) IS NULL OR e.id = :only)
     ORDER BY e.id
       FOR UPDATE OF e SKIP LOCKED
    """
)
