"""``veil load``, ``veil versions``, ``veil activate`` and ``veil quality``: a dataset's versions.

The same calls as ``/v1/zones/{zone}/datasets/{id}/versions…`` and ``/v1/datasets/{id}/quality``
(docs/onboarding.md#loads-and-versions), on a data directory or against a server
(:mod:`sandbox.cli.onboarding`). ``veil load`` shows a progress bar on stderr: on a data
directory it runs the load itself; with ``--url`` it starts the load on the server and polls the
version until the load has finished (Ctrl-C stops only the polling); with ``--upload`` too, it
first sends its local SOURCE file as an upload (``…/uploads``) and loads that. Registered on
``sandbox.cli.app`` when :mod:`sandbox.cli.main` imports this module.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from sandbox.cli.app import app, echo_result
from sandbox.cli.onboarding import DataDir, IdemKey, Key, Url, client, onboarding, run, wire

if TYPE_CHECKING:
    from connectors.base import Progress
    from sandbox.access.model import Actor
    from sandbox.client import Client
    from sandbox.onboarding.services import Onboarding

POLL_S = 0.5  # how often `veil load --url` asks the server for progress


def _table_sources(values: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for value in values:
        table, sep, source = value.partition("=")
        if not sep or not table or not source:
            raise typer.BadParameter(f"expected TABLE=SOURCE, got {value!r}", param_hint="--table")
        found[table] = source
    return found


@app.command("load")
def load_command(
    zone: Annotated[str, typer.Option(help="Zone id.")],
    dataset: Annotated[str, typer.Option(help="Dataset id (the policy's id).")],
    policy: Annotated[Path, typer.Option(help="Policy file (TOML).", exists=True, dir_okay=False)],
    source: Annotated[
        str | None,
        typer.Argument(
            help="Source for every table: path, glob (may hold {table}) or URL. With --url, "
            "paths are on the server, under its data directory's sources/ folder."
        ),
    ] = None,
    table: Annotated[
        list[str] | None, typer.Option("--table", help="TABLE=SOURCE, one per table instead.")
    ] = None,
    provider: Annotated[str | None, typer.Option(help="Provider id of the dataset.")] = None,
    cluster_by: Annotated[
        str | None,
        typer.Option(help="Store the tables sorted by this column [the policy's cluster_by]."),
    ] = None,
    upload: Annotated[
        bool,
        typer.Option(
            "--upload",
            help="With --url: SOURCE is a local file, sent to the server first (an upload, "
            "in chunks), then loaded.",
        ),
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    data_dir: DataDir = None,
    url: Url = None,
    key: Key = None,
    idempotency_key: IdemKey = None,
) -> None:
    """Load a new version of a dataset; it becomes current only if the load and its quality
    rules pass. Prints the version (with its quality summary); a failed load exits 1."""
    sources = _table_sources(table) if table else None
    if (source is None) == (sources is None):
        raise typer.BadParameter("give SOURCE, or --table TABLE=SOURCE for each table")
    text = policy.read_text(encoding="utf-8")
    show = progress and sys.stderr.isatty()
    if upload and (not url or source is None or sources is not None):
        raise typer.BadParameter("needs --url and one local SOURCE file", param_hint="--upload")
    if url:
        if upload:
            assert source is not None
            local = Path(source)
            if not local.is_file():
                raise typer.BadParameter(f"no file {source!r}", param_hint="SOURCE")
            with client(url, key) as remote:
                source = str(remote.upload(zone, dataset, local)["source"])
        load = {
            "policy": text,
            "source": source,
            "sources": sources,
            "provider": provider,
            "cluster_by": cluster_by,
        }
        with client(url, key) as remote:
            started = remote.start_load(zone, dataset, load, idempotency_key)
            with _progress_bar(show) as hook:
                result = _follow(remote, zone, dataset, str(started["load"]), hook)
        if result["state"] != "ready":
            _report_failure(result)
            error = result.get("error") or {}
            code = error.get("code", "load_failed")
            typer.echo(f"error: {code}: {error.get('detail', 'the load failed')}", err=True)
            raise typer.Exit(1)
        echo_result(result)
        return
    if idempotency_key is not None:
        raise typer.BadParameter("needs --url", param_hint="--idempotency-key")
    from sandbox.access.model import Actor

    actor = Actor.local()
    with onboarding(data_dir) as services:
        pending = services.loads.begin_load(
            actor,
            zone,
            dataset,
            text,
            source,
            sources,
            provider=provider,
            policy_name=str(policy),
            cluster_by=cluster_by,
        )
        with _progress_bar(show) as hook:
            try:
                loaded = services.loads.run_load(pending, on_progress=hook)
            except Exception:
                failed = services.versions.get_load(actor, zone, dataset, pending.load)
                _report_failure(wire(failed))
                raise
    echo_result(wire(loaded))


def _report_failure(view: dict[str, Any]) -> None:
    typer.echo(f"load {view.get('load')}: failed (no version made)", err=True)
    quality = view.get("quality")
    if quality and quality["failed_rules"]:
        typer.echo(json.dumps(quality, ensure_ascii=False), err=True)


def _follow(
    client: Client,
    zone: str,
    dataset: str,
    load: str,
    hook: Callable[[Progress], None] | None,
) -> dict[str, Any]:
    """Poll a load until it has finished, feeding its progress to ``hook``."""
    from connectors.base import Progress

    while True:
        view = client.get_load(zone, dataset, load)
        shown = view.get("progress") or {}
        if hook is not None:
            hook(
                Progress(
                    dataset,
                    int(shown.get("rows") or 0),
                    shown.get("bytes_read"),
                    shown.get("bytes_total"),
                )
            )
        if view["state"] != "loading":
            return view
        time.sleep(POLL_S)


@contextmanager
def _progress_bar(show: bool) -> Iterator[Callable[[Progress], None] | None]:
    if not show:
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TaskID,
        TextColumn,
        TimeElapsedColumn,
    )

    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TextColumn("{task.fields[rows]:,} rows"),
        TimeElapsedColumn(),
    )
    # On stderr: stdout carries the result (JSON), which may be redirected.
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        tasks: dict[str, TaskID] = {}

        def hook(update: Any) -> None:
            task = tasks.get(update.table)
            if task is None:
                task = tasks[update.table] = bar.add_task(
                    update.table, total=update.bytes_total, rows=0
                )
            if update.bytes_total is not None:
                bar.update(task, total=update.bytes_total)
            bar.update(task, completed=update.bytes_read or 0, rows=update.rows)

        yield hook
        for task in tasks.values():
            total = bar.tasks[task].total
            if total is not None:
                bar.update(task, completed=total)


@app.command("versions")
def versions_command(
    zone: Annotated[str, typer.Option(help="Zone id.")],
    dataset: Annotated[str, typer.Argument(help="Dataset id.")],
    data_dir: DataDir = None,
    url: Url = None,
    key: Key = None,
) -> None:
    """List a dataset's versions: ready, failed or loading, and which is current."""
    run(
        data_dir,
        url,
        key,
        lambda s, actor: s.versions.list_versions(actor, zone, dataset),
        lambda c: c.list_versions(zone, dataset),
    )


@app.command("activate")
def activate_command(
    zone: Annotated[str, typer.Option(help="Zone id.")],
    dataset: Annotated[str, typer.Argument(help="Dataset id.")],
    version: Annotated[int, typer.Argument(help="A ready version.")],
    data_dir: DataDir = None,
    url: Url = None,
    key: Key = None,
    idempotency_key: IdemKey = None,
) -> None:
    """Make a ready version current again (roll back, or forward)."""
    run(
        data_dir,
        url,
        key,
        lambda s, actor: s.versions.activate(actor, zone, dataset, version),
        lambda c: c.activate(zone, dataset, version, idempotency_key),
        idempotency_key=idempotency_key,
    )


@app.command("quality")
def quality_command(
    dataset: Annotated[str, typer.Argument(help="Dataset id.")],
    version: Annotated[int | None, typer.Option(help="Version (default: current).")] = None,
    load: Annotated[
        str | None, typer.Option(help="A load's id instead (failed loads have no version).")
    ] = None,
    html: Annotated[bool, typer.Option("--html", help="A readable HTML page instead.")] = False,
    data_dir: DataDir = None,
    url: Url = None,
    key: Key = None,
) -> None:
    """Print a version's quality report (JSON, or HTML with --html)."""

    def local(services: Onboarding, actor: Actor) -> Any:
        if html:
            return services.versions.quality_html(actor, dataset, version, load)
        return services.versions.quality(actor, dataset, version, load)

    run(data_dir, url, key, local, lambda c: c.quality(dataset, version, html, load))
