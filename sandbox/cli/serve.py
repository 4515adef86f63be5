"""``veil serve`` and ``veil demo-data``: run the HTTP API, write the demo tables."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from sandbox.audit.log import AuditLog
from sandbox.cli.app import app
from sandbox.demo import synthetic as demo_data


@app.command()
def serve(
    data_dir: Annotated[
        Path | None, typer.Option(help="Data directory [env VEIL_DATA_DIR; veil-data].")
    ] = None,
    demo: Annotated[bool, typer.Option(help="Build the demo zone first if missing.")] = False,
    host: Annotated[str | None, typer.Option(help="Bind address [VEIL_HOST; 127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help="Port [VEIL_PORT; 8000].")] = None,
    workers: Annotated[
        int | None, typer.Option(help="Executor worker processes [VEIL_WORKERS; 2].")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the demo data.")] = demo_data.DEFAULT_SEED,
) -> None:
    """Run the HTTP API. Options override the VEIL_* environment."""
    import uvicorn

    from sandbox.api.connections import server_config
    from sandbox.config import Settings
    from sandbox.demo.build import KEYS_FILE, build_demo
    from sandbox.keys import directory as keystore
    from sandbox.store import db
    from server import create_app

    given: dict[str, Any] = {"data_dir": data_dir, "host": host, "port": port, "workers": workers}
    settings = Settings.model_validate({k: v for k, v in given.items() if v is not None})
    data_dir = settings.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    if demo:
        engine = db.connect(settings.state_url)
        typer.echo(f"Building the demo zone in {data_dir} (first run only)…")
        master_keys = keystore.master_keys(settings.keys_path, master_key=settings.master_key)
        audit = AuditLog.open(
            engine,
            settings.keys_path,
            master_key=settings.master_key,
            hmac_key=settings.audit_hmac_key,
        )
        keys = build_demo(engine, data_dir, seed=seed, master_keys=master_keys, audit=audit)
        engine.dispose()
        typer.echo(f"Demo API keys (also in {data_dir / KEYS_FILE}):")
        for role, key in keys.items():
            typer.echo(f"  {role:9} {key}")
    typer.echo(f"API docs: http://{settings.host}:{settings.port}/docs")
    uvicorn.Server(server_config(create_app(settings), settings, log_level="info")).run()


@app.command("demo-data")
def demo_data_command(
    rows: Annotated[int, typer.Option(min=1, help="Rows of the tax table (the largest).")],
    out: Annotated[Path, typer.Option(help="Output directory for the Parquet files.")],
    seed: Annotated[int, typer.Option(help="Seed.")] = demo_data.DEFAULT_SEED,
) -> None:
    """Write the demo enterprise tables as Parquet at any size, e.g. for benchmarks."""
    with typer.progressbar(length=rows, label="tax rows") as bar:
        done = 0

        def progress(written: int) -> None:
            nonlocal done
            bar.update(min(written, rows) - done)
            done = min(written, rows)

        paths = demo_data.write_parquet(out, rows, seed=seed, progress=progress)
    for table, path in paths.items():
        typer.echo(f"{table}: {path}")
