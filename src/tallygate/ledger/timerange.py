"""Time ranges and calendar buckets in a time zone, exact across daylight-saving changes."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tallygate.store.usage import Bucketing

# The previous period of ``period=Nd`` ends on one of these (UTC quarter-hours, the grain of
# the rollups that are never purged; every local midnight of a real zone is on one).
QUARTER_HOUR_US = 900 * 1_000_000
PERIODS = {"1d": 1, "3d": 3, "7d": 7, "30d": 30}
DEFAULT_PERIOD = "7d"
GRANULARITY_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}
# Minute buckets serve one day, hour buckets 93 days; a calendar day lasts up to 26 hours when
# the clocks fall back (two hours in Antarctica/Troll), so a whole local day always fits.
MAX_BUCKETS = {"minute": 26 * 60, "hour": 24 * 93 + 2, "day": 3700}
US = 1_000_000
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class BadParameter(ValueError):
    """A filter parameter is wrong. ``param`` names it; the message says what is expected."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param
        self.message = message


def parse_tz(name: str | None) -> ZoneInfo:
    if not name:
        return ZoneInfo("UTC")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise BadParameter("tz", f"unknown time zone {name!r}; use an IANA name such as "
                                 "Asia/Shanghai or America/New_York") from None


@dataclass(frozen=True, slots=True)
class TimeRange:
    """``[start, end)`` and the previous period it is compared with (``resolve_range``)."""

    start_us: int
    end_us: int
    previous_start_us: int
    previous_end_us: int
    tz: ZoneInfo
    label: str  # "7d", or "custom"

    def start(self) -> datetime:
        return _from_us(self.start_us, self.tz)

    def end(self) -> datetime:
        return _from_us(self.end_us, self.tz)

    def previous_start(self) -> datetime:
        return _from_us(self.previous_start_us, self.tz)

    def previous_end(self) -> datetime:
        return _from_us(self.previous_end_us, self.tz)


def _from_us(value: int, tz: ZoneInfo) -> datetime:
    moment = datetime.fromtimestamp(value // US, UTC).replace(microsecond=value % US)
    return moment.astimezone(tz)


def to_us(moment: datetime) -> int:
    """Microseconds since the epoch of an aware datetime, exactly (no float rounding)."""
    assert moment.tzinfo is not None
    return int(moment.timestamp()) * US + moment.microsecond


def local_midnight(day: date, tz: ZoneInfo) -> datetime:
    """The first instant of ``day`` in ``tz``.

    Usually 00:00. Where the clocks skip midnight (Havana, Santiago, Beirut, Cairo spring
    forward at 00:00) the day begins at the end of the gap, 01:00; where midnight is repeated
    (Havana falls back from 01:00 to 00:00) it is the earlier 00:00.
    """
    wall = datetime(day.year, day.month, day.day)
    first, last = _readings(wall, tz)
    if _wall(first, tz) == wall:
        return _from_us(first, tz)
    # 00:00 falls in a gap, so the day begins at the offset change: ``first`` (read with the
    # offset after the change) is before it and ``last`` is after it. Changes fall on whole
    # seconds; bisect to the first second that has the later offset.
    after = _offset_us(last, tz)
    lo, hi = first // US, -(-last // US)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _offset_us(mid * US, tz) == after:
            hi = mid
        else:
            lo = mid
    return _from_us(hi * US, tz)


def local_instant(wall: datetime, tz: ZoneInfo) -> int:
    """The instant (microseconds) of the naive local time ``wall`` in ``tz``.

    A time the clocks skip is read with the offset in force before the gap, which moves it
    forward by the gap's length (New York 02:30 on the spring-forward day is 03:30 EDT), as
    RFC 5545 does; a time that occurs twice is its first occurrence (the earlier instant).
    """
    first, last = _readings(wall, tz)
    return first if _wall(first, tz) == wall else last


def _readings(wall: datetime, tz: ZoneInfo) -> tuple[int, int]:
    """``wall`` read with either offset zoneinfo offers (fold=0 and fold=1), earlier first.

    Both are the same instant except around an offset change: for a repeated time they are
    its two occurrences; for a skipped time neither reads back as ``wall``, and the later one
    is the reading with the offset before the gap.
    """
    a = to_us(wall.replace(tzinfo=tz, fold=0))
    b = to_us(wall.replace(tzinfo=tz, fold=1))
    return min(a, b), max(a, b)


def _wall(t_us: int, tz: ZoneInfo) -> datetime:
    return _from_us(t_us, tz).replace(tzinfo=None)


def _offset_us(t_us: int, tz: ZoneInfo) -> int:
    delta = _from_us(t_us, tz).utcoffset()
    assert delta is not None
    return delta // timedelta(microseconds=1)


def day_start_us(day: date, tz: ZoneInfo) -> int:
    return to_us(local_midnight(day, tz))


def same_time_days_away(t_us: int, days: int, tz: ZoneInfo) -> int:
    """The instant as far into its local day, in absolute time, as ``t_us`` is into its own,
    ``days`` calendar days away; at most the end of that day (it may be shorter)."""
    day = _from_us(t_us, tz).date()
    into = t_us - day_start_us(day, tz)
    target = day + timedelta(days=days)
    return min(day_start_us(target, tz) + into, day_start_us(target + timedelta(days=1), tz))


def _parse_moment(param: str, text: str, tz: ZoneInfo) -> tuple[int, date | None]:
    """An instant (microseconds), and the local date when the text was a bare date (which
    means the first instant of that date in ``tz``)."""
    if _DATE.match(text):
        try:
            day = date.fromisoformat(text)
        except ValueError:
            raise BadParameter(param, f"{text!r} is not a valid date") from None
        return day_start_us(day, tz), day
    try:
        moment = datetime.fromisoformat(text.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        raise BadParameter(param, f"{text!r} is neither RFC 3339 (2026-11-21T08:00:00Z) "
                                  "nor a date (2026-11-21)") from None
    if moment.tzinfo is None:
        return local_instant(moment, tz), None
    return to_us(moment), None


def resolve_range(period: str | None, start: str | None, end: str | None, tz_name: str | None,
                  now: datetime | None = None) -> TimeRange:
    """The range the filters ask for. Every boundary is an absolute instant (docs/api.md,
    "Common filters", says the same in words):

    - ``period=Nd``: from the first instant of the local day N-1 days ago until now. Its
      previous period starts at the first instant of the local day 2N-1 days ago and ends as
      long after the first instant of the day N days ago as now is after today's (at most
      that day's end), rounded down to a quarter-hour: the N calendar days before, cut at the
      same point of the last day. The rounding keeps the previous period answerable exactly
      from the rollups kept for ever, after its raw records and minutes are purged.
    - ``start``/``end``: RFC 3339 instants, or dates meaning the first instant of that local
      date; a time without an offset is read in ``tz`` (``local_instant``). Without ``end``
      it is now; without ``start`` it is the first instant of the date 7 days before a date
      ``end``, or as far into the day 7 calendar days before an instant ``end``. ``end`` must
      be after ``start``. Between two dates the previous period is the same number of
      calendar days before ``start``; otherwise it is the span of equal absolute length
      ending at ``start``.
    - Nothing given: ``period=7d``.
    """
    tz = parse_tz(tz_name)
    now_us = to_us(now or datetime.now(UTC))
    if period is not None and (start is not None or end is not None):
        raise BadParameter("period", "give either period or start/end, not both")
    if period is None and start is None and end is None:
        period = DEFAULT_PERIOD
    if period is not None:
        days = PERIODS.get(period)
        if days is None:
            raise BadParameter("period", f"must be one of {', '.join(PERIODS)}")
        today = _from_us(now_us, tz).date()
        previous_end = same_time_days_away(now_us, -days, tz)
        return TimeRange(day_start_us(today - timedelta(days=days - 1), tz), now_us,
                         day_start_us(today - timedelta(days=2 * days - 1), tz),
                         previous_end // QUARTER_HOUR_US * QUARTER_HOUR_US, tz, period)
    end_us, end_day = now_us, None
    if start is not None:
        start_us, start_day = _parse_moment("start", start, tz)
    if end is not None:
        end_us, end_day = _parse_moment("end", end, tz)
    if start is None and end_day is not None:
        start_day = end_day - timedelta(days=7)
        start_us = day_start_us(start_day, tz)
    elif start is None:
        start_us, start_day = same_time_days_away(end_us, -7, tz), None
    if end_us <= start_us and end is None:
        raise BadParameter("start", "must be before now (the range ends now without end)")
    if end_us <= start_us:
        raise BadParameter("end", "must be after start")
    if end_us - start_us > 3660 * 86400 * US:
        raise BadParameter("start", "the range is longer than ten years")
    if start_day is not None and end_day is not None:
        days = (end_day - start_day).days
        previous = (day_start_us(start_day - timedelta(days=days), tz), start_us)
    else:
        previous = (start_us - (end_us - start_us), start_us)
    return TimeRange(start_us, end_us, *previous, tz, "custom")


# Previous periods and local days are computed with datetime, which ends at years 1 and 9999:
# far from those ends every range is safe. Both accepted forms begin with the year.
YEARS = range(1970, 9000)
_YEAR = re.compile("[0-9]{4}")


def checked_range(period: str | None, start: str | None, end: str | None,
                  tz: str | None) -> TimeRange:
    """``resolve_range`` for what a user typed (API, CLI): years outside ``YEARS`` are a
    clear error naming the parameter rather than an overflow deeper down."""
    for param, value in (("start", start), ("end", end)):
        # ASCII digits only: str.isdigit() is also true of "¹" and "２", which int() refuses.
        if value is not None and _YEAR.fullmatch(value[:4]) and int(value[:4]) not in YEARS:
            raise BadParameter(param, f"the year must be between {YEARS.start} and "
                                      f"{YEARS.stop - 1}")
    return resolve_range(period, start, end, tz)


def offset_segments(tz: ZoneInfo, start_s: int, end_s: int) -> tuple[tuple[int, int], ...]:
    """``(from_s, utc_offset_s)`` for every change of the zone's offset in ``[start, end)``.

    The offset is sampled every 6 hours and each change is found by bisection to the second,
    so a 30-day range costs about 120 look-ups.
    """

    def offset_at(t: int) -> int:
        delta = datetime.fromtimestamp(t, UTC).astimezone(tz).utcoffset()
        assert delta is not None
        return int(delta.total_seconds())

    segments = [(start_s, offset_at(start_s))]
    step = 6 * 3600
    t = start_s
    while t < end_s:
        nxt = min(t + step, end_s)
        if offset_at(nxt) != offset_at(t):
            lo, hi = t, nxt  # offset(lo) differs from offset(hi): find the first changed second
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if offset_at(mid) == offset_at(lo):
                    lo = mid
                else:
                    hi = mid
            segments.append((hi, offset_at(hi)))
        t = nxt
    return tuple(segments)


def bucketing_for(granularity: str, time_range: TimeRange) -> Bucketing:
    width = GRANULARITY_SECONDS[granularity]
    segments = offset_segments(time_range.tz, time_range.start_us // US,
                               -(-time_range.end_us // US))
    return Bucketing(width, segments, split_by_offset=width < 86400)


def check_bucket_count(granularity: str, time_range: TimeRange) -> None:
    if granularity not in GRANULARITY_SECONDS:
        raise BadParameter("granularity", f"must be one of {', '.join(GRANULARITY_SECONDS)}")
    seconds = (time_range.end_us - time_range.start_us) / US
    limit = MAX_BUCKETS[granularity]
    if seconds / GRANULARITY_SECONDS[granularity] > limit:
        longest = {"minute": "1 day", "hour": "93 days", "day": "about ten years"}[granularity]
        raise BadParameter("granularity", f"{granularity} buckets cover at most {longest}; "
                                          "choose a coarser granularity or a shorter range")


@dataclass(frozen=True, slots=True)
class Bucket:
    """One bucket of a trend: its identity in query rows, and its label."""

    index: int
    offset: int | None
    label: str


def iter_buckets(time_range: TimeRange, bucketing: Bucketing) -> Iterator[Bucket]:
    """Every local bucket that ``[start, end)`` touches, in time order."""
    width = bucketing.width_s
    tz = time_range.tz
    if width == 86400:
        first = time_range.start().date()
        last = _from_us(time_range.end_us - 1, tz).date()
        day = first
        while day <= last:
            local_epoch_day = (day - date(1970, 1, 1)).days
            yield Bucket(local_epoch_day, None, day.isoformat())
            day += timedelta(days=1)
        return
    step = min(width, 900)
    t = time_range.start_us // US // step * step
    end_s = -(-time_range.end_us // US)
    seen: set[tuple[int, int]] = set()
    segments = bucketing.segments
    while t < end_s:
        offset = _offset_at(segments, t)
        key = ((t + offset) // width, offset)
        if key not in seen and t + step > time_range.start_us // US:
            seen.add(key)
            yield Bucket(key[0], offset,
                         _bucket_start(key[0] * width - offset, offset, width, tz)
                         .isoformat(timespec="minutes"))
        t += step


def _bucket_start(wall_start_s: int, offset: int, width: int, tz: ZoneInfo) -> datetime:
    """The first instant of the local bucket that starts at ``wall_start_s`` on the wall clock
    of ``offset``: that moment itself, unless the zone only moved to ``offset`` inside the
    bucket (Lord Howe shifts by 30 minutes), when the bucket begins at the change."""
    local = datetime.fromtimestamp(wall_start_s, UTC).astimezone(tz)
    if local.utcoffset() != timedelta(seconds=offset):
        begin = next(s for s, o in offset_segments(tz, wall_start_s, wall_start_s + width)
                     if o == offset)
        local = datetime.fromtimestamp(begin, UTC).astimezone(tz)
    return local


def _offset_at(segments: tuple[tuple[int, int], ...], t: int) -> int:
    offset = segments[0][1]
    for begin, value in segments:
        if t >= begin:
            offset = value
    return offset
