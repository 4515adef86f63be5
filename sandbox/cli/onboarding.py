"""What the ``veil`` commands of data onboarding share (:mod:`sandbox.cli.zones`,
:mod:`sandbox.cli.loads`, :mod:`sandbox.cli.issues`): their options, and where a command works.

Each works on a data directory (``--data-dir`` or ``VEIL_DATA_DIR``) as the local administrator
(its changes recorded in the data directory's audit log), or with ``--url`` and ``--key`` (or
``VEIL_URL`` / ``VEIL_KEY``) against a running server as the member whose API key it is. The
logic is :mod:`sandbox.onboarding` (docs/onboarding.md); over HTTP, :class:`sandbox.client.Client`.
Either way a command prints what the API answers: on a data directory, the result through its
view (:func:`wire`). This module registers no command.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from sandbox.cli.app import data_dir_settings, echo_result, local_audit_log

if TYPE_CHECKING:
    from sandbox.access.model import Actor
    from sandbox.client import Client
    from sandbox.onboarding.services import Onboarding

__all__ = ["DataDir", "IdemKey", "Key", "Url", "client", "onboarding", "run", "wire"]

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


@contextmanager
def onboarding(
    data_dir: Path | None, *, subjects: bool = False, signing: bool = False
) -> Iterator[Onboarding]:
    """The onboarding services on a data directory, recording in its audit log; a
    ``VeilError`` becomes a clean exit 1.

    ``subjects``: key subject references with the zone secret, as the server does (issues about
    a subject must match its receipts). ``signing``: with the receipt signing key (an exit
    certificate is signed with it)."""
    from sandbox.errors import VeilError
    from sandbox.keys import directory as keystore
    from sandbox.onboarding.services import Onboarding
    from sandbox.store import db

    settings = data_dir_settings(data_dir)
    engine = db.connect(settings.state_url)
    try:
        yield Onboarding.build(
            engine,
            local_audit_log(engine, settings),
            settings.workspace_dir,
            quota_bytes=settings.load_quota_bytes,
            master_keys=keystore.master_keys(settings.keys_path, master_key=settings.master_key),
            upload_max_bytes=settings.upload_max_bytes,
            zone_secret=keystore.open_keys(settings.keys_path)[1] if subjects else None,
            signing=keystore.open_keys(settings.keys_path)[0] if signing else None,
        )
    except VeilError as exc:
        typer.echo(f"error: {exc.error_code}: {exc.detail}", err=True)
        raise typer.Exit(1) from None
    finally:
        engine.dispose()


@contextmanager
def client(url: str, key: str | None) -> Iterator[Client]:
    """A client of the server at ``url``; a problem it answers becomes a clean exit 1."""
    from sandbox.client import Client
    from sandbox.errors import VeilError

    if not key:
        raise typer.BadParameter("--url needs --key (or VEIL_KEY)", param_hint="--key")
    found = Client(url, key)
    try:
        yield found
    except VeilError as exc:
        typer.echo(f"error: {exc.error_code}: {exc.detail}", err=True)
        raise typer.Exit(1) from None
    finally:
        found.close()


def wire(result: Any) -> Any:
    """An onboarding result as the API sends it: through its view (a list item by item; text,
    e.g. an HTML report, as it is)."""
    from sandbox.api.responses import authority, catalog
    from sandbox.api.responses import onboarding as views

    if result is None or isinstance(result, str):
        return result
    if isinstance(result, list | tuple):
        return [wire(item) for item in result]
    shown = (
        catalog.Zone,
        views.Provider,
        views.ProviderMember,
        views.Version,
        views.VersionList,
        views.Quality,
        views.Issue,
        authority.Authorisation,
        authority.ExitCertificate,
    )
    view = {v.mirrors: v for v in shown}.get(type(result))
    if view is None:
        raise TypeError(f"no view of {type(result).__name__}")
    return view.of(result).model_dump(mode="json", exclude_unset=True)


def run(
    data_dir: Path | None,
    url: str | None,
    key: str | None,
    local: Callable[[Onboarding, Actor], Any],
    remote: Callable[[Client], Any],
    *,
    idempotency_key: str | None = None,
    subjects: bool = False,
    signing: bool = False,
) -> None:
    """Run a command on the data directory (as the local administrator) or against the
    server; print its result as the API sends it."""
    if url:
        with client(url, key) as remote_client:
            result = remote(remote_client)
    else:
        from sandbox.access.model import Actor

        if idempotency_key is not None:
            raise typer.BadParameter("needs --url", param_hint="--idempotency-key")
        with onboarding(data_dir, subjects=subjects, signing=signing) as services:
            result = wire(local(services, Actor.local()))
    echo_result(result)
