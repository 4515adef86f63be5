"""Tenants, members, API keys and authentication.

API keys are shown once and stored only as SHA-256 hashes (the keys are 256-bit random tokens, so
a fast hash is enough). A member's role decides what it may call; deny by default.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import Engine, select

from sandbox.errors import Forbidden, Unauthorized
from sandbox.store import api_keys, members, now, tenants

KEY_PREFIX = "veil_"


class MemberRole(StrEnum):
    ADMIN = "admin"
    OPERATOR = "operator"
    PROVIDER = "provider"
    ANALYST = "analyst"
    VERIFIER = "verifier"
    AUDITOR = "auditor"


@dataclass(frozen=True)
class Member:
    id: str
    tenant_id: str
    name: str
    role: MemberRole

    def require(self, *roles: MemberRole) -> None:
        """Refuse unless this member has one of ``roles``."""
        if self.role not in roles:
            allowed = ", ".join(r.value for r in roles)
            raise Forbidden(f"this call needs the role {allowed}", role=self.role.value)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:16]}"


def create_tenant(engine: Engine, name: str, kind: str, purpose_class: str) -> str:
    tenant_id = new_id("ten")
    with engine.begin() as con:
        con.execute(
            tenants.insert().values(
                id=tenant_id, name=name, kind=kind, purpose_class=purpose_class, created_at=now()
            )
        )
    return tenant_id


def create_member(engine: Engine, tenant_id: str, name: str, role: MemberRole) -> tuple[str, str]:
    """A new member and its first API key; the key is returned once and stored only as a hash."""
    member_id = new_id("mem")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    with engine.begin() as con:
        con.execute(
            members.insert().values(
                id=member_id, tenant_id=tenant_id, name=name, role=role.value, created_at=now()
            )
        )
        con.execute(
            api_keys.insert().values(
                id=new_id("key"), member_id=member_id, key_hash=hash_key(key), created_at=now()
            )
        )
    return member_id, key


def authenticate(engine: Engine, authorization: str | None) -> Member:
    """The member behind a ``Bearer`` API key; unknown, revoked or missing keys look alike."""
    if not authorization or not authorization.startswith("Bearer "):
        raise Unauthorized("send an API key as 'Authorization: Bearer <key>'")
    key = authorization.removeprefix("Bearer ").strip()
    query = (
        select(members.c.id, members.c.tenant_id, members.c.name, members.c.role)
        .join(api_keys, api_keys.c.member_id == members.c.id)
        .where(api_keys.c.key_hash == hash_key(key), api_keys.c.revoked_at.is_(None))
    )
    with engine.connect() as con:
        row = con.execute(query).first()
    if row is None:
        raise Unauthorized("unknown or revoked API key")
    return Member(id=row.id, tenant_id=row.tenant_id, name=row.name, role=MemberRole(row.role))
