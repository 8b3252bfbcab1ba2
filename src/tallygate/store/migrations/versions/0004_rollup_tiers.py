"""Coarser rollup tiers: hourly and daily, every grain also without the key, minute totals.

A 30-day view of all keys then reads a few hundred daily rows instead of a row per key,
model and call type per quarter-hour. The new tables are filled from the rollups already
stored (minutes from ``rollup_1m``, the rest from ``rollup_15m``), so nothing is lost and
raw records past their retention are not needed.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

MEASURES = (
    "calls", "success_calls", "failed_calls", "rate_limited_calls", "input_tokens",
    "output_tokens", "cached_input_tokens", "reasoning_tokens", "total_tokens", "cost_nano",
    "latency_ms_sum", "latency_count", "ttft_ms_sum", "ttft_count", "estimated_calls",
)
WIDTHS = {"api_key_id": 64, "model": 200, "model_category": 20, "call_type": 10}
KEYED = tuple(WIDTHS)
KEYLESS = KEYED[1:]
# name, grain in seconds, dimensions, filled from
NEW_TIERS = (
    ("rollup_1m_all", 60, KEYLESS, "rollup_1m"),
    ("rollup_1m_key", 60, ("api_key_id",), "rollup_1m"),
    ("rollup_1m_total", 60, (), "rollup_1m"),
    ("rollup_15m_all", 900, KEYLESS, "rollup_15m"),
    ("rollup_1h", 3600, KEYED, "rollup_15m"),
    ("rollup_1h_all", 3600, KEYLESS, "rollup_15m"),
    ("rollup_1d", 86400, KEYED, "rollup_15m"),
    ("rollup_1d_all", 86400, KEYLESS, "rollup_15m"),
)


def upgrade() -> None:
    # One key's rows without reading every key's, in the tiers 0001 made too.
    op.create_index("ix_rollup_1m_key", "rollup_1m", ["api_key_id", "bucket"])
    op.create_index("ix_rollup_15m_key", "rollup_15m", ["api_key_id", "bucket"])
    for name, grain, dimensions, source in NEW_TIERS:
        bucket = sa.Column("bucket", sa.BigInteger, primary_key=True)
        columns: list[sa.Column[Any]] = [
            sa.Column(d, sa.String(WIDTHS[d]), primary_key=True) for d in dimensions]
        key_first = dimensions == ("api_key_id",)  # clustered by key: one key's minutes
        op.create_table(
            name,
            *([*columns, bucket] if key_first else [bucket, *columns]),
            *(sa.Column(measure, sa.BigInteger, nullable=False) for measure in MEASURES),
            sqlite_with_rowid=False,
        )
        if "api_key_id" in dimensions and not key_first:
            op.create_index(f"ix_{name}_key", name, ["api_key_id", "bucket"])
        names = ", ".join(["bucket", *dimensions, *MEASURES])
        sums = ", ".join([f"bucket / {grain} * {grain}", *dimensions,
                          *(f"sum({m})" for m in MEASURES)])
        groups = ", ".join(str(i + 1) for i in range(1 + len(dimensions)))
        op.execute(f"INSERT INTO {name} ({names}) SELECT {sums} FROM {source} "
                   f"GROUP BY {groups}")


def downgrade() -> None:
    for name, *_ in reversed(NEW_TIERS):
        op.drop_table(name)
    op.drop_index("ix_rollup_15m_key", "rollup_15m")
    op.drop_index("ix_rollup_1m_key", "rollup_1m")
