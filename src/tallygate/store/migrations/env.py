"""Alembic environment: runs on the engine tallygate hands over (no alembic.ini needed)."""

from __future__ import annotations

from alembic import context

from tallygate.store.schema import metadata

engine = context.config.attributes["engine"]
with engine.begin() as connection:
    context.configure(connection=connection, target_metadata=metadata,
                      render_as_batch=engine.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()
