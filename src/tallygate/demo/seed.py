"""Seeding a demo ledger: keys with limits, prices, and weeks of generated calls.

:func:`seed_demo` works on an empty database only and refuses any other (raising
:class:`DemoSeedError`): the key secrets it returns exist only at creation, so a second seed
could not hand them back, and mixing demo records into a real ledger would spoil its figures.
``tallygate demo`` recreates its database file before every run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from tallygate.demo.generate import (
    DAY_US,
    DEFAULT_DAYS,
    DEFAULT_SEED,
    Spike,
    generate_calls,
    plan_spike,
)
from tallygate.demo.profiles import DEMO_KEY, DEMO_KEYS, DemoKey
from tallygate.demo.routes import DEMO_ROUTES
from tallygate.domain.records import CallRecord
from tallygate.keys.schemas import KeyCreate
from tallygate.keys.service import KeyService
from tallygate.ledger.service import Ledger
from tallygate.store import prices as price_store
from tallygate.store.rollup_check import raw_time_span

BATCH_SIZE = 5000
HOUR_US = 3_600_000_000
ACTOR = "demo"

Progress = Callable[[int, int], None]  # (days done, days in all)


class DemoSeedError(RuntimeError):
    """The database is not empty; the demo seeds only a fresh one."""


@dataclass(frozen=True, slots=True)
class DemoSeed:
    key_ids: Mapping[str, str]  # demo key name → stored id
    secrets: Mapping[str, str]  # demo key name → secret (shown only now)
    demo_key_name: str
    demo_key: str  # the secret of a non-internal key with every model, for trying the gateway
    spike: Spike | None  # None when ``days`` is too short to reach back to it
    records: int
    start_us: int
    end_us: int


def _key_fields(profile: DemoKey, now_us: int) -> KeyCreate:
    limits = profile.limits
    expires_at = None
    if limits.expires_in_days is not None:
        expires_at = (datetime.fromtimestamp(now_us / 1_000_000, UTC)
                      + timedelta(days=limits.expires_in_days))
    return KeyCreate.model_validate({
        "name": profile.name, "internal": profile.internal, "owner": profile.owner,
        "tags": list(profile.tags) or None, "expires_at": expires_at,
        "allowed_models": None if limits.allowed_models is None
        else list(limits.allowed_models),
        "rpm_limit": limits.rpm_limit, "tpm_limit": limits.tpm_limit,
        "quota_tokens": limits.quota_tokens, "budget": limits.budget,
        "quota_period": limits.quota_period,
    })


def _refuse_unless_empty(ledger: Ledger, keys: KeyService) -> None:
    existing = keys.list()
    if existing:
        names = ", ".join(sorted(key.name for key in existing)[:5])
        raise DemoSeedError(f"the database already has API keys ({names}); the demo seeds "
                            "only an empty database")
    if raw_time_span(ledger.db) is not None:
        raise DemoSeedError("the database already has call records; the demo seeds only an "
                            "empty database")


def seed_demo(ledger: Ledger, keys: KeyService, *, now_us: int, days: int = DEFAULT_DAYS,
              seed: int = DEFAULT_SEED, progress: Progress | None = None) -> DemoSeed:
    """Create the demo keys and prices and store ``days`` days of calls ending at ``now_us``.

    ``progress(done, total)`` is called after each stored batch, in whole days. Raises
    :class:`DemoSeedError` when the database has any key or call record already.
    """
    _refuse_unless_empty(ledger, keys)
    start_us = now_us - days * DAY_US
    # Each key created on the day before the history begins, an hour apart: before its
    # first call, as on a real platform.
    created = {profile.name: keys.create(_key_fields(profile, now_us), ACTOR,
                                         created_at_us=start_us - DAY_US + n * HOUR_US)
               for n, profile in enumerate(DEMO_KEYS)}
    for route in DEMO_ROUTES:
        price_store.set_price(ledger.db, route.price(effective_from_us=0))
    ledger.prices_changed()
    key_ids = {name: key.id for name, key in created.items()}
    stored = 0
    batch: list[CallRecord] = []
    for record in generate_calls(key_ids, now_us=now_us, days=days, seed=seed,
                                 prices=ledger.prices()):
        batch.append(record)
        if len(batch) == BATCH_SIZE:
            stored += ledger.store(batch).accepted
            batch = []
            if progress is not None:
                progress(min(days, (record.ts_us - start_us) // DAY_US), days)
    if batch:
        stored += ledger.store(batch).accepted
    if progress is not None:
        progress(days, days)
    spike = plan_spike(now_us)
    return DemoSeed(
        key_ids=key_ids, secrets={name: key.key for name, key in created.items()},
        demo_key_name=DEMO_KEY, demo_key=created[DEMO_KEY].key,
        spike=spike if spike.start_us >= start_us else None,
        records=stored, start_us=start_us, end_us=now_us,
    )
