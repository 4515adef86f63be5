"""Sealed text in the state store: what callers write into issues, and the answers kept for
``Idempotency-Key`` retries, stored encrypted, each value bound to the row it belongs to.

The columns (:data:`SEALED`): ``dataset_issues`` ``title``, ``description``, ``answer`` and
``resolution_note``; ``idempotent_requests.response``. A value is sealed the way the audit log
seals an entry's sensitive members (:mod:`sandbox.audit.log`): AES-256-GCM under the data key of
the day (one per process and UTC day, stored in ``audit_data_keys`` wrapped by the master key),
and stored as text::

    sealed:1:<data key id>:<b64url of 12 random bytes (nonce)>:<b64url of ciphertext || tag>

with associated data ``veil.text.seal.v1 \\0 table \\0 column \\0 key₁ \\0 … \\0 data key id``,
the keys being the row's primary key. A value copied to another row, column or table, or altered,
does not open (``master_key_error``), and neither does one whose data key is missing.

Rows written before migration 0010 hold ``plain:<text>`` (the migration cannot seal: it runs
without keys). They read as they are, and :func:`seal_plain_rows`, which the server runs at
start, seals them once; nothing writes ``plain:`` values any more.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Connection, Table, and_, or_, select, update

from sandbox.audit.log import AuditLog, require_log
from sandbox.canonical import b64url_decode, b64url_encode
from sandbox.errors import MasterKeyError
from sandbox.store.schema import dataset_issues, idempotent_requests

__all__ = [
    "ISSUE_TEXTS",
    "PLAIN",
    "REPLAYED_ANSWERS",
    "SEALED",
    "SealedColumns",
    "SealedText",
    "seal_plain_rows",
]

log = logging.getLogger("veil.vault")

SEALED_PREFIX: Final = "sealed:1:"
PLAIN: Final = "plain:"  # a row from before migration 0010, not sealed yet
AAD: Final = b"veil.text.seal.v1\x00"
NONCE_BYTES: Final = 12
_MAX_CACHED_KEYS: Final = 64
_BATCH: Final = 500


@dataclass(frozen=True)
class SealedColumns:
    """The sealed text columns of one table, and the primary key that binds their values."""

    table: Table
    key: tuple[str, ...]
    columns: tuple[str, ...]


ISSUE_TEXTS: Final = SealedColumns(
    dataset_issues, ("id",), ("title", "description", "answer", "resolution_note")
)
REPLAYED_ANSWERS: Final = SealedColumns(idempotent_requests, ("member_id", "key"), ("response",))
SEALED: Final = (ISSUE_TEXTS, REPLAYED_ANSWERS)


def _aad(where: SealedColumns, column: str, row: Sequence[str], dk_id: str) -> bytes:
    if column not in where.columns or len(row) != len(where.key):
        raise ValueError(f"{where.table.name}.{column} is not sealed by this row key")
    parts = [where.table.name, column, *row, dk_id]
    return AAD + "\x00".join(parts).encode("utf-8")


class SealedText:
    """Seals and opens the text of :data:`SEALED` columns with the data keys of ``audit``."""

    def __init__(self, audit: AuditLog) -> None:
        self.audit = require_log(audit, "sealed text")  # its data keys
        self._keys: dict[str, bytes] = {}  # unwrapped data keys by id

    def seal(
        self, con: Connection, where: SealedColumns, column: str, row: Sequence[str], text: str
    ) -> str:
        """``text`` sealed for ``column`` of the row with primary key ``row``, in ``con``'s
        transaction (which stores today's data key if no committed transaction has yet)."""
        dk_id, key = self.audit.data_key(con)
        nonce = os.urandom(NONCE_BYTES)
        sealed = AESGCM(key).encrypt(nonce, text.encode("utf-8"), _aad(where, column, row, dk_id))
        return f"{SEALED_PREFIX}{dk_id}:{b64url_encode(nonce)}:{b64url_encode(sealed)}"

    def open(
        self,
        con: Connection,
        where: SealedColumns,
        column: str,
        row: Sequence[str],
        stored: str | None,
    ) -> str | None:
        """The text of a stored value (``None`` stays ``None``). Raises
        :class:`MasterKeyError` for a value that does not open where it is."""
        if stored is None:
            return None
        if stored.startswith(PLAIN):
            return stored[len(PLAIN) :]
        name = f"{where.table.name}.{column}"
        parts = stored.split(":")
        if len(parts) != 5 or not stored.startswith(SEALED_PREFIX):
            raise MasterKeyError(f"a value of {name} is not sealed text")
        dk_id, nonce, sealed = parts[2:]
        if len(self._keys) > _MAX_CACHED_KEYS:
            self._keys.clear()
        aad = _aad(where, column, row, dk_id)
        key = self.audit.stored_data_key(con, dk_id, self._keys)
        try:
            text = AESGCM(key).decrypt(b64url_decode(nonce), b64url_decode(sealed), aad)
        except (InvalidTag, ValueError):
            raise MasterKeyError(
                f"a sealed value of {name} failed to open (altered, or moved from another row)"
            ) from None
        return text.decode("utf-8")


def seal_plain_rows(texts: SealedText) -> int:
    """Seal every value still stored as ``plain:`` (rows from before migration 0010), in
    batches, each in its own transaction; returns how many rows it sealed. Idempotent, and
    safe while other processes serve: a row is read and rewritten in one transaction."""
    engine = texts.audit.engine
    done = 0
    for where in SEALED:
        table = where.table
        keys = [table.c[k] for k in where.key]
        plain = or_(*(table.c[c].startswith(PLAIN, autoescape=True) for c in where.columns))
        while True:
            with engine.begin() as con:
                rows = con.execute(
                    select(*keys, *(table.c[c] for c in where.columns)).where(plain).limit(_BATCH)
                ).all()
                for row in rows:
                    ids = tuple(str(row._mapping[k]) for k in where.key)
                    values = {
                        c: texts.seal(con, where, c, ids, row._mapping[c][len(PLAIN) :])
                        for c in where.columns
                        if (row._mapping[c] or "").startswith(PLAIN)
                    }
                    match = and_(*(col == v for col, v in zip(keys, ids, strict=True)))
                    con.execute(update(table).where(match).values(**values))
            done += len(rows)
            if len(rows) < _BATCH:
                break
    if done:
        log.info("sealed text: %d rows from before sealing sealed", done)
    return done
