"""Who may act on a dataset: the zone's staff (admins, operators) and the dataset's provider.

Staff, and the dataset's provider, may also upload files for it, load new versions and activate
one (:func:`require_loader`); a provider only into a dataset that exists and is its own.

"The dataset's provider" is a member of role ``provider`` linked (``provider_members``) to the
provider the dataset was loaded for (``dataset_providers``). Staff see quality reports and every
issue, and answer issues; everyone else is refused, or sees only their own tenant's issues. The
local administrator (the CLI on a data directory) is staff of every dataset; the system actor of
none.
"""

from __future__ import annotations

from typing import Any, Final

from sqlalchemy import Connection, select

from sandbox.access.model import Actor, ActorKind, Member, MemberRole
from sandbox.errors import Forbidden, NotFound
from sandbox.store.schema import dataset_providers, datasets, provider_members

__all__ = ["STAFF", "dataset_row", "is_staff", "require_loader", "require_staff"]

STAFF: Final = (MemberRole.ADMIN, MemberRole.OPERATOR)


def dataset_row(con: Connection, dataset: str) -> Any:
    row = con.execute(select(datasets).where(datasets.c.id == dataset)).first()
    if row is None:
        raise NotFound(f"no dataset {dataset!r}")
    return row


def provider_of(con: Connection, dataset: str) -> str | None:
    """The provider a dataset was loaded for, if any."""
    row = con.execute(
        select(dataset_providers.c.provider_id).where(dataset_providers.c.dataset_id == dataset)
    ).first()
    return None if row is None else str(row.provider_id)


def speaks_for(con: Connection, member: Member) -> str | None:
    """The provider a member of role ``provider`` speaks for, if any."""
    row = con.execute(
        select(provider_members.c.provider_id).where(provider_members.c.member_id == member.id)
    ).first()
    return None if row is None else str(row.provider_id)


def is_staff(con: Connection, actor: Actor, dataset: str) -> bool:
    """Admins, operators and the dataset's provider (and the local administrator): they see
    reports and every issue."""
    if actor.kind == ActorKind.LOCAL:
        return True
    member = actor.member
    if member is None:
        return False
    if member.role in STAFF:
        return True
    if member.role != MemberRole.PROVIDER:
        return False
    mine = speaks_for(con, member)
    return mine is not None and mine == provider_of(con, dataset)


def require_staff(con: Connection, actor: Actor, dataset: str) -> None:
    """The dataset must exist (else 404) and ``actor`` be of its staff (else 403)."""
    dataset_row(con, dataset)
    if is_staff(con, actor, dataset):
        return
    member = actor.member
    if member is None:  # the system actor
        raise Forbidden(f"this call is made by a member, not the {actor.kind.value} actor")
    if member.role == MemberRole.PROVIDER:
        raise Forbidden("only the provider of this dataset may do this")
    raise Forbidden(
        "this call needs the role admin, operator or the dataset's provider",
        role=member.role.value,
    )


def require_loader(con: Connection, actor: Actor, dataset: str) -> str | None:
    """Refuse unless ``actor`` may upload, load and activate versions of ``dataset``: the zone's
    staff (and the local administrator), or a member of role ``provider`` that speaks for the
    provider of the dataset, which must exist (else 404). Returns that provider for a provider
    member, ``None`` for staff. Other roles are refused before anything is read."""
    if actor.kind == ActorKind.LOCAL:
        return None
    member = actor.member
    if member is None:  # the system actor
        raise Forbidden(f"this call is made by a member, not the {actor.kind.value} actor")
    if member.role in STAFF:
        return None
    if member.role != MemberRole.PROVIDER:
        raise Forbidden(
            "this call needs the role admin, operator or the dataset's provider",
            role=member.role.value,
        )
    dataset_row(con, dataset)
    mine = speaks_for(con, member)
    if mine is None or mine != provider_of(con, dataset):
        raise Forbidden("only the provider of this dataset may do this")
    return mine
