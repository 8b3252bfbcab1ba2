"""Reconciliation: the ledger's side per UTC day x upstream model, each status, the stored
runs, the schedule and the webhook; on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tallygate.config import Provider, Settings, load_settings
from tallygate.fake_upstream.provider_reports import FakeProviderReports
from tallygate.ledger.reconcile import days_of_period, ledger_days
from tallygate.ledger.reconciler import ReconcileScheduler, run_reconciliation
from tallygate.ledger.service import Ledger
from tallygate.ledger.timerange import BadParameter
from tallygate.ledger.webhook import AnomalyNotifier, WebhookConfig
from tallygate.providers import ProviderReport, fetch_report
from tallygate.store import reconciliation as run_store
from tallygate.store.database import Database
from tests.api.support import record

KEY = "sk-admin-test"
TODAY = date(2026, 11, 11)
DAY0 = date(2026, 11, 1)
NANO = Decimal(1_000_000_000)


def config(db: Database, kind: str = "openai", **flags: Any) -> Settings:
    return load_settings(
        database_url=db.url,
        providers=[{"name": "main", "kind": kind, "admin_key_env": "TEST_ADMIN_KEY"}],
        routes=[{"model": "gpt-4o", "base_url": "http://u.test/v1", "provider": "main",
                 "upstream_model": "gpt-4o"},
                {"model": "mini", "base_url": "http://u.test/v1", "provider": "main",
                 "upstream_model": "gpt-4o-mini"},
                {"model": "local", "base_url": "http://u.test/v1"}], **flags)


def fetcher(fake: FakeProviderReports) -> Any:
    async def fetch(provider: Provider, start: date, end: date) -> ProviderReport:
        async def no_sleep(_: float) -> None:
            return None

        return await fetch_report(provider, start, end, environ={"TEST_ADMIN_KEY": KEY},
                                  transport=httpx.ASGITransport(app=fake), sleep=no_sleep)
    return fetch


def at(day: date, hour: int = 12, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)


def seed(ledger: Ledger, fake: FakeProviderReports, kind: str) -> None:
    """Calls over three days, the provider billing exactly what they say."""
    records = []
    for i in range(30):
        day = DAY0 + timedelta(days=i % 3)
        model, upstream = (("gpt-4o", "gpt-4o-2024-08-06") if i % 2 else
                           ("mini", None))  # a record without the upstream's model
        cached, write = (i * 3, i * 2 if kind == "anthropic" else 0)
        records.append(record(f"c{i}", at(day, i % 24, i), model=model, upstream_model=upstream,
                              input_tokens=500 + i + cached + write, output_tokens=40 + i,
                              cached=cached, cache_write=write, cost_nano=1_250_000 * (i + 1)))
        fake.add_call(kind, day, upstream or "gpt-4o-mini", input_tokens=500 + i + cached + write,
                      cached_input_tokens=cached, cache_write_tokens=write,
                      output_tokens=40 + i, cost=Decimal(1_250_000 * (i + 1)) / NANO)
    # Not this provider's route: never compared.
    records.append(record("other", at(DAY0), model="local", input_tokens=9999))
    # Refused by the gateway (429): not a billed request, and no tokens.
    records.append(record("refused", at(DAY0), model="gpt-4o", status=429, input_tokens=0,
                          output_tokens=0, upstream_model="gpt-4o-2024-08-06"))
    ledger.store(records)


def reconcile(ledger: Ledger, cfg: Settings, fake: FakeProviderReports,
              period: str = "10d") -> dict[str, Any]:
    return asyncio.run(run_reconciliation(ledger, cfg, "main", period, fetch=fetcher(fake),
                                          today=TODAY))


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_a_faithful_ledger_matches_exactly(db: Database, kind: str) -> None:
    ledger = Ledger(db)
    fake = FakeProviderReports(admin_key=KEY)
    seed(ledger, fake, kind)
    result = reconcile(ledger, config(db, kind), fake)
    assert result["status"] == "match", json.dumps(result["rows"], indent=1)
    assert result["counts"]["match"] == 6 and len(result["rows"]) == 6
    assert (result["start"], result["end"]) == ("2026-11-01", "2026-11-11")
    row = result["rows"][0]
    assert row["day"] == "2026-11-01" and row["upstream_model"] == "gpt-4o-2024-08-06"
    assert row["models"] == ["gpt-4o"]
    expected = {"openai": {"requests", "input_tokens", "cached_input_tokens", "output_tokens",
                           "cost"},
                "anthropic": {"input_tokens", "cached_input_tokens", "cache_write_tokens",
                              "output_tokens", "cost"}}[kind]
    assert set(row["cells"]) == expected
    assert all(c["difference"] in (0, "0.00") for r in result["rows"]
               for c in r["cells"].values())


def test_each_status_with_both_figures_and_the_difference(db: Database) -> None:
    ledger = Ledger(db)
    fake = FakeProviderReports(admin_key=KEY)
    seed(ledger, fake, "openai")
    day1, day2 = DAY0 + timedelta(days=1), DAY0 + timedelta(days=2)
    # Day 1, gpt-4o-mini: the provider billed the cached input as uncached (LiteLLM's case).
    fake.openai_usage[("completions", day1, "gpt-4o-mini")]["input_cached_tokens"] = 0
    # Day 0, gpt-4o: 2 % more output billed than recorded: within a 5 % tolerance.
    usage = fake.openai_usage[("completions", DAY0, "gpt-4o-2024-08-06")]
    ours_output = usage["output_tokens"]
    usage["output_tokens"] = ours_output * 102 // 100
    # A model the gateway never routed, and a day the provider has nothing of ours for.
    fake.add_call("openai", day2, "o3-pro", input_tokens=7)
    del fake.openai_usage[("completions", day2, "gpt-4o-2024-08-06")]
    del fake.openai_costs[(day2, "gpt-4o-2024-08-06, input")]
    ledger.store([record("est", at(day2, 23, 59), model="gpt-4o", input_tokens=10,
                         upstream_model="gpt-4o-2024-08-06")])
    ledger.store([record("est2", at(day1), model="mini", input_tokens=0, output_tokens=0)])
    from dataclasses import replace
    est = record("est3", at(day1, 1), model="mini", input_tokens=0, output_tokens=0)
    ledger.store([replace(est, estimated=True)])
    result = reconcile(ledger, config(db, reconcile_tolerance="0.05"), fake)
    rows = {(r["day"], r["upstream_model"]): r for r in result["rows"]}
    within = rows[("2026-11-01", "gpt-4o-2024-08-06")]
    assert within["status"] == "within_tolerance"
    cell = within["cells"]["output_tokens"]
    assert cell["status"] == "within_tolerance"
    assert cell["difference"] == cell["provider"] - cell["tallygate"] > 0
    mismatch = rows[("2026-11-02", "gpt-4o-mini")]
    assert mismatch["status"] == "mismatch" and mismatch["estimated_calls"] == 1
    cached = mismatch["cells"]["cached_input_tokens"]
    assert cached["status"] == "mismatch" and cached["provider"] == 0
    assert cached["difference"] == -cached["tallygate"] < 0
    assert mismatch["cells"]["input_tokens"]["status"] == "match"
    assert mismatch["cells"]["requests"]["tallygate"] == 7  # est2, est3: calls below 400
    here = rows[("2026-11-03", "o3-pro")]
    assert here["status"] == "missing_here" and here["models"] == []
    assert here["cells"]["input_tokens"] == {"status": "missing_here", "provider": 7,
                                             "tallygate": None, "difference": None}
    there = rows[("2026-11-03", "gpt-4o-2024-08-06")]
    assert there["status"] == "missing_there"
    assert there["cells"]["requests"]["provider"] is None
    assert result["status"] == "mismatch"
    assert result["counts"] == {"match": 3, "within_tolerance": 1, "mismatch": 1,
                                "missing_here": 1, "missing_there": 1}


def test_period_is_whole_utc_days_before_today() -> None:
    assert days_of_period("30d", TODAY) == (TODAY - timedelta(days=30), TODAY)
    for bad in ("", "0d", "30", "7w", "367d", "-1d"):
        with pytest.raises(BadParameter) as raised:
            days_of_period(bad, TODAY)
        assert raised.value.param == "period"


def test_an_unknown_provider_is_a_bad_parameter(sqlite_db: Database) -> None:
    with pytest.raises(BadParameter, match="provider: 'nope' names no"):
        asyncio.run(run_reconciliation(Ledger(sqlite_db), config(sqlite_db), "nope", "7d",
                                       fetch=fetcher(FakeProviderReports())))


def test_the_schedule_stores_each_run_and_a_mismatch_reaches_the_webhook(db: Database) -> None:
    ledger = Ledger(db)
    fake = FakeProviderReports(admin_key=KEY)
    seed(ledger, fake, "anthropic")
    fake.anthropic_usage[(DAY0, "gpt-4o-mini")]["cache_read_input_tokens"] += 100
    cfg = config(db, "anthropic", reconcile_interval_s=3600, reconcile_days=10,
                 anomaly_webhook_url="http://hooks.test/in")
    scheduler = ReconcileScheduler(ledger, cfg, fetch=fetcher(fake))
    now = datetime(2026, 11, 11, 6, tzinfo=UTC).timestamp()
    assert asyncio.run(scheduler.run_due(now)) == 1
    last = run_store.last_runs(db)["main"]
    assert last["status"] == "mismatch" and last["result"]["end"] == "2026-11-11"
    # Within the interval nothing runs again, whichever process asks.
    stored_at = run_store.latest_run_at(db, "main")
    assert stored_at is not None
    assert asyncio.run(scheduler.run_due(stored_at / 1e6 + 60)) == 0
    received: list[dict[str, Any]] = []

    def hook(request: httpx.Request) -> httpx.Response:
        received.append({"event": request.headers["x-tallygate-event"],
                         "body": json.loads(request.content)})
        return httpx.Response(204)

    notifier = AnomalyNotifier(ledger, WebhookConfig(url="http://hooks.test/in", secret=None),
                               client=httpx.AsyncClient(transport=httpx.MockTransport(hook)))
    assert asyncio.run(notifier.deliver_due()) == 1
    assert received[0]["event"] == "reconciliation.mismatch"
    body = received[0]["body"]["reconciliation"]
    assert body["provider"] == "main" and body["status"] == "mismatch"
    assert all(row["status"] != "match" for row in body["rows"]) and body["rows"]


def test_a_matching_run_is_stored_and_sends_nothing(db: Database) -> None:
    ledger = Ledger(db)
    fake = FakeProviderReports(admin_key=KEY)
    seed(ledger, fake, "openai")
    cfg = config(db, anomaly_webhook_url="http://hooks.test/in")
    first = reconcile(ledger, cfg, fake)
    second = reconcile(ledger, cfg, fake, period="9d")
    last = run_store.last_runs(db)["main"]
    assert last["id"] == second["id"] != first["id"] and last["result"]["days"] == 9
    with db.read() as conn:
        from sqlalchemy import text
        assert conn.execute(text("SELECT count(*) FROM webhook_deliveries")).scalar() == 0


_examples = itertools.count()
MODELS = ("gpt-4o", "mini", "local")


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(
    st.integers(0, 5 * 86400 - 1),  # seconds into the window (which starts 1 day early)
    st.sampled_from(MODELS), st.sampled_from([None, "a", "b"]),
    st.sampled_from([200, 200, 429, 499, 500]), st.integers(0, 10_000), st.integers(0, 500),
    st.integers(0, 300), st.integers(0, 10**9), st.booleans()), max_size=40))
def test_our_side_equals_a_brute_force_sum_over_raw_records(
        sqlite_db: Database, calls: list[tuple[Any, ...]]) -> None:
    ledger = Ledger(sqlite_db)
    n = next(_examples)
    prefix = f"x{n}-"
    upstream_of = {f"{prefix}{m}": f"{m}-default" for m in MODELS[:2]}
    origin = at(DAY0 - timedelta(days=1), 0)
    records = []
    brute: dict[tuple[date, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for i, (offset, model, upstream, status, inp, cached, out, cost, estimated) in enumerate(
            calls):
        ts = origin + timedelta(seconds=offset, microseconds=i)
        from dataclasses import replace
        rec = replace(record(f"{prefix}{i}", ts, model=prefix + model, status=status,
                             input_tokens=inp + cached, cached=cached, output_tokens=out,
                             cost_nano=cost, upstream_model=upstream), estimated=estimated)
        records.append(rec)
        if rec.model not in upstream_of or not DAY0 <= ts.date() < DAY0 + timedelta(days=3):
            continue
        sums = brute[(ts.date(), upstream or upstream_of[rec.model])]
        sums["requests"] += status < 400
        sums["input_tokens"] += inp + cached
        sums["cached_input_tokens"] += cached
        sums["output_tokens"] += out
        sums["cost"] += cost
        sums["estimated"] += estimated
    ledger.store(records)
    ours = ledger_days(ledger, upstream_of, DAY0, DAY0 + timedelta(days=3))
    got = {key: {**{m: v for m, v in day.figures.items() if v}, "estimated": day.estimated_calls}
           for key, day in ours.items()}
    want = {key: {**{m: v for m, v in sums.items() if v and m != "estimated"},
                  "estimated": sums["estimated"]} for key, sums in brute.items()}
    assert got == want


def test_days_are_utc_days_whatever_the_page_zone(sqlite_db: Database) -> None:
    """A call at 07:30 in Shanghai on 11-02 is 23:30 UTC on 11-01: the provider's day."""
    from zoneinfo import ZoneInfo

    ledger = Ledger(sqlite_db)
    shanghai = ZoneInfo("Asia/Shanghai")
    ledger.store([
        record("late", datetime(2026, 11, 2, 7, 59, 59, 999_999, tzinfo=shanghai),
               model="gpt-4o", input_tokens=1, upstream_model="m"),
        record("midnight", datetime(2026, 11, 2, 8, 0, tzinfo=shanghai), model="gpt-4o",
               input_tokens=10, upstream_model="m"),
    ])
    days = ledger_days(ledger, {"gpt-4o": "m"}, DAY0, DAY0 + timedelta(days=2))
    assert {day: sums.figures["input_tokens"] for (day, _), sums in days.items()} == {
        date(2026, 11, 1): 1, date(2026, 11, 2): 10}
