"""Robust baselines for anomaly detection: the median and the median absolute deviation
(MAD) of log counts.

Traffic varies by multiplication (a busy day is busier in every hour), so the scale is
logarithmic: ``log(1 + x)``. The median and the MAD ignore the outliers among the history,
so one past spike does not hide the next. A floor under the spread keeps a very regular
series from flagging a 10 % wobble.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

MAD_TO_SIGMA = 1.4826  # the MAD of a normal distribution times this is its standard deviation


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        raise ValueError("median of nothing")
    middle = n // 2
    return ordered[middle] if n % 2 else (ordered[middle - 1] + ordered[middle]) / 2


@dataclass(frozen=True, slots=True)
class Score:
    z: float  # how many (robust) standard deviations above the baseline, on the log scale
    baseline: float  # the typical value, in the series' own units
    sigma: float  # the spread used, on the log scale


def robust_score(value: float, history: Sequence[float], min_sigma: float,
                 offset: float = 1.0) -> Score:
    """How far ``value`` lies above the median of ``history``, in robust standard deviations
    of ``log(offset + x)`` (at least ``min_sigma``).

    ``offset`` is a pseudo-count: small counts jump by whole calls (0, 2, 1, 3 …), noise a log
    scale would blow up; ``log(offset + x)`` is flat below ``offset`` and multiplicative well
    above it."""
    logs = [math.log(offset + v) for v in history]
    center = median(logs)
    spread = MAD_TO_SIGMA * median([abs(v - center) for v in logs])
    sigma = max(spread, min_sigma)
    return Score((math.log(offset + value) - center) / sigma, math.exp(center) - offset, sigma)


def seasonal_history(series: Sequence[float], index: int, *, period: int, cycles: int,
                     spread: int, first: int = 0) -> list[float]:
    """The values a bucket is compared with: ``cycles`` periods back, each with ``spread``
    neighbours on either side (``period`` 24 on hours: the same hour of the last days;
    ``period`` 1: simply the ``cycles`` buckets before it). Buckets before ``first`` (before
    the series began) are left out rather than counted as zeros."""
    out = []
    for cycle in range(1, cycles + 1):
        for shift in range(-spread, spread + 1):
            i = index - cycle * period + shift
            if first <= i < index:
                out.append(series[i])
    return out
