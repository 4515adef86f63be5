"""``veil serve`` and ``veil demo-data``: run the HTTP API, write the demo tables."""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from sandbox.audit.log import AuditLog
from sandbox.cli.app import app
from sandbox.demo import synthetic as demo_data

BACKLOG = 2048  # uvicorn's default


@app.command()
def serve(
    data_dir: Annotated[
        Path | None, typer.Option(help="Data directory [env VEIL_DATA_DIR; veil-data].")
    ] = None,
    demo: Annotated[
        bool,
        typer.Option(help="Build the demo zone first if missing (kept as it is when it exists)."),
    ] = False,
    host: Annotated[str | None, typer.Option(help="Bind address [VEIL_HOST; 127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help="Port [VEIL_PORT; 8000].")] = None,
    workers: Annotated[
        int | None, typer.Option(help="Executor worker processes [VEIL_WORKERS; 2].")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the demo data.")] = demo_data.DEFAULT_SEED,
) -> None:
    """Run the HTTP API. Options override the VEIL_* environment.

    The port is taken before anything else (a taken port fails at once, before a demo build),
    and the address is printed once the server answers there."""
    from sandbox.api.connections import server_config
    from sandbox.config import Settings
    from sandbox.demo.build import KEYS_FILE, build_demo
    from sandbox.keys import directory as keystore
    from sandbox.store import db
    from server import create_app

    given: dict[str, Any] = {"data_dir": data_dir, "host": host, "port": port, "workers": workers}
    settings = Settings.model_validate({k: v for k, v in given.items() if v is not None})
    listener = _listen(settings.host, settings.port)
    data_dir = settings.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    if demo:
        engine = db.connect(settings.state_url)
        if (data_dir / KEYS_FILE).exists():
            typer.echo(
                f"The demo zone in {data_dir} is already built: it is served as it is, with "
                "everything done there since (budgets spent, consents, receipts, the audit "
                f"log). Delete {data_dir} to start afresh."
            )
        else:
            typer.echo(f"Building the demo zone in {data_dir}…")
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
    url = _url(settings.host, listener.getsockname()[1])

    def ready() -> None:
        typer.echo(f"Veil is serving on {url} (Ctrl+C stops it).")
        typer.echo(f"API docs: {url}/docs")

    _run(server_config(create_app(settings), settings, log_level="info"), listener, ready)


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _listen(host: str, port: int) -> socket.socket:
    """A socket listening on ``host:port``, for uvicorn to serve; or exit, naming the address and
    how to choose another port. Connections that come before the app is ready wait for it."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        where = _url(host, port).removeprefix("http://")
        other = port + 1 if port < 65535 else 8001
        how = (
            f"Choose another port: veil serve --port {other} (or VEIL_PORT={other}), "
            f"or make demo PORT={other}."
        )
        if exc.errno == errno.EADDRINUSE:
            why = f"{where} is in use (another server listens there)"
        else:
            why = f"cannot listen on {where}: {exc.strerror or exc}"
            if exc.errno != errno.EACCES:  # the host is not one of this machine's addresses
                how = "Choose another address: veil serve --host 127.0.0.1, or make demo HOST=…"
        typer.echo(f"veil serve: {why}. {how}", err=True)
        raise typer.Exit(1) from None
    return sock


def _run(config: Any, listener: socket.socket, ready: Callable[[], None]) -> None:
    """Serve with uvicorn on ``listener``; ``ready()`` once the app has started and serves."""
    import uvicorn

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started:
                ready()

    Server(config).run(sockets=[listener])


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
