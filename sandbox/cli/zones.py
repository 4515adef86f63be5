"""``veil zone`` and ``veil provider``: public-data zones and the departments that supply data.

The same calls as ``/v1/zones`` and ``/v1/providers`` (docs/onboarding.md#zones-and-providers),
on a data directory or against a server (:mod:`sandbox.cli.onboarding`). Registered on
``sandbox.cli.app`` when :mod:`sandbox.cli.main` imports this module.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import typer

from sandbox.cli.app import app
from sandbox.cli.onboarding import DataDir, IdemKey, Key, Url, run

zone_app = typer.Typer(no_args_is_help=True, help="Public-data zones.")
provider_app = typer.Typer(
    no_args_is_help=True, help="Providers: the departments that supply data."
)
app.add_typer(zone_app, name="zone")
app.add_typer(provider_app, name="provider")


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
    run(
        data_dir,
        url,
        key,
        lambda s, actor: s.zones.create_zone(actor, id, kind, operator, title, description),
        lambda c: c.create_zone({**body, "description": description}, idempotency_key),
        idempotency_key=idempotency_key,
    )


@zone_app.command("list")
def zone_list(data_dir: DataDir = None, url: Url = None, key: Key = None) -> None:
    """List zones."""
    run(data_dir, url, key, lambda s, _: s.zones.list_zones(), lambda c: c.list_zones())


ZoneOpt = Annotated[str, typer.Option("--zone", help="Zone id.")]


def _moment(text: str, name: str) -> datetime:
    try:
        found = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter("RFC 3339 with an offset", param_hint=name) from None
    if found.tzinfo is None:
        raise typer.BadParameter("give the offset, e.g. +08:00 or Z", param_hint=name)
    return found


@zone_app.command("authorisation")
def zone_authorisation(
    zone: ZoneOpt, data_dir: DataDir = None, url: Url = None, key: Key = None
) -> None:
    """Show a zone's operator authorisation (scope, term, state)."""
    run(
        data_dir,
        url,
        key,
        lambda s, actor: s.authority.get(actor, zone),
        lambda c: c.get_authorisation(zone),
    )


@zone_app.command("authorise")
def zone_authorise(
    zone: ZoneOpt,
    term_start: Annotated[str, typer.Option(help="Start of the term (RFC 3339, with offset).")],
    term_end: Annotated[
        str | None, typer.Option(help="End of the term; absent: open-ended.")
    ] = None,
    dataset: Annotated[
        list[str] | None, typer.Option(help="A dataset in scope (repeat); absent: all.")
    ] = None,
    product: Annotated[
        list[str] | None,
        typer.Option(help="query, verification or load in scope (repeat); absent: all."),
    ] = None,
    data_dir: DataDir = None,
    url: Url = None,
    key: Key = None,
) -> None:
    """Set a zone's operator authorisation: its scope and term (role authority)."""
    start = _moment(term_start, "--term-start")
    end = None if term_end is None else _moment(term_end, "--term-end")
    body: dict[str, Any] = {"term_start": start.isoformat()}
    if end is not None:
        body["term_end"] = end.isoformat()
    if dataset:
        body["datasets"] = dataset
    if product:
        body["products"] = product
    run(
        data_dir,
        url,
        key,
        lambda s, actor: s.authority.authorise(
            actor,
            zone,
            term_start=start,
            term_end=end,
            datasets=dataset or None,
            products=product or None,
        ),
        lambda c: c.authorise_zone(zone, body),
    )


@zone_app.command("suspend")
def zone_suspend(zone: ZoneOpt, data_dir: DataDir = None, url: Url = None, key: Key = None) -> None:
    """Suspend a zone's operator: its products refuse until resumed (role authority)."""
    run(
        data_dir,
        url,
        key,
        lambda s, actor: s.authority.suspend(actor, zone),
        lambda c: c.zone_transition(zone, "suspend"),
    )


@zone_app.command("resume")
def zone_resume(zone: ZoneOpt, data_dir: DataDir = None, url: Url = None, key: Key = None) -> None:
    """Resume a suspended zone's operator (role authority)."""
    run(
        data_dir,
        url,
        key,
        lambda s, actor: s.authority.resume(actor, zone),
        lambda c: c.zone_transition(zone, "resume"),
    )


@zone_app.command("exit")
def zone_exit(
    zone: ZoneOpt,
    confirm: Annotated[str, typer.Option(help="The zone id again: exit cannot be undone.")],
    data_dir: DataDir = None,
    url: Url = None,
    key: Key = None,
) -> None:
    """Exit a zone's operator: delete its data and print the signed exit certificate."""
    run(
        data_dir,
        url,
        key,
        lambda s, actor: s.authority.exit(actor, zone, confirm=confirm),
        lambda c: c.zone_transition(zone, "exit", {"confirm": confirm}),
        signing=True,
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
    run(
        data_dir,
        url,
        key,
        lambda s, actor: s.providers.create_provider(actor, id, name, zone, description),
        lambda c: c.create_provider(body, idempotency_key),
        idempotency_key=idempotency_key,
    )


@provider_app.command("list")
def provider_list(data_dir: DataDir = None, url: Url = None, key: Key = None) -> None:
    """List providers and their datasets."""
    run(
        data_dir,
        url,
        key,
        lambda s, _: s.providers.list_providers(),
        lambda c: c.list_providers(),
    )


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
    run(
        data_dir,
        url,
        key,
        lambda s, actor: s.providers.add_provider_member(actor, provider, member),
        lambda c: c.add_provider_member(provider, member, idempotency_key),
        idempotency_key=idempotency_key,
    )
