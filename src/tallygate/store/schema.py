"""Table definitions. Migrations (``store/migrations``) create them; a test checks they agree.

Times are integers: ``ts`` in microseconds since the Unix epoch, rollup ``bucket`` in seconds.
Money is an integer of nano-units. Integers behave the same in SQLite and PostgreSQL, sum
exactly and index compactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

from tallygate.domain.categories import UNITS

metadata = MetaData()

calls = Table(
    "calls",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("ts", BigInteger, nullable=False),
    Column("api_key_id", String(64)),
    Column("model", String(200), nullable=False),
    Column("model_category", String(20), nullable=False),
    Column("call_type", String(10), nullable=False),
    Column("endpoint", String(200)),
    Column("status_code", Integer, nullable=False),
    Column("input_tokens", BigInteger, nullable=False),
    Column("output_tokens", BigInteger, nullable=False),
    Column("cached_input_tokens", BigInteger, nullable=False),
    Column("reasoning_tokens", BigInteger, nullable=False),
    Column("total_tokens", BigInteger, nullable=False),
    Column("cost_nano", BigInteger, nullable=False),
    Column("latency_ms", Integer),
    Column("ttft_ms", Integer),
    Column("estimated", Boolean, nullable=False),
    # Added by 0007; ``metadata`` stays last in this definition (store/calls.py writes the
    # columns by position, the free-form one last).
    Column("cache_write_tokens", BigInteger, nullable=False, server_default="0"),
    Column("units", BigInteger, nullable=False, server_default="0"),
    Column("unit", String(20)),
    Column("upstream_model", String(200)),
    # Added by 0010: how many calls the record stands for. Above 1 only for refusals the
    # gateway aggregated (gateway.md, "Refused calls") or events that say so.
    Column("repeats", Integer, nullable=False, server_default="1"),
    Column("metadata", Text),
    Index("ix_calls_ts", "ts"),
    Index("ix_calls_key_ts", "api_key_id", "ts"),
)

# The measure that sums the units of each kind of unit: ``units_image``, ``units_second``, ...
UNIT_MEASURES = {unit: f"units_{unit}" for unit in UNITS}
# Measures added by migration 0007: stored with a server default of 0, so rows written
# before it read as 0.
MEASURES_0007 = ("cache_write_tokens", *UNIT_MEASURES.values())

# Summable measures shared by every rollup tier. Order matters: the store writes them by
# position.
ROLLUP_MEASURES = (
    "calls",
    "success_calls",
    "failed_calls",
    "rate_limited_calls",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "reasoning_tokens",
    "total_tokens",
    "cost_nano",
    "latency_ms_sum",
    "latency_count",
    "ttft_ms_sum",
    "ttft_count",
    "estimated_calls",
    # Added by 0007: cache writes, and units per unit kind (one measure each, so a sum per
    # kind is a plain column sum in every tier, like the token measures).
    "cache_write_tokens",
    *UNIT_MEASURES.values(),
)
# What one raw call adds to each measure, as SQL over a row of ``calls`` (or of a batch table
# shaped like it): the one definition the writers' sums and the readers' raw edges share.
# A call is a success below 400, rate limited at 429, failed otherwise. A record stands for
# ``repeats`` calls; its tokens, units and cost are already their totals, and only a record
# of one call carries a latency.
MEASURE_OF_CALL = {
    "calls": "repeats",
    "success_calls": "CASE WHEN status_code < 400 THEN repeats ELSE 0 END",
    "failed_calls": "CASE WHEN status_code >= 400 AND status_code <> 429 THEN repeats ELSE 0 END",
    "rate_limited_calls": "CASE WHEN status_code = 429 THEN repeats ELSE 0 END",
    "input_tokens": "input_tokens",
    "output_tokens": "output_tokens",
    "cached_input_tokens": "cached_input_tokens",
    "reasoning_tokens": "reasoning_tokens",
    "total_tokens": "total_tokens",
    "cost_nano": "cost_nano",
    "latency_ms_sum": "coalesce(latency_ms, 0)",
    "latency_count": "CASE WHEN latency_ms IS NULL THEN 0 ELSE 1 END",
    "ttft_ms_sum": "coalesce(ttft_ms, 0)",
    "ttft_count": "CASE WHEN ttft_ms IS NULL THEN 0 ELSE 1 END",
    "estimated_calls": "CASE WHEN estimated THEN repeats ELSE 0 END",
    "cache_write_tokens": "cache_write_tokens",
    # The unit names are constants of the code (UNITS), never input.
    **{measure: f"CASE WHEN unit = '{unit}' THEN units ELSE 0 END"
       for unit, measure in UNIT_MEASURES.items()},
}
assert tuple(MEASURE_OF_CALL) == ROLLUP_MEASURES
ROLLUP_DIMENSIONS = ("api_key_id", "model", "model_category", "call_type")
MINUTE_S = 60  # the grain of the tiers kept only for the minute window
KEYLESS_DIMENSIONS = ROLLUP_DIMENSIONS[1:]
# The upstream's model is a dimension of its own tiers only (rollup_*_upstream): keyless,
# so they hold about as many rows as the *_all tiers, and kept for ever, so reconciliation
# per UTC day x upstream model outlives raw retention.
UPSTREAM_DIMENSIONS = (*KEYLESS_DIMENSIONS, "upstream_model")
# Dimensions a raw record may leave empty: stored as "" in a rollup's primary key.
NULLABLE_DIMENSIONS = ("api_key_id", "upstream_model")
_DIMENSION_WIDTHS = {"api_key_id": 64, "model": 200, "model_category": 20, "call_type": 10,
                     "upstream_model": 200}


@dataclass(frozen=True, slots=True)
class Tier:
    """One rollup table: sums per UTC bucket of ``grain_s`` seconds and ``dimensions``.

    Keyed tiers have every dimension; key-less ones sum every key's calls, and the minute
    totals every call, so views that need fewer dimensions read a fraction of the rows.
    Minute tiers (``windowed``) are kept for the minute window only; the others for ever.
    """

    table: Table
    grain_s: int

    @property
    def name(self) -> str:
        return self.table.name

    @property
    def dimensions(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.table.primary_key.columns if c.name != "bucket")

    @property
    def keyed(self) -> bool:
        return "api_key_id" in self.dimensions

    @property
    def windowed(self) -> bool:
        return self.grain_s == MINUTE_S

    @property
    def clustered_by_key(self) -> bool:
        """Stored in key order: cheap for one key's rows, a full scan for a time range."""
        return self.dimensions == ("api_key_id",)


def _rollup_table(name: str, dimensions: tuple[str, ...] = ROLLUP_DIMENSIONS) -> Table:
    bucket = Column("bucket", BigInteger, primary_key=True)
    # In keyed tiers "" stands for "no key", so the primary key can include it.
    columns: list[Column[Any]] = [Column(d, String(_DIMENSION_WIDTHS[d]), primary_key=True)
                                  for d in dimensions]
    # Clustered by (bucket, ...) on SQLite: a time range is one contiguous scan. Keyed tiers
    # also find one key's rows without reading every key's: through an index, or, for the
    # per-key minute totals, by being clustered by key.
    key_first = dimensions == ("api_key_id",)
    return Table(
        name,
        metadata,
        *([*columns, bucket] if key_first else [bucket, *columns]),
        *(Column(measure, BigInteger, nullable=False,
                 server_default="0" if measure in MEASURES_0007 else None)
          for measure in ROLLUP_MEASURES),
        *((Index(f"ix_{name}_key", "api_key_id", "bucket"),)
          if "api_key_id" in dimensions and not key_first else ()),
        sqlite_with_rowid=False,
    )


rollup_1m = _rollup_table("rollup_1m")
rollup_15m = _rollup_table("rollup_15m")
rollup_1h = _rollup_table("rollup_1h")
rollup_1d = _rollup_table("rollup_1d")
rollup_1m_all = _rollup_table("rollup_1m_all", KEYLESS_DIMENSIONS)
rollup_15m_all = _rollup_table("rollup_15m_all", KEYLESS_DIMENSIONS)
rollup_1h_all = _rollup_table("rollup_1h_all", KEYLESS_DIMENSIONS)
rollup_1d_all = _rollup_table("rollup_1d_all", KEYLESS_DIMENSIONS)
rollup_15m_upstream = _rollup_table("rollup_15m_upstream", UPSTREAM_DIMENSIONS)
rollup_1d_upstream = _rollup_table("rollup_1d_upstream", UPSTREAM_DIMENSIONS)
rollup_1m_key = _rollup_table("rollup_1m_key", ("api_key_id",))  # a key's peak RPM/TPM
rollup_1m_total = _rollup_table("rollup_1m_total", ())  # peak RPM/TPM of everything

# Finest grain first and, within a grain, most dimensions first. Every grain divides the
# next (and a day), so a finer tier's buckets nest in a coarser one's, and each tier's sums
# can be added up from a finer tier's or from a tier of its grain with more dimensions.
TIERS = (
    Tier(rollup_1m, 60), Tier(rollup_1m_all, 60), Tier(rollup_1m_key, 60),
    Tier(rollup_1m_total, 60),
    Tier(rollup_15m, 900), Tier(rollup_15m_upstream, 900), Tier(rollup_15m_all, 900),
    Tier(rollup_1h, 3600), Tier(rollup_1h_all, 3600),
    Tier(rollup_1d, 86400), Tier(rollup_1d_upstream, 86400), Tier(rollup_1d_all, 86400),
)
TIER_BY_NAME = {tier.name: tier for tier in TIERS}

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("prefix", String(32), nullable=False),
    Column("secret_hash", String(64), nullable=False, unique=True),
    Column("status", String(10), nullable=False),
    Column("internal", Boolean, nullable=False),
    Column("owner", String(200)),
    Column("tags", Text),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger),
    Column("allowed_models", Text),
    Column("allowed_ips", Text),
    Column("rpm_limit", Integer),
    Column("tpm_limit", BigInteger),
    Column("quota_tokens", BigInteger),
    Column("budget_nano", BigInteger),
    Column("quota_period", String(10), nullable=False),
    Column("max_concurrency", Integer),
)

prices = Table(
    "prices",
    metadata,
    Column("model", String(200), primary_key=True),
    Column("effective_from", BigInteger, primary_key=True),
    # Decimal strings: exact on both databases.
    Column("input_per_million", String(40), nullable=False),
    Column("cached_input_per_million", String(40)),
    Column("output_per_million", String(40), nullable=False),
    Column("per_call", String(40), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("cache_write_per_million", String(40)),  # NULL: the input price (0007)
    Column("per_unit", String(40), nullable=False, server_default="0"),  # 0007
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ts", BigInteger, nullable=False),
    Column("actor", String(200), nullable=False),
    Column("action", String(50), nullable=False),
    Column("target", String(200)),
    Column("details", Text),
    Index("ix_audit_log_ts", "ts"),
)

meta = Table(
    "meta",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("value", Text, nullable=False),
)

# Facts about the ledger's own life that every process must agree on, one integer each.
# ``raw_purge_floor_us``: the instant below which raw records may have been purged. It only
# moves forward, and records below it are refused (their ids can no longer be checked).
ledger_state = Table(
    "ledger_state",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", BigInteger, nullable=False),
)

sessions = Table(
    "sessions",
    metadata,
    # Only the hash of the cookie's token is stored; api_key_id None means the admin.
    Column("token_hash", String(64), primary_key=True),
    Column("api_key_id", String(64)),
    Column("csrf_token", String(64), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    # Admin sessions: an HMAC of the cookie's token keyed by the admin token's hash, so a
    # session opens only under the admin token it signed in with (web/sessions.py).
    Column("admin_binding", String(64)),
    Index("ix_sessions_expires_at", "expires_at"),
)

key_discounts = Table(
    "key_discounts",
    metadata,
    # A key's discount (a percentage off the price table) from ``effective_from`` (µs) on,
    # until its next row: a call is discounted as it was when it was made.
    Column("api_key_id", String(64), primary_key=True),
    Column("effective_from", BigInteger, primary_key=True),
    Column("percent", String(20), nullable=False),  # a decimal string, exact
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    # One row per anomaly sent: its id is the anomaly's, so each is sent once, by whichever
    # process claims it first. The URL and the secret are settings, never stored.
    Column("id", String(64), primary_key=True),
    Column("created_at", BigInteger, nullable=False),
    Column("event", String(50), nullable=False),
    Column("payload", Text, nullable=False),
    Column("status", String(10), nullable=False),  # pending, delivered, failed
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", BigInteger),
    Column("last_attempt_at", BigInteger),
    Column("response_status", Integer),
    Column("last_error", Text),
    Column("delivered_at", BigInteger),
    Index("ix_webhook_deliveries_status", "status", "next_attempt_at"),
)

reconciliation_runs = Table(
    "reconciliation_runs",
    metadata,
    # One reconciliation with a provider's report (ledger/reconciler.py): its whole answer as
    # JSON, or why it failed. Never the admin key: only the provider's name.
    Column("id", String(64), primary_key=True),
    Column("provider", String(100), nullable=False),
    Column("created_at", BigInteger, nullable=False),  # µs
    Column("start_day", String(10), nullable=False),
    Column("end_day", String(10), nullable=False),  # exclusive
    Column("status", String(20), nullable=False),  # match, within_tolerance, mismatch, error
    Column("result", Text),
    Column("error", Text),
    Index("ix_reconciliation_runs_provider", "provider", "created_at"),
)
