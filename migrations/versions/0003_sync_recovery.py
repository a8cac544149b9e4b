"""Sync recovery: interrupted sync jobs are closed, pass progress is kept per chunk.

Revision ID: 0003_sync_recovery
Revises: 0002_sync_engine
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0003_sync_recovery"
down_revision = "0002_sync_engine"
branch_labels = None
depends_on = None

UPGRADE = r"""
-- A pass's outcome as a state: 'running' while it runs, 'success', 'failed' (ended by a
-- connection- or mapping-level failure, not by failing records) or 'abandoned' (its process
-- died; closed when the mapping next runs). The queue holds the entries of child mappings
-- while a parent's latest pass failed.
ALTER TABLE crmsync.sync_jobs
    ADD COLUMN status text NOT NULL DEFAULT 'running'
        CONSTRAINT sync_jobs_status_must_be_known
        CHECK (status IN ('running', 'success', 'failed', 'abandoned'));
UPDATE crmsync.sync_jobs
   SET status = CASE WHEN message LIKE 'failed:%' THEN 'failed' ELSE 'success' END
 WHERE finished_at IS NOT NULL;
CREATE INDEX sync_jobs_mapping_direction_latest
    ON crmsync.sync_jobs (mapping_name, direction, id DESC);

-- How a lookup is read back when the service does not follow Dataverse's
-- `_<property>_value` convention (a generic OData v4 service exposes e.g. `currency_ID`).
ALTER TABLE crmsync.integration_field_mappings ADD COLUMN remote_read_property text;

-- Progress of an interrupted local→remote pass: the snapshot it reads up to and the last
-- local key it finished (keys are worked in order). The next pass resumes after that key
-- instead of starting again from the top.
ALTER TABLE crmsync.integration_table_mappings
    ADD COLUMN local_pass_snapshot text,
    ADD COLUMN local_pass_done_key text;

-- The remote mark is "complete" when the read that set it began well after it (by the
-- service's own clock): every record stamped at or before it was read, so the next read
-- asks only for records modified after it instead of re-reading the last second.
ALTER TABLE crmsync.integration_table_mappings
    ADD COLUMN remote_modified_complete boolean NOT NULL DEFAULT false;
"""

DOWNGRADE = r"""
ALTER TABLE crmsync.integration_table_mappings
    DROP COLUMN local_pass_snapshot, DROP COLUMN local_pass_done_key,
    DROP COLUMN remote_modified_complete;
ALTER TABLE crmsync.integration_field_mappings DROP COLUMN remote_read_property;
DROP INDEX crmsync.sync_jobs_mapping_direction_latest;
ALTER TABLE crmsync.sync_jobs DROP COLUMN status;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
