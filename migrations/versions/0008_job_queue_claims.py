"""Job queue claims in batches, at a cost independent of the number of entries.

- The claim scans the due entries in (priority, next_run_at, id) order from a partial index
  and stops after the rows it needs; edited schedules are found from their own index.
- The dependency closure (every ancestor of every mapping) is kept in
  ``mapping_ancestors`` by a trigger on the dependencies, instead of a recursive query per
  claim; the newest sync job of each mapping and direction is kept in
  ``mapping_last_sync_jobs`` by a trigger on ``sync_jobs``: a claim reads a child's failed
  parents from these two small tables.
- Without the advisory lock that serialized claims, the database itself keeps
  ``sync_all_modified`` exclusive with every sync entry (an exclusion constraint beside the
  unique indexes of one running entry per category and per mapping), so two workers that
  claim at the same moment cannot break a rule; the later one's conflicting row fails and is
  claimed again from a fresh view.
- The time zone check of an inserted entry answers UTC without reading the whole time zone
  database.

Revision ID: 0008_job_queue_claims
Revises: 0007_pending_writes
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0008_job_queue_claims"
down_revision = "0007_pending_writes"
branch_labels = None
depends_on = None

UPGRADE = r"""
CREATE INDEX job_queue_entries_claim_order
    ON crmsync.job_queue_entries (priority, next_run_at, id)
    WHERE status IN ('ready', 'waiting', 'on_hold_inactivity') AND NOT schedule_changed;
CREATE INDEX job_queue_entries_schedule_changed
    ON crmsync.job_queue_entries (id) WHERE schedule_changed;
CREATE INDEX job_queue_entries_running
    ON crmsync.job_queue_entries (job_kind) WHERE status = 'in_process';
-- A child's check of its parents' due entries: one range of this index per parent.
CREATE INDEX job_queue_entries_due_per_mapping
    ON crmsync.job_queue_entries (mapping_name, next_run_at)
    WHERE mapping_name IS NOT NULL AND status IN ('ready', 'waiting', 'on_hold_inactivity');
-- A failed run's confirmed records are read by its log row (and ON DELETE SET NULL of the
-- log retention finds the jobs by it).
CREATE INDEX sync_jobs_log_entry
    ON crmsync.sync_jobs (job_queue_log_entry_id) WHERE job_queue_log_entry_id IS NOT NULL;

-- sync_all_modified runs alone among the sync entries: its range covers every other
-- entry's, while two sync_mapping entries' ranges (their ids) never meet.
ALTER TABLE crmsync.job_queue_entries
    ADD CONSTRAINT job_queue_entries_sync_all_modified_runs_alone
    EXCLUDE USING gist ((CASE WHEN job_kind = 'sync_all_modified' THEN int8range(NULL, NULL)
                              ELSE int8range(id, id, '[]') END) WITH &&)
    WHERE (status = 'in_process' AND job_kind IN ('sync_mapping', 'sync_all_modified'));

CREATE TABLE crmsync.mapping_ancestors (
    mapping_name text NOT NULL,
    ancestor     text NOT NULL,
    CONSTRAINT mapping_ancestors_pkey PRIMARY KEY (mapping_name, ancestor)
);

CREATE FUNCTION crmsync.refresh_mapping_ancestors() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- Dependencies are a few dozen rows: the whole closure is recomputed per statement.
    DELETE FROM crmsync.mapping_ancestors;
    INSERT INTO crmsync.mapping_ancestors (mapping_name, ancestor)
    WITH RECURSIVE ancestors (mapping_name, ancestor) AS (
        SELECT mapping_name, depends_on FROM crmsync.integration_table_mapping_dependencies
        UNION
        SELECT a.mapping_name, d.depends_on
          FROM ancestors a
          JOIN crmsync.integration_table_mapping_dependencies d ON d.mapping_name = a.ancestor
    )
    SELECT mapping_name, ancestor FROM ancestors;
    RETURN NULL;
END $$;

CREATE TRIGGER mapping_dependencies_refresh_ancestors
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON crmsync.integration_table_mapping_dependencies
    FOR EACH STATEMENT EXECUTE FUNCTION crmsync.refresh_mapping_ancestors();

CREATE TABLE crmsync.mapping_last_sync_jobs (
    mapping_name text NOT NULL,
    direction    text NOT NULL,
    job_id       bigint NOT NULL,
    status       text NOT NULL,
    CONSTRAINT mapping_last_sync_jobs_pkey PRIMARY KEY (mapping_name, direction)
);

-- An upsert (not delete + insert), so that two jobs of one mapping written at once never
-- collide on the key; an older job never replaces a newer one that still exists.
CREATE FUNCTION crmsync.refresh_mapping_last_sync_job(mapping text, dir text)
RETURNS void LANGUAGE sql AS $$
    INSERT INTO crmsync.mapping_last_sync_jobs AS l (mapping_name, direction, job_id, status)
    SELECT s.mapping_name, s.direction, s.id, s.status FROM crmsync.sync_jobs s
     WHERE s.mapping_name = mapping AND s.direction = dir
     ORDER BY s.id DESC LIMIT 1
    ON CONFLICT (mapping_name, direction) DO UPDATE
       SET job_id = EXCLUDED.job_id, status = EXCLUDED.status
     WHERE l.job_id <= EXCLUDED.job_id
        OR NOT EXISTS (SELECT 1 FROM crmsync.sync_jobs s WHERE s.id = l.job_id);
    DELETE FROM crmsync.mapping_last_sync_jobs l
     WHERE l.mapping_name = mapping AND l.direction = dir
       AND NOT EXISTS (SELECT 1 FROM crmsync.sync_jobs s
                        WHERE s.mapping_name = mapping AND s.direction = dir);
$$;

CREATE FUNCTION crmsync.sync_jobs_track_last() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM crmsync.refresh_mapping_last_sync_job(OLD.mapping_name, OLD.direction);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') AND (TG_OP = 'INSERT'
            OR (NEW.mapping_name, NEW.direction) IS DISTINCT FROM
               (OLD.mapping_name, OLD.direction)) THEN
        PERFORM crmsync.refresh_mapping_last_sync_job(NEW.mapping_name, NEW.direction);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER sync_jobs_track_last
    AFTER INSERT OR DELETE OR UPDATE OF status, mapping_name, direction ON crmsync.sync_jobs
    FOR EACH ROW EXECUTE FUNCTION crmsync.sync_jobs_track_last();

CREATE FUNCTION crmsync.sync_jobs_truncated() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM crmsync.mapping_last_sync_jobs;
    RETURN NULL;
END $$;

CREATE TRIGGER sync_jobs_truncated AFTER TRUNCATE ON crmsync.sync_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION crmsync.sync_jobs_truncated();

-- pg_timezone_names reads every zone of the time zone database (some 70 ms): an insert of
-- 1,000 entries took over a minute. UTC, the default, is answered without it.
CREATE OR REPLACE FUNCTION crmsync.is_time_zone_name(tz text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT tz = 'UTC' OR EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = tz)
$$;

-- What is there already.
INSERT INTO crmsync.mapping_ancestors (mapping_name, ancestor)
WITH RECURSIVE ancestors (mapping_name, ancestor) AS (
    SELECT mapping_name, depends_on FROM crmsync.integration_table_mapping_dependencies
    UNION
    SELECT a.mapping_name, d.depends_on
      FROM ancestors a
      JOIN crmsync.integration_table_mapping_dependencies d ON d.mapping_name = a.ancestor
)
SELECT mapping_name, ancestor FROM ancestors;
INSERT INTO crmsync.mapping_last_sync_jobs (mapping_name, direction, job_id, status)
SELECT DISTINCT ON (mapping_name, direction) mapping_name, direction, id, status
  FROM crmsync.sync_jobs ORDER BY mapping_name, direction, id DESC;
"""

DOWNGRADE = r"""
CREATE OR REPLACE FUNCTION crmsync.is_time_zone_name(tz text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = tz)
$$;
DROP TRIGGER sync_jobs_truncated ON crmsync.sync_jobs;
DROP FUNCTION crmsync.sync_jobs_truncated();
DROP TRIGGER sync_jobs_track_last ON crmsync.sync_jobs;
DROP FUNCTION crmsync.sync_jobs_track_last();
DROP FUNCTION crmsync.refresh_mapping_last_sync_job(text, text);
DROP TABLE crmsync.mapping_last_sync_jobs;
DROP TRIGGER mapping_dependencies_refresh_ancestors
    ON crmsync.integration_table_mapping_dependencies;
DROP FUNCTION crmsync.refresh_mapping_ancestors();
DROP TABLE crmsync.mapping_ancestors;
ALTER TABLE crmsync.job_queue_entries
    DROP CONSTRAINT job_queue_entries_sync_all_modified_runs_alone;
DROP INDEX crmsync.sync_jobs_log_entry;
DROP INDEX crmsync.job_queue_entries_due_per_mapping;
DROP INDEX crmsync.job_queue_entries_running;
DROP INDEX crmsync.job_queue_entries_schedule_changed;
DROP INDEX crmsync.job_queue_entries_claim_order;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
