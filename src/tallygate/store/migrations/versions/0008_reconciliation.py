"""Reconciliation runs: each comparison of the ledger with a provider's report, kept so the
page shows the last one (ledger/reconciler.py).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reconciliation_runs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("provider", sa.String(100), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("start_day", sa.String(10), nullable=False),
        sa.Column("end_day", sa.String(10), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("result", sa.Text),
        sa.Column("error", sa.Text),
    )
    op.create_index("ix_reconciliation_runs_provider", "reconciliation_runs",
                    ["provider", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_reconciliation_runs_provider", "reconciliation_runs")
    op.drop_table("reconciliation_runs")
