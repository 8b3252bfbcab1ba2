"""Bad input to the gateway and to ingest: each answered with a clear 4xx in OpenAI's error
shape, never a 5xx, and never a call lost from the ledger.

Hand-picked cases first (malformed JSON, huge bodies, wrong types, invalid UTF-8, unknown
fields, absurd values on ingest), then hypothesis fuzzing the fields the gateway reads.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tallygate.config import Route
from tallygate.store.database import Database
from tests.reliability.support import ADMIN, CHAT, gateway_in_process, new_key, record_of
from tests.security.support import ADMIN as KEYS_ADMIN
from tests.security.support import app_client, bearer

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, upstream: str
           ) -> Iterator[tuple[str, str]]:
    """A gateway on a SQLite file, and a key: (base URL, key)."""
    db = Database(f"sqlite:///{tmp_path_factory.mktemp('input') / 'ledger.db'}")
    db.upgrade()
    _, key = new_key(db.url)
    routes = [Route(model=CHAT, base_url=f"{upstream}/v1", category="chat")]
    with gateway_in_process(db.url, routes) as url:
        yield url, key
    db.dispose()


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "code", "param"}
    assert body["error"]["message"]
    return body["error"]  # type: ignore[no-any-return]


def post(served: tuple[str, str], content: bytes | Any, **headers: str) -> httpx.Response:
    url, key = served
    return httpx.post(f"{url}/v1/chat/completions", content=content, timeout=60,
                      headers={"Authorization": f"Bearer {key}",
                               "Content-Type": "application/json", **headers})


@pytest.mark.parametrize("body", [
    b"", b"{", b'{"model": }', b"{'model': 'x'}", b'{"model": "a"} trailing', b"\x00",
    b'{"model": "' + CHAT.encode() + b'", "messages": [NaN]}',
    b'{"model": "caf\xe9"}',  # invalid UTF-8 (latin-1 bytes)
    b'\xff\xfe{\x00}\x00',  # UTF-16
    b"[" * 5000 + b"]" * 5000,  # deeper than any parser should follow
])
def test_malformed_json_is_400(served: tuple[str, str], body: bytes) -> None:
    response = post(served, body)
    assert response.status_code == 400, response.text
    assert error_of(response)["code"] == "invalid_json"


@pytest.mark.parametrize(("body", "param"), [
    ([], None), ("a string", None), (1, None), (None, None),
    ({}, "model"), ({"model": 123}, "model"), ({"model": None}, "model"), ({"model": ""}, "model"),
    ({"model": ["a"]}, "model"), ({"model": CHAT, "stream": "true"}, "stream"),
    ({"model": CHAT, "stream": 1}, "stream"), ({"model": CHAT, "stream_options": "x"},
                                                "stream_options"),
    ({"model": CHAT, "stream_options": [True]}, "stream_options"),
])
def test_wrong_types_are_400_naming_the_field(served: tuple[str, str], body: Any,
                                              param: str | None) -> None:
    response = post(served, json.dumps(body).encode())
    assert response.status_code == 400, response.text
    assert error_of(response)["param"] == param


def test_an_unknown_model_is_404(served: tuple[str, str]) -> None:
    response = post(served, json.dumps({"model": "no-such-model" * 100}).encode())
    assert response.status_code == 404 and error_of(response)["code"] == "model_not_found"


def test_unknown_fields_are_forwarded_not_refused(served: tuple[str, str]) -> None:
    body = {"model": CHAT, "messages": [{"role": "user", "content": "hi"}],
            "a_field_from_the_future": {"nested": [1, 2, 3]}, "logit_bias": {"50256": -100}}
    assert post(served, json.dumps(body).encode()).status_code == 200


def test_huge_bodies_are_413(served: tuple[str, str]) -> None:
    huge = b'{"model": "' + CHAT.encode() + b'", "prompt": "' + b"x" * (17 * MIB) + b'"}'
    declared = post(served, huge)
    assert declared.status_code == 413 and error_of(declared)["code"] == "request_too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: the size shows only as it arrives
        for start in range(0, len(huge), MIB):
            yield huge[start:start + MIB]

    streamed = post(served, chunks())
    assert streamed.status_code == 413 and error_of(streamed)["code"] == "request_too_large"
    assert post(served, json.dumps({"model": CHAT}).encode()).status_code == 200  # still up


@pytest.mark.parametrize("tags", ["{", "[1, 2]", '{"a": {"b": 1}}', "no-equals-sign",
                                  "x" * 2000, "=value"])
def test_bad_tags_are_400(served: tuple[str, str], tags: str) -> None:
    response = post(served, json.dumps({"model": CHAT}).encode(), **{"X-Tallygate-Tags": tags})
    assert response.status_code == 400 and error_of(response)["code"] == "invalid_tags"


def test_tags_cannot_overwrite_the_request_id(served: tuple[str, str]) -> None:
    response = post(served, json.dumps({"model": CHAT}).encode(),
                    **{"X-Tallygate-Tags": "request_id=someone-else"})
    record = record_of(served[0], response.headers["x-request-id"], timeout=1.5)
    assert record["metadata"]["request_id"] == response.headers["x-request-id"]


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**64), max_value=2**64)
    | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12)


@given(model=st.sampled_from([CHAT, "unknown", ""]) | JSON_VALUES,
       stream=st.booleans() | JSON_VALUES, options=JSON_VALUES, max_tokens=JSON_VALUES,
       messages=JSON_VALUES, extra=st.dictionaries(st.text(max_size=10), JSON_VALUES,
                                                    max_size=3))
@settings(max_examples=int(os.environ.get("TALLYGATE_FUZZ_EXAMPLES", "120")), deadline=None,
          derandomize="TALLYGATE_FUZZ_EXAMPLES" not in os.environ,
          suppress_health_check=list(HealthCheck))
def test_fuzzed_fields_get_an_answer_and_every_call_a_record(
        served: tuple[str, str], model: Any, stream: Any, options: Any, max_tokens: Any,
        messages: Any, extra: dict[str, Any]) -> None:
    body = {**extra, "model": model, "stream": stream, "stream_options": options,
            "max_tokens": max_tokens, "messages": messages, "fake": {"no_usage": True}}
    response = post(served, json.dumps(body).encode())
    assert response.status_code in (200, 400, 404), response.text
    if response.status_code != 200:
        error_of(response)
    else:  # no usage reported: tokens estimated from whatever the body held
        record = record_of(served[0], response.headers["x-request-id"])
        assert record["estimated"] and record["status_code"] == 200


# -- ingest ---------------------------------------------------------------------------------

def ingest(served: tuple[str, str], content: bytes) -> httpx.Response:
    return httpx.post(f"{served[0]}/api/v1/usage/events", content=content, timeout=60,
                      headers={"Authorization": f"Bearer {ADMIN}",
                               "Content-Type": "application/json"})


ABSURD_EVENTS = [
    {"input_tokens": 10**30}, {"input_tokens": -1}, {"input_tokens": 2**63},
    {"output_tokens": 1.5}, {"output_tokens": "10"}, {"input_tokens": True},
    {"total_tokens": 7}, {"cached_input_tokens": 5, "input_tokens": 1},
    {"reasoning_tokens": 3}, {"cost": "1e400"}, {"cost": "-0.01"}, {"cost": "NaN"},
    {"cost": "0.0000000001"}, {"latency_ms": 10**12}, {"ts": 1e20}, {"ts": -1},
    {"ts": "9999-12-31T00:00:00Z"}, {"ts": "0001-01-01T00:00:00Z"}, {"ts": "yesterday"},
    {"ts": "2026-01-01T00:00:00"}, {"ts": True}, {"status_code": 99}, {"status_code": 10**6},
    {"call_type": "DROP TABLE calls"}, {"model_category": "<script>"}, {"model": ""},
    {"model": "m" * 201}, {"id": "i" * 129}, {"id": ""}, {"metadata": {"a": {"b": 1}}},
    {"metadata": {"k": "v" * 5000}}, {"an_unknown_field": 1}, {"api_key_id": "k" * 65},
]


def test_absurd_ingest_values_are_rejected_one_by_one(served: tuple[str, str]) -> None:
    base = {"ts": "2026-01-01T00:00:00Z", "model": CHAT}
    events = [{**base, "id": f"absurd-{n}", **change} for n, change in enumerate(ABSURD_EVENTS)]
    events.append({**base, "id": "fine"})
    response = ingest(served, json.dumps(events and {"events": events}).encode())
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["accepted"], answer["rejected"]) == (1, len(ABSURD_EVENTS))
    assert sorted(e["index"] for e in answer["errors"]) == list(range(len(ABSURD_EVENTS)))
    assert all(e["message"] for e in answer["errors"])


@pytest.mark.parametrize("value", ["¹", "²０２６-01-01"])
def test_unicode_digits_in_a_date_are_400(served: tuple[str, str], value: str) -> None:
    for name in ("start", "end"):
        response = httpx.get(f"{served[0]}/api/v1/usage/summary", params={name: value},
                             headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30)
        assert response.status_code == 400, (name, value, response.text)
        assert error_of(response)["param"] == name


@pytest.mark.parametrize("body", [b"", b"{", b"\xff\xfe", b"[]", b'{"events": "x"}',
                                  b'{"events": {}}', b'{"evnts": []}'])
def test_an_unreadable_ingest_body_is_400(served: tuple[str, str], body: bytes) -> None:
    response = ingest(served, body)
    assert response.status_code == 400, response.text
    error_of(response)


def test_a_deeply_nested_ingest_body_is_400(served: tuple[str, str]) -> None:
    response = ingest(served, b'{"events": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}")
    assert response.status_code == 400


# -- keys -----------------------------------------------------------------------------------

def test_a_budget_below_the_ledgers_resolution_breaks_nothing(sqlite_db: Database) -> None:
    """Found by the OpenAPI fuzzing: a budget under 1e-9 was stored as 0 and every key
    listing then divided by it (500 on POST and on every later GET /api/v1/keys)."""
    with app_client(sqlite_db) as client:
        created = client.post("/api/v1/keys", headers=bearer(KEYS_ADMIN),
                              json={"name": "tiny", "budget": "0.0000000001"})
        listed = client.get("/api/v1/keys", headers=bearer(KEYS_ADMIN))
    assert created.status_code in (201, 400) and listed.status_code == 200


def test_an_expiry_must_be_a_time(sqlite_db: Database) -> None:
    with app_client(sqlite_db) as client:
        created = client.post("/api/v1/keys", headers=bearer(KEYS_ADMIN),
                              json={"name": "epoch", "expires_at": 0})
    assert created.status_code == 400
