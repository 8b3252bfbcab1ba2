"""Where a key stands: its period's usage, its trailing rate and when it runs out."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from tallygate.domain.records import CallRecord
from tallygate.ledger.forecast import HOUR_US, key_standings, period_bounds
from tallygate.ledger.service import Ledger
from tallygate.store.keys import StoredKey

US = 1_000_000
NOW_US = int(datetime(2026, 11, 20, 12, 0, tzinfo=UTC).timestamp()) * US
KEY = StoredKey(id="k", name="k", prefix="tg-", secret_hash="h", status="active",
                internal=False, owner=None, tags=[], created_at=0, updated_at=0,
                expires_at=None, allowed_models=None, allowed_ips=None, rpm_limit=None,
                tpm_limit=None, quota_tokens=None, budget_nano=None, quota_period="total")


def _calls(key: str, start_us: int, hours: int, tokens: int, cost_nano: int) -> list[CallRecord]:
    return [CallRecord(id=f"{key}-{start_us}-{h}", ts_us=start_us + h * HOUR_US, model="m",
                       call_type="model", api_key_id=key, input_tokens=tokens,
                       total_tokens=tokens, cost_nano=cost_nano) for h in range(hours)]


def test_period_bounds_are_the_gateways_utc_calendar_periods() -> None:
    day = int(datetime(2026, 11, 20, tzinfo=UTC).timestamp()) * US
    assert period_bounds("daily", NOW_US) == (day, day + 86400 * US)
    month = int(datetime(2026, 11, 1, tzinfo=UTC).timestamp()) * US
    assert period_bounds("monthly", NOW_US) == (
        month, int(datetime(2026, 12, 1, tzinfo=UTC).timestamp()) * US)
    assert period_bounds("total", NOW_US) == (None, None)


def test_usage_rate_and_forecast(ledger: Ledger) -> None:
    # 1000 tokens and 1 000 000 nano each hour for the last 48 hours.
    ledger.store(_calls("k", NOW_US - 48 * HOUR_US, 48, 1000, 1_000_000)
                 + _calls("other", NOW_US - 2 * HOUR_US, 2, 5, 5))
    daily = replace(KEY, quota_tokens=20_000, quota_period="daily")
    monthly = replace(KEY, id="k", budget_nano=10**9, quota_period="monthly")
    total = replace(KEY, quota_tokens=60_000)
    plain = replace(KEY, id="other")
    for key, tokens in ((daily, 12_000), (monthly, 48_000), (total, 48_000)):
        standing = key_standings(ledger.db, [key], NOW_US)["k"]
        assert standing.tokens == tokens and standing.tokens_per_hour == 1000
        assert standing.cost_nano_per_hour == 1_000_000
    today = key_standings(ledger.db, [daily], NOW_US)["k"]
    # 8000 tokens left at 1000 an hour: 8 hours, before midnight UTC.
    assert today.runs_out_at_us == NOW_US + 8 * HOUR_US and today.runs_out_of == "quota"
    assert today.quota_used == 0.6 and "runs_out_soon" in today.warnings and today.near_limit
    month = key_standings(ledger.db, [monthly], NOW_US)["k"]
    # 952 000 000 nano left at 1 000 000 an hour: 952 hours, after the month ends.
    assert month.runs_out_at_us is None and month.budget_used == 0.048
    assert month.warnings == [] and not month.near_limit
    forever = key_standings(ledger.db, [total], NOW_US)["k"]
    assert forever.quota_used == 0.8 and "quota_near" in forever.warnings
    assert forever.runs_out_at_us == NOW_US + 12 * HOUR_US and forever.period_end_us is None
    other = key_standings(ledger.db, [plain], NOW_US)["other"]
    assert other.tokens == 10 and other.runs_out_at_us is None and other.warnings == []


def test_exhausted_and_expiring_keys(ledger: Ledger) -> None:
    ledger.store(_calls("k", NOW_US - 3 * HOUR_US, 3, 1000, 0))
    spent = replace(KEY, quota_tokens=3000)
    standing = key_standings(ledger.db, [spent], NOW_US)["k"]
    assert standing.exhausted and standing.warnings == ["quota_exhausted"]
    assert standing.near_limit and standing.runs_out_at_us is None
    expiring = replace(KEY, expires_at=NOW_US + 6 * 86400 * US)
    assert key_standings(ledger.db, [expiring], NOW_US)["k"].near_expiry
    later = replace(KEY, expires_at=NOW_US + 8 * 86400 * US)
    assert not key_standings(ledger.db, [later], NOW_US)["k"].near_expiry
    assert key_standings(ledger.db, [], NOW_US) == {}
