"""Who uses the demo platform, how much, which models, and at what times of day.

Rhythms are in Asia/Shanghai local time (the demo platform's users' working day). Each
rhythm's weights average 1 over a week, so a key's ``calls_per_day`` is its mean volume.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import Enum
from types import MappingProxyType
from typing import Any

from tallygate.demo.routes import (
    BGE_M3,
    CLAUDE,
    OCR_SERVICE,
    QWEN_CODER,
    R1_32B,
    R1_LLAMA_70B,
    RERANK_SERVICE,
    WHISPER,
)

LOCAL_ZONE = "Asia/Shanghai"


class Rhythm(Enum):
    BUSINESS = "business"  # office hours, a lunch dip, quiet nights and weekends
    CONSUMER = "consumer"  # a phone app: evenings and weekends
    NIGHTLY_BATCH = "nightly-batch"  # pipelines: always on, heavy after midnight


# Relative volume per local hour (0–23) and per weekday (Monday = 0).
_HOURLY: Mapping[Rhythm, tuple[float, ...]] = {
    Rhythm.BUSINESS: (0.12, 0.08, 0.06, 0.05, 0.05, 0.07, 0.15, 0.35, 0.75, 1.5, 1.9, 1.85,
                      1.0, 1.3, 1.9, 2.0, 1.9, 1.5, 0.9, 0.7, 0.65, 0.55, 0.4, 0.22),
    Rhythm.CONSUMER: (0.6, 0.35, 0.2, 0.12, 0.1, 0.12, 0.3, 0.7, 1.0, 1.0, 1.0, 1.05,
                      1.3, 1.1, 0.95, 0.95, 1.0, 1.1, 1.3, 1.6, 1.9, 2.0, 1.7, 1.1),
    Rhythm.NIGHTLY_BATCH: (2.4, 2.6, 2.6, 2.5, 2.2, 1.4, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0,
                           1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.2),
}
_WEEKLY: Mapping[Rhythm, tuple[float, ...]] = {
    Rhythm.BUSINESS: (1.05, 1.0, 1.0, 1.0, 0.95, 0.35, 0.3),
    Rhythm.CONSUMER: (0.95, 0.95, 0.95, 1.0, 1.05, 1.15, 1.1),
    Rhythm.NIGHTLY_BATCH: (1.0, 1.0, 1.0, 1.0, 1.0, 0.8, 0.8),
}


def _normalised(rhythm: Rhythm) -> tuple[tuple[float, ...], ...]:
    hourly, weekly = _HOURLY[rhythm], _WEEKLY[rhythm]
    mean = sum(hourly) * sum(weekly) / (24 * 7)
    return tuple(tuple(h * w / mean for h in hourly) for w in weekly)


# RHYTHM_WEIGHTS[rhythm][weekday][hour]: mean 1 over the week's 168 hours.
RHYTHM_WEIGHTS: Mapping[Rhythm, tuple[tuple[float, ...], ...]] = MappingProxyType(
    {rhythm: _normalised(rhythm) for rhythm in Rhythm})


@dataclass(frozen=True, slots=True)
class KeyLimits:
    """What the demo sets on a key when it creates it."""

    rpm_limit: int | None = None
    tpm_limit: int | None = None
    quota_tokens: int | None = None
    budget: Decimal | None = None
    quota_period: str = "total"
    expires_in_days: float | None = None
    allowed_models: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class DemoKey:
    """One demo API key and the traffic it makes."""

    name: str
    owner: str
    calls_per_day: float  # mean over the period, before growth
    model_mix: Mapping[str, float]  # shares of the key's calls; they sum to 1
    rhythm: Rhythm
    internal: bool = False
    growth: float = 0.0  # relative change in volume from the first day to the last
    day_to_day: float = 0.12  # spread (log-normal sigma) of a day's volume
    burst_mean: float = 2.0  # mean number of back-to-back calls in one burst
    rate_limited_share: float = 0.004  # share of calls answered 429 at mean load
    tags: tuple[str, ...] = ()
    call_metadata: tuple[tuple[float, Mapping[str, Any]], ...] = ()  # (share, tags)
    limits: KeyLimits = field(default_factory=KeyLimits)


DEMO_KEYS: tuple[DemoKey, ...] = (
    DemoKey("acme-prod", "acme", 1400, {R1_32B: 0.45, R1_LLAMA_70B: 0.12, BGE_M3: 0.23,
                                        RERANK_SERVICE: 0.1, CLAUDE: 0.1},
            Rhythm.BUSINESS, growth=0.2, rate_limited_share=0.003, tags=("customer", "prod"),
            call_metadata=((0.12, {"team": "search"}), (0.08, {"team": "support-bot"})),
            limits=KeyLimits(rpm_limit=600, tpm_limit=2_000_000, quota_tokens=400_000_000,
                             quota_period="monthly")),
    DemoKey("mobile-app", "consumer-apps", 700, {R1_32B: 0.68, OCR_SERVICE: 0.22,
                                                 WHISPER: 0.1},
            Rhythm.CONSUMER, growth=0.6, burst_mean=1.5, rate_limited_share=0.012,
            tags=("customer",), call_metadata=((0.05, {"platform": "ios"}),),
            limits=KeyLimits(rpm_limit=120, tpm_limit=300_000, quota_tokens=45_000_000,
                             quota_period="monthly")),
    DemoKey("beta-labs", "beta labs", 300, {QWEN_CODER: 0.6, R1_LLAMA_70B: 0.4},
            Rhythm.BUSINESS, growth=0.9, burst_mean=3.0, tags=("trial",),
            limits=KeyLimits(rpm_limit=60, budget=Decimal("50"), quota_period="monthly",
                             expires_in_days=5,
                             allowed_models=(QWEN_CODER, R1_LLAMA_70B))),
    DemoKey("research-team", "research", 250, {R1_LLAMA_70B: 0.4, R1_32B: 0.15, BGE_M3: 0.2,
                                               RERANK_SERVICE: 0.1, CLAUDE: 0.15},
            Rhythm.BUSINESS, day_to_day=0.45, burst_mean=4.0, rate_limited_share=0.02,
            call_metadata=((0.3, {"project": "rag-eval"}),),
            limits=KeyLimits(rpm_limit=30, budget=Decimal("200"))),
    DemoKey("acme-staging", "acme", 120, {R1_32B: 0.4, R1_LLAMA_70B: 0.2, BGE_M3: 0.2,
                                          QWEN_CODER: 0.1, RERANK_SERVICE: 0.1},
            Rhythm.BUSINESS, day_to_day=0.3, tags=("staging",),
            limits=KeyLimits(rpm_limit=60, quota_tokens=20_000_000, quota_period="daily")),
    # Internal: its calls count as "internal" whatever the route, its service checks included.
    DemoKey("eval-pipeline", "platform", 500, {R1_32B: 0.33, R1_LLAMA_70B: 0.24,
                                               QWEN_CODER: 0.2, BGE_M3: 0.18,
                                               RERANK_SERVICE: 0.05},
            Rhythm.NIGHTLY_BATCH, internal=True, growth=0.1, burst_mean=8.0,
            rate_limited_share=0.0, tags=("infra",),
            call_metadata=((0.6, {"job": "nightly-eval"}),)),
)

INTERNAL_KEY = "eval-pipeline"
# The key whose secret ``tallygate demo`` prints: all models, generous limits, no expiry.
DEMO_KEY = "acme-prod"
KEYS_BY_NAME: Mapping[str, DemoKey] = MappingProxyType({key.name: key for key in DEMO_KEYS})
