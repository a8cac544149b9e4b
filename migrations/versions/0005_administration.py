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
SELECT 1;
"""

DOWNGRADE = r"""
SELECT 1;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
