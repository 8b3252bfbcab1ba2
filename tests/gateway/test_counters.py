"""The tokens-per-minute window and the wait it names in Retry-After, against brute force."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tallygate.gateway.counters import retry_after_s, weighted


def _window_later(current: int, previous: int, now: float, later: float) -> float:
    """The weighted window at ``later`` if no token is added after ``now``."""
    minutes = int(later // 60) - int(now // 60)
    if minutes == 0:
        return weighted(current, previous, later)
    if minutes == 1:
        return weighted(0, current, later)
    return 0.0


@given(current=st.integers(0, 10**7), previous=st.integers(0, 10**7),
       limit=st.integers(1, 10**7),
       now=st.floats(1.7e9, 1.8e9, allow_nan=False, allow_infinity=False))
def test_retry_after_is_the_first_whole_second_the_window_lets_a_call_in(
        current: int, previous: int, limit: int, now: float) -> None:
    if weighted(current, previous, now) < limit:
        return  # not refused
    retry_after = retry_after_s(current, previous, limit, now)
    assert 1 <= retry_after <= 120
    assert _window_later(current, previous, now, now + retry_after) < limit * (1 + 1e-9)
    if retry_after > 1:  # a second sooner would still have been refused
        # ... up to the microsecond retry_after_s allows for rounding: a window that opens
        # 0.2 µs after a whole second (float time near 1.7e9 s is exact to 0.24 µs) names the
        # next one.
        assert _window_later(current, previous, now,
                             now + retry_after - 1 - 2e-6) >= limit * (1 - 1e-9)


def test_a_window_exactly_full_at_the_named_second_names_the_next_one() -> None:
    # 1 token this minute, 10 in the last, limit 10, at the minute's start: the window is
    # 1 + 10·(1 − t/60), exactly 10 at t = 6 s (still refused), below it after.
    now = 1_800_000_000.0 - 1_800_000_000.0 % 60
    assert weighted(1, 10, now + 6) == 10
    assert retry_after_s(1, 10, 10, now) == 7


def test_memory_counters_keep_one_quota_period_a_key() -> None:
    # A daily quota moves to a new period every day: the old ones must not pile up.
    import asyncio

    from tallygate.gateway.counters import MemoryCounters

    async def scenario() -> MemoryCounters:
        counters = MemoryCounters()

        async def load() -> tuple[int, int]:
            return 0, 0

        for day in range(400):
            for key in range(10):
                await counters.period_used(f"key-{key}", f"day-{day}", 60, load)
                await counters.add_period(f"key-{key}", f"day-{day}", 5, 5)
        assert await counters.period_used("key-3", "day-399", 60, load) == (5, 5)
        return counters

    counters = asyncio.run(scenario())
    assert len(counters._periods) == 10 and not counters._loading
