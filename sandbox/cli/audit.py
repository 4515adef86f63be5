"""``veil audit``: verify the audit log, write a checkpoint, prove one entry; key rotation.

``veil audit verify --data-dir D`` checks everything with the key directory's keys (MACs
included). ``veil audit verify --url U --key K`` is an auditor's independent check: it
downloads the entries, checkpoints and audit public keys and verifies hashes, links and signed
roots itself, then also prints the server's own full check (which alone can test the MACs).
Exit status: 0 when nothing is wrong, 1 otherwise, with one line per problem.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from sandbox.cli.app import DataDir, Key, Url, app, data_dir_settings

audit_app = typer.Typer(no_args_is_help=True, help="The tamper-evident audit log.")
app.add_typer(audit_app, name="audit")

ROTATABLE = ("receipt", "audit", "audit-hmac", "master", "all")


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def _local_keys(settings: Any) -> Any:
    """The audit keys of ``settings`` (key directory, or VEIL_MASTER_KEY/VEIL_AUDIT_HMAC_KEY),
    never created: verification must not run against fresh keys."""
    from sandbox.errors import VeilError
    from sandbox.keys import directory as keystore

    key_dir = settings.keys_path
    try:
        return keystore.audit_keys(
            key_dir,
            master_key=settings.master_key,
            hmac_key=settings.audit_hmac_key,
            create=False,
        )
    except (VeilError, FileNotFoundError) as exc:
        _fail(f"the audit keys in {key_dir} do not load ({type(exc).__name__}): {exc}")


def _print_report(title: str, report: dict[str, Any]) -> bool:
    macs = "with MACs" if report["macs_checked"] else "without MACs"
    verdict = "ok" if report["ok"] else f"{len(report['problems'])} problem(s)"
    typer.echo(
        f"{title}: {report['entries']} entries, {report['checkpoints']} checkpoints, "
        f"{macs}: {verdict}"
    )
    uncovered = report.get("uncovered", 0)
    if uncovered:
        typer.echo(f"  {uncovered} entries after the last checkpoint: no signature covers them")
    if report.get("witnessed"):
        typer.echo(f"  witness: {report['witnessed']} heads checked")
    for p in report["problems"]:
        typer.echo(f"  {p['where']} {p['ref']}: {p['code']}: {p['detail']}")
    return bool(report["ok"])


def _pages(client: Any, path: str, member: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    after = 0
    while True:
        page = client.call("GET", path, params={"after": after, "limit": 1000})
        found.extend(page[member])
        if page["next"] is None:
            return found
        after = int(page["next"])


def _body(entry: Any) -> str:
    """The bytes an entry was hashed as: its canonical JSON (a body that has none was not
    written by Veil and fails its hash check either way)."""
    from sandbox.audit.verify import canonical_entry
    from sandbox.errors import NotCanonicalizable

    try:
        return canonical_entry(entry).decode("utf-8")
    except NotCanonicalizable:
        return json.dumps(entry)


def _report(report: Any) -> dict[str, Any]:
    """A verification report as the JSON the server answers it with."""
    from sandbox.api.responses.audit import AuditReport
    from sandbox.cli.local import wire

    return wire(AuditReport, report)


def _witness(path: Path | None) -> list[dict[str, Any]] | None:
    """The heads of the witness at ``path`` (``None``: no witness given)."""
    from sandbox.audit.witness import read_witness

    if path is None:
        return None
    try:
        heads = read_witness(path)
    except OSError as exc:
        _fail(f"the witness {path} does not read ({type(exc).__name__})")
    if not heads:
        _fail(f"the witness {path} holds no checkpoint")
    typer.echo(f"witness: {len(heads)} heads in {path}")
    return heads


def _remote_report(client: Any, witness: list[dict[str, Any]] | None) -> dict[str, Any]:
    """Verify what the server hands out, with its published audit keys only (no MACs)."""
    from sandbox.audit.verify import CheckpointRow, EntryRow, verify_rows
    from sandbox.keys.signing import public_keys_from_document

    public = public_keys_from_document(client.call("GET", "/v1/audit/keys"))
    checkpoints = [
        CheckpointRow(int(c["id"]), c["document"])
        for c in _pages(client, "/v1/audit/checkpoints", "checkpoints")
    ]
    rows = [
        EntryRow(int(e["seq"]), _body(e["entry"]), e["hash"], e["mac"])
        for e in _pages(client, "/v1/audit", "entries")
    ]
    return _report(verify_rows(rows, checkpoints, public, None, None, witness))


Witness = Annotated[
    Path | None,
    typer.Option(
        help="A witness file or directory (VEIL_AUDIT_WITNESS of the servers): prove the log "
        "extends every checkpoint it holds."
    ),
]


@audit_app.command("verify")
def verify_command(
    data_dir: DataDir = None, url: Url = None, key: Key = None, witness: Witness = None
) -> None:
    """Verify every entry, the hash chain, the MACs, the head, the checkpoint chain and (with
    --witness) every head the witness holds."""
    heads = _witness(witness)
    if url:
        from sandbox.client import Client
        from sandbox.errors import VeilError

        if not key:
            raise typer.BadParameter("--url needs --key (or VEIL_KEY)", param_hint="--key")
        client = Client(url, key)
        try:
            independent = _remote_report(client, heads)
            server = client.call("GET", "/v1/audit/verify")
        except VeilError as exc:
            _fail(f"{exc.error_code}: {exc.detail}")
        finally:
            client.close()
        ok = _print_report("independent check", independent)
        ok = _print_report("server check", server) and ok
    else:
        from sandbox.audit import verify as audit_verify
        from sandbox.store import db

        settings = data_dir_settings(data_dir)
        keys = _local_keys(settings)
        engine = db.connect(settings.state_url)
        try:
            report = audit_verify.verify(engine, keys, witness=heads)
            ok = _print_report("audit log", _report(report))
        finally:
            engine.dispose()
    if not ok:
        raise typer.Exit(1)


@audit_app.command("checkpoint")
def checkpoint_command(data_dir: DataDir = None) -> None:
    """Check the entries since the last checkpoint, then write a signed checkpoint over every
    entry now (also to VEIL_AUDIT_WITNESS), and print it."""
    from sandbox.audit.checkpoint import Checkpointer
    from sandbox.errors import AuditChainBroken
    from sandbox.store import db

    settings = data_dir_settings(data_dir)
    keys = _local_keys(settings)
    engine = db.connect(settings.state_url)
    writer = Checkpointer(
        engine,
        keys.signing,
        settings.audit_checkpoint_s,
        hmac=keys.hmac,
        witness=settings.audit_witness,
    )
    try:
        document = writer.write(force=True)
    except AuditChainBroken as exc:
        _fail(f"{exc.error_code}: {exc.detail}: no checkpoint written (run `veil audit verify`)")
    finally:
        engine.dispose()
    typer.echo(json.dumps(document, indent=2))


@audit_app.command("proof")
def proof_command(
    seq: Annotated[int, typer.Argument(min=1, help="The entry's sequence number.")],
    data_dir: DataDir = None,
    url: Url = None,
    key: Key = None,
) -> None:
    """Print an entry's inclusion proof against the latest checkpoint, and check it."""
    from sandbox.audit.checkpoint import inclusion, verify_inclusion_proof
    from sandbox.errors import VeilError
    from sandbox.keys.signing import public_key_document, public_keys_from_document

    try:
        if url:
            from sandbox.client import Client

            if not key:
                raise typer.BadParameter("--url needs --key (or VEIL_KEY)", param_hint="--key")
            client = Client(url, key)
            try:
                proof = client.call("GET", f"/v1/audit/entries/{seq}/proof")
                keys_doc = client.call("GET", "/v1/audit/keys")
            finally:
                client.close()
        else:
            from sandbox.api.responses.audit import InclusionProof
            from sandbox.cli.local import wire
            from sandbox.store import db

            settings = data_dir_settings(data_dir)
            keys = _local_keys(settings)
            keys_doc = public_key_document(keys.signing)
            engine = db.connect(settings.state_url)
            try:
                proof = wire(InclusionProof, inclusion(engine, seq))
            finally:
                engine.dispose()
    except VeilError as exc:
        _fail(f"{exc.error_code}: {exc.detail}")
    typer.echo(json.dumps(proof, indent=2))
    problem = verify_inclusion_proof(proof, public_keys_from_document(keys_doc))
    if problem is not None:
        _fail(f"{problem}: entry {seq} is not proven to be in the checkpoint")
    typer.echo(
        f"included: entry {seq} in the checkpoint of tree size {proof['tree_size']} "
        f"(key {proof['checkpoint']['key_id']}, {proof['checkpoint']['at']})",
        err=True,
    )


def rotate_keys(key_dir: Path, which: str) -> dict[str, Any]:
    """Rotate the named key (or all): what is current afterwards. Old keys stay, so
    everything signed, MAC'd or wrapped before still checks; running servers pick up the new."""
    from sandbox.keys import directory as keystore
    from sandbox.keys.signing import public_key_document

    if which not in ROTATABLE:
        raise typer.BadParameter(f"one of {', '.join(ROTATABLE)}", param_hint="--which")
    done: dict[str, Any] = {}
    if which in ("receipt", "all"):
        done["receipt"] = public_key_document(keystore.rotate(key_dir))
    if which in ("audit", "all"):
        done["audit"] = public_key_document(keystore.rotate_audit_signing(key_dir))
    if which in ("audit-hmac", "all"):
        done["audit_hmac"] = {"current": keystore.rotate_audit_hmac(key_dir).current_id}
    if which in ("master", "all"):
        done["master"] = {"current": keystore.rotate_master(key_dir).current_id}
    return done
