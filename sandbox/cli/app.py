"""The ``veil`` command line: the Typer app and what every command group shares (where a
command works: a data directory, or a server with ``--url`` and ``--key``; how results print).

Command groups register themselves on :data:`app`; :mod:`sandbox.cli.main` imports them all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(no_args_is_help=True, help="Veil: usable but invisible public data.")

DataDir = Annotated[Path | None, typer.Option(help="Work on this data directory [VEIL_DATA_DIR].")]
Url = Annotated[str | None, typer.Option(envvar="VEIL_URL", help="Work against this server.")]
Key = Annotated[str | None, typer.Option(envvar="VEIL_KEY", help="Admin API key for --url.")]


def _target(data_dir: Path | None, url: str | None, key: str | None) -> Any:
    """A ``Local`` backend on the data directory, or a ``Client`` of the server at ``url``."""
    if url:
        from sandbox.client import Client

        if not key:
            raise typer.BadParameter("--url needs --key (or VEIL_KEY)", param_hint="--key")
        return Client(url, key)
    from sandbox.cli.local import Local
    from sandbox.store import db

    settings = data_dir_settings(data_dir)
    engine = db.connect(settings.state_url)
    return Local(engine, local_audit_log(engine, settings))


def local_audit_log(engine: Any, settings: Any) -> Any:
    """The audit log of a data directory's state store, with its keys (or the settings' rings):
    what the local administrator changes there is recorded like any change."""
    from sandbox.audit.log import AuditLog

    return AuditLog.open(
        engine,
        settings.keys_path,
        master_key=settings.master_key,
        hmac_key=settings.audit_hmac_key,
    )


def data_dir_settings(data_dir: Path | None) -> Any:
    """Settings for work on an existing data directory (``--data-dir`` or VEIL_DATA_DIR). What
    a command changes there it records itself, as the local administrator, in the audit log of
    :func:`local_audit_log`."""
    from sandbox.config import Settings

    settings = Settings.model_validate({"data_dir": data_dir} if data_dir else {})
    if not settings.data_dir.exists():
        raise typer.BadParameter(f"no data directory {settings.data_dir}", param_hint="--data-dir")
    return settings


def echo_result(result: Any) -> None:
    """Print a command's result: text as it is, anything else as indented JSON."""
    import json

    if isinstance(result, str):
        typer.echo(result, nl=False)
    elif result is not None:
        typer.echo(json.dumps(result, indent=2, ensure_ascii=False, default=str))


def _run(data_dir: Path | None, url: str | None, key: str | None, call: Any) -> None:
    """Run ``call(backend)``, print its result as JSON, and turn errors into a clean exit."""
    from sandbox.errors import VeilError

    backend = _target(data_dir, url, key)
    try:
        result = call(backend)
    except VeilError as exc:
        typer.echo(f"error: {exc.error_code}: {exc.detail}", err=True)
        raise typer.Exit(1) from None
    finally:
        backend.close()
    echo_result(result)
