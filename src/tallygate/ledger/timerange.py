"""Time ranges and calendar buckets in a time zone, exact across daylight-saving changes."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tallygate.store.usage import Bucketing

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
    """``[start, end)`` and the previous period of equal length it is compared with."""

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
    """The first instant of ``day`` in ``tz`` (a zone may skip midnight itself)."""
    moment = datetime(day.year, day.month, day.day, tzinfo=tz)
    # If local midnight does not exist (a DST gap at 00:00), the day starts at the gap's end.
    utc = moment.astimezone(UTC)
    back = utc.astimezone(tz)
    return back if back.date() == day else moment


def _parse_moment(param: str, text: str, tz: ZoneInfo) -> tuple[datetime, bool]:
    """An instant, and whether the text was a bare date (local midnight in ``tz``)."""
    if _DATE.match(text):
        try:
            return local_midnight(date.fromisoformat(text), tz), True
        except ValueError:
            raise BadParameter(param, f"{text!r} is not a valid date") from None
    try:
        moment = datetime.fromisoformat(text.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        raise BadParameter(param, f"{text!r} is neither RFC 3339 (2026-11-21T08:00:00Z) "
                                  "nor a date (2026-11-21)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    return moment, False


def shift_days(moment: datetime, days: int, tz: ZoneInfo) -> datetime:
    """The same local wall-clock time ``days`` calendar days away."""
    local = moment.astimezone(tz).replace(tzinfo=None) + timedelta(days=days)
    return local.replace(tzinfo=tz)


def resolve_range(period: str | None, start: str | None, end: str | None, tz_name: str | None,
                  now: datetime | None = None) -> TimeRange:
    """The range the filters ask for.

    ``period=Nd`` is the last N calendar days in ``tz``, today included (local midnight N-1
    days ago until now); its previous period is the same wall-clock span N days earlier.
    ``start``/``end`` are RFC 3339 instants or dates (local midnight); a range between two
    dates is compared with the same number of calendar days before it, any other range with
    the span of equal length before it. Without any of them the period is 7d.
    """
    tz = parse_tz(tz_name)
    now = (now or datetime.now(UTC)).astimezone(tz)
    if period is not None and (start is not None or end is not None):
        raise BadParameter("period", "give either period or start/end, not both")
    if period is None and start is None and end is None:
        period = DEFAULT_PERIOD
    if period is not None:
        days = PERIODS.get(period)
        if days is None:
            raise BadParameter("period", f"must be one of {', '.join(PERIODS)}")
        begin = local_midnight(now.date() - timedelta(days=days - 1), tz)
        return TimeRange(to_us(begin), to_us(now),
                         to_us(shift_days(begin, -days, tz)), to_us(shift_days(now, -days, tz)),
                         tz, period)
    end_is_date = False
    if end is not None:
        end_moment, end_is_date = _parse_moment("end", end, tz)
    else:
        end_moment = now
    if start is not None:
        start_moment, start_is_date = _parse_moment("start", start, tz)
    else:
        start_moment, start_is_date = shift_days(end_moment, -7, tz), end_is_date
    if start_moment >= end_moment:
        raise BadParameter("start", "must be before end")
    if end_moment - start_moment > timedelta(days=3660):
        raise BadParameter("start", "the range is longer than ten years")
    if start_is_date and end_is_date:
        days = (end_moment.astimezone(tz).date() - start_moment.astimezone(tz).date()).days
        prev_start = local_midnight(start_moment.astimezone(tz).date() - timedelta(days=days),
                                    tz)
        prev_end = start_moment
    else:
        prev_end = start_moment
        prev_start = start_moment - (end_moment - start_moment)
    return TimeRange(to_us(start_moment), to_us(end_moment), to_us(prev_start), to_us(prev_end),
                     tz, "custom")


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
