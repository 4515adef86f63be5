"""The audit log: every request and every admin action, hash-chained, MAC'd, partly sealed.

An entry is written *inside the transaction of the change it records* (:func:`append` takes the
caller's open connection): a charge and its entry commit together or not at all. Requests that
change nothing (reads, refusals, errors, 401s) get their entry from the HTTP middleware
(``sandbox/api/audit.py``) once the handler is done, unless a service already wrote one in its
own transaction — so the hot paths pay no extra commit.

Each entry is canonical JSON (:func:`sandbox.receipts.canonical_json`) holding the previous
entry's hash (``prev``); its ``hash`` is SHA-256 of those bytes, its ``mac`` HMAC-SHA256 of the
hash under the current audit HMAC key (named in the entry). Sensitive members — SQL text,
subject ids, claims, names, the client address — never appear in clear: they are sealed
together into one AES-256-GCM envelope ``{"dk", "nonce", "ct"}`` under a *data key*, which is
stored wrapped by the master key (one data key per process and UTC day). Rotating the master
key only changes how new data keys are wrapped; old entries are never rewritten.

Entries are appended under a lock on the single ``audit_head`` row, so concurrent transactions
(threads, processes, PostgreSQL or SQLite) chain one after another with ``seq`` contiguous from 1.
The format and the verification algorithm are in ``docs/audit.md``; checkpoints in
:mod:`sandbox.audit_checkpoint`, verification in :mod:`sandbox.audit_verify`.

Logs carry sequence numbers, kinds and codes only.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
import os
import re
import secrets
import threading
import uuid
import weakref
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import SecretStr
from sqlalchemy import Connection, Engine, bindparam, event, make_url, select, update
from sqlalchemy.dialects import postgresql, sqlite

from sandbox.canonical import MAX_SAFE_INTEGER, b64url_decode, b64url_encode
from sandbox.clock import now
from sandbox.errors import MasterKeyError, NotCanonicalizable
from sandbox.keys.audit import AuditKeys
from sandbox.store.schema import audit_data_keys, audit_entries, audit_head
from sandbox.store.statements import Prepared

__all__ = [
    "CURRENT",
    "FORMAT",
    "GENESIS",
    "AuditLog",
    "Event",
    "RequestContext",
    "annotate",
    "append",
    "attach",
    "canonical_body",
    "entry_hash",
    "format_at",
    "identify",
    "log_for",
    "read_entries",
    "record_local_changes",
]

log = logging.getLogger("veil.audit")

FORMAT: Final = 1
GENESIS: Final = "0" * 64  # ``prev`` of the first entry
SEAL_AAD: Final = b"veil.audit.seal.v1\x00"
NONCE_BYTES: Final = 12
REQUEST_ID: Final = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_HEAD_ID: Final = 1


# ---------------------------------------------------------------------------------------------
# What is recorded
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """One thing to record. ``refs`` holds ids and small public values (strings, integers,
    booleans — never floats: amounts are micro-units); ``sealed`` the sensitive members, which
    are encrypted. ``primary``: this entry is *the* record of the request being served (it
    takes the request's annotations, see :func:`annotate`, and spares the middleware its
    entry); a side effect of a request (a refresh credit, a settlement) is not."""

    kind: str  # request | query | verification | admin | onboarding | audit
    action: str  # e.g. query.charge, tenant.create, http
    code: str = "ok"
    status: int | None = None
    tenant: str | None = None  # the tenant the entry concerns (default: the actor's)
    refs: Mapping[str, Any] = field(default_factory=dict)
    cost: Mapping[str, Any] | None = None
    sealed: Mapping[str, Any] | None = None
    primary: bool = True


class RequestContext:
    """The request being served, as the audit log sees it.

    Deliberately mutable and shared: the middleware creates it and puts it in :data:`CURRENT`;
    FastAPI runs sync endpoints and dependencies in worker threads with a *copy* of the context,
    which still points at this same object, so what they record here (the member, annotations,
    "an entry was committed") is what the middleware reads afterwards."""

    def __init__(self, method: str, path: str, client: str | None, request_id: str | None) -> None:
        self.id = request_id if request_id and REQUEST_ID.match(request_id) else _new_request_id()
        self.method = method
        self.path = path
        self.client = client
        self.route: str | None = None
        self.params: dict[str, str] = {}
        self.member: str | None = None
        self.tenant: str | None = None
        self.role: str | None = None
        self.key: str | None = None
        self.refs: dict[str, Any] = {}
        self.sealed: dict[str, Any] = {}
        self.written = False  # a primary entry of this request committed (AuditLog sets it)

    def set_route(self, route: Any, params: Mapping[str, Any] | None) -> None:
        """The matched route's path template and parameters (ids; long values cut)."""
        path = getattr(route, "path", None)
        if isinstance(path, str):
            self.route = path
            self.params = {str(k): str(v)[:128] for k, v in (params or {}).items()}

    def request_doc(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "method": self.method,
            "route": self.route or self.path,
            "params": dict(self.params),
        }


CURRENT: ContextVar[RequestContext | None] = ContextVar("veil_audit_request", default=None)


def _new_request_id() -> str:
    return "req_" + uuid.uuid4().hex


def identify(
    member: str,
    tenant: str,
    role: str,
    key: str | None,
    *,
    route: Any = None,
    params: Mapping[str, Any] | None = None,
) -> None:
    """Record who is making the current request (called once the API key checks out) and,
    since routing is done by then, which route it is for."""
    ctx = CURRENT.get()
    if ctx is not None:
        ctx.member, ctx.tenant, ctx.role, ctx.key = member, tenant, role, key
        ctx.set_route(route, params)


def annotate(*, sealed: Mapping[str, Any] | None = None, **refs: Any) -> None:
    """Add to the current request's record: ``refs`` in clear, ``sealed`` encrypted. They go
    into the request's primary entry, whoever writes it (a service or the middleware), so a
    refused query still leaves its SQL text — sealed — in the log."""
    ctx = CURRENT.get()
    if ctx is None:
        return
    ctx.refs.update(refs)
    if sealed:
        ctx.sealed.update(sealed)


# ---------------------------------------------------------------------------------------------
# Entries
# ---------------------------------------------------------------------------------------------

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


def canonical_body(body: Mapping[str, Any]) -> bytes:
    """The canonical JSON of an entry body, fast: :func:`sandbox.receipts.canonical_json`'s
    bytes exactly, for the values an entry may hold, which are checked first (no floats, no
    integer beyond ±(2**53 − 1), ASCII member names — so that sorting by code point is sorting
    by UTF-16 unit). ``json.dumps`` escapes what RFC 8785 escapes and nothing else."""
    _check_plain(body, 0)
    return json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def _check_plain(value: object, depth: int) -> None:
    if depth > 32:
        raise NotCanonicalizable("nested too deeply")
    if isinstance(value, str) or value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise NotCanonicalizable("integers must lie within ±(2**53 − 1)")
    elif isinstance(value, Mapping):
        for name, item in value.items():
            if not isinstance(name, str) or not name.isascii():
                raise NotCanonicalizable("member names are ASCII strings")
            _check_plain(item, depth + 1)
    elif isinstance(value, list | tuple):
        for item in value:
            _check_plain(item, depth + 1)
    else:
        raise NotCanonicalizable(f"no canonical JSON form for {type(value).__name__}")


def format_at(at: datetime) -> str:
    """RFC 3339 UTC with microseconds: ``2026-03-01T08:30:00.123456Z``."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def entry_hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


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
    """Appends entries for one engine with one set of keys. ``actor`` names who acts when no
    request is being served: ``system`` in the server (background work), ``local`` in the CLI
    (the local administrator, recorded with the operating-system user)."""

    def __init__(self, engine: Engine, keys: AuditKeys, *, actor: str = "system") -> None:
        self.engine = engine
        self.keys = keys
        self.actor = actor
        self._user = _os_user() if actor == "local" else None
        self._dk: _DataKey | None = None
        self._lock = threading.Lock()
        # Requests whose primary entry waits for its transaction: ``written`` on commit.
        self._pending: dict[Connection, list[RequestContext]] = {}
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

    def unseal(self, con: Connection, envelope: Mapping[str, Any], cache: dict[str, bytes]) -> Any:
        """The sealed members of an entry. ``cache`` keeps unwrapped data keys across calls.
        Raises :class:`MasterKeyError` if the data key is missing or does not open."""
        dk_id = str(envelope.get("dk", ""))
        key = cache.get(dk_id)
        if key is None:
            row = con.execute(select(audit_data_keys).where(audit_data_keys.c.id == dk_id)).first()
            if row is None:
                raise MasterKeyError(f"audit data key {dk_id!r} is not stored")
            key = self.keys.master.unwrap(
                row.master_key_id, b64url_decode(row.wrapped), _purpose(dk_id)
            )
            cache[dk_id] = key
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

    def append(
        self, con: Connection, entry: Event, *, context: RequestContext | None = None
    ) -> int:
        """Write ``entry`` in the caller's transaction (it commits or rolls back with the
        change it records); returns its ``seq``. Call it last in the transaction: it holds
        the chain's lock until the commit."""
        ctx = context if context is not None else CURRENT.get()
        refs = dict(entry.refs)
        sealed = dict(entry.sealed or {})
        if ctx is not None and entry.primary:
            refs = {**ctx.refs, **refs}
            sealed = {**ctx.sealed, **sealed}
            if ctx.client:
                sealed.setdefault("client", ctx.client)
        envelope = self._seal(self._data_key(con), sealed) if sealed else None
        actor = self._actor(ctx)
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
            "request": ctx.request_doc() if ctx is not None else None,
            "tenant": tenant,
            "refs": refs,
            "cost": dict(entry.cost) if entry.cost is not None else None,
            "sealed": envelope,
            "mac_key": self.keys.hmac.current_id,
        }
        text = canonical_body(body)
        digest = hashlib.sha256(text).digest()
        mac = self.keys.hmac.mac(self.keys.hmac.current_id, digest)
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

    def record_request(self, ctx: RequestContext, status: int, code: str) -> int:
        """The middleware's entry for a request that wrote none of its own (own transaction)."""
        with self.engine.begin() as con:
            return self.append(con, Event("request", "http", code=code, status=status), context=ctx)

    def _actor(self, ctx: RequestContext | None) -> dict[str, Any]:
        if ctx is None:
            actor: dict[str, Any] = {"type": self.actor}
            if self._user is not None:
                actor["user"] = self._user
            return actor
        if ctx.member is None:
            return {"type": "anonymous"}
        return {
            "type": "member",
            "member": ctx.member,
            "tenant": ctx.tenant,
            "role": ctx.role,
            "key": ctx.key,
        }


def _purpose(dk_id: str) -> str:
    return f"audit-data-key:{dk_id}"


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}" if hasattr(os, "getuid") else "unknown"


# ---------------------------------------------------------------------------------------------
# Which log an engine writes to
# ---------------------------------------------------------------------------------------------

_LOGS: weakref.WeakKeyDictionary[Engine, AuditLog] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class _LocalKeys:
    """Where the CLI's local mode finds the audit keys: the key directory, and the rings that
    replace its own when VEIL_MASTER_KEY / VEIL_AUDIT_HMAC_KEY are set."""

    key_dir: Path
    master_key: SecretStr | None
    hmac_key: SecretStr | None


_LOCAL: dict[str, _LocalKeys] = {}  # state store URL -> its keys, for the CLI's local mode
_LOCAL_LOCK = threading.Lock()


def attach(engine: Engine, audit_log: AuditLog) -> None:
    """Make ``engine``'s transactions write their entries to ``audit_log``. The server attaches
    a log to its engine; an engine without one (a library caller, a test of another component)
    writes no entries, unless :func:`record_local_changes` names its store."""
    _LOGS[engine] = audit_log


def record_local_changes(
    state_url: str, key_dir: Path, *, master_key: SecretStr | None, hmac_key: SecretStr | None
) -> None:
    """The CLI works on a data directory: every engine this process opens on ``state_url``
    records its changes with the keys in ``key_dir`` (or ``master_key``/``hmac_key``, the
    settings' rings, when set), as the local administrator."""
    url = make_url(state_url).render_as_string(hide_password=False)
    _LOCAL[url] = _LocalKeys(key_dir, master_key, hmac_key)


def log_for(engine: Engine) -> AuditLog | None:
    found = _LOGS.get(engine)
    if found is None and _LOCAL:
        local = _LOCAL.get(engine.url.render_as_string(hide_password=False))
        if local is not None:
            from sandbox.keys import directory as keystore  # the server never gets here

            with _LOCAL_LOCK:
                found = _LOGS.get(engine)
                if found is None:
                    keys = keystore.audit_keys(
                        local.key_dir, master_key=local.master_key, hmac_key=local.hmac_key
                    )
                    found = AuditLog(engine, keys, actor="local")
                    _LOGS[engine] = found
    return found


def append(con: Connection, entry: Event) -> int | None:
    """Append ``entry`` in ``con``'s transaction to the log attached to its engine (if any)."""
    audit_log = log_for(con.engine)
    if audit_log is None:
        return None
    return audit_log.append(con, entry)


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def read_entries(
    con: Connection,
    *,
    after: int = 0,
    limit: int = 100,
    kind: str | None = None,
    tenant: str | None = None,
) -> list[dict[str, Any]]:
    """Entries after ``after`` in ``seq`` order: ``{seq, hash, mac, entry}`` with ``entry`` the
    parsed body (canonical JSON, so re-serialising it gives back the hashed bytes)."""
    query = (
        select(audit_entries.c.seq, audit_entries.c.body, audit_entries.c.hash, audit_entries.c.mac)
        .where(audit_entries.c.seq > after)
        .order_by(audit_entries.c.seq)
        .limit(limit)
    )
    if kind is not None:
        query = query.where(audit_entries.c.kind == kind)
    if tenant is not None:
        query = query.where(audit_entries.c.tenant_id == tenant)
    return [
        {"seq": int(r.seq), "hash": r.hash, "mac": r.mac, "entry": json.loads(r.body)}
        for r in con.execute(query)
    ]
