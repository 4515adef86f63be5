"""The audit log over HTTP (auditors and admins), and the middleware that records every request.

Routes: the entries (paged; sealed members decrypted only for auditors who ask, which is itself
an entry), one entry, its inclusion proof, the checkpoints, a consistency proof between two tree
sizes, the audit public keys, and a full verification (``docs/audit.md``).

:class:`AuditMiddleware` (pure ASGI, outermost) gives each request a
:class:`~sandbox.audit.request.RequestRecord` (in the ASGI scope, where the ``actor`` dependency
finds it), and when the response starts — before the client sees it — writes the request's entry
with the status and the problem's error code, unless a service
already committed one for this request in its own transaction (then nothing is written, except
for a 5xx answer). Health checks and the API docs are not recorded.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi import Path as PathParam
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sandbox.access.model import Actor, MemberRole
from sandbox.api import docs, problems
from sandbox.api.deps import ActorDep, Services, ServicesDep
from sandbox.api.problems import MEDIA_TYPE
from sandbox.api.responses import audit as views
from sandbox.api.responses.base import ViewRoute
from sandbox.audit import checkpoint as audit_checkpoint
from sandbox.audit import verify as audit_verify
from sandbox.audit.entry import Event
from sandbox.audit.log import AuditLog
from sandbox.audit.request import RECORD, RequestRecord
from sandbox.audit.store import StoredEntry, read_entries
from sandbox.errors import MasterKeyError, NotFound
from sandbox.keys.signing import public_key_document

router = APIRouter(prefix="/v1/audit", tags=["audit"], route_class=ViewRoute)

READERS = (MemberRole.AUDITOR, MemberRole.ADMIN)
UNRECORDED = frozenset({"/healthz", "/metrics", "/openapi.json"}) | docs.PATHS
MAX_SEQ = 2**62  # sequence numbers and tree sizes: within a 64-bit integer column
Seq = Annotated[int, PathParam(ge=1, le=MAX_SEQ, description="An entry's sequence number.")]


def _reader_log(actor: Actor, services: Services, decrypt: bool) -> AuditLog:
    """The audit log, for a reader (an auditor, when it asks to decrypt)."""
    actor.require_member(*READERS)
    if decrypt:
        actor.require_member(MemberRole.AUDITOR)
    return services.audit


def _decrypt(log: AuditLog, actor: Actor, rows: list[StoredEntry]) -> list[StoredEntry]:
    """The rows with their sealed members opened; that they were read is recorded."""
    opened = _unseal(log, rows)
    _record_decrypt(log, actor, opened)
    return opened


def _unseal(log: AuditLog, rows: list[StoredEntry]) -> list[StoredEntry]:
    """Each row with its sealed envelope opened (``unsealed``); an envelope that does not open
    is reported by code, never by its bytes."""
    cache: dict[str, bytes] = {}
    opened: list[StoredEntry] = []
    with log.engine.connect() as con:
        for row in rows:
            envelope = row.entry.get("sealed")
            if envelope:
                try:
                    row = replace(row, unsealed=log.unseal(con, envelope, cache))
                except MasterKeyError as exc:
                    row = replace(row, unsealed={"error": exc.error_code})
            opened.append(row)
    return opened


def _record_decrypt(log: AuditLog, actor: Actor, rows: list[StoredEntry]) -> None:
    """Reading sealed members is itself an entry (the request's primary one)."""
    seqs = [r.seq for r in rows if r.unsealed is not None]
    with log.engine.begin() as con:
        log.append(
            con,
            Event(
                "audit",
                "audit.decrypt",
                refs={
                    "count": len(seqs),
                    "first": min(seqs, default=0),
                    "last": max(seqs, default=0),
                },
            ),
            actor,
        )


@router.get("", response_model=views.AuditEntries)
def list_entries(
    actor: ActorDep,
    services: ServicesDep,
    after: Annotated[int, Query(ge=0, le=MAX_SEQ, description="Entries with a larger seq.")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    kind: Annotated[str | None, Query(max_length=32)] = None,
    tenant: Annotated[str | None, Query(max_length=64)] = None,
    decrypt: Annotated[
        bool, Query(description="Open the sealed members (auditors only; recorded).")
    ] = False,
) -> views.AuditEntries:
    """Audit entries in ``seq`` order: the canonical body as ``entry``, its hash and MAC."""
    log = _reader_log(actor, services, decrypt)
    with services.engine.connect() as con:
        rows = read_entries(con, after=after, limit=limit, kind=kind, tenant=tenant)
    if decrypt:
        rows = _decrypt(log, actor, rows)
    return views.AuditEntries(
        entries=[views.AuditEntry.of(r) for r in rows],
        next=rows[-1].seq if len(rows) == limit else None,
    )


@router.get("/entries/{seq}", response_model=views.AuditEntry)
def get_entry(
    seq: Seq, actor: ActorDep, services: ServicesDep, decrypt: bool = False
) -> views.AuditEntry:
    log = _reader_log(actor, services, decrypt)
    with services.engine.connect() as con:
        rows = read_entries(con, after=seq - 1, limit=1)
    if not rows or rows[0].seq != seq:
        raise NotFound(f"no audit entry {seq}")
    if decrypt:
        rows = _decrypt(log, actor, rows)
    return views.AuditEntry.of(rows[0])


@router.get("/entries/{seq}/proof", response_model=views.InclusionProof)
def entry_proof(
    seq: Seq,
    actor: ActorDep,
    services: ServicesDep,
    tree_size: Annotated[int | None, Query(ge=1, le=MAX_SEQ)] = None,
) -> views.InclusionProof:
    """The entry's inclusion proof against the latest checkpoint (or the one of ``tree_size``)."""
    actor.require_member(*READERS)
    return views.InclusionProof.of(audit_checkpoint.inclusion(services.engine, seq, tree_size))


@router.get("/checkpoints", response_model=views.CheckpointList)
def list_checkpoints(
    actor: ActorDep,
    services: ServicesDep,
    after: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> views.CheckpointList:
    """Signed checkpoints, oldest first: ``{id, document}``."""
    actor.require_member(*READERS)
    found = audit_checkpoint.list_checkpoints(services.engine, after, limit)
    return views.CheckpointList(
        checkpoints=[views.Checkpoint.of(c) for c in found],
        next=found[-1].id if len(found) == limit else None,
    )


@router.get("/consistency", response_model=views.ConsistencyProof)
def consistency_proof(
    actor: ActorDep,
    services: ServicesDep,
    first: Annotated[int, Query(ge=0, le=MAX_SEQ, description="The earlier tree size.")] = 0,
    second: Annotated[
        int | None, Query(ge=0, le=MAX_SEQ, description="The later one; default: all.")
    ] = None,
) -> views.ConsistencyProof:
    """Proof that the tree of ``second`` entries extends the tree of ``first`` entries."""
    actor.require_member(*READERS)
    return views.ConsistencyProof.of(audit_checkpoint.consistency(services.engine, first, second))


@router.get("/keys", response_model=views.AuditKeys)
def audit_keys(actor: ActorDep, services: ServicesDep) -> dict[str, object]:
    """The checkpoint signing keys, current and retired (what offline checks need)."""
    actor.require_member(*READERS)
    return public_key_document(services.audit.keys.signing)


@router.get("/verify", response_model=views.AuditReport)
def verify_log(actor: ActorDep, services: ServicesDep) -> views.AuditReport:
    """Verify the whole log (chain, MACs, head, checkpoints): ``ok`` and the problems found."""
    actor.require_member(*READERS)
    return views.AuditReport.of(audit_verify.verify(services.engine, services.audit.keys))


# ---------------------------------------------------------------------------------------------
# The middleware
# ---------------------------------------------------------------------------------------------


class AuditMiddleware:
    """Records every request that no service recorded (see the module docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in UNRECORDED:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        client = scope.get("client")
        ctx = RequestRecord(
            scope.get("method", ""),
            scope.get("path", ""),
            str(client[0]) if client else None,
            headers.get("x-request-id"),
        )
        scope[RECORD] = ctx
        recorded = False
        held: Message | None = None
        chunks: list[bytes] = []

        async def record(status: int, code: str) -> None:
            nonlocal recorded
            recorded = True
            ctx.set_route(scope.get("route"), scope.get("path_params"))
            if ctx.written and status < 500:
                return
            log = _log_of(scope)
            if log is not None:  # None only before the app started (its lifespan builds one)
                await asyncio.to_thread(log.record_request, ctx, status, code)

        async def send_recorded(message: Message) -> None:
            nonlocal held
            if message["type"] == "http.response.start":
                message = {
                    **message,
                    "headers": [*message.get("headers", []), (b"x-request-id", ctx.id.encode())],
                }
                if Headers(raw=message["headers"]).get("content-type") == MEDIA_TYPE:
                    held = message  # the error code is in the body: wait for it
                    return
                await record(int(message["status"]), "ok")
            elif message["type"] == "http.response.body" and held is not None:
                chunks.append(message.get("body", b""))
                if message.get("more_body", False):
                    return
                body = b"".join(chunks)
                start, held = held, None
                await record(int(start["status"]), problems.code_of(body))
                await send(start)
                message = {"type": "http.response.body", "body": body}
            await send(message)

        try:
            await self.app(scope, receive, send_recorded)
        except Exception:
            if not recorded:
                await record(500, "internal_error")
            raise


def _log_of(scope: Scope) -> AuditLog | None:
    services = getattr(getattr(scope.get("app"), "state", None), "services", None)
    return None if services is None else services.audit
