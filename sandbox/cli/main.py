"""The ``veil`` entry point: every command group registered on one Typer app."""

from __future__ import annotations

# Imported in the order `veil --help` lists them; importing a group registers it on the app.
from sandbox.cli import serve  # isort: skip
from sandbox.cli import admin, keys, audit, zones, loads, issues, vault  # isort: skip
from sandbox.cli.app import app

__all__ = ["app", "main"]

COMMAND_GROUPS = (serve, admin, keys, audit, zones, loads, issues, vault)


def main() -> None:
    app()
