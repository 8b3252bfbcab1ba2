"""OpenTelemetry GenAI spans as call events: which spans are model calls, and what each says.

The attribute names are the OpenTelemetry semantic conventions for GenAI
(open-telemetry/semantic-conventions, model/gen-ai/registry.yaml and spans.yaml, and their
deprecated registry for the older names). What the ledger takes from them:

- a span is a model call when it has ``gen_ai.operation.name`` (or the older
  ``gen_ai.system``, or ``gen_ai.provider.name``) and its operation is not an agent's or a
  tool's (``invoke_agent``, ``create_agent``, ``execute_tool``, ...): those wrap the model
  calls made inside them, whose own spans carry the tokens, and would count them twice;
- ``gen_ai.usage.input_tokens`` counts all input, cached included ("This value SHOULD include
  all types of input tokens, including cached tokens"), and the cache reads and writes are
  parts of it: exactly the ledger's ``input_tokens``, ``cached_input_tokens`` and
  ``cache_write_tokens``. Likewise ``gen_ai.usage.reasoning.output_tokens`` is part of the
  output.

A span becomes a dict in the shape of ``POST /api/v1/usage/events`` (``CallEvent``), which
validates it like any reported call; what makes no record at all (no model, bad ids, end
before start, a negative count) is said here, span by span.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

ENDPOINT = "/v1/traces"
OPERATION = "gen_ai.operation.name"
# What marks a GenAI span besides its operation: the older system name, and its successor.
SYSTEM = ("gen_ai.system", "gen_ai.provider.name")
# Operations that are not one model call (an agent's or a workflow's span holds the calls
# made inside it; a tool's is no model call at all).
NOT_CALLS = frozenset({"create_agent", "invoke_agent", "execute_tool", "invoke_workflow"})
CATEGORIES = {"chat": "chat", "generate_content": "chat", "text_completion": "completion",
              "embeddings": "embedding"}

# Each measure's attribute, current name first, older names after.
INPUT = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens")
OUTPUT = ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens")
CACHE_READ = ("gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_read_input_tokens")
CACHE_WRITE = ("gen_ai.usage.cache_creation.input_tokens",
               "gen_ai.usage.cache_write.input_tokens",
               "gen_ai.usage.cache_creation_input_tokens")
REASONING = ("gen_ai.usage.reasoning.output_tokens",)
REQUEST_MODEL = "gen_ai.request.model"
RESPONSE_MODEL = "gen_ai.response.model"
TIME_TO_FIRST_CHUNK = "gen_ai.response.time_to_first_chunk"  # seconds, a double
ERROR_TYPE = "error.type"
HTTP_STATUS = "http.response.status_code"
SERVICE_NAME = "service.name"
# The exception classes of the official openai and anthropic SDKs, which their
# instrumentations write to error.type (``type(error).__qualname__``), by the HTTP status
# each stands for.
SDK_ERRORS = {"BadRequestError": 400, "AuthenticationError": 401,
              "PermissionDeniedError": 403, "NotFoundError": 404, "ConflictError": 409,
              "UnprocessableEntityError": 422, "RateLimitError": 429,
              "InternalServerError": 500, "APIConnectionError": 502,
              "APITimeoutError": 504, "timeout": 504}
MAX_TAG_CHARS = 200


@dataclass(frozen=True, slots=True)
class Rejected:
    """A GenAI span that makes no record, and why."""

    span: str  # "trace <hex> span <hex>", or where it is in the request when its ids are bad
    reason: str


def span_id_text(trace_id: bytes, span_id: bytes) -> str:
    return f"otel-{trace_id.hex()}-{span_id.hex()}"


def events_of(resource_spans: Sequence[Any], key_id: str, call_type: str
              ) -> tuple[list[dict[str, Any]], list[Rejected], int]:
    """The call events of an export request's GenAI spans, the spans rejected, and how many
    spans were not GenAI calls (ignored)."""
    events: list[dict[str, Any]] = []
    rejected: list[Rejected] = []
    ignored = 0
    for where, span, service in _spans(resource_spans):
        attributes = _attributes(span.attributes)
        if not is_model_call(attributes):
            ignored += 1
            continue
        event = _event(span, attributes, service, key_id, call_type)
        if isinstance(event, str):
            rejected.append(Rejected(_name(span, where), event))
        else:
            events.append(event)
    return events, rejected, ignored


def is_model_call(attributes: dict[str, Any]) -> bool:
    operation = attributes.get(OPERATION)
    if isinstance(operation, str) and operation:
        return operation not in NOT_CALLS
    return any(isinstance(attributes.get(name), str) for name in SYSTEM)


def _spans(resource_spans: Sequence[Any]) -> Iterator[tuple[str, Span, str | None]]:
    for r, resource in enumerate(resource_spans):
        service = _attributes(resource.resource.attributes).get(SERVICE_NAME)
        for s, scope in enumerate(resource.scope_spans):
            for n, span in enumerate(scope.spans):
                yield (f"resourceSpans[{r}].scopeSpans[{s}].spans[{n}]", span,
                       service if isinstance(service, str) else None)


def _name(span: Span, where: str) -> str:
    if _valid_ids(span):
        return f"trace {span.trace_id.hex()} span {span.span_id.hex()}"
    return where


def _valid_ids(span: Span) -> bool:
    # W3C Trace Context: 16 and 8 bytes, not all zero.
    return (len(span.trace_id) == 16 and any(span.trace_id)
            and len(span.span_id) == 8 and any(span.span_id))


def _event(span: Span, attributes: dict[str, Any], service: str | None, key_id: str,
           call_type: str) -> dict[str, Any] | str:
    """The span as a call event, or why it cannot be one."""
    if not _valid_ids(span):
        return "trace_id must be 16 bytes and span_id 8 bytes, not all zero"
    request_model = _text(attributes.get(REQUEST_MODEL))
    response_model = _text(attributes.get(RESPONSE_MODEL))
    model = request_model or response_model
    if model is None:
        return f"a GenAI span needs {REQUEST_MODEL} or {RESPONSE_MODEL}"
    if span.end_time_unix_nano < span.start_time_unix_nano or not span.end_time_unix_nano:
        return "the span ends before it starts"
    counts: dict[str, int] = {}
    for measure, names in (("input_tokens", INPUT), ("output_tokens", OUTPUT),
                           ("cached_input_tokens", CACHE_READ),
                           ("cache_write_tokens", CACHE_WRITE),
                           ("reasoning_tokens", REASONING)):
        name, value = _first(attributes, names)
        if name is None:
            continue
        count = _count(value)
        if count is None:
            return f"{name}: must be a whole number of tokens, not {value!r}"
        if count < 0:
            return f"{name}: must not be negative"
        counts[measure] = count
    status = status_of(span.status, attributes)
    start_us = span.start_time_unix_nano // 1000
    event: dict[str, Any] = {
        "id": span_id_text(span.trace_id, span.span_id),
        "ts": datetime.fromtimestamp(start_us // 1_000_000, UTC).replace(
            microsecond=start_us % 1_000_000),
        "model": model,
        "call_type": call_type,
        "api_key_id": key_id,
        "model_category": CATEGORIES.get(attributes.get(OPERATION) or "", "other"),
        "endpoint": ENDPOINT,
        "status_code": status,
        "latency_ms": (span.end_time_unix_nano - span.start_time_unix_nano) // 1_000_000,
        # A call that succeeded but reports no usage at all: its zeros are not the
        # provider's count.
        "estimated": status < 400 and "input_tokens" not in counts
        and "output_tokens" not in counts,
        "metadata": _metadata(attributes, service),
        "upstream_model": response_model or model,
        **counts,
    }
    ttft = attributes.get(TIME_TO_FIRST_CHUNK)
    if isinstance(ttft, int | float) and not isinstance(ttft, bool) and 0 <= ttft < 86_400:
        event["ttft_ms"] = int(ttft * 1000)
    return event


def status_of(status: Status, attributes: dict[str, Any]) -> int:
    """200 for a span whose status is OK or unset; for an error, the HTTP status that
    ``error.type`` (an HTTP status, or an SDK's exception class) or
    ``http.response.status_code`` names, else 500."""
    if status.code != Status.STATUS_CODE_ERROR:
        return 200
    error = attributes.get(ERROR_TYPE)
    if isinstance(error, str):
        if error.isdigit() and 400 <= int(error) <= 599:
            return int(error)
        if error in SDK_ERRORS:
            return SDK_ERRORS[error]
    http = _count(attributes.get(HTTP_STATUS))
    if http is not None and 400 <= http <= 599:
        return http
    return 500


def _metadata(attributes: dict[str, Any], service: str | None) -> dict[str, Any]:
    """Where the record came from: the source, and the span's own names."""
    tags: dict[str, Any] = {"source": "otlp"}
    for tag, value in (("operation", attributes.get(OPERATION)),
                       ("provider", _first(attributes, SYSTEM)[1]),
                       ("service", service),
                       ("error_type", attributes.get(ERROR_TYPE))):
        if isinstance(value, str) and value:
            tags[tag] = value[:MAX_TAG_CHARS]
    return tags


def _first(attributes: dict[str, Any], names: Sequence[str]) -> tuple[str | None, Any]:
    for name in names:
        if name in attributes:
            return name, attributes[name]
    return None, None


def _text(value: Any) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def _count(value: Any) -> int | None:
    """A token count: an int, a whole double (JavaScript's numbers) or decimal digits."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def _attributes(pairs: Sequence[KeyValue]) -> dict[str, Any]:
    """The attributes as plain values (the first of a key given twice); arrays and maps,
    which no attribute read here has, stay as their protobuf messages."""
    found: dict[str, Any] = {}
    for pair in pairs:
        if pair.key not in found:
            found[pair.key] = _value(pair.value)
    return found


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return None if kind is None else getattr(value, kind)
