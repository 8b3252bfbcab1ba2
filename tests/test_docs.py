"""Docs that cannot drift: generated references must equal what the code generates now."""

from __future__ import annotations

import re
from pathlib import Path

from tallygate.cli import app
from tallygate.cli.reference import cli_reference

ROOT = Path(__file__).resolve().parents[1]


def test_cli_reference_is_current() -> None:
    assert (ROOT / "docs" / "cli.md").read_text() == cli_reference(app), \
        "docs/cli.md is stale: run `make docs`"


def test_readme_names_the_two_commands_and_ci_runs_the_test_one() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, re.M), ".ci/run must call the README's test command"
