"""``veil issue``: issues about a dataset's data (数据异议处理).

The same calls as ``POST/GET /v1/datasets/{id}/issues…`` (docs/onboarding.md#issues), with the
same rules for who may raise, see and answer, on a data directory or against a server
(:mod:`sandbox.cli.onboarding`). On a data directory, subject references use the zone secret of
its key directory, as the server does, so a correction revokes the same receipts. Registered on
``sandbox.cli.app`` when :mod:`sandbox.cli.main` imports this module.
"""

from __future__ import annotations

from typing import Annotated

import typer

from sandbox.cli.app import app
from sandbox.cli.onboarding import DataDir, IdemKey, Key, Url, run

issue_app = typer.Typer(no_args_is_help=True, help="Issues about a dataset's data (数据异议处理).")
app.add_typer(issue_app, name="issue")


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
    run(
        data_dir,
        url,
        key,
        lambda s, actor: s.issues.raise_issue(actor, dataset, title, description, subject),
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
    run(
        data_dir,
        url,
        key,
        lambda s, actor: s.issues.list_issues(actor, dataset),
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
    run(
        data_dir,
        url,
        key,
        lambda s, actor: s.issues.get_issue(actor, dataset, number),
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
    run(
        data_dir,
        url,
        key,
        lambda s, actor: s.issues.answer_issue(actor, dataset, number, answer),
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
    run(
        data_dir,
        url,
        key,
        lambda s, actor: s.issues.resolve_issue(
            actor, dataset, number, kind, version, note, revoke_receipts=revoke_receipts
        ),
        lambda c: c.resolve_issue(dataset, number, resolution, idempotency_key),
        idempotency_key=idempotency_key,
    )
