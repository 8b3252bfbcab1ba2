"""The spool: records a failing database could not take wait on disk, in order, and are
replayed into the ledger once, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tallygate.domain.records import CallRecord
from tallygate.ledger.recorder import Recorder
from tallygate.ledger.service import Ledger
from tallygate.ledger.spool import Spool, SpoolingStore, decode_record, spool_directory
from tallygate.store.calls import InsertResult
from tallygate.store.database import Database
from tallygate.store.retention import raise_purge_floor
from tallygate.store.schema import calls
from tests.reliability.support import assert_rollups_match_raw

US = 1_000_000


def records(count: int, prefix: str = "r") -> list[CallRecord]:
    now = datetime.now(UTC) - timedelta(minutes=5)
    return [CallRecord(id=f"{prefix}-{i:05d}", ts_us=int((now + timedelta(
        milliseconds=i)).timestamp() * US), model="m", call_type="model", api_key_id="k",
        model_category="chat", input_tokens=10 + i, output_tokens=i, total_tokens=10 + 2 * i,
        cost_nano=7 * i, latency_ms=i, estimated=i % 2 == 0,
        metadata={"request_id": f"req-{i}"} if i % 3 else None) for i in range(count)]


def stored_ids(db: Database) -> list[str]:
    with db.read() as conn:
        return [row[0] for row in conn.execute(select(calls.c.id))]


def stored_count(db: Database) -> int:
    with db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(calls)).scalar_one())


class Collector:
    """A store that remembers what it was given, in order; it fails while ``down``."""

    def __init__(self) -> None:
        self.seen: list[CallRecord] = []
        self.down = False

    def __call__(self, batch: Sequence[CallRecord]) -> InsertResult:
        if self.down:
            raise ConnectionRefusedError("the database is away")
        self.seen.extend(batch)
        return InsertResult(len(batch), 0)


class FlakyLedger(Ledger):
    """A real ledger whose writes fail while ``down`` (a database outage)."""

    down = False

    def store(self, records: Sequence[CallRecord]) -> InsertResult:
        if self.down:
            raise ConnectionRefusedError("the database is away")
        return super().store(records)


def test_records_come_back_exactly_as_written_and_in_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    written = records(25)
    for start in range(0, 20, 10):
        spool.append(written[start:start + 10])
        spool.rotate()  # several segments, as after several replay attempts
    spool.append(written[20:])  # the last batch went to the segment still open...
    collector = Collector()
    spool.rotate()  # ...until a replay closes it
    assert spool.replay(collector, batch_size=4) == 25
    assert collector.seen == written
    assert [r.metadata for r in collector.seen] == [r.metadata for r in written]
    assert spool.segments() == []


def test_an_unfinished_last_line_is_skipped_and_a_corrupt_segment_kept(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append(records(3))
    spool.rotate()
    segment = spool.segments()[0]
    with segment.open("ab") as file:
        file.write(b'{"id": "torn", "ts_us"')  # a SIGKILL in the middle of a write
    collector = Collector()
    assert spool.replay(collector) == 3
    assert [r.id for r in collector.seen] == [r.id for r in records(3)]

    spool.append(records(2, prefix="x"))
    spool.rotate()
    broken = spool.segments()[0]
    broken.write_bytes(broken.read_bytes().replace(b'"x-00000"', b'"x-00000",,', 1))
    collector = Collector()
    assert spool.replay(collector) == 1  # the good record goes in...
    assert [p.name for p in tmp_path.iterdir()] == [broken.name + ".corrupt"]  # ...none lost


def test_a_segment_another_process_holds_is_left_to_it(tmp_path: Path) -> None:
    mine, theirs = Spool(tmp_path), Spool(tmp_path)
    theirs.append(records(5, prefix="theirs"))
    collector = Collector()
    assert mine.replay(collector) == 0  # it is still writing there
    theirs.close()  # it ended (or died: the lock goes with the process)
    assert mine.replay(collector) == 5
    assert mine.segments() == []


def test_a_failed_replay_leaves_the_spool_for_the_next(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append(records(10))
    spool.rotate()
    collector = Collector()
    collector.down = True
    try:
        spool.replay(collector)
        raise AssertionError("the failure must reach the caller")
    except ConnectionRefusedError:
        pass
    assert len(spool.segments()) == 1
    collector.down = False
    assert spool.replay(collector) == 10


def test_records_that_cannot_be_stored_are_set_aside_not_blocking_the_rest(
        db: Database, tmp_path: Path) -> None:
    """A value no column holds (an upstream reporting 10**30 tokens) fails its whole batch,
    every time: the replay finds that record, keeps it aside for an operator, stores the rest,
    and the store goes back to the database."""
    ledger = Ledger(db)
    store = SpoolingStore(ledger.store, Spool(tmp_path), batch_size=64)
    good = records(200)
    poisoned = [*good[:150], replace(good[0], id="absurd", input_tokens=10**30,
                                     total_tokens=10**30), *good[150:]]
    store.store(poisoned)  # fails: to the spool
    assert store.spooling
    assert store.replay() == 201
    assert not store.spooling
    assert sorted(stored_ids(db)) == [r.id for r in good]
    [rejected] = list(tmp_path.glob("*.rejected"))
    assert [decode_record(line).id for line in rejected.read_bytes().splitlines()] == ["absurd"]
    assert store.spool.segments() == []
    assert_rollups_match_raw(db.url)


def test_replayed_records_older_than_the_purge_floor_are_counted_and_set_aside(
        db: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A spool replayed after a purge: the records the ledger refuses (their ids can no
    longer be checked) are logged by id, counted and kept aside, not retried for ever."""
    ledger = Ledger(db)
    store = SpoolingStore(ledger.store, Spool(tmp_path), batch_size=64)
    fresh = records(100)
    old = [replace(r, id=f"old-{n}", ts_us=r.ts_us - 40 * 86400 * US)
           for n, r in enumerate(fresh[:3])]
    store.spool.append([*fresh[:50], *old, *fresh[50:]])
    raise_purge_floor(db, fresh[0].ts_us - 30 * 86400 * US)
    assert store.replay() == 103
    assert store.stats.refused == store.spool.refused == 3
    assert sorted(stored_ids(db)) == [r.id for r in fresh]
    [rejected] = list(tmp_path.glob("*.rejected"))
    assert [decode_record(line).id for line in rejected.read_bytes().splitlines()] == [
        "old-0", "old-1", "old-2"]
    assert all(f"call record old-{n} is older than the ledger's purge floor" in caplog.text
               for n in range(3))
    assert store.spool.segments() == []
    assert store.replay() == 0 and store.stats.refused == 3


def test_a_segment_replayed_twice_counts_once(db: Database, tmp_path: Path) -> None:
    """A process that dies after storing a segment but before deleting it replays it again
    at its next start: the record ids make the second replay a no-op."""
    ledger = Ledger(db)
    spool = Spool(tmp_path)
    spool.append(records(300))
    spool.rotate()
    kept = tmp_path / "copy"
    shutil.copy(spool.segments()[0], kept)
    assert spool.replay(ledger.store, batch_size=128) == 300
    shutil.copy(kept, tmp_path / "00000000000000000000-1-again.ndjson")
    assert spool.replay(ledger.store, batch_size=128) == 300
    assert stored_count(db) == 300
    assert_rollups_match_raw(db.url)


def test_writes_go_to_the_spool_while_the_database_is_away(tmp_path: Path) -> None:
    collector = Collector()
    store = SpoolingStore(collector, Spool(tmp_path))
    batches = [records(4, prefix=f"b{n}") for n in range(5)]
    store.store(batches[0])
    collector.down = True
    store.store(batches[1])  # fails: spooled, and from now on...
    collector.down = False
    store.store(batches[2])  # ...everything goes to the spool, to keep the order
    assert store.spooling and store.stats.spooled == 8 and store.stats.outages == 1
    collector.down = True
    assert store.replay() == 0 and store.spooling  # still away: tried again later
    assert not store.replay_due()
    collector.down = False
    store.store(batches[3])
    assert store.replay() == 12
    assert not store.spooling
    store.store(batches[4])  # straight to the database again
    assert collector.seen == [r for batch in batches for r in batch]
    assert store.spool.segments() == []


def test_a_full_disk_in_an_outage_keeps_records_in_memory_until_one_takes_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    collector = Collector()
    store = SpoolingStore(collector, Spool(tmp_path))
    collector.down = True
    store.store(records(2, prefix="a"))  # spooled
    monkeypatch.setattr(store.spool, "append", _disk_full)
    with pytest.raises(ConnectionRefusedError):
        store.store(records(2, prefix="b"))  # neither takes them: the caller keeps them
    collector.down = False
    assert store.store(records(2, prefix="b")).accepted == 2  # straight in, disk still full
    monkeypatch.undo()
    assert store.replay() == 2
    assert sorted(r.id for r in collector.seen) == [r.id for r in records(2, "a")
                                                    + records(2, "b")]


def _disk_full(records: object) -> None:
    raise OSError(28, "No space left on device")


def test_the_recorder_serves_through_an_outage_and_the_ledger_ends_exact(
        db: Database, tmp_path: Path) -> None:
    """Strict commits return while the database is away (the records are on disk); once it is
    back, every record is stored once."""
    ledger = FlakyLedger(db)
    all_records = records(400)

    async def run() -> None:
        recorder = Recorder(ledger, flush_interval_s=0.01, spool=Spool(tmp_path))
        await recorder.start()
        for record in all_records[:100]:
            recorder.record(record)
        await asyncio.sleep(0.05)
        ledger.down = True
        for record in all_records[100:200]:
            recorder.record(record)
        await asyncio.wait_for(asyncio.gather(*(recorder.record_and_commit(r)
                                                for r in all_records[200:300])), timeout=10)
        assert recorder.spooler is not None and recorder.spooler.spooling
        ledger.down = False
        for record in all_records[300:]:
            recorder.record(record)
        for _ in range(500):
            if not recorder.spooler.spooling and recorder.queue_depth == 0:
                break
            await asyncio.sleep(0.02)
        await recorder.stop()

    asyncio.run(run())
    assert sorted(stored_ids(db)) == [r.id for r in all_records]
    assert list(tmp_path.rglob("*.ndjson")) == []
    assert_rollups_match_raw(db.url)


def test_records_spooled_when_a_process_stops_are_replayed_by_the_next(
        db: Database, tmp_path: Path) -> None:
    ledger = FlakyLedger(db)
    ledger.down = True

    async def first_process() -> None:
        recorder = Recorder(ledger, flush_interval_s=0.01, spool=Spool(tmp_path))
        await recorder.start()
        for record in records(50):
            recorder.record(record)
        await recorder.stop()  # the database is still away: the records stay on disk

    async def next_process() -> None:
        recorder = Recorder(Ledger(db), flush_interval_s=0.01, spool=Spool(tmp_path))
        await recorder.start()
        for _ in range(200):
            if not list(tmp_path.rglob("*.ndjson")):
                break
            await asyncio.sleep(0.02)
        await recorder.stop()

    asyncio.run(first_process())
    assert stored_count(db) == 0 and len(list(tmp_path.rglob("*.ndjson"))) == 1
    asyncio.run(next_process())
    assert sorted(stored_ids(db)) == [r.id for r in records(50)]


def test_each_database_has_its_own_spool(tmp_path: Path) -> None:
    one = spool_directory(str(tmp_path), "postgresql+psycopg://db1/ledger")
    other = spool_directory(str(tmp_path), "postgresql+psycopg://db2/ledger")
    assert one.parent == other.parent == tmp_path and one != other
    beside = spool_directory(None, f"sqlite:///{tmp_path}/data/tallygate.db")
    assert beside.parent == tmp_path / "data" / "tallygate-spool"
