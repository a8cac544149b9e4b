"""The SQL of the worker's queue operations on the job queue tables, readable in one place;
worker/queue/manager.py runs them. (The administrator's writes are in editing.py.)"""

from __future__ import annotations

import sqlalchemy as sa

# The rows a claim considers, in (priority, next_run_at, id) order, each locked or skipped:
# the due entries that may start now, and the held ones whose 'waiting' mark is not yet
# what holds them (so a held entry is marked once, and then passed over by an index probe
# per rule). Nothing here grows with the number of entries or of due entries:
# - the distinct priorities are walked through the claim index (one probe each), and per
#   priority the due rows are read from the same index up to :limit;
# - category and mapping checks are probes of the partial unique indexes of running
#   entries; sync_all_modified's check is a probe of the running entries' index;
# - a parent counts as failed while its newest sync job in either direction is 'failed' or
#   'abandoned' (record-level failures do not count; a disabled parent never runs again,
#   so it holds nobody), read from mapping_ancestors (the dependency closure) and
#   mapping_last_sync_jobs, both kept by triggers (revision 0008);
# - a child waits while a direct parent's entry is running or due (so parents sync first
#   in every cycle; a grandparent holds through the parent, which is then due too): a
#   probe of the running entries per mapping and one of the due entries per mapping (the
#   needless q.id <> e.id keeps them probes per row, where the planner would otherwise
#   hash every sync entry of the table once per claim).
# Two workers never wait for each other here (SKIP LOCKED); a rule they might both break
# at the same moment is caught by the unique indexes and the exclusion constraint when the
# claim is written (CLAIM_ROWS).
CLAIMABLE = sa.text(
    """
    WITH RECURSIVE priorities (priority) AS (
        (SELECT e.priority FROM crmsync.job_queue_entries e
          WHERE e.status IN ('ready', 'waiting', 'on_hold_inactivity') AND NOT e.schedule_changed
          ORDER BY e.priority LIMIT 1)
        UNION ALL
        SELECT (SELECT e.priority FROM crmsync.job_queue_entries e
                 WHERE e.status IN ('ready', 'waiting', 'on_hold_inactivity')
                   AND NOT e.schedule_changed AND e.priority > p.priority
                 ORDER BY e.priority LIMIT 1)
          FROM priorities p WHERE p.priority IS NOT NULL
    )
    SELECT c.* FROM priorities p CROSS JOIN LATERAL (
        SELECT e.*, h.hold
          FROM crmsync.job_queue_entries e
         CROSS JOIN LATERAL (SELECT COALESCE(
               (SELECT 'waiting for parent: '
                       || string_agg(a.ancestor || ' sync job ' || j.job_id || ' ' || j.status,
                                     ', ' ORDER BY a.ancestor, j.direction)
                  FROM crmsync.mapping_ancestors a
                  JOIN crmsync.mapping_last_sync_jobs j ON j.mapping_name = a.ancestor
                  JOIN crmsync.integration_table_mappings m ON m.name = a.ancestor AND m.enabled
                 WHERE e.job_kind = 'sync_mapping' AND a.mapping_name = e.mapping_name
                   AND j.status IN ('failed', 'abandoned')),
               CASE WHEN e.category_code IS NOT NULL AND EXISTS (
                        SELECT 1 FROM crmsync.job_queue_entries r
                         WHERE r.status = 'in_process' AND r.category_code = e.category_code)
                    THEN 'waiting for category ' || e.category_code END,
               CASE WHEN (e.mapping_name IS NOT NULL AND EXISTS (
                             SELECT 1 FROM crmsync.job_queue_entries r
                              WHERE r.status = 'in_process' AND r.mapping_name = e.mapping_name
                                AND r.id <> e.id))
                      OR (e.job_kind IN ('sync_mapping', 'sync_all_modified') AND EXISTS (
                             SELECT 1 FROM crmsync.job_queue_entries r
                              WHERE r.status = 'in_process' AND r.job_kind = 'sync_all_modified'
                                AND r.id <> e.id))
                      OR (e.job_kind = 'sync_all_modified' AND EXISTS (
                             SELECT 1 FROM crmsync.job_queue_entries r
                              WHERE r.status = 'in_process' AND r.job_kind = 'sync_mapping'))
                    THEN 'waiting: mapping running in another entry' END,
               CASE WHEN e.job_kind = 'sync_mapping' AND EXISTS (
                        SELECT 1 FROM crmsync.integration_table_mapping_dependencies d
                         WHERE d.mapping_name = e.mapping_name
                           AND (EXISTS (
                                   SELECT 1 FROM crmsync.job_queue_entries q
                                    WHERE q.mapping_name = d.depends_on
                                      AND q.status = 'in_process' AND q.id <> e.id)
                                OR EXISTS (
                                   SELECT 1 FROM crmsync.job_queue_entries q
                                    WHERE q.mapping_name = d.depends_on
                                      AND q.job_kind = 'sync_mapping' AND q.id <> e.id
                                      AND q.status IN ('ready', 'waiting', 'on_hold_inactivity')
                                      AND q.next_run_at <= :now)))
                    THEN 'waiting for parent: running or due first' END) AS hold
               OFFSET 0) h  -- evaluated once per row, not once per reference
         WHERE e.priority = p.priority
           AND e.status IN ('ready', 'waiting', 'on_hold_inactivity') AND NOT e.schedule_changed
           AND e.next_run_at <= :now
           AND (CAST(:only AS bigint) IS NULL OR e.id = :only)
           AND (h.hold IS NULL OR e.status <> 'waiting'
                OR e.waiting_reason IS DISTINCT FROM h.hold)
         ORDER BY e.next_run_at, e.id
         LIMIT :limit
           FOR UPDATE OF e SKIP LOCKED
    ) c
     ORDER BY c.priority, c.next_run_at, c.id
     LIMIT :limit
    """
)
# A claim's transaction: JIT off (its compilation would cost more than the statement), and
# a claim that meets another worker's uncommitted claim of the same category waits for it
# at most 100 ms (then it claims again) instead of up to the deadlock timeout. With the
# clock it reads, from their indexes, whether schedules were edited (to be recomputed
# first) and when the next entry becomes due (for the worker's wake-up timer).
CLAIM_SETTINGS = sa.text(
    """
    SELECT set_config('jit', 'off', true), set_config('lock_timeout', '100ms', true),
           clock_timestamp() AS now,
           EXISTS (SELECT 1 FROM crmsync.job_queue_entries
                    WHERE schedule_changed AND status <> 'in_process') AS edited,
           (SELECT min(next_run_at) FROM crmsync.job_queue_entries
             WHERE status IN ('ready', 'waiting', 'on_hold_inactivity')
               AND next_run_at > clock_timestamp()) AS next_due
    """
)

# How many rows a claim reads per free slot: room for rows it passes over (a second entry
# of a category it takes, one moved into its window, one to mark 'waiting').
CLAIM_ROWS_PER_SLOT = 4

# One statement writes a batch of claims: a log row per run (unless that occurrence already
# ran) and the entry in_process with its lease. started_at is read now, after the rows were
# chosen: a run of the same category that finished just before (and freed it) never
# appears to overlap this one. Returns the entries claimed.
CLAIM_ROWS = sa.text(
    """
    WITH chosen (id, scheduled_for) AS (
        SELECT * FROM unnest(CAST(:ids AS bigint[]), CAST(:scheduled AS timestamptz[]))
    ), logged AS (
        INSERT INTO crmsync.job_queue_log_entries
               (entry_id, job_kind, mapping_name, description, category_code, worker_id,
                scheduled_for, started_at)
        SELECT e.id, e.job_kind, e.mapping_name, e.description, e.category_code, :worker_id,
               c.scheduled_for, clock_timestamp()
          FROM chosen c JOIN crmsync.job_queue_entries e ON e.id = c.id
        ON CONFLICT (entry_id, scheduled_for) WHERE status <> 'abandoned' DO NOTHING
        RETURNING id, entry_id, scheduled_for, started_at
    ), claimed AS (
        UPDATE crmsync.job_queue_entries e
           SET status = 'in_process', locked_by = :worker_id,
               lease_expires_at = l.started_at + :lease, running_since = l.started_at,
               scheduled_for = l.scheduled_for, current_log_id = l.id, waiting_reason = NULL
          FROM logged l
         WHERE e.id = l.entry_id
        RETURNING e.id
    )
    SELECT l.entry_id, l.id AS log_id, l.started_at
      FROM logged l JOIN claimed c ON c.id = l.entry_id
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

# The runs a worker records, those it still owns, locked in entry order (as the heartbeat
# locks them: never a deadlock); with the records the other side confirmed in each run's
# sync jobs (a failed run that confirmed some is not a failure in a row).
OWNED_RUNS = sa.text(
    """
    SELECT e.*, clock_timestamp() AS finishing_at,
           (SELECT COALESCE(sum(s.inserted + s.modified + s.deleted + s.coupled), 0)
              FROM crmsync.sync_jobs s
             WHERE s.job_queue_log_entry_id = e.current_log_id) AS confirmed
      FROM crmsync.job_queue_entries e
     WHERE e.id = ANY(CAST(:ids AS bigint[])) AND e.locked_by = :w
       AND e.current_log_id = ANY(CAST(:logs AS bigint[]))
     ORDER BY e.id
       FOR UPDATE OF e
    """
)

# The runs' log rows and their entries' next runs, in one statement for the batch; FINISH_LOG
# alone for a run whose entry is no longer this worker's.
RECORD_RUNS = sa.text(
    """
    WITH run (id, log_id, run_status, message, error, traceback, status, next_run_at,
              attempts, last_error) AS (
        SELECT * FROM unnest(
            CAST(:ids AS bigint[]), CAST(:logs AS bigint[]), CAST(:run_statuses AS text[]),
            CAST(:messages AS text[]), CAST(:errors AS text[]), CAST(:tracebacks AS text[]),
            CAST(:statuses AS text[]), CAST(:next_runs AS timestamptz[]),
            CAST(:attempts AS integer[]), CAST(:last_errors AS text[]))
    ), logged AS (
        UPDATE crmsync.job_queue_log_entries l
           SET status = r.run_status, finished_at = :now, message = r.message,
               error_message = r.error, error_traceback = r.traceback
          FROM run r
         WHERE l.id = r.log_id AND l.status = 'in_process'
    )
    UPDATE crmsync.job_queue_entries e
       SET status = r.status, next_run_at = r.next_run_at, attempts = r.attempts,
           last_error = r.last_error, locked_by = NULL, lease_expires_at = NULL,
           running_since = NULL, scheduled_for = NULL, current_log_id = NULL,
           schedule_changed = false, waiting_reason = NULL
      FROM run r
     WHERE e.id = r.id
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
    UPDATE crmsync.job_queue_entries e SET status = 'waiting', waiting_reason = w.reason
      FROM unnest(CAST(:ids AS bigint[]), CAST(:reasons AS text[])) AS w (id, reason)
     WHERE e.id = w.id
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
