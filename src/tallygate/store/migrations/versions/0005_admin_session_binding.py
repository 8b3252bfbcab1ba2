"""Admin sessions are bound to the admin token they signed in with.

Each admin session keeps an HMAC of its own cookie token keyed by the admin token's hash:
a process whose admin token differs finds no session it can open, whatever order processes
start and stop in. The value cannot be used to test guesses of the admin token without the
cookie token, which is never stored. Admin sessions from before this revision have no
binding and end (the admin signs in again); key holders' sessions are untouched. The
database-wide fingerprint that did this job before is removed.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

OLD_FINGERPRINT = "admin_sessions_token_fingerprint"


def upgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("admin_binding", sa.String(64)))
    op.execute(sa.text("DELETE FROM sessions WHERE api_key_id IS NULL"))
    op.execute(sa.text("DELETE FROM meta WHERE name = :name").bindparams(name=OLD_FINGERPRINT))


def downgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("admin_binding")
