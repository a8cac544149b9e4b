"""Values written only when a record is created (Business Central's configuration templates).

``integration_field_mappings.apply_on``: 'always' (every sync writes the field) or 'create'
(the field is written only when the record is created on the destination side, in either
direction; later syncs neither write it nor count a difference in it as a change or a
conflict).

Revision ID: 0009_field_apply_on
Revises: 0008_job_queue_claims
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0009_field_apply_on"
down_revision = "0008_job_queue_claims"
branch_labels = None
depends_on = None

UPGRADE = r"""
ALTER TABLE crmsync.integration_field_mappings
    ADD COLUMN apply_on text NOT NULL DEFAULT 'always'
        CONSTRAINT field_mappings_apply_on_must_be_known
        CHECK (apply_on IN ('always', 'create'));
"""

DOWNGRADE = r"""
ALTER TABLE crmsync.integration_field_mappings DROP COLUMN apply_on;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
