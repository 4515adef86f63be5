"""Uploads: files sent to the server for a dataset, then loaded by naming them (``upload:<id>``).

Who: the dataset's loaders (:func:`~sandbox.onboarding.staff.require_loader`): the zone's staff,
or a member of the provider that owns the dataset. Where: ``<uploads>/<provider>/<id><ext>``
(``_zone`` for a dataset without a provider), a name the server makes; the client's file name is
only shown, and only its extension (one the connectors know) is kept, to tell the format. What is
recorded (``uploads``): provider, dataset, length, bytes received, SHA-256, state, times; each
change in the audit log.

An upload is made by one request (``POST``, the whole body is the file) or, when it declares its
length (``Upload-Length``), by chunks: the first with the ``POST``, the next ones each sent with
the offset they start at (``Upload-Offset``, which must be the bytes received so far), so an
interrupted upload resumes where it stopped. Each request's bytes are taken whole or not at all
(:mod:`sandbox.onboarding.receiver`). It is complete when it has all its bytes; its SHA-256 is
then computed and checked against the one it declared (``Upload-Sha256``), and a mismatch
deletes it. A failed, refused, expired or deleted upload leaves no file and no row. Unfinished
uploads expire ``expiry`` after their last chunk (checked whenever uploads are made or listed).
A complete upload is kept until deleted; a load reads it in place.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Final
from urllib.parse import parse_qsl

from sqlalchemy import Connection, Engine, select

from connectors.errors import InvalidSource
from connectors.source import SourceSpec, parse_source
from sandbox.access.model import Actor, new_id
from sandbox.audit.entry import Event
from sandbox.audit.log import AuditLog, require_log
from sandbox.clock import now, utc
from sandbox.errors import (
    Conflict,
    InvalidRequest,
    NotFound,
    UploadChecksumMismatch,
    UploadOffsetMismatch,
    UploadTooLarge,
)
from sandbox.onboarding.model import UploadState
from sandbox.onboarding.receiver import Receiver, check_free_space, file_sha256
from sandbox.onboarding.staff import provider_of, require_loader
from sandbox.store.schema import datasets, uploads, version_loads, zones

__all__ = ["UPLOAD_PREFIX", "Upload", "Uploads", "is_upload_source"]

log = logging.getLogger("veil.onboarding")

UPLOAD_PREFIX: Final = "upload:"
UPLOAD_ID: Final = re.compile(r"^upl_[0-9a-f]{16}$")
SHA256: Final = re.compile(r"^[0-9a-f]{64}$")
NO_PROVIDER: Final = "_zone"  # the folder of uploads for datasets without a provider
LEASE: Final = timedelta(minutes=10)  # a chunk being received holds its upload this long
MAX_NAME: Final = 255
_SUFFIX: Final = re.compile(r"^\.[a-z0-9]{1,10}$")
_KNOWN: Final = (".csv", ".tsv", ".txt", ".parquet", ".pq", ".jsonl", ".ndjson", ".json",
                 ".arrow", ".arrows", ".ipc", ".feather")  # fmt: skip


@dataclass(frozen=True)
class Upload:
    """One upload. ``length``: the length it declared, if any; ``received``: its bytes so far
    (its size once complete); ``sha256`` once complete; ``source``: what a load names."""

    id: str
    zone: str
    dataset: str
    provider: str | None
    name: str | None
    state: UploadState
    length: int | None
    received: int
    sha256: str | None
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None
    source: str


def is_upload_source(text: str) -> bool:
    return isinstance(text, str) and text.startswith(UPLOAD_PREFIX)


class Uploads:
    """Uploads kept in ``directory``, recorded in the state store behind ``engine`` and in
    ``audit``. ``max_bytes``: the largest upload; ``expiry``: how long an unfinished upload
    waits for its next chunk."""

    def __init__(
        self,
        engine: Engine,
        audit: AuditLog,
        directory: Path,
        *,
        max_bytes: int = 2**30,
        expiry: timedelta = timedelta(days=1),
    ) -> None:
        self.engine = engine
        self.audit = require_log(audit, "the uploads service")
        self.directory = directory
        self.max_bytes = max_bytes
        self.expiry = expiry

    # -- receiving ----------------------------------------------------------------------------

    def receive_new(
        self,
        actor: Actor,
        zone: str,
        dataset: str,
        *,
        length: int | None = None,
        name: str | None = None,
        sha256: str | None = None,
    ) -> Receiver:
        """Check a new upload and open its file (nothing recorded until its first bytes are
        in). Without ``length`` the request's body is the whole file."""
        self.expire()
        with self.engine.connect() as con:
            _zone(con, zone)
            _in_zone_if_any(con, zone, dataset)
            mine = require_loader(con, actor, dataset)
            provider = mine or _provider_if_any(con, dataset)
        suffix = _suffix(name)
        if sha256 is not None and not SHA256.match(sha256):
            raise InvalidRequest(
                "Upload-Sha256 is 64 lower-case hexadecimal digits", field="header.upload-sha256"
            )
        if length is not None:
            if length < 0:
                raise InvalidRequest(
                    "Upload-Length is a whole number of bytes", field="header.upload-length"
                )
            if length > self.max_bytes:
                raise UploadTooLarge(
                    f"an upload may hold at most {self.max_bytes} bytes", limit=self.max_bytes
                )
        folder = self.directory / (provider or NO_PROVIDER)
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        check_free_space(folder, length or 0)
        upload_id = new_id("upl")
        path = folder / f"{upload_id}{suffix}"
        limit = self.max_bytes if length is None else length
        reason = (
            f"an upload may hold at most {self.max_bytes} bytes"
            if length is None
            else f"the upload declared {length} bytes (Upload-Length)"
        )

        def finish(receiver: Receiver) -> Upload:
            complete = length is None or receiver.received == length
            digest = receiver.digest.hexdigest() if complete else None
            if digest is not None and sha256 is not None and digest != sha256:
                raise UploadChecksumMismatch(
                    "the upload's SHA-256 is not the one declared (Upload-Sha256); it was not kept"
                )
            at = now()
            row: dict[str, Any] = {
                "id": upload_id,
                "zone_id": zone,
                "dataset_id": dataset,
                "provider_id": provider,
                "name": name,
                "path": str(path),
                "state": (UploadState.COMPLETE if complete else UploadState.RECEIVING).value,
                "length": length if length is not None else receiver.received,
                "received": receiver.received,
                "sha256": digest,
                "expected_sha256": sha256,
                "created_by": actor.member.id if actor.member is not None else None,
                "created_at": at,
                "updated_at": at,
                "expires_at": None if complete else at + self.expiry,
                "writing_until": None,
            }
            with self.engine.begin() as con:
                con.execute(uploads.insert().values(**row))
                self._record(con, actor, "upload.create", row, name=name)
                if complete:
                    self._record(con, actor, "upload.complete", row, primary=False)
            log.info("upload %s dataset=%s bytes=%d", upload_id, dataset, receiver.received)
            return _upload(row)

        return Receiver(
            path,
            new=True,
            start=0,
            limit=limit,
            limit_reason=reason,
            on_finish=finish,
            on_abort=lambda _: None,
        )

    def receive_more(
        self, actor: Actor, zone: str, dataset: str, upload_id: str, offset: int | None
    ) -> Receiver:
        """Check one more chunk of an upload that declared its length (``offset`` must be the
        bytes it has received), hold the upload while it is received, and open its file."""
        at = now()
        with self.engine.begin() as con:
            row = self._row(con, actor, zone, dataset, upload_id, lock=True)
            if offset is None:
                raise InvalidRequest(
                    "a chunk names the offset it starts at (Upload-Offset)",
                    field="header.upload-offset",
                )
            if row.state != UploadState.RECEIVING.value:
                raise Conflict(f"upload {upload_id} is {row.state}", state=row.state)
            if offset != row.received:
                raise UploadOffsetMismatch(
                    f"the upload has {row.received} bytes; send the chunk that starts there",
                    offset=row.received,
                )
            if row.writing_until is not None and utc(row.writing_until) > at:
                raise Conflict(f"another chunk of upload {upload_id} is being received")
            con.execute(
                uploads.update()
                .where(uploads.c.id == upload_id)
                .values(writing_until=at + LEASE, updated_at=at)
            )
        path = Path(row.path)
        expected: str | None = row.expected_sha256
        length = int(row.length)

        def release(_: Receiver | None) -> None:
            with self.engine.begin() as con:
                con.execute(
                    uploads.update()
                    .where(uploads.c.id == upload_id, uploads.c.received == offset)
                    .values(writing_until=None)
                )

        def finish(receiver: Receiver) -> Upload:
            received = offset + receiver.received
            complete = received == length
            digest = file_sha256(path) if complete else None
            if digest is not None and expected is not None and digest != expected:
                with self.engine.begin() as con:
                    self._forget(con, actor, upload_id, "upload.failed", "upload_checksum_mismatch")
                path.unlink(missing_ok=True)
                raise UploadChecksumMismatch(
                    "the upload's SHA-256 is not the one declared (Upload-Sha256); it was deleted"
                )
            at = now()
            with self.engine.begin() as con:
                changed = con.execute(
                    uploads.update()
                    .where(
                        uploads.c.id == upload_id,
                        uploads.c.received == offset,
                        uploads.c.state == UploadState.RECEIVING.value,
                    )
                    .values(
                        received=received,
                        state=(UploadState.COMPLETE if complete else UploadState.RECEIVING).value,
                        sha256=digest,
                        updated_at=at,
                        expires_at=None if complete else at + self.expiry,
                        writing_until=None,
                    )
                )
                if changed.rowcount != 1:
                    raise Conflict(f"upload {upload_id} changed while the chunk was received")
                row = con.execute(select(uploads).where(uploads.c.id == upload_id)).one()
                self._record(
                    con,
                    actor,
                    "upload.append",
                    row._asdict(),
                    offset=offset,
                    bytes=receiver.received,
                )
                if complete:
                    self._record(con, actor, "upload.complete", row._asdict(), primary=False)
            return _upload(row._asdict())

        try:
            check_free_space(path.parent, length - offset)
            return Receiver(
                path,
                new=False,
                start=offset,
                limit=length - offset,
                limit_reason=f"the upload declared {length} bytes (Upload-Length)",
                on_finish=finish,
                on_abort=release,
            )
        except BaseException:
            release(None)  # not received: the upload is free for the chunk again
            raise

    # -- reading and deleting -----------------------------------------------------------------

    def get(self, actor: Actor, zone: str, dataset: str, upload_id: str) -> Upload:
        with self.engine.connect() as con:
            row = self._row(con, actor, zone, dataset, upload_id)
        return _upload(row._asdict())

    def list_uploads(self, actor: Actor, zone: str, dataset: str) -> list[Upload]:
        """The dataset's uploads, oldest first: for a provider member, its own provider's."""
        self.expire()
        with self.engine.connect() as con:
            _zone(con, zone)
            _in_zone_if_any(con, zone, dataset)
            mine = require_loader(con, actor, dataset)
            query = (
                select(uploads)
                .where(uploads.c.zone_id == zone, uploads.c.dataset_id == dataset)
                .order_by(uploads.c.created_at, uploads.c.id)
            )
            if mine is not None:
                query = query.where(uploads.c.provider_id == mine)
            rows = con.execute(query).all()
        return [_upload(r._asdict()) for r in rows]

    def delete(self, actor: Actor, zone: str, dataset: str, upload_id: str) -> None:
        """Delete an upload and its file (refused while a load reads it)."""
        with self.engine.begin() as con:
            row = self._row(con, actor, zone, dataset, upload_id, lock=True)
            reading = con.execute(
                select(version_loads.c.id).where(
                    version_loads.c.dataset_id == dataset,
                    version_loads.c.state == "loading",
                    version_loads.c.source.contains(upload_id),
                )
            ).first()
            if reading is not None:
                raise Conflict(f"load {reading.id} is reading upload {upload_id}")
            if row.writing_until is not None and utc(row.writing_until) > now():
                raise Conflict(f"a chunk of upload {upload_id} is being received")
            self._forget(con, actor, upload_id, "upload.delete")
            Path(row.path).unlink(missing_ok=True)

    def expire(self) -> int:
        """Delete the unfinished uploads whose time ran out (as the system); how many."""
        at = now()
        due = select(uploads.c.id, uploads.c.path).where(
            uploads.c.state == UploadState.RECEIVING.value, uploads.c.expires_at < at
        )
        with self.engine.connect() as con:  # most calls find none: no write transaction
            if con.execute(due.limit(1)).first() is None:
                return 0
        with self.engine.begin() as con:
            rows = con.execute(due).all()
            for row in rows:
                self._forget(con, Actor.system(), row.id, "upload.expire")
                Path(row.path).unlink(missing_ok=True)
        return len(rows)

    # -- loading ------------------------------------------------------------------------------

    def source_spec(
        self, con: Connection, actor: Actor, zone: str, dataset: str, text: str
    ) -> SourceSpec:
        """The source of a load that names an upload: ``upload:<id>``, with options after a
        ``?`` as in a file URL (``upload:upl_…?format=csv&encoding=gbk``). The upload must be
        complete and of this zone and dataset (and, for a provider member, its own)."""
        body = text.removeprefix(UPLOAD_PREFIX)
        upload_id, _, query = body.partition("?")
        if not UPLOAD_ID.match(upload_id):
            raise InvalidSource("an upload source is upload:<upload id>", file=text[:200])
        row = self._row(con, actor, zone, dataset, upload_id)
        if row.state != UploadState.COMPLETE.value:
            raise InvalidSource(f"upload {upload_id} is not complete", file=upload_id)
        options = dict(parse_qsl(query, keep_blank_values=True))
        return parse_source(row.path, options)

    # -- helpers ------------------------------------------------------------------------------

    def _row(
        self,
        con: Connection,
        actor: Actor,
        zone: str,
        dataset: str,
        upload_id: str,
        *,
        lock: bool = False,
    ) -> Any:
        """The upload's row, for one of the dataset's loaders (a provider member: its own
        provider's uploads only; others answer 404)."""
        _zone(con, zone)
        _in_zone_if_any(con, zone, dataset)
        mine = require_loader(con, actor, dataset)
        query = select(uploads).where(
            uploads.c.id == upload_id, uploads.c.zone_id == zone, uploads.c.dataset_id == dataset
        )
        if lock:
            query = query.with_for_update()
        row = con.execute(query).first()
        if row is None or (mine is not None and row.provider_id != mine):
            raise NotFound(f"no upload {upload_id[:64]!r} of {dataset!r}")
        return row

    def _forget(
        self, con: Connection, actor: Actor, upload_id: str, action: str, code: str | None = None
    ) -> None:
        row = con.execute(select(uploads).where(uploads.c.id == upload_id)).one()
        con.execute(uploads.delete().where(uploads.c.id == upload_id))
        self._record(
            con, actor, action, row._asdict(), code=code, primary=action != "upload.expire"
        )

    def _record(
        self,
        con: Connection,
        actor: Actor,
        action: str,
        row: dict[str, Any],
        *,
        name: str | None = None,
        code: str | None = None,
        primary: bool = True,
        **extra: Any,
    ) -> None:
        refs = {
            "zone": row["zone_id"],
            "dataset": row["dataset_id"],
            "provider": row["provider_id"],
            "upload": row["id"],
            "received": row["received"],
            "sha256": row["sha256"],
            **extra,
        }
        sealed = {"name": name} if name is not None else None
        self.audit.append(
            con,
            Event(
                "onboarding", action, code=code or "ok", refs=refs, sealed=sealed, primary=primary
            ),
            actor,
        )


def _zone(con: Connection, zone: str) -> None:
    if con.execute(select(zones.c.id).where(zones.c.id == zone)).first() is None:
        raise NotFound(f"no zone {zone[:64]!r}")


def _in_zone_if_any(con: Connection, zone: str, dataset: str) -> None:
    """A dataset that exists must be of ``zone`` (one that does not yet may get uploads from
    staff: its first load creates it)."""
    row = con.execute(select(datasets.c.zone_id).where(datasets.c.id == dataset)).first()
    if row is not None and row.zone_id != zone:
        raise NotFound(f"no dataset {dataset[:64]!r} in zone {zone[:64]!r}")
    if row is None and len(dataset) > 64:
        raise InvalidRequest("a dataset id is at most 64 characters", field="dataset")


def _provider_if_any(con: Connection, dataset: str) -> str | None:
    exists = con.execute(select(datasets.c.id).where(datasets.c.id == dataset)).first()
    return provider_of(con, dataset) if exists is not None else None


def _suffix(name: str | None) -> str:
    """The extension the stored file keeps: the client's name's, if the connectors know it.
    A name is a file name, not a path: separators, ``..``, control characters are refused."""
    if name is None:
        return ""
    bad = (
        not name
        or len(name) > MAX_NAME
        or name in (".", "..")
        or any(c in name for c in "/\\\0")
        or any(ord(c) < 32 or ord(c) == 127 for c in name)
        or PurePosixPath(name).name != name
        or PureWindowsPath(name).name != name
    )
    if bad:
        raise InvalidRequest(
            "Upload-Name is a file name (at most 255 characters, no path, no control characters)",
            field="header.upload-name",
        )
    suffix = PurePosixPath(name).suffix.lower()
    return suffix if _SUFFIX.match(suffix) and suffix in _KNOWN else ""


def _upload(row: dict[str, Any]) -> Upload:
    return Upload(
        id=row["id"],
        zone=row["zone_id"],
        dataset=row["dataset_id"],
        provider=row["provider_id"],
        name=row["name"],
        state=UploadState(row["state"]),
        length=row["length"],
        received=row["received"],
        sha256=row["sha256"],
        created_at=utc(row["created_at"]),
        updated_at=utc(row["updated_at"]),
        expires_at=utc(row["expires_at"]) if row["expires_at"] is not None else None,
        source=f"{UPLOAD_PREFIX}{row['id']}",
    )
