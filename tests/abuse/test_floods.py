"""Floods of unknown and of revoked keys against a running gateway process, while a valid
key's calls are timed (PRODUCT.md §15, "Isolation"). The units behind them are tested in
tests/gateway/test_keycache_flood.py and test_refusals.py; here it is the whole server, under
load, at the same time as a key that behaves."""

from __future__ import annotations

from pathlib import Path

import httpx
from sqlalchemy import func, select

from tallygate.keys.service import KeyService
from tallygate.store.database import Database
from tallygate.store.schema import calls
from tests.abuse.floods import Probe
from tests.abuse.support import flood_result, p99, start_flood
from tests.conftest import RECENT
from tests.reliability.support import ADMIN, ServedGateway, new_key, start_gateway

# Generous on purpose: a shared 2-core CI machine; docs/benchmarks.md has the real figures.
ADDED_P99_S = 0.050
RSS_GROWTH_KB = 50 * 1024
FLOOD = 1500


def _baseline(gateway: ServedGateway, key: str) -> float:
    Probe(gateway.url, key).run_for(0.5)  # warm: connections, the key in the cache
    return p99(Probe(gateway.url, key).run_for(2.0))


def test_an_unknown_key_flood_does_not_slow_a_valid_key_or_grow_memory(
        gateway: ServedGateway, database_url: str) -> None:
    _, key = new_key(database_url, name="valid")
    quiet_p99 = _baseline(gateway, key)
    rss_before = gateway.rss_kb()
    probe = Probe(gateway.url, key).start()
    flood = start_flood("unknown", gateway.url, count=2000, connections=50)
    seen = flood_result(flood)
    flooded = probe.stop()
    rss_after = gateway.rss_kb()

    assert sum(seen["statuses"].values()) == 2000, seen
    # Each made-up key is refused: 401 after a look-up, or 429 once the address's budget
    # of look-ups is spent (no look-up at all); never anything else.
    assert set(seen["statuses"]) <= {"401", "429"}, seen
    assert seen["statuses"].get("429", 0) > 0, seen  # the budget acted
    assert set(probe.statuses) == {200}, probe.statuses
    assert len(flooded) >= 20, "the valid key was starved"
    assert p99(flooded) < quiet_p99 + ADDED_P99_S, (p99(flooded), quiet_p99)
    assert rss_after - rss_before < RSS_GROWTH_KB, (rss_before, rss_after)


def _rows(database_url: str, key_id: str) -> int:
    db = Database(database_url)
    try:
        with db.read() as conn:
            return int(conn.execute(select(func.count()).select_from(calls)
                                    .where(calls.c.api_key_id == key_id)).scalar_one())
    finally:
        db.dispose()


def test_a_revoked_key_flood_leaves_few_rows_and_every_refusal_is_counted(
        gateway: ServedGateway, workdir: Path, database_url: str, upstream_url: str) -> None:
    # A gateway of its own, stopped at the end so that the minute under way is written; the
    # module's gateway (same ledger) then reads the summary.
    flooded_gateway = start_gateway(workdir, database_url, upstream_url, name="revoked")
    try:
        _, key = new_key(database_url, name="valid")
        revoked_id, revoked = new_key(database_url, name="revoked")
        db = Database(database_url)
        try:
            KeyService(db).set_status(revoked_id, "disabled", "test")
        finally:
            db.dispose()
        quiet_p99 = _baseline(flooded_gateway, key)
        probe = Probe(flooded_gateway.url, key).start()
        seen = flood_result(start_flood("revoked", flooded_gateway.url, key=revoked,
                                        count=FLOOD, connections=20))
        flooded = probe.stop()
        rows_while_running = _rows(database_url, revoked_id)
    finally:
        flooded_gateway.stop()

    assert seen["statuses"] == {"403": FLOOD}, seen
    assert set(probe.statuses) == {200}, probe.statuses
    assert p99(flooded) < quiet_p99 + ADDED_P99_S, (p99(flooded), quiet_p99)
    # refusal_records_per_minute (10) one by one, one aggregate per kind and minute when the
    # minute ends or the gateway stops; the flood spans two minutes at most.
    assert rows_while_running <= 2 * (10 + 1), rows_while_running
    rows = _rows(database_url, revoked_id)
    assert rows <= 2 * (10 + 1), rows
    answer = httpx.get(f"{gateway.url}/api/v1/usage/summary", timeout=10,
                       params={"period": RECENT, "api_key_id": revoked_id},
                       headers={"Authorization": f"Bearer {ADMIN}"})
    answer.raise_for_status()
    cards = answer.json()["cards"]
    assert cards["model_calls"] == cards["failed_calls"] == FLOOD, cards
