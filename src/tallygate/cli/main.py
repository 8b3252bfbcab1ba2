"""``tallygate``: global options and the command groups."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tallygate import __version__
from tallygate.cli import anomalies, audit, data, db, keys, pricing, reconcile, serve, usage
from tallygate.cli.context import CONFIG_HELP, CliState, console
from tallygate.config import settings_reference
from tallygate.redact import redact_logs, redact_values

app = typer.Typer(
    name="tallygate",
    help="OpenAI-compatible LLM API gateway with an exact usage ledger.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(usage.app, name="usage")
app.add_typer(db.app, name="db")
app.add_typer(keys.app, name="keys")
app.add_typer(pricing.app, name="pricing")
app.add_typer(anomalies.app, name="anomalies")
app.command("import")(data.import_records)
app.command("export")(data.export_records)
app.command("audit")(audit.audit)
app.command("reconcile")(reconcile.reconcile)
app.command("serve")(serve.serve)
app.command("demo")(serve.demo)
app.command("fake-upstream")(serve.fake_upstream)

config_app = typer.Typer(help="Settings.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("docs")
def config_docs() -> None:
    """Print the reference of every setting (docs/configuration.md is this output)."""
    print(settings_reference(), end="")  # noqa: T201 - the command's output


@config_app.command("cli-docs")
def cli_docs() -> None:
    """Print the command-line reference (docs/cli.md is this output)."""
    from tallygate.cli.reference import cli_reference

    print(cli_reference(app), end="")  # noqa: T201 - the command's output


@config_app.command("show")
def config_show(ctx: typer.Context) -> None:
    """Print the settings in force (the admin token, the webhook secret and every password in
    a URL hidden)."""
    from tallygate.cli.context import state

    settings = state(ctx).settings()
    console.print_json(data=redact_values(settings.model_dump(
        mode="json", exclude={"admin_token", "anomaly_webhook_secret"})))


@app.callback()
def _options(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option(
        "--config", envvar="TALLYGATE_CONFIG", help=CONFIG_HELP,
        exists=True, dir_okay=False)] = None,
    database_url: Annotated[str | None, typer.Option(
        "--database-url", help="Overrides TALLYGATE_DATABASE_URL and the config file.")] = None,
    version: Annotated[bool, typer.Option("--version", help="Print the version.")] = False,
) -> None:
    if version:
        console.print(__version__)
        raise typer.Exit()
    redact_logs()
    ctx.obj = CliState(config, database_url)
    ctx.call_on_close(ctx.obj.close)


def main() -> None:
    app()
