"""What the gateway sends upstream: the client's bytes, changed only where it must be."""

from __future__ import annotations

import orjson
import pytest

from tallygate.config import Route
from tallygate.gateway.proxy import GatewayError, _parse_body, _upstream_body
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


@pytest.mark.parametrize(("raw", "param"), [
    (b'{"model": "m", "model": "gpt-5"}', "model"),
    (b'{"\\u006dodel": "gpt-5", "model": "m"}', "model"),
    (b'{"model": "m", "stream": false, "stream": true}', "stream"),
    (b'{"model": "m", "stream_options": {}, "stream_options": {"include_usage": true}}',
     "stream_options"),
    (b'{"model": "m", "stream_options": {"include_usage": true, "include_usage": false}}',
     "stream_options.include_usage"),
])
def test_a_field_the_gateway_reads_given_twice_is_refused(raw: bytes, param: str) -> None:
    with pytest.raises(GatewayError) as refused:
        _parse_body(raw)
    assert refused.value.status == 400 and refused.value.param == param


def test_other_names_given_twice_and_false_alarms_pass() -> None:
    raw = (b'{"model": "m", "messages": [{"role": "user", "content": "model", "name": "a"},'
           b' {"role": "user", "content": "\\u0041 model \\"model\\"", "role": "user"}],'
           b' "metadata": {"model": 1, "model": 2}}')
    assert _parse_body(raw)["model"] == "m"


def test_a_body_too_deep_to_encode_again_is_a_bad_request() -> None:
    deep = b'{"model": "m", "x": ' + b"[" * 600 + b"]" * 600 + b"}"
    body = _parse_body(deep)
    with pytest.raises(GatewayError) as refused:
        _upstream_body(deep, body, RENAMED, False, False)
    assert refused.value.status == 400
