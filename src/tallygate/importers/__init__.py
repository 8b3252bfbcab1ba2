"""Importers of other gateways' histories: ``tallygate import --from KIND SOURCE``.

Each source's mapping lives in its own module (``litellm``, ``newapi``); reading the source's
database is :mod:`tallygate.store.foreign`; keys, values, batching and the summary are
:mod:`.common`. Every record's id is derived from the source's own id, so a re-import adds
nothing (the ledger counts those records as duplicates).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

from tallygate.importers import litellm, newapi
from tallygate.importers.common import ImportedKeys, ImportSummary, map_rows, run_import
from tallygate.keys.service import KeyService
from tallygate.ledger.service import Ledger
from tallygate.store.foreign import ForeignTable, SourceError

SOURCES = ("litellm", "new-api", "one-api")
DEFAULT_QUOTA_PER_UNIT = newapi.DEFAULT_QUOTA_PER_UNIT

__all__ = ["DEFAULT_QUOTA_PER_UNIT", "SOURCES", "ImportSummary", "SourceError",
           "import_history"]


def import_history(ledger: Ledger, kind: str, source: str, *,
                   quota_per_unit: Decimal = DEFAULT_QUOTA_PER_UNIT,
                   instance: str | None = None, batch_size: int = 5000,
                   on_total: Callable[[int], None] | None = None,
                   progress: Callable[[int], None] | None = None) -> ImportSummary:
    """Import the history of a ``kind`` gateway (one of :data:`SOURCES`) from ``source``.

    ``instance`` tells apart two installations of the same gateway (their row ids are only
    unique within one database): it becomes part of every record id and key identity.
    ``on_total`` is told the number of source rows once known; ``progress`` the rows read.
    Raises :class:`SourceError` when the source cannot be opened or read.
    """
    if kind not in SOURCES:
        raise ValueError(f"--from: must be one of {', '.join(SOURCES)}")
    if quota_per_unit <= 0:
        raise ValueError("--quota-per-unit: must be greater than 0")
    keys = ImportedKeys(KeyService(ledger.db), kind, instance)
    table: ForeignTable | None = None
    try:
        rows: Iterator[dict[str, Any]]
        if kind == "litellm" and litellm.is_csv(source):
            total, rows = litellm.csv_rows(Path(source).expanduser())
        else:
            table = ForeignTable(source, litellm.TABLE if kind == "litellm" else newapi.TABLE)
            total = table.count()
            rows = (litellm.table_rows(table, batch_size) if kind == "litellm"
                    else newapi.table_rows(table, batch_size))
        if on_total is not None:
            on_total(total)
        mapper = (partial(litellm.map_row, instance=instance) if kind == "litellm" else
                  partial(newapi.map_row, kind, quota_per_unit=quota_per_unit,
                          instance=instance))
        return run_import(ledger, keys, map_rows(rows, mapper), batch_size=batch_size,
                          progress=progress)
    finally:
        if table is not None:
            table.close()
