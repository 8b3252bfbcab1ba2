"""Rollup deltas: what a batch of new call records adds to each rollup row.

Two grains: 15 minutes (kept for ever; every IANA zone's offset is a multiple of 15 minutes,
so calendar days are exact in every zone) and 1 minute (kept for a window; peak RPM/TPM and
minute charts). The store adds these deltas in the same transaction as the raw records.
"""

from __future__ import annotations

from collections.abc import Iterable

from tallygate.ledger.records import CallRecord

GRAIN_15M = 900
GRAIN_1M = 60

RollupKey = tuple[int, str, str, str, str]  # bucket, api_key_id ("" = none), model, category, type


def status_class(status_code: int) -> int:
    """0 success (< 400), 1 failed (>= 400 but not 429), 2 rate limited (429)."""
    if status_code < 400:
        return 0
    return 2 if status_code == 429 else 1


def rollup_deltas(records: Iterable[CallRecord], grain_s: int,
                  min_bucket: int | None = None) -> dict[RollupKey, list[int]]:
    """Sum ``records`` into rows of ``schema.ROLLUP_MEASURES``, in that order.

    Records whose bucket is older than ``min_bucket`` are left out (minute rollups are not
    written for minutes already past their retention).
    """
    grain_us = grain_s * 1_000_000
    rows: dict[RollupKey, list[int]] = {}
    for r in records:
        bucket = r.ts_us // grain_us * grain_s
        if min_bucket is not None and bucket < min_bucket:
            continue
        key = (bucket, r.api_key_id or "", r.model, r.model_category, r.call_type)
        m = rows.get(key)
        if m is None:
            m = rows[key] = [0] * 15
        m[0] += 1
        m[1 + status_class(r.status_code)] += 1
        m[4] += r.input_tokens
        m[5] += r.output_tokens
        m[6] += r.cached_input_tokens
        m[7] += r.reasoning_tokens
        m[8] += r.total_tokens
        m[9] += r.cost_nano
        if r.latency_ms is not None:
            m[10] += r.latency_ms
            m[11] += 1
        if r.ttft_ms is not None:
            m[12] += r.ttft_ms
            m[13] += 1
        if r.estimated:
            m[14] += 1
    return rows
