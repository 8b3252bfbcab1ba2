"""Which rollup tiers a query reads: the cheapest that are exact, and none that scan."""

from __future__ import annotations

from tallygate.store.usage import Aggregate, Bucketing, CallFilter, split_range, usable_tiers

US = 1_000_000
START = 20_718 * 86400 * US  # a UTC midnight
MINUTES = Bucketing(60, ((0, 0),))


def _names(spec: Aggregate) -> list[str]:
    return [tier.name for tier in usable_tiers(spec)]


def test_totals_without_a_recent_floor_read_no_minute_tier() -> None:
    # Whether the window's oldest rows are still there depends on who purged them last.
    spec = Aggregate(START, START + 86400 * US, minute_floor_s=START // US - 86400)
    assert _names(spec) == ["rollup_1d_all", "rollup_1h_all", "rollup_15m_all"]


def test_totals_read_the_minutes_no_retention_can_have_purged() -> None:
    # The range ends 37 min 10 s into a day whose minutes all processes still keep.
    recent = START // US + 86400
    end = START + (86400 + 37 * 60 + 10) * US
    spec = Aggregate(START, end, minute_floor_s=START // US - 86400,
                     recent_minutes_from_s=recent)
    pieces, edges = split_range(spec)
    assert [(tier.name, lo - START // US, hi - START // US) for tier, lo, hi in pieces] == [
        ("rollup_1d_all", 0, 86400), ("rollup_15m_all", 86400, 86400 + 1800),
        ("rollup_1m_total", 86400 + 1800, 86400 + 37 * 60)]
    assert edges == [(end - 10 * US, end)]  # only the partial minute from raw records
    # Before that day, the quarter-hour in progress still comes from raw records.
    older = Aggregate(START, end, minute_floor_s=START // US - 86400,
                      recent_minutes_from_s=recent + 3600)
    assert split_range(older)[1] == [(START + (86400 + 1800) * US, end)]


def test_a_view_of_one_key_reads_keyed_tiers_and_its_minute_totals() -> None:
    one_key = CallFilter(api_key_ids=("k",))
    assert _names(Aggregate(START, START + 3600 * US, one_key, bucketing=MINUTES,
                            minute_floor_s=0)) == ["rollup_1m_key"]
    assert _names(Aggregate(START, START + 86400 * US, one_key)) == [
        "rollup_1d", "rollup_1h", "rollup_15m"]


def test_a_grouping_by_key_never_scans_the_key_clustered_minutes() -> None:
    # rollup_1m_key is stored in key order: without a key filter it would be read whole.
    spec = Aggregate(START, START + 3600 * US, dimensions=("api_key_id",), bucketing=MINUTES,
                     minute_floor_s=0)
    assert _names(spec) == ["rollup_1m"]


def test_an_offset_change_off_the_hour_skips_the_hourly_tier() -> None:
    # Whole-hour offsets, but the change comes at half past: an hour row would straddle it.
    def tiers(change_s: int) -> list[str]:
        segments = ((START // US, 36000), (START // US + change_s, 39600))
        return _names(Aggregate(START, START + 2 * 86400 * US,
                                bucketing=Bucketing(86400, segments)))

    assert tiers(5400) == ["rollup_15m_all"]
    assert tiers(7200) == ["rollup_1h_all", "rollup_15m_all"]
