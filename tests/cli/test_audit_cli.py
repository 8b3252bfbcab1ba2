"""``tallygate audit``: the API's entries for the same filters, a table, and its refusals."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tallygate.store.database import Database
from tests.api.support import running_app
from tests.cli.conftest import Run


def test_json_output_equals_the_api_and_pages_continue(db: Database, cli: Run,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "160")  # the table's rows on one line each
    with running_app(db) as api:
        created = cli("keys", "create", "--name", "audited by cli")
        assert created.exit_code == 0, created.output
        key_id = created.stdout.split()[2]
        assert cli("keys", "disable", key_id).exit_code == 0
        other = api.create_key(name="made by the admin")
        assert cli("keys", "rotate", other["id"]).exit_code == 0

        cases: list[tuple[list[str], dict[str, Any]]] = [
            ([], {}),
            (["--actor", "cli"], {"actor": "cli"}),
            (["--action", "key.create", "--action", "key.rotate"],
             {"action": ["key.create", "key.rotate"]}),
            (["--key", key_id], {"api_key_id": key_id}),
            (["--start", "2000-01-01", "--end", "2000-01-02"],
             {"start": "2000-01-01", "end": "2000-01-02"}),
            (["--limit", "2"], {"limit": 2}),
        ]
        for options, params in cases:
            result = cli("audit", *options, "--json")
            assert result.exit_code == 0, result.output
            assert json.loads(result.stdout) == api.ok("/api/v1/audit", params), options

        by_key = json.loads(cli("audit", "--key", key_id, "--json").stdout)["data"]
        assert [(e["actor"], e["action"], e["details"]) for e in by_key] == [
            ("cli", "key.update", {"status": "disabled"}),
            ("cli", "key.create", {"internal": False, "name": "audited by cli"})]

        # --cursor continues where a page ended, exactly as the API's cursor does.
        first = json.loads(cli("audit", "--limit", "3", "--json").stdout)
        assert first["has_more"]
        rest = json.loads(cli("audit", "--cursor", first["next_cursor"], "--json").stdout)
        everything = api.ok("/api/v1/audit")["data"]
        assert first["data"] + rest["data"] == everything and len(everything) == 4

        table = cli("audit")
        assert table.exit_code == 0, table.output
        assert "4 newest audit entries" in table.stdout
        # Read as one line: the table's width is the terminal's, which the test cannot fix
        # once another test in the same process has drawn a table.
        shown = "".join(table.stdout.replace("│", " ").split())
        for text in ("key.rotate", "key.update", "status=\"disabled\"", "cli", "admin"):
            assert text in shown
        limited = cli("audit", "--limit", "1")
        assert "more: --cursor" in limited.stdout


@pytest.mark.parametrize(("args", "option"), [
    (["--start", "soon"], "--start"),
    (["--end", "2026-02-30"], "--end"),
    (["--start", "2026-01-02", "--end", "2026-01-01"], "--end"),
    (["--cursor", "nope"], "--cursor"),
    (["--actor", ""], "--actor"),
    (["--key", ""], "--key"),
])
def test_bad_options_are_named(sqlite_cli: Run, args: list[str], option: str) -> None:
    result = sqlite_cli("audit", *args)
    assert result.exit_code == 2, result.output
    assert f"error: {option}:" in result.output
