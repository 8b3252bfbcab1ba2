"""``/metrics``: the calls a process recorded and its recorder's health, in Prometheus text."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tallygate.domain.records import CallRecord
from tallygate.ledger.recorder import Recorder
from tallygate.ledger.service import Ledger
from tallygate.metrics import LedgerMetrics
from tallygate.store.database import Database
from tests.api.support import ADMIN_TOKEN, forget_tallygate_environment, running_app

US = 1_000_000


@pytest.fixture(autouse=True)
def _no_settings_from_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    forget_tallygate_environment(monkeypatch)


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _records() -> list[CallRecord]:
    base = 1_700_000_000 * US
    return [
        CallRecord(id="a", ts_us=base, model="m1", call_type="model", api_key_id="k1",
                   input_tokens=100, cached_input_tokens=40, output_tokens=10,
                   reasoning_tokens=4, total_tokens=110, cost_nano=1_500_000_000,
                   latency_ms=120, ttft_ms=30),
        CallRecord(id="b", ts_us=base, model="m1", call_type="model", api_key_id="k2",
                   input_tokens=50, output_tokens=5, total_tokens=55, cost_nano=500_000_000,
                   latency_ms=2500),
        CallRecord(id="c", ts_us=base, model="m1", call_type="model", api_key_id="k1",
                   status_code=429, latency_ms=1),
        CallRecord(id="d", ts_us=base, model="svc", call_type="internal", api_key_id="k1",
                   status_code=403),
    ]


def test_counts_by_model_call_type_and_status() -> None:
    metrics = LedgerMetrics(currency="EUR")
    metrics.records_stored(_records())
    metrics.flushed(0.004)
    samples = _samples(metrics.exposition().decode())
    m1 = (("call_type", "model"), ("model", "m1"))
    assert samples[("tallygate_requests_total", (*m1, ("status", "200")))] == 2
    assert samples[("tallygate_requests_total", (*m1, ("status", "429")))] == 1
    assert samples[("tallygate_limit_rejections_total", (*m1, ("status", "429")))] == 1
    assert samples[("tallygate_limit_rejections_total", (("call_type", "internal"),
                                                         ("model", "svc"), ("status", "403")))] == 1
    assert samples[("tallygate_tokens_total", (*m1[:1], ("kind", "input"), m1[1]))] == 150
    assert samples[("tallygate_tokens_total", (*m1[:1], ("kind", "cached_input"), m1[1]))] == 40
    assert samples[("tallygate_tokens_total", (*m1[:1], ("kind", "reasoning"), m1[1]))] == 4
    assert samples[("tallygate_cost_total", (m1[0], ("currency", "EUR"), m1[1]))] == 2.0
    assert samples[("tallygate_request_duration_seconds_count", m1)] == 3
    assert samples[("tallygate_request_duration_seconds_bucket", (*m1[:1], ("le", "0.25"),
                                                                  m1[1]))] == 2
    assert samples[("tallygate_time_to_first_token_seconds_count", m1)] == 1
    assert samples[("tallygate_recorder_flush_seconds_count", ())] == 1
    assert not any("api_key_id" in dict(labels) for _, labels in samples)


def test_a_record_of_several_refusals_counts_each() -> None:
    metrics = LedgerMetrics()
    metrics.records_stored([CallRecord(id="agg", ts_us=1_700_000_000 * US, model="m1",
                                       call_type="model", status_code=429, repeats=490)])
    samples = _samples(metrics.exposition().decode())
    labels = (("call_type", "model"), ("model", "m1"), ("status", "429"))
    assert samples[("tallygate_requests_total", labels)] == 490
    assert samples[("tallygate_limit_rejections_total", labels)] == 490


def test_per_key_labels_only_when_asked() -> None:
    metrics = LedgerMetrics(per_key=True)
    metrics.records_stored(_records())
    samples = _samples(metrics.exposition().decode())
    assert samples[("tallygate_requests_total", (("api_key_id", "k1"), ("call_type", "model"),
                                                 ("model", "m1"), ("status", "200")))] == 1


def test_the_recorder_feeds_committed_records_once(db: Database) -> None:
    metrics = LedgerMetrics()
    recorder = Recorder(Ledger(db), observer=metrics)
    metrics.watch(recorder)

    async def scenario() -> None:
        for record in _records():
            recorder.record(record)
        assert metrics.queue_depth.collect()[0].samples[0].value == 4
        await recorder.flush()
        recorder.record(_records()[0])  # a duplicate: stored once, counted once
        await recorder.flush()

    asyncio.run(scenario())
    samples = _samples(metrics.exposition().decode())
    assert samples[("tallygate_requests_total", (("call_type", "model"), ("model", "m1"),
                                                 ("status", "200")))] == 2
    assert samples[("tallygate_recorder_queue_depth", ())] == 0
    assert samples[("tallygate_recorder_flush_seconds_count", ())] == 2


def test_metrics_endpoint_needs_the_admin_unless_public(db: Database) -> None:
    with running_app(db) as api:
        assert api.get("/metrics", token=None).status_code == 401
        key = api.create_key(name="holder")
        assert api.get("/metrics", token=key["key"]).status_code == 403
        response = api.get("/metrics", token=ADMIN_TOKEN)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        assert "tallygate_recorder_queue_depth 0.0" in response.text
        # A call recorded by this process (as the gateway records them) is counted.
        recorder = api.client.app.state.recorder  # type: ignore[attr-defined]
        portal = api.client.portal
        assert portal is not None
        portal.call(recorder.record, _records()[0])
        portal.call(recorder.flush)
        text = api.get("/metrics").text
        assert 'tallygate_requests_total{call_type="model",model="m1",status="200"} 1.0' in text
    with running_app(db, metrics_public=True, metrics_per_key=True) as api:
        response = api.client.get("/metrics")  # no credential
        assert response.status_code == 200
        portal = api.client.portal
        assert portal is not None
        portal.call(api.client.app.state.recorder.record,  # type: ignore[attr-defined]
                    _records()[1])
        portal.call(api.client.app.state.recorder.flush)  # type: ignore[attr-defined]
        assert 'api_key_id="k2"' in api.client.get("/metrics").text
