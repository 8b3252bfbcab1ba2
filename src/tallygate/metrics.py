"""Prometheus metrics of one process: the calls it recorded, and its recorder's health.

Calls are counted where they enter the ledger from this process (the recorder: the gateway's
calls), once each batch is committed, in the recorder's worker thread, so the request path
pays nothing. Each process has its own registry and counters: with several gateway
processes, scrape each one and sum (``sum by (model) (rate(tallygate_requests_total[5m]))``).
Labels are the model, the call type and the status; the API key is a label only with the
``metrics_per_key`` setting (one series per key and model).
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from tallygate.domain.records import CallRecord

if TYPE_CHECKING:
    from tallygate.ledger.recorder import Recorder

CONTENT_TYPE = CONTENT_TYPE_LATEST
NANO = 1_000_000_000
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
FLUSH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
REJECTED = (403, 429)  # the gateway's refusals: limits, disabled or expired keys


class LedgerMetrics:
    def __init__(self, *, currency: str = "USD", per_key: bool = False) -> None:
        self.registry = CollectorRegistry()
        self.per_key = per_key
        labels = ["model", "call_type", *(["api_key_id"] if per_key else [])]
        registry = self.registry
        self.requests = Counter("tallygate_requests", "Calls recorded, by status code.",
                                [*labels, "status"], registry=registry)
        self.tokens = Counter("tallygate_tokens", "Tokens of the calls recorded, by kind "
                              "(input includes cached_input; output includes reasoning).",
                              [*labels, "kind"], registry=registry)
        self.cost = Counter("tallygate_cost", "Cost of the calls recorded, in the currency "
                            "label's units (the ledger's exact figure is in the API).",
                            [*labels, "currency"], registry=registry)
        self.latency = Histogram("tallygate_request_duration_seconds",
                                 "Latency of recorded calls, from the request to the end of "
                                 "the answer (upstream included).", labels,
                                 buckets=LATENCY_BUCKETS, registry=registry)
        self.ttft = Histogram("tallygate_time_to_first_token_seconds",
                              "Time to the first streamed chunk.", labels,
                              buckets=LATENCY_BUCKETS, registry=registry)
        self.rejections = Counter("tallygate_limit_rejections",
                                  "Calls answered 429 (rate limit, quota, budget) or 403 "
                                  "(key disabled or expired, model or address not allowed).",
                                  [*labels, "status"], registry=registry)
        self.queue_depth = Gauge("tallygate_recorder_queue_depth",
                                 "Call records waiting to be written.", registry=registry)
        self.flush_seconds = Histogram("tallygate_recorder_flush_seconds",
                                       "Time to write one batch of call records.",
                                       buckets=FLUSH_BUCKETS, registry=registry)
        self.flush_failures = Counter("tallygate_recorder_flush_failures",
                                      "Failed writes of a batch (retried).", registry=registry)
        self.currency = currency

    def watch(self, recorder: Recorder) -> None:
        self.queue_depth.set_function(lambda: recorder.queue_depth)

    def _labels(self, record: CallRecord) -> tuple[str, ...]:
        if self.per_key:
            return record.model, record.call_type, record.api_key_id or ""
        return record.model, record.call_type

    def records_stored(self, records: Sequence[CallRecord]) -> None:
        """Count a committed batch: sums per label set, then one increment each."""
        calls: Tally[tuple[str, ...]] = Tally()
        tokens: Tally[tuple[str, ...]] = Tally()
        cost: Tally[tuple[str, ...]] = Tally()
        for record in records:
            labels = self._labels(record)
            status = str(record.status_code)
            calls[(*labels, status)] += record.repeats
            if record.input_tokens:
                tokens[(*labels, "input")] += record.input_tokens
            if record.cached_input_tokens:
                tokens[(*labels, "cached_input")] += record.cached_input_tokens
            if record.output_tokens:
                tokens[(*labels, "output")] += record.output_tokens
            if record.reasoning_tokens:
                tokens[(*labels, "reasoning")] += record.reasoning_tokens
            cost[labels] += record.cost_nano
            if record.latency_ms is not None:
                self.latency.labels(*labels).observe(record.latency_ms / 1000)
            if record.ttft_ms is not None:
                self.ttft.labels(*labels).observe(record.ttft_ms / 1000)
        for key, count in calls.items():
            self.requests.labels(*key).inc(count)
            if int(key[-1]) in REJECTED:
                self.rejections.labels(*key).inc(count)
        for key, count in tokens.items():
            self.tokens.labels(*key).inc(count)
        for labels, nano in cost.items():
            self.cost.labels(*labels, self.currency).inc(nano / NANO)

    def watch_unrecorded(self, tally: Tally[tuple[str, str, int]]) -> None:
        """Show the gateway's free calls kept out of the ledger (endpoint, model, status)."""
        self.registry.register(_UnrecordedCalls(tally))

    def flushed(self, seconds: float) -> None:
        self.flush_seconds.observe(seconds)

    def flush_failed(self) -> None:
        self.flush_failures.inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _UnrecordedCalls(Collector):
    """Read at each scrape from the gateway's tally: the request path only adds one."""

    def __init__(self, tally: Tally[tuple[str, str, int]]) -> None:
        self.tally = tally

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "tallygate_unrecorded_requests", "Free calls relayed but not recorded in the "
            "ledger (Anthropic's count_tokens), by endpoint, model and status.",
            labels=["endpoint", "model", "status"])
        # A copy first: /metrics is answered in a worker thread while the event loop adds.
        for (endpoint, model, status), count in sorted(list(self.tally.items())):
            family.add_metric([endpoint, model, str(status)], count)
        yield family
