"""The audit log: every request and every admin action, hash-chained, MAC'd, partly sealed.

One :class:`AuditLog` per state store, built once (the server's lifespan, the CLI's local mode, the
demo build) and handed to every service that changes state; a service without one refuses to be
built (:func:`require_log`): nothing that changes state goes unrecorded.

An entry is written *inside the transaction of the change it records* (:meth:`AuditLog.append`
takes the caller's open connection and the :class:`~sandbox.access.model.Actor`): a charge and its
entry commit together or not at all. Requests that change nothing (reads, refusals, errors, 401s)
get their entry from the HTTP middleware (``sandbox/api/audit.py``) once the handler is done,
unless a service already wrote one in its own transaction — so the hot paths pay no extra commit.

Each entry is canonical JSON (:mod:`sandbox.audit.entry`) holding the previous entry's hash
(``prev``); its ``hash`` is SHA-256 of those bytes, its ``mac`` HMAC-SHA256 of the hash under the
current audit HMAC key (named in the entry). Sensitive members — SQL text, subject ids, claims,
names, the client address — never appear in clear: they are sealed together into one AES-256-GCM
envelope ``{"dk", "nonce", "ct"}`` under a *data key*, which is stored wrapped by the master key
(one data key per process and UTC day). Rotating the master key only changes how new data keys
are wrapped; old entries are never rewritten.

Entries are appended under a lock on the single ``audit_head`` row, so concurrent transactions
(threads, processes, PostgreSQL or SQLite) chain one after another with ``seq`` contiguous from 1.
The format and the verification algorithm are in ``docs/audit.md``; checkpoints in
:mod:`sandbox.audit.checkpoint`, verification in :mod:`sandbox.audit.verify`.

Logs carry sequence numbers, kinds and codes only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import date, datetime
from pathlib import Path
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import SecretStr
from sqlalchemy import Connection, Engine, bindparam, event, select, update
from sqlalchemy.dialects import postgresql, sqlite

from sandbox.access.model import Actor
from sandbox.audit.entry import FORMAT, GENESIS, Event, canonical_body, format_at
from sandbox.audit.request import RequestRecord
from sandbox.canonical import b64url_decode, b64url_encode
from sandbox.clock import now
from sandbox.errors import MasterKeyError, ServiceUnavailable
from sandbox.keys import directory as keystore
from sandbox.keys.audit import AuditKeys
from sandbox.store.schema import audit_data_keys, audit_entries, audit_head
from sandbox.store.statements import Prepared

__all__ = ["AuditLog", "require_log"]

log = logging.getLogger("veil.audit")
SEAL_AAD: Final = b"veil.audit.seal.v1\x00"
NONCE_BYTES: Final = 12
_HEAD_ID: Final = 1
_LOCK_HEAD = Prepared(
    select(audit_head.c.seq, audit_head.c.hash)
    .where(audit_head.c.id == _HEAD_ID)
    .with_for_update()  # PostgreSQL: appends queue here; SQLite: BEGIN IMMEDIATE did it
)
_INSERT_ENTRY = Prepared(audit_entries.insert())  # every column, given on each call
_MOVE_HEAD = Prepared(
    update(audit_head)
    .where(audit_head.c.id == _HEAD_ID)
    .values(seq=bindparam("new_seq"), hash=bindparam("new_hash"))
)


@dataclass(frozen=True)
class _DataKey:
    id: str
    key: bytes
    master_key_id: str
    wrapped: str
    day: date
    created_at: datetime
    confirmed: bool = False  # seen committed in the database


class AuditLog:
    """Appends entries for one engine with one set of keys."""

    def __init__(self, engine: Engine, keys: AuditKeys) -> None:
        self.engine = engine
        self.keys = keys
        self.prepared = False
        self._dk: _DataKey | None = None
        self._lock = threading.Lock()
        # Requests whose primary entry waits for its transaction: ``written`` on commit.
        self._pending: dict[Connection, list[RequestRecord]] = {}
        event.listen(engine, "commit", self._committed)
        event.listen(engine, "rollback", self._rolled_back)

    def _committed(self, con: Connection) -> None:
        if self._pending:
            with self._lock:
                waiting = self._pending.pop(con, [])
            for ctx in waiting:
                ctx.written = True

    def _rolled_back(self, con: Connection) -> None:
        if self._pending:
            with self._lock:
                self._pending.pop(con, None)

    # -- data keys -------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        engine: Engine,
        key_dir: Path,
        *,
        master_key: SecretStr | None = None,
        hmac_key: SecretStr | None = None,
    ) -> AuditLog:
        """The audit log of ``engine`` with the keys of ``key_dir`` (or the settings' rings that
        replace them), ready to append."""
        keys = keystore.audit_keys(key_dir, master_key=master_key, hmac_key=hmac_key)
        found = cls(engine, keys)
        found.prepare()
        return found

    def prepare(self) -> None:
        """Store today's data key now (own transaction), so requests never have to."""
        with self.engine.begin() as con:
            self._data_key(con)
        with self.engine.begin() as con:
            self._data_key(con)  # sees it committed: confirmed

    def _data_key(self, con: Connection) -> _DataKey:
        today = now().date()
        with self._lock:
            dk = self._dk
            if dk is None or dk.day != today:
                dk = self._dk = self._new_data_key(today)
        if dk.confirmed:
            return dk
        # Stored in the caller's transaction: an entry never names a data key that is not
        # stored. Confirmed once seen committed (until then, checked on each use).
        found = con.execute(
            select(audit_data_keys.c.id).where(audit_data_keys.c.id == dk.id)
        ).first()
        if found is not None:
            with self._lock:
                if self._dk is not None and self._dk.id == dk.id:
                    self._dk = replace(dk, confirmed=True)
            return dk
        row = {
            "id": dk.id,
            "master_key_id": dk.master_key_id,
            "wrapped": dk.wrapped,
            "created_at": dk.created_at,
        }
        dialect = postgresql if con.dialect.name == "postgresql" else sqlite
        con.execute(dialect.insert(audit_data_keys).values(**row).on_conflict_do_nothing())
        return dk

    def _new_data_key(self, day: date) -> _DataKey:
        dk_id = f"dk_{day:%Y%m%d}_{secrets.token_hex(6)}"
        key = self.keys.master.new_data_key()
        master_id, wrapped = self.keys.master.wrap(key, _purpose(dk_id))
        return _DataKey(dk_id, key, master_id, b64url_encode(wrapped), day, now())

    # -- sealing ---------------------------------------------------------------------------------

    @staticmethod
    def _seal(dk: _DataKey, payload: Mapping[str, Any]) -> dict[str, str]:
        data = json.dumps(
            payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str
        ).encode("utf-8")
        nonce = os.urandom(NONCE_BYTES)
        sealed = AESGCM(dk.key).encrypt(nonce, data, SEAL_AAD + dk.id.encode())
        return {"dk": dk.id, "nonce": b64url_encode(nonce), "ct": b64url_encode(sealed)}

    def data_key(self, con: Connection) -> tuple[str, bytes]:
        """Today's data key, ``(id, key)``, stored in ``con``'s transaction if it is not yet:
        for other sealed values of the state store (:mod:`sandbox.vault.text`)."""
        dk = self._data_key(con)
        return dk.id, dk.key

    def stored_data_key(self, con: Connection, dk_id: str, cache: dict[str, bytes]) -> bytes:
        """The data key ``dk_id``, unwrapped; ``cache`` keeps unwrapped keys across calls.
        Raises :class:`MasterKeyError` if it is not stored or does not open."""
        key = cache.get(dk_id)
        if key is None:
            row = con.execute(select(audit_data_keys).where(audit_data_keys.c.id == dk_id)).first()
            if row is None:
                raise MasterKeyError(f"audit data key {dk_id!r} is not stored")
            key = self.keys.master.unwrap(
                row.master_key_id, b64url_decode(row.wrapped), _purpose(dk_id)
            )
            cache[dk_id] = key
        return key

    def unseal(self, con: Connection, envelope: Mapping[str, Any], cache: dict[str, bytes]) -> Any:
        """The sealed members of an entry. ``cache`` keeps unwrapped data keys across calls.
        Raises :class:`MasterKeyError` if the data key is missing or does not open."""
        dk_id = str(envelope.get("dk", ""))
        key = self.stored_data_key(con, dk_id, cache)
        try:
            data = AESGCM(key).decrypt(
                b64url_decode(str(envelope["nonce"])),
                b64url_decode(str(envelope["ct"])),
                SEAL_AAD + dk_id.encode(),
            )
        except (InvalidTag, KeyError, ValueError):
            raise MasterKeyError(f"a sealed audit member under {dk_id!r} failed to open") from None
        return json.loads(data)

    # -- appending -------------------------------------------------------------------------------

    def append(self, con: Connection, entry: Event, actor: Actor) -> int:
        """Write ``entry``, made by ``actor``, in the caller's transaction (it commits or rolls
        back with the change it records); returns its ``seq``. Call it last in the
        transaction: it holds the chain's lock until the commit."""
        return self._append(con, entry, actor.document(), actor.request)

    def record_request(self, record: RequestRecord, status: int, code: str) -> int:
        """The middleware's entry for a request that wrote none of its own (own transaction):
        made by the member the request identified, or by an anonymous caller."""
        if record.member is not None:
            actor = {
                "type": "member",
                "member": record.member,
                "tenant": record.tenant,
                "role": record.role,
                "key": record.key,
            }
        else:
            actor = {"type": "anonymous"}
        with self.engine.begin() as con:
            return self._append(
                con, Event("request", "http", code=code, status=status), actor, record
            )

    def _append(
        self,
        con: Connection,
        entry: Event,
        actor: dict[str, Any],
        ctx: RequestRecord | None,
    ) -> int:
        refs = dict(entry.refs)
        sealed = dict(entry.sealed or {})
        if ctx is not None and entry.primary:
            refs = {**ctx.refs, **refs}
            sealed = {**ctx.sealed, **sealed}
            if ctx.client:
                sealed.setdefault("client", ctx.client)
        envelope = self._seal(self._data_key(con), sealed) if sealed else None
        hmac_ring = self.keys.hmac  # read once: the key id named and the key that MACs agree
        at = now()
        head = _LOCK_HEAD.execute(con).first()
        if head is None:  # a store built without the migration's head row
            con.execute(audit_head.insert().values(id=_HEAD_ID, seq=0, hash=GENESIS))
            seq, prev = 1, GENESIS
        else:
            seq, prev = int(head.seq) + 1, str(head.hash)
        tenant = entry.tenant if entry.tenant is not None else actor.get("tenant")
        body = {
            "v": FORMAT,
            "seq": seq,
            "prev": prev,
            "at": format_at(at),
            "kind": entry.kind,
            "action": entry.action,
            "code": entry.code,
            "status": entry.status,
            "actor": actor,
            "request": ctx.document() if ctx is not None else None,
            "tenant": tenant,
            "refs": refs,
            "cost": dict(entry.cost) if entry.cost is not None else None,
            "sealed": envelope,
            "mac_key": hmac_ring.current_id,
        }
        text = canonical_body(body)
        digest = hashlib.sha256(text).digest()
        mac = hmac_ring.mac(hmac_ring.current_id, digest)
        assert mac is not None
        _INSERT_ENTRY.execute(
            con,
            {
                "seq": seq,
                "at": at,
                "kind": entry.kind,
                "action": entry.action,
                "tenant_id": tenant,
                "member_id": actor.get("member"),
                "status": entry.status,
                "code": entry.code,
                "body": text.decode("utf-8"),
                "hash": digest.hex(),
                "mac": mac,
            },
        )
        _MOVE_HEAD.execute(con, {"new_seq": seq, "new_hash": digest.hex()})
        if ctx is not None and entry.primary:
            with self._lock:
                self._pending.setdefault(con, []).append(ctx)
        log.debug("audit entry seq=%d kind=%s action=%s code=%s", seq, entry.kind, entry.action,
                  entry.code)  # fmt: skip
        return seq


def require_log(audit: AuditLog | None, service: str) -> AuditLog:
    """``audit``, or a refusal to build ``service`` without one (fail closed: a service that
    changes state and records nothing must not exist)."""
    if not isinstance(audit, AuditLog):
        raise ServiceUnavailable(f"{service} needs the audit log; it refuses to start without it")
    return audit


def _purpose(dk_id: str) -> str:
    return f"audit-data-key:{dk_id}"
