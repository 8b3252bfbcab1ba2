"""Refused calls counted, not stored one row each: ``calls.repeats``.

A raw record may stand for several calls: the gateway writes the refusals past a key's
``refusal_records_per_minute`` as one record per minute and kind, and an event may say how
many calls it stands for. Every rollup measure that counts calls counts ``repeats``. Records
stored before this revision were one call each: the default 1 leaves every figure as it was,
so no rollup changes.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN on both databases: nothing is copied, the default fills the rows.
    op.add_column("calls", sa.Column("repeats", sa.Integer, nullable=False,
                                     server_default="1"))


def downgrade() -> None:
    # The rollups keep counting every call an aggregated record stood for; the raw records
    # then read as one call each (``db check`` would show the difference).
    op.drop_column("calls", "repeats")
