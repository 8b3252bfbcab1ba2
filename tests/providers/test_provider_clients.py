"""The provider report clients against the fake provider account (real HTTP shapes, every
page, retries), and what they make of each provider's conventions."""

from __future__ import annotations

import asyncio
import logging
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tallygate.config import Provider
from tallygate.fake_upstream.provider_reports import FakeProviderReports
from tallygate.providers import ProviderError, ProviderReport, RetryPolicy, fetch_report

KEY = "sk-admin-secret-do-not-show"
DAY0 = date(2026, 11, 1)


def provider(kind: str, **fields: Any) -> Provider:
    return Provider(name=f"{kind}-main", kind=kind, base_url="http://provider.test/v1",
                    admin_key_env="TEST_ADMIN_KEY", **fields)


def fetch(fake: FakeProviderReports, p: Provider, start: date = DAY0,
          end: date = DAY0 + timedelta(days=5), waits: list[float] | None = None,
          environ: dict[str, str] | None = None) -> ProviderReport:
    async def no_sleep(seconds: float) -> None:
        if waits is not None:
            waits.append(seconds)

    return asyncio.run(fetch_report(
        p, start, end, environ={"TEST_ADMIN_KEY": KEY} if environ is None else environ,
        transport=httpx.ASGITransport(app=fake), sleep=no_sleep,
        retry=RetryPolicy(max_attempts=3, first_backoff_s=0.5)))


def account(**fields: Any) -> FakeProviderReports:
    return FakeProviderReports(admin_key=KEY, **fields)


def test_openai_pages_followed_to_the_end_cached_input_included_in_input() -> None:
    fake = account(page_size=2)
    for i in range(5):
        fake.add_call("openai", DAY0 + timedelta(days=i), "gpt-4o-2024-08-06",
                      input_tokens=1000 + i, cached_input_tokens=400, output_tokens=50,
                      cost=Decimal("0.0125"))
    fake.add_call("openai", DAY0 + timedelta(days=4), "text-embedding-3-small",
                  input_tokens=77, endpoint="embeddings")
    report = fetch(fake, provider("openai"))
    assert set(report.measures) == {"requests", "input_tokens", "cached_input_tokens",
                                    "output_tokens", "cost"}
    for i in range(5):
        figures = report.days[(DAY0 + timedelta(days=i), "gpt-4o-2024-08-06")]
        assert (figures.requests, figures.input_tokens, figures.cached_input_tokens,
                figures.output_tokens) == (1, 1000 + i, 400, 50)
        assert figures.cost == Decimal("0.0125")
        assert figures.cache_write_tokens is None  # OpenAI bills no cache writes
    assert report.days[(DAY0 + timedelta(days=4), "text-embedding-3-small")].input_tokens == 77
    # 5 days, 2 buckets a page: 3 pages of each of the three reports, the last with no page.
    paths = [path for path, _, _ in fake.requests]
    assert paths.count("/v1/organization/usage/completions") == 3
    assert paths.count("/v1/organization/costs") == 3
    first = dict(fake.requests[0][1])
    assert first["bucket_width"] == "1d" and first["group_by"] == "model"
    assert int(first["start_time"]) == 1793491200 and "page" not in first
    assert "page" in dict(fake.requests[1][1])
    assert fake.requests[0][2]["authorization"] == f"Bearer {KEY}"


def test_anthropic_cents_strings_and_cache_reads_and_writes_apart() -> None:
    fake = account(page_size=3)
    for i in range(4):
        fake.add_call("anthropic", DAY0 + timedelta(days=i), "claude-sonnet-4-20250514",
                      input_tokens=1000, cached_input_tokens=300, cache_write_tokens=200,
                      output_tokens=40, cost=Decimal("0.123456"))
    report = fetch(fake, provider("anthropic"))
    assert "requests" not in report.measures  # Anthropic's report has no request count
    figures = report.days[(DAY0, "claude-sonnet-4-20250514")]
    assert (figures.input_tokens, figures.cached_input_tokens, figures.cache_write_tokens,
            figures.output_tokens) == (1000, 300, 200, 40)
    # "12.3456" cents is $0.123456; the web search line (no model) is not a model's.
    assert figures.cost == Decimal("0.123456")
    usage = [q for path, q, _ in fake.requests if path.endswith("/messages")]
    assert len(usage) == 2  # 4 days, 3 a page
    assert ("group_by[]", "model") in usage[0] and ("bucket_width", "1d") in usage[0]
    assert dict(usage[0])["starting_at"] == "2026-11-01T00:00:00Z"
    headers = fake.requests[0][2]
    assert headers["x-api-key"] == KEY and headers["anthropic-version"] == "2023-06-01"


def test_a_429_then_a_500_are_retried_after_retry_after_or_backoff() -> None:
    fake = account(failures=[429, 500])
    fake.add_call("openai", DAY0, "gpt-4o", input_tokens=10)
    waits: list[float] = []
    report = fetch(fake, provider("openai"), waits=waits)
    assert report.days[(DAY0, "gpt-4o")].input_tokens == 10
    assert waits == [0.0, 1.0]  # Retry-After: 0, then the second back-off (0.5 doubled)


def test_retries_are_bounded() -> None:
    fake = account(failures=[503] * 10)
    with pytest.raises(ProviderError, match="answered 503, 3 times; giving up"):
        fetch(fake, provider("openai"))


def test_a_refused_admin_key_names_its_variable_never_the_key(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    fake = FakeProviderReports(admin_key="another-key", failures=[429])
    with pytest.raises(ProviderError) as raised:
        fetch(fake, provider("anthropic"))
    message = str(raised.value)
    assert "the admin key was refused" in message and "TEST_ADMIN_KEY" in message
    assert KEY not in message and KEY not in caplog.text


def test_a_missing_admin_key_variable_is_a_clear_error() -> None:
    with pytest.raises(ProviderError, match="TEST_ADMIN_KEY .* is not set"):
        fetch(account(), provider("openai"), environ={})


def test_other_client_errors_quote_the_provider_without_the_key() -> None:
    class Echo(FakeProviderReports):
        async def answer(self, scope: Any, send: Any) -> None:
            from tallygate.fake_upstream.asgi import openai_error, send_json

            await send_json(send, 400, openai_error(f"bad request with key {KEY}"))

    with pytest.raises(ProviderError) as raised:
        fetch(Echo(admin_key=KEY), provider("openai"))
    assert "answered 400" in str(raised.value) and KEY not in str(raised.value)


def test_api_key_ids_narrow_the_usage_and_leave_cost_out() -> None:
    fake = account()
    fake.add_call("openai", DAY0, "gpt-4o", input_tokens=10, cost=Decimal(1))
    report = fetch(fake, provider("openai", api_key_ids=["key_a", "key_b"]))
    assert "cost" not in report.measures
    assert [path for path, _, _ in fake.requests].count("/v1/organization/costs") == 0
    query = fake.requests[0][1]
    assert [v for k, v in query if k == "api_key_ids"] == ["key_a", "key_b"]
    fake = account()
    fetch(fake, provider("anthropic", api_key_ids=["apikey_1"]))
    assert ("api_key_ids[]", "apikey_1") in fake.requests[0][1]


def test_a_cost_line_item_spelt_otherwise_joins_its_models_usage() -> None:
    fake = account()
    fake.add_call("openai", DAY0, "gpt-4o-2024-08-06", input_tokens=10)
    fake.openai_costs[(DAY0, "GPT-4o-2024-08-06, cached input")] = Decimal("0.5")
    fake.openai_costs[(DAY0, "Web search tool calls")] = Decimal("0.25")
    report = fetch(fake, provider("openai"), end=DAY0 + timedelta(days=1))
    assert report.days[(DAY0, "gpt-4o-2024-08-06")].cost == Decimal("0.5")
    assert report.days[(DAY0, "Web search tool calls")].cost == Decimal("0.25")
    assert (DAY0, "GPT-4o-2024-08-06") not in report.days


def test_retry_after_in_seconds_or_as_a_date() -> None:
    from datetime import UTC, datetime
    from email.utils import format_datetime

    from tallygate.providers.http import _retry_after

    def answer(value: str) -> httpx.Response:
        return httpx.Response(429, headers={"Retry-After": value})

    assert _retry_after(answer("7")) == 7.0
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 < (_retry_after(answer(later)) or 0) <= 30
    assert _retry_after(answer("soon")) is None
    assert _retry_after(httpx.Response(429)) is None
