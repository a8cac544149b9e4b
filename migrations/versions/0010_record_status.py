"""``crmsync.record_status``: one row per record of every mapping that crmsync knows — each
coupling (synced, failed, skipped, a create or an update in flight, a lookup waiting for its
parent) and each uncoupled record the newest job of its mapping failed — for ``crmsync records`` and
for the ERP's own screens (a view: grant SELECT on it to a role, nothing else).

Revision ID: 0010_record_status
Revises: 0009_field_apply_on
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0010_record_status"
down_revision = "0009_field_apply_on"
branch_labels = None
depends_on = None

# state: 'skipped' (excluded after the same error twice, until retry-skipped), 'failed',
# 'pending' (a create or an update whose outcome is not recorded yet, a record coupled and
# never synchronized, or a lookup to a record not coupled yet: its failure is retried by
# every pass and passes by itself once the parent is coupled), else 'synced'. The lookup's
# failure is told by its message, which worker/sync/lookups.py and local_writes.py write as
# "<column> <value> must be coupled to a record in <entity set or table> (mapping <name>)".
# business_key: the business key column's value at the last sync (the coupling's snapshot),
# else the one the last error recorded. A record without a coupling is listed when the
# newest job of its mapping (in either direction) failed it: a failure older than that is
# history (crmsync errors), not the record's state — e.g. after its coupling was removed.
UPGRADE = r"""
CREATE VIEW crmsync.record_status AS
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
COMMENT ON VIEW crmsync.record_status IS
    'One row per record crmsync knows: coupled (synced, failed, skipped, pending) or an '
    'uncoupled record whose last attempt failed. Read-only; grant SELECT on it to the role '
    'of the ERP''s screens (and USAGE on schema crmsync), nothing else.';
"""

DOWNGRADE = r"""
DROP VIEW crmsync.record_status;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
