"""Tenants, members, API keys and authentication.

API keys are shown once and stored only as SHA-256 hashes (the keys are 256-bit random tokens, so
a fast hash is enough). A member's role decides what it may call; deny by default.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
import uuid
import weakref
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sqlalchemy import Engine, select, update

from sandbox import audit
from sandbox.errors import Forbidden, InvalidRequest, NotFound, Unauthorized
from sandbox.store import api_keys, members, now, snapshot, tenants

KEY_PREFIX = "veil_"
SUBJECT_ID = re.compile(r"^[0-9A-Za-z][0-9A-Za-z_.-]{0,63}$")


class MemberRole(StrEnum):
    ADMIN = "admin"
    OPERATOR = "operator"
    PROVIDER = "provider"
    ANALYST = "analyst"
    VERIFIER = "verifier"
    AUDITOR = "auditor"
    SUBJECT = "subject"  # speaks for one data subject (an enterprise): consents, own receipts


class TenantKind(StrEnum):
    BANK = "bank"
    RESEARCH = "research"
    GOVERNMENT = "government"
    OTHER = "other"


class PurposeClass(StrEnum):
    PUBLIC_WELFARE = "public_welfare"  # free within conditions
    COMMERCIAL = "commercial"  # paid, capped tariff


# Zone staff see every tenant; everyone else only their own (others answer 404).
ZONE_WIDE = (MemberRole.ADMIN, MemberRole.AUDITOR)


@dataclass(frozen=True)
class Tenant:
    id: str
    name: str
    kind: TenantKind
    purpose_class: PurposeClass


@dataclass(frozen=True)
class Member:
    id: str
    tenant_id: str
    name: str
    role: MemberRole
    subject_id: str | None = None  # the subject a ``subject`` member speaks for
    key_id: str | None = field(default=None, compare=False)  # the API key it authenticated with

    def require(self, *roles: MemberRole) -> None:
        """Refuse unless this member has one of ``roles``."""
        if self.role not in roles:
            allowed = ", ".join(r.value for r in roles)
            raise Forbidden(f"this call needs the role {allowed}", role=self.role.value)

    def sees_tenant(self, tenant_id: str) -> bool:
        return self.role in ZONE_WIDE or tenant_id == self.tenant_id


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:16]}"


def create_tenant(engine: Engine, name: str, kind: str, purpose_class: str) -> str:
    try:
        kind, purpose_class = TenantKind(kind), PurposeClass(purpose_class)
    except ValueError:
        raise InvalidRequest(
            "kind is bank, research, government or other; purpose_class is public_welfare or "
            "commercial",
            field="kind" if kind not in TenantKind.__members__.values() else "purpose_class",
        ) from None
    if not name.strip():
        raise InvalidRequest("a tenant needs a name", field="name")
    tenant_id = new_id("ten")
    with engine.begin() as con:
        con.execute(
            tenants.insert().values(
                id=tenant_id,
                name=name,
                kind=kind.value,
                purpose_class=purpose_class.value,
                created_at=now(),
            )
        )
        audit.append(
            con,
            audit.Event(
                "admin",
                "tenant.create",
                tenant=tenant_id,
                refs={"kind": kind.value, "purpose_class": purpose_class.value},
                sealed={"name": name},
            ),
        )
    return tenant_id


def _tenant(row: Any) -> Tenant:
    return Tenant(row.id, row.name, TenantKind(row.kind), PurposeClass(row.purpose_class))


def list_tenants(engine: Engine, viewer: Member | None) -> list[Tenant]:
    query = select(tenants).order_by(tenants.c.created_at, tenants.c.id)
    if viewer is not None and viewer.role not in ZONE_WIDE:
        query = query.where(tenants.c.id == viewer.tenant_id)
    with engine.connect() as con:
        return [_tenant(r) for r in con.execute(query)]


def get_tenant(engine: Engine, viewer: Member | None, tenant_id: str) -> Tenant:
    """A tenant the viewer may see (``None``: the local administrator); otherwise not found."""
    if viewer is not None and not viewer.sees_tenant(tenant_id):
        raise NotFound(f"no tenant {tenant_id!r}")
    with engine.connect() as con:
        row = con.execute(select(tenants).where(tenants.c.id == tenant_id)).first()
    if row is None:
        raise NotFound(f"no tenant {tenant_id!r}")
    return _tenant(row)


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


def issue_key(engine: Engine, member_id: str) -> tuple[str, str]:
    """A new API key for a member: (key id, key). The key is shown once, stored as a hash."""
    key_id = new_id("key")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    with engine.begin() as con:
        con.execute(
            api_keys.insert().values(
                id=key_id, member_id=member_id, key_hash=hash_key(key), created_at=now()
            )
        )
        audit.append(con, _key_event(con, "key.issue", member_id, key_id))
    return key_id, key


def _key_event(con: Any, action: str, member_id: str, key_id: str) -> audit.Event:
    tenant = con.execute(select(members.c.tenant_id).where(members.c.id == member_id)).scalar()
    return audit.Event("admin", action, tenant=tenant, refs={"member": member_id, "key": key_id})


def revoke_key(engine: Engine, member_id: str, key_id: str) -> None:
    with engine.begin() as con:
        done = con.execute(
            update(api_keys)
            .where(
                api_keys.c.id == key_id,
                api_keys.c.member_id == member_id,
                api_keys.c.revoked_at.is_(None),
            )
            .values(revoked_at=now())
        )
        if done.rowcount:
            audit.append(con, _key_event(con, "key.revoke", member_id, key_id))
    for cache in list(_CACHES):  # committed: no cache in this process may still admit it
        cache.forget(key_id)
    if done.rowcount == 0:
        raise NotFound(f"no active key {key_id!r}")


def list_keys(engine: Engine, member_id: str) -> list[dict[str, object]]:
    with engine.connect() as con:
        rows = con.execute(
            select(api_keys.c.id, api_keys.c.created_at, api_keys.c.revoked_at)
            .where(api_keys.c.member_id == member_id)
            .order_by(api_keys.c.created_at)
        ).all()
    return [
        {
            "id": r.id,
            "created_at": r.created_at.isoformat(),
            "revoked_at": r.revoked_at.isoformat() if r.revoked_at else None,
        }
        for r in rows
    ]


def create_member(
    engine: Engine,
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
            audit.Event(
                "admin",
                "member.create",
                tenant=tenant_id,
                refs={"member": member_id, "role": role.value},
                sealed=sealed,
            ),
        )
    _, key = issue_key(engine, member_id)
    return member_id, key


def authenticate(engine: Engine, authorization: str | None) -> Member:
    """The member behind a ``Bearer`` API key; unknown, revoked or missing keys look alike."""
    if not authorization or not authorization.startswith("Bearer "):
        raise Unauthorized("send an API key as 'Authorization: Bearer <key>'")
    key = authorization.removeprefix("Bearer ").strip()
    query = (
        select(
            members.c.id,
            members.c.tenant_id,
            members.c.name,
            members.c.role,
            members.c.subject_id,
            api_keys.c.id.label("key_id"),
        )
        .join(api_keys, api_keys.c.member_id == members.c.id)
        .where(api_keys.c.key_hash == hash_key(key), api_keys.c.revoked_at.is_(None))
    )
    with engine.connect() as con:
        row = snapshot(con).execute(query).first()
    if row is None:
        raise Unauthorized("unknown or revoked API key")
    return Member(
        row.id, row.tenant_id, row.name, MemberRole(row.role), row.subject_id, key_id=row.key_id
    )


_CACHES: weakref.WeakSet[KeyCache] = weakref.WeakSet()  # this process's, for revoke_key


class KeyCache:
    """Recently authenticated API keys, so that a busy caller's requests skip the state store.

    An entry lives ``ttl_s`` seconds (0: no cache). A key revoked in this process
    (:func:`revoke_key`) is forgotten by every cache at once; a key revoked by another process
    still works here until its entry expires. Only successes are kept, under the key's hash;
    unknown keys always ask the store (and the rate limit on 401s bounds how often)."""

    MAX_ENTRIES = 10_000

    def __init__(self, engine: Engine, ttl_s: float) -> None:
        self.engine = engine
        self.ttl_s = ttl_s
        self._entries: dict[str, tuple[Member, float]] = {}
        self._lock = threading.Lock()
        self._forgotten = 0  # revocations seen: a lookup that overlapped one is not kept
        _CACHES.add(self)

    def cached(self, authorization: str | None) -> Member | None:
        """The member behind ``authorization`` if it is cached and fresh (no I/O)."""
        if self.ttl_s <= 0 or not authorization or not authorization.startswith("Bearer "):
            return None
        digest = hash_key(authorization.removeprefix("Bearer ").strip())
        with self._lock:
            entry = self._entries.get(digest)
        if entry is None or entry[1] <= time.monotonic():
            return None
        return entry[0]

    def authenticate(self, authorization: str | None) -> Member:
        """:func:`authenticate`, from the cache when possible."""
        found = self.cached(authorization)
        if found is not None:
            return found
        with self._lock:
            forgotten = self._forgotten
        found = authenticate(self.engine, authorization)
        if self.ttl_s > 0:
            assert authorization is not None  # authenticate refused a missing header
            digest = hash_key(authorization.removeprefix("Bearer ").strip())
            with self._lock:
                if self._forgotten != forgotten:
                    return found  # read before a revocation committed: not for later requests
                if len(self._entries) >= self.MAX_ENTRIES:
                    self._entries.clear()
                self._entries[digest] = (found, time.monotonic() + self.ttl_s)
        return found

    def forget(self, key_id: str) -> None:
        """Drop the cached entry of ``key_id`` (just revoked, see :func:`revoke_key`)."""
        with self._lock:
            self._forgotten += 1
            for digest, (member, _) in list(self._entries.items()):
                if member.key_id == key_id:
                    del self._entries[digest]
