"""API keys and authentication.

API keys are shown once and stored only as SHA-256 hashes (the keys are 256-bit random tokens, so
a fast hash is enough). Unknown, revoked and missing keys look alike to the caller.
"""

from __future__ import annotations

import secrets
import threading
import time
import weakref
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select, update

from sandbox.access.model import KEY_PREFIX, Actor, Member, MemberRole, hash_key, new_id
from sandbox.audit.entry import Event
from sandbox.audit.log import AuditLog
from sandbox.clock import now, utc
from sandbox.errors import NotFound, Unauthorized
from sandbox.store.db import snapshot
from sandbox.store.schema import api_keys, members


def issue_key(engine: Engine, audit: AuditLog, actor: Actor, member_id: str) -> tuple[str, str]:
    """A new API key for a member: (key id, key). The key is shown once, stored as a hash."""
    key_id = new_id("key")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    with engine.begin() as con:
        con.execute(
            api_keys.insert().values(
                id=key_id, member_id=member_id, key_hash=hash_key(key), created_at=now()
            )
        )
        audit.append(con, _key_event(con, "key.issue", member_id, key_id), actor)
    return key_id, key


def _key_event(con: Any, action: str, member_id: str, key_id: str) -> Event:
    tenant = con.execute(select(members.c.tenant_id).where(members.c.id == member_id)).scalar()
    return Event("admin", action, tenant=tenant, refs={"member": member_id, "key": key_id})


def revoke_key(engine: Engine, audit: AuditLog, actor: Actor, member_id: str, key_id: str) -> None:
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
            audit.append(con, _key_event(con, "key.revoke", member_id, key_id), actor)
    for cache in list(_CACHES):  # committed: no cache in this process may still admit it
        cache.forget(key_id)
    if done.rowcount == 0:
        raise NotFound(f"no active key {key_id!r}")


@dataclass(frozen=True)
class ApiKey:
    """An API key as administration lists it: its id and dates, never the key or its hash."""

    id: str
    created_at: datetime
    revoked_at: datetime | None


def list_keys(engine: Engine, member_id: str) -> list[ApiKey]:
    with engine.connect() as con:
        rows = con.execute(
            select(api_keys.c.id, api_keys.c.created_at, api_keys.c.revoked_at)
            .where(api_keys.c.member_id == member_id)
            .order_by(api_keys.c.created_at)
        ).all()
    return [
        ApiKey(r.id, utc(r.created_at), None if r.revoked_at is None else utc(r.revoked_at))
        for r in rows
    ]


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
