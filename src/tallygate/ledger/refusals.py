"""Refused calls, counted exactly without a flood of them filling the ledger.

A refusal (a disabled or expired key, an address or model the key may not use, a rate limit
or quota, counters unavailable) is answered before anything goes upstream: no tokens, no
cost. What the ledger must know of it is how many, of which kind, and when. So per key and
minute the first ``records_per_minute`` refusals are recorded one by one, like any call; the
rest are counted here per kind (key, model, category, call type, endpoint, status), and each
count is written once its minute has ended, as one record whose ``repeats`` is the count.

A flood therefore writes at most ``records_per_minute`` rows plus one per kind of refusal,
per key and minute, while every figure (calls, failed and rate-limited calls, trends,
breakdowns, peaks) counts each refusal once: the rollups count a record ``repeats`` times
(``store/schema.py``). The counts of the minute under way live in memory; the recorder hands
them over at its ``stop`` (an orderly shutdown loses none), a killed process loses at most
that minute's, as ``durability = "batched"`` may lose its last window.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace

from tallygate.domain.records import CallRecord, new_call_id

MINUTE_US = 60_000_000
DEFAULT_RECORDS_PER_MINUTE = 10

# Every column a figure groups or filters by: refusals that differ in one are kept apart.
_Kind = tuple[str | None, str, str, str, str | None, int, str | None]


def _kind(record: CallRecord) -> _Kind:
    return (record.api_key_id, record.model, record.model_category, record.call_type,
            record.endpoint, record.status_code, record.upstream_model)


@dataclass(slots=True)
class _Count:
    first: CallRecord  # the kind's first refusal counted: the aggregate's columns
    last_ts_us: int
    repeats: int = 1

    def record(self) -> CallRecord:
        """The aggregate: stamped with its newest refusal's time (in the same minute), a
        fresh id (written once, retried and replayed under that id), without the first
        refusal's latency or tags (a record of several calls carries neither)."""
        if self.repeats == 1:
            return self.first
        return replace(self.first, id=new_call_id(), ts_us=self.last_ts_us,
                       repeats=self.repeats, latency_ms=None, ttft_ms=None, metadata=None)


@dataclass(slots=True)
class _Minute:
    recorded: Counter[str | None] = field(default_factory=Counter)  # one by one, per key
    counted: dict[_Kind, _Count] = field(default_factory=dict)


class RefusalFolder:
    """Decides which refusals are recorded one by one and counts the rest per minute.

    Minutes are those of the records' ``ts``: the gateway stamps a refusal with the moment
    it was refused, so no refusal of a minute comes after that minute has been handed over
    (and one that does, after a clock step, is simply counted in an aggregate of its own).
    """

    def __init__(self, records_per_minute: int = DEFAULT_RECORDS_PER_MINUTE) -> None:
        if records_per_minute < 0:
            raise ValueError("records_per_minute: must be 0 or more")
        self.records_per_minute = records_per_minute
        self._minutes: dict[int, _Minute] = {}

    @property
    def held(self) -> int:
        """Refusals counted and not yet handed over as records."""
        return sum(count.repeats for minute in self._minutes.values()
                   for count in minute.counted.values())

    def admit(self, record: CallRecord) -> bool:
        """True: record ``record`` now. False: it is counted here, to be handed over as part
        of its minute's aggregate. Only a free refusal of one call is ever counted."""
        if (record.status_code < 400 or record.repeats != 1 or record.total_tokens
                or record.cost_nano or record.units):
            return True
        minute = self._minutes.setdefault(record.ts_us // MINUTE_US, _Minute())
        if minute.recorded[record.api_key_id] < self.records_per_minute:
            minute.recorded[record.api_key_id] += 1
            return True
        kind = _kind(record)
        count = minute.counted.get(kind)
        if count is None:
            minute.counted[kind] = _Count(record, record.ts_us)
        else:
            count.repeats += 1
            count.last_ts_us = max(count.last_ts_us, record.ts_us)
        return False

    def ended(self, now_us: int) -> list[CallRecord]:
        """The aggregates of every minute before the one of ``now_us``, forgotten here."""
        current = now_us // MINUTE_US
        return self._hand_over([minute for minute in self._minutes if minute < current])

    def drain(self) -> list[CallRecord]:
        """Every aggregate, the minute under way's too (on shutdown)."""
        return self._hand_over(list(self._minutes))

    def _hand_over(self, minutes: list[int]) -> list[CallRecord]:
        return [count.record() for minute in sorted(minutes)
                for count in self._minutes.pop(minute).counted.values()]
