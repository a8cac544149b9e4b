"""Recovery of updates: the values an update in flight will leave, committed before it is sent.

Revision ID: 0007_pending_writes
Revises: 0006_remote_probe
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0007_pending_writes"
down_revision = "0006_remote_probe"
branch_labels = None
depends_on = None

UPGRADE = r"""
-- The snapshot a coupled record's update (or delete) will leave when the service applies it,
-- committed before the write is sent and cleared when its outcome is recorded. A pass that
-- finds it set (the answer was lost) compares the CRM's values with it: a value equal to
-- crmsync's own unconfirmed write is crmsync's, not a CRM user's edit.
ALTER TABLE crmsync.couplings ADD COLUMN pending_values jsonb;
CREATE INDEX couplings_pending ON crmsync.couplings (mapping_name)
    WHERE pending_values IS NOT NULL;
"""

DOWNGRADE = r"""
DROP INDEX crmsync.couplings_pending;
ALTER TABLE crmsync.couplings DROP COLUMN pending_values;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
