"""Freshness: per-mapping remote probe interval.

Revision ID: 0006_remote_probe
Revises: 0005_administration
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0006_remote_probe"
down_revision = "0005_administration"
branch_labels = None
depends_on = None

UPGRADE = r"""
-- How often the worker asks the CRM whether anything changed for a mapping whose entry is
-- on inactivity hold (one small read). NULL: at the entry's run_interval.
ALTER TABLE crmsync.integration_table_mappings
    ADD COLUMN remote_probe_interval interval
        CONSTRAINT integration_table_mappings_remote_probe_interval_must_be_positive
        CHECK (remote_probe_interval > interval '0');

-- Workers cache what their probes need and read it again on the job queue's notification;
-- a change of what a probe asks (interval, set, filter, direction, enabled) notifies too.
-- Watermark updates by the passes are not listed: they come with the run's own entry update.
CREATE TRIGGER integration_table_mappings_notify_probe
    AFTER UPDATE OF remote_probe_interval, remote_filter, entity_set, remote_key,
                    remote_modified_on, connection_name, direction, enabled
    ON crmsync.integration_table_mappings
    FOR EACH STATEMENT EXECUTE FUNCTION crmsync.notify_job_queue_changed();
"""

DOWNGRADE = r"""
DROP TRIGGER integration_table_mappings_notify_probe ON crmsync.integration_table_mappings;
ALTER TABLE crmsync.integration_table_mappings DROP COLUMN remote_probe_interval;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
