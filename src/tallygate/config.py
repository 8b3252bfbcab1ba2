"""Settings, declared once.

Every setting is a field of :class:`Settings`. The same declaration feeds the loader
(environment with the ``TALLYGATE_`` prefix, then an optional TOML file, then command-line
flags, in increasing precedence), ``tallygate config`` and ``docs/configuration.md``, which a
test regenerates and compares.
"""

from __future__ import annotations

import ipaddress
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from tallygate.domain.categories import MODEL_CATEGORIES, UNITS
from tallygate.domain.paths import RESERVED_PATHS


class ConfigError(ValueError):
    """A setting or the config file is wrong; the message names what and where."""


class RoutePrice(BaseModel):
    """Prices of one route, per million tokens (and per call, for services)."""

    model_config = {"extra": "forbid"}

    input_per_million: Decimal = Decimal(0)
    cached_input_per_million: Decimal | None = None
    output_per_million: Decimal = Decimal(0)
    per_call: Decimal = Decimal(0)
    currency: str | None = None  # None: the ledger's; any other must equal it
    cache_write_per_million: Decimal | None = None  # None: the input price
    per_unit: Decimal = Decimal(0)  # each of a call's units (images, seconds, pages, ...)

    @field_validator("input_per_million", "cached_input_per_million", "output_per_million",
                     "per_call", "cache_write_per_million", "per_unit")
    @classmethod
    def _non_negative(cls, value: Decimal | None) -> Decimal | None:
        if value is not None and (not value.is_finite() or value < 0):
            raise ValueError("must be a non-negative decimal")
        return value


class Route(BaseModel):
    """One public model name and the upstream that serves it."""

    model_config = {"extra": "forbid"}

    model: str = Field(min_length=1, max_length=200)
    base_url: str = Field(pattern=r"^https?://")
    api_key_env: str | None = None
    upstream_model: str | None = None
    kind: Literal["model", "service"] = "model"
    category: str | None = None
    price: RoutePrice | None = None
    # "anthropic": the route serves POST /v1/messages (Anthropic's Messages API).
    protocol: Literal["openai", "anthropic"] = "openai"
    # A custom service endpoint (kind = "service"): the path under /v1/ it is served at,
    # what one call is billed by, and where in the answer the count is (a JSON pointer);
    # without units_from, one unit per call.
    path: str | None = Field(None, pattern=r"^/v1/[A-Za-z0-9._~!$&'()*+,;=:@/-]+$",
                             max_length=200)
    unit: Literal[UNITS] | None = None  # type: ignore[valid-type]
    units_from: str | None = Field(None, pattern=r"^(/[^/]*)*$", max_length=200)
    # The [[providers]] entry that bills this route's calls (reconciliation, §13).
    provider: str | None = Field(None, min_length=1, max_length=100)

    @field_validator("category")
    @classmethod
    def _known_category(cls, value: str | None) -> str | None:
        if value is not None and value not in MODEL_CATEGORIES:
            raise ValueError(f"must be one of {', '.join(MODEL_CATEGORIES)}")
        return value

    @model_validator(mode="after")
    def _service_path(self) -> Route:
        if self.path is not None:
            if self.kind != "service":
                raise ValueError('path: only a route with kind = "service" is served at a '
                                 "path of its own")
            if self.path in RESERVED_PATHS:
                raise ValueError(f"path: {self.path} is one of the gateway's own endpoints")
        if self.units_from is not None:
            if self.path is None:
                raise ValueError("units_from: only a route with a path (a custom service) "
                                 "reads its units from the answer")
            if self.unit is None:
                raise ValueError("unit: required with units_from (what the count counts)")
        return self


# Where each kind of provider's admin API is, unless a [[providers]] entry says otherwise.
PROVIDER_BASE_URLS = {"openai": "https://api.openai.com/v1",
                      "anthropic": "https://api.anthropic.com/v1"}


class Provider(BaseModel):
    """A model provider account whose own usage and cost reports the ledger is reconciled
    with (docs/reconciliation.md). Its admin key is read from ``admin_key_env`` each time a
    report is fetched: never stored, logged or shown."""

    model_config = {"extra": "forbid"}

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._-]+$")
    kind: Literal["openai", "anthropic"]
    base_url: str = Field("", pattern=r"^(https?://.*)?$")  # "": the kind's default
    admin_key_env: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    api_key_ids: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _default_base_url(self) -> Provider:
        if not self.base_url:
            self.base_url = PROVIDER_BASE_URLS[self.kind]
        self.base_url = self.base_url.rstrip("/")
        return self


ADMIN_TOKEN_MIN_LENGTH = 16


class Settings(BaseSettings):
    """All of tallygate's settings. The description of each field is its documentation."""

    model_config = SettingsConfigDict(env_prefix="TALLYGATE_", extra="forbid")

    database_url: str = Field(
        "sqlite:///./tallygate.db",
        description="Where the ledger lives: `sqlite:///path/to/file.db` or "
        "`postgresql://user@host:5432/db`.",
    )
    redis_url: str | None = Field(
        None,
        description="Redis for rate-limit and quota counters shared by several gateway "
        "processes, e.g. `redis://127.0.0.1:6379/0`. Required for more than one worker.",
    )
    admin_token: SecretStr | None = Field(
        None,
        description=f"The admin credential: at least {ADMIN_TOKEN_MIN_LENGTH} characters, no "
        "spaces. When unset, `serve` generates one on first start, stores only its hash and "
        "prints it once.",
    )
    host: str = Field("127.0.0.1", description="Address `serve` listens on.")
    port: int = Field(8000, ge=1, le=65535, description="Port `serve` listens on.")
    workers: int = Field(1, ge=1, le=64, description="Gateway worker processes for `serve`.")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Log level of the server."
    )
    access_log: bool = Field(
        False, description="Log every HTTP request (costs throughput; the ledger already "
        "records every gateway call)."
    )
    trusted_proxies: str = Field(
        "", description="Comma-separated addresses or networks (`10.0.0.0/8`) of the reverse "
        "proxies in front of `serve`, whose `X-Forwarded-For` and `X-Forwarded-Proto` are "
        "believed. Empty: none, the connecting address is the client (keys' `allowed_ips`, the "
        "sign-in brake and the Secure cookie all depend on it).",
    )
    currency: str = Field(
        "USD", min_length=3, max_length=3,
        description="Currency of every amount in the ledger; prices must be given in it.",
    )
    raw_retention_days: int = Field(
        0, ge=0,
        description="Days raw call records are kept (0 = for ever). Rollups are kept for ever.",
    )
    minute_retention_days: int = Field(
        7, ge=1, le=90,
        description="Days per-minute rollups are kept (peak RPM/TPM, minute charts).",
    )
    percentile_max_calls: int = Field(
        250_000, ge=0,
        description="Most calls with a latency a breakdown's range may hold for its exact "
        "p50/p95 latency and time to first token (sorted from raw records: seconds of CPU "
        "per million calls); "
        "above it they are not computed and the answer says so.",
    )
    durability: Literal["batched", "strict"] = Field(
        "batched",
        description="`batched`: records are written in batches every `flush_interval_ms` "
        "(SIGKILL may lose the last window). `strict`: a record is committed before its "
        "response completes (to the database, or to the spool while the database is away).",
    )
    flush_interval_ms: int = Field(
        50, ge=1, le=5000, description="Longest wait before recorded calls are written."
    )
    flush_max_records: int = Field(
        2000, ge=1, le=100_000, description="Most records written in one batch."
    )
    refusal_records_per_minute: int = Field(
        10, ge=0, le=100_000,
        description="Refused calls (403, 429, 503) of one key recorded one by one per minute; "
        "the rest of that minute's are counted and written as one record per kind of refusal "
        "(model, endpoint, status) whose `repeats` says how many calls it stands for, so "
        "every count stays exact while a flood cannot fill the database (docs/gateway.md).",
    )
    spool_dir: str | None = Field(
        None,
        description="Where call records wait on local disk (append-only NDJSON, fsync'd) while "
        "the database cannot take them; they are replayed, in order and once, when it answers "
        "again. Unset: `tallygate-spool` beside a SQLite file, else in the working directory. "
        "Each database gets its own subdirectory (docs/operations.md).",
    )
    redis_failure: Literal["open", "closed"] = Field(
        "open",
        description="What the gateway does with a key that has limits when Redis cannot be "
        "reached: `open` lets the call through unchecked (and logs it), `closed` answers 503 "
        "`limits_unavailable`. Keys without limits are never affected.",
    )
    upstream_timeout_s: float = Field(
        600, gt=0, le=3600,
        description="Longest wait for an upstream's answer, or between two chunks of a stream "
        "(504 after it).",
    )
    upstream_connect_timeout_s: float = Field(
        10, gt=0, le=300, description="Longest wait to connect to an upstream (502 after it)."
    )
    drain_timeout_s: float = Field(
        30, ge=0, le=3600,
        description="How long the gateway keeps reading a stream after its client left, for "
        "the upstream's usage (the bill does not depend on the client); after it the tokens "
        "are estimated (docs/gateway.md).",
    )
    drain_max_bytes: int = Field(
        4 * 1024 * 1024, ge=0, le=1024 * 1024 * 1024,
        description="Most bytes the gateway reads of a stream after its client left, looking "
        "for the upstream's usage; past it the tokens are estimated (docs/gateway.md).",
    )
    upstream_max_connections: int = Field(
        2000, ge=1, le=100_000,
        description="Most connections open to the upstreams at once, over every route and "
        "key (one pool).",
    )
    upstream_pool_wait_s: float = Field(
        5, gt=0, le=600,
        description="Longest wait for a free connection when all `upstream_max_connections` "
        "are in use; after it the call is answered 503 `upstream_busy` with `Retry-After` "
        "and recorded.",
    )
    client_idle_timeout_s: float = Field(
        60, gt=0, le=3600,
        description="Longest a client may pause while sending its request body (408, and "
        "nothing goes upstream) or take to accept one piece of a streamed answer (the "
        "client is taken as gone: the stream is settled as for a client that left).",
    )
    sse_max_event_bytes: int = Field(
        1024 * 1024, ge=1024, le=256 * 1024 * 1024,
        description="Longest event an upstream's stream may send; a longer one (or one that "
        "never ends) cuts the stream as a broken upstream: the client gets an error event, "
        "the record says 502 and keeps the usage seen so far.",
    )
    concurrency_lease_s: float = Field(
        900, gt=0, le=86_400,
        description="How long a call may hold one of its key's `max_concurrency` slots: a "
        "slot a crashed process never gave back frees after it (a call running longer "
        "stops counting against the limit).",
    )
    key_cache_seconds: float = Field(
        2, ge=0, le=300,
        description="How long a gateway process trusts a key it looked up; changes made through "
        "another process are seen within this time.",
    )
    unknown_key_lookups_per_second: float = Field(
        50, ge=0, le=100_000,
        description="Database look-ups of API keys never seen that one client address may "
        "cause per second (bursts of twice that); past it the gateway answers 429 "
        "`too_many_unknown_keys` without a look-up, so a flood of made-up keys cannot slow "
        "the real ones. Known keys never count against it. 0: no limit.",
    )
    ingest_max_events: int = Field(
        10_000, ge=1, le=100_000,
        description="Most events accepted in one `POST /api/v1/usage/events` body (413 above).",
    )
    anomaly_threshold: float = Field(
        5.0, gt=0, le=100,
        description="How far (in robust standard deviations of log volume) an hour or a day "
        "must lie above its baseline to be a spike; lower finds more, and more false alarms "
        "(docs/anomalies.md).",
    )
    anomaly_hour_seasonality: Literal["daily", "weekly", "none"] = Field(
        "daily",
        description="What an hour is compared with: the same hour of the last 14 days "
        "(`daily`), the same hour and weekday of the last 4 weeks (`weekly`), or the 48 hours "
        "before it (`none`).",
    )
    anomaly_webhook_url: str | None = Field(
        None, pattern=r"^https?://",
        description="Where new anomalies are POSTed as JSON (unset: no webhook). Retried with "
        "back-off; every attempt is in the delivery log.",
    )
    anomaly_webhook_secret: SecretStr | None = Field(
        None,
        description="Key of the HMAC-SHA256 signature in `X-Tallygate-Signature` on every "
        "webhook body (docs/anomalies.md); unset: bodies are not signed.",
    )
    anomaly_check_interval_s: float = Field(
        300, ge=1, le=86400,
        description="How often a server process looks for new anomalies to send to the "
        "webhook.",
    )
    metrics_per_key: bool = Field(
        False,
        description="Label `/metrics` series with the API key id too (one series per key and "
        "model: mind the cardinality with many keys).",
    )
    metrics_public: bool = Field(
        False,
        description="Serve `/metrics` without the admin token (for a scraper on a trusted "
        "network); by default it needs `Authorization: Bearer <admin token>`.",
    )
    reconcile_tolerance: Decimal = Field(
        Decimal(0), ge=0, le=1,
        description="How far a provider's figure may lie from the ledger's and still count as "
        "`within_tolerance` in a reconciliation: a fraction of the larger of the two (0.01 = "
        "1 %). 0: only equal figures agree (docs/reconciliation.md).",
    )
    reconcile_interval_s: float = Field(
        0, ge=0, le=7 * 86400,
        description="How often a server process reconciles every `[[providers]]` entry with "
        "its provider's reports and stores the result (shown on the page; a mismatch goes to "
        "the anomaly webhook). 0: never, only on demand.",
    )
    reconcile_days: int = Field(
        30, ge=1, le=366,
        description="How many whole UTC days (before today) a scheduled reconciliation "
        "covers.",
    )
    providers: list[Provider] = Field(
        default_factory=list,
        description="Provider accounts to reconcile with (`[[providers]]` tables in the TOML "
        "file; see docs/reconciliation.md).",
    )
    routes: list[Route] = Field(
        default_factory=list,
        description="Public model names and their upstreams (`[[routes]]` tables in the TOML "
        "file; see the README).",
    )

    @field_validator("admin_token")
    @classmethod
    def _strong_admin_token(cls, value: SecretStr | None) -> SecretStr | None:
        # An empty TALLYGATE_ADMIN_TOKEN= in a compose file must not become a credential
        # anyone can type; the message never repeats the value.
        if value is None:
            return None
        token = value.get_secret_value()
        if len(token) < ADMIN_TOKEN_MIN_LENGTH or any(c.isspace() for c in token):
            raise ValueError(f"must be at least {ADMIN_TOKEN_MIN_LENGTH} characters without "
                             "spaces (unset it and `serve` generates one)")
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxy_networks(cls, value: str) -> str:
        """Each entry as uvicorn reads it: an address, or a network without host bits
        (uvicorn would quietly match nothing for ``10.1.2.3/8``; it means ``10.0.0.0/8``)."""
        entries = []
        for entry in (part.strip() for part in value.split(",")):
            if not entry:
                continue
            try:
                entries.append(str(ipaddress.ip_network(entry, strict=False)) if "/" in entry
                               else str(ipaddress.ip_address(entry)))
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or network") from None
        return ",".join(entries)

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if not self.database_url.startswith(("sqlite://", "postgresql://",
                                             "postgresql+psycopg://")):
            raise ValueError("database_url must start with sqlite:// or postgresql://")
        providers: set[str] = set()
        for index, provider in enumerate(self.providers):
            if provider.name in providers:
                raise ValueError(f"providers[{index}]: name {provider.name!r} is declared twice")
            providers.add(provider.name)
        seen: set[str] = set()
        paths: set[str] = set()
        for index, route in enumerate(self.routes):
            if route.provider is not None and route.provider not in providers:
                raise ValueError(f"routes[{index}] (model {route.model!r}): provider: "
                                 f"{route.provider!r} names no [[providers]] entry")
            if route.model in seen:
                raise ValueError(f"routes: model {route.model!r} is declared twice")
            seen.add(route.model)
            if route.path is not None:
                if route.path in paths:
                    raise ValueError(f"routes[{index}] (model {route.model!r}): path "
                                     f"{route.path} is served by another route")
                paths.add(route.path)
            if route.price is not None and route.price.currency not in (None, self.currency):
                # A price in another currency would be added to the ledger's amounts as is.
                raise ValueError(
                    f"routes[{index}] (model {route.model!r}): price.currency: the "
                    f"ledger counts in {self.currency} (the currency setting), not "
                    f"{route.price.currency}")
        return self

    def route_for(self, model: str) -> Route | None:
        return next((route for route in self.routes if route.model == model), None)

    def provider_named(self, name: str) -> Provider | None:
        return next((p for p in self.providers if p.name == name), None)


def load_settings(config_file: Path | None = None, **flags: Any) -> Settings:
    """Environment < TOML file < flags. Flags that are ``None`` were not given."""
    file_values: dict[str, Any] = {}
    if config_file is not None:
        try:
            file_values = tomllib.loads(config_file.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read config file {config_file}: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {config_file} is not valid TOML: {exc}") from exc
    given = {name: value for name, value in flags.items() if value is not None}
    source = f" (from {config_file})" if config_file else ""
    # "from None": a chained error would print the values given (a secret, maybe) with it.
    try:
        return Settings(**(file_values | given))
    except ValidationError as exc:
        raise ConfigError(f"invalid settings{source}: {_without_values(exc)}") from None
    except SettingsError as exc:  # an environment value that is not the JSON it must be
        raise ConfigError(f"invalid settings{source}: {exc}") from None


def _without_values(exc: ValidationError) -> str:
    """Each error's setting and reason, never the value given: it may be a secret."""
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or 'settings'}: {error['msg']}"
        for error in exc.errors(include_url=False, include_input=False))


def settings_reference() -> str:
    """The Markdown reference of every setting, generated from :class:`Settings`."""
    lines = [
        "# Configuration",
        "",
        "Generated by `tallygate config docs` from the settings declaration; do not edit.",
        "",
        "Settings come from the environment (`TALLYGATE_` + the name in upper case), an",
        "optional TOML file (`--config FILE` or `TALLYGATE_CONFIG=FILE`, keys as below) and",
        "command-line flags, in that order of increasing precedence.",
        "",
        "| setting | environment | default | description |",
        "| --- | --- | --- | --- |",
    ]
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        shown = "(none)" if default in (None, []) else f"`{default}`"
        env = (f"`TALLYGATE_{name.upper()}`" if name not in ("routes", "providers")
               else "TOML only")
        lines.append(f"| `{name}` | {env} | {shown} | {field.description} |")
    return "\n".join(lines) + "\n"
