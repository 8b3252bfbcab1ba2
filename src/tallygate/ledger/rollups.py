"""The two rollup grains.

15 minutes (kept for ever: every IANA zone's offset is a multiple of 15 minutes, so calendar
days are exact in every zone) and 1 minute (kept for a window: peak RPM/TPM and minute charts).
The store adds a batch's sums to both in the same transaction as its raw records
(``store/calls.py``); a call's status class is < 400 success, 429 rate limited, else failed.
"""

from __future__ import annotations

GRAIN_15M = 900
GRAIN_1M = 60
