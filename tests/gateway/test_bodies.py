"""What the gateway sends upstream: the client's bytes, changed only where it must be."""

from __future__ import annotations

import orjson
import pytest

from tallygate.config import Route
from tallygate.gateway.requests import GatewayError
from tallygate.gateway.requests import parse_body as _parse_body
from tallygate.gateway.requests import upstream_body as _upstream_body
from tallygate.gateway.upstream import Upstream

PLAIN = Upstream(Route(model="m", base_url="http://upstream.invalid/v1"), None)
RENAMED = Upstream(Route(model="m", base_url="http://upstream.invalid/v1",
                         upstream_model="vendor/m-2"), None)


def forwarded(raw: bytes, upstream: Upstream = PLAIN) -> bytes:
    body = _parse_body(raw)
    stream = body.get("stream") is True
    options = body.get("stream_options") or {}
    return _upstream_body(raw, body, upstream, stream, options.get("include_usage") is True)


def test_a_plain_call_is_forwarded_as_sent() -> None:
    raw = b' {"model":"m", "seed": 18446744073709551616, "temperature": 1E0, "new": {}}'
    assert forwarded(raw) is raw


def test_a_stream_that_did_not_ask_for_usage_gets_it_asked_by_insertion() -> None:
    raw = b'\n {"model": "m", "stream": true, "seed": 18446744073709551616}'
    out = forwarded(raw)
    assert out == b'\n {"stream_options":{"include_usage":true},"model": "m", ' \
                  b'"stream": true, "seed": 18446744073709551616}'
    assert orjson.loads(out)["stream_options"] == {"include_usage": True}


def test_a_stream_that_asked_for_usage_is_forwarded_as_sent() -> None:
    raw = b'{"model": "m", "stream": true, "stream_options": {"include_usage": true}}'
    assert forwarded(raw) is raw


def test_stream_options_without_usage_are_amended_and_kept() -> None:
    raw = b'{"model": "m", "stream": true, "stream_options": {"include_obfuscation": false}}'
    assert orjson.loads(forwarded(raw))["stream_options"] == {
        "include_obfuscation": False, "include_usage": True}


def test_a_renamed_model_is_the_only_change() -> None:
    raw = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "n": 2}'
    assert orjson.loads(forwarded(raw, RENAMED)) == {
        "model": "vendor/m-2", "messages": [{"role": "user", "content": "hi"}], "n": 2}


@pytest.mark.parametrize("raw", [
    b'{"model": "gpt-5", "model": "m"}',
    b'{"\\u006dodel": "gpt-5", "model": "m"}',
    b'{"model": "m", "stream": false, "stream": true}',
    b'{"model": "m", "stream": true, "stream_options": {"include_usage": true}, '
    b'"stream_options": {}}',
    b'{"model": "m", "stream": true, '
    b'"stream_options": {"include_usage": true, "include_usage": false}}',
])
def test_a_member_the_gateway_reads_given_twice_goes_upstream_once(raw: bytes) -> None:
    # Parsers disagree on which of two members counts: the upstream gets what the gateway
    # checked and priced (the last), and nothing else to choose from.
    body = _parse_body(raw)
    out = forwarded(raw)
    assert out.count(b'"model"') == 1 and out.count(b'"stream"') <= 1
    assert out.count(b'"stream_options"') <= 1 and out.count(b'"include_usage"') <= 1
    sent = orjson.loads(out)
    assert sent["model"] == body["model"] == "m"
    if body.get("stream"):
        assert sent["stream_options"]["include_usage"] is True


@pytest.mark.parametrize(("raw", "param"), [
    (b'{"model": "m", "Model": "gpt-5"}', "Model"),
    (b'{"model": "m", "\\u004dODEL": "gpt-5"}', "MODEL"),
    (b'{"model": "m", "Stream": true}', "Stream"),
    (b'{"model": "m", "\xc5\xbftream": true}', "\u017ftream"),  # the long s Go folds to s
    (b'{"model": "m", "stream": true, "Stream_Options": {"include_usage": false}}',
     "Stream_Options"),
    (b'{"model": "m", "stream": true, "stream_options": {"Include_usage": false}}',
     "stream_options.Include_usage"),
])
def test_a_member_that_differs_from_one_the_gateway_reads_only_by_case_is_refused(
        raw: bytes, param: str) -> None:
    # Go's encoding/json (Ollama, one-api) matches names regardless of case.
    with pytest.raises(GatewayError) as refused:
        _parse_body(raw)
    assert refused.value.status == 400 and refused.value.param == param


def test_false_alarms_only_cost_an_encoding() -> None:
    raw = (b'{"model": "m", "messages": [{"role": "user", "content": "model", "name": "a"},'
           b' {"role": "user", "content": "\\u0041 model \\"model\\"", "role": "user"}],'
           b' "metadata": {"model": 1, "Model": 2}}')
    assert orjson.loads(forwarded(raw)) == _parse_body(raw)


def test_a_body_too_deep_to_encode_again_is_a_bad_request() -> None:
    deep = b'{"model": "m", "x": ' + b"[" * 600 + b"]" * 600 + b"}"
    body = _parse_body(deep)
    with pytest.raises(GatewayError) as refused:
        _upstream_body(deep, body, RENAMED, False, False)
    assert refused.value.status == 400
