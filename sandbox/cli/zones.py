"""``veil zone`` and ``veil provider``: public-data zones and the departments that supply data.

The same calls as ``/v1/zones`` and ``/v1/providers`` (docs/onboarding.md#zones-and-providers),
on a data directory or against a server (:mod:`sandbox.cli.onboarding`). Registered on
``sandbox.cli.app`` when :mod:`sandbox.cli.main` imports this module.
"""

from __future__ import annotations

from typing import Annotated

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
