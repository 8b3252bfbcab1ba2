"""Coarser rollup tiers: hourly and daily, and every grain also without the key.

A 30-day view of all keys then reads a few hundred daily rows instead of a row per key,
model and call type per quarter-hour. The new tables are filled from the rollups already
stored (minutes from ``rollup_1m``, the rest from ``rollup_15m``), so nothing is lost and
raw records past their retention are not needed.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from __future__ import annotations

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
# name, grain in seconds, keyed, filled from
NEW_TIERS = (
    ("rollup_1m_all", 60, False, "rollup_1m"),
    ("rollup_15m_all", 900, False, "rollup_15m"),
    ("rollup_1h", 3600, True, "rollup_15m"),
    ("rollup_1h_all", 3600, False, "rollup_15m"),
    ("rollup_1d", 86400, True, "rollup_15m"),
    ("rollup_1d_all", 86400, False, "rollup_15m"),
)


def upgrade() -> None:
    for name, grain, keyed, source in NEW_TIERS:
        dimensions = [d for d in WIDTHS if keyed or d != "api_key_id"]
        op.create_table(
            name,
            sa.Column("bucket", sa.BigInteger, primary_key=True),
            *(sa.Column(d, sa.String(WIDTHS[d]), primary_key=True) for d in dimensions),
            *(sa.Column(measure, sa.BigInteger, nullable=False) for measure in MEASURES),
            sqlite_with_rowid=False,
        )
        if keyed:
            op.create_index(f"ix_{name}_key", name, ["api_key_id", "bucket"])
        columns = ", ".join(["bucket", *dimensions, *MEASURES])
        sums = ", ".join([f"bucket / {grain} * {grain}", *dimensions,
                          *(f"sum({m})" for m in MEASURES)])
        groups = ", ".join(str(i + 1) for i in range(1 + len(dimensions)))
        op.execute(f"INSERT INTO {name} ({columns}) SELECT {sums} FROM {source} "
                   f"GROUP BY {groups}")


def downgrade() -> None:
    for name, *_ in reversed(NEW_TIERS):
        op.drop_table(name)
