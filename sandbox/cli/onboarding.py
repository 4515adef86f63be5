"""``veil`` commands of data onboarding: zones, providers, loads, versions, quality reports, issues.

Each works on a data directory (``--data-dir`` or ``VEIL_DATA_DIR``) as the local administrator,
or with ``--url`` and ``--key`` (or ``VEIL_URL`` / ``VEIL_KEY``) against a running server as the
member whose API key it is. The logic is :mod:`sandbox.onboarding` (docs/onboarding.md); over
HTTP, :class:`sandbox.client.Client`. Registered on ``sandbox.cli.app`` when ``sandbox.cli``
imports this module.
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

from sandbox.cli.app import app, echo_result, local_settings

if TYPE_CHECKING:
    from connectors.base import Progress
    from sandbox.client import Client
    from sandbox.onboarding.service import Onboarding

zone_app = typer.Typer(no_args_is_help=True, help="Public-data zones.")
provider_app = typer.Typer(
    no_args_is_help=True, help="Providers: the departments that supply data."
)
issue_app = typer.Typer(no_args_is_help=True, help="Issues about a dataset's data (数据异议处理).")
app.add_typer(zone_app, name="zone")
app.add_typer(provider_app, name="provider")
app.add_typer(issue_app, name="issue")

DataDir = Annotated[Path | None, typer.Option(help="Work on this data directory [VEIL_DATA_DIR].")]
Url = Annotated[
    str | None, typer.Option(envvar="VEIL_URL", help="Work against this server instead.")
]
Key = Annotated[
    str | None, typer.Option(envvar="VEIL_KEY", help="With --url: the API key to act with.")
]
IdemKey = Annotated[
    str | None,
    typer.Option(
        "--idempotency-key",
        help="With --url: sent as Idempotency-Key; repeating the command with it replays the "
        "first answer instead of acting twice.",
    ),
]
POLL_S = 0.5  # how often `veil load --url` asks the server for progress


@contextmanager
def _onboarding(data_dir: Path | None, *, subjects: bool = False) -> Iterator[Onboarding]:
    """The onboarding service on a data directory; a ``VeilError`` becomes a clean exit 1.

    ``subjects``: key subject references with the zone secret, as the server does (issues about
    a subject must match its receipts)."""
    from sandbox.errors import VeilError
    from sandbox.keys import directory as keystore
    from sandbox.onboarding.service import Onboarding
    from sandbox.store import db

    settings = local_settings(data_dir)
    engine = db.connect(settings.state_url)
    try:
        yield Onboarding(
            engine,
            settings.workspace_dir,
            quota_bytes=settings.load_quota_bytes,
            master_keys=keystore.master_keys(settings.keys_path, master_key=settings.master_key),
            zone_secret=keystore.open_keys(settings.keys_path)[1] if subjects else None,
        )
    except VeilError as exc:
        typer.echo(f"error: {exc.error_code}: {exc.detail}", err=True)
        raise typer.Exit(1) from None
    finally:
        engine.dispose()


@contextmanager
def _client(url: str, key: str | None) -> Iterator[Client]:
    """A client of the server at ``url``; a problem it answers becomes a clean exit 1."""
    from sandbox.client import Client
    from sandbox.errors import VeilError

    if not key:
        raise typer.BadParameter("--url needs --key (or VEIL_KEY)", param_hint="--key")
    client = Client(url, key)
    try:
        yield client
    except VeilError as exc:
        typer.echo(f"error: {exc.error_code}: {exc.detail}", err=True)
        raise typer.Exit(1) from None
    finally:
        client.close()


def _run(
    data_dir: Path | None,
    url: str | None,
    key: str | None,
    local: Callable[[Onboarding], Any],
    remote: Callable[[Client], Any],
    *,
    idempotency_key: str | None = None,
    subjects: bool = False,
) -> None:
    """Run a command on the data directory or against the server; print its result."""
    if url:
        with _client(url, key) as client:
            result = remote(client)
    else:
        if idempotency_key is not None:
            raise typer.BadParameter("needs --url", param_hint="--idempotency-key")
        with _onboarding(data_dir, subjects=subjects) as service:
            result = local(service)
    echo_result(result)


# -- zones and providers ------------------------------------------------------------------------


@zone_app.command("create")
def zone_create(
    id: Annotated[str, typer.Option("--id", help="Zone id, e.g. beijing-finance.")],
    kind: Annotated[str, typer.Option(help="domain | regional | comprehensive.")],
    operator: Annotated[str, typer.Option(help="The authorised operator (运营单位).")],
    title: Annotated[str, typer.Option(help="Title.")],
    description: Annotated[str, typer.Option(help="Description.")] = "",
    data_dir: DataDir = None,
    url: Url = None,
    key: Key = None,
    idempotency_key: IdemKey = None,
) -> None:
    """Create a zone."""
    body = {"id": id, "kind": kind, "operator": operator, "title": title}
    _run(
        data_dir,
        url,
        key,
        lambda s: s.create_zone(None, id, kind, operator, title, description),
        lambda c: c.create_zone({**body, "description": description}, idempotency_key),
        idempotency_key=idempotency_key,
    )


@zone_app.command("list")
def zone_list(data_dir: DataDir = None, url: Url = None, key: Key = None) -> None:
    """List zones."""
    from sandbox import catalog

    _run(
        data_dir,
        url,
        key,
        lambda s: [z.__dict__ for z in catalog.list_zones(s.engine)],
        lambda c: c.list_zones(),
    )


@provider_app.command("create")
def provider_create(
    id: Annotated[str, typer.Option("--id", help="Provider id, e.g. bj-tax.")],
    name: Annotated[str, typer.Option(help="Department name.")],
    zone: Annotated[str, typer.Option(help="Zone id.")],
    description: Annotated[str, typer.Option(help="Description.")] = "",
    data_dir: DataDir = None,
    url: Url = None,
    key: Key = None,
    idempotency_key: IdemKey = None,
) -> None:
    """Register a provider (a department that supplies datasets)."""
    body = {"id": id, "name": name, "zone": zone, "description": description}
    _run(
        data_dir,
        url,
        key,
        lambda s: s.create_provider(None, id, name, zone, description),
        lambda c: c.create_provider(body, idempotency_key),
        idempotency_key=idempotency_key,
    )


@provider_app.command("list")
def provider_list(data_dir: DataDir = None, url: Url = None, key: Key = None) -> None:
    """List providers and their datasets."""
    _run(data_dir, url, key, lambda s: s.list_providers(), lambda c: c.list_providers())


@provider_app.command("add-member")
def provider_add_member(
    provider: Annotated[str, typer.Option(help="Provider id.")],
    member: Annotated[str, typer.Option(help="Member id (role provider).")],
    data_dir: DataDir = None,
    url: Url = None,
    key: Key = None,
    idempotency_key: IdemKey = None,
) -> None:
    """Let a member of role provider speak for a provider."""
    _run(
        data_dir,
        url,
        key,
        lambda s: s.add_provider_member(None, provider, member),
        lambda c: c.add_provider_member(provider, member, idempotency_key),
        idempotency_key=idempotency_key,
    )


# -- loads and versions -------------------------------------------------------------------------


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
    if url:
        load = {
            "policy": text,
            "source": source,
            "sources": sources,
            "provider": provider,
            "cluster_by": cluster_by,
        }
        with _client(url, key) as client:
            started = client.start_load(zone, dataset, load, idempotency_key)
            with _progress_bar(show) as hook:
                result = _follow(client, zone, dataset, int(started["version"]), hook)
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
    with _onboarding(data_dir) as service:
        pending = service.begin_load(
            None,
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
                result = service.run_load(pending, on_progress=hook)
            except Exception:
                _report_failure(service.get_version(None, zone, dataset, pending.version))
                raise
    echo_result(result)


def _report_failure(view: dict[str, Any]) -> None:
    typer.echo(f"version {view['version']}: failed", err=True)
    quality = view.get("quality")
    if quality and quality["failed_rules"]:
        typer.echo(json.dumps(quality, ensure_ascii=False), err=True)


def _follow(
    client: Client,
    zone: str,
    dataset: str,
    version: int,
    hook: Callable[[Progress], None] | None,
) -> dict[str, Any]:
    """Poll a version until its load has finished, feeding its progress to ``hook``."""
    from connectors.base import Progress

    while True:
        view = client.get_version(zone, dataset, version)
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
    _run(
        data_dir,
        url,
        key,
        lambda s: s.list_versions(None, zone, dataset),
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
    _run(
        data_dir,
        url,
        key,
        lambda s: s.activate(None, zone, dataset, version),
        lambda c: c.activate(zone, dataset, version, idempotency_key),
        idempotency_key=idempotency_key,
    )


@app.command("quality")
def quality_command(
    dataset: Annotated[str, typer.Argument(help="Dataset id.")],
    version: Annotated[int | None, typer.Option(help="Version (default: current).")] = None,
    html: Annotated[bool, typer.Option("--html", help="A readable HTML page instead.")] = False,
    data_dir: DataDir = None,
    url: Url = None,
    key: Key = None,
) -> None:
    """Print a version's quality report (JSON, or HTML with --html)."""

    def local(service: Onboarding) -> Any:
        if html:
            return service.quality_html(None, dataset, version)
        return service.quality(None, dataset, version)

    _run(data_dir, url, key, local, lambda c: c.quality(dataset, version, html))


# -- issues (数据异议处理): the same calls as POST/GET /v1/datasets/{id}/issues… ------------------


@issue_app.command("raise")
def issue_raise(
    dataset: Annotated[str, typer.Argument(help="Dataset id.")],
    title: Annotated[str, typer.Option(help="What is wrong, in a line.")],
    description: Annotated[str, typer.Option(help="Details.")] = "",
    subject: Annotated[
        str | None,
        typer.Option(help="The credit code whose records are in question (kept only hashed)."),
    ] = None,
    data_dir: DataDir = None,
    url: Url = None,
    key: Key = None,
    idempotency_key: IdemKey = None,
) -> None:
    """Raise an issue about a dataset, or about one subject's records in it."""
    issue = {"title": title, "description": description, "subject": subject}
    _run(
        data_dir,
        url,
        key,
        lambda s: s.raise_issue(None, dataset, title, description, subject),
        lambda c: c.raise_issue(dataset, issue, idempotency_key),
        idempotency_key=idempotency_key,
        subjects=True,
    )


@issue_app.command("list")
def issue_list(
    dataset: Annotated[str, typer.Argument(help="Dataset id.")],
    data_dir: DataDir = None,
    url: Url = None,
    key: Key = None,
) -> None:
    """List a dataset's issues (a non-staff member sees its own tenant's)."""
    _run(
        data_dir,
        url,
        key,
        lambda s: s.list_issues(None, dataset),
        lambda c: c.list_issues(dataset),
    )


@issue_app.command("show")
def issue_show(
    dataset: Annotated[str, typer.Argument(help="Dataset id.")],
    number: Annotated[int, typer.Argument(help="Issue number.")],
    data_dir: DataDir = None,
    url: Url = None,
    key: Key = None,
) -> None:
    """Show one issue."""
    _run(
        data_dir,
        url,
        key,
        lambda s: s.get_issue(None, dataset, number),
        lambda c: c.get_issue(dataset, number),
    )


@issue_app.command("answer")
def issue_answer(
    dataset: Annotated[str, typer.Argument(help="Dataset id.")],
    number: Annotated[int, typer.Argument(help="Issue number.")],
    answer: Annotated[str, typer.Option(help="The provider's or operator's answer.")],
    data_dir: DataDir = None,
    url: Url = None,
    key: Key = None,
    idempotency_key: IdemKey = None,
) -> None:
    """Answer an open issue (staff: admin, operator, the dataset's provider)."""
    _run(
        data_dir,
        url,
        key,
        lambda s: s.answer_issue(None, dataset, number, answer),
        lambda c: c.answer_issue(dataset, number, answer, idempotency_key),
        idempotency_key=idempotency_key,
    )


@issue_app.command("resolve")
def issue_resolve(
    dataset: Annotated[str, typer.Argument(help="Dataset id.")],
    number: Annotated[int, typer.Argument(help="Issue number.")],
    kind: Annotated[str, typer.Option(help="no_change | corrected.")],
    version: Annotated[
        int | None, typer.Option(help="corrected: the ready version that holds the correction.")
    ] = None,
    note: Annotated[str, typer.Option(help="A note on the resolution.")] = "",
    revoke_receipts: Annotated[
        bool,
        typer.Option(help="corrected: revoke the subject's receipts from older versions."),
    ] = True,
    data_dir: DataDir = None,
    url: Url = None,
    key: Key = None,
    idempotency_key: IdemKey = None,
) -> None:
    """Close an issue: no_change, or corrected by a newer version."""
    resolution = {
        "kind": kind,
        "version": version,
        "note": note,
        "revoke_receipts": revoke_receipts,
    }
    _run(
        data_dir,
        url,
        key,
        lambda s: s.resolve_issue(
            None, dataset, number, kind, version, note, revoke_receipts=revoke_receipts
        ),
        lambda c: c.resolve_issue(dataset, number, resolution, idempotency_key),
        idempotency_key=idempotency_key,
    )
