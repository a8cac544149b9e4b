"""Administration: business keys on error rows, mapping defaults.

Revision ID: 0005_administration
Revises: 0004_job_queue_limits
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0005_administration"
down_revision = "0004_job_queue_limits"
branch_labels = None
depends_on = None

UPGRADE = r"""
-- The record's business key (customer no, currency code ...) on each error row, named by a
-- mapping setting, so an administrator finds the record without looking up ids.
ALTER TABLE crmsync.integration_table_mappings ADD COLUMN business_key_column text;
ALTER TABLE crmsync.sync_job_errors ADD COLUMN business_key text;
-- New mappings create records for uncoupled ones, as NAV's setup defaults do; a mapping set
-- to only-coupled with nothing coupled is reported by check and by mappings apply.
ALTER TABLE crmsync.integration_table_mappings ALTER COLUMN sync_only_coupled SET DEFAULT false;
"""

DOWNGRADE = r"""
ALTER TABLE crmsync.integration_table_mappings ALTER COLUMN sync_only_coupled SET DEFAULT true;
ALTER TABLE crmsync.sync_job_errors DROP COLUMN business_key;
ALTER TABLE crmsync.integration_table_mappings DROP COLUMN business_key_column;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
