"""Every limit and every error path answers as OpenAI would, and is in the ledger."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest

from tallygate.app import create_app
from tallygate.config import Route, load_settings
from tallygate.keys.schemas import KeyCreate, KeyUpdate
from tallygate.keys.service import KeyService
from tallygate.store.database import Database
from tests.gateway.conftest import ADMIN, CHAT, EMBED, GatewayUnderTest
from tests.gateway.test_openai_sdk import wait_for
from tests.servers import serve_app


def post(gateway: GatewayUnderTest, key: str | None, body: Any = None, *,
         content: bytes | None = None, path: str = "/v1/chat/completions",
         headers: dict[str, str] | None = None) -> httpx.Response:
    sent = {"Authorization": f"Bearer {key}"} if key else {}
    if content is None:
        return httpx.post(f"{gateway.url}{path}", headers=sent | (headers or {}),
                          json=body if body is not None else {"model": CHAT, "messages": []},
                          timeout=30)
    return httpx.post(f"{gateway.url}{path}", headers=sent | (headers or {}), content=content,
                      timeout=30)


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "code", "param"}
    return body["error"]  # type: ignore[no-any-return]


def test_authentication(gateway: GatewayUnderTest) -> None:
    missing = post(gateway, None)
    assert missing.status_code == 401 and error_of(missing)["code"] == "missing_api_key"
    wrong = post(gateway, "tg-not-a-key")
    assert wrong.status_code == 401 and error_of(wrong)["code"] == "invalid_api_key"
    assert "tg-not-a-key" not in wrong.text


def test_disabled_expired_model_and_ip(gateway: GatewayUnderTest) -> None:
    def models_of(secret: str) -> httpx.Response:
        return httpx.get(f"{gateway.url}/v1/models", headers={"Authorization": f"Bearer {secret}"})

    key_id, key = gateway.new_key()
    gateway.keys.set_status(key_id, "disabled", "test")
    response = post(gateway, key)
    assert response.status_code == 403 and error_of(response)["code"] == "key_disabled"
    listed = models_of(key)  # not even the list of models
    assert listed.status_code == 403 and error_of(listed)["code"] == "key_disabled"
    gateway.keys.set_status(key_id, "active", "test")
    assert post(gateway, key).status_code == 200

    gateway.keys.update(key_id, KeyUpdate(expires_at=datetime.now(UTC) - timedelta(seconds=1)),
                        "test")
    response = post(gateway, key)
    assert response.status_code == 403 and error_of(response)["code"] == "key_expired"
    assert error_of(models_of(key))["code"] == "key_expired"

    _, limited = gateway.new_key(allowed_models=["bge-m3"])
    response = post(gateway, limited)
    assert response.status_code == 403 and error_of(response)["param"] == "model"
    assert [m["id"] for m in models_of(limited).json()["data"]] == ["bge-m3"]

    _, elsewhere = gateway.new_key(allowed_ips=["10.0.0.0/8"])
    response = post(gateway, elsewhere)
    assert response.status_code == 403 and error_of(response)["code"] == "ip_not_allowed"
    assert error_of(models_of(elsewhere))["code"] == "ip_not_allowed"
    _, here = gateway.new_key(allowed_ips=["127.0.0.1/32"])
    assert post(gateway, here).status_code == 200


def test_requests_per_minute(gateway: GatewayUnderTest) -> None:
    key_id, key = gateway.new_key(rpm_limit=3)
    statuses = [post(gateway, key).status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
    refused = post(gateway, key)
    assert int(refused.headers["retry-after"]) >= 1
    assert error_of(refused)["type"] == "rate_limit_error"
    summary = wait_for(lambda: (s := gateway.summary(api_key_id=key_id))["cards"]["model_calls"]
                       == 6 and s)
    assert summary["cards"]["rate_limited_calls"] == 3


def test_tokens_per_minute_quota_and_budget(gateway: GatewayUnderTest) -> None:
    body = {"model": CHAT, "messages": [], "fake": {"input_tokens": 60, "output_tokens": 40}}
    _, tpm = gateway.new_key(tpm_limit=150)
    started = datetime.now(UTC)
    assert [post(gateway, tpm, body).status_code for _ in range(2)] == [200, 200]
    refused = post(gateway, tpm, body)
    assert refused.status_code == 429
    assert error_of(refused)["code"] == "tokens_per_minute_exceeded"
    retry_after = int(refused.headers["retry-after"])
    if datetime.now(UTC).minute == started.minute:
        # 200 tokens against 150: this minute's must slide a quarter of the way out of the next.
        seconds_left = 60 - datetime.now(UTC).second
        assert seconds_left + 14 <= retry_after <= seconds_left + 17
    assert 1 <= retry_after <= 120

    quota_id, quota = gateway.new_key(quota_tokens=250, quota_period="monthly")
    statuses = [post(gateway, quota, body).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    refused = post(gateway, quota, body)
    assert error_of(refused)["code"] == "insufficient_quota" and "retry-after" in refused.headers

    # 60 input and 40 output tokens cost 0.00011: a budget of 0.0002 allows two calls.
    _, budget = gateway.new_key(budget=Decimal("0.0002"))
    assert [post(gateway, budget, body).status_code for _ in range(3)] == [200, 200, 429]
    del quota_id


def test_quota_counts_usage_already_in_the_ledger(make_gateway: Any) -> None:
    first = make_gateway()
    body = {"model": CHAT, "messages": [], "fake": {"input_tokens": 60, "output_tokens": 40}}
    key_id, key = first.new_key(quota_tokens=250, quota_period="daily")
    assert [post(first, key, body).status_code for _ in range(2)] == [200, 200]
    wait_for(lambda: first.summary(api_key_id=key_id)["cards"]["model_calls"] == 2)
    second = make_gateway()  # a new process: its counters start from the ledger
    assert [post(second, key, body).status_code for _ in range(2)] == [200, 429]


@pytest.mark.parametrize(("content", "code"), [
    (b"{not json", "invalid_json"),
    (b"[1, 2]", "invalid_request"),
    (b'{"messages": []}', "invalid_request"),
    (b'{"model": 5}', "invalid_request"),
    (b'{"model": "cltech/deepseek-r1-32b", "stream": "yes"}', "invalid_type"),
    (b'{"model": "cltech/deepseek-r1-32b", "stream_options": 1}', "invalid_type"),
    (b"\xff\xfe\x00", "invalid_json"),
])
def test_bad_bodies(gateway: GatewayUnderTest, content: bytes, code: str) -> None:
    _, key = gateway.new_key()
    response = post(gateway, key, content=content)
    assert response.status_code == 400 and error_of(response)["code"] == code


def test_unknown_model_and_huge_body(gateway: GatewayUnderTest) -> None:
    _, key = gateway.new_key()
    response = post(gateway, key, {"model": "gpt-nobody", "messages": []})
    assert response.status_code == 404 and error_of(response)["code"] == "model_not_found"
    huge = b'{"model": "x", "messages": [], "pad": "' + b"a" * (17 * 1024 * 1024) + b'"}'
    response = post(gateway, key, content=huge)
    assert response.status_code == 413


def test_upstream_failures(gateway: GatewayUnderTest) -> None:
    key_id, key = gateway.new_key()
    failed = post(gateway, key, {"model": CHAT, "messages": [], "fake": {"status": 500}})
    assert failed.status_code == 500
    down = post(gateway, key, {"model": "down-model", "messages": []})
    assert down.status_code == 502 and error_of(down)["code"] == "upstream_error"
    records = wait_for(lambda: len(r := gateway.calls(api_key_id=key_id)) == 2 and r)
    assert sorted(r["status_code"] for r in records) == [500, 502]
    summary = gateway.summary(api_key_id=key_id)
    assert summary["cards"]["failed_calls"] == 2 and summary["cards"]["success_rate"] == 0.0


@pytest.mark.parametrize("refused", [401, 403])
@pytest.mark.parametrize("stream", [False, True])
def test_an_upstream_refusing_the_gateways_credential_is_a_502_without_its_body(
        gateway: GatewayUnderTest, refused: int, stream: bool) -> None:
    """The upstream's own 401/403 body may quote part of the gateway's credential
    (OpenAI's "Incorrect API key provided: sk-abc…xyz"): the client never sees it."""
    key_id, key = gateway.new_key()
    response = post(gateway, key, {"model": CHAT, "messages": [], "stream": stream,
                                   "fake": {"status": refused}})
    assert response.status_code == 502
    assert error_of(response)["code"] == "upstream_auth"
    assert "injected failure" not in response.text
    records = wait_for(lambda: gateway.calls(api_key_id=key_id))
    assert [r["status_code"] for r in records] == [502]


def test_upstream_timeout(make_gateway: Any) -> None:
    gateway = make_gateway(upstream_timeout_s=0.2)
    key_id, key = gateway.new_key()
    slow = post(gateway, key, {"model": CHAT, "messages": [], "fake": {"latency_ms": 1000}})
    assert slow.status_code == 504 and error_of(slow)["code"] == "upstream_timeout"
    record = wait_for(lambda: gateway.calls(api_key_id=key_id))[0]
    assert record["status_code"] == 504


def test_stream_cut_by_the_upstream_is_an_error_and_recorded_as_estimated(
        gateway: GatewayUnderTest) -> None:
    key_id, key = gateway.new_key()
    body = {"model": CHAT, "stream": True, "messages": [],
            "fake": {"output_tokens": 40, "chunks": 8, "cut_after": 3}}
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {key}"}) as response:
        text = b"".join(response.iter_raw()).decode()
    # The client is told the answer is not whole: an error event, and no [DONE].
    assert "[DONE]" not in text
    last = orjson.loads(text.rstrip().rsplit("\n\n", 1)[-1].removeprefix("data: "))
    assert last["error"]["code"] == "upstream_incomplete"
    assert set(last["error"]) == {"message", "type", "code", "param"}
    record = wait_for(lambda: gateway.calls(api_key_id=key_id))[0]
    assert (record["status_code"], record["estimated"]) == (502, True)
    assert record["output_tokens"] == 15  # 3 of 8 chunks of 40 four-character tokens


def test_client_disconnect_mid_stream_is_recorded_with_the_upstreams_usage(
        gateway: GatewayUnderTest) -> None:
    key_id, key = gateway.new_key()
    body = {"model": CHAT, "stream": True, "messages": [],
            "fake": {"input_tokens": 55, "output_tokens": 80, "chunks": 40,
                     "chunk_delay_ms": 50}}
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {key}"}) as response:
        received = 0
        for chunk in response.iter_raw():
            received += len(chunk)
            if received > 600:
                break  # leave before the end
    # The gateway read the stream to its end without the client: the upstream's own usage.
    record = wait_for(lambda: gateway.calls(api_key_id=key_id))[0]
    assert (record["status_code"], record["estimated"]) == (499, False)
    assert (record["input_tokens"], record["output_tokens"]) == (55, 80)


def test_a_client_that_leaves_before_a_plain_answer_is_recorded_with_its_usage(
        gateway: GatewayUnderTest) -> None:
    # The upstream finishes the call (and bills it): the record keeps its exact usage, and
    # says 499 because the client never got the answer.
    key_id, key = gateway.new_key()
    body = {"model": CHAT, "messages": [],
            "fake": {"latency_ms": 600, "input_tokens": 60, "output_tokens": 40}}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{gateway.url}/v1/chat/completions", json=body, timeout=0.2,
                   headers={"Authorization": f"Bearer {key}"})
    record = wait_for(lambda: gateway.calls(api_key_id=key_id))[0]
    assert record["status_code"] == 499 and record["estimated"] is False
    assert (record["input_tokens"], record["output_tokens"]) == (60, 40)
    assert record["latency_ms"] >= 600


def test_an_upstream_failure_stays_a_failure_when_the_client_has_left(
        gateway: GatewayUnderTest) -> None:
    key_id, key = gateway.new_key()
    body = {"model": CHAT, "messages": [], "fake": {"latency_ms": 600, "status": 503}}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{gateway.url}/v1/chat/completions", json=body, timeout=0.2,
                   headers={"Authorization": f"Bearer {key}"})
    record = wait_for(lambda: gateway.calls(api_key_id=key_id))[0]
    assert record["status_code"] == 503


def test_strict_durability_commits_before_the_response(make_gateway: Any) -> None:
    gateway = make_gateway(durability="strict", flush_interval_ms=5000)
    key_id, key = gateway.new_key()
    assert post(gateway, key).status_code == 200
    # No waiting: the record must already be committed.
    assert len(gateway.calls(api_key_id=key_id)) == 1
    body = {"model": CHAT, "stream": True, "messages": []}
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {key}"}) as response:
        assert b"[DONE]" in b"".join(response.iter_raw())
    assert len(gateway.calls(api_key_id=key_id)) == 2


def test_the_upstream_gets_the_clients_bytes_and_never_a_second_model(db: Database) -> None:
    # Fields the gateway never heard of, and numbers no parser keeps exactly, pass as they
    # came. Two "model" members go upstream as one, the one the gateway checked and priced
    # (an upstream whose parser keeps the first would otherwise run the other); a "Model"
    # that a case-blind upstream would take for "model" is refused.
    seen: list[bytes] = []

    async def upstream(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        seen.append((await receive())["body"])
        answer = orjson.dumps({"object": "list", "data": [], "model": "x",
                               "usage": {"prompt_tokens": 3, "total_tokens": 3}})
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": answer})

    as_sent = (b'{"model" : "%s", "input": "the \\"model\\" is here", '
               b'"seed": 18446744073709551616, "temperature": 1E0, "x-new": [1.50]}'
               % EMBED.encode())
    twice = [b'{"model": "an-expensive-model", "model": "%s", "input": "hi"}',
             b'{"\\u006dodel": "an-expensive-model", "model": "%s", "input": "hi"}']
    look_alike = b'{"model": "%s", "Model": "an-expensive-model", "input": "hi"}'
    with serve_app(upstream) as upstream_url:
        routes = [Route(model=EMBED, base_url=f"{upstream_url}/v1", category="embedding")]
        app = create_app(load_settings(database_url=db.url, admin_token=ADMIN, routes=routes))
        keys = KeyService(db)
        key = keys.create(KeyCreate(name="embed-only", allowed_models=[EMBED]), "test").key
        with serve_app(app) as url:
            def post_raw(raw: bytes) -> httpx.Response:
                return httpx.post(f"{url}/v1/embeddings", content=raw, timeout=30,
                                  headers={"Authorization": f"Bearer {key}",
                                           "Content-Type": "application/json"})
            answers = [post_raw(raw) for raw in [as_sent, *(t % EMBED.encode() for t in twice)]]
            refused = post_raw(look_alike % EMBED.encode())
    assert [answer.status_code for answer in answers] == [200, 200, 200]
    assert seen == [as_sent] + [orjson.dumps({"model": EMBED, "input": "hi"})] * 2
    assert refused.status_code == 400 and error_of(refused)["param"] == "Model"
