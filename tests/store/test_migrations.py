from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from tallygate.store.database import SCHEMA_REVISION, Database
from tallygate.store.schema import metadata


def test_upgrade_is_idempotent_and_matches_the_schema(db: Database) -> None:
    db.upgrade()  # a second run on a migrated database changes nothing
    assert db.current_revision() == db.head_revision() == SCHEMA_REVISION
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []


def test_ensure_current_refuses_an_unmigrated_database(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import pytest

    from tallygate.store.database import DatabaseUnavailable

    fresh = Database(f"sqlite:///{tmp_path / 'new.db'}")
    with pytest.raises(DatabaseUnavailable, match="tallygate db upgrade"):
        fresh.ensure_current()


def test_the_tier_migration_fills_the_new_tiers_from_stored_rollups(db: Database) -> None:
    # A ledger from before 0004 had only the quarter-hour and minute rollups: after the
    # upgrade every tier must hold what it would have held had it always been written.
    import time

    from alembic import command

    from tallygate.ledger.maintenance import check_rollups
    from tallygate.ledger.service import Ledger
    from tests.store.test_calls import make_record

    now_us = int(time.time() * 1_000_000)
    records = [make_record(n, ts_us=now_us - n * 37_000_000_000) for n in range(400)]
    ledger = Ledger(db)
    ledger.store(records)
    config = db._alembic_config()
    command.downgrade(config, "0003")
    assert "rollup_1h" not in db.table_names()
    command.upgrade(config, "head")
    report = check_rollups(ledger)
    assert report.ok, report.differences[:5]
    assert report.rows_compared > 0


def test_the_binding_migration_ends_unbound_admin_sessions_only(db: Database) -> None:
    from alembic import command
    from sqlalchemy import select, text

    from tallygate.store.schema import meta, sessions

    config = db._alembic_config()
    command.downgrade(config, "0004")
    with db.write() as conn:
        for token_hash, key_id in (("a" * 64, None), ("b" * 64, "key_1")):
            conn.execute(text("INSERT INTO sessions (token_hash, api_key_id, csrf_token, "
                              "created_at, expires_at) VALUES (:t, :k, 'csrf', 1, :e)"),
                         {"t": token_hash, "k": key_id, "e": 2**62})
        conn.execute(meta.insert().values(name="admin_sessions_token_fingerprint",
                                          value="0123456789ab"))
    command.upgrade(config, "head")
    with db.read() as conn:
        left = [(row.api_key_id, row.admin_binding) for row in conn.execute(select(sessions))]
        names = [row.name for row in conn.execute(select(meta.c.name))]
    assert left == [("key_1", None)]
    assert "admin_sessions_token_fingerprint" not in names


def test_0007_upgrades_a_purged_ledger_in_place_losing_nothing(db: Database) -> None:
    # A ledger at 0006 whose oldest raw records were purged: after 0007 every figure is the
    # same, the new measures are 0, and the upstream-model tiers (filled from the stored
    # rollups, not from the raw records left) give the same figures grouped by upstream model.
    import time
    from datetime import UTC, datetime, timedelta

    from alembic import command
    from sqlalchemy import func, select

    from tallygate.ledger.maintenance import check_rollups, purge_expired
    from tallygate.ledger.service import Ledger
    from tallygate.ledger.statistics import (
        UsageQuery,
        usage_breakdown,
        usage_summary,
        usage_trend,
    )
    from tallygate.ledger.timerange import resolve_range
    from tallygate.store.schema import MEASURES_0007, TIERS, calls
    from tallygate.store.usage import CallFilter
    from tests.store.test_calls import make_record

    now_s = time.time()
    old_style = {"cache_write_tokens": 0, "units": 0, "unit": None, "upstream_model": None}
    records = [make_record(n, ts_us=int((now_s - n * 5400) * 1_000_000), **old_style)
               for n in range(900)]  # 900 calls over the last ~56 days
    ledger = Ledger(db, raw_retention_days=30)
    ledger.store(records)
    assert purge_expired(ledger).raw_deleted > 0
    today = datetime.now(UTC).date()
    window = ((today - timedelta(days=60)).isoformat(), (today + timedelta(days=1)).isoformat())

    def figures() -> list[object]:
        out: list[object] = []
        for tz in ("UTC", "Asia/Kathmandu"):
            query = UsageQuery(CallFilter(), resolve_range(None, *window, tz))
            summary = usage_summary(ledger, query)
            out += [summary["cards"], summary["previous"],
                    usage_trend(ledger, query, "cost", "day", "model"),
                    usage_trend(ledger, query, "requests", "hour", "upstream_model"),
                    usage_breakdown(ledger, query, ["api_key", "model"])["rows"],
                    usage_breakdown(ledger, query, ["upstream_model", "call_type"])["rows"]]
        return out

    before = figures()  # as this code reads them from the same calls
    config = db._alembic_config()
    command.downgrade(config, "0006")
    assert "rollup_15m_upstream" not in db.table_names()
    command.upgrade(config, "head")
    assert figures() == before
    with db.read() as conn:
        for tier in TIERS:
            for measure in MEASURES_0007:
                assert conn.execute(select(func.sum(tier.table.c[measure]))).scalar() in (
                    None, 0), (tier.name, measure)
        assert conn.execute(select(func.count()).select_from(calls).where(
            calls.c.upstream_model.is_not(None))).scalar() == 0
    query = UsageQuery(CallFilter(), resolve_range(None, *window, "UTC"))
    summary = usage_summary(ledger, query)
    assert summary["cards"]["cache_write_tokens"] == 0 and summary["cards"]["units"] == {}
    by_upstream = usage_breakdown(ledger, query, ["upstream_model"])["rows"]
    assert [(row["upstream_model"], row["calls"], row["cost"]) for row in by_upstream] == [
        (None, len(records), summary["cards"]["cost"])]
    # Read from the upstream tiers (the range reaches back past the purge floor).
    per_day = usage_trend(ledger, query, "requests", "day", "upstream_model")
    assert per_day["series"][0]["total"] == len(records)
    assert check_rollups(ledger).ok


def test_0009_keeps_keys_stored_with_an_empty_ip_list_usable_from_anywhere(
        db: Database) -> None:
    # Before 0009 an empty allowed_ips allowed every address; now it allows none, so keys
    # stored that way become NULL (no restriction) and behave as they did.
    from alembic import command

    from tallygate.keys.access import ip_allowed
    from tallygate.keys.schemas import KeyCreate
    from tallygate.keys.service import KeyService
    from tallygate.store.keys import get_key

    service = KeyService(db)
    anywhere = service.create(KeyCreate(name="anywhere"), "test")
    office = service.create(KeyCreate(name="office", allowed_ips=["10.0.0.0/8"]), "test")
    config = db._alembic_config()
    command.downgrade(config, "0007")
    with db.write() as conn:
        from sqlalchemy import text
        conn.execute(text("UPDATE api_keys SET allowed_ips = '[]' WHERE id = :id"),
                     {"id": anywhere.id})
    command.upgrade(config, "head")
    stored = get_key(db, anywhere.id)
    assert stored is not None and stored.allowed_ips is None
    assert ip_allowed(stored.allowed_ips, "192.0.2.1")
    kept = get_key(db, office.id)
    assert kept is not None and kept.allowed_ips == ["10.0.0.0/8"]
