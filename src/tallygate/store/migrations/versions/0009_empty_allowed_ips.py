"""``allowed_ips`` reads as ``allowed_models`` does: an empty list allows nothing.

Before this revision an empty ``allowed_ips`` allowed every address while an empty
``allowed_models`` denied every model. Both now mean what a list means, "only these"; keys
stored with an empty ``allowed_ips`` were made meaning "from anywhere" and become NULL (no
restriction), so no key changes behaviour on upgrade.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(sa.text("UPDATE api_keys SET allowed_ips = NULL WHERE allowed_ips = '[]'"))


def downgrade() -> None:
    # NULL allowed every address before this revision as it does after it; keys given an
    # empty list since then allow none, which the old reading cannot say: they are disabled.
    op.execute(sa.text("UPDATE api_keys SET status = 'disabled' WHERE allowed_ips = '[]'"))
