"""Cache writes, units and the upstream's model: columns, measures, tiers and prices.

- ``calls`` gains ``cache_write_tokens``, ``units``, ``unit`` and ``upstream_model``.
- Every rollup tier gains the measures ``cache_write_tokens`` and ``units_<unit>`` for each
  unit kind; rows written before this revision hold 0 in them (no call had any).
- Two new tiers kept for ever, per quarter-hour and per UTC day x model x category x call
  type x upstream model (``rollup_15m_upstream``, ``rollup_1d_upstream``). They are filled
  from the key-less tiers already stored, with the upstream model "" (not known before this
  revision), so every figure they give equals the one the other tiers give, and raw
  records past their retention are not needed.
- ``prices`` gains ``cache_write_per_million`` (NULL: the input price) and ``per_unit``.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

OLD_MEASURES = (
    "calls", "success_calls", "failed_calls", "rate_limited_calls", "input_tokens",
    "output_tokens", "cached_input_tokens", "reasoning_tokens", "total_tokens", "cost_nano",
    "latency_ms_sum", "latency_count", "ttft_ms_sum", "ttft_count", "estimated_calls",
)
UNITS = ("image", "second", "character", "search_unit", "page", "request")
NEW_MEASURES = ("cache_write_tokens", *(f"units_{unit}" for unit in UNITS))
OLD_TIERS = ("rollup_1m", "rollup_1m_all", "rollup_1m_key", "rollup_1m_total", "rollup_15m",
             "rollup_15m_all", "rollup_1h", "rollup_1h_all", "rollup_1d", "rollup_1d_all")
WIDTHS = {"model": 200, "model_category": 20, "call_type": 10, "upstream_model": 200}
UPSTREAM = tuple(WIDTHS)
# name, filled from (a tier of the same grain with the other dimensions)
NEW_TIERS = (("rollup_15m_upstream", "rollup_15m_all"), ("rollup_1d_upstream", "rollup_1d_all"))


def upgrade() -> None:
    op.add_column("calls", sa.Column("cache_write_tokens", sa.BigInteger, nullable=False,
                                     server_default="0"))
    op.add_column("calls", sa.Column("units", sa.BigInteger, nullable=False,
                                     server_default="0"))
    op.add_column("calls", sa.Column("unit", sa.String(20)))
    op.add_column("calls", sa.Column("upstream_model", sa.String(200)))
    for tier in OLD_TIERS:
        for measure in NEW_MEASURES:
            # A plain ADD COLUMN on both databases (SQLite allows it on a table WITHOUT
            # ROWID): nothing is copied, the default fills the existing rows.
            op.add_column(tier, sa.Column(measure, sa.BigInteger, nullable=False,
                                          server_default="0"))
    for name, source in NEW_TIERS:
        columns: list[sa.Column[Any]] = [
            sa.Column(d, sa.String(WIDTHS[d]), primary_key=True) for d in UPSTREAM]
        op.create_table(
            name,
            sa.Column("bucket", sa.BigInteger, primary_key=True),
            *columns,
            *(sa.Column(m, sa.BigInteger, nullable=False) for m in OLD_MEASURES),
            *(sa.Column(m, sa.BigInteger, nullable=False, server_default="0")
              for m in NEW_MEASURES),
            sqlite_with_rowid=False,
        )
        measures = ", ".join((*OLD_MEASURES, *NEW_MEASURES))
        op.execute(f"INSERT INTO {name} (bucket, model, model_category, call_type, "
                   f"upstream_model, {measures}) SELECT bucket, model, model_category, "
                   f"call_type, '', {measures} FROM {source}")
    op.add_column("prices", sa.Column("cache_write_per_million", sa.String(40)))
    op.add_column("prices", sa.Column("per_unit", sa.String(40), nullable=False,
                                      server_default="0"))


def downgrade() -> None:
    # ALTER TABLE ... DROP COLUMN: SQLite has it since 3.35 (none of these columns is in an
    # index or a key).
    op.drop_column("prices", "per_unit")
    op.drop_column("prices", "cache_write_per_million")
    for name, _ in reversed(NEW_TIERS):
        op.drop_table(name)
    for tier in OLD_TIERS:
        for measure in reversed(NEW_MEASURES):
            op.drop_column(tier, measure)
    for column in ("upstream_model", "unit", "units", "cache_write_tokens"):
        op.drop_column("calls", column)
