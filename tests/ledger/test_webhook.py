"""The anomaly webhook: signed bodies, retries with back-off, one delivery per anomaly."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tallygate.domain.records import CallRecord, now_us
from tallygate.ledger.service import Ledger
from tallygate.ledger.webhook import (
    SIGNATURE_HEADER,
    AnomalyNotifier,
    WebhookConfig,
    sign,
    verify_signature,
)
from tallygate.store.webhooks import get_delivery, list_deliveries

US = 1_000_000
SECRET = "s3cret"


@dataclass
class Receiver:
    """A webhook receiver on 127.0.0.1 that answers the statuses it is given, in turn."""

    statuses: list[int] = field(default_factory=list)
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the standard library's name
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.received.append((dict(self.headers), body))
            status = state.statuses.pop(0) if state.statuses else 200
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def test_signatures() -> None:
    body = b'{"event":"anomaly.spike"}'
    header = sign(SECRET, 1_800_000_000, body)
    assert header.startswith("t=1800000000,v1=")
    assert verify_signature(SECRET, header, body, now_s=1_800_000_100)
    assert not verify_signature(SECRET, header, body + b" ", now_s=1_800_000_100)
    assert not verify_signature("other", header, body, now_s=1_800_000_100)
    assert not verify_signature(SECRET, header, body, now_s=1_800_001_000)  # too old
    assert not verify_signature(SECRET, "v1=abc", body)


def _spiky_ledger(ledger: Ledger, now_us: int) -> None:
    """A steady key for two weeks, then a new model: one anomaly to send."""
    hour = 3600 * US
    ledger.store([CallRecord(id=f"c{i}", ts_us=now_us - i * hour, model="m", call_type="model",
                             api_key_id="k") for i in range(1, 24 * 3)]
                 + [CallRecord(id="new", ts_us=now_us - 60 * US, model="fresh",
                               call_type="model", api_key_id="k")])


def _notifier(ledger: Ledger, url: str, **config: Any) -> AnomalyNotifier:
    return AnomalyNotifier(ledger, WebhookConfig(url=url, secret=SECRET, first_backoff_s=0.01,
                                                 **config))


def test_each_anomaly_is_sent_once_signed_and_logged(ledger: Ledger,
                                                     receiver: Receiver) -> None:
    now = 1_800_000_000 * US
    _spiky_ledger(ledger, now)

    async def scenario() -> None:
        first, second = _notifier(ledger, receiver.url), _notifier(ledger, receiver.url)
        try:
            assert await first.check(now) == 1
            assert await second.check(now) == 0  # another process finds it already logged
            assert await second.deliver_due(now) + await first.deliver_due(now) == 1
            assert await first.deliver_due(now) == 0
        finally:
            await first.close()
            await second.close()

    asyncio.run(scenario())
    assert len(receiver.received) == 1
    headers, body = receiver.received[0]
    assert verify_signature(SECRET, headers[SIGNATURE_HEADER], body)
    payload = json.loads(body)
    assert payload["event"] == "anomaly.new_model" == headers["X-Tallygate-Event"]
    assert payload["anomaly"]["model"] == "fresh" and payload["anomaly"]["api_key_id"] == "k"
    (delivery,) = list_deliveries(ledger.db)
    assert (delivery.status, delivery.attempts, delivery.response_status) == ("delivered", 1,
                                                                              200)
    assert delivery.id == payload["anomaly"]["id"] == headers["X-Tallygate-Delivery"]


def test_failed_posts_are_retried_with_back_off_then_given_up(ledger: Ledger,
                                                              receiver: Receiver) -> None:
    now = now_us()
    _spiky_ledger(ledger, now)
    receiver.statuses = [500, 503, 200]

    async def deliver_until_settled(notifier: AnomalyNotifier) -> None:
        for _ in range(50):
            await notifier.deliver_due()
            delivery = list_deliveries(ledger.db)[0]
            if delivery.status != "pending":
                return
            await asyncio.sleep(0.02)

    async def scenario() -> None:
        notifier = _notifier(ledger, receiver.url)
        try:
            await notifier.check(now)
            await deliver_until_settled(notifier)
        finally:
            await notifier.close()

    asyncio.run(scenario())
    (delivery,) = list_deliveries(ledger.db)
    assert (delivery.status, delivery.attempts) == ("delivered", 3)
    assert len(receiver.received) == 3

    # Nobody listening: every attempt fails, and after max_attempts it is marked failed.
    unreachable = "http://127.0.0.1:9/hook"

    async def hopeless() -> None:
        notifier = _notifier(ledger, unreachable, max_attempts=3)
        try:
            notifier_ledger = notifier.ledger
            notifier_ledger.store([CallRecord(id="newer", ts_us=now - 30 * US, model="fresher",
                                              call_type="model", api_key_id="k")])
            assert await notifier.check(now) == 1
            for _ in range(50):
                await notifier.deliver_due()
                if all(d.status != "pending" for d in list_deliveries(ledger.db)):
                    break
                await asyncio.sleep(0.02)
        finally:
            await notifier.close()

    asyncio.run(hopeless())
    failed = [d for d in list_deliveries(ledger.db) if d.status == "failed"]
    assert len(failed) == 1 and failed[0].attempts == 3
    assert failed[0].last_error and "9" not in failed[0].last_error  # no URL in the log
    assert get_delivery(ledger.db, "nothing") is None
