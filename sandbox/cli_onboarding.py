"""``veil`` commands of data onboarding: zones, providers, loads, versions, quality reports.

They work on a data directory (``--data-dir`` or ``VEIL_DATA_DIR``) as the local administrator;
the logic is :mod:`sandbox.onboarding` (docs/onboarding.md). Registered on ``sandbox.cli.app``
when ``sandbox.cli`` imports this module.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from sandbox.cli import app, echo_result, local_settings

if TYPE_CHECKING:
    from connectors.base import Progress
    from sandbox.onboarding import Onboarding

zone_app = typer.Typer(no_args_is_help=True, help="Public-data zones.")
provider_app = typer.Typer(
    no_args_is_help=True, help="Providers: the departments that supply data."
)
app.add_typer(zone_app, name="zone")
app.add_typer(provider_app, name="provider")

DataDir = Annotated[Path | None, typer.Option(help="Work on this data directory [VEIL_DATA_DIR].")]


@contextmanager
def _onboarding(data_dir: Path | None) -> Iterator[Onboarding]:
    """The onboarding service on a data directory; a ``VeilError`` becomes a clean exit 1."""
    from sandbox import store
    from sandbox.errors import VeilError
    from sandbox.onboarding import Onboarding

    settings = local_settings(data_dir)
    engine = store.connect(settings.state_url)
    try:
        yield Onboarding(engine, settings.workspace_dir, quota_bytes=settings.load_quota_bytes)
    except VeilError as exc:
        typer.echo(f"error: {exc.error_code}: {exc.detail}", err=True)
        raise typer.Exit(1) from None
    finally:
        engine.dispose()


@zone_app.command("create")
def zone_create(
    id: Annotated[str, typer.Option("--id", help="Zone id, e.g. beijing-finance.")],
    kind: Annotated[str, typer.Option(help="domain | regional | comprehensive.")],
    operator: Annotated[str, typer.Option(help="The authorised operator (运营单位).")],
    title: Annotated[str, typer.Option(help="Title.")],
    description: Annotated[str, typer.Option(help="Description.")] = "",
    data_dir: DataDir = None,
) -> None:
    """Create a zone."""
    with _onboarding(data_dir) as service:
        echo_result(service.create_zone(None, id, kind, operator, title, description))


@zone_app.command("list")
def zone_list(data_dir: DataDir = None) -> None:
    """List zones."""
    from sandbox import catalog

    with _onboarding(data_dir) as service:
        echo_result([z.__dict__ for z in catalog.list_zones(service.engine)])


@provider_app.command("create")
def provider_create(
    id: Annotated[str, typer.Option("--id", help="Provider id, e.g. bj-tax.")],
    name: Annotated[str, typer.Option(help="Department name.")],
    zone: Annotated[str, typer.Option(help="Zone id.")],
    description: Annotated[str, typer.Option(help="Description.")] = "",
    data_dir: DataDir = None,
) -> None:
    """Register a provider (a department that supplies datasets)."""
    with _onboarding(data_dir) as service:
        echo_result(service.create_provider(None, id, name, zone, description))


@provider_app.command("list")
def provider_list(data_dir: DataDir = None) -> None:
    """List providers and their datasets."""
    with _onboarding(data_dir) as service:
        echo_result(service.list_providers())


@provider_app.command("add-member")
def provider_add_member(
    provider: Annotated[str, typer.Option(help="Provider id.")],
    member: Annotated[str, typer.Option(help="Member id (role provider).")],
    data_dir: DataDir = None,
) -> None:
    """Let a member of role provider speak for a provider."""
    with _onboarding(data_dir) as service:
        echo_result(service.add_provider_member(None, provider, member))


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
        typer.Argument(help="Source for every table: path, glob (may hold {table}) or URL."),
    ] = None,
    table: Annotated[
        list[str] | None, typer.Option("--table", help="TABLE=SOURCE, one per table instead.")
    ] = None,
    provider: Annotated[str | None, typer.Option(help="Provider id of the dataset.")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    data_dir: DataDir = None,
) -> None:
    """Load a new version of a dataset; it becomes current only if the load and its quality
    rules pass. Prints the version (with its quality summary)."""
    sources = _table_sources(table) if table else None
    if (source is None) == (sources is None):
        raise typer.BadParameter("give SOURCE, or --table TABLE=SOURCE for each table")
    text = policy.read_text(encoding="utf-8")
    with _onboarding(data_dir) as service:
        pending = service.begin_load(
            None, zone, dataset, text, source, sources, provider=provider, policy_name=str(policy)
        )
        with _progress_bar(progress and sys.stderr.isatty()) as hook:
            try:
                result = service.run_load(pending, on_progress=hook)
            except Exception:
                failed = service.get_version(None, zone, dataset, pending.version)
                typer.echo(f"version {pending.version}: failed", err=True)
                quality = failed.get("quality")
                if quality and quality["failed_rules"]:
                    typer.echo(json.dumps(quality, ensure_ascii=False), err=True)
                raise
    echo_result(result)


@contextmanager
def _progress_bar(show: bool) -> Iterator[Callable[[Progress], None] | None]:
    if not show:
        yield None
        return
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
    with Progress(*columns, transient=False) as bar:
        tasks: dict[str, TaskID] = {}

        def hook(update: Any) -> None:
            task = tasks.get(update.table)
            if task is None:
                task = tasks[update.table] = bar.add_task(
                    update.table, total=update.bytes_total, rows=0
                )
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
) -> None:
    """List a dataset's versions: ready, failed or loading, and which is current."""
    with _onboarding(data_dir) as service:
        echo_result(service.list_versions(None, zone, dataset))


@app.command("activate")
def activate_command(
    zone: Annotated[str, typer.Option(help="Zone id.")],
    dataset: Annotated[str, typer.Argument(help="Dataset id.")],
    version: Annotated[int, typer.Argument(help="A ready version.")],
    data_dir: DataDir = None,
) -> None:
    """Make a ready version current again (roll back, or forward)."""
    with _onboarding(data_dir) as service:
        echo_result(service.activate(None, zone, dataset, version))


@app.command("quality")
def quality_command(
    dataset: Annotated[str, typer.Argument(help="Dataset id.")],
    version: Annotated[int | None, typer.Option(help="Version (default: current).")] = None,
    html: Annotated[bool, typer.Option("--html", help="A readable HTML page instead.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Print a version's quality report (JSON, or HTML with --html)."""
    with _onboarding(data_dir) as service:
        if html:
            typer.echo(service.quality_html(None, dataset, version), nl=False)
        else:
            echo_result(service.quality(None, dataset, version))
