"""Verification receipts (checked offline) and the key directory's keys (rotate, show)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from sandbox.cli.app import DataDir, app

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
    from sandbox.keys.signing import public_keys_from_document
    from sandbox.verification.receipts import verify

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
    so what they signed, MAC'd or wrapped still checks. Running servers on the same key
    directory pick it up without a restart."""
    import json

    from sandbox.config import Settings
    from sandbox.keys import directory as keystore
    from sandbox.keys.signing import key_id, public_key_document

    settings = Settings.model_validate({"data_dir": data_dir} if data_dir else {})
    if which != "receipt":
        from sandbox.cli.audit import rotate_keys

        typer.echo(json.dumps(rotate_keys(settings.keys_path, which), indent=2))
        return
    ring = keystore.rotate(settings.keys_path)
    typer.echo(json.dumps(public_key_document(ring), indent=2))
    typer.echo(f"current key: {key_id(ring.current)}", err=True)


@keys_app.command("show")
def keys_show(data_dir: DataDir = None) -> None:
    """Print the public key document (what GET /v1/keys serves), e.g. to publish it."""
    import json

    from sandbox.config import Settings
    from sandbox.keys import directory as keystore
    from sandbox.keys.signing import public_key_document

    settings = Settings.model_validate({"data_dir": data_dir} if data_dir else {})
    ring, _ = keystore.open_keys(settings.keys_path)
    typer.echo(json.dumps(public_key_document(ring), indent=2))
