"""The ledger: call records, rollups, keys, prices, audit log.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

MEASURES = (
    "calls", "success_calls", "failed_calls", "rate_limited_calls", "input_tokens",
    "output_tokens", "cached_input_tokens", "reasoning_tokens", "total_tokens", "cost_nano",
    "latency_ms_sum", "latency_count", "ttft_ms_sum", "ttft_count", "estimated_calls",
)


def _rollup(name: str) -> None:
    op.create_table(
        name,
        sa.Column("bucket", sa.BigInteger, primary_key=True),
        sa.Column("api_key_id", sa.String(64), primary_key=True),
        sa.Column("model", sa.String(200), primary_key=True),
        sa.Column("model_category", sa.String(20), primary_key=True),
        sa.Column("call_type", sa.String(10), primary_key=True),
        *(sa.Column(measure, sa.BigInteger, nullable=False) for measure in MEASURES),
        sqlite_with_rowid=False,
    )


def upgrade() -> None:
    op.create_table(
        "calls",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("ts", sa.BigInteger, nullable=False),
        sa.Column("api_key_id", sa.String(64)),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("model_category", sa.String(20), nullable=False),
        sa.Column("call_type", sa.String(10), nullable=False),
        sa.Column("endpoint", sa.String(200)),
        sa.Column("status_code", sa.Integer, nullable=False),
        sa.Column("input_tokens", sa.BigInteger, nullable=False),
        sa.Column("output_tokens", sa.BigInteger, nullable=False),
        sa.Column("cached_input_tokens", sa.BigInteger, nullable=False),
        sa.Column("reasoning_tokens", sa.BigInteger, nullable=False),
        sa.Column("total_tokens", sa.BigInteger, nullable=False),
        sa.Column("cost_nano", sa.BigInteger, nullable=False),
        sa.Column("latency_ms", sa.Integer),
        sa.Column("ttft_ms", sa.Integer),
        sa.Column("estimated", sa.Boolean, nullable=False),
        sa.Column("metadata", sa.Text),
    )
    op.create_index("ix_calls_ts", "calls", ["ts"])
    op.create_index("ix_calls_key_ts", "calls", ["api_key_id", "ts"])
    _rollup("rollup_15m")
    _rollup("rollup_1m")
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("prefix", sa.String(32), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("internal", sa.Boolean, nullable=False),
        sa.Column("owner", sa.String(200)),
        sa.Column("tags", sa.Text),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger),
        sa.Column("allowed_models", sa.Text),
        sa.Column("allowed_ips", sa.Text),
        sa.Column("rpm_limit", sa.Integer),
        sa.Column("tpm_limit", sa.BigInteger),
        sa.Column("quota_tokens", sa.BigInteger),
        sa.Column("budget_nano", sa.BigInteger),
        sa.Column("quota_period", sa.String(10), nullable=False),
    )
    op.create_table(
        "prices",
        sa.Column("model", sa.String(200), primary_key=True),
        sa.Column("effective_from", sa.BigInteger, primary_key=True),
        sa.Column("input_per_million", sa.String(40), nullable=False),
        sa.Column("cached_input_per_million", sa.String(40)),
        sa.Column("output_per_million", sa.String(40), nullable=False),
        sa.Column("per_call", sa.String(40), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("ts", sa.BigInteger, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(50), nullable=False),
        sa.Column("target", sa.String(200)),
        sa.Column("details", sa.Text),
    )
    op.create_index("ix_audit_log_ts", "audit_log", ["ts"])
    op.create_table(
        "meta",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )


def downgrade() -> None:
    for table in ("meta", "audit_log", "prices", "api_keys", "rollup_1m", "rollup_15m", "calls"):
        op.drop_table(table)
