"""Drift audits: the last result of ``crmsync audit`` per mapping (the gauge
``crmsync_drift_records`` reads it), the job kind 'audit' that runs one on a schedule, and
``record_status`` showing a record that an audit put on a pass's retry list as pending.

Revision ID: 0011_drift_audits
Revises: 0010_record_status
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0011_drift_audits"
down_revision = "0010_record_status"
branch_labels = None
depends_on = None

UPGRADE = r"""
CREATE TABLE crmsync.audits (
    mapping_name  text PRIMARY KEY
        CONSTRAINT audits_mapping_must_exist
        REFERENCES crmsync.integration_table_mappings (name)
        ON UPDATE CASCADE ON DELETE CASCADE,
    started_at    timestamptz NOT NULL,
    finished_at   timestamptz NOT NULL DEFAULT now(),
    audited       integer NOT NULL,   -- coupled records compared
    drifted       integer NOT NULL,   -- of which differ without a captured change
    fixed         integer NOT NULL DEFAULT 0  -- put on a pass's retry list (--fix)
);

ALTER TABLE crmsync.job_queue_entries
    DROP CONSTRAINT job_queue_entries_job_kind_must_be_known,
    ADD CONSTRAINT job_queue_entries_job_kind_must_be_known
        CHECK (job_kind IN ('sync_mapping', 'sync_all_modified', 'cleanup', 'audit'));

CREATE OR REPLACE VIEW crmsync.record_status AS
SELECT c.mapping_name,
       c.local_id,
       COALESCE(c.synced_values -> 'l' ->> bk.field_key, err.business_key) AS business_key,
       c.remote_id,
       CASE WHEN c.skipped THEN 'skipped'
            WHEN (c.last_result_to = 'failure' OR c.last_result_from = 'failure')
                 AND (c.last_error LIKE '% must be coupled to a record in %'
                      OR c.last_error LIKE 'drift found by crmsync audit%') THEN 'pending'
            WHEN c.last_result_to = 'failure' OR c.last_result_from = 'failure' THEN 'failed'
            WHEN c.state <> 'coupled' OR c.pending_values IS NOT NULL
                 OR c.last_synced_at IS NULL THEN 'pending'
            ELSE 'synced' END AS state,
       c.skipped,
       c.last_synced_at,
       c.last_error,
       err.created_at AS last_error_at
  FROM crmsync.couplings c
  JOIN crmsync.integration_table_mappings m ON m.name = c.mapping_name
  LEFT JOIN LATERAL (
        SELECT f.id::text AS field_key FROM crmsync.integration_field_mappings f
         WHERE f.mapping_name = c.mapping_name AND f.local_column = m.business_key_column
         ORDER BY f.id LIMIT 1) bk ON true
  LEFT JOIN LATERAL (
        SELECT e.created_at, e.business_key FROM crmsync.sync_job_errors e
         WHERE (c.last_result_to = 'failure' OR c.last_result_from = 'failure')
           AND e.job_id IN (c.last_job_to, c.last_job_from)
           AND (e.local_id = c.local_id OR e.remote_id = c.remote_id)
         ORDER BY e.created_at DESC, e.id DESC LIMIT 1) err ON true
UNION ALL
SELECT u.mapping_name, u.local_id, u.business_key, u.remote_id,
       CASE WHEN u.message LIKE '% must be coupled to a record in %' THEN 'pending'
            ELSE 'failed' END,
       false, NULL::timestamptz, u.message, u.created_at
  FROM (SELECT DISTINCT ON (l.mapping_name, COALESCE(e.local_id, e.remote_id))
               l.mapping_name, e.local_id, e.remote_id, e.business_key, e.message,
               e.created_at
          FROM crmsync.mapping_last_sync_jobs l
          JOIN crmsync.sync_job_errors e ON e.job_id = l.job_id
         WHERE COALESCE(e.local_id, e.remote_id) IS NOT NULL
         ORDER BY l.mapping_name, COALESCE(e.local_id, e.remote_id), e.created_at DESC,
                  e.id DESC) u
 WHERE NOT EXISTS (SELECT 1 FROM crmsync.couplings c
                    WHERE c.mapping_name = u.mapping_name
                      AND (c.local_id = u.local_id OR c.remote_id = u.remote_id));
"""

DOWNGRADE = r"""
CREATE OR REPLACE VIEW crmsync.record_status AS
SELECT c.mapping_name,
       c.local_id,
       COALESCE(c.synced_values -> 'l' ->> bk.field_key, err.business_key) AS business_key,
       c.remote_id,
       CASE WHEN c.skipped THEN 'skipped'
            WHEN (c.last_result_to = 'failure' OR c.last_result_from = 'failure')
                 AND c.last_error LIKE '% must be coupled to a record in %' THEN 'pending'
            WHEN c.last_result_to = 'failure' OR c.last_result_from = 'failure' THEN 'failed'
            WHEN c.state <> 'coupled' OR c.pending_values IS NOT NULL
                 OR c.last_synced_at IS NULL THEN 'pending'
            ELSE 'synced' END AS state,
       c.skipped,
       c.last_synced_at,
       c.last_error,
       err.created_at AS last_error_at
  FROM crmsync.couplings c
  JOIN crmsync.integration_table_mappings m ON m.name = c.mapping_name
  LEFT JOIN LATERAL (
        SELECT f.id::text AS field_key FROM crmsync.integration_field_mappings f
         WHERE f.mapping_name = c.mapping_name AND f.local_column = m.business_key_column
         ORDER BY f.id LIMIT 1) bk ON true
  LEFT JOIN LATERAL (
        SELECT e.created_at, e.business_key FROM crmsync.sync_job_errors e
         WHERE (c.last_result_to = 'failure' OR c.last_result_from = 'failure')
           AND e.job_id IN (c.last_job_to, c.last_job_from)
           AND (e.local_id = c.local_id OR e.remote_id = c.remote_id)
         ORDER BY e.created_at DESC, e.id DESC LIMIT 1) err ON true
UNION ALL
SELECT u.mapping_name, u.local_id, u.business_key, u.remote_id,
       CASE WHEN u.message LIKE '% must be coupled to a record in %' THEN 'pending'
            ELSE 'failed' END,
       false, NULL::timestamptz, u.message, u.created_at
  FROM (SELECT DISTINCT ON (l.mapping_name, COALESCE(e.local_id, e.remote_id))
               l.mapping_name, e.local_id, e.remote_id, e.business_key, e.message,
               e.created_at
          FROM crmsync.mapping_last_sync_jobs l
          JOIN crmsync.sync_job_errors e ON e.job_id = l.job_id
         WHERE COALESCE(e.local_id, e.remote_id) IS NOT NULL
         ORDER BY l.mapping_name, COALESCE(e.local_id, e.remote_id), e.created_at DESC,
                  e.id DESC) u
 WHERE NOT EXISTS (SELECT 1 FROM crmsync.couplings c
                    WHERE c.mapping_name = u.mapping_name
                      AND (c.local_id = u.local_id OR c.remote_id = u.remote_id));
DELETE FROM crmsync.job_queue_entries WHERE job_kind = 'audit';
ALTER TABLE crmsync.job_queue_entries
    DROP CONSTRAINT job_queue_entries_job_kind_must_be_known,
    ADD CONSTRAINT job_queue_entries_job_kind_must_be_known
        CHECK (job_kind IN ('sync_mapping', 'sync_all_modified', 'cleanup'));
DROP TABLE crmsync.audits;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
