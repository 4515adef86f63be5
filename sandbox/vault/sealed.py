"""Encryption at rest of stored workspaces: the sealed file format and the runtime vault.

A dataset version is stored *sealed*: its DuckDB file encrypted with a fresh AES-256-GCM data key
of its own, in 1 MiB chunks, the data key wrapped by the master key (:mod:`sandbox.keys.master`)
and kept in the file's header. Without the master key a sealed file reveals nothing but its size
and its header (dataset id, version, master key id). DuckDB cannot write an encrypted database
itself (notes/duckdb-lockdown.md), so the file is built in plain in the build area, sealed, and
the plain file deleted; serving decrypts each version once per process into a RAM-backed runtime
directory that the locked-down workers open read-only exactly like any workspace.

Layout (all integers big-endian)::

    b"VEILSEAL" | u8 format (1) | u16 n | n bytes of header JSON | chunk 0 | chunk 1 | …

The header names ``dataset``, ``version``, ``chunk_size``, ``nonce_prefix`` (7 random bytes, hex)
and ``key`` (``kid`` and base64 ``wrapped``). Chunk *i* is AES-GCM over at most ``chunk_size``
plaintext bytes, every chunk but the last full, with nonce ``prefix | u32 i | u8 final`` and
associated data ``SHA-256(bound header) | u64 i | u8 final``, where the bound header is everything
but ``key``. So a changed byte, reordered or dropped chunks, a cut at any point, bytes appended,
a chunk from another file or a header claiming another dataset or version all fail to open. The
key slot is authenticated by the wrap itself (its purpose names the dataset and version), so a
future re-wrap under a new master key can rewrite the slot without re-encrypting the data.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Engine, select, update

from connectors.sink import fsync_dir
from sandbox.access.model import Actor
from sandbox.audit.entry import Event
from sandbox.audit.log import AuditLog
from sandbox.errors import (
    MasterKeyError,
    ServiceUnavailable,
    WorkspaceIntegrityError,
    WorkspaceMissing,
    WorkspaceNotSealed,
)
from sandbox.keys.master import MasterKeyRing, MasterKeys

MAGIC: Final = b"VEILSEAL"
FORMAT: Final = 1
SEALED_SUFFIX: Final = ".sealed"
CHUNK_SIZE: Final = 1 << 20
MIN_CHUNK: Final = 1 << 12
MAX_CHUNK: Final = 1 << 26
MAX_HEADER: Final = 1 << 14
TAG_BYTES: Final = 16
PREFIX_BYTES: Final = 7
MAX_CHUNKS: Final = 1 << 32
_DUCKDB_MAGIC: Final = b"DUCK"  # bytes 8-11 of every DuckDB database file
_BUILD_DIR: Final = ".build"
_STALE_BUILD_S: Final = 3600.0
_OWNED: Final = re.compile(r"^(\d+)-")

log = logging.getLogger("veil.vault")


class StoredVersion(Protocol):
    """What the vault needs of a dataset version (``catalog.DatasetVersion`` has it)."""

    @property
    def dataset(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def path(self) -> Path: ...


@dataclass(frozen=True)
class Header:
    """A sealed file's header; ``size`` is the header's length in bytes, where chunk 0 starts."""

    dataset: str
    version: int
    chunk_size: int
    nonce_prefix: bytes
    kid: str
    wrapped: bytes
    size: int

    def bound(self) -> bytes:
        """The digest every chunk's associated data starts with (everything but the key slot)."""
        doc = {
            "format": FORMAT,
            "dataset": self.dataset,
            "version": self.version,
            "chunk_size": self.chunk_size,
            "nonce_prefix": self.nonce_prefix.hex(),
        }
        return hashlib.sha256(MAGIC + _canonical(doc)).digest()


def _canonical(doc: object) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _purpose(dataset: str, version: int) -> str:
    return f"workspace\x00{dataset}\x00{version}"


def _nonce(prefix: bytes, index: int, final: bool) -> bytes:
    return prefix + struct.pack(">IB", index, final)


def _aad(bound: bytes, index: int, final: bool) -> bytes:
    return bound + struct.pack(">QB", index, final)


def _name(dataset: str, version: int) -> str:
    return f"{dataset} v{version}"


def sealed_path(workspace_dir: Path, dataset: str, version: int) -> Path:
    """Where a version's sealed workspace is stored: ``<workspaces>/<dataset>/v<N>.sealed``."""
    return workspace_dir / dataset / f"v{version}{SEALED_SUFFIX}"


def build_area(workspace_dir: Path) -> Path:
    """The directory where plain workspaces exist while they are built: ``<workspaces>/.build``.

    Same file system as the stored files. Plain files live there only until they are sealed;
    files left by a process that died are removed here once they are an hour old."""
    area = workspace_dir / _BUILD_DIR
    area.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(area, 0o700)
    _sweep(area, min_age_s=_STALE_BUILD_S)
    return area


def build_name(dataset: str, version: int) -> str:
    """A build file name of this process (its pid first, so a sweep knows whose it is)."""
    return f"{os.getpid()}-{secrets.token_hex(4)}-{dataset}-v{version}.duckdb"


def seal(
    plain: Path,
    stored: Path,
    keys: MasterKeys,
    dataset: str,
    version: int,
    *,
    chunk_size: int = CHUNK_SIZE,
) -> None:
    """Encrypt the workspace file ``plain`` into ``stored`` (atomically: a partial file is never
    at ``stored``) under a new data key wrapped by the current master key."""
    if not MIN_CHUNK <= chunk_size <= MAX_CHUNK:
        raise ValueError("chunk_size out of range")
    data_key = MasterKeyRing.new_data_key()
    kid, wrapped = keys.ring().wrap(data_key, _purpose(dataset, version))
    header = Header(dataset, version, chunk_size, os.urandom(PREFIX_BYTES), kid, wrapped, 0)
    doc = {
        "dataset": dataset,
        "version": version,
        "chunk_size": chunk_size,
        "nonce_prefix": header.nonce_prefix.hex(),
        "key": {"kid": kid, "wrapped": base64.b64encode(wrapped).decode()},
    }
    body = _canonical(doc)
    aead, bound = AESGCM(data_key), header.bound()
    stored.parent.mkdir(parents=True, exist_ok=True)
    tmp = stored.with_name(f".{stored.name}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out, plain.open("rb") as src:
            out.write(MAGIC + struct.pack(">BH", FORMAT, len(body)) + body)
            index, chunk = 0, src.read(chunk_size)
            while True:
                following = src.read(chunk_size) if len(chunk) == chunk_size else b""
                final = not following
                if index >= MAX_CHUNKS:
                    raise ValueError("the workspace is too large to seal")
                nonce = _nonce(header.nonce_prefix, index, final)
                out.write(aead.encrypt(nonce, chunk, _aad(bound, index, final)))
                if final:
                    break
                index, chunk = index + 1, following
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, stored)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(stored.parent)


def read_header(handle: BinaryIO, where: str) -> Header:
    """Parse the header at the start of ``handle``; ``where`` names the file in errors."""
    start = handle.read(12)
    if start[: len(MAGIC)] != MAGIC:
        if start[8:12] == _DUCKDB_MAGIC:
            raise WorkspaceNotSealed(
                f"the stored workspace of {where} is a plain DuckDB file from before encryption "
                "at rest; seal it with `veil workspaces seal`"
            )
        raise WorkspaceIntegrityError(f"the stored workspace of {where} is not a sealed file")
    if len(start) < len(MAGIC) + 3:
        raise WorkspaceIntegrityError(f"the stored workspace of {where} is truncated (header)")
    fmt, length = struct.unpack(">BH", start[len(MAGIC) : len(MAGIC) + 3])
    handle.seek(len(MAGIC) + 3)
    if fmt != FORMAT:
        raise WorkspaceIntegrityError(
            f"the stored workspace of {where} has sealed format {fmt}; this Veil reads {FORMAT}"
        )
    raw = handle.read(length)
    try:
        if len(raw) != length or length > MAX_HEADER:
            raise ValueError
        doc = json.loads(raw)
        key = doc["key"]
        header = Header(
            dataset=str(doc["dataset"]),
            version=int(doc["version"]),
            chunk_size=int(doc["chunk_size"]),
            nonce_prefix=bytes.fromhex(doc["nonce_prefix"]),
            kid=str(key["kid"]),
            wrapped=base64.b64decode(key["wrapped"], validate=True),
            size=len(MAGIC) + 3 + length,
        )
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise WorkspaceIntegrityError(
            f"the stored workspace of {where} has a damaged header"
        ) from None
    if len(header.nonce_prefix) != PREFIX_BYTES or not MIN_CHUNK <= header.chunk_size <= MAX_CHUNK:
        raise WorkspaceIntegrityError(f"the stored workspace of {where} has a damaged header")
    return header


def open_sealed(
    stored: Path,
    plain: Path,
    keys: MasterKeys,
    dataset: str,
    version: int,
    *,
    cancelled: Callable[[], bool] = lambda: False,
) -> int:
    """Decrypt ``stored`` (sealed for ``dataset`` ``version``) into a new file ``plain``.

    Every chunk is authenticated before it is written; on any failure ``plain`` is removed and
    a :class:`WorkspaceIntegrityError` (``WorkspaceMissing`` for a stored file that is not
    there, ``MasterKeyError`` for a key that is missing from the ring, even read again, or
    wrong) raised, so no partial or altered plaintext is ever left behind. Returns the
    plaintext size."""
    where = _name(dataset, version)
    if not stored.is_file():
        raise WorkspaceMissing(f"the stored workspace of {where} is missing")
    written, created = 0, False
    try:
        with stored.open("rb") as src:
            header = read_header(src, where)
            if (header.dataset, header.version) != (dataset, version):
                raise WorkspaceIntegrityError(
                    f"the stored workspace of {where} was sealed for another dataset version"
                )
            try:
                data_key = keys.ring().unwrap(
                    header.kid, header.wrapped, _purpose(dataset, version)
                )
            except MasterKeyError as exc:
                raise type(exc)(f"the stored workspace of {where}: {exc.detail}") from None
            aead, bound, record = AESGCM(data_key), header.bound(), header.chunk_size + TAG_BYTES
            fd = os.open(plain, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            created = True
            with os.fdopen(fd, "wb") as out:
                index, chunk = 0, src.read(record)
                while True:
                    if cancelled():
                        raise ServiceUnavailable("the vault is closing")
                    if len(chunk) < TAG_BYTES:
                        raise WorkspaceIntegrityError(
                            f"the stored workspace of {where} is cut short"
                        )
                    following = src.read(record) if len(chunk) == record else b""
                    final = not following
                    nonce = _nonce(header.nonce_prefix, index, final)
                    try:
                        data = aead.decrypt(nonce, chunk, _aad(bound, index, final))
                    except InvalidTag:
                        raise WorkspaceIntegrityError(
                            f"the stored workspace of {where} failed its integrity check at "
                            f"chunk {index} (altered, cut short or extended)"
                        ) from None
                    out.write(data)
                    written += len(data)
                    if final:
                        break
                    index, chunk = index + 1, following
    except BaseException:
        if created:
            plain.unlink(missing_ok=True)
        raise
    return written


def seal_plain_versions(
    engine: Engine, keys: MasterKeys, audit: AuditLog, actor: Actor
) -> list[tuple[str, int]]:
    """Seal every registered version still stored as a plain DuckDB file (a data directory from
    before encryption at rest): ``v<N>.sealed`` next to it, the catalogue pointed at it (recorded
    in ``audit``, the ``actor``'s change), then the plain file deleted. Idempotent; safe while
    servers run (they pick up the new path on their next request). Returns the
    ``(dataset, version)`` pairs it sealed."""
    from sandbox.store.schema import version_loads, versions

    with engine.connect() as con:
        rows = con.execute(
            select(versions.c.dataset_id, versions.c.version, versions.c.path).order_by(
                versions.c.dataset_id, versions.c.version
            )
        ).all()
    done: list[tuple[str, int]] = []
    for row in rows:
        plain = Path(row.path)
        if not plain.is_file() or not _is_duckdb(plain):
            continue
        stored = plain.with_name(f"v{row.version}{SEALED_SUFFIX}")
        seal(plain, stored, keys, row.dataset_id, row.version)
        with engine.begin() as con:
            for table in (versions, version_loads):
                con.execute(
                    update(table)
                    .where(table.c.dataset_id == row.dataset_id, table.c.version == row.version)
                    .values(path=str(stored))
                )
            audit.append(
                con,
                Event(
                    "onboarding",
                    "version.seal",
                    refs={"dataset": row.dataset_id, "version": row.version},
                ),
                actor,
            )
        plain.unlink()
        plain.with_name(plain.name + ".wal").unlink(missing_ok=True)
        log.info("workspace sealed dataset=%s version=%d", row.dataset_id, row.version)
        done.append((row.dataset_id, row.version))
    return done


def _is_duckdb(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(12)[8:12] == _DUCKDB_MAGIC


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sweep(directory: Path, *, min_age_s: float = 0.0, prefix: str = "") -> None:
    """Remove what dead processes of this user left in ``directory`` (names ``<prefix><pid>-…``)."""
    now = time.time()
    with contextlib.suppress(OSError):
        for entry in directory.iterdir():
            if not entry.name.startswith(prefix):
                continue
            found = _OWNED.match(entry.name[len(prefix) :].lstrip("."))
            try:
                info = entry.lstat()
            except OSError:
                continue
            if (
                found is None
                or info.st_uid != os.getuid()
                or _alive(int(found.group(1)))
                or now - info.st_mtime < min_age_s
            ):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
