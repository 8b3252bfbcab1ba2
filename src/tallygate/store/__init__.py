"""The only place that speaks SQL. SQLite and PostgreSQL live behind :class:`Database`."""

from tallygate.store.database import Database

__all__ = ["Database"]
