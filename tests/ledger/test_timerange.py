"""Ranges and calendar buckets in a time zone: periods, dates, instants, DST, odd offsets."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from tallygate.domain.records import CallRecord
from tallygate.ledger.service import Ledger
from tallygate.ledger.statistics import UsageQuery, usage_trend
from tallygate.ledger.timerange import (
    BadParameter,
    TimeRange,
    bucketing_for,
    check_bucket_count,
    iter_buckets,
    resolve_range,
)
from tallygate.store.usage import CallFilter
from tests import brute

US = 1_000_000
NEW_YORK = ZoneInfo("America/New_York")
SHANGHAI = ZoneInfo("Asia/Shanghai")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def us(text: str) -> int:
    return brute.instant_us(at(text))


def span(r: TimeRange) -> tuple[datetime, datetime, datetime, datetime]:
    return r.start(), r.end(), r.previous_start(), r.previous_end()


def labels(r: TimeRange, granularity: str) -> list[str]:
    return [b.label for b in iter_buckets(r, bucketing_for(granularity, r))]


# Periods -------------------------------------------------------------------------------------


def test_a_period_runs_from_local_midnight_n_minus_1_days_ago_until_now() -> None:
    now = at("2026-11-21T08:30:15.250000+08:00")
    r = resolve_range("7d", None, None, "Asia/Shanghai", now=now)
    assert span(r) == (at("2026-11-15T00:00+08:00"), now,
                       at("2026-11-08T00:00+08:00"), at("2026-11-14T08:30+08:00"))
    assert r.label == "7d" and r.tz == SHANGHAI


def test_the_previous_period_of_a_period_ends_on_a_quarter_hour() -> None:
    """So the rollups kept for ever answer it exactly once its raw records are purged."""
    now = at("2026-11-21T08:44:59.999999+05:45")
    r = resolve_range("30d", None, None, "Asia/Kathmandu", now=now)
    assert r.previous_end() == at("2026-10-22T08:30+05:45")
    assert r.previous_end_us % (900 * 1_000_000) == 0


def test_today_is_the_local_day_not_the_utc_day() -> None:
    # 23:30 UTC on the 20th is already the 21st in Shanghai.
    r = resolve_range("1d", None, None, "Asia/Shanghai", now=at("2026-11-20T23:30:00+00:00"))
    assert r.start() == at("2026-11-21T00:00+08:00")
    assert r.end() == at("2026-11-21T07:30+08:00")
    assert r.previous_start() == at("2026-11-20T00:00+08:00")


@pytest.mark.parametrize(("period", "days"), [("1d", 1), ("3d", 3), ("7d", 7), ("30d", 30)])
def test_every_period_counts_calendar_days(period: str, days: int) -> None:
    now = at("2026-12-10T17:00:00-05:00")
    r = resolve_range(period, None, None, "America/New_York", now=now)
    assert r.start() == datetime.combine(date(2026, 12, 10) - timedelta(days=days - 1),
                                         datetime.min.time(), NEW_YORK)
    assert r.end() == now


def test_a_period_across_a_dst_change_keeps_wall_clock_days() -> None:
    # The 3 days from 2026-11-01 (25 hours, clocks fall back) to now on 2026-11-03.
    now = at("2026-11-03T12:00:00-05:00")
    r = resolve_range("3d", None, None, "America/New_York", now=now)
    assert span(r) == (at("2026-11-01T00:00-04:00"), now,
                       at("2026-10-29T00:00-04:00"), at("2026-10-31T12:00-04:00"))
    assert r.end_us - r.start_us == (2 * 24 + 12 + 1) * 3600 * US


def test_without_period_start_or_end_the_period_is_7d() -> None:
    now = at("2026-11-21T08:30:00+00:00")
    assert resolve_range(None, None, None, None, now=now) == resolve_range(
        "7d", None, None, "UTC", now=now)


# Custom ranges -------------------------------------------------------------------------------


def test_dates_are_local_midnights_and_the_previous_period_is_as_many_days_before() -> None:
    r = resolve_range(None, "2026-11-01", "2026-11-02", "America/New_York")
    assert span(r) == (at("2026-11-01T00:00-04:00"), at("2026-11-02T00:00-05:00"),
                       at("2026-10-31T00:00-04:00"), at("2026-11-01T00:00-04:00"))
    assert r.end_us - r.start_us == 25 * 3600 * US
    assert r.previous_end_us - r.previous_start_us == 24 * 3600 * US
    assert r.label == "custom"


def test_the_spring_forward_day_lasts_23_hours() -> None:
    r = resolve_range(None, "2026-03-08", "2026-03-09", "America/New_York")
    assert (r.start(), r.end()) == (at("2026-03-08T00:00-05:00"), at("2026-03-09T00:00-04:00"))
    assert r.end_us - r.start_us == 23 * 3600 * US


def test_instants_are_exact_and_the_previous_period_is_the_same_length_before() -> None:
    r = resolve_range(None, "2026-11-21T08:00:00.000001Z", "2026-11-21T15:15:30.5+05:45",
                      "Asia/Shanghai")
    assert r.start_us == us("2026-11-21T08:00:00.000001+00:00")
    assert r.end_us == us("2026-11-21T09:30:30.500000+00:00")
    assert r.previous_end_us == r.start_us
    assert r.previous_start_us == r.start_us - (r.end_us - r.start_us)
    assert r.start().utcoffset() == timedelta(hours=8)  # shown in the chosen zone


def test_an_instant_without_offset_is_read_in_tz() -> None:
    r = resolve_range(None, "2026-11-21T08:00:00", "2026-11-21T09:00:00", "Asia/Kathmandu")
    assert r.start() == at("2026-11-21T08:00:00+05:45")


def test_a_date_and_an_instant_mix_and_compare_by_duration() -> None:
    r = resolve_range(None, "2026-11-20", "2026-11-20T06:00:00+08:00", "Asia/Shanghai")
    assert r.start() == at("2026-11-20T00:00+08:00")
    assert r.previous_start() == at("2026-11-19T18:00+08:00")


def test_start_alone_runs_until_now_and_end_alone_starts_7_days_before() -> None:
    now = at("2026-11-21T08:30:00+00:00")
    r = resolve_range(None, "2026-11-20", None, "UTC", now=now)
    assert (r.start(), r.end()) == (at("2026-11-20T00:00+00:00"), now)
    r = resolve_range(None, None, "2026-11-02", "America/New_York", now=now)
    assert (r.start(), r.end()) == (at("2026-10-26T00:00-04:00"), at("2026-11-02T00:00-05:00"))
    assert (r.previous_start(), r.previous_end()) == (at("2026-10-19T00:00-04:00"), r.start())


# Calendar edges: absolute time, midnights that are skipped or repeated, gaps ----------------

# Zones whose clocks spring forward at midnight, and the day whose 00:00 does not exist there
# (its first instant is 01:00). Paraguay has kept -03 all year since October 2024.
MIDNIGHT_GAPS = [("America/Havana", date(2026, 3, 8)), ("America/Santiago", date(2026, 9, 6)),
                 ("America/Asuncion", date(2024, 10, 6)), ("Asia/Beirut", date(2026, 3, 29)),
                 ("Africa/Cairo", date(2026, 4, 24))]


def _first_instant(day: date, zone: str) -> int:
    return brute.day_start_us(day, ZoneInfo(zone))


def test_a_range_between_two_wall_times_is_measured_in_absolute_time() -> None:
    # 00:00 EST to 12:00 EDT is 11 hours: so is the previous period.
    r = resolve_range(None, "2026-03-08T00:00", "2026-03-08T12:00", "America/New_York")
    assert span(r) == (at("2026-03-08T00:00-05:00"), at("2026-03-08T12:00-04:00"),
                       at("2026-03-07T13:00-05:00"), at("2026-03-08T00:00-05:00"))
    assert r.end_us - r.start_us == r.previous_end_us - r.previous_start_us == 11 * 3600 * US


@pytest.mark.parametrize(("zone", "day"), MIDNIGHT_GAPS)
def test_a_day_whose_midnight_is_skipped_begins_at_01_00(zone: str, day: date) -> None:
    r = resolve_range(None, day.isoformat(), (day + timedelta(days=1)).isoformat(), zone)
    assert r.start_us == _first_instant(day, zone)
    assert r.start().time().isoformat() == "01:00:00"
    assert r.end_us - r.start_us == 23 * 3600 * US


@pytest.mark.parametrize(("zone", "day"), MIDNIGHT_GAPS)
def test_the_previous_period_of_7d_starts_at_a_local_midnight(zone: str, day: date) -> None:
    # Today is 6 days after the skipped midnight: the period begins on that day at 01:00, and
    # the previous period on the whole day a week before it, from its 00:00.
    tz = ZoneInfo(zone)
    now = datetime.combine(day + timedelta(days=6), datetime.min.time(), tz) + timedelta(
        hours=15)
    r = resolve_range("7d", None, None, zone, now=now)
    assert r.start_us == _first_instant(day, zone)
    assert r.previous_start_us == _first_instant(day - timedelta(days=7), zone)
    assert r.previous_start().time().isoformat() == "00:00:00"
    # It ends as long into the day 7 days ago as now is into today.
    assert r.previous_end_us == _first_instant(day - timedelta(days=1), zone) + 15 * 3600 * US


@pytest.mark.parametrize(("zone", "day"), MIDNIGHT_GAPS)
def test_end_alone_on_a_skipped_midnight_covers_7_whole_days(zone: str, day: date) -> None:
    r = resolve_range(None, None, day.isoformat(), zone, now=at("2027-01-01T00:00+00:00"))
    assert (r.start_us, r.end_us) == (_first_instant(day - timedelta(days=7), zone),
                                      _first_instant(day, zone))
    assert (r.previous_start_us, r.previous_end_us) == (
        _first_instant(day - timedelta(days=14), zone), r.start_us)


def test_a_repeated_midnight_starts_the_day_at_its_first_occurrence() -> None:
    # Havana falls back from 01:00 to 00:00 on 2026-11-01: that day lasts 25 hours.
    # (Compared as instants: Python never finds a repeated wall time equal to another zone's.)
    r = resolve_range(None, "2026-11-01", "2026-11-02", "America/Havana")
    assert (r.start_us, r.end_us) == (us("2026-11-01T00:00-04:00"), us("2026-11-02T00:00-05:00"))
    assert r.end_us - r.start_us == 25 * 3600 * US
    # Santiago falls back from 24:00 to 23:00: the 4th lasts 25 hours, the 5th begins once.
    r = resolve_range(None, "2026-04-04", "2026-04-06", "America/Santiago")
    assert (r.start_us, r.end_us) == (us("2026-04-04T00:00-03:00"), us("2026-04-06T00:00-04:00"))
    assert r.end_us - r.start_us == 49 * 3600 * US


def test_a_skipped_day_begins_where_the_next_day_does() -> None:
    # Samoa skipped 2011-12-30 altogether: its "first instant" is the 31st's.
    r = resolve_range(None, "2011-12-30", "2012-01-01", "Pacific/Apia")
    assert r.start() == at("2011-12-31T00:00+14:00")
    assert r.end_us - r.start_us == 24 * 3600 * US


def test_a_wall_time_in_a_gap_moves_forward_by_the_gap() -> None:
    # New York skips 02:00-03:00: 02:30 is read as 03:30 EDT (RFC 5545).
    r = resolve_range(None, "2026-03-08T02:30", "2026-03-08T04:00", "America/New_York")
    assert span(r) == (at("2026-03-08T03:30-04:00"), at("2026-03-08T04:00-04:00"),
                       at("2026-03-08T03:00-04:00"), at("2026-03-08T03:30-04:00"))
    # Lord Howe skips 02:00-02:30: 02:10 is 02:40 +11:00.
    r = resolve_range(None, "2026-10-04T02:10", "2026-10-04T03:00", "Australia/Lord_Howe")
    assert r.start() == at("2026-10-04T02:40+11:00")
    # Havana skips 00:00-01:00: 00:20 is 01:20 -04:00.
    r = resolve_range(None, "2026-03-08T00:20", "2026-03-08T02:00", "America/Havana")
    assert r.start() == at("2026-03-08T01:20-04:00")


def test_a_repeated_wall_time_is_its_first_occurrence() -> None:
    r = resolve_range(None, "2026-11-01T01:30", "2026-11-01T03:00", "America/New_York")
    assert r.start_us == us("2026-11-01T01:30-04:00")
    assert r.end_us - r.start_us == int(2.5 * 3600 * US)


def test_a_start_in_a_gap_never_makes_a_negative_range() -> None:
    # 02:30 is 03:30 EDT, after 03:15: a 400 naming end, not an empty answer.
    with pytest.raises(BadParameter) as raised:
        resolve_range(None, "2026-03-08T02:30", "2026-03-08T03:15", "America/New_York")
    assert raised.value.param == "end"


def test_a_period_across_a_short_day_ends_its_previous_period_as_far_into_the_day() -> None:
    # Today is New York's 23-hour day, 10:00 EDT is 9 hours after its midnight: the previous
    # period ends 9 hours into the same weekday a week before, at 09:00 EST.
    now = at("2026-03-08T10:00-04:00")
    r = resolve_range("7d", None, None, "America/New_York", now=now)
    assert span(r) == (at("2026-03-02T00:00-05:00"), now,
                       at("2026-02-23T00:00-05:00"), at("2026-03-01T09:00-05:00"))


def test_the_previous_period_of_1d_stops_at_the_end_of_yesterday() -> None:
    # 24.5 hours into the 25-hour day; yesterday had 24 hours: it ends at today's start.
    now = at("2026-11-01T23:30-05:00")
    r = resolve_range("1d", None, None, "America/New_York", now=now)
    assert (r.previous_start(), r.previous_end()) == (at("2026-10-31T00:00-04:00"), r.start())


def test_end_alone_as_an_instant_starts_as_far_into_the_day_7_days_before() -> None:
    r = resolve_range(None, None, "2026-03-10T12:00", "America/New_York")
    assert (r.start(), r.end()) == (at("2026-03-03T12:00-05:00"), at("2026-03-10T12:00-04:00"))
    r = resolve_range(None, None, "2026-03-14T12:00", "America/New_York")
    assert r.start() == at("2026-03-07T12:00-05:00")
    r = resolve_range(None, None, "2026-03-08T12:00", "America/New_York")  # 11 h into the day
    assert r.start() == at("2026-03-01T11:00-05:00")


@pytest.mark.parametrize(("args", "param"), [
    (("7d", "2026-11-01", None, "UTC"), "period"),
    (("7d", None, "2026-11-01", "UTC"), "period"),
    (("2d", None, None, "UTC"), "period"),
    (("7D", None, None, "UTC"), "period"),
    ((None, "2026-11-02", "2026-11-01", "UTC"), "end"),
    ((None, "2026-11-01", "2026-11-01", "UTC"), "end"),
    ((None, "2026-11-01T10:00:00Z", "2026-11-01T10:00:00Z", "UTC"), "end"),
    ((None, "2026-11-01T10:00:00Z", "2026-11-01T15:44:59+05:45", "UTC"), "end"),
    ((None, "2000-01-01", "2020-01-01", "UTC"), "start"),
    ((None, "2026-02-30", "2026-03-02", "UTC"), "start"),
    ((None, "yesterday", "2026-03-02", "UTC"), "start"),
    ((None, "2026-03-01", "2026-13-01", "UTC"), "end"),
    ((None, "2026-03-01", "soon", "UTC"), "end"),
    ((None, None, None, "Mars/Olympus_Mons"), "tz"),
    ((None, None, None, "+05:45"), "tz"),
    ((None, None, None, "../../etc/passwd"), "tz"),
])
def test_bad_parameters_are_named(args: tuple[str | None, ...], param: str) -> None:
    with pytest.raises(BadParameter) as raised:
        resolve_range(*args, now=at("2026-11-21T08:30:00+00:00"))
    assert raised.value.param == param
    assert str(raised.value).startswith(f"{param}: ")


# Buckets -------------------------------------------------------------------------------------


def test_day_buckets_are_local_calendar_days_across_dst() -> None:
    r = resolve_range(None, "2026-10-31", "2026-11-03", "America/New_York")
    assert labels(r, "day") == ["2026-10-31", "2026-11-01", "2026-11-02"]
    r = resolve_range(None, "2026-03-07T12:00:00-05:00", "2026-03-09T00:00:00.000001-04:00",
                      "America/New_York")
    assert labels(r, "day") == ["2026-03-07", "2026-03-08", "2026-03-09"]


def test_the_fall_back_day_has_25_hour_buckets_with_01_00_twice() -> None:
    r = resolve_range(None, "2026-11-01", "2026-11-02", "America/New_York")
    hours = labels(r, "hour")
    assert len(hours) == 25
    assert hours[:4] == ["2026-11-01T00:00-04:00", "2026-11-01T01:00-04:00",
                         "2026-11-01T01:00-05:00", "2026-11-01T02:00-05:00"]
    assert hours[-1] == "2026-11-01T23:00-05:00"


def test_the_spring_forward_day_has_23_hour_buckets_without_02_00() -> None:
    r = resolve_range(None, "2026-03-08", "2026-03-09", "America/New_York")
    hours = labels(r, "hour")
    assert len(hours) == 23
    assert hours[1:3] == ["2026-03-08T01:00-05:00", "2026-03-08T03:00-04:00"]


def test_hour_buckets_at_plus_05_45_start_at_quarter_past_utc() -> None:
    r = resolve_range(None, "2026-11-21", "2026-11-22", "Asia/Kathmandu")
    hours = labels(r, "hour")
    assert len(hours) == 24
    assert hours[:2] == ["2026-11-21T00:00+05:45", "2026-11-21T01:00+05:45"]
    assert r.start_us == us("2026-11-20T18:15:00+00:00")


def test_a_30_minute_dst_shift_starts_the_hour_at_the_change() -> None:
    """Lord Howe moves by 30 minutes: the hour 02:xx of the spring-forward day begins at
    02:30 +11:00, and on the fall-back day the repeated half hour is its own bucket."""
    r = resolve_range(None, "2026-10-04", "2026-10-05", "Australia/Lord_Howe")
    hours = labels(r, "hour")
    assert len(hours) == 24  # 23.5 hours of wall clock, in 24 partly-filled hour buckets
    assert hours[1:4] == ["2026-10-04T01:00+10:30", "2026-10-04T02:30+11:00",
                          "2026-10-04T03:00+11:00"]
    r = resolve_range(None, "2026-04-05", "2026-04-06", "Australia/Lord_Howe")
    assert labels(r, "hour")[1:4] == ["2026-04-05T01:00+11:00", "2026-04-05T01:30+10:30",
                                      "2026-04-05T02:00+10:30"]


def test_the_first_bucket_is_the_whole_local_unit_around_the_start() -> None:
    r = resolve_range(None, "2026-11-21T08:20:00+05:45", "2026-11-21T09:05:00+05:45",
                      "Asia/Kathmandu")
    assert labels(r, "hour") == ["2026-11-21T08:00+05:45", "2026-11-21T09:00+05:45"]
    assert labels(r, "minute")[:2] == ["2026-11-21T08:20+05:45", "2026-11-21T08:21+05:45"]
    assert len(labels(r, "minute")) == 45


def test_minute_buckets_serve_a_whole_25_hour_day_but_not_more() -> None:
    check_bucket_count("minute", resolve_range(None, "2026-11-01", "2026-11-02",
                                               "America/New_York"))
    with pytest.raises(BadParameter) as raised:
        check_bucket_count("minute", resolve_range(None, "2026-11-01", "2026-11-03", "UTC"))
    assert raised.value.param == "granularity"
    with pytest.raises(BadParameter) as raised:
        check_bucket_count("week", resolve_range(None, "2026-11-01", "2026-11-03", "UTC"))
    assert raised.value.param == "granularity"


def _store(ledger: Ledger, *stamps: str) -> None:
    ledger.store([CallRecord(id=f"c{i}", ts_us=us(s), model="m", call_type="model",
                             total_tokens=1, input_tokens=1) for i, s in enumerate(stamps)])


def test_the_day_bucket_holds_exactly_the_local_day_across_dst(ledger: Ledger) -> None:
    _store(ledger,
           "2026-10-31T23:59:59.999999-04:00",  # the 31st
           "2026-11-01T00:00:00-04:00",         # first instant of the 1st
           "2026-11-01T01:30:00-04:00",         # the first 01:30
           "2026-11-01T01:30:00-05:00",         # the second 01:30
           "2026-11-01T23:59:59.999999-05:00",  # last instant of the 1st
           "2026-11-02T00:00:00-05:00")         # the 2nd
    r = resolve_range(None, "2026-10-31", "2026-11-03", "America/New_York")
    got = usage_trend(ledger, UsageQuery(CallFilter(), r), granularity="day")
    assert got["buckets"] == ["2026-10-31", "2026-11-01", "2026-11-02"]
    assert got["series"][0]["values"] == [1, 4, 1]


def test_the_repeated_hour_counts_its_calls_apart(ledger: Ledger) -> None:
    _store(ledger, "2026-11-01T01:10:00-04:00", "2026-11-01T01:50:00-04:00",
           "2026-11-01T01:00:00-05:00", "2026-11-01T02:00:00-05:00")
    r = resolve_range(None, "2026-11-01", "2026-11-02", "America/New_York")
    got = usage_trend(ledger, UsageQuery(CallFilter(), r), granularity="hour")
    assert got["series"][0]["values"][:4] == [None, 2, 1, 1]


def test_hour_buckets_at_plus_05_45_hold_their_own_calls(ledger: Ledger) -> None:
    _store(ledger, "2026-11-21T00:59:59.999999+05:45", "2026-11-21T01:00:00+05:45",
           "2026-11-21T01:14:59+05:45", "2026-11-21T01:15:00+05:45")
    r = resolve_range(None, "2026-11-21", "2026-11-22", "Asia/Kathmandu")
    got = usage_trend(ledger, UsageQuery(CallFilter(), r), granularity="hour")
    assert got["series"][0]["values"][:3] == [1, 3, None]


# Properties ----------------------------------------------------------------------------------

ZONES = ("UTC", "Asia/Shanghai", "America/New_York", "Asia/Kolkata", "Asia/Kathmandu",
         "Australia/Lord_Howe", "Europe/London", "Pacific/Chatham", "America/Havana",
         "America/Santiago", "America/Asuncion", "Asia/Beirut", "Africa/Cairo")
# Around the 2026 offset changes of those zones (Asuncion's last ones were in 2024).
WINDOW = (us("2026-03-01T00:00:00+00:00"), us("2026-11-08T00:00:00+00:00"))
CHANGES = tuple(us(t) for t in (
    "2026-03-08T07:00:00+00:00", "2026-03-29T01:00:00+00:00", "2026-04-04T15:00:00+00:00",
    "2026-10-03T15:30:00+00:00", "2026-10-25T01:00:00+00:00", "2026-11-01T06:00:00+00:00",
    "2026-03-08T05:00:00+00:00", "2026-11-01T05:00:00+00:00",  # Havana, at midnight
    "2026-04-05T03:00:00+00:00", "2026-09-06T04:00:00+00:00",  # Santiago
    "2026-03-28T22:00:00+00:00", "2026-10-24T21:00:00+00:00",  # Beirut
    "2026-04-23T22:00:00+00:00", "2026-10-29T21:00:00+00:00",  # Cairo
    "2026-04-04T14:00:00+00:00", "2026-09-26T14:00:00+00:00",  # Chatham
    "2024-03-24T03:00:00+00:00", "2024-10-06T04:00:00+00:00",  # Asuncion
))


@st.composite
def _instant_ranges(draw: st.DrawFn, longest_us: int) -> tuple[int, int, str]:
    zone = draw(st.sampled_from(ZONES))
    near = st.sampled_from(CHANGES)
    start = draw(st.one_of(st.integers(*WINDOW), near.map(lambda t: t - 3600 * US)))
    start += draw(st.integers(-4 * 3600 * US, 4 * 3600 * US))
    return start, start + draw(st.integers(1, longest_us)), zone


def _as_range(start_us: int, end_us: int, zone: str) -> TimeRange:
    def text(t: int) -> str:
        return (brute.EPOCH + timedelta(microseconds=t)).isoformat()

    return resolve_range(None, text(start_us), text(end_us), zone)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_buckets_are_every_local_unit_the_range_touches(data: st.DataObject) -> None:
    granularity = data.draw(st.sampled_from(("day", "hour", "minute")))
    longest = {"day": 40, "hour": 3, "minute": 1}[granularity] * 86400 * US
    start, end, zone = data.draw(_instant_ranges(longest))
    r = _as_range(start, end, zone)
    assert (r.start_us, r.end_us) == (start, end)
    expected = [brute.bucket_label(key, r.tz, granularity)
                for key in brute.buckets(start, end, r.tz, granularity)]
    assert labels(r, granularity) == expected


@settings(max_examples=300, deadline=None)
@given(zone=st.sampled_from(ZONES),
       now=st.one_of(st.integers(*WINDOW), st.builds(
           lambda change, days, into: change + days * 86400 * US + into,
           st.sampled_from(CHANGES), st.integers(-1, 60), st.integers(-3600 * US, 86400 * US))),
       period=st.sampled_from(("1d", "3d", "7d", "30d")))
def test_a_period_is_n_local_days_ending_now(zone: str, now: int, period: str) -> None:
    tz = ZoneInfo(zone)
    days = int(period[:-1])
    r = resolve_range(period, None, None, zone, now=brute.EPOCH + timedelta(microseconds=now))
    assert (r.start_us, r.end_us, r.previous_start_us, r.previous_end_us) == (
        brute.period_range(days, now, tz))
    # What period_range promises, checked without it: N local days ending now, the previous
    # period N local days before, each from the first instant of a day.
    today = brute.local_time(now, tz).date()
    for begin, day in ((r.start_us, today - timedelta(days=days - 1)),
                       (r.previous_start_us, today - timedelta(days=2 * days - 1))):
        assert brute.local_time(begin, tz).date() == day
        assert brute.local_time(begin - 1, tz).date() < day
    assert r.previous_end_us <= r.start_us
    last_previous_day = today - timedelta(days=days)
    if r.previous_end_us > brute.day_start_us(last_previous_day, tz):
        assert brute.local_time(r.previous_end_us - 1, tz).date() == last_previous_day
    assert r.previous_end_us % (900 * US) == 0


@settings(max_examples=300, deadline=None)
@given(zone=st.sampled_from(ZONES), data=st.data())
def test_dates_and_wall_times_are_read_in_tz(zone: str, data: st.DataObject) -> None:
    """Dates are the first instant of the local date; a wall time without an offset is the
    first instant showing that wall time, or, when the clocks skip it, the instant the
    offset before the gap gives it. Every range is positive or a 400 naming end."""
    tz = ZoneInfo(zone)
    own = [t for t in CHANGES
           if brute.local_time(t - 1, tz).utcoffset() != brute.local_time(t, tz).utcoffset()]
    around = data.draw(st.integers(*WINDOW) if not own or data.draw(st.booleans())
                       else st.sampled_from(own))
    around += data.draw(st.integers(-3600 * US, 3600 * US))
    first = brute.local_time(around, tz).date()
    last = first + timedelta(days=data.draw(st.integers(1, 40)))
    r = resolve_range(None, first.isoformat(), last.isoformat(), zone)
    assert (r.start_us, r.end_us, r.previous_start_us, r.previous_end_us) == (
        brute.dates_range(first, last, tz))

    # Wall times a few hours around, on whole minutes, some moved into a gap the clocks skip.
    minute = 60 * US
    around = around // minute * minute
    near = range(around - 9 * 3600 * US, around + 9 * 3600 * US, minute)

    def draw_wall(t: int) -> datetime:
        shift = timedelta(minutes=data.draw(st.sampled_from((0, 0, 15, 30, 60))))
        return brute.local_time(t, tz).replace(tzinfo=None) + shift

    def instant(wall: datetime) -> int:
        shown = [t for t in near if brute.local_time(t, tz).replace(tzinfo=None) == wall]
        if shown:
            return shown[0]
        # Skipped: read with the offset in force just before the clocks jumped past it.
        event("a wall time the clocks skip")
        after = next(t for t in near if brute.local_time(t, tz).replace(tzinfo=None) > wall)
        before = brute.local_time(after - 1, tz).utcoffset()
        assert before is not None
        return brute.instant_us(wall.replace(tzinfo=UTC) - before)

    t = around + data.draw(st.integers(-90, 90)) * minute
    if own and data.draw(st.booleans()):  # just before a change: a shift may land in its gap
        t = data.draw(st.sampled_from(own)) - data.draw(st.integers(1, 60)) * minute
        near = range(t - 9 * 3600 * US, t + 9 * 3600 * US, minute)
    wall_start = draw_wall(t)
    wall_end = draw_wall(t + data.draw(st.integers(-30, 3 * 60)) * minute)
    start_us, end_us = instant(wall_start), instant(wall_end)
    args = (None, wall_start.isoformat(), wall_end.isoformat(), zone)
    if end_us <= start_us:
        event("end not after start")
        with pytest.raises(BadParameter) as raised:
            resolve_range(*args)
        assert raised.value.param == "end"
        return
    r = resolve_range(*args)
    assert (r.start_us, r.end_us, r.previous_start_us, r.previous_end_us) == (
        brute.instants_range(start_us, end_us))
