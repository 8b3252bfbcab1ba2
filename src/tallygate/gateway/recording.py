"""A call's record: what the call gathered, metered and priced, recorded and counted.

Total: whatever fails here is logged, and a record is still made if at all possible (the
client's answer is not held up by the gateway's own bookkeeping, and no input can make a
served call go unrecorded).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Any

import orjson

from tallygate.domain.records import CallRecord, new_call_id, now_us
from tallygate.gateway.endpoints import Endpoint
from tallygate.gateway.limits import Limits
from tallygate.gateway.metering import AnswerReader, generated_chars, upstream_model_of
from tallygate.gateway.upstream import Upstream
from tallygate.gateway.usage import Usage, estimate_input_tokens, estimate_tokens_of_text
from tallygate.ledger.recorder import Recorder
from tallygate.ledger.service import Ledger
from tallygate.store.keys import StoredKey

log = logging.getLogger("tallygate.gateway")

# A refused call keeps its tags only up to this size (as JSON): a flood of refusals must not
# be able to store a kilobyte each (docs/gateway.md, "Refused calls").
REFUSAL_TAGS_MAX_BYTES = 256


@dataclass(slots=True)
class Call:
    """What one call has gathered by the time it is recorded."""

    request_id: str
    started: float
    ts_us: int
    endpoint: Endpoint
    key: StoredKey
    upstream: Upstream
    body: dict[str, Any]  # the JSON request ({} for a form or a service's body)
    body_bytes: int  # what an estimate falls back on when the body cannot be walked
    tags: dict[str, Any] | None
    read_usage: AnswerReader
    # Usage the request alone decides (speech: its characters), whatever the answer says.
    request_usage: Usage | None = None
    upstream_model: str | None = None  # the model the upstream says it ran
    path: str | None = None  # a custom service route's path, recorded as its endpoint
    # Holds one of its key's max_concurrency slots (under its request id) until recorded.
    holds_slot: bool = False

    def elapsed_ms(self) -> int:
        return int((time.perf_counter() - self.started) * 1000)


def usage_of_answer(content: bytes, call: Call) -> Usage:
    """What a whole (not streamed) answer bills; notes the upstream's model on the call."""
    if call.request_usage is not None:
        return call.request_usage
    try:
        parsed = orjson.loads(content)
    except orjson.JSONDecodeError:  # also invalid UTF-8, and nesting past orjson's depth
        parsed = None
    answer = parsed if isinstance(parsed, dict) else {}
    generated = 0
    try:
        call.upstream_model = upstream_model_of(answer)
        usage = call.read_usage(answer)
        if usage is not None:
            return usage
        generated = generated_chars(answer)
    except Exception:  # an answer of a shape never met: estimated from what was sent
        log.exception("cannot read the usage of %s", call.request_id)
    return estimate(call, generated)


def estimate(call: Call, output_chars: int) -> Usage:
    """What was sent and generated so far, when the upstream reports no usage (or the
    stream ended before its usage chunk). Should the body defeat the estimator, its length
    in bytes stands for its text."""
    try:
        input_tokens = estimate_input_tokens(call.body)
    except Exception:
        log.exception("cannot estimate the input of %s", call.request_id)
        input_tokens = estimate_tokens_of_text(call.body_bytes)
    return Usage(input_tokens, estimate_tokens_of_text(output_chars), estimated=True)


class Bookkeeper:
    """Makes each call's record, hands it to the recorder and counts it against the key."""

    def __init__(self, ledger: Ledger, recorder: Recorder, limits: Limits,
                 strict: bool) -> None:
        self.ledger, self.recorder, self.limits, self.strict = ledger, recorder, limits, strict

    def make_record(self, call: Call, status: int, usage: Usage | None,
                    ttft_ms: int | None = None) -> CallRecord:
        usage = usage or Usage()
        model = call.upstream.model
        cost = self.ledger.cost_of(model, call.ts_us, usage.input_tokens,
                                   usage.cached_input_tokens, usage.output_tokens, status,
                                   call.key.id, cache_write_tokens=usage.cache_write_tokens,
                                   units=usage.units)
        endpoint = call.path or call.endpoint.path
        return CallRecord(
            id=new_call_id(), ts_us=call.ts_us, model=model,
            call_type="internal" if call.key.internal else call.upstream.route.kind,
            api_key_id=call.key.id, model_category=call.upstream.category(endpoint),
            endpoint=endpoint, status_code=status, input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens, cached_input_tokens=usage.cached_input_tokens,
            reasoning_tokens=usage.reasoning_tokens,
            total_tokens=usage.input_tokens + usage.output_tokens, cost_nano=cost,
            latency_ms=call.elapsed_ms(), ttft_ms=ttft_ms, estimated=usage.estimated,
            metadata=(call.tags or {}) | {"request_id": call.request_id},
            cache_write_tokens=usage.cache_write_tokens, units=usage.units,
            unit=usage.unit, upstream_model=call.upstream_model,
        )

    async def record_refusal(self, call: Call, status: int) -> None:
        """Record a call refused before it went upstream (403, 429, 503): stamped with the
        moment it was refused, its tags kept only if small, and past the recorder's bound
        per key and minute counted into an aggregate (``ledger/refusals.py``)."""
        try:
            record = self.make_record(call, status, None)
            tags = call.tags or {}
            small = len(orjson.dumps(tags)) <= REFUSAL_TAGS_MAX_BYTES
            record = replace(record, ts_us=now_us(),
                             metadata=(tags if small else {}) | {"request_id": call.request_id})
            await self.recorder.record_refusal(record, commit=self.strict)
        except Exception:
            log.exception("cannot record the refusal of %s", call.request_id)

    async def record(self, call: Call, status: int, usage: Usage | None,
                     ttft_ms: int | None = None, *, commit: bool | None = None) -> None:
        """Record the call, count it against the key's limits and give back its
        concurrency slot: a call is recorded once, when it is over (a stream: once settled)."""
        if call.holds_slot:
            call.holds_slot = False
            try:
                await self.limits.release(call.key, call.request_id)
            except Exception:
                log.exception("cannot release the concurrency slot of %s", call.request_id)
        try:
            record = self.make_record(call, status, usage, ttft_ms)
        except Exception:
            log.exception("cannot make the record of %s; recording an estimate",
                          call.request_id)
            try:
                fallback = Usage(estimate_tokens_of_text(call.body_bytes), 0, estimated=True)
                record = self.make_record(call, status, fallback, ttft_ms)
            except Exception:
                log.exception("cannot make any record of %s", call.request_id)
                return
        try:
            if self.strict if commit is None else commit:
                await self.recorder.record_and_commit(record)
            else:
                self.recorder.record(record)
        except Exception:
            log.exception("cannot record %s", call.request_id)
        try:
            if record.total_tokens or record.cost_nano:
                await self.limits.count(call.key, record.total_tokens, record.cost_nano,
                                        time.time())
        except Exception:
            log.exception("cannot count %s against its key's limits", call.request_id)
