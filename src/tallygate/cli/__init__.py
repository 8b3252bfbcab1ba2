"""The ``tallygate`` command: thin; each command builds objects and calls one library function."""

from __future__ import annotations

from tallygate.cli.main import app, main

__all__ = ["app", "main"]
