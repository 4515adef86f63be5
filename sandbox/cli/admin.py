"""Administration: tenants, members, API keys, grants and the ledger, against a data directory
(local) or a server (``--url`` and ``--key``), with the same results either way."""

from __future__ import annotations

from typing import Annotated

import typer

from sandbox.cli.app import DataDir, Key, Url, _run, app

# --- administration: against a data directory (local) or a server (--url and --key) -----------

tenant_app = typer.Typer(no_args_is_help=True, help="Tenants: organisations that use the zone.")
member_app = typer.Typer(no_args_is_help=True, help="Members of a tenant and their roles.")
key_app = typer.Typer(no_args_is_help=True, help="API keys (shown once, stored as hashes).")
grant_app = typer.Typer(no_args_is_help=True, help="Privacy budgets of tenants on datasets.")
app.add_typer(tenant_app, name="tenant")
app.add_typer(member_app, name="member")
app.add_typer(key_app, name="key")
app.add_typer(grant_app, name="grant")


@tenant_app.command("create")
def tenant_create(
    name: Annotated[str, typer.Option(help="Organisation name.")],
    kind: Annotated[str, typer.Option(help="bank | research | government | other.")],
    purpose_class: Annotated[str, typer.Option(help="public_welfare | commercial.")],
    data_dir: DataDir = None,
    url: Url = None,
    key: Key = None,
) -> None:
    """Create a tenant."""
    _run(data_dir, url, key, lambda b: b.create_tenant(name, kind, purpose_class))


@tenant_app.command("list")
def tenant_list(data_dir: DataDir = None, url: Url = None, key: Key = None) -> None:
    """List tenants."""
    _run(data_dir, url, key, lambda b: b.list_tenants())


@member_app.command("create")
def member_create(
    tenant: Annotated[str, typer.Option(help="Tenant id.")],
    name: Annotated[str, typer.Option(help="Person or system name.")],
    role: Annotated[
        str,
        typer.Option(help="admin|operator|provider|analyst|verifier|auditor|subject|authority."),
    ],
    subject: Annotated[
        str | None, typer.Option(help="The credit code a subject member speaks for.")
    ] = None,
    data_dir: DataDir = None,
    url: Url = None,
    key: Key = None,
) -> None:
    """Create a member; prints its first API key once."""
    _run(data_dir, url, key, lambda b: b.create_member(tenant, name, role, subject))


@member_app.command("list")
def member_list(
    tenant: Annotated[str, typer.Option(help="Tenant id.")],
    data_dir: DataDir = None,
    url: Url = None,
    key: Key = None,
) -> None:
    """List a tenant's members."""
    _run(data_dir, url, key, lambda b: b.list_members(tenant))


@key_app.command("issue")
def key_issue(
    tenant: Annotated[str, typer.Option(help="Tenant id.")],
    member: Annotated[str, typer.Option(help="Member id.")],
    data_dir: DataDir = None,
    url: Url = None,
    key: Key = None,
) -> None:
    """Issue another API key for a member (shown once)."""
    _run(data_dir, url, key, lambda b: b.issue_key(tenant, member))


@key_app.command("revoke")
def key_revoke(
    tenant: Annotated[str, typer.Option(help="Tenant id.")],
    member: Annotated[str, typer.Option(help="Member id.")],
    key_id: Annotated[str, typer.Option(help="Key id (not the key).")],
    data_dir: DataDir = None,
    url: Url = None,
    key: Key = None,
) -> None:
    """Revoke an API key."""
    _run(data_dir, url, key, lambda b: b.revoke_key(tenant, member, key_id))


@grant_app.command("create")
def grant_create(
    tenant: Annotated[str, typer.Option(help="Tenant id.")],
    dataset: Annotated[str, typer.Option(help="Dataset id.")],
    per_query_cap: Annotated[float, typer.Option(help="Largest ε (or ρ) per query.")],
    epsilon: Annotated[float | None, typer.Option(help="ε per period (pure).")] = None,
    rho: Annotated[float | None, typer.Option(help="ρ per period (zcdp).")] = None,
    delta: Annotated[float, typer.Option(help="δ per period.")] = 0.0,
    accounting: Annotated[str, typer.Option(help="pure | zcdp.")] = "pure",
    refresh: Annotated[str, typer.Option(help="none | daily | weekly | monthly.")] = "none",
    data_dir: DataDir = None,
    url: Url = None,
    key: Key = None,
) -> None:
    """Grant a tenant a privacy budget on a dataset."""
    fields = {
        "dataset": dataset,
        "accounting": accounting,
        "epsilon": epsilon,
        "rho": rho,
        "delta": delta,
        "per_query_cap": per_query_cap,
        "refresh": refresh,
    }
    _run(data_dir, url, key, lambda b: b.create_grant(tenant, **fields))


@grant_app.command("list")
def grant_list(
    tenant: Annotated[str, typer.Option(help="Tenant id.")],
    data_dir: DataDir = None,
    url: Url = None,
    key: Key = None,
) -> None:
    """List a tenant's grants with what is spent and left."""
    _run(data_dir, url, key, lambda b: b.list_grants(tenant))


@grant_app.command("sub-budget")
def grant_sub_budget(
    tenant: Annotated[str, typer.Option(help="Tenant id.")],
    grant: Annotated[str, typer.Option(help="Grant id.")],
    member: Annotated[str, typer.Option(help="Member id.")],
    budget: Annotated[float, typer.Option(help="The member's share (ε or ρ).")],
    data_dir: DataDir = None,
    url: Url = None,
    key: Key = None,
) -> None:
    """Give a member a sub-budget of a grant."""
    _run(data_dir, url, key, lambda b: b.set_sub_budget(tenant, grant, member, budget))


@app.command("ledger")
def ledger_command(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Only this dataset.")] = None,
    csv: Annotated[bool, typer.Option("--csv", help="CSV instead of JSON.")] = False,
    data_dir: DataDir = None,
    url: Url = None,
    key: Key = None,
) -> None:
    """Print the ledger: every charge and credit."""
    _run(data_dir, url, key, lambda b: b.ledger(tenant, dataset, csv))
