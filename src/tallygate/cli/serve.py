"""``tallygate serve`` and ``tallygate demo``."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
import uvicorn
from rich.panel import Panel
from rich.progress import BarColumn, Progress, TimeElapsedColumn

from tallygate.app import ADMIN_HASH, WORKER_DATABASE_URL, create_app
from tallygate.cli.context import CommandConfig, console, fail, state, use_command_config
from tallygate.config import Settings
from tallygate.keys.secrets import ADMIN_PREFIX, hash_secret, new_secret
from tallygate.store.database import Database
from tallygate.store.meta import set_value_if_absent

Host = Annotated[str | None, typer.Option(help="Address to listen on.")]
Port = Annotated[int | None, typer.Option(help="Port to listen on.")]


def first_admin_token(settings: Settings, db: Database) -> str | None:
    """On the first start without TALLYGATE_ADMIN_TOKEN, make one; store only its hash."""
    if settings.admin_token is not None:
        return None
    token = new_secret(ADMIN_PREFIX)
    return token if set_value_if_absent(db, ADMIN_HASH, hash_secret(token)) else None


def serve(ctx: typer.Context, host: Host = None, port: Port = None,
          workers: Annotated[int | None, typer.Option(help="Worker processes.")] = None,
          config: CommandConfig = None) -> None:
    """Run the server: gateway, API and pages."""
    use_command_config(ctx, config)
    cli = state(ctx)
    settings = cli.settings(host=host, port=port, workers=workers)
    if settings.workers > 1 and not settings.redis_url:
        fail("more than one worker needs TALLYGATE_REDIS_URL: without shared counters every "
             "worker would enforce each key's limits on its own, multiplying them")
    ledger = cli.ledger(settings)
    token = first_admin_token(settings, ledger.db)
    ledger.db.dispose()
    if token:
        console.print(Panel(f"[bold]{token}[/bold]\nUse it as `Authorization: Bearer …` on "
                            "/api/v1. It is shown only now; only its hash is stored.",
                            title="admin token", expand=False))
    _run(settings, cli.config_file)


def _run(settings: Settings, config_file: Path | None = None) -> None:
    # Forwarded headers are believed only from the configured proxies: uvicorn's own default
    # would trust any local process to claim any client address.
    server: dict[str, Any] = {
        "host": settings.host, "port": settings.port, "log_level": settings.log_level,
        "access_log": settings.access_log, "proxy_headers": bool(settings.trusted_proxies),
        "forwarded_allow_ips": settings.trusted_proxies or None}
    if settings.workers == 1:
        uvicorn.run(create_app(settings), **server)
        return
    # Worker processes rebuild the settings from the environment and the same TOML file;
    # the database this command resolved (a --database-url flag beats the file) is passed
    # as what it was here: a flag.
    os.environ[WORKER_DATABASE_URL] = settings.database_url
    if config_file is not None:
        os.environ["TALLYGATE_CONFIG"] = str(config_file.resolve())
    uvicorn.run("tallygate.app:app_from_environment", factory=True, workers=settings.workers,
                **server)


def demo(ctx: typer.Context, host: Host = None, port: Port = None,
         days: Annotated[int, typer.Option(min=1, max=400, help="Days of history.")] = 60,
         database: Annotated[Path, typer.Option(
             help="SQLite file for the demo (recreated on every run).")] = Path(
             "tallygate-demo.db"),
         upstream_port: Annotated[int, typer.Option(
             help="Port of the built-in fake upstream.")] = 9000,
         seed_only: Annotated[bool, typer.Option(help="Seed, print, and exit.")] = False) -> None:
    """Seed a demo ledger (realistic traffic, keys, prices) and serve it, with a built-in fake
    upstream so the demo key works offline."""
    from tallygate.demo import reconciliation as demo_account
    from tallygate.demo.routes import gateway_routes
    from tallygate.demo.seed import seed_demo
    from tallygate.domain.records import now_us
    from tallygate.fake_upstream.provider_reports import FakeProviderReports
    from tallygate.keys.service import KeyService

    for suffix in ("", "-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    cli = state(ctx)
    cli.database_url = f"sqlite:///{database.resolve()}"
    admin_token = new_secret(ADMIN_PREFIX)
    upstream_url = f"http://127.0.0.1:{upstream_port}/v1"
    # The demo's provider account, served by the fake upstream: its admin key lives in this
    # process's environment only, as a real one would.
    reports = FakeProviderReports(admin_key=demo_account.new_admin_key())
    os.environ[demo_account.KEY_ENV] = reports.admin_key
    settings = cli.settings(host=host, port=port, admin_token=admin_token,
                            **demo_account.with_the_demo_provider(
                                gateway_routes(upstream_url), upstream_url))
    ledger = cli.ledger(settings, migrate=True)
    started = time.perf_counter()
    with Progress("[progress.description]{task.description}", BarColumn(),
                  TimeElapsedColumn(), console=console, transient=True) as bar:
        task = bar.add_task("seeding the demo ledger", total=days)
        seeded = seed_demo(ledger, KeyService(ledger.db), now_us=now_us(), days=days,
                           progress=lambda done, total: bar.update(task, completed=done,
                                                                   total=total))
    planted = demo_account.bill_the_seeded_calls(ledger, reports, days)
    ledger.db.dispose()
    url = f"http://{settings.host}:{settings.port}"
    console.print(Panel(
        f"{seeded.records:,} calls over {days} days in {database} "
        f"(seeded in {time.perf_counter() - started:.1f} s)\n\n"
        f"URL            {url}/\n"
        f"API docs       {url}/docs\n"
        f"admin token    {admin_token}\n"
        f"demo key       {seeded.demo_key}\n"
        f"fake upstream  {upstream_url}",
        title="tallygate demo", expand=False), highlight=False)
    console.print("Try:", style="bold")
    for line in (
        f"curl -H 'Authorization: Bearer {admin_token}' '{url}/api/v1/usage/summary?period=7d'",
        f"curl {url}/v1/chat/completions -H 'Authorization: Bearer {seeded.demo_key}' "
        "-H 'Content-Type: application/json' -d '{\"model\": \"cltech/deepseek-r1-32b\", "
        "\"messages\": [{\"role\": \"user\", \"content\": \"hello\"}]}'",
        f"curl {url}/v1/messages -H 'x-api-key: {seeded.demo_key}' "
        "-H 'Content-Type: application/json' -d '{\"model\": \"claude-sonnet-4-5\", "
        "\"max_tokens\": 256, \"messages\": [{\"role\": \"user\", \"content\": \"hello\"}]}'",
        f"curl {url}/v1/ocr -H 'Authorization: Bearer {seeded.demo_key}' "
        "-H 'Content-Type: application/json' -d '{\"document\": {\"type\": \"image_url\", "
        "\"image_url\": \"https://example.com/receipt.png\"}}'",
    ):
        console.print(f"  {line}", highlight=False, soft_wrap=True)
    if seed_only:
        return
    with _background_fake_upstream(upstream_port, reports):
        _first_reconciliation(ledger, settings, days, planted)
        _run(settings)


def _first_reconciliation(ledger: Any, settings: Settings, days: int, planted: Any) -> None:
    """Reconcile the demo's provider account once, so the page shows a result at once."""
    import asyncio

    from tallygate.demo.reconciliation import PROVIDER
    from tallygate.ledger.reconciler import run_reconciliation
    from tallygate.providers import ProviderError

    try:
        result = asyncio.run(run_reconciliation(ledger, settings, PROVIDER,
                                                f"{min(days, 30)}d"))
    except ProviderError as exc:
        console.print(f"reconciliation: {exc}", highlight=False)
        return
    finally:
        ledger.db.dispose()
    differing = sum(n for status, n in result["counts"].items()
                    if status not in ("match", "within_tolerance"))
    console.print(f"Reconciliation with {PROVIDER} (the fake upstream's Anthropic reports): "
                  f"{differing} day(s) differ, planted on {planted} (cache reads billed as "
                  "input); see the Reconciliation view of the page.", highlight=False)


@contextlib.contextmanager
def _background_fake_upstream(port: int, reports: Any = None) -> Iterator[None]:
    """The fake upstream (and the demo's provider reports) on its own event loop in a
    thread, for the demo."""
    from tallygate.fake_upstream import FakeSettings, FakeUpstream

    server = uvicorn.Server(uvicorn.Config(
        FakeUpstream(FakeSettings(latency_ms=150, chunks=16, chunk_delay_ms=30), reports),
        host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True, name="fake-upstream")
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=5)


def fake_upstream(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 9000,
    latency_ms: Annotated[float, typer.Option(
        help="Wait before the answer or the first chunk.")] = 0.0,
    chunks: Annotated[int, typer.Option(min=1, help="Content chunks per stream.")] = 8,
    chunk_delay_ms: Annotated[float, typer.Option(help="Wait between chunks.")] = 0.0,
    error_rate: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="Share of requests answered 500.")] = 0.0,
    no_usage: Annotated[bool, typer.Option(
        "--no-usage", help="Never report usage (like some providers).")] = False,
    seed: int = 0,
) -> None:
    """An upstream for every endpoint the gateway serves (OpenAI's, Anthropic's Messages,
    rerank, audio, images, moderations, a custom OCR service), with the Azure trace's token
    counts, for the demo, tests and benchmarks."""
    from tallygate.fake_upstream import FakeSettings, FakeUpstream

    upstream = FakeUpstream(FakeSettings(latency_ms, chunks, chunk_delay_ms, error_rate,
                                         not no_usage, seed))
    console.print(f"fake upstream on http://{host}:{port}/v1")
    uvicorn.run(upstream, host=host, port=port, log_level="warning", access_log=False)
