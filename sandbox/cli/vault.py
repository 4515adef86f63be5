"""``veil workspaces`` commands: encryption at rest of the stored workspaces (docs/security.md).

Registered on ``sandbox.cli.app`` when ``sandbox.cli`` imports this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sandbox.cli.app import app, data_dir_settings, echo_result, local_audit_log

workspaces_app = typer.Typer(no_args_is_help=True, help="Stored workspaces (sealed at rest).")
app.add_typer(workspaces_app, name="workspaces")

DataDir = Annotated[Path | None, typer.Option(help="Work on this data directory [VEIL_DATA_DIR].")]


@workspaces_app.command("seal")
def seal_command(data_dir: DataDir = None) -> None:
    """Encrypt every dataset version still stored as a plain DuckDB file (a data directory from
    before encryption at rest) and delete the plain file. Safe to repeat and to run while
    servers run. Each version sealed is recorded in the audit log (the local administrator's
    change)."""
    from sandbox.access.model import Actor
    from sandbox.errors import VeilError
    from sandbox.keys import directory as keystore
    from sandbox.store import db
    from sandbox.vault.sealed import seal_plain_versions

    settings = data_dir_settings(data_dir)
    engine = db.connect(settings.state_url)
    try:
        sealed = seal_plain_versions(
            engine,
            keystore.master_keys(settings.keys_path, master_key=settings.master_key),
            local_audit_log(engine, settings),
            Actor.local(),
        )
    except VeilError as exc:
        typer.echo(f"error: {exc.error_code}: {exc.detail}", err=True)
        raise typer.Exit(1) from None
    finally:
        engine.dispose()
    echo_result({"sealed": [{"dataset": d, "version": v} for d, v in sealed]})
