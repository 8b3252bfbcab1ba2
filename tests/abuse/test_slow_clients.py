"""Clients that send or read too slowly, and an upstream whose event never ends, against a
running gateway process while a valid key's calls go on (PRODUCT.md §15, "Backpressure").
tests/gateway/test_client_idle.py and test_sse_edges.py test each alone, in-process."""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson

from tests.abuse.conftest import CLIENT_IDLE_S
from tests.abuse.floods import Probe, chat_bytes
from tests.abuse.support import flood_result, start_flood
from tests.reliability.support import ADMIN, ServedGateway, new_key, start_gateway, wait_until


def _records(gateway: ServedGateway, key_id: str) -> list[dict[str, object]]:
    answer = httpx.get(f"{gateway.url}/api/v1/usage/calls", timeout=10,
                       params={"period": "3d", "api_key_id": key_id, "limit": 1000},
                       headers={"Authorization": f"Bearer {ADMIN}"})
    answer.raise_for_status()
    records: list[dict[str, object]] = answer.json()["data"]
    return records


def _at_least(records: list[dict[str, object]], count: int) -> list[dict[str, object]] | None:
    return records if len(records) >= count else None


def test_slowloris_bodies_get_408_within_the_idle_timeout_and_the_valid_key_is_served(
        gateway: ServedGateway, database_url: str) -> None:
    _, key = new_key(database_url, name="valid")
    _, slow_key = new_key(database_url, name="slow")
    probe = Probe(gateway.url, key).start()
    # A key holder's calls whose body comes one byte every 3 × client_idle_timeout_s (a
    # made-up key is refused 401 as soon as the head is in): each must be answered 408.
    slow = start_flood("slowloris", gateway.url, connections=200, phase="body",
                       pause=3 * CLIENT_IDLE_S, seconds=8 * CLIENT_IDLE_S, key=slow_key)
    seen = flood_result(slow)
    probe.stop()
    assert seen["outcomes"] == {"408": 200}, seen
    assert seen["longest_s"] < 6 * CLIENT_IDLE_S, seen
    assert set(probe.statuses) == {200} and sum(probe.statuses.values()) >= 20, probe.statuses


def test_slowloris_heads_do_not_stop_the_valid_key(
        gateway: ServedGateway, database_url: str) -> None:
    """A request head sent a byte at a time never reaches the app (uvicorn has no timeout
    for an unfinished head): the connections stay open, but cost the valid key nothing."""
    _, key = new_key(database_url, name="valid")
    slow = start_flood("slowloris", gateway.url, connections=300, phase="head",
                       pause=0.2, seconds=3)
    latencies = Probe(gateway.url, key).run_for(2.0)
    seen = flood_result(slow)
    assert sum(seen["outcomes"].values()) == 300, seen
    assert len(latencies) >= 20


def test_a_slow_reader_is_recorded_as_gone_and_its_upstream_connection_freed(
        workdir: Path, database_url: str, upstream_url: str) -> None:
    # Two upstream connections in all: if a slow reader kept one, the valid key's calls
    # would wait for it and get 503 upstream_busy after upstream_pool_wait_s.
    gateway = start_gateway(workdir, database_url, upstream_url, name="slow-readers", env={
        "TALLYGATE_CLIENT_IDLE_TIMEOUT_S": str(CLIENT_IDLE_S),
        "TALLYGATE_UPSTREAM_MAX_CONNECTIONS": "2", "TALLYGATE_UPSTREAM_POOL_WAIT_S": "1",
        "TALLYGATE_DRAIN_MAX_BYTES": "1048576"})
    try:
        reader_id, reader = new_key(database_url, name="slow reader")
        _, key = new_key(database_url, name="valid")
        # About 8 MB of stream: far more than the socket buffers hold.
        fake = {"chunks": 2000, "output_tokens": 2_000_000}
        held = start_flood("slow-reader", gateway.url, key=reader, connections=2,
                           seconds=6 * CLIENT_IDLE_S, fake=orjson.dumps(fake).decode())
        records = wait_until(lambda: _at_least(_records(gateway, reader_id), 2), timeout=30)
        assert [r["status_code"] for r in records] == [499, 499]
        # Both readers still hold their sockets, unread: the gateway gave up on them, and
        # their upstream connections are free for the valid key.
        assert held.poll() is None
        latencies = Probe(gateway.url, key).run_for(1.0)
        flood_result(held)
    finally:
        gateway.stop()
    assert len(latencies) >= 5


def test_a_multi_megabyte_sse_event_is_cut_and_recorded_502(
        gateway: ServedGateway, database_url: str) -> None:
    key_id, key = new_key(database_url, name="broken stream")
    _, valid = new_key(database_url, name="valid")
    probe = Probe(gateway.url, valid).start()
    body = chat_bytes(stream=True, fake={"endless_event_bytes": 8 * 1024 * 1024})
    rss_before = gateway.rss_kb()
    with httpx.Client(timeout=30) as client:
        received = client.post(f"{gateway.url}/v1/chat/completions", content=body,
                               headers={"authorization": f"Bearer {key}",
                                        "content-type": "application/json"}).content
    rss_after = gateway.rss_kb()
    probe.stop()
    assert len(received) < 64 * 1024, len(received)  # none of the runaway event passed
    error = orjson.loads(received.rstrip().rsplit(b"data: ", 1)[1])
    assert error["error"]["code"] == "upstream_event_too_long"
    (record,) = wait_until(lambda: _records(gateway, key_id), timeout=10)
    assert record["status_code"] == 502
    # The default bound is 1 MiB: the 8 MB event was never held whole.
    assert rss_after - rss_before < 6 * 1024, (rss_before, rss_after)
    assert set(probe.statuses) == {200}, probe.statuses
