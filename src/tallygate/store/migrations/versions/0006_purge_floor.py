"""The purge floor: the instant below which raw records may have been purged, recorded.

Before this revision only today's ``raw_retention_days`` said how far back raw records were
complete, so a retention change, a late record or a re-ingested id after a purge could make
``db check --repair`` rewrite history or count an id twice. The floor lives in the new
one-integer-a-row table ``ledger_state``.

A ledger purged before this revision gets the floor its purge left: the UTC midnight after
the oldest raw record, when the rollups count more calls up to that record's day than the
raw records do (the daily totals are kept for ever, raw records only for the retention);
the day after the last rollup when no raw record is left at all; 0 (nothing purged)
otherwise.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

FLOOR = "raw_purge_floor_us"
DAY_S = 86400
US = 1_000_000


def upgrade() -> None:
    op.create_table(
        "ledger_state",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.BigInteger, nullable=False),
    )
    conn = op.get_bind()
    op.execute(sa.text("INSERT INTO ledger_state (name, value) VALUES (:name, :value)")
               .bindparams(name=FLOOR, value=_floor_left_by_earlier_purges(conn)))


def _floor_left_by_earlier_purges(conn: sa.Connection) -> int:
    last_day = conn.execute(sa.text("SELECT max(bucket) FROM rollup_1d_all")).scalar()
    if last_day is None:
        return 0  # no call was ever stored
    oldest = conn.execute(sa.text("SELECT min(ts) FROM calls")).scalar()
    if oldest is None:
        return (int(last_day) + DAY_S) * US  # every raw record was purged
    day = int(oldest) // US // DAY_S * DAY_S
    rolled_up = conn.execute(sa.text("SELECT coalesce(sum(calls), 0) FROM rollup_1d_all "
                                     "WHERE bucket <= :day"), {"day": day}).scalar()
    raw = conn.execute(sa.text("SELECT count(*) FROM calls WHERE ts < :end"),
                       {"end": (day + DAY_S) * US}).scalar()
    return (day + DAY_S) * US if int(rolled_up or 0) > int(raw or 0) else 0


def downgrade() -> None:
    op.drop_table("ledger_state")
