"""Call-record streams for the ledger benchmark, shaped by the Azure LLM inference trace.

Each hour of the benchmark's span replays the trace's real hour of arrivals (``code`` and
``conv`` merged, ~28 000 requests), time-shifted by a random rotation and thinned (or, for
busier hours, overlaid several times) down to that hour's share of the stream. An hour's share
follows a platform rhythm: Asia/Shanghai working hours, quiet nights and weekends, a day-to-day
wobble and growth over the span. Token sizes are the trace rows' own; each row goes to a
key × model pair of a fixed platform (:func:`platform`) whose popularity is Zipf-like.

Records come out in time order, one hour at a time, so memory stays flat whatever the size.
"""

from __future__ import annotations

import bisect
import csv
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import accumulate
from pathlib import Path
from zoneinfo import ZoneInfo

from tallygate.domain.records import CallRecord

HOUR_US = 3_600_000_000
DAY_US = 24 * HOUR_US
RHYTHM_ZONE = ZoneInfo("Asia/Shanghai")
# Relative volume per local hour and per weekday (Monday first): the business rhythm of a
# platform whose users work in one zone, plus batch jobs that keep nights from going silent.
HOURLY = (0.25, 0.2, 0.18, 0.15, 0.15, 0.18, 0.3, 0.5, 0.9, 1.5, 1.9, 1.85,
          1.1, 1.35, 1.9, 2.0, 1.9, 1.5, 1.0, 0.8, 0.75, 0.65, 0.5, 0.35)
WEEKLY = (1.05, 1.0, 1.0, 1.0, 0.95, 0.4, 0.35)
GROWTH = 0.3  # volume grows by this share from the first day to the last
DAY_TO_DAY = 0.12  # log-normal sigma of a day's volume


@dataclass(frozen=True, slots=True)
class Model:
    name: str
    category: str
    kind: str  # "model" or "service"
    endpoint: str
    source: str  # which service of the trace gives its token sizes: "code" or "conv"
    nano_in: int  # price per input token in nano-dollars
    nano_cached: int
    nano_out: int
    nano_call: int = 0
    has_output: bool = True
    reasoning: bool = False
    stream_share: float = 0.0
    cache_share: float = 0.0
    max_input: int = 32_768
    base_ms: int = 60
    ms_per_out: float = 10.0


MODELS = (
    Model("cltech/deepseek-r1-32b", "chat", "model", "/v1/chat/completions", "conv",
          500, 100, 2000, reasoning=True, stream_share=0.8, cache_share=0.35, base_ms=180,
          ms_per_out=22),
    Model("deepseek-r1-distill-llama-70b", "chat", "model", "/v1/chat/completions", "conv",
          750, 150, 990, reasoning=True, stream_share=0.6, cache_share=0.3, base_ms=250,
          ms_per_out=38),
    Model("qwen2.5-72b-instruct", "chat", "model", "/v1/chat/completions", "conv",
          560, 110, 1680, stream_share=0.7, cache_share=0.3, base_ms=150, ms_per_out=25),
    Model("glm-4-9b-chat", "chat", "model", "/v1/chat/completions", "conv",
          60, 12, 60, stream_share=0.5, cache_share=0.2, base_ms=60, ms_per_out=8),
    Model("qwen2.5-coder-32b", "completion", "model", "/v1/completions", "code",
          180, 36, 180, stream_share=0.3, cache_share=0.5, base_ms=40, ms_per_out=9),
    Model("bge-m3", "embedding", "model", "/v1/embeddings", "conv",
          10, 10, 0, has_output=False, max_input=8192, base_ms=15, ms_per_out=0),
    Model("cltech/rerank-service", "rerank", "service", "/v1/rerank", "conv",
          20, 20, 0, nano_call=200_000, has_output=False, max_input=8192, base_ms=30,
          ms_per_out=0),
    Model("cltech/ocr-service", "other", "service", "/v1/ocr", "conv",
          0, 0, 0, nano_call=1_500_000, base_ms=600, ms_per_out=12),
)
KEYS = 40
INTERNAL_KEYS = 4  # evaluation, health checks, batch pipelines: call type "internal"
SHARE_429 = 0.012
SHARE_5XX = 0.008
SHARE_4XX = 0.005
ESTIMATED_SHARE = 0.003


@dataclass(frozen=True, slots=True)
class Pair:
    """One key × model pair of the platform, with its call type."""

    key_id: str
    model: Model
    call_type: str
    weight: float


@dataclass(frozen=True, slots=True)
class Platform:
    pairs: tuple[Pair, ...]

    def by_source(self, source: str) -> tuple[list[Pair], list[float]]:
        chosen = [p for p in self.pairs if p.model.source == source]
        return chosen, list(accumulate(p.weight for p in chosen))


def platform(seed: int) -> Platform:
    """40 keys with Zipf-like volumes (4 internal), each using 2 to 6 of the 8 models.

    A call's type follows from the key and the route, as in the gateway: an internal key's
    calls are ``internal``, calls to a service route ``service``, the rest ``model``.
    """
    rng = random.Random(seed)
    popularity = (3.0, 1.5, 1.2, 0.8, 1.6, 1.0, 0.5, 0.3)  # per model, in MODELS order
    pairs = []
    for index in range(KEYS):
        key_id = f"key-{index:02d}"
        internal = index % 10 == 3  # keys 3, 13, 23, 33: busy enough to matter
        volume = 1.0 / (index + 1) ** 1.1
        count = len(MODELS) if internal else rng.randint(2, 6)
        models = rng.sample(range(len(MODELS)), count)
        if 4 not in models and rng.random() < 0.4:
            models.append(4)  # many keys also use the code model
        shares = [popularity[m] * rng.uniform(0.3, 1.7) for m in models]
        total = sum(shares)
        for m, share in zip(models, shares, strict=True):
            model = MODELS[m]
            call_type = ("internal" if internal
                         else "service" if model.kind == "service" else "model")
            pairs.append(Pair(key_id, model, call_type, volume * share / total))
    return Platform(tuple(pairs))


@dataclass(frozen=True, slots=True)
class TraceRow:
    offset_us: int  # within the hour
    source: str
    input_tokens: int
    output_tokens: int


def load_trace(trace_dir: Path | None) -> list[TraceRow]:
    """Both services of the trace, merged and stretched to exactly one hour.

    From ``trace_dir`` (the published ``code.csv`` and ``conv.csv``) when given, else from
    the copy shipped in the package (:mod:`tallygate.demo.trace`).
    """
    columns: list[tuple[int, str, int, int]] = []  # (offset_ms, source, input, output)
    if trace_dir is None:
        from tallygate.demo.trace import load_trace as load_packaged

        for source, trace in load_packaged().items():
            columns.extend((offset, source, i, o) for offset, (i, o)
                           in zip(trace.offsets_ms, trace.token_pairs, strict=True))
    else:
        for source in ("code", "conv"):
            with (trace_dir / f"{source}.csv").open(newline="", encoding="utf-8") as handle:
                reader = csv.reader(handle)
                next(reader)
                rows = [(_ms(stamp), int(ctx), int(gen)) for stamp, ctx, gen in reader]
            first = min(ms for ms, _, _ in rows)
            columns.extend((ms - first, source, ctx, gen) for ms, ctx, gen in rows)
    span = max(offset for offset, _, _, _ in columns) + 1
    columns.sort()
    return [TraceRow(offset * HOUR_US // span, source, i, o) for offset, source, i, o in columns]


def _ms(stamp: str) -> int:
    whole, _, fraction = stamp.partition(".")
    moment = datetime.fromisoformat(whole).replace(tzinfo=UTC)
    return int(moment.timestamp()) * 1000 + int(fraction.ljust(3, "0")[:3])


def hourly_counts(size: int, end_us: int, days: int, seed: int) -> list[int]:
    """Calls in each hour of ``[end - days, end)``, oldest first, summing exactly to ``size``."""
    rng = random.Random(seed)
    hours = days * 24
    start_us = end_us - hours * HOUR_US
    wobble = [math.exp(rng.gauss(0, DAY_TO_DAY)) for _ in range(days + 2)]
    weights = []
    for h in range(hours):
        middle = datetime.fromtimestamp((start_us + h * HOUR_US + HOUR_US // 2) / 1e6, UTC)
        local = middle.astimezone(RHYTHM_ZONE)
        growth = (1 + GROWTH) ** (h / hours)
        weights.append(HOURLY[local.hour] * WEEKLY[local.weekday()] * wobble[h // 24] * growth)
    total = sum(weights)
    exact = [size * w / total for w in weights]
    counts = [int(x) for x in exact]
    by_remainder = sorted(range(hours), key=lambda h: exact[h] - counts[h], reverse=True)
    for h in by_remainder[:size - sum(counts)]:
        counts[h] += 1
    return counts


class TrafficStream:
    """``size`` call records over ``days`` days ending at ``end_us``, in time order."""

    def __init__(self, size: int, *, end_us: int, days: int = 60, seed: int = 20231116,
                 trace_dir: Path | None = None) -> None:
        self.size = size
        self.end_us = end_us
        self.days = days
        self.seed = seed
        self.trace = load_trace(trace_dir)
        self.platform = platform(seed)
        self.counts = hourly_counts(size, end_us, days, seed)

    def batches(self, batch_size: int) -> Iterator[list[CallRecord]]:
        batch: list[CallRecord] = []
        for hour in self.hours():
            batch.extend(hour)
            while len(batch) >= batch_size:
                yield batch[:batch_size]
                batch = batch[batch_size:]
        if batch:
            yield batch

    def hours(self) -> Iterator[list[CallRecord]]:
        rng = random.Random(self.seed + 1)
        code_pairs, code_weights = self.platform.by_source("code")
        conv_pairs, conv_weights = self.platform.by_source("conv")
        trace = self.trace
        rows_per_copy = len(trace)
        start_us = self.end_us - len(self.counts) * HOUR_US
        for h, count in enumerate(self.counts):
            hour_start = start_us + h * HOUR_US
            copies = -(-count // rows_per_copy)
            rotations = [rng.randrange(HOUR_US) for _ in range(copies)]
            picked = rng.sample(range(copies * rows_per_copy), count)
            out = []
            for index in picked:
                copy, row_index = divmod(index, rows_per_copy)
                row = trace[row_index]
                ts_us = (hour_start + (row.offset_us + rotations[copy]) % HOUR_US
                         + rng.randrange(1000))
                if row.source == "code":
                    pairs, weights = code_pairs, code_weights
                else:
                    pairs, weights = conv_pairs, conv_weights
                pair = pairs[bisect.bisect(weights, rng.random() * weights[-1])]
                out.append(_record(rng, ts_us, pair, row))
            out.sort(key=lambda r: r.ts_us)
            yield out



_TAGS = ({"team": "search"}, {"team": "support-bot"}, {"job": "nightly-eval"},
         {"project": "rag", "env": "prod"})


def _record(rng: random.Random, ts_us: int, pair: Pair, row: TraceRow) -> CallRecord:
    model = pair.model
    draw = rng.random()
    status = 200
    if draw < SHARE_429:
        status = 429
    elif draw < SHARE_429 + SHARE_5XX:
        status = (502, 504, 500)[int(draw * 1e6) % 3]
    elif draw < SHARE_429 + SHARE_5XX + SHARE_4XX:
        status = 400
    metadata = _TAGS[int(draw * 1e3) % 4] if draw > 0.94 else None
    call_id = _uuid7(ts_us, rng.getrandbits(74))
    if status != 200:
        return CallRecord(
            id=call_id, ts_us=ts_us, model=model.name, call_type=pair.call_type,
            api_key_id=pair.key_id, model_category=model.category, endpoint=model.endpoint,
            status_code=status, latency_ms=5 + int(rng.random() * 400), metadata=metadata)
    input_tokens = min(row.input_tokens, model.max_input)
    output = row.output_tokens if model.has_output else 0
    reasoning = 0
    if model.reasoning:
        reasoning = int(output * (0.8 + 2.5 * rng.random()))
        output += reasoning
    cached = 0
    if rng.random() < model.cache_share:
        cached = int(input_tokens * (0.2 + 0.7 * rng.random())) // 64 * 64
    jitter = 0.7 + 0.6 * rng.random()
    prefill_ms = input_tokens // 50
    latency = int((model.base_ms + prefill_ms + output * model.ms_per_out) * jitter)
    ttft = (int((model.base_ms + prefill_ms) * jitter)
            if rng.random() < model.stream_share else None)
    cost = (model.nano_call + (input_tokens - cached) * model.nano_in
            + cached * model.nano_cached + output * model.nano_out)
    return CallRecord(
        id=call_id, ts_us=ts_us, model=model.name, call_type=pair.call_type,
        api_key_id=pair.key_id, model_category=model.category, endpoint=model.endpoint,
        status_code=200, input_tokens=input_tokens, output_tokens=output,
        cached_input_tokens=cached, reasoning_tokens=reasoning,
        total_tokens=input_tokens + output, cost_nano=cost, latency_ms=latency, ttft_ms=ttft,
        estimated=rng.random() < ESTIMATED_SHARE, metadata=metadata,
    )


def _uuid7(ts_us: int, rand: int) -> str:
    """A UUIDv7 of the call's own time (like ``new_call_id``), random bits from the seed."""
    value = ((ts_us // 1000) << 80 | 0x7 << 76 | (rand >> 62) << 64 | 0b10 << 62
             | (rand & ((1 << 62) - 1)))
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"
