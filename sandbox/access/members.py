"""Members of a tenant, each with one role; a ``subject`` member speaks for one data subject."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, select

from sandbox.access.keys import issue_key
from sandbox.access.model import SUBJECT_ID, Actor, Member, MemberRole, new_id
from sandbox.audit.entry import Event
from sandbox.audit.log import AuditLog
from sandbox.clock import now
from sandbox.errors import InvalidRequest, NotFound
from sandbox.store.schema import members


def list_members(engine: Engine, tenant_id: str) -> list[Member]:
    with engine.connect() as con:
        rows = con.execute(
            select(members).where(members.c.tenant_id == tenant_id).order_by(members.c.created_at)
        ).all()
    return [_member(r) for r in rows]


def _member(row: Any) -> Member:
    return Member(row.id, row.tenant_id, row.name, MemberRole(row.role), row.subject_id)


def get_member(engine: Engine, tenant_id: str, member_id: str) -> Member:
    with engine.connect() as con:
        row = con.execute(
            select(members).where(members.c.id == member_id, members.c.tenant_id == tenant_id)
        ).first()
    if row is None:
        raise NotFound(f"no member {member_id!r}")
    return _member(row)


def create_member(
    engine: Engine,
    audit: AuditLog,
    actor: Actor,
    tenant_id: str,
    name: str,
    role: MemberRole,
    *,
    subject_id: str | None = None,
) -> tuple[str, str]:
    """A new member and its first API key; the key is returned once and stored only as a hash.

    A ``subject`` member is bound to the subject id it speaks for (a credit code); no other role
    has one."""
    if (role == MemberRole.SUBJECT) != (subject_id is not None):
        raise InvalidRequest("a subject member, and only a subject member, names its subject")
    if subject_id is not None and not SUBJECT_ID.match(subject_id):
        raise InvalidRequest(
            "a subject id is 1 to 64 letters, digits, '_', '.' or '-'", field="subject"
        )
    member_id = new_id("mem")
    with engine.begin() as con:
        con.execute(
            members.insert().values(
                id=member_id,
                tenant_id=tenant_id,
                name=name,
                role=role.value,
                subject_id=subject_id,
                created_at=now(),
            )
        )
        sealed: dict[str, str] = {"name": name}
        if subject_id is not None:
            sealed["subject"] = subject_id
        audit.append(
            con,
            Event(
                "admin",
                "member.create",
                tenant=tenant_id,
                refs={"member": member_id, "role": role.value},
                sealed=sealed,
            ),
            actor,
        )
    _, key = issue_key(engine, audit, actor, member_id)
    return member_id, key
