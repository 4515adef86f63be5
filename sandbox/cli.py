"""The ``veil`` command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from connectors import synthetic as demo_data

app = typer.Typer(no_args_is_help=True, help="Veil: usable but invisible public data.")


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

    from sandbox import keystore, store
    from sandbox.config import Settings
    from sandbox.demo import KEYS_FILE, build_demo
    from server import create_app

    given: dict[str, Any] = {"data_dir": data_dir, "host": host, "port": port, "workers": workers}
    settings = Settings.model_validate({k: v for k, v in given.items() if v is not None})
    data_dir = settings.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    if demo:
        engine = store.connect(settings.state_url)
        typer.echo(f"Building the demo zone in {data_dir} (first run only)…")
        master_keys = keystore.master_keys(settings.keys_path)
        keys = build_demo(engine, data_dir, seed=seed, master_keys=master_keys)
        engine.dispose()
        typer.echo(f"Demo API keys (also in {data_dir / KEYS_FILE}):")
        for role, key in keys.items():
            typer.echo(f"  {role:9} {key}")
    typer.echo(f"API docs: http://{settings.host}:{settings.port}/docs")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info")


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


def main() -> None:
    app()


# --- administration: against a data directory (local) or a server (--url and --key) -----------

tenant_app = typer.Typer(no_args_is_help=True, help="Tenants: organisations that use the zone.")
member_app = typer.Typer(no_args_is_help=True, help="Members of a tenant and their roles.")
key_app = typer.Typer(no_args_is_help=True, help="API keys (shown once, stored as hashes).")
grant_app = typer.Typer(no_args_is_help=True, help="Privacy budgets of tenants on datasets.")
app.add_typer(tenant_app, name="tenant")
app.add_typer(member_app, name="member")
app.add_typer(key_app, name="key")
app.add_typer(grant_app, name="grant")

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
    from sandbox import store
    from sandbox.local import Local

    return Local(store.connect(local_settings(data_dir).state_url))


def local_settings(data_dir: Path | None) -> Any:
    """Settings for work on an existing data directory (``--data-dir`` or VEIL_DATA_DIR)."""
    from sandbox import audit
    from sandbox.config import Settings

    settings = Settings.model_validate({"data_dir": data_dir} if data_dir else {})
    if not settings.data_dir.exists():
        raise typer.BadParameter(f"no data directory {settings.data_dir}", param_hint="--data-dir")
    # Changes made through it are the local administrator's: recorded in the audit log.
    audit.record_local_changes(settings.state_url, settings.keys_path)
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
        str, typer.Option(help="admin|operator|provider|analyst|verifier|auditor|subject.")
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


# --- receipts and receipt keys ---------------------------------------------------------------

receipt_app = typer.Typer(no_args_is_help=True, help="Verification receipts.")
keys_app = typer.Typer(
    no_args_is_help=True, help="Signing, audit HMAC and master keys (not API keys: `key`)."
)
app.add_typer(receipt_app, name="receipt")
app.add_typer(keys_app, name="keys")


@receipt_app.command("verify")
def receipt_verify(
    receipt: Annotated[
        Path, typer.Argument(help="A receipt JSON file (or a verification response holding one).")
    ],
    keys: Annotated[
        Path | None, typer.Option(help="The published key document (GET /v1/keys), as a file.")
    ] = None,
    url: Annotated[
        str | None, typer.Option(help="Fetch the key document from this Veil server instead.")
    ] = None,
    status: Annotated[
        bool, typer.Option(help="With --url, also ask the server whether it was revoked.")
    ] = False,
) -> None:
    """Check a receipt offline: Ed25519 over its canonical JSON, with the published keys."""
    import json

    from sandbox.errors import ReceiptError
    from sandbox.receipts import public_keys_from_document, verify

    if (keys is None) == (url is None):
        raise typer.BadParameter("give exactly one of --keys FILE or --url URL")
    try:
        document = json.loads(receipt.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        typer.echo("error: receipt_malformed: the receipt file is not readable JSON", err=True)
        raise typer.Exit(1) from None
    if isinstance(document, dict) and isinstance(document.get("receipt"), dict):
        document = document["receipt"]  # a whole verification response, or a receipt view
    try:
        if keys is not None:
            key_document = json.loads(keys.read_text(encoding="utf-8"))
        else:
            assert url is not None
            key_document = _fetch_json(url, "/v1/keys")
        public_keys = public_keys_from_document(key_document)
        verify(document, public_keys)
    except ReceiptError as exc:
        typer.echo(f"error: {exc.error_code}: {exc.detail}", err=True)
        raise typer.Exit(1) from None
    except (OSError, ValueError):
        typer.echo("error: receipt_malformed: the key document is not readable JSON", err=True)
        raise typer.Exit(1) from None
    typer.echo(
        f"valid: {document['receipt_id']} {document['template_id']} "
        f"v{document['template_version']} -> {document['outcome']} "
        f"(key {document['key_id']}, issued {document['issued_at']})"
    )
    if status and url is not None:
        current = _fetch_json(url, f"/v1/receipts/{document['receipt_id']}/status")
        typer.echo(f"status: {current.get('status')}" + (
            f" ({current['reason']})" if current.get("reason") else ""
        ))  # fmt: skip
        if current.get("status") != "valid":
            raise typer.Exit(2)


def _fetch_json(url: str, path: str) -> Any:
    import httpx

    response = httpx.get(url.rstrip("/") + path, timeout=30)
    if response.status_code != 200:
        typer.echo(f"error: {url}{path} answered {response.status_code}", err=True)
        raise typer.Exit(1)
    return response.json()


@keys_app.command("rotate")
def keys_rotate(
    data_dir: DataDir = None,
    which: Annotated[
        str, typer.Option(help="receipt | audit (checkpoint signing) | audit-hmac | master | all.")
    ] = "receipt",
) -> None:
    """Retire the current key (receipt signing by default) and start a new one; old keys stay,
    so what they signed, MAC'd or wrapped still checks. Restart running servers to use it."""
    import json

    from sandbox import keystore
    from sandbox.config import Settings
    from sandbox.receipts import key_id, public_key_document

    settings = Settings.model_validate({"data_dir": data_dir} if data_dir else {})
    if which != "receipt":
        from sandbox.cli_audit import rotate_keys

        typer.echo(json.dumps(rotate_keys(settings.keys_path, which), indent=2))
        return
    ring = keystore.rotate(settings.keys_path)
    typer.echo(json.dumps(public_key_document(ring), indent=2))
    typer.echo(f"current key: {key_id(ring.current)}", err=True)


@keys_app.command("show")
def keys_show(data_dir: DataDir = None) -> None:
    """Print the public key document (what GET /v1/keys serves), e.g. to publish it."""
    import json

    from sandbox import keystore
    from sandbox.config import Settings
    from sandbox.receipts import public_key_document

    settings = Settings.model_validate({"data_dir": data_dir} if data_dir else {})
    ring, _ = keystore.open_keys(settings.keys_path)
    typer.echo(json.dumps(public_key_document(ring), indent=2))


from sandbox import cli_audit, cli_onboarding, cli_vault  # noqa: E402,F401  (register commands)
