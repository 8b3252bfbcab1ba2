"""``tallygate keys create|update|list|disable|enable|rotate|delete``."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.table import Table

from tallygate.cli.context import console, fail, state
from tallygate.keys.schemas import KeyCreate, KeyOut, KeyUpdate
from tallygate.keys.service import KeyNotFound

app = typer.Typer(help="API keys.", no_args_is_help=True)
ACTOR = "cli"


@app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Option(help="A name people recognise.")],
    internal: Annotated[bool, typer.Option(help="The platform's own infrastructure.")] = False,
    owner: str | None = None,
    tag: Annotated[list[str] | None, typer.Option(help="Tag (repeatable).")] = None,
    expires_at: Annotated[datetime | None, typer.Option(
        help="Expiry, e.g. 2027-01-01T00:00:00+00:00")] = None,
    allowed_model: Annotated[list[str] | None, typer.Option(
        help="Only these models (repeatable; default all).")] = None,
    allowed_ip: Annotated[list[str] | None, typer.Option(
        help="Only from these IPs or CIDR networks (repeatable).")] = None,
    rpm_limit: int | None = None,
    tpm_limit: int | None = None,
    quota_tokens: int | None = None,
    budget: Annotated[str | None, typer.Option(help="Cost budget, a decimal.")] = None,
    quota_period: Annotated[str, typer.Option(help="total, daily or monthly")] = "total",
    max_concurrency: Annotated[int | None, typer.Option(
        help="Most calls in flight at once (429 above it).")] = None,
) -> None:
    """Create a key. Its secret is printed once: store it now."""
    try:
        fields = KeyCreate(
            name=name, internal=internal, owner=owner, tags=tag, expires_at=expires_at,
            allowed_models=allowed_model, allowed_ips=allowed_ip, rpm_limit=rpm_limit,
            tpm_limit=tpm_limit, quota_tokens=quota_tokens,
            budget=None if budget is None else Decimal(budget),
            quota_period=quota_period, max_concurrency=max_concurrency,
        )
    except (ValidationError, ArithmeticError) as exc:
        fail(_first_problem(exc))
    created = state(ctx).keys().create(fields, ACTOR)
    console.print(f"created key {created.id} ({created.name})")
    console.print("secret (shown only now):", style="bold")
    print(created.key)  # noqa: T201 - plain, so scripts can capture it


# Limits ``keys update`` can set or clear (``--clear``), by field name.
_UPDATABLE_LIMITS = ("rpm_limit", "tpm_limit", "quota_tokens", "max_concurrency")


@app.command("update")
def update(
    ctx: typer.Context,
    key_id: str,
    name: str | None = None,
    rpm_limit: int | None = None,
    tpm_limit: int | None = None,
    quota_tokens: int | None = None,
    max_concurrency: Annotated[int | None, typer.Option(
        help="Most calls in flight at once (429 above it).")] = None,
    clear: Annotated[list[str] | None, typer.Option(
        help=f"Remove a limit (repeatable): {', '.join(_UPDATABLE_LIMITS)}.")] = None,
) -> None:
    """Change a key's name or limits; options not given stay as they are."""
    given = {"name": name, "rpm_limit": rpm_limit, "tpm_limit": tpm_limit,
             "quota_tokens": quota_tokens, "max_concurrency": max_concurrency}
    change: dict[str, object] = {k: v for k, v in given.items() if v is not None}
    for field in clear or []:
        if field not in _UPDATABLE_LIMITS:
            fail(f"--clear: one of {', '.join(_UPDATABLE_LIMITS)}, not {field!r}")
        change[field] = None
    try:
        fields = KeyUpdate.model_validate(change)
    except ValidationError as exc:
        fail(_first_problem(exc))
    try:
        key = state(ctx).keys().update(key_id, fields, ACTOR)
    except KeyNotFound:
        fail(f"no API key with id {key_id!r}")
    console.print(f"updated key {key.id} ({key.name})")


# Fields whose option has another name (one value per option, repeated for a list).
_OPTION_OF = {"tags": "--tag", "allowed_models": "--allowed-model",
              "allowed_ips": "--allowed-ip"}


def _first_problem(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        error = exc.errors(include_url=False)[0]
        field = str(error["loc"][0]) if error["loc"] else "name"
        option = _OPTION_OF.get(field, f"--{field.replace('_', '-')}")
        return f"{option}: {error['msg'].removeprefix('Value error, ')}"
    return "--budget: not a decimal number"


@app.command("list")
def list_keys(ctx: typer.Context) -> None:
    """Every key, with its prefix (never its secret)."""
    keys = state(ctx).keys().list()
    table = Table(title=f"{len(keys)} API keys")
    # The id is what every other keys command takes: never cut it, however narrow.
    table.add_column("id", no_wrap=True, min_width=max((len(k.id) for k in keys), default=2))
    for column in ("name", "prefix", "status", "internal", "rpm", "concurrency", "quota",
                   "budget", "expires"):
        table.add_column(column)
    for key in keys:
        table.add_row(key.id, key.name, key.prefix + "…", _status(key),
                      "yes" if key.internal else "", _opt(key.rpm_limit),
                      _opt(key.max_concurrency), _opt(key.quota_tokens, key.quota_period),
                      _opt(key.budget, key.quota_period),
                      "" if key.expires_at is None else key.expires_at.isoformat())
    console.print(table)


def _status(key: KeyOut) -> str:
    colour = {"active": "green", "disabled": "red", "expired": "yellow"}[key.status]
    return f"[{colour}]{key.status}[/{colour}]"


def _opt(value: object, period: str | None = None) -> str:
    if value is None:
        return ""
    return f"{value}/{period}" if period and period != "total" else str(value)


def _change_status(ctx: typer.Context, key_id: str, status: str) -> None:
    try:
        key = state(ctx).keys().set_status(key_id, status, ACTOR)
    except KeyNotFound:
        fail(f"no API key with id {key_id!r}")
    console.print(f"key {key.id} ({key.name}) is {key.status}")


@app.command("disable")
def disable(ctx: typer.Context, key_id: str) -> None:
    """Refuse every further call with this key."""
    _change_status(ctx, key_id, "disabled")


@app.command("enable")
def enable(ctx: typer.Context, key_id: str) -> None:
    """Accept calls with this key again."""
    _change_status(ctx, key_id, "active")


@app.command("rotate")
def rotate(ctx: typer.Context, key_id: str) -> None:
    """Replace the secret (limits and history stay); the new one is printed once."""
    try:
        created = state(ctx).keys().rotate(key_id, ACTOR)
    except KeyNotFound:
        fail(f"no API key with id {key_id!r}")
    console.print(f"rotated key {created.id}; new secret (shown only now):", style="bold")
    print(created.key)  # noqa: T201


@app.command("delete")
def delete(ctx: typer.Context, key_id: str,
           yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False) -> None:
    """Delete a key (its usage records stay in the ledger)."""
    if not yes:
        typer.confirm(f"Delete key {key_id}?", abort=True)
    try:
        state(ctx).keys().delete(key_id, ACTOR)
    except KeyNotFound:
        fail(f"no API key with id {key_id!r}")
    console.print(f"deleted key {key_id}")
