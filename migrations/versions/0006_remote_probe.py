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
SELECT 1;
"""

DOWNGRADE = r"""
SELECT 1;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
